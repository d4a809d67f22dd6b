//! # The partition's private mounts: classify, save, recreate
//!
//! A partition runs in its own mount namespace, made as a copy of the host's. Whatever the
//! workload mounts there afterwards disappears with the namespace, so a checkpoint must save
//! it and a restore must recreate it before the processes come back. Three steps:
//!
//! 1. **Classify** ([`classify`]). The partition's mount table (`/proc/PID/mountinfo` of one of
//!    its processes, read with [`read_mountinfo`] or parsed with [`parse_mountinfo`]) is
//!    compared with the host's. Every mount gets a [`Disposition`]:
//!    - [`Inherited`](Disposition::Inherited): the same mount as on the host (same mount point,
//!      same device `major:minor`, same root inside its file system). The restored partition
//!      inherits it from the host again; nothing to save.
//!    - [`Ours`](Disposition::Ours): set up by stasis itself (its `/proc`, `/dev/pts`,
//!      `/dev/mqueue`, …), recreated by the partition setup.
//!    - [`Tmpfs`](Disposition::Tmpfs): a tmpfs the workload mounted; saved with its content.
//!    - [`Bind`](Disposition::Bind): a bind mount of a host file or directory, recognised by its
//!      device matching a host mount; recreated by binding the same host path again. The host
//!      path is the host mount's mount point joined with the rest of the mount's root below
//!      that host mount's root (the host mount with the longest such root wins).
//!    - [`BindFromTmpfs`](Disposition::BindFromTmpfs): a bind of (a part of) a tmpfs saved
//!      earlier in the table; recreated by a bind from the path inside that tmpfs once it is
//!      back. The record says so ([`MountRecord::source_in_partition`]): that path is one of
//!      the partition, to be rebased like the mount points if the restore does that.
//!    - [`Unsupported`](Disposition::Unsupported): anything else (a new proc, sysfs, devpts,
//!      mqueue or cgroup instance, overlay, a block device, FUSE, …), with an explanation;
//!      the checkpoint must be refused.
//!
//!    The result is ordered parents first (the table's order, except that a mount never comes
//!    before the mount it sits on), which is the order to restore in.
//!
//! 2. **Dump** ([`dump_mount`]), in a process that sees the partition's mounts at the same
//!    paths. A tmpfs is walked from its mount point, parents before children, without
//!    crossing into other mounts: the mount points of nested mounts (found in the caller's own
//!    mount table, `/proc/thread-self/mountinfo`, and by `st_dev`) are recorded as empty
//!    placeholders, because the directory underneath is hidden and the nested mount is saved
//!    on its own. Every file becomes a [`TreeEntry`] with its type, mode, owner, mtime and
//!    `user.*` extended attributes. A regular file's data regions (found with
//!    `SEEK_DATA`/`SEEK_HOLE`, so holes are not stored) are cut at 4 MiB file offsets into
//!    content-addressed chunks of the image ([`ImageWriter::put_chunk`]), each listed with its
//!    [`Extent`]. A further name of an inode already seen is recorded as a hard link.
//!    Files are read with `O_NOATIME`, so the dump does not change access times.
//!
//! 3. **Restore** ([`restore_mount`]), inside the new partition's mount namespace, record by
//!    record in the order of the table. The record is checked first ([`validate`]), so a
//!    corrupt image fails with a message instead of creating something odd. The mount point is
//!    created if missing (`mkdir -p`; an empty file for a file bind). A tmpfs is mounted with
//!    its saved `size`/`nr_inodes`/`mode`/`uid`/`gid` options and its per-mount flags except
//!    read-only, then filled: directories, files (chunks written at their extents, the size set
//!    with `ftruncate` so trailing holes stay holes), symlinks, FIFOs, device nodes, hard links;
//!    then extended attributes, owners (`lchown`), modes (after the owner: `chown` clears the
//!    set-id bits) and last the mtimes (directories after their children), and finally it is
//!    remounted read-only if it was. If filling fails the tmpfs is unmounted again. A bind is
//!    recreated non-recursively (`MS_BIND`) from the same path and remounted with the saved
//!    per-mount flags; the table lists every mount below a recursive bind on its own, and each
//!    is restored by its own record, so `MS_REC` would stack the nested mounts twice.
//!    Unix socket files are recorded but not recreated: the socket restore binds them.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use stasis_image::{chunk_hex, ChunkId, ImageReader, ImageWriter, ReadError, WriteError};
use stasis_sys::mount as sm;
use stasis_sys::proc::{split_mount_options, ProcError};

/// Largest chunk of file content (raw bytes). Chunks are cut at multiples of this file offset,
/// so the same unchanged region of a file gives the same chunks in the next checkpoint.
pub const CONTENT_CHUNK: u64 = 4 << 20;

/// The tmpfs options that are saved and given back at restore (the rest are defaults or
/// describe the host, like `inode64`).
pub const TMPFS_OPTIONS: [&str; 5] = ["size", "nr_inodes", "mode", "uid", "gid"];

/// Per-mount flags a [`MountRecord`] may carry.
pub const RESTORABLE_FLAGS: u64 = sm::MS_RDONLY
    | sm::MS_NOSUID
    | sm::MS_NODEV
    | sm::MS_NOEXEC
    | sm::MS_NOATIME
    | sm::MS_NODIRATIME
    | sm::MS_RELATIME
    | sm::MS_STRICTATIME
    | sm::MS_NOSYMFOLLOW;

/// File system types of kernel interfaces a partition must not mount itself (stasis mounts
/// its own `/proc`, `/dev/pts` and `/dev/mqueue`; the others are not supported inside a
/// partition).
const PSEUDO_FS: [&str; 6] = ["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"];

