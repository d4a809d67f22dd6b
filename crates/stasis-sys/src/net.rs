//! Socket calls for unix-domain sockets: creation, addresses, options, and reading queued
//! messages without consuming them (`MSG_PEEK` with `SO_PEEK_OFF`).

use crate::{check, last_err, sys::owned_fd};
use std::io;
use std::os::fd::{OwnedFd, RawFd};

fn sockaddr_un(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() > a.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in a.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
    Ok((a, len as libc::socklen_t))
}

fn name_of(a: &libc::sockaddr_un, len: libc::socklen_t) -> Vec<u8> {
    let n = (len as usize).saturating_sub(std::mem::size_of::<libc::sa_family_t>());
    let mut v: Vec<u8> = a.sun_path.iter().take(n).map(|&c| c as u8).collect();
    // Path names come NUL-terminated; abstract names start with NUL and keep every byte.
    if v.first().is_some_and(|&b| b != 0) {
        if let Some(p) = v.iter().position(|&b| b == 0) {
            v.truncate(p);
        }
    }
    v
}

/// `socket(AF_UNIX, type | SOCK_CLOEXEC)`.
pub fn unix_socket(ty: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments.
    let fd =
        check(unsafe { libc::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0) } as libc::c_long)?;
    Ok(owned_fd(fd as RawFd))
}

/// `socketpair(AF_UNIX, type | SOCK_CLOEXEC)`.
pub fn unix_socketpair(ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: the kernel writes two fds into the array.
    let raw =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    check(raw as libc::c_long)?;
    Ok((owned_fd(fds[0]), owned_fd(fds[1])))
}

/// `bind` to a unix address (path bytes, or NUL + abstract name).
pub fn unix_bind(fd: RawFd, name: &[u8]) -> io::Result<()> {
    let (a, len) = sockaddr_un(name)?;
    // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
    check(unsafe { libc::bind(fd, (&a as *const libc::sockaddr_un).cast(), len) } as libc::c_long)
        .map(|_| ())
}

/// `connect` to a unix address.
pub fn unix_connect(fd: RawFd, name: &[u8]) -> io::Result<()> {
    let (a, len) = sockaddr_un(name)?;
    // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
    check(
        unsafe { libc::connect(fd, (&a as *const libc::sockaddr_un).cast(), len) } as libc::c_long,
    )
    .map(|_| ())
}

/// `accept4(fd, SOCK_CLOEXEC | SOCK_NONBLOCK)`: the next pending connection (`EAGAIN` if none).
pub fn accept(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: no address is asked for (null pointers); integer flags.
    let r = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    check(r as libc::c_long)?;
    Ok(owned_fd(r))
}

/// `ioctl(SIOCUNIXFILE)`: an `O_PATH` descriptor of the socket file a unix socket is bound
/// to, even when that file was deleted since (connecting to `/proc/self/fd/N` reaches it).
pub fn unix_file(fd: RawFd) -> io::Result<OwnedFd> {
    const SIOCUNIXFILE: libc::c_ulong = 0x89E0;
    // SAFETY: the ioctl takes no argument and returns a new descriptor.
    let r = unsafe { libc::ioctl(fd, SIOCUNIXFILE) };
    check(r as libc::c_long)?;
    Ok(owned_fd(r))
}

/// `listen(fd, backlog)`.
pub fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: integer arguments.
    check(unsafe { libc::listen(fd, backlog) } as libc::c_long).map(|_| ())
}

/// `shutdown(fd, how)`.
pub fn shutdown(fd: RawFd, how: i32) -> io::Result<()> {
    // SAFETY: integer arguments.
    check(unsafe { libc::shutdown(fd, how) } as libc::c_long).map(|_| ())
}

