//! Lazy restore: private anonymous memory placed on demand by a page server.
//!
//! `restore_lazy` writes every page except those of private anonymous read-write mappings
//! (created by the task after its fork, not shared copy-on-write with a child): those mappings
//! are registered with a userfaultfd in missing-page mode. The userfaultfd is created inside
//! the task (an injected `userfaultfd()`, before its credentials are restored, so a full one,
//! not user-mode only: faults taken by the kernel — `write(2)` from a buffer not yet placed —
//! are served too), taken with `pidfd_getfd` and closed in the task.
//!
//! The page server is its own process (forked by the restorer, `setsid`, stdio on `/dev/null`,
//! its log in a file): it reads faults from every userfaultfd (`poll`), answers each with
//! `UFFDIO_COPY` from the image (`UFFDIO_ZEROPAGE` for a page the image does not hold) and
//! between faults prefetches the rest in address order; once every page is placed it closes
//! the userfaultfds and exits. Forks, `mremap`, `MADV_DONTNEED` and `munmap` of registered
//! ranges are reported to it (`UFFD_FEATURE_EVENT_*`) and followed.
//!
//! Closing a userfaultfd while a thread waits on it wakes the thread, which retries the fault
//! on a mapping that is no longer registered: it gets a zero page (silent corruption). So the
//! server forks a watchdog that holds a copy of every userfaultfd (the server's death then
//! closes nothing: faulting threads keep waiting) and a pidfd of the server and of every task;
//! if the server ends before its work is done, the watchdog kills the tree with SIGKILL, logs
//! why, and only then exits (closing the copies).

use crate::error::{Ctx, Failure};
use crate::memory::FillJob;
use crate::remote::Remote;
use stasis_image::records::{self as rec, PageRun, VmaKind};
use stasis_image::ImageReader;
use stasis_sys::uffd::{self, Msg};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

const PAGE: u64 = 4096;
/// Pages placed by one prefetch step.
const PREFETCH_PAGES: u64 = 256;
/// Pages placed around a fault (from the faulting page on, while the image holds them).
const FAULT_PAGES: u64 = 16;

/// How to run a lazy restore.
#[derive(Debug, Clone)]
pub struct LazyOptions {
    /// The page server's log (appended to).
    pub log: PathBuf,
}

/// Where the page server takes pages from: the image on this node now, a page server on
/// another node later.
pub trait PageSource {
    /// The address ranges of process `pid` (as the image names it) the source holds pages
    /// for, sorted and disjoint. Other pages of a lazy mapping read as zero.
    fn extents(&self, pid: i32) -> Vec<(u64, u64)>;
    /// The bytes of `[addr, addr + out.len())` of `pid`, a range inside one extent.
    fn read(&mut self, pid: i32, addr: u64, out: &mut [u8]) -> io::Result<()>;
}

