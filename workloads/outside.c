/*
 * outside.c - objects whose other end lives outside the dumped tree.
 *
 * Meant to be run with stdout (and possibly stderr) being a pipe whose
 * reader is the test harness, i.e. outside the checkpointed tree.
 *
 * Kernel state tested:
 *  - fds 0, 1, 2 still refer to the same objects (same st_dev/st_ino/type,
 *    same access mode and O_APPEND/O_NONBLOCK status flags);
 *  - writes to fds 1 and 2 succeed (SIGPIPE ignored so a broken pipe shows
 *    up as EPIPE in the failure message instead of killing us);
 *  - fd 0: if it is /dev/null, read returns EOF; otherwise only its
 *    identity and flags are checked (nothing is consumed);
 *  - session id and process group id unchanged.
 *
 * Option --stdout-now-devnull (for a restore without --inherit-fd of the external pipe
 * that was stdout/stderr: its write end is documented to become /dev/null): at verify fds 1
 * and 2 must instead be /dev/null (character device 1:3), still write-only with the same
 * O_APPEND/O_NONBLOCK flags; writes to them must succeed.
 *
 * In both modes: whether fds 1 and 2 are one open file description (F_SETFL of O_NONBLOCK on
 * fd 1 shows on fd 2) is the same at verify as at setup.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct fdinfo {
    int ok;
    struct stat st;
    int fl;
};

static void get_info(int fd, struct fdinfo *i)
{
    memset(i, 0, sizeof *i);
    i->ok = fstat(fd, &i->st) == 0;
    i->fl = fcntl(fd, F_GETFL);
}

/* 1 if fds 1 and 2 share one open file description (status flags are per description). */
static int shared_12(void)
{
    int f1 = fcntl(1, F_GETFL), f2 = fcntl(2, F_GETFL), shared = 0;
    if (f1 < 0 || f2 < 0 || fcntl(1, F_SETFL, f1 ^ O_NONBLOCK) != 0)
        return 0;
    shared = ((fcntl(2, F_GETFL) ^ f2) & O_NONBLOCK) != 0;
    fcntl(1, F_SETFL, f1);
    return shared;
}

static const char *ftype(mode_t m)
{
    return S_ISFIFO(m) ? "fifo/pipe" : S_ISREG(m) ? "file" : S_ISCHR(m) ? "chardev" : S_ISSOCK(m) ? "socket" : "other";
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    int now_devnull = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--stdout-now-devnull") == 0)
            now_devnull = 1;
        else
            wl_fail("usage: outside CTL_DIR [--stdout-now-devnull]; unknown argument %s", argv[i]);
    }
    signal(SIGPIPE, SIG_IGN);
    pid_t sid = getsid(0), pgid = getpgrp();
    struct fdinfo was[3];
    for (int fd = 0; fd < 3; fd++) {
        get_info(fd, &was[fd]);
        if (!was[fd].ok)
            wl_fail("setup: fd %d is not open: %s", fd, strerror(errno));
    }
    int was_shared12 = shared_12();
    int stdin_null = S_ISCHR(was[0].st.st_mode) && major(was[0].st.st_rdev) == 1 &&
                     minor(was[0].st.st_rdev) == 3;
    dprintf(1, "outside: ready (pid %d)\n", (int)getpid());

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(10);

    WL_CHECK(getsid(0) == sid, "session id expected %d, found %d", (int)sid, (int)getsid(0));
    WL_CHECK(getpgrp() == pgid, "process group id expected %d, found %d", (int)pgid,
             (int)getpgrp());
    int shared12 = shared_12();
    WL_CHECK(shared12 == was_shared12,
             "fds 1 and 2 %s one open file description before the checkpoint, %s now",
             was_shared12 ? "were" : "were not", shared12 ? "are" : "are not");
    for (int fd = 0; fd < 3; fd++) {
        struct fdinfo now;
        get_info(fd, &now);
        WL_CHECK(now.ok, "fd %d: no longer open (fstat: %s)", fd, strerror(errno));
        if (now_devnull && fd > 0) {
            WL_CHECK(S_ISCHR(now.st.st_mode) && major(now.st.st_rdev) == 1 &&
                         minor(now.st.st_rdev) == 3,
                     "fd %d: expected /dev/null (chardev 1:3), found %s dev %#lx ino %lu rdev %#lx",
                     fd, ftype(now.st.st_mode), (unsigned long)now.st.st_dev,
                     (unsigned long)now.st.st_ino, (unsigned long)now.st.st_rdev);
            int mask = O_ACCMODE | O_APPEND | O_NONBLOCK;
            WL_CHECK((now.fl & mask) == (was[fd].fl & mask),
                     "fd %d: status flags (accmode|append|nonblock) expected %#o, found %#o", fd,
                     was[fd].fl & mask, now.fl & mask);
            continue;
        }
        WL_CHECK(now.st.st_dev == was[fd].st.st_dev && now.st.st_ino == was[fd].st.st_ino &&
                     (now.st.st_mode & S_IFMT) == (was[fd].st.st_mode & S_IFMT),
                 "fd %d: expected the same %s (dev %#lx ino %lu), found %s dev %#lx ino %lu", fd,
                 ftype(was[fd].st.st_mode), (unsigned long)was[fd].st.st_dev,
                 (unsigned long)was[fd].st.st_ino, ftype(now.st.st_mode),
                 (unsigned long)now.st.st_dev, (unsigned long)now.st.st_ino);
        int mask = O_ACCMODE | O_APPEND | O_NONBLOCK;
        WL_CHECK((now.fl & mask) == (was[fd].fl & mask),
                 "fd %d: status flags (accmode|append|nonblock) expected %#o, found %#o", fd,
                 was[fd].fl & mask, now.fl & mask);
    }
    static const char m1[] = "outside: stdout works after restore\n";
    static const char m2[] = "outside: stderr works after restore\n";
    ssize_t w;
    do
        w = write(1, m1, sizeof m1 - 1);
    while (w < 0 && errno == EINTR);
    WL_CHECK(w == (ssize_t)sizeof m1 - 1, "write to fd 1 returned %zd (%s)", w,
             w < 0 ? strerror(errno) : "short");
    do
        w = write(2, m2, sizeof m2 - 1);
    while (w < 0 && errno == EINTR);
    WL_CHECK(w == (ssize_t)sizeof m2 - 1, "write to fd 2 returned %zd (%s)", w,
             w < 0 ? strerror(errno) : "short");
    if (stdin_null) {
        char c;
        ssize_t r;
        do
            r = read(0, &c, 1);
        while (r < 0 && errno == EINTR);
        WL_CHECK(r == 0, "fd 0 (/dev/null): read expected EOF (0), returned %zd (%s)", r,
                 r < 0 ? strerror(errno) : "data");
    }
    wl_report(1, "ok");
}
