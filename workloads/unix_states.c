/*
 * unix_states.c - AF_UNIX sockets in the states a program leaves them in.
 *
 * Kernel state tested (one process; paths are CTL_DIR/hu-*):
 *  1. unbound, unconnected sockets: a SOCK_STREAM one and a SOCK_DGRAM one
 *     (getsockname: family only; getpeername: ENOTCONN; later the stream one
 *     connects to a new listener and the datagram one binds a name);
 *  2. peers that closed with data still queued:
 *     - stream pair pe: pe[1] wrote 3000 pattern bytes and closed: pe[0]
 *       reads them, then EOF; send on pe[0] fails with EPIPE;
 *     - stream pair pr: pr[1] wrote 700 bytes and closed while 5 bytes pr[0]
 *       had sent it were unread: pr[0] reads the 700 bytes, then ECONNRESET,
 *       then EOF;
 *     - seqpacket pair pq: pq[1] wrote records of 10 and 2000 bytes and
 *       closed: pq[0] reads both records (boundaries kept) then EOF;
 *     - datagram pair pd: pd[1] sent "d1" and "d22" and closed: pd[0] receives
 *       both, then nothing (EAGAIN); its first send fails with ECONNREFUSED,
 *       the next with ENOTCONN (it is disconnected);
 *  3. bound to a path since deleted: a datagram socket bound to hu-del.sock
 *     (file unlinked) holding one queued datagram from an unbound sender; a
 *     listener bound to hu-dir/l.sock whose directory was removed. Both keep
 *     their name (getsockname), neither path exists after restore, both are
 *     still bound (bind again: EINVAL), the listener still listens;
 *  4. the mode of a socket's file: a listener bound to hu-mode.sock, chmod
 *     0604; after restore the file has mode 0604 and new clients reach the
 *     same listener;
 *  5. a datagram socket bound to hu-rcv.sock with datagrams queued from
 *     several senders: s1 (bound to hu-s1.sock, still open), s2 (bound to the
 *     abstract name @hu-s2-<pid>, closed since), s3 (unbound), s4 (bound to
 *     hu-s4.sock, closed and unlinked since), s1 again. recvfrom must return
 *     each datagram with its sender's address; s2's abstract name is free
 *     again after restore (nothing of ours holds it), hu-s4.sock does not
 *     exist; s1 still sends with its address;
 *  6. a datagram socket bound to the relative name "hu-rel.sock" (cwd is
 *     CTL_DIR): getsockname still gives the relative name, the file is
 *     CTL_DIR/hu-rel.sock with mode 0640, and a datagram sent to that path
 *     arrives; another bound to "r.sock" from the directory CTL_DIR/hu-sub, then
 *     the process went back to CTL_DIR: its file is CTL_DIR/hu-sub/r.sock.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PE_LEN 3000
#define PR_LEN 700
#define SEED_PE 31
#define SEED_PR 32

struct addr {
    struct sockaddr_un sa;
    socklen_t len;
};

static void path_addr(struct addr *a, const char *name)
{
    memset(a, 0, sizeof *a);
    a->sa.sun_family = AF_UNIX;
    char p[512];
    snprintf(p, sizeof p, "%s/%s", wl_ctl_dir(), name);
    if (strlen(p) >= sizeof a->sa.sun_path)
        wl_fail("setup: path %s does not fit in sun_path", p);
    strcpy(a->sa.sun_path, p);
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(p) + 1);
}

static void abstract_addr(struct addr *a, const char *name)
{
    memset(a, 0, sizeof *a);
    a->sa.sun_family = AF_UNIX;
    memcpy(a->sa.sun_path + 1, name, strlen(name));
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
}

static int sock(int type)
{
    int s = socket(AF_UNIX, type, 0);
    if (s < 0)
        wl_fail("setup: socket: %s", strerror(errno));
    return s;
}

static void bind_to(int s, const struct addr *a, const char *what)
{
    if (bind(s, (const struct sockaddr *)&a->sa, a->len) < 0)
        wl_fail("setup: bind %s: %s", what, strerror(errno));
}

static void send_to(int s, const void *p, size_t n, const struct addr *to, const char *what)
{
    ssize_t w = sendto(s, p, n, MSG_NOSIGNAL, to ? (const struct sockaddr *)&to->sa : NULL,
                       to ? to->len : 0);
    if (w != (ssize_t)n)
        wl_fail("setup: send %s: %zd (%s)", what, w, w < 0 ? strerror(errno) : "short");
}

static int same_addr(const struct sockaddr_un *got, socklen_t len, const struct addr *want)
{
    return len == want->len && memcmp(got, &want->sa, len) == 0;
}

static const char *show(const struct sockaddr_un *a, socklen_t len)
{
    static char b[256];
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                   ? len - offsetof(struct sockaddr_un, sun_path)
                   : 0;
    if (n == 0)
        return "(unnamed)";
    if (a->sun_path[0] == 0)
        snprintf(b, sizeof b, "@%.*s", (int)n - 1, a->sun_path + 1);
    else
        snprintf(b, sizeof b, "%.*s", (int)n, a->sun_path);
    return b;
}

static void check_name(int s, const struct addr *want, const char *what)
{
    struct sockaddr_un a;
    socklen_t len = sizeof a;
    WL_CHECK(getsockname(s, (struct sockaddr *)&a, &len) == 0, "%s: getsockname: %s", what,
             strerror(errno));
    WL_CHECK(same_addr(&a, len, want), "%s: name expected %s (len %u), found %s (len %u)", what,
             show(&want->sa, want->len), want->len, show(&a, len), len);
}

static ssize_t read_all_nb(int s, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        if (poll(&p, 1, 2000) <= 0)
            break;
        ssize_t r = recv(s, (char *)buf + got, n - got, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            return got ? (ssize_t)got : r;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int listener_at(const struct addr *a, const char *what)
{
    int l = sock(SOCK_STREAM);
    bind_to(l, a, what);
    if (listen(l, 4) < 0)
        wl_fail("setup: listen %s: %s", what, strerror(errno));
    return l;
}

static void check_listens(int l, const struct addr *reach, const char *what)
{
    int v = 0;
    socklen_t vl = sizeof v;
    WL_CHECK(getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) == 0 && v == 1,
             "%s: SO_ACCEPTCONN expected 1, found %d", what, v);
    if (!reach)
        return;
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    WL_CHECK(connect(c, (const struct sockaddr *)&reach->sa, reach->len) == 0,
             "%s: a new client cannot connect: %s", what, strerror(errno));
    struct pollfd p = {.fd = l, .events = POLLIN};
    WL_CHECK(poll(&p, 1, 2000) == 1, "%s: the new client's connection did not reach it", what);
    int a = accept(l, NULL, NULL);
    WL_CHECK(a >= 0, "%s: accept: %s", what, strerror(errno));
    WL_CHECK(send(c, "hi", 2, 0) == 2, "%s: send", what);
    char b[4];
    WL_CHECK(read_all_nb(a, b, 2) == 2 && memcmp(b, "hi", 2) == 0,
             "%s: data from the new client not received", what);
    close(a);
    close(c);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    static unsigned char buf[8192];
    char abname[64];
    snprintf(abname, sizeof abname, "hu-s2-%d", (int)getpid());

    /* 1. unbound, unconnected */
    int ub_s = sock(SOCK_STREAM), ub_d = sock(SOCK_DGRAM);

    /* 2. peers closed with data queued */
    int pe[2], pr[2], pq[2], pd[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pe) || socketpair(AF_UNIX, SOCK_STREAM, 0, pr) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pq) || socketpair(AF_UNIX, SOCK_DGRAM, 0, pd))
        wl_fail("setup: socketpair: %s", strerror(errno));
    wl_fill_pattern(buf, PE_LEN, SEED_PE);
    send_to(pe[1], buf, PE_LEN, NULL, "pe");
    close(pe[1]);
    wl_fill_pattern(buf, PR_LEN, SEED_PR);
    send_to(pr[1], buf, PR_LEN, NULL, "pr");
    send_to(pr[0], "unrd!", 5, NULL, "pr back");
    close(pr[1]);
    memset(buf, 'q', sizeof buf);
    send_to(pq[1], buf, 10, NULL, "pq 10");
    send_to(pq[1], buf, 2000, NULL, "pq 2000");
    close(pq[1]);
    send_to(pd[1], "d1", 2, NULL, "pd d1");
    send_to(pd[1], "d22", 3, NULL, "pd d22");
    close(pd[1]);

    /* 3. deleted paths */
    struct addr a_del, a_dir, a_mode, a_rcv, a_s1, a_s2, a_s4;
    path_addr(&a_del, "hu-del.sock");
    path_addr(&a_dir, "hu-dir/l.sock");
    path_addr(&a_mode, "hu-mode.sock");
    path_addr(&a_rcv, "hu-rcv.sock");
    path_addr(&a_s1, "hu-s1.sock");
    abstract_addr(&a_s2, abname);
    path_addr(&a_s4, "hu-s4.sock");
    int del = sock(SOCK_DGRAM);
    bind_to(del, &a_del, "hu-del.sock");
    int tmp = sock(SOCK_DGRAM);
    send_to(tmp, "to-deleted", 10, &a_del, "to hu-del.sock");
    close(tmp);
    unlink(a_del.sa.sun_path);
    if (mkdir("hu-dir", 0755) < 0)
        wl_fail("setup: mkdir hu-dir: %s", strerror(errno));
    int ldir = listener_at(&a_dir, "hu-dir/l.sock");
    unlink(a_dir.sa.sun_path);
    if (rmdir("hu-dir") < 0)
        wl_fail("setup: rmdir hu-dir: %s", strerror(errno));

    /* 4. mode */
    int lmode = listener_at(&a_mode, "hu-mode.sock");
    if (chmod(a_mode.sa.sun_path, 0604) < 0)
        wl_fail("setup: chmod: %s", strerror(errno));

    /* 5. several senders */
    int rcv = sock(SOCK_DGRAM);
    bind_to(rcv, &a_rcv, "hu-rcv.sock");
    int s1 = sock(SOCK_DGRAM), s2 = sock(SOCK_DGRAM), s3 = sock(SOCK_DGRAM),
        s4 = sock(SOCK_DGRAM);
    bind_to(s1, &a_s1, "hu-s1.sock");
    bind_to(s2, &a_s2, "@hu-s2");
    bind_to(s4, &a_s4, "hu-s4.sock");
    send_to(s1, "from-s1-a", 9, &a_rcv, "s1");
    send_to(s2, "from-s2", 7, &a_rcv, "s2");
    send_to(s3, "from-s3", 7, &a_rcv, "s3");
    send_to(s4, "from-s4", 7, &a_rcv, "s4");
    send_to(s1, "from-s1-b", 9, &a_rcv, "s1 again");
    close(s2);
    close(s3);
    close(s4);
    unlink(a_s4.sa.sun_path);

    /* 6. relative name */
    struct addr a_rel;
    memset(&a_rel, 0, sizeof a_rel);
    a_rel.sa.sun_family = AF_UNIX;
    strcpy(a_rel.sa.sun_path, "hu-rel.sock");
    a_rel.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen("hu-rel.sock") + 1);
    int rel = sock(SOCK_DGRAM);
    bind_to(rel, &a_rel, "hu-rel.sock");
    if (chmod("hu-rel.sock", 0640) < 0)
        wl_fail("setup: chmod hu-rel.sock: %s", strerror(errno));
    struct addr a_sub;
    memset(&a_sub, 0, sizeof a_sub);
    a_sub.sa.sun_family = AF_UNIX;
    strcpy(a_sub.sa.sun_path, "r.sock");
    a_sub.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen("r.sock") + 1);
    if (mkdir("hu-sub", 0755) < 0 || chdir("hu-sub") < 0)
        wl_fail("setup: hu-sub: %s", strerror(errno));
    int sub = sock(SOCK_DGRAM);
    bind_to(sub, &a_sub, "hu-sub/r.sock");
    if (chdir(wl_ctl_dir()) < 0)
        wl_fail("setup: chdir back: %s", strerror(errno));

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    struct sockaddr_un sa;
    socklen_t len;
    int v;
    socklen_t vl;
    /* 1 */
    int types[2] = {SOCK_STREAM, SOCK_DGRAM}, ub[2] = {ub_s, ub_d};
    for (int i = 0; i < 2; i++) {
        vl = sizeof v;
        WL_CHECK(getsockopt(ub[i], SOL_SOCKET, SO_TYPE, &v, &vl) == 0 && v == types[i],
                 "unbound socket %d: SO_TYPE expected %d, found %d", i, types[i], v);
        len = sizeof sa;
        WL_CHECK(getsockname(ub[i], (struct sockaddr *)&sa, &len) == 0 &&
                     len == sizeof(sa_family_t),
                 "unbound socket %d: expected no name, found %s", i, show(&sa, len));
        len = sizeof sa;
        WL_CHECK(getpeername(ub[i], (struct sockaddr *)&sa, &len) < 0 && errno == ENOTCONN,
                 "unbound socket %d: expected not connected, getpeername gave %s", i,
                 show(&sa, len));
    }
    /* 2 */
    ssize_t r = read_all_nb(pe[0], buf, sizeof buf);
    WL_CHECK(r == PE_LEN && wl_check_pattern(buf, PE_LEN, SEED_PE),
             "pe: expected the %d queued bytes, read %zd", PE_LEN, r);
    r = recv(pe[0], buf, 1, MSG_DONTWAIT);
    WL_CHECK(r == 0, "pe: expected EOF after the data, recv gave %zd (%s)", r,
             r < 0 ? strerror(errno) : "data");
    r = send(pe[0], "x", 1, MSG_NOSIGNAL);
    WL_CHECK(r < 0 && errno == EPIPE, "pe: send expected EPIPE, got %zd (%s)", r,
             r < 0 ? strerror(errno) : "sent");
    r = recv(pr[0], buf, PR_LEN, MSG_DONTWAIT);
    WL_CHECK(r == PR_LEN && wl_check_pattern(buf, PR_LEN, SEED_PR),
             "pr: expected the %d queued bytes, read %zd (%s)", PR_LEN, r,
             r < 0 ? strerror(errno) : "");
    r = recv(pr[0], buf, 1, MSG_DONTWAIT);
    WL_CHECK(r < 0 && errno == ECONNRESET, "pr: expected ECONNRESET after the data, got %zd (%s)",
             r, r < 0 ? strerror(errno) : "data/EOF");
    r = recv(pr[0], buf, 1, MSG_DONTWAIT);
    WL_CHECK(r == 0, "pr: expected EOF after ECONNRESET, got %zd (%s)", r,
             r < 0 ? strerror(errno) : "data");
    r = recv(pq[0], buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r == 10, "pq: first record expected 10 bytes, got %zd", r);
    r = recv(pq[0], buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r == 2000, "pq: second record expected 2000 bytes, got %zd", r);
    r = recv(pq[0], buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r == 0, "pq: expected EOF after the records, got %zd (%s)", r,
             r < 0 ? strerror(errno) : "data");
    r = recv(pd[0], buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r == 2 && memcmp(buf, "d1", 2) == 0, "pd: first datagram expected 'd1', got %zd", r);
    r = recv(pd[0], buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r == 3 && memcmp(buf, "d22", 3) == 0, "pd: second datagram expected 'd22', got %zd",
             r);
    r = recv(pd[0], buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r < 0 && errno == EAGAIN, "pd: expected nothing more (EAGAIN), got %zd (%s)", r,
             r < 0 ? strerror(errno) : "data");
    r = send(pd[0], "x", 1, MSG_DONTWAIT);
    WL_CHECK(r < 0 && errno == ECONNREFUSED, "pd: first send expected ECONNREFUSED, got %zd (%s)",
             r, r < 0 ? strerror(errno) : "sent");
    r = send(pd[0], "x", 1, MSG_DONTWAIT);
    WL_CHECK(r < 0 && errno == ENOTCONN, "pd: second send expected ENOTCONN, got %zd (%s)", r,
             r < 0 ? strerror(errno) : "sent");
    /* 3 */
    struct stat st;
    check_name(del, &a_del, "hu-del.sock socket");
    WL_CHECK(stat(a_del.sa.sun_path, &st) < 0 && errno == ENOENT,
             "hu-del.sock: the deleted path exists again after restore");
    len = sizeof sa;
    r = recvfrom(del, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&sa, &len);
    WL_CHECK(r == 10 && memcmp(buf, "to-deleted", 10) == 0,
             "hu-del.sock: queued datagram expected 'to-deleted', got %zd", r);
    struct addr a_fresh;
    char fresh[64];
    snprintf(fresh, sizeof fresh, "hu-fresh-%d", (int)getpid());
    abstract_addr(&a_fresh, fresh);
    WL_CHECK(bind(del, (const struct sockaddr *)&a_fresh.sa, a_fresh.len) < 0 && errno == EINVAL,
             "hu-del.sock: binding again expected EINVAL (already bound): %s", strerror(errno));
    check_name(ldir, &a_dir, "hu-dir/l.sock listener");
    WL_CHECK(stat("hu-dir", &st) < 0 && errno == ENOENT,
             "hu-dir: the removed directory exists again after restore");
    check_listens(ldir, NULL, "hu-dir/l.sock listener");
    /* 4 */
    check_name(lmode, &a_mode, "hu-mode.sock listener");
    WL_CHECK(stat(a_mode.sa.sun_path, &st) == 0 && S_ISSOCK(st.st_mode),
             "hu-mode.sock: expected a socket file (%s)", strerror(errno));
    WL_CHECK((st.st_mode & 07777) == 0604, "hu-mode.sock: mode expected 0604, found %04o",
             (unsigned)(st.st_mode & 07777));
    check_listens(lmode, &a_mode, "hu-mode.sock listener");
    /* 5 */
    struct addr unnamed = {.sa = {.sun_family = AF_UNIX}, .len = 0};
    struct {
        const char *data;
        const struct addr *from;
    } want[5] = {{"from-s1-a", &a_s1}, {"from-s2", &a_s2}, {"from-s3", &unnamed},
                 {"from-s4", &a_s4}, {"from-s1-b", &a_s1}};
    for (int i = 0; i < 5; i++) {
        len = sizeof sa;
        memset(&sa, 0, sizeof sa);
        r = recvfrom(rcv, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&sa, &len);
        WL_CHECK(r == (ssize_t)strlen(want[i].data) && memcmp(buf, want[i].data, (size_t)r) == 0,
                 "hu-rcv.sock: datagram %d expected '%s', got %zd bytes '%.*s'", i, want[i].data,
                 r, r > 0 ? (int)r : 0, (char *)buf);
        WL_CHECK(same_addr(&sa, len, want[i].from),
                 "hu-rcv.sock: datagram %d ('%s') sender expected %s, found %s (len %u)", i,
                 want[i].data, show(&want[i].from->sa, want[i].from->len), show(&sa, len), len);
    }
    r = recv(rcv, buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r < 0 && errno == EAGAIN, "hu-rcv.sock: expected no more datagrams, got %zd", r);
    WL_CHECK(stat(a_s4.sa.sun_path, &st) < 0 && errno == ENOENT,
             "hu-s4.sock: the path of a closed sender exists after restore");
    int probe = socket(AF_UNIX, SOCK_DGRAM, 0);
    WL_CHECK(bind(probe, (const struct sockaddr *)&a_s2.sa, a_s2.len) == 0,
             "@%s: the closed sender's abstract name is still held after restore: %s", abname,
             strerror(errno));
    close(probe);
    check_name(s1, &a_s1, "s1");
    WL_CHECK(sendto(s1, "new", 3, 0, (const struct sockaddr *)&a_rcv.sa, a_rcv.len) == 3,
             "s1: send after restore: %s", strerror(errno));
    len = sizeof sa;
    struct pollfd pf = {.fd = rcv, .events = POLLIN};
    poll(&pf, 1, 2000);
    r = recvfrom(rcv, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&sa, &len);
    WL_CHECK(r == 3 && same_addr(&sa, len, &a_s1),
             "hu-rcv.sock: new datagram from s1 expected 3 bytes from %s, got %zd from %s",
             a_s1.sa.sun_path, r, show(&sa, len));
    /* 6 */
    check_name(rel, &a_rel, "relative hu-rel.sock");
    struct addr a_relabs;
    path_addr(&a_relabs, "hu-rel.sock");
    WL_CHECK(stat(a_relabs.sa.sun_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
                 (st.st_mode & 07777) == 0640,
             "%s: expected a socket file of mode 0640 (%s, mode %04o)", a_relabs.sa.sun_path,
             strerror(errno), (unsigned)(st.st_mode & 07777));
    probe = socket(AF_UNIX, SOCK_DGRAM, 0);
    WL_CHECK(sendto(probe, "rel", 3, 0, (const struct sockaddr *)&a_relabs.sa, a_relabs.len) == 3,
             "sending to %s: %s", a_relabs.sa.sun_path, strerror(errno));
    close(probe);
    r = recv(rel, buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r == 3 && memcmp(buf, "rel", 3) == 0,
             "relative hu-rel.sock: the datagram sent to its path did not arrive (%zd)", r);
    check_name(sub, &a_sub, "relative r.sock bound in hu-sub");
    struct addr a_subabs;
    path_addr(&a_subabs, "hu-sub/r.sock");
    WL_CHECK(stat(a_subabs.sa.sun_path, &st) == 0 && S_ISSOCK(st.st_mode),
             "%s: expected the socket file (%s)", a_subabs.sa.sun_path, strerror(errno));
    WL_CHECK(stat("r.sock", &st) < 0 && errno == ENOENT,
             "r.sock appeared in CTL_DIR (bound from the wrong directory)");
    probe = socket(AF_UNIX, SOCK_DGRAM, 0);
    WL_CHECK(sendto(probe, "sub", 3, 0, (const struct sockaddr *)&a_subabs.sa, a_subabs.len) == 3,
             "sending to %s: %s", a_subabs.sa.sun_path, strerror(errno));
    close(probe);
    r = recv(sub, buf, sizeof buf, MSG_DONTWAIT);
    WL_CHECK(r == 3 && memcmp(buf, "sub", 3) == 0,
             "relative r.sock: the datagram sent to its path did not arrive (%zd)", r);
    /* the unbound sockets still work */
    struct addr a_new;
    path_addr(&a_new, "hu-new.sock");
    unlink(a_new.sa.sun_path);
    int lnew = listener_at(&a_new, "hu-new.sock");
    WL_CHECK(connect(ub_s, (const struct sockaddr *)&a_new.sa, a_new.len) == 0,
             "unbound stream socket: connect after restore: %s", strerror(errno));
    close(lnew);
    unlink(a_new.sa.sun_path);
    struct addr a_ubd;
    char nm[64];
    snprintf(nm, sizeof nm, "hu-ubd-%d", (int)getpid());
    abstract_addr(&a_ubd, nm);
    WL_CHECK(bind(ub_d, (const struct sockaddr *)&a_ubd.sa, a_ubd.len) == 0,
             "unbound dgram socket: bind after restore: %s", strerror(errno));
    wl_report(1, "ok");
}
