//! A task's current or root directory that was removed while in use (`/proc/PID/cwd` reads
//! `/path (deleted)` and the directory has no links left).
//!
//! Dump: the path without its suffix, and the directory's mode and owner.
//!
//! Restore, by calls injected into the task (so in its own mount namespace and root): the
//! missing directories of the path are made again (the last one with the saved mode and
//! owner; under a temporary name in its parent when the path is taken by now), the task
//! enters them (`chdir`, `chroot`), and they are removed again through a descriptor of the
//! task's former root, so that the task ends up in a removed directory as before.

use crate::error::{Ctx, Failure};
use crate::remote::Remote;
use stasis_image::records as rec;
use std::os::unix::fs::MetadataExt;

const SUFFIX: &str = " (deleted)";

/// If `path` (read from `/proc/PID/<which>`) is a removed directory: strip the suffix and
/// return its mode and owner.
fn dump_one(pid: i32, which: &str, path: &mut String) -> Result<Option<rec::DeletedDir>, Failure> {
    let Some(stripped) = path.strip_suffix(SUFFIX) else {
        return Ok(None);
    };
    let md = std::fs::metadata(format!("/proc/{pid}/{which}"))
        .ctx(pid, || format!("stat of {which} {path}"))?;
    if md.nlink() != 0 {
        // A directory really named "... (deleted)".
        return Ok(None);
    }
    *path = stripped.to_string();
    Ok(Some(rec::DeletedDir {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    }))
}

/// Record a removed cwd and root of process `p` (whose `cwd` and `root` are the links read
/// from `/proc`).
pub(crate) fn dump(p: &mut rec::Process) -> Result<(), Failure> {
    p.cwd_deleted = dump_one(p.pid, "cwd", &mut p.cwd)?;
    p.root_deleted = dump_one(p.pid, "root", &mut p.root)?;
    Ok(())
}

/// Directories made again for the task (paths as it sees them before its chroot, parents
/// first), to remove once it is in them.
struct Made {
    dirs: Vec<String>,
    /// (path, name used instead) for paths taken by now.
    aliases: Vec<(String, String)>,
}

/// Make `path` again (and its missing parents); returns the name used for it.
fn make(
    r: &mut Remote,
    path: &str,
    d: &rec::DeletedDir,
    made: &mut Made,
) -> Result<String, Failure> {
    let mut cur = String::new();
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in parts.iter().enumerate() {
        cur.push('/');
        cur.push_str(c);
        let last = i + 1 == parts.len();
        if let Some((_, to)) = made.aliases.iter().find(|(from, _)| *from == cur) {
            cur = to.clone();
            continue;
        }
        if made.dirs.contains(&cur) {
            // Made already: cwd and root are the same removed directory, or one is in the
            // other.
            continue;
        }
        let a = r.put_str(0, &cur)?;
        let mode = if last { d.mode } else { 0o755 };
        let rc = r.call_raw(&format!("mkdir({cur})"), libc::SYS_mkdir, &[a, mode as u64])?;
        if rc == 0 {
            made.dirs.push(cur.clone());
        } else if rc == -(libc::EEXIST as i64) && last {
            // Taken by now: a name of our own beside it.
            let taken = cur.clone();
            cur = format!("{cur}.stasis-ghost-dir-{}", r.pid);
            made.aliases.push((taken, cur.clone()));
            let a = r.put_str(0, &cur)?;
            r.call(&format!("mkdir({cur})"), libc::SYS_mkdir, &[a, mode as u64])?;
            made.dirs.push(cur.clone());
        } else if rc != -(libc::EEXIST as i64) {
            return Err(Failure::new(
                r.pid,
                format!("recreating removed directory {path}: mkdir({cur})"),
                std::io::Error::from_raw_os_error(-rc as i32),
            ));
        }
    }
    let a = r.put_str(0, &cur)?;
    r.call(
        &format!("chmod({cur})"),
        libc::SYS_chmod,
        &[a, d.mode as u64],
    )?;
    r.call(
        &format!("chown({cur})"),
        libc::SYS_chown,
        &[a, d.uid as u64, d.gid as u64],
    )?;
    Ok(cur)
}

/// cwd and root of the process, recreating removed ones for the time of the calls.
pub(crate) fn restore_cwd_root(r: &mut Remote, p: &rec::Process) -> Result<(), Failure> {
    if p.cwd_deleted.is_none() && p.root_deleted.is_none() {
        let cwd = r.put_str(0, &p.cwd)?;
        r.call(&format!("chdir({})", p.cwd), libc::SYS_chdir, &[cwd])?;
        if p.root != "/" {
            let root = r.put_str(0, &p.root)?;
            r.call(&format!("chroot({})", p.root), libc::SYS_chroot, &[root])?;
        }
        return Ok(());
    }
    let mut made = Made {
        dirs: Vec::new(),
        aliases: Vec::new(),
    };
    let res = enter(r, p, &mut made);
    // Remove what we made, through a descriptor of the former root (the chroot may have
    // moved ours), deepest first; a failure here leaves a directory behind but no task in a
    // wrong place.
    let cleanup = remove(r, &made, res.as_ref().ok().copied());
    let old_root = res?;
    r.call("close", libc::SYS_close, &[old_root])?;
    cleanup
}

/// chdir and chroot; returns a descriptor of the root before the chroot.
fn enter(r: &mut Remote, p: &rec::Process, made: &mut Made) -> Result<u64, Failure> {
    let slash = r.put_str(0, "/")?;
    let old_root = r.call(
        "open(/, O_PATH)",
        libc::SYS_open,
        &[
            slash,
            (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        ],
    )?;
    let cwd = match &p.cwd_deleted {
        Some(d) => make(r, &p.cwd, d, made)?,
        None => p.cwd.clone(),
    };
    let a = r.put_str(0, &cwd)?;
    r.call(&format!("chdir({})", p.cwd), libc::SYS_chdir, &[a])?;
    if p.root != "/" {
        let root = match &p.root_deleted {
            Some(d) => make(r, &p.root, d, made)?,
            None => p.root.clone(),
        };
        let a = r.put_str(0, &root)?;
        r.call(&format!("chroot({})", p.root), libc::SYS_chroot, &[a])?;
    }
    Ok(old_root)
}

fn remove(r: &mut Remote, made: &Made, old_root: Option<u64>) -> Result<(), Failure> {
    let Some(dirfd) = old_root else {
        // Nothing entered: remove by path as the task still sees it.
        for d in made.dirs.iter().rev() {
            let a = r.put_str(0, d)?;
            let _ = r.call_raw("rmdir", libc::SYS_rmdir, &[a]);
        }
        return Ok(());
    };
    for d in made.dirs.iter().rev() {
        let rel = d.trim_start_matches('/');
        let a = r.put_str(0, rel)?;
        r.call(
            &format!("removing recreated directory {d}"),
            libc::SYS_unlinkat,
            &[dirfd, a, libc::AT_REMOVEDIR as u64],
        )?;
    }
    Ok(())
}
