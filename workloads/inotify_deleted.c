/*
 * inotify_deleted.c - an inotify watch whose watched file was deleted while
 * the watch exists (the file is still held open), across checkpoint/restore.
 *
 * Kernel state tested:
 *  - inotify instance (IN_NONBLOCK) with wd A on CTL_DIR/before (IN_OPEN,
 *    a file that stays), wd B on CTL_DIR/ghost_watched (IN_MODIFY|IN_ATTRIB
 *    |IN_DELETE_SELF); ghost_watched is open O_RDWR, then unlinked (the
 *    IN_ATTRIB for the unlink is read at setup: no event is queued).
 * Verify: fdinfo shows the same (wd, mask) pairs; no event is queued; a write
 * through the ghost fd queues IN_MODIFY for wd B; adding a watch through
 * /proc/self/fd/N (the same inode) returns wd B; closing the ghost fd then
 * gives IN_DELETE_SELF and IN_IGNORED for wd B.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define MASK_B (IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF)

/* sorted "wd mask;" pairs of the inotify fd's fdinfo */
static void regs(int fd, char *out, size_t n)
{
    char p[64], buf[4096];
    snprintf(p, sizeof p, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(p, "r");
    size_t o = 0;
    out[0] = 0;
    while (f && fgets(buf, sizeof buf, f)) {
        int wd;
        unsigned mask;
        char *m = strstr(buf, " mask:");
        if (sscanf(buf, "inotify wd:%d", &wd) == 1 && m && sscanf(m, " mask:%x", &mask) == 1)
            o += snprintf(out + o, n - o, "%d %#x;", wd, mask);
    }
    if (f)
        fclose(f);
}

/* next event (wd, mask), or 0 if none */
static int next_event(int in, int *wd, unsigned *mask)
{
    static char buf[4096];
    static ssize_t len, off;
    if (off >= len) {
        len = read(in, buf, sizeof buf);
        off = 0;
        if (len <= 0) {
            len = 0;
            return 0;
        }
    }
    struct inotify_event *e = (struct inotify_event *)(buf + off);
    *wd = e->wd;
    *mask = e->mask;
    off += sizeof *e + e->len;
    return 1;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    char before[4096], ghost[4096];
    snprintf(before, sizeof before, "%s/before", wl_ctl_dir());
    snprintf(ghost, sizeof ghost, "%s/ghost_watched", wl_ctl_dir());
    int fb = open(before, O_CREAT | O_RDWR, 0644);
    int fg = open(ghost, O_CREAT | O_RDWR, 0644);
    if (fb < 0 || fg < 0 || write(fg, "data", 4) != 4)
        wl_fail("setup: files: %s", strerror(errno));
    int in = inotify_init1(IN_NONBLOCK);
    int wa = inotify_add_watch(in, before, IN_OPEN);
    int wb = inotify_add_watch(in, ghost, MASK_B);
    if (in < 0 || wa < 0 || wb < 0)
        wl_fail("setup: inotify: %s", strerror(errno));
    if (unlink(ghost) < 0)
        wl_fail("setup: unlink: %s", strerror(errno));
    int wd;
    unsigned mask;
    int got_attrib = 0;
    while (next_event(in, &wd, &mask))
        if (wd == wb && (mask & IN_ATTRIB))
            got_attrib = 1;
    if (!got_attrib)
        wl_fail("setup: no IN_ATTRIB for the unlink");
    char regs0[512];
    regs(in, regs0, sizeof regs0);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    char regs1[512];
    regs(in, regs1, sizeof regs1);
    WL_CHECK(strcmp(regs0, regs1) == 0, "watches were %s, now %s", regs0, regs1);
    WL_CHECK(!next_event(in, &wd, &mask), "unexpected event wd %d mask %#x", wd, mask);
    WL_CHECK(write(fg, "more", 4) == 4, "write: %s", strerror(errno));
    WL_CHECK(next_event(in, &wd, &mask) && wd == wb && (mask & IN_MODIFY),
             "no IN_MODIFY for wd %d (got wd %d mask %#x)", wb, wd, mask);
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fg);
    int again = inotify_add_watch(in, p, MASK_B);
    WL_CHECK(again == wb, "watch through %s is wd %d, want %d", p, again, wb);
    close(fg);
    int del = 0, ign = 0;
    for (int i = 0; i < 100 && !(del && ign); i++) {
        while (next_event(in, &wd, &mask)) {
            if (wd == wb && (mask & IN_DELETE_SELF))
                del = 1;
            if (wd == wb && (mask & IN_IGNORED))
                ign = 1;
        }
        wl_sleep_ms(10);
    }
    WL_CHECK(del && ign, "after close: IN_DELETE_SELF %d, IN_IGNORED %d", del, ign);
    wl_report(1, "ok");
}
