//! The cgroup backends against this host's real hierarchies (run as root).
//!
//! Nothing is mocked and nothing is skipped: a hierarchy a test needs that is not mounted makes
//! the test fail with a message saying so. Every test works in its own group
//! `stasis-test/<unique>`, removed by a guard even when the test fails, and the tests run one
//! at a time (they share the `stasis-test` parent and measure CPU time).

use stasis_partition::cgroup::{Backend, CgroupError, Cgroups, Limits, Mode, V1, V2};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const PARENT: &str = "stasis-test";
const MIB: u64 = 1 << 20;

fn unique(kind: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{PARENT}/{kind}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A group of a backend with the processes started in it; dropping it kills them all, thaws,
/// and removes the group.
struct Group<'a> {
    b: &'a dyn Backend,
    name: String,
    children: Vec<Child>,
}

impl<'a> Group<'a> {
    fn new(b: &'a dyn Backend, kind: &str) -> Group<'a> {
        let name = unique(kind);
        assert!(!b.exists(&name));
        b.create(&name)
            .unwrap_or_else(|e| panic!("creating {name} ({}): {e:?}", b.version()));
        Group {
            b,
            name,
            children: Vec::new(),
        }
    }

    /// Start `sh -c SCRIPT` so that it runs inside the group from its first instruction on:
    /// the shell waits for a line on stdin, which is sent once it has been attached (memory is
    /// charged to the group a process is in when it allocates).
    fn spawn(&mut self, script: &str) -> i32 {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning sh");
        let pid = child.id() as i32;
        let mut stdin = child.stdin.take().unwrap();
        self.children.push(child);
        self.b.attach(&self.name, pid).expect("attach");
        stdin.write_all(b"go\n").expect("releasing the child");
        pid
    }

    /// Wait (bounded) for the child with this pid to exit; its status and stderr.
    fn wait_exit(&mut self, pid: i32, timeout: Duration) -> (ExitStatus, String) {
        let child = self
            .children
            .iter_mut()
            .find(|c| c.id() as i32 == pid)
            .expect("a child of this group");
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            assert!(
                start.elapsed() < timeout,
                "pid {pid} did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    }

    fn kill_all(&mut self) {
        let _ = self.b.thaw(&self.name);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.b.procs(&self.name).unwrap_or_default();
            for &p in &pids {
                let _ = stasis_sys::sys::kill(p, libc::SIGKILL);
            }
            for c in &mut self.children {
                let _ = c.kill();
                let _ = c.wait();
            }
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill everything and remove the group, checking that this works.
    fn finish(mut self) {
        self.kill_all();
        self.b
            .remove(&self.name)
            .expect("removing the emptied group");
        assert!(!self.b.exists(&self.name));
        // Removing an absent group is fine.
        self.b.remove(&self.name).expect("removing an absent group");
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        self.kill_all();
        if let Err(e) = self.b.remove(&self.name) {
            if self.b.exists(&self.name) {
                eprintln!("could not remove test cgroup {}: {e}", self.name);
            }
        }
        // The shared parent goes too once empty (still used by another group: stays).
        let _ = self.b.remove(PARENT);
    }
}

fn cpu_ticks(pid: i32) -> (char, u64) {
    let st = stasis_sys::proc::read_stat(pid).expect("reading /proc/PID/stat");
    (st.state, st.utime + st.stime)
}

/// Poll `f` until it returns Some, or fail after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The process is stopped: not running, and its CPU time does not move.
fn assert_stopped(pid: i32) {
    let (_, t0) = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(300));
    let (state, t1) = cpu_ticks(pid);
    assert_ne!(state, 'R', "pid {pid} still running while frozen");
    assert_eq!(t0, t1, "pid {pid} used CPU while frozen");
}

/// The process runs again: its CPU time grows.
fn assert_runs(pid: i32) {
    let (_, t0) = cpu_ticks(pid);
    wait_for(
        "the thawed process to use CPU",
        Duration::from_secs(10),
        || (cpu_ticks(pid).1 > t0).then_some(()),
    );
}

fn cgroup_line(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("reading /proc/PID/cgroup")
}

fn v1_full() -> V1 {
    let v1 = V1::detect().expect("this host must have cgroup v1 hierarchies");
    for c in ["memory", "cpu", "cpuacct", "pids", "blkio", "freezer"] {
        assert!(
            v1.has(c),
            "this host must have a v1 {c} hierarchy (see grep cgroup /proc/self/mountinfo)"
        );
    }
    v1
}

const BUSY: &str = "while :; do :; done";

#[test]
fn v1_create_attach_limits_usage_freeze_remove() {
    let _s = serial();
    let v1 = v1_full();
    assert_eq!(v1.version(), "v1");
    assert!(v1.can_freeze());
    let mut g = Group::new(&v1, "v1");
    let name = g.name.clone();
    assert!(v1.exists(&name));
    v1.create(&name).expect("create is idempotent");
    for c in v1.controllers() {
        let dir = v1.path(&c, &name).unwrap();
        assert!(dir.is_dir(), "{} missing", dir.display());
    }

    // Limits before any process, and back to unlimited.
    let l = Limits {
        memory_bytes: Some(256 * MIB),
        cpus: Some(0.5),
        pids: Some(64),
    };
    v1.set_limits(&name, &l).unwrap();
    assert_eq!(v1.limits(&name).unwrap(), l);
    let quota = v1.path("cpu", &name).unwrap().join("cpu.cfs_quota_us");
    assert_eq!(std::fs::read_to_string(quota).unwrap().trim(), "50000");
    v1.set_limits(&name, &Limits::default()).unwrap();
    assert_eq!(v1.limits(&name).unwrap(), Limits::default());
    let l = Limits {
        memory_bytes: Some(128 * MIB),
        cpus: Some(1.5),
        pids: Some(100),
    };
    v1.set_limits(&name, &l).unwrap();
    assert_eq!(v1.limits(&name).unwrap(), l);

    // A process that allocates 8 MiB (dd's buffer) then spins.
    let pid = g.spawn(&format!(
        "dd if=/dev/zero of=/dev/null bs=8M count=4 2>/dev/null; {BUSY}"
    ));
    assert!(v1.procs(&name).unwrap().contains(&pid));
    v1.attach(&name, pid).expect("attaching again is fine");
    let line = cgroup_line(pid);
    for c in ["memory", "cpu", "cpuacct", "pids", "blkio", "freezer"] {
        assert!(
            line.contains(&format!(":{c}:/{name}\n")),
            "{c} missing in {line}"
        );
    }
    wait_for("dd to finish", Duration::from_secs(10), || {
        (v1.procs(&name).unwrap() == vec![pid]).then_some(())
    });

    let u = wait_for("100 ms of CPU time", Duration::from_secs(20), || {
        let u = v1.usage(&name).unwrap();
        (u.cpu_ns >= 100_000_000).then_some(u)
    });
    assert!(u.memory_bytes > 0, "{u:?}");
    assert!(u.memory_peak_bytes >= 8 * MIB, "{u:?}");
    assert!(u.memory_peak_bytes >= u.memory_bytes, "{u:?}");
    assert_eq!(u.pids, 1, "{u:?}");
    assert_eq!(u.oom_kills, 0, "{u:?}");

    // Freeze through freezer.state.
    v1.freeze(&name, Duration::from_secs(10)).unwrap();
    let state = v1.path("freezer", &name).unwrap().join("freezer.state");
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), "FROZEN");
    assert_stopped(pid);
    let c0 = v1.usage(&name).unwrap().cpu_ns;
    std::thread::sleep(Duration::from_millis(200));
    let c1 = v1.usage(&name).unwrap().cpu_ns;
    assert!(
        c1 - c0 < 5_000_000,
        "group used CPU while frozen: {c0} -> {c1}"
    );
    v1.freeze(&name, Duration::from_secs(1))
        .expect("freezing a frozen group is fine");
    v1.thaw(&name).unwrap();
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), "THAWED");
    assert_runs(pid);

    // Not removable while a task is in it.
    match v1.remove(&name) {
        Err(CgroupError::Busy { pids, .. }) => assert_eq!(pids, vec![pid]),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(v1.exists(&name));
    g.finish();
}

