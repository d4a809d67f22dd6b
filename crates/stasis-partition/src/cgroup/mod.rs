//! cgroup hierarchies (v1 and v2) behind one backend trait: create, attach, freeze, limits,
//! accounting.
//!
//! # Where the hierarchies are
//!
//! Nothing here assumes a mount point. The hierarchies are found in `/proc/self/mountinfo`:
//! every mount of type `cgroup` is a v1 hierarchy whose controllers are listed in its
//! per-superblock options (`rw,cpu,cpuacct` is one hierarchy carrying two controllers;
//! `rw,name=systemd` carries none and is ignored), and the mount of type `cgroup2` is the
//! unified (v2) hierarchy, whose available controllers are listed in the `cgroup.controllers`
//! file at its root. A hierarchy mounted several times (bind mounts) is used once.
//!
//! A controller is attached to exactly one hierarchy at a time, so a host is one of:
//!
//! - **pure v2**: `cgroup2` (usually at `/sys/fs/cgroup`) with `memory cpu io pids` in
//!   `cgroup.controllers`. Everything goes through [`V2`]: limits in `memory.max`, `cpu.max`,
//!   `pids.max`; accounting in `cpu.stat`, `memory.current`/`peak`/`events`, `pids.current`,
//!   `io.stat`; freezing through `cgroup.freeze`/`cgroup.events`. Creating a group enables the
//!   controllers it needs in each ancestor's `cgroup.subtree_control`.
//! - **pure v1**: one `cgroup` mount per controller set. Everything goes through [`V1`], freezing
//!   through the `freezer` hierarchy (`freezer.state`).
//! - **hybrid** (the development machines): `cgroup2` is mounted (at `/sys/fs/cgroup/unified`
//!   there) but holds few or no useful controllers, while `memory`, `cpu`, `cpuacct`, `pids`,
//!   `blkio` and `freezer` are v1 hierarchies. A partition's group then exists in several
//!   hierarchies at once: the v1 ones for limits and accounting, and the v2 one for freezing.
//!
//! # Why freezing goes through v2 whenever v2 is mounted
//!
//! The v2 freezer (`cgroup.freeze`, Linux 5.2+) needs no controller: it is part of the core of
//! every v2 hierarchy, even one that holds no controller at all, as on a hybrid host. It stops
//! tasks much like a job-control stop (they show as `S` in `/proc/PID/stat`), so a frozen task
//! still dies of `SIGKILL` and can still be `PTRACE_SEIZE`d, and completion is reported in
//! `cgroup.events` (`frozen 1`). The checkpoint engine relies on exactly that: freeze → seize
//! and interrupt every thread → thaw → inject and dump while the tasks stay ptrace-stopped. A
//! task frozen by the v1 freezer sits in the refrigerator instead (shown as `D`): it does not
//! even die of `SIGKILL` until thawed, which makes every failure path harder. So [`Cgroups`]
//! freezes through v2 whenever a v2 hierarchy is mounted, and through the v1 `freezer`
//! hierarchy only on pure-v1 hosts. Both wait until every task is frozen (`freezer.state`
//! `FROZEN` on v1) and thaw the group again if that does not happen within the timeout (a task
//! in an uninterruptible sleep can delay it indefinitely).
//!
//! # Routing in the combination
//!
//! [`Cgroups`] routes each resource to the hierarchy that has its controller: memory, cpu
//! bandwidth, pids, io (`blkio` on v1). CPU time comes from `cpuacct.usage` when v1 has
//! `cpuacct`, otherwise from v2 `cpu.stat`, which every v2 group has even without the `cpu`
//! controller. Asking for a limit whose controller is nowhere gives
//! [`CgroupError::MissingController`]; counters of absent controllers stay 0.
//!
//! # Kernel quirks handled here
//!
//! - v1 `blkio.throttle.io_service_bytes` only counts I/O on a disk once block throttling has
//!   been activated on that disk's queue. Creating a group through [`V1`] activates it by
//!   writing a "no limit" rule (`MAJ:MIN 0`) for every disk in `/sys/block` that has no rule in
//!   the group yet.
//! - The v1 "unlimited" memory limit reads as a huge page-rounded number; the v2 one as `max`.
//!   Both are [`None`] here. Memory limits are rounded down to whole pages by the kernel.
//! - Writing a pid to `cgroup.procs` of a group the process is already in is a no-op.

mod parse;
mod v1;
mod v2;

pub use parse::{
    cpus_from_quota, parse_blkio_service_bytes, parse_cpu_max, parse_flat_keyed, parse_io_stat,
    parse_max, parse_v1_limit, IoBytes, ParseError, V1_UNLIMITED,
};
pub use v1::{V1Hierarchy, V1};
pub use v2::V2;

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// CPU bandwidth period used for every cpu limit, in microseconds (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Smallest CPU quota the kernel accepts, in microseconds (1 ms): 0.01 CPUs with our period.
pub const CPU_MIN_QUOTA_US: u64 = 1_000;

