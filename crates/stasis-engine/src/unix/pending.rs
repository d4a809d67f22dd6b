//! Listeners whose pending connections hold data.
//!
//! What the client of a connection not accepted yet has sent sits in the connection's server
//! socket, which has no fd and no inode: the only way to read it is to accept the connection.
//! Once the tasks can be injected into (after the parasites are in place), every pending
//! connection of such a listener is accepted from our copy of it, in queue order, its queue is
//! peeked, and the connection is *put back*: a new client socket with the saved client's
//! options, status flags and shutdown state connects to the listener again (so it queues in the
//! same order) and sends the same bytes, and every fd of the tree that held the old client is
//! replaced by it (the task receives it over a unix socket it connects to ours, then `dup3`s it
//! to the fd number with its close-on-exec flag). The listener and the clients' holders see the
//! same state as before; the image records what the server sockets held (`embryo_queue`) and
//! the restore makes the clients send it again.
//!
//! The listener is reached through its socket file (`SIOCUNIXFILE`, which works even when the
//! file was deleted since) or its abstract name; an epoll registration of an old client is made
//! again on the new one. Refused (before anything is accepted): a client outside the tree or in
//! flight, or watched under a number that no longer holds it. If stasis is killed between
//! accepting and putting back, those connections are lost. Files in flight inside such a queue are
//! put back with their messages, then refused.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::FileTable;
use crate::freeze::Frozen;
use crate::remote::{words, Remote};
use stasis_image::records as rec;
use stasis_sys::{net, ptrace, sys};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A pending connection's client: its file object index and the tree's fds holding it.
struct Client {
    index: usize,
    /// (pid, fd, close-on-exec).
    holders: Vec<(i32, i32, bool)>,
    /// Status flags of its open file description.
    flags: i64,
    /// Its epoll registrations: (owner pid, epoll fd there, registration).
    watches: Vec<(i32, i32, rec::EpollItem)>,
}

/// Read the queues of the pending connections that hold data, putting every connection back.
pub(crate) fn dump_pending_connections(
    frozen: &Frozen,
    procs: &[rec::Process],
    t: &mut FileTable,
) -> Result<(), CheckpointError> {
    let jobs = match t.unix.as_mut() {
        Some(u) => std::mem::take(&mut u.pending_with_data),
        None => return Ok(()),
    };
    for (ino, pid, fd) in jobs {
        one_listener(frozen, procs, t, ino, pid, fd)?;
    }
    Ok(())
}

/// The clients of listener `li`'s pending connections, checked before anything changes.
fn clients_of(
    procs: &[rec::Process],
    t: &mut FileTable,
    li: usize,
    unsupported: &dyn Fn(String) -> CheckpointError,
) -> Result<Vec<Client>, CheckpointError> {
    let by_ino: HashMap<u32, usize> = t
        .files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.unix().map(|u| (u.ino, i)))
        .collect();
    let pending = t.files[li]
        .unix()
        .expect("a unix socket")
        .pending_clients
        .clone();
    let mut clients = Vec::new();
    for c in pending {
        let Some(&index) = by_ino.get(&c) else {
            return Err(unsupported(format!(
                "has a pending connection holding data whose client socket:[{c}] is outside the tree; not supported"
            )));
        };
        let id = t.files[index].id;
        let holders: Vec<(i32, i32, bool)> = procs
            .iter()
            .flat_map(|p| {
                p.fds
                    .iter()
                    .filter(move |x| x.file_id == id)
                    .map(move |x| (p.pid, x.fd, x.cloexec))
            })
            .collect();
        let in_flight = t
            .files
            .iter()
            .filter_map(|f| f.unix())
            .any(|u| u.queue.iter().any(|m| m.fds.contains(&id)));
        // Epoll registrations of the client: registered again on the new client, by the
        // owner of the epoll, under the same number (which must hold the client).
        let mut watches = Vec::new();
        for (efid, f) in t.files.iter().enumerate() {
            let Some(ep) = f.epoll() else { continue };
            for it in ep.items.iter().filter(|it| it.target == Some(id)) {
                let efd = procs
                    .iter()
                    .find(|p| p.pid == it.owner_pid)
                    .and_then(|p| p.fds.iter().find(|x| x.file_id == efid as u32))
                    .map(|x| x.fd);
                match efd {
                    Some(efd)
                        if holders
                            .iter()
                            .any(|&(hp, hfd, _)| hp == it.owner_pid && hfd == it.tfd) =>
                    {
                        watches.push((it.owner_pid, efd, it.clone()))
                    }
                    _ => {
                        return Err(unsupported(format!(
                            "has a pending connection holding data whose client socket:[{c}] is watched by an epoll under a number that no longer holds it; not supported"
                        )))
                    }
                }
            }
        }
        if holders.is_empty() || in_flight {
            return Err(unsupported(format!(
                "has a pending connection holding data whose client socket:[{c}] is in flight; not supported"
            )));
        }
        let (hp, hfd, _) = holders[0];
        let copy = t.borrow(hp, hfd)?;
        let flags = sys::fcntl(copy.as_raw_fd(), libc::F_GETFL, 0)
            .ctx(hp, || format!("fd {hfd}: F_GETFL"))?;
        clients.push(Client {
            index,
            holders,
            flags,
            watches,
        });
    }
    Ok(clients)
}

