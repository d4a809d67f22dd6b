//! One streamable archive of an image (`stasis image export` / `import`).
//!
//! ```text
//! header  16 bytes: b"STASISAR", u16 version (1), 6 bytes zero
//! frames  each: u8 type, 7 bytes zero, u64 body length, body, blake3(body) (32 bytes)
//!   1 manifest   body = manifest.img exactly (first frame, once)
//!   2 signature  body = signature.img exactly (at most once, right after the manifest)
//!   3 file       body = u16 name length, name, the record file exactly (framed)
//!   4 chunk      body = the 32-byte chunk id, the chunk file exactly (header + stored bytes)
//!   255 end      body = u64 number of frames before it (last frame)
//! ```
//!
//! The archive holds exactly what the image needs: every record file and every chunk the
//! manifest lists, whether the chunk sat in the image or in its workload's store. The importer
//! verifies each frame as it arrives (frame checksum; a file against the manifest's length and
//! blake3; a chunk by decoding it and hashing it against its id), refuses anything unlisted,
//! duplicated or missing, and writes the manifest last: an interrupted or corrupt import
//! leaves no image. The manifest's bytes are kept exactly, so a signature over them stays
//! valid.

#![warn(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::chunk::{chunk_hex, read_chunk_file, ChunkId, CHUNK_HEADER_LEN, MAX_CHUNK};
use crate::container::{
    is_image_entry, ImageReader, CHUNKS_DIR, FRAME_HEADER_LEN, KIND_MANIFEST, MANIFEST_FILE,
    MAX_RECORD_FILE,
};
use crate::manifest::Manifest;
use crate::safefs::{Dir, PRIVATE_DIR, PRIVATE_FILE};
use crate::trust::SIGNATURE_FILE;

/// Magic of an archive.
pub const ARCHIVE_MAGIC: [u8; 8] = *b"STASISAR";
/// Archive format version.
pub const ARCHIVE_VERSION: u16 = 1;
const T_MANIFEST: u8 = 1;
const T_SIGNATURE: u8 = 2;
const T_FILE: u8 = 3;
const T_CHUNK: u8 = 4;
const T_END: u8 = 255;
/// Largest frame body: a record file of the largest size with its name.
const MAX_BODY: u64 = MAX_RECORD_FILE + FRAME_HEADER_LEN as u64 + 2 + 128;

/// What an export or import moved.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveStats {
    /// Record files.
    pub files: u64,
    /// Chunks.
    pub chunks: u64,
    /// Bytes of the archive.
    pub bytes: u64,
    /// Whether the archive carried a signature.
    pub signed: bool,
}

/// Errors of [`export`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading the image failed.
    #[error("cannot read the image")]
    Read(#[source] crate::ReadError),
    /// Reading a file of the image failed.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the archive failed.
    #[error("cannot write the archive")]
    Write(#[source] io::Error),
}

/// Errors of [`import`]. Each says where in the archive it was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Not an archive.
    #[error("this is not a stasis image archive (bad magic); give a file written by `stasis image export`")]
    BadMagic,
    /// Another archive version.
    #[error("archive version {found} is not supported (this build reads {ARCHIVE_VERSION})")]
    Version {
        /// Version found.
        found: u16,
    },
    /// The archive ends early.
    #[error("the archive is truncated: it ends after {offset} bytes, {inside} (was the export interrupted?)")]
    Truncated {
        /// Bytes read.
        offset: u64,
        /// What was being read.
        inside: String,
    },
    /// The archive is damaged or not what an export writes.
    #[error(
        "the archive is corrupt at byte {offset} (frame {frame}): {reason}; export the image again"
    )]
    Corrupt {
        /// Offset of the frame.
        offset: u64,
        /// Frame number (0 = first).
        frame: u64,
        /// What is wrong.
        reason: String,
    },
    /// The target directory is not usable.
    #[error("{dir} already holds image files ({found}); import into a new or empty directory")]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
        /// What it holds.
        found: String,
    },
    /// Reading the archive failed.
    #[error("cannot read the archive")]
    Read(#[source] io::Error),
    /// Writing the image failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Counting<W> {
    fn frame(&mut self, t: u8, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = [0u8; 16];
        head[0] = t;
        head[8..16].copy_from_slice(&(len as u64).to_le_bytes());
        let mut h = blake3::Hasher::new();
        self.inner.write_all(&head)?;
        for p in parts {
            h.update(p);
            self.inner.write_all(p)?;
        }
        self.inner.write_all(h.finalize().as_bytes())?;
        self.bytes += 16 + len as u64 + 32;
        Ok(())
    }
}

