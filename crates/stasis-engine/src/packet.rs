//! Packet sockets (AF_PACKET, SOCK_RAW and SOCK_DGRAM).
//!
//! ## Dump
//! The socket is borrowed with `pidfd_getfd`: type and protocol, the `sockaddr_ll` it is bound
//! to (protocol, interface), its options (PACKET_VERSION, PACKET_AUXDATA, …), fanout group,
//! attached filter, and from `packet_diag` its memberships and whether it has an mmap ring. A
//! socket with a ring is refused (the ring is memory shared with the kernel, frames in flight in
//! it cannot be rebuilt). Packets waiting to be read are not kept: a packet socket sees what
//! the network delivers, and these are lost as on a busy link (the checkpoint logs how many).
//!
//! ## Restore
//! A new socket of the same type and protocol, its options set, bound to the same protocol and
//! interface index, memberships added, fanout group joined, filter attached.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::kind::{DumpCtx, ObjectKind, RestoreCtx};
use crate::files::{FileTable, Opened, Probe};
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::net;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

const SOL_PACKET: i32 = 263;
const PACKET_ADD_MEMBERSHIP: i32 = 1;
const PACKET_FANOUT: i32 = 18;

/// Packet-level options: PACKET_AUXDATA, PACKET_ORIGDEV, PACKET_VERSION, PACKET_RESERVE,
/// PACKET_LOSS, PACKET_VNET_HDR, PACKET_TIMESTAMP, PACKET_QDISC_BYPASS,
/// PACKET_IGNORE_OUTGOING; and the buffer sizes.
const OPTS: &[crate::sockopt::Def] = &[
    (libc::SOL_SOCKET, libc::SO_RCVBUF, 0),
    (libc::SOL_SOCKET, libc::SO_SNDBUF, 0),
    (SOL_PACKET, 8, 0),
    (SOL_PACKET, 9, 0),
    (SOL_PACKET, 10, 0),
    (SOL_PACKET, 12, 0),
    (SOL_PACKET, 14, 0),
    (SOL_PACKET, 15, 0),
    (SOL_PACKET, 17, 0),
    (SOL_PACKET, 20, 0),
    (SOL_PACKET, 23, 0),
];

/// (protocol in network order, interface index) of a `sockaddr_ll`.
fn ll_addr(a: &[u8]) -> (u16, i32) {
    let proto = a
        .get(2..4)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let ifindex = a
        .get(4..8)
        .map(|b| i32::from_ne_bytes(b.try_into().expect("4")))
        .unwrap_or(0);
    (proto, ifindex)
}

/// Dump a borrowed packet socket.
pub fn dump(pid: i32, fd: i32, sock: &OwnedFd) -> Result<rec::PacketSocketState, CheckpointError> {
    let s = sock.as_raw_fd();
    let what = |w: &str| format!("fd {fd} (packet socket): {w}");
    let int = |l: i32, o: i32, n: &str| net::getsockopt_int(s, l, o).ctx(pid, || what(n));
    let ino = std::fs::metadata(format!("/proc/self/fd/{s}"))
        .ctx(pid, || what("fstat"))?
        .ino();
    let diag = stasis_sys::diag::packet_socket(ino)
        .ctx(pid, || what("packet_diag"))?
        .ok_or_else(|| {
            Failure::msg(
                pid,
                what("not listed by packet_diag (another network namespace?)"),
            )
        })?;
    let local = net::sock_name(s).ctx(pid, || what("getsockname"))?;
    let (proto, ifindex) = ll_addr(&local);
    if diag.ring {
        return Err(CheckpointError::Unsupported {
            pid,
            what: format!(
                "fd {fd} is a packet socket (protocol 0x{:04x}, interface {ifindex}) with an mmap ring (PACKET_RX_RING/PACKET_TX_RING): frames shared with the kernel cannot be rebuilt, so it is refused",
                u16::from_be(proto)
            ),
        });
    }
    let mut st = rec::PacketSocketState {
        sock_type: int(libc::SOL_SOCKET, libc::SO_TYPE, "SO_TYPE")?,
        protocol: int(libc::SOL_SOCKET, libc::SO_PROTOCOL, "SO_PROTOCOL")?,
        local,
        filter: net::get_filter(s).ctx(pid, || what("SO_GET_FILTER"))?,
        fanout: net::getsockopt_int(s, SOL_PACKET, PACKET_FANOUT).unwrap_or(0) as u32,
        memberships: diag
            .mclist
            .iter()
            .map(|(ifindex, ty, _, addr)| rec::PacketMembership {
                ifindex: *ifindex,
                mr_type: *ty as u32,
                address: addr.clone(),
            })
            .collect(),
        dropped: crate::inet::rmem_alloc(s).unwrap_or(0),
        ..Default::default()
    };
    crate::sockopt::read(s, crate::sockopt::SOCKET, &mut st.options);
    crate::sockopt::read(s, OPTS, &mut st.options);
    if st.dropped > 0 {
        tracing::warn!(
            pid,
            fd,
            bytes = st.dropped,
            "packets waiting on a packet socket are not kept"
        );
    }
    Ok(st)
}

