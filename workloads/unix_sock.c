/*
 * unix_sock.c - AF_UNIX sockets with queued data across checkpoint/restore.
 *
 * Kernel state tested (one process):
 *  - SOCK_STREAM socketpair st[0]/st[1]: 30 000 bytes queued st[0]->st[1]
 *    (3 writes), 1 500 bytes queued st[1]->st[0] (2 writes); SO_SNDBUF
 *    65536 on st[0], SO_RCVBUF 32768 on st[1], O_NONBLOCK on st[1];
 *  - SOCK_DGRAM socketpair dg[0]/dg[1]: 5 datagrams dg[0]->dg[1] of lengths
 *    1, 0, 333, 4096, 17 and 3 datagrams dg[1]->dg[0] of lengths 2000, 5, 64
 *    (boundaries must be kept, including the empty datagram); SO_PASSCRED
 *    on dg[1] (a new datagram must carry SCM_CREDENTIALS of this process;
 *    the credentials of the queued ones are not checked);
 *  - SOCK_SEQPACKET socketpair sq[0]/sq[1]: 4 records sq[0]->sq[1] of
 *    lengths 10, 1000, 3, 5000, 2 records sq[1]->sq[0] of lengths 7, 700;
 *  - a listening SOCK_STREAM socket bound to CTL_DIR/listen.sock (relative
 *    name "listen.sock" if the absolute path does not fit in sun_path),
 *    backlog 8, with 2 connections not yet accepted whose client ends c1, c2
 *    (they send their data at verify time; pending connections that already hold data
 *    are unix_listen_data.c's case),
 *    are held here and have already sent 109 / 3000 bytes; accept() must
 *    return c1's connection first, then c2's, with their data;
 *  - a SOCK_DGRAM socket bound to the abstract name "@stasis-ab-<pid>"
 *    with one queued 50-byte datagram from a peer bound to
 *    "@stasis-abpeer-<pid>" and connected to it (recvfrom must name the
 *    peer; the connected peer must refuse datagrams from anyone else);
 *  - a SOCK_STREAM socketpair sh[0]/sh[1] where sh[0] wrote 28 bytes and
 *    then shutdown(SHUT_WR): sh[1] reads the bytes then EOF (POLLRDHUP),
 *    sh[0] gets EPIPE on send, sh[1] -> sh[0] still works;
 *  - for every socket: getsockname/getpeername, SO_TYPE, SO_RCVBUF,
 *    SO_SNDBUF, SO_PASSCRED, F_GETFL, F_GETFD unchanged since setup;
 *  - afterwards everything still works: a new message each way on every
 *    pair/connection, a new client can connect to the listener path and a
 *    new unbound socket can send to the abstract name.
 * The names used are written to CTL_DIR/unix.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define ST_FWD_1 3000
#define ST_FWD_2 7000
#define ST_FWD_3 20000
#define ST_FWD (ST_FWD_1 + ST_FWD_2 + ST_FWD_3)
#define ST_BACK_1 1000
#define ST_BACK_2 500
#define ST_BACK (ST_BACK_1 + ST_BACK_2)
#define C1_LEN 109
#define C2_LEN 3000
#define AB_LEN 50
#define SH_MSG "final words before shutdown\n"

#define SEED_ST_FWD 11
#define SEED_ST_BACK 12
#define SEED_DG 20 /* + index */
#define SEED_SQ 40 /* + index */
#define SEED_C1 61
#define SEED_C2 62
#define SEED_AB 63

static const size_t dg_fwd_len[] = {1, 0, 333, 4096, 17};
static const size_t dg_back_len[] = {2000, 5, 64};
static const size_t sq_fwd_len[] = {10, 1000, 3, 5000};
static const size_t sq_back_len[] = {7, 700};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------- utils */

static void send_all(int fd, const void *p, size_t n, const char *what)
{
    const char *c = p;
    do {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            poll(&pf, 1, 100);
            continue;
        }
        if (w < 0)
            wl_fail("%s: send of %zu bytes failed: %s", what, n, strerror(errno));
        c += w;
        n -= (size_t)w;
    } while (n);
}

