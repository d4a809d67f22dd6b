/*
 * events.c - event objects across checkpoint/restore: eventfd, epoll,
 * timerfd, signalfd, inotify, sealed memfd (one process).
 *
 * Kernel state tested:
 *  - eventfds: e_cnt count 5 (EFD_CLOEXEC); e_sem count 3 in EFD_SEMAPHORE
 *    mode; e_nb count 11, EFD_NONBLOCK;
 *  - a pipe with 9 bytes buffered;
 *  - epoll ep2 watching e_sem (EPOLLIN, data 0x456);
 *  - epoll ep (EPOLL_CLOEXEC) watching e_cnt (EPOLLIN, data.u64 0xabc), the
 *    pipe read end (EPOLLIN|EPOLLET, 0xdef), ep2 (EPOLLIN, 0x123) and e_nb
 *    (EPOLLOUT|EPOLLONESHOT, 0x789), all four ready and not yet collected
 *    by any epoll_wait;
 *  - timerfds: t_mono CLOCK_MONOTONIC, TFD_NONBLOCK, armed 10 s / interval
 *    1 s; t_real CLOCK_REALTIME, TFD_TIMER_ABSTIME at now + 1 day, interval
 *    7.125 s; t_off CLOCK_BOOTTIME, armed then disarmed;
 *  - signalfd (SFD_NONBLOCK) for SIGUSR1|SIGUSR2, SIGUSR1 blocked (SIGUSR2
 *    not), one SIGUSR1 pending, queued by this process with value 4242;
 *  - inotify (IN_NONBLOCK) watching CTL_DIR (IN_CREATE|IN_DELETE) and
 *    CTL_DIR/ino_watched (IN_MODIFY), with one event queued unread:
 *    IN_CREATE "ino_queued";
 *  - memfd "stasis-sealed" (MFD_ALLOW_SEALING), 8192 bytes, offset 100,
 *    seals F_SEAL_SHRINK|F_SEAL_GROW;
 *  - F_GETFL/F_GETFD of all these fds; the registrations shown in
 *    /proc/self/fdinfo (epoll tfd/events/data, inotify wd/mask, timerfd
 *    clockid and settime flags, signalfd sigmask, eventfd count).
 * Verify: the first epoll_wait returns exactly the 4 events with their
 * data, the second only the level-triggered ones (ET and ONESHOT already
 * collected); new pipe data re-triggers the ET entry; EPOLL_CTL_MOD re-arms
 * the ONESHOT entry and changes data; ADD of a registered fd gives EEXIST;
 * ep2 reports e_sem.  Eventfd counts, semaphore behaviour (3 reads of 1),
 * EAGAIN on the non-blocking one, new writes.  Timerfds: intervals exact,
 * t_mono's value in (0, 10 s] and not expired early, t_real's remaining
 * time matches its absolute expiry (within 2 s), t_off disarmed, and a
 * re-armed timer fires.  signalfd reads SIGUSR1 with si_pid/si_uid,
 * SI_QUEUE and value 4242, then EAGAIN, then a new SIGUSR1.  inotify
 * returns the queued event before any other "ino_*" event (events for other
 * names in CTL_DIR, such as the protocol's ready.tmp.<pid> and verify, are
 * skipped), keeps the watch descriptors (re-adding a watch returns the same
 * wd; fdinfo wd/mask unchanged) and reports new actions in order.
 * memfd: seals, size, content, offset, shrink/grow refused, seals can still
 * be added.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MEMFD_SZ 8192
#define SEED_MEMFD 601
#define SIG_VALUE 4242
#define NS_PER_S 1000000000LL

/* ---------------------------------------------------------------- utils */

static int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * NS_PER_S + t->tv_nsec;
}

static int64_t now_ns(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return ts_ns(&t);
}

/* whole /proc/self/fdinfo/fd into buf */
static void fdinfo(int fd, char *buf, size_t n)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fdinfo/%d", fd);
    buf[0] = 0;
    FILE *f = fopen(p, "r");
    if (!f)
        return;
    size_t r = fread(buf, 1, n - 1, f);
    buf[r] = 0;
    fclose(f);
}

/* value of "key" (up to end of line) from fdinfo, "" if absent */
static void fdinfo_get(int fd, const char *key, char *out, size_t n)
{
    char buf[4096];
    fdinfo(fd, buf, sizeof buf);
    out[0] = 0;
    size_t kl = strlen(key);
    for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, key, kl) == 0) {
            char *v = l + kl;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t len = strcspn(v, "\n");
            snprintf(out, n, "%.*s", (int)len, v);
            return;
        }
    }
}

/* registration lines of an epoll or inotify fd, with the fields that must
 * survive (epoll: tfd, events, data; inotify: wd, mask), sorted */
