//! Pidfds held by the tree.
//!
//! Dump: `/proc/PID/fdinfo/FD` names the target (`Pid:` as our pid namespace sees it, `-1`
//! once the task is reaped); its file flags carry `PIDFD_NONBLOCK` (`O_NONBLOCK`) and
//! `PIDFD_THREAD` (`O_EXCL`). A target must be a task of the tree (a process, a thread, or a
//! zombie child): a pidfd of a task outside is refused. For a reaped target the exit status is
//! read with `PIDFD_GET_INFO` on a copy of the fd (Linux 6.15 keeps it).
//!
//! Restore: a pidfd of a reaped task is a pidfd of a short-lived child of the restorer that
//! exited with the same status, opened while it was a zombie and then reaped: the tree sees a
//! pidfd that polls readable, whose `waitid` answers ECHILD, whose fdinfo says `Pid: -1`, and
//! whose `PIDFD_GET_INFO` gives the same exit status, as before. A pidfd of a task of the tree
//! is opened (`pidfd_open` with the same flags) once every task exists, zombies included
//! ([`open_targets`]); [`open_early`] only holds its place until then.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::Opened;
use stasis_image::records as rec;
use stasis_sys::sys;
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
    let status = sys::pidfd_exit_status(copy.as_raw_fd())
        .ctx(pid, || format!("fd {fd}: PIDFD_GET_INFO"))?;
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

/// At `Opened::prepare`: the pidfd of a reaped task, or a stand-in for a pidfd of a task of
/// the tree (replaced by [`open_targets`] once the tasks exist).
pub fn open_early(f: &rec::FileObject) -> Result<OwnedFd, Failure> {
    let st = f
        .pidfd()
        .ok_or_else(|| Failure::msg(0, format!("pidfd #{}: state missing", f.id)))?;
    if st.exited {
        return sys::exited_pidfd(st.exit_status, f.flags & PIDFD_FLAGS)
            .ctx(0, || format!("pidfd #{}: a pidfd of an exited process", f.id));
    }
    Ok(std::fs::File::open("/dev/null")
        .ctx(0, || "opening /dev/null".into())?
        .into())
}

/// Open the pidfds of the tree's own tasks, now that they exist (`host` maps image pids to
/// ours).
pub fn open_targets(
    img: &rec::Checkpoint,
    opened: &mut Opened,
    host: &dyn Fn(i32) -> i32,
) -> Result<(), Failure> {
    for f in &img.files {
        let Some(st) = f.pidfd() else { continue };
        if st.exited {
            continue;
        }
        let fd = sys::pidfd_open_flags(host(st.pid), f.flags & PIDFD_FLAGS)
            .ctx(st.pid, || format!("pidfd_open for pidfd #{}", f.id))?;
        opened.files.insert(f.id, fd);
    }
    Ok(())
}
