//! IPv4/IPv6 sockets: TCP (listeners, connections through TCP_REPAIR, closing states), UDP and
//! UDP-Lite, raw and ICMP ("ping") sockets.
//!
//! ## Dump
//! The socket is borrowed with `pidfd_getfd`; `SO_DOMAIN`, `SO_TYPE`, `SO_PROTOCOL`,
//! `getsockname`/`getpeername`, the common options, a table of further options (`sockopt.rs`)
//! and the classic BPF filter are read from it. UDP datagrams queued for reading are copied
//! without being consumed (`SO_PEEK_OFF` = 0, then `recvfrom(MSG_PEEK)` until empty, then the
//! offset is put back), each with its sender; the shutdown of a datagram or raw socket comes
//! from `inet_diag`. A TCP listener whose accept queue is empty is kept; a connection is locked
//! (`netlock.rs`), put in repair mode and read (sequence numbers, queues, window, options). A
//! raw or ping socket with packets waiting, or a listener with connections waiting to be
//! accepted, is refused.
//!
//! ## Restore
//! The socket is created with the same family, type and protocol, its options set, bound to its
//! address (`SO_REUSEADDR` as saved) and connected (UDP), made to listen (TCP) or rebuilt in
//! repair mode (a connection). Queued datagrams are sent again to it: by the image's own socket
//! bound to the sender's address (the sender is kept), otherwise from a temporary socket (the
//! sender's port is not kept). Then the filter, its lock and the shutdown.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::kind::{DumpCtx, ObjectKind, RestoreCtx};
use crate::files::{FileTable, Opened, Probe};
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::net;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

const SO_DOMAIN: i32 = 39;
const SO_PROTOCOL: i32 = 38;
const TCP_INFO_STATE_LISTEN: u8 = 10;

fn opt(s: RawFd, level: i32, o: i32) -> std::io::Result<i32> {
    net::getsockopt_int(s, level, o)
}

const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
const TCP_REPAIR_OFF_NO_WP: i32 = -1;
const SIOCOUTQ: libc::c_ulong = 0x5411;
const SIOCOUTQNSD: libc::c_ulong = 0x894B;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;

/// Established TCP connections in repair mode during a checkpoint, and their network lock.
/// Dropped without [`TcpRepair::release`] or [`TcpRepair::keep_for_restore`] (an error path),
/// it takes the sockets out of repair mode and removes the lock: the tree goes on as before.
pub struct TcpRepair {
    /// The lock on every saved connection.
    pub lock: crate::netlock::NetLock,
    /// Sockets in repair mode, with their SO_REUSEADDR (leaving repair mode clears it).
    socks: Vec<(OwnedFd, i32)>,
    done: bool,
}

impl TcpRepair {
    /// No connection yet; the lock table will be `stasis_<tag>`.
    pub fn new(tag: &str) -> Self {
        Self {
            lock: crate::netlock::NetLock::new(tag),
            socks: Vec::new(),
            done: false,
        }
    }

    fn leave_repair(&mut self) {
        for (s, reuse) in &self.socks {
            let fd = s.as_raw_fd();
            if let Err(e) =
                net::setsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
            {
                tracing::error!(error = %e, "could not take a TCP socket out of repair mode");
            }
            // The kernel resets SO_REUSEADDR when a socket leaves repair mode.
            let _ = net::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, *reuse);
        }
        self.socks.clear();
    }

    /// The tree goes on: sockets leave repair mode, the lock goes away (on drop).
    pub fn release(&mut self) {
        self.leave_repair();
        self.done = true;
    }

    /// The tree is ended: sockets stay in repair mode (so closing them sends nothing) and the
    /// lock stays until restore. Returns the lock table's name if there is one.
    pub fn keep_for_restore(&mut self) -> String {
        self.done = true;
        self.socks.clear();
        if self.lock.active() {
            self.lock.persist();
            self.lock.table.clone()
        } else {
            String::new()
        }
    }
}

impl Drop for TcpRepair {
    fn drop(&mut self) {
        if !self.done {
            self.leave_repair();
        }
    }
}

fn ip_port(addr: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let fam = u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]) as i32;
    let port = u16::from_be_bytes([*addr.get(2)?, *addr.get(3)?]);
    if fam == libc::AF_INET {
        let o: [u8; 4] = addr.get(4..8)?.try_into().ok()?;
        Some((std::net::IpAddr::from(o), port))
    } else {
        let o: [u8; 16] = addr.get(8..24)?.try_into().ok()?;
        Some((std::net::IpAddr::from(o), port))
    }
}

