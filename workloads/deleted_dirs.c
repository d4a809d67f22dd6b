/*
 * deleted_dirs.c - a current directory and a root directory removed while in
 * use, across checkpoint/restore.
 *
 * Kernel state tested:
 *  - the root process: cwd CTL_DIR/gone_cwd (mode 0710, owner 1111:2222),
 *    removed (rmdir) while it is the cwd;
 *  - a child: chroot'ed into CTL_DIR/gone_root (mode 0751, owner 3333:4444)
 *    with that directory as its cwd too, removed by the parent afterwards.
 * Verify (root): readlink /proc/self/cwd is the same "... (deleted)" string,
 * stat(".") is a directory with nlink 0, the same mode and owner; creating
 * a file in it fails with ENOENT; getcwd fails with ENOENT.  The parent reads
 * /proc/CHILD/root and /proc/CHILD/cwd (same "... (deleted)" strings as at
 * setup).  The child, told through a pipe: stat("/") and stat(".") are the
 * same inode, nlink 0, mode 0751, owner 3333:4444, and mkdir("/x") fails
 * with ENOENT; it exits 0 when all holds.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void rdlink(const char *p, char *out, size_t n)
{
    ssize_t r = readlink(p, out, n - 1);
    out[r < 0 ? 0 : r] = 0;
}

static int child_check(void)
{
    struct stat a, b;
    if (stat("/", &a) < 0 || stat(".", &b) < 0) {
        fprintf(stderr, "child: stat: %s\n", strerror(errno));
        return 1;
    }
    if (a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
        fprintf(stderr, "child: / and . differ\n");
        return 1;
    }
    if (!S_ISDIR(a.st_mode) || (a.st_mode & 07777) != 0751 || a.st_nlink != 0 ||
        a.st_uid != 3333 || a.st_gid != 4444) {
        fprintf(stderr, "child: root mode %o nlink %ld owner %d:%d\n", a.st_mode,
                (long)a.st_nlink, a.st_uid, a.st_gid);
        return 1;
    }
    if (mkdir("/x", 0700) == 0 || errno != ENOENT) {
        fprintf(stderr, "child: mkdir in removed root: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    const char *dir = wl_ctl_dir();
    char gcwd[4096], groot[4096];
    snprintf(gcwd, sizeof gcwd, "%s/gone_cwd", dir);
    snprintf(groot, sizeof groot, "%s/gone_root", dir);

    if (mkdir(groot, 0700) < 0 || chmod(groot, 0751) < 0 || chown(groot, 3333, 4444) < 0)
        wl_fail("setup: mkdir %s: %s", groot, strerror(errno));
    int go[2], up[2];
    if (pipe(go) < 0 || pipe(up) < 0)
        wl_fail("setup: pipe");
    pid_t child = fork();
    if (child == 0) {
        close(go[1]);
        close(up[0]);
        if (chdir(groot) < 0 || chroot(".") < 0)
            _exit(2);
        if (write(up[1], "r", 1) != 1)
            _exit(2);
        char c;
        while (read(go[0], &c, 1) != 1)
            if (errno != EINTR)
                _exit(3);
        _exit(child_check());
    }
    close(go[0]);
    close(up[1]);
    char c;
    if (read(up[0], &c, 1) != 1)
        wl_fail("setup: child did not chroot");
    if (rmdir(groot) < 0)
        wl_fail("setup: rmdir %s: %s", groot, strerror(errno));

    if (mkdir(gcwd, 0700) < 0 || chmod(gcwd, 0710) < 0 || chown(gcwd, 1111, 2222) < 0)
        wl_fail("setup: mkdir %s: %s", gcwd, strerror(errno));
    if (chdir(gcwd) < 0 || rmdir(gcwd) < 0)
        wl_fail("setup: chdir/rmdir %s: %s", gcwd, strerror(errno));
    char cwd0[4096], croot0[4096], ccwd0[4096], p[64];
    rdlink("/proc/self/cwd", cwd0, sizeof cwd0);
    snprintf(p, sizeof p, "/proc/%d/root", child);
    rdlink(p, croot0, sizeof croot0);
    snprintf(p, sizeof p, "/proc/%d/cwd", child);
    rdlink(p, ccwd0, sizeof ccwd0);
    if (!strstr(cwd0, "(deleted)") || !strstr(croot0, "(deleted)"))
        wl_fail("setup: links %s %s", cwd0, croot0);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    char now[4096];
    rdlink("/proc/self/cwd", now, sizeof now);
    WL_CHECK(strcmp(now, cwd0) == 0, "cwd was %s, now %s", cwd0, now);
    struct stat st;
    WL_CHECK(stat(".", &st) == 0, "stat .: %s", strerror(errno));
    WL_CHECK(S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0710, "cwd mode %o", st.st_mode);
    WL_CHECK(st.st_nlink == 0, "cwd nlink %ld", (long)st.st_nlink);
    WL_CHECK(st.st_uid == 1111 && st.st_gid == 2222, "cwd owner %d:%d", st.st_uid, st.st_gid);
    WL_CHECK(open("f", O_CREAT | O_WRONLY, 0600) < 0 && errno == ENOENT,
             "creating in removed cwd: %s", strerror(errno));
    WL_CHECK(getcwd(now, sizeof now) == NULL && errno == ENOENT, "getcwd: %s", strerror(errno));
    snprintf(p, sizeof p, "/proc/%d/root", child);
    rdlink(p, now, sizeof now);
    WL_CHECK(strcmp(now, croot0) == 0, "child root was %s, now %s", croot0, now);
    snprintf(p, sizeof p, "/proc/%d/cwd", child);
    rdlink(p, now, sizeof now);
    WL_CHECK(strcmp(now, ccwd0) == 0, "child cwd was %s, now %s", ccwd0, now);
    WL_CHECK(write(go[1], "v", 1) == 1, "telling child");
    int status;
    WL_CHECK(waitpid(child, &status, 0) == child, "waitpid: %s", strerror(errno));
    WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x (see out.log)",
             status);
    wl_report(1, "ok");
}
