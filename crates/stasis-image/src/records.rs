//! Kernel-object records: the protobuf schema of `objects.img`.
//!
//! One [`Checkpoint`] message describes the whole dumped tree: every process with its threads,
//! memory layout and fd table, and the shared objects they refer to (open file descriptions,
//! pipes, shared memory objects). Page data is not here: memory records point to chunks by
//! their blake3 id.
//!
//! Evolution rules (see docs/image-format.md): fields are only ever added, with new tags and
//! defaults that mean "absent"; tags are never reused or retyped.

/// The whole tree.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Checkpoint {
    /// Pid of the root of the dumped tree.
    #[prost(int32, tag = "1")]
    pub root_pid: i32,
    /// Every process, parents before children.
    #[prost(message, repeated, tag = "2")]
    pub processes: Vec<Process>,
    /// Open file descriptions (shared by fds that refer to the same one).
    #[prost(message, repeated, tag = "3")]
    pub files: Vec<FileObject>,
    /// Pipes and FIFOs with their buffered data.
    #[prost(message, repeated, tag = "4")]
    pub pipes: Vec<PipeObject>,
    /// Shared-memory objects (MAP_SHARED anonymous, memfd, deleted shared files).
    #[prost(message, repeated, tag = "5")]
    pub shmem: Vec<ShmemObject>,
    /// Kernel release the image was taken on (`uname -r`).
    #[prost(string, tag = "6")]
    pub kernel_release: String,
    /// blake3 of the `[vdso]` text: restore refuses a different kernel build.
    #[prost(bytes = "vec", tag = "7")]
    pub vdso_hash: Vec<u8>,
    /// Pid namespace inode of the dumped tree (informational).
    #[prost(uint64, tag = "8")]
    pub pid_ns: u64,
    /// nftables table (family inet) that drops the packets of the saved TCP connections until
    /// restore has them again; restore deletes it. Empty: none.
    #[prost(string, tag = "9")]
    pub net_lock: String,
    /// System V semaphore sets used by the tree.
    #[prost(message, repeated, tag = "10")]
    pub sysv_sem: Vec<SysvSem>,
    /// System V message queues used by the tree.
    #[prost(message, repeated, tag = "11")]
    pub sysv_msg: Vec<SysvMsg>,
}

/// A System V semaphore set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SysvSem {
    #[prost(int32, tag = "1")]
    pub id: i32,
    #[prost(int32, tag = "2")]
    pub key: i32,
    #[prost(uint32, tag = "3")]
    pub mode: u32,
    #[prost(uint32, repeated, tag = "4")]
    pub values: Vec<u32>,
}

/// One message of a System V queue.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SysvMessage {
    #[prost(int64, tag = "1")]
    pub mtype: i64,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// A System V message queue with its messages in order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SysvMsg {
    #[prost(int32, tag = "1")]
    pub id: i32,
    #[prost(int32, tag = "2")]
    pub key: i32,
    #[prost(uint32, tag = "3")]
    pub mode: u32,
    #[prost(message, repeated, tag = "4")]
    pub messages: Vec<SysvMessage>,
}

