//! ptrace: the engine's way to stop tasks and read or write their CPU state.
//!
//! We use `PTRACE_SEIZE` (not `PTRACE_ATTACH`) so that attaching sends no signal, then
//! `PTRACE_INTERRUPT` to stop a thread wherever it is, including inside a blocking system call
//! (it then shows `rax = -ERESTART*` and `orig_rax = syscall number`). Register sets are read with
//! `PTRACE_GETREGS` and `PTRACE_GETREGSET(NT_X86_XSTATE)` (FPU/SSE/AVX as an XSAVE image).
//! Signal masks use `PTRACE_GETSIGMASK`/`PTRACE_SETSIGMASK`; queued signals are read without
//! dequeuing them with `PTRACE_PEEKSIGINFO`; rseq registration with
//! `PTRACE_GET_RSEQ_CONFIGURATION`.
//!
//! Linux ties a tracee to the *thread* that attached it: every call here for a given tracee must
//! come from the same thread.

use crate::check;
use std::io;

/// General-purpose registers of an x86_64 thread, as `PTRACE_GETREGS` returns them.
pub type Regs = libc::user_regs_struct;

/// Options set at seize time.
pub const OPT_TRACESYSGOOD: u32 = libc::PTRACE_O_TRACESYSGOOD as u32;
/// Auto-attach children created by fork.
pub const OPT_TRACEFORK: u32 = libc::PTRACE_O_TRACEFORK as u32;
/// Auto-attach children created by vfork.
pub const OPT_TRACEVFORK: u32 = libc::PTRACE_O_TRACEVFORK as u32;
/// Auto-attach threads and clone children.
pub const OPT_TRACECLONE: u32 = libc::PTRACE_O_TRACECLONE as u32;
/// Kill tracees if the tracer exits (used by restore: nothing half-restored survives us).
pub const OPT_EXITKILL: u32 = libc::PTRACE_O_EXITKILL as u32;
/// `PTRACE_O_SUSPEND_SECCOMP`: the tracee's seccomp filters and strict mode do not apply while
/// it is traced by us (our injected calls are never blocked or killed). Needs `CAP_SYS_ADMIN`
/// and a tracer that is not itself under seccomp; cleared by the kernel at detach.
pub const OPT_SUSPEND_SECCOMP: u32 = 1 << 21;

const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
/// Size of one cBPF instruction (`struct sock_filter`).
pub const SOCK_FILTER_LEN: usize = 8;
const NT_X86_XSTATE: libc::c_int = 0x202;
/// Large enough for any XSAVE layout the kernel exposes today (AMX included).
const XSTATE_BUF: usize = 16 * 1024;

fn ptrace_raw(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: ptrace with integer arguments; requests that take pointers are only issued by the
    // functions below with pointers to live, correctly sized buffers.
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    check(r)
}

/// `PTRACE_SEIZE` a thread with the given options. Does not stop it.
pub fn seize(tid: i32, options: u32) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_SEIZE, tid, 0, options as usize).map(|_| ())
}

/// `PTRACE_INTERRUPT`: ask a seized thread to stop (it reports `PTRACE_EVENT_STOP`).
pub fn interrupt(tid: i32) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_INTERRUPT, tid, 0, 0).map(|_| ())
}

/// Set ptrace options on an attached thread.
pub fn set_options(tid: i32, options: u32) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_SETOPTIONS, tid, 0, options as usize).map(|_| ())
}

/// Resume a stopped tracee, delivering `sig` (0 for none).
pub fn cont(tid: i32, sig: i32) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_CONT, tid, 0, sig as usize).map(|_| ())
}

/// Resume until the next system-call entry or exit.
pub fn syscall(tid: i32, sig: i32) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_SYSCALL, tid, 0, sig as usize).map(|_| ())
}

/// Detach, delivering `sig` (0 for none). The thread resumes.
pub fn detach(tid: i32, sig: i32) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_DETACH, tid, 0, sig as usize).map(|_| ())
}

/// `PTRACE_GETEVENTMSG`: for fork/clone events, the new task's tid.
pub fn event_msg(tid: i32) -> io::Result<u64> {
    let mut v: libc::c_ulong = 0;
    ptrace_raw(
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut v as *mut libc::c_ulong as usize,
    )?;
    Ok(v)
}

/// Read the general-purpose registers.
pub fn get_regs(tid: i32) -> io::Result<Regs> {
    // SAFETY: user_regs_struct is plain old data; all-zero is a valid value.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    ptrace_raw(
        libc::PTRACE_GETREGS,
        tid,
        0,
        &mut regs as *mut Regs as usize,
    )?;
    Ok(regs)
}

