//! Recovery journal: what a checkpoint changed in the tasks, so that a later stasis run can
//! undo it if this one is killed (SIGKILL) midway.
//!
//! Before the first change, the journal records every seized thread with its original registers
//! and signal mask; before our page is mapped into a process, its address. The file lives in
//! `/run/stasis/journal/<stasis pid>.json`, is written atomically (temp + fsync + rename) and
//! removed when the checkpoint ends either way.
//!
//! A journal tells a later root process which registers to put back into which threads, so it
//! is as powerful as the checkpoint itself: the directory is created 0700 and every file in it
//! 0600 through [`stasis_image::safefs`] (no symlink followed), and [`recover`] acts only on a
//! directory owned by us and not writable by anyone else, and on journal files owned by us with
//! mode 0600; anything else is left alone and reported.
//!
//! When stasis dies, the kernel detaches its tracees and they resume. A thread that was in the
//! middle of an injected call finishes it and then spins on the `jmp .` of our gadget (see
//! [`stasis_sys::inject`]); the others carry on with their own registers but with every signal
//! blocked. [`recover`] (run by every stasis command before anything else) finds journals whose
//! owner is gone, seizes those threads again, puts back registers (only where the thread is
//! still inside our page) and signal masks, unmaps our page and detaches.

use crate::freeze::{resume_regs, Frozen};
use crate::remote::{Remote, PARASITE_LEN};
use serde::{Deserialize, Serialize};
use stasis_image::safefs::{self, Dir};
use stasis_sys::ptrace::{self, Stop};
use std::path::PathBuf;

/// Where journals live.
pub fn journal_dir() -> PathBuf {
    std::env::var_os("STASIS_JOURNAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/stasis/journal"))
}

#[derive(Debug, Serialize, Deserialize)]
struct JThread {
    tid: i32,
    regs: Vec<u64>,
    sigmask: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct JProc {
    pid: i32,
    start_time: u64,
    parasite: Option<u64>,
    threads: Vec<JThread>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    owner: i32,
    procs: Vec<JProc>,
    /// TCP sockets put into repair mode: (pid, fd).
    #[serde(default)]
    repair: Vec<(i32, i32)>,
    /// nftables lock table, if one was created.
    #[serde(default)]
    lock_table: Option<String>,
}

/// The journal of the running checkpoint.
pub struct Journal {
    path: PathBuf,
    rec: std::sync::Arc<std::sync::Mutex<Record>>,
}

/// A second handle on the running checkpoint's journal, for the code that puts sockets into
/// repair mode (it records them before it does).
#[derive(Clone)]
pub struct JournalHandle {
    path: PathBuf,
    rec: std::sync::Arc<std::sync::Mutex<Record>>,
}

/// Opens a journal directory: a `/proc/self/fd/N` handle (a partition checkpoint passes the
/// host's directory so into the partition's mount namespace) is a magic link to follow; any
/// other path is opened without following a link in its last component.
fn open_dir(path: &std::path::Path) -> std::io::Result<Dir> {
    if is_fd_handle(path) {
        Dir::open_following(path)
    } else {
        Dir::open(path)
    }
}

fn is_fd_handle(path: &std::path::Path) -> bool {
    path.starts_with("/proc/self/fd") || path.starts_with("/proc/thread-self/fd")
}

fn write_record(path: &std::path::Path, rec: &Record) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("journal path without a directory"));
    };
    let dir = open_dir(dir)?;
    let bytes = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    dir.write_atomic(name, &bytes, safefs::PRIVATE_FILE)
}

/// Opens (creating it 0700 if missing) the journal directory; refuses one that another user
/// owns or may write.
fn open_journal_dir(create: bool) -> std::io::Result<Dir> {
    let path = journal_dir();
    let dir = if is_fd_handle(&path) {
        Dir::open_following(&path)?
    } else if create {
        Dir::create_all(&path, safefs::PRIVATE_DIR)?
    } else {
        Dir::open(&path)?
    };
    let st = dir.stat_self()?;
    if safefs::check_owner_and_mode(st.st_uid, st.st_mode).is_err() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is owned by uid {} with mode {:o}: journals are trusted only in a directory of our own that nobody else may write",
                path.display(),
                st.st_uid,
                st.st_mode & 0o7777
            ),
        ));
    }
    Ok(dir)
}

impl JournalHandle {
    /// Record that fd `fd` of `pid` is about to enter TCP repair mode behind lock `table`.
    pub fn tcp_repair(&self, pid: i32, fd: i32, table: &str) -> std::io::Result<()> {
        let mut r = self
            .rec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.repair.push((pid, fd));
        r.lock_table = Some(table.to_string());
        write_record(&self.path, &r)
    }
}

fn start_time(pid: i32) -> u64 {
    stasis_sys::proc::read_stat(pid)
        .map(|s| s.starttime)
        .unwrap_or(0)
}

impl Journal {
    /// Record the seized tree.
    pub fn begin(frozen: &Frozen) -> std::io::Result<Journal> {
        let dir = open_journal_dir(true)?;
        let owner = stasis_sys::sys::getpid();
        let rec = Record {
            repair: Vec::new(),
            lock_table: None,
            owner,
            procs: frozen
                .procs
                .iter()
                .map(|p| JProc {
                    pid: p.pid,
                    start_time: start_time(p.pid),
                    parasite: None,
                    threads: p
                        .threads
                        .iter()
                        .map(|t| JThread {
                            tid: t.tid,
                            regs: ptrace::regs_to_vec(&t.regs),
                            sigmask: t.sigmask,
                        })
                        .collect(),
                })
                .collect(),
        };
        let j = Journal {
            path: dir.path().join(format!("{owner}.json")),
            rec: std::sync::Arc::new(std::sync::Mutex::new(rec)),
        };
        j.write()?;
        Ok(j)
    }

