//! Tasks: registers, per-thread kernel state, credentials, limits, timers and signals.
//!
//! Dump: what `/proc` tells is read from `/proc` (status, stat, limits, timers, personality,
//! cwd/root/exe, auxv); registers, XSAVE state, signal masks, queued signals and rseq come from
//! ptrace; `get_robust_list` works from outside; the rest is asked from the task itself by
//! injected system calls: `rt_sigaction` (dispositions), `brk(0)`, `getitimer`,
//! `timer_gettime`, `sigaltstack`, `prctl(PR_GET_TID_ADDRESS)`, `prctl(PR_GET_PDEATHSIG …)`.
//!
//! Restore is the mirror image, by injection into the restored task: `rt_sigaction`,
//! `sigaltstack`, `rseq`, `set_robust_list`, `set_tid_address`, `setitimer`,
//! `timer_create` with `PR_TIMER_CREATE_RESTORE_IDS` (same timer ids), `prlimit64`,
//! `personality`, `umask`, `chdir`/`chroot`, credentials last (per thread, since the kernel
//! keeps credentials per thread), and pending signals re-queued with `rt_sigqueueinfo` /
//! `rt_tgsigqueueinfo` while every signal is blocked.

use crate::error::{Ctx, Failure};
use crate::freeze::SeizedThread;
use crate::remote::{le64, words, Remote};
use stasis_image::records as rec;
use stasis_sys::{proc, ptrace};

const PR_GET_TID_ADDRESS: u64 = 40;
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const KSIGSET: u64 = 8;
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;
/// The membarrier registration commands restore issues again (every `REGISTER_*` bit).
const MEMBARRIER_REGISTER_CMDS: [u64; 4] = [1 << 2, 1 << 4, 1 << 6, 1 << 8];

/// Signals whose disposition can be read and set (all but SIGKILL and SIGSTOP).
fn settable_signals() -> impl Iterator<Item = u64> {
    (1..=64u64).filter(|&s| s != libc::SIGKILL as u64 && s != libc::SIGSTOP as u64)
}

/// Dump one thread's ptrace-visible state (no injection).
pub fn dump_thread_regs(t: &SeizedThread) -> Result<rec::Thread, Failure> {
    let tid = t.tid;
    let xsave = ptrace::get_xstate(tid).ctx(tid, || "reading XSAVE state".into())?;
    let pending = ptrace::peek_siginfo(tid, false)
        .ctx(tid, || "reading pending signals".into())?
        .into_iter()
        .map(siginfo_record)
        .collect();
    let rseq = ptrace::get_rseq(tid).ctx(tid, || "reading rseq configuration".into())?;
    let (robust, robust_len) =
        stasis_sys::sys::get_robust_list(tid).ctx(tid, || "get_robust_list".into())?;
    Ok(rec::Thread {
        tid,
        regs: ptrace::regs_to_vec(&t.regs),
        xsave,
        sigmask: t.sigmask,
        pending,
        altstack: None,
        rseq: (rseq.rseq_abi_pointer != 0).then_some(rec::Rseq {
            ptr: rseq.rseq_abi_pointer,
            len: rseq.rseq_abi_size,
            signature: rseq.signature,
            flags: rseq.flags,
        }),
        robust_list: robust,
        robust_list_len: robust_len,
        clear_child_tid: 0,
        comm: String::new(),
        nice: 0,
        affinity: stasis_sys::sys::get_affinity(tid)
            .ctx(tid, || "sched_getaffinity".into())?
            .into_iter()
            .map(|c| c as u32)
            .collect(),
        seccomp_mode: 0,
        seccomp_filter: 0,
        no_new_privs: None,
        timer_slack_ns: 0,
    })
}

fn siginfo_record(raw: ptrace::RawSiginfo) -> rec::PendingSignal {
    rec::PendingSignal {
        signo: i32::from_le_bytes(raw[0..4].try_into().expect("4 bytes")),
        siginfo: raw.to_vec(),
    }
}

