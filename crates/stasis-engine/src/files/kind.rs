//! Kinds of open file description: one trait ([`ObjectKind`]) that every kind implements in
//! its own module — how the checkpoint recognises and dumps it, how the restore creates it (in
//! phases), how `inspect` describes it — and the registry ([`KINDS`]) the orchestrators walk.
//! Neither `checkpoint.rs`, `restore.rs` nor the CLI names a kind: a new kind is its module (its
//! record in `stasis-image/src/records/`, its `impl ObjectKind`) plus one line in [`KINDS`]
//! (see docs/architecture.md, "Adding a kind of open file description").

use super::{FileTable, Opened, Probe};
use crate::error::{CheckpointError, Failure};
use crate::memory::ShmemTable;
use crate::remote::Remote;
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_image::{ImageReader, ImageWriter};
use std::collections::HashMap;
use std::os::fd::OwnedFd;

/// What a kind's dump needs beside the probe.
pub(crate) struct DumpCtx<'a> {
    /// Shared-memory objects (memfds are recorded there, their pages once).
    pub shmem: &'a mut ShmemTable,
    /// The image being written (content of deleted files).
    pub writer: &'a ImageWriter,
    /// 0 for the tree's own fds, 1 for files in flight in a unix socket.
    pub depth: u32,
}

/// What the restore phases of every kind share.
pub(crate) struct RestoreCtx<'a> {
    pub img: &'a rec::Checkpoint,
    pub reader: &'a ImageReader,
    /// Descriptions made by a kind's `create` phase (file object id → our fd), taken by `open`.
    pub made: HashMap<u32, OwnedFd>,
    /// Objects held open until every description is open (FIFOs held read-write, so that
    /// opening an end by path does not block); closed after the `finish` phases.
    pub held: Vec<OwnedFd>,
}

impl RestoreCtx<'_> {
    /// The description `create` made for file object `f`.
    pub fn take_made(&mut self, f: &rec::FileObject, what: &str) -> Result<OwnedFd, Failure> {
        self.made.remove(&f.id).ok_or_else(|| {
            Failure::msg(
                0,
                format!("open file description #{} ({}): {what}", f.id, f.path),
            )
        })
    }
}

