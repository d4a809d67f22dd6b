//! Running system calls inside a stopped tracee.
//!
//! Much of a task's state can only be read or set by the task itself (signal handlers, the
//! alternate signal stack, `clear_child_tid`, the address-space layout, …). The engine makes the
//! tracee execute one system call at a time:
//!
//! 1. set the thread's registers to: `rip` = address of a `syscall` instruction (the *gadget*),
//!    `rax` = system-call number, `rdi, rsi, rdx, r10, r8, r9` = arguments, `orig_rax = -1` (so
//!    the kernel does not apply syscall-restart logic to the injected state);
//! 2. `PTRACE_SYSCALL` twice: the thread stops at the entry and then at the exit of that call;
//! 3. read `rax` (the result, `-errno` on failure).
//!
//! The gadget is either a `syscall` instruction found in the `[vdso]` (only to map our own page)
//! or our own page holding `syscall; jmp .` ([`GADGET_CODE`]). The `jmp .` matters: if stasis is
//! killed between the two stops, the orphaned thread spins on the spot instead of running
//! arbitrary code, and the recovery journal lets the next run put its registers back.
//!
//! Fork/clone events that the injected call causes (when the tracee has
//! `PTRACE_O_TRACEFORK`/`TRACECLONE` set) are collected in [`Injector::events`].

use crate::ptrace::{self, Regs, Stop};
use std::io;

/// Machine code of the gadget page: `syscall` (0f 05) then `jmp .` (eb fe).
pub const GADGET_CODE: [u8; 4] = [0x0f, 0x05, 0xeb, 0xfe];

/// An injected call did not complete as expected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A ptrace request failed.
    #[error("ptrace on thread {tid} failed during injected syscall {nr}")]
    Ptrace {
        /// Thread.
        tid: i32,
        /// System call number.
        nr: i64,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The thread stopped in an unexpected way (killed, exited, signalled).
    #[error("thread {tid} stopped unexpectedly during injected syscall {nr}: {stop:?}")]
    Unexpected {
        /// Thread.
        tid: i32,
        /// System call number.
        nr: i64,
        /// What happened.
        stop: Stop,
    },
}

/// A fork/clone event observed during an injected call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloneEvent {
    /// `PTRACE_EVENT_FORK`, `_VFORK` or `_CLONE`.
    pub event: i32,
    /// New task's tid.
    pub child: i32,
}

/// Executes system calls in one stopped thread.
pub struct Injector {
    tid: i32,
    gadget: u64,
    base: Regs,
    /// Fork/clone events seen during the last call.
    pub events: Vec<CloneEvent>,
}

impl Injector {
    /// `base` is the register template for injected calls (usually the thread's saved
    /// registers); `gadget` the address of a `syscall` instruction in the tracee.
    pub fn new(tid: i32, gadget: u64, base: Regs) -> Self {
        Self {
            tid,
            gadget,
            base,
            events: Vec::new(),
        }
    }

    /// The traced thread.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Change the gadget address (after our page has been mapped).
    pub fn set_gadget(&mut self, gadget: u64) {
        self.gadget = gadget;
    }

    /// Change the stack pointer used while injecting.
    pub fn set_stack(&mut self, rsp: u64) {
        self.base.rsp = rsp;
    }

    fn err(&self, nr: i64, source: io::Error) -> InjectError {
        InjectError::Ptrace {
            tid: self.tid,
            nr,
            source,
        }
    }

    /// Run one system call; returns the raw `rax` (negative errno on failure).
    pub fn raw(&mut self, nr: i64, args: &[u64]) -> Result<i64, InjectError> {
        self.events.clear();
        let mut regs = self.base;
        regs.rip = self.gadget;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX;
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        regs.rdi = a(0);
        regs.rsi = a(1);
        regs.rdx = a(2);
        regs.r10 = a(3);
        regs.r8 = a(4);
        regs.r9 = a(5);
        ptrace::set_regs(self.tid, &regs).map_err(|e| self.err(nr, e))?;
        // Entry stop, then exit stop; fork/clone event stops may come in between.
        let mut syscall_stops = 0;
        while syscall_stops < 2 {
            ptrace::syscall(self.tid, 0).map_err(|e| self.err(nr, e))?;
            match ptrace::wait(self.tid).map_err(|e| self.err(nr, e))? {
                Stop::Syscall => syscall_stops += 1,
                // A thread in a job-control stop when it was seized traps again (group-stop
                // trap) when first resumed: resume it once more.
                Stop::Event(ptrace::EVENT_STOP, _) if syscall_stops == 0 => {}
                Stop::Event(ev, _)
                    if ev == ptrace::EVENT_FORK
                        || ev == ptrace::EVENT_VFORK
                        || ev == ptrace::EVENT_CLONE =>
                {
                    let child = ptrace::event_msg(self.tid).map_err(|e| self.err(nr, e))? as i32;
                    self.events.push(CloneEvent { event: ev, child });
                }
                stop => {
                    return Err(InjectError::Unexpected {
                        tid: self.tid,
                        nr,
                        stop,
                    })
                }
            }
        }
        let after = ptrace::get_regs(self.tid).map_err(|e| self.err(nr, e))?;
        Ok(after.rax as i64)
    }

    /// Run one system call; a negative result becomes an `io::Error` (wrapped as `Err(Ok(e))`
    /// for callers that want to tell kernel errors from injection failures).
    pub fn call(&mut self, nr: i64, args: &[u64]) -> Result<Result<u64, io::Error>, InjectError> {
        let r = self.raw(nr, args)?;
        if (-4095..0).contains(&r) {
            Ok(Err(io::Error::from_raw_os_error(-r as i32)))
        } else {
            Ok(Ok(r as u64))
        }
    }

    /// Put registers back to `regs` (the thread is left stopped).
    pub fn restore_regs(&self, regs: &Regs) -> io::Result<()> {
        ptrace::set_regs(self.tid, regs)
    }
}

/// Offset of the first `syscall` instruction (0f 05) in `code`, if any.
pub fn find_syscall_insn(code: &[u8]) -> Option<usize> {
    code.windows(2).position(|w| w == [0x0f, 0x05])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_syscall() {
        assert_eq!(find_syscall_insn(&[0x90, 0x0f, 0x05]), Some(1));
        assert_eq!(find_syscall_insn(&[0x90, 0x0f]), None);
        assert_eq!(find_syscall_insn(&GADGET_CODE), Some(0));
    }
}
