/*
 * unix_listen_data.c - a listener whose pending (not yet accepted) connections hold data.
 *
 * Kernel state tested (one process): a SOCK_STREAM listener bound to CTL_DIR/hu-ld.sock
 * (backlog 8) with three pending connections, in order:
 *   c1 sent 5000 pattern bytes, c2 sent nothing, c3 sent "third" then 300 pattern bytes and
 *   shut down its sending side (SHUT_WR); c1 is non-blocking;
 * and a SOCK_SEQPACKET listener on the abstract name @hu-ldq-<pid> with one pending
 * connection whose client sent records of 3 and 1000 bytes; and a SOCK_STREAM listener bound
 * to CTL_DIR/hu-ldg.sock, whose file was then deleted, with one pending connection whose client
 * sent "ghost".
 * Verify: accept returns c1's connection first (its 5000 bytes), then c2's (nothing queued:
 * a byte written by c2 now arrives), then c3's ("third" + 300 bytes, then EOF); each client
 * still talks to its accepted socket both ways; c1 is still O_NONBLOCK; the seqpacket
 * connection keeps its record boundaries; nothing else is pending.
 * With the argument "epoll", c1 is also registered in an epoll instance (data 1): after
 * restore, a byte the server sends makes it ready. With "inflight", a copy of c1 is also in
 * flight in a socketpair's queue: the engine refuses that case (before accepting anything), and
 * the workload must verify unchanged.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define C1_LEN 5000
#define C3_LEN 300

static struct sockaddr_un la, qa;
static socklen_t la_len, qa_len;

static int client(int type, const struct sockaddr_un *a, socklen_t len)
{
    int c = socket(AF_UNIX, type, 0);
    if (c < 0 || connect(c, (const struct sockaddr *)a, len) < 0)
        wl_fail("setup: connect: %s", strerror(errno));
    return c;
}

static void send_n(int s, const void *p, size_t n, const char *what)
{
    if (send(s, p, n, MSG_NOSIGNAL) != (ssize_t)n)
        wl_fail("%s: send: %s", what, strerror(errno));
}

static int accept_one(int l, const char *what)
{
    struct pollfd p = {.fd = l, .events = POLLIN};
    WL_CHECK(poll(&p, 1, 3000) == 1, "%s: no pending connection to accept", what);
    int a = accept4(l, NULL, NULL, SOCK_NONBLOCK);
    WL_CHECK(a >= 0, "%s: accept: %s", what, strerror(errno));
    return a;
}

static ssize_t read_n(int s, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        if (poll(&p, 1, 2000) <= 0)
            break;
        ssize_t r = recv(s, (char *)buf + got, n - got, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static void both_ways(int a, int c, const char *what)
{
    char b[8];
    WL_CHECK(send(a, "srv", 3, 0) == 3, "%s: server send: %s", what, strerror(errno));
    WL_CHECK(read_n(c, b, 3) == 3 && memcmp(b, "srv", 3) == 0, "%s: client did not get 'srv'",
             what);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    static unsigned char buf[8192], want[8192];
    memset(&la, 0, sizeof la);
    la.sun_family = AF_UNIX;
    snprintf(la.sun_path, sizeof la.sun_path, "%s/hu-ld.sock", wl_ctl_dir());
    la_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(la.sun_path) + 1);
    memset(&qa, 0, sizeof qa);
    qa.sun_family = AF_UNIX;
    int n = snprintf(qa.sun_path + 1, sizeof qa.sun_path - 1, "hu-ldq-%d", (int)getpid());
    qa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);

    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&la, la_len) < 0 || listen(l, 8) < 0)
        wl_fail("setup: listener: %s", strerror(errno));
    int lq = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (lq < 0 || bind(lq, (struct sockaddr *)&qa, qa_len) < 0 || listen(lq, 8) < 0)
        wl_fail("setup: seqpacket listener: %s", strerror(errno));
    int c1 = client(SOCK_STREAM, &la, la_len);
    wl_fill_pattern(buf, C1_LEN, 41);
    send_n(c1, buf, C1_LEN, "c1");
    fcntl(c1, F_SETFL, O_NONBLOCK);
    int ep = -1;
    if (argc > 2 && strcmp(argv[2], "epoll") == 0) {
        ep = epoll_create1(0);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1};
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, c1, &ev) < 0)
            wl_fail("setup: epoll: %s", strerror(errno));
    }
    if (argc > 2 && strcmp(argv[2], "inflight") == 0) {
        int sp[2];
        union {
            char b[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } cb;
        memset(&cb, 0, sizeof cb);
        struct iovec iov = {.iov_base = "c", .iov_len = 1};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                            .msg_controllen = sizeof cb.b};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &c1, sizeof(int));
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0 || sendmsg(sp[0], &mh, 0) != 1)
            wl_fail("setup: c1 in flight: %s", strerror(errno));
    }
    int c2 = client(SOCK_STREAM, &la, la_len);
    int c3 = client(SOCK_STREAM, &la, la_len);
    send_n(c3, "third", 5, "c3");
    wl_fill_pattern(buf, C3_LEN, 43);
    send_n(c3, buf, C3_LEN, "c3 pattern");
    shutdown(c3, SHUT_WR);
    int cq = client(SOCK_SEQPACKET, &qa, qa_len);
    send_n(cq, "abc", 3, "cq 3");
    memset(buf, 'z', 1000);
    send_n(cq, buf, 1000, "cq 1000");

    struct sockaddr_un ga;
    memset(&ga, 0, sizeof ga);
    ga.sun_family = AF_UNIX;
    snprintf(ga.sun_path, sizeof ga.sun_path, "%s/hu-ldg.sock", wl_ctl_dir());
    socklen_t ga_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(ga.sun_path) + 1);
    int lg = socket(AF_UNIX, SOCK_STREAM, 0);
    if (lg < 0 || bind(lg, (struct sockaddr *)&ga, ga_len) < 0 || listen(lg, 4) < 0)
        wl_fail("setup: ghost listener: %s", strerror(errno));
    int cg = client(SOCK_STREAM, &ga, ga_len);
    send_n(cg, "ghost", 5, "cg");
    unlink(ga.sun_path);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    int a1 = accept_one(l, "first connection");
    ssize_t r = read_n(a1, buf, sizeof buf);
    wl_fill_pattern(want, C1_LEN, 41);
    WL_CHECK(r == C1_LEN && memcmp(buf, want, C1_LEN) == 0,
             "first accepted connection: expected c1's %d bytes, read %zd", C1_LEN, r);
    WL_CHECK(fcntl(c1, F_GETFL) & O_NONBLOCK, "c1 lost O_NONBLOCK");
    if (ep >= 0) {
        struct epoll_event ev;
        WL_CHECK(epoll_wait(ep, &ev, 1, 0) == 0, "epoll: c1 ready before the server wrote");
        WL_CHECK(send(a1, "E", 1, 0) == 1, "server send E: %s", strerror(errno));
        WL_CHECK(epoll_wait(ep, &ev, 1, 2000) == 1 && ev.data.u64 == 1,
                 "epoll: c1 (data 1) not reported ready after the server wrote to it");
        char e;
        WL_CHECK(recv(c1, &e, 1, MSG_DONTWAIT) == 1 && e == 'E', "c1: did not read 'E'");
    }
    both_ways(a1, c1, "c1");
    int a2 = accept_one(l, "second connection");
    r = recv(a2, buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r < 0 && errno == EAGAIN, "second accepted connection: expected nothing queued, "
             "got %zd", r);
    WL_CHECK(send(c2, "2", 1, 0) == 1, "c2 send: %s", strerror(errno));
    WL_CHECK(read_n(a2, buf, 1) == 1 && buf[0] == '2',
             "second accepted connection is not c2's (a byte c2 sent did not arrive)");
    both_ways(a2, c2, "c2");
    int a3 = accept_one(l, "third connection");
    r = read_n(a3, buf, sizeof buf);
    wl_fill_pattern(want, C3_LEN, 43);
    WL_CHECK(r == 5 + C3_LEN && memcmp(buf, "third", 5) == 0 && memcmp(buf + 5, want, C3_LEN) == 0,
             "third accepted connection: expected 'third' + %d bytes, read %zd", C3_LEN, r);
    r = recv(a3, buf, 1, MSG_DONTWAIT);
    WL_CHECK(r == 0, "third accepted connection: expected EOF (c3 shut down its side), got %zd", r);
    both_ways(a3, c3, "c3");
    r = send(c3, "x", 1, MSG_NOSIGNAL);
    WL_CHECK(r < 0 && errno == EPIPE, "c3: send after SHUT_WR expected EPIPE, got %zd", r);
    struct pollfd p = {.fd = l, .events = POLLIN};
    WL_CHECK(poll(&p, 1, 0) == 0, "stream listener: more connections pending than the three");
    int aq = accept_one(lq, "seqpacket connection");
    struct pollfd pq = {.fd = aq, .events = POLLIN};
    poll(&pq, 1, 2000);
    r = recv(aq, buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r == 3 && memcmp(buf, "abc", 3) == 0, "seqpacket: first record expected 'abc', got %zd",
             r);
    r = recv(aq, buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r == 1000, "seqpacket: second record expected 1000 bytes, got %zd", r);
    both_ways(aq, cq, "seqpacket");
    int ag = accept_one(lg, "connection to the deleted listener");
    r = read_n(ag, buf, 5);
    WL_CHECK(r == 5 && memcmp(buf, "ghost", 5) == 0,
             "deleted listener: expected 'ghost' from its pending connection, read %zd", r);
    both_ways(ag, cg, "deleted listener");
    struct stat gst;
    WL_CHECK(stat(ga.sun_path, &gst) < 0 && errno == ENOENT,
             "deleted listener: its path exists again");
    wl_report(1, "ok");
}
