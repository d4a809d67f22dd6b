//! Safety properties of `stasis`: what a failed, interrupted or killed operation leaves behind,
//! and how unusable images are refused.
//!
//! - checkpoint failpoints (every step): exit 1, the tree runs on exactly as before (same pids
//!   and tids, same mappings — no leftover parasite page —, same signal masks, not traced), no
//!   `manifest.img`, no journal left; the workload then verifies itself;
//! - SIGTERM/SIGINT/SIGHUP while a checkpoint is paused at a step: exit 130, same checks;
//! - SIGKILL of stasis while paused at `tasks` (parasite mapped, signals blocked), then
//!   `stasis recover`: the tree is repaired, the journal is gone;
//! - restore failpoints (every step): exit 1, no task of the image left, the image unchanged
//!   (every byte of every file), and a plain restore of the same image then works and verifies;
//! - corrupt, truncated, other-version, incomplete images: `restore` exits 4 naming the problem
//!   without creating any task of the image (watched with the kernel's process-events
//!   connector), and `inspect --verify` exits 4 too;
//! - pid in use (exit 5), `--dir` not empty without `--force`, `inspect --json` structure, and an
//!   image fixture written by an earlier build (format version 1) that must stay readable.
//!
//! Every test holds the global `SERIAL` lock (they all juggle pids). Checkpoints run with a
//! private `STASIS_JOURNAL_DIR` so that no other stasis process on the machine can recover (or
//! be confused by) our journals.
#![cfg(target_os = "linux")]

mod common;

use common::{
    checkpoint_cmd, copy_tree, diff_trees, image_dir, restore_cmd, run_cmd_reliably, send_signal,
    serial, snapshot_tree, stasis, wait_gone, Background, ForkWatch, Workload,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;

/// Let a workload run a little before it is checkpointed.
const SETTLE: Duration = Duration::from_millis(150);
/// How long a paused stasis may take to notice a signal and exit.
const EXIT_AFTER_SIGNAL: Duration = Duration::from_secs(10);
/// What `stasis -v` logs when a failpoint pauses.
const PAUSING: &str = "failpoint: pausing";

// ---------------------------------------------------------------------------
// small helpers

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn show(out: &Output) -> String {
    common::describe_output(out)
}

/// A stasis command with a private journal dir and the given failpoints (none: unset).
fn with_env(mut c: Command, journal: &Path, failpoints: Option<&str>) -> Command {
    c.env("STASIS_JOURNAL_DIR", journal);
    match failpoints {
        Some(f) => c.env("STASIS_FAILPOINTS", f),
        None => c.env_remove("STASIS_FAILPOINTS"),
    };
    c
}

fn journal_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stasis-journal-")
        .tempdir()
        .expect("create journal dir")
}

/// Files left in a journal dir.
fn journal_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn describe(pids: &[i32]) -> String {
    pids.iter()
        .map(|p| {
            let comm = fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            let cwd = fs::read_link(format!("/proc/{p}/cwd"))
                .map(|c| c.display().to_string())
                .unwrap_or_default();
            format!("{p} ({}, cwd {cwd})", comm.trim())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Pids among `pids` that exist and are not zombies.
fn alive(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|&p| common::pid_alive(p))
        .collect()
}

// ---------------------------------------------------------------------------
// what a tree looks like from outside

/// Per-thread facts that a checkpoint must leave as they were.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskState {
    sigblk: String,
    tracer: i32,
    stopped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcState {
    tasks: BTreeMap<i32, TaskState>,
    /// "start-end perms path" of every mapping.
    maps: BTreeSet<String>,
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

fn task_state(pid: i32, tid: i32) -> Option<TaskState> {
    let st = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let state = status_field(&st, "State")?.chars().next()?;
    Some(TaskState {
        sigblk: status_field(&st, "SigBlk")?.to_string(),
        tracer: status_field(&st, "TracerPid")?.parse().ok()?,
        stopped: state == 't' || state == 'T',
    })
}

fn maps_of(pid: i32) -> BTreeSet<String> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!(
                "{} {} {}",
                f.first().copied().unwrap_or(""),
                f.get(1).copied().unwrap_or(""),
                f.get(5..).map(|p| p.join(" ")).unwrap_or_default()
            )
        })
        .collect()
}

fn proc_state(pid: i32) -> ProcState {
    let mut tasks = BTreeMap::new();
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
        for e in rd.flatten() {
            if let Ok(tid) = e.file_name().to_string_lossy().parse::<i32>() {
                if let Some(t) = task_state(pid, tid) {
                    tasks.insert(tid, t);
                }
            }
        }
    }
    ProcState {
        tasks,
        maps: maps_of(pid),
    }
}

/// State of every process of the tree rooted at `root`.
fn tree_state(root: i32) -> BTreeMap<i32, ProcState> {
    common::tree_pids(root)
        .into_iter()
        .map(|p| (p, proc_state(p)))
        .collect()
}

/// Differences between two tree states, one line each (empty: identical).
fn diff_states(before: &BTreeMap<i32, ProcState>, after: &BTreeMap<i32, ProcState>) -> Vec<String> {
    let mut d = Vec::new();
    let pb: Vec<i32> = before.keys().copied().collect();
    let pa: Vec<i32> = after.keys().copied().collect();
    if pb != pa {
        d.push(format!("processes were {pb:?}, now {pa:?}"));
    }
    for (pid, b) in before {
        let Some(a) = after.get(pid) else { continue };
        let tb: Vec<i32> = b.tasks.keys().copied().collect();
        let ta: Vec<i32> = a.tasks.keys().copied().collect();
        if tb != ta {
            d.push(format!("pid {pid}: threads were {tb:?}, now {ta:?}"));
        }
        for (tid, t) in &b.tasks {
            if let Some(u) = a.tasks.get(tid) {
                if t != u {
                    d.push(format!("pid {pid} tid {tid}: was {t:?}, now {u:?}"));
                }
            }
        }
        for m in b.maps.difference(&a.maps) {
            d.push(format!("pid {pid}: mapping gone: {m}"));
        }
        for m in a.maps.difference(&b.maps) {
            d.push(format!("pid {pid}: new mapping: {m}"));
        }
    }
    d
}