#[test]
fn v1_pids_limit_is_enforced() {
    let _s = serial();
    let v1 = v1_full();
    let mut g = Group::new(&v1, "v1-pids");
    let name = g.name.clone();
    v1.set_limits(
        &name,
        &Limits {
            pids: Some(4),
            ..Limits::default()
        },
    )
    .unwrap();
    // The shell is one task; it tries to start 8 more.
    // The sleeps must not hold the stderr pipe we read the shell's complaint from.
    let pid =
        g.spawn("for i in 1 2 3 4 5 6 7 8; do sleep 30 </dev/null >/dev/null 2>&1 & done; wait");
    let (status, stderr) = g.wait_exit(pid, Duration::from_secs(20));
    assert!(!status.success(), "the shell forked past the limit");
    assert!(stderr.contains("fork"), "stderr: {stderr:?}");
    let procs = v1.procs(&name).unwrap();
    assert_eq!(procs.len(), 3, "sleeps left in the group: {procs:?}");
    let u = v1.usage(&name).unwrap();
    assert_eq!(u.pids, 3, "{u:?}");
    let events = v1.path("pids", &name).unwrap().join("pids.events");
    let events = std::fs::read_to_string(events).unwrap();
    assert_ne!(events.trim(), "max 0", "pids.events: {events}");
    g.finish();
}

