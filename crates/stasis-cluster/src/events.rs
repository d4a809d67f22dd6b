//! [`EventLog`]: an ordered, gap-free lifecycle event log on any [`Store`] (DESIGN C11).
//!
//! # Mechanism
//!
//! Under a prefix `P` (e.g. `events`) the log keeps:
//!
//! - `P/head`: the last allocated sequence number, as decimal text (absent: none yet);
//! - `P/e/<seq>`: one event as JSON ([`Event`]), `<seq>` zero-padded to 20 digits so key
//!   order is sequence order.
//!
//! [`EventLog::append`] reads `P/head` with its revision and commits, in one [`Txn`],
//! "if `P/head` still has that revision (0: absent) then set it to `seq + 1` and put
//! `P/e/<seq + 1>`". A concurrent appender that allocated the same number first makes the
//! compare fail; the loser re-reads and retries. So sequence numbers are 1, 2, 3… with no
//! duplicate and no hole, and — because each append is one store revision — seq order is
//! revision order.
//!
//! [`EventLog::follow`] gives every event after a sequence number, then every later one as it
//! is appended: it takes the store revision `R`, starts a watch on `P/e/` from `R`, then reads
//! the backlog with [`EventLog::since`]. Everything committed up to `R` is in the backlog and
//! everything after `R` comes through the watch; the overlap is dropped by sequence number, and
//! a hole would be reported as [`EventLogError::Gap`] rather than skipped. A subscriber that
//! disconnects resumes with `follow(last_seq_seen)` and misses nothing.
//!
//! Not yet: retention (events are kept forever) and a range read, so `since` lists the whole
//! log and filters.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, trace};

use crate::store::{Compare, Op, Store, StoreError, Txn, Watch, WatchEventKind};

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log: 1, 2, 3… without holes.
    pub seq: u64,
    /// What happened, e.g. `"node.joined"`, `"workload.failed"`.
    pub kind: String,
    /// Details, free-form JSON.
    pub payload: serde_json::Value,
    /// Wall-clock time of the append, milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// The underlying store failed.
    #[error("event log store access failed")]
    Store(#[from] StoreError),
    /// The event could not be encoded as JSON.
    #[error("cannot encode event {kind:?}")]
    Encode {
        /// The event kind.
        kind: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored event could not be decoded.
    #[error("cannot decode event at {key:?}")]
    Decode {
        /// The store key.
        key: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The head key holds something other than a sequence number.
    #[error("event log head {key:?} holds {value:?}, not a sequence number")]
    BadHead {
        /// The head key.
        key: String,
        /// Its content, lossily decoded.
        value: String,
    },
    /// An event was missing between two delivered ones.
    #[error("event log gap: expected seq {expected}, found {found}")]
    Gap {
        /// The sequence number due next.
        expected: u64,
        /// The one that came.
        found: u64,
    },
    /// The watch feeding a [`Follow`] ended (store closed); resume with `follow(last_seq)`.
    #[error("event stream ended after seq {last}")]
    Ended {
        /// The last sequence number delivered.
        last: u64,
    },
}

/// An ordered event log stored under one key prefix of a [`Store`].
pub struct EventLog<S: Store + ?Sized> {
    store: Arc<S>,
    head_key: String,
    events_prefix: String,
}

impl<S: Store + ?Sized> std::fmt::Debug for EventLog<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("head_key", &self.head_key)
            .finish_non_exhaustive()
    }
}

impl<S: Store + ?Sized> Clone for EventLog<S> {
    fn clone(&self) -> Self {
        EventLog {
            store: Arc::clone(&self.store),
            head_key: self.head_key.clone(),
            events_prefix: self.events_prefix.clone(),
        }
    }
}

impl<S: Store + ?Sized> EventLog<S> {
    /// The log under `prefix` (e.g. `"events"`; a trailing `/` is ignored).
    pub fn new(store: Arc<S>, prefix: &str) -> Self {
        let prefix = prefix.trim_end_matches('/');
        EventLog {
            store,
            head_key: format!("{prefix}/head"),
            events_prefix: format!("{prefix}/e/"),
        }
    }

