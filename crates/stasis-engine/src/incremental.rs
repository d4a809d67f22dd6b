//! Incremental images: an image taken relative to a parent, and write tracking between images.
//!
//! An incremental image names its parent (`Checkpoint.parent`: the parent's directory relative
//! to the image and the blake3 of the parent's manifest). Its page runs may name chunks that only
//! the parent chain holds: restore opens the chain ([`open_chain`]) and reads each chunk from the
//! first image that has it, so the image describes all of the memory and restore needs no merge.
//!
//! Two ways to take one:
//! - **Without a tracker** (`stasis checkpoint --parent DIR`): every page is read as for a full
//!   image, but a window whose chunk id the parent chain already holds is not stored again.
//! - **With a [`DirtyTracker`]** whose last image is the parent: only the pages written since are
//!   read; the others name the parent's chunks (the freeze of an idle workload is short).
//!
//! Write tracking is userfaultfd write-protect in async mode. A userfaultfd is created inside
//! each process (an injected `userfaultfd()`, with `UFFD_USER_MODE_ONLY` when the task may not
//! have a full one), taken with `pidfd_getfd` and closed in the task; its private anonymous
//! mappings are registered (`UFFDIO_REGISTER_MODE_WP`) and write-protected. A write then clears
//! the page's uffd-wp bit, which `/proc/PID/pagemap` (bit 57) and `PAGEMAP_SCAN`
//! (`PAGE_IS_WRITTEN`) show; at each image the written pages are protected again
//! (`PAGEMAP_SCAN` with `PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC`) while the tree is frozen.
//! A mapping without the `uw` VmFlag (created, moved by `mremap`, or mapped over since, or in a
//! forked child, whose mm does not inherit the registration) is treated as wholly written and
//! registered at the next image.

use crate::error::{Ctx, Failure};
use crate::freeze::Frozen;
use crate::remote::Remote;
use prost::Message;
use stasis_image::records::{self as rec, PageRun, VmaKind};
use stasis_image::{ImageReader, OpenError, ReadError};
use stasis_sys::proc::{self, PagemapEntry, SmapsEntry};
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

const PAGE: u64 = 4096;
/// Longest chain restore follows (a loop of images cannot be made: each names its parent's hash).
const MAX_CHAIN: usize = 1000;

