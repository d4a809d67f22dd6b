/*
 * vdso_stopped.c - the vdso of processes stopped by job control.
 *
 * The root (session leader) forks:
 *   tstp  own process group, one thread, stopped by SIGTSTP (the stop collected)
 *   stop  two threads, stopped by SIGSTOP (not collected)
 *   self  stops itself with raise(SIGSTOP) (stopped at the end of a system call)
 * The threads spin calling clock_gettime through the vdso, so most are stopped with their
 * instruction pointer inside it.
 * Each child records its [vdso], [vvar] and [vvar_vclock] lines of /proc/self/maps and
 * getauxval(AT_SYSINFO_EHDR) in a shared page, checks its vdso once, and spins until told to
 * verify. Verify: each child is stopped (state T); the root writes "go" in the shared page and
 * sends SIGCONT; in every thread of every child (and in the root): the maps lines are the same
 * as before, AT_SYSINFO_EHDR is the [vdso] start, and clock_gettime (MONOTONIC, REALTIME,
 * BOOTTIME, MONOTONIC_COARSE), gettimeofday, time and getcpu called through the vdso (symbols
 * found in its ELF dynamic symbol table) and through glibc agree with the system calls.
 */
#define _GNU_SOURCE
#include "common.h"

#include <elf.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { TSTP, STOP, SELF, NC };
static const char *names[NC] = {"tstp", "stop", "self"};

struct shared {
    volatile int go;
    volatile uint64_t spin[NC][2];
    char maps[NC][512];
    unsigned long ehdr[NC];
    /* per child, per thread: 0 not yet, 1 pass, 2 fail */
    volatile int done[NC][2];
    char why[NC][2][256];
};
static struct shared *sh;

typedef int (*clock_gettime_t)(clockid_t, struct timespec *);
typedef int (*gettimeofday_t)(struct timeval *, void *);
typedef time_t (*time_t_fn)(time_t *);
typedef long (*getcpu_t)(unsigned *, unsigned *, void *);

static void special_lines(char *out, size_t cap)
{
    out[0] = 0;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return;
    char line[512];
    size_t len = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "[vdso]") || strstr(line, "[vvar]") || strstr(line, "[vvar_vclock]")) {
            size_t n = strlen(line);
            if (len + n < cap) {
                memcpy(out + len, line, n + 1);
                len += n;
            }
        }
    }
    fclose(f);
}

static unsigned long vdso_start_in_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "re");
    char line[512];
    unsigned long a = 0, b;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "[vdso]")) {
            sscanf(line, "%lx-%lx", &a, &b);
            break;
        }
    if (f)
        fclose(f);
    return a;
}

/* A symbol of the vdso at base, from its dynamic symbol table (section headers). */
static void *vdso_sym(unsigned long base, const char *name)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)base;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG))
        return NULL;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(base + eh->e_phoff);
    long load = -1;
    for (int i = 0; i < eh->e_phnum; i++)
        if (ph[i].p_type == PT_LOAD) {
            load = (long)ph[i].p_vaddr;
            break;
        }
    if (load < 0)
        return NULL;
    const Elf64_Shdr *shd = (const Elf64_Shdr *)(base + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; i++) {
        if (shd[i].sh_type != SHT_DYNSYM)
            continue;
        const Elf64_Sym *sym = (const Elf64_Sym *)(base + shd[i].sh_offset);
        const char *str = (const char *)(base + shd[shd[i].sh_link].sh_offset);
        size_t n = shd[i].sh_size / shd[i].sh_entsize;
        for (size_t j = 0; j < n; j++)
            if (sym[j].st_name && !strcmp(str + sym[j].st_name, name) && sym[j].st_value)
                return (void *)(base + sym[j].st_value - (unsigned long)load);
    }
    return NULL;
}

