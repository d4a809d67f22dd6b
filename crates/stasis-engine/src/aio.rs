//! Linux AIO contexts (`io_setup`): the rings the kernel maps into a process.
//!
//! ## Checkpoint
//! A context is a ring mapped shared from the kernel's aio file system (`/[aio] (deleted)`);
//! its id (`aio_context_t`) is the ring's address. The header (nr, head, tail, magic, features)
//! and the completed events between head and tail are read from the ring (the tree is frozen).
//! `fork` copies the mapping into the child, but not the context: the parasite asks each task
//! (`io_getevents(ring, 0, 0)`, which reads nothing) whether a ring is a context of its own;
//! a copy is recorded without ring state and must belong to a context of another process of
//! the tree.
//!
//! ## Restore
//! In the task, right after its creation (before its children are forked): `io_setup` with a
//! request count that gives a ring of the same size (the kernel makes room for
//! `max(n, 4 × possible CPUs) × 2 + 2` events and rounds up to pages), `mremap` of the ring to
//! its saved address (the kernel moves the context id with it), then requests that complete at once (1-byte reads of a memfd) move the
//! kernel's tail: `head` of them reaped, the next `tail - head` left completed, so the kernel
//! counts as many free slots as before. The saved events are then written over those the
//! kernel wrote. This is done before the process's children are forked, so fork gives them
//! their copies of the rings again (the ring file cannot be opened, so there is no other way
//! to share its pages). Requests still in flight at the checkpoint cannot be seen from user
//! space: they are lost.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::memory::FdSource;
use crate::remote::{words, Remote};
use stasis_image::records::{self as rec, VmaKind};
use stasis_sys::mem;
use stasis_sys::proc::MapEntry;
use std::os::fd::AsRawFd;

/// `AIO_RING_MAGIC`.
pub const RING_MAGIC: u32 = 0xa10a_10a1;
/// `sizeof(struct aio_ring)` and `sizeof(struct io_event)`.
const HEADER: u64 = 32;
const EVENT: u64 = 32;
const PAGE: u64 = 4096;
/// `IOCB_CMD_PREAD`.
const CMD_PREAD: u16 = 0;
/// Requests per `io_submit` while moving the tail.
const BATCH: u64 = 64;
// Scratch layout while moving the tail.
const S_CTX: u64 = 0;
const S_PTRS: u64 = 64;
const S_IOCBS: u64 = 1024;
const S_EVENTS: u64 = S_IOCBS + BATCH * 64;
const S_BYTE: u64 = S_EVENTS + BATCH * EVENT;

/// Is this mapping the ring of an AIO context (its own or copied by fork)?
pub fn is_ring(m: &MapEntry) -> bool {
    m.shared && (m.path == "/[aio] (deleted)" || m.path == "/[aio]")
}

/// Events a ring of `pages` pages holds (`aio_setup_ring`).
pub fn ring_nr(pages: u64) -> u64 {
    (pages * PAGE - HEADER) / EVENT
}

/// Pages of the ring `io_setup(n)` makes with `cpus` possible CPUs (`ioctx_alloc`).
pub fn ring_pages(n: u64, cpus: u64) -> u64 {
    let events = n.max(4 * cpus) * 2 + 2;
    (HEADER + EVENT * events).div_ceil(PAGE)
}

/// The smallest `io_setup` request giving a ring of `pages` pages with `cpus` possible CPUs,
/// or `None` when none does (more CPUs make every ring larger).
pub fn request_for(pages: u64, cpus: u64) -> Option<u64> {
    if pages == 0 {
        return None;
    }
    if ring_pages(1, cpus) == pages {
        return Some(1);
    }
    // Smallest n with HEADER + EVENT * (2n + 2) > PAGE * (pages - 1).
    let n = if pages == 1 {
        1
    } else {
        ((pages - 1) * PAGE - HEADER - 2 * EVENT) / (2 * EVENT) + 1
    };
    (ring_pages(n, cpus) == pages).then_some(n)
}

/// Count of the CPUs in a list such as `0-3,5` (`/sys/devices/system/cpu/possible`).
pub fn count_cpus(list: &str) -> Option<u64> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?),
            None => {
                let a = part.parse::<u64>().ok()?;
                (a, a)
            }
        };
        n += b.checked_sub(a)? + 1;
    }
    (n > 0).then_some(n)
}

