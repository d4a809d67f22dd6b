/*
 * unsupported: holds one kernel object the engine does not support yet, chosen by argv[2]:
 * "socket" (a half-closed TCP connection on 127.0.0.1), "userfaultfd", "tty" (/dev/console, a terminal
 * that is not a pseudo-terminal). A checkpoint must
 * refuse it with a message naming pid, fd and kind, and leave this process running: on verify
 * it checks that the object still works (a byte still flows the open way, the fd still open)
 * and that its memory counter kept going.
 */
#define _GNU_SOURCE
#include "common.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    const char *kind = argc > 2 ? argv[2] : "socket";
    int fds[2] = {-1, -1};
    if (!strcmp(kind, "socket")) {
        /* an established TCP connection (client end in fds[0], server end in fds[1]) */
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof a;
        int l = socket(AF_INET, SOCK_STREAM, 0);
        if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0 ||
            getsockname(l, (struct sockaddr *)&a, &al) < 0)
            wl_fail("tcp listener: %m");
        fds[0] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof a) < 0)
            wl_fail("tcp connect: %m");
        fds[1] = accept(l, NULL, NULL);
        if (fds[1] < 0)
            wl_fail("accept: %m");
        close(l);
        /* half-closed: the client will send no more (FIN_WAIT2 / CLOSE_WAIT) */
        if (shutdown(fds[0], SHUT_WR) < 0)
            wl_fail("shutdown: %m");
    } else if (!strcmp(kind, "userfaultfd")) {
        fds[0] = syscall(SYS_userfaultfd, O_CLOEXEC);
        if (fds[0] < 0)
            wl_fail("userfaultfd: %m");
    } else if (!strcmp(kind, "tty")) {
        fds[0] = open("/dev/console", O_RDWR | O_NOCTTY);
        if (fds[0] < 0)
            wl_fail("open /dev/console: %m");
    } else {
        wl_fail("unknown kind %s", kind);
    }
    /* Tell the test which fd to expect in the refusal message. */
    char path[4096];
    snprintf(path, sizeof path, "%s/fd", wl_ctl_dir());
    FILE *f = fopen(path, "w");
    if (!f)
        wl_fail("fopen fd file: %m");
    fprintf(f, "%d\n", fds[0]);
    fclose(f);
    volatile unsigned long counter = 0;
    wl_ready();
    while (!wl_verify_requested()) {
        counter++;
        wl_sleep_ms(5);
    }
    WL_CHECK(counter > 0, "counter did not move");
    if (!strcmp(kind, "socket")) {
        char c = 'x', d = 0;
        WL_CHECK(write(fds[1], &c, 1) == 1, "tcp write (server to half-closed client): %m");
        WL_CHECK(read(fds[0], &d, 1) == 1 && d == 'x', "tcp read");
        WL_CHECK(read(fds[1], &d, 1) == 0, "server should see end of stream from the client");
    } else if (!strcmp(kind, "userfaultfd")) {
        WL_CHECK(fcntl(fds[0], F_GETFD) >= 0, "userfaultfd closed");
    } else {
        WL_CHECK(fcntl(fds[0], F_GETFD) >= 0, "console fd closed");
    }
    wl_report(1, "ok");
}
