//! Copy-on-write sharing between forked processes.
//!
//! A process created by `fork` shares its private pages with its parent until either writes
//! them. Restoring every process's private memory separately would multiply it (a pre-fork
//! server with N workers would use N+1 times its memory after a restore). So the tree is
//! rebuilt as it was built:
//!
//! ## Dump
//! For a process whose parent is in the tree (with the same executable), every private mapping
//! (anonymous or private file) is compared page by page with the parent's mappings at the same
//! addresses through `/proc/PID/pagemap`: a page is *shared* when both entries name the same
//! physical page (same PFN, anonymous in both; PFNs are visible to CAP_SYS_ADMIN only, without
//! it nothing is shared) or the same swap slot. Where the parent has a compatible mapping (same
//! kind, flags, madvise flags, same file at the same offset; never `MADV_DONTFORK` or
//! `MADV_WIPEONFORK`), the overlap is recorded as *inherited* (`Vma.inherit`) and its shared
//! pages are not stored for the child; the pages there that are not shared but hold something
//! in the parent are recorded to be dropped (`Vma.discard`) — when there are more shared pages
//! than ranges to drop (each drop is a system call at restore).
//!
//! ## Restore
//! A parent's mappings that a child inherits from ([`prefork_marks`]) are created and filled
//! before its children are forked from it; each child then keeps exactly its inherited parts of
//! what fork gave it ([`prune`]), drops its discarded pages, gets its own pages written and the
//! rest of its layout created as usual. The kernel shares the inherited pages copy-on-write, so
//! they use memory once, as before the checkpoint.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::remote::{Remote, PARASITE_LEN};
use stasis_image::records::{self as rec, AddrRange, VmaKind};
use stasis_sys::proc::{self, PagemapEntry, PM_PFN_MASK};
use std::collections::HashMap;

const PAGE: u64 = 4096;

/// The parent of a process being dumped: its mappings (already dumped) and its pagemap.
pub struct ParentView<'a> {
    pid: i32,
    vmas: &'a [rec::Vma],
    pagemap: proc::Pagemap,
}

impl<'a> ParentView<'a> {
    /// The dumped parent of `p` among `procs`, if it is in the tree and runs the same executable
    /// (a process that exec'd shares nothing with its parent).
    pub fn find(procs: &'a [rec::Process], p: &rec::Process) -> Result<Option<Self>, Failure> {
        let Some(q) = procs.iter().find(|q| q.pid == p.ppid && q.exe == p.exe) else {
            return Ok(None);
        };
        let pagemap = proc::Pagemap::open(q.pid).ctx(q.pid, || "opening pagemap".into())?;
        Ok(Some(ParentView {
            pid: q.pid,
            vmas: &q.vmas,
            pagemap,
        }))
    }
}

/// Whether child mapping `v` can inherit from parent mapping `q` where they overlap.
fn compatible(v: &rec::Vma, q: &rec::Vma) -> bool {
    let private = |k: i32| k == VmaKind::Anon as i32 || k == VmaKind::FilePrivate as i32;
    let no_fork = |x: &rec::Vma| x.vm_flags.iter().any(|f| f == "dc" || f == "wf");
    if !private(v.kind) || v.kind != q.kind || v.flags != q.flags || v.vm_flags != q.vm_flags {
        return false;
    }
    if no_fork(v) || no_fork(q) {
        return false;
    }
    // A stack that grows down is inherited only whole.
    if v.flags & libc::MAP_GROWSDOWN as u32 != 0 && (v.start != q.start || v.end != q.end) {
        return false;
    }
    v.kind == VmaKind::Anon as i32
        || (v.path == q.path
            && v.file_id == q.file_id
            && (v.from_shmem, v.shmem_id) == (q.from_shmem, q.shmem_id)
            && v.offset.wrapping_sub(v.start) == q.offset.wrapping_sub(q.start))
}

/// The same physical page (or swap slot) in child entry `c` and parent entry `p`.
fn same_page(c: PagemapEntry, p: PagemapEntry) -> bool {
    if c.present() && p.present() {
        !c.file_or_shared() && !p.file_or_shared() && c.pfn() != 0 && c.pfn() == p.pfn()
    } else {
        c.swapped() && p.swapped() && c.0 & PM_PFN_MASK == p.0 & PM_PFN_MASK
    }
}

