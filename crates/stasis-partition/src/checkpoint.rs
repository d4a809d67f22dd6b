//! Checkpointing a whole partition.
//!
//! The engine works from the host's pid namespace (ptrace and `/proc` take host pids), but
//! everything else about a partition must be seen from inside it: file paths resolve in its
//! mount namespace (its own root, its tmpfs mounts), System V objects and message queues live
//! in its IPC namespace, sockets in its network namespace. So the checkpoint runs in a forked
//! child of the CLI that
//!
//! 1. opens what it needs from the host first (the image directory, the journal directory and
//!    the cgroup hierarchies, reached later through `/proc/self/fd/N`);
//! 2. joins the partition's mount, IPC, UTS and network namespaces (`setns`), then takes a
//!    private copy of that mount namespace (`unshare(CLONE_NEWNS)`) and mounts the host's
//!    procfs on its `/proc` there — the partition sees nothing of it;
//! 3. runs the engine with the partition's cgroup as freezer (freeze, seize every thread,
//!    thaw; the tasks stay ptrace-stopped) and with pids recorded as the partition's pid
//!    namespace sees them; before the image is committed (tree still stopped) it adds
//!    `partition.img`: spec, hostname, accounting totals and history, private mounts with
//!    their content;
//! 4. sends its result back on a pipe.
//!
//! Without `--leave-running` the engine ends the tree once the image is durable; the monitor
//! then records the partition as `checkpointed` (the CLI sets `ending` first).

use crate::cgroup::Cgroups;
use crate::helper::{self, HelperError, Message};
use crate::image::PartitionImage;
use crate::monitor::chain;
use crate::state::{self, Record, Root, State};
use stasis_engine::{CheckpointOptions, CheckpointStats, FreezeHook, Freezer, WriterHook};
use stasis_sys::ns::{self, Forked};
use stasis_sys::wait::{wait_exit, Block, Who};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What to checkpoint.
#[derive(Debug, Clone)]
pub struct Options {
    /// Root directory of partitions.
    pub root: Root,
    /// Partition name.
    pub name: String,
    /// Image directory.
    pub dir: PathBuf,
    /// Keep the partition running.
    pub leave_running: bool,
    /// Overwrite a non-empty directory.
    pub force: bool,
    /// Compress chunks.
    pub compression: stasis_image::Compression,
    /// Page I/O workers.
    pub workers: usize,
    /// See [`CheckpointOptions::buffer_limit`].
    pub copy_limit: Option<u64>,
}

/// Why a partition checkpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum PartitionCheckpointError {
    /// Record problems.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// Not running.
    #[error("partition '{name}' is not running (state {state}): nothing to checkpoint")]
    NotRunning {
        /// Name.
        name: String,
        /// Its state.
        state: State,
    },
    /// Setup before the engine ran.
    #[error("{0}")]
    Setup(String),
    /// The engine failed (or the forked checkpointer around it): the kind and the text.
    #[error(transparent)]
    Failed(HelperError),
}

impl PartitionCheckpointError {
    /// As the helper protocol's typed error.
    pub fn to_helper(&self) -> HelperError {
        match self {
            PartitionCheckpointError::Failed(e) => e.clone(),
            PartitionCheckpointError::NotRunning { .. } => HelperError::WorkloadGone {
                message: self.to_string(),
            },
            e => HelperError::internal(chain(e)),
        }
    }
}

/// What the checkpointer takes from the host side (read before the fork).
struct HostSide {
    usage: crate::cgroup::Usage,
    memory_total: u64,
    history: Vec<u8>,
    host_mounts: String,
    dir_fd: OwnedFd,
    jdir_fd: OwnedFd,
    root_fd: OwnedFd,
    signer: stasis_image::Keyring,
}

/// Freezes a partition through its cgroup.
struct CgFreezer {
    cg: Cgroups,
    group: String,
    /// The partition's first process, and its clocks read once it is frozen.
    pid: i32,
    clocks: Arc<std::sync::Mutex<(u64, u64)>>,
}

