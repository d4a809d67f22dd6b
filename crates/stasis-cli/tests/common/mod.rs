//! Integration-test harness for the `stasis` binary.
//!
//! Workloads are self-verifying C programs in `workloads/` (see
//! `workloads/common.h` for the protocol).  This module compiles them,
//! starts them, runs `stasis checkpoint` / `stasis restore` on them and asks
//! them to verify their own state.
//!
//! Process bookkeeping: the test process makes itself a child subreaper, so
//! every orphan of a workload tree (and every root restored by
//! `stasis restore`, once that command exits) becomes its child.  A background
//! reaper thread reaps them promptly (a zombie holds its pid, and restore
//! needs the pids free).  It never calls `waitpid(-1)`: it waits only for
//! specific pids (registered workload pids, and zombie children whose comm is
//! a workload's name), so it cannot steal the exit status of the commands the
//! tests run through `std::process::Command`.
//!
//! CLI syntax (the only place that knows it: [`checkpoint_cmd`] and
//! [`restore_cmd`]):
//!   `stasis checkpoint --pid PID --dir DIR [EXTRA...]`  (`--leave-running` keeps the tree)
//!   `stasis restore --dir DIR`                          (stdout: one line, the new root pid)
#![allow(dead_code)]
#![allow(unsafe_code)]
#![allow(clippy::undocumented_unsafe_blocks)]

