//! Event objects: eventfd, epoll, timerfd, signalfd, inotify.
//!
//! All of them are anonymous-inode files whose state the kernel prints in
//! `/proc/PID/fdinfo/FD`:
//! - eventfd: `eventfd-count`, `eventfd-semaphore`;
//! - epoll: one `tfd: N events: X data: Y` line per registration (N is the fd number in the
//!   registering process);
//! - timerfd: `clockid`, `ticks` (unread expirations), `settime flags`, `it_value` (time left)
//!   and `it_interval` (an absolute timer is saved with its deadline, a relative one with the
//!   time it had left). A periodic timer that expired and was not read shows `it_value: (0, 0)`
//!   (the kernel re-arms it only on read): it is read once and its count given back
//!   (`TFD_IOC_SET_TICKS`), which re-arms it as the task's own read would;
//! - signalfd: `sigmask`;
//! - inotify: one `inotify wd:… mask:… fhandle-type:… f_handle:…` line per watch; the watched
//!   object is found again with `open_by_handle_at` on its filesystem, which gives its path.
//!
//! Restore: the restorer creates each object (eventfd with its count and mode, timerfd armed
//! with the time that was left and its unread ticks via `TFD_IOC_SET_TICKS`, signalfd with its
//! mask, inotify with the same watch descriptors — dummy watches fill gaps in the numbering and
//! are removed again) and hands it to the tasks like any file. Epoll registrations name fds of
//! the task, so they are injected (`epoll_ctl(EPOLL_CTL_ADD)`) into the owning task once its fd
//! table is complete. A registration belongs to an open file description, and its number is
//! only the one it had when registered: the checkpoint finds the description with
//! `kcmp(KCMP_EPOLL_TFD)`, and when the number is closed or holds another file at restore, the
//! description is put at the number for the call and the number given back afterwards. Not kept: readiness (recomputed by the kernel), queued inotify events.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::kind::{DumpCtx, ObjectKind, RestoreCtx};
use crate::files::{FileTable, Opened, Probe};
use crate::remote::Remote;
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::proc::FdInfo;
use stasis_sys::sys;
use std::os::fd::{AsRawFd, OwnedFd};

fn hex_u64(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim(), 16).ok()
}

/// eventfd state from fdinfo.
pub fn dump_eventfd(pid: i32, fd: i32, info: &FdInfo) -> Result<rec::EventfdState, Failure> {
    let count = info
        .extra_value("eventfd-count")
        .and_then(|v| v.trim().parse().ok().or_else(|| hex_u64(v)))
        .ok_or_else(|| Failure::msg(pid, format!("fd {fd}: eventfd-count missing from fdinfo")))?;
    let semaphore = info
        .extra_value("eventfd-semaphore")
        .map(|v| v.trim() == "1")
        .unwrap_or(false);
    Ok(rec::EventfdState { count, semaphore })
}

/// epoll registrations from fdinfo.
pub fn dump_epoll(pid: i32, fd: i32, info: &FdInfo) -> Result<rec::EpollState, Failure> {
    let mut items = Vec::new();
    for (k, v) in &info.extra {
        if k != "tfd" {
            continue;
        }
        // value: "6 events:       19 data:              def  pos:0 ino:… sdev:…"
        let line = format!("tfd: {v}");
        let mut tfd = None;
        let mut events = None;
        let mut data = None;
        let toks: Vec<&str> = line.split_whitespace().collect();
        for w in toks.windows(2) {
            match w[0] {
                "tfd:" => tfd = w[1].parse::<i32>().ok(),
                "events:" => events = u32::from_str_radix(w[1], 16).ok(),
                "data:" => data = hex_u64(w[1]),
                _ => {}
            }
        }
        match (tfd, events, data) {
            (Some(tfd), Some(events), Some(data)) => items.push(rec::EpollItem {
                tfd,
                events,
                data,
                owner_pid: pid,
                target: None,
            }),
            _ => {
                return Err(Failure::msg(
                    pid,
                    format!("fd {fd}: cannot parse epoll line {line:?}"),
                ))
            }
        }
    }
    Ok(rec::EpollState { items })
}

