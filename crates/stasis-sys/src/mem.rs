//! Reading and writing another process's memory.
//!
//! `process_vm_readv`/`process_vm_writev` copy between our buffers and the target's address
//! space without stopping it and without ptrace (they need only ptrace *permission*), so worker
//! threads can use them in parallel. They honour the target's page protections (no
//! `FOLL_FORCE`): a `PROT_NONE` or read-only page cannot be accessed this way. For those,
//! `/proc/PID/mem` is used, which does force access for a tracer.

use crate::check;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Largest number of iovecs one call accepts (`UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

/// A range of the remote address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteRange {
    /// Start address in the target.
    pub addr: u64,
    /// Length in bytes.
    pub len: usize,
}

/// Which way [`transfer`] copies.
#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

/// Copy between `local` and the remote ranges, in batches of at most [`IOV_MAX`] ranges.
/// Returns the bytes copied, short only if a remote page is not accessible.
fn transfer(
    pid: i32,
    ranges: &[RemoteRange],
    local_ptr: *mut u8,
    local_len: usize,
    dir: Dir,
) -> io::Result<usize> {
    let total: usize = ranges.iter().map(|r| r.len).sum();
    assert_eq!(total, local_len, "remote transfer: buffer length mismatch");
    let mut done = 0usize;
    for batch in ranges.chunks(IOV_MAX) {
        let blen: usize = batch.iter().map(|r| r.len).sum();
        let remote: Vec<libc::iovec> = batch
            .iter()
            .map(|r| libc::iovec {
                iov_base: r.addr as *mut libc::c_void,
                iov_len: r.len,
            })
            .collect();
        let local_iov = libc::iovec {
            // `done + blen <= local_len`, so this stays inside the caller's buffer.
            iov_base: local_ptr.wrapping_add(done).cast(),
            iov_len: blen,
        };
        let n = match dir {
            // SAFETY: the local iovec lies inside the caller's buffer (valid for `local_len`
            // bytes, writable for reads); remote iovecs are addresses in the target that the
            // kernel validates.
            Dir::Read => unsafe {
                libc::process_vm_readv(pid, &local_iov, 1, remote.as_ptr(), remote.len() as u64, 0)
            },
            // SAFETY: as above; the kernel only reads the local buffer.
            Dir::Write => unsafe {
                libc::process_vm_writev(pid, &local_iov, 1, remote.as_ptr(), remote.len() as u64, 0)
            },
        };
        let n = check(n as libc::c_long)? as usize;
        done += n;
        if n < blen {
            return Ok(done);
        }
    }
    Ok(done)
}

/// Copy the remote ranges, in order, into `local` (whose length must equal the ranges' sum).
/// Returns the number of bytes copied, which is short only if a remote page is not accessible.
pub fn read_ranges(pid: i32, ranges: &[RemoteRange], local: &mut [u8]) -> io::Result<usize> {
    transfer(pid, ranges, local.as_mut_ptr(), local.len(), Dir::Read)
}

/// Copy `local` into the remote ranges, in order (lengths must add up).
/// Returns the number of bytes written, short only if a remote page is not writable.
pub fn write_ranges(pid: i32, ranges: &[RemoteRange], local: &[u8]) -> io::Result<usize> {
    transfer(
        pid,
        ranges,
        local.as_ptr() as *mut u8,
        local.len(),
        Dir::Write,
    )
}

/// Read one contiguous remote range with `process_vm_readv`; error if short.
pub fn read_exact(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let n = read_ranges(
        pid,
        &[RemoteRange {
            addr,
            len: buf.len(),
        }],
        buf,
    )?;
    if n != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short remote read at {addr:#x}: {n} of {} bytes", buf.len()),
        ));
    }
    Ok(())
}

/// Write one contiguous remote range with `process_vm_writev`; error if short.
pub fn write_all(pid: i32, addr: u64, buf: &[u8]) -> io::Result<()> {
    let n = write_ranges(
        pid,
        &[RemoteRange {
            addr,
            len: buf.len(),
        }],
        buf,
    )?;
    if n != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "short remote write at {addr:#x}: {n} of {} bytes",
                buf.len()
            ),
        ));
    }
    Ok(())
}

/// `/proc/PID/mem`, which forces access through page protections (for a tracer).
pub struct ProcMem {
    file: File,
}

impl ProcMem {
    /// Open `/proc/PID/mem` for reading and writing.
    pub fn open(pid: i32) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))?;
        Ok(Self { file })
    }

    /// Read exactly `buf.len()` bytes at `addr`.
    pub fn read_exact(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, addr)
    }

    /// Write all of `buf` at `addr`.
    pub fn write_all(&self, addr: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, addr)
    }
}

/// A `MAP_SHARED` mapping of a file in our own address space, removed on drop: the way to
/// fill a hugetlbfs file, which `write(2)` does not accept.
pub struct SharedMap {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; nothing in it is thread-bound.
unsafe impl Send for SharedMap {}

impl SharedMap {
    /// Map `len` bytes of `fd` from offset 0, read-write and shared (`len` a multiple of the
    /// file's page size, for hugetlbfs its huge page size).
    pub fn new(fd: std::os::fd::RawFd, len: usize) -> io::Result<Self> {
        // SAFETY: a new shared mapping at an address the kernel picks; only this value uses it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr, len })
    }

    /// Copy `data` to byte `off` of the mapping.
    pub fn write_at(&mut self, off: usize, data: &[u8]) -> io::Result<()> {
        if off.checked_add(data.len()).is_none_or(|end| end > self.len) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: off + len <= self.len was checked; the mapping is ours and writable.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), (self.ptr as *mut u8).add(off), data.len())
        };
        Ok(())
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this value created, which nothing else uses.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
