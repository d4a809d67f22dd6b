//! File locks and the owner of a description.
//!
//! ## Locks
//! The `lock:` lines of `/proc/PID/fdinfo/N` list the locks whose file is this fd's description
//! and whose owner is either the description (flock, OFD locks, leases) or the process's fd
//! table (POSIX record locks set through this description). Waiters blocked in `F_SETLKW` or
//! `flock` hold nothing: they are threads inside a system call, which re-enter it after restore.
//!
//! - flock and OFD locks belong to the description: saved on [`rec::FileObject::locks`] and
//!   taken again by the restorer on its own copy of the description before the tasks get it
//!   (they stay with the description when our copy is closed).
//! - POSIX locks belong to the process: saved on [`rec::Process::locks`] with an fd through
//!   which the process holds the file, and taken again by an injected `fcntl(F_SETLK)` in that
//!   process once its fds are installed (closing any fd of the file would drop them, so this
//!   comes after every `dup3`/`close` of the fd restore).
//! - Leases belong to the description but are set by a process (`F_SETLEASE` makes the caller
//!   the owner of the description and registers its fd for the break signal): saved on the
//!   process that held the description first, taken again by an injected `fcntl` there.
//!
//! ## Owner
//! `F_GETOWN_EX`/`F_GETSIG` on a borrowed copy of the description give who receives `SIGIO`
//! (and which signal); restore sets them by injection in the first process holding the
//! description, after its leases. `O_ASYNC` is set there too, by the task on its own fd (the
//! kernel records that fd number for the signal's `si_fd`).

use super::{FileTable, Probe};
use crate::error::{CheckpointError, Ctx, Failure};
use crate::remote::Remote;
use stasis_image::records::{self as rec, LockKind};
use stasis_sys::sys;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};

/// Dump-side lock bookkeeping of a [`FileTable`].
#[derive(Default)]
pub(crate) struct LockTable {
    /// (setter, holder, lock): the POSIX locks and leases to take again, with the pid that
    /// fdinfo names (for a POSIX lock, the process that set it, which may be another process
    /// sharing the fd table) and the process whose fd shows it.
    found: Vec<(i32, i32, String, rec::FileLock)>,
}

/// One `lock:` line of fdinfo: `1: POSIX  ADVISORY  WRITE 1864 fe:00:10010753 5 EOF`.
#[derive(Debug, PartialEq)]
struct LockLine<'a> {
    kind: &'a str,
    state: &'a str,
    access: &'a str,
    pid: i32,
    object: &'a str,
    start: u64,
    end: u64,
}

fn parse_line(v: &str) -> Option<LockLine<'_>> {
    let t: Vec<&str> = v.split_whitespace().collect();
    if t.len() < 8 || t[1] == "->" {
        return None;
    }
    let end = if t[7] == "EOF" {
        u64::MAX
    } else {
        t[7].parse().ok()?
    };
    Some(LockLine {
        kind: t[1],
        state: t[2],
        access: t[3],
        pid: t[4].parse().ok()?,
        object: t[5],
        start: t[6].parse().ok()?,
        end,
    })
}

fn lock_of(kind: LockKind, l: &LockLine<'_>, fd: i32) -> rec::FileLock {
    rec::FileLock {
        kind: kind as i32,
        write: l.access == "WRITE",
        start: l.start,
        end: l.end,
        fd,
    }
}

impl FileTable {
    /// Record the locks fdinfo shows for fd `p` (description `fo` just dumped when `new`).
    pub(super) fn dump_locks(
        &mut self,
        p: &Probe,
        fo: Option<&mut rec::FileObject>,
    ) -> Result<(), CheckpointError> {
        let mut desc = Vec::new();
        for (_, v) in p.info.extra.iter().filter(|(k, _)| k == "lock") {
            let Some(l) = parse_line(v) else {
                return Err(p.unsupported(&format!("holding a lock fdinfo shows as `{v}`")));
            };
            let bad_access = !matches!(l.access, "READ" | "WRITE");
            match l.kind {
                "POSIX" if !bad_access => {
                    let lk = lock_of(LockKind::Posix, &l, p.fd);
                    self.locks
                        .found
                        .push((l.pid, p.pid, l.object.to_string(), lk));
                }
                "FLOCK" if !bad_access => desc.push(lock_of(LockKind::Flock, &l, 0)),
                "OFDLCK" if !bad_access => desc.push(lock_of(LockKind::Ofd, &l, 0)),
                "LEASE" if l.state == "ACTIVE" && !bad_access => {
                    if fo.is_some() {
                        let lk = lock_of(LockKind::Lease, &l, p.fd);
                        self.locks.found.push((p.pid, p.pid, String::new(), lk));
                    }
                }
                _ => {
                    return Err(p.unsupported(&format!(
                        "holding a lock of a kind or state not supported (`{v}`: a lease being \
                         broken, a delegation)"
                    )))
                }
            }
        }
        if let Some(fo) = fo {
            fo.locks = desc;
        }
        Ok(())
    }

