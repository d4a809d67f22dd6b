/*
 * status_flags.c - file status flags on every kind of descriptor, and the
 * owners and signals of descriptions (F_SETOWN/F_SETOWN_EX/F_SETSIG, O_ASYNC),
 * across checkpoint/restore.
 *
 * Kernel state tested (F_GETFL of every fd saved at setup, compared at
 * verify, with O_ACCMODE|O_APPEND|O_NONBLOCK|O_DIRECT|O_NOATIME|O_ASYNC):
 *  - a pipe whose read end is O_NONBLOCK and write end blocking; a packet-mode
 *    pipe (pipe2 O_DIRECT); a FIFO opened O_RDWR|O_NONBLOCK;
 *  - a unix socketpair with one end O_NONBLOCK; a UDP socket O_NONBLOCK;
 *  - eventfd, timerfd, signalfd, inotify (all *_NONBLOCK), an epoll fd made
 *    O_NONBLOCK with fcntl;
 *  - a pty master O_NONBLOCK and its slave;
 *  - regular files O_APPEND|O_NOATIME and O_DIRECT, /dev/null O_WRONLY|O_APPEND;
 *  - O_ASYNC: the pipe read end (owner: this process, F_SETSIG SIGRTMIN+2),
 *    the socketpair's other end (owner: the process group, SIGIO), the UDP
 *    socket with F_OWNER_PID = a child, the eventfd with F_OWNER_TID = a
 *    thread of ours.
 * Verify: flags equal; F_GETOWN_EX/F_GETSIG equal; behaviour: EAGAIN on the
 * empty non-blocking ends, packet boundaries in the O_DIRECT pipe, O_APPEND
 * writes at the end; writing into the pipe sends SIGRTMIN+2 with si_fd = the
 * read end and POLL_IN, writing to the socketpair sends SIGIO.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#define MASK (O_ACCMODE | O_APPEND | O_NONBLOCK | O_DIRECT | O_NOATIME | O_ASYNC)
#define MAXFD 32

static int fds[MAXFD];
static const char *names[MAXFD];
static int flags[MAXFD];
static int nfds;

static volatile sig_atomic_t rt_fd = -1, rt_code, sigio_count;
static volatile pid_t worker_tid;

static void on_rt(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    rt_fd = si->si_fd;
    rt_code = si->si_code;
}

static void on_io(int sig)
{
    (void)sig;
    sigio_count++;
}

static void *worker(void *arg)
{
    (void)arg;
    worker_tid = (pid_t)syscall(SYS_gettid);
    for (;;)
        pause();
    return NULL;
}

static int add(const char *name, int fd)
{
    if (fd < 0)
        wl_fail("%s: %s", name, strerror(errno));
    fds[nfds] = fd;
    names[nfds] = name;
    nfds++;
    return fd;
}

static void setfl(int fd, int add_flags)
{
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | add_flags) < 0)
        wl_fail("F_SETFL %#x on fd %d: %s", add_flags, fd, strerror(errno));
}

static void owner(int fd, int type, pid_t pid, int sig)
{
    struct f_owner_ex o = {.type = type, .pid = pid};
    if (fcntl(fd, F_SETOWN_EX, &o) < 0 || fcntl(fd, F_SETSIG, sig) < 0)
        wl_fail("owner of fd %d: %s", fd, strerror(errno));
}

static void check_owner(int fd, int type, pid_t pid, int sig)
{
    struct f_owner_ex o;
    WL_CHECK(fcntl(fd, F_GETOWN_EX, &o) == 0, "F_GETOWN_EX fd %d: %s", fd, strerror(errno));
    WL_CHECK(o.type == type && o.pid == pid, "fd %d owner: expected type %d pid %d, found %d %d",
             fd, type, pid, o.type, o.pid);
    WL_CHECK(fcntl(fd, F_GETSIG) == sig, "fd %d F_GETSIG: expected %d, found %d", fd, sig,
             fcntl(fd, F_GETSIG));
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    struct sigaction sa = {.sa_sigaction = on_rt, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigaction(SIGRTMIN + 2, &sa, NULL);
    signal(SIGIO, on_io);
    pthread_t th;
    pthread_create(&th, NULL, worker, NULL);
    while (!worker_tid)
        wl_sleep_ms(1);
    pid_t child = fork();
    if (child == 0) {
        for (;;)
            pause();
    }

    int p[2], pk[2], sp[2];
    if (pipe(p) < 0 || pipe2(pk, O_DIRECT) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
        wl_fail("pipe/socketpair: %s", strerror(errno));
    add("pipe read end", p[0]);
    add("pipe write end", p[1]);
    setfl(p[0], O_NONBLOCK);
    add("packet pipe read end", pk[0]);
    add("packet pipe write end", pk[1]);
    setfl(pk[0], O_NONBLOCK);
    if (mkfifo("fifo", 0600) < 0)
        wl_fail("mkfifo: %s", strerror(errno));
    add("fifo", open("fifo", O_RDWR | O_NONBLOCK));
    add("socketpair end 0", sp[0]);
    add("socketpair end 1", sp[1]);
    setfl(sp[0], O_NONBLOCK);
    int udp = add("udp socket", socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0));
    int efd = add("eventfd", eventfd(0, EFD_NONBLOCK));
    add("timerfd", timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK));
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGUSR1);
    add("signalfd", signalfd(-1, &ss, SFD_NONBLOCK));
    add("inotify", inotify_init1(IN_NONBLOCK));
    int ep = add("epoll", epoll_create1(0));
    setfl(ep, O_NONBLOCK);
    int ptm = add("pty master", posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK));
    if (grantpt(ptm) < 0 || unlockpt(ptm) < 0)
        wl_fail("pty: %s", strerror(errno));
    add("pty slave", open(ptsname(ptm), O_RDWR | O_NOCTTY));
    int ap = add("append|noatime file",
                 open("append.dat", O_CREAT | O_WRONLY | O_APPEND | O_NOATIME, 0600));
    if (write(ap, "0123456789", 10) != 10)
        wl_fail("write append.dat");
    int dfd = open("direct.dat", O_CREAT | O_RDWR | O_DIRECT, 0600);
    if (dfd < 0)
        wl_fail("O_DIRECT is not supported in %s: %s", wl_ctl_dir(), strerror(errno));
    add("O_DIRECT file", dfd);
    add("/dev/null append", open("/dev/null", O_WRONLY | O_APPEND));

    setfl(p[0], O_ASYNC);
    owner(p[0], F_OWNER_PID, getpid(), SIGRTMIN + 2);
    setfl(sp[1], O_ASYNC);
    owner(sp[1], F_OWNER_PGRP, getpgrp(), 0);
    setfl(udp, O_ASYNC);
    owner(udp, F_OWNER_PID, child, 0);
    owner(efd, F_OWNER_TID, worker_tid, SIGRTMIN + 3);
    for (int i = 0; i < nfds; i++)
        flags[i] = fcntl(fds[i], F_GETFL) & MASK;

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    for (int i = 0; i < nfds; i++) {
        int f = fcntl(fds[i], F_GETFL);
        WL_CHECK(f >= 0 && (f & MASK) == flags[i], "%s (fd %d): flags expected %#o, found %#o",
                 names[i], fds[i], flags[i], f & MASK);
    }
    check_owner(p[0], F_OWNER_PID, getpid(), SIGRTMIN + 2);
    check_owner(sp[1], F_OWNER_PGRP, getpgrp(), 0);
    check_owner(udp, F_OWNER_PID, child, 0);
    check_owner(efd, F_OWNER_TID, worker_tid, SIGRTMIN + 3);

    char buf[64];
    WL_CHECK(read(p[0], buf, 1) < 0 && errno == EAGAIN, "empty non-blocking pipe: expected EAGAIN");
    WL_CHECK(read(sp[0], buf, 1) < 0 && errno == EAGAIN, "empty non-blocking socket: expected EAGAIN");
    WL_CHECK(write(pk[1], "abc", 3) == 3 && write(pk[1], "defg", 4) == 4, "packet pipe write");
    WL_CHECK(read(pk[0], buf, sizeof buf) == 3, "packet pipe: the first read must return one packet (3 bytes)");
    WL_CHECK(read(pk[0], buf, sizeof buf) == 4, "packet pipe: the second read must return 4 bytes");
    WL_CHECK(write(ap, "xy", 2) == 2, "append write");
    struct stat st;
    WL_CHECK(stat("append.dat", &st) == 0 && st.st_size == 12, "append.dat: expected 12 bytes, found %ld",
             (long)st.st_size);
    WL_CHECK(write(p[1], "z", 1) == 1, "pipe write");
    for (int i = 0; i < 300 && rt_fd < 0; i++)
        wl_sleep_ms(10);
    WL_CHECK(rt_fd == p[0] && rt_code == POLL_IN,
             "O_ASYNC pipe: expected SIGRTMIN+2 with si_fd %d and POLL_IN, got si_fd %d code %d", p[0],
             (int)rt_fd, (int)rt_code);
    int before = sigio_count;
    WL_CHECK(write(sp[0], "q", 1) == 1, "socket write");
    for (int i = 0; i < 300 && sigio_count == before; i++)
        wl_sleep_ms(10);
    WL_CHECK(sigio_count > before, "O_ASYNC socket owned by the process group: no SIGIO");
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    wl_report(1, "ok");
}
