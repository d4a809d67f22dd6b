//! The embedded store against real redb files: transactions, revisions across reopen, watches,
//! threads, and a model check against a `BTreeMap`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stasis_cluster::{
    CmpOp, Compare, EmbeddedStore, Entry, Op, Store, StoreError, Txn, TxnResult, Watch, WatchEvent,
    WatchEventKind,
};

fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(dir.path().join("state.redb")).expect("open store")
}

fn put(key: &str, value: &[u8]) -> Op {
    Op::Put(key.to_owned(), value.to_vec())
}

/// Takes the next `n` events, failing if they do not come within a few seconds.
fn take(watch: &Watch, n: usize) -> Vec<WatchEvent> {
    (0..n)
        .map(|_| {
            watch
                .recv_timeout(Duration::from_secs(5))
                .expect("watch healthy")
                .expect("event within timeout")
        })
        .collect()
}

fn summary(events: &[WatchEvent]) -> Vec<(WatchEventKind, String, u64)> {
    events
        .iter()
        .map(|e| (e.kind, e.entry.key.clone(), e.revision))
        .collect()
}

#[test]
fn txn_compare_and_swap_takes_success_then_failure_branch() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    // Create-if-absent: succeeds once.
    let create = Txn {
        compares: vec![Compare::absent("primary")],
        success: vec![put("primary", b"n1"), put("epoch", b"1")],
        failure: vec![],
    };
    assert_eq!(
        s.txn(create.clone()).unwrap(),
        TxnResult {
            succeeded: true,
            revision: 1
        }
    );
    assert_eq!(s.get("primary").unwrap().unwrap().revision, 1);
    assert_eq!(s.get("epoch").unwrap().unwrap().revision, 1);
    // Second create fails; an empty failure branch changes nothing.
    assert_eq!(
        s.txn(create).unwrap(),
        TxnResult {
            succeeded: false,
            revision: 1
        }
    );
    // Stale writer (expects revision 0) is rejected and its failure branch records that.
    let stale = Txn {
        compares: vec![Compare::unchanged("epoch", 0)],
        success: vec![put("epoch", b"2")],
        failure: vec![put("rejected/n2", b"stale epoch")],
    };
    let r = s.txn(stale).unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.revision, 2);
    assert_eq!(s.get("epoch").unwrap().unwrap().value, b"1");
    assert_eq!(s.get("rejected/n2").unwrap().unwrap().revision, 2);
    // Current writer: value and revision compares together, with a delete in the branch.
    let swap = Txn {
        compares: vec![
            Compare::Value("primary".into(), b"n1".to_vec()),
            Compare::unchanged("epoch", 1),
            Compare::Revision("rejected/n2".into(), CmpOp::Greater, 1),
            Compare::Revision("epoch".into(), CmpOp::Less, 2),
        ],
        success: vec![
            put("primary", b"n2"),
            put("epoch", b"2"),
            Op::Delete("rejected/n2".into()),
        ],
        failure: vec![],
    };
    assert_eq!(
        s.txn(swap).unwrap(),
        TxnResult {
            succeeded: true,
            revision: 3
        }
    );
    assert_eq!(s.get("primary").unwrap().unwrap().value, b"n2");
    assert_eq!(s.get("rejected/n2").unwrap(), None);
    // One failing compare among several makes the whole txn fail.
    let mixed = Txn {
        compares: vec![
            Compare::Value("primary".into(), b"n2".to_vec()),
            Compare::Value("missing".into(), vec![]),
        ],
        success: vec![put("primary", b"n3")],
        failure: vec![],
    };
    assert!(!s.txn(mixed).unwrap().succeeded);
    assert_eq!(s.get("primary").unwrap().unwrap().value, b"n2");
}

#[test]
fn txn_with_duplicate_key_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let err = s
        .txn(Txn {
            compares: vec![],
            success: vec![put("a", b"1"), Op::Delete("a".into())],
            failure: vec![],
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateKey { .. }));
    assert_eq!(s.revision().unwrap(), 0);
    assert_eq!(s.get("a").unwrap(), None);
}