/// Why the parent chain of an image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The parent does not open (missing, incomplete, corrupt).
    #[error("parent image {dir} of {child} cannot be opened")]
    Open {
        /// The parent's directory.
        dir: PathBuf,
        /// The image naming it.
        child: PathBuf,
        /// Cause.
        #[source]
        source: OpenError,
    },
    /// The parent is not the image the child was taken against.
    #[error("parent image {dir} of {child} was altered or replaced: its manifest is not the one {child} was taken against")]
    Altered {
        /// The parent's directory.
        dir: PathBuf,
        /// The image naming it.
        child: PathBuf,
    },
    /// The parent's records cannot be read.
    #[error("parent image {dir}: cannot read its records")]
    Read {
        /// The parent's directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: ReadError,
    },
    /// The parent's records do not decode.
    #[error("parent image {dir}: objects.img does not decode")]
    Decode {
        /// The parent's directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: prost::DecodeError,
    },
    /// The chain is longer than restore follows.
    #[error("image {dir}: chain of parents longer than {MAX_CHAIN}")]
    TooLong {
        /// The image where the walk stopped.
        dir: PathBuf,
    },
    /// The parent's path cannot be resolved.
    #[error("parent image {dir}: cannot resolve its path")]
    Path {
        /// The directory given.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// blake3 of a manifest as stored.
fn manifest_hash(r: &ImageReader) -> Vec<u8> {
    blake3::hash(r.manifest_bytes()).as_bytes().to_vec()
}

fn decode(reader: &ImageReader) -> Result<rec::Checkpoint, ChainError> {
    let dir = reader.dir().to_path_buf();
    let bytes = reader
        .read_file(stasis_image::OBJECTS_FILE)
        .map_err(|source| ChainError::Read {
            dir: dir.clone(),
            source,
        })?;
    rec::Checkpoint::decode(bytes.as_slice()).map_err(|source| ChainError::Decode { dir, source })
}

/// Open the parent chain that `img` (read from `dir`) names and attach it to `reader`, each
/// parent checked against the manifest hash its child recorded. Nothing to do for a full image.
pub fn open_chain(
    dir: &Path,
    reader: &mut ImageReader,
    img: &rec::Checkpoint,
) -> Result<(), ChainError> {
    open_chain_depth(dir, reader, img, 0)
}

fn open_chain_depth(
    dir: &Path,
    reader: &mut ImageReader,
    img: &rec::Checkpoint,
    depth: usize,
) -> Result<(), ChainError> {
    let Some(p) = &img.parent else {
        return Ok(());
    };
    if depth >= MAX_CHAIN {
        return Err(ChainError::TooLong {
            dir: dir.to_path_buf(),
        });
    }
    let pdir = normalise(&dir.join(&p.dir));
    let mut parent = ImageReader::open(&pdir).map_err(|source| ChainError::Open {
        dir: pdir.clone(),
        child: dir.to_path_buf(),
        source,
    })?;
    if manifest_hash(&parent) != p.manifest_blake3 {
        return Err(ChainError::Altered {
            dir: pdir,
            child: dir.to_path_buf(),
        });
    }
    let pimg = decode(&parent)?;
    open_chain_depth(&pdir, &mut parent, &pimg, depth + 1)?;
    reader.attach_parent(parent);
    Ok(())
}

/// `p` with `.` and `..` components resolved lexically (`a/b/../c` is `a/c`).
pub fn normalise(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(".."),
            },
            c => out.push(c),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// `to` relative to the directory `from` (both absolute, normalised).
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The parent of an image being taken: its chain opened and checked, and the page runs of its
/// private mappings by process.
pub struct Parent {
    /// What the new image records.
    pub reference: rec::ParentRef,
    /// The parent, its own parents attached.
    pub reader: ImageReader,
    /// Page runs of private mappings, by pid as the parent recorded it, sorted by address.
    runs: HashMap<i32, Vec<PageRun>>,
}

impl Parent {
    /// Open `parent_dir` as the parent of the image to be written at `child_dir`.
    pub fn open(child_dir: &Path, parent_dir: &Path) -> Result<Parent, ChainError> {
        let path_err = |source| ChainError::Path {
            dir: parent_dir.to_path_buf(),
            source,
        };
        let pabs = std::fs::canonicalize(parent_dir).map_err(path_err)?;
        let cabs = match (child_dir.parent(), child_dir.file_name()) {
            (Some(d), Some(n)) => {
                let d = if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                };
                std::fs::canonicalize(d).map_err(path_err)?.join(n)
            }
            _ => std::fs::canonicalize(child_dir).map_err(path_err)?,
        };
        let mut reader = ImageReader::open(&pabs).map_err(|source| ChainError::Open {
            dir: parent_dir.to_path_buf(),
            child: child_dir.to_path_buf(),
            source,
        })?;
        let img = decode(&reader)?;
        open_chain(&pabs, &mut reader, &img)?;
        let mut runs: HashMap<i32, Vec<PageRun>> = HashMap::new();
        for p in &img.processes {
            let r = runs.entry(p.pid).or_default();
            for v in &p.vmas {
                if matches!(
                    VmaKind::try_from(v.kind),
                    Ok(VmaKind::Anon | VmaKind::FilePrivate)
                ) {
                    r.extend(v.pages.iter().cloned());
                }
            }
            r.sort_by_key(|x| x.addr);
        }
        let rel = relative_path(&cabs, &pabs);
        Ok(Parent {
            reference: rec::ParentRef {
                dir: rel.to_string_lossy().into_owned(),
                manifest_blake3: manifest_hash(&reader),
            },
            reader,
            runs,
        })
    }
}

/// What [`crate::memory::dump_layout`] needs to take unwritten pages from the parent.
pub struct LayoutCtx<'a> {
    /// The parent image.
    pub parent: &'a Parent,
    /// Processes whose `uw` mappings were write-protected when the parent was taken.
    pub tracked: HashSet<i32>,
    /// `smaps` of tracked processes read before the freeze (walking every page of 1 GiB takes
    /// tens of milliseconds: not while the tree is frozen).
    pre_smaps: HashMap<i32, Vec<SmapsEntry>>,
    /// The processes whose pre-read `smaps` the image used.
    used: std::cell::RefCell<Vec<i32>>,
}

