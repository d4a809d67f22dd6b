//! Checkpoint orchestration.
//!
//! Steps (each is a failpoint name, see [`crate::failpoint`]):
//! 1. `seize` — freeze the tree ([`Frozen`]); the guard puts it back on any error.
//! 2. `inspect` — read what /proc tells (mappings, fds, ids) and refuse unsupported objects
//!    before anything is changed in the tasks.
//! 3. `parasite` — map our gadget/scratch page in each process (recorded in the recovery
//!    journal), block signals, inject the queries only the task can answer.
//! 4. `memory` — dump pages (parallel) and shared objects. With `leave_running` the pages are
//!    only copied into our memory here (within [`CheckpointOptions::buffer_limit`]): the tree
//!    is released right after everything is read, and the pages are stored while it runs.
//! 5. `write` — write `objects.img`; `commit` — fsync everything and write the manifest last.
//! 6. `release` — remove the parasite, restore registers and masks; then either detach
//!    (`--leave-running`, before step 5) or SIGKILL the tree (after the commit) and wait until
//!    its tasks are dead (not until their parents have reaped them).

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::FileTable;
use crate::freeze::Frozen;
use crate::memory::{self, ShmemTable};
use crate::progress::{self, Phase};
use crate::remote::{Remote, PARASITE_LEN};
use crate::{failpoint, journal, task};
use prost::Message;
use stasis_image::records as rec;
use stasis_image::{Compression, ImageWriter, WriteOptions};
use stasis_sys::{proc, ptrace};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to checkpoint and how.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// Root of the tree.
    pub pid: i32,
    /// Image directory.
    pub dir: PathBuf,
    /// Keep the tree running afterwards.
    pub leave_running: bool,
    /// Overwrite a non-empty directory.
    pub force: bool,
    /// Compress page chunks.
    pub compression: Compression,
    /// Worker threads for page I/O.
    pub workers: usize,
    /// Freeze the tree through its cgroup while it is seized (a partition), so nothing in it
    /// runs, forks or exits between the first and the last seized thread.
    pub freezer: Option<FreezeHook>,
    /// The root is the first process of its own pid namespace (a partition): record pids as
    /// that namespace sees them, which is what restore recreates.
    pub pid_ns: bool,
    /// Called while the tree is still frozen, before the commit: the caller adds its own
    /// records (a partition's mounts and settings).
    pub before_commit: Option<WriterHook>,
    /// With `leave_running`: copy the tree's pages into memory while it is frozen and store
    /// them after it runs again, if they take at most this many bytes (None: half of the
    /// memory available now; Some(0): never — pages are written while frozen).
    pub buffer_limit: Option<u64>,
    /// Sign the image with this keyring's host key (`signature.img`, written before the
    /// manifest). None: an unsigned image, which restore refuses unless told otherwise.
    pub signer: Option<stasis_image::Keyring>,
    /// Where to store the phase and the page bytes written, for a caller's display.
    pub progress: Option<std::sync::Arc<crate::progress::Progress>>,
    /// An incremental image: the image to take it relative to (chunks the parent chain holds
    /// are not stored again; see [`crate::incremental`]).
    pub parent: Option<PathBuf>,
    /// Write tracking kept between images by the caller: with `parent` being its last image,
    /// only the pages written since are read. Armed (again) by every checkpoint.
    pub tracker: Option<std::sync::Arc<std::sync::Mutex<crate::incremental::DirtyTracker>>>,
}

/// The most page bytes a leave-running checkpoint copies into memory (see
/// [`CheckpointOptions::buffer_limit`]).
fn buffer_budget(limit: Option<u64>) -> u64 {
    limit.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("MemAvailable:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map(|kib| kib * 1024 / 2)
            .unwrap_or(0)
    })
}

/// See [`CheckpointOptions::before_commit`].
pub type WriterHookFn = dyn Fn(&ImageWriter) -> Result<(), Failure> + Send + Sync;

