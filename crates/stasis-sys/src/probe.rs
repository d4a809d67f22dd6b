//! Probes of kernel features (for `stasis check`): each one asks the kernel for real, without
//! side effects that outlive the call.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

/// `clone3` with `set_tid`: asks for our own pid (in use), which a kernel that knows
/// `set_tid` and lets us use it refuses with `EEXIST` before creating anything. `Ok` then;
/// `EPERM` (no CAP_SYS_ADMIN), `E2BIG`/`EINVAL`/`ENOSYS` (too old) otherwise.
pub fn clone3_set_tid() -> io::Result<()> {
    let set_tid: [libc::pid_t; 1] = [crate::sys::getpid()];
    let args = crate::sys::encode_clone_args(0, libc::SIGCHLD as u64, set_tid.as_ptr() as u64, 1);
    // SAFETY: clone3 without CLONE_VM behaves like fork. The pid asked for is ours, so the
    // kernel fails before creating a child; should one exist anyway, it only calls _exit.
    let r = unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), args.len()) };
    if r == 0 {
        // SAFETY: a forked child leaves at once without touching the parent's state.
        unsafe { libc::_exit(0) };
    }
    if r > 0 {
        let mut status = 0;
        // SAFETY: waitpid on the child just created, with a valid status pointer.
        unsafe { libc::waitpid(r as libc::pid_t, &mut status, libc::__WALL) };
        return Err(io::Error::other(
            "clone3 gave a pid already in use: set_tid is ignored",
        ));
    }
    let e = last_err();
    if e.raw_os_error() == Some(libc::EEXIST) {
        Ok(())
    } else {
        Err(e)
    }
}

/// `ioctl(PAGEMAP_SCAN)` on `/proc/self/pagemap` (Linux 6.7): a NULL argument is refused
/// with `EFAULT` by a kernel that has it, `ENOTTY`/`EINVAL` by one that has not.
pub fn pagemap_scan() -> io::Result<()> {
    /// `_IOWR('f', 16, struct pm_scan_arg)` (96 bytes).
    const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
    let f = std::fs::File::open("/proc/self/pagemap")?;
    // SAFETY: an ioctl on a descriptor we own with a NULL argument; the kernel copies nothing.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), PAGEMAP_SCAN, std::ptr::null_mut::<u8>()) };
    let e = last_err();
    match (r, e.raw_os_error()) {
        (_, Some(libc::EFAULT)) => Ok(()),
        (0, _) => Ok(()),
        _ => Err(e),
    }
}

/// The userfaultfd feature bits this kernel offers (`UFFDIO_API` answers them all).
pub fn userfaultfd_features() -> io::Result<u64> {
    /// `_IOWR(0xAA, 0x3F, struct uffdio_api)` (24 bytes).
    const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
    // SAFETY: a plain system call with integer flags; a descriptor is returned or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api: [u64; 3] = [0xAA, 0, 0];
    // SAFETY: UFFDIO_API reads and writes a 24-byte `struct uffdio_api`, which `api` is.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, api.as_mut_ptr()) };
    if r != 0 {
        return Err(last_err());
    }
    Ok(api[1])
}

/// `UFFD_FEATURE_WP_ASYNC` (Linux 6.7).
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;

/// `prctl(PR_TIMER_CREATE_RESTORE_IDS, GET)` (Linux 6.16): `Ok` if the kernel knows it.
pub fn timer_create_restore_ids() -> io::Result<()> {
    const PR_TIMER_CREATE_RESTORE_IDS: libc::c_int = 77;
    const GET: libc::c_ulong = 2;
    // SAFETY: prctl with integer arguments; GET only reads the calling thread's setting.
    let r = unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, GET, 0 as libc::c_ulong, 0, 0) };
    if r < 0 {
        Err(last_err())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests run as root on Linux 6.18 (docs/kernel-requirements.md): every probe finds
    /// its feature.
    #[test]
    fn probes_find_the_features_of_this_kernel() {
        clone3_set_tid().expect("clone3 set_tid");
        pagemap_scan().expect("PAGEMAP_SCAN");
        let f = userfaultfd_features().expect("userfaultfd");
        assert_ne!(f & UFFD_FEATURE_WP_ASYNC, 0, "features {f:#x}");
        timer_create_restore_ids().expect("PR_TIMER_CREATE_RESTORE_IDS");
    }
}
