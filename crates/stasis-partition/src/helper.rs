//! The one protocol between stasis processes: typed requests, progress, results and errors.
//!
//! Whenever the agent or the partition code needs work done in another process — a
//! partition checkpoint (it forks, which needs a single-threaded process, and joins the
//! partition's namespaces), a partition's long-lived monitor, the restorer a monitor forks, the
//! first process of a fresh partition — the two sides talk with the types of this module,
//! never by parsing a command's text:
//!
//! - the caller sends one [`Request`] (a `stasis __helper` process reads it from its channel,
//!   its standard input, a socket; a forked child already knows what to do);
//! - the worker sends any number of [`Message::Progress`], then exactly one final message: a
//!   result ([`Message::Checkpointed`], [`Message::Started`]) or a typed
//!   [`Message::Failed`] error ([`HelperError`]: the kind the caller decides on, and the text);
//! - the caller may send [`Request::Cancel`] or close its end at any time: a checkpoint not
//!   yet committed stops and leaves the workload running as before (its final message is then
//!   [`HelperError::Cancelled`]).
//!
//! Framing: each message is a 4-byte little-endian length followed by that many bytes of JSON
//! ([`send`], [`recv`]). A channel that ends without a final message means the worker died:
//! the caller reports it as [`HelperError::Internal`] with the worker's exit status.

use serde::{Deserialize, Serialize};
use stasis_engine::{Cause, CheckpointError, CheckpointStats, RestoreError};
use std::io::{Read, Write};
use std::path::PathBuf;

/// The largest frame accepted (a message is a few hundred bytes).
pub const MAX_FRAME: u32 = 16 << 20;

/// What a helper is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Checkpoint a partition (as `stasis checkpoint --name`).
    Checkpoint(CheckpointRequest),
    /// Be a partition's monitor: start it (fresh, or restored from an image), report
    /// [`Message::Started`] and close the channel, then live on as its monitor.
    Monitor(MonitorRequest),
    /// Stop the work under way (the workload keeps running as before).
    Cancel,
}

/// A partition checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRequest {
    /// Partition name.
    pub name: String,
    /// Image directory.
    pub dir: PathBuf,
    /// Keep the partition running.
    pub leave_running: bool,
    /// Overwrite a non-empty directory.
    pub force: bool,
    /// Compress chunks.
    pub compress: bool,
    /// Page I/O workers.
    pub workers: usize,
    /// See [`stasis_engine::CheckpointOptions::buffer_limit`].
    pub copy_limit: Option<u64>,
}

/// A partition's monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorRequest {
    /// Partition name (its record says what to run).
    pub name: String,
    /// Restore from an image instead of running the boot command.
    pub restore: Option<RestoreSource>,
}

/// The image a monitor restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreSource {
    /// Image directory (absolute).
    pub dir: PathBuf,
    /// Page I/O workers.
    pub workers: usize,
    /// Do not check the image's signature.
    pub insecure_unsigned: bool,
}

/// What a helper says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Work under way.
    Progress(Progress),
    /// Final: the checkpoint is committed.
    Checkpointed(Figures),
    /// Final: the partition's first process runs (host pid).
    Started {
        /// Host pid of the first process.
        pid: i32,
    },
    /// Final: the work failed (a checkpoint left the workload running; a start left nothing).
    Failed(HelperError),
}

impl Message {
    /// Is this the last message of a reply?
    pub fn is_final(&self) -> bool {
        !matches!(self, Message::Progress(_))
    }
}

/// Where the work stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The stage, in a few words (the engine's phase).
    pub stage: String,
    /// Page bytes handled so far.
    pub bytes_done: u64,
    /// Page bytes to handle in all (0: not known yet).
    pub bytes_total: u64,
}

/// The figures of a committed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// The image directory.
    pub dir: PathBuf,
    /// Host pid of the partition's first process when it was checkpointed.
    pub pid: i32,
    /// The engine's figures (frozen seconds, bytes, processes…).
    pub stats: CheckpointStats,
}

/// Why the work failed, as the caller decides on it. The text is the whole error with its
/// causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum HelperError {
    /// The workload is not there (not running, its process gone).
    #[error("{message}")]
    WorkloadGone {
        /// The error.
        message: String,
    },
    /// The workload holds something that cannot be checkpointed: it keeps running.
    #[error("{message}")]
    Refused {
        /// The process holding the object.
        pid: i32,
        /// The object, its kind and why it is refused.
        what: String,
        /// The error.
        message: String,
    },
    /// The image cannot be used (missing, corrupt, untrusted, another kernel).
    #[error("{message}")]
    ImageInvalid {
        /// The error.
        message: String,
    },
    /// A pid the image needs is taken.
    #[error("{message}")]
    PidInUse {
        /// The error.
        message: String,
    },
    /// Cancelled by the caller (or interrupted by a signal): the workload runs as before.
    #[error("{message}")]
    Cancelled {
        /// The error.
        message: String,
    },
    /// Anything else.
    #[error("{message}")]
    Internal {
        /// The error.
        message: String,
    },
}

