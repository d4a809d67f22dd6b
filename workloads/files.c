/*
 * files.c - file descriptors and open file descriptions across
 * checkpoint/restore (parent + one child).
 *
 * Kernel state tested (in CTL_DIR):
 *  - f_rw:     O_RDWR regular file, 4096 bytes, offset 1234;
 *  - f_app:    O_WRONLY|O_APPEND, offset moved to 2 (writes still append);
 *  - f_rw again twice: one fd with FD_CLOEXEC (offset 100), one without
 *    (offset 200), separate open file descriptions;
 *  - f_del:    unlinked while open, 100 KiB pattern, offset 5000
 *              (deleted-but-open: nlink 0, "(deleted)" link, content kept);
 *  - f_dup:    fd, dup(fd) and F_DUPFD_CLOEXEC(fd, 50) sharing one open file
 *              description (offset shared, fd flags distinct, kcmp equal);
 *  - f_shared: open file description shared with a fork()ed child; after
 *              verify the child reads 50 bytes and the parent sees the
 *              offset move from 100 to 150 (kcmp across processes equal);
 *  - /dev/null (write), /dev/zero (reads zeros), /dev/urandom (reads);
 *  - FIFO CTL_DIR/fifo opened with a read end (O_NONBLOCK status flag) and a
 *    write end, 3 bytes buffered;
 *  - a pipe with both ends in the parent, pipe size 128 KiB, 10 000 bytes of
 *    pattern buffered; afterwards the pipe must still work;
 *  - a pipe parent -> child with 500 bytes buffered, then still working;
 *  - a pipe child -> parent used for the verify handshake;
 *  - fd 100 (dup2) on f_high, offset 5;
 *  - the exact set of open fds in both processes (nothing leaked/missing),
 *    F_GETFL / F_GETFD of every fd unchanged.
 */
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define SZ_RW 4096
#define SZ_DEL (100 * 1024)
#define SZ_DUP 8192
#define SZ_SH 4096
#define SZ_CHILD 500
#define SZ_SELF 10000
#define PIPE_SZ (128 * 1024)
#define HIGH_FD 100

#define SEED_RW 1
#define SEED_DEL 4
#define SEED_DUP 5
#define SEED_SH 6
#define SEED_CHILD 7
#define SEED_SELF 9

static const char *dir;

/* ---------------------------------------------------------------- utils */

static void xwrite(int fd, const void *p, size_t n, const char *what)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            wl_fail("setup: write %s: %s", what, strerror(errno));
        c += w;
        n -= (size_t)w;
    }
}

static int xopen(const char *path, int flags, const char *what)
{
    int fd = open(path, flags, 0644);
    if (fd < 0)
        wl_fail("setup: open %s: %s", what, strerror(errno));
    return fd;
}

static void fd_link(int fd, char *buf, size_t n)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t r = readlink(p, buf, n - 1);
    if (r < 0)
        snprintf(buf, n, "<readlink: %s>", strerror(errno));
    else
        buf[r] = 0;
}

static void check_link(int fd, const char *want)
{
    char got[PATH_MAX];
    fd_link(fd, got, sizeof got);
    WL_CHECK(strcmp(got, want) == 0, "fd %d: /proc/self/fd link expected '%s', found '%s'", fd,
             want, got);
}

static void check_link_in_dir(int fd, const char *name)
{
    char want[PATH_MAX];
    snprintf(want, sizeof want, "%s/%s", dir, name);
    check_link(fd, want);
}

static off_t cur(int fd)
{
    return lseek(fd, 0, SEEK_CUR);
}

static void check_off(int fd, off_t want, const char *what)
{
    off_t o = cur(fd);
    WL_CHECK(o == want, "%s (fd %d): offset expected %lld, found %lld%s%s", what, fd,
             (long long)want, (long long)o, o < 0 ? " - " : "", o < 0 ? strerror(errno) : "");
}

