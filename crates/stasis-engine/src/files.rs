//! Files: fd tables and open file descriptions (pipes and FIFOs: [`pipes`]).
//!
//! ## Dump
//! For every fd, `/proc/PID/fd/N` (the link and a `stat` through it) tells what it is and
//! `/proc/PID/fdinfo/N` its offset and flags (`O_CLOEXEC` there is the fd flag). Fds that refer
//! to the same *open file description* — after `dup` or `fork` — are found with
//! `kcmp(KCMP_FILE)` and recorded as one [`rec::FileObject`] that several fds point to, so the
//! restore opens it once and shares it (offset and status flags stay shared).
//!
//! Pipes and FIFOs: their buffered bytes are copied without consuming them: we open the pipe
//! through `/proc/PID/fd/N` (read side, non-blocking) and `tee(2)` it into a pipe of our own.
//! A pipe whose read or write end is not held by the tree has its other side outside: see the
//! rules in docs/architecture.md ("Objects outside the tree").
//!
//! ## Restore
//! The restorer opens every file description itself (regular files by path with their flags and
//! offset, deleted files recreated and unlinked again, pipes created and refilled, memfds
//! recreated), then each task takes its fds with an injected `pidfd_open(restorer)` +
//! `pidfd_getfd` and `dup3` to the saved number. `pidfd_getfd` always sets `FD_CLOEXEC`, so the
//! saved flag is applied again by `dup3`.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::memory::{FdSource, ShmemTable};
use crate::remote::Remote;
use stasis_image::records::{self as rec, FileKind, ShmemKind};
use stasis_image::{ImageReader, ImageWriter};
use stasis_sys::{proc, sys};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

mod fanotify;
mod fdtable;
pub(crate) mod ghost_dirs;
pub(crate) mod kind;
pub(crate) mod locks;
mod memfd;
mod opath;
pub(crate) use fdtable::{creator, shares_fd_table};
mod pipes;
mod procfs;
mod regular;

use kind::{DumpCtx, ObjectKind, RestoreCtx, KINDS};

const O_CLOEXEC: u32 = libc::O_CLOEXEC as u32;

/// (pid, fd, file object id) of an fd already seen.
type FdRef = (i32, i32, u32);

/// Dump-side state shared across processes.
#[derive(Default)]
pub struct FileTable {
    /// Open file descriptions.
    pub files: Vec<rec::FileObject>,
    /// Pipes by inode.
    pub pipes: Vec<rec::PipeObject>,
    pipe_by_ino: HashMap<u64, u32>,
    /// (dev, ino) → [(pid, fd, file id)] for kcmp.
    seen: HashMap<(u64, u64), Vec<FdRef>>,
    /// Pipe id → (has read end, has write end) in the tree.
    ends: HashMap<u32, (bool, bool)>,
    /// Pipe id → a /proc path to open it for reading its buffer.
    pipe_src: HashMap<u32, String>,
    /// Unix sockets of the namespace (loaded at the first socket).
    pub(crate) unix: Option<crate::unix::UnixTable>,
    /// File object id → first (pid, fd) holding it, for messages.
    pub(crate) holders: HashMap<u32, (i32, i32)>,
    /// pidfds of the tasks whose fds we borrowed.
    pidfds: HashMap<i32, OwnedFd>,
    /// Our copies of files in flight in unix sockets (kept open while the dump runs).
    inflight: Vec<OwnedFd>,
    /// Established TCP connections in repair mode, and their network lock.
    pub tcp: Option<crate::inet::TcpRepair>,
    /// Inodes of the message queues whose messages are saved already.
    pub(crate) mq_seen: std::collections::HashSet<u64>,
    /// The checkpoint's recovery journal (sockets are recorded before they enter repair mode).
    pub journal: Option<crate::journal::JournalHandle>,
    /// Locks seen in fdinfo (see [`locks`]).
    locks: locks::LockTable,
    /// (pid, parent) of the processes whose fd tables are dumped (for `kcmp(KCMP_FILES)`).
    tables: Vec<(i32, i32)>,
}