/// Parent directory of every partition's group (see [`Cgroups::group_for`]).
pub const GROUP_PARENT: &str = "stasis";

/// Resource limits of a partition. None = unlimited / not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (rounded down to whole pages by the kernel).
    pub memory_bytes: Option<u64>,
    /// CPU bandwidth in CPUs: 0.5 = half a CPU, 2.0 = two CPUs; period 100 ms.
    pub cpus: Option<f64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
}

impl Limits {
    /// Checks every limit the way [`Cgroups::set_limits`] will, before anything is created:
    /// the field at fault (`memory_bytes`, `cpus`, `pids`) and why.
    pub fn check(&self) -> Result<(), (&'static str, CgroupError)> {
        if let Some(m) = self.memory_bytes {
            check_memory(m).map_err(|e| ("memory_bytes", e))?;
        }
        if let Some(c) = self.cpus {
            cpu_quota_us(c).map_err(|e| ("cpus", e))?;
        }
        if let Some(p) = self.pids {
            check_pids(p).map_err(|e| ("pids", e))?;
        }
        Ok(())
    }
}

/// Counters read from a cgroup. Cumulative: `cpu_ns`, `io_*`, `oom_kills`. Gauges:
/// `memory_bytes`, `pids`. `memory_peak_bytes`: high-water mark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time used by all tasks of the group, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory charged to the group now.
    pub memory_bytes: u64,
    /// Highest memory charge seen.
    pub memory_peak_bytes: u64,
    /// Bytes read from block devices.
    pub io_read_bytes: u64,
    /// Bytes written to block devices.
    pub io_write_bytes: u64,
    /// Number of tasks now.
    pub pids: u64,
    /// Processes killed by the OOM killer in this group.
    pub oom_kills: u64,
}

/// One cgroup hierarchy version's operations on a group.
///
/// `group` is always a relative path below the hierarchy's mount point, like `stasis/web1`
/// (see [`Cgroups::group_for`]); absolute paths, `..`, `.` and empty components are refused.
pub trait Backend: Send + Sync + fmt::Debug {
    /// `"v1"` or `"v2"`.
    fn version(&self) -> &'static str;
    /// Controllers this backend can use for limits/accounting (`memory`, `cpu`, `cpuacct`,
    /// `pids`, `blkio` on v1; `memory`, `cpu`, `io`, `pids` on v2).
    fn controllers(&self) -> Vec<String>;
    /// Whether [`Backend::freeze`] can work.
    fn can_freeze(&self) -> bool;
    /// Create the group and its missing parents. Idempotent.
    fn create(&self, group: &str) -> Result<(), CgroupError>;
    /// True when the group exists (in every hierarchy the backend uses).
    fn exists(&self, group: &str) -> bool;
    /// Move a process (all its threads) into the group, through `cgroup.procs`.
    fn attach(&self, group: &str, pid: i32) -> Result<(), CgroupError>;
    /// Processes in the group, as pids of the reader's pid namespace, sorted.
    fn procs(&self, group: &str) -> Result<Vec<i32>, CgroupError>;
    /// Apply limits. A `Some` limit whose controller this backend lacks is an error naming the
    /// controller (nothing is written then); a `None` limit resets to unlimited where the
    /// controller exists and is ignored where it does not.
    fn set_limits(&self, group: &str, l: &Limits) -> Result<(), CgroupError>;
    /// Read the limits back (`None` for unlimited or for an absent controller).
    fn limits(&self, group: &str) -> Result<Limits, CgroupError>;
    /// Read the counters; fields of absent controllers stay 0.
    fn usage(&self, group: &str) -> Result<Usage, CgroupError>;
    /// Freeze every task of the group and return once all are frozen. On timeout the group is
    /// thawed again and [`CgroupError::FreezeTimeout`] returned.
    fn freeze(&self, group: &str, timeout: Duration) -> Result<(), CgroupError>;
    /// Let the group run again.
    fn thaw(&self, group: &str) -> Result<(), CgroupError>;
    /// Remove the group's directory (the leaf only). Fails with [`CgroupError::Busy`] while
    /// tasks remain; succeeds when the group does not exist.
    fn remove(&self, group: &str) -> Result<(), CgroupError>;
}