/// Checks shared by failed and interrupted checkpoints; returns the problems found.
fn check_tree_untouched(
    w: &Workload,
    before: &BTreeMap<i32, ProcState>,
    img: &Path,
    journal: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let after = tree_state(w.pid);
    for d in diff_states(before, &after) {
        problems.push(format!("tree changed: {d}"));
    }
    if img.join("manifest.img").exists() {
        problems.push(format!(
            "{} exists: the failed checkpoint left a complete-looking image",
            img.join("manifest.img").display()
        ));
    }
    let left = journal_files(journal);
    if !left.is_empty() {
        problems.push(format!("journal files left behind: {left:?}"));
    }
    if problems.is_empty() {
        // (a tree left frozen would only time out here)
        if let Err(e) = w.verify() {
            problems.push(format!("workload verification failed:\n{e}"));
        }
    }
    problems
}

fn report(failures: Vec<String>, what: &str) {
    assert!(
        failures.is_empty(),
        "{what}: {} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// 1. checkpoint failpoints

fn checkpoint_failpoint_case(wl: &str, step: &str) -> Result<(), String> {
    let w = Workload::start(wl, &[]);
    thread::sleep(SETTLE);
    let before = tree_state(w.pid);
    let img = image_dir(wl);
    let dir = img.path().join("img");
    let journal = journal_dir();
    let out = run_cmd_reliably(&mut with_env(
        checkpoint_cmd(w.pid, &dir, &[]),
        journal.path(),
        Some(step),
    ));
    let mut problems = Vec::new();
    if code(&out) != Some(1) {
        problems.push(format!("expected exit code 1, got {:?}", out.status));
    }
    if !stderr_of(&out).contains(&format!("failpoint {step}")) {
        problems.push(format!("stderr does not name failpoint {step:?}"));
    }
    problems.extend(check_tree_untouched(&w, &before, &dir, journal.path()));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{wl}, failpoint {step}:\n  - {}\n{}",
            problems.join("\n  - "),
            show(&out)
        ))
    }
}

fn checkpoint_failpoint(step: &str) {
    let mut failures = Vec::new();
    for wl in ["threads", "multiproc", "signals"] {
        if let Err(e) = checkpoint_failpoint_case(wl, step) {
            failures.push(e);
        }
    }
    report(failures, &format!("checkpoint failpoint {step}"));
}

macro_rules! checkpoint_failpoint_tests {
    ($($name:ident => $step:literal),* $(,)?) => {$(
        /// A checkpoint failing at this step leaves the tree exactly as it was.
        #[test]
        fn $name() {
            let _g = serial();
            checkpoint_failpoint($step);
        }
    )*};
}

checkpoint_failpoint_tests!(
    checkpoint_fails_at_seize => "seize",
    checkpoint_fails_at_inspect => "inspect",
    checkpoint_fails_at_parasite => "parasite",
    checkpoint_fails_at_tasks => "tasks",
    checkpoint_fails_at_memory => "memory",
    checkpoint_fails_at_write => "write",
    checkpoint_fails_at_commit => "commit",
);

// ---------------------------------------------------------------------------
// 2. interruption by a signal while paused at a step

/// Start a checkpoint of `w` paused at `step` (verbose, so it logs the pause); waits until it
/// pauses and checks the tree is frozen by it.
fn paused_checkpoint(
    w: &Workload,
    step: &str,
    dir: &Path,
    journal: &Path,
) -> Result<Background, String> {
    let mut bg = Background::spawn(&mut with_env(
        checkpoint_cmd(w.pid, dir, &["-v"]),
        journal,
        Some(&format!("{step}=pause")),
    ));
    if !bg.wait_stderr(PAUSING, Duration::from_secs(15)) {
        let (out, _) = bg.wait(Duration::from_secs(0));
        return Err(format!(
            "stasis never paused at {step}\n{}",
            common::describe_output(&out)
        ));
    }
    let frozen = tree_state(w.pid);
    let not_frozen: Vec<String> = frozen
        .iter()
        .flat_map(|(pid, p)| {
            p.tasks
                .iter()
                .filter(|(_, t)| t.tracer != bg.pid() || !t.stopped)
                .map(move |(tid, t)| format!("pid {pid} tid {tid}: {t:?}"))
        })
        .collect();
    if !not_frozen.is_empty() {
        let pid = bg.pid();
        send_signal(pid, libc::SIGKILL);
        let _ = bg.wait(Duration::from_secs(5));
        return Err(format!(
            "precondition: while paused at {step} every thread should be stopped and traced by \
             stasis (pid {pid}), but: {}",
            not_frozen.join("; ")
        ));
    }
    Ok(bg)
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        _ => "signal",
    }
}

