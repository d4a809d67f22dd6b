//! The partition harness: runs `stasis run/ps/checkpoint --name/restore/rm` under time
//! limits with only stdio open, and workloads as a partition's first process (see
//! `tests/partition.rs` for the conventions: host CTL_DIR, or a private `/dev/shm/ctl`).

use super::{workload_bin, Background, RESULT_TIMEOUT};
use serde_json::Value;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Let a workload run a little before it is checkpointed / verified.
pub const SETTLE: Duration = Duration::from_millis(200);
/// Time limits of the stasis commands (all normally take well under a second).
pub const T_RUN: Duration = Duration::from_secs(30);
pub const T_CHECKPOINT: Duration = Duration::from_secs(15);
pub const T_RESTORE: Duration = Duration::from_secs(30);
pub const T_QUICK: Duration = Duration::from_secs(15);
/// Time a partition gets to reach a state (ended by a checkpoint, exited after verifying).
pub const T_STATE: Duration = Duration::from_secs(10);
/// Where the v2 hierarchy keeps the partitions' groups (freezing goes through it).
pub const CG_V2: &str = "/sys/fs/cgroup/unified/stasis";

// ---------------------------------------------------------------------------
// running stasis

/// What a stasis command did.
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub what: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        !self.timed_out && self.code == Some(0)
    }

    pub fn show(&self) -> String {
        format!(
            "`{}`: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            if self.timed_out {
                format!(
                    "did not finish within {:?} (killed with its process group)",
                    self.elapsed
                )
            } else {
                format!("exit code {:?} after {:?}", self.code, self.elapsed)
            },
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// A `stasis` command (with `--root` when given) that starts with only stdio open and in a
/// process group of its own.
pub fn stasis_cmd(root: Option<&Path>, args: &[&str]) -> Command {
    let mut c = Command::new(super::stasis());
    if let Some(r) = root {
        c.arg("--root").arg(r);
    }
    c.args(args);
    c.env_remove("STASIS_FAILPOINTS");
    c.process_group(0);
    // SAFETY: close_range(2) is async-signal-safe; nothing else runs in the child.
    unsafe {
        c.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    c
}

/// Run `cmd` ≤ `timeout`; on timeout a watchdog kills its whole process group (what it
/// forked — a checkpointer holding our output pipes — goes too, so the wait can end).
pub fn exec(mut cmd: Command, timeout: Duration) -> Out {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let what = format!(
        "stasis {}",
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let start = Instant::now();
    let bg = Background::spawn(&mut cmd);
    let pgid = bg.pid();
    let done = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicBool::new(false));
    let dog = {
        let (done, fired) = (done.clone(), fired.clone());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() >= timeout {
                    fired.store(true, Ordering::SeqCst);
                    // SAFETY: kill(2) of the process group we created (pgid = the command's
                    // pid > 1).
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (out, in_time) = bg.wait(timeout + Duration::from_secs(30));
    done.store(true, Ordering::SeqCst);
    let _ = dog.join();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        timed_out: fired.load(Ordering::SeqCst) || !in_time,
        elapsed: start.elapsed(),
        what,
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The partitions of one test: a root directory of its own, and every partition name used
/// (removed with `stasis rm -f` when the guard goes, whatever happened).
pub struct Parts {
    pub root: tempfile::TempDir,
    pub names: std::cell::RefCell<Vec<String>>,
}

impl Parts {
    pub fn new(label: &str) -> Parts {
        let root = tempfile::Builder::new()
            .prefix(&format!("stasis-part-{label}-"))
            .tempdir()
            .expect("create the partition root");
        Parts {
            root,
            names: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    pub fn track(&self, name: &str) {
        let mut n = self.names.borrow_mut();
        if !n.iter().any(|x| x == name) {
            n.push(name.to_string());
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        stasis_cmd(Some(self.path()), args)
    }

    pub fn exec(&self, args: &[&str], timeout: Duration) -> Out {
        exec(self.cmd(args), timeout)
    }

    /// `stasis run --name NAME OPTS... -- CMD...`: the host pid it prints.
    pub fn run(&self, name: &str, opts: &[&str], cmd: &[&str]) -> Result<i32, String> {
        self.track(name);
        let mut args = vec!["run", "--name", name];
        args.extend_from_slice(opts);
        args.push("--");
        args.extend_from_slice(cmd);
        let out = self.exec(&args, T_RUN);
        if !out.ok() {
            return Err(format!("run failed: {}\n{}", out.show(), self.logs(name)));
        }
        pid_line(&out)
    }

    /// `stasis checkpoint --name NAME --dir DIR EXTRA...` (the caller judges the result).
    pub fn checkpoint(&self, name: &str, dir: &Path, extra: &[&str]) -> Out {
        let d = dir.to_string_lossy().into_owned();
        let mut args = vec!["checkpoint", "--name", name, "--dir", &d];
        args.extend_from_slice(extra);
        self.exec(&args, T_CHECKPOINT)
    }

    /// Checkpoint that ends the partition; Ok once `ps` says it is checkpointed and its first
    /// process is gone.
    pub fn checkpoint_kill(&self, name: &str, dir: &Path) -> Result<(), String> {
        let pid = self.running_pid(name);
        let out = self.checkpoint(name, dir, &[]);
        if !out.ok() {
            return Err(format!(
                "checkpoint failed: {}\n{}",
                out.show(),
                self.logs(name)
            ));
        }
        let st = self.wait_not_running(name, T_STATE);
        if st.as_deref() != Some("checkpointed") {
            return Err(format!(
                "after checkpoint --name {name} (kill), ps says state {st:?}, expected \"checkpointed\"\n{}",
                self.logs(name)
            ));
        }
        if let Some(p) = pid {
            let left = super::wait_gone(&[p], T_STATE);
            if !left.is_empty() {
                return Err(format!(
                    "after checkpoint --name {name} (kill), its first process {p} is still there"
                ));
            }
        }
        Ok(())
    }

    /// `stasis restore --dir DIR [--name NAME]`: the host pid it prints.
    pub fn restore(&self, dir: &Path, name: Option<&str>) -> Result<i32, String> {
        let d = dir.to_string_lossy().into_owned();
        let mut args = vec!["restore", "--dir", &d];
        if let Some(n) = name {
            self.track(n);
            args.extend_from_slice(&["--name", n]);
        }
        let out = self.exec(&args, T_RESTORE);
        if !out.ok() {
            return Err(format!(
                "restore failed: {}\n{}",
                out.show(),
                name.map(|n| self.logs(n)).unwrap_or_default()
            ));
        }
        pid_line(&out)
    }

    pub fn rm_f(&self, name: &str) -> Out {
        self.exec(&["rm", "-f", name], T_QUICK)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.exec(args, T_QUICK);
        assert!(out.ok(), "{}", out.show());
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON: {e}\n{}", out.what, out.show()))
    }

    /// `ps --json`.
    pub fn ps(&self) -> Vec<Value> {
        match self.json(&["ps", "--json"]) {
            Value::Array(v) => v,
            other => panic!("ps --json is not an array: {other}"),
        }
    }

    pub fn ps_row(&self, name: &str) -> Option<Value> {
        self.ps().into_iter().find(|r| r["name"] == name)
    }

    pub fn state(&self, name: &str) -> Option<String> {
        self.ps_row(name)
            .and_then(|r| r["state"].as_str().map(str::to_string))
    }

    pub fn running_pid(&self, name: &str) -> Option<i32> {
        self.ps_row(name)
            .filter(|r| r["state"] == "running")
            .and_then(|r| r["pid"].as_i64())
            .map(|p| p as i32)
    }

    /// Wait ≤ `timeout` until `ps` no longer shows the partition running; its state then.
    pub fn wait_not_running(&self, name: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.state(name);
            if st.as_deref() != Some("running") && st.as_deref() != Some("starting") {
                return st;
            }
            if Instant::now() >= deadline {
                return st;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `stats NAME --json`.
    pub fn stats(&self, name: &str) -> Value {
        self.json(&["stats", name, "--json"])
    }

    pub fn dir_of(&self, name: &str) -> PathBuf {
        self.path().join("partitions").join(name)
    }

    /// The partition's record (`partition.json`).
    pub fn record(&self, name: &str) -> Value {
        let p = self.dir_of(name).join("partition.json");
        let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
    }

    /// Tails of the partition's output and monitor logs, for messages.
    pub fn logs(&self, name: &str) -> String {
        let d = self.dir_of(name);
        let read = |f: &str| fs::read_to_string(d.join(f)).unwrap_or_else(|e| format!("({e})"));
        format!(
            "--- {name}: output.log (tail) ---\n{}\n--- {name}: monitor.log (tail) ---\n{}",
            tail(&read("output.log"), 30),
            tail(&read("monitor.log"), 15)
        )
    }
}

impl Parts {
    /// Monitors (`stasis --root ROOT __monitor ...`) of this root still alive.
    pub fn monitors(&self) -> Vec<(i32, String)> {
        let root = format!("--root {} __monitor", self.path().display());
        procs_with_cmdline(&root)
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        for n in self.names.borrow().iter() {
            let out = self.rm_f(n);
            let gone = out.ok() || out.stderr.contains("no partition named");
            if !gone {
                eprintln!("cleanup: {}", out.show());
            }
        }
        // A monitor still finishing its partition's end writes under the root: let it go
        // before the root is removed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.monitors().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let left = self.monitors();
        if !left.is_empty() {
            eprintln!("cleanup: monitors still running: {left:?}");
        }
        if std::env::var_os("STASIS_KEEP").is_some() {
            self.root.disable_cleanup(true);
            eprintln!("keeping partition root {}", self.root.path().display());
        }
    }
}

pub fn pid_line(out: &Out) -> Result<i32, String> {
    match out.stdout.lines().collect::<Vec<_>>().as_slice() {
        [one] => one
            .trim()
            .parse()
            .map_err(|_| format!("stdout is not a pid: {}", out.show())),
        _ => Err(format!(
            "stdout must be exactly one line (the host pid): {}",
            out.show()
        )),
    }
}

/// A new image directory `<tempdir>/img` (not created: checkpoint does it).
pub fn image(label: &str) -> (tempfile::TempDir, PathBuf) {
    let mut t = tempfile::Builder::new()
        .prefix(&format!("stasis-part-img-{label}-"))
        .tempdir()
        .expect("create image dir");
    if std::env::var_os("STASIS_KEEP").is_some() {
        t.disable_cleanup(true);
    }
    let p = t.path().join("img");
    (t, p)
}

/// `NSpid` of a host pid (outermost first).
pub fn nspid(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("NSpid:")).map(|l| {
                l["NSpid:".len()..]
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

pub fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim_end().to_string())
}

/// Wait ≤ `timeout` for file `p`; its trimmed content.
pub fn wait_file(p: &Path, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = read_trim(p) {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Processes of the partition's cgroup (v2 hierarchy); None if the group does not exist.
pub fn cgroup_procs(name: &str) -> Option<Vec<i32>> {
    let p = Path::new(CG_V2).join(name).join("cgroup.procs");
    fs::read_to_string(p)
        .ok()
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// `cgroup.events` of the partition's v2 group.
pub fn cgroup_events(name: &str) -> Result<String, String> {
    let p = Path::new(CG_V2).join(name).join("cgroup.events");
    fs::read_to_string(&p).map_err(|e| format!("read {}: {e}", p.display()))
}

/// Live processes running `exe` inside a pid namespace of their own (NSpid with 2 levels).
pub fn namespaced_procs_of(exe: &Path) -> Vec<i32> {
    let exe = fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
    super::all_procs()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| fs::read_link(format!("/proc/{}/exe", p.pid)).ok().as_ref() == Some(&exe))
        .filter(|p| nspid(p.pid).len() == 2)
        .map(|p| p.pid)
        .collect()
}

/// Processes whose command line mentions `needle` (e.g. a monitor of a given root).
pub fn procs_with_cmdline(needle: &str) -> Vec<(i32, String)> {
    super::all_procs()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter_map(|p| {
            let c = fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains(needle).then_some((p.pid, c))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// control directories

/// A host control directory.
pub struct Ctl {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub label: String,
}

impl Ctl {
    pub fn new(label: &str) -> Ctl {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("stasis-part-ctl-{label}-"))
            .tempdir()
            .expect("create CTL_DIR");
        if std::env::var_os("STASIS_KEEP").is_some() {
            dir.disable_cleanup(true);
        }
        let path = fs::canonicalize(dir.path()).expect("canonicalize CTL_DIR");
        Ctl {
            dir,
            path,
            label: label.to_string(),
        }
    }

    pub fn arg(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    pub fn file(&self, f: &str) -> PathBuf {
        self.path.join(f)
    }

    /// Wait for `ready`; it must name pid 1 (the workload is the partition's first process).
    pub fn wait_ready(&self, parts: &Parts, name: &str) -> Result<(), String> {
        match wait_file(&self.file("ready"), super::READY_TIMEOUT) {
            Some(s) if s == "1" => Ok(()),
            Some(s) => Err(format!(
                "{}: ready says pid {s:?}, expected 1 (pid 1 of the partition)",
                self.label
            )),
            None => Err(format!(
                "{}: never became ready\n{}",
                self.label,
                parts.logs(name)
            )),
        }
    }

    /// Touch `verify` and wait for `result`: Ok on PASS.
    pub fn verify(&self, parts: &Parts, name: &str) -> Result<(), String> {
        fs::write(self.file("verify"), "1\n").map_err(|e| format!("create verify: {e}"))?;
        match wait_file(&self.file("result"), RESULT_TIMEOUT) {
            Some(s) if s == "PASS" => Ok(()),
            Some(s) => Err(format!("{}: {s}\n{}", self.label, parts.logs(name))),
            None => Err(format!(
                "{}: no result within {RESULT_TIMEOUT:?} of verify (ps state {:?})\n{}",
                self.label,
                parts.state(name),
                parts.logs(name)
            )),
        }
    }
    /// Remove `verify` and `result` left by an earlier verification.
    pub fn reset(&self) {
        let _ = fs::remove_file(self.file("verify"));
        let _ = fs::remove_file(self.file("result"));
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("kept CTL_DIR of {}: {}", self.label, self.path.display());
        }
    }
}

/// The command line of workload `wl` with a private CTL (`/dev/shm/ctl` of the partition).
pub fn private_ctl_cmd(wl: &str) -> Vec<String> {
    let bin = workload_bin(wl);
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "mkdir -p /dev/shm/ctl && exec '{}' /dev/shm/ctl",
            bin.display()
        ),
    ]
}

pub fn private_ctl(hostpid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{hostpid}/root/dev/shm/ctl"))
}

pub fn wait_private_ready(parts: &Parts, name: &str, hostpid: i32) -> Result<(), String> {
    match wait_file(&private_ctl(hostpid).join("ready"), super::READY_TIMEOUT) {
        Some(s) if s == "1" => Ok(()),
        Some(s) => Err(format!("{name}: ready says pid {s:?}, expected 1")),
        None => Err(format!("{name}: never became ready\n{}", parts.logs(name))),
    }
}

/// Ask the workload of partition `name` (first process `hostpid`) with a private CTL to
/// verify; its verdict is its `result` while it can be read, else its exit status.
pub fn verify_private(parts: &Parts, name: &str, hostpid: i32) -> Result<(), String> {
    let ctl = private_ctl(hostpid);
    fs::write(ctl.join("verify"), "1\n")
        .map_err(|e| format!("{name}: create {}/verify: {e}", ctl.display()))?;
    let deadline = Instant::now() + RESULT_TIMEOUT;
    loop {
        if let Some(r) = read_trim(&ctl.join("result")) {
            if r == "PASS" {
                return Ok(());
            }
            return Err(format!("{name}: {r}\n{}", parts.logs(name)));
        }
        if let Some(row) = parts.ps_row(name) {
            // (until the monitor has recorded the end, ps shows "exited" with no exit status)
            let recorded = !row["exit_code"].is_null() || !row["exit_signal"].is_null();
            if row["state"] != "running" && recorded {
                if row["exit_code"] == 0 {
                    return Ok(());
                }
                return Err(format!(
                    "{name}: ended without PASS (state {}, exit code {}, signal {})\n{}",
                    row["state"],
                    row["exit_code"],
                    row["exit_signal"],
                    parts.logs(name)
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{name}: no verdict within {RESULT_TIMEOUT:?} of verify\n{}",
                parts.logs(name)
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn report(failures: &[String], what: &str) {
    assert!(
        failures.is_empty(),
        "{what}: {} failure(s):\n\n{}",
        failures.len(),
        failures.join("\n\n==========\n\n")
    );
}

pub fn workload_kill_roundtrip(parts: &Parts, wl: &str, args: &[&str]) -> Result<(), String> {
    let name = format!("wl-{wl}");
    let ctl = Ctl::new(wl);
    let bin = workload_bin(wl);
    let mut cmd = vec![bin.to_string_lossy().into_owned(), ctl.arg()];
    cmd.extend(args.iter().map(|s| s.to_string()));
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let res = (|| {
        parts.run(&name, &[], &cmd)?;
        ctl.wait_ready(parts, &name)?;
        thread::sleep(SETTLE);
        let (_t, img) = image(wl);
        parts.checkpoint_kill(&name, &img)?;
        let pid = parts.restore(&img, None)?;
        let n = nspid(pid);
        if n.len() != 2 || n[1] != 1 {
            return Err(format!(
                "restored first process {pid}: NSpid {n:?}, expected [{pid}, 1]"
            ));
        }
        thread::sleep(SETTLE);
        ctl.verify(parts, &name)
    })();
    let _ = parts.rm_f(&name);
    res.map_err(|e| format!("{wl}: {e}"))
}

/// A workload (`workloads/WL.c` with `args`) as a partition's first process through
/// checkpoint (ending the partition) → restore → verify; panics with what failed.
/// The caller holds [`serial`].
pub fn roundtrip(wl: &str, args: &[&str]) {
    let parts = Parts::new(&format!("p-{wl}"));
    if let Err(e) = workload_kill_roundtrip(&parts, wl, args) {
        panic!("{wl} [partition]: {e}");
    }
}