pub(crate) fn is_tty(md: &std::fs::Metadata) -> bool {
    let major = libc::major(md.rdev());
    md.file_type().is_char_device()
        && (major == 136 || major == 4 || major == 5 || (128..=143).contains(&major))
}

/// What `/proc` tells about one fd of a task: the facts every kind's dump starts from.
pub(crate) struct Probe {
    pub(crate) pid: i32,
    pub(crate) fd: i32,
    /// The `/proc/PID/fd/N` link target (`/path`, `pipe:[INO]`, `socket:[INO]`, …).
    pub(crate) link: String,
    pub(crate) info: proc::FdInfo,
    /// `/proc/PID/fd/N`, to open the description again.
    pub(crate) proc_path: String,
    pub(crate) md: std::fs::Metadata,
    /// Inode of a socket.
    pub(crate) sock_ino: Option<u64>,
    /// Kind of an anonymous-inode object the engine knows.
    pub(crate) anon_kind: Option<FileKind>,
    /// On the mqueue file system.
    pub(crate) mqueue: bool,
}

impl Probe {
    pub(crate) fn unsupported(&self, kind: &str) -> CheckpointError {
        CheckpointError::Unsupported {
            pid: self.pid,
            what: format!(
                "fd {} ({}) is {kind}; not supported yet",
                self.fd, self.link
            ),
        }
    }

    pub(crate) fn char_major_minor(&self) -> Option<(u32, u32)> {
        self.md
            .file_type()
            .is_char_device()
            .then(|| (libc::major(self.md.rdev()), libc::minor(self.md.rdev())))
    }
}

impl FileTable {
    /// Dump the fd table of one process.
    pub fn dump_process(
        &mut self,
        pid: i32,
        shmem: &mut ShmemTable,
        writer: &ImageWriter,
    ) -> Result<Vec<rec::Fd>, CheckpointError> {
        let mut out = Vec::new();
        let fds = proc::list_fds(pid).ctx(pid, || "listing fds".into())?;
        for fd in fds {
            if let Some((file_id, cloexec)) = self.dump_fd(pid, fd, shmem, writer, 0)? {
                out.push(rec::Fd {
                    fd,
                    cloexec,
                    file_id,
                });
            }
        }
        Ok(out)
    }

    /// Dump one fd of `pid` (which may be ourselves, for files in flight in a unix socket):
    /// returns its open file description's id and its close-on-exec flag, or `None` if the fd
    /// went away.
    fn dump_fd(
        &mut self,
        pid: i32,
        fd: i32,
        shmem: &mut ShmemTable,
        writer: &ImageWriter,
        depth: u32,
    ) -> Result<Option<(u32, bool)>, CheckpointError> {
        let Some(p) = self.probe(pid, fd)? else {
            return Ok(None);
        };
        let key = (p.md.dev(), p.md.ino());
        let file_id = match self.same_description(&p, key)? {
            Some(id) => {
                self.dump_locks(&p, None)?;
                self.seen.entry(key).or_default().push((pid, fd, id));
                id
            }
            None => {
                // Known before the files in flight it carries are dumped: a socket that
                // carries itself (or a socket carrying it) is found again, not dumped twice.
                let id = self.files.len() as u32;
                self.seen.entry(key).or_default().push((pid, fd, id));
                self.holders.entry(id).or_insert((pid, fd));
                let mut cx = DumpCtx {
                    shmem,
                    writer,
                    depth,
                };
                self.dump_description(&p, &mut cx)?
            }
        };
        self.holders.entry(file_id).or_insert((pid, fd));
        Ok(Some((file_id, p.info.flags & O_CLOEXEC != 0)))
    }