fn one_listener(
    frozen: &Frozen,
    procs: &[rec::Process],
    t: &mut FileTable,
    ino: u32,
    pid: i32,
    fd: i32,
) -> Result<(), CheckpointError> {
    let unsupported = |what: String| CheckpointError::Unsupported {
        pid,
        what: format!("fd {fd} (socket:[{ino}]) {what}"),
    };
    let Some(li) = t
        .files
        .iter()
        .position(|f| f.unix().is_some_and(|u| u.ino == ino))
    else {
        return Ok(());
    };
    let lu = t.files[li].unix().expect("a unix socket");
    let name = lu.name.clone();
    let clients = clients_of(procs, t, li, &unsupported)?;
    let listener = t.borrow(pid, fd)?;
    // The listener is reached again through its socket file (even deleted: SIOCUNIXFILE gives
    // it, and /proc/self/fd/N leads to it), or by its abstract name.
    let file = if name.first().is_some_and(|&b| b != 0) {
        Some(net::unix_file(listener.as_raw_fd()).ctx(pid, || {
            format!("fd {fd}: SIOCUNIXFILE (the listener's socket file)")
        })?)
    } else {
        None
    };
    let reach: Vec<u8> = match &file {
        Some(f) => format!("/proc/self/fd/{}", f.as_raw_fd()).into_bytes(),
        None => name,
    };
    // From here the tree's listener changes: every connection taken is put back.
    let mut err: Option<CheckpointError> = None;
    let mut taken = Vec::new();
    for _ in &clients {
        match net::accept(listener.as_raw_fd()) {
            Ok(e) => taken.push(e),
            Err(e) => {
                err = Some(
                    Failure::new(pid, format!("fd {fd}: accepting a pending connection"), e).into(),
                );
                break;
            }
        }
    }
    let mut fresh = Vec::new();
    for (c, e) in clients.iter().zip(&taken) {
        let cu = t.files[c.index].unix().expect("a unix socket").clone();
        let limit = sys::fionread(e.as_raw_fd()).ok();
        let (queue, inflight) = match super::peek_queue(e.as_raw_fd(), cu.sock_type, limit) {
            Ok(q) => q,
            Err(e) => {
                err.get_or_insert(
                    Failure::new(pid, format!("fd {fd}: peeking a pending connection"), e).into(),
                );
                (Vec::new(), Vec::new())
            }
        };
        if !inflight.is_empty() {
            err.get_or_insert(unsupported(
                "has a pending connection holding files in flight; not supported".into(),
            ));
        }
        match put_back(&cu, c.flags, &reach, &queue, &inflight) {
            Ok(s) => fresh.push(s),
            Err(e) => {
                err.get_or_insert(
                    Failure::new(
                        pid,
                        format!(
                            "fd {fd}: putting back the pending connection of socket:[{}]",
                            cu.ino
                        ),
                        e,
                    )
                    .into(),
                );
                break;
            }
        }
        if let Some(u) = t.files[c.index].unix_mut() {
            u.embryo_queue = queue;
        }
    }
    // Every holder of an old client takes its new socket; its epoll registrations are made
    // again on it.
    let mut per_pid: HashMap<i32, Vec<(i32, bool, RawFd)>> = HashMap::new();
    let mut watches: HashMap<i32, Vec<(i32, rec::EpollItem)>> = HashMap::new();
    for (c, s) in clients.iter().zip(&fresh) {
        for &(hp, hfd, cloexec) in &c.holders {
            per_pid
                .entry(hp)
                .or_default()
                .push((hfd, cloexec, s.as_raw_fd()));
        }
        for (owner, efd, it) in &c.watches {
            watches.entry(*owner).or_default().push((*efd, it.clone()));
        }
    }
    for (hp, list) in per_pid {
        let w = watches.remove(&hp).unwrap_or_default();
        if let Err(e) = swap_in(frozen, hp, &list, &w) {
            err.get_or_insert(e.into());
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A new client for a taken connection: the saved client's options, connected to the listener
/// again, sending the same messages (with our copies of their files), then its status flags
/// and shutdown state.
fn put_back(
    cu: &rec::UnixSocketState,
    flags: i64,
    reach: &[u8],
    queue: &[rec::UnixMessage],
    inflight: &super::InFlight,
) -> std::io::Result<OwnedFd> {
    let s = net::unix_socket(cu.sock_type)?;
    let fd = s.as_raw_fd();
    super::set_opts(fd, cu)?;
    net::unix_connect(fd, reach)?;
    for (i, m) in queue.iter().enumerate() {
        match inflight.iter().find(|(at, _)| *at == i) {
            Some((_, fds)) => {
                let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
                net::send_with_fds(fd, &m.data, None, &raw)?
            }
            None => net::send_all(fd, &m.data, None)?,
        }
    }
    if cu.shutdown & 2 != 0 {
        net::shutdown(fd, libc::SHUT_WR)?;
    }
    if cu.shutdown & 1 != 0 {
        net::shutdown(fd, libc::SHUT_RD)?;
    }
    if cu.peek_off >= 0 {
        net::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, cu.peek_off)?;
    }
    let keep = (libc::O_NONBLOCK | libc::O_APPEND) as i64;
    let cur = sys::fcntl(fd, libc::F_GETFL, 0)?;
    sys::fcntl(fd, libc::F_SETFL, (cur & !keep) | (flags & keep))?;
    Ok(s)
}

/// Put our sockets at fds of task `pid` (each `(fd, close-on-exec, ours)`): the task connects a
/// socket to a listener of ours, receives each one (`SCM_RIGHTS`) and `dup3`s it into place.
fn swap_in(
    frozen: &Frozen,
    pid: i32,
    list: &[(i32, bool, RawFd)],
    watches: &[(i32, rec::EpollItem)],
) -> Result<(), Failure> {
    let sp = frozen
        .procs
        .iter()
        .find(|p| p.pid == pid)
        .ok_or_else(|| Failure::msg(pid, "holder of a pending client not frozen"))?;
    let base = sp
        .parasite
        .ok_or_else(|| Failure::msg(pid, "no parasite to put a pending client back"))?;
    let leader = &sp.threads[0];
    let mut r = Remote::new(pid, leader.tid, base, leader.regs);
    let res = swap_calls(&mut r, pid, list).and_then(|()| {
        for (efd, it) in watches {
            let ev = [
                it.events.to_le_bytes().to_vec(),
                it.data.to_le_bytes().to_vec(),
            ]
            .concat();
            let a = r.put(0, &ev)?;
            r.call(
                &format!(
                    "epoll fd {efd}: EPOLL_CTL_ADD of the new pending client at fd {}",
                    it.tfd
                ),
                libc::SYS_epoll_ctl,
                &[*efd as u64, libc::EPOLL_CTL_ADD as u64, it.tfd as u64, a],
            )?;
        }
        Ok(())
    });
    ptrace::set_regs(leader.tid, &leader.regs).ctx(pid, || "restoring registers".into())?;
    res
}

fn swap_calls(r: &mut Remote, pid: i32, list: &[(i32, bool, RawFd)]) -> Result<(), Failure> {
    let what = |s: &str| format!("putting a pending client back: {s}");
    let mut name = vec![0u8];
    name.extend_from_slice(format!("stasis-pending-{}-{pid}", sys::getpid()).as_bytes());
    let lis = net::unix_socket(libc::SOCK_STREAM).ctx(pid, || what("socket"))?;
    net::unix_bind(lis.as_raw_fd(), &name).ctx(pid, || what("bind"))?;
    net::listen(lis.as_raw_fd(), 1).ctx(pid, || what("listen"))?;
    let mut addr = (libc::AF_UNIX as u16).to_le_bytes().to_vec();
    addr.extend_from_slice(&name);
    let a = r.put(0, &addr)?;
    let s = r.call(
        &what("socket"),
        libc::SYS_socket,
        &[
            libc::AF_UNIX as u64,
            (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
            0,
        ],
    )?;
    let res = (|| -> Result<(), Failure> {
        r.call(
            &what("connect"),
            libc::SYS_connect,
            &[s, a, addr.len() as u64],
        )?;
        let conn = net::accept(lis.as_raw_fd()).ctx(pid, || what("accept"))?;
        for &(fd, cloexec, ours) in list {
            net::send_with_fds(conn.as_raw_fd(), b"x", None, &[ours])
                .ctx(pid, || what("sendmsg"))?;
            let byte = r.put(448, &[0])?;
            let iov = r.put(384, &words(&[byte, 1]))?;
            let ctl = r.put(512, &[0u8; 24])?;
            let msg = r.put(256, &words(&[0, 0, iov, 1, ctl, 24, 0]))?;
            r.call(
                &what("recvmsg"),
                libc::SYS_recvmsg,
                &[s, msg, libc::MSG_CMSG_CLOEXEC as u64],
            )?;
            let cm = r.get(512, 24)?;
            let word = |i: usize| i32::from_le_bytes(cm[i..i + 4].try_into().expect("4 bytes"));
            if word(8) != libc::SOL_SOCKET || word(12) != libc::SCM_RIGHTS {
                return Err(Failure::msg(pid, what("no file received")));
            }
            let got = word(16) as u64;
            let fl = if cloexec { libc::O_CLOEXEC } else { 0 };
            r.call(&what("dup3"), libc::SYS_dup3, &[got, fd as u64, fl as u64])?;
            r.call(&what("close"), libc::SYS_close, &[got])?;
        }
        Ok(())
    })();
    r.call(&what("close"), libc::SYS_close, &[s])?;
    res
}
