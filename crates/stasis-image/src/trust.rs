//! Image trust: who wrote an image, and may it be restored here.
//!
//! An image is code: restoring it sets credentials, memory and registers of new processes. The
//! blake3 sums of the manifest prove integrity, not authorship, so every image Stasis commits
//! carries a *keyed MAC* over its manifest, and every restore checks it before any task exists.
//!
//! - **Keys**: each root has a host key, 32 random bytes in `ROOT/keys/host.key` (mode 0600 in
//!   a 0700 `ROOT/keys/`, created at first use). Keys of other hosts or of a cluster are placed
//!   in `ROOT/keys/trusted/*.key`, same format (exactly 32 raw bytes). A key's id is the first
//!   16 bytes of `blake3::derive_key("stasis image key id v1", key)`, printed in hex.
//! - **Signature**: `signature.img` beside `manifest.img`, [`SIGNATURE_LEN`] bytes:
//!   `b"STASISSG"`, u16 LE version 1, the 16-byte key id, and the 32-byte
//!   `blake3::keyed_hash(key, b"stasis image signature v1" || manifest.img as on disk)`. The
//!   manifest names the blake3 of every record file and the id (blake3) of every chunk, and
//!   readers verify both, so the MAC covers the whole image.
//! - **Restore rule** ([`check`]): the image directory, `chunks/` and its subdirectories, the
//!   manifest, the signature and every file the manifest lists must be owned by root (or the
//!   restorer's euid) and not writable by group or others; then, unless the caller chose
//!   [`Trust::InsecureUnsigned`], the signature must verify with the host key or a trusted key.
//!
//! All files are reached through the reader's directory descriptor without following links,
//! and the files checked are the ones restore then reads.

#![warn(missing_docs)]

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::chunk::hex_bytes;
use crate::container::{ImageReader, CHUNKS_DIR, MANIFEST_FILE};
use crate::safefs::{self, Dir, PRIVATE_DIR, PRIVATE_FILE};

/// Name of the signature file in an image directory.
pub const SIGNATURE_FILE: &str = "signature.img";
/// Magic of the signature file.
pub const SIGNATURE_MAGIC: [u8; 8] = *b"STASISSG";
/// Version of the signature file layout.
pub const SIGNATURE_VERSION: u16 = 1;
/// Size of the signature file.
pub const SIGNATURE_LEN: usize = 8 + 2 + 16 + 32;
/// Directory of the keys under a root.
pub const KEYS_DIR: &str = "keys";
/// The host key's file name in [`KEYS_DIR`].
pub const HOST_KEY_FILE: &str = "host.key";
/// Directory of trusted keys in [`KEYS_DIR`].
pub const TRUSTED_DIR: &str = "trusted";
/// Size of a key.
pub const KEY_LEN: usize = 32;

const KEY_ID_CONTEXT: &str = "stasis image key id v1";
const MAC_DOMAIN: &[u8] = b"stasis image signature v1";

/// A key id: 16 bytes, shown in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 16]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_bytes(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A secret key and its id. `Debug` shows the id only.
#[derive(Clone)]
pub struct Key {
    id: KeyId,
    secret: [u8; KEY_LEN],
    /// Where it came from (file name), for messages.
    name: String,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({} {})", self.name, self.id)
    }
}

impl Key {
    /// A key from its 32 bytes.
    pub fn from_bytes(secret: [u8; KEY_LEN], name: impl Into<String>) -> Key {
        Key {
            id: key_id(&secret),
            secret,
            name: name.into(),
        }
    }

    /// A new random key.
    pub fn generate(name: impl Into<String>) -> Result<Key, TrustError> {
        let mut secret = [0u8; KEY_LEN];
        getrandom::fill(&mut secret).map_err(|e| TrustError::Random {
            reason: e.to_string(),
        })?;
        Ok(Key::from_bytes(secret, name))
    }

    /// Its id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Where it came from (`host.key`, `trusted/NAME.key`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32 secret bytes (to copy the key to another host's `keys/trusted/`).
    pub fn secret(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }
}