    /// Read what `/proc` says about the fd; `None` if it went away.
    fn probe(&mut self, pid: i32, fd: i32) -> Result<Option<Probe>, CheckpointError> {
        let link = match proc::read_fd_link(pid, fd) {
            Ok(l) => l.to_string_lossy().into_owned(),
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(Failure::new(pid, format!("fd {fd}: readlink"), e).into()),
        };
        let info = proc::read_fdinfo(pid, fd).ctx(pid, || format!("fd {fd}: reading fdinfo"))?;
        let sock_ino: Option<u64> = link
            .strip_prefix("socket:[")
            .and_then(|r| r.trim_end_matches(']').parse().ok());
        if sock_ino.is_some() && self.unix.is_none() {
            self.unix = Some(crate::unix::UnixTable::load()?);
        }
        let anon_kind = match link.strip_prefix("anon_inode:") {
            None => None,
            Some("[eventfd]") => Some(FileKind::Eventfd),
            Some("[eventpoll]") => Some(FileKind::Epoll),
            Some("[timerfd]") => Some(FileKind::Timerfd),
            Some("[signalfd]") => Some(FileKind::Signalfd),
            Some("inotify") => Some(FileKind::Inotify),
            Some("[fanotify]") => Some(FileKind::Fanotify),
            Some("[pidfd]") => Some(FileKind::Pidfd),
            Some(k) => {
                return Err(CheckpointError::Unsupported {
                    pid,
                    what: format!(
                        "fd {fd} ({link}) is an anonymous-inode object ({k}); not supported yet"
                    ),
                })
            }
        };
        let proc_path = format!("/proc/{pid}/fd/{fd}");
        let mqueue = !link.starts_with("socket:")
            && !link.starts_with("anon_inode:")
            && !link.starts_with("pipe:")
            && sys::fs_magic(&proc_path).ok() == Some(sys::MQUEUE_MAGIC);
        let md = std::fs::metadata(&proc_path).ctx(pid, || format!("fd {fd} ({link}): stat"))?;
        Ok(Some(Probe {
            pid,
            fd,
            link,
            info,
            proc_path,
            md,
            sock_ino,
            anon_kind,
            mqueue,
        }))
    }

    /// The id of an fd already seen that shares this fd's open file description (`kcmp`).
    fn same_description(&self, p: &Probe, key: (u64, u64)) -> Result<Option<u32>, Failure> {
        if let Some(cands) = self.seen.get(&key) {
            for &(p2, fd2, id) in cands {
                if sys::kcmp(p.pid, p2, sys::KCMP_FILE, p.fd as u64, fd2 as u64)
                    .ctx(p.pid, || format!("fd {}: kcmp", p.fd))?
                    == 0
                {
                    return Ok(Some(id));
                }
            }
        }
        Ok(None)
    }

    /// Every fd seen so far with its open file description: (pid, fd) → file object id.
    pub(crate) fn fd_ids(&self) -> HashMap<(i32, i32), u32> {
        self.seen
            .values()
            .flatten()
            .map(|&(pid, fd, id)| ((pid, fd), id))
            .collect()
    }

    pub(crate) fn is_unix(&self, ino: u64) -> bool {
        self.unix.as_ref().is_some_and(|t| t.is_unix(ino))
    }

    /// Record a new open file description: the fields every kind has, then its kind's dump
    /// (the first entry of [`KINDS`] that recognises it), then the files in flight it
    /// carries.
    fn dump_description(
        &mut self,
        p: &Probe,
        cx: &mut DumpCtx<'_>,
    ) -> Result<u32, CheckpointError> {
        let id = self.files.len() as u32;
        let md = &p.md;
        let mut fo = rec::FileObject {
            id,
            kind: FileKind::Regular as i32,
            path: p.link.clone(),
            flags: p.info.flags & !O_CLOEXEC,
            pos: p.info.pos,
            deleted: false,
            content: Vec::new(),
            size: md.size(),
            pipe_id: 0,
            write_end: false,
            shmem_id: 0,
            rdev: md.rdev(),
            mode: md.mode() & 0o7777,
            file_id: Some(rec::FileIdentity {
                dev: md.dev(),
                ino: md.ino(),
                size: md.size(),
                mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            }),
            ..Default::default()
        };
        let kind = KINDS
            .iter()
            .find(|k| k.recognise(self, p))
            .ok_or_else(|| p.unsupported("an object of an unknown kind"))?;
        tracing::trace!(pid = p.pid, fd = p.fd, kind = kind.name(), "dumping fd");
        let inflight = kind.dump(self, p, &mut fo, cx)?;
        self.dump_locks(p, Some(&mut fo))?;
        fo.owner = self.dump_owner(p, cx.depth)?;
        self.files.push(fo);
        self.dump_inflight(p, id, inflight, cx)?;
        Ok(id)
    }

