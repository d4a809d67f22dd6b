/*
 * timens_clock.c - CLOCK_MONOTONIC and CLOCK_BOOTTIME as the workload sees
 * them never go backward and do not jump across a checkpoint/restore.
 *
 * Usage: timens_clock CTL_DIR [MAX_JUMP_MS [MIN_SECS]]
 *   MAX_JUMP_MS (default 5000): the largest step allowed between two
 *     readings 5 ms apart (a restore may add the time it takes, and outside
 *     a partition the time the tree was down);
 *   MIN_SECS (default 0): both clocks must read at least this many seconds
 *     at start and at verify (a partition started with its clocks shifted
 *     forward, as if from a host that had been up longer).
 *
 * Kernel state tested: the clocks of the workload's time namespace (its
 * offsets), and a periodic TFD_TIMER_ABSTIME timerfd on CLOCK_MONOTONIC
 * (interval 40 ms, first expiry 40 ms after start) read by the loop.
 * Verify: no reading of either clock was smaller than the one before; the
 * largest step <= MAX_JUMP_MS; both clocks >= MIN_SECS; the timer's
 * interval is exact, its next expiry on its grid (start + k*40 ms, 3 ms
 * tolerance) and within one interval, and the expirations read add up to
 * the grid points passed on the workload's own clock (+-2).
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000LL
#define NS 1000000000LL

static int64_t now_ns(int clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

int main(int argc, char **argv) {
    wl_init(argc, argv);
    int64_t max_jump = (argc > 2 ? atoll(argv[2]) : 5000) * MS;
    int64_t min_ns = (argc > 3 ? atoll(argv[3]) : 0) * NS;
    int clocks[2] = {CLOCK_MONOTONIC, CLOCK_BOOTTIME};
    const char *names[2] = {"CLOCK_MONOTONIC", "CLOCK_BOOTTIME"};
    int64_t last[2], worst[2] = {0, 0}, back[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        last[i] = now_ns(clocks[i]);
        WL_CHECK(last[i] >= min_ns, "%s reads %lld s at start, expected >= %lld "
                 "(time namespace offsets not applied)", names[i],
                 (long long)(last[i] / NS), (long long)(min_ns / NS));
    }
    const int64_t ival = 40 * MS;
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    WL_CHECK(tfd >= 0, "timerfd_create: %s", strerror(errno));
    int64_t start = now_ns(CLOCK_MONOTONIC) + ival;
    struct itimerspec its = {
        .it_interval = {0, ival},
        .it_value = {(time_t)(start / NS), (long)(start % NS)},
    };
    WL_CHECK(timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0,
             "timerfd_settime: %s", strerror(errno));
    uint64_t ticks = 0;
    wl_ready();
    while (!wl_verify_requested()) {
        for (int i = 0; i < 2; i++) {
            int64_t n = now_ns(clocks[i]);
            if (n - last[i] > worst[i]) worst[i] = n - last[i];
            if (n < last[i] && last[i] - n > back[i]) back[i] = last[i] - n;
            last[i] = n;
        }
        uint64_t t;
        if (read(tfd, &t, sizeof t) == (ssize_t)sizeof t) ticks += t;
        wl_sleep_ms(5);
    }
    for (int i = 0; i < 2; i++) {
        WL_CHECK(back[i] == 0, "%s went backward by %lld ms", names[i],
                 (long long)(back[i] / MS));
        WL_CHECK(worst[i] <= max_jump, "%s jumped forward by %lld ms (at most "
                 "%lld allowed)", names[i], (long long)(worst[i] / MS),
                 (long long)(max_jump / MS));
        int64_t n = now_ns(clocks[i]);
        WL_CHECK(n >= min_ns, "%s reads %lld s, expected >= %lld", names[i],
                 (long long)(n / NS), (long long)(min_ns / NS));
    }
    struct itimerspec cur;
    WL_CHECK(timerfd_gettime(tfd, &cur) == 0, "timerfd_gettime: %s",
             strerror(errno));
    WL_CHECK(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == ival,
             "timer interval %lld.%09ld s, expected 40 ms",
             (long long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
    int64_t left = (int64_t)cur.it_value.tv_sec * NS + cur.it_value.tv_nsec;
    int64_t now = now_ns(CLOCK_MONOTONIC);
    WL_CHECK(left > 0 && left <= ival, "timer: next expiry in %lld ms, "
             "expected within one interval", (long long)(left / MS));
    int64_t off = (now + left - start) % ival;
    WL_CHECK(off <= 3 * MS || off >= ival - 3 * MS,
             "timer: next expiry %lld us off its grid on this clock",
             (long long)(off / 1000));
    uint64_t t;
    if (read(tfd, &t, sizeof t) == (ssize_t)sizeof t) ticks += t;
    int64_t passed = (now_ns(CLOCK_MONOTONIC) - start) / ival + 1;
    WL_CHECK((int64_t)ticks >= passed - 2 && (int64_t)ticks <= passed + 2,
             "timer: %llu expirations read, %lld grid points passed on this "
             "clock", (unsigned long long)ticks, (long long)passed);
    wl_report(1, "ok");
}
