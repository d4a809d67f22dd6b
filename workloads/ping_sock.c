/*
 * ping_sock.c - ICMP "ping" sockets (SOCK_DGRAM, IPPROTO_ICMP / IPPROTO_ICMPV6) across
 * checkpoint/restore, loopback only. Needs net.ipv4.ping_group_range to include the
 * workload's group (the test sets it).
 *
 * Kernel state tested (read back at setup, compared after restore):
 *  - IPv4 ping socket bound to 127.0.0.1 with identifier 42141, IP_TTL 21, IP_RECVERR,
 *    SO_RCVBUF 96 KiB: after restore an echo request is answered with that identifier and the
 *    sequence number and payload sent;
 *  - IPv6 ping socket bound by its first send (the kernel chose its identifier), IPV6_RECVERR:
 *    the same over ::1 with the identifier kept.
 */
#define _GNU_SOURCE
#include "sockcheck.h"

#include <arpa/inet.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <stdio.h>
#include <stdlib.h>

static unsigned short ident_of(int s)
{
    struct sockaddr_storage a;
    socklen_t l = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &l);
    return ntohs(a.ss_family == AF_INET ? ((struct sockaddr_in *)&a)->sin_port
                                        : ((struct sockaddr_in6 *)&a)->sin6_port);
}

static void echo(int s, int v6, unsigned short seq)
{
    char pkt[40] = {0};
    struct icmphdr *h = (struct icmphdr *)pkt;
    h->type = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO;
    h->un.echo.sequence = htons(seq);
    snprintf(pkt + 8, sizeof pkt - 8, "stasis ping %u", seq);
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
    ssize_t n = v6 ? sendto(s, pkt, sizeof pkt, 0, (struct sockaddr *)&a6, sizeof a6)
                   : sendto(s, pkt, sizeof pkt, 0, (struct sockaddr *)&a4, sizeof a4);
    WL_CHECK(n == sizeof pkt, "echo request (v6 %d): %m", v6);
    WL_CHECK(sc_wait(s, POLLIN, 3000), "no echo reply (v6 %d, seq %u)", v6, seq);
    char buf[128];
    ssize_t r = recv(s, buf, sizeof buf, MSG_DONTWAIT);
    struct icmphdr *e = (struct icmphdr *)buf;
    WL_CHECK(r == sizeof pkt && e->type == (v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY) &&
                 ntohs(e->un.echo.sequence) == seq && ntohs(e->un.echo.id) == ident_of(s) &&
                 !memcmp(buf + 8, pkt + 8, sizeof pkt - 8),
             "echo reply (v6 %d): %zd bytes, type %d, seq %u, id %u (socket's %u)", v6, r,
             r > 0 ? e->type : -1, r > 0 ? ntohs(e->un.echo.sequence) : 0,
             r > 0 ? ntohs(e->un.echo.id) : 0, ident_of(s));
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);

    int p4 = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
    if (p4 < 0)
        wl_fail("ping socket: %m (is net.ipv4.ping_group_range set?)");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(42141),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(p4, (struct sockaddr *)&a, sizeof a) < 0)
        wl_fail("bind ping socket: %m");
    sc_snap(p4, -1, 0, "ping4 address and identifier");
    sc_set(p4, IPPROTO_IP, IP_TTL, 21, "IP_TTL");
    sc_set(p4, IPPROTO_IP, IP_RECVERR, 1, "IP_RECVERR");
    sc_set(p4, SOL_SOCKET, SO_RCVBUF, 96 * 1024, "SO_RCVBUF");
    sc_snap(p4, SOL_SOCKET, SO_PROTOCOL, "ping4 protocol");
    echo(p4, 0, 1);

    int p6 = socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6);
    if (p6 < 0)
        wl_fail("ping6 socket: %m");
    sc_set(p6, IPPROTO_IPV6, IPV6_RECVERR, 1, "IPV6_RECVERR");
    echo(p6, 1, 1);
    WL_CHECK(ident_of(p6) != 0, "setup: ping6 socket got no identifier");
    sc_snap(p6, -1, 0, "ping6 address and identifier");
    sc_snap(p6, SOL_SOCKET, SO_PROTOCOL, "ping6 protocol");

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);

    sc_verify();
    echo(p4, 0, 2);
    echo(p6, 1, 2);
    wl_report(1, "ok");
}
