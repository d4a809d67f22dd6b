//! The image container: directory layout, framed files, [`ImageWriter`] and
//! [`ImageReader`].
//!
//! An image is a directory holding `manifest.img` (the commit marker, written
//! last), framed record files `<name>.img`, and content-addressed chunks under
//! `chunks/`. The byte layouts are documented in `docs/image-format.md`.

#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::chunk::{
    chunk_hex, chunk_id_of, chunk_path, hex_bytes, read_chunk_file, read_exactly, write_chunk_file,
    write_two, ChunkId, CHUNK_HEADER_LEN, MAX_CHUNK,
};
use crate::error::{CommitError, CreateError, FrameError, OpenError, ReadError, WriteError};
use crate::manifest::{validate_file_name, ChunkEntry, FileEntry, Label, Manifest};
use crate::safefs::{Dir, PRIVATE_DIR, PRIVATE_FILE};
use crate::store::{ChunkStore, StoreWriter, CHUNKS_IN_STORE};
use crate::trust::{Keyring, SIGNATURE_FILE};

/// Major format version written in every framed header. Readers refuse any
/// other value.
pub const FORMAT_VERSION: u16 = 1;
/// Magic of a framed file.
pub const FRAME_MAGIC: [u8; 8] = *b"STASISIM";
/// Size of a framed file's header.
pub const FRAME_HEADER_LEN: usize = 56;
/// Largest payload of a framed file (1 GiB).
pub const MAX_RECORD_FILE: u64 = 1 << 30;
/// Framed-file kind of `manifest.img`.
pub const KIND_MANIFEST: u16 = 1;
/// Framed-file kind of the kernel-object records (`objects.img`).
pub const KIND_OBJECTS: u16 = 2;
/// Framed-file kind of a partition's own records (`partition.img`: settings, private mounts,
/// accounting), written by stasis-partition beside `objects.img`.
pub const KIND_PARTITION: u16 = 3;
/// Name of a partition's records file.
pub const PARTITION_FILE: &str = "partition.img";
/// Name of the manifest (commit marker).
pub const MANIFEST_FILE: &str = "manifest.img";
/// Name of the kernel-object records file the engine writes.
pub const OBJECTS_FILE: &str = "objects.img";
/// Directory of the chunk store inside an image.
pub const CHUNKS_DIR: &str = "chunks";

/// Flag bits this build understands (none yet).
const KNOWN_FLAGS: u32 = 0;
/// Temporary name of the manifest while it is written.
const MANIFEST_TMP: &str = "manifest.img.tmp";
/// Temporary name of the signature while it is written.
const SIGNATURE_TMP: &str = "signature.img.tmp";

/// Whether a directory entry's name is one an image uses (`manifest.img`, `signature.img`,
/// `*.img`, their `*.img.tmp` temporaries, hidden temporaries `.*.img.tmp*`, `chunks`): the
/// entries [`ImageWriter::create`] refuses (or, with `force`, removes). Anything else in the
/// directory (files of other tools) is left alone.
pub fn is_image_entry(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b == CHUNKS_DIR.as_bytes()
        || b.ends_with(b".img")
        || b.ends_with(b".img.tmp")
        || (b.starts_with(b".") && b.windows(8).any(|w| w == b".img.tmp"))
}
/// Shards of the chunk dedupe table (limits lock contention).
const SHARDS: usize = 64;
/// Upper bound on the threads used for fsync / verification.
const MAX_IO_THREADS: usize = 8;

/// Compression applied by [`ImageWriter::put_chunk`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Store chunks raw.
    None,
    /// lz4 block compression; a chunk that does not shrink is stored raw.
    #[default]
    Lz4,
}

/// Options of [`ImageWriter::create`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// Replace the image files of an existing directory (see [`is_image_entry`]) instead of
    /// refusing it; other files are left untouched.
    pub force: bool,
    /// How chunks are stored.
    pub compression: Compression,
}

/// What [`ImageWriter::commit`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CommitStats {
    /// Distinct chunks.
    pub chunks: u64,
    /// Sum of their raw lengths.
    pub chunk_bytes_raw: u64,
    /// Sum of their stored lengths (after compression; headers excluded).
    pub chunk_bytes_stored: u64,
    /// Record files (the manifest excluded).
    pub files: u64,
    /// Chunks found already in the workload's chunk store and not written again (counted in
    /// `chunks` and `chunk_bytes_raw`, not in `chunk_bytes_stored`).
    pub chunks_reused: u64,
}

/// What [`ImageReader::verify_all`] checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Record files verified.
    pub files: u64,
    /// Sum of their payload lengths.
    pub file_bytes: u64,
    /// Chunks verified.
    pub chunks: u64,
    /// Sum of their raw lengths.
    pub chunk_bytes_raw: u64,
    /// Sum of their stored lengths (headers excluded).
    pub chunk_bytes_stored: u64,
}

// ---------------------------------------------------------------------------
// Framed files

fn frame_header(kind: u16, payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..8].copy_from_slice(&FRAME_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&kind.to_le_bytes());
    h[12..16].copy_from_slice(&0u32.to_le_bytes());
    h[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[24..56].copy_from_slice(blake3::hash(payload).as_bytes());
    h
}

/// Reads up to `buf.len()` bytes, stopping early only at end of file.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes(b.try_into().unwrap_or_default())
}
fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap_or_default())
}
fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or_default())
}

