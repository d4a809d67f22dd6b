//! Content-addressed page-data chunks: `chunks/<2 hex>/<64 hex>`.
//!
//! ```text
//! 0  8  magic b"STASISCK"
//! 8  1  codec: 0 = raw, 1 = lz4 (lz4_flex block format, no size prefix)
//! 9  7  reserved, zero
//! 16 8  raw (uncompressed) length (u64 LE), <= MAX_CHUNK
//! 24 8  stored length (u64 LE) = bytes following the header
//! 32 …  stored bytes
//! ```

#![warn(missing_docs)]

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::ReadError;

/// Identity of a chunk: blake3 of its raw (uncompressed) bytes.
pub type ChunkId = [u8; 32];

/// Magic of a chunk file.
pub const CHUNK_MAGIC: [u8; 8] = *b"STASISCK";
/// Size of a chunk file's header.
pub const CHUNK_HEADER_LEN: usize = 32;
/// Largest raw chunk accepted (64 MiB).
pub const MAX_CHUNK: u64 = 64 << 20;
/// Codec byte: stored bytes are the raw bytes.
pub const CODEC_RAW: u8 = 0;
/// Codec byte: stored bytes are one lz4 block (lz4_flex block format).
pub const CODEC_LZ4: u8 = 1;

/// Lower-case hex of a chunk id (64 characters).
pub fn chunk_hex(id: &ChunkId) -> String {
    hex_bytes(id)
}

/// Lower-case hex of any bytes.
pub(crate) fn hex_bytes(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// The id a chunk of these raw bytes gets.
pub fn chunk_id_of(raw: &[u8]) -> ChunkId {
    *blake3::hash(raw).as_bytes()
}

/// `<dir>/chunks/<2 hex>/<64 hex>`.
pub(crate) fn chunk_path(image_dir: &Path, id: &ChunkId) -> PathBuf {
    let hex = chunk_hex(id);
    let mut p = image_dir.join(crate::container::CHUNKS_DIR);
    p.push(&hex[..2]);
    p.push(hex);
    p
}

fn encode_header(codec: u8, raw_len: u64, stored_len: u64) -> [u8; CHUNK_HEADER_LEN] {
    let mut h = [0u8; CHUNK_HEADER_LEN];
    h[0..8].copy_from_slice(&CHUNK_MAGIC);
    h[8] = codec;
    h[16..24].copy_from_slice(&raw_len.to_le_bytes());
    h[24..32].copy_from_slice(&stored_len.to_le_bytes());
    h
}

thread_local! {
    /// Per-thread scratch buffer (compression output / compressed input),
    /// reused across calls so the hot paths do not allocate.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer (or a fresh one if it is
/// somehow already borrowed).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        Err(_) => f(&mut Vec::new()),
    })
}

/// Writes a complete chunk file (header + stored bytes) into `file` (new and
/// empty) with a single write call in the common case. Returns the stored
/// length.
///
/// With `lz4`, falls back to raw storage if compression does not shrink the
/// data.
pub(crate) fn write_chunk_file(mut file: File, raw: &[u8], lz4: bool) -> io::Result<u64> {
    let raw_len = raw.len() as u64;
    if lz4 && !raw.is_empty() {
        let written = with_scratch(|buf| -> io::Result<Option<u64>> {
            let max = lz4_flex::block::get_maximum_output_size(raw.len());
            let need = CHUNK_HEADER_LEN + max;
            if buf.len() < need {
                buf.resize(need, 0);
            }
            let Ok(n) = lz4_flex::block::compress_into(raw, &mut buf[CHUNK_HEADER_LEN..need])
            else {
                return Ok(None);
            };
            if n >= raw.len() {
                return Ok(None);
            }
            buf[..CHUNK_HEADER_LEN].copy_from_slice(&encode_header(CODEC_LZ4, raw_len, n as u64));
            file.write_all(&buf[..CHUNK_HEADER_LEN + n])?;
            Ok(Some(n as u64))
        })?;
        if let Some(n) = written {
            return Ok(n);
        }
    }
    let header = encode_header(CODEC_RAW, raw_len, raw_len);
    write_two(&mut file, &header, raw)?;
    Ok(raw_len)
}

