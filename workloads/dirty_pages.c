/*
 * dirty_pages.c - memory written in generations, for incremental images.
 *
 * Usage: dirty_pages CTL_DIR [--mib N] [--churn] [--idle] [--no-ptrace-cap]
 *
 * State tested:
 *   - a private anonymous region of N MiB (default 32) whose page p holds the
 *     pattern of (generation, p); at setup every page has generation 0;
 *   - the test asks for generation G by writing CTL_DIR/gen ("G\n"); the
 *     workload applies every generation up to G and answers CTL_DIR/gen_done
 *     ("G\n"). Generation g rewrites one eighth of the region with the
 *     pattern of (g, p), and in another eighth one page in 5, and drops one in
 *     31 there with MADV_DONTNEED (they read back as zeros); the generation of
 *     every page is kept in a heap array; CTL_DIR/region holds the region's
 *     address and page count;
 *   - `--churn`: each generation also forks a child (it keeps a buffer of its
 *     own and the region as it was at the fork, and checks both at verify),
 *     maps a new 1 MiB region, moves the previous one with mremap and unmaps
 *     half of the one before;
 *   - `--idle`: nothing is written after setup (generations are refused);
 *   - `--no-ptrace-cap`: CAP_SYS_PTRACE dropped (a full userfaultfd is then
 *     refused to the task while vm.unprivileged_userfaultfd is 0); verify
 *     checks it is still dropped.
 * Verify: if CTL_DIR/expect exists, the current generation equals it (the
 * restored image is the one asked for); every page of the region holds the
 * pattern of its generation or zeros; every churn region its pattern; every
 * child exits 0 after checking its own memory.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define MAX_GEN 64

static unsigned char *region;
static size_t npages;
static short *gen_of; /* generation of each page, -1: dropped (zeros) */
static long cur_gen;

struct churn {
    unsigned char *addr;
    size_t len;
    uint64_t seed;
};
static struct churn churns[MAX_GEN];
static int nchurn;
static pid_t kids[MAX_GEN];
static int nkids;

static uint64_t seed_of(long g, size_t p)
{
    return ((uint64_t)g << 32) ^ (uint64_t)p ^ 0x5eed;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static long read_long(const char *name)
{
    char buf[32] = {0};
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    return strtol(buf, NULL, 10);
}

static void write_long(const char *name, long v)
{
    char tmp[64], buf[32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", name, getpid());
    int len = snprintf(buf, sizeof buf, "%ld\n", v);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, buf, (size_t)len) != len)
        wl_fail("writing %s: %s", tmp, strerror(errno));
    close(fd);
    if (rename(tmp, name) != 0)
        wl_fail("rename %s: %s", tmp, strerror(errno));
}

static int check_page(const unsigned char *pg, short g, size_t p)
{
    if (g < 0) {
        for (size_t i = 0; i < PAGE; i++)
            if (pg[i])
                return 0;
        return 1;
    }
    return wl_check_pattern(pg, PAGE, seed_of(g, p));
}

static void check_region(const char *who)
{
    for (size_t p = 0; p < npages; p++)
        WL_CHECK(check_page(region + p * PAGE, gen_of[p], p),
                 "%s: page %zu (of %zu) does not hold generation %d", who, p,
                 npages, gen_of[p]);
}

