/*
 * ghost.c - files deleted while open ("ghost" files) across checkpoint/restore.
 *
 * Kernel state tested (one process):
 *  - CTL_DIR/ghost_sparse: 10 MiB + 123 bytes, O_RDWR, offset 777, with data
 *    extents [0, 8 KiB) and [1 MiB, 1 MiB + 12 KiB) (patterns), an extent of
 *    written zeros [4 MiB, 4 MiB + 4 KiB), and a tail [10 MiB, end); holes
 *    elsewhere; owner 1234:5678, mode 0640, atime 1000000000.123456789 and
 *    mtime 1200000000.5 (set with utimensat), then unlinked;
 *  - CTL_DIR/ghost_fifo: a FIFO (mode 0620, owner 4321:8765) opened read
 *    (O_RDONLY|O_NONBLOCK) and write (O_WRONLY), 12 bytes buffered, then
 *    unlinked;
 *  - CTL_DIR/gone_sub/inner: "inner-data", O_RDWR, unlinked, and its
 *    directory removed too.
 * Verify: the sparse file's data/hole map (SEEK_DATA/SEEK_HOLE from 0 to the
 * end) is the one recorded at setup, its size, owner, mode, nlink 0, atime
 * and mtime (ns) are the same, its content is the patterns (zeros in the
 * holes and the zero extent), offset 777, /proc/self/fd shows the same
 * "... (deleted)" path, and it is still writable.  The FIFO: both fds are
 * the same inode (nlink 0, mode 0620, owner), O_NONBLOCK kept on the read
 * end, the 12 buffered bytes read back, then EAGAIN, and a new write is read.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIB (1024L * 1024)
#define SPARSE_SZ (10 * MIB + 123)
#define ATIME_S 1000000000L
#define ATIME_NS 123456789L
#define MTIME_S 1200000000L
#define MTIME_NS 500000000L

struct ext {
    long off, len;
    uint64_t seed; /* 0: zeros */
};

static const struct ext exts[] = {
    {0, 8192, 11},
    {MIB, 12288, 12},
    {4 * MIB, 4096, 0},
    {10 * MIB, 123, 13},
};
#define NEXT (int)(sizeof exts / sizeof exts[0])

static void pwrite_all(int fd, const void *b, size_t n, off_t off)
{
    if (pwrite(fd, b, n, off) != (ssize_t)n)
        wl_fail("setup: pwrite at %ld: %s", (long)off, strerror(errno));
}

/* "D start end;" / "H start end;" for the whole file */
static void extent_map(int fd, long size, char *out, size_t n)
{
    size_t o = 0;
    long pos = 0;
    out[0] = 0;
    while (pos < size && o < n - 64) {
        off_t d = lseek(fd, pos, SEEK_DATA);
        if (d < 0) {
            o += snprintf(out + o, n - o, "H %ld %ld;", pos, size);
            break;
        }
        if (d > pos)
            o += snprintf(out + o, n - o, "H %ld %ld;", pos, (long)d);
        off_t h = lseek(fd, d, SEEK_HOLE);
        o += snprintf(out + o, n - o, "D %ld %ld;", (long)d, (long)h);
        pos = h;
    }
}

