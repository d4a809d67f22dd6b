//! IPv4/IPv6 sockets: UDP sockets and listening TCP sockets.
//!
//! ## Dump
//! The socket is borrowed with `pidfd_getfd`; `SO_DOMAIN`, `SO_TYPE`, `SO_PROTOCOL`,
//! `SO_ACCEPTCONN`, `getsockname`/`getpeername` and the options users set are read from it. UDP
//! datagrams queued for reading are copied without being consumed (`SO_PEEK_OFF` = 0, then
//! `recvfrom(MSG_PEEK)` until empty, then the offset is put back), each with its sender. A TCP
//! listener whose accept queue is empty is kept; an established TCP connection or a listener
//! with connections waiting to be accepted is refused for now (TCP_REPAIR comes next).
//!
//! ## Restore
//! The socket is created with the same family, type and protocol, its options set, bound to its
//! address (`SO_REUSEADDR` as saved) and connected (UDP) or made to listen (TCP) again. Queued
//! datagrams are sent again to it: by the image's own socket bound to the sender's address
//! (the sender is kept), otherwise from a temporary socket (the sender's port is not kept).

use crate::error::{CheckpointError, Ctx, Failure};
use stasis_image::records as rec;
use stasis_sys::net;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

const SO_DOMAIN: i32 = 39;
const SO_PROTOCOL: i32 = 38;
const TCP_INFO_STATE_LISTEN: u8 = 10;

fn opt(s: RawFd, level: i32, o: i32) -> std::io::Result<i32> {
    net::getsockopt_int(s, level, o)
}

