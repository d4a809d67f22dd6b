/*
 * tcp_closed.c - TCP sockets whose connection is over (state CLOSE), and one never connected,
 * across checkpoint/restore (loopback, listener port 42191, bound client port 42192).
 *
 * Kernel state tested: a pair A (client bound to 127.0.0.1:42192) / B (accepted) that both
 * shut down and read end of file, until both are in state CLOSE; a TCP socket N bound to
 * 127.0.0.1:42193, never connected. Verify: states unchanged, local addresses kept, no peer
 * (ENOTCONN); A and B read end of file, writes fail with EPIPE, poll says POLLHUP|POLLRDHUP;
 * N reads ENOTCONN and can still listen and accept.
 */
#define _GNU_SOURCE
#include "sockcheck.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>

static int state(int s)
{
    struct tcp_info ti;
    socklen_t l = sizeof ti;
    return getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ? -1 : ti.tcpi_state;
}

static struct sockaddr_in lo(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    return a;
}

static void check_closed(int s, const char *what)
{
    WL_CHECK(state(s) == TCP_CLOSE, "%s: state %d, expected CLOSE", what, state(s));
    char c;
    ssize_t r = recv(s, &c, 1, MSG_DONTWAIT);
    WL_CHECK(r == 0, "%s: recv returned %zd (%m), expected end of file", what, r);
    WL_CHECK(send(s, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE,
             "%s: send should fail with EPIPE (%m)", what);
    int ev = sc_wait(s, POLLIN | POLLRDHUP, 0);
    WL_CHECK((ev & (POLLHUP | POLLRDHUP)) == (POLLHUP | POLLRDHUP), "%s: poll gives %#x", what,
             ev);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in la = lo(42191);
    if (bind(l, (struct sockaddr *)&la, sizeof la) < 0 || listen(l, 4) < 0)
        wl_fail("listen 42191: %m");
    int a = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(a, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in aa = lo(42192);
    if (bind(a, (struct sockaddr *)&aa, sizeof aa) < 0 || connect(a, (struct sockaddr *)&la, sizeof la) < 0)
        wl_fail("connect: %m");
    int b = accept(l, NULL, NULL);
    close(l);
    shutdown(a, SHUT_WR);
    shutdown(b, SHUT_WR);
    char c;
    WL_CHECK(sc_wait(a, POLLIN, 3000) && recv(a, &c, 1, 0) == 0, "setup: A no EOF");
    WL_CHECK(sc_wait(b, POLLIN, 3000) && recv(b, &c, 1, 0) == 0, "setup: B no EOF");
    for (int i = 0; i < 300 && (state(a) != TCP_CLOSE || state(b) != TCP_CLOSE); i++)
        wl_sleep_ms(10);
    check_closed(a, "setup A");
    check_closed(b, "setup B");
    sc_snap(a, -1, 0, "A local");
    sc_snap(a, -2, 0, "A peer");
    sc_snap(b, -1, 0, "B local");
    sc_snap(b, -2, 0, "B peer");

    int n = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(n, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in na = lo(42193);
    if (bind(n, (struct sockaddr *)&na, sizeof na) < 0)
        wl_fail("bind 42193: %m");
    sc_snap(n, -1, 0, "N local");

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);

    sc_verify();
    check_closed(a, "A");
    check_closed(b, "B");
    WL_CHECK(state(n) == TCP_CLOSE, "N: state %d", state(n));
    WL_CHECK(recv(n, &c, 1, MSG_DONTWAIT) < 0 && errno == ENOTCONN,
             "N (never connected): recv should fail with ENOTCONN (%m)");
    WL_CHECK(listen(n, 2) == 0, "N: listen: %m");
    int k = socket(AF_INET, SOCK_STREAM, 0);
    WL_CHECK(connect(k, (struct sockaddr *)&na, sizeof na) == 0, "connect to N: %m");
    int acc = accept(n, NULL, NULL);
    WL_CHECK(acc >= 0, "accept on N: %m");
    wl_report(1, "ok");
}
