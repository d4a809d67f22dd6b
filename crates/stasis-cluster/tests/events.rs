//! The event log on the embedded store: concurrent appenders, followers, resume.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stasis_cluster::{EmbeddedStore, EventLog, Store};

const T: Duration = Duration::from_secs(10);

fn store(dir: &tempfile::TempDir) -> Arc<EmbeddedStore> {
    Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).expect("open store"))
}

#[test]
fn four_threads_appending_get_contiguous_unique_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::new(store(&dir), "events");
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| log.append("tick", json!({"thread": t, "i": i})).unwrap())
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for h in handles {
        let mine = h.join().unwrap();
        // Each thread's own appends are ordered.
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
        seqs.extend(mine);
    }
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), 100);
    assert_eq!(unique, (1..=100).collect());
    let stored = log.since(0).unwrap();
    let stored_seqs: Vec<u64> = stored.iter().map(|e| e.seq).collect();
    assert_eq!(stored_seqs, (1..=100).collect::<Vec<u64>>());
    assert_eq!(log.last_seq().unwrap(), 100);
}

#[test]
fn follower_started_at_n_sees_every_later_event_in_order_while_appends_race() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::new(store(&dir), "events");
    for i in 0..10 {
        log.append("before", json!(i)).unwrap();
    }
    let mut follow = log.follow(4).unwrap();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    log.append("during", json!({"thread": t, "i": i})).unwrap();
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    while seen.len() < 86 {
        let event = follow
            .next_timeout(T)
            .unwrap()
            .expect("event within timeout");
        seen.push(event.seq);
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(seen, (5..=90).collect::<Vec<u64>>());
    assert!(follow
        .next_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
}

#[test]
fn subscriber_resumes_from_its_last_seq_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let log = EventLog::new(store(&dir), "events");
        let mut follow = log.follow(0).unwrap();
        log.append("node.joined", json!({"node": "n1"})).unwrap();
        log.append("primary.elected", json!({"node": "n1"}))
            .unwrap();
        let first = follow.next().unwrap().unwrap();
        assert_eq!(first.kind, "node.joined");
        // The subscriber disconnects here, having seen seq 1 only.
        follow.last_seq()
    };
    // The agent restarts and appends more while nobody listens.
    let log = EventLog::new(store(&dir), "events");
    log.append("workload.failed", json!({"id": "w1"})).unwrap();
    let mut follow = log.follow(last).unwrap();
    log.append("workload.restarted", json!({"id": "w1"}))
        .unwrap();
    let kinds: Vec<(u64, String)> = (0..3)
        .map(|_| {
            let e = follow.next_timeout(T).unwrap().unwrap();
            (e.seq, e.kind)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (2, "primary.elected".to_owned()),
            (3, "workload.failed".to_owned()),
            (4, "workload.restarted".to_owned()),
        ]
    );
}

#[test]
fn event_log_works_through_a_trait_object_and_ignores_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = store(&dir);
    let log = EventLog::new(Arc::clone(&store), "events");
    let mut follow = log.follow(0).unwrap();
    store.put("events-other/x", b"not an event").unwrap();
    store.put("nodes/n1", b"up").unwrap();
    assert_eq!(log.append("a", json!(null)).unwrap(), 1);
    let e = follow.next_timeout(T).unwrap().unwrap();
    assert_eq!((e.seq, e.kind.as_str()), (1, "a"));
}
