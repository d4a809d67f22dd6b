/*
 * mt_load.c - 8 busy threads with large, constantly changing memory across
 * checkpoint/restore.
 *
 * Kernel state tested:
 *  - memory of a multi-threaded process being dirtied at full speed while it
 *    is frozen/dumped (8 x 16 MiB heap buffers, per-thread bookkeeping);
 *  - register state of running threads (general purpose + SSE: each thread
 *    carries a floating point recurrence and an LCG in registers, which are
 *    replayed bit-exactly at verify);
 *  - atomics shared by all threads (global counter == sum of per-thread
 *    iteration counts).
 * Each iteration a thread picks a 4 KiB block (LCG), bumps its generation
 * and adds (word-wise, mod 2^64) a pattern derived from (thread, block,
 * generation) to the block - a read-modify-write, so a corrupted word stays
 * corrupted.  Per block it maintains, from the pattern alone, the sum and the
 * position-weighted sum of the block's words; plus a running total of all
 * block sums, its own and the global iteration counter, the LCG and a fp
 * recurrence.  On verify every thread stops at an iteration boundary and
 * checks each block's two checksums against its words, the running total,
 * sum of generations == iterations, and a replay of the LCG / fp recurrence
 * / generations.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define NTHREADS 8
#define BUF_SZ (16u << 20)
#define BLK 4096u
#define NBLK (BUF_SZ / BLK)

#define NW (BLK / 8)

struct tstate {
    int idx;
    unsigned char *buf;
    uint64_t lcg;
    double fp;
    uint64_t total; /* running sum of sum[] (mod 2^64) */
    uint64_t iters;
    int done, ok;
    char err[300];
    uint32_t gen[NBLK];
    uint64_t sum[NBLK];  /* sum of the block's words */
    uint64_t wsum[NBLK]; /* sum of (k+1) * word k */
    uint32_t regen[NBLK]; /* scratch for the replay */
    uint64_t pat[NW];     /* scratch pattern */
};

static struct tstate *ts[NTHREADS];
static atomic_uint_fast64_t global_count;
static atomic_int stop, started;

static uint64_t seed_of(int t, uint32_t blk, uint32_t gen)
{
    return ((uint64_t)(t + 1) << 48) ^ ((uint64_t)blk << 20) ^ ((uint64_t)gen * 0x9E3779B97F4A7C15ULL);
}

static uint64_t lcg_init(int t)
{
    return 0x243F6A8885A308D3ULL + (uint64_t)t * 0x13198A2E03707344ULL;
}

static inline uint64_t lcg_next(uint64_t x)
{
    return x * 6364136223846793005ULL + 1442695040888963407ULL;
}

static inline uint32_t blk_of(uint64_t lcg)
{
    return (uint32_t)((lcg >> 33) % NBLK);
}

__attribute__((noinline)) static double fstep(double x, uint32_t b)
{
    x = x * 0.9999997 + (double)(b & 0xff) * 1.25e-3;
    x += 1.0 / (x + 3.0);
    return x;
}

static void block_sums(const uint64_t *w, uint64_t *sum, uint64_t *wsum)
{
    uint64_t a = 0, b = 0;
    for (uint64_t k = 0; k < NW; k++) {
        a += w[k];
        b += (k + 1) * w[k];
    }
    *sum = a;
    *wsum = b;
}

static void *worker(void *arg)
{
    struct tstate *s = arg;
    int t = s->idx;
    for (uint32_t i = 0; i < NBLK; i++) {
        uint64_t *w = (uint64_t *)(s->buf + (size_t)i * BLK);
        wl_fill_pattern(w, BLK, seed_of(t, i, 0));
        block_sums(w, &s->sum[i], &s->wsum[i]);
        s->total += s->sum[i];
    }
    s->lcg = lcg_init(t);
    s->fp = 1.0 + t;
    atomic_fetch_add(&started, 1);

    /* keep the hot state in locals (registers) */
    uint64_t lcg = s->lcg, total = s->total, iters = s->iters;
    double fp = s->fp;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        lcg = lcg_next(lcg);
        uint32_t i = blk_of(lcg);
        uint64_t *w = (uint64_t *)(s->buf + (size_t)i * BLK);
        uint32_t g = ++s->gen[i];
        wl_fill_pattern(s->pat, BLK, seed_of(t, i, g));
        uint64_t a = 0, b = 0;
        for (uint64_t k = 0; k < NW; k++) {
            uint64_t p = s->pat[k];
            w[k] += p;
            a += p;
            b += (k + 1) * p;
        }
        s->sum[i] += a;
        s->wsum[i] += b;
        total += a;
        fp = fstep(fp, i);
        iters++;
        atomic_fetch_add_explicit(&global_count, 1, memory_order_relaxed);
        /* publish (plain stores; only this thread reads them back) */
        s->lcg = lcg;
        s->total = total;
        s->fp = fp;
        s->iters = iters;
    }

    /* ---- self verification */
