/*
 * unix_scm.c - file descriptors in flight (SCM_RIGHTS) across
 * checkpoint/restore.
 *
 * Kernel state tested (one process):
 *  - a SOCK_STREAM socketpair st[0]/st[1] with, queued st[0]->st[1]:
 *      1. the 4 bytes "FILE" carrying SCM_RIGHTS [fd of CTL_DIR/scm_file,
 *         O_RDWR, offset 7; 4096-byte known content];
 *      2. the 5 bytes "AFTER" without control data;
 *    the sender's copy of the file fd is closed, so the open file
 *    description exists only in flight;
 *  - a SOCK_DGRAM socketpair dg[0]/dg[1] with one queued datagram "PIPE+FILE"
 *    carrying SCM_RIGHTS [read end of a pipe holding 100 bytes, the same
 *    scm_file open file description once more]; the pipe read end is
 *    closed locally, its write end stays open here.
 * Verify: recvmsg returns "FILE" with exactly one fd (no MSG_CTRUNC, the
 * stream read stops at the fd-carrying segment), then "AFTER"; the file fd
 * names CTL_DIR/scm_file, is O_RDWR, is at offset 7 and reads the content
 * from there; the datagram brings 2 fds: a pipe with the 100 bytes that
 * still receives what is written to the kept write end, and the same open
 * file description as the first fd (the offset moved by reading through
 * the first fd is seen through the second); both sockets still pass new fds.
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
#include <unistd.h>

#define FILE_SZ 4096
#define FILE_OFF 7
#define PIPE_SZ 100
#define SEED_FILE 71
#define SEED_PIPE 72

static void send_fds(int sock, const void *data, size_t len, const int *fds, int nfds,
                     const char *what)
{
    union {
        char b[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } cb;
    memset(&cb, 0, sizeof cb);
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
        mh.msg_control = cb.b;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t w;
    do
        w = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)len)
        wl_fail("%s: sendmsg returned %zd (%s)", what, w, w < 0 ? strerror(errno) : "short");
}

static int wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (int waited = 0; waited < timeout_ms; waited += 100)
        if (poll(&p, 1, 100) > 0)
            return 1;
    return 0;
}

/* one recvmsg; returns data length, fills fds (up to 8) and *nfds */
static size_t recv_fds(int sock, void *data, size_t cap, int *fds, int *nfds, int *flags,
                       const char *what)
{
    union {
        char b[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } cb;
    for (;;) {
        WL_CHECK(wait_readable(sock, 5000), "%s: nothing to receive within 5 s", what);
        struct iovec iov = {.iov_base = data, .iov_len = cap};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                            .msg_controllen = sizeof cb.b};
        ssize_t r = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        WL_CHECK(r >= 0, "%s: recvmsg failed: %s", what, strerror(errno));
        *flags = mh.msg_flags;
        *nfds = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            WL_CHECK(cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS,
                     "%s: unexpected control message level %d type %d", what, cm->cmsg_level,
                     cm->cmsg_type);
            int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < n && *nfds < 8; i++)
                memcpy(&fds[(*nfds)++], CMSG_DATA(cm) + sizeof(int) * (size_t)i, sizeof(int));
        }
        return (size_t)r;
    }
}

static void fd_link(int fd, char *buf, size_t n)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t r = readlink(p, buf, n - 1);
    if (r < 0)
        snprintf(buf, n, "<readlink: %s>", strerror(errno));
    else
        buf[r] = 0;
}