    fn write(&self) -> std::io::Result<()> {
        let r = self
            .rec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write_record(&self.path, &r)
    }

    /// A handle for recording TCP repair.
    pub fn handle(&self) -> JournalHandle {
        JournalHandle {
            path: self.path.clone(),
            rec: self.rec.clone(),
        }
    }

    /// Record that our page is (about to be) mapped at `base` in `pid`.
    pub fn parasite(&mut self, pid: i32, base: u64) -> std::io::Result<()> {
        {
            let mut r = self
                .rec
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(p) = r.procs.iter_mut().find(|p| p.pid == pid) {
                p.parasite = Some(base);
            }
        }
        self.write()
    }

    /// The checkpoint is over (tree released or ended): forget it.
    pub fn finish(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Reached on error paths too: by then the Frozen guard has put the tree back.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Undo what killed stasis runs left behind. Returns the number of processes repaired.
pub fn recover() -> usize {
    let dir = match open_journal_dir(false) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::warn!(error = %e, "recovery journals not read");
            return 0;
        }
    };
    let Ok(names) = dir.entries() else {
        return 0;
    };
    let me = stasis_sys::sys::geteuid();
    let mut fixed = 0;
    for name in names {
        let path = dir.path().join(&name);
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        match dir.metadata(&name) {
            Ok(st) if st.st_uid == me && st.st_mode & 0o7777 == safefs::PRIVATE_FILE => {}
            Ok(st) => {
                tracing::warn!(path = %path.display(), uid = st.st_uid, mode = format!("{:o}", st.st_mode & 0o7777), "ignoring a recovery journal that is not ours alone");
                continue;
            }
            Err(_) => continue,
        }
        let Ok(bytes) = dir.read(&name) else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<Record>(&bytes) else {
            let _ = dir.remove_file(&name);
            continue;
        };
        if rec.owner != stasis_sys::sys::getpid() && alive(rec.owner) {
            continue;
        }
        // Sockets left in TCP repair mode: take them out (borrowing them again), then drop the
        // network lock.
        for &(pid, fd) in &rec.repair {
            let Some(p) = rec.procs.iter().find(|p| p.pid == pid) else {
                continue;
            };
            if !alive(pid) || start_time(pid) != p.start_time {
                continue;
            }
            if let Ok(pfd) = stasis_sys::sys::pidfd_open(pid) {
                if let Ok(sock) = stasis_sys::sys::pidfd_getfd(&pfd, fd) {
                    use std::os::fd::AsRawFd;
                    let _ = stasis_sys::net::setsockopt_int(
                        sock.as_raw_fd(),
                        libc::IPPROTO_TCP,
                        19,
                        -1,
                    );
                }
            }
        }
        if let Some(t) = &rec.lock_table {
            let _ = crate::netlock::unlock(t);
        }
        for p in &rec.procs {
            if !alive(p.pid) || start_time(p.pid) != p.start_time {
                continue;
            }
            match recover_proc(p) {
                Ok(()) => fixed += 1,
                Err(e) => {
                    tracing::error!(pid = p.pid, error = %e, "recovery of a process left by a killed stasis failed")
                }
            }
        }
        let _ = dir.remove_file(&name);
    }
    fixed
}

fn recover_proc(p: &JProc) -> Result<(), crate::error::Failure> {
    use crate::error::Ctx;
    let mut seized = Vec::new();
    let res = (|| {
        for t in &p.threads {
            if ptrace::seize(t.tid, ptrace::OPT_TRACESYSGOOD).is_err() {
                continue;
            }
            ptrace::interrupt(t.tid).ctx(t.tid, || "PTRACE_INTERRUPT".into())?;
            loop {
                match ptrace::wait(t.tid).ctx(t.tid, || "waitpid".into())? {
                    Stop::Event(ptrace::EVENT_STOP, _) => break,
                    Stop::Exited(_) | Stop::Killed(_) => break,
                    _ => ptrace::cont(t.tid, 0).ctx(t.tid, || "PTRACE_CONT".into())?,
                }
            }
            seized.push(t);
            crate::seccomp::suspend_if_confined(t.tid, ptrace::OPT_TRACESYSGOOD)?;
        }
        let in_parasite = |rip: u64| {
            p.parasite
                .is_some_and(|b| rip >= b && rip < b + PARASITE_LEN)
        };
        for t in &seized {
            let saved = ptrace::regs_from_slice(&t.regs)
                .ok_or_else(|| crate::error::Failure::msg(t.tid, "bad journal"))?;
            let cur = ptrace::get_regs(t.tid).ctx(t.tid, || "PTRACE_GETREGS".into())?;
            if let Some(base) = p.parasite {
                if t.tid == p.pid {
                    let mut r = Remote::new(p.pid, t.tid, base, saved);
                    let _ = r.call("munmap parasite", libc::SYS_munmap, &[base, PARASITE_LEN]);
                }
            }
            let regs = if in_parasite(cur.rip) {
                resume_regs(&saved, true)
            } else {
                cur
            };
            ptrace::set_regs(t.tid, &regs).ctx(t.tid, || "PTRACE_SETREGS".into())?;
            ptrace::set_sigmask(t.tid, t.sigmask).ctx(t.tid, || "PTRACE_SETSIGMASK".into())?;
        }
        Ok(())
    })();
    for t in &seized {
        let _ = ptrace::detach(t.tid, 0);
    }
    res
}
