//! Seccomp: strict mode and filter chains, per thread.
//!
//! **While traced.** A task under seccomp could have any call we inject blocked, answered with
//! an error, or killed (strict mode allows only read, write, exit and sigreturn). Every such
//! thread is traced with `PTRACE_O_SUSPEND_SECCOMP` (at checkpoint once the whole tree is
//! stopped, before anything is injected; at restore from the seize of the root, inherited by
//! every task): the kernel skips seccomp for it until we detach, and detaching clears the
//! option, so the filters apply again exactly as
//! before (a checkpoint never changes them).
//!
//! **Dump.** Each thread's mode comes from its `/proc/PID/task/TID/status`; in filter mode its
//! chain is read with `PTRACE_SECCOMP_GET_FILTER` (index 0 = the oldest: the kernel walks back
//! from the most recent filter by count - index - 1) and
//! `PTRACE_SECCOMP_GET_METADATA` (the `LOG` flag). Filters are interned in a [`FilterTable`]:
//! one record per distinct (previous filter, program, flags), so the chains that threads
//! share through `TSYNC`, and children through fork, are stored once.
//!
//! **Restore.** Installing a filter needs `no_new_privs` or `CAP_SYS_ADMIN` at that moment,
//! and a container's tasks have neither once their credentials are set: filters go in after
//! the rest of a task's state and *before* its credentials (the restored task still has every
//! capability of the restorer's root). The prefix that all threads of a process share is
//! installed once from the leader with `SECCOMP_FILTER_FLAG_TSYNC` (the threads then hold the
//! same filter objects, so a later `TSYNC` by the workload finds them compatible, as before);
//! the rest of each chain is installed by its own thread. Strict mode is entered last, after
//! credentials. A child made by fork gets its own copy of the filters it had inherited (same
//! programs, same behaviour; the kernel objects are no longer shared across processes).

use crate::error::{CheckpointError, Ctx, Failure};
use crate::remote::Remote;
use stasis_image::records as rec;
use stasis_sys::{proc, ptrace};
use std::collections::HashMap;

/// Longest cBPF program the kernel accepts (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

/// The status of a stopped thread (None when it is gone); in filter or strict mode, the thread
/// is given `PTRACE_O_SUSPEND_SECCOMP` (on top of `options`, the ones it was seized with) so
/// that our injected calls get through.
pub fn suspend_if_confined(tid: i32, options: u32) -> Result<Option<proc::Status>, Failure> {
    let st = match proc::read_status(tid) {
        Ok(st) => st,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(Failure::new(tid, "reading status", e)),
    };
    if st.seccomp != 0 {
        ptrace::set_options(tid, options | ptrace::OPT_SUSPEND_SECCOMP).ctx(tid, || {
            format!(
                "thread runs under seccomp ({}): suspending it while traced \
                 (PTRACE_O_SUSPEND_SECCOMP) needs CAP_SYS_ADMIN and a stasis that is not \
                 itself under seccomp",
                mode_name(st.seccomp)
            )
        })?;
    }
    Ok(Some(st))
}

fn mode_name(mode: u32) -> &'static str {
    match mode {
        1 => "strict mode",
        2 => "filter mode",
        _ => "unknown mode",
    }
}

/// Every distinct filter of a tree, each after the one it was installed on.
#[derive(Debug, Default)]
pub struct FilterTable {
    /// The records, in `Checkpoint.seccomp_filters` order.
    pub filters: Vec<rec::SeccompFilter>,
    index: HashMap<(u32, u64, Vec<u8>), u32>,
}

impl FilterTable {
    /// The reference (index + 1) of a filter installed on `parent`, adding it if new.
    fn intern(&mut self, parent: u32, program: Vec<u8>, flags: u64) -> u32 {
        let key = (parent, flags, program);
        if let Some(&r) = self.index.get(&key) {
            return r;
        }
        self.filters.push(rec::SeccompFilter {
            parent,
            program: key.2.clone(),
            flags,
        });
        let r = self.filters.len() as u32;
        self.index.insert(key, r);
        r
    }

