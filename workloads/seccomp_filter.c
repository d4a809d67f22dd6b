/*
 * seccomp_filter.c - seccomp filters: stacked, shared between threads (TSYNC),
 * inherited across fork, per thread.
 *
 * Usage: seccomp_filter CTL_DIR [nonnp|nonroot|notif]
 *
 * Filters (x86_64 syscall numbers; anything else is allowed):
 *   F1 (main, TSYNC: every thread): getpriority -> ERRNO(EPERM);
 *      getitimer and setgroups -> KILL_PROCESS.  Stasis injects getitimer
 *      when it checkpoints and setgroups when it restores credentials: both
 *      only get through with seccomp suspended for the tracee.
 *   F2 (main only):  sched_getscheduler -> ERRNO(ENOTTY)
 *   F3 (thread T2):  sched_getparam -> ERRNO(EXDEV)
 *   child C (forked by main after F2, so it inherits F1+F2) adds
 *   F4: getpriority -> ERRNO(EDOM) (same precedence as F1's EPERM: the most
 *       recent filter's data wins) and
 *   F5 (SECCOMP_FILTER_FLAG_LOG): sched_get_priority_max -> ERRNO(EACCES).
 * So main has 2 filters, T1 1, T2 2, C 4.
 *
 * Modes:
 *   default: no_new_privs set before anything (what podman/docker usually do).
 *   nonnp:   no_new_privs stays 0; filters are installed with CAP_SYS_ADMIN,
 *            then every thread (and C) drops all its capabilities (uid stays
 *            0): a task that could not install a filter any more, as a
 *            container without no_new_privs.  Restore must install the
 *            filters before it sets the credentials.
 *   nonroot: as nonnp, but every thread (and C) drops to uid/gid 65534 with
 *            raw setresgid/setresuid (credentials are per thread) instead
 *            of capset: a container's unprivileged user (CTL_DIR is made
 *            0777 first so it can still report).
 *   notif:   main also installs a filter answering acct() with
 *            SECCOMP_RET_USER_NOTIF (its listener fd closed at once): checkpoint
 *            must refuse it (a restored filter cannot get a listener again),
 *            and the workload then verifies as usual.
 *
 * Verify (after any number of checkpoints/restores):
 *   - each thread and C call their syscalls and check result and errno;
 *   - /proc/thread-self/status: Seccomp 2, Seccomp_filters as above,
 *     NoNewPrivs 1 (in nonnp/nonroot 0, but 1 in T2, which sets it alone:
 *     it is per thread), CapEff 0 in nonnp/nonroot;
 *   - a grandchild forked at verify time calls getitimer and must die of
 *     SIGSYS (the KILL_PROCESS action is in force again);
 *   - default mode: main installs an allow-all filter with TSYNC, which must
 *     fail naming T2 (T1 shares main's F1 object, T2 has its own F3 on top):
 *     the chains are shared as before, not just equal;
 *     nonnp: the same call must fail with EACCES (no NNP, no CAP_SYS_ADMIN).
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int nonnp, nonroot, notif;
#define NOBODY 65534
static pid_t t_tid[2];
static volatile int step[2], done[2], go, fin;
static char terr[2][400];

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

static void nap(void)
{
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL); /* EINTR after a restore is fine */
}

/* Install a filter: n rules (syscall nr -> action), else allow. */
static long install(unsigned flags, int n, const int *nrs, const unsigned *acts)
{
    struct sock_filter f[64];
    int k = 0;
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, arch));
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, nr));
    for (int i = 0; i < n; i++) {
        f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nrs[i], 0, 1);
        f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, acts[i]);
    }
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {(unsigned short)k, f};
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static int drop_caps(void)
{
    if (nonroot)
        return syscall(SYS_setresgid, NOBODY, NOBODY, NOBODY) != 0 ||
                       syscall(SYS_setresuid, NOBODY, NOBODY, NOBODY) != 0
                   ? -1
                   : 0;
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    return (int)syscall(SYS_capset, &h, d);
}