/// Reads and verifies the framed file `name` of `dir` (opened without
/// following a symlink; anything but a regular file is refused). Returns the
/// header and the payload. Checks, in order: magic, version, header
/// completeness, kind, flags, length bound, file size, checksum. Never panics;
/// allocates at most the payload length, bounded by [`MAX_RECORD_FILE`] and by
/// the file's size.
pub fn read_framed(
    dir: &Dir,
    name: &str,
    expected_kind: u16,
) -> Result<([u8; FRAME_HEADER_LEN], Vec<u8>), FrameError> {
    let path = &dir.child_path(name);
    let io_err = |source: io::Error| FrameError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = dir.open_file(name).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut h = [0u8; FRAME_HEADER_LEN];
    let got = read_up_to(&mut file, &mut h).map_err(io_err)?;
    if got >= 8 && h[0..8] != FRAME_MAGIC {
        return Err(FrameError::BadMagic {
            path: path.to_owned(),
            found: hex_bytes(&h[0..8]),
        });
    }
    if got >= 10 {
        let version = le_u16(&h[8..10]);
        if version != FORMAT_VERSION {
            return Err(FrameError::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
    }
    if got < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated {
            path: path.to_owned(),
            expected: FRAME_HEADER_LEN as u64,
            found: file_len.min(got as u64),
        });
    }
    let kind = le_u16(&h[10..12]);
    if kind != expected_kind {
        return Err(FrameError::WrongKind {
            path: path.to_owned(),
            expected: expected_kind,
            found: kind,
        });
    }
    let flags = le_u32(&h[12..16]);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FrameError::UnknownFlags {
            path: path.to_owned(),
            flags,
        });
    }
    let len = le_u64(&h[16..24]);
    if len > MAX_RECORD_FILE {
        return Err(FrameError::TooLarge {
            path: path.to_owned(),
            len,
            max: MAX_RECORD_FILE,
        });
    }
    let total = FRAME_HEADER_LEN as u64 + len;
    if file_len < total {
        return Err(FrameError::Truncated {
            path: path.to_owned(),
            expected: total,
            found: file_len,
        });
    }
    if file_len > total {
        return Err(FrameError::TrailingData {
            path: path.to_owned(),
            expected: total,
            found: file_len,
        });
    }
    let mut payload = Vec::new();
    // len <= 1 GiB and the file really is that long.
    read_exactly(&mut file, &mut payload, len as usize).map_err(io_err)?;
    if payload.len() as u64 != len {
        return Err(FrameError::Truncated {
            path: path.to_owned(),
            expected: total,
            found: FRAME_HEADER_LEN as u64 + payload.len() as u64,
        });
    }
    if blake3::hash(&payload).as_bytes()[..] != h[24..56] {
        return Err(FrameError::ChecksumMismatch {
            path: path.to_owned(),
        });
    }
    Ok((h, payload))
}

// ---------------------------------------------------------------------------
// Small helpers

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// fsync of a directory (the parent of an image directory, opened read-only).
fn sync_path(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// `<2 hex>/<64 hex>`: a chunk's path relative to `chunks/`.
fn chunk_rel(id: &ChunkId) -> PathBuf {
    let hex = chunk_hex(id);
    let mut p = PathBuf::from(&hex[..2]);
    p.push(hex);
    p
}

/// The directory holding `dir`'s entry, if any.
fn parent_dir(dir: &Path) -> Option<PathBuf> {
    match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(PathBuf::from(".")),
        Some(p) => Some(p.to_owned()),
        None => None,
    }
}

/// Number of threads for `n` independent I/O items.
fn io_threads(n: usize) -> usize {
    if n < 64 {
        return 1;
    }
    let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
    cpus.min(MAX_IO_THREADS).min(n / 32).max(1)
}

/// Runs `f` over `items` on a few scoped threads (each with its own state
/// from `init`); stops at and returns the first error.
pub(crate) fn par_try_for_each<T, S, E>(
    items: &[T],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> Result<(), E> + Sync,
) -> Result<(), E>
where
    T: Sync,
    E: Send,
{
    let threads = io_threads(items.len());
    if threads <= 1 {
        let mut state = init();
        return items.iter().try_for_each(|it| f(&mut state, it));
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<E>> = Mutex::new(None);
    let work = || {
        let mut state = init();
        while !failed.load(Ordering::Relaxed) {
            let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                break;
            };
            if let Err(e) = f(&mut state, item) {
                failed.store(true, Ordering::Relaxed);
                lock(&first_err).get_or_insert(e);
                break;
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // If a thread cannot be spawned, the others (and this one) do
            // its share.
            let _ = std::thread::Builder::new()
                .name("stasis-image-io".into())
                .spawn_scoped(scope, work);
        }
        work();
    });
    match first_err
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Writer

#[derive(Clone, Copy)]
enum Slot {
    /// Some thread is writing this chunk; wait on the shard's condvar.
    Pending,
    /// Written (not yet fsynced), or found in the store (`reused`, `stored_len` 0).
    Done {
        raw_len: u64,
        stored_len: u64,
        reused: bool,
    },
}

#[derive(Default)]
struct Shard {
    map: Mutex<HashMap<ChunkId, Slot>>,
    cv: Condvar,
}

/// Resolves a `Pending` slot when dropped: to `Done` on success, removed on
/// failure (or panic), waking any thread waiting for the same chunk.
struct PendingGuard<'a> {
    shard: &'a Shard,
    id: ChunkId,
    done: Option<(u64, u64, bool)>,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut map = lock(&self.shard.map);
        match self.done {
            Some((raw_len, stored_len, reused)) => {
                map.insert(
                    self.id,
                    Slot::Done {
                        raw_len,
                        stored_len,
                        reused,
                    },
                );
            }
            None => {
                map.remove(&self.id);
            }
        }
        drop(map);
        self.shard.cv.notify_all();
    }
}

/// Writes one image. `Send + Sync`: [`put_chunk`](Self::put_chunk) and
/// [`put_file`](Self::put_file) may be called from several threads at once.
///
/// Every file and directory is created relative to the opened image directory
/// with `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600 (files) or 0700 (directories)
/// whatever the umask: a symlink planted under any name the writer uses makes
/// the operation fail and leaves the link's target unchanged.
///
/// Dropping the writer without [`commit`](Self::commit) leaves an incomplete
/// directory (no manifest) that readers refuse.
pub struct ImageWriter {
    dir: PathBuf,
    root: Dir,
    chunks_dir: Dir,
    compression: Compression,
    shards: Vec<Shard>,
    /// The `chunks/<xx>` subdirectories created so far.
    subdirs: Vec<OnceLock<Dir>>,
    /// Record files by name; `None` while being written.
    files: Mutex<BTreeMap<String, Option<FileEntry>>>,
    /// Whether `create` made the directory (then commit fsyncs its parent).
    created_dir: bool,
    /// Chunks the parent chain of an incremental image holds: not stored again.
    base_chunks: std::collections::HashSet<ChunkId>,
    /// The workload's chunk store beside the image, if there is one.
    store: Option<StoreWriter>,
}