#[test]
fn v1_io_accounting() {
    let _s = serial();
    let v1 = v1_full();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file: PathBuf = dir.path().join("io");
    let mut g = Group::new(&v1, "v1-io");
    let name = g.name.clone();
    // O_DIRECT so that the bytes really go to the disk now.
    let pid = g.spawn(&format!(
        "dd if=/dev/zero of={f} bs=1M count=4 oflag=direct && \
         dd if={f} of=/dev/null bs=1M iflag=direct",
        f = file.display()
    ));
    let (status, stderr) = g.wait_exit(pid, Duration::from_secs(30));
    assert!(
        status.success(),
        "dd with O_DIRECT failed in {} (needs a disk-backed filesystem): {stderr}",
        dir.path().display()
    );
    let u = v1.usage(&name).unwrap();
    assert!(u.io_write_bytes >= 4 * MIB, "{u:?}");
    assert!(u.io_read_bytes >= 4 * MIB, "{u:?}");
    g.finish();
}

#[test]
fn v2_unified_create_attach_freeze_cpu_remove() {
    let _s = serial();
    let v2 = V2::detect().expect("this host must have a cgroup2 mount");
    assert_eq!(v2.version(), "v2");
    assert!(v2.can_freeze());
    let mut g = Group::new(&v2, "v2");
    let name = g.name.clone();
    let dir = v2.path(&name).unwrap();
    assert!(dir.is_dir());
    v2.create(&name).expect("create is idempotent");

    let pid = g.spawn(BUSY);
    assert_eq!(v2.procs(&name).unwrap(), vec![pid]);
    v2.attach(&name, pid).expect("attaching again is fine");
    let line = cgroup_line(pid);
    assert!(line.contains(&format!("0::/{name}\n")), "{line}");

    // cpu.stat counts without the cpu controller.
    let c0 = v2.usage(&name).unwrap().cpu_ns;
    wait_for("cpu.stat usage to grow", Duration::from_secs(20), || {
        (v2.usage(&name).unwrap().cpu_ns >= c0 + 100_000_000).then_some(())
    });

    let events = dir.join("cgroup.events");
    let read_events = || std::fs::read_to_string(&events).unwrap();
    v2.freeze(&name, Duration::from_secs(10)).unwrap();
    assert!(read_events().contains("frozen 1"), "{}", read_events());
    assert_stopped(pid);
    let c1 = v2.usage(&name).unwrap().cpu_ns;
    std::thread::sleep(Duration::from_millis(200));
    let c2 = v2.usage(&name).unwrap().cpu_ns;
    assert!(
        c2 - c1 < 5_000_000,
        "group used CPU while frozen: {c1} -> {c2}"
    );
    v2.thaw(&name).unwrap();
    wait_for("frozen 0", Duration::from_secs(5), || {
        read_events().contains("frozen 0").then_some(())
    });
    assert_runs(pid);

    // A zero timeout either freezes at once or gives up and thaws again.
    match v2.freeze(&name, Duration::ZERO) {
        Ok(()) => v2.thaw(&name).unwrap(),
        Err(CgroupError::FreezeTimeout { thaw_error, .. }) => assert!(thaw_error.is_none()),
        Err(e) => panic!("unexpected {e:?}"),
    }
    let freeze_file = std::fs::read_to_string(dir.join("cgroup.freeze")).unwrap();
    assert_eq!(freeze_file.trim(), "0");
    assert_runs(pid);

    // A limit whose controller the unified hierarchy lacks: a clear error, nothing written.
    let absent = ["memory", "cpu", "pids"]
        .into_iter()
        .find(|c| !v2.controllers().iter().any(|x| x == c));
    let l = Limits {
        memory_bytes: Some(64 * MIB),
        cpus: Some(0.5),
        pids: Some(50),
    };
    match absent {
        Some(c) => {
            let e = v2.set_limits(&name, &l).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!(
                    "controller {c} is not available in the cgroup v2 hierarchy at {}",
                    v2.mount().display()
                )),
                "{msg}"
            );
            assert!(matches!(e, CgroupError::ControllerUnavailable { .. }));
        }
        None => {
            v2.set_limits(&name, &l).unwrap();
            assert_eq!(v2.limits(&name).unwrap(), l);
        }
    }

    // Errors that name the problem.
    let e = v2.attach(&format!("{name}-absent"), pid).unwrap_err();
    assert!(matches!(e, CgroupError::NotFound { .. }), "{e:?}");
    match v2.remove(&name) {
        Err(CgroupError::Busy { pids, .. }) => assert_eq!(pids, vec![pid]),
        other => panic!("expected Busy, got {other:?}"),
    }
    g.finish();
}