/// A shared writer hook in the options.
#[derive(Clone)]
pub struct WriterHook(pub std::sync::Arc<WriterHookFn>);

impl std::fmt::Debug for WriterHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterHook")
    }
}

/// Freezing and thawing a whole tree at once (a partition's cgroup).
pub trait Freezer: Send + Sync {
    /// Freeze every task; returns once all are frozen.
    fn freeze(&self) -> std::io::Result<()>;
    /// Let them run again.
    fn thaw(&self) -> std::io::Result<()>;
}

/// A shared [`Freezer`] in the options.
#[derive(Clone)]
pub struct FreezeHook(pub std::sync::Arc<dyn Freezer>);

impl std::fmt::Debug for FreezeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FreezeHook")
    }
}

/// Thaws on drop (the tasks stay ptrace-stopped once seized).
struct Thaw<'a>(Option<&'a dyn Freezer>);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            if let Err(e) = f.thaw() {
                tracing::error!(error = %e, "could not thaw the cgroup");
            }
        }
    }
}

/// Figures about a finished checkpoint.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointStats {
    /// Processes dumped.
    pub processes: usize,
    /// Threads dumped.
    pub threads: usize,
    /// Bytes of memory read.
    pub memory_bytes: u64,
    /// Bytes of page data stored (after skipping zero pages, before compression).
    pub stored_bytes: u64,
    /// Chunks written.
    pub chunks: u64,
    /// How long the tree was stopped, in seconds.
    pub frozen_secs: f64,
    /// Time spent dumping memory, in seconds.
    pub memory_secs: f64,
    /// Total time, in seconds.
    pub total_secs: f64,
    /// Pids still held by zombies when the checkpoint returned (kill mode returns once the
    /// tree is dead, not once its parents have reaped it; a restore waits for them).
    pub pids_still_busy: Vec<i32>,
}

fn find_vdso_syscall(pid: i32) -> Result<u64, Failure> {
    let maps = proc::read_maps(pid).ctx(pid, || "reading maps".into())?;
    let v = maps
        .iter()
        .find(|m| m.path == "[vdso]")
        .ok_or_else(|| Failure::msg(pid, "process has no [vdso]: cannot inject system calls"))?;
    let mut buf = vec![0u8; (v.end - v.start) as usize];
    stasis_sys::mem::read_exact(pid, v.start, &mut buf).ctx(pid, || "reading the vdso".into())?;
    let off = stasis_sys::inject::find_syscall_insn(&buf)
        .ok_or_else(|| Failure::msg(pid, "no syscall instruction in the vdso"))?;
    Ok(v.start + off as u64)
}

/// Seize every thread of the tree (a partition: frozen through its cgroup first, thawed once
/// every thread is in a ptrace stop). Also returns when the tree stopped changing (the cgroup
/// frozen, or seizing started).
fn freeze_tree(opts: &CheckpointOptions) -> Result<(Frozen, Instant), CheckpointError> {
    // A partition is frozen through its cgroup first; seizing then sees a tree that cannot
    // change, and the cgroup is thawed once every thread is in a ptrace stop (injection needs
    // the tasks out of the freezer; they stay stopped by ptrace).
    let mut thaw = Thaw(None);
    if let Some(f) = &opts.freezer {
        f.0.freeze()
            .map_err(|e| Failure::new(opts.pid, "freezing the cgroup", e))?;
        thaw.0 = Some(f.0.as_ref());
    }
    let t_frozen = Instant::now();
    let frozen = match &opts.freezer {
        // A task caught while exiting must run to become a zombie: thaw between attempts.
        Some(f) => Frozen::seize_with(
            opts.pid,
            &mut |attempt| {
                f.0.thaw()
                    .map_err(|e| Failure::new(opts.pid, "thawing the cgroup", e))?;
                std::thread::sleep(Duration::from_millis(5 * attempt));
                f.0.freeze()
                    .map_err(|e| Failure::new(opts.pid, "freezing the cgroup", e))?;
                Ok(())
            },
            &mut || {
                if let Err(e) = f.0.thaw() {
                    tracing::warn!(error = %e, "thawing a partition for a thread that does not stop");
                }
            },
        )?,
        None => Frozen::seize(opts.pid)?,
    };
    drop(thaw);
    Ok((frozen, t_frozen))
}

