/*
 * The media workers' batched RTP receive path (Linux): siprec_node.media._rtprecv.
 *
 * Receiver owns an epoll set of a worker's RTP/RTCP sockets; its own descriptor is registered
 * once with the event loop. drain() takes the ready sockets, reads each with recvmmsg (kernel
 * arrival times from SO_TIMESTAMPNS) and offers every RTP datagram to its stream's FastStream.
 *
 * FastStream is the in-order case of StreamTimeline.push for a G.711 stretch, armed by Python
 * with the timeline's expectations: the locked SSRC, the next sequence number, the RTP
 * timestamp and file position that continue the output exactly, the negotiated payload type,
 * and the wall-clock baseline with its discontinuity limit. A datagram that matches all of them
 * (and carries a plain 12-byte header) has its payload copied into the stream's .wav through a
 * shared mapping (into silence the writer preallocated), the header's sizes updated there too,
 * and the jitter updated with the same double arithmetic as timeline.py. No system call per
 * packet, and nothing buffered in the process: a SIGKILL loses none of what was taken. Anything
 * else (a packet of another payload type included: a codec switch, after which Python rebinds
 * the FastStream to the new stretch's file when that is G.711) disarms the stream and goes
 * back to Python with its handler, in arrival order, so Python sees every packet the fast path did not take, and sees
 * it after having taken over (take()) what the fast path did before it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32            /* datagrams per recvmmsg */
#define ROUNDS 4            /* recvmmsg calls per ready socket per drain (fairness) */
#define DGRAM 4096          /* receive size: RTP needs ~1.5 KiB; longer datagrams are cut */
#define EVENTS 512          /* ready sockets per epoll_wait */
#define PASSES 64           /* epoll_waits per drain while they come back full */
#define CONTROL 64          /* room for one SCM_TIMESTAMPNS */
#define WAV_HEADER 58       /* stream_file.WAV_HEADER_SIZE */
static long long PAGE = 4096; /* mmap offsets are multiples of it: sysconf at import */
#define HEADER_PAGE ((size_t)PAGE)

/* ------------------------------------------------------------------------------ FastStream */

typedef struct {
    PyObject_HEAD
    int fd;                 /* the stream's .wav, owned by Python's WavG711Writer */
    int armed;
    uint32_t ssrc;
    uint16_t next_seq;
    uint32_t next_ts;
    int pt;
    long long next_pos;
    double epoch, rate, baseline, limit, transit, jitter;
    /* the file, mapped: samples go to write_off (< end_off, the silence preallocated by the
       writer), and the header's sizes are updated after each packet */
    unsigned char *head;    /* page 0: the WAV header */
    unsigned char *map;     /* [map_off, map_off + map_len) of the file */
    long long map_off, map_len;
    long long write_off, end_off;
    /* since the last take() */
    unsigned long long packets;
    uint16_t last_seq;
    uint32_t last_ts;
    long long last_pos;
    double last_arrival;
    unsigned long long written;
} FastStream;

static void
put_le32(unsigned char *at, uint32_t value)
{
    at[0] = (unsigned char)value;
    at[1] = (unsigned char)(value >> 8);
    at[2] = (unsigned char)(value >> 16);
    at[3] = (unsigned char)(value >> 24);
}

static void
fast_unmap(FastStream *s)
{
    if (s->map != NULL)
        munmap(s->map, (size_t)s->map_len);
    if (s->head != NULL)
        munmap(s->head, HEADER_PAGE);
    s->map = NULL;
    s->head = NULL;
    s->map_off = s->map_len = 0;
}

