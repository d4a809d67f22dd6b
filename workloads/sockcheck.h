/*
 * sockcheck.h - helpers for the socket workloads (sockopts, udplite, raw_sock, ping_sock,
 * packet_sock, netlink_sock, tcp_halfclosed): record socket options and addresses as set up,
 * and check after any number of restores that each one reads back the same.
 */
#ifndef STASIS_SOCKCHECK_H
#define STASIS_SOCKCHECK_H
#include "common.h"
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct sc_rec {
    int fd, level, name, rc;
    const char *label;
    socklen_t len;
    unsigned char val[128];
};
static struct sc_rec sc_recs[512];
static int sc_n;

/* Read an option (or, with level -1, getsockname; -2, getpeername) into r. */
static void sc_read(int fd, int level, int name, struct sc_rec *r)
{
    memset(r->val, 0, sizeof r->val);
    r->len = sizeof r->val;
    int rc;
    if (level == -1)
        rc = getsockname(fd, (struct sockaddr *)r->val, &r->len);
    else if (level == -2)
        rc = getpeername(fd, (struct sockaddr *)r->val, &r->len);
    else
        rc = getsockopt(fd, level, name, r->val, &r->len);
    r->rc = rc < 0 ? -errno : 0;
    if (rc < 0)
        r->len = 0;
}

/* Remember the current value of an option (level -1/-2: local/peer address). */
static void sc_snap(int fd, int level, int name, const char *label)
{
    if (sc_n >= (int)(sizeof sc_recs / sizeof sc_recs[0]))
        wl_fail("sockcheck: too many records");
    struct sc_rec *r = &sc_recs[sc_n++];
    r->fd = fd;
    r->level = level;
    r->name = name;
    r->label = label;
    sc_read(fd, level, name, r);
}

static void sc_hex(const unsigned char *p, socklen_t n, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = 0;
    for (socklen_t i = 0; i < n && o + 3 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%02x", p[i]);
}

/* Every remembered value must read back the same. */
static inline void sc_verify(void)
{
    for (int i = 0; i < sc_n; i++) {
        struct sc_rec *r = &sc_recs[i], now;
        sc_read(r->fd, r->level, r->name, &now);
        if (now.rc != r->rc || now.len != r->len || memcmp(now.val, r->val, r->len)) {
            char a[160], b[160];
            sc_hex(r->val, r->len, a, sizeof a);
            sc_hex(now.val, now.len, b, sizeof b);
            wl_fail("%s (fd %d, level %d, option %d): was rc %d value %s, now rc %d value %s",
                    r->label, r->fd, r->level, r->name, r->rc, a, now.rc, b);
        }
    }
}

static inline void sc_set(int fd, int level, int name, int v, const char *label)
{
    if (setsockopt(fd, level, name, &v, sizeof v) < 0)
        wl_fail("setup: setsockopt %s = %d: %s", label, v, strerror(errno));
    sc_snap(fd, level, name, label);
}

static inline int sc_getint(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, name, &v, &l) < 0)
        return -1000 - errno;
    return v;
}

static inline int sc_wait(int fd, short ev, int ms)
{
    struct pollfd p = {.fd = fd, .events = ev};
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r > 0 ? p.revents : 0;
}

#endif
