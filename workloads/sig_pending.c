/*
 * sig_pending.c - pending signals with their siginfo, per thread and per process (what
 * signals.c does not cover).
 *
 * Every signal is blocked in every thread. Pending at checkpoint time:
 *   shared (process-wide):   SIGUSR1 from kill() (SI_USER); SIGRTMIN+5 queued with a custom
 *                            negative si_code (-60) and si_int 77; SIGCHLD from a child that
 *                            exited 9 (CLD_EXITED, kernel-made siginfo; the child is reaped);
 *                            SIGWINCH, whose disposition is SIG_IGN (kept because blocked)
 *   main thread (private):   SIGRTMIN+4 twice from rt_tgsigqueueinfo (SI_QUEUE, si_pid 4321,
 *                            si_uid 99, 64-bit si_ptr values A then B)
 *   thread 2 (private):      SIGUSR1 from rt_tgsigqueueinfo (si_code -61, si_pid 4321: the
 *                            same number as a shared one), SIGRTMIN+4 with si_ptr X
 *   a child process:         SIGRTMIN+6 (sigqueue, value 5, shared) and SIGUSR2 (tgkill,
 *                            private; its si_code as this kernel sets it, probed first),
 *                            checked by the child itself
 * Verify: the main thread dequeues (sigtimedwait) SIGUSR1 = the SI_USER one, then nothing (the
 * other is thread 2's); SIGRTMIN+4 = A then B then nothing; then thread 2 dequeues its
 * SIGUSR1 (-61) and SIGRTMIN+4 (X); the main thread dequeues SIGRTMIN+5 (-60, 77),
 * SIGCHLD (CLD_EXITED, the child's pid, status 9) and SIGWINCH; finally nothing is pending.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PTR_A ((void *)0x1122334455667788ULL)
#define PTR_B ((void *)0x0102030405060708ULL)
#define PTR_X ((void *)0x7fedcba987654321ULL)

static pid_t main_tid, t2_tid;
static volatile int t2_go, t2_done;
static char t2_err[512];

static int take(int sig, siginfo_t *si)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    struct timespec zero = {0, 0};
    memset(si, 0, sizeof *si);
    return sigtimedwait(&s, si, &zero);
}

static void queue_thread(pid_t tid, int sig, int code, void *ptr)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = sig;
    si.si_code = code;
    si.si_pid = 4321;
    si.si_uid = 99;
    si.si_value.sival_ptr = ptr;
    if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, sig, &si) != 0)
        wl_fail("setup: rt_tgsigqueueinfo(%d, %d): %s", tid, sig, strerror(errno));
}

static void *t2_main(void *arg)
{
    (void)arg;
    t2_tid = (pid_t)syscall(SYS_gettid);
    while (!t2_go)
        wl_sleep_ms(5);
    siginfo_t si;
    if (take(SIGUSR1, &si) != SIGUSR1 || si.si_code != -61 || si.si_pid != 4321)
        snprintf(t2_err, sizeof t2_err, "thread 2: SIGUSR1 code %d pid %d, want -61 from 4321",
                 si.si_code, si.si_pid);
    else if (take(SIGRTMIN + 4, &si) != SIGRTMIN + 4 || si.si_value.sival_ptr != PTR_X ||
             si.si_code != SI_QUEUE || si.si_pid != 4321 || si.si_uid != 99)
        snprintf(t2_err, sizeof t2_err, "thread 2: SIGRTMIN+4 ptr %p code %d pid %d uid %d",
                 si.si_value.sival_ptr, si.si_code, si.si_pid, si.si_uid);
    else if (take(SIGRTMIN + 4, &si) != -1)
        snprintf(t2_err, sizeof t2_err, "thread 2: a second SIGRTMIN+4");
    t2_done = 1;
    return NULL;
}

static int tk_code = 99; /* si_code of a tgkill to ourselves, as this kernel sets it */