impl ImageWriter {
    /// Prepares `dir` for a new image: creates it (mode 0700) if missing. An
    /// existing directory may hold files of other tools (a container runtime's
    /// descriptors…): they are left untouched. One holding image files (see
    /// [`is_image_entry`]) is refused unless `opts.force`, in which case those
    /// entries are removed (`manifest.img` first, durably, so a half-cleared
    /// directory never looks like a complete image), links as links, never
    /// followed. A symlink as `dir` itself is refused.
    pub fn create(dir: &Path, opts: WriteOptions) -> Result<Self, CreateError> {
        let mut created_dir = false;
        // A `/proc/self/fd/N` handle names a directory the caller opened already.
        let opened = if dir.starts_with("/proc/self/fd") || dir.starts_with("/proc/thread-self/fd")
        {
            Dir::open_following(dir)
        } else {
            Dir::open(dir)
        };
        let root = match opened {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => {
                created_dir = true;
                Dir::create_all(dir, PRIVATE_DIR).map_err(|source| CreateError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                return Err(match std::fs::symlink_metadata(dir) {
                    Ok(m) if m.file_type().is_symlink() => CreateError::Symlink {
                        dir: dir.to_owned(),
                    },
                    _ => CreateError::NotADirectory {
                        dir: dir.to_owned(),
                    },
                });
            }
            Err(source) => {
                return Err(CreateError::ReadDir {
                    path: dir.to_owned(),
                    source,
                })
            }
        };
        let mut found: Vec<std::ffi::OsString> = root
            .entries()
            .map_err(|source| CreateError::ReadDir {
                path: dir.to_owned(),
                source,
            })?
            .into_iter()
            .filter(|n| is_image_entry(n))
            .collect();
        if !found.is_empty() {
            found.sort();
            if !opts.force {
                return Err(CreateError::NotEmpty {
                    dir: dir.to_owned(),
                    found: found
                        .iter()
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            clear_image_entries(&root, &found)?;
        }
        let chunks_dir =
            root.create_dir(CHUNKS_DIR, PRIVATE_DIR)
                .map_err(|source| CreateError::CreateDir {
                    path: root.child_path(CHUNKS_DIR),
                    source,
                })?;
        let store = StoreWriter::open(dir)?;
        tracing::debug!(dir = %dir.display(), force = opts.force, compression = ?opts.compression,
            store = ?store.as_ref().map(|s| s.store.path()), "image created");
        Ok(ImageWriter {
            dir: dir.to_owned(),
            root,
            chunks_dir,
            compression: opts.compression,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            subdirs: (0..256).map(|_| OnceLock::new()).collect(),
            files: Mutex::new(BTreeMap::new()),
            created_dir,
            base_chunks: Default::default(),
            store,
        })
    }

    /// The image directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether [`create`](Self::create) made the directory (it did not exist before): a
    /// caller that gives up may then remove it whole; otherwise it holds files of others.
    pub fn created_dir(&self) -> bool {
        self.created_dir
    }

    /// An incremental image: chunks its parent chain holds (see
    /// [`ImageReader::chain_chunk_ids`]) are not stored again by
    /// [`put_chunk`](Self::put_chunk); restore finds them in the parents.
    pub fn set_base_chunks(&mut self, ids: std::collections::HashSet<ChunkId>) {
        self.base_chunks = ids;
    }

    /// Stores a chunk and returns its id (blake3 of `raw`). A chunk already
    /// stored in this image (or in its base, see
    /// [`set_base_chunks`](Self::set_base_chunks)) is not written again (also when another thread
    /// is writing it right now: this call waits for it). Written to a
    /// temporary name and renamed; not fsynced until [`commit`](Self::commit).
    pub fn put_chunk(&self, raw: &[u8]) -> Result<ChunkId, WriteError> {
        let raw_len = raw.len() as u64;
        if raw_len > MAX_CHUNK {
            return Err(WriteError::ChunkTooLarge {
                len: raw_len,
                max: MAX_CHUNK,
            });
        }
        let id = chunk_id_of(raw);
        if self.base_chunks.contains(&id) {
            return Ok(id);
        }
        let shard = &self.shards[usize::from(id[1]) % SHARDS];
        {
            let mut map = lock(&shard.map);
            loop {
                match map.get(&id) {
                    Some(Slot::Done { .. }) => return Ok(id),
                    Some(Slot::Pending) => {
                        map = shard.cv.wait(map).unwrap_or_else(PoisonError::into_inner);
                    }
                    None => {
                        map.insert(id, Slot::Pending);
                        break;
                    }
                }
            }
        }
        let mut guard = PendingGuard {
            shard,
            id,
            done: None,
        };
        let (stored_len, reused) = match &self.store {
            Some(s) => s.put(&id, raw, self.compression == Compression::Lz4)?,
            None => (self.write_chunk(&id, raw)?, false),
        };
        guard.done = Some((raw_len, stored_len, reused));
        Ok(id)
    }

    fn write_chunk(&self, id: &ChunkId, raw: &[u8]) -> Result<u64, WriteError> {
        let hex = chunk_hex(id);
        let err = |op: &'static str, path: PathBuf, source: io::Error| WriteError::Chunk {
            id: hex.clone(),
            path,
            op,
            source,
        };
        let cell = &self.subdirs[usize::from(id[0])];
        let sub = match cell.get() {
            Some(d) => d,
            None => {
                let d = self
                    .chunks_dir
                    .ensure_dir(&hex[..2], PRIVATE_DIR)
                    .map_err(|e| {
                        err("create directory", self.chunks_dir.child_path(&hex[..2]), e)
                    })?;
                let _ = cell.set(d);
                cell.get().unwrap_or_else(|| unreachable!("set above"))
            }
        };
        let tmp = format!("{hex}.tmp");
        let lz4 = self.compression == Compression::Lz4;
        let stored = match sub
            .create_file(&tmp, PRIVATE_FILE)
            .and_then(|f| write_chunk_file(f, raw, lz4))
        {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    let _ = sub.remove_file(&tmp);
                }
                return Err(err("write", sub.child_path(&tmp), e));
            }
        };
        if let Err(e) = sub.rename(&tmp, &hex) {
            let _ = sub.remove_file(&tmp);
            return Err(err("rename", sub.child_path(&tmp), e));
        }
        Ok(stored)
    }

    /// Writes the framed record file `name` (e.g. `objects.img`) with this
    /// kind and payload, via a temporary name and rename, and records it for
    /// the manifest. Each name may be written once per image.
    ///
    /// `name` must be `<name>.img` of `[A-Za-z0-9._-]`, not starting with
    /// `.`, at most 128 bytes, and not `manifest.img`; `kind` must not be 0
    /// or [`KIND_MANIFEST`].
    pub fn put_file(&self, name: &str, kind: u16, payload: &[u8]) -> Result<(), WriteError> {
        validate_file_name(name).map_err(|reason| WriteError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        if kind == 0 || kind == KIND_MANIFEST {
            return Err(WriteError::ReservedKind {
                name: name.to_owned(),
                kind,
            });
        }
        let len = payload.len() as u64;
        if len > MAX_RECORD_FILE {
            return Err(WriteError::FileTooLarge {
                name: name.to_owned(),
                len,
                max: MAX_RECORD_FILE,
            });
        }
        if let Some(s) = &self.store {
            s.charge(FRAME_HEADER_LEN as u64 + len)?;
        }
        {
            let mut files = lock(&self.files);
            if files.contains_key(name) {
                return Err(WriteError::DuplicateFile {
                    name: name.to_owned(),
                });
            }
            files.insert(name.to_owned(), None);
        }
        let result = self.write_file(name, kind, payload);
        let mut files = lock(&self.files);
        match result {
            Ok(hash) => {
                files.insert(
                    name.to_owned(),
                    Some(FileEntry {
                        name: name.to_owned(),
                        kind: u32::from(kind),
                        length: len,
                        blake3: hash.to_vec(),
                    }),
                );
                Ok(())
            }
            Err(e) => {
                files.remove(name);
                Err(e)
            }
        }
    }

    fn write_file(&self, name: &str, kind: u16, payload: &[u8]) -> Result<[u8; 32], WriteError> {
        let tmp = format!("{name}.tmp");
        let err = |op: &'static str, path: PathBuf, source: io::Error| WriteError::File {
            name: name.to_owned(),
            path,
            op,
            source,
        };
        let header = frame_header(kind, payload);
        let written = self
            .root
            .create_file(&tmp, PRIVATE_FILE)
            .and_then(|mut f| write_two(&mut f, &header, payload));
        if let Err(e) = written {
            // A planted entry of that name is not ours to remove.
            if e.kind() != io::ErrorKind::AlreadyExists {
                let _ = self.root.remove_file(&tmp);
            }
            return Err(err("write", self.root.child_path(&tmp), e));
        }
        if let Err(e) = self.root.rename(&tmp, name) {
            let _ = self.root.remove_file(&tmp);
            return Err(err("rename", self.root.child_path(&tmp), e));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&header[24..56]);
        Ok(hash)
    }

    /// Makes the image durable and complete, unsigned: see
    /// [`commit_signed`](Self::commit_signed).
    pub fn commit(
        self,
        root_pid: i32,
        labels: Vec<(String, String)>,
    ) -> Result<CommitStats, CommitError> {
        self.commit_signed(root_pid, labels, None)
    }

    /// Makes the image durable and complete: fsyncs every chunk and record
    /// file written (on a few threads), then the chunk directories, the image
    /// directory and its parent; then, with a keyring, writes `signature.img`
    /// (a MAC over the manifest's bytes by the keyring's host key:
    /// `signature.img.tmp`, fsync, rename, fsync of the directory) *before*
    /// the manifest, so a committed image is signed from its first instant;
    /// then writes `manifest.img` atomically (`manifest.img.tmp`, fsync,
    /// rename, fsync of the directory).
    pub fn commit_signed(
        self,
        root_pid: i32,
        labels: Vec<(String, String)>,
        signer: Option<&Keyring>,
    ) -> Result<CommitStats, CommitError> {
        let ImageWriter {
            dir,
            root,
            chunks_dir,
            shards,
            subdirs,
            files,
            created_dir,
            store,
            ..
        } = self;
        let files: Vec<FileEntry> = files
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .into_values()
            .flatten()
            .collect();
        let mut chunks: Vec<(ChunkId, u64, u64, bool)> = Vec::new();
        for shard in shards {
            let map = shard
                .map
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner);
            chunks.extend(map.into_iter().filter_map(|(id, slot)| match slot {
                Slot::Done {
                    raw_len,
                    stored_len,
                    reused,
                } => Some((id, raw_len, stored_len, reused)),
                Slot::Pending => None,
            }));
        }
        chunks.sort_unstable_by_key(|c| c.0);
        let signature = match signer {
            Some(k) => Some(
                k.host()
                    .cloned()
                    .ok_or(CommitError::Sign(crate::trust::TrustError::NoHostKey))?,
            ),
            None => None,
        };

        let sync_err = |path: PathBuf, source: io::Error| CommitError::Sync { path, source };

        // 1. Data: every record file and chunk written.
        enum Item<'a> {
            File(&'a str),
            Chunk(&'a ChunkId),
        }
        let mut items: Vec<Item<'_>> = files.iter().map(|f| Item::File(&f.name)).collect();
        if store.is_none() {
            items.extend(chunks.iter().map(|c| Item::Chunk(&c.0)));
        }
        par_try_for_each(
            &items,
            || (),
            |(), it| match it {
                Item::File(n) => root
                    .open_file(n)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| sync_err(root.child_path(n), e)),
                Item::Chunk(id) => {
                    let rel = chunk_rel(id);
                    chunks_dir
                        .open_file_beneath(&rel)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| sync_err(chunks_dir.path().join(&rel), e))
                }
            },
        )?;

