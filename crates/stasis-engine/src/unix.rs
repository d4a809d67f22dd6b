//! Unix-domain sockets.
//!
//! ## Dump
//! `sock_diag` (`UNIX_DIAG`, see [`stasis_sys::diag`]) gives each socket's type, state, bound
//! name, peer inode and a listener's pending connections. The socket itself is borrowed with
//! `pidfd_getfd` (same socket, same queues) to read its options and the data queued for reading:
//! `SO_PEEK_OFF` is set to 0 and `recvmsg(MSG_PEEK)` called until the queue is exhausted — each
//! datagram or seqpacket record comes separately, so boundaries are kept — then the original
//! peek offset is put back. A message carrying file descriptors (`SCM_RIGHTS`) makes the
//! checkpoint refuse, as does a socket connected to a peer outside the tree.
//!
//! ## Restore
//! Listeners are bound (a stale socket file left at the path is removed) and listen again; each
//! pending connection is made again by its client socket connecting to the listener, in queue
//! order. Connected pairs become `socketpair`s; unconnected sockets are bound to their names;
//! a datagram socket connected one way is connected to its peer's name. Queued data is sent
//! again from the peer (datagrams one by one; for an unconnected bound datagram socket from a
//! temporary socket, so the sender address is not kept). Then shutdown state and options.
//!
//! Not kept: the local name of an accepted connection (it shares the listener's path), sender
//! addresses of datagrams queued on unconnected sockets, credentials attached to queued
//! messages. Refused: fds in flight, peers outside the tree, pending connections with unread
//! data.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::kind::{DumpCtx, ObjectKind, RestoreCtx};
use crate::files::{FileTable, Opened, Probe};
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::diag::UnixDiag;
use stasis_sys::net;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

const TCP_LISTEN: u8 = 10;

/// Files in flight found in a socket's queue: (message index, our copies of the files).
pub type InFlight = Vec<(usize, Vec<OwnedFd>)>;

/// The namespace's unix sockets, by inode (read once per checkpoint).
pub struct UnixTable {
    by_ino: HashMap<u32, UnixDiag>,
}

impl UnixTable {
    /// Query `sock_diag`.
    pub fn load() -> Result<Self, Failure> {
        let all =
            stasis_sys::diag::unix_sockets().ctx(0, || "sock_diag dump of unix sockets".into())?;
        Ok(Self {
            by_ino: all.into_iter().map(|d| (d.ino, d)).collect(),
        })
    }

    /// Whether `ino` is a unix socket.
    pub fn is_unix(&self, ino: u64) -> bool {
        self.by_ino.contains_key(&(ino as u32))
    }

