/*
 * memfd_paths.c - memfd attributes on every path a memfd can take through a checkpoint.
 *
 * Objects (each checked by value at verify; inode numbers change across a restore, so
 * identity is checked between descriptors and mappings, never against the old number):
 *   mode     "hm mode": fchmod 0640, fchown 1234:5678, 5000 bytes (not a page multiple),
 *            open only (never mapped), offset 777, no seals
 *   noseal   "name with spaces": created without MFD_ALLOW_SEALING (F_SEAL_SEAL), size 0,
 *            opened O_RDWR, with O_APPEND|O_NONBLOCK status flags
 *   wseal    F_SEAL_WRITE|SHRINK|GROW over 3 pages + 100 bytes, mapped shared read-only after
 *            the seal (no VM_MAYWRITE: mprotect to write fails), fd open: write() EPERM, a
 *            writable shared mmap EPERM
 *   future   F_SEAL_FUTURE_WRITE|F_SEAL_SEAL added while a writable shared mapping W and a
 *            read-only one R1 exist (both keep VM_MAYWRITE); R2 mapped read-only after the
 *            seal (no VM_MAYWRITE); W is shared with a child forked after setup; write() EPERM
 *   noexec   MFD_NOEXEC_SEAL (mode 0666, F_SEAL_EXEC): chmod +x refused
 *   exec     MFD_EXEC without sealing (mode 0777, F_SEAL_SEAL)
 *   xseal    mode 0750, then F_SEAL_EXEC added by hand (on an executable memfd it brings
 *            F_SEAL_WRITE, FUTURE_WRITE, GROW and SHRINK with it)
 *   maponly  a 249-byte name, 2 pages + 10 bytes, mapped shared, fd closed
 *   priv     mapped private with its fd closed (one page copied on write), and privfd mapped
 *            private with its fd open (a write through the fd reaches a page not copied)
 *   ro       a second description of "hm ro" opened O_RDONLY through /proc/self/fd/N, with its
 *            own offset; the same inode as the first
 *   shared   a description shared with the child (offset moved by the child after restore)
 *   inflight a memfd (mode 0600, F_SEAL_GROW, 3000 bytes) in flight in a unix socket queue
 *   twin     two memfds named "hm twin": two objects
 * /proc/self/fd names equal the maps names.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif

#define PG 4096UL
#define MODE_SIZE 5000
#define WSEAL_SIZE (3 * PG + 100)
#define FUT_SIZE (3 * PG)
#define MAPONLY_SIZE (2 * PG + 10)
#define PRIV_SIZE (4 * PG)
#define INFLIGHT_SIZE 3000

static char long_name[250];
static unsigned char buf[1 << 16];

static int mk(const char *name, unsigned flags)
{
    int fd = memfd_create(name, flags);
    if (fd < 0)
        wl_fail("memfd_create(%s, %#x): %m", name, flags);
    return fd;
}

static void fill_fd(int fd, size_t n, uint64_t seed)
{
    if (ftruncate(fd, (off_t)n) < 0)
        wl_fail("ftruncate: %m");
    if (n == 0)
        return;
    unsigned char *p = malloc(n);
    wl_fill_pattern(p, n, seed);
    if (pwrite(fd, p, n, 0) != (ssize_t)n)
        wl_fail("pwrite: %m");
    free(p);
}

static int content_is(int fd, size_t n, uint64_t seed)
{
    unsigned char *p = malloc(n + 1);
    ssize_t r = pread(fd, p, n + 1, 0);
    int ok = r == (ssize_t)n && wl_check_pattern(p, n, seed);
    free(p);
    return ok;
}

static void *map(int fd, size_t n, int prot, int flags)
{
    void *p = mmap(NULL, n, prot, flags, fd, 0);
    if (p == MAP_FAILED)
        wl_fail("mmap: %m");
    return p;
}

static void link_of(const char *path, char *out, size_t cap)
{
    ssize_t n = readlink(path, out, cap - 1);
    out[n < 0 ? 0 : n] = 0;
}

static void fd_name(int fd, char *out, size_t cap)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    link_of(p, out, cap);
}

/* The name /proc/self/maps gives the mapping that holds addr. */
static void maps_name(const void *addr, char *out, size_t cap)
{
    out[0] = 0;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        wl_fail("open maps: %m");
    static char line[1024];
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        int pos = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &a, &b, &pos) >= 2 &&
            (unsigned long)addr >= a && (unsigned long)addr < b) {
            char *s = line + pos;
            s[strcspn(s, "\n")] = 0;
            snprintf(out, cap, "%s", s);
            break;
        }
    }
    fclose(f);
}

