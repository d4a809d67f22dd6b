/*
 * mem_hugetlb.c - hugetlb mappings and hugetlb memfds (2 MiB pages).
 *
 * State tested (the test sets /proc/sys/vm/nr_hugepages first):
 *   - P: a private anonymous MAP_HUGETLB mapping of 3 huge pages: page 0 and 2
 *     written, page 1 never touched (it must stay absent: 4 MiB of huge pages).
 *   - S: a shared anonymous MAP_HUGETLB mapping of 2 huge pages
 *     ("/anon_hugepage (deleted)"), shared with a child.
 *   - F: memfd_create("hh_huge", MFD_HUGETLB|MFD_ALLOW_SEALING), 3 huge pages
 *     (ftruncate), sealed against shrinking and growing, kept open; filled
 *     through M1 (a shared mapping of all of it, page 1 untouched), mapped
 *     shared a second time (M2: offset 2 MiB, 2 pages long, aliasing M1's
 *     pages 1-2) and privately (MP: page 0 rewritten
 *     privately, page 2 the file's).
 *   - G: a second hugetlb memfd ("hh_only"), 1 huge page, only open (the
 *     mapping that filled it is gone): content through pread.
 *   - V: a System V segment with SHM_HUGETLB (1 huge page), attached.
 *   - a child forked after all this: P page 2 rewritten by both with
 *     different data after the fork; the child shares S and F with the parent.
 * After restore each process checks addresses (the pointers it keeps),
 * contents, KernelPageSize/MMUPageSize 2048 kB and VmFlags "ht" in smaps, the
 * maps names, the huge pages P and the memfds hold (untouched pages stay
 * absent), F's name, size and seals, and that S, M1/M2 and V are shared (a
 * write by one process is seen by the other, M1 and M2 alias).
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
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HP (2UL << 20)
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26)
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif

static unsigned char *P, *S, *M1, *M2, *MP, *V;
static int F = -1, G = -1, shmid = -1;
static int is_child;

struct vma {
    unsigned long start, end, ino;
    char perms[8];
    char path[PATH_MAX];
    unsigned long kps, mmu, rss; /* rss: Shared_ + Private_Hugetlb */
    char flags[256];
};

static char smaps[1 << 20];

/* The smaps entry holding addr. */
static int vma_of(const void *addr, struct vma *out)
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
    int found = 0;
    for (char *l = smaps; *l;) {
        char *nl = strchr(l, '\n');
        if (nl)
            *nl = 0;
        unsigned long a, b, off;
        char dev[16], perms[8];
        unsigned long ino;
        int n = 0;
        if (sscanf(l, "%lx-%lx %7s %lx %15s %lu %n", &a, &b, perms, &off, dev, &ino, &n) >= 6 &&
            strchr(l, '-') < strchr(l, ' ')) {
            if (found)
                return 1;
            if ((uintptr_t)addr >= a && (uintptr_t)addr < b) {
                found = 1;
                memset(out, 0, sizeof *out);
                out->start = a;
                out->end = b;
                out->ino = ino;
                snprintf(out->perms, sizeof out->perms, "%s", perms);
                snprintf(out->path, sizeof out->path, "%s", n > 0 ? l + n : "");
            }
        } else if (found) {
            unsigned long v;
            if (sscanf(l, "KernelPageSize: %lu kB", &v) == 1)
                out->kps = v;
            else if (sscanf(l, "MMUPageSize: %lu kB", &v) == 1)
                out->mmu = v;
            else if (sscanf(l, "Shared_Hugetlb: %lu kB", &v) == 1 ||
                     sscanf(l, "Private_Hugetlb: %lu kB", &v) == 1)
                out->rss += v;
            else if (strncmp(l, "VmFlags:", 8) == 0)
                snprintf(out->flags, sizeof out->flags, "%s", l + 8);
        }
        if (!nl)
            break;
        l = nl + 1;
    }
    return found;
}

