//! Errors of the engine's operations.
//!
//! Each operation has its own enum ([`CheckpointError`], [`RestoreError`]); both carry a
//! [`Failure`] for kernel-level failures, which names the pid, the object and the step.

use std::error::Error as StdError;

/// A kernel-level failure: which pid, which object/step, and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{}{what}", pid_prefix(*.pid))]
pub struct Failure {
    /// Process (or thread) concerned; 0 when no process is (then not shown).
    pub pid: i32,
    /// Object and step, e.g. "fd 3 (pipe:[1234]): reading buffered data".
    pub what: String,
    /// Cause.
    #[source]
    pub source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Failure {
    /// A failure with a cause.
    pub fn new(
        pid: i32,
        what: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            pid,
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// A failure without an underlying cause.
    pub fn msg(pid: i32, what: impl Into<String>) -> Self {
        Self {
            pid,
            what: what.into(),
            source: None,
        }
    }
}

/// `pid N: ` for a real pid, nothing for 0 (a failure of stasis's own, e.g. a socket it
/// opens on restore).
fn pid_prefix(pid: i32) -> String {
    if pid > 0 {
        format!("pid {pid}: ")
    } else {
        String::new()
    }
}

/// Attach pid/step context to results.
pub trait Ctx<T> {
    /// Map the error into a [`Failure`] for `pid` with a description of the step.
    fn ctx(self, pid: i32, what: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T, E: Into<Box<dyn StdError + Send + Sync>>> Ctx<T> for Result<T, E> {
    fn ctx(self, pid: i32, what: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(pid, what(), e))
    }
}

/// Why a checkpoint failed. The tree is left running as it was in every case.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The tree holds something the engine cannot checkpoint yet.
    #[error("cannot checkpoint pid {pid}: {what}")]
    Unsupported {
        /// Process holding the object.
        pid: i32,
        /// The object and its kind.
        what: String,
    },
    /// The root pid does not exist.
    #[error("no process with pid {0}")]
    NoSuchProcess(i32),
    /// A kernel operation failed (shown as the failure itself: callers say "checkpoint of …
    /// failed" once).
    #[error(transparent)]
    Failed(#[from] Failure),
    /// Writing the image failed.
    #[error("writing the image failed")]
    Image(#[source] Box<dyn StdError + Send + Sync>),
    /// The parent of an incremental image cannot be used.
    #[error(transparent)]
    Parent(#[from] crate::incremental::ChainError),
    /// SIGINT/SIGTERM arrived.
    #[error("checkpoint interrupted by a signal at step {0}; the tree was left running")]
    Interrupted(String),
    /// A failpoint fired (tests).
    #[error("failpoint {0} fired; the tree was left running")]
    Failpoint(String),
}

/// Why a restore failed. No restored task is left behind in every case.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The image cannot be used (missing, corrupt, other version, other kernel).
    #[error("image {dir}: {what}")]
    BadImage {
        /// Image directory.
        dir: String,
        /// Problem.
        what: String,
        /// Cause.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// A pid or tid the image needs is in use.
    #[error("pid {pid} is in use by a running process ({comm}); restore needs the same pids: end that process or restore into a fresh pid namespace")]
    PidInUse {
        /// The pid.
        pid: i32,
        /// Its command name.
        comm: String,
    },
    /// A kernel operation failed (shown as the failure itself: callers say "restore from …
    /// failed" once).
    #[error(transparent)]
    Failed(#[from] Failure),
    /// A failpoint fired (tests).
    #[error("failpoint {0} fired; nothing was left running")]
    Failpoint(String),
    /// SIGINT/SIGTERM arrived.
    #[error("restore interrupted by a signal at step {0}; nothing was left running")]
    Interrupted(String),
}

/// What kind of failure an engine error is, as data that crosses a process boundary (the
/// partition layer runs the engine in a forked child). The CLI alone turns it into an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Cause {
    /// Anything else.
    #[default]
    Other,
    /// The tree holds something the engine refuses to checkpoint.
    Refused,
    /// The image cannot be used.
    BadImage,
    /// A pid the image needs is taken.
    PidInUse,
    /// SIGINT/SIGTERM arrived.
    Interrupted,
}

impl CheckpointError {
    /// The kind of this failure.
    pub fn cause(&self) -> Cause {
        match self {
            CheckpointError::Unsupported { .. } => Cause::Refused,
            CheckpointError::Interrupted(_) => Cause::Interrupted,
            _ => Cause::Other,
        }
    }
}

impl RestoreError {
    /// The kind of this failure.
    pub fn cause(&self) -> Cause {
        match self {
            RestoreError::BadImage { .. } => Cause::BadImage,
            RestoreError::PidInUse { .. } => Cause::PidInUse,
            RestoreError::Interrupted(_) => Cause::Interrupted,
            _ => Cause::Other,
        }
    }
}

impl From<crate::failpoint::Stop> for CheckpointError {
    fn from(s: crate::failpoint::Stop) -> Self {
        match s {
            crate::failpoint::Stop::Failpoint(n) => Self::Failpoint(n),
            crate::failpoint::Stop::Interrupted(n) => Self::Interrupted(n),
        }
    }
}

impl From<crate::failpoint::Stop> for RestoreError {
    fn from(s: crate::failpoint::Stop) -> Self {
        match s {
            crate::failpoint::Stop::Failpoint(n) => Self::Failpoint(n),
            crate::failpoint::Stop::Interrupted(n) => Self::Interrupted(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_a_pid_only_when_there_is_one() {
        let e = CheckpointError::from(Failure::msg(42, "reading the vdso"));
        assert_eq!(e.to_string(), "pid 42: reading the vdso");
        let e = RestoreError::from(Failure::new(
            0,
            "opening /dev/ptmx",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        ));
        assert_eq!(e.to_string(), "opening /dev/ptmx");
        let mut chain = Vec::new();
        let mut cur = std::error::Error::source(&e);
        while let Some(c) = cur {
            chain.push(c.to_string());
            cur = c.source();
        }
        assert_eq!(chain.len(), 1, "{chain:?}");
        assert!(!chain[0].contains("restore failed"), "{chain:?}");
    }
}
