//! Stasis cluster state: the shared store every node agent reads and writes.
//!
//! # Layout
//!
//! - [`store`]: the [`Store`] trait — an etcd-shaped key/value store with store-wide
//!   revisions, all-or-nothing compare-and-swap transactions and resumable watches. Every piece
//!   of replicated state (membership, primary, placements, fencing epochs, the mobility table,
//!   the event log) is written through it, so one node and a cluster run the same logic.
//! - [`embedded`]: [`EmbeddedStore`], the one-node backend in a single redb file, no server.
//!   An etcd backend implementing the same trait comes later for several nodes.
//! - [`events`]: [`EventLog`], the ordered, gap-free lifecycle event log (DESIGN C11) built on
//!   any [`Store`]: contiguous sequence numbers, read-since and follow-from-sequence.

pub mod embedded;
pub mod events;
pub mod store;

pub use embedded::{EmbeddedStore, Options};
pub use events::{Event, EventLog, EventLogError, Follow};

pub use store::{
    CmpOp, Compare, Entry, Op, Store, StoreError, Txn, TxnResult, Watch, WatchEvent, WatchEventKind,
};
