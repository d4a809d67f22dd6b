/*
 * common.h - shared protocol helpers for Stasis test workloads.
 *
 * Protocol: a workload is started as `prog CTL_DIR [args...]` with
 * cwd = CTL_DIR (absolute), stdin = /dev/null, stdout/stderr appended to
 * CTL_DIR/out.log.
 *   1. set up state, then wl_ready()   -> CTL_DIR/ready contains "<pid>\n"
 *                                         (written as ready.tmp.<pid> + rename)
 *   2. loop working until wl_verify_requested() (CTL_DIR/verify exists);
 *      sleep with wl_sleep_ms() (EINTR tolerant).  The process may be
 *      checkpointed/killed/restored at any point of this loop.
 *   3. verify all state, then wl_report(ok, fmt, ...) -> CTL_DIR/result
 *      contains "PASS\n" or "FAIL: <msg>\n" (result.tmp.<pid> + rename), and the
 *      process exits 0 (pass) or 1 (fail).
 *   wl_verify_requested() fails the workload after 300 s (CLOCK_MONOTONIC,
 *   measured from wl_init()) without a verify request.
 *
 * Multi-process workloads: only the root (the process that called
 * wl_init()) writes CTL_DIR/result; in any process created from it with
 * fork() (detected with a pthread_atfork handler) wl_report() just
 * prints a FAIL diagnostic to stderr and _exit()s with 0/1, so the parent
 * learns the verdict via waitpid().
 */
#ifndef STASIS_WL_COMMON_H
#define STASIS_WL_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* snprintf, used by WL_CHECK */

void wl_init(int argc, char **argv);
const char *wl_ctl_dir(void);
void wl_ready(void);
int wl_verify_requested(void);
void wl_sleep_ms(int ms);
__attribute__((noreturn, format(printf, 2, 3)))
void wl_report(int ok, const char *fmt, ...);

#define wl_fail(...) wl_report(0, __VA_ARGS__)

/* Fail (with file:line prefix) if cond is false.  The message is a printf
 * format plus arguments; long messages are truncated (no warning). */
#define WL_CHECK(cond, ...)                                                   \
    do {                                                                      \
        if (!(cond)) {                                                        \
            char wl_check_msg_[768];                                          \
            _Pragma("GCC diagnostic push")                                    \
            _Pragma("GCC diagnostic ignored \"-Wformat-truncation\"")         \
            snprintf(wl_check_msg_, sizeof wl_check_msg_, __VA_ARGS__);       \
            _Pragma("GCC diagnostic pop")                                     \
            wl_report(0, "%s:%d: check `%s` failed: %s", __FILE__, __LINE__,  \
                      #cond, wl_check_msg_);                                  \
        }                                                                     \
    } while (0)

/* FNV-1a 64-bit. */
uint64_t wl_hash(const void *p, size_t n);
/* Deterministic pseudorandom bytes: byte i of the buffer depends only on
 * (seed, i), i counted from p.  wl_check_pattern returns 1 if the n bytes
 * at p equal wl_fill_pattern(p, n, seed)'s output, 0 otherwise. */
void wl_fill_pattern(void *p, size_t n, uint64_t seed);
int wl_check_pattern(const void *p, size_t n, uint64_t seed);

#endif
