/*
 * sysv_ipc.c - System V IPC objects across checkpoint/restore.
 *
 * Kernel state tested (one process; ids written to CTL_DIR/ipc as
 * "shm1 ID\nshm2 ID\nsem ID\nmsg ID\n"):
 *  - shm1: IPC_PRIVATE shared memory segment of 1 MiB, mode 0600, filled
 *    with a pattern, attached once read-write at an address recorded at
 *    setup;
 *  - shm2: IPC_PRIVATE segment of 64 KiB, mode 0640, attached twice: read-
 *    write at b1 and SHM_RDONLY at b2 (both addresses recorded);
 *  - a semaphore set (IPC_PRIVATE, mode 0600) of 4 semaphores with values
 *    3, 0, 17, 32000;
 *  - a message queue (IPC_PRIVATE, mode 0600) holding 5 messages of types
 *    5, 1, 3, 1, 9 and lengths 0, 10, 200, 1000, 4000 (FIFO order).
 * Verify: the same ids answer IPC_STAT with the same key (IPC_PRIVATE),
 * mode, size / nsems / qnum / cbytes, shm_nattch (1 and 2); the
 * attachments are at the same addresses in /proc/self/maps ("rw-s" /
 * "r--s", inode = shm id, size), hold the pattern, and are really the
 * segments (a write through shm1's attachment is seen by a fresh shmat;
 * a write through b1 is seen through b2); semaphore values (GETALL) and
 * semop still behave (IPC_NOWAIT decrement of the 0 semaphore -> EAGAIN);
 * msgrcv by type 9 returns the last message, then msgrcv(0) the others in
 * order with their types, lengths and content, then ENOMSG; a new message
 * round-trips.  Everything is removed (IPC_RMID) at the end of verify (not
 * on failure: the test can remove the ids listed in CTL_DIR/ipc).
 *
 * Not tested: SEM_UNDO adjustments (per-process undo lists) are not
 * restorable by a checkpoint/restore engine in general and are not used
 * here; sempid/otime/ctime and the shm/msg pids and times change on
 * restore and are not checked.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

#define SHM1_SZ (1024 * 1024)
#define SHM2_SZ (64 * 1024)
#define SEED_SHM1 401
#define SEED_SHM2 402
#define SEED_MSG 410
#define NMSG 5

static const long msg_type[NMSG] = {5, 1, 3, 1, 9};
static const size_t msg_len[NMSG] = {0, 10, 200, 1000, 4000};
static const unsigned short sem_val[4] = {3, 0, 17, 32000};

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

struct msgbuf_big {
    long mtype;
    char mtext[8192];
};

/* find the /proc/self/maps line starting at addr; returns 1 and fills out */
static int maps_line(const void *addr, unsigned long *end, char perms[8], unsigned long *inode,
                     char *name, size_t nn)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return 0;
    char line[1024];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e, off, ino;
        char p[8], dev[32];
        int pos = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %31s %lu %n", &s, &e, p, &off, dev, &ino, &pos) < 6)
            continue;
        if (s != (unsigned long)addr)
            continue;
        *end = e;
        memcpy(perms, p, 8);
        *inode = ino;
        snprintf(name, nn, "%s", pos ? line + pos : "");
        name[strcspn(name, "\n")] = 0;
        found = 1;
        break;
    }
    fclose(f);
    return found;
}