/* one datagram / record (n may be 0) */
static void send_msg(int fd, const void *p, size_t n, const char *what)
{
    ssize_t w;
    do
        w = send(fd, p, n, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0 || (size_t)w != n)
        wl_fail("%s: send of a %zu-byte message returned %zd (%s)", what, n, w,
                w < 0 ? strerror(errno) : "short");
}

/* wait until fd is readable; 1 if so, 0 on timeout */
static int wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        int r = poll(&p, 1, 100);
        if (r > 0)
            return 1;
    }
    return 0;
}

static int readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, 0);
    while (r < 0 && errno == EINTR);
    return r > 0 && (p.revents & POLLIN);
}

/* read exactly n bytes from a stream socket (waits up to 5 s in total) */
static void recv_exact(int fd, void *buf, size_t n, const char *what)
{
    size_t got = 0;
    while (got < n) {
        if (!wait_readable(fd, 5000))
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

/* receive one message; returns its length, *flags = msg_flags */
static size_t recv_one(int fd, void *buf, size_t cap, int *flags, const char *what)
{
    for (;;) {
        if (!wait_readable(fd, 5000))
            wl_fail("%s: expected a message, none arrived within 5 s", what);
        struct iovec iov = {.iov_base = buf, .iov_len = cap};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t r = recvmsg(fd, &mh, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r < 0)
            wl_fail("%s: recvmsg failed: %s", what, strerror(errno));
        *flags = mh.msg_flags;
        return (size_t)r;
    }
}

static void expect_msg(int fd, size_t len, uint64_t seed, const char *what, int idx)
{
    static unsigned char buf[16384];
    int fl = 0;
    char w[160];
    snprintf(w, sizeof w, "%s message #%d", what, idx);
    size_t n = recv_one(fd, buf, sizeof buf, &fl, w);
    WL_CHECK(n == len && !(fl & MSG_TRUNC),
             "%s message #%d: expected length %zu, found length %zu (msg_flags %#x)", what, idx,
             len, n, fl);
    WL_CHECK(wl_check_pattern(buf, n, seed), "%s message #%d (%zu bytes): content differs", what,
             idx, n);
}

static void expect_nothing(int fd, const char *what)
{
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    WL_CHECK(r < 0 && errno == EAGAIN, "%s: expected no more queued data, recv(MSG_PEEK) returned "
             "%zd (%s)", what, r, r < 0 ? strerror(errno) : "data present");
}

/* exchange a fresh stream message in one direction */
static void stream_ping(int from, int to, const char *what)
{
    char msg[64], buf[64];
    int n = snprintf(msg, sizeof msg, "ping %s %d", what, from);
    send_all(from, msg, (size_t)n, what);
    recv_exact(to, buf, (size_t)n, what);
    WL_CHECK(memcmp(buf, msg, (size_t)n) == 0, "%s: new message expected '%s', found '%.*s'", what,
             msg, n, buf);
}

static void msg_ping(int from, int to, const char *what)
{
    char msg[64], buf[128];
    int n = snprintf(msg, sizeof msg, "new message %s %d", what, from), fl = 0;
    send_msg(from, msg, (size_t)n, what);
    size_t r = recv_one(to, buf, sizeof buf, &fl, what);
    WL_CHECK(r == (size_t)n && memcmp(buf, msg, (size_t)n) == 0,
             "%s: new message expected '%s' (%d bytes), found %zu bytes '%.*s'", what, msg, n, r,
             (int)r, buf);
}

/* ---------------------------------------------------------- addresses */

struct addr {
    int rc, err;
    socklen_t len;
    struct sockaddr_un a;
};

static void addr_str(const struct addr *a, char *buf, size_t n)
{
    if (a->rc < 0) {
        snprintf(buf, n, "<error %s>", strerror(a->err));
        return;
    }
    if (a->len <= offsetof(struct sockaddr_un, sun_path)) {
        snprintf(buf, n, "<unnamed, len %u, family %d>", (unsigned)a->len, a->a.sun_family);
        return;
    }
    size_t pl = a->len - offsetof(struct sockaddr_un, sun_path);
    if (a->a.sun_path[0] == 0)
        snprintf(buf, n, "@%.*s (len %u)", (int)pl - 1, a->a.sun_path + 1, (unsigned)a->len);
    else
        snprintf(buf, n, "%.*s (len %u)", (int)pl, a->a.sun_path, (unsigned)a->len);
}

static int addr_eq(const struct addr *x, const struct addr *y)
{
    if (x->rc != y->rc)
        return 0;
    if (x->rc < 0)
        return x->err == y->err;
    return x->len == y->len && memcmp(&x->a, &y->a, x->len) == 0;
}

static void get_addr(int fd, int peer, struct addr *a)
{
    memset(a, 0, sizeof *a);
    a->len = sizeof a->a;
    a->rc = peer ? getpeername(fd, (struct sockaddr *)&a->a, &a->len)
                 : getsockname(fd, (struct sockaddr *)&a->a, &a->len);
    a->err = a->rc < 0 ? errno : 0;
}

static void make_addr(struct addr *a, const char *name, int abstract)
{
    memset(a, 0, sizeof *a);
    a->a.sun_family = AF_UNIX;
    size_t l = strlen(name);
    if (abstract) {
        memcpy(a->a.sun_path + 1, name, l);
        a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + l);
    } else {
        memcpy(a->a.sun_path, name, l + 1);
        a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + l + 1);
    }
}