/// Where the calling thread's mount table is.
const THREAD_MOUNTINFO: &str = "/proc/thread-self/mountinfo";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors of this module. Each names the mount point or file concerned and, where there is
/// one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount table could not be read or parsed.
    #[error("cannot read the mount table {path}")]
    Table {
        /// `/proc/…/mountinfo`, or `mountinfo text` for [`parse_mountinfo`].
        path: String,
        /// What went wrong.
        #[source]
        source: ProcError,
    },
    /// A system call on a path failed.
    #[error("cannot {op} {path}{advice}")]
    Io {
        /// What was being done (`mount tmpfs at`, `create directory`, `read`, …).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// A hint derived from the error number (may be empty).
        advice: &'static str,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// A file name or symlink target that is not UTF-8 (the image stores names as strings).
    #[error(
        "{path}: the name is not valid UTF-8 and cannot be saved; rename it before the checkpoint"
    )]
    NonUtf8 {
        /// The path, lossily converted.
        path: String,
    },
    /// Nothing, or not the classified mount, is visible at the mount point.
    #[error("{mountpoint}: {found}; dump_mount must run in a mount namespace that shows the partition's mounts at the same paths")]
    NotVisible {
        /// The mount point of the mount to dump.
        mountpoint: String,
        /// What was found instead.
        found: String,
    },
    /// A file changed while it was being saved (the partition must be frozen).
    #[error("{path} changed while it was saved (is the partition frozen?)")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// [`dump_mount`] was given a mount it cannot save.
    #[error("mount at {mountpoint} cannot be saved: {reason}")]
    Unsupported {
        /// The mount point.
        mountpoint: String,
        /// The explanation from [`classify`].
        reason: String,
    },
    /// Storing a chunk of file content in the image failed.
    #[error("cannot store the content of {path} in the image")]
    StoreChunk {
        /// The file.
        path: PathBuf,
        /// The image error.
        #[source]
        source: WriteError,
    },
    /// Reading a chunk of file content from the image failed.
    #[error("cannot read chunk {id} of {path} from the image")]
    ReadChunk {
        /// The file being restored.
        path: PathBuf,
        /// The chunk id (hex).
        id: String,
        /// The image error.
        #[source]
        source: ReadError,
    },
    /// A chunk does not have the length its extent says.
    #[error("{path}: chunk {id} holds {found} bytes but its extent at offset {offset} says {expected}; the image is corrupt")]
    ChunkLength {
        /// The file being restored.
        path: PathBuf,
        /// The chunk id (hex).
        id: String,
        /// Offset of the extent in the file.
        offset: u64,
        /// Length of the extent.
        expected: u64,
        /// Length of the chunk.
        found: u64,
    },
    /// A record failed [`validate`].
    #[error("invalid mount record for {mountpoint}: {reason}; the image is corrupt or was written by an incompatible version")]
    Invalid {
        /// The record's mount point (as stored).
        mountpoint: String,
        /// What is wrong.
        reason: String,
    },
}

/// An actionable hint for a failed system call, from its error number.
fn advice(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (permission denied: stasis must run as root, with CAP_SYS_ADMIN in the partition's \
             mount namespace and CAP_MKNOD/CAP_CHOWN/CAP_FOWNER)"
        }
        Some(libc::ENOSPC) => {
            " (no space: the tmpfs is full — its size= or nr_inodes= is smaller than the saved \
             content — or the host is short of memory)"
        }
        Some(libc::EROFS) => {
            " (read-only file system: the path lies on a read-only mount; create it beforehand or \
             make that mount writable)"
        }
        Some(libc::ENOENT) => " (a path component is missing)",
        Some(libc::ENOTDIR) => " (a path component is not a directory)",
        Some(libc::EEXIST) => " (it already exists: restore into an empty place)",
        Some(libc::ENODEV) => " (this kernel does not offer the file system type)",
        Some(libc::EBUSY) => " (busy: something is still using it)",
        _ => "",
    }
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> MountError {
    MountError::Io {
        op,
        path: path.to_owned(),
        advice: advice(&source),
        source,
    }
}

fn utf8(path: &Path) -> Result<&str, MountError> {
    path.to_str().ok_or_else(|| MountError::NonUtf8 {
        path: path.to_string_lossy().into_owned(),
    })
}

// ---------------------------------------------------------------------------------------------
// Mount tables
// ---------------------------------------------------------------------------------------------

/// One line of a `mountinfo` table (the one parser lives in [`stasis_sys::proc`]).
pub use stasis_sys::proc::MountInfo;

fn same_dev(a: &MountInfo, b: &MountInfo) -> bool {
    a.major == b.major && a.minor == b.minor
}

/// Parses the text of a `/proc/PID/mountinfo` file: octal escapes (`\040`, `\011`, `\012`,
/// `\134`) in paths, any number of optional fields up to the ` - ` separator, an empty source.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>, MountError> {
    let rows = stasis_sys::proc::parse_mountinfo(text).map_err(|source| MountError::Table {
        path: "mountinfo text".to_owned(),
        source,
    })?;
    Ok(rows.into_iter().collect())
}

/// Reads and parses `/proc/PID/mountinfo`: the mount table of PID's mount namespace.
pub fn read_mountinfo(pid: i32) -> Result<Vec<MountInfo>, MountError> {
    let rows = stasis_sys::proc::read_mountinfo(pid).map_err(|source| MountError::Table {
        path: format!("/proc/{pid}/mountinfo"),
        source,
    })?;
    Ok(rows.into_iter().collect())
}

/// Reads and parses `/proc/thread-self/mountinfo`: the mount table of the calling thread,
/// which differs from the process's after [`stasis_sys::mount::unshare_fs_and_mount_ns`].
pub fn read_thread_mountinfo() -> Result<Vec<MountInfo>, MountError> {
    let table = |source| MountError::Table {
        path: THREAD_MOUNTINFO.to_owned(),
        source,
    };
    let text = fs::read_to_string(THREAD_MOUNTINFO).map_err(|source| {
        table(ProcError::Io {
            path: THREAD_MOUNTINFO.to_owned(),
            source,
        })
    })?;
    let rows = stasis_sys::proc::parse_mountinfo(&text).map_err(table)?;
    Ok(rows.into_iter().collect())
}

// ---------------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------------

/// How a tmpfs is mounted again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsSpec {
    /// The tmpfs options to pass to `mount(2)` ([`tmpfs_options`] of the super options).
    pub fs_options: String,
    /// Per-mount flags ([`mount_flags`] of the per-mount options, plus `MS_RDONLY` when the
    /// superblock is read-only).
    pub flags: u64,
}

/// What to do with each mount of the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The same mount as in the host's table (same mount point, same `major:minor`, same root):
    /// the partition inherits it again at restore. Nothing to save.
    Inherited,
    /// Set up by stasis itself (its mount point is in the `ours` list). Nothing to save.
    Ours,
    /// A tmpfs of the partition: saved with its content.
    Tmpfs(TmpfsSpec),
    /// A bind of a host file or directory: recreated by a bind mount from `host_path`.
    Bind {
        /// Host path to bind from.
        host_path: String,
    },
    /// A bind of (a part of) a tmpfs saved earlier in the table: recreated, after that tmpfs,
    /// by a bind mount from `path`.
    BindFromTmpfs {
        /// Path inside the partition (below the saved tmpfs's mount point) to bind from.
        path: String,
    },
    /// Cannot be saved; the explanation names the mount and what to do.
    Unsupported(String),
}