fn interrupt_case(wl: &str, step: &str, sig: i32) -> Result<(), String> {
    let w = Workload::start(wl, &[]);
    thread::sleep(SETTLE);
    let before = tree_state(w.pid);
    let img = image_dir(wl);
    let dir = img.path().join("img");
    let journal = journal_dir();
    let ctx = format!("{wl}, {} while paused at {step}", signal_name(sig));
    let bg =
        paused_checkpoint(&w, step, &dir, journal.path()).map_err(|e| format!("{ctx}: {e}"))?;
    send_signal(bg.pid(), sig);
    let (out, in_time) = bg.wait(EXIT_AFTER_SIGNAL);
    let mut problems = Vec::new();
    if !in_time {
        problems.push(format!(
            "stasis did not exit within {EXIT_AFTER_SIGNAL:?} of the signal (killed)"
        ));
    }
    if code(&out) != Some(130) {
        problems.push(format!("expected exit code 130, got {:?}", out.status));
    }
    let err = stderr_of(&out);
    if !err.contains("interrupted") || !err.contains(step) {
        problems.push(format!(
            "stderr does not say the checkpoint was interrupted at {step}"
        ));
    }
    problems.extend(check_tree_untouched(&w, &before, &dir, journal.path()));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{ctx}:\n  - {}\n{}",
            problems.join("\n  - "),
            show(&out)
        ))
    }
}

fn interrupt(step: &str, sig: i32) {
    let mut failures = Vec::new();
    for wl in ["signals", "multiproc"] {
        if let Err(e) = interrupt_case(wl, step, sig) {
            failures.push(e);
        }
    }
    report(
        failures,
        &format!("checkpoint interrupted by {} at {step}", signal_name(sig)),
    );
}

/// SIGTERM while paused at `parasite` (our page just mapped): exit 130, tree intact.
#[test]
fn checkpoint_sigterm_at_parasite() {
    let _g = serial();
    interrupt("parasite", libc::SIGTERM);
}

/// SIGINT while paused at `parasite`.
#[test]
fn checkpoint_sigint_at_parasite() {
    let _g = serial();
    interrupt("parasite", libc::SIGINT);
}

/// SIGTERM while paused at `memory` (pages dumped, signals blocked in the tasks).
#[test]
fn checkpoint_sigterm_at_memory() {
    let _g = serial();
    interrupt("memory", libc::SIGTERM);
}

/// SIGINT while paused at `memory`.
#[test]
fn checkpoint_sigint_at_memory() {
    let _g = serial();
    interrupt("memory", libc::SIGINT);
}

/// SIGHUP while paused at `tasks`.
#[test]
fn checkpoint_sighup_at_tasks() {
    let _g = serial();
    interrupt("tasks", libc::SIGHUP);
}

/// SIGTERM while paused at `commit`: where a signal that arrives during the commit (the
/// fsync phase, the slowest one, so where a user's Ctrl-C most likely lands) is noticed.
#[test]
fn checkpoint_sigterm_at_commit() {
    let _g = serial();
    interrupt("commit", libc::SIGTERM);
}

// ---------------------------------------------------------------------------
// 3. stasis SIGKILLed mid-checkpoint, then `stasis recover`

fn sigkill_case(wl: &str) -> Result<(), String> {
    let w = Workload::start(wl, &[]);
    thread::sleep(SETTLE);
    let before = tree_state(w.pid);
    let nprocs = before.len();
    let img = image_dir(wl);
    let dir = img.path().join("img");
    let journal = journal_dir();
    let ctx = format!("{wl}, stasis SIGKILLed while paused at tasks");
    let bg =
        paused_checkpoint(&w, "tasks", &dir, journal.path()).map_err(|e| format!("{ctx}: {e}"))?;
    let stasis_pid = bg.pid();
    let jfile = journal.path().join(format!("{stasis_pid}.json"));
    let journal_present = jfile.exists();
    send_signal(stasis_pid, libc::SIGKILL);
    let (out, _) = bg.wait(EXIT_AFTER_SIGNAL);
    if out.status.signal() != Some(libc::SIGKILL) {
        return Err(format!(
            "{ctx}: stasis was not killed by SIGKILL\n{}",
            show(&out)
        ));
    }
    if !journal_present {
        return Err(format!(
            "{ctx}: precondition: no journal {} while paused (files: {:?})",
            jfile.display(),
            journal_files(journal.path())
        ));
    }
    // Preconditions: what recovery has to undo is really there (the kernel detached the tasks
    // and they run on with our page mapped and every signal blocked).
    let mid = tree_state(w.pid);
    let extra_maps: usize = mid
        .iter()
        .map(|(p, s)| match before.get(p) {
            Some(b) => s.maps.difference(&b.maps).count(),
            None => 0,
        })
        .sum();
    let all_blocked = mid
        .values()
        .flat_map(|p| p.tasks.values())
        // (the kernel never shows SIGKILL and SIGSTOP as blocked)
        .any(|t| {
            u64::from_str_radix(&t.sigblk, 16).is_ok_and(|m| {
                m | (1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1)) == u64::MAX
            })
        });
    if extra_maps == 0 || !all_blocked {
        return Err(format!(
            "{ctx}: precondition: after the kill the tasks should still hold our page \
             ({extra_maps} new mapping(s)) and block every signal (any fully blocked: \
             {all_blocked}); state: {mid:#?}"
        ));
    }
    let rec = run_cmd_reliably(&mut with_env(
        {
            let mut c = Command::new(stasis());
            c.arg("recover");
            c
        },
        journal.path(),
        None,
    ));
    let mut problems = Vec::new();
    if !rec.status.success() {
        problems.push(format!("stasis recover failed: {:?}", rec.status));
    }
    let want = format!("repaired {nprocs} process(es)");
    if !stderr_of(&rec).contains(&want) {
        problems.push(format!("stasis recover did not report {want:?}"));
    }
    if jfile.exists() {
        problems.push(format!("journal {} still exists", jfile.display()));
    }
    let left = journal_files(journal.path());
    if !left.is_empty() {
        problems.push(format!("journal dir not empty: {left:?}"));
    }
    let after = tree_state(w.pid);
    for d in diff_states(&before, &after) {
        problems.push(format!("tree not repaired: {d}"));
    }
    if dir.join("manifest.img").exists() {
        problems.push("the killed checkpoint left a manifest.img".into());
    }
    if let Err(e) = w.verify() {
        problems.push(format!("workload verification failed:\n{e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{ctx}:\n  - {}\n--- recover ---\n{}",
            problems.join("\n  - "),
            show(&rec)
        ))
    }
}

