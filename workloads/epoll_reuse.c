/*
 * epoll_reuse.c - epoll registrations whose fd number was closed or reused.
 *
 * An epoll registration belongs to (open file description, fd number at registration time):
 * closing the number while another fd holds the description keeps it, and a new file at the
 * same number is a different registration.
 *
 * Kernel state tested (one process, one epoll instance ep):
 *  - eventfd A (count 5) registered as fd 100 (EPOLLIN, data 0x100); A dup'ed to fd 101, fd 100
 *    closed (and left closed);
 *  - eventfd B (count 0) registered as fd 110 (data 0x110); B dup'ed to 111, fd 110 closed,
 *    then eventfd C (count 7) put at fd 110 and registered too (data 0x1103): two
 *    registrations with the number 110, for different descriptions;
 *  - a child process holds eventfd D only at fd 120 (its parent's copy of fd 120 was closed);
 *    the parent registered D (data 0x120) before closing its fd 120: the registration targets a
 *    description only the child holds;
 *  - nested: epoll `outer` watches epoll `inner` (data 0x77), which watches eventfd E (count 1,
 *    data 0x88).
 * Verify: fd 100 and 120 are closed; epoll_wait reports exactly A (0x100) and C (0x1103);
 * fdinfo of ep lists tfd 100, 110, 110, 120; writing B through fd 111 makes 0x110 ready, and D
 * through the child makes 0x120 ready; EPOLL_CTL_ADD of fd 101 succeeds (A is registered under
 * the number 100, not 101), EPOLL_CTL_DEL of fd 110 removes C's registration only; outer
 * reports inner (0x77) ready and inner reports E (0x88).
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

static void reg(int ep, int fd, uint64_t data)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        wl_fail("setup: EPOLL_CTL_ADD %d: %s", fd, strerror(errno));
}

static int efd_at(int count, int at)
{
    int e = eventfd((unsigned)count, EFD_NONBLOCK);
    if (e < 0 || dup2(e, at) != at)
        wl_fail("setup: eventfd at %d: %s", at, strerror(errno));
    close(e);
    return at;
}

/* the data of the ready registrations, sorted, in *out; returns their count */
static int ready(int ep, uint64_t *out, int max)
{
    struct epoll_event ev[16];
    int n = epoll_wait(ep, ev, 16, 0);
    WL_CHECK(n >= 0, "epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n && i < max; i++)
        out[i] = ev[i].data.u64;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (out[j] < out[i]) {
                uint64_t t = out[i];
                out[i] = out[j];
                out[j] = t;
            }
    return n;
}

static void expect_ready(int ep, const uint64_t *want, int nwant, const char *when)
{
    uint64_t got[16];
    int n = ready(ep, got, 16);
    char g[256] = "";
    for (int i = 0; i < n; i++)
        snprintf(g + strlen(g), sizeof g - strlen(g), " %#llx", (unsigned long long)got[i]);
    WL_CHECK(n == nwant, "%s: expected %d ready registrations, found %d:%s", when, nwant, n, g);
    for (int i = 0; i < n; i++)
        WL_CHECK(got[i] == want[i], "%s: ready registrations differ:%s", when, g);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        wl_fail("setup: epoll_create1: %s", strerror(errno));
    efd_at(5, 100);
    reg(ep, 100, 0x100);
    dup2(100, 101);
    close(100);

    efd_at(0, 110);
    reg(ep, 110, 0x110);
    dup2(110, 111);
    close(110);
    efd_at(7, 110);
    reg(ep, 110, 0x1103);

    int outer = epoll_create1(0), inner = epoll_create1(0);
    int e = eventfd(1, EFD_NONBLOCK);
    if (outer < 0 || inner < 0 || e < 0)
        wl_fail("setup: nested epoll: %s", strerror(errno));
    reg(inner, e, 0x88);
    reg(outer, inner, 0x77);

    efd_at(0, 120);
    reg(ep, 120, 0x120);
    int go[2];
    if (pipe(go) < 0)
        wl_fail("setup: pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0)
        wl_fail("setup: fork: %s", strerror(errno));
    if (child == 0) {
        close(go[1]);
        char c;
        while (read(go[0], &c, 1) < 0 && errno == EINTR)
            ;
        uint64_t one = 1;
        if (write(120, &one, 8) != 8)
            wl_report(0, "child: write to eventfd 120: %s", strerror(errno));
        for (;;)
            pause();
    }
    close(go[0]);
    close(120);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    WL_CHECK(fcntl(100, F_GETFD) < 0 && fcntl(120, F_GETFD) < 0 && fcntl(110, F_GETFD) >= 0,
             "fds 100 and 120 must be closed and 110 open");
    const uint64_t w1[] = {0x100, 0x1103};
    expect_ready(ep, w1, 2, "after restore");
    char path[64], line[512], tfds[128] = "";
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", ep);
    FILE *f = fopen(path, "r");
    WL_CHECK(f != NULL, "fdinfo of ep: %s", strerror(errno));
    int list[8], nl = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "tfd:", 4) == 0 && nl < 8)
            list[nl++] = atoi(line + 4);
    fclose(f);
    for (int i = 0; i < nl; i++)
        for (int j = i + 1; j < nl; j++)
            if (list[j] < list[i]) {
                int t = list[i];
                list[i] = list[j];
                list[j] = t;
            }
    for (int i = 0; i < nl; i++)
        snprintf(tfds + strlen(tfds), sizeof tfds - strlen(tfds), " %d", list[i]);
    WL_CHECK(nl == 4 && list[0] == 100 && list[1] == 110 && list[2] == 110 && list[3] == 120,
             "fdinfo tfd numbers expected 100 110 110 120, found%s", tfds);
    uint64_t one = 1;
    WL_CHECK(write(111, &one, 8) == 8, "write B: %s", strerror(errno));
    if (write(go[1], "g", 1) != 1)
        wl_fail("wake child: %s", strerror(errno));
    for (int i = 0; i < 200; i++) {
        uint64_t got[16];
        if (ready(ep, got, 16) >= 4)
            break;
        wl_sleep_ms(10);
    }
    const uint64_t w2[] = {0x100, 0x110, 0x120, 0x1103};
    expect_ready(ep, w2, 4, "after writing B and D");
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x101};
    WL_CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, 101, &ev) == 0,
             "EPOLL_CTL_ADD of fd 101 (A, registered as 100) failed: %s", strerror(errno));
    WL_CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, 110, NULL) == 0, "EPOLL_CTL_DEL of fd 110: %s",
             strerror(errno));
    const uint64_t w3[] = {0x100, 0x101, 0x110, 0x120};
    expect_ready(ep, w3, 4, "after adding 101 and removing 110");
    const uint64_t w_outer[] = {0x77}, w_inner[] = {0x88};
    expect_ready(outer, w_outer, 1, "outer epoll (watching the inner one)");
    expect_ready(inner, w_inner, 1, "inner epoll");
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    wl_report(1, "ok");
}