/// The id of a key.
pub fn key_id(secret: &[u8; KEY_LEN]) -> KeyId {
    let d = blake3::derive_key(KEY_ID_CONTEXT, secret);
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    KeyId(id)
}

/// The MAC of a manifest (its bytes exactly as on disk) under `key`.
pub fn mac(key: &Key, manifest: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&key.secret);
    h.update(MAC_DOMAIN);
    h.update(manifest);
    *h.finalize().as_bytes()
}

/// A parsed signature file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Which key made it.
    pub key_id: KeyId,
    /// The MAC.
    pub mac: [u8; 32],
}

impl Signature {
    /// The signature of `manifest` (bytes as on disk) by `key`.
    pub fn make(key: &Key, manifest: &[u8]) -> Signature {
        Signature {
            key_id: key.id,
            mac: mac(key, manifest),
        }
    }

    /// The file's bytes.
    pub fn encode(&self) -> [u8; SIGNATURE_LEN] {
        let mut b = [0u8; SIGNATURE_LEN];
        b[0..8].copy_from_slice(&SIGNATURE_MAGIC);
        b[8..10].copy_from_slice(&SIGNATURE_VERSION.to_le_bytes());
        b[10..26].copy_from_slice(&self.key_id.0);
        b[26..58].copy_from_slice(&self.mac);
        b
    }

    /// Parses the file's bytes; never panics.
    pub fn decode(b: &[u8]) -> Result<Signature, &'static str> {
        if b.len() != SIGNATURE_LEN {
            return Err("wrong length");
        }
        if b[0..8] != SIGNATURE_MAGIC {
            return Err("bad magic");
        }
        if u16::from_le_bytes([b[8], b[9]]) != SIGNATURE_VERSION {
            return Err("unsupported version");
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[10..26]);
        let mut mac = [0u8; 32];
        mac.copy_from_slice(&b[26..58]);
        Ok(Signature {
            key_id: KeyId(id),
            mac,
        })
    }
}

/// The keys of a root: its host key (signs and verifies) and trusted keys (verify only).
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    host: Option<Key>,
    trusted: Vec<Key>,
}

/// How a restore treats an image's signature.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The image must be signed by one of these keys.
    Verify(Keyring),
    /// Skip the signature check (the ownership and mode rule still applies).
    InsecureUnsigned,
}

/// Who signed an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// This root's host key.
    Host(KeyId),
    /// A trusted key (its file name).
    Trusted(KeyId, String),
    /// Not checked ([`Trust::InsecureUnsigned`]).
    Unchecked,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Host(id) => write!(f, "signed by this host's key {id}"),
            Signer::Trusted(id, n) => write!(f, "signed by trusted key {id} ({n})"),
            Signer::Unchecked => f.write_str("signature not checked (--insecure-unsigned)"),
        }
    }
}

/// What `inspect` shows about an image's signature (never refuses).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum SignatureStatus {
    /// Verified with the host key.
    Host {
        /// Key id (hex).
        key_id: String,
    },
    /// Verified with a trusted key.
    Trusted {
        /// Key id (hex).
        key_id: String,
        /// Key file.
        key: String,
    },
    /// Signed by a key this root does not know.
    UnknownKey {
        /// Key id (hex).
        key_id: String,
    },
    /// The MAC does not match: the image changed after it was signed.
    Mismatch {
        /// Key id (hex).
        key_id: String,
    },
    /// No `signature.img`.
    Unsigned,
    /// `signature.img` cannot be read or parsed.
    Invalid {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureStatus::Host { key_id } => write!(f, "signed by this host's key {key_id}"),
            SignatureStatus::Trusted { key_id, key } => {
                write!(f, "signed by trusted key {key_id} ({key})")
            }
            SignatureStatus::UnknownKey { key_id } => {
                write!(f, "signed by an unknown key {key_id}")
            }
            SignatureStatus::Mismatch { key_id } => write!(
                f,
                "signature by key {key_id} does not match: the image was altered after signing"
            ),
            SignatureStatus::Unsigned => f.write_str("unsigned"),
            SignatureStatus::Invalid { reason } => write!(f, "invalid signature file: {reason}"),
        }
    }
}

