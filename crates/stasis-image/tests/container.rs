//! Integration tests of the image container: round trips, dedupe, the
//! create/force rules, and corruption/truncation of every file.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use prost::Message;
use stasis_image::{
    chunk_hex, chunk_id_of, ChunkId, CommitError, Compression, CreateError, FrameError,
    ImageReader, ImageWriter, Manifest, OpenError, ReadError, WriteError, WriteOptions,
    FORMAT_VERSION, KIND_OBJECTS, MANIFEST_FILE, OBJECTS_FILE,
};

const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ImageWriter>();
    assert_send_sync::<ImageReader>();
    assert_send_sync::<CreateError>();
    assert_send_sync::<WriteError>();
    assert_send_sync::<CommitError>();
    assert_send_sync::<OpenError>();
    assert_send_sync::<ReadError>();
};

fn opts(compression: Compression) -> WriteOptions {
    WriteOptions {
        force: false,
        compression,
    }
}

/// Deterministic incompressible bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Compressible bytes (a repeated pattern).
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 17) as u8 ^ seed).collect()
}

struct Sample {
    chunks: Vec<(ChunkId, Vec<u8>)>,
    objects: Vec<u8>,
    extra: Vec<u8>,
}

/// Writes a small image with raw-stored, lz4-stored and empty chunks and two
/// record files.
fn write_sample(dir: &Path, compression: Compression) -> Sample {
    let w = ImageWriter::create(dir, opts(compression)).unwrap();
    let mut chunks = Vec::new();
    for raw in [
        pattern(1, 4096),
        pattern(2, 8192),
        noise(3, 4096),
        noise(4, 1000),
        Vec::new(),
    ] {
        let id = w.put_chunk(&raw).unwrap();
        assert_eq!(id, chunk_id_of(&raw));
        chunks.push((id, raw));
    }
    let objects = b"objects payload: protobuf bytes would go here".repeat(7);
    let extra = noise(9, 300);
    w.put_file(OBJECTS_FILE, KIND_OBJECTS, &objects).unwrap();
    w.put_file("extra.img", 7, &extra).unwrap();
    w.commit(
        1234,
        vec![
            ("kernel".into(), "6.8.0-test".into()),
            ("vdso".into(), "abc".into()),
        ],
    )
    .unwrap();
    Sample {
        chunks,
        objects,
        extra,
    }
}

/// Opens and fully verifies; any failure as a string.
fn check(dir: &Path) -> Result<(), String> {
    let r = ImageReader::open(dir).map_err(|e| e.to_string())?;
    r.verify_all().map_err(|e| e.to_string())?;
    Ok(())
}

/// Every regular file of the image, sorted.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, &mut v);
    v.sort();
    v
}

fn chunk_file(dir: &Path, id: &ChunkId) -> PathBuf {
    let hex = chunk_hex(id);
    dir.join("chunks").join(&hex[..2]).join(hex)
}

/// A fresh committed lz4 sample image of its own (written per test: it is small, and a
/// template kept in a static would never be dropped, leaking its directory every run).
fn fresh_copy() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    write_sample(&dir, Compression::Lz4);
    (t, dir)
}

/// The files a corruption test targets: manifest, a record file, a raw-stored
/// chunk, an lz4-stored chunk, the empty chunk.
fn targets(dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![dir.join(MANIFEST_FILE), dir.join(OBJECTS_FILE)];
    for raw in [pattern(1, 4096), noise(3, 4096), Vec::new()] {
        v.push(chunk_file(dir, &chunk_id_of(&raw)));
    }
    v
}

