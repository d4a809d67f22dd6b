/*
 * mem_shared.c - shared anonymous memory between parent and child.
 *
 * State tested:
 *   - S: a 2 MiB MAP_SHARED|MAP_ANONYMOUS region created before fork().
 *     Page 0 is a control block; after fork the parent fills S[parent half]
 *     and the child fills S[child half] with their own patterns, and each
 *     checks the other's half on verify.  After the verify file appears the
 *     two run a handshake through S (parent writes a nonce, the child must
 *     see it and answer with a value derived from it plus its own nonce,
 *     which the parent must see) with a bounded wait: this proves that the
 *     restored parent and child still share the same pages.
 *   - P: a 1 MiB MAP_PRIVATE|MAP_ANONYMOUS region created before fork(),
 *     rewritten after fork with different patterns by parent and child
 *     (COW; must stay private to each).
 *   - Q: a 1 MiB MAP_SHARED|MAP_ANONYMOUS region created by the parent
 *     AFTER fork: the parent checks its pattern; the child checks that the
 *     address is not mapped in its own address space (mincore -> ENOMEM).
 *   - the child's getppid() and the parent's waitpid() of the child
 *     (child verdict = exit status).
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG 4096UL
#define S_SIZE (2UL << 20)
#define HALF ((S_SIZE - PG) / 2)
#define P_SIZE (1UL << 20)
#define Q_SIZE (1UL << 20)

#define SEED_S_PARENT 0x5A1
#define SEED_S_CHILD 0x5A2
#define SEED_P_PARENT 0x9A1
#define SEED_P_CHILD 0x9A2
#define SEED_P_ORIG 0x9A0
#define SEED_Q 0x0A1

struct ctl {
    uint64_t child_ready;   /* child finished its setup */
    uint64_t ping;          /* parent's nonce (0 = none yet) */
    uint64_t pong;          /* child's answer: ping ^ 0xFFFF0000FFFF0000 */
    uint64_t child_nonce;   /* child's own nonce, written with pong */
    uint64_t q_addr;        /* address of parent's post-fork region Q */
    uint64_t child_ticks;   /* incremented by the child while looping */
    uint64_t parent_ticks;  /* incremented by the parent while looping */
};