static ssize_t read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return got ? (ssize_t)got : r;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    const char *dir = wl_ctl_dir();
    static unsigned char content[FILE_SZ], buf[FILE_SZ];

    int f = open("scm_file", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (f < 0)
        wl_fail("setup: open scm_file: %s", strerror(errno));
    wl_fill_pattern(content, FILE_SZ, SEED_FILE);
    if (write(f, content, FILE_SZ) != FILE_SZ)
        wl_fail("setup: write scm_file: %s", strerror(errno));
    if (lseek(f, FILE_OFF, SEEK_SET) != FILE_OFF)
        wl_fail("setup: lseek: %s", strerror(errno));

    int p[2];
    if (pipe(p) < 0)
        wl_fail("setup: pipe: %s", strerror(errno));
    wl_fill_pattern(buf, PIPE_SZ, SEED_PIPE);
    if (write(p[1], buf, PIPE_SZ) != PIPE_SZ)
        wl_fail("setup: write pipe: %s", strerror(errno));

    int st[2], dg[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) < 0)
        wl_fail("setup: socketpair: %s", strerror(errno));
    send_fds(st[0], "FILE", 4, &f, 1, "setup: stream FILE");
    send_fds(st[0], "AFTER", 5, NULL, 0, "setup: stream AFTER");
    int two[2] = {p[0], f};
    send_fds(dg[0], "PIPE+FILE", 9, two, 2, "setup: dgram PIPE+FILE");
    int f_num = f, p_num = p[0];
    close(f);
    close(p[0]);
    int wr = p[1];

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    WL_CHECK(fcntl(f_num, F_GETFD) < 0 && fcntl(p_num, F_GETFD) < 0,
             "fds %d and %d were closed after sending, but are open again", f_num, p_num);

    char data[64], link[PATH_MAX], want[PATH_MAX];
    int fds[8], nfds = 0, fl = 0;
    size_t n = recv_fds(st[1], data, sizeof data, fds, &nfds, &fl, "stream: first message");
    WL_CHECK(!(fl & MSG_CTRUNC), "stream: first message has MSG_CTRUNC (flags %#x)", fl);
    WL_CHECK(n == 4 && memcmp(data, "FILE", 4) == 0,
             "stream: first recvmsg expected the 4 bytes 'FILE' (it must stop at the segment "
             "carrying the fd), found %zu bytes '%.*s'",
             n, (int)n, data);
    WL_CHECK(nfds == 1, "stream: 'FILE' expected to carry exactly 1 fd, found %d", nfds);
    int rf = fds[0];
    n = recv_fds(st[1], data, sizeof data, fds, &nfds, &fl, "stream: second message");
    WL_CHECK(n == 5 && memcmp(data, "AFTER", 5) == 0 && nfds == 0,
             "stream: second recvmsg expected 'AFTER' with no fds, found %zu bytes '%.*s' with %d "
             "fds",
             n, (int)n, data, nfds);

    snprintf(want, sizeof want, "%s/scm_file", dir);
    fd_link(rf, link, sizeof link);
    WL_CHECK(strcmp(link, want) == 0, "received file fd %d: link expected '%s', found '%s'", rf,
             want, link);
    int acc = fcntl(rf, F_GETFL);
    WL_CHECK(acc >= 0 && (acc & O_ACCMODE) == O_RDWR,
             "received file fd: F_GETFL expected O_RDWR, found %#o", acc);
    WL_CHECK(fcntl(rf, F_GETFD) == FD_CLOEXEC,
             "received file fd: F_GETFD expected FD_CLOEXEC (MSG_CMSG_CLOEXEC), found %d",
             fcntl(rf, F_GETFD));
    off_t off = lseek(rf, 0, SEEK_CUR);
    WL_CHECK(off == FILE_OFF, "received file fd: offset expected %d, found %lld", FILE_OFF,
             (long long)off);
    ssize_t r = read_full(rf, buf, 20);
    WL_CHECK(r == 20 && memcmp(buf, content + FILE_OFF, 20) == 0,
             "received file fd: 20 bytes at offset %d do not match the file content (read %zd)",
             FILE_OFF, r);
    r = pread(rf, buf, FILE_SZ, 0);
    WL_CHECK(r == FILE_SZ && memcmp(buf, content, FILE_SZ) == 0,
             "received file fd: content (%zd bytes read) differs from the %d written bytes", r,
             FILE_SZ);

    n = recv_fds(dg[1], data, sizeof data, fds, &nfds, &fl, "dgram: queued datagram");
    WL_CHECK(!(fl & (MSG_CTRUNC | MSG_TRUNC)), "dgram: flags %#x (truncated)", fl);
    WL_CHECK(n == 9 && memcmp(data, "PIPE+FILE", 9) == 0,
             "dgram: expected 'PIPE+FILE', found %zu bytes '%.*s'", n, (int)n, data);
    WL_CHECK(nfds == 2, "dgram: expected 2 fds, found %d", nfds);
    int rp = fds[0], rf2 = fds[1];
    struct stat sb;
    WL_CHECK(fstat(rp, &sb) == 0 && S_ISFIFO(sb.st_mode),
             "dgram: first fd expected a pipe, found mode %#o", (unsigned)sb.st_mode);
    WL_CHECK((fcntl(rp, F_GETFL) & O_ACCMODE) == O_RDONLY, "dgram: pipe fd expected O_RDONLY");
    r = read_full(rp, buf, PIPE_SZ);
    WL_CHECK(r == PIPE_SZ && wl_check_pattern(buf, PIPE_SZ, SEED_PIPE),
             "dgram: pipe expected %d buffered pattern bytes, read %zd%s", PIPE_SZ, r,
             r == PIPE_SZ ? " with different content" : "");
    WL_CHECK(write(wr, "more", 4) == 4, "pipe write end: write failed: %s", strerror(errno));
    WL_CHECK(wait_readable(rp, 2000), "pipe: data written to the kept write end does not reach "
             "the received read end (different pipes?)");
    r = read(rp, buf, 16);
    WL_CHECK(r == 4 && memcmp(buf, "more", 4) == 0,
             "pipe: expected 'more' through the received read end, read %zd", r);

    fd_link(rf2, link, sizeof link);
    WL_CHECK(strcmp(link, want) == 0, "dgram: second fd link expected '%s', found '%s'", want,
             link);
    off = lseek(rf2, 0, SEEK_CUR);
    WL_CHECK(off == FILE_OFF + 20,
             "dgram: second file fd must share the open file description of the first (offset "
             "moved to %d by reading 20 bytes through it), found offset %lld",
             FILE_OFF + 20, (long long)off);
    lseek(rf2, 1000, SEEK_SET);
    off = lseek(rf, 0, SEEK_CUR);
    WL_CHECK(off == 1000, "file fds: seek via the second fd to 1000 not seen via the first "
             "(offset %lld)", (long long)off);

    /* the sockets still pass fds */
    int nul = open("/dev/null", O_WRONLY);
    send_fds(st[0], "NEW", 3, &nul, 1, "stream: new fd");
    n = recv_fds(st[1], data, sizeof data, fds, &nfds, &fl, "stream: new fd");
    WL_CHECK(n == 3 && nfds == 1, "stream: new message expected 3 bytes + 1 fd, found %zu + %d",
             n, nfds);
    fd_link(fds[0], link, sizeof link);
    WL_CHECK(strcmp(link, "/dev/null") == 0, "stream: new fd expected /dev/null, found '%s'",
             link);
    send_fds(dg[0], "NEW", 3, &nul, 1, "dgram: new fd");
    n = recv_fds(dg[1], data, sizeof data, fds, &nfds, &fl, "dgram: new fd");
    WL_CHECK(n == 3 && nfds == 1, "dgram: new message expected 3 bytes + 1 fd, found %zu + %d", n,
             nfds);
    char c;
    r = recv(st[1], &c, 1, MSG_DONTWAIT);
    WL_CHECK(r < 0 && errno == EAGAIN, "stream: expected nothing more queued, recv returned %zd",
             r);
    wl_report(1, "ok");
}
