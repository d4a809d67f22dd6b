//! Fd tables shared by several processes (`clone(CLONE_FILES)` without `CLONE_THREAD`).
//!
//! `kcmp(KCMP_FILES)` tells whether two processes use one table. A process sharing the table
//! of its parent, or of a sibling (created with `CLONE_FILES|CLONE_PARENT`), is recorded with
//! [`rec::Process::fd_table_of`]: restore creates it with `CLONE_FILES` from that process (and
//! `CLONE_PARENT` for a sibling) and installs the fds once, through the process that was
//! created first. The owner of a POSIX lock is the table: each is taken again by the process
//! that set it (the pid fdinfo shows), through the shared fd. A table shared with another relative is refused.

use super::FileTable;
use crate::error::{CheckpointError, Ctx};
use stasis_image::records as rec;
use stasis_sys::sys;

impl FileTable {
    /// The pid of an earlier process of the tree whose fd table `pid` uses (its parent
    /// `ppid`), or 0.
    pub fn shared_fd_table(&mut self, pid: i32, ppid: i32) -> Result<i32, CheckpointError> {
        let same = |q: i32| -> Result<bool, CheckpointError> {
            Ok(sys::kcmp(pid, q, sys::KCMP_FILES, 0, 0)
                .ctx(pid, || format!("kcmp(KCMP_FILES) with pid {q}"))?
                == 0)
        };
        let mut shared = 0;
        // The parent first, then siblings; any other process sharing it is refused.
        let parent_first = self.tables.iter().filter(|t| t.0 == ppid);
        let siblings = self.tables.iter().filter(|t| t.0 != ppid && t.1 == ppid);
        for &(q, _) in parent_first.chain(siblings) {
            if same(q)? {
                shared = q;
                break;
            }
        }
        if shared == 0 {
            for &(q, _) in &self.tables {
                if same(q)? {
                    return Err(CheckpointError::Unsupported {
                        pid,
                        what: format!(
                            "its fd table is shared with pid {q}, neither its parent nor a \
                             sibling; not supported yet"
                        ),
                    });
                }
            }
        }
        self.tables.push((pid, ppid));
        Ok(shared)
    }
}

/// Whether process `p` uses the fd table of an earlier process.
pub(crate) fn shares_fd_table(p: &rec::Process) -> bool {
    p.fd_table_of != 0
}

/// The process that creates `p` and the extra `clone` flags: its parent, or, for a process
/// sharing a sibling's fd table, that sibling with `CLONE_FILES|CLONE_PARENT`.
pub(crate) fn creator(p: &rec::Process) -> (i32, u64) {
    if p.fd_table_of == 0 {
        (p.ppid, 0)
    } else if p.fd_table_of == p.ppid {
        (p.ppid, libc::CLONE_FILES as u64)
    } else {
        (
            p.fd_table_of,
            (libc::CLONE_FILES | libc::CLONE_PARENT) as u64,
        )
    }
}
