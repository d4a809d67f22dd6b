//! Memory: mappings and their pages.
//!
//! ## Dump
//! `/proc/PID/smaps` gives every mapping with its VmFlags. Each is classified
//! ([`rec::VmaKind`]): private anonymous (heap and stacks included), private file-backed, shared
//! file-backed, shared memory objects (MAP_SHARED anonymous, memfd, deleted files on tmpfs), and
//! the kernel's `[vdso]`/`[vvar]`/`[vvar_vclock]`. Device mappings (VM_IO/VM_PFNMAP) are
//! refused.
//!
//! Which pages to store is read from `/proc/PID/pagemap`: a page is stored when it is present and
//! anonymous (bit 61 clear: for a private file mapping that means the page was copied on write
//! and differs from the file), or swapped out. Never-touched pages are absent and not stored;
//! all-zero anonymous pages are skipped too (they read back as zero). Pages are read in
//! 1 MiB-aligned windows, with one `process_vm_readv` per window (one iovec per run of pages),
//! or through `/proc/PID/mem` for mappings that are not readable (PROT_NONE holding data). Each
//! window's kept pages form one content-addressed chunk. Windows are spread over worker threads.
//!
//! A private mapping of a file that is no longer at its path (deleted, or a memfd) has its file
//! dumped once as a shared memory object (`Vma.from_shmem`); restore recreates a deleted file at
//! its path, maps it and unlinks it again. Pages a child still shares with its parent are left
//! to [`crate::cow`].
//!
//! A shared memory object is dumped once, whichever processes and mappings use it: it is
//! identified by (device, inode) and read through `/proc/PID/map_files/START-END` with
//! `SEEK_DATA`/`SEEK_HOLE`, since a page touched by one process is absent from another's pagemap.
//!
//! ## Restore
//! The blank process has only our gadget page and the vdso block. The vdso block is moved to
//! its saved address with `mremap` (all three parts, keeping their offsets). Every mapping is
//! then created at its address with `MAP_FIXED_NOREPLACE` (writable while it is filled), files
//! and shared objects passed in as fds via `pidfd_getfd`. Pages are written with
//! `process_vm_writev` by worker threads; then final protections and madvise flags are applied.

use crate::error::{Ctx, Failure};
use crate::remote::Remote;
use stasis_image::records::{self as rec, PageRun, ShmemKind, VmaKind};
use stasis_image::{ChunkId, ImageReader, ImageWriter};
use stasis_sys::mem::{self, RemoteRange};
use stasis_sys::proc::{self, PagemapEntry, SmapsEntry};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const PAGE: u64 = 4096;
/// Pages per dump window (4 MiB).
pub const WINDOW_PAGES: u64 = 1024;
static ZERO_PAGE: [u8; 4096] = [0; 4096];

/// Shared-memory objects seen so far, keyed by (device, inode).
#[derive(Default)]
pub struct ShmemTable {
    /// (dev, ino) → index in `objects`.
    pub by_key: HashMap<(u64, u64), u32>,
    /// Objects, content not yet dumped for those in `pending`.
    pub objects: Vec<rec::ShmemObject>,
    /// Where to read each object from: a path under /proc that opens it.
    pub sources: Vec<String>,
}

impl ShmemTable {
    /// Register an object (if new) and return its id.
    pub fn intern(
        &mut self,
        key: (u64, u64),
        kind: ShmemKind,
        name: String,
        size: u64,
        source: String,
    ) -> u32 {
        if let Some(&id) = self.by_key.get(&key) {
            let o = &mut self.objects[id as usize];
            o.size = o.size.max(size);
            return id;
        }
        let id = self.objects.len() as u32;
        self.objects.push(rec::ShmemObject {
            id,
            kind: kind as i32,
            name,
            size,
            pages: Vec::new(),
            seals: 0,
            ino: key.1,
            ..Default::default()
        });
        self.sources.push(source);
        self.by_key.insert(key, id);
        id
    }
}

fn dev_of(m: &proc::MapEntry) -> u64 {
    libc::makedev(m.dev_major, m.dev_minor)
}

fn prot_of(m: &proc::MapEntry) -> u32 {
    let mut p = 0;
    if m.read {
        p |= libc::PROT_READ;
    }
    if m.write {
        p |= libc::PROT_WRITE;
    }
    if m.exec {
        p |= libc::PROT_EXEC;
    }
    p as u32
}

const KEPT_FLAGS: [&str; 7] = ["gd", "nr", "dd", "dc", "wf", "hg", "nh"];

/// One window of pages to read in the dump.
pub struct DumpJob {
    pid: i32,
    /// Index of the (process, vma) this window belongs to, for reassembly.
    pub slot: (usize, usize),
    pages: Vec<u64>,
    readable: bool,
    skip_zero: bool,
    /// The pages are in swap: read after every resident page.
    pub swapped: bool,
}

