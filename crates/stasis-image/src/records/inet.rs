//! IPv4 and IPv6 sockets: TCP, UDP, UDP-Lite, raw and ICMP ("ping") sockets.

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
    /// Further socket options as read back (`SOL_SOCKET`, IP, IPv6, TCP, UDP, UDP-Lite, raw
    /// levels: IP_RECVERR, IP_PKTINFO, IP_MTU_DISCOVER, IP_FREEBIND, multicast TTL/loop,
    /// TCP_CORK, TCP_USER_TIMEOUT, keepalive times, TCP_CONGESTION, SO_BINDTODEVICE, …); restore
    /// sets each one whose value differs from a new socket's.
    #[prost(message, repeated, tag = "25")]
    pub options: Vec<SockOpt>,
    /// Classic BPF program attached with SO_ATTACH_FILTER (`struct sock_filter` array, 8 bytes
    /// per instruction); empty: none.
    #[prost(bytes = "vec", tag = "26")]
    pub filter: Vec<u8>,
    /// SO_LOCK_FILTER was set (the filter can no longer be changed).
    #[prost(bool, tag = "27")]
    pub filter_locked: bool,
    /// Shutdown of a datagram socket (1: SHUT_RD, 2: SHUT_WR, 3: both), from `inet_diag`.
    #[prost(uint32, tag = "28")]
    pub shutdown: u32,
    /// A TCP socket whose connection is over (both FINs exchanged, state CLOSE): restored
    /// bound to its address and shut down both ways (reads give end of file, writes EPIPE).
    #[prost(bool, tag = "29")]
    pub tcp_closed: bool,
}

/// One socket option with the value read back from the socket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SockOpt {
    /// `getsockopt` level (SOL_SOCKET, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_TCP, …).
    #[prost(int32, tag = "1")]
    pub level: i32,
    /// Option name at that level.
    #[prost(int32, tag = "2")]
    pub name: i32,
    /// Integer value (when `data` is empty).
    #[prost(int32, tag = "3")]
    pub value: i32,
    /// Value of an option that is not an integer (a device or congestion control name, a
    /// filter); empty for integer options.
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
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
    /// TCP state at checkpoint (`tcpi_state`: 1 ESTABLISHED, 4 FIN_WAIT1, 5 FIN_WAIT2,
    /// 8 CLOSE_WAIT, 9 LAST_ACK, 11 CLOSING); 0: not recorded (older images). Restore uses it to
    /// send the FINs again in the order they were sent.
    #[prost(uint32, tag = "16")]
    pub state: u32,
}
