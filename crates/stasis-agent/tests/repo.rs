//! Tests of the local image repository: commit/list, retention, discard, recovery, and the
//! durability invariant under any interleaving of operations.

use std::fs;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use stasis_agent::repo::{ImageId, LocalRepo, PendingImage, RepoError, Repository};
use stasis_image::{ImageReader, ImageWriter, WriteOptions, KIND_OBJECTS, OBJECTS_FILE};

/// Writes and commits a small image in `dir` (as the engine would).
fn write_image(dir: &Path, tag: u64) {
    let w = ImageWriter::create(dir, WriteOptions::default()).unwrap();
    w.put_chunk(&tag.to_le_bytes().repeat(512)).unwrap();
    w.put_file(
        OBJECTS_FILE,
        KIND_OBJECTS,
        format!("objects {tag}").as_bytes(),
    )
    .unwrap();
    w.commit(1, vec![("tag".into(), tag.to_string())]).unwrap();
}

/// Writes an image without committing it (no manifest).
fn write_uncommitted(dir: &Path) {
    let w = ImageWriter::create(dir, WriteOptions::default()).unwrap();
    w.put_chunk(b"partial").unwrap();
    drop(w);
}

fn snapshot(repo: &LocalRepo, w: &str, tag: u64) -> ImageId {
    let p = repo.begin(w).unwrap();
    write_image(&p.dir, tag);
    let id = p.id;
    let info = repo.commit(p).unwrap();
    assert_eq!(info.id, id);
    id
}

fn ids(repo: &LocalRepo, w: &str) -> Vec<ImageId> {
    repo.list(w).unwrap().into_iter().map(|i| i.id).collect()
}

fn repo() -> (tempfile::TempDir, LocalRepo) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::new(tmp.path().join("repo")).unwrap();
    (tmp, repo)
}

