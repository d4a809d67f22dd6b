/*
 * netlink_sock.c - netlink sockets without pending messages across checkpoint/restore.
 *
 * Kernel state tested (read back at setup, compared after restore):
 *  - NETLINK_ROUTE socket A bound (port chosen by the kernel) to groups RTNLGRP_IPV4_RULE and
 *    RTNLGRP_IPV6_RULE through bind, and RTNLGRP_BRVLAN (33, beyond the 32 of bind) through
 *    NETLINK_ADD_MEMBERSHIP; NETLINK_PKTINFO, NETLINK_NO_ENOBUFS, NETLINK_EXT_ACK,
 *    NETLINK_GET_STRICT_CHK, SO_RCVBUF 64 KiB;
 *  - NETLINK_ROUTE socket B bound to an explicit port id (pid + 7000000), which already made
 *    one request and read its whole answer; after restore a new RTM_GETLINK dump on B must be
 *    answered to the same port id, with the loopback interface in it;
 *  - NETLINK_GENERIC socket C, never bound (port 0), SOCK_DGRAM; after restore it can still
 *    ask the generic netlink controller for the "nlctrl" family;
 *  - NETLINK_ROUTE socket D connected to the kernel (port 0).
 * With --pending: socket B is left with an unread answer (the checkpoint must refuse, naming
 * the socket and why; CTL_DIR/fd says which fd).
 */
#define _GNU_SOURCE
#include "sockcheck.h"

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

static int nl(int type, int proto)
{
    int s = socket(AF_NETLINK, type, proto);
    if (s < 0)
        wl_fail("socket(AF_NETLINK, %d): %m", proto);
    return s;
}

static void bind_nl(int s, unsigned pid, unsigned groups)
{
    struct sockaddr_nl a = {.nl_family = AF_NETLINK, .nl_pid = pid, .nl_groups = groups};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        wl_fail("bind netlink port %u groups %#x: %m", pid, groups);
}

static void getlink(int s, unsigned seq)
{
    struct {
        struct nlmsghdr h;
        struct ifinfomsg i;
    } req = {.h = {.nlmsg_len = sizeof req, .nlmsg_type = RTM_GETLINK,
                   .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = seq},
             .i = {.ifi_family = AF_UNSPEC}};
    struct sockaddr_nl k = {.nl_family = AF_NETLINK};
    if (sendto(s, &req, sizeof req, 0, (struct sockaddr *)&k, sizeof k) < 0)
        wl_fail("RTM_GETLINK: %m");
}

/* Read a dump answer to the end; returns whether "lo" was in it; checks the port id. */
static int read_dump(int s, unsigned seq, unsigned port)
{
    static char buf[65536];
    int lo = 0;
    for (;;) {
        WL_CHECK(sc_wait(s, POLLIN, 3000), "no answer to RTM_GETLINK %u", seq);
        ssize_t n = recv(s, buf, sizeof buf, 0);
        WL_CHECK(n > 0, "recv: %zd %m", n);
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
             h = NLMSG_NEXT(h, n)) {
            WL_CHECK(h->nlmsg_seq == seq && h->nlmsg_pid == port,
                     "answer for seq %u port %u, expected seq %u port %u", h->nlmsg_seq,
                     h->nlmsg_pid, seq, port);
            if (h->nlmsg_type == NLMSG_DONE)
                return lo;
            WL_CHECK(h->nlmsg_type == RTM_NEWLINK, "unexpected message type %d",
                     h->nlmsg_type);
            struct ifinfomsg *i = NLMSG_DATA(h);
            if (i->ifi_index == 1)
                lo = 1;
        }
    }
}