fn paren_pair(v: &str) -> Option<(u64, u64)> {
    let v = v.trim().trim_start_matches('(').trim_end_matches(')');
    let (a, b) = v.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The clock `clock_gettime` reads for a timer clock (the alarm clocks have no reading of
/// their own).
fn read_clock(clock: i32) -> i32 {
    match clock {
        libc::CLOCK_REALTIME_ALARM => libc::CLOCK_REALTIME,
        libc::CLOCK_BOOTTIME_ALARM => libc::CLOCK_BOOTTIME,
        c => c,
    }
}

fn timerfd_field(info: &FdInfo, key: &str) -> Option<(u64, u64)> {
    info.extra_value(key).and_then(paren_pair)
}

/// A periodic timerfd that expired and has not been read: the kernel re-arms it only on read,
/// so until then fdinfo shows `it_value: (0, 0)` with its interval and at least one tick.
pub fn timerfd_awaits_rearm(info: &FdInfo) -> bool {
    let ticks: u64 = info
        .extra_value("ticks")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    timerfd_field(info, "it_value") == Some((0, 0))
        && timerfd_field(info, "it_interval").is_some_and(|i| i != (0, 0))
        && ticks != 0
}

fn cancel_on_set(info: &FdInfo) -> bool {
    info.extra_value("settime flags")
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .is_some_and(|f| f & libc::TFD_TIMER_CANCEL_ON_SET as u32 != 0)
}

/// Re-arm a periodic timerfd that awaits its re-arm ([`timerfd_awaits_rearm`]) as the task's
/// next read would — read it (the kernel forwards the timer to its next expiry and counts the
/// missed periods), then give the count back with `TFD_IOC_SET_TICKS` — and return its fdinfo,
/// which now shows the time left until the next expiry. The task reads the same count as it
/// would have. A `TFD_TIMER_CANCEL_ON_SET` timer is left alone (a read would consume a pending
/// `ECANCELED`): `None`, and [`dump_timerfd`] saves it to expire one interval later.
pub fn rearm_expired_timerfd(pid: i32, fd: i32, own: OwnedFd) -> Result<Option<FdInfo>, Failure> {
    use std::io::Read;
    let info = stasis_sys::proc::read_fdinfo(pid, fd)
        .map_err(|e| Failure::msg(pid, format!("fd {fd}: timerfd fdinfo: {e}")))?;
    if !timerfd_awaits_rearm(&info) || cancel_on_set(&info) {
        return Ok(None);
    }
    let mut file = std::fs::File::from(own);
    let mut buf = [0u8; 8];
    // Ticks are pending, so the read does not block (the tree is frozen: nobody else reads).
    file.read_exact(&mut buf).ctx(pid, || {
        format!("fd {fd}: read of an expired periodic timerfd")
    })?;
    let ticks = u64::from_ne_bytes(buf);
    sys::timerfd_set_ticks(file.as_raw_fd(), ticks).ctx(pid, || {
        format!("fd {fd}: timerfd TFD_IOC_SET_TICKS({ticks})")
    })?;
    stasis_sys::proc::read_fdinfo(pid, fd)
        .map(Some)
        .map_err(|e| Failure::msg(pid, format!("fd {fd}: timerfd fdinfo: {e}")))
}

/// timerfd state from fdinfo.
pub fn dump_timerfd(pid: i32, fd: i32, info: &FdInfo) -> Result<rec::TimerfdState, Failure> {
    let miss =
        |what: &str| Failure::msg(pid, format!("fd {fd}: timerfd {what} missing from fdinfo"));
    let clock_id = info
        .extra_value("clockid")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| miss("clockid"))?;
    let ticks = info
        .extra_value("ticks")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| miss("ticks"))?;
    let settime_flags = info
        .extra_value("settime flags")
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .ok_or_else(|| miss("settime flags"))?;
    let (vs, vn) = info
        .extra_value("it_value")
        .and_then(paren_pair)
        .ok_or_else(|| miss("it_value"))?;
    let (is, inn) = info
        .extra_value("it_interval")
        .and_then(paren_pair)
        .ok_or_else(|| miss("it_interval"))?;
    let interval_ns = is * 1_000_000_000 + inn;
    let mut left = vs * 1_000_000_000 + vn;
    if timerfd_awaits_rearm(info) {
        // Not re-armed (a CANCEL_ON_SET timer): its next expiry is at most one interval away.
        left = interval_ns;
    }
    // An absolute timer keeps its deadline however long the tree is down: store the deadline,
    // on the task's clock (its time namespace's offset added: the tree may be restored into a
    // time namespace with other offsets).
    let value_ns = if settime_flags & libc::TFD_TIMER_ABSTIME as u32 != 0 && left != 0 {
        let now = sys::clock_ns(read_clock(clock_id))
            .ctx(pid, || format!("fd {fd}: clock_gettime({clock_id})"))?;
        let off = stasis_sys::ns::timens_offsets(Some(pid))
            .ctx(pid, || format!("fd {fd}: timens_offsets"))?
            .of_clock(clock_id);
        (now as i128 + left as i128 + off as i128).max(1) as u64
    } else {
        left
    };
    Ok(rec::TimerfdState {
        clock_id,
        settime_flags,
        value_ns,
        interval_ns,
        ticks,
    })
}