pub mod nodes;
pub mod partition;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Serializes tests that start workloads (pids, subreaper, timing).
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Take the global test lock, tolerating poisoning by an earlier failed test.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Time a workload gets to write `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a workload gets to write `result` after `verify` appears.
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Time a tree gets to disappear after a checkpoint that ends it / a kill.
pub const GONE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// paths and compilation

/// The `stasis` binary under test.
pub fn stasis() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stasis"))
}

/// The cargo target dir (parent of the profile dir holding `stasis`).
fn target_dir() -> PathBuf {
    let exe = stasis();
    let profile = exe.parent().expect("stasis binary has a parent dir");
    profile.parent().unwrap_or(profile).to_path_buf()
}

/// The repository's `workloads/` source directory.
pub fn workloads_src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workloads")
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

static COMPILE_LOCK: Mutex<()> = Mutex::new(());
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Compile `workloads/NAME.c` + `common.c` into `<target dir>/workloads/NAME`
/// if it is missing or older than any of its sources; returns its path.
/// Safe to call concurrently from several threads and processes (compiles to
/// a unique temporary name, then renames).  Panics with gcc's stderr.
pub fn workload_bin(name: &str) -> PathBuf {
    let src_dir = workloads_src_dir();
    let src = src_dir.join(format!("{name}.c"));
    let common_c = src_dir.join("common.c");
    let common_h = src_dir.join("common.h");
    assert!(
        src.exists(),
        "workload source {} does not exist",
        src.display()
    );
    let out_dir = target_dir().join("workloads");
    fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", out_dir.display()));
    let out = out_dir.join(name);
    reaper().add_name(name);

    let _g = COMPILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let newest_src = [&src, &common_c, &common_h]
        .iter()
        .filter_map(|p| mtime(p))
        .max()
        .expect("workload sources have mtimes");
    if let Some(t) = mtime(&out) {
        if t >= newest_src {
            return out;
        }
    }
    let tmp = out_dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = Command::new("gcc");
    cmd.args(["-O1", "-g", "-pthread", "-Wall", "-Werror", "-o"])
        .arg(&tmp)
        .arg(&src)
        .arg(&common_c)
        .arg("-lrt");
    let output = run_cmd(&mut cmd);
    if !output.status.success() {
        let _ = fs::remove_file(&tmp);
        panic!(
            "compiling workload {name} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    fs::rename(&tmp, &out)
        .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), out.display()));
    out
}

// ---------------------------------------------------------------------------
// reaper

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReapState {
    /// Registered, not reaped yet (alive, or not yet our child).
    Watching,
    /// Reaped by us; raw wait status.
    Exited(i32),
    /// Vanished without us reaping it (someone else's child).
    Gone,
}

struct Reaper {
    watched: Mutex<HashMap<i32, ReapState>>,
    /// pids of commands we are waiting for through std (never touch them).
    excluded: Mutex<HashSet<i32>>,
    /// comm names of workload binaries (zombie children with these are reaped).
    names: Mutex<HashSet<String>>,
}

fn reaper() -> &'static Reaper {
    static R: OnceLock<&'static Reaper> = OnceLock::new();
    R.get_or_init(|| {
        // SAFETY: plain prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
        let reaper: &'static Reaper = Box::leak(Box::new(Reaper {
            watched: Mutex::new(HashMap::new()),
            excluded: Mutex::new(HashSet::new()),
            names: Mutex::new(HashSet::new()),
        }));
        // helpers `stasis` may leave behind become our children too
        reaper.add_name("stasis");
        thread::Builder::new()
            .name("stasis-test-reaper".into())
            .spawn(move || reaper.run())
            .expect("spawn reaper thread");
        reaper
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reaper {
    fn add_name(&self, name: &str) {
        let comm: String = name.chars().take(15).collect();
        lock(&self.names).insert(comm);
    }

    fn watch(&self, pid: i32) {
        if pid > 1 && pid != std::process::id() as i32 {
            lock(&self.watched).insert(pid, ReapState::Watching);
        }
    }

    fn state(&self, pid: i32) -> Option<ReapState> {
        lock(&self.watched).get(&pid).copied()
    }

    /// waitpid(pid, WNOHANG|__WALL); Some(status) if reaped, Err(errno).
    fn try_wait(pid: i32) -> Result<Option<i32>, i32> {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if r == pid {
            Ok(Some(status))
        } else if r == 0 {
            Ok(None)
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    }

    fn run(&self) {
        let me = std::process::id() as i32;
        let mut last_sweep = Instant::now();
        loop {
            let pids: Vec<i32> = lock(&self.watched)
                .iter()
                .filter(|(_, s)| **s == ReapState::Watching)
                .map(|(p, _)| *p)
                .collect();
            for pid in pids {
                if lock(&self.excluded).contains(&pid) {
                    continue;
                }
                match Self::try_wait(pid) {
                    Ok(Some(st)) => {
                        lock(&self.watched).insert(pid, ReapState::Exited(st));
                    }
                    Ok(None) => {}
                    Err(e) if e == libc::EINTR => {}
                    Err(_) => {
                        // ECHILD: not (yet) our child.  Keep watching while it
                        // exists (a restored root whose parent is still
                        // `stasis restore` becomes ours later).
                        if !Path::new(&format!("/proc/{pid}")).exists() {
                            lock(&self.watched).insert(pid, ReapState::Gone);
                        }
                    }
                }
            }
            if last_sweep.elapsed() >= Duration::from_millis(20) {
                last_sweep = Instant::now();
                self.sweep_zombies(me);
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Reap zombie children of ours whose comm is a workload's name or
    /// "stasis" (orphans of a killed workload tree, or helpers of a `stasis`
    /// command, reparented to us).  Children we run through [`run_cmd`] are
    /// excluded.
    fn sweep_zombies(&self, me: i32) {
        let names = lock(&self.names).clone();
        if names.is_empty() {
            return;
        }
        for p in all_procs() {
            if p.ppid != me || p.state != 'Z' || !names.contains(&p.comm) {
                continue;
            }
            if lock(&self.excluded).contains(&p.pid) {
                continue;
            }
            if let Ok(Some(st)) = Self::try_wait(p.pid) {
                lock(&self.watched).insert(p.pid, ReapState::Exited(st));
            }
        }
    }
}

/// Run a command to completion (like `Command::output`), telling the reaper
/// to keep its hands off the child's pid.  stdin is /dev/null.
/// Spawn `cmd` (its stdio as the caller set it) as a child the zombie sweep never reaps: the
/// caller waits for it. Returns the child.
#[allow(dead_code)]
pub fn spawn_owned(cmd: &mut Command) -> std::process::Child {
    let r = reaper();
    let mut ex = lock(&r.excluded);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    ex.insert(child.id() as i32);
    child
}

/// Run `f` — a library checkpoint in the test process, which then traces `pids` — with the
/// reaper kept away from them: its `waitpid(__WALL)` would take their ptrace stops.
#[allow(dead_code)]
pub fn with_reaper_away<T>(pids: &[i32], f: impl FnOnce() -> T) -> T {
    let r = reaper();
    lock(&r.excluded).extend(pids.iter().copied());
    // A wait already past its check finishes within the reaper's 2 ms pause.
    thread::sleep(Duration::from_millis(10));
    let out = f();
    let mut ex = lock(&r.excluded);
    for p in pids {
        ex.remove(p);
    }
    out
}

/// Tell the zombie sweep about a process the test started by other means (its zombie is
/// reaped promptly).
#[allow(dead_code)]
pub fn watch_pid(pid: i32) {
    reaper().watch(pid);
}

/// The number a workload keeps rewriting in file `p` (truncate, then write): 0 while the file
/// does not exist; an empty or partial read (a rewrite under way) is read again.
#[allow(dead_code)]
pub fn read_counter(p: &Path) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::read_to_string(p) {
            Err(_) => return 0,
            Ok(s) => {
                if let Ok(n) = s.trim().parse() {
                    return n;
                }
            }
        }
        if Instant::now() >= deadline {
            return 0;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

pub fn run_cmd(cmd: &mut Command) -> Output {
    let r = reaper();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Hold the exclusion lock across spawn so the zombie sweep cannot reap a command that
    // exits at once before its pid is excluded.
    let child = {
        let mut ex = lock(&r.excluded);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        ex.insert(child.id() as i32);
        child
    };
    let pid = child.id() as i32;
    let out = child.wait_with_output();
    lock(&r.excluded).remove(&pid);
    out.unwrap_or_else(|e| panic!("wait for {cmd:?}: {e}"))
}

// ---------------------------------------------------------------------------
// /proc helpers

#[derive(Clone, Debug)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub comm: String,
}

fn parse_stat(pid: i32) -> Option<ProcInfo> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        state,
        comm,
    })
}

/// All processes (thread-group leaders) currently in /proc.
pub fn all_procs() -> Vec<ProcInfo> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(parse_stat)
        .collect()
}

/// `root` and all its descendants (by ppid links), root first.
pub fn tree_pids(root: i32) -> Vec<i32> {
    let procs = all_procs();
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in &procs {
        kids.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = Vec::new();
    if procs.iter().any(|p| p.pid == root) {
        out.push(root);
    }
    let mut i = 0;
    while i < out.len() {
        if let Some(k) = kids.get(&out[i]) {
            out.extend(k.iter().copied());
        }
        i += 1;
    }
    out
}

/// True if the pid exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    matches!(parse_stat(pid), Some(p) if p.state != 'Z' && p.state != 'X')
}

/// Wait until none of `pids` exists any more (reaped by us or by someone
/// else).  Returns the pids still present after `timeout`.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn describe_pids(pids: &[i32]) -> String {
    pids.iter()
        .map(|p| match parse_stat(*p) {
            Some(i) => format!("{} ({}, state {}, ppid {})", p, i.comm, i.state, i.ppid),
            None => format!("{p} (gone)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn sigkill(pid: i32) {
    if pid > 1 && pid != std::process::id() as i32 {
        // SAFETY: kill(2) with a specific positive pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

// ---------------------------------------------------------------------------
// workloads

/// A running workload tree and its control directory.
pub struct Workload {
    /// The control directory (CTL_DIR): ready, verify, result, out.log, ...
    pub ctl: tempfile::TempDir,
    /// Pid of the tree's root (changes only via `set_pid`).
    pub pid: i32,
    pub name: String,
    ctl_canon: PathBuf,
    bin_dir: PathBuf,
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim_end().to_string())
}

impl Workload {
    /// Compile (if needed) and start workload `name` with `args`, in a new
    /// session (setsid), cwd = CTL_DIR, stdin /dev/null, stdout+stderr
    /// appended to CTL_DIR/out.log; waits ≤ 10 s for CTL_DIR/ready.
    pub fn start(name: &str, args: &[&str]) -> Workload {
        let bin = workload_bin(name);
        let r = reaper();
        let ctl = tempfile::Builder::new()
            .prefix(&format!("stasis-wl-{name}-"))
            .tempdir()
            .expect("create CTL_DIR");
        let ctl_canon = fs::canonicalize(ctl.path()).expect("canonicalize CTL_DIR");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ctl_canon.join("out.log"))
            .expect("open out.log");
        let log2 = log.try_clone().expect("dup out.log");
        let mut cmd = Command::new(&bin);
        cmd.arg(&ctl_canon)
            .args(args)
            .current_dir(&ctl_canon)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: setsid() and close_range() are async-signal-safe; nothing else runs in the
        // child. Closing fds above 2 keeps whatever the test runner inherited (CI pipes, …) out
        // of the workload, whose fd table is part of what it verifies.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let pid = child.id() as i32;
        r.watch(pid);
        drop(child); // never waited through std: the reaper reaps it
        let mut w = Workload {
            ctl,
            pid,
            name: name.to_string(),
            ctl_canon,
            bin_dir: bin.parent().unwrap().to_path_buf(),
        };
        let ready = w.ctl_canon.join("ready");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(s) = read_trim(&ready) {
                let rp: i32 = s
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: bad ready content {s:?}"));
                assert_eq!(rp, pid, "{name}: ready names pid {rp}, spawned {pid}");
                break;
            }
            let exited = matches!(r.state(pid), Some(ReapState::Exited(_)));
            if exited || Instant::now() >= deadline {
                let st = r.state(pid);
                w.pid = pid;
                panic!(
                    "{name} (pid {pid}) never became ready ({}; reap state {st:?}); out.log:\n{}",
                    if exited { "exited" } else { "timeout" },
                    w.out_log()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        w.register_tree();
        w
    }

    /// Path of CTL_DIR (canonical).
    pub fn ctl_path(&self) -> &Path {
        &self.ctl_canon
    }

    /// Content of CTL_DIR/out.log (empty if missing).
    pub fn out_log(&self) -> String {
        fs::read_to_string(self.ctl_canon.join("out.log")).unwrap_or_default()
    }

    fn out_log_tail(&self) -> String {
        let log = self.out_log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(40);
        lines[start..].join("\n")
    }

    /// After a restore the root may be a new process object: track it.
    pub fn set_pid(&mut self, pid: i32) {
        self.pid = pid;
        reaper().watch(pid);
        self.register_tree();
    }

    /// Register the whole current tree with the reaper (so orphans that end
    /// up as our children are reaped even if their comm changed).
    pub fn register_tree(&self) {
        let r = reaper();
        for p in tree_pids(self.pid) {
            r.watch(p);
        }
    }

    /// Pids of the current tree (root first).
    pub fn tree_pids(&self) -> Vec<i32> {
        tree_pids(self.pid)
    }

    /// All live processes belonging to this workload: the root's descendants
    /// running a workload binary, and any process whose cwd is CTL_DIR.
    fn member_pids(&self) -> Vec<i32> {
        let mut set: Vec<i32> = Vec::new();
        let me = std::process::id() as i32;
        for p in all_procs() {
            if p.pid == me || p.pid <= 1 {
                continue;
            }
            let cwd = fs::read_link(format!("/proc/{}/cwd", p.pid)).ok();
            if cwd.as_deref() == Some(self.ctl_canon.as_path()) {
                set.push(p.pid);
            }
        }
        for p in tree_pids(self.pid) {
            let exe = fs::read_link(format!("/proc/{p}/exe")).ok();
            if exe.map(|e| e.starts_with(&self.bin_dir)).unwrap_or(false) && !set.contains(&p) {
                set.push(p);
            }
        }
        set
    }

    /// SIGKILL every process of the workload and wait (≤ 10 s) until they
    /// are gone.  Returns the pids that were killed.
    pub fn kill_tree(&self) -> Vec<i32> {
        let r = reaper();
        let mut killed = Vec::new();
        // a few passes: a process may fork while we kill
        for _ in 0..3 {
            let pids = self.member_pids();
            if pids.is_empty() {
                break;
            }
            for &p in &pids {
                r.watch(p);
                sigkill(p);
                if !killed.contains(&p) {
                    killed.push(p);
                }
            }
            thread::sleep(Duration::from_millis(5));
        }
        let left = wait_gone(&killed, GONE_TIMEOUT);
        if !left.is_empty() {
            eprintln!(
                "warning: workload {} pids still present after kill: {}",
                self.name,
                describe_pids(&left)
            );
        }
        killed
    }

    /// Remove `verify` and `result` (e.g. before restoring an image taken
    /// before an earlier verification).
    pub fn reset_verify(&self) {
        let _ = fs::remove_file(self.ctl_canon.join("verify"));
        let _ = fs::remove_file(self.ctl_canon.join("result"));
    }

    /// Touch CTL_DIR/verify and wait ≤ 20 s for CTL_DIR/result.
    /// Ok on "PASS"; Err with the FAIL text (or timeout info) + out.log tail.
    pub fn verify(&self) -> Result<(), String> {
        let verify = self.ctl_canon.join("verify");
        let result = self.ctl_canon.join("result");
        fs::File::create(&verify)
            .and_then(|mut f| f.write_all(b"1\n"))
            .map_err(|e| format!("create {}: {e}", verify.display()))?;
        let deadline = Instant::now() + RESULT_TIMEOUT;
        loop {
            if let Some(s) = read_trim(&result) {
                if s == "PASS" {
                    return Ok(());
                }
                return Err(format!(
                    "{} (pid {}): {}\n--- out.log (tail) ---\n{}",
                    self.name,
                    self.pid,
                    s,
                    self.out_log_tail()
                ));
            }
            if Instant::now() >= deadline {
                let tree = self.tree_pids();
                return Err(format!(
                    "{} (pid {}): no result within {:?} of verify; root reap state {:?}; \
                     tree: [{}]\n--- out.log (tail) ---\n{}",
                    self.name,
                    self.pid,
                    RESULT_TIMEOUT,
                    reaper().state(self.pid),
                    describe_pids(&tree),
                    self.out_log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.kill_tree();
        if thread::panicking() || std::env::var_os("STASIS_KEEP").is_some() {
            self.ctl.disable_cleanup(true);
            eprintln!(
                "kept CTL_DIR of {}: {}",
                self.name,
                self.ctl_canon.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// CLI

/// The `stasis checkpoint` command line.
pub fn checkpoint_cmd(pid: i32, dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(stasis());
    c.arg("checkpoint")
        .arg("--pid")
        .arg(pid.to_string())
        .arg("--dir")
        .arg(dir)
        .args(extra);
    c
}

/// The `stasis restore` command line.
pub fn restore_cmd(dir: &Path) -> Command {
    let mut c = Command::new(stasis());
    c.arg("restore").arg("--dir").arg(dir);
    c
}

fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run `stasis checkpoint --pid PID --dir DIR EXTRA...`; the caller checks the status.
/// The tree's pids are registered with the reaper first, so zombies of a
/// tree that the checkpoint ends are reaped promptly.
pub fn checkpoint(pid: i32, dir: &Path, extra: &[&str]) -> Output {
    let r = reaper();
    for p in tree_pids(pid) {
        r.watch(p);
    }
    run_cmd(&mut checkpoint_cmd(pid, dir, extra))
}

/// Run `stasis restore --dir DIR`; panics (with stderr) unless it succeeds and
/// prints exactly one line holding the new root pid.
pub fn restore(dir: &Path) -> (i32, Output) {
    let r = reaper();
    let out = run_cmd(&mut restore_cmd(dir));
    if !out.status.success() {
        panic!("stasis restore {} failed\n{}", dir.display(), show(&out));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let pid: i32 = match lines.as_slice() {
        [one] => one
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("stasis restore: stdout is not a pid\n{}", show(&out))),
        _ => panic!(
            "stasis restore: stdout must be exactly one line (the pid)\n{}",
            show(&out)
        ),
    };
    r.watch(pid);
    for p in tree_pids(pid) {
        r.watch(p);
    }
    (pid, out)
}

/// A temporary parent for an image directory; the image directory itself is
/// `<tempdir>/img` (does not exist yet: `stasis checkpoint` creates it).
pub fn image_dir(name: &str) -> tempfile::TempDir {
    let mut d = tempfile::Builder::new()
        .prefix(&format!("stasis-img-{name}-"))
        .tempdir()
        .expect("create image dir");
    if std::env::var_os("STASIS_KEEP").is_some() {
        d.disable_cleanup(true);
        eprintln!("keeping image dir {}", d.path().display());
    }
    d
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// checkpoint (ends the tree), restore, verify.
    Kill,
    /// checkpoint --leave-running, verify the original; then (new instance)
    /// checkpoint --leave-running, kill the original, restore, verify.
    LeaveRunning,
    /// checkpoint, restore, checkpoint the restored tree, restore, verify.
    Double,
}

/// Let the workload run a little so the checkpoint catches it mid-loop.
const SETTLE: Duration = Duration::from_millis(200);

/// Checkpoint that ends the tree; panics unless it succeeds and the tree
/// disappears.
pub fn checkpoint_kill(w: &Workload, dir: &Path) {
    let pids = w.tree_pids();
    let out = checkpoint(w.pid, dir, &[]);
    if !out.status.success() {
        panic!(
            "{}: stasis checkpoint {} failed\n{}",
            w.name,
            w.pid,
            show(&out)
        );
    }
    let left = wait_gone(&pids, GONE_TIMEOUT);
    assert!(
        left.is_empty(),
        "{}: checkpoint succeeded but the tree is still there after {:?}: {}",
        w.name,
        GONE_TIMEOUT,
        describe_pids(&left)
    );
}

fn checkpoint_leave(w: &Workload, dir: &Path) {
    let out = checkpoint(w.pid, dir, &["--leave-running"]);
    if !out.status.success() {
        panic!(
            "{}: stasis checkpoint --leave-running {} failed\n{}",
            w.name,
            w.pid,
            show(&out)
        );
    }
    assert!(
        pid_alive(w.pid),
        "{}: root {} is gone after checkpoint --leave-running",
        w.name,
        w.pid
    );
}

/// Restore the image in `dir` and follow the workload's new root pid.
pub fn restore_into(w: &mut Workload, dir: &Path) {
    let (pid, _out) = restore(dir);
    w.set_pid(pid);
}

/// Full round trip of workload `name` in the given mode; panics on failure.
pub fn roundtrip(name: &str, args: &[&str], mode: Mode) {
    match mode {
        Mode::Kill => {
            let mut w = Workload::start(name, args);
            thread::sleep(SETTLE);
            let img = image_dir(name);
            checkpoint_kill(&w, &img.path().join("img"));
            restore_into(&mut w, &img.path().join("img"));
            thread::sleep(SETTLE);
            if let Err(e) = w.verify() {
                panic!("{name} [kill]: verification after restore failed:\n{e}");
            }
        }
        Mode::LeaveRunning => {
            {
                let w = Workload::start(name, args);
                thread::sleep(SETTLE);
                let img = image_dir(name);
                checkpoint_leave(&w, &img.path().join("img"));
                thread::sleep(SETTLE);
                if let Err(e) = w.verify() {
                    panic!("{name} [leave-running, original]: verification failed:\n{e}");
                }
            }
            {
                let mut w = Workload::start(name, args);
                thread::sleep(SETTLE);
                let img = image_dir(name);
                checkpoint_leave(&w, &img.path().join("img"));
                w.kill_tree();
                w.reset_verify();
                restore_into(&mut w, &img.path().join("img"));
                thread::sleep(SETTLE);
                if let Err(e) = w.verify() {
                    panic!("{name} [leave-running, killed original, restored]: verification failed:\n{e}");
                }
            }
        }
        Mode::Double => {
            let mut w = Workload::start(name, args);
            thread::sleep(SETTLE);
            let img1 = image_dir(name);
            checkpoint_kill(&w, &img1.path().join("img"));
            restore_into(&mut w, &img1.path().join("img"));
            thread::sleep(SETTLE);
            let img2 = image_dir(name);
            checkpoint_kill(&w, &img2.path().join("img"));
            restore_into(&mut w, &img2.path().join("img"));
            thread::sleep(SETTLE);
            if let Err(e) = w.verify() {
                panic!("{name} [double]: verification after second restore failed:\n{e}");
            }
        }
    }
}

/// Start a workload, let it run, verify it without any checkpoint.
pub fn standalone(name: &str, args: &[&str]) -> Result<(), String> {
    let w = Workload::start(name, args);
    thread::sleep(SETTLE);
    w.verify()
}

// ---------------------------------------------------------------------------
// programs that are not workloads/*.c (added for tests/programs.rs)

/// Make the reaper also reap zombie children of ours whose comm is `comm`
/// (e.g. the `sleep` children of a killed shell script).
pub fn reap_comm(comm: &str) {
    reaper().add_name(comm);
}

impl Workload {
    /// Start any program under the workload protocol:
    /// `PROGRAM PRE_ARGS... CTL_DIR POST_ARGS...`, in a new session (setsid),
    /// cwd = CTL_DIR, stdin /dev/null, fds above 2 closed. stdout/stderr are
    /// the given fds, or CTL_DIR/out.log (appended) when `None`. Waits ≤ 10 s
    /// for CTL_DIR/ready naming the spawned pid. `name` labels messages and is
    /// registered with the reaper as a comm; processes of the tree whose exe
    /// lives in the program's (canonical) directory belong to the workload, as
    /// does any process whose cwd is CTL_DIR.
    pub fn start_program(
        name: &str,
        program: &Path,
        pre_args: &[&std::ffi::OsStr],
        post_args: &[&str],
        stdout: Option<std::os::fd::OwnedFd>,
        stderr: Option<std::os::fd::OwnedFd>,
    ) -> Workload {
        let r = reaper();
        r.add_name(name);
        let exe = fs::canonicalize(program)
            .unwrap_or_else(|e| panic!("{name}: program {}: {e}", program.display()));
        for p in [program, exe.as_path()] {
            if let Some(base) = p.file_name().and_then(|s| s.to_str()) {
                r.add_name(base);
            }
        }
        let ctl = tempfile::Builder::new()
            .prefix(&format!("stasis-wl-{name}-"))
            .tempdir()
            .expect("create CTL_DIR");
        let ctl_canon = fs::canonicalize(ctl.path()).expect("canonicalize CTL_DIR");
        let open_log = || -> Stdio {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(ctl_canon.join("out.log"))
                .expect("open out.log")
                .into()
        };
        let out: Stdio = match stdout {
            Some(fd) => fd.into(),
            None => open_log(),
        };
        let err: Stdio = match stderr {
            Some(fd) => fd.into(),
            None => open_log(),
        };
        let mut cmd = Command::new(program);
        cmd.args(pre_args)
            .arg(&ctl_canon)
            .args(post_args)
            .current_dir(&ctl_canon)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: setsid() and close_range() are async-signal-safe; nothing else runs in the
        // child (same as `Workload::start`).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        drop(cmd); // our copies of the child's stdio fds
        let pid = child.id() as i32;
        r.watch(pid);
        drop(child);
        let w = Workload {
            ctl,
            pid,
            name: name.to_string(),
            ctl_canon,
            bin_dir: exe.parent().unwrap_or(Path::new("/")).to_path_buf(),
        };
        w.wait_ready(READY_TIMEOUT);
        w.register_tree();
        w
    }

    fn wait_ready(&self, timeout: Duration) {
        let r = reaper();
        let (name, pid) = (&self.name, self.pid);
        let ready = self.ctl_canon.join("ready");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = read_trim(&ready) {
                let rp: i32 = s
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: bad ready content {s:?}"));
                assert_eq!(rp, pid, "{name}: ready names pid {rp}, spawned {pid}");
                return;
            }
            let exited = matches!(r.state(pid), Some(ReapState::Exited(_)));
            if exited || Instant::now() >= deadline {
                panic!(
                    "{name} (pid {pid}) never became ready ({}; reap state {:?}); out.log:\n{}",
                    if exited { "exited" } else { "timeout" },
                    r.state(pid),
                    self.out_log()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `stasis restore --dir DIR EXTRA...`, with `setup` applied to the command
/// first (e.g. a `pre_exec` that places an fd for `--inherit-fd`). Panics
/// (with stderr) unless it succeeds and prints exactly one line, the pid.
pub fn restore_with(dir: &Path, extra: &[&str], setup: impl FnOnce(&mut Command)) -> (i32, Output) {
    let r = reaper();
    let mut cmd = restore_cmd(dir);
    cmd.args(extra);
    setup(&mut cmd);
    let out = run_cmd(&mut cmd);
    if !out.status.success() {
        panic!(
            "stasis restore {} {extra:?} failed\n{}",
            dir.display(),
            show(&out)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid: i32 = match stdout.lines().collect::<Vec<_>>().as_slice() {
        [one] => one
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("stasis restore: stdout is not a pid\n{}", show(&out))),
        _ => panic!(
            "stasis restore: stdout must be exactly one line (the pid)\n{}",
            show(&out)
        ),
    };
    r.watch(pid);
    for p in tree_pids(pid) {
        r.watch(p);
    }
    (pid, out)
}

/// Format a command's output for a panic message.
pub fn show_output(out: &Output) -> String {
    show(out)
}

// ---------------------------------------------------------------------------
// helpers added for the safety tests (generic)

/// Send signal `sig` to `pid` (a specific positive pid, never ourselves).
/// Returns false if kill(2) failed (e.g. the process is gone).
pub fn send_signal(pid: i32, sig: i32) -> bool {
    if pid <= 1 || pid == std::process::id() as i32 {
        return false;
    }
    // SAFETY: kill(2) with a specific positive pid.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// A command running in the background (stdin /dev/null, stdout and stderr
/// captured by reader threads).  The reaper leaves its pid alone; it is
/// waited for only through [`Background::wait`].
pub struct Background {
    child: std::process::Child,
    pid: i32,
    stdout: std::sync::Arc<Mutex<Vec<u8>>>,
    stderr: std::sync::Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn pump(
    mut src: impl std::io::Read + Send + 'static,
    dst: std::sync::Arc<Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match src.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => lock(&dst).extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

impl Background {
    /// Start `cmd` in the background.
    pub fn spawn(cmd: &mut Command) -> Background {
        let r = reaper();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Hold the exclusion set while spawning, so the zombie sweeper can
        // never see the child before it is excluded.
        let mut excluded = lock(&r.excluded);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let pid = child.id() as i32;
        excluded.insert(pid);
        drop(excluded);
        let stdout = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stderr = std::sync::Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            pump(child.stdout.take().expect("piped stdout"), stdout.clone()),
            pump(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        Background {
            child,
            pid,
            stdout,
            stderr,
            readers,
        }
    }

    /// The background process's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// What it wrote on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// Wait until its stderr contains `needle`.  False on timeout or if the
    /// process exited first.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_so_far().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                return self.stderr_so_far().contains(needle);
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Wait ≤ `timeout` for it to exit.  On timeout it is SIGKILLed and
    /// reaped; the second value is then false.
    pub fn wait(mut self, timeout: Duration) -> (Output, bool) {
        let deadline = Instant::now() + timeout;
        let mut in_time = true;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
                Ok(None) => {
                    in_time = false;
                    let _ = self.child.kill();
                    break self.child.wait().expect("wait for killed child");
                }
                Err(e) => panic!("wait for pid {}: {e}", self.pid),
            }
        };
        lock(&reaper().excluded).remove(&self.pid);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let out = Output {
            status,
            stdout: std::mem::take(&mut *lock(&self.stdout)),
            stderr: std::mem::take(&mut *lock(&self.stderr)),
        };
        (out, in_time)
    }
}

/// Format a command's output for assertion messages.
pub fn describe_output(out: &Output) -> String {
    show(out)
}

/// One process/thread creation seen by [`ForkWatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub parent_pid: i32,
    pub parent_tgid: i32,
    pub child_pid: i32,
    pub child_tgid: i32,
}

