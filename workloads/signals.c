/*
 * signals.c - signal state of a two-thread process across checkpoint/restore.
 *
 * Kernel state tested:
 *  - the whole sigaction table (every signal 1..64): handler / SIG_IGN /
 *    SIG_DFL, sa_flags (SA_SIGINFO, SA_RESTART, SA_NODEFER, SA_RESETHAND,
 *    SA_ONSTACK, SA_NOCLDSTOP, SA_RESTORER), sa_mask and sa_restorer;
 *  - per-thread blocked masks (main thread and second thread differ);
 *  - process-wide (shared) pending signals: SIGUSR1 sent twice with kill()
 *    (must stay coalesced into one), SIGRTMIN+1..+3 queued with sigqueue()
 *    carrying distinct sival_int payloads, SIGRTMIN+1 and +3 queued twice;
 *  - thread-private pending signals: SIGUSR2 sent with tgkill() to the
 *    second thread (must stay pending on that thread only);
 *  - siginfo of pending signals (si_code, si_pid, si_uid, si_value);
 *  - delivery order on unblock (lowest number first, rt FIFO per number);
 *  - sa_mask / SA_NODEFER effect on the mask while a handler runs;
 *  - SA_RESETHAND reset to SIG_DFL on delivery;
 *  - sigaltstack of the main thread (none on the second thread) and an
 *    SA_ONSTACK handler really running on the alternate stack.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000 /* x86_64 kernel ABI; glibc does not export it */
#endif

#define MAXSIG 64
#define ALTSTACK_SIZE (64 * 1024)
#define NREC 64

struct rec {
    int signo, code, val, pid, uid, siginfo;
    pid_t tid;
    uintptr_t addr;   /* address of a local variable of the handler */
    int ss_flags;     /* sigaltstack() flags seen inside the handler */
    sigset_t mask;    /* blocked mask seen inside the handler */
};

static struct rec recs[NREC];
static atomic_int nrec;

static void *altstack;
static pid_t main_tid, t2_tid;
static atomic_int phase;    /* set by main: 1 = check state, 2 = unblock SIGUSR2 */
static atomic_int t2_state; /* set by t2: 1 = started, 2 = phase1 done, 3 = phase2 done */
static char t2_err[512];    /* non-empty: t2 found a problem */

static int RT1, RT2, RT3, RT6, RT10;

static void record(int sig, siginfo_t *si)
{
    int saved = errno;
    volatile char local = 0;
    int i = atomic_fetch_add(&nrec, 1);
    if (i < NREC) {
        struct rec *r = &recs[i];
        r->signo = sig;
        r->siginfo = si != NULL;
        if (si) {
            r->code = si->si_code;
            r->pid = si->si_pid;
            r->uid = (int)si->si_uid;
            r->val = (si->si_code == SI_QUEUE) ? si->si_value.sival_int : 0;
        }
        r->tid = (pid_t)syscall(SYS_gettid);
        r->addr = (uintptr_t)&local;
        stack_t ss;
        memset(&ss, 0, sizeof ss);
        sigaltstack(NULL, &ss);
        r->ss_flags = ss.ss_flags;
        sigemptyset(&r->mask);
        pthread_sigmask(SIG_BLOCK, NULL, &r->mask);
    }
    (void)local;
    errno = saved;
}

static void h_info(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    record(sig, si);
}

static void h_plain(int sig)
{
    record(sig, NULL);
}

/* ---- signal set helpers (only signals 1..64 are meaningful) ---- */

static void set_of(sigset_t *s, const int *sigs)
{
    sigemptyset(s);
    for (; *sigs; sigs++)
        sigaddset(s, *sigs);
}

static int set_eq(const sigset_t *a, const sigset_t *b)
{
    for (int i = 1; i <= MAXSIG; i++)
        if (sigismember(a, i) != sigismember(b, i))
            return 0;
    return 1;
}