/// signalfd mask from fdinfo.
pub fn dump_signalfd(pid: i32, fd: i32, info: &FdInfo) -> Result<rec::SignalfdState, Failure> {
    let mask = info
        .extra_value("sigmask")
        .and_then(hex_u64)
        .ok_or_else(|| {
            Failure::msg(
                pid,
                format!("fd {fd}: signalfd sigmask missing from fdinfo"),
            )
        })?;
    Ok(rec::SignalfdState { mask })
}

/// Mount point of the filesystem with kernel device number `sdev` (as fdinfo prints it:
/// major << 20 | minor).
pub(crate) fn mount_for_sdev(sdev: u64) -> Option<String> {
    let (major, minor) = ((sdev >> 20) as u32, (sdev & 0xfffff) as u32);
    let mounts = stasis_sys::proc::read_mountinfo(sys::getpid()).ok()?;
    mounts
        .iter()
        .find(|m| m.major == major && m.minor == minor && m.root == "/")
        .or_else(|| mounts.iter().find(|m| m.major == major && m.minor == minor))
        .map(|m| m.mount_point.clone())
}

/// inotify watches from fdinfo, each resolved to a path through its file handle.
pub fn dump_inotify(pid: i32, fd: i32, info: &FdInfo) -> Result<rec::InotifyState, Failure> {
    let mut watches = Vec::new();
    for (k, v) in &info.extra {
        if k != "inotify wd" {
            continue;
        }
        let line = format!("wd:{v}");
        let mut f = std::collections::HashMap::new();
        for tok in line.split_whitespace() {
            if let Some((a, b)) = tok.split_once(':') {
                f.insert(a, b);
            }
        }
        let bad = || Failure::msg(pid, format!("fd {fd}: cannot parse inotify line {line:?}"));
        let wd: i32 = f.get("wd").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let mask = f
            .get("mask")
            .and_then(|v| u32::from_str_radix(v, 16).ok())
            .ok_or_else(bad)?;
        let sdev = f.get("sdev").and_then(|v| hex_u64(v)).ok_or_else(bad)?;
        let htype = f
            .get("fhandle-type")
            .and_then(|v| i32::from_str_radix(v, 16).ok())
            .ok_or_else(bad)?;
        let hex = f.get("f_handle").ok_or_else(bad)?;
        let handle: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        let mnt = mount_for_sdev(sdev).ok_or_else(|| {
            Failure::msg(
                pid,
                format!("fd {fd}: inotify watch {wd}: no mount for device {sdev:#x}"),
            )
        })?;
        let mfd = std::fs::File::open(&mnt).ctx(pid, || format!("fd {fd}: opening mount {mnt}"))?;
        let obj = sys::open_by_handle(mfd.as_raw_fd(), htype, &handle).ctx(pid, || {
            format!("fd {fd}: inotify watch {wd}: resolving its file handle")
        })?;
        let path = sys::readlink(&format!("/proc/self/fd/{}", obj.as_raw_fd()))
            .ctx(pid, || format!("fd {fd}: inotify watch {wd}: path"))?;
        let mut w = rec::InotifyWatch {
            wd,
            mask,
            path,
            ..Default::default()
        };
        if let Some(p) = w.path.strip_suffix(" (deleted)") {
            // Checked against the tree's deleted files once every fd is dumped.
            use std::os::unix::fs::MetadataExt;
            let md = std::fs::File::from(obj)
                .metadata()
                .ctx(pid, || format!("fd {fd}: inotify watch {wd}: stat"))?;
            w.path = p.to_string();
            w.deleted = true;
            (w.ino, w.dev) = (md.ino(), md.dev());
        }
        watches.push(w);
    }
    watches.sort_by_key(|w| w.wd);
    Ok(rec::InotifyState { watches })
}

