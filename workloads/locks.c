/*
 * locks.c - file locks of every kind, with their owners, across
 * checkpoint/restore.
 *
 * Kernel state tested (files in CTL_DIR):
 *  - posix.dat: POSIX record locks of the root (write on bytes 10..19, read
 *    on 50..EOF) and of a child H (write on 0..4) through the one description
 *    they share (fork);
 *  - flock.dat: flock LOCK_EX on a description shared with child H (fork:
 *    the lock is the description's);
 *  - flock_sh.dat: flock LOCK_SH;
 *  - ofd.dat: open file description locks (write 3..6, read 20..EOF);
 *  - lease.dat: a read lease (F_SETLEASE F_RDLCK), F_SETSIG SIGRTMIN+1, a
 *    SA_SIGINFO handler; wlease.dat: a write lease (F_WRLCK), F_SETSIG
 *    SIGRTMIN+4;
 *  - three waiters: child W1 blocked in F_SETLKW on posix.dat 10..19, child W2
 *    blocked in flock(LOCK_EX) on its own description of flock.dat, child W3
 *    blocked in F_OFD_SETLKW on its own description of ofd.dat 3..6.
 * Verify: a fresh checker process finds each lock with F_GETLK (type and
 * owner pid), F_OFD_GETLK (type, pid -1) and flock(LOCK_NB) (EWOULDBLOCK
 * where held, success where shared); F_GETLEASE is F_RDLCK; the checker's
 * O_WRONLY|O_NONBLOCK open of lease.dat fails with EWOULDBLOCK and the root
 * gets SIGRTMIN+1 with si_fd = the lease fd; the waiters still wait, then get
 * their locks once the root releases them (POSIX unlock, flock LOCK_UN).
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t lease_sig_fd = -1, wlease_sig_fd = -1;

static void on_lease(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (sig == SIGRTMIN + 1)
        lease_sig_fd = si->si_fd;
    else
        wlease_sig_fd = si->si_fd;
}

static int make_file(const char *name, int flags)
{
    int fd = open(name, O_CREAT | O_TRUNC | O_RDWR, 0644);
    if (fd < 0 || ftruncate(fd, 100) < 0)
        wl_fail("create %s: %s", name, strerror(errno));
    close(fd);
    fd = open(name, flags);
    if (fd < 0)
        wl_fail("open %s: %s", name, strerror(errno));
    return fd;
}

static int posix_lock(int fd, int cmd, short type, off_t start, off_t len)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    return fcntl(fd, cmd, &fl);
}

/* Type and pid of the lock that would block a write (or read) lock on the range. */
static void getlk(int fd, int cmd, short want, off_t start, off_t len, short *type, pid_t *pid)
{
    struct flock fl = {.l_type = want, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, cmd, &fl) < 0)
        wl_fail("F_GETLK: %s", strerror(errno));
    *type = fl.l_type;
    *pid = fl.l_pid;
}

