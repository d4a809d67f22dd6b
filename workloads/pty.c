/*
 * pty.c - pseudo-terminals across checkpoint/restore (parent, a child
 * session leader and a grandchild).
 *
 * Kernel state tested:
 *  - pair 1 (master m1, slave s1), opened with posix_openpt/grantpt/
 *    unlockpt + open(ptsname): slave termios non-canonical, no echo, no
 *    ISIG/IEXTEN/IXON/ICRNL/OPOST, VMIN 3, VTIME 7, speed 57600; window size
 *    33x101 (800x600 px); packet mode (TIOCPKT) on m1 (enabled after the
 *    termios, so no status byte is pending);
 *    64 bytes written into m1 queued unread on s1, 50 bytes written into s1
 *    queued unread on m1;
 *  - pair 2 (m2, s2): slave termios canonical with ECHO|ECHOE|ECHOK|ECHOCTL|
 *    ECHOKE|ISIG|IEXTEN, ICRNL, OPOST|ONLCR, VERASE ^H, speed 9600; window
 *    50x132; no packet mode;
 *    "hello from slave\n" written into s2, then "line one\nline two\npartial"
 *    written into m2: s2 holds 2 complete lines and an incomplete one, m2
 *    holds "hello from slave\r\n" followed by the echo
 *    "line one\r\nline two\r\npartial";
 *  - the pty indexes (TIOCGPTN), written to CTL_DIR/pty as "N1 N2\n";
 *  - child C: setsid() + TIOCSCTTY makes s2 its controlling terminal; its
 *    child G moves to its own process group, which C makes the foreground
 *    group (tcsetpgrp).
 * Verify (parent): indexes and /proc/self/fd links unchanged; termios of
 * both ends of both pairs, window sizes and packet mode (TIOCGPKT)
 * unchanged; queued data intact in both directions of both pairs (packet
 * mode framing: a TIOCPKT_DATA byte before the data, no status byte; the
 * canonical slave returns one line per read and holds back the partial
 * line); the line discipline still applies the settings: ^H erases (and
 * echoes "\b \b"), ONLCR, VMIN/VTIME (2 bytes arrive after the 0.7 s
 * inter-byte timer); new I/O both ways.
 * Verify (C): getsid, tcgetsid = C, tcgetpgrp = G, /dev/tty opens and is
 * pair 2's slave, then (on the parent's signal) a line written to /dev/tty
 * reaches m2; G: own process group, is the foreground group, same session.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define IN1_LEN 64
#define OUT1_LEN 50
#define SEED_IN1 301
#define SEED_OUT1 302
#define OUT2 "hello from slave\n"
#define OUT2_M "hello from slave\r\n"
#define IN2 "line one\nline two\npartial"
#define ECHO2 "line one\r\nline two\r\npartial"

/* ---------------------------------------------------------------- utils */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000ULL + (uint64_t)ts.tv_nsec / 1000000ULL;
}

static void xwrite(int fd, const void *p, size_t n, const char *what)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            wl_fail("%s: write: %s", what, strerror(errno));
        c += w;
        n -= (size_t)w;
    }
}

static int wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (int waited = 0; waited < timeout_ms; waited += 50)
        if (poll(&p, 1, 50) > 0 && (p.revents & POLLIN))
            return 1;
    return 0;
}

static int readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

/* printable rendering of bytes for messages */
static const char *vis(const void *p, size_t n, char *out, size_t on)
{
    const unsigned char *b = p;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < on; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\')
            out[o++] = (char)b[i];
        else
            o += (size_t)snprintf(out + o, on - o, "\\x%02x", b[i]);
    }
    out[o] = 0;
    return out;
}

/* read from a non-packet fd until n bytes collected (one read may return less) */
static void read_exact(int fd, void *buf, size_t n, const char *what)
{
    size_t got = 0;
    while (got < n) {
        if (!wait_readable(fd, 5000)) {
            char v[300];
            wl_fail("%s: expected %zu bytes, only %zu arrived within 5 s ('%s')", what, n, got,
                    vis(buf, got, v, sizeof v));
        }
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            wl_fail("%s: read returned %zd (%s) after %zu of %zu bytes", what, r,
                    r < 0 ? strerror(errno) : "EOF", got, n);
        got += (size_t)r;
    }
}