/// The parent has a page of its own there (restored from its image): an anonymous page or a
/// swapped one.
fn parent_has_content(p: PagemapEntry) -> bool {
    (p.present() && !p.file_or_shared()) || p.swapped()
}

/// Find the parts of child mapping `v` it can inherit from `parent`, given its pagemap
/// `entries` (one per page of `v`): fills `v.inherit` and `v.discard`, and clears the entries of
/// shared pages so that they are not stored.
pub fn share(
    v: &mut rec::Vma,
    entries: &mut [u64],
    parent: &ParentView,
) -> Result<(), CheckpointError> {
    let mut pentries = Vec::new();
    for q in parent
        .vmas
        .iter()
        .filter(|q| q.start < v.end && v.start < q.end)
    {
        if !compatible(v, q) {
            continue;
        }
        let (lo, hi) = (v.start.max(q.start), v.end.min(q.end));
        let n = ((hi - lo) / PAGE) as usize;
        parent
            .pagemap
            .read(lo, n, &mut pentries)
            .ctx(parent.pid, || format!("reading pagemap of {lo:#x}-{hi:#x}"))?;
        let first = ((lo - v.start) / PAGE) as usize;
        let ours = &mut entries[first..first + n];
        let shared: Vec<bool> = ours
            .iter()
            .zip(&pentries)
            .map(|(&c, &p)| same_page(PagemapEntry(c), PagemapEntry(p)))
            .collect();
        let drop = (0..n).map(|i| !shared[i] && parent_has_content(PagemapEntry(pentries[i])));
        let drops = ranges_of(lo, drop);
        // Each dropped range costs a system call at restore, each shared page saves one.
        if shared.iter().filter(|&&s| s).count() <= drops.len() {
            continue;
        }
        v.inherit.push(AddrRange { start: lo, end: hi });
        v.discard.extend(drops);
        for (e, s) in ours.iter_mut().zip(&shared) {
            if *s {
                *e = 0;
            }
        }
    }
    Ok(())
}