/// Classify the mappings of one process and plan the page windows to read. With its `parent`
/// in the tree, the pages it still shares with it are not read (see [`crate::cow`]).
pub fn dump_layout(
    pid: i32,
    proc_idx: usize,
    smaps: &[SmapsEntry],
    shmem: &mut ShmemTable,
    jobs: &mut Vec<DumpJob>,
    parent: Option<&crate::cow::ParentView>,
    incr: Option<&crate::incremental::LayoutCtx>,
) -> Result<Vec<rec::Vma>, crate::error::CheckpointError> {
    let mut vmas = Vec::new();
    let pagemap = proc::Pagemap::open(pid).ctx(pid, || "opening pagemap".into())?;
    let mut entries = Vec::new();
    for s in smaps {
        let m = &s.map;
        let Some(kind) = classify(pid, s)? else {
            continue;
        };
        let mut vma = base_vma(s, kind);
        match kind {
            VmaKind::FilePrivate if m.deleted() => intern_private(pid, m, shmem, &mut vma)?,
            VmaKind::FilePrivate | VmaKind::FileShared => identify_file(pid, m, &mut vma)?,
            VmaKind::Shmem => intern_shmem(pid, m, shmem, &mut vma)?,
            VmaKind::Aio => crate::aio::dump_ring(pid, m, &mut vma)?,
            _ => {}
        }
        if kind == VmaKind::Shmem && m.path.starts_with("/memfd:") && s.has_flag("mw") {
            // Whether it may be made writable: a memfd's read-only mapping without it is
            // restored from a read-only description (`ShmemObject::memfd_attrs`).
            vma.vm_flags.push("mw".into());
        }
        if matches!(
            kind,
            VmaKind::Anon | VmaKind::FilePrivate | VmaKind::AnonHugetlb
        ) {
            let npages = ((m.end - m.start) / PAGE) as usize;
            let fast = match incr {
                Some(incr) if parent.is_none() => {
                    incr.written_only(pid, s, &pagemap, &mut vma, &mut entries)?
                }
                _ => false,
            };
            if !fast {
                pagemap.read(m.start, npages, &mut entries).ctx(pid, || {
                    format!("reading pagemap of {:#x}-{:#x}", m.start, m.end)
                })?;
                // hugetlb pages are not inherited: each process gets its own (crate::hugetlb).
                if let Some(parent) = parent.filter(|_| vma.page_size == 0) {
                    crate::cow::share(&mut vma, &mut entries[..npages], parent)?;
                }
                if let Some(incr) = incr {
                    incr.reuse_unwritten(pid, s, &mut vma, &mut entries[..npages]);
                }
            }
            jobs.extend(plan_windows(
                pid,
                (proc_idx, vmas.len()),
                m.start,
                &entries[..npages],
                m.read,
                matches!(kind, VmaKind::Anon | VmaKind::AnonHugetlb),
            ));
        }
        vmas.push(vma);
    }
    Ok(vmas)
}

/// What kind of mapping `s` is; `None` for one that is not saved (`[vsyscall]`, the same in
/// every process); a refusal for what cannot be restored.
fn classify(pid: i32, s: &SmapsEntry) -> Result<Option<VmaKind>, crate::error::CheckpointError> {
    let m = &s.map;
    let unsupported = |what: String| crate::error::CheckpointError::Unsupported { pid, what };
    if m.path == "[vsyscall]" {
        return Ok(None);
    }
    if s.kernel_page_size_kb > 4 || s.has_flag("ht") {
        return classify_hugetlb(pid, s).map(Some);
    }
    let special = matches!(m.path.as_str(), "[vdso]" | "[vvar]" | "[vvar_vclock]");
    if !special && (s.has_flag("io") || s.has_flag("pf")) {
        return Err(unsupported(format!(
            "mapping {:#x}-{:#x} ({}) is device memory (VM_IO/VM_PFNMAP); not supported",
            m.start, m.end, m.path
        )));
    }
    let kind = match m.path.as_str() {
        "[vdso]" => VmaKind::Vdso,
        "[vvar]" => VmaKind::Vvar,
        "[vvar_vclock]" => VmaKind::VvarVclock,
        p if p.starts_with("/SYSV") => VmaKind::Shmem,
        _ if crate::aio::is_ring(m) => VmaKind::Aio,
        p if p.starts_with('[')
            && !matches!(p, "[heap]" | "[stack]")
            && !p.starts_with("[anon:") =>
        {
            return Err(unsupported(format!(
                "mapping {:#x}-{:#x} is a special kernel mapping {}; not supported",
                m.start, m.end, p
            )))
        }
        _ if m.inode == 0 && !m.shared => VmaKind::Anon,
        _ if m.inode == 0 && m.shared => {
            return Err(unsupported(format!(
                "mapping {:#x}-{:#x} ({}) is a shared mapping without inode; not supported",
                m.start, m.end, m.path
            )))
        }
        _ if !m.shared => VmaKind::FilePrivate,
        p if p.starts_with("/memfd:") || p.starts_with("/dev/zero") || m.deleted() => {
            VmaKind::Shmem
        }
        _ => VmaKind::FileShared,
    };
    Ok(Some(kind))
}

/// What kind of hugetlb mapping `s` is (see [`crate::hugetlb`]).
fn classify_hugetlb(pid: i32, s: &SmapsEntry) -> Result<VmaKind, crate::error::CheckpointError> {
    let m = &s.map;
    let p = m.path.as_str();
    Ok(match (p, m.shared) {
        ("/anon_hugepage (deleted)", false) => VmaKind::AnonHugetlb,
        (p, true) if p.starts_with("/SYSV") || p.starts_with("/memfd:") => VmaKind::Shmem,
        ("/anon_hugepage (deleted)", true) => VmaKind::Shmem,
        (_, false) if p.starts_with("/memfd:") || !m.deleted() => VmaKind::FilePrivate,
        (_, true) if !m.deleted() => VmaKind::FileShared,
        _ => {
            return Err(crate::error::CheckpointError::Unsupported {
                pid,
                what: format!(
                    "mapping {:#x}-{:#x} ({p}) is a deleted file on hugetlbfs; not supported",
                    m.start, m.end
                ),
            })
        }
    })
}

/// The record of mapping `s` of this kind, before its object and pages are filled in.
fn base_vma(s: &SmapsEntry, kind: VmaKind) -> rec::Vma {
    let m = &s.map;
    let mut flags = if m.shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    } as u32;
    if s.has_flag("gd") {
        flags |= libc::MAP_GROWSDOWN as u32;
    }
    if s.has_flag("nr") {
        flags |= libc::MAP_NORESERVE as u32;
    }
    rec::Vma {
        start: m.start,
        end: m.end,
        prot: prot_of(m),
        flags,
        kind: kind as i32,
        offset: m.offset,
        path: m.path.clone(),
        shmem_id: 0,
        vm_flags: s
            .vm_flags
            .iter()
            .filter(|f| KEPT_FLAGS.contains(&f.as_str()))
            .cloned()
            .collect(),
        pages: Vec::new(),
        file_id: None,
        page_size: if s.kernel_page_size_kb > 4 {
            s.kernel_page_size_kb << 10
        } else {
            0
        },
        ..Default::default()
    }
}