fn dump_tcp_conn(s: RawFd, info: &[u8]) -> std::io::Result<rec::TcpConnState> {
    let tcp = |o: i32| net::getsockopt_int(s, libc::IPPROTO_TCP, o);
    // FIN_WAIT1, LAST_ACK, CLOSING: our FIN is not acknowledged yet, so it is the last
    // sequence number of the send queue (the queue sizes count it, the data does not hold it);
    // while it waits behind unsent data, the unsent count holds it too.
    let fin_unacked = matches!(info[0], 4 | 9 | 11) as usize;
    net::setsockopt_int(s, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
    let snd_seq = tcp(TCP_QUEUE_SEQ)? as u32;
    let outq = stasis_sys::sys::ioctl_get_int(s, SIOCOUTQ)?.max(0) as usize;
    let unsent = stasis_sys::sys::ioctl_get_int(s, SIOCOUTQNSD)?.max(0) as usize;
    let unsent = unsent.saturating_sub(fin_unacked.min(unsent)) as u32;
    let send_queue = net::peek_bytes(s, outq.saturating_sub(fin_unacked))?;
    net::setsockopt_int(s, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
    let rcv_seq = tcp(TCP_QUEUE_SEQ)? as u32;
    let inq = stasis_sys::sys::fionread(s)?;
    let recv_queue = net::peek_bytes(s, inq)?;
    let mut w = [0u8; 20];
    net::getsockopt_bytes(s, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &mut w)?;
    let window = w
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes(c.try_into().expect("4")))
        .collect();
    let options = info[5];
    let wscale = options & TCPI_OPT_WSCALE != 0;
    Ok(rec::TcpConnState {
        snd_seq,
        rcv_seq,
        unsent: unsent.min(send_queue.len() as u32),
        send_queue,
        recv_queue,
        mss: tcp(libc::TCP_MAXSEG)? as u32,
        snd_wscale: if wscale { (info[6] & 0xf) as u32 } else { 0 },
        rcv_wscale: if wscale { (info[6] >> 4) as u32 } else { 0 },
        sack: options & TCPI_OPT_SACK != 0,
        timestamps: options & TCPI_OPT_TIMESTAMPS != 0,
        timestamp: tcp(TCP_TIMESTAMP)? as u32,
        window,
        fin_sent: false,
        fin_received: false,
        state: info[0] as u32,
        keepalive: vec![
            tcp(libc::TCP_KEEPIDLE)?,
            tcp(libc::TCP_KEEPINTVL)?,
            tcp(libc::TCP_KEEPCNT)?,
        ],
    })
}

/// Dump a borrowed inet socket. `None`: not an inet socket. An established TCP connection is
/// locked (`repair.lock`) and put into repair mode (kept in `repair`) before it is read.
pub fn dump(
    pid: i32,
    fd: i32,
    sock: &OwnedFd,
    repair: &mut TcpRepair,
    journal: Option<&crate::journal::JournalHandle>,
) -> Result<Option<rec::InetSocketState>, CheckpointError> {
    let s = sock.as_raw_fd();
    let what = |w: &str| format!("fd {fd}: {w}");
    let family = opt(s, libc::SOL_SOCKET, SO_DOMAIN).ctx(pid, || what("SO_DOMAIN"))?;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Ok(None);
    }
    let mut st = dump_common(pid, fd, s, family)?;
    dump_options(pid, fd, s, &mut st)?;
    match (st.sock_type, st.protocol) {
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE) => {
            // Bytes appended under UDP_CORK and not sent yet sit in no queue we can read.
            let corked = net::getsockopt_int(s, libc::IPPROTO_UDP, libc::UDP_CORK).unwrap_or(0);
            if corked != 0 && stasis_sys::sys::ioctl_get_int(s, SIOCOUTQ).unwrap_or(0) > 0 {
                return Err(unsupported(
                    pid,
                    fd,
                    &st,
                    "is a UDP socket holding corked data not sent yet (UDP_CORK)".into(),
                ));
            }
            dump_udp_queue(pid, fd, s, &mut st)?;
            dump_shutdown(pid, fd, s, &mut st)?;
        }
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => {
            dump_tcp(pid, fd, sock, &mut st, repair, journal)?
        }
        (libc::SOCK_RAW, _) | (libc::SOCK_DGRAM, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) => {
            dump_raw(pid, fd, s, &mut st)?
        }
        (ty, proto) => {
            return Err(unsupported(
                pid,
                fd,
                &st,
                format!("is an inet socket of type {ty} protocol {proto}"),
            ))
        }
    }
    Ok(Some(st))
}

/// Options beyond the common ones (see [`opt_defs`]), the attached classic BPF filter and its
/// lock.
fn dump_options(pid: i32, fd: i32, s: RawFd, st: &mut rec::InetSocketState) -> Result<(), Failure> {
    crate::sockopt::read(s, crate::sockopt::SOCKET, &mut st.options);
    crate::sockopt::read(s, &opt_defs(st), &mut st.options);
    st.filter = net::get_filter(s).ctx(pid, || format!("fd {fd}: SO_GET_FILTER"))?;
    st.filter_locked = opt(s, libc::SOL_SOCKET, SO_LOCK_FILTER).unwrap_or(0) != 0;
    Ok(())
}

/// A raw or ICMP ("ping") socket: address, options; nothing may be waiting to be read (its
/// packets cannot be put back as they came).
fn dump_raw(
    pid: i32,
    fd: i32,
    s: RawFd,
    st: &mut rec::InetSocketState,
) -> Result<(), CheckpointError> {
    let queued = rmem_alloc(s).ctx(pid, || format!("fd {fd}: SO_MEMINFO"))?;
    if queued > 0 {
        return Err(unsupported(
            pid,
            fd,
            st,
            format!(
                "is a raw or ICMP socket (protocol {}) with packets waiting to be read",
                st.protocol
            ),
        ));
    }
    if st.sock_type == libc::SOCK_RAW {
        dump_shutdown(pid, fd, s, st)?;
    }
    Ok(())
}

/// Bytes in a socket's receive queue (`SO_MEMINFO`, `SK_MEMINFO_RMEM_ALLOC`).
pub(crate) fn rmem_alloc(s: RawFd) -> std::io::Result<u32> {
    let mut m = [0u8; 36];
    net::getsockopt_bytes(s, libc::SOL_SOCKET, SO_MEMINFO, &mut m)?;
    Ok(u32::from_ne_bytes(m[0..4].try_into().expect("4")))
}