/// Dump a borrowed inet socket. `None`: not an inet socket.
pub fn dump(
    pid: i32,
    fd: i32,
    sock: &OwnedFd,
) -> Result<Option<rec::InetSocketState>, CheckpointError> {
    let s = sock.as_raw_fd();
    let what = |w: &str| format!("fd {fd}: {w}");
    let family = opt(s, libc::SOL_SOCKET, SO_DOMAIN).ctx(pid, || what("SO_DOMAIN"))?;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Ok(None);
    }
    let sock_type = opt(s, libc::SOL_SOCKET, libc::SO_TYPE).ctx(pid, || what("SO_TYPE"))?;
    let protocol = opt(s, libc::SOL_SOCKET, SO_PROTOCOL).ctx(pid, || what("SO_PROTOCOL"))?;
    let local = net::sock_name(s).ctx(pid, || what("getsockname"))?;
    let unsupported = |w: String| CheckpointError::Unsupported {
        pid,
        what: format!(
            "fd {fd} ({}) {w}; not supported yet",
            net::addr_string(&local)
        ),
    };
    let mut st = rec::InetSocketState {
        family,
        sock_type,
        protocol,
        listening: false,
        local: local.clone(),
        peer: net::peer_name(s)
            .ctx(pid, || what("getpeername"))?
            .unwrap_or_default(),
        backlog: 0,
        queue: Vec::new(),
        reuseaddr: opt(s, libc::SOL_SOCKET, libc::SO_REUSEADDR)
            .ctx(pid, || what("SO_REUSEADDR"))?
            != 0,
        reuseport: opt(s, libc::SOL_SOCKET, libc::SO_REUSEPORT)
            .ctx(pid, || what("SO_REUSEPORT"))?
            != 0,
        broadcast: opt(s, libc::SOL_SOCKET, libc::SO_BROADCAST)
            .ctx(pid, || what("SO_BROADCAST"))?
            != 0,
        keepalive: opt(s, libc::SOL_SOCKET, libc::SO_KEEPALIVE)
            .ctx(pid, || what("SO_KEEPALIVE"))?
            != 0,
        nodelay: false,
        rcvbuf: opt(s, libc::SOL_SOCKET, libc::SO_RCVBUF).ctx(pid, || what("SO_RCVBUF"))?,
        sndbuf: opt(s, libc::SOL_SOCKET, libc::SO_SNDBUF).ctx(pid, || what("SO_SNDBUF"))?,
        rcvtimeo_us: net::getsockopt_timeval(s, libc::SO_RCVTIMEO)
            .ctx(pid, || what("SO_RCVTIMEO"))?,
        sndtimeo_us: net::getsockopt_timeval(s, libc::SO_SNDTIMEO)
            .ctx(pid, || what("SO_SNDTIMEO"))?,
        peek_off: opt(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1),
        v6only: family == libc::AF_INET6
            && opt(s, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).ctx(pid, || what("IPV6_V6ONLY"))? != 0,
        ttl: 0,
        tos: 0,
        linger_on: false,
        linger_secs: 0,
    };
    let (ttl_opt, tos_opt) = ip_opts(family);
    st.ttl = opt(s, ttl_opt.0, ttl_opt.1).ctx(pid, || what("IP_TTL"))?;
    st.tos = opt(s, tos_opt.0, tos_opt.1).ctx(pid, || what("IP_TOS"))?;
    let mut lb = [0u8; 8];
    net::getsockopt_bytes(s, libc::SOL_SOCKET, libc::SO_LINGER, &mut lb)
        .ctx(pid, || what("SO_LINGER"))?;
    st.linger_on = i32::from_ne_bytes(lb[0..4].try_into().expect("4")) != 0;
    st.linger_secs = i32::from_ne_bytes(lb[4..8].try_into().expect("4"));
    match (sock_type, protocol) {
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => {
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
            res?;
        }
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => {
            st.nodelay =
                opt(s, libc::IPPROTO_TCP, libc::TCP_NODELAY).ctx(pid, || what("TCP_NODELAY"))? != 0;
            let info = tcp_info(s).ctx(pid, || what("TCP_INFO"))?;
            let state = info[0];
            if state != TCP_INFO_STATE_LISTEN {
                if st.peer.is_empty() && state == 7 {
                    // A TCP socket never connected nor listening: only its address matters.
                    return Ok(Some(st));
                }
                return Err(unsupported(format!(
                    "is a TCP connection to {} (state {state})",
                    net::addr_string(&st.peer)
                )));
            }
            // For a listener, tcpi_unacked is the accept-queue length, tcpi_sacked the backlog.
            let unacked = u32::from_ne_bytes(info[24..28].try_into().expect("4 bytes"));
            let sacked = u32::from_ne_bytes(info[28..32].try_into().expect("4 bytes"));
            if unacked > 0 {
                return Err(unsupported(format!(
                    "is a TCP listener with {unacked} connection(s) waiting to be accepted"
                )));
            }
            st.listening = true;
            st.backlog = sacked;
        }
        _ => {
            return Err(unsupported(format!(
                "is an inet socket of type {sock_type} protocol {protocol}"
            )));
        }
    }
    Ok(Some(st))
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

fn set_int(s: RawFd, level: i32, o: i32, v: i32) -> std::io::Result<()> {
    net::setsockopt_int(s, level, o, v)
}

/// Create every inet socket of the image (bound, connected or listening).
pub fn create_all(img: &rec::Checkpoint) -> Result<HashMap<u32, OwnedFd>, Failure> {
    let mut out = HashMap::new();
    for f in &img.files {
        let Some(u) = &f.inet else { continue };
        let what = || {
            format!(
                "socket {} (open file description #{})",
                net::addr_string(&u.local),
                f.id
            )
        };
        let s = net::socket(u.family, u.sock_type, u.protocol).ctx(0, what)?;
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
            if u.family == libc::AF_INET6 {
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
            Ok(())
        })()
        .ctx(0, || format!("{}: socket options", what()))?;
        let bound = u.local.len() >= 4 && u.local[2..4] != [0, 0];
        if bound {
            net::bind_raw(fd, &u.local)
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
        .filter_map(|f| f.inet.as_ref().map(|u| (u.local.clone(), f.id)))
        .collect();
    for f in &img.files {
        let Some(u) = &f.inet else { continue };
        for d in &u.queue {
            let sender = by_local.get(&d.from).and_then(|id| out.get(id));
            let res = match sender {
                Some(s) => net::sendto_raw(s.as_raw_fd(), &d.data, &u.local),
                None => {
                    let tmp = net::socket(u.family, libc::SOCK_DGRAM, libc::IPPROTO_UDP)
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
    }
    Ok(out)
}
