//! The [`Store`] trait: an etcd-shaped, revisioned key/value store.
//!
//! # Model
//!
//! - Keys are UTF-8 strings organised by `/`-separated prefixes (`nodes/n1`,
//!   `events/e/00000000000000000007`); values are opaque bytes.
//! - The store has one **revision** counter (a `u64`, starting at 0 for an empty store). Every
//!   committed write — a [`Store::put`], a [`Store::delete`] that removed something, or a
//!   [`Store::txn`] whose chosen branch changed something — increments it by exactly one, and
//!   every key it touched records that revision as its [`Entry::revision`] (etcd's
//!   `mod_revision`). A transaction is one revision however many keys it changes; a write that
//!   changes nothing (deleting an absent key) does not advance the revision.
//! - [`Store::txn`] is etcd's `Txn`: all [`Compare`]s are evaluated against one consistent
//!   state; if all hold the `success` ops are applied, otherwise the `failure` ops, and either
//!   way atomically and durably. Comparing a key's revision with 0 tests that it is absent.
//!   This is the primitive for compare-and-swap, locks, fencing epochs ("writes carry the epoch
//!   and stale ones are rejected by the store") and for keeping replicated state all-or-nothing.
//!   A transaction may touch a key at most once ([`StoreError::DuplicateKey`]), as in etcd.
//! - [`Store::watch`] streams every change under a prefix with a revision greater than the one
//!   given, in revision order, first replaying the changes the backend still remembers and then
//!   live ones. A watcher asking for history the backend has already discarded gets
//!   [`StoreError::Compacted`] and must re-read the state with [`Store::list`] and watch from
//!   [`Store::revision`]. A stream that ends (or yields an error) is no longer a complete view:
//!   per DESIGN §1 a cached view is valid only while its watch has been continuously healthy.
//!
//! # Left out
//!
//! Leases (keys that vanish when their owner stops refreshing them) are not part of this trait
//! yet: they only make sense with several nodes and belong to the etcd backend, where membership
//! and the primary's campaign key will use them.

use std::error::Error as StdError;
use std::sync::mpsc;
use std::time::Duration;

/// A key with its value and the revision at which it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full key.
    pub key: String,
    /// The value bytes (empty in a [`WatchEventKind::Delete`] event).
    pub value: Vec<u8>,
    /// The store revision of the write that produced this value (etcd's `mod_revision`).
    pub revision: u64,
}

/// How a key's revision is compared in [`Compare::Revision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// The key's revision equals the given one (0: the key is absent).
    Equal,
    /// The key's revision is lower than the given one (an absent key has revision 0).
    Less,
    /// The key's revision is greater than the given one (`Greater, 0`: the key exists).
    Greater,
}

/// One condition of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// Compare the key's last-write revision; an absent key has revision 0.
    Revision(String, CmpOp, u64),
    /// The key exists and its value equals these bytes (an absent key never matches).
    Value(String, Vec<u8>),
}

impl Compare {
    /// The key is absent.
    pub fn absent(key: impl Into<String>) -> Self {
        Compare::Revision(key.into(), CmpOp::Equal, 0)
    }

    /// The key was last written at exactly `revision` (unchanged since it was read).
    pub fn unchanged(key: impl Into<String>, revision: u64) -> Self {
        Compare::Revision(key.into(), CmpOp::Equal, revision)
    }

    /// The key the condition is about.
    pub fn key(&self) -> &str {
        match self {
            Compare::Revision(key, _, _) | Compare::Value(key, _) => key,
        }
    }

    /// Evaluates the condition against the key's current state.
    pub fn holds(&self, current: Option<&Entry>) -> bool {
        match self {
            Compare::Revision(_, op, rev) => {
                let have = current.map_or(0, |e| e.revision);
                match op {
                    CmpOp::Equal => have == *rev,
                    CmpOp::Less => have < *rev,
                    CmpOp::Greater => have > *rev,
                }
            }
            Compare::Value(_, want) => current.is_some_and(|e| &e.value == want),
        }
    }
}