/// SIGKILL of stasis mid-checkpoint, then `stasis recover`: masks, pending signals, registers
/// and mappings are back, the journal is gone, the workloads verify.
#[test]
fn checkpoint_sigkill_then_recover() {
    let _g = serial();
    let mut failures = Vec::new();
    for wl in [
        "signals",
        "threads",
        "multiproc",
        "seccomp_strict",
        "seccomp_filter",
    ] {
        if let Err(e) = sigkill_case(wl) {
            failures.push(e);
        }
    }
    report(failures, "recovery after a SIGKILLed checkpoint");
}

// ---------------------------------------------------------------------------
// shared images (checkpointed once per test process)

/// A committed image of a workload whose tree was ended by the checkpoint. The workload's
/// CTL_DIR is kept (restored trees use it); the pids are free between uses.
struct SharedImage {
    /// The original workload: its CTL_DIR and bookkeeping serve every restored instance.
    w: Workload,
    _img: tempfile::TempDir,
    dir: PathBuf,
    root: i32,
    /// pid → tids at checkpoint time.
    tasks: BTreeMap<i32, BTreeSet<i32>>,
    /// Every file of the image, right after the checkpoint.
    snapshot: BTreeMap<PathBuf, Option<Vec<u8>>>,
}

impl SharedImage {
    fn create(name: &str) -> SharedImage {
        let w = Workload::start(name, &[]);
        common::remove_at_exit(w.ctl_path());
        thread::sleep(SETTLE);
        let tasks: BTreeMap<i32, BTreeSet<i32>> = tree_state(w.pid)
            .into_iter()
            .map(|(p, s)| (p, s.tasks.keys().copied().collect()))
            .collect();
        let img = image_dir(name);
        common::remove_at_exit(img.path());
        let dir = img.path().join("img");
        let pids = w.tree_pids();
        w.register_tree();
        let journal = journal_dir();
        let out = run_cmd_reliably(&mut with_env(
            checkpoint_cmd(w.pid, &dir, &[]),
            journal.path(),
            None,
        ));
        assert!(
            out.status.success(),
            "checkpoint of {name} for the shared image failed\n{}",
            show(&out)
        );
        let left = wait_gone(&pids, common::GONE_TIMEOUT);
        assert!(
            left.is_empty(),
            "{name}: tree still there after the checkpoint: {}",
            describe(&left)
        );
        let snapshot = snapshot_tree(&dir);
        SharedImage {
            root: w.pid,
            w,
            _img: img,
            dir,
            tasks,
            snapshot,
        }
    }

    fn tids(&self) -> Vec<i32> {
        self.tasks.values().flatten().copied().collect()
    }

    /// End whatever is left of an earlier restore and wait until every pid is free.
    fn make_pids_free(&self) {
        self.w.kill_tree();
        let left = wait_gone(&self.tids(), Duration::from_secs(10));
        assert!(
            left.is_empty(),
            "pids of the image are still taken: {}",
            describe(&left)
        );
    }

    fn unchanged(&self) -> Vec<String> {
        diff_trees(&self.snapshot, &snapshot_tree(&self.dir))
            .into_iter()
            .map(|d| format!("image modified: {d}"))
            .collect()
    }

    /// Plain restore, then verify; waits until the tree has ended. Returns the problems.
    fn restore_and_verify(&mut self) -> Vec<String> {
        self.make_pids_free();
        self.w.reset_verify();
        let out = run_cmd_reliably(&mut restore_cmd(&self.dir));
        if !out.status.success() {
            return vec![format!("plain restore failed\n{}", show(&out))];
        }
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if printed != self.root.to_string() {
            return vec![format!(
                "plain restore printed {printed:?}, expected the root pid {}",
                self.root
            )];
        }
        self.w.set_pid(self.root);
        thread::sleep(SETTLE);
        let mut problems = Vec::new();
        if let Err(e) = self.w.verify() {
            problems.push(format!("restored workload failed verification:\n{e}"));
        }
        let left = wait_gone(&self.tids(), Duration::from_secs(10));
        if !left.is_empty() {
            problems.push(format!(
                "restored tree still there after its verification: {}",
                describe(&left)
            ));
        }
        problems
    }
}

fn shared_image(name: &'static str) -> MutexGuard<'static, SharedImage> {
    static THREADS: OnceLock<Mutex<SharedImage>> = OnceLock::new();
    static MULTIPROC: OnceLock<Mutex<SharedImage>> = OnceLock::new();
    let cell = match name {
        "threads" => &THREADS,
        "multiproc" => &MULTIPROC,
        _ => panic!("no shared image of {name}"),
    };
    let si = cell
        .get_or_init(|| Mutex::new(SharedImage::create(name)))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    si.make_pids_free();
    si
}

// ---------------------------------------------------------------------------
// 4. restore failpoints

fn restore_failpoint_case(si: &mut SharedImage, step: &str) -> Result<(), String> {
    let journal = journal_dir();
    let out = run_cmd_reliably(&mut with_env(
        restore_cmd(&si.dir),
        journal.path(),
        Some(step),
    ));
    let mut problems = Vec::new();
    if code(&out) != Some(1) {
        problems.push(format!("expected exit code 1, got {:?}", out.status));
    }
    if !stderr_of(&out).contains(&format!("failpoint {step}")) {
        problems.push(format!("stderr does not name failpoint {step:?}"));
    }
    if !out.stdout.is_empty() {
        problems.push("a failed restore printed something on stdout".into());
    }
    let tids = si.tids();
    let left = wait_gone(&tids, Duration::from_secs(3));
    if !left.is_empty() {
        problems.push(format!(
            "tasks of the image left behind (alive: {:?}): {}",
            alive(&left),
            describe(&left)
        ));
    }
    problems.extend(si.unchanged());
    if problems.is_empty() {
        problems.extend(si.restore_and_verify());
        problems.extend(si.unchanged());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}, restore failpoint {step}:\n  - {}\n{}",
            si.w.name,
            problems.join("\n  - "),
            show(&out)
        ))
    }
}