/// One process (thread group).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    #[prost(int32, tag = "1")]
    pub pid: i32,
    /// Parent pid; for the root, the pid of its parent outside the tree.
    #[prost(int32, tag = "2")]
    pub ppid: i32,
    #[prost(int32, tag = "3")]
    pub pgid: i32,
    #[prost(int32, tag = "4")]
    pub sid: i32,
    /// Signal sent to the parent on exit (usually SIGCHLD).
    #[prost(int32, tag = "5")]
    pub exit_signal: i32,
    #[prost(message, repeated, tag = "6")]
    pub threads: Vec<Thread>,
    #[prost(message, optional, tag = "7")]
    pub mm: Option<MmState>,
    #[prost(message, repeated, tag = "8")]
    pub vmas: Vec<Vma>,
    #[prost(message, repeated, tag = "9")]
    pub fds: Vec<Fd>,
    /// Signal dispositions, index = signal number - 1 (64 entries).
    #[prost(message, repeated, tag = "10")]
    pub sigactions: Vec<SigAction>,
    /// Signals pending for the whole thread group.
    #[prost(message, repeated, tag = "11")]
    pub shared_pending: Vec<PendingSignal>,
    #[prost(message, optional, tag = "12")]
    pub creds: Option<Creds>,
    #[prost(message, repeated, tag = "13")]
    pub rlimits: Vec<Rlimit>,
    #[prost(uint32, tag = "14")]
    pub personality: u32,
    #[prost(uint32, tag = "15")]
    pub umask: u32,
    #[prost(string, tag = "16")]
    pub cwd: String,
    #[prost(string, tag = "17")]
    pub root: String,
    #[prost(string, tag = "18")]
    pub exe: String,
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF: (interval, value) in microseconds.
    #[prost(message, repeated, tag = "19")]
    pub itimers: Vec<ITimer>,
    #[prost(message, repeated, tag = "20")]
    pub posix_timers: Vec<PosixTimer>,
    /// PR_GET_PDEATHSIG.
    #[prost(int32, tag = "21")]
    pub pdeath_signal: i32,
    /// PR_GET_DUMPABLE.
    #[prost(int32, tag = "22")]
    pub dumpable: i32,
    /// PR_GET_CHILD_SUBREAPER.
    #[prost(bool, tag = "23")]
    pub child_subreaper: bool,
    /// Clock ticks since boot when the original process started (informational).
    #[prost(uint64, tag = "24")]
    pub start_time: u64,
    /// /proc/PID/oom_score_adj.
    #[prost(int32, tag = "25")]
    pub oom_score_adj: i32,
    /// Controlling terminal, recorded on the session leader.
    #[prost(message, optional, tag = "26")]
    pub ctty: Option<Ctty>,
}

/// One thread.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Thread {
    #[prost(int32, tag = "1")]
    pub tid: i32,
    /// `user_regs_struct` as 27 u64 in kernel order (see stasis_sys::ptrace::regs_to_vec).
    #[prost(uint64, repeated, tag = "2")]
    pub regs: Vec<u64>,
    /// XSAVE area as returned by PTRACE_GETREGSET(NT_X86_XSTATE).
    #[prost(bytes = "vec", tag = "3")]
    pub xsave: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub sigmask: u64,
    #[prost(message, repeated, tag = "5")]
    pub pending: Vec<PendingSignal>,
    #[prost(message, optional, tag = "6")]
    pub altstack: Option<AltStack>,
    #[prost(message, optional, tag = "7")]
    pub rseq: Option<Rseq>,
    #[prost(uint64, tag = "8")]
    pub robust_list: u64,
    #[prost(uint64, tag = "9")]
    pub robust_list_len: u64,
    #[prost(uint64, tag = "10")]
    pub clear_child_tid: u64,
    #[prost(string, tag = "11")]
    pub comm: String,
    /// Nice value.
    #[prost(int32, tag = "12")]
    pub nice: i32,
    /// CPUs the thread may run on (empty: not recorded).
    #[prost(uint32, repeated, tag = "13")]
    pub affinity: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PendingSignal {
    #[prost(int32, tag = "1")]
    pub signo: i32,
    /// Raw 128-byte siginfo_t.
    #[prost(bytes = "vec", tag = "2")]
    pub siginfo: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AltStack {
    #[prost(uint64, tag = "1")]
    pub sp: u64,
    #[prost(int32, tag = "2")]
    pub flags: i32,
    #[prost(uint64, tag = "3")]
    pub size: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Rseq {
    #[prost(uint64, tag = "1")]
    pub ptr: u64,
    #[prost(uint32, tag = "2")]
    pub len: u32,
    #[prost(uint32, tag = "3")]
    pub signature: u32,
    #[prost(uint32, tag = "4")]
    pub flags: u32,
}

/// Kernel `struct sigaction` (x86_64): handler, flags, restorer, mask.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SigAction {
    #[prost(uint64, tag = "1")]
    pub handler: u64,
    #[prost(uint64, tag = "2")]
    pub flags: u64,
    #[prost(uint64, tag = "3")]
    pub restorer: u64,
    #[prost(uint64, tag = "4")]
    pub mask: u64,
}

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
    /// madvise-able flags from smaps VmFlags, as two-letter codes (dd, dc, hg, nh, wf, …).
    #[prost(string, repeated, tag = "9")]
    pub vm_flags: Vec<String>,
    /// Stored pages (private mappings only).
    #[prost(message, repeated, tag = "10")]
    pub pages: Vec<PageRun>,
    /// File identity at checkpoint (device, inode, size, mtime ns) for file mappings.
    #[prost(message, optional, tag = "11")]
    pub file_id: Option<FileIdentity>,
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
    #[prost(uint32, tag = "10")]
    pub mode: u32,
    #[prost(uint32, tag = "11")]
    pub uid: u32,
    #[prost(uint32, tag = "12")]
    pub gid: u32,
    #[prost(bool, tag = "13")]
    pub destroyed: bool,
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
}

