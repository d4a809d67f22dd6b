/*
 * mem_fileprot.c - protection changes within file mappings, and a private
 * mapping of /dev/zero.
 *
 * State tested:
 *   - P: a MAP_PRIVATE, PROT_READ|PROT_WRITE mapping of a 16-page file:
 *     pages 0 and 2 rewritten (copied on write), then pages 4-7 made
 *     read-only, 8-9 PROT_NONE (page 8 rewritten before, so PROT_NONE holds
 *     data), 10-11 read+exec; the rest stays read-write.
 *   - S: a MAP_SHARED mapping of another 8-page file: page 1 written through,
 *     pages 2-3 made read-only.
 *   - Z: a 1 MiB MAP_PRIVATE mapping of /dev/zero, its first half filled, the
 *     rest untouched (zeros).
 * After restore: each page's protection (from /proc/self/maps), P's content
 * (rewritten pages kept, others the file's), S's writes in the file, Z's
 * content, and Z still shown as a mapping of /dev/zero.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096UL
#define P_PAGES 16
#define S_PAGES 8
#define Z_SIZE (1UL << 20)

static unsigned char *P, *S, *Z;

static const char *p_perm(int k)
{
    if (k >= 4 && k <= 7)
        return "r--p";
    if (k == 8 || k == 9)
        return "---p";
    if (k == 10 || k == 11)
        return "r-xp";
    return "rw-p";
}

static const char *s_perm(int k) { return k == 2 || k == 3 ? "r--s" : "rw-s"; }

static void make_file(const char *name, int pages, uint64_t seed)
{
    int fd = open(name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        wl_fail("create %s: %m", name);
    static unsigned char page[PG];
    for (int k = 0; k < pages; k++) {
        wl_fill_pattern(page, PG, seed + k);
        if (pwrite(fd, page, PG, (off_t)k * PG) != (ssize_t)PG)
            wl_fail("write %s: %m", name);
    }
    close(fd);
}

static unsigned char *map_file(const char *name, int pages, int flags)
{
    int fd = open(name, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        wl_fail("open %s: %m", name);
    void *p = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (p == MAP_FAILED)
        wl_fail("mmap %s: %m", name);
    close(fd);
    return p;
}

static char maps[1 << 18];

static void read_maps(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        wl_fail("open maps: %m");
    size_t len = 0;
    ssize_t r;
    while ((r = read(fd, maps + len, sizeof maps - 1 - len)) > 0)
        len += (size_t)r;
    close(fd);
    maps[len] = 0;
}

/* perms and path of the mapping holding addr */
static int line_of(void *addr, char perms[8], char *path, size_t cap)
{
    for (char *line = maps; *line;) {
        char *nl = strchr(line, '\n');
        unsigned long a, b, off, ino;
        char dev[16];
        int n = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &a, &b, perms, &off, dev, &ino, &n) >= 6 &&
            (uintptr_t)addr >= a && (uintptr_t)addr < b) {
            size_t l = nl ? (size_t)(nl - line) : strlen(line);
            size_t start = n > 0 ? (size_t)n : l;
            snprintf(path, cap, "%.*s", (int)(l - start), line + start);
            return 1;
        }
        if (!nl)
            break;
        line = nl + 1;
    }
    return 0;
}

static void check(void)
{
    read_maps();
    char perms[8], path[512];
    for (int k = 0; k < P_PAGES; k++) {
        WL_CHECK(line_of(P + k * PG, perms, path, sizeof path), "P page %d not mapped", k);
        WL_CHECK(strcmp(perms, p_perm(k)) == 0, "P page %d: %s, expected %s", k, perms, p_perm(k));
        WL_CHECK(strstr(path, "mem_fileprot.p") != NULL, "P page %d maps %s", k, path);
    }
    for (int k = 0; k < S_PAGES; k++) {
        WL_CHECK(line_of(S + k * PG, perms, path, sizeof path), "S page %d not mapped", k);
        WL_CHECK(strcmp(perms, s_perm(k)) == 0, "S page %d: %s, expected %s", k, perms, s_perm(k));
    }
    WL_CHECK(line_of(Z, perms, path, sizeof path), "Z not mapped");
    WL_CHECK(strcmp(path, "/dev/zero") == 0 && strcmp(perms, "rw-p") == 0,
             "Z is %s %s, expected a private mapping of /dev/zero", perms, path);
    /* contents (PROT_NONE pages made readable to look) */
    if (mprotect(P + 8 * PG, 2 * PG, PROT_READ) < 0)
        wl_fail("mprotect: %m");
    for (int k = 0; k < P_PAGES; k++) {
        uint64_t seed = k == 0 || k == 2 || k == 8 ? 0x7100 + k : 0x7000 + k;
        WL_CHECK(wl_check_pattern(P + k * PG, PG, seed), "P page %d content differs (%s)", k,
                 seed >= 0x7100 ? "rewritten" : "the file's");
    }
    for (int k = 0; k < S_PAGES; k++)
        WL_CHECK(wl_check_pattern(S + k * PG, PG, k == 1 ? 0x8100 + k : 0x8000 + k),
                 "S page %d content differs", k);
    int fd = open("mem_fileprot.s", O_RDONLY | O_CLOEXEC);
    static unsigned char page[PG];
    WL_CHECK(fd >= 0 && pread(fd, page, PG, PG) == (ssize_t)PG, "read mem_fileprot.s: %m");
    close(fd);
    WL_CHECK(wl_check_pattern(page, PG, 0x8101), "S's write is not in the file");
    WL_CHECK(wl_check_pattern(Z, Z_SIZE / 2, 0x9000), "Z's first half differs");
    for (size_t i = Z_SIZE / 2; i < Z_SIZE; i++)
        WL_CHECK(Z[i] == 0, "Z byte %zu is %d, expected 0", i, Z[i]);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    make_file("mem_fileprot.p", P_PAGES, 0x7000);
    make_file("mem_fileprot.s", S_PAGES, 0x8000);
    P = map_file("mem_fileprot.p", P_PAGES, MAP_PRIVATE);
    S = map_file("mem_fileprot.s", S_PAGES, MAP_SHARED);
    for (int k = 0; k < P_PAGES; k++)
        if (k == 0 || k == 2 || k == 8)
            wl_fill_pattern(P + k * PG, PG, 0x7100 + k);
    if (mprotect(P + 4 * PG, 4 * PG, PROT_READ) < 0 || mprotect(P + 8 * PG, 2 * PG, PROT_NONE) < 0 ||
        mprotect(P + 10 * PG, 2 * PG, PROT_READ | PROT_EXEC) < 0)
        wl_fail("mprotect P: %m");
    wl_fill_pattern(S + PG, PG, 0x8101);
    if (mprotect(S + 2 * PG, 2 * PG, PROT_READ) < 0)
        wl_fail("mprotect S: %m");
    int zfd = open("/dev/zero", O_RDWR | O_CLOEXEC);
    if (zfd < 0)
        wl_fail("open /dev/zero: %m");
    Z = mmap(NULL, Z_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, zfd, 0);
    if (Z == MAP_FAILED)
        wl_fail("mmap /dev/zero: %m");
    close(zfd);
    wl_fill_pattern(Z, Z_SIZE / 2, 0x9000);
    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);
    check();
    wl_report(1, "ok");
}