fn restore_failpoint(step: &str) {
    let mut failures = Vec::new();
    for name in ["multiproc", "threads"] {
        let mut si = shared_image(name);
        if let Err(e) = restore_failpoint_case(&mut si, step) {
            failures.push(e);
        }
        si.w.kill_tree();
    }
    report(failures, &format!("restore failpoint {step}"));
}

macro_rules! restore_failpoint_tests {
    ($($name:ident => $step:literal),* $(,)?) => {$(
        /// A restore failing at this step leaves no task behind and the image unchanged; the
        /// same image then restores and verifies.
        #[test]
        fn $name() {
            let _g = serial();
            restore_failpoint($step);
        }
    )*};
}

restore_failpoint_tests!(
    restore_fails_at_validate => "validate",
    restore_fails_at_prepare => "prepare",
    restore_fails_at_root => "root",
    restore_fails_at_tasks => "tasks",
    restore_fails_at_mappings => "mappings",
    restore_fails_at_pages => "pages",
    restore_fails_at_state => "state",
    restore_fails_at_detach => "detach",
);

// ---------------------------------------------------------------------------
// 5. corrupt images

/// Framed file header length (docs/image-format.md).
const FRAME_HEADER: usize = 56;
/// Chunk header length.
const CHUNK_HEADER: usize = 32;

fn flip_byte(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        at < b.len(),
        "{} has only {} bytes",
        path.display(),
        b.len()
    );
    b[at] ^= 0xff;
    fs::write(path, b).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn truncate_to(path: &Path, len: u64) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_len(len)
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

fn file_len(path: &Path) -> usize {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .len() as usize
}

/// The largest chunk file of an image (page data the restore needs).
fn largest_chunk(dir: &Path) -> PathBuf {
    snapshot_tree(&dir.join("chunks"))
        .into_iter()
        .filter_map(|(p, c)| c.map(|c| (c.len(), p)))
        .max()
        .map(|(_, p)| dir.join("chunks").join(p))
        .expect("the image has chunks")
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    ObjectsByte,
    ManifestByte,
    ChunkByte,
    ObjectsTruncated,
    ChunkTruncated,
    ManifestVersion2,
    ManifestMissing,
    ChunkMissing,
}

/// Apply `damage` to the image copy in `dir`; returns (words the error must contain — at least
/// one of each group —, a description).
fn damage_image(dir: &Path, damage: Damage) -> (Vec<Vec<String>>, String) {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let objects = dir.join("objects.img");
    let manifest = dir.join("manifest.img");
    let chunk = largest_chunk(dir);
    let chunk_name = chunk.file_name().unwrap().to_string_lossy().into_owned();
    match damage {
        Damage::ObjectsByte => {
            let len = file_len(&objects);
            flip_byte(&objects, FRAME_HEADER + (len - FRAME_HEADER) / 2);
            (
                vec![s(&["corrupt", "checksum"]), s(&["objects.img"])],
                "one byte of objects.img's payload flipped".into(),
            )
        }
        Damage::ManifestByte => {
            let len = file_len(&manifest);
            flip_byte(&manifest, FRAME_HEADER + (len - FRAME_HEADER) / 2);
            (
                vec![s(&["corrupt", "checksum"]), s(&["manifest.img"])],
                "one byte of manifest.img's payload flipped".into(),
            )
        }
        Damage::ChunkByte => {
            let len = file_len(&chunk);
            flip_byte(&chunk, CHUNK_HEADER + (len - CHUNK_HEADER) / 2);
            (
                vec![s(&["corrupt", "checksum"]), vec![chunk_name.clone()]],
                format!("one byte of chunk {chunk_name} flipped"),
            )
        }
        Damage::ObjectsTruncated => {
            let len = file_len(&objects);
            truncate_to(&objects, (len / 2) as u64);
            (
                vec![s(&["truncated"]), s(&["objects.img"])],
                "objects.img truncated to half".into(),
            )
        }
        Damage::ChunkTruncated => {
            let len = file_len(&chunk);
            truncate_to(&chunk, (CHUNK_HEADER + (len - CHUNK_HEADER) / 2) as u64);
            (
                vec![s(&["truncated"]), vec![chunk_name.clone()]],
                format!("chunk {chunk_name} truncated to half its data"),
            )
        }
        Damage::ManifestVersion2 => {
            let mut b = fs::read(&manifest).expect("read manifest");
            b[8..10].copy_from_slice(&2u16.to_le_bytes());
            fs::write(&manifest, b).expect("write manifest");
            (
                vec![s(&["not supported"]), s(&["version 2"])],
                "manifest.img format version set to 2".into(),
            )
        }
        Damage::ManifestMissing => {
            fs::remove_file(&manifest).expect("remove manifest");
            (vec![s(&["incomplete"])], "manifest.img deleted".into())
        }
        Damage::ChunkMissing => {
            fs::remove_file(&chunk).expect("remove chunk");
            (
                vec![s(&["missing"]), vec![chunk_name.clone()]],
                format!("chunk {chunk_name} deleted"),
            )
        }
    }
}

fn missing_words(text: &str, groups: &[Vec<String>]) -> Vec<String> {
    let low = text.to_lowercase();
    groups
        .iter()
        .filter(|g| !g.iter().any(|w| low.contains(&w.to_lowercase())))
        .map(|g| g.join("\"/\""))
        .collect()
}

