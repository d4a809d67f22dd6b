/*
 * stasis_hooks.h - header-only C SDK for Stasis application hooks, protocol v1.
 *
 * A workload is told before a checkpoint (to flush) and after a restore (to
 * refresh what it caches). The workload LISTENS: the supervisor passes
 * STASIS_HOOKS_SOCKET=<path>; stasis_hooks_start() binds a unix stream socket
 * there (removing a stale socket file first) and serves, on a detached pthread,
 * one connection at a time:
 *
 *     supervisor -> workload:  STASIS/1 <EVENT> <id>\n
 *     workload -> supervisor:  OK <id>\n   or   FAIL <id> <reason>\n
 *
 * EVENT is "PRE-CHECKPOINT" or "POST-RESTORE"; id is a decimal token echoed
 * back. See crates/stasis-hooks/PROTOCOL.md for the full protocol.
 *
 * Usage (compile with -pthread):
 *
 *     static int on_event(const char *event, void *arg) {
 *         if (strcmp(event, "PRE-CHECKPOINT") == 0) fflush(log_file);
 *         return 0;                   // 0 -> OK, anything else -> FAIL
 *     }
 *     if (stasis_hooks_start(on_event, NULL) != 0) perror("stasis_hooks_start");
 *
 * stasis_hooks_start() returns 0 on success and also when STASIS_HOOKS_SOCKET is
 * unset (hooks are simply off); -1 with errno set on failure. on_event may be
 * NULL: every event is then acknowledged with OK. Unknown events under
 * STASIS/1 are acknowledged with OK without calling on_event.
 *
 * The callback runs on the hooks thread, with all signals blocked on it.
 * stasis_hooks_restore_count() gives how many POST-RESTORE events the callback
 * accepted (0 in a process that was never restored).
 *
 * All functions are static: include this header from ONE translation unit.
 * Needs GCC or Clang (__atomic builtins) and Linux. With a strict -std=c99/c11
 * (no GNU extensions) define _GNU_SOURCE before the first #include.
 */
#ifndef STASIS_HOOKS_H
#define STASIS_HOOKS_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define STASIS_HOOKS_ENV "STASIS_HOOKS_SOCKET"
#define STASIS_HOOKS_MAX_LINE 4096
#define STASIS_HOOKS_IO_TIMEOUT_SEC 5

typedef int (*stasis_hooks_fn)(const char *event, void *arg);

struct stasis_hooks_state {
    int listen_fd;
    stasis_hooks_fn on_event;
    void *arg;
    volatile unsigned long restores; /* accessed with __atomic builtins */
    int started;
};

static struct stasis_hooks_state stasis_hooks_state_ = {-1, NULL, NULL, 0, 0};

/* Number of POST-RESTORE events the callback accepted. */
static inline unsigned long stasis_hooks_restore_count(void)
{
    return __atomic_load_n(&stasis_hooks_state_.restores, __ATOMIC_SEQ_CST);
}

