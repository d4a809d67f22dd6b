/*
 * multiproc.c - a process tree with sessions, process groups and pipes.
 *
 * Tree:   root ─┬─ A ── A1      (A1: setpgid(0,0), its own process group)
 *               └─ B ── B1      (B: setsid(), new session; B1 in it)
 * State tested:
 *   - every process records getpid, getppid, getpgrp, getsid(0) at setup;
 *     on verify each checks they are unchanged (except the root's ppid,
 *     which legitimately changes when the root is restored);
 *   - each process has a private 256 KiB malloc'd pattern with its own seed
 *     (after fork, so COW copies must stay separate);
 *   - a pipe from each child to its parent, kept open: at setup the child
 *     writes an 8-byte greeting that stays unread in the pipe buffer until
 *     verify (pipe contents must survive); at verify the child writes its
 *     verdict byte ('P'/'F') after the greeting, then _exit()s 0/1;
 *   - the parent reads greeting + verdict (bounded wait), then waitpid()s
 *     the child and checks exit status 0 (parent/child links survive).
 *   Leaves finish first, then A and B, then the root writes the result.
 *   Setup sync uses separate pipes that are closed before wl_ready().
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { ROOT, A, B, A1, B1, NROLES };
static const char *role_name[NROLES] = {"root", "A", "B", "A1", "B1"};
static const int children_of[NROLES][2] = {
    [ROOT] = {A, B}, [A] = {A1, -1}, [B] = {B1, -1}, [A1] = {-1, -1}, [B1] = {-1, -1},
};

#define MEM_SIZE (256 * 1024)

static int role;
static pid_t my_pid, my_ppid, my_pgrp, my_sid;
static unsigned char *mem;
static int up_vp = -1; /* verdict pipe write end to the parent */
static struct child {
    int role;
    pid_t pid;
    int vp; /* verdict pipe read end */
} kids[2];
static int nkids;
static char err[700];

#define ERR(...) do { if (!err[0]) snprintf(err, sizeof err, __VA_ARGS__); } while (0)

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000ULL + (uint64_t)ts.tv_nsec / 1000000ULL;
}

static void greeting(int r, char out[8])
{
    memset(out, 0, 8);
    snprintf(out, 8, "hi-%s", role_name[r]);
    out[7] = '\n'; /* exactly 8 bytes: "hi-A1\0\0\n" etc. */
}

/* read exactly n bytes, waiting at most timeout_ms in total; returns bytes read */
static size_t read_bounded(int fd, void *buf, size_t n, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    size_t got = 0;
    while (got < n) {
        uint64_t now = now_ms();
        if (now >= deadline)
            break;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    return got;
}

static int write_all(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, (const char *)buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        done += (size_t)w;
    }
    return 0;
}

static void die_setup(const char *what)
{
    /* setup failure: in the root report it, elsewhere exit non-zero */
    wl_fail("%s: setup: %s: %m", role_name[role], what);
}

static void node(int r, int up_sync) __attribute__((noreturn));

