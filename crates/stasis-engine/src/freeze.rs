//! Freezing a process tree with ptrace, and letting it go again.
//!
//! Every thread of every process in the tree is `PTRACE_SEIZE`d and `PTRACE_INTERRUPT`ed. The
//! tree is walked from the root through `/proc/PID/task/TID/children` repeatedly until a pass
//! finds no new thread or process: once all threads of a process are stopped it cannot fork or
//! clone any more, so the walk converges.
//!
//! A signal that arrives while we wait for the interrupt stop shows up as a signal-delivery
//! stop; it is delivered (`PTRACE_CONT` with the signal), exactly as it would have been without
//! us, and we wait again for the pending interrupt.
//!
//! [`Frozen`] is the guard of this side effect: dropping it without [`Frozen::kill`] puts every
//! thread back as it was (registers with syscall-restart fix-up, signal mask, our parasite
//! mapping removed) and detaches, so a failed checkpoint leaves the tree running.

use crate::error::{CheckpointError, Failure};
use crate::remote::{Remote, PARASITE_LEN};
use stasis_sys::proc;
use stasis_sys::ptrace::{self, Regs, Stop};
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// One stopped thread and what we must put back.
#[derive(Debug, Clone)]
pub struct SeizedThread {
    /// Thread id.
    pub tid: i32,
    /// Registers at the stop.
    pub regs: Regs,
    /// Signal mask at the stop.
    pub sigmask: u64,
    /// We changed the signal mask (blocked everything while injecting).
    pub mask_changed: bool,
    /// The signal of the first `PTRACE_EVENT_STOP`: SIGTRAP for our interrupt, the stop
    /// signal for a thread that was in a job-control stop.
    pub stop_sig: i32,
}

/// One stopped process.
#[derive(Debug, Clone)]
pub struct SeizedProc {
    /// Thread-group id.
    pub pid: i32,
    /// Parent pid.
    pub ppid: i32,
    /// Threads, leader first.
    pub threads: Vec<SeizedThread>,
    /// Our gadget/scratch mapping, if mapped.
    pub parasite: Option<u64>,
    /// Stopped by job control when seized (state T); it stays stopped when released.
    pub stopped: bool,
}

/// A child of the tree that has exited and is not yet reaped (nothing to seize: it is
/// recorded as it is, and restored as a zombie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zombie {
    /// Its pid.
    pub pid: i32,
    /// Its parent (a process of the tree).
    pub ppid: i32,
}

/// The frozen tree (guard).
pub struct Frozen {
    /// Processes, parents before children; the root first.
    pub procs: Vec<SeizedProc>,
    /// Zombie children of the tree's processes.
    pub zombies: Vec<Zombie>,
    done: bool,
}

const SYS_RESTART_SYSCALL: u64 = 219;
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// Registers to resume a thread with, given the registers saved at an interrupt stop.
///
/// A thread stopped inside an interruptible system call shows `rax = -ERESTART*` and
/// `orig_rax = nr`. We make it re-enter the call (`rip -= 2`, `rax = nr`). For
/// `-ERESTART_RESTARTBLOCK` (nanosleep, clock_nanosleep, …) the same task can continue through
/// `restart_syscall`; a newly created task has no restart block, so it gets `-EINTR`.
pub fn resume_regs(saved: &Regs, same_task: bool) -> Regs {
    let mut r = *saved;
    if (saved.orig_rax as i64) < 0 {
        return r;
    }
    match -(saved.rax as i64) {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            r.rax = saved.orig_rax;
            r.rip = saved.rip.wrapping_sub(2);
        }
        ERESTART_RESTARTBLOCK => {
            if same_task {
                r.rax = SYS_RESTART_SYSCALL;
                r.rip = saved.rip.wrapping_sub(2);
            } else {
                r.rax = (-(libc::EINTR as i64)) as u64;
            }
        }
        _ => {}
    }
    r
}

fn zombie_error(pid: i32, name: &str, ppid: i32) -> CheckpointError {
    CheckpointError::Unsupported {
        pid,
        what: format!(
            "process '{name}' (child of {ppid}) kept exiting while the tree was frozen; {ZOMBIE_MARK}"
        ),
    }
}

/// A task caught between exit and zombie: the tree is frozen again until it is a zombie.
const ZOMBIE_MARK: &str = "it never settled as a zombie";

fn is_zombie_error(e: &CheckpointError) -> bool {
    matches!(e, CheckpointError::Unsupported { what, .. } if what.ends_with(ZOMBIE_MARK))
}

/// How long a thread may take to reach its interrupt stop before `slow` is called.
const STOP_PATIENCE: Duration = Duration::from_millis(50);