#[test]
fn round_trip_raw_and_lz4() {
    for compression in [Compression::None, Compression::Lz4] {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        let s = write_sample(&dir, compression);
        let r = ImageReader::open(&dir).unwrap();
        let m = r.manifest();
        assert_eq!(m.format_version, u32::from(FORMAT_VERSION));
        assert_eq!(m.root_pid, 1234);
        assert_eq!(m.label("kernel"), Some("6.8.0-test"));
        assert_eq!(m.label("vdso"), Some("abc"));
        assert!(m.tool_version.starts_with("stasis "));
        assert!(m.created_unix_ms > 0);
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.chunks.len(), s.chunks.len());
        assert_eq!(r.read_file(OBJECTS_FILE).unwrap(), s.objects);
        assert_eq!(r.read_file("extra.img").unwrap(), s.extra);
        let mut buf = Vec::with_capacity(1);
        for (id, raw) in &s.chunks {
            assert_eq!(&r.read_chunk(id).unwrap(), raw);
            r.read_chunk_into(id, &mut buf).unwrap();
            assert_eq!(&buf, raw);
            assert_eq!(r.chunk_raw_len(id), Some(raw.len() as u64));
        }
        let rep = r.verify_all().unwrap();
        assert_eq!(rep.files, 2);
        assert_eq!(rep.chunks, 5);
        assert_eq!(
            rep.chunk_bytes_raw,
            s.chunks.iter().map(|c| c.1.len() as u64).sum::<u64>()
        );
        if compression == Compression::Lz4 {
            assert!(rep.chunk_bytes_stored < rep.chunk_bytes_raw);
        } else {
            assert_eq!(rep.chunk_bytes_stored, rep.chunk_bytes_raw);
        }
        // No temporary files left behind.
        for p in all_files(&dir) {
            assert!(!p.to_string_lossy().ends_with(".tmp"), "{}", p.display());
        }
    }
}

#[test]
fn chunk_header_layout_and_lz4_fallback() {
    let (_t, dir) = fresh_copy();
    let compressible = pattern(1, 4096);
    let incompressible = noise(3, 4096);
    let c = fs::read(chunk_file(&dir, &chunk_id_of(&compressible))).unwrap();
    assert_eq!(&c[0..8], b"STASISCK");
    assert_eq!(c[8], 1, "compressible chunk is lz4");
    assert_eq!(&c[9..16], &[0u8; 7]);
    assert_eq!(u64::from_le_bytes(c[16..24].try_into().unwrap()), 4096);
    let stored = u64::from_le_bytes(c[24..32].try_into().unwrap());
    assert_eq!(c.len() as u64, 32 + stored);
    assert_eq!(
        lz4_flex::block::decompress(&c[32..], 4096).unwrap(),
        compressible
    );
    let n = fs::read(chunk_file(&dir, &chunk_id_of(&incompressible))).unwrap();
    assert_eq!(n[8], 0, "incompressible chunk falls back to raw");
    assert_eq!(&n[32..], incompressible.as_slice());
}

#[test]
fn framed_header_layout() {
    let (_t, dir) = fresh_copy();
    let f = fs::read(dir.join(OBJECTS_FILE)).unwrap();
    assert_eq!(&f[0..8], b"STASISIM");
    assert_eq!(u16::from_le_bytes([f[8], f[9]]), 1);
    assert_eq!(u16::from_le_bytes([f[10], f[11]]), 2);
    assert_eq!(&f[12..16], &[0; 4]);
    let len = u64::from_le_bytes(f[16..24].try_into().unwrap());
    assert_eq!(f.len() as u64, 56 + len);
    assert_eq!(&f[24..56], blake3::hash(&f[56..]).as_bytes());
    let m = fs::read(dir.join(MANIFEST_FILE)).unwrap();
    assert_eq!(u16::from_le_bytes([m[10], m[11]]), 1);
    let manifest = Manifest::decode(&m[56..]).unwrap();
    assert_eq!(manifest.root_pid, 1234);
}

#[test]
fn dedupe() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    let w = ImageWriter::create(&dir, WriteOptions::default()).unwrap();
    let raw = pattern(5, 10_000);
    let a = w.put_chunk(&raw).unwrap();
    let path = chunk_file(&dir, &a);
    let before = fs::metadata(&path).unwrap().modified().unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
    let b = w.put_chunk(&raw).unwrap();
    assert_eq!(a, b);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&meta),
        ino,
        "not rewritten"
    );
    assert_eq!(meta.modified().unwrap(), before);
    let stats = w.commit(1, vec![]).unwrap();
    assert_eq!(stats.chunks, 1);
    assert_eq!(stats.chunk_bytes_raw, 10_000);
    assert_eq!(ImageReader::open(&dir).unwrap().manifest().chunks.len(), 1);
}

