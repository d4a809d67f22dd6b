//! Workload side: listen on `$STASIS_HOOKS_SOCKET` and answer events.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::io::{read_line, with_short_path, write_line};
use crate::protocol::{parse_request, truncate_for_log, Event, Reply, RequestError};

/// Name of the environment variable through which the supervisor passes the
/// socket path (in the workload's own filesystem view).
pub const ENV_SOCKET: &str = "STASIS_HOOKS_SOCKET";

/// How long the workload waits for a connected supervisor to send its request
/// line, so a stray client cannot block the hooks thread forever.
pub const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the workload side.
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    /// `STASIS_HOOKS_SOCKET` is set but empty.
    #[error("{ENV_SOCKET} is set but empty")]
    EmptyEnv,
    /// A non-socket file is in the way; it is never removed.
    #[error("{path} exists and is not a socket")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Removing a stale socket file failed.
    #[error("cannot remove stale socket {path}")]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Binding or listening failed.
    #[error("cannot bind hooks socket {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// [`Hooks::serve`] was already called on this value.
    #[error("hooks are already being served")]
    AlreadyServing,
    /// Cloning the listener or spawning the hooks thread failed.
    #[error("cannot start the hooks thread")]
    Spawn(#[source] io::Error),
}

#[derive(Debug, Default)]
struct Counters {
    restores: AtomicU64,
    checkpoints: AtomicU64,
}

/// A bound hooks socket. Call [`Hooks::serve`] to answer events on a
/// background thread; the counters stay readable here.
#[derive(Debug)]
pub struct Hooks {
    listener: UnixListener,
    path: PathBuf,
    serving: AtomicBool,
    counters: Arc<Counters>,
}

impl Hooks {
    /// Bind the path named by `STASIS_HOOKS_SOCKET`; `Ok(None)` when the
    /// variable is unset (the workload is not supervised with hooks).
    pub fn from_env() -> Result<Option<Hooks>, HooksError> {
        match std::env::var_os(ENV_SOCKET) {
            None => {
                tracing::debug!("{ENV_SOCKET} unset: application hooks off");
                Ok(None)
            }
            Some(p) if p.is_empty() => Err(HooksError::EmptyEnv),
            Some(p) => Hooks::bind(PathBuf::from(p)).map(Some),
        }
    }

    /// Bind a listening unix stream socket at `path`. A stale socket file
    /// (left by an earlier run) is removed first; any other file is an error.
    pub fn bind(path: impl AsRef<Path>) -> Result<Hooks, HooksError> {
        let path = path.as_ref().to_path_buf();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => {
                tracing::debug!(path = %path.display(), "removing stale hooks socket");
                std::fs::remove_file(&path).map_err(|source| HooksError::RemoveStale {
                    path: path.clone(),
                    source,
                })?;
            }
            Ok(_) => return Err(HooksError::NotASocket { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(HooksError::Bind { path, source }),
        }
        let listener = with_short_path(&path, |p| UnixListener::bind(p)).map_err(|source| {
            HooksError::Bind {
                path: path.clone(),
                source,
            }
        })?;
        tracing::info!(path = %path.display(), "application hooks socket bound");
        Ok(Hooks {
            listener,
            path,
            serving: AtomicBool::new(false),
            counters: Arc::default(),
        })
    }

    /// The socket path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answer events on a background thread, one connection at a time, each
    /// served to completion then closed. `handler` returning `Err(reason)` makes
    /// the reply `FAIL <id> <reason>`; a panicking handler gives `FAIL` too.
    /// The thread runs for the rest of the process's life.
    pub fn serve<F>(&self, handler: F) -> Result<(), HooksError>
    where
        F: FnMut(Event) -> Result<(), String> + Send + 'static,
    {
        if self.serving.swap(true, Ordering::SeqCst) {
            return Err(HooksError::AlreadyServing);
        }
        let started = self
            .listener
            .try_clone()
            .and_then(|listener| {
                let counters = Arc::clone(&self.counters);
                let path = self.path.clone();
                thread::Builder::new()
                    .name("stasis-hooks".into())
                    .spawn(move || serve_loop(listener, path, counters, handler))
            })
            .map(drop)
            .map_err(HooksError::Spawn);
        if started.is_err() {
            self.serving.store(false, Ordering::SeqCst);
        }
        started
    }

    /// How many `POST-RESTORE` events the handler accepted (returned `Ok`).
    pub fn restore_count(&self) -> u64 {
        self.counters.restores.load(Ordering::SeqCst)
    }

    /// True once at least one `POST-RESTORE` was handled: this process runs
    /// from an image, so one-time initialisation can be skipped.
    pub fn was_restored(&self) -> bool {
        self.restore_count() > 0
    }

    /// How many `PRE-CHECKPOINT` events the handler accepted.
    pub fn checkpoint_count(&self) -> u64 {
        self.counters.checkpoints.load(Ordering::SeqCst)
    }
}

fn serve_loop<F>(listener: UnixListener, path: PathBuf, counters: Arc<Counters>, mut handler: F)
where
    F: FnMut(Event) -> Result<(), String>,
{
    loop {
        match listener.accept() {
            Ok((stream, _)) => serve_one(stream, &counters, &mut handler),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "hooks accept failed");
                // Avoid spinning on a persistent error (e.g. EMFILE).
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_one<F>(mut stream: UnixStream, counters: &Counters, handler: &mut F)
where
    F: FnMut(Event) -> Result<(), String>,
{
    let line = match read_line(&mut stream, Instant::now() + SERVER_IO_TIMEOUT) {
        Ok(line) => line,
        Err(e) => {
            tracing::warn!(error = %e, "hooks: no valid request line; closing");
            return;
        }
    };
    let reply = match parse_request(&line) {
        Ok(req) => {
            tracing::info!(event = %req.event, id = req.id, "hooks: event");
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| handler(req.event)))
                .unwrap_or_else(|_| Err("hook handler panicked".to_owned()));
            match outcome {
                Ok(()) => {
                    let counter = match req.event {
                        Event::PreCheckpoint => &counters.checkpoints,
                        Event::PostRestore => &counters.restores,
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    tracing::debug!(event = %req.event, elapsed = ?started.elapsed(), "hooks: handled");
                    Reply::Ok { id: req.id }
                }
                Err(reason) => {
                    tracing::warn!(event = %req.event, %reason, "hooks: handler failed");
                    Reply::Fail { id: req.id, reason }
                }
            }
        }
        Err(RequestError::UnknownEvent { event, id }) => {
            tracing::debug!(%event, id, "hooks: unknown event acknowledged");
            Reply::Ok { id }
        }
        Err(RequestError::UnsupportedVersion { version, id }) => Reply::Fail {
            id,
            reason: format!(
                "unsupported protocol version {}",
                truncate_for_log(&version)
            ),
        },
        Err(e @ RequestError::Malformed(_)) => {
            tracing::warn!(error = %e, "hooks: closing without reply");
            return;
        }
    };
    match write_line(
        &mut stream,
        &reply.to_line(),
        Instant::now() + SERVER_IO_TIMEOUT,
    ) {
        Ok(true) => {}
        Ok(false) => tracing::warn!("hooks: timed out writing reply"),
        Err(e) => tracing::warn!(error = %e, "hooks: writing reply failed"),
    }
}