/// Dump what only the thread can tell: alternate signal stack and `clear_child_tid`.
pub fn dump_thread_injected(r: &mut Remote, t: &mut rec::Thread, pid: i32) -> Result<(), Failure> {
    r.call(
        "sigaltstack(NULL, &old)",
        libc::SYS_sigaltstack,
        &[0, r.scratch(0)],
    )?;
    let b = r.get(0, 24)?;
    let flags = i32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    t.altstack = Some(rec::AltStack {
        sp: le64(&b, 0),
        flags,
        size: le64(&b, 16),
    });
    r.call(
        "prctl(PR_GET_TID_ADDRESS)",
        libc::SYS_prctl,
        &[PR_GET_TID_ADDRESS, r.scratch(32)],
    )?;
    t.clear_child_tid = r.get_u64(32)?;
    let comm = std::fs::read(format!("/proc/{pid}/task/{}/comm", t.tid))
        .ctx(t.tid, || "reading comm".into())?;
    t.comm = String::from_utf8_lossy(&comm)
        .trim_end_matches('\n')
        .to_string();
    t.nice = proc::read_task_stat(pid, t.tid)
        .ctx(t.tid, || "reading stat".into())?
        .nice as i32;
    t.timer_slack_ns = r.call(
        "prctl(PR_GET_TIMERSLACK)",
        libc::SYS_prctl,
        &[libc::PR_GET_TIMERSLACK as u64, 0, 0, 0, 0],
    )?;
    Ok(())
}

/// Dump process-wide state by injection into the leader: dispositions, brk, interval timers,
/// POSIX timer values, a few prctl values.
pub fn dump_process_injected(r: &mut Remote, p: &mut rec::Process) -> Result<(), Failure> {
    let pid = p.pid;
    for sig in settable_signals() {
        r.call(
            &format!("rt_sigaction({sig}, NULL, &old)"),
            libc::SYS_rt_sigaction,
            &[sig, 0, r.scratch((sig - 1) * 32), KSIGSET],
        )?;
    }
    let acts = r.get(0, 64 * 32)?;
    p.sigactions = (0..64)
        .map(|i| {
            let o = i * 32;
            let (handler, flags, restorer, mask) = if i == 8 || i == 18 {
                (0, 0, 0, 0)
            } else {
                (
                    le64(&acts, o),
                    le64(&acts, o + 8),
                    le64(&acts, o + 16),
                    le64(&acts, o + 24),
                )
            };
            rec::SigAction {
                handler,
                flags,
                restorer,
                mask,
            }
        })
        .collect();
    let brk = r.call("brk(0)", libc::SYS_brk, &[0])?;
    if let Some(mm) = p.mm.as_mut() {
        mm.brk = brk;
    }
    p.itimers.clear();
    for which in 0..3u64 {
        r.call("getitimer", libc::SYS_getitimer, &[which, r.scratch(4096)])?;
        let b = r.get(4096, 32)?;
        p.itimers.push(rec::ITimer {
            which: which as i32,
            interval_us: le64(&b, 0) * 1_000_000 + le64(&b, 8),
            value_us: le64(&b, 16) * 1_000_000 + le64(&b, 24),
        });
    }
    let timers = proc::read_timers(pid).ctx(pid, || "reading /proc/PID/timers".into())?;
    p.posix_timers.clear();
    for t in timers {
        r.call(
            &format!("timer_gettime({})", t.id),
            libc::SYS_timer_gettime,
            &[t.id as u64, r.scratch(4096)],
        )?;
        let b = r.get(4096, 32)?;
        p.posix_timers.push(rec::PosixTimer {
            id: t.id,
            clock_id: t.clock_id,
            notify: t.notify.sigev_notify(),
            signo: t.signal,
            sigev_value: t.sigev_value,
            notify_tid: t.notify.target(),
            interval_ns: le64(&b, 0) * 1_000_000_000 + le64(&b, 8),
            value_ns: le64(&b, 16) * 1_000_000_000 + le64(&b, 24),
        });
    }
    r.call(
        "prctl(PR_GET_PDEATHSIG)",
        libc::SYS_prctl,
        &[libc::PR_GET_PDEATHSIG as u64, r.scratch(4096)],
    )?;
    p.pdeath_signal = r
        .get(4096, 4)
        .map(|b| i32::from_le_bytes(b.try_into().expect("4")))?;
    p.dumpable = r.call(
        "prctl(PR_GET_DUMPABLE)",
        libc::SYS_prctl,
        &[libc::PR_GET_DUMPABLE as u64],
    )? as i32;
    r.call(
        "prctl(PR_GET_CHILD_SUBREAPER)",
        libc::SYS_prctl,
        &[libc::PR_GET_CHILD_SUBREAPER as u64, r.scratch(4096)],
    )?;
    p.child_subreaper = r.get(4096, 4)?[0] != 0;
    p.thp_disable = r.call(
        "prctl(PR_GET_THP_DISABLE)",
        libc::SYS_prctl,
        &[libc::PR_GET_THP_DISABLE as u64, 0, 0, 0, 0],
    )? as u32;
    let regs = r.call_raw(
        "membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)",
        libc::SYS_membarrier,
        &[MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0],
    )?;
    if regs < 0 {
        // Before Linux 6.3 the registrations cannot be read.
        tracing::warn!(
            pid,
            errno = -regs,
            "membarrier registrations cannot be read"
        );
    }
    p.membarrier = regs.max(0) as u32;
    if let Some(c) = p.creds.as_mut() {
        c.securebits = r.call(
            "prctl(PR_GET_SECUREBITS)",
            libc::SYS_prctl,
            &[libc::PR_GET_SECUREBITS as u64],
        )? as u32;
    }
    Ok(())
}

