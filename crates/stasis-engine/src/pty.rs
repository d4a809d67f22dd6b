//! Pseudo-terminals.
//!
//! ## Dump
//! A master (`/dev/ptmx`) shows its index in fdinfo (`tty-index`); a slave is `/dev/pts/N`. The
//! master is borrowed with `pidfd_getfd`, the slave opened by us (`O_NOCTTY`), to read both
//! termios (`TCGETS2`), the window size, packet mode and lock state. The bytes queued in the
//! pair have no peek: while the tree is frozen they are read out and written straight back —
//! the output waiting for the master's reader is written again through the slave with `OPOST`
//! off; the input waiting for the slave's reader is read with the line discipline switched to
//! non-canonical for a moment and typed again through the master with echo and signals off (a
//! half-typed canonical line stays half-typed). A controlling terminal and its foreground
//! process group come from `/proc/PID/stat` (`tty_nr`, `tpgid`).
//!
//! ## Restore
//! The same index is obtained by opening `/dev/ptmx` until the kernel hands out that index (the
//! extra pairs are closed again); the queues are refilled the same way, then termios, window
//! size, packet mode and lock state are set. The session leader takes its controlling terminal
//! with an injected `ioctl(TIOCSCTTY)` and sets the foreground group with `TIOCSPGRP`.
//!
//! A slave whose master is outside the tree (the terminal the tree was started from) follows
//! the shell-job rule: it is reattached to `--inherit-fd tty:[INDEX]=FD`, or to the restorer's
//! own standard input when that is a terminal; otherwise restore fails naming the fd.

use crate::error::{CheckpointError, Ctx, Failure};
use crate::files::kind::{DumpCtx, ObjectKind, RestoreCtx};
use crate::files::{FileTable, Opened, Probe};
use crate::remote::Remote;
use crate::unix::InFlight;
use stasis_image::records::{self as rec, FileKind};
use stasis_sys::sys;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

const TIOCGPKT: libc::c_ulong = 0x8004_5438;
const TIOCGPTLCK: libc::c_ulong = 0x8004_5439;
const TIOCSPTLCK: libc::c_ulong = 0x4004_5431;
const TIOCGPTN: libc::c_ulong = 0x8004_5430;
const TIOCPKT: libc::c_ulong = 0x5420;

/// Pts major numbers (136..=143).
pub fn is_pts_major(major: u32) -> bool {
    (136..=143).contains(&major)
}

/// Index of a pts device number.
pub fn pts_index(rdev: u64) -> u32 {
    (libc::major(rdev) - 136) * 256 + libc::minor(rdev)
}

// termios2 layout: c_iflag u32 @0, c_oflag @4, c_cflag @8, c_lflag @12, c_line u8 @16,
// c_cc[19] @17, c_ispeed @36, c_ospeed @40.
fn flag(t: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(t[off..off + 4].try_into().expect("4 bytes"))
}

fn set_flag(t: &mut [u8], off: usize, v: u32) {
    t[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

const VTIME: usize = 17 + 5;
const VMIN: usize = 17 + 6;

/// Settings under which input typed into the master arrives unchanged and unechoed.
fn quiet_input(t: &[u8]) -> Vec<u8> {
    let mut q = t.to_vec();
    let iflag =
        flag(t, 0) & !(libc::ICRNL | libc::INLCR | libc::IGNCR | libc::IUCLC | libc::ISTRIP);
    set_flag(&mut q, 0, iflag);
    let lflag = flag(t, 12)
        & !(libc::ECHO
            | libc::ECHOE
            | libc::ECHOK
            | libc::ECHONL
            | libc::ECHOCTL
            | libc::ECHOKE
            | libc::ISIG
            | libc::IEXTEN);
    set_flag(&mut q, 12, lflag);
    q
}

/// Non-canonical, non-blocking read of everything queued.
fn raw_read(t: &[u8]) -> Vec<u8> {
    let mut q = quiet_input(t);
    let lflag = flag(&q, 12) & !libc::ICANON;
    set_flag(&mut q, 12, lflag);
    q[VMIN] = 0;
    q[VTIME] = 0;
    q
}

/// Output written by the slave goes to the master unchanged.
fn raw_output(t: &[u8]) -> Vec<u8> {
    let mut q = t.to_vec();
    let oflag = flag(t, 4) & !libc::OPOST;
    set_flag(&mut q, 4, oflag);
    q
}

fn read_available(fd: RawFd) -> std::io::Result<Vec<u8>> {
    let n = sys::fionread(fd)?;
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let r = sys::read_fd(fd, &mut out[got..])?;
        if r == 0 {
            break;
        }
        got += r;
    }
    out.truncate(got);
    Ok(out)
}

fn open_slave(index: u32) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/dev/pts/{index}"))
}

