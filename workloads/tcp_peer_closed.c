/*
 * tcp_peer_closed: a TCP connection whose peer, outside the tree, has shut down its side.
 * `tcp_peer_closed CTL_DIR HOST:PORT` (or `[V6HOST]:PORT`, IPv4-mapped included): connects to the test's server, which sends "hello\n"
 * and shuts down for writing. Setup waits until those 6 bytes and the FIN have arrived, unread
 * (the socket is in CLOSE_WAIT). Verify: still CLOSE_WAIT, reads "hello\n" then end of stream,
 * and can still send "bye\n" (the test's server checks it arrives).
 */
#define _GNU_SOURCE
#include "common.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int tcp_state(int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
        return -1;
    return ti.tcpi_state;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    if (argc < 3)
        wl_fail("usage: tcp_peer_closed CTL_DIR HOST:PORT");
    char host[64];
    int port = 0;
    /* HOST:PORT (IPv4) or [HOST]:PORT (IPv6, IPv4-mapped included). */
    int v6 = argv[2][0] == '[';
    if (v6 ? sscanf(argv[2], "[%63[^]]]:%d", host, &port) != 2
           : sscanf(argv[2], "%63[^:]:%d", host, &port) != 2)
        wl_fail("bad address %s", argv[2]);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    if (v6 ? inet_pton(AF_INET6, host, &a6.sin6_addr) != 1 : inet_pton(AF_INET, host, &a.sin_addr) != 1)
        wl_fail("bad address %s", argv[2]);
    int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    if (s < 0 || (v6 ? connect(s, (struct sockaddr *)&a6, sizeof a6)
                     : connect(s, (struct sockaddr *)&a, sizeof a)) < 0)
        wl_fail("connect to %s: %m", argv[2]);
    for (int i = 0;; i++) {
        int n = 0;
        ioctl(s, FIONREAD, &n);
        if (tcp_state(s) == TCP_CLOSE_WAIT && n == 6)
            break;
        if (i > 1000)
            wl_fail("setup: expected CLOSE_WAIT with 6 bytes queued, found state %d, %d bytes",
                    tcp_state(s), n);
        wl_sleep_ms(5);
    }
    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);
    WL_CHECK(tcp_state(s) == TCP_CLOSE_WAIT, "state expected CLOSE_WAIT (%d), found %d",
             TCP_CLOSE_WAIT, tcp_state(s));
    char buf[16] = {0};
    size_t got = 0;
    while (got < 6) {
        ssize_t r = read(s, buf + got, 6 - got);
        if (r < 0 && errno == EINTR)
            continue;
        WL_CHECK(r > 0, "read of the queued bytes returned %zd (%s)", r, r < 0 ? strerror(errno) : "EOF");
        got += (size_t)r;
    }
    WL_CHECK(memcmp(buf, "hello\n", 6) == 0, "queued bytes expected 'hello\\n', found '%.6s'", buf);
    ssize_t r;
    do
        r = read(s, buf, sizeof buf);
    while (r < 0 && errno == EINTR);
    WL_CHECK(r == 0, "expected end of stream after the data, read returned %zd", r);
    WL_CHECK(write(s, "bye\n", 4) == 4, "write after the peer's shutdown: %m");
    close(s);
    wl_report(1, "ok");
}
