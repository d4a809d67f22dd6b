//! Processes and threads: registers aside, everything a task restores from (credentials, limits, signals, timers).

use super::*;

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
    /// The current directory had been removed (`cwd` without its " (deleted)"): recreated
    /// for the `chdir` and removed again. Absent: it existed.
    #[prost(message, optional, tag = "53")]
    pub cwd_deleted: Option<DeletedDir>,
    /// The root directory had been removed (as `cwd_deleted`, for `root`).
    #[prost(message, optional, tag = "54")]
    pub root_deleted: Option<DeletedDir>,
    /// The process had exited and was not yet reaped by its parent (a zombie): it has no
    /// memory, fds or state of its own; restore creates it and makes it exit with
    /// `exit_status`, so its parent's wait sees the same thing.
    #[prost(bool, tag = "27")]
    pub zombie: bool,
    /// A zombie's wait status as `waitpid` reports it (`code << 8`, or the signal that killed
    /// it with 0x80 if it dumped core).
    #[prost(int32, tag = "28")]
    pub exit_status: i32,
    /// Stopped by job control with this signal (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU); 0: not
    /// stopped.
    #[prost(int32, tag = "29")]
    pub stop_signal: i32,
    /// With `stop_signal`: the parent has already collected the stop (`waitpid(WUNTRACED)`),
    /// so it is not reported again.
    #[prost(bool, tag = "30")]
    pub stop_reported: bool,
    /// `PR_GET_THP_DISABLE` as the kernel returns it (bit 0: THP disabled; 0: not set).
    #[prost(uint32, tag = "31")]
    pub thp_disable: u32,
    /// Audit login uid (`/proc/PID/loginuid`, 4294967295 when unset); None: not recorded (a
    /// kernel without audit). The audit session id is not kept: no interface sets it.
    #[prost(uint32, optional, tag = "32")]
    pub loginuid: Option<u32>,
    /// Membarrier registrations: the `MEMBARRIER_CMD_REGISTER_*` command bits that
    /// `MEMBARRIER_CMD_GET_REGISTRATIONS` returned (0 before Linux 6.3).
    #[prost(uint32, tag = "33")]
    pub membarrier: u32,
    /// Continued (SIGCONT) after a job-control stop, and the parent has not collected that
    /// yet (`waitpid(WCONTINUED)` would report it).
    #[prost(bool, tag = "34")]
    pub continued: bool,
    /// Locks this process takes again through one of its fds: POSIX record locks (owned by
    /// the process) and leases (owned by a description, set by the process that held it).
    #[prost(message, repeated, tag = "48")]
    pub locks: Vec<FileLock>,
    /// This process shares its fd table with process `fd_table_of` (`CLONE_FILES`), its
    /// parent: it is created with `CLONE_FILES` and its fds are not installed again. 0: own table.
    #[prost(int32, tag = "49")]
    pub fd_table_of: i32,
}

/// Mode and owner of a removed directory still in use as a task's cwd or root.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeletedDir {
    /// Permission bits.
    #[prost(uint32, tag = "1")]
    pub mode: u32,
    #[prost(uint32, tag = "2")]
    pub uid: u32,
    #[prost(uint32, tag = "3")]
    pub gid: u32,
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
    /// Seccomp mode (a `SeccompMode`; seccomp is per thread).
    #[prost(enumeration = "SeccompMode", tag = "20")]
    pub seccomp_mode: i32,
    /// The thread's most recent seccomp filter: its index in `Checkpoint.seccomp_filters` plus
    /// one (0: none); the rest of its chain follows the filters' `parent` links.
    #[prost(uint32, tag = "21")]
    pub seccomp_filter: u32,
    /// no_new_privs of this thread (the kernel keeps it per thread); absent: the process's
    /// `Creds.no_new_privs`.
    #[prost(bool, optional, tag = "22")]
    pub no_new_privs: Option<bool>,
    /// Timer slack in nanoseconds (`PR_GET_TIMERSLACK`); 0: not recorded.
    #[prost(uint64, tag = "14")]
    pub timer_slack_ns: u64,
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
