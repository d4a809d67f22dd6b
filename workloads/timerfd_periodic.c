/*
 * timerfd_periodic.c - periodic timerfds whose expiry has not been read yet,
 * on every clock, with every settime flag.
 *
 * The kernel re-arms a periodic timerfd only when it is read: until then its
 * fdinfo shows it_value (0, 0), its interval and ticks 1.
 *
 * Kernel state tested (all armed 20 ms after start, never read before verify
 * unless said otherwise):
 *  - t_mono   CLOCK_MONOTONIC, relative, interval 100 ms, TFD_NONBLOCK;
 *  - t_boot   CLOCK_BOOTTIME, relative, interval 150 ms;
 *  - t_rabs   CLOCK_REALTIME, TFD_TIMER_ABSTIME, interval 100 ms;
 *  - t_mabs   CLOCK_MONOTONIC, TFD_TIMER_ABSTIME, interval 120 ms;
 *  - t_babs   CLOCK_BOOTTIME, TFD_TIMER_ABSTIME, interval 110 ms;
 *  - t_cset   CLOCK_REALTIME, ABSTIME|CANCEL_ON_SET, interval 100 ms;
 *  - t_balarm CLOCK_BOOTTIME_ALARM, relative, interval 200 ms;
 *  - t_ralarm CLOCK_REALTIME_ALARM, ABSTIME, interval 200 ms;
 *  - t_once   CLOCK_REALTIME, ABSTIME|CANCEL_ON_SET, one shot in one day;
 *  - t_loop   CLOCK_MONOTONIC, relative 10 ms / interval 50 ms, read by the
 *             main loop (an event loop's tick), TFD_NONBLOCK.
 * Verify, for each: /proc/self/fdinfo clockid and settime flags as set,
 * timerfd_gettime interval exact; the first read returns >= 1 expiration
 * (absolute timers: the number of grid points start + k*interval passed,
 * +-1; relative ones: at most elapsed/interval + 2); the timer keeps firing:
 * two more expirations come within interval + 400 ms each and are spaced by
 * about the interval; absolute timers (except t_cset, which is restored one
 * interval later) stay on their grid (next expiry = start + k*interval
 * within 5 ms).  t_loop kept ticking in the loop.  Last, CLOCK_REALTIME is
 * set to itself: t_once and t_cset read ECANCELED, t_rabs does not.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000ULL
#define NS 1000000000ULL

struct tmr {
    const char *name;
    int clock;
    int flags;      /* settime flags */
    uint64_t ival;  /* ns */
    int grid;       /* check the absolute grid */
    int fd;
    uint64_t start; /* first expiry on its clock (absolute) */
};

static struct tmr T[] = {
    {"t_mono", CLOCK_MONOTONIC, 0, 100 * MS, 0, -1, 0},
    {"t_boot", CLOCK_BOOTTIME, 0, 150 * MS, 0, -1, 0},
    {"t_rabs", CLOCK_REALTIME, TFD_TIMER_ABSTIME, 100 * MS, 1, -1, 0},
    {"t_mabs", CLOCK_MONOTONIC, TFD_TIMER_ABSTIME, 120 * MS, 1, -1, 0},
    {"t_babs", CLOCK_BOOTTIME, TFD_TIMER_ABSTIME, 110 * MS, 1, -1, 0},
    {"t_cset", CLOCK_REALTIME, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET,
     100 * MS, 0, -1, 0},
    {"t_balarm", CLOCK_BOOTTIME_ALARM, 0, 200 * MS, 0, -1, 0},
    {"t_ralarm", CLOCK_REALTIME_ALARM, TFD_TIMER_ABSTIME, 200 * MS, 1, -1, 0},
};
#define NT ((int)(sizeof T / sizeof T[0]))

static int t_once = -1, t_loop = -1;
static uint64_t loop_ticks;

