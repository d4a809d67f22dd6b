//! Namespaces: entering (`setns`), creating (`unshare`, `clone3` with `CLONE_NEW*`), and the
//! few per-namespace settings a partition needs (hostname, root, loopback).
//!
//! A process joins another process's namespaces through the files in `/proc/PID/ns/`. Joining
//! a mount namespace requires a process whose filesystem context is not shared (a
//! single-threaded process, or a thread after `unshare(CLONE_FS)`); joining a pid namespace only
//! affects the children created afterwards.

use crate::check;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Namespace kinds and their `/proc/PID/ns/` names.
pub const NS_MNT: (i32, &str) = (libc::CLONE_NEWNS, "mnt");
/// IPC namespace.
pub const NS_IPC: (i32, &str) = (libc::CLONE_NEWIPC, "ipc");
/// UTS namespace.
pub const NS_UTS: (i32, &str) = (libc::CLONE_NEWUTS, "uts");
/// Network namespace.
pub const NS_NET: (i32, &str) = (libc::CLONE_NEWNET, "net");
/// Pid namespace.
pub const NS_PID: (i32, &str) = (libc::CLONE_NEWPID, "pid");

/// Time namespace (`CLONE_NEWTIME`): `unshare` gives it to the caller's children only.
pub const NS_TIME: (i32, &str) = (libc::CLONE_NEWTIME, "time_for_children");

/// Clock offsets of a time namespace, in nanoseconds (signed): what it adds to the host's
/// `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeOffsets {
    /// Added to `CLOCK_MONOTONIC` (and its raw and coarse variants).
    pub monotonic: i64,
    /// Added to `CLOCK_BOOTTIME`.
    pub boottime: i64,
}

impl TimeOffsets {
    /// The offset that applies to timer clock `clock` (0 for the clocks a time namespace does
    /// not shift: realtime, TAI, CPU clocks).
    pub fn of_clock(&self, clock: i32) -> i64 {
        match clock {
            libc::CLOCK_MONOTONIC | libc::CLOCK_MONOTONIC_RAW | libc::CLOCK_MONOTONIC_COARSE => {
                self.monotonic
            }
            libc::CLOCK_BOOTTIME | libc::CLOCK_BOOTTIME_ALARM => self.boottime,
            _ => 0,
        }
    }
}

/// Parse `/proc/PID/timens_offsets` (`monotonic SECS NSECS` / `boottime SECS NSECS`).
pub fn parse_timens_offsets(text: &str) -> Option<TimeOffsets> {
    let mut o = TimeOffsets::default();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() != 3 {
            return None;
        }
        let ns = w[1].parse::<i64>().ok()? * 1_000_000_000 + w[2].parse::<i64>().ok()?;
        match w[0] {
            "monotonic" => o.monotonic = ns,
            "boottime" => o.boottime = ns,
            _ => return None,
        }
    }
    Some(o)
}

/// The offsets of the time namespace process `pid` (`None`: ourselves) gives its children
/// (`/proc/PID/timens_offsets`; for a process that did not `unshare(CLONE_NEWTIME)`, its own).
/// Zero when the kernel has no time namespaces.
pub fn timens_offsets(pid: Option<i32>) -> io::Result<TimeOffsets> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/timens_offsets"),
        None => "/proc/self/timens_offsets".to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => parse_timens_offsets(&t)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {t:?}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TimeOffsets::default()),
        Err(e) => Err(e),
    }
}

/// Set the offsets of the time namespace our children will get (after
/// `unshare(CLONE_NEWTIME)`, before any process entered it: the kernel refuses later).
pub fn set_timens_offsets(o: TimeOffsets) -> io::Result<()> {
    let line = |name: &str, ns: i64| {
        format!(
            "{name} {} {}\n",
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000)
        )
    };
    let text = line("monotonic", o.monotonic) + &line("boottime", o.boottime);
    std::fs::write("/proc/self/timens_offsets", text)
}

/// Move the calling process into a new time namespace with offsets `o`: `unshare` one for
/// our children, set its offsets, then join it ourselves (`setns`, which the kernel allows to
/// a single-threaded process only; it also switches our vdso to the namespace's clocks).
pub fn enter_new_timens(o: TimeOffsets) -> io::Result<()> {
    unshare(libc::CLONE_NEWTIME)?;
    set_timens_offsets(o)?;
    let fd = OwnedFd::from(std::fs::File::open("/proc/self/ns/time_for_children")?);
    setns(std::os::fd::AsFd::as_fd(&fd), libc::CLONE_NEWTIME)
}

/// Open `/proc/PID/ns/NAME`.
pub fn open_ns(pid: i32, name: &str) -> io::Result<OwnedFd> {
    let f = std::fs::File::open(format!("/proc/{pid}/ns/{name}"))?;
    Ok(OwnedFd::from(f))
}

/// Inode of `/proc/PID/ns/NAME` (identifies the namespace).
pub fn ns_inode(pid: i32, name: &str) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(format!("/proc/{pid}/ns/{name}"))?.ino())
}

/// `setns(fd, nstype)`.
pub fn setns(fd: BorrowedFd<'_>, nstype: i32) -> io::Result<()> {
    // SAFETY: setns takes a descriptor we borrow and an integer.
    let r = unsafe { libc::setns(fd.as_raw_fd(), nstype) };
    check(r as libc::c_long).map(|_| ())
}