impl HelperError {
    /// An internal error.
    pub fn internal(message: impl Into<String>) -> HelperError {
        HelperError::Internal {
            message: message.into(),
        }
    }

    /// The error of a failed engine checkpoint.
    pub fn from_checkpoint(e: &CheckpointError) -> HelperError {
        let message = crate::monitor::chain(e);
        match e {
            CheckpointError::Unsupported { pid, what } => HelperError::Refused {
                pid: *pid,
                what: what.clone(),
                message,
            },
            CheckpointError::NoSuchProcess(_) => HelperError::WorkloadGone { message },
            CheckpointError::Interrupted(_) => HelperError::Cancelled { message },
            _ => HelperError::Internal { message },
        }
    }

    /// The error of a failed engine restore.
    pub fn from_restore(e: &RestoreError) -> HelperError {
        let message = crate::monitor::chain(e);
        match e.cause() {
            Cause::BadImage => HelperError::ImageInvalid { message },
            Cause::PidInUse => HelperError::PidInUse { message },
            Cause::Interrupted => HelperError::Cancelled { message },
            _ => HelperError::Internal { message },
        }
    }

    /// The error of a given kind (the engine's classification of a failure).
    pub fn of_cause(cause: Cause, message: impl Into<String>) -> HelperError {
        let message = message.into();
        match cause {
            Cause::BadImage => HelperError::ImageInvalid { message },
            Cause::PidInUse => HelperError::PidInUse { message },
            Cause::Interrupted => HelperError::Cancelled { message },
            Cause::Refused => HelperError::Refused {
                pid: 0,
                what: message.clone(),
                message,
            },
            Cause::Other => HelperError::Internal { message },
        }
    }

