/*
 * scm_epoll.c - sockets in flight (SCM_RIGHTS) watched by an epoll, and a socket in flight
 * carrying files itself.
 *
 * Kernel state tested (one process):
 *  - stream socketpair x: x[1] wrote "ping" to x[0]; x[0] registered in epoll ep (EPOLLIN,
 *    data 0xab) and then sent over the carrier socketpair c (c[0] -> c[1], message "X") and
 *    closed: the registration targets a socket only in flight;
 *  - stream socketpair y: y[1] sent y[0] the message "P" carrying the read end of a pipe holding
 *    "nested" (read end closed here); y[0] sent over c (message "Y") and closed: a socket in
 *    flight carrying a file in flight;
 *  - a datagram socketpair z: z[1] sent z[0] a datagram "S" carrying socket w[0] of a socketpair
 *    w (w[1] wrote "deep" to w[0]), and z[0] sent over c ("Z"): three levels;
 *  - a stream socketpair q: q[1] sent q[0] the message "SELF" carrying q[0] itself;
 *  - an epoll instance watching an eventfd (count 3, data 0x55), sent over c ("E") and closed:
 *    an epoll only in flight.
 * Verify: epoll reports 0xab (x[0] readable) before anything is received; fdinfo of ep names
 * the fd number x[0] had; receiving "X" gives a socket reading "ping", and new data written to
 * x[1] makes 0xab ready again; "Y" gives a socket whose message "P" carries a pipe reading
 * "nested"; "Z" gives a socket whose datagram "S" carries a socket reading "deep"; q[0]
 * receives a socket that is q[0] itself (same inode), which still reads what q[1] sends; "E"
 * gives an epoll reporting 0x55 ready.
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
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void send_fd(int s, const char *data, int fd, const char *what)
{
    union {
        char b[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } cb;
    memset(&cb, 0, sizeof cb);
    struct iovec iov = {.iov_base = (void *)data, .iov_len = strlen(data)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                        .msg_controllen = sizeof cb.b};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    if (sendmsg(s, &mh, MSG_NOSIGNAL) != (ssize_t)strlen(data))
        wl_fail("setup: sendmsg %s: %s", what, strerror(errno));
}

/* receive one message expected to be `data` with one fd; returns the fd */
static int recv_fd(int s, const char *data, const char *what)
{
    union {
        char b[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } cb;
    char buf[64];
    struct pollfd p = {.fd = s, .events = POLLIN};
    WL_CHECK(poll(&p, 1, 3000) == 1, "%s: nothing to receive", what);
    struct iovec iov = {.iov_base = buf, .iov_len = strlen(data)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                        .msg_controllen = sizeof cb.b};
    ssize_t r = recvmsg(s, &mh, MSG_DONTWAIT);
    WL_CHECK(r == (ssize_t)strlen(data) && memcmp(buf, data, (size_t)r) == 0,
             "%s: expected message '%s', got %zd bytes '%.*s' (%s)", what, data, r,
             r > 0 ? (int)r : 0, buf, r < 0 ? strerror(errno) : "");
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    WL_CHECK(cm && cm->cmsg_type == SCM_RIGHTS && cm->cmsg_len == CMSG_LEN(sizeof(int)),
             "%s: expected one fd with the message", what);
    int fd;
    memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    return fd;
}

static void expect_read(int fd, const char *want, const char *what)
{
    char buf[64];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    WL_CHECK(poll(&p, 1, 3000) == 1, "%s: nothing to read", what);
    ssize_t r = read(fd, buf, sizeof buf);
    WL_CHECK(r == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)r) == 0,
             "%s: expected '%s', read %zd bytes '%.*s'", what, want, r, r > 0 ? (int)r : 0, buf);
}

