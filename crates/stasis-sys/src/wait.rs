//! Waiting for children and tracees: the crate's one `waitpid(2)` wrapper.
//!
//! [`waitpid`] is the only place that calls the system call (always with `__WALL`, so threads
//! and clone children are seen, and retried on `EINTR`). Two views sit on it:
//! - [`wait_exit`]: wait for a *process to end* (exit code or killing signal);
//! - [`crate::ptrace::wait`] / [`crate::ptrace::wait_nohang`]: wait for a *tracee's stop*.

use std::io;

use crate::last_err;

/// Whom to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Any child (`waitpid(-1, …)`).
    Any,
    /// This child or tracee.
    Pid(i32),
}

impl Who {
    fn raw(self) -> libc::pid_t {
        match self {
            Who::Any => -1,
            Who::Pid(p) => p,
        }
    }
}

/// Whether to block until something changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Wait until a state change is reported.
    Yes,
    /// `WNOHANG`: return `Ok(None)` at once when nothing is pending.
    No,
}

/// How a waited-for child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// A raw wait status as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub i32);

impl Status {
    /// The end of the process, if this status reports one (and not a stop or continue).
    pub fn exit(self) -> Option<Exit> {
        if libc::WIFEXITED(self.0) {
            Some(Exit::Code(libc::WEXITSTATUS(self.0)))
        } else if libc::WIFSIGNALED(self.0) {
            Some(Exit::Signal(libc::WTERMSIG(self.0)))
        } else {
            None
        }
    }
}

/// `waitpid(who, __WALL [| WNOHANG])`, retried on `EINTR`. `Ok(None)` only with
/// [`Block::No`] when nothing is pending; `ECHILD` and other failures are errors.
pub fn waitpid(who: Who, block: Block) -> io::Result<Option<(i32, Status)>> {
    let flags = match block {
        Block::Yes => libc::__WALL,
        Block::No => libc::__WALL | libc::WNOHANG,
    };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local integer.
        let r = unsafe { libc::waitpid(who.raw(), &mut status, flags) };
        if r < 0 {
            let e = last_err();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        return Ok(Some((r, Status(status))));
    }
}

/// Wait for a child to end (stops and continues are skipped). `Ok(None)`: with [`Block::No`],
/// nothing has ended yet; with [`Who::Any`], also when there is no child left (`ECHILD`).
/// For [`Who::Pid`], `ECHILD` (not, or no longer, our child) is an error.
pub fn wait_exit(who: Who, block: Block) -> io::Result<Option<(i32, Exit)>> {
    loop {
        match waitpid(who, block) {
            Ok(Some((pid, st))) => match st.exit() {
                Some(e) => return Ok(Some((pid, e))),
                None => continue,
            },
            Ok(None) => return Ok(None),
            Err(e) if who == Who::Any && e.raw_os_error() == Some(libc::ECHILD) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decodes_exit_and_signal() {
        // Encodings from wait(2): exit code in bits 8..15, signal in the low 7 bits.
        assert_eq!(Status(3 << 8).exit(), Some(Exit::Code(3)));
        assert_eq!(
            Status(libc::SIGKILL).exit(),
            Some(Exit::Signal(libc::SIGKILL))
        );
        // A stop (0x7f in the low byte) is not an end.
        assert_eq!(Status((libc::SIGSTOP << 8) | 0x7f).exit(), None);
    }
}