static pid_t waiter(int report, char kind)
{
    pid_t pid = fork();
    if (pid < 0)
        wl_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        int r;
        char c = kind;
        if (kind == 'P') {
            int fd = open("posix.dat", O_RDWR);
            r = posix_lock(fd, F_SETLKW, F_WRLCK, 10, 10);
        } else if (kind == 'O') {
            int fd = open("ofd.dat", O_RDWR);
            r = posix_lock(fd, F_OFD_SETLKW, F_WRLCK, 3, 4);
        } else {
            int fd = open("flock.dat", O_RDWR);
            r = flock(fd, LOCK_EX);
        }
        if (r < 0)
            c = 'E';
        if (write(report, &c, 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    return pid;
}

/* The checker: a fresh process asking the kernel about every lock. Returns
 * through its exit status; its message goes to stderr. */
static int check_locks(pid_t root, pid_t holder)
{
    short t;
    pid_t p;
    int fd = open("posix.dat", O_RDWR);
    getlk(fd, F_GETLK, F_WRLCK, 10, 10, &t, &p);
    if (t != F_WRLCK || p != root)
        return dprintf(2, "posix.dat 10..19: expected a write lock of %d, found type %d pid %d\n",
                       root, t, p), 1;
    getlk(fd, F_GETLK, F_RDLCK, 60, 1, &t, &p);
    if (t != F_UNLCK)
        return dprintf(2, "posix.dat 60: a read lock must not conflict, found type %d\n", t), 1;
    getlk(fd, F_GETLK, F_WRLCK, 60, 1, &t, &p);
    if (t != F_RDLCK || p != root)
        return dprintf(2, "posix.dat 50..EOF: expected a read lock of %d, found %d pid %d\n",
                       root, t, p), 1;
    getlk(fd, F_GETLK, F_WRLCK, 0, 5, &t, &p);
    if (t != F_WRLCK || p != holder)
        return dprintf(2, "posix.dat 0..4: expected a write lock of child %d, found %d pid %d\n",
                       holder, t, p), 1;
    getlk(fd, F_GETLK, F_WRLCK, 30, 10, &t, &p);
    if (t != F_UNLCK)
        return dprintf(2, "posix.dat 30..39: expected no lock, found type %d pid %d\n", t, p), 1;
    int ffd = open("flock.dat", O_RDWR);
    if (flock(ffd, LOCK_SH | LOCK_NB) == 0 || errno != EWOULDBLOCK)
        return dprintf(2, "flock.dat: expected an exclusive flock held\n"), 1;
    int sfd = open("flock_sh.dat", O_RDWR);
    if (flock(sfd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
        return dprintf(2, "flock_sh.dat: expected a shared flock held (LOCK_EX granted)\n"), 1;
    if (flock(sfd, LOCK_SH | LOCK_NB) != 0)
        return dprintf(2, "flock_sh.dat: a second shared flock refused: %s\n", strerror(errno)), 1;
    int ofd = open("ofd.dat", O_RDWR);
    getlk(ofd, F_OFD_GETLK, F_RDLCK, 3, 4, &t, &p);
    if (t != F_WRLCK || p != -1)
        return dprintf(2, "ofd.dat 3..6: expected an OFD write lock, found %d pid %d\n", t, p), 1;
    getlk(ofd, F_OFD_GETLK, F_WRLCK, 25, 1, &t, &p);
    if (t != F_RDLCK || p != -1)
        return dprintf(2, "ofd.dat 20..EOF: expected an OFD read lock, found %d pid %d\n", t, p), 1;
    getlk(ofd, F_OFD_GETLK, F_WRLCK, 10, 5, &t, &p);
    if (t != F_UNLCK)
        return dprintf(2, "ofd.dat 10..14: expected no lock, found %d\n", t), 1;
    int lfd = open("lease.dat", O_WRONLY | O_NONBLOCK);
    if (lfd >= 0 || errno != EWOULDBLOCK)
        return dprintf(2, "lease.dat: opening for write expected EWOULDBLOCK (read lease), "
                          "got fd %d errno %d\n", lfd, errno), 1;
    lfd = open("wlease.dat", O_RDONLY | O_NONBLOCK);
    if (lfd >= 0 || errno != EWOULDBLOCK)
        return dprintf(2, "wlease.dat: opening for read expected EWOULDBLOCK (write lease), "
                          "got fd %d errno %d\n", lfd, errno), 1;
    return 0;
}

static int read_report(int fd, int ms, char *c)
{
    for (int i = 0; i < ms / 10; i++) {
        if (read(fd, c, 1) == 1)
            return 1;
        wl_sleep_ms(10);
    }
    return 0;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    struct sigaction sa = {.sa_sigaction = on_lease, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigaction(SIGRTMIN + 1, &sa, NULL);
    sigaction(SIGRTMIN + 4, &sa, NULL);

    int pfd = make_file("posix.dat", O_RDWR);
    int ffd = make_file("flock.dat", O_RDWR);
    int sfd = make_file("flock_sh.dat", O_RDWR);
    int ofd = make_file("ofd.dat", O_RDWR);
    int lfd = make_file("lease.dat", O_RDONLY);
    int wlfd = make_file("wlease.dat", O_RDWR);
    if (posix_lock(pfd, F_SETLK, F_WRLCK, 10, 10) < 0 || posix_lock(pfd, F_SETLK, F_RDLCK, 50, 0) < 0)
        wl_fail("posix locks: %s", strerror(errno));
    if (flock(ffd, LOCK_EX | LOCK_NB) < 0 || flock(sfd, LOCK_SH | LOCK_NB) < 0)
        wl_fail("flock: %s", strerror(errno));
    if (posix_lock(ofd, F_OFD_SETLK, F_WRLCK, 3, 4) < 0 || posix_lock(ofd, F_OFD_SETLK, F_RDLCK, 20, 0) < 0)
        wl_fail("OFD locks: %s", strerror(errno));
    if (fcntl(lfd, F_SETSIG, SIGRTMIN + 1) < 0 || fcntl(lfd, F_SETLEASE, F_RDLCK) < 0)
        wl_fail("lease: %s", strerror(errno));
    if (fcntl(wlfd, F_SETSIG, SIGRTMIN + 4) < 0 || fcntl(wlfd, F_SETLEASE, F_WRLCK) < 0)
        wl_fail("write lease: %s", strerror(errno));

    int hp[2];
    if (pipe(hp) < 0)
        wl_fail("pipe");
    pid_t holder = fork();
    if (holder == 0) {
        char c = posix_lock(pfd, F_SETLK, F_WRLCK, 0, 5) == 0 ? 'H' : 'E';
        if (write(hp[1], &c, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    char c = 0;
    if (read(hp[0], &c, 1) != 1 || c != 'H')
        wl_fail("holder child could not lock posix.dat 0..4");
    int wp[2];
    if (pipe2(wp, O_NONBLOCK) < 0)
        wl_fail("pipe");
    pid_t w1 = waiter(wp[1], 'P');
    pid_t w2 = waiter(wp[1], 'F');
    pid_t w3 = waiter(wp[1], 'O');
    wl_sleep_ms(200);
    if (read(wp[0], &c, 1) == 1)
        wl_fail("a waiter got its lock at setup (%c)", c);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    int ok = 1;
    char msg[256] = "";
    if (fcntl(lfd, F_GETLEASE) != F_RDLCK)
        snprintf(msg, sizeof msg, "F_GETLEASE: expected F_RDLCK, found %d", fcntl(lfd, F_GETLEASE)), ok = 0;
    if (ok && fcntl(wlfd, F_GETLEASE) != F_WRLCK)
        snprintf(msg, sizeof msg, "write lease: expected F_WRLCK, found %d", fcntl(wlfd, F_GETLEASE)), ok = 0;
    if (ok && fcntl(lfd, F_GETSIG) != SIGRTMIN + 1)
        snprintf(msg, sizeof msg, "F_GETSIG: expected %d, found %d", SIGRTMIN + 1, fcntl(lfd, F_GETSIG)), ok = 0;
    if (ok && fcntl(lfd, F_GETOWN) != getpid())
        snprintf(msg, sizeof msg, "lease owner: expected %d, found %d", getpid(), fcntl(lfd, F_GETOWN)), ok = 0;
    if (ok && read(wp[0], &c, 1) == 1)
        snprintf(msg, sizeof msg, "a waiter got its lock before release (%c)", c), ok = 0;
    if (ok) {
        pid_t chk = fork();
        if (chk == 0)
            _exit(check_locks(getppid(), holder));
        int st;
        waitpid(chk, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            snprintf(msg, sizeof msg, "lock check failed (see out.log), status %#x", st), ok = 0;
    }
    for (int i = 0; ok && i < 300 && lease_sig_fd < 0; i++)
        wl_sleep_ms(10);
    if (ok && lease_sig_fd != lfd)
        snprintf(msg, sizeof msg, "lease break signal: expected si_fd %d, got %d", lfd, (int)lease_sig_fd), ok = 0;
    for (int i = 0; ok && i < 300 && wlease_sig_fd < 0; i++)
        wl_sleep_ms(10);
    if (ok && wlease_sig_fd != wlfd)
        snprintf(msg, sizeof msg, "write lease break signal: expected si_fd %d, got %d", wlfd, (int)wlease_sig_fd), ok = 0;
    fcntl(lfd, F_SETLEASE, F_UNLCK);
    fcntl(wlfd, F_SETLEASE, F_UNLCK);
    if (ok) {
        posix_lock(pfd, F_SETLK, F_UNLCK, 10, 10);
        flock(ffd, LOCK_UN);
        posix_lock(ofd, F_OFD_SETLK, F_UNLCK, 3, 4);
        char got[4] = {0, 0, 0, 0};
        int n = 0;
        for (; n < 3 && read_report(wp[0], 3000, &got[n]); n++)
            ;
        if (n != 3 || !strchr(got, 'P') || !strchr(got, 'F') || !strchr(got, 'O'))
            snprintf(msg, sizeof msg, "waiters after release: expected P, F and O, got %d: %.3s", n, got), ok = 0;
    }
    kill(holder, SIGKILL);
    kill(w1, SIGKILL);
    kill(w2, SIGKILL);
    kill(w3, SIGKILL);
    waitpid(holder, NULL, 0);
    waitpid(w1, NULL, 0);
    waitpid(w2, NULL, 0);
    waitpid(w3, NULL, 0);
    if (!ok)
        wl_fail("%s", msg);
    wl_report(1, "ok");
}
