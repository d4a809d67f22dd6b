//! Unix-domain sockets.
//!
//! ## Dump
//! `sock_diag` (`UNIX_DIAG`, see [`stasis_sys::diag`]) gives each socket's type, state, bound
//! name, peer inode and a listener's pending connections. The socket itself is borrowed with
//! `pidfd_getfd` (same socket, same queues) to read its options and the data queued for reading:
//! `SO_PEEK_OFF` is set to 0 and `recvmsg(MSG_PEEK)` called until the queue is exhausted — each
//! datagram or seqpacket record comes separately, so boundaries are kept; a stream or seqpacket
//! queue is peeked only up to the bytes `sock_diag` counts (past them a peek would consume a
//! pending ECONNRESET) — then the original peek offset is put back. Files in flight
//! (`SCM_RIGHTS`) come as copies and are dumped like fds of ours (sockets among them too,
//! nested up to [`MAX_INFLIGHT_DEPTH`]).
//!
//! A connected socket without a peer had its peer closed (`peer_closed`; a pending error, seen
//! as `POLLERR` without consuming it, is `peer_reset`). A path name is checked against the
//! socket file, found from the socket (`SIOCUNIXFILE`; by name and `UNIX_DIAG_VFS` inode on
//! older kernels): still there, its mode and owner are saved (and for a relative name the
//! directory it was bound in); deleted or moved, the name is marked `name_gone`. The data a pending
//! connection holds is read after the parasites are in place ([`pending`]).
//!
//! ## Restore
//! Listeners are bound (a stale socket file left at the path is removed) and listen again; each
//! pending connection is made again by its client socket connecting to the listener, in queue
//! order, and sending what the server socket held. Connected pairs become `socketpair`s; a
//! socket whose peer closed is paired with a temporary peer that sends its queue (and, for a
//! reset, is left a byte unread) and is closed; unconnected sockets are bound to their names;
//! a datagram socket connected one way is connected to its peer's name. A name whose file was
//! gone is bound by a thread of its own (`unshare(CLONE_FS)`) chrooted into a scratch directory,
//! removed once the queues are refilled; a relative name from its directory; a socket file gets
//! its mode and owner back. Queued data is sent again from the peer (datagrams one by one, each
//! from its sender's name: the socket of the image bound to it, or a temporary socket bound to
//! it). Then shutdown state and options.
//!
//! Not kept: the local name of an accepted connection (it shares the listener's path), the name
//! of a peer that closed, credentials attached to queued messages. Refused: peers outside the
//! tree, and the pending-connection cases listed in [`pending`].

mod pending;

pub(crate) use pending::dump_pending_connections;

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::kind::{DumpCtx, ObjectKind, RestoreCtx};
use crate::files::{FileTable, Opened, Probe};
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::diag::UnixDiag;
use stasis_sys::net;
use stasis_sys::sys;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

const TCP_LISTEN: u8 = 10;
const TCP_ESTABLISHED: u8 = 1;

/// How deep sockets in flight may carry sockets in flight (a bound on the recursion).
const MAX_INFLIGHT_DEPTH: u32 = 8;

/// Files in flight found in a socket's queue: (message index, our copies of the files).
pub type InFlight = Vec<(usize, Vec<OwnedFd>)>;

/// The messages queued on socket `s` (its peek offset set to 0 first), read with `MSG_PEEK`
/// up to `limit` bytes when given, and the files in flight they carry.
fn peek_queue(
    s: RawFd,
    sock_type: i32,
    limit: Option<usize>,
) -> std::io::Result<(Vec<rec::UnixMessage>, InFlight)> {
    net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)?;
    let stream = sock_type == libc::SOCK_STREAM;
    let mut queue = Vec::new();
    let mut inflight: InFlight = Vec::new();
    let mut all = Vec::new();
    let mut seen = 0usize;
    while limit.is_none_or(|l| seen < l) {
        let Some(m) = net::peek_next(s, 256 * 1024, stream)? else {
            break;
        };
        seen += m.data.len();
        // Stream bytes merge into one message, except where files ride along: they travel
        // with the first byte of their chunk, which must stay a message start.
        if stream && m.fds.is_empty() {
            all.extend_from_slice(&m.data);
            continue;
        }
        if stream && !all.is_empty() {
            queue.push(rec::UnixMessage {
                data: std::mem::take(&mut all),
                ..Default::default()
            });
        }
        if !m.fds.is_empty() {
            inflight.push((queue.len(), m.fds));
        }
        queue.push(rec::UnixMessage {
            data: m.data,
            from: m.from,
            fds: Vec::new(),
        });
    }
    if stream && !all.is_empty() {
        queue.push(rec::UnixMessage {
            data: all,
            ..Default::default()
        });
    }
    Ok((queue, inflight))
}

