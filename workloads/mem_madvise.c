/*
 * mem_madvise.c - madvise state of private anonymous memory.
 *
 * State tested (each region 1 MiB, 4 MiB for HUGEPAGE, filled with a pattern):
 *   - DF: MADV_DONTFORK   (VmFlags dc): a child forked later does not have it
 *   - WF: MADV_WIPEONFORK (VmFlags wf): a child forked later reads zeros there
 *   - HG: MADV_HUGEPAGE   (VmFlags hg)
 *   - NH: MADV_NOHUGEPAGE (VmFlags nh)
 *   - DD: MADV_DONTDUMP   (VmFlags dd)
 *   - a child forked before the checkpoint: DF absent, WF wiped then rewritten
 *     by the child with its own pattern (copy-on-write sharing must not hand it
 *     the parent's data), the others as the parent's.
 * After restore every process checks contents and VmFlags, and the parent
 * forks a new child that checks what fork does with each region.
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
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1UL << 20)

struct region {
    const char *name;
    int advice;
    const char *flag;
    size_t size;
    unsigned char *addr;
    uint64_t seed;
};

static struct region R[] = {
    {"DONTFORK", MADV_DONTFORK, "dc", MIB, NULL, 0xD1},
    {"WIPEONFORK", MADV_WIPEONFORK, "wf", MIB, NULL, 0xD2},
    {"HUGEPAGE", MADV_HUGEPAGE, "hg", 4 * MIB, NULL, 0xD3},
    {"NOHUGEPAGE", MADV_NOHUGEPAGE, "nh", MIB, NULL, 0xD4},
    {"DONTDUMP", MADV_DONTDUMP, "dd", MIB, NULL, 0xD5},
};
#define NR (sizeof R / sizeof R[0])
#define SEED_CHILD_WF 0xC2

static char smaps[1 << 20];

/* VmFlags of the mapping holding addr ("" if none). */
static const char *vmflags_of(void *addr, char *out, size_t cap)
{
    int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        wl_fail("open smaps: %m");
    size_t len = 0;
    ssize_t r;
    while ((r = read(fd, smaps + len, sizeof smaps - 1 - len)) > 0)
        len += (size_t)r;
    close(fd);
    smaps[len] = 0;
    out[0] = 0;
    int inside = 0;
    for (char *line = smaps; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        unsigned long a, b;
        char c;
        if (sscanf(line, "%lx-%lx %c", &a, &b, &c) == 3)
            inside = (uintptr_t)addr >= a && (uintptr_t)addr < b;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0)
            snprintf(out, cap, "%s ", line + 8);
        if (!nl)
            break;
        line = nl + 1;
    }
    return out;
}

static int has_flag(const char *flags, const char *f)
{
    char pat[8];
    snprintf(pat, sizeof pat, " %s ", f);
    return strstr(flags, pat) != NULL;
}

static int is_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static int mapped(void *p)
{
    unsigned char v;
    return mincore(p, 4096, &v) == 0;
}

/* Checks common to every process; `child` is 0 in the parent, 1 in the old
 * child (forked before the checkpoint), 2 in a child forked after restore. */
static void check(int child)
{
    const char *who = child == 0 ? "parent" : child == 1 ? "old child" : "new child";
    char flags[512];
    for (size_t i = 0; i < NR; i++) {
        struct region *r = &R[i];
        if (child && r->advice == MADV_DONTFORK) {
            WL_CHECK(!mapped(r->addr), "%s: %s region is mapped after fork", who, r->name);
            continue;
        }
        if (child == 1 && r->advice == MADV_WIPEONFORK)
            WL_CHECK(wl_check_pattern(r->addr, r->size, SEED_CHILD_WF),
                     "%s: its own data in the %s region differs", who, r->name);
        else if (child == 2 && r->advice == MADV_WIPEONFORK)
            WL_CHECK(is_zero(r->addr, r->size), "%s: %s region not wiped by fork", who, r->name);
        else
            WL_CHECK(wl_check_pattern(r->addr, r->size, r->seed), "%s: %s region content differs",
                     who, r->name);
        vmflags_of(r->addr, flags, sizeof flags);
        WL_CHECK(has_flag(flags, r->flag), "%s: %s region VmFlags [%s] lack %s", who, r->name,
                 flags, r->flag);
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    for (size_t i = 0; i < NR; i++) {
        struct region *r = &R[i];
        /* 2 MiB aligned, so that HUGEPAGE can use huge pages */
        unsigned char *p = mmap(NULL, r->size + 2 * MIB, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            wl_fail("mmap: %m");
        unsigned char *a = (unsigned char *)(((uintptr_t)p + 2 * MIB - 1) & ~(2 * MIB - 1));
        if (a > p)
            munmap(p, (size_t)(a - p));
        munmap(a + r->size, (size_t)(p + r->size + 2 * MIB - (a + r->size)));
        if (madvise(a, r->size, r->advice) < 0)
            wl_fail("madvise %s: %m", r->name);
        r->addr = a;
        wl_fill_pattern(a, r->size, r->seed);
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        wl_fail("pipe: %m");
    pid_t old = fork();
    if (old < 0)
        wl_fail("fork: %m");
    if (old == 0) {
        close(pfd[0]);
        wl_fill_pattern(R[1].addr, R[1].size, SEED_CHILD_WF);
        if (write(pfd[1], "x", 1) != 1)
            _exit(3);
        close(pfd[1]);
        while (!wl_verify_requested())
            wl_sleep_ms(20);
        check(1);
        wl_report(1, "ok");
    }
    close(pfd[1]);
    char c;
    if (read(pfd[0], &c, 1) != 1)
        wl_fail("the child died during its setup");
    close(pfd[0]);
    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);
    check(0);
    pid_t fresh = fork();
    if (fresh < 0)
        wl_fail("fork after restore: %m");
    if (fresh == 0) {
        check(2);
        wl_report(1, "ok");
    }
    int st;
    WL_CHECK(waitpid(fresh, &st, 0) == fresh && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "the child forked at verify failed (status %#x)", st);
    WL_CHECK(waitpid(old, &st, 0) == old && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "the child forked before the checkpoint failed (status %#x)", st);
    wl_report(1, "ok");
}