/* VM_MAYWRITE of the mapping holding addr, from smaps. */
static int maywrite(const void *addr)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f)
        wl_fail("open smaps: %m");
    static char line[1024];
    int in = 0, mw = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2)
            in = (unsigned long)addr >= a && (unsigned long)addr < b;
        if (in && !strncmp(line, "VmFlags:", 8)) {
            mw = strstr(line, " mw") != NULL;
            break;
        }
    }
    fclose(f);
    return mw;
}

static void check_stat(const char *what, int fd, mode_t mode, uid_t uid, gid_t gid, off_t size)
{
    struct stat st;
    WL_CHECK(fstat(fd, &st) == 0, "%s: fstat: %m", what);
    WL_CHECK((st.st_mode & 07777) == mode, "%s: mode %o, expected %o", what, st.st_mode & 07777, mode);
    WL_CHECK(st.st_uid == uid && st.st_gid == gid, "%s: owner %u:%u, expected %u:%u", what,
             st.st_uid, st.st_gid, uid, gid);
    WL_CHECK(st.st_size == size, "%s: size %lld, expected %lld", what, (long long)st.st_size,
             (long long)size);
}

static void check_seals(const char *what, int fd, int want)
{
    int s = fcntl(fd, F_GET_SEALS);
    WL_CHECK(s == want, "%s: seals %#x, expected %#x", what, s, want);
}

static void check_name(const char *what, int fd, const char *name)
{
    char got[512], want[512];
    fd_name(fd, got, sizeof got);
    snprintf(want, sizeof want, "/memfd:%s (deleted)", name);
    WL_CHECK(!strcmp(got, want), "%s: fd links to '%s', expected '%s'", what, got, want);
}

static void check_map_name(const char *what, const void *addr, const char *name)
{
    char got[512], want[512];
    maps_name(addr, got, sizeof got);
    snprintf(want, sizeof want, "/memfd:%s (deleted)", name);
    WL_CHECK(!strcmp(got, want), "%s: maps names it '%s', expected '%s'", what, got, want);
}

static ino_t ino_of(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    return st.st_ino;
}