/* 1 when the datagram was taken (appended), 0 when Python must see it. */
static int
fast_accept(FastStream *s, const unsigned char *d, Py_ssize_t n, double arrival)
{
    if (!s->armed)
        return 0;
    if (n <= 12 || d[0] != 0x80 || (d[1] & 0x7F) != s->pt)
        goto decline;
    uint16_t seq = (uint16_t)((d[2] << 8) | d[3]);
    uint32_t ts = ((uint32_t)d[4] << 24) | ((uint32_t)d[5] << 16) | ((uint32_t)d[6] << 8) | d[7];
    uint32_t ssrc = ((uint32_t)d[8] << 24) | ((uint32_t)d[9] << 16) | ((uint32_t)d[10] << 8) | d[11];
    if (ssrc != s->ssrc || seq != s->next_seq || ts != s->next_ts)
        goto decline;
    double wall = (arrival - s->epoch) * s->rate;
    double transit = wall - (double)s->next_pos;
    double deviation = transit - s->baseline;
    if (deviation > s->limit || deviation < -s->limit)
        goto decline;
    Py_ssize_t plen = n - 12;
    if (s->write_off + plen > s->end_off)
        goto decline; /* past the preallocated silence: Python extends the file */
    memcpy(s->map + (s->write_off - s->map_off), d + 12, (size_t)plen);
    s->write_off += plen;
    s->written += (unsigned long long)plen;
    uint32_t data = (uint32_t)(s->write_off - WAV_HEADER);
    put_le32(s->head + 4, data + WAV_HEADER - 8); /* RIFF size */
    put_le32(s->head + 46, data);                 /* fact: samples */
    put_le32(s->head + 54, data);                 /* data size */
    double jump = transit - s->transit;
    if (jump < 0)
        jump = -jump;
    s->jitter += (jump - s->jitter) * 0.0625;
    s->transit = transit;
    s->last_seq = seq;
    s->last_ts = ts;
    s->last_pos = s->next_pos;
    s->last_arrival = arrival;
    s->next_pos += plen;
    s->next_seq = (uint16_t)(seq + 1);
    s->next_ts = ts + (uint32_t)plen;
    s->packets++;
    return 1;
decline:
    s->armed = 0;
    return 0;
}

static int
FastStream_init(FastStream *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", NULL};
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &fd))
        return -1;
    fast_unmap(self);
    self->fd = fd;
    self->armed = 0;
    self->packets = 0;
    self->written = 0;
    return 0;
}

