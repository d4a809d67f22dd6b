//! Parsers and readers for the `/proc` files a checkpointer needs.
//!
//! Everything here is split in two layers:
//!
//! * **pure parsers** (`parse_*`) that take the text (or bytes) of a `/proc`
//!   file and never touch the system, so they can be unit-tested on captured
//!   samples, and
//! * **readers** (`read_*`, `list_*`) that open the real file for a pid (and
//!   tid where the file is per-thread), feed the parser and attach the path
//!   to every error.
//!
//! What each file gives us for checkpointing:
//!
//! | file | what we take from it |
//! |------|----------------------|
//! | `maps` | the VMA list: address range, protection, private/shared, file offset, backing device/inode and path. This is the skeleton of the memory image. |
//! | `smaps` | `maps` plus per-VMA accounting (`Rss`, `Swap`, `Anonymous`, page sizes) and the `VmFlags` mnemonics, which expose kernel-only VMA flags (`gd` grows-down, `dc` MADV_DONTFORK, `dd` MADV_DONTDUMP, `io`/`pf` device mappings we cannot dump, `ht` hugetlb, `um`/`uw` userfaultfd, `ss` shadow stack, `sl` sealed, ...). |
//! | `status` | identity and credentials (uids/gids, supplementary groups), the pid in every nested pid namespace (`NStgid`, `NSpid`, ...), signal masks (pending, shared-pending, blocked, ignored, caught), capabilities, `NoNewPrivs`, the seccomp mode, the tracer, the umask. |
//! | `stat` | scheduling/session identity (ppid, pgrp, session, tty), the thread count, start time, and the `mm` layout fields (`start_code` .. `env_end`) needed to restore `prctl(PR_SET_MM)`/`PR_SET_MM_MAP`, plus `exit_signal`. |
//! | `fdinfo/N` | per-descriptor file position, open flags (octal, including `O_CLOEXEC` as `02000000`), mount id and inode, plus type-specific lines (eventfd counter, epoll `tfd:` targets, inotify watches, signalfd mask, timerfd settings, ...). |
//! | `fd/N` | (readlink) what the descriptor points at: a path, `pipe:[ino]`, `socket:[ino]`, `anon_inode:[eventfd]`, `/memfd:x (deleted)`, ... |
//! | `limits` | the 16 `RLIMIT_*` soft/hard pairs to re-apply with `prlimit`. |
//! | `timers` | POSIX timers (`timer_create`): id, signal, `sigev_value`, notification mode/target and clock. The armed value comes from `timer_gettime` inside the task. |
//! | `mountinfo` | the mount table as the task sees it, so file paths can be resolved against the right mount and the mount namespace can be compared/recreated. |
//! | `task/` | the thread ids of the process. |
//! | `task/T/children` | the children of thread `T` (needs `CONFIG_PROC_CHILDREN`); the process tree is the union over all threads. |
//! | `auxv` | the ELF auxiliary vector, restored with `PR_SET_MM_AUXV`. |
//! | `cmdline`, `environ`, `comm` | raw bytes of argv, envp and the 16-byte task name. |
//! | `cwd`, `root`, `exe` | (readlink) the working directory, root and executable. |
//! | `pagemap` | one 64-bit entry per virtual page: present/swapped, soft-dirty, exclusively mapped, file/shared, PFN. This is how we find which pages are worth dumping and, with soft-dirty, which changed since the last pre-dump. |
//!
//! # Text encoding
//!
//! The text parsers take `&str`. Readers of files that contain *paths*
//! (`maps`, `smaps`, `mountinfo`) refuse non-UTF-8 content with a
//! [`ProcError::Parse`] naming the line, rather than silently recording a
//! wrong path. `stat` and `status` are converted lossily because only the
//! task name (which a task may set to arbitrary bytes) can be non-UTF-8 there;
//! use [`read_comm`] for the exact name bytes. Links (`read_fd_link`,
//! `read_cwd`, ...) return a lossless [`PathBuf`].
//!
//! # Vanished tasks
//!
//! A task can exit (or a descriptor be closed) at any moment while it is not
//! frozen. Such errors come back as [`ProcError::Io`] with `ENOENT` or
//! `ESRCH`; test for them with [`ProcError::is_not_found`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::str::FromStr;

/// Errors from reading or parsing a `/proc` file.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be opened, read, listed or readlink'ed.
    #[error("reading {path}")]
    Io {
        /// The `/proc` path involved.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file's content did not have the expected format.
    #[error("parsing {path} line {line}: {what}")]
    Parse {
        /// The `/proc` path, or for the pure `parse_*` functions a label
        /// naming the file kind (e.g. `"maps"`).
        path: String,
        /// 1-based line number (0 when the problem is not tied to a line,
        /// e.g. a required field missing from the whole file).
        line: usize,
        /// What was wrong.
        what: String,
    },
}

impl ProcError {
    /// True when the error means the task (or the descriptor) went away:
    /// `ENOENT` (no `/proc/PID`, no `fd/N`) or `ESRCH` (the task died while
    /// we held its `/proc` entry).
    pub fn is_not_found(&self) -> bool {
        match self {
            ProcError::Io { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ENOENT)
                    || source.raw_os_error() == Some(libc::ESRCH)
            }
            ProcError::Parse { .. } => false,
        }
    }

    /// The path (or file-kind label) the error is about.
    pub fn path(&self) -> &str {
        match self {
            ProcError::Io { path, .. } | ProcError::Parse { path, .. } => path,
        }
    }
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, ProcError>;

/// Parse error before a path is attached.
#[derive(Debug)]
struct PErr {
    line: usize,
    what: String,
}

type PResult<T> = std::result::Result<T, PErr>;

impl PErr {
    fn new(line: usize, what: impl Into<String>) -> Self {
        PErr {
            line,
            what: what.into(),
        }
    }

    fn at(self, path: &str) -> ProcError {
        ProcError::Parse {
            path: path.to_owned(),
            line: self.line,
            what: self.what,
        }
    }
}

/// A field that must be present in the file.
fn req<T>(v: Option<T>, key: &str) -> PResult<T> {
    v.ok_or_else(|| PErr::new(0, format!("missing {key}:")))
}

/// Numbered lines of a `/proc` text file. The kernel ends lines with `\n`
/// only, so unlike [`str::lines`] a trailing `\r` (possible in a file name)
/// is kept.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.is_empty())
}

fn num<T: FromStr>(s: &str, line: usize, what: &str) -> PResult<T> {
    s.parse()
        .map_err(|_| PErr::new(line, format!("bad {what} {s:?}")))
}

fn hex_u64(s: &str, line: usize, what: &str) -> PResult<u64> {
    u64::from_str_radix(s, 16).map_err(|_| PErr::new(line, format!("bad hex {what} {s:?}")))
}

fn hex_u32(s: &str, line: usize, what: &str) -> PResult<u32> {
    u32::from_str_radix(s, 16).map_err(|_| PErr::new(line, format!("bad hex {what} {s:?}")))
}

/// Split `"Key:\tvalue"` into `("Key", "value")` (value trimmed).
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once(':')?;
    Some((k.trim(), v.trim()))
}

// ---------------------------------------------------------------------------
// maps / smaps
// ---------------------------------------------------------------------------

/// One line of `/proc/PID/maps` (one VMA).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapEntry {
    /// First address of the VMA.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r`: `VM_READ`.
    pub read: bool,
    /// `w`: `VM_WRITE`.
    pub write: bool,
    /// `x`: `VM_EXEC`.
    pub exec: bool,
    /// `s` (`VM_MAYSHARE`, i.e. `MAP_SHARED`) rather than `p` (private).
    pub shared: bool,
    /// Offset into the backing file in bytes (`vm_pgoff << PAGE_SHIFT`).
    pub offset: u64,
    /// Major number of the backing file's device (0 for anonymous).
    pub dev_major: u32,
    /// Minor number of the backing file's device.
    pub dev_minor: u32,
    /// Inode of the backing file (0 for anonymous memory).
    pub inode: u64,
    /// The name exactly as printed by the kernel, without the padding: empty
    /// for plain anonymous memory, a pseudo-name (`[heap]`, `[stack]`,
    /// `[vdso]`, `[vvar]`, `[vvar_vclock]`, `[vsyscall]`,
    /// `[anon:NAME]`, `[anon_shmem:NAME]`, `[uprobes]`, ...), or an absolute
    /// path, possibly with a ` (deleted)` suffix (`/memfd:x (deleted)`,
    /// `/dev/zero (deleted)` for shared anonymous memory,
    /// `/SYSV00000000 (deleted)` for SysV shm). Newlines in file names are
    /// printed by the kernel as `\012`; nothing is unescaped here (the
    /// kernel does not escape backslashes, so it would be ambiguous). To
    /// open the exact file use `/proc/PID/map_files/START-END`.
    pub path: String,
}

const DELETED_SUFFIX: &str = " (deleted)";

impl MapEntry {
    /// Size of the VMA in bytes.
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// True when the backing file was unlinked (the kernel appended
    /// ` (deleted)`). Also true for memfd, shared anonymous memory
    /// (`/dev/zero (deleted)`) and SysV shm, whose files never had a name.
    pub fn deleted(&self) -> bool {
        self.path.starts_with('/') && self.path.ends_with(DELETED_SUFFIX)
    }

    /// The file path for file-backed mappings, with any ` (deleted)` suffix
    /// removed; `None` for anonymous memory and pseudo-names like `[heap]`.
    pub fn file_path(&self) -> Option<&str> {
        if !self.path.starts_with('/') {
            return None;
        }
        Some(
            self.path
                .strip_suffix(DELETED_SUFFIX)
                .unwrap_or(self.path.as_str()),
        )
    }

    /// True for a pseudo-name in brackets (`[heap]`, `[stack]`, `[vdso]`,
    /// `[anon:x]`, ...).
    pub fn is_pseudo(&self) -> bool {
        self.path.starts_with('[')
    }

    /// True for memory with no backing inode (private anonymous, heap,
    /// stack, vdso, ...). Shared anonymous memory is backed by a shmem inode
    /// and is *not* included (see [`MapEntry::deleted`]).
    pub fn is_anonymous(&self) -> bool {
        self.inode == 0 && !self.path.starts_with('/')
    }
}

/// Parse one `maps` line (also the header line of each `smaps` entry).
///
/// Kernel format: `"%08lx-%08lx %c%c%c%c %08llx %02x:%02x %lu "`, then, if
/// there is a name, spaces up to column 73 and the name.
fn parse_map_line(line: &str, ln: usize) -> PResult<MapEntry> {
    let mut rest = line;
    let mut field = |what: &str| -> PResult<&str> {
        let r = rest.trim_start_matches(' ');
        let end = r.find(' ').unwrap_or(r.len());
        if end == 0 {
            return Err(PErr::new(ln, format!("missing {what}")));
        }
        let (f, tail) = r.split_at(end);
        rest = tail;
        Ok(f)
    };
    let range = field("address range")?;
    let perms = field("permissions")?;
    let offset = field("offset")?;
    let dev = field("device")?;
    let inode = field("inode")?;

    let (s, e) = range
        .split_once('-')
        .ok_or_else(|| PErr::new(ln, format!("bad address range {range:?}")))?;
    let start = hex_u64(s, ln, "start address")?;
    let end = hex_u64(e, ln, "end address")?;
    if end < start {
        return Err(PErr::new(ln, format!("end before start in {range:?}")));
    }

    let p = perms.as_bytes();
    if p.len() != 4 {
        return Err(PErr::new(ln, format!("bad permissions {perms:?}")));
    }
    let flag = |i: usize, yes: u8| -> PResult<bool> {
        match p[i] {
            c if c == yes => Ok(true),
            b'-' => Ok(false),
            _ => Err(PErr::new(ln, format!("bad permissions {perms:?}"))),
        }
    };
    let read = flag(0, b'r')?;
    let write = flag(1, b'w')?;
    let exec = flag(2, b'x')?;
    let shared = match p[3] {
        b's' => true,
        b'p' => false,
        _ => return Err(PErr::new(ln, format!("bad permissions {perms:?}"))),
    };

    let offset = hex_u64(offset, ln, "offset")?;
    let (maj, min) = dev
        .split_once(':')
        .ok_or_else(|| PErr::new(ln, format!("bad device {dev:?}")))?;
    let dev_major = hex_u32(maj, ln, "device major")?;
    let dev_minor = hex_u32(min, ln, "device minor")?;
    let inode = num(inode, ln, "inode")?;

    // The name starts after the padding. Names are absolute paths or
    // "[...]", so no name starts with a space; trailing spaces belong to the
    // name (a file may be called "foo ").
    let path = rest.trim_start_matches(' ').to_owned();

    Ok(MapEntry {
        start,
        end,
        read,
        write,
        exec,
        shared,
        offset,
        dev_major,
        dev_minor,
        inode,
        path,
    })
}

fn maps_inner(text: &str) -> PResult<Vec<MapEntry>> {
    numbered_lines(text)
        .map(|(ln, l)| parse_map_line(l, ln))
        .collect()
}

/// Parse the text of `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Result<Vec<MapEntry>> {
    maps_inner(text).map_err(|e| e.at("maps"))
}

/// The two-letter `VmFlags` mnemonics printed in `smaps`
/// (`show_smap_vma_flags()` in `fs/proc/task_mmu.c`), with the kernel flag
/// they stand for. Which ones appear depends on the kernel version,
/// architecture and configuration; `??` marks a bit the kernel has no name
/// for.
pub const VM_FLAG_MNEMONICS: &[(&str, &str)] = &[
    ("rd", "VM_READ: readable"),
    ("wr", "VM_WRITE: writable"),
    ("ex", "VM_EXEC: executable"),
    ("sh", "VM_SHARED: shared and writable"),
    ("mr", "VM_MAYREAD: may become readable"),
    ("mw", "VM_MAYWRITE: may become writable"),
    ("me", "VM_MAYEXEC: may become executable"),
    ("ms", "VM_MAYSHARE: MAP_SHARED mapping"),
    ("gd", "VM_GROWSDOWN: stack segment that grows down"),
    ("gu", "VM_GROWSUP: grows up (parisc only)"),
    (
        "pf",
        "VM_PFNMAP: pure PFN range, no struct page (device memory)",
    ),
    (
        "dw",
        "VM_DENYWRITE: writes to the file are denied (removed in 5.15)",
    ),
    ("mp", "VM_MPX: Intel MPX bounds table (removed)"),
    ("lo", "VM_LOCKED: pages are mlock()ed"),
    ("io", "VM_IO: memory-mapped I/O"),
    ("sr", "VM_SEQ_READ: MADV_SEQUENTIAL"),
    ("rr", "VM_RAND_READ: MADV_RANDOM"),
    ("dc", "VM_DONTCOPY: MADV_DONTFORK, not copied on fork"),
    ("de", "VM_DONTEXPAND: cannot be expanded by mremap"),
    ("lf", "VM_LOCKONFAULT: mlock2(MLOCK_ONFAULT)"),
    ("ac", "VM_ACCOUNT: memory is accounted against overcommit"),
    ("nr", "VM_NORESERVE: MAP_NORESERVE, swap space not reserved"),
    ("ht", "VM_HUGETLB: hugetlbfs mapping"),
    ("sf", "VM_SYNC: MAP_SYNC synchronous page faults (DAX)"),
    ("ar", "VM_ARCH_1: architecture specific (x86: VM_PAT)"),
    ("wf", "VM_WIPEONFORK: MADV_WIPEONFORK, zeroed in the child"),
    ("dd", "VM_DONTDUMP: MADV_DONTDUMP, excluded from core dumps"),
    ("bt", "VM_ARM64_BTI: arm64 BTI guarded page"),
    ("mt", "VM_MTE: arm64 memory tagging enabled"),
    (
        "sd",
        "VM_SOFTDIRTY: soft-dirty (whole VMA considered dirty)",
    ),
    ("mm", "VM_MIXEDMAP: mixed PFN and struct page mapping"),
    ("hg", "VM_HUGEPAGE: MADV_HUGEPAGE"),
    ("nh", "VM_NOHUGEPAGE: MADV_NOHUGEPAGE"),
    ("mg", "VM_MERGEABLE: MADV_MERGEABLE (KSM)"),
    ("um", "VM_UFFD_MISSING: userfaultfd missing-page tracking"),
    ("uw", "VM_UFFD_WP: userfaultfd write-protect tracking"),
    ("ui", "VM_UFFD_MINOR: userfaultfd minor-fault tracking"),
    ("ss", "VM_SHADOW_STACK: shadow stack (x86 CET / arm64 GCS)"),
    ("sl", "VM_SEALED: mseal()ed"),
    (
        "dp",
        "VM_DROPPABLE: MAP_DROPPABLE, may be dropped under pressure",
    ),
    ("??", "a flag bit the kernel has no mnemonic for"),
];