/// Writes the archive of an opened image to `out`: the manifest first, its signature if any,
/// then each record file and each chunk the manifest lists.
pub fn export(reader: &ImageReader, out: impl Write) -> Result<ArchiveStats, ExportError> {
    let w = ExportError::Write;
    let mut o = Counting {
        inner: out,
        bytes: 0,
    };
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&ARCHIVE_MAGIC);
    head[8..10].copy_from_slice(&ARCHIVE_VERSION.to_le_bytes());
    o.inner.write_all(&head).map_err(w)?;
    o.bytes += 16;
    let mut frames = 0u64;
    let mut stats = ArchiveStats::default();
    o.frame(T_MANIFEST, &[reader.manifest_bytes()]).map_err(w)?;
    frames += 1;
    let d = reader.handle();
    match d.read(SIGNATURE_FILE) {
        Ok(sig) => {
            o.frame(T_SIGNATURE, &[&sig]).map_err(w)?;
            frames += 1;
            stats.signed = true;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ExportError::Io {
                path: d.child_path(SIGNATURE_FILE),
                source,
            })
        }
    }
    for f in &reader.manifest().files {
        let bytes = d.read(&f.name).map_err(|source| ExportError::Io {
            path: d.child_path(&f.name),
            source,
        })?;
        let name_len = (f.name.len() as u16).to_le_bytes();
        o.frame(T_FILE, &[&name_len, f.name.as_bytes(), &bytes])
            .map_err(w)?;
        frames += 1;
        stats.files += 1;
    }
    for c in &reader.manifest().chunks {
        let mut id = [0u8; 32];
        id.copy_from_slice(&c.id);
        let bytes = reader.chunk_file_bytes(&id).map_err(ExportError::Read)?;
        o.frame(T_CHUNK, &[&id, &bytes]).map_err(w)?;
        frames += 1;
        stats.chunks += 1;
    }
    o.frame(T_END, &[&frames.to_le_bytes()]).map_err(w)?;
    o.inner.flush().map_err(w)?;
    stats.bytes = o.bytes;
    Ok(stats)
}

struct Source<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Source<R> {
    /// Reads exactly `n` bytes (allocating as they arrive, never `n` up front).
    fn take(&mut self, n: u64, inside: impl Fn() -> String) -> Result<Vec<u8>, ImportError> {
        let mut buf = Vec::new();
        let got = Read::take(&mut self.inner, n)
            .read_to_end(&mut buf)
            .map_err(ImportError::Read)? as u64;
        self.offset += got;
        if got < n {
            return Err(ImportError::Truncated {
                offset: self.offset,
                inside: inside(),
            });
        }
        Ok(buf)
    }
}

/// Where an import writes; removes what it wrote unless [`Target::keep`] was called.
struct Target {
    path: PathBuf,
    root: Dir,
    chunks: Dir,
    created: bool,
    kept: bool,
}

impl Target {
    fn new(dir: &Path) -> Result<Target, ImportError> {
        let ioe = |op, source| ImportError::Io {
            op,
            path: dir.to_owned(),
            source,
        };
        let created = !dir.exists();
        let root = Dir::create_all(dir, PRIVATE_DIR).map_err(|e| ioe("create", e))?;
        let mut found: Vec<String> = root
            .entries()
            .map_err(|e| ioe("list", e))?
            .into_iter()
            .filter(|n| is_image_entry(n))
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        if !found.is_empty() {
            found.sort();
            return Err(ImportError::NotEmpty {
                dir: dir.to_owned(),
                found: found.join(", "),
            });
        }
        let chunks = root
            .create_dir(CHUNKS_DIR, PRIVATE_DIR)
            .map_err(|e| ioe("create", e))?;
        Ok(Target {
            path: dir.to_owned(),
            root,
            chunks,
            created,
            kept: false,
        })
    }

