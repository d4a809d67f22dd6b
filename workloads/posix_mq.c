/*
 * posix_mq.c - a POSIX message queue across checkpoint/restore.
 *
 * Kernel state tested (one process):
 *  - a queue named "/stasis-<basename of CTL_DIR>" (unique per instance;
 *    the name is written to CTL_DIR/mq), mode 0600, mq_maxmsg 8,
 *    mq_msgsize 512 (within the default fs.mqueue limits 10 / 8192);
 *  - two descriptors: mq_rw (O_RDWR) and mq_nb (O_RDONLY|O_NONBLOCK);
 *  - 4 queued messages, sent in the order (priority 5, 100 bytes),
 *    (1, 7 bytes), (9, 512 bytes), (5, 0 bytes).
 * Verify: mq_getattr of both descriptors (maxmsg, msgsize, curmsgs 4, flags
 * 0 / O_NONBLOCK); the name still opens the same queue; mq_receive returns
 * the messages in priority order, FIFO among equal priorities (9, 5 x100,
 * 5 x0, 1), with their priorities, lengths and content; then EAGAIN on the
 * non-blocking descriptor and ETIMEDOUT from mq_timedreceive on the blocking
 * one; a new message sent through a fresh descriptor arrives.  The queue is
 * mq_unlink()ed at the end of verify (the test may also remove it).
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXMSG 8
#define MSGSIZE 512
#define NM 4
#define SEED_MQ 500

static const unsigned msg_prio[NM] = {5, 1, 9, 5};
static const size_t msg_len[NM] = {100, 7, 512, 0};
static const int recv_order[NM] = {2, 0, 3, 1};

static void check_attr(mqd_t q, long flags, long cur, const char *what)
{
    struct mq_attr a;
    memset(&a, 0, sizeof a);
    WL_CHECK(mq_getattr(q, &a) == 0, "%s: mq_getattr failed: %s", what, strerror(errno));
    WL_CHECK(a.mq_maxmsg == MAXMSG && a.mq_msgsize == MSGSIZE && a.mq_curmsgs == cur &&
                 a.mq_flags == flags,
             "%s: attributes expected maxmsg %d msgsize %d curmsgs %ld flags %#lx, found %ld %ld "
             "%ld %#lx",
             what, MAXMSG, MSGSIZE, cur, flags, a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs,
             a.mq_flags);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    const char *dir = wl_ctl_dir();
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    char name[NAME_MAX];
    snprintf(name, sizeof name, "/stasis-%.200s", base);
    for (char *p = name + 1; *p; p++)
        if (*p == '/')
            *p = '_';
    static char buf[MSGSIZE + 64];

    mq_unlink(name); /* a leftover of an earlier run with the same ctl dir name */
    struct mq_attr attr = {.mq_maxmsg = MAXMSG, .mq_msgsize = MSGSIZE};
    mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
    if (q == (mqd_t)-1)
        wl_fail("setup: mq_open %s: %s", name, strerror(errno));
    mqd_t qnb = mq_open(name, O_RDONLY | O_NONBLOCK);
    if (qnb == (mqd_t)-1)
        wl_fail("setup: mq_open %s O_NONBLOCK: %s", name, strerror(errno));
    for (int i = 0; i < NM; i++) {
        wl_fill_pattern(buf, msg_len[i], SEED_MQ + (uint64_t)i);
        int r;
        do
            r = mq_send(q, buf, msg_len[i], msg_prio[i]);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            wl_fail("setup: mq_send #%d: %s", i, strerror(errno));
    }
    {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/mq", dir);
        FILE *f = fopen(p, "w");
        if (!f)
            wl_fail("setup: fopen %s: %s", p, strerror(errno));
        fprintf(f, "%s\n", name);
        fclose(f);
    }
    check_attr(q, 0, NM, "setup");

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    check_attr(q, 0, NM, "mq_rw (O_RDWR)");
    check_attr(qnb, O_NONBLOCK, NM, "mq_nb (O_RDONLY|O_NONBLOCK)");
    WL_CHECK((fcntl(q, F_GETFL) & O_ACCMODE) == O_RDWR &&
                 (fcntl(qnb, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDONLY | O_NONBLOCK),
             "F_GETFL of the descriptors expected O_RDWR / O_RDONLY|O_NONBLOCK, found %#o / %#o",
             fcntl(q, F_GETFL), fcntl(qnb, F_GETFL));
    mqd_t q3 = mq_open(name, O_WRONLY);
    WL_CHECK(q3 != (mqd_t)-1, "mq_open(%s) by name failed: %s", name, strerror(errno));
    check_attr(q3, 0, NM, "fresh descriptor opened by name");

    for (int k = 0; k < NM; k++) {
        int i = recv_order[k];
        unsigned prio = 12345;
        ssize_t r;
        do
            r = mq_receive(qnb, buf, sizeof buf, &prio);
        while (r < 0 && errno == EINTR);
        WL_CHECK(r >= 0, "receive #%d: expected message #%d (priority %u, %zu bytes), "
                 "mq_receive failed: %s", k, i, msg_prio[i], msg_len[i], strerror(errno));
        WL_CHECK((size_t)r == msg_len[i] && prio == msg_prio[i],
                 "receive #%d: expected message #%d with priority %u and %zu bytes, found "
                 "priority %u and %zd bytes",
                 k, i, msg_prio[i], msg_len[i], prio, r);
        WL_CHECK(wl_check_pattern(buf, (size_t)r, SEED_MQ + (uint64_t)i),
                 "receive #%d (priority %u, %zd bytes): content differs", k, prio, r);
    }
    ssize_t r = mq_receive(qnb, buf, sizeof buf, NULL);
    WL_CHECK(r < 0 && errno == EAGAIN, "mq_nb: empty queue expected EAGAIN, mq_receive returned "
             "%zd (%s)", r, r < 0 ? strerror(errno) : "a message");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    r = mq_timedreceive(q, buf, sizeof buf, NULL, &ts);
    WL_CHECK(r < 0 && errno == ETIMEDOUT, "mq_rw: empty queue expected ETIMEDOUT after 50 ms, "
             "mq_timedreceive returned %zd (%s)", r, r < 0 ? strerror(errno) : "a message");
    check_attr(q, 0, 0, "mq_rw after draining");

    const char m[] = "fresh message";
    WL_CHECK(mq_send(q3, m, sizeof m, 3) == 0, "mq_send via a fresh descriptor failed: %s",
             strerror(errno));
    unsigned prio = 0;
    r = mq_receive(q, buf, sizeof buf, &prio);
    WL_CHECK(r == (ssize_t)sizeof m && prio == 3 && memcmp(buf, m, sizeof m) == 0,
             "new message: expected '%s' priority 3, mq_receive returned %zd priority %u", m, r,
             prio);

    mq_close(q3);
    mq_close(qnb);
    mq_close(q);
    WL_CHECK(mq_unlink(name) == 0, "mq_unlink(%s) failed: %s", name, strerror(errno));
    wl_report(1, "ok");
}