/// `unshare(flags)`.
pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: integer argument.
    let r = unsafe { libc::unshare(flags) };
    check(r as libc::c_long).map(|_| ())
}

/// `sethostname`.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length of a live slice.
    let r = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    check(r as libc::c_long).map(|_| ())
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let a = cstr(new_root)?;
    let b = cstr(put_old)?;
    // SAFETY: two NUL-terminated paths that live across the call.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, a.as_ptr(), b.as_ptr()) };
    check(r).map(|_| ())
}

/// `chroot(path)`.
pub fn chroot(path: &Path) -> io::Result<()> {
    let a = cstr(path)?;
    // SAFETY: a NUL-terminated path that lives across the call.
    let r = unsafe { libc::chroot(a.as_ptr()) };
    check(r as libc::c_long).map(|_| ())
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// Threads of the calling process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Result of [`fork_into`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// We are the child.
    Child,
    /// We are the parent; the child's pid (in our pid namespace).
    Parent(i32),
}

/// Fork (with `clone3`) into new namespaces given by `flags` (`CLONE_NEWPID`, `CLONE_NEWNS`,
/// …), optionally with a chosen pid in the child's innermost pid namespace (`set_tid`).
///
/// The calling process must be single-threaded (checked): the child goes on running Rust code
/// after the fork, which is only sound when no other thread could hold a lock.
pub fn fork_into(flags: u64, set_tid: Option<i32>) -> io::Result<Forked> {
    if thread_count() != 1 {
        return Err(io::Error::other(
            "fork_into needs a single-threaded process",
        ));
    }
    let tid: [libc::pid_t; 1] = [set_tid.unwrap_or(0)];
    let args = crate::sys::CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if set_tid.is_some() {
            tid.as_ptr() as u64
        } else {
            0
        },
        set_tid_size: u64::from(set_tid.is_some()),
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork; the process is single-threaded (checked
    // above), so the child's copy of the heap and of every lock is consistent.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const crate::sys::CloneArgs,
            std::mem::size_of::<crate::sys::CloneArgs>(),
        )
    };
    match check(r)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// `PR_SET_PDEATHSIG` for the calling thread.
pub fn set_pdeathsig(sig: i32) -> io::Result<()> {
    // SAFETY: integer prctl.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) };
    check(r as libc::c_long).map(|_| ())
}

/// Bring a network interface up (`SIOCSIFFLAGS` with `IFF_UP`), in the caller's network
/// namespace.
pub fn link_up(name: &str) -> io::Result<()> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: plain socket creation; the fd is owned below.
    let fd = check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }
            as libc::c_long,
    )?;
    let sock = crate::sys::owned_fd(fd as i32);
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in name.bytes().enumerate() {
        ifr.ifr_name[i] = b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of a live ifreq.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    check(r as libc::c_long)?;
    // SAFETY: the union member written by SIOCGIFFLAGS.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads a live ifreq.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    check(r as libc::c_long).map(|_| ())
}

/// Make `cmd` run in the network namespace `netns` (and, if given, the mount namespace `mntns`)
/// once spawned: `setns` between fork and exec.
pub fn command_in_ns(
    cmd: &mut std::process::Command,
    netns: Option<OwnedFd>,
    mntns: Option<OwnedFd>,
) {
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2), which
    // is async-signal-safe; the fds stay alive inside the closure.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(m) = &mntns {
                if libc::setns(m.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(n) = &netns {
                if libc::setns(n.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Start a new session and make the calling process its leader.
pub fn setsid() -> io::Result<i32> {
    // SAFETY: no arguments.
    let r = unsafe { libc::setsid() };
    check(r as libc::c_long).map(|r| r as i32)
}

/// `dup2(old, new)` (used to point stdio at a log before exec).
pub fn dup2(old: BorrowedFd<'_>, new: i32) -> io::Result<()> {
    // SAFETY: integer descriptors; `old` is borrowed for the call.
    let r = unsafe { libc::dup2(old.as_raw_fd(), new) };
    check(r as libc::c_long).map(|_| ())
}

/// `_exit(code)`: leave a forked child without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Make `cmd` start a new session when spawned (detached from our terminal and group), with
/// no descriptor but its stdio.
pub fn command_setsid(cmd: &mut std::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2) and
    // close_range(2), which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // Descriptors the caller inherited (a shell's redirections…) must not live on in
            // a long-lived child: mark every fd above stdio close-on-exec.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
}

#[cfg(test)]
mod timens_tests {
    use super::*;

    #[test]
    fn offsets_parse_and_apply() {
        let o = parse_timens_offsets("monotonic  -5  250000000\nboottime 864000 0\n").unwrap();
        assert_eq!(o.monotonic, -4_750_000_000);
        assert_eq!(o.boottime, 864_000_000_000_000);
        assert_eq!(o.of_clock(libc::CLOCK_MONOTONIC), o.monotonic);
        assert_eq!(o.of_clock(libc::CLOCK_BOOTTIME_ALARM), o.boottime);
        assert_eq!(o.of_clock(libc::CLOCK_REALTIME), 0);
        assert!(parse_timens_offsets("monotonic 1\n").is_none());
    }
}