static int epoll_ready(int ep, uint64_t *data)
{
    struct epoll_event ev[4];
    int n = epoll_wait(ep, ev, 4, 0);
    if (n > 0)
        *data = ev[0].data.u64;
    return n;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    int c[2], x[2], y[2], z[2], w[2], p[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, c) || socketpair(AF_UNIX, SOCK_STREAM, 0, x) ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, y) || socketpair(AF_UNIX, SOCK_DGRAM, 0, z) ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, w) || pipe(p))
        wl_fail("setup: socketpair/pipe: %s", strerror(errno));
    int ep = epoll_create1(0);
    if (write(x[1], "ping", 4) != 4 || write(p[1], "nested", 6) != 6 ||
        write(w[1], "deep", 4) != 4)
        wl_fail("setup: write: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xab};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, x[0], &ev) < 0)
        wl_fail("setup: epoll_ctl: %s", strerror(errno));
    int x_num = x[0];
    send_fd(c[0], "X", x[0], "X");
    close(x[0]);
    send_fd(y[1], "P", p[0], "P");
    close(p[0]);
    send_fd(c[0], "Y", y[0], "Y");
    close(y[0]);
    send_fd(z[1], "S", w[0], "S");
    close(w[0]);
    send_fd(c[0], "Z", z[0], "Z");
    close(z[0]);
    int q[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, q))
        wl_fail("setup: socketpair: %s", strerror(errno));
    send_fd(q[1], "SELF", q[0], "SELF");
    int ep2 = epoll_create1(0), e3 = eventfd(3, 0);
    struct epoll_event ev2 = {.events = EPOLLIN, .data.u64 = 0x55};
    if (ep2 < 0 || e3 < 0 || epoll_ctl(ep2, EPOLL_CTL_ADD, e3, &ev2) < 0)
        wl_fail("setup: epoll in flight: %s", strerror(errno));
    send_fd(c[0], "E", ep2, "E");
    close(ep2);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    uint64_t d = 0;
    int n = epoll_ready(ep, &d);
    WL_CHECK(n == 1 && d == 0xab,
             "epoll: the socket in flight (readable) expected ready with data 0xab, found %d "
             "ready (data %#llx)",
             n, (unsigned long long)d);
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", ep);
    FILE *f = fopen(path, "r");
    int tfd = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "tfd:", 4) == 0)
            tfd = atoi(line + 4);
    if (f)
        fclose(f);
    WL_CHECK(tfd == x_num, "epoll fdinfo: tfd expected %d, found %d", x_num, tfd);
    int rx = recv_fd(c[1], "X", "carrier X");
    expect_read(rx, "ping", "socket X");
    n = epoll_ready(ep, &d);
    WL_CHECK(n == 0, "epoll: nothing expected ready after reading X, found %d", n);
    WL_CHECK(write(x[1], "more", 4) == 4, "write x[1]: %s", strerror(errno));
    n = epoll_ready(ep, &d);
    WL_CHECK(n == 1 && d == 0xab, "epoll: X expected ready again after new data, found %d", n);
    expect_read(rx, "more", "socket X (new data)");
    int ry = recv_fd(c[1], "Y", "carrier Y");
    int rp = recv_fd(ry, "P", "socket Y");
    expect_read(rp, "nested", "pipe carried by Y");
    int rz = recv_fd(c[1], "Z", "carrier Z");
    int rw = recv_fd(rz, "S", "socket Z");
    expect_read(rw, "deep", "socket carried by Z");
    WL_CHECK(write(w[1], "again", 5) == 5, "write w[1]: %s", strerror(errno));
    expect_read(rw, "again", "socket carried by Z (new data)");
    int rq = recv_fd(q[0], "SELF", "socket q[0]");
    struct stat s1, s2;
    WL_CHECK(fstat(rq, &s1) == 0 && fstat(q[0], &s2) == 0 && s1.st_ino == s2.st_ino,
             "q[0] carried itself: received inode %lu, q[0] is %lu", (unsigned long)s1.st_ino,
             (unsigned long)s2.st_ino);
    WL_CHECK(write(q[1], "self", 4) == 4, "q[1]: write: %s", strerror(errno));
    expect_read(rq, "self", "q[0] received from itself");
    int rep = recv_fd(c[1], "E", "carrier E");
    n = epoll_ready(rep, &d);
    WL_CHECK(n == 1 && d == 0x55, "epoll received in flight: expected 0x55 ready, found %d (%#llx)",
             n, (unsigned long long)d);
    wl_report(1, "ok");
}