/// One descriptor in a process's fd table.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Fd {
    #[prost(int32, tag = "1")]
    pub fd: i32,
    #[prost(bool, tag = "2")]
    pub cloexec: bool,
    /// Index into `Checkpoint.files`.
    #[prost(uint32, tag = "3")]
    pub file_id: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum FileKind {
    Regular = 0,
    Directory = 1,
    CharDevice = 2,
    /// Unnamed pipe end (`pipe_id`, `write_end`).
    PipeEnd = 3,
    /// Named pipe opened by path (`pipe_id` holds its data).
    Fifo = 4,
    /// memfd (`shmem_id`).
    Memfd = 5,
    /// eventfd (`eventfd`).
    Eventfd = 6,
    /// epoll instance (`epoll`).
    Epoll = 7,
    /// timerfd (`timerfd`).
    Timerfd = 8,
    /// signalfd (`signalfd`).
    Signalfd = 9,
    /// inotify instance (`inotify`).
    Inotify = 10,
    /// Unix-domain socket (`unix`).
    UnixSocket = 11,
    /// Pseudo-terminal master (`pty` holds the pair's state).
    PtyMaster = 12,
    /// Pseudo-terminal slave, /dev/pts/N (`pty.index`).
    PtySlave = 13,
    /// IPv4/IPv6 socket (`inet`).
    InetSocket = 14,
    /// POSIX message queue descriptor (`mq`).
    Mqueue = 15,
}

/// One open file description.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileObject {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(enumeration = "FileKind", tag = "2")]
    pub kind: i32,
    #[prost(string, tag = "3")]
    pub path: String,
    /// open(2) flags (access mode, O_APPEND, O_NONBLOCK, …), without O_CLOEXEC.
    #[prost(uint32, tag = "4")]
    pub flags: u32,
    #[prost(uint64, tag = "5")]
    pub pos: u64,
    /// Deleted while open: content is in `content`.
    #[prost(bool, tag = "6")]
    pub deleted: bool,
    #[prost(message, repeated, tag = "7")]
    pub content: Vec<PageRun>,
    #[prost(uint64, tag = "8")]
    pub size: u64,
    #[prost(uint32, tag = "9")]
    pub pipe_id: u32,
    #[prost(bool, tag = "10")]
    pub write_end: bool,
    #[prost(uint32, tag = "11")]
    pub shmem_id: u32,
    /// Device number for character devices.
    #[prost(uint64, tag = "12")]
    pub rdev: u64,
    /// File mode (permission bits) for recreating deleted files.
    #[prost(uint32, tag = "13")]
    pub mode: u32,
    #[prost(message, optional, tag = "14")]
    pub file_id: Option<FileIdentity>,
    /// The state of the kinds that have one (at most one is set; its variant says which).
    #[prost(
        oneof = "file_object::State",
        tags = "15, 16, 17, 18, 19, 20, 21, 22, 23"
    )]
    pub state: Option<file_object::State>,
}

/// The `oneof` of [`FileObject`].
pub mod file_object {
    /// The kind-specific state of an open file description: one variant per kind of kernel
    /// object that has state beyond path, flags and position. The tags are those of the
    /// optional fields this `oneof` replaced (15–23), which encode the same way on the wire, so
    /// images written before decode unchanged.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum State {
        /// eventfd counter and flags (`FileKind::Eventfd`).
        #[prost(message, tag = "15")]
        Eventfd(super::EventfdState),
        /// epoll interest list (`FileKind::Epoll`).
        #[prost(message, tag = "16")]
        Epoll(super::EpollState),
        /// timerfd clock, flags and setting (`FileKind::Timerfd`).
        #[prost(message, tag = "17")]
        Timerfd(super::TimerfdState),
        /// signalfd mask (`FileKind::Signalfd`).
        #[prost(message, tag = "18")]
        Signalfd(super::SignalfdState),
        /// inotify watches (`FileKind::Inotify`).
        #[prost(message, tag = "19")]
        Inotify(super::InotifyState),
        /// Unix socket (`FileKind::UnixSocket`).
        #[prost(message, tag = "20")]
        Unix(super::UnixSocketState),
        /// Pseudo-terminal side (`FileKind::PtyMaster`, `FileKind::PtySlave`).
        #[prost(message, tag = "21")]
        Pty(super::PtyState),
        /// TCP/UDP socket (`FileKind::InetSocket`).
        #[prost(message, tag = "22")]
        Inet(super::InetSocketState),
        /// POSIX message queue (`FileKind::Mqueue`).
        #[prost(message, tag = "23")]
        Mq(super::MqueueState),
    }
}

