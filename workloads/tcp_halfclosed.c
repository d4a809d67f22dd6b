/*
 * tcp_halfclosed.c - TCP connections in closing states, both ends in this process, across
 * checkpoint/restore. `tcp_halfclosed CTL_DIR v4|v6|mapped`: over 127.0.0.1 (port 42151),
 * ::1 (42152), or IPv6 sockets with IPv4-mapped addresses ::ffff:127.0.0.1 (42153).
 *
 * Small buffers (SO_RCVBUF 4 KiB, SO_SNDBUF 16 KiB) let a side fill its peer's window, so that
 * a FIN waits behind unacknowledged data:
 *  - FIN_WAIT1: X1 wrote until its buffer was full, then shutdown(SHUT_WR): the data and the
 *    FIN are unacknowledged (Y1 has not read; ESTABLISHED);
 *  - CLOSING: X2 as X1, then Y2 shut down too: X2 got Y2's FIN before its own was acknowledged
 *    (X2 CLOSING, Y2 FIN_WAIT2);
 *  - LAST_ACK: X3 shut down first (FIN_WAIT2), Y3 (CLOSE_WAIT) then wrote until X3's window
 *    was full and shut down: LAST_ACK with its data and FIN unacknowledged.
 * Verify: every socket is in the state it had at setup (TCP_INFO) with its addresses; the
 * receivers read every byte (pattern-checked) and then end of file; writes on a shut-down
 * side fail with EPIPE; Y1 can still send to X1; then the connections finish closing.
 */
#define _GNU_SOURCE
#include "sockcheck.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>

static int family, port;
static const char *mode;

static socklen_t addr(struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return sizeof *a;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (!strcmp(mode, "mapped"))
        inet_pton(AF_INET6, "::ffff:127.0.0.1", &a->sin6_addr);
    else
        a->sin6_addr = in6addr_loopback;
    return sizeof *a;
}

static void small_buffers(int s)
{
    int r = 4096, w = 16384;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &r, sizeof r);
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &w, sizeof w);
}