        // The store's chunks: fsynced, then under their final names, before the manifest.
        if let Some(s) = &store {
            s.commit()?;
        }

        // 2. Directory entries: chunk subdirectories, chunks/, the image
        //    directory, and its parent if we created the image directory.
        let mut dirs: Vec<&Dir> = subdirs.iter().filter_map(|d| d.get()).collect();
        dirs.push(&chunks_dir);
        dirs.push(&root);
        par_try_for_each(
            &dirs,
            || (),
            |(), d| d.sync().map_err(|e| sync_err(d.path().to_owned(), e)),
        )?;
        if let Some(parent) = parent_dir(&dir).filter(|_| created_dir) {
            match sync_path(&parent) {
                Ok(()) => {}
                // A parent we may create entries in but not open for reading
                // cannot be fsynced by us; do not fail the dump for it.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    tracing::warn!(dir = %parent.display(), "cannot fsync the parent directory: permission denied");
                }
                Err(e) => return Err(sync_err(parent, e)),
            }
        }

        // 3. The manifest: the commit point.
        let stats = CommitStats {
            chunks: chunks.len() as u64,
            chunk_bytes_raw: chunks.iter().map(|c| c.1).sum(),
            chunk_bytes_stored: chunks.iter().map(|c| c.2).sum(),
            files: files.len() as u64,
            chunks_reused: chunks.iter().filter(|c| c.3).count() as u64,
        };
        let manifest = Manifest {
            format_version: u32::from(FORMAT_VERSION),
            tool_version: format!("stasis {}", env!("CARGO_PKG_VERSION")),
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            root_pid,
            files,
            chunks: chunks
                .iter()
                .map(|&(id, raw_len, _, _)| ChunkEntry {
                    id: id.to_vec(),
                    raw_len,
                })
                .collect(),
            labels: labels
                .into_iter()
                .map(|(key, value)| Label { key, value })
                .collect(),
            chunk_store: if store.is_some() { CHUNKS_IN_STORE } else { 0 },
        };
        let payload = manifest.encode_to_vec();
        if payload.len() as u64 > MAX_RECORD_FILE {
            return Err(CommitError::ManifestTooLarge {
                len: payload.len() as u64,
                max: MAX_RECORD_FILE,
            });
        }
        let header = frame_header(KIND_MANIFEST, &payload);
        let merr = |op: &'static str, name: &str, source: io::Error| CommitError::Manifest {
            path: root.child_path(name),
            op,
            source,
        };
        // Writes `tmp` exclusively (a planted entry fails the commit and is left alone).
        let write_tmp = |tmp: &str, parts: &[&[u8]]| -> Result<(), CommitError> {
            let mut f = root
                .create_file(tmp, PRIVATE_FILE)
                .map_err(|e| merr("create", tmp, e))?;
            let r = parts
                .iter()
                .try_for_each(|p| f.write_all(p))
                .map_err(|e| merr("write", tmp, e))
                .and_then(|()| f.sync_all().map_err(|e| sync_err(root.child_path(tmp), e)));
            if r.is_err() {
                let _ = root.remove_file(tmp);
            }
            r
        };
        write_tmp(MANIFEST_TMP, &[&header, &payload])?;
        if let Some(key) = &signature {
            let mut raw = Vec::with_capacity(header.len() + payload.len());
            raw.extend_from_slice(&header);
            raw.extend_from_slice(&payload);
            let sig = crate::trust::Signature::make(key, &raw).encode();
            if let Err(e) = write_tmp(SIGNATURE_TMP, &[&sig]) {
                let _ = root.remove_file(MANIFEST_TMP);
                return Err(e);
            }
            root.rename(SIGNATURE_TMP, SIGNATURE_FILE)
                .map_err(|e| merr("rename", SIGNATURE_TMP, e))?;
            root.sync()
                .map_err(|e| sync_err(root.path().to_owned(), e))?;
        } else {
            // An old signature must not stay beside a new manifest.
            match root.remove_file(SIGNATURE_FILE) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(merr("remove", SIGNATURE_FILE, e)),
            }
        }
        root.rename(MANIFEST_TMP, MANIFEST_FILE)
            .map_err(|e| merr("rename", MANIFEST_TMP, e))?;
        root.sync()
            .map_err(|e| sync_err(root.path().to_owned(), e))?;
        tracing::info!(
            dir = %dir.display(),
            chunks = stats.chunks,
            chunk_bytes_raw = stats.chunk_bytes_raw,
            chunk_bytes_stored = stats.chunk_bytes_stored,
            files = stats.files,
            signed_by = ?signature.as_ref().map(|k| k.id()),
            "image committed"
        );
        Ok(stats)
    }
}

