//! A chunk store shared by the images of one workload.
//!
//! ```text
//! <images>/chunks/store.json      marks the store; its settings (quota)
//! <images>/chunks/<2 hex>/<64 hex> a complete chunk (same format as in an image)
//! <images>/chunks/<2 hex>/<64 hex>.<tag>.tmp  a chunk being written (or torn by a crash)
//! <images>/<id>/                  an image whose manifest says `chunk_store = 1`
//! ```
//!
//! An [`crate::ImageWriter`] created in a directory whose parent holds a store writes its
//! chunks there, each only if absent: to a temporary name, fsynced, renamed at commit before
//! the manifest exists, so *a chunk present under its final name is complete*. The image's
//! manifest says `chunk_store = 1` (signed with the rest): readers then look for a chunk in
//! the image's own `chunks/` first and in `../chunks/` next.
//!
//! Writers hold a shared `flock` on the store directory from `create` until their commit
//! (or drop); [`ChunkStore::gc`] holds it exclusively, so it never runs during a checkpoint.
//! GC keeps every chunk listed by the manifest of any directory beside the store (committed
//! or pending images; `.trash-*` directories are being deleted and do not count) and removes
//! the others and every temporary.

#![warn(missing_docs)]

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use prost::Message;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::chunk::{chunk_hex, hex_bytes, write_chunk_file, ChunkId, CHUNK_HEADER_LEN};
use crate::container::{
    lock, par_try_for_each, read_framed, CHUNKS_DIR, KIND_MANIFEST, MANIFEST_FILE,
};
use crate::error::{CommitError, CreateError, WriteError};
use crate::manifest::Manifest;
use crate::safefs::{Dir, PRIVATE_DIR, PRIVATE_FILE};

/// The store's settings file inside its `chunks/` directory (its presence marks a store).
pub const STORE_CONFIG: &str = "store.json";
/// `Manifest::chunk_store` value: chunks may be in the store beside the image (`../chunks`).
pub const CHUNKS_IN_STORE: u32 = 1;
/// Directories beside the store with this prefix are being deleted: GC ignores them.
pub const TRASH_PREFIX: &str = ".trash-";

/// Settings of a store (`store.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreConfig {
    /// Most bytes the workload's directory may hold (store and images, pending ones included).
    /// A checkpoint that would go beyond fails and leaves the previous images as they were.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
}

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `store.json` does not parse.
    #[error("{path} is not a valid store settings file (fix or remove it)")]
    Config {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An image beside the store has a manifest that does not decode: which chunks it needs
    /// cannot be known, so nothing is collected.
    #[error("image {dir} has a manifest that does not read ({reason}): garbage collection of {store} stopped; remove that image or restore its manifest")]
    UnreadableManifest {
        /// The image.
        dir: PathBuf,
        /// The store.
        store: PathBuf,
        /// Why.
        reason: String,
    },
    /// The directory listing kept changing (images renamed meanwhile).
    #[error("the images beside {store} kept changing while they were read; run gc again")]
    Unstable {
        /// The store.
        store: PathBuf,
    },
}

fn ioe(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}

/// A held lock on a store (released on drop).
#[derive(Debug)]
pub struct StoreLock {
    _fd: std::os::fd::OwnedFd,
}

/// What [`ChunkStore::gc`] found and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// The store.
    pub store: PathBuf,
    /// Images (directories with a manifest) whose chunks were kept.
    pub images: usize,
    /// Chunks referenced by them and present.
    pub kept_chunks: u64,
    /// Bytes of those chunk files.
    pub kept_bytes: u64,
    /// Unreferenced chunks removed (or, dry run, that would be).
    pub removed_chunks: u64,
    /// Bytes of those chunk files.
    pub removed_bytes: u64,
    /// Temporaries (torn writes) removed.
    pub removed_temps: u64,
    /// Nothing was removed.
    pub dry_run: bool,
}

/// A chunk file of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    /// Its id.
    pub id: ChunkId,
    /// Size of its file (header included).
    pub file_bytes: u64,
}

/// A temporary chunk file: its shard directory (`<2 hex>`) and name.
pub type Temporary = (String, OsString);

/// The chunk store in `<images>/chunks/`.
#[derive(Debug)]
pub struct ChunkStore {
    images: Dir,
    dir: Dir,
    /// The images directory as messages show it.
    shown: PathBuf,
}

