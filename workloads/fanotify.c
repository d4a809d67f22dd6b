/*
 * fanotify.c - a fanotify group with marks across checkpoint/restore.
 *
 * Kernel state tested:
 *  - group (FAN_CLASS_NOTIF|FAN_NONBLOCK, events opened O_RDONLY|O_LARGEFILE)
 *    with an inode mark on CTL_DIR/fan_file (FAN_MODIFY|FAN_CLOSE_WRITE) and
 *    a mark on CTL_DIR (FAN_CLOSE_WRITE|FAN_EVENT_ON_CHILD, ignored mask
 *    FAN_ACCESS with FAN_MARK_IGNORED_SURV_MODIFY); CTL_DIR/fan_file open
 *    O_RDWR.  The fd number is written to CTL_DIR/fd.
 * Verify: the group's fdinfo (flags line and every mark line) is the same;
 * after draining what is queued, a write through the open file gives a
 * FAN_MODIFY event for it, and a file created, written and closed in
 * CTL_DIR gives FAN_CLOSE_WRITE.
 *
 * With argument "gone": the mark is on CTL_DIR/fan_gone, which is written
 * (a FAN_MODIFY event stays queued, holding the file), closed and deleted:
 * the mark stays on an object that is gone, which a checkpoint must refuse,
 * naming it; the group keeps working.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <unistd.h>

static void fdinfo_marks(int fd, char *out, size_t n)
{
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(p, "r");
    size_t o = 0;
    out[0] = 0;
    while (f && fgets(buf, sizeof buf, f))
        if (strncmp(buf, "fanotify", 8) == 0 && o < n)
            o += snprintf(out + o, n - o, "%s", buf);
    if (f)
        fclose(f);
}

/* drain the queue; return the OR of masks of events for the file with inode ino
 * (0: any) */
static unsigned long long drain(int fan, ino_t ino)
{
    char buf[8192];
    unsigned long long seen = 0;
    ssize_t len;
    while ((len = read(fan, buf, sizeof buf)) > 0) {
        for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, len);
             m = FAN_EVENT_NEXT(m, len)) {
            struct stat st;
            if (m->fd >= 0) {
                if (fstat(m->fd, &st) == 0 && (ino == 0 || st.st_ino == ino))
                    seen |= m->mask;
                close(m->fd);
            }
        }
    }
    return seen;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    int gone = argc > 2 && strcmp(argv[2], "gone") == 0;
    const char *dir = wl_ctl_dir();
    char file[4096], other[4096], fdp[4200];
    snprintf(file, sizeof file, "%s/%s", dir, gone ? "fan_gone" : "fan_file");
    snprintf(other, sizeof other, "%s/fan_other", dir);
    int fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
    if (fan < 0)
        wl_fail("setup: fanotify_init: %s", strerror(errno));
    int ff = open(file, O_CREAT | O_RDWR, 0644);
    if (ff < 0)
        wl_fail("setup: open %s: %s", file, strerror(errno));
    if (fanotify_mark(fan, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, file) < 0 ||
        fanotify_mark(fan, FAN_MARK_ADD, FAN_CLOSE_WRITE | FAN_EVENT_ON_CHILD, AT_FDCWD, dir) < 0 ||
        fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY,
                      FAN_ACCESS, AT_FDCWD, dir) < 0)
        wl_fail("setup: fanotify_mark: %s", strerror(errno));
    drain(fan, 0);
    if (gone) {
        if (write(ff, "g", 1) != 1)
            wl_fail("setup: write: %s", strerror(errno));
        close(ff);
        ff = -1;
        if (unlink(file) < 0)
            wl_fail("setup: unlink: %s", strerror(errno));
    }
    snprintf(fdp, sizeof fdp, "%s/fd", dir);
    FILE *f = fopen(fdp, "w");
    fprintf(f, "%d\n", fan);
    fclose(f);
    char marks0[2048];
    fdinfo_marks(fan, marks0, sizeof marks0);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    char marks1[2048];
    fdinfo_marks(fan, marks1, sizeof marks1);
    WL_CHECK(strcmp(marks0, marks1) == 0, "fdinfo was\n%s\nnow\n%s", marks0, marks1);
    drain(fan, 0);
    if (!gone) {
        struct stat st;
        fstat(ff, &st);
        WL_CHECK(write(ff, "x", 1) == 1, "write: %s", strerror(errno));
        unsigned long long m = drain(fan, st.st_ino);
        WL_CHECK(m & FAN_MODIFY, "no FAN_MODIFY for the marked file (mask %#llx)", m);
    }
    int o = open(other, O_CREAT | O_WRONLY, 0644);
    WL_CHECK(o >= 0 && write(o, "y", 1) == 1, "writing %s: %s", other, strerror(errno));
    struct stat so;
    fstat(o, &so);
    close(o);
    unsigned long long m = drain(fan, so.st_ino);
    WL_CHECK(m & FAN_CLOSE_WRITE, "no FAN_CLOSE_WRITE in the marked directory (mask %#llx)", m);
    wl_report(1, "ok");
}
