/*
 * tcp_closing_out.c - a TCP connection to a server outside the tree in a closing state with
 * its FIN unacknowledged. `tcp_closing_out CTL_DIR HOST:PORT MODE` (HOST IPv4, or [V6]):
 *  - fin_wait1: writes (pattern 21) until the server, which does not read, has a full window
 *    and our buffer is full, then shuts down: FIN_WAIT1;
 *  - last_ack: the server shuts down first (CLOSE_WAIT), then as fin_wait1: LAST_ACK;
 *  - closing: as fin_wait1, then the server shuts down: CLOSING.
 * CTL_DIR/sent holds how many bytes were written. Setup checks the state. Verify (the test has
 * let the server read everything meanwhile): reads end of file, writes fail with EPIPE, and
 * the connection finishes closing (state CLOSE).
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

static void wait_state(int s, int want)
{
    for (int i = 0; i < 500 && state(s) != want; i++)
        wl_sleep_ms(10);
    WL_CHECK(state(s) == want, "state %d, expected %d", state(s), want);
}

static unsigned char big[8 << 20];

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    if (argc < 4)
        wl_fail("usage: tcp_closing_out CTL_DIR HOST:PORT fin_wait1|last_ack|closing");
    const char *mode = argv[3];
    char host[64];
    int port = 0, v6 = argv[2][0] == '[';
    if (v6 ? sscanf(argv[2], "[%63[^]]]:%d", host, &port) != 2
           : sscanf(argv[2], "%63[^:]:%d", host, &port) != 2)
        wl_fail("bad address %s", argv[2]);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        inet_pton(AF_INET6, host, &a->sin6_addr);
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        inet_pton(AF_INET, host, &a->sin_addr);
        sl = sizeof *a;
    }
    int s = socket(ss.ss_family, SOCK_STREAM, 0);
    int w = 16384;
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &w, sizeof w);
    if (connect(s, (struct sockaddr *)&ss, sl) < 0)
        wl_fail("connect %s: %m", argv[2]);
    if (!strcmp(mode, "last_ack"))
        wait_state(s, TCP_CLOSE_WAIT);
    wl_fill_pattern(big, sizeof big, 21);
    size_t n = 0;
    for (int idle = 0; idle < 5;) {
        ssize_t r = send(s, big + n, sizeof big - n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r > 0)
            n += (size_t)r, idle = 0;
        else if (r < 0 && errno == EAGAIN)
            idle++, wl_sleep_ms(20);
        else
            wl_fail("filling: %m");
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/sent", wl_ctl_dir());
    FILE *f = fopen(path, "w");
    fprintf(f, "%zu\n", n);
    fclose(f);
    shutdown(s, SHUT_WR);
    wait_state(s, !strcmp(mode, "last_ack") ? TCP_LAST_ACK
                  : !strcmp(mode, "closing") ? TCP_CLOSING
                                             : TCP_FIN_WAIT1);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);

    WL_CHECK(send(s, "z", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE,
             "a shut-down side could still write");
    WL_CHECK(sc_wait(s, POLLIN, 10000), "no end of file");
    char c;
    ssize_t r = recv(s, &c, 1, MSG_DONTWAIT);
    WL_CHECK(r == 0, "expected end of file, recv returned %zd", r);
    wait_state(s, TCP_CLOSE);
    wl_report(1, "ok");
}