/// `/sys/devices/system/cpu/possible`, or `STASIS_AIO_POSSIBLE_CPUS` (a CPU list: tests stand
/// for a machine with other CPUs with it).
fn possible_cpus() -> std::io::Result<u64> {
    let s = match std::env::var("STASIS_AIO_POSSIBLE_CPUS") {
        Ok(s) => s,
        Err(_) => std::fs::read_to_string("/sys/devices/system/cpu/possible")?,
    };
    count_cpus(&s).ok_or_else(|| std::io::Error::other(format!("cannot parse {s:?}")))
}

fn le32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

/// Read the header of the ring at `start`: [id, nr, head, tail, magic, compat, incompat, len].
fn read_header(pid: i32, start: u64) -> std::io::Result<[u32; 8]> {
    let mut b = [0u8; HEADER as usize];
    mem::read_exact(pid, start, &mut b)?;
    Ok(std::array::from_fn(|i| le32(&b, i * 4)))
}

/// Byte ranges (offset in the ring, length) of `n` events from slot `head` of a ring of `nr`.
fn event_spans(head: u64, n: u64, nr: u64) -> Vec<(u64, u64)> {
    let first = n.min(nr - head);
    let mut v = vec![(HEADER + EVENT * head, EVENT * first)];
    if n > first {
        v.push((HEADER, EVENT * (n - first)));
    }
    v.retain(|s| s.1 > 0);
    v
}

/// The ring mapping `m` (kind `Aio`): its identity, header and completed events. Whether it
/// is a context of this process is asked later ([`probe`]).
pub fn dump_ring(pid: i32, m: &MapEntry, vma: &mut rec::Vma) -> Result<(), CheckpointError> {
    let what = format!("AIO ring {:#x}-{:#x}", m.start, m.end);
    let unsupported = |why: String| CheckpointError::Unsupported {
        pid,
        what: format!("{what}: {why}; not supported"),
    };
    vma.file_id = Some(rec::FileIdentity {
        dev: libc::makedev(m.dev_major, m.dev_minor),
        ino: m.inode,
        ..Default::default()
    });
    if m.offset != 0 {
        return Err(unsupported("only part of the ring is mapped there".into()));
    }
    let h = read_header(pid, m.start).ctx(pid, || format!("{what}: reading its header"))?;
    let pages = (m.end - m.start) / PAGE;
    let [id, nr, head, tail, magic, compat, incompat, hlen] = h;
    if magic != RING_MAGIC || hlen as u64 != HEADER || incompat != 0 {
        return Err(unsupported(format!(
            "header magic {magic:#x}, length {hlen}, incompatible features {incompat}"
        )));
    }
    if nr as u64 != ring_nr(pages) || head >= nr || tail >= nr {
        return Err(unsupported(format!(
            "nr {nr}, head {head}, tail {tail} do not fit a ring of {pages} pages"
        )));
    }
    let n = (tail as u64 + nr as u64 - head as u64) % nr as u64;
    let mut events = Vec::with_capacity((n * EVENT) as usize);
    for (off, len) in event_spans(head as u64, n, nr as u64) {
        let mut b = vec![0u8; len as usize];
        mem::read_exact(pid, m.start + off, &mut b)
            .ctx(pid, || format!("{what}: reading its events"))?;
        events.extend_from_slice(&b);
    }
    vma.aio = Some(rec::AioRing {
        id,
        nr,
        head,
        tail,
        magic,
        compat_features: compat,
        incompat_features: incompat,
        header_length: hlen,
        events,
    });
    Ok(())
}

/// In the task (parasite): is each ring a context of this process? `io_getevents(ring, 0, 0)`
/// finds the context and reads nothing; `EINVAL` means a copy that fork gave it.
pub fn probe(r: &mut Remote, p: &mut rec::Process) -> Result<(), Failure> {
    for v in p.vmas.iter_mut().filter(|v| v.kind == VmaKind::Aio as i32) {
        let what = format!("AIO ring {:#x}-{:#x}: io_getevents(0)", v.start, v.end);
        match r.call_raw(&what, libc::SYS_io_getevents, &[v.start, 0, 0, 0, 0])? {
            0 => {}
            e if e == -(libc::EINVAL as i64) => v.aio = None,
            e => {
                return Err(Failure::new(
                    r.pid,
                    what,
                    std::io::Error::from_raw_os_error(-e as i32),
                ))
            }
        }
    }
    Ok(())
}

