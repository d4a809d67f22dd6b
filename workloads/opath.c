/*
 * opath.c - O_PATH descriptors across checkpoint/restore.
 *
 * Kernel state tested (in CTL_DIR):
 *  - O_PATH of a regular file "target" (12 bytes), of a directory "dir" (with
 *    O_DIRECTORY, holding "dir/inner"), of a symlink "link" -> "target"
 *    itself (O_PATH|O_NOFOLLOW), of a FIFO "fifo", and O_PATH of the
 *    symlink followed (the target);
 *  - close-on-exec on one of them.
 * Verify: F_GETFL equal (O_PATH, O_NOFOLLOW, O_DIRECTORY kept), FD_CLOEXEC
 * equal; fstat gives the same type and inode as a fresh lstat/stat of the
 * path; openat through the directory fd opens "inner" and reads its content;
 * readlinkat(fd, "") on the symlink fd reads "target"; /proc/self/fd/N opens
 * the file again (reopen through the O_PATH fd) and reads its content; a
 * read() on an O_PATH fd fails with EBADF.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    int fd = open("target", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "hello target", 12) != 12)
        wl_fail("target: %s", strerror(errno));
    close(fd);
    if (mkdir("dir", 0755) < 0)
        wl_fail("mkdir: %s", strerror(errno));
    fd = open("dir/inner", O_CREAT | O_WRONLY, 0644);
    if (fd < 0 || write(fd, "inner!", 6) != 6)
        wl_fail("inner: %s", strerror(errno));
    close(fd);
    if (symlink("target", "link") < 0 || mkfifo("fifo", 0600) < 0)
        wl_fail("symlink/mkfifo: %s", strerror(errno));

    const char *names[] = {"target", "dir", "link", "fifo", "link"};
    int oflags[] = {O_PATH, O_PATH | O_DIRECTORY, O_PATH | O_NOFOLLOW, O_PATH | O_CLOEXEC, O_PATH};
    int fds[5], fl[5], fdfl[5];
    struct stat st[5];
    for (int i = 0; i < 5; i++) {
        fds[i] = open(names[i], oflags[i]);
        if (fds[i] < 0)
            wl_fail("open %s O_PATH: %s", names[i], strerror(errno));
        fl[i] = fcntl(fds[i], F_GETFL);
        fdfl[i] = fcntl(fds[i], F_GETFD);
        if (fstat(fds[i], &st[i]) < 0)
            wl_fail("fstat: %s", strerror(errno));
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    for (int i = 0; i < 5; i++) {
        struct stat now;
        WL_CHECK(fcntl(fds[i], F_GETFL) == fl[i], "%s: F_GETFL expected %#o, found %#o", names[i],
                 fl[i], fcntl(fds[i], F_GETFL));
        WL_CHECK(fcntl(fds[i], F_GETFD) == fdfl[i], "%s: F_GETFD expected %d, found %d", names[i],
                 fdfl[i], fcntl(fds[i], F_GETFD));
        WL_CHECK(fstat(fds[i], &now) == 0, "%s: fstat: %s", names[i], strerror(errno));
        struct stat path;
        int r = (oflags[i] & O_NOFOLLOW) ? lstat(names[i], &path) : stat(names[i], &path);
        WL_CHECK(r == 0, "stat %s", names[i]);
        WL_CHECK((now.st_mode & S_IFMT) == (st[i].st_mode & S_IFMT), "%s: type %#o, expected %#o",
                 names[i], now.st_mode & S_IFMT, st[i].st_mode & S_IFMT);
        WL_CHECK(now.st_ino == path.st_ino && now.st_dev == path.st_dev,
                 "%s: the fd is not on the object the path names", names[i]);
    }
    char buf[32] = {0};
    WL_CHECK(read(fds[0], buf, 1) < 0 && errno == EBADF, "read on O_PATH: expected EBADF");
    int in = openat(fds[1], "inner", O_RDONLY);
    WL_CHECK(in >= 0, "openat(dir fd, inner): %s", strerror(errno));
    WL_CHECK(read(in, buf, sizeof buf) == 6 && memcmp(buf, "inner!", 6) == 0, "inner content");
    memset(buf, 0, sizeof buf);
    WL_CHECK(readlinkat(fds[2], "", buf, sizeof buf) == 6 && strcmp(buf, "target") == 0,
             "readlinkat(symlink fd, \"\"): found \"%s\"", buf);
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fds[4]);
    int re = open(p, O_RDONLY);
    memset(buf, 0, sizeof buf);
    WL_CHECK(re >= 0 && read(re, buf, sizeof buf) == 12 && memcmp(buf, "hello target", 12) == 0,
             "reopen through /proc/self/fd of the followed link: %s", buf);
    wl_report(1, "ok");
}