/// Dump a pty pair through its master (borrowed from the task) and its queued bytes, which
/// are read and written straight back.
pub fn dump_master(
    pid: i32,
    fd: i32,
    master: &OwnedFd,
    index: u32,
) -> Result<rec::PtyState, Failure> {
    let m = master.as_raw_fd();
    let what = |w: &str| format!("fd {fd} (pty master {index}): {w}");
    let locked = sys::ioctl_get_int(m, TIOCGPTLCK).ctx(pid, || what("TIOCGPTLCK"))? != 0;
    let packet_mode = sys::ioctl_get_int(m, TIOCGPKT).ctx(pid, || what("TIOCGPKT"))? != 0;
    let master_termios = sys::tcgets2(m).ctx(pid, || what("TCGETS2"))?;
    let winsize = sys::get_winsize(m).ctx(pid, || what("TIOCGWINSZ"))?;
    let mut st = rec::PtyState {
        index,
        termios: Vec::new(),
        master_termios,
        winsize: winsize.iter().map(|&v| v as u32).collect(),
        packet_mode,
        locked,
        input: Vec::new(),
        output: Vec::new(),
        uid: 0,
        gid: 0,
        mode: 0o620,
        external: false,
    };
    if let Ok(md) = std::fs::metadata(format!("/dev/pts/{index}")) {
        st.uid = md.uid();
        st.gid = md.gid();
        st.mode = md.mode() & 0o7777;
    }
    if locked {
        // Nobody can have opened the slave: nothing queued on it, settings are the master's.
        st.termios = st.master_termios.clone();
        return Ok(st);
    }
    let slave = open_slave(index).ctx(pid, || what("opening the slave"))?;
    let s = slave.as_raw_fd();
    st.termios = sys::tcgets2(s).ctx(pid, || what("TCGETS2 on the slave"))?;
    // Output waiting for the master's reader (packet mode off while reading: it would prefix
    // every read with a status byte).
    if packet_mode {
        sys::ioctl_set_int(m, TIOCPKT, 0).ctx(pid, || what("TIOCPKT off"))?;
    }
    let out = read_available(m);
    if packet_mode {
        sys::ioctl_set_int(m, TIOCPKT, 1).ctx(pid, || what("TIOCPKT on"))?;
    }
    st.output = out.ctx(pid, || what("reading queued output"))?;
    // Input waiting for the slave's reader, complete lines and a half-typed one alike.
    sys::tcsets2(s, &raw_read(&st.termios)).ctx(pid, || what("TCSETS2"))?;
    let inp = read_available(s);
    let back = sys::tcsets2(s, &st.termios);
    st.input = inp.ctx(pid, || what("reading queued input"))?;
    back.ctx(pid, || what("TCSETS2"))?;
    // Put both back exactly.
    refill(m, s, &st).ctx(pid, || what("putting queued bytes back"))?;
    Ok(st)
}

/// A slave's termios and window size, on its record (best effort: a terminal outside the
/// tree that `restore --new-tty` replaces gets them).
pub fn slave_settings(slave: &OwnedFd, st: &mut rec::PtyState) {
    if let Ok(t) = sys::tcgets2(slave.as_raw_fd()) {
        st.termios = t;
    }
    if let Ok(w) = sys::get_winsize(slave.as_raw_fd()) {
        st.winsize = w.iter().map(|&v| v as u32).collect();
    }
}

/// Bytes of `input` that form complete canonical lines (up to the last line end).
fn complete_lines(t: &[u8], input: &[u8]) -> usize {
    let cc = &t[17..36];
    let ends = [b'\n', cc[libc::VEOL], cc[libc::VEOL2], cc[libc::VEOF]];
    input
        .iter()
        .rposition(|b| *b != 0 && ends.contains(b))
        .map(|p| p + 1)
        .unwrap_or(0)
}