/// Every copy of a ring (made by fork) must be, at the same address, the ring of a context
/// of its parent or a copy its parent has too: restore makes it again by forking the child
/// from a parent that has it (a copy cannot be moved: the kernel refuses to `mremap` a ring
/// that is not a context of the process).
pub fn check_copies(procs: &[rec::Process]) -> Result<(), CheckpointError> {
    for p in procs {
        let parent = procs.iter().find(|q| q.pid == p.ppid && q.pid != p.pid);
        for v in p.vmas.iter().filter(|v| is_copy(v)) {
            let same = |o: &&rec::Vma| {
                o.kind == v.kind && o.start == v.start && o.end == v.end && o.file_id == v.file_id
            };
            if parent.is_none_or(|q| !q.vmas.iter().any(|o| same(&o))) {
                return Err(CheckpointError::Unsupported {
                    pid: p.pid,
                    what: format!(
                        "AIO ring {:#x}-{:#x} is a copy (made by fork) of the ring of a context \
                         its parent in the tree no longer has at that address; not supported",
                        v.start, v.end
                    ),
                });
            }
        }
    }
    Ok(())
}

fn is_copy(v: &rec::Vma) -> bool {
    v.kind == VmaKind::Aio as i32 && v.aio.is_none()
}

/// The copies of rings process `p` has: fork gives them at restore as it did before.
pub fn copies(p: &rec::Process) -> impl Iterator<Item = (u64, u64)> + '_ {
    p.vmas
        .iter()
        .filter(|v| is_copy(v))
        .map(|v| (v.start, v.end))
}

/// Restore the contexts of process `p` (just created, before its children are forked), in the
/// order of their saved table index.
pub fn restore_rings(
    r: &mut Remote,
    p: &rec::Process,
    src: &mut dyn FdSource,
) -> Result<(), Failure> {
    let mut rings: Vec<&rec::Vma> = p.vmas.iter().filter(|v| v.aio.is_some()).collect();
    if rings.is_empty() {
        return Ok(());
    }
    rings.sort_by_key(|v| v.aio.as_ref().map(|a| a.id));
    let cpus = possible_cpus().ctx(r.pid, || "reading the possible CPUs".into())?;
    // Every ring's place is held by a placeholder until its ring replaces it, so no new ring
    // lands where another must go.
    for v in p.vmas.iter().filter(|v| v.aio.is_some()) {
        let flags = libc::MAP_PRIVATE
            | libc::MAP_ANONYMOUS
            | libc::MAP_NORESERVE
            | libc::MAP_FIXED_NOREPLACE;
        let got = r.call(
            &format!("placeholder for AIO ring {:#x}-{:#x}", v.start, v.end),
            libc::SYS_mmap,
            &[v.start, v.end - v.start, 0, flags as u64, u64::MAX, 0],
        )?;
        if got != v.start {
            return Err(Failure::msg(
                r.pid,
                format!("placeholder placed at {got:#x}"),
            ));
        }
    }
    // The thread stays on one CPU while it moves the tails: the kernel hands out ring slots
    // through per-CPU batches, and slots left in another CPU's batch would be missing.
    let tid = r.tid();
    let here = stasis_sys::sys::get_affinity(tid)
        .ctx(tid, || "sched_getaffinity".into())?
        .into_iter()
        .take(1)
        .collect::<Vec<_>>();
    let before = stasis_sys::sys::set_affinity(tid, &here).ctx(tid, || {
        format!("sched_setaffinity {here:?} for the AIO rings")
    })?;
    let mut filler: Option<Filler> = None;
    let done = rings
        .into_iter()
        .try_for_each(|v| restore_ring(r, v, cpus, src, &mut filler));
    stasis_sys::sys::set_affinity(tid, &before).ctx(tid, || "sched_setaffinity back".into())?;
    done?;
    if let Some(f) = filler {
        r.call(
            "close of the AIO filler memfd",
            libc::SYS_close,
            &[f.task_fd],
        )?;
    }
    Ok(())
}

