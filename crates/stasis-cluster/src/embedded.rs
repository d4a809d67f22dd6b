//! [`EmbeddedStore`]: the one-node [`Store`] backend in a single redb file.
//!
//! # Mechanism
//!
//! The file (redb: copy-on-write B+trees, ACID, crash-safe) holds three tables:
//!
//! | table     | key                          | value                          |
//! |-----------|------------------------------|--------------------------------|
//! | `kv`      | key (`&str`)                 | (revision `u64`, value bytes)  |
//! | `changes` | (revision `u64`, index `u32`)| (kind `u8`: 0 put / 1 delete, key, value) |
//! | `meta`    | `"revision"`, `"compacted"`  | `u64`                          |
//!
//! Every write — `put`, `delete`, `txn` — is one redb write transaction: evaluate the compares
//! on the `kv` table, apply the chosen ops stamped with `revision + 1`, append one `changes` row
//! per changed key, bump `meta.revision`, and commit. redb commits with `Durability::Immediate`
//! (fsync before `commit` returns), so a write is durable when the call returns and a reopened
//! file sees exactly the committed writes. A transaction that changes nothing is aborted and
//! leaves the revision as it was.
//!
//! `changes` is the bounded history watchers replay from: after each commit rows older than
//! [`Options::log_capacity`] revisions are removed and `meta.compacted` records the newest
//! discarded revision; a watch from before it fails with [`StoreError::Compacted`].
//!
//! Writers are serialised by one mutex (redb would serialise them anyway) that is held across
//! commit *and* delivery to the in-process watchers, so watchers see commits in revision order.
//! [`Store::watch`] takes the same mutex while it replays `changes` and registers its channel,
//! so there is neither a gap nor a duplicate between replayed and live events. Readers
//! (`get`, `list`, `revision`) use redb read transactions (MVCC snapshots) and never block.
//!
//! Watches are in-process only: another process opening the same file would not feed them, so
//! one process owns the file (redb refuses a second open of the same file in one process).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::{debug, trace};

use crate::store::{
    check_key, check_txn, Entry, Op, Store, StoreError, Txn, TxnResult, Watch, WatchEvent,
    WatchEventKind, WatchSender,
};

const KV: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("kv");
const CHANGES: TableDefinition<(u64, u32), (u8, &str, &[u8])> = TableDefinition::new("changes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;

/// Tuning of an [`EmbeddedStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How many of the latest revisions keep their changes for watch replay (at least 1).
    pub log_capacity: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log_capacity: 10_000,
        }
    }
}

/// A registered watcher: its prefix, the revision it has been fed up to, and its channel.
struct Watcher {
    prefix: String,
    after: u64,
    tx: WatchSender,
}

/// The embedded, one-file [`Store`]. Share it between threads with `Arc`.
pub struct EmbeddedStore {
    db: Database,
    path: PathBuf,
    log_capacity: u64,
    /// Held by every writer across commit and delivery, and by `watch` while it registers.
    writer: Mutex<Vec<Watcher>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("log_capacity", &self.log_capacity)
            .finish_non_exhaustive()
    }
}

/// Maps any redb error to [`StoreError::Backend`] for operation `op`.
fn backend<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::backend(op, e.into())
}