/// Wait until the line discipline has taken in what was written to the other side (it runs
/// in a kernel worker, after `write` returns).
fn wait_inq(fd: RawFd, want: usize) -> std::io::Result<()> {
    let start = std::time::Instant::now();
    while sys::fionread(fd)? < want {
        if start.elapsed() > std::time::Duration::from_secs(2) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "terminal input not processed within 2 s",
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    Ok(())
}

/// Write `st.input` and `st.output` into the pair (whose queues are empty) and leave the slave
/// with `st.termios`. Input is typed through the master with echo, signals and input mapping
/// off but the canonical mode as saved, so complete lines and a half-typed one come back as
/// they were; we wait for the line discipline before the saved settings return.
fn refill(m: RawFd, s: RawFd, st: &rec::PtyState) -> std::io::Result<()> {
    let canonical = flag(&st.termios, 12) & libc::ICANON != 0;
    if !st.input.is_empty() {
        sys::tcsets2(s, &quiet_input(&st.termios))?;
        sys::write_fd(m, &st.input)?;
        if canonical {
            wait_inq(s, complete_lines(&st.termios, &st.input))?;
            // A non-blocking read with no complete line makes the kernel process pending
            // input now and returns EAGAIN without consuming anything.
            if complete_lines(&st.termios, &st.input) == 0 {
                let mut b = [0u8; 1];
                let _ = sys::read_fd(s, &mut b);
            }
        } else {
            wait_inq(s, st.input.len())?;
        }
    }
    if !st.output.is_empty() {
        sys::tcsets2(s, &raw_output(&st.termios))?;
        sys::write_fd(s, &st.output)?;
        wait_inq(m, st.output.len())?;
    }
    sys::tcsets2(s, &st.termios)
}

/// The controlling terminal of a session leader, if it is a pts.
pub fn dump_ctty(stat: &stasis_sys::proc::Stat) -> Option<rec::Ctty> {
    let nr = stat.tty_nr as u32 as u64;
    if nr == 0 || stat.pid != stat.session {
        return None;
    }
    let major = ((nr >> 8) & 0xfff) as u32;
    let minor = ((nr & 0xff) | ((nr >> 12) & 0xfff00)) as u32;
    is_pts_major(major).then(|| rec::Ctty {
        index: (major - 136) * 256 + minor,
        fg_pgid: stat.tpgid,
    })
}

// ---------------------------------------------------------------------------------------------
// Restore side.

/// A recreated pair: our master and a slave fd of ours.
pub struct Pair {
    /// Master.
    pub master: OwnedFd,
    /// Slave (ours, O_NOCTTY).
    pub slave: std::fs::File,
}

/// Open `/dev/ptmx` until the kernel hands out `index`.
fn open_index(index: u32) -> Result<OwnedFd, Failure> {
    let mut extras = Vec::new();
    loop {
        let m: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/ptmx")
            .ctx(0, || "opening /dev/ptmx".into())?
            .into();
        let n = sys::ioctl_get_int(m.as_raw_fd(), TIOCGPTN).ctx(0, || "TIOCGPTN".into())? as u32;
        if n == index {
            return Ok(m);
        }
        if n > index || extras.len() > 4096 {
            return Err(Failure::msg(
                0,
                format!("pty index {index} is taken (the kernel handed out {n}): restore needs the same pty numbers; free /dev/pts/{index} or restore into a partition with its own devpts"),
            ));
        }
        extras.push(m);
    }
}

/// Recreate every pty pair of the image.
pub fn create_pairs(img: &rec::Checkpoint) -> Result<HashMap<u32, Pair>, Failure> {
    let mut out = HashMap::new();
    let mut indexes: Vec<&rec::PtyState> = img
        .files
        .iter()
        .filter(|f| f.kind == rec::FileKind::PtyMaster as i32)
        .filter_map(|f| f.pty())
        .collect();
    indexes.sort_by_key(|p| p.index);
    for st in indexes {
        let what = || format!("pty {}", st.index);
        let master = open_index(st.index)?;
        let m = master.as_raw_fd();
        sys::ioctl_set_int(m, TIOCSPTLCK, 0).ctx(0, || format!("{}: unlock", what()))?;
        let slave = open_slave(st.index).ctx(0, || format!("{}: opening the slave", what()))?;
        let s = slave.as_raw_fd();
        refill(m, s, st).ctx(0, || format!("{}: refilling queued bytes", what()))?;
        sys::tcsets2(m, &st.master_termios).ctx(0, || format!("{}: master termios", what()))?;
        if st.winsize.len() == 4 {
            let w = [
                st.winsize[0] as u16,
                st.winsize[1] as u16,
                st.winsize[2] as u16,
                st.winsize[3] as u16,
            ];
            sys::set_winsize(m, w).ctx(0, || format!("{}: window size", what()))?;
        }
        if st.packet_mode {
            sys::ioctl_set_int(m, TIOCPKT, 1).ctx(0, || format!("{}: packet mode", what()))?;
        }
        let path = format!("/dev/pts/{}", st.index);
        let _ = std::os::unix::fs::chown(&path, Some(st.uid), Some(st.gid));
        let _ =
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(st.mode));
        out.insert(st.index, Pair { master, slave });
    }
    Ok(out)
}