    fn event_key(&self, seq: u64) -> String {
        format!("{}{seq:020}", self.events_prefix)
    }

    /// The last sequence number appended (0: none), and the head's revision.
    fn head(&self) -> Result<(u64, u64), EventLogError> {
        let Some(entry) = self.store.get(&self.head_key)? else {
            return Ok((0, 0));
        };
        let seq = std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| EventLogError::BadHead {
                key: self.head_key.clone(),
                value: String::from_utf8_lossy(&entry.value).into_owned(),
            })?;
        Ok((seq, entry.revision))
    }

    /// The last sequence number appended (0: none).
    ///
    /// # Errors
    ///
    /// Store failures; [`EventLogError::BadHead`] if the head is not a number.
    pub fn last_seq(&self) -> Result<u64, EventLogError> {
        Ok(self.head()?.0)
    }

    /// Appends an event and returns its sequence number (the previous one plus 1).
    ///
    /// # Errors
    ///
    /// Store failures (nothing appended), [`EventLogError::Encode`], [`EventLogError::BadHead`].
    pub fn append(&self, kind: &str, payload: serde_json::Value) -> Result<u64, EventLogError> {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut event = Event {
            seq: 0,
            kind: kind.to_owned(),
            payload,
            unix_ms,
        };
        loop {
            let (last, head_rev) = self.head()?;
            event.seq = last + 1;
            let body = serde_json::to_vec(&event).map_err(|source| EventLogError::Encode {
                kind: event.kind.clone(),
                source,
            })?;
            let result = self.store.txn(Txn {
                compares: vec![Compare::unchanged(self.head_key.clone(), head_rev)],
                success: vec![
                    Op::Put(self.head_key.clone(), event.seq.to_string().into_bytes()),
                    Op::Put(self.event_key(event.seq), body),
                ],
                failure: Vec::new(),
            })?;
            if result.succeeded {
                debug!(
                    seq = event.seq,
                    kind,
                    revision = result.revision,
                    "event appended"
                );
                return Ok(event.seq);
            }
            trace!(
                seq = event.seq,
                "event seq taken by a concurrent append, retrying"
            );
        }
    }

    /// Every event with a sequence number greater than `seq`, in order.
    ///
    /// # Errors
    ///
    /// Store failures, [`EventLogError::Decode`].
    pub fn since(&self, seq: u64) -> Result<Vec<Event>, EventLogError> {
        let mut out = Vec::new();
        for entry in self.store.list(&self.events_prefix)? {
            let event = decode(&entry.key, &entry.value)?;
            if event.seq > seq {
                out.push(event);
            }
        }
        Ok(out)
    }

    /// Every event after `seq`, then every later one as it is appended, in order, no gaps.
    ///
    /// # Errors
    ///
    /// Store failures while starting the watch or reading the backlog.
    pub fn follow(&self, seq: u64) -> Result<Follow, EventLogError> {
        let revision = self.store.revision()?;
        let watch = self.store.watch(&self.events_prefix, revision)?;
        let backlog: VecDeque<Event> = self.since(seq)?.into();
        debug!(
            from_seq = seq,
            revision,
            backlog = backlog.len(),
            "following events"
        );
        Ok(Follow {
            backlog,
            watch,
            last: seq,
        })
    }
}

fn decode(key: &str, value: &[u8]) -> Result<Event, EventLogError> {
    serde_json::from_slice(value).map_err(|source| EventLogError::Decode {
        key: key.to_owned(),
        source,
    })
}

/// A live, ordered stream of events from [`EventLog::follow`].
///
/// As an [`Iterator`] it blocks for the next event; after an `Err` item the stream is broken
/// and the subscriber resumes with `follow(`[`Follow::last_seq`]`)`.
#[derive(Debug)]
pub struct Follow {
    backlog: VecDeque<Event>,
    watch: Watch,
    last: u64,
}

