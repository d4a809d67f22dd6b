/*
 * threads.c - a multi-threaded process.
 *
 * State tested:
 *   - 4 pthreads, each with
 *       * __thread variables (an int set to a thread-specific value, and a
 *         256-byte TLS array with a per-thread pattern); the address of the
 *         TLS int must be unchanged (fs base restored per thread),
 *       * its gettid() and pthread_self() recorded at start (must be equal
 *         after restore), and its name (pthread_setname_np "wl-thr-N",
 *         checked via /proc/self/task/TID/comm),
 *       * a 64 KiB pattern buffer on its own stack,
 *       * a counter in a shared array it increments while looping; main
 *         samples the counters after the verify request, waits up to 2 s and
 *         checks every counter advanced (all threads run after restore).
 *   - a PTHREAD_MUTEX_ROBUST mutex that thread 0 locks/unlocks repeatedly
 *     (sometimes holding it across a sleep) and thread 1 contends on (so a
 *     dump may catch a thread blocked in futex wait);
 *   - rseq (glibc registers it per thread): after restore each thread
 *     checks sched_getcpu() >= 0, the rseq area's cpu_id (at
 *     thread pointer + __rseq_offset) is >= 0, and that re-registering the
 *     same area with sys_rseq (len __rseq_size or 32) fails with EBUSY (= the kernel has this exact
 *     area registered for the thread);
 *   - robust futex list: on verify thread 3 locks a second robust mutex and
 *     exits holding it; main's pthread_mutex_timedlock must then return
 *     EOWNERDEAD (the kernel walked the restored robust list);
 *   - clear_child_tid: main pthread_timedjoin_np()s all threads (10 s bound;
 *     a hang means the CLONE_CHILD_CLEARTID address was not restored), and
 *     /proc/self/task then has exactly 1 entry.
 *   - main's own __thread value and gettid() == getpid().
 */
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NT 4
#define TLS_ARR 256
#define STACK_PAT (64 * 1024)

static __thread int tls_val = -1;
static __thread unsigned char tls_arr[TLS_ARR];