#[test]
fn concurrent_put_chunk_dedupes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    let w = ImageWriter::create(&dir, WriteOptions::default()).unwrap();
    // 8 threads each write the same 50 chunks plus 50 of their own.
    std::thread::scope(|s| {
        for th in 0..8u64 {
            let w = &w;
            s.spawn(move || {
                for i in 0..50u64 {
                    w.put_chunk(&noise(1000 + i, 2048)).unwrap();
                    w.put_chunk(&noise(th * 100 + i + 1, 2048)).unwrap();
                }
            });
        }
    });
    let stats = w.commit(1, vec![]).unwrap();
    assert_eq!(stats.chunks, 50 + 8 * 50);
    let r = ImageReader::open(&dir).unwrap();
    assert_eq!(r.verify_all().unwrap().chunks, 450);
}

#[test]
fn create_refuses_image_files_without_force_and_ignores_other_files() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("junk.img"), b"x").unwrap();
    fs::write(dir.join("descriptors.json"), b"{}").unwrap();
    let e = ImageWriter::create(&dir, WriteOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, CreateError::NotEmpty { .. }), "{e:?}");
    assert!(e.to_string().contains("junk.img"), "{e}");
    assert!(e.to_string().contains("pass --force"), "{e}");
    assert!(dir.join("junk.img").exists(), "nothing removed");

    // Only other tools' files: accepted, and left as they are.
    fs::remove_file(dir.join("junk.img")).unwrap();
    fs::write(dir.join("dump.log"), b"log").unwrap();
    let w = ImageWriter::create(&dir, WriteOptions::default()).unwrap();
    w.commit(1, vec![]).unwrap();
    assert_eq!(fs::read(dir.join("descriptors.json")).unwrap(), b"{}");
    assert_eq!(fs::read(dir.join("dump.log")).unwrap(), b"log");
    ImageReader::open(&dir).unwrap();

    // An existing empty directory is fine without force.
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    ImageWriter::create(&empty, WriteOptions::default()).unwrap();

    // A file is not a directory.
    let file = t.path().join("file");
    fs::write(&file, b"").unwrap();
    assert!(matches!(
        ImageWriter::create(&file, WriteOptions::default()),
        Err(CreateError::NotADirectory { .. })
    ));
    // A symlink as the directory itself is refused.
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    assert!(matches!(
        ImageWriter::create(&link, WriteOptions::default()),
        Err(CreateError::Symlink { .. })
    ));
}

#[test]
fn create_with_force_replaces_only_image_files() {
    let (_t, dir) = fresh_copy();
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    fs::write(dir.join("sub/deeper/x"), b"x").unwrap();
    fs::write(dir.join("stale.img.tmp"), b"x").unwrap();
    let w = ImageWriter::create(
        &dir,
        WriteOptions {
            force: true,
            compression: Compression::None,
        },
    )
    .unwrap();
    assert!(!dir.join(MANIFEST_FILE).exists());
    assert!(!dir.join(OBJECTS_FILE).exists());
    assert!(!dir.join("stale.img.tmp").exists());
    assert_eq!(
        fs::read(dir.join("sub/deeper/x")).unwrap(),
        b"x",
        "other files stay"
    );
    let id = w.put_chunk(b"new").unwrap();
    w.commit(7, vec![]).unwrap();
    let r = ImageReader::open(&dir).unwrap();
    assert_eq!(r.manifest().root_pid, 7);
    assert!(r.manifest().files.is_empty());
    assert_eq!(r.read_chunk(&id).unwrap(), b"new");
}

