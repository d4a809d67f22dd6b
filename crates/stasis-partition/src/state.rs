//! Where partitions live on disk, and their records.
//!
//! Everything is under one root directory (`--root`, default `/var/lib/stasis`), so every verb
//! works with no daemon running:
//!
//! ```text
//! ROOT/partitions/NAME/partition.json   the record (spec, state, pids, exit, carried accounting)
//! ROOT/partitions/NAME/output.log       the partition's stdout and stderr
//! ROOT/partitions/NAME/stats.jsonl      accounting samples, one JSON object a line
//! ROOT/partitions/NAME/.lock            flock(2) taken by every writer of the record
//! ```
//!
//! The record is replaced atomically (temp file, fsync, rename, fsync of the directory) under
//! the lock, so a reader never sees half a record and two writers never lose an update.

use crate::cgroup::{Limits, Usage};
use serde::{Deserialize, Serialize};
use stasis_image::name::{Name, NameError};
use stasis_image::safefs::{Dir, PRIVATE_DIR, PRIVATE_FILE};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Default root directory.
pub const DEFAULT_ROOT: &str = "/var/lib/stasis";

/// Errors about partition records.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No partition of that name.
    #[error("no partition named '{0}' (see `stasis ps`)")]
    NotFound(String),
    /// The name is not usable as a directory name / hostname.
    #[error("bad partition name")]
    BadName(#[from] NameError),
    /// A file could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The record does not parse.
    #[error("partition record {path} is corrupt: remove the partition with `stasis rm -f`")]
    Corrupt {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// How the partition is connected to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Shares the host's network namespace.
    #[default]
    Host,
    /// Own network namespace with loopback only.
    None,
    /// Own network namespace joined to the host by a veth pair.
    Veth,
}

/// A network mode that is not one of host, none, veth.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network mode '{0}': use host, none or veth")]
pub struct UnknownNetMode(pub String);

impl std::str::FromStr for NetMode {
    type Err = UnknownNetMode;
    fn from_str(s: &str) -> Result<Self, UnknownNetMode> {
        match s {
            "host" => Ok(NetMode::Host),
            "none" => Ok(NetMode::None),
            "veth" => Ok(NetMode::Veth),
            _ => Err(UnknownNetMode(s.to_string())),
        }
    }
}

/// The veth pair of a `--net veth` partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Veth {
    /// Interface name on the host side.
    pub host_if: String,
    /// Interface name inside the partition.
    pub inner_if: String,
    /// Host-side address with prefix, e.g. 10.231.7.1/30.
    pub host_addr: String,
    /// Partition-side address with prefix, e.g. 10.231.7.2/30.
    pub inner_addr: String,
}

/// What the partition was asked to be (kept across checkpoint and restore).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Command and arguments of the first process.
    pub cmd: Vec<String>,
    /// Network mode.
    #[serde(default)]
    pub net: NetMode,
    /// The veth pair, for `--net veth`.
    #[serde(default)]
    pub veth: Option<Veth>,
    /// Own root filesystem (pivot_root into it), or None to share the host's.
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
    /// Hostname inside the partition (empty in a request: the partition's name).
    #[serde(default)]
    pub hostname: String,
    /// Working directory of the first process.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Extra environment (KEY=VALUE) of the first process.
    #[serde(default)]
    pub env: Vec<String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
}

/// Lifecycle state of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Being created or restored.
    Starting,
    /// The first process runs.
    Running,
    /// Ended by `stasis stop`.
    Stopped,
    /// The first process exited or was killed without being asked to.
    Exited,
    /// Ended by a checkpoint (its image can be restored).
    Checkpointed,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopped => "stopped",
            State::Exited => "exited",
            State::Checkpointed => "checkpointed",
        })
    }
}

/// How the first process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal, if it was killed by one.
    pub signal: Option<i32>,
    /// When (unix seconds).
    pub at: u64,
}

/// The record of one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Name.
    pub name: String,
    /// What it runs and how.
    pub spec: Spec,
    /// Lifecycle state.
    pub state: State,
    /// Host pid of the first process, while it runs.
    pub pid: Option<i32>,
    /// Host pid of the monitor, while it runs.
    pub monitor_pid: Option<i32>,
    /// Creation time (unix seconds) of the current incarnation.
    pub started_at: u64,
    /// How the last incarnation ended.
    #[serde(default)]
    pub exit: Option<ExitInfo>,
    /// Incarnation number: 1 at `run`, +1 at each restore.
    #[serde(default)]
    pub incarnation: u32,
    /// Image this incarnation was restored from.
    #[serde(default)]
    pub restored_from: Option<PathBuf>,
    /// Accounting of earlier incarnations (added to the cgroup's counters).
    #[serde(default)]
    pub carried: Usage,
    /// Set by `stop`/`checkpoint` just before they end the partition, so the monitor records
    /// the right state.
    #[serde(default)]
    pub ending: Option<State>,
    /// Inode of the pipe the partition's stdout and stderr go to (its monitor reads it); a
    /// checkpoint records it so a restore can attach the new monitor's pipe in its place.
    #[serde(default)]
    pub log_pipe_ino: u64,
}

