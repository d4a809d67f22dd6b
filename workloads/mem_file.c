/*
 * mem_file.c - file-backed mappings.
 *
 * State tested (the fds are closed right after mmap; only mappings remain):
 *   - CTL_DIR/priv.dat (64 pages, pattern) mapped MAP_PRIVATE RW; pages
 *     3, 17, 40 and 63 are overwritten (COW).  Verify: modified pages keep
 *     the modification, untouched pages equal the file (pread) and the
 *     original pattern, and the file itself is unchanged.
 *   - CTL_DIR/shared.dat (32 pages, pattern) mapped MAP_SHARED RW; pages
 *     0..7 rewritten through the mapping.  Verify: pread of the whole file
 *     equals the mapping; then a new write through the mapping after
 *     restore (page 10) is seen by pread, and a pwrite to the file (page
 *     20) is seen in the mapping.
 *   - CTL_DIR/ro.dat (16 pages) mapped MAP_PRIVATE PROT_READ at file
 *     offset 4 pages, length 8 pages: content equals the file.
 *   - the program's own executable (/proc/self/exe) and /bin/true mapped
 *     MAP_PRIVATE PROT_READ: content equals the file.
 *   - /proc/self/maps: each mapping's line (start-end, perms, file offset,
 *     inode, path) is identical to the one recorded at setup.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PG 4096UL
#define PRIV_PAGES 64
#define SHARED_PAGES 32
#define RO_PAGES 16
#define RO_OFF_PAGES 4
#define RO_MAP_PAGES 8

static const int cow_pages[] = {3, 17, 40, 63};
#define NCOW (sizeof cow_pages / sizeof cow_pages[0])

enum { M_PRIV, M_SHARED, M_RO, M_EXE, M_TRUE, NMAP };
struct mapping {
    const char *name;
    char path[PATH_MAX];
    unsigned char *addr;
    size_t len;
    off_t off;
    char line[PATH_MAX + 128]; /* /proc/self/maps line recorded at setup */
};
static struct mapping m[NMAP] = {
    [M_PRIV] = {"priv"}, [M_SHARED] = {"shared"}, [M_RO] = {"ro"}, [M_EXE] = {"exe"}, [M_TRUE] = {"true"},
};

static char maps_buf[1 << 20];
static unsigned char filebuf[1 << 20];

static int xopen(const char *path, int flags, int mode)
{
    int fd;
    do
        fd = open(path, flags | O_CLOEXEC, mode);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        wl_fail("open %s: %m", path);
    return fd;
}

static void xpwrite(int fd, const void *buf, size_t n, off_t off, const char *what)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(fd, (const char *)buf + done, n - done, off + (off_t)done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            wl_fail("pwrite %s: %m", what);
        done += (size_t)w;
    }
}

static void xpread(int fd, void *buf, size_t n, off_t off, const char *what)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            wl_fail("pread %s (%zu bytes at %lld): %m", what, n, (long long)off);
        done += (size_t)r;
    }
}

/* pread [off, off+n) of path into filebuf */
static void read_range(const char *path, off_t off, size_t n)
{
    if (n > sizeof filebuf)
        wl_fail("read_range too large");
    int fd = xopen(path, O_RDONLY, 0);
    xpread(fd, filebuf, n, off, path);
    close(fd);
}