    /// Files in flight in a unix socket: dumped like fds of ours (we hold copies).
    fn dump_inflight(
        &mut self,
        p: &Probe,
        id: u32,
        inflight: crate::unix::InFlight,
        cx: &mut DumpCtx<'_>,
    ) -> Result<(), CheckpointError> {
        let me = sys::getpid();
        for (msg, fds) in inflight {
            for f in fds {
                let raw = f.as_raw_fd();
                self.inflight.push(f);
                let (fid, _) = self
                    .dump_fd(me, raw, cx.shmem, cx.writer, cx.depth + 1)?
                    .ok_or_else(|| {
                        Failure::msg(p.pid, format!("fd {}: a file in flight vanished", p.fd))
                    })?;
                if let Some(u) = self.files[id as usize].unix_mut() {
                    u.queue[msg].fds.push(fid);
                }
            }
        }
        Ok(())
    }

    /// Checks that need every fd table, kind by kind (see [`ObjectKind::dump_finish`]).
    pub fn finish(&mut self) -> Result<(), CheckpointError> {
        for k in KINDS {
            k.dump_finish(self)?;
        }
        Ok(())
    }

    /// Indexes of the pty pairs whose master is in the tree.
    pub fn pty_masters(&self) -> Vec<u32> {
        self.files
            .iter()
            .filter(|f| f.kind == FileKind::PtyMaster as i32)
            .filter_map(|f| f.pty().map(|p| p.index))
            .collect()
    }

    /// A copy of a task's fd in our process (same open file description).
    pub(crate) fn borrow(&mut self, pid: i32, fd: i32) -> Result<OwnedFd, Failure> {
        let pidfd = match self.pidfds.entry(pid) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(sys::pidfd_open(pid).ctx(pid, || "pidfd_open".into())?)
            }
        };
        sys::pidfd_getfd(pidfd, fd).ctx(pid, || format!("fd {fd}: pidfd_getfd"))
    }
}

// ---------------------------------------------------------------------------------------------
// Restore side.