/// Parses a 64-hex chunk file name.
pub fn parse_chunk_name(name: &str) -> Option<ChunkId> {
    if name.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(name.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    (chunk_hex(&id) == name).then_some(id)
}

fn is_shard(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<2 hex>/<64 hex>`.
pub(crate) fn chunk_rel(id: &ChunkId) -> PathBuf {
    let hex = chunk_hex(id);
    let mut p = PathBuf::from(&hex[..2]);
    p.push(hex);
    p
}

impl ChunkStore {
    /// Makes `<images>/chunks/` a store (creating directories, 0700, and `store.json` if
    /// missing) and opens it. Existing settings are kept.
    pub fn create(images: &Path) -> Result<ChunkStore, StoreError> {
        let idir = Dir::create_all(images, PRIVATE_DIR).map_err(ioe("create", images))?;
        let dir = idir
            .ensure_dir(CHUNKS_DIR, PRIVATE_DIR)
            .map_err(ioe("create", images.join(CHUNKS_DIR)))?;
        if !dir
            .exists(STORE_CONFIG)
            .map_err(ioe("stat", dir.child_path(STORE_CONFIG)))?
        {
            let json = serde_json::to_vec(&StoreConfig::default()).unwrap_or_default();
            dir.write_atomic(STORE_CONFIG, &json, PRIVATE_FILE)
                .map_err(ioe("write", dir.child_path(STORE_CONFIG)))?;
            idir.sync().map_err(ioe("fsync", images))?;
        }
        Ok(ChunkStore {
            images: idir,
            dir,
            shown: images.to_owned(),
        })
    }

    /// Opens the store of `<images>` if there is one (`chunks/store.json`). Neither `images`'
    /// last component nor `chunks` may be a link.
    pub fn open(images: &Path) -> Result<Option<ChunkStore>, StoreError> {
        let nf = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        let idir = match Dir::open(images) {
            Ok(d) => d,
            Err(e) if nf(&e) => return Ok(None),
            Err(e) => return Err(ioe("open", images)(e)),
        };
        let dir = match idir.open_dir(CHUNKS_DIR) {
            Ok(d) => d,
            Err(e) if nf(&e) => return Ok(None),
            Err(e) => return Err(ioe("open", images.join(CHUNKS_DIR))(e)),
        };
        match dir.exists(STORE_CONFIG) {
            Ok(true) => Ok(Some(ChunkStore {
                images: idir,
                dir,
                shown: images.to_owned(),
            })),
            Ok(false) => Ok(None),
            Err(e) => Err(ioe("stat", images.join(CHUNKS_DIR).join(STORE_CONFIG))(e)),
        }
    }

    /// The store beside the image directory `image_dir` (in the directory holding it), if
    /// any. Reached through `image_dir/..`, so an image directory given as a
    /// `/proc/self/fd/N` handle (the partition layer's) finds its store too.
    pub fn beside(image_dir: &Path) -> Result<Option<ChunkStore>, StoreError> {
        let Some(mut store) = Self::open(&image_dir.join(".."))? else {
            return Ok(None);
        };
        // Messages name the real directory, not `/proc/self/fd/N/..`.
        let real = std::fs::read_link(image_dir)
            .ok()
            .filter(|t| t.is_absolute())
            .or_else(|| std::fs::canonicalize(image_dir).ok());
        if let Some(parent) = real.as_deref().and_then(Path::parent) {
            store.shown = parent.to_owned();
        }
        Ok(Some(store))
    }

    /// The directory holding the store and the images.
    pub fn images_path(&self) -> &Path {
        &self.shown
    }

    /// The store's `chunks/` directory (as messages show it).
    pub fn path(&self) -> PathBuf {
        self.shown.join(CHUNKS_DIR)
    }

    /// The opened `chunks/` directory.
    pub fn handle(&self) -> &Dir {
        &self.dir
    }

    /// The settings.
    pub fn config(&self) -> Result<StoreConfig, StoreError> {
        let path = self.dir.child_path(STORE_CONFIG);
        let bytes = self.dir.read(STORE_CONFIG).map_err(ioe("read", &path))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(StoreConfig::default());
        }
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Config { path, source })
    }

    /// Replaces the settings (atomically).
    pub fn set_config(&self, cfg: &StoreConfig) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(cfg).unwrap_or_default();
        self.dir
            .write_atomic(STORE_CONFIG, &json, PRIVATE_FILE)
            .map_err(ioe("write", self.dir.child_path(STORE_CONFIG)))
    }

    fn lock(&self, op: rustix::fs::FlockOperation) -> Result<Option<StoreLock>, StoreError> {
        // A lock of our own: the directory opened again (a duplicated descriptor would share
        // the open file description, and so the lock, with `self`).
        let own = rustix::fs::openat(
            self.dir.as_fd(),
            ".",
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| ioe("lock", self.path())(e.into()))?;
        match rustix::fs::flock(&own, op) {
            Ok(()) => Ok(Some(StoreLock { _fd: own })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(ioe("lock", self.path())(e.into())),
        }
    }

    fn lock_blocking(&self, op: rustix::fs::FlockOperation) -> Result<StoreLock, StoreError> {
        self.lock(op)?
            .ok_or_else(|| ioe("lock", self.path())(io::Error::from(io::ErrorKind::WouldBlock)))
    }

    /// Held by a writer from create to commit (waits for a running GC).
    pub fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        self.lock_blocking(rustix::fs::FlockOperation::LockShared)
    }

    /// Held by GC (waits for running writers).
    pub fn lock_exclusive(&self) -> Result<StoreLock, StoreError> {
        self.lock_blocking(rustix::fs::FlockOperation::LockExclusive)
    }

    /// The exclusive lock if no writer holds the store now.
    pub fn try_lock_exclusive(&self) -> Result<Option<StoreLock>, StoreError> {
        self.lock(rustix::fs::FlockOperation::NonBlockingLockExclusive)
    }

    /// Whether a complete chunk of this id is in the store.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.dir
            .open_file_beneath(chunk_rel(id))
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.len() >= CHUNK_HEADER_LEN as u64)
    }

    /// Size of a chunk file of the store (None: absent).
    pub fn chunk_file_bytes(&self, id: &ChunkId) -> Option<u64> {
        self.dir
            .open_file_beneath(chunk_rel(id))
            .and_then(|f| f.metadata())
            .ok()
            .map(|m| m.len())
    }

    /// Every complete chunk, and the temporaries (shard, name) found.
    pub fn scan(&self) -> Result<(Vec<StoredChunk>, Vec<Temporary>), StoreError> {
        let mut chunks = Vec::new();
        let mut temps = Vec::new();
        let names = self.dir.entries().map_err(ioe("list", self.path()))?;
        for shard in names
            .iter()
            .filter_map(|n| n.to_str())
            .filter(|n| is_shard(n))
        {
            let sub = self
                .dir
                .open_dir(shard)
                .map_err(ioe("open", self.dir.child_path(shard)))?;
            for n in sub.entries().map_err(ioe("list", sub.path()))? {
                match n.to_str().and_then(parse_chunk_name) {
                    Some(id) => {
                        let st = sub.metadata(&n).map_err(ioe("stat", sub.child_path(&n)))?;
                        chunks.push(StoredChunk {
                            id,
                            file_bytes: st.st_size as u64,
                        });
                    }
                    None if n.to_str().is_some_and(|s| s.ends_with(".tmp")) => {
                        temps.push((shard.to_owned(), n));
                    }
                    None => {}
                }
            }
        }
        Ok((chunks, temps))
    }

    /// Bytes of every regular file under the images directory (store and images).
    pub fn usage(&self) -> Result<u64, StoreError> {
        dir_bytes(&self.images).map_err(ioe("measure", self.images_path()))
    }

    /// The chunks listed by every image beside the store (directories with a manifest,
    /// `.trash-*` excluded), and how many images there are. Read until two listings of the
    /// directory agree (an image renamed meanwhile is read under its new name).
    pub fn references(&self) -> Result<(HashSet<ChunkId>, usize), StoreError> {
        let list = || -> Result<BTreeSet<OsString>, StoreError> {
            Ok(self
                .images
                .entries()
                .map_err(ioe("list", self.images_path()))?
                .into_iter()
                .filter(|n| {
                    n != CHUNKS_DIR && !n.to_str().is_some_and(|s| s.starts_with(TRASH_PREFIX))
                })
                .collect())
        };
        let mut before = list()?;
        for _ in 0..10 {
            let mut refs = HashSet::new();
            let mut images = 0;
            let mut vanished = false;
            for name in &before {
                match self.manifest_of(name)? {
                    Read::Manifest(m) => {
                        images += 1;
                        refs.extend(
                            m.chunks
                                .iter()
                                .filter_map(|c| <[u8; 32]>::try_from(c.id.as_slice()).ok()),
                        );
                    }
                    Read::NotAnImage => {}
                    Read::Vanished => vanished = true,
                }
            }
            let after = list()?;
            if !vanished && after == before {
                return Ok((refs, images));
            }
            before = after;
        }
        Err(StoreError::Unstable {
            store: self.path().to_owned(),
        })
    }

    fn manifest_of(&self, name: &OsString) -> Result<Read, StoreError> {
        let nf = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        let path = self.images.child_path(name);
        let d = match self.images.open_dir(name) {
            Ok(d) => d,
            Err(e) if nf(&e) => return Ok(Read::Vanished),
            // Not a directory (or a link): not an image.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                return Ok(Read::NotAnImage)
            }
            Err(e) => return Err(ioe("open", path)(e)),
        };
        match read_framed(&d, MANIFEST_FILE, KIND_MANIFEST) {
            Ok((_, payload)) => Manifest::decode(payload.as_slice())
                .map(Read::Manifest)
                .map_err(|e| StoreError::UnreadableManifest {
                    dir: path,
                    store: self.path().to_owned(),
                    reason: e.to_string(),
                }),
            Err(crate::FrameError::Io { source, .. }) if nf(&source) => {
                // No manifest: an image being written (its writer holds the lock, so not
                // during GC) or one a crash left incomplete; unless the directory vanished.
                if self.images.exists(name).unwrap_or(false) {
                    Ok(Read::NotAnImage)
                } else {
                    Ok(Read::Vanished)
                }
            }
            Err(e) => Err(StoreError::UnreadableManifest {
                dir: path,
                store: self.path().to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Removes every chunk no image beside the store lists, and every temporary, under the
    /// exclusive lock (waits for writers). With `dry_run` only counts.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, StoreError> {
        let _lock = self.lock_exclusive()?;
        self.gc_locked(dry_run)
    }

    /// [`gc`](Self::gc) if no writer holds the store now; None otherwise.
    pub fn try_gc(&self) -> Result<Option<GcReport>, StoreError> {
        match self.try_lock_exclusive()? {
            Some(_lock) => self.gc_locked(false).map(Some),
            None => Ok(None),
        }
    }

    fn gc_locked(&self, dry_run: bool) -> Result<GcReport, StoreError> {
        let (refs, images) = self.references()?;
        let (chunks, temps) = self.scan()?;
        let mut r = GcReport {
            store: self.path().to_owned(),
            images,
            dry_run,
            ..GcReport::default()
        };
        let mut touched = BTreeSet::new();
        for c in chunks {
            if refs.contains(&c.id) {
                r.kept_chunks += 1;
                r.kept_bytes += c.file_bytes;
                continue;
            }
            r.removed_chunks += 1;
            r.removed_bytes += c.file_bytes;
            if !dry_run {
                let rel = chunk_rel(&c.id);
                let hex = chunk_hex(&c.id);
                let sub = self
                    .dir
                    .open_dir(&hex[..2])
                    .map_err(ioe("open", self.dir.child_path(&hex[..2])))?;
                match sub.remove_file(&hex) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ioe("remove", self.path().join(rel))(e)),
                }
                touched.insert(hex[..2].to_owned());
            }
        }
        for (shard, name) in temps {
            r.removed_temps += 1;
            if !dry_run {
                let sub = self
                    .dir
                    .open_dir(&shard)
                    .map_err(ioe("open", self.dir.child_path(&shard)))?;
                let _ = sub.remove_file(&name);
                touched.insert(shard);
            }
        }
        for shard in touched {
            if let Ok(sub) = self.dir.open_dir(&shard) {
                sub.sync().map_err(ioe("fsync", sub.path()))?;
            }
        }
        tracing::info!(store = %self.path().display(), images, kept = r.kept_chunks,
            removed = r.removed_chunks, removed_bytes = r.removed_bytes,
            temps = r.removed_temps, dry_run, "chunk store collected");
        Ok(r)
    }
}

enum Read {
    Manifest(Manifest),
    NotAnImage,
    Vanished,
}

/// Bytes of the regular files under `d` (links not followed).
pub(crate) fn dir_bytes(d: &Dir) -> io::Result<u64> {
    let mut total = 0;
    for n in d.entries()? {
        let st = match d.metadata(&n) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::Directory => match d.open_dir(&n) {
                Ok(sub) => total += dir_bytes(&sub)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
            rustix::fs::FileType::RegularFile => total += st.st_size as u64,
            _ => {}
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------------------
// Writing into a store (used by `ImageWriter`)

/// Chunks going to the workload's store: written to `<64 hex>.<tag>.tmp` in the store, fsynced
/// and renamed at commit (before the manifest exists), so a chunk under its final name is
/// always complete. Temporaries of a writer dropped without commit are removed.
pub(crate) struct StoreWriter {
    pub(crate) store: ChunkStore,
    _lock: StoreLock,
    subdirs: Vec<OnceLock<Dir>>,
    /// Unique per writer: `<pid>-<random>`.
    tag: String,
    quota: Option<u64>,
    /// Bytes of the workload's directory, counting what this writer added.
    used: AtomicU64,
    /// Chunks written to temporaries, not yet renamed.
    temps: Mutex<Vec<ChunkId>>,
}

impl StoreWriter {
    pub(crate) fn open(dir: &Path) -> Result<Option<StoreWriter>, CreateError> {
        let store_err = |source| CreateError::Store {
            dir: dir.to_owned(),
            source,
        };
        let Some(store) = ChunkStore::beside(dir).map_err(store_err)? else {
            return Ok(None);
        };
        let lock = store.lock_shared().map_err(store_err)?;
        let quota = store.config().map_err(store_err)?.quota_bytes;
        let used = match quota {
            Some(_) => store.usage().map_err(store_err)?,
            None => 0,
        };
        let mut rnd = [0u8; 8];
        let _ = getrandom::fill(&mut rnd);
        Ok(Some(StoreWriter {
            store,
            _lock: lock,
            subdirs: (0..256).map(|_| OnceLock::new()).collect(),
            tag: format!("{}-{}", std::process::id(), hex_bytes(&rnd)),
            quota,
            used: AtomicU64::new(used),
            temps: Mutex::new(Vec::new()),
        }))
    }

    fn tmp_name(&self, id: &ChunkId) -> String {
        format!("{}.{}.tmp", chunk_hex(id), self.tag)
    }

    /// Counts `n` more bytes against the quota; refuses (counting nothing) beyond it.
    pub(crate) fn charge(&self, n: u64) -> Result<(), WriteError> {
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > quota {
            self.used.fetch_sub(n, Ordering::Relaxed);
            return Err(WriteError::QuotaExceeded {
                dir: self.store.images_path().to_owned(),
                quota,
                used: before,
                more: n,
            });
        }
        Ok(())
    }

    fn subdir(&self, hex: &str, id0: u8) -> io::Result<&Dir> {
        let cell = &self.subdirs[usize::from(id0)];
        if let Some(d) = cell.get() {
            return Ok(d);
        }
        let d = self.store.handle().ensure_dir(&hex[..2], PRIVATE_DIR)?;
        let _ = cell.set(d);
        Ok(cell.get().unwrap_or_else(|| unreachable!("set above")))
    }

    /// Writes the chunk to a temporary of the store unless the store has it. Returns
    /// `(stored_len, reused)`.
    pub(crate) fn put(
        &self,
        id: &ChunkId,
        raw: &[u8],
        lz4: bool,
    ) -> Result<(u64, bool), WriteError> {
        if self.store.contains(id) {
            return Ok((0, true));
        }
        let hex = chunk_hex(id);
        let err = |op: &'static str, path: PathBuf, source: io::Error| WriteError::Chunk {
            id: hex.clone(),
            path,
            op,
            source,
        };
        let sub = self
            .subdir(&hex, id[0])
            .map_err(|e| err("create directory", self.store.path().join(&hex[..2]), e))?;
        let tmp = self.tmp_name(id);
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
        if let Err(e) = self.charge(CHUNK_HEADER_LEN as u64 + stored) {
            let _ = sub.remove_file(&tmp);
            return Err(e);
        }
        lock(&self.temps).push(*id);
        Ok((stored, false))
    }

    /// fsyncs the temporaries, renames them into place, fsyncs the directories.
    pub(crate) fn commit(&self) -> Result<(), CommitError> {
        let temps: Vec<ChunkId> = lock(&self.temps).clone();
        let sync_err = |path: PathBuf, source: io::Error| CommitError::Sync { path, source };
        let sub_of = |id: &ChunkId| {
            self.subdirs[usize::from(id[0])]
                .get()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        };
        par_try_for_each(
            &temps,
            || (),
            |(), id| {
                let tmp = self.tmp_name(id);
                sub_of(id)
                    .and_then(|d| d.open_file(&tmp))
                    .and_then(|f| f.sync_all())
                    .map_err(|e| sync_err(self.store.path().join(&tmp), e))
            },
        )?;
        for id in &temps {
            let tmp = self.tmp_name(id);
            sub_of(id)
                .and_then(|d| d.rename(&tmp, chunk_hex(id)))
                .map_err(|source| CommitError::Manifest {
                    path: self.store.path().join(&tmp),
                    op: "rename",
                    source,
                })?;
        }
        lock(&self.temps).clear();
        let mut dirs: Vec<&Dir> = self.subdirs.iter().filter_map(|d| d.get()).collect();
        dirs.push(self.store.handle());
        par_try_for_each(
            &dirs,
            || (),
            |(), d| d.sync().map_err(|e| sync_err(d.path().to_owned(), e)),
        )
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        for id in lock(&self.temps).drain(..) {
            if let Some(d) = self.subdirs[usize::from(id[0])].get() {
                let _ = d.remove_file(self.tmp_name(&id));
            }
        }
    }
}
