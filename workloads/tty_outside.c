/*
 * tty_outside.c - a session leader whose controlling terminal (stdin,
 * stdout and stderr, one open file description) is a pty whose master is
 * outside the tree: restored with `stasis restore --new-tty`, it gets a new
 * terminal in its place.
 *
 * Started by the test with setsid + TIOCSCTTY on the slave, dup'ed to 0-2.
 * Verify: fds 0-2 are terminals and one description (kcmp); the terminal
 * on fd 0 is the controlling terminal of this session (tcgetsid), /dev/tty
 * opens and names this session (TIOCGSID); this process group is its
 * foreground group; the window size is 40x120 (set by the test on the
 * terminal it started from, given to the new one); then "tty-ok" is written through /dev/tty, a line read
 * from stdin (within 10 s) and "pong:<line>" written to stdout.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

static void check_terminal(const char *when) {
    for (int fd = 0; fd < 3; fd++)
        WL_CHECK(isatty(fd), "%s: fd %d is not a terminal", when, fd);
    pid_t me = getpid();
    for (int fd = 1; fd < 3; fd++)
        WL_CHECK(syscall(SYS_kcmp, me, me, KCMP_FILE, 0, fd) == 0,
                 "%s: fds 0 and %d are no longer one description", when, fd);
    WL_CHECK(tcgetsid(0) == getsid(0) && getsid(0) == me,
             "%s: stdin's terminal belongs to session %d, ours is %d", when,
             (int)tcgetsid(0), (int)getsid(0));
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    WL_CHECK(t >= 0, "%s: open /dev/tty: %s", when, strerror(errno));
    pid_t sid = -1;
    WL_CHECK(ioctl(t, TIOCGSID, &sid) == 0 && sid == me,
             "%s: /dev/tty's session %d, expected %d", when, (int)sid, (int)me);
    close(t);
    struct winsize ws;
    WL_CHECK(ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row == 40 && ws.ws_col == 120,
             "%s: window size %ux%u, expected 40x120", when, ws.ws_row,
             ws.ws_col);
    WL_CHECK(tcgetpgrp(0) == getpgrp(), "%s: foreground group %d, ours %d",
             when, (int)tcgetpgrp(0), (int)getpgrp());
}

int main(int argc, char **argv) {
    wl_init(argc, argv);
    check_terminal("setup");
    wl_ready();
    while (!wl_verify_requested()) wl_sleep_ms(20);
    check_terminal("after restore");
    /* Through /dev/tty: the line must reach the new terminal's master. */
    int t = open("/dev/tty", O_WRONLY | O_NOCTTY);
    const char *ok = "tty-ok\n";
    WL_CHECK(t >= 0 && write(t, ok, strlen(ok)) == (ssize_t)strlen(ok),
             "write to /dev/tty: %s", strerror(errno));
    close(t);
    struct pollfd p = {.fd = 0, .events = POLLIN};
    WL_CHECK(poll(&p, 1, 10000) == 1, "no line typed on the terminal");
    char line[128] = "";
    ssize_t n = read(0, line, sizeof line - 1);
    WL_CHECK(n > 0, "read from the terminal: %s", strerror(errno));
    line[n] = 0;
    line[strcspn(line, "\r\n")] = 0;
    dprintf(1, "pong:%s\n", line);
    wl_report(1, "ok");
}
