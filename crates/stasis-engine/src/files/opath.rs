//! Descriptors opened with `O_PATH`: a location, not an open file (no I/O, no locks, no
//! owner). Any file type qualifies: a directory, a symlink itself (`O_PATH|O_NOFOLLOW`), a
//! FIFO, a socket or device node. Reopened by path with the same flags; restore checks that
//! the path names an object of the saved type.

use super::kind::{DumpCtx, ObjectKind, RestoreCtx};
use super::{open_with, FileTable, Opened, Probe};
use crate::error::{CheckpointError, Ctx, Failure};
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

/// An `O_PATH` descriptor (first in the registry: whatever it points to, it is only a path).
pub(crate) struct PathKind;

fn type_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "FIFO",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "object",
    }
}

impl ObjectKind for PathKind {
    fn name(&self) -> &'static str {
        "O_PATH descriptor"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::Path]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.info.flags & libc::O_PATH as u32 != 0
    }

    fn dump(
        &self,
        _: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        if !p.link.starts_with('/') || p.link.ends_with(" (deleted)") {
            return Err(p.unsupported(
                "an O_PATH descriptor of a deleted file or of an object without a path",
            ));
        }
        fo.kind = FileKind::Path as i32;
        fo.st_mode = p.md.mode();
        fo.pos = 0;
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let what = || {
            format!(
                "O_PATH descriptor #{} ({}, a {})",
                f.id,
                f.path,
                type_name(f.st_mode)
            )
        };
        let file = open_with(&f.path, f.flags).ctx(0, what)?;
        let md = file.metadata().ctx(0, what)?;
        if md.mode() & libc::S_IFMT != f.st_mode & libc::S_IFMT {
            return Err(Failure::msg(
                0,
                format!("{}: the path now names a {}", what(), type_name(md.mode())),
            ));
        }
        Ok(file.into())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!("O_PATH {} {}", type_name(f.st_mode), f.path)
    }
}