/// A new socket as `st` was.
pub fn create(st: &rec::PacketSocketState) -> std::io::Result<OwnedFd> {
    let s = net::socket(libc::AF_PACKET, st.sock_type, st.protocol)?;
    let fd = s.as_raw_fd();
    crate::sockopt::apply(fd, &st.options)?;
    let (proto, ifindex) = ll_addr(&st.local);
    if ifindex != 0 || proto as i32 != st.protocol {
        // Only family, protocol and interface matter to bind.
        let mut a = st.local.clone();
        a.resize(20, 0);
        net::bind_raw(fd, &a)?;
    }
    for m in &st.memberships {
        let mut mreq = Vec::with_capacity(16);
        mreq.extend_from_slice(&m.ifindex.to_ne_bytes());
        mreq.extend_from_slice(&(m.mr_type as u16).to_ne_bytes());
        mreq.extend_from_slice(&(m.address.len().min(8) as u16).to_ne_bytes());
        let mut addr = m.address.clone();
        addr.resize(8, 0);
        mreq.extend_from_slice(&addr);
        net::setsockopt_bytes(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)?;
    }
    if st.fanout != 0 {
        net::setsockopt_int(fd, SOL_PACKET, PACKET_FANOUT, st.fanout as i32)?;
    }
    if !st.filter.is_empty() {
        net::attach_filter(fd, &st.filter)?;
    }
    Ok(s)
}

/// Packet sockets.
pub(crate) struct PacketKind;

impl ObjectKind for PacketKind {
    fn name(&self) -> &'static str {
        "packet socket"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::PacketSocket]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.sock_ino.is_some() && net::sock_proto_name(&p.proc_path).is_ok_and(|n| n == "PACKET")
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
        fo.kind = FileKind::PacketSocket as i32;
        fo.file_id = None;
        fo.state = Some(rec::file_object::State::Packet(st));
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        _: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let st = f.packet().ok_or_else(|| {
            Failure::msg(
                0,
                format!("open file description #{}: no packet state", f.id),
            )
        })?;
        create(st).ctx(0, || {
            let (proto, ifindex) = ll_addr(&st.local);
            format!(
                "packet socket (protocol 0x{:04x}, interface {ifindex}, open file description #{})",
                u16::from_be(proto),
                f.id
            )
        })
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        let Some(st) = f.packet() else {
            return "packet socket".into();
        };
        let (proto, ifindex) = ll_addr(&st.local);
        format!(
            "packet {} protocol 0x{:04x} interface {ifindex}, {} membership(s){}",
            if st.sock_type == libc::SOCK_DGRAM {
                "dgram"
            } else {
                "raw"
            },
            u16::from_be(proto),
            st.memberships.len(),
            if st.dropped > 0 {
                format!(", {} bytes of packets dropped", st.dropped)
            } else {
                String::new()
            }
        )
    }
}