/// Errors of cgroup operations. Messages say what to do; the cause is in `source()`.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `/proc/self/mountinfo` could not be read.
    #[error("reading /proc/self/mountinfo to find the cgroup hierarchies")]
    ReadMountinfo {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `/proc/self/mountinfo` did not parse.
    #[error("parsing the mount table to find the cgroup hierarchies")]
    ParseMountinfo {
        /// The parse error.
        #[source]
        source: stasis_sys::proc::ProcError,
    },
    /// Neither a usable v1 hierarchy nor a v2 hierarchy is mounted.
    #[error(
        "no usable cgroup hierarchy is mounted: mount cgroup2 (mount -t cgroup2 none \
         /sys/fs/cgroup) or the v1 controllers (memory, cpu, cpuacct, pids, blkio, freezer)"
    )]
    NoHierarchy,
    /// A hierarchy of the requested version is not mounted (from `V1::detect`/`V2::detect`).
    #[error("no cgroup {version} hierarchy is mounted on this host{hint}")]
    VersionNotMounted {
        /// `"v1"` or `"v2"`.
        version: &'static str,
        /// What to do.
        hint: &'static str,
    },
    /// A limit was asked whose controller no hierarchy of the combination has.
    #[error(
        "controller {controller} is not available in any hierarchy: mount it or run on a host \
         with cgroup v2 {controller}"
    )]
    MissingController {
        /// Controller name (`memory`, `cpu`, `pids`, `io`).
        controller: &'static str,
    },
    /// A limit was asked from one backend that does not have the controller.
    #[error(
        "controller {controller} is not available in the cgroup {version} hierarchy{where_}: \
         set this limit through the hierarchy that has it (Cgroups routes it), or enable the \
         controller there"
    )]
    ControllerUnavailable {
        /// Controller name.
        controller: &'static str,
        /// `"v1"` or `"v2"`.
        version: &'static str,
        /// ` at PATH` or empty.
        where_: String,
    },
    /// The group name is not a clean relative path.
    #[error("invalid cgroup name {group:?}: {why}; use a relative path like \"stasis/web1\"")]
    InvalidGroup {
        /// The name given.
        group: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A limit value is out of range.
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    /// The group does not exist.
    #[error("cgroup {} does not exist: create the group first", path.display())]
    NotFound {
        /// Directory of the group.
        path: PathBuf,
    },
    /// The group cannot be removed while it has tasks or child groups.
    #[error(
        "cgroup {} is busy (tasks {pids:?}, or child groups): stop or move its processes and \
         remove its children first", path.display()
    )]
    Busy {
        /// Directory of the group.
        path: PathBuf,
        /// Tasks found in it.
        pids: Vec<i32>,
        /// The error of `rmdir`, if it was attempted.
        #[source]
        source: Option<io::Error>,
    },
    /// Creating a group directory failed.
    #[error("creating cgroup {}{}", path.display(), io_hint(.source))]
    Create {
        /// Directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Removing a group directory failed for another reason than tasks.
    #[error("removing cgroup {}{}", path.display(), io_hint(.source))]
    Remove {
        /// Directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading a cgroup file failed.
    #[error("reading {}{}", path.display(), io_hint(.source))]
    Read {
        /// File.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing a cgroup file failed.
    #[error("writing {value:?} to {}{}", path.display(), io_hint(.source))]
    Write {
        /// File.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Moving a process into a group failed.
    #[error("moving pid {pid} into {}{}", path.display(), attach_hint(.source))]
    Attach {
        /// The process.
        pid: i32,
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A cgroup file had unexpected content.
    #[error("unexpected content in {}: {what} (is this a cgroup filesystem?)", path.display())]
    Parse {
        /// File.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// No freezer is available.
    #[error(
        "cannot freeze: no cgroup freezer on this host (neither cgroup2 nor the v1 freezer \
         hierarchy is mounted); mount one, or freeze with ptrace instead"
    )]
    NoFreezer,
    /// Not every task froze in time; the group was thawed again.
    #[error(
        "cgroup {} did not freeze within {timeout:?} (last state {state:?}) and was thawed \
         again: a task may be in uninterruptible sleep (D state, e.g. on a stuck network \
         filesystem); retry later or use a longer timeout", path.display()
    )]
    FreezeTimeout {
        /// Directory of the group.
        path: PathBuf,
        /// The timeout.
        timeout: Duration,
        /// Last state read.
        state: String,
        /// Error while thawing again, if any.
        #[source]
        thaw_error: Option<Box<CgroupError>>,
    },
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            ": permission denied, run as root with the cgroup filesystem writable"
        }
        Some(libc::EROFS) => ": the cgroup filesystem is mounted read-only, remount it rw",
        Some(libc::EBUSY) => {
            ": busy (a memory limit below current usage that reclaim cannot reach, or a v2 \
             group with processes that would need controllers in subtree_control)"
        }
        Some(libc::EINVAL) => ": the kernel refused the value",
        Some(libc::ENOENT) => ": not found (controller not enabled in this group?)",
        Some(libc::ENOSPC) => ": no space (v1 cpuset group without cpus/mems?)",
        _ => "",
    }
}