/// The namespace's unix sockets, by inode (read once per checkpoint).
pub struct UnixTable {
    by_ino: HashMap<u32, UnixDiag>,
    /// Listeners whose pending connections hold data: (inode, a holder's pid and fd).
    pending_with_data: Vec<(u32, i32, i32)>,
}

impl UnixTable {
    /// Query `sock_diag`.
    pub fn load() -> Result<Self, Failure> {
        let all =
            stasis_sys::diag::unix_sockets().ctx(0, || "sock_diag dump of unix sockets".into())?;
        Ok(Self {
            by_ino: all.into_iter().map(|d| (d.ino, d)).collect(),
            pending_with_data: Vec::new(),
        })
    }

    /// Whether `ino` is a unix socket.
    pub fn is_unix(&self, ino: u64) -> bool {
        self.by_ino.contains_key(&(ino as u32))
    }

    /// Whether `ino` is the client of a connection a listener has not accepted yet.
    fn is_pending_client(&self, ino: u32) -> bool {
        self.by_ino
            .values()
            .any(|l| l.state == TCP_LISTEN && l.icons.contains(&ino))
    }

    /// The socket file of a path name: its mode and owner if it is still this socket's,
    /// otherwise the name is marked gone; for a relative name, the directory it was bound in.
    /// The file is found from the socket itself (`SIOCUNIXFILE`: its path as the kernel knows
    /// it, even after the process changed directory, and whether it was deleted); on kernels
    /// without it, by the name (from the holder's current directory when relative) and the
    /// `UNIX_DIAG_VFS` inode.
    fn dump_file(&self, pid: i32, d: &UnixDiag, sock: RawFd, st: &mut rec::UnixSocketState) {
        use std::os::unix::fs::MetadataExt;
        let Some(name) = d
            .name
            .as_ref()
            .filter(|n| n.first().is_some_and(|&b| b != 0))
        else {
            return;
        };
        let name = os(name);
        let relative = !name.is_absolute();
        // (path of the file now, its metadata) if this socket's file still has `name`.
        let found = match net::unix_file(sock) {
            Ok(f) => {
                let link = format!("/proc/self/fd/{}", f.as_raw_fd());
                let now = std::fs::read_link(&link).ok();
                let md = std::fs::metadata(&link).ok();
                match (now, md) {
                    (Some(now), Some(md)) if md.nlink() > 0 && now.ends_with(name) => {
                        Some((now, md))
                    }
                    _ => None,
                }
            }
            Err(_) => {
                let path = if relative {
                    Path::new(&format!("/proc/{pid}/cwd")).join(name)
                } else {
                    name.to_path_buf()
                };
                let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
                std::fs::symlink_metadata(&path)
                    .ok()
                    .filter(|md| d.vfs.is_some_and(|(ino, _)| md.ino() == ino as u64))
                    .map(|md| (if relative { cwd.join(name) } else { path }, md))
            }
        };
        let Some((now, md)) = found else {
            st.name_gone = true;
            return;
        };
        st.file_mode = md.mode() & 0o7777;
        st.file_owner = (md.uid() as u64) << 32 | md.gid() as u64;
        if relative {
            // The directory the relative name was resolved from.
            let n = name.components().count();
            let dir: PathBuf = now
                .components()
                .take(now.components().count().saturating_sub(n))
                .collect();
            st.bind_dir = dir.to_string_lossy().into_owned();
        }
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
            // it is read once the tasks can be injected into (`dump_pending_connections`).
            let with_data = d.icons.iter().any(|c| {
                self.by_ino
                    .get(c)
                    .is_some_and(|c| c.rqlen.is_some_and(|(_, w)| w > 0))
            });
            if with_data {
                self.pending_with_data.push((d.ino, pid, fd));
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
            ..Default::default()
        };
        self.dump_file(pid, &d, s, &mut st);
        if d.state == TCP_LISTEN {
            st.pending_clients = d.icons.clone();
            return Ok((st, Vec::new()));
        }
        let stream_like = d.sock_type as i32 != libc::SOCK_DGRAM;
        if stream_like && d.state != TCP_ESTABLISHED {
            // Unconnected stream or seqpacket socket: nothing can be queued (recvmsg: EINVAL).
            return Ok((st, Vec::new()));
        }
        // Connected, yet no peer: the peer was closed (a datagram socket stays connected to the
        // dead peer until its next send fails with ECONNREFUSED). A datagram socket that others
        // connected to shows the same state and no peer, but getpeername tells it has none.
        if d.state == TCP_ESTABLISHED
            && d.peer == 0
            && !self.is_pending_client(d.ino)
            && (stream_like || matches!(net::peer_name(s), Ok(Some(_))))
        {
            st.peer_closed = true;
            if stream_like {
                let ev = net::poll_now(s, libc::POLLIN)
                    .ctx(pid, || format!("fd {fd}: poll for a pending error"))?;
                st.peer_reset = ev & libc::POLLERR != 0;
            }
        }
        // Queued data, without consuming it.
        net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
            .ctx(pid, || format!("fd {fd}: SO_PEEK_OFF"))?;
        // A stream or seqpacket socket is peeked up to the bytes `sock_diag` counts, never
        // past them: past the end a peek reports (and clears) a pending ECONNRESET, and a
        // seqpacket socket whose peer closed reads end-of-file forever.
        let limit = stream_like
            .then_some(d.rqlen.map(|(r, _)| r as usize))
            .flatten();
        let res = peek_queue(s, d.sock_type as i32, limit)
            .ctx(pid, || format!("fd {fd}: peeking queued data"));
        let _ = net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, st.peek_off);
        let (queue, inflight) = res?;
        st.queue = queue;
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

// ---------------------------------------------------------------------------------------------
// Restore side.

fn remove_stale_socket_file(name: &[u8]) {
    if is_path(name) {
        let p = os(name);
        if let Ok(md) = std::fs::symlink_metadata(p) {
            use std::os::unix::fs::FileTypeExt;
            if md.file_type().is_socket() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn is_path(name: &[u8]) -> bool {
    name.first().is_some_and(|&b| b != 0)
}

fn os(name: &[u8]) -> &Path {
    Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name))
}

fn bytes(p: PathBuf) -> Vec<u8> {
    std::os::unix::ffi::OsStringExt::into_vec(p.into_os_string())
}

/// Where names that no path may show again are bound: a private root per socket under
/// `<tmp>/stasis-unix-<restorer pid>`, removed as a whole once the queues are refilled (the
/// sockets keep their names, with no file behind them, as before).
fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("stasis-unix-{}", sys::getpid()))
}