static char *set_str(const sigset_t *s, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 1; i <= MAXSIG && off + 8 < n; i++)
        if (sigismember(s, i) == 1)
            off += (size_t)snprintf(buf + off, n - off, "%s%d", off ? "," : "", i);
    if (off == 0)
        snprintf(buf, n, "(empty)");
    return buf;
}

/* ---- handler specification ---- */

struct spec {
    int sig;
    int kind;           /* 0 = SIG_DFL, 1 = SIG_IGN, 2 = h_info, 3 = h_plain */
    int flags;
    int mask[8];        /* zero-terminated */
};

#define NSPEC 24
static struct spec specs[NSPEC];
static int nspec;

/* The five test signals: blocked in both threads, and blocked by the
 * handlers of the main-thread signals so that handlers run one after the
 * other in dequeue order instead of nesting. */
#define TESTSET_SIGS SIGUSR1, SIGUSR2, RT1, RT2, RT3

static void build_specs(void)
{
    RT1 = SIGRTMIN + 1;
    RT2 = SIGRTMIN + 2;
    RT3 = SIGRTMIN + 3;
    RT6 = SIGRTMIN + 6;
    RT10 = SIGRTMIN + 10;
    struct spec s[] = {
        {SIGUSR1, 2, SA_SIGINFO | SA_RESTART, {TESTSET_SIGS, SIGTTIN, 0}},
        {SIGUSR2, 2, SA_SIGINFO | SA_NODEFER, {SIGTTOU, 0}},
        {RT1, 2, SA_SIGINFO, {TESTSET_SIGS, SIGXFSZ, 0}},
        {RT2, 2, SA_SIGINFO | SA_RESTART, {TESTSET_SIGS, 0}},
        {RT3, 2, SA_SIGINFO, {TESTSET_SIGS, SIGHUP, SIGQUIT, 0}},
        {SIGPROF, 3, SA_RESETHAND | SA_NODEFER, {SIGINT, 0}},
        {SIGURG, 2, SA_SIGINFO | SA_ONSTACK, {SIGTERM, 0}},
        {SIGCHLD, 3, SA_NOCLDSTOP | SA_RESTART, {0}},
        {SIGPIPE, 1, 0, {0}},
        {SIGWINCH, 1, SA_RESTART, {SIGHUP, 0}},
        {RT10, 1, 0, {0}},
        /* explicitly reset: the parent may have left some ignored */
        {SIGINT, 0, 0, {0}},
        {SIGQUIT, 0, 0, {0}},
        {SIGTERM, 0, 0, {0}},
        {SIGHUP, 0, 0, {0}},
        {SIGALRM, 0, 0, {0}},
    };
    nspec = (int)(sizeof s / sizeof s[0]);
    memcpy(specs, s, sizeof s);
}

static void install(const struct spec *sp)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (sp->kind == 0)
        sa.sa_handler = SIG_DFL;
    else if (sp->kind == 1)
        sa.sa_handler = SIG_IGN;
    else if (sp->kind == 2)
        sa.sa_sigaction = h_info;
    else
        sa.sa_handler = h_plain;
    sa.sa_flags = sp->flags;
    set_of(&sa.sa_mask, sp->mask);
    if (sigaction(sp->sig, &sa, NULL) < 0)
        wl_fail("setup: sigaction(%d): %s", sp->sig, strerror(errno));
}

/* ---- snapshot of the whole sigaction table ---- */

struct actsnap {
    int rc;
    struct sigaction sa;
};
static struct actsnap acts[MAXSIG + 1];

static void get_act(int sig, struct actsnap *a)
{
    memset(a, 0, sizeof *a);
    a->rc = sigaction(sig, NULL, &a->sa);
}