/// `write_all` of `a` then `b`, with one `writev` in the common case.
pub(crate) fn write_two(file: &mut File, a: &[u8], b: &[u8]) -> io::Result<()> {
    let n = loop {
        match file.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if n < a.len() {
        file.write_all(&a[n..])?;
        file.write_all(b)
    } else {
        file.write_all(&b[n - a.len()..])
    }
}

/// Reads and verifies the chunk file `file` (opened; `path` names it in
/// messages) into `buf` (replacing its contents): header, lengths, codec,
/// decompression, and the blake3 of the raw bytes against `id`. Returns the
/// stored length. Never panics; every length is bounded before allocating.
pub fn read_chunk_file(
    file: File,
    path: &Path,
    id: &ChunkId,
    expected_raw: u64,
    buf: &mut Vec<u8>,
) -> Result<u64, ReadError> {
    read_chunk_file_with(file, path, id, expected_raw, buf, true)
}

/// Like [`read_chunk_file`]; `hash = false` skips only the blake3 comparison (every structural
/// check still runs), for callers that verified the chunk moments ago.
pub(crate) fn read_chunk_file_with(
    mut file: File,
    path: &Path,
    id: &ChunkId,
    expected_raw: u64,
    buf: &mut Vec<u8>,
    hash: bool,
) -> Result<u64, ReadError> {
    let hex = || chunk_hex(id);
    let io_err = |source: io::Error| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let file_len = file.metadata().map_err(io_err)?.len();
    let truncated = |expected: u64, found: u64| ReadError::ChunkTruncated {
        id: hex(),
        path: path.to_owned(),
        expected,
        found,
    };
    if file_len < CHUNK_HEADER_LEN as u64 {
        return Err(truncated(CHUNK_HEADER_LEN as u64, file_len));
    }
    let mut h = [0u8; CHUNK_HEADER_LEN];
    if let Err(e) = file.read_exact(&mut h) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            truncated(CHUNK_HEADER_LEN as u64, file_len)
        } else {
            io_err(e)
        });
    }
    let corrupt = |reason: &'static str| ReadError::ChunkCorrupt {
        id: hex(),
        path: path.to_owned(),
        reason,
    };
    if h[0..8] != CHUNK_MAGIC {
        return Err(corrupt("bad magic"));
    }
    let codec = h[8];
    if codec != CODEC_RAW && codec != CODEC_LZ4 {
        return Err(ReadError::ChunkUnknownCodec {
            id: hex(),
            path: path.to_owned(),
            codec,
        });
    }
    if h[9..16].iter().any(|&b| b != 0) {
        return Err(corrupt("reserved header bytes are not zero"));
    }
    let raw_len = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
    let stored_len = u64::from_le_bytes(h[24..32].try_into().unwrap_or_default());
    if raw_len > MAX_CHUNK {
        return Err(ReadError::ChunkTooLarge {
            id: hex(),
            path: path.to_owned(),
            len: raw_len,
            max: MAX_CHUNK,
        });
    }
    if raw_len != expected_raw {
        return Err(ReadError::ChunkLengthMismatch {
            id: hex(),
            path: path.to_owned(),
            expected: expected_raw,
            found: raw_len,
        });
    }
    // raw_len <= 64 MiB, so these fit in usize and cannot overflow.
    let raw_usize = raw_len as usize;
    match codec {
        CODEC_RAW if stored_len != raw_len => {
            return Err(corrupt("stored length differs from raw length"))
        }
        CODEC_LZ4 if stored_len > lz4_flex::block::get_maximum_output_size(raw_usize) as u64 => {
            return Err(corrupt("stored length is impossible for lz4"))
        }
        _ => {}
    }
    let total = CHUNK_HEADER_LEN as u64 + stored_len;
    if file_len < total {
        return Err(truncated(total, file_len));
    }
    if file_len > total {
        return Err(ReadError::ChunkTrailingData {
            id: hex(),
            path: path.to_owned(),
            expected: total,
            found: file_len,
        });
    }
    let stored_usize = stored_len as usize;
    buf.clear();
    if codec == CODEC_RAW {
        read_exactly(&mut file, buf, stored_usize).map_err(io_err)?;
        if buf.len() != stored_usize {
            return Err(truncated(total, CHUNK_HEADER_LEN as u64 + buf.len() as u64));
        }
    } else {
        with_scratch(|scratch| -> Result<(), ReadError> {
            scratch.clear();
            read_exactly(&mut file, scratch, stored_usize).map_err(io_err)?;
            if scratch.len() != stored_usize {
                return Err(truncated(
                    total,
                    CHUNK_HEADER_LEN as u64 + scratch.len() as u64,
                ));
            }
            buf.try_reserve_exact(raw_usize)
                .map_err(|_| io_err(io::ErrorKind::OutOfMemory.into()))?;
            buf.resize(raw_usize, 0);
            let n = lz4_flex::block::decompress_into(scratch, buf).map_err(|source| {
                ReadError::ChunkDecompress {
                    id: hex(),
                    path: path.to_owned(),
                    source,
                }
            })?;
            if n != raw_usize {
                return Err(corrupt("lz4 data decodes to the wrong length"));
            }
            Ok(())
        })?;
    }
    if hash && blake3::hash(buf).as_bytes() != id {
        return Err(ReadError::ChunkChecksum {
            id: hex(),
            path: path.to_owned(),
        });
    }
    Ok(stored_len)
}

/// Appends up to `n` bytes from `file` to `buf` (fewer only at end of file),
/// reserving exactly `n` first and without zero-filling.
pub(crate) fn read_exactly(file: &mut File, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
    buf.try_reserve_exact(n)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    Read::take(&mut *file, n as u64).read_to_end(buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_path() {
        let mut id = [0u8; 32];
        id[0] = 0xab;
        id[31] = 0x0f;
        let hex = chunk_hex(&id);
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("ab00"));
        assert!(hex.ends_with("000f"));
        let p = chunk_path(Path::new("/img"), &id);
        assert_eq!(p, Path::new("/img/chunks/ab").join(&hex));
    }

    #[test]
    fn empty_chunk_is_stored_raw() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c");
        let f = File::create(&p).unwrap();
        assert_eq!(write_chunk_file(f, b"", true).unwrap(), 0);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), CHUNK_HEADER_LEN);
        assert_eq!(bytes[8], CODEC_RAW);
        let mut buf = vec![1, 2, 3];
        let f = File::open(&p).unwrap();
        read_chunk_file(f, &p, &chunk_id_of(b""), 0, &mut buf).unwrap();
        assert!(buf.is_empty());
    }
}
