/*
 * ghost_mapped.c - a deleted file that is only mapped (no fd), shared and
 * private, across checkpoint/restore.
 *
 * Kernel state tested:
 *  - CTL_DIR/mapped_file: 3 pages of a pattern, mode 0640, owner 1234:5678;
 *    mapped MAP_SHARED (ps) and MAP_PRIVATE (pp), the fd closed, the file
 *    unlinked; pp page 0 written ("private", copied on write), ps page 1
 *    written ("shared", into the file);
 *  - CTL_DIR/mapped_open: one page, mapped MAP_SHARED and kept open O_RDWR,
 *    then unlinked.
 * Verify: both mappings still show "CTL_DIR/mapped_file (deleted)" with the
 * same offset and permissions in /proc/self/maps; the file behind them
 * (/proc/self/map_files) has nlink 0, mode 0640, owner 1234:5678, and is the
 * same inode for both; pp page 0 holds "private", pp page 1 sees the shared
 * write (never copied), ps page 0 the pattern; a write through ps page 2 is
 * seen through pp page 2 (same file pages).  mapped_open: the fd and the
 * mapping are the same inode, a write through the fd is seen in the mapping.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PG 4096
#define SEED 77

/* the maps line of the mapping at addr, without the inode and device */
static void maps_line(void *addr, char *out, size_t n)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/maps", "r");
    out[0] = 0;
    unsigned long a = (unsigned long)addr;
    while (f && fgets(buf, sizeof buf, f)) {
        unsigned long s, e, off;
        char perms[8], dev[16], path[900] = "";
        unsigned long ino;
        if (sscanf(buf, "%lx-%lx %7s %lx %15s %lu %899[^\n]", &s, &e, perms, &off, dev, &ino,
                   path) >= 6 &&
            s == a) {
            char *p = path;
            while (*p == ' ')
                p++;
            snprintf(out, n, "%lx-%lx %s %lx %s", s, e, perms, off, p);
        }
    }
    if (f)
        fclose(f);
}

static int map_stat(void *addr, struct stat *st)
{
    char line[1024], p[128];
    maps_line(addr, line, sizeof line);
    unsigned long s, e;
    if (sscanf(line, "%lx-%lx", &s, &e) != 2)
        return -1;
    snprintf(p, sizeof p, "/proc/self/map_files/%lx-%lx", s, e);
    return stat(p, st);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    char path[4096];
    snprintf(path, sizeof path, "%s/mapped_file", wl_ctl_dir());
    int fd = open(path, O_CREAT | O_RDWR | O_EXCL, 0600);
    char *pat = malloc(3 * PG);
    wl_fill_pattern(pat, 3 * PG, SEED);
    if (fd < 0 || write(fd, pat, 3 * PG) != 3 * PG)
        wl_fail("setup: %s: %s", path, strerror(errno));
    if (fchown(fd, 1234, 5678) < 0 || fchmod(fd, 0640) < 0)
        wl_fail("setup: chown: %s", strerror(errno));
    char *ps = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *pp = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (ps == MAP_FAILED || pp == MAP_FAILED)
        wl_fail("setup: mmap: %s", strerror(errno));
    close(fd);
    if (unlink(path) < 0)
        wl_fail("setup: unlink: %s", strerror(errno));
    memcpy(pp, "private", 7);
    memcpy(ps + PG, "shared", 6);
    char path2[4096];
    snprintf(path2, sizeof path2, "%s/mapped_open", wl_ctl_dir());
    int fo = open(path2, O_CREAT | O_RDWR | O_EXCL, 0600);
    if (fo < 0 || write(fo, pat, PG) != PG)
        wl_fail("setup: %s: %s", path2, strerror(errno));
    char *po = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fo, 0);
    if (po == MAP_FAILED || unlink(path2) < 0)
        wl_fail("setup: %s: %s", path2, strerror(errno));
    char ls0[1024], lp0[1024];
    maps_line(ps, ls0, sizeof ls0);
    maps_line(pp, lp0, sizeof lp0);
    if (!strstr(ls0, "(deleted)") || !strstr(lp0, "(deleted)"))
        wl_fail("setup: maps %s / %s", ls0, lp0);

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    char ls1[1024], lp1[1024];
    maps_line(ps, ls1, sizeof ls1);
    maps_line(pp, lp1, sizeof lp1);
    WL_CHECK(strcmp(ls0, ls1) == 0, "shared mapping was '%s', now '%s'", ls0, ls1);
    WL_CHECK(strcmp(lp0, lp1) == 0, "private mapping was '%s', now '%s'", lp0, lp1);
    struct stat ss, sp;
    WL_CHECK(map_stat(ps, &ss) == 0 && map_stat(pp, &sp) == 0, "stat map_files: %s",
             strerror(errno));
    WL_CHECK(ss.st_ino == sp.st_ino && ss.st_dev == sp.st_dev, "mappings on different files");
    WL_CHECK(ss.st_nlink == 0, "nlink %ld", (long)ss.st_nlink);
    WL_CHECK((ss.st_mode & 07777) == 0640, "mode %o", ss.st_mode & 07777);
    WL_CHECK(ss.st_uid == 1234 && ss.st_gid == 5678, "owner %d:%d", ss.st_uid, ss.st_gid);
    WL_CHECK(memcmp(pp, "private", 7) == 0, "private page lost");
    WL_CHECK(memcmp(pp + 7, pat + 7, PG - 7) == 0, "private page rest");
    WL_CHECK(memcmp(pp + PG, "shared", 6) == 0, "private page 1 does not see the shared write");
    WL_CHECK(memcmp(ps, pat, PG) == 0, "shared page 0 is not the file's");
    WL_CHECK(memcmp(ps + PG, "shared", 6) == 0, "shared write lost");
    WL_CHECK(memcmp(pp + 2 * PG, pat + 2 * PG, PG) == 0, "private page 2");
    memcpy(ps + 2 * PG, "late", 4);
    WL_CHECK(memcmp(pp + 2 * PG, "late", 4) == 0,
             "a write through the shared mapping is not seen through the private one");
    struct stat so, sm;
    WL_CHECK(fstat(fo, &so) == 0 && map_stat(po, &sm) == 0, "stat mapped_open");
    WL_CHECK(so.st_ino == sm.st_ino && so.st_dev == sm.st_dev,
             "mapped_open: fd and mapping on different files");
    WL_CHECK(pwrite(fo, "viafd", 5, 0) == 5 && memcmp(po, "viafd", 5) == 0,
             "mapped_open: a write through the fd is not seen in the mapping");
    wl_report(1, "ok");
}