    /// Dump one unix socket held as `fd` by `pid`.
    pub fn dump(
        &mut self,
        pid: i32,
        fd: i32,
        ino: u64,
        sock: &OwnedFd,
    ) -> Result<(rec::UnixSocketState, InFlight), CheckpointError> {
        let d = self
            .by_ino
            .get(&(ino as u32))
            .cloned()
            .ok_or_else(|| Failure::msg(pid, format!("fd {fd}: unix socket {ino} vanished")))?;
        let unsupported = |what: String| CheckpointError::Unsupported {
            pid,
            what: format!("fd {fd} (socket:[{ino}]) {what}"),
        };
        if d.state == TCP_LISTEN {
            // UNIX_DIAG_ICONS lists the *client* sockets of the pending connections. What a
            // client sent is queued in the not-yet-accepted server socket, which no fd reaches:
            // a client with bytes in flight (write queue) cannot be saved without accepting.
            for client in &d.icons {
                if let Some(c) = self.by_ino.get(client) {
                    if c.rqlen.is_some_and(|(_, w)| w > 0) {
                        return Err(unsupported(format!(
                            "has a pending connection (client socket:[{client}]) with unread data; not supported yet"
                        )));
                    }
                }
            }
        }
        let s = sock.as_raw_fd();
        let opt = |o: i32| {
            net::getsockopt_int(s, libc::SOL_SOCKET, o)
                .ctx(pid, || format!("fd {fd}: getsockopt {o}"))
        };
        let mut st = rec::UnixSocketState {
            ino: d.ino,
            sock_type: d.sock_type as i32,
            state: d.state as i32,
            name: d.name.clone().unwrap_or_default(),
            peer_ino: d.peer,
            shutdown: d.shutdown as u32,
            backlog: d.rqlen.map(|(_, max)| max).unwrap_or(0),
            queue: Vec::new(),
            pending_clients: Vec::new(),
            rcvbuf: opt(libc::SO_RCVBUF)?,
            sndbuf: opt(libc::SO_SNDBUF)?,
            passcred: opt(libc::SO_PASSCRED)? != 0,
            rcvtimeo_us: net::getsockopt_timeval(s, libc::SO_RCVTIMEO)
                .ctx(pid, || "SO_RCVTIMEO".into())?,
            sndtimeo_us: net::getsockopt_timeval(s, libc::SO_SNDTIMEO)
                .ctx(pid, || "SO_SNDTIMEO".into())?,
            peek_off: opt(libc::SO_PEEK_OFF)?,
            path_attrs: socket_file_attrs(&d),
        };
        if d.state == TCP_LISTEN {
            st.pending_clients = d.icons.clone();
            return Ok((st, Vec::new()));
        }
        // Queued data, without consuming it.
        net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
            .ctx(pid, || format!("fd {fd}: SO_PEEK_OFF"))?;
        let mut inflight: InFlight = Vec::new();
        let res = (|| -> Result<(), CheckpointError> {
            let stream = d.sock_type as i32 == libc::SOCK_STREAM;
            let mut all = Vec::new();
            while let Some(m) = net::peek_next(s, 256 * 1024, stream)
                .ctx(pid, || format!("fd {fd}: peeking queued data"))?
            {
                // Stream bytes merge into one message, except where files ride along: they
                // travel with the first byte of their chunk, which must stay a message start.
                if stream && m.fds.is_empty() {
                    all.extend_from_slice(&m.data);
                    continue;
                }
                if stream && !all.is_empty() {
                    st.queue.push(rec::UnixMessage {
                        data: std::mem::take(&mut all),
                        ..Default::default()
                    });
                }
                if !m.fds.is_empty() {
                    inflight.push((st.queue.len(), m.fds));
                }
                st.queue.push(rec::UnixMessage {
                    data: m.data,
                    from: m.from,
                    fds: Vec::new(),
                });
            }
            if stream && !all.is_empty() {
                st.queue.push(rec::UnixMessage {
                    data: all,
                    ..Default::default()
                });
            }
            Ok(())
        })();
        let _ = net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, st.peek_off);
        res?;
        let _ = unsupported;
        Ok((st, inflight))
    }

    /// After every fd is dumped: every peer must be in the tree (or be a pending connection of
    /// a listener in the tree).
    pub fn check_peers(
        &self,
        files: &[rec::FileObject],
        holders: &HashMap<u32, (i32, i32)>,
    ) -> Result<(), CheckpointError> {
        let in_tree: HashMap<u32, &rec::UnixSocketState> = files
            .iter()
            .filter_map(|f| f.unix())
            .map(|u| (u.ino, u))
            .collect();
        for f in files {
            let Some(u) = f.unix() else { continue };
            // A client of a pending connection shows peer 0 (the server socket has no inode).
            if u.peer_ino == 0 || in_tree.contains_key(&u.peer_ino) {
                continue;
            }
            let (pid, fd) = holders.get(&f.id).copied().unwrap_or((0, -1));
            let name = self
                .by_ino
                .get(&u.peer_ino)
                .and_then(|d| d.name.clone())
                .map(|n| String::from_utf8_lossy(&n).into_owned())
                .unwrap_or_default();
            return Err(CheckpointError::Unsupported {
                pid,
                what: format!("fd {fd} (socket:[{}]) is connected to a unix socket outside the tree ({}); not supported yet", u.ino, if name.is_empty() { "unnamed".into() } else { name }),
            });
        }
        Ok(())
    }
}

/// Mode and owner of the file a socket is bound to, if that file is still its own (same
/// inode as `sock_diag` reports for the bound name).
fn socket_file_attrs(d: &stasis_sys::diag::UnixDiag) -> Option<rec::SocketFileAttrs> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let name = d
        .name
        .as_deref()
        .filter(|n| n.first().is_some_and(|&b| b != 0))?;
    let (vfs_ino, _) = d.vfs?; // (udiag_vfs_ino, udiag_vfs_dev)
    let p =
        std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name));
    let md = std::fs::symlink_metadata(p).ok()?;
    (md.file_type().is_socket() && md.ino() == vfs_ino as u64).then(|| rec::SocketFileAttrs {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    })
}

