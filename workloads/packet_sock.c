/*
 * packet_sock.c - packet sockets (AF_PACKET) on the loopback interface across
 * checkpoint/restore, with private ethertypes 0x88b5-0x88b7 so no other traffic reaches them.
 *
 * Kernel state tested (read back at setup, compared after restore):
 *  - SOCK_RAW socket R bound to lo / 0x88b5 with PACKET_AUXDATA, PACKET_ORIGDEV,
 *    PACKET_VERSION TPACKET_V2, PACKET_QDISC_BYPASS, SO_RCVBUF 128 KiB, a classic BPF filter
 *    (frames whose first payload byte is 'P'), and a multicast membership
 *    (PACKET_MR_MULTICAST 01:00:5e:00:00:fb on lo, seen in /proc/net/dev_mcast);
 *    after restore a 'P' frame sent on lo reaches it and a 'Q' frame does not;
 *  - SOCK_DGRAM socket D created with protocol 0, bound to lo / 0x88b6, PACKET_IGNORE_OUTGOING;
 *    after restore it receives a frame of that type (with its sockaddr_ll);
 *  - SOCK_RAW socket F bound to lo / 0x88b7 in fanout group (pid & 0xffff, PACKET_FANOUT_HASH).
 * With --ring: R also gets a PACKET_RX_RING mapped into memory (the checkpoint must refuse,
 * naming the socket and why; CTL_DIR/fd says which fd).
 */
#define _GNU_SOURCE
#include "sockcheck.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

static const unsigned char MC[6] = {0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb};

static int pkt(int type, int proto)
{
    int s = socket(AF_PACKET, type, proto);
    if (s < 0)
        wl_fail("socket(AF_PACKET): %m");
    return s;
}

static void bind_lo(int s, int ethertype)
{
    struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_protocol = htons(ethertype),
                            .sll_ifindex = 1};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        wl_fail("bind lo 0x%x: %m", ethertype);
}

static void send_frame(int ethertype, char first)
{
    int s = pkt(SOCK_DGRAM, 0);
    struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_protocol = htons(ethertype),
                            .sll_ifindex = 1, .sll_halen = 6};
    char payload[32];
    memset(payload, first, sizeof payload);
    if (sendto(s, payload, sizeof payload, 0, (struct sockaddr *)&a, sizeof a) < 0)
        wl_fail("send frame 0x%x: %m", ethertype);
    close(s);
}

static int mc_listed(void)
{
    FILE *f = fopen("/proc/net/dev_mcast", "r");
    char line[256];
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, " lo ") && strstr(line, "01005e0000fb"))
            found = 1;
    if (f)
        fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    int ring = argc > 2 && !strcmp(argv[2], "--ring");

    int r = pkt(SOCK_RAW, htons(0x88b5));
    bind_lo(r, 0x88b5);
    sc_set(r, SOL_PACKET, PACKET_AUXDATA, 1, "PACKET_AUXDATA");
    sc_set(r, SOL_PACKET, PACKET_ORIGDEV, 1, "PACKET_ORIGDEV");
    sc_set(r, SOL_PACKET, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
    sc_set(r, SOL_PACKET, PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS");
    sc_set(r, SOL_SOCKET, SO_RCVBUF, 128 * 1024, "SO_RCVBUF");
    struct sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 14), /* first byte after the Ethernet header */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 'P', 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0xffff),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_fprog fp = {.len = 4, .filter = prog};
    if (setsockopt(r, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) < 0)
        wl_fail("SO_ATTACH_FILTER: %m");
    struct packet_mreq mr = {.mr_ifindex = 1, .mr_type = PACKET_MR_MULTICAST, .mr_alen = 6};
    memcpy(mr.mr_address, MC, 6);
    if (setsockopt(r, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0)
        wl_fail("PACKET_ADD_MEMBERSHIP: %m");
    WL_CHECK(mc_listed(), "setup: membership not in /proc/net/dev_mcast");
    sc_snap(r, -1, 0, "R address");
    sc_snap(r, SOL_SOCKET, SO_PROTOCOL, "R protocol");

    int d = pkt(SOCK_DGRAM, 0);
    bind_lo(d, 0x88b6);
    sc_set(d, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING");
    sc_snap(d, -1, 0, "D address");
    sc_snap(d, SOL_SOCKET, SO_TYPE, "D type");

    int f = pkt(SOCK_RAW, htons(0x88b7));
    bind_lo(f, 0x88b7);
    int fan = (getpid() & 0xffff) | PACKET_FANOUT_HASH << 16;
    if (setsockopt(f, SOL_PACKET, PACKET_FANOUT, &fan, sizeof fan) < 0)
        wl_fail("PACKET_FANOUT: %m");
    sc_snap(f, SOL_PACKET, PACKET_FANOUT, "PACKET_FANOUT");

    if (ring) {
        struct tpacket_req req = {.tp_block_size = 4096, .tp_block_nr = 4,
                                  .tp_frame_size = 2048, .tp_frame_nr = 8};
        if (setsockopt(r, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0)
            wl_fail("PACKET_RX_RING: %m");
        if (mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, r, 0) == MAP_FAILED)
            wl_fail("mmap ring: %m");
        char path[4096];
        snprintf(path, sizeof path, "%s/fd", wl_ctl_dir());
        FILE *o = fopen(path, "w");
        fprintf(o, "%d\n", r);
        fclose(o);
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);

    sc_verify();
    struct sock_filter back[8];
    socklen_t bl = 8;
    WL_CHECK(getsockopt(r, SOL_SOCKET, SO_GET_FILTER, back, &bl) == 0 && bl == 4 &&
                 !memcmp(back, prog, sizeof prog),
             "R filter did not read back (%u instructions)", bl);
    WL_CHECK(mc_listed(), "membership 01:00:5e:00:00:fb on lo is gone");
    if (!ring) {
        char buf[256];
        send_frame(0x88b5, 'Q');
        send_frame(0x88b5, 'P');
        WL_CHECK(sc_wait(r, POLLIN, 3000), "R: no frame arrived");
        ssize_t n = recv(r, buf, sizeof buf, MSG_DONTWAIT);
        WL_CHECK(n == 14 + 32 && buf[14] == 'P', "R received %zd bytes starting '%c'", n,
                 n > 14 ? buf[14] : '?');
        /* On lo a frame is seen going out and coming in: R sees the 'P' one twice at most. */
        while (recv(r, buf, sizeof buf, MSG_DONTWAIT) > 0)
            WL_CHECK(buf[14] == 'P', "R: the filter let a '%c' frame through", buf[14]);
        send_frame(0x88b6, 'D');
        WL_CHECK(sc_wait(d, POLLIN, 3000), "D: no frame arrived");
        struct sockaddr_ll from;
        socklen_t fl = sizeof from;
        n = recvfrom(d, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        WL_CHECK(n == 32 && buf[0] == 'D' && ntohs(from.sll_protocol) == 0x88b6 &&
                     from.sll_ifindex == 1,
                 "D received %zd bytes, protocol 0x%x, ifindex %d", n, ntohs(from.sll_protocol),
                 from.sll_ifindex);
    }
    wl_report(1, "ok");
}
