/*
 * tcp_sock.c - TCP sockets on the loopback with queued data across
 * checkpoint/restore (all endpoints in this process).
 *
 * Kernel state tested:
 *  - a listening socket on 127.0.0.1, ephemeral port (written to
 *    CTL_DIR/port), SO_REUSEADDR, backlog 16;
 *  - established connection E (client cli_e, accepted srv_e) with
 *    102 400 bytes sent cli_e->srv_e and 10 240 bytes srv_e->cli_e, all
 *    unread (part may still sit in the sender's write queue);
 *    cli_e: TCP_NODELAY, SO_KEEPALIVE with TCP_KEEPIDLE 120 /
 *    TCP_KEEPINTVL 15 / TCP_KEEPCNT 4, SO_RCVTIMEO 3.5 s, SO_SNDTIMEO
 *    2.25 s, SO_RCVBUF 256 KiB, SO_SNDBUF 256 KiB (set before connect),
 *    IP_TOS 0x10;  srv_e: SO_RCVBUF 192 KiB, SO_SNDBUF 128 KiB,
 *    SO_LINGER on/5 s, O_NONBLOCK, Nagle on, keepalive off;
 *  - half-closed connection H: cli_h sent 5 000 bytes then
 *    shutdown(SHUT_WR) (FIN_WAIT2), srv_h (CLOSE_WAIT) sent 3 000 bytes
 *    that cli_h has not read;
 *  - a connection P not yet accepted on the listener, whose client cli_p
 *    already sent 777 bytes;
 *  - getsockname/getpeername of every socket, the options above (and
 *    SO_REUSEADDR, SO_ACCEPTCONN, F_GETFL) and the TCP state (TCP_INFO
 *    tcpi_state) of every socket unchanged since setup.
 * With the argument --established-only, H and P are left out; with --no-pending, P.
 * Verify: all queued data in order; srv_h sees its 5 000 bytes then EOF,
 * cli_h gets EPIPE on send and still receives; accept returns P with the
 * client's address and data; new data flows both ways on E, H (srv_h->cli_h,
 * then srv_h's FIN reaches cli_h) and P; a new client can connect and be
 * accepted on the same port.
 */
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define E_FWD (100 * 1024)
#define E_BACK (10 * 1024)
#define H_FWD 5000
#define H_BACK 3000
#define P_LEN 777
#define SEED_E_FWD 101
#define SEED_E_BACK 102
#define SEED_H_FWD 103
#define SEED_H_BACK 104
#define SEED_P 105

/* ---------------------------------------------------------------- utils */

static int wait_ev(int fd, short ev, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = ev};
    for (int waited = 0; waited < timeout_ms; waited += 100)
        if (poll(&p, 1, 100) > 0)
            return 1;
    return 0;
}

static void send_all(int fd, const void *p, size_t n, const char *what)
{
    const char *c = p;
    size_t total = n;
    while (n) {
        if (!wait_ev(fd, POLLOUT, 10000))
            wl_fail("%s: could not send (socket not writable for 10 s) after %zu of %zu bytes",
                    what, total - n, total);
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w < 0)
            wl_fail("%s: send failed after %zu of %zu bytes: %s", what, total - n, total,
                    strerror(errno));
        c += w;
        n -= (size_t)w;
    }
}