/// Whether a stop (`libc::WSTOPPED`) or a continue (`libc::WCONTINUED`) of `child` (its pid as
/// its parent sees it) is still to be reported to its parent (behind `r`):
/// `waitid(P_PID, child, what | WNOWAIT | WNOHANG)` answers without consuming it.
pub fn report_pending(r: &mut Remote, child: i32, what: i32) -> Result<bool, Failure> {
    let si = r.put(0, &[0u8; 128])?;
    r.call(
        &format!("waitid(P_PID, {child}, {what:#x}|WNOWAIT) for its stop or continue"),
        libc::SYS_waitid,
        &[
            libc::P_PID as u64,
            child as u64,
            si,
            (what | libc::WNOWAIT | libc::WNOHANG) as u64 | 0x4000_0000,
            0,
        ],
    )?;
    Ok(i32::from_le_bytes(r.get(16, 4)?.try_into().expect("4")) == child)
}

/// The record of a zombie child: who it was and its wait status (nothing else is left).
pub fn dump_zombie(pid: i32) -> Result<rec::Process, Failure> {
    let stat = proc::read_stat(pid).ctx(pid, || "reading a zombie's stat".into())?;
    Ok(rec::Process {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        exit_signal: stat.exit_signal,
        threads: vec![rec::Thread {
            tid: pid,
            comm: stat.comm.clone(),
            ..Default::default()
        }],
        start_time: stat.starttime,
        zombie: true,
        exit_status: stat.exit_code,
        ..Default::default()
    })
}

