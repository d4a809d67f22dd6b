//! `sock_diag` over netlink: what the kernel knows about sockets that no syscall on the socket
//! itself tells, above all the *peer* of a unix socket and the pending connections of a
//! listener (`UNIX_DIAG_PEER`, `UNIX_DIAG_ICONS`).
//!
//! One dump request (`SOCK_DIAG_BY_FAMILY`, `NLM_F_DUMP`) lists every unix socket of our network
//! namespace; the answer is parsed with bounds checks on every length.

use crate::{check, last_err};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;

/// What `UNIX_DIAG` says about one unix socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixDiag {
    /// Socket inode (as in `socket:[INO]`).
    pub ino: u32,
    /// SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET.
    pub sock_type: u8,
    /// TCP-like state: 1 established, 7 close (unconnected), 10 listen.
    pub state: u8,
    /// Bound name: a path, or "@…" for the abstract namespace (NUL first byte); None if unbound.
    pub name: Option<Vec<u8>>,
    /// Inode and device of the bound path's socket file.
    pub vfs: Option<(u32, u32)>,
    /// Peer socket inode (0: none).
    pub peer: u32,
    /// Pending (not yet accepted) connections of a listener: their inodes.
    pub icons: Vec<u32>,
    /// Receive queue length (bytes for stream, or pending connections for a listener), send
    /// queue length.
    pub rqlen: Option<(u32, u32)>,
    /// Shutdown bits (1 = RCV, 2 = SEND).
    pub shutdown: u8,
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

/// Parse one `unix_diag_msg` payload with its attributes.
pub fn parse_unix_diag(p: &[u8]) -> Option<UnixDiag> {
    // struct unix_diag_msg: family u8, type u8, state u8, pad u8, ino u32, cookie[2] u32
    if p.len() < 16 {
        return None;
    }
    let mut d = UnixDiag {
        sock_type: p[1],
        state: p[2],
        ino: u32_at(p, 4)?,
        ..Default::default()
    };
    let mut off = 16;
    while off + 4 <= p.len() {
        let len = u16_at(p, off)? as usize;
        let ty = u16_at(p, off + 2)?;
        if len < 4 || off + len > p.len() {
            break;
        }
        let data = &p[off + 4..off + len];
        match ty {
            0 => {
                // A path name may come with its terminating NUL (and padding): cut there. An
                // abstract name (first byte NUL) keeps every byte.
                let mut n = data.to_vec();
                if n.first().is_some_and(|&b| b != 0) {
                    if let Some(p) = n.iter().position(|&b| b == 0) {
                        n.truncate(p);
                    }
                }
                d.name = Some(n);
            }
            1 => d.vfs = Some((u32_at(data, 0)?, u32_at(data, 4)?)),
            2 => d.peer = u32_at(data, 0)?,
            3 => d.icons = data.chunks_exact(4).filter_map(|c| u32_at(c, 0)).collect(),
            4 => d.rqlen = Some((u32_at(data, 0)?, u32_at(data, 4)?)),
            6 => d.shutdown = *data.first()?,
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Some(d)
}

/// Every unix socket of our network namespace.
pub fn unix_sockets() -> io::Result<Vec<UnixDiag>> {
    let mut req = Vec::with_capacity(24);
    // struct unix_diag_req
    req.push(libc::AF_UNIX as u8);
    req.push(0);
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
    req.extend_from_slice(&0u32.to_ne_bytes()); // ino
    req.extend_from_slice(&(0x1u32 | 0x2 | 0x4 | 0x8 | 0x10).to_ne_bytes()); // show
    req.extend_from_slice(&[0u8; 8]); // cookie
    Ok(dump_request(&req)?
        .iter()
        .filter_map(|p| parse_unix_diag(p))
        .collect())
}

/// One `SOCK_DIAG_BY_FAMILY` dump request with `body` (the family's request struct); the
/// payloads of the answers (each family's `*_diag_msg` with its attributes).
fn dump_request(body: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    // SAFETY: socket() with integer arguments; the result is owned below.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    } as libc::c_long)?;
    // SAFETY: fresh descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut req = Vec::with_capacity(16 + body.len());
    req.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.extend_from_slice(body);
    // SAFETY: sends `req.len()` bytes from a live buffer (to the kernel: address 0).
    let n = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(last_err());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receives into a live buffer of its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = last_err();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        let data = &buf[..n as usize];
        let mut off = 0;
        while off + 16 <= data.len() {
            let len = u32_at(data, off).unwrap_or(0) as usize;
            let ty = u16_at(data, off + 4).unwrap_or(0);
            if len < 16 || off + len > data.len() {
                break;
            }
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let err = u32_at(data, off + 16)
                        .map(|e| e as i32)
                        .unwrap_or(-libc::EIO);
                    return Err(io::Error::from_raw_os_error(-err));
                }
                SOCK_DIAG_BY_FAMILY => out.push(data[off + 16..off + len].to_vec()),
                _ => {}
            }
            off += (len + 3) & !3;
        }
        if n == 0 {
            return Ok(out);
        }
    }
}

