//! Pipes and FIFOs: one [`rec::PipeObject`] per pipe (by inode), whatever number of ends the
//! tree holds, with the bytes buffered in it.
//!
//! Dump: every end becomes a [`rec::FileObject`] of kind `PipeEnd` (unnamed) or `Fifo` (opened
//! by path) pointing at its pipe; which ends the tree holds is counted so that a pipe whose
//! reader or writer is outside the tree is marked so. The buffered bytes are copied without
//! consuming them: the pipe is opened through `/proc/PID/fd/N` (read side, non-blocking) and
//! `tee(2)`d into a pipe of our own.
//!
//! Restore: unnamed pipes are created and refilled before any end is handed out; a FIFO is held
//! open read-write (so no other open blocks) while it is refilled and its ends are opened by
//! path.

use super::kind::{DumpCtx, ObjectKind, RestoreCtx};
use super::{open_with, FileTable, Opened, Probe};
use crate::error::{CheckpointError, Ctx, Failure};
use crate::restore::Replaced;
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::sys;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

impl FileTable {
    /// The id of the pipe with this inode, recorded at its first end.
    fn pipe_id(&mut self, ino: u64, fifo_path: &str) -> u32 {
        if let Some(&id) = self.pipe_by_ino.get(&ino) {
            return id;
        }
        let id = self.pipes.len() as u32;
        self.pipes.push(rec::PipeObject {
            id,
            ino,
            data: Vec::new(),
            capacity: 0,
            external_reader: false,
            external_writer: false,
            fifo_path: fifo_path.to_string(),
        });
        self.pipe_by_ino.insert(ino, id);
        id
    }

    /// One end of a pipe or FIFO: which pipe, which end; the pipe's data comes later
    /// ([`FileTable::dump_pipes`]).
    pub(super) fn dump_pipe_end(&mut self, p: &Probe, fo: &mut rec::FileObject) {
        let deleted = p
            .link
            .strip_suffix(" (deleted)")
            .filter(|_| p.md.nlink() == 0);
        let fifo = if p.link.starts_with("pipe:") {
            ""
        } else {
            deleted.unwrap_or(p.link.as_str())
        };
        if let Some(path) = deleted {
            fo.deleted = true;
            fo.path = path.to_string();
            fo.ghost = Some(super::regular::ghost_attrs(&p.md));
        }
        let id = self.pipe_id(p.md.ino(), fifo);
        fo.kind = if fifo.is_empty() {
            FileKind::PipeEnd
        } else {
            FileKind::Fifo
        } as i32;
        fo.pipe_id = id;
        let acc = fo.flags & libc::O_ACCMODE as u32;
        fo.write_end = acc == libc::O_WRONLY as u32;
        let e = self.ends.entry(id).or_default();
        if acc == libc::O_RDWR as u32 {
            *e = (true, true);
        } else if fo.write_end {
            e.1 = true;
        } else {
            e.0 = true;
        }
        self.pipe_src
            .entry(id)
            .or_insert_with(|| p.proc_path.clone());
    }

    /// Copy the buffered bytes of every pipe (without consuming them) and mark pipes whose
    /// other end is outside the tree.
    pub fn dump_pipes(&mut self) -> Result<(), Failure> {
        for p in &mut self.pipes {
            let (r, w) = self.ends.get(&p.id).copied().unwrap_or_default();
            p.external_reader = !r;
            p.external_writer = !w;
            let src = &self.pipe_src[&p.id];
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(src)
                .ctx(0, || format!("opening {src} to read its buffered data"))?;
            let cap = sys::fcntl(f.as_raw_fd(), sys::F_GETPIPE_SZ, 0)
                .ctx(0, || format!("{src}: F_GETPIPE_SZ"))?;
            p.capacity = cap as u32;
            let n = sys::fionread(f.as_raw_fd()).ctx(0, || format!("{src}: FIONREAD"))?;
            if n == 0 {
                continue;
            }
            let (tr, tw) = sys::pipe().ctx(0, || "pipe".into())?;
            sys::fcntl(tw.as_raw_fd(), sys::F_SETPIPE_SZ, cap)
                .ctx(0, || format!("{src}: sizing a copy pipe to {cap} bytes"))?;
            let got =
                sys::tee(f.as_raw_fd(), tw.as_raw_fd(), n).ctx(0, || format!("{src}: tee"))?;
            drop(tw);
            let mut data = Vec::with_capacity(got);
            use std::io::Read;
            File::from(tr)
                .read_to_end(&mut data)
                .ctx(0, || format!("{src}: reading copy"))?;
            if data.len() != n {
                return Err(Failure::msg(
                    0,
                    format!("{src}: copied {} of {n} buffered bytes", data.len()),
                ));
            }
            p.data = data;
        }
        Ok(())
    }
}