/// `/proc/PID/loginuid` (None on a kernel without audit).
fn read_loginuid(pid: i32) -> Result<Option<u32>, Failure> {
    match std::fs::read_to_string(format!("/proc/{pid}/loginuid")) {
        Ok(s) => Ok(Some(
            s.trim().parse().ctx(pid, || "parsing loginuid".into())?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::new(pid, "reading loginuid", e)),
    }
}

/// Fill the parts of a process record that /proc gives without injection.
pub fn dump_process_proc(pid: i32) -> Result<rec::Process, Failure> {
    let stat = proc::read_stat(pid).ctx(pid, || "reading stat".into())?;
    let status = proc::read_status(pid).ctx(pid, || "reading status".into())?;
    let limits = proc::read_limits(pid).ctx(pid, || "reading limits".into())?;
    let auxv = proc::read_auxv(pid).ctx(pid, || "reading auxv".into())?;
    let personality = std::fs::read_to_string(format!("/proc/{pid}/personality"))
        .ctx(pid, || "reading personality".into())?;
    let personality =
        u32::from_str_radix(personality.trim(), 16).ctx(pid, || "parsing personality".into())?;
    let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let mut p = rec::Process {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        exit_signal: stat.exit_signal,
        threads: Vec::new(),
        mm: Some(rec::MmState {
            start_code: stat.start_code,
            end_code: stat.end_code,
            start_data: stat.start_data,
            end_data: stat.end_data,
            start_brk: stat.start_brk,
            brk: 0,
            start_stack: stat.start_stack,
            arg_start: stat.arg_start,
            arg_end: stat.arg_end,
            env_start: stat.env_start,
            env_end: stat.env_end,
            auxv: auxv.iter().flat_map(|&(k, v)| [k, v]).collect(),
        }),
        vmas: Vec::new(),
        fds: Vec::new(),
        sigactions: Vec::new(),
        shared_pending: Vec::new(),
        creds: Some(rec::Creds {
            uids: status.uid.to_vec(),
            gids: status.gid.to_vec(),
            groups: status.groups.clone(),
            cap_inh: status.cap_inh,
            cap_prm: status.cap_prm,
            cap_eff: status.cap_eff,
            cap_bnd: status.cap_bnd,
            cap_amb: status.cap_amb,
            securebits: 0,
            no_new_privs: status.no_new_privs,
        }),
        rlimits: limits
            .iter()
            .map(|l| rec::Rlimit {
                resource: l.resource,
                soft: l.soft,
                hard: l.hard,
            })
            .collect(),
        personality,
        umask: status.umask.unwrap_or(0o022),
        cwd: s(proc::read_cwd(pid).ctx(pid, || "reading cwd".into())?),
        root: s(proc::read_root(pid).ctx(pid, || "reading root".into())?),
        exe: s(proc::read_exe(pid).ctx(pid, || "reading exe".into())?),
        itimers: Vec::new(),
        posix_timers: Vec::new(),
        pdeath_signal: 0,
        dumpable: 1,
        child_subreaper: false,
        start_time: stat.starttime,
        ctty: crate::pty::dump_ctty(&stat),
        oom_score_adj: std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .ctx(pid, || "reading oom_score_adj".into())?
            .trim()
            .parse()
            .unwrap_or(0),
        loginuid: read_loginuid(pid)?,
        ..Default::default()
    };
    crate::files::ghost_dirs::dump(&mut p)?;
    Ok(p)
}

/// Shared (process-wide) pending signals, read through any thread.
pub fn dump_shared_pending(tid: i32) -> Result<Vec<rec::PendingSignal>, Failure> {
    Ok(ptrace::peek_siginfo(tid, true)
        .ctx(tid, || "reading shared pending signals".into())?
        .into_iter()
        .map(siginfo_record)
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Restore side.

/// Restore dispositions of all signals (the blank process inherited stasis's).
pub fn restore_sigactions(r: &mut Remote, p: &rec::Process) -> Result<(), Failure> {
    if p.sigactions.len() != 64 {
        return Err(Failure::msg(p.pid, "image has no signal dispositions"));
    }
    let all: Vec<u8> = p
        .sigactions
        .iter()
        .flat_map(|a| words(&[a.handler, a.flags, a.restorer, a.mask]))
        .collect();
    r.put(0, &all)?;
    for sig in settable_signals() {
        r.call(
            &format!("signal {sig} disposition: rt_sigaction"),
            libc::SYS_rt_sigaction,
            &[sig, r.scratch((sig - 1) * 32), 0, KSIGSET],
        )?;
    }
    Ok(())
}

/// PR_SET_MM_MAP: code/data/brk/stack/arg/env boundaries, auxv and the exe file.
pub fn restore_mm(r: &mut Remote, mm: &rec::MmState, exe_fd: u64) -> Result<(), Failure> {
    let auxv = words(&mm.auxv);
    let auxv_addr = r.put(2048, &auxv)?;
    let mut map = words(&[
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_addr,
    ]);
    map.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    map.extend_from_slice(&(exe_fd as u32).to_le_bytes());
    let addr = r.put(0, &map)?;
    r.call(
        "prctl(PR_SET_MM, PR_SET_MM_MAP)",
        libc::SYS_prctl,
        &[PR_SET_MM, PR_SET_MM_MAP, addr, map.len() as u64, 0],
    )?;
    Ok(())
}

/// Process-wide attributes: cwd, root, umask, personality, limits, timers, prctl values.
pub fn restore_process_misc(r: &mut Remote, p: &rec::Process) -> Result<(), Failure> {
    crate::files::ghost_dirs::restore_cwd_root(r, p)?;
    r.call("umask", libc::SYS_umask, &[p.umask as u64])?;
    r.call(
        "personality",
        libc::SYS_personality,
        &[p.personality as u64],
    )?;
    for l in &p.rlimits {
        let addr = r.put(0, &words(&[l.soft, l.hard]))?;
        let res = r.call_raw(
            "prlimit64",
            libc::SYS_prlimit64,
            &[0, l.resource as u64, addr, 0],
        )?;
        if res < 0 {
            return Err(Failure::new(
                p.pid,
                format!(
                    "restoring rlimit {} (soft {}, hard {}); raising a hard limit needs CAP_SYS_RESOURCE",
                    l.resource, l.soft, l.hard
                ),
                std::io::Error::from_raw_os_error(-res as i32),
            ));
        }
    }
    for t in &p.itimers {
        if t.interval_us == 0 && t.value_us == 0 {
            continue;
        }
        let v = words(&[
            t.interval_us / 1_000_000,
            t.interval_us % 1_000_000,
            t.value_us / 1_000_000,
            t.value_us % 1_000_000,
        ]);
        let addr = r.put(0, &v)?;
        r.call("setitimer", libc::SYS_setitimer, &[t.which as u64, addr, 0])?;
    }
    if !p.posix_timers.is_empty() {
        r.call(
            "prctl(PR_TIMER_CREATE_RESTORE_IDS, ON) (needs Linux 6.16)",
            libc::SYS_prctl,
            &[PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0],
        )?;
        for t in &p.posix_timers {
            // struct sigevent: value(8) signo(4) notify(4) tid(4) pad → 64 bytes.
            let mut sev = vec![0u8; 64];
            sev[0..8].copy_from_slice(&t.sigev_value.to_le_bytes());
            sev[8..12].copy_from_slice(&t.signo.to_le_bytes());
            sev[12..16].copy_from_slice(&t.notify.to_le_bytes());
            sev[16..20].copy_from_slice(&t.notify_tid.to_le_bytes());
            let sev_addr = r.put(0, &sev)?;
            let id_addr = r.put(64, &t.id.to_le_bytes())?;
            r.call(
                &format!("timer_create (id {})", t.id),
                libc::SYS_timer_create,
                &[t.clock_id as u64, sev_addr, id_addr],
            )?;
            let got = i32::from_le_bytes(r.get(64, 4)?.try_into().expect("4"));
            if got != t.id {
                return Err(Failure::msg(
                    p.pid,
                    format!("POSIX timer id {} came back as {got}", t.id),
                ));
            }
            if t.value_ns != 0 || t.interval_ns != 0 {
                let spec = words(&[
                    t.interval_ns / 1_000_000_000,
                    t.interval_ns % 1_000_000_000,
                    t.value_ns / 1_000_000_000,
                    t.value_ns % 1_000_000_000,
                ]);
                let a = r.put(128, &spec)?;
                r.call(
                    &format!("timer_settime({})", t.id),
                    libc::SYS_timer_settime,
                    &[t.id as u64, 0, a, 0],
                )?;
            }
        }
        r.call(
            "prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)",
            libc::SYS_prctl,
            &[PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0],
        )?;
    }
    r.call(
        "prctl(PR_SET_PDEATHSIG)",
        libc::SYS_prctl,
        &[libc::PR_SET_PDEATHSIG as u64, p.pdeath_signal as u64],
    )?;
    if p.child_subreaper {
        r.call(
            "prctl(PR_SET_CHILD_SUBREAPER)",
            libc::SYS_prctl,
            &[libc::PR_SET_CHILD_SUBREAPER as u64, 1],
        )?;
    }
    if p.thp_disable & 1 != 0 {
        // Bit 1 is PR_THP_DISABLE_EXCEPT_ADVISED (Linux 6.18), given back as the flags.
        r.call(
            "prctl(PR_SET_THP_DISABLE)",
            libc::SYS_prctl,
            &[
                libc::PR_SET_THP_DISABLE as u64,
                1,
                (p.thp_disable & 2) as u64,
                0,
                0,
            ],
        )?;
    }
    for cmd in MEMBARRIER_REGISTER_CMDS {
        if p.membarrier as u64 & cmd != 0 {
            r.call(
                &format!("membarrier registration {cmd:#x}"),
                libc::SYS_membarrier,
                &[cmd, 0, 0],
            )?;
        }
    }
    Ok(())
}

/// The audit login uid, written by the thread itself (`/proc/thread-self/loginuid`; the kernel
/// takes it only from the task, and a second change only with CAP_AUDIT_CONTROL, which the
/// restorer still has). Skipped when it is already the one the thread inherited (`ours`).
pub fn restore_loginuid(
    r: &mut Remote,
    p: &rec::Process,
    ours: Option<u32>,
) -> Result<(), Failure> {
    let Some(uid) = p.loginuid else {
        return Ok(());
    };
    if Some(uid) == ours {
        return Ok(());
    }
    let path = r.put_str(0, "/proc/thread-self/loginuid")?;
    let fd = r.call(
        "open /proc/thread-self/loginuid",
        libc::SYS_openat,
        &[libc::AT_FDCWD as u64, path, libc::O_WRONLY as u64, 0],
    )?;
    let text = uid.to_string();
    let buf = r.put(256, text.as_bytes())?;
    let res = r.call_raw(
        &format!("writing loginuid {uid}"),
        libc::SYS_write,
        &[fd, buf, text.len() as u64],
    )?;
    r.call("close", libc::SYS_close, &[fd])?;
    if res < 0 {
        return Err(Failure::new(
            r.tid(),
            format!("setting loginuid {uid}"),
            std::io::Error::from_raw_os_error(-res as i32),
        ));
    }
    Ok(())
}

/// The loginuid restored tasks inherit from us.
pub fn own_loginuid() -> Option<u32> {
    read_loginuid(stasis_sys::sys::getpid()).ok().flatten()
}

/// Drop every signal queued for the thread while it was being restored (a child made a
/// zombie or stopped again notifies its parent with SIGCHLD): the saved ones come next.
pub fn drain_pending(r: &mut Remote) -> Result<(), Failure> {
    let set = r.put(0, &u64::MAX.to_le_bytes())?;
    let ts = r.put(64, &[0u8; 16])?;
    for _ in 0..256 {
        let res = r.call_raw(
            "rt_sigtimedwait (dropping signals raised while restoring)",
            libc::SYS_rt_sigtimedwait,
            &[set, 0, ts, KSIGSET],
        )?;
        if res == -(libc::EAGAIN as i64) {
            return Ok(());
        }
        if res < 0 && res != -(libc::EINTR as i64) {
            return Err(Failure::new(
                r.tid(),
                "rt_sigtimedwait (dropping signals raised while restoring)",
                std::io::Error::from_raw_os_error(-res as i32),
            ));
        }
    }
    Err(Failure::msg(
        r.tid(),
        "signals keep arriving while restoring",
    ))
}

/// Per-thread state: alternate stack, rseq, robust list, clear_child_tid, name.
pub fn restore_thread(r: &mut Remote, t: &rec::Thread) -> Result<(), Failure> {
    // Always set: a task made by fork inherits its parent's alternate stack (the blank root
    // would keep stasis's own), so a disabled one must be disabled explicitly.
    let a = t.altstack.clone().unwrap_or(rec::AltStack {
        sp: 0,
        flags: libc::SS_DISABLE,
        size: 0,
    });
    let (sp, flags, size) = if a.flags & libc::SS_DISABLE != 0 {
        (0, libc::SS_DISABLE, 0)
    } else {
        // SS_ONSTACK is reported, not set.
        (a.sp, a.flags & !libc::SS_ONSTACK, a.size)
    };
    let mut b = words(&[sp, 0, size]);
    b[8..12].copy_from_slice(&flags.to_le_bytes());
    let addr = r.put(0, &b)?;
    r.call("sigaltstack", libc::SYS_sigaltstack, &[addr, 0])?;
    if let Some(s) = &t.rseq {
        r.call(
            "rseq registration",
            libc::SYS_rseq,
            &[s.ptr, s.len as u64, 0, s.signature as u64],
        )?;
    }
    let len = if t.robust_list_len == 0 {
        24
    } else {
        t.robust_list_len
    };
    r.call(
        "set_robust_list",
        libc::SYS_set_robust_list,
        &[t.robust_list, len],
    )?;
    r.call(
        "set_tid_address",
        libc::SYS_set_tid_address,
        &[t.clear_child_tid],
    )?;
    if t.timer_slack_ns != 0 {
        r.call(
            "prctl(PR_SET_TIMERSLACK)",
            libc::SYS_prctl,
            &[libc::PR_SET_TIMERSLACK as u64, t.timer_slack_ns, 0, 0, 0],
        )?;
    }
    if !t.comm.is_empty() {
        let a = r.put_str(0, &t.comm)?;
        r.call(
            "prctl(PR_SET_NAME)",
            libc::SYS_prctl,
            &[libc::PR_SET_NAME as u64, a],
        )?;
    }
    Ok(())
}

/// Re-queue pending signals: thread-directed ones in the thread itself, process-wide ones in
/// the leader. Every signal is blocked at this point, so nothing is delivered early.
pub fn restore_pending(
    r: &mut Remote,
    pid: i32,
    tid: i32,
    sigs: &[rec::PendingSignal],
    shared: bool,
) -> Result<(), Failure> {
    for s in sigs {
        if s.siginfo.len() != 128 {
            return Err(Failure::msg(tid, "pending signal record has a bad siginfo"));
        }
        let a = r.put(0, &s.siginfo)?;
        if shared {
            r.call(
                &format!("re-queue pending signal {}", s.signo),
                libc::SYS_rt_sigqueueinfo,
                &[pid as u64, s.signo as u64, a],
            )?;
        } else {
            r.call(
                &format!("re-queue pending signal {} for thread {tid}", s.signo),
                libc::SYS_rt_tgsigqueueinfo,
                &[pid as u64, tid as u64, s.signo as u64, a],
            )?;
        }
    }
    Ok(())
}

/// The dumpable flag: set after credentials, whose change resets it.
pub fn restore_dumpable(r: &mut Remote, p: &rec::Process) -> Result<(), Failure> {
    r.call(
        "prctl(PR_SET_DUMPABLE)",
        libc::SYS_prctl,
        &[libc::PR_SET_DUMPABLE as u64, p.dumpable as u64],
    )?;
    Ok(())
}

/// Credentials, in one thread (the kernel keeps them per thread).
pub fn restore_creds(r: &mut Remote, c: &rec::Creds) -> Result<(), Failure> {
    if c.uids.len() != 4 || c.gids.len() != 4 {
        return Err(Failure::msg(r.tid(), "image credentials are malformed"));
    }
    let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
    let ga = r.put(0, &groups)?;
    r.call(
        "setgroups",
        libc::SYS_setgroups,
        &[c.groups.len() as u64, ga],
    )?;
    r.call(
        "setresgid",
        libc::SYS_setresgid,
        &[c.gids[0] as u64, c.gids[1] as u64, c.gids[2] as u64],
    )?;
    r.call_raw("setfsgid", libc::SYS_setfsgid, &[c.gids[3] as u64])?;
    for cap in 0..64u64 {
        if c.cap_bnd & (1 << cap) == 0 {
            let res = r.call_raw(
                "PR_CAPBSET_DROP",
                libc::SYS_prctl,
                &[libc::PR_CAPBSET_DROP as u64, cap],
            )?;
            if res < 0 && res != -(libc::EINVAL as i64) {
                return Err(Failure::new(
                    r.tid(),
                    format!("dropping capability {cap} from the bounding set"),
                    std::io::Error::from_raw_os_error(-res as i32),
                ));
            }
        }
    }
    // Securebits other than KEEP_CAPS need CAP_SETPCAP: set them while we are still root,
    // with KEEP_CAPS so that the uid change keeps the permitted set; KEEP_CAPS itself goes
    // back to its saved value at the end (PR_SET_KEEPCAPS needs no privilege).
    const KEEP_CAPS: u32 = 1 << 4;
    let others = c.securebits & !KEEP_CAPS;
    if others != 0 {
        r.call(
            "prctl(PR_SET_SECUREBITS)",
            libc::SYS_prctl,
            &[
                libc::PR_SET_SECUREBITS as u64,
                (c.securebits | KEEP_CAPS) as u64,
            ],
        )?;
    } else {
        r.call(
            "prctl(PR_SET_KEEPCAPS)",
            libc::SYS_prctl,
            &[libc::PR_SET_KEEPCAPS as u64, 1],
        )?;
    }
    r.call(
        "setresuid",
        libc::SYS_setresuid,
        &[c.uids[0] as u64, c.uids[1] as u64, c.uids[2] as u64],
    )?;
    r.call_raw("setfsuid", libc::SYS_setfsuid, &[c.uids[3] as u64])?;
    let capset = |r: &mut Remote, eff: u64, prm: u64, inh: u64| -> Result<(), Failure> {
        let mut b = Vec::new();
        b.extend_from_slice(&0x2008_0522u32.to_le_bytes());
        b.extend_from_slice(&0i32.to_le_bytes());
        for (e, p, i) in [
            (eff as u32, prm as u32, inh as u32),
            ((eff >> 32) as u32, (prm >> 32) as u32, (inh >> 32) as u32),
        ] {
            b.extend_from_slice(&e.to_le_bytes());
            b.extend_from_slice(&p.to_le_bytes());
            b.extend_from_slice(&i.to_le_bytes());
        }
        let a = r.put(0, &b)?;
        r.call("capset", libc::SYS_capset, &[a, a + 8])?;
        Ok(())
    };
    capset(r, c.cap_eff, c.cap_prm, c.cap_inh)?;
    if c.securebits & KEEP_CAPS == 0 {
        r.call(
            "prctl(PR_SET_KEEPCAPS, 0)",
            libc::SYS_prctl,
            &[libc::PR_SET_KEEPCAPS as u64, 0],
        )?;
    }
    for cap in 0..64u64 {
        if c.cap_amb & (1 << cap) != 0 {
            r.call(
                "PR_CAP_AMBIENT_RAISE",
                libc::SYS_prctl,
                &[
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap,
                    0,
                    0,
                ],
            )?;
        }
    }
    if c.no_new_privs {
        r.call(
            "PR_SET_NO_NEW_PRIVS",
            libc::SYS_prctl,
            &[libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// Scheduling attributes set from outside: nice and CPU affinity per thread, oom_score_adj.
/// CPUs missing on this machine are dropped from an affinity mask (if none is left, the mask is
/// left as it is).
/// `host` maps the image's pids to this pid namespace's.
pub fn restore_sched(p: &rec::Process, host: &dyn Fn(i32) -> i32) -> Result<(), Failure> {
    std::fs::write(
        format!("/proc/{}/oom_score_adj", host(p.pid)),
        p.oom_score_adj.to_string(),
    )
    .ctx(p.pid, || {
        format!("writing oom_score_adj {}", p.oom_score_adj)
    })?;
    let online = stasis_sys::sys::get_affinity(stasis_sys::sys::getpid()).unwrap_or_default();
    for t in &p.threads {
        stasis_sys::sys::set_nice(host(t.tid), t.nice)
            .ctx(t.tid, || format!("setpriority(nice {})", t.nice))?;
        let cpus: Vec<usize> = t
            .affinity
            .iter()
            .map(|&c| c as usize)
            .filter(|c| online.contains(c))
            .collect();
        if !cpus.is_empty() {
            stasis_sys::sys::set_affinity(host(t.tid), &cpus)
                .ctx(t.tid, || "sched_setaffinity".into())?;
        }
    }
    Ok(())
}
