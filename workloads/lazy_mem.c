/*
 * lazy_mem.c - a large private anonymous region, for lazy restore.
 *
 * Usage: lazy_mem CTL_DIR [--mib N]
 *
 * State tested:
 *   - a private anonymous region of N MiB (default 64): page p holds the
 *     pattern of seed p, except every 7th page (never touched: zero) and
 *     every 13th page (written, then dropped with MADV_DONTNEED: zero);
 *     CTL_DIR/region holds its address and page count;
 *   - a 64-page scratch region with the pattern of seed 1000 + p.
 * Verify (in this order, so that the first access to most pages after a lazy
 * restore is the kernel's or a child's):
 *   1. a forked child checks every page directly, from the last one down, and
 *      exits 0 or 1 (its own mm: the pages still to be placed in the parent
 *      are still to be placed in the child);
 *   2. meanwhile the kernel reads the whole region, from the top down:
 *      pwrite(2) of it to a memfd, then every page read back with pread(2)
 *      and compared with what it must hold;
 *   3. the process itself checks every page (after the child's verdict);
 *   4. scratch: pages 0-15 dropped with MADV_DONTNEED
 *      must read zero; pages 16-31 moved with mremap must hold their
 *      pattern at the new address; the rest must hold theirs.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define SCRATCH 64

static unsigned char *region;
static size_t npages;
static unsigned char *scratch;

static int is_zero_page(size_t p)
{
    return p % 7 == 0 || p % 13 == 0;
}

static int page_ok(const unsigned char *at, size_t p)
{
    if (is_zero_page(p)) {
        for (size_t i = 0; i < PAGE; i++)
            if (at[i])
                return 0;
        return 1;
    }
    return wl_check_pattern(at, PAGE, p);
}

/* First bad page of the region as seen at `base` (-1: none); from the last page down with
 * `down` (a lazy restore's prefetch goes up: the pages met first are still to be placed). */
static long first_bad(const unsigned char *base, int down)
{
    for (size_t i = 0; i < npages; i++) {
        size_t p = down ? npages - 1 - i : i;
        if (!page_ok(base + p * PAGE, p))
            return (long)p;
    }
    return -1;
}

static void check_kernel_reads(void)
{
    int fd = memfd_create("lazy_mem", MFD_CLOEXEC);
    WL_CHECK(fd >= 0, "memfd_create: %m");
    /* From the top down, 64 pages at a time. */
    size_t len = npages * PAGE, step = 64 * PAGE;
    for (size_t end = len; end > 0;) {
        size_t start = end > step ? end - step : 0;
        size_t done = 0;
        while (done < end - start) {
            ssize_t n = pwrite(fd, region + start + done, end - start - done, (off_t)(start + done));
            WL_CHECK(n > 0, "pwrite(2) from the region at %zu: %m", start + done);
            done += (size_t)n;
        }
        end = start;
    }
    unsigned char *page = malloc(PAGE);
    for (size_t p = 0; p < npages; p++) {
        WL_CHECK(pread(fd, page, PAGE, (off_t)(p * PAGE)) == (ssize_t)PAGE, "pread: %m");
        WL_CHECK(page_ok(page, p), "page %zu as the kernel read it (write(2)) is wrong", p);
    }
    free(page);
    close(fd);
}

static pid_t start_child_check(void)
{
    pid_t c = fork();
    WL_CHECK(c >= 0, "fork: %m");
    if (c == 0) {
        long bad = first_bad(region, 1);
        if (bad >= 0)
            wl_fail("child: page %ld of the region is wrong", bad);
        wl_report(1, "child ok");
    }
    return c;
}

static void wait_child_check(pid_t c)
{
    int st = 0;
    WL_CHECK(waitpid(c, &st, 0) == c, "waitpid: %m");
    WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the forked child found a wrong page (status %#x)", st);
}

static void check_scratch(void)
{
    madvise(scratch, 16 * PAGE, MADV_DONTNEED);
    for (size_t i = 0; i < 16 * PAGE; i++)
        WL_CHECK(scratch[i] == 0, "scratch page %zu not zero after MADV_DONTNEED", i / PAGE);
    void *to = mmap(NULL, 16 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    WL_CHECK(to != MAP_FAILED, "mmap: %m");
    unsigned char *moved = mremap(scratch + 16 * PAGE, 16 * PAGE, 16 * PAGE,
                                  MREMAP_MAYMOVE | MREMAP_FIXED, to);
    WL_CHECK(moved != MAP_FAILED, "mremap: %m");
    for (size_t p = 0; p < 16; p++)
        WL_CHECK(wl_check_pattern(moved + p * PAGE, PAGE, 1016 + p),
                 "scratch page %zu wrong after mremap", 16 + p);
    for (size_t p = 32; p < SCRATCH; p++)
        WL_CHECK(wl_check_pattern(scratch + p * PAGE, PAGE, 1000 + p), "scratch page %zu wrong", p);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    size_t mib = 64;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--mib") && i + 1 < argc)
            mib = strtoul(argv[++i], NULL, 10);
    npages = mib * (1 << 20) / PAGE;
    region = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    WL_CHECK(region != MAP_FAILED, "mmap: %m");
    madvise(region, npages * PAGE, MADV_NOHUGEPAGE);
    for (size_t p = 0; p < npages; p++)
        if (p % 7 != 0)
            wl_fill_pattern(region + p * PAGE, PAGE, p);
    for (size_t p = 0; p < npages; p += 13)
        madvise(region + p * PAGE, PAGE, MADV_DONTNEED);
    scratch = mmap(NULL, SCRATCH * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    WL_CHECK(scratch != MAP_FAILED, "mmap: %m");
    for (size_t p = 0; p < SCRATCH; p++)
        wl_fill_pattern(scratch + p * PAGE, PAGE, 1000 + p);
    FILE *f = fopen("region", "w");
    WL_CHECK(f != NULL, "fopen region: %m");
    fprintf(f, "%p %zu\n", (void *)region, npages);
    fclose(f);
    wl_ready();
    for (;;) {
        if (wl_verify_requested()) {
            pid_t c = start_child_check();
            check_kernel_reads();
            wait_child_check(c);
            long bad = first_bad(region, 0);
            WL_CHECK(bad < 0, "page %ld of the region is wrong", bad);
            check_scratch();
            wl_report(1, "ok");
        }
        wl_sleep_ms(20);
    }
}