impl Freezer for CgFreezer {
    fn freeze(&self) -> std::io::Result<()> {
        self.cg
            .freeze(&self.group, Duration::from_secs(10))
            .map_err(|e| std::io::Error::other(chain(&e)))?;
        let c = crate::image::clocks_of(self.pid)
            .map_err(|e| std::io::Error::other(format!("the partition's clocks: {e}")))?;
        *self.clocks.lock().unwrap_or_else(|p| p.into_inner()) = c;
        Ok(())
    }
    fn thaw(&self) -> std::io::Result<()> {
        self.cg
            .thaw(&self.group)
            .map_err(|e| std::io::Error::other(chain(&e)))
    }
}

/// Mountinfo text with every mount point put under `prefix` (to reach the host's cgroup
/// hierarchies through a directory fd once we are in another mount namespace).
fn prefixed_mountinfo(text: &str, prefix: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut f: Vec<&str> = line.split(' ').collect();
        let joined;
        if f.len() > 4 {
            joined = format!("{prefix}{}", f[4]);
            f[4] = &joined;
        }
        out.push_str(&f.join(" "));
        out.push('\n');
    }
    out
}

/// Why the checkpointer (or the restorer) could not take its place beside the partition.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    /// A step failed.
    #[error("{step}")]
    Step {
        /// What was being done.
        step: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The host's cgroup hierarchies could not be reached through its root directory.
    #[error("the host's cgroups")]
    Cgroups(#[source] crate::cgroup::CgroupError),
}

fn step(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EnterError {
    let step = what.into();
    move |source| EnterError::Step { step, source }
}

/// Cgroups seen through the host's root directory fd `root_fd`, given the host's mount table
/// (read before we left its mount namespace).
pub fn cgroups_via(root_fd: &OwnedFd, host_mountinfo: &str) -> Result<Cgroups, EnterError> {
    let prefix = format!("/proc/self/fd/{}", root_fd.as_raw_fd());
    Cgroups::from_mountinfo(&prefixed_mountinfo(host_mountinfo, &prefix))
        .map_err(EnterError::Cgroups)
}

/// Join the namespaces of `pid` (mount, IPC, UTS, network), take a private copy of its mount
/// namespace and put the host's procfs on /proc there. The caller must be single-threaded.
pub fn enter(pid: i32) -> Result<(), EnterError> {
    let kinds = [ns::NS_IPC, ns::NS_UTS, ns::NS_NET, ns::NS_MNT];
    let mut fds = Vec::new();
    for (flag, name) in kinds {
        let fd = ns::open_ns(pid, name).map_err(step(format!("opening /proc/{pid}/ns/{name}")))?;
        fds.push((fd, flag, name));
    }
    for (fd, flag, name) in &fds {
        ns::setns(fd.as_fd(), *flag)
            .map_err(step(format!("joining the partition's {name} namespace")))?;
    }
    ns::unshare(libc::CLONE_NEWNS).map_err(step("unshare(CLONE_NEWNS)"))?;
    use stasis_sys::mount as m;
    m::mount("", Path::new("/"), "", m::MS_REC | m::MS_PRIVATE, "")
        .map_err(step("making our copy of the mount namespace private"))?;
    std::fs::create_dir_all("/proc").ok();
    m::mount(
        "proc",
        Path::new("/proc"),
        "proc",
        m::MS_NOSUID | m::MS_NODEV | m::MS_NOEXEC,
        "",
    )
    .map_err(step("mounting the host's procfs in our copy"))
}

/// Checkpoint partition `opts.name`.
pub fn checkpoint(opts: &Options) -> Result<CheckpointStats, PartitionCheckpointError> {
    checkpoint_with(opts, &mut |_| {}, None).map(|f| f.stats)
}

/// [`checkpoint`], handing progress to `on_progress`; `cancel` is a channel of the
/// [`helper`] protocol on which the caller may send Cancel (or close it) to stop a checkpoint
/// not yet committed. The caller must be single-threaded (the checkpointer is forked).
pub fn checkpoint_with(
    opts: &Options,
    on_progress: &mut dyn FnMut(&helper::Progress),
    cancel: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<helper::Figures, PartitionCheckpointError> {
    // Held for the whole checkpoint (the forked checkpointer shares it): another stasis run
    // that finds the lock free and the cgroup frozen knows a checkpointer died there.
    let lock = opts.root.lock(&opts.name)?;
    let mut rec = opts.root.load(&opts.name)?;
    let pid = match (rec.state, rec.pid) {
        (State::Running, Some(p)) if state::alive(p) => p,
        (s, _) => {
            return Err(PartitionCheckpointError::NotRunning {
                name: opts.name.clone(),
                state: s,
            })
        }
    };
    if ns::thread_count() != 1 {
        return Err(PartitionCheckpointError::Setup(
            "internal: the checkpointer must be single-threaded".into(),
        ));
    }
    // Everything from the host side, before the fork.
    let paths = opts.root.paths(&opts.name);
    let history = std::fs::read(paths.stats()).unwrap_or_default();
    let cg = Cgroups::detect().map_err(|e| PartitionCheckpointError::Setup(chain(&e)))?;
    let group = Cgroups::group_for(&opts.name);
    let now = cg
        .usage(&group)
        .map_err(|e| PartitionCheckpointError::Setup(chain(&e)))?;
    let memory_total = now.memory_bytes;
    let usage = crate::accounting::total(&rec.carried, &now);
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| PartitionCheckpointError::Setup(format!("reading mountinfo: {e}")))?;
    // The image is signed with the root's host key (created at first use).
    let signer = stasis_image::Keyring::load_or_create(&opts.root.path).map_err(|e| {
        PartitionCheckpointError::Setup(format!("the root's signing key: {}", chain(&e)))
    })?;
    // Opened (created 0700 if missing) without following a symlink as its last component; a
    // directory created here is removed again if the checkpoint fails.
    let mut created_dir = false;
    let dir = match stasis_image::safefs::Dir::open(&opts.dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            created_dir = true;
            stasis_image::safefs::Dir::create_all(&opts.dir, stasis_image::safefs::PRIVATE_DIR)
        }
        r => r,
    }
    .map_err(|e| {
        PartitionCheckpointError::Setup(format!(
            "opening {} (a directory, not a symlink): {e}",
            opts.dir.display()
        ))
    })?;
    let dir_fd: OwnedFd = dir.as_fd().try_clone_to_owned().map_err(|e| {
        PartitionCheckpointError::Setup(format!("opening {}: {e}", opts.dir.display()))
    })?;
    drop(dir);
    // The recovery journal's directory, handed to the checkpointer as a descriptor: created
    // 0700 without following a symlink as its last component (the engine checks its owner and
    // mode again before it trusts a journal there).
    let jdir = stasis_engine::journal::journal_dir();
    let jdir_fd: OwnedFd =
        stasis_image::safefs::Dir::create_all(&jdir, stasis_image::safefs::PRIVATE_DIR)
            .and_then(|d| d.as_fd().try_clone_to_owned())
            .map_err(|e| {
                PartitionCheckpointError::Setup(format!("opening {}: {e}", jdir.display()))
            })?;
    let root_fd: OwnedFd = std::fs::File::open("/")
        .map_err(|e| PartitionCheckpointError::Setup(format!("opening /: {e}")))?
        .into();
    if !opts.leave_running {
        rec.ending = Some(State::Checkpointed);
        opts.root.save(&rec, &lock)?;
    }
    let (res_r, res_w) =
        std::io::pipe().map_err(|e| PartitionCheckpointError::Setup(format!("pipe: {e}")))?;
    let outcome = match ns::fork_into(0, None) {
        Err(e) => Message::Failed(HelperError::internal(format!("fork: {e}"))),
        Ok(Forked::Child) => {
            drop(res_r);
            let host = HostSide {
                usage,
                memory_total,
                history,
                host_mounts,
                dir_fd,
                jdir_fd,
                root_fd,
                signer,
            };
            let mut w = res_w;
            let out = child(opts, &rec, pid, &group, host, &mut w);
            let _ = helper::send(&mut w, &out);
            drop(w);
            ns::exit_now(0);
        }
        Ok(Forked::Parent(child)) => {
            drop(res_w);
            watch_child(child, res_r, on_progress, cancel)
        }
    };
    match outcome {
        Message::Checkpointed(figures) => {
            drop(lock);
            if !opts.leave_running {
                // Let the monitor record the end (it needs the lock we just released), so the
                // state reads `checkpointed` when we return.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while std::time::Instant::now() < deadline {
                    match opts.root.load(&opts.name) {
                        Ok(r)
                            if r.state == State::Running
                                && r.monitor_pid.is_some_and(state::alive) =>
                        {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        _ => break,
                    }
                }
            }
            Ok(figures)
        }
        other => {
            if created_dir {
                stasis_engine::checkpoint::remove_created_dir(&opts.dir);
            }
            if !opts.leave_running {
                if let Ok(mut r) = opts.root.load(&opts.name) {
                    if r.ending == Some(State::Checkpointed) {
                        r.ending = None;
                        let _ = opts.root.save(&r, &lock);
                    }
                }
            }
            Err(PartitionCheckpointError::Failed(match other {
                Message::Failed(e) => e,
                m => HelperError::internal(format!("the checkpointer answered {m:?}")),
            }))
        }
    }
}

/// Read the forked checkpointer's messages until its final one, passing progress on; once
/// `cancel` (the caller's channel) says Cancel or closes, the checkpointer is sent SIGTERM (it
/// unwinds and leaves the partition running unless the image was already committed).
fn watch_child(
    child: i32,
    res_r: std::io::PipeReader,
    on_progress: &mut dyn FnMut(&helper::Progress),
    cancel: Option<std::os::fd::BorrowedFd<'_>>,
) -> Message {
    let mut res_r = res_r;
    let mut cancel = cancel;
    let out = loop {
        let mut fds = vec![res_r.as_fd()];
        fds.extend(cancel);
        let ready = match stasis_sys::net::poll_readable(&fds, -1) {
            Ok(r) => r,
            Err(e) => break Message::Failed(HelperError::internal(format!("poll: {e}"))),
        };
        if ready.get(1) == Some(&true) {
            if let Some(c) = cancel.take() {
                let asked = c
                    .try_clone_to_owned()
                    .map_err(helper::ProtoError::Io)
                    .and_then(|fd| helper::recv::<helper::Request>(&mut std::fs::File::from(fd)));
                match asked {
                    Ok(Some(helper::Request::Cancel)) | Ok(None) | Err(_) => {
                        tracing::info!("checkpoint cancelled by the caller");
                        let _ = stasis_sys::sys::kill(child, libc::SIGTERM);
                    }
                    Ok(Some(_)) => cancel = Some(c),
                }
            }
        }
        if ready[0] {
            match helper::recv::<Message>(&mut res_r) {
                Ok(Some(Message::Progress(p))) => on_progress(&p),
                Ok(Some(m)) => break m,
                Ok(None) | Err(_) => {
                    let st = wait_exit(Who::Pid(child), Block::Yes);
                    return Message::Failed(HelperError::internal(format!(
                        "the checkpointer died ({st:?}) without a result"
                    )));
                }
            }
        }
    };
    let _ = wait_exit(Who::Pid(child), Block::Yes);
    out
}

/// In the forked checkpointer: enter the partition, run the engine (progress sent on `w`
/// meanwhile), and return the final message.
fn child(
    opts: &Options,
    rec: &Record,
    pid: i32,
    group: &str,
    host: HostSide,
    w: &mut std::io::PipeWriter,
) -> Message {
    let err = |m: String| Message::Failed(HelperError::internal(m));
    if let Err(e) = enter(pid) {
        return err(chain(&e));
    }
    let HostSide {
        usage,
        memory_total,
        history,
        host_mounts,
        dir_fd,
        jdir_fd,
        root_fd,
        signer,
    } = host;
    // SAFETY-free: we are single-threaded here (forked from a single-threaded CLI).
    std::env::set_var(
        "STASIS_JOURNAL_DIR",
        format!("/proc/self/fd/{}", jdir_fd.as_raw_fd()),
    );
    let cg = match cgroups_via(&root_fd, &host_mounts) {
        Ok(c) => c,
        Err(e) => return err(chain(&e)),
    };
    let host_table = match crate::mounts::parse_mountinfo(&host_mounts) {
        Ok(t) => t,
        Err(e) => return err(chain(&e)),
    };
    let spec = rec.spec.clone();
    let name = opts.name.clone();
    let incarnation = rec.incarnation;
    let log_pipe_ino = rec.log_pipe_ino;
    let clocks = Arc::new(std::sync::Mutex::new((0, 0)));
    let frozen_clocks = clocks.clone();
    let hook = move |w: &stasis_image::ImageWriter| -> Result<(), stasis_engine::Failure> {
        let fail = |m: String| stasis_engine::Failure::msg(pid, m);
        let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .map_err(|e| fail(format!("reading the partition's mount table: {e}")))?;
        let table = crate::mounts::parse_mountinfo(&text).map_err(|e| fail(chain(&e)))?;
        let ours = crate::setup::our_mounts(&spec);
        let mut mounts = Vec::new();
        for (m, d) in crate::mounts::classify(&table, &host_table, &ours) {
            if let Some(r) = crate::mounts::dump_mount(&m, &d, w).map_err(|e| fail(chain(&e)))? {
                mounts.push(r);
            }
        }
        let clocks = *frozen_clocks.lock().unwrap_or_else(|p| p.into_inner());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let img = PartitionImage {
            name: name.clone(),
            spec_json: serde_json::to_string(&spec).expect("spec serializes"),
            usage_json: serde_json::to_string(&usage).expect("usage serializes"),
            history: history.clone(),
            hostname,
            mounts,
            log_pipe_ino,
            incarnation,
            monotonic_ns: clocks.0,
            boottime_ns: clocks.1,
        };
        w.put_file(
            stasis_image::PARTITION_FILE,
            stasis_image::KIND_PARTITION,
            &img.to_bytes(),
        )
        .map_err(|e| fail(format!("writing {}: {e}", stasis_image::PARTITION_FILE)))
    };
    let progress = Arc::new(stasis_engine::progress::Progress::default());
    let eopts = CheckpointOptions {
        progress: Some(progress.clone()),
        parent: None,
        tracker: None,
        pid,
        dir: PathBuf::from(format!("/proc/self/fd/{}", dir_fd.as_raw_fd())),
        leave_running: opts.leave_running,
        force: opts.force,
        compression: opts.compression,
        workers: opts.workers,
        freezer: Some(FreezeHook(Arc::new(CgFreezer {
            cg,
            group: group.to_string(),
            pid,
            clocks,
        }))),
        pid_ns: true,
        before_commit: Some(WriterHook(Arc::new(hook))),
        buffer_limit: opts.copy_limit,
        signer: Some(signer),
    };
    let r = helper::with_progress(&progress, memory_total, w.try_clone().ok(), || {
        stasis_engine::checkpoint(&eopts)
    });
    match r {
        Ok(stats) => Message::Checkpointed(helper::Figures {
            dir: opts.dir.clone(),
            pid,
            stats,
        }),
        Err(e) => Message::Failed(HelperError::from_checkpoint(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_prefix() {
        let t = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
        let p = prefixed_mountinfo(t, "/proc/self/fd/7");
        assert!(p.contains(" /proc/self/fd/7/sys/fs/cgroup/memory "));
    }
}