/// Restorer-side open file descriptions and shmem objects, created once and handed to tasks.
pub struct Opened {
    /// File object id → our fd.
    pub files: HashMap<u32, OwnedFd>,
    /// Shmem id → our fd.
    pub shmem: HashMap<u32, OwnedFd>,
    /// Shmem id → a read-only description of the memfd, for its mappings without VM_MAYWRITE.
    pub shmem_ro: HashMap<u32, OwnedFd>,
    /// Path (+write) → our fd, for file mappings.
    pub paths: HashMap<(String, bool), OwnedFd>,
    /// Pipes: id → (read end, write end).
    pub pipes: HashMap<u32, (OwnedFd, OwnedFd)>,
    /// External pipe ends given with --inherit-fd: "pipe:[INO]" → our fd.
    pub inherit: HashMap<String, RawFd>,
    /// Process whose fd tables we are filling (its pidfd of us, remote number).
    pub remote_pidfd: HashMap<i32, u64>,
    /// A pidfd of the restorer that every task inherited at this number (a restore into a new
    /// pid namespace, where the tasks cannot name the restorer's pid).
    pub inherited_pidfd: Option<u64>,
    /// Highest fd number any task needs (+1): temporary fds go above.
    pub high_fd: u64,
    /// Recreated pty pairs (kept open until the tasks hold their ends).
    pub ptys: HashMap<u32, crate::pty::Pair>,
    /// Shmem object id → System V segment id.
    pub sysv: HashMap<u32, i32>,
    /// Outside objects not given in `inherit`, replaced by a stand-in.
    pub replaced: Vec<crate::restore::Replaced>,
    /// Descriptions only a task can open (`/dev/tty`), by id: opened by their first holder
    /// when its fds are installed ([`ObjectKind::opened_by_task`]).
    pub(crate) by_task: HashMap<u32, (&'static dyn ObjectKind, rec::FileObject)>,
}

pub(crate) fn open_with(path: &str, flags: u32) -> std::io::Result<File> {
    let acc = flags & libc::O_ACCMODE as u32;
    let mut o = std::fs::OpenOptions::new();
    o.read(acc == libc::O_RDONLY as u32 || acc == libc::O_RDWR as u32);
    o.write(acc == libc::O_WRONLY as u32 || acc == libc::O_RDWR as u32);
    let keep = flags
        & !(libc::O_ACCMODE
            | libc::O_CREAT
            | libc::O_TRUNC
            | libc::O_EXCL
            | libc::O_CLOEXEC
            | libc::O_NOCTTY) as u32;
    o.custom_flags(keep as i32);
    o.open(path)
}

/// The status flags that belong to the description (`O_APPEND`, `O_NONBLOCK`, `O_DIRECT` —
/// packet mode on a pipe's write end —, `O_NOATIME`), as saved — whatever the kind's `open`
/// left them at. `O_ASYNC` is set later by the task itself (see [`locks`]).
fn set_status_flags(fd: &OwnedFd, f: &rec::FileObject) -> Result<(), Failure> {
    let what = || format!("open file description #{} ({}): status flags", f.id, f.path);
    let mask = (libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME) as u32;
    let cur = sys::fcntl(fd.as_raw_fd(), libc::F_GETFL, 0).ctx(0, what)? as u32;
    let newfl = (cur & !mask) | (f.flags & mask);
    if newfl != cur {
        sys::fcntl(fd.as_raw_fd(), libc::F_SETFL, newfl as i64).ctx(0, what)?;
    }
    Ok(())
}

/// Seek a reopened file to its saved offset.
fn seek_to_saved(file: &File, f: &rec::FileObject) -> Result<(), Failure> {
    if f.pos != 0 {
        sys::lseek(file.as_raw_fd(), f.pos as i64, libc::SEEK_SET).ctx(0, || {
            format!(
                "open file description #{} ({}): seek to {}",
                f.id, f.path, f.pos
            )
        })?;
    }
    Ok(())
}

/// Checkpoint: every kind's [`ObjectKind::after_parasites`].
pub fn after_parasites(
    frozen: &crate::freeze::Frozen,
    procs: &[rec::Process],
    t: &mut FileTable,
) -> Result<(), CheckpointError> {
    for k in KINDS {
        k.after_parasites(frozen, procs, t)?;
    }
    Ok(())
}

/// Checkpoint: every kind's [`ObjectKind::check_image`].
pub fn check_image(img: &rec::Checkpoint) -> Result<(), CheckpointError> {
    for k in KINDS {
        k.check_image(img)?;
    }
    Ok(())
}

/// Restore: every kind's [`ObjectKind::tasks_created`].
pub fn tasks_created(
    img: &rec::Checkpoint,
    o: &mut Opened,
    host: &dyn Fn(i32) -> i32,
    root: &mut Remote,
) -> Result<(), Failure> {
    for k in KINDS {
        k.tasks_created(img, o, host, root)?;
    }
    Ok(())
}

/// Restore, in task `r` once its fds are installed: every kind's [`ObjectKind::in_task`], then
/// the POSIX locks and leases the process held (taken again by the process itself).
pub fn in_task(
    r: &mut Remote,
    p: &rec::Process,
    img: &rec::Checkpoint,
    o: &mut Opened,
) -> Result<(), Failure> {
    for k in KINDS {
        k.in_task(r, p, img, o)?;
    }
    locks::restore_in_task(r, p, img)
}

/// Restore: every kind's [`ObjectKind::network_open`].
pub fn network_open(img: &rec::Checkpoint, o: &Opened) -> Result<(), Failure> {
    for k in KINDS {
        k.network_open(img, o)?;
    }
    Ok(())
}

/// One line describing an open file description of an image, by its kind (`stasis inspect`).
pub fn describe(img: &rec::Checkpoint, f: &rec::FileObject) -> String {
    let mut line = match kind::for_record(f.kind) {
        Some(k) => k.describe(img, f),
        None => format!("unknown kind {} ({})", f.kind, f.path),
    };
    for l in &f.locks {
        line.push_str(&format!(", {}", locks::describe_lock(l)));
    }
    line
}

impl Opened {
    /// Create every shared object the image needs, in the restorer: shared memory, then each
    /// kind's descriptions in the three phases of [`ObjectKind`].
    pub fn prepare(
        img: &rec::Checkpoint,
        reader: &ImageReader,
        inherit: HashMap<String, RawFd>,
    ) -> Result<Opened, Failure> {
        let mut o = Opened {
            files: HashMap::new(),
            shmem: HashMap::new(),
            shmem_ro: HashMap::new(),
            paths: HashMap::new(),
            pipes: HashMap::new(),
            inherit,
            remote_pidfd: HashMap::new(),
            inherited_pidfd: None,
            high_fd: 3,
            ptys: HashMap::new(),
            sysv: HashMap::new(),
            replaced: Vec::new(),
            by_task: HashMap::new(),
        };
        for p in &img.processes {
            for fd in &p.fds {
                o.high_fd = o.high_fd.max(fd.fd as u64 + 1);
            }
        }
        for s in &img.shmem {
            if s.kind == ShmemKind::SysvShm as i32 {
                o.sysv.insert(s.id, ensure_sysv(s, reader)?);
                continue;
            }
            let fd = create_shmem(s, reader)?;
            if s.kind == ShmemKind::Memfd as i32 && s.memfd_attrs {
                o.shmem_ro.insert(s.id, memfd::read_only(s, &fd)?);
            }
            o.shmem.insert(s.id, fd);
        }
        let mut cx = RestoreCtx {
            img,
            reader,
            made: HashMap::new(),
            held: Vec::new(),
        };
        for k in KINDS {
            k.create(&mut o, &mut cx)?;
        }
        for f in &img.files {
            let kind = kind::for_record(f.kind).ok_or_else(|| {
                Failure::msg(
                    0,
                    format!(
                        "open file description #{} ({}): unknown kind {} in image",
                        f.id, f.path, f.kind
                    ),
                )
            })?;
            if kind.opened_by_task(f) {
                o.by_task.insert(f.id, (kind, f.clone()));
                continue;
            }
            let fd = kind.open(f, &mut o, &mut cx)?;
            set_status_flags(&fd, f)?;
            locks::take_description_locks(&fd, f)?;
            o.files.insert(f.id, fd);
        }
        for k in KINDS {
            k.finish(&mut o, &mut cx)?;
        }
        Ok(o)
    }

