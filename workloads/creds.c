/*
 * creds.c - credentials and other per-process attributes across
 * checkpoint/restore.
 *
 * Kernel state tested:
 *  - uids: real 0, effective 1235, saved 1234 (fsuid 1235): all distinct so
 *    swapped fields are caught; gids 4321/4322/4323 (fsgid 4322);
 *    supplementary groups {1,2,3};
 *  - capabilities: permitted {CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, KILL,
 *    SETGID, SETUID}, effective {DAC_OVERRIDE, DAC_READ_SEARCH}, inheritable
 *    {KILL}; (the real uid stays 0 and DAC_OVERRIDE stays effective so the
 *    process can always reach CTL_DIR, whatever its permissions);
 *  - /proc/self/status Uid/Gid/Groups/Cap* / NoNewPrivs / Umask lines;
 *  - umask 027;
 *  - comm (prctl PR_SET_NAME "wl-creds-name", /proc/self/comm);
 *  - rlimits: RLIMIT_NOFILE soft 512, RLIMIT_CORE soft 0, RLIMIT_STACK soft
 *    6 MiB, RLIMIT_MSGQUEUE soft/hard lowered; all 16 limits unchanged;
 *  - personality PER_LINUX | ADDR_NO_RANDOMIZE;
 *  - dumpable flag 1 (PR_SET_DUMPABLE after the uid change);
 *  - cwd CTL_DIR/sub;
 *  - argv / environment: /proc/self/cmdline and /proc/self/environ equal to
 *    setup, argv strings intact, getenv() of an inherited and a setenv()ed
 *    variable;
 *  - auxv: /proc/self/auxv equal to setup, getauxval(AT_PAGESZ),
 *    AT_RANDOM's 16 bytes (same address, same content), AT_SYSINFO_EHDR
 *    equal to the [vdso] start in /proc/self/maps (and unchanged).
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/fsuid.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RUID 0
#define EUID 1235
#define SUID 1234
#define RGID 4321
#define EGID 4322
#define SGID 4323
#define PERSONA (PER_LINUX | ADDR_NO_RANDOMIZE)
#define COMM "wl-creds-name"
#define STACK_SOFT (6UL * 1024 * 1024)
#define CAPBIT(c) (1u << (c))
#define CAP_P (CAPBIT(CAP_CHOWN) | CAPBIT(CAP_DAC_OVERRIDE) | CAPBIT(CAP_DAC_READ_SEARCH) | \
               CAPBIT(CAP_KILL) | CAPBIT(CAP_SETGID) | CAPBIT(CAP_SETUID))
#define CAP_E (CAPBIT(CAP_DAC_OVERRIDE) | CAPBIT(CAP_DAC_READ_SEARCH))
#define CAP_I (CAPBIT(CAP_KILL))

extern char **environ;

/* Reads a whole (proc) file; returns malloc'd buffer, length in *len. */
static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        wl_fail("open %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *b = malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            b = realloc(b, cap + 1);
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            wl_fail("read %s: %s", path, strerror(errno));
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    b[n] = 0;
    *len = n;
    return b;
}