static unsigned port_of(int s)
{
    struct sockaddr_nl a;
    socklen_t l = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &l);
    return a.nl_pid;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    int pending = argc > 2 && !strcmp(argv[2], "--pending");

    int a = nl(SOCK_RAW, NETLINK_ROUTE);
    sc_set(a, SOL_SOCKET, SO_RCVBUF, 65536, "SO_RCVBUF");
    bind_nl(a, 0, 1u << (RTNLGRP_IPV4_RULE - 1) | 1u << (RTNLGRP_IPV6_RULE - 1));
    int g = 33; /* RTNLGRP_BRVLAN */
    if (setsockopt(a, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof g) < 0)
        wl_fail("NETLINK_ADD_MEMBERSHIP 33: %m");
    sc_set(a, SOL_NETLINK, NETLINK_PKTINFO, 1, "NETLINK_PKTINFO");
    sc_set(a, SOL_NETLINK, NETLINK_NO_ENOBUFS, 1, "NETLINK_NO_ENOBUFS");
    sc_set(a, SOL_NETLINK, NETLINK_EXT_ACK, 1, "NETLINK_EXT_ACK");
    sc_set(a, SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1, "NETLINK_GET_STRICT_CHK");
    sc_snap(a, -1, 0, "A address (port, groups)");
    sc_snap(a, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, "A memberships");

    int b = nl(SOCK_RAW, NETLINK_ROUTE);
    unsigned bport = (unsigned)getpid() + 7000000;
    bind_nl(b, bport, 0);
    getlink(b, 1);
    WL_CHECK(read_dump(b, 1, bport), "setup: lo missing from the link dump");
    sc_snap(b, -1, 0, "B address");

    int c = nl(SOCK_DGRAM, NETLINK_GENERIC);
    sc_snap(c, -1, 0, "C address (unbound)");
    sc_snap(c, SOL_SOCKET, SO_TYPE, "C type");
    sc_snap(c, SOL_SOCKET, SO_PROTOCOL, "C protocol");

    int d = nl(SOCK_RAW, NETLINK_ROUTE);
    struct sockaddr_nl k = {.nl_family = AF_NETLINK};
    if (connect(d, (struct sockaddr *)&k, sizeof k) < 0)
        wl_fail("connect netlink: %m");
    sc_snap(d, -1, 0, "D address");
    sc_snap(d, -2, 0, "D peer");

    if (pending) {
        getlink(b, 2);
        WL_CHECK(sc_wait(b, POLLIN, 3000), "setup: no answer queued");
        char path[4096];
        snprintf(path, sizeof path, "%s/fd", wl_ctl_dir());
        FILE *f = fopen(path, "w");
        fprintf(f, "%d\n", b);
        fclose(f);
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);

    sc_verify();
    if (pending) {
        /* The refused checkpoint left the answer where it was. */
        WL_CHECK(read_dump(b, 2, bport), "pending answer lost");
    }
    WL_CHECK(port_of(b) == bport, "B port %u, expected %u", port_of(b), bport);
    getlink(b, 3);
    WL_CHECK(read_dump(b, 3, bport), "lo missing from the link dump after restore");

    /* Generic netlink: CTRL_CMD_GETFAMILY "nlctrl". */
    struct {
        struct nlmsghdr h;
        struct genlmsghdr g;
        struct nlattr a;
        char name[8];
    } q = {.h = {.nlmsg_len = sizeof q, .nlmsg_type = GENL_ID_CTRL,
                 .nlmsg_flags = NLM_F_REQUEST, .nlmsg_seq = 9},
           .g = {.cmd = CTRL_CMD_GETFAMILY, .version = 1},
           .a = {.nla_len = NLA_HDRLEN + 7, .nla_type = CTRL_ATTR_FAMILY_NAME},
           .name = "nlctrl"};
    WL_CHECK(sendto(c, &q, sizeof q, 0, (struct sockaddr *)&k, sizeof k) == sizeof q,
             "generic netlink request: %m");
    static char buf[16384];
    WL_CHECK(sc_wait(c, POLLIN, 3000), "no generic netlink answer");
    ssize_t n = recv(c, buf, sizeof buf, 0);
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    WL_CHECK(n > 0 && h->nlmsg_type == GENL_ID_CTRL && h->nlmsg_seq == 9,
             "generic netlink answer: %zd bytes, type %d", n, n > 0 ? h->nlmsg_type : -1);

    /* D still talks to the kernel. */
    getlink(d, 4);
    WL_CHECK(read_dump(d, 4, port_of(d)), "D: lo missing");
    wl_report(1, "ok");
}