/// Per-mount flags (`MS_*`) of a per-mount option string such as `ro,nosuid,nodev,relatime`.
/// Without `noatime` or `relatime` the mount uses strict atime, which `mount(2)` needs to be
/// told (`MS_STRICTATIME`), or it would pick `relatime`.
pub fn mount_flags(options: &str) -> u64 {
    let mut flags = 0;
    let mut atime = false;
    for opt in options.split(',') {
        match opt {
            "ro" => flags |= sm::MS_RDONLY,
            "nosuid" => flags |= sm::MS_NOSUID,
            "nodev" => flags |= sm::MS_NODEV,
            "noexec" => flags |= sm::MS_NOEXEC,
            "nosymfollow" => flags |= sm::MS_NOSYMFOLLOW,
            "nodiratime" => flags |= sm::MS_NODIRATIME,
            "noatime" => {
                flags |= sm::MS_NOATIME;
                atime = true;
            }
            "relatime" => {
                flags |= sm::MS_RELATIME;
                atime = true;
            }
            _ => {}
        }
    }
    if !atime {
        flags |= sm::MS_STRICTATIME;
    }
    flags
}

/// The options of a tmpfs superblock option string (`rw,size=65536k,nr_inodes=1024,mode=1777,
/// uid=1000,gid=1000,inode64`) that are given back to `mount(2)`: those in
/// [`TMPFS_OPTIONS`], in their order of appearance (`size=65536k,nr_inodes=1024,mode=1777,…`).
pub fn tmpfs_options(super_options: &str) -> String {
    split_mount_options(super_options)
        .into_iter()
        .filter(|o| {
            o.split_once('=')
                .is_some_and(|(k, _)| TMPFS_OPTIONS.contains(&k))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `rest` of `root` below `prefix` (`None` when `prefix` is not `root` or one of its
/// ancestors), without a leading `/`.
fn below<'a>(root: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix == "/" {
        return Some(root.trim_start_matches('/'));
    }
    let rest = root.strip_prefix(prefix.trim_end_matches('/'))?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// `dir` joined with the relative path `rel` (`rel` may be empty).
fn join(dir: &str, rel: &str) -> String {
    if rel.is_empty() {
        dir.to_owned()
    } else if dir.ends_with('/') {
        format!("{dir}{rel}")
    } else {
        format!("{dir}/{rel}")
    }
}

/// Among `candidates` (mounts of the same device), the one whose root is the longest prefix
/// of `root`, and the path below it.
fn best_prefix<'a, 'r>(
    candidates: impl Iterator<Item = &'a MountInfo>,
    root: &'r str,
) -> Option<(&'a MountInfo, &'r str)> {
    candidates
        .filter_map(|h| below(root, &h.root).map(|rest| (h, rest)))
        .max_by_key(|(h, _)| h.root.trim_end_matches('/').len())
}

/// Indices of `mounts` in restore order: the table's order, except that a mount whose parent
/// is in the table but comes later is moved right after it (and after its own earlier
/// children).
fn parents_first(mounts: &[MountInfo]) -> Vec<usize> {
    let ids: HashSet<u32> = mounts.iter().map(|m| m.mount_id).collect();
    let mut emitted: HashSet<u32> = HashSet::new();
    let mut waiting: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut order = Vec::with_capacity(mounts.len());
    for (i, m) in mounts.iter().enumerate() {
        let ready = m.parent_id == m.mount_id
            || !ids.contains(&m.parent_id)
            || emitted.contains(&m.parent_id);
        if !ready {
            waiting.entry(m.parent_id).or_default().push(i);
            continue;
        }
        let mut stack = vec![i];
        while let Some(j) = stack.pop() {
            order.push(j);
            emitted.insert(mounts[j].mount_id);
            if let Some(kids) = waiting.remove(&mounts[j].mount_id) {
                stack.extend(kids.into_iter().rev());
            }
        }
    }
    // A parent cycle (only in a corrupt table): keep the rest in table order.
    let mut rest: Vec<usize> = waiting.into_values().flatten().collect();
    rest.sort_unstable();
    order.extend(rest);
    order
}

/// Classifies every mount of the partition's table against the host's table; `ours` lists the
/// mount points stasis set up itself. The result is in restore order (parents first).
pub fn classify(
    partition: &[MountInfo],
    host: &[MountInfo],
    ours: &[String],
) -> Vec<(MountInfo, Disposition)> {
    let mut out: Vec<(MountInfo, Disposition)> = Vec::with_capacity(partition.len());
    for i in parents_first(partition) {
        let m = &partition[i];
        let saved_tmpfs = out
            .iter()
            .filter(|(_, d)| matches!(d, Disposition::Tmpfs(_)))
            .map(|(t, _)| t);
        let d = classify_one(m, host, ours, saved_tmpfs);
        tracing::debug!(mountpoint = %m.mount_point, fstype = %m.fs_type, disposition = ?d, "mount classified");
        out.push((m.clone(), d));
    }
    out
}

fn classify_one<'a>(
    m: &MountInfo,
    host: &[MountInfo],
    ours: &[String],
    saved_tmpfs: impl Iterator<Item = &'a MountInfo> + Clone,
) -> Disposition {
    let mp = &m.mount_point;
    if ours.iter().any(|o| o == mp) {
        return Disposition::Ours;
    }
    if host
        .iter()
        .any(|h| h.mount_point == *mp && same_dev(h, m) && h.root == m.root)
    {
        return Disposition::Inherited;
    }
    let dev = format!("{}:{}", m.major, m.minor);
    if PSEUDO_FS.contains(&m.fs_type.as_str()) {
        return Disposition::Unsupported(format!(
            "{} mount at {mp} was made inside the partition: stasis recreates /proc, /dev/pts \
             and /dev/mqueue of a partition itself and cannot save other {} mounts; unmount it \
             before the checkpoint",
            m.fs_type, m.fs_type
        ));
    }
    if m.root.ends_with("//deleted") {
        return Disposition::Unsupported(format!(
            "{} mount at {mp} shows {}, which was deleted: there is nothing to bind from at \
             restore",
            m.fs_type, m.root
        ));
    }
    let host_same_dev = host.iter().filter(|h| same_dev(h, m));
    if host_same_dev.clone().next().is_some() {
        return match best_prefix(host_same_dev, &m.root) {
            Some((h, rest)) => Disposition::Bind {
                host_path: join(&h.mount_point, rest),
            },
            None => Disposition::Unsupported(format!(
                "{} mount at {mp} shows {} of device {dev}, which no host mount of that device \
                 makes visible: there is no host path to bind from at restore",
                m.fs_type, m.root
            )),
        };
    }
    if m.fs_type == "tmpfs" {
        let same = saved_tmpfs.filter(|t| same_dev(t, m));
        if let Some(first) = same.clone().next() {
            return match best_prefix(same, &m.root) {
                Some((t, rest)) => Disposition::BindFromTmpfs {
                    path: join(&t.mount_point, rest),
                },
                None => Disposition::Unsupported(format!(
                    "tmpfs at {mp} shows {} of the tmpfs saved at {}, outside the part \
                     that mount shows; mount the whole tmpfs first",
                    m.root, first.mount_point
                )),
            };
        }
        let mut flags = mount_flags(&m.mount_options);
        if split_mount_options(&m.super_options)
            .iter()
            .any(|o| o == "ro")
        {
            flags |= sm::MS_RDONLY;
        }
        return Disposition::Tmpfs(TmpfsSpec {
            fs_options: tmpfs_options(&m.super_options),
            flags,
        });
    }
    Disposition::Unsupported(format!(
        "{} mount of {:?} at {mp} (device {dev}) was made inside the partition: only tmpfs \
         mounts and bind mounts of host paths can be saved",
        m.fs_type, m.source
    ))
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// Kind of a saved mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MountKind {
    /// Not set (refused by [`validate`]).
    Unspecified = 0,
    /// A tmpfs with its content (`entries`).
    Tmpfs = 1,
    /// A bind mount from `host_path`.
    Bind = 2,
}

/// Type of a file in a saved tmpfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EntryKind {
    /// Not set (refused by [`validate`]).
    Unspecified = 0,
    /// Directory.
    Dir = 1,
    /// Regular file (content in `chunks`/`extents`).
    File = 2,
    /// Symbolic link (`target`).
    Symlink = 3,
    /// Named pipe.
    Fifo = 4,
    /// Unix socket file: recorded only; the socket restore binds it again.
    Socket = 5,
    /// Character device (`rdev`).
    CharDev = 6,
    /// Block device (`rdev`).
    BlockDev = 7,
}

/// One saved mount.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MountRecord {
    /// Absolute mount point in the partition's mount namespace.
    #[prost(string, tag = "1")]
    pub mountpoint: String,
    /// [`MountKind`].
    #[prost(enumeration = "MountKind", tag = "2")]
    pub kind: i32,
    /// Tmpfs: options for `mount(2)`, only those in [`TMPFS_OPTIONS`] (`size=65536k,mode=1777`).
    #[prost(string, tag = "3")]
    pub fs_options: String,
    /// Per-mount `MS_*` flags (a subset of [`RESTORABLE_FLAGS`]); `MS_RDONLY` is applied after
    /// the content is written.
    #[prost(uint64, tag = "4")]
    pub flags: u64,
    /// Bind: the path to bind from (a host path, unless `source_in_partition`).
    #[prost(string, tag = "5")]
    pub host_path: String,
    /// Tmpfs: its files, parents before children; the first is the root (`""`).
    #[prost(message, repeated, tag = "6")]
    pub entries: Vec<TreeEntry>,
    /// Tmpfs: the mount source shown in the mount table (`tmpfs`, `shm`, …); empty: `tmpfs`.
    #[prost(string, tag = "7")]
    pub source: String,
    /// Bind: `host_path` is a path of the partition, inside a tmpfs restored earlier in the
    /// list (not a host path); a restore that moves the mount points must move it too.
    #[prost(bool, tag = "8")]
    pub source_in_partition: bool,
}