static void recv_exact(int fd, void *buf, size_t n, const char *what)
{
    size_t got = 0;
    while (got < n) {
        if (!wait_ev(fd, POLLIN, 5000))
            wl_fail("%s: expected %zu bytes, only %zu arrived within 5 s", what, n, got);
        ssize_t r = recv(fd, (char *)buf + got, n - got, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            wl_fail("%s: recv returned %zd (%s) after %zu of %zu bytes", what, r,
                    r < 0 ? strerror(errno) : "EOF", got, n);
        got += (size_t)r;
    }
}

static void expect_nothing(int fd, const char *what)
{
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    WL_CHECK(r < 0 && errno == EAGAIN, "%s: expected no more data, recv(MSG_PEEK) returned %zd "
             "(%s)", what, r, r < 0 ? strerror(errno) : r == 0 ? "EOF" : "data present");
}

static void expect_eof(int fd, const char *what)
{
    WL_CHECK(wait_ev(fd, POLLIN, 5000), "%s: EOF expected, socket not readable within 5 s", what);
    char c;
    ssize_t r;
    do
        r = recv(fd, &c, 1, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    WL_CHECK(r == 0, "%s: EOF expected, recv returned %zd (%s)", what, r,
             r < 0 ? strerror(errno) : "data");
}

static void ping(int from, int to, const char *what)
{
    char msg[80], buf[80];
    int n = snprintf(msg, sizeof msg, "new data %s from fd %d", what, from);
    send_all(from, msg, (size_t)n, what);
    recv_exact(to, buf, (size_t)n, what);
    WL_CHECK(memcmp(buf, msg, (size_t)n) == 0, "%s: expected '%s', found '%.*s'", what, msg, n,
             buf);
}

static void pattern_check(int fd, size_t n, uint64_t seed, const char *what)
{
    static unsigned char buf[E_FWD];
    recv_exact(fd, buf, n, what);
    if (!wl_check_pattern(buf, n, seed)) {
        size_t i = 0;
        static unsigned char exp[E_FWD];
        wl_fill_pattern(exp, n, seed);
        while (i < n && buf[i] == exp[i])
            i++;
        wl_fail("%s: the %zu queued bytes differ from what was sent, first at offset %zu", what,
                n, i);
    }
}

static void setint(int fd, int lvl, int opt, int v, const char *what)
{
    if (setsockopt(fd, lvl, opt, &v, sizeof v) < 0)
        wl_fail("setup: setsockopt %s: %s", what, strerror(errno));
}

static int getint(int fd, int lvl, int opt)
{
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, lvl, opt, &v, &l) < 0)
        return -1000 - errno;
    return v;
}

/* ---------------------------------------------------------- snapshots */

struct tcpsnap {
    int fd;
    const char *name;
    int name_rc, peer_rc;
    struct sockaddr_in self, peer;
    int reuse, acceptconn, keepalive, rcvbuf, sndbuf, nodelay, kidle, kintvl, kcnt, tos, fl;
    struct timeval rcvtimeo, sndtimeo;
    struct linger linger;
    int state;
};
#define MAXS 16
static struct tcpsnap snaps[MAXS];
static int nsnaps;

static const char *state_name(int s)
{
    static const char *n[] = {"?", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1",
                              "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK",
                              "LISTEN", "CLOSING"};
    return s >= 0 && s < (int)(sizeof n / sizeof n[0]) ? n[s] : "?";
}

static void take(int fd, const char *name, struct tcpsnap *s)
{
    memset(s, 0, sizeof *s);
    s->fd = fd;
    s->name = name;
    socklen_t l = sizeof s->self;
    s->name_rc = getsockname(fd, (struct sockaddr *)&s->self, &l) < 0 ? -errno : 0;
    l = sizeof s->peer;
    s->peer_rc = getpeername(fd, (struct sockaddr *)&s->peer, &l) < 0 ? -errno : 0;
    s->reuse = getint(fd, SOL_SOCKET, SO_REUSEADDR);
    s->acceptconn = getint(fd, SOL_SOCKET, SO_ACCEPTCONN);
    s->keepalive = getint(fd, SOL_SOCKET, SO_KEEPALIVE);
    s->rcvbuf = getint(fd, SOL_SOCKET, SO_RCVBUF);
    s->sndbuf = getint(fd, SOL_SOCKET, SO_SNDBUF);
    s->nodelay = getint(fd, IPPROTO_TCP, TCP_NODELAY);
    s->kidle = getint(fd, IPPROTO_TCP, TCP_KEEPIDLE);
    s->kintvl = getint(fd, IPPROTO_TCP, TCP_KEEPINTVL);
    s->kcnt = getint(fd, IPPROTO_TCP, TCP_KEEPCNT);
    s->tos = getint(fd, IPPROTO_IP, IP_TOS);
    s->fl = fcntl(fd, F_GETFL);
    l = sizeof s->rcvtimeo;
    getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &s->rcvtimeo, &l);
    l = sizeof s->sndtimeo;
    getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &s->sndtimeo, &l);
    l = sizeof s->linger;
    getsockopt(fd, SOL_SOCKET, SO_LINGER, &s->linger, &l);
    struct tcp_info ti;
    memset(&ti, 0, sizeof ti);
    l = sizeof ti;
    s->state = getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ? -1 : ti.tcpi_state;
}

