/*
 * mem_anon.c - private anonymous memory.
 *
 * State tested (all created before wl_ready(), checked on verify):
 *   - a reserved address range in which these private anonymous regions
 *     are mapped MAP_FIXED, separated by 1-page unmapped gaps (so the
 *     kernel cannot merge them and the VMA layout is deterministic):
 *       rw       4 MiB  PROT_READ|WRITE, pattern, with holes punched by
 *                       MADV_DONTNEED (must read back as zero)
 *       ro       1 MiB  written, then mprotect(PROT_READ)
 *       none     1 MiB  written, then mprotect(PROT_NONE) (verified by
 *                       mprotect'ing it back to PROT_READ)
 *       exec     1 page `mov eax,42; ret`, mprotect(PROT_READ|PROT_EXEC),
 *                       called on verify
 *       nores    2 MiB  MAP_NORESERVE, RW, pattern
 *       sparse 256 MiB  MAP_NORESERVE + MADV_NOHUGEPAGE, only every 64th
 *                       page touched; untouched pages must read as zero,
 *                       and the region must not be inflated: its smaps Rss
 *                       (which does not count zero-page mappings) must be
 *                       <= touched pages + 64 pages
 *   - a 1 MiB MAP_FIXED(_NOREPLACE) mapping at 0x7e0000000000
 *   - a 1 MiB pattern buffer on the main thread's stack (must still lie in
 *     the [stack] VMA)
 *   - heap: 400 malloc'd blocks of varied sizes (some above the mmap
 *     threshold), every third freed again; then a 16 MiB brk extension via
 *     sbrk(). Verify sbrk(0) and the kernel's brk (syscall(SYS_brk, 0))
 *     are unchanged, the [heap] VMA line is identical, brk can still grow
 *     and shrink, and malloc/free still work.
 *   - /proc/self/smaps: for each region above, the VMA containing it has
 *     the same start-end, perms and VmFlags subset (rd wr ex sh mr mw me
 *     nr nh dd) as recorded at setup.
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
#include <sys/syscall.h>
#include <unistd.h>

#define KiB (1UL << 10)
#define MiB (1UL << 20)
#define PG 4096UL

#define FIXED_ADDR ((void *)0x7e0000000000UL)
#define FIXED_SIZE (1 * MiB)
#define STACK_BUF (1 * MiB)
#define SBRK_SIZE (16 * MiB)
#define NBLOCKS 400
#define SPARSE_STRIDE 64

enum { R_RW, R_RO, R_NONE, R_EXEC, R_NORES, R_SPARSE, R_FIXED, R_HEAP, NREG };

struct region {
    const char *name;
    unsigned char *addr;
    size_t size;
    int prot; /* final protection */
    int extra_flags;
    uint64_t seed;
    /* recorded at setup from /proc/self/smaps */
    unsigned long vstart, vend;
    char perms[8];
    char vmflags[128];
    char vname[64];
};

static struct region reg[NREG] = {
    [R_RW] = {"rw", NULL, 4 * MiB, PROT_READ | PROT_WRITE, 0, 101},
    [R_RO] = {"ro", NULL, 1 * MiB, PROT_READ, 0, 102},
    [R_NONE] = {"none", NULL, 1 * MiB, PROT_NONE, 0, 103},
    [R_EXEC] = {"exec", NULL, PG, PROT_READ | PROT_EXEC, 0, 0},
    [R_NORES] = {"noreserve", NULL, 2 * MiB, PROT_READ | PROT_WRITE, MAP_NORESERVE, 105},
    [R_SPARSE] = {"sparse", NULL, 256 * MiB, PROT_READ | PROT_WRITE, MAP_NORESERVE, 106},
    [R_FIXED] = {"fixed", NULL, FIXED_SIZE, PROT_READ | PROT_WRITE, 0, 107},
    [R_HEAP] = {"heap", NULL, 0, PROT_READ | PROT_WRITE, 0, 0},
};

/* pages of the rw region punched with MADV_DONTNEED: [first, first+count) */
static const struct { size_t first, count; } holes[] = {{10, 10}, {500, 1}, {1000, 24}};
#define NHOLES (sizeof holes / sizeof holes[0])

static const unsigned char exec_code[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3}; /* mov eax,42; ret */

struct block {
    unsigned char *p;
    size_t size;
    uint64_t seed;
};
static struct block blocks[NBLOCKS];

static unsigned char *sbrk_base;
static void *sbrk_end;     /* sbrk(0) after extension */
static long kernel_brk;    /* syscall(SYS_brk, 0) after extension */