static void spawn_child(int c)
{
    int vp[2], sp[2];
    if (pipe2(vp, O_CLOEXEC) < 0 || pipe2(sp, O_CLOEXEC) < 0)
        die_setup("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die_setup("fork");
    if (pid == 0) {
        /* close the parent's ends: verdict pipes of earlier siblings, ours */
        for (int i = 0; i < nkids; i++)
            close(kids[i].vp);
        nkids = 0;
        if (up_vp >= 0)
            close(up_vp);
        close(vp[0]);
        close(sp[0]);
        up_vp = vp[1];
        node(c, sp[1]);
    }
    close(vp[1]);
    close(sp[1]);
    kids[nkids].role = c;
    kids[nkids].pid = pid;
    kids[nkids].vp = vp[0];
    nkids++;
    char b;
    if (read_bounded(sp[0], &b, 1, 10000) != 1) {
        kill(pid, SIGKILL);
        wl_fail("%s: child %s did not finish setup", role_name[role], role_name[c]);
    }
    close(sp[0]);
}

static void verify(void)
{
    if (getpid() != my_pid)
        ERR("%s: pid %d, expected %d", role_name[role], (int)getpid(), (int)my_pid);
    if (role != ROOT && getppid() != my_ppid)
        ERR("%s: ppid %d, expected %d", role_name[role], (int)getppid(), (int)my_ppid);
    if (getpgrp() != my_pgrp)
        ERR("%s: pgrp %d, expected %d", role_name[role], (int)getpgrp(), (int)my_pgrp);
    if (getsid(0) != my_sid)
        ERR("%s: sid %d, expected %d", role_name[role], (int)getsid(0), (int)my_sid);
    if (!wl_check_pattern(mem, MEM_SIZE, 0x3000 + (uint64_t)role))
        ERR("%s: private memory pattern corrupted", role_name[role]);
    if (up_vp >= 0) {
        struct stat st;
        if (fstat(up_vp, &st) < 0 || !S_ISFIFO(st.st_mode))
            ERR("%s: verdict pipe fd %d to parent is gone or not a pipe", role_name[role], up_vp);
    }

    for (int i = 0; i < nkids; i++) {
        struct child *k = &kids[i];
        const char *cn = role_name[k->role];
        char want[8], got[9];
        greeting(k->role, want);
        size_t n = read_bounded(k->vp, got, 9, 15000);
        if (n < 8 || memcmp(got, want, 8) != 0)
            ERR("%s: greeting from %s in pipe lost/corrupted (%zu bytes read)", role_name[role], cn, n);
        else if (n < 9)
            ERR("%s: no verdict byte from %s (pipe closed, or 15 s timeout)", role_name[role], cn);
        else if (got[8] != 'P')
            ERR("%s: %s reported failure (verdict '%c'; see out.log)", role_name[role], cn, got[8]);
        int status = 0;
        pid_t w = 0;
        uint64_t deadline = now_ms() + 15000;
        for (;;) {
            w = waitpid(k->pid, &status, WNOHANG);
            if (w == k->pid || (w < 0 && errno != EINTR))
                break;
            if (now_ms() > deadline) {
                kill(k->pid, SIGKILL);
                waitpid(k->pid, &status, 0);
                ERR("%s: %s (pid %d) did not exit within 15 s", role_name[role], cn, (int)k->pid);
                w = -2;
                break;
            }
            wl_sleep_ms(2);
        }
        if (w == -1)
            ERR("%s: waitpid(%s pid %d): %s (child link lost?)", role_name[role], cn, (int)k->pid, strerror(errno));
        else if (w == k->pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
            ERR("%s: %s (pid %d) exit status %#x", role_name[role], cn, (int)k->pid, status);
        close(k->vp);
    }

    if (role != ROOT) {
        char v = err[0] ? 'F' : 'P';
        write_all(up_vp, &v, 1);
    }
    if (err[0])
        wl_fail("%s", err);
    wl_report(1, "ok");
}

static void node(int r, int up_sync)
{
    role = r;
    if (r == B && setsid() < 0)
        die_setup("setsid");
    if (r == A1 && setpgid(0, 0) < 0)
        die_setup("setpgid");
    my_pid = getpid();
    my_ppid = getppid();
    my_pgrp = getpgrp();
    my_sid = getsid(0);
    if (r == B && (my_sid != my_pid || my_pgrp != my_pid))
        wl_fail("B: setsid did not take effect");
    if (r == A1 && my_pgrp != my_pid)
        wl_fail("A1: setpgid did not take effect");
    mem = malloc(MEM_SIZE);
    if (!mem)
        die_setup("malloc");
    wl_fill_pattern(mem, MEM_SIZE, 0x3000 + (uint64_t)r);

    for (int i = 0; i < 2; i++)
        if (children_of[r][i] >= 0)
            spawn_child(children_of[r][i]);

    if (r == ROOT) {
        wl_ready();
    } else {
        char g[8];
        greeting(r, g);
        if (write_all(up_vp, g, 8) < 0)
            die_setup("write greeting");
        char b = 1;
        if (write_all(up_sync, &b, 1) < 0)
            die_setup("write sync");
        close(up_sync);
    }

    while (!wl_verify_requested()) {
        if (r != ROOT && getppid() != my_ppid)
            wl_fail("%s: parent %d died (ppid now %d)", role_name[r], (int)my_ppid, (int)getppid());
        wl_sleep_ms(10);
    }
    verify();
    _exit(1); /* not reached */
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    node(ROOT, -1);
}