/// Typed access to [`FileObject::state`]: `f.unix()` is the Unix socket state if `f` is one.
macro_rules! state_accessors {
    ($($get:ident, $get_mut:ident, $variant:ident, $ty:ident;)*) => {
        impl FileObject {
            $(
                #[doc = concat!("The `", stringify!($variant), "` state, if this is one.")]
                pub fn $get(&self) -> Option<&$ty> {
                    match &self.state {
                        Some(file_object::State::$variant(s)) => Some(s),
                        _ => None,
                    }
                }

                #[doc = concat!("The `", stringify!($variant), "` state, mutable, if this is one.")]
                pub fn $get_mut(&mut self) -> Option<&mut $ty> {
                    match &mut self.state {
                        Some(file_object::State::$variant(s)) => Some(s),
                        _ => None,
                    }
                }
            )*
        }
    };
}

state_accessors! {
    eventfd, eventfd_mut, Eventfd, EventfdState;
    epoll, epoll_mut, Epoll, EpollState;
    timerfd, timerfd_mut, Timerfd, TimerfdState;
    signalfd, signalfd_mut, Signalfd, SignalfdState;
    inotify, inotify_mut, Inotify, InotifyState;
    unix, unix_mut, Unix, UnixSocketState;
    pty, pty_mut, Pty, PtyState;
    inet, inet_mut, Inet, InetSocketState;
    mq, mq_mut, Mq, MqueueState;
}

/// One queued POSIX message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MqMessage {
    #[prost(uint32, tag = "1")]
    pub prio: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// A POSIX message queue (on the first description that refers to it: its messages).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MqueueState {
    /// Name, with its leading '/'.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub mode: u32,
    #[prost(uint32, tag = "3")]
    pub uid: u32,
    #[prost(uint32, tag = "4")]
    pub gid: u32,
    #[prost(int64, tag = "5")]
    pub maxmsg: i64,
    #[prost(int64, tag = "6")]
    pub msgsize: i64,
    /// Messages in delivery order (highest priority first), when `holds_messages`.
    #[prost(message, repeated, tag = "7")]
    pub messages: Vec<MqMessage>,
    /// This record carries the queue's messages (the first description seen for the queue).
    #[prost(bool, tag = "8")]
    pub holds_messages: bool,
}

/// A datagram queued on an inet socket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InetDatagram {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    /// Raw `sockaddr_in`/`sockaddr_in6` of the sender.
    #[prost(bytes = "vec", tag = "2")]
    pub from: Vec<u8>,
}