/* addr..addr+len is one hugetlb mapping with these perms and name. */
static void check_vma(const char *who, const char *what, const void *addr, size_t len,
                      const char *perms, const char *path)
{
    struct vma v;
    WL_CHECK(vma_of(addr, &v), "%s: %s at %p is not mapped", who, what, addr);
    WL_CHECK(v.start == (uintptr_t)addr && v.end == (uintptr_t)addr + len,
             "%s: %s is %#lx-%#lx, expected %p-%#lx", who, what, v.start, v.end, addr,
             (unsigned long)((uintptr_t)addr + len));
    WL_CHECK(v.kps == 2048 && v.mmu == 2048, "%s: %s KernelPageSize %lu kB MMUPageSize %lu kB",
             who, what, v.kps, v.mmu);
    WL_CHECK(strstr(v.flags, " ht") != NULL, "%s: %s VmFlags lack ht:%s", who, what, v.flags);
    WL_CHECK(strcmp(v.perms, perms) == 0, "%s: %s is %s, expected %s", who, what, v.perms,
             perms);
    WL_CHECK(strcmp(v.path, path) == 0, "%s: %s maps [%s], expected [%s]", who, what, v.path,
             path);
}

static uint64_t p_seed(int k)
{
    if (k == 2)
        return is_child ? 0x6602 : 0x6502;
    return 0x6000 + k;
}

/* Page k of memfd F as the file holds it. */
static uint64_t f_seed(int k)
{
    return 0x7000 + k;
}