static void registrations(int fd, char *out, size_t n)
{
    char buf[4096];
    char lines[16][128];
    int nl = 0;
    fdinfo(fd, buf, sizeof buf);
    for (char *l = buf; l && *l && nl < 16; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        int tfd;
        unsigned ev;
        unsigned long long data;
        int wd;
        unsigned mask;
        if (sscanf(l, "tfd: %d events: %x data: %llx", &tfd, &ev, &data) == 3)
            snprintf(lines[nl++], 128, "tfd %d events %#x data %#llx", tfd, ev, data);
        else if (sscanf(l, "inotify wd:%d", &wd) == 1) {
            char *m = strstr(l, " mask:");
            if (!m || sscanf(m, " mask:%x", &mask) != 1)
                mask = 0;
            snprintf(lines[nl++], 128, "wd %d mask %#x", wd, mask);
        }
    }
    for (int i = 0; i < nl; i++)
        for (int j = i + 1; j < nl; j++)
            if (strcmp(lines[j], lines[i]) < 0) {
                char t[128];
                memcpy(t, lines[i], 128);
                memcpy(lines[i], lines[j], 128);
                memcpy(lines[j], t, 128);
            }
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < nl && o < n; i++)
        o += (size_t)snprintf(out + o, n - o, "%s%s", i ? "; " : "", lines[i]);
}

static int readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

static int wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (int waited = 0; waited < timeout_ms; waited += 50)
        if (poll(&p, 1, 50) > 0 && (p.revents & POLLIN))
            return 1;
    return 0;
}

static void xwrite(int fd, const void *p, size_t n, const char *what)
{
    ssize_t w;
    do
        w = write(fd, p, n);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)n)
        wl_fail("%s: write returned %zd (%s)", what, w, w < 0 ? strerror(errno) : "short");
}

static ssize_t xread(int fd, void *p, size_t n)
{
    ssize_t r;
    do
        r = read(fd, p, n);
    while (r < 0 && errno == EINTR);
    return r;
}

static uint64_t efd_read(int fd, const char *what)
{
    uint64_t v = 0;
    WL_CHECK(readable_now(fd), "%s: expected readable (count > 0), poll says not", what);
    ssize_t r = xread(fd, &v, 8);
    WL_CHECK(r == 8, "%s: read returned %zd (%s)", what, r, r < 0 ? strerror(errno) : "short");
    return v;
}

static void efd_write(int fd, uint64_t v, const char *what)
{
    xwrite(fd, &v, 8, what);
}

/* ------------------------------------------------------------ epoll */

struct evx {
    uint32_t events;
    uint64_t data;
};

static int ep_collect(int ep, struct evx *out, int max)
{
    struct epoll_event ev[16];
    int n;
    do
        n = epoll_wait(ep, ev, 16, 0);
    while (n < 0 && errno == EINTR);
    WL_CHECK(n >= 0, "epoll_wait failed: %s", strerror(errno));
    for (int i = 0; i < n && i < max; i++) {
        out[i].events = ev[i].events;
        out[i].data = ev[i].data.u64;
    }
    return n;
}

static void ev_str(const struct evx *e, int n, char *b, size_t bn)
{
    size_t o = 0;
    b[0] = 0;
    for (int i = 0; i < n && o < bn; i++)
        o += (size_t)snprintf(b + o, bn - o, "%s{%#llx %#x}", i ? " " : "",
                              (unsigned long long)e[i].data, e[i].events);
    if (!n)
        snprintf(b, bn, "none");
}

/* the events must be exactly `want` (any order) */
static void ep_expect(int ep, const struct evx *want, int nw, const char *what)
{
    struct evx got[16];
    int n = ep_collect(ep, got, 16);
    char b1[400], b2[400];
    ev_str(want, nw, b1, sizeof b1);
    ev_str(got, n, b2, sizeof b2);
    int ok = n == nw;
    for (int i = 0; ok && i < nw; i++) {
        int found = 0;
        for (int j = 0; j < n; j++)
            if (got[j].data == want[i].data && got[j].events == want[i].events)
                found = 1;
        ok = found;
    }
    WL_CHECK(ok, "%s: epoll_wait expected {data events}: %s; found %s", what, b1, b2);
}

