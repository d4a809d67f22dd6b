//! Files opened by path: regular files (a deleted one is saved with its content and recreated),
//! directories and character devices; and the terminals other than pseudo-terminals, which are
//! recognised only to be refused.

use super::kind::{DumpCtx, ObjectKind, RestoreCtx};
use super::{open_with, seek_to_saved, FileTable, Opened, Probe};
use crate::error::{CheckpointError, Ctx, Failure};
use crate::memory::dump_file_extents;
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_image::ImageReader;
use stasis_sys::sys;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};

/// A regular file: its path is enough, unless it was deleted (then its content is saved).
pub(crate) struct RegularKind;

impl ObjectKind for RegularKind {
    fn name(&self) -> &'static str {
        "regular file"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::Regular]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.md.file_type().is_file()
    }

    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        cx: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        fo.kind = FileKind::Regular as i32;
        if let Some(path) = p.link.strip_suffix(" (deleted)") {
            let (pid, fd) = (p.pid, p.fd);
            fo.deleted = true;
            fo.path = path.to_string();
            fo.ghost = Some(ghost_attrs(&p.md));
            // O_NOATIME: reading the content must not change the access time we keep.
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOATIME)
                .open(&p.proc_path)
                .ctx(pid, || format!("fd {fd}: opening deleted file {path}"))?;
            dump_file_extents(&f, p.md.size(), cx.writer, &mut fo.content, false)
                .ctx(pid, || {
                    format!("fd {fd}: saving content of deleted file {path}")
                })?;
        }
        fo.inode_flags = read_inode_flags(t, p);
        Ok(Vec::new())
    }

    /// Deleted files are made again first, so that other kinds (inotify watches on them) find
    /// them in [`RestoreCtx::made`] when they open.
    /// A deleted file that is also mapped shared is the shared-memory object made already:
    /// opened again through it, so that fd and mappings stay on one inode.
    fn create(&self, o: &mut Opened, cx: &mut RestoreCtx<'_>) -> Result<(), Failure> {
        for f in cx.img.files.iter() {
            if f.kind != FileKind::Regular as i32 || !f.deleted || f.in_proc {
                continue;
            }
            let mapped = cx
                .img
                .shmem
                .iter()
                .find(|s| s.kind == rec::ShmemKind::DeletedFile as i32 && s.name == f.path)
                .and_then(|s| o.shmem.get(&s.id));
            let file = match mapped {
                Some(m) => {
                    let p = format!("/proc/self/fd/{}", m.as_raw_fd());
                    let file = open_with(&p, f.flags)
                        .ctx(0, || format!("reopening deleted file {}", f.path))?;
                    set_ghost_attrs(&file, f).ctx(0, || what(f))?;
                    file
                }
                None => recreate_deleted(f, cx.reader)?,
            };
            cx.made.insert(f.id, file.into());
        }
        Ok(())
    }

    /// A file under a task's `/proc` is opened by the task (see `files/procfs.rs`).
    fn opened_by_task(&self, f: &rec::FileObject) -> bool {
        f.in_proc
    }

    fn open_in_task(
        &self,
        r: &mut crate::remote::Remote,
        _fd: i32,
        f: &rec::FileObject,
    ) -> Result<OwnedFd, Failure> {
        super::procfs::open_in_task(r, f)
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        cx: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let file = if f.deleted {
            File::from(cx.take_made(f, "deleted file not recreated")?)
        } else {
            open_flagged(f)?
        };
        restore_inode_flags(&file, f)?;
        seek_to_saved(&file, f)?;
        Ok(file.into())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!(
            "file {}{}",
            f.path,
            if f.deleted { " (deleted)" } else { "" }
        )
    }
}

fn what(f: &rec::FileObject) -> String {
    format!("open file description #{} ({})", f.id, f.path)
}

/// The missing directories above `path`, made (mode 0700) so that a deleted file whose
/// directory was removed too can be made again at its path; returned parents first, to be
/// removed with [`remove_parents`].
pub(crate) fn make_parents(path: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut missing: Vec<&std::path::Path> = path
        .ancestors()
        .skip(1)
        .take_while(|d| !d.as_os_str().is_empty() && d.symlink_metadata().is_err())
        .collect();
    missing.reverse();
    let mut made = Vec::new();
    for d in missing {
        if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(d) {
            remove_parents(&made);
            return Err(e);
        }
        made.push(d.to_path_buf());
    }
    Ok(made)
}