/// One file of a saved tmpfs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TreeEntry {
    /// Path relative to the mount point, components separated by `/`; `""` is the root.
    #[prost(string, tag = "1")]
    pub path: String,
    /// [`EntryKind`].
    #[prost(enumeration = "EntryKind", tag = "2")]
    pub kind: i32,
    /// Permission bits including set-uid, set-gid and sticky (`st_mode & 0o7777`).
    #[prost(uint32, tag = "3")]
    pub mode: u32,
    /// Owner.
    #[prost(uint32, tag = "4")]
    pub uid: u32,
    /// Group.
    #[prost(uint32, tag = "5")]
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    #[prost(int64, tag = "6")]
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    #[prost(uint32, tag = "7")]
    pub mtime_nsec: u32,
    /// Size in bytes (`st_size`); for a file, the length to set after writing the extents.
    #[prost(uint64, tag = "8")]
    pub size: u64,
    /// Symlink: its target.
    #[prost(string, tag = "9")]
    pub target: String,
    /// Device nodes: the device number (`st_rdev`).
    #[prost(uint64, tag = "10")]
    pub rdev: u64,
    /// File: blake3 ids (32 bytes) of the content chunks in file order, each at most
    /// [`CONTENT_CHUNK`] bytes; holes are not stored.
    #[prost(bytes = "vec", repeated, tag = "11")]
    pub chunks: Vec<Vec<u8>>,
    /// File: where each chunk goes (same count as `chunks`, ascending, not overlapping).
    #[prost(message, repeated, tag = "12")]
    pub extents: Vec<Extent>,
    /// Path of an earlier entry with the same inode (then nothing else of this entry is used
    /// but its path), or `""`.
    #[prost(string, tag = "13")]
    pub hardlink_of: String,
    /// `user.*` extended attributes.
    #[prost(message, repeated, tag = "14")]
    pub xattrs: Vec<Xattr>,
}

/// Where one chunk of file content goes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Extent {
    /// Byte offset in the file.
    #[prost(uint64, tag = "1")]
    pub offset: u64,
    /// Length in bytes (the chunk's raw length).
    #[prost(uint64, tag = "2")]
    pub len: u64,
}

/// One extended attribute.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Xattr {
    /// Full name (`user.comment`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// Dump
// ---------------------------------------------------------------------------------------------

/// Saves one classified mount. [`Disposition::Tmpfs`]: walks the tree at `m.mountpoint` (in
/// the calling thread's mount namespace, which must show the partition's mounts) and stores
/// file content as chunks through `writer`. [`Disposition::Bind`] and
/// [`Disposition::BindFromTmpfs`]: records the path to bind from and the per-mount flags. [`Disposition::Inherited`] and [`Disposition::Ours`]: `None`.
/// [`Disposition::Unsupported`]: an error carrying the explanation, so an unsupported mount
/// is never dropped silently.
pub fn dump_mount(
    m: &MountInfo,
    d: &Disposition,
    writer: &ImageWriter,
) -> Result<Option<MountRecord>, MountError> {
    match d {
        Disposition::Inherited | Disposition::Ours => Ok(None),
        Disposition::Unsupported(reason) => Err(MountError::Unsupported {
            mountpoint: m.mount_point.clone(),
            reason: reason.clone(),
        }),
        Disposition::Bind { host_path: path } | Disposition::BindFromTmpfs { path } => {
            let in_partition = matches!(d, Disposition::BindFromTmpfs { .. });
            tracing::debug!(mountpoint = %m.mount_point, %path, in_partition, "bind mount saved");
            Ok(Some(MountRecord {
                mountpoint: m.mount_point.clone(),
                kind: MountKind::Bind as i32,
                flags: mount_flags(&m.mount_options),
                host_path: path.clone(),
                source_in_partition: in_partition,
                ..Default::default()
            }))
        }
        Disposition::Tmpfs(spec) => dump_tmpfs(m, spec, writer).map(Some),
    }
}