static void check_addr_is(const struct addr *got, const struct addr *want, const char *what)
{
    char b1[200], b2[200];
    addr_str(want, b1, sizeof b1);
    addr_str(got, b2, sizeof b2);
    WL_CHECK(addr_eq(got, want), "%s: expected %s, found %s", what, b1, b2);
}

/* --------------------------------------------------------- fd snapshots */

#define MAXS 32
struct sockstate {
    int fd;
    const char *name;
    struct addr self, peer;
    int type, rcvbuf, sndbuf, passcred, fl, fdfl;
};
static struct sockstate snaps[MAXS];
static int nsnaps;

static int gopt(int fd, int opt)
{
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, opt, &v, &l) < 0)
        return -1000 - errno;
    return v;
}

static void take(int fd, const char *name, struct sockstate *s)
{
    s->fd = fd;
    s->name = name;
    get_addr(fd, 0, &s->self);
    get_addr(fd, 1, &s->peer);
    s->type = gopt(fd, SO_TYPE);
    s->rcvbuf = gopt(fd, SO_RCVBUF);
    s->sndbuf = gopt(fd, SO_SNDBUF);
    s->passcred = gopt(fd, SO_PASSCRED);
    s->fl = fcntl(fd, F_GETFL);
    s->fdfl = fcntl(fd, F_GETFD);
}

static void snap(int fd, const char *name)
{
    if (nsnaps >= MAXS)
        wl_fail("internal: too many snapshots");
    take(fd, name, &snaps[nsnaps++]);
}

static void check_snaps(void)
{
    for (int i = 0; i < nsnaps; i++) {
        struct sockstate *w = &snaps[i], n;
        take(w->fd, w->name, &n);
        char what[128];
        snprintf(what, sizeof what, "%s (fd %d): getsockname", w->name, w->fd);
        check_addr_is(&n.self, &w->self, what);
        snprintf(what, sizeof what, "%s (fd %d): getpeername", w->name, w->fd);
        check_addr_is(&n.peer, &w->peer, what);
#define CMP(field, label)                                                                        \
    WL_CHECK(n.field == w->field, "%s (fd %d): %s expected %d (as at setup), found %d", w->name, \
             w->fd, label, w->field, n.field)
        CMP(type, "SO_TYPE");
        CMP(rcvbuf, "SO_RCVBUF");
        CMP(sndbuf, "SO_SNDBUF");
        CMP(passcred, "SO_PASSCRED");
        CMP(fl, "F_GETFL");
        CMP(fdfl, "F_GETFD");
#undef CMP
    }
}

static int xsocket(int type)
{
    int fd = socket(AF_UNIX, type, 0);
    if (fd < 0)
        wl_fail("setup: socket: %s", strerror(errno));
    return fd;
}

static void xpair(int type, int sv[2], const char *what)
{
    if (socketpair(AF_UNIX, type, 0, sv) < 0)
        wl_fail("setup: socketpair %s: %s", what, strerror(errno));
}