/// An IPv4/IPv6 socket: UDP (bound, connected, queued datagrams) or a listening TCP socket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InetSocketState {
    /// AF_INET or AF_INET6.
    #[prost(int32, tag = "1")]
    pub family: i32,
    /// SOCK_STREAM or SOCK_DGRAM.
    #[prost(int32, tag = "2")]
    pub sock_type: i32,
    /// IPPROTO_TCP or IPPROTO_UDP.
    #[prost(int32, tag = "3")]
    pub protocol: i32,
    /// Listening (TCP).
    #[prost(bool, tag = "4")]
    pub listening: bool,
    /// Raw local sockaddr (empty: unbound).
    #[prost(bytes = "vec", tag = "5")]
    pub local: Vec<u8>,
    /// Raw peer sockaddr (empty: not connected).
    #[prost(bytes = "vec", tag = "6")]
    pub peer: Vec<u8>,
    #[prost(uint32, tag = "7")]
    pub backlog: u32,
    #[prost(message, repeated, tag = "8")]
    pub queue: Vec<InetDatagram>,
    #[prost(bool, tag = "9")]
    pub reuseaddr: bool,
    #[prost(bool, tag = "10")]
    pub reuseport: bool,
    #[prost(bool, tag = "11")]
    pub broadcast: bool,
    #[prost(bool, tag = "12")]
    pub keepalive: bool,
    #[prost(bool, tag = "13")]
    pub nodelay: bool,
    #[prost(int32, tag = "14")]
    pub rcvbuf: i32,
    #[prost(int32, tag = "15")]
    pub sndbuf: i32,
    #[prost(uint64, tag = "16")]
    pub rcvtimeo_us: u64,
    #[prost(uint64, tag = "17")]
    pub sndtimeo_us: u64,
    /// SO_PEEK_OFF (-1: disabled).
    #[prost(int32, tag = "18")]
    pub peek_off: i32,
    /// IPV6_V6ONLY.
    #[prost(bool, tag = "19")]
    pub v6only: bool,
    /// IP_TTL (IPv4) or IPV6_UNICAST_HOPS (IPv6) as read back.
    #[prost(int32, tag = "20")]
    pub ttl: i32,
    /// IP_TOS (IPv4) or IPV6_TCLASS (IPv6).
    #[prost(int32, tag = "21")]
    pub tos: i32,
    /// SO_LINGER: enabled, seconds.
    #[prost(bool, tag = "22")]
    pub linger_on: bool,
    #[prost(int32, tag = "23")]
    pub linger_secs: i32,
    /// An established TCP connection, saved through TCP_REPAIR.
    #[prost(message, optional, tag = "24")]
    pub tcp: Option<TcpConnState>,
}

/// What TCP_REPAIR reads out of an established connection.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TcpConnState {
    /// Sequence number after the last byte queued to send (write_seq).
    #[prost(uint32, tag = "1")]
    pub snd_seq: u32,
    /// Next sequence number expected from the peer (rcv_nxt).
    #[prost(uint32, tag = "2")]
    pub rcv_seq: u32,
    /// Send queue: bytes sent but not acknowledged, then bytes not sent yet.
    #[prost(bytes = "vec", tag = "3")]
    pub send_queue: Vec<u8>,
    /// How many bytes at the end of `send_queue` were never sent.
    #[prost(uint32, tag = "4")]
    pub unsent: u32,
    /// Receive queue (arrived, not read by the application).
    #[prost(bytes = "vec", tag = "5")]
    pub recv_queue: Vec<u8>,
    #[prost(uint32, tag = "6")]
    pub mss: u32,
    #[prost(uint32, tag = "7")]
    pub snd_wscale: u32,
    #[prost(uint32, tag = "8")]
    pub rcv_wscale: u32,
    #[prost(bool, tag = "9")]
    pub sack: bool,
    #[prost(bool, tag = "10")]
    pub timestamps: bool,
    /// TCP_TIMESTAMP (the connection's timestamp clock).
    #[prost(uint32, tag = "11")]
    pub timestamp: u32,
    /// struct tcp_repair_window (snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup).
    #[prost(uint32, repeated, tag = "12")]
    pub window: Vec<u32>,
    /// Keepalive settings: TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT.
    #[prost(int32, repeated, tag = "13")]
    pub keepalive: Vec<i32>,
    /// This side shut down for writing (its FIN is counted in `snd_seq`).
    #[prost(bool, tag = "14")]
    pub fin_sent: bool,
    /// The peer shut down for writing (its FIN is counted in `rcv_seq`).
    #[prost(bool, tag = "15")]
    pub fin_received: bool,
}