    fn ioe(
        &self,
        op: &'static str,
        name: impl AsRef<Path>,
    ) -> impl FnOnce(io::Error) -> ImportError {
        let path = self.path.join(name);
        move |source| ImportError::Io { op, path, source }
    }

    /// Writes `name` in `d` via a temporary, fsynced.
    fn write(&self, d: &Dir, name: &str, bytes: &[u8]) -> Result<(), ImportError> {
        let tmp = format!("{name}.tmp");
        let rel = d.path().join(name);
        let r = d.create_file(&tmp, PRIVATE_FILE).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        if let Err(e) = r {
            let _ = d.remove_file(&tmp);
            return Err(self.ioe("write", rel)(e));
        }
        d.rename(&tmp, name).map_err(self.ioe("rename", &rel))
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if self.created {
            if let (Some(parent), Some(name)) = (self.path.parent(), self.path.file_name()) {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                let _ = Dir::open(parent).and_then(|p| p.remove_all(name));
            }
        } else if let Ok(names) = self.root.entries() {
            for n in names.into_iter().filter(|n| is_image_entry(n)) {
                let _ = self.root.remove_all(&n);
            }
        }
    }
}

/// What the manifest lists, to check frames against.
struct Expect {
    manifest: Manifest,
    files: HashMap<String, (u32, u64, Vec<u8>)>,
    chunks: HashMap<ChunkId, u64>,
    seen_files: HashSet<String>,
    seen_chunks: HashSet<ChunkId>,
}

/// Reads an archive from `input` into the new image directory `dir` (created; an existing
/// directory must hold no image files), verifying every frame as it arrives. The manifest is
/// written last; on any error what was written is removed. The caller then opens the image,
/// checks it and signs it.
pub fn import(input: impl Read, dir: &Path) -> Result<ArchiveStats, ImportError> {
    let mut src = Source {
        inner: input,
        offset: 0,
    };
    let head = src.take(16, || "in the archive header".into())?;
    if head[..8] != ARCHIVE_MAGIC {
        return Err(ImportError::BadMagic);
    }
    let version = u16::from_le_bytes([head[8], head[9]]);
    if version != ARCHIVE_VERSION {
        return Err(ImportError::Version { found: version });
    }
    let target = Target::new(dir)?;
    let mut stats = ArchiveStats::default();
    let mut expect: Option<Expect> = None;
    let mut manifest_raw = Vec::new();
    let mut frame = 0u64;
    loop {
        let at = src.offset;
        let corrupt = |reason: String| ImportError::Corrupt {
            offset: at,
            frame,
            reason,
        };
        let fh = src.take(16, || format!("in the header of frame {frame}"))?;
        let t = fh[0];
        if fh[1..8].iter().any(|&b| b != 0) {
            return Err(corrupt("reserved frame header bytes are not zero".into()));
        }
        let len = u64::from_le_bytes(fh[8..16].try_into().unwrap_or_default());
        if len > MAX_BODY {
            return Err(corrupt(format!("frame length {len} is impossible")));
        }
        let what = frame_name(t);
        let body = src.take(len, || format!("inside frame {frame} ({what})"))?;
        let sum = src.take(32, || format!("in the checksum of frame {frame} ({what})"))?;
        if blake3::hash(&body).as_bytes()[..] != sum[..] {
            return Err(corrupt(format!("{what} frame: checksum mismatch")));
        }
        match (t, expect.as_mut()) {
            (T_MANIFEST, None) if frame == 0 => {
                expect = Some(expect_of(&body).map_err(corrupt)?);
                manifest_raw = body;
            }
            (T_SIGNATURE, Some(_)) if frame == 1 => {
                target.write(&target.root, SIGNATURE_FILE, &body)?;
                stats.signed = true;
            }
            (T_FILE, Some(e)) => {
                let name = put_file(&target, e, &body).map_err(|r| match r {
                    Either::Corrupt(s) => corrupt(s),
                    Either::Err(e) => e,
                })?;
                tracing::debug!(name, "imported record file");
                stats.files += 1;
            }
            (T_CHUNK, Some(e)) => {
                put_chunk(&target, e, &body).map_err(|r| match r {
                    Either::Corrupt(s) => corrupt(s),
                    Either::Err(e) => e,
                })?;
                stats.chunks += 1;
            }
            (T_END, Some(e)) => {
                let n = u64::from_le_bytes(
                    body.as_slice()
                        .try_into()
                        .map_err(|_| corrupt("the end frame is not 8 bytes".into()))?,
                );
                if n != frame {
                    return Err(corrupt(format!(
                        "the end frame counts {n} frames, {frame} came"
                    )));
                }
                check_complete(e).map_err(corrupt)?;
                break;
            }
            (T_MANIFEST, _) => return Err(corrupt("a second manifest frame".into())),
            (_, None) => return Err(corrupt(format!("{what} frame before the manifest"))),
            _ => return Err(corrupt(format!("unexpected {what} frame"))),
        }
        frame += 1;
    }
    // Everything is here and verified: fsync the chunk directories, then the manifest.
    for n in target
        .chunks
        .entries()
        .map_err(target.ioe("list", CHUNKS_DIR))?
    {
        if let Ok(sub) = target.chunks.open_dir(&n) {
            sub.sync().map_err(target.ioe("fsync", sub.path()))?;
        }
    }
    target
        .chunks
        .sync()
        .map_err(target.ioe("fsync", CHUNKS_DIR))?;
    target.write(&target.root, MANIFEST_FILE, &manifest_raw)?;
    target.root.sync().map_err(target.ioe("fsync", ""))?;
    stats.bytes = src.offset;
    target.keep();
    Ok(stats)
}