/* A numeric field of /proc/thread-self/status (hex for Cap*), -1 if absent. */
static long long field(const char *key)
{
    FILE *f = fopen("/proc/thread-self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtoll(line + kl + 1, NULL, strncmp(key, "Cap", 3) == 0 ? 16 : 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Call syscall nr (no arguments that matter); "" if it failed with errno want
 * (want 0: must succeed), else a message in out. */
static void expect(char *out, size_t n, const char *who, const char *name, long nr, int want)
{
    struct sched_param sp;
    struct itimerval it;
    long r;
    errno = 0;
    if (nr == SYS_sched_getparam)
        r = syscall(nr, 0, &sp);
    else if (nr == SYS_getitimer)
        r = syscall(nr, ITIMER_REAL, &it);
    else if (nr == SYS_sched_get_priority_max)
        r = syscall(nr, SCHED_OTHER);
    else
        r = syscall(nr, 0, 0);
    int got = r < 0 ? errno : 0;
    if (got != want && !out[0])
        snprintf(out, n, "%s: %s returned %ld errno %d (%s), expected errno %d", who, name, r,
                 got, strerror(got), want);
}

/* Status checks of the calling thread (want_nnp: its NoNewPrivs). */
static void check_status(char *out, size_t n, const char *who, long filters, int want_nnp)
{
    long long mode = field("Seccomp"), nf = field("Seccomp_filters"), nnp = field("NoNewPrivs");
    long long eff = field("CapEff");
    if (out[0])
        return;
    if (mode != 2 || nf != filters)
        snprintf(out, n, "%s: Seccomp %lld Seccomp_filters %lld, expected 2 and %ld", who, mode,
                 nf, filters);
    else if (nnp != want_nnp)
        snprintf(out, n, "%s: NoNewPrivs %lld, expected %d", who, nnp, want_nnp);
    else if (nonnp && eff != 0)
        snprintf(out, n, "%s: CapEff %llx, expected 0 (capabilities dropped)", who, eff);
    else if (nonroot && (syscall(SYS_getuid) != NOBODY || syscall(SYS_getgid) != NOBODY))
        snprintf(out, n, "%s: uid %ld gid %ld, expected %d", who, syscall(SYS_getuid),
                 syscall(SYS_getgid), NOBODY);
}

static void *thread_main(void *arg)
{
    int i = (int)(long)arg;
    const char *who = i == 0 ? "T1" : "T2";
    t_tid[i] = gettid_();
    while (step[i] == 0)
        nap();
    if (i == 1) {
        /* no_new_privs is per thread: in the nonnp modes T2 alone sets it. */
        if (nonnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            snprintf(terr[i], sizeof terr[i], "T2: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
        int nr = SYS_sched_getparam;
        unsigned act = SECCOMP_RET_ERRNO | EXDEV;
        if (install(0, 1, &nr, &act) != 0)
            snprintf(terr[i], sizeof terr[i], "T2: installing F3: %s", strerror(errno));
    }
    if (nonnp && drop_caps() != 0 && !terr[i][0])
        snprintf(terr[i], sizeof terr[i], "%s: capset: %s", who, strerror(errno));
    done[i] = 1;
    while (!go)
        nap();
    char *e = terr[i];
    size_t n = sizeof terr[i];
    expect(e, n, who, "getpriority", SYS_getpriority, EPERM);
    expect(e, n, who, "sched_getscheduler", SYS_sched_getscheduler, 0);
    expect(e, n, who, "sched_getparam", SYS_sched_getparam, i == 1 ? EXDEV : 0);
    check_status(e, n, who, i == 1 ? 2 : 1, !nonnp || i == 1);
    done[i] = 2;
    while (!fin) /* stay until main's TSYNC probe has seen us */
        nap();
    return NULL;
}

/* Child C: add F4, F5; answer one verify request on its pipes. */
static void child_main(int req, int resp)
{
    char err[400] = "";
    int nr4 = SYS_getpriority, nr5 = SYS_sched_get_priority_max;
    unsigned a4 = SECCOMP_RET_ERRNO | EDOM, a5 = SECCOMP_RET_ERRNO | EACCES;
    if (install(0, 1, &nr4, &a4) != 0 || install(SECCOMP_FILTER_FLAG_LOG, 1, &nr5, &a5) != 0)
        snprintf(err, sizeof err, "C: installing F4/F5: %s", strerror(errno));
    if (nonnp && drop_caps() != 0 && !err[0])
        snprintf(err, sizeof err, "C: capset: %s", strerror(errno));
    char b = 'r';
    if (write(resp, &b, 1) != 1)
        _exit(2);
    while (read(req, &b, 1) < 0 && errno == EINTR)
        ;
    size_t n = sizeof err;
    expect(err, n, "C", "getpriority", SYS_getpriority, EDOM);
    expect(err, n, "C", "sched_getscheduler", SYS_sched_getscheduler, ENOTTY);
    expect(err, n, "C", "sched_get_priority_max", SYS_sched_get_priority_max, EACCES);
    expect(err, n, "C", "sched_getparam", SYS_sched_getparam, 0);
    check_status(err, n, "C", notif ? 5 : 4, !nonnp);
    if (!err[0])
        strcpy(err, "ok");
    ssize_t w = write(resp, err, strlen(err));
    _exit(w > 0 ? 0 : 3);
}

/* A grandchild calling getitimer must be killed with SIGSYS. */
static void check_kill(void)
{
    pid_t g = fork();
    if (g < 0)
        wl_fail("fork: %m");
    if (g == 0) {
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        prctl(PR_SET_DUMPABLE, 0);
        struct itimerval it;
        syscall(SYS_getitimer, ITIMER_REAL, &it);
        _exit(42);
    }
    int st;
    while (waitpid(g, &st, 0) < 0)
        if (errno != EINTR)
            wl_fail("waitpid grandchild: %m");
    WL_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS,
             "grandchild calling getitimer: status %#x, expected killed by SIGSYS", st);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    nonroot = argc > 2 && strcmp(argv[2], "nonroot") == 0;
    nonnp = nonroot || (argc > 2 && strcmp(argv[2], "nonnp") == 0);
    if (nonroot && chmod(wl_ctl_dir(), 0777) != 0)
        wl_fail("chmod CTL_DIR: %m");
    notif = argc > 2 && strcmp(argv[2], "notif") == 0;
    if (!nonnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        wl_fail("PR_SET_NO_NEW_PRIVS: %m");
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, thread_main, (void *)(long)i) != 0)
            wl_fail("pthread_create");
    while (!t_tid[0] || !t_tid[1])
        nap();
    int nr1[3] = {SYS_getpriority, SYS_getitimer, SYS_setgroups};
    unsigned a1[3] = {SECCOMP_RET_ERRNO | EPERM, SECCOMP_RET_KILL_PROCESS,
                      SECCOMP_RET_KILL_PROCESS};
    long r = install(SECCOMP_FILTER_FLAG_TSYNC, 3, nr1, a1);
    if (r != 0)
        wl_fail("installing F1 with TSYNC: %ld %m", r);
    int nr2 = SYS_sched_getscheduler;
    unsigned a2 = SECCOMP_RET_ERRNO | ENOTTY;
    if (install(0, 1, &nr2, &a2) != 0)
        wl_fail("installing F2: %m");
    if (notif) {
        int nrn = SYS_acct;
        unsigned an = SECCOMP_RET_USER_NOTIF;
        long fd = install(SECCOMP_FILTER_FLAG_NEW_LISTENER, 1, &nrn, &an);
        if (fd < 0)
            wl_fail("installing a USER_NOTIF filter: %m");
        close((int)fd);
    }
    step[1] = 1;
    while (!done[1])
        nap();
    int req[2], resp[2];
    if (pipe(req) < 0 || pipe(resp) < 0)
        wl_fail("pipe: %m");
    pid_t c = fork();
    if (c < 0)
        wl_fail("fork: %m");
    if (c == 0) {
        close(req[1]);
        close(resp[0]);
        child_main(req[0], resp[1]);
    }
    close(req[0]);
    close(resp[1]);
    char b;
    if (read(resp[0], &b, 1) != 1)
        wl_fail("child C did not start");
    step[0] = 1;
    while (!done[0])
        nap();
    if (nonnp && drop_caps() != 0)
        wl_fail("capset: %m");
    wl_ready();

    while (!wl_verify_requested())
        wl_sleep_ms(20);

    char err[400] = "";
    expect(err, sizeof err, "main", "getpriority", SYS_getpriority, EPERM);
    expect(err, sizeof err, "main", "sched_getscheduler", SYS_sched_getscheduler, ENOTTY);
    expect(err, sizeof err, "main", "sched_getparam", SYS_sched_getparam, 0);
    check_status(err, sizeof err, "main", notif ? 3 : 2, !nonnp);
    if (err[0])
        wl_fail("%s", err);
    go = 1;
    for (int i = 0; i < 2; i++) {
        while (done[i] != 2)
            nap();
        if (terr[i][0])
            wl_fail("%s", terr[i]);
    }
    /* Sharing: an allow-all filter with TSYNC from main, while T1 and T2 live. */
    int none = -1;
    unsigned allow = SECCOMP_RET_ALLOW;
    r = install(SECCOMP_FILTER_FLAG_TSYNC, 1, &none, &allow);
    if (nonnp)
        WL_CHECK(r == -1 && errno == EACCES,
                 "TSYNC filter without NNP or CAP_SYS_ADMIN returned %ld (%m), expected EACCES", r);
    else
        WL_CHECK(r == t_tid[1],
                 "TSYNC filter returned %ld (%m), expected T2's tid %d (T1 shares main's F1, "
                 "T2 has its own filter on top)",
                 r, t_tid[1]);
    fin = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    /* Child C. */
    b = 'v';
    if (write(req[1], &b, 1) != 1)
        wl_fail("writing to C: %m");
    char msg[400] = "";
    ssize_t k, got = 0;
    while ((k = read(resp[0], msg + got, sizeof msg - 1 - (size_t)got)) != 0) {
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            wl_fail("reading C's verdict: %m");
        got += k;
    }
    int st;
    while (waitpid(c, &st, 0) < 0)
        if (errno != EINTR)
            wl_fail("waitpid C: %m");
    WL_CHECK(strcmp(msg, "ok") == 0, "child C: %s (status %#x)", msg, st);
    check_kill();
    wl_report(1, "ok");
}