static int is_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static void check(void)
{
    const char *who = is_child ? "child" : "parent";
    char want[PATH_MAX];

    /* P: untouched page 1 still absent before anything reads it. */
    check_vma(who, "P", P, 3 * HP, "rw-p", "/anon_hugepage (deleted)");
    struct vma v;
    vma_of(P, &v);
    if (!is_child)
        WL_CHECK(v.rss == 4096, "%s: P holds %lu kB of huge pages, expected 4096 (page 1 untouched)", who, v.rss);
    WL_CHECK(wl_check_pattern(P, HP, p_seed(0)), "%s: P page 0 differs", who);
    WL_CHECK(wl_check_pattern(P + 2 * HP, HP, p_seed(2)), "%s: P page 2 differs", who);
    WL_CHECK(is_zero(P + HP, HP), "%s: P page 1 not zero", who);

    check_vma(who, "S", S, 2 * HP, "rw-s", "/anon_hugepage (deleted)");
    WL_CHECK(wl_check_pattern(S + HP, HP, 0x6800), "%s: S page 1 differs", who);

    snprintf(want, sizeof want, "/memfd:hh_huge (deleted)");
    check_vma(who, "M1", M1, 3 * HP, "rw-s", want);
    check_vma(who, "M2", M2, 2 * HP, "rw-s", want);
    check_vma(who, "MP", MP, 3 * HP, "rw-p", want);
    struct vma a, b;
    vma_of(M1, &a);
    vma_of(M2, &b);
    WL_CHECK(a.ino == b.ino, "%s: M1 and M2 are of two files (%lu, %lu)", who, a.ino, b.ino);
    WL_CHECK(wl_check_pattern(M1, HP, f_seed(0)), "%s: M1 page 0 differs", who);
    WL_CHECK(wl_check_pattern(M1 + 2 * HP, HP, f_seed(2)), "%s: M1 page 2 differs", who);
    WL_CHECK(wl_check_pattern(M2 + HP, HP, f_seed(2)), "%s: M2 page 1 differs", who);
    WL_CHECK(wl_check_pattern(MP, HP, 0x7100), "%s: MP page 0 (private) differs", who);
    WL_CHECK(wl_check_pattern(MP + 2 * HP, HP, f_seed(2)), "%s: MP page 2 differs", who);

    struct stat st;
    WL_CHECK(fstat(F, &st) == 0 && st.st_size == (off_t)(3 * HP) && st.st_blksize == (long)HP,
             "%s: F size %ld blksize %ld", who, (long)st.st_size, (long)st.st_blksize);
    WL_CHECK(st.st_blocks == (blkcnt_t)(2 * HP / 512),
             "%s: F holds %ld blocks of 512 bytes, expected pages 0 and 2 only (page 1 untouched)",
             who, (long)st.st_blocks);
    WL_CHECK(st.st_ino == a.ino, "%s: F (ino %lu) is not M1's file (%lu)", who,
             (unsigned long)st.st_ino, a.ino);
    int seals = fcntl(F, F_GET_SEALS);
    WL_CHECK(seals == (F_SEAL_SHRINK | F_SEAL_GROW), "%s: F seals %#x", who, seals);
    char link[PATH_MAX] = {0}, fdp[64];
    snprintf(fdp, sizeof fdp, "/proc/self/fd/%d", F);
    WL_CHECK(readlink(fdp, link, sizeof link - 1) > 0 &&
                 strcmp(link, "/memfd:hh_huge (deleted)") == 0,
             "%s: F is [%s]", who, link);
    static unsigned char buf[2 << 20];
    WL_CHECK(pread(F, buf, HP, 2 * HP) == (ssize_t)HP && wl_check_pattern(buf, HP, f_seed(2)),
             "%s: pread of F page 2 differs", who);
    WL_CHECK(ftruncate(F, HP) < 0 && errno == EPERM, "%s: F shrank despite its seal", who);

    snprintf(fdp, sizeof fdp, "/proc/self/fd/%d", G);
    memset(link, 0, sizeof link);
    WL_CHECK(readlink(fdp, link, sizeof link - 1) > 0 &&
                 strcmp(link, "/memfd:hh_only (deleted)") == 0,
             "%s: G is [%s]", who, link);
    WL_CHECK(fstat(G, &st) == 0 && st.st_size == (off_t)HP && st.st_blksize == (long)HP,
             "%s: G size %ld blksize %ld", who, (long)st.st_size, (long)st.st_blksize);
    WL_CHECK(st.st_blocks == (blkcnt_t)(HP / 512), "%s: G holds %ld blocks", who,
             (long)st.st_blocks);
    WL_CHECK(pread(G, buf, HP, 0) == (ssize_t)HP && wl_check_pattern(buf, HP, 0x7800),
             "%s: G differs", who);

    snprintf(want, sizeof want, "/SYSV00000000 (deleted)");
    check_vma(who, "V", V, HP, "rw-s", want);
    WL_CHECK(wl_check_pattern(V, HP, 0x7900), "%s: V differs", who);
    struct shmid_ds ds;
    WL_CHECK(shmctl(shmid, IPC_STAT, &ds) == 0 && ds.shm_segsz == HP && ds.shm_nattch == 2,
             "%s: V segment %d: %m, size %zu nattch %lu", who, shmid, (size_t)ds.shm_segsz,
             (unsigned long)ds.shm_nattch);
}

/* Once both checked: the parent writes into S, M1 and V; the child sees it and answers. */
static void check_sharing(int to, int from)
{
    char x;
    if (!is_child) {
        WL_CHECK(read(from, &x, 1) == 1 && x == 'c', "parent: the child did not finish checking");
        memset(S, 0x5a, 64);
        memset(M1 + 2 * HP, 0x5b, 64);
        memset(V + 100, 0x5c, 64);
        WL_CHECK(M2[HP] == 0x5b, "parent: M2 does not alias M1");
        WL_CHECK(pread(F, &x, 1, 2 * HP) == 1 && x == 0x5b, "parent: F does not see M1's write");
        WL_CHECK(write(to, "w", 1) == 1, "parent: pipe: %m");
        WL_CHECK(read(from, &x, 1) == 1 && x == 'a', "parent: the child did not answer");
        WL_CHECK(S[HP] == 0x3c && M1[0] == 0x3d && V[0] == 0x3e,
                 "parent: the child's writes are not seen (S %#x M1 %#x V %#x)", S[HP], M1[0],
                 V[0]);
    } else {
        WL_CHECK(write(to, "c", 1) == 1, "child: pipe: %m");
        WL_CHECK(read(from, &x, 1) == 1 && x == 'w', "child: no word from the parent");
        WL_CHECK(S[0] == 0x5a && M1[2 * HP] == 0x5b && V[100] == 0x5c,
                 "child: the parent's writes are not seen (S %#x M1 %#x V %#x)", S[0],
                 M1[2 * HP], V[100]);
        S[HP] = 0x3c;
        M1[0] = 0x3d;
        V[0] = 0x3e;
        WL_CHECK(write(to, "a", 1) == 1, "child: pipe: %m");
    }
}

