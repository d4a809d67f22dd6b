//! Supervisor side: connect, send one request, read one reply, close.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::io::{read_line, with_short_path, write_line, LineError};
use crate::protocol::{parse_reply, Event, Reply, Request};

/// Default bound on connect + reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a notification did not end in `OK`. The caller decides what to do;
/// the intended policy is that a checkpoint goes on regardless.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// Nothing listens at the path (no file, stale socket, permission...):
    /// the workload has not enabled hooks or is gone.
    #[error("hooks socket {path} unreachable")]
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// No reply within the timeout (connect included).
    #[error("no reply from workload within {after:?}")]
    Timeout {
        /// The timeout that expired.
        after: Duration,
    },
    /// The workload answered `FAIL` with this reason.
    #[error("workload refused the event: {0}")]
    Refused(String),
    /// The workload answered something that is not a valid v1 reply to this
    /// request (wrong id, garbage, closed without a reply...).
    #[error("hooks protocol error: {0}")]
    Protocol(String),
    /// An I/O error after the connection was established.
    #[error("hooks connection failed")]
    Io(#[source] io::Error),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Tell the workload listening at `path` about `event` and wait for its
/// reply, all within `timeout`. A fresh id is allocated per call.
pub fn notify(path: &Path, event: Event, timeout: Duration) -> Result<(), NotifyError> {
    notify_with_id(
        path,
        event,
        NEXT_ID.fetch_add(1, Ordering::Relaxed),
        timeout,
    )
}

/// [`notify`] with a caller-chosen request id.
pub fn notify_with_id(
    path: &Path,
    event: Event,
    id: u64,
    timeout: Duration,
) -> Result<(), NotifyError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let request = Request { event, id };
    let result = exchange(path, &request, timeout, deadline);
    match &result {
        Ok(()) => {
            tracing::info!(path = %path.display(), %event, id, elapsed = ?started.elapsed(), "hook acknowledged")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), %event, id, elapsed = ?started.elapsed(), error = %e, "hook not acknowledged")
        }
    }
    result
}

fn exchange(
    path: &Path,
    request: &Request,
    timeout: Duration,
    deadline: Instant,
) -> Result<(), NotifyError> {
    let timed_out = || NotifyError::Timeout { after: timeout };
    let mut stream = connect_until(path, timeout, deadline)?;
    if !write_line(&mut stream, &request.to_line(), deadline).map_err(NotifyError::Io)? {
        return Err(timed_out());
    }
    let line = match read_line(&mut stream, deadline) {
        Ok(line) => line,
        Err(LineError::TimedOut) => return Err(timed_out()),
        Err(LineError::Io(e)) => return Err(NotifyError::Io(e)),
        Err(e) => return Err(NotifyError::Protocol(e.to_string())),
    };
    let reply = parse_reply(&line).map_err(|e| NotifyError::Protocol(e.to_string()))?;
    if reply.id() != request.id {
        return Err(NotifyError::Protocol(format!(
            "reply id {} does not match request id {}",
            reply.id(),
            request.id
        )));
    }
    match reply {
        Reply::Ok { .. } => Ok(()),
        Reply::Fail { reason, .. } => Err(NotifyError::Refused(reason)),
    }
}

/// `connect(2)` on a unix socket normally completes at once (the kernel queues
/// it in the listener's backlog), but blocks while that backlog is full and
/// std offers no connect timeout. It therefore runs on a helper thread; if
/// the deadline passes first, the helper is left to finish (or block) alone
/// and drops its connection when it does.
fn connect_until(
    path: &Path,
    timeout: Duration,
    deadline: Instant,
) -> Result<UnixStream, NotifyError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let target = path.to_path_buf();
    thread::Builder::new()
        .name("stasis-hooks-connect".into())
        .spawn(move || {
            let _ = tx.send(with_short_path(&target, |p| UnixStream::connect(p)));
        })
        .map_err(NotifyError::Io)?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(NotifyError::Unreachable {
            path: path.to_path_buf(),
            source,
        }),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(NotifyError::Timeout { after: timeout }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(NotifyError::Io(io::Error::other(
            "connect thread ended without a result",
        ))),
    }
}
