/*
 * shared_fdtable.c - a file descriptor table shared by two processes
 * (clone(CLONE_FILES) without CLONE_THREAD) across checkpoint/restore.
 *
 * Kernel state tested: the root clones a child with CLONE_FILES|SIGCHLD
 * (its own memory); before the checkpoint the root opens "before.dat" and
 * the child opens "child.dat" (both visible to both). The two talk through a
 * MAP_SHARED anonymous page.
 * With the argument "sibling" the same pair is two children of the root: the
 * root forks A, and A clones B with CLONE_FILES|CLONE_PARENT (B is A's
 * sibling, sharing A's table; the root's own table is separate); A plays the
 * root's part below and reports to the root through the shared page.
 * The child takes a POSIX write lock on child.dat (bytes 0..3) and the leader
 * one on before.dat (byte 0): locks owned by the shared table, each showing
 * the pid that set it.
 * Verify: kcmp(KCMP_FILES) says the tables are one; a checker process finds
 * each lock with F_GETLK and the pid of its setter; both fds are there for
 * both processes with their content; a file the root opens after the restore
 * is visible in the child (same number, same content), and an fd the child
 * closes is gone for the root; the child exits 0 and the root reaps it.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef KCMP_FILES
#define KCMP_FILES 2
#endif

struct shared {
    volatile int cmd;      /* 1: child opened child.dat; 2: root asks; 3: child answered */
    volatile int child_fd; /* child.dat, opened by the child */
    volatile int new_fd;   /* opened by the root after restore */
    volatile int answer;   /* 0 ok, else a check number */
    volatile int go;       /* sibling mode: 1 = A set up, 2 = verify, 3 = A done */
    char msg[512];         /* sibling mode: A's verdict, empty if it passed */
};

static struct shared *sh;

static int content_is(int fd, const char *want)
{
    char buf[32] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    return n == (ssize_t)strlen(want) && memcmp(buf, want, n) == 0;
}

static int make(const char *name, const char *content)
{
    int fd = open(name, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0 || write(fd, content, strlen(content)) != (ssize_t)strlen(content))
        return -1;
    return fd;
}

static int child_main(void *arg)
{
    int before = (int)(long)arg;
    sh->child_fd = make("child.dat", "from the child");
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 4};
    if (sh->child_fd >= 0 && fcntl(sh->child_fd, F_SETLK, &fl) < 0)
        sh->child_fd = -1;
    sh->cmd = 1;
    while (sh->cmd != 2)
        usleep(10000);
    int a = 0;
    if (!content_is(before, "from the root"))
        a = 1;
    else if (!content_is(sh->new_fd, "opened after restore"))
        a = 2;
    else if (close(sh->child_fd) != 0)
        a = 3;
    sh->answer = a;
    sh->cmd = 3;
    return 0;
}

static int sibling_mode;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            snprintf(sh->msg, sizeof sh->msg, __VA_ARGS__);                   \
            return 0;                                                         \
        }                                                                     \
    } while (0)

/* Set up the pair: the caller ("leader") and a child sharing its table. */
static pid_t setup(void)
{
    int before = make("before.dat", "from the root");
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    if (before < 0 || fcntl(before, F_SETLK, &fl) < 0)
        wl_fail("before.dat: %s", strerror(errno));
    size_t stack_size = 256 * 1024;
    char *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int flags = CLONE_FILES | (sibling_mode ? CLONE_PARENT : SIGCHLD);
    pid_t child = clone(child_main, stack + stack_size, flags, (void *)(long)before);
    if (child < 0)
        wl_fail("clone(CLONE_FILES): %s", strerror(errno));
    for (int i = 0; i < 500 && sh->cmd != 1; i++)
        wl_sleep_ms(10);
    if (sh->cmd != 1 || sh->child_fd < 0)
        wl_fail("the child did not open child.dat");
    return child;
}

/* The pid of the POSIX lock that blocks a write lock on name's [start, start+len). */
static pid_t lock_pid(const char *name, off_t start, off_t len)
{
    int fd = open(name, O_RDWR);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fd < 0 || fcntl(fd, F_GETLK, &fl) < 0)
        return -2;
    close(fd);
    return fl.l_type == F_UNLCK ? 0 : fl.l_pid;
}

/* A process outside the table asks who holds the two locks: 0 if as expected. */
static int check_lock_pids(pid_t leader, pid_t child)
{
    pid_t chk = fork();
    if (chk == 0)
        _exit(lock_pid("before.dat", 0, 1) == leader && lock_pid("child.dat", 0, 4) == child ? 0 : 1);
    int st;
    return waitpid(chk, &st, 0) == chk && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}

/* The leader's checks; 1 if all passed, else 0 with sh->msg set. */
static int check(pid_t child)
{
    CHECK(syscall(SYS_kcmp, getpid(), child, KCMP_FILES, 0, 0) == 0,
          "kcmp(KCMP_FILES): %d and child %d no longer share one fd table", getpid(), child);
    int before = 3;
    while (before < 64 && !content_is(before, "from the root"))
        before++;
    CHECK(before < 64, "before.dat is no longer open");
    CHECK(check_lock_pids(getpid(), child) == 0,
          "POSIX locks: expected before.dat byte 0 held by %d and child.dat 0..3 by %d",
          getpid(), child);
    CHECK(content_is(sh->child_fd, "from the child"), "child.dat through the child's fd %d",
          sh->child_fd);
    sh->new_fd = make("after.dat", "opened after restore");
    CHECK(sh->new_fd >= 0, "after.dat: %s", strerror(errno));
    sh->cmd = 2;
    for (int i = 0; i < 500 && sh->cmd != 3; i++)
        wl_sleep_ms(10);
    CHECK(sh->cmd == 3, "the child did not answer");
    CHECK(sh->answer == 0, "the child's check %d failed (1: before.dat, 2: the fd the leader "
          "opened after restore, 3: closing child.dat)", sh->answer);
    CHECK(fcntl(sh->child_fd, F_GETFD) < 0 && errno == EBADF,
          "fd %d closed by the child is still open in the leader", sh->child_fd);
    return 1;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    sibling_mode = argc > 2 && strcmp(argv[2], "sibling") == 0;
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        wl_fail("mmap: %s", strerror(errno));
    pid_t child = 0, leader = 0;
    if (sibling_mode) {
        leader = fork();
        if (leader == 0) {
            child = setup();
            sh->go = 1;
            while (sh->go != 2)
                usleep(10000);
            if (check(child))
                sh->msg[0] = 0;
            sh->go = 3;
            _exit(0);
        }
        for (int i = 0; i < 500 && sh->go != 1; i++)
            wl_sleep_ms(10);
        if (sh->go != 1)
            wl_fail("process A did not set up");
    } else {
        child = setup();
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    int st;
    if (sibling_mode) {
        sh->go = 2;
        for (int i = 0; i < 1000 && sh->go != 3; i++)
            wl_sleep_ms(10);
        WL_CHECK(sh->go == 3, "process A did not finish its checks");
        WL_CHECK(sh->msg[0] == 0, "process A: %s", sh->msg);
        WL_CHECK(waitpid(leader, &st, 0) == leader && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                 "process A exit status %#x", st);
        /* B's parent is the root (CLONE_PARENT). */
        WL_CHECK(waitpid(-1, &st, 0) > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                 "child B exit status %#x", st);
        wl_report(1, "ok");
    }
    WL_CHECK(check(child), "%s", sh->msg);
    WL_CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "child exit status %#x", st);
    wl_report(1, "ok");
}