/// Watches every process and thread creation on the machine through the
/// kernel's process-events connector (netlink, CONFIG_PROC_EVENTS; needs
/// root in the initial namespaces).  Events are queued by the kernel at
/// fork time, so everything created before [`ForkWatch::stop`] is seen.
pub struct ForkWatch {
    fd: std::os::fd::OwnedFd,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: Option<thread::JoinHandle<(Vec<ForkEvent>, bool)>>,
}

const NETLINK_CONNECTOR: i32 = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_FORK: u32 = 1;

#[repr(C)]
struct SockaddrNl {
    nl_family: u16,
    nl_pad: u16,
    nl_pid: u32,
    nl_groups: u32,
}

fn cn_proc_ctl(fd: i32, op: u32) -> std::io::Result<()> {
    // nlmsghdr (16) + cn_msg (20) + op (4)
    let mut msg = Vec::with_capacity(40);
    msg.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes()); // nlmsg_type
    msg.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
    msg.extend_from_slice(&4u16.to_ne_bytes()); // len
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&op.to_ne_bytes());
    // SAFETY: send(2) of a fully initialised buffer of msg.len() bytes.
    let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl ForkWatch {
    /// Start listening; panics if the connector is unavailable.
    pub fn start() -> ForkWatch {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_CONNECTOR,
            )
        };
        assert!(
            raw >= 0,
            "ForkWatch: socket(AF_NETLINK, NETLINK_CONNECTOR): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let big: libc::c_int = 16 << 20;
        // SAFETY: setsockopt with a pointer to a c_int and its size.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&big as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        // SAFETY: setsockopt with a pointer to a timeval and its size.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let sa = SockaddrNl {
            nl_family: libc::AF_NETLINK as u16,
            nl_pad: 0,
            nl_pid: 0,
            nl_groups: CN_IDX_PROC,
        };
        // SAFETY: bind(2) with a pointer to a sockaddr_nl-shaped struct and its size.
        let r = unsafe {
            libc::bind(
                raw,
                (&sa as *const SockaddrNl).cast(),
                std::mem::size_of::<SockaddrNl>() as libc::socklen_t,
            )
        };
        assert_eq!(
            r,
            0,
            "ForkWatch: bind to the proc connector: {}",
            std::io::Error::last_os_error()
        );
        cn_proc_ctl(raw, PROC_CN_MCAST_LISTEN)
            .unwrap_or_else(|e| panic!("ForkWatch: PROC_CN_MCAST_LISTEN: {e}"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let rfd = fd.as_raw_fd();
        let reader = thread::spawn(move || {
            let mut events = Vec::new();
            let mut lost = false;
            let mut buf = [0u8; 8192];
            loop {
                // SAFETY: recv(2) into a buffer of buf.len() bytes; the fd stays open until
                // this thread has been joined.
                let n = unsafe { libc::recv(rfd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) | Some(libc::EINTR) => {
                            if stop2.load(Ordering::SeqCst) {
                                return (events, lost);
                            }
                            continue;
                        }
                        Some(libc::ENOBUFS) => {
                            lost = true;
                            continue;
                        }
                        _ => return (events, true),
                    }
                }
                let n = n as usize;
                let rd = |off: usize| -> Option<u32> {
                    buf.get(off..off + 4)
                        .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
                };
                // nlmsghdr (16) + cn_msg (20) + proc_event { what, cpu, timestamp (u64),
                // event_data @16 }
                if n >= 68 && rd(36) == Some(PROC_EVENT_FORK) {
                    events.push(ForkEvent {
                        parent_pid: rd(52).unwrap() as i32,
                        parent_tgid: rd(56).unwrap() as i32,
                        child_pid: rd(60).unwrap() as i32,
                        child_tgid: rd(64).unwrap() as i32,
                    });
                }
            }
        });
        ForkWatch {
            fd,
            stop,
            reader: Some(reader),
        }
    }

    /// Stop listening; returns every creation seen.  Panics if the kernel
    /// dropped events (the socket buffer overflowed).
    pub fn stop(mut self) -> Vec<ForkEvent> {
        use std::os::fd::AsRawFd;
        self.stop.store(true, Ordering::SeqCst);
        let (events, lost) = self
            .reader
            .take()
            .expect("reader")
            .join()
            .expect("ForkWatch reader panicked");
        let _ = cn_proc_ctl(self.fd.as_raw_fd(), PROC_CN_MCAST_IGNORE);
        assert!(!lost, "ForkWatch: the kernel dropped process events");
        events
    }
}

