//! Unix domain sockets.

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
    /// A connected stream or seqpacket socket whose peer was closed (what is queued is read,
    /// then end-of-file); restored by connecting it to a temporary peer that is closed again.
    #[prost(bool, tag = "16")]
    pub peer_closed: bool,
    /// The peer was closed with data of ours unread, so a read reports ECONNRESET once the
    /// queue is empty (EPOLLERR was pending).
    #[prost(bool, tag = "17")]
    pub peer_reset: bool,
    /// The socket file of `name` was deleted (or its directory removed) since the bind: the
    /// socket keeps the name but no path reaches it.
    #[prost(bool, tag = "18")]
    pub name_gone: bool,
    /// Mode of the socket file of `name` (permission bits; 0: unknown, left as bind made it).
    #[prost(uint32, tag = "19")]
    pub file_mode: u32,
    /// Owner of the socket file (uid << 32 | gid; only meaningful when `file_mode` is set).
    #[prost(uint64, tag = "20")]
    pub file_owner: u64,
    /// A client of a pending connection (not accepted yet): what it sent, queued in the
    /// connection's server socket, which the listener's `accept` will return.
    #[prost(message, repeated, tag = "21")]
    pub embryo_queue: Vec<UnixMessage>,
    /// The directory a relative path `name` was bound in (absolute; empty for other names).
    #[prost(string, tag = "22")]
    pub bind_dir: String,
}