static void
FastStream_dealloc(FastStream *self)
{
    fast_unmap(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(FastStream_arm_doc,
"arm(write_offset, end_offset, ssrc, next_seq, next_ts, next_pos, pt, epoch, rate, baseline,\n"
"    limit, transit, jitter)\n"
"Take in-order packets from now on, their samples going to the file from `write_offset` up to\n"
"`end_offset` (silence the writer preallocated); the writer has nothing buffered.");

static PyObject *
FastStream_arm(FastStream *self, PyObject *args)
{
    unsigned long ssrc, next_ts;
    int next_seq, pt;
    long long next_pos, write_off, end_off;
    if (!PyArg_ParseTuple(args, "LLkikLidddddd", &write_off, &end_off, &ssrc, &next_seq,
                          &next_ts, &next_pos, &pt, &self->epoch, &self->rate, &self->baseline,
                          &self->limit, &self->transit, &self->jitter))
        return NULL;
    if (write_off < WAV_HEADER || end_off < write_off) {
        PyErr_SetString(PyExc_ValueError, "write_offset/end_offset out of order");
        return NULL;
    }
    self->armed = 0;
    if (self->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "no file to write into (rebind() to a .wav first)");
        return NULL;
    }
    if (self->head == NULL) {
        void *head = mmap(NULL, HEADER_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
        if (head == MAP_FAILED)
            return PyErr_SetFromErrno(PyExc_OSError);
        self->head = head;
    }
    long long start = write_off & ~(long long)(PAGE - 1);
    if (self->map == NULL || start < self->map_off || end_off > self->map_off + self->map_len) {
        if (self->map != NULL)
            munmap(self->map, (size_t)self->map_len);
        self->map = NULL;
        long long length = end_off - start;
        if (length == 0)
            length = PAGE;
        void *map = mmap(NULL, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd,
                         (off_t)start);
        if (map == MAP_FAILED)
            return PyErr_SetFromErrno(PyExc_OSError);
        self->map = map;
        self->map_off = start;
        self->map_len = length;
    }
    self->write_off = write_off;
    self->end_off = end_off;
    self->ssrc = (uint32_t)ssrc;
    self->next_seq = (uint16_t)next_seq;
    self->next_pos = next_pos;
    self->next_ts = (uint32_t)next_ts;
    self->pt = pt;
    self->armed = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(FastStream_take_doc,
"take() -> None | (packets, last_seq, last_ts, last_pos, next_pos, transit, jitter,\n"
"                  last_arrival, written)\n"
"Disarm and hand over what was taken since the last take (`written` samples are in the file\n"
"after the writer's, and the header counts them).");

static PyObject *
FastStream_take(FastStream *self, PyObject *Py_UNUSED(ignored))
{
    self->armed = 0;
    if (self->packets == 0)
        Py_RETURN_NONE;
    PyObject *out = Py_BuildValue(
        "KikLLdddK", self->packets, (int)self->last_seq, (unsigned long)self->last_ts,
        self->last_pos, self->next_pos, self->transit, self->jitter, self->last_arrival,
        self->written);
    if (out == NULL)
        return NULL;
    self->packets = 0;
    self->written = 0;
    return out;
}

PyDoc_STRVAR(FastStream_feed_doc,
"feed(datagram, arrival) -> bool\n"
"Offer one datagram as drain() does (True: taken). For tests and benchmarks.");

static PyObject *
FastStream_feed(FastStream *self, PyObject *args)
{
    Py_buffer data;
    double arrival;
    if (!PyArg_ParseTuple(args, "y*d", &data, &arrival))
        return NULL;
    int taken = fast_accept(self, data.buf, data.len, arrival);
    PyBuffer_Release(&data);
    return PyBool_FromLong(taken);
}

PyDoc_STRVAR(FastStream_rebind_doc,
"rebind(fd)\n"
"Disarm, unmap, and write into another .wav from the next arm() on (a stream whose payload\n"
"type changed: each G.711 payload type has its own file). take() what was taken first;\n"
"fd -1: no file (the current stretch is not G.711).");

static PyObject *
FastStream_rebind(FastStream *self, PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (self->packets != 0) {
        PyErr_SetString(PyExc_RuntimeError, "rebind() before take(): packets would be lost");
        return NULL;
    }
    self->armed = 0;
    fast_unmap(self);
    self->fd = (int)fd;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(FastStream_put_doc,
"put(offset, samples) -> bool\n"
"Copy samples the writer had buffered into the .wav at file `offset` (where its samples end)\n"
"through the mapping of the last arm() (up to its end_offset), and count them in the header\n"
"there, as for a packet the fast path takes: no system call. Only while disarmed (before\n"
"arm()); False (nothing done) when armed or when that does not cover them: the writer then\n"
"writes them itself.");

static PyObject *
FastStream_put(FastStream *self, PyObject *args)
{
    long long offset;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "Ly*", &offset, &data))
        return NULL;
    int done = 0;
    if (!self->armed && self->head != NULL && self->map != NULL && offset >= WAV_HEADER &&
        offset >= self->map_off && offset + data.len <= self->end_off) {
        /* end_off, not the mapping's end: that may run past the end of the file */
        memcpy(self->map + (offset - self->map_off), data.buf, (size_t)data.len);
        uint32_t size = (uint32_t)(offset + data.len - WAV_HEADER);
        put_le32(self->head + 4, size + WAV_HEADER - 8); /* RIFF size */
        put_le32(self->head + 46, size);                 /* fact: samples */
        put_le32(self->head + 54, size);                 /* data size */
        done = 1;
    }
    PyBuffer_Release(&data);
    return PyBool_FromLong(done);
}

static PyObject *
FastStream_release(FastStream *self, PyObject *Py_UNUSED(ignored))
{
    self->armed = 0;
    fast_unmap(self);
    Py_RETURN_NONE;
}

static PyObject *
FastStream_get_armed(FastStream *self, void *closure)
{
    return PyBool_FromLong(self->armed);
}

static PyObject *
FastStream_get_packets(FastStream *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->packets);
}

static PyMethodDef FastStream_methods[] = {
    {"arm", (PyCFunction)FastStream_arm, METH_VARARGS, FastStream_arm_doc},
    {"take", (PyCFunction)FastStream_take, METH_NOARGS, FastStream_take_doc},
    {"feed", (PyCFunction)FastStream_feed, METH_VARARGS, FastStream_feed_doc},
    {"rebind", (PyCFunction)FastStream_rebind, METH_O, FastStream_rebind_doc},
    {"put", (PyCFunction)FastStream_put, METH_VARARGS, FastStream_put_doc},
    {"release", (PyCFunction)FastStream_release, METH_NOARGS,
     "Disarm and unmap the file (before the writer truncates or closes it)."},
    {NULL},
};

static PyGetSetDef FastStream_getset[] = {
    {"armed", (getter)FastStream_get_armed, NULL, "Whether in-order packets are taken.", NULL},
    {"packets", (getter)FastStream_get_packets, NULL, "Packets taken since the last take().",
     NULL},
    {NULL},
};

static PyTypeObject FastStreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "siprec_node.media._rtprecv.FastStream",
    .tp_doc = PyDoc_STR("FastStream(fd): the in-order G.711 path of one stream's .wav."),
    .tp_basicsize = sizeof(FastStream),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastStream_init,
    .tp_dealloc = (destructor)FastStream_dealloc,
    .tp_methods = FastStream_methods,
    .tp_getset = FastStream_getset,
};

