//! The partition verbs: `run`, restore into a partition, `stop`, `rm`, `ps`, `stats`.
//!
//! Each works on the records under the root directory and needs no daemon: `run` and restore
//! start the partition's monitor (`stasis __helper` with a monitor request, detached in its
//! own session) and wait for its typed reply ([`crate::helper`]); the others read records and cgroups, and signal processes.

use crate::cgroup::{Cgroups, Limits, Usage};
use crate::helper::{self, HelperError};
use crate::monitor::chain;
use crate::state::{self, NetMode, Record, Root, Spec, State};
use serde::Serialize;
use stasis_image::Trust;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of the partition verbs (the CLI picks the exit code of each).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Record problems.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// A partition of that name exists.
    #[error("partition '{name}' already exists (state {state}): remove it with `stasis rm {name}` or choose another name")]
    Exists {
        /// Name.
        name: String,
        /// State.
        state: State,
    },
    /// It runs and the verb needs it stopped.
    #[error("partition '{0}' is running: stop it first (`stasis stop {0}`), or use -f")]
    Running(String),
    /// It runs and a restore would need its name.
    #[error(
        "partition '{0}' is running: stop it, or restore the image under another name with --name"
    )]
    NameBusy(String),
    /// The monitor failed to start the partition: the kind and the text.
    #[error(transparent)]
    Start(HelperError),
    /// The image is unusable.
    #[error("image {dir}: {what}")]
    BadImage {
        /// Directory.
        dir: String,
        /// What is wrong.
        what: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Options of `stasis run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Name.
    pub name: String,
    /// What to run and how.
    pub spec: Spec,
}

/// Is the partition of this record running (its first process and its monitor alive)?
pub fn is_running(rec: &Record) -> bool {
    matches!(rec.state, State::Running | State::Starting) && rec.pid.is_some_and(state::alive)
}

fn taken_veth(root: &Root) -> Vec<String> {
    root.names()
        .unwrap_or_default()
        .iter()
        .filter_map(|n| root.load(n).ok())
        .filter_map(|r| r.spec.veth.map(|v| v.host_addr))
        .collect()
}

/// The state to show for a record: one that says running while nothing runs has ended, and
/// its monitor has not recorded it yet — it is what the verb that ended it announced, else
/// exited.
fn shown_state(rec: &Record, running: bool) -> State {
    if matches!(rec.state, State::Running | State::Starting) && !running {
        rec.ending.unwrap_or(State::Exited)
    } else {
        rec.state
    }
}

/// `stasis run`: create partition `opts.name` and start it; returns the host pid of its first
/// process.
pub fn run(root: &Root, opts: RunOptions) -> Result<i32, OpsError> {
    let lock = root.lock(&opts.name)?;
    match root.load(&opts.name) {
        Ok(r) => {
            return Err(OpsError::Exists {
                name: opts.name,
                state: r.state,
            })
        }
        Err(state::StateError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut spec = opts.spec;
    if spec.net == NetMode::Veth && spec.veth.is_none() {
        spec.veth = Some(crate::setup::allocate_veth(&opts.name, &taken_veth(root)));
    }
    let paths = root.paths(&opts.name);
    let _ = std::fs::remove_file(paths.log());
    let _ = std::fs::remove_file(paths.stats());
    let rec = Record::starting(&opts.name, spec);
    root.save(&rec, &lock)?;
    drop(lock);
    let r = spawn_monitor(root, &opts.name, None, 0, false);
    if r.is_err() {
        // Nothing ran: leave no record behind (the error says why).
        forget(root, &opts.name);
    }
    r
}

/// Start partition `name` again from a boot command after it ended (a supervisor's cold
/// restart): a new incarnation of the same partition, so its accounting totals, history and
/// output log carry on. A partition that does not exist is created as [`run`] does.
pub fn run_again(root: &Root, name: &str, spec: Spec) -> Result<i32, OpsError> {
    let lock = root.lock(name)?;
    let old = match root.load(name) {
        Ok(r) => r,
        Err(state::StateError::NotFound(_)) => {
            drop(lock);
            return run(
                root,
                RunOptions {
                    name: name.to_string(),
                    spec,
                },
            );
        }
        Err(e) => return Err(e.into()),
    };
    if is_running(&old) {
        return Err(OpsError::NameBusy(name.to_string()));
    }
    let mut spec = spec;
    if spec.net == NetMode::Veth {
        spec.veth = old
            .spec
            .veth
            .clone()
            .or_else(|| Some(crate::setup::allocate_veth(name, &taken_veth(root))));
    }
    let mut carried = old.carried;
    carried.memory_bytes = 0;
    carried.pids = 0;
    let rec = Record {
        incarnation: old.incarnation + 1,
        carried,
        ..Record::starting(name, spec)
    };
    root.save(&rec, &lock)?;
    drop(lock);
    let r = spawn_monitor(root, name, None, 0, false);
    if r.is_err() {
        if let Ok(lock) = root.lock(name) {
            let _ = root.save(&old, &lock);
        }
    }
    r
}

/// Remove a partition's directory (a failed start leaves nothing).
fn forget(root: &Root, name: &str) {
    if let Ok(_lock) = root.lock(name) {
        let _ = std::fs::remove_dir_all(root.paths(name).dir);
    }
}

/// The `stasis` binary monitors run as: `STASIS_BIN` if set (a program embedding these
/// functions), else the running executable.
pub fn stasis_exe() -> Result<PathBuf, OpsError> {
    match std::env::var_os("STASIS_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::current_exe()
            .map_err(|e| OpsError::Other(format!("finding the stasis binary: {e}"))),
    }
}

/// Start the monitor (`stasis __helper` with a [`helper::Request::Monitor`]) and wait for its
/// reply.
fn spawn_monitor(
    root: &Root,
    name: &str,
    restore: Option<&Path>,
    workers: usize,
    insecure_unsigned: bool,
) -> Result<i32, OpsError> {
    let paths = root.paths(name);
    let mlog = root
        .open_dir(name)?
        .open_append("monitor.log", stasis_image::safefs::PRIVATE_FILE)
        .map_err(|e| OpsError::Other(format!("opening the monitor log: {e}")))?;
    let exe = stasis_exe()?;
    let req = helper::Request::Monitor(helper::MonitorRequest {
        name: name.to_string(),
        restore: restore.map(|d| helper::RestoreSource {
            dir: d.to_path_buf(),
            workers,
            insecure_unsigned,
        }),
    });
    let mut h = helper::spawn(&exe, &root.path, &req, mlog.into(), true)
        .map_err(|e| OpsError::Other(format!("starting the monitor: {}", chain(&e))))?;
    let reply = helper::recv_reply(&mut h.chan, &mut |_| {}, |e| {
        let log = std::fs::read_to_string(paths.dir.join("monitor.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        HelperError::internal(format!(
            "the monitor failed without a report{}; its log ends with:\n{}",
            e.map(|e| format!(" ({})", chain(&e))).unwrap_or_default(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    });
    match reply {
        helper::Message::Started { pid } => {
            // The monitor lives on (it is the partition's); its parent reaps it once it ends
            // (a long-lived caller such as the agent does, a CLI leaves it to init when it
            // exits).
            std::mem::forget(h.process);
            Ok(pid)
        }
        other => {
            // A monitor that failed exits right after its reply (or without one): reap it, so
            // a failed start leaves no zombie behind.
            let _ = h.process.wait();
            Err(OpsError::Start(match other {
                helper::Message::Failed(e) => e,
                m => HelperError::internal(format!("the monitor answered {m:?}")),
            }))
        }
    }
}

/// The trust a restore under `root` applies: images signed by the root's host key or one of
/// its trusted keys (`ROOT/keys/`), or none with `insecure_unsigned`.
pub fn trust_of(root: &Root, insecure_unsigned: bool) -> Result<Trust, OpsError> {
    if insecure_unsigned {
        return Ok(Trust::InsecureUnsigned);
    }
    stasis_image::Keyring::load(&root.path)
        .map(Trust::Verify)
        .map_err(|e| OpsError::Other(format!("loading the root's keys: {}", chain(&e))))
}

/// Restore the partition image in `dir` as partition `name` (the image's own name if None).
/// Returns the host pid of the first process. The image must be signed by a key of the root
/// (see [`restore_with`]).
pub fn restore(
    root: &Root,
    dir: &Path,
    name: Option<&str>,
    workers: usize,
) -> Result<i32, OpsError> {
    restore_with(root, dir, name, workers, false)
}

/// [`restore`], or with `insecure_unsigned` an image whose signature is not checked (the
/// ownership and mode rule still applies). The image is checked here and again by the
/// restorer, before any task exists.
pub fn restore_with(
    root: &Root,
    dir: &Path,
    name: Option<&str>,
    workers: usize,
    insecure_unsigned: bool,
) -> Result<i32, OpsError> {
    let bad = |what: String| OpsError::BadImage {
        dir: dir.display().to_string(),
        what,
    };
    let dir = dir
        .canonicalize()
        .map_err(|e| bad(format!("cannot open: {e}")))?;
    let reader = stasis_image::ImageReader::open(&dir).map_err(|e| bad(chain(&e)))?;
    let trust = trust_of(root, insecure_unsigned)?;
    stasis_image::trust::check(&reader, &trust).map_err(|e| {
        let e = stasis_engine::restore::trust_refusal(&dir, e);
        match e {
            stasis_engine::RestoreError::BadImage { what, source, .. } => bad(match source {
                Some(s) => format!("{what}: {}", chain(&*s)),
                None => what,
            }),
            other => bad(chain(&other)),
        }
    })?;
    let img = crate::image::read(&reader)
        .map_err(|e| bad(e.0))?
        .ok_or_else(|| bad("not a partition image (no partition.img)".into()))?;
    drop(reader);
    let name = name.unwrap_or(&img.raw.name).to_string();
    let lock = root.lock(&name)?;
    let existing = match root.load(&name) {
        Ok(r) => Some(r),
        Err(state::StateError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(r) = &existing {
        if is_running(r) {
            return Err(OpsError::NameBusy(name));
        }
    }
    let mut spec = img.spec.clone();
    if spec.net == NetMode::Veth && name != img.raw.name {
        let taken: Vec<String> = taken_veth(root);
        spec.veth = Some(crate::setup::allocate_veth(&name, &taken));
    }
    let paths = root.paths(&name);
    let carried = match &existing {
        Some(r) if r.carried.cpu_ns >= img.usage.cpu_ns => r.carried,
        _ => {
            // A new partition (or one whose record knows less): the image's totals and history.
            let _ = crate::accounting::write_all(&paths.stats(), &img.history);
            img.usage
        }
    };
    let mut carried = carried;
    carried.memory_bytes = 0;
    carried.pids = 0;
    let rec = Record {
        incarnation: existing
            .as_ref()
            .map(|r| r.incarnation)
            .unwrap_or(0)
            .max(img.raw.incarnation)
            + 1,
        restored_from: Some(dir.clone()),
        carried,
        ..Record::starting(&name, spec)
    };
    root.save(&rec, &lock)?;
    drop(lock);
    let r = spawn_monitor(root, &name, Some(&dir), workers, insecure_unsigned);
    if r.is_err() {
        // A failed restore changes nothing: the earlier record comes back as it was (its
        // partition is still checkpointed, stopped…), a new name leaves nothing.
        match &existing {
            Some(old) => {
                if let Ok(lock) = root.lock(&name) {
                    let _ = root.save(old, &lock);
                }
            }
            None => forget(root, &name),
        }
    }
    r
}

impl From<String> for OpsError {
    fn from(s: String) -> Self {
        OpsError::Other(s)
    }
}

/// `stasis stop`: SIGTERM to the first process, SIGKILL after `timeout`, and wait until the
/// monitor has recorded the end. Returns the final state.
pub fn stop(root: &Root, name: &str, timeout: Duration) -> Result<State, OpsError> {
    let (rec, ()) = root.update(name, |r| {
        if is_running(r) {
            r.ending = Some(State::Stopped);
        }
    })?;
    let Some(pid) = rec.pid.filter(|_| is_running(&rec)) else {
        settle_stale(root, name)?;
        return Ok(root.load(name)?.state);
    };
    let _ = stasis_sys::sys::kill(pid, libc::SIGTERM);
    let deadline = Instant::now() + timeout;
    while state::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if state::alive(pid) {
        let _ = stasis_sys::sys::kill(pid, libc::SIGKILL);
    }
    // The monitor records the end; give it a moment, then settle it ourselves if it is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = root.load(name)?;
        if !matches!(r.state, State::Running | State::Starting) {
            return Ok(r.state);
        }
        if Instant::now() > deadline || !r.monitor_pid.is_some_and(state::alive) {
            settle_stale(root, name)?;
            return Ok(root.load(name)?.state);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A record says running but nothing runs (the monitor was killed): record it as exited.
fn settle_stale(root: &Root, name: &str) -> Result<(), OpsError> {
    root.update(name, |r| {
        if matches!(r.state, State::Running | State::Starting)
            && !r.pid.is_some_and(state::alive)
            && !r.monitor_pid.is_some_and(state::alive)
        {
            r.state = r.ending.take().unwrap_or(State::Exited);
            r.pid = None;
            r.monitor_pid = None;
        }
    })?;
    Ok(())
}

/// `stasis rm`: remove a partition's record, logs and cgroup. A running one is refused unless
/// `force` (then it is killed first).
pub fn rm(root: &Root, name: &str, force: bool) -> Result<(), OpsError> {
    let rec = match root.load(name) {
        Ok(r) => Some(r),
        // With -f a partition whose record is unreadable still goes (what is left of it: its
        // cgroup and directory).
        Err(state::StateError::Corrupt { .. }) if force => None,
        Err(e) => return Err(e.into()),
    };
    if rec.as_ref().is_some_and(is_running) {
        if !force {
            return Err(OpsError::Running(name.to_string()));
        }
        stop(root, name, Duration::from_millis(0))?;
    }
    let lock = root.lock(name)?;
    if let Ok(cg) = Cgroups::detect() {
        let _ = cg.remove(&Cgroups::group_for(name));
    }
    if let Some(rec) = &rec {
        crate::setup::veth_remove(&rec.spec);
    }
    let dir = root.paths(name).dir;
    std::fs::remove_dir_all(&dir)
        .map_err(|e| OpsError::Other(format!("removing {}: {e}", dir.display())))?;
    drop(lock);
    Ok(())
}

/// One line of `stasis ps`.
#[derive(Debug, Clone, Serialize)]
pub struct PsRow {
    /// Name.
    pub name: String,
    /// State.
    pub state: State,
    /// Host pid of the first process.
    pub pid: Option<i32>,
    /// Monitor pid.
    pub monitor_pid: Option<i32>,
    /// Seconds since this incarnation started (while running).
    pub uptime_secs: Option<u64>,
    /// Incarnation.
    pub incarnation: u32,
    /// Network mode.
    pub net: NetMode,
    /// Command.
    pub command: Vec<String>,
    /// Exit code of the last incarnation.
    pub exit_code: Option<i32>,
    /// Signal that ended the last incarnation.
    pub exit_signal: Option<i32>,
    /// Image it was restored from.
    pub restored_from: Option<PathBuf>,
}

/// `stasis ps`.
pub fn ps(root: &Root) -> Result<Vec<PsRow>, OpsError> {
    let mut out = Vec::new();
    for n in root.names()? {
        let r = match root.load(&n) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let running = is_running(&r);
        let state = shown_state(&r, running);
        out.push(PsRow {
            name: r.name.clone(),
            state,
            pid: r.pid.filter(|_| running),
            monitor_pid: r.monitor_pid.filter(|_| running),
            uptime_secs: running.then(|| state::now().saturating_sub(r.started_at)),
            incarnation: r.incarnation,
            net: r.spec.net,
            command: r.spec.cmd.clone(),
            exit_code: r.exit.as_ref().and_then(|e| e.code),
            exit_signal: r.exit.as_ref().and_then(|e| e.signal),
            restored_from: r.restored_from.clone(),
        });
    }
    Ok(out)
}

/// Accounting of one partition.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Name.
    pub name: String,
    /// State.
    pub state: State,
    /// Totals over every incarnation (gauges: now).
    pub usage: Usage,
    /// Limits in force (read back from the cgroup while running, else the spec's).
    pub limits: Limits,
    /// CPU use over the last sampling interval, in CPUs (1.0 = one CPU busy).
    pub cpu_rate: Option<f64>,
    /// Samples in the history.
    pub samples: usize,
    /// First sample time (unix ms).
    pub since_ms: Option<u64>,
    /// Recent history (up to the last 60 samples).
    pub recent: Vec<crate::accounting::Sample>,
}

/// `stasis stats NAME`.
pub fn stats(root: &Root, name: &str) -> Result<Stats, OpsError> {
    let rec = root.load(name)?;
    let running = is_running(&rec);
    let mut usage = rec.carried;
    let mut limits = rec.spec.limits;
    if running {
        let cg = Cgroups::detect().map_err(|e| OpsError::Other(chain(&e)))?;
        let group = Cgroups::group_for(name);
        let cur = cg.usage(&group).map_err(|e| OpsError::Other(chain(&e)))?;
        usage = crate::accounting::total(&rec.carried, &cur);
        if let Ok(l) = cg.limits(&group) {
            limits = l;
        }
    } else {
        usage.memory_bytes = 0;
        usage.pids = 0;
    }
    let history = crate::accounting::read(&root.paths(name).stats());
    let cpu_rate = match history.as_slice() {
        [.., a, b] if b.t_ms > a.t_ms => Some(
            (b.usage.cpu_ns.saturating_sub(a.usage.cpu_ns)) as f64
                / ((b.t_ms - a.t_ms) as f64 * 1e6),
        ),
        _ => None,
    };
    Ok(Stats {
        name: name.to_string(),
        state: shown_state(&rec, running),
        usage,
        limits,
        cpu_rate,
        samples: history.len(),
        since_ms: history.first().map(|s| s.t_ms),
        recent: history[history.len().saturating_sub(60)..].to_vec(),
    })
}

/// The host as a whole, for the global view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostUsage {
    /// CPU time of the whole machine since boot (user+nice+system+irq+softirq+steal), ns.
    pub cpu_ns: u64,
    /// CPUs online.
    pub cpus: usize,
    /// Memory in use (MemTotal - MemAvailable).
    pub memory_bytes: u64,
    /// Memory installed.
    pub memory_total_bytes: u64,
}

/// The global view: every partition's accounting, their sum, and the host's.
#[derive(Debug, Clone, Serialize)]
pub struct GlobalStats {
    /// Per partition.
    pub partitions: Vec<Stats>,
    /// Sum over partitions (peak: the largest).
    pub total: Usage,
    /// The machine.
    pub host: HostUsage,
}

/// `stasis stats` with no name.
pub fn global_stats(root: &Root) -> Result<GlobalStats, OpsError> {
    let mut parts = Vec::new();
    for n in root.names()? {
        if let Ok(s) = stats(root, &n) {
            parts.push(s);
        }
    }
    let mut total = Usage::default();
    for p in &parts {
        let u = &p.usage;
        total.cpu_ns += u.cpu_ns;
        total.memory_bytes += u.memory_bytes;
        total.memory_peak_bytes = total.memory_peak_bytes.max(u.memory_peak_bytes);
        total.io_read_bytes += u.io_read_bytes;
        total.io_write_bytes += u.io_write_bytes;
        total.pids += u.pids;
        total.oom_kills += u.oom_kills;
    }
    Ok(GlobalStats {
        partitions: parts,
        total,
        host: host_usage(),
    })
}

fn host_usage() -> HostUsage {
    let mut h = HostUsage {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        ..Default::default()
    };
    if let Ok(s) = std::fs::read_to_string("/proc/stat") {
        if let Some(l) = s.lines().find(|l| l.starts_with("cpu ")) {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            let busy: u64 = [0usize, 1, 2, 5, 6, 7]
                .iter()
                .filter_map(|&i| v.get(i))
                .sum();
            h.cpu_ns = busy * (1_000_000_000 / stasis_sys::sys::clock_ticks());
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/meminfo") {
        let kb = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        h.memory_total_bytes = kb("MemTotal:");
        h.memory_bytes = h.memory_total_bytes.saturating_sub(kb("MemAvailable:"));
    }
    h
}

/// Repair what a killed checkpointer left: a partition whose cgroup is still frozen while
/// nobody holds its lock is thawed. Run by every stasis command before anything else.
/// Returns the names repaired.
pub fn recover(root: &Root) -> Vec<String> {
    let mut fixed = Vec::new();
    let Ok(names) = root.names() else {
        return fixed;
    };
    let mut cg = None;
    for n in names {
        let Ok(rec) = root.load(&n) else { continue };
        if !is_running(&rec) {
            continue;
        }
        let Ok(Some(_lock)) = root.try_lock(&n) else {
            continue;
        };
        if cg.is_none() {
            cg = Cgroups::detect().ok();
        }
        let Some(c) = cg.as_ref() else { return fixed };
        let group = Cgroups::group_for(&n);
        if c.is_frozen(&group).unwrap_or(false) && c.thaw(&group).is_ok() {
            tracing::warn!(partition = %n, "thawed a partition left frozen by an interrupted checkpoint");
            fixed.push(n);
        }
    }
    fixed
}
