/*
 * partition_limits.c - resource limits of a partition, exercised on request (after any number
 * of checkpoints and restores).  Used by crates/stasis-cli/tests/partition.rs.
 *
 * Usage: partition_limits CTL_DIR NFORKS HOG_MIB
 *
 * Set up: a buffer with a known pattern; then wl_ready().  The main loop then serves triggers
 * (files the test creates in CTL_DIR), each once:
 *   fork   -> fork NFORKS children that block on a pipe, count the forks that fail, release
 *             and reap the children, write CTL_DIR/forks: "ok=N failed=M errno=E"
 *   hog    -> fork a child that locks its memory (mlockall, so nothing can go to swap) and
 *             touches HOG_MIB MiB of anonymous memory, 1 MiB at a time; write CTL_DIR/hogged:
 *             "signal S" if it was killed, "exit C" if it exited (C = 0: it got all the memory)
 *   verify -> the pattern buffer is intact: PASS (the fork and hog results are judged by the
 *             test).
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PATTERN_LEN (256 * 1024)
#define PATTERN_SEED 0x5eed1e55ULL

static int trigger(const char *name)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", wl_ctl_dir(), name);
    if (access(p, F_OK) != 0)
        return 0;
    unlink(p);
    return 1;
}

static void write_file(const char *name, const char *content)
{
    char tmp[PATH_MAX + 64], dst[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", wl_ctl_dir(), name);
    snprintf(dst, sizeof dst, "%s/%s", wl_ctl_dir(), name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        wl_fail("open %s: %s", tmp, strerror(errno));
    size_t len = strlen(content);
    if (write(fd, content, len) != (ssize_t)len)
        wl_fail("write %s: %s", tmp, strerror(errno));
    fsync(fd);
    close(fd);
    if (rename(tmp, dst) < 0)
        wl_fail("rename %s: %s", tmp, strerror(errno));
}

static void fork_test(int nforks)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        wl_fail("pipe: %s", strerror(errno));
    pid_t *kids = calloc((size_t)nforks, sizeof *kids);
    if (!kids)
        wl_fail("calloc");
    int ok = 0, failed = 0, last_errno = 0;
    for (int i = 0; i < nforks; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            char c;
            close(p[1]);
            while (read(p[0], &c, 1) < 0 && errno == EINTR)
                ;
            _exit(0);
        }
        if (pid < 0) {
            failed++;
            last_errno = errno;
        } else {
            kids[ok++] = pid;
        }
    }
    close(p[1]);
    close(p[0]);
    for (int i = 0; i < ok; i++)
        while (waitpid(kids[i], NULL, 0) < 0 && errno == EINTR)
            ;
    free(kids);
    char buf[128];
    snprintf(buf, sizeof buf, "ok=%d failed=%d errno=%d\n", ok, failed, last_errno);
    write_file("forks", buf);
}

static void hog_test(int mib)
{
    pid_t pid = fork();
    if (pid < 0)
        wl_fail("fork for the memory hog: %s", strerror(errno));
    if (pid == 0) {
        if (mlockall(MCL_CURRENT | MCL_FUTURE) < 0)
            _exit(3);
        for (int i = 0; i < mib; i++) {
            char *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                           0);
            if (m == MAP_FAILED)
                _exit(4);
            memset(m, 0x5a, 1 << 20);
        }
        _exit(0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            wl_fail("waitpid hog: %s", strerror(errno));
    }
    char buf[64];
    if (WIFSIGNALED(st))
        snprintf(buf, sizeof buf, "signal %d\n", WTERMSIG(st));
    else
        snprintf(buf, sizeof buf, "exit %d\n", WEXITSTATUS(st));
    write_file("hogged", buf);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    if (argc < 4) {
        dprintf(2, "usage: %s CTL_DIR NFORKS HOG_MIB\n", argv[0]);
        return 2;
    }
    int nforks = atoi(argv[2]), mib = atoi(argv[3]);
    unsigned char *pat = malloc(PATTERN_LEN);
    if (!pat)
        wl_fail("malloc");
    wl_fill_pattern(pat, PATTERN_LEN, PATTERN_SEED);
    wl_ready();
    while (!wl_verify_requested()) {
        if (trigger("fork"))
            fork_test(nforks);
        if (trigger("hog"))
            hog_test(mib);
        wl_sleep_ms(20);
    }
    WL_CHECK(wl_check_pattern(pat, PATTERN_LEN, PATTERN_SEED), "pattern buffer changed");
    wl_report(1, "ok");
}