fn corrupt_image(damage: Damage) {
    let si = shared_image("multiproc");
    let tmp = image_dir("corrupt");
    let dir = tmp.path().join("img");
    copy_tree(&si.dir, &dir);
    let (words, what) = damage_image(&dir, damage);
    let tids = si.tids();
    let journal = journal_dir();

    let watch = ForkWatch::start();
    let out = run_cmd_reliably(&mut with_env(restore_cmd(&dir), journal.path(), None));
    let forks = watch.stop();
    let created: Vec<String> = forks
        .iter()
        .filter(|e| tids.contains(&e.child_pid) || tids.contains(&e.child_tgid))
        .map(|e| format!("{e:?}"))
        .collect();
    // whatever happened, free the pids for the next test
    let left = wait_gone(&tids, Duration::from_secs(3));

    let mut problems = Vec::new();
    if code(&out) != Some(4) {
        problems.push(format!(
            "restore: expected exit code 4 (unusable image), got {:?}",
            out.status
        ));
    }
    let err = stderr_of(&out);
    let miss = missing_words(&err, &words);
    if !miss.is_empty() {
        problems.push(format!("restore: stderr lacks \"{}\"", miss.join("\", \"")));
    }
    if !created.is_empty() {
        problems.push(format!(
            "restore created tasks with the image's pids before refusing the image: {}",
            created.join(", ")
        ));
    }
    if !left.is_empty() {
        problems.push(format!(
            "tasks of the image left behind: {}",
            describe(&left)
        ));
    }
    let insp = run_cmd_reliably(&mut with_env(
        {
            let mut c = Command::new(stasis());
            c.args(["inspect", "--verify", "--dir"]).arg(&dir);
            c
        },
        journal.path(),
        None,
    ));
    if code(&insp) != Some(4) {
        problems.push(format!(
            "inspect --verify: expected exit code 4, got {:?}",
            insp.status
        ));
    }
    let miss = missing_words(&stderr_of(&insp), &words);
    if !miss.is_empty() {
        problems.push(format!(
            "inspect --verify: stderr lacks \"{}\"",
            miss.join("\", \"")
        ));
    }
    assert!(
        problems.is_empty(),
        "image with {what}:\n  - {}\n--- restore ---\n{}\n--- inspect --verify ---\n{}",
        problems.join("\n  - "),
        show(&out),
        show(&insp)
    );
    // the shared image itself is untouched
    let changed = si.unchanged();
    assert!(changed.is_empty(), "{changed:?}");
}

macro_rules! corrupt_image_tests {
    ($($name:ident => $damage:expr),* $(,)?) => {$(
        /// A damaged image is refused (exit 4) before any task is created.
        #[test]
        fn $name() {
            let _g = serial();
            corrupt_image($damage);
        }
    )*};
}

corrupt_image_tests!(
    corrupt_objects_byte => Damage::ObjectsByte,
    corrupt_manifest_byte => Damage::ManifestByte,
    corrupt_chunk_byte => Damage::ChunkByte,
    truncated_objects => Damage::ObjectsTruncated,
    truncated_chunk => Damage::ChunkTruncated,
    manifest_version_2 => Damage::ManifestVersion2,
    missing_manifest => Damage::ManifestMissing,
    missing_chunk => Damage::ChunkMissing,
);

// ---------------------------------------------------------------------------
// 6. pid in use

/// Restoring while the original tree still runs: exit 5 naming the pid; the running tree is
/// not disturbed.
#[test]
fn restore_refuses_pid_in_use() {
    let _g = serial();
    let w = Workload::start("multiproc", &[]);
    thread::sleep(SETTLE);
    let img = image_dir("pid-in-use");
    let dir = img.path().join("img");
    let journal = journal_dir();
    let out = run_cmd_reliably(&mut with_env(
        checkpoint_cmd(w.pid, &dir, &["--leave-running"]),
        journal.path(),
        None,
    ));
    assert!(
        out.status.success(),
        "checkpoint --leave-running failed\n{}",
        show(&out)
    );
    thread::sleep(Duration::from_millis(50));
    let before = tree_state(w.pid);
    let out = run_cmd_reliably(&mut with_env(restore_cmd(&dir), journal.path(), None));
    let err = stderr_of(&out);
    assert_eq!(
        code(&out),
        Some(5),
        "restore over a running tree: expected exit code 5\n{}",
        show(&out)
    );
    assert!(
        err.contains(&format!("pid {} ", w.pid)) && err.contains("in use"),
        "restore: stderr should say pid {} is in use\n{}",
        w.pid,
        show(&out)
    );
    let d = diff_states(&before, &tree_state(w.pid));
    assert!(d.is_empty(), "the running tree changed: {d:#?}");
    w.verify().unwrap_or_else(|e| panic!("original tree: {e}"));
}

// ---------------------------------------------------------------------------
// 7. --force