/// Every process of the frozen tree from `/proc` only (nothing changed yet): its record, its
/// memory layout (with the page jobs to run later), its fds, threads and pending signals.
// The tables the inspection fills, each its own borrow (as in `dump_layout`).
#[allow(clippy::too_many_arguments)]
fn inspect_tree(
    opts: &CheckpointOptions,
    frozen: &Frozen,
    files: &mut FileTable,
    shmem: &mut ShmemTable,
    writer: &ImageWriter,
    jobs: &mut Vec<memory::DumpJob>,
    seccomp: &mut crate::seccomp::FilterTable,
    incr: Option<&crate::incremental::LayoutCtx>,
) -> Result<Vec<rec::Process>, CheckpointError> {
    let mut procs = Vec::new();
    for (i, sp) in frozen.procs.iter().enumerate() {
        let pid = sp.pid;
        let mut p = task::dump_process_proc(pid)?;
        if i == 0 && p.pid != opts.pid {
            return Err(Failure::msg(pid, "tree walk order").into());
        }
        let smaps = match incr.and_then(|c| c.smaps_of(pid)) {
            Some(s) => s,
            None => proc::read_smaps(pid).ctx(pid, || "reading smaps".into())?,
        };
        let parent = crate::cow::ParentView::find(&procs, &p)?;
        p.vmas = memory::dump_layout(pid, i, &smaps, shmem, jobs, parent.as_ref(), incr)?;
        p.fds = files.dump_process(pid, shmem, writer)?;
        p.fd_table_of = files.shared_fd_table(pid, p.ppid)?;
        p.threads = sp
            .threads
            .iter()
            .map(task::dump_thread_regs)
            .collect::<Result<_, _>>()?;
        for t in &mut p.threads {
            seccomp.dump_thread(pid, t)?;
        }
        p.shared_pending = task::dump_shared_pending(pid)?;
        if sp.stopped {
            p.stop_signal = match sp.threads[0].stop_sig {
                s @ (libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) => s,
                // Continued between the look at its state and the seize: running.
                _ => 0,
            };
        }
        procs.push(p);
    }
    // Zombies last: each has its parent before it, and no child.
    for z in &frozen.zombies {
        procs.push(task::dump_zombie(z.pid)?);
    }
    files.assign_locks(&mut procs);
    Ok(procs)
}

/// In each process, a page of ours holding the gadget, and the queries only the task can
/// answer; the thread registers are put back at once (the page stays until release).
fn run_parasites(
    frozen: &mut Frozen,
    procs: &mut [rec::Process],
    jrnl: &mut journal::Journal,
) -> Result<(), CheckpointError> {
    for i in 0..frozen.procs.len() {
        let pid = frozen.procs[i].pid;
        let leader = frozen.procs[i].threads[0].clone();
        frozen.block_signals(i)?;
        let gadget = find_vdso_syscall(pid)?;
        let mut r = Remote::with_gadget(pid, leader.tid, gadget, leader.regs);
        let prot = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let base = r.call(
            "mmap parasite",
            libc::SYS_mmap,
            &[0, PARASITE_LEN, prot, flags, u64::MAX, 0],
        )?;
        frozen.procs[i].parasite = Some(base);
        jrnl.parasite(pid, base)
            .map_err(|e| Failure::new(pid, "writing the recovery journal", e))?;
        stasis_sys::mem::write_all(pid, base, &stasis_sys::inject::GADGET_CODE)
            .ctx(pid, || "writing the gadget".into())?;
        r.use_base(base);
        failpoint::check("parasite")?;
        task::dump_process_injected(&mut r, &mut procs[i])?;
        crate::aio::probe(&mut r, &mut procs[i])?;
        // Children: has this parent collected their stop (or their continue) yet?
        for j in 0..frozen.procs.len() {
            if frozen.procs[j].ppid != pid {
                continue;
            }
            let seen_as = proc::read_status(frozen.procs[j].pid)
                .ctx(pid, || "reading a child's status".into())?
                .ns_pid
                .last()
                .copied()
                .unwrap_or(frozen.procs[j].pid);
            if procs[j].stop_signal != 0 {
                procs[j].stop_reported = !task::report_pending(&mut r, seen_as, libc::WSTOPPED)?;
            } else {
                procs[j].continued = task::report_pending(&mut r, seen_as, libc::WCONTINUED)?;
            }
        }
        for (ti, t) in frozen.procs[i].threads.iter().enumerate() {
            let mut tr = Remote::new(pid, t.tid, base, t.regs);
            task::dump_thread_injected(&mut tr, &mut procs[i].threads[ti], pid)?;
        }
        // Put the thread registers back now: the parasite stays mapped until release.
        for t in &frozen.procs[i].threads {
            ptrace::set_regs(t.tid, &t.regs).ctx(t.tid, || "restoring registers".into())?;
        }
    }
    Ok(())
}

