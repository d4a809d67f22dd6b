/*
 * timers.c - interval timers and POSIX timers across checkpoint/restore.
 *
 * Kernel state tested:
 *  - setitimer(ITIMER_REAL)    value 3600 s, interval 3600 s
 *  - setitimer(ITIMER_VIRTUAL) value 1000 s, interval 100 s
 *  - setitimer(ITIMER_PROF)    value 2000 s, interval 1000 s
 *  - POSIX timers (timer_create), with their kernel timer ids preserved and a
 *    gap in the id space (one timer created and deleted):
 *      tick: CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN+5, sival 0x5a5a,
 *            armed 200 ms periodic: must keep firing after restore, each
 *            signal with si_code SI_TIMER, the right si_timerid and sival;
 *      rt:   CLOCK_REALTIME, SIGEV_SIGNAL SIGRTMIN+6, sival 0x6b6b,
 *            value 1000 s, interval 2000 s;
 *      dis:  CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN+7, never armed;
 *      none: CLOCK_BOOTTIME, SIGEV_NONE, value 500 s, no interval;
 *      gap:  created then deleted: its id must stay invalid.
 *  - /proc/self/timers (id, signal/value, notify, clock) matches exactly.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS (200 * 1000000L)

static atomic_int ticks, bad_ticks, alarms, vtalarms, profs;
static volatile int bad_code, bad_val, bad_id;
static volatile int tick_kid = -1; /* kernel id of the tick timer */

static void h_tick(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    if (si->si_code != SI_TIMER || si->si_value.sival_int != 0x5a5a ||
        si->si_timerid != tick_kid) {
        if (atomic_fetch_add(&bad_ticks, 1) == 0) {
            bad_code = si->si_code;
            bad_val = si->si_value.sival_int;
            bad_id = si->si_timerid;
        }
        return;
    }
    atomic_fetch_add(&ticks, 1);
}

static void h_count(int sig)
{
    if (sig == SIGALRM)
        atomic_fetch_add(&alarms, 1);
    else if (sig == SIGVTALRM)
        atomic_fetch_add(&vtalarms, 1);
    else if (sig == SIGPROF)
        atomic_fetch_add(&profs, 1);
}

static int64_t ts_ns(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int64_t tv_ns(struct timeval t)
{
    return (int64_t)t.tv_sec * 1000000000LL + (int64_t)t.tv_usec * 1000;
}

static int64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return ts_ns(t);
}

struct ptimer {
    const char *name;
    clockid_t clock;
    int notify;     /* SIGEV_SIGNAL or SIGEV_NONE */
    int signo;      /* 0 -> SIGRTMIN+N filled at runtime */
    int val;
    int64_t value_ns, interval_ns;
    timer_t id;
    int kid;
    int deleted;
};

static struct ptimer T[5];
enum { TK, GAP, RT, DIS, NONE, NT };

static void mk(struct ptimer *p)
{
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = p->notify;
    ev.sigev_signo = p->signo;
    ev.sigev_value.sival_int = p->val;
    if (timer_create(p->clock, &ev, &p->id) < 0)
        wl_fail("setup: timer_create(%s): %s", p->name, strerror(errno));
    p->kid = (int)(intptr_t)p->id;
}

static void arm(struct ptimer *p)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = p->value_ns / 1000000000LL;
    its.it_value.tv_nsec = p->value_ns % 1000000000LL;
    its.it_interval.tv_sec = p->interval_ns / 1000000000LL;
    its.it_interval.tv_nsec = p->interval_ns % 1000000000LL;
    if (timer_settime(p->id, 0, &its, NULL) < 0)
        wl_fail("setup: timer_settime(%s): %s", p->name, strerror(errno));
}

static void set_it(int which, const char *name, long value_s, long interval_s)
{
    struct itimerval v = {{interval_s, 0}, {value_s, 0}};
    if (setitimer(which, &v, NULL) < 0)
        wl_fail("setup: setitimer(%s): %s", name, strerror(errno));
}

/* Checks an itimer: interval exact, value in [lo, hi]. */
static void check_it(int which, const char *name, int64_t lo, int64_t hi, int64_t interval)
{
    struct itimerval v;
    WL_CHECK(getitimer(which, &v) == 0, "getitimer(%s): %s", name, strerror(errno));
    WL_CHECK(tv_ns(v.it_interval) == interval, "%s: interval expected %lld ns, found %lld ns", name,
             (long long)interval, (long long)tv_ns(v.it_interval));
    WL_CHECK(tv_ns(v.it_value) >= lo && tv_ns(v.it_value) <= hi,
             "%s: remaining value expected in [%lld, %lld] ns, found %lld ns", name, (long long)lo,
             (long long)hi, (long long)tv_ns(v.it_value));
}