static void setopt(int fd, int opt, int v, const char *what)
{
    if (setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v) < 0)
        wl_fail("setup: setsockopt %s: %s", what, strerror(errno));
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    const char *dir = wl_ctl_dir();
    static unsigned char buf[65536];

    /* 1. stream socketpair with data both ways */
    int st[2];
    xpair(SOCK_STREAM, st, "stream");
    setopt(st[0], SO_SNDBUF, 65536, "SO_SNDBUF st[0]");
    setopt(st[1], SO_RCVBUF, 32768, "SO_RCVBUF st[1]");
    if (fcntl(st[1], F_SETFL, fcntl(st[1], F_GETFL) | O_NONBLOCK) < 0)
        wl_fail("setup: O_NONBLOCK: %s", strerror(errno));
    wl_fill_pattern(buf, ST_FWD, SEED_ST_FWD);
    send_all(st[0], buf, ST_FWD_1, "setup stream st[0]->st[1]");
    send_all(st[0], buf + ST_FWD_1, ST_FWD_2, "setup stream st[0]->st[1]");
    send_all(st[0], buf + ST_FWD_1 + ST_FWD_2, ST_FWD_3, "setup stream st[0]->st[1]");
    wl_fill_pattern(buf, ST_BACK, SEED_ST_BACK);
    send_all(st[1], buf, ST_BACK_1, "setup stream st[1]->st[0]");
    send_all(st[1], buf + ST_BACK_1, ST_BACK_2, "setup stream st[1]->st[0]");

    /* 2. datagram socketpair */
    int dg[2];
    xpair(SOCK_DGRAM, dg, "dgram");
    setopt(dg[1], SO_PASSCRED, 1, "SO_PASSCRED dg[1]");
    for (size_t i = 0; i < NELEM(dg_fwd_len); i++) {
        wl_fill_pattern(buf, dg_fwd_len[i], SEED_DG + i);
        send_msg(dg[0], buf, dg_fwd_len[i], "setup dgram dg[0]->dg[1]");
    }
    for (size_t i = 0; i < NELEM(dg_back_len); i++) {
        wl_fill_pattern(buf, dg_back_len[i], SEED_DG + 10 + i);
        send_msg(dg[1], buf, dg_back_len[i], "setup dgram dg[1]->dg[0]");
    }

    /* 3. seqpacket socketpair */
    int sq[2];
    xpair(SOCK_SEQPACKET, sq, "seqpacket");
    for (size_t i = 0; i < NELEM(sq_fwd_len); i++) {
        wl_fill_pattern(buf, sq_fwd_len[i], SEED_SQ + i);
        send_msg(sq[0], buf, sq_fwd_len[i], "setup seqpacket sq[0]->sq[1]");
    }
    for (size_t i = 0; i < NELEM(sq_back_len); i++) {
        wl_fill_pattern(buf, sq_back_len[i], SEED_SQ + 10 + i);
        send_msg(sq[1], buf, sq_back_len[i], "setup seqpacket sq[1]->sq[0]");
    }

    /* 4. listener with 2 pending connections */
    char lpath[PATH_MAX + 32];
    snprintf(lpath, sizeof lpath, "%s/listen.sock", dir);
    if (strlen(lpath) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        snprintf(lpath, sizeof lpath, "listen.sock"); /* cwd is CTL_DIR */
    struct addr laddr;
    make_addr(&laddr, lpath, 0);
    unlink(lpath);
    int lsn = xsocket(SOCK_STREAM);
    if (bind(lsn, (struct sockaddr *)&laddr.a, laddr.len) < 0)
        wl_fail("setup: bind %s: %s", lpath, strerror(errno));
    if (listen(lsn, 8) < 0)
        wl_fail("setup: listen: %s", strerror(errno));
    int c1 = xsocket(SOCK_STREAM), c2 = xsocket(SOCK_STREAM);
    if (connect(c1, (struct sockaddr *)&laddr.a, laddr.len) < 0 ||
        connect(c2, (struct sockaddr *)&laddr.a, laddr.len) < 0)
        wl_fail("setup: connect to %s: %s", lpath, strerror(errno));
    /* The clients send their data only at verify time (connections queued with data
     * before the checkpoint are tested by unix_listen_data.c). */

    /* 5. abstract datagram socket + connected bound peer */
    char abname[64], prname[64];
    snprintf(abname, sizeof abname, "stasis-ab-%d", (int)getpid());
    snprintf(prname, sizeof prname, "stasis-abpeer-%d", (int)getpid());
    struct addr abaddr, praddr;
    make_addr(&abaddr, abname, 1);
    make_addr(&praddr, prname, 1);
    int ab = xsocket(SOCK_DGRAM), pr = xsocket(SOCK_DGRAM);
    if (bind(ab, (struct sockaddr *)&abaddr.a, abaddr.len) < 0 ||
        bind(pr, (struct sockaddr *)&praddr.a, praddr.len) < 0)
        wl_fail("setup: bind abstract: %s", strerror(errno));
    if (connect(pr, (struct sockaddr *)&abaddr.a, abaddr.len) < 0)
        wl_fail("setup: connect to @%s: %s", abname, strerror(errno));
    wl_fill_pattern(buf, AB_LEN, SEED_AB);
    send_msg(pr, buf, AB_LEN, "setup abstract peer->ab");

    /* 6. half-closed stream pair */
    int sh[2];
    xpair(SOCK_STREAM, sh, "shutdown");
    send_all(sh[0], SH_MSG, strlen(SH_MSG), "setup sh[0]");
    if (shutdown(sh[0], SHUT_WR) < 0)
        wl_fail("setup: shutdown: %s", strerror(errno));

    {
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/unix", dir);
        FILE *f = fopen(p, "w");
        if (!f)
            wl_fail("setup: fopen %s: %s", p, strerror(errno));
        fprintf(f, "listen %s\nabstract @%s\npeer @%s\n", lpath, abname, prname);
        fclose(f);
    }

    snap(st[0], "stream st[0]");
    snap(st[1], "stream st[1]");
    snap(dg[0], "dgram dg[0]");
    snap(dg[1], "dgram dg[1]");
    snap(sq[0], "seqpacket sq[0]");
    snap(sq[1], "seqpacket sq[1]");
    snap(lsn, "listener");
    snap(c1, "client c1");
    snap(c2, "client c2");
    snap(ab, "abstract ab");
    snap(pr, "abstract peer");
    snap(sh[0], "shut-down sh[0]");
    snap(sh[1], "shut-down sh[1]");

    /* Setup sanity (so a broken environment is not blamed on a restore). */
    WL_CHECK(snaps[0].sndbuf == 2 * 65536, "setup: SO_SNDBUF st[0] expected %d, found %d",
             2 * 65536, snaps[0].sndbuf);
    WL_CHECK(snaps[1].rcvbuf == 2 * 32768, "setup: SO_RCVBUF st[1] expected %d, found %d",
             2 * 32768, snaps[1].rcvbuf);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    check_snaps();
    WL_CHECK(snaps[1].fl & O_NONBLOCK, "stream st[1]: O_NONBLOCK expected, F_GETFL %#o",
             snaps[1].fl);
    WL_CHECK(!(fcntl(st[0], F_GETFL) & O_NONBLOCK), "stream st[0]: O_NONBLOCK not expected");
    WL_CHECK(gopt(dg[1], SO_PASSCRED) == 1 && gopt(dg[0], SO_PASSCRED) == 0,
             "SO_PASSCRED expected 1 on dg[1] and 0 on dg[0], found %d / %d",
             gopt(dg[1], SO_PASSCRED), gopt(dg[0], SO_PASSCRED));
    WL_CHECK(gopt(lsn, SO_ACCEPTCONN) == 1, "listener: SO_ACCEPTCONN expected 1, found %d",
             gopt(lsn, SO_ACCEPTCONN));
    WL_CHECK(gopt(st[0], SO_ACCEPTCONN) == 0, "st[0]: SO_ACCEPTCONN expected 0, found %d",
             gopt(st[0], SO_ACCEPTCONN));
    {
        struct addr want, got;
        get_addr(lsn, 0, &got);
        check_addr_is(&got, &laddr, "listener: getsockname (bound path)");
        get_addr(c1, 1, &got);
        check_addr_is(&got, &laddr, "client c1: getpeername");
        get_addr(c2, 1, &got);
        check_addr_is(&got, &laddr, "client c2: getpeername");
        get_addr(ab, 0, &got);
        check_addr_is(&got, &abaddr, "abstract ab: getsockname");
        get_addr(pr, 0, &got);
        check_addr_is(&got, &praddr, "abstract peer: getsockname");
        get_addr(pr, 1, &got);
        check_addr_is(&got, &abaddr, "abstract peer: getpeername");
        memset(&want, 0, sizeof want);
        want.rc = -1;
        want.err = ENOTCONN;
        get_addr(ab, 1, &got);
        check_addr_is(&got, &want, "abstract ab (not connected): getpeername");
        struct stat sb;
        WL_CHECK(stat(lpath, &sb) == 0 && S_ISSOCK(sb.st_mode),
                 "listener path %s: expected a socket inode, stat: %s mode %#o", lpath,
                 strerror(errno), (unsigned)sb.st_mode);
    }

    /* 1. stream */
    {
        static unsigned char got[ST_FWD];
        recv_exact(st[1], got, ST_FWD, "stream st[0]->st[1] queued data");
        WL_CHECK(wl_check_pattern(got, ST_FWD, SEED_ST_FWD),
                 "stream st[0]->st[1]: the %d queued bytes differ from what was sent", ST_FWD);
        expect_nothing(st[1], "stream st[1] after the queued data");
        char c;
        ssize_t r = recv(st[1], &c, 1, 0); /* O_NONBLOCK: must not block */
        WL_CHECK(r < 0 && errno == EAGAIN,
                 "stream st[1] (O_NONBLOCK, empty): recv expected EAGAIN, found %zd (%s)", r,
                 r < 0 ? strerror(errno) : "data");
        recv_exact(st[0], got, ST_BACK, "stream st[1]->st[0] queued data");
        WL_CHECK(wl_check_pattern(got, ST_BACK, SEED_ST_BACK),
                 "stream st[1]->st[0]: the %d queued bytes differ from what was sent", ST_BACK);
        WL_CHECK(!readable_now(st[0]), "stream st[0]: readable after draining the queued data");
        stream_ping(st[0], st[1], "stream st[0]->st[1]");
        stream_ping(st[1], st[0], "stream st[1]->st[0]");
    }

    /* 2. datagrams */
    for (size_t i = 0; i < NELEM(dg_fwd_len); i++)
        expect_msg(dg[1], dg_fwd_len[i], SEED_DG + i, "dgram dg[0]->dg[1]", (int)i);
    expect_nothing(dg[1], "dgram dg[1] after the queued datagrams");
    for (size_t i = 0; i < NELEM(dg_back_len); i++)
        expect_msg(dg[0], dg_back_len[i], SEED_DG + 10 + i, "dgram dg[1]->dg[0]", (int)i);
    expect_nothing(dg[0], "dgram dg[0] after the queued datagrams");
    msg_ping(dg[1], dg[0], "dgram dg[1]->dg[0]");
    {   /* new datagram to dg[1] must carry SCM_CREDENTIALS (SO_PASSCRED) */
        const char m[] = "credentials please";
        send_msg(dg[0], m, sizeof m, "dgram dg[0]->dg[1]");
        WL_CHECK(wait_readable(dg[1], 5000), "dgram dg[0]->dg[1]: new datagram did not arrive");
        char data[64];
        union {
            char b[CMSG_SPACE(sizeof(struct ucred))];
            struct cmsghdr align;
        } cb;
        struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                            .msg_controllen = sizeof cb.b};
        ssize_t r;
        do
            r = recvmsg(dg[1], &mh, MSG_DONTWAIT);
        while (r < 0 && errno == EINTR);
        WL_CHECK(r == (ssize_t)sizeof m && memcmp(data, m, sizeof m) == 0,
                 "dgram dg[0]->dg[1]: new datagram expected '%s', recvmsg returned %zd (%s)", m, r,
                 r < 0 ? strerror(errno) : "other data");
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        WL_CHECK(cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS,
                 "dgram dg[1] (SO_PASSCRED): expected an SCM_CREDENTIALS message, found %s",
                 cm ? "another control message" : "none");
        struct ucred uc;
        memcpy(&uc, CMSG_DATA(cm), sizeof uc);
        WL_CHECK(uc.pid == getpid() && uc.uid == getuid() && uc.gid == getgid(),
                 "dgram dg[1]: SCM_CREDENTIALS expected pid %d uid %d gid %d, found %d %d %d",
                 (int)getpid(), (int)getuid(), (int)getgid(), (int)uc.pid, (int)uc.uid,
                 (int)uc.gid);
    }

    /* 3. seqpacket */
    for (size_t i = 0; i < NELEM(sq_fwd_len); i++)
        expect_msg(sq[1], sq_fwd_len[i], SEED_SQ + i, "seqpacket sq[0]->sq[1]", (int)i);
    expect_nothing(sq[1], "seqpacket sq[1] after the queued records");
    for (size_t i = 0; i < NELEM(sq_back_len); i++)
        expect_msg(sq[0], sq_back_len[i], SEED_SQ + 10 + i, "seqpacket sq[1]->sq[0]", (int)i);
    expect_nothing(sq[0], "seqpacket sq[0] after the queued records");
    msg_ping(sq[0], sq[1], "seqpacket sq[0]->sq[1]");
    msg_ping(sq[1], sq[0], "seqpacket sq[1]->sq[0]");

    /* 4. listener: pending connections in order, with their data */
    {
        static unsigned char cbuf[C2_LEN > C1_LEN ? C2_LEN : C1_LEN];
        wl_fill_pattern(cbuf, C1_LEN, SEED_C1);
        send_all(c1, cbuf, C1_LEN, "verify: client c1 sends into its pending connection");
        wl_fill_pattern(cbuf, C2_LEN, SEED_C2);
        send_all(c2, cbuf, C2_LEN, "verify: client c2 sends into its pending connection");
        WL_CHECK(wait_readable(lsn, 5000), "listener: no pending connection (expected 2)");
        int conn[2];
        const int cl[2] = {c1, c2};
        const size_t len[2] = {C1_LEN, C2_LEN};
        const uint64_t seed[2] = {SEED_C1, SEED_C2};
        for (int i = 0; i < 2; i++) {
            struct addr peer;
            memset(&peer, 0, sizeof peer);
            peer.len = sizeof peer.a;
            do
                conn[i] = accept4(lsn, (struct sockaddr *)&peer.a, &peer.len, SOCK_NONBLOCK);
            while (conn[i] < 0 && errno == EINTR);
            WL_CHECK(conn[i] >= 0, "listener: accept #%d (of 2 pending) failed: %s", i + 1,
                     strerror(errno));
            WL_CHECK(peer.len == sizeof(sa_family_t),
                     "accepted #%d: peer (unbound client) expected unnamed, found len %u", i + 1,
                     (unsigned)peer.len);
            struct addr self;
            get_addr(conn[i], 0, &self);
            check_addr_is(&self, &laddr, "accepted connection: getsockname");
            static unsigned char got[C2_LEN];
            recv_exact(conn[i], got, len[i], "accepted connection: client data");
            if (!wl_check_pattern(got, len[i], seed[i])) {
                int other = wl_check_pattern(got, len[1 - i] < len[i] ? len[1 - i] : len[i],
                                             seed[1 - i]);
                wl_fail("accepted connection #%d: expected the %zu bytes of client c%d%s", i + 1,
                        len[i], i + 1,
                        other ? ", found the other client's data (accept order changed)"
                              : ", found different data");
            }
            expect_nothing(conn[i], "accepted connection after the client's data");
            stream_ping(conn[i], cl[i], "accepted -> client");
            stream_ping(cl[i], conn[i], "client -> accepted");
        }
        WL_CHECK(!readable_now(lsn), "listener: still readable after accepting the 2 pending "
                 "connections (a third one appeared)");
        /* a new client connects via the path */
        int c3 = xsocket(SOCK_STREAM);
        WL_CHECK(connect(c3, (struct sockaddr *)&laddr.a, laddr.len) == 0,
                 "new client: connect to %s failed: %s", lpath, strerror(errno));
        WL_CHECK(wait_readable(lsn, 5000), "listener: new connection not reported by poll");
        int a3;
        do
            a3 = accept(lsn, NULL, NULL);
        while (a3 < 0 && errno == EINTR);
        WL_CHECK(a3 >= 0, "listener: accept of the new connection failed: %s", strerror(errno));
        stream_ping(c3, a3, "new client -> accepted");
        stream_ping(a3, c3, "accepted -> new client");
        close(a3);
        close(c3);
    }

    /* 5. abstract */
    {
        static unsigned char got[256];
        struct addr from;
        memset(&from, 0, sizeof from);
        from.len = sizeof from.a;
        WL_CHECK(wait_readable(ab, 5000), "abstract ab: queued datagram missing");
        ssize_t r;
        do
            r = recvfrom(ab, got, sizeof got, MSG_DONTWAIT, (struct sockaddr *)&from.a, &from.len);
        while (r < 0 && errno == EINTR);
        WL_CHECK(r == AB_LEN && wl_check_pattern(got, AB_LEN, SEED_AB),
                 "abstract ab: queued datagram expected %d pattern bytes, recvfrom returned %zd%s",
                 AB_LEN, r, r == AB_LEN ? " with different content" : "");
        check_addr_is(&from, &praddr, "abstract ab: sender of the queued datagram");
        expect_nothing(ab, "abstract ab after the queued datagram");
        msg_ping(pr, ab, "abstract peer->ab");
        /* ab -> peer via sendto */
        const char m[] = "reply to peer";
        WL_CHECK(sendto(ab, m, sizeof m, 0, (struct sockaddr *)&praddr.a, praddr.len) ==
                     (ssize_t)sizeof m,
                 "abstract ab: sendto @%s failed: %s", prname, strerror(errno));
        int fl = 0;
        size_t n = recv_one(pr, got, sizeof got, &fl, "abstract peer: reply");
        WL_CHECK(n == sizeof m && memcmp(got, m, n) == 0,
                 "abstract peer: expected '%s', found %zu bytes", m, n);
        /* a new unbound socket can reach @ab by name, but not the connected peer */
        int x = xsocket(SOCK_DGRAM);
        const char m2[] = "stranger";
        WL_CHECK(sendto(x, m2, sizeof m2, 0, (struct sockaddr *)&abaddr.a, abaddr.len) ==
                     (ssize_t)sizeof m2,
                 "new socket: sendto @%s failed: %s", abname, strerror(errno));
        n = recv_one(ab, got, sizeof got, &fl, "abstract ab: from new socket");
        WL_CHECK(n == sizeof m2 && memcmp(got, m2, n) == 0,
                 "abstract ab: expected '%s' from a new socket, found %zu bytes", m2, n);
        ssize_t w =
            sendto(x, m2, sizeof m2, MSG_DONTWAIT, (struct sockaddr *)&praddr.a, praddr.len);
        WL_CHECK(w < 0 && errno == EPERM,
                 "abstract peer is connected to @%s: a datagram from another socket must be "
                 "refused with EPERM, sendto returned %zd (%s)",
                 abname, w, w < 0 ? strerror(errno) : "accepted");
        close(x);
    }

    /* 6. half-closed */
    {
        struct pollfd p = {.fd = sh[1], .events = POLLIN | POLLRDHUP};
        int r;
        do
            r = poll(&p, 1, 1000);
        while (r < 0 && errno == EINTR);
        WL_CHECK(r == 1 && (p.revents & POLLIN) && (p.revents & POLLRDHUP),
                 "sh[1] (peer shut down for writing): poll expected POLLIN|POLLRDHUP, found %#x",
                 (unsigned)p.revents);
        size_t l = strlen(SH_MSG);
        char got[64];
        recv_exact(sh[1], got, l, "sh[0]->sh[1] data before shutdown");
        WL_CHECK(memcmp(got, SH_MSG, l) == 0, "sh[1]: expected '%s', found '%.*s'", SH_MSG, (int)l,
                 got);
        ssize_t n;
        do
            n = recv(sh[1], got, sizeof got, MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        WL_CHECK(n == 0, "sh[1]: after the data expected EOF (0), recv returned %zd (%s)", n,
                 n < 0 ? strerror(errno) : "data");
        n = send(sh[0], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        WL_CHECK(n < 0 && errno == EPIPE,
                 "sh[0] (shut down for writing): send expected EPIPE, found %zd (%s)", n,
                 n < 0 ? strerror(errno) : "sent");
        WL_CHECK(!readable_now(sh[0]), "sh[0]: unexpectedly readable before sh[1] sends");
        stream_ping(sh[1], sh[0], "sh[1]->sh[0] (other direction still open)");
    }

    wl_report(1, "ok");
}