impl EmbeddedStore {
    /// Opens the store in `path`, creating the file if it does not exist.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] (`op = "open"`) if the file cannot be created, opened or is
    /// already open in this process.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Options::default())
    }

    /// Opens the store in `path` with explicit [`Options`].
    ///
    /// # Errors
    ///
    /// As [`EmbeddedStore::open`].
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Self, StoreError> {
        const OP: &str = "open";
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path).map_err(backend(OP))?;
        // Create the tables once so read transactions can always open them.
        let wtx = db.begin_write().map_err(backend(OP))?;
        let revision = {
            wtx.open_table(KV).map_err(backend(OP))?;
            wtx.open_table(CHANGES).map_err(backend(OP))?;
            let meta = wtx.open_table(META).map_err(backend(OP))?;
            let revision = meta.get(META_REVISION).map_err(backend(OP))?;
            revision.map_or(0, |g| g.value())
        };
        wtx.commit().map_err(backend(OP))?;
        debug!(path = %path.display(), revision, "opened embedded store");
        Ok(EmbeddedStore {
            db,
            path,
            log_capacity: options.log_capacity.max(1),
            writer: Mutex::new(Vec::new()),
        })
    }

    /// The file backing the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest revision whose changes have been discarded from the watch history (0: none).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the file cannot be read.
    pub fn compacted_revision(&self) -> Result<u64, StoreError> {
        self.read_meta("compacted_revision", META_COMPACTED)
    }

    fn lock_writer(&self) -> MutexGuard<'_, Vec<Watcher>> {
        // A panicking writer leaves its redb transaction uncommitted and the watcher list
        // intact, so the poisoned state is still consistent.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_meta(&self, op: &'static str, name: &str) -> Result<u64, StoreError> {
        let rtx = self.db.begin_read().map_err(backend(op))?;
        let meta = rtx.open_table(META).map_err(backend(op))?;
        let value = meta.get(name).map_err(backend(op))?;
        Ok(value.map_or(0, |g| g.value()))
    }

    /// Runs `txn` as one redb write transaction and delivers its changes to the watchers;
    /// also returns whether anything changed.
    fn write(&self, op: &'static str, txn: &Txn) -> Result<(TxnResult, bool), StoreError> {
        check_txn(txn)?;
        let mut watchers = self.lock_writer();
        let wtx = self.db.begin_write().map_err(backend(op))?;
        let (result, events) = {
            let mut kv = wtx.open_table(KV).map_err(backend(op))?;
            let mut meta = wtx.open_table(META).map_err(backend(op))?;
            let current = meta
                .get(META_REVISION)
                .map_err(backend(op))?
                .map_or(0, |g| g.value());
            let mut succeeded = true;
            for compare in &txn.compares {
                let entry = kv.get(compare.key()).map_err(backend(op))?.map(|g| {
                    let (revision, value) = g.value();
                    Entry {
                        key: compare.key().to_owned(),
                        value: value.to_vec(),
                        revision,
                    }
                });
                if !compare.holds(entry.as_ref()) {
                    succeeded = false;
                    break;
                }
            }
            let ops = if succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            let revision = current + 1;
            let mut events = Vec::new();
            for o in ops {
                match o {
                    Op::Put(key, value) => {
                        kv.insert(key.as_str(), (revision, value.as_slice()))
                            .map_err(backend(op))?;
                        events.push(event(WatchEventKind::Put, key, value.clone(), revision));
                    }
                    Op::Delete(key) => {
                        if kv.remove(key.as_str()).map_err(backend(op))?.is_some() {
                            events.push(event(WatchEventKind::Delete, key, Vec::new(), revision));
                        }
                    }
                }
            }
            if events.is_empty() {
                (
                    TxnResult {
                        succeeded,
                        revision: current,
                    },
                    events,
                )
            } else {
                meta.insert(META_REVISION, revision).map_err(backend(op))?;
                let mut changes = wtx.open_table(CHANGES).map_err(backend(op))?;
                for (index, ev) in (0u32..).zip(&events) {
                    let kind = match ev.kind {
                        WatchEventKind::Put => KIND_PUT,
                        WatchEventKind::Delete => KIND_DELETE,
                    };
                    changes
                        .insert(
                            (revision, index),
                            (kind, ev.entry.key.as_str(), ev.entry.value.as_slice()),
                        )
                        .map_err(backend(op))?;
                }
                let compacted = meta
                    .get(META_COMPACTED)
                    .map_err(backend(op))?
                    .map_or(0, |g| g.value());
                let cut = revision.saturating_sub(self.log_capacity);
                if cut > compacted {
                    changes
                        .retain_in(..=(cut, u32::MAX), |_, _| false)
                        .map_err(backend(op))?;
                    meta.insert(META_COMPACTED, cut).map_err(backend(op))?;
                    trace!(compacted = cut, "trimmed watch history");
                }
                (
                    TxnResult {
                        succeeded,
                        revision,
                    },
                    events,
                )
            }
        };
        if events.is_empty() {
            wtx.abort().map_err(backend(op))?;
            return Ok((result, false));
        }
        wtx.commit().map_err(backend(op))?;
        trace!(
            op,
            revision = result.revision,
            changes = events.len(),
            "committed"
        );
        deliver(&mut watchers, &events);
        Ok((result, true))
    }
}