static uint64_t now_on(int clock) {
    struct timespec ts;
    if (clock == CLOCK_REALTIME_ALARM) clock = CLOCK_REALTIME;
    if (clock == CLOCK_BOOTTIME_ALARM) clock = CLOCK_BOOTTIME;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static struct timespec ts_of(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / NS), (long)(ns % NS)};
    return ts;
}

static uint64_t ns_of(struct timespec ts) {
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

/* "clockid: N" and "settime flags: 0N" from /proc/self/fdinfo/FD. */
static void fdinfo_timer(int fd, int *clock, int *flags) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    WL_CHECK(f != NULL, "open %s: %s", path, strerror(errno));
    *clock = *flags = -1;
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "clockid: %d", clock);
        sscanf(line, "settime flags: %o", (unsigned *)flags);
    }
    fclose(f);
}

static void arm(struct tmr *t) {
    t->fd = timerfd_create(t->clock, t == &T[0] ? TFD_NONBLOCK : 0);
    WL_CHECK(t->fd >= 0, "%s: timerfd_create(%d): %s", t->name, t->clock,
             strerror(errno));
    struct itimerspec its = {.it_interval = ts_of(t->ival)};
    if (t->flags & TFD_TIMER_ABSTIME) {
        t->start = now_on(t->clock) + 20 * MS;
        its.it_value = ts_of(t->start);
    } else {
        t->start = now_on(t->clock) + 20 * MS;
        its.it_value = ts_of(20 * MS);
    }
    WL_CHECK(timerfd_settime(t->fd, t->flags, &its, NULL) == 0,
             "%s: timerfd_settime: %s", t->name, strerror(errno));
}

/* Wait up to ms for fd to be readable and read its count (0: timeout). */
static uint64_t wait_read(int fd, int ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do r = poll(&p, 1, ms); while (r < 0 && errno == EINTR);
    if (r <= 0) return 0;
    uint64_t n = 0;
    ssize_t got = read(fd, &n, sizeof n);
    if (got != (ssize_t)sizeof n) return 0;
    return n;
}

static void check_timer(struct tmr *t) {
    int clock, flags;
    fdinfo_timer(t->fd, &clock, &flags);
    WL_CHECK(clock == t->clock && flags == t->flags,
             "%s: fdinfo clockid %d settime flags %o, expected %d and %o",
             t->name, clock, flags, t->clock, t->flags);
    struct itimerspec cur;
    WL_CHECK(timerfd_gettime(t->fd, &cur) == 0, "%s: gettime: %s", t->name,
             strerror(errno));
    WL_CHECK(ns_of(cur.it_interval) == t->ival,
             "%s: interval %llu ns, expected %llu (periodic timer disarmed?)",
             t->name, (unsigned long long)ns_of(cur.it_interval),
             (unsigned long long)t->ival);
    uint64_t n = wait_read(t->fd, (int)(t->ival / MS) + 400);
    uint64_t now = now_on(t->clock);
    WL_CHECK(n >= 1, "%s: no expiration pending after restore", t->name);
    uint64_t passed = now > t->start ? (now - t->start) / t->ival + 1 : 0;
    if (t->flags & TFD_TIMER_ABSTIME) {
        if (t->grid)
            WL_CHECK(n + 1 >= passed && n <= passed + 1,
                     "%s: first read %llu expirations, %llu grid points passed",
                     t->name, (unsigned long long)n,
                     (unsigned long long)passed);
    } else {
        WL_CHECK(n <= passed + 2, "%s: first read %llu expirations, at most "
                 "%llu possible", t->name, (unsigned long long)n,
                 (unsigned long long)passed);
    }
    /* Keeps ticking at its interval. */
    uint64_t n1 = wait_read(t->fd, (int)(t->ival / MS) + 400);
    uint64_t a = now_on(t->clock);
    WL_CHECK(n1 >= 1, "%s: stopped ticking after its pending expirations "
             "were read", t->name);
    uint64_t n2 = wait_read(t->fd, (int)(t->ival / MS) + 400);
    uint64_t b = now_on(t->clock);
    WL_CHECK(n2 >= 1, "%s: stopped ticking after one more expiration",
             t->name);
    uint64_t per = (b - a) / n2;
    WL_CHECK(per + 30 * MS >= t->ival && per <= t->ival + 200 * MS,
             "%s: period %llu ms, interval %llu ms", t->name,
             (unsigned long long)(per / MS), (unsigned long long)(t->ival / MS));
    if (t->grid) {
        WL_CHECK(timerfd_gettime(t->fd, &cur) == 0, "gettime");
        uint64_t next = now_on(t->clock) + ns_of(cur.it_value);
        uint64_t off = (next - t->start) % t->ival;
        WL_CHECK(off <= 5 * MS || off + 5 * MS >= t->ival,
                 "%s: next expiry %llu ns off its grid (interval %llu ms)",
                 t->name, (unsigned long long)off,
                 (unsigned long long)(t->ival / MS));
    }
}

