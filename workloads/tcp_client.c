/*
 * tcp_client.c - a live TCP connection to a server OUTSIDE the tree
 * across checkpoint/restore.
 *
 * Usage: tcp_client CTL_DIR HOST:PORT   (HOST may be "[v6addr]"); the test
 * runs an echo server there that sends back every byte it receives.
 *
 * Kernel state tested: one established TCP connection (TCP_NODELAY,
 * O_NONBLOCK) to the external server, with data in flight in both
 * directions at any moment; its local address is written to CTL_DIR/port
 * (port number) and CTL_DIR/local ("addr port").
 *
 * The process keeps sending numbered lines "<n> <payload>\n" (payload
 * length and content depend only on n) a few every 5 ms, at most 400 lines
 * ahead of the echoes, and checks every echoed line against the expected
 * next one as it arrives (so the connection always has data in flight).
 * The first problem (a gap, a reordering, changed content, EOF, a socket
 * error, an over-long line) is recorded in memory and I/O stops.
 * Verify: no error was recorded, at least 50 lines made the round trip
 * before verify, the local/peer addresses are unchanged, echoes keep coming
 * during 200 ms more traffic (new echoes in at least 2 separate 5 ms
 * steps), then (sending stopped) every line sent is echoed within 5 s.
 */
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_INFLIGHT 400
#define LINES_PER_STEP 3
#define MAX_LINE 128

static int sock = -1;
static unsigned long long sent_n;   /* lines handed to the output buffer */
static unsigned long long echoed_n; /* lines echoed and checked */
static char outbuf[MAX_LINE * LINES_PER_STEP * 2];
static size_t out_len, out_off;
static char inbuf[MAX_LINE * 4];
static size_t in_len;
static char err[600]; /* first error; I/O stops once set */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000ULL + (uint64_t)ts.tv_nsec / 1000000ULL;
}

#define ERR(...) do { if (!err[0]) snprintf(err, sizeof err, __VA_ARGS__); } while (0)