/// Removes the scratch root when dropped.
struct ScratchGuard;

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(scratch_root());
    }
}

/// The key under which the temporary peer of a socket whose peer had closed waits in
/// `RestoreCtx::made` between the create and finish phases (file object ids are small).
fn orphan_key(id: u32) -> u32 {
    u32::MAX - id
}

/// Bind `fd` to `name` from a thread of its own (`unshare(CLONE_FS)`) that first enters `root`
/// (chroot, creating the name's directories there) or `dir` (chdir): the socket keeps the
/// string given as its name, whatever directory it was resolved from.
fn bind_from(
    fd: RawFd,
    name: &[u8],
    root: Option<&Path>,
    dir: Option<&Path>,
) -> std::io::Result<()> {
    std::thread::scope(|sc| {
        sc.spawn(|| -> std::io::Result<()> {
            stasis_sys::ns::unshare(libc::CLONE_FS)?;
            if let Some(r) = root {
                stasis_sys::ns::chroot(r)?;
                std::env::set_current_dir("/")?;
                if let Some(parent) = os(name).parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
            }
            if let Some(d) = dir {
                std::env::set_current_dir(d)?;
            }
            net::unix_bind(fd, name)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("binding thread panicked")))
    })
}

/// A name that reaches the restored socket of `f` (for connects and datagrams sent before
/// the scratch root goes): its name, or the file made for it in the scratch root, or its
/// relative name from the directory it was bound in.
fn reach_name(f: &rec::FileObject, u: &rec::UnixSocketState) -> Vec<u8> {
    if !is_path(&u.name) {
        return u.name.clone();
    }
    if u.name_gone {
        let rel = os(&u.name).strip_prefix("/").unwrap_or(os(&u.name));
        return bytes(scratch_root().join(f.id.to_string()).join(rel));
    }
    if !u.bind_dir.is_empty() && u.name[0] != b'/' {
        return bytes(Path::new(&u.bind_dir).join(os(&u.name)));
    }
    u.name.clone()
}