static void check_cancel(void) {
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    WL_CHECK(clock_settime(CLOCK_REALTIME, &rt) == 0,
             "clock_settime(CLOCK_REALTIME): %s", strerror(errno));
    uint64_t n;
    int fl = fcntl(t_once, F_GETFL);
    fcntl(t_once, F_SETFL, fl | O_NONBLOCK);
    errno = 0;
    WL_CHECK(read(t_once, &n, sizeof n) < 0 && errno == ECANCELED,
             "t_once: read after the clock was set: %s, expected ECANCELED "
             "(TFD_TIMER_CANCEL_ON_SET lost)", strerror(errno));
    int cset = T[5].fd;
    fcntl(cset, F_SETFL, fcntl(cset, F_GETFL) | O_NONBLOCK);
    errno = 0;
    ssize_t r = read(cset, &n, sizeof n);
    WL_CHECK(r < 0 && errno == ECANCELED,
             "t_cset: read after the clock was set: %zd (%s), expected "
             "ECANCELED", r, strerror(errno));
    int rabs = T[2].fd;
    n = wait_read(rabs, 500);
    WL_CHECK(n >= 1, "t_rabs: no tick after the clock was set (it has no "
             "CANCEL_ON_SET)");
}

int main(int argc, char **argv) {
    wl_init(argc, argv);
    for (int i = 0; i < NT; i++) arm(&T[i]);
    t_once = timerfd_create(CLOCK_REALTIME, 0);
    WL_CHECK(t_once >= 0, "timerfd_create: %s", strerror(errno));
    struct itimerspec once = {.it_value = ts_of(now_on(CLOCK_REALTIME) + 86400 * NS)};
    WL_CHECK(timerfd_settime(t_once, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET,
                             &once, NULL) == 0, "t_once: %s", strerror(errno));
    t_loop = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec lp = {.it_value = ts_of(10 * MS), .it_interval = ts_of(50 * MS)};
    WL_CHECK(timerfd_settime(t_loop, 0, &lp, NULL) == 0, "t_loop: %s",
             strerror(errno));
    wl_sleep_ms(60); /* every timer has expired once: not re-armed yet */
    wl_ready();
    while (!wl_verify_requested()) {
        uint64_t n;
        if (read(t_loop, &n, sizeof n) == (ssize_t)sizeof n) loop_ticks += n;
        wl_sleep_ms(10);
    }
    for (int i = 0; i < NT; i++) check_timer(&T[i]);
    uint64_t before = loop_ticks;
    for (int i = 0; i < 10; i++) {
        uint64_t n;
        if (read(t_loop, &n, sizeof n) == (ssize_t)sizeof n) loop_ticks += n;
        wl_sleep_ms(30);
    }
    WL_CHECK(loop_ticks > before, "t_loop: the event loop's tick stopped "
             "(%llu ticks before, none in 300 ms)",
             (unsigned long long)before);
    check_cancel();
    wl_report(1, "ok");
}
