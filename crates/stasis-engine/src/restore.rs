//! Restore orchestration.
//!
//! Linux cannot change a process's parent, so every process is created by its saved parent:
//! stasis creates the root with `clone3(set_tid)` as a *blank* process (fds closed, a gadget
//! page, parked in `pause()`), seizes it with `PTRACE_O_EXITKILL` (if stasis dies, everything
//! half-restored dies with it) and `TRACEFORK`/`TRACECLONE` (children and threads created by
//! injected `clone3` are attached at birth), unmaps everything but the gadget and the vdso
//! block, and injects `clone3(set_tid)` into each restored parent to create its children, then
//! into each leader to create its threads. Then each process is rebuilt from outside: vdso
//! moved, mappings created, pages written by worker threads, protections applied, mm fields,
//! fds, cwd/limits/timers, dispositions, per-thread state, pending signals, credentials; the
//! gadget is removed last, registers and masks are set, and every task is detached at once.
//!
//! [`Created`] is the guard: on any error every task created so far is killed and reaped.

use crate::error::{Ctx, Failure, RestoreError};
use crate::files::Opened;
use crate::freeze::resume_regs;
use crate::memory::{self, FillJob};
use crate::progress::{self, Phase};
use crate::remote::{Remote, PARASITE_LEN};
use crate::{failpoint, task};
use prost::Message;
use stasis_image::records as rec;
use stasis_image::{ImageReader, Trust, TrustError};
use stasis_sys::ptrace::{self, Regs, Stop};
use stasis_sys::wait::{wait_exit, Block, Who};
use stasis_sys::{proc, sys};
use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to restore and how.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Image directory.
    pub dir: PathBuf,
    /// Outside objects to reattach: "pipe:[INO]" → an fd of ours.
    pub inherit: HashMap<String, RawFd>,
    /// Worker threads for page I/O.
    pub workers: usize,
    /// How long to wait for pids still held by zombies of the dumped tree.
    pub pid_wait: Duration,
    /// Create the root as the first process (pid 1) of a new pid namespace (a partition).
    pub new_pid_ns: bool,
    /// A mount namespace (fd) the root joins before anything else (a partition's, prepared by
    /// the caller while the restorer itself works in a private copy of it).
    pub root_mnt_ns: Option<RawFd>,
    /// Called once the root exists, is seized and still blank: the caller finishes its
    /// namespaces (moves it into a cgroup, mounts the partition's /proc by injection…).
    pub on_root: Option<RootHook>,
    /// Which images may be restored: signed by one of a keyring's keys, or (explicitly)
    /// unsigned. The ownership/mode rule applies either way (see `stasis_image::trust`).
    pub trust: Trust,
    /// Where to store the phase and the page bytes restored, for a caller's display.
    pub progress: Option<std::sync::Arc<crate::progress::Progress>>,
}

/// When the root hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootStage {
    /// The root exists, seized and still blank, before any other task is created.
    Created,
    /// Every task exists and has its memory; fds, credentials and registers come next. After
    /// this point the restorer no longer reads `/proc` (a partition mounts its own here).
    Filled,
}

/// See [`RestoreOptions::on_root`]: gets the stage, the root's pid (ours) and an injector into
/// it.
pub type RootHookFn = dyn FnMut(RootStage, i32, &mut Remote) -> Result<(), Failure> + Send;

/// A shared root hook in the options.
#[derive(Clone)]
pub struct RootHook(pub std::sync::Arc<std::sync::Mutex<Box<RootHookFn>>>);

impl RootHook {
    /// Wrap a closure.
    pub fn new(
        f: impl FnMut(RootStage, i32, &mut Remote) -> Result<(), Failure> + Send + 'static,
    ) -> Self {
        RootHook(std::sync::Arc::new(std::sync::Mutex::new(Box::new(f))))
    }
}

impl std::fmt::Debug for RootHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootHook")
    }
}

/// Figures about a finished restore.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreStats {
    /// Pid of the restored root.
    pub root_pid: i32,
    /// Processes restored.
    pub processes: usize,
    /// Threads restored.
    pub threads: usize,
    /// Bytes of page data written.
    pub memory_bytes: u64,
    /// Seconds spent writing pages.
    pub memory_secs: f64,
    /// Total seconds.
    pub total_secs: f64,
    /// Objects outside the tree that were not given with `--inherit-fd` (`inherit`) and were
    /// replaced by a stand-in.
    pub replaced: Vec<Replaced>,
    /// Lazy restore: pid of the page server (None: a full restore, or nothing to place lazily).
    pub page_server: Option<i32>,
}

/// An object outside the tree replaced by a stand-in at restore (see
/// [`RestoreStats::replaced`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replaced {
    /// The object's key, as `--inherit-fd KEY=FD` takes it (`pipe:[INO]`).
    pub key: String,
    /// What the tree holds instead.
    pub now: String,
}

const TRACE_OPTS: u32 = ptrace::OPT_TRACESYSGOOD
    | ptrace::OPT_TRACEFORK
    | ptrace::OPT_TRACEVFORK
    | ptrace::OPT_TRACECLONE
    | ptrace::OPT_EXITKILL;
const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;

/// Guard over the tasks created so far: killed and reaped unless disarmed.
struct Created {
    /// (pid, tid) of every task, in creation order.
    tasks: Vec<(i32, i32)>,
    root: Option<i32>,
    armed: bool,
}