static void child_proc(int go)
{
    siginfo_t probe;
    syscall(SYS_tgkill, getpid(), getpid(), SIGUSR2);
    if (take(SIGUSR2, &probe) == SIGUSR2)
        tk_code = probe.si_code;
    union sigval v = {.sival_int = 5};
    sigqueue(getpid(), SIGRTMIN + 6, v);
    syscall(SYS_tgkill, getpid(), getpid(), SIGUSR2);
    char c;
    while (read(go, &c, 1) < 0 && errno == EINTR)
        ;
    siginfo_t si;
    if (take(SIGRTMIN + 6, &si) != SIGRTMIN + 6 || si.si_code != SI_QUEUE ||
        si.si_value.sival_int != 5)
        wl_fail("child: SIGRTMIN+6 code %d value %d", si.si_code, si.si_value.sival_int);
    /* tgkill's si_code: SI_USER on this kernel (6.18), SI_TKILL on others. */
    if (take(SIGUSR2, &si) != SIGUSR2 || si.si_pid != getpid() || si.si_code != tk_code)
        wl_fail("child: SIGUSR2 code %d pid %d (before: code %d)", si.si_code, si.si_pid,
                tk_code);
    sigset_t p;
    sigpending(&p);
    for (int s = 1; s < 65; s++)
        if (sigismember(&p, s))
            wl_fail("child: signal %d still pending", s);
    _exit(0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    signal(SIGWINCH, SIG_IGN);
    main_tid = (pid_t)syscall(SYS_gettid);
    pthread_t t;
    pthread_create(&t, NULL, t2_main, NULL);
    while (!t2_tid)
        wl_sleep_ms(1);
    int go[2];
    if (pipe(go))
        wl_fail("pipe: %s", strerror(errno));
    pid_t pc = fork();
    if (pc == 0)
        child_proc(go[0]);
    pid_t ex = fork();
    if (ex == 0)
        _exit(9);
    int ws;
    if (waitpid(ex, &ws, 0) != ex)
        wl_fail("setup: waitpid: %s", strerror(errno));

    kill(getpid(), SIGUSR1);
    queue_thread(t2_tid, SIGUSR1, -61, NULL);
    queue_thread(main_tid, SIGRTMIN + 4, SI_QUEUE, PTR_A);
    queue_thread(main_tid, SIGRTMIN + 4, SI_QUEUE, PTR_B);
    queue_thread(t2_tid, SIGRTMIN + 4, SI_QUEUE, PTR_X);
    siginfo_t q;
    memset(&q, 0, sizeof q);
    q.si_signo = SIGRTMIN + 5;
    q.si_code = -60;
    q.si_value.sival_int = 77;
    if (syscall(SYS_rt_sigqueueinfo, getpid(), SIGRTMIN + 5, &q) != 0)
        wl_fail("setup: rt_sigqueueinfo: %s", strerror(errno));
    kill(getpid(), SIGWINCH);
    wl_sleep_ms(20); /* the child's own signals */
    wl_ready();

    while (!wl_verify_requested())
        wl_sleep_ms(20);

    siginfo_t si;
    WL_CHECK(take(SIGUSR1, &si) == SIGUSR1 && si.si_code == SI_USER && si.si_pid == getpid(),
             "main: SIGUSR1 code %d pid %d, want the shared SI_USER one", si.si_code, si.si_pid);
    WL_CHECK(take(SIGUSR1, &si) == -1, "main: a second SIGUSR1 (code %d)", si.si_code);
    WL_CHECK(take(SIGRTMIN + 4, &si) == SIGRTMIN + 4 && si.si_value.sival_ptr == PTR_A &&
                 si.si_code == SI_QUEUE && si.si_pid == 4321 && si.si_uid == 99,
             "main: first SIGRTMIN+4 ptr %p code %d pid %d uid %d", si.si_value.sival_ptr,
             si.si_code, si.si_pid, si.si_uid);
    WL_CHECK(take(SIGRTMIN + 4, &si) == SIGRTMIN + 4 && si.si_value.sival_ptr == PTR_B,
             "main: second SIGRTMIN+4 ptr %p", si.si_value.sival_ptr);
    WL_CHECK(take(SIGRTMIN + 4, &si) == -1, "main: a third SIGRTMIN+4 (ptr %p)",
             si.si_value.sival_ptr);
    t2_go = 1;
    pthread_join(t, NULL);
    WL_CHECK(!t2_err[0], "%s", t2_err);
    WL_CHECK(take(SIGRTMIN + 5, &si) == SIGRTMIN + 5 && si.si_code == -60 &&
                 si.si_value.sival_int == 77,
             "SIGRTMIN+5 code %d value %d", si.si_code, si.si_value.sival_int);
    WL_CHECK(take(SIGCHLD, &si) == SIGCHLD && si.si_code == CLD_EXITED && si.si_pid == ex &&
                 si.si_status == 9,
             "SIGCHLD code %d pid %d status %d, want CLD_EXITED %d 9", si.si_code, si.si_pid,
             si.si_status, ex);
    WL_CHECK(take(SIGWINCH, &si) == SIGWINCH && si.si_code == SI_USER, "SIGWINCH (ignored)");
    sigset_t p;
    sigpending(&p);
    for (int s = 1; s < 65; s++)
        WL_CHECK(!sigismember(&p, s), "signal %d still pending", s);
    if (write(go[1], "g", 1) != 1)
        wl_fail("write: %s", strerror(errno));
    WL_CHECK(waitpid(pc, &ws, 0) == pc && WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
             "child process failed (status %#x)", ws);
    wl_report(1, "ok");
}