/// A memfd holding one byte, open in the task: what the requests that move the tail read.
struct Filler {
    _own: std::os::fd::OwnedFd,
    task_fd: u64,
}

fn restore_ring(
    r: &mut Remote,
    v: &rec::Vma,
    cpus: u64,
    src: &mut dyn FdSource,
    filler: &mut Option<Filler>,
) -> Result<(), Failure> {
    let a = v.aio.as_ref().expect("own ring");
    let pid = r.pid;
    let what = format!("AIO ring {:#x}-{:#x}", v.start, v.end);
    let len = v.end - v.start;
    let pages = len / PAGE;
    let (nr, head, tail) = (a.nr as u64, a.head as u64, a.tail as u64);
    let n_events = (tail + nr - head) % nr.max(1);
    if nr != ring_nr(pages) || head >= nr || tail >= nr || a.events.len() as u64 != n_events * EVENT
    {
        return Err(Failure::msg(
            pid,
            format!("{what}: inconsistent ring record"),
        ));
    }
    let Some(req) = request_for(pages, cpus) else {
        return Err(Failure::msg(
            pid,
            format!(
                "{what}: a ring of {pages} pages ({nr} events) cannot be made on this machine: \
                 with {cpus} possible CPUs io_setup gives at least {} pages",
                ring_pages(1, cpus)
            ),
        ));
    };
    r.put(S_CTX, &0u64.to_le_bytes())?;
    r.call(
        &format!("{what}: io_setup({req}) (see fs.aio-max-nr)"),
        libc::SYS_io_setup,
        &[req, r.scratch(S_CTX)],
    )?;
    let ctx = r.get_u64(S_CTX)?;
    let got = read_header(pid, ctx).ctx(pid, || format!("{what}: reading the new ring"))?;
    if got[1] as u64 != nr {
        r.call_raw("io_destroy", libc::SYS_io_destroy, &[ctx])?;
        return Err(Failure::msg(
            pid,
            format!(
                "{what}: io_setup({req}) made a ring of {} events, not {nr}",
                got[1]
            ),
        ));
    }
    // Over its placeholder: the kernel moves the context id along.
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    let moved = r.call(
        &format!("{what}: mremap of the new ring from {ctx:#x}"),
        libc::SYS_mremap,
        &[ctx, len, len, flags, v.start],
    )?;
    if moved != v.start {
        return Err(Failure::msg(pid, format!("{what}: moved to {moved:#x}")));
    }
    if n_events > 0 || head > 0 {
        let f = match filler {
            Some(f) => f,
            None => filler.insert(make_filler(r, src)?),
        };
        let fd = f.task_fd;
        refill(r, v.start, a, fd, &what)?;
    }
    if v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32 {
        r.call(
            &format!("{what}: mprotect"),
            libc::SYS_mprotect,
            &[v.start, len, v.prot as u64],
        )?;
    }
    Ok(())
}

/// Move the kernel's tail of the new ring at `ctx` to the saved one — `head` requests
/// completed and reaped, the next `tail - head` completed and left — then write the saved
/// events over those the kernel wrote.
fn refill(r: &mut Remote, ctx: u64, a: &rec::AioRing, fd: u64, what: &str) -> Result<(), Failure> {
    let pid = r.pid;
    let (nr, head, tail) = (a.nr as u64, a.head as u64, a.tail as u64);
    let n_events = (tail + nr - head) % nr;
    write_iocbs(r, fd)?;
    complete(r, ctx, head, true, what)?;
    complete(r, ctx, n_events, false, what)?;
    let h = read_header(pid, ctx).ctx(pid, || format!("{what}: reading its header"))?;
    if (h[2], h[3]) != (a.head, a.tail) {
        return Err(Failure::msg(
            pid,
            format!(
                "{what}: head {} tail {} after the requests, not {head} {tail}",
                h[2], h[3]
            ),
        ));
    }
    let mut at = 0usize;
    for (off, n) in event_spans(head, n_events, nr) {
        let bytes = &a.events[at..at + n as usize];
        mem::write_all(pid, ctx + off, bytes).ctx(pid, || format!("{what}: writing its events"))?;
        at += n as usize;
    }
    Ok(())
}

