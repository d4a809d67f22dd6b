/*
 * cow_fork.c - private memory shared copy-on-write between a parent and its
 * forked children (a pre-fork server).
 *
 * Usage: cow_fork CTL_DIR [SIZE_MIB [READERS [plain]]]   (defaults 16, 2)
 *
 * State tested:
 *   - A: SIZE_MIB MiB of private anonymous memory, every page a distinct
 *     pattern, filled by the parent before it forks.
 *   - H: 64 KiB taken with sbrk (the [heap]), filled before fork.
 *   - F: a private mapping of a 256 KiB file in CTL_DIR whose first 8 pages
 *     the parent rewrote before fork (copied on write, different from the
 *     file); the others are the file's.
 *   - READERS children that never write anything.
 *   - (not in plain mode) a writer child: rewrites 2 pages of A, zeroes one,
 *     drops one with MADV_DONTNEED (reads zero), makes A's last 4 pages
 *     read-only, rewrites a changed and an unchanged page of F, grows the
 *     heap by 32 KiB with data;
 *     an unmapper child: unmaps 16 pages in the middle of A and its last 16
 *     pages, then forks a grandchild that rewrites one page of A;
 *     and the parent rewrites 2 pages of A and one of F after the forks
 *     (its children must not see them).
 * Every process checks every page of its view after restore (pattern, zero
 * or unmapped), and that the protections and VmFlags of A, F and its heap
 * part are what they were before the checkpoint (compared page by page, so
 * that how the kernel splits or merges mappings does not matter).
 * Children report through their exit status; the parent waits for them.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096UL
#define H_SIZE (64UL << 10)
#define H_MORE (32UL << 10)
#define F_PAGES 64UL
#define F_COW 8UL

enum role { PARENT, READER, WRITER, UNMAPPER, GRANDCHILD };

/* seeds */
#define S_A 0xA000000ULL     /* + page: A as the parent filled it */
#define S_AP 0xA100000ULL    /* parent's writes after fork */
#define S_AW 0xA200000ULL    /* writer's */
#define S_AG 0xA300000ULL    /* grandchild's */
#define S_H 0xB000000ULL
#define S_HW 0xB100000ULL
#define S_F 0xC000000ULL     /* file content */
#define S_FP 0xC100000ULL    /* parent's copy-on-write pages of F */
#define S_FPW 0xC200000ULL   /* parent's write after fork */
#define S_FW 0xC300000ULL    /* writer's */

static unsigned char *A, *H, *F;
static size_t a_pages;
static int plain;
static enum role me = PARENT;
static char layout_before[8192];
/* Each child writes one byte here once set up; the parent is ready after all. */
static int setup_pipe[2];

static void set_up_done(void)
{
    char c = 1;
    if (write(setup_pipe[1], &c, 1) != 1)
        wl_fail("write setup pipe: %m");
    close(setup_pipe[1]);
}

/* Expected content of page k of A for this process: a seed, 0 = zero page,
 * 1 = not mapped. */
static uint64_t expect_a(size_t k)
{
    if (me == UNMAPPER || me == GRANDCHILD) {
        if ((k >= a_pages / 2 && k < a_pages / 2 + 16) || k >= a_pages - 16)
            return 1;
        if (me == GRANDCHILD && k == 2)
            return S_AG + k;
    }
    if (me == PARENT && !plain && (k == 1 || k == 5))
        return S_AP + k;
    if (me == WRITER) {
        if (k == 3 || k == 4)
            return S_AW + k;
        if (k == 7 || k == 9)
            return 0;
    }
    return S_A + k;
}

static uint64_t expect_f(size_t k)
{
    if (me == PARENT && !plain && k == 2)
        return S_FPW + k;
    if (me == WRITER && (k == 3 || k == 10))
        return S_FW + k;
    return k < F_COW ? S_FP + k : S_F + k;
}

static int is_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static void fill_page(unsigned char *p, uint64_t seed) { wl_fill_pattern(p, PG, seed); }

/* /proc/self/smaps, read without stdio (whose buffers would come from malloc,
 * which could move the program break that H relies on). */
static char smaps[1 << 20];

static void read_smaps(void)
{
    int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        wl_fail("open smaps: %m");
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, smaps + len, sizeof smaps - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            wl_fail("read smaps: %m");
        if (r == 0)
            break;
        len += (size_t)r;
        if (len == sizeof smaps - 1)
            wl_fail("smaps too large");
    }
    smaps[len] = 0;
    close(fd);
}

/* Page by page "perms flags" of the parts of [lo, hi) that are mapped, as
 * coalesced text runs appended to out. */
