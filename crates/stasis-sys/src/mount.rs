//! Mounts and the file-system calls std does not offer: `mount(2)`, `umount2(2)`, per-thread
//! mount namespaces, device nodes and FIFOs (`mknod(2)`), modification times that do not follow
//! symlinks (`utimensat(2)` with `AT_SYMLINK_NOFOLLOW`), and extended attributes of a path
//! itself (`l{list,get,set}xattr(2)`).
//!
//! ## Per-thread mount namespaces
//!
//! A mount namespace hangs off a task's filesystem context (`fs_struct`: root, cwd, umask),
//! which all threads of a process normally share. [`unshare_fs_and_mount_ns`] first gives the
//! calling thread its own filesystem context (`unshare(CLONE_FS)`) and then its own copy of the
//! mount namespace (`unshare(CLONE_NEWNS)`), and makes every mount in the copy private so that
//! nothing mounted there propagates back to the original namespace. The other threads of the
//! process keep the original namespace. Such a thread must read its own mount table through
//! `/proc/thread-self/mountinfo`: `/proc/self` names the thread-group leader.

use crate::check;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `MS_RDONLY`: read-only mount.
pub const MS_RDONLY: u64 = libc::MS_RDONLY;
/// `MS_NOSUID`: ignore set-user-id and set-group-id bits.
pub const MS_NOSUID: u64 = libc::MS_NOSUID;
/// `MS_NODEV`: no access to device nodes.
pub const MS_NODEV: u64 = libc::MS_NODEV;
/// `MS_NOEXEC`: no program execution.
pub const MS_NOEXEC: u64 = libc::MS_NOEXEC;
/// `MS_REMOUNT`: change the flags (and with [`MS_BIND`], only the per-mount flags).
pub const MS_REMOUNT: u64 = libc::MS_REMOUNT;
/// `MS_NOSYMFOLLOW`: do not follow symlinks on this mount (Linux 5.10).
pub const MS_NOSYMFOLLOW: u64 = libc::MS_NOSYMFOLLOW;
/// `MS_NOATIME`: never update access times.
pub const MS_NOATIME: u64 = libc::MS_NOATIME;
/// `MS_NODIRATIME`: never update directory access times.
pub const MS_NODIRATIME: u64 = libc::MS_NODIRATIME;
/// `MS_BIND`: bind mount.
pub const MS_BIND: u64 = libc::MS_BIND;
/// `MS_MOVE`: move a mount.
pub const MS_MOVE: u64 = libc::MS_MOVE;
/// `MS_REC`: recursive (bind or propagation change).
pub const MS_REC: u64 = libc::MS_REC;
/// `MS_PRIVATE`: propagation type private.
pub const MS_PRIVATE: u64 = libc::MS_PRIVATE;
/// `MS_SLAVE`: propagation type slave.
pub const MS_SLAVE: u64 = libc::MS_SLAVE;
/// `MS_SHARED`: propagation type shared.
pub const MS_SHARED: u64 = libc::MS_SHARED;
/// `MS_RELATIME`: update access times relative to modification times.
pub const MS_RELATIME: u64 = libc::MS_RELATIME;
/// `MS_STRICTATIME`: always update access times.
pub const MS_STRICTATIME: u64 = libc::MS_STRICTATIME;

/// `MNT_FORCE` for [`umount`].
pub const MNT_FORCE: i32 = libc::MNT_FORCE;
/// `MNT_DETACH` for [`umount`]: lazy unmount (detach now, clean up when no longer busy).
pub const MNT_DETACH: i32 = libc::MNT_DETACH;
/// `UMOUNT_NOFOLLOW` for [`umount`]: do not follow a symlink at the target.
pub const UMOUNT_NOFOLLOW: i32 = libc::UMOUNT_NOFOLLOW;

