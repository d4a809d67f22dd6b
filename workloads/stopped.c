/*
 * stopped.c - children stopped by job control.
 *
 * The root (session leader) blocks SIGCHLD and forks three children that count in a shared
 * page as fast as they can:
 *   tstp   own process group (so SIGTSTP is not dropped as for an orphaned group), stopped by
 *          SIGTSTP; the root collects the stop (waitpid WUNTRACED) before it is ready
 *   stop   stopped by SIGSTOP; the stop is left uncollected
 *   ttin   own process group, two threads, stopped by SIGTTIN; left uncollected
 *   cont   stopped by SIGSTOP (collected), then continued by SIGCONT; the continue is left
 *          uncollected
 * Setup drains the SIGCHLDs. Verify: no SIGCHLD pending; every child is in state T and its
 * counter does not move; waitid(WSTOPPED|WNOHANG) reports nothing for tstp (already
 * collected) and the stop signal for stop and ttin (then collected with waitpid WUNTRACED);
 * then SIGCONT: waitpid(WCONTINUED) reports each as continued, the counters move again (both
 * threads of ttin), and each child is killed and reaped. cont runs (counter moves, not T), and
 * waitid(WCONTINUED|WNOWAIT) then waitpid(WCONTINUED) report its continue once.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { TSTP, STOP, TTIN, NC };
static const char *names[NC] = {"tstp", "stop", "ttin"};
static const int sigs[NC] = {SIGTSTP, SIGSTOP, SIGTTIN};
static pid_t kid[NC];
/* counters[i] for child i's main thread, counters[NC] for ttin's second thread,
 * counters[NC + 1] for cont */
static volatile uint64_t *counters;

static void *spin2(void *arg)
{
    (void)arg;
    for (;;)
        counters[NC]++;
    return NULL;
}

static void child(int i)
{
    if (i != STOP)
        setpgid(0, 0);
    if (i == TTIN) {
        pthread_t t;
        pthread_create(&t, NULL, spin2, NULL);
    }
    for (;;)
        counters[i]++;
}

static char state_of(pid_t pid)
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
    return p ? p[2] : '?';
}

static int sigchld_pending(void)
{
    sigset_t p;
    sigpending(&p);
    return sigismember(&p, SIGCHLD);
}

static void wait_moving(int idx, const char *what)
{
    uint64_t a = counters[idx];
    for (int i = 0; i < 500; i++) {
        wl_sleep_ms(5);
        if (counters[idx] != a)
            return;
    }
    wl_fail("%s: counter does not move", what);
}

static pid_t cont;

static void setup_cont(void)
{
    cont = fork();
    if (cont < 0)
        wl_fail("fork: %s", strerror(errno));
    if (cont == 0)
        for (;;)
            counters[NC + 1]++;
    int ws;
    kill(cont, SIGSTOP);
    WL_CHECK(waitpid(cont, &ws, WUNTRACED) == cont && WIFSTOPPED(ws), "setup: cont stop");
    kill(cont, SIGCONT);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    for (int n = 0; n < 1000 && si.si_pid != cont; n++) {
        waitid(P_PID, cont, &si, WCONTINUED | WNOWAIT | WNOHANG);
        if (si.si_pid != cont)
            wl_sleep_ms(2);
    }
    WL_CHECK(si.si_code == CLD_CONTINUED, "setup: cont not reported continued");
}