// ---------------------------------------------------------------------------------------------
// Restore side.

fn nonblock(flags: u32) -> i32 {
    if flags & libc::O_NONBLOCK as u32 != 0 {
        libc::O_NONBLOCK
    } else {
        0
    }
}

/// A timerfd as saved: its clock, settime flags (CANCEL_ON_SET needs them even disarmed),
/// the time left or its absolute deadline, interval and unread ticks. An absolute deadline that
/// passed while the tree was down counts its expirations and moves on to the next one (or
/// leaves a one-shot timer disarmed), so the task reads every expiry and the period keeps its
/// phase.
fn create_timerfd(s: &rec::TimerfdState, flags: i32) -> std::io::Result<OwnedFd> {
    let fd = sys::timerfd_create(s.clock_id, flags)?;
    let (mut value, mut ticks) = (s.value_ns, s.ticks);
    let abs = s.settime_flags & libc::TFD_TIMER_ABSTIME as u32 != 0;
    // The deadline is on the tasks' clock: the time namespace our children get (the tree's).
    let shift = if abs {
        stasis_sys::ns::timens_offsets(None)?.of_clock(s.clock_id)
    } else {
        0
    };
    if abs && value != 0 {
        let now = (sys::clock_ns(read_clock(s.clock_id))? as i64 + shift) as u64;
        if value <= now {
            let missed = 1 + (now - value).checked_div(s.interval_ns).unwrap_or(0);
            ticks += missed;
            value = if s.interval_ns == 0 {
                0
            } else {
                value + missed * s.interval_ns
            };
        }
    }
    if value != 0 {
        // Back on our own clock (a deadline before our zero is long past: 1 ns).
        value = (value as i64 - shift).max(1) as u64;
    }
    if value != 0 || s.settime_flags != 0 {
        sys::timerfd_settime(fd.as_raw_fd(), s.settime_flags as i32, s.interval_ns, value)?;
    }
    if ticks != 0 {
        sys::timerfd_set_ticks(fd.as_raw_fd(), ticks)
            .map_err(|e| std::io::Error::new(e.kind(), format!("TFD_IOC_SET_TICKS: {e}")))?;
    }
    Ok(fd)
}

