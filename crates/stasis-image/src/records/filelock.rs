//! File locks (POSIX record locks, flock, open file description locks, leases), the owner of a
//! description (`F_SETOWN_EX`/`F_SETSIG`), and descriptors opened with `O_PATH`.

/// What kind of lock, which decides its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum LockKind {
    /// `fcntl(F_SETLK)` record lock: owned by the process (its fd table), a byte range.
    Posix = 0,
    /// `flock(2)`: owned by the open file description, the whole file.
    Flock = 1,
    /// `fcntl(F_OFD_SETLK)`: owned by the open file description, a byte range.
    Ofd = 2,
    /// `fcntl(F_SETLEASE)`: owned by the open file description, taken by a process.
    Lease = 3,
}

/// One lock held (waiters blocked in `F_SETLKW`/`flock` are not locks: they re-enter the call).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileLock {
    #[prost(enumeration = "LockKind", tag = "1")]
    pub kind: i32,
    /// A write (exclusive) lock; otherwise a read (shared) one.
    #[prost(bool, tag = "2")]
    pub write: bool,
    /// First byte of the range (POSIX, OFD).
    #[prost(uint64, tag = "3")]
    pub start: u64,
    /// Last byte of the range; `u64::MAX` means to the end of the file ("EOF").
    #[prost(uint64, tag = "4")]
    pub end: u64,
    /// POSIX locks and leases (on `Process::locks`): the process's fd through which it is
    /// taken again.
    #[prost(int32, tag = "5")]
    pub fd: i32,
}

/// Who receives `SIGIO`/`SIGURG` (and lease breaks) for a description: `F_GETOWN_EX`, and the
/// signal of `F_GETSIG`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileOwner {
    /// `F_OWNER_TID` (0), `F_OWNER_PID` (1) or `F_OWNER_PGRP` (2).
    #[prost(int32, tag = "1")]
    pub kind: i32,
    /// Thread, process or process group id (0: no owner).
    #[prost(int32, tag = "2")]
    pub pid: i32,
    /// `F_SETSIG` signal (0: SIGIO).
    #[prost(int32, tag = "3")]
    pub signal: i32,
}
