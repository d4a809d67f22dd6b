//! # stasis-partition: workloads in their own namespaces and cgroup
//!
//! A partition is a process tree started by `stasis run` as the first process (pid 1) of new
//! pid, ipc, uts and mount namespaces (optionally a network namespace), with its own devpts
//! instance and a cgroup that carries its limits and accounting. It is the unit that is frozen,
//! measured, checkpointed whole and moved.
//!
//! ## Layout
//! - [`state`]: the root directory, partition records, locking.
//! - [`cgroup`]: cgroup hierarchies (v1 and v2) behind one backend trait: create, attach,
//!   freeze, limits, statistics.
//! - [`setup`]: building the namespaces from inside (mounts, devpts, hostname, network).
//! - [`monitor`]: the per-partition monitor (starts the first process, pumps its output,
//!   samples accounting, records how it ended).
//! - [`accounting`]: totals across incarnations and the sampled history.
//! - [`mounts`]: the partition's private mounts (tmpfs with their content) — dump and restore.
//! - [`image`]: `partition.img`, the partition's records in an image.
//! - [`checkpoint`], [`restore`]: a whole partition through the engine.
//! - [`helper`]: the one protocol between stasis processes (requests, progress, typed
//!   results and errors, cancellation).
//! - [`ops`]: the verbs (`run`, `ps`, `stop`, `rm`, `stats`, restore into a partition).

pub mod accounting;
pub mod cgroup;
pub mod checkpoint;
pub mod helper;
pub mod image;
pub mod monitor;
pub mod mounts;
pub mod ops;
pub mod restore;
pub mod setup;
pub mod state;
