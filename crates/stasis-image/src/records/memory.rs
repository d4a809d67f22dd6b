//! Memory: the address space layout, page runs and shared-memory objects.

/// Fields of `PR_SET_MM_MAP`, plus `brk` and the saved auxv.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MmState {
    #[prost(uint64, tag = "1")]
    pub start_code: u64,
    #[prost(uint64, tag = "2")]
    pub end_code: u64,
    #[prost(uint64, tag = "3")]
    pub start_data: u64,
    #[prost(uint64, tag = "4")]
    pub end_data: u64,
    #[prost(uint64, tag = "5")]
    pub start_brk: u64,
    #[prost(uint64, tag = "6")]
    pub brk: u64,
    #[prost(uint64, tag = "7")]
    pub start_stack: u64,
    #[prost(uint64, tag = "8")]
    pub arg_start: u64,
    #[prost(uint64, tag = "9")]
    pub arg_end: u64,
    #[prost(uint64, tag = "10")]
    pub env_start: u64,
    #[prost(uint64, tag = "11")]
    pub env_end: u64,
    /// auxv as u64 pairs (as /proc/PID/auxv).
    #[prost(uint64, repeated, tag = "12")]
    pub auxv: Vec<u64>,
}

/// What backs a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum VmaKind {
    /// Private anonymous (including [heap] and [stack]).
    Anon = 0,
    /// Private mapping of a regular file (pages that differ from the file are stored).
    FilePrivate = 1,
    /// Shared mapping of a regular file that still exists (no pages stored).
    FileShared = 2,
    /// Shared mapping of a shmem object (MAP_SHARED anonymous, memfd, deleted file): see
    /// `shmem_id`.
    Shmem = 3,
    Vdso = 4,
    Vvar = 5,
    VvarVclock = 6,
    /// The ring of a Linux AIO context (`/[aio] (deleted)`): see `Vma.aio`.
    Aio = 7,
    /// Private anonymous hugetlb mapping (`MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB`, shown as
    /// "/anon_hugepage (deleted)"): pages stored like `Anon`, huge page size in `page_size`.
    AnonHugetlb = 8,
}

/// One mapping.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Vma {
    #[prost(uint64, tag = "1")]
    pub start: u64,
    #[prost(uint64, tag = "2")]
    pub end: u64,
    /// PROT_* bits.
    #[prost(uint32, tag = "3")]
    pub prot: u32,
    /// MAP_SHARED / MAP_PRIVATE, MAP_GROWSDOWN, MAP_NORESERVE.
    #[prost(uint32, tag = "4")]
    pub flags: u32,
    #[prost(enumeration = "VmaKind", tag = "5")]
    pub kind: i32,
    /// Byte offset into the file or shmem object.
    #[prost(uint64, tag = "6")]
    pub offset: u64,
    /// File path (file-backed), or the name as /proc/PID/maps shows it.
    #[prost(string, tag = "7")]
    pub path: String,
    /// Index into `Checkpoint.shmem` for `Shmem` mappings.
    #[prost(uint32, tag = "8")]
    pub shmem_id: u32,
    /// madvise-able flags from smaps VmFlags, as two-letter codes (dd, dc, hg, nh, wf, …); on
    /// a memfd's shared mapping also `mw` (VM_MAYWRITE, see `ShmemObject.memfd_attrs`).
    #[prost(string, repeated, tag = "9")]
    pub vm_flags: Vec<String>,
    /// Stored pages (private mappings only).
    #[prost(message, repeated, tag = "10")]
    pub pages: Vec<PageRun>,
    /// File identity at checkpoint (device, inode, size, mtime ns) for file mappings.
    #[prost(message, optional, tag = "11")]
    pub file_id: Option<FileIdentity>,
    /// Parts of this mapping the process inherits from its parent at restore, copy-on-write
    /// through fork as the tree was built: at the checkpoint its pages there were (at least in
    /// part) the same physical pages as the parent's at the same addresses, and the parent had a
    /// compatible mapping there. Pages of these parts absent from `pages` come from the parent.
    /// Empty: the whole mapping is created anew (also every image from before this field).
    #[prost(message, repeated, tag = "12")]
    pub inherit: Vec<AddrRange>,
    /// Parts of `inherit` to drop (`MADV_DONTNEED`) right after inheriting them, before `pages`
    /// are written: there the parent has pages of its own and this process does not share them
    /// (its content is empty — zero, or the file's — or written from `pages`).
    #[prost(message, repeated, tag = "13")]
    pub discard: Vec<AddrRange>,
    /// A private mapping (`FilePrivate`) whose file is shared-memory object `shmem_id` — a
    /// memfd, or a file deleted since it was mapped — restored from the image rather than
    /// opened by path.
    #[prost(bool, tag = "14")]
    pub from_shmem: bool,
    /// `Aio` mappings: the ring of a context of this process, made again with `io_setup` at
    /// restore. Absent on an `Aio` mapping: a copy of its parent's ring that `fork` gave this
    /// process (no context of its own behind it): the parent has the same ring (`file_id`:
    /// device and inode) at the same address, and restore makes it again before forking the
    /// child, which keeps the copy.
    #[prost(message, optional, tag = "15")]
    pub aio: Option<super::AioRing>,
    /// Huge page size in bytes of a hugetlb mapping (smaps `KernelPageSize`, VmFlags `ht`);
    /// 0 for a mapping of base pages (and every image from before this field).
    #[prost(uint64, tag = "18")]
    pub page_size: u64,
}