/// A --dir holding image files (a stray `*.img`, or an earlier image) is refused without
/// --force — exit 1, nothing touched, tree running — and its image files are replaced with it;
/// other tools' files (notes.txt) are left alone either way.
#[test]
fn checkpoint_nonempty_dir_needs_force() {
    let _g = serial();
    let w = Workload::start("counter", &[]);
    thread::sleep(SETTLE);
    let img = image_dir("force");
    let dir = img.path().join("img");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("notes.txt"), b"not an image\n").unwrap();
    fs::write(dir.join("stray.img"), b"not an image either\n").unwrap();
    let journal = journal_dir();
    let ckpt = |extra: &[&str]| {
        let mut args = vec!["--leave-running"];
        args.extend_from_slice(extra);
        run_cmd_reliably(&mut with_env(
            checkpoint_cmd(w.pid, &dir, &args),
            journal.path(),
            None,
        ))
    };
    let inspect_ok = || {
        let out = run_cmd_reliably(&mut with_env(
            {
                let mut c = Command::new(stasis());
                c.args(["inspect", "--verify", "--dir"]).arg(&dir);
                c
            },
            journal.path(),
            None,
        ));
        assert!(out.status.success(), "inspect --verify\n{}", show(&out));
    };

    for round in ["a stray image file", "an earlier image"] {
        let before_dir = snapshot_tree(&dir);
        let before = tree_state(w.pid);
        let out = ckpt(&[]);
        assert_eq!(
            code(&out),
            Some(1),
            "{round}: checkpoint into a non-empty dir without --force: expected exit 1\n{}",
            show(&out)
        );
        assert!(
            stderr_of(&out).contains("--force"),
            "{round}: the message should say to pass --force\n{}",
            show(&out)
        );
        let d = diff_trees(&before_dir, &snapshot_tree(&dir));
        assert!(
            d.is_empty(),
            "{round}: refused checkpoint changed the dir: {d:?}"
        );
        let d = diff_states(&before, &tree_state(w.pid));
        assert!(
            d.is_empty(),
            "{round}: refused checkpoint changed the tree: {d:?}"
        );

        let out = ckpt(&["--force"]);
        assert!(
            out.status.success(),
            "{round}: checkpoint --force into a non-empty dir failed\n{}",
            show(&out)
        );
        assert_eq!(
            fs::read(dir.join("notes.txt")).unwrap(),
            b"not an image\n",
            "{round}: --force must leave other tools' files alone"
        );
        assert!(
            !dir.join("stray.img").exists(),
            "{round}: --force should have removed the old image files"
        );
        assert!(
            dir.join("manifest.img").exists(),
            "{round}: no manifest.img"
        );
        if round == "an earlier image" {
            let after_dir = snapshot_tree(&dir);
            assert_ne!(
                before_dir.get(Path::new("manifest.img")),
                after_dir.get(Path::new("manifest.img")),
                "{round}: the manifest was not rewritten"
            );
        }
        inspect_ok();
    }
    assert!(common::pid_alive(w.pid), "tree gone after --leave-running");
    w.verify()
        .unwrap_or_else(|e| panic!("counter after the checkpoints: {e}"));
}

// ---------------------------------------------------------------------------
// 8. inspect --json

fn inspect_json(dir: &Path, verify: bool) -> Value {
    let mut c = Command::new(stasis());
    c.args(["inspect", "--json", "--dir"]).arg(dir);
    if verify {
        c.arg("--verify");
    }
    let out = run_cmd_reliably(&mut c);
    assert!(
        out.status.success(),
        "inspect --json failed\n{}",
        show(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("inspect --json: not JSON ({e})\n{}", show(&out)))
}

fn as_i64(v: &Value, what: &str) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{what}: expected a number, found {v}"))
}

fn as_arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array, found {v}"))
}

fn as_str<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {v}"))
}