/// Why an image is not trusted, or a key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The image has no `signature.img`.
    #[error("image {dir} is not signed (no {SIGNATURE_FILE})")]
    NoSignature {
        /// Image directory.
        dir: PathBuf,
    },
    /// `signature.img` does not parse.
    #[error("{path} is not a valid signature file: {reason}")]
    BadSignatureFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// Signed by a key that is neither the host key nor a trusted key.
    #[error("image {dir} is signed by an unknown key {key_id} (not this host's key, not in keys/trusted/)")]
    UnknownKey {
        /// Image directory.
        dir: PathBuf,
        /// The signing key's id.
        key_id: KeyId,
    },
    /// The MAC does not match the manifest.
    #[error("image {dir}: signature mismatch: the image was altered after it was signed by key {key_id}")]
    Mismatch {
        /// Image directory.
        dir: PathBuf,
        /// The signing key's id.
        key_id: KeyId,
    },
    /// A file or directory is owned by someone other than root (or the restorer).
    #[error("{path} is owned by uid {uid}, not by root: anyone who can write it controls the restored processes")]
    Owner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A file or directory is writable by group or others.
    #[error("{path} is writable by group or others (mode {mode:04o}): anyone who can write it controls the restored processes")]
    Writable {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file is not usable (size, mode, owner).
    #[error("key file {path}: {reason}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Signing needs this root's host key, and there is none.
    #[error("no host key (ROOT/{KEYS_DIR}/{HOST_KEY_FILE}) to sign with")]
    NoHostKey,
    /// The system's random source failed.
    #[error("cannot generate a key: {reason}")]
    Random {
        /// The error.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl TrustError {
    /// Whether this is a refusal of the image itself (signature, ownership, mode) rather than a
    /// failure to read it or the keys.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, TrustError::Random { .. } | TrustError::NoHostKey)
    }
}

fn ioe(op: &'static str, path: PathBuf) -> impl FnOnce(io::Error) -> TrustError {
    move |source| TrustError::Io { op, path, source }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A key file must be a regular file owned by root (or us), not accessible to group/others.
fn read_key(dir: &Dir, name: &OsStr, label: String) -> Result<Key, TrustError> {
    let path = dir.child_path(name);
    let bytes = {
        use std::io::Read;
        let mut f = dir
            .open_file(name)
            .map_err(ioe("reading key", path.clone()))?;
        let st = rustix::fs::fstat(&f).map_err(|e| TrustError::Io {
            op: "stat",
            path: path.clone(),
            source: e.into(),
        })?;
        if st.st_uid != 0 && st.st_uid != euid() {
            return Err(TrustError::BadKey {
                path,
                reason: format!("owned by uid {}, not root", st.st_uid),
            });
        }
        if st.st_mode & 0o077 != 0 {
            return Err(TrustError::BadKey {
                path,
                reason: format!(
                    "mode {:04o} lets group or others read or write it (chmod 600)",
                    st.st_mode & 0o7777
                ),
            });
        }
        let mut v = Vec::new();
        f.by_ref()
            .take(KEY_LEN as u64 + 1)
            .read_to_end(&mut v)
            .map_err(ioe("reading key", path.clone()))?;
        v
    };
    let secret: [u8; KEY_LEN] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| TrustError::BadKey {
            path: path.clone(),
            reason: format!(
                "expected exactly {KEY_LEN} raw bytes, found {}",
                bytes.len()
            ),
        })?;
    Ok(Key::from_bytes(secret, label))
}

/// Refuses a keys directory writable by group or others.
fn check_keys_dir(d: &Dir) -> Result<(), TrustError> {
    let st = d.stat_self().map_err(|e| TrustError::Io {
        op: "stat",
        path: d.path().to_owned(),
        source: e,
    })?;
    check_meta(d.path(), st.st_uid, st.st_mode)
}

impl Keyring {
    /// A keyring of exactly these keys (tests, tools).
    pub fn new(host: Option<Key>, trusted: Vec<Key>) -> Keyring {
        Keyring { host, trusted }
    }

