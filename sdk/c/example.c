/*
 * example.c - a workload using the Stasis hooks C SDK.
 *
 *   cc -pthread -I sdk/c -o hooks-example sdk/c/example.c
 *   STASIS_HOOKS_SOCKET=/tmp/app.sock ./hooks-example /tmp/events.log
 *
 * Every event received is appended (one line: the event name) to the file
 * given as argv[1]. The program prints "hooks: on" or "hooks: off", then runs
 * until its standard input reaches end of file.
 */
#include <stdio.h>
#include <string.h>

#include "stasis_hooks.h"

static int on_event(const char *event, void *arg)
{
    const char *log_path = arg;
    FILE *f = fopen(log_path, "a");
    if (f == NULL)
        return 1; /* becomes "FAIL <id> callback returned 1" */
    if (strcmp(event, "PRE-CHECKPOINT") == 0) {
        /* A real program flushes its buffers / syncs its files here. */
    } else if (strcmp(event, "POST-RESTORE") == 0) {
        /* A real program refreshes caches, re-resolves names, etc. here. */
    }
    fprintf(f, "%s\n", event);
    return fclose(f) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    char buf[256];

    if (argc != 2) {
        fprintf(stderr, "usage: %s EVENT-LOG\n", argv[0]);
        return 2;
    }
    if (stasis_hooks_start(on_event, argv[1]) != 0) {
        perror("stasis_hooks_start");
        return 1;
    }
    printf("hooks: %s\n", getenv(STASIS_HOOKS_ENV) ? "on" : "off");
    fflush(stdout);

    /* The "work": wait for stdin to close. */
    while (fgets(buf, sizeof buf, stdin) != NULL)
        ;
    printf("restores: %lu\n", stasis_hooks_restore_count());
    return 0;
}
