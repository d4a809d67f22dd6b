//! # stasis-sys: the kernel edge
//!
//! The only crate of the workspace that contains `unsafe`. Every wrapper here is small, safe to
//! call, and returns `std::io::Error` (or a typed error) instead of raw errno values. Every
//! `unsafe` block carries a `// SAFETY:` comment.
//!
//! ## Layout
//! - [`ptrace`]: seize, interrupt, wait, register sets (general, XSAVE), signal masks, queued
//!   siginfo, rseq configuration.
//! - [`inject`]: running system calls inside a stopped tracee (the "remote" executor).
//! - [`mem`]: `process_vm_readv`/`process_vm_writev` and `/proc/PID/mem` access.
//! - [`sys`]: other system calls the engine needs (pidfd, kcmp, clone3 with `set_tid`, memfd,
//!   pipes, robust lists, prlimit, …).
//! - [`proc`]: parsers and readers for `/proc`.
//! - [`probe`]: kernel feature probes for `stasis check`.
//! - [`wait`]: the one `waitpid(2)` wrapper (process ends; tracee stops via [`ptrace`]).
#![allow(unsafe_code)]

pub mod diag;
pub mod inject;
pub mod mem;
pub mod mount;
pub mod net;
pub mod ns;
pub mod probe;
pub mod proc;
pub mod ptrace;
pub mod sys;
pub mod uffd;
pub mod wait;

/// Page size on x86_64. The engine refuses to run on another page size.
pub const PAGE_SIZE: u64 = 4096;

/// `errno` of the last failed libc call, as an `io::Error`.
pub(crate) fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Turns a libc return value into a `Result`: negative means the call failed and `errno` is set.
pub(crate) fn check(ret: libc::c_long) -> std::io::Result<libc::c_long> {
    if ret < 0 {
        Err(last_err())
    } else {
        Ok(ret)
    }
}