/// Removes the image entries `names` of `dir` (links as links, directories
/// walked through descriptors): `manifest.img` first (then fsync of `dir`),
/// then the rest. Other entries are not touched.
fn clear_image_entries(dir: &Dir, names: &[std::ffi::OsString]) -> Result<(), CreateError> {
    let remove = |name: &OsStr| -> Result<bool, CreateError> {
        match dir.remove_all(name) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(CreateError::Remove {
                path: dir.child_path(name),
                source,
            }),
        }
    };
    let sync = || {
        dir.sync().map_err(|source| CreateError::Sync {
            path: dir.path().to_owned(),
            source,
        })
    };
    if remove(OsStr::new(MANIFEST_FILE))? {
        sync()?;
    }
    for n in names {
        if n != MANIFEST_FILE {
            remove(n)?;
        }
    }
    sync()?;
    tracing::info!(dir = %dir.path().display(), removed = names.len(), "removed the image files of an existing directory (force)");
    Ok(())
}

// ---------------------------------------------------------------------------
// Reader

/// A committed, opened image. `Send + Sync`: all methods take `&self` and
/// may be called from several threads at once. Never modifies the image.
pub struct ImageReader {
    dir: PathBuf,
    /// The image directory, opened once: every file is reached through it
    /// without following a symlink.
    root: Dir,
    /// `chunks/` (None if absent and no chunk is listed, or all are in the store).
    chunks_dir: Option<Dir>,
    /// The workload's chunk store beside the image (manifest `chunk_store = 1`, if present).
    store: Option<ChunkStore>,
    manifest: Manifest,
    /// `manifest.img` exactly as read (header + payload): what a signature covers.
    manifest_raw: Vec<u8>,
    /// Record file name -> index into `manifest.files`.
    files: HashMap<String, usize>,
    /// Chunk id -> raw length.
    chunks: HashMap<ChunkId, u64>,
    /// The parent of an incremental image (itself with its parents), see
    /// [`attach_parent`](Self::attach_parent).
    parents: Vec<ImageReader>,
}

