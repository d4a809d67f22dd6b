/*
 * counter.c - the demo workload.
 *
 * State tested:
 *   - a counter in memory, incremented every 100 ms and written (overwrite,
 *     open/write/close each time) to CTL_DIR/counter as "N\n";
 *   - a 1 MiB heap buffer filled with a pattern whose FNV-1a checksum is
 *     recorded at setup;
 *   - optional `--print`: print the counter to stdout every 100 ms (the demo
 *     redirects stdout to a file; this exercises a restored stdout fd).
 * Each tick, before writing, the file must hold the value we wrote last.
 * Exception: the file may be AHEAD of memory by at most 1000 (or empty =
 * a torn write): that happens legitimately once when the process is
 * restored from a `--leave-running` image after the original kept counting
 * (the file is not part of the image); such ticks are counted as "external"
 * and tolerated.  A file value below the in-memory value (or garbage) is a
 * failure: the counter went backwards.
 * After the verify request two more ticks run.  Verify: no backwards/garbage ticks, the in-memory counter equals the
 * number of increments done (so it never skipped or went back), the value
 * in CTL_DIR/counter equals the in-memory value, the counter advanced, and
 * the heap checksum is intact.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HEAP_SIZE (1 << 20)

static int write_counter(unsigned long n)
{
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%lu\n", n);
    int fd;
    do
        fd = open("counter", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -1;
    ssize_t w;
    do
        w = write(fd, buf, (size_t)len);
    while (w < 0 && errno == EINTR);
    close(fd);
    return w == len ? 0 : -1;
}

static long read_counter(void)
{
    char buf[32] = {0};
    int fd;
    do
        fd = open("counter", O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -1;
    ssize_t r;
    do
        r = read(fd, buf, sizeof buf - 1);
    while (r < 0 && errno == EINTR);
    close(fd);
    if (r <= 0)
        return -2;
    char *end;
    long v = strtol(buf, &end, 10);
    if (end == buf || *end != '\n')
        return -3;
    return v;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    int print = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--print") == 0)
            print = 1;
        else
            wl_fail("unknown argument %s", argv[i]);
    }

    unsigned char *heap = malloc(HEAP_SIZE);
    WL_CHECK(heap != NULL, "malloc failed");
    wl_fill_pattern(heap, HEAP_SIZE, 0xC0FFEE);
    const uint64_t heap_sum = wl_hash(heap, HEAP_SIZE);

    unsigned long counter = 0;        /* last value written */
    unsigned long increments = 0;     /* number of increments done */
    unsigned long non_monotonic = 0;  /* file behind memory / garbage before a write */
    unsigned long external = 0;       /* file ahead of memory (tolerated) */
    long first_bad = 0;
    unsigned long first_bad_at = 0;
    WL_CHECK(write_counter(counter) == 0, "cannot write counter file: %m");
    wl_ready();

    /* After the verify request, two more ticks run before the checks, so
     * verification always proves the counter still advances (even when
     * verify comes right after ready or right after a restore). */
    int final_ticks = 2;
    while (final_ticks > 0) {
        if (wl_verify_requested())
            final_ticks--;
        wl_sleep_ms(100);
        /* Before writing, the file must still hold our last value. */
        long onfile = read_counter();
        if (onfile == (long)counter) {
            /* ok */
        } else if (onfile == -2 || (onfile > (long)counter && onfile <= (long)counter + 1000)) {
            external++;
        } else {
            if (!non_monotonic) {
                first_bad = onfile;
                first_bad_at = counter;
            }
            non_monotonic++;
        }
        unsigned long next = counter + 1;
        if (next <= counter)
            non_monotonic++;
        counter = next;
        increments++;
        if (write_counter(counter) != 0)
            wl_fail("cannot write counter file at %lu: %m", counter);
        if (print) {
            printf("%lu\n", counter);
        }
    }

    long onfile = read_counter();
    WL_CHECK(onfile == (long)counter, "counter file holds %ld, memory holds %lu", onfile, counter);
    WL_CHECK(non_monotonic == 0,
             "counter went backwards/garbled %lu times (first: file %ld while memory %lu; "
             "read_counter: -1 open failed, -2 empty, -3 garbage)",
             non_monotonic, first_bad, first_bad_at);
    WL_CHECK(increments == counter, "increments %lu != counter %lu", increments, counter);
    WL_CHECK(counter >= 2, "counter never advanced (%lu)", counter);
    uint64_t h = wl_hash(heap, HEAP_SIZE);
    WL_CHECK(h == heap_sum, "heap checksum %016llx, expected %016llx",
             (unsigned long long)h, (unsigned long long)heap_sum);
    WL_CHECK(wl_check_pattern(heap, HEAP_SIZE, 0xC0FFEE), "heap pattern corrupted");
    (void)external;
    wl_report(1, "ok");
}
