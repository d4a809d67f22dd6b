//! `/dev/tty`: the alias of the opener's controlling terminal (character device 5,0).
//!
//! ## Dump
//! An fd on `/dev/tty` (its `/proc/PID/fd` link and device number say so) is saved as a
//! [`rec::FileKind::DevTty`] object with its status flags; which terminal it reaches is the
//! controlling terminal of the task, restored on its own (`pty.rs`).
//!
//! ## Restore
//! The restorer cannot open it for the task: `/dev/tty` would name the restorer's terminal. It
//! is opened in the first task that holds it, by an injected `openat("/dev/tty")` once the
//! task has its controlling terminal back (fds are installed after every session has taken
//! its terminal), then borrowed (`pidfd_getfd`) so that every other holder shares that open
//! file description, as they did.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::kind::{DumpCtx, ObjectKind, RestoreCtx};
use crate::files::{FileTable, Opened, Probe};
use crate::remote::Remote;
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::sys;
use std::os::fd::{OwnedFd, RawFd};

/// `/dev/tty`'s device numbers.
pub const MAJOR_MINOR: (u32, u32) = (5, 0);

/// Open `/dev/tty` in task `r` with the saved status `flags` and return our copy of the
/// description (the task keeps nothing: the caller installs ours at the saved number).
pub fn open_in_task(r: &mut Remote, fd: i32, flags: u32) -> Result<OwnedFd, Failure> {
    let keep = flags
        & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOCTTY) as u32;
    let path = r.put_str(0, "/dev/tty")?;
    let at = libc::AT_FDCWD as i64 as u64;
    let open_flags = (keep | (libc::O_NOCTTY | libc::O_CLOEXEC) as u32) as u64;
    let got = r.call_raw(
        "openat(/dev/tty)",
        libc::SYS_openat,
        &[at, path, open_flags, 0],
    )?;
    if got < 0 {
        let e = std::io::Error::from_raw_os_error(-got as i32);
        let why = if -got as i32 == libc::ENXIO {
            " (the task has no controlling terminal after restore)"
        } else {
            ""
        };
        return Err(Failure::new(
            r.pid,
            format!(
                "fd {fd}: /dev/tty, the alias of its controlling terminal: open in the task{why}"
            ),
            e,
        ));
    }
    let pidfd = sys::pidfd_open(r.pid).ctx(r.pid, || "pidfd_open".into())?;
    let ours = sys::pidfd_getfd(&pidfd, got as RawFd)
        .ctx(r.pid, || format!("fd {fd}: /dev/tty: pidfd_getfd"))?;
    r.call("close", libc::SYS_close, &[got as u64])?;
    Ok(ours)
}

/// `/dev/tty` descriptions.
pub(crate) struct DevTtyKind;

impl ObjectKind for DevTtyKind {
    fn name(&self) -> &'static str {
        "/dev/tty"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::DevTty]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.char_major_minor() == Some(MAJOR_MINOR)
    }

    fn dump(
        &self,
        _: &mut FileTable,
        _: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        fo.kind = FileKind::DevTty as i32;
        Ok(Vec::new())
    }

    fn opened_by_task(&self, _: &rec::FileObject) -> bool {
        true
    }

    fn open_in_task(
        &self,
        r: &mut Remote,
        fd: i32,
        f: &rec::FileObject,
    ) -> Result<OwnedFd, Failure> {
        open_in_task(r, fd, f.flags)
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        Err(Failure::msg(
            0,
            format!(
                "open file description #{}: /dev/tty is opened by its task",
                f.id
            ),
        ))
    }

    fn describe(&self, _: &rec::Checkpoint, _: &rec::FileObject) -> String {
        "/dev/tty (the controlling terminal)".into()
    }
}