/// `getsockopt` of an int option.
pub fn getsockopt_int(fd: RawFd, level: i32, opt: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`.
    check(unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    } as libc::c_long)?;
    Ok(v)
}

/// `setsockopt` of an int option.
pub fn setsockopt_int(fd: RawFd, level: i32, opt: i32, v: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a local int and its size.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } as libc::c_long)
    .map(|_| ())
}

/// `getsockopt` of a timeval option, in microseconds.
pub fn getsockopt_timeval(fd: RawFd, opt: i32) -> io::Result<u64> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `tv`.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    } as libc::c_long)?;
    Ok(tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64)
}

/// `setsockopt` of a timeval option, in microseconds.
pub fn setsockopt_timeval(fd: RawFd, opt: i32, us: u64) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_usec: (us % 1_000_000) as libc::suseconds_t,
    };
    // SAFETY: passes a pointer to a local timeval and its size.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    } as libc::c_long)
    .map(|_| ())
}

/// One message read with `MSG_PEEK`.
#[derive(Debug, Default)]
pub struct Peeked {
    /// Bytes.
    pub data: Vec<u8>,
    /// Sender address (datagrams).
    pub from: Vec<u8>,
    /// File descriptors carried by the message (SCM_RIGHTS): copies installed in our process.
    pub fds: Vec<OwnedFd>,
}

/// Read the next queued message (or stream bytes) at the socket's peek offset without
/// consuming it. `None` when nothing more is queued. On a stream socket a zero-length read
/// means end of data; on a datagram socket it is a zero-length message.
pub fn peek_next(fd: RawFd, max: usize, stream: bool) -> io::Result<Option<Peeked>> {
    let mut data = vec![0u8; max];
    // SAFETY: plain data; zeroed is valid.
    let mut from: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut cbuf = [0u64; 128];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is valid; fields set below point to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_un).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: every pointer in `msg` refers to a live local buffer of the stated size.
    let n = unsafe {
        libc::recvmsg(
            fd,
            &mut msg,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        let e = last_err();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(None);
        }
        return Err(e);
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `cbuf`, with the libc macros
    // that bound every step by msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                let p = libc::CMSG_DATA(c) as *const libc::c_int;
                for i in 0..n {
                    fds.push(owned_fd(*p.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    data.truncate(n as usize);
    let from = if msg.msg_namelen as usize > std::mem::size_of::<libc::sa_family_t>() {
        name_of(&from, msg.msg_namelen)
    } else {
        Vec::new()
    };
    if n == 0 && stream && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some(Peeked { data, from, fds }))
}

/// `send` all of `data` (one message for datagram sockets), optionally to `to`, never
/// blocking: a full queue is an error (`EAGAIN`).
pub fn send_all(fd: RawFd, data: &[u8], to: Option<&[u8]>) -> io::Result<()> {
    let mut off = 0;
    loop {
        let rest = &data[off..];
        let n = match to {
            Some(name) => {
                let (a, len) = sockaddr_un(name)?;
                // SAFETY: live buffers of the stated sizes.
                unsafe {
                    libc::sendto(
                        fd,
                        rest.as_ptr().cast(),
                        rest.len(),
                        libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                        (&a as *const libc::sockaddr_un).cast(),
                        len,
                    )
                }
            }
            // SAFETY: live buffer of the stated size.
            None => unsafe {
                libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            },
        };
        if n < 0 {
            return Err(last_err());
        }
        off += n as usize;
        if off >= data.len() {
            return Ok(());
        }
    }
}

/// Send `data` with file descriptors attached (SCM_RIGHTS), optionally to `to`; never blocks.
pub fn send_with_fds(fd: RawFd, data: &[u8], to: Option<&[u8]>, fds: &[RawFd]) -> io::Result<()> {
    let addr = match to {
        Some(name) => Some(sockaddr_un(name)?),
        None => None,
    };
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((fds.len() * 4) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; the pointers set below refer to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some((a, len)) = &addr {
        msg.msg_name = (a as *const libc::sockaddr_un) as *mut libc::c_void;
        msg.msg_namelen = *len;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer holds CMSG_SPACE(n * 4) bytes, enough for one header and `n`
    // ints; the libc macros compute every address inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
        let p = libc::CMSG_DATA(c) as *mut libc::c_int;
        for (i, f) in fds.iter().enumerate() {
            *p.add(i) = *f;
        }
    }
    // SAFETY: `msg` points to live buffers of the stated sizes.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(last_err());
    }
    if (n as usize) < data.len() {
        // The rest of a stream message goes without the descriptors, which travelled with the
        // first byte.
        send_all(fd, &data[n as usize..], to)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Internet sockets: addresses are kept as the raw `sockaddr_in`/`sockaddr_in6` bytes.

/// `socket(domain, type | SOCK_CLOEXEC, protocol)`.
pub fn socket(domain: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments.
    let fd =
        check(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) } as libc::c_long)?;
    Ok(owned_fd(fd as RawFd))
}

fn raw_name(fd: RawFd, peer: bool) -> io::Result<Option<Vec<u8>>> {
    // SAFETY: sockaddr_storage is plain data; zeroed is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast();
    // SAFETY: the kernel writes at most `len` bytes into `ss`.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r < 0 {
        let e = last_err();
        if peer && e.raw_os_error() == Some(libc::ENOTCONN) {
            return Ok(None);
        }
        return Err(e);
    }
    // SAFETY: `len` bytes of `ss` were written by the kernel (bounded by its size).
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&ss as *const libc::sockaddr_storage).cast::<u8>(),
            (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>()),
        )
    };
    Ok(Some(bytes.to_vec()))
}

/// `getsockname` as raw sockaddr bytes.
pub fn sock_name(fd: RawFd) -> io::Result<Vec<u8>> {
    Ok(raw_name(fd, false)?.unwrap_or_default())
}

/// `getpeername` as raw sockaddr bytes (`None` if not connected).
pub fn peer_name(fd: RawFd) -> io::Result<Option<Vec<u8>>> {
    raw_name(fd, true)
}

fn storage(addr: &[u8]) -> io::Result<(libc::sockaddr_storage, libc::socklen_t)> {
    // SAFETY: plain data; zeroed is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    if addr.len() > std::mem::size_of::<libc::sockaddr_storage>() || addr.len() < 2 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: copies `addr.len()` bytes into `ss`, which is at least that large.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            addr.len(),
        )
    };
    Ok((ss, addr.len() as libc::socklen_t))
}

/// `bind` to a raw sockaddr.
pub fn bind_raw(fd: RawFd, addr: &[u8]) -> io::Result<()> {
    let (ss, len) = storage(addr)?;
    // SAFETY: `ss` holds a sockaddr of `len` bytes.
    check(
        unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) }
            as libc::c_long,
    )
    .map(|_| ())
}

/// `connect` to a raw sockaddr.
pub fn connect_raw(fd: RawFd, addr: &[u8]) -> io::Result<()> {
    let (ss, len) = storage(addr)?;
    // SAFETY: `ss` holds a sockaddr of `len` bytes.
    check(
        unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) }
            as libc::c_long,
    )
    .map(|_| ())
}

/// Next queued datagram at the peek offset, with its raw source address; `None` when empty.
pub fn peek_datagram(fd: RawFd, max: usize) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut data = vec![0u8; max];
    // SAFETY: plain data; zeroed is valid.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: live buffers of the stated sizes.
    let n = unsafe {
        libc::recvfrom(
            fd,
            data.as_mut_ptr().cast(),
            data.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
            (&mut from as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if n < 0 {
        let e = last_err();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(None);
        }
        return Err(e);
    }
    data.truncate(n as usize);
    // SAFETY: `len` bytes of `from` were written by the kernel (bounded by its size).
    let addr = unsafe {
        std::slice::from_raw_parts(
            (&from as *const libc::sockaddr_storage).cast::<u8>(),
            (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>()),
        )
    }
    .to_vec();
    Ok(Some((data, addr)))
}

/// `sendto` a raw sockaddr, never blocking.
pub fn sendto_raw(fd: RawFd, data: &[u8], to: &[u8]) -> io::Result<()> {
    let (ss, len) = storage(to)?;
    // SAFETY: live buffers of the stated sizes.
    let n = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    check(n as libc::c_long).map(|_| ())
}

/// Human-readable form of a raw inet sockaddr ("127.0.0.1:8080", "[::1]:80").
pub fn addr_string(addr: &[u8]) -> String {
    let fam = addr
        .get(0..2)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]) as i32)
        .unwrap_or(-1);
    let port = addr
        .get(2..4)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    if fam == libc::AF_INET && addr.len() >= 8 {
        format!("{}.{}.{}.{}:{port}", addr[4], addr[5], addr[6], addr[7])
    } else if fam == libc::AF_INET6 && addr.len() >= 24 {
        let mut o = [0u8; 16];
        o.copy_from_slice(&addr[8..24]);
        format!("[{}]:{port}", std::net::Ipv6Addr::from(o))
    } else {
        format!("{addr:?}")
    }
}

/// `getsockopt` into a byte buffer; returns the length the kernel wrote.
pub fn getsockopt_bytes(fd: RawFd, level: i32, opt: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf`.
    let r = unsafe { libc::getsockopt(fd, level, opt, buf.as_mut_ptr().cast(), &mut len) };
    check(r as libc::c_long)?;
    Ok(len as usize)
}