/// Create every unnamed pipe of the image, sized and refilled: id → (read end, write end).
pub(super) fn create_all(
    img: &rec::Checkpoint,
) -> Result<HashMap<u32, (OwnedFd, OwnedFd)>, Failure> {
    let mut pipes = HashMap::new();
    for p in &img.pipes {
        if !p.fifo_path.is_empty() {
            continue;
        }
        let (r, w) = sys::pipe().ctx(0, || format!("creating pipe {}", p.ino))?;
        if p.capacity != 0 {
            sys::fcntl(w.as_raw_fd(), sys::F_SETPIPE_SZ, p.capacity as i64).ctx(0, || {
                format!("pipe:[{}]: F_SETPIPE_SZ to {} bytes (above fs.pipe-max-size needs CAP_SYS_RESOURCE)", p.ino, p.capacity)
            })?;
        }
        if !p.data.is_empty() {
            use std::io::Write;
            let mut wf = File::from(w.try_clone().ctx(0, || "dup".into())?);
            wf.write_all(&p.data).ctx(0, || {
                format!(
                    "pipe:[{}]: refilling {} buffered bytes",
                    p.ino,
                    p.data.len()
                )
            })?;
        }
        pipes.insert(p.id, (r, w));
    }
    Ok(pipes)
}

/// FIFOs: hold one read-write open of each so other opens never block, and refill it. The
/// holders are dropped once every end is open.
pub(super) fn hold_fifos(img: &rec::Checkpoint) -> Result<HashMap<u32, File>, Failure> {
    let mut fifo_holders: HashMap<u32, File> = HashMap::new();
    for p in &img.pipes {
        if p.fifo_path.is_empty() || deleted_fifo(img, p.id).is_some() {
            continue;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p.fifo_path)
            .ctx(0, || format!("opening FIFO {}", p.fifo_path))?;
        if !p.data.is_empty() {
            use std::io::Write;
            (&f).write_all(&p.data).ctx(0, || {
                format!("FIFO {}: refilling buffered data", p.fifo_path)
            })?;
        }
        fifo_holders.insert(p.id, f);
    }
    Ok(fifo_holders)
}

/// The first end of pipe `id` that was opened by a path since removed.
fn deleted_fifo(img: &rec::Checkpoint, id: u32) -> Option<&rec::FileObject> {
    img.files
        .iter()
        .find(|f| f.kind == FileKind::Fifo as i32 && f.pipe_id == id && f.deleted)
}

/// FIFOs removed while open: each made again (under a name of our own when its path is taken
/// by now) with its mode, owner and times, refilled, every end the tree held opened
/// (file object id → fd, plus the read-write holder), and removed again.
fn recreate_deleted_fifos(
    img: &rec::Checkpoint,
) -> Result<(HashMap<u32, OwnedFd>, Vec<OwnedFd>), Failure> {
    let mut ends = HashMap::new();
    let mut holders = Vec::new();
    for p in &img.pipes {
        let Some(first) = deleted_fifo(img, p.id) else {
            continue;
        };
        let what = || format!("recreating deleted FIFO {}", first.path);
        let path = std::path::Path::new(&first.path);
        let name = if path.symlink_metadata().is_ok() {
            let dir = path.parent().unwrap_or(std::path::Path::new("/"));
            dir.join(format!(".stasis-ghost-fifo-{}-{}", sys::getpid(), p.id))
        } else {
            path.to_path_buf()
        };
        let name = name.to_string_lossy().into_owned();
        let parents = super::regular::make_parents(path).ctx(0, what)?;
        if let Err(e) = sys::mkfifo(&name, 0o600) {
            super::regular::remove_parents(&parents);
            return Err(e).ctx(0, what);
        }
        let res = (|| {
            let h = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&name)
                .ctx(0, what)?;
            super::regular::set_ghost_attrs(&h, first).ctx(0, what)?;
            if !p.data.is_empty() {
                use std::io::Write;
                (&h).write_all(&p.data).ctx(0, what)?;
            }
            for f in img
                .files
                .iter()
                .filter(|f| f.pipe_id == p.id && f.kind == FileKind::Fifo as i32)
            {
                let fd = open_with(&name, f.flags | libc::O_NONBLOCK as u32).ctx(0, what)?;
                ends.insert(f.id, OwnedFd::from(fd));
            }
            holders.push(OwnedFd::from(h));
            Ok(())
        })();
        let _ = std::fs::remove_file(&name);
        super::regular::remove_parents(&parents);
        res?;
    }
    Ok((ends, holders))
}