#[test]
fn commit_then_list_and_latest() {
    let (_tmp, repo) = repo();
    assert!(repo.list("web").unwrap().is_empty());
    assert_eq!(repo.latest("web").unwrap(), None);

    let p = repo.begin("web").unwrap();
    assert!(p.dir.is_dir());
    assert!(p
        .dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(".pending-"));
    write_image(&p.dir, 1);
    // Written but not committed to the repository: not listed.
    assert!(repo.list("web").unwrap().is_empty());
    let id1 = p.id;
    let info = repo.commit(p).unwrap();
    assert_eq!(info.id, id1);
    assert_eq!(info.created_unix_ms, id1.unix_ms);
    assert!(info.bytes > 0);
    assert_eq!(
        info.dir,
        repo.root().join("web/images").join(id1.to_string())
    );
    ImageReader::open(&info.dir).unwrap();

    let id2 = snapshot(&repo, "web", 2);
    assert!(id2 > id1);
    assert_eq!(ids(&repo, "web"), vec![id1, id2]);
    assert_eq!(repo.latest("web").unwrap().unwrap().id, id2);
    // Other workloads are separate.
    assert!(repo.list("db").unwrap().is_empty());
    // Ids are strictly increasing even in the same millisecond.
    let many: Vec<ImageId> = (0..5).map(|i| snapshot(&repo, "fast", i)).collect();
    assert!(many.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn uncommitted_image_fails_commit_and_is_never_listed() {
    let (_tmp, repo) = repo();
    let good = snapshot(&repo, "web", 1);

    let p = repo.begin("web").unwrap();
    write_uncommitted(&p.dir);
    let dir = p.dir.clone();
    let err = repo.commit(p).unwrap_err();
    assert!(matches!(err, RepoError::Incomplete { .. }), "{err}");
    assert!(err.to_string().contains(&dir.display().to_string()));
    assert!(std::error::Error::source(&err).is_some());
    assert!(!dir.exists(), "failed commit removes the pending directory");

    // An empty pending dir fails too.
    let p = repo.begin("web").unwrap();
    assert!(repo.commit(p).is_err());

    // A pending dir left alone is never listed.
    let p = repo.begin("web").unwrap();
    write_uncommitted(&p.dir);
    assert_eq!(ids(&repo, "web"), vec![good]);
    assert_eq!(repo.latest("web").unwrap().unwrap().id, good);
    repo.abort(p).unwrap();
    assert_eq!(ids(&repo, "web"), vec![good]);
}

#[test]
fn garbage_in_images_dir_is_ignored() {
    let (_tmp, repo) = repo();
    let good = snapshot(&repo, "web", 1);
    let images = repo.images_dir("web").unwrap();
    fs::create_dir(images.join("lost+found")).unwrap();
    fs::write(images.join("notes.txt"), b"x").unwrap();
    // A committed-looking name without a manifest.
    fs::create_dir(images.join("00000000000000000001-000000")).unwrap();
    assert_eq!(ids(&repo, "web"), vec![good]);
}

#[test]
fn abort_removes_pending() {
    let (_tmp, repo) = repo();
    let p = repo.begin("web").unwrap();
    write_image(&p.dir, 1);
    let dir = p.dir.clone();
    repo.abort(p).unwrap();
    assert!(!dir.exists());
    assert!(repo.list("web").unwrap().is_empty());
}

#[test]
fn foreign_pending_and_bad_names_are_refused() {
    let (tmp, repo) = repo();
    let p = repo.begin("web").unwrap();
    let fake = PendingImage {
        workload: "web".into(),
        id: p.id,
        dir: tmp.path().to_owned(),
    };
    assert!(matches!(
        repo.commit(fake),
        Err(RepoError::ForeignPending { .. })
    ));
    assert!(tmp.path().exists());
    for bad in ["", "..", "a/b", ".x"] {
        assert!(matches!(
            repo.begin(bad),
            Err(RepoError::InvalidWorkload { .. })
        ));
    }
}

#[test]
fn retain_keeps_the_newest() {
    let (_tmp, repo) = repo();
    let all: Vec<ImageId> = (0..5).map(|i| snapshot(&repo, "web", i)).collect();
    let report = repo.retain("web", 2).unwrap();
    assert_eq!(report.removed, all[..3].to_vec());
    assert_eq!(ids(&repo, "web"), all[3..].to_vec());
    // Idempotent.
    assert!(repo.retain("web", 2).unwrap().removed.is_empty());
    // keep == 0 behaves as 1.
    repo.retain("web", 0).unwrap();
    assert_eq!(ids(&repo, "web"), vec![all[4]]);
    // The only image is never removed.
    repo.retain("web", 0).unwrap();
    repo.retain("web", 1).unwrap();
    assert_eq!(ids(&repo, "web"), vec![all[4]]);
    ImageReader::open(&repo.latest("web").unwrap().unwrap().dir).unwrap();
    // No image at all: nothing to do.
    assert_eq!(repo.retain("none", 0).unwrap(), Default::default());
}

#[test]
fn retain_never_counts_pending_or_broken_images() {
    let (_tmp, repo) = repo();
    let a = snapshot(&repo, "web", 1);
    // A newer image being written does not make the committed one deletable.
    let p = repo.begin("web").unwrap();
    write_image(&p.dir, 2);
    repo.retain("web", 0).unwrap();
    assert_eq!(ids(&repo, "web"), vec![a]);
    // A newer committed-looking directory that does not open does not either.
    let images = repo.images_dir("web").unwrap();
    let broken = ImageId {
        unix_ms: p.id.unix_ms + 10_000,
        seq: 0,
    };
    fs::create_dir(images.join(broken.to_string())).unwrap();
    repo.retain("web", 0).unwrap();
    assert_eq!(ids(&repo, "web"), vec![a]);
    // Once the pending one is committed, the older one may go.
    let b = repo.commit(p).unwrap().id;
    repo.retain("web", 1).unwrap();
    assert_eq!(ids(&repo, "web"), vec![b]);
}

#[test]
fn retain_removes_stale_pending_only() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    let repo = LocalRepo::new(&root)
        .unwrap()
        .with_pending_ttl(Duration::from_millis(0));
    let a = snapshot(&repo, "web", 1);
    // Left by a previous process (not active here).
    let images = repo.images_dir("web").unwrap();
    let leftover = images.join(format!(".pending-{:020}-000000", 1u64));
    fs::create_dir(&leftover).unwrap();
    // Being written by this process: kept even past the ttl.
    let active = repo.begin("web").unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let report = repo.retain("web", 1).unwrap();
    assert_eq!(report.removed_pending, vec![leftover.clone()]);
    assert!(!leftover.exists());
    assert!(active.dir.exists());
    assert_eq!(ids(&repo, "web"), vec![a]);

    // With the default ttl a fresh leftover stays.
    let repo2 = LocalRepo::new(&root).unwrap();
    let fresh = images.join(format!(".pending-{}-000000", repo2_id_now()));
    fs::create_dir(&fresh).unwrap();
    assert!(repo2.retain("web", 1).unwrap().removed_pending.is_empty());
    assert!(fresh.exists());
}

fn repo2_id_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{ms:020}")
}

