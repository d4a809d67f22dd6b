//! Kernel-object records: the protobuf schema of `objects.img`.
//!
//! One [`Checkpoint`] message describes the whole dumped tree: every process with its threads,
//! memory layout and fd table, and the shared objects they refer to (open file descriptions,
//! pipes, shared memory objects). Page data is not here: memory records point to chunks by
//! their blake3 id.
//!
//! Evolution rules (see docs/image-format.md): fields are only ever added, with new tags and
//! defaults that mean "absent"; tags are never reused or retyped.

mod aio;
mod events;
mod filelock;
mod inet;
mod memory;
mod mqueue;
mod netlink;
mod packet;
mod parent;
mod pidfd;
mod pipe;
mod process;
mod pty;
mod seccomp;
mod sysv;
mod unix;

pub use aio::*;
pub use events::*;
pub use filelock::*;
pub use inet::*;
pub use memory::*;
pub use mqueue::*;
pub use netlink::*;
pub use packet::*;
pub use parent::*;
pub use pidfd::*;
pub use pipe::*;
pub use process::*;
pub use pty::*;
pub use seccomp::*;
pub use sysv::*;
pub use unix::*;

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
    /// Every distinct seccomp filter of the tree's tasks, each after the one it was installed
    /// on (see the `seccomp` records).
    #[prost(message, repeated, tag = "15")]
    pub seccomp_filters: Vec<SeccompFilter>,
    /// An incremental image: the image it was taken relative to, whose chunks its page runs
    /// may name (absent: a full image).
    #[prost(message, optional, tag = "22")]
    pub parent: Option<ParentRef>,
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
    /// fanotify group (`fanotify`).
    Fanotify = 20,
    /// A `/proc/PID` directory of a task that had exited: restored as such a directory of
    /// another dead task (reads fail with ESRCH or ENOENT as before).
    ProcDeadTask = 25,
    /// `/dev/tty` (5,0), the alias of the opener's controlling terminal: opened again by the
    /// task itself once it has its controlling terminal back.
    DevTty = 17,
    /// Pidfd of a process or thread (`pidfd`).
    Pidfd = 16,
    /// Descriptor opened with `O_PATH` (of any file type, symlinks with `O_NOFOLLOW`; `st_mode`).
    Path = 18,
    /// Netlink socket (`netlink`).
    NetlinkSocket = 21,
    /// Packet socket (`packet`).
    PacketSocket = 22,
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
        tags = "15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 38, 42, 43"
    )]
    pub state: Option<file_object::State>,
    /// Locks owned by this description (flock, OFD locks), taken again on it at restore.
    #[prost(message, repeated, tag = "30")]
    pub locks: Vec<FileLock>,
    /// `F_SETOWN_EX`/`F_SETSIG` owner; absent: no owner and no signal set.
    #[prost(message, optional, tag = "31")]
    pub owner: Option<FileOwner>,
    /// The full `st_mode` of what an `O_PATH` descriptor refers to (`FileKind::Path`): restore
    /// checks the path still names an object of that type.
    #[prost(uint32, tag = "32")]
    pub st_mode: u32,
    /// Owner and times of a deleted file or FIFO, set again on the recreated one. Absent: not
    /// recorded (images of earlier builds).
    #[prost(message, optional, tag = "35")]
    pub ghost: Option<GhostAttrs>,
    /// Inode flags (`FS_IOC_GETFLAGS`: append-only, immutable, noatime…) of a file or
    /// directory the tree holds open; restore sets them again if they differ. Absent: not
    /// read (not supported by its file system, or an earlier build).
    #[prost(uint32, optional, tag = "36")]
    pub inode_flags: Option<u32>,
    /// A file under `/proc` (`/proc/PID/...`, `path` as the task saw it, in its own `/proc`):
    /// opened at restore by the task itself (its root, its pid namespace) once every task
    /// exists.
    #[prost(bool, tag = "37")]
    pub in_proc: bool,
}

/// Owner and times of a deleted file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GhostAttrs {
    #[prost(uint32, tag = "1")]
    pub uid: u32,
    #[prost(uint32, tag = "2")]
    pub gid: u32,
    /// Last access, nanoseconds since the epoch.
    #[prost(int64, tag = "3")]
    pub atime_ns: i64,
    /// Last modification, nanoseconds since the epoch.
    #[prost(int64, tag = "4")]
    pub mtime_ns: i64,
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
        /// fanotify group (`FileKind::Fanotify`).
        #[prost(message, tag = "38")]
        Fanotify(super::FanotifyState),
        /// Pidfd target (`FileKind::Pidfd`).
        #[prost(message, tag = "24")]
        Pidfd(super::PidfdState),
        /// Netlink socket (`FileKind::NetlinkSocket`).
        #[prost(message, tag = "42")]
        Netlink(super::NetlinkSocketState),
        /// Packet socket (`FileKind::PacketSocket`).
        #[prost(message, tag = "43")]
        Packet(super::PacketSocketState),
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
    fanotify, fanotify_mut, Fanotify, FanotifyState;
    pidfd, pidfd_mut, Pidfd, PidfdState;
    netlink, netlink_mut, Netlink, NetlinkSocketState;
    packet, packet_mut, Packet, PacketSocketState;
}