    /// Loads the keys of `root` (`ROOT/keys/host.key` if present, `ROOT/keys/trusted/*.key`);
    /// creates nothing. A key file that is not usable (size, owner, mode) is an error.
    pub fn load(root: &Path) -> Result<Keyring, TrustError> {
        let keys_path = root.join(KEYS_DIR);
        let keys = match Dir::open(&keys_path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Keyring::default()),
            Err(e) => return Err(ioe("opening", keys_path)(e)),
        };
        check_keys_dir(&keys)?;
        let host = match read_key(&keys, OsStr::new(HOST_KEY_FILE), HOST_KEY_FILE.into()) {
            Ok(k) => Some(k),
            Err(TrustError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let trusted = Self::load_trusted(&keys)?;
        Ok(Keyring { host, trusted })
    }

    fn load_trusted(keys: &Dir) -> Result<Vec<Key>, TrustError> {
        let t = match keys.open_dir(TRUSTED_DIR) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ioe("opening", keys.child_path(TRUSTED_DIR))(e)),
        };
        check_keys_dir(&t)?;
        let mut names = t.entries().map_err(ioe("listing", t.path().to_owned()))?;
        names.sort();
        let mut out = Vec::new();
        for n in names {
            let b = n.as_bytes();
            if b.starts_with(b".") || !b.ends_with(b".key") {
                continue;
            }
            let label = format!("{TRUSTED_DIR}/{}", n.to_string_lossy());
            out.push(read_key(&t, &n, label)?);
        }
        Ok(out)
    }

    /// Like [`load`](Self::load), but first creates the host key if there is none: 32 bytes
    /// from the system's random source, `ROOT/keys/host.key` mode 0600 in a 0700
    /// `ROOT/keys/`, installed without replacing (two racing creators: the loser uses the
    /// winner's key).
    pub fn load_or_create(root: &Path) -> Result<Keyring, TrustError> {
        let root_dir = if root.exists() {
            Dir::open_following(root).map_err(ioe("opening", root.to_owned()))?
        } else {
            Dir::create_all(root, PRIVATE_DIR).map_err(ioe("creating", root.to_owned()))?
        };
        let keys = root_dir
            .ensure_dir(KEYS_DIR, PRIVATE_DIR)
            .map_err(ioe("creating", root.join(KEYS_DIR)))?;
        if !keys
            .exists(HOST_KEY_FILE)
            .map_err(ioe("stat", keys.child_path(HOST_KEY_FILE)))?
        {
            let key = Key::generate(HOST_KEY_FILE)?;
            let tmp = format!(
                ".{HOST_KEY_FILE}.tmp{}-{}",
                std::process::id(),
                getrandom::u64().unwrap_or(0)
            );
            let _ = keys.remove_file(&tmp);
            let written = (|| {
                use std::io::Write;
                let mut f = keys.create_file(&tmp, PRIVATE_FILE)?;
                f.write_all(&key.secret)?;
                f.sync_all()?;
                drop(f);
                keys.rename_noreplace(&tmp, HOST_KEY_FILE)
            })();
            match written {
                Ok(()) => {
                    keys.sync().map_err(ioe("fsync", keys.path().to_owned()))?;
                    tracing::info!(key_id = %key.id, dir = %keys.path().display(), "created the host key");
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let _ = keys.remove_file(&tmp);
                }
                Err(e) => {
                    let _ = keys.remove_file(&tmp);
                    return Err(ioe("creating", keys.child_path(HOST_KEY_FILE))(e));
                }
            }
        }
        Keyring::load(root)
    }

    /// Installs `secret` as the trusted key `ROOT/keys/trusted/FILE` (mode 0600, written to a
    /// temporary name, synced, renamed over any older one). `file` is a plain name ending in
    /// `.key`.
    pub fn add_trusted(root: &Path, file: &str, secret: &[u8; KEY_LEN]) -> Result<(), TrustError> {
        crate::safefs::check_name(OsStr::new(file)).map_err(ioe(
            "naming",
            root.join(KEYS_DIR).join(TRUSTED_DIR).join(file),
        ))?;
        let root_dir = if root.exists() {
            Dir::open_following(root).map_err(ioe("opening", root.to_owned()))?
        } else {
            Dir::create_all(root, PRIVATE_DIR).map_err(ioe("creating", root.to_owned()))?
        };
        let keys = root_dir
            .ensure_dir(KEYS_DIR, PRIVATE_DIR)
            .map_err(ioe("creating", root.join(KEYS_DIR)))?;
        let t = keys
            .ensure_dir(TRUSTED_DIR, PRIVATE_DIR)
            .map_err(ioe("creating", keys.child_path(TRUSTED_DIR)))?;
        t.write_atomic(file, secret, PRIVATE_FILE)
            .map_err(ioe("writing", t.child_path(file)))
    }

    /// Removes the trusted key `ROOT/keys/trusted/FILE` (absent: nothing to do).
    pub fn remove_trusted(root: &Path, file: &str) -> Result<(), TrustError> {
        let path = root.join(KEYS_DIR).join(TRUSTED_DIR);
        let t = match Dir::open(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ioe("opening", path)(e)),
        };
        match t.remove_file(file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ioe("removing", t.child_path(file))(e))
            }
            _ => Ok(()),
        }
    }

    /// A keyring with a fresh random host key that exists only in memory.
    pub fn ephemeral() -> Result<Keyring, TrustError> {
        Ok(Keyring {
            host: Some(Key::generate("ephemeral")?),
            trusted: Vec::new(),
        })
    }

    /// The host key, if any.
    pub fn host(&self) -> Option<&Key> {
        self.host.as_ref()
    }

    /// The trusted keys.
    pub fn trusted(&self) -> &[Key] {
        &self.trusted
    }

    /// The key of this id (host first).
    fn find(&self, id: KeyId) -> Option<(&Key, bool)> {
        if let Some(h) = self.host.as_ref().filter(|h| h.id == id) {
            return Some((h, true));
        }
        self.trusted.iter().find(|k| k.id == id).map(|k| (k, false))
    }

    /// Signs a manifest (bytes as on disk) with the host key.
    pub fn sign(&self, manifest: &[u8]) -> Result<Signature, TrustError> {
        let key = self.host.as_ref().ok_or(TrustError::NoHostKey)?;
        Ok(Signature::make(key, manifest))
    }

    /// Verifies a signature of `manifest`.
    pub fn verify(&self, sig: &Signature, manifest: &[u8]) -> SignatureStatus {
        let key_id = sig.key_id.to_string();
        match self.find(sig.key_id) {
            None => SignatureStatus::UnknownKey { key_id },
            Some((k, host)) => {
                // Constant-time comparison (blake3::Hash's PartialEq).
                if blake3::Hash::from(mac(k, manifest)) != blake3::Hash::from(sig.mac) {
                    SignatureStatus::Mismatch { key_id }
                } else if host {
                    SignatureStatus::Host { key_id }
                } else {
                    SignatureStatus::Trusted {
                        key_id,
                        key: k.name.clone(),
                    }
                }
            }
        }
    }
}

