/*
 * zombie.c - children that exited and are not reaped yet (zombies).
 *
 * The root blocks SIGCHLD and forks:
 *   exit42  _exit(42)
 *   term    killed by SIGTERM (default disposition)
 *   kill    killed by SIGKILL
 *   abrt    killed by SIGABRT, not dumpable (so no core, no core bit)
 *   grp     setpgid(0, 0), then _exit(7): a zombie leading its own process group
 *   sess    setsid(), then _exit(9): a zombie leading its own session
 *   clone   a "clone" child (exit signal SIGUSR1, ignored), _exit(11): only waits with
 *           __WALL see it
 *   live    a running child with a zombie child of its own (_exit(3)), which it checks
 *           itself when the root tells it (a pipe) at verify (waitid WNOWAIT, then waitpid)
 *           and reports through its exit code
 * Setup waits until every zombie is waitable (waitid WEXITED|WNOWAIT), then drains the
 * SIGCHLDs (sigtimedwait) so no SIGCHLD is pending.
 * Verify, for each zombie: /proc/PID/stat says Z with us as parent, getpgid/getsid unchanged,
 * waitid(WNOWAIT) reports the same si_code/si_status, then waitpid reaps it with the same
 * status (WIFEXITED/WEXITSTATUS, or WIFSIGNALED/WTERMSIG without core). No SIGCHLD may be
 * pending (a restore must not add one). Then the live child exits 0, and nothing else is
 * left to wait for (ECHILD).
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { EXIT42, TERM, KILL, ABRT, GRP, SESS, CLONE, NZ };
static const char *names[NZ] = {"exit42", "term", "kill", "abrt", "grp", "sess", "clone"};
static pid_t zpid[NZ], zpgid[NZ], zsid[NZ];
static int zcode[NZ], zstatus[NZ];

static void child(int i)
{
    switch (i) {
    case EXIT42: _exit(42);
    case TERM: signal(SIGTERM, SIG_DFL); kill(getpid(), SIGTERM); break;
    case KILL: kill(getpid(), SIGKILL); break;
    case ABRT:
        prctl(PR_SET_DUMPABLE, 0);
        signal(SIGABRT, SIG_DFL);
        kill(getpid(), SIGABRT);
        break;
    case GRP: setpgid(0, 0); _exit(7);
    case SESS: setsid(); _exit(9);
    case CLONE: _exit(11);
    }
    for (;;)
        pause();
}

/* waitid(P_PID, pid, WEXITED|WNOWAIT|WNOHANG): 1 with *si filled if it is a zombie */
static int peek(pid_t pid, siginfo_t *si)
{
    memset(si, 0, sizeof *si);
    if (waitid(P_PID, pid, si, WEXITED | WNOWAIT | WNOHANG | __WALL) != 0)
        return -1;
    return si->si_pid == pid;
}

static void wait_zombie(pid_t pid, siginfo_t *si)
{
    for (int i = 0; i < 5000; i++) {
        int r = peek(pid, si);
        if (r == 1)
            return;
        if (r < 0)
            wl_fail("setup: waitid(%d): %s", pid, strerror(errno));
        wl_sleep_ms(1);
    }
    wl_fail("setup: child %d never became a zombie", pid);
}

static int sigchld_pending(void)
{
    sigset_t p;
    sigpending(&p);
    return sigismember(&p, SIGCHLD);
}

static int go[2]; /* the root tells the live child to check its zombie and exit */

static void live_child(void)
{
    pid_t z = fork();
    if (z < 0)
        _exit(2);
    if (z == 0)
        _exit(3);
    siginfo_t si;
    wait_zombie(z, &si);
    close(go[1]);
    char c;
    while (read(go[0], &c, 1) < 0 && errno == EINTR)
        ;
    if (peek(z, &si) != 1 || si.si_code != CLD_EXITED || si.si_status != 3)
        wl_fail("live child: its zombie %d is not waitable as exited 3 (code %d status %d)",
                z, si.si_code, si.si_status);
    int st;
    if (waitpid(z, &st, WNOHANG) != z || !WIFEXITED(st) || WEXITSTATUS(st) != 3)
        wl_fail("live child: waitpid(%d) did not reap exit 3 (status %#x)", z, st);
    _exit(0);
}

static char state_of(pid_t pid, pid_t *ppid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    char st = '?';
    if (!p || sscanf(p + 2, "%c %d", &st, ppid) != 2)
        return '?';
    return st;
}