/// Lock the pairs that were locked (after every slave description is open).
pub fn finish_pairs(img: &rec::Checkpoint, pairs: &HashMap<u32, Pair>) -> Result<(), Failure> {
    for f in &img.files {
        if let Some(st) = f
            .pty()
            .filter(|p| p.locked && f.kind == rec::FileKind::PtyMaster as i32)
        {
            if let Some(p) = pairs.get(&st.index) {
                sys::ioctl_set_int(p.master.as_raw_fd(), TIOCSPTLCK, 1)
                    .ctx(0, || format!("pty {}: lock", st.index))?;
            }
        }
    }
    Ok(())
}

/// Our fd for terminal `index`: the recreated pair's slave, or the outside terminal the
/// restorer was given for it (`--inherit-fd tty:[INDEX]=FD`, shell-job rule).
fn terminal_fd(img: &rec::Checkpoint, opened: &crate::files::Opened, index: u32) -> Option<RawFd> {
    if let Some(pair) = opened.ptys.get(&index) {
        return Some(pair.slave.as_raw_fd());
    }
    img.files
        .iter()
        .find(|f| {
            f.kind == rec::FileKind::PtySlave as i32
                && f.pty().is_some_and(|p| p.index == index && p.external)
        })
        .and_then(|f| opened.files.get(&f.id))
        .map(|fd| fd.as_raw_fd())
}

/// Make terminal `ctty` the controlling terminal of session leader `r` (right after its
/// `setsid`, before it creates children, which inherit the terminal as they did originally).
/// An outside terminal that another session already controls is left alone: the restored
/// session then runs without a controlling terminal (documented).
pub fn acquire_ctty(
    r: &mut Remote,
    p: &rec::Process,
    img: &rec::Checkpoint,
    opened: &mut crate::files::Opened,
) -> Result<(), Failure> {
    let Some(c) = &p.ctty else { return Ok(()) };
    let Some(ours) = terminal_fd(img, opened, c.index) else {
        tracing::warn!(
            pid = p.pid,
            index = c.index,
            "controlling terminal not available: the session runs without one"
        );
        return Ok(());
    };
    let fd = crate::memory::FdSource::install(opened, r, ours)?;
    let res = r.call_raw(
        "ioctl(TIOCSCTTY)",
        libc::SYS_ioctl,
        &[fd, libc::TIOCSCTTY, 0],
    )?;
    r.call("close", libc::SYS_close, &[fd])?;
    // Children created next copy the fd table: leave nothing of ours in it.
    opened.finish(r)?;
    if res < 0 {
        if opened.ptys.contains_key(&c.index) {
            return Err(Failure::new(
                p.pid,
                format!("ioctl(TIOCSCTTY) on /dev/pts/{}", c.index),
                std::io::Error::from_raw_os_error(-res as i32),
            ));
        }
        tracing::warn!(pid = p.pid, index = c.index, "outside terminal is controlled by another session: the restored session runs without one");
    }
    Ok(())
}

/// Set the foreground process group of a restored controlling terminal (after every process
/// group exists).
pub fn restore_foreground(
    r: &mut Remote,
    p: &rec::Process,
    img: &rec::Checkpoint,
    opened: &mut crate::files::Opened,
) -> Result<(), Failure> {
    let Some(c) = p.ctty.as_ref().filter(|c| c.fg_pgid > 0) else {
        return Ok(());
    };
    let Some(ours) = terminal_fd(img, opened, c.index) else {
        return Ok(());
    };
    let fd = crate::memory::FdSource::install(opened, r, ours)?;
    let a = r.put(0, &c.fg_pgid.to_le_bytes())?;
    let res = r.call_raw(
        &format!("ioctl(TIOCSPGRP, {})", c.fg_pgid),
        libc::SYS_ioctl,
        &[fd, libc::TIOCSPGRP, a],
    )?;
    r.call("close", libc::SYS_close, &[fd])?;
    opened.finish(r)?;
    if res < 0 && opened.ptys.contains_key(&c.index) {
        return Err(Failure::new(
            p.pid,
            format!("ioctl(TIOCSPGRP, {})", c.fg_pgid),
            std::io::Error::from_raw_os_error(-res as i32),
        ));
    }
    Ok(())
}