static int state(int s)
{
    struct tcp_info ti;
    socklen_t l = sizeof ti;
    if (getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
        return -1;
    return ti.tcpi_state;
}

static void wait_state(int s, int want, const char *what)
{
    for (int i = 0; i < 300 && state(s) != want; i++)
        wl_sleep_ms(10);
    WL_CHECK(state(s) == want, "setup: %s in state %d, expected %d", what, state(s), want);
}

static unsigned char big[4 << 20];

/* Write the pattern `seed` until the socket takes no more; returns how many bytes. */
static size_t fill(int s, uint64_t seed)
{
    wl_fill_pattern(big, sizeof big, seed);
    size_t n = 0;
    int idle = 0;
    while (idle < 5) {
        ssize_t w = send(s, big + n, sizeof big - n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            n += (size_t)w;
            idle = 0;
        } else if (w < 0 && errno == EAGAIN) {
            idle++;
            wl_sleep_ms(20);
        } else {
            wl_fail("setup: filling: %m");
        }
    }
    return n;
}

static unsigned char got[4 << 20];

/* Read exactly n bytes of pattern `seed`, then end of file. */
static void drain(int s, size_t n, uint64_t seed, const char *what)
{
    size_t have = 0;
    while (have < n) {
        WL_CHECK(sc_wait(s, POLLIN, 5000), "%s: only %zu of %zu bytes arrived", what, have, n);
        ssize_t r = recv(s, got + have, n - have, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        WL_CHECK(r > 0, "%s: recv returned %zd (%m) after %zu of %zu bytes", what, r, have, n);
        have += (size_t)r;
    }
    WL_CHECK(wl_check_pattern(got, n, seed), "%s: the %zu bytes differ from what was sent",
             what, n);
    WL_CHECK(sc_wait(s, POLLIN, 5000), "%s: no end of file", what);
    char c;
    ssize_t r = recv(s, &c, 1, MSG_DONTWAIT);
    WL_CHECK(r == 0, "%s: expected end of file, recv returned %zd", what, r);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    mode = argc > 2 ? argv[2] : "v4";
    family = !strcmp(mode, "v4") ? AF_INET : AF_INET6;
    port = !strcmp(mode, "v4") ? 42151 : !strcmp(mode, "v6") ? 42152 : 42153;

    int l = socket(family, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    small_buffers(l);
    struct sockaddr_storage ss;
    socklen_t sl = addr(&ss);
    if (!strcmp(mode, "mapped")) {
        /* a dual-stack listener on [::] */
        struct sockaddr_in6 any = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        if (bind(l, (struct sockaddr *)&any, sizeof any) < 0)
            wl_fail("bind [::]:%d: %m", port);
    } else if (bind(l, (struct sockaddr *)&ss, sl) < 0) {
        wl_fail("bind %d: %m", port);
    }
    if (listen(l, 8) < 0)
        wl_fail("listen: %m");

    int x[3], y[3];
    for (int i = 0; i < 3; i++) {
        x[i] = socket(family, SOCK_STREAM, 0);
        small_buffers(x[i]);
        if (connect(x[i], (struct sockaddr *)&ss, sl) < 0)
            wl_fail("connect: %m");
        y[i] = accept(l, NULL, NULL);
        if (y[i] < 0)
            wl_fail("accept: %m");
    }
    close(l);

    size_t n1 = fill(x[0], 11);
    shutdown(x[0], SHUT_WR);
    wait_state(x[0], TCP_FIN_WAIT1, "X1");

    size_t n2 = fill(x[1], 12);
    shutdown(x[1], SHUT_WR);
    wait_state(x[1], TCP_FIN_WAIT1, "X2");
    shutdown(y[1], SHUT_WR);
    wait_state(x[1], TCP_CLOSING, "X2");
    wait_state(y[1], TCP_FIN_WAIT2, "Y2");

    shutdown(x[2], SHUT_WR);
    wait_state(y[2], TCP_CLOSE_WAIT, "Y3");
    size_t n3 = fill(y[2], 13);
    shutdown(y[2], SHUT_WR);
    wait_state(y[2], TCP_LAST_ACK, "Y3");
    wait_state(x[2], TCP_FIN_WAIT2, "X3");

    int st[6];
    for (int i = 0; i < 3; i++) {
        st[2 * i] = state(x[i]);
        st[2 * i + 1] = state(y[i]);
        sc_snap(x[i], -1, 0, "X local");
        sc_snap(x[i], -2, 0, "X peer");
        sc_snap(y[i], -1, 0, "Y local");
        sc_snap(y[i], -2, 0, "Y peer");
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);

    for (int i = 0; i < 6; i++) {
        int s = i % 2 ? y[i / 2] : x[i / 2];
        WL_CHECK(state(s) == st[i], "%s%d: state %d, was %d", i % 2 ? "Y" : "X", i / 2 + 1,
                 state(s), st[i]);
    }
    sc_verify();
    WL_CHECK(send(x[0], "z", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE,
             "X1 (shut down) could still write");
    WL_CHECK(send(y[2], "z", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE,
             "Y3 (shut down) could still write");

    /* FIN_WAIT1: Y1 reads it all, then EOF; Y1 still talks back. */
    drain(y[0], n1, 11, "Y1");
    WL_CHECK(send(y[0], "back", 4, MSG_NOSIGNAL) == 4, "Y1 send: %m");
    char buf[8];
    WL_CHECK(sc_wait(x[0], POLLIN, 5000) && recv(x[0], buf, 8, MSG_DONTWAIT) == 4 &&
                 !memcmp(buf, "back", 4),
             "X1 did not receive Y1's reply");
    shutdown(y[0], SHUT_WR);
    WL_CHECK(sc_wait(x[0], POLLIN, 5000) && recv(x[0], buf, 8, MSG_DONTWAIT) == 0,
             "X1: no end of file after Y1 shut down");

    /* CLOSING: X2 already has Y2's FIN; Y2 reads X2's data and FIN. */
    WL_CHECK(recv(x[1], buf, 8, MSG_DONTWAIT) == 0, "X2: expected end of file");
    drain(y[1], n2, 12, "Y2");

    /* LAST_ACK: X3 reads Y3's data and FIN. */
    drain(x[2], n3, 13, "X3");

    /* Everything finishes closing. */
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 300 && (state(x[i]) != TCP_CLOSE || state(y[i]) != TCP_CLOSE); k++)
            wl_sleep_ms(10);
        WL_CHECK(state(x[i]) == TCP_CLOSE && state(y[i]) == TCP_CLOSE,
                 "pair %d did not finish closing: states %d/%d", i + 1, state(x[i]),
                 state(y[i]));
    }
    wl_report(1, "ok");
}