fn check_meta(path: &Path, uid: u32, mode: u32) -> Result<(), TrustError> {
    safefs::check_owner_and_mode(uid, mode).map_err(|e| match e {
        safefs::Untrusted::Owner(uid) => TrustError::Owner {
            path: path.to_owned(),
            uid,
        },
        safefs::Untrusted::Writable(mode) => TrustError::Writable {
            path: path.to_owned(),
            mode,
        },
    })
}

fn check_entry(dir: &Dir, name: &OsStr) -> Result<(), TrustError> {
    let path = dir.child_path(name);
    let st = dir.metadata(name).map_err(ioe("stat", path.clone()))?;
    check_meta(&path, st.st_uid, st.st_mode)
}

/// The ownership and mode rule: the image directory, `chunks/` and each of its subdirectories,
/// `manifest.img`, `signature.img` (if present) and every file the manifest lists must be
/// owned by root (or the caller's euid) and not writable by group or others.
pub fn check_ownership(reader: &ImageReader) -> Result<(), TrustError> {
    let d = reader.handle();
    let st = d.stat_self().map_err(ioe("stat", d.path().to_owned()))?;
    check_meta(d.path(), st.st_uid, st.st_mode)?;
    check_entry(d, OsStr::new(MANIFEST_FILE))?;
    if d.exists(SIGNATURE_FILE)
        .map_err(ioe("stat", d.child_path(SIGNATURE_FILE)))?
    {
        check_entry(d, OsStr::new(SIGNATURE_FILE))?;
    }
    for f in &reader.manifest().files {
        check_entry(d, OsStr::new(&f.name))?;
    }
    if let Some(chunks) = reader.chunks_handle() {
        let st = chunks
            .stat_self()
            .map_err(ioe("stat", chunks.path().to_owned()))?;
        check_meta(chunks.path(), st.st_uid, st.st_mode)?;
        let subs = chunks
            .entries()
            .map_err(ioe("listing", chunks.path().to_owned()))?;
        for s in subs {
            check_entry(chunks, &s)?;
            let sp = chunks.child_path(&s);
            let st = chunks.metadata(&s).map_err(ioe("stat", sp))?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                let sub = chunks
                    .open_dir(&s)
                    .map_err(ioe("opening", chunks.child_path(&s)))?;
                for c in sub
                    .entries()
                    .map_err(ioe("listing", sub.path().to_owned()))?
                {
                    check_entry(&sub, &c)?;
                }
            }
        }
    } else if !reader.manifest().chunks.is_empty() && reader.store().is_none() {
        check_entry(d, OsStr::new(CHUNKS_DIR))?;
    }
    if let Some(store) = reader.store() {
        check_store_ownership(reader, store)?;
    }
    Ok(())
}