/// Pages from an image directory (its chain attached): chunks read on demand, a few cached.
pub struct ImageSource {
    reader: ImageReader,
    runs: HashMap<i32, Vec<PageRun>>,
    cache: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ImageSource {
    /// The source of the lazy ranges `lazy` (by image pid) of `img`, read from `reader`.
    pub fn new(reader: ImageReader, img: &rec::Checkpoint, lazy: &LazyRanges) -> Self {
        let mut runs: HashMap<i32, Vec<PageRun>> = HashMap::new();
        for p in &img.processes {
            let Some(ranges) = lazy.get(&p.pid) else {
                continue;
            };
            let r = runs.entry(p.pid).or_default();
            for v in &p.vmas {
                if ranges.iter().any(|&(a, b)| a == v.start && b == v.end) {
                    r.extend(v.pages.iter().cloned());
                }
            }
            r.sort_by_key(|x| x.addr);
        }
        ImageSource {
            reader,
            runs,
            cache: Vec::new(),
        }
    }

    fn chunk(&mut self, id: &[u8]) -> io::Result<&[u8]> {
        if let Some(i) = self.cache.iter().position(|c| c.0 == id) {
            return Ok(&self.cache[i].1);
        }
        let cid: stasis_image::ChunkId = id
            .try_into()
            .map_err(|_| io::Error::other("bad chunk id in image"))?;
        let mut buf = Vec::new();
        self.reader
            .read_chunk_into(&cid, &mut buf)
            .map_err(io::Error::other)?;
        if self.cache.len() >= 4 {
            self.cache.remove(0);
        }
        self.cache.push((id.to_vec(), buf));
        Ok(&self.cache.last().expect("pushed").1)
    }
}

impl PageSource for ImageSource {
    fn extents(&self, pid: i32) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for r in self.runs.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            let end = r.addr + r.count as u64 * PAGE;
            match out.last_mut() {
                Some(l) if l.1 == r.addr => l.1 = end,
                _ => out.push((r.addr, end)),
            }
        }
        out
    }

    fn read(&mut self, pid: i32, addr: u64, out: &mut [u8]) -> io::Result<()> {
        let mut pos = addr;
        let end = addr + out.len() as u64;
        while pos < end {
            let (chunk, off, rend) = {
                let runs = self.runs.get(&pid).map(Vec::as_slice).unwrap_or(&[]);
                let i = runs.partition_point(|r| r.addr + r.count as u64 * PAGE <= pos);
                let r = runs
                    .get(i)
                    .filter(|r| r.addr <= pos)
                    .ok_or_else(|| io::Error::other(format!("no page at {pos:#x} in the image")))?;
                let rend = (r.addr + r.count as u64 * PAGE).min(end);
                (r.chunk.clone(), r.chunk_offset + (pos - r.addr), rend)
            };
            let len = (rend - pos) as usize;
            let data = self.chunk(&chunk)?;
            let src = data
                .get(off as usize..off as usize + len)
                .ok_or_else(|| io::Error::other("chunk shorter than the image says"))?;
            let o = (pos - addr) as usize;
            out[o..o + len].copy_from_slice(src);
            pos = rend;
        }
        Ok(())
    }
}

/// The lazy mappings of each process, by pid as the image names it: (start, end).
pub type LazyRanges = HashMap<i32, Vec<(u64, u64)>>;

/// Whether mapping `v` is placed lazily: private anonymous, readable and writable, not
/// inherited copy-on-write from a parent, with pages stored.
fn lazy_vma(v: &rec::Vma) -> bool {
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
    VmaKind::try_from(v.kind) == Ok(VmaKind::Anon)
        && v.inherit.is_empty()
        && v.prot & rw == rw
        && !v.pages.is_empty()
}

/// The chunks only lazy mappings use: the page server hashes them as it reads them, restore
/// does not verify them beforehand (every other chunk is).
pub fn lazy_only_chunks(img: &rec::Checkpoint) -> HashSet<stasis_image::ChunkId> {
    let id = |c: &Vec<u8>| stasis_image::ChunkId::try_from(c.as_slice()).ok();
    let mut lazy = HashSet::new();
    let mut other = HashSet::new();
    // A parent's mapping that a child inherits is filled before the fork (`cow.rs`), eagerly.
    let inherited: Vec<(u64, u64)> = img
        .processes
        .iter()
        .flat_map(|p| &p.vmas)
        .filter(|v| !v.inherit.is_empty())
        .map(|v| (v.start, v.end))
        .collect();
    for p in &img.processes {
        for v in &p.vmas {
            let shared = inherited.iter().any(|&(a, b)| a < v.end && v.start < b);
            let set = if lazy_vma(v) && !shared {
                &mut lazy
            } else {
                &mut other
            };
            set.extend(v.pages.iter().filter_map(|r| id(&r.chunk)));
        }
    }
    let objects = img.shmem.iter().flat_map(|s| &s.pages);
    let files = img.files.iter().flat_map(|f| &f.content);
    other.extend(objects.chain(files).filter_map(|r| id(&r.chunk)));
    lazy.retain(|c| !other.contains(c));
    lazy
}

