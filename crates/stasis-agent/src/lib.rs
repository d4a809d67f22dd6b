//! # stasis-agent: the node agent
//!
//! The agent owns a node's workloads: it runs each as a partition, takes its consistency
//! images, notices when it fails and brings it back — from its latest image, or from its boot
//! command when the image itself looks like the problem (DESIGN.md C7–C11).
//!
//! ## Layout (growing)
//! - [`duration`]: durations as operators write them (`500ms`, `2s`, `1m`).
//! - [`policy`]: the HA restart policy — pure decisions, tested on their own.

pub mod duration;
pub mod policy;
pub mod probe;
