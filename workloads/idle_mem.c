/*
 * idle_mem.c - an idle service holding data: the case the workload chunk store is for.
 *
 * State tested:
 *   - 48 MiB of incompressible data (xorshift) in a private anonymous mapping, written once
 *     at setup and never again; its FNV-1a hash recorded;
 *   - a counter in a small static page, incremented every 10 ms while idle (the only memory
 *     that changes between two images, with the stack of the sleep loop).
 * Verify: the data hashes as at setup and the counter advanced.
 */
#define _GNU_SOURCE
#include "common.h"

#include <stdint.h>
#include <sys/mman.h>

#define DATA_SIZE (48UL << 20)

static volatile unsigned long ticks;

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    uint64_t *data = mmap(NULL, DATA_SIZE, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data == MAP_FAILED)
        wl_fail("mmap %lu bytes: %m", DATA_SIZE);
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < DATA_SIZE / sizeof *data; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data[i] = x;
    }
    uint64_t want = wl_hash(data, DATA_SIZE);
    wl_ready();
    while (!wl_verify_requested()) {
        ticks++;
        wl_sleep_ms(10);
    }
    uint64_t got = wl_hash(data, DATA_SIZE);
    WL_CHECK(got == want, "data hash %016llx, expected %016llx",
             (unsigned long long)got, (unsigned long long)want);
    WL_CHECK(ticks > 0, "the idle loop never ran");
    wl_report(1, "ok");
}