/// Remove what [`make_parents`] made, deepest first.
pub(crate) fn remove_parents(made: &[std::path::PathBuf]) {
    for d in made.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// A deleted file: created again (under a temporary name when its path is taken; its removed
/// directories made for the time), filled, opened with the saved flags, and unlinked.
fn recreate_deleted(f: &rec::FileObject, reader: &ImageReader) -> Result<File, Failure> {
    let path = std::path::Path::new(&f.path);
    let parents = make_parents(path).ctx(0, || format!("recreating deleted file {}", f.path))?;
    let res = recreate_deleted_in(f, reader);
    remove_parents(&parents);
    res
}

fn recreate_deleted_in(f: &rec::FileObject, reader: &ImageReader) -> Result<File, Failure> {
    let path = std::path::Path::new(&f.path);
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    let name = if path.exists() {
        dir.join(format!(".stasis-ghost-{}-{}", sys::getpid(), f.id))
    } else {
        path.to_path_buf()
    };
    let what = || format!("recreating deleted file {}", f.path);
    let w = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(if f.mode == 0 { 0o600 } else { f.mode })
        .open(&name)
        .ctx(0, what)?;
    let res = (|| {
        crate::memory::fill_file(reader, &w, &f.content, f.size)?;
        set_ghost_attrs(&w, f).ctx(0, what)?;
        let file = open_with(&name.to_string_lossy(), f.flags).ctx(0, what)?;
        Ok(file)
    })();
    let _ = std::fs::remove_file(&name);
    res
}

/// Owner and times of a file (saved for a deleted one).
pub(crate) fn ghost_attrs(md: &std::fs::Metadata) -> rec::GhostAttrs {
    rec::GhostAttrs {
        uid: md.uid(),
        gid: md.gid(),
        atime_ns: md.atime() * 1_000_000_000 + md.atime_nsec(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
    }
}

fn system_time(ns: i64) -> std::time::SystemTime {
    let d = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        std::time::UNIX_EPOCH + d
    } else {
        std::time::UNIX_EPOCH - d
    }
}

/// Owner, mode and times of a recreated deleted file, as saved (times last: the writes and the
/// ownership change touch them).
pub(crate) fn set_ghost_attrs(w: &File, f: &rec::FileObject) -> std::io::Result<()> {
    let Some(g) = &f.ghost else {
        return Ok(());
    };
    std::os::unix::fs::fchown(w, Some(g.uid), Some(g.gid))?;
    use std::os::unix::fs::PermissionsExt;
    w.set_permissions(std::fs::Permissions::from_mode(f.mode))?;
    w.set_times(
        std::fs::FileTimes::new()
            .set_accessed(system_time(g.atime_ns))
            .set_modified(system_time(g.mtime_ns)),
    )
}

/// `FS_IOC_GETFLAGS` of an fd of the tree (`None` where the file system has no such flags or
/// none of those restore sets is set), through a copy of the fd: opening the file again would
/// show watchers (inotify, fanotify) an open they never saw before.
pub(crate) fn read_inode_flags(t: &mut FileTable, p: &Probe) -> Option<u32> {
    let f = t.borrow(p.pid, p.fd).ok()?;
    let v = sys::ioctl_get_int(f.as_raw_fd(), FS_IOC_GETFLAGS).ok()? as u32;
    (v & SETTABLE != 0).then_some(v)
}

const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
/// The flags `chattr` sets that the restore puts back (append-only, immutable, noatime, sync,
/// nodump, dirsync, no copy-on-write, project inherit, compression, secure/undelete
/// deletion); the others are the file system's own.
const SETTABLE: u32 = 0x0000_0001 // FS_SECRM_FL
    | 0x0000_0002 // FS_UNRM_FL
    | 0x0000_0004 // FS_COMPR_FL
    | 0x0000_0008 // FS_SYNC_FL
    | 0x0000_0010 // FS_IMMUTABLE_FL
    | 0x0000_0020 // FS_APPEND_FL
    | 0x0000_0040 // FS_NODUMP_FL
    | 0x0000_0080 // FS_NOATIME_FL
    | 0x0001_0000 // FS_DIRSYNC_FL
    | 0x0080_0000 // FS_NOCOW_FL
    | 0x2000_0000; // FS_PROJINHERIT_FL

/// Set the saved inode flags of `file` again if they differ (through the restorer's fd).
pub(crate) fn restore_inode_flags(file: &File, f: &rec::FileObject) -> Result<(), Failure> {
    let Some(want) = f.inode_flags else {
        return Ok(());
    };
    let what = || format!("{}: inode flags {want:#x}", what(f));
    let cur = sys::ioctl_get_int(file.as_raw_fd(), FS_IOC_GETFLAGS).ctx(0, what)? as u32;
    if cur & SETTABLE == want & SETTABLE {
        return Ok(());
    }
    let new = (cur & !SETTABLE) | (want & SETTABLE);
    sys::ioctl_set_int(file.as_raw_fd(), FS_IOC_SETFLAGS, new as i32).ctx(0, what)
}

/// Open a file by path with its saved flags. A file the task opened for writing before it was
/// made immutable or append-only (the open description keeps its access) cannot be opened so
/// again: its flags are lifted for the open and put back.
fn open_flagged(f: &rec::FileObject) -> Result<File, Failure> {
    const LOCKING: u32 = 0x10 | 0x20; // FS_IMMUTABLE_FL | FS_APPEND_FL
    match open_with(&f.path, f.flags) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        r => return r.ctx(0, || what(f)),
    }
    let what = || format!("{}: lifting immutable/append-only to open it", what(f));
    let ro = open_with(
        &f.path,
        (libc::O_RDONLY | libc::O_NOATIME | libc::O_NONBLOCK) as u32,
    )
    .ctx(0, what)?;
    let cur = sys::ioctl_get_int(ro.as_raw_fd(), FS_IOC_GETFLAGS).ctx(0, what)? as u32;
    if cur & LOCKING == 0 {
        return open_with(&f.path, f.flags).ctx(0, what);
    }
    sys::ioctl_set_int(ro.as_raw_fd(), FS_IOC_SETFLAGS, (cur & !LOCKING) as i32).ctx(0, what)?;
    let file = open_with(&f.path, f.flags);
    sys::ioctl_set_int(ro.as_raw_fd(), FS_IOC_SETFLAGS, cur as i32).ctx(0, what)?;
    file.ctx(0, what)
}

