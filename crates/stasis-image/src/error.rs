//! Error types: one enum per operation.
//!
//! Every variant carries the context needed to act on it (paths, chunk ids in
//! hex, expected/found values). Underlying causes are attached as
//! `#[source]` and are *not* repeated in the message, so print the whole chain
//! (e.g. `anyhow`'s `{:#}`) to see them.

#![warn(missing_docs)]

use std::io;
use std::path::PathBuf;

/// Problems with one framed file (`manifest.img` or a record file).
///
/// Shared by [`OpenError`] (for the manifest) and [`ReadError`] (for record
/// files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The first 8 bytes are not `STASISIM`.
    #[error("{path} is not a Stasis image file (bad magic {found})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The 8 bytes found, in hex.
        found: String,
    },
    /// The header's major format version is not the one this build reads.
    #[error("{path}: format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the header.
        found: u16,
        /// [`crate::FORMAT_VERSION`].
        supported: u16,
    },
    /// The header's kind is not the one expected for this file.
    #[error("{path}: wrong file kind: expected {expected}, found {found}")]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// Kind expected (from the manifest, or 1 for the manifest itself).
        expected: u16,
        /// Kind in the header.
        found: u16,
    },
    /// The header sets flag bits this build does not know.
    #[error("{path}: unknown flags {flags:#010x}")]
    UnknownFlags {
        /// The file.
        path: PathBuf,
        /// The flags word.
        flags: u32,
    },
    /// The header's payload length exceeds [`crate::MAX_RECORD_FILE`].
    #[error("{path}: payload length {len} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Payload length in the header.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The file is shorter than its header says.
    #[error("{path} is truncated: header says {expected} bytes, file has {found}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Total file size the header implies (header + payload).
        expected: u64,
        /// Actual size.
        found: u64,
    },
    /// The file is longer than its header says.
    #[error("{path} has trailing data: header says {expected} bytes, file has {found}")]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// Total file size the header implies.
        expected: u64,
        /// Actual size.
        found: u64,
    },
    /// The payload does not hash to the checksum in the header.
    #[error("{path} is corrupt: checksum mismatch")]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
    },
    /// Opening or reading the file failed.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Errors from [`crate::ImageWriter::create`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The path exists but is not a directory.
    #[error("{dir} exists and is not a directory")]
    NotADirectory {
        /// The image directory.
        dir: PathBuf,
    },
    /// The directory holds image files (an earlier image, or entries with an
    /// image file's name) and `force` was not set.
    #[error("{dir} is not empty: it holds image files ({found}); pass --force to replace them (other files are left alone)")]
    NotEmpty {
        /// The image directory.
        dir: PathBuf,
        /// The image entries found, comma-separated.
        found: String,
    },
    /// The image directory itself is a symlink.
    #[error("{dir} is a symlink: give the directory itself")]
    Symlink {
        /// The path given.
        dir: PathBuf,
    },
    /// A directory could not be created.
    #[error("cannot create directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory could not be inspected.
    #[error("cannot read directory {path}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An old entry could not be removed (with `force`).
    #[error("cannot remove {path} while clearing the image directory")]
    Remove {
        /// The entry.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// fsync of the directory failed (after removing an old manifest).
    #[error("cannot fsync {path}")]
    Sync {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The workload's chunk store beside the image cannot be used.
    #[error("cannot use the chunk store beside {dir}")]
    Store {
        /// The image directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: crate::store::StoreError,
    },
}

/// Errors from [`crate::ImageWriter::put_chunk`] and
/// [`crate::ImageWriter::put_file`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The chunk exceeds [`crate::MAX_CHUNK`].
    #[error("chunk of {len} bytes exceeds the maximum of {max} bytes")]
    ChunkTooLarge {
        /// Raw length given.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The record payload exceeds [`crate::MAX_RECORD_FILE`].
    #[error("record file {name}: payload of {len} bytes exceeds the maximum of {max} bytes")]
    FileTooLarge {
        /// File name.
        name: String,
        /// Payload length given.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The record file name is not acceptable.
    #[error("invalid record file name {name:?}: {reason}")]
    InvalidName {
        /// File name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The kind is reserved (0, or 1 = manifest).
    #[error("record file {name}: kind {kind} is reserved")]
    ReservedKind {
        /// File name.
        name: String,
        /// Kind given.
        kind: u16,
    },
    /// A record file of this name was already written to this image.
    #[error("record file {name} was already written to this image")]
    DuplicateFile {
        /// File name.
        name: String,
    },
    /// Writing a chunk file failed.
    #[error("cannot {op} chunk {id} ({path})")]
    Chunk {
        /// Chunk id in hex.
        id: String,
        /// The path involved.
        path: PathBuf,
        /// What was being done ("create", "write", "rename", ...).
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The workload's quota would be exceeded.
    #[error("the image quota of {dir} is exceeded: {used} bytes used, {more} more needed, quota {quota} bytes; the checkpoint was stopped and older images kept (raise the quota with `stasis image quota`, keep fewer images, or run `stasis image gc`)")]
    QuotaExceeded {
        /// The workload's images directory.
        dir: PathBuf,
        /// The quota.
        quota: u64,
        /// Bytes used before this write.
        used: u64,
        /// Bytes this write needed.
        more: u64,
    },
    /// Writing a record file failed.
    #[error("cannot {op} record file {name} ({path})")]
    File {
        /// File name.
        name: String,
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Errors from [`crate::ImageWriter::commit`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// fsync of a file or directory failed.
    #[error("cannot fsync {path}")]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The encoded manifest exceeds [`crate::MAX_RECORD_FILE`].
    #[error("manifest of {len} bytes exceeds the maximum of {max} bytes")]
    ManifestTooLarge {
        /// Encoded length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// Signing was asked for and is not possible.
    #[error("cannot sign the image")]
    Sign(#[source] crate::trust::TrustError),
    /// Writing or renaming the manifest failed.
    #[error("cannot {op} {path}")]
    Manifest {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Errors from [`crate::ImageReader::open`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The image directory does not exist.
    #[error("image {dir}: no such directory")]
    NotFound {
        /// The image directory.
        dir: PathBuf,
    },
    /// The path is not a directory.
    #[error("image {dir}: not a directory")]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// There is no `manifest.img`: the dump never committed.
    #[error("incomplete image {dir}: no manifest")]
    Incomplete {
        /// The image directory.
        dir: PathBuf,
    },
    /// The manifest's format version is not the one this build reads.
    #[error("image {dir}: format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// The image directory.
        dir: PathBuf,
        /// Version found.
        found: u16,
        /// [`crate::FORMAT_VERSION`].
        supported: u16,
    },
    /// The manifest's frame is invalid.
    #[error(transparent)]
    Manifest(FrameError),
    /// The manifest's payload is not a valid `Manifest` message.
    #[error("{path}: cannot decode the manifest")]
    Decode {
        /// The manifest file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: prost::DecodeError,
    },
    /// The manifest's `format_version` field disagrees with its header.
    #[error("{path}: manifest says format version {manifest} but its header says {header}")]
    VersionMismatch {
        /// The manifest file.
        path: PathBuf,
        /// Header version.
        header: u16,
        /// `Manifest.format_version`.
        manifest: u32,
    },
    /// The manifest decodes but its content is inconsistent.
    #[error("{path}: invalid manifest: {reason}")]
    InvalidManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record file listed in the manifest is absent.
    #[error("image {dir}: record file {name} is missing")]
    MissingFile {
        /// The image directory.
        dir: PathBuf,
        /// File name.
        name: String,
    },
    /// A record file listed in the manifest has the wrong size.
    #[error("{path} is truncated: manifest says {expected} bytes, file has {found}")]
    FileTruncated {
        /// The file.
        path: PathBuf,
        /// Size implied by the manifest (header + payload).
        expected: u64,
        /// Actual size.
        found: u64,
    },
    /// A record file listed in the manifest is longer than the manifest says.
    #[error("{path} has trailing data: manifest says {expected} bytes, file has {found}")]
    FileTooLong {
        /// The file.
        path: PathBuf,
        /// Size implied by the manifest (header + payload).
        expected: u64,
        /// Actual size.
        found: u64,
    },
    /// A chunk listed in the manifest is absent.
    #[error("image {dir}: chunk {id} is missing (not in its chunks/, nor in the workload's chunk store ../chunks/ if the image uses one: move images with `stasis image export` and `import`)")]
    MissingChunk {
        /// The image directory.
        dir: PathBuf,
        /// Chunk id in hex.
        id: String,
    },
    /// A chunk file is shorter than a chunk header.
    #[error("{path} is truncated: a chunk needs at least {expected} bytes, file has {found}")]
    ChunkTruncated {
        /// The chunk file.
        path: PathBuf,
        /// Chunk id in hex.
        id: String,
        /// Header size.
        expected: u64,
        /// Actual size.
        found: u64,
    },
    /// Some other I/O failure.
    #[error("cannot read {path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Errors from the `read_*` and `verify_all` methods of
/// [`crate::ImageReader`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No record file of this name is listed in the manifest.
    #[error("no record file {name:?} in this image")]
    UnknownFile {
        /// File name asked for.
        name: String,
    },
    /// The chunk id is not listed in the manifest.
    #[error("chunk {id} is not listed in this image")]
    UnknownChunk {
        /// Chunk id in hex.
        id: String,
    },
    /// The record file's frame is invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The record file's payload length differs from the manifest entry.
    #[error(
        "{path} does not match the manifest: payload of {found} bytes, manifest says {expected}"
    )]
    FileLengthMismatch {
        /// The file.
        path: PathBuf,
        /// Manifest `length`.
        expected: u64,
        /// Payload length in the file.
        found: u64,
    },
    /// The record file's checksum differs from the manifest entry.
    #[error("{path} does not match the manifest: checksum differs")]
    FileChecksumMismatch {
        /// The file.
        path: PathBuf,
    },
    /// The chunk file is absent.
    #[error("chunk {id} is missing ({path})")]
    ChunkMissing {
        /// Chunk id in hex.
        id: String,
        /// Where it should be.
        path: PathBuf,
    },
    /// The chunk's content does not hash to its id.
    #[error("chunk {id} is corrupt: checksum mismatch")]
    ChunkChecksum {
        /// Chunk id in hex.
        id: String,
        /// The chunk file.
        path: PathBuf,
    },
    /// The chunk header is invalid.
    #[error("chunk {id} is corrupt: {reason}")]
    ChunkCorrupt {
        /// Chunk id in hex.
        id: String,
        /// The chunk file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The chunk uses a codec this build does not know.
    #[error("chunk {id}: unknown codec {codec} (this build reads 0 = raw, 1 = lz4)")]
    ChunkUnknownCodec {
        /// Chunk id in hex.
        id: String,
        /// The chunk file.
        path: PathBuf,
        /// Codec byte found.
        codec: u8,
    },
    /// The chunk header's raw length exceeds [`crate::MAX_CHUNK`].
    #[error("chunk {id}: raw length {len} exceeds the maximum of {max} bytes")]
    ChunkTooLarge {
        /// Chunk id in hex.
        id: String,
        /// The chunk file.
        path: PathBuf,
        /// Raw length in the header.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The chunk header's raw length differs from the manifest entry.
    #[error("chunk {id}: header says {found} raw bytes, manifest says {expected}")]
    ChunkLengthMismatch {
        /// Chunk id in hex.
        id: String,
        /// The chunk file.
        path: PathBuf,
        /// Manifest `raw_len`.
        expected: u64,
        /// Header raw length.
        found: u64,
    },
    /// The chunk file is shorter than its header says.
    #[error("{path} is truncated: header says {expected} bytes, file has {found}")]
    ChunkTruncated {
        /// Chunk id in hex.
        id: String,
        /// The chunk file.
        path: PathBuf,
        /// Total size implied by the header.
        expected: u64,
        /// Actual size.
        found: u64,
    },
    /// The chunk file is longer than its header says.
    #[error("{path} has trailing data: header says {expected} bytes, file has {found}")]
    ChunkTrailingData {
        /// Chunk id in hex.
        id: String,
        /// The chunk file.
        path: PathBuf,
        /// Total size implied by the header.
        expected: u64,
        /// Actual size.
        found: u64,
    },
    /// The lz4 stream does not decode.
    #[error("chunk {id} is corrupt: lz4 data does not decode")]
    ChunkDecompress {
        /// Chunk id in hex.
        id: String,
        /// The chunk file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: lz4_flex::block::DecompressError,
    },
    /// Some other I/O failure.
    #[error("cannot read {path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}