/* line n: "<n> <payload>\n", payload 1..61 chars from [a-z0-9] */
static size_t gen_line(unsigned long long n, char *buf)
{
    static const char al[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    int len = snprintf(buf, MAX_LINE, "%llu ", n);
    size_t pl = (size_t)((n * 7) % 61) + 1;
    uint64_t h = wl_hash(&n, sizeof n);
    for (size_t i = 0; i < pl; i++) {
        buf[len++] = al[h % 36];
        h = h * 6364136223846793005ULL + 1442695040888963407ULL + i;
        h ^= h >> 29;
    }
    buf[len++] = '\n';
    return (size_t)len;
}

static void check_line(const char *line, size_t len)
{
    char exp[MAX_LINE];
    size_t el = gen_line(echoed_n, exp);
    if (len == el && memcmp(line, exp, el) == 0) {
        echoed_n++;
        return;
    }
    char *end;
    unsigned long long got = strtoull(line, &end, 10);
    const char *kind = "changed content";
    if (end != line && *end == ' ') {
        if (got > echoed_n)
            kind = "gap (lines missing)";
        else if (got < echoed_n)
            kind = "reordered or repeated line";
    }
    ERR("echo line #%llu: %s: expected '%.*s', found '%.*s' (%zu bytes); %llu lines sent",
        echoed_n, kind, (int)el - 1, exp, (int)(len > 100 ? 100 : len - 1), line, len, sent_n);
}

/* one step of the I/O loop: queue lines (if sending), flush, wait up to
 * wait_ms for input, check what arrived */
static void step(int sending, int wait_ms)
{
    if (err[0]) {
        wl_sleep_ms(wait_ms);
        return;
    }
    if (sending && out_off == out_len) {
        out_len = out_off = 0;
        for (int i = 0; i < LINES_PER_STEP && sent_n - echoed_n < MAX_INFLIGHT; i++)
            out_len += gen_line(sent_n++, outbuf + out_len);
    }
    while (out_off < out_len) {
        ssize_t w = send(sock, outbuf + out_off, out_len - out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            break;
        if (w < 0) {
            ERR("send failed after %llu lines sent, %llu echoed: %s", sent_n, echoed_n,
                strerror(errno));
            return;
        }
        out_off += (size_t)w;
    }
    struct pollfd p = {.fd = sock, .events = POLLIN};
    if (out_off < out_len)
        p.events |= POLLOUT;
    int r = poll(&p, 1, wait_ms);
    if (r < 0 && errno != EINTR) {
        ERR("poll failed: %s", strerror(errno));
        return;
    }
    if (r <= 0 || !(p.revents & (POLLIN | POLLERR | POLLHUP)))
        return;
    for (;;) {
        ssize_t n = recv(sock, inbuf + in_len, sizeof inbuf - in_len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            ERR("recv failed after %llu lines echoed (%llu sent): %s", echoed_n, sent_n,
                strerror(errno));
            return;
        }
        if (n == 0) {
            ERR("server closed the connection (EOF) after %llu lines echoed (%llu sent)",
                echoed_n, sent_n);
            return;
        }
        in_len += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < in_len; i++) {
            if (inbuf[i] != '\n')
                continue;
            if (echoed_n >= sent_n) {
                ERR("received a line after all %llu sent lines were echoed: '%.*s'", sent_n,
                    (int)(i - start > 100 ? 100 : i - start), inbuf + start);
                return;
            }
            check_line(inbuf + start, i - start + 1);
            if (err[0])
                return;
            start = i + 1;
        }
        memmove(inbuf, inbuf + start, in_len - start);
        in_len -= start;
        if (in_len >= MAX_LINE) {
            ERR("echo line #%llu: no newline within %d bytes", echoed_n, MAX_LINE);
            return;
        }
    }
}

static int parse_target(const char *s, struct addrinfo **res)
{
    char host[256];
    const char *port;
    if (s[0] == '[') {
        const char *e = strchr(s, ']');
        if (!e || e[1] != ':' || (size_t)(e - s - 1) >= sizeof host)
            return -1;
        memcpy(host, s + 1, (size_t)(e - s - 1));
        host[e - s - 1] = 0;
        port = e + 2;
    } else {
        const char *c = strrchr(s, ':');
        if (!c || (size_t)(c - s) >= sizeof host)
            return -1;
        memcpy(host, s, (size_t)(c - s));
        host[c - s] = 0;
        port = c + 1;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    return getaddrinfo(host, port, &hints, res) == 0 ? 0 : -1;
}

static void addr_str(const struct sockaddr_storage *a, char *b, size_t n, unsigned *port)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    *port = 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)a;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
        *port = ntohs(s->sin_port);
    } else if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)a;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
        *port = ntohs(s->sin6_port);
    }
    snprintf(b, n, "%s %u", ip, *port);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (argc < 3)
        wl_fail("usage: tcp_client CTL_DIR HOST:PORT (echo server address missing)");
    struct addrinfo *ai = NULL;
    if (parse_target(argv[2], &ai) < 0)
        wl_fail("setup: cannot parse or resolve '%s' (expected HOST:PORT)", argv[2]);
    int cerr = 0;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        sock = socket(a->ai_family, SOCK_STREAM, 0);
        if (sock < 0)
            continue;
        if (connect(sock, a->ai_addr, a->ai_addrlen) == 0)
            break;
        cerr = errno;
        close(sock);
        sock = -1;
    }
    freeaddrinfo(ai);
    if (sock < 0)
        wl_fail("setup: connect to %s: %s", argv[2], strerror(cerr));
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK) < 0)
        wl_fail("setup: O_NONBLOCK: %s", strerror(errno));

    struct sockaddr_storage self0, peer0;
    socklen_t sl = sizeof self0, pl = sizeof peer0;
    memset(&self0, 0, sizeof self0);
    memset(&peer0, 0, sizeof peer0);
    getsockname(sock, (struct sockaddr *)&self0, &sl);
    getpeername(sock, (struct sockaddr *)&peer0, &pl);
    {
        char b[128], p[PATH_MAX + 16];
        unsigned port;
        addr_str(&self0, b, sizeof b, &port);
        snprintf(p, sizeof p, "%s/port", wl_ctl_dir());
        FILE *f = fopen(p, "w");
        if (!f)
            wl_fail("setup: fopen %s: %s", p, strerror(errno));
        fprintf(f, "%u\n", port);
        fclose(f);
        snprintf(p, sizeof p, "%s/local", wl_ctl_dir());
        f = fopen(p, "w");
        if (!f)
            wl_fail("setup: fopen %s: %s", p, strerror(errno));
        fprintf(f, "%s\n", b);
        fclose(f);
    }

    /* the echo server must answer before we claim to be ready */
    uint64_t t0 = now_ms();
    while (echoed_n < 20) {
        step(1, 5);
        if (err[0])
            wl_fail("setup: %s", err);
        if (now_ms() - t0 > 10000)
            wl_fail("setup: only %llu of %llu lines echoed by %s within 10 s", echoed_n, sent_n,
                    argv[2]);
    }

    wl_ready();
    while (!wl_verify_requested())
        step(1, 5);

    /* ------------------------------------------------------- verify */
    if (err[0])
        wl_fail("stream error before verify: %s", err);
    unsigned long long at_verify = echoed_n;
    WL_CHECK(at_verify >= 50, "only %llu lines made the round trip before verify (expected >= 50)",
             at_verify);
    {
        struct sockaddr_storage s, p;
        memset(&s, 0, sizeof s);
        memset(&p, 0, sizeof p);
        socklen_t l1 = sizeof s, l2 = sizeof p;
        getsockname(sock, (struct sockaddr *)&s, &l1);
        getpeername(sock, (struct sockaddr *)&p, &l2);
        char b1[128], b2[128];
        unsigned x;
        addr_str(&self0, b1, sizeof b1, &x);
        addr_str(&s, b2, sizeof b2, &x);
        WL_CHECK(l1 == sl && memcmp(&s, &self0, sl) == 0, "local address expected %s, found %s",
                 b1, b2);
        addr_str(&peer0, b1, sizeof b1, &x);
        addr_str(&p, b2, sizeof b2, &x);
        WL_CHECK(l2 == pl && memcmp(&p, &peer0, pl) == 0, "peer address expected %s, found %s",
                 b1, b2);
    }
    /* 200 ms more traffic: echoes must keep coming */
    uint64_t t1 = now_ms();
    int arrivals = 0; /* steps in which new echoes arrived */
    while (now_ms() - t1 < 200) {
        unsigned long long before = echoed_n;
        step(1, 5);
        arrivals += echoed_n > before;
    }
    if (err[0])
        wl_fail("stream error in the 200 ms after verify: %s", err);
    WL_CHECK(arrivals >= 2 && echoed_n > at_verify,
             "echoes stalled after verify: %llu lines echoed at verify, %llu after 200 ms more "
             "(new echoes in %d steps; %llu lines sent)",
             at_verify, echoed_n, arrivals, sent_n);
    /* drain: everything sent comes back */
    uint64_t t2 = now_ms();
    while ((echoed_n < sent_n || out_off < out_len) && !err[0] && now_ms() - t2 < 5000)
        step(0, 5);
    if (err[0])
        wl_fail("stream error while draining: %s", err);
    WL_CHECK(echoed_n == sent_n && out_off == out_len,
             "after 5 s without sending, %llu of %llu lines echoed (%zu bytes unsent)", echoed_n,
             sent_n, out_len - out_off);
    wl_report(1, "ok");
}