/// Bind a restored socket to its saved name: a path whose file still existed is bound again
/// (a stale socket file removed first) and gets its file's mode and owner back; a path whose
/// file was deleted since (or its directory removed) is bound inside the scratch root, so that
/// nothing appears at the path; a relative name from the directory it was bound in.
fn bind_name(fd: RawFd, f: &rec::FileObject, u: &rec::UnixSocketState) -> Result<(), Failure> {
    let what = || {
        format!(
            "unix socket socket:[{}]: bind to {}",
            u.ino,
            String::from_utf8_lossy(&u.name)
        )
    };
    if !is_path(&u.name) {
        return net::unix_bind(fd, &u.name).ctx(0, what);
    }
    if u.name_gone {
        let root = scratch_root().join(f.id.to_string());
        std::fs::create_dir_all(&root).ctx(0, what)?;
        return bind_from(fd, &u.name, Some(&root), None).ctx(0, what);
    }
    let full = reach_name(f, u);
    remove_stale_socket_file(&full);
    if full != u.name {
        bind_from(fd, &u.name, None, Some(Path::new(&u.bind_dir))).ctx(0, what)?;
    } else {
        net::unix_bind(fd, &u.name).ctx(0, what)?;
    }
    if u.file_mode != 0 {
        use std::os::unix::fs::PermissionsExt;
        let p = os(&full);
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(u.file_mode))
            .ctx(0, || format!("{}: chmod {:o}", what(), u.file_mode))?;
        let (uid, gid) = ((u.file_owner >> 32) as u32, u.file_owner as u32);
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .ctx(0, || format!("{}: chown {uid}:{gid}", what()))?;
    }
    Ok(())
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

fn what(u: &rec::UnixSocketState) -> String {
    format!("unix socket socket:[{}]", u.ino)
}

