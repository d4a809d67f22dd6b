/*
 * seccomp_strict.c - seccomp strict mode, in a child process and in one
 * thread of the root (strict mode is per thread).
 *
 * Each strict task (child C, thread S of the root) serves a pipe protocol
 * with raw read/write system calls only: it reads one byte x; 1..100 adds x
 * to its counter and answers the counter (8 bytes); 'q' makes it exit with
 * the exit system call (the only way out allowed); 'k' makes it call getpid,
 * which strict mode answers with SIGKILL.  Before wl_ready() each gets 1..5
 * (counter 15).  Every signal is blocked in them (a handler could not run).
 *
 * Verify:
 *   - C and S answer 7 -> 22 and 3 -> 25 (memory and pipes restored, both
 *     still serve);
 *   - /proc/C/status and /proc/self/task/S/status show Seccomp 1, the root's
 *     main thread Seccomp 0;
 *   - C, sent 'k', dies of SIGKILL (strict mode in force again);
 *   - S, sent 'q', exits and is joined.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct chan {
    int req[2], resp[2];
};

static struct chan cc, sc;
static volatile pid_t s_tid;

/* The strict loop: raw read/write/exit only. */
static void serve(int req, int resp) __attribute__((noreturn));
static void serve(int req, int resp)
{
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, NULL) != 0)
        syscall(SYS_exit, 99);
    uint64_t counter = 0;
    for (;;) {
        unsigned char x;
        long r = syscall(SYS_read, req, &x, 1);
        if (r == -1 && errno == EINTR)
            continue;
        if (r != 1 || x == 'q')
            syscall(SYS_exit, 0);
        if (x == 'k')
            syscall(SYS_getpid); /* killed here */
        counter += x;
        syscall(SYS_write, resp, &counter, sizeof counter);
    }
}

static void *strict_thread(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    s_tid = (pid_t)syscall(SYS_gettid);
    serve(sc.req[0], sc.resp[1]);
}

/* Send x, expect counter want (bounded wait). */
static void ask(struct chan *c, const char *who, unsigned char x, uint64_t want)
{
    if (write(c->req[1], &x, 1) != 1)
        wl_fail("%s: writing request: %m", who);
    struct pollfd p = {c->resp[0], POLLIN, 0};
    int r;
    while ((r = poll(&p, 1, 5000)) < 0 && errno == EINTR)
        ;
    if (r != 1)
        wl_fail("%s: no answer to %d within 5 s", who, x);
    uint64_t got;
    if (read(c->resp[0], &got, sizeof got) != (ssize_t)sizeof got)
        wl_fail("%s: short answer: %m", who);
    WL_CHECK(got == want, "%s: counter %llu after %d, expected %llu", who,
             (unsigned long long)got, x, (unsigned long long)want);
}

static long mode_of(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Seccomp:", 8) == 0)
            v = strtol(line + 8, NULL, 10);
    fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    if (pipe(cc.req) || pipe(cc.resp) || pipe(sc.req) || pipe(sc.resp))
        wl_fail("pipe: %m");
    pid_t c = fork();
    if (c < 0)
        wl_fail("fork: %m");
    if (c == 0) {
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_BLOCK, &all, NULL);
        serve(cc.req[0], cc.resp[1]);
    }
    pthread_t th;
    if (pthread_create(&th, NULL, strict_thread, NULL) != 0)
        wl_fail("pthread_create");
    uint64_t sum = 0;
    for (unsigned char x = 1; x <= 5; x++) {
        sum += x;
        ask(&cc, "child C", x, sum);
        ask(&sc, "thread S", x, sum);
    }
    wl_ready();

    while (!wl_verify_requested())
        wl_sleep_ms(20);

    ask(&cc, "child C", 7, 22);
    ask(&sc, "thread S", 7, 22);
    ask(&cc, "child C", 3, 25);
    ask(&sc, "thread S", 3, 25);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", c);
    long m = mode_of(path);
    WL_CHECK(m == 1, "child C: Seccomp %ld, expected 1 (strict)", m);
    snprintf(path, sizeof path, "/proc/self/task/%d/status", s_tid);
    m = mode_of(path);
    WL_CHECK(m == 1, "thread S: Seccomp %ld, expected 1 (strict)", m);
    m = mode_of("/proc/thread-self/status");
    WL_CHECK(m == 0, "main thread: Seccomp %ld, expected 0", m);
    /* A forbidden call kills C. */
    unsigned char k = 'k';
    if (write(cc.req[1], &k, 1) != 1)
        wl_fail("writing to C: %m");
    int st;
    while (waitpid(c, &st, 0) < 0)
        if (errno != EINTR)
            wl_fail("waitpid C: %m");
    WL_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
             "child C after a forbidden call: status %#x, expected killed by SIGKILL", st);
    unsigned char q = 'q';
    if (write(sc.req[1], &q, 1) != 1)
        wl_fail("writing to S: %m");
    pthread_join(th, NULL);
    wl_report(1, "ok");
}
