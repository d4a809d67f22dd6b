//! Pidfds held by the tree.
//!
//! Dump: `/proc/PID/fdinfo/FD` names the target (`Pid:` as our pid namespace sees it, `-1`
//! once the task is reaped); its file flags carry `PIDFD_NONBLOCK` (`O_NONBLOCK`) and
//! `PIDFD_THREAD` (`O_EXCL`). A target must be a task of the tree (a process, a thread, or a
//! zombie child): a pidfd of a task outside is refused. For a reaped target the exit status is
//! read with `PIDFD_GET_INFO` on a copy of the fd (Linux 6.15 keeps it).
//!
//! Restore, once every task exists, zombies included ([`open_targets`]; [`open_early`] only
//! holds the place until then): a pidfd of a task of the tree is opened with `pidfd_open` and
//! the same flags. A pidfd of a reaped task is a pidfd of a short-lived child of the restored
//! root (so its pid lives in the tree's pid namespace, which `pidfd_send_signal` checks) that
//! exited with the same status, opened while it was a zombie, then reaped by the root: the tree
//! sees a pidfd that polls readable, whose `waitid` answers ECHILD, whose fdinfo says
//! `Pid: -1`, whose `pidfd_send_signal` answers ESRCH, and whose `PIDFD_GET_INFO` gives the same
//! exit status, as before. (The SIGCHLD it sends the root is dropped with the other signals
//! raised while restoring.)

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::kind::{DumpCtx, ObjectKind, RestoreCtx};
use crate::files::{FileTable, Opened, Probe};
use crate::remote::Remote;
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::{ptrace, sys};
use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};

/// The pidfd flags kept: `PIDFD_NONBLOCK`, `PIDFD_THREAD`.
const PIDFD_FLAGS: u32 = (libc::O_NONBLOCK | libc::O_EXCL) as u32;

/// The state of the pidfd `fd` of `pid`.
pub fn dump(pid: i32, fd: i32) -> Result<rec::PidfdState, CheckpointError> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ctx(pid, || format!("fd {fd}: reading fdinfo"))?;
    let target: i32 = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Failure::msg(pid, format!("fd {fd}: pidfd fdinfo has no Pid line")))?;
    if target == 0 {
        return Err(CheckpointError::Unsupported {
            pid,
            what: format!(
                "fd {fd} is a pidfd of a process in a pid namespace we cannot see; not supported"
            ),
        });
    }
    if target > 0 {
        return Ok(rec::PidfdState {
            pid: target,
            ..Default::default()
        });
    }
    let holder = sys::pidfd_open(pid).ctx(pid, || "pidfd_open".into())?;
    let copy = sys::pidfd_getfd(&holder, fd).ctx(pid, || format!("fd {fd}: pidfd_getfd"))?;
    let status =
        sys::pidfd_exit_status(copy.as_raw_fd()).ctx(pid, || format!("fd {fd}: PIDFD_GET_INFO"))?;
    Ok(rec::PidfdState {
        pid: 0,
        exited: true,
        exit_status: status.unwrap_or(0),
        exit_known: status.is_some(),
    })
}

/// Every pidfd of a live target must name a task of the tree (before pids are translated).
pub fn check_targets(img: &rec::Checkpoint) -> Result<(), CheckpointError> {
    let tids: HashSet<i32> = img
        .processes
        .iter()
        .flat_map(|p| p.threads.iter().map(|t| t.tid))
        .collect();
    for p in &img.processes {
        for fd in &p.fds {
            let Some(st) = img.files.get(fd.file_id as usize).and_then(|f| f.pidfd()) else {
                continue;
            };
            if !st.exited && !tids.contains(&st.pid) {
                return Err(CheckpointError::Unsupported {
                    pid: p.pid,
                    what: format!(
                        "fd {} is a pidfd of pid {}, which is not in the tree; not supported",
                        fd.fd, st.pid
                    ),
                });
            }
        }
    }
    Ok(())
}

/// At `Opened::prepare`: a stand-in, replaced by [`open_targets`] once the tasks exist.
pub fn open_early(f: &rec::FileObject) -> Result<OwnedFd, Failure> {
    f.pidfd()
        .ok_or_else(|| Failure::msg(0, format!("pidfd #{}: state missing", f.id)))?;
    Ok(std::fs::File::open("/dev/null")
        .ctx(0, || "opening /dev/null".into())?
        .into())
}