impl Drop for ForkWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Every file and directory under `root` (relative path → None for a
/// directory, Some(content) for a file), for before/after comparisons.
pub fn snapshot_tree(root: &Path) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>,
    ) {
        let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for e in rd {
            let e = e.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let p = e.path();
            let rel = p.strip_prefix(root).expect("under root").to_path_buf();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                let bytes = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                out.insert(rel, Some(bytes));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Differences between two [`snapshot_tree`]s, one line each (empty: equal).
pub fn diff_trees(
    before: &std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>,
    after: &std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>,
) -> Vec<String> {
    let size = |v: &Option<Vec<u8>>| match v {
        None => "dir".to_string(),
        Some(b) => format!("{} bytes", b.len()),
    };
    let mut d = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("removed: {} ({})", k.display(), size(v))),
            Some(w) if w != v => d.push(format!(
                "changed: {} ({} -> {})",
                k.display(),
                size(v),
                size(w)
            )),
            _ => {}
        }
    }
    for (k, v) in after {
        if !before.contains_key(k) {
            d.push(format!("added: {} ({})", k.display(), size(v)));
        }
    }
    d
}

/// Copy a directory tree (regular files and directories only).
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for e in fs::read_dir(src).unwrap_or_else(|e| panic!("read_dir {}: {e}", src.display())) {
        let e = e.expect("dir entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap_or_else(|err| {
                panic!("copy {} -> {}: {err}", e.path().display(), to.display())
            });
        }
    }
}

