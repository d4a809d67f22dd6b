//! The chunk store shared by a workload's images: put/get/dedupe, GC reachability, crash
//! consistency (torn temporaries), the writer lock, the quota, and the export/import archive.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use stasis_image::archive::{self, ImportError};
use stasis_image::store::{ChunkStore, StoreConfig, CHUNKS_IN_STORE};
use stasis_image::{
    chunk_hex, chunk_id_of, ChunkId, Compression, ImageReader, ImageWriter, WriteError,
    WriteOptions, KIND_OBJECTS, OBJECTS_FILE,
};

fn opts() -> WriteOptions {
    WriteOptions {
        force: false,
        compression: Compression::Lz4,
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

/// Writes an image of the chunks `seeds` (4 KiB of noise each) into `dir`.
fn image(dir: &Path, seeds: &[u64]) -> (stasis_image::CommitStats, Vec<ChunkId>) {
    let w = ImageWriter::create(dir, opts()).unwrap();
    let ids: Vec<ChunkId> = seeds
        .iter()
        .map(|&s| w.put_chunk(&noise(s, 4096)).unwrap())
        .collect();
    w.put_file(OBJECTS_FILE, KIND_OBJECTS, b"records").unwrap();
    (w.commit(1, vec![]).unwrap(), ids)
}

fn store_chunks(store: &ChunkStore) -> HashSet<ChunkId> {
    store.scan().unwrap().0.into_iter().map(|c| c.id).collect()
}

fn own_chunk_files(img: &Path) -> usize {
    walk(&img.join("chunks"))
}

fn walk(p: &Path) -> usize {
    let Ok(rd) = fs::read_dir(p) else { return 0 };
    rd.map(|e| {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            walk(&e.path())
        } else {
            1
        }
    })
    .sum()
}

#[test]
fn images_share_the_store_and_dedupe() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    let store = ChunkStore::create(&images).unwrap();
    let (s1, ids1) = image(&images.join("1"), &[1, 2, 3]);
    assert_eq!((s1.chunks, s1.chunks_reused), (3, 0));
    let (s2, ids2) = image(&images.join("2"), &[2, 3, 4]);
    assert_eq!(
        (s2.chunks, s2.chunks_reused),
        (3, 2),
        "2 of 3 chunks reused"
    );
    assert!(s2.chunk_bytes_stored < s1.chunk_bytes_stored);
    assert_eq!(
        store_chunks(&store).len(),
        4,
        "4 distinct chunks stored once"
    );
    for (d, ids) in [("1", &ids1), ("2", &ids2)] {
        let r = ImageReader::open(&images.join(d)).unwrap();
        assert_eq!(r.manifest().chunk_store, CHUNKS_IN_STORE);
        assert_eq!(own_chunk_files(&images.join(d)), 0, "no chunk in the image");
        r.verify_all().unwrap();
        assert_eq!(r.read_chunk(&ids[0]).unwrap().len(), 4096);
        stasis_image::trust::check_ownership(&r).unwrap();
    }
    assert_eq!(
        ImageReader::open(&images.join("1"))
            .unwrap()
            .read_chunk(&ids1[0])
            .unwrap(),
        noise(1, 4096)
    );
    // A standalone image (no store beside it) keeps its own chunks, as before.
    let (s3, _) = image(&t.path().join("alone"), &[1, 2]);
    assert_eq!(s3.chunks_reused, 0);
    assert_eq!(own_chunk_files(&t.path().join("alone")), 2);
    assert_eq!(
        ImageReader::open(&t.path().join("alone"))
            .unwrap()
            .manifest()
            .chunk_store,
        0
    );
}

#[test]
fn an_image_moved_away_from_its_store_says_what_to_do() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    ChunkStore::create(&images).unwrap();
    image(&images.join("1"), &[1]);
    fs::rename(images.join("1"), t.path().join("moved")).unwrap();
    let e = ImageReader::open(&t.path().join("moved"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("missing") && e.contains("stasis image export"),
        "{e}"
    );
}