static void check_act_table(void)
{
    char b1[256], b2[256];
    for (int sig = 1; sig <= MAXSIG; sig++) {
        struct actsnap now;
        get_act(sig, &now);
        struct actsnap *was = &acts[sig];
        WL_CHECK(now.rc == was->rc, "sigaction(%d) returned %d at setup, %d now", sig, was->rc,
                 now.rc);
        if (now.rc < 0)
            continue;
        WL_CHECK((void *)now.sa.sa_sigaction == (void *)was->sa.sa_sigaction,
                 "signal %d: handler expected %p, found %p", sig, (void *)was->sa.sa_sigaction,
                 (void *)now.sa.sa_sigaction);
        WL_CHECK(now.sa.sa_flags == was->sa.sa_flags, "signal %d: sa_flags expected %#x, found %#x",
                 sig, (unsigned)was->sa.sa_flags, (unsigned)now.sa.sa_flags);
        WL_CHECK(set_eq(&now.sa.sa_mask, &was->sa.sa_mask),
                 "signal %d: sa_mask expected {%s}, found {%s}", sig,
                 set_str(&was->sa.sa_mask, b1, sizeof b1), set_str(&now.sa.sa_mask, b2, sizeof b2));
        if (now.sa.sa_flags & SA_RESTORER)
            WL_CHECK((void *)now.sa.sa_restorer == (void *)was->sa.sa_restorer,
                     "signal %d: sa_restorer expected %p, found %p", sig,
                     (void *)was->sa.sa_restorer, (void *)now.sa.sa_restorer);
    }
    /* And independently of the snapshot, against the specification. */
    for (int i = 0; i < nspec; i++) {
        const struct spec *sp = &specs[i];
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        WL_CHECK(sigaction(sp->sig, NULL, &sa) == 0, "sigaction(%d): %s", sp->sig, strerror(errno));
        void *want = sp->kind == 1   ? (void *)SIG_IGN
                     : sp->kind == 2 ? (void *)h_info
                     : sp->kind == 3 ? (void *)h_plain
                                     : (void *)SIG_DFL;
        WL_CHECK((void *)sa.sa_sigaction == want, "signal %d: handler expected %p, found %p",
                 sp->sig, want, (void *)sa.sa_sigaction);
        WL_CHECK((sa.sa_flags & ~SA_RESTORER) == sp->flags,
                 "signal %d: sa_flags (without SA_RESTORER) expected %#x, found %#x", sp->sig,
                 (unsigned)sp->flags, (unsigned)(sa.sa_flags & ~SA_RESTORER));
        sigset_t m;
        set_of(&m, sp->mask);
        WL_CHECK(set_eq(&sa.sa_mask, &m), "signal %d: sa_mask expected {%s}, found {%s}", sp->sig,
                 set_str(&m, b1, sizeof b1), set_str(&sa.sa_mask, b2, sizeof b2));
    }
}

/* ---- checks on handler records ---- */

static void check_rec(int idx, int sig, int code, int val, pid_t tid, int onstack,
                      const int *must_block, int must_not_block)
{
    char b[256];
    WL_CHECK(idx < atomic_load(&nrec), "delivery #%d: expected signal %d, but only %d deliveries",
             idx, sig, atomic_load(&nrec));
    const struct rec *r = &recs[idx];
    WL_CHECK(r->signo == sig, "delivery #%d: expected signal %d, found signal %d (value %d)", idx,
             sig, r->signo, r->val);
    if (r->siginfo) {
        WL_CHECK(r->code == code, "delivery #%d (sig %d): si_code expected %d, found %d", idx, sig,
                 code, r->code);
        WL_CHECK(r->pid == (int)getpid(), "delivery #%d (sig %d): si_pid expected %d, found %d",
                 idx, sig, (int)getpid(), r->pid);
        WL_CHECK(r->uid == (int)getuid(), "delivery #%d (sig %d): si_uid expected %d, found %d",
                 idx, sig, (int)getuid(), r->uid);
        WL_CHECK(r->val == val, "delivery #%d (sig %d): sival_int expected %d, found %d", idx, sig,
                 val, r->val);
    }
    WL_CHECK(r->tid == tid, "delivery #%d (sig %d): expected to run in thread %d, ran in %d", idx,
             sig, (int)tid, (int)r->tid);
    uintptr_t lo = (uintptr_t)altstack, hi = lo + ALTSTACK_SIZE;
    int on = r->addr >= lo && r->addr < hi;
    WL_CHECK(on == onstack,
             "delivery #%d (sig %d): handler local at %#lx, altstack [%#lx,%#lx): expected %s "
             "the alternate stack",
             idx, sig, (unsigned long)r->addr, (unsigned long)lo, (unsigned long)hi,
             onstack ? "on" : "off");
    WL_CHECK(!!(r->ss_flags & SS_ONSTACK) == onstack,
             "delivery #%d (sig %d): sigaltstack ss_flags in handler %#x, SS_ONSTACK expected %d",
             idx, sig, r->ss_flags, onstack);
    for (; *must_block; must_block++)
        WL_CHECK(sigismember(&r->mask, *must_block) == 1,
                 "delivery #%d (sig %d): signal %d expected blocked inside handler; mask {%s}", idx,
                 sig, *must_block, set_str(&r->mask, b, sizeof b));
    if (must_not_block)
        WL_CHECK(sigismember(&r->mask, must_not_block) == 0,
                 "delivery #%d (sig %d): signal %d expected NOT blocked inside handler "
                 "(SA_NODEFER); mask {%s}",
                 idx, sig, must_not_block, set_str(&r->mask, b, sizeof b));
}

