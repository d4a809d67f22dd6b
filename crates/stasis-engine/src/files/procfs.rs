//! Files the tree opened under `/proc`: its own `/proc/self/...`, another task's
//! `/proc/PID/...`, and the `/proc/PID` directory of a task that has exited since.
//!
//! A file of a live task is recorded like any file or directory (`Regular`/`Directory`, path
//! as the task's `/proc` shows it) and marked `in_proc`: it cannot be opened before the tasks
//! exist, so the restore has the task open it (an injected `openat`) when it installs the fds
//! (every task of the tree exists by then). The path resolves in the task's root and its own
//! `/proc`, of its own pid namespace, where the pids are those the image records: the tree's
//! own pids are restored unchanged (with `set_tid`, in a partition inside its namespace), so
//! the path needs no translation.
//!
//! A `/proc/PID` directory of a task that has exited (its link reads `/proc/PID (deleted)`;
//! `openat` in it fails with ESRCH, `getdents` with ENOENT) is restored as the same directory
//! of a short-lived process of ours, opened and then reaped: it behaves the same.

use super::kind::{DumpCtx, ObjectKind, RestoreCtx};
use super::{open_with, FileTable, Opened, Probe};
use crate::error::{CheckpointError, Ctx, Failure};
use crate::remote::Remote;
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::sys;
use std::os::fd::OwnedFd;

const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const DELETED: &str = " (deleted)";

/// Files and directories on a procfs, whatever their kind.
pub(crate) struct ProcKind;

/// `/proc/PID/rest` → (PID, "/rest" or "").
fn split(path: &str) -> Option<(i32, &str)> {
    let rest = path.strip_prefix("/proc/")?;
    let (pid, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    Some((pid.parse().ok()?, tail))
}

impl ObjectKind for ProcKind {
    fn name(&self) -> &'static str {
        "file under /proc"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::ProcDeadTask]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.link.starts_with("/proc/")
            && (p.md.is_file() || p.md.is_dir())
            && sys::fs_magic(&p.proc_path).ok() == Some(PROC_SUPER_MAGIC)
    }

    fn dump(
        &self,
        _: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        if let Some(path) = p.link.strip_suffix(DELETED) {
            if !p.md.is_dir() || split(path).is_none() {
                return Err(p.unsupported("a file under /proc of a task that has exited"));
            }
            fo.kind = FileKind::ProcDeadTask as i32;
            fo.path = path.to_string();
            return Ok(Vec::new());
        }
        if let Some((pid, _)) = split(&p.link) {
            check_task_in_tree(p, pid)?;
        }
        fo.kind = if p.md.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Regular
        } as i32;
        fo.in_proc = true;
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let what = || format!("open file description #{} ({} (deleted))", f.id, f.path);
        let (_, tail) = split(&f.path).ok_or_else(|| Failure::msg(0, what()))?;
        let mut child = std::process::Command::new("/bin/true")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ctx(0, || {
                format!("{}: starting a process to stand for the exited one", what())
            })?;
        // Until it is reaped, the child's /proc directory exists (as a zombie at worst).
        let opened = open_with(&format!("/proc/{}{tail}", child.id()), f.flags);
        child.wait().ctx(0, what)?;
        Ok(opened.ctx(0, what)?.into())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!("directory {} of an exited task", f.path)
    }
}

/// A `/proc/PID/...` file must be of a task of the tree, which the restore recreates with the
/// same pid: another process's would be some other process at restore. On the host's procfs
/// the tasks of the tree are those we trace; a procfs of the tree's own pid namespace (a
/// partition's) shows only tasks of the tree.
fn check_task_in_tree(p: &Probe, pid: i32) -> Result<(), CheckpointError> {
    use std::os::unix::fs::MetadataExt;
    let host_proc = std::fs::metadata("/proc").map(|m| m.dev()).ok() == Some(p.md.dev());
    if !host_proc {
        return Ok(());
    }
    let tracer = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
        });
    if tracer == Some(sys::getpid()) {
        return Ok(());
    }
    Err(p.unsupported(&format!(
        "a file under /proc of process {pid}, which is not in the tree (or has exited)"
    )))
}

/// Open the `in_proc` file `f` for task `r`: the task opens it itself (its root, its
/// `/proc`), at the saved offset, and we take the description (so that other fds sharing it
/// get the same one).
pub(crate) fn open_in_task(r: &mut Remote, f: &rec::FileObject) -> Result<OwnedFd, Failure> {
    let what = format!(
        "open file description #{} ({}): opening it again",
        f.id, f.path
    );
    let flags = f.flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY) as u32
        | libc::O_CLOEXEC as u32;
    let a = r.put_str(0, &f.path)?;
    let rfd = r.call(
        &what,
        libc::SYS_openat,
        &[libc::AT_FDCWD as i64 as u64, a, flags as u64, 0],
    )?;
    let res = (|| {
        if f.pos != 0 {
            r.call(&what, libc::SYS_lseek, &[rfd, f.pos, libc::SEEK_SET as u64])?;
        }
        let pidfd = sys::pidfd_open(r.pid).ctx(r.pid, || what.clone())?;
        sys::pidfd_getfd(&pidfd, rfd as i32).ctx(r.pid, || what.clone())
    })();
    r.call("close", libc::SYS_close, &[rfd])?;
    res
}