/// Open the pidfds, now that the tasks exist (`host` maps image pids to ours; `root` injects
/// into the restored root).
pub fn open_targets(
    img: &rec::Checkpoint,
    opened: &mut Opened,
    host: &dyn Fn(i32) -> i32,
    root: &mut Remote,
) -> Result<(), Failure> {
    for f in &img.files {
        let Some(st) = f.pidfd() else { continue };
        let flags = f.flags & PIDFD_FLAGS;
        let fd = if st.exited {
            exited_pidfd(root, st.exit_status, flags).map_err(|e| {
                Failure::msg(0, format!("pidfd #{} of an exited process: {e}", f.id))
            })?
        } else {
            sys::pidfd_open_flags(host(st.pid), flags)
                .ctx(st.pid, || format!("pidfd_open for pidfd #{}", f.id))?
        };
        opened.files.insert(f.id, fd);
    }
    Ok(())
}

/// A pidfd (with `flags`) of a child of the root made to exit with `status`, then reaped.
fn exited_pidfd(root: &mut Remote, status: i32, flags: u32) -> Result<OwnedFd, Failure> {
    let args = sys::encode_clone_args(0, libc::SIGCHLD as u64, 0, 0);
    let a = root.put(0, &args)?;
    let seen_as = root.call(
        "clone3 (a child to exit, for a pidfd of an exited process)",
        libc::SYS_clone3,
        &[a, args.len() as u64],
    )? as i32;
    let host = root
        .clone_events()
        .last()
        .map(|e| e.child)
        .ok_or_else(|| Failure::msg(seen_as, "clone3 reported no fork event"))?;
    let reap = |root: &mut Remote| -> Result<(), Failure> {
        let si = root.put(0, &[0u8; 128])?;
        root.call(
            &format!("waitid(P_PID, {seen_as}, WEXITED) for the exited helper"),
            libc::SYS_waitid,
            &[
                libc::P_PID as u64,
                seen_as as u64,
                si,
                libc::WEXITED as u64 | 0x4000_0000,
                0,
            ],
        )?;
        Ok(())
    };
    let res = (|| {
        crate::restore::wait_new_task(host)?;
        let regs = ptrace::get_regs(host).ctx(host, || "PTRACE_GETREGS".into())?;
        let child = Remote::new(host, host, root.base, regs);
        let rec = rec::Process {
            pid: seen_as,
            exit_status: status,
            ..Default::default()
        };
        crate::process::make_zombie(child, root, &rec)?;
        sys::pidfd_open_flags(host, flags).ctx(host, || "pidfd_open of the exited helper".into())
    })();
    if res.is_err() {
        let _ = sys::kill(host, libc::SIGKILL);
        crate::freeze::reap_tracees(&[host], std::time::Duration::from_secs(5));
    }
    reap(root)?;
    res
}

/// Pidfds (before the event kinds in the registry: both are anonymous-inode files).
pub(crate) struct PidfdKind;

impl ObjectKind for PidfdKind {
    fn name(&self) -> &'static str {
        "pidfd"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::Pidfd]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.anon_kind == Some(FileKind::Pidfd)
    }

    fn dump(
        &self,
        _: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        fo.kind = FileKind::Pidfd as i32;
        fo.file_id = None;
        fo.state = Some(rec::file_object::State::Pidfd(dump(p.pid, p.fd)?));
        Ok(Vec::new())
    }

    /// A stand-in, replaced by [`open_targets`] once every task exists.
    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        open_early(f)
    }

    /// Every target must be a task of the tree.
    fn check_image(&self, img: &rec::Checkpoint) -> Result<(), CheckpointError> {
        check_targets(img)
    }

    /// The stand-ins are replaced by pidfds of the restored tasks.
    fn tasks_created(
        &self,
        img: &rec::Checkpoint,
        o: &mut Opened,
        host: &dyn Fn(i32) -> i32,
        root: &mut Remote,
    ) -> Result<(), Failure> {
        open_targets(img, o, host, root)
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        match f.pidfd() {
            Some(p) if p.exited && p.exit_known => {
                format!(
                    "pidfd of an exited process (wait status {:#x})",
                    p.exit_status
                )
            }
            Some(p) if p.exited => "pidfd of an exited process".into(),
            Some(p) => format!("pidfd of pid {}", p.pid),
            None => "pidfd".into(),
        }
    }
}
