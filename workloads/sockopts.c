/*
 * sockopts.c - socket options of IPv4/IPv6 sockets across checkpoint/restore (loopback, ports
 * 42101-42109).
 *
 * Kernel state tested (every value read back at setup is compared after restore):
 *  - UDP 127.0.0.1:42101: SO_BINDTODEVICE "lo", IP_RECVERR, IP_PKTINFO, IP_MTU_DISCOVER DO,
 *    IP_RECVTTL, IP_RECVTOS, IP_TOS 0x28, IP_TTL 33, IP_MULTICAST_TTL 7, IP_MULTICAST_LOOP 0,
 *    IP_MULTICAST_ALL 0, SO_PRIORITY 5, SO_MARK 42, SO_TIMESTAMPNS, SO_RCVLOWAT 1, UDP_CORK;
 *  - UDP [::1]:42102 (IPV6_V6ONLY): IPV6_RECVERR, IPV6_RECVPKTINFO, IPV6_MTU_DISCOVER DO,
 *    IPV6_MULTICAST_HOPS 9, IPV6_MULTICAST_LOOP 0, IPV6_RECVTCLASS, IPV6_RECVHOPLIMIT,
 *    IPV6_UNICAST_HOPS 17, IPV6_TCLASS 0x20, IPV6_DONTFRAG;
 *  - UDP bound with IP_FREEBIND to 127.0.0.5:42103 and TCP [::]:42108 with IPV6_FREEBIND
 *    and IP_TRANSPARENT off;
 *  - SO_REUSEPORT groups: three UDP sockets on 127.0.0.1:42104 and two TCP listeners on
 *    127.0.0.1:42105 (a fourth socket must still be able to join each group; datagrams sent to
 *    the port reach the group);
 *  - a TCP listener on 127.0.0.1:42106 with TCP_DEFER_ACCEPT, TCP_MAXSEG 1000,
 *    TCP_FASTOPEN 5, TCP_CONGESTION reno, keepalive times, TCP_USER_TIMEOUT;
 *  - an established TCP connection (both ends here) with TCP_CORK, TCP_USER_TIMEOUT 12345,
 *    TCP_KEEPIDLE 77 / KEEPINTVL 11 / KEEPCNT 3, TCP_CONGESTION reno, TCP_NOTSENT_LOWAT 16384,
 *    TCP_LINGER2 17, TCP_SYNCNT 4, TCP_NODELAY, IP_TOS; corked bytes must come out when
 *    uncorked after restore;
 *  - a classic BPF filter (SO_ATTACH_FILTER, only datagrams starting with 'A') on UDP
 *    127.0.0.1:42107, locked (SO_LOCK_FILTER): the same program reads back (SO_GET_FILTER),
 *    the lock holds (attaching fails with EPERM) and the filter still drops 'B' datagrams.
 */
#define _GNU_SOURCE
#include "sockcheck.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef SO_LOCK_FILTER
#define SO_LOCK_FILTER 44
#endif
#ifndef IP_MULTICAST_ALL
#define IP_MULTICAST_ALL 49
#endif