static AT_EXIT_REMOVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_registered_paths() {
    for p in lock(&AT_EXIT_REMOVE).drain(..) {
        let _ = fs::remove_dir_all(&p);
    }
}

/// Remove directory `path` (recursively) when the test process exits: for
/// fixtures kept in statics, which are never dropped.  Honours STASIS_KEEP.
pub fn remove_at_exit(path: &Path) {
    if std::env::var_os("STASIS_KEEP").is_some() {
        eprintln!("keeping {}", path.display());
        return;
    }
    static REGISTER: std::sync::Once = std::sync::Once::new();
    // SAFETY: atexit(3) with an extern "C" function that never unwinds (it ignores errors).
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove_registered_paths);
    });
    lock(&AT_EXIT_REMOVE).push(path.to_path_buf());
}

/// Like [`run_cmd`], but without its race: `run_cmd` excludes the child's
/// pid from the reaper only after `spawn` returns, so a child that exits
/// at once (e.g. `stasis inspect`) can be reaped by the zombie sweep first
/// and the wait then fails with ECHILD.  Here the pid is excluded while
/// the reaper is locked out.
pub fn run_cmd_reliably(cmd: &mut Command) -> Output {
    let (out, in_time) = Background::spawn(cmd).wait(Duration::from_secs(600));
    assert!(in_time, "{cmd:?} did not finish within 600 s (killed)");
    out
}

