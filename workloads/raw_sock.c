/*
 * raw_sock.c - raw IPv4/IPv6 sockets across checkpoint/restore (loopback only).
 *
 * Kernel state tested (read back at setup, compared after restore):
 *  - IPPROTO_RAW socket (IP_HDRINCL implied): after restore it sends a hand-built IPv4/UDP
 *    packet to 127.0.0.1:42131, where a UDP socket receives it;
 *  - ICMP raw socket bound to 127.0.0.1 with ICMP_FILTER letting only echo replies through:
 *    after restore it sends an echo request to 127.0.0.1 and receives the kernel's reply (its
 *    id and sequence), and never its own request;
 *  - ICMPv6 raw socket with ICMP6_FILTER letting only echo replies through: the same over ::1;
 *  - a raw socket of protocol 253 (experimental) bound to 127.0.0.1 with IP_HDRINCL set.
 */
#define _GNU_SOURCE
#include "sockcheck.h"

#include <arpa/inet.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>

#define ICMP_FILTER 1 /* linux/icmp.h clashes with netinet/ip_icmp.h */
struct icmp_filter {
    unsigned int data;
};

static unsigned short csum(const void *p, size_t n)
{
    const unsigned short *w = p;
    unsigned long s = 0;
    for (; n > 1; n -= 2)
        s += *w++;
    if (n)
        s += *(const unsigned char *)w;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (unsigned short)~s;
}

static int raw(int family, int proto)
{
    int s = socket(family, SOCK_RAW, proto);
    if (s < 0)
        wl_fail("socket(SOCK_RAW, %d): %m", proto);
    sc_snap(s, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL");
    return s;
}

static void bind_lo4(int s)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        wl_fail("bind 127.0.0.1: %m");
    sc_snap(s, -1, 0, "local address");
}

/* Send an echo request (id, seq) and wait for the matching reply of the given type. */
static void echo(int s, int v6, unsigned short id, unsigned short seq)
{
    char pkt[64] = {0};
    struct icmphdr *h = (struct icmphdr *)pkt;
    h->type = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO;
    h->un.echo.id = htons(id);
    h->un.echo.sequence = htons(seq);
    memcpy(pkt + 8, "stasis raw echo", 15);
    if (!v6)
        h->checksum = csum(pkt, sizeof pkt);
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
    ssize_t n = v6 ? sendto(s, pkt, sizeof pkt, 0, (struct sockaddr *)&a6, sizeof a6)
                   : sendto(s, pkt, sizeof pkt, 0, (struct sockaddr *)&a4, sizeof a4);
    WL_CHECK(n == sizeof pkt, "echo request (v6 %d): %m", v6);
    for (int tries = 0; tries < 50; tries++) {
        WL_CHECK(sc_wait(s, POLLIN, 3000), "no echo reply (v6 %d)", v6);
        char buf[256];
        ssize_t r = recv(s, buf, sizeof buf, MSG_DONTWAIT);
        WL_CHECK(r > 0, "recv: %m");
        struct icmphdr *e = (struct icmphdr *)(v6 ? buf : buf + ((buf[0] & 0xf) * 4));
        int reply = v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY;
        WL_CHECK(e->type == reply, "ICMP filter let type %d through (v6 %d)", e->type, v6);
        if (ntohs(e->un.echo.id) == id && ntohs(e->un.echo.sequence) == seq)
            return;
    }
    wl_fail("echo reply %u/%u never came (v6 %d)", id, seq, v6);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    unsigned short id = (unsigned short)(getpid() ^ 0x5a5a);

    int rr = raw(AF_INET, IPPROTO_RAW);
    sc_snap(rr, IPPROTO_IP, IP_HDRINCL, "IP_HDRINCL (IPPROTO_RAW)");

    int ic = raw(AF_INET, IPPROTO_ICMP);
    bind_lo4(ic);
    struct icmp_filter f = {.data = ~(1u << ICMP_ECHOREPLY)};
    if (setsockopt(ic, SOL_RAW, ICMP_FILTER, &f, sizeof f) < 0)
        wl_fail("ICMP_FILTER: %m");
    sc_snap(ic, SOL_RAW, ICMP_FILTER, "ICMP_FILTER");
    sc_set(ic, IPPROTO_IP, IP_TTL, 45, "IP_TTL");

    int i6 = raw(AF_INET6, IPPROTO_ICMPV6);
    struct icmp6_filter f6;
    ICMP6_FILTER_SETBLOCKALL(&f6);
    ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f6);
    if (setsockopt(i6, IPPROTO_ICMPV6, ICMP6_FILTER, &f6, sizeof f6) < 0)
        wl_fail("ICMP6_FILTER: %m");
    sc_snap(i6, IPPROTO_ICMPV6, ICMP6_FILTER, "ICMP6_FILTER");

    int x = raw(AF_INET, 253);
    bind_lo4(x);
    sc_set(x, IPPROTO_IP, IP_HDRINCL, 1, "IP_HDRINCL");

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = {.sin_family = AF_INET, .sin_port = htons(42131),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(u, (struct sockaddr *)&ua, sizeof ua) < 0)
        wl_fail("bind 42131: %m");

    echo(ic, 0, id, 1);
    echo(i6, 1, id, 1);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);

    sc_verify();
    echo(ic, 0, id, 2);
    echo(i6, 1, id, 2);

    /* A hand-built IPv4/UDP packet through the IPPROTO_RAW socket. */
    char pkt[sizeof(struct iphdr) + sizeof(struct udphdr) + 8] = {0};
    struct iphdr *ip = (struct iphdr *)pkt;
    struct udphdr *uh = (struct udphdr *)(pkt + sizeof *ip);
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 9;
    ip->protocol = IPPROTO_UDP;
    ip->tot_len = htons(sizeof pkt);
    ip->saddr = ip->daddr = htonl(INADDR_LOOPBACK);
    uh->source = htons(42132);
    uh->dest = htons(42131);
    uh->len = htons(sizeof *uh + 8);
    memcpy(pkt + sizeof *ip + sizeof *uh, "rawdata!", 8);
    WL_CHECK(sendto(rr, pkt, sizeof pkt, 0, (struct sockaddr *)&ua, sizeof ua) == sizeof pkt,
             "send through IPPROTO_RAW: %m");
    WL_CHECK(sc_wait(u, POLLIN, 3000), "the hand-built UDP packet did not arrive");
    char buf[64];
    WL_CHECK(recv(u, buf, sizeof buf, MSG_DONTWAIT) == 8 && !memcmp(buf, "rawdata!", 8),
             "the hand-built UDP packet arrived wrong");
    wl_report(1, "ok");
}