static struct sockaddr_in sin4(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static int udp4(const char *ip, int port, int reuseport)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0)
        wl_fail("socket: %m");
    if (reuseport)
        sc_set(s, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
    struct sockaddr_in a = sin4(ip, port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        wl_fail("bind %s:%d: %m", ip, port);
    sc_snap(s, -1, 0, "udp local address");
    return s;
}

static int tcp_listener(const char *ip, int port, int reuseport)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        wl_fail("socket: %m");
    sc_set(s, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    if (reuseport)
        sc_set(s, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
    struct sockaddr_in a = sin4(ip, port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 8) < 0)
        wl_fail("bind/listen %s:%d: %m", ip, port);
    sc_snap(s, -1, 0, "listener address");
    sc_snap(s, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN");
    return s;
}

static void set_cc(int s, const char *cc)
{
    if (setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, cc, strlen(cc)) < 0)
        wl_fail("TCP_CONGESTION %s: %m", cc);
    sc_snap(s, IPPROTO_TCP, TCP_CONGESTION, "TCP_CONGESTION");
}

static void send_to(const char *ip, int port, const char *msg)
{
    int t = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = sin4(ip, port);
    if (sendto(t, msg, strlen(msg), 0, (struct sockaddr *)&a, sizeof a) < 0)
        wl_fail("sendto %s:%d: %m", ip, port);
    close(t);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);

    /* UDP over IPv4 with IP options. */
    int u4 = udp4("127.0.0.1", 42101, 0);
    if (setsockopt(u4, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) < 0)
        wl_fail("SO_BINDTODEVICE lo: %m");
    sc_snap(u4, SOL_SOCKET, SO_BINDTODEVICE, "SO_BINDTODEVICE");
    sc_set(u4, IPPROTO_IP, IP_RECVERR, 1, "IP_RECVERR");
    sc_set(u4, IPPROTO_IP, IP_PKTINFO, 1, "IP_PKTINFO");
    sc_set(u4, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO, "IP_MTU_DISCOVER");
    sc_set(u4, IPPROTO_IP, IP_RECVTTL, 1, "IP_RECVTTL");
    sc_set(u4, IPPROTO_IP, IP_RECVTOS, 1, "IP_RECVTOS");
    sc_set(u4, IPPROTO_IP, IP_TOS, 0x28, "IP_TOS");
    sc_set(u4, IPPROTO_IP, IP_TTL, 33, "IP_TTL");
    sc_set(u4, IPPROTO_IP, IP_MULTICAST_TTL, 7, "IP_MULTICAST_TTL");
    sc_set(u4, IPPROTO_IP, IP_MULTICAST_LOOP, 0, "IP_MULTICAST_LOOP");
    sc_set(u4, IPPROTO_IP, IP_MULTICAST_ALL, 0, "IP_MULTICAST_ALL");
    sc_set(u4, SOL_SOCKET, SO_PRIORITY, 5, "SO_PRIORITY");
    sc_set(u4, SOL_SOCKET, SO_MARK, 42, "SO_MARK");
    sc_set(u4, SOL_SOCKET, SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS");
    sc_snap(u4, SOL_SOCKET, SO_TIMESTAMP, "SO_TIMESTAMP");
    sc_set(u4, IPPROTO_UDP, UDP_CORK, 1, "UDP_CORK");

    /* UDP over IPv6. */
    int u6 = socket(AF_INET6, SOCK_DGRAM, 0);
    sc_set(u6, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(42102)};
    a6.sin6_addr = in6addr_loopback;
    if (bind(u6, (struct sockaddr *)&a6, sizeof a6) < 0)
        wl_fail("bind [::1]:42102: %m");
    sc_snap(u6, -1, 0, "udp6 local address");
    sc_set(u6, IPPROTO_IPV6, IPV6_RECVERR, 1, "IPV6_RECVERR");
    sc_set(u6, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1, "IPV6_RECVPKTINFO");
    sc_set(u6, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, "IPV6_MTU_DISCOVER");
    sc_set(u6, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 9, "IPV6_MULTICAST_HOPS");
    sc_set(u6, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 0, "IPV6_MULTICAST_LOOP");
    sc_set(u6, IPPROTO_IPV6, IPV6_RECVTCLASS, 1, "IPV6_RECVTCLASS");
    sc_set(u6, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1, "IPV6_RECVHOPLIMIT");
    sc_set(u6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 17, "IPV6_UNICAST_HOPS");
    sc_set(u6, IPPROTO_IPV6, IPV6_TCLASS, 0x20, "IPV6_TCLASS");
    sc_set(u6, IPPROTO_IPV6, IPV6_DONTFRAG, 1, "IPV6_DONTFRAG");

    /* IP_FREEBIND / IPV6_FREEBIND. */
    int fb = socket(AF_INET, SOCK_DGRAM, 0);
    sc_set(fb, IPPROTO_IP, IP_FREEBIND, 1, "IP_FREEBIND");
    struct sockaddr_in afb = sin4("127.0.0.5", 42103);
    if (bind(fb, (struct sockaddr *)&afb, sizeof afb) < 0)
        wl_fail("bind 127.0.0.5:42103: %m");
    sc_snap(fb, -1, 0, "freebind local address");
    int fb6 = socket(AF_INET6, SOCK_STREAM, 0);
    sc_set(fb6, IPPROTO_IPV6, IPV6_FREEBIND, 1, "IPV6_FREEBIND");
    sc_set(fb6, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    struct sockaddr_in6 afb6 = {.sin6_family = AF_INET6, .sin6_port = htons(42108)};
    if (bind(fb6, (struct sockaddr *)&afb6, sizeof afb6) < 0 || listen(fb6, 4) < 0)
        wl_fail("bind/listen [::]:42108: %m");
    sc_snap(fb6, -1, 0, "freebind6 local address");
    sc_snap(fb6, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY");

    /* SO_REUSEPORT groups. */
    int rp[3];
    for (int i = 0; i < 3; i++)
        rp[i] = udp4("127.0.0.1", 42104, 1);
    int lp[2];
    for (int i = 0; i < 2; i++)
        lp[i] = tcp_listener("127.0.0.1", 42105, 1);

    /* A listener with TCP options. */
    int ls = tcp_listener("127.0.0.1", 42106, 0);
    sc_set(ls, IPPROTO_TCP, TCP_DEFER_ACCEPT, 3, "TCP_DEFER_ACCEPT");
    sc_set(ls, IPPROTO_TCP, TCP_MAXSEG, 1000, "TCP_MAXSEG");
    sc_set(ls, IPPROTO_TCP, TCP_FASTOPEN, 5, "TCP_FASTOPEN");
    sc_set(ls, IPPROTO_TCP, TCP_KEEPIDLE, 99, "TCP_KEEPIDLE");
    sc_set(ls, IPPROTO_TCP, TCP_USER_TIMEOUT, 4321, "TCP_USER_TIMEOUT");
    set_cc(ls, "reno");

    /* An established connection (a second listener accepts it). */
    int l2 = tcp_listener("127.0.0.1", 42109, 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a2 = sin4("127.0.0.1", 42109);
    if (connect(c, (struct sockaddr *)&a2, sizeof a2) < 0)
        wl_fail("connect 42109: %m");
    int sv = accept(l2, NULL, NULL);
    if (sv < 0)
        wl_fail("accept: %m");
    sc_snap(c, -1, 0, "client local");
    sc_snap(c, -2, 0, "client peer");
    sc_set(c, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    sc_set(c, IPPROTO_TCP, TCP_USER_TIMEOUT, 12345, "TCP_USER_TIMEOUT");
    sc_set(c, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
    sc_set(c, IPPROTO_TCP, TCP_KEEPIDLE, 77, "TCP_KEEPIDLE");
    sc_set(c, IPPROTO_TCP, TCP_KEEPINTVL, 11, "TCP_KEEPINTVL");
    sc_set(c, IPPROTO_TCP, TCP_KEEPCNT, 3, "TCP_KEEPCNT");
    sc_set(c, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 16384, "TCP_NOTSENT_LOWAT");
    sc_set(c, IPPROTO_TCP, TCP_LINGER2, 17, "TCP_LINGER2");
    sc_set(c, IPPROTO_TCP, TCP_SYNCNT, 4, "TCP_SYNCNT");
    sc_set(c, IPPROTO_IP, IP_TOS, 0x10, "IP_TOS");
    set_cc(c, "reno");
    sc_set(c, IPPROTO_TCP, TCP_CORK, 1, "TCP_CORK");
    if (send(c, "corked", 6, 0) != 6)
        wl_fail("send corked: %m");

    /* A locked classic BPF filter: only datagrams whose first byte is 'A'. */
    int fu = udp4("127.0.0.1", 42107, 0);
    struct sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 8), /* after the UDP header */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 'A', 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0xffff),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_fprog fp = {.len = 4, .filter = prog};
    if (setsockopt(fu, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) < 0)
        wl_fail("SO_ATTACH_FILTER: %m");
    sc_set(fu, SOL_SOCKET, SO_LOCK_FILTER, 1, "SO_LOCK_FILTER");

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);

    sc_verify();

    /* The filter program reads back, the lock holds, the filter works. */
    struct sock_filter back[8];
    socklen_t bl = 8;
    WL_CHECK(getsockopt(fu, SOL_SOCKET, SO_GET_FILTER, back, &bl) == 0 && bl == 4 &&
                 memcmp(back, prog, sizeof prog) == 0,
             "SO_GET_FILTER: %u instructions (%m), expected the 4 attached", bl);
    WL_CHECK(setsockopt(fu, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) < 0 && errno == EPERM,
             "attaching to a locked filter should fail with EPERM");
    send_to("127.0.0.1", 42107, "Bdropped");
    send_to("127.0.0.1", 42107, "Akept");
    char buf[64];
    WL_CHECK(sc_wait(fu, POLLIN, 3000), "filtered socket: nothing arrived");
    ssize_t n = recv(fu, buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(n == 5 && !memcmp(buf, "Akept", 5), "filtered socket received %zd bytes '%.*s'",
             n, (int)(n > 0 ? n : 0), buf);

    /* The reuseport groups still take members and deliver. */
    int j = udp4("127.0.0.1", 42104, 1);
    int jl = tcp_listener("127.0.0.1", 42105, 1);
    for (int i = 0; i < 12; i++)
        send_to("127.0.0.1", 42104, "group");
    int got = 0;
    for (int tries = 0; tries < 100 && got < 12; tries++) {
        int any = 0;
        for (int i = 0; i < 4; i++) {
            int s = i < 3 ? rp[i] : j;
            while (recv(s, buf, sizeof buf, MSG_DONTWAIT) == 5)
                got++, any = 1;
        }
        if (!any)
            wl_sleep_ms(10);
    }
    WL_CHECK(got == 12, "reuseport group received %d of 12 datagrams", got);
    close(j);
    close(jl);

    /* Corked data leaves once uncorked. */
    int zero = 0;
    setsockopt(c, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero);
    WL_CHECK(sc_wait(sv, POLLIN, 3000), "corked bytes did not arrive after uncorking");
    n = recv(sv, buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(n == 6 && !memcmp(buf, "corked", 6), "expected 'corked', got %zd bytes", n);
    WL_CHECK(send(sv, "back", 4, 0) == 4, "send back: %m");
    WL_CHECK(sc_wait(c, POLLIN, 3000) && recv(c, buf, sizeof buf, 0) == 4, "reply lost");
    (void)u6; (void)fb; (void)lp; (void)ls; (void)fb6;
    wl_report(1, "ok");
}
