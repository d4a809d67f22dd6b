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

// Missing-page mode, for lazy restore.

/// `UFFD_FEATURE_EVENT_FORK`: a fork of a registered mm gives the child a userfaultfd of its
/// own, delivered as an event (needs `CAP_SYS_PTRACE` in the caller of `UFFDIO_API`).
pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
/// `UFFD_FEATURE_EVENT_REMAP`: `mremap` of a registered range is reported.
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `UFFD_FEATURE_EVENT_REMOVE`: `MADV_DONTNEED`/`MADV_REMOVE` of a registered range is reported.
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;

/// `_IOWR(0xAA, 0x03, struct uffdio_copy)`.
const UFFDIO_COPY: libc::c_ulong = 0xC028_AA03;
/// `_IOWR(0xAA, 0x04, struct uffdio_zeropage)`.
const UFFDIO_ZEROPAGE: libc::c_ulong = 0xC020_AA04;
/// `_IOR(0xAA, 0x02, struct uffdio_range)`.
const UFFDIO_WAKE: libc::c_ulong = 0x8010_AA02;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// `UFFDIO_REGISTER` of `[start, start+len)` in missing-page mode.
pub fn register_missing(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut reg: [u64; 4] = [start, len, UFFDIO_REGISTER_MODE_MISSING, 0];
    // SAFETY: UFFDIO_REGISTER reads and writes a 32-byte `struct uffdio_register`, which `reg` is.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, reg.as_mut_ptr()) };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// `UFFDIO_COPY` of `src` to `dst` (page-aligned, `src.len()` a multiple of the page size),
/// waking the threads waiting on the range. Returns the bytes copied (on an error part of the
/// range may have been placed: the count comes with it).
pub fn copy(uffd: BorrowedFd<'_>, dst: u64, src: &[u8]) -> (u64, io::Result<()>) {
    let mut c: [i64; 5] = [dst as i64, src.as_ptr() as i64, src.len() as i64, 0, 0];
    // SAFETY: UFFDIO_COPY reads a 40-byte `struct uffdio_copy` (dst, src, len, mode, copy out)
    // which `c` is; the kernel reads `len` bytes at `src`, which `src` holds.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_COPY, c.as_mut_ptr()) };
    let done = c[4].max(0) as u64;
    if r != 0 {
        return (done, Err(last_err()));
    }
    (done, Ok(()))
}

/// `UFFDIO_ZEROPAGE` of `[dst, dst+len)`, waking the waiters.
pub fn zeropage(uffd: BorrowedFd<'_>, dst: u64, len: u64) -> io::Result<()> {
    let mut z: [i64; 4] = [dst as i64, len as i64, 0, 0];
    // SAFETY: UFFDIO_ZEROPAGE reads a 32-byte `struct uffdio_zeropage` (range, mode, zeropage
    // out), which `z` is.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_ZEROPAGE, z.as_mut_ptr()) };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// `UFFDIO_WAKE` of `[start, start+len)`.
pub fn wake(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut w: [u64; 2] = [start, len];
    // SAFETY: UFFDIO_WAKE reads a 16-byte `struct uffdio_range`, which `w` is.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_WAKE, w.as_mut_ptr()) };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// One message read from a userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// A missing-page fault at this address.
    PageFault(u64),
    /// The registered mm forked: the child's userfaultfd (a new fd in our table, owned by the
    /// caller from now on).
    Fork(i32),
    /// `mremap` moved `len` bytes from `from` to `to`.
    Remap {
        /// Old address.
        from: u64,
        /// New address.
        to: u64,
        /// Length.
        len: u64,
    },
    /// `[start, end)` was dropped (`MADV_DONTNEED`): it reads as zero from now on.
    Remove(u64, u64),
    /// `[start, end)` was unmapped.
    Unmap(u64, u64),
    /// Anything else (its event number).
    Other(u8),
}

/// Read one message from a non-blocking userfaultfd: None when nothing is pending.
pub fn read_msg(uffd: BorrowedFd<'_>) -> io::Result<Option<Msg>> {
    let mut m = [0u64; 4];
    // SAFETY: reads at most 32 bytes (one `struct uffd_msg`) into `m`, which holds 32.
    let n = unsafe { libc::read(uffd.as_raw_fd(), m.as_mut_ptr().cast(), 32) };
    if n < 0 {
        let e = last_err();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(None);
        }
        return Err(e);
    }
    if n != 32 {
        return Err(io::Error::other(format!(
            "short userfaultfd message ({n} bytes)"
        )));
    }
    let event = (m[0] & 0xff) as u8;
    Ok(Some(match event {
        0x12 => Msg::PageFault(m[2]),
        0x13 => Msg::Fork((m[1] & 0xffff_ffff) as i32),
        0x14 => Msg::Remap {
            from: m[1],
            to: m[2],
            len: m[3],
        },
        0x15 => Msg::Remove(m[1], m[2]),
        0x16 => Msg::Unmap(m[1], m[2]),
        e => Msg::Other(e),
    }))
}

/// `poll` of `fds` (each with `POLLIN`) for at most `timeout_ms` (-1: no limit): the revents
/// of each, in order. EINTR gives all zeros.
pub fn poll_in(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<i16>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a live array of `p.len()` pollfds.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = last_err();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![0; p.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents).collect())
}

/// `pidfd_send_signal(pidfd, sig)`.
pub fn pidfd_kill(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments, no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// A plain `fork()` for a helper process that must outlive the caller (the lazy page server).
/// Returns 0 in the child. The child may only use what no other thread of the caller could
/// hold locked at the fork: the caller's own heap (glibc's malloc is reset across fork), its
/// fds; not stdio or the logger.
pub fn fork_helper() -> io::Result<i32> {
    // SAFETY: fork has no memory-safety preconditions; what the child may touch is documented
    // above and kept by the only caller (it uses its own data, files and raw syscalls).
    let r = unsafe { libc::fork() };
    if r < 0 {
        return Err(last_err());
    }
    Ok(r)
}