/// The VmFlags an image records or depends on (see `memory::KEPT_FLAGS`; `io`/`pf` refuse).
/// Not `uw`: only we set it (at the end of every image, on new mappings), and only `mremap`,
/// `munmap` or an `exec` clear it, which change the mapping's line.
const WATCHED_FLAGS: [&str; 9] = ["gd", "nr", "dd", "dc", "wf", "hg", "nh", "io", "pf"];

fn watched(s: &SmapsEntry) -> Vec<&str> {
    let mut f: Vec<&str> = s
        .vm_flags
        .iter()
        .map(String::as_str)
        .filter(|f| WATCHED_FLAGS.contains(f))
        .collect();
    f.sort_unstable();
    f
}

impl<'a> LayoutCtx<'a> {
    /// The context of an image relative to `parent`; with `pre_read` (a leave-running image),
    /// the `smaps` of the `tracked` processes are read now, before the freeze.
    pub fn new(parent: &'a Parent, tracked: HashSet<i32>, pre_read: bool) -> Self {
        let pre_smaps = if pre_read {
            tracked
                .iter()
                .filter_map(|&pid| proc::read_smaps(pid).ok().map(|s| (pid, s)))
                .collect()
        } else {
            HashMap::new()
        };
        LayoutCtx {
            parent,
            tracked,
            pre_smaps,
            used: Default::default(),
        }
    }

    /// The pre-read `smaps` of `pid`, if the frozen process's `maps` are still the same
    /// mappings (same ranges, protections, files). Flags that change without changing a
    /// mapping's line (a madvise over a whole mapping) are checked once the tree runs again
    /// ([`check_flags_unchanged`](Self::check_flags_unchanged)).
    pub fn smaps_of(&self, pid: i32) -> Option<Vec<SmapsEntry>> {
        let pre = self.pre_smaps.get(&pid)?;
        let now = proc::read_maps(pid).ok()?;
        let same = now.len() == pre.len() && now.iter().zip(pre).all(|(a, b)| *a == b.map);
        if !same {
            return None;
        }
        self.used.borrow_mut().push(pid);
        Some(pre.clone())
    }