impl Drop for Created {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut pids: Vec<i32> = self.tasks.iter().map(|t| t.0).collect();
        pids.dedup();
        for &p in &pids {
            let _ = sys::kill(p, libc::SIGKILL);
        }
        let tids: Vec<i32> = self.tasks.iter().map(|t| t.1).collect();
        crate::freeze::reap_tracees(&tids, Duration::from_secs(30));
        if let Some(root) = self.root {
            let _ = wait_exit(Who::Pid(root), Block::No);
        }
    }
}

fn bad(
    dir: &std::path::Path,
    what: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> RestoreError {
    RestoreError::BadImage {
        dir: dir.display().to_string(),
        what: what.into(),
        source,
    }
}

/// What to do about an image that `check` refused.
pub fn trust_refusal(dir: &std::path::Path, e: TrustError) -> RestoreError {
    let d = dir.display();
    let what = match &e {
        TrustError::Owner { .. } | TrustError::Writable { .. } => format!(
            "refused: its files could have been written by another user, and an image is code \
             (it sets credentials, memory and registers); if you know where it comes from, run \
             `chown -R root: {d} && chmod -R go-w {d}` then `stasis image trust {d}`"
        ),
        TrustError::NoSignature { .. }
        | TrustError::UnknownKey { .. }
        | TrustError::Mismatch { .. }
        | TrustError::BadSignatureFile { .. } => format!(
            "refused: not signed by this host's key or a trusted key; if you know where it \
             comes from, run `stasis image trust {d}` (or restore with \
             --insecure-unsigned)"
        ),
        _ => "cannot check who wrote it".to_string(),
    };
    bad(dir, what, Some(Box::new(e)))
}

/// Open an image, check it may be restored ([`stasis_image::trust::check`]: ownership and
/// mode, then the signature) and decode it. Nothing is decoded from an image that fails.
pub fn load_trusted(
    dir: &std::path::Path,
    trust: &Trust,
) -> Result<(ImageReader, rec::Checkpoint), RestoreError> {
    let reader =
        ImageReader::open(dir).map_err(|e| bad(dir, "cannot open image", Some(Box::new(e))))?;
    let signer = stasis_image::trust::check(&reader, trust).map_err(|e| trust_refusal(dir, e))?;
    tracing::info!(dir = %dir.display(), %signer, "image trusted");
    decode(dir, reader)
}

/// Open and decode an image without checking who wrote it (`inspect`; never for restore).
pub fn load(dir: &std::path::Path) -> Result<(ImageReader, rec::Checkpoint), RestoreError> {
    let reader =
        ImageReader::open(dir).map_err(|e| bad(dir, "cannot open image", Some(Box::new(e))))?;
    decode(dir, reader)
}

fn decode(
    dir: &std::path::Path,
    mut reader: ImageReader,
) -> Result<(ImageReader, rec::Checkpoint), RestoreError> {
    let bytes = reader
        .read_file(stasis_image::OBJECTS_FILE)
        .map_err(|e| bad(dir, "cannot read objects", Some(Box::new(e))))?;
    let img = rec::Checkpoint::decode(bytes.as_slice())
        .map_err(|e| bad(dir, "objects.img does not decode", Some(Box::new(e))))?;
    validate(&img).map_err(|w| bad(dir, w, None))?;
    // An incremental image: its parents, each checked against the hash its child recorded.
    crate::incremental::open_chain(dir, &mut reader, &img)
        .map_err(|e| bad(dir, e.to_string(), Some(Box::new(e))))?;
    Ok((reader, img))
}

/// Structural checks on a decoded image (no panics later on indexes).
pub fn validate(img: &rec::Checkpoint) -> Result<(), String> {
    let Some(root) = img.processes.first() else {
        return Err("image holds no process".into());
    };
    if root.pid != img.root_pid {
        return Err("first process is not the root".into());
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in img.processes.iter().enumerate() {
        if p.pid <= 0 || !seen.insert(p.pid) {
            return Err(format!("bad or duplicate pid {}", p.pid));
        }
        if i > 0 && !img.processes[..i].iter().any(|q| q.pid == p.ppid) {
            return Err(format!(
                "pid {}: parent {} is not restored before it",
                p.pid, p.ppid
            ));
        }
        if p.threads.first().map(|t| t.tid) != Some(p.pid) {
            return Err(format!("pid {}: leader thread missing", p.pid));
        }
        if p.zombie {
            if i == 0 || p.threads.len() != 1 || !p.vmas.is_empty() || !p.fds.is_empty() {
                return Err(format!("pid {}: bad zombie record", p.pid));
            }
            if img
                .processes
                .iter()
                .any(|q| q.ppid == p.pid && q.pid != p.pid)
            {
                return Err(format!("pid {}: a zombie with children", p.pid));
            }
            continue;
        }
        if p.mm.is_none() || p.creds.is_none() || p.sigactions.len() != 64 {
            return Err(format!("pid {}: incomplete process record", p.pid));
        }
        for t in &p.threads {
            if t.regs.len() != 27 {
                return Err(format!("tid {}: bad register record", t.tid));
            }
        }
        for fd in &p.fds {
            if fd.file_id as usize >= img.files.len() || fd.fd < 0 {
                return Err(format!("pid {} fd {}: bad file reference", p.pid, fd.fd));
            }
        }
        for v in &p.vmas {
            if v.start >= v.end || v.start % 4096 != 0 || v.end % 4096 != 0 {
                return Err(format!(
                    "pid {}: bad mapping {:#x}-{:#x}",
                    p.pid, v.start, v.end
                ));
            }
            if (v.kind == rec::VmaKind::Shmem as i32 || v.from_shmem)
                && v.shmem_id as usize >= img.shmem.len()
            {
                return Err(format!(
                    "pid {}: mapping refers to a missing shared object",
                    p.pid
                ));
            }
        }
    }
    for (i, f) in img.files.iter().enumerate() {
        if f.id as usize != i {
            return Err("file objects out of order".into());
        }
        if let Some(p) = f.pty() {
            let ok = |t: &[u8]| t.is_empty() || t.len() == stasis_sys::sys::TERMIOS2_LEN;
            if !ok(&p.termios)
                || !ok(&p.master_termios)
                || (f.kind == rec::FileKind::PtyMaster as i32
                    && p.termios.len() != stasis_sys::sys::TERMIOS2_LEN)
            {
                return Err(format!("pty {}: bad terminal settings record", p.index));
            }
        }
        if let Some(u) = f.unix() {
            if u.queue
                .iter()
                .flat_map(|m| &m.fds)
                .any(|&id| id as usize >= img.files.len())
            {
                return Err("unix socket message refers to a missing file".into());
            }
        }
    }
    for (i, s) in img.shmem.iter().enumerate() {
        if s.id as usize != i {
            return Err("shared objects out of order".into());
        }
    }
    crate::seccomp::validate(img)?;
    crate::cow::validate(img)
}

/// The processes that run (every one but the zombies).
fn live(img: &rec::Checkpoint) -> impl Iterator<Item = &rec::Process> {
    img.processes.iter().filter(|p| !p.zombie)
}

fn root_pid_of(img: &rec::Checkpoint) -> i32 {
    img.root_pid
}

fn wait_pids_free(img: &rec::Checkpoint, wait: Duration) -> Result<(), RestoreError> {
    let start = Instant::now();
    for p in &img.processes {
        for t in &p.threads {
            while let Ok(stat) = proc::read_stat(t.tid) {
                if (stat.state == 'Z' || stat.state == 'X') && start.elapsed() < wait {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                return Err(RestoreError::PidInUse {
                    pid: t.tid,
                    comm: stat.comm,
                });
            }
        }
    }
    Ok(())
}

fn pick_gadget(img: &rec::Checkpoint) -> Result<u64, Failure> {
    let mut used: Vec<(u64, u64)> = img
        .processes
        .iter()
        .flat_map(|p| p.vmas.iter().map(|v| (v.start, v.end)))
        .collect();
    let own = proc::read_maps(sys::getpid()).ctx(0, || "reading our own maps".into())?;
    used.extend(own.iter().map(|m| (m.start, m.end)));
    let need = PARASITE_LEN + (4 << 20);
    let mut cand: u64 = 0x1000_0000;
    while cand < 0x7f00_0000_0000 {
        let end = cand + need;
        if used.iter().all(|&(s, e)| e <= cand || s >= end) {
            return Ok(cand);
        }
        cand += 64 << 20;
    }
    Err(Failure::msg(
        0,
        "no free address range for the restore gadget",
    ))
}

/// Wait until a task just created by an injected clone is in its first stop.
pub(crate) fn wait_new_task(tid: i32) -> Result<(), Failure> {
    wait_stopped(tid)
}

fn wait_stopped(tid: i32) -> Result<(), Failure> {
    loop {
        match ptrace::wait(tid).ctx(tid, || "waiting for a new task to stop".into())? {
            Stop::Event(ptrace::EVENT_STOP, _) => return Ok(()),
            Stop::Signal(libc::SIGSTOP) => return Ok(()),
            Stop::Signal(_) | Stop::Event(..) | Stop::Syscall => {
                ptrace::cont(tid, 0).ctx(tid, || "PTRACE_CONT".into())?;
            }
            s => {
                return Err(Failure::msg(
                    tid,
                    format!("new task died before it could be restored: {s:?}"),
                ))
            }
        }
    }
}

/// Create task `tid` (a pid as the image's pid namespace sees it) from the task behind `r`;
/// returns its pid as we see it.
fn inject_clone(r: &mut Remote, flags: u64, exit_signal: u64, tid: i32) -> Result<i32, Failure> {
    let set_tid = r.put(128, &tid.to_le_bytes())?;
    let args = sys::encode_clone_args(flags, exit_signal, set_tid, 1);
    let a = r.put(0, &args)?;
    let res = r.call_raw(
        &format!("clone3 for pid/tid {tid}"),
        libc::SYS_clone3,
        &[a, args.len() as u64],
    )?;
    if res == -(libc::EEXIST as i64) {
        return Err(Failure::msg(
            tid,
            format!("pid {tid} was taken while restoring"),
        ));
    }
    if res < 0 {
        return Err(Failure::new(
            tid,
            format!("clone3 with set_tid {tid}"),
            std::io::Error::from_raw_os_error(-res as i32),
        ));
    }
    if res as i32 != tid {
        return Err(Failure::msg(
            tid,
            format!("clone3 gave pid {res} instead of {tid}"),
        ));
    }
    // The tracer sees the child under its own pid namespace's number (the fork event's).
    let host = r
        .clone_events()
        .last()
        .map(|e| e.child)
        .ok_or_else(|| Failure::msg(tid, "clone3 reported no fork event"))?;
    wait_stopped(host)?;
    ptrace::set_sigmask(host, !0).ctx(host, || "blocking signals".into())?;
    Ok(host)
}

/// The `setpgid` calls that put every process back in its process group, as (image pid, image
/// pgid), in an order the kernel accepts: the leaders of groups first (each joins its own
/// group), then the members of groups led inside the tree, each list in image order. A process
/// whose group is led from outside the tree is left out: it stays in the restorer's group
/// (documented rule).
pub(crate) fn group_plan(processes: &[rec::Process]) -> Vec<(i32, i32)> {
    let in_tree = |id: i32| processes.iter().any(|q| q.pid == id);
    let grouped = || processes.iter().filter(|p| in_tree(p.pgid));
    let leaders = grouped().filter(|p| p.pgid == p.pid);
    let members = grouped().filter(|p| p.pgid != p.pid);
    leaders.chain(members).map(|p| (p.pid, p.pgid)).collect()
}

/// The general registers of a stopped tracee.
fn regs_of(tid: i32) -> Result<Regs, Failure> {
    ptrace::get_regs(tid).ctx(tid, || "PTRACE_GETREGS".into())
}

/// Load the image and check that it can be restored here, before anything is created: trust,
/// the same kernel build, every chunk intact, its pids free (or, for a new pid namespace, a
/// partition image).
fn load_checked(
    opts: &RestoreOptions,
    lazy: bool,
) -> Result<(ImageReader, rec::Checkpoint), RestoreError> {
    let (reader, img) = load_trusted(&opts.dir, &opts.trust)?;
    let ours = memory::vdso_hash(sys::getpid())?;
    if !img.vdso_hash.is_empty() && img.vdso_hash != ours {
        return Err(bad(
            &opts.dir,
            format!(
                "taken on a different kernel build ({}; this is {}): the vdso differs, restore needs the same kernel",
                img.kernel_release,
                crate::checkpoint::kernel_release()
            ),
            None,
        ));
    }
    // Every chunk is checked before any task exists: a corrupt image changes nothing.
    let later = if lazy {
        crate::lazy::lazy_only_chunks(&img)
    } else {
        Default::default()
    };
    reader
        .verify_all_but(&later)
        .map_err(|e| bad(&opts.dir, "image verification failed", Some(Box::new(e))))?;
    // Before waiting for pids: a pool too small is not fixed by waiting.
    crate::hugetlb::check_pool(&img)?;
    if !opts.new_pid_ns {
        wait_pids_free(&img, opts.pid_wait)?;
    } else if root_pid_of(&img) != 1 {
        return Err(bad(
            &opts.dir,
            "not a partition image: its root is not pid 1 of a pid namespace",
            None,
        ));
    }
    Ok((reader, img))
}

/// What [`create_root`] returns.
type RootParts = (i32, HashMap<i32, i32>, Remote, Option<OwnedFd>);

/// The root task: a blank process parked in our gadget (clone3 with its pid), seized, emptied
/// of our memory, leading its session if it did. Returns its pid (ours), the image → our pid
/// map started with it, its injector, and our pidfd that the root inherited (kept open until
/// the restore ends).
fn create_root(
    opts: &RestoreOptions,
    img: &rec::Checkpoint,
    opened: &mut Opened,
    created: &mut Created,
    gadget: u64,
) -> Result<RootParts, RestoreError> {
    let root = &img.processes[0];
    // In a new pid namespace the tasks cannot name us: the root inherits a pidfd of ours
    // (above every fd of the image), and its children inherit it from it.
    let own_pidfd = if opts.new_pid_ns {
        Some(sys::pidfd_open(sys::getpid()).ctx(0, || "pidfd_open(self)".into())?)
    } else {
        None
    };
    let keep_at = opened.high_fd as i32 + 8;
    let root_pid = match sys::spawn_blank(sys::BlankSpec {
        pid: root.pid,
        gadget_addr: gadget,
        gadget_len: PARASITE_LEN,
        exit_signal: root.exit_signal.max(0),
        ns_flags: if opts.new_pid_ns {
            libc::CLONE_NEWPID as u64
        } else {
            0
        },
        mnt_ns_fd: opts.root_mnt_ns.unwrap_or(-1),
        keep_fd: own_pidfd
            .as_ref()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .unwrap_or(-1),
        keep_at,
    }) {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            return Err(RestoreError::PidInUse {
                pid: root.pid,
                comm: "?".into(),
            })
        }
        Err(e) => {
            return Err(Failure::new(
                root.pid,
                "creating the root process (clone3 with set_tid)",
                e,
            )
            .into())
        }
    };
    created.root = Some(root_pid);
    if own_pidfd.is_some() {
        opened.inherited_pidfd = Some(keep_at as u64);
    }
    created.tasks.push((root_pid, root_pid));
    // Wait until the blank child parks in pause() with its gadget mapped.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = proc::read_stat(root_pid)
            .map(|s| s.state == 'S')
            .unwrap_or(false)
            && proc::read_maps(root_pid)
                .map(|m| m.iter().any(|e| e.start == gadget))
                .unwrap_or(false);
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(Failure::msg(root_pid, "blank process did not get ready").into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // Children and threads inherit the options (seccomp suspended when the tree uses it).
    let opts_seize = TRACE_OPTS | crate::seccomp::restore_trace_opts(img);
    ptrace::seize(root_pid, opts_seize).ctx(root_pid, || {
        format!("PTRACE_SEIZE (options {opts_seize:#x}; suspending seccomp needs CAP_SYS_ADMIN)")
    })?;
    ptrace::interrupt(root_pid).ctx(root_pid, || "PTRACE_INTERRUPT".into())?;
    wait_stopped(root_pid)?;
    ptrace::set_sigmask(root_pid, !0).ctx(root_pid, || "blocking signals".into())?;
    // Image pids → ours (the same unless the root is in a new pid namespace).
    let hmap: HashMap<i32, i32> = HashMap::from([(root.pid, root_pid)]);

    let mut r = Remote::new(root_pid, root_pid, gadget, regs_of(root_pid)?);
    // The blank child inherited our thread's rseq registration; the kernel would fault on it
    // once we unmap its memory.
    let rseq = ptrace::get_rseq(root_pid).ctx(root_pid, || "reading rseq configuration".into())?;
    if rseq.rseq_abi_pointer != 0 {
        r.call(
            "rseq unregister",
            libc::SYS_rseq,
            &[
                rseq.rseq_abi_pointer,
                rseq.rseq_abi_size as u64,
                1,
                rseq.signature as u64,
            ],
        )?;
    }
    if let Some(h) = &opts.on_root {
        let mut f = h.0.lock().unwrap_or_else(|e| e.into_inner());
        f(RootStage::Created, root_pid, &mut r)?;
    }
    // Blank the root: keep only the gadget and the vdso block.
    for m in proc::read_maps(root_pid).ctx(root_pid, || "reading maps".into())? {
        if m.start == gadget
            || matches!(
                m.path.as_str(),
                "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]"
            )
        {
            continue;
        }
        tracing::debug!(start = format_args!("{:#x}", m.start), end = format_args!("{:#x}", m.end), path = %m.path, "unmapping");
        r.call(
            &format!(
                "unmapping the restorer's memory at {:#x}-{:#x} ({})",
                m.start, m.end, m.path
            ),
            libc::SYS_munmap,
            &[m.start, m.end - m.start],
        )?;
    }
    if root.sid == root.pid {
        r.call("setsid", libc::SYS_setsid, &[])?;
        crate::pty::acquire_ctty(&mut r, root, img, opened)?;
    }
    Ok((root_pid, hmap, r, own_pidfd))
}

/// The other processes (each cloned by its creator with its pid, after the memory it inherits
/// is in the creator: see [`crate::cow`]), their sessions and process groups, foreground
/// groups, every thread, and the zombies, in the order of [`crate::plan::creation_plan`].
fn create_tasks(
    img: &rec::Checkpoint,
    gadget: u64,
    opened: &mut Opened,
    created: &mut Created,
    hmap: &mut HashMap<i32, i32>,
    remotes: &mut HashMap<i32, Remote>,
    prefork: &mut crate::cow::PreFork,
) -> Result<(), Failure> {
    let plan = crate::plan::creation_plan(&img.processes);
    let mut k = Injector {
        img,
        gadget,
        opened,
        created,
        hmap,
        remotes,
        prefork,
    };
    crate::plan::execute(&plan, &mut k)
}

/// The plan's kernel: calls injected into the tasks being restored.
struct Injector<'a, 'b> {
    img: &'a rec::Checkpoint,
    gadget: u64,
    opened: &'a mut Opened,
    created: &'a mut Created,
    hmap: &'a mut HashMap<i32, i32>,
    remotes: &'a mut HashMap<i32, Remote>,
    prefork: &'a mut crate::cow::PreFork<'b>,
}

impl<'a> Injector<'a, '_> {
    fn process(&self, pid: i32) -> Result<&'a rec::Process, Failure> {
        self.img
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .ok_or_else(|| Failure::msg(pid, "not in the image"))
    }

    fn remote(&mut self, pid: i32) -> Result<&mut Remote, Failure> {
        self.remotes
            .get_mut(&pid)
            .ok_or_else(|| Failure::msg(pid, "not restored yet"))
    }
}

impl crate::plan::TaskKernel for Injector<'_, '_> {
    fn create_process(
        &mut self,
        pid: i32,
        by: i32,
        flags: u64,
        exit_signal: u64,
    ) -> Result<(), Failure> {
        let p = self.process(pid)?;
        let parent = self
            .remotes
            .get_mut(&by)
            .ok_or_else(|| Failure::msg(pid, format!("its creator {by} is not restored")))?;
        let host = inject_clone(parent, flags, exit_signal, pid)?;
        self.created.tasks.push((host, host));
        self.hmap.insert(pid, host);
        let mut r = Remote::new(host, host, self.gadget, regs_of(host)?);
        if !p.zombie {
            // (a zombie-to-be gets no memory: it exits once its group and session are set)
            self.prefork.process(self.img, p, &mut r, self.opened)?;
        }
        self.remotes.insert(pid, r);
        Ok(())
    }

    fn setsid(&mut self, pid: i32) -> Result<(), Failure> {
        let (img, p) = (self.img, self.process(pid)?);
        let r = self
            .remotes
            .get_mut(&pid)
            .ok_or_else(|| Failure::msg(pid, "not restored yet"))?;
        r.call("setsid", libc::SYS_setsid, &[])?;
        crate::pty::acquire_ctty(r, p, img, self.opened)
    }

    fn pgid(&mut self, pid: i32) -> Result<i32, Failure> {
        let host = self.hmap[&pid];
        let cur = proc::read_stat(host)
            .ctx(pid, || "reading stat".into())?
            .pgrp;
        // As the image names it (a group outside the tree: no image pid).
        Ok(self
            .hmap
            .iter()
            .find(|(_, &h)| h == cur)
            .map(|(&i, _)| i)
            .unwrap_or(i32::MIN))
    }

    fn setpgid(&mut self, pid: i32, pgid: i32) -> Result<(), Failure> {
        let r = self.remote(pid)?;
        if pgid == pid {
            r.call("setpgid(0, 0)", libc::SYS_setpgid, &[0, 0])?;
        } else {
            r.call(
                &format!("setpgid(0, {pgid})"),
                libc::SYS_setpgid,
                &[0, pgid as u64],
            )?;
        }
        Ok(())
    }

    fn groups_done(&mut self) -> Result<(), Failure> {
        let img = self.img;
        for p in &img.processes {
            let r = self
                .remotes
                .get_mut(&p.pid)
                .ok_or_else(|| Failure::msg(p.pid, "not restored yet"))?;
            crate::pty::restore_foreground(r, p, img, self.opened)?;
        }
        Ok(())
    }

    fn create_thread(&mut self, leader: i32, tid: i32) -> Result<(), Failure> {
        let r = self.remote(leader)?;
        let host = inject_clone(r, CLONE_THREAD_FLAGS, 0, tid)?;
        self.created.tasks.push((self.hmap[&leader], host));
        self.hmap.insert(tid, host);
        Ok(())
    }

    fn make_zombie(&mut self, pid: i32) -> Result<(), Failure> {
        let p = self.process(pid)?;
        let r = self
            .remotes
            .remove(&pid)
            .ok_or_else(|| Failure::msg(pid, "not restored yet"))?;
        let parent = self
            .remotes
            .get_mut(&p.ppid)
            .ok_or_else(|| Failure::msg(pid, "parent not restored"))?;
        crate::process::make_zombie(r, parent, p)
    }
}

/// Every process's mappings not created before its children (vdso, mm fields and exe are set by
/// then), without the pages: returns the page fills to run and the protections to apply once
/// they are in (with those of the mappings created before).
#[allow(clippy::type_complexity)]
fn restore_layouts(
    img: &rec::Checkpoint,
    opened: &mut Opened,
    remotes: &mut HashMap<i32, Remote>,
    prefork: &mut crate::cow::PreFork,
) -> Result<(Vec<FillJob>, HashMap<i32, Vec<memory::Fixup>>), Failure> {
    let mut fills: Vec<FillJob> = Vec::new();
    let mut fixups = std::mem::take(&mut prefork.fixups);
    for p in live(img) {
        let r = remotes.get_mut(&p.pid).expect("created");
        let (fill, fix) = memory::restore_mappings(r, p, opened, &|i| !prefork.done(p.pid, i))?;
        fills.push(fill);
        fixups.entry(p.pid).or_default().extend(fix);
    }
    Ok((fills, fixups))
}

/// Per process, once its pages are in: protections, fds, epoll registrations, the rest of its
/// state, signal handlers, then each thread's state, pending signals and credentials; finally
/// our gadget is unmapped.
fn restore_process_state(
    img: &rec::Checkpoint,
    gadget: u64,
    opened: &mut Opened,
    remotes: &mut HashMap<i32, Remote>,
    fixups: &HashMap<i32, Vec<memory::Fixup>>,
    hmap: &HashMap<i32, i32>,
) -> Result<(), Failure> {
    let host = |id: i32| hmap.get(&id).copied().unwrap_or(id);
    let loginuid = task::own_loginuid();
    for p in live(img) {
        let r = remotes.get_mut(&p.pid).expect("created");
        for &(start, len, prot) in &fixups[&p.pid] {
            r.call(
                &format!("mprotect {start:#x}"),
                libc::SYS_mprotect,
                &[start, len, prot as u64],
            )?;
        }
        if !crate::files::shares_fd_table(p) {
            opened.restore_fds(r, p)?;
        }
        for t in &p.threads {
            let mut tr = Remote::new(host(p.pid), host(t.tid), gadget, regs_of(host(t.tid))?);
            task::restore_loginuid(&mut tr, p, loginuid)?;
        }
        crate::files::in_task(r, p, img, opened)?;
        task::restore_process_misc(r, p)?;
        task::restore_sigactions(r, p)?;
        if crate::files::shares_fd_table(p) {
            // The table (and the inherited pidfd in it) is an earlier process's, closed there.
            opened.finish(r)?;
        } else {
            opened.finish_last(r)?;
        }
        for t in &p.threads {
            let mut tr = Remote::new(host(p.pid), host(t.tid), gadget, regs_of(host(t.tid))?);
            task::restore_thread(&mut tr, t)?;
            task::drain_pending(&mut tr)?;
            task::restore_pending(&mut tr, p.pid, t.tid, &t.pending, false)?;
        }
        task::restore_pending(r, p.pid, p.pid, &p.shared_pending, true)?;
        let mut remote = |tid: i32| {
            Ok(Remote::new(
                host(p.pid),
                host(tid),
                gadget,
                regs_of(host(tid))?,
            ))
        };
        // Filters before credentials: installing one needs CAP_SYS_ADMIN or no_new_privs.
        crate::seccomp::restore_filters(p, &img.seccomp_filters, &mut remote)?;
        let creds = p.creds.as_ref().expect("validated");
        for t in &p.threads {
            let mut tr = Remote::new(host(p.pid), host(t.tid), gadget, regs_of(host(t.tid))?);
            let mut c = creds.clone();
            c.no_new_privs = t.no_new_privs.unwrap_or(c.no_new_privs);
            task::restore_creds(&mut tr, &c)?;
        }
        task::restore_dumpable(r, p)?;
        crate::seccomp::restore_strict(p, &mut remote)?;
        r.call("munmap gadget", libc::SYS_munmap, &[gadget, PARASITE_LEN])?;
    }
    Ok(())
}

/// Every thread's saved registers (resuming where it was stopped), XSAVE area and signal mask.
fn set_registers(img: &rec::Checkpoint, host: &dyn Fn(i32) -> i32) -> Result<(), Failure> {
    for p in live(img) {
        for t in &p.threads {
            let saved = ptrace::regs_from_slice(&t.regs).expect("validated");
            let tid = host(t.tid);
            ptrace::set_xstate(tid, &t.xsave)
                .ctx(t.tid, || "PTRACE_SETREGSET(NT_X86_XSTATE)".into())?;
            ptrace::set_regs(tid, &resume_regs(&saved, false))
                .ctx(t.tid, || "PTRACE_SETREGS".into())?;
            ptrace::set_sigmask(tid, t.sigmask).ctx(t.tid, || "PTRACE_SETSIGMASK".into())?;
        }
    }
    Ok(())
}

/// Restore the image in `opts.dir`. Returns once every task runs.
pub fn restore(opts: &RestoreOptions) -> Result<RestoreStats, RestoreError> {
    restore_impl(opts, None)
}

/// Restore the image in `opts.dir` with its private anonymous memory placed on demand by a
/// page server (see [`crate::lazy`]). Returns once every task runs; the server's pid is in
/// [`RestoreStats::page_server`].
pub fn restore_lazy(
    opts: &RestoreOptions,
    lazy: &crate::lazy::LazyOptions,
) -> Result<RestoreStats, RestoreError> {
    restore_impl(opts, Some(lazy))
}

fn restore_impl(
    opts: &RestoreOptions,
    lazy: Option<&crate::lazy::LazyOptions>,
) -> Result<RestoreStats, RestoreError> {
    let t0 = Instant::now();
    let _span = tracing::info_span!("restore", dir = %opts.dir.display()).entered();
    progress::enter(&opts.progress, Phase::Loading);
    let (reader, img) = load_checked(opts, lazy.is_some())?;
    failpoint::check("validate")?;
    crate::sysv::restore(&img)?;
    let mut opened = Opened::prepare(&img, &reader, opts.inherit.clone())?;
    // Every socket exists again and is out of repair mode: let the connections' packets
    // through, then send again the FIN of each side that had shut down for writing (the peer,
    // in the tree, gets it now; a peer outside sees a duplicate and acknowledges it).
    if !img.net_lock.is_empty() {
        crate::netlock::unlock(&img.net_lock)
            .ctx(0, || format!("removing network lock {}", img.net_lock))?;
    }
    crate::files::network_open(&img, &opened)?;
    failpoint::check("prepare")?;
    let gadget = pick_gadget(&img)?;
    let root = &img.processes[0];
    let mut created = Created {
        tasks: Vec::new(),
        root: None,
        armed: true,
    };
    progress::enter(&opts.progress, Phase::CreatingTasks);
    let (root_pid, mut hmap, mut r, _own_pidfd) =
        create_root(opts, &img, &mut opened, &mut created, gadget)?;
    let mut prefork = crate::cow::PreFork::new(&img, &reader, opts.workers, gadget);
    prefork.process(&img, root, &mut r, &mut opened)?;
    let mut remotes: HashMap<i32, Remote> = HashMap::new();
    remotes.insert(root.pid, r);
    failpoint::check("root")?;

    create_tasks(
        &img,
        gadget,
        &mut opened,
        &mut created,
        &mut hmap,
        &mut remotes,
        &mut prefork,
    )?;
    failpoint::check("tasks")?;
    let host = |id: i32| hmap.get(&id).copied().unwrap_or(id);
    let r = remotes.get_mut(&root.pid).expect("created");
    crate::files::tasks_created(&img, &mut opened, &host, r)?;

    // Memory layout.
    progress::enter(&opts.progress, Phase::ReadingPages);
    let (mut fills, fixups) = restore_layouts(&img, &mut opened, &mut remotes, &mut prefork)?;
    failpoint::check("mappings")?;
    let lazy_ranges = match lazy {
        Some(_) => crate::lazy::split_fills(live(&img), &mut fills),
        None => Default::default(),
    };
    let tm = Instant::now();
    let memory_bytes = prefork.bytes + memory::fill_pages(&reader, &fills, opts.workers)?;
    // Armed (its watchdog holds the userfaultfds) before any injected call may fault on a
    // page (the kernel's rseq update on return to the task, once rseq is restored): a server
    // dying before would leave such a call waiting on a page that never comes.
    let starting = match lazy {
        Some(l) if !lazy_ranges.is_empty() => {
            Some(start_page_server(opts, &img, &lazy_ranges, &mut remotes, l)?.armed()?)
        }
        _ => None,
    };
    let memory_secs = tm.elapsed().as_secs_f64();
    progress::add(&opts.progress, memory_bytes);
    failpoint::check("pages")?;

    // Scheduling attributes are set from outside (through /proc for oom_score_adj), before the
    // root hook may put another /proc in place.
    for p in live(&img) {
        task::restore_sched(p, &host)?;
    }
    if let Some(h) = &opts.on_root {
        let mut f = h.0.lock().unwrap_or_else(|e| e.into_inner());
        let r = remotes.get_mut(&root.pid).expect("created");
        f(RootStage::Filled, root_pid, r)?;
    }

    // Processes stopped by job control stop again (their parents notified, as before).
    crate::process::restop_all(&img, &mut remotes, &host)?;
    progress::enter(&opts.progress, Phase::RestoringState);
    restore_process_state(&img, gadget, &mut opened, &mut remotes, &fixups, &hmap)?;
    failpoint::check("state")?;

    // Registers and masks, then let everything run (once a page server is guarded).
    let (page_server, prefetch_go) = match starting {
        Some((pid, go)) => (Some(pid), Some(go)),
        None => (None, None),
    };
    set_registers(&img, &host)?;
    failpoint::check("detach")?;
    created.armed = false;
    for p in live(&img) {
        for t in &p.threads {
            ptrace::detach(host(t.tid), 0).ctx(t.tid, || "PTRACE_DETACH".into())?;
        }
    }
    drop(prefetch_go); // the tree runs: the page server prefetches from now on
    let replaced = std::mem::take(&mut opened.replaced);
    drop(opened);
    // System V segments that had been marked for removal: mark them again, now that the tasks
    // hold their attachments.
    for s in img
        .shmem
        .iter()
        .filter(|s| s.kind == rec::ShmemKind::SysvShm as i32 && s.destroyed)
    {
        if let Err(e) = stasis_sys::sys::shm_remove(s.sysv_id) {
            tracing::warn!(id = s.sysv_id, error = %e, "could not mark a System V segment for removal");
        }
    }
    progress::enter(&opts.progress, Phase::Done);
    Ok(RestoreStats {
        root_pid,
        processes: img.processes.len(),
        threads: img.processes.iter().map(|p| p.threads.len()).sum(),
        memory_bytes,
        memory_secs,
        total_secs: t0.elapsed().as_secs_f64(),
        replaced,
        page_server,
    })
}

/// Register the lazy mappings of every process with a userfaultfd made in the task (before
/// its credentials are restored) and start the page server.
fn start_page_server(
    opts: &RestoreOptions,
    img: &rec::Checkpoint,
    lazy: &crate::lazy::LazyRanges,
    remotes: &mut HashMap<i32, Remote>,
    l: &crate::lazy::LazyOptions,
) -> Result<crate::lazy::Starting, Failure> {
    let mut regs = Vec::new();
    for p in live(img) {
        if let Some(ranges) = lazy.get(&p.pid) {
            let r = remotes.get_mut(&p.pid).expect("created");
            regs.push(crate::lazy::register(r, p.pid, ranges)?);
        }
    }
    crate::lazy::spawn_server(&opts.dir, img, lazy, regs, l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn proc_(pid: i32, pgid: i32) -> rec::Process {
        rec::Process {
            pid,
            pgid,
            ..Default::default()
        }
    }

    #[test]
    fn group_plan_leaders_first_outside_groups_left_out() {
        let ps = [
            proc_(10, 5),
            proc_(11, 11),
            proc_(12, 11),
            proc_(13, 13),
            proc_(14, 10),
        ];
        // 10 is in group 5, led outside the tree: left out; 14 joins 10's group although 10
        // does not lead one (the kernel will refuse that setpgid, as it would have before).
        assert_eq!(
            group_plan(&ps),
            vec![(11, 11), (13, 13), (12, 11), (14, 10)]
        );
    }

    /// Trees of up to 8 processes whose groups are led by one of them or by a pid outside.
    fn tree() -> impl Strategy<Value = Vec<rec::Process>> {
        prop::collection::vec((0usize..12, any::<bool>()), 1..8).prop_map(|spec| {
            let n = spec.len();
            spec.iter()
                .enumerate()
                .map(|(i, &(g, own))| {
                    let pid = 100 + i as i32;
                    let pgid = if own {
                        pid
                    } else if g < n {
                        100 + g as i32
                    } else {
                        1000 + g as i32
                    };
                    proc_(pid, pgid)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn group_plan_covers_exactly_the_groups_led_inside(ps in tree()) {
            let plan = group_plan(&ps);
            let inside = |id: i32| ps.iter().any(|p| p.pid == id);
            // Exactly the processes whose group leader is in the tree, once each.
            let mut planned: Vec<i32> = plan.iter().map(|&(pid, _)| pid).collect();
            planned.sort();
            let mut want: Vec<i32> = ps.iter().filter(|p| inside(p.pgid)).map(|p| p.pid).collect();
            want.sort();
            prop_assert_eq!(planned, want);
            // Every leader comes before every member.
            let first_member = plan.iter().position(|&(pid, pgid)| pid != pgid).unwrap_or(plan.len());
            prop_assert!(plan[first_member..].iter().all(|&(pid, pgid)| pid != pgid));
            // Each entry targets the image's group.
            for &(pid, pgid) in &plan {
                prop_assert_eq!(ps.iter().find(|p| p.pid == pid).map(|p| p.pgid), Some(pgid));
            }
        }
    }
}