static void check_map(const void *addr, size_t sz, const char *perms, int id, const char *what)
{
    unsigned long end = 0, ino = 0;
    char p[8] = "", name[512] = "";
    WL_CHECK(maps_line(addr, &end, p, &ino, name, sizeof name),
             "%s: no mapping starts at the attach address %p any more", what, addr);
    WL_CHECK(end - (unsigned long)addr == sz && strcmp(p, perms) == 0 &&
                 ino == (unsigned long)id && strstr(name, "SYSV") != NULL,
             "%s: mapping at %p expected %zu bytes '%s' inode %d (SYSV...), found %lu bytes '%s' "
             "inode %lu '%s'",
             what, addr, sz, perms, id, end - (unsigned long)addr, p, ino, name);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    static struct msgbuf_big mb;

    /* shared memory */
    int shm1 = shmget(IPC_PRIVATE, SHM1_SZ, IPC_CREAT | 0600);
    int shm2 = shmget(IPC_PRIVATE, SHM2_SZ, IPC_CREAT | 0640);
    if (shm1 < 0 || shm2 < 0)
        wl_fail("setup: shmget: %s", strerror(errno));
    unsigned char *a1 = shmat(shm1, NULL, 0);
    unsigned char *b1 = shmat(shm2, NULL, 0);
    unsigned char *b2 = shmat(shm2, NULL, SHM_RDONLY);
    if (a1 == (void *)-1 || b1 == (void *)-1 || b2 == (void *)-1)
        wl_fail("setup: shmat: %s", strerror(errno));
    wl_fill_pattern(a1, SHM1_SZ, SEED_SHM1);
    wl_fill_pattern(b1, SHM2_SZ, SEED_SHM2);
    if (!wl_check_pattern(b2, SHM2_SZ, SEED_SHM2))
        wl_fail("setup: shm2 not shared between its two attachments");

    /* semaphores */
    int sem = semget(IPC_PRIVATE, 4, IPC_CREAT | 0600);
    if (sem < 0)
        wl_fail("setup: semget: %s", strerror(errno));
    {
        unsigned short v[4];
        memcpy(v, sem_val, sizeof v);
        union semun u = {.array = v};
        if (semctl(sem, 0, SETALL, u) < 0)
            wl_fail("setup: semctl SETALL: %s", strerror(errno));
    }

    /* messages */
    int msq = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    if (msq < 0)
        wl_fail("setup: msgget: %s", strerror(errno));
    size_t total = 0;
    for (int i = 0; i < NMSG; i++) {
        mb.mtype = msg_type[i];
        wl_fill_pattern(mb.mtext, msg_len[i], SEED_MSG + (uint64_t)i);
        int r;
        do
            r = msgsnd(msq, &mb, msg_len[i], IPC_NOWAIT);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            wl_fail("setup: msgsnd #%d: %s", i, strerror(errno));
        total += msg_len[i];
    }

    char idfile[256];
    snprintf(idfile, sizeof idfile, "shm1 %d\nshm2 %d\nsem %d\nmsg %d\n", shm1, shm2, sem, msq);
    {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/ipc", wl_ctl_dir());
        FILE *f = fopen(p, "w");
        if (!f)
            wl_fail("setup: fopen %s: %s", p, strerror(errno));
        fputs(idfile, f);
        fclose(f);
    }
    void *const a1_at = a1, *const b1_at = b1, *const b2_at = b2;

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(5);

    /* ------------------------------------------------------- verify */
    {
        char p[PATH_MAX + 16], buf[256] = "";
        snprintf(p, sizeof p, "%s/ipc", wl_ctl_dir());
        FILE *f = fopen(p, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = 0;
        WL_CHECK(strcmp(buf, idfile) == 0, "CTL_DIR/ipc changed: expected '%s', found '%s'",
                 idfile, buf);
    }
    WL_CHECK(a1 == a1_at && b1 == b1_at && b2 == b2_at, "attach address variables changed");

    /* shm ids + attributes */
    struct shmid_ds sd;
    memset(&sd, 0, sizeof sd);
    WL_CHECK(shmctl(shm1, IPC_STAT, &sd) == 0, "shm1 id %d: IPC_STAT failed: %s", shm1,
             strerror(errno));
    WL_CHECK(sd.shm_segsz == SHM1_SZ && sd.shm_nattch == 1 && (sd.shm_perm.mode & 0777) == 0600 &&
                 sd.shm_perm.__key == IPC_PRIVATE && sd.shm_perm.uid == getuid(),
             "shm1 id %d: expected size %d nattch 1 mode 0600 key 0 uid %d, found size %zu nattch "
             "%lu mode %#o key %#x uid %d",
             shm1, SHM1_SZ, (int)getuid(), sd.shm_segsz, (unsigned long)sd.shm_nattch,
             (unsigned)sd.shm_perm.mode, (unsigned)sd.shm_perm.__key, (int)sd.shm_perm.uid);
    memset(&sd, 0, sizeof sd);
    WL_CHECK(shmctl(shm2, IPC_STAT, &sd) == 0, "shm2 id %d: IPC_STAT failed: %s", shm2,
             strerror(errno));
    WL_CHECK(sd.shm_segsz == SHM2_SZ && sd.shm_nattch == 2 && (sd.shm_perm.mode & 0777) == 0640 &&
                 sd.shm_perm.__key == IPC_PRIVATE,
             "shm2 id %d: expected size %d nattch 2 mode 0640 key 0, found size %zu nattch %lu "
             "mode %#o key %#x",
             shm2, SHM2_SZ, sd.shm_segsz, (unsigned long)sd.shm_nattch,
             (unsigned)sd.shm_perm.mode, (unsigned)sd.shm_perm.__key);
    check_map(a1, SHM1_SZ, "rw-s", shm1, "shm1 attachment");
    check_map(b1, SHM2_SZ, "rw-s", shm2, "shm2 read-write attachment");
    check_map(b2, SHM2_SZ, "r--s", shm2, "shm2 SHM_RDONLY attachment");

    /* content and sharing */
    WL_CHECK(wl_check_pattern(a1, SHM1_SZ, SEED_SHM1), "shm1 at %p: content differs from the "
             "pattern written at setup", (void *)a1);
    WL_CHECK(wl_check_pattern(b1, SHM2_SZ, SEED_SHM2), "shm2 at %p: content differs", (void *)b1);
    WL_CHECK(wl_check_pattern(b2, SHM2_SZ, SEED_SHM2), "shm2 read-only at %p: content differs",
             (void *)b2);
    {
        memcpy(a1 + 4096 * 7 + 5, "shm1-marker", 11);
        unsigned char *fresh = shmat(shm1, NULL, SHM_RDONLY);
        WL_CHECK(fresh != (void *)-1, "shm1: new shmat failed: %s", strerror(errno));
        WL_CHECK(memcmp(fresh + 4096 * 7 + 5, "shm1-marker", 11) == 0,
                 "shm1: a write through the attachment at %p is not seen by a fresh attachment "
                 "(the old attachment is not the segment %d)",
                 (void *)a1, shm1);
        WL_CHECK(memcmp(fresh, a1, SHM1_SZ) == 0,
                 "shm1: a fresh attachment of segment %d differs from the attachment at %p",
                 shm1, (void *)a1);
        shmdt(fresh);
        static unsigned char tmp[SHM2_SZ];
        wl_fill_pattern(tmp, SHM2_SZ, SEED_SHM2);
        unsigned char exp = (unsigned char)(tmp[SHM2_SZ - 3] ^ 0xff);
        b1[SHM2_SZ - 3] = exp;
        WL_CHECK(b2[SHM2_SZ - 3] == exp, "shm2: a write through %p is not seen through the "
                 "second attachment %p (expected %#x, found %#x)",
                 (void *)b1, (void *)b2, exp, b2[SHM2_SZ - 3]);
    }

    /* semaphores */
    {
        struct semid_ds ss;
        memset(&ss, 0, sizeof ss);
        union semun u = {.buf = &ss};
        WL_CHECK(semctl(sem, 0, IPC_STAT, u) == 0, "sem id %d: IPC_STAT failed: %s", sem,
                 strerror(errno));
        WL_CHECK(ss.sem_nsems == 4 && (ss.sem_perm.mode & 0777) == 0600 &&
                     ss.sem_perm.__key == IPC_PRIVATE,
                 "sem id %d: expected 4 semaphores mode 0600 key 0, found %lu mode %#o key %#x",
                 sem, (unsigned long)ss.sem_nsems, (unsigned)ss.sem_perm.mode,
                 (unsigned)ss.sem_perm.__key);
        unsigned short v[4] = {0};
        u.array = v;
        WL_CHECK(semctl(sem, 0, GETALL, u) == 0, "sem: GETALL failed: %s", strerror(errno));
        WL_CHECK(memcmp(v, sem_val, sizeof v) == 0,
                 "sem id %d: values expected {3, 0, 17, 32000}, found {%u, %u, %u, %u}", sem, v[0],
                 v[1], v[2], v[3]);
        struct sembuf op = {.sem_num = 1, .sem_op = -1, .sem_flg = IPC_NOWAIT};
        int r = semop(sem, &op, 1);
        WL_CHECK(r < 0 && errno == EAGAIN,
                 "sem: decrementing the semaphore of value 0 with IPC_NOWAIT expected EAGAIN, "
                 "found %d (%s)", r, r < 0 ? strerror(errno) : "success");
        struct sembuf ops[2] = {{.sem_num = 2, .sem_op = -2, .sem_flg = IPC_NOWAIT},
                                {.sem_num = 1, .sem_op = 0, .sem_flg = IPC_NOWAIT}};
        WL_CHECK(semop(sem, ops, 2) == 0, "sem: semop (sem 2 -= 2, wait-for-zero on sem 1) "
                 "failed: %s", strerror(errno));
        r = semctl(sem, 2, GETVAL);
        WL_CHECK(r == 15, "sem: after -2 semaphore 2 expected 15, found %d", r);
    }

    /* messages */
    {
        struct msqid_ds q;
        memset(&q, 0, sizeof q);
        WL_CHECK(msgctl(msq, IPC_STAT, &q) == 0, "msg id %d: IPC_STAT failed: %s", msq,
                 strerror(errno));
        WL_CHECK(q.msg_qnum == NMSG && q.msg_cbytes == total && (q.msg_perm.mode & 0777) == 0600 &&
                     q.msg_perm.__key == IPC_PRIVATE,
                 "msg id %d: expected %d messages, %zu bytes, mode 0600, key 0; found %lu, %lu, "
                 "%#o, %#x",
                 msq, NMSG, total, (unsigned long)q.msg_qnum, (unsigned long)q.msg_cbytes,
                 (unsigned)q.msg_perm.mode, (unsigned)q.msg_perm.__key);
        int order[NMSG] = {4, 0, 1, 2, 3}; /* type 9 first (selected by type), then FIFO */
        for (int k = 0; k < NMSG; k++) {
            int i = order[k];
            long want_type = k == 0 ? 9 : 0;
            memset(&mb, 0, sizeof mb);
            ssize_t r;
            do
                r = msgrcv(msq, &mb, sizeof mb.mtext, want_type, IPC_NOWAIT);
            while (r < 0 && errno == EINTR);
            WL_CHECK(r >= 0, "msg: msgrcv(type %ld) for message #%d (type %ld, %zu bytes) failed: "
                     "%s", want_type, i, msg_type[i], msg_len[i], strerror(errno));
            WL_CHECK(mb.mtype == msg_type[i] && (size_t)r == msg_len[i],
                     "msg: msgrcv(type %ld) expected message #%d of type %ld and %zu bytes, found "
                     "type %ld and %zd bytes",
                     want_type, i, msg_type[i], msg_len[i], mb.mtype, r);
            WL_CHECK(wl_check_pattern(mb.mtext, (size_t)r, SEED_MSG + (uint64_t)i),
                     "msg: message #%d (type %ld, %zd bytes): content differs", i, mb.mtype, r);
        }
        ssize_t r = msgrcv(msq, &mb, sizeof mb.mtext, 0, IPC_NOWAIT);
        WL_CHECK(r < 0 && errno == ENOMSG, "msg: expected an empty queue (ENOMSG), msgrcv returned "
                 "%zd (type %ld)", r, mb.mtype);
        mb.mtype = 77;
        memcpy(mb.mtext, "fresh", 5);
        WL_CHECK(msgsnd(msq, &mb, 5, IPC_NOWAIT) == 0, "msg: msgsnd failed: %s", strerror(errno));
        memset(&mb, 0, sizeof mb);
        r = msgrcv(msq, &mb, sizeof mb.mtext, 77, IPC_NOWAIT);
        WL_CHECK(r == 5 && mb.mtype == 77 && memcmp(mb.mtext, "fresh", 5) == 0,
                 "msg: new message round trip returned %zd bytes type %ld", r, mb.mtype);
    }

    shmdt(a1);
    shmdt(b1);
    shmdt(b2);
    shmctl(shm1, IPC_RMID, NULL);
    shmctl(shm2, IPC_RMID, NULL);
    semctl(sem, 0, IPC_RMID);
    msgctl(msq, IPC_RMID, NULL);
    wl_report(1, "ok");
}