    /// Give every process of the tree the POSIX locks and leases it takes again at restore: a
    /// POSIX lock goes to the process that set it when that one is in the tree and uses the
    /// same fd table (else to the process whose fd shows it), once.
    pub fn assign_locks(&mut self, procs: &mut [rec::Process]) {
        let index: HashMap<i32, usize> =
            procs.iter().enumerate().map(|(i, p)| (p.pid, i)).collect();
        let tables: HashMap<i32, i32> = procs
            .iter()
            .map(|p| {
                (
                    p.pid,
                    if p.fd_table_of != 0 {
                        p.fd_table_of
                    } else {
                        p.pid
                    },
                )
            })
            .collect();
        // (fd table, `maj:min:ino`, start, end): several fds of a process, or processes
        // sharing one table, show the same POSIX lock.
        let mut seen: HashSet<(i32, String, u64, u64)> = HashSet::new();
        for (setter, holder, object, lk) in std::mem::take(&mut self.locks.found) {
            let Some(&table) = tables.get(&holder) else {
                continue; // a file in flight, held by us
            };
            let owner = if tables.get(&setter) == Some(&table) {
                setter
            } else {
                holder
            };
            let key = (table, object, lk.start, lk.end);
            if lk.kind == LockKind::Posix as i32 && !seen.insert(key) {
                continue;
            }
            procs[index[&owner]].locks.push(lk);
        }
    }

    /// The owner (`F_GETOWN_EX`) and signal (`F_GETSIG`) of the description of fd `p`. A file
    /// in flight (`depth` > 0) is restored by no task: one with an owner, `O_ASYNC` or a lease
    /// is refused rather than restored without them.
    pub(super) fn dump_owner(
        &mut self,
        p: &Probe,
        depth: u32,
    ) -> Result<Option<rec::FileOwner>, CheckpointError> {
        if p.info.flags & libc::O_PATH as u32 != 0 {
            return Ok(None);
        }
        let fd = self.borrow(p.pid, p.fd)?;
        let what = || format!("fd {} ({}): reading its owner", p.fd, p.link);
        let (kind, pid) = sys::get_owner_ex(fd.as_raw_fd()).ctx(p.pid, what)?;
        let signal = sys::fcntl(fd.as_raw_fd(), sys::F_GETSIG, 0).ctx(p.pid, what)? as i32;
        let owner = (pid != 0 || signal != 0).then_some(rec::FileOwner { kind, pid, signal });
        let leased = p
            .info
            .extra
            .iter()
            .any(|(k, v)| k == "lock" && v.contains("LEASE"));
        if depth > 0 && (owner.is_some() || p.info.flags & libc::O_ASYNC as u32 != 0 || leased) {
            return Err(p.unsupported(
                "a file in flight in a unix socket with an owner, O_ASYNC or a lease",
            ));
        }
        Ok(owner)
    }
}

/// `flock write lock`, `POSIX read lock on bytes 5..=14`, …
pub(crate) fn describe_lock(l: &rec::FileLock) -> String {
    let kind = match LockKind::try_from(l.kind) {
        Ok(LockKind::Posix) => "POSIX",
        Ok(LockKind::Flock) => "flock",
        Ok(LockKind::Ofd) => "OFD",
        Ok(LockKind::Lease) => "lease",
        Err(_) => "unknown",
    };
    let rw = if l.write { "write" } else { "read" };
    let range = if l.end == u64::MAX {
        format!("{}..EOF", l.start)
    } else {
        format!("{}..={}", l.start, l.end)
    };
    match LockKind::try_from(l.kind) {
        Ok(LockKind::Posix | LockKind::Ofd) => format!("{kind} {rw} lock on bytes {range}"),
        _ => format!("{kind} {rw} lock"),
    }
}