#[test]
fn discard_before_and_remove_all() {
    let (_tmp, repo) = repo();
    let all: Vec<ImageId> = (0..4).map(|i| snapshot(&repo, "web", i)).collect();
    let removed = repo.discard_before("web", all[2]).unwrap();
    assert_eq!(removed, all[..2].to_vec());
    assert_eq!(ids(&repo, "web"), all[2..].to_vec());
    // Nothing older: no-op.
    assert!(repo.discard_before("web", all[2]).unwrap().is_empty());

    let other = snapshot(&repo, "db", 9);
    let p = repo.begin("web").unwrap();
    repo.remove_all("web").unwrap();
    assert!(repo.list("web").unwrap().is_empty());
    assert!(!p.dir.exists());
    assert_eq!(ids(&repo, "db"), vec![other]);
    repo.remove_all("web").unwrap();
    repo.remove_all("never-existed").unwrap();
    // New images after remove_all still get fresh, increasing ids.
    let again = snapshot(&repo, "web", 5);
    assert!(again > all[3]);
}

#[test]
fn recover_removes_crash_leftovers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    let (good, pending_dir, trash_dir) = {
        let repo = LocalRepo::new(&root).unwrap();
        let good = snapshot(&repo, "web", 1);
        // Crash while the engine was writing: a pending dir with or without a manifest.
        let p = repo.begin("web").unwrap();
        write_image(&p.dir, 2);
        let q = repo.begin("db").unwrap();
        write_uncommitted(&q.dir);
        // Crash in the middle of a deletion.
        let trash = repo
            .images_dir("web")
            .unwrap()
            .join(".trash-00000000000000000005-000000");
        fs::create_dir(&trash).unwrap();
        (good, vec![p.dir, q.dir], trash)
    };
    // A new agent process.
    let repo = LocalRepo::new(&root).unwrap();
    fs::write(root.join("stray-file"), b"x").unwrap();
    let report = repo.recover().unwrap();
    let mut removed = report.removed_pending.clone();
    removed.sort();
    let mut expected = pending_dir.clone();
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(report.removed_trash, vec![trash_dir.clone()]);
    assert!(pending_dir.iter().all(|d| !d.exists()));
    assert!(!trash_dir.exists());
    assert_eq!(ids(&repo, "web"), vec![good]);
    // Nothing more to do the second time.
    assert_eq!(repo.recover().unwrap(), Default::default());
    // recover never touches what this process is writing.
    let p = repo.begin("web").unwrap();
    assert!(repo.recover().unwrap().removed_pending.is_empty());
    assert!(p.dir.exists());
}