/// Checkpoint the tree rooted at `opts.pid` into `opts.dir`. A failed checkpoint removes
/// `opts.dir` if it created it; a directory that existed before keeps everything but the
/// manifest (files of other tools stay; the incomplete image is refused by readers).
pub fn checkpoint(opts: &CheckpointOptions) -> Result<CheckpointStats, CheckpointError> {
    let t0 = Instant::now();
    let _span = tracing::info_span!("checkpoint", pid = opts.pid).entered();
    let parent = match &opts.parent {
        Some(p) => Some(crate::incremental::Parent::open(&opts.dir, p)?),
        None => None,
    };
    let mut writer = ImageWriter::create(
        &opts.dir,
        WriteOptions {
            force: opts.force,
            compression: opts.compression,
        },
    )
    .map_err(|e| CheckpointError::Image(Box::new(e)))?;
    if let Some(p) = &parent {
        writer.set_base_chunks(p.reader.chain_chunk_ids());
    }
    let created = writer.created_dir();
    let r = checkpoint_into(opts, writer, t0, parent.as_ref());
    if r.is_err() && created {
        remove_created_dir(&opts.dir);
    }
    if r.is_ok() {
        progress::enter(&opts.progress, Phase::Done);
    }
    r
}

/// Removes the image directory a failed checkpoint created (through its parent's descriptor,
/// links never followed). Failing to is only logged: the checkpoint's own error matters.
/// (Also used by the partition layer, which creates the directory for its checkpointer.)
pub fn remove_created_dir(dir: &std::path::Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        parent
    };
    match stasis_image::safefs::Dir::open(parent).and_then(|p| p.remove_all(name)) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "removed the image directory of the failed checkpoint")
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the image directory of the failed checkpoint")
        }
    }
}