/// A pseudo-terminal pair (on the master's record; a slave's record holds the index only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PtyState {
    /// /dev/pts/INDEX.
    #[prost(uint32, tag = "1")]
    pub index: u32,
    /// The slave's `struct termios2` (44 raw bytes).
    #[prost(bytes = "vec", tag = "2")]
    pub termios: Vec<u8>,
    /// The master's `struct termios2`.
    #[prost(bytes = "vec", tag = "3")]
    pub master_termios: Vec<u8>,
    /// rows, cols, xpixel, ypixel.
    #[prost(uint32, repeated, tag = "4")]
    pub winsize: Vec<u32>,
    /// TIOCPKT on the master.
    #[prost(bool, tag = "5")]
    pub packet_mode: bool,
    /// TIOCSPTLCK: slave opens refused.
    #[prost(bool, tag = "6")]
    pub locked: bool,
    /// Input queued for the slave's reader (typed into the master, not read yet).
    #[prost(bytes = "vec", tag = "7")]
    pub input: Vec<u8>,
    /// Output queued for the master's reader (written by the slave side, not read yet).
    #[prost(bytes = "vec", tag = "8")]
    pub output: Vec<u8>,
    /// The slave's owner uid/gid and mode (devpts node).
    #[prost(uint32, tag = "9")]
    pub uid: u32,
    #[prost(uint32, tag = "10")]
    pub gid: u32,
    #[prost(uint32, tag = "11")]
    pub mode: u32,
    /// The master is outside the tree (a terminal the tree was started from).
    #[prost(bool, tag = "12")]
    pub external: bool,
}

/// A session's controlling terminal.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ctty {
    /// /dev/pts/INDEX.
    #[prost(uint32, tag = "1")]
    pub index: u32,
    /// Foreground process group.
    #[prost(int32, tag = "2")]
    pub fg_pgid: i32,
}

/// One message (or, for a stream socket, all the bytes) queued for reading.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnixMessage {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    /// Sender's address for datagrams (empty if unbound or unknown).
    #[prost(bytes = "vec", tag = "2")]
    pub from: Vec<u8>,
    /// Files in flight with this message (SCM_RIGHTS): indexes into `Checkpoint.files`.
    #[prost(uint32, repeated, tag = "3")]
    pub fds: Vec<u32>,
}

/// A unix-domain socket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnixSocketState {
    /// Socket inode at checkpoint (identity within the image).
    #[prost(uint32, tag = "1")]
    pub ino: u32,
    /// SOCK_STREAM (1), SOCK_DGRAM (2), SOCK_SEQPACKET (5).
    #[prost(int32, tag = "2")]
    pub sock_type: i32,
    /// 1 connected, 7 unconnected, 10 listening.
    #[prost(int32, tag = "3")]
    pub state: i32,
    /// Bound address (path, or NUL + name for the abstract namespace); empty if unbound.
    #[prost(bytes = "vec", tag = "4")]
    pub name: Vec<u8>,
    /// Peer's inode (0: none).
    #[prost(uint32, tag = "5")]
    pub peer_ino: u32,
    /// Shutdown bits (1 receive, 2 send).
    #[prost(uint32, tag = "6")]
    pub shutdown: u32,
    /// Listen backlog.
    #[prost(uint32, tag = "7")]
    pub backlog: u32,
    /// Data queued for reading, in order.
    #[prost(message, repeated, tag = "8")]
    pub queue: Vec<UnixMessage>,
    /// Pending connections of a listener: inodes of the client sockets, in queue order.
    #[prost(uint32, repeated, tag = "9")]
    pub pending_clients: Vec<u32>,
    /// SO_RCVBUF, SO_SNDBUF as set (0: default).
    #[prost(int32, tag = "10")]
    pub rcvbuf: i32,
    #[prost(int32, tag = "11")]
    pub sndbuf: i32,
    /// SO_PASSCRED.
    #[prost(bool, tag = "12")]
    pub passcred: bool,
    /// SO_RCVTIMEO / SO_SNDTIMEO in microseconds.
    #[prost(uint64, tag = "13")]
    pub rcvtimeo_us: u64,
    #[prost(uint64, tag = "14")]
    pub sndtimeo_us: u64,
    /// SO_PEEK_OFF (-1: disabled).
    #[prost(int32, tag = "15")]
    pub peek_off: i32,
}

/// eventfd counter and mode.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventfdState {
    #[prost(uint64, tag = "1")]
    pub count: u64,
    /// EFD_SEMAPHORE.
    #[prost(bool, tag = "2")]
    pub semaphore: bool,
}

/// One registration in an epoll instance.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EpollItem {
    /// Target fd number in the registering process.
    #[prost(int32, tag = "1")]
    pub tfd: i32,
    /// EPOLL* event bits (EPOLLET, EPOLLONESHOT… included).
    #[prost(uint32, tag = "2")]
    pub events: u32,
    /// epoll_data as u64.
    #[prost(uint64, tag = "3")]
    pub data: u64,
    /// Pid whose fd table `tfd` refers to.
    #[prost(int32, tag = "4")]
    pub owner_pid: i32,
}