static char *proc_link(int fd)
{
    static char buf[2][4096];
    static int k;
    char p[64];
    char *b = buf[k++ & 1];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t r = readlink(p, b, 4095);
    b[r < 0 ? 0 : r] = 0;
    return b;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    char path[4096], fpath[4096];
    snprintf(path, sizeof path, "%s/ghost_sparse", wl_ctl_dir());
    snprintf(fpath, sizeof fpath, "%s/ghost_fifo", wl_ctl_dir());

    /* sparse ghost file */
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        wl_fail("setup: open %s: %s", path, strerror(errno));
    if (ftruncate(fd, SPARSE_SZ) < 0)
        wl_fail("setup: ftruncate: %s", strerror(errno));
    for (int i = 0; i < NEXT; i++) {
        char *b = calloc(1, exts[i].len);
        if (exts[i].seed)
            wl_fill_pattern(b, exts[i].len, exts[i].seed);
        pwrite_all(fd, b, exts[i].len, exts[i].off);
        free(b);
    }
    fsync(fd);
    if (fchown(fd, 1234, 5678) < 0 || fchmod(fd, 0640) < 0)
        wl_fail("setup: chown/chmod: %s", strerror(errno));
    struct timespec ts[2] = {{ATIME_S, ATIME_NS}, {MTIME_S, MTIME_NS}};
    if (futimens(fd, ts) < 0)
        wl_fail("setup: futimens: %s", strerror(errno));
    if (unlink(path) < 0)
        wl_fail("setup: unlink: %s", strerror(errno));
    char map0[2048], link0[4096];
    extent_map(fd, SPARSE_SZ, map0, sizeof map0);
    if (lseek(fd, 777, SEEK_SET) != 777)
        wl_fail("setup: lseek");
    snprintf(link0, sizeof link0, "%s", proc_link(fd));
    if (!strstr(link0, "(deleted)"))
        wl_fail("setup: link %s", link0);

    /* deleted FIFO */
    if (mkfifo(fpath, 0600) < 0)
        wl_fail("setup: mkfifo: %s", strerror(errno));
    int fr = open(fpath, O_RDONLY | O_NONBLOCK);
    int fw = open(fpath, O_WRONLY);
    if (fr < 0 || fw < 0)
        wl_fail("setup: open fifo: %s", strerror(errno));
    if (fchown(fw, 4321, 8765) < 0 || fchmod(fw, 0620) < 0)
        wl_fail("setup: fifo chown/chmod: %s", strerror(errno));
    if (write(fw, "fifo-data-17", 12) != 12)
        wl_fail("setup: fifo write");
    if (unlink(fpath) < 0)
        wl_fail("setup: unlink fifo: %s", strerror(errno));
    char flink0[4096];
    snprintf(flink0, sizeof flink0, "%s", proc_link(fr));

    /* deleted file in a removed directory */
    char sub[4096], inner[4200];
    snprintf(sub, sizeof sub, "%s/gone_sub", wl_ctl_dir());
    snprintf(inner, sizeof inner, "%s/inner", sub);
    if (mkdir(sub, 0755) < 0)
        wl_fail("setup: mkdir %s: %s", sub, strerror(errno));
    int fi = open(inner, O_RDWR | O_CREAT, 0644);
    if (fi < 0 || write(fi, "inner-data", 10) != 10 || unlink(inner) < 0 || rmdir(sub) < 0)
        wl_fail("setup: %s: %s", inner, strerror(errno));
    char ilink0[4096];
    snprintf(ilink0, sizeof ilink0, "%s", proc_link(fi));

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    /* sparse file: attributes first (reading would touch atime) */
    struct stat st;
    WL_CHECK(fstat(fd, &st) == 0, "fstat: %s", strerror(errno));
    WL_CHECK(S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0640, "mode %o", st.st_mode);
    WL_CHECK(st.st_uid == 1234 && st.st_gid == 5678, "owner %d:%d", st.st_uid, st.st_gid);
    WL_CHECK(st.st_nlink == 0, "nlink %ld", (long)st.st_nlink);
    WL_CHECK(st.st_size == SPARSE_SZ, "size %ld", (long)st.st_size);
    WL_CHECK(st.st_atim.tv_sec == ATIME_S && st.st_atim.tv_nsec == ATIME_NS,
             "atime %ld.%09ld", (long)st.st_atim.tv_sec, st.st_atim.tv_nsec);
    WL_CHECK(st.st_mtim.tv_sec == MTIME_S && st.st_mtim.tv_nsec == MTIME_NS,
             "mtime %ld.%09ld", (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    WL_CHECK(lseek(fd, 0, SEEK_CUR) == 777, "offset %ld", (long)lseek(fd, 0, SEEK_CUR));
    char map1[2048];
    extent_map(fd, SPARSE_SZ, map1, sizeof map1);
    WL_CHECK(strcmp(map0, map1) == 0, "extents were %s, now %s", map0, map1);
    WL_CHECK(strcmp(link0, proc_link(fd)) == 0, "link was %s, now %s", link0, proc_link(fd));
    lseek(fd, 777, SEEK_SET);
    char *all = malloc(SPARSE_SZ), *want = calloc(1, SPARSE_SZ);
    for (int i = 0; i < NEXT; i++)
        if (exts[i].seed)
            wl_fill_pattern(want + exts[i].off, exts[i].len, exts[i].seed);
    WL_CHECK(pread(fd, all, SPARSE_SZ, 0) == SPARSE_SZ, "pread: %s", strerror(errno));
    for (long i = 0; i < SPARSE_SZ; i++)
        WL_CHECK(all[i] == want[i], "byte %ld is %d, want %d", i, all[i], want[i]);
    WL_CHECK(write(fd, "new", 3) == 3, "write: %s", strerror(errno));
    WL_CHECK(pread(fd, all, 3, 777) == 3 && memcmp(all, "new", 3) == 0, "read back");

    /* file in a removed directory */
    WL_CHECK(strcmp(ilink0, proc_link(fi)) == 0, "inner link was %s, now %s", ilink0,
             proc_link(fi));
    char ib[16] = {0};
    WL_CHECK(pread(fi, ib, 10, 0) == 10 && memcmp(ib, "inner-data", 10) == 0, "inner reads '%s'",
             ib);
    WL_CHECK(lseek(fi, 0, SEEK_CUR) == 10, "inner offset %ld", (long)lseek(fi, 0, SEEK_CUR));
    WL_CHECK(access(sub, F_OK) < 0 && errno == ENOENT, "%s exists again", sub);

    /* FIFO */
    struct stat sr, sw;
    WL_CHECK(fstat(fr, &sr) == 0 && fstat(fw, &sw) == 0, "fstat fifo");
    WL_CHECK(S_ISFIFO(sr.st_mode) && (sr.st_mode & 07777) == 0620, "fifo mode %o", sr.st_mode);
    WL_CHECK(sr.st_uid == 4321 && sr.st_gid == 8765, "fifo owner %d:%d", sr.st_uid, sr.st_gid);
    WL_CHECK(sr.st_ino == sw.st_ino && sr.st_dev == sw.st_dev, "fifo ends on different inodes");
    WL_CHECK(sr.st_nlink == 0, "fifo nlink %ld", (long)sr.st_nlink);
    WL_CHECK(strcmp(flink0, proc_link(fr)) == 0, "fifo link was %s, now %s", flink0,
             proc_link(fr));
    WL_CHECK(fcntl(fr, F_GETFL) & O_NONBLOCK, "read end lost O_NONBLOCK");
    char b[64];
    ssize_t n = read(fr, b, sizeof b);
    WL_CHECK(n == 12 && memcmp(b, "fifo-data-17", 12) == 0, "fifo read %zd", n);
    WL_CHECK(read(fr, b, sizeof b) < 0 && errno == EAGAIN, "fifo not empty");
    WL_CHECK(write(fw, "again", 5) == 5, "fifo write: %s", strerror(errno));
    WL_CHECK(read(fr, b, sizeof b) == 5 && memcmp(b, "again", 5) == 0, "fifo read new");
    wl_report(1, "ok");
}
