/*
 * chattr.c - inode flags (FS_IOC_GETFLAGS, what chattr sets) of files the
 * tree holds open, across checkpoint/restore.  CTL_DIR must be on a file
 * system with these flags (ext4, tmpfs for +a +i +A +d).
 *
 * Kernel state tested:
 *  - CTL_DIR/app: "abc", append-only (+a), open O_WRONLY|O_APPEND;
 *  - CTL_DIR/imm: "immutable", immutable (+i), open O_RDONLY;
 *  - CTL_DIR/imm_rw: opened O_RDWR, then made immutable (+i): the open
 *    description keeps its access, a new open for writing is refused;
 *  - CTL_DIR/noat: noatime and nodump (+A +d), open O_RDWR;
 *  - CTL_DIR/sub: a directory made immutable (+i), open O_RDONLY|O_DIRECTORY.
 * Verify: FS_IOC_GETFLAGS through each fd gives the flags read at setup
 * (so a restore must put back flags that were changed while the tree was
 * down), the access mode of each fd, writes through the append-only fd
 * land at the end, opening app without O_APPEND, imm for writing, unlinking
 * imm and creating in sub fail with EPERM, and a write through imm_rw
 * gives the same result as at setup.  Flags are cleared before the result
 * is written, so that CTL_DIR can be removed.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define N 5
static const char *names[N] = {"app", "imm", "imm_rw", "noat", "sub"};
static int fds[N];
static int want[N];
static char paths[N][4096];

static int getflags(int fd)
{
    int f = -1;
    if (ioctl(fd, FS_IOC_GETFLAGS, &f) < 0)
        return -1;
    return f;
}

static void setflags(int fd, int f, const char *what)
{
    if (ioctl(fd, FS_IOC_SETFLAGS, &f) < 0)
        wl_fail("setup: FS_IOC_SETFLAGS %s: %s", what, strerror(errno));
}

/* clear every flag we set (through a fresh read-only open), then report */
__attribute__((noreturn, format(printf, 2, 3))) static void finish(int ok, const char *fmt, ...)
{
    for (int i = 0; i < N; i++) {
        int fd = open(paths[i], O_RDONLY | O_NONBLOCK);
        if (fd >= 0) {
            int f = getflags(fd) & ~(FS_APPEND_FL | FS_IMMUTABLE_FL | FS_NOATIME_FL | FS_NODUMP_FL);
            ioctl(fd, FS_IOC_SETFLAGS, &f);
            close(fd);
        }
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    wl_report(ok, "%s", msg);
}

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            char m_[512];                                                     \
            snprintf(m_, sizeof m_, __VA_ARGS__);                             \
            finish(0, "chattr.c:%d: `%s` failed: %s", __LINE__, #cond, m_);   \
        }                                                                     \
    } while (0)

static int mkfile(int i, const char *content, int oflags)
{
    int fd = open(paths[i], O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd < 0 || write(fd, content, strlen(content)) != (ssize_t)strlen(content))
        wl_fail("setup: %s: %s", paths[i], strerror(errno));
    close(fd);
    fd = open(paths[i], oflags);
    if (fd < 0)
        wl_fail("setup: open %s: %s", paths[i], strerror(errno));
    return fd;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    for (int i = 0; i < N; i++)
        snprintf(paths[i], sizeof paths[i], "%s/%s", wl_ctl_dir(), names[i]);

    fds[0] = mkfile(0, "abc", O_WRONLY | O_APPEND);
    setflags(fds[0], FS_APPEND_FL | getflags(fds[0]), "app");
    fds[1] = mkfile(1, "immutable", O_RDONLY);
    setflags(fds[1], FS_IMMUTABLE_FL | getflags(fds[1]), "imm");
    fds[2] = mkfile(2, "rw", O_RDWR);
    setflags(fds[2], FS_IMMUTABLE_FL | getflags(fds[2]), "imm_rw");
    fds[3] = mkfile(3, "noatime", O_RDWR);
    setflags(fds[3], FS_NOATIME_FL | FS_NODUMP_FL | getflags(fds[3]), "noat");
    if (mkdir(paths[4], 0755) < 0)
        wl_fail("setup: mkdir sub: %s", strerror(errno));
    fds[4] = open(paths[4], O_RDONLY | O_DIRECTORY);
    if (fds[4] < 0)
        wl_fail("setup: open sub: %s", strerror(errno));
    setflags(fds[4], FS_IMMUTABLE_FL | getflags(fds[4]), "sub");
    for (int i = 0; i < N; i++)
        want[i] = getflags(fds[i]);
    errno = 0;
    int rw_write0 = (int)pwrite(fds[2], "x", 1, 0) < 0 ? errno : 0;

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    static const int acc[N] = {O_WRONLY, O_RDONLY, O_RDWR, O_RDWR, O_RDONLY};
    for (int i = 0; i < N; i++) {
        int f = getflags(fds[i]);
        CHECK(f == want[i], "%s: flags %#x, want %#x", names[i], f, want[i]);
        CHECK((fcntl(fds[i], F_GETFL) & O_ACCMODE) == acc[i], "%s: access mode", names[i]);
    }
    CHECK(fcntl(fds[0], F_GETFL) & O_APPEND, "app lost O_APPEND");
    CHECK(write(fds[0], "def", 3) == 3, "append: %s", strerror(errno));
    struct stat st;
    CHECK(fstat(fds[0], &st) == 0 && st.st_size == 6, "app size %ld", (long)st.st_size);
    CHECK(open(paths[0], O_WRONLY) < 0 && errno == EPERM, "app opened without O_APPEND");
    CHECK(open(paths[1], O_WRONLY) < 0 && errno == EPERM, "imm opened for writing");
    CHECK(unlink(paths[1]) < 0 && errno == EPERM, "imm unlinked");
    char sub_f[4200];
    snprintf(sub_f, sizeof sub_f, "%s/f", paths[4]);
    CHECK(open(sub_f, O_CREAT | O_WRONLY, 0600) < 0 && errno == EPERM, "created in sub");
    errno = 0;
    int rw_write1 = (int)pwrite(fds[2], "x", 1, 0) < 0 ? errno : 0;
    CHECK(rw_write1 == rw_write0, "write through imm_rw: errno %d, at setup %d", rw_write1,
          rw_write0);
    finish(1, "ok");
}