#[test]
fn gc_removes_only_unreachable_chunks() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    let store = ChunkStore::create(&images).unwrap();
    let (_, a) = image(&images.join("1"), &[1, 2, 3]);
    let (_, b) = image(&images.join("2"), &[3, 4]);
    // A pending image with a manifest counts; a trash directory does not.
    image(&images.join(".pending-3"), &[5]);
    fs::rename(images.join("1"), images.join(".trash-1")).unwrap();
    let dry = store.gc(true).unwrap();
    assert_eq!((dry.removed_chunks, dry.kept_chunks, dry.images), (2, 3, 2));
    assert_eq!(store_chunks(&store).len(), 5, "dry run removes nothing");
    let r = store.gc(false).unwrap();
    assert_eq!((r.removed_chunks, r.kept_chunks), (2, 3));
    let left = store_chunks(&store);
    assert!(!left.contains(&a[0]) && !left.contains(&a[1]));
    assert!(left.contains(&b[0]) && left.contains(&b[1]));
    ImageReader::open(&images.join("2"))
        .unwrap()
        .verify_all()
        .unwrap();
    ImageReader::open(&images.join(".pending-3"))
        .unwrap()
        .verify_all()
        .unwrap();
    assert_eq!(store.gc(false).unwrap().removed_chunks, 0, "idempotent");
}

#[test]
fn torn_temporaries_are_ignored_and_collected() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    let store = ChunkStore::create(&images).unwrap();
    // A crash mid-write: a torn temporary of chunk 1 and a pending image without a manifest.
    let id = chunk_id_of(&noise(1, 4096));
    let hex = chunk_hex(&id);
    fs::create_dir_all(store.path().join(&hex[..2])).unwrap();
    fs::write(
        store
            .path()
            .join(&hex[..2])
            .join(format!("{hex}.99-dead.tmp")),
        b"STASISCK torn",
    )
    .unwrap();
    fs::create_dir_all(images.join(".pending-9").join("chunks")).unwrap();
    assert!(!store.contains(&id), "a temporary is not a chunk");
    let (s, _) = image(&images.join("1"), &[1, 2]);
    assert_eq!(s.chunks_reused, 0, "the torn chunk was written again");
    ImageReader::open(&images.join("1"))
        .unwrap()
        .verify_all()
        .unwrap();
    let r = store.gc(false).unwrap();
    assert_eq!(
        (r.removed_temps, r.removed_chunks, r.kept_chunks),
        (1, 0, 2)
    );
    let names: Vec<_> = fs::read_dir(store.path().join(&hex[..2]))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(&hex)]);
}

#[test]
fn a_dropped_writer_leaves_no_chunk_and_gc_waits_for_writers() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    let store = ChunkStore::create(&images).unwrap();
    let w = ImageWriter::create(&images.join(".pending-1"), opts()).unwrap();
    let id = w.put_chunk(&noise(7, 4096)).unwrap();
    assert!(
        store.try_gc().unwrap().is_none(),
        "a writer holds the store"
    );
    assert!(!store.contains(&id), "not renamed before commit");
    drop(w);
    assert_eq!(
        walk(&store.path()),
        1,
        "only store.json: the temporary was removed"
    );
    assert!(store.try_gc().unwrap().is_some(), "free again");
}

#[test]
fn quota_stops_a_checkpoint_and_keeps_the_previous_image() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    let store = ChunkStore::create(&images).unwrap();
    image(&images.join("1"), &[1, 2]);
    let used = store.usage().unwrap();
    store
        .set_config(&StoreConfig {
            quota_bytes: Some(used + 6000),
        })
        .unwrap();
    // Same chunks again: almost nothing new, fits.
    image(&images.join("2"), &[1, 2]);
    let w = ImageWriter::create(&images.join(".pending-3"), opts()).unwrap();
    w.put_chunk(&noise(10, 4096)).unwrap();
    let e = w.put_chunk(&noise(11, 4096)).unwrap_err();
    assert!(matches!(e, WriteError::QuotaExceeded { .. }), "{e}");
    assert!(e.to_string().contains("quota") && e.to_string().contains("stasis image quota"));
    drop(w);
    fs::remove_dir_all(images.join(".pending-3")).unwrap();
    ImageReader::open(&images.join("2"))
        .unwrap()
        .verify_all()
        .unwrap();
    assert_eq!(
        store_chunks(&store).len(),
        2,
        "nothing of the failed image stays"
    );
}

fn export_bytes(dir: &Path) -> Vec<u8> {
    let r = ImageReader::open(dir).unwrap();
    let mut out = Vec::new();
    archive::export(&r, &mut out).unwrap();
    out
}