/// `SO_LINGER` on with a timeout in seconds.
pub fn set_linger(fd: RawFd, secs: i32) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: secs,
    };
    // SAFETY: passes a pointer to a local linger and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    check(r as libc::c_long).map(|_| ())
}

/// `setsockopt` from a byte buffer.
pub fn setsockopt_bytes(fd: RawFd, level: i32, opt: i32, buf: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `buf.len()` bytes from `buf`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            buf.as_ptr().cast(),
            buf.len() as libc::socklen_t,
        )
    };
    check(r as libc::c_long).map(|_| ())
}

/// Read `len` bytes with `MSG_PEEK` (a TCP socket in repair mode: from the selected queue).
/// `SO_PEEK_OFF` walks past the first segments where the socket supports it.
pub fn peek_bytes(fd: RawFd, len: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    let mut got = 0;
    let old = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
    let use_off = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).is_ok();
    let mut res = Ok(());
    while got < len {
        // SAFETY: the kernel writes at most `len - got` bytes at `out[got..]`.
        let n = unsafe {
            libc::recv(
                fd,
                out[got..].as_mut_ptr().cast(),
                len - got,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            res = Err(last_err());
            break;
        }
        if n == 0 {
            break;
        }
        got += n as usize;
        if !use_off {
            break;
        }
    }
    if use_off {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, old);
    }
    res?;
    out.truncate(got);
    if got != len {
        return Err(io::Error::other(format!(
            "peeked {got} of {len} queued bytes"
        )));
    }
    Ok(out)
}