/// An address range `[start, end)`, page-aligned.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct AddrRange {
    #[prost(uint64, tag = "1")]
    pub start: u64,
    #[prost(uint64, tag = "2")]
    pub end: u64,
}

/// Pages stored in one chunk: `count` pages from `addr` are at `chunk_offset` in the chunk.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PageRun {
    #[prost(uint64, tag = "1")]
    pub addr: u64,
    #[prost(uint32, tag = "2")]
    pub count: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub chunk: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub chunk_offset: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileIdentity {
    #[prost(uint64, tag = "1")]
    pub dev: u64,
    #[prost(uint64, tag = "2")]
    pub ino: u64,
    #[prost(uint64, tag = "3")]
    pub size: u64,
    #[prost(int64, tag = "4")]
    pub mtime_ns: i64,
}

/// A shared-memory object, dumped once however many mappings and processes use it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShmemObject {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(enumeration = "ShmemKind", tag = "2")]
    pub kind: i32,
    /// memfd name (without the "memfd:" prefix) or original path.
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(uint64, tag = "4")]
    pub size: u64,
    /// Data at object offsets (PageRun.addr = byte offset in the object).
    #[prost(message, repeated, tag = "5")]
    pub pages: Vec<PageRun>,
    /// memfd seals (F_GET_SEALS).
    #[prost(uint32, tag = "6")]
    pub seals: u32,
    /// Inode at checkpoint (informational).
    #[prost(uint64, tag = "7")]
    pub ino: u64,
    /// System V segment: its id, key, owner, mode, and whether it was marked for removal.
    #[prost(int32, tag = "8")]
    pub sysv_id: i32,
    #[prost(int32, tag = "9")]
    pub sysv_key: i32,
    /// Permission bits: of a System V segment, of a deleted file, and of a memfd when
    /// `memfd_attrs` is set (memfd_create gives 0777, 0666 with MFD_NOEXEC_SEAL; fchmod
    /// changes it).
    #[prost(uint32, tag = "10")]
    pub mode: u32,
    /// Owner (uid, gid) of the same objects as `mode` (a memfd: of its creator, or fchown).
    #[prost(uint32, tag = "11")]
    pub uid: u32,
    #[prost(uint32, tag = "12")]
    pub gid: u32,
    #[prost(bool, tag = "13")]
    pub destroyed: bool,
    /// A deleted file (`DeletedFile`) that is mapped privately: restored as a regular file
    /// created at its path (`name`, or a hidden name beside it if that exists again), filled,
    /// then unlinked, so that its mappings show the path as before. `mode` holds its mode.
    #[prost(bool, tag = "17")]
    pub private_file: bool,
    /// Huge page size in bytes of an object on hugetlbfs (a `MFD_HUGETLB` memfd, a
    /// `HugetlbAnon` object, a `SHM_HUGETLB` segment); 0 for base pages. A file's `size` is a
    /// multiple of it; a segment's is its `shm_segsz` (the kernel maps whole huge pages).
    #[prost(uint64, tag = "20")]
    pub page_size: u64,
    /// A memfd whose `mode`, `uid` and `gid` are recorded, `size` is its exact size (not
    /// rounded to its mappings), and whose shared mappings carry `mw` in `Vma.vm_flags` when
    /// they may be made writable (VM_MAYWRITE): a mapping without it is made from a read-only
    /// description. Absent (images before it): the memfd is restored owned by the restorer
    /// with mode 0777, every shared mapping from a read-write description.
    #[prost(bool, tag = "23")]
    pub memfd_attrs: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ShmemKind {
    /// MAP_SHARED|MAP_ANONYMOUS ("/dev/zero (deleted)").
    SharedAnon = 0,
    Memfd = 1,
    /// A regular file on tmpfs/shm that was deleted while mapped.
    DeletedFile = 2,
    /// System V shared memory segment (attached with shmat).
    SysvShm = 3,
    /// MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB ("/anon_hugepage (deleted)"), huge page size in
    /// `page_size`.
    HugetlbAnon = 4,
}