/// A link planted under a name the writer uses: refused without --force (target untouched);
/// with --force the link is removed as a link, never followed.
#[test]
fn planted_links_are_never_followed() {
    use std::os::unix::fs::symlink;
    let t = tempfile::tempdir().unwrap();
    let victim = t.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"keep").unwrap();
    let dir = t.path().join("img");
    fs::create_dir(&dir).unwrap();
    symlink(&victim, dir.join(OBJECTS_FILE)).unwrap();
    symlink(&outside, dir.join("chunks")).unwrap();
    symlink(&victim, dir.join("manifest.img.tmp")).unwrap();
    assert!(matches!(
        ImageWriter::create(&dir, WriteOptions::default()),
        Err(CreateError::NotEmpty { .. })
    ));
    let w = ImageWriter::create(
        &dir,
        WriteOptions {
            force: true,
            compression: Compression::None,
        },
    )
    .unwrap();
    w.put_chunk(b"abc").unwrap();
    w.put_file(OBJECTS_FILE, KIND_OBJECTS, b"objects").unwrap();
    w.commit(1, vec![]).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    assert!(!fs::symlink_metadata(dir.join(OBJECTS_FILE))
        .unwrap()
        .file_type()
        .is_symlink());
    ImageReader::open(&dir).unwrap().verify_all().unwrap();

    // A link planted while the image is being written makes the write fail.
    let dir2 = t.path().join("img2");
    let w = ImageWriter::create(&dir2, WriteOptions::default()).unwrap();
    symlink(&victim, dir2.join("extra.img.tmp")).unwrap();
    assert!(w.put_file("extra.img", KIND_OBJECTS, b"x").is_err());
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(
        fs::symlink_metadata(dir2.join("extra.img.tmp")).is_ok(),
        "the link is left"
    );

    // A reader refuses symlinked record files and chunks.
    let (_t2, img) = fresh_copy();
    let obj = img.join(OBJECTS_FILE);
    let saved = t.path().join("saved-objects");
    fs::rename(&obj, &saved).unwrap();
    symlink(&saved, &obj).unwrap();
    let e = ImageReader::open(&img).err().unwrap();
    assert!(format!("{e:?}").contains("not a regular file"), "{e:?}");
}

#[test]
fn modes_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    write_sample(&dir, Compression::Lz4);
    for p in all_files(&dir) {
        let m = fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600, "{}", p.display());
    }
    let mut dirs = vec![dir.clone(), dir.join("chunks")];
    for e in fs::read_dir(dir.join("chunks")).unwrap() {
        dirs.push(e.unwrap().path());
    }
    for d in dirs {
        let m = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o700, "{}", d.display());
    }
}

#[test]
fn missing_manifest_is_incomplete() {
    let (_t, dir) = fresh_copy();
    fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
    let e = ImageReader::open(&dir).err().unwrap();
    assert!(matches!(e, OpenError::Incomplete { .. }), "{e:?}");
    assert!(e.to_string().contains("incomplete"), "{e}");

    // A writer dropped without commit leaves an incomplete directory.
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("img");
    let w = ImageWriter::create(&d, WriteOptions::default()).unwrap();
    w.put_chunk(b"abc").unwrap();
    drop(w);
    assert!(matches!(
        ImageReader::open(&d),
        Err(OpenError::Incomplete { .. })
    ));
    assert!(matches!(
        ImageReader::open(&t.path().join("nope")),
        Err(OpenError::NotFound { .. })
    ));
}

/// Flips `mask` into byte `pos` of `file`, checks the image is refused, and
/// restores the byte.
///
/// The one accepted exception: LZ4 encodings are not unique (e.g. the
/// match-length nibble of the final token is ignored by decoders), so a change
/// inside an lz4 chunk's stored bytes may decode to the very same content.
/// The reader then still proves the content intact (blake3 of the decoded
/// bytes equals the chunk id), which this helper re-checks explicitly.
fn assert_flip_detected(dir: &Path, file: &Path, pos: usize, mask: u8) {
    let orig = fs::read(file).unwrap();
    let mut bad = orig.clone();
    bad[pos] ^= mask;
    fs::write(file, &bad).unwrap();
    let r = check(dir);
    let harmless = r.is_ok() && {
        let is_lz4_chunk = file.parent().unwrap().parent().unwrap().ends_with("chunks")
            && orig[8] == 1
            && pos >= 32;
        let name = file.file_name().unwrap().to_str().unwrap();
        let id: ChunkId =
            std::array::from_fn(|i| u8::from_str_radix(&name[2 * i..2 * i + 2], 16).unwrap());
        let before = lz4_flex::block::decompress(&orig[32..], 64 << 20).unwrap();
        let after = ImageReader::open(dir).unwrap().read_chunk(&id).unwrap();
        is_lz4_chunk && before == after && chunk_id_of(&after) == id
    };
    fs::write(file, &orig).unwrap();
    assert!(
        r.is_err() || harmless,
        "flip {mask:#04x} at {pos} of {} went undetected",
        file.display()
    );
}

#[test]
fn every_single_byte_flip_is_detected() {
    let (_t, dir) = fresh_copy();
    for file in targets(&dir) {
        let len = fs::metadata(&file).unwrap().len() as usize;
        // Exhaustive over positions for the small files; the 4 KiB raw
        // chunk is covered at every header byte and a stride of the data
        // (the proptest below samples the rest).
        let positions: Vec<usize> = if len <= 2048 {
            (0..len).collect()
        } else {
            (0..64).chain((64..len).step_by(61)).collect()
        };
        for pos in positions {
            for mask in [0x01, 0x80, 0xff] {
                assert_flip_detected(&dir, &file, pos, mask);
            }
        }
    }
    check(&dir).unwrap();
}

