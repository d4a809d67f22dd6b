//! The image repository: where the agent keeps each workload's consistency images
//! (DESIGN.md C10/C12; issue 5 items 4 and 6).
//!
//! Operations sit behind the [`Repository`] trait so that a shared backend (S3-compatible)
//! can follow; [`LocalRepo`] keeps them in a directory:
//!
//! ```text
//! ROOT/<workload>/images/<id>/             committed image (manifest.img present)
//! ROOT/<workload>/images/.pending-<id>/    being written by the engine; never listed
//! ROOT/<workload>/images/.trash-<id>/      being deleted; never listed
//! ROOT/<workload>/.trash-images-<ms>/      a removed `images/` directory being deleted
//! ROOT/<workload>/images/chunks/           the workload's chunk store (`stasis_image::store`)
//! ```
//!
//! The images of a workload share its chunk store: [`Repository::begin`] makes
//! `images/chunks/` a store, the engine's writer then puts each chunk there only if it is
//! absent, so an idle workload's next image stores almost nothing. Deleting images
//! ([`Repository::retain`], [`Repository::discard_before`]) is followed by a reachability GC
//! of the store (skipped, and left to the next one, while a checkpoint holds the store).
//! The quota of a workload (`images/chunks/store.json`, [`LocalRepo::set_quota`]) bounds the
//! bytes of its store and images together: a checkpoint that would go beyond it fails, the
//! previous images stay as they are.
//!
//! An [`ImageId`] is `<20-digit unix ms>-<6-digit seq>`: ids sort by creation, and a new id
//! is always greater than every id already present for the workload (also across agent
//! restarts and when the clock goes backwards).
//!
//! ## Durability rule
//!
//! *A workload's state is never deleted before its successor is durable.*
//!
//! - [`Repository::begin`] hands out a `.pending-<id>` directory; the engine writes the image
//!   there and commits it by writing `manifest.img` last.
//! - [`Repository::commit`] opens the image ([`ImageReader::open`]: the manifest exists, parses
//!   and lists only files that exist), fsyncs it, renames it to `<id>` and fsyncs `images/`.
//!   Only then is it listed: a listed image is complete and durable. A failed commit removes
//!   the pending directory.
//! - [`Repository::retain`] deletes only images older than the newest `max(keep, 1)` committed
//!   ones, so the newest committed (durable) image is never deleted by retention.
//! - Deletion first renames the image to `.trash-<id>` (atomic; fsync of `images/`), then
//!   removes the files, so a half-deleted image is never listed. [`Repository::recover`]
//!   finishes deletions and removes pending directories left by a crash.
//!
//! The exceptions are explicit operator/policy decisions: [`Repository::discard_before`]
//! (after a boot restart the older images hold the state that failed) and
//! [`Repository::remove_all`] (the workload is removed).

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use stasis_image::name::Name;
use stasis_image::safefs::{Dir, PRIVATE_DIR};
use stasis_image::store::{ChunkStore, GcReport, StoreConfig, StoreError};
use stasis_image::trust::{self, Keyring, SignatureStatus};
use stasis_image::{ImageReader, OpenError};

/// Name of a workload's image directory.
pub const IMAGES_DIR: &str = "images";
/// Prefix of an image directory being written.
pub const PENDING_PREFIX: &str = ".pending-";
/// Prefix of an image directory being deleted.
pub const TRASH_PREFIX: &str = ".trash-";
/// Prefix of a workload's removed `images/` directory being deleted.
const TRASH_IMAGES_PREFIX: &str = ".trash-images-";
/// Default age after which [`Repository::retain`] removes a pending directory that this
/// process is not writing.
pub const DEFAULT_PENDING_TTL: Duration = Duration::from_secs(3600);