fn checkpoint_into(
    opts: &CheckpointOptions,
    writer: ImageWriter,
    t0: Instant,
    parent: Option<&crate::incremental::Parent>,
) -> Result<CheckpointStats, CheckpointError> {
    let mut stats = CheckpointStats::default();
    let mut tracker = opts
        .tracker
        .as_ref()
        .map(|t| t.lock().unwrap_or_else(std::sync::PoisonError::into_inner));

    // Pages unwritten since the parent come from it when the tracker's last image is it; the
    // mappings of tracked processes are read before the freeze (see `LayoutCtx::smaps_of`).
    let incr = parent.map(|p| {
        let tracked = match &tracker {
            Some(t) if !opts.pid_ns && t.base() == Some(&p.reference.manifest_blake3[..]) => {
                t.tracked_pids()
            }
            _ => Default::default(),
        };
        crate::incremental::LayoutCtx::new(p, tracked, opts.leave_running)
    });
    progress::enter(&opts.progress, Phase::Freezing);
    let (mut frozen, t_frozen) = freeze_tree(opts)?;
    failpoint::check("seize")?;
    let mut jrnl = journal::Journal::begin(&frozen)
        .map_err(|e| Failure::new(opts.pid, "writing the recovery journal", e))?;

    // Inspect: /proc only, nothing changed yet.
    let mut shmem = ShmemTable::default();
    let mut files = FileTable::default();
    files.journal = Some(jrnl.handle());
    let mut jobs = Vec::new();
    let mut seccomp = crate::seccomp::FilterTable::default();
    progress::enter(&opts.progress, Phase::Inspecting);
    let mut procs = inspect_tree(
        opts,
        &frozen,
        &mut files,
        &mut shmem,
        &writer,
        &mut jobs,
        &mut seccomp,
        incr.as_ref(),
    )?;
    files.finish()?;
    failpoint::check("inspect")?;

    // Parasite: queries only the tasks can answer.
    progress::enter(&opts.progress, Phase::Collecting);
    run_parasites(&mut frozen, &mut procs, &mut jrnl)?;
    crate::aio::check_copies(&procs)?;
    files.dump_pipes()?;
    crate::files::after_parasites(&frozen, &procs, &mut files)?;
    failpoint::check("tasks")?;

    // Memory: resident pages first, then swapped ones. A tree that goes on running
    // (--leave-running) is only frozen while its pages are copied into our memory, when they
    // fit the budget; they are stored (hashed, compressed, written) once it runs again.
    jobs.sort_by_key(|j| j.swapped);
    let tm = Instant::now();
    let job_bytes = memory::jobs_bytes(&jobs);
    let buffered = opts.leave_running && job_bytes <= buffer_budget(opts.buffer_limit);
    let mut read_bufs = None;
    if buffered {
        read_bufs = Some(memory::read_jobs(&jobs, opts.workers)?);
    } else {
        let (runs, _) = memory::run_dump_jobs(&jobs, &writer, opts.workers)?;
        for (job, r) in jobs.iter().zip(runs) {
            procs[job.slot.0].vmas[job.slot.1].pages.extend(r);
        }
    }
    let shm_bytes = memory::dump_shmem(&mut shmem, &writer)?;
    stats.memory_bytes = job_bytes + shm_bytes;
    progress::add(&opts.progress, stats.memory_bytes);
    stats.memory_secs = tm.elapsed().as_secs_f64();
    failpoint::check("memory")?;
    if let Some(t) = tracker.as_mut() {
        // Tracking starts again from this image (unless the tree ends with it); if that fails
        // the next image reads everything.
        if !opts.leave_running {
            t.clear();
        } else if let Err(e) = t.arm(&frozen) {
            tracing::warn!(error = %e, "write tracking not armed: the next image reads every page");
            t.clear();
        }
    }

    progress::enter(&opts.progress, Phase::Committing);
    let vdso_hash = memory::vdso_hash(opts.pid)?;
    // Declared after `frozen`: on an error path the sockets leave repair mode before the tasks
    // are let go.
    let mut tcp = files.tcp.take();
    let (sysv_sem, sysv_msg) = crate::sysv::dump(&frozen.tids())?;
    let mut img = rec::Checkpoint {
        root_pid: opts.pid,
        processes: procs,
        files: files.files,
        pipes: files.pipes,
        shmem: shmem.objects,
        kernel_release: kernel_release(),
        vdso_hash: vdso_hash.clone(),
        sysv_sem,
        sysv_msg,
        seccomp_filters: seccomp.filters,
        net_lock: match (&tcp, opts.leave_running) {
            (Some(t), false) if t.lock.active() => t.lock.table.clone(),
            _ => String::new(),
        },
        pid_ns: std::fs::metadata(format!("/proc/{}/ns/pid", opts.pid))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0),
        parent: parent.map(|p| p.reference.clone()),
    };
    crate::files::check_image(&img)?;
    if opts.pid_ns {
        crate::nsmap::to_namespace(&mut img)?;
    }
    stats.processes = img.processes.len();
    stats.threads = img.processes.iter().map(|p| p.threads.len()).sum();
    if let Some(h) = &opts.before_commit {
        (h.0)(&writer)?;
    }
    // Everything is read: with --leave-running the tree may go on while we make the image
    // durable (it is the same image either way; if the commit fails there is no manifest).
    let mut frozen = Some(frozen);
    if opts.leave_running {
        // Sockets leave repair mode before the tasks run again.
        if let Some(t) = tcp.as_mut() {
            t.release();
        }
        if let Some(f) = frozen.take() {
            f.release()?;
        }
        stats.frozen_secs = t_frozen.elapsed().as_secs_f64();
        if let Some(c) = &incr {
            c.check_flags_unchanged()?;
        }
    }
    if let Some(bufs) = read_bufs.take() {
        let runs = memory::store_read_jobs(&jobs, bufs, &writer, opts.workers)?;
        for (job, r) in jobs.iter().zip(runs) {
            img.processes[job.slot.0].vmas[job.slot.1].pages.extend(r);
        }
    }
    commit_image(writer, &img, &vdso_hash, opts, &mut stats)?;
    if let Some(t) = tracker.as_mut() {
        if !t.tracked_pids().is_empty() {
            match std::fs::read(opts.dir.join(stasis_image::MANIFEST_FILE)) {
                Ok(m) => t.committed(blake3::hash(&m).as_bytes().to_vec()),
                Err(e) => {
                    tracing::warn!(error = %e, "manifest not read back: the next image reads every page")
                }
            }
        }
    }

    // The image is durable: end the tree (unless it already runs on). Its TCP sockets stay in
    // repair mode (they close silently) and their network lock stays until restore.
    if let Some(t) = tcp.as_mut() {
        if !opts.leave_running {
            t.keep_for_restore();
        }
    }
    if let Some(f) = frozen.take() {
        stats.frozen_secs = t_frozen.elapsed().as_secs_f64();
        stats.pids_still_busy = f.kill(Duration::from_secs(5));
    }
    jrnl.finish();
    stats.total_secs = t0.elapsed().as_secs_f64();
    Ok(stats)
}