#[test]
fn every_truncation_is_detected() {
    let (_t, dir) = fresh_copy();
    for file in targets(&dir) {
        let orig = fs::read(&file).unwrap();
        for n in 0..orig.len() {
            fs::write(&file, &orig[..n]).unwrap();
            assert!(
                check(&dir).is_err(),
                "truncation of {} to {n} went undetected",
                file.display()
            );
        }
        // Trailing data is refused too.
        let mut longer = orig.clone();
        longer.push(0);
        fs::write(&file, &longer).unwrap();
        assert!(check(&dir).is_err(), "appended byte to {}", file.display());
        fs::write(&file, &orig).unwrap();
    }
    check(&dir).unwrap();
}

#[test]
fn truncation_messages() {
    let (_t, dir) = fresh_copy();
    let m = dir.join(MANIFEST_FILE);
    let orig = fs::read(&m).unwrap();
    fs::write(&m, &orig[..orig.len() - 1]).unwrap();
    let e = ImageReader::open(&dir).err().unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("is truncated: header says")
            && msg.contains(&format!("file has {}", orig.len() - 1)),
        "{msg}"
    );
    fs::write(&m, &orig).unwrap();

    let id = chunk_id_of(&pattern(1, 4096));
    let c = chunk_file(&dir, &id);
    let orig = fs::read(&c).unwrap();
    fs::write(&c, &orig[..40]).unwrap();
    let r = ImageReader::open(&dir).unwrap();
    let e = r.read_chunk(&id).unwrap_err();
    assert!(matches!(e, ReadError::ChunkTruncated { .. }), "{e:?}");
    assert!(e.to_string().contains("file has 40"), "{e}");
}

