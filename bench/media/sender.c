/* Paced G.711 RTP sender for bench/media: one 172-byte PCMU packet (12-byte header + 160 bytes)
 * per stream every 20 ms, to every port listed in a file, with sendmmsg in batches and
 * absolute-time pacing (clock_nanosleep TIMER_ABSTIME on CLOCK_MONOTONIC).
 *
 *   sender --ports-file F --seconds S [--host 127.0.0.1] [--interval-ms 20] [--slots 20]
 *          [--batch 64] [--counts-file F]
 *
 * Each stream has its own SSRC and random initial sequence number and timestamp; sequence + 1
 * and timestamp + 160 per packet, the marker bit on the first. The interval is cut into
 * `slots` equal slots and stream i is sent in slot i % slots, so the packets of many calls are
 * spread over the 20 ms as independent calls' would be (not one burst of every stream at once).
 * A slot woken late still sends everything due (no packet is skipped): the lateness is
 * reported instead, as p50/p99/max in microseconds.
 *
 * At the end one JSON line on stdout: packets sent, per-stream minimum and maximum, send
 * errors, lateness, and this process's CPU (getrusage). --counts-file writes one count per
 * stream per line.
 *
 *   sender --follow [--host 127.0.0.1] [--interval-ms 20] [--slots 20] [--batch 64]
 *          [--counts-file F]
 *
 * Follow mode (bench/e2e): streams arrive while it runs, one line per stream on stdin,
 * `<port> <end>` with `end` a wall-clock time (seconds since the Unix epoch, CLOCK_REALTIME).
 * Stream k (the k-th line, from 0) starts at its slot's next turn after its line is read and
 * sends one packet per interval while that packet's time is before `end`, then stops; a port
 * may come back in a later line (a new stream). The sender exits when stdin is closed and
 * every stream has ended. --counts-file then has `<k> <port> <packets>` per stream.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 160
#define PACKET (12 + PAYLOAD)
#define LATE_BUCKET_NS 10000LL /* lateness histogram: 10 us buckets up to 1 s */
#define LATE_BUCKETS 100000

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t) {
    struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static double tv_s(struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

static long long percentile_ns(const long long *hist, long long n, double q) {
    if (n == 0) return 0;
    long long rank = (long long)(q * n + 0.5), seen = 0;
    if (rank < 1) rank = 1;
    for (int i = 0; i < LATE_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank) return (i + 1) * LATE_BUCKET_NS;
    }
    return LATE_BUCKETS * LATE_BUCKET_NS;
}

static void usage(void) {
    fprintf(stderr,
            "usage: sender --ports-file F --seconds S [--host A] [--interval-ms 20] "
            "[--slots 20] [--batch 64] [--counts-file F]\n"
            "       sender --follow [--host A] [--interval-ms 20] [--slots 20] [--batch 64] "
            "[--counts-file F]   (stdin: <port> <end unix s> per stream)\n");
    exit(2);
}


static double realtime_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Follow mode: streams come on stdin as `<port> <end unix s>` lines (see the top). */
static int follow_main(const char *host, const char *counts_file, int interval_ms, int slots,
                       int batch) {
    struct in_addr ip;
    if (inet_pton(AF_INET, host, &ip) != 1) { fprintf(stderr, "bad host %s\n", host); return 1; }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);

    int cap = 1024, n = 0;
    struct sockaddr_in *addr = calloc(cap, sizeof *addr);
    unsigned char (*pkt)[PACKET] = calloc(cap, PACKET);
    uint16_t *seq = calloc(cap, sizeof *seq);
    uint32_t *ts = calloc(cap, sizeof *ts);
    long long *sent = calloc(cap, sizeof *sent);
    int64_t *end = calloc(cap, sizeof *end); /* CLOCK_MONOTONIC ns; 0 = ended */
    int *port_of = calloc(cap, sizeof *port_of);
    int *idx = malloc(sizeof(int) * cap);
    int active = 0, eof = 0;
    char line[4096];
    size_t fill = 0;

    struct mmsghdr *msgs = calloc(batch, sizeof *msgs);
    struct iovec *iov = calloc(batch, sizeof *iov);
    long long *hist = calloc(LATE_BUCKETS, sizeof *hist);
    long long wakes = 0, late_max = 0, packets = 0, errors = 0;
    int64_t interval = (int64_t)interval_ms * 1000000LL;
    int64_t slot_ns = interval / slots;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t t0 = now_ns() + 20000000LL, w0 = 0;

    for (long long tick = 0; !eof || active > 0; tick++) {
        for (int s = 0; s < slots; s++) {
            int64_t target = t0 + tick * interval + s * slot_ns;
            sleep_until(target);
            int64_t now = now_ns();
            int64_t late = now - target;
            if (w0 == 0) w0 = now;
            if (late < 0) late = 0;
            if (late > late_max) late_max = late;
            long long b = late / LATE_BUCKET_NS;
            hist[b < LATE_BUCKETS ? b : LATE_BUCKETS - 1]++;
            wakes++;

            /* new streams: whole lines from stdin */
            while (!eof) {
                ssize_t r = read(0, line + fill, sizeof line - 1 - fill);
                if (r == 0) { eof = 1; break; }
                if (r < 0) {
                    if (errno == EINTR) continue;
                    if (errno != EAGAIN) { perror("stdin"); eof = 1; }
                    break;
                }
                fill += (size_t)r;
                line[fill] = 0;
                char *start = line, *nl;
                while ((nl = strchr(start, '\n')) != NULL) {
                    *nl = 0;
                    int port;
                    double end_s;
                    if (sscanf(start, "%d %lf", &port, &end_s) == 2 && port > 0 && port < 65536) {
                        if (n == cap) {
                            cap *= 2;
                            addr = realloc(addr, sizeof *addr * cap);
                            pkt = realloc(pkt, (size_t)PACKET * cap);
                            seq = realloc(seq, sizeof *seq * cap);
                            ts = realloc(ts, sizeof *ts * cap);
                            sent = realloc(sent, sizeof *sent * cap);
                            end = realloc(end, sizeof *end * cap);
                            port_of = realloc(port_of, sizeof *port_of * cap);
                            idx = realloc(idx, sizeof(int) * cap);
                        }
                        int i = n++;
                        memset(&addr[i], 0, sizeof addr[i]);
                        addr[i].sin_family = AF_INET;
                        addr[i].sin_port = htons((uint16_t)port);
                        addr[i].sin_addr = ip;
                        port_of[i] = port;
                        seq[i] = (uint16_t)rnd();
                        ts[i] = rnd();
                        sent[i] = 0;
                        uint32_t ssrc = rnd() ^ (uint32_t)i;
                        memset(pkt[i], 0, PACKET);
                        pkt[i][0] = 0x80;
                        pkt[i][1] = 0x80 | 0; /* marker on the first packet, PT 0 (PCMU) */
                        pkt[i][8] = ssrc >> 24; pkt[i][9] = ssrc >> 16;
                        pkt[i][10] = ssrc >> 8; pkt[i][11] = ssrc;
                        for (int k = 0; k < PAYLOAD; k++)
                            pkt[i][12 + k] = (unsigned char)(0x10 + ((k * 5 + i) % 0x60));
                        end[i] = now + (int64_t)((end_s - realtime_s()) * 1e9);
                        if (end[i] <= now) end[i] = 0; /* already over: never sent */
                        else active++;
                    } else if (*start) {
                        fprintf(stderr, "sender: bad line '%s'\n", start);
                    }
                    start = nl + 1;
                }
                fill = strlen(start);
                memmove(line, start, fill);
                if (fill >= sizeof line - 1) fill = 0; /* an absurd line: dropped */
            }

            int m = 0;
            for (int i = s; i < n; i += slots) {
                if (!end[i]) continue;
                if (target >= end[i]) { end[i] = 0; active--; continue; }
                idx[m++] = i;
            }
            for (int off = 0; off < m;) {
                int k = m - off < batch ? m - off : batch;
                for (int j = 0; j < k; j++) {
                    int i = idx[off + j];
                    unsigned char *p = pkt[i];
                    if (sent[i] > 0) p[1] = 0;
                    p[2] = seq[i] >> 8; p[3] = seq[i];
                    p[4] = ts[i] >> 24; p[5] = ts[i] >> 16; p[6] = ts[i] >> 8; p[7] = ts[i];
                    iov[j].iov_base = p;
                    iov[j].iov_len = PACKET;
                    memset(&msgs[j].msg_hdr, 0, sizeof msgs[j].msg_hdr);
                    msgs[j].msg_hdr.msg_name = &addr[i];
                    msgs[j].msg_hdr.msg_namelen = sizeof addr[i];
                    msgs[j].msg_hdr.msg_iov = &iov[j];
                    msgs[j].msg_hdr.msg_iovlen = 1;
                }
                int r = sendmmsg(fd, msgs, k, 0);
                if (r < 0) {
                    if (errno == EINTR) continue;
                    errors++;
                    int i = idx[off];
                    seq[i]++;
                    ts[i] += PAYLOAD;
                    off++;
                    continue;
                }
                for (int j = 0; j < r; j++) {
                    int i = idx[off + j];
                    sent[i]++;
                    seq[i]++;
                    ts[i] += PAYLOAD;
                }
                packets += r;
                off += r;
            }
        }
    }
    int64_t w1 = now_ns();
    getrusage(RUSAGE_SELF, &ru1);
    long long smin = n ? sent[0] : 0, smax = smin;
    for (int i = 1; i < n; i++) {
        if (sent[i] < smin) smin = sent[i];
        if (sent[i] > smax) smax = sent[i];
    }
    if (counts_file) {
        FILE *c = fopen(counts_file, "w");
        if (c) {
            for (int i = 0; i < n; i++) fprintf(c, "%d %d %lld\n", i, port_of[i], sent[i]);
            fclose(c);
        }
    }
    printf("{\"streams\": %d, \"packets\": %lld, \"per_stream_min\": %lld, "
           "\"per_stream_max\": %lld, \"send_errors\": %lld, \"wall_s\": %.6f, "
           "\"late_p50_us\": %.1f, \"late_p99_us\": %.1f, \"late_max_us\": %.1f, "
           "\"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f}\n",
           n, packets, smin, smax, errors, (w1 - w0) / 1e9,
           percentile_ns(hist, wakes, 0.5) / 1e3, percentile_ns(hist, wakes, 0.99) / 1e3,
           late_max / 1e3, tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime),
           tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime));
    return 0;
}

