/*
 * unsupported: holds one kernel object the engine does not support yet, chosen by argv[2]:
 * "socket" (an AF_VSOCK socket, a family the engine does not handle), "udpcork" (a UDP
 * socket holding corked bytes), "userfaultfd", "tty" (/dev/console, a terminal
 * that is not a pseudo-terminal). A checkpoint must
 * refuse it with a message naming pid, fd and kind, and leave this process running: on verify
 * it checks that the object still works (the socket is still there)
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
#include <linux/vm_sockets.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    const char *kind = argc > 2 ? argv[2] : "socket";
    int fds[2] = {-1, -1};
    if (!strcmp(kind, "socket")) {
        /* a vsock socket, a family the engine does not handle */
        fds[0] = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fds[0] < 0)
            wl_fail("vsock socket: %m");
    } else if (!strcmp(kind, "udpcork")) {
        /* a UDP socket holding corked bytes not sent yet (UDP_CORK) */
        fds[0] = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(42181),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int one = 1;
        if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof a) < 0 ||
            setsockopt(fds[0], IPPROTO_UDP, 1 /* UDP_CORK */, &one, sizeof one) < 0 ||
            send(fds[0], "corked", 6, 0) != 6)
            wl_fail("corked UDP socket: %m");
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
        int v = 0;
        socklen_t l = sizeof v;
        WL_CHECK(getsockopt(fds[0], SOL_SOCKET, SO_DOMAIN, &v, &l) == 0 && v == AF_VSOCK,
                 "vsock socket lost");
    } else if (!strcmp(kind, "udpcork")) {
        int v = 0;
        WL_CHECK(ioctl(fds[0], SIOCOUTQ, &v) == 0 && v > 0, "the corked bytes are gone");
    } else if (!strcmp(kind, "userfaultfd")) {
        WL_CHECK(fcntl(fds[0], F_GETFD) >= 0, "userfaultfd closed");
    } else {
        WL_CHECK(fcntl(fds[0], F_GETFD) >= 0, "console fd closed");
    }
    wl_report(1, "ok");
}
