//! Checkpoint/restore of real programs and of objects around a tree: a CPython interpreter
//! (`tests/programs/pystate.py`), a bash script forking `sleep` (`tests/programs/loop.sh`),
//! memory that sits in swap (a swapfile the test adds to the host), stdout pipes whose reader
//! is outside the tree (`--inherit-fd`, or `/dev/null` without it), and `mt_load` checkpointed
//! repeatedly while it runs at full CPU.
//!
//! Every test holds the global `SERIAL` lock: they all juggle pids (and one adds host swap).
#![cfg(target_os = "linux")]
#![allow(unsafe_code)]
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::{checkpoint, checkpoint_kill, image_dir, restore, serial, Workload};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Let a workload run a little so the checkpoint catches it mid-loop.
const SETTLE: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// helpers

fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

/// The distribution's `/usr/bin/python3` (a real interpreter, not a version-manager shim),
/// else the first `python3` on PATH.
fn python3() -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in std::iter::once("/usr/bin").chain(path.split(':')) {
        let p = Path::new(dir).join("python3");
        if p.is_file() {
            return p;
        }
    }
    panic!("python3 not found on PATH (Debian: apt-get install python3)");
}

fn bash() -> PathBuf {
    ["/bin/bash", "/usr/bin/bash"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("bash not found in /bin or /usr/bin")
}

/// A pipe (read end, write end), both close-on-exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Collects everything readable from a pipe on a thread until end-of-file.
struct PipeReader {
    data: Arc<Mutex<Vec<u8>>>,
    eof: Arc<AtomicBool>,
}

impl PipeReader {
    fn spawn(r: OwnedFd) -> PipeReader {
        let data = Arc::new(Mutex::new(Vec::new()));
        let eof = Arc::new(AtomicBool::new(false));
        let (d, e) = (data.clone(), eof.clone());
        thread::Builder::new()
            .name("pipe-reader".into())
            .spawn(move || {
                let mut f = fs::File::from(r);
                let mut buf = [0u8; 4096];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => d.lock().unwrap().extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                e.store(true, Ordering::SeqCst);
            })
            .expect("spawn pipe reader");
        PipeReader { data, eof }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data.lock().unwrap()).into_owned()
    }

    fn at_eof(&self) -> bool {
        self.eof.load(Ordering::SeqCst)
    }

    /// Wait until the text read so far contains `needle`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.text().contains(needle)
    }

    /// Wait for end-of-file (every write end closed).
    fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.at_eof() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.at_eof()
    }
}

fn readlink_fd(pid: i32, fd: i32) -> String {
    fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("<readlink /proc/{pid}/fd/{fd}: {e}>"))
}

/// Sum of `Swap:` (kB) over all mappings in /proc/PID/smaps.
fn smaps_swap_kb(pid: i32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/smaps: {e}"));
    s.lines()
        .filter_map(|l| l.strip_prefix("Swap:"))
        .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .sum()
}

/// utime + stime of the whole process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    let rest = &s[s.rfind(')').expect("stat has a comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields after comm: state(0) ppid(1) ... utime(11) stime(12)
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn thread_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// CPU ticks the process uses during `window`.
fn cpu_use(pid: i32, window: Duration) -> u64 {
    let a = cpu_ticks(pid);
    thread::sleep(window);
    cpu_ticks(pid) - a
}

/// `stasis inspect --dir DIR --json`, parsed.
fn inspect_json(dir: &Path) -> serde_json::Value {
    let out = common::run_cmd(
        Command::new(common::stasis())
            .args(["inspect", "--json", "--verify", "--dir"])
            .arg(dir),
    );
    assert!(
        out.status.success(),
        "stasis inspect --json --verify {} failed\n{}",
        dir.display(),
        common::show_output(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stasis inspect --json: bad JSON ({e})\n{}",
            common::show_output(&out)
        )
    })
}

/// Checkpoint (ending the tree), restore, and track the restored root.
fn kill_restore(w: &mut Workload, img: &Path) {
    checkpoint_kill(w, img);
    let (pid, _) = restore(img);
    w.set_pid(pid);
}