/// Create an eventfd, timerfd, signalfd, inotify or epoll object in the restorer.
pub fn create(f: &rec::FileObject, kind: rec::FileKind) -> Result<OwnedFd, Failure> {
    let what = || format!("open file description #{} ({kind:?})", f.id);
    let missing = || Failure::msg(0, format!("{}: state missing from image", what()));
    match kind {
        rec::FileKind::Eventfd => {
            let s = f.eventfd().ok_or_else(missing)?;
            let mut flags = nonblock(f.flags);
            if s.semaphore {
                flags |= libc::EFD_SEMAPHORE;
            }
            sys::eventfd(s.count, flags).ctx(0, what)
        }
        rec::FileKind::Timerfd => {
            let s = f.timerfd().ok_or_else(missing)?;
            create_timerfd(s, nonblock(f.flags)).ctx(0, what)
        }
        rec::FileKind::Signalfd => {
            let s = f.signalfd().ok_or_else(missing)?;
            sys::signalfd(s.mask, nonblock(f.flags)).ctx(0, what)
        }
        rec::FileKind::Inotify => {
            let s = f.inotify().ok_or_else(missing)?;
            let fd = sys::inotify_init(nonblock(f.flags)).ctx(0, what)?;
            let mut dummies = Vec::new();
            let scratch = tempdir_for_dummies()?;
            let mut next_dummy = 0;
            for w in &s.watches {
                loop {
                    let got = sys::inotify_add_watch(fd.as_raw_fd(), &w.path, w.mask)
                        .ctx(0, || format!("{}: watch {} on {}", what(), w.wd, w.path))?;
                    if got == w.wd {
                        break;
                    }
                    if got > w.wd {
                        return Err(Failure::msg(
                            0,
                            format!(
                                "{}: watch {} on {} came back as {got}",
                                what(),
                                w.wd,
                                w.path
                            ),
                        ));
                    }
                    // A lower number: take it with a dummy watch and try again.
                    sys::inotify_rm_watch(fd.as_raw_fd(), got).ctx(0, what)?;
                    while {
                        let p = scratch.join(format!("d{next_dummy}"));
                        next_dummy += 1;
                        std::fs::create_dir(&p).ctx(0, what)?;
                        let d = sys::inotify_add_watch(
                            fd.as_raw_fd(),
                            &p.to_string_lossy(),
                            libc::IN_DELETE_SELF,
                        )
                        .ctx(0, what)?;
                        dummies.push(d);
                        d < w.wd - 1
                    } {}
                }
            }
            for d in dummies {
                let _ = sys::inotify_rm_watch(fd.as_raw_fd(), d);
            }
            let _ = std::fs::remove_dir_all(&scratch);
            Ok(fd)
        }
        rec::FileKind::Epoll => sys::epoll_create(0).ctx(0, what),
        _ => Err(Failure::msg(0, format!("{}: not an event object", what()))),
    }
}