static void layout_of(char *out, size_t cap, uintptr_t lo, uintptr_t hi)
{
    read_smaps();
    char line[512], perms[8] = "", run[600] = "";
    uintptr_t s = 0, e = 0, run_s = 0, run_e = 0;
    for (char *at = smaps, *nl; *at; at = nl + 1) {
        nl = strchr(at, '\n');
        if (!nl)
            break;
        size_t ll = (size_t)(nl - at) < sizeof line - 1 ? (size_t)(nl - at) : sizeof line - 1;
        memcpy(line, at, ll);
        line[ll] = 0;
        unsigned long a, b;
        char p[8];
        if (sscanf(line, "%lx-%lx %7s", &a, &b, p) == 3) {
            s = a;
            e = b;
            strcpy(perms, p);
            continue;
        }
        if (strncmp(line, "VmFlags:", 8) != 0)
            continue;
        uintptr_t cs = s > lo ? s : lo, ce = e < hi ? e : hi;
        if (cs >= ce)
            continue;
        char desc[600];
        snprintf(desc, sizeof desc, "%s%s", perms, line + 8);
        if (run_e == cs && strcmp(desc, run) == 0) {
            run_e = ce;
            continue;
        }
        if (run_e > run_s) {
            size_t n = strlen(out);
            snprintf(out + n, cap - n, "+%lx-%lx %s\n", (unsigned long)(run_s - lo),
                     (unsigned long)(run_e - lo), run);
        }
        run_s = cs;
        run_e = ce;
        strcpy(run, desc);
    }
    if (run_e > run_s) {
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "+%lx-%lx %s\n", (unsigned long)(run_s - lo),
                 (unsigned long)(run_e - lo), run);
    }
}

static void layout(char *out, size_t cap)
{
    out[0] = 0;
    strcat(out, "A:\n");
    layout_of(out, cap, (uintptr_t)A, (uintptr_t)A + a_pages * PG);
    strcat(out, "F:\n");
    layout_of(out, cap, (uintptr_t)F, (uintptr_t)F + F_PAGES * PG);
    strcat(out, "H:\n");
    layout_of(out, cap, (uintptr_t)H, (uintptr_t)H + H_SIZE + (me == WRITER ? H_MORE : 0));
}

static const char *role_name(void)
{
    static const char *n[] = {"parent", "reader", "writer", "unmapper", "grandchild"};
    return n[me];
}

static void check_memory(void)
{
    for (size_t k = 0; k < a_pages; k++) {
        uint64_t want = expect_a(k);
        unsigned char *p = A + k * PG;
        if (want == 1) {
            unsigned char v;
            WL_CHECK(mincore(p, PG, &v) < 0 && errno == ENOMEM,
                     "%s: A page %zu should be unmapped", role_name(), k);
        } else if (want == 0) {
            WL_CHECK(is_zero(p, PG), "%s: A page %zu should read zero", role_name(), k);
        } else {
            WL_CHECK(wl_check_pattern(p, PG, want), "%s: A page %zu differs (expected seed %#llx%s)",
                     role_name(), k, (unsigned long long)want,
                     wl_check_pattern(p, PG, S_A + k) ? ", found the parent's original"
                     : wl_check_pattern(p, PG, S_AP + k) ? ", found the parent's later write"
                     : is_zero(p, PG) ? ", found zeros" : "");
        }
    }
    for (size_t k = 0; k < F_PAGES; k++)
        WL_CHECK(wl_check_pattern(F + k * PG, PG, expect_f(k)), "%s: F page %zu differs",
                 role_name(), k);
    for (size_t k = 0; k < H_SIZE / PG; k++)
        WL_CHECK(wl_check_pattern(H + k * PG, PG, S_H + k), "%s: heap page %zu differs",
                 role_name(), k);
    if (me == WRITER)
        for (size_t k = 0; k < H_MORE / PG; k++)
            WL_CHECK(wl_check_pattern(H + H_SIZE + k * PG, PG, S_HW + k),
                     "%s: grown heap page %zu differs", role_name(), k);
    static char now[8192];
    layout(now, sizeof now);
    WL_CHECK(strcmp(now, layout_before) == 0, "%s: layout changed:\nbefore:\n%s\nafter:\n%s",
             role_name(), layout_before, now);
}

static void wait_verify(void)
{
    while (!wl_verify_requested())
        wl_sleep_ms(20);
}