impl Record {
    /// A new record of a partition about to start (incarnation 1, nothing carried).
    pub fn starting(name: &str, spec: Spec) -> Record {
        Record {
            name: name.to_string(),
            spec,
            state: State::Starting,
            pid: None,
            monitor_pid: None,
            started_at: now(),
            exit: None,
            incarnation: 1,
            restored_from: None,
            carried: Usage::default(),
            ending: None,
            log_pipe_ino: 0,
        }
    }
}

/// Paths of one partition.
#[derive(Debug, Clone)]
pub struct Paths {
    /// ROOT/partitions/NAME.
    pub dir: PathBuf,
}

impl Paths {
    /// The record file.
    pub fn record(&self) -> PathBuf {
        self.dir.join("partition.json")
    }
    /// The output log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("output.log")
    }
    /// Accounting samples.
    pub fn stats(&self) -> PathBuf {
        self.dir.join("stats.jsonl")
    }
    /// Lock file.
    pub fn lock(&self) -> PathBuf {
        self.dir.join(".lock")
    }
}

/// The root directory.
#[derive(Debug, Clone)]
pub struct Root {
    /// Its path.
    pub path: PathBuf,
}

fn check_name(name: &str) -> Result<(), StateError> {
    Ok(Name::check(name)?)
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.display().to_string();
    move |source| StateError::Io { what, path, source }
}

/// Open (creating it if missing) the root directory `path` as a private directory: mode
/// 0700 whatever the umask; an existing root with a looser mode is tightened (and said so).
/// The one looser mode kept is the group's search bit (0710) of a root whose group is not
/// root's: the agent sets it, with the admin group as the root's group, when that group may
/// reach its API socket through the root (`stasis agent --admin-group`); search alone lists
/// nothing. Its last component must not be a symlink.
pub fn private_root(path: &Path) -> std::io::Result<Dir> {
    let existed = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    let d = Dir::open(path).or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Dir::create_all(path, PRIVATE_DIR)
        } else {
            Err(e)
        }
    })?;
    let st = d.stat_self()?;
    let mode = st.st_mode & 0o7777;
    let group_search = if st.st_gid != 0 { mode & 0o010 } else { 0 };
    let allowed = PRIVATE_DIR | group_search;
    if mode != allowed {
        d.chmod(allowed)?;
        if existed {
            tracing::warn!(root = %path.display(), mode = format!("{mode:o}"), now = format!("{allowed:o}"), "the root directory was not private: its mode is tightened");
        }
    }
    Ok(d)
}

