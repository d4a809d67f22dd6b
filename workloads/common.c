/* common.c - implementation of the workload protocol (see common.h). */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WL_TIMEOUT_SEC 300

static char wl_dir[PATH_MAX];
/* Set in every child created with fork() (pthread_atfork handler); memory
 * based, so it survives a restore even if pids were to change. */
static volatile int wl_is_child;
static struct timespec wl_start;

static void wl_atfork_child(void)
{
    wl_is_child = 1;
}

static void wl_die(const char *what)
{
    dprintf(2, "workload: %s: %s\n", what, strerror(errno));
    _exit(2);
}

static void wl_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", wl_dir, name);
}

/* Atomically write `content` to CTL_DIR/name (via name.tmp.<pid> + rename).
 * Returns 0 on success, -1 on error.  Tolerates EINTR. */
static int wl_write_atomic(const char *name, const char *content)
{
    char tmp[PATH_MAX + 64], dst[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp.%d", wl_dir, name, (int)getpid());
    wl_path(dst, sizeof dst, name);
    int fd;
    do
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -1;
    size_t len = strlen(content), off = 0;
    while (off < len) {
        ssize_t w = write(fd, content + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    while (fsync(fd) < 0 && errno == EINTR)
        ;
    close(fd);
    if (rename(tmp, dst) < 0)
        return -1;
    return 0;
}

void wl_init(int argc, char **argv)
{
    if (argc < 2) {
        dprintf(2, "usage: %s CTL_DIR [args...]\n", argc > 0 ? argv[0] : "workload");
        _exit(2);
    }
    if (strlen(argv[1]) >= sizeof wl_dir - 32) {
        dprintf(2, "workload: CTL_DIR too long\n");
        _exit(2);
    }
    if (argv[1][0] == '/') {
        snprintf(wl_dir, sizeof wl_dir, "%s", argv[1]);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd))
            wl_die("getcwd");
        if (snprintf(wl_dir, sizeof wl_dir, "%s/%s", cwd, argv[1]) >= (int)sizeof wl_dir) {
            dprintf(2, "workload: CTL_DIR too long\n");
            _exit(2);
        }
    }
    if (chdir(wl_dir) < 0)
        wl_die("chdir CTL_DIR");
    pthread_atfork(NULL, NULL, wl_atfork_child);
    clock_gettime(CLOCK_MONOTONIC, &wl_start);
    /* Unbuffered diagnostics: nothing sits in stdio buffers across a dump. */
    setvbuf(stdout, NULL, _IONBF, 0);
    setvbuf(stderr, NULL, _IONBF, 0);
}

const char *wl_ctl_dir(void)
{
    return wl_dir;
}

void wl_ready(void)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (wl_write_atomic("ready", buf) < 0)
        wl_die("write ready");
}

int wl_verify_requested(void)
{
    char p[PATH_MAX + 64];
    wl_path(p, sizeof p, "verify");
    if (access(p, F_OK) == 0)
        return 1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - wl_start.tv_sec > WL_TIMEOUT_SEC)
        wl_report(0, "timeout: no verify request within %d s (pid %d)",
                  WL_TIMEOUT_SEC, (int)getpid());
    return 0;
}

void wl_sleep_ms(int ms)
{
    if (ms <= 0)
        return;
    struct timespec req = {ms / 1000, (long)(ms % 1000) * 1000000L}, rem;
    while (nanosleep(&req, &rem) < 0 && errno == EINTR)
        req = rem;
}

void wl_report(int ok, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt ? fmt : "", ap);
    va_end(ap);

    if (wl_is_child) {
        /* Non-root process of a multi-process workload: verdict via exit
         * status only (plus a diagnostic in out.log on failure). */
        if (!ok)
            dprintf(2, "FAIL (pid %d): %s\n", (int)getpid(), msg);
        _exit(ok ? 0 : 1);
    }

    char content[1100];
    if (ok)
        snprintf(content, sizeof content, "PASS\n");
    else
        snprintf(content, sizeof content, "FAIL: %s\n", msg);
    if (!ok)
        dprintf(2, "FAIL (pid %d): %s\n", (int)getpid(), msg);
    if (wl_write_atomic("result", content) < 0)
        wl_die("write result");
    _exit(ok ? 0 : 1);
}

uint64_t wl_hash(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* splitmix64 of (seed, 8-byte word index): fast and position dependent. */
static inline uint64_t wl_mix(uint64_t seed, uint64_t idx)
{
    uint64_t z = seed * 0x9e3779b97f4a7c15ULL + idx * 0xbf58476d1ce4e5b9ULL + 0x94d049bb133111ebULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline unsigned char wl_byte(uint64_t seed, size_t i)
{
    return (unsigned char)(wl_mix(seed, i >> 3) >> ((i & 7) * 8));
}

void wl_fill_pattern(void *p, size_t n, uint64_t seed)
{
    unsigned char *b = p;
    size_t i = 0;
    for (; i < n && (i & 7); i++)
        b[i] = wl_byte(seed, i);
    for (; i + 8 <= n; i += 8) {
        uint64_t w = wl_mix(seed, i >> 3);
        memcpy(b + i, &w, 8);
    }
    for (; i < n; i++)
        b[i] = wl_byte(seed, i);
}

int wl_check_pattern(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    size_t i = 0;
    for (; i < n && (i & 7); i++)
        if (b[i] != wl_byte(seed, i))
            return 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = wl_mix(seed, i >> 3), got;
        memcpy(&got, b + i, 8);
        if (got != w)
            return 0;
    }
    for (; i < n; i++)
        if (b[i] != wl_byte(seed, i))
            return 0;
    return 1;
}