/// Description of a `VmFlags` mnemonic from [`VM_FLAG_MNEMONICS`].
pub fn describe_vm_flag(code: &str) -> Option<&'static str> {
    VM_FLAG_MNEMONICS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, d)| *d)
}

/// One entry of `/proc/PID/smaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmapsEntry {
    /// The header line (same as the `maps` line).
    pub map: MapEntry,
    /// `Size:` in kB.
    pub size_kb: u64,
    /// `KernelPageSize:` in kB (2048 or 1048576 for hugetlb mappings).
    pub kernel_page_size_kb: u64,
    /// `MMUPageSize:` in kB.
    pub mmu_page_size_kb: u64,
    /// `Rss:` in kB: resident pages.
    pub rss_kb: u64,
    /// `Swap:` in kB: anonymous pages in swap.
    pub swap_kb: u64,
    /// `Anonymous:` in kB: pages never associated with a file (includes
    /// COW-ed private file pages).
    pub anonymous_kb: u64,
    /// `Locked:` in kB.
    pub locked_kb: u64,
    /// `THPeligible:` if present.
    pub thp_eligible: Option<bool>,
    /// `ProtectionKey:` if present (only when memory protection keys are
    /// enabled).
    pub protection_key: Option<u32>,
    /// The `VmFlags:` mnemonics in kernel order (see [`VM_FLAG_MNEMONICS`]).
    pub vm_flags: Vec<String>,
}

impl SmapsEntry {
    /// True when `VmFlags` contains `code` (e.g. `"gd"`, `"dd"`, `"io"`).
    pub fn has_flag(&self, code: &str) -> bool {
        self.vm_flags.iter().any(|f| f == code)
    }
}

/// Is this smaps line a VMA header (as opposed to a `Key: value` line)?
/// Field lines have a first word ending in ':'; header lines start with
/// `start-end`.
fn is_smaps_header(line: &str) -> bool {
    let first = line.split(' ').next().unwrap_or("");
    !first.ends_with(':') && first.contains('-')
}

fn kb_value(v: &str, ln: usize, key: &str) -> PResult<u64> {
    let n = v.strip_suffix("kB").unwrap_or(v).trim();
    num(n, ln, key)
}

fn smaps_inner(text: &str) -> PResult<Vec<SmapsEntry>> {
    let mut out: Vec<SmapsEntry> = Vec::new();
    for (ln, line) in numbered_lines(text) {
        if is_smaps_header(line) {
            out.push(SmapsEntry {
                map: parse_map_line(line, ln)?,
                size_kb: 0,
                kernel_page_size_kb: 0,
                mmu_page_size_kb: 0,
                rss_kb: 0,
                swap_kb: 0,
                anonymous_kb: 0,
                locked_kb: 0,
                thp_eligible: None,
                protection_key: None,
                vm_flags: Vec::new(),
            });
            continue;
        }
        let cur = out
            .last_mut()
            .ok_or_else(|| PErr::new(ln, "field before the first mapping header"))?;
        let (key, value) =
            key_value(line).ok_or_else(|| PErr::new(ln, format!("unexpected line {line:?}")))?;
        match key {
            "Size" => cur.size_kb = kb_value(value, ln, key)?,
            "KernelPageSize" => cur.kernel_page_size_kb = kb_value(value, ln, key)?,
            "MMUPageSize" => cur.mmu_page_size_kb = kb_value(value, ln, key)?,
            "Rss" => cur.rss_kb = kb_value(value, ln, key)?,
            "Swap" => cur.swap_kb = kb_value(value, ln, key)?,
            "Anonymous" => cur.anonymous_kb = kb_value(value, ln, key)?,
            "Locked" => cur.locked_kb = kb_value(value, ln, key)?,
            "THPeligible" => cur.thp_eligible = Some(num::<u8>(value, ln, key)? != 0),
            "ProtectionKey" => cur.protection_key = Some(num(value, ln, key)?),
            "VmFlags" => cur.vm_flags = value.split_whitespace().map(str::to_owned).collect(),
            _ => {}
        }
    }
    Ok(out)
}

/// Parse the text of `/proc/PID/smaps`.
pub fn parse_smaps(text: &str) -> Result<Vec<SmapsEntry>> {
    smaps_inner(text).map_err(|e| e.at("smaps"))
}

// ---------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------

/// The parts of `/proc/PID/status` (or `/proc/PID/task/TID/status`) we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `Name:`, unescaped (the kernel prints `\n` and `\\` escapes).
    pub name: String,
    /// `Umask:` (octal in the file); absent before Linux 4.7.
    pub umask: Option<u32>,
    /// The state letter of `State:` (`R`, `S`, `D`, `T`, `t`, `Z`, `X`, `I`).
    pub state: char,
    /// `Tgid:` (thread-group id = process id).
    pub tgid: i32,
    /// `Pid:` (thread id).
    pub pid: i32,
    /// `PPid:`.
    pub ppid: i32,
    /// `TracerPid:` (0 if not ptraced).
    pub tracer_pid: i32,
    /// `Uid:` real, effective, saved set, filesystem.
    pub uid: [u32; 4],
    /// `Gid:` real, effective, saved set, filesystem.
    pub gid: [u32; 4],
    /// `Groups:` supplementary groups.
    pub groups: Vec<u32>,
    /// `NStgid:` tgid in each pid namespace, outermost (the reader's) first.
    /// Empty if the kernel does not print it (before 4.1).
    pub ns_tgid: Vec<i32>,
    /// `NSpid:` thread id in each pid namespace.
    pub ns_pid: Vec<i32>,
    /// `NSpgid:` process group id in each pid namespace.
    pub ns_pgid: Vec<i32>,
    /// `NSsid:` session id in each pid namespace.
    pub ns_sid: Vec<i32>,
    /// `Threads:`.
    pub threads: u32,
    /// `SigQ:` (queued signals for the real uid, `RLIMIT_SIGPENDING`).
    pub sig_q: (u64, u64),
    /// `SigPnd:` thread-private pending signals (bit N-1 = signal N).
    pub sig_pnd: u64,
    /// `ShdPnd:` process-wide (shared) pending signals.
    pub shd_pnd: u64,
    /// `SigBlk:` blocked signal mask of this thread.
    pub sig_blk: u64,
    /// `SigIgn:` ignored signals.
    pub sig_ign: u64,
    /// `SigCgt:` signals with a handler.
    pub sig_cgt: u64,
    /// `CapInh:`.
    pub cap_inh: u64,
    /// `CapPrm:`.
    pub cap_prm: u64,
    /// `CapEff:`.
    pub cap_eff: u64,
    /// `CapBnd:`.
    pub cap_bnd: u64,
    /// `CapAmb:` (0 when absent, before 4.3).
    pub cap_amb: u64,
    /// `NoNewPrivs:` (false when absent, before 4.10).
    pub no_new_privs: bool,
    /// `Seccomp:` mode: 0 disabled, 1 strict, 2 filter (0 when absent, i.e.
    /// no `CONFIG_SECCOMP`).
    pub seccomp: u32,
    /// `Seccomp_filters:` number of attached filters, if printed (5.9+).
    pub seccomp_filters: Option<u32>,
    /// `VmSize:` in kB (absent for kernel threads and zombies).
    pub vm_size_kb: Option<u64>,
    /// `VmRSS:` in kB.
    pub vm_rss_kb: Option<u64>,
}

/// Undo `seq_escape_str(.., ESCAPE_SPACE | ESCAPE_SPECIAL, "\n\\")` used for
/// `Name:` in `status`.
fn unescape_status_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('v') => out.push('\x0b'),
            Some('a') => out.push('\x07'),
            Some('e') => out.push('\x1b'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn ids4(v: &str, ln: usize, key: &str) -> PResult<[u32; 4]> {
    let mut out = [0u32; 4];
    let mut it = v.split_whitespace();
    for slot in &mut out {
        let f = it
            .next()
            .ok_or_else(|| PErr::new(ln, format!("{key}: expected 4 ids in {v:?}")))?;
        *slot = num(f, ln, key)?;
    }
    if it.next().is_some() {
        return Err(PErr::new(ln, format!("{key}: expected 4 ids in {v:?}")));
    }
    Ok(out)
}

fn num_list<T: FromStr>(v: &str, ln: usize, key: &str) -> PResult<Vec<T>> {
    v.split_whitespace().map(|f| num(f, ln, key)).collect()
}

fn status_inner(text: &str) -> PResult<Status> {
    let mut name = None;
    let mut umask = None;
    let mut state = None;
    let mut tgid = None;
    let mut pid = None;
    let mut ppid = None;
    let mut tracer_pid = None;
    let mut uid = None;
    let mut gid = None;
    let mut groups = Vec::new();
    let mut ns_tgid = Vec::new();
    let mut ns_pid = Vec::new();
    let mut ns_pgid = Vec::new();
    let mut ns_sid = Vec::new();
    let mut threads = None;
    let mut sig_q = None;
    let mut sig_pnd = None;
    let mut shd_pnd = None;
    let mut sig_blk = None;
    let mut sig_ign = None;
    let mut sig_cgt = None;
    let mut cap_inh = None;
    let mut cap_prm = None;
    let mut cap_eff = None;
    let mut cap_bnd = None;
    let mut cap_amb = 0;
    let mut no_new_privs = false;
    let mut seccomp = 0;
    let mut seccomp_filters = None;
    let mut vm_size_kb = None;
    let mut vm_rss_kb = None;

    for (ln, line) in numbered_lines(text) {
        let Some((key, raw)) = line.split_once(':') else {
            return Err(PErr::new(ln, format!("unexpected line {line:?}")));
        };
        let v = raw.trim();
        match key {
            // The name keeps inner/trailing whitespace other than the
            // separator tab; only the leading tab is stripped.
            "Name" => {
                let raw = raw.strip_prefix('\t').unwrap_or(raw);
                name = Some(unescape_status_name(raw));
            }
            "Umask" => {
                umask = Some(
                    u32::from_str_radix(v, 8)
                        .map_err(|_| PErr::new(ln, format!("bad octal Umask {v:?}")))?,
                )
            }
            "State" => {
                state = Some(
                    v.chars()
                        .next()
                        .ok_or_else(|| PErr::new(ln, "empty State"))?,
                )
            }
            "Tgid" => tgid = Some(num(v, ln, key)?),
            "Pid" => pid = Some(num(v, ln, key)?),
            "PPid" => ppid = Some(num(v, ln, key)?),
            "TracerPid" => tracer_pid = Some(num(v, ln, key)?),
            "Uid" => uid = Some(ids4(v, ln, key)?),
            "Gid" => gid = Some(ids4(v, ln, key)?),
            "Groups" => groups = num_list(v, ln, key)?,
            "NStgid" => ns_tgid = num_list(v, ln, key)?,
            "NSpid" => ns_pid = num_list(v, ln, key)?,
            "NSpgid" => ns_pgid = num_list(v, ln, key)?,
            "NSsid" => ns_sid = num_list(v, ln, key)?,
            "Threads" => threads = Some(num(v, ln, key)?),
            "SigQ" => {
                let (a, b) = v
                    .split_once('/')
                    .ok_or_else(|| PErr::new(ln, format!("bad SigQ {v:?}")))?;
                sig_q = Some((num(a, ln, key)?, num(b, ln, key)?));
            }
            "SigPnd" => sig_pnd = Some(hex_u64(v, ln, key)?),
            "ShdPnd" => shd_pnd = Some(hex_u64(v, ln, key)?),
            "SigBlk" => sig_blk = Some(hex_u64(v, ln, key)?),
            "SigIgn" => sig_ign = Some(hex_u64(v, ln, key)?),
            "SigCgt" => sig_cgt = Some(hex_u64(v, ln, key)?),
            "CapInh" => cap_inh = Some(hex_u64(v, ln, key)?),
            "CapPrm" => cap_prm = Some(hex_u64(v, ln, key)?),
            "CapEff" => cap_eff = Some(hex_u64(v, ln, key)?),
            "CapBnd" => cap_bnd = Some(hex_u64(v, ln, key)?),
            "CapAmb" => cap_amb = hex_u64(v, ln, key)?,
            "NoNewPrivs" => no_new_privs = num::<u8>(v, ln, key)? != 0,
            "Seccomp" => seccomp = num(v, ln, key)?,
            "Seccomp_filters" => seccomp_filters = Some(num(v, ln, key)?),
            "VmSize" => vm_size_kb = Some(kb_value(v, ln, key)?),
            "VmRSS" => vm_rss_kb = Some(kb_value(v, ln, key)?),
            _ => {}
        }
    }

    Ok(Status {
        name: req(name, "Name")?,
        umask,
        state: req(state, "State")?,
        tgid: req(tgid, "Tgid")?,
        pid: req(pid, "Pid")?,
        ppid: req(ppid, "PPid")?,
        tracer_pid: req(tracer_pid, "TracerPid")?,
        uid: req(uid, "Uid")?,
        gid: req(gid, "Gid")?,
        groups,
        ns_tgid,
        ns_pid,
        ns_pgid,
        ns_sid,
        threads: req(threads, "Threads")?,
        sig_q: req(sig_q, "SigQ")?,
        sig_pnd: req(sig_pnd, "SigPnd")?,
        shd_pnd: req(shd_pnd, "ShdPnd")?,
        sig_blk: req(sig_blk, "SigBlk")?,
        sig_ign: req(sig_ign, "SigIgn")?,
        sig_cgt: req(sig_cgt, "SigCgt")?,
        cap_inh: req(cap_inh, "CapInh")?,
        cap_prm: req(cap_prm, "CapPrm")?,
        cap_eff: req(cap_eff, "CapEff")?,
        cap_bnd: req(cap_bnd, "CapBnd")?,
        cap_amb,
        no_new_privs,
        seccomp,
        seccomp_filters,
        vm_size_kb,
        vm_rss_kb,
    })
}

/// Parse the text of `/proc/PID/status` or `/proc/PID/task/TID/status`.
pub fn parse_status(text: &str) -> Result<Status> {
    status_inner(text).map_err(|e| e.at("status"))
}

// ---------------------------------------------------------------------------
// stat
// ---------------------------------------------------------------------------

/// `/proc/PID/stat` (or `task/TID/stat`), fields 1..=52 as in proc(5).
///
/// Fields marked (PT) in proc(5) (`start_code`, `end_code`, `start_stack`,
/// `kstkesp`, `kstkeip`, `wchan`, `start_data` .. `env_end`, `exit_code`)
/// read as 0 unless the reader may ptrace the task (`PTRACE_MODE_READ`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// (1) process (or thread) id.
    pub pid: i32,
    /// (2) `comm`, raw (between the first `(` and the last `)`).
    pub comm: String,
    /// (3) state letter.
    pub state: char,
    /// (4) parent pid.
    pub ppid: i32,
    /// (5) process group id.
    pub pgrp: i32,
    /// (6) session id.
    pub session: i32,
    /// (7) controlling terminal device number (0 if none).
    pub tty_nr: i32,
    /// (8) foreground process group of the controlling terminal (-1).
    pub tpgid: i32,
    /// (9) `PF_*` kernel flags (`PF_KTHREAD` = 0x0020_0000).
    pub flags: u32,
    /// (10) minor faults.
    pub minflt: u64,
    /// (11) minor faults of waited-for children.
    pub cminflt: u64,
    /// (12) major faults.
    pub majflt: u64,
    /// (13) major faults of waited-for children.
    pub cmajflt: u64,
    /// (14) user time in clock ticks.
    pub utime: u64,
    /// (15) system time in clock ticks.
    pub stime: u64,
    /// (16) children's user time.
    pub cutime: i64,
    /// (17) children's system time.
    pub cstime: i64,
    /// (18) kernel priority value.
    pub priority: i64,
    /// (19) nice value (-20..19).
    pub nice: i64,
    /// (20) number of threads.
    pub num_threads: i64,
    /// (21) obsolete, always 0.
    pub itrealvalue: i64,
    /// (22) start time after boot in clock ticks.
    pub starttime: u64,
    /// (23) virtual memory size in bytes.
    pub vsize: u64,
    /// (24) resident set size in pages.
    pub rss: i64,
    /// (25) `RLIMIT_RSS` soft limit in bytes.
    pub rsslim: u64,
    /// (26) start of the text segment. (PT)
    pub start_code: u64,
    /// (27) end of the text segment. (PT)
    pub end_code: u64,
    /// (28) start (bottom) of the main stack. (PT)
    pub start_stack: u64,
    /// (29) saved stack pointer (only while not running). (PT)
    pub kstkesp: u64,
    /// (30) saved instruction pointer. (PT)
    pub kstkeip: u64,
    /// (31) obsolete pending-signal bitmap (use `status`).
    pub signal: u64,
    /// (32) obsolete blocked bitmap.
    pub blocked: u64,
    /// (33) obsolete ignored bitmap.
    pub sigignore: u64,
    /// (34) obsolete caught bitmap.
    pub sigcatch: u64,
    /// (35) 0, or 1 when blocked in the kernel. (PT)
    pub wchan: u64,
    /// (36) not maintained, 0.
    pub nswap: u64,
    /// (37) not maintained, 0.
    pub cnswap: u64,
    /// (38) signal sent to the parent on exit (`SIGCHLD` normally; 0 for
    /// non-leader threads).
    pub exit_signal: i32,
    /// (39) CPU last run on.
    pub processor: i32,
    /// (40) real-time priority (`sched_priority`), 0 for normal policies.
    pub rt_priority: u32,
    /// (41) scheduling policy (`SCHED_*`).
    pub policy: u32,
    /// (42) aggregated block I/O delay in ticks.
    pub delayacct_blkio_ticks: u64,
    /// (43) guest time in ticks.
    pub guest_time: u64,
    /// (44) children's guest time.
    pub cguest_time: i64,
    /// (45) start of initialized + uninitialized data (bss). (PT)
    pub start_data: u64,
    /// (46) end of data/bss. (PT)
    pub end_data: u64,
    /// (47) start of the heap (`brk` base). (PT)
    pub start_brk: u64,
    /// (48) start of argv. (PT)
    pub arg_start: u64,
    /// (49) end of argv. (PT)
    pub arg_end: u64,
    /// (50) start of envp. (PT)
    pub env_start: u64,
    /// (51) end of envp. (PT)
    pub env_end: u64,
    /// (52) exit status in `waitpid` form (meaningful for zombies). (PT)
    pub exit_code: i32,
}