impl ImageReader {
    /// Opens an image: reads and verifies `manifest.img` (magic, version,
    /// kind, flags, length bounds, checksum, decoding, consistency), checks
    /// that every listed record file exists with the right length and every
    /// listed chunk file exists and holds at least a header. Chunks are not
    /// hashed here (see [`verify_all`](Self::verify_all)).
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let root = match Dir::open_following(dir) {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => {
                return Err(OpenError::NotFound {
                    dir: dir.to_owned(),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(OpenError::NotADirectory {
                    dir: dir.to_owned(),
                })
            }
            Err(source) => {
                return Err(OpenError::Io {
                    path: dir.to_owned(),
                    source,
                })
            }
        };
        let mpath = dir.join(MANIFEST_FILE);
        let (mheader, payload) = match read_framed(&root, MANIFEST_FILE, KIND_MANIFEST) {
            Ok(r) => r,
            Err(FrameError::Io { source, .. }) if is_not_found(&source) => {
                return Err(OpenError::Incomplete {
                    dir: dir.to_owned(),
                })
            }
            Err(FrameError::UnsupportedVersion {
                found, supported, ..
            }) => {
                return Err(OpenError::UnsupportedVersion {
                    dir: dir.to_owned(),
                    found,
                    supported,
                })
            }
            Err(e) => return Err(OpenError::Manifest(e)),
        };
        let manifest =
            Manifest::decode(payload.as_slice()).map_err(|source| OpenError::Decode {
                path: mpath.clone(),
                source,
            })?;
        let mut manifest_raw = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
        manifest_raw.extend_from_slice(&mheader);
        manifest_raw.extend_from_slice(&payload);
        drop(payload);
        if manifest.format_version != u32::from(FORMAT_VERSION) {
            return Err(OpenError::VersionMismatch {
                path: mpath,
                header: FORMAT_VERSION,
                manifest: manifest.format_version,
            });
        }
        manifest
            .check()
            .map_err(|reason| OpenError::InvalidManifest {
                path: mpath.clone(),
                reason,
            })?;

        let not_regular = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file (a symlink?)",
            )
        };
        for f in &manifest.files {
            let path = dir.join(&f.name);
            let meta = match root.metadata(&f.name) {
                Ok(m) => m,
                Err(e) if is_not_found(&e) => {
                    return Err(OpenError::MissingFile {
                        dir: dir.to_owned(),
                        name: f.name.clone(),
                    })
                }
                Err(source) => return Err(OpenError::Io { path, source }),
            };
            if rustix::fs::FileType::from_raw_mode(meta.st_mode)
                != rustix::fs::FileType::RegularFile
            {
                return Err(OpenError::Io {
                    path,
                    source: not_regular(),
                });
            }
            let expected = FRAME_HEADER_LEN as u64 + f.length;
            let found = meta.st_size as u64;
            if found < expected {
                return Err(OpenError::FileTruncated {
                    path,
                    expected,
                    found,
                });
            }
            if found > expected {
                return Err(OpenError::FileTooLong {
                    path,
                    expected,
                    found,
                });
            }
        }

