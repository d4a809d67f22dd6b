//! Other system calls: pidfd, kcmp, memfd, pipes, robust lists, affinity, and the creation of
//! the blank process a restore starts from.

use crate::{check, last_err};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `getpid()`.
pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// `getegid()`.
pub fn getegid() -> u32 {
    // SAFETY: getegid has no preconditions.
    unsafe { libc::getegid() }
}

/// `geteuid()`.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// `gettid()`.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// `kill(pid, sig)`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes integers only.
    check(unsafe { libc::kill(pid, sig) } as libc::c_long).map(|_| ())
}

/// `tgkill(tgid, tid, sig)`.
pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill takes integers only.
    check(unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) }).map(|_| ())
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments; on success the kernel returns a new fd that we own.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: fd is a freshly created descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_open(pid, flags)` (`PIDFD_NONBLOCK` = `O_NONBLOCK`, `PIDFD_THREAD` = `O_EXCL`).
pub fn pidfd_open_flags(pid: i32, flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments; on success the kernel returns a new fd that we own.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) })?;
    // SAFETY: fd is a freshly created descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `PIDFD_GET_INFO` = `_IOWR(0xFF, 11, struct pidfd_info)` (64 bytes, version 0).
const PIDFD_GET_INFO: libc::c_ulong = 0xC040_FF0B;
/// `PIDFD_INFO_EXIT`.
const PIDFD_INFO_EXIT: u64 = 1 << 3;

/// The wait status of the process a pidfd refers to, once it has exited and been reaped
/// (`PIDFD_GET_INFO` with `PIDFD_INFO_EXIT`, Linux 6.15). None: not known (still running, or
/// a kernel without it).
pub fn pidfd_exit_status(fd: RawFd) -> io::Result<Option<i32>> {
    let mut info = [0u64; 8];
    info[0] = PIDFD_INFO_EXIT;
    // SAFETY: `info` is a 64-byte, 8-aligned buffer the kernel fills (struct pidfd_info v0).
    let r = unsafe { libc::ioctl(fd, PIDFD_GET_INFO as _, info.as_mut_ptr()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::ESRCH) => Ok(None),
            _ => Err(e),
        };
    }
    // exit_code is the last 4 bytes (offset 60).
    Ok((info[0] & PIDFD_INFO_EXIT != 0).then_some((info[7] >> 32) as i32))
}

/// `pidfd_getfd(pidfd, targetfd, 0)`: duplicate another process's fd into ours.
pub fn pidfd_getfd(pidfd: &OwnedFd, target_fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments; on success the kernel returns a new fd that we own.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `kcmp` types.
pub const KCMP_FILE: i32 = 0;
/// `kcmp` type for comparing signal-handler tables.
pub const KCMP_SIGHAND: i32 = 4;

/// `kcmp(pid1, pid2, type, idx1, idx2)`: 0 equal, 1/2 ordered, 3 not equal (unordered).
pub fn kcmp(pid1: i32, pid2: i32, kind: i32, idx1: u64, idx2: u64) -> io::Result<i32> {
    // SAFETY: integer arguments only.
    let r = check(unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, kind, idx1, idx2) })?;
    Ok(r as i32)
}

/// `kcmp(pid1, pid2, KCMP_EPOLL_TFD, fd1, {efd, tfd, toff})`: compares the file at `fd1` of
/// `pid1` with the target of the `toff`-th registration numbered `tfd` in the epoll instance
/// at `efd` of `pid2`: 0 equal, 1/2 ordered; `ENOENT` if no such registration.
pub fn kcmp_epoll_tfd(
    pid1: i32,
    fd1: i32,
    pid2: i32,
    efd: i32,
    tfd: i32,
    toff: u32,
) -> io::Result<i32> {
    const KCMP_EPOLL_TFD: i32 = 7;
    let slot: [u32; 3] = [efd as u32, tfd as u32, toff];
    // SAFETY: the kernel reads the three u32 of `slot` (struct kcmp_epoll_slot), which lives
    // across the call; the other arguments are integers.
    let r = check(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1,
            pid2,
            KCMP_EPOLL_TFD,
            fd1 as u64,
            slot.as_ptr() as u64,
        )
    })?;
    Ok(r as i32)
}

/// `get_robust_list(tid)`: (head address, length).
pub fn get_robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: the kernel writes one pointer and one size_t into our locals.
    check(unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut libc::size_t,
        )
    })?;
    Ok((head, len as u64))
}

/// `memfd_create(name, flags)`.
pub fn memfd_create(name: &str, flags: u32) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let fd = check(unsafe { libc::memfd_create(c.as_ptr(), flags) } as libc::c_long)?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: the kernel writes two fds into the array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `fcntl(fd, cmd, arg)` for integer commands.
pub fn fcntl(fd: RawFd, cmd: i32, arg: i64) -> io::Result<i64> {
    // SAFETY: integer fcntl commands only.
    check(unsafe { libc::fcntl(fd, cmd, arg) } as libc::c_long)
}

/// `tee(fd_in, fd_out, len, SPLICE_F_NONBLOCK)`: duplicate pipe content without consuming it.
pub fn tee(fd_in: RawFd, fd_out: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: integer arguments only.
    let n = unsafe { libc::tee(fd_in, fd_out, len, libc::SPLICE_F_NONBLOCK) };
    check(n as libc::c_long).map(|v| v as usize)
}

/// `lseek(fd, off, whence)`.
pub fn lseek(fd: RawFd, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::lseek(fd, off, whence) } as libc::c_long)
}

/// Pin a thread (or process) to one CPU; returns the previous mask as a list of CPUs.
pub fn set_affinity(tid: i32, cpus: &[usize]) -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all-zero is valid.
    let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: the kernel writes at most sizeof(cpu_set_t) bytes into `old`.
    let r = unsafe { libc::sched_getaffinity(tid, size, &mut old) };
    check(r as libc::c_long)?;
    let mut prev = Vec::new();
    for c in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: c < CPU_SETSIZE.
        if unsafe { libc::CPU_ISSET(c, &old) } {
            prev.push(c);
        }
    }
    // SAFETY: plain data.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: the caller passes CPU numbers; CPU_SET bounds-checks against the set size.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t.
    let r = unsafe { libc::sched_setaffinity(tid, size, &set) };
    check(r as libc::c_long)?;
    Ok(prev)
}

/// The CPU the calling thread runs on.
pub fn current_cpu() -> usize {
    // SAFETY: no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    c.max(0) as usize
}

/// Arguments of the blank process a restore starts from.
#[derive(Debug, Clone, Copy)]
pub struct BlankSpec {
    /// Pid the new process must get (`clone3` `set_tid`).
    pub pid: i32,
    /// Where the child maps its gadget page (must be free in the child and in the restored
    /// layout).
    pub gadget_addr: u64,
    /// Length of the gadget mapping (page multiple).
    pub gadget_len: u64,
    /// `exit_signal` for the child (the signal its parent gets when it exits).
    pub exit_signal: i32,
    /// A mount namespace fd the child joins (setns) before anything else, or -1.
    pub mnt_ns_fd: i32,
    /// An fd of ours the child keeps, moved to number `keep_at` (-1: none); all others close.
    pub keep_fd: i32,
    /// Where the kept fd goes.
    pub keep_at: i32,
    /// Namespace flags (`CLONE_NEWPID`, `CLONE_NEWNS`, …) for the child; with `CLONE_NEWPID`
    /// `pid` is its pid inside the new namespace and must be 1.
    pub ns_flags: u64,
}

#[repr(C)]
#[derive(Default)]
pub(crate) struct CloneArgs {
    pub(crate) flags: u64,
    pub(crate) pidfd: u64,
    pub(crate) child_tid: u64,
    pub(crate) parent_tid: u64,
    pub(crate) exit_signal: u64,
    pub(crate) stack: u64,
    pub(crate) stack_size: u64,
    pub(crate) tls: u64,
    pub(crate) set_tid: u64,
    pub(crate) set_tid_size: u64,
    pub(crate) cgroup: u64,
}

/// Size in bytes of `struct clone_args` up to and including `set_tid_size`.
pub const CLONE_ARGS_SIZE_VER2: usize = 88;

/// Encode a `struct clone_args` for an injected `clone3` (little-endian, 88 bytes).
pub fn encode_clone_args(
    flags: u64,
    exit_signal: u64,
    set_tid_ptr: u64,
    set_tid_size: u64,
) -> Vec<u8> {
    let fields = [
        flags,
        0,
        0,
        0,
        exit_signal,
        0,
        0,
        0,
        set_tid_ptr,
        set_tid_size,
        0,
    ];
    fields.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// Create the blank process a restore starts from: a child of the calling *thread* (which
/// must be the thread that will trace it) with pid `spec.pid`, its fds closed, a gadget page
/// holding [`crate::inject::GADGET_CODE`] at `spec.gadget_addr`, `PR_SET_PDEATHSIG(SIGKILL)`,
/// waiting in `pause()` to be seized.
///
/// Returns `Ok(pid)`, or `EEXIST` if the pid is taken.
pub fn spawn_blank(spec: BlankSpec) -> io::Result<i32> {
    let set_tid: [libc::pid_t; 1] = [spec.pid];
    let args = CloneArgs {
        flags: spec.ns_flags,
        exit_signal: spec.exit_signal as u64,
        set_tid: set_tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // In a new pid namespace the parent is outside it: getppid() there returns 0.
    let parent = if spec.ns_flags & libc::CLONE_NEWPID as u64 != 0 {
        0
    } else {
        getpid()
    };
    // SAFETY: clone3 without CLONE_VM behaves like fork. The child only performs raw system
    // calls (no allocation, no locks) before it parks in pause(), and never returns into Rust
    // code: it either pauses forever (to be reshaped by the tracer) or exits via _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(last_err());
    }
    if r == 0 {
        // Child.
        // SAFETY: raw system calls on integers and on a mapping we create here.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(127);
            }
            if spec.mnt_ns_fd >= 0 && libc::setns(spec.mnt_ns_fd, libc::CLONE_NEWNS) != 0 {
                libc::_exit(125);
            }
            if spec.keep_fd >= 0 && spec.keep_at > 0 {
                if libc::dup2(spec.keep_fd, spec.keep_at) != spec.keep_at {
                    libc::_exit(124);
                }
                libc::syscall(libc::SYS_close_range, 0u32, (spec.keep_at - 1) as u32, 0u32);
                libc::syscall(
                    libc::SYS_close_range,
                    (spec.keep_at + 1) as u32,
                    u32::MAX,
                    0u32,
                );
            } else {
                libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
            }
            let p = libc::mmap(
                spec.gadget_addr as *mut libc::c_void,
                spec.gadget_len as usize,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            );
            if p as u64 != spec.gadget_addr {
                libc::_exit(126);
            }
            let code = p as *mut u8;
            for (i, b) in crate::inject::GADGET_CODE.iter().enumerate() {
                *code.add(i) = *b;
            }
            loop {
                libc::pause();
            }
        }
    }
    Ok(r as i32)
}

/// `mkfifo(path, mode)` (the mode is subject to the umask).
pub fn mkfifo(path: &str, mode: u32) -> io::Result<()> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let r = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    check(r as libc::c_long).map(|_| ())
}

/// `fanotify_init(flags, event_f_flags)`.
pub fn fanotify_init(flags: u32, event_f_flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only; the result is a new fd we own.
    let r = unsafe { libc::fanotify_init(flags, event_f_flags) };
    Ok(owned_fd(check(r as libc::c_long)? as RawFd))
}

/// `fanotify_mark(fd, flags, mask, AT_FDCWD, path)`.
pub fn fanotify_mark(fd: RawFd, flags: u32, mask: u64, path: &str) -> io::Result<()> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let r = unsafe { libc::fanotify_mark(fd, flags, mask, libc::AT_FDCWD, c.as_ptr()) };
    check(r as libc::c_long).map(|_| ())
}

/// Read a symlink under /proc as a string (lossy).
pub fn readlink(path: &str) -> io::Result<String> {
    Ok(std::fs::read_link(path)?.to_string_lossy().into_owned())
}

/// `F_GETPIPE_SZ`.
pub const F_GETPIPE_SZ: i32 = libc::F_GETPIPE_SZ;
/// `F_SETPIPE_SZ`.
pub const F_SETPIPE_SZ: i32 = libc::F_SETPIPE_SZ;

/// Bytes queued in a pipe (`FIONREAD`).
pub fn fionread(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    check(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } as libc::c_long)?;
    Ok(n.max(0) as usize)
}

/// Uptime-based identity check: the start time (clock ticks since boot) of a task, field 22 of
/// /proc/PID/stat. Used to tell a task from a later one that reused its pid.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

/// Make the calling process a child subreaper (orphans of its descendants come to it).
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: integer prctl.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } as libc::c_long)
        .map(|_| ())
}

/// Take an exclusive `flock` on `f`, waiting for it.
pub fn flock_exclusive(f: &std::fs::File) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor we borrow for the duration of the call.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        match check(r as libc::c_long) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(|_| ()),
        }
    }
}

/// `syncfs` on the filesystem holding `fd`.
pub fn syncfs(fd: RawFd) -> io::Result<()> {
    // SAFETY: integer argument.
    check(unsafe { libc::syncfs(fd) } as libc::c_long).map(|_| ())
}

/// Take ownership of a descriptor returned by a successful system call.
pub fn owned_fd(fd: RawFd) -> OwnedFd {
    assert!(fd >= 0, "owned_fd: negative descriptor");
    // SAFETY: the caller passes a descriptor freshly returned by the kernel that nothing else
    // owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A new MAP_SHARED|MAP_ANONYMOUS object of `size` bytes, returned as a file (opened through
/// `/proc/self/map_files`, which needs CAP_SYS_ADMIN). Our own mapping is removed again; the
/// object lives on as long as the file.
pub fn shared_anon_object(size: u64) -> io::Result<std::fs::File> {
    let len = size.max(4096).div_ceil(4096) as usize * 4096;
    anon_object(len, 0)
}

/// Map `len` bytes MAP_SHARED|MAP_ANONYMOUS (plus `extra` flags), open the object through
/// `/proc/self/map_files` and unmap it again.
fn anon_object(len: usize, extra: i32) -> io::Result<std::fs::File> {
    // SAFETY: anonymous shared mapping at an address the kernel picks; not accessed by us.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | extra,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last_err());
    }
    let start = p as usize;
    let res = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!(
            "/proc/self/map_files/{:x}-{:x}",
            start,
            start + len
        ));
    // SAFETY: unmapping exactly the mapping created above, which nothing else references.
    unsafe { libc::munmap(p, len) };
    res
}

/// `f_type` of hugetlbfs (memfds made with `MFD_HUGETLB`, hugetlb mappings, `SHM_HUGETLB`).
pub const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// `MAP_HUGETLB` flags (also `MFD_HUGETLB`, `SHM_HUGETLB`: the same bits) for pages of
/// `page_size` bytes: the flag and log2 of the size at bit 26 (`MAP_HUGE_SHIFT`).
pub fn huge_flags(page_size: u64) -> i32 {
    (page_size.trailing_zeros() as i32) << libc::MAP_HUGE_SHIFT
}

/// A new MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB object of `size` bytes (a multiple of
/// `page_size`), returned as a file like [`shared_anon_object`], so that mappings of it show
/// "/anon_hugepage (deleted)". Its huge pages are reserved (the mmap reserves them for the
/// inode; they stay reserved after our mapping is gone).
pub fn hugetlb_anon_object(size: u64, page_size: u64) -> io::Result<std::fs::File> {
    let len = size.max(page_size) as usize;
    anon_object(len, libc::MAP_HUGETLB | huge_flags(page_size))
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_sig: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Install SIGINT/SIGTERM/SIGHUP handlers that only set a flag ([`interrupt_requested`]).
pub fn install_interrupt_handlers() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
        // sigaction struct is fully initialised.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_interrupt as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(last_err());
            }
        }
    }
    Ok(())
}

/// Whether SIGINT/SIGTERM/SIGHUP arrived since [`install_interrupt_handlers`].
pub fn interrupt_requested() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

fn fd_result(r: libc::c_int) -> io::Result<OwnedFd> {
    let r = check(r as libc::c_long)?;
    Ok(owned_fd(r as RawFd))
}

/// `eventfd(count, flags)`; the counter may exceed u32 (set with a write after creation).
pub fn eventfd(count: u64, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments.
    let fd = fd_result(unsafe { libc::eventfd(0, flags | libc::EFD_CLOEXEC) })?;
    if count > 0 {
        let b = count.to_ne_bytes();
        // SAFETY: writes 8 bytes from a local array.
        let n = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), 8) };
        check(n as libc::c_long)?;
    }
    Ok(fd)
}

/// `timerfd_create(clock, flags)`.
pub fn timerfd_create(clock: i32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments.
    fd_result(unsafe { libc::timerfd_create(clock, flags | libc::TFD_CLOEXEC) })
}

/// `timerfd_settime(fd, flags, {interval, value})`, times in nanoseconds.
pub fn timerfd_settime(fd: RawFd, flags: i32, interval_ns: u64, value_ns: u64) -> io::Result<()> {
    let ts = |ns: u64| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: ts(interval_ns),
        it_value: ts(value_ns),
    };
    // SAFETY: `spec` is a valid itimerspec; the old value is not requested.
    let r = unsafe { libc::timerfd_settime(fd, flags, &spec, std::ptr::null_mut()) };
    check(r as libc::c_long).map(|_| ())
}

/// `ioctl(TFD_IOC_SET_TICKS)`: set the number of unread expirations of a timerfd.
pub fn timerfd_set_ticks(fd: RawFd, ticks: u64) -> io::Result<()> {
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    // SAFETY: the ioctl reads one u64 from a local.
    let r = unsafe { libc::ioctl(fd, TFD_IOC_SET_TICKS, &ticks as *const u64) };
    check(r as libc::c_long).map(|_| ())
}

/// `signalfd(-1, mask, flags)`; bit n-1 of `mask` is signal n.
pub fn signalfd(mask: u64, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; we fill it through sigaddset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    for sig in 1..=64 {
        if mask & (1u64 << (sig - 1)) != 0 {
            // SAFETY: `set` is a valid sigset_t and sig is in range.
            unsafe { libc::sigaddset(&mut set, sig) };
        }
    }
    // SAFETY: `set` is initialised.
    fd_result(unsafe { libc::signalfd(-1, &set, flags | libc::SFD_CLOEXEC) })
}

/// `inotify_init1(flags)`.
pub fn inotify_init(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer argument.
    fd_result(unsafe { libc::inotify_init1(flags | libc::IN_CLOEXEC) })
}

/// `inotify_add_watch(fd, path, mask)`: the watch descriptor.
pub fn inotify_add_watch(fd: RawFd, path: &str, mask: u32) -> io::Result<i32> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is NUL-terminated and lives across the call.
    let r = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) };
    check(r as libc::c_long).map(|v| v as i32)
}

/// `inotify_rm_watch(fd, wd)`.
pub fn inotify_rm_watch(fd: RawFd, wd: i32) -> io::Result<()> {
    // SAFETY: integer arguments.
    let r = unsafe { libc::inotify_rm_watch(fd, wd) };
    check(r as libc::c_long).map(|_| ())
}

/// `epoll_create1(flags)`.
pub fn epoll_create(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer argument.
    fd_result(unsafe { libc::epoll_create1(flags | libc::EPOLL_CLOEXEC) })
}

/// Open the object a file handle (from inotify or fanotify fdinfo) refers to, as `O_PATH`.
/// Needs CAP_DAC_READ_SEARCH.
pub fn open_by_handle(mount_fd: RawFd, handle_type: i32, handle: &[u8]) -> io::Result<OwnedFd> {
    // struct file_handle { u32 handle_bytes; int handle_type; unsigned char f_handle[]; }
    let mut buf = vec![0u8; 8 + handle.len()];
    buf[0..4].copy_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&handle_type.to_ne_bytes());
    buf[8..].copy_from_slice(handle);
    // SAFETY: `buf` holds a complete struct file_handle of the declared size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd,
            buf.as_mut_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    Ok(owned_fd(check(r)? as RawFd))
}

/// CPUs a thread may run on.
pub fn get_affinity(tid: i32) -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all-zero is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: the kernel writes at most `size` bytes into `set`.
    let r = unsafe { libc::sched_getaffinity(tid, size, &mut set) };
    check(r as libc::c_long)?;
    // SAFETY: every index is below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// `setpriority(PRIO_PROCESS, tid, nice)`.
pub fn set_nice(tid: i32, nice: i32) -> io::Result<()> {
    // SAFETY: integer arguments.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    check(r as libc::c_long).map(|_| ())
}

/// `clock_gettime(clock)` in nanoseconds.
pub fn clock_ns(clock: i32) -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel writes one timespec into a local.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    check(r as libc::c_long)?;
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Filesystem magic number (`statfs(2)` `f_type`) of the filesystem holding `path`.
pub fn fs_magic(path: &str) -> io::Result<i64> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: statfs is plain data; zeroed is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated; the kernel writes one statfs into `st`.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    check(r as libc::c_long)?;
    Ok(st.f_type as i64)
}

/// `f_type` of the POSIX message queue filesystem.
pub const MQUEUE_MAGIC: i64 = 0x1980_0202;

/// `ioctl(fd, req, &mut int)`: read an int.
pub fn ioctl_get_int(fd: RawFd, req: libc::c_ulong) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the request writes one int into a local.
    let r = unsafe { libc::ioctl(fd, req, &mut v as *mut libc::c_int) };
    check(r as libc::c_long)?;
    Ok(v)
}

/// `ioctl(fd, req, &int)`: pass an int by pointer.
pub fn ioctl_set_int(fd: RawFd, req: libc::c_ulong, v: i32) -> io::Result<()> {
    // SAFETY: the request reads one int from a local.
    let r = unsafe { libc::ioctl(fd, req, &v as *const libc::c_int) };
    check(r as libc::c_long).map(|_| ())
}

/// `ioctl(fd, req, 0)`: a request without argument.
pub fn ioctl_none(fd: RawFd, req: libc::c_ulong) -> io::Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::ioctl(fd, req, 0) };
    check(r as libc::c_long).map(|_| ())
}

/// Size of `struct termios2` on x86_64.
pub const TERMIOS2_LEN: usize = 44;

/// `TCGETS2`: the terminal's settings as raw `struct termios2` bytes.
pub fn tcgets2(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; TERMIOS2_LEN];
    // SAFETY: TCGETS2 writes sizeof(struct termios2) = 44 bytes into the buffer.
    let r = unsafe { libc::ioctl(fd, libc::TCGETS2, b.as_mut_ptr()) };
    check(r as libc::c_long)?;
    Ok(b)
}

/// `TCSETS2`: set the terminal's settings from raw `struct termios2` bytes.
pub fn tcsets2(fd: RawFd, termios: &[u8]) -> io::Result<()> {
    if termios.len() != TERMIOS2_LEN {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: TCSETS2 reads 44 bytes from a buffer of that length.
    let r = unsafe { libc::ioctl(fd, libc::TCSETS2, termios.as_ptr()) };
    check(r as libc::c_long).map(|_| ())
}

/// `TIOCGWINSZ`: (rows, cols, xpixel, ypixel).
pub fn get_winsize(fd: RawFd) -> io::Result<[u16; 4]> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into a local.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) };
    check(r as libc::c_long)?;
    Ok([w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel])
}

/// `TIOCSWINSZ`.
pub fn set_winsize(fd: RawFd, ws: [u16; 4]) -> io::Result<()> {
    let w = libc::winsize {
        ws_row: ws[0],
        ws_col: ws[1],
        ws_xpixel: ws[2],
        ws_ypixel: ws[3],
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a local.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &w) };
    check(r as libc::c_long).map(|_| ())
}

/// `read(2)` into a buffer; returns the bytes read.
pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    check(r as libc::c_long).map(|n| n as usize)
}

/// `write(2)` all of `buf`.
pub fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: the kernel reads at most `len - off` bytes from `buf[off..]`.
        let r = unsafe { libc::write(fd, buf[off..].as_ptr().cast(), buf.len() - off) };
        off += check(r as libc::c_long)? as usize;
    }
    Ok(())
}

/// Attributes of a POSIX message queue: (flags, maxmsg, msgsize, curmsgs).
pub fn mq_getattr(fd: RawFd) -> io::Result<(i64, i64, i64, i64)> {
    // SAFETY: mq_attr is plain data; zeroed is valid.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one mq_attr into `a`; an mqd_t is the queue's fd on Linux.
    let r = unsafe { libc::mq_getattr(fd, &mut a) };
    check(r as libc::c_long)?;
    Ok((a.mq_flags, a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs))
}

/// Take the next message (highest priority first) without waiting: `None` if the queue is empty.
pub fn mq_take(fd: RawFd, msgsize: usize) -> io::Result<Option<(u32, Vec<u8>)>> {
    let mut buf = vec![0u8; msgsize.max(1)];
    let mut prio: libc::c_uint = 0;
    // A deadline in the past: the call returns at once.
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: live buffer of the stated size; `prio` and `ts` are locals.
    let n =
        unsafe { libc::mq_timedreceive(fd, buf.as_mut_ptr().cast(), buf.len(), &mut prio, &ts) };
    if n < 0 {
        let e = last_err();
        if matches!(e.raw_os_error(), Some(libc::ETIMEDOUT) | Some(libc::EAGAIN)) {
            return Ok(None);
        }
        return Err(e);
    }
    buf.truncate(n as usize);
    Ok(Some((prio, buf)))
}

/// Queue a message without waiting.
pub fn mq_put(fd: RawFd, prio: u32, data: &[u8]) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: live buffer of the stated size.
    let r = unsafe { libc::mq_timedsend(fd, data.as_ptr().cast(), data.len(), prio, &ts) };
    check(r as libc::c_long).map(|_| ())
}

/// `mq_open(name, flags[, mode, attr])`; with O_CREAT the queue gets `maxmsg`/`msgsize`.
pub fn mq_open(
    name: &str,
    flags: i32,
    mode: u32,
    maxmsg: i64,
    msgsize: i64,
) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: mq_attr is plain data.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    a.mq_maxmsg = maxmsg;
    a.mq_msgsize = msgsize;
    // SAFETY: `c` is NUL-terminated; with O_CREAT the variadic mode and attr pointer are passed.
    let r = unsafe {
        libc::mq_open(
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::mode_t,
            &mut a as *mut libc::mq_attr,
        )
    };
    check(r as libc::c_long)?;
    Ok(owned_fd(r as RawFd))
}

/// What `shmctl(IPC_STAT)` says about a System V segment: (key, size, mode incl. SHM_DEST, uid,
/// gid).
pub fn shm_stat(id: i32) -> io::Result<(i32, u64, u32, u32, u32)> {
    // SAFETY: shmid_ds is plain data; zeroed is valid.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one shmid_ds into a local.
    let r = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
    check(r as libc::c_long)?;
    Ok((
        ds.shm_perm.__key,
        ds.shm_segsz as u64,
        ds.shm_perm.mode as u32,
        ds.shm_perm.uid,
        ds.shm_perm.gid,
    ))
}

/// Create a System V segment that must get id `id` (through `kernel.shm_next_id`, which takes
/// effect in our IPC namespace). Returns the id the kernel gave, which the caller must check.
pub fn shm_create(id: i32, key: i32, size: u64, mode: u32) -> io::Result<i32> {
    shm_create_flags(id, key, size, mode, 0)
}

/// As [`shm_create`], with more `shmget` flags (`SHM_HUGETLB` and its size bits).
pub fn shm_create_flags(id: i32, key: i32, size: u64, mode: u32, flags: i32) -> io::Result<i32> {
    std::fs::write("/proc/sys/kernel/shm_next_id", id.to_string())?;
    // SAFETY: integer arguments.
    let r = unsafe {
        libc::shmget(
            key,
            size as usize,
            libc::IPC_CREAT | libc::IPC_EXCL | flags | (mode & 0o777) as i32,
        )
    };
    let e = last_err();
    let _ = std::fs::write("/proc/sys/kernel/shm_next_id", "-1");
    if r < 0 {
        return Err(e);
    }
    Ok(r)
}

/// Set owner and mode of a segment (`IPC_SET`).
pub fn shm_set_owner(id: i32, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: plain data; zeroed is valid.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    ds.shm_perm.uid = uid;
    ds.shm_perm.gid = gid;
    ds.shm_perm.mode = (mode & 0o777) as _;
    // SAFETY: IPC_SET reads uid, gid and mode from a local shmid_ds.
    let r = unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) };
    check(r as libc::c_long).map(|_| ())
}

/// Mark a segment for removal once the last process detaches (`IPC_RMID`).
pub fn shm_remove(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no buffer.
    let r = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    check(r as libc::c_long).map(|_| ())
}

/// Write `data` at `offset` into segment `id` (attached in our process for the copy).
pub fn shm_write(id: i32, offset: u64, data: &[u8]) -> io::Result<()> {
    let (_, size, ..) = shm_stat(id)?;
    if offset
        .checked_add(data.len() as u64)
        .is_none_or(|end| end > size)
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: attach anywhere, read-write.
    let p = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if p as isize == -1 {
        return Err(last_err());
    }
    // SAFETY: the segment is `size` bytes, and offset + len <= size was checked above.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            (p as *mut u8).add(offset as usize),
            data.len(),
        );
        libc::shmdt(p);
    }
    Ok(())
}

/// One row of `/proc/sysvipc/msg` or `/proc/sysvipc/sem`, by column name.
pub fn sysvipc_rows(kind: &str) -> io::Result<Vec<std::collections::HashMap<String, i64>>> {
    let text = std::fs::read_to_string(format!("/proc/sysvipc/{kind}"))?;
    let mut lines = text.lines();
    let head: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok(lines
        .map(|l| {
            head.iter()
                .cloned()
                .zip(l.split_whitespace().map(|v| v.parse::<i64>().unwrap_or(0)))
                .collect()
        })
        .collect())
}

/// Values of a semaphore set, and the pid of the last operation on each semaphore.
pub fn sem_values(id: i32, nsems: usize) -> io::Result<(Vec<u16>, Vec<i32>)> {
    let mut vals = vec![0u16; nsems];
    // SAFETY: GETALL writes `nsems` unsigned shorts into the array.
    let r = unsafe { libc::semctl(id, 0, libc::GETALL, vals.as_mut_ptr()) };
    check(r as libc::c_long)?;
    let mut pids = Vec::with_capacity(nsems);
    for i in 0..nsems {
        // SAFETY: GETPID takes no buffer.
        let p = unsafe { libc::semctl(id, i as i32, libc::GETPID) };
        pids.push(check(p as libc::c_long)? as i32);
    }
    Ok((vals, pids))
}

/// Messages of a System V queue, in order, read with `MSG_COPY` (not consumed): (type, data).
pub fn msg_copy_all(id: i32, qnum: usize, max: usize) -> io::Result<Vec<(i64, Vec<u8>)>> {
    const MSG_COPY: i32 = 0o40000;
    let mut out = Vec::with_capacity(qnum);
    let mut buf = vec![0u8; 8 + max];
    for i in 0..qnum {
        // SAFETY: the kernel writes a long mtype plus at most `max` bytes into `buf`.
        let n = unsafe {
            libc::msgrcv(
                id,
                buf.as_mut_ptr().cast(),
                max,
                i as libc::c_long,
                MSG_COPY | libc::IPC_NOWAIT | libc::MSG_NOERROR,
            )
        };
        if n < 0 {
            return Err(last_err());
        }
        let mtype = i64::from_ne_bytes(buf[0..8].try_into().expect("8 bytes"));
        out.push((mtype, buf[8..8 + n as usize].to_vec()));
    }
    Ok(out)
}

/// Create a System V object (`which`: "msg" or "sem") that must get id `id`, through
/// `kernel.<which>_next_id`. Returns the id the kernel gave.
pub fn sysv_create(which: &str, id: i32, key: i32, mode: u32, nsems: i32) -> io::Result<i32> {
    std::fs::write(format!("/proc/sys/kernel/{which}_next_id"), id.to_string())?;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32;
    // SAFETY: integer arguments.
    let r = unsafe {
        if which == "sem" {
            libc::semget(key, nsems, flags)
        } else {
            libc::msgget(key, flags)
        }
    };
    let e = last_err();
    let _ = std::fs::write(format!("/proc/sys/kernel/{which}_next_id"), "-1");
    if r < 0 {
        return Err(e);
    }
    Ok(r)
}

/// Set every value of a semaphore set.
pub fn sem_set_all(id: i32, vals: &[u16]) -> io::Result<()> {
    let mut v = vals.to_vec();
    // SAFETY: SETALL reads `nsems` unsigned shorts from the array.
    let r = unsafe { libc::semctl(id, 0, libc::SETALL, v.as_mut_ptr()) };
    check(r as libc::c_long).map(|_| ())
}

/// Queue one message (type, data) on a System V queue without waiting.
pub fn msg_send(id: i32, mtype: i64, data: &[u8]) -> io::Result<()> {
    let mut b = mtype.to_ne_bytes().to_vec();
    b.extend_from_slice(data);
    // SAFETY: `b` holds a long mtype followed by `data.len()` bytes.
    let r = unsafe { libc::msgsnd(id, b.as_ptr().cast(), data.len(), libc::IPC_NOWAIT) };
    check(r as libc::c_long).map(|_| ())
}

/// Remove a System V object (`which`: "msg" or "sem").
pub fn sysv_remove(which: &str, id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no buffer.
    let r = unsafe {
        if which == "sem" {
            libc::semctl(id, 0, libc::IPC_RMID)
        } else {
            libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut())
        }
    };
    check(r as libc::c_long).map(|_| ())
}

/// Try to take an exclusive `flock` on `f` without waiting: `Ok(false)` if someone holds it.
pub fn flock_try_exclusive(f: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we borrow for the duration of the call.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    match check(r as libc::c_long) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Restore the default action of SIGPIPE (a CLI whose output pipe closes just ends, as
/// command-line tools do, instead of failing on every write).
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The gid of the group named `name` in the system's group database (NSS: `/etc/group`,
/// LDAP…); `Ok(None)` if there is no such group.
pub fn group_gid(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name contains NUL"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 16 * 1024];
    loop {
        // SAFETY: an all-zero `group` is a valid value (null pointers, gid 0); getgrnam_r only
        // writes into it and into `buf`, whose length we pass; `result` points into either.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `cname` is NUL-terminated, `grp` and
        // `result` are ours, `buf` is writable for `buf.len()` bytes.
        let r = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if r == libc::ERANGE && buf.len() < 1 << 22 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        return Ok(if result.is_null() {
            None
        } else {
            Some(grp.gr_gid)
        });
    }
}

/// `kcmp` type for comparing fd tables (`CLONE_FILES` sharing).
pub const KCMP_FILES: i32 = 2;

/// `flock(fd, op)` on a descriptor (`LOCK_SH`/`LOCK_EX`, with `LOCK_NB` to not wait).
pub fn flock_fd(fd: RawFd, op: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::flock(fd, op) } as libc::c_long).map(|_| ())
}

/// `fcntl(fd, cmd, &struct flock)` for the record-lock commands (`F_SETLK`, `F_OFD_SETLK`,
/// `F_GETLK`, `F_OFD_GETLK`): `l_type`, `l_start`, `l_len` (whence `SEEK_SET`); returns the
/// struct as the kernel left it (`l_type`, `l_start`, `l_len`, `l_pid`).
pub fn fcntl_lock(
    fd: RawFd,
    cmd: i32,
    l_type: i16,
    start: i64,
    len: i64,
) -> io::Result<(i16, i64, i64, i32)> {
    // SAFETY: a zeroed `struct flock` is valid; the fields set below are plain integers.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: the kernel reads and writes one `struct flock` in our local for these commands.
    check(unsafe { libc::fcntl(fd, cmd, &mut fl as *mut libc::flock) } as libc::c_long)?;
    Ok((fl.l_type, fl.l_start, fl.l_len, fl.l_pid))
}

/// `fcntl` commands of the owner of a description (not in `libc` for this target).
pub const F_SETSIG: i32 = 10;
/// See [`F_SETSIG`].
pub const F_GETSIG: i32 = 11;
/// See [`F_SETSIG`].
pub const F_SETOWN_EX: i32 = 15;
/// See [`F_SETSIG`].
pub const F_GETOWN_EX: i32 = 16;

#[repr(C)]
struct FOwnerEx {
    kind: i32,
    pid: i32,
}

/// `fcntl(fd, F_GETOWN_EX)`: (owner type, pid) as the caller's pid namespace sees it.
pub fn get_owner_ex(fd: RawFd) -> io::Result<(i32, i32)> {
    let mut o = FOwnerEx { kind: 0, pid: 0 };
    // SAFETY: the kernel writes one `struct f_owner_ex` (two ints) into our local.
    check(unsafe { libc::fcntl(fd, F_GETOWN_EX, &mut o as *mut FOwnerEx) } as libc::c_long)?;
    Ok((o.kind, o.pid))
}