/// An fd of ours for a slave whose master is outside the tree (shell-job rule).
pub fn external_slave(index: u32, inherit: &HashMap<String, RawFd>) -> Result<OwnedFd, Failure> {
    let key = format!("tty:[{index}]");
    let fd = match inherit.get(&key) {
        Some(&fd) => fd,
        None => {
            // SAFETY-free check: isatty through TCGETS2 on our stdin.
            if sys::tcgets2(0).is_ok() {
                0
            } else {
                return Err(Failure::msg(
                    0,
                    format!("the tree used terminal /dev/pts/{index} outside of it: restore from a terminal or pass --inherit-fd {key}=FD"),
                ));
            }
        }
    };
    let dup = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3)
        .ctx(0, || format!("{key}: duplicating fd {fd}"))?;
    Ok(sys::owned_fd(dup as RawFd))
}

/// The master side of a pseudo-terminal pair (`/dev/ptmx`).
pub(crate) struct PtyMasterKind;

impl ObjectKind for PtyMasterKind {
    fn name(&self) -> &'static str {
        "pty master"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::PtyMaster]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.char_major_minor() == Some((5, 2))
    }

    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        let index: u32 = p
            .info
            .extra_value("tty-index")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                Failure::msg(p.pid, format!("fd {}: pty master without tty-index", p.fd))
            })?;
        let master = t.borrow(p.pid, p.fd)?;
        fo.kind = FileKind::PtyMaster as i32;
        fo.state = Some(rec::file_object::State::Pty(dump_master(
            p.pid, p.fd, &master, index,
        )?));
        Ok(Vec::new())
    }

    /// A slave whose master is not in the tree is marked external (its terminal is outside).
    fn dump_finish(&self, t: &mut FileTable) -> Result<(), CheckpointError> {
        let masters: std::collections::HashSet<u32> = t.pty_masters().into_iter().collect();
        for f in &mut t.files {
            if f.kind == FileKind::PtySlave as i32 {
                if let Some(p) = f.pty_mut() {
                    p.external = !masters.contains(&p.index);
                }
            }
        }
        Ok(())
    }

    fn create(&self, o: &mut Opened, cx: &mut RestoreCtx<'_>) -> Result<(), Failure> {
        o.ptys = create_pairs(cx.img)?;
        Ok(())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        o: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let idx = f.pty().map(|p| p.index).unwrap_or(u32::MAX);
        let what = || format!("open file description #{} ({})", f.id, f.path);
        let pair = o
            .ptys
            .get(&idx)
            .ok_or_else(|| Failure::msg(0, format!("{}: pty {idx} was not recreated", what())))?;
        pair.master.try_clone().ctx(0, what)
    }

    /// Pairs that were locked are locked again once every slave description is open.
    fn finish(&self, o: &mut Opened, cx: &mut RestoreCtx<'_>) -> Result<(), Failure> {
        finish_pairs(cx.img, &o.ptys)
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        match f.pty() {
            Some(p) => format!(
                "pty master /dev/pts/{} ({} bytes of input, {} of output queued{})",
                p.index,
                p.input.len(),
                p.output.len(),
                if p.packet_mode { ", packet mode" } else { "" }
            ),
            None => "pty master".into(),
        }
    }
}

/// The slave side (`/dev/pts/N`): of a pair in the tree, or of a terminal outside it.
pub(crate) struct PtySlaveKind;

