//! Event objects: eventfd, epoll, timerfd, signalfd, inotify.

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
    /// Pid whose fd table `tfd` refers to (0: the epoll was only in flight in a unix socket;
    /// the root registers it at restore).
    #[prost(int32, tag = "4")]
    pub owner_pid: i32,
    /// The open file description registered (a `Checkpoint.files` index), found with
    /// `kcmp(KCMP_EPOLL_TFD)`: `tfd` is only the number it had when it was registered, which
    /// may be closed or hold another file since. Absent in older images (then `tfd` is it).
    #[prost(uint32, optional, tag = "5")]
    pub target: Option<u32>,
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
    /// The watched object had been deleted (`path` is where it was): the watch goes on the
    /// deleted file the tree holds open (same `dev`/`ino`), recreated at restore.
    #[prost(bool, tag = "4")]
    pub deleted: bool,
    /// Inode of the watched object (set for a deleted one).
    #[prost(uint64, tag = "5")]
    pub ino: u64,
    /// Device of the watched object (set for a deleted one).
    #[prost(uint64, tag = "6")]
    pub dev: u64,
}

/// Watches of an inotify instance (queued events are not kept).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InotifyState {
    #[prost(message, repeated, tag = "1")]
    pub watches: Vec<InotifyWatch>,
}

/// A fanotify group: its `fanotify_init` flags and marks (queued events, and the answers
/// permission events wait for, are not kept).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FanotifyState {
    /// `fanotify_init` flags (class, reporting, FAN_NONBLOCK, FAN_CLOEXEC …).
    #[prost(uint32, tag = "1")]
    pub flags: u32,
    /// `fanotify_init` event_f_flags (open flags of the event fds).
    #[prost(uint32, tag = "2")]
    pub event_flags: u32,
    #[prost(message, repeated, tag = "3")]
    pub marks: Vec<FanotifyMark>,
}

/// One fanotify mark.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FanotifyMark {
    /// 0: an inode, 1: a mount (`FAN_MARK_MOUNT`), 2: a file system (`FAN_MARK_FILESYSTEM`).
    #[prost(uint32, tag = "1")]
    pub target: u32,
    /// Path of the marked inode, mount point, or a mount point of the file system.
    #[prost(string, tag = "2")]
    pub path: String,
    /// User-visible mark flags (`FAN_MARK_IGNORED_SURV_MODIFY`, `FAN_MARK_EVICTABLE`,
    /// `FAN_MARK_IGNORE`).
    #[prost(uint32, tag = "3")]
    pub mflags: u32,
    #[prost(uint64, tag = "4")]
    pub mask: u64,
    #[prost(uint64, tag = "5")]
    pub ignored_mask: u64,
}