/// `(l_start, l_len)` of a saved range.
fn range(l: &rec::FileLock) -> (i64, i64) {
    let len = if l.end == u64::MAX {
        0
    } else {
        (l.end - l.start + 1) as i64
    };
    (l.start as i64, len)
}

fn busy(what: String, l: &rec::FileLock, e: std::io::Error) -> Failure {
    let why = if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
        "another process holds a conflicting lock".to_string()
    } else {
        e.to_string()
    };
    Failure::msg(
        0,
        format!("{what}: taking its {} again: {why}", describe_lock(l)),
    )
}

/// The flock and OFD locks of description `f`, taken on the restorer's copy `fd`.
pub(crate) fn take_description_locks(fd: &OwnedFd, f: &rec::FileObject) -> Result<(), Failure> {
    let what = || format!("open file description #{} ({})", f.id, f.path);
    for l in &f.locks {
        let res = match LockKind::try_from(l.kind) {
            Ok(LockKind::Flock) => {
                let op = if l.write {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                };
                sys::flock_fd(fd.as_raw_fd(), op | libc::LOCK_NB)
            }
            Ok(LockKind::Ofd) => {
                let ty = if l.write {
                    libc::F_WRLCK
                } else {
                    libc::F_RDLCK
                };
                let (start, len) = range(l);
                sys::fcntl_lock(fd.as_raw_fd(), libc::F_OFD_SETLK, ty as i16, start, len)
                    .map(|_| ())
            }
            _ => {
                return Err(Failure::msg(
                    0,
                    format!(
                        "{}: {} is not a description's lock",
                        what(),
                        describe_lock(l)
                    ),
                ))
            }
        };
        res.map_err(|e| busy(what(), l, e))?;
    }
    Ok(())
}

/// In process `p` once its fds are installed: `O_ASYNC`, leases, POSIX locks and owners of the
/// descriptions it holds first.
pub(crate) fn restore_in_task(
    r: &mut Remote,
    p: &rec::Process,
    img: &rec::Checkpoint,
) -> Result<(), Failure> {
    let first = first_holders(img);
    let leased: HashSet<u32> = img
        .processes
        .iter()
        .flat_map(|q| q.locks.iter().map(move |l| (q, l)))
        .filter(|(_, l)| l.kind == LockKind::Lease as i32)
        .filter_map(|(q, l)| file_of(q, l.fd))
        .collect();
    let mine: Vec<&rec::Fd> = p
        .fds
        .iter()
        .filter(|fd| first.get(&fd.file_id) == Some(&(p.pid, fd.fd)))
        .collect();
    for fd in &mine {
        let f = &img.files[fd.file_id as usize];
        if f.flags & libc::O_ASYNC as u32 != 0 {
            set_async(r, fd.fd, f)?;
        }
    }
    for l in p.locks.iter().filter(|l| l.kind == LockKind::Lease as i32) {
        let f = file_object(img, p, l.fd)?;
        let ty = if l.write {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        };
        let what = format!("fd {} ({})", l.fd, f.path);
        let v = r.call_raw(
            &what,
            libc::SYS_fcntl,
            &[l.fd as u64, libc::F_SETLEASE as u64, ty as u64],
        )?;
        if v < 0 {
            return Err(busy(what, l, std::io::Error::from_raw_os_error(-v as i32)));
        }
        if let Some(o) = &f.owner {
            set_owner(r, l.fd, f, o)?;
        }
    }
    for l in p.locks.iter().filter(|l| l.kind == LockKind::Posix as i32) {
        set_posix_lock(r, p, img, l)?;
    }
    for fd in &mine {
        let f = &img.files[fd.file_id as usize];
        if let (Some(o), false) = (&f.owner, leased.contains(&f.id)) {
            set_owner(r, fd.fd, f, o)?;
        }
    }
    Ok(())
}