#[test]
fn v2_attach_of_an_exited_process_fails_clearly() {
    let _s = serial();
    let v2 = V2::detect().expect("this host must have a cgroup2 mount");
    let g = Group::new(&v2, "v2-gone");
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    let e = v2.attach(&g.name, pid).unwrap_err();
    assert!(
        e.to_string().contains("no such process"),
        "{e}: {:?}",
        std::error::Error::source(&e)
    );
    assert!(v2.procs(&g.name).unwrap().is_empty());
    g.finish();
}

#[test]
fn detect_on_this_host_is_hybrid_and_freezes_through_v2() {
    let _s = serial();
    let cg = Cgroups::detect().expect("detecting cgroups");
    assert_eq!(cg.mode(), Mode::Hybrid, "{}", cg.describe());
    let v2 = cg.v2().expect("hybrid has v2");
    let v1 = cg.v1().expect("hybrid has v1");
    assert_eq!(
        cg.describe(),
        format!(
            "hybrid: freeze v2 ({}), limits and accounting v1 (memory, cpu, cpuacct, pids, \
             blkio)",
            v2.mount().display()
        )
    );
    assert_eq!(cg.freezer().unwrap().version(), "v2");
    assert!(
        !v1.can_freeze(),
        "the v1 freezer is not used on a hybrid host"
    );
    assert_eq!(Cgroups::group_for("web1"), "stasis/web1");

    let mut g = Group::new(&cg, "hybrid");
    let name = g.name.clone();
    // In the v1 hierarchies for limits and accounting and in v2, not in the v1 freezer.
    assert!(v2.path(&name).unwrap().is_dir());
    for c in ["memory", "cpu", "cpuacct", "pids", "blkio"] {
        assert!(v1.path(c, &name).unwrap().is_dir(), "{c}");
    }
    let freezer = v1_full().path("freezer", &name).unwrap();
    assert!(!freezer.exists(), "{} was created", freezer.display());

    let l = Limits {
        memory_bytes: Some(512 * MIB),
        cpus: Some(0.75),
        pids: Some(32),
    };
    cg.set_limits(&name, &l).unwrap();
    assert_eq!(cg.limits(&name).unwrap(), l);
    let mem = v1
        .path("memory", &name)
        .unwrap()
        .join("memory.limit_in_bytes");
    assert_eq!(
        std::fs::read_to_string(mem).unwrap().trim(),
        (512 * MIB).to_string()
    );

    let pid = g.spawn(&format!("exec sh -c '{BUSY}'"));
    assert_eq!(cg.procs(&name).unwrap(), vec![pid]);
    let line = cgroup_line(pid);
    assert!(line.contains(&format!("0::/{name}\n")), "{line}");
    assert!(line.contains(&format!(":memory:/{name}\n")), "{line}");
    assert!(!line.contains(&format!(":freezer:/{name}\n")), "{line}");

    let u = wait_for("100 ms of CPU time", Duration::from_secs(20), || {
        let u = cg.usage(&name).unwrap();
        (u.cpu_ns >= 100_000_000).then_some(u)
    });
    assert!(u.memory_bytes > 0, "{u:?}");
    assert_eq!(u.pids, 1, "{u:?}");

    cg.freeze(&name, Duration::from_secs(10)).unwrap();
    let events = std::fs::read_to_string(v2.path(&name).unwrap().join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    assert_stopped(pid);
    cg.thaw(&name).unwrap();
    assert_runs(pid);

    match cg.remove(&name) {
        Err(CgroupError::Busy { pids, .. }) => assert_eq!(pids, vec![pid]),
        other => panic!("expected Busy, got {other:?}"),
    }
    g.finish();
}