/// Finds the mount visible at `m.mountpoint` in the calling thread's table, checks that it is
/// `m`, and returns the paths (relative to the mount point) of the mounts on top of it.
fn nested_mounts(m: &MountInfo) -> Result<HashSet<String>, MountError> {
    let table = read_thread_mountinfo()?;
    let at_mp: Vec<&MountInfo> = table
        .iter()
        .filter(|t| t.mount_point == m.mount_point)
        .collect();
    // The visible one is the one no other mount at the same place sits on.
    let top = at_mp
        .iter()
        .find(|t| {
            !at_mp
                .iter()
                .any(|o| o.parent_id == t.mount_id && o.mount_id != t.mount_id)
        })
        .ok_or_else(|| MountError::NotVisible {
            mountpoint: m.mount_point.clone(),
            found: "nothing is mounted there in this mount namespace".to_owned(),
        })?;
    if !(same_dev(top, m) && top.root == m.root && top.fs_type == m.fs_type) {
        return Err(MountError::NotVisible {
            mountpoint: m.mount_point.clone(),
            found: format!(
                "covered by a {} mount of device {}:{} (root {})",
                top.fs_type, top.major, top.minor, top.root
            ),
        });
    }
    // Mounts that descend from the visible one (others are hidden below it).
    let mut above: HashSet<u32> = HashSet::from([top.mount_id]);
    let mut nested = HashSet::new();
    let mut grew = true;
    while grew {
        grew = false;
        for t in &table {
            if t.mount_id != top.mount_id
                && above.contains(&t.parent_id)
                && above.insert(t.mount_id)
            {
                grew = true;
                if let Some(rel) = below(&t.mount_point, &m.mount_point) {
                    if !rel.is_empty() {
                        nested.insert(rel.to_owned());
                    }
                }
            }
        }
    }
    Ok(nested)
}

fn entry_kind(ft: fs::FileType) -> EntryKind {
    if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_socket() {
        EntryKind::Socket
    } else if ft.is_char_device() {
        EntryKind::CharDev
    } else {
        EntryKind::BlockDev
    }
}

fn dump_tmpfs(
    m: &MountInfo,
    spec: &TmpfsSpec,
    writer: &ImageWriter,
) -> Result<MountRecord, MountError> {
    let root = PathBuf::from(&m.mount_point);
    let nested = nested_mounts(m)?;
    let root_meta = fs::symlink_metadata(&root).map_err(|e| io_err("stat", &root, e))?;
    let dev = root_meta.dev();
    let mut entries = Vec::new();
    let mut inodes: HashMap<u64, String> = HashMap::new();
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    // Depth-first, names sorted: parents before children, deterministic order. The flag marks
    // the mount point of a nested mount.
    let mut stack: Vec<(String, PathBuf, fs::Metadata, bool)> =
        vec![(String::new(), root, root_meta, false)];
    while let Some((rel, abs, meta, covered)) = stack.pop() {
        if covered {
            tracing::debug!(path = %abs.display(), "mount point of a nested mount: saved as an empty placeholder");
            entries.push(placeholder(rel, &meta));
            continue;
        }
        let kind = entry_kind(meta.file_type());
        let mut e = TreeEntry {
            path: rel.clone(),
            kind: kind as i32,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec() as u32,
            size: meta.size(),
            ..Default::default()
        };
        if kind != EntryKind::Dir && meta.nlink() > 1 {
            if let Some(first) = inodes.get(&meta.ino()) {
                e.hardlink_of = first.clone();
                entries.push(e);
                continue;
            }
            inodes.insert(meta.ino(), rel.clone());
        }
        if kind != EntryKind::Symlink {
            e.xattrs = dump_xattrs(&abs)?;
        }
        match kind {
            EntryKind::Dir => {
                let mut children = Vec::new();
                let rd = fs::read_dir(&abs).map_err(|e| io_err("list directory", &abs, e))?;
                for item in rd {
                    let item = item.map_err(|e| io_err("list directory", &abs, e))?;
                    let cabs = abs.join(item.file_name());
                    let name = utf8(Path::new(&item.file_name()))?.to_owned();
                    let crel = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    let cmeta =
                        fs::symlink_metadata(&cabs).map_err(|e| io_err("stat", &cabs, e))?;
                    let covered = nested.contains(&crel) || cmeta.dev() != dev;
                    children.push((crel, cabs, cmeta, covered));
                }
                children.sort_by(|a, b| a.0.cmp(&b.0));
                stack.extend(children.into_iter().rev());
            }
            EntryKind::File => {
                let n = dump_content(&abs, &mut e, writer, &mut buf)?;
                bytes += n;
            }
            EntryKind::Symlink => {
                let t = fs::read_link(&abs).map_err(|e| io_err("read symlink", &abs, e))?;
                e.target = utf8(&t)?.to_owned();
            }
            EntryKind::CharDev | EntryKind::BlockDev => e.rdev = meta.rdev(),
            EntryKind::Fifo | EntryKind::Socket | EntryKind::Unspecified => {}
        }
        entries.push(e);
    }
    tracing::info!(mountpoint = %m.mount_point, entries = entries.len(), bytes, "tmpfs saved");
    Ok(MountRecord {
        mountpoint: m.mount_point.clone(),
        kind: MountKind::Tmpfs as i32,
        fs_options: spec.fs_options.clone(),
        flags: spec.flags,
        source: m.source.clone(),
        entries,
        ..Default::default()
    })
}

/// The entry for the mount point of a nested mount: the directory (or file) underneath is
/// hidden, so an empty one with plain attributes stands for it.
fn placeholder(rel: String, meta: &fs::Metadata) -> TreeEntry {
    let dir = meta.is_dir();
    TreeEntry {
        path: rel,
        kind: if dir { EntryKind::Dir } else { EntryKind::File } as i32,
        mode: if dir { 0o755 } else { 0o644 },
        mtime_sec: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
        ..Default::default()
    }
}

/// The `user.*` extended attributes of `path` itself, sorted by name.
fn dump_xattrs(path: &Path) -> Result<Vec<Xattr>, MountError> {
    let names = match sm::llistxattr(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list extended attributes of", path, e)),
    };
    let mut out = Vec::new();
    let mut names: Vec<Vec<u8>> = names
        .into_iter()
        .filter(|n| n.starts_with(b"user."))
        .collect();
    // Deterministic records: by name.
    names.sort();
    for name in names {
        let value = match sm::lgetxattr(path, &name) {
            Ok(v) => v,
            // Removed since it was listed.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(io_err("read extended attributes of", path, e)),
        };
        let name = String::from_utf8(name).map_err(|_| MountError::NonUtf8 {
            path: format!("{} (an extended attribute name)", path.display()),
        })?;
        out.push(Xattr { name, value });
    }
    Ok(out)
}