#[test]
fn version_2_is_not_supported() {
    let (_t, dir) = fresh_copy();
    let m = dir.join(MANIFEST_FILE);
    let mut bytes = fs::read(&m).unwrap();
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    fs::write(&m, &bytes).unwrap();
    let e = ImageReader::open(&dir).err().unwrap();
    assert!(
        matches!(
            e,
            OpenError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("format version 2 is not supported (this build reads 1)"),
        "{msg}"
    );

    let (_t2, dir) = fresh_copy();
    let f = dir.join(OBJECTS_FILE);
    let mut bytes = fs::read(&f).unwrap();
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    fs::write(&f, &bytes).unwrap();
    let r = ImageReader::open(&dir).unwrap();
    let e = r.read_file(OBJECTS_FILE).unwrap_err();
    assert!(
        matches!(
            e,
            ReadError::Frame(FrameError::UnsupportedVersion { found: 2, .. })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("not supported"), "{e}");
}

#[test]
fn unknown_flags_rejected() {
    for (name, bit) in [(MANIFEST_FILE, 0u32), (OBJECTS_FILE, 31)] {
        let (_t, dir) = fresh_copy();
        let f = dir.join(name);
        let mut bytes = fs::read(&f).unwrap();
        bytes[12..16].copy_from_slice(&(1u32 << bit).to_le_bytes());
        fs::write(&f, &bytes).unwrap();
        let err = check(&dir).unwrap_err();
        assert!(err.contains("unknown flags"), "{err}");
    }
}

#[test]
fn chunk_with_wrong_content_refused() {
    let (_t, dir) = fresh_copy();
    // Two listed chunks of the same raw length; put one's file at the other's
    // name.
    let a = chunk_id_of(&noise(3, 4096));
    let b = chunk_id_of(&pattern(1, 4096));
    fs::copy(chunk_file(&dir, &a), chunk_file(&dir, &b)).unwrap();
    let r = ImageReader::open(&dir).unwrap();
    let e = r.read_chunk(&b).unwrap_err();
    assert!(matches!(e, ReadError::ChunkChecksum { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("chunk {} is corrupt: checksum mismatch", chunk_hex(&b))
    );
    assert!(r.verify_all().is_err());
    // Unlisted ids are refused without touching the disk.
    let e = r.read_chunk(&[7u8; 32]).unwrap_err();
    assert!(matches!(e, ReadError::UnknownChunk { .. }), "{e:?}");
}

#[test]
fn missing_pieces_detected_at_open() {
    let (_t, dir) = fresh_copy();
    fs::remove_file(dir.join(OBJECTS_FILE)).unwrap();
    assert!(matches!(
        ImageReader::open(&dir),
        Err(OpenError::MissingFile { .. })
    ));
    let (_t, dir) = fresh_copy();
    fs::remove_file(chunk_file(&dir, &chunk_id_of(&noise(4, 1000)))).unwrap();
    assert!(matches!(
        ImageReader::open(&dir),
        Err(OpenError::MissingChunk { .. })
    ));
}

#[test]
fn reading_never_modifies_the_image() {
    let (_t, dir) = fresh_copy();
    let snapshot = |d: &Path| {
        all_files(d)
            .into_iter()
            .map(|p| {
                let m = fs::metadata(&p).unwrap();
                (p.clone(), m.modified().unwrap(), fs::read(&p).unwrap())
            })
            .collect::<Vec<_>>()
    };
    let before = snapshot(&dir);
    let r = ImageReader::open(&dir).unwrap();
    r.verify_all().unwrap();
    r.read_file(OBJECTS_FILE).unwrap();
    assert!(r.read_file("nope.img").is_err());
    assert_eq!(before, snapshot(&dir));
}

#[test]
fn put_file_rules() {
    let t = tempfile::tempdir().unwrap();
    let w = ImageWriter::create(&t.path().join("img"), WriteOptions::default()).unwrap();
    for bad in [
        "",
        ".img",
        "objects",
        "../x.img",
        "a/b.img",
        ".hidden.img",
        "manifest.img",
        "sp ace.img",
    ] {
        assert!(
            matches!(
                w.put_file(bad, KIND_OBJECTS, b""),
                Err(WriteError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        w.put_file("x.img", 1, b""),
        Err(WriteError::ReservedKind { .. })
    ));
    assert!(matches!(
        w.put_file("x.img", 0, b""),
        Err(WriteError::ReservedKind { .. })
    ));
    w.put_file(OBJECTS_FILE, KIND_OBJECTS, b"").unwrap();
    assert!(matches!(
        w.put_file(OBJECTS_FILE, KIND_OBJECTS, b"again"),
        Err(WriteError::DuplicateFile { .. })
    ));
    let stats = w.commit(1, vec![]).unwrap();
    assert_eq!(stats.files, 1);
    let r = ImageReader::open(&t.path().join("img")).unwrap();
    assert_eq!(r.read_file(OBJECTS_FILE).unwrap(), b"");
    assert!(matches!(
        r.read_file("other.img"),
        Err(ReadError::UnknownFile { .. })
    ));
}

#[test]
fn oversized_chunk_refused() {
    let t = tempfile::tempdir().unwrap();
    let w = ImageWriter::create(&t.path().join("img"), WriteOptions::default()).unwrap();
    let big = vec![0u8; (stasis_image::MAX_CHUNK + 1) as usize];
    assert!(matches!(
        w.put_chunk(&big),
        Err(WriteError::ChunkTooLarge { .. })
    ));
}

/// Builds a framed manifest by hand, following docs/image-format.md.
fn frame(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"STASISIM");
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&kind.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    v.extend_from_slice(blake3::hash(payload).as_bytes());
    v.extend_from_slice(payload);
    v
}

#[test]
fn hostile_manifests_rejected() {
    let (_t, dir) = fresh_copy();
    let good = Manifest::decode(&fs::read(dir.join(MANIFEST_FILE)).unwrap()[56..]).unwrap();
    type Mutation = fn(&mut Manifest);
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "path traversal",
            (|m| m.files[0].name = "../../etc/passwd.img".into()),
        ),
        (
            "manifest listed",
            (|m| m.files[0].name = "manifest.img".into()),
        ),
        ("short id", (|m| m.chunks[0].id.truncate(31))),
        ("huge chunk", (|m| m.chunks[0].raw_len = u64::MAX)),
        (
            "duplicate chunk",
            (|m| {
                let c = m.chunks[0].clone();
                m.chunks.push(c)
            }),
        ),
        ("kind 1", (|m| m.files[0].kind = 1)),
        ("kind 70000", (|m| m.files[0].kind = 70_000)),
        ("short hash", (|m| m.files[0].blake3.clear())),
        ("version", (|m| m.format_version = 2)),
        ("wrong length", (|m| m.files[0].length += 1)),
    ];
    for (what, mutate) in cases {
        let mut m = good.clone();
        mutate(&mut m);
        fs::write(dir.join(MANIFEST_FILE), frame(1, &m.encode_to_vec())).unwrap();
        assert!(ImageReader::open(&dir).is_err(), "{what}");
    }
    // Sanity: the unmodified manifest re-framed by hand is accepted.
    fs::write(dir.join(MANIFEST_FILE), frame(1, &good.encode_to_vec())).unwrap();
    check(&dir).unwrap();
    // A record file framed as the manifest kind is refused.
    fs::write(dir.join(MANIFEST_FILE), frame(2, &good.encode_to_vec())).unwrap();
    assert!(ImageReader::open(&dir).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any single-byte change anywhere in any target file is refused.
    #[test]
    fn prop_any_flip_detected(which in 0usize..5, pos_frac in 0.0f64..1.0, mask in 1u8..=255) {
        let (_t, dir) = fresh_copy();
        let file = targets(&dir).swap_remove(which);
        let len = fs::metadata(&file).unwrap().len() as usize;
        let pos = ((len as f64) * pos_frac) as usize % len;
        assert_flip_detected(&dir, &file, pos, mask);
    }

    /// Truncating any target at any length is refused.
    #[test]
    fn prop_any_truncation_detected(which in 0usize..5, len_frac in 0.0f64..1.0) {
        let (_t, dir) = fresh_copy();
        let file = targets(&dir).swap_remove(which);
        let orig = fs::read(&file).unwrap();
        let n = ((orig.len() as f64) * len_frac) as usize % orig.len();
        fs::write(&file, &orig[..n]).unwrap();
        prop_assert!(check(&dir).is_err());
    }

    /// Arbitrary bytes in place of the manifest, a record file or a chunk
    /// never panic and never verify.
    #[test]
    fn prop_garbage_never_panics(which in 0usize..5, bytes in proptest::collection::vec(any::<u8>(), 0..300), keep_header in any::<bool>()) {
        let (_t, dir) = fresh_copy();
        let file = targets(&dir).swap_remove(which);
        let orig = fs::read(&file).unwrap();
        let mut content = bytes;
        if keep_header {
            // Keep a valid-looking header prefix so deeper checks run.
            let n = content.len().min(orig.len()).min(32);
            content[..n].copy_from_slice(&orig[..n]);
        }
        prop_assume!(content != orig);
        fs::write(&file, &content).unwrap();
        prop_assert!(check(&dir).is_err());
    }
}

#[test]
fn lz4_alternative_encoding_of_the_same_content_is_accepted() {
    // The final lz4 token carries an unused match-length nibble; setting it
    // changes the stored bytes but not the decoded content, which the chunk
    // id still proves intact. This pins the documented semantics: integrity
    // is defined over the raw content.
    let (_t, dir) = fresh_copy();
    let raw = pattern(1, 4096);
    let id = chunk_id_of(&raw);
    let path = chunk_file(&dir, &id);
    let orig = fs::read(&path).unwrap();
    assert_eq!(orig[8], 1);
    let stored = &orig[32..];
    let c = lz4_flex::block::compress(&raw);
    assert_eq!(stored, c.as_slice());
    let tok_pos = 32 + last_lz4_token(stored);
    let mut alt = orig.clone();
    alt[tok_pos] |= 0x01;
    fs::write(&path, &alt).unwrap();
    let r = ImageReader::open(&dir).unwrap();
    assert_eq!(r.read_chunk(&id).unwrap(), raw);
}

/// Offset of the final token of an lz4 block (walks the sequences).
fn last_lz4_token(b: &[u8]) -> usize {
    let ext = |pos: &mut usize, mut n: usize| loop {
        let x = b[*pos];
        *pos += 1;
        n += usize::from(x);
        if x != 255 {
            return n;
        }
    };
    let mut pos = 0;
    loop {
        let tok_pos = pos;
        let tok = b[pos];
        pos += 1;
        let mut lits = usize::from(tok >> 4);
        if lits == 15 {
            lits = ext(&mut pos, lits);
        }
        pos += lits;
        if pos >= b.len() {
            return tok_pos;
        }
        pos += 2; // offset
        if tok & 0xf == 15 {
            ext(&mut pos, 0);
        }
    }
}

/// A signed commit verifies with the host key and with a trusted copy of it; an unknown key,
/// a changed manifest, a missing signature, a foreign owner and a group-writable file are each
/// refused with their own reason; `trust::sign` re-signs.
#[test]
fn signatures_and_the_ownership_rule() {
    use stasis_image::trust::{self, Key, Keyring, Trust, TrustError};
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    let key = Key::from_bytes([3; 32], "host.key");
    let ring = Keyring::new(Some(key.clone()), vec![]);
    let w = ImageWriter::create(&dir, WriteOptions::default()).unwrap();
    w.put_chunk(b"page").unwrap();
    w.put_file(OBJECTS_FILE, KIND_OBJECTS, b"objects").unwrap();
    w.commit_signed(1, vec![], Some(&ring)).unwrap();
    let r = ImageReader::open(&dir).unwrap();
    assert_eq!(
        trust::check(&r, &Trust::Verify(ring.clone())).unwrap(),
        stasis_image::Signer::Host(key.id())
    );
    let trusting = Keyring::new(None, vec![Key::from_bytes([3; 32], "trusted/a.key")]);
    assert!(matches!(
        trust::check(&r, &Trust::Verify(trusting)).unwrap(),
        stasis_image::Signer::Trusted(..)
    ));
    let other = Keyring::new(Some(Key::from_bytes([4; 32], "host.key")), vec![]);
    let e = trust::check(&r, &Trust::Verify(other.clone())).unwrap_err();
    assert!(matches!(e, TrustError::UnknownKey { .. }), "{e}");
    assert!(e.to_string().contains("unknown key"), "{e}");
    drop(r);

    // A manifest rewritten (and re-framed correctly) is a mismatch.
    let raw = fs::read(dir.join(MANIFEST_FILE)).unwrap();
    let mut m = Manifest::decode(&raw[56..]).unwrap();
    m.root_pid = 2;
    let forged = frame(1, &m.encode_to_vec());
    fs::write(dir.join(MANIFEST_FILE), &forged).unwrap();
    let r = ImageReader::open(&dir).unwrap();
    let e = trust::check(&r, &Trust::Verify(ring.clone())).unwrap_err();
    assert!(matches!(e, TrustError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("altered"), "{e}");
    // Unchecked still passes the ownership rule.
    trust::check(&r, &Trust::InsecureUnsigned).unwrap();
    // Re-signing makes it acceptable again.
    trust::sign(&r, &ring).unwrap();
    let r = ImageReader::open(&dir).unwrap();
    trust::check(&r, &Trust::Verify(ring.clone())).unwrap();

    // No signature.
    fs::remove_file(dir.join(stasis_image::SIGNATURE_FILE)).unwrap();
    let e = trust::check(&r, &Trust::Verify(ring.clone())).unwrap_err();
    assert!(matches!(e, TrustError::NoSignature { .. }), "{e}");
    assert_eq!(
        trust::status(&r, &ring),
        stasis_image::SignatureStatus::Unsigned
    );
    trust::sign(&r, &ring).unwrap();

    // Group-writable chunk, then a record file owned by another uid.
    let chunk = all_files(&dir.join("chunks")).pop().unwrap();
    fs::set_permissions(&chunk, fs::Permissions::from_mode(0o620)).unwrap();
    let e = trust::check(&r, &Trust::InsecureUnsigned).unwrap_err();
    assert!(matches!(e, TrustError::Writable { .. }), "{e}");
    assert!(e.to_string().contains(&chunk.display().to_string()), "{e}");
    fs::set_permissions(&chunk, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(dir.join(OBJECTS_FILE), Some(65534), None).unwrap();
    let e = trust::check(&r, &Trust::Verify(ring.clone())).unwrap_err();
    assert!(matches!(e, TrustError::Owner { uid: 65534, .. }), "{e}");
    std::os::unix::fs::chown(dir.join(OBJECTS_FILE), Some(0), None).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let e = trust::check(&r, &Trust::Verify(ring.clone())).unwrap_err();
    assert!(matches!(e, TrustError::Writable { .. }), "{e}");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    trust::check(&r, &Trust::Verify(ring)).unwrap();
}