static void expect_bytes(int fd, const void *want, size_t n, const char *what)
{
    char buf[512], v1[600], v2[600];
    read_exact(fd, buf, n, what);
    WL_CHECK(memcmp(buf, want, n) == 0, "%s: expected '%s', found '%s'", what,
             vis(want, n, v1, sizeof v1), vis(buf, n, v2, sizeof v2));
}

/* packet-mode master: collect n data bytes; every read must start with
 * TIOCPKT_DATA (0) */
static void read_packet(int fd, void *buf, size_t n, const char *what)
{
    size_t got = 0;
    unsigned char tmp[512];
    while (got < n) {
        if (!wait_readable(fd, 5000))
            wl_fail("%s: expected %zu data bytes, only %zu arrived within 5 s", what, n, got);
        size_t want = n - got + 1;
        ssize_t r = read(fd, tmp, want > sizeof tmp ? sizeof tmp : want);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            wl_fail("%s: read returned %zd (%s) after %zu of %zu bytes", what, r,
                    r < 0 ? strerror(errno) : "EOF", got, n);
        WL_CHECK(tmp[0] == TIOCPKT_DATA,
                 "%s (packet mode): read must start with TIOCPKT_DATA (0), found status byte %#x "
                 "(%zd bytes read, %zu data bytes collected so far)",
                 what, tmp[0], r, got);
        memcpy((char *)buf + got, tmp + 1, (size_t)r - 1);
        got += (size_t)r - 1;
    }
}

static int inq(int fd)
{
    int n = -1;
    if (ioctl(fd, FIONREAD, &n) < 0)
        return -1;
    return n;
}

static void wait_inq(int fd, int want, const char *what)
{
    uint64_t t0 = now_ms();
    while (inq(fd) != want) {
        if (now_ms() - t0 > 5000)
            wl_fail("setup: %s: expected %d bytes queued (FIONREAD), found %d", what, want,
                    inq(fd));
        wl_sleep_ms(2);
    }
}

static int ptn(int fd)
{
    unsigned n = 0;
    if (ioctl(fd, TIOCGPTN, &n) < 0)
        return -1;
    return (int)n;
}

static void open_pair(int *m, int *s, int *idx, const char *what)
{
    *m = posix_openpt(O_RDWR | O_NOCTTY);
    if (*m < 0)
        wl_fail("setup: posix_openpt (%s): %s", what, strerror(errno));
    if (grantpt(*m) < 0 || unlockpt(*m) < 0)
        wl_fail("setup: grantpt/unlockpt (%s): %s", what, strerror(errno));
    char *name = ptsname(*m);
    if (!name)
        wl_fail("setup: ptsname (%s): %s", what, strerror(errno));
    *s = open(name, O_RDWR | O_NOCTTY);
    if (*s < 0)
        wl_fail("setup: open %s: %s", name, strerror(errno));
    *idx = ptn(*m);
}

static int termios_eq(const struct termios *a, const struct termios *b)
{
    return a->c_iflag == b->c_iflag && a->c_oflag == b->c_oflag && a->c_cflag == b->c_cflag &&
           a->c_lflag == b->c_lflag && memcmp(a->c_cc, b->c_cc, sizeof a->c_cc) == 0 &&
           cfgetispeed(a) == cfgetispeed(b) && cfgetospeed(a) == cfgetospeed(b);
}

static void check_termios(int fd, const struct termios *want, const char *what)
{
    struct termios t;
    memset(&t, 0, sizeof t);
    WL_CHECK(tcgetattr(fd, &t) == 0, "%s: tcgetattr: %s", what, strerror(errno));
    if (termios_eq(&t, want))
        return;
    int cc = -1;
    for (int i = 0; i < NCCS; i++)
        if (t.c_cc[i] != want->c_cc[i]) {
            cc = i;
            break;
        }
    wl_fail("%s: termios expected iflag %#x oflag %#x cflag %#x lflag %#x ispeed %u ospeed %u, "
            "found %#x %#x %#x %#x %u %u; first differing c_cc index %d (expected %#x, found %#x)",
            what, want->c_iflag, want->c_oflag, want->c_cflag, want->c_lflag,
            (unsigned)cfgetispeed(want), (unsigned)cfgetospeed(want), t.c_iflag, t.c_oflag,
            t.c_cflag, t.c_lflag, (unsigned)cfgetispeed(&t), (unsigned)cfgetospeed(&t), cc,
            cc >= 0 ? want->c_cc[cc] : 0, cc >= 0 ? t.c_cc[cc] : 0);
}