    /// Install all fds of one process.
    pub fn restore_fds(&mut self, r: &mut Remote, p: &rec::Process) -> Result<(), Failure> {
        for fd in &p.fds {
            if let Some((kind, f)) = self.by_task.get(&fd.file_id) {
                if let std::collections::hash_map::Entry::Vacant(v) = self.files.entry(fd.file_id) {
                    let file = kind.open_in_task(r, fd.fd, f)?;
                    set_status_flags(&file, f)?;
                    v.insert(file);
                }
            }
            let ours = self
                .files
                .get(&fd.file_id)
                .ok_or_else(|| {
                    Failure::msg(p.pid, format!("fd {}: file missing from image", fd.fd))
                })?
                .as_raw_fd();
            let got = self.install(r, ours)?;
            let target = fd.fd as u64;
            if got == target {
                let fl = if fd.cloexec { libc::FD_CLOEXEC } else { 0 };
                r.call(
                    &format!("fd {}: F_SETFD", fd.fd),
                    libc::SYS_fcntl,
                    &[target, libc::F_SETFD as u64, fl as u64],
                )?;
            } else {
                let fl = if fd.cloexec { libc::O_CLOEXEC } else { 0 };
                r.call(
                    &format!("fd {}: dup3", fd.fd),
                    libc::SYS_dup3,
                    &[got, target, fl as u64],
                )?;
                r.call("close", libc::SYS_close, &[got])?;
            }
        }
        Ok(())
    }

