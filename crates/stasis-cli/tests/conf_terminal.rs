//! Conformance: terminals (issue 13, item 5) — `/dev/tty` held by the tree comes back as
//! `/dev/tty`; a tree whose terminal is outside it gets a new pseudo-terminal on request.
#![cfg(target_os = "linux")]

mod common;

conformance_tests!(devtty, "devtty", &[]);

/// A session leader whose controlling terminal is a pty the test holds (outside the tree) is
/// checkpointed and restored with `--new-tty SOCKET`: the tree gets a new terminal (its
/// controlling terminal again, on fds 0-2, with the old one's window size), the master arrives on the socket with its path,
/// and the workload talks through it.
#[test]
#[allow(unsafe_code)]
fn outside_terminal_replaced_by_a_new_pty() {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let _g = common::serial();
    // The terminal outside the tree.
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on a fresh descriptor we own.
    let (old_master, old_path) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0 && libc::grantpt(m) == 0 && libc::unlockpt(m) == 0);
        let mut buf = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, buf.as_mut_ptr(), buf.len()), 0);
        let p = std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_string_lossy()
            .into_owned();
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        assert_eq!(libc::ioctl(m, libc::TIOCSWINSZ, &ws), 0);
        (OwnedFd::from_raw_fd(m), p)
    };
    let ctl = tempfile::Builder::new()
        .prefix("ht-tty-")
        .tempdir()
        .unwrap();
    let ctl_path = std::fs::canonicalize(ctl.path()).unwrap();
    let slave = std::ffi::CString::new(old_path.clone()).unwrap();
    let mut cmd = std::process::Command::new(common::workload_bin("tty_outside"));
    cmd.arg(&ctl_path).current_dir(&ctl_path);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let s = libc::open(slave.as_ptr(), libc::O_RDWR);
            if s < 0 || libc::ioctl(s, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 0..3 {
                libc::dup2(s, fd);
            }
            libc::close(s);
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn tty_outside");
    let pid = child.id() as i32;
    let ready = ctl_path.join("ready");
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tty_outside never ready: result {:?}",
            std::fs::read_to_string(ctl_path.join("result"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let img = common::image_dir("ht-tty");
    let dir = img.path().join("img");
    let out = common::checkpoint(pid, &dir, &[]);
    assert!(
        out.status.success(),
        "checkpoint: {}",
        common::show_output(&out)
    );
    drop(child);

    let sock = ctl_path.join("masters.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (np, out) = common::restore_with(&dir, &["--new-tty", sock.to_str().unwrap()], |_| {});
    assert_eq!(np, pid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (conn, _) = listener.accept().unwrap();
    let msg = stasis_sys::net::peek_next(conn.as_raw_fd(), 256, true)
        .unwrap()
        .expect("a message with the master");
    let text = String::from_utf8_lossy(&msg.data).into_owned();
    let index = old_path.trim_start_matches("/dev/pts/");
    let new_path = text
        .strip_prefix(&format!("tty:[{index}] "))
        .unwrap_or_else(|| panic!("message {text:?}, expected tty:[{index}] /dev/pts/M"))
        .trim()
        .to_string();
    assert!(
        stderr.contains(&new_path),
        "stderr does not say where: {stderr}"
    );
    assert_ne!(new_path, old_path);
    let link = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(link.to_string_lossy(), new_path, "the tree's stdin");
    assert_eq!(msg.fds.len(), 1, "one master");
    let mut master = std::fs::File::from(msg.fds.into_iter().next().unwrap());
    drop(old_master);

    std::fs::write(ctl_path.join("verify"), "1\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let start = Instant::now();
    let mut sent = false;
    while !String::from_utf8_lossy(&seen).contains("pong:ping") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "terminal output {:?}; result {:?}",
            String::from_utf8_lossy(&seen),
            std::fs::read_to_string(ctl_path.join("result"))
        );
        let mut p = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack.
        if unsafe { libc::poll(&mut p, 1, 100) } == 1 {
            let n = master.read(&mut buf).unwrap_or(0);
            seen.extend_from_slice(&buf[..n]);
        }
        if !sent && String::from_utf8_lossy(&seen).contains("tty-ok") {
            master.write_all(b"ping\n").unwrap();
            sent = true;
        }
    }
    let start = Instant::now();
    let result = loop {
        if let Ok(r) = std::fs::read_to_string(ctl_path.join("result")) {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no result");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(result.trim(), "PASS", "{result}");
}