/// Shutdown of a datagram or raw socket, which only `inet_diag` tells.
fn dump_shutdown(
    pid: i32,
    fd: i32,
    s: RawFd,
    st: &mut rec::InetSocketState,
) -> Result<(), Failure> {
    let what = || format!("fd {fd}: inet_diag (shutdown state)");
    let ino = std::fs::metadata(format!("/proc/self/fd/{s}"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .ctx(pid, what)?;
    let (proto, raw) = if st.sock_type == libc::SOCK_RAW {
        (libc::IPPROTO_RAW, Some(st.protocol))
    } else {
        (st.protocol, None)
    };
    // A socket of another network namespace than ours is not listed: it cannot tell.
    if let Some(d) = stasis_sys::diag::inet_socket(st.family, proto, raw, ino).ctx(pid, what)? {
        st.shutdown = d.shutdown as u32;
    }
    Ok(())
}

/// The options read back from an inet socket, by family, type and protocol.
fn opt_defs(st: &rec::InetSocketState) -> Vec<crate::sockopt::Def> {
    let mut d: Vec<crate::sockopt::Def> = Vec::new();
    let raw = st.sock_type == libc::SOCK_RAW;
    // Multicast options mean nothing on a stream socket (an accepted one reads the SYN's TTL
    // as its multicast TTL, which cannot be set back).
    let stream = st.sock_type == libc::SOCK_STREAM;
    if st.family == libc::AF_INET || !raw {
        d.extend(
            IP_OPTS
                .iter()
                .filter(|n| !(stream && IP_MULTICAST.contains(n)))
                .map(|&n| (libc::IPPROTO_IP, n, 0)),
        );
    }
    if st.family == libc::AF_INET6 {
        d.extend(
            IPV6_OPTS
                .iter()
                .filter(|n| !(stream && IPV6_MULTICAST.contains(n)))
                .map(|&n| (libc::IPPROTO_IPV6, n, 0)),
        );
    }
    match st.protocol {
        libc::IPPROTO_TCP => {
            d.extend(TCP_OPTS.iter().map(|&n| (libc::IPPROTO_TCP, n, 0)));
            d.push((libc::IPPROTO_TCP, libc::TCP_CONGESTION, 16));
        }
        libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE if !raw => {
            d.extend(UDP_OPTS.iter().map(|&n| (libc::IPPROTO_UDP, n, 0)));
            if st.protocol == libc::IPPROTO_UDPLITE {
                d.push((libc::IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV, 0));
                d.push((libc::IPPROTO_UDPLITE, UDPLITE_RECV_CSCOV, 0));
            }
        }
        libc::IPPROTO_ICMP if raw => d.push((SOL_RAW, ICMP_FILTER, 0)),
        libc::IPPROTO_ICMPV6 if raw => d.push((libc::IPPROTO_ICMPV6, ICMP6_FILTER, 32)),
        _ => {}
    }
    d
}

const SO_LOCK_FILTER: i32 = 44;
const SO_MEMINFO: i32 = 55;
const SOL_RAW: i32 = 255;
const ICMP_FILTER: i32 = 1;
const ICMP6_FILTER: i32 = 1;
const UDPLITE_SEND_CSCOV: i32 = 10;
const UDPLITE_RECV_CSCOV: i32 = 11;

/// IP-level options: IP_HDRINCL, IP_RECVOPTS, IP_RETOPTS, IP_PKTINFO, IP_MTU_DISCOVER,
/// IP_RECVERR, IP_RECVTTL, IP_RECVTOS, IP_FREEBIND, IP_TRANSPARENT, IP_RECVORIGDSTADDR,
/// IP_MINTTL, IP_NODEFRAG, IP_CHECKSUM, IP_BIND_ADDRESS_NO_PORT, IP_RECVFRAGSIZE,
/// IP_RECVERR_RFC4884, IP_MULTICAST_IF, IP_MULTICAST_TTL, IP_MULTICAST_LOOP, IP_MULTICAST_ALL.
const IP_OPTS: &[i32] = &[
    3, 6, 7, 8, 10, 11, 12, 13, 15, 19, 20, 21, 22, 23, 24, 25, 26, 32, 33, 34, 49,
];
/// IP_MULTICAST_IF, _TTL, _LOOP, _ALL.
const IP_MULTICAST: &[i32] = &[32, 33, 34, 49];
/// IPV6_MULTICAST_IF, _HOPS, _LOOP, _ALL.
const IPV6_MULTICAST: &[i32] = &[17, 18, 19, 29];
/// IPv6-level options: IPV6_CHECKSUM, IPV6_MULTICAST_IF, _HOPS, _LOOP, IPV6_MTU_DISCOVER,
/// IPV6_RECVERR, IPV6_MULTICAST_ALL, IPV6_RECVERR_RFC4884, IPV6_RECVPKTINFO,
/// IPV6_RECVHOPLIMIT, IPV6_RECVHOPOPTS, IPV6_RECVRTHDR, IPV6_RECVDSTOPTS, IPV6_RECVPATHMTU,
/// IPV6_DONTFRAG, IPV6_RECVTCLASS, IPV6_AUTOFLOWLABEL, IPV6_ADDR_PREFERENCES,
/// IPV6_MINHOPCOUNT, IPV6_RECVORIGDSTADDR, IPV6_TRANSPARENT, IPV6_RECVFRAGSIZE,
/// IPV6_FREEBIND.
const IPV6_OPTS: &[i32] = &[
    7, 17, 18, 19, 23, 25, 29, 31, 49, 51, 53, 56, 58, 60, 62, 66, 70, 72, 73, 74, 75, 77, 78,
];
/// TCP options: TCP_CORK, TCP_KEEPIDLE, _KEEPINTVL, _KEEPCNT, TCP_SYNCNT, TCP_LINGER2,
/// TCP_DEFER_ACCEPT, TCP_THIN_LINEAR_TIMEOUTS, TCP_USER_TIMEOUT, TCP_FASTOPEN,
/// TCP_NOTSENT_LOWAT, TCP_SAVE_SYN, TCP_FASTOPEN_CONNECT, TCP_FASTOPEN_NO_COOKIE, TCP_INQ,
/// TCP_TX_DELAY. TCP_MAXSEG and TCP_WINDOW_CLAMP are added for sockets without a connection
/// (on a connection they read what the kernel computed).
const TCP_OPTS: &[i32] = &[3, 4, 5, 6, 7, 8, 9, 16, 18, 23, 25, 27, 30, 34, 36, 37];
/// UDP options: UDP_CORK, UDP_NO_CHECK6_TX, UDP_NO_CHECK6_RX, UDP_SEGMENT, UDP_GRO.
const UDP_OPTS: &[i32] = &[1, 101, 102, 103, 104];

fn unsupported(pid: i32, fd: i32, st: &rec::InetSocketState, w: String) -> CheckpointError {
    CheckpointError::Unsupported {
        pid,
        what: format!(
            "fd {fd} ({}) {w}; not supported yet",
            net::addr_string(&st.local)
        ),
    }
}

/// Type, addresses and the socket options every inet socket has.
fn dump_common(pid: i32, fd: i32, s: RawFd, family: i32) -> Result<rec::InetSocketState, Failure> {
    let what = |w: &str| format!("fd {fd}: {w}");
    let int = |level: i32, o: i32, name: &str| opt(s, level, o).ctx(pid, || what(name));
    let mut st = rec::InetSocketState {
        family,
        sock_type: int(libc::SOL_SOCKET, libc::SO_TYPE, "SO_TYPE")?,
        protocol: int(libc::SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL")?,
        local: net::sock_name(s).ctx(pid, || what("getsockname"))?,
        peer: net::peer_name(s)
            .ctx(pid, || what("getpeername"))?
            .unwrap_or_default(),
        reuseaddr: int(libc::SOL_SOCKET, libc::SO_REUSEADDR, "SO_REUSEADDR")? != 0,
        reuseport: int(libc::SOL_SOCKET, libc::SO_REUSEPORT, "SO_REUSEPORT")? != 0,
        broadcast: int(libc::SOL_SOCKET, libc::SO_BROADCAST, "SO_BROADCAST")? != 0,
        keepalive: int(libc::SOL_SOCKET, libc::SO_KEEPALIVE, "SO_KEEPALIVE")? != 0,
        rcvbuf: int(libc::SOL_SOCKET, libc::SO_RCVBUF, "SO_RCVBUF")?,
        sndbuf: int(libc::SOL_SOCKET, libc::SO_SNDBUF, "SO_SNDBUF")?,
        rcvtimeo_us: net::getsockopt_timeval(s, libc::SO_RCVTIMEO)
            .ctx(pid, || what("SO_RCVTIMEO"))?,
        sndtimeo_us: net::getsockopt_timeval(s, libc::SO_SNDTIMEO)
            .ctx(pid, || what("SO_SNDTIMEO"))?,
        peek_off: opt(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1),
        v6only: family == libc::AF_INET6
            && int(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, "IPV6_V6ONLY")? != 0,
        ..Default::default()
    };
    let (ttl_opt, tos_opt) = ip_opts(family);
    st.ttl = int(ttl_opt.0, ttl_opt.1, "IP_TTL")?;
    st.tos = int(tos_opt.0, tos_opt.1, "IP_TOS")?;
    let mut lb = [0u8; 8];
    net::getsockopt_bytes(s, libc::SOL_SOCKET, libc::SO_LINGER, &mut lb)
        .ctx(pid, || what("SO_LINGER"))?;
    st.linger_on = i32::from_ne_bytes(lb[0..4].try_into().expect("4")) != 0;
    st.linger_secs = i32::from_ne_bytes(lb[4..8].try_into().expect("4"));
    Ok(st)
}

/// The datagrams queued on a UDP socket, copied without consuming them (peek offset 0, then
/// put back).
fn dump_udp_queue(
    pid: i32,
    fd: i32,
    s: RawFd,
    st: &mut rec::InetSocketState,
) -> Result<(), Failure> {
    let what = |w: &str| format!("fd {fd}: {w}");
    net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
        .ctx(pid, || what("SO_PEEK_OFF"))?;
    let res = (|| -> Result<(), Failure> {
        while let Some((data, from)) =
            net::peek_datagram(s, 65536).ctx(pid, || what("peeking queued datagrams"))?
        {
            st.queue.push(rec::InetDatagram { data, from });
        }
        Ok(())
    })();
    let _ = net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, st.peek_off);
    res
}

/// A TCP socket: a connection (repaired), a listener with an empty accept queue, or a socket
/// never connected.
fn dump_tcp(
    pid: i32,
    fd: i32,
    sock: &OwnedFd,
    st: &mut rec::InetSocketState,
    repair: &mut TcpRepair,
    journal: Option<&crate::journal::JournalHandle>,
) -> Result<(), CheckpointError> {
    let s = sock.as_raw_fd();
    let what = |w: &str| format!("fd {fd}: {w}");
    st.nodelay =
        opt(s, libc::IPPROTO_TCP, libc::TCP_NODELAY).ctx(pid, || what("TCP_NODELAY"))? != 0;
    let info = tcp_info(s).ctx(pid, || what("TCP_INFO"))?;
    let state = info[0];
    // ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING.
    if matches!(state, 1 | 4 | 5 | 8 | 9 | 11) {
        return repair_connection(pid, fd, sock, st, &info, repair, journal);
    }
    if state != TCP_INFO_STATE_LISTEN {
        if st.peer.is_empty() && state == 7 {
            // Never connected nor listening (only its address matters), or a connection that
            // is over: then it was shut down both ways (the kernel says so on poll).
            let ev = net::poll_now(s, libc::POLLRDHUP).ctx(pid, || what("poll"))?;
            if ev & libc::POLLRDHUP != 0 {
                let unread = stasis_sys::sys::fionread(s).ctx(pid, || what("FIONREAD"))?;
                if unread > 0 {
                    return Err(unsupported(
                        pid,
                        fd,
                        st,
                        format!("is a closed TCP connection with {unread} bytes never read"),
                    ));
                }
                st.tcp_closed = true;
            } else {
                user_mss(s, st);
            }
            return Ok(());
        }
        return Err(unsupported(
            pid,
            fd,
            st,
            format!(
                "is a TCP connection to {} in state {state} (being opened, or in TIME_WAIT)",
                net::addr_string(&st.peer)
            ),
        ));
    }
    // For a listener, tcpi_unacked is the accept-queue length, tcpi_sacked the backlog.
    let unacked = u32::from_ne_bytes(info[24..28].try_into().expect("4 bytes"));
    let sacked = u32::from_ne_bytes(info[28..32].try_into().expect("4 bytes"));
    if unacked > 0 {
        return Err(unsupported(
            pid,
            fd,
            st,
            format!("is a TCP listener with {unacked} connection(s) waiting to be accepted"),
        ));
    }
    st.listening = true;
    st.backlog = sacked;
    user_mss(s, st);
    Ok(())
}

/// The MSS and window clamp a user set on a socket without a connection (on one that had a
/// connection they read what the kernel chose, which cannot always be set back).
fn user_mss(s: RawFd, st: &mut rec::InetSocketState) {
    crate::sockopt::read(
        s,
        &[
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG, 0),
            (libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, 0),
        ],
        &mut st.options,
    );
}

/// An established (or closing) connection: journaled, locked in the network lock, put in
/// repair mode (kept in `repair`, which undoes all of it if the checkpoint fails), then read.
fn repair_connection(
    pid: i32,
    fd: i32,
    sock: &OwnedFd,
    st: &mut rec::InetSocketState,
    info: &[u8],
    repair: &mut TcpRepair,
    journal: Option<&crate::journal::JournalHandle>,
) -> Result<(), CheckpointError> {
    let s = sock.as_raw_fd();
    let what = |w: &str| format!("fd {fd}: {w}");
    let state = info[0];
    let (lip, lport) =
        ip_port(&st.local).ok_or_else(|| Failure::msg(pid, what("bad local address")))?;
    let (rip, rport) =
        ip_port(&st.peer).ok_or_else(|| Failure::msg(pid, what("bad peer address")))?;
    let conn = crate::netlock::Conn {
        family: st.family,
        local: lip,
        lport,
        remote: rip,
        rport,
    };
    if let Some(j) = journal {
        j.tcp_repair(pid, fd, &repair.lock.table)
            .ctx(pid, || what("recovery journal"))?;
    }
    repair
        .lock
        .add(&conn)
        .ctx(pid, || what("network lock (nftables)"))?;
    net::setsockopt_int(s, libc::IPPROTO_TCP, TCP_REPAIR, 1)
        .ctx(pid, || what("TCP_REPAIR (needs CAP_NET_ADMIN)"))?;
    repair.socks.push((
        sock.try_clone().ctx(pid, || what("dup"))?,
        st.reuseaddr as i32,
    ));
    let mut t =
        dump_tcp_conn(s, info).ctx(pid, || what("reading the connection in repair mode"))?;
    t.fin_sent = matches!(state, 4 | 5 | 9 | 11);
    t.fin_received = matches!(state, 8 | 9 | 11);
    st.tcp = Some(t);
    Ok(())
}

/// (level, option) of the TTL/hop limit and TOS/traffic class for a family.
fn ip_opts(family: i32) -> ((i32, i32), (i32, i32)) {
    if family == libc::AF_INET6 {
        (
            (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS),
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS),
        )
    } else {
        (
            (libc::IPPROTO_IP, libc::IP_TTL),
            (libc::IPPROTO_IP, libc::IP_TOS),
        )
    }
}