static void *map(size_t len, int prot, int flags, int fd, off_t off, const char *what)
{
    void *p = mmap(NULL, len, prot, flags, fd, off);
    if (p == MAP_FAILED)
        wl_fail("mmap %s: %m (are huge pages reserved? /proc/sys/vm/nr_hugepages)", what);
    return p;
}

static void setup(void)
{
    int rw = PROT_READ | PROT_WRITE;
    P = map(3 * HP, rw, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0, "P");
    wl_fill_pattern(P, HP, 0x6000);
    wl_fill_pattern(P + 2 * HP, HP, 0x6002);
    S = map(2 * HP, rw, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0, "S");
    wl_fill_pattern(S + HP, HP, 0x6800);

    F = memfd_create("hh_huge", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB | MFD_ALLOW_SEALING);
    if (F < 0 || ftruncate(F, 3 * HP) < 0)
        wl_fail("memfd hh_huge: %m");
    M1 = map(3 * HP, rw, MAP_SHARED, F, 0, "M1");
    wl_fill_pattern(M1, HP, f_seed(0));
    wl_fill_pattern(M1 + 2 * HP, HP, f_seed(2));
    M2 = map(2 * HP, rw, MAP_SHARED, F, HP, "M2");
    MP = map(3 * HP, rw, MAP_PRIVATE, F, 0, "MP");
    wl_fill_pattern(MP, HP, 0x7100);
    if (fcntl(F, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
        wl_fail("seal: %m");

    G = memfd_create("hh_only", MFD_CLOEXEC | MFD_HUGETLB);
    if (G < 0 || ftruncate(G, HP) < 0)
        wl_fail("memfd hh_only: %m");
    unsigned char *g = map(HP, rw, MAP_SHARED, G, 0, "G");
    wl_fill_pattern(g, HP, 0x7800);
    munmap(g, HP);

    shmid = shmget(IPC_PRIVATE, HP, IPC_CREAT | SHM_HUGETLB | 0600);
    if (shmid < 0)
        wl_fail("shmget SHM_HUGETLB: %m");
    V = shmat(shmid, NULL, 0);
    if (V == (void *)-1)
        wl_fail("shmat: %m");
    shmctl(shmid, IPC_RMID, NULL);
    wl_fill_pattern(V, HP, 0x7900);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    setup();
    int down[2], up[2];
    if (pipe2(down, O_CLOEXEC) < 0 || pipe2(up, O_CLOEXEC) < 0)
        wl_fail("pipe: %m");
    pid_t c = fork();
    if (c < 0)
        wl_fail("fork: %m");
    if (c == 0) {
        is_child = 1;
        wl_fill_pattern(P + 2 * HP, HP, p_seed(2));
        if (write(up[1], "x", 1) != 1)
            _exit(3);
        while (!wl_verify_requested())
            wl_sleep_ms(20);
        check();
        check_sharing(up[1], down[0]);
        wl_report(1, "ok");
    }
    wl_fill_pattern(P + 2 * HP, HP, p_seed(2));
    char x;
    if (read(up[0], &x, 1) != 1)
        wl_fail("the child died during its setup");
    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);
    check();
    check_sharing(down[1], up[0]);
    int st;
    WL_CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "the child failed (status %#x)", st);
    wl_report(1, "ok");
}