fn path_c(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

fn str_c(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument holds a NUL byte"))
}

fn bytes_c(b: &[u8]) -> io::Result<CString> {
    CString::new(b)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name holds a NUL byte"))
}

/// Pointer of an optional C string, NULL for `None`.
fn opt_ptr(c: &Option<CString>) -> *const libc::c_char {
    c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// `mount(source, target, fstype, flags, data)`. An empty `source`, `fstype` or `data` is
/// passed as NULL (as for a remount, a bind or a propagation change).
pub fn mount(source: &str, target: &Path, fstype: &str, flags: u64, data: &str) -> io::Result<()> {
    let src = (!source.is_empty()).then(|| str_c(source)).transpose()?;
    let tgt = path_c(target)?;
    let fst = (!fstype.is_empty()).then(|| str_c(fstype)).transpose()?;
    let dat = (!data.is_empty()).then(|| str_c(data)).transpose()?;
    // SAFETY: every pointer is NULL or a NUL-terminated string owned by a local that outlives
    // the call; `data` is a string as every file system used here expects.
    let r = unsafe {
        libc::mount(
            opt_ptr(&src),
            tgt.as_ptr(),
            opt_ptr(&fst),
            flags as libc::c_ulong,
            opt_ptr(&dat).cast(),
        )
    };
    check(r as libc::c_long).map(|_| ())
}

/// `umount2(target, flags)` (flags: [`MNT_DETACH`], [`MNT_FORCE`], [`UMOUNT_NOFOLLOW`]).
pub fn umount(target: &Path, flags: i32) -> io::Result<()> {
    let tgt = path_c(target)?;
    // SAFETY: a NUL-terminated path that outlives the call and an integer.
    let r = unsafe { libc::umount2(tgt.as_ptr(), flags) };
    check(r as libc::c_long).map(|_| ())
}

/// `mknod(path, mode, dev)`: `mode` holds the file type (`S_IFCHR`, `S_IFBLK`, `S_IFIFO`,
/// `S_IFSOCK`, `S_IFREG`) and the permission bits (the umask applies); `dev` is an encoded
/// device number as in `st_rdev`.
pub fn mknod(path: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let p = path_c(path)?;
    // SAFETY: a NUL-terminated path that outlives the call and integers.
    let r = unsafe { libc::mknod(p.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) };
    check(r as libc::c_long).map(|_| ())
}

/// `mkfifo(path, mode)` (the umask applies to `mode`).
pub fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    let p = path_c(path)?;
    // SAFETY: a NUL-terminated path that outlives the call and an integer.
    let r = unsafe { libc::mkfifo(p.as_ptr(), mode as libc::mode_t) };
    check(r as libc::c_long).map(|_| ())
}

/// Sets the modification time of `path` itself (a symlink is not followed) to `sec`.`nsec`,
/// leaving the access time unchanged: `utimensat(AT_FDCWD, path, {UTIME_OMIT, mtime},
/// AT_SYMLINK_NOFOLLOW)`. Works on any file type without opening it (FIFOs, devices).
pub fn set_mtime_nofollow(path: &Path, sec: i64, nsec: u32) -> io::Result<()> {
    if nsec >= 1_000_000_000 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let p = path_c(path)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as libc::c_long,
        },
    ];
    // SAFETY: a NUL-terminated path and an array of two timespecs, both live across the call;
    // the kernel only reads them.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(r as libc::c_long).map(|_| ())
}

/// Gives the calling thread its own copy of the mount namespace (`unshare(CLONE_NEWNS)`) and
/// makes every mount in it private (`mount(NULL, "/", NULL, MS_REC|MS_PRIVATE)`), so mounts
/// made afterwards stay in the copy. In a multi-threaded process the kernel also unshares the
/// filesystem context of the calling thread; see [`unshare_fs_and_mount_ns`].
pub fn unshare_mount_ns() -> io::Result<()> {
    // SAFETY: integer argument; only the calling task's namespaces change.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    check(r as libc::c_long)?;
    mount("", Path::new("/"), "", MS_REC | MS_PRIVATE, "")
}

/// For one thread of a multi-threaded process: `unshare(CLONE_FS)` (own root, cwd and umask),
/// then [`unshare_mount_ns`]. Afterwards the thread has a private mount namespace of its own;
/// the other threads are unaffected. The namespace goes away with the thread (when nothing
/// else holds it).
pub fn unshare_fs_and_mount_ns() -> io::Result<()> {
    // SAFETY: integer argument; only the calling thread's filesystem context changes.
    let r = unsafe { libc::unshare(libc::CLONE_FS) };
    check(r as libc::c_long)?;
    unshare_mount_ns()
}

/// Calls a size-probing xattr function: first with no buffer to learn the size, then with a
/// buffer of that size, again if the value grew in between (`ERANGE`).
fn sized_read(mut call: impl FnMut(&mut [u8]) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let need = check(call(&mut []) as libc::c_long)? as usize;
        let mut buf = vec![0u8; need];
        let r = call(&mut buf);
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(r as usize);
        return Ok(buf);
    }
}

/// `llistxattr(path)`: the names of the extended attributes of `path` itself (a symlink is not
/// followed), without their NUL terminators.
pub fn llistxattr(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let p = path_c(path)?;
    let list = sized_read(|buf| {
        let (ptr, len) = if buf.is_empty() {
            (std::ptr::null_mut(), 0)
        } else {
            (buf.as_mut_ptr().cast::<libc::c_char>(), buf.len())
        };
        // SAFETY: `p` is a NUL-terminated path; `ptr` is NULL with length 0 or points to `len`
        // writable bytes of a live buffer.
        unsafe { libc::llistxattr(p.as_ptr(), ptr, len) }
    })?;
    Ok(list
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// `lgetxattr(path, name)`: the value of one extended attribute of `path` itself.
pub fn lgetxattr(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let p = path_c(path)?;
    let n = bytes_c(name)?;
    sized_read(|buf| {
        let (ptr, len) = if buf.is_empty() {
            (std::ptr::null_mut(), 0)
        } else {
            (buf.as_mut_ptr().cast::<libc::c_void>(), buf.len())
        };
        // SAFETY: `p` and `n` are NUL-terminated strings; `ptr` is NULL with length 0 or
        // points to `len` writable bytes of a live buffer.
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), ptr, len) }
    })
}

/// `lsetxattr(path, name, value, 0)`: creates or replaces one extended attribute of `path`
/// itself.
pub fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let p = path_c(path)?;
    let n = bytes_c(name)?;
    // SAFETY: `p` and `n` are NUL-terminated strings and `value` a live slice of `value.len()`
    // bytes; the kernel only reads them.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(r as libc::c_long).map(|_| ())
}
