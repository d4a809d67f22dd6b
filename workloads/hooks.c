/*
 * hooks.c - a supervised workload that uses the application hooks (C SDK).
 *
 * State tested:
 *   - a counter kept only in memory, incremented every 100 ms and written
 *     to CTL_DIR/counter (overwrite) so the test can watch it;
 *   - the hooks listener (sdk/c/stasis_hooks.h): every event received is
 *     appended to CTL_DIR/events as "EVENT counter=N restores=R" and printed
 *     to stdout (the partition's output.log).
 * A POST-RESTORE must find the counter above zero (the state came back from
 * the image, not from a fresh start); otherwise the callback answers FAIL and
 * the workload reports failure at verify time.
 * Verify (CTL_DIR/verify): PASS if no POST-RESTORE saw a zero counter, the
 * counter advanced, and the restore count matches the POST-RESTORE lines.
 */
#define _GNU_SOURCE
#include "common.h"
#include "../sdk/c/stasis_hooks.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile unsigned long counter;
static volatile int bad_restore;
static volatile unsigned long post_restores;

static void put(const char *file, const char *text, int append)
{
    int fd = open(file, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0644);
    if (fd < 0)
        return;
    ssize_t r = write(fd, text, strlen(text));
    (void)r;
    close(fd);
}

static int on_event(const char *event, void *arg)
{
    (void)arg;
    char line[128];
    if (strcmp(event, "POST-RESTORE") == 0) {
        post_restores++;
        if (counter == 0)
            bad_restore = 1;
    }
    snprintf(line, sizeof line, "%s counter=%lu restores=%lu\n", event, counter,
             stasis_hooks_restore_count());
    put("events", line, 1);
    fputs(line, stdout);
    fflush(stdout);
    return bad_restore ? 1 : 0;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    WL_CHECK(stasis_hooks_start(on_event, NULL) == 0, "stasis_hooks_start failed");
    printf("hooks: %s\n", getenv(STASIS_HOOKS_ENV) ? "on" : "off");
    fflush(stdout);
    wl_ready();
    while (!wl_verify_requested()) {
        char buf[32];
        counter++;
        snprintf(buf, sizeof buf, "%lu\n", counter);
        put("counter", buf, 0);
        wl_sleep_ms(100);
    }
    WL_CHECK(!bad_restore, "a POST-RESTORE found the counter at zero");
    WL_CHECK(counter > 0, "the counter never advanced");
    WL_CHECK(stasis_hooks_restore_count() == post_restores,
             "restore count %lu != POST-RESTORE events %lu",
             stasis_hooks_restore_count(), post_restores);
    wl_report(1, "counter %lu, %lu restore(s)", counter, post_restores);
}