/// One write inside a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set the key to the value.
    Put(String, Vec<u8>),
    /// Remove the key (no change if it is absent).
    Delete(String),
}

impl Op {
    /// The key the op writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put(key, _) | Op::Delete(key) => key,
        }
    }
}

/// An all-or-nothing conditional write: `if all(compares) { success } else { failure }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all evaluated against the same state.
    pub compares: Vec<Compare>,
    /// Ops applied when every compare holds.
    pub success: Vec<Op>,
    /// Ops applied when any compare fails.
    pub failure: Vec<Op>,
}

/// Outcome of [`Store::txn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every compare held (the `success` branch ran).
    pub succeeded: bool,
    /// The store revision after the transaction (unchanged if the branch changed nothing).
    pub revision: u64,
}

/// What happened to a key in a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change delivered by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: WatchEventKind,
    /// The key and its new value (empty value for a delete); `entry.revision == revision`.
    pub entry: Entry,
    /// The revision of the write that made the change.
    pub revision: u64,
}

/// Errors of every [`Store`] operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, connection); `op` names the store operation.
    #[error("store backend failed during {op}")]
    Backend {
        /// The store operation, e.g. `"put"` or `"open"`.
        op: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn StdError + Send + Sync + 'static>,
    },
    /// A watch asked for changes the backend no longer keeps.
    #[error("watch from revision {requested} is compacted: history is kept only after revision {compacted}")]
    Compacted {
        /// The `from_revision` asked for.
        requested: u64,
        /// Every change with a revision up to and including this one has been discarded.
        compacted: u64,
    },
    /// A transaction wrote the same key twice.
    #[error("transaction touches key {key:?} more than once")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// The key is not acceptable (empty).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key given.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Stored data could not be decoded.
    #[error("store data is corrupt: {what}")]
    Corrupt {
        /// What was found.
        what: String,
    },
}

impl StoreError {
    /// Wraps a backend error for operation `op`.
    pub fn backend(op: &'static str, source: impl StdError + Send + Sync + 'static) -> Self {
        StoreError::Backend {
            op,
            source: Box::new(source),
        }
    }
}

/// A stream of [`WatchEvent`]s in revision order.
///
/// Iterating blocks until the next change. The stream ends (`None`) when the store is dropped;
/// an `Err` item means the watch broke and no further events follow. Either way the watcher's
/// view is no longer complete: re-read with [`Store::list`] and watch again.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchEvent, StoreError>>,
}

/// The sending half a backend feeds a [`Watch`] through.
pub(crate) type WatchSender = mpsc::Sender<Result<WatchEvent, StoreError>>;

impl Watch {
    /// A new watch and the sender that feeds it.
    pub(crate) fn channel() -> (WatchSender, Watch) {
        let (tx, rx) = mpsc::channel();
        (tx, Watch { rx })
    }

    /// Waits up to `timeout` for the next event; `Ok(None)` on timeout.
    ///
    /// # Errors
    ///
    /// The error the watch broke with; a stream ended by the store being dropped is reported
    /// as `Ok(None)` forever after, so callers that need to tell use [`Iterator::next`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<WatchEvent>, StoreError> {
        match self.rx.recv_timeout(timeout) {
            Ok(item) => item.map(Some),
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => Ok(None),
        }
    }

    /// The next event if one is already queued.
    ///
    /// # Errors
    ///
    /// The error the watch broke with.
    pub fn try_next(&self) -> Result<Option<WatchEvent>, StoreError> {
        match self.rx.try_recv() {
            Ok(item) => item.map(Some),
            Err(mpsc::TryRecvError::Empty | mpsc::TryRecvError::Disconnected) => Ok(None),
        }
    }
}

impl Iterator for Watch {
    type Item = Result<WatchEvent, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

/// An etcd-shaped key/value store (see the module doc for the model).
///
/// Implementations are shared between threads (`Arc<dyn Store>`); every method is atomic on
/// its own and durable when it returns `Ok`.
pub trait Store: Send + Sync {
    /// The current store revision (0 for a store never written).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the backend cannot be read.
    fn revision(&self) -> Result<u64, StoreError>;