static void verify_cont(void)
{
    char st = state_of(cont);
    WL_CHECK(st != 'T' && st != '?', "cont (%d): state %c, want running", cont, st);
    wait_moving(NC + 1, "cont");
    siginfo_t si;
    memset(&si, 0, sizeof si);
    WL_CHECK(waitid(P_PID, cont, &si, WCONTINUED | WNOWAIT | WNOHANG) == 0 && si.si_pid == cont &&
                 si.si_code == CLD_CONTINUED && si.si_status == SIGCONT,
             "cont: waitid(WCONTINUED) pid %d code %d status %d, want its continue", si.si_pid,
             si.si_code, si.si_status);
    int ws = 0;
    WL_CHECK(waitpid(cont, &ws, WCONTINUED | WNOHANG) == cont && WIFCONTINUED(ws),
             "cont: waitpid(WCONTINUED) status %#x", ws);
    WL_CHECK(waitpid(cont, &ws, WCONTINUED | WUNTRACED | WNOHANG) == 0,
             "cont: reported twice (status %#x)", ws);
    kill(cont, SIGKILL);
    WL_CHECK(waitpid(cont, &ws, 0) == cont && WIFSIGNALED(ws), "reaping cont");
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    counters = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counters == MAP_FAILED)
        wl_fail("mmap: %s", strerror(errno));
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    for (int i = 0; i < NC; i++) {
        pid_t p = fork();
        if (p < 0)
            wl_fail("fork: %s", strerror(errno));
        if (p == 0)
            child(i);
        kid[i] = p;
        if (i != STOP)
            setpgid(p, p); /* no race with the child's own setpgid */
        wait_moving(i, names[i]);
    }
    wait_moving(NC, "ttin thread 2");
    setup_cont();
    for (int i = 0; i < NC; i++) {
        kill(kid[i], sigs[i]);
        siginfo_t si;
        memset(&si, 0, sizeof si);
        for (int n = 0; n < 1000 && si.si_pid != kid[i]; n++) {
            waitid(P_PID, kid[i], &si, WSTOPPED | WNOWAIT | WNOHANG);
            if (si.si_pid != kid[i])
                wl_sleep_ms(2);
        }
        WL_CHECK(si.si_pid == kid[i] && si.si_code == CLD_STOPPED && si.si_status == sigs[i],
                 "setup: %s did not stop with %d (code %d status %d)", names[i], sigs[i],
                 si.si_code, si.si_status);
    }
    int ws;
    WL_CHECK(waitpid(kid[TSTP], &ws, WUNTRACED) == kid[TSTP] && WIFSTOPPED(ws),
             "setup: collecting tstp's stop");
    struct timespec zero = {0, 0};
    while (sigtimedwait(&chld, NULL, &zero) == SIGCHLD)
        ;
    wl_ready();

    while (!wl_verify_requested())
        wl_sleep_ms(20);

    WL_CHECK(!sigchld_pending(), "a SIGCHLD is pending that was not before");
    verify_cont();
    uint64_t before[NC + 1];
    for (int i = 0; i <= NC; i++)
        before[i] = counters[i];
    wl_sleep_ms(100);
    for (int i = 0; i < NC; i++) {
        char st = state_of(kid[i]);
        WL_CHECK(st == 'T', "%s (%d): state %c, want T (stopped)", names[i], kid[i], st);
    }
    for (int i = 0; i <= NC; i++)
        WL_CHECK(counters[i] == before[i], "counter %d moved while stopped", i);
    for (int i = 0; i < NC; i++) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        WL_CHECK(waitid(P_PID, kid[i], &si, WSTOPPED | WNOWAIT | WNOHANG) == 0, "waitid %s",
                 names[i]);
        if (i == TSTP) {
            WL_CHECK(si.si_pid == 0, "tstp: its stop is reported again (code %d status %d)",
                     si.si_code, si.si_status);
            continue;
        }
        WL_CHECK(si.si_pid == kid[i] && si.si_code == CLD_STOPPED && si.si_status == sigs[i],
                 "%s: waitid reports pid %d code %d status %d, want a stop by %d", names[i],
                 si.si_pid, si.si_code, si.si_status, sigs[i]);
        WL_CHECK(waitpid(kid[i], &ws, WUNTRACED | WNOHANG) == kid[i] && WIFSTOPPED(ws) &&
                     WSTOPSIG(ws) == sigs[i],
                 "%s: waitpid(WUNTRACED) status %#x", names[i], ws);
    }
    for (int i = 0; i < NC; i++) {
        kill(kid[i], SIGCONT);
        WL_CHECK(waitpid(kid[i], &ws, WCONTINUED) == kid[i] && WIFCONTINUED(ws),
                 "%s: waitpid(WCONTINUED) status %#x", names[i], ws);
        wait_moving(i, names[i]);
    }
    wait_moving(NC, "ttin thread 2 after SIGCONT");
    for (int i = 0; i < NC; i++) {
        kill(kid[i], SIGKILL);
        WL_CHECK(waitpid(kid[i], &ws, 0) == kid[i] && WIFSIGNALED(ws), "reaping %s", names[i]);
    }
    wl_report(1, "ok");
}