fn event(kind: WatchEventKind, key: &str, value: Vec<u8>, revision: u64) -> WatchEvent {
    WatchEvent {
        kind,
        entry: Entry {
            key: key.to_owned(),
            value,
            revision,
        },
        revision,
    }
}

/// Sends each event to every watcher whose prefix matches and that has not seen it; drops
/// watchers whose receiving end is gone.
fn deliver(watchers: &mut Vec<Watcher>, events: &[WatchEvent]) {
    watchers.retain_mut(|w| {
        for ev in events {
            if ev.revision <= w.after || !ev.entry.key.starts_with(&w.prefix) {
                continue;
            }
            if w.tx.send(Ok(ev.clone())).is_err() {
                trace!(prefix = %w.prefix, "watcher gone");
                return false;
            }
        }
        true
    });
}

impl Store for EmbeddedStore {
    fn revision(&self) -> Result<u64, StoreError> {
        self.read_meta("revision", META_REVISION)
    }

    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        const OP: &str = "get";
        let rtx = self.db.begin_read().map_err(backend(OP))?;
        let kv = rtx.open_table(KV).map_err(backend(OP))?;
        let found = kv.get(key).map_err(backend(OP))?;
        Ok(found.map(|g| {
            let (revision, value) = g.value();
            Entry {
                key: key.to_owned(),
                value: value.to_vec(),
                revision,
            }
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        const OP: &str = "list";
        let rtx = self.db.begin_read().map_err(backend(OP))?;
        let kv = rtx.open_table(KV).map_err(backend(OP))?;
        let mut out = Vec::new();
        for item in kv.range(prefix..).map_err(backend(OP))? {
            let (k, v) = item.map_err(backend(OP))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let (revision, value) = v.value();
            out.push(Entry {
                key: key.to_owned(),
                value: value.to_vec(),
                revision,
            });
        }
        Ok(out)
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        check_key(key)?;
        let txn = Txn {
            success: vec![Op::Put(key.to_owned(), value.to_vec())],
            ..Txn::default()
        };
        Ok(self.write("put", &txn)?.0.revision)
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let txn = Txn {
            success: vec![Op::Delete(key.to_owned())],
            ..Txn::default()
        };
        Ok(self.write("delete", &txn)?.1)
    }

    fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        Ok(self.write("txn", &txn)?.0)
    }

    fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError> {
        const OP: &str = "watch";
        let mut watchers = self.lock_writer();
        let rtx = self.db.begin_read().map_err(backend(OP))?;
        let meta = rtx.open_table(META).map_err(backend(OP))?;
        let compacted = meta
            .get(META_COMPACTED)
            .map_err(backend(OP))?
            .map_or(0, |g| g.value());
        let current = meta
            .get(META_REVISION)
            .map_err(backend(OP))?
            .map_or(0, |g| g.value());
        if from_revision < compacted {
            return Err(StoreError::Compacted {
                requested: from_revision,
                compacted,
            });
        }
        let (tx, watch) = Watch::channel();
        let changes = rtx.open_table(CHANGES).map_err(backend(OP))?;
        let mut replayed = 0usize;
        for item in changes
            .range((from_revision.saturating_add(1), 0)..)
            .map_err(backend(OP))?
        {
            let (k, v) = item.map_err(backend(OP))?;
            let (revision, _) = k.value();
            let (kind, key, value) = v.value();
            if !key.starts_with(prefix) {
                continue;
            }
            let kind = match kind {
                KIND_PUT => WatchEventKind::Put,
                KIND_DELETE => WatchEventKind::Delete,
                other => {
                    return Err(StoreError::Corrupt {
                        what: format!("change at revision {revision} has kind {other}"),
                    })
                }
            };
            // The receiver is in `watch`, still owned here: sending cannot fail.
            let _ = tx.send(Ok(event(kind, key, value.to_vec(), revision)));
            replayed += 1;
        }
        debug!(prefix, from_revision, current, replayed, "watch registered");
        watchers.push(Watcher {
            prefix: prefix.to_owned(),
            after: from_revision.max(current),
            tx,
        });
        Ok(watch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path().join("state.redb")).expect("open");
        (dir, store)
    }

    #[test]
    fn empty_store_has_revision_zero_and_no_keys() {
        let (_dir, s) = store();
        assert_eq!(s.revision().unwrap(), 0);
        assert_eq!(s.get("a").unwrap(), None);
        assert!(s.list("").unwrap().is_empty());
    }

    #[test]
    fn put_get_overwrite() {
        let (_dir, s) = store();
        assert_eq!(s.put("nodes/n1", b"up").unwrap(), 1);
        assert_eq!(s.put("nodes/n2", b"up").unwrap(), 2);
        assert_eq!(s.put("nodes/n1", b"down").unwrap(), 3);
        let e = s.get("nodes/n1").unwrap().unwrap();
        assert_eq!(
            e,
            Entry {
                key: "nodes/n1".into(),
                value: b"down".to_vec(),
                revision: 3
            }
        );
        assert_eq!(s.get("nodes/n2").unwrap().unwrap().revision, 2);
        assert_eq!(s.revision().unwrap(), 3);
    }

    #[test]
    fn empty_key_is_refused() {
        let (_dir, s) = store();
        assert!(matches!(
            s.put("", b"x"),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(s.delete(""), Err(StoreError::InvalidKey { .. })));
        assert_eq!(s.revision().unwrap(), 0);
    }

    #[test]
    fn list_is_sorted_and_bounded_by_prefix() {
        let (_dir, s) = store();
        for k in ["b/2", "a/1", "b/1", "b0", "c", "b/10"] {
            s.put(k, k.as_bytes()).unwrap();
        }
        let keys: Vec<_> = s.list("b/").unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["b/1", "b/10", "b/2"]);
        let all: Vec<_> = s.list("").unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(all, ["a/1", "b/1", "b/10", "b/2", "b0", "c"]);
        assert!(s.list("zz").unwrap().is_empty());
    }

    #[test]
    fn delete_reports_existence_and_only_advances_on_change() {
        let (_dir, s) = store();
        s.put("k", b"v").unwrap();
        assert!(s.delete("k").unwrap());
        assert_eq!(s.revision().unwrap(), 2);
        assert!(!s.delete("k").unwrap());
        assert_eq!(s.revision().unwrap(), 2);
        assert_eq!(s.get("k").unwrap(), None);
    }

    #[test]
    fn history_is_trimmed_to_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open_with(dir.path().join("s.redb"), Options { log_capacity: 3 })
            .unwrap();
        for i in 0..10u8 {
            s.put("k", &[i]).unwrap();
        }
        assert_eq!(s.compacted_revision().unwrap(), 7);
        assert!(matches!(
            s.watch("", 6),
            Err(StoreError::Compacted {
                requested: 6,
                compacted: 7
            })
        ));
        let w = s.watch("", 7).unwrap();
        let revs: Vec<_> = std::iter::from_fn(|| w.try_next().unwrap())
            .map(|e| e.revision)
            .collect();
        assert_eq!(revs, [8, 9, 10]);
    }
}
