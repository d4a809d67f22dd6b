/*
 * devtty.c - /dev/tty, the alias of the controlling terminal, held across
 * checkpoint/restore.
 *
 * Kernel state tested: the parent P holds the master m of a pty pair; its
 * child C (setsid + TIOCSCTTY on the slave) opens /dev/tty read-write and
 * non-blocking (fd t) and dups it (t2); C's child G inherits both.  Pipes
 * P->C and C->G carry the verify request.
 * Verify (C): /proc/self/fd/t and t2 read "/dev/tty", char device 5,0,
 * O_NONBLOCK kept, t and t2 one description (clearing O_NONBLOCK through t
 * shows on t2), TIOCGSID through t = C's session, tcgetpgrp through t = C;
 * then G checks its copies (link, 5,0, same description as C's: kcmp) and
 * writes "G-ok" through /dev/tty; C writes "C-ok" through t.
 * Verify (P): both lines arrive on the master (within 5 s); C exits 0.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static void check_devtty(const char *who, int fd) {
    char path[64], link[256];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    WL_CHECK(n > 0, "%s: readlink %s: %s", who, path, strerror(errno));
    link[n] = 0;
    WL_CHECK(strcmp(link, "/dev/tty") == 0, "%s: fd %d is %s, expected /dev/tty",
             who, fd, link);
    struct stat st;
    WL_CHECK(fstat(fd, &st) == 0, "%s: fstat: %s", who, strerror(errno));
    WL_CHECK(S_ISCHR(st.st_mode) && major(st.st_rdev) == 5 &&
                 minor(st.st_rdev) == 0,
             "%s: fd %d is device %u,%u, expected 5,0", who, fd,
             major(st.st_rdev), minor(st.st_rdev));
}

static void wait_byte(int fd) {
    char b;
    ssize_t r;
    do r = read(fd, &b, 1); while (r < 0 && errno == EINTR);
    if (r != 1) _exit(3);
}

static void grandchild(int t, int t2, int from_c) {
    wait_byte(from_c);
    check_devtty("G", t);
    check_devtty("G", t2);
    long same = syscall(SYS_kcmp, getpid(), getppid(), KCMP_FILE, t, t);
    WL_CHECK(same == 0, "G: its /dev/tty is not C's description (kcmp %ld)",
             same);
    const char *m = "G-ok\n";
    WL_CHECK(write(t, m, strlen(m)) == (ssize_t)strlen(m), "G: write: %s",
             strerror(errno));
    _exit(0);
}

static void child(int s, int from_p) {
    if (setsid() < 0) wl_fail("C: setsid: %s", strerror(errno));
    if (ioctl(s, TIOCSCTTY, 0) < 0) wl_fail("C: TIOCSCTTY: %s", strerror(errno));
    int t = open("/dev/tty", O_RDWR | O_NONBLOCK);
    if (t < 0) wl_fail("C: open /dev/tty: %s", strerror(errno));
    int t2 = dup(t);
    int cg[2];
    if (pipe(cg) < 0) wl_fail("C: pipe: %s", strerror(errno));
    pid_t g = fork();
    if (g < 0) wl_fail("C: fork: %s", strerror(errno));
    if (g == 0) {
        close(cg[1]);
        grandchild(t, t2, cg[0]);
    }
    close(cg[0]);
    wait_byte(from_p);
    check_devtty("C", t);
    check_devtty("C", t2);
    int fl = fcntl(t, F_GETFL);
    WL_CHECK(fl >= 0 && (fl & O_NONBLOCK) && (fl & O_ACCMODE) == O_RDWR,
             "C: /dev/tty flags %#x, expected O_RDWR|O_NONBLOCK", fl);
    WL_CHECK(fcntl(t, F_SETFL, fl & ~O_NONBLOCK) == 0, "C: F_SETFL: %s",
             strerror(errno));
    WL_CHECK(!(fcntl(t2, F_GETFL) & O_NONBLOCK),
             "C: t and t2 are no longer one open file description");
    pid_t sid = -1;
    WL_CHECK(ioctl(t, TIOCGSID, &sid) == 0 && sid == getpid(),
             "C: TIOCGSID through /dev/tty: %d (%s), expected %d", (int)sid,
             strerror(errno), (int)getpid());
    WL_CHECK(tcgetpgrp(t) == getpid(), "C: foreground group %d, expected %d",
             (int)tcgetpgrp(t), (int)getpid());
    if (write(cg[1], "v", 1) != 1) wl_fail("C: write to G: %s", strerror(errno));
    int st;
    pid_t w;
    do w = waitpid(g, &st, 0); while (w < 0 && errno == EINTR);
    WL_CHECK(w == g && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "C: G ended with status %#x (see out.log)", st);
    const char *m = "C-ok\n";
    WL_CHECK(write(t, m, strlen(m)) == (ssize_t)strlen(m), "C: write: %s",
             strerror(errno));
    _exit(0);
}

int main(int argc, char **argv) {
    wl_init(argc, argv);
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
        wl_fail("setup: posix_openpt: %s", strerror(errno));
    int s = open(ptsname(m), O_RDWR | O_NOCTTY);
    if (s < 0) wl_fail("setup: open slave: %s", strerror(errno));
    int pc[2];
    if (pipe(pc) < 0) wl_fail("setup: pipe: %s", strerror(errno));
    pid_t c = fork();
    if (c < 0) wl_fail("setup: fork: %s", strerror(errno));
    if (c == 0) {
        close(pc[1]);
        close(m);
        child(s, pc[0]);
    }
    close(pc[0]);
    close(s);
    wl_sleep_ms(100); /* C has its terminal and /dev/tty open, G exists */
    wl_ready();
    while (!wl_verify_requested()) wl_sleep_ms(20);
    WL_CHECK(write(pc[1], "v", 1) == 1, "write to C: %s", strerror(errno));
    char buf[512] = "";
    size_t have = 0;
    for (int i = 0; i < 50 && !(strstr(buf, "C-ok") && strstr(buf, "G-ok")); i++) {
        struct pollfd p = {.fd = m, .events = POLLIN};
        if (poll(&p, 1, 100) == 1) {
            ssize_t r = read(m, buf + have, sizeof buf - 1 - have);
            if (r > 0) have += (size_t)r;
        }
        buf[have] = 0;
    }
    int st;
    pid_t w;
    do w = waitpid(c, &st, 0); while (w < 0 && errno == EINTR);
    WL_CHECK(w == c && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "C ended with status %#x (see out.log)", st);
    WL_CHECK(strstr(buf, "G-ok") && strstr(buf, "C-ok"),
             "master read %zu bytes \"%s\", expected G-ok and C-ok", have, buf);
    wl_report(1, "ok");
}
