/*
 * mem_deleted.c - private mappings of files that are gone from their path.
 *
 * State tested:
 *   - A: a 16-page file mapped MAP_PRIVATE read-write, pages 1 and 3
 *     rewritten (copied on write), pages 5-6 made read-only, then the file is
 *     unlinked (no fd kept).
 *   - B: an 8-page file mapped privately twice, like a shared library whose
 *     file was replaced: pages 0-3 read+exec, pages 4-7 read-only; unlinked.
 *   - M: a memfd mapped MAP_PRIVATE, one page rewritten, the memfd closed.
 *   - a child forked after all this (its copy-on-write pages of A shared with
 *     the parent until it rewrites page 3 with its own data).
 * After restore every process checks contents (rewritten pages kept, others
 * the file's), protections, that the mappings still show "PATH (deleted)"
 * (and "/memfd:NAME (deleted)"), that B's two mappings are of one file
 * (same inode), and that nothing exists at the paths again.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096UL
#define A_PAGES 16
#define B_PAGES 8
#define M_PAGES 4

static unsigned char *A, *B, *M;
static int is_child;

static void make_file(const char *name, int pages, uint64_t seed)
{
    int fd = open(name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
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

static char maps[1 << 18];

struct line {
    char perms[8];
    unsigned long ino;
    char path[PATH_MAX];
};

static int line_of(const void *addr, struct line *out)
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
    for (char *l = maps; *l;) {
        char *nl = strchr(l, '\n');
        if (nl)
            *nl = 0;
        unsigned long a, b, off;
        char dev[16];
        int n = 0;
        if (sscanf(l, "%lx-%lx %7s %lx %15s %lu %n", &a, &b, out->perms, &off, dev, &out->ino,
                   &n) >= 6 &&
            (uintptr_t)addr >= a && (uintptr_t)addr < b) {
            snprintf(out->path, sizeof out->path, "%s", n > 0 ? l + n : "");
            return 1;
        }
        if (!nl)
            break;
        l = nl + 1;
    }
    return 0;
}

static uint64_t a_seed(int k)
{
    if (is_child && k == 3)
        return 0x3300 + k;
    return k == 1 || k == 3 ? 0x3100 + k : 0x3000 + k;
}

static void check(void)
{
    const char *who = is_child ? "child" : "parent";
    char want[PATH_MAX + 16];
    struct line l;
    struct stat st;
    for (int k = 0; k < A_PAGES; k++) {
        WL_CHECK(wl_check_pattern(A + k * PG, PG, a_seed(k)), "%s: A page %d differs", who, k);
        WL_CHECK(line_of(A + k * PG, &l), "%s: A page %d not mapped", who, k);
        const char *perm = k == 5 || k == 6 ? "r--p" : "rw-p";
        WL_CHECK(strcmp(l.perms, perm) == 0, "%s: A page %d is %s, expected %s", who, k, l.perms,
                 perm);
        snprintf(want, sizeof want, "%s/mem_deleted.a (deleted)", wl_ctl_dir());
        WL_CHECK(strcmp(l.path, want) == 0, "%s: A maps [%s], expected [%s]", who, l.path, want);
    }
    unsigned long ino = 0;
    for (int k = 0; k < B_PAGES; k++) {
        WL_CHECK(wl_check_pattern(B + k * PG, PG, 0x4000 + k), "%s: B page %d differs", who, k);
        WL_CHECK(line_of(B + k * PG, &l), "%s: B page %d not mapped", who, k);
        const char *perm = k < 4 ? "r-xp" : "r--p";
        WL_CHECK(strcmp(l.perms, perm) == 0, "%s: B page %d is %s, expected %s", who, k, l.perms,
                 perm);
        snprintf(want, sizeof want, "%s/mem_deleted.b (deleted)", wl_ctl_dir());
        WL_CHECK(strcmp(l.path, want) == 0, "%s: B maps [%s], expected [%s]", who, l.path, want);
        WL_CHECK(ino == 0 || l.ino == ino, "%s: B's mappings are of two files (inodes %lu, %lu)",
                 who, ino, l.ino);
        ino = l.ino;
    }
    for (int k = 0; k < M_PAGES; k++)
        WL_CHECK(wl_check_pattern(M + k * PG, PG, k == 2 ? 0x5100 + k : 0x5000 + k),
                 "%s: M page %d differs", who, k);
    WL_CHECK(line_of(M, &l) && strcmp(l.path, "/memfd:cow-private (deleted)") == 0 &&
                 strcmp(l.perms, "rw-p") == 0,
             "%s: M is %s [%s], expected a private mapping of /memfd:cow-private (deleted)", who,
             l.perms, l.path);
    WL_CHECK(stat("mem_deleted.a", &st) < 0 && errno == ENOENT, "%s: mem_deleted.a exists again",
             who);
    WL_CHECK(stat("mem_deleted.b", &st) < 0 && errno == ENOENT, "%s: mem_deleted.b exists again",
             who);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    make_file("mem_deleted.a", A_PAGES, 0x3000);
    make_file("mem_deleted.b", B_PAGES, 0x4000);
    int fd = open("mem_deleted.a", O_RDONLY | O_CLOEXEC);
    A = mmap(NULL, A_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (fd < 0 || A == MAP_FAILED)
        wl_fail("map mem_deleted.a: %m");
    close(fd);
    wl_fill_pattern(A + 1 * PG, PG, 0x3101);
    wl_fill_pattern(A + 3 * PG, PG, 0x3103);
    if (mprotect(A + 5 * PG, 2 * PG, PROT_READ) < 0)
        wl_fail("mprotect: %m");
    fd = open("mem_deleted.b", O_RDONLY | O_CLOEXEC);
    B = mmap(NULL, B_PAGES * PG, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
    if (fd < 0 || B == MAP_FAILED)
        wl_fail("map mem_deleted.b: %m");
    if (mmap(B + 4 * PG, 4 * PG, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 4 * PG) == MAP_FAILED)
        wl_fail("map mem_deleted.b again: %m");
    close(fd);
    if (unlink("mem_deleted.a") < 0 || unlink("mem_deleted.b") < 0)
        wl_fail("unlink: %m");
    int mfd = memfd_create("cow-private", MFD_CLOEXEC);
    static unsigned char page[PG];
    for (int k = 0; k < M_PAGES; k++) {
        wl_fill_pattern(page, PG, 0x5000 + k);
        if (mfd < 0 || pwrite(mfd, page, PG, (off_t)k * PG) != (ssize_t)PG)
            wl_fail("memfd: %m");
    }
    M = mmap(NULL, M_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd, 0);
    if (M == MAP_FAILED)
        wl_fail("map memfd: %m");
    close(mfd);
    wl_fill_pattern(M + 2 * PG, PG, 0x5102);

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        wl_fail("pipe: %m");
    pid_t c = fork();
    if (c < 0)
        wl_fail("fork: %m");
    if (c == 0) {
        is_child = 1;
        close(pfd[0]);
        wl_fill_pattern(A + 3 * PG, PG, 0x3303);
        if (write(pfd[1], "x", 1) != 1)
            _exit(3);
        close(pfd[1]);
        while (!wl_verify_requested())
            wl_sleep_ms(20);
        check();
        wl_report(1, "ok");
    }
    close(pfd[1]);
    char x;
    if (read(pfd[0], &x, 1) != 1)
        wl_fail("the child died during its setup");
    close(pfd[0]);
    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);
    check();
    int st;
    WL_CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "the child failed (status %#x)", st);
    wl_report(1, "ok");
}