fn attach_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ESRCH) => ": no such process (it has exited?)",
        Some(libc::EBUSY) => {
            ": the group has controllers enabled in its cgroup.subtree_control (v2 allows \
             processes only in leaves); attach to a leaf group"
        }
        Some(libc::EOPNOTSUPP) => ": the group is threaded or the process is a kernel thread",
        _ => io_hint(e),
    }
}

// ---------------------------------------------------------------------------------------------
// small file helpers shared by both backends
// ---------------------------------------------------------------------------------------------

/// Check that `group` is a clean relative path and return it as one.
pub(crate) fn check_group(group: &str) -> Result<&Path, CgroupError> {
    let bad = |why| {
        Err(CgroupError::InvalidGroup {
            group: group.to_owned(),
            why,
        })
    };
    if group.is_empty() {
        return bad("empty");
    }
    if group.starts_with('/') {
        return bad("absolute path");
    }
    if group.contains('\0') || group.contains('\n') {
        return bad("contains NUL or newline");
    }
    for comp in group.split('/') {
        match comp {
            "" => return bad("empty path component"),
            "." | ".." => return bad("'.' or '..' component"),
            _ => {}
        }
    }
    Ok(Path::new(group))
}

/// Read a whole cgroup file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Read a cgroup file; `None` when it does not exist (controller absent or older kernel).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Write a value to an existing cgroup file in one `write(2)` (no create, no truncate).
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    use std::io::Write;
    let res = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    res.map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Read a file holding one unsigned number.
pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let s = read(path)?;
    s.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        what: format!("expected a number, found {:?}", s.trim()),
    })
}

/// Read a file holding one unsigned number, 0 when the file does not exist.
pub(crate) fn read_u64_or_zero(path: &Path) -> Result<u64, CgroupError> {
    match read_optional(path)? {
        None => Ok(0),
        Some(s) => s.trim().parse().map_err(|_| CgroupError::Parse {
            path: path.to_owned(),
            what: format!("expected a number, found {:?}", s.trim()),
        }),
    }
}

/// Parse a `cgroup.procs` file.
pub(crate) fn read_procs(path: &Path) -> Result<Vec<i32>, CgroupError> {
    let text = read(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| CgroupError::Parse {
                path: path.to_owned(),
                what: format!("expected a pid, found {l:?}"),
            })
        })
        .collect()
}

/// `rmdir` of the leaf; Ok when absent; [`CgroupError::Busy`] when tasks or children remain.
pub(crate) fn rmdir(dir: &Path, procs: impl Fn() -> Vec<i32>) -> Result<(), CgroupError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::Busy {
            path: dir.to_owned(),
            pids: procs(),
            source: Some(e),
        }),
        Err(source) => Err(CgroupError::Remove {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Poll `done` until it says the wanted state is reached, or `timeout` passes. `done` returns
/// `(reached, description of the state)`; the last description is returned on timeout.
/// The end of a freeze: `waited` is [`wait_until`]'s result; on a timeout or an error the group
/// is thawed again (`thaw`) and the error returned.
pub(crate) fn settle_freeze(
    version: &str,
    group: &str,
    dir: PathBuf,
    timeout: Duration,
    waited: Result<Result<(), String>, CgroupError>,
    thaw: impl Fn() -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    match waited {
        Ok(Ok(())) => {
            tracing::debug!(group, version, "cgroup frozen");
            Ok(())
        }
        Ok(Err(last)) => {
            tracing::warn!(group, version, ?timeout, state = %last, "freeze timed out; thawing");
            let thaw_error = thaw().err().map(Box::new);
            Err(CgroupError::FreezeTimeout {
                path: dir,
                timeout,
                state: last,
                thaw_error,
            })
        }
        Err(e) => {
            let _ = thaw();
            Err(e)
        }
    }
}

pub(crate) fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<(bool, String), CgroupError>,
) -> Result<Result<(), String>, CgroupError> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let (ok, state) = done()?;
        if ok {
            return Ok(Ok(()));
        }
        if start.elapsed() >= timeout {
            return Ok(Err(state));
        }
        std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Validate a cpu limit and turn it into a quota in µs for [`CPU_PERIOD_US`].
pub(crate) fn cpu_quota_us(cpus: f64) -> Result<u64, CgroupError> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err(CgroupError::InvalidLimit(format!(
            "cpus must be a positive number of CPUs (0.5 = half a CPU), got {cpus}"
        )));
    }
    let quota = (cpus * CPU_PERIOD_US as f64).round();
    if quota < CPU_MIN_QUOTA_US as f64 {
        return Err(CgroupError::InvalidLimit(format!(
            "cpus {cpus} is below the kernel's minimum of 0.01 CPUs (1 ms per 100 ms period)"
        )));
    }
    // The kernel caps quotas far above any real machine; refuse nonsense early.
    if quota > 1.0e12 {
        return Err(CgroupError::InvalidLimit(format!(
            "cpus {cpus} is too large"
        )));
    }
    Ok(quota as u64)
}