static ino_t ino_at(const void *addr)
{
    char p[128];
    struct stat st;
    snprintf(p, sizeof p, "/proc/self/map_files/%lx-%lx", (unsigned long)addr,
             (unsigned long)addr + PG);
    /* the exact range is needed: find it in maps */
    FILE *f = fopen("/proc/self/maps", "re");
    static char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && (unsigned long)addr >= a &&
            (unsigned long)addr < b) {
            snprintf(p, sizeof p, "/proc/self/map_files/%lx-%lx", a, b);
            break;
        }
    }
    if (f)
        fclose(f);
    if (stat(p, &st) < 0)
        return 0;
    return st.st_ino;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    memset(long_name, 'n', 249);
    memcpy(long_name, "hm-", 3);

    /* mode: fchmod, fchown, odd size, open only */
    int mode_fd = mk("hm mode", MFD_ALLOW_SEALING);
    fill_fd(mode_fd, MODE_SIZE, 11);
    if (fchmod(mode_fd, 0640) < 0 || fchown(mode_fd, 1234, 5678) < 0)
        wl_fail("fchmod/fchown: %m");
    lseek(mode_fd, 777, SEEK_SET);

    /* noseal: F_SEAL_SEAL, size 0, spaces, O_APPEND|O_NONBLOCK */
    int noseal_fd = mk("name with spaces", 0);
    if (fcntl(noseal_fd, F_SETFL, O_APPEND | O_NONBLOCK) < 0)
        wl_fail("F_SETFL: %m");

    /* wseal: F_SEAL_WRITE, read-only shared mapping made after the seal */
    int wseal_fd = mk("hm wseal", MFD_ALLOW_SEALING);
    fill_fd(wseal_fd, WSEAL_SIZE, 12);
    if (fcntl(wseal_fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW) < 0)
        wl_fail("F_SEAL_WRITE: %m");
    unsigned char *wseal_map = map(wseal_fd, 4 * PG, PROT_READ, MAP_SHARED);

    /* future: W and R1 before F_SEAL_FUTURE_WRITE, R2 after */
    int fut_fd = mk("hm future", MFD_ALLOW_SEALING);
    fill_fd(fut_fd, FUT_SIZE, 13);
    unsigned char *W = map(fut_fd, FUT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED);
    unsigned char *R1 = map(fut_fd, FUT_SIZE, PROT_READ, MAP_SHARED);
    if (fcntl(fut_fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0)
        wl_fail("F_SEAL_FUTURE_WRITE: %m");
    unsigned char *R2 = map(fut_fd, FUT_SIZE, PROT_READ, MAP_SHARED);
    if (maywrite(W) != 1 || maywrite(R1) != 1 || maywrite(R2) != 0 || maywrite(wseal_map) != 0)
        wl_fail("setup: VM_MAYWRITE W %d R1 %d R2 %d wseal %d", maywrite(W), maywrite(R1),
                maywrite(R2), maywrite(wseal_map));
    W[PG + 5] = 0x77;

    /* exec bits and F_SEAL_EXEC */
    int noexec_fd = mk("hm noexec", MFD_NOEXEC_SEAL);
    fill_fd(noexec_fd, 100, 14);
    int exec_fd = mk("hm exec", MFD_EXEC);
    int xseal_fd = mk("hm xseal", MFD_ALLOW_SEALING);
    if (fchmod(xseal_fd, 0750) < 0 || fcntl(xseal_fd, F_ADD_SEALS, F_SEAL_EXEC) < 0)
        wl_fail("xseal: %m");

    /* maponly: long name, mapped, fd closed */
    int fd = mk(long_name, 0);
    fill_fd(fd, MAPONLY_SIZE, 15);
    unsigned char *maponly = map(fd, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED);
    close(fd);

    /* priv: private, fd closed; privfd: private, fd open */
    fd = mk("hm priv", 0);
    fill_fd(fd, PRIV_SIZE, 16);
    unsigned char *priv = map(fd, PRIV_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    close(fd);
    memset(priv + PG, 0xAB, PG); /* copied on write */
    int privfd = mk("hm privfd", 0);
    fill_fd(privfd, PRIV_SIZE, 17);
    unsigned char *privm = map(privfd, PRIV_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    memset(privm, 0xCD, PG);
    volatile unsigned char touch = privm[2 * PG]; /* read: still the file's page */
    (void)touch;

    /* ro: a second description, read-only, own offset */
    int ro1 = mk("hm ro", 0);
    fill_fd(ro1, 8192, 18);
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", ro1);
    int ro2 = open(p, O_RDONLY);
    if (ro2 < 0)
        wl_fail("reopen %s: %m", p);
    lseek(ro1, 100, SEEK_SET);
    lseek(ro2, 200, SEEK_SET);

    /* shared with a child */
    int sh_fd = mk("hm shared", 0);
    fill_fd(sh_fd, 8192, 19);
    lseek(sh_fd, 10, SEEK_SET);

    /* in flight */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        wl_fail("socketpair: %m");
    fd = mk("hm inflight", MFD_ALLOW_SEALING);
    fill_fd(fd, INFLIGHT_SIZE, 20);
    if (fchmod(fd, 0600) < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_GROW) < 0)
        wl_fail("inflight: %m");
    {
        char c = 'm';
        struct iovec iov = {&c, 1};
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int))];
        } u;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                            .msg_controllen = sizeof u.b};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof fd);
        if (sendmsg(sv[0], &mh, 0) != 1)
            wl_fail("sendmsg: %m");
        close(fd);
    }

    /* twins */
    int twin1 = mk("hm twin", 0), twin2 = mk("hm twin", 0);
    fill_fd(twin1, 4096, 21);
    fill_fd(twin2, 4096, 22);

    /* child: shares sh_fd's description and the W mapping */
    int go[2], done[2];
    if (pipe(go) < 0 || pipe(done) < 0)
        wl_fail("pipe: %m");
    pid_t kid = fork();
    if (kid < 0)
        wl_fail("fork: %m");
    if (kid == 0) {
        char c;
        while (read(go[0], &c, 1) < 0 && errno == EINTR)
            ;
        char name[256];
        fd_name(sh_fd, name, sizeof name);
        if (strcmp(name, "/memfd:hm shared (deleted)"))
            wl_fail("child: shared fd links to '%s'", name);
        if (lseek(sh_fd, 4242, SEEK_SET) != 4242)
            wl_fail("child: lseek: %m");
        W[100] = 0x5A;
        c = 'k';
        if (write(done[1], &c, 1) != 1)
            wl_fail("child: write: %m");
        wl_report(1, "ok");
    }

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(10);

    /* mode */
    check_stat("mode", mode_fd, 0640, 1234, 5678, MODE_SIZE);
    check_seals("mode", mode_fd, 0);
    check_name("mode", mode_fd, "hm mode");
    WL_CHECK(lseek(mode_fd, 0, SEEK_CUR) == 777, "mode: offset %lld", (long long)lseek(mode_fd, 0, SEEK_CUR));
    WL_CHECK(content_is(mode_fd, MODE_SIZE, 11), "mode: content differs");

    /* noseal */
    check_stat("noseal", noseal_fd, 0777, 0, 0, 0);
    check_seals("noseal", noseal_fd, F_SEAL_SEAL);
    check_name("noseal", noseal_fd, "name with spaces");
    int fl = fcntl(noseal_fd, F_GETFL);
    WL_CHECK((fl & (O_ACCMODE | O_APPEND | O_NONBLOCK)) == (O_RDWR | O_APPEND | O_NONBLOCK),
             "noseal: F_GETFL %#x", fl);
    WL_CHECK(fcntl(noseal_fd, F_ADD_SEALS, F_SEAL_GROW) < 0 && errno == EPERM,
             "noseal: F_ADD_SEALS not refused");
    WL_CHECK(write(noseal_fd, "ab", 2) == 2 && lseek(noseal_fd, 0, SEEK_SET) == 0 &&
             write(noseal_fd, "cd", 2) == 2 && pread(noseal_fd, buf, 8, 0) == 4 &&
             !memcmp(buf, "abcd", 4), "noseal: O_APPEND writes");

    /* wseal */
    check_stat("wseal", wseal_fd, 0777, 0, 0, WSEAL_SIZE);
    check_seals("wseal", wseal_fd, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW);
    check_map_name("wseal", wseal_map, "hm wseal");
    WL_CHECK(content_is(wseal_fd, WSEAL_SIZE, 12), "wseal: content differs");
    WL_CHECK(wl_check_pattern(wseal_map, WSEAL_SIZE, 12), "wseal: mapping differs");
    WL_CHECK(maywrite(wseal_map) == 0, "wseal: mapping may be written (VM_MAYWRITE)");
    WL_CHECK(mprotect(wseal_map, PG, PROT_READ | PROT_WRITE) < 0 && errno == EACCES,
             "wseal: mprotect to write not refused with EACCES");
    WL_CHECK(pwrite(wseal_fd, "x", 1, 0) < 0 && errno == EPERM, "wseal: write not refused");
    WL_CHECK(mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, wseal_fd, 0) == MAP_FAILED &&
             errno == EPERM, "wseal: writable shared mmap not refused");
    WL_CHECK(ino_at(wseal_map) == ino_of(wseal_fd), "wseal: mapping and fd are two objects");

    /* future */
    check_seals("future", fut_fd, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL);
    check_stat("future", fut_fd, 0777, 0, 0, FUT_SIZE);
    check_name("future", fut_fd, "hm future");
    check_map_name("future W", W, "hm future");
    WL_CHECK(maywrite(W) == 1 && maywrite(R1) == 1 && maywrite(R2) == 0,
             "future: VM_MAYWRITE W %d R1 %d R2 %d, expected 1 1 0", maywrite(W), maywrite(R1),
             maywrite(R2));
    WL_CHECK(W[PG + 5] == 0x77 && R1[PG + 5] == 0x77 && R2[PG + 5] == 0x77, "future: W's write lost");
    W[PG + 6] = 0x78;
    WL_CHECK(R1[PG + 6] == 0x78 && R2[PG + 6] == 0x78 && pread(fut_fd, buf, 1, PG + 6) == 1 &&
             buf[0] == 0x78, "future: W no longer shared with R1, R2 and the fd");
    WL_CHECK(pwrite(fut_fd, "x", 1, 0) < 0 && errno == EPERM, "future: write not refused");
    WL_CHECK(mprotect(R2, PG, PROT_READ | PROT_WRITE) < 0 && errno == EACCES,
             "future: R2 mprotect to write not refused");
    WL_CHECK(mprotect(R1, PG, PROT_READ | PROT_WRITE) == 0, "future: R1 mprotect to write: %m");
    R1[7] = 0x79;
    WL_CHECK(W[7] == 0x79, "future: R1 not shared with W");

    /* exec */
    check_stat("noexec", noexec_fd, 0666, 0, 0, 100);
    check_seals("noexec", noexec_fd, F_SEAL_EXEC);
    WL_CHECK(fchmod(noexec_fd, 0777) < 0 && errno == EPERM, "noexec: chmod +x not refused");
    WL_CHECK(content_is(noexec_fd, 100, 14), "noexec: content differs");
    check_stat("exec", exec_fd, 0777, 0, 0, 0);
    check_seals("exec", exec_fd, F_SEAL_SEAL);
    check_stat("xseal", xseal_fd, 0750, 0, 0, 0);
    /* F_SEAL_EXEC on an executable memfd implies the write, grow and shrink seals */
    check_seals("xseal", xseal_fd, F_SEAL_EXEC | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_GROW | F_SEAL_SHRINK);
    WL_CHECK(fchmod(xseal_fd, 0770) == 0 && fchmod(xseal_fd, 0640) < 0 && errno == EPERM,
             "xseal: F_SEAL_EXEC not enforced");

    /* maponly */
    check_map_name("maponly", maponly, long_name);
    WL_CHECK(wl_check_pattern(maponly, MAPONLY_SIZE, 15), "maponly: content differs");
    for (size_t i = MAPONLY_SIZE; i < 3 * PG; i++)
        WL_CHECK(maponly[i] == 0, "maponly: byte %zu past the end is %#x", i, maponly[i]);
    {
        char mp[128];
        FILE *f = fopen("/proc/self/maps", "re");
        static char line[1024];
        mp[0] = 0;
        while (fgets(line, sizeof line, f)) {
            unsigned long a, b;
            if (sscanf(line, "%lx-%lx", &a, &b) == 2 && a == (unsigned long)maponly)
                snprintf(mp, sizeof mp, "/proc/self/map_files/%lx-%lx", a, b);
        }
        fclose(f);
        int mfd = open(mp, O_RDONLY);
        WL_CHECK(mfd >= 0, "maponly: open %s: %m", mp);
        check_stat("maponly", mfd, 0777, 0, 0, MAPONLY_SIZE);
        check_seals("maponly", mfd, F_SEAL_SEAL);
        close(mfd);
    }

    /* priv */
    check_map_name("priv", priv, "hm priv");
    WL_CHECK(wl_check_pattern(priv, PG, 16), "priv: page 0 differs");
    for (size_t i = 0; i < PG; i++)
        WL_CHECK(priv[PG + i] == 0xAB, "priv: copied page byte %zu is %#x", i, priv[PG + i]);
    {
        unsigned char *want = malloc(PRIV_SIZE);
        wl_fill_pattern(want, PRIV_SIZE, 16);
        WL_CHECK(!memcmp(priv + 2 * PG, want + 2 * PG, 2 * PG), "priv: pages 2-3 differ");
        free(want);
    }
    check_name("privfd", privfd, "hm privfd");
    check_map_name("privfd", privm, "hm privfd");
    WL_CHECK(privm[0] == 0xCD && privm[PG - 1] == 0xCD, "privfd: copied page lost");
    WL_CHECK(ino_at(privm) == ino_of(privfd), "privfd: mapping and fd are two objects");
    WL_CHECK(pwrite(privfd, "\x42", 1, 2 * PG + 9) == 1 && privm[2 * PG + 9] == 0x42,
             "privfd: a write through the fd does not reach the mapping's file page");
    WL_CHECK(pwrite(privfd, "\x43", 1, 10) == 1 && privm[10] == 0xCD,
             "privfd: the copied page changed with the file");

    /* ro */
    fl = fcntl(ro2, F_GETFL);
    WL_CHECK((fl & O_ACCMODE) == O_RDONLY, "ro: second description F_GETFL %#x", fl);
    WL_CHECK((fcntl(ro1, F_GETFL) & O_ACCMODE) == O_RDWR, "ro: first description not O_RDWR");
    WL_CHECK(lseek(ro1, 0, SEEK_CUR) == 100 && lseek(ro2, 0, SEEK_CUR) == 200,
             "ro: offsets %lld %lld, expected 100 200", (long long)lseek(ro1, 0, SEEK_CUR),
             (long long)lseek(ro2, 0, SEEK_CUR));
    WL_CHECK(ino_of(ro1) == ino_of(ro2), "ro: the two descriptions are two objects");
    check_name("ro2", ro2, "hm ro");
    WL_CHECK(content_is(ro2, 8192, 18), "ro: content differs");
    WL_CHECK(pwrite(ro1, "\x99", 1, 5) == 1 && pread(ro2, buf, 1, 5) == 1 && buf[0] == 0x99,
             "ro: a write through one description not seen through the other");
    WL_CHECK(write(ro2, "x", 1) < 0 && errno == EBADF, "ro: second description writable");

    /* in flight */
    {
        char c;
        int got = -1;
        struct iovec iov = {&c, 1};
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int))];
        } u;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                            .msg_controllen = sizeof u.b};
        WL_CHECK(recvmsg(sv[1], &mh, MSG_DONTWAIT) == 1 && c == 'm', "inflight: recvmsg: %m");
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        WL_CHECK(cm && cm->cmsg_type == SCM_RIGHTS, "inflight: no fd received");
        memcpy(&got, CMSG_DATA(cm), sizeof got);
        check_name("inflight", got, "hm inflight");
        check_stat("inflight", got, 0600, 0, 0, INFLIGHT_SIZE);
        check_seals("inflight", got, F_SEAL_GROW);
        WL_CHECK(content_is(got, INFLIGHT_SIZE, 20), "inflight: content differs");
    }

    /* twins */
    check_name("twin1", twin1, "hm twin");
    check_name("twin2", twin2, "hm twin");
    WL_CHECK(ino_of(twin1) != ino_of(twin2), "twins: one object");
    WL_CHECK(content_is(twin1, 4096, 21) && content_is(twin2, 4096, 22), "twins: content differs");

    /* the child */
    WL_CHECK(lseek(sh_fd, 0, SEEK_CUR) == 10, "shared: offset %lld", (long long)lseek(sh_fd, 0, SEEK_CUR));
    char c = 'g';
    WL_CHECK(write(go[1], &c, 1) == 1, "write to child: %m");
    while (read(done[0], &c, 1) < 0 && errno == EINTR)
        ;
    int st;
    WL_CHECK(waitpid(kid, &st, 0) == kid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "child failed (status %#x)", st);
    WL_CHECK(lseek(sh_fd, 0, SEEK_CUR) == 4242, "shared: the child's lseek not seen (offset %lld)",
             (long long)lseek(sh_fd, 0, SEEK_CUR));
    WL_CHECK(W[100] == 0x5A, "shared: the child's write to W not seen");
    WL_CHECK(content_is(sh_fd, 8192, 19), "shared: content differs");

    wl_report(1, "ok");
}
