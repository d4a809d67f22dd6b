//! hugetlb memory: private and shared `MAP_HUGETLB` mappings, `MFD_HUGETLB` memfds and
//! `SHM_HUGETLB` segments.
//!
//! All of them live on hugetlbfs. At checkpoint a mapping's huge page size comes from smaps
//! (`KernelPageSize`, VmFlags `ht`) and an object's from its file system (`st_blksize` on
//! hugetlbfs); pages are read as any others (`process_vm_readv` for private mappings, `read` through
//! `/proc/PID/map_files` or the fd for objects), untouched huge pages read back as zero and are
//! not stored. At restore a private mapping is made again with `MAP_HUGETLB` and the same size
//! bits, a shared anonymous object by a shared hugetlb mapping of our own opened through
//! `map_files` (so mappings still show "/anon_hugepage (deleted)"), a memfd with
//! `MFD_HUGETLB`; hugetlbfs refuses `write(2)`, so objects are filled through a shared mapping in
//! the restorer.
//!
//! The kernel reserves huge pages when a hugetlb mapping is made (a private mapping: all of
//! it, unless `MAP_NORESERVE`; a shared object: each page once). Before anything is created,
//! [`check_pool`] adds up what the image will reserve per page size and fails, naming the
//! mappings and how many pages of which size they need, when the pool cannot give them.

use crate::error::{Ctx, Failure};
use stasis_image::records::{self as rec, ShmemKind, VmaKind};
use stasis_image::ImageReader;
use stasis_sys::sys;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// The huge page size of the file at `path` (a `/proc` link to it) if it is on hugetlbfs.
pub fn page_size_of(path: &str) -> Option<u64> {
    if sys::fs_magic(path).ok()? != sys::HUGETLBFS_MAGIC {
        return None;
    }
    std::fs::metadata(path).ok().map(|m| m.blksize())
}

/// Create and fill a hugetlb shared-memory object (a memfd or a shared anonymous object).
pub fn create_object(s: &rec::ShmemObject, reader: &ImageReader) -> Result<OwnedFd, Failure> {
    let kind = ShmemKind::try_from(s.kind).ok();
    let what = || {
        format!(
            "{} ({} bytes of {} kB pages)",
            object_name(s),
            s.size,
            s.page_size >> 10
        )
    };
    let file: File = match kind {
        Some(ShmemKind::Memfd) => {
            let flags = libc::MFD_ALLOW_SEALING
                | libc::MFD_CLOEXEC
                | libc::MFD_HUGETLB
                | sys::huge_flags(s.page_size) as u32;
            let f: File = sys::memfd_create(&s.name, flags)
                .ctx(0, || format!("{}: memfd_create", what()))?
                .into();
            f.set_len(s.size)
                .ctx(0, || format!("{}: ftruncate", what()))?;
            f
        }
        Some(ShmemKind::HugetlbAnon) => sys::hugetlb_anon_object(s.size, s.page_size)
            .ctx(0, || format!("{}: creating it", what()))?,
        _ => {
            return Err(Failure::msg(
                0,
                format!(
                    "{}: not a kind of hugetlb object this version restores",
                    what()
                ),
            ))
        }
    };
    fill(reader, &file, s).map_err(|e| Failure::msg(0, format!("{}: {e}", what())))?;
    if kind == Some(ShmemKind::Memfd) && s.seals != 0 {
        sys::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, s.seals as i64)
            .ctx(0, || format!("{}: adding seals", what()))?;
    }
    Ok(file.into())
}

/// Write the stored pages of `s` into `file` through a shared mapping of ours.
fn fill(reader: &ImageReader, file: &File, s: &rec::ShmemObject) -> Result<(), Failure> {
    if s.pages.is_empty() || s.size == 0 {
        return Ok(());
    }
    let mut map = stasis_sys::mem::SharedMap::new(file.as_raw_fd(), s.size as usize)
        .ctx(0, || "mapping it to fill it".into())?;
    crate::memory::for_each_object_run(reader, &s.pages, s.size, |off, data| {
        map.write_at(off as usize, data)
            .ctx(0, || format!("filling it at offset {off}"))
    })
}

/// For a hugetlb mapping, what its creation needs (appended to its description in errors).
pub fn describe(v: &rec::Vma) -> String {
    if v.page_size == 0 {
        return String::new();
    }
    format!(
        ", hugetlb: {} pages of {} kB (pool: {}/nr_hugepages)",
        (v.end - v.start).div_ceil(v.page_size),
        v.page_size >> 10,
        pool_dir(v.page_size)
    )
}

fn object_name(s: &rec::ShmemObject) -> String {
    match ShmemKind::try_from(s.kind) {
        Ok(ShmemKind::Memfd) => format!("hugetlb memfd {}", s.name),
        Ok(ShmemKind::SysvShm) => format!("System V segment {} (SHM_HUGETLB)", s.sysv_id),
        _ => format!("shared hugetlb object {} (/anon_hugepage)", s.id),
    }
}

/// What one image object or mapping will reserve: (page size, pages, description).
type Need = (u64, u64, String);