/* Parse 1-20 decimal digits fitting in 64 bits. Returns 0 on success. */
static inline int stasis_hooks_parse_id_(const char *s, size_t len, unsigned long long *out)
{
    unsigned long long v = 0;
    size_t i;
    if (len == 0 || len > 20)
        return -1;
    for (i = 0; i < len; i++) {
        unsigned d;
        if (s[i] < '0' || s[i] > '9')
            return -1;
        d = (unsigned)(s[i] - '0');
        if (v > (18446744073709551615ULL - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static inline void stasis_hooks_reply_(int fd, const char *line, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, line, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        line += n;
        len -= (size_t)n;
    }
}

static inline void stasis_hooks_serve_one_(int fd)
{
    char line[STASIS_HOOKS_MAX_LINE];
    char out[128];
    size_t len = 0;
    char *nl = NULL;
    char *ver, *event, *idtok, *sp1, *sp2;
    unsigned long long id;
    int rc;
    struct timeval tv = {STASIS_HOOKS_IO_TIMEOUT_SEC, 0};

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

    while (nl == NULL) {
        ssize_t n;
        if (len >= sizeof line - 1)
            return; /* too long: close without reply */
        n = recv(fd, line + len, sizeof line - 1 - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* timeout, error or EOF */
        len += (size_t)n;
        line[len] = '\0';
        nl = memchr(line, '\n', len);
    }
    *nl = '\0';
    if (nl > line && nl[-1] == '\r')
        nl[-1] = '\0';

    /* STASIS/<ver> <EVENT> <id> : exactly three tokens, single spaces. */
    if (strncmp(line, "STASIS/", 7) != 0)
        return;
    ver = line + 7;
    sp1 = strchr(ver, ' ');
    if (sp1 == NULL)
        return;
    *sp1 = '\0';
    event = sp1 + 1;
    sp2 = strchr(event, ' ');
    if (sp2 == NULL)
        return;
    *sp2 = '\0';
    idtok = sp2 + 1;
    if (*ver == '\0' || *event == '\0' || strchr(idtok, ' ') != NULL)
        return;
    if (stasis_hooks_parse_id_(idtok, strlen(idtok), &id) != 0)
        return;

    if (strcmp(ver, "1") != 0) {
        rc = snprintf(out, sizeof out, "FAIL %llu unsupported protocol version\n", id);
    } else if (strcmp(event, "PRE-CHECKPOINT") != 0 && strcmp(event, "POST-RESTORE") != 0) {
        rc = snprintf(out, sizeof out, "OK %llu\n", id); /* unknown event: not wanted */
    } else {
        int cb = stasis_hooks_state_.on_event
                     ? stasis_hooks_state_.on_event(event, stasis_hooks_state_.arg)
                     : 0;
        if (cb == 0) {
            if (strcmp(event, "POST-RESTORE") == 0)
                __atomic_add_fetch(&stasis_hooks_state_.restores, 1, __ATOMIC_SEQ_CST);
            rc = snprintf(out, sizeof out, "OK %llu\n", id);
        } else {
            rc = snprintf(out, sizeof out, "FAIL %llu callback returned %d\n", id, cb);
        }
    }
    if (rc > 0 && (size_t)rc < sizeof out)
        stasis_hooks_reply_(fd, out, (size_t)rc);
}

static inline void *stasis_hooks_thread_(void *unused)
{
    (void)unused;
    for (;;) {
        int fd = accept(stasis_hooks_state_.listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno != EINTR) {
                struct timespec pause = {0, 100000000}; /* e.g. EMFILE: do not spin */
                nanosleep(&pause, NULL);
            }
            continue;
        }
        stasis_hooks_serve_one_(fd);
        close(fd);
    }
    return NULL;
}

/*
 * Read STASIS_HOOKS_SOCKET, bind and listen there, and serve events on a
 * detached pthread. Returns 0 (also when the variable is unset) or -1 with
 * errno: EINVAL (empty variable), EALREADY (already started), ENAMETOOLONG,
 * EEXIST (a non-socket file is in the way), or an error of socket/bind/listen/
 * pthread_create.
 */
static inline int stasis_hooks_start(int (*on_event)(const char *event, void *arg), void *arg)
{
    const char *path = getenv(STASIS_HOOKS_ENV);
    struct sockaddr_un addr;
    struct stat st;
    sigset_t all, old;
    pthread_t tid;
    int fd, err;

    if (path == NULL)
        return 0; /* hooks off */
    if (*path == '\0') {
        errno = EINVAL;
        return -1;
    }
    if (stasis_hooks_state_.started) {
        errno = EALREADY;
        return -1;
    }
    if (strlen(path) >= sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            errno = EEXIST;
            return -1;
        }
        if (unlink(path) != 0)
            return -1; /* stale socket we cannot remove */
    } else if (errno != ENOENT) {
        return -1;
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0) {
        err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    stasis_hooks_state_.listen_fd = fd;
    stasis_hooks_state_.on_event = on_event;
    stasis_hooks_state_.arg = arg;

    /* The hooks thread inherits a fully blocked signal mask. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&tid, NULL, stasis_hooks_thread_, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        close(fd);
        stasis_hooks_state_.listen_fd = -1;
        errno = err;
        return -1;
    }
    pthread_detach(tid);
    stasis_hooks_state_.started = 1;
    return 0;
}

#endif /* STASIS_HOOKS_H */
