//! The manifest: the protobuf message stored in `manifest.img`.
//!
//! Tags are part of the on-disk format (see `docs/image-format.md`): never
//! reuse or retype a tag; add new fields with new tags and safe defaults.

#![warn(missing_docs)]

use std::collections::HashSet;

use crate::chunk::MAX_CHUNK;
use crate::container::{FORMAT_VERSION, KIND_MANIFEST, MANIFEST_FILE, MAX_RECORD_FILE};

/// The manifest of an image: what it contains and how to check it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Manifest {
    /// Major format version; must equal the framed header's version (1).
    #[prost(uint32, tag = "1")]
    pub format_version: u32,
    /// Version string of the tool that wrote the image (`stasis 0.1.0`).
    #[prost(string, tag = "2")]
    pub tool_version: String,
    /// Commit time, milliseconds since the Unix epoch.
    #[prost(uint64, tag = "3")]
    pub created_unix_ms: u64,
    /// Pid of the root of the dumped process tree.
    #[prost(int32, tag = "4")]
    pub root_pid: i32,
    /// Record files, sorted by name (`signature.img` is not listed: it signs the manifest).
    #[prost(message, repeated, tag = "5")]
    pub files: Vec<FileEntry>,
    /// Chunks, sorted by id (bytewise).
    #[prost(message, repeated, tag = "6")]
    pub chunks: Vec<ChunkEntry>,
    /// Free-form labels, in commit order (see [`Label`] for the keys the engine writes).
    #[prost(message, repeated, tag = "7")]
    pub labels: Vec<Label>,
    /// Where the chunks are: 0 (absent) in the image's own `chunks/`; 1 also in the chunk
    /// store of the workload, `../chunks/` beside the image directory (a reader looks in the
    /// image's own `chunks/` first, then there). See `store.rs`.
    #[prost(uint32, tag = "30")]
    pub chunk_store: u32,
}

/// One record file of the image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileEntry {
    /// File name inside the image directory, e.g. `objects.img`; follows the naming rules.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Kind, as in the file's framed header (2 objects, 3 partition, …); fits u16, not 0 or 1.
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    /// Payload length (the file is 56 bytes longer).
    #[prost(uint64, tag = "3")]
    pub length: u64,
    /// blake3 of the payload (32 bytes; equals the framed header's checksum).
    #[prost(bytes = "vec", tag = "4")]
    pub blake3: Vec<u8>,
}

/// One content-addressed chunk of the image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkEntry {
    /// blake3 of the raw (uncompressed) bytes (32 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    /// Raw (uncompressed) length, at most 64 MiB; equals the chunk header's.
    #[prost(uint64, tag = "2")]
    pub raw_len: u64,
}

/// A free-form key/value label.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Key. A checkpoint writes `kernel` (the kernel release, `uname -r`), `vdso-blake3` (hex
    /// blake3 of the vDSO text) and `comm` (the root process's command name); readers rely on
    /// none of them (the same facts are in `objects.img`).
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

impl Manifest {
    /// The value of the first label with this key.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.key == key)
            .map(|l| l.value.as_str())
    }

    /// The entry of the record file of this name.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Checks internal consistency (not the files on disk).
    pub fn check(&self) -> Result<(), String> {
        if self.format_version != u32::from(FORMAT_VERSION) {
            // Callers check this first with a better error; keep as a guard.
            return Err(format!("format version {}", self.format_version));
        }
        let mut names = HashSet::with_capacity(self.files.len());
        for f in &self.files {
            validate_file_name(&f.name)
                .map_err(|reason| format!("file name {:?}: {reason}", f.name))?;
            if !names.insert(f.name.as_str()) {
                return Err(format!("file {} is listed twice", f.name));
            }
            match u16::try_from(f.kind) {
                Ok(k) if k != 0 && k != KIND_MANIFEST => {}
                _ => return Err(format!("file {}: invalid kind {}", f.name, f.kind)),
            }
            if f.length > MAX_RECORD_FILE {
                return Err(format!("file {}: length {} is too large", f.name, f.length));
            }
            if f.blake3.len() != 32 {
                return Err(format!(
                    "file {}: checksum is {} bytes, not 32",
                    f.name,
                    f.blake3.len()
                ));
            }
        }
        let mut ids = HashSet::with_capacity(self.chunks.len());
        for c in &self.chunks {
            let Ok(id) = <[u8; 32]>::try_from(c.id.as_slice()) else {
                return Err(format!("chunk id is {} bytes, not 32", c.id.len()));
            };
            if !ids.insert(id) {
                return Err(format!("chunk {} is listed twice", crate::chunk_hex(&id)));
            }
            if c.raw_len > MAX_CHUNK {
                return Err(format!(
                    "chunk {}: raw length {} is too large",
                    crate::chunk_hex(&id),
                    c.raw_len
                ));
            }
        }
        Ok(())
    }
}

/// Rules for record file names: a plain file name of `[A-Za-z0-9._-]`,
/// at most 128 bytes, not starting with `.`, ending in `.img`, and not
/// `manifest.img`.
pub(crate) fn validate_file_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 128 {
        return Err("longer than 128 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    if name.starts_with('.') {
        return Err("must not start with '.'");
    }
    if !name.ends_with(".img") || name.len() == ".img".len() {
        return Err("must be <name>.img");
    }
    if name == MANIFEST_FILE {
        return Err("manifest.img is reserved");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        for ok in ["objects.img", "a.img", "mm-12_x.v2.img"] {
            assert_eq!(validate_file_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".img",
            "x",
            "x.IMG",
            "../x.img",
            "a/b.img",
            ".x.img",
            "manifest.img",
            "é.img",
        ] {
            assert!(validate_file_name(bad).is_err(), "{bad}");
        }
        assert!(validate_file_name(&format!("{}.img", "a".repeat(125))).is_err());
        assert!(validate_file_name(&format!("{}.img", "a".repeat(124))).is_ok());
    }
}