#[test]
fn revisions_strictly_increase_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    {
        let s = open(&dir);
        for i in 0..20u32 {
            let rev = if i % 5 == 4 {
                // Delete the key written by the previous step.
                assert!(s.delete(&format!("k/{}", (i - 1) % 7)).unwrap());
                s.revision().unwrap()
            } else {
                s.put(&format!("k/{}", i % 7), &i.to_le_bytes()).unwrap()
            };
            assert!(rev > last, "revision {rev} after {last}");
            last = rev;
        }
    }
    let s = open(&dir);
    assert_eq!(s.revision().unwrap(), last);
    let before: Vec<Entry> = s.list("k/").unwrap();
    assert!(!before.is_empty());
    assert!(before.iter().all(|e| e.revision <= last));
    let next = s.put("k/new", b"x").unwrap();
    assert_eq!(next, last + 1);
    drop(s);
    let s = open(&dir);
    assert_eq!(s.get("k/new").unwrap().unwrap().revision, last + 1);
    assert_eq!(s.list("k/").unwrap().len(), before.len() + 1);
}

#[test]
fn watch_delivers_puts_and_deletes_in_order_for_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let w = s.watch("nodes/", s.revision().unwrap()).unwrap();
    s.put("nodes/a", b"1").unwrap(); // 1
    s.put("other", b"x").unwrap(); // 2 (not watched)
    s.txn(Txn {
        compares: vec![],
        success: vec![put("nodes/b", b"2"), Op::Delete("nodes/a".into())],
        failure: vec![],
    })
    .unwrap(); // 3
    s.delete("nodes/b").unwrap(); // 4
    let events = take(&w, 4);
    assert_eq!(
        summary(&events),
        [
            (WatchEventKind::Put, "nodes/a".into(), 1),
            (WatchEventKind::Put, "nodes/b".into(), 3),
            (WatchEventKind::Delete, "nodes/a".into(), 3),
            (WatchEventKind::Delete, "nodes/b".into(), 4),
        ]
    );
    assert_eq!(events[0].entry.value, b"1");
    assert!(events[3].entry.value.is_empty());
    assert_eq!(w.try_next().unwrap(), None);
}

#[test]
fn watch_resuming_from_a_revision_replays_exactly_the_missed_changes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir);
        for i in 1..=5u8 {
            s.put(&format!("w/{i}"), &[i]).unwrap();
        }
        s.delete("w/2").unwrap(); // 6
    }
    // Reopen: the history is in the file, not in memory.
    let s = open(&dir);
    let w = s.watch("w/", 3).unwrap();
    s.put("w/7", b"live").unwrap(); // 7
    let events = take(&w, 4);
    assert_eq!(
        summary(&events),
        [
            (WatchEventKind::Put, "w/4".into(), 4),
            (WatchEventKind::Put, "w/5".into(), 5),
            (WatchEventKind::Delete, "w/2".into(), 6),
            (WatchEventKind::Put, "w/7".into(), 7),
        ]
    );
    assert_eq!(w.try_next().unwrap(), None);
    // A watch from the future only sees changes after that revision.
    let future = s.watch("w/", 8).unwrap();
    s.put("w/8", b"").unwrap(); // 8: skipped
    s.put("w/9", b"").unwrap(); // 9
    assert_eq!(take(&future, 1)[0].revision, 9);
}

#[test]
fn watch_ends_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let mut w = s.watch("", 0).unwrap();
    s.put("a", b"").unwrap();
    drop(s);
    assert_eq!(w.next().unwrap().unwrap().revision, 1);
    assert!(w.next().is_none());
}

