//! memfds: the memory object is a shared-memory object of the image (its pages saved once,
//! whether it is open, mapped or both); the description is reopened through the recreated
//! object at its offset with its flags.

use super::kind::{DumpCtx, ObjectKind, RestoreCtx};
use super::{open_with, seek_to_saved, FileTable, Opened, Probe};
use crate::error::{CheckpointError, Ctx, Failure};
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind, ShmemKind};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

pub(crate) struct MemfdKind;

impl ObjectKind for MemfdKind {
    fn name(&self) -> &'static str {
        "memfd"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::Memfd]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.link.starts_with("/memfd:")
    }

    fn dump(
        &self,
        _: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        cx: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        let name = p
            .link
            .strip_prefix("/memfd:")
            .expect("recognised as a memfd");
        let name = name.trim_end_matches(" (deleted)").to_string();
        fo.kind = FileKind::Memfd as i32;
        fo.shmem_id = cx.shmem.intern(
            (p.md.dev(), p.md.ino()),
            ShmemKind::Memfd,
            name,
            p.md.size(),
            p.proc_path.clone(),
        );
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        o: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let what = || format!("open file description #{} ({})", f.id, f.path);
        let s = o
            .shmem
            .get(&f.shmem_id)
            .ok_or_else(|| Failure::msg(0, format!("{}: memfd missing", what())))?;
        let file = open_with(&format!("/proc/self/fd/{}", s.as_raw_fd()), f.flags).ctx(0, what)?;
        seek_to_saved(&file, f)?;
        Ok(file.into())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!("memfd {}", f.path)
    }
}
