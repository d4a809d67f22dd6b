//! Netlink sockets (NETLINK_ROUTE, NETLINK_KOBJECT_UEVENT, NETLINK_GENERIC, …).
//!
//! ## Dump
//! The socket is borrowed with `pidfd_getfd`: type and protocol, the port id it is bound to
//! (`getsockname`), every multicast group joined (`NETLINK_LIST_MEMBERSHIPS`), the port or group
//! it is connected to (`getpeername`), its options and attached filter. A socket with messages
//! waiting to be read is refused: netlink messages cannot be peeked past the first nor put back
//! (the kernel made them), and a restore without them would silently differ.
//!
//! ## Restore
//! A new socket of the same type and protocol, its options set, bound to the same port id with
//! the first 32 groups, the other groups joined with `NETLINK_ADD_MEMBERSHIP`, and connected as
//! it was.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::kind::{DumpCtx, ObjectKind, RestoreCtx};
use crate::files::{FileTable, Opened, Probe};
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::net;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;

/// Netlink-level options: NETLINK_PKTINFO, NETLINK_BROADCAST_ERROR, NETLINK_NO_ENOBUFS,
/// NETLINK_LISTEN_ALL_NSID, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK; and the
/// buffer sizes.
const OPTS: &[crate::sockopt::Def] = &[
    (libc::SOL_SOCKET, libc::SO_RCVBUF, 0),
    (libc::SOL_SOCKET, libc::SO_SNDBUF, 0),
    (SOL_NETLINK, 3, 0),
    (SOL_NETLINK, 4, 0),
    (SOL_NETLINK, 5, 0),
    (SOL_NETLINK, 8, 0),
    (SOL_NETLINK, 10, 0),
    (SOL_NETLINK, 11, 0),
    (SOL_NETLINK, 12, 0),
];

/// `struct sockaddr_nl` → (port id, groups mask).
fn nl_addr(a: &[u8]) -> (u32, u32) {
    let word = |i: usize| {
        a.get(i..i + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().expect("4")))
            .unwrap_or(0)
    };
    (word(4), word(8))
}

fn sockaddr_nl(portid: u32, groups: u32) -> Vec<u8> {
    let mut a = Vec::with_capacity(12);
    a.extend_from_slice(&(libc::AF_NETLINK as u16).to_ne_bytes());
    a.extend_from_slice(&0u16.to_ne_bytes());
    a.extend_from_slice(&portid.to_ne_bytes());
    a.extend_from_slice(&groups.to_ne_bytes());
    a
}

fn memberships(s: RawFd) -> std::io::Result<Vec<u32>> {
    let mut buf = vec![0u8; 256];
    loop {
        let mut len = buf.len() as libc::socklen_t;
        let n = net::getsockopt_bytes_len(
            s,
            SOL_NETLINK,
            NETLINK_LIST_MEMBERSHIPS,
            &mut buf,
            &mut len,
        )?;
        if len as usize > buf.len() {
            buf = vec![0u8; len as usize];
            continue;
        }
        let mut v: Vec<u32> = buf[..n]
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes(c.try_into().expect("4")))
            .collect();
        while v.last() == Some(&0) {
            v.pop();
        }
        return Ok(v);
    }
}