int main(int argc, char **argv) {
    const char *ports_file = NULL, *counts_file = NULL, *host = "127.0.0.1";
    double seconds = -1;
    int interval_ms = 20, slots = 20, batch = 64;
    int follow = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--follow")) { follow = 1; continue; }
        if (i + 1 >= argc) usage();
        if (!strcmp(argv[i], "--ports-file")) ports_file = argv[++i];
        else if (!strcmp(argv[i], "--counts-file")) counts_file = argv[++i];
        else if (!strcmp(argv[i], "--host")) host = argv[++i];
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--interval-ms")) interval_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--slots")) slots = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[++i]);
        else usage();
    }
    if (interval_ms < 1 || slots < 1 || batch < 1 || batch > 1024) usage();
    if (follow) return follow_main(host, counts_file, interval_ms, slots, batch);
    if (!ports_file || seconds < 0) usage();

    FILE *f = fopen(ports_file, "r");
    if (!f) { perror(ports_file); return 1; }
    int cap = 1024, n = 0, port;
    int *ports = malloc(sizeof(int) * cap);
    while (fscanf(f, "%d", &port) == 1) {
        if (n == cap) ports = realloc(ports, sizeof(int) * (cap *= 2));
        ports[n++] = port;
    }
    fclose(f);
    if (n == 0) { fprintf(stderr, "no ports in %s\n", ports_file); return 1; }

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

    struct sockaddr_in *addr = calloc(n, sizeof *addr);
    unsigned char (*pkt)[PACKET] = calloc(n, PACKET);
    uint16_t *seq = calloc(n, sizeof *seq);
    uint32_t *ts = calloc(n, sizeof *ts);
    long long *sent = calloc(n, sizeof *sent);
    struct in_addr ip;
    if (inet_pton(AF_INET, host, &ip) != 1) { fprintf(stderr, "bad host %s\n", host); return 1; }
    for (int i = 0; i < n; i++) {
        addr[i].sin_family = AF_INET;
        addr[i].sin_port = htons((uint16_t)ports[i]);
        addr[i].sin_addr = ip;
        seq[i] = (uint16_t)rnd();
        ts[i] = rnd();
        uint32_t ssrc = rnd() ^ (uint32_t)i;
        pkt[i][0] = 0x80;        /* V=2, no padding, extension or CSRC */
        pkt[i][1] = 0x80 | 0;    /* marker on the first packet, PT 0 (PCMU) */
        pkt[i][8] = ssrc >> 24; pkt[i][9] = ssrc >> 16; pkt[i][10] = ssrc >> 8; pkt[i][11] = ssrc;
        for (int k = 0; k < PAYLOAD; k++) /* a 400 Hz-ish mu-law pattern, not silence */
            pkt[i][12 + k] = (unsigned char)(0x10 + ((k * 5 + i) % 0x60));
    }

    struct mmsghdr *msgs = calloc(batch, sizeof *msgs);
    struct iovec *iov = calloc(batch, sizeof *iov);
    long long *hist = calloc(LATE_BUCKETS, sizeof *hist);
    long long wakes = 0, late_max = 0, packets = 0, errors = 0;

    long long ticks = (long long)(seconds * 1000.0 / interval_ms + 0.5);
    int64_t interval = (int64_t)interval_ms * 1000000LL;
    int64_t slot_ns = interval / slots;
    int *idx = malloc(sizeof(int) * n);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t t0 = now_ns() + 20000000LL; /* start 20 ms from now */
    int64_t w0 = 0;

    for (long long tick = 0; tick < ticks; tick++) {
        for (int s = 0; s < slots; s++) {
            int64_t target = t0 + tick * interval + s * slot_ns;
            sleep_until(target);
            int64_t late = now_ns() - target;
            if (w0 == 0) w0 = now_ns();
            if (late < 0) late = 0;
            if (late > late_max) late_max = late;
            long long b = late / LATE_BUCKET_NS;
            hist[b < LATE_BUCKETS ? b : LATE_BUCKETS - 1]++;
            wakes++;
            int m = 0;
            for (int i = s; i < n; i += slots) idx[m++] = i;
            for (int off = 0; off < m;) {
                int k = m - off < batch ? m - off : batch;
                for (int j = 0; j < k; j++) {
                    int i = idx[off + j];
                    unsigned char *p = pkt[i];
                    if (tick > 0) p[1] = 0; /* marker only on the first packet */
                    p[2] = seq[i] >> 8; p[3] = seq[i];
                    p[4] = ts[i] >> 24; p[5] = ts[i] >> 16; p[6] = ts[i] >> 8; p[7] = ts[i];
                    iov[j].iov_base = p;
                    iov[j].iov_len = PACKET;
                    memset(&msgs[j].msg_hdr, 0, sizeof msgs[j].msg_hdr);
                    msgs[j].msg_hdr.msg_name = &addr[i];
                    msgs[j].msg_hdr.msg_namelen = sizeof addr[i];
                    msgs[j].msg_hdr.msg_iov = &iov[j];
                    msgs[j].msg_hdr.msg_iovlen = 1;
                }
                int r = sendmmsg(fd, msgs, k, 0);
                if (r < 0) {
                    if (errno == EINTR) continue;
                    errors++; /* the batch's first packet failed: skip it (a sequence gap) */
                    int i = idx[off];
                    seq[i]++;
                    ts[i] += PAYLOAD;
                    off++;
                    continue;
                }
                for (int j = 0; j < r; j++) {
                    int i = idx[off + j];
                    sent[i]++;
                    seq[i]++;
                    ts[i] += PAYLOAD;
                }
                packets += r;
                off += r;
            }
        }
    }
    int64_t w1 = now_ns();
    getrusage(RUSAGE_SELF, &ru1);

    long long smin = sent[0], smax = sent[0];
    for (int i = 1; i < n; i++) {
        if (sent[i] < smin) smin = sent[i];
        if (sent[i] > smax) smax = sent[i];
    }
    if (counts_file) {
        FILE *c = fopen(counts_file, "w");
        if (c) {
            for (int i = 0; i < n; i++) fprintf(c, "%d %lld\n", ports[i], sent[i]);
            fclose(c);
        }
    }
    printf("{\"streams\": %d, \"ticks\": %lld, \"packets\": %lld, \"per_stream_min\": %lld, "
           "\"per_stream_max\": %lld, \"send_errors\": %lld, \"wall_s\": %.6f, "
           "\"late_p50_us\": %.1f, \"late_p99_us\": %.1f, \"late_max_us\": %.1f, "
           "\"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f}\n",
           n, ticks, packets, smin, smax, errors, (w1 - w0) / 1e9,
           percentile_ns(hist, wakes, 0.5) / 1e3, percentile_ns(hist, wakes, 0.99) / 1e3,
           late_max / 1e3, tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime),
           tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime));
    return 0;
}