struct tinfo {
    int idx;
    pthread_t self;
    pid_t tid;
    int *tls_addr;
    volatile int started;
    volatile int done; /* verdict posted */
    char err[512];     /* "" = ok */
};
static struct tinfo T[NT];
static pthread_t handles[NT];
static volatile uint64_t counters[NT];
static volatile int verify_phase, stop;
static pthread_mutex_t robust1, robust2;

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct rseq *rseq_area(void)
{
    return (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
}

/* Leaves t->err empty if ok, else sets the failure message. */
static void thread_verify(struct tinfo *t, const unsigned char *stackbuf)
{
#define TFAIL(...) do { snprintf(t->err, sizeof t->err, __VA_ARGS__); return; } while (0)
    if (tls_val != 1000 + t->idx)
        TFAIL("thread %d: __thread value %d, expected %d", t->idx, tls_val, 1000 + t->idx);
    if (&tls_val != t->tls_addr)
        TFAIL("thread %d: &tls_val %p, expected %p (fs base changed?)", t->idx, (void *)&tls_val, (void *)t->tls_addr);
    if (!wl_check_pattern(tls_arr, TLS_ARR, 0x7150 + (uint64_t)t->idx))
        TFAIL("thread %d: TLS array corrupted", t->idx);
    if (gettid_() != t->tid)
        TFAIL("thread %d: gettid() %d, expected %d", t->idx, (int)gettid_(), (int)t->tid);
    if (!pthread_equal(pthread_self(), t->self))
        TFAIL("thread %d: pthread_self changed", t->idx);
    if (!wl_check_pattern(stackbuf, STACK_PAT, 0x57A0 + (uint64_t)t->idx))
        TFAIL("thread %d: stack buffer corrupted", t->idx);
    char name[16] = "";
    if (pthread_getname_np(pthread_self(), name, sizeof name) != 0)
        TFAIL("thread %d: pthread_getname_np failed", t->idx);
    char want[16];
    snprintf(want, sizeof want, "wl-thr-%d", t->idx);
    if (strcmp(name, want) != 0)
        TFAIL("thread %d: comm '%s', expected '%s'", t->idx, name, want);
    int cpu = sched_getcpu();
    if (cpu < 0)
        TFAIL("thread %d: sched_getcpu() = %d (%s)", t->idx, cpu, strerror(errno));
    if (__rseq_size > 0) {
        wl_sleep_ms(1); /* get scheduled out and back: the kernel refreshes rseq */
        int32_t rc = (int32_t)__atomic_load_n(&rseq_area()->cpu_id, __ATOMIC_RELAXED);
        if (rc < 0)
            TFAIL("thread %d: rseq cpu_id = %d (rseq not registered?)", t->idx, rc);
        /* glibc may register a larger area than __rseq_size (feature size,
         * e.g. 20) says: the kernel's minimum is 32.  Try both. */
        long r = syscall(SYS_rseq, rseq_area(), __rseq_size, 0, RSEQ_SIG);
        int e = errno;
        unsigned len = __rseq_size;
        if (r < 0 && e == EINVAL && __rseq_size != 32) {
            len = 32;
            r = syscall(SYS_rseq, rseq_area(), 32, 0, RSEQ_SIG);
            e = errno;
        }
        if (r == 0)
            TFAIL("thread %d: rseq area %p was NOT registered after restore (sys_rseq registered it anew)",
                  t->idx, (void *)rseq_area());
        if (e != EBUSY)
            TFAIL("thread %d: sys_rseq(re-register %p, len %u) gave %s, expected EBUSY "
                  "(EINVAL: other area/len registered; EPERM: wrong signature)",
                  t->idx, (void *)rseq_area(), len, strerror(e));
    }
#undef TFAIL
}

static void *thread_main(void *arg)
{
    struct tinfo *t = arg;
    unsigned char stackbuf[STACK_PAT];
    tls_val = 1000 + t->idx;
    wl_fill_pattern(tls_arr, TLS_ARR, 0x7150 + (uint64_t)t->idx);
    wl_fill_pattern(stackbuf, sizeof stackbuf, 0x57A0 + (uint64_t)t->idx);
    t->tls_addr = &tls_val;
    t->tid = gettid_();
    t->self = pthread_self();
    char name[16];
    snprintf(name, sizeof name, "wl-thr-%d", t->idx);
    pthread_setname_np(pthread_self(), name);
    if (sched_getcpu() < 0)
        snprintf(t->err, sizeof t->err, "thread %d: sched_getcpu failed at start", t->idx);
    __atomic_store_n(&t->started, 1, __ATOMIC_SEQ_CST);

    unsigned long iter = 0;
    while (!verify_phase) {
        __atomic_add_fetch(&counters[t->idx], 1, __ATOMIC_SEQ_CST);
        iter++;
        if (t->idx == 0) {
            int r = pthread_mutex_lock(&robust1);
            if (r == EOWNERDEAD) {
                snprintf(t->err, sizeof t->err, "thread 0: robust1 unexpectedly EOWNERDEAD");
                pthread_mutex_consistent(&robust1);
            }
            if (iter % 4 == 0)
                wl_sleep_ms(3); /* hold it for a while */
            pthread_mutex_unlock(&robust1);
        } else if (t->idx == 1) {
            int r = pthread_mutex_lock(&robust1);
            if (r == EOWNERDEAD) {
                snprintf(t->err, sizeof t->err, "thread 1: robust1 unexpectedly EOWNERDEAD");
                pthread_mutex_consistent(&robust1);
            }
            pthread_mutex_unlock(&robust1);
        }
        wl_sleep_ms(5);
    }

    if (!t->err[0])
        thread_verify(t, stackbuf);
    if (t->idx == 3 && !t->err[0]) {
        int r = pthread_mutex_lock(&robust2);
        if (r != 0)
            snprintf(t->err, sizeof t->err, "thread 3: lock robust2: %s", strerror(r));
    }
    __atomic_store_n(&t->done, 1, __ATOMIC_SEQ_CST);
    while (!stop) {
        __atomic_add_fetch(&counters[t->idx], 1, __ATOMIC_SEQ_CST);
        wl_sleep_ms(2);
    }
    /* thread 3 exits holding robust2 */
    return (void *)(intptr_t)(0x600 + t->idx);
}

static int count_tasks(pid_t *tids, int cap)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        wl_fail("opendir /proc/self/task: %m");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n < cap)
            tids[n] = atoi(e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static int has_tid(const pid_t *tids, int n, pid_t t)
{
    for (int i = 0; i < n; i++)
        if (tids[i] == t)
            return 1;
    return 0;
}

static void init_robust(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (pthread_mutex_init(m, &a) != 0)
        wl_fail("pthread_mutex_init robust");
    pthread_mutexattr_destroy(&a);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    tls_val = 4242;
    init_robust(&robust1);
    init_robust(&robust2);

    for (int i = 0; i < NT; i++) {
        T[i].idx = i;
        int r = pthread_create(&handles[i], NULL, thread_main, &T[i]);
        if (r != 0)
            wl_fail("pthread_create: %s", strerror(r));
    }
    uint64_t deadline = now_ns() + 10ULL * 1000000000ULL;
    for (int i = 0; i < NT; i++)
        while (!__atomic_load_n(&T[i].started, __ATOMIC_SEQ_CST)) {
            if (now_ns() > deadline)
                wl_fail("thread %d did not start", i);
            wl_sleep_ms(1);
        }
    pid_t main_tid = gettid_();
    wl_ready();

    while (!wl_verify_requested())
        wl_sleep_ms(10);

    /* main thread state */
    WL_CHECK(tls_val == 4242, "main __thread value %d, expected 4242", tls_val);
    WL_CHECK(gettid_() == getpid() && main_tid == gettid_(), "main tid %d, pid %d, recorded %d",
             (int)gettid_(), (int)getpid(), (int)main_tid);

    /* all threads present */
    pid_t tids[64];
    int n = count_tasks(tids, 64);
    WL_CHECK(n == NT + 1, "/proc/self/task has %d entries, expected %d", n, NT + 1);
    WL_CHECK(has_tid(tids, n, main_tid), "main tid %d not in /proc/self/task", (int)main_tid);
    for (int i = 0; i < NT; i++) {
        WL_CHECK(has_tid(tids, n, T[i].tid), "thread %d tid %d not in /proc/self/task", i, (int)T[i].tid);
        char p[64], comm[32] = "", want[16];
        snprintf(p, sizeof p, "/proc/self/task/%d/comm", (int)T[i].tid);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        WL_CHECK(fd >= 0, "open %s: %m", p);
        ssize_t r = read(fd, comm, sizeof comm - 1);
        close(fd);
        if (r > 0 && comm[r - 1] == '\n')
            comm[r - 1] = 0;
        snprintf(want, sizeof want, "wl-thr-%d", i);
        WL_CHECK(strcmp(comm, want) == 0, "%s = '%s', expected '%s'", p, comm, want);
    }

    /* all threads still running */
    uint64_t before[NT];
    for (int i = 0; i < NT; i++)
        before[i] = __atomic_load_n(&counters[i], __ATOMIC_SEQ_CST);
    /* Up to 2 s: a loaded 2-core machine may not schedule every thread within 50 ms. */
    for (int i = 0; i < NT; i++) {
        uint64_t now = before[i];
        for (int waited = 0; waited < 2000 && now <= before[i]; waited += 10) {
            wl_sleep_ms(10);
            now = __atomic_load_n(&counters[i], __ATOMIC_SEQ_CST);
        }
        WL_CHECK(now > before[i], "thread %d counter did not advance in 2 s (%llu)", i,
                 (unsigned long long)now);
    }

    /* per-thread verification */
    verify_phase = 1;
    deadline = now_ns() + 10ULL * 1000000000ULL;
    for (int i = 0; i < NT; i++)
        while (!__atomic_load_n(&T[i].done, __ATOMIC_SEQ_CST)) {
            if (now_ns() > deadline)
                wl_fail("thread %d did not post its verdict within 10 s", i);
            wl_sleep_ms(1);
        }
    for (int i = 0; i < NT; i++)
        WL_CHECK(T[i].err[0] == 0, "%s", T[i].err);

    /* join (exercises CLONE_CHILD_CLEARTID + futex wake) */
    stop = 1;
    struct timespec abst;
    clock_gettime(CLOCK_REALTIME, &abst);
    abst.tv_sec += 10;
    for (int i = 0; i < NT; i++) {
        void *ret = NULL;
        int r = pthread_timedjoin_np(handles[i], &ret, &abst);
        WL_CHECK(r == 0, "pthread_timedjoin_np(thread %d, tid %d): %s (clear_child_tid not restored?)", i,
                 (int)T[i].tid, strerror(r));
        WL_CHECK(ret == (void *)(intptr_t)(0x600 + i), "thread %d returned %p", i, ret);
    }
    deadline = now_ns() + 2ULL * 1000000000ULL;
    while ((n = count_tasks(tids, 64)) != 1 && now_ns() < deadline)
        wl_sleep_ms(5);
    WL_CHECK(n == 1, "/proc/self/task has %d entries after joining all threads, expected 1", n);

    /* robust list: thread 3 died holding robust2 */
    clock_gettime(CLOCK_REALTIME, &abst);
    abst.tv_sec += 5;
    int r = pthread_mutex_timedlock(&robust2, &abst);
    WL_CHECK(r == EOWNERDEAD, "lock of mutex held by exited thread 3: %s, expected EOWNERDEAD "
             "(robust futex list not restored?)", r == 0 ? "success" : strerror(r));
    pthread_mutex_consistent(&robust2);
    pthread_mutex_unlock(&robust2);
    r = pthread_mutex_timedlock(&robust1, &abst);
    WL_CHECK(r == 0, "lock robust1 after join: %s", strerror(r));
    pthread_mutex_unlock(&robust1);

    wl_report(1, "ok");
}