static void create_file(const char *path, size_t pages, uint64_t seed)
{
    int fd = xopen(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    static unsigned char tmp[PRIV_PAGES * PG];
    wl_fill_pattern(tmp, pages * PG, seed);
    xpwrite(fd, tmp, pages * PG, 0, path);
    close(fd);
}

static unsigned char *map_file(struct mapping *mp, const char *path, size_t len, off_t off, int prot, int flags)
{
    snprintf(mp->path, sizeof mp->path, "%s", path);
    int fd = xopen(path, (prot & PROT_WRITE) && (flags & MAP_SHARED) ? O_RDWR : O_RDONLY, 0);
    void *p = mmap(NULL, len, prot, flags, fd, off);
    if (p == MAP_FAILED)
        wl_fail("mmap %s: %m", path);
    close(fd);
    mp->addr = p;
    mp->len = len;
    mp->off = off;
    return p;
}

static void read_maps(void)
{
    int fd = xopen("/proc/self/maps", O_RDONLY, 0);
    size_t len = 0;
    for (;;) {
        if (len + 1 >= sizeof maps_buf)
            wl_fail("/proc/self/maps too large");
        ssize_t r = read(fd, maps_buf + len, sizeof maps_buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            wl_fail("read maps: %m");
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    maps_buf[len] = 0;
}

/* copy the maps line of the VMA containing addr into out ("" if none) */
static void maps_line(const void *addr, char *out, size_t cap)
{
    out[0] = 0;
    for (char *line = maps_buf; *line;) {
        char *nl = strchr(line, '\n');
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && (unsigned long)addr >= a && (unsigned long)addr < b) {
            size_t n = nl ? (size_t)(nl - line) : strlen(line);
            if (n >= cap)
                n = cap - 1;
            memcpy(out, line, n);
            out[n] = 0;
            return;
        }
        if (!nl)
            break;
        line = nl + 1;
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    char path[PATH_MAX];

    /* private COW mapping */
    snprintf(path, sizeof path, "%s/priv.dat", wl_ctl_dir());
    create_file(path, PRIV_PAGES, 0xF11E1);
    unsigned char *priv = map_file(&m[M_PRIV], path, PRIV_PAGES * PG, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    for (size_t i = 0; i < NCOW; i++)
        wl_fill_pattern(priv + cow_pages[i] * PG, PG, 0xC0C0 + (uint64_t)cow_pages[i]);
    /* read a few untouched pages so they are in the page tables too */
    volatile unsigned char sink = priv[0] ^ priv[5 * PG] ^ priv[50 * PG];
    (void)sink;

    /* shared mapping */
    snprintf(path, sizeof path, "%s/shared.dat", wl_ctl_dir());
    create_file(path, SHARED_PAGES, 0xF11E2);
    unsigned char *shr = map_file(&m[M_SHARED], path, SHARED_PAGES * PG, 0, PROT_READ | PROT_WRITE, MAP_SHARED);
    for (int pg = 0; pg < 8; pg++)
        wl_fill_pattern(shr + pg * PG, PG, 0x5BA0 + (uint64_t)pg);

    /* read-only private mapping at an offset */
    snprintf(path, sizeof path, "%s/ro.dat", wl_ctl_dir());
    create_file(path, RO_PAGES, 0xF11E3);
    unsigned char *ro = map_file(&m[M_RO], path, RO_MAP_PAGES * PG, RO_OFF_PAGES * PG, PROT_READ, MAP_PRIVATE);

    /* own executable and /bin/true */
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n < 0)
        wl_fail("readlink /proc/self/exe: %m");
    path[n] = 0;
    struct stat stt;
    if (stat(path, &stt) < 0)
        wl_fail("stat %s: %m", path);
    size_t exe_len = (size_t)stt.st_size < sizeof filebuf ? (size_t)stt.st_size : sizeof filebuf;
    unsigned char *exe = map_file(&m[M_EXE], path, exe_len, 0, PROT_READ, MAP_PRIVATE);
    if (stat("/bin/true", &stt) < 0)
        wl_fail("stat /bin/true: %m");
    size_t true_len = (size_t)stt.st_size < sizeof filebuf ? (size_t)stt.st_size : sizeof filebuf;
    unsigned char *tru = map_file(&m[M_TRUE], "/bin/true", true_len, 0, PROT_READ, MAP_PRIVATE);
    if (memcmp(exe, "\177ELF", 4) || memcmp(tru, "\177ELF", 4))
        wl_fail("setup: mapped executables lack ELF magic");
    uint64_t exe_hash = wl_hash(exe, exe_len), true_hash = wl_hash(tru, true_len);

    read_maps();
    for (int i = 0; i < NMAP; i++) {
        maps_line(m[i].addr, m[i].line, sizeof m[i].line);
        if (!m[i].line[0])
            wl_fail("setup: mapping %s not in /proc/self/maps", m[i].name);
    }
    /* read-only mappings of the same file can be adjacent and merge; ours are
     * of different files, and we compare whole lines anyway */

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(10);

    /* maps lines */
    read_maps();
    for (int i = 0; i < NMAP; i++) {
        char line[sizeof m[i].line];
        maps_line(m[i].addr, line, sizeof line);
        WL_CHECK(strcmp(line, m[i].line) == 0, "mapping %s: maps line\n  '%s'\nexpected\n  '%s'",
                 m[i].name, line, m[i].line);
    }

    /* private COW mapping */
    read_range(m[M_PRIV].path, 0, PRIV_PAGES * PG);
    WL_CHECK(wl_check_pattern(filebuf, PRIV_PAGES * PG, 0xF11E1), "priv.dat file content changed (private writes leaked?)");
    for (int pg = 0; pg < PRIV_PAGES; pg++) {
        int cow = 0;
        for (size_t i = 0; i < NCOW; i++)
            cow |= cow_pages[i] == pg;
        if (cow) {
            WL_CHECK(wl_check_pattern(priv + pg * PG, PG, 0xC0C0 + (uint64_t)pg),
                     "priv: modified (COW) page %d lost its modification", pg);
        } else {
            WL_CHECK(memcmp(priv + pg * PG, filebuf + pg * PG, PG) == 0,
                     "priv: untouched page %d differs from the file", pg);
        }
    }

    /* shared mapping */
    read_range(m[M_SHARED].path, 0, SHARED_PAGES * PG);
    for (int pg = 0; pg < SHARED_PAGES; pg++)
        WL_CHECK(memcmp(shr + pg * PG, filebuf + pg * PG, PG) == 0,
                 "shared: page %d of the mapping differs from the file (pread)", pg);
    for (int pg = 0; pg < 8; pg++)
        WL_CHECK(wl_check_pattern(shr + pg * PG, PG, 0x5BA0 + (uint64_t)pg),
                 "shared: page %d lost the data written through the mapping", pg);
    /* the untouched pages must still hold the file's original pattern */
    {
        static unsigned char orig[SHARED_PAGES * PG];
        wl_fill_pattern(orig, sizeof orig, 0xF11E2);
        WL_CHECK(memcmp(shr + 8 * PG, orig + 8 * PG, (SHARED_PAGES - 8) * PG) == 0,
                 "shared: untouched pages 8..%d changed", SHARED_PAGES - 1);
    }
    /* new write through the mapping reaches the file */
    wl_fill_pattern(shr + 10 * PG, PG, 0xAF7E);
    read_range(m[M_SHARED].path, 10 * PG, PG);
    WL_CHECK(wl_check_pattern(filebuf, PG, 0xAF7E), "shared: write through the mapping after restore not seen by pread");
    WL_CHECK(msync(shr, SHARED_PAGES * PG, MS_SYNC) == 0, "msync: %m");
    /* pwrite to the file is seen in the mapping */
    {
        unsigned char pgbuf[PG];
        wl_fill_pattern(pgbuf, PG, 0xF11E);
        int fd = xopen(m[M_SHARED].path, O_RDWR, 0);
        xpwrite(fd, pgbuf, PG, 20 * PG, "shared.dat");
        close(fd);
        WL_CHECK(memcmp(shr + 20 * PG, pgbuf, PG) == 0, "shared: pwrite to the file not visible in the mapping");
    }

    /* read-only mapping at offset */
    read_range(m[M_RO].path, RO_OFF_PAGES * PG, RO_MAP_PAGES * PG);
    WL_CHECK(memcmp(ro, filebuf, RO_MAP_PAGES * PG) == 0, "ro: mapping differs from file at offset %lu", RO_OFF_PAGES * PG);
    {
        static unsigned char orig[RO_PAGES * PG];
        wl_fill_pattern(orig, sizeof orig, 0xF11E3);
        WL_CHECK(memcmp(ro, orig + RO_OFF_PAGES * PG, RO_MAP_PAGES * PG) == 0, "ro: mapping content not the expected pattern");
    }

    /* executables */
    WL_CHECK(wl_hash(exe, exe_len) == exe_hash, "own executable mapping changed");
    read_range(m[M_EXE].path, 0, exe_len);
    WL_CHECK(memcmp(exe, filebuf, exe_len) == 0, "own executable mapping differs from %s", m[M_EXE].path);
    WL_CHECK(wl_hash(tru, true_len) == true_hash, "/bin/true mapping changed");
    read_range("/bin/true", 0, true_len);
    WL_CHECK(memcmp(tru, filebuf, true_len) == 0, "/bin/true mapping differs from the file");

    wl_report(1, "ok");
}