static void child_setup(void)
{
    if (me == WRITER) {
        fill_page(A + 3 * PG, S_AW + 3);
        fill_page(A + 4 * PG, S_AW + 4);
        memset(A + 7 * PG, 0, PG);
        if (madvise(A + 9 * PG, PG, MADV_DONTNEED) < 0)
            wl_fail("writer: madvise: %m");
        if (mprotect(A + (a_pages - 4) * PG, 4 * PG, PROT_READ) < 0)
            wl_fail("writer: mprotect: %m");
        fill_page(F + 3 * PG, S_FW + 3);
        fill_page(F + 10 * PG, S_FW + 10);
        if (sbrk(0) != H + H_SIZE || sbrk(H_MORE) == (void *)-1)
            wl_fail("writer: the heap cannot grow right after H");
        for (size_t k = 0; k < H_MORE / PG; k++)
            fill_page(H + H_SIZE + k * PG, S_HW + k);
    } else if (me == UNMAPPER) {
        if (munmap(A + a_pages / 2 * PG, 16 * PG) < 0 || munmap(A + (a_pages - 16) * PG, 16 * PG) < 0)
            wl_fail("unmapper: munmap: %m");
    } else if (me == GRANDCHILD) {
        fill_page(A + 2 * PG, S_AG + 2);
    }
    layout(layout_before, sizeof layout_before);
}

static void child_main(void)
{
    pid_t g = -1;
    close(setup_pipe[0]);
    child_setup();
    if (me == UNMAPPER) {
        g = fork();
        if (g < 0)
            wl_fail("unmapper: fork: %m");
        if (g == 0) {
            me = GRANDCHILD;
            child_setup();
            set_up_done();
            wait_verify();
            check_memory();
            wl_report(1, "ok");
        }
    }
    set_up_done();
    wait_verify();
    check_memory();
    if (g > 0) {
        int st;
        WL_CHECK(waitpid(g, &st, 0) == g, "unmapper: waitpid(grandchild): %m");
        WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "grandchild failed (status %#x)", st);
    }
    wl_report(1, "ok");
}

static void make_file(void)
{
    int fd = open("cow_fork.dat", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        wl_fail("create cow_fork.dat: %m");
    static unsigned char page[PG];
    for (size_t k = 0; k < F_PAGES; k++) {
        fill_page(page, S_F + k);
        if (pwrite(fd, page, PG, (off_t)(k * PG)) != (ssize_t)PG)
            wl_fail("write cow_fork.dat: %m");
    }
    F = mmap(NULL, F_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (F == MAP_FAILED)
        wl_fail("mmap cow_fork.dat: %m");
    close(fd);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 16;
    int readers = argc > 3 ? atoi(argv[3]) : 2;
    plain = argc > 4 && strcmp(argv[4], "plain") == 0;
    if (mib < 1)
        wl_fail("SIZE_MIB must be at least 1");
    a_pages = mib * (1 << 20) / PG;

    A = mmap(NULL, a_pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (A == MAP_FAILED)
        wl_fail("mmap A: %m");
    for (size_t k = 0; k < a_pages; k++)
        fill_page(A + k * PG, S_A + k);
    H = sbrk(0);
    if (sbrk(H_SIZE) == (void *)-1)
        wl_fail("sbrk: %m");
    for (size_t k = 0; k < H_SIZE / PG; k++)
        fill_page(H + k * PG, S_H + k);
    make_file();
    for (size_t k = 0; k < F_COW; k++)
        fill_page(F + k * PG, S_FP + k);

    int n = readers + (plain ? 0 : 2);
    if (pipe2(setup_pipe, O_CLOEXEC) < 0)
        wl_fail("pipe: %m");
    pid_t kids[64];
    if (n > 64)
        wl_fail("too many children");
    for (int i = 0; i < n; i++) {
        pid_t c = fork();
        if (c < 0)
            wl_fail("fork: %m");
        if (c == 0) {
            me = i < readers ? READER : i == readers ? WRITER : UNMAPPER;
            child_main();
        }
        kids[i] = c;
    }
    if (!plain) {
        fill_page(A + 1 * PG, S_AP + 1);
        fill_page(A + 5 * PG, S_AP + 5);
        fill_page(F + 2 * PG, S_FPW + 2);
    }
    layout(layout_before, sizeof layout_before);
    close(setup_pipe[1]);
    for (int got = 0; got < n + (plain ? 0 : 1);) {
        char c;
        ssize_t r = read(setup_pipe[0], &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != 1)
            wl_fail("a child died during its setup (see out.log)");
        got++;
    }
    close(setup_pipe[0]);
    wl_ready();
    wait_verify();
    check_memory();
    for (int i = 0; i < n; i++) {
        int st;
        WL_CHECK(waitpid(kids[i], &st, 0) == kids[i], "waitpid(child %d): %m", i);
        WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d (%s) failed (status %#x)", i,
                 i < readers ? "reader" : i == readers ? "writer" : "unmapper", st);
    }
    wl_report(1, "ok: %d children", n);
}