/// Dump a borrowed netlink socket.
pub fn dump(pid: i32, fd: i32, sock: &OwnedFd) -> Result<rec::NetlinkSocketState, CheckpointError> {
    let s = sock.as_raw_fd();
    let what = |w: &str| format!("fd {fd} (netlink socket): {w}");
    let int = |o: i32, n: &str| net::getsockopt_int(s, libc::SOL_SOCKET, o).ctx(pid, || what(n));
    let protocol = int(libc::SO_PROTOCOL, "SO_PROTOCOL")?;
    let queued = crate::inet::rmem_alloc(s).ctx(pid, || what("SO_MEMINFO"))?;
    let (portid, _) = nl_addr(&net::sock_name(s).ctx(pid, || what("getsockname"))?);
    if queued > 0 {
        return Err(CheckpointError::Unsupported {
            pid,
            what: format!(
                "fd {fd} is a netlink socket (protocol {protocol}, port {portid}) with {queued} bytes of messages waiting to be read; they cannot be read without consuming them nor put back, so it is refused"
            ),
        });
    }
    let (dst_portid, dst_mask) = nl_addr(
        &net::peer_name(s)
            .ctx(pid, || what("getpeername"))?
            .unwrap_or_default(),
    );
    let mut st = rec::NetlinkSocketState {
        sock_type: int(libc::SO_TYPE, "SO_TYPE")?,
        protocol,
        portid,
        groups: memberships(s).ctx(pid, || what("NETLINK_LIST_MEMBERSHIPS"))?,
        dst_portid,
        dst_group: if dst_mask == 0 {
            0
        } else {
            dst_mask.trailing_zeros() + 1
        },
        filter: net::get_filter(s).ctx(pid, || what("SO_GET_FILTER"))?,
        ..Default::default()
    };
    crate::sockopt::read(s, crate::sockopt::SOCKET, &mut st.options);
    crate::sockopt::read(s, OPTS, &mut st.options);
    Ok(st)
}

/// A new socket as `st` was.
pub fn create(st: &rec::NetlinkSocketState) -> std::io::Result<OwnedFd> {
    let s = net::socket(libc::AF_NETLINK, st.sock_type, st.protocol)?;
    let fd = s.as_raw_fd();
    crate::sockopt::apply(fd, &st.options)?;
    if st.portid != 0 {
        let first = st.groups.first().copied().unwrap_or(0);
        crate::inet::retry_in_use(|| net::bind_raw(fd, &sockaddr_nl(st.portid, first)))?;
        for (w, bits) in st.groups.iter().enumerate().skip(1) {
            for b in 0..32 {
                if bits & (1 << b) != 0 {
                    let group = (w * 32 + b + 1) as i32;
                    net::setsockopt_int(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)?;
                }
            }
        }
    }
    if st.dst_portid != 0 || st.dst_group != 0 {
        let mask = if st.dst_group == 0 || st.dst_group > 32 {
            0
        } else {
            1u32 << (st.dst_group - 1)
        };
        net::connect_raw(fd, &sockaddr_nl(st.dst_portid, mask))?;
    }
    if !st.filter.is_empty() {
        net::attach_filter(fd, &st.filter)?;
    }
    Ok(s)
}

/// Netlink sockets.
pub(crate) struct NetlinkKind;

impl ObjectKind for NetlinkKind {
    fn name(&self) -> &'static str {
        "netlink socket"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::NetlinkSocket]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.sock_ino.is_some() && net::sock_proto_name(&p.proc_path).is_ok_and(|n| n == "NETLINK")
    }

    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        let sock = t.borrow(p.pid, p.fd)?;
        let st = dump(p.pid, p.fd, &sock)?;
        fo.kind = FileKind::NetlinkSocket as i32;
        fo.file_id = None;
        fo.state = Some(rec::file_object::State::Netlink(st));
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let st = f.netlink().ok_or_else(|| {
            Failure::msg(
                0,
                format!("open file description #{}: no netlink state", f.id),
            )
        })?;
        create(st).ctx(0, || {
            format!(
                "netlink socket (protocol {}, port {}, open file description #{})",
                st.protocol, st.portid, f.id
            )
        })
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        let Some(st) = f.netlink() else {
            return "netlink socket".into();
        };
        let groups: Vec<String> = st
            .groups
            .iter()
            .enumerate()
            .flat_map(|(w, bits)| {
                (0..32)
                    .filter(move |b| bits & (1 << b) != 0)
                    .map(move |b| (w * 32 + b + 1).to_string())
            })
            .collect();
        format!(
            "netlink protocol {} port {}{}",
            st.protocol,
            st.portid,
            if groups.is_empty() {
                String::new()
            } else {
                format!(", groups {}", groups.join(","))
            }
        )
    }
}
