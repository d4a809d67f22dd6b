//! Process states other than running: zombies and job-control stops.
//!
//! Dump: a zombie child of the tree is found by the freeze walk (`freeze::Zombie`) and recorded
//! with its wait status from `/proc/PID/stat` (`task::dump_zombie`); a process stopped by job
//! control is seized like any other (the seize turns its group stop into a ptrace stop, and
//! detaching puts it back), recorded with its stop signal, and whether its parent has already
//! collected the stop (an injected `waitid(WSTOPPED | WNOWAIT)` in the parent).
//!
//! Restore: a zombie is created by its parent like any process (same pid, group, session),
//! then made to exit the way it did: `exit_group(code)`, or `tgkill` of itself with the signal
//! that killed it (default disposition, not dumpable so no core is written). Its parent's
//! `waitid(WNOWAIT)` confirms it. A stopped process is sent its stop signal while traced and
//! goes through a real group stop (its parent notified, as the kernel does); a stop that the
//! parent had collected is collected again by an injected `waitid(WSTOPPED)`. The SIGCHLD these
//! raise in the parent is dropped before its saved pending signals are queued again
//! (`task::drain_pending`). Detaching leaves a stopped process stopped. A process continued
//! (SIGCONT) whose parent has not collected the continue yet is stopped and continued again
//! while traced, so its parent's `waitpid(WCONTINUED)` reports it once, as before.
//!
//! Not kept: the core-dump bit of a zombie's status (no core is written at restore), its
//! resource usage (`wait4`'s rusage, the parent's `cutime`/`cstime`).

use crate::error::{Ctx, Failure};
use crate::remote::Remote;
use stasis_image::records as rec;
use stasis_sys::ptrace::{self, Stop};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const WALL: u64 = 0x4000_0000;
const CLD_EXITED: i32 = 1;

/// Make the freshly created process behind `r` (its pid in the image: `p.pid`) exit with
/// `p.exit_status`, then wait until `parent` sees it as a zombie.
pub fn make_zombie(mut r: Remote, parent: &mut Remote, p: &rec::Process) -> Result<(), Failure> {
    let tid = r.tid();
    let sig = (p.exit_status & 0x7f) as u64;
    if sig != 0 && sig != libc::SIGKILL as u64 {
        let act = r.put(0, &[0u8; 32])?;
        r.call(
            &format!("zombie: default disposition of signal {sig}"),
            libc::SYS_rt_sigaction,
            &[sig, act, 0, 8],
        )?;
        r.call(
            "zombie: prctl(PR_SET_DUMPABLE, 0) (no core)",
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, 0],
        )?;
    }
    let mut regs = ptrace::get_regs(tid).ctx(p.pid, || "PTRACE_GETREGS".into())?;
    regs.rip = r.base;
    regs.orig_rax = u64::MAX;
    if sig == 0 {
        regs.rax = libc::SYS_exit_group as u64;
        regs.rdi = ((p.exit_status >> 8) & 0xff) as u64;
    } else {
        regs.rax = libc::SYS_tgkill as u64;
        regs.rdi = p.pid as u64;
        regs.rsi = p.pid as u64;
        regs.rdx = sig;
    }
    ptrace::set_regs(tid, &regs).ctx(p.pid, || "PTRACE_SETREGS".into())?;
    ptrace::set_sigmask(tid, 0).ctx(p.pid, || "PTRACE_SETSIGMASK".into())?;
    ptrace::detach(tid, 0).ctx(p.pid, || "PTRACE_DETACH (to exit)".into())?;
    wait_zombie(parent, p)
}

