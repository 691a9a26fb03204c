/* The C baseline for bench/media: receive on N UDP sockets with epoll + recvmmsg, count.
 *
 *   sink --count N --port-min P --ports-out F [--host 127.0.0.1] [--rcvbuf BYTES]
 *        [--batch 16]
 *
 * Binds N sockets on consecutive ports from P (a port that cannot be bound is skipped), writes
 * the bound ports to F, prints "READY" and then receives until SIGTERM or SIGINT: a
 * level-triggered epoll over every socket, one recvmmsg(MSG_DONTWAIT) of up to `batch`
 * datagrams per ready socket (again while a call fills the batch). On the signal it drains
 * what is still queued and prints one JSON line: packets, bytes, datagrams that were not
 * 172 bytes, per-socket minimum and maximum, the effective SO_RCVBUF, and this process's CPU
 * (getrusage) from READY to the end.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BATCH 64
#define DGRAM 2048
#define EXPECTED 172

static volatile sig_atomic_t stop = 0;

static void on_signal(int sig) { (void)sig; stop = 1; }

static double tv_s(struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

static void usage(void) {
    fprintf(stderr, "usage: sink --count N --port-min P --ports-out F [--host A] "
                    "[--rcvbuf BYTES] [--batch 16]\n");
    exit(2);
}

static struct mmsghdr msgs[MAX_BATCH];
static struct iovec iov[MAX_BATCH];
static char bufs[MAX_BATCH][DGRAM];

/* One recvmmsg round on fd (repeated while batches come back full); returns packets read. */
static long long drain(int fd, int batch, long long *bytes, long long *odd) {
    long long got = 0;
    for (;;) {
        int r = recvmmsg(fd, msgs, batch, MSG_DONTWAIT, NULL);
        if (r <= 0) break;
        for (int j = 0; j < r; j++) {
            *bytes += msgs[j].msg_len;
            if (msgs[j].msg_len != EXPECTED) (*odd)++;
        }
        got += r;
        if (r < batch) break;
    }
    return got;
}

int main(int argc, char **argv) {
    const char *ports_out = NULL, *host = "127.0.0.1";
    int count = -1, port_min = -1, rcvbuf = 0, batch = 16;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (!strcmp(argv[i], "--count")) count = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--port-min")) port_min = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ports-out")) ports_out = argv[++i];
        else if (!strcmp(argv[i], "--host")) host = argv[++i];
        else if (!strcmp(argv[i], "--rcvbuf")) rcvbuf = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[++i]);
        else usage();
    }
    if (count < 1 || port_min < 1 || !ports_out || batch < 1 || batch > MAX_BATCH) usage();

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct in_addr ip;
    if (inet_pton(AF_INET, host, &ip) != 1) { fprintf(stderr, "bad host %s\n", host); return 1; }
    int *fds = calloc(count, sizeof *fds);
    int *ports = calloc(count, sizeof *ports);
    long long *per = calloc(count, sizeof *per);
    int ep = epoll_create1(0);
    int n = 0, effective = 0;
    for (int port = port_min; n < count && port < 65536; port++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0) { perror("socket"); return 1; }
        if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = ip};
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); continue; }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)n};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { perror("epoll_ctl"); return 1; }
        fds[n] = fd;
        ports[n] = port;
        n++;
    }
    if (n < count) { fprintf(stderr, "bound only %d of %d sockets\n", n, count); return 1; }
    socklen_t len = sizeof effective;
    getsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &effective, &len);

    FILE *f = fopen(ports_out, "w");
    if (!f) { perror(ports_out); return 1; }
    for (int i = 0; i < n; i++) fprintf(f, "%d\n", ports[i]);
    fclose(f);

    for (int j = 0; j < MAX_BATCH; j++) {
        iov[j].iov_base = bufs[j];
        iov[j].iov_len = DGRAM;
        msgs[j].msg_hdr.msg_iov = &iov[j];
        msgs[j].msg_hdr.msg_iovlen = 1;
    }
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    printf("READY %d\n", n);
    fflush(stdout);

    long long packets = 0, bytes = 0, odd = 0, wakeups = 0;
    struct epoll_event events[1024];
    while (!stop) {
        int k = epoll_wait(ep, events, 1024, 100);
        if (k < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        if (k > 0) wakeups++;
        for (int e = 0; e < k; e++) {
            uint32_t i = events[e].data.u32;
            long long got = drain(fds[i], batch, &bytes, &odd);
            per[i] += got;
            packets += got;
        }
    }
    for (int i = 0; i < n; i++) { /* what arrived after the last wake-up */
        long long got = drain(fds[i], batch, &bytes, &odd);
        per[i] += got;
        packets += got;
    }
    getrusage(RUSAGE_SELF, &ru1);
    long long pmin = per[0], pmax = per[0];
    for (int i = 1; i < n; i++) {
        if (per[i] < pmin) pmin = per[i];
        if (per[i] > pmax) pmax = per[i];
    }
    printf("{\"sockets\": %d, \"packets\": %lld, \"bytes\": %lld, \"odd_size\": %lld, "
           "\"per_socket_min\": %lld, \"per_socket_max\": %lld, \"wakeups\": %lld, "
           "\"rcvbuf\": %d, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f}\n",
           n, packets, bytes, odd, pmin, pmax, wakeups, effective,
           tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime), tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime));
    return 0;
}