/// Take the runs of lazy mappings out of the fill jobs (one per live process of `procs`, in
/// order): returns the lazy mappings by image pid.
pub(crate) fn split_fills<'a>(
    procs: impl Iterator<Item = &'a rec::Process>,
    fills: &mut [FillJob],
) -> LazyRanges {
    let mut out = LazyRanges::new();
    for (p, job) in procs.zip(fills.iter_mut()) {
        let ranges: Vec<(u64, u64)> = p
            .vmas
            .iter()
            .filter(|v| lazy_vma(v))
            .filter(|v| job.runs.iter().any(|r| r.addr >= v.start && r.addr < v.end))
            .map(|v| (v.start, v.end))
            .collect();
        if ranges.is_empty() {
            continue;
        }
        job.runs
            .retain(|r| !ranges.iter().any(|&(a, b)| r.addr >= a && r.addr < b));
        out.insert(p.pid, ranges);
    }
    out
}

/// One process's registration, handed to the page server.
pub(crate) struct Registered {
    /// Pid as the image names it (the page source's key).
    pub image_pid: i32,
    /// The userfaultfd of its mm.
    pub uffd: OwnedFd,
    /// A pidfd of the task, for the watchdog.
    pub pidfd: OwnedFd,
    /// Its lazy mappings.
    pub ranges: Vec<(u64, u64)>,
}

/// Inject `userfaultfd()` into the task `r` drives, take it, enable the events the server
/// follows and register `ranges` in missing mode.
pub(crate) fn register(
    r: &mut Remote,
    image_pid: i32,
    ranges: &[(u64, u64)],
) -> Result<Registered, Failure> {
    let pid = r.pid;
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let fd = r.call("userfaultfd in the task", libc::SYS_userfaultfd, &[flags])?;
    let pidfd = stasis_sys::sys::pidfd_open(pid).ctx(pid, || "pidfd_open".into())?;
    let taken = stasis_sys::sys::pidfd_getfd(&pidfd, fd as i32)
        .ctx(pid, || "taking the userfaultfd (pidfd_getfd)".into());
    r.call("close of the userfaultfd", libc::SYS_close, &[fd])?;
    let uffd = taken?;
    let want = uffd::UFFD_FEATURE_EVENT_FORK
        | uffd::UFFD_FEATURE_EVENT_REMAP
        | uffd::UFFD_FEATURE_EVENT_REMOVE
        | UFFD_FEATURE_EVENT_UNMAP;
    let got = uffd::api(uffd.as_fd(), want).ctx(pid, || {
        "UFFDIO_API (EVENT_FORK, EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP)".into()
    })?;
    if got & want != want {
        return Err(Failure::msg(
            pid,
            format!("userfaultfd lacks the events lazy restore follows (has {got:#x})"),
        ));
    }
    for &(a, b) in ranges {
        uffd::register_missing(uffd.as_fd(), a, b - a).ctx(pid, || {
            format!("UFFDIO_REGISTER (missing) of {a:#x}-{b:#x}")
        })?;
    }
    Ok(Registered {
        image_pid,
        uffd,
        pidfd,
        ranges: ranges.to_vec(),
    })
}

const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 4;

/// Pages not placed yet, by current address: start → (end, address in the image).
#[derive(Debug, Clone, Default)]
struct Pending(BTreeMap<u64, (u64, u64)>);

impl Pending {
    /// Remove and return the parts within `[a, b)`: (start, end, image address).
    fn take(&mut self, a: u64, b: u64) -> Vec<(u64, u64, u64)> {
        let keys: Vec<u64> = self
            .0
            .range(..b)
            .rev()
            .take_while(|(_, (e, _))| *e > a)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for k in keys.into_iter().rev() {
            let (e, img) = self.0.remove(&k).expect("listed");
            if k < a {
                self.0.insert(k, (a, img));
            }
            if e > b {
                self.0.insert(b, (e, img + (b - k)));
            }
            let (s, t) = (k.max(a), e.min(b));
            out.push((s, t, img + (s - k)));
        }
        out
    }

    fn put(&mut self, s: u64, e: u64, img: u64) {
        if s < e {
            self.0.insert(s, (e, img));
        }
    }

    fn contains(&self, a: u64) -> bool {
        self.0
            .range(..=a)
            .next_back()
            .is_some_and(|(_, (e, _))| *e > a)
    }