/// The netlink attributes (type, payload) that follow a fixed header of `hdr` bytes.
fn attrs(p: &[u8], hdr: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = hdr;
    while off + 4 <= p.len() {
        let (Some(len), Some(ty)) = (u16_at(p, off), u16_at(p, off + 2)) else {
            break;
        };
        let len = len as usize;
        if len < 4 || off + len > p.len() {
            break;
        }
        out.push((ty & 0x3fff, &p[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    out
}

/// What `inet_diag` says about one IPv4/IPv6 socket that its own calls do not tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InetDiag {
    /// TCP-like state (1: connected, 7: not).
    pub state: u8,
    /// Shutdown bits (1 = RCV, 2 = SEND).
    pub shutdown: u8,
}

/// The `inet_diag` entry of socket inode `ino` (family AF_INET/AF_INET6, protocol UDP,
/// UDP-Lite or, with `raw_protocol`, a raw socket of that protocol); None if not listed.
pub fn inet_socket(
    family: i32,
    protocol: i32,
    raw_protocol: Option<i32>,
    ino: u64,
) -> io::Result<Option<InetDiag>> {
    // struct inet_diag_req_v2: family, protocol, ext, pad (raw protocol), states, sockid.
    let mut req = vec![
        family as u8,
        protocol as u8,
        0,
        raw_protocol.unwrap_or(0) as u8,
    ];
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&[0u8; 40]);
    req.extend_from_slice(&[0xffu8; 8]); // INET_DIAG_NOCOOKIE
    for p in dump_request(&req)? {
        // struct inet_diag_msg: 4 bytes, sockid (48), expires, rqueue, wqueue, uid, inode.
        if p.len() < 72 || u32_at(&p, 68).map(u64::from) != Some(ino) {
            continue;
        }
        let mut d = InetDiag {
            state: p[1],
            ..Default::default()
        };
        for (ty, data) in attrs(&p, 72) {
            if ty == 8 {
                d.shutdown = data.first().copied().unwrap_or(0);
            }
        }
        return Ok(Some(d));
    }
    Ok(None)
}

/// What `packet_diag` says about one packet socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketDiag {
    /// An mmap ring is set up (receive or transmit).
    pub ring: bool,
    /// Memberships (`PACKET_ADD_MEMBERSHIP`): ifindex, type, address length, address (up to
    /// 32 bytes), as `struct packet_mreq` wants them.
    pub mclist: Vec<(i32, u16, u16, Vec<u8>)>,
}

/// The `packet_diag` entry of socket inode `ino`; None if not listed.
pub fn packet_socket(ino: u64) -> io::Result<Option<PacketDiag>> {
    // struct packet_diag_req: family, protocol, pad, ino, show (MCLIST | RING_CFG), cookie.
    let mut req = vec![libc::AF_PACKET as u8, 0, 0, 0];
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&(0x2u32 | 0x4).to_ne_bytes());
    req.extend_from_slice(&[0u8; 8]);
    for p in dump_request(&req)? {
        // struct packet_diag_msg: family, type, num (u16), ino, cookie[2].
        if p.len() < 16 || u32_at(&p, 4).map(u64::from) != Some(ino) {
            continue;
        }
        let mut d = PacketDiag::default();
        for (ty, data) in attrs(&p, 16) {
            match ty {
                // PACKET_DIAG_RX_RING, PACKET_DIAG_TX_RING
                2 | 3 => d.ring = true,
                // PACKET_DIAG_MCLIST: struct packet_diag_mclist (index, count, type, alen,
                // addr[32]) each.
                1 => {
                    for m in data.chunks_exact(44) {
                        let alen = u16_at(m, 10).unwrap_or(0);
                        d.mclist.push((
                            u32_at(m, 0).unwrap_or(0) as i32,
                            u16_at(m, 8).unwrap_or(0),
                            alen,
                            m[12..12 + (alen as usize).min(32)].to_vec(),
                        ));
                    }
                }
                _ => {}
            }
        }
        return Ok(Some(d));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_attributes() {
        let mut p = vec![1u8, 1, 1, 0];
        p.extend_from_slice(&77u32.to_ne_bytes());
        p.extend_from_slice(&[0; 8]);
        // peer attribute
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&2u16.to_ne_bytes());
        p.extend_from_slice(&78u32.to_ne_bytes());
        // name attribute "ab" padded
        p.extend_from_slice(&6u16.to_ne_bytes());
        p.extend_from_slice(&0u16.to_ne_bytes());
        p.extend_from_slice(b"ab\0\0");
        let d = parse_unix_diag(&p).unwrap();
        assert_eq!((d.ino, d.peer, d.sock_type, d.state), (77, 78, 1, 1));
        assert_eq!(d.name.as_deref(), Some(&b"ab"[..]));
        assert!(parse_unix_diag(&p[..10]).is_none());
    }

    #[test]
    fn lists_a_socketpair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let ino = |s: &std::os::unix::net::UnixStream| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
                .unwrap()
                .ino() as u32
        };
        let (ia, ib) = (ino(&a), ino(&b));
        let all = unix_sockets().unwrap();
        let da = all.iter().find(|d| d.ino == ia).expect("socket listed");
        assert_eq!(da.peer, ib);
    }
}