/// Stores the data regions of the regular file at `path` (`e.size` bytes) as chunks cut at
/// multiples of [`CONTENT_CHUNK`] and lists them in `e.chunks`/`e.extents`. Returns the number
/// of bytes stored.
fn dump_content(
    path: &Path,
    e: &mut TreeEntry,
    writer: &ImageWriter,
    buf: &mut Vec<u8>,
) -> Result<u64, MountError> {
    let size = e.size;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
        .open(path)
        .map_err(|e| io_err("open", path, e))?;
    let fd = f.as_raw_fd();
    let mut stored = 0;
    let mut off = 0u64;
    while off < size {
        let data = match stasis_sys::sys::lseek(fd, off as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            // No data after `off`: the rest is a hole.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            // No hole support: all of it is data.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => off,
            Err(e) => return Err(io_err("find the data regions of", path, e)),
        };
        let hole = match stasis_sys::sys::lseek(fd, data as i64, libc::SEEK_HOLE) {
            Ok(h) => (h as u64).min(size),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => size,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) => return Err(io_err("find the data regions of", path, e)),
        };
        let mut pos = data;
        while pos < hole {
            let end = ((pos / CONTENT_CHUNK + 1) * CONTENT_CHUNK).min(hole);
            let len = (end - pos) as usize;
            buf.resize(len, 0);
            f.read_exact_at(buf, pos).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    MountError::Changed {
                        path: path.to_owned(),
                    }
                } else {
                    io_err("read", path, e)
                }
            })?;
            let id = writer
                .put_chunk(buf)
                .map_err(|source| MountError::StoreChunk {
                    path: path.to_owned(),
                    source,
                })?;
            e.chunks.push(id.to_vec());
            e.extents.push(Extent {
                offset: pos,
                len: len as u64,
            });
            stored += len as u64;
            pos = end;
        }
        off = hole.max(data + 1);
    }
    Ok(stored)
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// Recreates one saved mount at its mount point, in the calling thread's mount namespace:
/// see the module documentation for the order of operations. The record is checked with
/// [`validate`] first; nothing is touched when it is invalid.
pub fn restore_mount(rec: &MountRecord, reader: &ImageReader) -> Result<(), MountError> {
    validate(rec).map_err(|reason| MountError::Invalid {
        mountpoint: rec.mountpoint.clone(),
        reason: reason.0,
    })?;
    match MountKind::try_from(rec.kind) {
        Ok(MountKind::Tmpfs) => restore_tmpfs(rec, reader),
        Ok(MountKind::Bind) => restore_bind(rec),
        // validate() refused anything else.
        _ => Err(MountError::Invalid {
            mountpoint: rec.mountpoint.clone(),
            reason: format!("unknown mount kind {}", rec.kind),
        }),
    }
}

/// `mkdir -p` of a mount point that must be a directory.
fn ensure_dir(path: &Path) -> Result<(), MountError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io_err(
            "use as a directory mount point",
            path,
            io::Error::from_raw_os_error(libc::ENOTDIR),
        )),
        Err(_) => fs::create_dir_all(path).map_err(|e| io_err("create directory", path, e)),
    }
}

/// Creates an empty file as the mount point of a file bind if nothing is there.
fn ensure_file(path: &Path) -> Result<(), MountError> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => Ok(()),
        Ok(_) => Err(io_err(
            "use as a file mount point",
            path,
            io::Error::from_raw_os_error(libc::EISDIR),
        )),
        Err(_) => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| io_err("create directory", parent, e))?;
            }
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map(drop)
                .map_err(|e| io_err("create file", path, e))
        }
    }
}

fn restore_bind(rec: &MountRecord) -> Result<(), MountError> {
    let mp = Path::new(&rec.mountpoint);
    let src = Path::new(&rec.host_path);
    let meta = fs::metadata(src).map_err(|e| io_err("bind from", src, e))?;
    if meta.is_dir() {
        ensure_dir(mp)?;
    } else {
        ensure_file(mp)?;
    }
    sm::mount(&rec.host_path, mp, "", sm::MS_BIND, "")
        .map_err(|e| io_err("bind mount the host path onto", mp, e))?;
    let r = sm::mount("", mp, "", sm::MS_REMOUNT | sm::MS_BIND | rec.flags, "");
    if let Err(e) = r {
        let _ = sm::umount(mp, sm::MNT_DETACH);
        return Err(io_err("set the mount flags of", mp, e));
    }
    tracing::info!(mountpoint = %rec.mountpoint, host_path = %rec.host_path, flags = rec.flags, "bind mount restored");
    Ok(())
}

fn restore_tmpfs(rec: &MountRecord, reader: &ImageReader) -> Result<(), MountError> {
    let mp = Path::new(&rec.mountpoint);
    ensure_dir(mp)?;
    let source = if rec.source.is_empty() {
        "tmpfs"
    } else {
        &rec.source
    };
    sm::mount(
        source,
        mp,
        "tmpfs",
        rec.flags & !sm::MS_RDONLY,
        &rec.fs_options,
    )
    .map_err(|e| io_err("mount tmpfs at", mp, e))?;
    let filled = fill_tree(mp, &rec.entries, reader).and_then(|()| {
        if rec.flags & sm::MS_RDONLY != 0 {
            sm::mount("", mp, "", sm::MS_REMOUNT | sm::MS_BIND | rec.flags, "")
                .map_err(|e| io_err("remount read-only", mp, e))
        } else {
            Ok(())
        }
    });
    if let Err(e) = filled {
        // Leave no half-filled tmpfs behind.
        if let Err(u) = sm::umount(mp, sm::MNT_DETACH) {
            tracing::warn!(mountpoint = %mp.display(), error = %u, "cannot unmount the partly restored tmpfs");
        }
        return Err(e);
    }
    tracing::info!(mountpoint = %rec.mountpoint, entries = rec.entries.len(), "tmpfs restored");
    Ok(())
}

fn kind_of(e: &TreeEntry) -> EntryKind {
    EntryKind::try_from(e.kind).unwrap_or(EntryKind::Unspecified)
}

