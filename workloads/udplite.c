/*
 * udplite.c - UDP-Lite sockets and shut-down UDP sockets across checkpoint/restore
 * (loopback, ports 42121-42127).
 *
 * Kernel state tested:
 *  - UDP-Lite 127.0.0.1:42121 with UDPLITE_SEND_CSCOV 20 and UDPLITE_RECV_CSCOV 12, three
 *    datagrams queued from UDP-Lite 127.0.0.1:42122 (connected to 42121): contents, order and
 *    sender kept; then new datagrams flow both ways;
 *  - UDP-Lite [::1]:42123 with one datagram queued;
 *  - UDP 42124 connected to 42125 and shut down for writing: send fails with EPIPE; it still
 *    receives;
 *  - UDP 42126 with one datagram queued, shut down for reading: the datagram is still read,
 *    then poll says POLLRDHUP and recv returns 0;
 *  - UDP 42127, unconnected, SHUT_RDWR (the kernel answers ENOTCONN but shuts it down):
 *    poll says POLLHUP.
 */
#define _GNU_SOURCE
#include "sockcheck.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif
#define UDPLITE_SEND_CSCOV 10
#define UDPLITE_RECV_CSCOV 11

static struct sockaddr_in lo4(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    return a;
}

static int sock4(int proto, int port)
{
    int s = socket(AF_INET, SOCK_DGRAM, proto);
    if (s < 0)
        wl_fail("socket proto %d: %m", proto);
    struct sockaddr_in a = lo4(port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        wl_fail("bind %d: %m", port);
    sc_snap(s, -1, 0, "local address");
    return s;
}

static void connect4(int s, int port)
{
    struct sockaddr_in a = lo4(port);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0)
        wl_fail("connect %d: %m", port);
    sc_snap(s, -2, 0, "peer address");
}

static void expect_dgram(int s, const char *msg, int from_port)
{
    char buf[256];
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    WL_CHECK(sc_wait(s, POLLIN, 3000), "expected '%s': nothing to read", msg);
    ssize_t n = recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
    WL_CHECK(n == (ssize_t)strlen(msg) && !memcmp(buf, msg, n), "expected '%s', got %zd '%.*s'",
             msg, n, (int)(n > 0 ? n : 0), buf);
    if (from_port) {
        int port = from.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&from)->sin_port)
                                             : ntohs(((struct sockaddr_in6 *)&from)->sin6_port);
        WL_CHECK(port == from_port, "'%s' came from port %d, expected %d", msg, port,
                 from_port);
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);

    int l1 = sock4(IPPROTO_UDPLITE, 42121);
    sc_set(l1, IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV, 20, "UDPLITE_SEND_CSCOV");
    sc_set(l1, IPPROTO_UDPLITE, UDPLITE_RECV_CSCOV, 12, "UDPLITE_RECV_CSCOV");
    sc_snap(l1, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL");
    int l2 = sock4(IPPROTO_UDPLITE, 42122);
    connect4(l2, 42121);
    const char *q[] = {"lite one", "lite two, longer", "lite three"};
    for (int i = 0; i < 3; i++)
        if (send(l2, q[i], strlen(q[i]), 0) < 0)
            wl_fail("send: %m");

    int l6 = socket(AF_INET6, SOCK_DGRAM, IPPROTO_UDPLITE);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(42123),
                              .sin6_addr = in6addr_loopback};
    if (bind(l6, (struct sockaddr *)&a6, sizeof a6) < 0)
        wl_fail("bind [::1]:42123: %m");
    sc_snap(l6, -1, 0, "udplite6 address");
    int t6 = socket(AF_INET6, SOCK_DGRAM, IPPROTO_UDPLITE);
    if (sendto(t6, "six", 3, 0, (struct sockaddr *)&a6, sizeof a6) != 3)
        wl_fail("sendto [::1]:42123: %m");
    close(t6);

    int w = sock4(0, 42124);
    int wpeer = sock4(0, 42125);
    connect4(w, 42125);
    if (shutdown(w, SHUT_WR) < 0)
        wl_fail("shutdown(SHUT_WR): %m");
    int r = sock4(0, 42126);
    struct sockaddr_in ar = lo4(42126);
    if (sendto(wpeer, "before shutdown", 15, 0, (struct sockaddr *)&ar, sizeof ar) != 15)
        wl_fail("sendto 42126: %m");
    WL_CHECK(sc_wait(r, POLLIN, 3000), "setup: datagram for 42126 did not arrive");
    shutdown(r, SHUT_RD); /* ENOTCONN, but done */
    int h = sock4(0, 42127);
    shutdown(h, SHUT_RDWR);
    WL_CHECK(sc_wait(h, POLLIN, 0) & POLLHUP, "setup: SHUT_RDWR not seen");

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);

    sc_verify();
    for (int i = 0; i < 3; i++)
        expect_dgram(l1, q[i], 42122);
    expect_dgram(l6, "six", 0);
    struct sockaddr_in a2 = lo4(42122);
    WL_CHECK(sendto(l1, "reply", 5, 0, (struct sockaddr *)&a2, sizeof a2) == 5, "reply: %m");
    expect_dgram(l2, "reply", 42121);

    WL_CHECK(send(w, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE,
             "send on a socket shut down for writing should fail with EPIPE");
    struct sockaddr_in aw = lo4(42124);
    WL_CHECK(sendto(wpeer, "to w", 4, 0, (struct sockaddr *)&aw, sizeof aw) == 4,
             "send to w: %m");
    expect_dgram(w, "to w", 42125);

    expect_dgram(r, "before shutdown", 42125);
    short ev = sc_wait(r, POLLIN | POLLRDHUP, 0);
    WL_CHECK(ev & POLLRDHUP, "socket shut down for reading: poll gives %#x, no POLLRDHUP", ev);
    char c;
    WL_CHECK(recv(r, &c, 1, 0) == 0, "recv after SHUT_RD should return 0");

    WL_CHECK(sc_wait(h, POLLIN, 0) & POLLHUP, "SHUT_RDWR socket: no POLLHUP");
    wl_report(1, "ok");
}
