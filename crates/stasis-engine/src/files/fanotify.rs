//! fanotify groups: the `fanotify_init` flags and every mark, from fdinfo
//! (`fanotify flags:… event-flags:…` and one `fanotify …` line per mark).
//!
//! Marks on an inode are resolved to a path through their file handle, marks on a mount
//! through `mnt_id` in our mountinfo, marks on a file system through its device. A mark on an
//! object that is gone (a deleted inode: its handle resolves to `… (deleted)`, or no longer
//! resolves) is refused, naming the object: the issue accepts this one refusal. Restore:
//! `fanotify_init` with the same flags in the restorer, then `fanotify_mark` for the mask and
//! for the ignored mask of every mark. Queued events and pending permission answers are not
//! kept.

use super::kind::{DumpCtx, ObjectKind, RestoreCtx};
use super::{FileTable, Opened, Probe};
use crate::error::{CheckpointError, Ctx, Failure};
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::sys;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};

const FAN_MARK_ADD: u32 = 0x1;
const FAN_MARK_IGNORED_MASK: u32 = 0x20;
const FAN_MARK_MOUNT: u32 = 0x10;
const FAN_MARK_FILESYSTEM: u32 = 0x100;
const FAN_MARK_IGNORE: u32 = 0x400;

pub(crate) struct FanotifyKind;

/// `key:hex key:hex …` of one fdinfo line.
fn fields(v: &str) -> HashMap<&str, &str> {
    v.split_whitespace()
        .filter_map(|t| t.split_once(':'))
        .collect()
}

fn hex(m: &HashMap<&str, &str>, k: &str) -> Option<u64> {
    m.get(k).and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// The path of one mark's object; `Err(what)` when the object is gone.
fn mark_path(m: &HashMap<&str, &str>) -> Result<(u32, String), String> {
    let sdev = hex(m, "sdev");
    if let Some(mnt) = hex(m, "mnt_id") {
        let mounts = stasis_sys::proc::read_mountinfo(sys::getpid()).map_err(|e| e.to_string())?;
        let mp = mounts
            .iter()
            .find(|x| x.mount_id as u64 == mnt)
            .ok_or_else(|| format!("mount {mnt} that no longer exists"))?;
        return Ok((1, mp.mount_point.clone()));
    }
    let sdev = sdev.ok_or("a mark without a device")?;
    let mnt = crate::events::mount_for_sdev(sdev)
        .ok_or_else(|| format!("an object on device {sdev:#x}, which has no mount"))?;
    let Some(htype) = m
        .get("fhandle-type")
        .and_then(|v| i32::from_str_radix(v, 16).ok())
    else {
        return Ok((2, mnt));
    };
    let ino = hex(m, "ino").unwrap_or(0);
    let h = m.get("f_handle").copied().unwrap_or("");
    let handle: Vec<u8> = (0..h.len() / 2)
        .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
        .collect();
    let gone = || format!("inode {ino} on {mnt}, which is gone (deleted)");
    let mfd = std::fs::File::open(&mnt).map_err(|e| format!("{mnt}: {e}"))?;
    let obj = sys::open_by_handle(mfd.as_raw_fd(), htype, &handle).map_err(|_| gone())?;
    let path =
        sys::readlink(&format!("/proc/self/fd/{}", obj.as_raw_fd())).map_err(|e| e.to_string())?;
    if path.ends_with(" (deleted)") {
        return Err(format!("{path}: inode {ino}, which is gone"));
    }
    Ok((0, path))
}

fn dump_state(p: &Probe) -> Result<rec::FanotifyState, CheckpointError> {
    let mut st = rec::FanotifyState::default();
    for (k, v) in &p.info.extra {
        // fdinfo lines are split at their first ':': "fanotify ino" → "9aa2f1 sdev:… ".
        let Some(first) = k.strip_prefix("fanotify ") else {
            continue;
        };
        let line = format!("{first}:{v}");
        let m = fields(&line);
        if first == "flags" {
            st.flags = hex(&m, "flags").unwrap_or(0) as u32;
            st.event_flags = hex(&m, "event-flags").unwrap_or(0) as u32;
            continue;
        }
        let (target, path) = mark_path(&m).map_err(|why| CheckpointError::Unsupported {
            pid: p.pid,
            what: format!(
                "fd {} (fanotify) has a mark on {why}; fanotify marks on objects that are gone cannot be restored",
                p.fd
            ),
        })?;
        st.marks.push(rec::FanotifyMark {
            target,
            path,
            mflags: hex(&m, "mflags").unwrap_or(0) as u32,
            mask: hex(&m, "mask").unwrap_or(0),
            ignored_mask: hex(&m, "ignored_mask").unwrap_or(0),
        });
    }
    Ok(st)
}

impl ObjectKind for FanotifyKind {
    fn name(&self) -> &'static str {
        "fanotify"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::Fanotify]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.anon_kind == Some(FileKind::Fanotify)
    }

    fn dump(
        &self,
        _: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        fo.kind = FileKind::Fanotify as i32;
        fo.file_id = None;
        fo.state = Some(rec::file_object::State::Fanotify(dump_state(p)?));
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let what = || format!("open file description #{} (fanotify)", f.id);
        let s = f
            .fanotify()
            .ok_or_else(|| Failure::msg(0, format!("{}: state missing", what())))?;
        let fd = sys::fanotify_init(s.flags, s.event_flags).ctx(0, what)?;
        // fdinfo lists the newest mark first: add them oldest first, to list them the same.
        for m in s.marks.iter().rev() {
            let target = match m.target {
                1 => FAN_MARK_MOUNT,
                2 => FAN_MARK_FILESYSTEM,
                _ => 0,
            };
            let mwhat = || format!("{}: mark on {} (mask {:#x})", what(), m.path, m.mask);
            let base = FAN_MARK_ADD | target | m.mflags;
            if m.mask != 0 {
                sys::fanotify_mark(fd.as_raw_fd(), base & !FAN_MARK_IGNORE, m.mask, &m.path)
                    .ctx(0, mwhat)?;
            }
            if m.ignored_mask != 0 {
                // FAN_MARK_IGNORE (in mflags) or the older FAN_MARK_IGNORED_MASK.
                let flags = if m.mflags & FAN_MARK_IGNORE != 0 {
                    base
                } else {
                    base | FAN_MARK_IGNORED_MASK
                };
                sys::fanotify_mark(fd.as_raw_fd(), flags, m.ignored_mask, &m.path).ctx(0, mwhat)?;
            }
        }
        Ok(fd)
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        let marks: Vec<String> = f
            .fanotify()
            .map(|s| s.marks.iter().map(|m| m.path.clone()).collect())
            .unwrap_or_default();
        format!("fanotify marks on {marks:?}")
    }
}