        let mut chunks = HashMap::with_capacity(manifest.chunks.len());
        let mut ids = Vec::with_capacity(manifest.chunks.len());
        for c in &manifest.chunks {
            let mut id = [0u8; 32];
            id.copy_from_slice(&c.id); // length checked by Manifest::check
            chunks.insert(id, c.raw_len);
            ids.push(id);
        }
        let store = if manifest.chunk_store == CHUNKS_IN_STORE {
            ChunkStore::beside(dir).unwrap_or_else(|e| {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot open the chunk store beside the image");
                None
            })
        } else {
            None
        };
        let chunks_dir = match root.open_dir(CHUNKS_DIR) {
            Ok(d) => Some(d),
            Err(e) if is_not_found(&e) && (ids.is_empty() || store.is_some()) => None,
            Err(e) if is_not_found(&e) => {
                return Err(OpenError::MissingChunk {
                    dir: dir.to_owned(),
                    id: chunk_hex(&ids[0]),
                })
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                return Err(OpenError::Io {
                    path: dir.join(CHUNKS_DIR),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        "not a directory (a symlink?)",
                    ),
                })
            }
            Err(source) => {
                return Err(OpenError::Io {
                    path: dir.join(CHUNKS_DIR),
                    source,
                })
            }
        };
        let store_dir = store.as_ref().map(ChunkStore::handle);
        if chunks_dir.is_some() || store_dir.is_some() {
            par_try_for_each(
                &ids,
                || (),
                |(), id| {
                    let path = chunk_path(dir, id);
                    let meta =
                        open_in(chunks_dir.as_ref(), store_dir, id).and_then(|(f, _)| f.metadata());
                    match meta {
                        Ok(m) if m.len() < CHUNK_HEADER_LEN as u64 => {
                            Err(OpenError::ChunkTruncated {
                                path,
                                id: chunk_hex(id),
                                expected: CHUNK_HEADER_LEN as u64,
                                found: m.len(),
                            })
                        }
                        Ok(_) => Ok(()),
                        Err(e) if is_not_found(&e) => Err(OpenError::MissingChunk {
                            dir: dir.to_owned(),
                            id: chunk_hex(id),
                        }),
                        Err(e)
                            if e.kind() == io::ErrorKind::InvalidInput
                                || e.raw_os_error() == Some(libc::ELOOP)
                                || e.raw_os_error() == Some(libc::EXDEV) =>
                        {
                            Err(OpenError::Io {
                                path,
                                source: not_regular(),
                            })
                        }
                        Err(source) => Err(OpenError::Io { path, source }),
                    }
                },
            )?;
        }

        let files = manifest
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        tracing::debug!(
            dir = %dir.display(),
            files = manifest.files.len(),
            chunks = manifest.chunks.len(),
            "image opened"
        );
        Ok(ImageReader {
            dir: dir.to_owned(),
            root,
            chunks_dir,
            store,
            manifest,
            manifest_raw,
            files,
            chunks,
            parents: Vec::new(),
        })
    }

    /// An incremental image: chunks not in this image are read from `parent` (and its own
    /// parents). The caller has checked that `parent` is the image this one names.
    pub fn attach_parent(&mut self, parent: ImageReader) {
        self.parents.push(parent);
    }

    /// The images chunks are read from besides this one, nearest first.
    pub fn parents(&self) -> &[ImageReader] {
        &self.parents
    }

    /// Ids of every chunk this image and its attached parents hold.
    pub fn chain_chunk_ids(&self) -> std::collections::HashSet<ChunkId> {
        let mut out: std::collections::HashSet<ChunkId> = self.chunks.keys().copied().collect();
        for p in &self.parents {
            out.extend(p.chain_chunk_ids());
        }
        out
    }

    /// The image of the chain holding chunk `id`, with its raw length.
    fn owner_of(&self, id: &ChunkId) -> Option<(&ImageReader, u64)> {
        if let Some(&len) = self.chunks.get(id) {
            return Some((self, len));
        }
        self.parents.iter().find_map(|p| p.owner_of(id))
    }

    /// The image directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// `manifest.img` exactly as read (framed header + payload): what a
    /// signature covers.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_raw
    }

    /// The opened image directory (children reached without following links).
    pub fn handle(&self) -> &Dir {
        &self.root
    }

    /// The opened `chunks/` directory, if the image has one.
    pub fn chunks_handle(&self) -> Option<&Dir> {
        self.chunks_dir.as_ref()
    }

    /// The workload's chunk store the image reads chunks from, if any.
    pub fn store(&self) -> Option<&ChunkStore> {
        self.store.as_ref()
    }

    /// Whether the chunk is in the image's own `chunks/` (else in the store).
    pub fn chunk_is_own(&self, id: &ChunkId) -> bool {
        self.chunks_dir
            .as_ref()
            .is_some_and(|cd| cd.open_file_beneath(chunk_rel(id)).is_ok())
    }

    /// The bytes of a listed chunk's file exactly as stored (header included), not verified
    /// (for `stasis image export`; the importer verifies). Bounded by the largest chunk file.
    pub fn chunk_file_bytes(&self, id: &ChunkId) -> Result<Vec<u8>, ReadError> {
        let (mut f, path) = self.open_chunk(id)?;
        let max = CHUNK_HEADER_LEN as u64
            + lz4_flex::block::get_maximum_output_size(MAX_CHUNK as usize) as u64;
        let mut buf = Vec::new();
        Read::take(&mut f, max + 1)
            .read_to_end(&mut buf)
            .map_err(|source| ReadError::Io { path, source })?;
        Ok(buf)
    }

    /// Opens a listed chunk's file (no symlink followed anywhere on the way): in the image's
    /// own `chunks/`, else in the store.
    fn open_chunk(&self, id: &ChunkId) -> Result<(File, PathBuf), ReadError> {
        let path = chunk_path(&self.dir, id);
        match open_in(
            self.chunks_dir.as_ref(),
            self.store.as_ref().map(ChunkStore::handle),
            id,
        ) {
            Ok((f, in_store)) => Ok((f, in_store.unwrap_or(path))),
            Err(e) if is_not_found(&e) => Err(ReadError::ChunkMissing {
                id: chunk_hex(id),
                path,
            }),
            Err(source) => Err(ReadError::Io { path, source }),
        }
    }

    /// Raw length of a listed chunk, `None` if the chunk is not listed.
    pub fn chunk_raw_len(&self, id: &ChunkId) -> Option<u64> {
        self.chunks.get(id).copied()
    }

    /// Reads the record file `name` (e.g. `objects.img`), verifying its frame,
    /// its checksum and that it matches its manifest entry; returns the
    /// payload.
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>, ReadError> {
        let entry = self
            .files
            .get(name)
            .and_then(|&i| self.manifest.files.get(i))
            .ok_or_else(|| ReadError::UnknownFile {
                name: name.to_owned(),
            })?;
        let path = self.dir.join(&entry.name);
        // Manifest::check guarantees kind fits in u16.
        let kind = u16::try_from(entry.kind).unwrap_or(0);
        let (header, payload) = read_framed(&self.root, &entry.name, kind)?;
        let hash = &header[24..56];
        if payload.len() as u64 != entry.length {
            return Err(ReadError::FileLengthMismatch {
                path,
                expected: entry.length,
                found: payload.len() as u64,
            });
        }
        if hash != entry.blake3.as_slice() {
            return Err(ReadError::FileChecksumMismatch { path });
        }
        Ok(payload)
    }

    /// Reads and verifies a chunk (header, length against the manifest,
    /// decompression, blake3 against `id`); returns its raw bytes.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, ReadError> {
        let mut buf = Vec::new();
        self.read_chunk_into(id, &mut buf)?;
        Ok(buf)
    }

    /// Like [`read_chunk`](Self::read_chunk) but into `buf` (its previous
    /// contents are replaced; its capacity is reused). On error the contents
    /// of `buf` are unspecified.
    pub fn read_chunk_into(&self, id: &ChunkId, buf: &mut Vec<u8>) -> Result<(), ReadError> {
        self.read_chunk_stored(id, buf).map(|_| ())
    }

    /// Like [`ImageReader::read_chunk_into`] but without recomputing the blake3 hash (the
    /// header, lengths and codec are still checked). Only for chunks that
    /// [`ImageReader::verify_all`] checked during this same operation: restore verifies the
    /// whole image before it creates any task, then reads every chunk once more to fill
    /// memory.
    pub fn read_chunk_into_verified(
        &self,
        id: &ChunkId,
        buf: &mut Vec<u8>,
    ) -> Result<(), ReadError> {
        let (owner, raw_len) = self
            .owner_of(id)
            .ok_or_else(|| ReadError::UnknownChunk { id: chunk_hex(id) })?;
        let (f, path) = owner.open_chunk(id)?;
        crate::chunk::read_chunk_file_with(f, &path, id, raw_len, buf, false).map(|_| ())
    }

    fn read_chunk_stored(&self, id: &ChunkId, buf: &mut Vec<u8>) -> Result<u64, ReadError> {
        let (owner, raw_len) = self
            .owner_of(id)
            .ok_or_else(|| ReadError::UnknownChunk { id: chunk_hex(id) })?;
        let (f, path) = owner.open_chunk(id)?;
        read_chunk_file(f, &path, id, raw_len, buf)
    }

    /// Verifies every listed record file and every listed chunk (chunks on a
    /// few threads), and those of the attached parents; returns the first error found.
    /// The report counts this image's own files and chunks.
    pub fn verify_all(&self) -> Result<VerifyReport, ReadError> {
        self.verify_all_but(&std::collections::HashSet::new())
    }

    /// [`verify_all`](Self::verify_all) except the chunks in `later`, which the caller reads
    /// with [`read_chunk_into`](Self::read_chunk_into) (hashed) when it needs them (a lazy
    /// restore's page server).
    pub fn verify_all_but(
        &self,
        later: &std::collections::HashSet<ChunkId>,
    ) -> Result<VerifyReport, ReadError> {
        for p in &self.parents {
            p.verify_all_but(later)?;
        }
        let mut report = VerifyReport::default();
        for f in &self.manifest.files {
            let payload = self.read_file(&f.name)?;
            report.files += 1;
            report.file_bytes += payload.len() as u64;
        }
        let raw = AtomicU64::new(0);
        let stored = AtomicU64::new(0);
        let ids: Vec<ChunkId> = self
            .chunks
            .keys()
            .filter(|id| !later.contains(*id))
            .copied()
            .collect();
        par_try_for_each(&ids, Vec::new, |buf, id| {
            let s = self.read_chunk_stored(id, buf)?;
            raw.fetch_add(buf.len() as u64, Ordering::Relaxed);
            stored.fetch_add(s, Ordering::Relaxed);
            Ok::<(), ReadError>(())
        })?;
        report.chunks = ids.len() as u64;
        report.chunk_bytes_raw = raw.into_inner();
        report.chunk_bytes_stored = stored.into_inner();
        Ok(report)
    }
}