static void snap(int fd, const char *name)
{
    take(fd, name, &snaps[nsnaps++]);
}

static void sin_str(int rc, const struct sockaddr_in *a, char *b, size_t n)
{
    if (rc < 0) {
        snprintf(b, n, "<error %s>", strerror(-rc));
        return;
    }
    char ip[32];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(b, n, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
}

static int sin_eq(int rc1, const struct sockaddr_in *a, int rc2, const struct sockaddr_in *b)
{
    if (rc1 != rc2)
        return 0;
    if (rc1 < 0)
        return 1;
    return a->sin_family == b->sin_family && a->sin_port == b->sin_port &&
           a->sin_addr.s_addr == b->sin_addr.s_addr;
}

static struct tcpsnap *find(int fd)
{
    for (int i = 0; i < nsnaps; i++)
        if (snaps[i].fd == fd)
            return &snaps[i];
    wl_fail("internal: no snapshot for fd %d", fd);
}

static void check_snaps(void)
{
    char b1[64], b2[64];
    for (int i = 0; i < nsnaps; i++) {
        struct tcpsnap *w = &snaps[i], n;
        take(w->fd, w->name, &n);
        sin_str(w->name_rc, &w->self, b1, sizeof b1);
        sin_str(n.name_rc, &n.self, b2, sizeof b2);
        WL_CHECK(sin_eq(w->name_rc, &w->self, n.name_rc, &n.self),
                 "%s (fd %d): getsockname expected %s, found %s", w->name, w->fd, b1, b2);
        sin_str(w->peer_rc, &w->peer, b1, sizeof b1);
        sin_str(n.peer_rc, &n.peer, b2, sizeof b2);
        WL_CHECK(sin_eq(w->peer_rc, &w->peer, n.peer_rc, &n.peer),
                 "%s (fd %d): getpeername expected %s, found %s", w->name, w->fd, b1, b2);
        WL_CHECK(n.state == w->state, "%s (fd %d): TCP state expected %s (%d), found %s (%d)",
                 w->name, w->fd, state_name(w->state), w->state, state_name(n.state), n.state);
#define CMP(field, label)                                                                        \
    WL_CHECK(n.field == w->field, "%s (fd %d): %s expected %d (as at setup), found %d", w->name, \
             w->fd, label, w->field, n.field)
        CMP(reuse, "SO_REUSEADDR");
        CMP(acceptconn, "SO_ACCEPTCONN");
        CMP(keepalive, "SO_KEEPALIVE");
        CMP(rcvbuf, "SO_RCVBUF");
        CMP(sndbuf, "SO_SNDBUF");
        CMP(nodelay, "TCP_NODELAY");
        CMP(kidle, "TCP_KEEPIDLE");
        CMP(kintvl, "TCP_KEEPINTVL");
        CMP(kcnt, "TCP_KEEPCNT");
        CMP(tos, "IP_TOS");
        CMP(fl, "F_GETFL");
        CMP(linger.l_onoff, "SO_LINGER l_onoff");
        CMP(linger.l_linger, "SO_LINGER l_linger");
#undef CMP
        WL_CHECK(n.rcvtimeo.tv_sec == w->rcvtimeo.tv_sec &&
                     n.rcvtimeo.tv_usec == w->rcvtimeo.tv_usec,
                 "%s: SO_RCVTIMEO expected %ld.%06ld s, found %ld.%06ld s", w->name,
                 (long)w->rcvtimeo.tv_sec, (long)w->rcvtimeo.tv_usec, (long)n.rcvtimeo.tv_sec,
                 (long)n.rcvtimeo.tv_usec);
        WL_CHECK(n.sndtimeo.tv_sec == w->sndtimeo.tv_sec &&
                     n.sndtimeo.tv_usec == w->sndtimeo.tv_usec,
                 "%s: SO_SNDTIMEO expected %ld.%06ld s, found %ld.%06ld s", w->name,
                 (long)w->sndtimeo.tv_sec, (long)w->sndtimeo.tv_usec, (long)n.sndtimeo.tv_sec,
                 (long)n.sndtimeo.tv_usec);
    }
}

static int tcp_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        wl_fail("setup: socket: %s", strerror(errno));
    return fd;
}