/// `inspect --json` shows the root pid, every process with its threads (tids), mappings and
/// fds, as the tree was.
#[test]
fn inspect_json_structure() {
    let _g = serial();
    for name in ["threads", "multiproc"] {
        let si = shared_image(name);
        let j = inspect_json(&si.dir, true);
        let ctx = format!("inspect --json of the {name} image");
        assert_eq!(as_i64(&j["format_version"], "format_version"), 1, "{ctx}");
        assert_eq!(as_i64(&j["root_pid"], "root_pid"), si.root as i64, "{ctx}");
        assert_eq!(
            j["verified"], j["chunks"],
            "{ctx}: --verify should report every chunk verified"
        );
        let procs = as_arr(&j["processes"], "processes");
        let pids: BTreeSet<i32> = procs
            .iter()
            .map(|p| as_i64(&p["pid"], "pid") as i32)
            .collect();
        let want: BTreeSet<i32> = si.tasks.keys().copied().collect();
        assert_eq!(pids, want, "{ctx}: processes");
        assert_eq!(
            as_i64(&procs[0]["pid"], "pid") as i32,
            si.root,
            "{ctx}: the root comes first"
        );
        for p in procs {
            let pid = as_i64(&p["pid"], "pid") as i32;
            let ppid = as_i64(&p["ppid"], "ppid") as i32;
            if pid != si.root {
                assert!(
                    want.contains(&ppid),
                    "{ctx}: pid {pid}'s parent {ppid} is not in the tree"
                );
            }
            let tids: BTreeSet<i32> = as_arr(&p["threads"], "threads")
                .iter()
                .map(|t| as_i64(&t["tid"], "tid") as i32)
                .collect();
            assert_eq!(tids, si.tasks[&pid], "{ctx}: threads of pid {pid}");
            assert_eq!(
                as_i64(&p["threads"][0]["tid"], "tid") as i32,
                pid,
                "{ctx}: the leader thread comes first"
            );
            let exe = as_str(&p["exe"], "exe");
            assert!(exe.ends_with(&format!("/{name}")), "{ctx}: exe {exe}");
            let maps = as_arr(&p["mappings"], "mappings");
            let mut stored = 0;
            for m in maps {
                let start = as_str(&m["start"], "start");
                let end = as_str(&m["end"], "end");
                let (s, e) = (
                    u64::from_str_radix(start.trim_start_matches("0x"), 16).expect("hex start"),
                    u64::from_str_radix(end.trim_start_matches("0x"), 16).expect("hex end"),
                );
                assert!(
                    s < e && s % 4096 == 0 && e % 4096 == 0,
                    "{ctx}: mapping {m}"
                );
                assert_eq!(as_str(&m["prot"], "prot").len(), 3, "{ctx}: prot of {m}");
                as_str(&m["kind"], "kind");
                stored += as_i64(&m["stored_pages"], "stored_pages");
            }
            assert!(stored > 0, "{ctx}: pid {pid} has no stored pages");
            let paths: Vec<&str> = maps.iter().map(|m| as_str(&m["path"], "path")).collect();
            for want_path in [exe, "[stack]", "[vdso]"] {
                assert!(
                    paths.contains(&want_path),
                    "{ctx}: pid {pid} has no mapping of {want_path}: {paths:?}"
                );
            }
            assert_eq!(
                as_i64(&p["stored_bytes"], "stored_bytes"),
                stored * 4096,
                "{ctx}: stored_bytes of pid {pid}"
            );
            let fds: BTreeMap<i64, &Value> = as_arr(&p["fds"], "fds")
                .iter()
                .map(|f| (as_i64(&f["fd"], "fd"), f))
                .collect();
            let what = |fd: i64| {
                fds.get(&fd)
                    .map(|f| as_str(&f["what"], "what").to_string())
                    .unwrap_or_else(|| panic!("{ctx}: pid {pid} has no fd {fd}: {fds:?}"))
            };
            assert!(what(0).contains("/dev/null"), "{ctx}: fd 0 is {}", what(0));
            for fd in [1, 2] {
                assert!(
                    what(fd).ends_with("/out.log"),
                    "{ctx}: fd {fd} is {}",
                    what(fd)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 9. an image written by an earlier build

/// The fixture `tests/fixtures/image-v1/` is an image of format version 1, written once by
/// the build of 2026-11 (stasis 0.1.0) and committed as is, so that every later build proves
/// it still reads version-1 images. It was made like this (as root):
///
/// ```sh
/// D=/tmp/stasis-fixture-v1; mkdir -p $D/ctl
/// gcc -O1 -g -pthread -Wall -Werror -o $D/counter workloads/counter.c workloads/common.c -lrt
/// cd $D/ctl && setsid $D/counter $D/ctl </dev/null >>$D/ctl/out.log 2>&1 &
/// sleep 0.5
/// stasis checkpoint --pid $(cat $D/ctl/ready) --compress \
///     --dir crates/stasis-cli/tests/fixtures/image-v1
/// ```
///
/// NEVER regenerate it (that would defeat its purpose), except when the format version
/// changes: then keep this one, add an `image-vN` fixture, and decide explicitly what the new
/// build must do with version-1 images. Its binary path is machine-specific, so it is only
/// inspected and verified here, not restored.
#[test]
fn fixture_image_v1_still_readable() {
    let _g = serial();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/image-v1");
    let manifest = fs::read(dir.join("manifest.img")).expect("read the fixture's manifest.img");
    assert_eq!(&manifest[..8], b"STASISIM", "fixture manifest magic");
    assert_eq!(
        u16::from_le_bytes([manifest[8], manifest[9]]),
        1,
        "fixture manifest header version"
    );
    let root = manifest_root_pid(&manifest[FRAME_HEADER..]);

    let j = inspect_json(&dir, true);
    assert_eq!(as_i64(&j["format_version"], "format_version"), 1);
    assert_eq!(
        as_i64(&j["root_pid"], "root_pid"),
        root,
        "root pid (from manifest.img)"
    );
    assert!(as_i64(&j["chunks"], "chunks") > 0);
    assert_eq!(
        j["verified"], j["chunks"],
        "--verify should verify every chunk"
    );
    let p = &as_arr(&j["processes"], "processes")[0];
    assert_eq!(as_i64(&p["pid"], "pid"), root);
    let exe = as_str(&p["exe"], "exe");
    assert!(exe.ends_with("/counter"), "exe {exe}");
    assert_eq!(as_i64(&p["threads"][0]["tid"], "tid"), root);
    let stored: Vec<&Value> = as_arr(&p["mappings"], "mappings")
        .iter()
        .filter(|m| m["stored_pages"].as_i64().unwrap_or(0) > 0)
        .collect();
    assert!(!stored.is_empty(), "no mapping with stored pages: {p}");
    // counter's 1 MiB heap pattern
    assert!(
        as_i64(&p["stored_bytes"], "stored_bytes") >= 1 << 20,
        "stored_bytes {}",
        p["stored_bytes"]
    );
}

/// `root_pid` (field 4, varint) of a Manifest protobuf payload, decoded by hand.
fn manifest_root_pid(mut b: &[u8]) -> i64 {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            v |= ((x & 0x7f) as u64) << shift;
            if x & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint too long");
    }
    let mut root = None;
    while !b.is_empty() {
        let key = varint(&mut b);
        match key & 7 {
            0 => {
                let v = varint(&mut b);
                if key >> 3 == 4 {
                    root = Some(v as i32 as i64);
                }
            }
            1 => b = &b[8..],
            2 => {
                let n = varint(&mut b) as usize;
                b = &b[n..];
            }
            5 => b = &b[4..],
            t => panic!("manifest: unexpected wire type {t}"),
        }
    }
    root.expect("manifest has a root_pid")
}

/// Harness self-test: the process-events watch used by the corrupt-image tests really sees
/// process creation (otherwise "no task was created" would be vacuous).
#[test]
fn harness_fork_watch_sees_children() {
    let _g = serial();
    let watch = ForkWatch::start();
    let child = Background::spawn(&mut Command::new("true"));
    let pid = child.pid();
    let (out, _) = child.wait(Duration::from_secs(10));
    assert!(out.status.success());
    let events = watch.stop();
    let me = std::process::id() as i32;
    assert!(
        events
            .iter()
            .any(|e| e.child_pid == pid && e.child_tgid == pid && e.parent_tgid == me),
        "no fork event for child {pid} of {me}: {events:?}"
    );
}
