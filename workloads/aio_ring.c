/*
 * aio_ring - Linux AIO contexts (io_setup rings) with raw syscalls, no libaio.
 *
 * Root process, set up before the checkpoint:
 *   - A: an empty context;
 *   - B: 20 completed, unreaped events (head 0, tail 20);
 *   - C: 120 events reaped, then 15 completed: head 120, tail 8 (wrapped around the ring);
 *   - D: a 5-page ring, 240 reaped and 30 completed across a page boundary;
 *   - F: a 2-page ring of 255 events holding 200 completed ones (the process is pinned to one
 *     CPU: the kernel hands out slots in per-CPU batches, a migration would strand some).
 * A child (fork) with its own context E (5 completed, 2 reaped through the ring) and the
 * copies of its parent's rings that fork gave it (no context of its own behind them).
 *
 * Verify (after any number of restores): the context ids are the ring addresses, the headers
 * (nr, head, tail, magic, features) are as they were; the saved events are reaped with their
 * user data, res, res2 and obj, half by io_getevents, half by reading the ring directly as
 * libaio does (head moved by hand); the child sees its parent's rings through its copies
 * (shared: the parent's reaping moves the head it sees) and they are not contexts of its own;
 * new submissions complete and are reaped correctly three times around every ring; io_destroy
 * works and removes the ring.
 *
 * `outside`: the root has a context with 3 completed events and a child holds the copy of its
 * ring that fork gave it; the child's pid is in CTL_DIR/child. A checkpoint of the child alone
 * (the owner of the ring outside the tree) must be refused; both verify afterwards.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct ring {
    unsigned id, nr, head, tail, magic, compat, incompat, hdr;
    struct io_event ev[];
};

#define NCTX 6
#define SLOTS 1024
#define MAGIC 0xa10a10a1u

static const char *NAME = "ABCDEF";
static aio_context_t ctx[NCTX];
static struct iocb cb[NCTX][SLOTS];
static unsigned char buf[NCTX][SLOTS][8];
static uint64_t submitted[NCTX], reaped[NCTX];
static unsigned ring_nr[NCTX];
static int mfd;
static unsigned char content[4096];

static unsigned len_of(uint64_t seq) { return 1 + (unsigned)(seq % 7); }
static uint64_t off_of(uint64_t seq) { return (seq * 13) % 4000; }

static void submit(int k, int n)
{
    struct iocb *ptrs[64];
    WL_CHECK(n <= 64, "batch too large");
    for (int i = 0; i < n; i++) {
        uint64_t seq = submitted[k] + (uint64_t)i;
        struct iocb *c = &cb[k][seq % SLOTS];
        memset(c, 0, sizeof *c);
        c->aio_data = ((uint64_t)k << 32) | seq;
        c->aio_lio_opcode = IOCB_CMD_PREAD;
        c->aio_fildes = (uint32_t)mfd;
        c->aio_buf = (uint64_t)(uintptr_t)buf[k][seq % SLOTS];
        c->aio_nbytes = len_of(seq);
        c->aio_offset = (int64_t)off_of(seq);
        memset(buf[k][seq % SLOTS], 0xee, 8);
        ptrs[i] = c;
    }
    long r = syscall(SYS_io_submit, ctx[k], (long)n, ptrs);
    WL_CHECK(r == n, "%c: io_submit of %d gave %ld (%s)", NAME[k], n, r, strerror(errno));
    submitted[k] += (uint64_t)n;
}

static void check_event(int k, const struct io_event *ev, const char *how)
{
    uint64_t seq = reaped[k];
    const struct iocb *c = &cb[k][seq % SLOTS];
    WL_CHECK(ev->data == (((uint64_t)k << 32) | seq),
             "%c (%s): event %llu has data %#llx, expected %#llx", NAME[k], how,
             (unsigned long long)seq, (unsigned long long)ev->data,
             (unsigned long long)(((uint64_t)k << 32) | seq));
    WL_CHECK(ev->obj == (uint64_t)(uintptr_t)c, "%c (%s): event %llu obj %#llx, expected %p",
             NAME[k], how, (unsigned long long)seq, (unsigned long long)ev->obj, (void *)c);
    WL_CHECK(ev->res == (int64_t)len_of(seq) && ev->res2 == 0,
             "%c (%s): event %llu res %lld res2 %lld, expected %u 0", NAME[k], how,
             (unsigned long long)seq, (long long)ev->res, (long long)ev->res2, len_of(seq));
    WL_CHECK(memcmp(buf[k][seq % SLOTS], content + off_of(seq), len_of(seq)) == 0,
             "%c (%s): event %llu: the bytes read differ from the file", NAME[k], how,
             (unsigned long long)seq);
    reaped[k]++;
}

static void reap_sys(int k, int n)
{
    struct io_event ev[64];
    struct timespec ts = {5, 0};
    WL_CHECK(n <= 64, "batch too large");
    long r = syscall(SYS_io_getevents, ctx[k], (long)n, (long)n, ev, &ts);
    WL_CHECK(r == n, "%c: io_getevents(%d) gave %ld (%s)", NAME[k], n, r, strerror(errno));
    for (int i = 0; i < n; i++)
        check_event(k, &ev[i], "io_getevents");
}

/* libaio's user-space fast path: read the events between head and tail, move head. */
static void reap_ring(int k, int n)
{
    struct ring *r = (struct ring *)ctx[k];
    for (int i = 0; i < n; i++) {
        unsigned head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
        unsigned tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
        WL_CHECK(head != tail, "%c: ring empty (head %u) with %d events still expected",
                 NAME[k], head, n - i);
        struct io_event ev = r->ev[head];
        check_event(k, &ev, "ring");
        __atomic_store_n(&r->head, (head + 1) % r->nr, __ATOMIC_RELEASE);
    }
}