fn tcp_info(s: RawFd) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; 256];
    let n = stasis_sys::net::getsockopt_bytes(s, libc::IPPROTO_TCP, libc::TCP_INFO, &mut b)?;
    b.truncate(n);
    if b.len() < 32 {
        return Err(std::io::Error::other("TCP_INFO too short"));
    }
    Ok(b)
}

// ---------------------------------------------------------------------------------------------
// Restore side.

/// Run `op` again while it fails with EADDRINUSE, for up to [`IN_USE_WAIT`]: the sockets of a
/// tree killed by its checkpoint are torn down by the kernel as its processes exit, and a
/// restore right after may find their address not yet released.
pub(crate) fn retry_in_use(mut op: impl FnMut() -> std::io::Result<()>) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + IN_USE_WAIT;
    loop {
        match op() {
            Err(e)
                if e.raw_os_error() == Some(libc::EADDRINUSE)
                    && std::time::Instant::now() < deadline =>
            {
                tracing::debug!("address still in use; trying again");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// How long a restore waits for an address still held by a socket being torn down.
/// (Bounded generously: on a loaded machine the exit of a killed tree can take seconds, and
/// the wait costs nothing when the address is free.)
const IN_USE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Recreate an established connection in repair mode: sequence numbers, queues, options,
/// window; it comes up established without a handshake, and the peer goes on.
fn restore_tcp_conn(
    fd: RawFd,
    u: &rec::InetSocketState,
    t: &rec::TcpConnState,
) -> std::io::Result<()> {
    let set = |o: i32, v: i32| net::setsockopt_int(fd, libc::IPPROTO_TCP, o, v);
    set(TCP_REPAIR, 1)?;
    set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    // Room for the send queue whatever the saved buffer size (a side that filled its buffer
    // would otherwise block on its own unsent bytes); the saved size is set again at the end.
    let room = t.send_queue.len() as i32 * 4 + (1 << 20);
    set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, room)?;
    // A FIN takes a sequence number: the connection is rebuilt as established, then this
    // side's FIN is sent again (after restore) and the peer's comes from the peer (in the tree).
    let snd_end = t.snd_seq.wrapping_sub(t.fin_sent as u32);
    let rcv_end = t.rcv_seq.wrapping_sub(t.fin_received as u32);
    set(TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
    set(
        TCP_QUEUE_SEQ,
        snd_end.wrapping_sub(t.send_queue.len() as u32) as i32,
    )?;
    set(TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
    set(
        TCP_QUEUE_SEQ,
        rcv_end.wrapping_sub(t.recv_queue.len() as u32) as i32,
    )?;
    retry_in_use(|| net::bind_raw(fd, &u.local))?;
    retry_in_use(|| net::connect_raw(fd, &u.peer))?;
    let mut opts: Vec<(u32, u32)> = vec![(2, t.mss)];
    if t.snd_wscale != 0 || t.rcv_wscale != 0 {
        opts.push((3, t.snd_wscale | (t.rcv_wscale << 16)));
    }
    if t.sack {
        opts.push((4, 0));
    }
    if t.timestamps {
        opts.push((8, 0));
    }
    let bytes: Vec<u8> = opts
        .iter()
        .flat_map(|(c, v)| [c.to_ne_bytes(), v.to_ne_bytes()].concat())
        .collect();
    net::setsockopt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_OPTIONS, &bytes)?;
    if t.timestamps {
        set(TCP_TIMESTAMP, t.timestamp as i32)?;
    }
    if !t.recv_queue.is_empty() {
        set(TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
        net::send_repair(fd, &t.recv_queue)?;
    }
    let sent = t.send_queue.len().saturating_sub(t.unsent as usize);
    if sent > 0 {
        set(TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
        net::send_repair(fd, &t.send_queue[..sent])?;
    }
    if t.window.len() == 5 {
        // The window refers to the peer's FIN too when it was received: keep rcv_wup and
        // snd_wl1 within what the rebuilt connection has received (the kernel checks).
        let mut win = t.window.clone();
        let after = |a: u32, b: u32| (a.wrapping_sub(b) as i32) > 0;
        if after(win[4], rcv_end) {
            win[4] = rcv_end;
        }
        if after(win[0], rcv_end.wrapping_add(win[3])) {
            win[0] = rcv_end;
        }
        let w: Vec<u8> = win.iter().flat_map(|v| v.to_ne_bytes()).collect();
        net::setsockopt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &w)?;
    }
    set(TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)?;
    if t.unsent > 0 {
        net::send_all_stream(fd, &t.send_queue[sent..])?;
    }
    if u.sndbuf > 0 {
        set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, u.sndbuf / 2)?;
    }

    set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, u.reuseaddr as i32)?;
    if t.keepalive.len() == 3 {
        set(libc::TCP_KEEPIDLE, t.keepalive[0])?;
        set(libc::TCP_KEEPINTVL, t.keepalive[1])?;
        set(libc::TCP_KEEPCNT, t.keepalive[2])?;
    }
    Ok(())
}

fn set_int(s: RawFd, level: i32, o: i32, v: i32) -> std::io::Result<()> {
    net::setsockopt_int(s, level, o, v)
}

/// Create every inet socket of the image (bound, connected or listening).
pub fn create_all(img: &rec::Checkpoint) -> Result<HashMap<u32, OwnedFd>, Failure> {
    let mut out = HashMap::new();
    // Established connections first: they are bound in repair mode (forced reuse), which a
    // listener already holding the same port would refuse.
    let mut order: Vec<&rec::FileObject> =
        img.files.iter().filter(|f| f.inet().is_some()).collect();
    order.sort_by_key(|f| f.inet().is_some_and(|u| u.tcp.is_none()));
    for f in order {
        let Some(u) = f.inet() else { continue };
        let what = || {
            format!(
                "socket {} (open file description #{})",
                net::addr_string(&u.local),
                f.id
            )
        };
        let s = new_socket(u).ctx(0, what)?;
        let fd = s.as_raw_fd();
        (|| -> std::io::Result<()> {
            if u.reuseaddr {
                set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            }
            if u.reuseport {
                set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
            }
            if u.broadcast {
                set_int(fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1)?;
            }
            if u.keepalive {
                set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
            }
            if u.nodelay {
                set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
            }
            // (Only when it differs: a raw socket, bound to its protocol, refuses any change.)
            if u.family == libc::AF_INET6
                && net::getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)?
                    != u.v6only as i32
            {
                set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, u.v6only as i32)?;
            }
            if u.rcvbuf > 0 {
                set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, u.rcvbuf / 2)?;
            }
            if u.sndbuf > 0 {
                set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, u.sndbuf / 2)?;
            }
            if u.rcvtimeo_us != 0 {
                net::setsockopt_timeval(fd, libc::SO_RCVTIMEO, u.rcvtimeo_us)?;
            }
            let (ttl_opt, tos_opt) = ip_opts(u.family);
            if u.ttl > 0 {
                set_int(fd, ttl_opt.0, ttl_opt.1, u.ttl)?;
            }
            if u.tos > 0 {
                set_int(fd, tos_opt.0, tos_opt.1, u.tos)?;
            }
            if u.linger_on {
                net::set_linger(fd, u.linger_secs)?;
            }
            if u.sndtimeo_us != 0 {
                net::setsockopt_timeval(fd, libc::SO_SNDTIMEO, u.sndtimeo_us)?;
            }
            crate::sockopt::apply(fd, &u.options)
        })()
        .ctx(0, || format!("{}: socket options", what()))?;
        if let Some(t) = &u.tcp {
            restore_tcp_conn(fd, u, t).ctx(0, || {
                format!(
                    "{}: TCP connection to {} (repair)",
                    what(),
                    net::addr_string(&u.peer)
                )
            })?;
            out.insert(f.id, s);
            continue;
        }
        if u.tcp_closed {
            restore_closed(fd, u).ctx(0, || format!("{}: closed connection", what()))?;
            out.insert(f.id, s);
            continue;
        }
        if is_bound(u) {
            retry_in_use(|| net::bind_raw(fd, &u.local))
                .ctx(0, || format!("{}: bind (is the port free?)", what()))?;
        }
        if u.listening {
            net::listen(fd, u.backlog.max(1) as i32).ctx(0, || format!("{}: listen", what()))?;
        } else if !u.peer.is_empty() {
            net::connect_raw(fd, &u.peer).ctx(0, || {
                format!("{}: connect to {}", what(), net::addr_string(&u.peer))
            })?;
        }
        out.insert(f.id, s);
    }
    // Queued datagrams, sent again by their sender when it is one of ours.
    let by_local: HashMap<Vec<u8>, u32> = img
        .files
        .iter()
        .filter_map(|f| f.inet().map(|u| (u.local.clone(), f.id)))
        .collect();
    for f in &img.files {
        let Some(u) = f.inet() else { continue };
        for d in &u.queue {
            let sender = by_local.get(&d.from).and_then(|id| out.get(id));
            let res = match sender {
                Some(s) => net::sendto_raw(s.as_raw_fd(), &d.data, &u.local),
                None => {
                    let tmp = net::socket(u.family, libc::SOCK_DGRAM, u.protocol)
                        .ctx(0, || "temporary socket".into())?;
                    net::sendto_raw(tmp.as_raw_fd(), &d.data, &u.local)
                }
            };
            res.ctx(0, || {
                format!(
                    "socket {}: re-queueing a {}-byte datagram",
                    net::addr_string(&u.local),
                    d.data.len()
                )
            })?;
        }
        if u.peek_off >= 0 {
            let s = out[&f.id].as_raw_fd();
            net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, u.peek_off)
                .ctx(0, || "SO_PEEK_OFF".into())?;
        }
        finish_socket(out[&f.id].as_raw_fd(), u).ctx(0, || {
            format!(
                "socket {} (open file description #{}): filter or shutdown",
                net::addr_string(&u.local),
                f.id
            )
        })?;
    }
    Ok(out)
}