impl Follow {
    /// The sequence number of the last event delivered (the `seq` to resume from).
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// Accepts `event` if it is the next one; `None` if already delivered.
    fn accept(&mut self, event: Event) -> Result<Option<Event>, EventLogError> {
        if event.seq <= self.last {
            return Ok(None);
        }
        if event.seq != self.last + 1 {
            return Err(EventLogError::Gap {
                expected: self.last + 1,
                found: event.seq,
            });
        }
        self.last = event.seq;
        Ok(Some(event))
    }

    /// Waits up to `timeout` for the next event; `Ok(None)` on timeout.
    ///
    /// # Errors
    ///
    /// As the iterator's `Err` items.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, EventLogError> {
        let deadline = std::time::Instant::now() + timeout;
        while let Some(event) = self.backlog.pop_front() {
            if let Some(event) = self.accept(event)? {
                return Ok(Some(event));
            }
        }
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Some(change) = self.watch.recv_timeout(left)? else {
                return Ok(None);
            };
            if let Some(event) = self.accept_change(change)? {
                return Ok(Some(event));
            }
        }
    }

    fn accept_change(
        &mut self,
        change: crate::store::WatchEvent,
    ) -> Result<Option<Event>, EventLogError> {
        if change.kind != WatchEventKind::Put {
            return Ok(None);
        }
        let event = decode(&change.entry.key, &change.entry.value)?;
        self.accept(event)
    }
}

impl Iterator for Follow {
    type Item = Result<Event, EventLogError>;

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(event) = self.backlog.pop_front() {
            match self.accept(event) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
        loop {
            let change = match self.watch.next() {
                Some(Ok(change)) => change,
                Some(Err(e)) => return Some(Err(e.into())),
                None => return Some(Err(EventLogError::Ended { last: self.last })),
            };
            match self.accept_change(change) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmbeddedStore;
    use serde_json::json;

    fn log() -> (tempfile::TempDir, EventLog<EmbeddedStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path().join("s.redb")).expect("open"));
        (dir, EventLog::new(store, "events/"))
    }

    #[test]
    fn append_allocates_contiguous_seqs() {
        let (_dir, log) = log();
        assert_eq!(log.last_seq().unwrap(), 0);
        assert_eq!(log.append("node.joined", json!({"node": "n1"})).unwrap(), 1);
        assert_eq!(log.append("node.joined", json!({"node": "n2"})).unwrap(), 2);
        assert_eq!(log.last_seq().unwrap(), 2);
    }

    #[test]
    fn since_returns_later_events_in_order() {
        let (_dir, log) = log();
        for i in 0..12 {
            log.append("tick", json!(i)).unwrap();
        }
        let all = log.since(0).unwrap();
        assert_eq!(all.len(), 12);
        let tail: Vec<_> = log.since(9).unwrap().into_iter().map(|e| e.seq).collect();
        assert_eq!(tail, [10, 11, 12]);
        assert_eq!(all[10].payload, json!(10));
        assert!(log.since(12).unwrap().is_empty());
    }

    #[test]
    fn follow_gives_backlog_then_live_events() {
        let (_dir, log) = log();
        for i in 1..=3 {
            log.append("tick", json!(i)).unwrap();
        }
        let mut follow = log.follow(1).unwrap();
        let t = Duration::from_secs(5);
        assert_eq!(follow.next_timeout(t).unwrap().unwrap().seq, 2);
        assert_eq!(follow.next_timeout(t).unwrap().unwrap().seq, 3);
        assert!(follow
            .next_timeout(Duration::from_millis(20))
            .unwrap()
            .is_none());
        log.append("tick", json!(4)).unwrap();
        let e = follow.next_timeout(t).unwrap().unwrap();
        assert_eq!((e.seq, e.payload), (4, json!(4)));
        assert_eq!(follow.last_seq(), 4);
    }

    #[test]
    fn bad_head_is_reported() {
        let (_dir, log) = log();
        log.store.put("events/head", b"nope").unwrap();
        assert!(matches!(
            log.append("x", json!(null)),
            Err(EventLogError::BadHead { .. })
        ));
    }
}