/// File object id → first (pid, fd) holding it, in image order.
fn first_holders(img: &rec::Checkpoint) -> HashMap<u32, (i32, i32)> {
    let mut m = HashMap::new();
    for p in &img.processes {
        for fd in &p.fds {
            m.entry(fd.file_id).or_insert((p.pid, fd.fd));
        }
    }
    m
}

fn file_of(p: &rec::Process, fd: i32) -> Option<u32> {
    p.fds.iter().find(|f| f.fd == fd).map(|f| f.file_id)
}

fn file_object<'a>(
    img: &'a rec::Checkpoint,
    p: &rec::Process,
    fd: i32,
) -> Result<&'a rec::FileObject, Failure> {
    file_of(p, fd)
        .and_then(|id| img.files.get(id as usize))
        .ok_or_else(|| Failure::msg(p.pid, format!("fd {fd}: a lock on an fd not in the image")))
}

fn set_async(r: &mut Remote, fd: i32, f: &rec::FileObject) -> Result<(), Failure> {
    let what = format!("fd {fd} ({}): setting O_ASYNC", f.path);
    let cur = r.call(&what, libc::SYS_fcntl, &[fd as u64, libc::F_GETFL as u64])?;
    r.call(
        &what,
        libc::SYS_fcntl,
        &[fd as u64, libc::F_SETFL as u64, cur | libc::O_ASYNC as u64],
    )?;
    Ok(())
}

fn set_owner(
    r: &mut Remote,
    fd: i32,
    f: &rec::FileObject,
    o: &rec::FileOwner,
) -> Result<(), Failure> {
    let what = format!(
        "fd {fd} ({}): setting its owner ({} {})",
        f.path, o.kind, o.pid
    );
    let mut b = o.kind.to_le_bytes().to_vec();
    b.extend_from_slice(&o.pid.to_le_bytes());
    let addr = r.put(0, &b)?;
    r.call(
        &what,
        libc::SYS_fcntl,
        &[fd as u64, sys::F_SETOWN_EX as u64, addr],
    )?;
    r.call(
        &what,
        libc::SYS_fcntl,
        &[fd as u64, sys::F_SETSIG as u64, o.signal as u64],
    )?;
    Ok(())
}

fn set_posix_lock(
    r: &mut Remote,
    p: &rec::Process,
    img: &rec::Checkpoint,
    l: &rec::FileLock,
) -> Result<(), Failure> {
    let f = file_object(img, p, l.fd)?;
    let what = format!("pid {}: fd {} ({})", p.pid, l.fd, f.path);
    let ty: i16 = if l.write {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    } as i16;
    let (start, len) = range(l);
    // struct flock (x86_64): l_type, l_whence (i16 each), pad, l_start, l_len (i64), l_pid.
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&(libc::SEEK_SET as i16).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&start.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    let addr = r.put(0, &b)?;
    let v = r.call_raw(
        &what,
        libc::SYS_fcntl,
        &[l.fd as u64, libc::F_SETLK as u64, addr],
    )?;
    if v < 0 {
        return Err(busy(what, l, std::io::Error::from_raw_os_error(-v as i32)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo_lock_lines() {
        let l = parse_line("1: POSIX  ADVISORY  WRITE 1864 fe:00:10010753 5 14").unwrap();
        assert_eq!(
            (l.kind, l.access, l.start, l.end),
            ("POSIX", "WRITE", 5, 14)
        );
        let l = parse_line("2: OFDLCK ADVISORY  READ -1 fe:00:10010785 3 EOF").unwrap();
        assert_eq!((l.kind, l.access, l.end), ("OFDLCK", "READ", u64::MAX));
        let l = parse_line("1: LEASE  ACTIVE    READ 1864 fe:00:10010947 0 EOF").unwrap();
        assert_eq!((l.kind, l.state), ("LEASE", "ACTIVE"));
        assert!(parse_line("1: -> POSIX  ADVISORY  WRITE 1 fe:00:1 0 EOF").is_none());
    }

    #[test]
    fn ranges_round_trip() {
        let l = rec::FileLock {
            start: 5,
            end: 14,
            ..Default::default()
        };
        assert_eq!(range(&l), (5, 10));
        let l = rec::FileLock {
            start: 7,
            end: u64::MAX,
            ..Default::default()
        };
        assert_eq!(range(&l), (7, 0));
    }
}
