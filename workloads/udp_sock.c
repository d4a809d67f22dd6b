/*
 * udp_sock.c - UDP sockets on the loopback with queued datagrams across
 * checkpoint/restore (all in one process).
 *
 * Kernel state tested:
 *  - three UDP sockets bound to 127.0.0.1 with ephemeral ports (written to
 *    CTL_DIR/ports as "a PORT\nb PORT\nc PORT\n"):
 *      A: connected to B, IP_TTL 33, SO_SNDBUF 64 KiB;
 *      B: not connected, SO_RCVBUF 1 MiB (capped by net.core.rmem_max);
 *      C: not connected, SO_BROADCAST;
 *  - queued unread on B, in this order: from A 1, 0, from C 333, from A
 *    100, 1400, 9000, from C 60000 bytes (boundaries, the empty datagram,
 *    order and each sender's address must be kept);
 *  - queued unread on A: from B 7, 2000, 50 bytes;
 *  - getsockname/getpeername, SO_RCVBUF, SO_SNDBUF, SO_BROADCAST, IP_TTL,
 *    F_GETFL of all three unchanged.
 * Verify: recvfrom returns exactly the queued datagrams, in order, with
 * lengths (no MSG_TRUNC), content and source addresses, then nothing;
 * new traffic A->B, B->A, C->B works, and A, being connected to B, does
 * not receive a datagram that C sends to it.
 */
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { A, B, C, NS };
static const char *sname[NS] = {"A", "B", "C"};
static int s[NS];
static struct sockaddr_in addr[NS];

struct dg {
    int from, to;
    size_t len;
};
/* setup order */
static const struct dg queued[] = {
    {A, B, 1},    {A, B, 0},    {C, B, 333}, {A, B, 100}, {B, A, 7},    {A, B, 1400},
    {B, A, 2000}, {A, B, 9000}, {C, B, 60000}, {B, A, 50},
};
#define NQ (int)(sizeof queued / sizeof queued[0])
#define SEED_BASE 200

static char *astr(const struct sockaddr_in *a, char *b, size_t n)
{
    char ip[32];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(b, n, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    return b;
}

static int aeq(const struct sockaddr_in *x, const struct sockaddr_in *y)
{
    return x->sin_family == y->sin_family && x->sin_port == y->sin_port &&
           x->sin_addr.s_addr == y->sin_addr.s_addr;
}

static void xsend(int from, int to, const void *p, size_t n, const char *what)
{
    ssize_t w;
    do {
        if (from == A) /* connected */
            w = send(s[from], p, n, 0);
        else
            w = sendto(s[from], p, n, 0, (struct sockaddr *)&addr[to], sizeof addr[to]);
    } while (w < 0 && errno == EINTR);
    if (w != (ssize_t)n)
        wl_fail("%s: send %s->%s of %zu bytes returned %zd (%s)", what, sname[from], sname[to], n,
                w, w < 0 ? strerror(errno) : "short");
}

static int wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (int waited = 0; waited < timeout_ms; waited += 100)
        if (poll(&p, 1, 100) > 0)
            return 1;
    return 0;
}

/* receive one datagram on socket `to`: returns length, fills *from, *flags */
static size_t recv_dg(int to, void *buf, size_t cap, struct sockaddr_in *from, int *flags,
                      const char *what)
{
    for (;;) {
        WL_CHECK(wait_readable(s[to], 5000), "%s: no datagram on %s within 5 s", what, sname[to]);
        struct iovec iov = {.iov_base = buf, .iov_len = cap};
        memset(from, 0, sizeof *from);
        struct msghdr mh = {.msg_name = from, .msg_namelen = sizeof *from, .msg_iov = &iov,
                            .msg_iovlen = 1};
        ssize_t r = recvmsg(s[to], &mh, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        WL_CHECK(r >= 0, "%s: recvmsg on %s failed: %s", what, sname[to], strerror(errno));
        *flags = mh.msg_flags;
        return (size_t)r;
    }
}

static void expect_empty(int i, const char *what)
{
    char c;
    ssize_t r = recv(s[i], &c, 1, MSG_DONTWAIT | MSG_PEEK);
    WL_CHECK(r < 0 && errno == EAGAIN, "%s: %s expected no more datagrams, recv(MSG_PEEK) "
             "returned %zd (%s)", what, sname[i], r, r < 0 ? strerror(errno) : "a datagram");
}

static int getint(int fd, int lvl, int opt)
{
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, lvl, opt, &v, &l) < 0)
        return -1000 - errno;
    return v;
}