/// Listeners and their pending connections, in queue order; each client sends again what it
/// had sent into its connection's (not yet accepted) server socket.
fn create_listeners(
    socks: &[Sock<'_>],
    by_ino: &HashMap<u32, Sock<'_>>,
    out: &mut HashMap<u32, OwnedFd>,
) -> Result<(), Failure> {
    for &(f, u) in socks {
        if u.state != TCP_LISTEN as i32 {
            continue;
        }
        let s = net::unix_socket(u.sock_type).ctx(0, || what(u))?;
        bind_name(s.as_raw_fd(), f, u)?;
        net::listen(s.as_raw_fd(), u.backlog.max(1) as i32)
            .ctx(0, || format!("{}: listen", what(u)))?;
        let reach = reach_name(f, u);
        for client in &u.pending_clients {
            let Some(&(cf, cu)) = by_ino.get(client) else {
                continue;
            };
            let c = net::unix_socket(cu.sock_type).ctx(0, || what(cu))?;
            net::unix_connect(c.as_raw_fd(), &reach).ctx(0, || {
                format!("{}: reconnecting to pending listener", what(cu))
            })?;
            for m in &cu.embryo_queue {
                net::send_all(c.as_raw_fd(), &m.data, None).ctx(0, || {
                    format!(
                        "{}: sending again {} bytes of its pending connection",
                        what(cu),
                        m.data.len()
                    )
                })?;
            }
            out.insert(cf.id, c);
        }
        out.insert(f.id, s);
    }
    Ok(())
}

/// Create every unix socket of the image; returns file object id → our fd, and the temporary
/// peers of sockets whose peer had closed (under [`orphan_key`]).
pub fn create_all(img: &rec::Checkpoint) -> Result<HashMap<u32, OwnedFd>, Failure> {
    let (socks, by_ino) = sockets(img);
    let mut out: HashMap<u32, OwnedFd> = HashMap::new();
    // 1. Listeners and their pending connections.
    create_listeners(&socks, &by_ino, &mut out)?;
    let listener_names: std::collections::HashSet<Vec<u8>> = socks
        .iter()
        .filter(|(_, u)| u.state == TCP_LISTEN as i32)
        .map(|(_, u)| u.name.clone())
        .collect();
    // 2. Pairs connected both ways, and sockets whose peer closed (paired with a temporary
    //    peer that sends their queue and is closed in the finish phase).
    for &(f, u) in &socks {
        if out.contains_key(&f.id) {
            continue;
        }
        let (pf, pu) = if u.peer_closed {
            (None, None)
        } else if let Some(&(pf, pu)) = by_ino.get(&u.peer_ino) {
            if u.peer_ino == 0 || pu.peer_ino != u.ino || out.contains_key(&pf.id) {
                continue;
            }
            (Some(pf), Some(pu))
        } else {
            continue;
        };
        let (a, b) =
            net::unix_socketpair(u.sock_type).ctx(0, || format!("{}: socketpair", what(u)))?;
        // Ends that had a name get it back, unless it is a listener's (an accepted connection
        // shows its listener's path, which only the listener can hold).
        for (end, sf, st) in [(&a, Some(f), Some(u)), (&b, pf, pu)] {
            let (Some(sf), Some(st)) = (sf, st) else {
                continue;
            };
            if !st.name.is_empty() && !listener_names.contains(&st.name) {
                bind_name(end.as_raw_fd(), sf, st)?;
            }
        }
        out.insert(f.id, a);
        out.insert(pf.map(|pf| pf.id).unwrap_or(orphan_key(f.id)), b);
    }
    // 3. The rest: bind, then connect one-way datagram sockets.
    for &(f, u) in &socks {
        if out.contains_key(&f.id) {
            continue;
        }
        let s = net::unix_socket(u.sock_type).ctx(0, || what(u))?;
        if !u.name.is_empty() {
            bind_name(s.as_raw_fd(), f, u)?;
        }
        out.insert(f.id, s);
    }
    for &(f, u) in &socks {
        if u.peer_ino == 0 || u.state == TCP_LISTEN as i32 {
            continue;
        }
        if let Some(&(pf, pu)) = by_ino.get(&u.peer_ino) {
            if pu.peer_ino != u.ino && !pu.name.is_empty() {
                net::unix_connect(out[&f.id].as_raw_fd(), &reach_name(pf, pu))
                    .ctx(0, || format!("{}: connect to its peer", what(u)))?;
            }
        }
    }
    for &(f, u) in &socks {
        let s = out[&f.id].as_raw_fd();
        set_opts(s, u).ctx(0, || format!("{}: socket options", what(u)))?;
    }
    Ok(out)
}

/// Datagram senders that are not sockets of the image (closed since, or outside the tree):
/// temporary sockets bound to their names (a path inside the scratch root), one per name.
struct Senders {
    made: HashMap<Vec<u8>, OwnedFd>,
}

impl Senders {
    fn get(&mut self, ty: i32, name: &[u8]) -> Result<RawFd, Failure> {
        if let Some(s) = self.made.get(name) {
            return Ok(s.as_raw_fd());
        }
        let what = || {
            format!(
                "a temporary sender bound to {} (the sender of a queued datagram)",
                String::from_utf8_lossy(name)
            )
        };
        let s = net::unix_socket(ty).ctx(0, what)?;
        if is_path(name) {
            let root = scratch_root().join(format!("sender-{}", self.made.len()));
            std::fs::create_dir_all(&root).ctx(0, what)?;
            bind_from(s.as_raw_fd(), name, Some(&root), None).ctx(0, what)?;
        } else {
            net::unix_bind(s.as_raw_fd(), name).ctx(0, what)?;
        }
        let fd = s.as_raw_fd();
        self.made.insert(name.to_vec(), s);
        Ok(fd)
    }
}

/// Queue the saved data again (sent by the peer, by the bound sender of a datagram, or from a
/// temporary socket), with files in flight attached, then apply shutdown state and peek offsets.
/// Runs once every file description of the image exists (`files`: file object id → our fd);
/// `peers` holds the temporary peers of sockets whose peer had closed, closed here.
pub fn requeue_all(
    img: &rec::Checkpoint,
    files: &HashMap<u32, OwnedFd>,
    peers: &mut HashMap<u32, OwnedFd>,
) -> Result<(), Failure> {
    let _scratch = ScratchGuard;
    let (socks, by_ino) = sockets(img);
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
    let mut senders = Senders {
        made: HashMap::new(),
    };
    for &(f, u) in &socks {
        let orphan_peer = peers.remove(&orphan_key(f.id));
        if !u.queue.is_empty() {
            requeue_one(
                f,
                u,
                &by_ino,
                out,
                &by_name,
                &mut senders,
                orphan_peer.as_ref(),
            )?;
        }
        if let Some(tmp) = orphan_peer {
            if u.peer_reset {
                // Unread data of ours in the closing peer: the kernel reports ECONNRESET.
                net::send_all(out[&f.id].as_raw_fd(), b"\0", None)
                    .ctx(0, || format!("{}: reset by its closing peer", what(u)))?;
            }
            drop(tmp);
        }
    }
    for &(f, u) in &socks {
        let s = out[&f.id].as_raw_fd();
        if !u.peer_closed && u.shutdown & 2 != 0 {
            net::shutdown(s, libc::SHUT_WR).ctx(0, || format!("{}: shutdown", what(u)))?;
        }
        if !u.peer_closed && u.shutdown & 1 != 0 {
            net::shutdown(s, libc::SHUT_RD).ctx(0, || format!("{}: shutdown", what(u)))?;
        }
        if u.peek_off >= 0 {
            net::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, u.peek_off)
                .ctx(0, || format!("{}: SO_PEEK_OFF", what(u)))?;
        }
    }
    Ok(())
}