/// The ownership rule for the workload's chunk store an image reads from: the store, each of
/// its subdirectories and each chunk file of the image found there.
fn check_store_ownership(
    reader: &ImageReader,
    store: &crate::store::ChunkStore,
) -> Result<(), TrustError> {
    let sd = store.handle();
    let st = sd.stat_self().map_err(ioe("stat", sd.path().to_owned()))?;
    check_meta(sd.path(), st.st_uid, st.st_mode)?;
    let mut subs = std::collections::HashSet::new();
    for c in &reader.manifest().chunks {
        let Ok(id) = <[u8; 32]>::try_from(c.id.as_slice()) else {
            continue;
        };
        if reader.chunk_is_own(&id) {
            continue;
        }
        let hex = crate::chunk_hex(&id);
        let sub = sd
            .open_dir(&hex[..2])
            .map_err(ioe("opening", sd.child_path(&hex[..2])))?;
        if subs.insert(hex[..2].to_owned()) {
            check_entry(sd, OsStr::new(&hex[..2]))?;
        }
        check_entry(&sub, OsStr::new(&hex))?;
    }
    Ok(())
}

/// Reads `signature.img` of an opened image (None: there is none).
pub fn read_signature(reader: &ImageReader) -> Result<Option<Signature>, TrustError> {
    let d = reader.handle();
    let path = d.child_path(SIGNATURE_FILE);
    let bytes = match d.open_file(SIGNATURE_FILE) {
        Ok(f) => {
            use std::io::Read;
            let mut v = Vec::new();
            f.take(SIGNATURE_LEN as u64 + 1)
                .read_to_end(&mut v)
                .map_err(ioe("reading", path.clone()))?;
            v
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ioe("reading", path)(e)),
    };
    Signature::decode(&bytes)
        .map(Some)
        .map_err(|reason| TrustError::BadSignatureFile { path, reason })
}

/// The signature status of an opened image under `keyring` (for `inspect`; never refuses).
pub fn status(reader: &ImageReader, keyring: &Keyring) -> SignatureStatus {
    match read_signature(reader) {
        Ok(None) => SignatureStatus::Unsigned,
        Ok(Some(sig)) => keyring.verify(&sig, reader.manifest_bytes()),
        Err(e) => SignatureStatus::Invalid {
            reason: e.to_string(),
        },
    }
}