static long long ns(const struct timespec *t)
{
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

/* Check the vdso of the calling thread; 0 and a reason on failure. */
static int check_vdso(const char *saved_maps, unsigned long saved_ehdr, char *why, size_t cap)
{
    char now[512];
    special_lines(now, sizeof now);
    if (strcmp(now, saved_maps)) {
        snprintf(why, cap, "vdso/vvar maps lines changed: '%s' then '%s'", saved_maps, now);
        return 0;
    }
    unsigned long ehdr = getauxval(AT_SYSINFO_EHDR);
    if (ehdr != saved_ehdr || ehdr != vdso_start_in_maps() || !ehdr) {
        snprintf(why, cap, "AT_SYSINFO_EHDR %#lx (was %#lx), [vdso] at %#lx", ehdr, saved_ehdr,
                 vdso_start_in_maps());
        return 0;
    }
    clock_gettime_t cg = (clock_gettime_t)vdso_sym(ehdr, "__vdso_clock_gettime");
    gettimeofday_t gtod = (gettimeofday_t)vdso_sym(ehdr, "__vdso_gettimeofday");
    time_t_fn tm = (time_t_fn)vdso_sym(ehdr, "__vdso_time");
    getcpu_t gc = (getcpu_t)vdso_sym(ehdr, "__vdso_getcpu");
    if (!cg || !gtod || !tm || !gc) {
        snprintf(why, cap, "vdso symbols missing: clock_gettime %p gettimeofday %p time %p getcpu %p",
                 (void *)cg, (void *)gtod, (void *)tm, (void *)gc);
        return 0;
    }
    static const clockid_t clocks[] = {CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME,
                                       CLOCK_MONOTONIC_RAW};
    for (size_t i = 0; i < sizeof clocks / sizeof clocks[0]; i++) {
        struct timespec a, v, g, b;
        syscall(SYS_clock_gettime, clocks[i], &a);
        int r1 = cg(clocks[i], &v);
        int r2 = clock_gettime(clocks[i], &g);
        syscall(SYS_clock_gettime, clocks[i], &b);
        if (r1 || r2 || ns(&v) < ns(&a) || ns(&v) > ns(&b) || ns(&g) < ns(&v) || ns(&g) > ns(&b)) {
            snprintf(why, cap, "clock %d: syscall %lld, vdso %lld (%d), glibc %lld (%d), syscall %lld",
                     (int)clocks[i], ns(&a), ns(&v), r1, ns(&g), r2, ns(&b));
            return 0;
        }
    }
    struct timespec c0, c1;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC_COARSE, &c0);
    if (cg(CLOCK_MONOTONIC_COARSE, &c1) || ns(&c1) < ns(&c0) || ns(&c1) - ns(&c0) > 1000000000LL) {
        snprintf(why, cap, "MONOTONIC_COARSE: syscall %lld, vdso %lld", ns(&c0), ns(&c1));
        return 0;
    }
    struct timeval ta, tv, tb;
    syscall(SYS_gettimeofday, &ta, NULL);
    int r = gtod(&tv, NULL);
    syscall(SYS_gettimeofday, &tb, NULL);
    long long ua = ta.tv_sec * 1000000LL + ta.tv_usec, uv = tv.tv_sec * 1000000LL + tv.tv_usec,
              ub = tb.tv_sec * 1000000LL + tb.tv_usec;
    if (r || uv < ua || uv > ub) {
        snprintf(why, cap, "gettimeofday: syscall %lld, vdso %lld (%d), syscall %lld", ua, uv, r, ub);
        return 0;
    }
    time_t t0 = (time_t)syscall(SYS_time, NULL);
    time_t t1 = tm(NULL);
    time_t t2 = time(NULL);
    time_t t3 = (time_t)syscall(SYS_time, NULL);
    if (t1 < t0 || t1 > t3 || t2 < t1 || t2 > t3) {
        snprintf(why, cap, "time: syscall %ld, vdso %ld, glibc %ld, syscall %ld", (long)t0,
                 (long)t1, (long)t2, (long)t3);
        return 0;
    }
    int agreed = 0;
    unsigned cv = 0, nv = 0, cs = 0, ns_ = 0;
    for (int i = 0; i < 1000 && !agreed; i++) {
        if (gc(&cv, &nv, NULL) || syscall(SYS_getcpu, &cs, &ns_, NULL)) {
            snprintf(why, cap, "getcpu failed: %s", strerror(errno));
            return 0;
        }
        agreed = cv == cs && nv == ns_;
    }
    if (!agreed) {
        snprintf(why, cap, "getcpu: vdso cpu %u node %u, syscall cpu %u node %u", cv, nv, cs, ns_);
        return 0;
    }
    return 1;
}