/// Registrations of an epoll instance (readiness is recomputed by the kernel on restore).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EpollState {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<EpollItem>,
}

/// timerfd clock, remaining time, interval, unread expirations.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimerfdState {
    #[prost(int32, tag = "1")]
    pub clock_id: i32,
    /// Flags given to the last timerfd_settime (TFD_TIMER_ABSTIME…).
    #[prost(uint32, tag = "2")]
    pub settime_flags: u32,
    /// Time left until the next expiration for a relative timer; the absolute deadline on its
    /// clock for a TFD_TIMER_ABSTIME one (0: disarmed).
    #[prost(uint64, tag = "3")]
    pub value_ns: u64,
    #[prost(uint64, tag = "4")]
    pub interval_ns: u64,
    /// Expirations not read yet.
    #[prost(uint64, tag = "5")]
    pub ticks: u64,
}

/// signalfd mask.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignalfdState {
    #[prost(uint64, tag = "1")]
    pub mask: u64,
}

/// One inotify watch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InotifyWatch {
    #[prost(int32, tag = "1")]
    pub wd: i32,
    #[prost(uint32, tag = "2")]
    pub mask: u32,
    /// Path of the watched object, resolved from its file handle at checkpoint.
    #[prost(string, tag = "3")]
    pub path: String,
}

/// Watches of an inotify instance (queued events are not kept).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InotifyState {
    #[prost(message, repeated, tag = "1")]
    pub watches: Vec<InotifyWatch>,
}

/// A pipe (or FIFO) and the bytes buffered in it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PipeObject {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(uint64, tag = "2")]
    pub ino: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    /// F_GETPIPE_SZ.
    #[prost(uint32, tag = "4")]
    pub capacity: u32,
    /// The tree holds no read end (its reader is outside the tree).
    #[prost(bool, tag = "5")]
    pub external_reader: bool,
    /// The tree holds no write end (its writer is outside the tree).
    #[prost(bool, tag = "6")]
    pub external_writer: bool,
    /// FIFO path (empty for an unnamed pipe).
    #[prost(string, tag = "7")]
    pub fifo_path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Creds {
    /// real, effective, saved, fs.
    #[prost(uint32, repeated, tag = "1")]
    pub uids: Vec<u32>,
    #[prost(uint32, repeated, tag = "2")]
    pub gids: Vec<u32>,
    #[prost(uint32, repeated, tag = "3")]
    pub groups: Vec<u32>,
    #[prost(uint64, tag = "4")]
    pub cap_inh: u64,
    #[prost(uint64, tag = "5")]
    pub cap_prm: u64,
    #[prost(uint64, tag = "6")]
    pub cap_eff: u64,
    #[prost(uint64, tag = "7")]
    pub cap_bnd: u64,
    #[prost(uint64, tag = "8")]
    pub cap_amb: u64,
    #[prost(uint32, tag = "9")]
    pub securebits: u32,
    #[prost(bool, tag = "10")]
    pub no_new_privs: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Rlimit {
    #[prost(int32, tag = "1")]
    pub resource: i32,
    #[prost(uint64, tag = "2")]
    pub soft: u64,
    #[prost(uint64, tag = "3")]
    pub hard: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ITimer {
    #[prost(int32, tag = "1")]
    pub which: i32,
    #[prost(uint64, tag = "2")]
    pub interval_us: u64,
    #[prost(uint64, tag = "3")]
    pub value_us: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PosixTimer {
    #[prost(int32, tag = "1")]
    pub id: i32,
    #[prost(int32, tag = "2")]
    pub clock_id: i32,
    /// SIGEV_SIGNAL (0), SIGEV_NONE (1), SIGEV_THREAD_ID (4).
    #[prost(int32, tag = "3")]
    pub notify: i32,
    #[prost(int32, tag = "4")]
    pub signo: i32,
    #[prost(uint64, tag = "5")]
    pub sigev_value: u64,
    #[prost(int32, tag = "6")]
    pub notify_tid: i32,
    #[prost(uint64, tag = "7")]
    pub interval_ns: u64,
    #[prost(uint64, tag = "8")]
    pub value_ns: u64,
}