static void check_header(const char *who, const struct ring *r, unsigned nr, unsigned head,
                         unsigned tail)
{
    WL_CHECK(r->magic == MAGIC && r->compat == 1 && r->incompat == 0 && r->hdr == 32,
             "%s: ring header magic %#x compat %u incompat %u length %u", who, r->magic,
             r->compat, r->incompat, r->hdr);
    WL_CHECK(r->nr == nr && r->head == head && r->tail == tail,
             "%s: ring nr %u head %u tail %u, expected %u %u %u", who, r->nr, r->head, r->tail,
             nr, head, tail);
}

static void setup(int k, unsigned n)
{
    ctx[k] = 0;
    WL_CHECK(syscall(SYS_io_setup, n, &ctx[k]) == 0, "io_setup %c: %s", NAME[k], strerror(errno));
    ring_nr[k] = ((struct ring *)ctx[k])->nr;
}

/* Advance context k by `cycles` batches of `b` submitted and reaped at once. */
static void advance(int k, int cycles, int b, int use_ring)
{
    for (int i = 0; i < cycles; i++) {
        submit(k, b);
        if (use_ring && (i & 1))
            reap_ring(k, b);
        else
            reap_sys(k, b);
    }
}

/* Is there a "/[aio]" mapping of `len` bytes at addr in this process? */
static int ring_mapped(uint64_t addr, uint64_t len)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s == addr && strstr(line, "/[aio]"))
            found = (e - s == len);
    }
    if (f)
        fclose(f);
    return found;
}

static uint64_t ring_len(unsigned nr) { return ((uint64_t)(nr + 1) * 32 + 4095) & ~4095ull; }

/* New submissions go around the ring three times, alternating the ways of reaping. */
static void around(int k)
{
    int b = (int)((ring_nr[k] - 1) / 4);
    if (b > 32)
        b = 32;
    int cycles = (int)(3 * ring_nr[k] / (unsigned)b) + 2;
    advance(k, cycles, b, 1);
    struct ring *r = (struct ring *)ctx[k];
    unsigned at = (unsigned)(submitted[k] % ring_nr[k]);
    check_header(NAME[k] == 'E' ? "E after new submissions" : "after new submissions", r,
                 ring_nr[k], at, at);
}

static void destroy(int k)
{
    struct io_event ev;
    struct timespec zero = {0, 0};
    uint64_t len = ring_len(ring_nr[k]);
    WL_CHECK(syscall(SYS_io_destroy, ctx[k]) == 0, "io_destroy %c: %s", NAME[k], strerror(errno));
    WL_CHECK(syscall(SYS_io_getevents, ctx[k], 0L, 1L, &ev, &zero) == -1 && errno == EINVAL,
             "%c: the context still answers after io_destroy", NAME[k]);
    WL_CHECK(!ring_mapped(ctx[k], len), "%c: ring still mapped after io_destroy", NAME[k]);
}

static void child(int to_parent, int from_parent)
{
    setup(4, 16);
    submit(4, 5);
    reap_ring(4, 2);
    if (write(to_parent, "x", 1) != 1)
        _exit(3);
    while (!wl_verify_requested())
        wl_sleep_ms(20);
    struct ring *e = (struct ring *)ctx[4];
    WL_CHECK(ring_mapped(ctx[4], ring_len(ring_nr[4])), "E: no ring mapping at the context id");
    check_header("E", e, ring_nr[4], 2, 5);
    reap_ring(4, 2);
    reap_sys(4, 1);
    /* The parent's rings, as fork copied them: not contexts of this process, but the same
     * pages as the parent's. */
    struct io_event ev;
    struct timespec zero = {0, 0};
    for (int k = 0; k < 6; k++) {
        if (k == 4)
            continue;
        WL_CHECK(ring_mapped(ctx[k], ring_len(ring_nr[k])), "child: %c's ring not mapped",
                 NAME[k]);
        WL_CHECK(syscall(SYS_io_getevents, ctx[k], 0L, 1L, &ev, &zero) == -1 && errno == EINVAL,
                 "child: its parent's context %c answers in the child", NAME[k]);
    }
    check_header("B seen by the child", (struct ring *)ctx[1], ring_nr[1], 0, 20);
    if (write(to_parent, "v", 1) != 1)
        _exit(3);
    char c;
    WL_CHECK(read(from_parent, &c, 1) == 1, "child: the parent did not answer");
    check_header("B seen by the child after the parent reaped it", (struct ring *)ctx[1],
                 ring_nr[1], 20, 20);
    if (write(to_parent, "w", 1) != 1)
        _exit(3);
    around(4);
    destroy(4);
    wl_report(1, "ok");
}

