//! Files opened by path: regular files (a deleted one is saved with its content and recreated),
//! directories and character devices; and the terminals other than pseudo-terminals, which are
//! recognised only to be refused.

use super::kind::{DumpCtx, ObjectKind, RestoreCtx};
use super::{open_with, seek_to_saved, FileTable, Opened, Probe};
use crate::error::{CheckpointError, Ctx, Failure};
use crate::memory::dump_file_content;
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_image::ImageReader;
use stasis_sys::sys;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

/// A regular file: its path is enough, unless it was deleted (then its content is saved).
pub(crate) struct RegularKind;

impl ObjectKind for RegularKind {
    fn name(&self) -> &'static str {
        "regular file"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::Regular]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.md.file_type().is_file()
    }

    fn dump(
        &self,
        _: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        cx: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        fo.kind = FileKind::Regular as i32;
        if let Some(path) = p.link.strip_suffix(" (deleted)") {
            let (pid, fd) = (p.pid, p.fd);
            fo.deleted = true;
            fo.path = path.to_string();
            let f = File::open(&p.proc_path)
                .ctx(pid, || format!("fd {fd}: opening deleted file {path}"))?;
            dump_file_content(&f, p.md.size(), cx.writer, &mut fo.content).ctx(pid, || {
                format!("fd {fd}: saving content of deleted file {path}")
            })?;
        }
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        cx: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let file = if f.deleted {
            recreate_deleted(f, cx.reader)?
        } else {
            open_with(&f.path, f.flags).ctx(0, || what(f))?
        };
        seek_to_saved(&file, f)?;
        Ok(file.into())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!(
            "file {}{}",
            f.path,
            if f.deleted { " (deleted)" } else { "" }
        )
    }
}

fn what(f: &rec::FileObject) -> String {
    format!("open file description #{} ({})", f.id, f.path)
}

/// A deleted file: created again (under a temporary name when its path is taken), filled,
/// opened with the saved flags, and unlinked.
fn recreate_deleted(f: &rec::FileObject, reader: &ImageReader) -> Result<File, Failure> {
    let path = std::path::Path::new(&f.path);
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    let name = if path.exists() {
        dir.join(format!(".stasis-ghost-{}-{}", sys::getpid(), f.id))
    } else {
        path.to_path_buf()
    };
    let what = || format!("recreating deleted file {}", f.path);
    let w = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(if f.mode == 0 { 0o600 } else { f.mode })
        .open(&name)
        .ctx(0, what)?;
    let res = (|| {
        crate::memory::fill_file(reader, &w, &f.content, f.size)?;
        let file = open_with(&name.to_string_lossy(), f.flags).ctx(0, what)?;
        Ok(file)
    })();
    let _ = std::fs::remove_file(&name);
    res
}

/// A directory, reopened by path at its offset.
pub(crate) struct DirectoryKind;

impl ObjectKind for DirectoryKind {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::Directory]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.md.file_type().is_dir()
    }

    fn dump(
        &self,
        _: &mut FileTable,
        _: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        fo.kind = FileKind::Directory as i32;
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let file = open_with(&f.path, f.flags).ctx(0, || what(f))?;
        seek_to_saved(&file, f)?;
        Ok(file.into())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!("directory {}", f.path)
    }
}

/// A character device (`/dev/null`, `/dev/urandom`…), reopened by path; restore refuses a path
/// that now names another device.
pub(crate) struct CharDeviceKind;

impl ObjectKind for CharDeviceKind {
    fn name(&self) -> &'static str {
        "character device"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::CharDevice]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.md.file_type().is_char_device()
    }

    fn dump(
        &self,
        _: &mut FileTable,
        _: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        fo.kind = FileKind::CharDevice as i32;
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let file = open_with(&f.path, f.flags).ctx(0, || what(f))?;
        let md = file.metadata().ctx(0, || what(f))?;
        if md.rdev() != f.rdev {
            return Err(Failure::msg(
                0,
                format!("{}: device number changed", what(f)),
            ));
        }
        Ok(file.into())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!(
            "character device {} ({}:{})",
            f.path,
            libc::major(f.rdev),
            libc::minor(f.rdev)
        )
    }
}

/// Terminals other than pseudo-terminals (consoles, virtual terminals, serial lines): refused.
pub(crate) struct OtherTerminalKind;

impl ObjectKind for OtherTerminalKind {
    fn name(&self) -> &'static str {
        "other terminal (refused)"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[]
    }

    /// After the pseudo-terminal kinds in the registry: any other tty device.
    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        super::is_tty(&p.md)
    }

    fn dump(
        &self,
        _: &mut FileTable,
        p: &Probe,
        _: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        Err(p.unsupported("a terminal other than a pseudo-terminal (console, /dev/tty*)"))
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        Err(Failure::msg(0, format!("{}: not restorable", what(f))))
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!("terminal {}", f.path)
    }
}