    /// The key's current value and revision, `None` if absent.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the backend cannot be read.
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Every key starting with `prefix` (`""`: all keys), sorted by key, from one consistent
    /// state.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the backend cannot be read.
    fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError>;

    /// Sets the key; returns the new store revision, which the key now carries.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidKey`] for an empty key, [`StoreError::Backend`] on failure (nothing
    /// is written then).
    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError>;

    /// Removes the key; `true` if it existed (and the revision advanced).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidKey`] for an empty key, [`StoreError::Backend`] on failure.
    fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Runs the transaction atomically (see [`Txn`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::DuplicateKey`] if a branch writes one key twice, [`StoreError::InvalidKey`]
    /// for an empty key, [`StoreError::Backend`] on failure; nothing is written on error.
    fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;

    /// Streams every change under `prefix` with a revision greater than `from_revision`, in
    /// revision order: first the remembered history, then live changes, without gaps or
    /// duplicates. Pass the revision of the state you last read (e.g. [`Store::revision`]
    /// before a [`Store::list`]) to miss nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError::Compacted`] if changes after `from_revision` have been discarded;
    /// [`StoreError::Backend`] if the history cannot be read.
    fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError>;
}

/// Refuses keys a backend cannot store (the empty key).
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: "keys must not be empty",
        });
    }
    Ok(())
}

/// Validates a transaction: non-empty keys, no key written twice in one branch.
pub(crate) fn check_txn(txn: &Txn) -> Result<(), StoreError> {
    for c in &txn.compares {
        check_key(c.key())?;
    }
    for branch in [&txn.success, &txn.failure] {
        let mut seen = std::collections::BTreeSet::new();
        for op in branch {
            check_key(op.key())?;
            if !seen.insert(op.key()) {
                return Err(StoreError::DuplicateKey {
                    key: op.key().to_owned(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rev: u64, value: &[u8]) -> Entry {
        Entry {
            key: "k".into(),
            value: value.to_vec(),
            revision: rev,
        }
    }

    #[test]
    fn compare_revision_treats_absent_as_zero() {
        assert!(Compare::absent("k").holds(None));
        assert!(!Compare::absent("k").holds(Some(&entry(3, b"v"))));
        assert!(Compare::Revision("k".into(), CmpOp::Greater, 0).holds(Some(&entry(1, b""))));
        assert!(Compare::Revision("k".into(), CmpOp::Less, 5).holds(None));
        assert!(!Compare::Revision("k".into(), CmpOp::Less, 3).holds(Some(&entry(3, b""))));
        assert!(Compare::unchanged("k", 3).holds(Some(&entry(3, b""))));
    }

    #[test]
    fn compare_value_never_matches_absent() {
        assert!(!Compare::Value("k".into(), Vec::new()).holds(None));
        assert!(Compare::Value("k".into(), b"v".to_vec()).holds(Some(&entry(1, b"v"))));
        assert!(!Compare::Value("k".into(), b"w".to_vec()).holds(Some(&entry(1, b"v"))));
    }

    #[test]
    fn check_txn_rejects_duplicates_and_empty_keys() {
        let dup = Txn {
            success: vec![Op::Put("a".into(), vec![]), Op::Delete("a".into())],
            ..Txn::default()
        };
        assert!(matches!(check_txn(&dup), Err(StoreError::DuplicateKey { key }) if key == "a"));
        let empty = Txn {
            compares: vec![Compare::absent("")],
            ..Txn::default()
        };
        assert!(matches!(
            check_txn(&empty),
            Err(StoreError::InvalidKey { .. })
        ));
        // The same key in both branches is fine: only one branch runs.
        let both = Txn {
            success: vec![Op::Put("a".into(), vec![])],
            failure: vec![Op::Delete("a".into())],
            ..Txn::default()
        };
        assert!(check_txn(&both).is_ok());
    }
}