    /// `mremap` moved `[from, from+len)` to `to`.
    fn remap(&mut self, from: u64, to: u64, len: u64) {
        for (s, e, img) in self.take(from, from + len) {
            self.put(s - from + to, e - from + to, img);
        }
    }
}

/// One userfaultfd the server serves (a restored process, or a child forked since).
struct Space {
    image_pid: i32,
    uffd: OwnedFd,
    pending: Pending,
    /// Its mm is gone: nothing more to place.
    gone: bool,
}

/// Counters for the log.
#[derive(Debug, Default)]
struct Counts {
    faults: u64,
    fault_pages: u64,
    zero_pages: u64,
    prefetched: u64,
    forks: u64,
    /// Wall-clock time (ns since the epoch) of the first fault served.
    first_fault_ns: Option<u128>,
}

struct Server<S: PageSource> {
    source: S,
    spaces: Vec<Space>,
    counts: Counts,
    buf: Vec<u8>,
    /// Faults to answer again (the mm was changing: `EAGAIN`).
    retry: Vec<(usize, u64)>,
    /// Where new children's userfaultfds go (the watchdog keeps a copy).
    guard: Option<OwnedFd>,
    log: std::fs::File,
    t0: Instant,
    /// Why the server cannot go on (the watchdog then ends the tree).
    fatal: Option<String>,
    /// Until the restorer closes it (the tree runs), faults only: no prefetch.
    go: Option<OwnedFd>,
}

impl<S: PageSource> Server<S> {
    fn log(&mut self, msg: &str) {
        let _ = writeln!(
            self.log,
            "[page-server {} +{:.3}s] {msg}",
            stasis_sys::sys::getpid(),
            self.t0.elapsed().as_secs_f64()
        );
    }

    /// Place `[s, e)` (image address `img`) in space `i`; returns false on `EAGAIN` (the
    /// unplaced part is pending again).
    fn place(&mut self, i: usize, s: u64, e: u64, img: u64) -> bool {
        let len = (e - s) as usize;
        self.buf.resize(len, 0);
        let pid = self.spaces[i].image_pid;
        if let Err(err) = self.source.read(pid, img, &mut self.buf[..len]) {
            // The pages cannot be given: the tree must not run on without them.
            self.fatal = Some(format!("reading pages at {img:#x} of pid {pid}: {err}"));
            return true;
        }
        let mut pos = 0u64;
        while pos < len as u64 {
            let sp = &self.spaces[i];
            let (n, res) = uffd::copy(sp.uffd.as_fd(), s + pos, &self.buf[pos as usize..len]);
            pos += n;
            match res.map_err(|e| e.raw_os_error()) {
                Ok(()) => break,
                Err(Some(libc::EEXIST)) => {
                    let _ = uffd::wake(sp.uffd.as_fd(), s + pos, PAGE);
                    pos += PAGE;
                }
                Err(Some(libc::EAGAIN)) => {
                    self.spaces[i].pending.put(s + pos, e, img + pos);
                    return false;
                }
                Err(Some(libc::ENOENT)) => pos += PAGE, // unmapped or mapped over
                Err(_) => {
                    self.spaces[i].gone = true; // ESRCH: the mm is gone
                    break;
                }
            }
        }
        true
    }

