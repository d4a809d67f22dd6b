/*
 * proc_misc.c - per-process and per-thread kernel state set by prctl and friends.
 *
 * Root:  loginuid 4242 (written to /proc/self/loginuid before anything else), THP disabled
 *        (PR_SET_THP_DISABLE), membarrier registrations (private expedited, private expedited
 *        sync-core, global expedited), timer slack 123457 ns in the main thread and 987654 ns
 *        in a second thread.
 * Child: loginuid 777 (changed again: the workload runs with CAP_AUDIT_CONTROL), THP disabled
 *        except where advised (PR_THP_DISABLE_EXCEPT_ADVISED, Linux 6.18), no membarrier
 *        registration (they are not inherited), timer slack 55555 ns; then it drops to uid/gid
 *        65534 (so a restore must set its loginuid before its credentials).
 * Verify (each process, each thread): the same values read back through /proc/thread-self/
 * loginuid, PR_GET_THP_DISABLE, MEMBARRIER_CMD_GET_REGISTRATIONS (and a private expedited
 * barrier that works or fails with EPERM as before), PR_GET_TIMERSLACK and
 * /proc/self/timerslack_ns. The audit session id is not checked: no interface sets it, it is
 * documented as lost.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#define MB_PRIVATE_EXPEDITED (1 << 3)
#define MB_REGISTER_GLOBAL_EXPEDITED (1 << 2)
#define MB_REGISTER_PRIVATE_EXPEDITED (1 << 4)
#define MB_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE (1 << 6)
#define MB_GET_REGISTRATIONS (1 << 9)
#ifndef PR_THP_DISABLE_EXCEPT_ADVISED
#define PR_THP_DISABLE_EXCEPT_ADVISED (1 << 1)
#endif

static long mb(int cmd)
{
    return syscall(SYS_membarrier, cmd, 0, 0);
}

static void set_loginuid(unsigned v)
{
    int fd = open("/proc/thread-self/loginuid", O_WRONLY);
    if (fd < 0)
        wl_fail("setup: open loginuid: %s", strerror(errno));
    char b[32];
    int n = snprintf(b, sizeof b, "%u", v);
    if (write(fd, b, n) != n)
        wl_fail("setup: write loginuid %u: %s", v, strerror(errno));
    close(fd);
}

static unsigned long read_ul(const char *path)
{
    FILE *f = fopen(path, "r");
    unsigned long v = 0;
    if (!f || fscanf(f, "%lu", &v) != 1)
        wl_fail("reading %s: %s", path, strerror(errno));
    fclose(f);
    return v;
}

struct expect {
    const char *who;
    unsigned loginuid;
    int thp;
    long mb_regs;
    unsigned long slack;
};

/* Checks for the calling thread; returns only if everything matches. */
static void check(const struct expect *e, int thread_only)
{
    unsigned long uid = read_ul("/proc/thread-self/loginuid");
    WL_CHECK(uid == e->loginuid, "%s: loginuid %lu, want %u", e->who, uid, e->loginuid);
    unsigned long slack = (unsigned long)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    WL_CHECK(slack == e->slack, "%s: timer slack %lu, want %lu", e->who, slack, e->slack);
    if (thread_only)
        return;
    unsigned long proc_slack = read_ul("/proc/self/timerslack_ns");
    WL_CHECK(proc_slack == e->slack, "%s: /proc timerslack_ns %lu, want %lu", e->who,
             proc_slack, e->slack);
    int thp = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
    WL_CHECK(thp == e->thp, "%s: PR_GET_THP_DISABLE %d, want %d", e->who, thp, e->thp);
    long regs = mb(MB_GET_REGISTRATIONS);
    WL_CHECK(regs == e->mb_regs, "%s: membarrier registrations %#lx, want %#lx", e->who, regs,
             e->mb_regs);
    long r = mb(MB_PRIVATE_EXPEDITED);
    int registered = (e->mb_regs & MB_REGISTER_PRIVATE_EXPEDITED) != 0;
    WL_CHECK(registered ? r == 0 : (r == -1 && errno == EPERM),
             "%s: private expedited barrier gave %ld (%s)", e->who, r, strerror(errno));
}

static const struct expect root_main = {"root", 4242, 1,
                                        MB_REGISTER_GLOBAL_EXPEDITED |
                                            MB_REGISTER_PRIVATE_EXPEDITED |
                                            MB_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
                                        123457};
static struct expect root_thread;
static const struct expect kid = {"child", 777, 1 | PR_THP_DISABLE_EXCEPT_ADVISED, 0, 55555};

static volatile int thread_go, thread_result = -1;

static void *thread_main(void *arg)
{
    (void)arg;
    if (prctl(PR_SET_TIMERSLACK, root_thread.slack, 0, 0, 0) != 0)
        wl_fail("setup: thread timer slack: %s", strerror(errno));
    thread_result = 0;
    while (!thread_go)
        wl_sleep_ms(10);
    check(&root_thread, 1);
    thread_result = 1;
    return NULL;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    set_loginuid(root_main.loginuid);
    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0)
        wl_fail("setup: PR_SET_THP_DISABLE: %s", strerror(errno));
    if (prctl(PR_SET_TIMERSLACK, root_main.slack, 0, 0, 0) != 0)
        wl_fail("setup: PR_SET_TIMERSLACK: %s", strerror(errno));

    int go[2], res[2];
    if (pipe(go) || pipe(res))
        wl_fail("pipe: %s", strerror(errno));
    pid_t c = fork();
    if (c < 0)
        wl_fail("fork: %s", strerror(errno));
    if (c == 0) {
        set_loginuid(kid.loginuid);
        if (prctl(PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0) != 0)
            wl_fail("setup: child PR_SET_THP_DISABLE except advised: %s", strerror(errno));
        if (prctl(PR_SET_TIMERSLACK, kid.slack, 0, 0, 0) != 0)
            wl_fail("setup: child timer slack: %s", strerror(errno));
        if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
            setresuid(65534, 65534, 65534))
            wl_fail("setup: child dropping to 65534: %s", strerror(errno));
        prctl(PR_SET_DUMPABLE, 1);
        if (write(res[1], "r", 1) != 1)
            _exit(2);
        char ch;
        while (read(go[0], &ch, 1) < 0 && errno == EINTR)
            ;
        check(&kid, 0);
        WL_CHECK(getuid() == 65534 && geteuid() == 65534, "child: uid %d/%d", getuid(), geteuid());
        _exit(0);
    }
    char ch;
    if (read(res[0], &ch, 1) != 1)
        wl_fail("setup: child did not get ready");

    if (mb(MB_REGISTER_PRIVATE_EXPEDITED) != 0 ||
        mb(MB_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) != 0 ||
        mb(MB_REGISTER_GLOBAL_EXPEDITED) != 0)
        wl_fail("setup: membarrier registration: %s", strerror(errno));
    root_thread = root_main;
    root_thread.who = "root thread 2";
    root_thread.slack = 987654;
    pthread_t t;
    pthread_create(&t, NULL, thread_main, NULL);
    while (thread_result < 0)
        wl_sleep_ms(5);
    check(&root_main, 0);
    wl_ready();

    while (!wl_verify_requested())
        wl_sleep_ms(20);

    check(&root_main, 0);
    thread_go = 1;
    pthread_join(t, NULL);
    WL_CHECK(thread_result == 1, "thread 2 did not check");
    if (write(go[1], "g", 1) != 1)
        wl_fail("write: %s", strerror(errno));
    int ws;
    WL_CHECK(waitpid(c, &ws, 0) == c && WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
             "child failed (status %#x; see out.log)", ws);
    wl_report(1, "ok");
}