/// Open the directory `path` (not following a symlink in its last component); `None` if it
/// does not exist.
fn open_dir_opt(path: &Path) -> std::io::Result<Option<Dir>> {
    match Dir::open(path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An exclusive lock on a partition's record (released on drop).
pub struct Lock {
    _file: File,
}

impl Root {
    /// A root at `path` (created on first write).
    pub fn new(path: impl Into<PathBuf>) -> Root {
        Root { path: path.into() }
    }

    /// Paths of partition `name`.
    pub fn paths(&self, name: &str) -> Paths {
        Paths {
            dir: self.path.join("partitions").join(name),
        }
    }

    /// Names of every partition, sorted.
    pub fn names(&self) -> Result<Vec<String>, StateError> {
        let dir = self.path.join("partitions");
        let mut out = Vec::new();
        let Some(d) = open_dir_opt(&dir).map_err(io("listing", &dir))? else {
            return Ok(out);
        };
        for e in d.entries().map_err(io("listing", &dir))? {
            let Some(n) = e.to_str().filter(|n| Name::check(n).is_ok()) else {
                continue;
            };
            let has_record = d
                .open_dir(n)
                .and_then(|p| p.exists("partition.json"))
                .unwrap_or(false);
            if has_record {
                out.push(n.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// The directory of partition `name`, created (0700, under a private root) if missing.
    pub fn ensure_dir(&self, name: &str) -> Result<Dir, StateError> {
        check_name(name)?;
        let parts = self.path.join("partitions");
        let root = private_root(&self.path).map_err(io("creating", &self.path))?;
        let parts_dir = root
            .ensure_dir("partitions", PRIVATE_DIR)
            .map_err(io("creating", &parts))?;
        parts_dir
            .ensure_dir(name, PRIVATE_DIR)
            .map_err(io("creating", &self.paths(name).dir))
    }

    /// The directory of existing partition `name` ([`StateError::NotFound`] otherwise).
    pub fn open_dir(&self, name: &str) -> Result<Dir, StateError> {
        check_name(name)?;
        let p = self.paths(name);
        match Dir::open(&p.dir) {
            Ok(d) => Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StateError::NotFound(name.to_string()))
            }
            Err(e) => Err(io("opening", &p.dir)(e)),
        }
    }

    /// Take the lock of partition `name` (creating its directory).
    pub fn lock(&self, name: &str) -> Result<Lock, StateError> {
        let p = self.paths(name);
        let d = self.ensure_dir(name)?;
        let f = d
            .open_append(".lock", PRIVATE_FILE)
            .map_err(io("opening", &p.lock()))?;
        stasis_sys::sys::flock_exclusive(&f).map_err(io("locking", &p.lock()))?;
        Ok(Lock { _file: f })
    }

    /// Take the lock of partition `name` if nobody holds it (`None` otherwise).
    pub fn try_lock(&self, name: &str) -> Result<Option<Lock>, StateError> {
        check_name(name)?;
        let p = self.paths(name);
        let f = Dir::open(&p.dir)
            .and_then(|d| d.open_append(".lock", PRIVATE_FILE))
            .map_err(io("opening", &p.lock()))?;
        if stasis_sys::sys::flock_try_exclusive(&f).map_err(io("locking", &p.lock()))? {
            Ok(Some(Lock { _file: f }))
        } else {
            Ok(None)
        }
    }

    /// Read the record of `name`.
    pub fn load(&self, name: &str) -> Result<Record, StateError> {
        let dir = self.open_dir(name)?;
        let path = self.paths(name).record();
        let text = match dir.read("partition.json") {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(name.to_string()))
            }
            Err(e) => return Err(io("reading", &path)(e)),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt {
            path: path.display().to_string(),
            source,
        })
    }

    /// Write the record (atomically). The caller holds the lock.
    pub fn save(&self, rec: &Record, _lock: &Lock) -> Result<(), StateError> {
        let d = self.ensure_dir(&rec.name)?;
        let path = self.paths(&rec.name).record();
        let body = serde_json::to_vec_pretty(rec).expect("record serializes");
        d.write_atomic("partition.json", &body, PRIVATE_FILE)
            .map_err(io("writing", &path))
    }

    /// Take the lock of an existing partition (never creates anything: a partition removed
    /// meanwhile is [`StateError::NotFound`], and its directory stays gone).
    pub fn lock_existing(&self, name: &str) -> Result<Lock, StateError> {
        let p = self.paths(name);
        let f = match self.open_dir(name)?.open_file(".lock") {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(name.to_string()))
            }
            Err(e) => return Err(io("opening", &p.lock())(e)),
        };
        stasis_sys::sys::flock_exclusive(&f).map_err(io("locking", &p.lock()))?;
        Ok(Lock { _file: f })
    }

    /// Read-modify-write under the lock (of an existing partition).
    pub fn update<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Record) -> T,
    ) -> Result<(Record, T), StateError> {
        let lock = self.lock_existing(name)?;
        let mut rec = self.load(name)?;
        let out = f(&mut rec);
        self.save(&rec, &lock)?;
        Ok((rec, out))
    }
}

/// Current unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Is `pid` alive and the process we recorded (not a zombie, not gone)?
pub fn alive(pid: i32) -> bool {
    match stasis_sys::proc::read_stat(pid) {
        Ok(s) => s.state != 'Z' && s.state != 'X',
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "web-1", "db_2.x", &"x".repeat(63)] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".a", "-a", "a/b", "a b", &"x".repeat(64), ".."] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn private_modes_and_no_links() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = Root::new(d.path());
        let l = root.lock("p").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(d.path()), 0o700);
        assert_eq!(mode(&d.path().join("partitions")), 0o700);
        assert_eq!(mode(&root.paths("p").dir), 0o700);
        assert_eq!(mode(&root.paths("p").lock()), 0o600);
        drop(l);
        // A link planted as a partition's directory is not followed.
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.paths("q").dir).unwrap();
        assert!(root.lock("q").is_err());
        assert!(root.load("q").is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn record_roundtrip_and_lock() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let rec = Record {
            state: State::Running,
            pid: Some(5),
            monitor_pid: Some(4),
            ..Record::starting(
                "p1",
                Spec {
                    cmd: vec!["sleep".into(), "1".into()],
                    net: NetMode::None,
                    veth: None,
                    rootfs: None,
                    hostname: "p1".into(),
                    cwd: None,
                    env: vec![],
                    limits: Limits::default(),
                },
            )
        };
        let l = root.lock("p1").unwrap();
        root.save(&rec, &l).unwrap();
        drop(l);
        assert_eq!(root.load("p1").unwrap(), rec);
        assert_eq!(root.names().unwrap(), vec!["p1".to_string()]);
        let (r2, ()) = root.update("p1", |r| r.state = State::Stopped).unwrap();
        assert_eq!(r2.state, State::Stopped);
        assert!(matches!(root.load("nope"), Err(StateError::NotFound(_))));
    }
}
