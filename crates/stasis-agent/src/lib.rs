//! # stasis-agent: the node agent
//!
//! The agent owns a node's workloads: it runs each as a partition, takes its consistency
//! images, notices when it fails and brings it back — from its latest image, or from its boot
//! command when the image itself looks like the problem (DESIGN.md C7–C11).
//!
//! ## Layout (growing)
//! - [`duration`]: durations as operators write them (`500ms`, `2s`, `1m`).
//! - [`policy`]: the HA restart policy — pure decisions, tested on their own.
//! - [`probe`]: health probes (exec, TCP, HTTP) run in the workload's namespaces.
//! - [`repo`]: the image repository (consistency images committed atomically, retention that
//!   never deletes a state before its successor is durable).
//! - [`ffdc`]: first-failure data capture bundles.
//! - [`spec`]: the one validation of a workload spec (API, supervisor and CLI).
//! - [`supervisor`]: consistency images, failure detection and HA restarts of a node's
//!   workloads, FFDC, hooks, hibernation (driven by `tick`).
//! - [`daemon`]: `stasis agent` — the store, the supervisor thread, adoption on restart.
//! - [`api`]: the HTTP API, its event stream and the dashboard.
//! - [`auth`]: who may use the API (peer credentials, token, sessions, Host/Origin checks).
//! - [`tls`]: TLS for the TCP listener, certificate pinning for clients.
//! - [`nodes`]: trusted nodes (mutual trust, pinned certificates, image keys, node credentials).
//! - [`stream`]: event streams served asynchronously, with a cap.
//! - [`client`]: a blocking client of the API (the CLI's way in).

pub mod api;
pub mod auth;
pub mod client;
pub mod daemon;
pub mod duration;
pub mod ffdc;
pub mod logfile;
pub mod nodes;
pub mod policy;
pub mod probe;
pub mod repo;
pub mod spec;
pub mod stream;
pub mod supervisor;
pub mod tls;

/// Milliseconds since the Unix epoch (the agent's timestamps: images, FFDC, history, events).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
