/*
 * memfd.c - memfd files: open fd + shared mapping, and mapping-only memfds.
 *
 * State tested:
 *   - memfd A = memfd_create("wl-memfd", MFD_CLOEXEC|MFD_ALLOW_SEALING),
 *     ftruncate 1 MiB, sealed F_SEAL_SHRINK|F_SEAL_GROW, mmap MAP_SHARED,
 *     pattern written via the mapping, fd kept open with file offset 12345.
 *     Verify: same fd number still open, FD_CLOEXEC set, readlink of
 *     /proc/self/fd/N starts with "/memfd:wl-memfd", size 1 MiB, seals
 *     unchanged, offset 12345, pread equals the mapping, pwrite is visible
 *     in the mapping, a write via the mapping is visible to pread.
 *   - memfd B = memfd_create("wl-memfd2", 0), 256 KiB, mapped MAP_SHARED
 *     twice (B1, B2), then the fd is closed.  Verify: pattern intact, and
 *     a write through B1 is visible through B2 (still one shared file).
 *   - /proc/self/maps lines of A, B1, B2 identical to setup
 *     ("/memfd:... (deleted)").
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define A_SIZE (1UL << 20)
#define B_SIZE (256UL << 10)
#define A_OFFSET 12345
#define A_SEALS (F_SEAL_SHRINK | F_SEAL_GROW)

static char maps_buf[1 << 20];
static unsigned char buf[A_SIZE];

static void read_maps(void)
{
    int fd;
    do
        fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        wl_fail("open maps: %m");
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, maps_buf + len, sizeof maps_buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            wl_fail("read maps: %m");
        if (r == 0 || len + (size_t)r + 1 >= sizeof maps_buf)
            break;
        len += (size_t)r;
    }
    close(fd);
    maps_buf[len] = 0;
}

static void maps_line(const void *addr, char *out, size_t cap)
{
    out[0] = 0;
    for (char *line = maps_buf; *line;) {
        char *nl = strchr(line, '\n');
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && (unsigned long)addr >= a && (unsigned long)addr < b) {
            size_t n = nl ? (size_t)(nl - line) : strlen(line);
            if (n >= cap)
                n = cap - 1;
            memcpy(out, line, n);
            out[n] = 0;
            return;
        }
        if (!nl)
            break;
        line = nl + 1;
    }
}

static ssize_t full_pread(int fd, void *p, size_t n, off_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)p + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -1 : (ssize_t)done;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

static ssize_t full_pwrite(int fd, const void *p, size_t n, off_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(fd, (const char *)p + done, n - done, off + (off_t)done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        done += (size_t)w;
    }
    return (ssize_t)done;
}

/* A restored memfd is a new object with a new inode number: compare maps lines without it. */
static int same_map_line(const char *a, const char *b)
{
    char ra[64], pa[8], oa[32], da[16], ia[32], na[400];
    char rb[64], pb[8], ob[32], db[16], ib[32], nb[400];
    na[0] = nb[0] = 0;
    if (sscanf(a, "%63s %7s %31s %15s %31s %399[^\n]", ra, pa, oa, da, ia, na) < 5)
        return 0;
    if (sscanf(b, "%63s %7s %31s %15s %31s %399[^\n]", rb, pb, ob, db, ib, nb) < 5)
        return 0;
    return !strcmp(ra, rb) && !strcmp(pa, pb) && !strcmp(oa, ob) && !strcmp(da, db) && !strcmp(na, nb);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);

    int afd = memfd_create("wl-memfd", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (afd < 0)
        wl_fail("memfd_create: %m");
    if (ftruncate(afd, A_SIZE) < 0)
        wl_fail("ftruncate: %m");
    unsigned char *A = mmap(NULL, A_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, afd, 0);
    if (A == MAP_FAILED)
        wl_fail("mmap A: %m");
    wl_fill_pattern(A, A_SIZE, 0x3E3F);
    if (fcntl(afd, F_ADD_SEALS, A_SEALS) < 0)
        wl_fail("F_ADD_SEALS: %m");
    if (lseek(afd, A_OFFSET, SEEK_SET) != A_OFFSET)
        wl_fail("lseek: %m");

    int bfd = memfd_create("wl-memfd2", 0);
    if (bfd < 0)
        wl_fail("memfd_create 2: %m");
    if (ftruncate(bfd, B_SIZE) < 0)
        wl_fail("ftruncate 2: %m");
    unsigned char *B1 = mmap(NULL, B_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, bfd, 0);
    unsigned char *B2 = mmap(NULL, B_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, bfd, 0);
    if (B1 == MAP_FAILED || B2 == MAP_FAILED)
        wl_fail("mmap B: %m");
    close(bfd);
    wl_fill_pattern(B1, B_SIZE, 0x3E40);
    if (!wl_check_pattern(B2, B_SIZE, 0x3E40))
        wl_fail("setup: B1/B2 not shared");

    char lineA[512], lineB1[512], lineB2[512];
    read_maps();
    maps_line(A, lineA, sizeof lineA);
    maps_line(B1, lineB1, sizeof lineB1);
    maps_line(B2, lineB2, sizeof lineB2);
    if (!strstr(lineA, "/memfd:wl-memfd") || !strstr(lineB1, "/memfd:wl-memfd2") || !strstr(lineB2, "/memfd:wl-memfd2"))
        wl_fail("setup: unexpected maps lines '%s' '%s' '%s'", lineA, lineB1, lineB2);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(10);

    /* maps */
    char l[512];
    read_maps();
    maps_line(A, l, sizeof l);
    WL_CHECK(same_map_line(l, lineA), "memfd A maps line '%s', expected '%s'", l, lineA);
    maps_line(B1, l, sizeof l);
    WL_CHECK(same_map_line(l, lineB1), "memfd B1 maps line '%s', expected '%s'", l, lineB1);
    maps_line(B2, l, sizeof l);
    WL_CHECK(same_map_line(l, lineB2), "memfd B2 maps line '%s', expected '%s'", l, lineB2);

    /* fd A */
    int fdfl = fcntl(afd, F_GETFD);
    WL_CHECK(fdfl >= 0, "memfd fd %d no longer open: %m", afd);
    WL_CHECK(fdfl & FD_CLOEXEC, "memfd fd %d lost FD_CLOEXEC (flags %#x)", afd, fdfl);
    char lp[64], target[256];
    snprintf(lp, sizeof lp, "/proc/self/fd/%d", afd);
    ssize_t n = readlink(lp, target, sizeof target - 1);
    WL_CHECK(n > 0, "readlink %s: %m", lp);
    target[n] = 0;
    WL_CHECK(strncmp(target, "/memfd:wl-memfd", 15) == 0 && (target[15] == 0 || target[15] == ' '),
             "fd %d links to '%s', expected '/memfd:wl-memfd...'", afd, target);
    struct stat st;
    WL_CHECK(fstat(afd, &st) == 0, "fstat: %m");
    WL_CHECK(st.st_size == (off_t)A_SIZE, "memfd size %lld, expected %lu", (long long)st.st_size, A_SIZE);
    int seals = fcntl(afd, F_GET_SEALS);
    WL_CHECK(seals == A_SEALS, "memfd seals %#x, expected %#x", seals, A_SEALS);
    off_t pos = lseek(afd, 0, SEEK_CUR);
    WL_CHECK(pos == A_OFFSET, "memfd file offset %lld, expected %d", (long long)pos, A_OFFSET);
    int fl = fcntl(afd, F_GETFL);
    WL_CHECK((fl & O_ACCMODE) == O_RDWR, "memfd open mode %#x, expected O_RDWR", fl);

    WL_CHECK(wl_check_pattern(A, A_SIZE, 0x3E3F), "memfd A mapping pattern corrupted");
    WL_CHECK(full_pread(afd, buf, A_SIZE, 0) == (ssize_t)A_SIZE, "pread memfd: %m");
    WL_CHECK(memcmp(buf, A, A_SIZE) == 0, "memfd A: pread content differs from the mapping");
    unsigned char pg[4096];
    wl_fill_pattern(pg, sizeof pg, 0xABC);
    WL_CHECK(full_pwrite(afd, pg, sizeof pg, 8192) == (ssize_t)sizeof pg, "pwrite memfd: %m");
    WL_CHECK(memcmp(A + 8192, pg, sizeof pg) == 0, "memfd A: pwrite not visible in the mapping (mapping not shared with fd?)");
    wl_fill_pattern(A + 65536, 4096, 0xDEF);
    WL_CHECK(full_pread(afd, buf, 4096, 65536) == 4096, "pread memfd: %m");
    WL_CHECK(wl_check_pattern(buf, 4096, 0xDEF), "memfd A: write via the mapping not visible to pread");
    WL_CHECK(ftruncate(afd, A_SIZE / 2) < 0 && errno == EPERM, "memfd A: F_SEAL_SHRINK not enforced");

    /* memfd B */
    WL_CHECK(wl_check_pattern(B1, B_SIZE, 0x3E40), "memfd B1 mapping corrupted");
    WL_CHECK(wl_check_pattern(B2, B_SIZE, 0x3E40), "memfd B2 mapping corrupted");
    wl_fill_pattern(B1 + 4096, 4096, 0x3E41);
    WL_CHECK(wl_check_pattern(B2 + 4096, 4096, 0x3E41),
             "memfd B: write via B1 not visible via B2 (mappings no longer share one memfd)");

    wl_report(1, "ok");
}