static void outside_mode(void)
{
    setup(0, 8);
    submit(0, 3);
    int p[2];
    char c;
    if (pipe(p) < 0)
        wl_fail("pipe: %m");
    pid_t pid = fork();
    if (pid < 0)
        wl_fail("fork: %m");
    if (pid == 0) {
        close(p[0]);
        FILE *f = fopen("child.tmp", "w");
        if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) != 0 ||
            rename("child.tmp", "child") < 0)
            _exit(3);
        if (write(p[1], "x", 1) != 1)
            _exit(3);
        while (!wl_verify_requested())
            wl_sleep_ms(20);
        check_header("A seen by the child", (struct ring *)ctx[0], ring_nr[0], 0, 3);
        wl_report(1, "ok");
    }
    close(p[1]);
    if (read(p[0], &c, 1) != 1)
        wl_fail("the child died during its setup");
    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);
    int st;
    WL_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "the child failed (status %#x)", st);
    reap_sys(0, 3);
    destroy(0);
    wl_report(1, "ok");
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    wl_fill_pattern(content, sizeof content, 0xa10);
    mfd = memfd_create("aio_ring", 0);
    if (mfd < 0 || pwrite(mfd, content, sizeof content, 0) != (ssize_t)sizeof content)
        wl_fail("memfd: %m");
    if (argc > 2 && strcmp(argv[2], "outside") == 0)
        outside_mode();

    setup(0, 8);
    setup(1, 32);
    submit(1, 20);
    setup(2, 4);
    advance(2, 4, 30, 1);
    submit(2, 15);
    setup(3, 300);
    WL_CHECK(ring_nr[3] > 255 + 16, "D: ring of %u events (more than two pages expected)",
             ring_nr[3]);
    advance(3, 6, 40, 1);
    submit(3, 30);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    if (sched_setaffinity(0, sizeof one, &one) < 0)
        wl_fail("sched_setaffinity: %m");
    setup(5, 64);
    for (int i = 0; i < 4; i++)
        submit(5, 50);

    int up[2], down[2];
    if (pipe(up) < 0 || pipe(down) < 0)
        wl_fail("pipe: %m");
    pid_t pid = fork();
    if (pid < 0)
        wl_fail("fork: %m");
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        child(up[1], down[0]);
    }
    close(up[1]);
    close(down[0]);
    char c;
    if (read(up[0], &c, 1) != 1)
        wl_fail("the child died during its setup");
    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(20);

    unsigned heads[6] = {0, 0, 120, 240, 0, 0};
    unsigned tails[6] = {0, 20, (unsigned)(135 % ring_nr[2]), 270, 0, 200};
    for (int k = 0; k < 6; k++) {
        if (k == 4)
            continue;
        char who[32];
        snprintf(who, sizeof who, "%c", NAME[k]);
        WL_CHECK(ring_mapped(ctx[k], ring_len(ring_nr[k])),
                 "%c: no ring mapping of %llu bytes at the context id %#llx", NAME[k],
                 (unsigned long long)ring_len(ring_nr[k]), (unsigned long long)ctx[k]);
        check_header(who, (struct ring *)ctx[k], ring_nr[k], heads[k], tails[k]);
    }
    struct io_event ev;
    struct timespec zero = {0, 0};
    WL_CHECK(syscall(SYS_io_getevents, ctx[0], 0L, 1L, &ev, &zero) == 0,
             "A: io_getevents on the empty context: %s", strerror(errno));
    WL_CHECK(read(up[0], &c, 1) == 1 && c == 'v', "the child failed before B was reaped");
    reap_ring(1, 10);
    reap_sys(1, 10);
    if (write(down[1], "r", 1) != 1)
        wl_fail("write to the child: %m");
    reap_sys(2, 7);
    reap_ring(2, 8);
    reap_ring(3, 15);
    reap_sys(3, 15);
    WL_CHECK(ring_nr[5] == 255, "F: ring of %u events, expected 255", ring_nr[5]);
    for (int i = 0; i < 5; i++) {
        reap_ring(5, 20);
        reap_sys(5, 20);
    }
    WL_CHECK(read(up[0], &c, 1) == 1 && c == 'w', "the child failed checking B's head");
    for (int k = 0; k < 6; k++)
        if (k != 4)
            around(k);
    int st;
    WL_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "the child failed (status %#x)", st);
    for (int k = 0; k < 6; k++)
        if (k != 4)
            destroy(k);
    wl_report(1, "ok");
}