/// Errors of the repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The workload name breaks the name rule ([`Name`]).
    #[error("invalid workload name")]
    InvalidWorkload(#[from] stasis_image::name::NameError),
    /// A string that is not an image id (`<20-digit ms>-<seq>`).
    #[error("invalid image id {id:?} (expected <20-digit unix ms>-<seq>)")]
    InvalidId {
        /// The string given.
        id: String,
    },
    /// A pending image that this repository did not hand out.
    #[error("{dir} is not a pending image of workload {workload:?} in this repository")]
    ForeignPending {
        /// Workload named by the pending image.
        workload: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// Commit found no complete image in the pending directory (the engine did not commit
    /// it); the directory was removed.
    #[error("image in {dir} is not complete")]
    Incomplete {
        /// The pending directory.
        dir: PathBuf,
        /// Why it does not open.
        #[source]
        source: OpenError,
    },
    /// The workload's chunk store failed.
    #[error("chunk store of workload {workload:?}")]
    Store {
        /// The workload.
        workload: String,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RepoError + 'a {
    move |source| RepoError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Identifies an image of a workload; orders by creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageId {
    /// Creation time, unix milliseconds.
    pub unix_ms: u64,
    /// Distinguishes ids created in the same millisecond.
    pub seq: u32,
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:020}-{:06}", self.unix_ms, self.seq)
    }
}

impl FromStr for ImageId {
    type Err = RepoError;

    fn from_str(s: &str) -> Result<Self, RepoError> {
        let bad = || RepoError::InvalidId { id: s.to_owned() };
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if ms.len() != 20 || !digits(ms) || !digits(seq) || seq.len() > 10 {
            return Err(bad());
        }
        Ok(ImageId {
            unix_ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl serde::Serialize for ImageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ImageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A directory handed out by [`Repository::begin`] for the engine to write an image into.
#[derive(Debug, PartialEq, Eq)]
pub struct PendingImage {
    /// The workload.
    pub workload: String,
    /// The id the image will have once committed.
    pub id: ImageId,
    /// Where to write it (an empty directory, not listed until committed).
    pub dir: PathBuf,
}

/// A committed image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    /// Its id.
    pub id: ImageId,
    /// Its directory (open it with [`ImageReader::open`]).
    pub dir: PathBuf,
    /// When it was begun, unix milliseconds.
    pub created_unix_ms: u64,
    /// Bytes of its files and of the chunks it uses in the workload's chunk store (a chunk
    /// shared by several images counts in each: `stasis image ls` shows what is shared).
    pub bytes: u64,
}

/// What [`Repository::retain`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetainReport {
    /// Committed images deleted, oldest first.
    pub removed: Vec<ImageId>,
    /// Stale pending directories removed.
    pub removed_pending: Vec<PathBuf>,
}

/// What [`Repository::recover`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoverReport {
    /// Pending (uncommitted) image directories removed.
    pub removed_pending: Vec<PathBuf>,
    /// Unfinished deletions completed.
    pub removed_trash: Vec<PathBuf>,
}

/// Operations on the image repository. See the [module docs](self) for the durability rule
/// every implementation keeps.
pub trait Repository: Send + Sync {
    /// A fresh, empty, unlisted directory for a new image of `workload`.
    fn begin(&self, workload: &str) -> Result<PendingImage, RepoError>;
    /// Makes a written image durable and listed. Fails (and removes the pending directory)
    /// if the image does not open.
    fn commit(&self, pending: PendingImage) -> Result<ImageInfo, RepoError>;
    /// Drops a pending image.
    fn abort(&self, pending: PendingImage) -> Result<(), RepoError>;
    /// Committed images that open, oldest first.
    fn list(&self, workload: &str) -> Result<Vec<ImageInfo>, RepoError>;
    /// The newest committed image that opens.
    fn latest(&self, workload: &str) -> Result<Option<ImageInfo>, RepoError> {
        Ok(self.list(workload)?.pop())
    }
    /// Deletes committed images older than the newest `max(keep, 1)`; removes stale
    /// pending directories.
    fn retain(&self, workload: &str, keep: usize) -> Result<RetainReport, RepoError>;
    /// Deletes committed images older than `id`; returns their ids.
    fn discard_before(&self, workload: &str, id: ImageId) -> Result<Vec<ImageId>, RepoError>;
    /// Deletes every image of `workload`, pending ones included.
    fn remove_all(&self, workload: &str) -> Result<(), RepoError>;
    /// At start: removes pending directories and unfinished deletions left by a crash.
    fn recover(&self) -> Result<RecoverReport, RepoError>;
}

/// Kind of an entry in `images/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Committed(ImageId),
    Pending(ImageId),
    Trash(ImageId),
}

fn classify(name: &str) -> Option<Entry> {
    if let Some(rest) = name.strip_prefix(PENDING_PREFIX) {
        rest.parse().ok().map(Entry::Pending)
    } else if let Some(rest) = name.strip_prefix(TRASH_PREFIX) {
        rest.parse().ok().map(Entry::Trash)
    } else {
        name.parse().ok().map(Entry::Committed)
    }
}

fn sync_dir(path: &Path) -> Result<(), RepoError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync", path))
}