fn seize_one(tid: i32, slow: &mut dyn FnMut()) -> Result<Option<SeizedThread>, CheckpointError> {
    match ptrace::seize(tid, ptrace::OPT_TRACESYSGOOD) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // The kernel refuses to attach to a task that has just exited.
            if let Ok(st) = proc::read_status(tid) {
                if st.state == 'Z' || st.state == 'X' {
                    return Err(zombie_error(tid, &st.name, st.ppid));
                }
            }
            return Err(Failure::new(tid, "PTRACE_SEIZE", e).into());
        }
        Err(e) => return Err(Failure::new(tid, "PTRACE_SEIZE", e).into()),
    }
    if let Err(e) = ptrace::interrupt(tid) {
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(None);
        }
        return Err(Failure::new(tid, "PTRACE_INTERRUPT", e).into());
    }
    // A thread that does not stop soon may be waiting on another task (a vfork parent waits
    // for its child to exec or exit): if the tree is frozen by its cgroup, that task cannot
    // move, so `slow` (which thaws) is called once, then we wait for the stop.
    let started = Instant::now();
    let mut patient = true;
    let stop_sig = loop {
        let st = if patient {
            match ptrace::wait_nohang(tid) {
                Ok(None) if started.elapsed() < STOP_PATIENCE => {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                Ok(None) => {
                    patient = false;
                    slow();
                    continue;
                }
                Ok(Some(s)) => Ok(s),
                Err(e) => Err(e),
            }
        } else {
            ptrace::wait(tid)
        };
        match st {
            Ok(Stop::Event(ptrace::EVENT_STOP, sig)) => break sig,
            Ok(Stop::Signal(sig)) => {
                // A signal arrived first: deliver it as the kernel would have, then wait for the
                // interrupt, which is still pending.
                ptrace::cont(tid, sig).map_err(|e| Failure::new(tid, "PTRACE_CONT", e))?;
            }
            Ok(Stop::Exited(_)) | Ok(Stop::Killed(_)) => return Ok(None),
            Ok(other) => {
                ptrace::cont(tid, 0).map_err(|e| Failure::new(tid, format!("{other:?}"), e))?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(None),
            Err(e) => return Err(Failure::new(tid, "waitpid", e).into()),
        }
    };
    let regs = ptrace::get_regs(tid).map_err(|e| Failure::new(tid, "PTRACE_GETREGS", e))?;
    let sigmask =
        ptrace::get_sigmask(tid).map_err(|e| Failure::new(tid, "PTRACE_GETSIGMASK", e))?;
    Ok(Some(SeizedThread {
        tid,
        regs,
        sigmask,
        mask_changed: false,
        stop_sig,
    }))
}

/// What the walk found at a pid it had not seen.
enum Found {
    /// A live process to seize (stopped by job control or not).
    Live(bool),
    /// A zombie (recorded as it is).
    Zombie(Zombie),
    /// Gone already.
    Gone,
}

fn refuse_state(pid: i32) -> Result<Found, CheckpointError> {
    let st = match proc::read_status(pid) {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Ok(Found::Gone),
        Err(e) => return Err(Failure::new(pid, "reading status", e).into()),
    };
    let unsupported = |what: String| Err(CheckpointError::Unsupported { pid, what });
    if st.state == 'Z' {
        let tasks = proc::list_tasks(pid).unwrap_or_default();
        if tasks.iter().any(|&t| t != pid) {
            return unsupported(
                "the thread-group leader has exited while other threads run; not supported yet"
                    .into(),
            );
        }
        return Ok(Found::Zombie(Zombie { pid, ppid: st.ppid }));
    }
    if st.state == 'X' {
        return Err(zombie_error(pid, &st.name, st.ppid));
    }
    if st.tracer_pid != 0 && st.tracer_pid != stasis_sys::sys::getpid() {
        return unsupported(format!(
            "process '{}' is already traced by pid {} (a debugger?)",
            st.name, st.tracer_pid
        ));
    }
    Ok(Found::Live(st.state == 'T'))
}

impl Frozen {
    /// Seize and stop every thread of the tree rooted at `root`.
    ///
    /// Zombie children are recorded as they are. A task caught while exiting (not yet a
    /// zombie) cannot be seized: then the tree is released and frozen again, a few times.
    pub fn seize(root: i32) -> Result<Frozen, CheckpointError> {
        Self::seize_with(
            root,
            &mut |attempt| {
                std::thread::sleep(Duration::from_millis(5 * attempt));
                Ok(())
            },
            &mut || {},
        )
    }

    /// Like [`Frozen::seize`], with `pause(attempt)` between attempts (a partition thaws its
    /// cgroup there, so a task caught while exiting can become a zombie, and freezes it again), and
    /// `slow()` called when a thread takes long to stop (a partition thaws its cgroup: the
    /// thread may wait for a frozen task; the walk still converges without the freezer).
    pub fn seize_with(
        root: i32,
        pause: &mut dyn FnMut(u64) -> Result<(), CheckpointError>,
        slow: &mut dyn FnMut(),
    ) -> Result<Frozen, CheckpointError> {
        let mut attempt = 0;
        loop {
            match Self::seize_once(root, slow) {
                Err(e) if is_zombie_error(&e) && attempt < 20 => {
                    attempt += 1;
                    pause(attempt)?;
                }
                other => return other,
            }
        }
    }

    fn seize_once(root: i32, slow: &mut dyn FnMut()) -> Result<Frozen, CheckpointError> {
        if !std::path::Path::new(&format!("/proc/{root}")).exists() {
            return Err(CheckpointError::NoSuchProcess(root));
        }
        let mut frozen = Frozen {
            procs: Vec::new(),
            zombies: Vec::new(),
            done: false,
        };
        let mut seen_tids: HashSet<i32> = HashSet::new();
        let mut dead_tids: HashSet<i32> = HashSet::new();
        loop {
            let mut changed = false;
            let mut queue = VecDeque::from([root]);
            let mut visited = HashSet::new();
            while let Some(pid) = queue.pop_front() {
                if !visited.insert(pid) {
                    continue;
                }
                let idx = match frozen.procs.iter().position(|p| p.pid == pid) {
                    Some(i) => i,
                    None => {
                        let stopped = match refuse_state(pid)? {
                            Found::Live(stopped) => stopped,
                            Found::Gone if pid != root => continue,
                            Found::Gone => return Err(CheckpointError::NoSuchProcess(root)),
                            Found::Zombie(_) if pid == root => {
                                return Err(CheckpointError::NoSuchProcess(root))
                            }
                            Found::Zombie(z) => {
                                if !frozen.zombies.contains(&z) {
                                    frozen.zombies.push(z);
                                    changed = true;
                                }
                                continue;
                            }
                        };
                        let ppid = match proc::read_stat(pid) {
                            Ok(s) => s.ppid,
                            Err(e) if e.is_not_found() && pid != root => continue,
                            Err(e) => return Err(Failure::new(pid, "reading stat", e).into()),
                        };
                        frozen.procs.push(SeizedProc {
                            pid,
                            ppid,
                            threads: Vec::new(),
                            parasite: None,
                            stopped,
                        });
                        changed = true;
                        frozen.procs.len() - 1
                    }
                };
                let tids = match proc::list_tasks(pid) {
                    Ok(t) => t,
                    Err(e) if e.is_not_found() && pid != root => continue,
                    Err(e) => return Err(Failure::new(pid, "listing threads", e).into()),
                };
                // Leader first.
                let mut ordered: Vec<i32> = tids.iter().copied().filter(|&t| t == pid).collect();
                ordered.extend(tids.iter().copied().filter(|&t| t != pid));
                for tid in ordered {
                    if seen_tids.contains(&tid) || dead_tids.contains(&tid) {
                        continue;
                    }
                    match seize_one(tid, slow)? {
                        Some(t) => {
                            seen_tids.insert(tid);
                            frozen.procs[idx].threads.push(t);
                            changed = true;
                        }
                        None => {
                            dead_tids.insert(tid);
                        }
                    }
                }
                let threads: Vec<i32> = frozen.procs[idx].threads.iter().map(|t| t.tid).collect();
                let mut kids = BTreeSet::new();
                for tid in threads {
                    if let Ok(c) = proc::read_children(pid, tid) {
                        kids.extend(c);
                    }
                }
                queue.extend(kids);
            }
            // Drop processes that vanished (exited before we got them).
            frozen
                .procs
                .retain(|p| !p.threads.is_empty() || p.pid == root);
            if !changed {
                break;
            }
        }
        if frozen
            .procs
            .first()
            .map(|p| p.threads.is_empty())
            .unwrap_or(true)
        {
            return Err(CheckpointError::NoSuchProcess(root));
        }
        // A zombie stays one while its parent is frozen; keep only those still there.
        let live: HashSet<i32> = frozen.procs.iter().map(|p| p.pid).collect();
        frozen.zombies.retain(|z| {
            live.contains(&z.ppid)
                && proc::read_stat(z.pid)
                    .map(|s| s.state == 'Z' && s.ppid == z.ppid)
                    .unwrap_or(false)
        });
        for p in &frozen.procs {
            if p.threads[0].tid != p.pid {
                return Err(CheckpointError::Unsupported {
                    pid: p.pid,
                    what: "the thread-group leader has exited while other threads run; not supported yet".into(),
                });
            }
        }
        Ok(frozen)
    }

    /// All thread ids.
    pub fn tids(&self) -> Vec<i32> {
        self.procs
            .iter()
            .flat_map(|p| p.threads.iter().map(|t| t.tid))
            .collect()
    }

    /// Block every signal in all threads of process `idx` while we inject into it (so no
    /// asynchronous signal is delivered meanwhile: it stays pending, and is dumped as such).
    pub fn block_signals(&mut self, idx: usize) -> Result<(), Failure> {
        for t in &mut self.procs[idx].threads {
            ptrace::set_sigmask(t.tid, !0u64)
                .map_err(|e| Failure::new(t.tid, "PTRACE_SETSIGMASK", e))?;
            t.mask_changed = true;
        }
        Ok(())
    }

    /// Put every thread back as it was and detach: the tree runs on.
    pub fn release(mut self) -> Result<(), Failure> {
        self.done = true;
        self.put_back()
    }

    fn put_back(&mut self) -> Result<(), Failure> {
        let mut first_err = None;
        for p in &mut self.procs {
            if let Some(base) = p.parasite.take() {
                let leader = &p.threads[0];
                let mut r = Remote::new(p.pid, leader.tid, base, leader.regs);
                if let Err(e) = r.call("munmap parasite", libc::SYS_munmap, &[base, PARASITE_LEN]) {
                    first_err.get_or_insert(e);
                }
            }
            for t in &p.threads {
                let res = (|| {
                    if t.mask_changed {
                        ptrace::set_sigmask(t.tid, t.sigmask)?;
                    }
                    ptrace::set_regs(t.tid, &resume_regs(&t.regs, true))?;
                    ptrace::detach(t.tid, 0)
                })();
                if let Err(e) = res {
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        first_err.get_or_insert(Failure::new(t.tid, "releasing thread", e));
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// End the tree: SIGKILL every process and collect the deaths as tracer (bounded by
    /// `wait`, at least 30 s): once this returns every task has exited — its memory and files
    /// are released — but it may still be a zombie holding its pid until its parent reaps it
    /// (a slow init can take seconds). Those pids are returned; a restore waits for them.
    pub fn kill(mut self, wait: Duration) -> Vec<i32> {
        self.done = true;
        for p in &self.procs {
            let _ = stasis_sys::sys::kill(p.pid, libc::SIGKILL);
        }
        reap_tracees(&self.tids(), wait.max(Duration::from_secs(30)));
        let mut tids = self.tids();
        tids.extend(self.zombies.iter().map(|z| z.pid));
        tids.into_iter()
            .filter(|t| std::path::Path::new(&format!("/proc/{t}")).exists())
            .collect()
    }
}

/// Collect the deaths of killed tracees, in whatever order they come (bounded by `limit`).
///
/// An exiting pid-namespace init waits, in the kernel, until its children and its own other
/// threads — reported to us, their tracer, first — have been reaped: waiting for any one thread
/// first could deadlock.
pub fn reap_tracees(tids: &[i32], limit: Duration) {
    let start = Instant::now();
    let mut left: Vec<i32> = tids.to_vec();
    while !left.is_empty() && start.elapsed() < limit {
        let mut progressed = false;
        left.retain(|&tid| match ptrace::wait_nohang(tid) {
            Ok(None) => true,
            Ok(Some(Stop::Exited(_))) | Ok(Some(Stop::Killed(_))) | Err(_) => {
                progressed = true;
                false
            }
            Ok(Some(_)) => {
                progressed = true;
                let _ = ptrace::cont(tid, 0);
                true
            }
        });
        if !progressed {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            if let Err(e) = self.put_back() {
                tracing::error!(error = %e, "could not fully release the tree");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(rax: i64, orig: i64, rip: u64) -> Regs {
        let mut r = stasis_sys::ptrace::regs_from_slice(&[0; 27]).unwrap();
        r.rax = rax as u64;
        r.orig_rax = orig as u64;
        r.rip = rip;
        r
    }

    #[test]
    fn restart_fixups() {
        let r = resume_regs(&regs(-512, 0, 0x1002), false);
        assert_eq!((r.rax, r.rip), (0, 0x1000));
        let r = resume_regs(&regs(-516, 35, 0x1002), false);
        assert_eq!((r.rax as i64, r.rip), (-4, 0x1002));
        let r = resume_regs(&regs(-516, 35, 0x1002), true);
        assert_eq!((r.rax, r.rip), (219, 0x1000));
        let r = resume_regs(&regs(-512, -1, 0x1002), true);
        assert_eq!((r.rax as i64, r.rip), (-512, 0x1002));
        let r = resume_regs(&regs(5, 0, 0x1002), true);
        assert_eq!((r.rax, r.rip), (5, 0x1002));
    }
}