/// Checkpoint with --leave-running; panics unless it succeeds and the root still runs.
fn checkpoint_leave(w: &Workload, img: &Path) {
    let out = checkpoint(w.pid, img, &["--leave-running"]);
    assert!(
        out.status.success(),
        "{}: stasis checkpoint --leave-running {} failed\n{}",
        w.name,
        w.pid,
        common::show_output(&out)
    );
    assert!(
        common::pid_alive(w.pid),
        "{}: root {} is gone after checkpoint --leave-running",
        w.name,
        w.pid
    );
}

fn verify_or_panic(w: &Workload, what: &str) {
    if let Err(e) = w.verify() {
        panic!("{} [{what}]: verification failed:\n{e}", w.name);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. CPython

fn start_python() -> Workload {
    let script = programs_dir().join("pystate.py");
    // -u: unbuffered stdout/stderr (nothing sits in stdio buffers across a dump);
    // -I: isolated (no user site, no PYTHON* environment).
    Workload::start_program(
        "pystate",
        &python3(),
        &[OsStr::new("-u"), OsStr::new("-I"), script.as_os_str()],
        &[],
        None,
        None,
    )
}

/// The restored interpreter must be running with both of its threads.
fn assert_python_alive(w: &Workload, when: &str) {
    assert!(
        common::pid_alive(w.pid),
        "pystate {when}: pid {} not alive",
        w.pid
    );
    assert_eq!(
        thread_count(w.pid),
        2,
        "pystate {when}: expected 2 threads (main + worker) in pid {}",
        w.pid
    );
}

/// A CPython interpreter holding a 100k-entry dict, an instance graph, a suspended generator,
/// an 8 MiB bytearray, a file with a mid-file offset and unflushed buffered bytes, a worker
/// thread and a SIGUSR1 handler (see pystate.py): checkpoint (kill), restore, verify.
/// (A "root reap state Exited(11)" in a failure is a raw wait status: killed by SIGSEGV.)
#[test]
fn python_state_kill_restore() {
    let _g = serial();
    let mut w = start_python();
    thread::sleep(SETTLE);
    assert_python_alive(&w, "before checkpoint");
    let img = image_dir("pystate");
    kill_restore(&mut w, &img.path().join("img"));
    thread::sleep(SETTLE);
    assert_python_alive(&w, "after restore");
    verify_or_panic(&w, "kill");
}

/// The same, checkpointing the restored interpreter again and restoring that image.
#[test]
fn python_state_double_roundtrip() {
    let _g = serial();
    let mut w = start_python();
    thread::sleep(SETTLE);
    let img1 = image_dir("pystate");
    kill_restore(&mut w, &img1.path().join("img"));
    thread::sleep(SETTLE);
    assert_python_alive(&w, "after the first restore");
    let img2 = image_dir("pystate");
    kill_restore(&mut w, &img2.path().join("img"));
    thread::sleep(SETTLE);
    assert_python_alive(&w, "after the second restore");
    verify_or_panic(&w, "double");
}

// ---------------------------------------------------------------------------------------------
// 2. bash

/// Last counter value in loop.log (0 if none).
fn loop_log_last(w: &Workload) -> u64 {
    fs::read_to_string(w.ctl_path().join("loop.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

fn start_bash_loop(tick: &str) -> Workload {
    common::reap_comm("sleep");
    let script = programs_dir().join("loop.sh");
    Workload::start_program(
        "loop.sh",
        &bash(),
        &[script.as_os_str()],
        &[tick],
        None,
        None,
    )
}

/// Checkpoint the bash loop; on failure say what the tree looked like and whether it still runs
/// (a refusal must leave it running).
fn checkpoint_bash(w: &Workload, img: &Path, extra: &[&str], what: &str) {
    let tree = w.tree_pids();
    let comms: Vec<String> = tree
        .iter()
        .map(|p| {
            let c = fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            format!("{p} {}", c.trim())
        })
        .collect();
    let out = checkpoint(w.pid, img, extra);
    if !out.status.success() {
        thread::sleep(Duration::from_millis(50));
        panic!(
            "{what}: stasis checkpoint {extra:?} of the bash loop (pid {}) failed; tree just \
             before: {comms:?}; root still running afterwards: {}\n{}",
            w.pid,
            common::pid_alive(w.pid),
            common::show_output(&out)
        );
    }
}

/// A bash loop (`loop.sh`: shell variable, log files, array, trap, `sleep 0.1` children)
/// checkpointed (kill) and restored three times in a row, at varying phases of its
/// fork/exec/wait cycle: a checkpoint may catch a `sleep` child, which is then part of the
/// tree (and must be restored as bash's child). After each restore the log must keep growing;
/// at the end the script checks that its variable continued from its logs.
#[test]
fn bash_loop_three_kill_restores() {
    let _g = serial();
    let mut w = start_bash_loop("0.1");
    let mut caught_children = 0;
    for (round, ms) in [230u64, 170, 290].into_iter().enumerate() {
        thread::sleep(Duration::from_millis(ms));
        if w.tree_pids().len() > 1 {
            caught_children += 1;
        }
        let img = image_dir("loop");
        let dir = img.path().join("img");
        let pids = w.tree_pids();
        checkpoint_bash(&w, &dir, &[], &format!("round {}", round + 1));
        let left = common::wait_gone(&pids, common::GONE_TIMEOUT);
        assert!(
            left.is_empty(),
            "round {}: tree still there after the checkpoint: {left:?}",
            round + 1
        );
        let at_checkpoint = loop_log_last(&w);
        let (pid, _) = restore(&dir);
        w.set_pid(pid);
        let deadline = Instant::now() + Duration::from_secs(3);
        while loop_log_last(&w) <= at_checkpoint && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(
            loop_log_last(&w) > at_checkpoint,
            "round {}: the restored script (pid {pid}) did not append to loop.log within 3 s \
             (last value {at_checkpoint}); tree {:?}\nout.log:\n{}",
            round + 1,
            w.tree_pids(),
            w.out_log()
        );
    }
    eprintln!("bash loop: {caught_children} of 3 checkpoints saw a child process in the tree");
    verify_or_panic(&w, "three kill/restore rounds");
}

/// The fork race made likely: the same script forking `sleep 0.01` a hundred times a second,
/// checkpointed with --leave-running 20 times in a row. A `sleep` child that exits while bash
/// is already frozen cannot be reaped by it: every checkpoint must still succeed (the child is
/// part of the tree or gone, never a reason to fail), and the script must pass afterwards.
#[test]
fn bash_fast_fork_loop_twenty_leave_running_checkpoints() {
    let _g = serial();
    let w = start_bash_loop("0.01");
    let imgs = image_dir("loop-fast");
    for i in 0..20 {
        thread::sleep(Duration::from_millis(13 + 7 * (i % 5)));
        let dir = imgs.path().join(format!("img{i}"));
        checkpoint_bash(
            &w,
            &dir,
            &["--leave-running"],
            &format!("checkpoint {}", i + 1),
        );
        assert!(
            common::pid_alive(w.pid),
            "bash gone after checkpoint {}",
            i + 1
        );
    }
    verify_or_panic(&w, "20 --leave-running checkpoints of a fast fork loop");
}

// ---------------------------------------------------------------------------------------------
// 3. swap (host-global: adds a swapfile to the machine for the duration of the test)

/// A swapfile on the host, active while this lives; swapoff + delete on drop (also when the
/// test panics).
struct SwapFile {
    path: PathBuf,
    active: bool,
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let out = common::run_cmd(cmd);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", common::show_output(&out)))
    }
}

impl SwapFile {
    fn create(size_mib: u64) -> SwapFile {
        // /var/tmp is on a real filesystem (swap on tmpfs is impossible).
        let path = PathBuf::from(format!(
            "/var/tmp/stasis-test-swap-{}.img",
            std::process::id()
        ));
        Self::remove_stale();
        let mut s = SwapFile {
            path: path.clone(),
            active: false,
        };
        let _ = fs::remove_file(&path);
        let make = |use_dd: bool| -> Result<(), String> {
            let _ = fs::remove_file(&path);
            if use_dd {
                sh(Command::new("dd")
                    .arg("if=/dev/zero")
                    .arg(format!("of={}", path.display()))
                    .args(["bs=1M", &format!("count={size_mib}"), "status=none"]))?;
            } else {
                sh(Command::new("fallocate")
                    .args(["-l", &format!("{size_mib}M")])
                    .arg(&path))?;
            }
            sh(Command::new("chmod").arg("600").arg(&path))?;
            sh(Command::new("mkswap").arg("-q").arg(&path))?;
            sh(Command::new("swapon").arg(&path))
        };
        if let Err(e1) = make(false) {
            // some filesystems refuse swap on fallocated (unwritten) extents
            if let Err(e2) = make(true) {
                panic!(
                    "cannot set up a swapfile at {}:\n{e1}\n{e2}",
                    path.display()
                );
            }
        }
        s.active = true;
        s
    }

    /// Swapfiles left by an earlier run that was killed (its pid is gone): swapoff, delete.
    fn remove_stale() {
        let Ok(rd) = fs::read_dir("/var/tmp") else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("stasis-test-swap-")
                .and_then(|s| s.strip_suffix(".img"))
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let _ = sh(Command::new("swapoff").arg(e.path()));
            let _ = fs::remove_file(e.path());
        }
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        if self.active {
            if let Err(e) = sh(Command::new("swapoff").arg(&self.path)) {
                eprintln!("warning: swapoff {} failed: {e}", self.path.display());
            }
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// Memory that is in swap at checkpoint time: `mem_swap` fills 64 MiB private + 8 MiB shared
/// anonymous memory and every other page of 4 MiB more, pushes them out with MADV_PAGEOUT and
/// confirms through its smaps; the test checks /proc/PID/smaps shows the swap too, then
/// checkpoint (kill), restore, verify every byte. Touches host-global state: adds a 256 MiB
/// swapfile in /var/tmp for the duration of the test (removed even on panic).
#[test]
fn host_swapfile_swapped_pages_kill_restore() {
    let _g = serial();
    let _swap = SwapFile::create(256); // dropped after the workload (declared first)
    let mut w = Workload::start("mem_swap", &[]);
    let kb = smaps_swap_kb(w.pid);
    assert!(
        kb >= 32 * 1024,
        "mem_swap (pid {}): /proc/PID/smaps shows only {kb} kB in swap before the checkpoint \
         (expected ≥ 32 MiB)\nout.log:\n{}",
        w.pid,
        w.out_log()
    );
    eprintln!("mem_swap: {kb} kB in swap before the checkpoint");
    let img = image_dir("mem_swap");
    kill_restore(&mut w, &img.path().join("img"));
    thread::sleep(SETTLE);
    verify_or_panic(&w, "swapped pages, kill");
}

// ---------------------------------------------------------------------------------------------
// 4. objects outside the tree: stdout/stderr a pipe read by the test

/// Start `outside` with stdout and stderr one pipe (one open file description) whose read
/// end the test holds. Returns the workload and the pipe's key (`pipe:[INO]`).
fn start_outside(args: &[&str], w_end: &OwnedFd) -> (Workload, String) {
    let bin = common::workload_bin("outside");
    let out = w_end.try_clone().expect("dup pipe write end");
    let err = out.try_clone().expect("dup pipe write end");
    let w = Workload::start_program("outside", &bin, &[], args, Some(out), Some(err));
    let key = readlink_fd(w.pid, 1);
    assert!(
        key.starts_with("pipe:["),
        "outside: fd 1 is {key}, expected our pipe"
    );
    assert_eq!(
        readlink_fd(w.pid, 2),
        key,
        "outside: fd 2 is not the pipe of fd 1"
    );
    (w, key)
}

/// The image's record of pipe `key`: it must be there with the reader outside the tree.
fn assert_external_reader(img: &Path, key: &str) {
    let j = inspect_json(img);
    let pipes = j["pipes"].as_array().expect("inspect: pipes[]");
    let p = pipes
        .iter()
        .find(|p| p["key"] == key)
        .unwrap_or_else(|| panic!("inspect: pipe {key} missing from the image: {pipes:?}"));
    assert_eq!(p["external_reader"], true, "pipe {key}: {p}");
    assert_eq!(p["external_writer"], false, "pipe {key}: {p}");
}

/// `--inherit-fd pipe:[INO]=5`: the restored program's stdout/stderr are the very pipe the
/// test reads (the test's write end, dup2'd to fd 5 of `stasis restore`), and what it writes
/// after the restore arrives there. Checked: the image marks the pipe `external_reader`; after
/// restore fds 1 and 2 link to the same `pipe:[INO]`; the program's own checks pass (fds 0–2
/// same objects and flags, still one description for 1 and 2, sid/pgid unchanged — the root
/// leads its own session, so it is recreated); the test receives the "ready" line exactly once
/// and both "works after restore" lines, then end-of-file when the program exits.
#[test]
fn outside_stdout_pipe_inherit_fd() {
    let _g = serial();
    let (r_end, w_end) = pipe();
    let reader = PipeReader::spawn(r_end);
    let (mut w, key) = start_outside(&[], &w_end);
    assert!(
        reader.wait_for("outside: ready", Duration::from_secs(5)),
        "no ready line on the pipe; got {:?}",
        reader.text()
    );
    let img = image_dir("outside");
    let img = img.path().join("img");
    checkpoint_kill(&w, &img);
    assert_external_reader(&img, &key);
    assert!(
        !reader.at_eof(),
        "the pipe reached end-of-file although the test still holds a write end"
    );

    const FD: i32 = 5;
    let raw = w_end.as_raw_fd();
    let arg = format!("{key}={FD}");
    let (pid, out) = common::restore_with(&img, &["--inherit-fd", &arg], |cmd| {
        // SAFETY: only dup2/fcntl (async-signal-safe) run in the child between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if raw == FD {
                    // already there: just make it survive exec
                    if libc::fcntl(FD, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(raw, FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    w.set_pid(pid);
    drop(w_end); // from now on only the restored program writes to the pipe
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("stasis: note:"),
        "an inherited pipe is not reported as replaced: {stderr}"
    );
    for fd in [1, 2] {
        assert_eq!(
            readlink_fd(pid, fd),
            key,
            "restored pid {pid}: fd {fd} is not the inherited pipe"
        );
    }
    if let Err(e) = w.verify() {
        panic!(
            "outside [--inherit-fd]: verification failed:\n{e}\n--- pipe so far ---\n{}",
            reader.text()
        );
    }
    assert!(
        reader.wait_eof(Duration::from_secs(10)),
        "no end-of-file on the pipe 10 s after the program passed (a write end still open?); \
         got {:?}",
        reader.text()
    );
    let text = reader.text();
    assert_eq!(
        text.matches("outside: ready").count(),
        1,
        "the ready line must arrive exactly once: {text:?}"
    );
    for line in [
        "outside: stdout works after restore\n",
        "outside: stderr works after restore\n",
    ] {
        assert!(
            text.contains(line),
            "missing {line:?} from the restored program on the pipe: {text:?}"
        );
    }
}

/// Without `--inherit-fd`, the write end of the external pipe becomes /dev/null (documented
/// rule): the restored program runs on and passes. Checked: the image marks the pipe
/// `external_reader`; the pipe reaches end-of-file when the checkpoint ends the tree (the test
/// holds no write end) and receives nothing after it; after restore fds 1 and 2 link to
/// /dev/null; the program (`--stdout-now-devnull`) checks that fds 1 and 2 are /dev/null, still
/// write-only with the same O_APPEND/O_NONBLOCK and still one description, that writes to them
/// succeed, that fd 0 is the same /dev/null, and that sid/pgid did not change. `stasis
/// restore` says so on stderr (stderr is not a terminal here), naming the pipe and the
/// `--inherit-fd` that would have reattached it.
#[test]
fn outside_stdout_pipe_without_inherit_goes_to_devnull() {
    let _g = serial();
    let (r_end, w_end) = pipe();
    let reader = PipeReader::spawn(r_end);
    let (mut w, key) = start_outside(&["--stdout-now-devnull"], &w_end);
    drop(w_end);
    assert!(
        reader.wait_for("outside: ready", Duration::from_secs(5)),
        "no ready line on the pipe; got {:?}",
        reader.text()
    );
    let img = image_dir("outside");
    let img = img.path().join("img");
    checkpoint_kill(&w, &img);
    assert!(
        reader.wait_eof(Duration::from_secs(5)),
        "the pipe did not reach end-of-file after the checkpoint ended its only writer"
    );
    let before = reader.text();
    assert_external_reader(&img, &key);
    let (pid, out) = restore(&img);
    w.set_pid(pid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let note = format!(
        "stasis: note: {key} is outside the tree and was not given with --inherit-fd, so the \
         restored tree holds /dev/null (what the tree writes there is discarded) in its place; \
         to reattach it, pass an fd of yours with --inherit-fd '{key}=FD'"
    );
    assert_eq!(
        stderr.matches(&note).count(),
        1,
        "restore must say once that {key} became /dev/null:\n{stderr}"
    );
    for fd in [1, 2] {
        assert_eq!(
            readlink_fd(pid, fd),
            "/dev/null",
            "restored pid {pid}: fd {fd} should be /dev/null (external pipe without --inherit-fd)"
        );
    }
    if let Err(e) = w.verify() {
        panic!(
            "outside [no --inherit-fd]: verification failed (its fds 1 and 2 are /dev/null: \
             see CTL_DIR/result):\n{e}"
        );
    }
    assert_eq!(
        reader.text(),
        before,
        "the pipe received data after end-of-file?"
    );
    assert_eq!(
        before.matches("outside: ready").count(),
        1,
        "the ready line must arrive exactly once: {before:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. mt_load under load

/// State letter of every thread of `pid` ("tid:S" ...).
fn thread_states(pid: i32) -> String {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
        for e in rd.flatten() {
            let tid = e.file_name().to_string_lossy().into_owned();
            let st = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let state = st
                .rfind(')')
                .and_then(|i| st[i + 1..].split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            out.push(format!("{tid}:{state}"));
        }
    }
    out.join(" ")
}

/// mt_load's 8 threads must be running: none stopped (t/T) and burning CPU, ≥ 5 ticks
/// (50 ms of CPU) in 250 ms, or — on a loaded machine — ≥ 10 ticks in a further second.
fn assert_busy(w: &Workload, when: &str) {
    assert_eq!(thread_count(w.pid), 9, "mt_load {when}: thread count");
    let mut t = cpu_use(w.pid, Duration::from_millis(250));
    if t < 5 {
        t = cpu_use(w.pid, Duration::from_secs(1));
        assert!(
            t >= 10,
            "mt_load {when}: only {t} clock ticks of CPU in 1 s: threads not running; thread \
             states: {}; loadavg: {}",
            thread_states(w.pid),
            fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
    let states = thread_states(w.pid);
    assert!(
        !states.contains(":t") && !states.contains(":T"),
        "mt_load {when}: stopped threads: {states}"
    );
}

/// mt_load (8 threads dirtying 128 MiB at full speed) checkpointed with --leave-running three
/// times in a row while it runs; it must run on after each (CPU use, 9 threads, image verifies)
/// and pass its own verification at the end.
#[test]
fn mt_load_three_leave_running_checkpoints_then_verify() {
    let _g = serial();
    let w = Workload::start("mt_load", &[]);
    thread::sleep(SETTLE);
    assert_busy(&w, "before the first checkpoint");
    let imgs: Vec<_> = (0..3).map(|_| image_dir("mt_load")).collect();
    for (i, img) in imgs.iter().enumerate() {
        let dir = img.path().join("img");
        checkpoint_leave(&w, &dir);
        assert_busy(&w, &format!("after --leave-running checkpoint {}", i + 1));
        let j = inspect_json(&dir);
        assert_eq!(
            j["processes"][0]["threads"].as_array().map(|t| t.len()),
            Some(9),
            "image {}: threads of the root",
            i + 1
        );
    }
    verify_or_panic(&w, "three --leave-running checkpoints");
}

/// mt_load checkpointed (kill) while it runs at full CPU, restored: it runs at full CPU again
/// and passes.
#[test]
fn mt_load_kill_restore_at_full_cpu() {
    let _g = serial();
    let mut w = Workload::start("mt_load", &[]);
    thread::sleep(SETTLE);
    assert_busy(&w, "before the checkpoint");
    let img = image_dir("mt_load");
    kill_restore(&mut w, &img.path().join("img"));
    assert_busy(&w, "after restore");
    verify_or_panic(&w, "kill at full CPU");
}