/// Total length of the regular files under `dir` (symlinks not followed).
fn dir_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Bytes of the store chunks the image at `dir` lists (0 for a standalone image).
fn store_bytes_of(dir: &Path) -> u64 {
    let Ok(r) = ImageReader::open(dir) else {
        return 0;
    };
    let Some(store) = r.store() else {
        return 0;
    };
    r.manifest()
        .chunks
        .iter()
        .filter_map(|c| <[u8; 32]>::try_from(c.id.as_slice()).ok())
        .filter(|id| !r.chunk_is_own(id))
        .filter_map(|id| store.chunk_file_bytes(&id))
        .sum()
}

/// Removes a directory tree; a missing one is fine.
fn remove_tree(path: &Path) -> Result<(), RepoError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RepoError::Io {
            op: "remove",
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[derive(Default)]
struct State {
    /// Last id handed out by this process.
    last: Option<ImageId>,
    /// Pending directories handed out and not yet committed or aborted.
    active: HashSet<PathBuf>,
}

/// The repository in a local directory.
pub struct LocalRepo {
    root: PathBuf,
    pending_ttl: Duration,
    state: Mutex<State>,
}

impl LocalRepo {
    /// Opens (creating it if missing) the repository at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, RepoError> {
        let root = root.into();
        // Private (0700 whatever the umask), its last component not a link.
        Dir::create_all(&root, PRIVATE_DIR).map_err(io_err("create directory", &root))?;
        Ok(LocalRepo {
            root,
            pending_ttl: DEFAULT_PENDING_TTL,
            state: Mutex::new(State::default()),
        })
    }

    /// Signs, with the keyring's host key, the committed images of every workload that carry
    /// no signature (written before images were signed), so the first failover after an
    /// upgrade restores from them. Only complete images are signed: they open, every record
    /// and chunk verifies, and only root can write them; others are left as they are, and an
    /// image signed by an unknown key or whose signature does not match is never re-signed.
    /// Idempotent. Returns the number of images signed.
    pub fn sign_unsigned(&self, keyring: &Keyring) -> Result<usize, RepoError> {
        let _state = self.lock();
        let mut signed = 0;
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("read directory", &self.root)(e)),
        };
        for w in rd {
            let w = w.map_err(io_err("read directory", &self.root))?;
            let Some(name) = w.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if Name::check(&name).is_err() || name.starts_with('.') {
                continue;
            }
            let images = self.root.join(&name).join(IMAGES_DIR);
            for (kind, dir) in Self::entries(&images)? {
                if !matches!(kind, Entry::Committed(_)) {
                    continue;
                }
                let why = match Self::sign_one(&dir, keyring) {
                    Ok(true) => {
                        signed += 1;
                        tracing::info!(dir = %dir.display(), "signed an image written before images were signed");
                        continue;
                    }
                    Ok(false) => continue,
                    Err(why) => why,
                };
                tracing::warn!(dir = %dir.display(), reason = %why, "image left unsigned: restore will refuse it");
            }
        }
        Ok(signed)
    }

    /// Ok(true): signed now; Ok(false): already signed by a key of ours; Err: why not.
    fn sign_one(dir: &Path, keyring: &Keyring) -> Result<bool, String> {
        let reader = ImageReader::open(dir).map_err(|e| format!("does not open: {e}"))?;
        match trust::status(&reader, keyring) {
            SignatureStatus::Host { .. } | SignatureStatus::Trusted { .. } => return Ok(false),
            SignatureStatus::Unsigned => {}
            other => return Err(other.to_string()),
        }
        reader
            .verify_all()
            .map_err(|e| format!("does not verify: {e}"))?;
        trust::check_ownership(&reader).map_err(|e| e.to_string())?;
        trust::sign(&reader, keyring).map_err(|e| format!("cannot sign: {e}"))?;
        Ok(true)
    }

    /// Sets the age after which [`Repository::retain`] removes a pending directory that
    /// this process is not writing (default [`DEFAULT_PENDING_TTL`]).
    #[must_use]
    pub fn with_pending_ttl(mut self, ttl: Duration) -> Self {
        self.pending_ttl = ttl;
        self
    }

    /// The repository's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ROOT/<workload>/images`.
    pub fn images_dir(&self, workload: &str) -> Result<PathBuf, RepoError> {
        Name::check(workload)?;
        Ok(self.root.join(workload).join(IMAGES_DIR))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Entries of `images/` that parse, sorted by id; an absent directory is empty. The
    /// workload's directory and `images/` are opened without following a link: a link planted
    /// there fails the operation (nothing is read or written through it).
    fn entries(images: &Path) -> Result<Vec<(Entry, PathBuf)>, RepoError> {
        let opened = images
            .parent()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
            .and_then(Dir::open)
            .and_then(|w| w.open_dir(IMAGES_DIR));
        let dir = match opened {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("open directory", images)(e)),
        };
        let mut out = Vec::new();
        for name in dir.entries().map_err(io_err("read directory", images))? {
            let path = images.join(&name);
            match name.to_str().and_then(classify) {
                Some(kind) => out.push((kind, path)),
                None => tracing::debug!(path = %path.display(), "ignoring unknown entry"),
            }
        }
        out.sort_by_key(|(kind, _)| match *kind {
            Entry::Committed(id) | Entry::Pending(id) | Entry::Trash(id) => id,
        });
        Ok(out)
    }

    /// Committed images, oldest first, each with whether it opens.
    fn committed(images: &Path) -> Result<Vec<(ImageId, PathBuf, bool)>, RepoError> {
        Ok(Self::entries(images)?
            .into_iter()
            .filter_map(|(kind, path)| match kind {
                Entry::Committed(id) => {
                    let ok = match ImageReader::open(&path) {
                        Ok(_) => true,
                        Err(OpenError::NotFound { .. }) => return None,
                        Err(e) => {
                            tracing::warn!(dir = %path.display(), error = %e, "committed image does not open; not listed");
                            false
                        }
                    };
                    Some((id, path, ok))
                }
                _ => None,
            })
            .collect())
    }

    fn info(id: ImageId, dir: PathBuf) -> ImageInfo {
        let bytes = dir_bytes(&dir).unwrap_or_else(|e| {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot size image");
            0
        }) + store_bytes_of(&dir);
        ImageInfo {
            id,
            dir,
            created_unix_ms: id.unix_ms,
            bytes,
        }
    }

    /// Renames committed images to `.trash-<id>` (then one fsync of `images/`) and removes
    /// them. Stops at the first failure, having deleted the older ones.
    fn delete_images(
        images: &Path,
        victims: &[(ImageId, PathBuf)],
        why: &str,
    ) -> Result<Vec<ImageId>, RepoError> {
        let mut renamed = Vec::new();
        let mut failure = None;
        for (id, path) in victims {
            let trash = images.join(format!("{TRASH_PREFIX}{id}"));
            match fs::rename(path, &trash) {
                Ok(()) => renamed.push((*id, trash)),
                Err(e) => {
                    failure = Some(io_err("rename", path)(e));
                    break;
                }
            }
        }
        if !renamed.is_empty() {
            sync_dir(images)?;
        }
        let mut removed = Vec::new();
        for (id, trash) in renamed {
            remove_tree(&trash)?;
            tracing::info!(image = %id, dir = %images.display(), why, "image deleted");
            removed.push(id);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    fn remove_pending(&self, dir: &Path) -> Result<(), RepoError> {
        remove_tree(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        self.lock().active.remove(dir);
        Ok(())
    }

    /// GC of the workload's store after images were deleted, unless a checkpoint holds it
    /// now (the next deletion collects then). Failures are only logged: the images are gone
    /// either way and the chunks are collected later.
    fn collect(workload: &str, images: &Path) {
        let r = ChunkStore::open(images).and_then(|s| match s {
            Some(s) => s.try_gc(),
            None => Ok(None),
        });
        match r {
            Ok(Some(_)) => {}
            Ok(None) => tracing::debug!(workload, "chunk store busy or absent; not collected now"),
            Err(e) => tracing::warn!(workload, error = %e, "chunk store not collected"),
        }
    }

    /// The workload's chunk store (None: the workload has none yet).
    pub fn store(&self, workload: &str) -> Result<Option<ChunkStore>, RepoError> {
        let images = self.images_dir(workload)?;
        ChunkStore::open(&images).map_err(|source| RepoError::Store {
            workload: workload.to_owned(),
            source,
        })
    }

    /// Sets (None: removes) the workload's quota: bytes of its chunk store and images
    /// together, pending ones included. Creates the store if needed.
    pub fn set_quota(&self, workload: &str, quota_bytes: Option<u64>) -> Result<(), RepoError> {
        let images = self.images_dir(workload)?;
        let serr = |source| RepoError::Store {
            workload: workload.to_owned(),
            source,
        };
        let store = ChunkStore::create(&images).map_err(serr)?;
        let mut cfg: StoreConfig = store.config().map_err(serr)?;
        cfg.quota_bytes = quota_bytes;
        store.set_config(&cfg).map_err(serr)
    }

    /// Reachability GC of the workload's store (waits for a checkpoint in progress).
    pub fn gc(&self, workload: &str, dry_run: bool) -> Result<Option<GcReport>, RepoError> {
        let Some(store) = self.store(workload)? else {
            return Ok(None);
        };
        store
            .gc(dry_run)
            .map(Some)
            .map_err(|source| RepoError::Store {
                workload: workload.to_owned(),
                source,
            })
    }

    /// Names of the workloads that have a directory in the repository.
    pub fn workloads(&self) -> Result<Vec<String>, RepoError> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("read directory", &self.root)(e)),
        };
        for e in rd {
            let e = e.map_err(io_err("read directory", &self.root))?;
            if let Some(n) = e.file_name().to_str() {
                if Name::check(n).is_ok() && !n.starts_with('.') && e.path().is_dir() {
                    out.push(n.to_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn check_pending(&self, pending: &PendingImage) -> Result<PathBuf, RepoError> {
        let images = self.images_dir(&pending.workload)?;
        let expected = images.join(format!("{PENDING_PREFIX}{}", pending.id));
        if expected != pending.dir {
            return Err(RepoError::ForeignPending {
                workload: pending.workload.clone(),
                dir: pending.dir.clone(),
            });
        }
        Ok(images)
    }
}

impl Repository for LocalRepo {
    fn begin(&self, workload: &str) -> Result<PendingImage, RepoError> {
        let images = self.images_dir(workload)?;
        let wdir = self.root.join(workload);
        let fresh_workload = !wdir.exists();
        let fresh_images = !images.exists();
        let images_fd =
            Dir::create_all(&images, PRIVATE_DIR).map_err(io_err("create directory", &images))?;
        ChunkStore::create(&images).map_err(|source| RepoError::Store {
            workload: workload.to_owned(),
            source,
        })?;
        if fresh_workload {
            sync_dir(&self.root)?;
        }
        if fresh_images {
            sync_dir(&wdir)?;
        }
        let mut state = self.lock();
        let on_disk = Self::entries(&images)?.last().map(|(kind, _)| match *kind {
            Entry::Committed(id) | Entry::Pending(id) | Entry::Trash(id) => id,
        });
        let floor = state.last.max(on_disk);
        let now = crate::unix_ms();
        let id = match floor {
            Some(f) if f.unix_ms >= now => ImageId {
                unix_ms: f.unix_ms,
                seq: f.seq + 1,
            },
            _ => ImageId {
                unix_ms: now,
                seq: 0,
            },
        };
        let name = format!("{PENDING_PREFIX}{id}");
        let dir = images.join(&name);
        images_fd
            .create_dir(&name, PRIVATE_DIR)
            .map_err(io_err("create directory", &dir))?;
        state.last = Some(id);
        state.active.insert(dir.clone());
        drop(state);
        tracing::debug!(workload, image = %id, dir = %dir.display(), "image begun");
        Ok(PendingImage {
            workload: workload.to_owned(),
            id,
            dir,
        })
    }

    fn commit(&self, pending: PendingImage) -> Result<ImageInfo, RepoError> {
        let images = self.check_pending(&pending)?;
        let dir = &pending.dir;
        let result = (|| {
            ImageReader::open(dir).map_err(|source| RepoError::Incomplete {
                dir: dir.clone(),
                source,
            })?;
            // The engine's commit fsyncs what it wrote; sync the directory and manifest
            // again in case it was written by other means.
            File::open(dir.join(stasis_image::MANIFEST_FILE))
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync", dir))?;
            sync_dir(dir)?;
            let fin = images.join(pending.id.to_string());
            fs::rename(dir, &fin).map_err(io_err("rename", dir))?;
            sync_dir(&images)?;
            Ok(fin)
        })();
        match result {
            Ok(fin) => {
                self.lock().active.remove(dir);
                let info = Self::info(pending.id, fin);
                tracing::info!(workload = %pending.workload, image = %info.id, bytes = info.bytes, "image committed to repository");
                Ok(info)
            }
            Err(e) => {
                tracing::warn!(workload = %pending.workload, image = %pending.id, error = %e, "image commit failed; removing it");
                if let Err(e2) = self.remove_pending(dir) {
                    tracing::warn!(dir = %dir.display(), error = %e2, "cannot remove failed image");
                }
                Err(e)
            }
        }
    }

    fn abort(&self, pending: PendingImage) -> Result<(), RepoError> {
        self.check_pending(&pending)?;
        self.remove_pending(&pending.dir)?;
        tracing::info!(workload = %pending.workload, image = %pending.id, "image aborted");
        Ok(())
    }

    fn list(&self, workload: &str) -> Result<Vec<ImageInfo>, RepoError> {
        let images = self.images_dir(workload)?;
        Ok(Self::committed(&images)?
            .into_iter()
            .filter(|(_, _, ok)| *ok)
            .map(|(id, dir, _)| Self::info(id, dir))
            .collect())
    }

    fn retain(&self, workload: &str, keep: usize) -> Result<RetainReport, RepoError> {
        let images = self.images_dir(workload)?;
        let keep = keep.max(1);
        let mut report = RetainReport::default();
        {
            let state = self.lock();
            let committed = Self::committed(&images)?;
            let good: Vec<ImageId> = committed.iter().filter(|c| c.2).map(|c| c.0).collect();
            // The oldest image kept; everything older goes (openable or not). Without a
            // good image nothing is deleted.
            if let Some(&oldest_kept) = good.len().checked_sub(keep).and_then(|i| good.get(i)) {
                let victims: Vec<(ImageId, PathBuf)> = committed
                    .into_iter()
                    .filter(|c| c.0 < oldest_kept)
                    .map(|c| (c.0, c.1))
                    .collect();
                report.removed = Self::delete_images(&images, &victims, "retention")?;
                if !report.removed.is_empty() {
                    Self::collect(workload, &images);
                }
            }
            let now = crate::unix_ms();
            let ttl = u64::try_from(self.pending_ttl.as_millis()).unwrap_or(u64::MAX);
            for (kind, path) in Self::entries(&images)? {
                let stale = match kind {
                    Entry::Pending(id) => {
                        !state.active.contains(&path) && now.saturating_sub(id.unix_ms) > ttl
                    }
                    Entry::Trash(_) => true,
                    Entry::Committed(_) => false,
                };
                if stale {
                    remove_tree(&path)?;
                    tracing::info!(dir = %path.display(), "stale directory removed");
                    if matches!(kind, Entry::Pending(_)) {
                        report.removed_pending.push(path);
                    }
                }
            }
        }
        Ok(report)
    }

    fn discard_before(&self, workload: &str, id: ImageId) -> Result<Vec<ImageId>, RepoError> {
        let images = self.images_dir(workload)?;
        let _state = self.lock();
        let victims: Vec<(ImageId, PathBuf)> = Self::entries(&images)?
            .into_iter()
            .filter_map(|(kind, path)| match kind {
                Entry::Committed(i) if i < id => Some((i, path)),
                _ => None,
            })
            .collect();
        let removed = Self::delete_images(&images, &victims, "discarded")?;
        Self::collect(workload, &images);
        Ok(removed)
    }

    fn remove_all(&self, workload: &str) -> Result<(), RepoError> {
        let images = self.images_dir(workload)?;
        let wpath = self.root.join(workload);
        let mut state = self.lock();
        // Through descriptors: a link planted as the workload's directory fails, one planted
        // as `images/` (or inside it) is removed as a link, its target untouched.
        let wdir = match Dir::open(&self.root).and_then(|r| r.open_dir(workload)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("open directory", &wpath)(e)),
        };
        if !wdir.exists(IMAGES_DIR).map_err(io_err("stat", &images))? {
            return Ok(());
        }
        let trash = format!("{TRASH_IMAGES_PREFIX}{}", crate::unix_ms());
        wdir.rename(IMAGES_DIR, &trash)
            .map_err(io_err("rename", &images))?;
        wdir.sync().map_err(io_err("fsync", &wpath))?;
        state.active.retain(|p| !p.starts_with(&images));
        drop(state);
        wdir.remove_all(&trash)
            .map_err(io_err("remove", &wpath.join(&trash)))?;
        tracing::info!(workload, "all images removed");
        Ok(())
    }

    fn recover(&self) -> Result<RecoverReport, RepoError> {
        let state = self.lock();
        let mut report = RecoverReport::default();
        let rd = fs::read_dir(&self.root).map_err(io_err("read directory", &self.root))?;
        for entry in rd {
            let entry = entry.map_err(io_err("read directory", &self.root))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if Name::check(&name).is_err() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let wdir = entry.path();
            for sub in fs::read_dir(&wdir).map_err(io_err("read directory", &wdir))? {
                let sub = sub.map_err(io_err("read directory", &wdir))?;
                if sub
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(TRASH_IMAGES_PREFIX))
                {
                    remove_tree(&sub.path())?;
                    report.removed_trash.push(sub.path());
                }
            }
            let images = wdir.join(IMAGES_DIR);
            for (kind, path) in Self::entries(&images)? {
                match kind {
                    Entry::Pending(_) if !state.active.contains(&path) => {
                        remove_tree(&path)?;
                        report.removed_pending.push(path);
                    }
                    Entry::Trash(_) => {
                        remove_tree(&path)?;
                        report.removed_trash.push(path);
                    }
                    _ => {}
                }
            }
            // Temporaries of a checkpoint the crash interrupted, chunks only removed images used.
            Self::collect(&name, &images);
        }
        drop(state);
        for p in &report.removed_pending {
            tracing::info!(dir = %p.display(), "recovery: removed uncommitted image");
        }
        for p in &report.removed_trash {
            tracing::info!(dir = %p.display(), "recovery: finished deleting");
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trip_and_order() {
        let a = ImageId {
            unix_ms: 1_700_000_000_000,
            seq: 3,
        };
        let s = a.to_string();
        assert_eq!(s, "00000001700000000000-000003");
        assert_eq!(s.parse::<ImageId>().unwrap(), a);
        let b = ImageId {
            unix_ms: 1_700_000_000_000,
            seq: 10,
        };
        assert!(a < b && a.to_string() < b.to_string());
        for bad in [
            "",
            "1-2",
            "0000000170000000000x-1",
            "00000001700000000000-",
            "x",
        ] {
            assert!(bad.parse::<ImageId>().is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            "\"00000001700000000000-000003\""
        );
    }

    #[test]
    fn workload_names() {
        let r = LocalRepo::new(tempfile::tempdir().unwrap().path().join("r")).unwrap();
        for ok in ["web", "db-1", "a.b_c"] {
            r.images_dir(ok).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(r.images_dir(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn classify_names() {
        let id: ImageId = "00000001700000000000-000001".parse().unwrap();
        assert_eq!(classify(&id.to_string()), Some(Entry::Committed(id)));
        assert_eq!(
            classify(&format!(".pending-{id}")),
            Some(Entry::Pending(id))
        );
        assert_eq!(classify(&format!(".trash-{id}")), Some(Entry::Trash(id)));
        assert_eq!(classify("lost+found"), None);
    }
}