/// A deleted file that the tree only maps (shared or private): made again at its path (or a
/// name of our own beside it when the path is taken) with its mode and owner, and unlinked;
/// the caller fills it. Its mappings then show the same `path (deleted)`.
pub(crate) fn recreate_mapped_deleted(s: &rec::ShmemObject) -> Result<File, Failure> {
    let path = std::path::Path::new(&s.name);
    let name = if path.symlink_metadata().is_ok() {
        let dir = path.parent().unwrap_or(std::path::Path::new("/"));
        dir.join(format!(".stasis-ghost-map-{}-{}", sys::getpid(), s.id))
    } else {
        path.to_path_buf()
    };
    let what = || format!("recreating deleted mapped file {}", s.name);
    let parents = make_parents(path).ctx(0, what)?;
    let res = (|| -> std::io::Result<File> {
        let w = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&name)?;
        let attrs = (|| -> std::io::Result<()> {
            if s.mode != 0 || s.uid != 0 || s.gid != 0 {
                std::os::unix::fs::fchown(&w, Some(s.uid), Some(s.gid))?;
                use std::os::unix::fs::PermissionsExt;
                w.set_permissions(std::fs::Permissions::from_mode(s.mode))?;
            }
            Ok(())
        })();
        let _ = std::fs::remove_file(&name);
        attrs.map(|_| w)
    })();
    remove_parents(&parents);
    res.ctx(0, what)
}

/// A directory, reopened by path at its offset.
pub(crate) struct DirectoryKind;

impl ObjectKind for DirectoryKind {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::Directory]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.md.file_type().is_dir()
    }

    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        fo.kind = FileKind::Directory as i32;
        fo.inode_flags = read_inode_flags(t, p);
        Ok(Vec::new())
    }

    /// A file under a task's `/proc` is opened by the task (see `files/procfs.rs`).
    fn opened_by_task(&self, f: &rec::FileObject) -> bool {
        f.in_proc
    }

    fn open_in_task(
        &self,
        r: &mut crate::remote::Remote,
        _fd: i32,
        f: &rec::FileObject,
    ) -> Result<OwnedFd, Failure> {
        super::procfs::open_in_task(r, f)
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let file = open_with(&f.path, f.flags).ctx(0, || what(f))?;
        restore_inode_flags(&file, f)?;
        seek_to_saved(&file, f)?;
        Ok(file.into())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!("directory {}", f.path)
    }
}

/// A character device (`/dev/null`, `/dev/urandom`…), reopened by path; restore refuses a path
/// that now names another device.
pub(crate) struct CharDeviceKind;

impl ObjectKind for CharDeviceKind {
    fn name(&self) -> &'static str {
        "character device"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::CharDevice]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.md.file_type().is_char_device()
    }

    fn dump(
        &self,
        _: &mut FileTable,
        _: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        fo.kind = FileKind::CharDevice as i32;
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let file = open_with(&f.path, f.flags).ctx(0, || what(f))?;
        let md = file.metadata().ctx(0, || what(f))?;
        if md.rdev() != f.rdev {
            return Err(Failure::msg(
                0,
                format!("{}: device number changed", what(f)),
            ));
        }
        Ok(file.into())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!(
            "character device {} ({}:{})",
            f.path,
            libc::major(f.rdev),
            libc::minor(f.rdev)
        )
    }
}

/// Terminals other than pseudo-terminals (consoles, virtual terminals, serial lines): refused.
pub(crate) struct OtherTerminalKind;

impl ObjectKind for OtherTerminalKind {
    fn name(&self) -> &'static str {
        "other terminal (refused)"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[]
    }

    /// After the pseudo-terminal kinds in the registry: any other tty device.
    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        super::is_tty(&p.md)
    }

    fn dump(
        &self,
        _: &mut FileTable,
        p: &Probe,
        _: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        Err(p.unsupported("a terminal other than a pseudo-terminal (console, /dev/tty*)"))
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        Err(Failure::msg(0, format!("{}: not restorable", what(f))))
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!("terminal {}", f.path)
    }
}
