//! Application hooks (DESIGN.md capability C7): a workload is told before a
//! checkpoint (to flush) and after a restore (to refresh what it caches, or to
//! know it may skip its initialisation), with a timeout so a silent workload
//! cannot stall a checkpoint.
//!
//! # Who listens
//!
//! A connection from a workload to something outside its process tree cannot
//! be checkpointed, so the workload never holds a connection to the agent.
//! Instead **the workload listens**: the supervisor passes
//! `STASIS_HOOKS_SOCKET=<path>` (a path in the workload's own filesystem view),
//! the workload binds a unix stream listening socket there (removing a stale
//! socket file first) and serves each incoming connection to completion, then
//! closes it. The supervisor connects once per event (from the host it may use
//! `/proc/<pid>/root/<path>`), sends one request line, reads one reply line and
//! closes. Between events nothing is connected, so the listener is checkpointed
//! and restored like any other socket.
//!
//! # Protocol v1
//!
//! Text lines, UTF-8, each terminated by `\n` (one trailing `\r` is tolerated),
//! at most 4096 bytes including the `\n`; one request and one reply per
//! connection.
//!
//! ```text
//! supervisor -> workload:  STASIS/1 <EVENT> <id>
//! workload -> supervisor:  OK <id>
//!                      or  FAIL <id> <reason>
//! ```
//!
//! * `EVENT` is `PRE-CHECKPOINT` or `POST-RESTORE`; `id` is a decimal token
//!   (1–20 digits, fits in a u64) echoed in the reply; tokens are separated by
//!   exactly one space.
//! * `reason` is the rest of the line (free text, no control characters).
//! * A workload that does not want an event answers `OK <id>` at once; an
//!   unknown `EVENT` under `STASIS/1` is answered `OK <id>` too (forward
//!   compatibility), another version `FAIL <id> unsupported protocol version`.
//!   A request that cannot be parsed at all is closed without a reply.
//! * The supervisor's timeout (default 5 s, [`DEFAULT_TIMEOUT`]) covers connect
//!   and reply. On timeout, an unreachable socket, a `FAIL` or a bad reply,
//!   [`notify`] returns a typed [`NotifyError`] and the caller decides; the
//!   intended policy is that the checkpoint goes on.
//!
//! The full text is in `PROTOCOL.md` next to this crate's `Cargo.toml`; a
//! header-only C SDK speaking the same protocol is `sdk/c/stasis_hooks.h`.
//!
//! # Workload side
//!
//! ```no_run
//! use stasis_hooks::{Event, Hooks};
//! # fn main() -> Result<(), stasis_hooks::HooksError> {
//! if let Some(hooks) = Hooks::from_env()? {
//!     hooks.serve(|event| match event {
//!         Event::PreCheckpoint => Ok(()),  // flush buffers here
//!         Event::PostRestore => Ok(()),    // reconnect / refresh caches here
//!     })?;
//!     // later: if hooks.was_restored() { skip initialisation }
//!     # drop(hooks);
//! }
//! # Ok(()) }
//! ```
//!
//! # Supervisor side
//!
//! ```no_run
//! use stasis_hooks::{notify, Event, NotifyError, DEFAULT_TIMEOUT};
//! # let pid = 1;
//! let path = std::path::PathBuf::from(format!("/proc/{pid}/root/run/hooks.sock"));
//! match notify(&path, Event::PreCheckpoint, DEFAULT_TIMEOUT) {
//!     Ok(()) => {}
//!     Err(e) => tracing::warn!(error = %e, "pre-checkpoint hook failed; checkpointing anyway"),
//! }
//! ```

mod io;
pub mod protocol;
mod supervisor;
mod workload;

pub use protocol::{Event, Reply, Request, MAX_LINE, PROTOCOL_VERSION};
pub use supervisor::{notify, notify_with_id, NotifyError, DEFAULT_TIMEOUT};
pub use workload::{Hooks, HooksError, ENV_SOCKET, SERVER_IO_TIMEOUT};
