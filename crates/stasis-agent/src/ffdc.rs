//! First-failure data capture (DESIGN.md C9).
//!
//! Every failure of a supervised workload writes a *bundle* so an operator can see what
//! happened after the fact, even across agent restarts:
//!
//! ```text
//! DIR/<workload>/<unix_ms>-<seq>/
//!     failure.json      the Failure record (serde JSON)
//!     summary.txt       human-readable summary, including every truncation and error
//!     output.tail       the last bytes of the partition's output.log, cut at a line start
//!     agent.log.tail    agent log lines mentioning the workload (when an agent log is given)
//!     proc/<pid>/...    a /proc snapshot when the process still exists (hang, failed probe)
//! ```
//!
//! A bundle appears atomically: it is written into `DIR/<workload>/.tmp-<id>`, every file and
//! directory is fsynced, the directory is renamed to its final name and the parent is fsynced.
//! A crash mid-write leaves only a `.tmp-` directory, which [`list`] ignores.
//!
//! Bundle ids are `<unix_ms>-<seq>` where `unix_ms` is the failure time and `seq` the lowest
//! number free for that workload and millisecond; the id is claimed by creating the temp
//! directory (an atomic `mkdir`), so concurrent writers — threads or processes — never share one.
//!
//! Every file and directory of a bundle is created relative to an opened directory
//! ([`stasis_image::safefs::Dir`]): directories 0700, files 0600 whatever the umask, never
//! through a symlink — a link planted in `DIR/<workload>/` makes the write fail and touches
//! nothing (bundles hold `/proc/PID/stack`, environment and output: they are root's only).
//!
//! Sizes are bounded: each file is capped at [`Capture::max_file_bytes`] and the /proc walk at
//! [`Capture::max_processes`] processes; truncation is recorded in `summary.txt`.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use stasis_image::name::{Name, NameError};
use stasis_image::safefs::{Dir, PRIVATE_DIR, PRIVATE_FILE};

/// Default number of agent log lines kept.
pub const DEFAULT_AGENT_LOG_LINES: usize = 200;
/// Default number of bytes of the workload's output kept.
pub const DEFAULT_OUTPUT_BYTES: usize = 64 * 1024;
/// Default cap for any single file of a bundle.
pub const DEFAULT_MAX_FILE_BYTES: usize = 1024 * 1024;
/// Default cap for the number of processes in a /proc snapshot.
pub const DEFAULT_MAX_PROCESSES: usize = 64;
/// Cap for the number of tasks (threads) snapshotted per process.
pub const MAX_TASKS_PER_PROCESS: usize = 256;
/// How much of the end of the agent log is scanned for lines about the workload.
const AGENT_LOG_SCAN_BYTES: u64 = 8 * 1024 * 1024;
/// Upper bound on the sequence numbers tried for one millisecond.
const MAX_SEQ: u32 = 100_000;
/// Prefix of bundle directories still being written.
const TMP_PREFIX: &str = ".tmp-";

/// How a workload failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureKind {
    /// Exited on its own with this status code.
    Exit {
        /// The exit code.
        code: i32,
    },
    /// Killed by a signal.
    Signal {
        /// The signal number.
        signo: i32,
    },
    /// Killed by the OOM killer (seen in the cgroup's events).
    OomKill,
    /// A health probe failed past its threshold.
    ProbeFailed {
        /// Which probe (e.g. `exec`, `tcp:8080`).
        probe: String,
        /// What it reported.
        detail: String,
    },
    /// Restoring from an image failed.
    RestoreFailed {
        /// What went wrong.
        detail: String,
    },
    /// The workload stopped making progress.
    Hang,
    /// The agent panicked while handling the workload (a bug in stasis): the workload is
    /// marked failed, the other workloads are supervised on.
    Panic {
        /// The panic message.
        message: String,
    },
    /// It ended some other way (stopped from outside the agent, its record vanished).
    Ended {
        /// What was seen.
        detail: String,
    },
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureKind::Exit { code } => write!(f, "exited with status {code}"),
            FailureKind::Signal { signo } => write!(f, "killed by signal {signo}"),
            FailureKind::OomKill => write!(f, "killed by the OOM killer"),
            FailureKind::ProbeFailed { probe, detail } => {
                write!(f, "health probe {probe} failed: {detail}")
            }
            FailureKind::RestoreFailed { detail } => write!(f, "restore failed: {detail}"),
            FailureKind::Hang => write!(f, "hang"),
            FailureKind::Panic { message } => {
                write!(f, "the agent panicked while handling it: {message}")
            }
            FailureKind::Ended { detail } => write!(f, "{detail}"),
        }
    }
}