/// Creates the files of a validated record below `mp` (a fresh, empty tmpfs).
fn fill_tree(mp: &Path, entries: &[TreeEntry], reader: &ImageReader) -> Result<(), MountError> {
    let at = |e: &TreeEntry| {
        if e.path.is_empty() {
            mp.to_path_buf()
        } else {
            mp.join(&e.path)
        }
    };
    let kinds: HashMap<&str, EntryKind> = entries
        .iter()
        .map(|e| (e.path.as_str(), kind_of(e)))
        .collect();
    // A hard link to a socket is skipped with it.
    let skipped = |e: &TreeEntry| {
        kind_of(e) == EntryKind::Socket
            || (!e.hardlink_of.is_empty()
                && kinds.get(e.hardlink_of.as_str()) == Some(&EntryKind::Socket))
    };
    let own = |e: &&TreeEntry| e.hardlink_of.is_empty() && !skipped(e);

    // Directories (the root exists), private until their mode is set.
    for e in entries
        .iter()
        .filter(|e| kind_of(e) == EntryKind::Dir && !e.path.is_empty())
    {
        let p = at(e);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .map_err(|err| io_err("create directory", &p, err))?;
    }
    // Regular files.
    let mut buf = Vec::new();
    for e in entries
        .iter()
        .filter(own)
        .filter(|e| kind_of(e) == EntryKind::File)
    {
        restore_content(&at(e), e, reader, &mut buf)?;
    }
    // Symlinks, FIFOs, device nodes.
    for e in entries.iter().filter(own) {
        let p = at(e);
        let r = match kind_of(e) {
            EntryKind::Symlink => symlink(&e.target, &p),
            EntryKind::Fifo => sm::mkfifo(&p, 0o600),
            EntryKind::CharDev => sm::mknod(&p, libc::S_IFCHR | 0o600, e.rdev),
            EntryKind::BlockDev => sm::mknod(&p, libc::S_IFBLK | 0o600, e.rdev),
            _ => continue,
        };
        r.map_err(|err| io_err("create", &p, err))?;
    }
    for e in entries.iter().filter(|e| kind_of(e) == EntryKind::Socket) {
        tracing::debug!(path = %at(e).display(), "unix socket file left to the socket restore");
    }
    // Hard links.
    for e in entries
        .iter()
        .filter(|e| !e.hardlink_of.is_empty() && !skipped(e))
    {
        let p = at(e);
        let original = mp.join(&e.hardlink_of);
        fs::hard_link(&original, &p).map_err(|err| io_err("create hard link", &p, err))?;
    }
    // Extended attributes, owners, then modes (chown clears set-id bits).
    for e in entries.iter().filter(own) {
        let p = at(e);
        for x in &e.xattrs {
            sm::lsetxattr(&p, x.name.as_bytes(), &x.value)
                .map_err(|err| io_err("set extended attributes of", &p, err))?;
        }
        lchown(&p, Some(e.uid), Some(e.gid))
            .map_err(|err| io_err("change the owner of", &p, err))?;
    }
    for e in entries
        .iter()
        .filter(own)
        .filter(|e| kind_of(e) != EntryKind::Symlink)
    {
        let p = at(e);
        fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))
            .map_err(|err| io_err("change the mode of", &p, err))?;
    }
    // Modification times last: everything else first, then directories deepest first.
    let (dirs, others): (Vec<&TreeEntry>, Vec<&TreeEntry>) = entries
        .iter()
        .filter(own)
        .partition(|e| kind_of(e) == EntryKind::Dir);
    for e in others.into_iter().chain(dirs.into_iter().rev()) {
        let p = at(e);
        sm::set_mtime_nofollow(&p, e.mtime_sec, e.mtime_nsec)
            .map_err(|err| io_err("set the modification time of", &p, err))?;
    }
    Ok(())
}

/// Creates the regular file `path` with the content of entry `e`.
fn restore_content(
    path: &Path,
    e: &TreeEntry,
    reader: &ImageReader,
    buf: &mut Vec<u8>,
) -> Result<(), MountError> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| io_err("create", path, err))?;
    for (raw, ext) in e.chunks.iter().zip(&e.extents) {
        let mut id: ChunkId = [0; 32];
        id.copy_from_slice(raw);
        reader
            .read_chunk_into(&id, buf)
            .map_err(|source| MountError::ReadChunk {
                path: path.to_owned(),
                id: chunk_hex(&id),
                source,
            })?;
        if buf.len() as u64 != ext.len {
            return Err(MountError::ChunkLength {
                path: path.to_owned(),
                id: chunk_hex(&id),
                offset: ext.offset,
                expected: ext.len,
                found: buf.len() as u64,
            });
        }
        f.write_all_at(buf, ext.offset)
            .map_err(|err| io_err("write", path, err))?;
    }
    // Trailing hole (and the exact size).
    f.set_len(e.size)
        .map_err(|err| io_err("set the size of", path, err))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// An absolute path without empty, `.` or `..` components (a trailing `/` is refused too).
fn check_abs(what: &str, p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{what} {p:?} is not an absolute path"));
    }
    if p != "/" {
        check_components(what, &p[1..])?;
    }
    Ok(())
}

fn check_components(what: &str, p: &str) -> Result<(), String> {
    if p.contains('\0') {
        return Err(format!("{what} {p:?} holds a NUL byte"));
    }
    for c in p.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!(
                "{what} {p:?} has an empty, \".\" or \"..\" component"
            ));
        }
    }
    Ok(())
}

