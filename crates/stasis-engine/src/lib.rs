//! # stasis-engine: checkpoint and restore of Linux process trees, without CRIU
//!
//! The engine is synchronous; every ptrace request for a tracee comes from the thread that
//! seized it (the caller's thread). Page I/O runs on scoped worker threads through
//! `process_vm_readv`/`writev`, which need no ptrace stop.
//!
//! ## Layout
//! - [`checkpoint`], [`restore`]: orchestration of the two operations.
//! - [`freeze`]: seizing a tree and putting it back (the guard of every checkpoint).
//! - [`memory`]: mappings, pages and shared memory objects — dump and restore side by side.
//! - [`incremental`]: images relative to a parent, and write tracking between images.
//! - [`cow`]: copy-on-write sharing between forked processes kept across a restore.
//! - [`hugetlb`]: hugetlb mappings, memfds and segments, and the huge page pool check.
//! - [`files`]: fd tables, open file descriptions, pipes and FIFOs.
//! - [`events`]: eventfd, epoll, timerfd, signalfd, inotify.
//! - [`unix`]: unix-domain sockets.
//! - [`inet`]: UDP sockets and listening TCP sockets.
//! - [`pty`]: pseudo-terminals and controlling terminals.
//! - [`mqueue`]: POSIX message queues.
//! - [`sysv`]: System V semaphore sets and message queues (shared memory is in [`memory`]).
//! - [`seccomp`]: seccomp strict mode and filter chains.
//! - [`task`]: registers, threads, signals, timers, credentials, limits.
//! - [`remote`]: syscall injection with a scratch area in the tracee.
//! - [`journal`]: recovery after a killed checkpoint.
//! - [`failpoint`]: named failure points for tests, and SIGINT/SIGTERM interruption.
//! - [`error`]: one error enum per operation.

pub mod aio;
pub mod checkpoint;
pub mod cow;
pub mod devtty;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod files;
pub mod freeze;
pub mod hugetlb;
pub mod incremental;
pub mod inet;
pub mod journal;
pub mod lazy;
pub mod memory;
pub mod mqueue;
pub mod netlink;
pub mod netlock;
pub mod nsmap;
pub mod packet;
pub mod pidfd;
mod plan;
pub mod process;
pub mod progress;
pub mod pty;
pub mod remote;
pub mod restore;
pub mod seccomp;
mod sockopt;
pub mod sysv;
pub mod task;
pub mod unix;

pub use checkpoint::{
    checkpoint, CheckpointOptions, CheckpointStats, FreezeHook, Freezer, WriterHook,
};
pub use error::{Cause, CheckpointError, Failure, RestoreError};
pub use restore::{
    restore, restore_lazy, Replaced, RestoreOptions, RestoreStats, RootHook, RootStage,
};
pub use stasis_image::{Keyring, Trust};