/// One failure of a supervised workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The workload's name (a single path component).
    pub workload: String,
    /// How it failed.
    pub kind: FailureKind,
    /// When the failure was noticed, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Host pid of the partition's first process, if known.
    pub pid: Option<i32>,
    /// The image the workload was running from, if any.
    pub image_in_use: Option<String>,
    /// Which incarnation of the workload failed (0 = first boot).
    pub incarnation: u32,
}

/// What to capture for one failure.
#[derive(Debug, Clone)]
pub struct Capture {
    /// The failure itself.
    pub failure: Failure,
    /// The partition's `output.log`.
    pub output_log: PathBuf,
    /// The agent's log, if it writes one.
    pub agent_log: Option<PathBuf>,
    /// How many agent log lines about the workload to keep.
    pub agent_log_lines: usize,
    /// How many bytes of the workload's output to keep.
    pub output_bytes: usize,
    /// Cap for any single file of the bundle.
    pub max_file_bytes: usize,
    /// Cap for the number of processes in the /proc snapshot.
    pub max_processes: usize,
}

impl Capture {
    /// A capture with the default limits and no agent log.
    pub fn new(failure: Failure, output_log: impl Into<PathBuf>) -> Self {
        Capture {
            failure,
            output_log: output_log.into(),
            agent_log: None,
            agent_log_lines: DEFAULT_AGENT_LOG_LINES,
            output_bytes: DEFAULT_OUTPUT_BYTES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_processes: DEFAULT_MAX_PROCESSES,
        }
    }
}

/// A bundle as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInfo {
    /// The bundle's directory name, `<unix_ms>-<seq>`.
    pub id: String,
    /// The workload that failed.
    pub workload: String,
    /// The bundle's directory.
    pub path: PathBuf,
    /// The failure record.
    pub failure: Failure,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Path relative to the bundle directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// A bundle as shown: its record, its files and its main texts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Where it is and what failed.
    pub info: BundleInfo,
    /// Every file, sorted by path.
    pub files: Vec<BundleFile>,
    /// `summary.txt`.
    pub summary: String,
    /// `output.tail`, if present (lossy UTF-8).
    pub output_tail: Option<String>,
    /// `agent.log.tail`, if present (lossy UTF-8).
    pub agent_log_tail: Option<String>,
}

impl Bundle {
    /// Reads one file of the bundle by its relative path (as in [`Bundle::files`]).
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, FfdcError> {
        let rel_path = Path::new(rel);
        if rel.is_empty()
            || !rel_path
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(FfdcError::InvalidPath(rel.to_string()));
        }
        let path = self.info.path.join(rel_path);
        fs::read(&path).map_err(|source| FfdcError::Io {
            what: "read",
            path,
            source,
        })
    }
}

