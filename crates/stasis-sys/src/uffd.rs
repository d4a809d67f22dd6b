//! Write tracking: userfaultfd write-protect in async mode and `PAGEMAP_SCAN`.
//!
//! A userfaultfd belongs to the mm of the process that created it; the ioctls below act on that
//! mm whichever process calls them (the engine creates the descriptor inside the task and takes
//! it with `pidfd_getfd`). In async mode (`UFFD_FEATURE_WP_ASYNC`) a write to a write-protected
//! page is resolved by the kernel itself (nobody reads the descriptor): the page just loses its
//! uffd-wp bit, which `PAGEMAP_SCAN` reports as `PAGE_IS_WRITTEN`.

use crate::last_err;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `UFFD_FEATURE_WP_UNPOPULATED`: write-protecting also marks empty ptes (pte markers).
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// `UFFD_FEATURE_WP_ASYNC`: write faults on protected pages are resolved by the kernel.
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFD_USER_MODE_ONLY` (a `userfaultfd()` flag): allowed without privilege when
/// `vm.unprivileged_userfaultfd` is 0.
pub const UFFD_USER_MODE_ONLY: u64 = 1;

const UFFD_API: u64 = 0xAA;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
/// `_IOWR(0xAA, 0x06, struct uffdio_writeprotect)`.
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xC018_AA06;
const UFFDIO_REGISTER_MODE_WP: u64 = 2;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
const PM_SCAN_WP_MATCHING: u64 = 1;
const PM_SCAN_CHECK_WPASYNC: u64 = 2;
/// `PAGE_IS_WRITTEN`.
const PAGE_IS_WRITTEN: u64 = 1 << 1;

/// `UFFDIO_API` with `features`; returns the features the kernel enabled.
pub fn api(uffd: BorrowedFd<'_>, features: u64) -> io::Result<u64> {
    let mut a: [u64; 3] = [UFFD_API, features, 0];
    // SAFETY: UFFDIO_API reads and writes a 24-byte `struct uffdio_api`, which `a` is.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, a.as_mut_ptr()) };
    if r != 0 {
        return Err(last_err());
    }
    Ok(a[1])
}

/// `UFFDIO_REGISTER` of `[start, start+len)` in write-protect mode.
pub fn register_wp(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut reg: [u64; 4] = [start, len, UFFDIO_REGISTER_MODE_WP, 0];
    // SAFETY: UFFDIO_REGISTER reads and writes a 32-byte `struct uffdio_register` (range,
    // mode, ioctls out), which `reg` is.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, reg.as_mut_ptr()) };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// `UFFDIO_WRITEPROTECT` of `[start, start+len)`: protect (`wp`) or unprotect.
pub fn writeprotect(uffd: BorrowedFd<'_>, start: u64, len: u64, wp: bool) -> io::Result<()> {
    let mode = if wp { UFFDIO_WRITEPROTECT_MODE_WP } else { 0 };
    let mut w: [u64; 3] = [start, len, mode];
    // SAFETY: UFFDIO_WRITEPROTECT reads a 24-byte `struct uffdio_writeprotect` (range, mode),
    // which `w` is.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_WRITEPROTECT, w.as_mut_ptr()) };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// The pages of `[start, end)` written since they were last write-protected, as address ranges
/// (`PAGEMAP_SCAN` on an open `/proc/PID/pagemap`, category `PAGE_IS_WRITTEN`, with
/// `PM_SCAN_CHECK_WPASYNC`: the range must be registered with an async-mode userfaultfd, or
/// `EPERM`). With `reset`, the pages reported are write-protected again in the same walk
/// (`PM_SCAN_WP_MATCHING`).
pub fn scan_written(
    pagemap: BorrowedFd<'_>,
    start: u64,
    end: u64,
    reset: bool,
) -> io::Result<Vec<(u64, u64)>> {
    const VEC: usize = 512;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut regions = vec![[0u64; 3]; VEC];
    let mut pos = start;
    while pos < end {
        let mut flags = PM_SCAN_CHECK_WPASYNC;
        if reset {
            flags |= PM_SCAN_WP_MATCHING;
        }
        let mut arg: [u64; 12] = [
            96,
            flags,
            pos,
            end,
            0,
            regions.as_mut_ptr() as u64,
            VEC as u64,
            0,
            0,
            PAGE_IS_WRITTEN,
            0,
            PAGE_IS_WRITTEN,
        ];
        // SAFETY: PAGEMAP_SCAN reads a 96-byte `struct pm_scan_arg` (which `arg` is) and
        // writes at most `vec_len` 24-byte `struct page_region`s at `vec`, which `regions`
        // holds; it writes back `walk_end` into `arg`.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, arg.as_mut_ptr()) };
        if n < 0 {
            return Err(last_err());
        }
        for r in &regions[..n as usize] {
            match out.last_mut() {
                Some(l) if l.1 == r[0] => l.1 = r[1],
                _ => out.push((r[0], r[1])),
            }
        }
        let walk_end = arg[4];
        if walk_end <= pos {
            break;
        }
        pos = walk_end;
    }
    Ok(out)
}