#[test]
fn concurrent_writers_and_watchers_see_every_revision_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&dir));
    let w = s.watch("", 0).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut revs = Vec::new();
                for i in 0..25 {
                    revs.push(s.put(&format!("t{t}/{i}"), b"v").unwrap());
                }
                revs
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<u64>>());
    let seen: Vec<u64> = take(&w, 100).iter().map(|e| e.revision).collect();
    assert_eq!(seen, (1..=100).collect::<Vec<u64>>());
    assert_eq!(s.list("").unwrap().len(), 100);
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(u8, u8),
    Delete(u8),
    Get(u8),
    List(u8),
    /// If key `.0`'s revision equals the model's (or a wrong one when `.1`), put `.2` there.
    Cas(u8, bool, u8),
    Reopen,
}

fn key(k: u8) -> String {
    // Two-level keys so prefixes matter: a/0..a/3, b/0..b/3.
    format!(
        "{}/{}",
        if k.is_multiple_of(2) { "a" } else { "b" },
        k / 2 % 4
    )
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| ModelOp::Put(k, v)),
        2 => any::<u8>().prop_map(ModelOp::Delete),
        2 => any::<u8>().prop_map(ModelOp::Get),
        1 => any::<u8>().prop_map(ModelOp::List),
        3 => (any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(k, w, v)| ModelOp::Cas(k, w, v)),
        1 => Just(ModelOp::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_btreemap_model(ops in proptest::collection::vec(model_op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        let mut model: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
        let mut rev = 0u64;
        let w = s.watch("", 0).unwrap();
        let mut expected_events = Vec::new();
        for op in ops {
            match op {
                ModelOp::Put(k, v) => {
                    rev += 1;
                    prop_assert_eq!(s.put(&key(k), &[v]).unwrap(), rev);
                    model.insert(key(k), (vec![v], rev));
                    expected_events.push((WatchEventKind::Put, key(k), rev));
                }
                ModelOp::Delete(k) => {
                    let existed = model.remove(&key(k)).is_some();
                    if existed {
                        rev += 1;
                        expected_events.push((WatchEventKind::Delete, key(k), rev));
                    }
                    prop_assert_eq!(s.delete(&key(k)).unwrap(), existed);
                }
                ModelOp::Get(k) => {
                    let want = model.get(&key(k)).map(|(v, r)| Entry {
                        key: key(k),
                        value: v.clone(),
                        revision: *r,
                    });
                    prop_assert_eq!(s.get(&key(k)).unwrap(), want);
                }
                ModelOp::List(p) => {
                    let prefix = ["", "a/", "b/", "a/1"][usize::from(p % 4)];
                    let want: Vec<Entry> = model
                        .iter()
                        .filter(|(k, _)| k.starts_with(prefix))
                        .map(|(k, (v, r))| Entry { key: k.clone(), value: v.clone(), revision: *r })
                        .collect();
                    prop_assert_eq!(s.list(prefix).unwrap(), want);
                }
                ModelOp::Cas(k, wrong, v) => {
                    let have = model.get(&key(k)).map_or(0, |(_, r)| *r);
                    let expect = if wrong { have + 1 } else { have };
                    let result = s
                        .txn(Txn {
                            compares: vec![Compare::unchanged(key(k), expect)],
                            success: vec![Op::Put(key(k), vec![v])],
                            failure: vec![],
                        })
                        .unwrap();
                    if !wrong {
                        rev += 1;
                        model.insert(key(k), (vec![v], rev));
                        expected_events.push((WatchEventKind::Put, key(k), rev));
                    }
                    prop_assert_eq!(result, TxnResult { succeeded: !wrong, revision: rev });
                }
                ModelOp::Reopen => {
                    drop(s);
                    s = open(&dir);
                }
            }
            prop_assert_eq!(s.revision().unwrap(), rev);
        }
        // A watch started at 0 after all the reopens replays the whole history.
        let replay = s.watch("", 0).unwrap();
        let replayed = summary(&take(&replay, expected_events.len()));
        prop_assert_eq!(&replayed, &expected_events);
        // The first watch saw the changes made before its store was dropped, as a prefix.
        let live: Vec<_> = std::iter::from_fn(|| w.try_next().unwrap()).collect();
        prop_assert_eq!(&summary(&live)[..], &expected_events[..live.len()]);
    }
}