/// The self-verifying workloads every round-trip test covers, with their arguments.
pub const WORKLOADS: &[(&str, &[&str])] = &[
    ("counter", &[]),
    ("mem_anon", &[]),
    ("mem_shared", &[]),
    ("mem_file", &[]),
    ("memfd", &[]),
    ("threads", &[]),
    ("multiproc", &[]),
    ("signals", &[]),
    ("timers", &[]),
    ("files", &[]),
    ("creds", &[]),
    ("restart", &[]),
    ("mt_load", &[]),
    ("unix_sock", &[]),
    ("events", &[]),
    ("pty", &[]),
    ("unix_scm", &[]),
    ("udp_sock", &[]),
    ("posix_mq", &[]),
    ("sysv_ipc", &[]),
];

/// Run `stasis --root ROOT ARGS…` to completion.
pub fn stasis_at(root: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(stasis());
    c.arg("--root").arg(root).args(args);
    run_cmd(&mut c)
}

/// The trimmed stdout of a command that must have succeeded (panics with its output if not).
pub fn ok_stdout(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `conformance_tests!(module_name, "workload", &[args]);` — the round trips of one
/// self-verifying workload as tests `module_name::{kill, leave_running, double, partition}`:
/// checkpoint→kill→restore, `--leave-running` (original verifies; a second copy killed and
/// restored), two round trips in a row, and as a partition's first process. Without the
/// partition test: `conformance_tests!(module_name, "workload", &[args], no_partition);`.
#[macro_export]
macro_rules! conformance_tests {
    ($m:ident, $wl:literal, $args:expr) => {
        mod $m {
            $crate::conformance_tests!(@modes $wl, $args);
            #[test]
            fn partition() {
                let _g = $crate::common::serial();
                $crate::common::partition::roundtrip($wl, $args);
            }
        }
    };
    ($m:ident, $wl:literal, $args:expr, no_partition) => {
        mod $m {
            $crate::conformance_tests!(@modes $wl, $args);
        }
    };
    (@modes $wl:literal, $args:expr) => {
        #[test]
        fn kill() {
            let _g = $crate::common::serial();
            $crate::common::roundtrip($wl, $args, $crate::common::Mode::Kill);
        }
        #[test]
        fn leave_running() {
            let _g = $crate::common::serial();
            $crate::common::roundtrip($wl, $args, $crate::common::Mode::LeaveRunning);
        }
        #[test]
        fn double() {
            let _g = $crate::common::serial();
            $crate::common::roundtrip($wl, $args, $crate::common::Mode::Double);
        }
    };
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}