/// Queue the saved messages of one socket again.
fn requeue_one(
    f: &rec::FileObject,
    u: &rec::UnixSocketState,
    by_ino: &HashMap<u32, Sock<'_>>,
    out: &HashMap<u32, OwnedFd>,
    by_name: &HashMap<Vec<u8>, u32>,
    senders: &mut Senders,
    orphan_peer: Option<&OwnedFd>,
) -> Result<(), Failure> {
    let peer = by_ino
        .get(&u.peer_ino)
        .filter(|&&(_, pu)| u.peer_ino != 0 && pu.peer_ino == u.ino)
        .and_then(|&(pf, _)| out.get(&pf.id))
        .or(orphan_peer)
        .map(|p| p.as_raw_fd());
    let reach = reach_name(f, u);
    let tmp;
    let (from, to): (RawFd, Option<&[u8]>) = match peer {
        Some(p) => (p, None),
        None if !u.name.is_empty() => {
            tmp = net::unix_socket(u.sock_type).ctx(0, || what(u))?;
            (tmp.as_raw_fd(), Some(reach.as_slice()))
        }
        None => {
            return Err(Failure::msg(
                0,
                format!("{}: queued data but no way to send it again", what(u)),
            ))
        }
    };
    for m in &u.queue {
        // A datagram to a bound socket is sent again by its sender's name: the socket of the
        // image bound to it, or a temporary one.
        let sender = if !m.from.is_empty() && to.is_some() {
            match by_name.get(&m.from).and_then(|id| out.get(id)) {
                Some(s) => Some(s.as_raw_fd()),
                None => Some(senders.get(u.sock_type, &m.from)?),
            }
        } else {
            None
        };
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
        let sfd = sender.unwrap_or(from);
        if attached.is_empty() {
            net::send_all(sfd, &m.data, to)
        } else {
            net::send_with_fds(sfd, &m.data, to, &attached)
        }
        .ctx(0, || {
            format!("{}: re-queueing {} bytes", what(u), m.data.len())
        })?;
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
        if !inflight.is_empty() && cx.depth >= MAX_INFLIGHT_DEPTH {
            return Err(p.unsupported(&format!(
                "a unix socket in flight nested more than {MAX_INFLIGHT_DEPTH} deep (sockets in flight carrying sockets)"
            )));
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
        let made = create_all(cx.img).inspect_err(|_| drop(ScratchGuard))?;
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
        requeue_all(cx.img, &o.files, &mut cx.made)
    }

    /// Pending connections of listeners holding data: accepted, read and put back.
    fn after_parasites(
        &self,
        frozen: &crate::freeze::Frozen,
        procs: &[rec::Process],
        t: &mut FileTable,
    ) -> Result<(), CheckpointError> {
        dump_pending_connections(frozen, procs, t)
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
            1 if u.peer_reset => "connected, peer closed (reset)",
            1 if u.peer_closed => "connected, peer closed",
            1 => "connected",
            10 => "listening",
            _ => "unconnected",
        };
        let name = if u.name.is_empty() {
            String::new()
        } else if u.name[0] == 0 {
            format!(" @{}", String::from_utf8_lossy(&u.name[1..]))
        } else {
            let gone = if u.name_gone { " (file gone)" } else { "" };
            let mode = if u.file_mode != 0 {
                format!(" mode {:o}", u.file_mode)
            } else {
                String::new()
            };
            format!(" {}{gone}{mode}", String::from_utf8_lossy(&u.name))
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