fn frame_name(t: u8) -> &'static str {
    match t {
        T_MANIFEST => "manifest",
        T_SIGNATURE => "signature",
        T_FILE => "record file",
        T_CHUNK => "chunk",
        T_END => "end",
        _ => "unknown",
    }
}

enum Either {
    Corrupt(String),
    Err(ImportError),
}

fn expect_of(raw: &[u8]) -> Result<Expect, String> {
    if raw.len() < FRAME_HEADER_LEN || raw[..8] != crate::FRAME_MAGIC {
        return Err("the manifest is not a framed file".into());
    }
    let kind = u16::from_le_bytes([raw[10], raw[11]]);
    let len = u64::from_le_bytes(raw[16..24].try_into().unwrap_or_default());
    let payload = &raw[FRAME_HEADER_LEN..];
    if kind != KIND_MANIFEST || len != payload.len() as u64 {
        return Err("the manifest's frame header does not match it".into());
    }
    if blake3::hash(payload).as_bytes()[..] != raw[24..56] {
        return Err("the manifest's checksum does not match".into());
    }
    let m = Manifest::decode(payload).map_err(|e| format!("the manifest does not decode: {e}"))?;
    m.check().map_err(|e| format!("invalid manifest: {e}"))?;
    let files = m
        .files
        .iter()
        .map(|f| (f.name.clone(), (f.kind, f.length, f.blake3.clone())))
        .collect();
    let chunks = m
        .chunks
        .iter()
        .filter_map(|c| Some((<[u8; 32]>::try_from(c.id.as_slice()).ok()?, c.raw_len)))
        .collect();
    Ok(Expect {
        manifest: m,
        files,
        chunks,
        seen_files: HashSet::new(),
        seen_chunks: HashSet::new(),
    })
}