static unsigned char *S, *P, *Q;
static struct ctl *C;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t ld(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static void st(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

static void child_main(pid_t parent)
{
    wl_fill_pattern(S + PG + HALF, HALF, SEED_S_CHILD);
    wl_fill_pattern(P, P_SIZE, SEED_P_CHILD);
    st(&C->child_ready, 1);

    while (!wl_verify_requested()) {
        if (getppid() != parent)
            wl_fail("child: parent %d gone (ppid now %d)", (int)parent, (int)getppid());
        __atomic_add_fetch(&C->child_ticks, 1, __ATOMIC_SEQ_CST);
        wl_sleep_ms(10);
    }

    WL_CHECK(getppid() == parent, "child: ppid %d, expected %d", (int)getppid(), (int)parent);
    WL_CHECK(wl_check_pattern(S + PG + HALF, HALF, SEED_S_CHILD), "child: own half of S corrupted");
    WL_CHECK(wl_check_pattern(P, P_SIZE, SEED_P_CHILD), "child: private region P corrupted (not private?)");
    /* Q must not be mapped here (wait until the parent has published it) */
    uint64_t q = ld(&C->q_addr);
    WL_CHECK(q != 0, "child: parent never published Q address");
    unsigned char vec[1];
    int r = mincore((void *)(uintptr_t)q, PG, vec);
    WL_CHECK(r < 0 && errno == ENOMEM, "child: parent's post-fork region %#lx is mapped in child (mincore=%d errno=%d)",
             (unsigned long)q, r, errno);

    /* handshake: wait for the parent's nonce, answer it */
    uint64_t deadline = now_ns() + 15ULL * 1000000000ULL, ping;
    while ((ping = ld(&C->ping)) == 0) {
        if (now_ns() > deadline)
            wl_fail("child: no ping from parent through shared memory within 15 s");
        wl_sleep_ms(1);
    }
    st(&C->child_nonce, ping * 3 + 7);
    st(&C->pong, ping ^ 0xFFFF0000FFFF0000ULL);
    /* the parent's half is checked last: it finished writing before fork+ready */
    WL_CHECK(wl_check_pattern(S + PG, HALF, SEED_S_PARENT), "child: parent's half of S not visible/corrupted");
    wl_report(1, "ok");
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);

    S = mmap(NULL, S_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    P = mmap(NULL, P_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (S == MAP_FAILED || P == MAP_FAILED)
        wl_fail("mmap: %m");
    C = (struct ctl *)S;
    wl_fill_pattern(P, P_SIZE, SEED_P_ORIG);

    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0)
        wl_fail("fork: %m");
    if (child == 0)
        child_main(parent);

    wl_fill_pattern(S + PG, HALF, SEED_S_PARENT);
    wl_fill_pattern(P, P_SIZE, SEED_P_PARENT);
    Q = mmap(NULL, Q_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (Q == MAP_FAILED)
        wl_fail("mmap Q: %m");
    wl_fill_pattern(Q, Q_SIZE, SEED_Q);
    st(&C->q_addr, (uint64_t)(uintptr_t)Q);

    uint64_t deadline = now_ns() + 10ULL * 1000000000ULL;
    while (!ld(&C->child_ready)) {
        if (now_ns() > deadline) {
            kill(child, SIGKILL);
            wl_fail("child setup did not finish within 10 s");
        }
        wl_sleep_ms(1);
    }
    wl_ready();

    while (!wl_verify_requested()) {
        __atomic_add_fetch(&C->parent_ticks, 1, __ATOMIC_SEQ_CST);
        wl_sleep_ms(10);
    }

    char err[512] = "";
#define PCHECK(cond, ...) do { if (!err[0] && !(cond)) snprintf(err, sizeof err, __VA_ARGS__); } while (0)
    PCHECK(wl_check_pattern(S + PG, HALF, SEED_S_PARENT), "parent: own half of S corrupted");
    PCHECK(wl_check_pattern(P, P_SIZE, SEED_P_PARENT), "parent: private region P corrupted (not private?)");
    PCHECK(wl_check_pattern(Q, Q_SIZE, SEED_Q), "parent: post-fork shared region Q corrupted");

    /* handshake */
    uint64_t nonce = (now_ns() | 1) & 0x7fffffffffffffffULL;
    st(&C->ping, nonce);
    deadline = now_ns() + 15ULL * 1000000000ULL;
    uint64_t pong;
    while ((pong = ld(&C->pong)) == 0 && now_ns() < deadline)
        wl_sleep_ms(1);
    if (pong == 0) {
        PCHECK(0, "parent: child never answered the shared-memory ping within 15 s");
    } else {
        PCHECK(pong == (nonce ^ 0xFFFF0000FFFF0000ULL), "parent: pong %#llx, expected %#llx",
               (unsigned long long)pong, (unsigned long long)(nonce ^ 0xFFFF0000FFFF0000ULL));
        uint64_t cn = ld(&C->child_nonce);
        PCHECK(cn == nonce * 3 + 7, "parent: child nonce %#llx, expected %#llx",
               (unsigned long long)cn, (unsigned long long)(nonce * 3 + 7));
    }
    PCHECK(wl_check_pattern(S + PG + HALF, HALF, SEED_S_CHILD), "parent: child's half of S not visible/corrupted");

    /* reap the child (bounded) */
    int status = 0;
    pid_t w = 0;
    deadline = now_ns() + 20ULL * 1000000000ULL;
    for (;;) {
        w = waitpid(child, &status, WNOHANG);
        if (w == child || (w < 0 && errno != EINTR))
            break;
        if (now_ns() > deadline) {
            kill(child, SIGKILL);
            waitpid(child, &status, 0);
            wl_fail("%s%schild %d did not exit within 20 s of verify", err, err[0] ? "; " : "", (int)child);
        }
        wl_sleep_ms(2);
    }
    if (w != child)
        wl_fail("%s%swaitpid(child %d): %m", err, err[0] ? "; " : "", (int)child);
    if (err[0])
        wl_fail("%s (child status %#x)", err, status);
    WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
             "child %d failed: status %#x (see out.log)", (int)child, status);
    wl_report(1, "ok");
}