fn stat_inner(text: &str) -> PResult<Stat> {
    let open = text
        .find('(')
        .ok_or_else(|| PErr::new(1, "no '(' before comm"))?;
    // comm is printed raw and may itself contain ')' (and even newlines), so
    // it ends at the *last* ')'.
    let close = text
        .rfind(')')
        .ok_or_else(|| PErr::new(1, "no ')' after comm"))?;
    if close < open {
        return Err(PErr::new(1, "')' before '('"));
    }
    let pid = num(text[..open].trim(), 1, "pid")?;
    let comm = text[open + 1..close].to_owned();
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // f[0] is field 3.
    if f.len() < 50 {
        return Err(PErr::new(
            1,
            format!("expected 52 fields, found {}", f.len() + 2),
        ));
    }
    let g = |n: usize| f[n - 3];
    macro_rules! n {
        ($idx:expr, $name:expr) => {
            num(g($idx), 1, $name)?
        };
    }
    let state_s = g(3);
    let mut chars = state_s.chars();
    let state = match (chars.next(), chars.next()) {
        (Some(c), None) => c,
        _ => return Err(PErr::new(1, format!("bad state {state_s:?}"))),
    };
    Ok(Stat {
        pid,
        comm,
        state,
        ppid: n!(4, "ppid"),
        pgrp: n!(5, "pgrp"),
        session: n!(6, "session"),
        tty_nr: n!(7, "tty_nr"),
        tpgid: n!(8, "tpgid"),
        flags: n!(9, "flags"),
        minflt: n!(10, "minflt"),
        cminflt: n!(11, "cminflt"),
        majflt: n!(12, "majflt"),
        cmajflt: n!(13, "cmajflt"),
        utime: n!(14, "utime"),
        stime: n!(15, "stime"),
        cutime: n!(16, "cutime"),
        cstime: n!(17, "cstime"),
        priority: n!(18, "priority"),
        nice: n!(19, "nice"),
        num_threads: n!(20, "num_threads"),
        itrealvalue: n!(21, "itrealvalue"),
        starttime: n!(22, "starttime"),
        vsize: n!(23, "vsize"),
        rss: n!(24, "rss"),
        rsslim: n!(25, "rsslim"),
        start_code: n!(26, "start_code"),
        end_code: n!(27, "end_code"),
        start_stack: n!(28, "start_stack"),
        kstkesp: n!(29, "kstkesp"),
        kstkeip: n!(30, "kstkeip"),
        signal: n!(31, "signal"),
        blocked: n!(32, "blocked"),
        sigignore: n!(33, "sigignore"),
        sigcatch: n!(34, "sigcatch"),
        wchan: n!(35, "wchan"),
        nswap: n!(36, "nswap"),
        cnswap: n!(37, "cnswap"),
        exit_signal: n!(38, "exit_signal"),
        processor: n!(39, "processor"),
        rt_priority: n!(40, "rt_priority"),
        policy: n!(41, "policy"),
        delayacct_blkio_ticks: n!(42, "delayacct_blkio_ticks"),
        guest_time: n!(43, "guest_time"),
        cguest_time: n!(44, "cguest_time"),
        start_data: n!(45, "start_data"),
        end_data: n!(46, "end_data"),
        start_brk: n!(47, "start_brk"),
        arg_start: n!(48, "arg_start"),
        arg_end: n!(49, "arg_end"),
        env_start: n!(50, "env_start"),
        env_end: n!(51, "env_end"),
        exit_code: n!(52, "exit_code"),
    })
}

/// Parse the text of `/proc/PID/stat` or `/proc/PID/task/TID/stat`.
///
/// Requires all 52 fields (Linux 3.5+).
pub fn parse_stat(text: &str) -> Result<Stat> {
    stat_inner(text).map_err(|e| e.at("stat"))
}

// ---------------------------------------------------------------------------
// fdinfo
// ---------------------------------------------------------------------------

/// `/proc/PID/fdinfo/FD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdInfo {
    /// `pos:` file offset.
    pub pos: u64,
    /// `flags:` the `O_*` open flags (printed in octal), including
    /// `O_CLOEXEC` (`0o2000000`) for the descriptor.
    pub flags: u32,
    /// `mnt_id:` id of the mount (as in `mountinfo`) the file lives on.
    pub mnt_id: u32,
    /// `ino:` inode number (Linux 5.14+).
    pub ino: u64,
    /// Every other line, in order, as `(key, value)` split at the first
    /// `:` and trimmed: e.g. `("eventfd-count", "5")`,
    /// `("tfd", "7 events:       19 data:                7  pos:0 ino:40e sdev:10")`,
    /// `("inotify wd", "1 ino:3c4a7 sdev:fe00000 mask:300 ...")`,
    /// `("sigmask", "0000000000000802")`, `("it_value", "(99, 479118890)")`,
    /// `("tty-index", "3")`. A line without `:` is kept as `(line, "")`.
    pub extra: Vec<(String, String)>,
}

impl FdInfo {
    /// The value of the first extra line with this key.
    pub fn extra_value(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// For record lines like epoll's `tfd:` or inotify's `inotify wd:`,
    /// iterate over all lines with this key, each split into its
    /// `key:value` tokens. The first pair is `(key, first value)`, e.g.
    /// `tfd: 7 events: 19 data: 7 pos:0 ino:40e sdev:10` gives
    /// `[("tfd","7"), ("events","19"), ("data","7"), ("pos","0"),
    /// ("ino","40e"), ("sdev","10")]`. Values are single tokens, so this is
    /// not meant for lines like `it_value: (99, 479118890)`.
    pub fn extra_records<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Iterator<Item = Vec<(&'a str, &'a str)>> + 'a {
        self.extra
            .iter()
            .filter(move |(k, _)| k == key)
            .map(move |(k, v)| {
                let mut out = Vec::new();
                let mut toks = v.split_whitespace();
                if let Some(first) = toks.next() {
                    out.push((k.as_str(), first));
                }
                let mut pending: Option<&str> = None;
                for t in toks {
                    if let Some(pk) = pending.take() {
                        out.push((pk, t));
                    } else if let Some(pk) = t.strip_suffix(':') {
                        pending = Some(pk);
                    } else if let Some((a, b)) = t.split_once(':') {
                        out.push((a, b));
                    } else {
                        out.push((t, ""));
                    }
                }
                if let Some(pk) = pending {
                    out.push((pk, ""));
                }
                out
            })
    }
}

fn fdinfo_inner(text: &str) -> PResult<FdInfo> {
    let mut pos = None;
    let mut flags = None;
    let mut mnt_id = None;
    let mut ino = None;
    let mut extra = Vec::new();
    for (ln, line) in numbered_lines(text) {
        let Some((key, v)) = key_value(line) else {
            extra.push((line.to_owned(), String::new()));
            continue;
        };
        match key {
            "pos" if pos.is_none() => pos = Some(num(v, ln, key)?),
            "flags" if flags.is_none() => {
                flags = Some(
                    u32::from_str_radix(v, 8)
                        .map_err(|_| PErr::new(ln, format!("bad octal flags {v:?}")))?,
                )
            }
            "mnt_id" if mnt_id.is_none() => mnt_id = Some(num(v, ln, key)?),
            "ino" if ino.is_none() => ino = Some(num(v, ln, key)?),
            _ => extra.push((key.to_owned(), v.to_owned())),
        }
    }
    Ok(FdInfo {
        pos: req(pos, "pos")?,
        flags: req(flags, "flags")?,
        mnt_id: req(mnt_id, "mnt_id")?,
        ino: req(ino, "ino")?,
        extra,
    })
}

/// Parse the text of `/proc/PID/fdinfo/FD`.
pub fn parse_fdinfo(text: &str) -> Result<FdInfo> {
    fdinfo_inner(text).map_err(|e| e.at("fdinfo"))
}

// ---------------------------------------------------------------------------
// limits
// ---------------------------------------------------------------------------

/// One row of `/proc/PID/limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// The `RLIMIT_*` number for this architecture (`libc::RLIMIT_*`).
    pub resource: i32,
    /// Soft limit; `unlimited` is [`RLIM_INFINITY`].
    pub soft: u64,
    /// Hard limit; `unlimited` is [`RLIM_INFINITY`].
    pub hard: u64,
}

/// `RLIM_INFINITY` as printed `unlimited` in `limits`.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// Row names of `/proc/PID/limits` (`lnames[]` in `fs/proc/base.c`) with
/// their resource numbers and units.
pub const LIMIT_NAMES: [(&str, i32, &str); 16] = [
    ("Max cpu time", libc::RLIMIT_CPU as i32, "seconds"),
    ("Max file size", libc::RLIMIT_FSIZE as i32, "bytes"),
    ("Max data size", libc::RLIMIT_DATA as i32, "bytes"),
    ("Max stack size", libc::RLIMIT_STACK as i32, "bytes"),
    ("Max core file size", libc::RLIMIT_CORE as i32, "bytes"),
    ("Max resident set", libc::RLIMIT_RSS as i32, "bytes"),
    ("Max processes", libc::RLIMIT_NPROC as i32, "processes"),
    ("Max open files", libc::RLIMIT_NOFILE as i32, "files"),
    ("Max locked memory", libc::RLIMIT_MEMLOCK as i32, "bytes"),
    ("Max address space", libc::RLIMIT_AS as i32, "bytes"),
    ("Max file locks", libc::RLIMIT_LOCKS as i32, "locks"),
    (
        "Max pending signals",
        libc::RLIMIT_SIGPENDING as i32,
        "signals",
    ),
    ("Max msgqueue size", libc::RLIMIT_MSGQUEUE as i32, "bytes"),
    ("Max nice priority", libc::RLIMIT_NICE as i32, ""),
    ("Max realtime priority", libc::RLIMIT_RTPRIO as i32, ""),
    ("Max realtime timeout", libc::RLIMIT_RTTIME as i32, "us"),
];

fn limit_value(s: &str, ln: usize) -> PResult<u64> {
    if s == "unlimited" {
        Ok(RLIM_INFINITY)
    } else {
        num(s, ln, "limit")
    }
}

fn limits_inner(text: &str) -> PResult<Vec<Limit>> {
    let mut out = Vec::new();
    for (ln, line) in numbered_lines(text) {
        if line.trim().is_empty() || (ln == 1 && line.starts_with("Limit ")) {
            continue;
        }
        let toks: Vec<&str> = line.split_whitespace().collect();
        // The name is the words before the first value.
        let first_val = toks
            .iter()
            .position(|t| *t == "unlimited" || t.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| PErr::new(ln, format!("no limit values in {line:?}")))?;
        if toks.len() < first_val + 2 {
            return Err(PErr::new(ln, format!("missing hard limit in {line:?}")));
        }
        let name = toks[..first_val].join(" ");
        let Some(&(_, resource, _)) = LIMIT_NAMES.iter().find(|(n, _, _)| *n == name) else {
            tracing::warn!(row = %name, "unknown row in /proc limits, skipped");
            continue;
        };
        out.push(Limit {
            resource,
            soft: limit_value(toks[first_val], ln)?,
            hard: limit_value(toks[first_val + 1], ln)?,
        });
    }
    Ok(out)
}

/// Parse the text of `/proc/PID/limits`. Unknown rows (from a future kernel)
/// are skipped with a warning.
pub fn parse_limits(text: &str) -> Result<Vec<Limit>> {
    limits_inner(text).map_err(|e| e.at("limits"))
}

// ---------------------------------------------------------------------------
// timers
// ---------------------------------------------------------------------------

/// How a POSIX timer notifies on expiry (`notify:` line of
/// `/proc/PID/timers`, printed as `KIND/pid.N` or `KIND/tid.N`). The ids are
/// in the pid namespace of the reader (of `/proc`'s mount).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerNotify {
    /// `SIGEV_SIGNAL` to the process: `signal/pid.N`.
    Signal {
        /// Target process.
        pid: i32,
    },
    /// `SIGEV_SIGNAL | SIGEV_THREAD_ID` (`SIGEV_THREAD_ID`) to one thread:
    /// `signal/tid.N`. This is also what glibc's `SIGEV_THREAD` timers use
    /// internally (they target glibc's helper thread).
    Thread {
        /// Target thread.
        tid: i32,
    },
    /// `SIGEV_NONE`: no notification, `none/pid.N`.
    None {
        /// Owning process.
        pid: i32,
    },
    /// Raw `SIGEV_THREAD` passed directly to the kernel (the kernel treats
    /// it like `SIGEV_SIGNAL`): `thread/pid.N`.
    SigevThread {
        /// Target process.
        pid: i32,
    },
}