static void verify_zombie(int i)
{
    pid_t pid = zpid[i], ppid = 0;
    char st = state_of(pid, &ppid);
    WL_CHECK(st == 'Z' && ppid == getpid(), "%s (%d): state %c parent %d, want Z and %d",
             names[i], pid, st, ppid, getpid());
    WL_CHECK(getpgid(pid) == zpgid[i], "%s: pgid %d, was %d", names[i], getpgid(pid), zpgid[i]);
    WL_CHECK(getsid(pid) == zsid[i], "%s: sid %d, was %d", names[i], getsid(pid), zsid[i]);
    siginfo_t si;
    WL_CHECK(peek(pid, &si) == 1, "%s (%d): not waitable", names[i], pid);
    WL_CHECK(si.si_code == zcode[i] && si.si_status == zstatus[i],
             "%s: waitid reports code %d status %d, was code %d status %d", names[i],
             si.si_code, si.si_status, zcode[i], zstatus[i]);
    int ws;
    if (i == CLONE) {
        errno = 0;
        WL_CHECK(waitpid(pid, &ws, WNOHANG) == -1 && errno == ECHILD,
                 "clone: a wait without __WALL sees it (its exit signal changed?)");
    }
    WL_CHECK(waitpid(pid, &ws, WNOHANG | __WALL) == pid, "%s: waitpid did not reap it",
             names[i]);
    if (zcode[i] == CLD_EXITED)
        WL_CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == zstatus[i], "%s: status %#x", names[i], ws);
    else
        WL_CHECK(WIFSIGNALED(ws) && WTERMSIG(ws) == zstatus[i] && !WCOREDUMP(ws),
                 "%s: status %#x, want signal %d without core", names[i], ws, zstatus[i]);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);

    signal(SIGUSR1, SIG_IGN);
    for (int i = 0; i < NZ; i++) {
        pid_t p = i == CLONE ? (pid_t)syscall(SYS_clone, SIGUSR1, 0, 0, 0, 0) : fork();
        if (p < 0)
            wl_fail("fork: %s", strerror(errno));
        if (p == 0)
            child(i);
        zpid[i] = p;
    }
    if (pipe(go) != 0)
        wl_fail("pipe: %s", strerror(errno));
    pid_t live = fork();
    if (live < 0)
        wl_fail("fork: %s", strerror(errno));
    if (live == 0)
        live_child();
    close(go[0]);
    for (int i = 0; i < NZ; i++) {
        siginfo_t si;
        wait_zombie(zpid[i], &si);
        zcode[i] = si.si_code;
        zstatus[i] = si.si_status;
        zpgid[i] = getpgid(zpid[i]);
        zsid[i] = getsid(zpid[i]);
    }
    WL_CHECK(zcode[EXIT42] == CLD_EXITED && zstatus[EXIT42] == 42, "setup: exit42");
    WL_CHECK(zcode[TERM] == CLD_KILLED && zstatus[TERM] == SIGTERM, "setup: term");
    WL_CHECK(zcode[ABRT] == CLD_KILLED && zstatus[ABRT] == SIGABRT, "setup: abrt code %d",
             zcode[ABRT]);
    WL_CHECK(zpgid[GRP] == zpid[GRP] && zsid[SESS] == zpid[SESS], "setup: grp/sess");
    wl_sleep_ms(50); /* the live child's zombie too */
    struct timespec zero = {0, 0};
    while (sigtimedwait(&chld, NULL, &zero) == SIGCHLD)
        ;
    WL_CHECK(!sigchld_pending(), "setup: SIGCHLD still pending");
    wl_ready();

    while (!wl_verify_requested())
        wl_sleep_ms(20);

    WL_CHECK(!sigchld_pending(), "a SIGCHLD is pending that was not before");
    for (int i = 0; i < NZ; i++)
        verify_zombie(i);
    if (write(go[1], "g", 1) != 1)
        wl_fail("write: %s", strerror(errno));
    int ws = 0;
    pid_t r = 0;
    for (int i = 0; i < 500 && r == 0; i++) {
        r = waitpid(live, &ws, WNOHANG);
        if (r == 0)
            wl_sleep_ms(10);
    }
    WL_CHECK(r == live && WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
             "live child %d: waitpid %d status %#x", live, r, ws);
    errno = 0;
    r = waitpid(-1, &ws, WNOHANG | __WALL);
    WL_CHECK(r == -1 && errno == ECHILD, "an unexpected child is left: waitpid gave %d", r);
    wl_report(1, "ok");
}
