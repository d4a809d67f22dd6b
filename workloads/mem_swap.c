/*
 * mem_swap.c - anonymous memory that is in swap when the checkpoint happens.
 *
 * Needs swap space (the test `host_swapfile_*` in tests/programs.rs adds a swapfile).
 *
 * Kernel state tested:
 *  - a 64 MiB private anonymous region filled with a pattern, then pushed out with
 *    madvise(MADV_PAGEOUT): its pages are swap entries (pagemap bit 62), not present;
 *  - an 8 MiB MAP_SHARED anonymous region (shmem: swapped pages live in the shmem object's
 *    page cache as swap entries, dumped through map_files + SEEK_DATA) pushed out the same way;
 *  - a 4 MiB private region of which only the odd 4 KiB pages are pushed out (swapped and
 *    present pages interleaved in one mapping).
 * Before wl_ready() the workload confirms through /proc/self/smaps that each region shows
 * Swap: > 0 (the private regions: at least half of what was paged out), and prints the figures.
 * The regions are not touched until verify, which checks every byte against its pattern.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

#define BIG_SZ (64u << 20)
#define SHM_SZ (8u << 20)
#define MIX_SZ (4u << 20)
#define PG 4096u

/* Swap: (kB) of the smaps entry containing addr; -1 if not found. */
static long smaps_swap_kb(const void *addr)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        wl_fail("setup: open /proc/self/smaps: %s", strerror(errno));
    char line[512];
    int in = 0;
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = (unsigned long)addr >= s && (unsigned long)addr < e;
            continue;
        }
        long v;
        if (in && sscanf(line, "Swap: %ld kB", &v) == 1) {
            kb = v;
            break;
        }
    }
    fclose(f);
    return kb;
}

static void page_out(void *p, size_t n, const char *what)
{
    if (madvise(p, n, MADV_PAGEOUT) != 0)
        wl_fail("setup: madvise(MADV_PAGEOUT) on %s: %s", what, strerror(errno));
}

/* Page out [p, p + n) (every `stride` bytes, `chunk` bytes at a time) until smaps shows at
 * least min_kb of swap for the region holding p (tries for ~2 s). */
static long push_out(unsigned char *p, size_t n, size_t chunk, size_t stride, long min_kb,
                     const char *what)
{
    long kb = 0;
    for (int i = 0; i < 20; i++) {
        for (size_t off = 0; off < n; off += stride)
            page_out(p + off, chunk, what);
        kb = smaps_swap_kb(p);
        if (kb >= min_kb)
            return kb;
        wl_sleep_ms(100);
    }
    wl_fail("setup: %s: smaps shows Swap: %ld kB after MADV_PAGEOUT, expected >= %ld kB "
            "(is swap enabled? see swapon --show)",
            what, kb, min_kb);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    unsigned char *big = mmap(NULL, BIG_SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *shm = mmap(NULL, SHM_SZ, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    unsigned char *mix = mmap(NULL, MIX_SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (big == MAP_FAILED || shm == MAP_FAILED || mix == MAP_FAILED)
        wl_fail("setup: mmap: %s", strerror(errno));
    /* keep the kernel from merging the regions with neighbours or each other */
    madvise(big, BIG_SZ, MADV_NOHUGEPAGE);
    madvise(mix, MIX_SZ, MADV_NOHUGEPAGE);
    wl_fill_pattern(big, BIG_SZ, 0x5A5A0001);
    wl_fill_pattern(shm, SHM_SZ, 0x5A5A0002);
    wl_fill_pattern(mix, MIX_SZ, 0x5A5A0003);

    long big_kb = push_out(big, BIG_SZ, BIG_SZ, BIG_SZ, (long)(BIG_SZ / 1024 / 2),
                           "64 MiB private region");
    long shm_kb = push_out(shm, SHM_SZ, SHM_SZ, SHM_SZ, 1, "8 MiB shared region");
    long mix_kb = push_out(mix + PG, MIX_SZ - PG, PG, 2 * PG, (long)(MIX_SZ / 1024 / 4),
                           "odd pages of the 4 MiB region");
    dprintf(1, "mem_swap: info: Swap: private %ld kB, shared %ld kB, mixed %ld kB (big at %p)\n",
            big_kb, shm_kb, mix_kb, (void *)big);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(10);

    dprintf(1, "mem_swap: info: at verify Swap: private %ld kB, shared %ld kB, mixed %ld kB\n",
            smaps_swap_kb(big), smaps_swap_kb(shm), smaps_swap_kb(mix));
    WL_CHECK(wl_check_pattern(big, BIG_SZ, 0x5A5A0001), "64 MiB private region: pattern differs");
    WL_CHECK(wl_check_pattern(shm, SHM_SZ, 0x5A5A0002), "8 MiB shared region: pattern differs");
    WL_CHECK(wl_check_pattern(mix, MIX_SZ, 0x5A5A0003), "4 MiB mixed region: pattern differs");
    wl_report(1, "ok");
}