#[derive(Clone, Debug)]
enum Op {
    Begin,
    /// Write and commit the i-th open pending image (modulo).
    Commit(usize),
    /// Commit the i-th open pending image without writing it (must fail).
    CommitEmpty(usize),
    Abort(usize),
    Retain(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Begin),
        3 => any::<usize>().prop_map(Op::Commit),
        1 => any::<usize>().prop_map(Op::CommitEmpty),
        1 => any::<usize>().prop_map(Op::Abort),
        2 => (0usize..4).prop_map(Op::Retain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any interleaving keeps: the newest committed image exists and opens; listing matches
    /// a model; retention keeps exactly the newest max(keep, 1).
    #[test]
    fn newest_committed_image_survives(ops in proptest::collection::vec(op(), 1..24)) {
        let (_tmp, repo) = repo();
        let mut open: Vec<PendingImage> = Vec::new();
        let mut model: Vec<ImageId> = Vec::new();
        let mut newest: Option<ImageId> = None;
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Begin => open.push(repo.begin("w").unwrap()),
                Op::Commit(i) if !open.is_empty() => {
                    let p = open.remove(i % open.len());
                    write_image(&p.dir, n as u64);
                    let id = repo.commit(p).unwrap().id;
                    model.push(id);
                    model.sort();
                    newest = newest.max(Some(id));
                }
                Op::CommitEmpty(i) if !open.is_empty() => {
                    let p = open.remove(i % open.len());
                    prop_assert!(repo.commit(p).is_err());
                }
                Op::Abort(i) if !open.is_empty() => {
                    let p = open.remove(i % open.len());
                    repo.abort(p).unwrap();
                }
                Op::Retain(keep) => {
                    repo.retain("w", keep).unwrap();
                    let k = keep.max(1);
                    if model.len() > k {
                        model.drain(..model.len() - k);
                    }
                }
                _ => {}
            }
            prop_assert_eq!(ids(&repo, "w"), model.clone());
            let latest = repo.latest("w").unwrap();
            prop_assert_eq!(latest.as_ref().map(|i| i.id), newest);
            if let Some(info) = latest {
                prop_assert!(ImageReader::open(&info.dir).is_ok());
            }
            for p in &open {
                prop_assert!(p.dir.is_dir());
            }
        }
    }
}

fn store_ids(repo: &LocalRepo, w: &str) -> Vec<stasis_image::ChunkId> {
    let s = repo
        .store(w)
        .unwrap()
        .expect("the workload has a chunk store");
    let mut v: Vec<_> = s.scan().unwrap().0.into_iter().map(|c| c.id).collect();
    v.sort();
    v
}

/// The images of a workload share its chunk store; retention collects the chunks only the
/// deleted images used; recovery removes the temporaries of a crashed checkpoint.
#[test]
fn images_share_the_store_and_retention_collects_it() {
    let (_tmp, repo) = repo();
    let chunk_of = |tag: u64| stasis_image::chunk_id_of(&tag.to_le_bytes().repeat(512));
    snapshot(&repo, "web", 1);
    snapshot(&repo, "web", 1); // the same chunk: stored once
    assert_eq!(store_ids(&repo, "web"), vec![chunk_of(1)]);
    snapshot(&repo, "web", 2);
    let mut both = vec![chunk_of(1), chunk_of(2)];
    both.sort();
    assert_eq!(store_ids(&repo, "web"), both);
    // Keep one: the two images of tag 1 go, and so does their chunk.
    let r = repo.retain("web", 1).unwrap();
    assert_eq!(r.removed.len(), 2);
    assert_eq!(store_ids(&repo, "web"), vec![chunk_of(2)]);
    ImageReader::open(&repo.latest("web").unwrap().unwrap().dir)
        .unwrap()
        .verify_all()
        .unwrap();
    // A checkpoint killed mid-way: a pending image without manifest, a torn temporary.
    let p = repo.begin("web").unwrap();
    write_uncommitted(&p.dir);
    let store = repo.store("web").unwrap().unwrap();
    let hex = stasis_image::chunk_hex(&chunk_of(3));
    fs::create_dir_all(store.path().join(&hex[..2])).unwrap();
    fs::write(
        store.path().join(&hex[..2]).join(format!("{hex}.1-x.tmp")),
        b"torn",
    )
    .unwrap();
    let fresh = LocalRepo::new(repo.root()).unwrap();
    fresh.recover().unwrap();
    assert!(store.scan().unwrap().1.is_empty(), "temporaries removed");
    assert_eq!(store_ids(&fresh, "web"), vec![chunk_of(2)]);
    // The quota bounds the next image.
    let used = store.usage().unwrap();
    fresh.set_quota("web", Some(used + 10)).unwrap();
    let p = fresh.begin("web").unwrap();
    let w = ImageWriter::create(&p.dir, WriteOptions::default()).unwrap();
    let e = w.put_chunk(&[7u8; 4096]).unwrap_err();
    assert!(e.to_string().contains("quota"), "{e}");
}
