//! Pidfds: file descriptors that refer to a process or a thread.

/// A pidfd (`FileKind::Pidfd`). Its file flags hold `O_NONBLOCK` (`PIDFD_NONBLOCK`) and
/// `O_EXCL` (`PIDFD_THREAD`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PidfdState {
    /// The task it refers to (a tid for a thread pidfd), named as the image names processes
    /// (`Process.pid`, `Thread.tid`): a task of the tree, or a zombie of the tree. 0 when
    /// `exited`.
    #[prost(int32, tag = "1")]
    pub pid: i32,
    /// The task had exited and was reaped (fdinfo shows `Pid: -1`): restore gives a pidfd of
    /// a task that exited the same way.
    #[prost(bool, tag = "2")]
    pub exited: bool,
    /// With `exited`: the wait status `PIDFD_GET_INFO` reported (`PIDFD_INFO_EXIT`), when
    /// `exit_known`.
    #[prost(int32, tag = "3")]
    pub exit_status: i32,
    /// `exit_status` is known (Linux 6.15 and later keep it for a reaped process).
    #[prost(bool, tag = "4")]
    pub exit_known: bool,
}