static char smaps_buf[8 << 20];

static int in_hole(size_t page)
{
    for (size_t i = 0; i < NHOLES; i++)
        if (page >= holes[i].first && page < holes[i].first + holes[i].count)
            return 1;
    return 0;
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
    int fd;
    do
        fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        wl_fail("open %s: %m", path);
    size_t len = 0;
    for (;;) {
        if (len + 1 >= cap)
            wl_fail("%s larger than buffer (%zu)", path, cap);
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            wl_fail("read %s: %m", path);
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    return len;
}

/* Keep only the VmFlags we compare, in a canonical order. */
static void filter_flags(const char *in, char *out, size_t cap)
{
    static const char *keep[] = {"rd", "wr", "ex", "sh", "mr", "mw", "me", "nr", "nh", "dd"};
    out[0] = 0;
    for (size_t k = 0; k < sizeof keep / sizeof keep[0]; k++) {
        const char *p = in;
        while ((p = strstr(p, keep[k])) != NULL) {
            if ((p == in || p[-1] == ' ') && (p[2] == ' ' || p[2] == '\n' || p[2] == 0)) {
                size_t l = strlen(out);
                snprintf(out + l, cap - l, "%s%s", l ? " " : "", keep[k]);
                break;
            }
            p += 2;
        }
    }
}

/* Find the VMA containing addr in /proc/self/smaps (already read into
 * smaps_buf).  Returns 1 if found. */
static int find_vma(unsigned long addr, unsigned long *s, unsigned long *e, char perms[8],
                    char *flags, size_t fcap, char *name, size_t ncap)
{
    char *line = smaps_buf;
    while (*line) {
        char *nl = strchr(line, '\n');
        unsigned long a, b;
        char pm[8];
        int nameoff = 0;
        /* header lines look like "start-end perms offset dev inode  name" */
        if (sscanf(line, "%lx-%lx %7s %*x %*x:%*x %*u %n", &a, &b, pm, &nameoff) == 3 &&
            nameoff > 0 && addr >= a && addr < b) {
            *s = a;
            *e = b;
            snprintf(perms, 8, "%s", pm);
            size_t nl_len = nl ? (size_t)(nl - (line + nameoff)) : strlen(line + nameoff);
            if (nl_len >= ncap)
                nl_len = ncap - 1;
            memcpy(name, line + nameoff, nl_len);
            name[nl_len] = 0;
            flags[0] = 0;
            /* scan the following field lines for VmFlags */
            char *q = nl ? nl + 1 : line + strlen(line);
            while (*q) {
                unsigned long x, y;
                char t[8];
                int off = 0;
                if (sscanf(q, "%lx-%lx %7s %*x %*x:%*x %*u %n", &x, &y, t, &off) == 3 && off > 0)
                    break; /* next VMA */
                if (strncmp(q, "VmFlags:", 8) == 0) {
                    filter_flags(q + 8, flags, fcap);
                    break;
                }
                char *qn = strchr(q, '\n');
                if (!qn)
                    break;
                q = qn + 1;
            }
            return 1;
        }
        if (!nl)
            break;
        line = nl + 1;
    }
    return 0;
}

/* Rss (kB) of the VMA starting at addr, from smaps_buf; -1 if not found. */
static long vma_rss_kb(unsigned long addr)
{
    char hdr[32];
    int n = snprintf(hdr, sizeof hdr, "%lx-", addr);
    for (char *line = smaps_buf; *line;) {
        if (strncmp(line, hdr, (size_t)n) == 0) {
            char *q = strstr(line, "\nRss:");
            long kb;
            if (q && sscanf(q + 5, "%ld", &kb) == 1)
                return kb;
            return -1;
        }
        char *nl = strchr(line, '\n');
        if (!nl)
            break;
        line = nl + 1;
    }
    return -1;
}

static void record_vmas(void)
{
    read_file("/proc/self/smaps", smaps_buf, sizeof smaps_buf);
    for (int i = 0; i < NREG; i++) {
        struct region *r = &reg[i];
        if (!find_vma((unsigned long)r->addr, &r->vstart, &r->vend, r->perms, r->vmflags,
                      sizeof r->vmflags, r->vname, sizeof r->vname))
            wl_fail("setup: no VMA for region %s at %p", r->name, (void *)r->addr);
        if (i != R_HEAP &&
            (r->vstart != (unsigned long)r->addr || r->vend != (unsigned long)r->addr + r->size))
            wl_fail("setup: region %s %p+%zu is VMA %lx-%lx (merged?)", r->name,
                    (void *)r->addr, r->size, r->vstart, r->vend);
    }
}

static void check_vmas(void)
{
    read_file("/proc/self/smaps", smaps_buf, sizeof smaps_buf);
    for (int i = 0; i < NREG; i++) {
        struct region *r = &reg[i];
        unsigned long s, e;
        char perms[8], flags[128], name[64];
        if (!find_vma((unsigned long)r->addr, &s, &e, perms, flags, sizeof flags, name,
                      sizeof name))
            wl_fail("region %s at %p: no VMA in /proc/self/smaps", r->name, (void *)r->addr);
        if (s != r->vstart || e != r->vend || strcmp(perms, r->perms) != 0)
            wl_fail("region %s: VMA is %lx-%lx %s, expected %lx-%lx %s", r->name, s, e, perms,
                    r->vstart, r->vend, r->perms);
        if (strcmp(flags, r->vmflags) != 0)
            wl_fail("region %s: VmFlags [%s], expected [%s]", r->name, flags, r->vmflags);
        if (strcmp(name, r->vname) != 0)
            wl_fail("region %s: VMA name '%s', expected '%s'", r->name, name, r->vname);
    }
}

static int stack_check(unsigned char *buf)
{
    /* the stack buffer must lie in the [stack] VMA */
    unsigned long s, e;
    char perms[8], flags[128], name[64];
    if (!find_vma((unsigned long)buf, &s, &e, perms, flags, sizeof flags, name, sizeof name))
        wl_fail("stack buffer %p: no VMA", (void *)buf);
    if (strcmp(name, "[stack]") != 0)
        wl_fail("stack buffer %p is in VMA %lx-%lx '%s', not [stack]", (void *)buf, s, e, name);
    return wl_check_pattern(buf, STACK_BUF, 0x57AC);
}

static void setup_layout(void)
{
    /* total = regions (except fixed/heap) + 1-page gaps around each */
    size_t total = PG;
    for (int i = 0; i <= R_SPARSE; i++)
        total += reg[i].size + PG;
    unsigned char *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        wl_fail("reserve %zu bytes: %m", total);
    size_t off = PG;
    for (int i = 0; i <= R_SPARSE; i++) {
        struct region *r = &reg[i];
        void *p = mmap(base + off, r->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | r->extra_flags, -1, 0);
        if (p != base + off)
            wl_fail("mmap region %s at %p: %m", r->name, (void *)(base + off));
        r->addr = p;
        off += r->size + PG;
    }
    /* unmap the gaps (first one, and one after each region) */
    if (munmap(base, PG) < 0)
        wl_fail("munmap gap: %m");
    for (int i = 0; i <= R_SPARSE; i++)
        if (munmap(reg[i].addr + reg[i].size, PG) < 0)
            wl_fail("munmap gap after %s: %m", reg[i].name);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);

    /* ---- heap blocks (before sbrk, so malloc's own brk use is done) ---- */
    uint64_t rnd = 12345;
    for (int i = 0; i < NBLOCKS; i++) {
        rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t sz;
        switch (i % 4) {
        case 0: sz = 1 + (rnd >> 33) % 64; break;
        case 1: sz = 64 + (rnd >> 33) % 4096; break;
        case 2: sz = 4096 + (rnd >> 33) % (64 * KiB); break;
        default: sz = (i % 20 == 3) ? 200 * KiB + (rnd >> 33) % (300 * KiB)
                                    : 1 + (rnd >> 33) % 1024; break;
        }
        blocks[i].size = sz;
        blocks[i].seed = 1000 + (uint64_t)i;
        blocks[i].p = malloc(sz);
        if (!blocks[i].p)
            wl_fail("malloc(%zu) failed", sz);
        wl_fill_pattern(blocks[i].p, sz, blocks[i].seed);
    }
    for (int i = 0; i < NBLOCKS; i += 3) {
        free(blocks[i].p);
        blocks[i].p = NULL;
    }

    /* ---- anonymous regions ---- */
    setup_layout();
    wl_fill_pattern(reg[R_RW].addr, reg[R_RW].size, reg[R_RW].seed);
    for (size_t h = 0; h < NHOLES; h++)
        if (madvise(reg[R_RW].addr + holes[h].first * PG, holes[h].count * PG, MADV_DONTNEED) < 0)
            wl_fail("madvise DONTNEED: %m");

    wl_fill_pattern(reg[R_RO].addr, reg[R_RO].size, reg[R_RO].seed);
    if (mprotect(reg[R_RO].addr, reg[R_RO].size, PROT_READ) < 0)
        wl_fail("mprotect ro: %m");

    wl_fill_pattern(reg[R_NONE].addr, reg[R_NONE].size, reg[R_NONE].seed);
    if (mprotect(reg[R_NONE].addr, reg[R_NONE].size, PROT_NONE) < 0)
        wl_fail("mprotect none: %m");

    memset(reg[R_EXEC].addr, 0xcc, PG); /* int3 padding */
    memcpy(reg[R_EXEC].addr, exec_code, sizeof exec_code);
    if (mprotect(reg[R_EXEC].addr, PG, PROT_READ | PROT_EXEC) < 0)
        wl_fail("mprotect exec: %m");
    int (*fn)(void) = (int (*)(void))(void *)reg[R_EXEC].addr;
    if (fn() != 42)
        wl_fail("setup: exec code did not return 42");

    wl_fill_pattern(reg[R_NORES].addr, reg[R_NORES].size, reg[R_NORES].seed);

    struct region *sp = &reg[R_SPARSE];
    if (madvise(sp->addr, sp->size, MADV_NOHUGEPAGE) < 0)
        wl_fail("madvise NOHUGEPAGE: %m");
    size_t sparse_pages = sp->size / PG, touched = 0;
    for (size_t pg = 0; pg < sparse_pages; pg += SPARSE_STRIDE, touched++)
        wl_fill_pattern(sp->addr + pg * PG, PG, sp->seed + pg);

    struct region *fx = &reg[R_FIXED];
    fx->addr = mmap(FIXED_ADDR, fx->size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (fx->addr != FIXED_ADDR)
        wl_fail("mmap MAP_FIXED_NOREPLACE at %p: got %p (%m)", FIXED_ADDR, (void *)fx->addr);
    wl_fill_pattern(fx->addr, fx->size, fx->seed);

    /* ---- brk extension ---- */
    sbrk_base = sbrk(SBRK_SIZE);
    if (sbrk_base == (void *)-1)
        wl_fail("sbrk(%lu): %m", SBRK_SIZE);
    wl_fill_pattern(sbrk_base, SBRK_SIZE, 0xB4C);
    sbrk_end = sbrk(0);
    kernel_brk = syscall(SYS_brk, 0);
    if ((void *)kernel_brk != sbrk_end)
        wl_fail("setup: kernel brk %lx != sbrk(0) %p", kernel_brk, sbrk_end);
    reg[R_HEAP].addr = sbrk_base;
    reg[R_HEAP].size = SBRK_SIZE;

    /* ---- stack buffer ---- */
    unsigned char stackbuf[STACK_BUF];
    wl_fill_pattern(stackbuf, sizeof stackbuf, 0x57AC);

    record_vmas();
    if (strcmp(reg[R_HEAP].vname, "[heap]") != 0)
        wl_fail("setup: brk area VMA named '%s', not [heap]", reg[R_HEAP].vname);
    if (strstr(reg[R_NORES].vmflags, "nr") == NULL)
        wl_fail("setup: MAP_NORESERVE region lacks nr flag: %s", reg[R_NORES].vmflags);
    if (!stack_check(stackbuf))
        wl_fail("setup: stack pattern");

    wl_ready();

    volatile unsigned long loops = 0;
    while (!wl_verify_requested()) {
        loops++;
        wl_sleep_ms(10);
    }

    /* ---- verify: brk first (before anything might allocate) ---- */
    void *cur = sbrk(0);
    WL_CHECK(cur == sbrk_end, "sbrk(0) = %p, expected %p", cur, sbrk_end);
    long kb = syscall(SYS_brk, 0);
    WL_CHECK(kb == kernel_brk, "kernel brk = %lx, expected %lx", kb, kernel_brk);

    /* ---- VMA layout ---- */
    check_vmas();
    WL_CHECK(stack_check(stackbuf), "stack buffer pattern corrupted");

    /* ---- sparse region residency (smaps was read by check_vmas) ---- */
    {
        long rss_kb = vma_rss_kb((unsigned long)sp->addr);
        long max_kb = (long)((touched + 64) * (PG / 1024));
        WL_CHECK(rss_kb >= 0, "no Rss line for the sparse region in smaps");
        WL_CHECK(rss_kb <= max_kb, "sparse region inflated: Rss %ld kB, only %zu pages (%zu kB) touched",
                 rss_kb, touched, touched * (PG / 1024));
    }

    /* ---- contents ---- */
    struct region *rw = &reg[R_RW];
    static unsigned char rw_ref[4 * MiB]; /* the pattern the rw region was filled with */
    wl_fill_pattern(rw_ref, sizeof rw_ref, rw->seed);
    for (size_t pg = 0; pg < rw->size / PG; pg++) {
        unsigned char *p = rw->addr + pg * PG;
        if (in_hole(pg)) {
            for (size_t j = 0; j < PG; j++)
                if (p[j])
                    wl_fail("rw: hole page %zu byte %zu = %#x, expected 0", pg, j, p[j]);
        } else if (memcmp(p, rw_ref + pg * PG, PG) != 0) {
            wl_fail("rw: page %zu content differs from pattern", pg);
        }
    }
    WL_CHECK(wl_check_pattern(reg[R_RO].addr, reg[R_RO].size, reg[R_RO].seed),
             "ro region pattern corrupted");
    if (mprotect(reg[R_NONE].addr, reg[R_NONE].size, PROT_READ) < 0)
        wl_fail("mprotect none->read: %m");
    WL_CHECK(wl_check_pattern(reg[R_NONE].addr, reg[R_NONE].size, reg[R_NONE].seed),
             "PROT_NONE region data lost");
    WL_CHECK(memcmp(reg[R_EXEC].addr, exec_code, sizeof exec_code) == 0, "exec code bytes changed");
    int v = fn();
    WL_CHECK(v == 42, "exec function returned %d, expected 42", v);
    WL_CHECK(wl_check_pattern(reg[R_NORES].addr, reg[R_NORES].size, reg[R_NORES].seed),
             "noreserve region pattern corrupted");
    for (size_t pg = 0; pg < sparse_pages; pg++) {
        unsigned char *p = sp->addr + pg * PG;
        if (pg % SPARSE_STRIDE == 0) {
            if (!wl_check_pattern(p, PG, sp->seed + pg))
                wl_fail("sparse: touched page %zu corrupted", pg);
        } else {
            const uint64_t *q = (const uint64_t *)p;
            for (size_t j = 0; j < PG / 8; j++)
                if (q[j])
                    wl_fail("sparse: untouched page %zu not zero at byte %zu", pg, j * 8);
        }
    }
    WL_CHECK(fx->addr == FIXED_ADDR, "fixed mapping pointer changed");
    WL_CHECK(wl_check_pattern(fx->addr, fx->size, fx->seed), "fixed mapping pattern corrupted");
    WL_CHECK(wl_check_pattern(sbrk_base, SBRK_SIZE, 0xB4C), "sbrk area pattern corrupted");
    for (int i = 0; i < NBLOCKS; i++)
        if (blocks[i].p && !wl_check_pattern(blocks[i].p, blocks[i].size, blocks[i].seed))
            wl_fail("heap block %d (%zu bytes at %p) corrupted", i, blocks[i].size,
                    (void *)blocks[i].p);

    /* ---- brk still usable: grow by a page, write, shrink back ---- */
    unsigned char *g = sbrk(PG);
    WL_CHECK(g == sbrk_end, "sbrk(+page) returned %p, expected %p (%m)", (void *)g, sbrk_end);
    memset(g, 0x5a, PG);
    WL_CHECK(g[PG - 1] == 0x5a, "grown brk page not writable");
    WL_CHECK(sbrk(-(intptr_t)PG) != (void *)-1, "sbrk(-page) failed: %m");
    kb = syscall(SYS_brk, 0);
    WL_CHECK(kb == kernel_brk, "after grow/shrink kernel brk = %lx, expected %lx", kb, kernel_brk);

    /* ---- allocator still consistent ---- */
    for (int i = 0; i < NBLOCKS; i++) {
        free(blocks[i].p);
        blocks[i].p = NULL;
    }
    for (int i = 0; i < 100; i++) {
        size_t sz = 16 + (size_t)i * 1237;
        unsigned char *p = malloc(sz);
        WL_CHECK(p != NULL, "malloc(%zu) after restore failed", sz);
        wl_fill_pattern(p, sz, 77 + (uint64_t)i);
        WL_CHECK(wl_check_pattern(p, sz, 77 + (uint64_t)i), "fresh malloc block corrupted");
        free(p);
    }
    (void)loops;
    wl_report(1, "ok");
}
