//! Pseudo-terminals and controlling terminals.

/// A pseudo-terminal pair (on the master's record; a slave's record holds the index, and
/// its termios and window size).
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