fn tempdir_for_dummies() -> Result<std::path::PathBuf, Failure> {
    let p = std::env::temp_dir().join(format!("stasis-inotify-{}", sys::getpid()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).ctx(0, || format!("creating {}", p.display()))?;
    Ok(p)
}

/// Which open file description each epoll registration targets (`kcmp(KCMP_EPOLL_TFD)`
/// against one holder of every description of the image, files in flight included): the
/// registration belongs to the description, its `tfd` is only the number it had when it was
/// registered. Runs once every fd table is dumped; the tasks are still frozen.
pub(crate) fn resolve_epoll_targets(t: &mut FileTable) -> Result<(), CheckpointError> {
    let mut holders: Vec<(u32, (i32, i32))> = t.holders.iter().map(|(&k, &v)| (k, v)).collect();
    holders.sort_unstable();
    let fd_ids = t.fd_ids();
    for id in 0..t.files.len() {
        let Some(&(pid, efd)) = t.holders.get(&(id as u32)) else {
            continue;
        };
        let Some(ep) = t.files[id].epoll_mut() else {
            continue;
        };
        for i in 0..ep.items.len() {
            let tfd = ep.items[i].tfd;
            let toff = ep.items[..i].iter().filter(|it| it.tfd == tfd).count() as u32;
            // Most registrations still target what their number holds: try that first.
            let mut found = fd_ids
                .get(&(pid, tfd))
                .copied()
                .filter(|_| sys::kcmp_epoll_tfd(pid, tfd, pid, efd, tfd, toff).ok() == Some(0));
            for &(fid, (hp, hfd)) in holders.iter().filter(|_| found.is_none()) {
                if sys::kcmp_epoll_tfd(hp, hfd, pid, efd, tfd, toff).ctx(pid, || {
                    format!("epoll fd {efd}: kcmp(KCMP_EPOLL_TFD) of registration {tfd}")
                })? == 0
                {
                    found = Some(fid);
                    break;
                }
            }
            let Some(fid) = found else {
                return Err(CheckpointError::Unsupported {
                    pid,
                    what: format!(
                        "epoll fd {efd}: the registration of fd {tfd} targets a file that no fd \
                         of the tree (nor a message in flight) holds; not supported"
                    ),
                });
            };
            ep.items[i].target = Some(fid);
        }
    }
    Ok(())
}

/// Register the epoll items owned by process `p` (after its fds are installed), each with the
/// fd number it was registered under and on the description it targets: when that number is
/// closed or holds another file now, the target is put at the number for the registration and
/// the number is given back (closed, or its file put back with its close-on-exec flag).
pub(crate) fn restore_epoll_items(
    r: &mut Remote,
    p: &rec::Process,
    img: &rec::Checkpoint,
    opened: &mut Opened,
) -> Result<(), Failure> {
    for fd in &p.fds {
        let f = &img.files[fd.file_id as usize];
        let Some(ep) = f.epoll() else { continue };
        // Register once per epoll object: in the first fd (of the owner process) that holds it.
        let first = p.fds.iter().find(|x| x.file_id == fd.file_id).map(|x| x.fd);
        if first != Some(fd.fd) {
            continue;
        }
        let items: Vec<&rec::EpollItem> =
            ep.items.iter().filter(|it| it.owner_pid == p.pid).collect();
        register_items(r, p, opened, fd.fd, &items)?;
    }
    // An epoll only in flight in a unix socket (no task holds it): its registrations are made
    // by the root, through a temporary fd of it.
    if img.processes.first().map(|x| x.pid) != Some(p.pid) {
        return Ok(());
    }
    for f in &img.files {
        let Some(ep) = f.epoll() else { continue };
        if ep.items.is_empty()
            || img
                .processes
                .iter()
                .any(|q| q.fds.iter().any(|x| x.file_id == f.id))
        {
            continue;
        }
        let ours = opened
            .files
            .get(&f.id)
            .map(|o| o.as_raw_fd())
            .ok_or_else(|| Failure::msg(p.pid, format!("epoll #{}: missing from image", f.id)))?;
        let got = crate::memory::FdSource::install(opened, r, ours)?;
        // Above every number a registration may need.
        let efd = r.call(
            "epoll in flight: F_DUPFD_CLOEXEC",
            libc::SYS_fcntl,
            &[got, libc::F_DUPFD_CLOEXEC as u64, opened.high_fd + 48],
        );
        r.call("close", libc::SYS_close, &[got])?;
        let efd = efd?;
        let items: Vec<&rec::EpollItem> = ep.items.iter().collect();
        let res = register_items(r, p, opened, efd as i32, &items);
        r.call("close (epoll in flight)", libc::SYS_close, &[efd])?;
        res?;
    }
    Ok(())
}

/// Register `items` in the epoll at fd `efd` of task `p` (see [`restore_epoll_items`]).
fn register_items(
    r: &mut Remote,
    p: &rec::Process,
    opened: &mut Opened,
    efd: i32,
    items: &[&rec::EpollItem],
) -> Result<(), Failure> {
    {
        for it in items.iter().copied() {
            let ev = [
                it.events.to_le_bytes().to_vec(),
                it.data.to_le_bytes().to_vec(),
            ]
            .concat();
            // struct epoll_event is packed on x86_64: u32 events + u64 data = 12 bytes.
            let a = r.put(0, &ev)?;
            let at_number = p.fds.iter().find(|x| x.fd == it.tfd);
            let direct = match it.target {
                None => true,
                Some(t) => at_number.is_some_and(|x| x.file_id == t),
            };
            let what = format!("epoll fd {efd}: EPOLL_CTL_ADD of fd {}", it.tfd);
            let add = [efd as u64, libc::EPOLL_CTL_ADD as u64, it.tfd as u64, a];
            if direct {
                r.call(&what, libc::SYS_epoll_ctl, &add)?;
                continue;
            }
            let target = it.target.expect("not direct");
            let tfd = it.tfd as u64;
            // The target in the task: an fd of its own, or a copy of the restorer's.
            let (src, temp) = match p.fds.iter().find(|x| x.file_id == target) {
                Some(x) => (x.fd as u64, false),
                None => {
                    let ours = opened.files.get(&target).ok_or_else(|| {
                        Failure::msg(p.pid, format!("{what}: target file missing from image"))
                    })?;
                    let raw = ours.as_raw_fd();
                    (crate::memory::FdSource::install(opened, r, raw)?, true)
                }
            };
            // The file now at the number, set aside.
            let saved = match at_number {
                Some(x) => Some((
                    r.call(
                        &format!("{what}: set fd {} aside", it.tfd),
                        libc::SYS_fcntl,
                        &[tfd, libc::F_DUPFD_CLOEXEC as u64, opened.high_fd + 32],
                    )?,
                    x.cloexec,
                )),
                None => None,
            };
            if src != tfd {
                r.call(&what, libc::SYS_dup3, &[src, tfd, 0])?;
            }
            r.call(&what, libc::SYS_epoll_ctl, &add)?;
            match saved {
                Some((s, cloexec)) => {
                    let fl = if cloexec { libc::O_CLOEXEC } else { 0 };
                    r.call(&what, libc::SYS_dup3, &[s, tfd, fl as u64])?;
                    r.call(&what, libc::SYS_close, &[s])?;
                }
                None => {
                    r.call(&what, libc::SYS_close, &[tfd])?;
                }
            }
            if temp && src != tfd {
                r.call(&what, libc::SYS_close, &[src])?;
            }
        }
    }
    Ok(())
}

/// The deleted regular file of the image that a watch on a deleted object is on.
fn ghost_holding<'a>(
    files: &'a [rec::FileObject],
    w: &rec::InotifyWatch,
) -> Option<&'a rec::FileObject> {
    files.iter().find(|g| {
        g.kind == FileKind::Regular as i32
            && g.deleted
            && g.file_id
                .as_ref()
                .is_some_and(|i| i.ino == w.ino && i.dev == w.dev)
    })
}