/* -------------------------------------------------------------------------------- Receiver */

/* The source check (media.source_check): a slot with nallow >= 0 takes datagrams only from
   these addresses (IPv4 as v4-mapped IPv6, so one 16-byte compare covers both families);
   the others are counted in `foreign` and dropped before any handler or fast path sees them. */
#define MAX_SOURCES 8

typedef struct {
    int fd;                 /* -1: free */
    PyObject *handler;      /* called by Python as handler(datagram, arrival) */
    FastStream *fast;       /* or NULL */
    int nallow;             /* -1: any source */
    unsigned char allow[MAX_SOURCES][16];
    unsigned long long foreign;
} Slot;

/* Parse `sources` (None, or a sequence of IP address strings) into the slot's allow list. */
static int
slot_set_sources(Slot *slot, PyObject *sources)
{
    if (sources == Py_None) {
        slot->nallow = -1;
        return 0;
    }
    PyObject *seq = PySequence_Fast(sources, "sources must be None or a sequence of addresses");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int count = 0;
    for (Py_ssize_t i = 0; i < n && count < MAX_SOURCES; i++) {
        const char *text = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
        if (text == NULL) {
            Py_DECREF(seq);
            return -1;
        }
        unsigned char *out = slot->allow[count];
        struct in_addr v4;
        if (inet_pton(AF_INET, text, &v4) == 1) {
            memset(out, 0, 10);
            out[10] = out[11] = 0xFF;
            memcpy(out + 12, &v4, 4);
            count++;
        } else if (inet_pton(AF_INET6, text, out) == 1) {
            count++;
        } /* anything else (a host name) matches nothing */
    }
    Py_DECREF(seq);
    slot->nallow = count;
    return 0;
}

/* 1 when the datagram's source may feed the slot. */
static int
source_allowed(const Slot *slot, const struct sockaddr_storage *from, socklen_t len)
{
    if (slot->nallow < 0)
        return 1;
    unsigned char addr[16];
    if (from->ss_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memset(addr, 0, 10);
        addr[10] = addr[11] = 0xFF;
        memcpy(addr + 12, &((const struct sockaddr_in *)from)->sin_addr, 4);
    } else if (from->ss_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(addr, &((const struct sockaddr_in6 *)from)->sin6_addr, 16);
    } else {
        return 0;
    }
    for (int i = 0; i < slot->nallow; i++)
        if (memcmp(addr, slot->allow[i], 16) == 0)
            return 1;
    return 0;
}

typedef struct {
    PyObject_HEAD
    int ready;              /* __init__ ran: epfd is ours */
    int epfd;
    Slot *slots;
    Py_ssize_t nslots;
    Py_ssize_t *free;       /* indexes of the free slots (a stack): add() takes the last */
    Py_ssize_t nfree;
    Py_ssize_t *by_fd;      /* slot index of each registered descriptor, -1: none */
    Py_ssize_t nby_fd;
    Py_ssize_t sockets;
    struct mmsghdr msgs[BATCH];
    struct sockaddr_storage names[BATCH];
    struct iovec iov[BATCH];
    char control[BATCH][CONTROL];
    char (*data)[DGRAM];
    struct epoll_event events[EVENTS];
    unsigned long long datagrams, taken, handed, truncated, drains, foreign;
} Receiver;

static int
Receiver_init(Receiver *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist))
        return -1;
    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Receiver already initialised");
        return -1;
    }
    self->data = PyMem_Malloc(sizeof(*self->data) * BATCH);
    if (self->data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->ready = 1;
    memset(self->msgs, 0, sizeof(self->msgs));
    for (int i = 0; i < BATCH; i++) {
        self->iov[i].iov_base = self->data[i];
        self->iov[i].iov_len = DGRAM;
        struct msghdr *h = &self->msgs[i].msg_hdr;
        h->msg_iov = &self->iov[i];
        h->msg_iovlen = 1;
        h->msg_control = self->control[i];
        h->msg_controllen = CONTROL;
        h->msg_name = &self->names[i];
        h->msg_namelen = sizeof(self->names[i]);
    }
    return 0;
}