    /// A fault at `addr` in space `i`: place the pending pages from there (a few), or a zero
    /// page (the image holds none there, or it was dropped since it was placed). False: retry.
    fn fault(&mut self, i: usize, addr: u64) -> bool {
        let page = addr & !(PAGE - 1);
        if self.counts.first_fault_ns.is_none() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            self.counts.first_fault_ns = Some(now.map(|d| d.as_nanos()).unwrap_or(0));
        }
        if self.spaces[i].pending.contains(page) {
            let parts = self.spaces[i].pending.take(page, page + FAULT_PAGES * PAGE);
            let mut ok = true;
            for (s, e, img) in parts {
                if !ok {
                    self.spaces[i].pending.put(s, e, img);
                    continue;
                }
                self.counts.fault_pages += (e - s) / PAGE;
                ok = self.place(i, s, e, img);
            }
            return ok;
        }
        let u = self.spaces[i].uffd.as_fd();
        match uffd::zeropage(u, page, PAGE).map_err(|e| e.raw_os_error()) {
            Ok(()) => self.counts.zero_pages += 1,
            Err(Some(libc::EEXIST)) => {
                let _ = uffd::wake(u, page, PAGE);
            }
            Err(Some(libc::EAGAIN)) => return false,
            Err(_) => {}
        }
        true
    }

    /// Read every pending message of space `i`.
    fn drain(&mut self, i: usize) {
        loop {
            let msg = match uffd::read_msg(self.spaces[i].uffd.as_fd()) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    self.log(&format!("reading userfaultfd: {e}"));
                    self.spaces[i].gone = true;
                    return;
                }
            };
            match msg {
                Msg::PageFault(a) => {
                    self.counts.faults += 1;
                    if !self.fault(i, a) {
                        self.retry.push((i, a));
                    }
                }
                Msg::Fork(fd) => self.forked(i, fd),
                Msg::Remap { from, to, len } => self.spaces[i].pending.remap(from, to, len),
                Msg::Remove(a, b) | Msg::Unmap(a, b) => {
                    self.spaces[i].pending.take(a, b);
                }
                Msg::Other(e) => self.log(&format!("unexpected userfaultfd event {e:#x}")),
            }
        }
    }

    fn forked(&mut self, i: usize, fd: i32) {
        let uffd = stasis_sys::sys::owned_fd(fd);
        self.counts.forks += 1;
        if let Some(g) = &self.guard {
            if let Err(e) = stasis_sys::net::send_with_fds(g.as_raw_fd(), b"F", None, &[fd]) {
                self.log(&format!(
                    "handing a child's userfaultfd to the watchdog: {e}"
                ));
            }
        }
        let pending = self.spaces[i].pending.clone();
        let image_pid = self.spaces[i].image_pid;
        self.spaces.push(Space {
            image_pid,
            uffd,
            pending,
            gone: false,
        });
    }

    /// Place the next pending pages of some space; false when none are left.
    fn prefetch(&mut self) -> bool {
        let Some(i) = self
            .spaces
            .iter()
            .position(|s| !s.gone && !s.pending.0.is_empty())
        else {
            return false;
        };
        let (&s, _) = self.spaces[i].pending.0.iter().next().expect("not empty");
        let mut ok = true;
        for (a, b, img) in self.spaces[i].pending.take(s, s + PREFETCH_PAGES * PAGE) {
            if !ok {
                // The mm is changing (an event to read first): these wait.
                self.spaces[i].pending.put(a, b, img);
                continue;
            }
            self.counts.prefetched += (b - a) / PAGE;
            ok = self.place(i, a, b, img);
        }
        true
    }

    /// Serve until every page is placed (or every mm is gone).
    fn run(&mut self, watchdog: &OwnedFd) -> Result<(), String> {
        loop {
            if let Some(f) = self.fatal.take() {
                return Err(f);
            }
            let busy = !self.retry.is_empty()
                || self
                    .spaces
                    .iter()
                    .any(|s| !s.gone && !s.pending.0.is_empty());
            if !busy {
                return Ok(());
            }
            let mut fds: Vec<BorrowedFd<'_>> = self.spaces.iter().map(|s| s.uffd.as_fd()).collect();
            fds.push(watchdog.as_fd());
            let rev = uffd::poll_in(&fds, 0).map_err(|e| format!("poll: {e}"))?;
            drop(fds);
            if rev.last().is_some_and(|r| *r != 0) && self.guard.is_some() {
                self.log("the watchdog ended: serving on unguarded");
                self.guard = None;
            }
            for (i, r) in rev[..rev.len() - 1].iter().enumerate() {
                if *r & libc::POLLIN != 0 {
                    self.drain(i);
                } else if *r & (libc::POLLHUP | libc::POLLERR) != 0 {
                    self.spaces[i].gone = true;
                }
            }
            for (i, a) in std::mem::take(&mut self.retry) {
                if !self.spaces[i].gone && !self.fault(i, a) {
                    self.retry.push((i, a));
                }
            }
            if let Some(g) = &self.go {
                let r = uffd::poll_in(&[g.as_fd()], 0).unwrap_or_default();
                if r.first().is_some_and(|r| *r != 0) {
                    self.go = None;
                }
            }
            if self.go.is_some() || (!self.prefetch() && self.retry.is_empty()) {
                // Nothing to prefetch: wait for faults or events a little.
                let fds: Vec<BorrowedFd<'_>> = self.spaces.iter().map(|s| s.uffd.as_fd()).collect();
                let _ = uffd::poll_in(&fds, 10);
            }
        }
    }
}