/// The restore check, run before any task is created: the ownership and mode rule
/// ([`check_ownership`]), then (with [`Trust::Verify`]) the signature.
pub fn check(reader: &ImageReader, trust: &Trust) -> Result<Signer, TrustError> {
    check_ownership(reader)?;
    let keyring = match trust {
        Trust::InsecureUnsigned => {
            tracing::warn!(dir = %reader.dir().display(), "restoring without checking the image's signature (--insecure-unsigned)");
            return Ok(Signer::Unchecked);
        }
        Trust::Verify(k) => k,
    };
    let dir = reader.dir().to_owned();
    let sig =
        read_signature(reader)?.ok_or_else(|| TrustError::NoSignature { dir: dir.clone() })?;
    match keyring.verify(&sig, reader.manifest_bytes()) {
        SignatureStatus::Host { .. } => Ok(Signer::Host(sig.key_id)),
        SignatureStatus::Trusted { key, .. } => Ok(Signer::Trusted(sig.key_id, key)),
        SignatureStatus::UnknownKey { .. } => Err(TrustError::UnknownKey {
            dir,
            key_id: sig.key_id,
        }),
        SignatureStatus::Mismatch { .. }
        | SignatureStatus::Unsigned
        | SignatureStatus::Invalid { .. } => Err(TrustError::Mismatch {
            dir,
            key_id: sig.key_id,
        }),
    }
}

/// Writes (or replaces) `signature.img` of an opened image with the keyring's host key:
/// temporary file, fsync, rename, fsync of the directory; a link named `signature.img` is
/// replaced, never followed. The caller checks the image first (`verify_all`,
/// [`check_ownership`]).
pub fn sign(reader: &ImageReader, keyring: &Keyring) -> Result<KeyId, TrustError> {
    let sig = keyring.sign(reader.manifest_bytes())?;
    let d = reader.handle();
    d.write_atomic(SIGNATURE_FILE, &sig.encode(), PRIVATE_FILE)
        .map_err(ioe("writing", d.child_path(SIGNATURE_FILE)))?;
    Ok(sig.key_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip_and_refusals() {
        let k = Key::from_bytes([7; 32], "t");
        let s = Signature::make(&k, b"manifest");
        assert_eq!(Signature::decode(&s.encode()).unwrap(), s);
        let ring = Keyring::new(Some(k.clone()), vec![]);
        assert!(matches!(
            ring.verify(&s, b"manifest"),
            SignatureStatus::Host { .. }
        ));
        assert!(matches!(
            ring.verify(&s, b"manifesT"),
            SignatureStatus::Mismatch { .. }
        ));
        let other = Keyring::new(Some(Key::from_bytes([8; 32], "o")), vec![]);
        assert!(matches!(
            other.verify(&s, b"manifest"),
            SignatureStatus::UnknownKey { .. }
        ));
        let trusting = Keyring::new(None, vec![k]);
        assert!(matches!(
            trusting.verify(&s, b"manifest"),
            SignatureStatus::Trusted { .. }
        ));
        let mut b = s.encode();
        b[0] = b'X';
        assert!(Signature::decode(&b).is_err());
        assert!(Signature::decode(&b[..57]).is_err());
    }

    #[test]
    fn key_ids_differ_and_are_stable() {
        assert_eq!(key_id(&[1; 32]), key_id(&[1; 32]));
        assert_ne!(key_id(&[1; 32]), key_id(&[2; 32]));
        assert_eq!(key_id(&[1; 32]).to_string().len(), 32);
    }

    #[test]
    fn host_key_is_created_once_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let a = Keyring::load_or_create(&root).unwrap();
        let b = Keyring::load_or_create(&root).unwrap();
        assert_eq!(a.host().unwrap().id(), b.host().unwrap().id());
        let m = std::fs::metadata(root.join("keys/host.key")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(m.len(), 32);
        let m = std::fs::metadata(root.join("keys")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        // Racing creators agree on one key.
        let root2 = t.path().join("race");
        let ids: Vec<KeyId> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        Keyring::load_or_create(&root2)
                            .unwrap()
                            .host()
                            .unwrap()
                            .id()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
        // A world-readable key is refused.
        std::fs::set_permissions(
            root.join("keys/host.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(matches!(
            Keyring::load(&root),
            Err(TrustError::BadKey { .. })
        ));
    }
}