static void check_winsz(int fd, const struct winsize *w, const char *what)
{
    struct winsize g;
    memset(&g, 0, sizeof g);
    WL_CHECK(ioctl(fd, TIOCGWINSZ, &g) == 0, "%s: TIOCGWINSZ: %s", what, strerror(errno));
    WL_CHECK(g.ws_row == w->ws_row && g.ws_col == w->ws_col && g.ws_xpixel == w->ws_xpixel &&
                 g.ws_ypixel == w->ws_ypixel,
             "%s: window size expected %ux%u (%ux%u px), found %ux%u (%ux%u px)", what, w->ws_row,
             w->ws_col, w->ws_xpixel, w->ws_ypixel, g.ws_row, g.ws_col, g.ws_xpixel, g.ws_ypixel);
}

static void check_link(int fd, int idx, const char *what)
{
    char p[64], got[PATH_MAX], want[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t r = readlink(p, got, sizeof got - 1);
    got[r < 0 ? 0 : r] = 0;
    snprintf(want, sizeof want, "/dev/pts/%d", idx);
    WL_CHECK(strcmp(got, want) == 0, "%s (fd %d): link expected '%s', found '%s'", what, fd, want,
             got);
}

static void on_alarm(int sig)
{
    (void)sig;
}

/* ------------------------------------------------------- child processes */

static int s2_idx;

static void grandchild(int s2, pid_t sid)
{
    while (!wl_verify_requested())
        wl_sleep_ms(10);
    pid_t me = getpid();
    WL_CHECK(getpgrp() == me, "G: process group expected %d (its own), found %d", (int)me,
             (int)getpgrp());
    WL_CHECK(getsid(0) == sid, "G: session expected %d (C's), found %d", (int)sid,
             (int)getsid(0));
    WL_CHECK(tcgetpgrp(s2) == me, "G: tcgetpgrp expected %d (G's group is the foreground), found "
             "%d (%s)", (int)me, (int)tcgetpgrp(s2), strerror(errno));
    WL_CHECK(tcgetsid(s2) == sid, "G: tcgetsid expected %d, found %d", (int)sid,
             (int)tcgetsid(s2));
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    WL_CHECK(t >= 0, "G: open /dev/tty (controlling terminal) failed: %s", strerror(errno));
    _exit(0);
}

static void child(int s2, int rdy_w, int go_r)
{
    pid_t me = getpid();
    if (setsid() < 0)
        wl_fail("C setup: setsid: %s", strerror(errno));
    if (ioctl(s2, TIOCSCTTY, 0) < 0)
        wl_fail("C setup: TIOCSCTTY: %s", strerror(errno));
    pid_t g = fork();
    if (g < 0)
        wl_fail("C setup: fork: %s", strerror(errno));
    if (g == 0) {
        close(rdy_w);
        close(go_r);
        setpgid(0, 0);
        grandchild(s2, me);
    }
    if (setpgid(g, g) < 0 && errno != EACCES)
        wl_fail("C setup: setpgid(G): %s", strerror(errno));
    if (tcsetpgrp(s2, g) < 0)
        wl_fail("C setup: tcsetpgrp: %s", strerror(errno));
    if (tcgetpgrp(s2) != g)
        wl_fail("C setup: tcgetpgrp %d after tcsetpgrp(%d)", (int)tcgetpgrp(s2), (int)g);
    if (write(rdy_w, "r", 1) != 1)
        wl_fail("C setup: write: %s", strerror(errno));
    close(rdy_w);

    while (!wl_verify_requested())
        wl_sleep_ms(10);

    WL_CHECK(getsid(0) == me, "C: session expected %d (its own), found %d", (int)me,
             (int)getsid(0));
    WL_CHECK(getpgrp() == me, "C: process group expected %d, found %d", (int)me, (int)getpgrp());
    WL_CHECK(tcgetsid(s2) == me, "C: tcgetsid(s2) expected %d (C is the controlling process), "
             "found %d (%s)", (int)me, (int)tcgetsid(s2), strerror(errno));
    WL_CHECK(tcgetpgrp(s2) == g, "C: tcgetpgrp(s2) expected %d (G's group), found %d", (int)g,
             (int)tcgetpgrp(s2));
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    WL_CHECK(t >= 0, "C: open /dev/tty (controlling terminal) failed: %s", strerror(errno));
    {   /* /dev/tty must lead to pair 2 (50x132); the write below proves it too */
        struct winsize ws;
        memset(&ws, 0, sizeof ws);
        WL_CHECK(ioctl(t, TIOCGWINSZ, &ws) == 0 && ws.ws_row == 50 && ws.ws_col == 132,
                 "C: /dev/tty expected to be /dev/pts/%d (window 50x132), found window %ux%u",
                 s2_idx, ws.ws_row, ws.ws_col);
        WL_CHECK(tcgetsid(t) == me, "C: tcgetsid(/dev/tty) expected %d, found %d", (int)me,
                 (int)tcgetsid(t));
    }
    /* wait for the parent's go (it first drains its queued data) */
    char c = 0;
    WL_CHECK(wait_readable(go_r, 20000), "C: no go signal from the parent within 20 s");
    ssize_t r;
    do
        r = read(go_r, &c, 1);
    while (r < 0 && errno == EINTR);
    WL_CHECK(r == 1 && c == 'g', "C: go pipe: read %zd byte %#x", r, (unsigned char)c);
    const char hi[] = "child says hi\n";
    WL_CHECK(write(t, hi, sizeof hi - 1) == (ssize_t)sizeof hi - 1,
             "C: write to /dev/tty failed: %s", strerror(errno));
    int st = 0;
    pid_t w;
    do
        w = waitpid(g, &st, 0);
    while (w < 0 && errno == EINTR);
    WL_CHECK(w == g && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "C: grandchild G (pid %d) expected exit 0, waitpid %d status %#x (see out.log)",
             (int)g, (int)w, st);
    _exit(0);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    signal(SIGHUP, SIG_IGN);
    signal(SIGTTOU, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);

    int m1, s1, n1, m2, s2, n2;
    open_pair(&m1, &s1, &n1, "pair 1");
    open_pair(&m2, &s2, &n2, "pair 2");
    s2_idx = n2;
    if (n1 < 0 || n2 < 0 || n1 == n2)
        wl_fail("setup: TIOCGPTN returned %d and %d", n1, n2);

    /* pair 1: raw-ish, VMIN 3 VTIME 7, no echo */
    struct termios t1;
    if (tcgetattr(s1, &t1) < 0)
        wl_fail("setup: tcgetattr: %s", strerror(errno));
    t1.c_iflag &= ~(tcflag_t)(ICRNL | INLCR | IGNCR | IXON | IXOFF | ISTRIP | BRKINT | PARMRK);
    t1.c_oflag &= ~(tcflag_t)OPOST;
    t1.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ECHOE | ECHOK | ECHONL | ISIG | IEXTEN);
    t1.c_cflag = (t1.c_cflag & ~(tcflag_t)(CSIZE | PARENB)) | CS8 | CREAD;
    t1.c_cc[VMIN] = 3;
    t1.c_cc[VTIME] = 7;
    cfsetispeed(&t1, B57600);
    cfsetospeed(&t1, B57600);
    if (tcsetattr(s1, TCSANOW, &t1) < 0)
        wl_fail("setup: tcsetattr pair 1: %s", strerror(errno));
    struct winsize w1 = {.ws_row = 33, .ws_col = 101, .ws_xpixel = 800, .ws_ypixel = 600};
    if (ioctl(s1, TIOCSWINSZ, &w1) < 0)
        wl_fail("setup: TIOCSWINSZ: %s", strerror(errno));
    int one = 1;
    if (ioctl(m1, TIOCPKT, &one) < 0)
        wl_fail("setup: TIOCPKT: %s", strerror(errno));

    /* pair 2: canonical with echo, ^H erase */
    struct termios t2;
    if (tcgetattr(s2, &t2) < 0)
        wl_fail("setup: tcgetattr: %s", strerror(errno));
    t2.c_iflag = ICRNL;
    t2.c_oflag = OPOST | ONLCR;
    t2.c_cflag = (t2.c_cflag & ~(tcflag_t)(CSIZE | PARENB)) | CS8 | CREAD;
    t2.c_lflag = ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | ISIG | IEXTEN;
    t2.c_cc[VERASE] = 0x08;
    t2.c_cc[VKILL] = 0x15;
    t2.c_cc[VINTR] = 0x03;
    t2.c_cc[VEOF] = 0x04;
    t2.c_cc[VEOL] = 0;
    t2.c_cc[VEOL2] = 0;
    cfsetispeed(&t2, B9600);
    cfsetospeed(&t2, B9600);
    if (tcsetattr(s2, TCSANOW, &t2) < 0)
        wl_fail("setup: tcsetattr pair 2: %s", strerror(errno));
    struct winsize w2 = {.ws_row = 50, .ws_col = 132};
    if (ioctl(s2, TIOCSWINSZ, &w2) < 0)
        wl_fail("setup: TIOCSWINSZ: %s", strerror(errno));

    /* the controlling-terminal child */
    int rdy[2], go[2];
    if (pipe(rdy) < 0 || pipe(go) < 0)
        wl_fail("setup: pipe: %s", strerror(errno));
    pid_t c = fork();
    if (c < 0)
        wl_fail("setup: fork: %s", strerror(errno));
    if (c == 0) {
        close(m1);
        close(s1);
        close(m2);
        close(rdy[0]);
        close(go[1]);
        child(s2, rdy[1], go[0]);
    }
    close(rdy[1]);
    close(go[0]);
    {
        char b = 0;
        if (!wait_readable(rdy[0], 10000) || read(rdy[0], &b, 1) != 1 || b != 'r')
            wl_fail("setup: child C did not become ready within 10 s (see out.log)");
        close(rdy[0]);
    }

    /* queued data */
    unsigned char in1[IN1_LEN], out1[OUT1_LEN];
    wl_fill_pattern(in1, IN1_LEN, SEED_IN1);
    for (int i = 0; i < IN1_LEN; i++)
        in1[i] = (unsigned char)(0x20 + in1[i] % 0x5f);
    wl_fill_pattern(out1, OUT1_LEN, SEED_OUT1);
    xwrite(m1, in1, IN1_LEN, "setup: m1");
    xwrite(s1, out1, OUT1_LEN, "setup: s1");
    xwrite(s2, OUT2, strlen(OUT2), "setup: s2");
    wait_inq(m2, (int)strlen(OUT2_M), "m2 (slave output)");
    xwrite(m2, IN2, strlen(IN2), "setup: m2");
    wait_inq(s1, IN1_LEN, "s1");
    wait_inq(m1, OUT1_LEN, "m1");
    wait_inq(s2, (int)strlen("line one\nline two\n"), "s2 (complete lines)");
    wait_inq(m2, (int)(strlen(OUT2_M) + strlen(ECHO2)), "m2 (output + echo)");

    struct termios tm1, ts1, tm2, ts2;
    tcgetattr(m1, &tm1);
    tcgetattr(s1, &ts1);
    tcgetattr(m2, &tm2);
    tcgetattr(s2, &ts2);
    WL_CHECK(!(ts1.c_lflag & (ICANON | ECHO)) && ts1.c_cc[VMIN] == 3 && ts1.c_cc[VTIME] == 7,
             "setup: pair 1 termios not applied (lflag %#x VMIN %d VTIME %d)", ts1.c_lflag,
             ts1.c_cc[VMIN], ts1.c_cc[VTIME]);
    {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/pty", wl_ctl_dir());
        FILE *f = fopen(p, "w");
        if (!f)
            wl_fail("setup: fopen %s: %s", p, strerror(errno));
        fprintf(f, "%d %d\n", n1, n2);
        fclose(f);
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    char v1[600], v2[600];
    WL_CHECK(ptn(m1) == n1 && ptn(m2) == n2,
             "pty indexes (TIOCGPTN) expected %d and %d (CTL_DIR/pty), found %d and %d", n1, n2,
             ptn(m1), ptn(m2));
    check_link(s1, n1, "pair 1 slave");
    check_link(s2, n2, "pair 2 slave");
    {
        char *nm = ptsname(m1), want[64];
        snprintf(want, sizeof want, "/dev/pts/%d", n1);
        WL_CHECK(nm && strcmp(nm, want) == 0, "ptsname(m1) expected %s, found %s", want,
                 nm ? nm : strerror(errno));
    }
    check_termios(s1, &ts1, "pair 1 slave");
    check_termios(m1, &tm1, "pair 1 master");
    check_termios(s2, &ts2, "pair 2 slave");
    check_termios(m2, &tm2, "pair 2 master");
    check_winsz(s1, &w1, "pair 1 slave");
    check_winsz(m1, &w1, "pair 1 master");
    check_winsz(s2, &w2, "pair 2 slave");
    check_winsz(m2, &w2, "pair 2 master");
    {
        int p1 = -1, p2 = -1;
        WL_CHECK(ioctl(m1, TIOCGPKT, &p1) == 0 && ioctl(m2, TIOCGPKT, &p2) == 0,
                 "TIOCGPKT: %s", strerror(errno));
        WL_CHECK(p1 != 0 && p2 == 0, "packet mode (TIOCGPKT) expected on m1 and off on m2, found "
                 "%d / %d", p1, p2);
    }

    /* pair 1 queued data */
    {
        unsigned char got[IN1_LEN + OUT1_LEN];
        read_packet(m1, got, OUT1_LEN, "m1 (output queued by s1)");
        WL_CHECK(memcmp(got, out1, OUT1_LEN) == 0, "m1: the %d queued output bytes differ: '%s'",
                 OUT1_LEN, vis(got, OUT1_LEN, v1, sizeof v1));
        WL_CHECK(!readable_now(m1), "m1: more data than the %d queued bytes", OUT1_LEN);
        read_exact(s1, got, IN1_LEN, "s1 (input queued by m1)");
        WL_CHECK(memcmp(got, in1, IN1_LEN) == 0,
                 "s1: the %d queued input bytes differ: expected '%s', found '%s'", IN1_LEN,
                 vis(in1, IN1_LEN, v1, sizeof v1), vis(got, IN1_LEN, v2, sizeof v2));
        WL_CHECK(!readable_now(s1), "s1: more data than the %d queued bytes (echo?)", IN1_LEN);
        /* new I/O */
        xwrite(m1, "new-in\r\n", 8, "verify: m1");
        expect_bytes(s1, "new-in\r\n", 8, "s1 (new input, no ICRNL)");
        xwrite(s1, "new-out\n", 8, "verify: s1");
        read_packet(m1, got, 8, "m1 (new output)");
        WL_CHECK(memcmp(got, "new-out\n", 8) == 0, "m1: new output expected 'new-out\\n' (no "
                 "OPOST), found '%s'", vis(got, 8, v1, sizeof v1));
        WL_CHECK(!readable_now(m1), "m1: echo or extra bytes after the new I/O (ECHO is off)");
        /* VMIN 3 / VTIME 7: 2 bytes are returned after the 0.7 s inter-byte timer */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm; /* no SA_RESTART: the read gets EINTR */
        sigaction(SIGALRM, &sa, NULL);
        xwrite(m1, "xy", 2, "verify: m1");
        uint64_t t0 = now_ms();
        alarm(4);
        ssize_t r = read(s1, got, sizeof got);
        int e = errno;
        alarm(0);
        uint64_t dt = now_ms() - t0;
        WL_CHECK(r == 2 && memcmp(got, "xy", 2) == 0,
                 "s1 (VMIN 3, VTIME 7): read of 2 available bytes expected to return them after "
                 "~0.7 s, returned %zd (%s) after %llu ms",
                 r, r < 0 ? strerror(e) : "bytes", (unsigned long long)dt);
        WL_CHECK(dt >= 500 && dt <= 3000,
                 "s1 (VMIN 3, VTIME 7): read of 2 bytes returned after %llu ms, expected ~700 ms "
                 "(inter-byte timer)", (unsigned long long)dt);
    }

    /* pair 2 queued data */
    {
        char want[128];
        snprintf(want, sizeof want, "%s%s", OUT2_M, ECHO2);
        expect_bytes(m2, want, strlen(want), "m2 (slave output + echo of the queued input)");
        WL_CHECK(!readable_now(m2), "m2: more data than expected");
        char got[128];
        ssize_t r;
        WL_CHECK(wait_readable(s2, 5000), "s2: queued lines not readable");
        do
            r = read(s2, got, sizeof got);
        while (r < 0 && errno == EINTR);
        WL_CHECK(r == 9 && memcmp(got, "line one\n", 9) == 0,
                 "s2 (canonical): first read expected 'line one\\n', found %zd bytes '%s'", r,
                 vis(got, r > 0 ? (size_t)r : 0, v1, sizeof v1));
        WL_CHECK(wait_readable(s2, 5000), "s2: second queued line not readable");
        do
            r = read(s2, got, sizeof got);
        while (r < 0 && errno == EINTR);
        WL_CHECK(r == 9 && memcmp(got, "line two\n", 9) == 0,
                 "s2 (canonical): second read expected 'line two\\n', found %zd bytes '%s'", r,
                 vis(got, r > 0 ? (size_t)r : 0, v1, sizeof v1));
        WL_CHECK(!readable_now(s2), "s2 (canonical): readable although only the partial line "
                 "'partial' is queued");
        /* complete the partial line, using the ^H erase character */
        xwrite(m2, "X\x08!\n", 4, "verify: m2");
        WL_CHECK(wait_readable(s2, 5000), "s2: completed line not readable");
        do
            r = read(s2, got, sizeof got);
        while (r < 0 && errno == EINTR);
        WL_CHECK(r == 9 && memcmp(got, "partial!\n", 9) == 0,
                 "s2: the partial line 'partial' + 'X^H!\\n' expected to read 'partial!\\n', "
                 "found %zd bytes '%s'",
                 r, vis(got, r > 0 ? (size_t)r : 0, v1, sizeof v1));
        expect_bytes(m2, "X\b \b!\r\n", 7, "m2 (echo of 'X^H!\\n' with ECHOE, ONLCR)");
        xwrite(s2, "bye\n", 4, "verify: s2");
        expect_bytes(m2, "bye\r\n", 5, "m2 (new output, ONLCR)");
    }

    /* the child writes through its controlling terminal */
    if (write(go[1], "g", 1) != 1) {
        int st = 0;
        pid_t w = waitpid(c, &st, WNOHANG);
        wl_fail("go pipe to child C: %s (C: waitpid %d status %#x; see out.log)", strerror(errno),
                (int)w, st);
    }
    {
        const char want[] = "child says hi\r\n";
        char got[64];
        size_t n = sizeof want - 1, have = 0;
        uint64_t t0 = now_ms();
        while (have < n && now_ms() - t0 < 10000) {
            if (!wait_readable(m2, 100)) {
                int st;
                if (waitpid(c, &st, WNOHANG) == c)
                    wl_fail("child C exited with status %#x before writing to /dev/tty (see "
                            "out.log)", st);
                continue;
            }
            ssize_t r = read(m2, got + have, n - have);
            if (r > 0)
                have += (size_t)r;
        }
        WL_CHECK(have == n && memcmp(got, want, n) == 0,
                 "m2: expected '%s' written by C to /dev/tty, found %zu bytes '%s'", "child says "
                 "hi\\r\\n", have, vis(got, have, v1, sizeof v1));
    }
    int st = 0;
    pid_t w;
    do
        w = waitpid(c, &st, 0);
    while (w < 0 && errno == EINTR);
    WL_CHECK(w == c && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "child C (pid %d) expected exit 0, waitpid %d status %#x (see out.log)", (int)c,
             (int)w, st);
    wl_report(1, "ok");
}
