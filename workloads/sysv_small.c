/*
 * sysv_small.c - System V segments whose size is not a multiple of the page
 * size (a database's small header segment), left in place while the tree is
 * down.
 *
 * Kernel state tested (one process; ids written to CTL_DIR/ipc as
 * "shm ID\n" lines):
 *  - hdr: a 56-byte segment with key 0x5354xxxx (xxxx from the pid), mode
 *    0600, attached twice (read-write at a1 and a2; the kernel maps a whole
 *    page each time), holding a header and a counter the main loop bumps;
 *  - one: a 4000-byte IPC_PRIVATE segment, mode 0640, attached once, filled
 *    with a pattern.
 * Nothing is marked for removal: after a kill the segments outlive the tree
 * (shm_nattch 0) and the restore must take them for its own.
 * Verify: the same ids answer IPC_STAT with the same key, mode, shm_segsz
 * (56 and 4000, not rounded to a page) and shm_nattch (2 and 1); the
 * attachments are at the same addresses and are the segments (a write
 * through a1 is seen at a2 and through a fresh shmat); the header and the
 * pattern are intact and the counter kept counting.  Both segments are
 * removed at the end of verify.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <unistd.h>

struct hdr {
    char magic[16];
    uint64_t counter;
    uint64_t words[4];
}; /* 56 bytes */

static int hdr_id = -1, one_id = -1;
static key_t hdr_key;
static struct hdr *a1, *a2;
static unsigned char *b;

static void check_seg(int id, const char *name, key_t key, size_t size,
                      unsigned mode, unsigned long nattch) {
    struct shmid_ds ds;
    WL_CHECK(shmctl(id, IPC_STAT, &ds) == 0, "%s: IPC_STAT(%d): %s", name, id,
             strerror(errno));
    WL_CHECK(ds.shm_perm.__key == key, "%s: key %#x, expected %#x", name,
             (unsigned)ds.shm_perm.__key, (unsigned)key);
    WL_CHECK(ds.shm_segsz == size, "%s: shm_segsz %zu, expected %zu", name,
             (size_t)ds.shm_segsz, size);
    WL_CHECK((ds.shm_perm.mode & 0777) == mode, "%s: mode %o, expected %o",
             name, ds.shm_perm.mode & 0777, mode);
    WL_CHECK(ds.shm_nattch == nattch, "%s: shm_nattch %lu, expected %lu",
             name, (unsigned long)ds.shm_nattch, nattch);
}

int main(int argc, char **argv) {
    wl_init(argc, argv);
    _Static_assert(sizeof(struct hdr) == 56, "56-byte header");
    hdr_key = (key_t)(0x53540000 | (getpid() & 0xffff));
    hdr_id = shmget(hdr_key, sizeof(struct hdr), IPC_CREAT | IPC_EXCL | 0600);
    WL_CHECK(hdr_id >= 0, "shmget(56 bytes, key %#x): %s", (unsigned)hdr_key,
             strerror(errno));
    one_id = shmget(IPC_PRIVATE, 4000, IPC_CREAT | 0640);
    WL_CHECK(one_id >= 0, "shmget(4000): %s", strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/ipc", wl_ctl_dir());
    FILE *f = fopen(path, "w");
    WL_CHECK(f != NULL, "open %s: %s", path, strerror(errno));
    fprintf(f, "shm %d\nshm %d\n", hdr_id, one_id);
    fclose(f);
    a1 = shmat(hdr_id, NULL, 0);
    a2 = shmat(hdr_id, NULL, 0);
    b = shmat(one_id, NULL, 0);
    WL_CHECK(a1 != (void *)-1 && a2 != (void *)-1 && b != (void *)-1,
             "shmat: %s", strerror(errno));
    strcpy(a1->magic, "stasis-header");
    for (int i = 0; i < 4; i++) a1->words[i] = 0x1111111111111111ULL * (i + 1);
    wl_fill_pattern(b, 4000, 56);
    void *addr1 = a1, *addr2 = a2, *addrb = b;
    wl_ready();
    uint64_t mine = 0;
    while (!wl_verify_requested()) {
        a1->counter = ++mine;
        wl_sleep_ms(10);
    }
    WL_CHECK((void *)a1 == addr1 && (void *)a2 == addr2 && (void *)b == addrb,
             "attachment addresses moved");
    check_seg(hdr_id, "hdr", hdr_key, 56, 0600, 2);
    check_seg(one_id, "one", IPC_PRIVATE, 4000, 0640, 1);
    WL_CHECK(strcmp(a2->magic, "stasis-header") == 0, "hdr magic %.16s",
             a2->magic);
    for (int i = 0; i < 4; i++)
        WL_CHECK(a2->words[i] == 0x1111111111111111ULL * (i + 1),
                 "hdr word %d = %#llx", i, (unsigned long long)a2->words[i]);
    WL_CHECK(a2->counter == mine && mine > 1, "hdr counter %llu at a2, %llu "
             "written", (unsigned long long)a2->counter,
             (unsigned long long)mine);
    WL_CHECK(wl_check_pattern(b, 4000, 56), "one: pattern differs");
    a1->words[0] = 0xabcdef;
    WL_CHECK(a2->words[0] == 0xabcdef, "a write through a1 is not seen at a2");
    struct hdr *fresh = shmat(hdr_id, NULL, SHM_RDONLY);
    WL_CHECK(fresh != (void *)-1, "shmat(hdr) again: %s", strerror(errno));
    WL_CHECK(fresh->words[0] == 0xabcdef && fresh->counter == mine,
             "a fresh attachment does not see the segment's content");
    shmdt(fresh);
    shmctl(hdr_id, IPC_RMID, NULL);
    shmctl(one_id, IPC_RMID, NULL);
    wl_report(1, "ok");
}
