//! Fd tables shared by several processes (`clone(CLONE_FILES)` without `CLONE_THREAD`).
//!
//! `kcmp(KCMP_FILES)` tells whether two processes use one table. A process sharing its
//! parent's table is recorded with [`rec::Process::fd_table_of`]: restore creates it with
//! `CLONE_FILES` from that parent and installs the fds once, through the parent (the child's
//! POSIX locks are the parent's: the owner of a POSIX lock is the table). A table shared with a
//! process other than the parent is refused.

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
        if self.tables.contains(&ppid) && same(ppid)? {
            shared = ppid;
        } else {
            for &q in &self.tables {
                if same(q)? {
                    return Err(CheckpointError::Unsupported {
                        pid,
                        what: format!(
                            "its fd table is shared with pid {q}, which is not its parent \
                             (CLONE_FILES between siblings); not supported yet"
                        ),
                    });
                }
            }
        }
        self.tables.push(pid);
        if shared != 0 {
            self.locks_drop(pid);
        }
        Ok(shared)
    }
}

/// Whether process `p` is created sharing its parent's fd table.
pub(crate) fn shares_parent_table(p: &rec::Process) -> bool {
    p.fd_table_of != 0 && p.fd_table_of == p.ppid
}