static void child_main(long g)
{
    size_t len = 256 * 1024;
    unsigned char *own = mmap(NULL, len, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (own == MAP_FAILED)
        wl_fail("child mmap: %s", strerror(errno));
    wl_fill_pattern(own, len, 7000 + (uint64_t)g);
    while (!wl_verify_requested())
        wl_sleep_ms(10);
    WL_CHECK(wl_check_pattern(own, len, 7000 + (uint64_t)g),
             "child of generation %ld: its own buffer changed", g);
    check_region("child");
    wl_report(1, "child ok");
}

static void churn(long g)
{
    pid_t k = fork();
    if (k < 0)
        wl_fail("fork: %s", strerror(errno));
    if (k == 0)
        child_main(g);
    kids[nkids++] = k;
    /* a new region */
    size_t len = 1 << 20;
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        wl_fail("mmap: %s", strerror(errno));
    wl_fill_pattern(m, len, 9000 + (uint64_t)g);
    churns[nchurn++] = (struct churn){m, len, 9000 + (uint64_t)g};
    /* the previous one moves */
    if (nchurn >= 2) {
        struct churn *c = &churns[nchurn - 2];
        unsigned char *dst = mmap(NULL, c->len, PROT_NONE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        void *got = mremap(c->addr, c->len, c->len,
                           MREMAP_MAYMOVE | MREMAP_FIXED, dst);
        if (got == MAP_FAILED)
            wl_fail("mremap: %s", strerror(errno));
        c->addr = got;
    }
    /* half of the one before is unmapped */
    if (nchurn >= 3) {
        struct churn *c = &churns[nchurn - 3];
        if (c->len == (1 << 20)) {
            if (munmap(c->addr, c->len / 2) != 0)
                wl_fail("munmap: %s", strerror(errno));
            c->addr += c->len / 2;
            c->len /= 2;
            /* keep the pattern's offsets: the pattern of the second half */
            c->seed |= 1ULL << 40;
        }
    }
}

static int check_churn(const struct churn *c)
{
    if (!(c->seed & (1ULL << 40)))
        return wl_check_pattern(c->addr, c->len, c->seed);
    /* the second half of a region filled whole: rebuild and compare */
    size_t full = c->len * 2;
    unsigned char *tmp = malloc(full);
    if (!tmp)
        return 0;
    wl_fill_pattern(tmp, full, c->seed & ~(1ULL << 40));
    int ok = memcmp(tmp + c->len, c->addr, c->len) == 0;
    free(tmp);
    return ok;
}

/* What generation g does to page p: 1 rewrite, 2 drop, 0 nothing. Band
 * (5g mod 8) of the region is rewritten whole; in band (5g+3 mod 8) one page
 * in 5 is rewritten and one in 31 dropped. The test computes the same. */
static int action(long g, size_t p)
{
    size_t band = p * 8 / npages;
    if (band == (size_t)(5 * g) % 8)
        return 1;
    if (band != (size_t)(5 * g + 3) % 8)
        return 0;
    uint64_t h = mix(((uint64_t)g << 40) ^ p);
    if (h % 5 == 0)
        return 1;
    return h % 31 == 1 ? 2 : 0;
}

static void apply(long g, int with_churn)
{
    for (size_t p = 0; p < npages; p++) {
        int a = action(g, p);
        if (a == 1) {
            wl_fill_pattern(region + p * PAGE, PAGE, seed_of(g, p));
            gen_of[p] = (short)g;
        } else if (a == 2) {
            if (madvise(region + p * PAGE, PAGE, MADV_DONTNEED) != 0)
                wl_fail("madvise: %s", strerror(errno));
            gen_of[p] = -1;
        }
    }
    if (with_churn)
        churn(g);
}

/* Whether CAP_SYS_PTRACE is in the effective set; with `drop`, remove it from
 * the effective and permitted sets first. */
static int ptrace_cap(int drop)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0)
        wl_fail("capget: %s", strerror(errno));
    if (drop) {
        d[0].effective &= ~(1u << CAP_SYS_PTRACE);
        d[0].permitted &= ~(1u << CAP_SYS_PTRACE);
        if (syscall(SYS_capset, &h, d) != 0)
            wl_fail("capset: %s", strerror(errno));
    }
    return !!(d[0].effective & (1u << CAP_SYS_PTRACE));
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    size_t mib = 32;
    int with_churn = 0, idle = 0, no_ptrace = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc)
            mib = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--churn"))
            with_churn = 1;
        else if (!strcmp(argv[i], "--idle"))
            idle = 1;
        else if (!strcmp(argv[i], "--no-ptrace-cap"))
            no_ptrace = 1;
    }
    if (no_ptrace)
        ptrace_cap(1);
    npages = mib * (1 << 20) / PAGE;
    region = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gen_of = calloc(npages, sizeof *gen_of);
    if (region == MAP_FAILED || !gen_of)
        wl_fail("allocating %zu MiB", mib);
    for (size_t p = 0; p < npages; p++)
        wl_fill_pattern(region + p * PAGE, PAGE, seed_of(0, p));
    {
        FILE *f = fopen("region", "w");
        if (!f)
            wl_fail("region: %s", strerror(errno));
        fprintf(f, "%lu %zu\n", (unsigned long)region, npages);
        fclose(f);
    }
    write_long("gen_done", 0);
    wl_ready();
    while (!wl_verify_requested()) {
        long want = read_long("gen");
        if (want > cur_gen) {
            if (idle)
                wl_fail("generation %ld asked of an idle workload", want);
            if (want >= MAX_GEN)
                wl_fail("generation %ld: at most %d", want, MAX_GEN - 1);
            while (cur_gen < want)
                apply(++cur_gen, with_churn);
            write_long("gen_done", cur_gen);
        }
        wl_sleep_ms(5);
    }
    WL_CHECK(!no_ptrace || !ptrace_cap(0), "CAP_SYS_PTRACE is back after restore");
    long expect = read_long("expect");
    WL_CHECK(expect < 0 || expect == cur_gen,
             "generation %ld after restore, expected %ld", cur_gen, expect);
    check_region("root");
    for (int i = 0; i < nchurn; i++)
        WL_CHECK(check_churn(&churns[i]), "churn region %d at %p (%zu bytes) changed", i,
                 (void *)churns[i].addr, churns[i].len);
    for (int i = 0; i < nkids; i++) {
        int st;
        pid_t r;
        do
            r = waitpid(kids[i], &st, 0);
        while (r < 0 && errno == EINTR);
        WL_CHECK(r == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                 "child %d of generation %d failed (status %#x)", kids[i], i + 1, st);
    }
    wl_report(1, "generation %ld, %zu pages, %d churn regions, %d children", cur_gen,
              npages, nchurn, nkids);
}