struct targ {
    int c, t;
};

static void *thread_main(void *arg)
{
    struct targ *a = arg;
    clock_gettime_t cg = (clock_gettime_t)vdso_sym(getauxval(AT_SYSINFO_EHDR), "__vdso_clock_gettime");
    struct timespec ts;
    if (a->c == SELF) {
        sh->spin[a->c][a->t] = 1000;
        raise(SIGSTOP);
    }
    while (!sh->go) {
        cg(CLOCK_MONOTONIC, &ts);
        sh->spin[a->c][a->t]++;
    }
    int ok = check_vdso(sh->maps[a->c], sh->ehdr[a->c], sh->why[a->c][a->t], sizeof sh->why[0][0]);
    sh->done[a->c][a->t] = ok ? 1 : 2;
    return NULL;
}

static void child(int c)
{
    if (c == TSTP)
        setpgid(0, 0);
    special_lines(sh->maps[c], sizeof sh->maps[c]);
    sh->ehdr[c] = getauxval(AT_SYSINFO_EHDR);
    char why[256];
    if (!check_vdso(sh->maps[c], sh->ehdr[c], why, sizeof why))
        wl_fail("%s before the stop: %s", names[c], why);
    static struct targ args[2];
    pthread_t t;
    args[1] = (struct targ){c, 1};
    if (c == STOP && pthread_create(&t, NULL, thread_main, &args[1]))
        wl_fail("pthread_create");
    if (c != STOP)
        sh->done[c][1] = 1;
    args[0] = (struct targ){c, 0};
    thread_main(&args[0]);
    if (c == STOP)
        pthread_join(t, NULL);
    _exit(0);
}

static char state_of(pid_t pid)
{
    char p[64], buf[512];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "re");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : '?';
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        wl_fail("mmap: %m");
    char root_maps[512];
    special_lines(root_maps, sizeof root_maps);
    unsigned long root_ehdr = getauxval(AT_SYSINFO_EHDR);
    pid_t kid[NC];
    for (int c = 0; c < NC; c++) {
        kid[c] = fork();
        if (kid[c] < 0)
            wl_fail("fork: %m");
        if (kid[c] == 0)
            child(c);
        if (c == TSTP)
            setpgid(kid[c], kid[c]);
    }
    /* running, threads started */
    for (int c = 0; c < NC; c++)
        for (int t = 0; t < (c == STOP ? 2 : 1); t++)
            while (sh->spin[c][t] < 1000)
                wl_sleep_ms(1);
    kill(kid[TSTP], SIGTSTP);
    kill(kid[STOP], SIGSTOP);
    int st;
    if (waitpid(kid[TSTP], &st, WUNTRACED) != kid[TSTP] || !WIFSTOPPED(st))
        wl_fail("tstp did not stop (status %#x)", st);
    for (int c = STOP; c < NC; c++) {
        for (int i = 0; i < 1000 && state_of(kid[c]) != 'T'; i++)
            wl_sleep_ms(1);
        if (state_of(kid[c]) != 'T')
            wl_fail("%s did not stop", names[c]);
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(10);

    char why[256];
    WL_CHECK(check_vdso(root_maps, root_ehdr, why, sizeof why), "root: %s", why);
    for (int c = 0; c < NC; c++)
        WL_CHECK(state_of(kid[c]) == 'T', "%s: state %c, expected T", names[c], state_of(kid[c]));
    sh->go = 1;
    for (int c = 0; c < NC; c++)
        kill(kid[c], SIGCONT);
    for (int c = 0; c < NC; c++) {
        pid_t w;
        do
            w = waitpid(kid[c], &st, 0);
        while (w < 0 && errno == EINTR);
        WL_CHECK(w == kid[c] && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: status %#x", names[c], st);
        for (int t = 0; t < 2; t++)
            WL_CHECK(sh->done[c][t] == 1, "%s thread %d: %s", names[c], t,
                     sh->done[c][t] ? sh->why[c][t] : "never checked");
    }
    wl_report(1, "ok");
}