#define TFAIL(...)                                                                   \
    do {                                                                             \
        snprintf(s->err, sizeof s->err, "thread %d: ", t);                           \
        snprintf(s->err + strlen(s->err), sizeof s->err - strlen(s->err), __VA_ARGS__); \
        s->done = 1;                                                                 \
        return NULL;                                                                 \
    } while (0)
    if (lcg != s->lcg || total != s->total || iters != s->iters ||
        memcmp(&fp, &s->fp, sizeof fp) != 0)
        TFAIL("register copies and memory copies of the state differ: lcg %#llx/%#llx total "
              "%#llx/%#llx iters %llu/%llu fp %a/%a",
              (unsigned long long)lcg, (unsigned long long)s->lcg, (unsigned long long)total,
              (unsigned long long)s->total, (unsigned long long)iters,
              (unsigned long long)s->iters, fp, s->fp);
    uint64_t gens = 0, tsum = 0;
    for (uint32_t i = 0; i < NBLK; i++) {
        const uint64_t *w = (const uint64_t *)(s->buf + (size_t)i * BLK);
        uint64_t a, b;
        block_sums(w, &a, &b);
        if (a != s->sum[i] || b != s->wsum[i])
            TFAIL("block %u (at %p, generation %u): checksums expected %#llx/%#llx, memory has "
                  "%#llx/%#llx",
                  i, (const void *)w, s->gen[i], (unsigned long long)s->sum[i],
                  (unsigned long long)s->wsum[i], (unsigned long long)a, (unsigned long long)b);
        gens += s->gen[i];
        tsum += a;
    }
    if (tsum != s->total)
        TFAIL("running total expected %#llx (recomputed), found %#llx", (unsigned long long)tsum,
              (unsigned long long)s->total);
    if (gens != s->iters)
        TFAIL("sum of block generations %llu != iterations %llu", (unsigned long long)gens,
              (unsigned long long)s->iters);
    /* replay */
    memset(s->regen, 0, sizeof s->regen);
    uint64_t l = lcg_init(t);
    double f = 1.0 + t;
    for (uint64_t k = 0; k < s->iters; k++) {
        l = lcg_next(l);
        uint32_t i = blk_of(l);
        s->regen[i]++;
        f = fstep(f, i);
    }
    if (l != s->lcg)
        TFAIL("LCG after %llu steps expected %#llx (replay), found %#llx",
              (unsigned long long)s->iters, (unsigned long long)l, (unsigned long long)s->lcg);
    if (memcmp(&f, &s->fp, sizeof f) != 0)
        TFAIL("fp recurrence after %llu steps expected %a (replay), found %a",
              (unsigned long long)s->iters, f, s->fp);
    if (memcmp(s->regen, s->gen, sizeof s->gen) != 0)
        TFAIL("block generations differ from the replay");
    s->ok = 1;
    s->done = 1;
    return NULL;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        ts[t] = calloc(1, sizeof *ts[t]);
        if (!ts[t])
            wl_fail("setup: calloc: %s", strerror(errno));
        ts[t]->idx = t;
        ts[t]->buf = mmap(NULL, BUF_SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ts[t]->buf == MAP_FAILED)
            wl_fail("setup: mmap %u bytes: %s", BUF_SZ, strerror(errno));
        if (pthread_create(&th[t], NULL, worker, ts[t]) != 0)
            wl_fail("setup: pthread_create failed");
    }
    while (atomic_load(&started) < NTHREADS)
        wl_sleep_ms(5);
    for (int t = 0; t < NTHREADS; t++)
        while (*(volatile uint64_t *)&ts[t]->iters == 0)
            wl_sleep_ms(5);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(10);

    uint64_t before = atomic_load(&global_count);
    wl_sleep_ms(50);
    WL_CHECK(atomic_load(&global_count) > before,
             "global counter did not move in 50 ms after verify (%llu): threads not running",
             (unsigned long long)before);
    atomic_store(&stop, 1);
    uint64_t sum = 0;
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(th[t], NULL);
        if (!ts[t]->ok)
            wl_fail("%s", ts[t]->err[0] ? ts[t]->err : "thread failed without a message");
        sum += ts[t]->iters;
    }
    uint64_t g = atomic_load(&global_count);
    WL_CHECK(g == sum, "global counter expected %llu (sum of per-thread iterations), found %llu",
             (unsigned long long)sum, (unsigned long long)g);
    dprintf(1, "mt_load: info: %llu iterations in total\n", (unsigned long long)sum);
    wl_report(1, "ok");
}