/* read exactly n bytes (EINTR tolerant) from a fd known to have the data */
static ssize_t read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return got ? (ssize_t)got : r;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* wait until fd is readable; returns 1 if readable, 0 on timeout */
static int wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        int r = poll(&p, 1, 100);
        if (r > 0)
            return 1;
    }
    return 0;
}

static int kcmp_file(pid_t p1, int fd1, pid_t p2, int fd2)
{
    return (int)syscall(SYS_kcmp, p1, p2, KCMP_FILE, fd1, fd2);
}

/* ---------------------------------------------------------- fd set check */

#define MAXFD 256
struct fdsnap {
    int n;
    int fd[MAXFD];
    int fl[MAXFD], fdfl[MAXFD];
};

static void snap_fds(struct fdsnap *s)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        wl_fail("opendir /proc/self/fd: %s", strerror(errno));
    s->n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d) || s->n >= MAXFD)
            continue;
        s->fd[s->n] = fd;
        s->fl[s->n] = fcntl(fd, F_GETFL);
        s->fdfl[s->n] = fcntl(fd, F_GETFD);
        s->n++;
    }
    closedir(d);
    /* sort */
    for (int i = 0; i < s->n; i++)
        for (int j = i + 1; j < s->n; j++)
            if (s->fd[j] < s->fd[i]) {
                int t = s->fd[i]; s->fd[i] = s->fd[j]; s->fd[j] = t;
                t = s->fl[i]; s->fl[i] = s->fl[j]; s->fl[j] = t;
                t = s->fdfl[i]; s->fdfl[i] = s->fdfl[j]; s->fdfl[j] = t;
            }
}

static void fdlist_str(const struct fdsnap *s, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < s->n && off + 8 < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%d", i ? "," : "", s->fd[i]);
}