impl ObjectKind for PtySlaveKind {
    fn name(&self) -> &'static str {
        "pty slave"
    }

    fn kinds(&self) -> &'static [FileKind] {
        &[FileKind::PtySlave]
    }

    fn recognise(&self, _: &FileTable, p: &Probe) -> bool {
        p.char_major_minor()
            .is_some_and(|(major, _)| is_pts_major(major))
    }

    fn dump(
        &self,
        t: &mut FileTable,
        p: &Probe,
        fo: &mut rec::FileObject,
        _: &mut DumpCtx<'_>,
    ) -> Result<InFlight, CheckpointError> {
        fo.kind = FileKind::PtySlave as i32;
        let mut st = rec::PtyState {
            index: pts_index(p.md.rdev()),
            ..Default::default()
        };
        // Its settings, for a new terminal given in place of one outside the tree.
        if let Ok(own) = t.borrow(p.pid, p.fd) {
            slave_settings(&own, &mut st);
        }
        fo.state = Some(rec::file_object::State::Pty(st));
        Ok(Vec::new())
    }

    fn open(
        &self,
        f: &rec::FileObject,
        o: &mut Opened,
        _: &mut RestoreCtx<'_>,
    ) -> Result<OwnedFd, Failure> {
        let what = || format!("open file description #{} ({})", f.id, f.path);
        let st = f
            .pty()
            .ok_or_else(|| Failure::msg(0, format!("{}: pty state missing", what())))?;
        if st.external {
            return external_slave(st.index, &o.inherit);
        }
        Ok(crate::files::open_with(
            &format!("/dev/pts/{}", st.index),
            f.flags | libc::O_NOCTTY as u32,
        )
        .ctx(0, what)?
        .into())
    }

    fn describe(&self, _: &rec::Checkpoint, f: &rec::FileObject) -> String {
        match f.pty() {
            Some(p) => format!(
                "pty slave /dev/pts/{}{}",
                p.index,
                if p.external {
                    " (terminal outside the tree)"
                } else {
                    ""
                }
            ),
            None => "pty slave".into(),
        }
    }
}

/// A new pseudo-terminal given to the tree in place of a terminal outside it
/// (`stasis restore --new-tty`): the slave goes to the tree as `tty:[INDEX]`, the master to
/// the caller.
pub struct NewTty {
    /// The outside terminal it replaces, `tty:[INDEX]`.
    pub key: String,
    /// The new slave's path, `/dev/pts/M`.
    pub path: String,
    /// The new pair's master.
    pub master: OwnedFd,
    /// The new pair's slave (ours, `O_NOCTTY`), handed to the tree.
    pub slave: OwnedFd,
}

/// A new pty pair for every terminal outside the tree that the image holds (its slaves are
/// marked `external`), in index order.
pub fn new_terminals(img: &rec::Checkpoint) -> Result<Vec<NewTty>, Failure> {
    let mut indexes: Vec<u32> = img
        .files
        .iter()
        .filter(|f| f.kind == rec::FileKind::PtySlave as i32)
        .filter_map(|f| f.pty().filter(|p| p.external).map(|p| p.index))
        .collect();
    indexes.sort_unstable();
    indexes.dedup();
    let mut out = Vec::new();
    for index in indexes {
        let master: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open("/dev/ptmx")
            .ctx(0, || {
                format!("tty:[{index}]: opening /dev/ptmx for a new terminal")
            })?
            .into();
        let m = master.as_raw_fd();
        sys::ioctl_set_int(m, TIOCSPTLCK, 0).ctx(0, || "new terminal: unlock".into())?;
        let n = sys::ioctl_get_int(m, TIOCGPTN).ctx(0, || "new terminal: TIOCGPTN".into())?;
        let path = format!("/dev/pts/{n}");
        let slave: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path)
            .ctx(0, || format!("new terminal: opening {path}"))?
            .into();
        // The settings the outside terminal had (raw mode, window size…).
        let saved = img
            .files
            .iter()
            .filter(|f| f.kind == rec::FileKind::PtySlave as i32)
            .filter_map(|f| f.pty())
            .find(|p| p.index == index && !p.termios.is_empty());
        if let Some(p) = saved {
            sys::tcsets2(slave.as_raw_fd(), &p.termios).ctx(0, || {
                format!("new terminal {path}: termios of tty:[{index}]")
            })?;
            if p.winsize.len() == 4 {
                let w = [
                    p.winsize[0] as u16,
                    p.winsize[1] as u16,
                    p.winsize[2] as u16,
                    p.winsize[3] as u16,
                ];
                sys::set_winsize(m, w).ctx(0, || format!("new terminal {path}: window size"))?;
            }
        }
        out.push(NewTty {
            key: format!("tty:[{index}]"),
            path,
            master,
            slave,
        });
    }
    Ok(out)
}