/* ---- second thread ---- */

static sigset_t t2_mask_setup;

#define T2FAIL(...)                                                  \
    do {                                                             \
        snprintf(t2_err, sizeof t2_err, __VA_ARGS__);                \
        atomic_store(&t2_state, 99);                                 \
        return NULL;                                                 \
    } while (0)

static void *t2_main(void *arg)
{
    (void)arg;
    char b1[256], b2[256];
    t2_tid = (pid_t)syscall(SYS_gettid);
    sigset_t add;
    sigemptyset(&add);
    sigaddset(&add, RT6);
    pthread_sigmask(SIG_BLOCK, &add, NULL);
    pthread_sigmask(SIG_BLOCK, NULL, &t2_mask_setup);
    atomic_store(&t2_state, 1);

    while (atomic_load(&phase) < 1)
        wl_sleep_ms(5);

    /* Phase 1: state checks, nothing delivered yet. */
    sigset_t m, want;
    pthread_sigmask(SIG_BLOCK, NULL, &m);
    if (!set_eq(&m, &t2_mask_setup))
        T2FAIL("thread 2: blocked mask expected {%s}, found {%s}",
               set_str(&t2_mask_setup, b1, sizeof b1), set_str(&m, b2, sizeof b2));
    int wm[] = {TESTSET_SIGS, RT6, 0};
    set_of(&want, wm);
    for (int i = 1; i <= MAXSIG; i++)
        if (sigismember(&want, i) == 1 && sigismember(&m, i) != 1)
            T2FAIL("thread 2: signal %d expected blocked; mask {%s}", i, set_str(&m, b2, sizeof b2));
    sigemptyset(&m);
    sigpending(&m);
    int wp[] = {TESTSET_SIGS, 0};
    set_of(&want, wp);
    if (!set_eq(&m, &want))
        T2FAIL("thread 2: sigpending expected {%s} (SIGUSR2 thread-private + shared), found {%s}",
               set_str(&want, b1, sizeof b1), set_str(&m, b2, sizeof b2));
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    sigaltstack(NULL, &ss);
    if (!(ss.ss_flags & SS_DISABLE))
        T2FAIL("thread 2: sigaltstack expected SS_DISABLE, found flags %#x sp %p size %zu",
               ss.ss_flags, ss.ss_sp, ss.ss_size);
    atomic_store(&t2_state, 2);

    while (atomic_load(&phase) < 2)
        wl_sleep_ms(2);

    /* Phase 2: receive the thread-private SIGUSR2. */
    sigset_t u;
    sigemptyset(&u);
    sigaddset(&u, SIGUSR2);
    pthread_sigmask(SIG_UNBLOCK, &u, NULL);
    sigemptyset(&m);
    sigpending(&m);
    sigemptyset(&want);
    if (!set_eq(&m, &want))
        T2FAIL("thread 2: after unblocking SIGUSR2 sigpending expected empty, found {%s}",
               set_str(&m, b2, sizeof b2));
    atomic_store(&t2_state, 3);
    return NULL;
}