/// Start the page server for `regs` (a process of its own; see the module doc). Returns its
/// pid. The restorer's copies of the userfaultfds are closed when `regs` is dropped.
pub(crate) fn spawn_server(
    dir: &std::path::Path,
    img: &rec::Checkpoint,
    lazy: &LazyRanges,
    regs: Vec<Registered>,
    opts: &LazyOptions,
) -> Result<Starting, Failure> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.log)
        .ctx(0, || {
            format!("opening the page server's log {}", opts.log.display())
        })?;
    let (mine, theirs) = stasis_sys::net::unix_socketpair(libc::SOCK_SEQPACKET)
        .ctx(0, || "socketpair for the page server".into())?;
    let t = Instant::now();
    let (ready_r, ready_w) =
        stasis_sys::sys::pipe().ctx(0, || "pipe for the page server".into())?;
    // Closed by the restorer once the tree runs (or dies): prefetch starts then, so that it
    // does not compete for the CPU with the rest of the restore.
    let (go_r, go_w) = stasis_sys::sys::pipe().ctx(0, || "pipe for the page server".into())?;
    let pid = stasis_sys::uffd::fork_helper().ctx(0, || "fork of the page server".into())?;
    if pid > 0 {
        drop(ready_w);
        drop(go_r);
        tracing::debug!(pid, secs = t.elapsed().as_secs_f64(), "page server forked");
        return Ok(Starting {
            pid,
            ready: ready_r,
            regs,
            go: go_w,
        });
    }
    drop(mine);
    drop(ready_r);
    drop(go_w);
    // The child: no return from here.
    let code = server_main(dir, img, lazy, regs, log, theirs, [ready_w, go_r]);
    stasis_sys::ns::exit_now(code)
}

/// A page server started by the restorer, not yet known to be guarded.
pub(crate) struct Starting {
    pid: i32,
    ready: OwnedFd,
    regs: Vec<Registered>,
    go: OwnedFd,
}

impl Starting {
    /// Wait until the watchdog holds the userfaultfds (see [`wait_armed`]); returns the
    /// server's pid and the pipe end to close once the tree runs (prefetch starts then).
    pub(crate) fn armed(self) -> Result<(i32, OwnedFd), Failure> {
        let pid = wait_armed(self.pid, self.ready, self.regs)?;
        Ok((pid, self.go))
    }
}

/// Wait until the page server's watchdog holds the userfaultfds (until then ours keep them
/// open: a server dying early fails the restore, which kills the tree, instead of releasing
/// them under a waiting thread).
fn wait_armed(pid: i32, ready: OwnedFd, regs: Vec<Registered>) -> Result<i32, Failure> {
    let rev = uffd::poll_in(&[ready.as_fd()], 10_000).unwrap_or_default();
    let mut b = [0u8; 1];
    let got = rev.first().is_some_and(|r| *r != 0)
        && stasis_sys::sys::read_fd(ready.as_raw_fd(), &mut b).ok() == Some(1)
        && b[0] == b'W';
    if !got {
        let _ = stasis_sys::sys::kill(pid, libc::SIGKILL);
        return Err(Failure::msg(
            pid,
            "the page server did not start (see its log); the restore is undone",
        ));
    }
    drop(regs);
    Ok(pid)
}

/// Close every fd of ours but `keep`, and point stdio at /dev/null.
fn close_others(keep: &[i32]) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for n in 0..3 {
            let _ = stasis_sys::ns::dup2(null.as_fd(), n);
        }
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) && stasis_sys::sys::fcntl(fd, libc::F_GETFD, 0).is_ok() {
            drop(stasis_sys::sys::owned_fd(fd));
        }
    }
}