/// Validate a pids limit.
pub(crate) fn check_pids(pids: u64) -> Result<(), CgroupError> {
    if pids == 0 || pids > i32::MAX as u64 {
        return Err(CgroupError::InvalidLimit(format!(
            "pids must be between 1 and {} (None for no limit), got {pids}",
            i32::MAX
        )));
    }
    Ok(())
}

/// Validate a memory limit.
pub(crate) fn check_memory(bytes: u64) -> Result<(), CgroupError> {
    if bytes < stasis_sys::PAGE_SIZE || bytes > i64::MAX as u64 {
        return Err(CgroupError::InvalidLimit(format!(
            "memory limit must be at least one page ({} bytes) and below 2^63, got {bytes}",
            stasis_sys::PAGE_SIZE
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// mountinfo
// ---------------------------------------------------------------------------------------------

/// The cgroup mounts found in a mount table, one per hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    /// v1 hierarchies that carry at least one controller (named-only ones like
    /// `name=systemd` are left out), in mount-table order.
    pub v1: Vec<V1Hierarchy>,
    /// Mount point of the v2 hierarchy.
    pub v2: Option<PathBuf>,
}

/// Superblock options of a v1 `cgroup` mount that are not controller names.
const V1_FLAGS: &[&str] = &[
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
    "all",
    "none",
];

impl Mounts {
    /// Find the cgroup hierarchies in the text of a `mountinfo` file. Pure: touches no file.
    pub fn parse(text: &str) -> Result<Mounts, CgroupError> {
        let entries = stasis_sys::proc::parse_mountinfo(text)
            .map_err(|source| CgroupError::ParseMountinfo { source })?;
        // Several mounts of one hierarchy share a superblock (major:minor): keep one, the one
        // showing the hierarchy's root if there is such a mount.
        let mut v1: Vec<(u32, u32, bool, V1Hierarchy)> = Vec::new();
        let mut v2: Option<(u32, u32, bool, PathBuf)> = None;
        for m in &entries {
            let at_root = m.root == "/";
            match m.fs_type.as_str() {
                "cgroup" => {
                    let controllers: Vec<String> =
                        stasis_sys::proc::split_mount_options(&m.super_options)
                            .into_iter()
                            .filter(|o| !o.contains('=') && !V1_FLAGS.contains(&o.as_str()))
                            .collect();
                    if controllers.is_empty() {
                        continue;
                    }
                    let h = V1Hierarchy {
                        mount: PathBuf::from(&m.mount_point),
                        controllers,
                    };
                    match v1
                        .iter_mut()
                        .find(|(ma, mi, _, _)| (*ma, *mi) == (m.major, m.minor))
                    {
                        Some(slot) if !slot.2 && at_root => *slot = (m.major, m.minor, true, h),
                        Some(_) => {}
                        None => v1.push((m.major, m.minor, at_root, h)),
                    }
                }
                "cgroup2" => match &v2 {
                    Some((_, _, true, _)) => {}
                    Some((_, _, false, _)) if !at_root => {}
                    _ => v2 = Some((m.major, m.minor, at_root, PathBuf::from(&m.mount_point))),
                },
                _ => {}
            }
        }
        Ok(Mounts {
            v1: v1.into_iter().map(|(_, _, _, h)| h).collect(),
            v2: v2.map(|(_, _, _, p)| p),
        })
    }

    /// Read and parse `/proc/self/mountinfo`.
    pub fn detect() -> Result<Mounts, CgroupError> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|source| CgroupError::ReadMountinfo { source })?;
        Mounts::parse(&text)
    }
}

// ---------------------------------------------------------------------------------------------
// the combination
// ---------------------------------------------------------------------------------------------

/// Which hierarchies a host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Only v1 hierarchies (with controllers).
    V1,
    /// Only the unified hierarchy.
    V2,
    /// Both: v1 hierarchies with controllers and a v2 hierarchy.
    Hybrid,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::V1 => "v1",
            Mode::V2 => "v2",
            Mode::Hybrid => "hybrid",
        })
    }
}

/// Which backend serves one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    V1,
    V2,
    Nowhere,
}

/// The combination of hierarchies used for partitions: on a hybrid host freeze through v2 and
/// limits/accounting through v1; on pure v2 everything v2; on pure v1 everything v1 (freezer
/// hierarchy). See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Cgroups {
    mode: Mode,
    v1: Option<V1>,
    v2: Option<V2>,
    freeze: Via,
    memory: Via,
    cpu: Via,
    cpuacct: Via,
    pids: Via,
    io: Via,
}