fn put_file(target: &Target, e: &mut Expect, body: &[u8]) -> Result<String, Either> {
    let bad = |s: String| Either::Corrupt(s);
    if body.len() < 2 {
        return Err(bad("a record file frame without a name".into()));
    }
    let nlen = usize::from(u16::from_le_bytes([body[0], body[1]]));
    let name = body
        .get(2..2 + nlen)
        .and_then(|n| std::str::from_utf8(n).ok())
        .ok_or_else(|| bad("a record file frame with a bad name".into()))?
        .to_owned();
    let bytes = &body[2 + nlen..];
    let Some((kind, length, hash)) = e.files.get(&name) else {
        return Err(bad(format!("record file {name:?} is not in the manifest")));
    };
    if !e.seen_files.insert(name.clone()) {
        return Err(bad(format!("record file {name} comes twice")));
    }
    if bytes.len() as u64 != FRAME_HEADER_LEN as u64 + length {
        return Err(bad(format!(
            "record file {name} is {} bytes, the manifest says {}",
            bytes.len(),
            FRAME_HEADER_LEN as u64 + length
        )));
    }
    let payload = &bytes[FRAME_HEADER_LEN..];
    let ok = bytes[..8] == crate::FRAME_MAGIC
        && u32::from(u16::from_le_bytes([bytes[10], bytes[11]])) == *kind
        && bytes[24..56] == hash[..]
        && blake3::hash(payload).as_bytes()[..] == hash[..];
    if !ok {
        return Err(bad(format!(
            "record file {name} does not match its manifest entry (checksum)"
        )));
    }
    target
        .write(&target.root, &name, bytes)
        .map_err(Either::Err)?;
    Ok(name)
}

fn put_chunk(target: &Target, e: &mut Expect, body: &[u8]) -> Result<(), Either> {
    let bad = |s: String| Either::Corrupt(s);
    let Some((id, bytes)) = body.split_first_chunk::<32>() else {
        return Err(bad("a chunk frame without an id".into()));
    };
    let hex = chunk_hex(id);
    let Some(&raw_len) = e.chunks.get(id) else {
        return Err(bad(format!("chunk {hex} is not in the manifest")));
    };
    if !e.seen_chunks.insert(*id) {
        return Err(bad(format!("chunk {hex} comes twice")));
    }
    if (bytes.len() as u64) < CHUNK_HEADER_LEN as u64 || raw_len > MAX_CHUNK {
        return Err(bad(format!("chunk {hex} is too short")));
    }
    let sub = target
        .chunks
        .ensure_dir(&hex[..2], PRIVATE_DIR)
        .map_err(|e| Either::Err(target.ioe("create", CHUNKS_DIR)(e)))?;
    let tmp = format!("{hex}.tmp");
    let r = sub.create_file(&tmp, PRIVATE_FILE).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(err) = r {
        let _ = sub.remove_file(&tmp);
        return Err(Either::Err(target.ioe("write", sub.child_path(&tmp))(err)));
    }
    // Verify what is on disk now: header, lengths, decoding, blake3 against the id.
    let verified = sub
        .open_file(&tmp)
        .map_err(|err| target.ioe("read", sub.child_path(&tmp))(err))
        .map_err(Either::Err)
        .and_then(|f| {
            let mut buf = Vec::new();
            read_chunk_file(f, &sub.child_path(&tmp), id, raw_len, &mut buf)
                .map_err(|err| bad(format!("chunk {hex}: {err}")))
        });
    if let Err(err) = verified {
        let _ = sub.remove_file(&tmp);
        return Err(err);
    }
    sub.rename(&tmp, &hex)
        .map_err(|err| Either::Err(target.ioe("rename", sub.child_path(&tmp))(err)))
}

fn check_complete(e: &Expect) -> Result<(), String> {
    if let Some(f) = e
        .manifest
        .files
        .iter()
        .find(|f| !e.seen_files.contains(&f.name))
    {
        return Err(format!(
            "record file {} is missing from the archive",
            f.name
        ));
    }
    if let Some(id) = e.chunks.keys().find(|id| !e.seen_chunks.contains(*id)) {
        return Err(format!(
            "chunk {} is missing from the archive",
            chunk_hex(id)
        ));
    }
    Ok(())
}