fn server_main(
    dir: &std::path::Path,
    img: &rec::Checkpoint,
    lazy: &LazyRanges,
    regs: Vec<Registered>,
    log: std::fs::File,
    sock: OwnedFd,
    [ready, go]: [OwnedFd; 2],
) -> i32 {
    let t0 = Instant::now();
    let mut keep: Vec<i32> = regs
        .iter()
        .flat_map(|r| [r.uffd.as_raw_fd(), r.pidfd.as_raw_fd()])
        .collect();
    keep.extend([
        log.as_raw_fd(),
        sock.as_raw_fd(),
        ready.as_raw_fd(),
        go.as_raw_fd(),
    ]);
    close_others(&keep);
    let _ = stasis_sys::ns::setsid();
    let mut log = log;
    let say = |log: &mut std::fs::File, m: &str| {
        let _ = writeln!(log, "[page-server {}] {m}", stasis_sys::sys::getpid());
    };
    // The watchdog first: from then on a failure of ours ends the tree through it.
    let watchdog = match spawn_watchdog(&regs, sock, &mut log) {
        Ok(w) => w,
        Err(e) => {
            say(&mut log, &format!("FATAL: starting the watchdog: {e}"));
            kill_all(&regs, &mut log);
            return 1;
        }
    };
    let _ = stasis_sys::sys::write_fd(ready.as_raw_fd(), b"W");
    drop(ready);
    let reader = ImageReader::open(dir)
        .map_err(|e| e.to_string())
        .and_then(|mut r| {
            crate::incremental::open_chain(dir, &mut r, img)
                .map(|()| r)
                .map_err(|e| e.to_string())
        });
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            say(
                &mut log,
                &format!(
                    "FATAL: opening the image {}: {e}; the watchdog ends the tree",
                    dir.display()
                ),
            );
            return 1;
        }
    };
    let source = ImageSource::new(reader, img, lazy);
    serve(source, regs, watchdog, (log, go), t0)
}

fn serve(
    source: ImageSource,
    regs: Vec<Registered>,
    (wd_pidfd, guard): (OwnedFd, OwnedFd),
    (log, go): (std::fs::File, OwnedFd),
    t0: Instant,
) -> i32 {
    let mut spaces = Vec::new();
    let mut pidfds = Vec::new();
    for r in regs {
        let mut pending = Pending::default();
        for (a, b) in source.extents(r.image_pid) {
            // Clipped to each mapping: one UFFDIO_COPY never spans two.
            for &(s, e) in &r.ranges {
                let (x, y) = (a.max(s), b.min(e));
                if x < y {
                    pending.put(x, y, x);
                }
            }
        }
        spaces.push(Space {
            image_pid: r.image_pid,
            uffd: r.uffd,
            pending,
            gone: false,
        });
        pidfds.push(r.pidfd);
    }
    drop(pidfds);
    let total: u64 = spaces
        .iter()
        .flat_map(|s| s.pending.0.iter().map(|(a, (b, _))| (b - a) / PAGE))
        .sum();
    let mut srv = Server {
        source,
        spaces,
        counts: Counts::default(),
        buf: Vec::new(),
        retry: Vec::new(),
        guard: Some(guard),
        log,
        t0,
        fatal: None,
        go: Some(go),
    };
    srv.log(&format!(
        "serving {} userfaultfds, {total} pages to place",
        srv.spaces.len()
    ));
    let res = srv.run(&wd_pidfd);
    if let Err(e) = res {
        srv.log(&format!("FATAL: {e}; the watchdog ends the tree"));
        return 1;
    }
    if let Some(g) = &srv.guard {
        let _ = stasis_sys::net::send_all(g.as_raw_fd(), b"D", None);
    }
    let c = &srv.counts;
    let msg = format!(
        "done: {} faults ({} pages placed on demand, {} zero pages), {} pages prefetched, {} forks followed, first fault at unix ns {}; closing the userfaultfds",
        c.faults, c.fault_pages, c.zero_pages, c.prefetched, c.forks, c.first_fault_ns.unwrap_or(0)
    );
    srv.log(&msg);
    0
}