#[test]
fn export_import_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    ChunkStore::create(&images).unwrap();
    let (_, ids) = image(&images.join("1"), &[1, 2, 3]);
    let a = export_bytes(&images.join("1"));
    let dst = t.path().join("elsewhere/img");
    let st = archive::import(a.as_slice(), &dst).unwrap();
    assert_eq!((st.files, st.chunks), (1, 3));
    let r = ImageReader::open(&dst).unwrap();
    r.verify_all().unwrap();
    assert_eq!(r.read_chunk(&ids[2]).unwrap(), noise(3, 4096));
    assert_eq!(
        own_chunk_files(&dst),
        3,
        "the imported image holds its chunks"
    );
    assert_eq!(
        r.manifest_bytes(),
        ImageReader::open(&images.join("1"))
            .unwrap()
            .manifest_bytes(),
        "the manifest (what a signature covers) is kept exactly"
    );
    // Into an image that is there already: refused, nothing touched.
    let e = archive::import(a.as_slice(), &dst).unwrap_err();
    assert!(matches!(e, ImportError::NotEmpty { .. }), "{e}");
    ImageReader::open(&dst).unwrap().verify_all().unwrap();
}

#[test]
fn a_corrupt_or_truncated_archive_is_refused_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    ChunkStore::create(&images).unwrap();
    image(&images.join("1"), &[1, 2]);
    let a = export_bytes(&images.join("1"));
    let dst = t.path().join("dst");
    let step = (a.len() / 97).max(1);
    for i in (0..a.len()).step_by(step) {
        let mut b = a.clone();
        b[i] ^= 0x40;
        let e = archive::import(b.as_slice(), &dst);
        assert!(e.is_err(), "flip at {i} accepted");
        assert!(!dst.exists(), "flip at {i} left {dst:?}");
    }
    for n in (0..a.len()).step_by(step) {
        let e = archive::import(&a[..n], &dst).unwrap_err().to_string();
        assert!(
            e.contains("truncated") || e.contains("magic"),
            "cut at {n}: {e}"
        );
        assert!(!dst.exists());
    }
    let e = archive::import(&b"not an archive at all"[..], &dst)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a stasis image archive"), "{e}");
}

fn ids_of(seeds: &[u64]) -> Vec<ChunkId> {
    seeds
        .iter()
        .map(|&s| chunk_id_of(&noise(s, 4096)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Random images over a small pool of chunks, some removed: GC leaves exactly the union of
    /// the chunks the remaining images list, and every remaining image verifies.
    #[test]
    fn gc_keeps_exactly_what_remaining_images_list(
        imgs in prop::collection::vec(prop::collection::btree_set(0u64..12, 0..6), 1..6),
        removed in prop::collection::vec(any::<bool>(), 6),
    ) {
        let t = tempfile::tempdir().unwrap();
        let images = t.path().join("images");
        let store = ChunkStore::create(&images).unwrap();
        let mut want: HashSet<ChunkId> = HashSet::new();
        let mut kept: Vec<PathBuf> = Vec::new();
        for (i, seeds) in imgs.iter().enumerate() {
            let seeds: Vec<u64> = seeds.iter().copied().collect();
            let dir = images.join(format!("{i}"));
            image(&dir, &seeds);
            if removed[i] {
                fs::remove_dir_all(&dir).unwrap();
            } else {
                want.extend(ids_of(&seeds));
                kept.push(dir);
            }
        }
        store.gc(false).unwrap();
        prop_assert_eq!(store_chunks(&store), want);
        for d in kept {
            ImageReader::open(&d).unwrap().verify_all().unwrap();
        }
    }
}

/// The partition layer names the image directory by a `/proc/self/fd/N` handle: the store
/// beside the real directory is found all the same, and messages name the real path.
#[test]
fn a_directory_given_by_descriptor_finds_its_store() {
    use std::os::fd::AsRawFd;
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    ChunkStore::create(&images).unwrap();
    fs::create_dir(images.join(".pending-1")).unwrap();
    let fd = fs::File::open(images.join(".pending-1")).unwrap();
    let handle = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let s = ChunkStore::beside(&handle)
        .unwrap()
        .expect("found through the handle");
    assert_eq!(s.images_path(), fs::canonicalize(&images).unwrap());
    let (st, _) = image(&handle, &[1, 2]);
    assert_eq!(st.chunks, 2);
    assert_eq!(own_chunk_files(&images.join(".pending-1")), 0);
    let r = ImageReader::open(&handle).unwrap();
    assert_eq!(r.manifest().chunk_store, CHUNKS_IN_STORE);
    r.verify_all().unwrap();
}