static void xconnect(int fd, const struct sockaddr_in *a, const char *what)
{
    if (connect(fd, (const struct sockaddr *)a, sizeof *a) < 0)
        wl_fail("%s: connect to 127.0.0.1:%u: %s", what, (unsigned)ntohs(a->sin_port),
                strerror(errno));
}

static int xaccept(int lsn, const char *what)
{
    if (!wait_ev(lsn, POLLIN, 5000))
        wl_fail("%s: no connection to accept within 5 s", what);
    int fd;
    do
        fd = accept(lsn, NULL, NULL);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        wl_fail("%s: accept: %s", what, strerror(errno));
    return fd;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    static unsigned char buf[E_FWD];

    int lsn = tcp_socket();
    setint(lsn, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = 0,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lsn, (struct sockaddr *)&la, sizeof la) < 0)
        wl_fail("setup: bind 127.0.0.1:0: %s", strerror(errno));
    if (listen(lsn, 16) < 0)
        wl_fail("setup: listen: %s", strerror(errno));
    socklen_t l = sizeof la;
    getsockname(lsn, (struct sockaddr *)&la, &l);
    unsigned port = ntohs(la.sin_port);
    {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/port", wl_ctl_dir());
        FILE *f = fopen(p, "w");
        if (!f)
            wl_fail("setup: fopen %s: %s", p, strerror(errno));
        fprintf(f, "%u\n", port);
        fclose(f);
    }

    /* E: established, options, data both ways */
    int cli_e = tcp_socket();
    setint(cli_e, SOL_SOCKET, SO_RCVBUF, 256 * 1024, "SO_RCVBUF cli_e");
    setint(cli_e, SOL_SOCKET, SO_SNDBUF, 256 * 1024, "SO_SNDBUF cli_e");
    xconnect(cli_e, &la, "setup: E");
    int srv_e = xaccept(lsn, "setup: E");
    setint(cli_e, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    setint(cli_e, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
    setint(cli_e, IPPROTO_TCP, TCP_KEEPIDLE, 120, "TCP_KEEPIDLE");
    setint(cli_e, IPPROTO_TCP, TCP_KEEPINTVL, 15, "TCP_KEEPINTVL");
    setint(cli_e, IPPROTO_TCP, TCP_KEEPCNT, 4, "TCP_KEEPCNT");
    setint(cli_e, IPPROTO_IP, IP_TOS, 0x10, "IP_TOS");
    struct timeval rto = {3, 500000}, sto = {2, 250000};
    if (setsockopt(cli_e, SOL_SOCKET, SO_RCVTIMEO, &rto, sizeof rto) < 0 ||
        setsockopt(cli_e, SOL_SOCKET, SO_SNDTIMEO, &sto, sizeof sto) < 0)
        wl_fail("setup: SO_RCVTIMEO/SO_SNDTIMEO: %s", strerror(errno));
    setint(srv_e, SOL_SOCKET, SO_RCVBUF, 192 * 1024, "SO_RCVBUF srv_e");
    setint(srv_e, SOL_SOCKET, SO_SNDBUF, 128 * 1024, "SO_SNDBUF srv_e");
    struct linger lg = {1, 5};
    if (setsockopt(srv_e, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0)
        wl_fail("setup: SO_LINGER: %s", strerror(errno));
    if (fcntl(srv_e, F_SETFL, fcntl(srv_e, F_GETFL) | O_NONBLOCK) < 0)
        wl_fail("setup: O_NONBLOCK: %s", strerror(errno));
    wl_fill_pattern(buf, E_FWD, SEED_E_FWD);
    send_all(cli_e, buf, E_FWD, "setup: E cli_e->srv_e");
    wl_fill_pattern(buf, E_BACK, SEED_E_BACK);
    send_all(srv_e, buf, E_BACK, "setup: E srv_e->cli_e");

    /* With --established-only, only the listener and E (no half-closed connection, nothing
     * pending on the listener): the case the engine supports today. */
    const int only_e = argc > 2 && !strcmp(argv[2], "--established-only");
    /* With --no-pending, E and H but no connection pending on the listener. */
    const int no_p = only_e || (argc > 2 && !strcmp(argv[2], "--no-pending"));
    int cli_h = -1, srv_h = -1, cli_p = -1;
    if (!only_e) {
    /* H: half-closed */
    cli_h = tcp_socket();
    xconnect(cli_h, &la, "setup: H");
    srv_h = xaccept(lsn, "setup: H");
    wl_fill_pattern(buf, H_FWD, SEED_H_FWD);
    send_all(cli_h, buf, H_FWD, "setup: H cli_h->srv_h");
    wl_fill_pattern(buf, H_BACK, SEED_H_BACK);
    send_all(srv_h, buf, H_BACK, "setup: H srv_h->cli_h");
    if (shutdown(cli_h, SHUT_WR) < 0)
        wl_fail("setup: shutdown: %s", strerror(errno));

    /* P: pending on the listener, data already sent */
    if (!no_p) {
        cli_p = tcp_socket();
        xconnect(cli_p, &la, "setup: P");
        wl_fill_pattern(buf, P_LEN, SEED_P);
        send_all(cli_p, buf, P_LEN, "setup: P cli_p");
    }

    /* Let the FIN exchange settle: cli_h FIN_WAIT2, srv_h CLOSE_WAIT. */
    struct tcp_info ti;
    for (int i = 0;; i++) {
        int s1, s2;
        l = sizeof ti;
        getsockopt(cli_h, IPPROTO_TCP, TCP_INFO, &ti, &l);
        s1 = ti.tcpi_state;
        l = sizeof ti;
        getsockopt(srv_h, IPPROTO_TCP, TCP_INFO, &ti, &l);
        s2 = ti.tcpi_state;
        if (s1 == TCP_FIN_WAIT2 && s2 == TCP_CLOSE_WAIT)
            break;
        if (i > 500)
            wl_fail("setup: H expected cli_h FIN_WAIT2 / srv_h CLOSE_WAIT, found %s / %s",
                    state_name(s1), state_name(s2));
        wl_sleep_ms(10);
    }
    }

    snap(lsn, "listener");
    snap(cli_e, "E client");
    snap(srv_e, "E server");
    if (!only_e) {
        snap(cli_h, "H client");
        snap(srv_h, "H server");
        if (!no_p)
            snap(cli_p, "P client");
    }

    /* setup sanity for the options the check relies on */
    {
        struct tcpsnap *s = find(cli_e);
        WL_CHECK(s->nodelay == 1 && s->keepalive == 1 && s->kidle == 120 && s->kintvl == 15 &&
                     s->kcnt == 4 && s->tos == 0x10,
                 "setup: cli_e options nodelay %d keepalive %d idle %d intvl %d cnt %d tos %#x",
                 s->nodelay, s->keepalive, s->kidle, s->kintvl, s->kcnt, s->tos);
        WL_CHECK(s->state == TCP_ESTABLISHED, "setup: E client state %s", state_name(s->state));
        s = find(lsn);
        WL_CHECK(s->reuse == 1 && s->acceptconn == 1 && s->state == TCP_LISTEN,
                 "setup: listener reuse %d acceptconn %d state %s", s->reuse, s->acceptconn,
                 state_name(s->state));
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    check_snaps();
    {
        struct sockaddr_in a;
        l = sizeof a;
        getsockname(lsn, (struct sockaddr *)&a, &l);
        WL_CHECK(ntohs(a.sin_port) == port && a.sin_addr.s_addr == htonl(INADDR_LOOPBACK),
                 "listener: expected 127.0.0.1:%u (CTL_DIR/port), found port %u", port,
                 (unsigned)ntohs(a.sin_port));
        WL_CHECK(fcntl(srv_e, F_GETFL) & O_NONBLOCK, "E server: O_NONBLOCK lost");
    }

    /* E */
    pattern_check(srv_e, E_FWD, SEED_E_FWD, "E cli_e->srv_e");
    expect_nothing(srv_e, "E server after the 100 KiB");
    pattern_check(cli_e, E_BACK, SEED_E_BACK, "E srv_e->cli_e");
    expect_nothing(cli_e, "E client after the 10 KiB");
    ping(cli_e, srv_e, "E cli_e->srv_e");
    ping(srv_e, cli_e, "E srv_e->cli_e");

    if (only_e)
        goto new_connection;

    /* H */
    pattern_check(srv_h, H_FWD, SEED_H_FWD, "H cli_h->srv_h (before FIN)");
    expect_eof(srv_h, "H server after the client's data (client shut down for writing)");
    pattern_check(cli_h, H_BACK, SEED_H_BACK, "H srv_h->cli_h");
    expect_nothing(cli_h, "H client after the 3000 bytes");
    {
        ssize_t w = send(cli_h, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        WL_CHECK(w < 0 && errno == EPIPE,
                 "H client (shut down for writing): send expected EPIPE, found %zd (%s)", w,
                 w < 0 ? strerror(errno) : "sent");
    }
    ping(srv_h, cli_h, "H srv_h->cli_h");
    WL_CHECK(shutdown(srv_h, SHUT_WR) == 0, "H server: shutdown failed: %s", strerror(errno));
    expect_eof(cli_h, "H client after the server's shutdown");

    /* P */
    if (!no_p) {
        struct sockaddr_in pa, ca;
        memset(&pa, 0, sizeof pa);
        l = sizeof pa;
        WL_CHECK(wait_ev(lsn, POLLIN, 5000), "listener: the pending connection is not reported");
        int srv_p;
        do
            srv_p = accept(lsn, (struct sockaddr *)&pa, &l);
        while (srv_p < 0 && errno == EINTR);
        WL_CHECK(srv_p >= 0, "listener: accept of the pending connection: %s", strerror(errno));
        l = sizeof ca;
        getsockname(cli_p, (struct sockaddr *)&ca, &l);
        char b1[64], b2[64];
        sin_str(0, &ca, b1, sizeof b1);
        sin_str(0, &pa, b2, sizeof b2);
        WL_CHECK(sin_eq(0, &ca, 0, &pa), "accepted connection: peer expected %s (cli_p), found %s",
                 b1, b2);
        pattern_check(srv_p, P_LEN, SEED_P, "P cli_p->accepted (sent before accept)");
        expect_nothing(srv_p, "P accepted after the client's data");
        ping(srv_p, cli_p, "P accepted->cli_p");
        ping(cli_p, srv_p, "P cli_p->accepted");
        struct pollfd pf = {.fd = lsn, .events = POLLIN};
        WL_CHECK(poll(&pf, 1, 0) == 0, "listener: another connection pending (expected none)");
        close(srv_p);
    }

    /* a new connection on the same port */
new_connection:
    {
        int c = tcp_socket();
        xconnect(c, &la, "verify: new client");
        int s = xaccept(lsn, "verify: new client");
        ping(c, s, "new client->server");
        ping(s, c, "new server->client");
        close(c);
        close(s);
    }
    wl_report(1, "ok");
}