impl TimerNotify {
    /// The `sigev_notify` value to pass to `timer_create` on restore.
    pub fn sigev_notify(&self) -> i32 {
        match self {
            TimerNotify::Signal { .. } => libc::SIGEV_SIGNAL,
            TimerNotify::Thread { .. } => libc::SIGEV_THREAD_ID,
            TimerNotify::None { .. } => libc::SIGEV_NONE,
            TimerNotify::SigevThread { .. } => libc::SIGEV_THREAD,
        }
    }

    /// The process or thread id printed after `pid.`/`tid.`.
    pub fn target(&self) -> i32 {
        match *self {
            TimerNotify::Signal { pid }
            | TimerNotify::None { pid }
            | TimerNotify::SigevThread { pid } => pid,
            TimerNotify::Thread { tid } => tid,
        }
    }
}

/// One POSIX timer from `/proc/PID/timers` (needs `CONFIG_CHECKPOINT_RESTORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PosixTimer {
    /// `ID:` the `timer_t` value the process sees.
    pub id: i32,
    /// Signal number from `signal: N/VALUE` (0 for `SIGEV_NONE`).
    pub signal: i32,
    /// `sigev_value` from `signal: N/VALUE` (hex, `sival_ptr`).
    pub sigev_value: u64,
    /// `notify:`.
    pub notify: TimerNotify,
    /// `ClockID:` (negative values are CPU-time clocks of a pid/tid, e.g. -6
    /// is `CLOCK_PROCESS_CPUTIME_ID` of the caller).
    pub clock_id: i32,
}

fn parse_notify(v: &str, ln: usize) -> PResult<TimerNotify> {
    let bad = || PErr::new(ln, format!("bad notify {v:?}"));
    let (kind, target) = v.split_once('/').ok_or_else(bad)?;
    let (who, id) = target.split_once('.').ok_or_else(bad)?;
    let id: i32 = num(id, ln, "notify target")?;
    match (kind, who) {
        ("signal", "pid") => Ok(TimerNotify::Signal { pid: id }),
        ("signal", "tid") => Ok(TimerNotify::Thread { tid: id }),
        ("none", "pid") => Ok(TimerNotify::None { pid: id }),
        ("thread", "pid") => Ok(TimerNotify::SigevThread { pid: id }),
        _ => Err(bad()),
    }
}

fn timers_inner(text: &str) -> PResult<Vec<PosixTimer>> {
    struct Partial {
        line: usize,
        id: i32,
        signal: Option<(i32, u64)>,
        notify: Option<TimerNotify>,
        clock_id: Option<i32>,
    }
    fn finish(p: Partial) -> PResult<PosixTimer> {
        let miss = |what: &str| PErr::new(p.line, format!("timer {}: missing {what}", p.id));
        let (signal, sigev_value) = p.signal.ok_or_else(|| miss("signal:"))?;
        Ok(PosixTimer {
            id: p.id,
            signal,
            sigev_value,
            notify: p.notify.ok_or_else(|| miss("notify:"))?,
            clock_id: p.clock_id.ok_or_else(|| miss("ClockID:"))?,
        })
    }

    let mut out = Vec::new();
    let mut cur: Option<Partial> = None;
    for (ln, line) in numbered_lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        let (key, v) =
            key_value(line).ok_or_else(|| PErr::new(ln, format!("unexpected line {line:?}")))?;
        if key == "ID" {
            if let Some(p) = cur.take() {
                out.push(finish(p)?);
            }
            cur = Some(Partial {
                line: ln,
                id: num(v, ln, "timer ID")?,
                signal: None,
                notify: None,
                clock_id: None,
            });
            continue;
        }
        let p = cur
            .as_mut()
            .ok_or_else(|| PErr::new(ln, "field before the first ID:"))?;
        match key {
            "signal" => {
                let (s, val) = v
                    .split_once('/')
                    .ok_or_else(|| PErr::new(ln, format!("bad signal {v:?}")))?;
                p.signal = Some((num(s, ln, "signal")?, hex_u64(val, ln, "sigev_value")?));
            }
            "notify" => p.notify = Some(parse_notify(v, ln)?),
            "ClockID" => p.clock_id = Some(num(v, ln, "ClockID")?),
            _ => {}
        }
    }
    if let Some(p) = cur {
        out.push(finish(p)?);
    }
    Ok(out)
}

/// Parse the text of `/proc/PID/timers`. Timers are returned in file order
/// (the kernel lists them newest first); sort by `id` if needed.
pub fn parse_timers(text: &str) -> Result<Vec<PosixTimer>> {
    timers_inner(text).map_err(|e| e.at("timers"))
}

// ---------------------------------------------------------------------------
// mountinfo
// ---------------------------------------------------------------------------

/// One line of `/proc/PID/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MountInfo {
    /// (1) unique mount id.
    pub mount_id: u32,
    /// (2) id of the parent mount (itself for the root of the tree).
    pub parent_id: u32,
    /// (3) `st_dev` major of files on this mount.
    pub major: u32,
    /// (3) `st_dev` minor.
    pub minor: u32,
    /// (4) root of the mount within its filesystem, unescaped.
    pub root: String,
    /// (5) mount point relative to the reader's root, unescaped.
    pub mount_point: String,
    /// (6) per-mount options (`rw,nosuid,relatime`), as printed; split with
    /// [`split_mount_options`].
    pub mount_options: String,
    /// (7) optional fields: `shared:N`, `master:N`, `propagate_from:N`,
    /// `unbindable`.
    pub optional_fields: Vec<String>,
    /// (9) filesystem type (`ext4`, `fuse.sshfs`, ...), unescaped.
    pub fs_type: String,
    /// (10) mount source (device or name), unescaped; may be empty.
    pub source: String,
    /// (11) per-superblock options, as printed (option values may contain
    /// escaped `,` as `\054`); split with [`split_mount_options`].
    pub super_options: String,
}

impl MountInfo {
    fn tagged(&self, tag: &str) -> Option<u32> {
        self.optional_fields
            .iter()
            .find_map(|f| f.strip_prefix(tag)?.strip_prefix(':')?.parse().ok())
    }

    /// Peer group id if the mount is shared (`shared:N`).
    pub fn shared_group(&self) -> Option<u32> {
        self.tagged("shared")
    }

    /// Master peer group if the mount is a slave (`master:N`).
    pub fn master_group(&self) -> Option<u32> {
        self.tagged("master")
    }

    /// `propagate_from:N`.
    pub fn propagate_from(&self) -> Option<u32> {
        self.tagged("propagate_from")
    }

    /// True when the mount is unbindable.
    pub fn unbindable(&self) -> bool {
        self.optional_fields.iter().any(|f| f == "unbindable")
    }
}

/// Undo the kernel's `\ooo` octal escaping (used for space, tab, newline,
/// backslash and, in some fields, `#` and `,`). Invalid sequences are kept
/// verbatim.
pub fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Split a mount option string at `,` and unescape each option.
pub fn split_mount_options(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',').map(unescape_octal).collect()
}

fn mountinfo_line(line: &str, ln: usize) -> PResult<MountInfo> {
    // Fields are separated by exactly one space; a field (the source) can be
    // empty, so split on ' ' rather than on runs of whitespace.
    let f: Vec<&str> = line.split(' ').collect();
    let sep = f
        .iter()
        .skip(6)
        .position(|t| *t == "-")
        .map(|p| p + 6)
        .ok_or_else(|| PErr::new(ln, "no ' - ' separator"))?;
    if f.len() < sep + 4 {
        return Err(PErr::new(ln, "missing fields after ' - '"));
    }
    let (maj, min) = f[2]
        .split_once(':')
        .ok_or_else(|| PErr::new(ln, format!("bad major:minor {:?}", f[2])))?;
    Ok(MountInfo {
        mount_id: num(f[0], ln, "mount id")?,
        parent_id: num(f[1], ln, "parent id")?,
        major: num(maj, ln, "major")?,
        minor: num(min, ln, "minor")?,
        root: unescape_octal(f[3]),
        mount_point: unescape_octal(f[4]),
        mount_options: f[5].to_owned(),
        optional_fields: f[6..sep]
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| (*s).to_owned())
            .collect(),
        fs_type: unescape_octal(f[sep + 1]),
        source: unescape_octal(f[sep + 2]),
        // Anything after (should not happen) stays with the super options.
        super_options: f[sep + 3..].join(" "),
    })
}

fn mountinfo_inner(text: &str) -> PResult<Vec<MountInfo>> {
    numbered_lines(text)
        .map(|(ln, l)| mountinfo_line(l, ln))
        .collect()
}

/// Parse the text of `/proc/PID/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>> {
    mountinfo_inner(text).map_err(|e| e.at("mountinfo"))
}

// ---------------------------------------------------------------------------
// children, auxv, pagemap
// ---------------------------------------------------------------------------

/// Parse `/proc/PID/task/TID/children` (space-separated pids, trailing
/// space). Tokens that are not numbers are skipped with a warning.
pub fn parse_children(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|t| match t.parse() {
            Ok(p) => Some(p),
            Err(_) => {
                tracing::warn!(token = t, "non-numeric token in /proc children, skipped");
                None
            }
        })
        .collect()
}

/// `AT_NULL`, the auxv terminator.
pub const AT_NULL: u64 = 0;

/// Parse `/proc/PID/auxv`: native-endian `(type, value)` word pairs up to
/// (not including) `AT_NULL`. A trailing partial pair is ignored. Assumes
/// the target uses the reader's word size (8 bytes on 64-bit); a 32-bit
/// (compat) task's auxv has 4-byte words and is not handled here.
pub fn parse_auxv(bytes: &[u8]) -> Vec<(u64, u64)> {
    const W: usize = std::mem::size_of::<usize>();
    let word = |b: &[u8]| -> u64 {
        let mut a = [0u8; W];
        a.copy_from_slice(b);
        usize::from_ne_bytes(a) as u64
    };
    let mut out = Vec::new();
    for pair in bytes.chunks_exact(2 * W) {
        let key = word(&pair[..W]);
        if key == AT_NULL {
            break;
        }
        out.push((key, word(&pair[W..])));
    }
    out
}

/// One 64-bit `/proc/PID/pagemap` entry. Bit layout from the kernel's
/// `Documentation/admin-guide/mm/pagemap.rst`:
///
/// * bits 0-54: page frame number if present (zeroed without
///   `CAP_SYS_ADMIN` since 4.2)
/// * bits 0-4: swap type if swapped; bits 5-54: swap offset if swapped
/// * bit 55: pte is soft-dirty
/// * bit 56: page exclusively mapped (since 4.2)
/// * bit 57: pte is uffd-wp write-protected (since 5.13)
/// * bit 58: pte is a guard region (since 6.15)
/// * bits 59-60: zero
/// * bit 61: page is a file page or shared anonymous (since 3.5)
/// * bit 62: page swapped
/// * bit 63: page present
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PagemapEntry(pub u64);

/// Size of one pagemap entry in bytes.
pub const PAGEMAP_ENTRY_SIZE: u64 = 8;
/// Bits 0-54: PFN (if present) or swap type/offset (if swapped).
pub const PM_PFN_MASK: u64 = (1 << 55) - 1;
/// Bits 0-4: swap type (if swapped).
pub const PM_SWAP_TYPE_MASK: u64 = 0x1f;
/// Shift of the swap offset (bits 5-54).
pub const PM_SWAP_OFFSET_SHIFT: u32 = 5;
/// Bit 55: soft-dirty.
pub const PM_SOFT_DIRTY: u64 = 1 << 55;
/// Bit 56: page exclusively mapped.
pub const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
/// Bit 57: pte is uffd-wp write-protected.
pub const PM_UFFD_WP: u64 = 1 << 57;
/// Bit 58: pte is a guard region (`MADV_GUARD_INSTALL`).
pub const PM_GUARD_REGION: u64 = 1 << 58;
/// Bit 61: file page or shared anonymous.
pub const PM_FILE: u64 = 1 << 61;
/// Bit 62: swapped.
pub const PM_SWAP: u64 = 1 << 62;
/// Bit 63: present.
pub const PM_PRESENT: u64 = 1 << 63;

impl PagemapEntry {
    /// Bit 63: the page is in RAM.
    pub fn present(self) -> bool {
        self.0 & PM_PRESENT != 0
    }

    /// Bit 62: the page is in swap (a pte marker — userfaultfd write-protect on an empty
    /// pte, a guard region — also sets bit 62 but holds no data: not counted).
    pub fn swapped(self) -> bool {
        self.0 & PM_SWAP != 0 && !self.marker()
    }

    /// A pte marker: bit 62 with the last swap type (`SWP_PTE_MARKER`), no page behind it.
    pub fn marker(self) -> bool {
        self.0 & PM_SWAP != 0 && !self.present() && self.0 & PM_SWAP_TYPE_MASK == PM_SWAP_TYPE_MASK
    }

    /// Bit 61: file-backed page or shared anonymous page.
    pub fn file_or_shared(self) -> bool {
        self.0 & PM_FILE != 0
    }

    /// Bit 58: guard region.
    pub fn guard_region(self) -> bool {
        self.0 & PM_GUARD_REGION != 0
    }

    /// Bit 57: write-protected by userfaultfd.
    pub fn uffd_wp(self) -> bool {
        self.0 & PM_UFFD_WP != 0
    }

    /// Bit 56: mapped only by this process.
    pub fn exclusive(self) -> bool {
        self.0 & PM_MMAP_EXCLUSIVE != 0
    }

    /// Bit 55: written since soft-dirty bits were last cleared.
    pub fn soft_dirty(self) -> bool {
        self.0 & PM_SOFT_DIRTY != 0
    }

    /// Bits 0-54: page frame number, meaningful only when [`present`]
    /// (and 0 without `CAP_SYS_ADMIN`).
    ///
    /// [`present`]: PagemapEntry::present
    pub fn pfn(self) -> u64 {
        self.0 & PM_PFN_MASK
    }

    /// Bits 0-4: swap type, meaningful only when [`swapped`].
    ///
    /// [`swapped`]: PagemapEntry::swapped
    pub fn swap_type(self) -> u64 {
        self.0 & PM_SWAP_TYPE_MASK
    }

    /// Bits 5-54: swap offset, meaningful only when [`swapped`].
    ///
    /// [`swapped`]: PagemapEntry::swapped
    pub fn swap_offset(self) -> u64 {
        (self.0 & PM_PFN_MASK) >> PM_SWAP_OFFSET_SHIFT
    }
}

// ---------------------------------------------------------------------------
// readers
// ---------------------------------------------------------------------------

fn proc_path(pid: i32, rest: &str) -> String {
    format!("/proc/{pid}/{rest}")
}

fn io_err(path: &str, source: io::Error) -> ProcError {
    ProcError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_bytes(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io_err(path, e))
}

/// Read a text file, refusing invalid UTF-8 with the offending line.
fn read_text(path: &str) -> Result<String> {
    let bytes = read_bytes(path)?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        ProcError::Parse {
            path: path.to_owned(),
            line,
            what: "invalid UTF-8 (non-UTF-8 path?)".to_owned(),
        }
    })
}