fn check_fs_options(opts: &str) -> Result<(), String> {
    if opts.is_empty() {
        return Ok(());
    }
    for o in opts.split(',') {
        let ok = o.split_once('=').is_some_and(|(k, v)| {
            TMPFS_OPTIONS.contains(&k)
                && !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'%')
        });
        if !ok {
            return Err(format!(
                "tmpfs option {o:?} is not one of {} with a plain value",
                TMPFS_OPTIONS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Checks a record before anything is created from it: known kinds, absolute normalised mount
/// point and host path, known flags and tmpfs options; for a tmpfs, the root entry first,
/// relative normalised unique entry paths whose parent directory comes earlier, content only
/// on files with one 32-byte chunk id per extent and extents ascending, non-empty, at most
/// [`CONTENT_CHUNK`] long and inside the file, hard links to an earlier non-directory entry of
/// the same kind, `user.*` attributes only. The error says which entry and what is wrong.
pub fn validate(rec: &MountRecord) -> Result<(), InvalidMount> {
    check_record(rec).map_err(InvalidMount)
}

/// Why a mount record is refused: which entry and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidMount(pub String);

impl std::ops::Deref for InvalidMount {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

fn check_record(rec: &MountRecord) -> Result<(), String> {
    check_abs("mount point", &rec.mountpoint)?;
    if rec.mountpoint == "/" {
        return Err("a mount at / cannot be recreated".to_owned());
    }
    if rec.flags & !RESTORABLE_FLAGS != 0 {
        return Err(format!(
            "unknown mount flags {:#x}",
            rec.flags & !RESTORABLE_FLAGS
        ));
    }
    if rec.source.contains('\0') {
        return Err("the source holds a NUL byte".to_owned());
    }
    match MountKind::try_from(rec.kind) {
        Ok(MountKind::Bind) => {
            check_abs("host path", &rec.host_path)?;
            if !rec.entries.is_empty() || !rec.fs_options.is_empty() {
                return Err("a bind mount has no entries and no tmpfs options".to_owned());
            }
            if rec.source_in_partition && rec.host_path == rec.mountpoint {
                return Err("a bind mount from its own mount point".to_owned());
            }
            Ok(())
        }
        Ok(MountKind::Tmpfs) => {
            if !rec.host_path.is_empty() || rec.source_in_partition {
                return Err("a tmpfs has no host path".to_owned());
            }
            check_fs_options(&rec.fs_options)?;
            validate_entries(&rec.entries)
        }
        _ => Err(format!("unknown mount kind {}", rec.kind)),
    }
}

fn validate_entries(entries: &[TreeEntry]) -> Result<(), String> {
    match entries.first() {
        Some(r) if r.path.is_empty() && r.kind == EntryKind::Dir as i32 => {}
        _ => return Err("the first entry must be the root directory (path \"\")".to_owned()),
    }
    // path -> (kind, is a hard link)
    let mut seen: HashMap<&str, (EntryKind, bool)> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let bad = |what: String| format!("entry {i} ({:?}): {what}", e.path);
        if i > 0 {
            if e.path.is_empty() || e.path.starts_with('/') {
                return Err(bad(
                    "the path must be relative to the mount point".to_owned()
                ));
            }
            check_components("path", &e.path).map_err(bad)?;
            let parent = e.path.rsplit_once('/').map_or("", |(p, _)| p);
            match seen.get(parent) {
                Some((EntryKind::Dir, false)) => {}
                _ => {
                    return Err(bad(format!(
                        "its parent {parent:?} is not an earlier directory entry"
                    )))
                }
            }
            if seen.contains_key(e.path.as_str()) {
                return Err(bad("the path appears twice".to_owned()));
            }
        }
        let kind = match EntryKind::try_from(e.kind) {
            Ok(EntryKind::Unspecified) | Err(_) => {
                return Err(bad(format!("unknown entry kind {}", e.kind)))
            }
            Ok(k) => k,
        };
        if e.mode & !0o7777 != 0 {
            return Err(bad(format!("mode {:#o} has bits beyond 0o7777", e.mode)));
        }
        if e.mtime_nsec >= 1_000_000_000 {
            return Err(bad(format!(
                "mtime nanoseconds {} out of range",
                e.mtime_nsec
            )));
        }
        if e.chunks.len() != e.extents.len() {
            return Err(bad(format!(
                "{} chunks but {} extents",
                e.chunks.len(),
                e.extents.len()
            )));
        }
        if !e.chunks.is_empty() && (kind != EntryKind::File || !e.hardlink_of.is_empty()) {
            return Err(bad(
                "only a regular file (not a hard link) has content".to_owned()
            ));
        }
        if kind == EntryKind::Symlink && e.hardlink_of.is_empty() {
            if e.target.is_empty() || e.target.contains('\0') {
                return Err(bad("a symlink needs a target without NUL bytes".to_owned()));
            }
        } else if !e.target.is_empty() {
            return Err(bad("only a symlink has a target".to_owned()));
        }
        let mut end = 0u64;
        for (c, x) in e.chunks.iter().zip(&e.extents) {
            if c.len() != 32 {
                return Err(bad(format!(
                    "a chunk id has {} bytes instead of 32",
                    c.len()
                )));
            }
            if x.len == 0 || x.len > CONTENT_CHUNK {
                return Err(bad(format!(
                    "extent at {} has length {} (must be 1..={CONTENT_CHUNK})",
                    x.offset, x.len
                )));
            }
            if x.offset < end {
                return Err(bad(format!(
                    "extent at {} overlaps or precedes the previous one",
                    x.offset
                )));
            }
            end = x
                .offset
                .checked_add(x.len)
                .filter(|&e2| e2 <= e.size)
                .ok_or_else(|| {
                    bad(format!(
                        "extent at {} of length {} ends beyond the size {}",
                        x.offset, x.len, e.size
                    ))
                })?;
        }
        for x in &e.xattrs {
            if !x.name.starts_with("user.") || x.name.len() > 255 || x.name.contains('\0') {
                return Err(bad(format!(
                    "extended attribute {:?} is not a user.* name",
                    x.name
                )));
            }
            if x.value.len() > 65536 {
                return Err(bad(format!("extended attribute {:?} is too large", x.name)));
            }
        }
        let hardlink = !e.hardlink_of.is_empty();
        if hardlink {
            if i == 0 {
                return Err(bad("the root cannot be a hard link".to_owned()));
            }
            match seen.get(e.hardlink_of.as_str()) {
                Some((k, false)) if *k == kind && kind != EntryKind::Dir => {}
                _ => {
                    return Err(bad(format!(
                        "hard link to {:?}, which is not an earlier entry of the same kind \
                         (and not a directory or another hard link)",
                        e.hardlink_of
                    )))
                }
            }
        }
        seen.insert(&e.path, (kind, hardlink));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u32, parent: u32, mp: &str) -> MountInfo {
        MountInfo {
            mount_id: id,
            parent_id: parent,
            major: 0,
            minor: id,
            root: "/".into(),
            mount_point: mp.into(),
            mount_options: "rw".into(),
            optional_fields: Vec::new(),
            fs_type: "tmpfs".into(),
            source: "tmpfs".into(),
            super_options: "rw".into(),
        }
    }

    #[test]
    fn below_matches_whole_components_only() {
        assert_eq!(below("/srv/data/app", "/srv/data"), Some("app"));
        assert_eq!(below("/srv/data", "/srv/data"), Some(""));
        assert_eq!(below("/srv/data", "/srv/data/"), Some(""));
        assert_eq!(below("/srv/database", "/srv/data"), None);
        assert_eq!(below("/srv", "/srv/data"), None);
        assert_eq!(below("/x/y", "/"), Some("x/y"));
        assert_eq!(below("/", "/"), Some(""));
    }

    #[test]
    fn join_handles_the_root_and_empty_rests() {
        assert_eq!(join("/", "a/b"), "/a/b");
        assert_eq!(join("/data", ""), "/data");
        assert_eq!(join("/data", "app"), "/data/app");
    }

    #[test]
    fn parents_first_moves_children_after_their_parent_and_survives_cycles() {
        let t = [
            m(1, 1, "/"),
            m(3, 2, "/a/b"),
            m(4, 3, "/a/b/c"),
            m(2, 1, "/a"),
            m(5, 1, "/z"),
        ];
        assert_eq!(parents_first(&t), [0, 3, 1, 2, 4]);
        // 7 and 8 sit on each other (only in a corrupt table): kept, in table order.
        let t = [m(1, 1, "/"), m(7, 8, "/x"), m(8, 7, "/y"), m(9, 1, "/z")];
        assert_eq!(parents_first(&t), [0, 3, 1, 2]);
    }

    #[test]
    fn stacked_mounts_are_restored_bottom_up() {
        // Two tmpfs on the same mount point: the upper one sits on the lower one.
        let t = [m(1, 1, "/"), m(3, 2, "/s"), m(2, 1, "/s")];
        let out = classify(&t, &[m(1, 1, "/")], &[]);
        let ids: Vec<u32> = out.iter().map(|(m, _)| m.mount_id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert!(out[1..]
            .iter()
            .all(|(_, d)| matches!(d, Disposition::Tmpfs(_))));
    }
}