/// Write the general-purpose registers (including `fs_base`/`gs_base`).
pub fn set_regs(tid: i32, regs: &Regs) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_SETREGS, tid, 0, regs as *const Regs as usize).map(|_| ())
}

/// Read the XSAVE area (x87, SSE, AVX, AVX-512, … state) of a stopped thread.
pub fn get_xstate(tid: i32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; XSTATE_BUF];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    ptrace_raw(
        libc::PTRACE_GETREGSET,
        tid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut libc::iovec as usize,
    )?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Write the XSAVE area of a stopped thread.
pub fn set_xstate(tid: i32, xstate: &[u8]) -> io::Result<()> {
    let mut buf = xstate.to_vec();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    ptrace_raw(
        libc::PTRACE_SETREGSET,
        tid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut libc::iovec as usize,
    )
    .map(|_| ())
}

/// Blocked-signal mask of a stopped thread (bit n-1 = signal n).
pub fn get_sigmask(tid: i32) -> io::Result<u64> {
    let mut mask: u64 = 0;
    ptrace_raw(
        libc::PTRACE_GETSIGMASK,
        tid,
        8,
        &mut mask as *mut u64 as usize,
    )?;
    Ok(mask)
}

/// Set the blocked-signal mask of a stopped thread. SIGKILL and SIGSTOP are never blocked.
pub fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    ptrace_raw(
        libc::PTRACE_SETSIGMASK,
        tid,
        8,
        &mask as *const u64 as usize,
    )
    .map(|_| ())
}

/// A queued signal's `siginfo_t`, as 128 raw bytes (the kernel's layout).
pub type RawSiginfo = [u8; 128];

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;

/// Every signal queued for the thread (`shared = false`) or for the whole thread group
/// (`shared = true`), oldest first, without dequeuing them.
pub fn peek_siginfo(tid: i32, shared: bool) -> io::Result<Vec<RawSiginfo>> {
    let mut out = Vec::new();
    let mut buf = vec![[0u8; 128]; 32];
    loop {
        let args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: buf.len() as i32,
        };
        let n = ptrace_raw(
            libc::PTRACE_PEEKSIGINFO,
            tid,
            &args as *const PeekSiginfoArgs as usize,
            buf.as_mut_ptr() as usize,
        )? as usize;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// rseq registration of a thread, as `PTRACE_GET_RSEQ_CONFIGURATION` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RseqConfig {
    /// User address of `struct rseq` (0 if none is registered).
    pub rseq_abi_pointer: u64,
    /// Registered length.
    pub rseq_abi_size: u32,
    /// Abort signature.
    pub signature: u32,
    /// Registration flags.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}

/// Read a thread's rseq registration.
pub fn get_rseq(tid: i32) -> io::Result<RseqConfig> {
    let mut conf = RseqConfig::default();
    ptrace_raw(
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        std::mem::size_of::<RseqConfig>(),
        &mut conf as *mut RseqConfig as usize,
    )?;
    Ok(conf)
}

/// The cBPF program of seccomp filter `index` of a stopped thread (0 = the first installed, the
/// oldest: the kernel walks back from the newest by count - index - 1), as raw
/// `struct sock_filter` instructions (8 bytes each). `ENOENT` past the last filter, `EINVAL`
/// when the thread is not in filter mode. Needs `CAP_SYS_ADMIN`.
pub fn seccomp_get_filter(tid: i32, index: u64) -> io::Result<Vec<u8>> {
    let n = ptrace_raw(PTRACE_SECCOMP_GET_FILTER, tid, index as usize, 0)? as usize;
    let mut buf = vec![0u8; n * SOCK_FILTER_LEN];
    // The filter cannot change while the thread is stopped (only the thread itself, or a
    // sibling with TSYNC, adds filters, and filters are never removed), so the count holds.
    let got = ptrace_raw(
        PTRACE_SECCOMP_GET_FILTER,
        tid,
        index as usize,
        buf.as_mut_ptr() as usize,
    )? as usize;
    buf.truncate(got.min(n) * SOCK_FILTER_LEN);
    Ok(buf)
}

#[repr(C)]
struct SeccompMetadata {
    filter_off: u64,
    flags: u64,
}

/// The flags a seccomp filter was installed with (`SECCOMP_FILTER_FLAG_LOG` is the only one the
/// kernel reports), through `PTRACE_SECCOMP_GET_METADATA`.
pub fn seccomp_get_metadata(tid: i32, index: u64) -> io::Result<u64> {
    let mut md = SeccompMetadata {
        filter_off: index,
        flags: 0,
    };
    ptrace_raw(
        PTRACE_SECCOMP_GET_METADATA,
        tid,
        std::mem::size_of::<SeccompMetadata>(),
        &mut md as *mut SeccompMetadata as usize,
    )?;
    Ok(md.flags)
}

/// What `waitpid` reported about a tracee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Exited with this status.
    Exited(i32),
    /// Killed by this signal.
    Killed(i32),
    /// Stopped at a `PTRACE_EVENT_*` (event number, signal).
    Event(i32, i32),
    /// System-call entry or exit stop (`PTRACE_O_TRACESYSGOOD`).
    Syscall,
    /// Signal-delivery stop for this signal.
    Signal(i32),
}

