/*
 * restart.c - threads blocked in system calls across checkpoint/restore.
 *
 * Kernel state tested:
 *  - a thread blocked in read() on an empty pipe, repeatedly hit by SIGUSR1
 *    (handler with SA_RESTART, sent with tgkill every ~50 ms): the read must
 *    keep waiting (restarted transparently, EINTR tolerated and retried) and
 *    finally return exactly the bytes written after verify - no spurious
 *    data, no EOF;
 *  - a thread looping in poll() on an empty pipe with a 100 ms timeout: no
 *    spurious readiness, a timeout never returns early, keeps running;
 *  - a thread looping in nanosleep(50 ms): a completed sleep never returns
 *    early, EINTR returns are counted (tolerated), keeps running;
 *  - pending/being-delivered signals and the SA_RESTART disposition;
 *  - the main thread in the usual wl_sleep_ms loop.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char payload[] = "stasis-restart-payload-written-after-verify\n";
#define PAYLOAD_LEN ((int)sizeof payload - 1)

static int rp[2], pp[2];
static atomic_int stop;
static atomic_int reader_tid, reader_done, reader_got, reader_eof, reader_eintr, reader_err;
static char reader_buf[256];
static atomic_int usr1_count, usr1_wrong_thread;
static atomic_long poll_iters, poll_eintr, poll_spurious, poll_early;
static atomic_long sleep_iters, sleep_eintr, sleep_early;
static atomic_long min_poll_ns = 1L << 40, min_sleep_ns = 1L << 40;

static int64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void h_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&usr1_count, 1);
    if ((int)syscall(SYS_gettid) != atomic_load(&reader_tid))
        atomic_fetch_add(&usr1_wrong_thread, 1);
}

static void *reader(void *arg)
{
    (void)arg;
    atomic_store(&reader_tid, (int)syscall(SYS_gettid));
    int got = 0;
    while (got < (int)sizeof reader_buf) {
        ssize_t r = read(rp[0], reader_buf + got, sizeof reader_buf - (size_t)got);
        if (r < 0 && errno == EINTR) {
            atomic_fetch_add(&reader_eintr, 1);
            continue;
        }
        if (r < 0) {
            atomic_store(&reader_err, errno);
            break;
        }
        if (r == 0) {
            atomic_store(&reader_eof, 1);
            break;
        }
        got += (int)r;
        atomic_store(&reader_got, got);
        if (got >= PAYLOAD_LEN)
            break;
    }
    atomic_store(&reader_done, 1);
    return NULL;
}

static void *poller(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        struct pollfd p = {.fd = pp[0], .events = POLLIN};
        int64_t t0 = mono_ns();
        int r = poll(&p, 1, 100);
        int64_t dt = mono_ns() - t0;
        if (r < 0 && errno == EINTR) {
            atomic_fetch_add(&poll_eintr, 1);
        } else if (r == 0) {
            if (dt < 100 * 1000000LL)
                atomic_fetch_add(&poll_early, 1);
            if (dt < atomic_load(&min_poll_ns))
                atomic_store(&min_poll_ns, (long)dt);
        } else {
            atomic_fetch_add(&poll_spurious, 1);
        }
        atomic_fetch_add(&poll_iters, 1);
    }
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        struct timespec req = {0, 50 * 1000000L};
        int64_t t0 = mono_ns();
        int r = nanosleep(&req, NULL);
        int64_t dt = mono_ns() - t0;
        if (r < 0 && errno == EINTR) {
            atomic_fetch_add(&sleep_eintr, 1);
        } else if (r == 0) {
            if (dt < 50 * 1000000LL)
                atomic_fetch_add(&sleep_early, 1);
            if (dt < atomic_load(&min_sleep_ns))
                atomic_store(&min_sleep_ns, (long)dt);
        }
        atomic_fetch_add(&sleep_iters, 1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    {   /* start from an empty blocked mask, whatever the parent left */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
    }
    if (pipe(rp) < 0 || pipe(pp) < 0)
        wl_fail("setup: pipe: %s", strerror(errno));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);

    pthread_t tr, tp, ts;
    if (pthread_create(&tr, NULL, reader, NULL) || pthread_create(&tp, NULL, poller, NULL) ||
        pthread_create(&ts, NULL, sleeper, NULL))
        wl_fail("setup: pthread_create failed");
    while (atomic_load(&reader_tid) == 0)
        wl_sleep_ms(1);
    /* let everybody get into its blocking call */
    while (atomic_load(&poll_iters) < 1 || atomic_load(&sleep_iters) < 1)
        wl_sleep_ms(10);

    wl_ready();
    int sent = 0;
    for (int i = 0; !wl_verify_requested(); i++) {
        wl_sleep_ms(10);
        if (i % 5 == 0 && syscall(SYS_tgkill, getpid(), atomic_load(&reader_tid), SIGUSR1) == 0)
            sent++;
    }

    /* ---- verification */
    WL_CHECK(!atomic_load(&reader_done) && atomic_load(&reader_got) == 0,
             "reader: must still be blocked with 0 bytes before the payload is written; found "
             "done=%d got=%d eof=%d errno=%d",
             atomic_load(&reader_done), atomic_load(&reader_got), atomic_load(&reader_eof),
             atomic_load(&reader_err));

    long p0 = atomic_load(&poll_iters), s0 = atomic_load(&sleep_iters);
    int64_t t0 = mono_ns();
    while ((atomic_load(&poll_iters) < p0 + 2 || atomic_load(&sleep_iters) < s0 + 2) &&
           mono_ns() - t0 < 2000000000LL)
        wl_sleep_ms(10);
    WL_CHECK(atomic_load(&poll_iters) >= p0 + 2,
             "poll thread: expected >= 2 more iterations within 2 s after verify, got %ld",
             atomic_load(&poll_iters) - p0);
    WL_CHECK(atomic_load(&sleep_iters) >= s0 + 2,
             "nanosleep thread: expected >= 2 more iterations within 2 s after verify, got %ld",
             atomic_load(&sleep_iters) - s0);

    ssize_t w;
    do
        w = write(rp[1], payload, PAYLOAD_LEN);
    while (w < 0 && errno == EINTR);
    WL_CHECK(w == PAYLOAD_LEN, "write payload: returned %zd (%s)", w,
             w < 0 ? strerror(errno) : "short");
    t0 = mono_ns();
    while (!atomic_load(&reader_done) && mono_ns() - t0 < 5000000000LL)
        wl_sleep_ms(5);
    WL_CHECK(atomic_load(&reader_done),
             "reader: did not receive the %d-byte payload within 5 s (got %d bytes)", PAYLOAD_LEN,
             atomic_load(&reader_got));
    WL_CHECK(!atomic_load(&reader_eof) && !atomic_load(&reader_err),
             "reader: unexpected %s after %d bytes", atomic_load(&reader_eof) ? "EOF" : "error",
             atomic_load(&reader_got));
    WL_CHECK(atomic_load(&reader_got) == PAYLOAD_LEN &&
                 memcmp(reader_buf, payload, PAYLOAD_LEN) == 0,
             "reader: expected exactly '%.*s' (%d bytes), got %d bytes '%.*s'", PAYLOAD_LEN - 1,
             payload, PAYLOAD_LEN, atomic_load(&reader_got), atomic_load(&reader_got), reader_buf);

    atomic_store(&stop, 1);
    pthread_join(tr, NULL);
    pthread_join(tp, NULL);
    pthread_join(ts, NULL);

    WL_CHECK(atomic_load(&poll_spurious) == 0,
             "poll thread: poll on an empty pipe reported readiness %ld times",
             atomic_load(&poll_spurious));
    WL_CHECK(atomic_load(&poll_early) == 0,
             "poll thread: %ld timeouts returned before 100 ms (shortest %.3f ms)",
             atomic_load(&poll_early), atomic_load(&min_poll_ns) / 1e6);
    WL_CHECK(atomic_load(&sleep_early) == 0,
             "nanosleep thread: %ld sleeps returned 0 before 50 ms (shortest %.3f ms)",
             atomic_load(&sleep_early), atomic_load(&min_sleep_ns) / 1e6);
    WL_CHECK(atomic_load(&usr1_wrong_thread) == 0,
             "SIGUSR1 sent with tgkill to the reader ran in another thread %d times",
             atomic_load(&usr1_wrong_thread));
    WL_CHECK(sent == 0 || (atomic_load(&usr1_count) >= 1 && atomic_load(&usr1_count) <= sent),
             "SIGUSR1: sent %d times, handler ran %d times (expected 1..%d)", sent,
             atomic_load(&usr1_count), sent);
    dprintf(1,
            "restart: info: reader EINTR %d, poll iters %ld EINTR %ld, nanosleep iters %ld EINTR "
            "%ld, SIGUSR1 sent %d handled %d\n",
            atomic_load(&reader_eintr), atomic_load(&poll_iters), atomic_load(&poll_eintr),
            atomic_load(&sleep_iters), atomic_load(&sleep_eintr), sent, atomic_load(&usr1_count));
    wl_report(1, "ok");
}