/// Huge pages the restore of `img` reserves, per object and mapping.
fn needs(img: &rec::Checkpoint) -> Vec<Need> {
    let mut out = Vec::new();
    for s in img.shmem.iter().filter(|s| s.page_size != 0) {
        if s.kind == ShmemKind::SysvShm as i32 {
            // A segment that outlived the tree (same id, key and size) is used as it is.
            let kept =
                sys::shm_stat(s.sysv_id).is_ok_and(|st| (st.0, st.1) == (s.sysv_key, s.size));
            if kept {
                continue;
            }
        }
        out.push((s.page_size, s.size.div_ceil(s.page_size), object_name(s)));
    }
    for p in &img.processes {
        for v in p.vmas.iter().filter(|v| v.page_size != 0) {
            let private =
                v.kind == VmaKind::AnonHugetlb as i32 || v.kind == VmaKind::FilePrivate as i32;
            if !private || v.flags & libc::MAP_NORESERVE as u32 != 0 {
                continue;
            }
            out.push((
                v.page_size,
                (v.end - v.start).div_ceil(v.page_size),
                format!(
                    "mapping {:#x}-{:#x} ({}) of pid {}",
                    v.start, v.end, v.path, p.pid
                ),
            ));
        }
    }
    out
}

/// Pages of `page_size` the pool can still give: free and not reserved, plus what
/// overcommit allows.
fn available(page_size: u64) -> Result<u64, Failure> {
    let dir = pool_dir(page_size);
    let read = |f: &str| -> Result<u64, Failure> {
        let path = format!("{dir}/{f}");
        let text = std::fs::read_to_string(&path).ctx(0, || {
            format!(
                "reading {path}: this kernel has no pool of {} kB huge pages",
                page_size >> 10
            )
        })?;
        text.trim()
            .parse()
            .map_err(|_| Failure::msg(0, format!("{path}: not a number: {text:?}")))
    };
    let free = read("free_hugepages")?.saturating_sub(read("resv_hugepages")?);
    let over = read("nr_overcommit_hugepages")?.saturating_sub(read("surplus_hugepages")?);
    Ok(free + over)
}

fn pool_dir(page_size: u64) -> String {
    format!("/sys/kernel/mm/hugepages/hugepages-{}kB", page_size >> 10)
}

/// Refuse, before anything is created, a restore the huge page pool cannot hold: the message
/// names the mappings and objects, how many huge pages of which size they need, and how many
/// are available.
pub fn check_pool(img: &rec::Checkpoint) -> Result<(), Failure> {
    let mut by_size: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    for (size, n, what) in needs(img) {
        by_size.entry(size).or_default().push((n, what));
    }
    for (size, items) in by_size {
        let total: u64 = items.iter().map(|i| i.0).sum();
        let avail = available(size)?;
        if total <= avail {
            continue;
        }
        let mut list: Vec<String> = items
            .iter()
            .take(8)
            .map(|(n, w)| format!("{w}: {n}"))
            .collect();
        if items.len() > 8 {
            list.push(format!("and {} more", items.len() - 8));
        }
        let knob = if size == 2 << 20 {
            "/proc/sys/vm/nr_hugepages".to_string()
        } else {
            format!("{}/nr_hugepages", pool_dir(size))
        };
        return Err(Failure::msg(
            0,
            format!(
                "not enough huge pages: the restore needs {total} huge pages of {} kB ({}) but {avail} are available (free and not reserved, in {}); raise {knob} by {}",
                size >> 10,
                list.join(", "),
                pool_dir(size),
                total - avail
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HP: u64 = 2 << 20;

    fn vma(start: u64, pages: u64, kind: VmaKind, flags: i32) -> rec::Vma {
        rec::Vma {
            start,
            end: start + pages * HP,
            kind: kind as i32,
            flags: flags as u32,
            page_size: HP,
            path: "/anon_hugepage (deleted)".into(),
            ..Default::default()
        }
    }

    #[test]
    fn needs_count_private_mappings_and_objects_once() {
        let img = rec::Checkpoint {
            processes: vec![rec::Process {
                pid: 7,
                vmas: vec![
                    vma(0x4000_0000, 3, VmaKind::AnonHugetlb, libc::MAP_PRIVATE),
                    // MAP_NORESERVE: nothing reserved at mmap.
                    vma(
                        0x8000_0000,
                        5,
                        VmaKind::AnonHugetlb,
                        libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                    ),
                    // A shared mapping: its object counts, not the mapping.
                    vma(0xc000_0000, 2, VmaKind::Shmem, libc::MAP_SHARED),
                    // Base pages: not counted.
                    rec::Vma {
                        start: 0x1000,
                        end: 0x3000,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            shmem: vec![
                rec::ShmemObject {
                    id: 0,
                    kind: ShmemKind::Memfd as i32,
                    name: "m".into(),
                    size: 3 * HP,
                    page_size: HP,
                    ..Default::default()
                },
                rec::ShmemObject {
                    id: 1,
                    kind: ShmemKind::SharedAnon as i32,
                    size: HP,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let got: Vec<(u64, u64)> = needs(&img).iter().map(|n| (n.0, n.1)).collect();
        assert_eq!(got, vec![(HP, 3), (HP, 3)]);
        let names: Vec<String> = needs(&img).into_iter().map(|n| n.2).collect();
        assert_eq!(names[0], "hugetlb memfd m");
        assert_eq!(
            names[1],
            "mapping 0x40000000-0x40600000 (/anon_hugepage (deleted)) of pid 7"
        );
    }

    #[test]
    fn huge_flags_encode_log2_of_the_size() {
        assert_eq!(sys::huge_flags(HP), 21 << 26);
        assert_eq!(sys::huge_flags(1 << 30), 30 << 26);
    }
}