/// `PTRACE_EVENT_STOP`, reported after `PTRACE_INTERRUPT` and for group stops of seized tasks.
pub const EVENT_STOP: i32 = 128;
/// `PTRACE_EVENT_FORK`.
pub const EVENT_FORK: i32 = libc::PTRACE_EVENT_FORK;
/// `PTRACE_EVENT_VFORK`.
pub const EVENT_VFORK: i32 = libc::PTRACE_EVENT_VFORK;
/// `PTRACE_EVENT_CLONE`.
pub const EVENT_CLONE: i32 = libc::PTRACE_EVENT_CLONE;

/// Decode a raw wait status.
pub fn decode_status(status: i32) -> Stop {
    if libc::WIFEXITED(status) {
        Stop::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Stop::Killed(libc::WTERMSIG(status))
    } else {
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        if event != 0 {
            Stop::Event(event, sig)
        } else if sig == (libc::SIGTRAP | 0x80) {
            Stop::Syscall
        } else {
            Stop::Signal(sig)
        }
    }
}

/// Wait for a state change of one tracee (`__WALL`: threads too).
pub fn wait(tid: i32) -> io::Result<Stop> {
    loop {
        if let Some((_, st)) =
            crate::wait::waitpid(crate::wait::Who::Pid(tid), crate::wait::Block::Yes)?
        {
            return Ok(decode_status(st.0));
        }
    }
}

/// Like [`wait`] but returns `None` if nothing is pending.
pub fn wait_nohang(tid: i32) -> io::Result<Option<Stop>> {
    let st = crate::wait::waitpid(crate::wait::Who::Pid(tid), crate::wait::Block::No)?;
    Ok(st.map(|(_, st)| decode_status(st.0)))
}

/// Serialise registers as the 27 `u64` fields of `user_regs_struct`, in kernel order.
pub fn regs_to_vec(r: &Regs) -> Vec<u64> {
    vec![
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ]
}

/// Inverse of [`regs_to_vec`]. Returns `None` if the slice is not 27 values long.
pub fn regs_from_slice(v: &[u64]) -> Option<Regs> {
    if v.len() != 27 {
        return None;
    }
    // SAFETY: user_regs_struct is plain old data; all-zero is a valid value.
    let mut r: Regs = unsafe { std::mem::zeroed() };
    r.r15 = v[0];
    r.r14 = v[1];
    r.r13 = v[2];
    r.r12 = v[3];
    r.rbp = v[4];
    r.rbx = v[5];
    r.r11 = v[6];
    r.r10 = v[7];
    r.r9 = v[8];
    r.r8 = v[9];
    r.rax = v[10];
    r.rcx = v[11];
    r.rdx = v[12];
    r.rsi = v[13];
    r.rdi = v[14];
    r.orig_rax = v[15];
    r.rip = v[16];
    r.cs = v[17];
    r.eflags = v[18];
    r.rsp = v[19];
    r.ss = v[20];
    r.fs_base = v[21];
    r.gs_base = v[22];
    r.ds = v[23];
    r.es = v[24];
    r.fs = v[25];
    r.gs = v[26];
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regs_roundtrip() {
        let v: Vec<u64> = (0..27).map(|i| i * 3 + 1).collect();
        let r = regs_from_slice(&v).unwrap();
        assert_eq!(regs_to_vec(&r), v);
        assert!(regs_from_slice(&v[..26]).is_none());
    }

    #[test]
    fn status_decoding() {
        assert_eq!(decode_status(0), Stop::Exited(0));
        assert_eq!(decode_status(9), Stop::Killed(9));
        // stopped by SIGTRAP|0x80
        assert_eq!(
            decode_status(((libc::SIGTRAP | 0x80) << 8) | 0x7f),
            Stop::Syscall
        );
        assert_eq!(
            decode_status((EVENT_STOP << 16) | (libc::SIGTRAP << 8) | 0x7f),
            Stop::Event(EVENT_STOP, libc::SIGTRAP)
        );
        assert_eq!(
            decode_status((libc::SIGUSR1 << 8) | 0x7f),
            Stop::Signal(libc::SIGUSR1)
        );
    }
}
