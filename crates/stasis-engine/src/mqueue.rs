//! POSIX message queues.
//!
//! A queue is a named object of the IPC namespace, reached through descriptors on the mqueue
//! filesystem. Dump: the descriptor is borrowed with `pidfd_getfd`; `mq_getattr` gives its
//! limits; the messages have no peek, so while the tree is frozen they are taken out in delivery
//! order (highest priority first, FIFO within a priority) and sent straight back with the same
//! priorities. Owner and mode come from `fstat`.
//!
//! Restore, in the IPC namespace the tree runs in: a queue that no longer exists is created
//! with its saved limits, owner, mode and messages; a queue that still exists (checkpoint and
//! restore on the same host: it outlived the tree) is used as it is, since it is shared with
//! whoever else uses it — its limits must match, or restore fails naming it. Each description
//! is then opened by name with its saved flags. Not kept: `mq_notify` registrations.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::kind::{DumpCtx, ObjectKind, RestoreCtx};
use crate::files::{FileTable, Opened, Probe};
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::sys;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// Dump a queue descriptor (`messages`: whether this is the first description of the queue).
pub fn dump(
    pid: i32,
    fd: i32,
    name: &str,
    sock: &OwnedFd,
    messages: bool,
) -> Result<rec::MqueueState, Failure> {
    let q = sock.as_raw_fd();
    let what = |w: &str| format!("fd {fd} (POSIX message queue {name}): {w}");
    let (_, maxmsg, msgsize, cur) = sys::mq_getattr(q).ctx(pid, || what("mq_getattr"))?;
    let md = std::fs::metadata(format!("/proc/self/fd/{q}")).ctx(pid, || what("fstat"))?;
    let mut st = rec::MqueueState {
        name: name.to_string(),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        maxmsg,
        msgsize,
        messages: Vec::new(),
        holds_messages: messages,
    };
    if messages && cur > 0 {
        let mut taken = Vec::new();
        let res = (|| -> std::io::Result<()> {
            while let Some((prio, data)) = sys::mq_take(q, msgsize as usize)? {
                taken.push(rec::MqMessage { prio, data });
            }
            Ok(())
        })();
        // Put back whatever was taken, even after an error.
        for m in &taken {
            sys::mq_put(q, m.prio, &m.data).ctx(pid, || what("putting a message back"))?;
        }
        res.ctx(pid, || what("reading queued messages"))?;
        st.messages = taken;
    }
    Ok(st)
}

/// Open (or create) every queue of the image; returns file object id → our descriptor.
pub fn open_all(img: &rec::Checkpoint) -> Result<HashMap<u32, OwnedFd>, Failure> {
    let mut out = HashMap::new();
    // Queues first: create missing ones with their messages.
    for f in &img.files {
        let Some(q) = f.mq().filter(|q| q.holds_messages) else {
            continue;
        };
        let what = || format!("POSIX message queue {}", q.name);
        match sys::mq_open(
            &q.name,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            q.mode,
            q.maxmsg,
            q.msgsize,
        ) {
            Ok(fd) => {
                let _ = std::os::unix::fs::fchown(&fd, Some(q.uid), Some(q.gid));
                for m in &q.messages {
                    sys::mq_put(fd.as_raw_fd(), m.prio, &m.data)
                        .ctx(0, || format!("{}: re-queueing a message", what()))?;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let fd = sys::mq_open(&q.name, libc::O_RDONLY, 0, 0, 0).ctx(0, what)?;
                let (_, maxmsg, msgsize, _) = sys::mq_getattr(fd.as_raw_fd()).ctx(0, what)?;
                if maxmsg != q.maxmsg || msgsize != q.msgsize {
                    return Err(Failure::msg(
                        0,
                        format!(
                            "{} exists with other limits (maxmsg {maxmsg}, msgsize {msgsize}; the image has {} and {}): remove it or restore into a partition with its own IPC namespace",
                            what(),
                            q.maxmsg,
                            q.msgsize
                        ),
                    ));
                }
            }
            Err(e) => {
                return Err(Failure::new(
                    0,
                    format!(
                        "{}: creating it (above fs.mqueue limits needs CAP_SYS_RESOURCE)",
                        what()
                    ),
                    e,
                ))
            }
        }
    }
    for f in &img.files {
        let Some(q) = f.mq() else { continue };
        let flags = (f.flags & (libc::O_ACCMODE | libc::O_NONBLOCK) as u32) as i32;
        let fd = sys::mq_open(&q.name, flags, 0, 0, 0)
            .ctx(0, || format!("opening POSIX message queue {}", q.name))?;
        out.insert(f.id, fd);
    }
    Ok(out)
}

/// POSIX message queue descriptions.
pub(crate) struct MqueueKind;

impl ObjectKind for MqueueKind {
    fn name(&self) -> &'static str {
        "POSIX message queue"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::Mqueue]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.mqueue
    }

    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        let first = t.mq_seen.insert(p.md.ino());
        let q = t.borrow(p.pid, p.fd)?;
        fo.kind = FileKind::Mqueue as i32;
        fo.file_id = None;
        fo.state = Some(rec::file_object::State::Mq(dump(
            p.pid, p.fd, &p.link, &q, first,
        )?));
        Ok(Vec::new())
    }

    fn create(&self, _: &mut Opened, cx: &mut RestoreCtx<'_>) -> Result<(), Failure> {
        let opened = open_all(cx.img)?;
        cx.made.extend(opened);
        Ok(())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        cx: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        cx.take_made(f, "message queue was not opened")
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        match f.mq() {
            Some(q) => format!(
                "POSIX message queue {} ({} message(s))",
                q.name,
                q.messages.len()
            ),
            None => "POSIX message queue".into(),
        }
    }
}
