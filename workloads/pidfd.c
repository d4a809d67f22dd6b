/*
 * pidfd.c - pidfds held by the tree, of live tasks and of tasks that exited.
 *
 * The root holds pidfds of:
 *   self     itself
 *   live     a running child (twice: blocking and PIDFD_NONBLOCK)
 *   thread   its second thread (PIDFD_THREAD)
 *   gone     a third thread that has exited (PIDFD_THREAD)
 *   zombie   a child that exited 5 and is not reaped (opened while it ran)
 *   exited   a child that exited 17, reaped
 *   killed   a child killed by SIGUSR1, reaped
 * and the live child holds a pidfd of the root.
 * Verify: fdinfo Pid (the task, or -1 once reaped), file flags (O_NONBLOCK, O_EXCL for
 * PIDFD_THREAD), poll (readable once the process exited), waitid(P_PIDFD) (ECHILD for a reaped
 * one), PIDFD_GET_INFO's exit status of the reaped ones, pidfd_send_signal(0) (ESRCH when
 * reaped). Then the pidfds are used: a signal through the thread pidfd runs in that thread, the
 * live child checks its pidfd of the root, is SIGKILLed through its pidfd and reaped with
 * waitid(P_PIDFD), and the zombie is reaped through its pidfd with its status.
 *
 * `pidfd CTL outside`: holds only a pidfd of its parent, outside the tree (its number in
 * CTL_DIR/fd): checkpoint must refuse; verify checks the pidfd still names the parent.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#define PIDFD_GET_INFO 0xC040FF0BUL
#define PIDFD_INFO_EXIT (1ULL << 3)

struct pidfd_info_v0 {
    uint64_t mask, cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    int32_t exit_code;
};

static int pidfd_open(pid_t pid, unsigned flags)
{
    return (int)syscall(SYS_pidfd_open, pid, flags);
}

static int pidfd_signal(int fd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}

static long fdinfo_pid(int fd)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    long v = -99;
    if (!f)
        return v;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Pid: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

static int readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static pid_t t2_tid;
static volatile pid_t usr2_tid;
static volatile int t2_stop;

static void on_usr2(int sig)
{
    (void)sig;
    usr2_tid = (pid_t)syscall(SYS_gettid);
}

static void *t2_main(void *arg)
{
    (void)arg;
    t2_tid = (pid_t)syscall(SYS_gettid);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_UNBLOCK, &s, NULL);
    while (!t2_stop)
        wl_sleep_ms(10);
    return NULL;
}

static volatile pid_t t3_tid;
static volatile int t3_stop;

static void *t3_main(void *arg)
{
    (void)arg;
    t3_tid = (pid_t)syscall(SYS_gettid);
    while (!t3_stop)
        wl_sleep_ms(1);
    return NULL;
}

static pid_t spawn_exit(int code, int sig)
{
    pid_t p = fork();
    if (p < 0)
        wl_fail("fork: %s", strerror(errno));
    if (p == 0) {
        if (sig) {
            signal(sig, SIG_DFL);
            kill(getpid(), sig);
        }
        _exit(code);
    }
    return p;
}

static void live_child(int go, int res, pid_t parent)
{
    int pfd = pidfd_open(parent, 0);
    if (pfd < 0)
        _exit(2);
    char c;
    if (write(res, "r", 1) != 1)
        _exit(2);
    while (read(go, &c, 1) < 0 && errno == EINTR)
        ;
    char ok = (fdinfo_pid(pfd) == getppid() && !readable(pfd) && pidfd_signal(pfd, 0) == 0)
                  ? 'P'
                  : 'F';
    if (write(res, &ok, 1) != 1)
        _exit(2);
    for (;;)
        pause();
}

static void check_exited(const char *what, int fd, int status)
{
    WL_CHECK(fdinfo_pid(fd) == -1, "%s: fdinfo Pid %ld, want -1", what, fdinfo_pid(fd));
    WL_CHECK(readable(fd), "%s: not readable", what);
    siginfo_t si;
    errno = 0;
    WL_CHECK(waitid(P_PIDFD, fd, &si, WEXITED | WNOHANG) == -1 && errno == ECHILD,
             "%s: waitid gave errno %d, want ECHILD", what, errno);
    errno = 0;
    WL_CHECK(pidfd_signal(fd, 0) == -1 && errno == ESRCH, "%s: signal 0 gave errno %d", what,
             errno);
    struct pidfd_info_v0 info;
    memset(&info, 0, sizeof info);
    info.mask = PIDFD_INFO_EXIT;
    WL_CHECK(ioctl(fd, PIDFD_GET_INFO, &info) == 0, "%s: PIDFD_GET_INFO: %s", what,
             strerror(errno));
    WL_CHECK((info.mask & PIDFD_INFO_EXIT) && info.exit_code == status,
             "%s: exit info mask %#llx code %#x, want %#x", what, (unsigned long long)info.mask,
             info.exit_code, status);
}

static void outside(void)
{
    pid_t parent = getppid();
    int fd = pidfd_open(parent, 0);
    if (fd < 0)
        wl_fail("setup: pidfd_open(parent): %s", strerror(errno));
    FILE *f = fopen("fd", "w");
    if (!f)
        wl_fail("setup: writing fd: %s", strerror(errno));
    fprintf(f, "%d\n", fd);
    fclose(f);
    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);
    WL_CHECK(fdinfo_pid(fd) == parent, "pidfd of the parent: Pid %ld, want %d", fdinfo_pid(fd),
             parent);
    wl_report(1, "ok");
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    if (argc > 2 && strcmp(argv[2], "outside") == 0)
        outside();
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    sigaddset(&s, SIGCHLD);
    sigprocmask(SIG_BLOCK, &s, NULL);
    signal(SIGUSR2, on_usr2);

    int self = pidfd_open(getpid(), 0);
    int go[2], res[2];
    if (pipe(go) || pipe(res))
        wl_fail("pipe: %s", strerror(errno));
    pid_t parent = getpid();
    pid_t live = fork();
    if (live < 0)
        wl_fail("fork: %s", strerror(errno));
    if (live == 0)
        live_child(go[0], res[1], parent);
    char c;
    if (read(res[0], &c, 1) != 1)
        wl_fail("setup: live child not ready");
    int live_fd = pidfd_open(live, 0), live_nb = pidfd_open(live, PIDFD_NONBLOCK);

    pthread_t t;
    pthread_create(&t, NULL, t2_main, NULL);
    while (!t2_tid)
        wl_sleep_ms(1);
    int thread_fd = pidfd_open(t2_tid, PIDFD_THREAD);
    /* A thread that has exited. */
    pthread_t t3;
    pthread_create(&t3, NULL, t3_main, NULL);
    while (!t3_tid)
        wl_sleep_ms(1);
    int gone_fd = pidfd_open(t3_tid, PIDFD_THREAD);
    t3_stop = 1;
    pthread_join(t3, NULL);

    pid_t z = spawn_exit(5, 0);
    int zombie_fd = pidfd_open(z, 0);
    pid_t e = spawn_exit(17, 0);
    int exited_fd = pidfd_open(e, 0);
    pid_t k = fork();
    if (k == 0) {
        for (;;)
            pause();
    }
    int killed_fd = pidfd_open(k, 0);
    if (self < 0 || gone_fd < 0 || live_fd < 0 || live_nb < 0 || thread_fd < 0 || zombie_fd < 0 ||
        exited_fd < 0 || killed_fd < 0)
        wl_fail("setup: pidfd_open: %s", strerror(errno));
    pidfd_signal(killed_fd, SIGUSR1);
    int ws;
    if (waitpid(e, &ws, 0) != e || waitpid(k, &ws, 0) != k)
        wl_fail("setup: reaping: %s", strerror(errno));
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PIDFD, zombie_fd, &si, WEXITED | WNOWAIT) != 0)
        wl_fail("setup: waiting for the zombie: %s", strerror(errno));
    wl_ready();

    while (!wl_verify_requested())
        wl_sleep_ms(20);

    WL_CHECK(fdinfo_pid(self) == getpid(), "self: Pid %ld", fdinfo_pid(self));
    WL_CHECK(fdinfo_pid(live_fd) == live && fdinfo_pid(live_nb) == live,
             "live: Pid %ld/%ld, want %d", fdinfo_pid(live_fd), fdinfo_pid(live_nb), live);
    WL_CHECK(!(fcntl(live_fd, F_GETFL) & O_NONBLOCK) && (fcntl(live_nb, F_GETFL) & O_NONBLOCK),
             "live: O_NONBLOCK flags %#x/%#x", fcntl(live_fd, F_GETFL), fcntl(live_nb, F_GETFL));
    WL_CHECK(fdinfo_pid(thread_fd) == t2_tid, "thread: Pid %ld, want %d", fdinfo_pid(thread_fd),
             t2_tid);
    WL_CHECK((fcntl(thread_fd, F_GETFL) & O_EXCL) && !(fcntl(live_fd, F_GETFL) & O_EXCL),
             "PIDFD_THREAD flags %#x/%#x", fcntl(thread_fd, F_GETFL), fcntl(live_fd, F_GETFL));
    WL_CHECK(fdinfo_pid(zombie_fd) == z, "zombie: Pid %ld, want %d", fdinfo_pid(zombie_fd), z);
    WL_CHECK(!readable(self) && !readable(live_fd) && !readable(thread_fd),
             "a pidfd of a running task is readable");
    WL_CHECK(readable(zombie_fd), "zombie: not readable");
    check_exited("exited", exited_fd, 17 << 8);
    for (int i = 0; i < 200 && fdinfo_pid(gone_fd) != -1; i++)
        wl_sleep_ms(1);
    WL_CHECK(fdinfo_pid(gone_fd) == -1 && readable(gone_fd) &&
                 (fcntl(gone_fd, F_GETFL) & O_EXCL),
             "exited thread: Pid %ld readable %d flags %#x", fdinfo_pid(gone_fd),
             readable(gone_fd), fcntl(gone_fd, F_GETFL));
    struct pidfd_info_v0 ti;
    memset(&ti, 0, sizeof ti);
    ti.mask = PIDFD_INFO_EXIT;
    WL_CHECK(ioctl(gone_fd, PIDFD_GET_INFO, &ti) == 0 && (ti.mask & PIDFD_INFO_EXIT) &&
                 ti.exit_code == 0,
             "exited thread: exit info mask %#llx code %#x", (unsigned long long)ti.mask,
             ti.exit_code);
    check_exited("killed", killed_fd, SIGUSR1);

    /* Use them. */
    WL_CHECK(pidfd_signal(thread_fd, SIGUSR2) == 0, "signal through the thread pidfd: %s",
             strerror(errno));
    for (int i = 0; i < 500 && !usr2_tid; i++)
        wl_sleep_ms(2);
    WL_CHECK(usr2_tid == t2_tid, "SIGUSR2 through the thread pidfd ran in %d, want %d",
             usr2_tid, t2_tid);
    if (write(go[1], "g", 1) != 1 || read(res[0], &c, 1) != 1)
        wl_fail("live child: no answer");
    WL_CHECK(c == 'P', "live child: its pidfd of the root is wrong");
    WL_CHECK(pidfd_signal(live_fd, SIGKILL) == 0, "SIGKILL through the pidfd: %s",
             strerror(errno));
    memset(&si, 0, sizeof si);
    WL_CHECK(waitid(P_PIDFD, live_fd, &si, WEXITED) == 0 && si.si_pid == live &&
                 si.si_code == CLD_KILLED && si.si_status == SIGKILL,
             "live: waitid(P_PIDFD) pid %d code %d status %d", si.si_pid, si.si_code,
             si.si_status);
    memset(&si, 0, sizeof si);
    WL_CHECK(waitid(P_PIDFD, zombie_fd, &si, WEXITED) == 0 && si.si_pid == z &&
                 si.si_code == CLD_EXITED && si.si_status == 5,
             "zombie: waitid(P_PIDFD) pid %d code %d status %d", si.si_pid, si.si_code,
             si.si_status);
    t2_stop = 1;
    pthread_join(t, NULL);
    wl_report(1, "ok");
}