/// A file mapping: the file's path and identity (restore checks it is the same file).
fn identify_file(
    pid: i32,
    m: &proc::MapEntry,
    vma: &mut rec::Vma,
) -> Result<(), crate::error::CheckpointError> {
    let path = m.file_path().unwrap_or(&m.path).to_string();
    let md = std::fs::metadata(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
        .ctx(pid, || format!("stat of mapped file {path}"))?;
    vma.path = path;
    vma.file_id = Some(rec::FileIdentity {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
    });
    Ok(())
}

/// A private mapping of a file that is gone from its path (a memfd, or a deleted file): the
/// file is dumped once, as a shared-memory object, and restored from the image.
fn intern_private(
    pid: i32,
    m: &proc::MapEntry,
    shmem: &mut ShmemTable,
    vma: &mut rec::Vma,
) -> Result<(), crate::error::CheckpointError> {
    let src = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let md = std::fs::metadata(&src).ctx(pid, || format!("stat of mapped file {}", m.path))?;
    let known = shmem.by_key.contains_key(&(dev_of(m), m.inode));
    intern_shmem(pid, m, shmem, vma)?;
    vma.from_shmem = true;
    let o = &mut shmem.objects[vma.shmem_id as usize];
    if o.kind == ShmemKind::DeletedFile as i32 {
        if !known {
            // Its own size: pages past the end of the file stay out of reach (SIGBUS).
            o.size = md.size();
        }
        o.private_file = true;
        o.mode = md.mode() & 0o7777;
        o.uid = md.uid();
        o.gid = md.gid();
    }
    Ok(())
}

/// A shared memory object (System V segment, memfd, shared anonymous, deleted file): entered
/// once in the table whatever the number of mappings, its contents dumped once later.
fn intern_shmem(
    pid: i32,
    m: &proc::MapEntry,
    shmem: &mut ShmemTable,
    vma: &mut rec::Vma,
) -> Result<(), crate::error::CheckpointError> {
    let (skind, name) = if let Some(k) = m.path.strip_prefix("/SYSV") {
        (
            ShmemKind::SysvShm,
            k.trim_end_matches(" (deleted)").to_string(),
        )
    } else if let Some(n) = m.path.strip_prefix("/memfd:") {
        (
            ShmemKind::Memfd,
            n.trim_end_matches(" (deleted)").to_string(),
        )
    } else if m.path.starts_with("/dev/zero") {
        (ShmemKind::SharedAnon, String::new())
    } else if m.path == "/anon_hugepage (deleted)" {
        (ShmemKind::HugetlbAnon, String::new())
    } else {
        (
            ShmemKind::DeletedFile,
            m.file_path().unwrap_or(&m.path).to_string(),
        )
    };
    let src = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let size = std::fs::metadata(&src).map(|md| md.size()).unwrap_or(0);
    // A memfd keeps its own size (a mapping may reach past its end: SIGBUS there).
    let mut size = if skind == ShmemKind::Memfd {
        size
    } else {
        size.max(m.offset + (m.end - m.start))
    };
    let sysv = if skind == ShmemKind::SysvShm {
        let id = m.inode as i32;
        let st = stasis_sys::sys::shm_stat(id)
            .ctx(pid, || format!("System V segment {id}: IPC_STAT"))?;
        // A segment's size is its shm_segsz, not its mapping: the kernel maps whole pages
        // (a 56-byte segment is mapped as 4096 bytes).
        size = st.1;
        Some((id, st))
    } else {
        None
    };
    let owner = std::fs::metadata(&src).map(|md| (md.mode() & 0o7777, md.uid(), md.gid()));
    vma.shmem_id = shmem.intern((dev_of(m), m.inode), skind, name, size, src);
    if vma.page_size != 0 {
        shmem.objects[vma.shmem_id as usize].page_size = vma.page_size;
    }
    if skind == ShmemKind::DeletedFile {
        // Mode and owner of the deleted file, for the file made again.
        let o = &mut shmem.objects[vma.shmem_id as usize];
        if let Ok((mode, uid, gid)) = owner {
            (o.mode, o.uid, o.gid) = (mode, uid, gid);
        }
    }
    if let Some((id, (key, segsz, mode, uid, gid))) = sysv {
        let o = &mut shmem.objects[vma.shmem_id as usize];
        if o.sysv_id == 0 && o.sysv_key == 0 {
            o.sysv_id = id;
            o.sysv_key = key;
            o.size = segsz;
            o.mode = mode & 0o777;
            o.uid = uid;
            o.gid = gid;
            o.destroyed = mode & 0o1000 != 0;
        }
    }
    Ok(())
}

/// The page windows to read of a private mapping starting at `start`, from its pagemap
/// `entries` (one per page): windows aligned to [`WINDOW_PAGES`] pages of the address space;
/// in each, the resident pages that are the process's own (not file or shared pages) in one
/// job, and the swapped pages in another marked `swapped` (read after every resident page:
/// reading them swaps them in). Empty windows give no job. Pure: tested without a process.
fn plan_windows(
    pid: i32,
    slot: (usize, usize),
    start: u64,
    entries: &[u64],
    readable: bool,
    skip_zero: bool,
) -> Vec<DumpJob> {
    let npages = entries.len();
    let mut jobs = Vec::new();
    let mut w = 0;
    while w < npages {
        let win_start = start + w as u64 * PAGE;
        let win_end_page = (((win_start / PAGE) / WINDOW_PAGES + 1) * WINDOW_PAGES) as usize
            - (start / PAGE) as usize;
        let end = win_end_page.min(npages);
        let resident: Vec<u64> = (w..end)
            .filter(|&i| {
                let e = PagemapEntry(entries[i]);
                e.present() && !e.file_or_shared()
            })
            .map(|i| start + i as u64 * PAGE)
            .collect();
        let swapped: Vec<u64> = (w..end)
            .filter(|&i| PagemapEntry(entries[i]).swapped())
            .map(|i| start + i as u64 * PAGE)
            .collect();
        for (pages, swapped) in [(resident, false), (swapped, true)] {
            if !pages.is_empty() {
                jobs.push(DumpJob {
                    pid,
                    slot,
                    pages,
                    readable,
                    skip_zero,
                    swapped,
                });
            }
        }
        w = end;
    }
    jobs
}

/// Compact `buf` (pages at `addrs`) into kept pages, write one chunk, return its runs.
fn store_pages(
    writer: &ImageWriter,
    addrs: &[u64],
    buf: &mut [u8],
    skip_zero: bool,
) -> Result<Vec<PageRun>, stasis_image::WriteError> {
    let mut kept = 0usize;
    let mut runs: Vec<(u64, u32, u64)> = Vec::new();
    for (i, &addr) in addrs.iter().enumerate() {
        let src = i * PAGE as usize;
        if skip_zero && buf[src..src + PAGE as usize] == ZERO_PAGE {
            continue;
        }
        if kept != i {
            buf.copy_within(src..src + PAGE as usize, kept * PAGE as usize);
        }
        match runs.last_mut() {
            Some((a, n, _)) if *a + *n as u64 * PAGE == addr => *n += 1,
            _ => runs.push((addr, 1, kept as u64 * PAGE)),
        }
        kept += 1;
    }
    if kept == 0 {
        return Ok(Vec::new());
    }
    let id = writer.put_chunk(&buf[..kept * PAGE as usize])?;
    Ok(runs
        .into_iter()
        .map(|(addr, count, off)| PageRun {
            addr,
            count,
            chunk: id.to_vec(),
            chunk_offset: off,
        })
        .collect())
}

fn page_ranges(pages: &[u64]) -> Vec<RemoteRange> {
    let mut out: Vec<RemoteRange> = Vec::new();
    for &a in pages {
        match out.last_mut() {
            Some(r) if r.addr + r.len as u64 == a => r.len += PAGE as usize,
            _ => out.push(RemoteRange {
                addr: a,
                len: PAGE as usize,
            }),
        }
    }
    out
}

/// Run `f` on every job, spread over `workers` threads, each with a reusable buffer of its
/// own; stops at the first error. Returns the results in job order.
fn parallel_jobs<T: Send>(
    jobs: &[DumpJob],
    workers: usize,
    f: impl Fn(usize, &DumpJob, &mut Vec<u8>) -> Result<T, Failure> + Sync,
) -> Result<Vec<T>, Failure> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let first_err: Mutex<Option<Failure>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| {
                let mut buf = Vec::with_capacity((WINDOW_PAGES * PAGE) as usize);
                loop {
                    if first_err.lock().expect("lock").is_some() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { return };
                    match f(i, job, &mut buf) {
                        Ok(r) => results.lock().expect("lock")[i] = Some(r),
                        Err(e) => {
                            first_err.lock().expect("lock").get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().expect("lock") {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .expect("lock")
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect())
}

/// Read one job's pages into `buf` (resized to fit).
fn read_job(job: &DumpJob, buf: &mut Vec<u8>) -> Result<(), Failure> {
    let len = job.pages.len() * PAGE as usize;
    buf.resize(len, 0);
    let ranges = page_ranges(&job.pages);
    if job.readable {
        let n = mem::read_ranges(job.pid, &ranges, &mut buf[..len])
            .ctx(job.pid, || format!("reading memory at {:#x}", job.pages[0]))?;
        if n != len {
            return Err(Failure::msg(
                job.pid,
                format!(
                    "short memory read near {:#x}: {n} of {len} bytes",
                    job.pages[0]
                ),
            ));
        }
    } else {
        // Not readable through process_vm_readv (PROT_NONE holding data): /proc/PID/mem.
        let pm = stasis_sys::mem::ProcMem::open(job.pid)
            .ctx(job.pid, || "opening /proc/PID/mem".into())?;
        let mut off = 0;
        for r in &ranges {
            pm.read_exact(r.addr, &mut buf[off..off + r.len])
                .ctx(job.pid, || {
                    format!("reading protected memory at {:#x}", r.addr)
                })?;
            off += r.len;
        }
    }
    Ok(())
}

/// Bytes the jobs read.
pub fn jobs_bytes(jobs: &[DumpJob]) -> u64 {
    jobs.iter().map(|j| j.pages.len() as u64 * PAGE).sum()
}

/// Read and store every job's pages (the tree must stay frozen throughout). Returns the page
/// runs of each job, in job order, and the bytes read.
pub fn run_dump_jobs(
    jobs: &[DumpJob],
    writer: &ImageWriter,
    workers: usize,
) -> Result<(Vec<Vec<PageRun>>, u64), Failure> {
    let runs = parallel_jobs(jobs, workers, |_, job, buf| {
        read_job(job, buf)?;
        store_pages(writer, &job.pages, buf, job.skip_zero)
            .ctx(job.pid, || "writing page chunk".into())
    })?;
    Ok((runs, jobs_bytes(jobs)))
}

/// Read every job's pages into memory of our own (while the tree is frozen), to be stored by
/// [`store_read_jobs`] once it runs again: the freeze then lasts a memory copy, not a write.
pub fn read_jobs(jobs: &[DumpJob], workers: usize) -> Result<Vec<Vec<u8>>, Failure> {
    parallel_jobs(jobs, workers, |_, job, _| {
        let mut own = Vec::new();
        read_job(job, &mut own)?;
        Ok(own)
    })
}

/// Store pages read by [`read_jobs`]; returns the page runs of each job, in job order.
pub fn store_read_jobs(
    jobs: &[DumpJob],
    bufs: Vec<Vec<u8>>,
    writer: &ImageWriter,
    workers: usize,
) -> Result<Vec<Vec<PageRun>>, Failure> {
    let bufs: Vec<Mutex<Vec<u8>>> = bufs.into_iter().map(Mutex::new).collect();
    parallel_jobs(jobs, workers, |i, job, _| {
        let mut b = std::mem::take(&mut *bufs[i].lock().expect("lock"));
        store_pages(writer, &job.pages, &mut b, job.skip_zero)
            .ctx(job.pid, || "writing page chunk".into())
    })
}

/// Dump the content of every shared-memory object (once each).
pub fn dump_shmem(shmem: &mut ShmemTable, writer: &ImageWriter) -> Result<u64, Failure> {
    let mut total = 0;
    for (obj, src) in shmem.objects.iter_mut().zip(&shmem.sources) {
        let f = File::open(src).ctx(0, || format!("opening shared memory object {src}"))?;
        let size = f.metadata().map(|m| m.size()).unwrap_or(obj.size);
        obj.size = obj.size.max(size);
        if obj.kind == ShmemKind::Memfd as i32 {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            obj.seals = stasis_sys::sys::fcntl(fd, libc::F_GET_SEALS, 0).unwrap_or(0) as u32;
            let md = f
                .metadata()
                .ctx(0, || format!("memfd {}: fstat", obj.name))?;
            (obj.mode, obj.uid, obj.gid) = (md.mode() & 0o7777, md.uid(), md.gid());
            obj.size = md.size();
            obj.memfd_attrs = true;
        }
        if let Some(ps) = crate::hugetlb::page_size_of(src) {
            obj.page_size = ps;
        }
        total += dump_file_content(&f, size, writer, &mut obj.pages)
            .ctx(0, || format!("reading shared memory object {src}"))?;
    }
    Ok(total)
}

/// Store the data ranges of a file (skipping holes and zero pages) as page runs whose `addr` is
/// the byte offset in the file.
pub fn dump_file_content(
    f: &File,
    size: u64,
    writer: &ImageWriter,
    out: &mut Vec<PageRun>,
) -> std::io::Result<u64> {
    dump_file_extents(f, size, writer, out, true)
}

/// As [`dump_file_content`]; with `skip_zero` false, zero pages inside data extents are stored
/// too, so that the file made again has exactly the same holes (deleted files).
pub fn dump_file_extents(
    f: &File,
    size: u64,
    writer: &ImageWriter,
    out: &mut Vec<PageRun>,
    skip_zero: bool,
) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut off = 0u64;
    let mut total = 0;
    let mut buf = Vec::new();
    while off < size {
        let data = match stasis_sys::sys::lseek(fd, off as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) => return Err(e),
        };
        let hole = stasis_sys::sys::lseek(fd, data as i64, libc::SEEK_HOLE)
            .map(|h| h as u64)
            .unwrap_or(size);
        let mut pos = data & !(PAGE - 1);
        let end = hole.min(size).div_ceil(PAGE) * PAGE;
        while pos < end {
            let win_end = ((pos / (WINDOW_PAGES * PAGE)) + 1) * WINDOW_PAGES * PAGE;
            let n = (win_end.min(end) - pos) as usize;
            buf.resize(n, 0);
            let mut got = 0;
            while got < n {
                let r = f.read_at(&mut buf[got..], pos + got as u64)?;
                if r == 0 {
                    break;
                }
                got += r;
            }
            buf[got..].fill(0);
            total += n as u64;
            let addrs: Vec<u64> = (0..n as u64 / PAGE).map(|i| pos + i * PAGE).collect();
            out.extend(
                store_pages(writer, &addrs, &mut buf, skip_zero).map_err(std::io::Error::other)?,
            );
            pos += n as u64;
        }
        off = end.max(hole);
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Restore side.

/// Read the vdso block (vvar, vvar_vclock, vdso) of a process: (kind, start, end).
pub fn special_block(maps: &[proc::MapEntry]) -> Vec<(VmaKind, u64, u64)> {
    maps.iter()
        .filter_map(|m| {
            let k = match m.path.as_str() {
                "[vdso]" => VmaKind::Vdso,
                "[vvar]" => VmaKind::Vvar,
                "[vvar_vclock]" => VmaKind::VvarVclock,
                _ => return None,
            };
            Some((k, m.start, m.end))
        })
        .collect()
}

/// blake3 of the `[vdso]` text of a process.
pub fn vdso_hash(pid: i32) -> Result<Vec<u8>, Failure> {
    let maps = proc::read_maps(pid).ctx(pid, || "reading maps".into())?;
    let Some(v) = maps.iter().find(|m| m.path == "[vdso]") else {
        return Ok(Vec::new());
    };
    let mut buf = vec![0u8; (v.end - v.start) as usize];
    mem::read_exact(pid, v.start, &mut buf).ctx(pid, || "reading the vdso".into())?;
    Ok(blake3::hash(&buf).as_bytes().to_vec())
}

/// Move the blank process's vdso block to the saved addresses.
pub fn restore_vdso(r: &mut Remote, saved: &[rec::Vma], free_tmp: u64) -> Result<(), Failure> {
    let pid = r.pid;
    let maps = proc::read_maps(pid).ctx(pid, || "reading maps".into())?;
    let cur = special_block(&maps);
    let want: Vec<(VmaKind, u64, u64)> = saved
        .iter()
        .filter_map(|v| {
            let k = VmaKind::try_from(v.kind).ok()?;
            matches!(k, VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock)
                .then_some((k, v.start, v.end))
        })
        .collect();
    let mut moves = Vec::new();
    for &(k, s, e) in &cur {
        match want.iter().find(|w| w.0 == k) {
            Some(&(_, ws, we)) => {
                if we - ws != e - s {
                    return Err(Failure::msg(
                        pid,
                        format!(
                            "{k:?} is {} bytes here but {} in the image (different kernel build)",
                            e - s,
                            we - ws
                        ),
                    ));
                }
                if ws != s {
                    moves.push((s, e - s, ws));
                }
            }
            None => {
                r.call(
                    "munmap of a vdso part the image does not have",
                    libc::SYS_munmap,
                    &[s, e - s],
                )?;
            }
        }
    }
    if moves.is_empty() {
        return Ok(());
    }
    // Two steps through a free area, so source and target never overlap.
    let lo = moves.iter().map(|m| m.0).min().unwrap_or(0);
    for &(s, len, _) in &moves {
        let tmp = free_tmp + (s - lo);
        r.call(
            "mremap of the vdso block (a kernel sealing system mappings — CONFIG_MSEAL_SYSTEM_MAPPINGS — cannot restore)",
            libc::SYS_mremap,
            &[s, len, len, (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64, tmp],
        )?;
    }
    for &(s, len, target) in &moves {
        let tmp = free_tmp + (s - lo);
        r.call(
            "mremap of the vdso block to its saved address",
            libc::SYS_mremap,
            &[
                tmp,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                target,
            ],
        )?;
    }
    Ok(())
}

/// Work left after mappings exist: fill pages, then fix protections.
pub struct FillJob {
    /// Target process.
    pub pid: i32,
    /// Runs to write.
    pub runs: Vec<PageRun>,
}

/// A protection to apply after pages are filled: (start, length, PROT_*).
pub type Fixup = (u64, u64, u32);

/// Where each mapping's fd comes from in the restorer.
pub trait FdSource {
    /// A restorer-side fd for the file at `path` opened read-only or read-write.
    fn file_fd(&mut self, path: &str, write: bool) -> Result<std::os::fd::RawFd, Failure>;
    /// A restorer-side fd for shmem object `id`.
    fn shmem_fd(&mut self, id: u32) -> Result<std::os::fd::RawFd, Failure>;
    /// A read-only description of shmem object `id`, for its shared mappings that may not be
    /// made writable (no VM_MAYWRITE), when the image says which those are (memfds).
    fn shmem_fd_readonly(&mut self, _id: u32) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The System V segment id of shmem object `id`, if it is one.
    fn sysv_id(&self, id: u32) -> Option<i32>;
    /// Make a restorer fd available in the task; returns the task's fd.
    fn install(&mut self, r: &mut Remote, fd: std::os::fd::RawFd) -> Result<u64, Failure>;
}

/// Create the mappings of a process that `select` (given each one's index) picks; parts
/// inherited from the parent ([`crate::cow`]) are already there and only get their discarded
/// pages dropped. Returns (page fill job, mprotect fixups).
pub fn restore_mappings(
    r: &mut Remote,
    p: &rec::Process,
    src: &mut dyn FdSource,
    select: &dyn Fn(usize) -> bool,
) -> Result<(FillJob, Vec<Fixup>), Failure> {
    // The task as this pid namespace sees it (the image may hold a partition's pids).
    let pid = r.pid;
    let mut fixups = Vec::new();
    let mut runs = Vec::new();
    for (i, v) in p.vmas.iter().enumerate() {
        if !select(i) {
            continue;
        }
        let kind = VmaKind::try_from(v.kind)
            .map_err(|_| Failure::msg(pid, "unknown mapping kind in image"))?;
        // AIO rings are made by `io_setup` before the process's children exist (`aio.rs`).
        if matches!(
            kind,
            VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Aio
        ) {
            continue;
        }
        let len = v.end - v.start;
        let needs_fill = !v.pages.is_empty();
        let mut prot = v.prot as u64;
        let inherited = !v.inherit.is_empty();
        let pieces = crate::cow::fresh_pieces(v);
        if needs_fill
            && (v.prot & (libc::PROT_WRITE | libc::PROT_READ) as u32)
                != (libc::PROT_WRITE | libc::PROT_READ) as u32
        {
            prot |= (libc::PROT_READ | libc::PROT_WRITE) as u64;
            fixups.push((v.start, len, v.prot));
        } else if inherited {
            // Inherited parts come with the parent's protection.
            fixups.push((v.start, len, v.prot));
        }
        let mut flags = (v.flags as i32 | libc::MAP_FIXED_NOREPLACE) as u64;
        let what = || {
            format!(
                "mapping {:#x}-{:#x} ({}){}",
                v.start,
                v.end,
                if v.path.is_empty() {
                    "anonymous"
                } else {
                    &v.path
                },
                crate::hugetlb::describe(v)
            )
        };
        let (fd, remote_fd) = match kind {
            VmaKind::Anon => {
                flags |= libc::MAP_ANONYMOUS as u64;
                (None, u64::MAX)
            }
            VmaKind::AnonHugetlb => {
                let huge = libc::MAP_HUGETLB | stasis_sys::sys::huge_flags(v.page_size);
                flags |= (libc::MAP_ANONYMOUS | huge) as u64;
                (None, u64::MAX)
            }
            VmaKind::FilePrivate if pieces.is_empty() => (None, u64::MAX),
            VmaKind::FilePrivate if v.from_shmem => {
                let fd = src.shmem_fd(v.shmem_id)?;
                let rfd = src.install(r, fd)?;
                (Some(fd), rfd)
            }
            VmaKind::FilePrivate | VmaKind::FileShared => {
                let write = kind == VmaKind::FileShared
                    && (v.prot & libc::PROT_WRITE as u32 != 0
                        || v.vm_flags.iter().any(|f| f == "mw"));
                let fd = src.file_fd(&v.path, write)?;
                if let Some(id) = &v.file_id {
                    check_identity(pid, fd, &v.path, id)?;
                }
                let rfd = src.install(r, fd)?;
                (Some(fd), rfd)
            }
            VmaKind::Shmem if src.sysv_id(v.shmem_id).is_some() => {
                let id = src.sysv_id(v.shmem_id).expect("checked");
                // One shmat covers the whole segment; later pieces of the same attachment (split by
                // mprotect) only get their protection back.
                if v.offset == 0 {
                    let mut flags = 0u64;
                    if v.prot & libc::PROT_WRITE as u32 == 0 {
                        flags |= libc::SHM_RDONLY as u64;
                    }
                    if v.prot & libc::PROT_EXEC as u32 != 0 {
                        flags |= libc::SHM_EXEC as u64;
                    }
                    let got = r.call(
                        &format!("shmat of System V segment {id} at {:#x}", v.start),
                        libc::SYS_shmat,
                        &[id as u64, v.start, flags],
                    )?;
                    if got != v.start {
                        return Err(Failure::msg(
                            pid,
                            format!(
                                "System V segment {id} attached at {got:#x}, not {:#x}",
                                v.start
                            ),
                        ));
                    }
                }
                fixups.push((v.start, len, v.prot));
                continue;
            }
            VmaKind::Shmem => {
                let ro = if v.vm_flags.iter().any(|f| f == "mw") {
                    None
                } else {
                    src.shmem_fd_readonly(v.shmem_id)
                };
                let fd = match ro {
                    Some(fd) => fd,
                    None => src.shmem_fd(v.shmem_id)?,
                };
                let rfd = src.install(r, fd)?;
                (Some(fd), rfd)
            }
            _ => unreachable!(),
        };
        map_pieces(r, v, &pieces, [prot, flags, remote_fd], &what())?;
        if fd.is_some() {
            r.call("close", libc::SYS_close, &[remote_fd])?;
        }
        if inherited {
            crate::cow::finish_inherited(r, v, prot)?;
        }
        apply_advice(r, v, &what())?;
        runs.extend(v.pages.iter().cloned());
    }
    Ok((FillJob { pid, runs }, fixups))
}

/// Map `pieces` of mapping `v` (all of it unless parts are inherited) with `[prot, flags, fd]`,
/// each at its address and file offset.
fn map_pieces(
    r: &mut Remote,
    v: &rec::Vma,
    pieces: &[(u64, u64)],
    [prot, flags, fd]: [u64; 3],
    what: &str,
) -> Result<(), Failure> {
    for &(start, end) in pieces {
        let off = v.offset + (start - v.start);
        let got = r.call(
            what,
            libc::SYS_mmap,
            &[start, end - start, prot, flags, fd, off],
        )?;
        if got != start {
            return Err(Failure::msg(
                r.pid,
                format!("{what}: kernel placed it at {got:#x}"),
            ));
        }
    }
    Ok(())
}

/// The madvise flags of mapping `v` (VmFlags dd, dc, wf, hg, nh).
fn apply_advice(r: &mut Remote, v: &rec::Vma, what: &str) -> Result<(), Failure> {
    for f in &v.vm_flags {
        let advice = match f.as_str() {
            "dd" => libc::MADV_DONTDUMP,
            "dc" => libc::MADV_DONTFORK,
            "wf" => libc::MADV_WIPEONFORK,
            "hg" => libc::MADV_HUGEPAGE,
            "nh" => libc::MADV_NOHUGEPAGE,
            _ => continue,
        };
        r.call(
            &format!("madvise {f} on {what}"),
            libc::SYS_madvise,
            &[v.start, v.end - v.start, advice as u64],
        )?;
    }
    Ok(())
}

/// Refuse a mapped file that changed since the checkpoint: its unmodified pages come from the
/// file, so a different file would give the task different code or data.
pub fn check_identity(
    pid: i32,
    fd: std::os::fd::RawFd,
    path: &str,
    id: &rec::FileIdentity,
) -> Result<(), Failure> {
    let md =
        std::fs::metadata(format!("/proc/self/fd/{fd}")).ctx(pid, || format!("stat of {path}"))?;
    let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
    if md.size() != id.size || mtime != id.mtime_ns {
        return Err(Failure::msg(
            pid,
            format!("mapped file {path} changed since the checkpoint (size {} → {}, mtime changed: {}); restore needs the same file", id.size, md.size(), mtime != id.mtime_ns),
        ));
    }
    Ok(())
}

/// Write pages into processes with `process_vm_writev` from `workers` threads.
pub fn fill_pages(reader: &ImageReader, jobs: &[FillJob], workers: usize) -> Result<u64, Failure> {
    // Group runs by chunk so each chunk is read and verified once per process (the runs of an
    // incremental image alternate between its own chunks and its parents').
    let mut by_chunk: Vec<(i32, Vec<&PageRun>)> = Vec::new();
    for j in jobs {
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        for run in &j.runs {
            let i = *index.entry(run.chunk.as_slice()).or_insert_with(|| {
                by_chunk.push((j.pid, Vec::new()));
                by_chunk.len() - 1
            });
            by_chunk[i].1.push(run);
        }
    }
    let next = AtomicUsize::new(0);
    let bytes = AtomicUsize::new(0);
    let first_err: Mutex<Option<Failure>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    if first_err.lock().expect("lock").is_some() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((pid, runs)) = by_chunk.get(i) else {
                        return;
                    };
                    let res = (|| -> Result<(), Failure> {
                        let id: ChunkId = runs[0]
                            .chunk
                            .as_slice()
                            .try_into()
                            .map_err(|_| Failure::msg(*pid, "bad chunk id in image"))?;
                        reader
                            .read_chunk_into_verified(&id, &mut buf)
                            .ctx(*pid, || {
                                format!("reading chunk {}", stasis_image::chunk_hex(&id))
                            })?;
                        let mut ranges = Vec::with_capacity(runs.len());
                        let mut local: Vec<&[u8]> = Vec::new();
                        for run in runs {
                            let off = run.chunk_offset as usize;
                            let len = run.count as usize * PAGE as usize;
                            let data = buf.get(off..off + len).ok_or_else(|| {
                                Failure::msg(
                                    *pid,
                                    format!(
                                        "chunk {} is shorter than the image says",
                                        stasis_image::chunk_hex(&id)
                                    ),
                                )
                            })?;
                            ranges.push(RemoteRange {
                                addr: run.addr,
                                len,
                            });
                            local.push(data);
                        }
                        // Runs of one chunk are contiguous in it, in order.
                        let start = runs[0].chunk_offset as usize;
                        let total: usize = ranges.iter().map(|r| r.len).sum();
                        let contiguous = runs.windows(2).all(|w| {
                            w[0].chunk_offset as usize + w[0].count as usize * PAGE as usize
                                == w[1].chunk_offset as usize
                        });
                        if contiguous {
                            let n = mem::write_ranges(*pid, &ranges, &buf[start..start + total])
                                .ctx(*pid, || format!("writing pages at {:#x}", runs[0].addr))?;
                            if n != total {
                                return Err(Failure::msg(
                                    *pid,
                                    format!("short page write at {:#x}", runs[0].addr),
                                ));
                            }
                        } else {
                            for (r, d) in ranges.iter().zip(local) {
                                mem::write_all(*pid, r.addr, d)
                                    .ctx(*pid, || format!("writing pages at {:#x}", r.addr))?;
                            }
                        }
                        bytes.fetch_add(total, Ordering::Relaxed);
                        Ok(())
                    })();
                    if let Err(e) = res {
                        first_err.lock().expect("lock").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().expect("lock") {
        return Err(e);
    }
    Ok(bytes.load(Ordering::Relaxed) as u64)
}

/// Walk stored page runs whose `addr` is a byte offset in an object of `size` bytes: for each,
/// `put(offset, bytes)` with the run's bytes clipped to the object's end.
pub fn for_each_object_run(
    reader: &ImageReader,
    runs: &[PageRun],
    size: u64,
    mut put: impl FnMut(u64, &[u8]) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut buf = Vec::new();
    for run in runs {
        let id: ChunkId = run
            .chunk
            .as_slice()
            .try_into()
            .map_err(|_| Failure::msg(0, "bad chunk id in image"))?;
        reader.read_chunk_into_verified(&id, &mut buf).ctx(0, || {
            format!("reading chunk {}", stasis_image::chunk_hex(&id))
        })?;
        let off = run.chunk_offset as usize;
        let len = run.count as usize * PAGE as usize;
        let data = buf
            .get(off..off + len)
            .ok_or_else(|| Failure::msg(0, "chunk shorter than the image says"))?;
        let end = (run.addr + len as u64).min(size);
        if end > run.addr {
            put(run.addr, &data[..(end - run.addr) as usize])?;
        }
    }
    Ok(())
}

/// A deleted file mapped privately ([`rec::ShmemObject::private_file`]): created again at its
/// path (or under a hidden name beside it if the path exists again) with its mode, owner and
/// content, opened, and unlinked, so that the tasks' mappings show "PATH (deleted)".
pub fn recreate_private_file(
    s: &rec::ShmemObject,
    reader: &ImageReader,
) -> Result<std::os::fd::OwnedFd, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::path::Path::new(&s.name);
    let name = if path.exists() {
        let dir = path.parent().unwrap_or(std::path::Path::new("/"));
        dir.join(format!(
            ".stasis-deleted-{}-{}",
            stasis_sys::sys::getpid(),
            s.id
        ))
    } else {
        path.to_path_buf()
    };
    let what = || format!("recreating deleted mapped file {}", s.name);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&name)
        .ctx(0, what)?;
    let res = (|| {
        fill_file(reader, &f, &s.pages, s.size)?;
        std::os::unix::fs::fchown(&f, Some(s.uid), Some(s.gid)).ctx(0, what)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(s.mode))
            .ctx(0, what)
    })();
    let _ = std::fs::remove_file(&name);
    res?;
    Ok(f.into())
}

/// Write the content of a shmem object (or deleted file) into a restorer-side fd.
pub fn fill_file(
    reader: &ImageReader,
    fd: &File,
    runs: &[PageRun],
    size: u64,
) -> Result<(), Failure> {
    fd.set_len(size)
        .ctx(0, || "sizing shared memory object".into())?;
    for_each_object_run(reader, runs, size, |off, data| {
        fd.write_all_at(data, off)
            .ctx(0, || "writing shared memory object".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PRESENT: u64 = 1 << 63;
    const SWAP: u64 = 1 << 62;
    const FILE: u64 = 1 << 61;

    #[test]
    fn windows_split_resident_and_swapped_pages_at_aligned_boundaries() {
        // A mapping starting 2 pages before a window boundary, 4 pages long.
        let start = (WINDOW_PAGES - 2) * PAGE;
        let entries = [PRESENT, SWAP, PRESENT | FILE, PRESENT];
        let jobs = plan_windows(7, (1, 2), start, &entries, true, true);
        let got: Vec<(Vec<u64>, bool)> =
            jobs.iter().map(|j| (j.pages.clone(), j.swapped)).collect();
        assert_eq!(
            got,
            vec![
                (vec![start], false),
                (vec![start + PAGE], true),
                // A file (or shared) page is not the process's own: not read.
                (vec![start + 3 * PAGE], false),
            ]
        );
        assert!(jobs
            .iter()
            .all(|j| j.pid == 7 && j.slot == (1, 2) && j.readable && j.skip_zero));
        assert!(plan_windows(7, (0, 0), 0, &[0, 0, 0], true, false).is_empty());
    }

    proptest! {
        /// Every own resident page and every swapped page is read exactly once, in a job of
        /// its kind, each job within one aligned window and in address order.
        #[test]
        fn windows_cover_exactly_the_pages_to_read(
            first_page in 0u64..4096,
            bits in proptest::collection::vec(0u8..8, 0..3000),
        ) {
            let start = first_page * PAGE;
            let entries: Vec<u64> = bits
                .iter()
                .map(|b| {
                    (if b & 1 != 0 { PRESENT } else { 0 })
                        | (if b & 2 != 0 { SWAP } else { 0 })
                        | (if b & 4 != 0 { FILE } else { 0 })
                })
                .collect();
            let jobs = plan_windows(1, (0, 0), start, &entries, true, false);
            let mut resident: Vec<u64> = Vec::new();
            let mut swapped: Vec<u64> = Vec::new();
            for j in &jobs {
                prop_assert!(!j.pages.is_empty());
                prop_assert!(j.pages.windows(2).all(|w| w[0] < w[1]));
                let win = j.pages[0] / PAGE / WINDOW_PAGES;
                prop_assert!(j.pages.iter().all(|p| p / PAGE / WINDOW_PAGES == win));
                if j.swapped { swapped.extend(&j.pages) } else { resident.extend(&j.pages) }
            }
            let want_resident: Vec<u64> = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| PagemapEntry(**e).present() && !PagemapEntry(**e).file_or_shared())
                .map(|(i, _)| start + i as u64 * PAGE)
                .collect();
            let want_swapped: Vec<u64> = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| PagemapEntry(**e).swapped())
                .map(|(i, _)| start + i as u64 * PAGE)
                .collect();
            resident.sort_unstable();
            swapped.sort_unstable();
            prop_assert_eq!(resident, want_resident);
            prop_assert_eq!(swapped, want_swapped);
        }
    }

    #[test]
    fn ranges_merge_adjacent_pages() {
        let r = page_ranges(&[0x1000, 0x2000, 0x4000]);
        assert_eq!(
            r,
            vec![
                RemoteRange {
                    addr: 0x1000,
                    len: 0x2000
                },
                RemoteRange {
                    addr: 0x4000,
                    len: 0x1000
                }
            ]
        );
    }
}