/// Where to watch a deleted object at restore: the deleted file recreated in phase 1, through
/// our `/proc/self/fd`.
fn deleted_watch_path(
    w: &rec::InotifyWatch,
    o: &Opened,
    cx: &RestoreCtx<'_>,
) -> Result<String, Failure> {
    let missing = || {
        Failure::msg(
            0,
            format!(
                "inotify watch {} on {} (deleted): the deleted file is not in the image",
                w.wd, w.path
            ),
        )
    };
    let g = ghost_holding(&cx.img.files, w).ok_or_else(missing)?;
    // Still in `made`, or opened already (then in `o.files`).
    let fd = cx
        .made
        .get(&g.id)
        .or_else(|| o.files.get(&g.id))
        .ok_or_else(missing)?;
    Ok(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The event objects: eventfd, epoll, timerfd, signalfd, inotify (anonymous-inode files whose
/// state fdinfo shows).
pub(crate) struct EventKind;

impl ObjectKind for EventKind {
    fn name(&self) -> &'static str {
        "eventfd, epoll, timerfd, signalfd, inotify"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[
            FileKind::Eventfd,
            FileKind::Epoll,
            FileKind::Timerfd,
            FileKind::Signalfd,
            FileKind::Inotify,
        ]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.anon_kind.is_some()
    }

    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        use rec::file_object::State;
        let kind = p
            .anon_kind
            .expect("recognised as an anonymous-inode object");
        let (pid, fd, info) = (p.pid, p.fd, &p.info);
        fo.kind = kind as i32;
        fo.file_id = None;
        fo.state = Some(match kind {
            FileKind::Eventfd => State::Eventfd(dump_eventfd(pid, fd, info)?),
            FileKind::Epoll => {
                let mut ep = dump_epoll(pid, fd, info)?;
                // Only in flight (our copy): no task of the tree registered these.
                if pid == sys::getpid() {
                    ep.items.iter_mut().for_each(|it| it.owner_pid = 0);
                }
                State::Epoll(ep)
            }
            FileKind::Timerfd => {
                let fresh = if timerfd_awaits_rearm(info) {
                    // A periodic timer that expired and was not read: re-arm it the way the
                    // next read would (its tick count kept), so fdinfo shows the next expiry.
                    let own = t.borrow(pid, fd)?;
                    rearm_expired_timerfd(pid, fd, own)?
                } else {
                    None
                };
                State::Timerfd(dump_timerfd(pid, fd, fresh.as_ref().unwrap_or(info))?)
            }
            FileKind::Signalfd => State::Signalfd(dump_signalfd(pid, fd, info)?),
            _ => State::Inotify(dump_inotify(pid, fd, info)?),
        });
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        o: &mut Opened,
        cx: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let kind = FileKind::try_from(f.kind)
            .map_err(|_| Failure::msg(0, "unknown file kind in image"))?;
        if f.inotify()
            .is_some_and(|i| i.watches.iter().any(|w| w.deleted))
        {
            let mut f = f.clone();
            for w in f
                .inotify_mut()
                .into_iter()
                .flat_map(|i| i.watches.iter_mut())
            {
                if w.deleted {
                    w.path = deleted_watch_path(w, o, cx)?;
                    w.mask &= !libc::IN_DONT_FOLLOW;
                }
            }
            return create(&f, kind);
        }
        create(f, kind)
    }

    /// Epoll registrations: which description each targets. Every inotify watch on a deleted
    /// object must be on a deleted file the tree holds open (which the restore recreates); a
    /// watch on anything else deleted is refused.
    fn dump_finish(&self, t: &mut FileTable) -> Result<(), CheckpointError> {
        resolve_epoll_targets(t)?;
        for f in &t.files {
            for w in f.inotify().into_iter().flat_map(|i| &i.watches) {
                if w.deleted && ghost_holding(&t.files, w).is_none() {
                    let (pid, fd) = t.holders.get(&f.id).copied().unwrap_or((0, -1));
                    return Err(CheckpointError::Unsupported {
                        pid,
                        what: format!(
                            "fd {fd} (inotify): watch {} is on {} (deleted), which the tree does not hold open; not supported",
                            w.wd, w.path
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Epoll registrations name fds of the task: made by the task once its table is complete.
    fn in_task(
        &self,
        r: &mut Remote,
        p: &rec::Process,
        img: &rec::Checkpoint,
        o: &mut Opened,
    ) -> Result<(), Failure> {
        restore_epoll_items(r, p, img, o)
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        match FileKind::try_from(f.kind) {
            Ok(FileKind::Eventfd) => {
                format!("eventfd {:?}", f.eventfd().map(|e| (e.count, e.semaphore)))
            }
            Ok(FileKind::Timerfd) => format!("timerfd {:?}", f.timerfd()),
            Ok(FileKind::Signalfd) => format!(
                "signalfd mask {:#x}",
                f.signalfd().map(|s| s.mask).unwrap_or(0)
            ),
            Ok(FileKind::Epoll) => format!(
                "epoll with {} registration(s)",
                f.epoll().map(|e| e.items.len()).unwrap_or(0)
            ),
            _ => format!(
                "inotify watches {:?}",
                f.inotify().map(|i| i
                    .watches
                    .iter()
                    .map(|w| (w.wd, w.path.clone()))
                    .collect::<Vec<_>>())
            ),
        }
    }
}