fn make_filler(r: &mut Remote, src: &mut dyn FdSource) -> Result<Filler, Failure> {
    let fd = stasis_sys::sys::memfd_create("stasis-aio", libc::MFD_CLOEXEC)
        .ctx(0, || "memfd for the AIO requests".into())?;
    let file = std::fs::File::from(fd);
    std::os::unix::fs::FileExt::write_all_at(&file, b"a", 0)
        .ctx(0, || "memfd for the AIO requests".into())?;
    let own = std::os::fd::OwnedFd::from(file);
    let task_fd = src.install(r, own.as_raw_fd())?;
    Ok(Filler { _own: own, task_fd })
}

/// [`BATCH`] identical iocbs (1-byte `IOCB_CMD_PREAD` of `fd` at 0) and their pointers in the
/// scratch area.
fn write_iocbs(r: &mut Remote, fd: u64) -> Result<(), Failure> {
    let buf = r.scratch(S_BYTE);
    let mut one = [0u8; 64];
    one[16..18].copy_from_slice(&CMD_PREAD.to_le_bytes());
    one[20..24].copy_from_slice(&(fd as u32).to_le_bytes());
    one[24..32].copy_from_slice(&buf.to_le_bytes());
    one[32..40].copy_from_slice(&1u64.to_le_bytes());
    let iocbs: Vec<u8> = (0..BATCH).flat_map(|_| one).collect();
    r.put(S_IOCBS, &iocbs)?;
    let ptrs: Vec<u64> = (0..BATCH).map(|i| r.scratch(S_IOCBS + 64 * i)).collect();
    r.put(S_PTRS, &words(&ptrs))?;
    Ok(())
}

/// Submit `count` requests on context `ctx` that complete at once; with `reap`, reap each
/// batch (the ring's head follows its tail), otherwise leave them completed.
fn complete(r: &mut Remote, ctx: u64, count: u64, reap: bool, what: &str) -> Result<(), Failure> {
    let mut left = count;
    while left > 0 {
        let n = left.min(BATCH);
        let done = r.call(
            &format!("{what}: io_submit of {n} requests to move the tail"),
            libc::SYS_io_submit,
            &[ctx, n, r.scratch(S_PTRS)],
        )?;
        if done == 0 {
            return Err(Failure::msg(
                r.pid,
                format!("{what}: io_submit took nothing"),
            ));
        }
        if reap {
            r.call(
                &format!("{what}: io_getevents of {done} requests"),
                libc::SYS_io_getevents,
                &[ctx, done, done, r.scratch(S_EVENTS), 0],
            )?;
        }
        left -= done;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_give_rings_of_the_asked_size() {
        for cpus in [1, 2, 4, 8, 64] {
            for pages in 1..200u64 {
                match request_for(pages, cpus) {
                    Some(n) => {
                        assert_eq!(ring_pages(n, cpus), pages, "cpus {cpus} pages {pages}");
                        // The smallest such request.
                        assert!(n == 1 || ring_pages(n - 1, cpus) < pages);
                    }
                    None => assert!((1..100_000).all(|n| ring_pages(n, cpus) != pages)),
                }
            }
        }
    }

    #[test]
    fn ring_sizes_match_the_kernel() {
        // io_setup(10) with 2 possible CPUs: one page, 127 events (seen on Linux 6.18).
        assert_eq!(ring_pages(10, 2), 1);
        assert_eq!(ring_nr(1), 127);
        // io_setup(300): 602 events of 32 bytes and the header: 5 pages, 639 events.
        assert_eq!(ring_pages(300, 2), 5);
        assert_eq!(ring_nr(5), 639);
        // 64 possible CPUs: at least 514 events, 5 pages; a one-page ring cannot be made.
        assert_eq!(request_for(1, 64), None);
        assert_eq!(request_for(5, 64), Some(1));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpus("0-1\n"), Some(2));
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("3-1"), None);
    }

    #[test]
    fn spans_wrap_around() {
        assert_eq!(event_spans(0, 0, 127), vec![]);
        assert_eq!(event_spans(0, 20, 127), vec![(32, 640)]);
        assert_eq!(
            event_spans(120, 15, 127),
            vec![(32 + 32 * 120, 32 * 7), (32, 32 * 8)]
        );
    }
}