/// A TCP socket whose connection is over: bound to its address in repair mode (its port may
/// still be held by the peer's TIME_WAIT, which a closed socket does not conflict with), then
/// shut down both ways — on a socket in state CLOSE the kernel answers ENOTCONN but sets the
/// shutdown, so reads give end of file and writes EPIPE, as before.
fn restore_closed(fd: RawFd, u: &rec::InetSocketState) -> std::io::Result<()> {
    if is_bound(u) {
        net::setsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR, 1)?;
        let bound = retry_in_use(|| net::bind_raw(fd, &u.local));
        net::setsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR, 0)?;
        bound?;
        set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, u.reuseaddr as i32)?;
    }
    match net::shutdown(fd, libc::SHUT_RDWR) {
        Err(e) if e.raw_os_error() != Some(libc::ENOTCONN) => Err(e),
        _ => Ok(()),
    }
}

/// What comes once the queue is refilled: the filter (which could have refused a datagram
/// put back), its lock, and the shutdown of a datagram socket.
fn finish_socket(s: RawFd, u: &rec::InetSocketState) -> std::io::Result<()> {
    if !u.filter.is_empty() {
        net::attach_filter(s, &u.filter)?;
    }
    if u.filter_locked {
        set_int(s, libc::SOL_SOCKET, SO_LOCK_FILTER, 1)?;
    }
    if u.shutdown != 0 && u.tcp.is_none() {
        let how = match u.shutdown & 3 {
            1 => libc::SHUT_RD,
            2 => libc::SHUT_WR,
            _ => libc::SHUT_RDWR,
        };
        // An unconnected datagram socket answers ENOTCONN but is shut down all the same.
        match net::shutdown(s, how) {
            Err(e) if e.raw_os_error() != Some(libc::ENOTCONN) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Whether the socket had an address of its own: a port (a raw socket's "port" is its
/// protocol) or an address.
fn is_bound(u: &rec::InetSocketState) -> bool {
    let port = u.local.len() >= 4 && u.local[2..4] != [0, 0];
    let addr = match u.family {
        libc::AF_INET => u.local.get(4..8),
        _ => u.local.get(8..24),
    };
    let addr = addr.is_some_and(|a| a.iter().any(|&b| b != 0));
    if u.sock_type == libc::SOCK_RAW {
        addr
    } else {
        port || addr
    }
}

/// A new socket like `u`. An ICMP ("ping") socket may only be made by a group within
/// `net.ipv4.ping_group_range`: if ours is not, the range is widened to our group for the
/// call and put back.
fn new_socket(u: &rec::InetSocketState) -> std::io::Result<OwnedFd> {
    let ping = u.sock_type == libc::SOCK_DGRAM
        && matches!(u.protocol, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6);
    match net::socket(u.family, u.sock_type, u.protocol) {
        Err(e) if ping && e.raw_os_error() == Some(libc::EACCES) => {
            const RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";
            let old = std::fs::read_to_string(RANGE)?;
            let gid = stasis_sys::sys::getegid();
            std::fs::write(RANGE, format!("{gid} {gid}"))?;
            let r = net::socket(u.family, u.sock_type, u.protocol);
            let put_back = std::fs::write(RANGE, old.trim());
            let s = r?;
            put_back?;
            Ok(s)
        }
        r => r,
    }
}

/// Whether the peer of connection `u` is a socket of the tree too (among `files`).
pub fn peer_inside(files: &[rec::FileObject], u: &rec::InetSocketState) -> bool {
    files.iter().any(|g| {
        g.inet()
            .is_some_and(|v| v.tcp.is_some() && v.local == u.peer && v.peer == u.local)
    })
}

/// Restore, once every socket exists again, is out of repair mode and the network lock is
/// gone: replay into each connection the FIN its peer outside the tree had sent, then shut
/// down for writing each side that had (the peer in the tree gets that FIN now; a peer outside
/// sees a duplicate and acknowledges it). `files`: open file description id → our socket.
pub fn replay_fins(img: &rec::Checkpoint, files: &HashMap<u32, OwnedFd>) -> Result<(), Failure> {
    // The FINs go out in the order they went at first: sides that shut down before their peer
    // did (FIN_WAIT1 and CLOSING first: a CLOSING side's FIN must be on its way before its
    // peer's arrives; then FIN_WAIT2), then the FINs of peers outside the tree, then the sides
    // that shut down after their peer (LAST_ACK).
    let conns: Vec<(u32, &rec::InetSocketState, &rec::TcpConnState)> = img
        .files
        .iter()
        .filter_map(|f| f.inet().and_then(|u| u.tcp.as_ref().map(|t| (f.id, u, t))))
        .collect();
    let shut = |phase: u8| -> Result<(), Failure> {
        for &(id, _, t) in &conns {
            let p = match t.state {
                4 | 11 => 0,
                0 if !t.fin_received => 1,
                5 => 1,
                _ => 3,
            };
            if !t.fin_sent || p != phase {
                continue;
            }
            if let Some(s) = files.get(&id) {
                net::shutdown(s.as_raw_fd(), libc::SHUT_WR).ctx(0, || {
                    format!(
                        "open file description #{id}: shutdown(SHUT_WR) of a half-closed connection"
                    )
                })?;
            }
        }
        Ok(())
    };
    shut(0)?;
    shut(1)?;
    for &(id, u, t) in &conns {
        if !t.fin_received || peer_inside(&img.files, u) {
            continue;
        }
        if let Some(s) = files.get(&id) {
            inject_peer_fin(s.as_raw_fd(), u, t)?;
        }
    }
    shut(3)
}

/// Give a restored connection the FIN its peer outside the tree had sent: a FIN+ACK segment
/// from the peer's address, at the FIN's sequence number, injected through a raw socket (the
/// network lock must be gone). Waits until the socket has taken it (CLOSE_WAIT and later).
pub fn inject_peer_fin(
    sock: RawFd,
    u: &rec::InetSocketState,
    t: &rec::TcpConnState,
) -> Result<(), Failure> {
    let what = || {
        format!(
            "TCP connection {} ↔ {}: replaying the peer's FIN",
            net::addr_string(&u.local),
            net::addr_string(&u.peer)
        )
    };
    let (Some((lip, lport)), Some((pip, pport))) = (ip_port(&u.local), ip_port(&u.peer)) else {
        return Err(Failure::msg(0, format!("{}: bad addresses", what())));
    };
    let rcv_end = t.rcv_seq.wrapping_sub(1);
    let snd_end = t.snd_seq.wrapping_sub(t.fin_sent as u32);
    let sent = t.send_queue.len().saturating_sub(t.unsent as usize) as u32;
    let ack = snd_end.wrapping_sub(t.unsent).wrapping_sub(sent);
    let window = t
        .window
        .get(1)
        .map(|w| (w >> t.snd_wscale.min(14)).min(0xffff) as u16)
        .unwrap_or(0xffff);
    // An IPv6 socket with IPv4-mapped addresses talks IPv4 on the wire.
    let as_v4 = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    match (as_v4(lip), as_v4(pip), lip, pip) {
        (Some(l4), Some(p4), ..) => {
            let local = std::net::SocketAddrV4::new(l4, lport);
            let peer = std::net::SocketAddrV4::new(p4, pport);
            let pkt = net::tcp_segment_v4(peer, local, rcv_end, ack, 0x11, window);
            net::send_raw_v4(&pkt, l4).ctx(0, what)?;
        }
        (_, _, std::net::IpAddr::V6(l6), std::net::IpAddr::V6(p6)) => {
            let local = std::net::SocketAddrV6::new(l6, lport, 0, 0);
            let peer = std::net::SocketAddrV6::new(p6, pport, 0, 0);
            let pkt = net::tcp_segment_v6(peer, local, rcv_end, ack, 0x11, window);
            net::send_raw_v6(&pkt, l6).ctx(0, what)?;
        }
        _ => {
            return Err(Failure::msg(
                0,
                format!("{}: mixed address families", what()),
            ))
        }
    }
    let start = std::time::Instant::now();
    loop {
        let info = tcp_info(sock).ctx(0, what)?;
        if matches!(info[0], 8 | 9 | 11) {
            return Ok(());
        }
        if start.elapsed() > std::time::Duration::from_secs(2) {
            return Err(Failure::msg(
                0,
                format!("{}: the socket did not take it (state {})", what(), info[0]),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// IPv4/IPv6 sockets (UDP, TCP listeners and connections).
pub(crate) struct InetKind;

impl ObjectKind for InetKind {
    fn name(&self) -> &'static str {
        "inet socket"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::InetSocket]
    }

    /// Before the unix kind in the registry: any socket that is not a unix one.
    fn recognise(&self, t: &FileTable, p: &Probe) -> bool {
        p.sock_ino.is_some_and(|ino| !t.is_unix(ino))
    }

    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        let sock = t.borrow(p.pid, p.fd)?;
        let repair = t.tcp.get_or_insert_with(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            TcpRepair::new(&format!(
                "{:x}_{:x}",
                stasis_sys::sys::getpid(),
                nanos & 0xffff_ffff
            ))
        });
        match dump(p.pid, p.fd, &sock, repair, t.journal.as_ref())? {
            Some(st) => {
                fo.kind = FileKind::InetSocket as i32;
                fo.file_id = None;
                fo.state = Some(rec::file_object::State::Inet(st));
                Ok(Vec::new())
            }
            None => Err(p.unsupported(
                "a socket of a family not supported yet (not unix, IPv4/IPv6, netlink nor packet)",
            )),
        }
    }

    fn create(&self, _: &mut Opened, cx: &mut RestoreCtx<'_>) -> Result<(), Failure> {
        let made = create_all(cx.img)?;
        cx.made.extend(made);
        Ok(())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        cx: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        cx.take_made(f, "socket was not recreated")
    }

    /// The FIN of each side that had shut down for writing is sent again.
    fn network_open(&self, img: &rec::Checkpoint, o: &Opened) -> Result<(), Failure> {
        replay_fins(img, &o.files)
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        let Some(u) = f.inet() else {
            return "inet socket".into();
        };
        let proto = match (u.sock_type, u.protocol) {
            (libc::SOCK_RAW, p) => format!("raw (protocol {p})"),
            (_, libc::IPPROTO_TCP) => "tcp".into(),
            (_, libc::IPPROTO_UDPLITE) => "udplite".into(),
            (_, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) => "icmp (ping)".into(),
            _ => "udp".into(),
        };
        let local = net::addr_string(&u.local);
        match (&u.tcp, u.listening) {
            (Some(t), _) => format!(
                "{proto} {local} ↔ {} established (repair: {} bytes to send, {} received unread)",
                net::addr_string(&u.peer),
                t.send_queue.len(),
                t.recv_queue.len()
            ),
            (None, true) => format!("{proto} {local} listening"),
            (None, false) if u.tcp_closed => format!("{proto} {local} closed (connection over)"),
            (None, false) if !u.peer.is_empty() => format!(
                "{proto} {local} → {}, {} datagram(s) queued",
                net::addr_string(&u.peer),
                u.queue.len()
            ),
            _ => format!("{proto} {local}, {} datagram(s) queued", u.queue.len()),
        }
    }
}