static void
Receiver_clear_slots(Receiver *self)
{
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        Py_CLEAR(self->slots[i].handler);
        Py_CLEAR(self->slots[i].fast);
        self->slots[i].fd = -1;
        self->free[self->nslots - 1 - i] = i; /* the lowest index is taken first */
    }
    self->nfree = self->nslots;
    for (Py_ssize_t fd = 0; fd < self->nby_fd; fd++)
        self->by_fd[fd] = -1;
    self->sockets = 0;
}

/* The slot index of `fd`, -1 when it is not registered: a lookup that costs the same however
 * many sockets the receiver holds (add, remove, foreign and set_sources run per stream). */
static Py_ssize_t
index_of_fd(const Receiver *self, long fd)
{
    return (fd >= 0 && fd < self->nby_fd) ? self->by_fd[fd] : -1;
}

/* Room in by_fd for `fd` and a free slot; 0 or -1 with MemoryError. */
static int
Receiver_reserve(Receiver *self, int fd)
{
    if (fd >= self->nby_fd) {
        Py_ssize_t size = self->nby_fd ? self->nby_fd : 1024;
        while (size <= fd)
            size *= 2;
        Py_ssize_t *by_fd = PyMem_Realloc(self->by_fd, sizeof(Py_ssize_t) * (size_t)size);
        if (by_fd == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = self->nby_fd; i < size; i++)
            by_fd[i] = -1;
        self->by_fd = by_fd;
        self->nby_fd = size;
    }
    if (self->nfree > 0)
        return 0;
    Py_ssize_t grown = self->nslots ? self->nslots * 2 : 64;
    Slot *slots = PyMem_Realloc(self->slots, sizeof(Slot) * (size_t)grown);
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->slots = slots;
    Py_ssize_t *free = PyMem_Realloc(self->free, sizeof(Py_ssize_t) * (size_t)grown);
    if (free == NULL) {
        PyErr_NoMemory();
        return -1; /* the larger slot array is kept; nslots says how much of it is in use */
    }
    self->free = free;
    for (Py_ssize_t i = self->nslots; i < grown; i++) {
        slots[i].fd = -1;
        slots[i].handler = NULL;
        slots[i].fast = NULL;
        free[self->nfree++] = grown - 1 - (i - self->nslots);
    }
    self->nslots = grown;
    return 0;
}

static void
Receiver_dealloc(Receiver *self)
{
    Receiver_clear_slots(self);
    PyMem_Free(self->slots);
    PyMem_Free(self->free);
    PyMem_Free(self->by_fd);
    PyMem_Free(self->data);
    if (self->ready && self->epfd >= 0)
        close(self->epfd);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(Receiver_add_doc,
"add(fd, handler, fast=None, sources=None) -> None\n"
"Receive from socket `fd` (non-blocking UDP): datagrams `fast` does not take are returned by\n"
"drain() with `handler`. With `sources` (IP address strings), datagrams from any other\n"
"address are dropped and counted (foreign(fd)). remove(fd) before the socket is closed.");

static PyObject *
Receiver_add(Receiver *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "handler", "fast", "sources", NULL};
    int fd;
    PyObject *handler, *fast = Py_None, *sources = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO|OO", kwlist, &fd, &handler, &fast,
                                     &sources))
        return NULL;
    Slot parsed;
    if (slot_set_sources(&parsed, sources) < 0)
        return NULL;
    if (fast != Py_None && !PyObject_TypeCheck(fast, &FastStreamType)) {
        PyErr_SetString(PyExc_TypeError, "fast must be a FastStream or None");
        return NULL;
    }
    if (fd < 0) {
        PyErr_Format(PyExc_ValueError, "fd %d is not a descriptor", fd);
        return NULL;
    }
    if (index_of_fd(self, fd) >= 0) {
        PyErr_Format(PyExc_ValueError, "fd %d is already registered", fd);
        return NULL;
    }
    if (Receiver_reserve(self, fd) < 0)
        return NULL;
    Py_ssize_t index = self->free[self->nfree - 1];
    int on = 1;
    /* Kernel arrival times: a worker busy for a while still places packets by when they came. */
    (void)setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)index};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Slot *slot = &self->slots[index];
    slot->fd = fd;
    slot->nallow = parsed.nallow;
    if (parsed.nallow > 0)
        memcpy(slot->allow, parsed.allow, sizeof(parsed.allow[0]) * (size_t)parsed.nallow);
    slot->foreign = 0;
    Py_INCREF(handler);
    slot->handler = handler;
    if (fast != Py_None) {
        Py_INCREF(fast);
        slot->fast = (FastStream *)fast;
    }
    self->nfree--;
    self->by_fd[fd] = index;
    self->sockets++;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Receiver_remove_doc, "remove(fd) -> bool\nStop receiving from `fd` (False: unknown).");

