//! Socket options read back generically: a table of (level, option, size) per kind of socket,
//! read at checkpoint (an option the socket does not know is left out) and, at restore, set on
//! the new socket wherever its own value differs from the saved one.

use stasis_image::records as rec;
use stasis_sys::net;
use std::os::fd::RawFd;

/// One option to read: level, name, and 0 for an integer or the buffer size of another value.
pub(crate) type Def = (i32, i32, usize);

/// The options of `defs` that `s` answers, with their values.
pub(crate) fn read(s: RawFd, defs: &[Def], out: &mut Vec<rec::SockOpt>) {
    for &(level, name, size) in defs {
        if size == 0 {
            if let Ok(value) = net::getsockopt_int(s, level, name) {
                out.push(rec::SockOpt {
                    level,
                    name,
                    value,
                    data: Vec::new(),
                });
            }
        } else if let Some(data) = read_bytes(s, level, name, size) {
            if data.iter().any(|&b| b != 0) {
                out.push(rec::SockOpt {
                    level,
                    name,
                    value: 0,
                    data,
                });
            }
        }
    }
}

fn read_bytes(s: RawFd, level: i32, name: i32, size: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; size];
    let n = net::getsockopt_bytes(s, level, name, &mut b).ok()?;
    b.truncate(n);
    while b.last() == Some(&0) {
        b.pop();
    }
    Some(b)
}

/// Set every saved option whose value on `s` differs, in the saved order.
pub(crate) fn apply(s: RawFd, opts: &[rec::SockOpt]) -> std::io::Result<()> {
    for o in opts {
        let fail = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!("socket option {} at level {}: {e}", o.name, o.level),
            )
        };
        if o.data.is_empty() {
            if net::getsockopt_int(s, o.level, o.name).ok() != Some(o.value) {
                // The kernel doubles a buffer size it is given (and reports the double).
                let halved = o.level == libc::SOL_SOCKET
                    && matches!(o.name, libc::SO_RCVBUF | libc::SO_SNDBUF);
                let v = if halved { o.value / 2 } else { o.value };
                net::setsockopt_int(s, o.level, o.name, v).map_err(fail)?;
            }
        } else {
            let now = read_bytes(s, o.level, o.name, o.data.len().max(64));
            if now.as_deref() != Some(&o.data[..]) {
                let mut v = o.data.clone();
                v.push(0);
                net::setsockopt_bytes(s, o.level, o.name, &v).map_err(fail)?;
            }
        }
    }
    Ok(())
}

/// `SOL_SOCKET` options any socket may carry (those the kinds save in fields of their own —
/// buffer sizes, reuse, timeouts, linger — are not here).
pub(crate) const SOCKET: &[Def] = &[
    (libc::SOL_SOCKET, libc::SO_PRIORITY, 0),
    (libc::SOL_SOCKET, libc::SO_MARK, 0),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT, 0),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE, 0),
    (libc::SOL_SOCKET, libc::SO_DONTROUTE, 0),
    (libc::SOL_SOCKET, 29, 0), // SO_TIMESTAMP_OLD
    (libc::SOL_SOCKET, 35, 0), // SO_TIMESTAMPNS_OLD
    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 0),
    (libc::SOL_SOCKET, libc::SO_PASSCRED, 0),
    (libc::SOL_SOCKET, 45, 0), // SO_SELECT_ERR_QUEUE
    (libc::SOL_SOCKET, 60, 0), // SO_ZEROCOPY
    (libc::SOL_SOCKET, libc::SO_BINDTODEVICE, libc::IFNAMSIZ),
];