/// Errors of the FFDC module.
#[derive(Debug, thiserror::Error)]
pub enum FfdcError {
    /// A file system operation failed.
    #[error("FFDC: cannot {what} {path}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A failure record could not be encoded or decoded.
    #[error("FFDC: bad failure record {path}")]
    Json {
        /// The `failure.json` concerned.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The workload name cannot be used as a directory name.
    #[error("FFDC: invalid workload name")]
    InvalidWorkload(#[from] NameError),
    /// A relative path inside a bundle escapes it or is malformed.
    #[error("FFDC: invalid path {0:?} inside a bundle")]
    InvalidPath(String),
    /// No bundle has this id.
    #[error("FFDC: no bundle {id:?} under {dir}")]
    NotFound {
        /// The FFDC directory searched.
        dir: PathBuf,
        /// The id asked for.
        id: String,
    },
    /// Several workloads have a bundle with this id.
    #[error("FFDC: bundle id {id:?} is ambiguous; use one of {candidates:?}")]
    Ambiguous {
        /// The id asked for.
        id: String,
        /// `workload/id` forms that match.
        candidates: Vec<String>,
    },
    /// No free bundle id could be found (should not happen).
    #[error("FFDC: no free bundle id for {unix_ms} under {dir}")]
    NoFreeId {
        /// The workload directory.
        dir: PathBuf,
        /// The millisecond concerned.
        unix_ms: u64,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FfdcError + 'a {
    move |source| FfdcError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn check_workload(name: &str) -> Result<(), FfdcError> {
    Ok(Name::check(name)?)
}

/// Parses a bundle id `<unix_ms>-<seq>`.
fn parse_id(id: &str) -> Option<(u64, u32)> {
    let (ms, seq) = id.split_once('-')?;
    if ms.is_empty() || seq.is_empty() || !ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn fsync_dir(d: &Dir) -> Result<(), FfdcError> {
    d.sync().map_err(io_err("fsync directory", d.path()))
}

/// Writes `data` to the new file `name` of `d` (0600, never through a link) and fsyncs it.
fn write_file(d: &Dir, name: &str, data: &[u8]) -> Result<(), FfdcError> {
    let path = d.child_path(name);
    let mut f = d
        .create_file(name, PRIVATE_FILE)
        .map_err(io_err("create", &path))?;
    f.write_all(data).map_err(io_err("write", &path))?;
    f.sync_all().map_err(io_err("fsync", &path))
}

/// Creates the directory `name` of `d` (0700).
fn make_dir(d: &Dir, name: &str) -> Result<Dir, FfdcError> {
    d.create_dir(name, PRIVATE_DIR)
        .map_err(io_err("create directory", &d.child_path(name)))
}

/// Notes kept while writing a bundle, rendered into `summary.txt`.
#[derive(Default)]
struct Notes {
    lines: Vec<String>,
}

impl Notes {
    fn add(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }
}

/// Writes one FFDC bundle for `c` under `dir` (e.g. `REPO/ffdc`) and returns where it is.
pub fn write_bundle(dir: &Path, c: &Capture) -> Result<BundleInfo, FfdcError> {
    let f = &c.failure;
    check_workload(&f.workload)?;
    let root = Dir::create_all(dir, PRIVATE_DIR).map_err(io_err("create directory", dir))?;
    let wpath = dir.join(&f.workload);
    let created = !root.exists(&f.workload).map_err(io_err("stat", &wpath))?;
    // A link planted as the workload's directory fails here (never followed).
    let wdir = root
        .ensure_dir(&f.workload, PRIVATE_DIR)
        .map_err(io_err("open directory", &wpath))?;
    if created {
        fsync_dir(&root)?;
    }

    // Claim an id: mkdir of the temp dir is atomic, and the final name is checked after the
    // claim (a finished bundle's final dir exists before its temp dir disappears).
    let mut claimed = None;
    for seq in 0..MAX_SEQ {
        let id = format!("{}-{}", f.at_unix_ms, seq);
        let tmp_name = format!("{TMP_PREFIX}{id}");
        let tmp = match wdir.create_dir(&tmp_name, PRIVATE_DIR) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(FfdcError::Io {
                    what: "create directory",
                    path: wdir.child_path(&tmp_name),
                    source: e,
                })
            }
        };
        if wdir.exists(&id).unwrap_or(true) {
            let _ = wdir.remove_all(&tmp_name);
            continue;
        }
        claimed = Some((id, tmp_name, tmp));
        break;
    }
    let Some((id, tmp_name, tmp)) = claimed else {
        return Err(FfdcError::NoFreeId {
            dir: wpath,
            unix_ms: f.at_unix_ms,
        });
    };

    match fill_bundle(&tmp, c) {
        Ok(()) => {}
        Err(e) => {
            let _ = wdir.remove_all(&tmp_name);
            return Err(e);
        }
    }
    let path = wpath.join(&id);
    if let Err(source) = wdir.rename(&tmp_name, &id) {
        let _ = wdir.remove_all(&tmp_name);
        return Err(FfdcError::Io {
            what: "rename bundle into place",
            path,
            source,
        });
    }
    fsync_dir(&wdir)?;
    tracing::info!(workload = %f.workload, id = %id, path = %path.display(), kind = %f.kind, "FFDC bundle written");
    Ok(BundleInfo {
        id,
        workload: f.workload.clone(),
        path,
        failure: f.clone(),
    })
}

fn fill_bundle(tmp: &Dir, c: &Capture) -> Result<(), FfdcError> {
    let f = &c.failure;
    let mut notes = Notes::default();

    let json = serde_json::to_vec_pretty(f).map_err(|source| FfdcError::Json {
        path: tmp.child_path("failure.json"),
        source,
    })?;
    write_file(tmp, "failure.json", &json)?;

    // The workload's output.
    let out_cap = c.output_bytes.min(c.max_file_bytes);
    match output_tail(&c.output_log, out_cap) {
        Ok(tail) => {
            write_file(tmp, "output.tail", &tail.data)?;
            let mut s = format!(
                "output.tail: {} of {} bytes of {}",
                tail.data.len(),
                tail.total,
                c.output_log.display()
            );
            if tail.truncated {
                s.push_str(if tail.mid_line {
                    " (truncated; no line start in the window, cut mid-line)"
                } else {
                    " (truncated at a line start)"
                });
            }
            notes.add(s);
        }
        Err(e) => {
            tracing::warn!(workload = %f.workload, path = %c.output_log.display(), error = %e, "FFDC: cannot read the output log");
            notes.add(format!(
                "output.tail: cannot read {}: {e}",
                c.output_log.display()
            ));
        }
    }

    // The agent's log lines about this workload.
    if let Some(log) = &c.agent_log {
        match agent_log_tail(log, &f.workload, c.agent_log_lines, c.max_file_bytes) {
            Ok((data, kept, matched)) => {
                write_file(tmp, "agent.log.tail", &data)?;
                let mut s = format!(
                    "agent.log.tail: {kept} lines mentioning {:?} from {}",
                    f.workload,
                    log.display()
                );
                if kept < matched {
                    let _ = write!(s, " (truncated: {matched} matched)");
                }
                notes.add(s);
            }
            Err(e) => {
                tracing::warn!(workload = %f.workload, path = %log.display(), error = %e, "FFDC: cannot read the agent log");
                notes.add(format!(
                    "agent.log.tail: cannot read {}: {e}",
                    log.display()
                ));
            }
        }
    }

    // The /proc snapshot, when the process is still there.
    let mut procs = Vec::new();
    if let Some(pid) = f.pid {
        if pid > 0 && Path::new(&format!("/proc/{pid}")).is_dir() {
            let pdir = make_dir(tmp, "proc")?;
            procs = snapshot_tree(&pdir, pid, c, &mut notes)?;
            fsync_dir(&pdir)?;
        } else {
            notes.add(format!(
                "proc: process {pid} no longer exists; no /proc snapshot"
            ));
        }
    }

    let summary = render_summary(f, &procs, &notes);
    write_file(
        tmp,
        "summary.txt",
        &cap_bytes(summary.into_bytes(), c.max_file_bytes),
    )?;
    fsync_dir(tmp)
}

fn render_summary(f: &Failure, procs: &[(i32, String)], notes: &Notes) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "FFDC bundle for workload {:?}", f.workload);
    let _ = writeln!(s, "failure:      {}", f.kind);
    let _ = writeln!(s, "at (unix ms): {}", f.at_unix_ms);
    let _ = writeln!(s, "incarnation:  {}", f.incarnation);
    if let Some(pid) = f.pid {
        let _ = writeln!(s, "pid:          {pid}");
    }
    let _ = writeln!(
        s,
        "image in use: {}",
        f.image_in_use
            .as_deref()
            .unwrap_or("none (started from its boot command)")
    );
    if !procs.is_empty() {
        let _ = writeln!(s, "\nprocesses ({}):", procs.len());
        for (pid, cmd) in procs {
            let _ = writeln!(s, "  {pid:>8}  {cmd}");
        }
    }
    let _ = writeln!(s, "\nnotes:");
    for n in &notes.lines {
        let _ = writeln!(s, "  - {n}");
    }
    s
}

fn cap_bytes(mut data: Vec<u8>, cap: usize) -> Vec<u8> {
    if data.len() > cap {
        data.truncate(cap);
    }
    data
}

struct Tail {
    data: Vec<u8>,
    total: u64,
    truncated: bool,
    mid_line: bool,
}

/// The last `max` bytes of `path`, starting at a line start when the file is longer.
fn output_tail(path: &Path, max: usize) -> io::Result<Tail> {
    let mut file = File::open(path)?;
    let total = file.metadata()?.len();
    if total <= max as u64 {
        let mut data = Vec::with_capacity(total as usize);
        file.read_to_end(&mut data)?;
        let data = cap_bytes(data, max);
        return Ok(Tail {
            data,
            total,
            truncated: false,
            mid_line: false,
        });
    }
    // Read one byte before the window to know whether the window starts a line.
    let start = total - max as u64 - 1;
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(max + 1);
    file.take(max as u64 + 1).read_to_end(&mut buf)?;
    let (data, mid_line) = match buf.iter().position(|&b| b == b'\n') {
        Some(i) => (buf[i + 1..].to_vec(), false),
        None => (buf[1..].to_vec(), true),
    };
    Ok(Tail {
        data,
        total,
        truncated: true,
        mid_line,
    })
}

/// The last `lines` lines of the agent log mentioning `workload`: (data, kept, matched).
fn agent_log_tail(
    path: &Path,
    workload: &str,
    lines: usize,
    cap: usize,
) -> io::Result<(Vec<u8>, usize, usize)> {
    let mut file = File::open(path)?;
    let total = file.metadata()?.len();
    let start = total.saturating_sub(AGENT_LOG_SCAN_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut it = text.split('\n');
    if start > 0 {
        it.next(); // partial first line
    }
    let matching: Vec<&str> = it.filter(|l| l.contains(workload)).collect();
    let matched = matching.len();
    let mut keep: VecDeque<&str> = matching[matched.saturating_sub(lines)..]
        .iter()
        .copied()
        .collect();
    // Respect the file cap by dropping the oldest lines.
    let mut size: usize = keep.iter().map(|l| l.len() + 1).sum();
    while size > cap {
        if let Some(l) = keep.pop_front() {
            size -= l.len() + 1;
        } else {
            break;
        }
    }
    let mut out = String::with_capacity(size);
    for l in &keep {
        out.push_str(l);
        out.push('\n');
    }
    Ok((out.into_bytes(), keep.len(), matched))
}

/// Per-process /proc files copied into the snapshot.
const PROC_FILES: &[&str] = &[
    "status", "stat", "cmdline", "wchan", "stack", "maps", "limits", "cgroup",
];
/// Per-task /proc files copied into the snapshot.
const TASK_FILES: &[&str] = &["status", "stat", "wchan", "stack"];

/// Snapshots `root` and its descendants into `pdir`; returns (pid, command line) per process.
fn snapshot_tree(
    pdir: &Dir,
    root: i32,
    c: &Capture,
    notes: &mut Notes,
) -> Result<Vec<(i32, String)>, FfdcError> {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([root]);
    let mut done = Vec::new();
    let mut skipped = 0usize;
    while let Some(pid) = queue.pop_front() {
        if !seen.insert(pid) {
            continue;
        }
        if done.len() >= c.max_processes {
            skipped += 1;
            continue;
        }
        let src = PathBuf::from(format!("/proc/{pid}"));
        if !src.is_dir() {
            notes.add(format!("proc: process {pid} exited during the snapshot"));
            continue;
        }
        let dst = make_dir(pdir, &pid.to_string())?;
        for name in PROC_FILES {
            copy_proc_file(&src.join(name), &dst, name, c.max_file_bytes, notes)?;
        }
        write_fd_listing(&src, &dst, c.max_file_bytes, notes)?;
        let cmd = fs::read(src.join("cmdline"))
            .map(|b| readable_cmdline(&b))
            .unwrap_or_else(|e| format!("<cmdline: {e}>"));

        // Tasks, and the children of each task.
        let tdir = make_dir(&dst, "task")?;
        let mut tids: Vec<i32> = match fs::read_dir(src.join("task")) {
            Ok(rd) => rd
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(e) => {
                notes.add(format!("proc: cannot list tasks of {pid}: {e}"));
                Vec::new()
            }
        };
        tids.sort_unstable();
        if tids.len() > MAX_TASKS_PER_PROCESS {
            notes.add(format!(
                "proc: process {pid} has {} tasks; only the first {MAX_TASKS_PER_PROCESS} snapshotted",
                tids.len()
            ));
        }
        for (i, tid) in tids.iter().enumerate() {
            let tsrc = src.join("task").join(tid.to_string());
            if i < MAX_TASKS_PER_PROCESS {
                let tdst = make_dir(&tdir, &tid.to_string())?;
                for name in TASK_FILES {
                    copy_proc_file(&tsrc.join(name), &tdst, name, c.max_file_bytes, notes)?;
                }
                fsync_dir(&tdst)?;
            }
            if let Ok(children) = fs::read_to_string(tsrc.join("children")) {
                queue.extend(
                    children
                        .split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
        fsync_dir(&tdir)?;
        fsync_dir(&dst)?;
        done.push((pid, cmd));
    }
    if skipped > 0 {
        notes.add(format!(
            "proc: process tree truncated: {skipped} more processes beyond the cap of {}",
            c.max_processes
        ));
    }
    Ok(done)
}

fn readable_cmdline(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.trim_end_matches('\0').replace('\0', " ")
}

/// Copies one /proc file (capped); an unreadable one is recorded in `<name>.error`.
fn copy_proc_file(
    src: &Path,
    dst_dir: &Dir,
    name: &str,
    cap: usize,
    notes: &mut Notes,
) -> Result<(), FfdcError> {
    let read = File::open(src).and_then(|f| {
        let mut data = Vec::new();
        f.take(cap as u64 + 1).read_to_end(&mut data)?;
        Ok(data)
    });
    match read {
        Ok(mut data) => {
            if data.len() > cap {
                data.truncate(cap);
                notes.add(format!("proc: {} truncated to {cap} bytes", src.display()));
            }
            if name == "cmdline" {
                data = readable_cmdline(&data).into_bytes();
                data.push(b'\n');
            }
            write_file(dst_dir, name, &data)
        }
        Err(e) => write_file(
            dst_dir,
            &format!("{name}.error"),
            format!("{}: {e}\n", src.display()).as_bytes(),
        ),
    }
}

/// Writes `fds`: one `N -> target` line per open descriptor.
fn write_fd_listing(
    src: &Path,
    dst_dir: &Dir,
    cap: usize,
    notes: &mut Notes,
) -> Result<(), FfdcError> {
    let fd_dir = src.join("fd");
    let rd = match fs::read_dir(&fd_dir) {
        Ok(rd) => rd,
        Err(e) => {
            return write_file(
                dst_dir,
                "fds.error",
                format!("{}: {e}\n", fd_dir.display()).as_bytes(),
            );
        }
    };
    let mut fds: Vec<u64> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let mut out = String::new();
    for fd in fds {
        let target = fs::read_link(fd_dir.join(fd.to_string()))
            .map(|t| t.display().to_string())
            .unwrap_or_else(|e| format!("<{e}>"));
        let _ = writeln!(out, "{fd} -> {target}");
    }
    if out.len() > cap {
        notes.add(format!(
            "proc: fd listing of {} truncated to {cap} bytes",
            src.display()
        ));
    }
    write_file(dst_dir, "fds", &cap_bytes(out.into_bytes(), cap))
}

fn read_info(wdir: &Path, workload: &str, id: &str) -> Result<BundleInfo, FfdcError> {
    let path = wdir.join(id);
    let fpath = path.join("failure.json");
    let bytes = fs::read(&fpath).map_err(io_err("read", &fpath))?;
    let failure: Failure = serde_json::from_slice(&bytes).map_err(|source| FfdcError::Json {
        path: fpath,
        source,
    })?;
    Ok(BundleInfo {
        id: id.to_string(),
        workload: workload.to_string(),
        path,
        failure,
    })
}

/// Bundle ids of one workload directory, unsorted; temp dirs and foreign names are skipped.
fn workload_ids(wdir: &Path) -> Result<Vec<(u64, u32, String)>, FfdcError> {
    let rd = match fs::read_dir(wdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(FfdcError::Io {
                what: "list",
                path: wdir.to_path_buf(),
                source,
            })
        }
    };
    let mut ids = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err("list", wdir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some((ms, seq)) = parse_id(&name) {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                ids.push((ms, seq, name));
            }
        }
    }
    Ok(ids)
}

/// Lists the bundles under `dir`, newest first, optionally for one workload only.
///
/// Bundles still being written (or abandoned by a crash) are not listed; a bundle whose
/// `failure.json` cannot be read is skipped with a warning.
pub fn list(dir: &Path, workload: Option<&str>) -> Result<Vec<BundleInfo>, FfdcError> {
    let workloads: Vec<String> = match workload {
        Some(w) => {
            check_workload(w)?;
            vec![w.to_string()]
        }
        None => match fs::read_dir(dir) {
            Ok(rd) => {
                let mut v = Vec::new();
                for entry in rd {
                    let entry = entry.map_err(io_err("list", dir))?;
                    let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                        continue;
                    };
                    if check_workload(&name).is_ok()
                        && entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
                    {
                        v.push(name);
                    }
                }
                v
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(FfdcError::Io {
                    what: "list",
                    path: dir.to_path_buf(),
                    source,
                })
            }
        },
    };
    let mut all = Vec::new();
    for w in workloads {
        let wdir = dir.join(&w);
        for (ms, seq, id) in workload_ids(&wdir)? {
            match read_info(&wdir, &w, &id) {
                Ok(info) => all.push((ms, seq, info)),
                Err(e) => {
                    tracing::warn!(workload = %w, id = %id, error = %e, "FFDC: skipping unreadable bundle")
                }
            }
        }
    }
    all.sort_by(|a, b| (b.0, b.1, &b.2.workload).cmp(&(a.0, a.1, &a.2.workload)));
    Ok(all.into_iter().map(|(_, _, i)| i).collect())
}

/// Shows one bundle. `id` is either `<unix_ms>-<seq>` (unique across workloads) or
/// `<workload>/<unix_ms>-<seq>`.
pub fn show(dir: &Path, id: &str) -> Result<Bundle, FfdcError> {
    let info = match id.split_once('/') {
        Some((w, bid)) => {
            check_workload(w)?;
            if parse_id(bid).is_none() || !dir.join(w).join(bid).is_dir() {
                return Err(FfdcError::NotFound {
                    dir: dir.to_path_buf(),
                    id: id.to_string(),
                });
            }
            read_info(&dir.join(w), w, bid)?
        }
        None => {
            if parse_id(id).is_none() {
                return Err(FfdcError::NotFound {
                    dir: dir.to_path_buf(),
                    id: id.to_string(),
                });
            }
            let mut found: Vec<BundleInfo> = list(dir, None)?
                .into_iter()
                .filter(|b| b.id == id)
                .collect();
            match found.len() {
                0 => {
                    return Err(FfdcError::NotFound {
                        dir: dir.to_path_buf(),
                        id: id.to_string(),
                    })
                }
                1 => found.remove(0),
                _ => {
                    return Err(FfdcError::Ambiguous {
                        id: id.to_string(),
                        candidates: found
                            .iter()
                            .map(|b| format!("{}/{}", b.workload, b.id))
                            .collect(),
                    })
                }
            }
        }
    };
    let mut files = Vec::new();
    collect_files(&info.path, "", &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let text = |name: &str| -> Result<Option<String>, FfdcError> {
        let p = info.path.join(name);
        match fs::read(&p) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(FfdcError::Io {
                what: "read",
                path: p,
                source,
            }),
        }
    };
    let summary = text("summary.txt")?.unwrap_or_default();
    let output_tail = text("output.tail")?;
    let agent_log_tail = text("agent.log.tail")?;
    Ok(Bundle {
        info,
        files,
        summary,
        output_tail,
        agent_log_tail,
    })
}

fn collect_files(base: &Path, prefix: &str, out: &mut Vec<BundleFile>) -> Result<(), FfdcError> {
    let here = base.join(prefix);
    let rd = fs::read_dir(&here).map_err(io_err("list", &here))?;
    for entry in rd {
        let entry = entry.map_err(io_err("list", &here))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry.file_type().map_err(io_err("stat", &entry.path()))?;
        if ft.is_dir() {
            collect_files(base, &rel, out)?;
        } else {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(BundleFile { path: rel, size });
        }
    }
    Ok(())
}

/// Removes the oldest bundles of `workload` beyond the newest `keep` (the newest one is always
/// kept, even with `keep == 0`). Bundles whose record is unreadable count too. Returns the ids
/// removed, newest first.
pub fn prune(dir: &Path, workload: &str, keep: usize) -> Result<Vec<String>, FfdcError> {
    check_workload(workload)?;
    let keep = keep.max(1);
    let wpath = dir.join(workload);
    let mut ids = workload_ids(&wpath)?;
    ids.sort_by_key(|&(ms, seq, _)| std::cmp::Reverse((ms, seq)));
    if ids.len() <= keep {
        return Ok(Vec::new());
    }
    // Removal walks the bundles through descriptors: a link is removed, never followed.
    let wdir = Dir::open(dir)
        .and_then(|d| d.open_dir(workload))
        .map_err(io_err("open directory", &wpath))?;
    let mut removed = Vec::new();
    for (_, _, id) in ids.into_iter().skip(keep) {
        let path = wpath.join(&id);
        wdir.remove_all(&id).map_err(io_err("remove", &path))?;
        tracing::info!(workload = %workload, id = %id, "FFDC bundle pruned");
        removed.push(id);
    }
    if !removed.is_empty() {
        fsync_dir(&wdir)?;
    }
    Ok(removed)
}