static PyObject *
Receiver_remove(Receiver *self, PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t index = index_of_fd(self, fd);
    if (index < 0)
        Py_RETURN_FALSE;
    Slot *slot = &self->slots[index];
    (void)epoll_ctl(self->epfd, EPOLL_CTL_DEL, (int)fd, NULL);
    slot->fd = -1;
    Py_CLEAR(slot->handler);
    Py_CLEAR(slot->fast);
    self->by_fd[fd] = -1;
    self->free[self->nfree++] = index;
    self->sockets--;
    Py_RETURN_TRUE;
}

static Slot *
slot_of(Receiver *self, PyObject *fd_object)
{
    long fd = PyLong_AsLong(fd_object);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t index = index_of_fd(self, fd);
    if (index >= 0)
        return &self->slots[index];
    PyErr_Format(PyExc_KeyError, "fd %ld is not registered", fd);
    return NULL;
}

PyDoc_STRVAR(Receiver_set_sources_doc,
"set_sources(fd, sources) -> None\nChange the addresses `fd` takes datagrams from (None: any).");

static PyObject *
Receiver_set_sources(Receiver *self, PyObject *args)
{
    PyObject *fd, *sources;
    if (!PyArg_ParseTuple(args, "OO", &fd, &sources))
        return NULL;
    Slot *slot = slot_of(self, fd);
    if (slot == NULL)
        return NULL;
    Slot parsed;
    if (slot_set_sources(&parsed, sources) < 0)
        return NULL;
    slot->nallow = parsed.nallow;
    if (parsed.nallow > 0)
        memcpy(slot->allow, parsed.allow, sizeof(parsed.allow[0]) * (size_t)parsed.nallow);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Receiver_foreign_doc,
"foreign(fd) -> int\nDatagrams from other sources dropped on `fd` since the last call.");

static PyObject *
Receiver_foreign(Receiver *self, PyObject *fd)
{
    Slot *slot = slot_of(self, fd);
    if (slot == NULL)
        return NULL;
    unsigned long long count = slot->foreign;
    slot->foreign = 0;
    return PyLong_FromUnsignedLongLong(count);
}

static double
arrival_of(struct msghdr *msg, double now)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        }
    }
    return now;
}

static int
hand_over(PyObject **out, Slot *slot, const char *data, Py_ssize_t n, double arrival)
{
    if (*out == NULL) {
        *out = PyList_New(0);
        if (*out == NULL)
            return -1;
    }
    PyObject *item = Py_BuildValue("(Oy#d)", slot->handler, data, n, arrival);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(*out, item);
    Py_DECREF(item);
    return rc;
}

PyDoc_STRVAR(Receiver_drain_doc,
"drain() -> list[(handler, datagram, arrival)] | None\n"
"Read what the ready sockets hold (bounded per socket); return, in arrival order per socket,\n"
"the datagrams the fast paths did not take. Call when fileno() is readable.");

