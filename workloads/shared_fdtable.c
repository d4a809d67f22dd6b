/*
 * shared_fdtable.c - a file descriptor table shared by two processes
 * (clone(CLONE_FILES) without CLONE_THREAD) across checkpoint/restore.
 *
 * Kernel state tested: the root clones a child with CLONE_FILES|SIGCHLD
 * (its own memory); before the checkpoint the root opens "before.dat" and
 * the child opens "child.dat" (both visible to both). The two talk through a
 * MAP_SHARED anonymous page.
 * Verify: kcmp(KCMP_FILES) says the tables are one; both fds are there for
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

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        wl_fail("mmap: %s", strerror(errno));
    int before = make("before.dat", "from the root");
    if (before < 0)
        wl_fail("before.dat: %s", strerror(errno));
    size_t stack_size = 256 * 1024;
    char *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pid_t child = clone(child_main, stack + stack_size, CLONE_FILES | SIGCHLD, (void *)(long)before);
    if (child < 0)
        wl_fail("clone(CLONE_FILES): %s", strerror(errno));
    for (int i = 0; i < 500 && sh->cmd != 1; i++)
        wl_sleep_ms(10);
    if (sh->cmd != 1 || sh->child_fd < 0)
        wl_fail("the child did not open child.dat");

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    WL_CHECK(syscall(SYS_kcmp, getpid(), child, KCMP_FILES, 0, 0) == 0,
             "kcmp(KCMP_FILES): the root and child %d no longer share one fd table", child);
    WL_CHECK(content_is(before, "from the root"), "before.dat through fd %d", before);
    WL_CHECK(content_is(sh->child_fd, "from the child"), "child.dat through the child's fd %d",
             sh->child_fd);
    sh->new_fd = make("after.dat", "opened after restore");
    WL_CHECK(sh->new_fd >= 0, "after.dat: %s", strerror(errno));
    sh->cmd = 2;
    for (int i = 0; i < 500 && sh->cmd != 3; i++)
        wl_sleep_ms(10);
    WL_CHECK(sh->cmd == 3, "the child did not answer");
    WL_CHECK(sh->answer == 0, "the child's check %d failed (1: before.dat, 2: the fd the root "
             "opened after restore, 3: closing child.dat)", sh->answer);
    WL_CHECK(fcntl(sh->child_fd, F_GETFD) < 0 && errno == EBADF,
             "fd %d closed by the child is still open in the root", sh->child_fd);
    int st;
    WL_CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "child exit status %#x", st);
    wl_report(1, "ok");
}