/// Read a text file whose only possibly non-UTF-8 part is the task name.
fn read_text_lossy(path: &str) -> Result<String> {
    let bytes = read_bytes(path)?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// `stat`/`status` are never empty for a task that still exists; an empty
/// read means it went away under us. Report that as `ESRCH`.
fn nonempty(path: &str, s: String) -> Result<String> {
    if s.is_empty() {
        Err(io_err(path, io::Error::from_raw_os_error(libc::ESRCH)))
    } else {
        Ok(s)
    }
}

fn read_link(path: &str) -> Result<PathBuf> {
    std::fs::read_link(path).map_err(|e| io_err(path, e))
}

fn list_numeric_dir(path: &str) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(path).map_err(|e| io_err(path, e))? {
        let ent = ent.map_err(|e| io_err(path, e))?;
        if let Some(n) = ent.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Read and parse `/proc/PID/maps`. An empty list means the task has no
/// address space (kernel thread, zombie, or it exited while being read).
pub fn read_maps(pid: i32) -> Result<Vec<MapEntry>> {
    let path = proc_path(pid, "maps");
    maps_inner(&read_text(&path)?).map_err(|e| e.at(&path))
}

/// Read and parse `/proc/PID/smaps`.
pub fn read_smaps(pid: i32) -> Result<Vec<SmapsEntry>> {
    let path = proc_path(pid, "smaps");
    smaps_inner(&read_text(&path)?).map_err(|e| e.at(&path))
}

fn status_at(path: String) -> Result<Status> {
    let text = nonempty(&path, read_text_lossy(&path)?)?;
    status_inner(&text).map_err(|e| e.at(&path))
}

/// Read and parse `/proc/PID/status` (process-wide view; the signal masks
/// `SigPnd`/`SigBlk` are those of the thread-group leader).
pub fn read_status(pid: i32) -> Result<Status> {
    status_at(proc_path(pid, "status"))
}

/// Read and parse `/proc/PID/task/TID/status` (per-thread signal masks).
pub fn read_task_status(pid: i32, tid: i32) -> Result<Status> {
    status_at(proc_path(pid, &format!("task/{tid}/status")))
}

fn stat_at(path: String) -> Result<Stat> {
    let text = nonempty(&path, read_text_lossy(&path)?)?;
    stat_inner(&text).map_err(|e| e.at(&path))
}

/// Read and parse `/proc/PID/stat`.
pub fn read_stat(pid: i32) -> Result<Stat> {
    stat_at(proc_path(pid, "stat"))
}

/// Read and parse `/proc/PID/task/TID/stat`.
pub fn read_task_stat(pid: i32, tid: i32) -> Result<Stat> {
    stat_at(proc_path(pid, &format!("task/{tid}/stat")))
}

/// Read and parse `/proc/PID/fdinfo/FD`.
pub fn read_fdinfo(pid: i32, fd: i32) -> Result<FdInfo> {
    let path = proc_path(pid, &format!("fdinfo/{fd}"));
    fdinfo_inner(&read_text_lossy(&path)?).map_err(|e| e.at(&path))
}

/// The open descriptors of the process (`/proc/PID/fd`), sorted.
pub fn list_fds(pid: i32) -> Result<Vec<i32>> {
    list_numeric_dir(&proc_path(pid, "fd"))
}

/// readlink `/proc/PID/fd/FD`: a path (with ` (deleted)` if unlinked) or a
/// pseudo-name like `pipe:[6909]`, `socket:[123]`, `anon_inode:[eventfd]`.
pub fn read_fd_link(pid: i32, fd: i32) -> Result<PathBuf> {
    read_link(&proc_path(pid, &format!("fd/{fd}")))
}

/// The thread ids of the process (`/proc/PID/task`), sorted.
pub fn list_tasks(pid: i32) -> Result<Vec<i32>> {
    list_numeric_dir(&proc_path(pid, "task"))
}

/// Children of thread `tid` (`/proc/PID/task/TID/children`, needs
/// `CONFIG_PROC_CHILDREN`). Children forked by other threads of the process
/// are listed under those threads.
pub fn read_children(pid: i32, tid: i32) -> Result<Vec<i32>> {
    let path = proc_path(pid, &format!("task/{tid}/children"));
    Ok(parse_children(&read_text_lossy(&path)?))
}

/// Read and parse `/proc/PID/limits`.
pub fn read_limits(pid: i32) -> Result<Vec<Limit>> {
    let path = proc_path(pid, "limits");
    limits_inner(&read_text_lossy(&path)?).map_err(|e| e.at(&path))
}

/// Read and parse `/proc/PID/timers` (needs `CONFIG_CHECKPOINT_RESTORE`).
pub fn read_timers(pid: i32) -> Result<Vec<PosixTimer>> {
    let path = proc_path(pid, "timers");
    timers_inner(&read_text_lossy(&path)?).map_err(|e| e.at(&path))
}

/// Read and parse `/proc/PID/mountinfo`.
pub fn read_mountinfo(pid: i32) -> Result<Vec<MountInfo>> {
    let path = proc_path(pid, "mountinfo");
    mountinfo_inner(&read_text(&path)?).map_err(|e| e.at(&path))
}

/// Read and parse `/proc/PID/auxv`.
pub fn read_auxv(pid: i32) -> Result<Vec<(u64, u64)>> {
    Ok(parse_auxv(&read_bytes(&proc_path(pid, "auxv"))?))
}

/// Raw `/proc/PID/cmdline` (NUL-separated argv; empty for zombies and
/// kernel threads).
pub fn read_cmdline(pid: i32) -> Result<Vec<u8>> {
    read_bytes(&proc_path(pid, "cmdline"))
}

/// Raw `/proc/PID/environ` (NUL-separated).
pub fn read_environ(pid: i32) -> Result<Vec<u8>> {
    read_bytes(&proc_path(pid, "environ"))
}

/// `/proc/PID/comm`: the task name as raw bytes, without the trailing
/// newline (at most 15 bytes; may be any bytes but NUL).
pub fn read_comm(pid: i32) -> Result<Vec<u8>> {
    let mut b = read_bytes(&proc_path(pid, "comm"))?;
    if b.last() == Some(&b'\n') {
        b.pop();
    }
    Ok(b)
}

/// readlink `/proc/PID/cwd`.
pub fn read_cwd(pid: i32) -> Result<PathBuf> {
    read_link(&proc_path(pid, "cwd"))
}

/// readlink `/proc/PID/root`.
pub fn read_root(pid: i32) -> Result<PathBuf> {
    read_link(&proc_path(pid, "root"))
}

/// readlink `/proc/PID/exe`.
pub fn read_exe(pid: i32) -> Result<PathBuf> {
    read_link(&proc_path(pid, "exe"))
}

/// An open `/proc/PID/pagemap`, for repeated reads of one process.
#[derive(Debug)]
pub struct Pagemap {
    file: File,
    path: String,
}

impl Pagemap {
    /// Open `/proc/PID/pagemap` (needs `PTRACE_MODE_READ` on the task).
    pub fn open(pid: i32) -> Result<Pagemap> {
        let path = proc_path(pid, "pagemap");
        let file = File::open(&path).map_err(|e| io_err(&path, e))?;
        Ok(Pagemap { file, path })
    }

    /// Replace `out` with the `npages` entries for the pages starting at
    /// `start_addr` (rounded down to a page), read with `pread` at
    /// `(start_addr / PAGE_SIZE) * 8`.
    ///
    /// Reading past the end of the user address space (e.g. `[vsyscall]`)
    /// hits end-of-file and fails with `UnexpectedEof`.
    pub fn read(&self, start_addr: u64, npages: usize, out: &mut Vec<u64>) -> Result<()> {
        const CHUNK_PAGES: usize = 64 * 1024;
        out.clear();
        out.reserve(npages);
        let mut buf = vec![0u8; npages.min(CHUNK_PAGES) * PAGEMAP_ENTRY_SIZE as usize];
        let mut offset = (start_addr / crate::PAGE_SIZE) * PAGEMAP_ENTRY_SIZE;
        let mut left = npages;
        while left > 0 {
            let n = left.min(CHUNK_PAGES);
            let bytes = &mut buf[..n * PAGEMAP_ENTRY_SIZE as usize];
            self.file
                .read_exact_at(bytes, offset)
                .map_err(|e| io_err(&self.path, e))?;
            out.extend(bytes.chunks_exact(PAGEMAP_ENTRY_SIZE as usize).map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_ne_bytes(a)
            }));
            offset += bytes.len() as u64;
            left -= n;
        }
        Ok(())
    }
}