    /// Our pidfd inside task `r`, created on first use above every fd the task needs.
    fn remote_pidfd(&mut self, r: &mut Remote) -> Result<u64, Failure> {
        if let Some(&fd) = self.remote_pidfd.get(&r.pid) {
            return Ok(fd);
        }
        if let Some(fd) = self.inherited_pidfd {
            self.remote_pidfd.insert(r.pid, fd);
            return Ok(fd);
        }
        let me = sys::getpid() as u64;
        let pfd = r.call("pidfd_open(restorer)", libc::SYS_pidfd_open, &[me, 0])?;
        let high = r.call(
            "fcntl(F_DUPFD_CLOEXEC)",
            libc::SYS_fcntl,
            &[pfd, libc::F_DUPFD_CLOEXEC as u64, self.high_fd + 16],
        )?;
        r.call("close", libc::SYS_close, &[pfd])?;
        self.remote_pidfd.insert(r.pid, high);
        Ok(high)
    }

    /// Close our pidfd inside the task (before it creates children, which copy its fd table).
    /// A pidfd the tasks inherited stays: children created later need it too.
    pub fn finish(&mut self, r: &mut Remote) -> Result<(), Failure> {
        if let Some(fd) = self.remote_pidfd.remove(&r.pid) {
            if Some(fd) != self.inherited_pidfd {
                r.call("close(pidfd)", libc::SYS_close, &[fd])?;
            }
        }
        Ok(())
    }

    /// The task's last use of us: close our pidfd, inherited or not.
    pub fn finish_last(&mut self, r: &mut Remote) -> Result<(), Failure> {
        self.finish(r)?;
        if let Some(fd) = self.inherited_pidfd {
            r.call("close(inherited pidfd)", libc::SYS_close, &[fd])?;
        }
        Ok(())
    }
}

impl crate::memory::FdSource for Opened {
    fn file_fd(&mut self, path: &str, write: bool) -> Result<RawFd, Failure> {
        let key = (path.to_string(), write);
        if let Some(f) = self.paths.get(&key) {
            return Ok(f.as_raw_fd());
        }
        let flags = if write { libc::O_RDWR } else { libc::O_RDONLY } as u32;
        let f = open_with(path, flags).ctx(0, || format!("opening mapped file {path}"))?;
        let fd = f.as_raw_fd();
        self.paths.insert(key, f.into());
        Ok(fd)
    }

    fn sysv_id(&self, id: u32) -> Option<i32> {
        self.sysv.get(&id).copied()
    }

    fn shmem_fd(&mut self, id: u32) -> Result<RawFd, Failure> {
        self.shmem
            .get(&id)
            .map(|f| f.as_raw_fd())
            .ok_or_else(|| Failure::msg(0, format!("shared memory object {id} missing from image")))
    }

    fn shmem_fd_readonly(&mut self, id: u32) -> Option<RawFd> {
        self.shmem_ro.get(&id).map(|f| f.as_raw_fd())
    }