/// Set the saved mode and owner of the socket files bound again.
fn restore_socket_files(socks: &[Sock<'_>]) -> Result<(), Failure> {
    for (_, u) in socks {
        let Some(a) = &u.path_attrs else { continue };
        let p = std::path::Path::new(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&u.name),
        );
        let what = || {
            format!(
                "unix socket socket:[{}]: mode and owner of {}",
                u.ino,
                p.display()
            )
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(a.mode)).ctx(0, what)?;
        std::os::unix::fs::lchown(p, Some(a.uid), Some(a.gid)).ctx(0, what)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Restore side.

fn remove_stale_socket_file(name: &[u8]) {
    if name.first().is_some_and(|&b| b != 0) {
        let p = std::path::Path::new(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name),
        );
        if let Ok(md) = std::fs::symlink_metadata(p) {
            use std::os::unix::fs::FileTypeExt;
            if md.file_type().is_socket() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// A unix socket of the image with its file object.
type Sock<'a> = (&'a rec::FileObject, &'a rec::UnixSocketState);

/// The image's unix sockets, in order and by inode.
fn sockets(img: &rec::Checkpoint) -> (Vec<Sock<'_>>, HashMap<u32, Sock<'_>>) {
    let socks: Vec<Sock<'_>> = img
        .files
        .iter()
        .filter_map(|f| f.unix().map(|u| (f, u)))
        .collect();
    let by_ino = socks.iter().map(|&(f, u)| (u.ino, (f, u))).collect();
    (socks, by_ino)
}

/// Create every unix socket of the image; returns file object id → our fd.
pub fn create_all(img: &rec::Checkpoint) -> Result<HashMap<u32, OwnedFd>, Failure> {
    let (socks, by_ino) = sockets(img);
    let mut out: HashMap<u32, OwnedFd> = HashMap::new();
    let what = |u: &rec::UnixSocketState| format!("unix socket socket:[{}]", u.ino);
    // 1. Listeners and their pending connections.
    for &(f, u) in &socks {
        if u.state != TCP_LISTEN as i32 {
            continue;
        }
        let s = net::unix_socket(u.sock_type).ctx(0, || what(u))?;
        remove_stale_socket_file(&u.name);
        net::unix_bind(s.as_raw_fd(), &u.name).ctx(0, || {
            format!("{}: bind to {}", what(u), String::from_utf8_lossy(&u.name))
        })?;
        net::listen(s.as_raw_fd(), u.backlog.max(1) as i32)
            .ctx(0, || format!("{}: listen", what(u)))?;
        for client in &u.pending_clients {
            let Some(&(cf, cu)) = by_ino.get(client) else {
                continue;
            };
            let c = net::unix_socket(cu.sock_type).ctx(0, || what(cu))?;
            net::unix_connect(c.as_raw_fd(), &u.name).ctx(0, || {
                format!("{}: reconnecting to pending listener", what(cu))
            })?;
            out.insert(cf.id, c);
        }
        out.insert(f.id, s);
    }
    let listener_names: std::collections::HashSet<Vec<u8>> = socks
        .iter()
        .filter(|(_, u)| u.state == TCP_LISTEN as i32)
        .map(|(_, u)| u.name.clone())
        .collect();
    // 2. Pairs connected both ways.
    for &(f, u) in &socks {
        if out.contains_key(&f.id) || u.peer_ino == 0 {
            continue;
        }
        let Some(&(pf, pu)) = by_ino.get(&u.peer_ino) else {
            continue;
        };
        if pu.peer_ino != u.ino || out.contains_key(&pf.id) {
            continue;
        }
        let (a, b) =
            net::unix_socketpair(u.sock_type).ctx(0, || format!("{}: socketpair", what(u)))?;
        // Ends that had a name get it back, unless it is a listener's (an accepted connection
        // shows its listener's path, which only the listener can hold).
        for (end, st) in [(&a, u), (&b, pu)] {
            if !st.name.is_empty() && !listener_names.contains(&st.name) {
                remove_stale_socket_file(&st.name);
                net::unix_bind(end.as_raw_fd(), &st.name).ctx(0, || {
                    format!(
                        "{}: bind to {}",
                        what(st),
                        String::from_utf8_lossy(&st.name)
                    )
                })?;
            }
        }
        out.insert(f.id, a);
        out.insert(pf.id, b);
    }
    // 3. The rest: bind, then connect one-way datagram sockets.
    for &(f, u) in &socks {
        if out.contains_key(&f.id) {
            continue;
        }
        let s = net::unix_socket(u.sock_type).ctx(0, || what(u))?;
        if !u.name.is_empty() {
            remove_stale_socket_file(&u.name);
            net::unix_bind(s.as_raw_fd(), &u.name).ctx(0, || {
                format!("{}: bind to {}", what(u), String::from_utf8_lossy(&u.name))
            })?;
        }
        out.insert(f.id, s);
    }
    for &(f, u) in &socks {
        if u.peer_ino == 0 || u.state == TCP_LISTEN as i32 {
            continue;
        }
        if let Some(&(_, pu)) = by_ino.get(&u.peer_ino) {
            if pu.peer_ino != u.ino && !pu.name.is_empty() {
                net::unix_connect(out[&f.id].as_raw_fd(), &pu.name)
                    .ctx(0, || format!("{}: connect to its peer", what(u)))?;
            }
        }
    }
    for &(f, u) in &socks {
        let s = out[&f.id].as_raw_fd();
        set_opts(s, u).ctx(0, || format!("{}: socket options", what(u)))?;
    }
    restore_socket_files(&socks)?;
    Ok(out)
}

/// Queue the saved data again (sent by the peer, by the bound sender of a datagram, or from a
/// temporary socket), with files in flight attached, then apply shutdown state and peek offsets.
/// Runs once every file description of the image exists (`files`: file object id → our fd).
pub fn requeue_all(img: &rec::Checkpoint, files: &HashMap<u32, OwnedFd>) -> Result<(), Failure> {
    let (socks, by_ino) = sockets(img);
    let what = |u: &rec::UnixSocketState| format!("unix socket socket:[{}]", u.ino);
    let listener_names: std::collections::HashSet<Vec<u8>> = socks
        .iter()
        .filter(|(_, u)| u.state == TCP_LISTEN as i32)
        .map(|(_, u)| u.name.clone())
        .collect();
    let out = files;
    let by_name: HashMap<Vec<u8>, u32> = socks
        .iter()
        .filter(|(_, u)| {
            !u.name.is_empty() && u.state != TCP_LISTEN as i32 && !listener_names.contains(&u.name)
        })
        .map(|(f, u)| (u.name.clone(), f.id))
        .collect();
    for &(f, u) in &socks {
        if u.queue.is_empty() {
            continue;
        }
        let peer = by_ino
            .get(&u.peer_ino)
            .and_then(|&(pf, _)| out.get(&pf.id))
            .map(|p| p.as_raw_fd());
        let tmp;
        let (from, to): (RawFd, Option<&[u8]>) = match peer {
            Some(p) if by_ino[&u.peer_ino].1.peer_ino == u.ino => (p, None),
            _ if !u.name.is_empty() => {
                tmp = net::unix_socket(u.sock_type).ctx(0, || what(u))?;
                (tmp.as_raw_fd(), Some(u.name.as_slice()))
            }
            _ => {
                return Err(Failure::msg(
                    0,
                    format!("{}: queued data but no way to send it again", what(u)),
                ))
            }
        };
        for m in &u.queue {
            // A datagram from a bound socket of the image is sent again by that socket, so its
            // sender address is kept.
            let sender = (!m.from.is_empty() && !u.name.is_empty())
                .then(|| by_name.get(&m.from).and_then(|id| out.get(id)))
                .flatten();
            let attached: Vec<RawFd> = m
                .fds
                .iter()
                .map(|id| {
                    out.get(id).map(|f| f.as_raw_fd()).ok_or_else(|| {
                        Failure::msg(
                            0,
                            format!("{}: a file in flight was not recreated", what(u)),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            let (sfd, dest) = match sender {
                Some(sfd) => (sfd.as_raw_fd(), Some(u.name.as_slice())),
                None => (from, to),
            };
            if attached.is_empty() {
                net::send_all(sfd, &m.data, dest)
            } else {
                net::send_with_fds(sfd, &m.data, dest, &attached)
            }
            .ctx(0, || {
                format!("{}: re-queueing {} bytes", what(u), m.data.len())
            })?;
        }
        let _ = f;
    }
    for &(f, u) in &socks {
        let s = out[&f.id].as_raw_fd();
        if u.shutdown & 2 != 0 {
            net::shutdown(s, libc::SHUT_WR).ctx(0, || format!("{}: shutdown", what(u)))?;
        }
        if u.shutdown & 1 != 0 {
            net::shutdown(s, libc::SHUT_RD).ctx(0, || format!("{}: shutdown", what(u)))?;
        }
        if u.peek_off >= 0 {
            net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, u.peek_off)
                .ctx(0, || format!("{}: SO_PEEK_OFF", what(u)))?;
        }
    }
    Ok(())
}

fn set_opts(s: RawFd, u: &rec::UnixSocketState) -> std::io::Result<()> {
    // getsockopt reports twice what was set; setting half gives the same value back.
    if u.rcvbuf > 0 {
        net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_RCVBUF, u.rcvbuf / 2)?;
    }
    if u.sndbuf > 0 {
        net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_SNDBUF, u.sndbuf / 2)?;
    }
    if u.passcred {
        net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
    }
    if u.rcvtimeo_us != 0 {
        net::setsockopt_timeval(s, libc::SO_RCVTIMEO, u.rcvtimeo_us)?;
    }
    if u.sndtimeo_us != 0 {
        net::setsockopt_timeval(s, libc::SO_SNDTIMEO, u.sndtimeo_us)?;
    }
    Ok(())
}

/// Unix-domain sockets.
pub(crate) struct UnixKind;

impl ObjectKind for UnixKind {
    fn name(&self) -> &'static str {
        "unix socket"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::UnixSocket]
    }

    /// After the inet kind in the registry: the sockets left are unix ones.
    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.sock_ino.is_some()
    }

    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        cx: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        let ino = p.sock_ino.expect("recognised as a socket");
        fo.kind = FileKind::UnixSocket as i32;
        fo.file_id = None;
        let (st, inflight) = {
            let sock = t.borrow(p.pid, p.fd)?;
            t.unix
                .as_mut()
                .expect("loaded at the first socket")
                .dump(p.pid, p.fd, ino, &sock)?
        };
        if !inflight.is_empty() && cx.depth > 0 {
            return Err(p.unsupported(
                "carries a unix socket that itself has files in flight; not supported",
            ));
        }
        fo.state = Some(rec::file_object::State::Unix(st));
        Ok(inflight)
    }

    /// Every peer must be inside the tree.
    fn dump_finish(&self, t: &mut FileTable) -> Result<(), CheckpointError> {
        match &t.unix {
            Some(u) => u.check_peers(&t.files, &t.holders),
            None => Ok(()),
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

    /// Queued messages are sent again once every description is open (they may carry any).
    fn finish(&self, o: &mut Opened, cx: &mut RestoreCtx<'_>) -> Result<(), Failure> {
        requeue_all(cx.img, &o.files)
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        let Some(u) = f.unix() else {
            return "unix socket".into();
        };
        let ty = match u.sock_type {
            libc::SOCK_STREAM => "stream",
            libc::SOCK_DGRAM => "dgram",
            libc::SOCK_SEQPACKET => "seqpacket",
            _ => "?",
        };
        let state = match u.state {
            1 => "connected",
            10 => "listening",
            _ => "unconnected",
        };
        let name = if u.name.is_empty() {
            String::new()
        } else if u.name[0] == 0 {
            format!(" @{}", String::from_utf8_lossy(&u.name[1..]))
        } else {
            format!(" {}", String::from_utf8_lossy(&u.name))
        };
        let peer = if u.peer_ino != 0 {
            format!(" peer socket:[{}]", u.peer_ino)
        } else {
            String::new()
        };
        let queued: usize = u.queue.iter().map(|m| m.data.len()).sum();
        let queued = if queued > 0 {
            format!(", {queued} bytes in {} message(s) queued", u.queue.len())
        } else {
            String::new()
        };
        let pending = if u.pending_clients.is_empty() {
            String::new()
        } else {
            format!(", {} pending connection(s)", u.pending_clients.len())
        };
        format!(
            "unix {ty} socket:[{}] {state}{name}{peer}{queued}{pending}",
            u.ino
        )
    }
}
