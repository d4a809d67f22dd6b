//! Stasis image format: the on-disk container of a checkpoint.
//!
//! An image is a directory:
//!
//! - `manifest.img` — the commit marker, written last and atomically; without
//!   it the directory is not an image;
//! - typed record files `<name>.img` (e.g. `objects.img`), each a *framed
//!   file* (56-byte header with magic, version, kind, flags, length and blake3
//!   of the payload);
//! - `chunks/` may instead (or also) be the workload's shared store beside the image
//!   (`../chunks/`, see [`store`]);
//! - `signature.img` — a keyed MAC over `manifest.img` (see [`trust`]);
//! - `chunks/<2 hex>/<64 hex>` — content-addressed page-data chunks, raw or
//!   lz4, named by the blake3 of their raw bytes.
//!
//! Write with [`ImageWriter`] (`create`, `put_chunk`/`put_file` from any
//! number of threads, `commit`); read with [`ImageReader`] (`open`,
//! `read_file`, `read_chunk[_into]`, `verify_all`). Readers verify everything
//! they read and never panic on malformed input.
//!
//! The byte-level format is specified in `docs/image-format.md`.

#![forbid(unsafe_code)]

pub mod archive;
pub mod chunk;
pub mod container;
pub mod error;
pub mod manifest;
pub mod name;
pub mod records;
pub mod safefs;
pub mod store;
pub mod trust;

pub use chunk::{
    chunk_hex, chunk_id_of, read_chunk_file, ChunkId, CHUNK_HEADER_LEN, CHUNK_MAGIC, CODEC_LZ4,
    CODEC_RAW, MAX_CHUNK,
};
pub use container::{
    is_image_entry, read_framed, CommitStats, Compression, ImageReader, ImageWriter, VerifyReport,
    WriteOptions, CHUNKS_DIR, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_MAGIC, KIND_MANIFEST,
    KIND_OBJECTS, KIND_PARTITION, MANIFEST_FILE, MAX_RECORD_FILE, OBJECTS_FILE, PARTITION_FILE,
};
pub use error::{CommitError, CreateError, FrameError, OpenError, ReadError, WriteError};
pub use manifest::{ChunkEntry, FileEntry, Label, Manifest};
pub use trust::{Keyring, SignatureStatus, Signer, Trust, TrustError, SIGNATURE_FILE};