struct snap {
    int name_rc, peer_rc;
    struct sockaddr_in self, peer;
    int rcvbuf, sndbuf, bcast, ttl, fl;
};

static void take(int i, struct snap *sn)
{
    memset(sn, 0, sizeof *sn);
    socklen_t l = sizeof sn->self;
    sn->name_rc = getsockname(s[i], (struct sockaddr *)&sn->self, &l) < 0 ? -errno : 0;
    l = sizeof sn->peer;
    sn->peer_rc = getpeername(s[i], (struct sockaddr *)&sn->peer, &l) < 0 ? -errno : 0;
    sn->rcvbuf = getint(s[i], SOL_SOCKET, SO_RCVBUF);
    sn->sndbuf = getint(s[i], SOL_SOCKET, SO_SNDBUF);
    sn->bcast = getint(s[i], SOL_SOCKET, SO_BROADCAST);
    sn->ttl = getint(s[i], IPPROTO_IP, IP_TTL);
    sn->fl = fcntl(s[i], F_GETFL);
}

static void setint(int fd, int lvl, int opt, int v, const char *what)
{
    if (setsockopt(fd, lvl, opt, &v, sizeof v) < 0)
        wl_fail("setup: setsockopt %s: %s", what, strerror(errno));
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    static unsigned char buf[65536];
    char b1[64], b2[64];

    for (int i = 0; i < NS; i++) {
        s[i] = socket(AF_INET, SOCK_DGRAM, 0);
        if (s[i] < 0)
            wl_fail("setup: socket: %s", strerror(errno));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(s[i], (struct sockaddr *)&a, sizeof a) < 0)
            wl_fail("setup: bind 127.0.0.1:0: %s", strerror(errno));
        socklen_t l = sizeof addr[i];
        getsockname(s[i], (struct sockaddr *)&addr[i], &l);
    }
    setint(s[A], IPPROTO_IP, IP_TTL, 33, "IP_TTL");
    setint(s[A], SOL_SOCKET, SO_SNDBUF, 64 * 1024, "SO_SNDBUF");
    setint(s[B], SOL_SOCKET, SO_RCVBUF, 1024 * 1024, "SO_RCVBUF");
    setint(s[C], SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST");
    if (connect(s[A], (struct sockaddr *)&addr[B], sizeof addr[B]) < 0)
        wl_fail("setup: connect A->B: %s", strerror(errno));
    {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/ports", wl_ctl_dir());
        FILE *f = fopen(p, "w");
        if (!f)
            wl_fail("setup: fopen %s: %s", p, strerror(errno));
        for (int i = 0; i < NS; i++)
            fprintf(f, "%c %u\n", 'a' + i, (unsigned)ntohs(addr[i].sin_port));
        fclose(f);
    }
    for (int i = 0; i < NQ; i++) {
        wl_fill_pattern(buf, queued[i].len, SEED_BASE + (uint64_t)i);
        xsend(queued[i].from, queued[i].to, buf, queued[i].len, "setup");
    }
    wl_sleep_ms(20); /* loopback delivery is synchronous; be safe anyway */
    struct snap sn[NS];
    for (int i = 0; i < NS; i++)
        take(i, &sn[i]);
    WL_CHECK(sn[A].peer_rc == 0 && aeq(&sn[A].peer, &addr[B]), "setup: A not connected to B");
    WL_CHECK(sn[A].ttl == 33 && sn[C].bcast == 1, "setup: IP_TTL %d SO_BROADCAST %d", sn[A].ttl,
             sn[C].bcast);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    for (int i = 0; i < NS; i++) {
        struct snap n;
        take(i, &n);
        WL_CHECK(n.name_rc == sn[i].name_rc && aeq(&n.self, &sn[i].self),
                 "%s: getsockname expected %s, found %s (rc %d)", sname[i],
                 astr(&sn[i].self, b1, sizeof b1), astr(&n.self, b2, sizeof b2), n.name_rc);
        if (sn[i].peer_rc == 0)
            WL_CHECK(n.peer_rc == 0 && aeq(&n.peer, &sn[i].peer),
                     "%s: getpeername expected %s, found %s (%s)", sname[i],
                     astr(&sn[i].peer, b1, sizeof b1), astr(&n.peer, b2, sizeof b2),
                     n.peer_rc ? strerror(-n.peer_rc) : "ok");
        else
            WL_CHECK(n.peer_rc == sn[i].peer_rc,
                     "%s: getpeername expected error %s (not connected), found %s %s", sname[i],
                     strerror(-sn[i].peer_rc), n.peer_rc ? strerror(-n.peer_rc) : "connected to",
                     n.peer_rc ? "" : astr(&n.peer, b2, sizeof b2));
#define CMP(f, label)                                                                            \
    WL_CHECK(n.f == sn[i].f, "%s: %s expected %d (as at setup), found %d", sname[i], label,      \
             sn[i].f, n.f)
        CMP(rcvbuf, "SO_RCVBUF");
        CMP(sndbuf, "SO_SNDBUF");
        CMP(bcast, "SO_BROADCAST");
        CMP(ttl, "IP_TTL");
        CMP(fl, "F_GETFL");
#undef CMP
    }

    /* queued datagrams, per receiver in send order */
    for (int to = 0; to < NS; to++) {
        int k = 0;
        for (int i = 0; i < NQ; i++) {
            if (queued[i].to != to)
                continue;
            char what[96];
            snprintf(what, sizeof what, "queued datagram #%d on %s (%zu bytes from %s)", k,
                     sname[to], queued[i].len, sname[queued[i].from]);
            struct sockaddr_in from;
            int fl = 0;
            size_t n = recv_dg(to, buf, sizeof buf, &from, &fl, what);
            WL_CHECK(n == queued[i].len && !(fl & MSG_TRUNC),
                     "%s: found length %zu (msg_flags %#x) - boundaries or order changed", what, n,
                     fl);
            WL_CHECK(wl_check_pattern(buf, n, SEED_BASE + (uint64_t)i), "%s: content differs",
                     what);
            WL_CHECK(aeq(&from, &addr[queued[i].from]), "%s: source expected %s, found %s", what,
                     astr(&addr[queued[i].from], b1, sizeof b1), astr(&from, b2, sizeof b2));
            k++;
        }
        expect_empty(to, "after the queued datagrams");
    }

    /* new traffic */
    const struct dg fresh[] = {{A, B, 12}, {B, A, 13}, {C, B, 14}};
    for (int i = 0; i < 3; i++) {
        char msg[64], what[64];
        snprintf(what, sizeof what, "new datagram %s->%s", sname[fresh[i].from],
                 sname[fresh[i].to]);
        int ml = snprintf(msg, sizeof msg, "fresh %s", what);
        xsend(fresh[i].from, fresh[i].to, msg, (size_t)ml, what);
        struct sockaddr_in from;
        int fl = 0;
        size_t n = recv_dg(fresh[i].to, buf, sizeof buf, &from, &fl, what);
        WL_CHECK(n == (size_t)ml && memcmp(buf, msg, n) == 0 && aeq(&from, &addr[fresh[i].from]),
                 "%s: expected '%s' from %s, found %zu bytes '%.*s' from %s", what, msg,
                 astr(&addr[fresh[i].from], b1, sizeof b1), n, (int)(n > 64 ? 64 : n), buf,
                 astr(&from, b2, sizeof b2));
    }
    /* A is connected to B: a datagram from C must not reach it */
    {
        const char intr[] = "intruder from C", ok[] = "legit from B";
        xsend(C, A, intr, sizeof intr, "verify: C->A (must be dropped)");
        xsend(B, A, ok, sizeof ok, "verify: B->A");
        struct sockaddr_in from;
        int fl = 0;
        size_t n = recv_dg(A, buf, sizeof buf, &from, &fl, "connected A");
        WL_CHECK(n == sizeof ok && memcmp(buf, ok, n) == 0,
                 "A is connected to B and must only receive from it: expected '%s', found %zu "
                 "bytes '%.*s' from %s",
                 ok, n, (int)(n > 64 ? 64 : n), buf, astr(&from, b2, sizeof b2));
        wl_sleep_ms(20);
        expect_empty(A, "connected A after C's datagram");
    }
    wl_report(1, "ok");
}