/// Our end of an unnamed pipe for file object `f`: from the pipe created by [`create_all`], or,
/// when the other side is outside the tree, the descriptor given with `--inherit-fd` (else
/// `/dev/null` for a writer nobody reads, our own read end for a reader nobody writes to).
/// A stand-in is returned too, to be reported.
pub(super) fn open_end(
    o: &Opened,
    img: &rec::Checkpoint,
    f: &rec::FileObject,
    what: &dyn Fn() -> String,
) -> Result<(OwnedFd, Option<Replaced>), Failure> {
    let pipe = img
        .pipes
        .iter()
        .find(|p| p.id == f.pipe_id)
        .ok_or_else(|| Failure::msg(0, format!("{}: pipe missing from image", what())))?;
    let external = if f.write_end {
        pipe.external_reader
    } else {
        pipe.external_writer
    };
    let key = format!("pipe:[{}]", pipe.ino);
    let stand_in = |now: &str| {
        Some(Replaced {
            key: key.clone(),
            now: now.to_string(),
        })
    };
    Ok(if external {
        if let Some(&ifd) = o.inherit.get(&key) {
            let dup = sys::fcntl(ifd, libc::F_DUPFD_CLOEXEC, 3)
                .ctx(0, || format!("{key}: duplicating inherited fd {ifd}"))?;
            // SAFETY-free: wrap the fresh descriptor.
            (sys::owned_fd(dup as RawFd), None)
        } else if f.write_end {
            // Nobody in the tree reads it: output goes to /dev/null.
            let fd = open_with("/dev/null", libc::O_WRONLY as u32)
                .ctx(0, what)?
                .into();
            (
                fd,
                stand_in("/dev/null (what the tree writes there is discarded)"),
            )
        } else {
            let (r, _) = o
                .pipes
                .get(&f.pipe_id)
                .ok_or_else(|| Failure::msg(0, what()))?;
            (
                r.try_clone().ctx(0, what)?,
                stand_in("an empty pipe nobody writes to (reads see end of file)"),
            )
        }
    } else {
        let (r, w) = o
            .pipes
            .get(&f.pipe_id)
            .ok_or_else(|| Failure::msg(0, what()))?;
        let fd = if f.write_end {
            w.try_clone()
        } else {
            r.try_clone()
        }
        .ctx(0, what)?;
        (fd, None)
    })
}

/// A FIFO end, opened by path (non-blocking while its holder keeps the FIFO open).
pub(super) fn open_fifo(
    f: &rec::FileObject,
    what: &dyn Fn() -> String,
) -> Result<OwnedFd, Failure> {
    Ok(open_with(&f.path, f.flags | libc::O_NONBLOCK as u32)
        .ctx(0, what)?
        .into())
}

/// Pipe ends and FIFO ends.
pub(crate) struct PipeKind;

impl ObjectKind for PipeKind {
    fn name(&self) -> &'static str {
        "pipe or FIFO"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::PipeEnd, FileKind::Fifo]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.link.starts_with("pipe:") || p.md.file_type().is_fifo()
    }

    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        t.dump_pipe_end(p, fo);
        Ok(Vec::new())
    }

    /// Unnamed pipes created and refilled; FIFOs held open read-write and refilled.
    fn create(&self, o: &mut Opened, cx: &mut RestoreCtx<'_>) -> Result<(), Failure> {
        o.pipes = create_all(cx.img)?;
        let (ends, holders) = recreate_deleted_fifos(cx.img)?;
        cx.made.extend(ends);
        cx.held.extend(holders);
        cx.held
            .extend(hold_fifos(cx.img)?.into_values().map(OwnedFd::from));
        Ok(())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        o: &mut Opened,
        cx: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let what = || format!("open file description #{} ({})", f.id, f.path);
        if f.kind == FileKind::Fifo as i32 && f.deleted {
            return cx.take_made(f, "deleted FIFO end not recreated");
        }
        if f.kind == FileKind::Fifo as i32 {
            return open_fifo(f, &what);
        }
        let (fd, stand_in) = open_end(o, cx.img, f, &what)?;
        if let Some(r) = stand_in {
            if !o.replaced.contains(&r) {
                o.replaced.push(r);
            }
        }
        Ok(fd)
    }

    fn describe(&self, img: &rec::Checkpoint, f: &rec::FileObject) -> String {
        let p = img.pipes.get(f.pipe_id as usize);
        let end = if f.write_end { "write" } else { "read" };
        if f.kind == FileKind::Fifo as i32 {
            let del = if f.deleted { " (deleted)" } else { "" };
            return format!("FIFO {}{del} {end} end", f.path);
        }
        let ino = p.map(|p| p.ino).unwrap_or(0);
        let ext = p.is_some_and(|p| {
            if f.write_end {
                p.external_reader
            } else {
                p.external_writer
            }
        });
        format!(
            "pipe:[{ino}] {end} end{}",
            if ext {
                " (other end outside the tree)"
            } else {
                ""
            }
        )
    }
}