/// Send on a TCP socket in repair mode (data goes to the selected queue).
pub fn send_repair(fd: RawFd, data: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: live buffer of the stated size.
        let n = unsafe { libc::send(fd, data[off..].as_ptr().cast(), data.len() - off, 0) };
        off += check(n as libc::c_long)? as usize;
    }
    Ok(())
}

/// Send all of `data` on a stream socket (blocking).
pub fn send_all_stream(fd: RawFd, data: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: live buffer of the stated size.
        let n = unsafe {
            libc::send(
                fd,
                data[off..].as_ptr().cast(),
                data.len() - off,
                libc::MSG_NOSIGNAL,
            )
        };
        off += check(n as libc::c_long)? as usize;
    }
    Ok(())
}

fn csum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Build an IPv4 TCP segment without payload (header only), checksums filled in.
pub fn tcp_segment_v4(
    src: std::net::SocketAddrV4,
    dst: std::net::SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&window.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let partial: u32 = pseudo
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    let c = csum(&tcp, partial);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let ic = csum(&ip, 0);
    ip[10..12].copy_from_slice(&ic.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

/// Build an IPv6 TCP segment without payload (header only), checksum filled in.
pub fn tcp_segment_v6(
    src: std::net::SocketAddrV6,
    dst: std::net::SocketAddrV6,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&window.to_be_bytes());
    // Pseudo-header: source, destination, upper-layer length (32 bits), next header.
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
    let partial: u32 = pseudo
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    let c = csum(&tcp, partial);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&20u16.to_be_bytes());
    ip[6] = 6; // next header: TCP
    ip[7] = 64; // hop limit
    ip[8..24].copy_from_slice(&src.ip().octets());
    ip[24..40].copy_from_slice(&dst.ip().octets());
    ip.extend_from_slice(&tcp);
    ip
}

/// Send a complete IPv6 packet through a raw socket (`IPPROTO_RAW`: the header is ours; needs
/// CAP_NET_RAW).
pub fn send_raw_v6(packet: &[u8], dst: std::net::Ipv6Addr) -> io::Result<()> {
    let s = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
    let addr = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: dst.octets(),
        },
        sin6_scope_id: 0,
    };
    // SAFETY: sends `packet.len()` bytes to a valid sockaddr_in6.
    let n = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    check(n as libc::c_long).map(|_| ())
}

/// Send a complete IPv4 packet through a raw socket (needs CAP_NET_RAW).
pub fn send_raw_v4(packet: &[u8], dst: std::net::Ipv4Addr) -> io::Result<()> {
    let s = socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sends `packet.len()` bytes to a valid sockaddr_in.
    let n = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    check(n as libc::c_long).map(|_| ())
}