/// Fork the watchdog: it keeps copies of the userfaultfds (ours are inherited; children's come
/// over `sock`) and the tasks' pidfds. Returns its pidfd and our end of the socket.
fn spawn_watchdog(
    regs: &[Registered],
    sock: OwnedFd,
    log: &mut std::fs::File,
) -> io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = stasis_sys::net::unix_socketpair(libc::SOCK_SEQPACKET)?;
    let server = stasis_sys::sys::getpid();
    let server_pidfd = stasis_sys::sys::pidfd_open(server)?;
    let pid = stasis_sys::uffd::fork_helper()?;
    if pid > 0 {
        drop(theirs);
        drop(sock);
        let pidfd = stasis_sys::sys::pidfd_open(pid)?;
        return Ok((pidfd, ours));
    }
    drop(ours);
    drop(sock);
    let code = watchdog(regs, theirs, server_pidfd, log);
    stasis_sys::ns::exit_now(code)
}

fn watchdog(regs: &[Registered], sock: OwnedFd, server: OwnedFd, log: &mut std::fs::File) -> i32 {
    let mut kids: Vec<OwnedFd> = Vec::new();
    loop {
        let rev = match uffd::poll_in(&[sock.as_fd(), server.as_fd()], -1) {
            Ok(r) => r,
            Err(_) => vec![0, libc::POLLIN],
        };
        if rev[0] & libc::POLLIN != 0 {
            // A zero-length read is the server's end closing: it is gone.
            if let Ok(Some(m)) = stasis_sys::net::peek_next(sock.as_raw_fd(), 16, false) {
                let mut b = [0u8; 16];
                let _ = stasis_sys::sys::read_fd(sock.as_raw_fd(), &mut b);
                if m.data == b"D" {
                    return 0;
                }
                if m.data == b"F" {
                    kids.extend(m.fds);
                    continue;
                }
            }
        }
        if rev[1] != 0 || rev[0] != 0 {
            let _ = writeln!(
                log,
                "[page-server watchdog {}] the page server ended before every page was placed: killing the restored tree (SIGKILL) so that no task runs on with pages that will never come",
                stasis_sys::sys::getpid()
            );
            kill_all(regs, log);
            drop(kids);
            return 1;
        }
    }
}

/// SIGKILL every registered task and every descendant found under them.
fn kill_all(regs: &[Registered], log: &mut std::fs::File) {
    let mut pids: Vec<i32> = Vec::new();
    for r in regs {
        if let Ok(p) = pid_of_pidfd(r.pidfd.as_fd()) {
            pids.push(p);
        }
        let _ = uffd::pidfd_kill(r.pidfd.as_fd(), libc::SIGKILL);
    }
    // Descendants forked since the restore (their parent is dying: walk before it is reaped).
    for _ in 0..3 {
        let mut found = Vec::new();
        for &p in &pids {
            found.extend(children_of(p));
        }
        found.retain(|p| !pids.contains(p));
        if found.is_empty() {
            break;
        }
        for &p in &found {
            let _ = stasis_sys::sys::kill(p, libc::SIGKILL);
        }
        pids.extend(found);
    }
    let _ = writeln!(log, "[page-server] killed pids {pids:?}");
}

fn pid_of_pidfd(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    s.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|p: &i32| *p > 0)
        .ok_or_else(|| io::Error::other("no pid"))
}

fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in d.flatten() {
        let p = t.path().join("children");
        if let Ok(s) = std::fs::read_to_string(p) {
            out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_take_put_remap() {
        let mut p = Pending::default();
        p.put(0x1000, 0x9000, 0x1000);
        assert!(p.contains(0x1000) && p.contains(0x8fff) && !p.contains(0x9000));
        assert_eq!(p.take(0x3000, 0x4000), vec![(0x3000, 0x4000, 0x3000)]);
        assert!(!p.contains(0x3000));
        p.remap(0x4000, 0x20000, 0x2000);
        assert!(!p.contains(0x4000) && p.contains(0x20000) && p.contains(0x6000));
        assert_eq!(p.take(0x21000, 0x22000), vec![(0x21000, 0x22000, 0x5000)]);
        assert_eq!(p.take(0, 0x3000), vec![(0x1000, 0x3000, 0x1000)]);
    }
}