/// Wait (bounded) until the parent can wait for the zombie, and check its status.
fn wait_zombie(parent: &mut Remote, p: &rec::Process) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let si = parent.put(0, &[0u8; 128])?;
        parent.call(
            &format!("waitid(P_PID, {}, WEXITED|WNOWAIT) for a zombie", p.pid),
            libc::SYS_waitid,
            &[
                libc::P_PID as u64,
                p.pid as u64,
                si,
                (libc::WEXITED | libc::WNOWAIT | libc::WNOHANG) as u64 | WALL,
                0,
            ],
        )?;
        let b = parent.get(0, 28)?;
        let int = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
        if int(16) == p.pid {
            let (code, status) = (int(8), int(24));
            let want_sig = p.exit_status & 0x7f;
            let ok = if want_sig == 0 {
                code == CLD_EXITED && status == (p.exit_status >> 8) & 0xff
            } else {
                code != CLD_EXITED && status == want_sig
            };
            if !ok {
                return Err(Failure::msg(
                    p.pid,
                    format!(
                        "zombie exited with si_code {code} status {status}, not as saved (wait status {:#x})",
                        p.exit_status
                    ),
                ));
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Failure::msg(
                p.pid,
                "the process made to exit did not become a zombie",
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every process that was stopped by job control stops again, before any saved state that a
/// stop notification would disturb (its parent's pending signals) is restored.
pub fn restop_all(
    img: &rec::Checkpoint,
    remotes: &mut HashMap<i32, Remote>,
    host: &dyn Fn(i32) -> i32,
) -> Result<(), Failure> {
    for p in img
        .processes
        .iter()
        .filter(|p| !p.zombie && (p.stop_signal != 0 || p.continued))
    {
        let r = remotes.get_mut(&p.pid).expect("created");
        if p.stop_signal == 0 {
            // Continued, not yet collected: a stop and a SIGCONT make the same report.
            restop(r, p, libc::SIGSTOP, host)?;
            continue_traced(r, p, host)?;
            continue;
        }
        restop(r, p, p.stop_signal, host)?;
        if p.stop_reported {
            if let Some(parent) = remotes.get_mut(&p.ppid) {
                collect_stop(parent, p.pid)?;
            }
        }
    }
    Ok(())
}

/// SIGCONT to a process stopped by [`restop`]: the kernel marks it continued (to be reported
/// to its parent) when the signal is sent; the leader then goes once through signal handling
/// (where the parent is notified, and the SIGCONT is dequeued: we discard it) and a harmless
/// `getpid` at our gadget, so nothing is left to do once it runs.
fn continue_traced(
    r: &mut Remote,
    p: &rec::Process,
    host: &dyn Fn(i32) -> i32,
) -> Result<(), Failure> {
    let leader = host(p.pid);
    let saved = ptrace::get_regs(leader).ctx(p.pid, || "PTRACE_GETREGS".into())?;
    let mut park = saved;
    park.rip = r.base;
    park.rax = libc::SYS_getpid as u64;
    park.orig_rax = u64::MAX;
    ptrace::set_regs(leader, &park).ctx(p.pid, || "PTRACE_SETREGS".into())?;
    ptrace::set_sigmask(leader, !(1u64 << (libc::SIGCONT - 1)))
        .ctx(p.pid, || "PTRACE_SETSIGMASK".into())?;
    stasis_sys::sys::tgkill(leader, leader, libc::SIGCONT)
        .ctx(p.pid, || "sending SIGCONT".into())?;
    let mut syscall_stops = 0;
    for _ in 0..16 {
        ptrace::syscall(leader, 0).ctx(p.pid, || "PTRACE_SYSCALL".into())?;
        match ptrace::wait(leader).ctx(p.pid, || "waiting after SIGCONT".into())? {
            Stop::Syscall => syscall_stops += 1,
            // The SIGCONT itself (discarded: its effect is done) and the trap that tells a
            // seized tracee about the end of the group stop.
            Stop::Signal(libc::SIGCONT) | Stop::Event(ptrace::EVENT_STOP, _) => {}
            other => {
                return Err(Failure::msg(
                    p.pid,
                    format!("continuing it again: unexpected {other:?}"),
                ))
            }
        }
        if syscall_stops == 2 {
            ptrace::set_regs(leader, &saved).ctx(p.pid, || "PTRACE_SETREGS".into())?;
            ptrace::set_sigmask(leader, !0).ctx(p.pid, || "PTRACE_SETSIGMASK".into())?;
            return Ok(());
        }
    }
    Err(Failure::msg(p.pid, "continuing it again: it never ran"))
}

/// Send the stop signal to the traced process and let every thread go through the group stop
/// (no instruction of its own runs: the signal and the stop are handled on the way out of the
/// kernel). Each thread is parked on a harmless `getpid` at our gadget meanwhile: a signal that
/// the kernel drops (a TSTP-like signal in an orphaned process group) shows as a system call.
fn restop(
    r: &mut Remote,
    p: &rec::Process,
    sig: i32,
    host: &dyn Fn(i32) -> i32,
) -> Result<(), Failure> {
    if !matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    ) {
        return Err(Failure::msg(p.pid, format!("bad stop signal {sig}")));
    }
    if sig != libc::SIGSTOP {
        let act = r.put(0, &[0u8; 32])?;
        r.call(
            &format!("default disposition of stop signal {sig}"),
            libc::SYS_rt_sigaction,
            &[sig as u64, act, 0, 8],
        )?;
    }
    let mut saved = Vec::new();
    for t in &p.threads {
        let tid = host(t.tid);
        let regs = ptrace::get_regs(tid).ctx(t.tid, || "PTRACE_GETREGS".into())?;
        let mut park = regs;
        park.rip = r.base;
        park.rax = libc::SYS_getpid as u64;
        park.orig_rax = u64::MAX;
        ptrace::set_regs(tid, &park).ctx(t.tid, || "PTRACE_SETREGS".into())?;
        saved.push((tid, regs));
    }
    let leader = host(p.pid);
    ptrace::set_sigmask(leader, !(1u64 << (sig - 1))).ctx(p.pid, || "PTRACE_SETSIGMASK".into())?;
    stasis_sys::sys::tgkill(leader, leader, sig)
        .ctx(p.pid, || format!("sending stop signal {sig}"))?;
    let mut deliver = 0;
    for &(tid, _) in &saved {
        loop {
            ptrace::syscall(tid, deliver).ctx(tid, || "PTRACE_SYSCALL".into())?;
            deliver = 0;
            match ptrace::wait(tid).ctx(tid, || "waiting for the stop".into())? {
                Stop::Signal(s) if s == sig && tid == leader => deliver = sig,
                Stop::Event(ptrace::EVENT_STOP, s) if s == sig => break,
                other => {
                    return Err(Failure::msg(
                        tid,
                        format!(
                            "stopping it again with signal {sig}: got {other:?} instead of a group stop \
                             (a terminal stop signal is dropped in an orphaned process group)"
                        ),
                    ))
                }
            }
        }
    }
    for (tid, regs) in saved {
        ptrace::set_regs(tid, &regs).ctx(tid, || "PTRACE_SETREGS".into())?;
    }
    ptrace::set_sigmask(leader, !0).ctx(p.pid, || "PTRACE_SETSIGMASK".into())?;
    Ok(())
}

/// The parent had collected the stop before the checkpoint: collect the new one.
fn collect_stop(parent: &mut Remote, child: i32) -> Result<(), Failure> {
    let si = parent.put(0, &[0u8; 128])?;
    parent.call(
        &format!("waitid(P_PID, {child}, WSTOPPED) (the stop was collected before)"),
        libc::SYS_waitid,
        &[
            libc::P_PID as u64,
            child as u64,
            si,
            (libc::WSTOPPED | libc::WNOHANG) as u64 | WALL,
            0,
        ],
    )?;
    if i32::from_le_bytes(parent.get(16, 4)?.try_into().expect("4")) != child {
        return Err(Failure::msg(
            child,
            "its parent saw no stop to collect after stopping it again",
        ));
    }
    Ok(())
}
