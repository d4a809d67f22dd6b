//! Seccomp: the filters of the tree's tasks, stored once each.
//!
//! A task's filters form a chain (each filter installed on top of the ones it already had);
//! threads that synchronised a filter (`SECCOMP_FILTER_FLAG_TSYNC`) and children made by fork
//! share a prefix of it. `Checkpoint.seccomp_filters` holds every distinct filter once, as a
//! tree: a filter names the one installed before it (`parent`), so identical chains and
//! prefixes are stored once and a thread only names its most recent filter
//! (`Thread.seccomp_filter`).

/// Seccomp mode of a task (`Thread.seccomp_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SeccompMode {
    /// No seccomp (the default; also what images taken before seccomp support mean).
    Disabled = 0,
    /// `SECCOMP_MODE_STRICT`: only read, write, exit and sigreturn.
    Strict = 1,
    /// `SECCOMP_MODE_FILTER`: a chain of cBPF filters.
    Filter = 2,
}

/// One seccomp filter program.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SeccompFilter {
    /// The filter installed before this one in the same chain: its index in
    /// `Checkpoint.seccomp_filters` plus one (always an earlier entry); 0 for the first filter
    /// of a chain.
    #[prost(uint32, tag = "1")]
    pub parent: u32,
    /// The cBPF program as `PTRACE_SECCOMP_GET_FILTER` returns it: `struct sock_filter`
    /// instructions of 8 bytes each (code u16, jt u8, jf u8, k u32; little-endian).
    #[prost(bytes = "vec", tag = "2")]
    pub program: Vec<u8>,
    /// Flags it was installed with, as `PTRACE_SECCOMP_GET_METADATA` reports them
    /// (`SECCOMP_FILTER_FLAG_LOG` = 2).
    #[prost(uint64, tag = "3")]
    pub flags: u64,
}