    /// After the tree runs again: the flags of every mapping whose pre-read `smaps` the image
    /// used are still those (read once more now). A change — made between the pre-read and
    /// now — may have been made before the freeze: the image is refused, to be taken again.
    pub fn check_flags_unchanged(&self) -> Result<(), Failure> {
        for &pid in self.used.borrow().iter() {
            let Ok(now) = proc::read_smaps(pid) else {
                continue; // exited since: the image holds it as it was
            };
            for old in &self.pre_smaps[&pid] {
                let Some(new) = now
                    .iter()
                    .find(|n| n.map.start == old.map.start && n.map.end == old.map.end)
                else {
                    continue;
                };
                if watched(old) != watched(new) {
                    return Err(Failure::msg(
                        pid,
                        format!(
                            "the flags of mapping {:#x}-{:#x} changed while the image was taken ({:?} → {:?}); take it again",
                            old.map.start,
                            old.map.end,
                            watched(old),
                            watched(new)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The fast path for a tracked mapping (`uw`) of a tracked process with no parent in the
    /// tree (nothing shared copy-on-write): the written pages come from one `PAGEMAP_SCAN`
    /// (only their pagemap entries are read into `entries`, every other entry is 0), and every
    /// run of the parent inside the mapping but outside the written ranges is named again. An
    /// unwritten page the parent did not store was zero or absent then, and still is. Returns
    /// false (nothing done) when the path does not apply.
    pub fn written_only(
        &self,
        pid: i32,
        s: &SmapsEntry,
        pagemap: &proc::Pagemap,
        vma: &mut rec::Vma,
        entries: &mut Vec<u64>,
    ) -> Result<bool, Failure> {
        let m = &s.map;
        if !self.tracked.contains(&pid) || !s.has_flag("uw") || !trackable(m) {
            return Ok(false);
        }
        let pm = std::fs::File::open(format!("/proc/{pid}/pagemap"))
            .ctx(pid, || "opening pagemap".into())?;
        let written = match stasis_sys::uffd::scan_written(pm.as_fd(), m.start, m.end, false) {
            Ok(w) => w,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(false),
            Err(e) => {
                return Err(Failure::new(
                    pid,
                    format!("PAGEMAP_SCAN of {:#x}-{:#x}", m.start, m.end),
                    e,
                ))
            }
        };
        let npages = ((m.end - m.start) / PAGE) as usize;
        entries.clear();
        entries.resize(npages, 0);
        let mut part = Vec::new();
        for &(a, b) in &written {
            pagemap
                .read(a, ((b - a) / PAGE) as usize, &mut part)
                .ctx(pid, || format!("reading pagemap of {a:#x}-{b:#x}"))?;
            let i = ((a - m.start) / PAGE) as usize;
            entries[i..i + part.len()].copy_from_slice(&part);
        }
        let runs = self.parent.runs.get(&pid).map(Vec::as_slice).unwrap_or(&[]);
        let first = runs.partition_point(|r| r.addr + r.count as u64 * PAGE <= m.start);
        for run in runs[first..].iter().take_while(|r| r.addr < m.end) {
            let (ra, rb) = (
                run.addr.max(m.start),
                (run.addr + run.count as u64 * PAGE).min(m.end),
            );
            for (a, b) in subtract(ra, rb, &written) {
                vma.pages.push(PageRun {
                    addr: a,
                    count: ((b - a) / PAGE) as u32,
                    chunk: run.chunk.clone(),
                    chunk_offset: run.chunk_offset + (a - run.addr),
                });
            }
        }
        Ok(true)
    }

    /// For a tracked mapping (`uw`) of a tracked process: each page the parent stored that was
    /// not written since (present or swapped, uffd-wp still set) becomes a run naming the
    /// parent's chunk, and its pagemap entry is cleared so it is not read. Pages the parent
    /// did not store are left to be read.
    pub fn reuse_unwritten(
        &self,
        pid: i32,
        s: &SmapsEntry,
        vma: &mut rec::Vma,
        entries: &mut [u64],
    ) -> u64 {
        if !self.tracked.contains(&pid) || !s.has_flag("uw") {
            return 0;
        }
        let Some(runs) = self.parent.runs.get(&pid) else {
            return 0;
        };
        let start = s.map.start;
        let mut reused = 0;
        let mut ri = runs.partition_point(|r| r.addr + r.count as u64 * PAGE <= start);
        for (i, e) in entries.iter_mut().enumerate() {
            let pe = PagemapEntry(*e);
            if !(pe.present() || pe.swapped()) || !pe.uffd_wp() {
                continue;
            }
            let addr = start + i as u64 * PAGE;
            while ri < runs.len() && runs[ri].addr + runs[ri].count as u64 * PAGE <= addr {
                ri += 1;
            }
            let Some(run) = runs.get(ri).filter(|r| r.addr <= addr) else {
                continue;
            };
            let off = run.chunk_offset + (addr - run.addr);
            match vma.pages.last_mut() {
                Some(l)
                    if l.chunk == run.chunk
                        && l.addr + l.count as u64 * PAGE == addr
                        && l.chunk_offset + l.count as u64 * PAGE == off =>
                {
                    l.count += 1
                }
                _ => vma.pages.push(PageRun {
                    addr,
                    count: 1,
                    chunk: run.chunk.clone(),
                    chunk_offset: off,
                }),
            }
            *e = 0;
            reused += PAGE;
        }
        reused
    }
}

/// `[a, b)` minus the sorted, disjoint `ranges`.
fn subtract(a: u64, b: u64, ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = a;
    let first = ranges.partition_point(|r| r.1 <= a);
    for &(ra, rb) in ranges[first..].iter().take_while(|r| r.0 < b) {
        if ra > pos {
            out.push((pos, ra));
        }
        pos = pos.max(rb);
    }
    if pos < b {
        out.push((pos, b));
    }
    out
}

/// One tracked process.
struct Tracked {
    starttime: u64,
    uffd: OwnedFd,
    user_mode_only: bool,
}

/// Write tracking of a tree between images: owns one userfaultfd per process (created in the
/// task, see the module doc). **Closing a userfaultfd ends its tracking**: the tracker must live,
/// in whoever takes the images (the agent), from one image to the next. Whoever drops it — or a
/// checkpoint that fails after the tracking was reset — makes the next image read every page
/// (it is still stored relative to its parent, by chunk id).
#[derive(Default)]
pub struct DirtyTracker {
    procs: HashMap<i32, Tracked>,
    /// blake3 of the manifest of the image the tracking is relative to.
    base: Option<Vec<u8>>,
}

impl std::fmt::Debug for DirtyTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyTracker")
            .field("pids", &self.procs.keys().collect::<Vec<_>>())
            .field("based", &self.base.is_some())
            .finish()
    }
}

fn starttime(pid: i32) -> Option<u64> {
    proc::read_stat(pid).ok().map(|s| s.starttime)
}

/// A private anonymous mapping the tracker registers (device mappings are refused earlier).
fn trackable(m: &proc::MapEntry) -> bool {
    m.inode == 0
        && !m.shared
        && (m.path.is_empty()
            || matches!(m.path.as_str(), "[heap]" | "[stack]")
            || m.path.starts_with("[anon:"))
}

impl DirtyTracker {
    /// An empty tracker: the next image reads every page and arms it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Manifest blake3 of the image the tracking is relative to (None: none yet, or lost).
    pub fn base(&self) -> Option<&[u8]> {
        self.base.as_deref()
    }

    /// Pids tracked now (their process still the one that was armed).
    pub fn tracked_pids(&self) -> HashSet<i32> {
        self.procs
            .iter()
            .filter(|(pid, t)| starttime(**pid) == Some(t.starttime))
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Whether the userfaultfd of `pid` was created with `UFFD_USER_MODE_ONLY`.
    pub fn user_mode_only(&self, pid: i32) -> Option<bool> {
        self.procs.get(&pid).map(|t| t.user_mode_only)
    }

    /// The pages of `pid` written since the last image (tracked mappings only), as address
    /// ranges, from `PAGEMAP_SCAN` (without resetting anything).
    pub fn written(&self, pid: i32) -> Result<Vec<(u64, u64)>, Failure> {
        let pm = std::fs::File::open(format!("/proc/{pid}/pagemap"))
            .ctx(pid, || "opening pagemap".into())?;
        let mut out = Vec::new();
        for s in proc::read_smaps(pid).ctx(pid, || "reading smaps".into())? {
            if s.has_flag("uw") {
                out.extend(
                    stasis_sys::uffd::scan_written(pm.as_fd(), s.map.start, s.map.end, false)
                        .ctx(pid, || format!("PAGEMAP_SCAN of {:#x}", s.map.start))?,
                );
            }
        }
        Ok(out)
    }

    /// Forget every process (their userfaultfds are closed: tracking ends).
    pub fn clear(&mut self) {
        self.procs.clear();
        self.base = None;
    }

    /// The image relative to which the tracking now runs is durable.
    pub(crate) fn committed(&mut self, manifest_blake3: Vec<u8>) {
        self.base = Some(manifest_blake3);
    }

    /// While the tree is frozen and its pages read: start tracking (again) from now. New
    /// processes get a userfaultfd, new mappings are registered, the written pages of the
    /// others are write-protected again. Needs our parasite page in each process.
    pub(crate) fn arm(&mut self, frozen: &Frozen) -> Result<(), Failure> {
        self.base = None;
        let live: HashSet<i32> = frozen.procs.iter().map(|p| p.pid).collect();
        self.procs
            .retain(|pid, t| live.contains(pid) && starttime(*pid) == Some(t.starttime));
        for sp in &frozen.procs {
            self.arm_process(sp)?;
        }
        Ok(())
    }

    fn arm_process(&mut self, sp: &crate::freeze::SeizedProc) -> Result<(), Failure> {
        let pid = sp.pid;
        // `maps`, not `smaps`: smaps walks every page of the tree (tens of ms for 1 GiB). A
        // registered mapping is one `PAGEMAP_SCAN` with `PM_SCAN_CHECK_WPASYNC` accepts.
        let maps = proc::read_maps(pid).ctx(pid, || "reading maps".into())?;
        let maps: Vec<&proc::MapEntry> = maps
            .iter()
            .filter(|m| trackable(m) && Some(m.start) != sp.parasite)
            .collect();
        let pm = std::fs::File::open(format!("/proc/{pid}/pagemap"))
            .ctx(pid, || "opening pagemap".into())?;
        let mut registered = vec![false; maps.len()];
        if self.procs.contains_key(&pid) {
            for (i, m) in maps.iter().enumerate() {
                match stasis_sys::uffd::scan_written(pm.as_fd(), m.start, m.end, true) {
                    Ok(_) => registered[i] = true,
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                    Err(e) => {
                        return Err(Failure::new(
                            pid,
                            format!("PAGEMAP_SCAN write-protecting {:#x}-{:#x}", m.start, m.end),
                            e,
                        ))
                    }
                }
            }
        }
        // A process whose mm holds none of our registrations (new, forked, exec'd) needs a
        // userfaultfd of its own mm.
        if !registered.iter().any(|r| *r) {
            let (uffd, umo) = inject_userfaultfd(sp)?;
            let st = starttime(pid).ok_or_else(|| Failure::msg(pid, "process vanished"))?;
            self.procs.insert(
                pid,
                Tracked {
                    starttime: st,
                    uffd,
                    user_mode_only: umo,
                },
            );
        }
        let t = &self.procs[&pid];
        for (m, _) in maps.iter().zip(&registered).filter(|(_, r)| !**r) {
            let (start, len) = (m.start, m.end - m.start);
            if let Err(e) = stasis_sys::uffd::register_wp(t.uffd.as_fd(), start, len) {
                // Left untracked: read whole at every image.
                tracing::debug!(pid, start, error = %e, "mapping not registered for write tracking");
                continue;
            }
            stasis_sys::uffd::writeprotect(t.uffd.as_fd(), start, len, true)
                .ctx(pid, || format!("UFFDIO_WRITEPROTECT of {start:#x}"))?;
        }
        Ok(())
    }
}

/// A userfaultfd of `sp`'s mm, in async write-protect mode: `userfaultfd()` injected into the
/// task (with the task's credentials: `UFFD_USER_MODE_ONLY` when a full one is refused), taken
/// with `pidfd_getfd`, closed in the task. Returns it and whether it is user-mode only.
fn inject_userfaultfd(sp: &crate::freeze::SeizedProc) -> Result<(OwnedFd, bool), Failure> {
    let pid = sp.pid;
    let base = sp
        .parasite
        .ok_or_else(|| Failure::msg(pid, "no parasite page for userfaultfd"))?;
    let leader = &sp.threads[0];
    let mut r = Remote::new(pid, leader.tid, base, leader.regs);
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let res = (|| {
        let mut umo = false;
        let mut fd = r.call_raw("userfaultfd", libc::SYS_userfaultfd, &[flags])?;
        if fd == -(libc::EPERM as i64) {
            umo = true;
            fd = r.call_raw(
                "userfaultfd(UFFD_USER_MODE_ONLY)",
                libc::SYS_userfaultfd,
                &[flags | stasis_sys::uffd::UFFD_USER_MODE_ONLY],
            )?;
        }
        if fd < 0 {
            return Err(Failure::new(
                pid,
                "userfaultfd in the task",
                std::io::Error::from_raw_os_error(-fd as i32),
            ));
        }
        let taken = stasis_sys::sys::pidfd_open(pid)
            .and_then(|pfd| stasis_sys::sys::pidfd_getfd(&pfd, fd as i32))
            .ctx(pid, || "taking the userfaultfd (pidfd_getfd)".into());
        r.call("close of the userfaultfd", libc::SYS_close, &[fd as u64])?;
        let uffd = taken?;
        let features =
            stasis_sys::uffd::UFFD_FEATURE_WP_ASYNC | stasis_sys::uffd::UFFD_FEATURE_WP_UNPOPULATED;
        stasis_sys::uffd::api(uffd.as_fd(), features)
            .ctx(pid, || "UFFDIO_API (WP_ASYNC, WP_UNPOPULATED)".into())?;
        Ok((uffd, umo))
    })();
    stasis_sys::ptrace::set_regs(leader.tid, &leader.regs)
        .ctx(leader.tid, || "restoring registers".into())?;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let r = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b));
        assert_eq!(r("/img", "/img/base"), PathBuf::from("base"));
        assert_eq!(r("/img/a", "/img/b"), PathBuf::from("../b"));
        assert_eq!(r("/x/y/z", "/q"), PathBuf::from("../../../q"));
        assert_eq!(r("/img", "/img"), PathBuf::from("."));
        assert_eq!(subtract(0, 100, &[]), vec![(0, 100)]);
        assert_eq!(
            subtract(10, 100, &[(0, 20), (30, 40), (90, 200)]),
            vec![(20, 30), (40, 90)]
        );
        assert_eq!(subtract(10, 20, &[(0, 30)]), vec![]);
        let n = |a: &str| normalise(Path::new(a));
        assert_eq!(n("/t/inc/../base"), PathBuf::from("/t/base"));
        assert_eq!(n("t/./a/../../../b"), PathBuf::from("../b"));
        assert_eq!(n("/.."), PathBuf::from("/"));
    }
}