/* The lines of /proc/self/status describing credentials. */
static char *status_creds(void)
{
    size_t n;
    char *s = slurp("/proc/self/status", &n);
    static const char *keys[] = {"Umask:", "Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:",
                                 "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:", NULL};
    char *out = calloc(1, n + 1);
    char *save = NULL;
    for (char *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        for (int i = 0; keys[i]; i++)
            if (strncmp(l, keys[i], strlen(keys[i])) == 0) {
                strcat(out, l);
                strcat(out, "\n");
            }
    free(s);
    return out;
}

static uintptr_t vdso_start(void)
{
    size_t n;
    char *m = slurp("/proc/self/maps", &n);
    uintptr_t start = 0;
    char *save = NULL;
    for (char *l = strtok_r(m, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        if (strstr(l, "[vdso]")) {
            start = (uintptr_t)strtoull(l, NULL, 16);
            break;
        }
    free(m);
    return start;
}

static void get_caps(struct __user_cap_data_struct d[2])
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    memset(d, 0, 2 * sizeof d[0]);
    if (syscall(SYS_capget, &h, d) < 0)
        wl_fail("capget: %s", strerror(errno));
}

/* Printable version of a NUL-separated buffer (for messages). */
static const char *pr(const char *b, size_t n, char *out, size_t on)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 5 < on; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c == 0)
            out[j++] = '|';
        else if (c < 32 || c > 126)
            j += (size_t)snprintf(out + j, on - j, "\\x%02x", c);
        else
            out[j++] = (char)c;
    }
    out[j] = 0;
    return out;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv);
    char tmp1[600], tmp2[600];

    /* ---- argv / environment / auxv snapshots (before anything changes) */
    size_t cmd_len, env_len, auxv_len;
    char *cmdline = slurp("/proc/self/cmdline", &cmd_len);
    char *envblk = slurp("/proc/self/environ", &env_len);
    char *auxv = slurp("/proc/self/auxv", &auxv_len);
    char **argv_copy = calloc((size_t)argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++)
        argv_copy[i] = strdup(argv[i]);
    const char *path_env = getenv("PATH");
    char *path_copy = path_env ? strdup(path_env) : NULL;
    if (setenv("WL_CREDS_VAR", "creds-value-42", 1) < 0)
        wl_fail("setup: setenv: %s", strerror(errno));
    unsigned long pagesz = getauxval(AT_PAGESZ);
    const unsigned char *at_random = (const unsigned char *)getauxval(AT_RANDOM);
    unsigned char random_copy[16];
    if (!at_random)
        wl_fail("setup: no AT_RANDOM");
    memcpy(random_copy, at_random, 16);
    uintptr_t ehdr = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
    uintptr_t vdso = vdso_start();
    if (!ehdr || ehdr != vdso)
        wl_fail("setup: AT_SYSINFO_EHDR %#lx differs from [vdso] start %#lx", (unsigned long)ehdr,
                (unsigned long)vdso);

    /* ---- process attributes */
    if (mkdir("sub", 0755) < 0 && errno != EEXIST)
        wl_fail("setup: mkdir sub: %s", strerror(errno));
    umask(027);
    if (prctl(PR_SET_NAME, COMM, 0, 0, 0) < 0)
        wl_fail("setup: PR_SET_NAME: %s", strerror(errno));

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < 512)
        wl_fail("setup: RLIMIT_NOFILE hard limit %lu < 512", (unsigned long)rl.rlim_max);
    rl.rlim_cur = 512;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        wl_fail("setup: setrlimit NOFILE: %s", strerror(errno));
    getrlimit(RLIMIT_CORE, &rl);
    rl.rlim_cur = 0;
    if (setrlimit(RLIMIT_CORE, &rl) < 0)
        wl_fail("setup: setrlimit CORE: %s", strerror(errno));
    getrlimit(RLIMIT_STACK, &rl);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < STACK_SOFT)
        wl_fail("setup: RLIMIT_STACK hard limit %lu too low", (unsigned long)rl.rlim_max);
    rl.rlim_cur = STACK_SOFT;
    if (setrlimit(RLIMIT_STACK, &rl) < 0)
        wl_fail("setup: setrlimit STACK: %s", strerror(errno));
    rl.rlim_cur = 400000;
    rl.rlim_max = 600000;
    if (setrlimit(RLIMIT_MSGQUEUE, &rl) < 0)
        wl_fail("setup: setrlimit MSGQUEUE: %s", strerror(errno));
    struct rlimit rls[RLIM_NLIMITS];
    for (int i = 0; i < RLIM_NLIMITS; i++)
        getrlimit((__rlimit_resource_t)i, &rls[i]);

    if (personality(PERSONA) < 0)
        wl_fail("setup: personality: %s", strerror(errno));
    if (chdir("sub") < 0)
        wl_fail("setup: chdir sub: %s", strerror(errno));
    char cwd_want[PATH_MAX];
    snprintf(cwd_want, sizeof cwd_want, "%s/sub", wl_ctl_dir());

    /* ---- credentials: groups, gids, uids, then capabilities */
    gid_t groups[3] = {1, 2, 3};
    if (setgroups(3, groups) < 0)
        wl_fail("setup: setgroups: %s", strerror(errno));
    if (setresgid(RGID, EGID, SGID) < 0)
        wl_fail("setup: setresgid: %s", strerror(errno));
    if (setresuid(RUID, EUID, SUID) < 0)
        wl_fail("setup: setresuid: %s", strerror(errno));
    {
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct d[2];
        memset(d, 0, sizeof d);
        d[0].permitted = CAP_P;
        d[0].effective = CAP_E;
        d[0].inheritable = CAP_I;
        if (syscall(SYS_capset, &h, d) < 0)
            wl_fail("setup: capset: %s", strerror(errno));
    }
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
        wl_fail("setup: PR_SET_DUMPABLE: %s", strerror(errno));
    struct __user_cap_data_struct caps_setup[2];
    get_caps(caps_setup);
    char *status_setup = status_creds();

    wl_ready();
    while (!wl_verify_requested())
        wl_sleep_ms(8);

    /* ---- verification */
    uid_t r, e, s;
    gid_t rg, eg, sg;
    getresuid(&r, &e, &s);
    WL_CHECK(r == RUID && e == EUID && s == SUID,
             "getresuid expected (%d,%d,%d), found (%d,%d,%d)", RUID, EUID, SUID, (int)r, (int)e,
             (int)s);
    getresgid(&rg, &eg, &sg);
    WL_CHECK(rg == RGID && eg == EGID && sg == SGID,
             "getresgid expected (%d,%d,%d), found (%d,%d,%d)", RGID, EGID, SGID, (int)rg, (int)eg,
             (int)sg);
    int fsuid = setfsuid((uid_t)-1), fsgid = setfsgid((gid_t)-1);
    WL_CHECK(fsuid == EUID && fsgid == EGID, "fsuid/fsgid expected %d/%d, found %d/%d", EUID, EGID,
             fsuid, fsgid);
    gid_t g[64];
    int ng = getgroups(64, g);
    WL_CHECK(ng == 3 && g[0] == 1 && g[1] == 2 && g[2] == 3,
             "getgroups expected {1,2,3}, found %d groups {%d,%d,%d,...}", ng,
             ng > 0 ? (int)g[0] : -1, ng > 1 ? (int)g[1] : -1, ng > 2 ? (int)g[2] : -1);
    struct __user_cap_data_struct caps[2];
    get_caps(caps);
    WL_CHECK(caps[0].permitted == CAP_P && caps[0].effective == CAP_E &&
                 caps[0].inheritable == CAP_I && caps[1].permitted == 0 && caps[1].effective == 0 &&
                 caps[1].inheritable == 0,
             "capabilities expected P=%#x E=%#x I=%#x, found P=%#x:%#x E=%#x:%#x I=%#x:%#x", CAP_P,
             CAP_E, CAP_I, caps[1].permitted, caps[0].permitted, caps[1].effective,
             caps[0].effective, caps[1].inheritable, caps[0].inheritable);
    WL_CHECK(memcmp(caps, caps_setup, sizeof caps) == 0, "capabilities differ from setup");
    {
        char *st = status_creds();
        WL_CHECK(strcmp(st, status_setup) == 0,
                 "/proc/self/status credential lines differ: expected\n%s\nfound\n%s", status_setup,
                 st);
        free(st);
    }

    mode_t um = umask(0);
    umask(um);
    WL_CHECK(um == 027, "umask expected 027, found %03o", (unsigned)um);

    char name[32] = "";
    prctl(PR_GET_NAME, name, 0, 0, 0);
    WL_CHECK(strcmp(name, COMM) == 0, "PR_GET_NAME expected '%s', found '%s'", COMM, name);
    {
        size_t n;
        char *c = slurp("/proc/self/comm", &n);
        WL_CHECK(strcmp(c, COMM "\n") == 0, "/proc/self/comm expected '%s', found '%s'", COMM, c);
        free(c);
    }

    for (int i = 0; i < RLIM_NLIMITS; i++) {
        struct rlimit now;
        getrlimit((__rlimit_resource_t)i, &now);
        WL_CHECK(now.rlim_cur == rls[i].rlim_cur && now.rlim_max == rls[i].rlim_max,
                 "rlimit %d expected soft %llu hard %llu, found soft %llu hard %llu", i,
                 (unsigned long long)rls[i].rlim_cur, (unsigned long long)rls[i].rlim_max,
                 (unsigned long long)now.rlim_cur, (unsigned long long)now.rlim_max);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    WL_CHECK(rl.rlim_cur == 512, "RLIMIT_NOFILE soft expected 512, found %llu",
             (unsigned long long)rl.rlim_cur);
    getrlimit(RLIMIT_CORE, &rl);
    WL_CHECK(rl.rlim_cur == 0, "RLIMIT_CORE soft expected 0, found %llu",
             (unsigned long long)rl.rlim_cur);
    getrlimit(RLIMIT_STACK, &rl);
    WL_CHECK(rl.rlim_cur == STACK_SOFT, "RLIMIT_STACK soft expected %lu, found %llu", STACK_SOFT,
             (unsigned long long)rl.rlim_cur);
    getrlimit(RLIMIT_MSGQUEUE, &rl);
    WL_CHECK(rl.rlim_cur == 400000 && rl.rlim_max == 600000,
             "RLIMIT_MSGQUEUE expected 400000/600000, found %llu/%llu",
             (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);

    int pers = personality(0xffffffff);
    WL_CHECK(pers == PERSONA, "personality expected %#x, found %#x", PERSONA, pers);
    int dump = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    WL_CHECK(dump == 1, "PR_GET_DUMPABLE expected 1, found %d", dump);

    char cwd[PATH_MAX] = "";
    WL_CHECK(getcwd(cwd, sizeof cwd) && strcmp(cwd, cwd_want) == 0,
             "getcwd expected '%s', found '%s'", cwd_want, cwd);
    {
        char l[PATH_MAX];
        ssize_t n = readlink("/proc/self/cwd", l, sizeof l - 1);
        l[n > 0 ? n : 0] = 0;
        WL_CHECK(strcmp(l, cwd_want) == 0, "/proc/self/cwd expected '%s', found '%s'", cwd_want, l);
    }

    /* argv / environment */
    {
        size_t n;
        char *c = slurp("/proc/self/cmdline", &n);
        WL_CHECK(n == cmd_len && memcmp(c, cmdline, n) == 0,
                 "/proc/self/cmdline expected '%s' (%zu bytes), found '%s' (%zu bytes)",
                 pr(cmdline, cmd_len, tmp1, 300), cmd_len, pr(c, n, tmp2, 300), n);
        free(c);
        size_t off = 0;
        for (int i = 0; i < argc; i++) {
            WL_CHECK(strcmp(argv[i], argv_copy[i]) == 0, "argv[%d] expected '%s', found '%s'", i,
                     argv_copy[i], argv[i]);
            size_t l = strlen(argv[i]) + 1;
            WL_CHECK(off + l <= cmd_len && memcmp(cmdline + off, argv[i], l) == 0,
                     "argv[%d] '%s' is not at offset %zu of /proc/self/cmdline", i, argv[i], off);
            off += l;
        }
        WL_CHECK(argv[argc] == NULL, "argv[argc] is not NULL");
        char *en = slurp("/proc/self/environ", &n);
        WL_CHECK(n == env_len && memcmp(en, envblk, n) == 0,
                 "/proc/self/environ differs from setup: expected %zu bytes '%s', found %zu bytes "
                 "'%s'",
                 env_len, pr(envblk, env_len, tmp1, 280), n, pr(en, n, tmp2, 280));
        free(en);
        const char *v = getenv("WL_CREDS_VAR");
        WL_CHECK(v && strcmp(v, "creds-value-42") == 0,
                 "getenv(WL_CREDS_VAR) expected 'creds-value-42', found '%s'", v ? v : "(null)");
        v = getenv("PATH");
        WL_CHECK((!v && !path_copy) || (v && path_copy && strcmp(v, path_copy) == 0),
                 "getenv(PATH) expected '%s', found '%s'", path_copy ? path_copy : "(null)",
                 v ? v : "(null)");
    }

    /* auxv */
    {
        size_t n;
        char *a = slurp("/proc/self/auxv", &n);
        if (n != auxv_len || memcmp(a, auxv, n) != 0) {
            const unsigned long *x = (const void *)auxv, *y = (const void *)a;
            size_t k;
            for (k = 0; k < auxv_len / 8 && k < n / 8 && x[k] == y[k]; k++)
                ;
            wl_fail("/proc/self/auxv differs from setup (%zu vs %zu bytes): first difference at "
                    "word %zu (entry type %lu): expected %#lx, found %#lx",
                    auxv_len, n, k, k % 2 ? x[k - 1] : x[k], k < auxv_len / 8 ? x[k] : 0,
                    k < n / 8 ? y[k] : 0);
        }
        free(a);
        WL_CHECK(getauxval(AT_PAGESZ) == pagesz && pagesz == (unsigned long)sysconf(_SC_PAGESIZE),
                 "AT_PAGESZ expected %lu (= sysconf), found %lu / sysconf %ld", pagesz,
                 getauxval(AT_PAGESZ), sysconf(_SC_PAGESIZE));
        WL_CHECK((const unsigned char *)getauxval(AT_RANDOM) == at_random,
                 "AT_RANDOM pointer expected %p, found %p", (const void *)at_random,
                 (void *)getauxval(AT_RANDOM));
        WL_CHECK(memcmp(at_random, random_copy, 16) == 0,
                 "AT_RANDOM's 16 bytes differ from setup");
        uintptr_t eh = (uintptr_t)getauxval(AT_SYSINFO_EHDR), vd = vdso_start();
        WL_CHECK(eh == ehdr && vd == ehdr,
                 "AT_SYSINFO_EHDR expected %#lx (setup), found %#lx; [vdso] in maps at %#lx",
                 (unsigned long)ehdr, (unsigned long)eh, (unsigned long)vd);
    }
    wl_report(1, "ok");
}