/* returns NULL if equal, else writes a message into msg */
static const char *cmp_fds(const struct fdsnap *was, char *msg, size_t n)
{
    struct fdsnap now;
    snap_fds(&now);
    char a[300], b[300];
    if (now.n != was->n || memcmp(now.fd, was->fd, sizeof(int) * (size_t)now.n) != 0) {
        fdlist_str(was, a, sizeof a);
        fdlist_str(&now, b, sizeof b);
        snprintf(msg, n, "open fd set expected {%s}, found {%s}", a, b);
        return msg;
    }
    for (int i = 0; i < now.n; i++) {
        if (now.fl[i] != was->fl[i]) {
            snprintf(msg, n, "fd %d: F_GETFL expected %#o, found %#o", now.fd[i], was->fl[i],
                     now.fl[i]);
            return msg;
        }
        if (now.fdfl[i] != was->fdfl[i]) {
            snprintf(msg, n, "fd %d: F_GETFD expected %#x, found %#x", now.fd[i], was->fdfl[i],
                     now.fdfl[i]);
            return msg;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ child */

static int c_ctl = -1; /* child -> parent */

__attribute__((noreturn, format(printf, 1, 2))) static void cfail(const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char out[720];
    int n = snprintf(out, sizeof out, "Fchild: %s", msg);
    if (write(c_ctl, out, (size_t)n) < 0) {
        /* parent will see a missing handshake */
    }
    dprintf(2, "files child (pid %d): FAIL: %s\n", (int)getpid(), msg);
    _exit(1);
}

static void child_main(int fd_sh, int data_r)
{
    struct fdsnap fds;
    snap_fds(&fds);
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    char msg[700];
    if (cmp_fds(&fds, msg, sizeof msg))
        cfail("%s", msg);

    /* 500 bytes buffered in the parent->child pipe since setup. */
    static unsigned char buf[SZ_CHILD + 16], exp[SZ_SH];
    size_t got = 0;
    while (got < SZ_CHILD) {
        if (!wait_readable(data_r, 5000))
            cfail("pipe from parent: expected %d buffered bytes, only %zu arrived within 5 s",
                  SZ_CHILD, got);
        ssize_t r = read(data_r, buf + got, SZ_CHILD - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            cfail("pipe from parent: read returned %zd (%s) after %zu of %d bytes", r,
                  r < 0 ? strerror(errno) : "EOF", got, SZ_CHILD);
        got += (size_t)r;
    }
    if (!wl_check_pattern(buf, SZ_CHILD, SEED_CHILD))
        cfail("pipe from parent: the %d buffered bytes do not match the pattern", SZ_CHILD);

    /* Go byte from the parent (written after verify): pipe still works. */
    if (!wait_readable(data_r, 20000))
        cfail("pipe from parent: no 'G' byte within 20 s after the buffered data");
    char g = 0;
    ssize_t r;
    do
        r = read(data_r, &g, 1);
    while (r < 0 && errno == EINTR);
    if (r != 1 || g != 'G')
        cfail("pipe from parent: expected 'G', read returned %zd byte %#x", r, (unsigned char)g);

    off_t o = cur(fd_sh);
    if (o != 100)
        cfail("f_shared: offset expected 100 before the child's read, found %lld", (long long)o);
    do
        r = read(fd_sh, buf, 50);
    while (r < 0 && errno == EINTR);
    wl_fill_pattern(exp, SZ_SH, SEED_SH);
    if (r != 50 || memcmp(buf, exp + 100, 50) != 0)
        cfail("f_shared: read 50 bytes at offset 100: got %zd bytes%s", r,
              r == 50 ? " with wrong content" : "");
    if (write(c_ctl, "d", 1) != 1)
        cfail("write handshake: %s", strerror(errno));
    char want[PATH_MAX], link[PATH_MAX];
    snprintf(want, sizeof want, "%s/f_shared", dir);
    fd_link(fd_sh, link, sizeof link);
    if (strcmp(want, link) != 0)
        cfail("f_shared: link expected '%s', found '%s'", want, link);
    _exit(0);
}

/* ----------------------------------------------------------------- parent */

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    dir = wl_ctl_dir();
    signal(SIGPIPE, SIG_IGN);
    static unsigned char buf[SZ_DEL + 64], exp[SZ_DEL + 64];

    /* Shared file + pipes for the child, then fork before anything else
     * is opened so the child holds only what it needs. */
    int fd_sh = xopen("f_shared", O_RDWR | O_CREAT | O_TRUNC, "f_shared");
    wl_fill_pattern(buf, SZ_SH, SEED_SH);
    xwrite(fd_sh, buf, SZ_SH, "f_shared");
    lseek(fd_sh, 100, SEEK_SET);
    int pc[2], cp[2];
    if (pipe(pc) < 0 || pipe(cp) < 0)
        wl_fail("setup: pipe: %s", strerror(errno));
    wl_fill_pattern(buf, SZ_CHILD, SEED_CHILD);
    xwrite(pc[1], buf, SZ_CHILD, "pipe to child");
    pid_t child = fork();
    if (child < 0)
        wl_fail("setup: fork: %s", strerror(errno));
    if (child == 0) {
        close(pc[1]);
        close(cp[0]);
        c_ctl = cp[1];
        child_main(fd_sh, pc[0]);
    }
    close(pc[0]);
    close(cp[1]);
    int data_w = pc[1], ctl_r = cp[0];

    /* f_rw: O_RDWR, offset 1234 */
    int fd_rw = xopen("f_rw", O_RDWR | O_CREAT | O_TRUNC, "f_rw");
    wl_fill_pattern(buf, SZ_RW, SEED_RW);
    xwrite(fd_rw, buf, SZ_RW, "f_rw");
    lseek(fd_rw, 1234, SEEK_SET);

    /* f_app: O_WRONLY|O_APPEND, offset moved back to 2 */
    int fd_app = xopen("f_app", O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, "f_app");
    xwrite(fd_app, "hello\n", 6, "f_app");
    lseek(fd_app, 2, SEEK_SET);

    /* cloexec / no cloexec */
    int fd_cx = xopen("f_rw", O_RDONLY | O_CLOEXEC, "f_rw cloexec");
    lseek(fd_cx, 100, SEEK_SET);
    int fd_ncx = xopen("f_rw", O_RDONLY, "f_rw no cloexec");
    lseek(fd_ncx, 200, SEEK_SET);

    /* deleted-but-open */
    int fd_del = xopen("f_del", O_RDWR | O_CREAT | O_TRUNC, "f_del");
    wl_fill_pattern(buf, SZ_DEL, SEED_DEL);
    xwrite(fd_del, buf, SZ_DEL, "f_del");
    if (unlink("f_del") < 0)
        wl_fail("setup: unlink f_del: %s", strerror(errno));
    lseek(fd_del, 5000, SEEK_SET);

    /* dup'd trio */
    int fd_d1 = xopen("f_dup", O_RDWR | O_CREAT | O_TRUNC, "f_dup");
    wl_fill_pattern(buf, SZ_DUP, SEED_DUP);
    xwrite(fd_d1, buf, SZ_DUP, "f_dup");
    lseek(fd_d1, 777, SEEK_SET);
    int fd_d2 = dup(fd_d1);
    int fd_d3 = fcntl(fd_d1, F_DUPFD_CLOEXEC, 50);
    if (fd_d2 < 0 || fd_d3 < 50)
        wl_fail("setup: dup: %s", strerror(errno));

    /* devices */
    int fd_null = xopen("/dev/null", O_WRONLY, "/dev/null");
    int fd_zero = xopen("/dev/zero", O_RDONLY, "/dev/zero");
    int fd_urand = xopen("/dev/urandom", O_RDONLY, "/dev/urandom");

    /* FIFO with 3 bytes buffered */
    unlink("fifo");
    if (mkfifo("fifo", 0600) < 0)
        wl_fail("setup: mkfifo: %s", strerror(errno));
    int fifo_r = xopen("fifo", O_RDONLY | O_NONBLOCK, "fifo read end");
    int fifo_w = xopen("fifo", O_WRONLY, "fifo write end");
    xwrite(fifo_w, "abc", 3, "fifo");

    /* self pipe with 10 000 bytes */
    int ps[2];
    if (pipe(ps) < 0)
        wl_fail("setup: pipe: %s", strerror(errno));
    if (fcntl(ps[1], F_SETPIPE_SZ, PIPE_SZ) < 0)
        wl_fail("setup: F_SETPIPE_SZ: %s", strerror(errno));
    wl_fill_pattern(buf, SZ_SELF, SEED_SELF);
    xwrite(ps[1], buf, SZ_SELF, "self pipe");

    /* high fd */
    int fh = xopen("f_high", O_RDWR | O_CREAT | O_TRUNC, "f_high");
    xwrite(fh, "high-fd-data\n", 13, "f_high");
    if (dup2(fh, HIGH_FD) != HIGH_FD)
        wl_fail("setup: dup2: %s", strerror(errno));
    close(fh);
    lseek(HIGH_FD, 5, SEEK_SET);

    struct fdsnap fds;
    snap_fds(&fds);
    int fl_rw = fcntl(fd_rw, F_GETFL);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    char msg[700];
    if (cmp_fds(&fds, msg, sizeof msg))
        wl_fail("parent: %s", msg);
    int have_kcmp = kcmp_file(getpid(), fd_rw, getpid(), fd_rw) == 0;
    if (!have_kcmp)
        dprintf(2, "files: kcmp unavailable (%s), skipping kcmp checks\n", strerror(errno));

    /* f_rw */
    WL_CHECK((fl_rw & O_ACCMODE) == O_RDWR && !(fl_rw & (O_APPEND | O_NONBLOCK)),
             "f_rw: F_GETFL %#o at setup: expected O_RDWR without O_APPEND/O_NONBLOCK", fl_rw);
    WL_CHECK(fcntl(fd_rw, F_GETFD) == 0, "f_rw: F_GETFD expected 0, found %d",
             fcntl(fd_rw, F_GETFD));
    check_link_in_dir(fd_rw, "f_rw");
    check_off(fd_rw, 1234, "f_rw");
    struct stat st;
    fstat(fd_rw, &st);
    WL_CHECK(S_ISREG(st.st_mode) && st.st_size == SZ_RW, "f_rw: expected regular file of %d bytes, "
             "found mode %#o size %lld", SZ_RW, st.st_mode, (long long)st.st_size);
    wl_fill_pattern(exp, SZ_RW, SEED_RW);
    WL_CHECK(read_full(fd_rw, buf, 10) == 10 && memcmp(buf, exp + 1234, 10) == 0,
             "f_rw: 10 bytes read at offset 1234 do not match the written data");
    check_off(fd_rw, 1244, "f_rw after read");
    WL_CHECK(pread(fd_rw, buf, SZ_RW, 0) == SZ_RW && memcmp(buf, exp, SZ_RW) == 0,
             "f_rw: content does not match the written pattern");

    /* f_app */
    {
        int fl = fcntl(fd_app, F_GETFL);
        WL_CHECK((fl & O_ACCMODE) == O_WRONLY && (fl & O_APPEND),
                 "f_app: F_GETFL expected O_WRONLY|O_APPEND, found %#o", fl);
        check_link_in_dir(fd_app, "f_app");
        check_off(fd_app, 2, "f_app");
        ssize_t w;
        do
            w = write(fd_app, "world\n", 6);
        while (w < 0 && errno == EINTR);
        WL_CHECK(w == 6, "f_app: write returned %zd (%s)", w, w < 0 ? strerror(errno) : "short");
        check_off(fd_app, 12, "f_app after O_APPEND write");
        int f = open("f_app", O_RDONLY);
        ssize_t r = read_full(f, buf, 64);
        close(f);
        WL_CHECK(r == 12 && memcmp(buf, "hello\nworld\n", 12) == 0,
                 "f_app: expected content 'hello\\nworld\\n' (12 bytes), found %zd bytes '%.*s'", r,
                 (int)(r > 0 ? r : 0), buf);
    }

    /* cloexec pair */
    WL_CHECK(fcntl(fd_cx, F_GETFD) == FD_CLOEXEC, "fd %d (O_CLOEXEC): F_GETFD expected %d, found %d",
             fd_cx, FD_CLOEXEC, fcntl(fd_cx, F_GETFD));
    WL_CHECK(fcntl(fd_ncx, F_GETFD) == 0, "fd %d (no cloexec): F_GETFD expected 0, found %d",
             fd_ncx, fcntl(fd_ncx, F_GETFD));
    WL_CHECK((fcntl(fd_cx, F_GETFL) & O_ACCMODE) == O_RDONLY &&
                 (fcntl(fd_ncx, F_GETFL) & O_ACCMODE) == O_RDONLY,
             "f_rw read-only fds: expected O_RDONLY, found %#o / %#o", fcntl(fd_cx, F_GETFL),
             fcntl(fd_ncx, F_GETFL));
    check_link_in_dir(fd_cx, "f_rw");
    check_link_in_dir(fd_ncx, "f_rw");
    check_off(fd_cx, 100, "f_rw cloexec");
    check_off(fd_ncx, 200, "f_rw no-cloexec");
    if (have_kcmp) {
        WL_CHECK(kcmp_file(getpid(), fd_cx, getpid(), fd_ncx) != 0 &&
                     kcmp_file(getpid(), fd_cx, getpid(), fd_rw) != 0,
                 "fds %d, %d, %d were opened separately but share an open file description", fd_rw,
                 fd_cx, fd_ncx);
    }

    /* deleted-but-open */
    {
        char want[PATH_MAX];
        snprintf(want, sizeof want, "%s/f_del (deleted)", dir);
        check_link(fd_del, want);
        fstat(fd_del, &st);
        WL_CHECK(st.st_nlink == 0 && st.st_size == SZ_DEL,
                 "f_del: expected nlink 0 size %d, found nlink %lu size %lld", SZ_DEL,
                 (unsigned long)st.st_nlink, (long long)st.st_size);
        WL_CHECK(access("f_del", F_OK) < 0 && errno == ENOENT,
                 "f_del: the name must not exist any more (access: %s)",
                 access("f_del", F_OK) == 0 ? "exists" : strerror(errno));
        check_off(fd_del, 5000, "f_del");
        WL_CHECK(pread(fd_del, buf, SZ_DEL, 0) == SZ_DEL && wl_check_pattern(buf, SZ_DEL, SEED_DEL),
                 "f_del: the %d bytes of the deleted file do not match the pattern", SZ_DEL);
        WL_CHECK(pwrite(fd_del, "tail", 4, SZ_DEL) == 4, "f_del: pwrite failed: %s",
                 strerror(errno));
        fstat(fd_del, &st);
        WL_CHECK(st.st_size == SZ_DEL + 4, "f_del: size after pwrite expected %d, found %lld",
                 SZ_DEL + 4, (long long)st.st_size);
        WL_CHECK((fcntl(fd_del, F_GETFL) & O_ACCMODE) == O_RDWR, "f_del: expected O_RDWR, found %#o",
                 fcntl(fd_del, F_GETFL));
    }

    /* dup trio */
    check_off(fd_d1, 777, "f_dup fd");
    check_off(fd_d2, 777, "f_dup dup()");
    check_off(fd_d3, 777, "f_dup F_DUPFD_CLOEXEC");
    WL_CHECK(fcntl(fd_d1, F_GETFD) == 0 && fcntl(fd_d2, F_GETFD) == 0 &&
                 fcntl(fd_d3, F_GETFD) == FD_CLOEXEC,
             "f_dup: F_GETFD expected 0/0/%d for fds %d/%d/%d, found %d/%d/%d", FD_CLOEXEC, fd_d1,
             fd_d2, fd_d3, fcntl(fd_d1, F_GETFD), fcntl(fd_d2, F_GETFD), fcntl(fd_d3, F_GETFD));
    lseek(fd_d1, 3000, SEEK_SET);
    check_off(fd_d2, 3000, "f_dup dup() after lseek on the original (shared offset)");
    check_off(fd_d3, 3000, "f_dup F_DUPFD_CLOEXEC after lseek on the original (shared offset)");
    lseek(fd_d3, 10, SEEK_CUR);
    check_off(fd_d1, 3010, "f_dup original after lseek on the dup (shared offset)");
    if (have_kcmp)
        WL_CHECK(kcmp_file(getpid(), fd_d1, getpid(), fd_d2) == 0 &&
                     kcmp_file(getpid(), fd_d1, getpid(), fd_d3) == 0,
                 "f_dup: fds %d, %d, %d must share one open file description (kcmp)", fd_d1, fd_d2,
                 fd_d3);
    wl_fill_pattern(exp, SZ_DUP, SEED_DUP);
    WL_CHECK(read_full(fd_d2, buf, 16) == 16 && memcmp(buf, exp + 3010, 16) == 0,
             "f_dup: data at offset 3010 does not match");
    check_off(fd_d1, 3026, "f_dup original after read on the dup");

    /* devices */
    {
        struct {
            int fd;
            const char *path;
            int acc;
            unsigned mn;
        } dv[] = {{fd_null, "/dev/null", O_WRONLY, 3},
                  {fd_zero, "/dev/zero", O_RDONLY, 5},
                  {fd_urand, "/dev/urandom", O_RDONLY, 9}};
        for (int i = 0; i < 3; i++) {
            check_link(dv[i].fd, dv[i].path);
            fstat(dv[i].fd, &st);
            WL_CHECK(S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == dv[i].mn,
                     "%s: expected char device 1:%u, found mode %#o rdev %u:%u", dv[i].path,
                     dv[i].mn, st.st_mode, major(st.st_rdev), minor(st.st_rdev));
            WL_CHECK((fcntl(dv[i].fd, F_GETFL) & O_ACCMODE) == dv[i].acc,
                     "%s: access mode expected %d, found %#o", dv[i].path, dv[i].acc,
                     fcntl(dv[i].fd, F_GETFL));
        }
        WL_CHECK(write(fd_null, "12345", 5) == 5, "/dev/null: write failed: %s", strerror(errno));
        memset(buf, 0xff, 4096);
        WL_CHECK(read_full(fd_zero, buf, 4096) == 4096, "/dev/zero: read failed: %s",
                 strerror(errno));
        for (int i = 0; i < 4096; i++)
            WL_CHECK(buf[i] == 0, "/dev/zero: byte %d is %#x, expected 0", i, buf[i]);
        memset(buf, 0, 64);
        WL_CHECK(read_full(fd_urand, buf, 64) == 64, "/dev/urandom: read failed: %s",
                 strerror(errno));
        int nz = 0;
        for (int i = 0; i < 64; i++)
            nz += buf[i] != 0;
        WL_CHECK(nz > 0, "/dev/urandom: 64 bytes read, all zero");
    }

    /* FIFO */
    {
        check_link_in_dir(fifo_r, "fifo");
        check_link_in_dir(fifo_w, "fifo");
        fstat(fifo_r, &st);
        WL_CHECK(S_ISFIFO(st.st_mode), "fifo read end: expected a FIFO, found mode %#o",
                 st.st_mode);
        int fl = fcntl(fifo_r, F_GETFL);
        WL_CHECK((fl & O_ACCMODE) == O_RDONLY && (fl & O_NONBLOCK),
                 "fifo read end: F_GETFL expected O_RDONLY|O_NONBLOCK, found %#o", fl);
        fl = fcntl(fifo_w, F_GETFL);
        WL_CHECK((fl & O_ACCMODE) == O_WRONLY && !(fl & O_NONBLOCK),
                 "fifo write end: F_GETFL expected O_WRONLY without O_NONBLOCK, found %#o", fl);
        int n = -1;
        ioctl(fifo_r, FIONREAD, &n);
        WL_CHECK(n == 3, "fifo: expected 3 bytes buffered (FIONREAD), found %d", n);
        ssize_t r = read(fifo_r, buf, 64);
        WL_CHECK(r == 3 && memcmp(buf, "abc", 3) == 0,
                 "fifo: expected to read 'abc', read returned %zd '%.*s'", r,
                 (int)(r > 0 ? r : 0), buf);
        r = read(fifo_r, buf, 64);
        WL_CHECK(r < 0 && errno == EAGAIN,
                 "fifo: empty non-blocking read expected EAGAIN, found %zd (%s)", r,
                 r < 0 ? strerror(errno) : "data");
        WL_CHECK(write(fifo_w, "xyz", 3) == 3, "fifo: write failed: %s", strerror(errno));
        r = read(fifo_r, buf, 64);
        WL_CHECK(r == 3 && memcmp(buf, "xyz", 3) == 0,
                 "fifo: after writing 'xyz' read returned %zd '%.*s'", r, (int)(r > 0 ? r : 0), buf);
    }

    /* self pipe */
    {
        char l0[64], l1[64];
        fd_link(ps[0], l0, sizeof l0);
        fd_link(ps[1], l1, sizeof l1);
        WL_CHECK(strncmp(l0, "pipe:[", 6) == 0 && strcmp(l0, l1) == 0,
                 "self pipe: both ends must be the same pipe, found '%s' and '%s'", l0, l1);
        WL_CHECK((fcntl(ps[0], F_GETFL) & O_ACCMODE) == O_RDONLY &&
                     (fcntl(ps[1], F_GETFL) & O_ACCMODE) == O_WRONLY,
                 "self pipe: access modes %#o / %#o", fcntl(ps[0], F_GETFL), fcntl(ps[1], F_GETFL));
        int sz = fcntl(ps[0], F_GETPIPE_SZ);
        WL_CHECK(sz == PIPE_SZ, "self pipe: F_GETPIPE_SZ expected %d, found %d", PIPE_SZ, sz);
        int n = -1;
        ioctl(ps[0], FIONREAD, &n);
        WL_CHECK(n == SZ_SELF, "self pipe: expected %d bytes buffered (FIONREAD), found %d",
                 SZ_SELF, n);
        WL_CHECK(read_full(ps[0], buf, SZ_SELF) == SZ_SELF, "self pipe: read failed");
        WL_CHECK(wl_check_pattern(buf, SZ_SELF, SEED_SELF),
                 "self pipe: the %d buffered bytes do not match the pattern", SZ_SELF);
        n = -1;
        ioctl(ps[0], FIONREAD, &n);
        WL_CHECK(n == 0, "self pipe: expected empty after reading, FIONREAD %d", n);
        wl_fill_pattern(exp, 100, 1234);
        WL_CHECK(write(ps[1], exp, 100) == 100, "self pipe: write failed: %s", strerror(errno));
        WL_CHECK(read_full(ps[0], buf, 100) == 100 && memcmp(buf, exp, 100) == 0,
                 "self pipe: data written after restore did not come back");
    }

    /* high fd */
    check_link_in_dir(HIGH_FD, "f_high");
    check_off(HIGH_FD, 5, "fd 100");
    {
        ssize_t r = read_full(HIGH_FD, buf, 64);
        WL_CHECK(r == 8 && memcmp(buf, "fd-data\n", 8) == 0,
                 "fd 100: expected to read 'fd-data\\n', got %zd bytes '%.*s'", r,
                 (int)(r > 0 ? r : 0), buf);
    }

    /* shared with the child */
    {
        check_link_in_dir(fd_sh, "f_shared");
        check_off(fd_sh, 100, "f_shared (parent, before the child reads)");
        if (have_kcmp)
            WL_CHECK(kcmp_file(getpid(), fd_sh, child, fd_sh) == 0,
                     "f_shared: parent fd %d and child fd %d must share one open file description "
                     "(kcmp)",
                     fd_sh, fd_sh);
        char l0[64], l1[64];
        fd_link(data_w, l0, sizeof l0);
        fd_link(ctl_r, l1, sizeof l1);
        WL_CHECK(strncmp(l0, "pipe:[", 6) == 0 && strncmp(l1, "pipe:[", 6) == 0 &&
                     strcmp(l0, l1) != 0,
                 "child pipes: expected two different pipes, found '%s' and '%s'", l0, l1);
        ssize_t w;
        do
            w = write(data_w, "G", 1);
        while (w < 0 && errno == EINTR);
        WL_CHECK(w == 1, "pipe to child: writing 'G' failed: %s", strerror(errno));

        static char cmsg[800];
        size_t clen = 0;
        int eof = 0;
        while (clen < sizeof cmsg - 1 && !eof) {
            if (!wait_readable(ctl_r, 30000))
                break;
            ssize_t r = read(ctl_r, cmsg + clen, sizeof cmsg - 1 - clen);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                eof = 1;
            else
                clen += (size_t)r;
        }
        cmsg[clen] = 0;
        int status = -1;
        pid_t wp;
        do
            wp = waitpid(child, &status, 0);
        while (wp < 0 && errno == EINTR);
        if (clen > 0 && cmsg[0] == 'F')
            wl_fail("%s", cmsg + 1);
        if (clen > 1 && cmsg[1] == 'F')
            wl_fail("%s", cmsg + 2);
        WL_CHECK(clen >= 1 && cmsg[0] == 'd',
                 "handshake from child: expected 'd', got %zu bytes '%s' (eof %d)", clen, cmsg, eof);
        WL_CHECK(wp == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                 "child %d: expected exit status 0, waitpid %d status %#x", (int)child, (int)wp,
                 status);
        check_off(fd_sh, 150, "f_shared (parent, after the child read 50 bytes)");
    }
    wl_report(1, "ok");
}