static void wait_t2(int state)
{
    for (int i = 0; i < 1000; i++) {
        int s = atomic_load(&t2_state);
        if (s == 99)
            wl_fail("%s", t2_err);
        if (s >= state)
            return;
        wl_sleep_ms(5);
    }
    wl_fail("thread 2 did not reach state %d within 5 s (state %d)", state,
            atomic_load(&t2_state));
}

static void queue(int sig, int v)
{
    union sigval sv;
    sv.sival_int = v;
    if (sigqueue(getpid(), sig, sv) < 0)
        wl_fail("setup: sigqueue(%d,%d): %s", sig, v, strerror(errno));
}

int main(int argc, char **argv)
{
    char b1[256], b2[256];
    wl_init(argc, argv);
    {   /* start from an empty blocked mask, whatever the parent left */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
    }
    build_specs();
    main_tid = (pid_t)syscall(SYS_gettid);

    altstack = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (altstack == MAP_FAILED)
        wl_fail("setup: mmap altstack: %s", strerror(errno));
    stack_t ss = {.ss_sp = altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) < 0)
        wl_fail("setup: sigaltstack: %s", strerror(errno));

    for (int i = 0; i < nspec; i++)
        install(&specs[i]);

    sigset_t block, main_mask_setup;
    int bs[] = {TESTSET_SIGS, 0};
    set_of(&block, bs);
    sigprocmask(SIG_BLOCK, &block, NULL);
    sigprocmask(SIG_BLOCK, NULL, &main_mask_setup);

    pthread_t t2;
    if (pthread_create(&t2, NULL, t2_main, NULL) != 0)
        wl_fail("setup: pthread_create failed");
    wait_t2(1);

    /* Pending signals. */
    kill(getpid(), SIGUSR1);
    kill(getpid(), SIGUSR1); /* coalesces with the first one */
    if (syscall(SYS_tgkill, getpid(), t2_tid, SIGUSR2) < 0)
        wl_fail("setup: tgkill: %s", strerror(errno));
    queue(RT3, 301);
    queue(RT1, 101);
    queue(RT2, 201);
    queue(RT1, 102);
    queue(RT3, 302);

    sigset_t pend, want_main_pending;
    int wp[] = {SIGUSR1, RT1, RT2, RT3, 0};
    set_of(&want_main_pending, wp);
    sigemptyset(&pend);
    sigpending(&pend);
    if (!set_eq(&pend, &want_main_pending))
        wl_fail("setup: sigpending expected {%s}, found {%s}",
                set_str(&want_main_pending, b1, sizeof b1), set_str(&pend, b2, sizeof b2));

    for (int sig = 1; sig <= MAXSIG; sig++)
        get_act(sig, &acts[sig]);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ---- verification ---- */
    WL_CHECK(atomic_load(&nrec) == 0,
             "no handler may run before verify, but %d ran (first: signal %d)", atomic_load(&nrec),
             recs[0].signo);

    atomic_store(&phase, 1);
    wait_t2(2);

    check_act_table();

    sigset_t m;
    sigprocmask(SIG_BLOCK, NULL, &m);
    WL_CHECK(set_eq(&m, &main_mask_setup), "main thread blocked mask expected {%s}, found {%s}",
             set_str(&main_mask_setup, b1, sizeof b1), set_str(&m, b2, sizeof b2));

    sigemptyset(&pend);
    sigpending(&pend);
    WL_CHECK(set_eq(&pend, &want_main_pending),
             "main thread sigpending expected {%s} (SIGUSR2 must be pending on thread 2 only), "
             "found {%s}",
             set_str(&want_main_pending, b1, sizeof b1), set_str(&pend, b2, sizeof b2));

    stack_t cur;
    memset(&cur, 0, sizeof cur);
    sigaltstack(NULL, &cur);
    WL_CHECK(cur.ss_sp == altstack && cur.ss_size == ALTSTACK_SIZE && cur.ss_flags == 0,
             "main sigaltstack expected sp %p size %d flags 0, found sp %p size %zu flags %#x",
             altstack, ALTSTACK_SIZE, cur.ss_sp, cur.ss_size, cur.ss_flags);

    /* Unblock: all shared pending signals are delivered before
     * sigprocmask() returns, one after the other (their sa_mask blocks the
     * other test signals). */
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    WL_CHECK(atomic_load(&nrec) == 6,
             "after unblocking, expected exactly 6 deliveries in main (SIGUSR1 once, RT+1 x2, RT+2, "
             "RT+3 x2), found %d",
             atomic_load(&nrec));
    {
        int mb_usr1[] = {SIGUSR1, SIGTTIN, RT1, RT2, RT3, 0};
        int mb_rt1[] = {RT1, SIGXFSZ, SIGUSR1, RT2, RT3, 0};
        int mb_rt2[] = {RT2, SIGUSR1, RT1, RT3, 0};
        int mb_rt3[] = {RT3, SIGHUP, SIGQUIT, SIGUSR1, 0};
        check_rec(0, SIGUSR1, SI_USER, 0, main_tid, 0, mb_usr1, 0);
        check_rec(1, RT1, SI_QUEUE, 101, main_tid, 0, mb_rt1, 0);
        check_rec(2, RT1, SI_QUEUE, 102, main_tid, 0, mb_rt1, 0);
        check_rec(3, RT2, SI_QUEUE, 201, main_tid, 0, mb_rt2, 0);
        check_rec(4, RT3, SI_QUEUE, 301, main_tid, 0, mb_rt3, 0);
        check_rec(5, RT3, SI_QUEUE, 302, main_tid, 0, mb_rt3, 0);
    }
    sigemptyset(&pend);
    sigpending(&pend);
    {
        sigset_t empty;
        sigemptyset(&empty);
        WL_CHECK(set_eq(&pend, &empty), "main sigpending after delivery expected empty, found {%s}",
                 set_str(&pend, b1, sizeof b1));
    }

    /* SA_ONSTACK handler on the alternate stack. */
    syscall(SYS_tgkill, getpid(), main_tid, SIGURG);
    WL_CHECK(atomic_load(&nrec) == 7, "SIGURG: expected 7 deliveries, found %d",
             atomic_load(&nrec));
    {
        int mb[] = {SIGURG, SIGTERM, 0};
        check_rec(6, SIGURG, SI_TKILL, 0, main_tid, 1, mb, 0);
    }

    /* SA_RESETHAND | SA_NODEFER handler, then reset to SIG_DFL. */
    syscall(SYS_tgkill, getpid(), main_tid, SIGPROF);
    WL_CHECK(atomic_load(&nrec) == 8, "SIGPROF: expected 8 deliveries, found %d",
             atomic_load(&nrec));
    {
        int mb[] = {SIGINT, 0};
        check_rec(7, SIGPROF, 0, 0, main_tid, 0, mb, SIGPROF);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sigaction(SIGPROF, NULL, &sa);
        WL_CHECK(sa.sa_handler == SIG_DFL,
                 "SIGPROF (SA_RESETHAND): after one delivery expected SIG_DFL, found %p",
                 (void *)sa.sa_sigaction);
    }

    /* Thread-private SIGUSR2 delivered in thread 2. */
    atomic_store(&phase, 2);
    wait_t2(3);
    WL_CHECK(atomic_load(&nrec) == 9, "SIGUSR2: expected 9 deliveries, found %d",
             atomic_load(&nrec));
    {
        int mb[] = {SIGTTOU, SIGUSR1, RT1, RT6, 0};
        check_rec(8, SIGUSR2, SI_TKILL, 0, t2_tid, 0, mb, SIGUSR2);
    }
    pthread_join(t2, NULL);
    wl_report(1, "ok");
}