    fn install(&mut self, r: &mut Remote, fd: RawFd) -> Result<u64, Failure> {
        let pfd = self.remote_pidfd(r)?;
        r.call("pidfd_getfd", libc::SYS_pidfd_getfd, &[pfd, fd as u64, 0])
    }
}

/// A System V segment with the saved id: reused if it still exists (same key and size: it
/// outlived the tree and holds the live data), otherwise created with that id (through
/// `kernel.shm_next_id`) and filled.
fn ensure_sysv(s: &rec::ShmemObject, reader: &ImageReader) -> Result<i32, Failure> {
    let id = s.sysv_id;
    let what = || {
        format!(
            "System V shared memory segment {id} (key {:#x})",
            s.sysv_key
        )
    };
    if let Ok((key, size, ..)) = sys::shm_stat(id) {
        // Images written before shm_segsz was kept exactly hold the mapped (page-rounded) size.
        let page = |n: u64| n.div_ceil(4096) * 4096;
        if key == s.sysv_key
            && (size == s.size || (s.size.is_multiple_of(4096) && page(size) == s.size))
        {
            return Ok(id);
        }
        return Err(Failure::msg(
            0,
            format!("{}: id {id} is taken by another segment (key {key:#x}, {size} bytes); restore into a partition with its own IPC namespace", what()),
        ));
    }
    let huge = if s.page_size != 0 {
        libc::SHM_HUGETLB | sys::huge_flags(s.page_size)
    } else {
        0
    };
    let got = sys::shm_create_flags(id, s.sysv_key, s.size, s.mode, huge)
        .ctx(0, || format!("{}: creating it", what()))?;
    if got != id {
        let _ = sys::shm_remove(got);
        return Err(Failure::msg(
            0,
            format!("{}: the kernel gave id {got}; the id is needed", what()),
        ));
    }
    let _ = sys::shm_set_owner(id, s.uid, s.gid, s.mode);
    crate::memory::for_each_object_run(reader, &s.pages, s.size, |off, data| {
        sys::shm_write(id, off, data).ctx(0, || format!("{}: filling", what()))
    })?;
    Ok(id)
}

fn create_shmem(s: &rec::ShmemObject, reader: &ImageReader) -> Result<OwnedFd, Failure> {
    if s.private_file && s.kind == ShmemKind::DeletedFile as i32 {
        return crate::memory::recreate_private_file(s, reader);
    }
    if s.page_size != 0 || s.kind == ShmemKind::HugetlbAnon as i32 {
        return crate::hugetlb::create_object(s, reader);
    }
    let kind =
        ShmemKind::try_from(s.kind).map_err(|_| Failure::msg(0, "unknown shared memory kind"))?;
    let file: File = match kind {
        ShmemKind::Memfd => return memfd::create(s, reader),
        ShmemKind::SysvShm | ShmemKind::HugetlbAnon => {
            return Err(Failure::msg(
                0,
                "System V segments are not files (internal error)",
            ))
        }
        // A deleted file made again at its path (a path from another mount namespace that
        // cannot be made here becomes a shared anonymous object, as before).
        ShmemKind::DeletedFile if s.name.starts_with('/') => regular::recreate_mapped_deleted(s)
            .or_else(|_| {
                sys::shared_anon_object(s.size).ctx(0, || {
                    format!("creating shared object for deleted file {}", s.name)
                })
            })?,
        ShmemKind::SharedAnon | ShmemKind::DeletedFile => {
            // A MAP_SHARED|MAP_ANONYMOUS object of our own, reached through map_files so
            // that the tasks' mappings show "/dev/zero (deleted)" as before.
            let f = sys::shared_anon_object(s.size).ctx(0, || {
                format!("creating shared anonymous object of {} bytes", s.size)
            })?;
            f
        }
    };
    crate::memory::fill_file(reader, &file, &s.pages, s.size)?;
    Ok(file.into())
}