/// One kind of open file description (or a family of them that one module handles: the event
/// objects, the two sides of a pty).
///
/// Restore runs in three phases over the whole image, each kind in registry order:
/// 1. `create`: objects that must be made together before any is handed out (both ends of a
///    socket pair, pty pairs, refilled pipes) — default: nothing;
/// 2. `open`: the restorer's fd for one file object, which the tasks then take by `pidfd_getfd`
///    (status flags are set by the caller afterwards, the same for every kind);
/// 3. `finish`: what needs every description open (messages carrying fds queued again, pty
///    settings after both sides exist) — default: nothing.
pub(crate) trait ObjectKind: Sync {
    /// What the kind is called in logs.
    fn name(&self) -> &'static str;
    /// The record kinds (`FileObject::kind`) this module restores; empty for a kind the
    /// checkpoint recognises only to refuse it.
    fn kinds(&self) -> &'static [FileKind];
    /// Whether the fd described by `p` is of this kind (the first kind in [`KINDS`] that
    /// recognises an fd dumps it).
    fn recognise(&self, t: &FileTable, p: &Probe) -> bool;
    /// Fill the record of a new description (kind, state); return the files in flight it
    /// carries (unix sockets), which the caller dumps like fds of ours.
    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        cx: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError>;
    /// Checks that need every fd table of the tree, once all are dumped (peers inside the
    /// tree, terminals outside it) — default: nothing.
    fn dump_finish(&self, _t: &mut FileTable) -> Result<(), CheckpointError> {
        Ok(())
    }
    /// Checkpoint, once the parasites have run (the tasks can be injected into, the fd tables
    /// are dumped): what needs both (pending connections of unix listeners) — default: nothing.
    fn after_parasites(
        &self,
        _frozen: &crate::freeze::Frozen,
        _procs: &[rec::Process],
        _t: &mut FileTable,
    ) -> Result<(), CheckpointError> {
        Ok(())
    }
    /// Checkpoint, on the finished image: checks across it (pidfd targets inside the tree) —
    /// default: nothing.
    fn check_image(&self, _img: &rec::Checkpoint) -> Result<(), CheckpointError> {
        Ok(())
    }
    /// Restore phase 1.
    fn create(&self, _o: &mut Opened, _cx: &mut RestoreCtx<'_>) -> Result<(), Failure> {
        Ok(())
    }
    /// Restore phase 2: the restorer's fd for `f` (one of [`ObjectKind::kinds`]).
    fn open(
        &self,
        f: &rec::FileObject,
        o: &mut Opened,
        cx: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure>;
    /// Whether only a task of the tree can open the description (`/dev/tty` names the
    /// opener's controlling terminal, `/proc/self/...` the opener): then `open` is not called;
    /// the first task that holds it opens it with [`ObjectKind::open_in_task`] when its fds
    /// are installed, and the other holders share that description.
    fn opened_by_task(&self, _f: &rec::FileObject) -> bool {
        false
    }
    /// Open the description inside task `r` (which holds it at `fd`) and return our copy.
    fn open_in_task(
        &self,
        r: &mut Remote,
        fd: i32,
        _f: &rec::FileObject,
    ) -> Result<OwnedFd, Failure> {
        Err(Failure::msg(
            r.pid,
            format!("fd {fd}: a {} is not opened by a task", self.name()),
        ))
    }
    /// Restore phase 3.
    fn finish(&self, _o: &mut Opened, _cx: &mut RestoreCtx<'_>) -> Result<(), Failure> {
        Ok(())
    }
    /// Restore, once every task exists (zombies included), before memory: what refers to tasks
    /// (pidfds) — default: nothing. `host` maps image pids to ours; `root` is the root task.
    fn tasks_created(
        &self,
        _img: &rec::Checkpoint,
        _o: &mut Opened,
        _host: &dyn Fn(i32) -> i32,
        _root: &mut Remote,
    ) -> Result<(), Failure> {
        Ok(())
    }
    /// Restore, in task `r` (process `p`) once its fds are installed: what the task itself
    /// must do with them (epoll registrations) — default: nothing.
    fn in_task(
        &self,
        _r: &mut Remote,
        _p: &rec::Process,
        _img: &rec::Checkpoint,
        _o: &mut Opened,
    ) -> Result<(), Failure> {
        Ok(())
    }
    /// Restore, once the tree's sockets are out of repair mode and the network lock is gone
    /// (TCP FINs sent again) — default: nothing.
    fn network_open(&self, _img: &rec::Checkpoint, _o: &Opened) -> Result<(), Failure> {
        Ok(())
    }
    /// One line for `stasis inspect`.
    fn describe(&self, img: &rec::Checkpoint, f: &rec::FileObject) -> String;
}

/// The registry, in the order the checkpoint tries the kinds (more specific first: a message
/// queue or a socket before a regular file, pseudo-terminals before other character devices).
pub(crate) static KINDS: &[&dyn ObjectKind] = &[
    &super::opath::PathKind,
    &crate::mqueue::MqueueKind,
    &crate::netlink::NetlinkKind,
    &crate::packet::PacketKind,
    &crate::inet::InetKind,
    &crate::unix::UnixKind,
    &crate::pidfd::PidfdKind,
    &super::fanotify::FanotifyKind,
    &crate::events::EventKind,
    &super::pipes::PipeKind,
    &super::memfd::MemfdKind,
    &super::procfs::ProcKind,
    &super::regular::RegularKind,
    &super::regular::DirectoryKind,
    &crate::pty::PtyMasterKind,
    &crate::pty::PtySlaveKind,
    &crate::devtty::DevTtyKind,
    &super::regular::OtherTerminalKind,
    &super::regular::CharDeviceKind,
];

/// The kind that restores records of kind `kind` (a `FileObject::kind` value).
pub(crate) fn for_record(kind: i32) -> Option<&'static dyn ObjectKind> {
    let kind = FileKind::try_from(kind).ok()?;
    KINDS.iter().copied().find(|k| k.kinds().contains(&kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record kind has exactly one module that restores it.
    #[test]
    fn every_record_kind_has_one_restorer() {
        for v in 0..64 {
            let Ok(kind) = FileKind::try_from(v) else {
                continue;
            };
            let n = KINDS.iter().filter(|k| k.kinds().contains(&kind)).count();
            assert_eq!(n, 1, "{kind:?} is restored by {n} kinds");
        }
    }
}