static void ep_add(int ep, int fd, uint32_t events, uint64_t data, const char *what)
{
    struct epoll_event e = {.events = events, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
        wl_fail("setup: epoll_ctl ADD %s: %s", what, strerror(errno));
}

/* ---------------------------------------------------------- inotify */

struct inev {
    int wd;
    uint32_t mask;
    char name[64];
};

/* next inotify event whose name is "" (file watch) or starts with "ino_";
 * others (protocol files in CTL_DIR) are skipped */
static char ino_buf[8192];
static size_t ino_len, ino_off;

static int ino_next(int in, struct inev *e, int timeout_ms)
{
    for (;;) {
        while (ino_off < ino_len) {
            struct inotify_event *ie = (struct inotify_event *)(ino_buf + ino_off);
            ino_off += sizeof *ie + ie->len;
            e->wd = ie->wd;
            e->mask = ie->mask;
            snprintf(e->name, sizeof e->name, "%s", ie->len ? ie->name : "");
            if (e->name[0] == 0 || strncmp(e->name, "ino_", 4) == 0)
                return 1;
        }
        if (!wait_readable(in, timeout_ms))
            return 0;
        ssize_t r = xread(in, ino_buf, sizeof ino_buf);
        if (r < 0 && errno == EAGAIN)
            continue;
        WL_CHECK(r > 0, "inotify: read returned %zd (%s)", r, r < 0 ? strerror(errno) : "EOF");
        ino_len = (size_t)r;
        ino_off = 0;
    }
}

static void ino_expect(int in, int wd, uint32_t mask, const char *name, const char *what)
{
    struct inev e;
    WL_CHECK(ino_next(in, &e, 2000), "inotify: %s: expected event wd %d mask %#x name "
             "'%s', none within 2 s", what, wd, mask, name);
    WL_CHECK(e.wd == wd && e.mask == mask && strcmp(e.name, name) == 0,
             "inotify: %s: expected event wd %d mask %#x name '%s', found wd %d mask %#x name "
             "'%s'",
             what, wd, mask, name, e.wd, e.mask, e.name);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    const char *dir = wl_ctl_dir();
    {   /* known signal state: SIGUSR1 blocked only */
        sigset_t m;
        sigemptyset(&m);
        sigaddset(&m, SIGUSR1);
        sigprocmask(SIG_SETMASK, &m, NULL);
        signal(SIGUSR1, SIG_DFL);
        signal(SIGUSR2, SIG_DFL);
    }

    /* eventfds */
    int e_cnt = eventfd(5, EFD_CLOEXEC);
    int e_sem = eventfd(3, EFD_SEMAPHORE);
    int e_nb = eventfd(11, EFD_NONBLOCK);
    if (e_cnt < 0 || e_sem < 0 || e_nb < 0)
        wl_fail("setup: eventfd: %s", strerror(errno));

    /* pipe */
    int pp[2];
    if (pipe(pp) < 0)
        wl_fail("setup: pipe: %s", strerror(errno));
    xwrite(pp[1], "pipe-data", 9, "setup: pipe");

    /* epoll */
    int ep2 = epoll_create1(0), ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || ep2 < 0)
        wl_fail("setup: epoll_create1: %s", strerror(errno));
    ep_add(ep2, e_sem, EPOLLIN, 0x456, "e_sem in ep2");
    ep_add(ep, e_cnt, EPOLLIN, 0xabc, "e_cnt");
    ep_add(ep, pp[0], EPOLLIN | EPOLLET, 0xdef, "pipe");
    ep_add(ep, ep2, EPOLLIN, 0x123, "ep2");
    ep_add(ep, e_nb, EPOLLOUT | EPOLLONESHOT, 0x789, "e_nb");

    /* timerfds */
    int t_mono = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    int t_real = timerfd_create(CLOCK_REALTIME, 0);
    int t_off = timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC);
    if (t_mono < 0 || t_real < 0 || t_off < 0)
        wl_fail("setup: timerfd_create: %s", strerror(errno));
    int64_t mono_armed = now_ns(CLOCK_MONOTONIC);
    struct itimerspec its = {.it_interval = {1, 0}, .it_value = {10, 0}};
    if (timerfd_settime(t_mono, 0, &its, NULL) < 0)
        wl_fail("setup: timerfd_settime mono: %s", strerror(errno));
    struct timespec rnow;
    clock_gettime(CLOCK_REALTIME, &rnow);
    struct itimerspec itr = {.it_interval = {7, 125000000},
                             .it_value = {rnow.tv_sec + 86400, rnow.tv_nsec}};
    const int64_t real_target = ts_ns(&itr.it_value);
    if (timerfd_settime(t_real, TFD_TIMER_ABSTIME, &itr, NULL) < 0)
        wl_fail("setup: timerfd_settime realtime abs: %s", strerror(errno));
    struct itimerspec ito = {.it_interval = {0, 0}, .it_value = {5, 0}};
    if (timerfd_settime(t_off, 0, &ito, NULL) < 0)
        wl_fail("setup: timerfd_settime boottime: %s", strerror(errno));
    memset(&ito, 0, sizeof ito);
    if (timerfd_settime(t_off, 0, &ito, NULL) < 0)
        wl_fail("setup: timerfd_settime disarm: %s", strerror(errno));

    /* signalfd */
    sigset_t sm;
    sigemptyset(&sm);
    sigaddset(&sm, SIGUSR1);
    sigaddset(&sm, SIGUSR2);
    int sfd = signalfd(-1, &sm, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        wl_fail("setup: signalfd: %s", strerror(errno));
    {
        union sigval sv = {.sival_int = SIG_VALUE};
        if (sigqueue(getpid(), SIGUSR1, sv) < 0)
            wl_fail("setup: sigqueue: %s", strerror(errno));
    }

    /* inotify */
    int wf = open("ino_watched", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (wf < 0)
        wl_fail("setup: create ino_watched: %s", strerror(errno));
    close(wf);
    int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (in < 0)
        wl_fail("setup: inotify_init1: %s", strerror(errno));
    int wd_dir = inotify_add_watch(in, dir, IN_CREATE | IN_DELETE);
    int wd_file = inotify_add_watch(in, "ino_watched", IN_MODIFY);
    if (wd_dir < 0 || wd_file < 0)
        wl_fail("setup: inotify_add_watch: %s", strerror(errno));
    {
        int q = open("ino_queued", O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (q < 0)
            wl_fail("setup: create ino_queued: %s", strerror(errno));
        close(q);
    }

    /* sealed memfd */
    int mfd = memfd_create("stasis-sealed", MFD_ALLOW_SEALING | MFD_CLOEXEC);
    if (mfd < 0)
        wl_fail("setup: memfd_create: %s", strerror(errno));
    static unsigned char mbuf[MEMFD_SZ];
    wl_fill_pattern(mbuf, MEMFD_SZ, SEED_MEMFD);
    xwrite(mfd, mbuf, MEMFD_SZ, "setup: memfd");
    lseek(mfd, 100, SEEK_SET);
    if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
        wl_fail("setup: F_ADD_SEALS: %s", strerror(errno));

    /* snapshots */
    const int allfd[] = {e_cnt, e_sem, e_nb, pp[0], pp[1], ep2, ep, t_mono, t_real, t_off,
                         sfd, in, mfd};
    const char *allname[] = {"e_cnt", "e_sem", "e_nb", "pipe r", "pipe w", "ep2", "ep",
                             "t_mono", "t_real", "t_off", "signalfd", "inotify", "memfd"};
    enum { NFD = sizeof allfd / sizeof allfd[0] };
    int fl0[NFD], fdfl0[NFD];
    for (int i = 0; i < NFD; i++) {
        fl0[i] = fcntl(allfd[i], F_GETFL);
        fdfl0[i] = fcntl(allfd[i], F_GETFD);
    }
    static char reg_ep[1024], reg_ep2[1024], reg_in[1024];
    registrations(ep, reg_ep, sizeof reg_ep);
    registrations(ep2, reg_ep2, sizeof reg_ep2);
    registrations(in, reg_in, sizeof reg_in);
    {
        char v[64];
        fdinfo_get(t_real, "settime flags:", v, sizeof v);
        WL_CHECK(strtol(v, NULL, 8) == TFD_TIMER_ABSTIME,
                 "setup: t_real fdinfo 'settime flags' expected 01, found '%s'", v);
        fdinfo_get(sfd, "sigmask:", v, sizeof v);
        WL_CHECK(strtoull(v, NULL, 16) == 0xa00, "setup: signalfd sigmask '%s'", v);
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    char v1[1024];
    for (int i = 0; i < NFD; i++) {
        WL_CHECK(fcntl(allfd[i], F_GETFL) == fl0[i],
                 "%s (fd %d): F_GETFL expected %#o, found %#o", allname[i], allfd[i], fl0[i],
                 fcntl(allfd[i], F_GETFL));
        WL_CHECK(fcntl(allfd[i], F_GETFD) == fdfl0[i],
                 "%s (fd %d): F_GETFD expected %d, found %d", allname[i], allfd[i], fdfl0[i],
                 fcntl(allfd[i], F_GETFD));
    }
    WL_CHECK(fl0[2] & O_NONBLOCK, "e_nb: O_NONBLOCK expected");
    registrations(ep, v1, sizeof v1);
    WL_CHECK(strcmp(v1, reg_ep) == 0, "ep registrations (fdinfo) expected '%s', found '%s'",
             reg_ep, v1);
    registrations(ep2, v1, sizeof v1);
    WL_CHECK(strcmp(v1, reg_ep2) == 0, "ep2 registrations (fdinfo) expected '%s', found '%s'",
             reg_ep2, v1);
    registrations(in, v1, sizeof v1);
    WL_CHECK(strcmp(v1, reg_in) == 0, "inotify watches (fdinfo) expected '%s', found '%s'",
             reg_in, v1);

    /* ---- epoll */
    {
        const struct evx all[] = {{EPOLLIN, 0xabc}, {EPOLLIN, 0xdef}, {EPOLLIN, 0x123},
                                  {EPOLLOUT, 0x789}};
        ep_expect(ep, all, 4, "first wait (4 ready registrations, none collected before)");
        const struct evx lt[] = {{EPOLLIN, 0xabc}, {EPOLLIN, 0x123}};
        ep_expect(ep, lt, 2, "second wait (EPOLLET pipe and EPOLLONESHOT e_nb already reported)");
        xwrite(pp[1], "!", 1, "verify: pipe");
        const struct evx et[] = {{EPOLLIN, 0xabc}, {EPOLLIN, 0xdef}, {EPOLLIN, 0x123}};
        ep_expect(ep, et, 3, "after new pipe data (EPOLLET re-triggers)");
        struct epoll_event e = {.events = EPOLLOUT | EPOLLONESHOT, .data.u64 = 0x78a};
        WL_CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, e_nb, &e) == 0, "EPOLL_CTL_MOD e_nb: %s",
                 strerror(errno));
        e.events = EPOLLIN;
        e.data.u64 = 0xabd;
        WL_CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, e_cnt, &e) == 0, "EPOLL_CTL_MOD e_cnt: %s",
                 strerror(errno));
        const struct evx mod[] = {{EPOLLIN, 0xabd}, {EPOLLIN, 0x123}, {EPOLLOUT, 0x78a}};
        ep_expect(ep, mod, 3, "after EPOLL_CTL_MOD (new data, ONESHOT re-armed)");
        int r = epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &e);
        WL_CHECK(r < 0 && errno == EEXIST, "EPOLL_CTL_ADD of the registered pipe: expected "
                 "EEXIST, found %d (%s)", r, r < 0 ? strerror(errno) : "success");
        const struct evx inner[] = {{EPOLLIN, 0x456}};
        ep_expect(ep2, inner, 1, "nested ep2");
        char buf[16];
        ssize_t n = xread(pp[0], buf, sizeof buf);
        WL_CHECK(n == 10 && memcmp(buf, "pipe-data!", 10) == 0,
                 "pipe: expected 'pipe-data!', read %zd bytes", n);
    }

    /* ---- eventfds */
    {
        char v[64];
        fdinfo_get(e_cnt, "eventfd-count:", v, sizeof v);
        WL_CHECK(strtoull(v, NULL, 16) == 5, "e_cnt: fdinfo eventfd-count expected 5, found '%s'",
                 v);
        fdinfo_get(e_sem, "eventfd-count:", v, sizeof v);
        WL_CHECK(strtoull(v, NULL, 16) == 3, "e_sem: fdinfo eventfd-count expected 3, found '%s'",
                 v);
        uint64_t x = efd_read(e_cnt, "e_cnt");
        WL_CHECK(x == 5, "e_cnt: read expected 5, found %llu", (unsigned long long)x);
        WL_CHECK(!readable_now(e_cnt), "e_cnt: readable after reading the count");
        for (int i = 0; i < 3; i++) {
            x = efd_read(e_sem, "e_sem (EFD_SEMAPHORE)");
            WL_CHECK(x == 1, "e_sem (EFD_SEMAPHORE, count 3): read #%d expected 1, found %llu",
                     i + 1, (unsigned long long)x);
        }
        WL_CHECK(!readable_now(e_sem), "e_sem: readable after 3 semaphore reads (count was 3)");
        x = efd_read(e_nb, "e_nb");
        WL_CHECK(x == 11, "e_nb: read expected 11, found %llu", (unsigned long long)x);
        ssize_t r = xread(e_nb, &x, 8);
        WL_CHECK(r < 0 && errno == EAGAIN, "e_nb (EFD_NONBLOCK, count 0): read expected EAGAIN, "
                 "found %zd (%s)", r, r < 0 ? strerror(errno) : "a value");
        efd_write(e_sem, 2, "e_sem");
        x = efd_read(e_sem, "e_sem after write 2");
        WL_CHECK(x == 1, "e_sem: after writing 2 read expected 1, found %llu",
                 (unsigned long long)x);
        efd_write(e_cnt, 7, "e_cnt");
        efd_write(e_cnt, 6, "e_cnt");
        x = efd_read(e_cnt, "e_cnt after writes");
        WL_CHECK(x == 13, "e_cnt: after writing 7 and 6 read expected 13, found %llu",
                 (unsigned long long)x);
        const struct evx none[] = {{EPOLLIN, 0x123}};
        ep_expect(ep, none, 1, "after draining e_cnt (ep2 still has e_sem with count 1)");
    }

    /* ---- timerfds */
    {
        char v[64];
        fdinfo_get(t_mono, "clockid:", v, sizeof v);
        WL_CHECK(atoi(v) == CLOCK_MONOTONIC, "t_mono: fdinfo clockid expected %d, found '%s'",
                 CLOCK_MONOTONIC, v);
        fdinfo_get(t_real, "clockid:", v, sizeof v);
        WL_CHECK(atoi(v) == CLOCK_REALTIME, "t_real: fdinfo clockid expected %d, found '%s'",
                 CLOCK_REALTIME, v);
        fdinfo_get(t_off, "clockid:", v, sizeof v);
        WL_CHECK(atoi(v) == CLOCK_BOOTTIME, "t_off: fdinfo clockid expected %d, found '%s'",
                 CLOCK_BOOTTIME, v);
        fdinfo_get(t_real, "settime flags:", v, sizeof v);
        WL_CHECK(strtol(v, NULL, 8) & TFD_TIMER_ABSTIME,
                 "t_real: fdinfo 'settime flags' expected TFD_TIMER_ABSTIME (01), found '%s'", v);
        fdinfo_get(t_mono, "settime flags:", v, sizeof v);
        WL_CHECK(strtol(v, NULL, 8) == 0, "t_mono: fdinfo 'settime flags' expected 0, found '%s'",
                 v);

        struct itimerspec g;
        memset(&g, 0, sizeof g);
        WL_CHECK(timerfd_gettime(t_mono, &g) == 0, "t_mono: timerfd_gettime: %s",
                 strerror(errno));
        int64_t elapsed = now_ns(CLOCK_MONOTONIC) - mono_armed;
        uint64_t ticks = 0;
        ssize_t r = xread(t_mono, &ticks, 8);
        WL_CHECK(r == 8 || (r < 0 && errno == EAGAIN), "t_mono: read returned %zd (%s)", r,
                 strerror(errno));
        if (r < 0)
            ticks = 0;
        int64_t val = ts_ns(&g.it_value);
        WL_CHECK(g.it_interval.tv_sec == 1 && g.it_interval.tv_nsec == 0,
                 "t_mono: interval expected exactly 1 s, found %lld.%09ld s",
                 (long long)g.it_interval.tv_sec, g.it_interval.tv_nsec);
        WL_CHECK(val > 0 && val <= 10 * NS_PER_S,
                 "t_mono: remaining time expected in (0, 10 s], found %.3f s", val / 1e9);
        WL_CHECK(ticks == 0 || elapsed >= 10 * NS_PER_S - NS_PER_S / 10,
                 "t_mono: %llu expirations after only %.3f s of CLOCK_MONOTONIC since arming at "
                 "10 s (fired early)",
                 (unsigned long long)ticks, elapsed / 1e9);
        WL_CHECK(ticks == 0 || (int64_t)ticks <= elapsed / NS_PER_S - 8,
                 "t_mono: %llu expirations after %.3f s (10 s value + 1 s interval allows at most "
                 "%lld)",
                 (unsigned long long)ticks, elapsed / 1e9, (long long)(elapsed / NS_PER_S) - 8);
        if (ticks == 0 && elapsed < 10 * NS_PER_S - NS_PER_S / 10)
            WL_CHECK(val >= 10 * NS_PER_S - elapsed - NS_PER_S / 5,
                     "t_mono: remaining %.3f s, but only %.3f s passed since it was armed at "
                     "10 s (runs fast)",
                     val / 1e9, elapsed / 1e9);
        if (ticks > 0)
            WL_CHECK(val <= NS_PER_S, "t_mono: expired, so the remaining time must be within "
                     "the 1 s interval, found %.3f s", val / 1e9);

        memset(&g, 0, sizeof g);
        WL_CHECK(timerfd_gettime(t_real, &g) == 0, "t_real: timerfd_gettime: %s",
                 strerror(errno));
        int64_t want = real_target - now_ns(CLOCK_REALTIME);
        val = ts_ns(&g.it_value);
        WL_CHECK(g.it_interval.tv_sec == 7 && g.it_interval.tv_nsec == 125000000,
                 "t_real: interval expected exactly 7.125000000 s, found %lld.%09ld s",
                 (long long)g.it_interval.tv_sec, g.it_interval.tv_nsec);
        WL_CHECK(val > want - 2 * NS_PER_S && val < want + 2 * NS_PER_S,
                 "t_real (TFD_TIMER_ABSTIME, expires at setup time + 1 day): remaining expected "
                 "%.3f s, found %.3f s",
                 want / 1e9, val / 1e9);
        WL_CHECK(!readable_now(t_real), "t_real: expired although it is due in a day");

        memset(&g, 0xff, sizeof g);
        WL_CHECK(timerfd_gettime(t_off, &g) == 0, "t_off: timerfd_gettime: %s", strerror(errno));
        WL_CHECK(ts_ns(&g.it_value) == 0 && ts_ns(&g.it_interval) == 0,
                 "t_off: expected disarmed (0/0), found value %.3f s interval %.3f s",
                 ts_ns(&g.it_value) / 1e9, ts_ns(&g.it_interval) / 1e9);
        WL_CHECK(!readable_now(t_off), "t_off: disarmed timer is readable");

        /* still works: re-arm t_off for 50 ms */
        struct itimerspec s = {.it_value = {0, 50000000}};
        WL_CHECK(timerfd_settime(t_off, 0, &s, NULL) == 0, "t_off: settime: %s", strerror(errno));
        WL_CHECK(wait_readable(t_off, 3000), "t_off: re-armed for 50 ms, did not fire within 3 s");
        r = xread(t_off, &ticks, 8);
        WL_CHECK(r == 8 && ticks == 1, "t_off: expected 1 expiration, read %zd / %llu", r,
                 (unsigned long long)ticks);
    }

    /* ---- signalfd */
    {
        char v[64];
        fdinfo_get(sfd, "sigmask:", v, sizeof v);
        WL_CHECK(strtoull(v, NULL, 16) == 0xa00,
                 "signalfd: fdinfo sigmask expected SIGUSR1|SIGUSR2 (0xa00), found '%s'", v);
        sigset_t cur, pend;
        sigprocmask(SIG_BLOCK, NULL, &cur);
        WL_CHECK(sigismember(&cur, SIGUSR1) == 1 && sigismember(&cur, SIGUSR2) == 0,
                 "blocked mask: expected SIGUSR1 blocked and SIGUSR2 not, found %d / %d",
                 sigismember(&cur, SIGUSR1), sigismember(&cur, SIGUSR2));
        sigpending(&pend);
        WL_CHECK(sigismember(&pend, SIGUSR1) == 1, "SIGUSR1 expected pending");
        struct signalfd_siginfo si;
        memset(&si, 0, sizeof si);
        WL_CHECK(readable_now(sfd), "signalfd: not readable although SIGUSR1 is pending");
        ssize_t r = xread(sfd, &si, sizeof si);
        WL_CHECK(r == sizeof si, "signalfd: read returned %zd (%s)", r,
                 r < 0 ? strerror(errno) : "short");
        WL_CHECK(si.ssi_signo == SIGUSR1 && si.ssi_code == SI_QUEUE &&
                     si.ssi_pid == (uint32_t)getpid() && si.ssi_uid == (uint32_t)getuid() &&
                     si.ssi_int == SIG_VALUE,
                 "signalfd: expected SIGUSR1 code SI_QUEUE pid %d uid %d value %d, found signal "
                 "%u code %d pid %u uid %u value %d",
                 (int)getpid(), (int)getuid(), SIG_VALUE, si.ssi_signo, si.ssi_code, si.ssi_pid,
                 si.ssi_uid, si.ssi_int);
        r = xread(sfd, &si, sizeof si);
        WL_CHECK(r < 0 && errno == EAGAIN, "signalfd (SFD_NONBLOCK): second read expected EAGAIN, "
                 "found %zd (signal %u)", r, si.ssi_signo);
        kill(getpid(), SIGUSR1);
        WL_CHECK(wait_readable(sfd, 2000), "signalfd: a new SIGUSR1 is not reported");
        r = xread(sfd, &si, sizeof si);
        WL_CHECK(r == sizeof si && si.ssi_signo == SIGUSR1 && si.ssi_code == SI_USER &&
                     si.ssi_pid == (uint32_t)getpid(),
                 "signalfd: new SIGUSR1 read %zd: signal %u code %d pid %u", r, si.ssi_signo,
                 si.ssi_code, si.ssi_pid);
    }

    /* ---- inotify */
    {
        /* Events queued at checkpoint time are not kept by a restore (the kernel offers no
         * way to read an inotify queue without consuming it): the one queued at setup may be
         * gone, but if anything is there it must be that event. */
        struct inev q;
        if (ino_next(in, &q, 200))
            WL_CHECK(q.wd == wd_dir && q.mask == IN_CREATE && strcmp(q.name, "ino_queued") == 0,
                     "inotify: the event queued at setup must come first: expected wd %d mask "
                     "%#x name 'ino_queued', found wd %d mask %#x name '%s'",
                     wd_dir, (unsigned)IN_CREATE, q.wd, q.mask, q.name);
        WL_CHECK(inotify_add_watch(in, dir, IN_CREATE | IN_DELETE) == wd_dir,
                 "inotify: re-adding the CTL_DIR watch expected wd %d, found %d (%s)", wd_dir,
                 inotify_add_watch(in, dir, IN_CREATE | IN_DELETE), strerror(errno));
        WL_CHECK(inotify_add_watch(in, "ino_watched", IN_MODIFY) == wd_file,
                 "inotify: re-adding the ino_watched watch expected wd %d, found %d (%s)", wd_file,
                 inotify_add_watch(in, "ino_watched", IN_MODIFY), strerror(errno));
        int f = open("ino_new", O_WRONLY | O_CREAT | O_EXCL, 0644);
        WL_CHECK(f >= 0, "create ino_new: %s", strerror(errno));
        close(f);
        f = open("ino_watched", O_WRONLY | O_APPEND);
        WL_CHECK(f >= 0 && write(f, "x", 1) == 1, "write ino_watched: %s", strerror(errno));
        close(f);
        WL_CHECK(unlink("ino_new") == 0, "unlink ino_new: %s", strerror(errno));
        ino_expect(in, wd_dir, IN_CREATE, "ino_new", "create ino_new");
        ino_expect(in, wd_file, IN_MODIFY, "", "write to ino_watched");
        ino_expect(in, wd_dir, IN_DELETE, "ino_new", "unlink ino_new");
        struct inev e;
        WL_CHECK(!ino_next(in, &e, 50), "inotify: unexpected extra event wd %d mask %#x "
                 "name '%s'", e.wd, e.mask, e.name);
    }

    /* ---- memfd */
    {
        int seals = fcntl(mfd, F_GET_SEALS);
        WL_CHECK(seals == (F_SEAL_SHRINK | F_SEAL_GROW),
                 "memfd: seals expected F_SEAL_SHRINK|F_SEAL_GROW (%#x), found %#x",
                 F_SEAL_SHRINK | F_SEAL_GROW, seals);
        char link[256], p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", mfd);
        ssize_t n = readlink(p, link, sizeof link - 1);
        link[n < 0 ? 0 : n] = 0;
        WL_CHECK(strcmp(link, "/memfd:stasis-sealed (deleted)") == 0,
                 "memfd: link expected '/memfd:stasis-sealed (deleted)', found '%s'", link);
        struct stat st;
        fstat(mfd, &st);
        WL_CHECK(st.st_size == MEMFD_SZ, "memfd: size expected %d, found %lld", MEMFD_SZ,
                 (long long)st.st_size);
        off_t off = lseek(mfd, 0, SEEK_CUR);
        WL_CHECK(off == 100, "memfd: offset expected 100, found %lld", (long long)off);
        static unsigned char got[MEMFD_SZ];
        WL_CHECK(pread(mfd, got, MEMFD_SZ, 0) == MEMFD_SZ &&
                     wl_check_pattern(got, MEMFD_SZ, SEED_MEMFD),
                 "memfd: content differs from the %d bytes written", MEMFD_SZ);
        int r = ftruncate(mfd, MEMFD_SZ / 2);
        WL_CHECK(r < 0 && errno == EPERM, "memfd (F_SEAL_SHRINK): ftruncate smaller expected "
                 "EPERM, found %d (%s)", r, r < 0 ? strerror(errno) : "success");
        r = ftruncate(mfd, MEMFD_SZ * 2);
        WL_CHECK(r < 0 && errno == EPERM, "memfd (F_SEAL_GROW): ftruncate larger expected EPERM, "
                 "found %d (%s)", r, r < 0 ? strerror(errno) : "success");
        ssize_t w = pwrite(mfd, "tail", 4, MEMFD_SZ);
        WL_CHECK(w < 0 && errno == EPERM, "memfd (F_SEAL_GROW): write past the end expected "
                 "EPERM, found %zd (%s)", w, w < 0 ? strerror(errno) : "written");
        w = pwrite(mfd, "mid", 3, 500);
        WL_CHECK(w == 3, "memfd: write inside expected to work, found %zd (%s)", w,
                 w < 0 ? strerror(errno) : "short");
        WL_CHECK(fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE) == 0, "memfd: F_ADD_SEALS F_SEAL_WRITE "
                 "failed (F_SEAL_SEAL was not set): %s", strerror(errno));
        w = pwrite(mfd, "mid", 3, 500);
        WL_CHECK(w < 0 && errno == EPERM, "memfd (F_SEAL_WRITE): write expected EPERM, found %zd",
                 w);
    }

    wl_report(1, "ok");
}