/// The classic BPF program attached to a socket (`SO_GET_FILTER`): its instructions, 8 bytes
/// each (`struct sock_filter`); empty if none (or if the filter is an eBPF program, which the
/// kernel does not hand back).
pub fn get_filter(fd: RawFd) -> io::Result<Vec<u8>> {
    // With a length of 0 the kernel answers the number of instructions (in the length).
    let mut len: libc::socklen_t = 0;
    // SAFETY: a zero length: the kernel writes only `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::null_mut(),
            &mut len,
        )
    };
    check(r as libc::c_long)?;
    if len == 0 {
        return Ok(Vec::new());
    }
    let n = len as usize;
    let mut buf = vec![0u8; n * 8];
    // The length is in instructions here, not bytes.
    let mut len = n as libc::socklen_t;
    // SAFETY: the kernel writes `len` instructions of 8 bytes into `buf`, which holds `n`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    check(r as libc::c_long)?;
    buf.truncate(len as usize * 8);
    Ok(buf)
}

/// Attach a classic BPF program (`SO_ATTACH_FILTER`) given as its instructions (8 bytes each).
pub fn attach_filter(fd: RawFd, insns: &[u8]) -> io::Result<()> {
    if insns.is_empty() || !insns.len().is_multiple_of(8) || insns.len() / 8 > u16::MAX as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // Copied into properly aligned instructions.
    let prog: Vec<libc::sock_filter> = insns
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points to `prog`, alive for the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    check(r as libc::c_long).map(|_| ())
}

/// The protocol name of the socket behind `path` (a `/proc/PID/fd/N` link, followed):
/// `system.sockprotoname` — "NETLINK", "PACKET", "TCP", "UDPv6", "RAW", "UNIX", ….
pub fn sock_proto_name(path: &str) -> io::Result<String> {
    let p = std::ffi::CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = [0u8; 64];
    // SAFETY: `p` and the attribute name are NUL-terminated; the kernel writes at most
    // `buf.len()` bytes into `buf`.
    let r = unsafe {
        libc::getxattr(
            p.as_ptr(),
            c"system.sockprotoname".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = check(r as libc::c_long)? as usize;
    let v = &buf[..n.min(buf.len())];
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    Ok(String::from_utf8_lossy(&v[..end]).into_owned())
}

/// `getsockopt` into a byte buffer, also handing back the length the kernel answered (which
/// may exceed the buffer: some options say so to ask for a larger one). Returns the bytes
/// written.
pub fn getsockopt_bytes_len(
    fd: RawFd,
    level: i32,
    opt: i32,
    buf: &mut [u8],
    len: &mut libc::socklen_t,
) -> io::Result<usize> {
    *len = (*len).min(buf.len() as libc::socklen_t);
    let given = *len as usize;
    // SAFETY: the kernel writes at most `len` (≤ `buf.len()`) bytes into `buf`.
    let r = unsafe { libc::getsockopt(fd, level, opt, buf.as_mut_ptr().cast(), len) };
    check(r as libc::c_long)?;
    Ok((*len as usize).min(given))
}

/// `poll` of one fd with no wait, reading nothing: the events among `events` that are ready
/// (POLLHUP, POLLERR and POLLNVAL come whether asked or not). For a unix socket `POLLERR`
/// shows a pending error (`sk_err`) that `SO_ERROR` would clear.
pub fn poll_now(fd: RawFd, events: i16) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one live pollfd of ours, count 1, no timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    check(r as libc::c_long)?;
    Ok(p.revents)
}

/// `poll` of several fds for input, waiting up to `timeout_ms` (-1: no limit): for each fd,
/// whether it is readable or hung up (a closed peer reads as end of file). EINTR gives all
/// false.
pub fn poll_readable(
    fds: &[std::os::fd::BorrowedFd<'_>],
    timeout_ms: i32,
) -> io::Result<Vec<bool>> {
    Ok(crate::uffd::poll_in(fds, timeout_ms)?
        .into_iter()
        .map(|revents| revents != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_checksums_verify() {
        let p = tcp_segment_v4(
            "127.0.0.1:80".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
            1,
            2,
            0x11,
            512,
        );
        assert_eq!(p.len(), 40);
        assert_eq!(csum(&p[..20], 0), 0, "IP header checksum");
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        let partial: u32 = pseudo
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum();
        assert_eq!(csum(&p[20..], partial), 0, "TCP checksum");
    }

    #[test]
    fn v6_segment_checksum_verifies() {
        let p = tcp_segment_v6(
            "[::1]:80".parse().unwrap(),
            "[::1]:5000".parse().unwrap(),
            7,
            9,
            0x11,
            512,
        );
        assert_eq!(p.len(), 60);
        assert_eq!(p[0] >> 4, 6);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[8..40]);
        pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        let partial: u32 = pseudo
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum();
        assert_eq!(csum(&p[40..], partial), 0, "TCP checksum");
    }
}