impl Cgroups {
    /// Find the hierarchies in `/proc/self/mountinfo` and read the v2 root's controllers.
    pub fn detect() -> Result<Cgroups, CgroupError> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|source| CgroupError::ReadMountinfo { source })?;
        Cgroups::from_mountinfo(&text)
    }

    /// Like [`Cgroups::detect`] from the text of a mountinfo file. The v2 mount point named
    /// there must have a readable `cgroup.controllers`.
    pub fn from_mountinfo(text: &str) -> Result<Cgroups, CgroupError> {
        let mounts = Mounts::parse(text)?;
        let v1 = (!mounts.v1.is_empty()).then(|| V1::new(mounts.v1));
        let v2 = mounts.v2.map(V2::new).transpose()?;
        Cgroups::from_backends(v1, v2)
    }

    /// Combine the given backends. A v1 backend whose only useful controller is `freezer` is
    /// dropped when v2 is given (v2 freezes). Fails when neither is given.
    pub fn from_backends(v1: Option<V1>, v2: Option<V2>) -> Result<Cgroups, CgroupError> {
        let freeze_v2 = v2.as_ref().is_some_and(|b| b.can_freeze());
        let v1 = match v1 {
            Some(b) if freeze_v2 => Some(b.without_freezer()),
            other => other,
        }
        .filter(|b| !b.controllers().is_empty());
        let mode = match (&v1, &v2) {
            (Some(_), Some(_)) => Mode::Hybrid,
            (Some(_), None) => Mode::V1,
            (None, Some(_)) => Mode::V2,
            (None, None) => return Err(CgroupError::NoHierarchy),
        };
        let has1 = |c: &str| v1.as_ref().is_some_and(|b| b.has(c));
        let has2 = |c: &str| v2.as_ref().is_some_and(|b| b.has(c));
        let route = |c1: &str, c2: &str| {
            if has2(c2) {
                Via::V2
            } else if has1(c1) {
                Via::V1
            } else {
                Via::Nowhere
            }
        };
        let freeze = if freeze_v2 {
            Via::V2
        } else if v1.as_ref().is_some_and(|b| b.can_freeze()) {
            Via::V1
        } else {
            Via::Nowhere
        };
        let cpuacct = if has1("cpuacct") {
            Via::V1
        } else if v2.is_some() {
            Via::V2 // cpu.stat usage_usec exists in every v2 group
        } else {
            Via::Nowhere
        };
        let c = Cgroups {
            mode,
            freeze,
            memory: route("memory", "memory"),
            cpu: route("cpu", "cpu"),
            cpuacct,
            pids: route("pids", "pids"),
            io: route("blkio", "io"),
            v1,
            v2,
        };
        tracing::debug!(cgroups = %c.describe(), "cgroup hierarchies");
        Ok(c)
    }

    /// A combination of a single v1 backend (freezing through its freezer hierarchy).
    pub fn v1_only(v1: V1) -> Result<Cgroups, CgroupError> {
        Cgroups::from_backends(Some(v1), None)
    }

    /// A combination of a single v2 backend.
    pub fn v2_only(v2: V2) -> Result<Cgroups, CgroupError> {
        Cgroups::from_backends(None, Some(v2))
    }

    /// Which hierarchies the host has.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The v1 backend used (on a hybrid host without the freezer hierarchy).
    pub fn v1(&self) -> Option<&V1> {
        self.v1.as_ref()
    }

    /// The v2 backend used.
    pub fn v2(&self) -> Option<&V2> {
        self.v2.as_ref()
    }

    /// The backend freezing goes through, if any.
    pub fn freezer(&self) -> Option<&dyn Backend> {
        self.backend(self.freeze)
    }

    /// The group of a partition: `stasis/<name>`.
    pub fn group_for(name: &str) -> String {
        format!("{GROUP_PARENT}/{name}")
    }

    fn backend(&self, via: Via) -> Option<&dyn Backend> {
        match via {
            Via::V1 => self.v1.as_ref().map(|b| b as &dyn Backend),
            Via::V2 => self.v2.as_ref().map(|b| b as &dyn Backend),
            Via::Nowhere => None,
        }
    }

    /// Backends a partition's group lives in.
    fn used(&self) -> Vec<&dyn Backend> {
        let mut out: Vec<&dyn Backend> = Vec::new();
        if let Some(b) = &self.v1 {
            out.push(b);
        }
        if let Some(b) = &self.v2 {
            out.push(b);
        }
        out
    }

    /// One line saying what goes where, e.g. `hybrid: freeze v2 (/sys/fs/cgroup/unified),
    /// limits and accounting v1 (memory, cpu, cpuacct, pids, blkio)`.
    pub fn describe(&self) -> String {
        let freeze = match self.freeze {
            Via::V2 => format!(
                "freeze v2 ({})",
                self.v2
                    .as_ref()
                    .map_or(String::new(), |b| b.mount().display().to_string())
            ),
            Via::V1 => format!(
                "freeze v1 ({})",
                self.v1
                    .as_ref()
                    .and_then(|b| b.mount_of("freezer"))
                    .map_or(String::new(), |p| p.display().to_string())
            ),
            Via::Nowhere => "no freezer".to_owned(),
        };
        let mut parts = Vec::new();
        if let Some(b) = &self.v1 {
            parts.push(format!("v1 ({})", b.controllers().join(", ")));
        }
        if let Some(b) = &self.v2 {
            let mut list = b.controllers();
            if self.cpuacct == Via::V2 && !b.has("cpu") {
                list.push("cpu.stat".to_owned());
            }
            if !list.is_empty() {
                parts.push(format!("v2 ({})", list.join(", ")));
            }
        }
        let mut s = format!("{}: {freeze}, ", self.mode);
        if parts.is_empty() {
            s.push_str("no limits or accounting controllers");
        } else {
            s.push_str("limits and accounting ");
            s.push_str(&parts.join(" and "));
        }
        let missing: Vec<&str> = [
            ("memory", self.memory),
            ("cpu", self.cpu),
            ("pids", self.pids),
            ("io", self.io),
        ]
        .iter()
        .filter(|(_, v)| *v == Via::Nowhere)
        .map(|(n, _)| *n)
        .collect();
        if !missing.is_empty() {
            s.push_str(&format!("; not available: {}", missing.join(", ")));
        }
        s
    }

    /// Create the group in every hierarchy used. Idempotent.
    pub fn create(&self, group: &str) -> Result<(), CgroupError> {
        for b in self.used() {
            b.create(group)?;
        }
        Ok(())
    }

    /// True when the group exists in every hierarchy used.
    pub fn exists(&self, group: &str) -> bool {
        self.used().iter().all(|b| b.exists(group))
    }

    /// Move a process into the group in every hierarchy used.
    pub fn attach(&self, group: &str, pid: i32) -> Result<(), CgroupError> {
        for b in self.used() {
            b.attach(group, pid)?;
        }
        Ok(())
    }

    /// Processes in the group in any hierarchy used, sorted.
    pub fn procs(&self, group: &str) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for b in self.used() {
            all.extend(b.procs(group)?);
        }
        Ok(all.into_iter().collect())
    }

    /// Apply limits, each through the hierarchy that has its controller. A `Some` limit whose
    /// controller is nowhere is [`CgroupError::MissingController`] (nothing is written then).
    pub fn set_limits(&self, group: &str, l: &Limits) -> Result<(), CgroupError> {
        for (asked, via, name) in [
            (l.memory_bytes.is_some(), self.memory, "memory"),
            (l.cpus.is_some(), self.cpu, "cpu"),
            (l.pids.is_some(), self.pids, "pids"),
        ] {
            if asked && via == Via::Nowhere {
                return Err(CgroupError::MissingController { controller: name });
            }
        }
        for (via, b) in [
            (Via::V1, self.backend(Via::V1)),
            (Via::V2, self.backend(Via::V2)),
        ] {
            let Some(b) = b else { continue };
            let pick = |v: Via| v == via;
            let part = Limits {
                memory_bytes: l.memory_bytes.filter(|_| pick(self.memory)),
                cpus: l.cpus.filter(|_| pick(self.cpu)),
                pids: l.pids.filter(|_| pick(self.pids)),
            };
            b.set_limits(group, &part)?;
        }
        Ok(())
    }

    /// Read the limits, each from the hierarchy that has its controller.
    pub fn limits(&self, group: &str) -> Result<Limits, CgroupError> {
        let l1 = match self.backend(Via::V1) {
            Some(b) => b.limits(group)?,
            None => Limits::default(),
        };
        let l2 = match self.backend(Via::V2) {
            Some(b) => b.limits(group)?,
            None => Limits::default(),
        };
        let pick = |via: Via, a: Limits, b: Limits| match via {
            Via::V1 => a,
            Via::V2 => b,
            Via::Nowhere => Limits::default(),
        };
        Ok(Limits {
            memory_bytes: pick(self.memory, l1, l2).memory_bytes,
            cpus: pick(self.cpu, l1, l2).cpus,
            pids: pick(self.pids, l1, l2).pids,
        })
    }

    /// Read the counters, each from the hierarchy that has its controller.
    pub fn usage(&self, group: &str) -> Result<Usage, CgroupError> {
        let u1 = match self.backend(Via::V1) {
            Some(b) => b.usage(group)?,
            None => Usage::default(),
        };
        let u2 = match self.backend(Via::V2) {
            Some(b) => b.usage(group)?,
            None => Usage::default(),
        };
        let pick = |via: Via| match via {
            Via::V1 => u1,
            Via::V2 => u2,
            Via::Nowhere => Usage::default(),
        };
        Ok(Usage {
            cpu_ns: pick(self.cpuacct).cpu_ns,
            memory_bytes: pick(self.memory).memory_bytes,
            memory_peak_bytes: pick(self.memory).memory_peak_bytes,
            oom_kills: pick(self.memory).oom_kills,
            io_read_bytes: pick(self.io).io_read_bytes,
            io_write_bytes: pick(self.io).io_write_bytes,
            pids: pick(self.pids).pids,
        })
    }

    /// Freeze the group through v2 when mounted, else through the v1 freezer.
    pub fn freeze(&self, group: &str, timeout: Duration) -> Result<(), CgroupError> {
        self.freezer()
            .ok_or(CgroupError::NoFreezer)?
            .freeze(group, timeout)
    }

    /// Whether the group is asked to be frozen (v2 `cgroup.freeze` is 1, or v1
    /// `freezer.state` is not THAWED).
    pub fn is_frozen(&self, group: &str) -> Result<bool, CgroupError> {
        check_group(group)?;
        let (path, v2) = match self.freeze {
            Via::V2 => match self.v2.as_ref().and_then(|b| b.path(group)) {
                Some(p) => (p.join("cgroup.freeze"), true),
                None => return Ok(false),
            },
            Via::V1 => match self.v1.as_ref().and_then(|b| b.path("freezer", group)) {
                Some(p) => (p.join("freezer.state"), false),
                None => return Ok(false),
            },
            Via::Nowhere => return Ok(false),
        };
        match std::fs::read_to_string(&path) {
            Ok(t) if v2 => Ok(t.trim() == "1"),
            Ok(t) => Ok(t.trim() != "THAWED"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(CgroupError::Read { path, source }),
        }
    }

    /// Thaw the group (through the same hierarchy as [`Cgroups::freeze`]).
    pub fn thaw(&self, group: &str) -> Result<(), CgroupError> {
        self.freezer().ok_or(CgroupError::NoFreezer)?.thaw(group)
    }

    /// Remove the group (leaf only) from every hierarchy used. Nothing is removed while any
    /// hierarchy still shows tasks in it; otherwise it is removed wherever possible and the
    /// first failure (e.g. child groups left) is returned. Ok when absent.
    pub fn remove(&self, group: &str) -> Result<(), CgroupError> {
        check_group(group)?;
        for b in self.used() {
            if !b.exists(group) {
                continue;
            }
            let pids = b.procs(group)?;
            if !pids.is_empty() {
                return Err(CgroupError::Busy {
                    path: PathBuf::from(group),
                    pids,
                    source: None,
                });
            }
        }
        // Remove it everywhere we can, reporting the first failure.
        let mut first = None;
        for b in self.used() {
            if let Err(e) = b.remove(group) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Backend for Cgroups {
    /// `"v1"`, `"v2"` or `"hybrid"`.
    fn version(&self) -> &'static str {
        match self.mode {
            Mode::V1 => "v1",
            Mode::V2 => "v2",
            Mode::Hybrid => "hybrid",
        }
    }
    fn controllers(&self) -> Vec<String> {
        self.used().iter().flat_map(|b| b.controllers()).collect()
    }
    fn can_freeze(&self) -> bool {
        self.freeze != Via::Nowhere
    }
    fn create(&self, group: &str) -> Result<(), CgroupError> {
        Cgroups::create(self, group)
    }
    fn exists(&self, group: &str) -> bool {
        Cgroups::exists(self, group)
    }
    fn attach(&self, group: &str, pid: i32) -> Result<(), CgroupError> {
        Cgroups::attach(self, group, pid)
    }
    fn procs(&self, group: &str) -> Result<Vec<i32>, CgroupError> {
        Cgroups::procs(self, group)
    }
    fn set_limits(&self, group: &str, l: &Limits) -> Result<(), CgroupError> {
        Cgroups::set_limits(self, group, l)
    }
    fn limits(&self, group: &str) -> Result<Limits, CgroupError> {
        Cgroups::limits(self, group)
    }
    fn usage(&self, group: &str) -> Result<Usage, CgroupError> {
        Cgroups::usage(self, group)
    }
    fn freeze(&self, group: &str, timeout: Duration) -> Result<(), CgroupError> {
        Cgroups::freeze(self, group, timeout)
    }
    fn thaw(&self, group: &str) -> Result<(), CgroupError> {
        Cgroups::thaw(self, group)
    }
    fn remove(&self, group: &str) -> Result<(), CgroupError> {
        Cgroups::remove(self, group)
    }
}

#[cfg(test)]
mod tests;