/// The runs of consecutive `true` pages from `start`, as address ranges.
fn ranges_of(start: u64, pages: impl Iterator<Item = bool>) -> Vec<AddrRange> {
    let mut out: Vec<AddrRange> = Vec::new();
    for (i, on) in pages.enumerate() {
        if !on {
            continue;
        }
        let a = start + i as u64 * PAGE;
        match out.last_mut() {
            Some(r) if r.end == a => r.end += PAGE,
            _ => out.push(AddrRange {
                start: a,
                end: a + PAGE,
            }),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Restore side.

/// `[start, end)` minus the sorted, disjoint `holes`.
fn subtract(start: u64, end: u64, holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(s, e) in holes {
        if e <= at || s >= end {
            continue;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// The parts of mapping `v` that are created anew (all of it when nothing is inherited).
pub fn fresh_pieces(v: &rec::Vma) -> Vec<(u64, u64)> {
    let mut holes: Vec<(u64, u64)> = v.inherit.iter().map(|r| (r.start, r.end)).collect();
    holes.sort_unstable();
    subtract(v.start, v.end, &holes)
}

/// For each process, which of its mappings a child inherits from (they are created and filled
/// before its children are forked). Processes without any are left out.
pub fn prefork_marks(img: &rec::Checkpoint) -> HashMap<i32, Vec<bool>> {
    let mut marks: HashMap<i32, Vec<bool>> = HashMap::new();
    for p in &img.processes {
        let Some(q) = img.processes.iter().find(|q| q.pid == p.ppid) else {
            continue;
        };
        for r in p.vmas.iter().flat_map(|v| &v.inherit) {
            for (i, qv) in q.vmas.iter().enumerate() {
                if qv.start < r.end && r.start < qv.end {
                    marks
                        .entry(q.pid)
                        .or_insert_with(|| vec![false; q.vmas.len()])[i] = true;
                }
            }
        }
    }
    marks
}

/// Structural checks of the inherited parts (restore relies on them).
pub fn validate(img: &rec::Checkpoint) -> Result<(), String> {
    for (idx, p) in img.processes.iter().enumerate() {
        let parent = img.processes.iter().find(|q| q.pid == p.ppid);
        for v in &p.vmas {
            if v.inherit.is_empty() && v.discard.is_empty() {
                continue;
            }
            let bad =
                |what: &str| format!("pid {}: mapping {:#x}-{:#x}: {what}", p.pid, v.start, v.end);
            let Some(q) = parent.filter(|_| idx > 0) else {
                return Err(bad("inherits memory but has no parent in the tree"));
            };
            let private = v.kind == VmaKind::Anon as i32 || v.kind == VmaKind::FilePrivate as i32;
            if !private {
                return Err(bad("inherits memory but is not a private mapping"));
            }
            let mut prev = v.start;
            for r in &v.inherit {
                let aligned = r.start % PAGE == 0 && r.end % PAGE == 0;
                if !aligned || r.start < prev || r.end <= r.start || r.end > v.end {
                    return Err(bad("bad inherited range"));
                }
                prev = r.end;
                let mut covered: Vec<(u64, u64)> = q
                    .vmas
                    .iter()
                    .filter(|qv| qv.kind == v.kind)
                    .map(|qv| (qv.start, qv.end))
                    .collect();
                covered.sort_unstable();
                if !subtract(r.start, r.end, &covered).is_empty() {
                    return Err(bad("inherited range not mapped alike in the parent"));
                }
            }
            for d in &v.discard {
                let inside = v
                    .inherit
                    .iter()
                    .any(|r| r.start <= d.start && d.end <= r.end && d.start < d.end);
                if !inside || d.start % PAGE != 0 || d.end % PAGE != 0 {
                    return Err(bad("discarded range outside the inherited ones"));
                }
            }
        }
    }
    Ok(())
}

/// In a process just forked from its restored parent: unmap everything fork gave it except its
/// inherited parts, our gadget and the vdso block. Fails if an inherited part is not there.
pub fn prune(r: &mut Remote, p: &rec::Process) -> Result<(), Failure> {
    let pid = r.pid;
    let maps = proc::read_maps(pid).ctx(pid, || "reading maps".into())?;
    let special = |m: &proc::MapEntry| {
        matches!(
            m.path.as_str(),
            "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]"
        )
    };
    let mut keep: Vec<(u64, u64)> = p
        .vmas
        .iter()
        .flat_map(|v| v.inherit.iter().map(|x| (x.start, x.end)))
        .chain(crate::aio::copies(p))
        .collect();
    let mut mapped: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).collect();
    mapped.sort_unstable();
    for &(s, e) in &keep {
        if !subtract(s, e, &mapped).is_empty() {
            return Err(Failure::msg(
                pid,
                format!("inherited memory {s:#x}-{e:#x} is not in the process after fork"),
            ));
        }
    }
    keep.push((r.base, r.base + PARASITE_LEN));
    keep.sort_unstable();
    for m in maps.iter().filter(|m| !special(m)) {
        for (s, e) in subtract(m.start, m.end, &keep) {
            r.call(
                &format!(
                    "unmapping {s:#x}-{e:#x} ({}) inherited from the parent",
                    m.path
                ),
                libc::SYS_munmap,
                &[s, e - s],
            )?;
        }
    }
    Ok(())
}

/// After the fresh parts of mapping `v` exist: make its inherited parts writable with `prot`
/// while they are filled (when they will be), and drop its discarded pages.
pub fn finish_inherited(r: &mut Remote, v: &rec::Vma, prot: u64) -> Result<(), Failure> {
    if !v.pages.is_empty() {
        for x in &v.inherit {
            r.call(
                &format!("mprotect of inherited memory {:#x}-{:#x}", x.start, x.end),
                libc::SYS_mprotect,
                &[x.start, x.end - x.start, prot],
            )?;
        }
    }
    for d in &v.discard {
        r.call(
            &format!("madvise(DONTNEED) of {:#x}-{:#x}", d.start, d.end),
            libc::SYS_madvise,
            &[d.start, d.end - d.start, libc::MADV_DONTNEED as u64],
        )?;
    }
    Ok(())
}

/// The first part of each process's memory, done as soon as it exists and before its children
/// are forked from it: inherited parts pruned, vdso block moved, mm fields and exe set, and the
/// mappings its children inherit created and filled. The rest of its layout comes later.
pub struct PreFork<'a> {
    reader: &'a stasis_image::ImageReader,
    workers: usize,
    gadget: u64,
    marks: HashMap<i32, Vec<bool>>,
    /// Protections to apply at the end, per image pid.
    pub fixups: HashMap<i32, Vec<crate::memory::Fixup>>,
    /// Page bytes written so far.
    pub bytes: u64,
}

impl<'a> PreFork<'a> {
    /// `gadget`: our mapping in every task (a free area follows it).
    pub fn new(
        img: &rec::Checkpoint,
        reader: &'a stasis_image::ImageReader,
        workers: usize,
        gadget: u64,
    ) -> Self {
        PreFork {
            reader,
            workers,
            gadget,
            marks: prefork_marks(img),
            fixups: HashMap::new(),
            bytes: 0,
        }
    }

    /// Whether mapping `i` of process `pid` was created here.
    pub fn done(&self, pid: i32, i: usize) -> bool {
        self.marks.get(&pid).is_some_and(|m| m[i])
    }

    /// Run the first part for process `p` (just created, behind `r`).
    pub fn process(
        &mut self,
        img: &rec::Checkpoint,
        p: &rec::Process,
        r: &mut Remote,
        opened: &mut crate::files::Opened,
    ) -> Result<(), Failure> {
        self.run(img, p, r, opened)?;
        // Our pidfd in the task goes before its children copy its fd table.
        opened.finish(r)
    }

    fn run(
        &mut self,
        img: &rec::Checkpoint,
        p: &rec::Process,
        r: &mut Remote,
        src: &mut dyn crate::memory::FdSource,
    ) -> Result<(), Failure> {
        let parent = img.processes[1..]
            .iter()
            .any(|x| x.pid == p.pid)
            .then(|| img.processes.iter().find(|q| q.pid == p.ppid))
            .flatten();
        if parent.is_some() {
            prune(r, p)?;
        }
        let free = self.gadget + PARASITE_LEN + (1 << 20);
        crate::memory::restore_vdso(r, &p.vmas, free)?;
        // mm fields and exe: the kernel refuses a new exe file while the old one is still
        // mapped, and an inherited part may map it; a child of the same exe keeps its parent's.
        let mm = p.mm.as_ref().expect("validated");
        if parent.is_some_and(|q| q.exe == p.exe) {
            crate::task::restore_mm(r, mm, u32::MAX as u64)?;
        } else {
            let exe = src
                .file_fd(&p.exe, false)
                .map_err(|e| Failure::msg(p.pid, format!("executable {}: {e}", p.exe)))?;
            let rexe = src.install(r, exe)?;
            crate::task::restore_mm(r, mm, rexe)?;
            r.call("close", libc::SYS_close, &[rexe])?;
        }
        // Before its children are forked: they get copies of the rings as before.
        crate::aio::restore_rings(r, p, src)?;
        let Some(marks) = self.marks.get(&p.pid) else {
            return Ok(());
        };
        let (fill, fix) = crate::memory::restore_mappings(r, p, src, &|i| marks[i])?;
        self.fixups.insert(p.pid, fix);
        self.bytes += crate::memory::fill_pages(self.reader, &[fill], self.workers)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64, inherit: &[(u64, u64)], discard: &[(u64, u64)]) -> rec::Vma {
        let r = |v: &[(u64, u64)]| {
            v.iter()
                .map(|&(start, end)| AddrRange { start, end })
                .collect()
        };
        rec::Vma {
            start,
            end,
            kind: VmaKind::Anon as i32,
            inherit: r(inherit),
            discard: r(discard),
            ..Default::default()
        }
    }

    fn image(parent: Vec<rec::Vma>, child: Vec<rec::Vma>) -> rec::Checkpoint {
        rec::Checkpoint {
            root_pid: 10,
            processes: vec![
                rec::Process {
                    pid: 10,
                    vmas: parent,
                    ..Default::default()
                },
                rec::Process {
                    pid: 11,
                    ppid: 10,
                    vmas: child,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn parent_mappings_a_child_inherits_from_are_marked() {
        const P: u64 = PAGE;
        // The child's mapping spans two of the parent's and grew past them.
        let img = image(
            vec![
                vma(0, 4 * P, &[], &[]),
                vma(4 * P, 8 * P, &[], &[]),
                vma(20 * P, 21 * P, &[], &[]),
            ],
            vec![vma(2 * P, 12 * P, &[(2 * P, 8 * P)], &[(3 * P, 4 * P)])],
        );
        assert_eq!(validate(&img), Ok(()));
        assert_eq!(prefork_marks(&img)[&10], vec![true, true, false]);
        assert!(!prefork_marks(&img).contains_key(&11));
        let child = &img.processes[1].vmas[0];
        assert_eq!(fresh_pieces(child), vec![(8 * P, 12 * P)]);
    }

    #[test]
    fn validate_refuses_what_restore_cannot_honour() {
        const P: u64 = PAGE;
        let parent = || vec![vma(0, 4 * P, &[], &[])];
        // Inherited where the parent has nothing.
        let img = image(parent(), vec![vma(0, 8 * P, &[(0, 8 * P)], &[])]);
        assert!(validate(&img).unwrap_err().contains("not mapped alike"));
        // Dropped outside the inherited part.
        let img = image(
            parent(),
            vec![vma(0, 8 * P, &[(0, 4 * P)], &[(4 * P, 5 * P)])],
        );
        assert!(validate(&img).unwrap_err().contains("outside"));
        // Unaligned, or outside its own mapping.
        let img = image(parent(), vec![vma(0, 4 * P, &[(1, 4 * P)], &[])]);
        assert!(validate(&img).is_err());
        let img = image(parent(), vec![vma(P, 2 * P, &[(0, 2 * P)], &[])]);
        assert!(validate(&img).is_err());
        // The root has no parent to inherit from.
        let mut img = image(parent(), vec![]);
        img.processes[0].vmas[0].inherit = vec![AddrRange { start: 0, end: P }];
        assert!(validate(&img).unwrap_err().contains("no parent"));
    }

    #[test]
    fn subtract_leaves_the_gaps() {
        assert_eq!(
            subtract(0, 100, &[(10, 20), (30, 40)]),
            vec![(0, 10), (20, 30), (40, 100)]
        );
        assert_eq!(subtract(10, 20, &[(0, 100)]), vec![]);
        assert_eq!(subtract(10, 20, &[(0, 5), (25, 30)]), vec![(10, 20)]);
        assert_eq!(subtract(10, 20, &[(0, 15), (12, 18)]), vec![(18, 20)]);
    }

    #[test]
    fn ranges_merge_consecutive_pages() {
        let r = ranges_of(0x1000, [true, true, false, true].into_iter());
        assert_eq!(
            r,
            vec![
                AddrRange {
                    start: 0x1000,
                    end: 0x3000
                },
                AddrRange {
                    start: 0x4000,
                    end: 0x5000
                }
            ]
        );
    }

    #[test]
    fn same_page_needs_a_pfn_and_anonymous_pages() {
        const PRESENT: u64 = 1 << 63;
        const SWAP: u64 = 1 << 62;
        const FILE: u64 = 1 << 61;
        let e = PagemapEntry;
        assert!(same_page(e(PRESENT | 42), e(PRESENT | 42)));
        assert!(!same_page(e(PRESENT | 42), e(PRESENT | 43)));
        // No PFN (no CAP_SYS_ADMIN): never shared.
        assert!(!same_page(e(PRESENT), e(PRESENT)));
        // Page cache pages come from the file anyway.
        assert!(!same_page(e(PRESENT | FILE | 42), e(PRESENT | FILE | 42)));
        assert!(same_page(e(SWAP | 0x77), e(SWAP | 0x77)));
        assert!(!same_page(e(SWAP | 0x77), e(SWAP | 0x78)));
        assert!(!same_page(e(0), e(0)));
    }
}