static PyObject *
Receiver_drain(Receiver *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = NULL;
    self->drains++;
    /* A paced caller (media.receive_interval) finds most of its sockets ready at once: read
     * them all, EVENTS at a time, rather than leaving the rest for the next drain. */
    for (int pass = 0; pass < PASSES; pass++) {
        int ready = epoll_wait(self->epfd, self->events, EVENTS, 0);
        if (ready < 0) {
            if (errno == EINTR)
                break;
            Py_XDECREF(out);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        struct timespec clock;
        clock_gettime(CLOCK_REALTIME, &clock);
        double now = (double)clock.tv_sec + (double)clock.tv_nsec * 1e-9;
        for (int e = 0; e < ready; e++) {
            Py_ssize_t index = (Py_ssize_t)self->events[e].data.u64;
            if (index >= self->nslots || self->slots[index].fd < 0)
                continue;
            Slot *slot = &self->slots[index];
            for (int round = 0; round < ROUNDS; round++) {
                int got = recvmmsg(slot->fd, self->msgs, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0)
                    break; /* EAGAIN, or an error the socket reports again next time */
                for (int i = 0; i < got; i++) {
                    struct msghdr *h = &self->msgs[i].msg_hdr;
                    Py_ssize_t n = (Py_ssize_t)self->msgs[i].msg_len;
                    int cut = h->msg_flags & MSG_TRUNC;
                    double arrival = arrival_of(h, now);
                    socklen_t namelen = h->msg_namelen;
                    h->msg_controllen = CONTROL; /* recvmmsg set it to what it used: restore */
                    h->msg_namelen = sizeof(self->names[i]);
                    self->datagrams++;
                    if (!source_allowed(slot, &self->names[i], namelen)) {
                        slot->foreign++;
                        self->foreign++;
                        continue;
                    }
                    if (cut) {
                        self->truncated++;
                        continue;
                    }
                    const unsigned char *d = (const unsigned char *)self->data[i];
                    if (slot->fast != NULL && fast_accept(slot->fast, d, n, arrival)) {
                        self->taken++;
                        continue;
                    }
                    self->handed++;
                    if (hand_over(&out, slot, (const char *)d, n, arrival) < 0) {
                        Py_XDECREF(out);
                        return NULL;
                    }
                }
                if (got < BATCH)
                    break;
            }
        }
        if (ready < EVENTS)
            break;
    }
    if (out == NULL)
        Py_RETURN_NONE;
    return out;
}

static PyObject *
Receiver_fileno(Receiver *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(self->epfd);
}

static PyObject *
Receiver_stats(Receiver *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t sockets = self->sockets;
    return Py_BuildValue("{s:n,s:K,s:K,s:K,s:K,s:K,s:K}", "sockets", sockets, "datagrams",
                         self->datagrams, "taken", self->taken, "handed", self->handed,
                         "truncated", self->truncated, "drains", self->drains, "foreign",
                         self->foreign);
}

static PyObject *
Receiver_close(Receiver *self, PyObject *Py_UNUSED(ignored))
{
    Receiver_clear_slots(self);
    if (self->ready && self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Receiver_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Receiver_add, METH_VARARGS | METH_KEYWORDS,
     Receiver_add_doc},
    {"remove", (PyCFunction)Receiver_remove, METH_O, Receiver_remove_doc},
    {"set_sources", (PyCFunction)Receiver_set_sources, METH_VARARGS, Receiver_set_sources_doc},
    {"foreign", (PyCFunction)Receiver_foreign, METH_O, Receiver_foreign_doc},
    {"drain", (PyCFunction)Receiver_drain, METH_NOARGS, Receiver_drain_doc},
    {"fileno", (PyCFunction)Receiver_fileno, METH_NOARGS, "The epoll descriptor to watch."},
    {"stats", (PyCFunction)Receiver_stats, METH_NOARGS, "Counters since creation."},
    {"close", (PyCFunction)Receiver_close, METH_NOARGS, "Forget every socket; close the set."},
    {NULL},
};

static PyMemberDef Receiver_members[] = {
    {"datagrams", T_ULONGLONG, offsetof(Receiver, datagrams), READONLY,
     "Datagrams read since creation (stats() without building a dict)."},
    {NULL},
};

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "siprec_node.media._rtprecv.Receiver",
    .tp_doc = PyDoc_STR("Receiver(): an epoll set of RTP/RTCP sockets read in batches."),
    .tp_basicsize = sizeof(Receiver),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Receiver_init,
    .tp_dealloc = (destructor)Receiver_dealloc,
    .tp_methods = Receiver_methods,
    .tp_members = Receiver_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "siprec_node.media._rtprecv",
    .m_doc = "Batched RTP receive and the in-order G.711 fast path (see the C file's header).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__rtprecv(void)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0)
        PAGE = page;
    if (PyType_Ready(&FastStreamType) < 0 || PyType_Ready(&ReceiverType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FastStreamType);
    if (PyModule_AddObject(m, "FastStream", (PyObject *)&FastStreamType) < 0) {
        Py_DECREF(&FastStreamType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ReceiverType);
    if (PyModule_AddObject(m, "Receiver", (PyObject *)&ReceiverType) < 0) {
        Py_DECREF(&ReceiverType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