static void check_proc_timers(void)
{
    FILE *f = fopen("/proc/self/timers", "r");
    if (!f) {
        dprintf(2, "timers: /proc/self/timers unavailable (%s), skipping that check\n",
                strerror(errno));
        return;
    }
    int seen[NT] = {0};
    int nentries = 0;
    char line[256];
    int id = -1, sig = -1, clk = -1;
    unsigned long long val = 0;
    char notify[64] = "";
    for (;;) {
        char *l = fgets(line, sizeof line, f);
        int flush = (l == NULL) || strncmp(line, "ID:", 3) == 0;
        if (flush && id >= 0) {
            nentries++;
            int found = -1;
            for (int i = 0; i < NT; i++)
                if (!T[i].deleted && T[i].kid == id)
                    found = i;
            if (found < 0) {
                fclose(f);
                wl_fail("/proc/self/timers: unexpected timer id %d (signal %d, notify %s, clock %d)",
                        id, sig, notify, clk);
            }
            struct ptimer *p = &T[found];
            char want_notify[64];
            snprintf(want_notify, sizeof want_notify, "%s/pid.%d",
                     p->notify == SIGEV_NONE ? "none" : "signal", (int)getpid());
            if (sig != p->signo || val != (unsigned long long)(unsigned)p->val ||
                strcmp(notify, want_notify) != 0 || clk != (int)p->clock) {
                fclose(f);
                wl_fail("/proc/self/timers: timer %s (id %d) expected signal %d/%x notify %s "
                        "clock %d, found signal %d/%llx notify %s clock %d",
                        p->name, id, p->signo, p->val, want_notify, (int)p->clock, sig, val,
                        notify, clk);
            }
            seen[found]++;
            id = sig = clk = -1;
            notify[0] = 0;
        }
        if (!l)
            break;
        if (sscanf(line, "ID: %d", &id) == 1)
            continue;
        if (sscanf(line, "signal: %d/%llx", &sig, &val) == 2)
            continue;
        if (sscanf(line, "notify: %63s", notify) == 1)
            continue;
        if (sscanf(line, "ClockID: %d", &clk) == 1)
            continue;
    }
    fclose(f);
    for (int i = 0; i < NT; i++) {
        if (T[i].deleted)
            continue;
        WL_CHECK(seen[i] == 1, "/proc/self/timers: timer %s (id %d) listed %d times, expected once",
                 T[i].name, T[i].kid, seen[i]);
    }
    WL_CHECK(nentries == NT - 1, "/proc/self/timers: expected %d timers, found %d", NT - 1,
             nentries);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    {   /* start from an empty blocked mask, whatever the parent left */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h_tick;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGRTMIN + 5, &sa, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h_count;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGVTALRM, &sa, NULL);
    sigaction(SIGPROF, &sa, NULL);

    set_it(ITIMER_REAL, "ITIMER_REAL", 3600, 3600);
    set_it(ITIMER_VIRTUAL, "ITIMER_VIRTUAL", 1000, 100);
    set_it(ITIMER_PROF, "ITIMER_PROF", 2000, 1000);

#define PT(n, c, nt, sg, v, val_ns, int_ns)                                                   \
    (struct ptimer)                                                                          \
    {                                                                                        \
        .name = n, .clock = c, .notify = nt, .signo = sg, .val = v, .value_ns = val_ns,      \
        .interval_ns = int_ns                                                                \
    }
    T[TK] = PT("tick", CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 5, 0x5a5a, TICK_NS, TICK_NS);
    T[GAP] = PT("gap", CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 8, 0x1111, 0, 0);
    T[RT] = PT("rt", CLOCK_REALTIME, SIGEV_SIGNAL, SIGRTMIN + 6, 0x6b6b, 1000LL * 1000000000LL,
               2000LL * 1000000000LL);
    T[DIS] = PT("dis", CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 7, 0x7c7c, 0, 0);
    /* /proc/self/timers shows sigev_signo/value even for SIGEV_NONE */
    T[NONE] = PT("none", CLOCK_BOOTTIME, SIGEV_NONE, SIGRTMIN + 9, 0x0e0e, 500LL * 1000000000LL, 0);
    for (int i = 0; i < NT; i++)
        mk(&T[i]);
    tick_kid = T[TK].kid;
    if (timer_delete(T[GAP].id) < 0)
        wl_fail("setup: timer_delete(gap): %s", strerror(errno));
    T[GAP].deleted = 1;
    int64_t armed = mono_ns();
    arm(&T[TK]);
    arm(&T[RT]);
    arm(&T[NONE]);

    /* Wait for the first tick so the id check in the handler is exercised. */
    for (int i = 0; i < 200 && atomic_load(&ticks) == 0; i++)
        wl_sleep_ms(10);
    if (atomic_load(&ticks) == 0)
        wl_fail("setup: tick timer did not fire within 2 s");
    check_proc_timers(); /* sanity of the parser before ready */

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(7);

    /* ---- verification ---- */
    int64_t elapsed = mono_ns() - armed;
    struct timespec cpu;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    const int64_t S = 1000000000LL;

    check_it(ITIMER_REAL, "ITIMER_REAL", 3500 * S + 1, 3600 * S, 3600 * S);
    /* cpu itimers: the kernel adds one tick (<= 10 ms) to the value each
     * time it is armed, so a restore that re-arms it may push it a little
     * above the original; and the cpu time consumed before a restore is not
     * in this process's clock any more: allow generous slack both ways. */
    check_it(ITIMER_VIRTUAL, "ITIMER_VIRTUAL", 1000 * S - ts_ns(cpu) - 10 * S, 1000 * S + S,
             100 * S);
    check_it(ITIMER_PROF, "ITIMER_PROF", 2000 * S - ts_ns(cpu) - 10 * S, 2000 * S + S, 1000 * S);
    WL_CHECK(atomic_load(&alarms) == 0 && atomic_load(&vtalarms) == 0 && atomic_load(&profs) == 0,
             "itimer signals must not have fired: SIGALRM %d, SIGVTALRM %d, SIGPROF %d",
             atomic_load(&alarms), atomic_load(&vtalarms), atomic_load(&profs));

    for (int i = 0; i < NT; i++) {
        struct ptimer *p = &T[i];
        struct itimerspec its;
        memset(&its, 0, sizeof its);
        int rc = timer_gettime(p->id, &its);
        if (p->deleted) {
            WL_CHECK(rc < 0 && errno == EINVAL,
                     "deleted timer id %d: timer_gettime expected EINVAL, found rc %d (%s)", p->kid,
                     rc, rc < 0 ? strerror(errno) : "success");
            continue;
        }
        WL_CHECK(rc == 0, "timer %s (id %d): timer_gettime failed: %s", p->name, p->kid,
                 strerror(errno));
        WL_CHECK(ts_ns(its.it_interval) == p->interval_ns,
                 "timer %s (id %d): interval expected %lld ns, found %lld ns", p->name, p->kid,
                 (long long)p->interval_ns, (long long)ts_ns(its.it_interval));
        int64_t v = ts_ns(its.it_value);
        if (p->value_ns == 0) {
            WL_CHECK(v == 0, "timer %s (id %d): expected disarmed, found value %lld ns", p->name,
                     p->kid, (long long)v);
        } else if (p->interval_ns == TICK_NS) {
            WL_CHECK(v > 0 && v <= TICK_NS,
                     "timer %s (id %d): value expected in (0, %ld] ns, found %lld ns", p->name,
                     p->kid, TICK_NS, (long long)v);
        } else {
            int64_t lo = p->value_ns - elapsed - 2 * S;
            WL_CHECK(v >= lo && v <= p->value_ns,
                     "timer %s (id %d): value expected in [%lld, %lld] ns (%.1f s since arming), "
                     "found %lld ns",
                     p->name, p->kid, (long long)lo, (long long)p->value_ns, elapsed / 1e9,
                     (long long)v);
        }
        WL_CHECK(timer_getoverrun(p->id) >= 0, "timer %s (id %d): timer_getoverrun failed: %s",
                 p->name, p->kid, strerror(errno));
    }
    check_proc_timers();

    WL_CHECK(atomic_load(&bad_ticks) == 0,
             "%d tick signals had wrong info: expected si_code %d (SI_TIMER), sival 0x5a5a, "
             "si_timerid %d; first bad one: si_code %d, sival %#x, si_timerid %d",
             atomic_load(&bad_ticks), SI_TIMER, tick_kid, bad_code, bad_val, bad_id);

    int c0 = atomic_load(&ticks);
    int64_t t0 = mono_ns();
    while (atomic_load(&ticks) < c0 + 2 && mono_ns() - t0 < S)
        wl_sleep_ms(10);
    WL_CHECK(atomic_load(&ticks) >= c0 + 2,
             "200 ms periodic timer: expected >= 2 ticks within 1 s after verify, got %d (total %d)",
             atomic_load(&ticks) - c0, atomic_load(&ticks));
    WL_CHECK(atomic_load(&bad_ticks) == 0,
             "%d tick signals had wrong info: first bad one: si_code %d, sival %#x, si_timerid %d "
             "(expected %d)",
             atomic_load(&bad_ticks), bad_code, bad_val, bad_id, tick_kid);
    wl_report(1, "ok");
}
