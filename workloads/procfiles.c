/*
 * procfiles.c - files opened under /proc across checkpoint/restore.
 *
 * Kernel state tested:
 *  - the root holds /proc/self/status (read 5 bytes: offset 5), the
 *    /proc/self/fd directory, /proc/CHILD/comm of a child of the tree
 *    (named "hg-procchild"), and the /proc/PID directory of a second child
 *    that has exited and been reaped since;
 *  - the child holds /proc/PARENT/status (its parent's).
 * Verify (root): the status fd's offset is 5 and it describes this process
 * ("Pid:\t<getpid()>"); through the /proc/self/fd directory fd, the status fd
 * reads back as /proc/<getpid()>/status and the listing holds this
 * process's fds; the comm fd reads "hg-procchild"; in the dead task's
 * directory openat fails with ESRCH and getdents with ENOENT, and its link
 * ends in "(deleted)".  The child, told through a pipe: its fd describes its
 * parent ("Pid:\t<getppid()>"); it exits 0 when so.
 *
 * With argument "outside": the root also holds /proc/1/comm (init, outside
 * the tree; its fd number in CTL_DIR/fd), which a checkpoint must refuse.
 */
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int describes(int fd, pid_t pid)
{
    char buf[4096], want[64];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    snprintf(want, sizeof want, "\nPid:\t%d\n", pid);
    return strstr(buf, want) != NULL;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    int go[2];
    if (pipe(go) < 0)
        wl_fail("setup: pipe");
    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
        close(go[1]);
        prctl(PR_SET_NAME, "hg-procchild");
        char p[64];
        snprintf(p, sizeof p, "/proc/%d/status", parent);
        int ps = open(p, O_RDONLY);
        if (ps < 0)
            _exit(2);
        char c;
        while (read(go[0], &c, 1) != 1)
            if (errno != EINTR)
                _exit(3);
        if (!describes(ps, getppid())) {
            fprintf(stderr, "child: %s does not describe parent %d\n", p, getppid());
            _exit(1);
        }
        _exit(0);
    }
    close(go[0]);
    pid_t dead = fork();
    if (dead == 0) {
        pause();
        _exit(0);
    }
    char p[64];
    snprintf(p, sizeof p, "/proc/%d", dead);
    int dd = open(p, O_RDONLY | O_DIRECTORY);
    if (dd < 0)
        wl_fail("setup: open %s: %s", p, strerror(errno));
    kill(dead, SIGKILL);
    waitpid(dead, NULL, 0);

    int st = open("/proc/self/status", O_RDONLY);
    char b5[5];
    if (st < 0 || read(st, b5, 5) != 5)
        wl_fail("setup: /proc/self/status: %s", strerror(errno));
    int fdd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY);
    /* wait for the child's name */
    snprintf(p, sizeof p, "/proc/%d/comm", child);
    int comm = -1;
    for (int i = 0; i < 200; i++) {
        comm = open(p, O_RDONLY);
        char b[32] = {0};
        if (comm >= 0 && pread(comm, b, sizeof b - 1, 0) > 0 && strcmp(b, "hg-procchild\n") == 0)
            break;
        if (comm >= 0)
            close(comm);
        comm = -1;
        wl_sleep_ms(10);
    }
    if (fdd < 0 || comm < 0)
        wl_fail("setup: /proc/self/fd or %s", p);

    if (argc > 2 && strcmp(argv[2], "outside") == 0) {
        int o = open("/proc/1/comm", O_RDONLY);
        char fdp[4200];
        snprintf(fdp, sizeof fdp, "%s/fd", wl_ctl_dir());
        FILE *f = fopen(fdp, "w");
        if (o < 0 || !f)
            wl_fail("setup: /proc/1/comm: %s", strerror(errno));
        fprintf(f, "%d\n", o);
        fclose(f);
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    WL_CHECK(lseek(st, 0, SEEK_CUR) == 5, "status offset %ld", (long)lseek(st, 0, SEEK_CUR));
    WL_CHECK(describes(st, getpid()), "/proc/self/status does not describe pid %d", getpid());
    char name[16], link[256], want[64];
    snprintf(name, sizeof name, "%d", st);
    ssize_t n = readlinkat(fdd, name, link, sizeof link - 1);
    WL_CHECK(n > 0, "readlinkat in /proc/self/fd: %s", strerror(errno));
    link[n] = 0;
    snprintf(want, sizeof want, "/proc/%d/status", getpid());
    WL_CHECK(strcmp(link, want) == 0, "status fd shows %s, want %s", link, want);
    int seen = 0;
    lseek(fdd, 0, SEEK_SET);
    DIR *dir = fdopendir(dup(fdd));
    WL_CHECK(dir != NULL, "fdopendir");
    for (struct dirent *e; (e = readdir(dir));)
        if (atoi(e->d_name) == comm || atoi(e->d_name) == dd)
            seen++;
    closedir(dir);
    WL_CHECK(seen == 2, "listing of /proc/self/fd misses fds %d/%d", comm, dd);
    char b[32] = {0};
    WL_CHECK(pread(comm, b, sizeof b - 1, 0) > 0 && strcmp(b, "hg-procchild\n") == 0,
             "child comm reads '%s'", b);
    WL_CHECK(openat(dd, "status", O_RDONLY) < 0 && errno == ESRCH,
             "openat in dead task's dir: %s", strerror(errno));
    char dbuf[1024];
    WL_CHECK(syscall(SYS_getdents64, dd, dbuf, sizeof dbuf) < 0 && errno == ENOENT,
             "getdents of dead task's dir: %s", strerror(errno));
    snprintf(p, sizeof p, "/proc/self/fd/%d", dd);
    n = readlink(p, link, sizeof link - 1);
    link[n < 0 ? 0 : n] = 0;
    WL_CHECK(strstr(link, "(deleted)") != NULL, "dead dir link %s", link);
    WL_CHECK(write(go[1], "v", 1) == 1, "telling child");
    int status;
    WL_CHECK(waitpid(child, &status, 0) == child, "waitpid: %s", strerror(errno));
    WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x (see out.log)",
             status);
    wl_report(1, "ok");
}
