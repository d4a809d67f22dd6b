//! memfds: the memory object is a shared-memory object of the image (its pages saved once,
//! whether it is open, mapped or both); the description is reopened through the recreated
//! object at its offset with its flags.
//!
//! The object is made again with its name, exact size, content, owner and mode (fchown, then
//! fchmod: F_SEAL_EXEC forbids changing the exec bits afterwards), then sealed. F_SEAL_FUTURE_WRITE
//! (and F_SEAL_SEAL with it) is added only once every mapping exists ([`MemfdKind::in_task`]):
//! a writable shared mapping made before the seal may exist, and the seal refuses new ones. A
//! shared mapping that may not be made writable (no VM_MAYWRITE: mapped from a read-only
//! description, or read-only after a write seal) is made from a read-only description
//! ([`read_only`]), so mprotect to PROT_WRITE fails after the restore as before, and
//! F_SEAL_WRITE finds no writable mapping in its way.

use super::kind::{DumpCtx, ObjectKind, RestoreCtx};
use super::{open_with, seek_to_saved, FileTable, Opened, Probe};
use crate::error::{CheckpointError, Ctx, Failure};
use crate::remote::Remote;
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind, ShmemKind};
use stasis_image::ImageReader;
use stasis_sys::sys;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// The seals added once every mapping of the tree exists (see the module doc).
fn late_seals(seals: u32) -> u32 {
    let future = libc::F_SEAL_FUTURE_WRITE as u32;
    if seals & future != 0 {
        seals & (future | libc::F_SEAL_SEAL as u32)
    } else {
        0
    }
}

/// memfd_create for object `s`. Made executable-capable (`MFD_EXEC`, so that
/// `vm.memfd_noexec=1` does not seal it) unless it was a non-executable, exec-sealed memfd
/// (`MFD_NOEXEC_SEAL`, which `vm.memfd_noexec=2` requires). Images without the memfd's
/// attributes get the flags of before.
fn memfd_create(s: &rec::ShmemObject) -> Result<OwnedFd, Failure> {
    let base = libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC;
    if !s.memfd_attrs {
        return sys::memfd_create(&s.name, base).ctx(0, || format!("memfd_create({})", s.name));
    }
    let noexec = s.seals & libc::F_SEAL_EXEC as u32 != 0 && s.mode & 0o111 == 0;
    let flags = base | if noexec { MFD_NOEXEC_SEAL } else { MFD_EXEC };
    let r = match sys::memfd_create(&s.name, flags) {
        // A kernel before 6.3 knows neither flag: every memfd is executable there.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => sys::memfd_create(&s.name, base),
        r => r,
    };
    let refused = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EACCES));
    r.ctx(0, || {
        if refused {
            format!(
                "memfd {}: executable (mode {:o}) but vm.memfd_noexec=2 refuses executable memfds here",
                s.name, s.mode
            )
        } else {
            format!("memfd_create({})", s.name)
        }
    })
}

/// Make memfd object `s` again: name, size, content, owner, mode, then the seals that may be
/// added before its mappings exist.
pub(super) fn create(s: &rec::ShmemObject, reader: &ImageReader) -> Result<OwnedFd, Failure> {
    let what = || format!("memfd {}", s.name);
    let file: File = memfd_create(s)?.into();
    crate::memory::fill_file(reader, &file, &s.pages, s.size)?;
    if s.memfd_attrs {
        std::os::unix::fs::fchown(&file, Some(s.uid), Some(s.gid))
            .ctx(0, || format!("{}: fchown({}, {})", what(), s.uid, s.gid))?;
        file.set_permissions(std::fs::Permissions::from_mode(s.mode))
            .ctx(0, || format!("{}: fchmod({:o})", what(), s.mode))?;
    }
    let early = s.seals & !late_seals(s.seals);
    if early != 0 {
        sys::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, early as i64)
            .ctx(0, || format!("{}: adding seals {early:#x}", what()))?;
    }
    Ok(file.into())
}

/// A second, read-only description of the memfd `fd` (object `s`).
pub(super) fn read_only(s: &rec::ShmemObject, fd: &OwnedFd) -> Result<OwnedFd, Failure> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let f = open_with(&path, libc::O_RDONLY as u32)
        .ctx(0, || format!("memfd {}: opening it read-only", s.name))?;
    Ok(f.into())
}

/// `memfd_create` flags of kernel 6.3 (not in every libc).
const MFD_NOEXEC_SEAL: u32 = 0x0008;
const MFD_EXEC: u32 = 0x0010;

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

    /// The seals left for last: every mapping of the tree exists once the first task gets here
    /// (added once; the seals already there are checked, not added twice).
    fn in_task(
        &self,
        _r: &mut Remote,
        _p: &rec::Process,
        img: &rec::Checkpoint,
        o: &mut Opened,
    ) -> Result<(), Failure> {
        for s in img
            .shmem
            .iter()
            .filter(|s| s.kind == ShmemKind::Memfd as i32)
        {
            let late = late_seals(s.seals);
            let Some(fd) = o.shmem.get(&s.id).filter(|_| late != 0) else {
                continue;
            };
            let what = || format!("memfd {}: adding seals {late:#x}", s.name);
            let now = sys::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS, 0).ctx(0, what)? as u32;
            if now & late != late {
                sys::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, late as i64).ctx(0, what)?;
            }
        }
        Ok(())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        format!("memfd {}", f.path)
    }
}

#[cfg(test)]
mod tests {
    use super::late_seals;

    #[test]
    fn only_future_write_and_its_seal_seal_wait_for_the_mappings() {
        let (w, fw, seal) = (
            libc::F_SEAL_WRITE as u32,
            libc::F_SEAL_FUTURE_WRITE as u32,
            libc::F_SEAL_SEAL as u32,
        );
        let grow = libc::F_SEAL_GROW as u32;
        assert_eq!(late_seals(0), 0);
        assert_eq!(late_seals(w | grow | seal), 0);
        assert_eq!(late_seals(fw), fw);
        assert_eq!(late_seals(fw | seal | grow), fw | seal);
        assert_eq!(late_seals(fw | w | libc::F_SEAL_EXEC as u32), fw);
    }
}