/// Read `npages` pagemap entries of `pid` starting at `start_addr` into
/// `out` (replacing its content). See [`Pagemap::read`]; use [`Pagemap`]
/// directly to avoid reopening the file for every VMA.
pub fn read_pagemap(pid: i32, start_addr: u64, npages: usize, out: &mut Vec<u64>) -> Result<()> {
    Pagemap::open(pid)?.read(start_addr, npages, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fmt::Write as _;

    // ----- samples captured on the development machine (Linux 6.18) -----

    /// `/proc/PID/maps` of a C test program that maps a memfd, /dev/zero
    /// MAP_SHARED, MAP_SHARED|MAP_ANONYMOUS, SysV shm, a file with spaces in
    /// its name, an unlinked file and a MAP_GROWSDOWN region.
    const MAPS: &str = r#"55ce95ebf000-55ce95ec0000 r--p 00000000 fe:00 10010799                   /tmp/procsamples/t
55ce95ec0000-55ce95ec1000 r-xp 00001000 fe:00 10010799                   /tmp/procsamples/t
55ce95ec1000-55ce95ec2000 r--p 00002000 fe:00 10010799                   /tmp/procsamples/t
55ce95ec2000-55ce95ec3000 r--p 00002000 fe:00 10010799                   /tmp/procsamples/t
55ce95ec3000-55ce95ec4000 rw-p 00003000 fe:00 10010799                   /tmp/procsamples/t
55cec3012000-55cec3033000 rw-p 00000000 00:00 0                          [heap]
7fd008b73000-7fd008c73000 rw-p 00000000 00:00 0 
7fd008c73000-7fd008c76000 rw-p 00000000 00:00 0 
7fd008c76000-7fd008c9c000 r--p 00000000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7fd008c9c000-7fd008df2000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7fd008df2000-7fd008e45000 r--p 0017c000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7fd008e45000-7fd008e49000 r--p 001cf000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7fd008e49000-7fd008e4b000 rw-p 001d3000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7fd008e4b000-7fd008e58000 rw-p 00000000 00:00 0 
7fd008e5a000-7fd008e5b000 r--p 00000000 fe:00 10010796                   /tmp/procsamples/gone (deleted)
7fd008e5b000-7fd008e5c000 r--p 00000000 fe:00 10010795                   /tmp/procsamples/file with spaces
7fd008e5c000-7fd008e5d000 rw-s 00000000 00:01 0                          /SYSV00000000 (deleted)
7fd008e5d000-7fd008e5e000 rw-s 00000000 00:01 26                         /dev/zero (deleted)
7fd008e5e000-7fd008e5f000 rw-s 00000000 00:01 25                         /dev/zero (deleted)
7fd008e5f000-7fd008e61000 rw-s 00000000 00:01 24                         /memfd:my memfd (deleted)
7fd008e61000-7fd008e63000 rw-p 00000000 00:00 0 
7fd008e63000-7fd008e67000 r--p 00000000 00:00 0                          [vvar]
7fd008e67000-7fd008e69000 r--p 00000000 00:00 0                          [vvar_vclock]
7fd008e69000-7fd008e6b000 r-xp 00000000 00:00 0                          [vdso]
7fd008e6b000-7fd008e6c000 r--p 00000000 fe:00 325843                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7fd008e6c000-7fd008e92000 r-xp 00001000 fe:00 325843                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7fd008e92000-7fd008e9c000 r--p 00027000 fe:00 325843                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7fd008e9c000-7fd008e9e000 r--p 00031000 fe:00 325843                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7fd008e9e000-7fd008ea0000 rw-p 00033000 fe:00 325843                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7ffe78c56000-7ffe78c77000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"#;

    /// Six entries of the same program's `/proc/PID/smaps`.
    const SMAPS: &str = r#"55ce95ebf000-55ce95ec0000 r--p 00000000 fe:00 10010799                   /tmp/procsamples/t
Size:                  4 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   4 kB
Pss:                   4 kB
Pss_Dirty:             4 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         4 kB
Referenced:            4 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
VmFlags: rd mr mw me 
7fd008b73000-7fd008c73000 rw-p 00000000 00:00 0 
Size:               1024 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   4 kB
Pss:                   4 kB
Pss_Dirty:             4 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         4 kB
Referenced:            4 kB
Anonymous:             4 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
VmFlags: rd wr mr mw me gd dc ac 
7fd008e5c000-7fd008e5d000 rw-s 00000000 00:01 0                          /SYSV00000000 (deleted)
Size:                  4 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   0 kB
Pss:                   0 kB
Pss_Dirty:             0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:            0 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
VmFlags: rd wr sh mr mw me ms 
7fd008e5f000-7fd008e61000 rw-s 00000000 00:01 24                         /memfd:my memfd (deleted)
Size:                  8 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   0 kB
Pss:                   0 kB
Pss_Dirty:             0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:            0 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
VmFlags: rd wr sh mr mw me ms 
7ffe78c56000-7ffe78c77000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                  12 kB
Pss:                  12 kB
Pss_Dirty:            12 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:        12 kB
Referenced:           12 kB
Anonymous:            12 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
VmFlags: rd wr mr mw me gd ac 
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
Size:                  4 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   0 kB
Pss:                   0 kB
Pss_Dirty:             0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:            0 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
VmFlags: ex 
"#;

    /// `/proc/PID/status` of the same program (SIGINT/SIGTERM ignored,
    /// timers queued signals).
    const STATUS: &str = r#"Name:	t
Umask:	0022
State:	S (sleeping)
Tgid:	4279
Ngid:	0
Pid:	4279
PPid:	1
TracerPid:	0
Uid:	0	0	0	0
Gid:	0	0	0	0
FDSize:	256
Groups:	 
NStgid:	4279
NSpid:	4279
NSpgid:	4269
NSsid:	3408
Kthread:	0
VmPeak:	    3528 kB
VmSize:	    3528 kB
VmLck:	       0 kB
VmPin:	       0 kB
VmHWM:	    1636 kB
VmRSS:	    1636 kB
RssAnon:	     104 kB
RssFile:	    1528 kB
RssShmem:	       4 kB
VmData:	     224 kB
VmStk:	    1156 kB
VmExe:	       4 kB
VmLib:	    1528 kB
VmPTE:	      48 kB
VmSwap:	       0 kB
HugetlbPages:	       0 kB
CoreDumping:	0
THP_enabled:	1
untag_mask:	0xffffffffffffffff
Threads:	1
SigQ:	4/96364
SigPnd:	0000000000000000
ShdPnd:	0000000000000000
SigBlk:	0000000000000000
SigIgn:	0000000000004006
SigCgt:	0000000000000000
CapInh:	0000000000000000
CapPrm:	000001fffeffffff
CapEff:	000001fffeffffff
CapBnd:	000001fffeffffff
CapAmb:	0000000000000000
NoNewPrivs:	0
Seccomp:	0
Seccomp_filters:	0
Speculation_Store_Bypass:	vulnerable
SpeculationIndirectBranch:	always enabled
Cpus_allowed:	3
Cpus_allowed_list:	0-1
Mems_allowed:	00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000001
Mems_allowed_list:	0
voluntary_ctxt_switches:	1
nonvoluntary_ctxt_switches:	1
"#;

    /// `status` of `sleep` copied to "we ird) (name", run under
    /// `setpriv --no-new-privs --groups 10,20,1000 --reuid 1000 --regid 1001`.
    const STATUS2: &str = r#"Name:	we ird) (name
Umask:	0022
State:	S (sleeping)
Tgid:	7911
Ngid:	0
Pid:	7911
PPid:	7909
TracerPid:	0
Uid:	1000	1000	1000	1000
Gid:	1001	1001	1001	1001
FDSize:	256
Groups:	10 20 1000 
NStgid:	7911
NSpid:	7911
NSpgid:	7909
NSsid:	3408
Kthread:	0
VmPeak:	    2920 kB
VmSize:	    2920 kB
VmLck:	       0 kB
VmPin:	       0 kB
VmHWM:	    1740 kB
VmRSS:	    1740 kB
RssAnon:	     108 kB
RssFile:	    1632 kB
RssShmem:	       0 kB
VmData:	     224 kB
VmStk:	     132 kB
VmExe:	      20 kB
VmLib:	    1528 kB
VmPTE:	      48 kB
VmSwap:	       0 kB
HugetlbPages:	       0 kB
CoreDumping:	0
THP_enabled:	1
untag_mask:	0xffffffffffffffff
Threads:	1
SigQ:	0/96364
SigPnd:	0000000000000000
ShdPnd:	0000000000000000
SigBlk:	0000000000000000
SigIgn:	0000000000000006
SigCgt:	0000000000000000
CapInh:	0000000000000000
CapPrm:	0000000000000000
CapEff:	0000000000000000
CapBnd:	000001fffeffffff
CapAmb:	0000000000000000
NoNewPrivs:	1
Seccomp:	0
Seccomp_filters:	0
Speculation_Store_Bypass:	vulnerable
SpeculationIndirectBranch:	always enabled
Cpus_allowed:	3
Cpus_allowed_list:	0-1
Mems_allowed:	00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000001
Mems_allowed_list:	0
voluntary_ctxt_switches:	7
nonvoluntary_ctxt_switches:	1
"#;

    const STAT: &str = r#"4279 (t) S 1 4269 3408 0 -1 4194304 120 0 0 0 0 0 0 0 20 0 1 0 24480 3612672 382 18446744073709551615 94345766895616 94345766897633 140730924751584 0 0 0 0 16390 0 1 0 0 17 0 0 0 0 0 0 94345766907344 94345766908168 94346523254784 140730924755699 140730924755703 140730924755703 140730924756980 0
"#;
    const STAT2: &str = r#"7911 (we ird) (name) S 7909 7909 3408 0 -1 4194560 253 0 5 0 0 0 0 0 20 0 1 0 50740 2990080 392 18446744073709551615 93893600927744 93893600945673 140725664179232 0 0 0 0 6 0 1 0 0 17 0 0 0 0 0 0 93893600959760 93893600961024 93894470377472 140725664180939 140725664180958 140725664180958 140725664182248 0
"#;

    const LIMITS: &str = r#"Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             96364                96364                processes 
Max open files            20000                20000                files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       96364                96364                signals   
Max msgqueue size         819200               819200               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
"#;

    /// timer_create: SIGEV_SIGNAL (SIGRTMIN+1, value 0x1234abcd,
    /// CLOCK_MONOTONIC), SIGEV_THREAD_ID (SIGUSR1, 42, CLOCK_REALTIME),
    /// SIGEV_NONE (CLOCK_BOOTTIME), NULL sevp (CLOCK_PROCESS_CPUTIME_ID).
    const TIMERS: &str = r#"ID: 3
signal: 14/0000000000000000
notify: signal/pid.4279
ClockID: -6
ID: 2
signal: 0/0000000000000000
notify: none/pid.4279
ClockID: 7
ID: 1
signal: 10/000000000000002a
notify: signal/tid.4279
ClockID: 0
ID: 0
signal: 35/000000001234abcd
notify: signal/pid.4279
ClockID: 1
"#;

    const MOUNTINFO: &str = r#"22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334432k,nr_inodes=3083608,mode=755
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
28 27 0:25 / /mnt/sandboxing/model_tools_env/v1/python ro,nosuid,nodev,relatime - tmpfs model_tools_unavailable ro,size=4k,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
63 43 0:39 / /tmp/procsamples/mnt\040dir rw,relatime - tmpfs my\040src rw,size=1024k
64 43 0:39 /a\011tab /tmp/procsamples/m2 rw,relatime shared:1 - tmpfs my\040src rw,size=1024k
"#;

    const FDINFO_FILE: &str = "pos:\t100\nflags:\t0100002\nmnt_id:\t27\nino:\t10010795\n";
    const FDINFO_EVENTFD: &str = "pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1038\neventfd-count:                5\neventfd-id: 1\neventfd-semaphore: 0\n";
    const FDINFO_EPOLL: &str = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\ntfd:        7 events:       19 data:                7  pos:0 ino:40e sdev:10\n";
    const FDINFO_INOTIFY: &str = "pos:\t0\nflags:\t00\nmnt_id:\t17\nino:\t1038\ninotify wd:1 ino:3c4a7 sdev:fe00000 mask:300 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\n";
    const FDINFO_SIGNALFD: &str =
        "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\nsigmask:\t0000000000000802\n";
    const FDINFO_TIMERFD: &str = "pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1038\nclockid: 1\nticks: 0\nsettime flags: 00\nit_value: (99, 479118890)\nit_interval: (1, 0)\n";
    const FDINFO_MEMFD: &str = "pos:\t0\nflags:\t0100002\nmnt_id:\t0\nino:\t24\n";

    fn parse_err_line(e: ProcError) -> (String, usize, String) {
        match e {
            ProcError::Parse { path, line, what } => (path, line, what),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    // ----- maps -----

    #[test]
    fn maps_real_sample() {
        let m = parse_maps(MAPS).unwrap();
        assert_eq!(m.len(), 31);
        let first = &m[0];
        assert_eq!(
            *first,
            MapEntry {
                start: 0x55ce95ebf000,
                end: 0x55ce95ec0000,
                read: true,
                write: false,
                exec: false,
                shared: false,
                offset: 0,
                dev_major: 0xfe,
                dev_minor: 0,
                inode: 10010799,
                path: "/tmp/procsamples/t".into(),
            }
        );
        assert_eq!(first.size(), 4096);
        assert_eq!(first.file_path(), Some("/tmp/procsamples/t"));
        assert!(!first.deleted());
        assert!(m[1].exec && !m[1].write);
        assert_eq!(m[1].offset, 0x1000);

        let by_path = |p: &str| m.iter().find(|e| e.path == p).unwrap();
        let heap = by_path("[heap]");
        assert!(heap.is_pseudo() && heap.is_anonymous() && heap.file_path().is_none());

        let anon = &m[6];
        assert_eq!(anon.path, "");
        assert!(anon.is_anonymous() && !anon.is_pseudo());
        assert_eq!(anon.size(), 0x100000);

        let gone = by_path("/tmp/procsamples/gone (deleted)");
        assert!(gone.deleted());
        assert_eq!(gone.file_path(), Some("/tmp/procsamples/gone"));

        let spaces = by_path("/tmp/procsamples/file with spaces");
        assert!(!spaces.deleted());
        assert_eq!(spaces.inode, 10010795);

        let sysv = by_path("/SYSV00000000 (deleted)");
        assert!(sysv.shared && sysv.deleted() && !sysv.is_anonymous());
        assert_eq!((sysv.dev_major, sysv.dev_minor, sysv.inode), (0, 1, 0));
        assert_eq!(sysv.file_path(), Some("/SYSV00000000"));

        let zeros: Vec<_> = m
            .iter()
            .filter(|e| e.path == "/dev/zero (deleted)")
            .collect();
        assert_eq!(zeros.len(), 2);
        assert!(zeros.iter().all(|e| e.shared && e.write));

        let memfd = by_path("/memfd:my memfd (deleted)");
        assert_eq!(memfd.file_path(), Some("/memfd:my memfd"));
        assert_eq!(memfd.size(), 8192);

        for p in ["[vvar]", "[vvar_vclock]", "[vdso]", "[stack]"] {
            assert!(by_path(p).is_pseudo());
        }
        let vsys = by_path("[vsyscall]");
        assert_eq!(vsys.start, 0xffffffffff600000);
        assert!(vsys.exec && !vsys.read && !vsys.write);
    }

    #[test]
    fn maps_edge_cases() {
        assert!(parse_maps("").unwrap().is_empty());
        // Short (32-bit style) addresses, wide device major, trailing space in
        // a file name, anonymous names, no padding at all.
        let text = "08048000-08049000 r-xs 0000a000 103:1f 42 /tmp/foo \n\
                    7f00-8f00 ---p 00000000 00:00 0\n\
                    1000-2000 rw-p 00000000 00:00 0                          [anon:my region]\n\
                    2000-3000 rw-s 00000000 00:01 7                          /x (deleted) (deleted)\n";
        let m = parse_maps(text).unwrap();
        assert_eq!(m[0].start, 0x08048000);
        assert!(m[0].shared && m[0].exec);
        assert_eq!((m[0].dev_major, m[0].dev_minor), (0x103, 0x1f));
        assert_eq!(m[0].offset, 0xa000);
        assert_eq!(m[0].path, "/tmp/foo ");
        assert_eq!(m[1].path, "");
        assert!(!m[1].read && !m[1].write && !m[1].exec);
        assert_eq!(m[2].path, "[anon:my region]");
        assert!(m[2].is_pseudo());
        assert_eq!(m[3].file_path(), Some("/x (deleted)"));
    }

    #[test]
    fn maps_errors_name_the_line() {
        let good = "1000-2000 rw-p 00000000 00:00 0\n";
        for bad in [
            "1000 rw-p 00000000 00:00 0",
            "1000-2000 rw-q 00000000 00:00 0",
            "1000-2000 rwp 00000000 00:00 0",
            "1000-2000 rw-p 0000000g 00:00 0",
            "1000-2000 rw-p 00000000 0000 0",
            "1000-2000 rw-p 00000000 00:00",
            "1000-2000 rw-p 00000000 00:00 x",
            "2000-1000 rw-p 00000000 00:00 0",
            "zz-2000 rw-p 00000000 00:00 0",
        ] {
            let text = format!("{good}{bad}\n");
            let (path, line, what) = parse_err_line(parse_maps(&text).unwrap_err());
            assert_eq!((path.as_str(), line), ("maps", 2), "{bad:?}: {what}");
        }
    }

    fn format_map_line(e: &MapEntry) -> String {
        let mut s = format!(
            "{:08x}-{:08x} {}{}{}{} {:08x} {:02x}:{:02x} {} ",
            e.start,
            e.end,
            if e.read { 'r' } else { '-' },
            if e.write { 'w' } else { '-' },
            if e.exec { 'x' } else { '-' },
            if e.shared { 's' } else { 'p' },
            e.offset,
            e.dev_major,
            e.dev_minor,
            e.inode
        );
        if !e.path.is_empty() {
            // pad_len_spaces(): pad to column 73 on 64-bit.
            while s.len() < 73 {
                s.push(' ');
            }
            s.push_str(&e.path);
        }
        s
    }

    fn arb_path() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            prop::sample::select(vec![
                "[heap]",
                "[stack]",
                "[vdso]",
                "[vvar]",
                "[vvar_vclock]",
                "[vsyscall]"
            ])
            .prop_map(str::to_owned),
            ("/[^\n]{0,40}", any::<bool>()).prop_map(|(p, del)| if del {
                format!("{p} (deleted)")
            } else {
                p
            }),
        ]
    }

    fn arb_map_entry() -> impl Strategy<Value = MapEntry> {
        (
            (any::<u64>(), any::<u64>()),
            any::<[bool; 4]>(),
            any::<u64>(),
            (0u32..0x1000, 0u32..0x100000),
            any::<u64>(),
            arb_path(),
        )
            .prop_map(|((a, b), p, offset, (maj, min), inode, path)| MapEntry {
                start: a.min(b),
                end: a.max(b),
                read: p[0],
                write: p[1],
                exec: p[2],
                shared: p[3],
                offset,
                dev_major: maj,
                dev_minor: min,
                inode,
                path,
            })
    }

    proptest! {
        #[test]
        fn maps_round_trip(entries in prop::collection::vec(arb_map_entry(), 0..20)) {
            let mut text = String::new();
            for e in &entries {
                text.push_str(&format_map_line(e));
                text.push('\n');
            }
            prop_assert_eq!(parse_maps(&text).unwrap(), entries);
        }

        #[test]
        fn maps_never_panic(text in "[ -~\n]{0,200}") {
            let _ = parse_maps(&text);
            let _ = parse_smaps(&text);
            let _ = parse_status(&text);
            let _ = parse_stat(&text);
            let _ = parse_fdinfo(&text);
            let _ = parse_limits(&text);
            let _ = parse_timers(&text);
            let _ = parse_mountinfo(&text);
            let _ = parse_children(&text);
        }
    }

    // ----- smaps -----

    #[test]
    fn smaps_real_sample() {
        let s = parse_smaps(SMAPS).unwrap();
        assert_eq!(s.len(), 6);
        let maps = parse_maps(MAPS).unwrap();
        for e in &s {
            assert!(maps.contains(&e.map), "{:?}", e.map);
            assert_eq!(e.size_kb * 1024, e.map.size());
            assert_eq!((e.kernel_page_size_kb, e.mmu_page_size_kb), (4, 4));
            assert_eq!(e.thp_eligible, Some(false));
            assert_eq!(e.protection_key, None);
        }
        assert_eq!(s[0].map.path, "/tmp/procsamples/t");
        assert_eq!(s[0].vm_flags, ["rd", "mr", "mw", "me"]);
        assert_eq!((s[0].rss_kb, s[0].anonymous_kb), (4, 0));

        // The MAP_GROWSDOWN + MADV_DONTFORK region.
        let anon = &s[1];
        assert_eq!(anon.map.path, "");
        assert!(anon.has_flag("gd") && anon.has_flag("dc") && anon.has_flag("ac"));
        assert!(!anon.has_flag("sh"));
        assert_eq!((anon.rss_kb, anon.anonymous_kb, anon.swap_kb), (4, 4, 0));

        let sysv = &s[2];
        assert_eq!(sysv.map.path, "/SYSV00000000 (deleted)");
        assert!(sysv.has_flag("sh") && sysv.has_flag("ms"));
        assert_eq!(s[3].map.path, "/memfd:my memfd (deleted)");

        let stack = &s[4];
        assert_eq!(stack.map.path, "[stack]");
        assert!(stack.has_flag("gd"));
        assert_eq!(stack.rss_kb, 12);

        assert_eq!(s[5].map.path, "[vsyscall]");
        assert_eq!(s[5].vm_flags, ["ex"]);
        assert!(s
            .iter()
            .all(|e| e.vm_flags.iter().all(|f| describe_vm_flag(f).is_some())));
    }

    #[test]
    fn smaps_edge_cases() {
        assert!(parse_smaps("").unwrap().is_empty());
        let text = "7f0000000000-7f0000200000 rw-p 00000000 00:0f 123                        /anon_hugepage (deleted)\n\
                    Size:               2048 kB\n\
                    KernelPageSize:     2048 kB\n\
                    MMUPageSize:        2048 kB\n\
                    Rss:                   0 kB\n\
                    Swap:                 12 kB\n\
                    SomeFutureField:      7 kB\n\
                    Locked:                8 kB\n\
                    THPeligible:    1\n\
                    ProtectionKey:         3\n\
                    VmFlags: rd wr sh mr mw me ms de ht io pf dd sd um uw ?? \n\
                    1000-2000 ---p 00000000 00:00 0\n";
        let s = parse_smaps(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kernel_page_size_kb, 2048);
        assert_eq!(s[0].swap_kb, 12);
        assert_eq!(s[0].locked_kb, 8);
        assert_eq!(s[0].thp_eligible, Some(true));
        assert_eq!(s[0].protection_key, Some(3));
        for f in ["ht", "io", "pf", "dd", "sd", "um", "uw", "de", "??"] {
            assert!(s[0].has_flag(f), "{f}");
        }
        assert!(!s[0].has_flag("gd"));
        // An entry with no fields at all (possible with a truncated read).
        assert!(s[1].vm_flags.is_empty());
        assert_eq!(s[1].rss_kb, 0);

        let (_, line, _) = parse_err_line(parse_smaps("Rss: 4 kB\n").unwrap_err());
        assert_eq!(line, 1);
        let (_, line, what) = parse_err_line(
            parse_smaps("1000-2000 rw-p 00000000 00:00 0\nRss: lots kB\n").unwrap_err(),
        );
        assert_eq!(line, 2, "{what}");
    }

    // ----- status -----

    #[test]
    fn status_real_sample() {
        let s = parse_status(STATUS).unwrap();
        assert_eq!(s.name, "t");
        assert_eq!(s.umask, Some(0o022));
        assert_eq!(s.state, 'S');
        assert_eq!((s.tgid, s.pid, s.ppid, s.tracer_pid), (4279, 4279, 1, 0));
        assert_eq!(s.uid, [0; 4]);
        assert_eq!(s.gid, [0; 4]);
        assert!(s.groups.is_empty());
        assert_eq!(s.ns_tgid, [4279]);
        assert_eq!(s.ns_pid, [4279]);
        assert_eq!(s.ns_pgid, [4269]);
        assert_eq!(s.ns_sid, [3408]);
        assert_eq!(s.threads, 1);
        assert_eq!(s.sig_q, (4, 96364));
        assert_eq!((s.sig_pnd, s.shd_pnd, s.sig_blk, s.sig_cgt), (0, 0, 0, 0));
        // SIGINT and SIGTERM ignored by the program, SIGQUIT inherited from
        // the shell that started it in the background.
        assert_eq!(s.sig_ign, 0x4006);
        assert_eq!(
            s.sig_ign,
            (1 << (libc::SIGINT - 1)) | (1 << (libc::SIGQUIT - 1)) | (1 << (libc::SIGTERM - 1))
        );
        assert_eq!(s.cap_inh, 0);
        assert_eq!(
            (s.cap_prm, s.cap_eff, s.cap_bnd),
            (0x1fffeffffff, 0x1fffeffffff, 0x1fffeffffff)
        );
        assert_eq!(s.cap_amb, 0);
        assert!(!s.no_new_privs);
        assert_eq!((s.seccomp, s.seccomp_filters), (0, Some(0)));
        assert!(s.vm_size_kb.is_some() && s.vm_rss_kb.is_some());
    }

    #[test]
    fn status_real_sample_setpriv() {
        let s = parse_status(STATUS2).unwrap();
        assert_eq!(s.name, "we ird) (name");
        assert_eq!(s.uid, [1000; 4]);
        assert_eq!(s.gid, [1001; 4]);
        assert_eq!(s.groups, [10, 20, 1000]);
        assert!(s.no_new_privs);
        assert_eq!((s.cap_prm, s.cap_eff), (0, 0));
        assert_eq!(s.sig_ign, 0x6);
    }

    #[test]
    fn status_edge_cases() {
        // Old kernel: no Umask, NS*, CapAmb, NoNewPrivs, Seccomp; nested pid
        // namespaces; escaped name with a trailing space; zombie (no Vm*).
        let text = "Name:\ta\\nb\\\\c \n\
                    State:\tZ (zombie)\n\
                    Tgid:\t10\nPid:\t11\nPPid:\t1\nTracerPid:\t7\n\
                    Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\n\
                    Groups:\t4 24 27 \n\
                    NStgid:\t10\t3\t1\nNSpid:\t11\t4\t2\n\
                    Threads:\t2\nSigQ:\t0/100\n\
                    SigPnd:\t0000000000000100\nShdPnd:\t8000000000000000\n\
                    SigBlk:\tfffffffe7ffbfeff\nSigIgn:\t0\nSigCgt:\t0000000180000000\n\
                    CapInh:\t0\nCapPrm:\t0\nCapEff:\t0\nCapBnd:\t0000003fffffffff\n";
        let s = parse_status(text).unwrap();
        assert_eq!(s.name, "a\nb\\c ");
        assert_eq!(s.umask, None);
        assert_eq!(s.state, 'Z');
        assert_eq!(s.tracer_pid, 7);
        assert_eq!(s.uid, [1, 2, 3, 4]);
        assert_eq!(s.gid, [5, 6, 7, 8]);
        assert_eq!(s.groups, [4, 24, 27]);
        assert_eq!(s.ns_tgid, [10, 3, 1]);
        assert_eq!(s.ns_pid, [11, 4, 2]);
        assert!(s.ns_pgid.is_empty());
        assert_eq!(s.sig_pnd, 1 << 8);
        assert_eq!(s.shd_pnd, 1 << 63);
        assert_eq!(s.sig_blk, 0xfffffffe7ffbfeff);
        assert_eq!(s.sig_cgt, 0x180000000);
        assert_eq!(s.cap_bnd, 0x3fffffffff);
        assert_eq!((s.cap_amb, s.no_new_privs, s.seccomp), (0, false, 0));
        assert_eq!((s.seccomp_filters, s.vm_size_kb), (None, None));

        let missing = text.replace("SigCgt:\t0000000180000000\n", "");
        let (_, line, what) = parse_err_line(parse_status(&missing).unwrap_err());
        assert_eq!(line, 0);
        assert!(what.contains("SigCgt"), "{what}");

        let bad = text.replace("Uid:\t1\t2\t3\t4", "Uid:\t1\t2\t3");
        let (_, line, _) = parse_err_line(parse_status(&bad).unwrap_err());
        assert_eq!(line, 7);
        let bad = text.replace("SigBlk:\tfffffffe7ffbfeff", "SigBlk:\txyz");
        assert!(parse_status(&bad).is_err());
    }

    // ----- stat -----

    #[test]
    fn stat_real_samples() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!((s.pid, s.comm.as_str(), s.state), (4279, "t", 'S'));
        assert_eq!(
            (s.ppid, s.pgrp, s.session, s.tty_nr, s.tpgid),
            (1, 4269, 3408, 0, -1)
        );
        assert_eq!(s.flags, 4194304);
        assert_eq!(s.minflt, 120);
        assert_eq!((s.priority, s.nice, s.num_threads), (20, 0, 1));
        assert_eq!(s.starttime, 24480);
        assert_eq!(s.vsize, 3612672);
        assert_eq!(s.rss, 382);
        assert_eq!(s.rsslim, u64::MAX);
        assert_eq!(s.start_code, 94345766895616);
        assert_eq!(s.end_code, 94345766897633);
        assert_eq!(s.start_stack, 140730924751584);
        assert_eq!(s.sigignore, 16390);
        assert_eq!(s.wchan, 1);
        assert_eq!(s.exit_signal, 17);
        assert_eq!((s.processor, s.rt_priority, s.policy), (0, 0, 0));
        assert_eq!(s.start_data, 94345766907344);
        assert_eq!(s.end_data, 94345766908168);
        assert_eq!(s.start_brk, 94346523254784);
        assert_eq!((s.arg_start, s.arg_end), (140730924755699, 140730924755703));
        assert_eq!((s.env_start, s.env_end), (140730924755703, 140730924756980));
        assert_eq!(s.exit_code, 0);
        // The code/data layout matches the maps of the same process.
        let maps = parse_maps(MAPS).unwrap();
        assert!(maps
            .iter()
            .any(|m| m.exec && m.start <= s.start_code && s.end_code <= m.end));

        let s = parse_stat(STAT2).unwrap();
        assert_eq!(s.pid, 7911);
        assert_eq!(s.comm, "we ird) (name");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 7909);
        assert_eq!(s.exit_code, 0);
    }

    #[test]
    fn stat_edge_cases() {
        let tail =
            "R 1 2 3 34816 -1 4194560 1 2 3 4 5 6 -7 -8 -2 -20 3 0 99 1000 5 18446744073709551615 \
                    1 2 3 4 5 0 0 0 0 0 0 0 17 3 50 1 0 0 0 10 11 12 13 14 15 16 256";
        for comm in ["a) b\n(c", "", ")", "((", " x "] {
            let text = format!("42 ({comm}) {tail}\n");
            let s = parse_stat(&text).unwrap();
            assert_eq!(s.pid, 42);
            assert_eq!(s.comm, comm);
            assert_eq!(s.state, 'R');
            assert_eq!(s.tty_nr, 34816);
            assert_eq!(s.tpgid, -1);
            assert_eq!((s.cutime, s.cstime, s.priority, s.nice), (-7, -8, -2, -20));
            assert_eq!((s.rt_priority, s.policy), (50, 1));
            assert_eq!(s.processor, 3);
            assert_eq!(s.env_end, 16);
            assert_eq!(s.exit_code, 256);
        }
        // Too few fields (pre-3.5 kernel / truncated).
        let short = "42 (x) R 1 2 3";
        let (path, line, what) = parse_err_line(parse_stat(short).unwrap_err());
        assert_eq!((path.as_str(), line), ("stat", 1));
        assert!(what.contains("52"), "{what}");
        assert!(parse_stat("42 x R").is_err());
        assert!(parse_stat(&format!("x (y) {tail}")).is_err());
        assert!(parse_stat(&format!("1 (y) RR{}", &tail[1..])).is_err());
    }

    // ----- fdinfo -----

    #[test]
    fn fdinfo_real_samples() {
        let f = parse_fdinfo(FDINFO_FILE).unwrap();
        assert_eq!(
            (f.pos, f.flags, f.mnt_id, f.ino),
            (100, 0o100002, 27, 10010795)
        );
        assert_eq!(f.flags & libc::O_ACCMODE as u32, libc::O_RDWR as u32);
        assert!(f.extra.is_empty());

        let f = parse_fdinfo(FDINFO_MEMFD).unwrap();
        assert_eq!((f.mnt_id, f.ino), (0, 24));

        let f = parse_fdinfo(FDINFO_EVENTFD).unwrap();
        assert_ne!(f.flags & libc::O_CLOEXEC as u32, 0);
        assert_ne!(f.flags & libc::O_NONBLOCK as u32, 0);
        assert_eq!(
            f.extra,
            [
                ("eventfd-count".to_owned(), "5".to_owned()),
                ("eventfd-id".to_owned(), "1".to_owned()),
                ("eventfd-semaphore".to_owned(), "0".to_owned()),
            ]
        );
        assert_eq!(f.extra_value("eventfd-count"), Some("5"));

        let f = parse_fdinfo(FDINFO_EPOLL).unwrap();
        let recs: Vec<_> = f.extra_records("tfd").collect();
        assert_eq!(
            recs,
            [vec![
                ("tfd", "7"),
                ("events", "19"),
                ("data", "7"),
                ("pos", "0"),
                ("ino", "40e"),
                ("sdev", "10")
            ]]
        );

        let f = parse_fdinfo(FDINFO_INOTIFY).unwrap();
        let recs: Vec<_> = f.extra_records("inotify wd").collect();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0][0], ("inotify wd", "1"));
        assert_eq!(recs[0][3], ("mask", "300"));
        assert_eq!(recs[0].last(), Some(&("f_handle", "a7c4030000000000")));

        let f = parse_fdinfo(FDINFO_SIGNALFD).unwrap();
        assert_eq!(f.extra_value("sigmask"), Some("0000000000000802"));

        let f = parse_fdinfo(FDINFO_TIMERFD).unwrap();
        let keys: Vec<_> = f.extra.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "clockid",
                "ticks",
                "settime flags",
                "it_value",
                "it_interval"
            ]
        );
        assert_eq!(f.extra_value("it_value"), Some("(99, 479118890)"));
    }

    #[test]
    fn fdinfo_edge_cases() {
        // Multiple epoll targets, a line without ':', and a second "pos"
        // inside the extra part (kept in extra, not overriding).
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t9\n\
                    tfd:        5 events:       19 data:                5  pos:0 ino:1 sdev:f\n\
                    tfd:        6 events:        1 data:       7fffffffff  pos:3 ino:2 sdev:f\n\
                    weird line\npos: 5\n";
        let f = parse_fdinfo(text).unwrap();
        assert_eq!(f.pos, 0);
        assert_eq!(f.extra_records("tfd").count(), 2);
        assert_eq!(
            f.extra_records("tfd").nth(1).unwrap()[2],
            ("data", "7fffffffff")
        );
        assert_eq!(f.extra[2], ("weird line".to_owned(), String::new()));
        assert_eq!(f.extra[3], ("pos".to_owned(), "5".to_owned()));

        let (_, line, what) = parse_err_line(parse_fdinfo("pos:\t0\nflags:\t09\n").unwrap_err());
        assert_eq!(line, 2, "{what}");
        let (_, line, what) =
            parse_err_line(parse_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t1\n").unwrap_err());
        assert_eq!(line, 0);
        assert!(what.contains("ino"), "{what}");
    }

    // ----- limits -----

    #[test]
    fn limits_real_sample() {
        let l = parse_limits(LIMITS).unwrap();
        assert_eq!(l.len(), 16);
        let get =
            |r: libc::__rlimit_resource_t| *l.iter().find(|x| x.resource == r as i32).unwrap();
        assert_eq!(
            get(libc::RLIMIT_CPU),
            Limit {
                resource: 0,
                soft: RLIM_INFINITY,
                hard: RLIM_INFINITY
            }
        );
        assert_eq!(
            (get(libc::RLIMIT_STACK).soft, get(libc::RLIMIT_STACK).hard),
            (8388608, RLIM_INFINITY)
        );
        assert_eq!(
            (get(libc::RLIMIT_CORE).soft, get(libc::RLIMIT_CORE).hard),
            (0, RLIM_INFINITY)
        );
        assert_eq!(
            (get(libc::RLIMIT_NPROC).soft, get(libc::RLIMIT_NPROC).hard),
            (96364, 96364)
        );
        assert_eq!(
            (get(libc::RLIMIT_NOFILE).soft, get(libc::RLIMIT_NOFILE).hard),
            (20000, 20000)
        );
        assert_eq!(get(libc::RLIMIT_MSGQUEUE).soft, 819200);
        assert_eq!(
            (get(libc::RLIMIT_NICE).soft, get(libc::RLIMIT_RTPRIO).soft),
            (0, 0)
        );
        assert_eq!(get(libc::RLIMIT_RTTIME).hard, RLIM_INFINITY);
        // In kernel order: resource i on row i.
        for (i, x) in l.iter().enumerate() {
            assert_eq!(x.resource, i as i32);
        }
    }

    #[test]
    fn limits_edge_cases() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            1024                 4096                 files     \n\
                    Max shiny things          1                    2                    things    \n\
                    Max nice priority         0                    0                    \n";
        let l = parse_limits(text).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0],
            Limit {
                resource: libc::RLIMIT_NOFILE as i32,
                soft: 1024,
                hard: 4096
            }
        );
        assert_eq!(l[1].resource, libc::RLIMIT_NICE as i32);

        let (_, line, _) =
            parse_err_line(parse_limits("Max open files            1024\n").unwrap_err());
        assert_eq!(line, 1);
        assert!(parse_limits("Max open files            lots  lots  files\n").is_err());
    }

    fn format_limits(l: &[Limit]) -> String {
        let mut s = format!(
            "{:<25} {:<20} {:<20} {:<10}\n",
            "Limit", "Soft Limit", "Hard Limit", "Units"
        );
        for x in l {
            let (name, _, unit) = LIMIT_NAMES
                .iter()
                .find(|(_, r, _)| *r == x.resource)
                .unwrap();
            let v = |n: u64| {
                if n == RLIM_INFINITY {
                    "unlimited".to_owned()
                } else {
                    n.to_string()
                }
            };
            let _ = writeln!(
                s,
                "{:<25} {:<20} {:<20} {:<10}",
                name,
                v(x.soft),
                v(x.hard),
                unit
            );
        }
        s
    }

    proptest! {
        #[test]
        fn limits_round_trip(vals in prop::collection::vec(
            (prop_oneof![Just(RLIM_INFINITY), any::<u64>()], prop_oneof![Just(RLIM_INFINITY), any::<u64>()]),
            16,
        )) {
            let limits: Vec<Limit> = LIMIT_NAMES
                .iter()
                .zip(vals)
                .map(|(&(_, resource, _), (soft, hard))| Limit { resource, soft, hard })
                .collect();
            prop_assert_eq!(parse_limits(&format_limits(&limits)).unwrap(), limits);
        }
    }

    // ----- timers -----

    #[test]
    fn timers_real_sample() {
        let t = parse_timers(TIMERS).unwrap();
        assert_eq!(
            t,
            [
                PosixTimer {
                    id: 3,
                    signal: libc::SIGALRM,
                    sigev_value: 0,
                    notify: TimerNotify::Signal { pid: 4279 },
                    clock_id: -6,
                },
                PosixTimer {
                    id: 2,
                    signal: 0,
                    sigev_value: 0,
                    notify: TimerNotify::None { pid: 4279 },
                    clock_id: libc::CLOCK_BOOTTIME,
                },
                PosixTimer {
                    id: 1,
                    signal: libc::SIGUSR1,
                    sigev_value: 42,
                    notify: TimerNotify::Thread { tid: 4279 },
                    clock_id: libc::CLOCK_REALTIME,
                },
                PosixTimer {
                    id: 0,
                    signal: libc::SIGRTMIN() + 1,
                    sigev_value: 0x1234abcd,
                    notify: TimerNotify::Signal { pid: 4279 },
                    clock_id: libc::CLOCK_MONOTONIC,
                },
            ]
        );
        assert_eq!(t[0].notify.sigev_notify(), libc::SIGEV_SIGNAL);
        assert_eq!(t[1].notify.sigev_notify(), libc::SIGEV_NONE);
        assert_eq!(t[2].notify.sigev_notify(), libc::SIGEV_THREAD_ID);
        assert_eq!(t[2].notify.target(), 4279);
    }

    #[test]
    fn timers_edge_cases() {
        assert!(parse_timers("").unwrap().is_empty());
        let t =
            parse_timers("ID: 7\nsignal: 12/ffffffffffffffff\nnotify: thread/pid.9\nClockID: 1\n")
                .unwrap();
        assert_eq!(t[0].notify, TimerNotify::SigevThread { pid: 9 });
        assert_eq!(t[0].notify.sigev_notify(), libc::SIGEV_THREAD);
        assert_eq!(t[0].sigev_value, u64::MAX);

        let (_, line, what) =
            parse_err_line(parse_timers("ID: 7\nsignal: 12/0\nClockID: 1\nID: 8\n").unwrap_err());
        assert_eq!(line, 1);
        assert!(what.contains("notify"), "{what}");
        let (_, line, _) = parse_err_line(
            parse_timers("ID: 7\nsignal: 12/0\nnotify: none/tid.3\nClockID: 1\n").unwrap_err(),
        );
        assert_eq!(line, 3);
        assert!(parse_timers("signal: 12/0\n").is_err());
        assert!(parse_timers("ID: x\n").is_err());
    }

    // ----- mountinfo -----

    #[test]
    fn mountinfo_real_sample() {
        let m = parse_mountinfo(MOUNTINFO).unwrap();
        assert_eq!(m.len(), 8);
        assert_eq!(
            m[2],
            MountInfo {
                mount_id: 27,
                parent_id: 1,
                major: 254,
                minor: 0,
                root: "/".into(),
                mount_point: "/".into(),
                mount_options: "rw,relatime".into(),
                optional_fields: vec![],
                fs_type: "ext4".into(),
                source: "/dev/vda".into(),
                super_options: "rw,discard,resv_strict,resuid=65534,resgid=65534".into(),
            }
        );
        assert_eq!(
            split_mount_options(&m[3].mount_options),
            ["ro", "nosuid", "nodev", "relatime"]
        );
        assert_eq!(m[6].mount_point, "/tmp/procsamples/mnt dir");
        assert_eq!(m[6].source, "my src");
        assert_eq!(m[6].shared_group(), None);
        assert_eq!(m[7].root, "/a\ttab");
        assert_eq!(m[7].shared_group(), Some(1));
        assert_eq!(m[7].master_group(), None);
        assert!(!m[7].unbindable());
    }

    #[test]
    fn mountinfo_edge_cases() {
        // Several optional fields, an empty source, escaped backslash and
        // newline, fuse subtype.
        let text = "100 99 0:50 /x\\134y /m\\012n rw shared:2 master:1 propagate_from:1 unbindable - fuse.sshfs  rw,opt=a\\054b\n";
        let m = parse_mountinfo(text).unwrap();
        let m = &m[0];
        assert_eq!(m.root, "/x\\y");
        assert_eq!(m.mount_point, "/m\nn");
        assert_eq!(m.optional_fields.len(), 4);
        assert_eq!(
            (m.shared_group(), m.master_group(), m.propagate_from()),
            (Some(2), Some(1), Some(1))
        );
        assert!(m.unbindable());
        assert_eq!(m.fs_type, "fuse.sshfs");
        assert_eq!(m.source, "");
        assert_eq!(split_mount_options(&m.super_options), ["rw", "opt=a,b"]);
        assert!(split_mount_options("").is_empty());

        assert_eq!(unescape_octal("a\\"), "a\\");
        assert_eq!(unescape_octal("a\\04"), "a\\04");
        assert_eq!(unescape_octal("a\\999"), "a\\999");
        assert_eq!(unescape_octal("\\303\\251"), "é");

        let (_, line, _) = parse_err_line(parse_mountinfo("1 2 0:3 / / rw - ext4\n").unwrap_err());
        assert_eq!(line, 1);
        assert!(parse_mountinfo("1 2 0:3 / / rw ext4 a b\n").is_err());
        assert!(parse_mountinfo("1 2 03 / / rw - ext4 a b\n").is_err());
    }

    fn escape_octal(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\\') {
                let _ = write!(out, "\\{b:03o}");
            } else {
                out.push(b as char);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn mountinfo_escape_round_trip(mp in "/[a-z \t\n\\\\]{0,20}", src in "[a-z \\\\]{0,10}") {
            let line = format!("5 1 8:1 / {} rw,relatime shared:3 - ext4 {} rw\n", escape_octal(&mp), escape_octal(&src));
            let m = parse_mountinfo(&line).unwrap();
            prop_assert_eq!(&m[0].mount_point, &mp);
            prop_assert_eq!(&m[0].source, &src);
            prop_assert_eq!(m[0].shared_group(), Some(3));
        }
    }

    // ----- children, auxv, pagemap -----

    #[test]
    fn children() {
        assert_eq!(parse_children("5005 "), [5005]);
        assert_eq!(parse_children(""), Vec::<i32>::new());
        assert_eq!(parse_children("1 2 3\n"), [1, 2, 3]);
        assert_eq!(parse_children("1 x 3"), [1, 3]);
    }

    #[test]
    fn auxv() {
        let words: [u64; 9] = [6, 4096, 33, 0x7fff0000, 25, 0x7ffe1234, 0, 0, 99];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(
            parse_auxv(&bytes),
            [(6, 4096), (33, 0x7fff0000), (25, 0x7ffe1234)]
        );
        assert_eq!(parse_auxv(&bytes[..40]), [(6, 4096), (33, 0x7fff0000)]);
        assert!(parse_auxv(&[]).is_empty());
    }

    #[test]
    fn pagemap_bits() {
        let e = PagemapEntry(PM_PRESENT | PM_MMAP_EXCLUSIVE | PM_SOFT_DIRTY | 0x1234);
        assert!(e.present() && e.exclusive() && e.soft_dirty());
        assert!(!e.swapped() && !e.file_or_shared() && !e.uffd_wp() && !e.guard_region());
        assert_eq!(e.pfn(), 0x1234);

        let e = PagemapEntry(PM_SWAP | PM_FILE | PM_UFFD_WP | (77 << 5) | 3);
        assert!(e.swapped() && e.file_or_shared() && e.uffd_wp() && !e.present());
        assert_eq!((e.swap_type(), e.swap_offset()), (3, 77));

        assert_eq!(PagemapEntry(u64::MAX).pfn(), (1 << 55) - 1);
        assert_eq!(PM_PRESENT, 0x8000_0000_0000_0000);
        assert_eq!(PM_FILE, 1 << 61);
        assert_eq!(PM_MMAP_EXCLUSIVE, 1 << 56);
        assert!(!PagemapEntry::default().present());
    }

    // ----- errors -----

    #[test]
    fn error_display_and_not_found() {
        let e = ProcError::Io {
            path: "/proc/1/maps".into(),
            source: io::Error::from_raw_os_error(libc::ESRCH),
        };
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "reading /proc/1/maps");
        assert_eq!(e.path(), "/proc/1/maps");
        let e = ProcError::Io {
            path: "x".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(!e.is_not_found());
        let e = parse_maps("garbage").unwrap_err();
        assert!(!e.is_not_found());
        assert!(e.to_string().starts_with("parsing maps line 1: "), "{e}");
    }

    // ----- readers against the live system -----

    fn me() -> i32 {
        std::process::id() as i32
    }

    #[test]
    fn live_maps_smaps() {
        let maps = read_maps(me()).unwrap();
        assert!(maps.iter().any(|m| m.path == "[stack]"));
        let exe = std::env::current_exe().unwrap();
        assert!(maps.iter().any(|m| m.file_path() == exe.to_str()));
        // A heap object lies in some readable, writable mapping.
        let boxed = Box::new([7u8; 64]);
        let addr = boxed.as_ptr() as u64;
        assert!(maps
            .iter()
            .any(|m| m.start <= addr && addr < m.end && m.read && m.write));

        let smaps = read_smaps(me()).unwrap();
        assert!(!smaps.is_empty());
        assert!(smaps
            .iter()
            .any(|s| s.map.path == "[stack]" && s.has_flag("gd")));
        assert!(smaps.iter().all(|s| s.size_kb * 1024 == s.map.size()));
    }

    #[test]
    fn live_status_stat_tasks() {
        let s = read_status(me()).unwrap();
        assert_eq!((s.tgid, s.pid), (me(), me()));
        assert!(s.threads >= 1);
        let st = read_stat(me()).unwrap();
        assert_eq!(st.pid, me());
        assert_eq!(st.ppid, s.ppid);
        assert!(st.start_code > 0 && st.start_brk > 0);
        let comm = read_comm(me()).unwrap();
        assert_eq!(st.comm.as_bytes(), &comm[..]);

        let tasks = list_tasks(me()).unwrap();
        assert!(tasks.contains(&me()));
        assert!(tasks.windows(2).all(|w| w[0] < w[1]));
        for tid in tasks {
            match read_task_status(me(), tid) {
                Ok(ts) => {
                    assert_eq!((ts.tgid, ts.pid), (me(), tid));
                    assert_eq!(read_task_stat(me(), tid).unwrap().pid, tid);
                }
                // Test-harness threads come and go.
                Err(e) => assert!(e.is_not_found(), "{e:?}"),
            }
        }
    }

    #[test]
    fn live_fds() {
        use std::io::{Seek, SeekFrom, Write};
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!("stasis-proc-test-{}", me()));
        let mut f = std::fs::File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.write_all(&[0u8; 500]).unwrap();
        f.seek(SeekFrom::Start(123)).unwrap();
        let fd = f.as_raw_fd();

        let fds = list_fds(me()).unwrap();
        assert!(fds.contains(&fd));
        assert!(fds.windows(2).all(|w| w[0] < w[1]));
        let info = read_fdinfo(me(), fd).unwrap();
        assert_eq!(info.pos, 123);
        assert_eq!(info.flags & libc::O_ACCMODE as u32, libc::O_RDWR as u32);
        assert_ne!(
            info.flags & libc::O_CLOEXEC as u32,
            0,
            "std opens with O_CLOEXEC"
        );
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(info.ino, std::os::unix::fs::MetadataExt::ino(&md));
        assert_eq!(read_fd_link(me(), fd).unwrap(), path);
        // The mount id matches a mountinfo entry.
        let mounts = read_mountinfo(me()).unwrap();
        assert!(mounts.iter().any(|m| m.mount_id == info.mnt_id));
        std::fs::remove_file(&path).unwrap();
        let mut deleted = path.into_os_string();
        deleted.push(" (deleted)");
        assert_eq!(read_fd_link(me(), fd).unwrap().into_os_string(), deleted);
        drop(f);

        let e = read_fdinfo(me(), 1_000_000).unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        assert_eq!(e.path(), format!("/proc/{}/fdinfo/1000000", me()));
        assert!(read_fd_link(me(), 1_000_000).unwrap_err().is_not_found());
    }

    #[test]
    fn live_misc() {
        let l = read_limits(me()).unwrap();
        assert_eq!(l.len(), 16);
        read_timers(me()).unwrap();
        let mounts = read_mountinfo(me()).unwrap();
        assert!(mounts.iter().any(|m| m.mount_point == "/"));
        let aux = read_auxv(me()).unwrap();
        assert!(aux.contains(&(libc::AT_PAGESZ, crate::PAGE_SIZE)));
        assert!(!read_cmdline(me()).unwrap().is_empty());
        read_environ(me()).unwrap();
        assert_eq!(read_cwd(me()).unwrap(), std::env::current_dir().unwrap());
        assert_eq!(read_exe(me()).unwrap(), std::env::current_exe().unwrap());
        assert!(read_root(me()).unwrap().is_absolute());
    }

    #[test]
    fn live_pagemap() {
        let v = vec![1u8; 3 * crate::PAGE_SIZE as usize];
        let addr = v.as_ptr() as u64;
        let mut out = vec![123];
        read_pagemap(me(), addr, 3, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|&e| PagemapEntry(e).present()), "{out:x?}");
        let pm = Pagemap::open(me()).unwrap();
        pm.read(addr, 0, &mut out).unwrap();
        assert!(out.is_empty());
        // A large read spanning several chunks (most pages absent).
        let maps = read_maps(me()).unwrap();
        let stack = maps.iter().find(|m| m.path == "[stack]").unwrap();
        let n = (stack.size() / crate::PAGE_SIZE) as usize;
        pm.read(stack.start, n, &mut out).unwrap();
        assert_eq!(out.len(), n);
        assert!(PagemapEntry(*out.last().unwrap()).present());
        // Past the end of the user address space.
        let e = pm.read(0xffff_ffff_ff60_0000, 1, &mut out).unwrap_err();
        assert!(
            matches!(&e, ProcError::Io { source, .. } if source.kind() == io::ErrorKind::UnexpectedEof),
            "{e:?}"
        );
    }

    #[test]
    fn live_children_and_vanished_task() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let cpid = child.id() as i32;
        let mut kids = Vec::new();
        for tid in list_tasks(me()).unwrap() {
            if let Ok(c) = read_children(me(), tid) {
                kids.extend(c);
            }
        }
        assert!(kids.contains(&cpid), "{kids:?}");
        assert_eq!(read_stat(cpid).unwrap().ppid, me());
        child.kill().unwrap();
        child.wait().unwrap();

        // Reaped: every reader reports "not found".
        assert!(read_stat(cpid).unwrap_err().is_not_found());
        assert!(read_status(cpid).unwrap_err().is_not_found());
        assert!(read_maps(cpid).unwrap_err().is_not_found());
        assert!(read_smaps(cpid).unwrap_err().is_not_found());
        assert!(list_fds(cpid).unwrap_err().is_not_found());
        assert!(list_tasks(cpid).unwrap_err().is_not_found());
        assert!(read_exe(cpid).unwrap_err().is_not_found());
        assert!(read_limits(cpid).unwrap_err().is_not_found());
        assert!(read_task_stat(cpid, cpid).unwrap_err().is_not_found());
        assert!(read_pagemap(cpid, 0, 1, &mut Vec::new())
            .unwrap_err()
            .is_not_found());
        let e = read_stat(cpid).unwrap_err();
        assert_eq!(e.path(), format!("/proc/{cpid}/stat"));
    }
}