    /// Record the seccomp state and no_new_privs of a stopped thread of process `pid`, and
    /// suspend seccomp for
    /// it if it is confined. Called once the whole tree is stopped (a thread still running
    /// could have given it a filter with `TSYNC`), before anything is injected. A filter that
    /// hands calls to a supervisor is refused (see [`user_notif`]).
    pub fn dump_thread(&mut self, pid: i32, t: &mut rec::Thread) -> Result<(), CheckpointError> {
        let tid = t.tid;
        let st = suspend_if_confined(tid, ptrace::OPT_TRACESYSGOOD)?;
        // no_new_privs is per task too (a thread may have set it alone).
        t.no_new_privs = st.as_ref().map(|s| s.no_new_privs);
        let mode = st.map_or(0, |s| s.seccomp);
        t.seccomp_mode = match mode {
            0 => rec::SeccompMode::Disabled,
            1 => rec::SeccompMode::Strict,
            2 => rec::SeccompMode::Filter,
            m => return Err(Failure::msg(tid, format!("unknown seccomp mode {m}")).into()),
        } as i32;
        t.seccomp_filter = 0;
        if mode != 2 {
            return Ok(());
        }
        // Oldest first (the kernel counts `index` from the first filter installed), until
        // ENOENT.
        let mut chain = Vec::new();
        loop {
            let i = chain.len() as u64;
            match ptrace::seccomp_get_filter(tid, i) {
                Ok(prog) => {
                    let flags = ptrace::seccomp_get_metadata(tid, i).ctx(tid, || {
                        format!("seccomp filter {i}: PTRACE_SECCOMP_GET_METADATA")
                    })?;
                    chain.push((prog, flags));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => {
                    return Err(CheckpointError::from(Failure::new(
                        tid,
                        format!(
                            "seccomp filter {i}: PTRACE_SECCOMP_GET_FILTER (needs CAP_SYS_ADMIN \
                             and a stasis that is not itself under seccomp)"
                        ),
                        e,
                    )))
                }
            }
        }
        if chain.is_empty() {
            return Err(Failure::msg(tid, "in seccomp filter mode without a filter").into());
        }
        if let Some(i) = chain.iter().position(|(prog, _)| user_notif(prog)) {
            return Err(CheckpointError::Unsupported {
                pid,
                what: format!(
                    "thread {tid}: seccomp filter {i} hands system calls to a supervisor \
                     (SECCOMP_RET_USER_NOTIF); its listener cannot be attached to a restored \
                     filter, so those calls would fail with ENOSYS instead"
                ),
            });
        }
        let mut parent = 0;
        for (prog, flags) in chain {
            parent = self.intern(parent, prog, flags);
        }
        t.seccomp_filter = parent;
        Ok(())
    }
}

/// Whether a cBPF program can return `SECCOMP_RET_USER_NOTIF` (a `ret #k` with that action).
/// Such a filter forwards calls to whoever holds its listener fd; no interface gives a
/// restored filter a listener again, and none tells whether one still exists.
pub fn user_notif(program: &[u8]) -> bool {
    const BPF_RET_K: u16 = 0x06;
    const RET_USER_NOTIF: u32 = 0x7fc0_0000;
    program.chunks_exact(ptrace::SOCK_FILTER_LEN).any(|insn| {
        let code = u16::from_le_bytes([insn[0], insn[1]]);
        let k = u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
        code == BPF_RET_K && k & 0xffff_0000 == RET_USER_NOTIF
    })
}

/// Structural checks: references in range and always to an earlier filter, programs of whole
/// instructions within the kernel's limit, modes consistent with filters.
pub fn validate(img: &rec::Checkpoint) -> Result<(), String> {
    for (i, f) in img.seccomp_filters.iter().enumerate() {
        if f.parent as usize > i {
            return Err(format!("seccomp filter {i}: bad parent {}", f.parent));
        }
        let n = f.program.len() / ptrace::SOCK_FILTER_LEN;
        if f.program.len() % ptrace::SOCK_FILTER_LEN != 0 || n == 0 || n > MAX_INSNS {
            return Err(format!("seccomp filter {i}: bad program length"));
        }
    }
    for t in img.processes.iter().flat_map(|p| &p.threads) {
        let filter = rec::SeccompMode::Filter as i32;
        let ok = match t.seccomp_mode {
            0 | 1 => t.seccomp_filter == 0,
            m if m == filter => {
                t.seccomp_filter != 0 && t.seccomp_filter as usize <= img.seccomp_filters.len()
            }
            _ => false,
        };
        if !ok {
            return Err(format!("tid {}: bad seccomp record", t.tid));
        }
    }
    Ok(())
}

/// Ptrace options the restored tree needs: seccomp suspended if any task of it is confined.
pub fn restore_trace_opts(img: &rec::Checkpoint) -> u32 {
    let confined = img
        .processes
        .iter()
        .flat_map(|p| &p.threads)
        .any(|t| t.seccomp_mode != 0);
    if confined {
        ptrace::OPT_SUSPEND_SECCOMP
    } else {
        0
    }
}

/// A thread's chain, oldest filter first (references, index + 1).
fn chain(filters: &[rec::SeccompFilter], mut top: u32) -> Vec<u32> {
    let mut out = Vec::new();
    while top != 0 {
        out.push(top);
        top = filters[top as usize - 1].parent;
    }
    out.reverse();
    out
}

/// Install the filter `r` (a reference) in the thread behind `remote`.
fn install(
    remote: &mut Remote,
    filters: &[rec::SeccompFilter],
    r: u32,
    tsync: bool,
) -> Result<(), Failure> {
    let f = &filters[r as usize - 1];
    let prog = remote.put(64, &f.program)?;
    let len = (f.program.len() / ptrace::SOCK_FILTER_LEN) as u64;
    let fprog = remote.put(0, &crate::remote::words(&[len, prog]))?;
    let mut flags = f.flags & libc::SECCOMP_FILTER_FLAG_LOG;
    if tsync {
        flags |= libc::SECCOMP_FILTER_FLAG_TSYNC;
    }
    let what = format!(
        "installing seccomp filter {} of {} instructions{}",
        r - 1,
        len,
        if tsync {
            " shared by every thread (TSYNC)"
        } else {
            ""
        }
    );
    let res = remote.call_raw(
        &what,
        libc::SYS_seccomp,
        &[libc::SECCOMP_SET_MODE_FILTER as u64, flags, fprog],
    )?;
    match res {
        0 => Ok(()),
        r if r > 0 => Err(Failure::msg(
            remote.tid(),
            format!("{what}: thread {r} holds other filters"),
        )),
        r => Err(Failure::new(
            remote.tid(),
            format!("{what} (needs no_new_privs or CAP_SYS_ADMIN at this point)"),
            std::io::Error::from_raw_os_error(-r as i32),
        )),
    }
}

/// Install the filter chains of process `p`'s threads: the prefix they all share from the
/// leader with `TSYNC`, then the rest of each chain in its own thread. Called before
/// credentials are set. `remote(tid)` gives an injector into a thread (image tid).
pub fn restore_filters(
    p: &rec::Process,
    filters: &[rec::SeccompFilter],
    remote: &mut dyn FnMut(i32) -> Result<Remote, Failure>,
) -> Result<(), Failure> {
    let chains: Vec<Vec<u32>> = p
        .threads
        .iter()
        .map(|t| chain(filters, t.seccomp_filter))
        .collect();
    if chains.iter().all(|c| c.is_empty()) {
        return Ok(());
    }
    let mut shared = 0;
    if p.threads.len() > 1 {
        while chains
            .iter()
            .all(|c| c.len() > shared && c[shared] == chains[0][shared])
        {
            shared += 1;
        }
        if shared > 0 {
            let mut r = remote(p.pid)?;
            for &f in &chains[0][..shared] {
                install(&mut r, filters, f, true)?;
            }
        }
    }
    for (t, c) in p.threads.iter().zip(&chains) {
        if c.len() > shared {
            let mut r = remote(t.tid)?;
            for &f in &c[shared..] {
                install(&mut r, filters, f, false)?;
            }
        }
    }
    tracing::debug!(pid = p.pid, shared, "seccomp filters installed");
    Ok(())
}

/// Enter strict mode in the threads of `p` that were in it: the last change made to them (the
/// tree is traced with seccomp suspended, so the restorer's remaining calls still work).
pub fn restore_strict(
    p: &rec::Process,
    remote: &mut dyn FnMut(i32) -> Result<Remote, Failure>,
) -> Result<(), Failure> {
    for t in &p.threads {
        if t.seccomp_mode == rec::SeccompMode::Strict as i32 {
            let mut r = remote(t.tid)?;
            r.call(
                "entering seccomp strict mode",
                libc::SYS_seccomp,
                &[libc::SECCOMP_SET_MODE_STRICT as u64, 0, 0],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(parent: u32, b: u8) -> rec::SeccompFilter {
        rec::SeccompFilter {
            parent,
            program: vec![b; 8],
            flags: 0,
        }
    }

    #[test]
    fn interning_shares_prefixes() {
        let mut t = FilterTable::default();
        let a = t.intern(0, vec![1; 8], 0);
        let b = t.intern(a, vec![2; 8], 0);
        assert_eq!(t.intern(0, vec![1; 8], 0), a);
        assert_eq!(t.intern(a, vec![2; 8], 0), b);
        // Same program on another parent, or with other flags: another filter.
        let c = t.intern(b, vec![1; 8], 0);
        let d = t.intern(0, vec![1; 8], 2);
        assert_eq!((a, b, c, d), (1, 2, 3, 4));
        assert_eq!(chain(&t.filters, c), vec![1, 2, 3]);
        assert_eq!(chain(&t.filters, 0), Vec::<u32>::new());
    }

    #[test]
    fn user_notif_returns_are_found() {
        let ret = |k: u32| {
            let mut i = vec![0x06, 0, 0, 0];
            i.extend_from_slice(&k.to_le_bytes());
            i
        };
        assert!(!user_notif(&[ret(0x7fff_0000), ret(0x0005_0001)].concat()));
        assert!(user_notif(&[ret(0x7fff_0000), ret(0x7fc0_0000)].concat()));
        // A load of that constant is not a return.
        assert!(!user_notif(&[0x00, 0, 0, 0, 0, 0, 0xc0, 0x7f]));
    }

    #[test]
    fn validation() {
        let mut img = rec::Checkpoint {
            seccomp_filters: vec![filter(0, 1), filter(1, 2)],
            ..Default::default()
        };
        assert!(validate(&img).is_ok());
        img.seccomp_filters[0].parent = 1;
        assert!(validate(&img).is_err());
        img.seccomp_filters[0].parent = 0;
        img.seccomp_filters[1].program.pop();
        assert!(validate(&img).is_err());
    }
}
