/*
 * unix_mode.c - the mode and owner of a bound unix socket's file across
 * checkpoint/restore.
 *
 * Kernel state tested:
 *  - a stream listener bound to CTL_DIR/lsn.sock, chmod 0604, chown 55:66;
 *  - a datagram socket bound to CTL_DIR/dg.sock, chmod 0640 (umask 0 at bind,
 *    so the kernel's mode would be 0777 otherwise), owner 77:88.
 * Verify: stat of both paths: socket files, same mode and owner as at setup;
 * a new client connects to the listener and is accepted; a datagram sent to
 * dg.sock is received.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void addr(struct sockaddr_un *a, const char *name)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    snprintf(a->sun_path, sizeof a->sun_path, "%s/%s", wl_ctl_dir(), name);
}

static void check_file(const char *path, mode_t mode, uid_t uid, gid_t gid)
{
    struct stat st;
    WL_CHECK(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    WL_CHECK(S_ISSOCK(st.st_mode), "%s is not a socket (%o)", path, st.st_mode);
    WL_CHECK((st.st_mode & 07777) == mode, "%s mode %o, want %o", path, st.st_mode & 07777,
             mode);
    WL_CHECK(st.st_uid == uid && st.st_gid == gid, "%s owner %d:%d, want %d:%d", path,
             st.st_uid, st.st_gid, uid, gid);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    struct sockaddr_un la, da;
    addr(&la, "lsn.sock");
    addr(&da, "dg.sock");
    int lsn = socket(AF_UNIX, SOCK_STREAM, 0);
    int dg = socket(AF_UNIX, SOCK_DGRAM, 0);
    umask(0);
    if (bind(lsn, (struct sockaddr *)&la, sizeof la) < 0 || listen(lsn, 4) < 0 ||
        bind(dg, (struct sockaddr *)&da, sizeof da) < 0)
        wl_fail("setup: bind: %s", strerror(errno));
    umask(022);
    if (chmod(la.sun_path, 0604) < 0 || chown(la.sun_path, 55, 66) < 0 ||
        chmod(da.sun_path, 0640) < 0 || chown(da.sun_path, 77, 88) < 0)
        wl_fail("setup: chmod/chown: %s", strerror(errno));

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(50);

    check_file(la.sun_path, 0604, 55, 66);
    check_file(da.sun_path, 0640, 77, 88);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    WL_CHECK(connect(c, (struct sockaddr *)&la, sizeof la) == 0, "connect: %s", strerror(errno));
    int a = accept(lsn, NULL, NULL);
    WL_CHECK(a >= 0, "accept: %s", strerror(errno));
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    WL_CHECK(sendto(s, "dgram", 5, 0, (struct sockaddr *)&da, sizeof da) == 5, "sendto: %s",
             strerror(errno));
    char b[16];
    WL_CHECK(recv(dg, b, sizeof b, 0) == 5 && memcmp(b, "dgram", 5) == 0, "recv");
    wl_report(1, "ok");
}