/// Opens chunk `id` in `own` (an image's `chunks/`), else in `store`; with the path when it
/// came from the store.
fn open_in(
    own: Option<&Dir>,
    store: Option<&Dir>,
    id: &ChunkId,
) -> io::Result<(File, Option<PathBuf>)> {
    let rel = chunk_rel(id);
    let not_found = || io::Error::from(io::ErrorKind::NotFound);
    let first = match own {
        Some(cd) => cd.open_file_beneath(&rel),
        None => Err(not_found()),
    };
    match (first, store) {
        (Ok(f), _) => Ok((f, None)),
        (Err(e), Some(sd)) if is_not_found(&e) => sd
            .open_file_beneath(&rel)
            .map(|f| (f, Some(sd.path().join(&rel)))),
        (Err(e), _) => Err(e),
    }
}

/// Compile-time check that the writer and reader are `Send + Sync`.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ImageWriter>();
    assert_send_sync::<ImageReader>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_try_for_each_visits_all_and_reports_an_error() {
        let items: Vec<u64> = (0..1000).collect();
        let sum = AtomicU64::new(0);
        par_try_for_each(
            &items,
            || (),
            |(), &x| {
                sum.fetch_add(x, Ordering::Relaxed);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(sum.into_inner(), 999 * 1000 / 2);
        let r = par_try_for_each(
            &items,
            || (),
            |(), &x| if x == 500 { Err(x) } else { Ok(()) },
        );
        assert_eq!(r, Err(500));
    }

    #[test]
    fn frame_header_fields() {
        let h = frame_header(KIND_OBJECTS, b"abc");
        assert_eq!(&h[0..8], b"STASISIM");
        assert_eq!(le_u16(&h[8..10]), FORMAT_VERSION);
        assert_eq!(le_u16(&h[10..12]), KIND_OBJECTS);
        assert_eq!(le_u32(&h[12..16]), 0);
        assert_eq!(le_u64(&h[16..24]), 3);
        assert_eq!(&h[24..56], blake3::hash(b"abc").as_bytes());
    }

    #[test]
    fn parent_of_relative_dir() {
        assert_eq!(parent_dir(Path::new("img")), Some(PathBuf::from(".")));
        assert_eq!(parent_dir(Path::new("/a/img")), Some(PathBuf::from("/a")));
        assert_eq!(parent_dir(Path::new("/")), None);
    }
}