/// Write the records and commit the image (signed): durable once this returns. A failure
/// after the manifest is written takes it back, so a failed checkpoint never leaves a
/// complete-looking image.
fn commit_image(
    writer: ImageWriter,
    img: &rec::Checkpoint,
    vdso_hash: &[u8],
    opts: &CheckpointOptions,
    stats: &mut CheckpointStats,
) -> Result<(), CheckpointError> {
    writer
        .put_file(
            stasis_image::OBJECTS_FILE,
            stasis_image::KIND_OBJECTS,
            &img.encode_to_vec(),
        )
        .map_err(|e| CheckpointError::Image(Box::new(e)))?;
    failpoint::check("write")?;
    let labels = vec![
        ("kernel".to_string(), img.kernel_release.clone()),
        (
            "vdso-blake3".to_string(),
            stasis_image::chunk_hex(&vdso_hash.to_vec().try_into().unwrap_or([0; 32])),
        ),
        ("comm".to_string(), img.processes[0].threads[0].comm.clone()),
    ];
    let cs = writer
        .commit_signed(opts.pid, labels, opts.signer.as_ref())
        .map_err(|e| CheckpointError::Image(Box::new(e)))?;
    stats.chunks = cs.chunks;
    stats.stored_bytes = cs.chunk_bytes_raw;
    if let Err(e) = failpoint::check("commit").map_err(CheckpointError::from) {
        // Interrupted (or failed) after the manifest was written: take the image back so a
        // failed checkpoint never leaves a complete-looking image.
        let _ = std::fs::remove_file(opts.dir.join(stasis_image::MANIFEST_FILE));
        if let Ok(d) = std::fs::File::open(&opts.dir) {
            let _ = d.sync_all();
        }
        return Err(e);
    }
    Ok(())
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