    /// The engine's classification (the CLI turns it into an exit code).
    pub fn cause(&self) -> Cause {
        match self {
            HelperError::Refused { .. } => Cause::Refused,
            HelperError::ImageInvalid { .. } => Cause::BadImage,
            HelperError::PidInUse { .. } => Cause::PidInUse,
            HelperError::Cancelled { .. } => Cause::Interrupted,
            HelperError::WorkloadGone { .. } | HelperError::Internal { .. } => Cause::Other,
        }
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The channel failed.
    #[error("the helper channel failed")]
    Io(#[source] std::io::Error),
    /// A frame longer than [`MAX_FRAME`].
    #[error("a helper frame of {0} bytes (at most {MAX_FRAME})")]
    TooLong(u32),
    /// A frame that is not a message of this protocol.
    #[error("a helper frame that does not decode")]
    Decode(#[source] serde_json::Error),
    /// The channel ended in the middle of a frame.
    #[error("the helper channel ended in the middle of a frame")]
    Truncated,
}

/// Why a helper process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The channel could not be made.
    #[error("creating the helper channel")]
    Channel(#[source] std::io::Error),
    /// The process could not be started.
    #[error("starting {exe}")]
    Exec {
        /// The binary.
        exe: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be sent.
    #[error("sending the request to the helper")]
    Send(#[source] ProtoError),
}

/// A `stasis __helper` process, its request sent.
#[derive(Debug)]
pub struct Helper {
    /// The process (the caller reaps it).
    pub process: std::process::Child,
    /// The caller's end of the channel: read the reply here; send [`Request::Cancel`] or drop
    /// it to cancel.
    pub chan: std::os::unix::net::UnixStream,
}

/// Start `exe --root ROOT __helper` with one end of a socket pair as its standard input, and
/// send it `req`. Its standard output goes nowhere; `stderr` is where its log goes; with
/// `setsid` it runs in a session of its own (a monitor outlives its caller).
pub fn spawn(
    exe: &std::path::Path,
    root: &std::path::Path,
    req: &Request,
    stderr: std::process::Stdio,
    setsid: bool,
) -> Result<Helper, SpawnError> {
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(SpawnError::Channel)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root")
        .arg(root)
        .arg(HELPER_VERB)
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    if setsid {
        stasis_sys::ns::command_setsid(&mut cmd);
    }
    let mut process = cmd.spawn().map_err(|source| SpawnError::Exec {
        exe: exe.display().to_string(),
        source,
    })?;
    if let Err(e) = send(&mut ours, req) {
        let _ = process.kill();
        let _ = process.wait();
        return Err(SpawnError::Send(e));
    }
    Ok(Helper {
        process,
        chan: ours,
    })
}

/// The hidden verb of the `stasis` binary that serves one request ([`serve`]).
pub const HELPER_VERB: &str = "__helper";

/// Serve one request read from `chan` (the `__helper` verb; the process must be
/// single-threaded). Returns the exit code.
pub fn serve(root: &crate::state::Root, chan: std::os::unix::net::UnixStream) -> i32 {
    let mut chan = chan;
    let req = match recv::<Request>(&mut chan) {
        Ok(Some(r)) => r,
        // The caller went away before asking anything.
        Ok(None) => return 0,
        Err(e) => {
            let m = Message::Failed(HelperError::internal(crate::monitor::chain(&e)));
            let _ = send(&mut chan, &m);
            return 2;
        }
    };
    match req {
        Request::Cancel => 0,
        Request::Checkpoint(c) => serve_checkpoint(root, c, chan),
        Request::Monitor(m) => {
            let mode = match m.restore {
                None => crate::monitor::Mode::Run,
                Some(r) => crate::monitor::Mode::Restore {
                    dir: r.dir,
                    workers: r.workers,
                    insecure_unsigned: r.insecure_unsigned,
                },
            };
            let report = std::fs::File::from(std::os::fd::OwnedFd::from(chan));
            crate::monitor::main(root.clone(), &m.name, mode, report)
        }
    }
}

fn serve_checkpoint(
    root: &crate::state::Root,
    c: CheckpointRequest,
    chan: std::os::unix::net::UnixStream,
) -> i32 {
    use std::os::fd::AsFd;
    // As every stasis command does first: a partition left frozen by a checkpointer that was
    // killed is thawed.
    for name in crate::ops::recover(root) {
        tracing::warn!(partition = %name, "thawed, left frozen by an interrupted checkpoint");
    }
    let opts = crate::checkpoint::Options {
        root: root.clone(),
        name: c.name,
        dir: c.dir,
        leave_running: c.leave_running,
        force: c.force,
        compression: if c.compress {
            stasis_image::Compression::Lz4
        } else {
            stasis_image::Compression::None
        },
        workers: c.workers.max(1),
        copy_limit: c.copy_limit,
    };
    let mut out = match chan.try_clone() {
        Ok(o) => o,
        Err(_) => return 2,
    };
    let mut relay = |p: &Progress| {
        let _ = send(&mut out, &Message::Progress(p.clone()));
    };
    let r = crate::checkpoint::checkpoint_with(&opts, &mut relay, Some(chan.as_fd()));
    let (m, code) = match r {
        Ok(f) => (Message::Checkpointed(f), 0),
        Err(e) => (Message::Failed(e.to_helper()), 1),
    };
    let mut chan = chan;
    let _ = send(&mut chan, &m);
    code
}

/// Write one frame holding `msg`.
pub fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), ProtoError> {
    let body = serde_json::to_vec(msg).map_err(ProtoError::Decode)?;
    let len = u32::try_from(body.len()).map_err(|_| ProtoError::TooLong(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLong(len));
    }
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).map_err(ProtoError::Io)?;
    w.flush().map_err(ProtoError::Io)
}

/// Read one frame: `None` when the channel ended cleanly between frames.
pub fn recv<T: serde::de::DeserializeOwned>(r: &mut impl Read) -> Result<Option<T>, ProtoError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtoError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtoError::Io(e)),
        }
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(ProtoError::TooLong(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ProtoError::Truncated,
        _ => ProtoError::Io(e),
    })?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(ProtoError::Decode)
}

/// Read a reply up to its final message, handing each progress message to `on_progress`.
/// A channel that ends first (or fails) gives `died`'s error.
pub fn recv_reply(
    r: &mut impl Read,
    on_progress: &mut dyn FnMut(&Progress),
    died: impl FnOnce(Option<ProtoError>) -> HelperError,
) -> Message {
    loop {
        match recv::<Message>(r) {
            Ok(Some(Message::Progress(p))) => on_progress(&p),
            Ok(Some(m)) => return m,
            Ok(None) => return Message::Failed(died(None)),
            Err(e) => return Message::Failed(died(Some(e))),
        }
    }
}

/// Progress as the engine's atomics say it.
pub fn progress_of(p: &stasis_engine::progress::Progress, total: u64) -> Progress {
    Progress {
        stage: p.phase().as_str().to_string(),
        bytes_done: p.bytes(),
        bytes_total: total,
    }
}

/// Run `f` while a thread sends `progress` on `w` every 100 ms (and once more at the end).
pub fn with_progress<T, W: Write + Send>(
    progress: &stasis_engine::progress::Progress,
    total: u64,
    w: Option<W>,
    f: impl FnOnce() -> T,
) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let done = &done;
        if let Some(mut w) = w {
            s.spawn(move || loop {
                let fin = done.load(Ordering::SeqCst);
                let m = Message::Progress(progress_of(progress, total));
                if send(&mut w, &m).is_err() || fin {
                    return;
                }
                for _ in 0..10 {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            });
        }
        let r = f();
        done.store(true, Ordering::SeqCst);
        r
    })
}
