//! An interactive bash in a pseudo-terminal whose master the test keeps (outside the tree):
//! checkpoint, kill, restore with `--inherit-fd tty:[N]=FD`, and the shell carries on in the
//! same terminal with its variables, history and job control.
#![cfg(target_os = "linux")]
#![allow(unsafe_code)]

mod common;

use common::{checkpoint, image_dir, reap_comm, restore_with, serial};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Pty {
    master: std::fs::File,
    index: u32,
    path: String,
}

fn open_pty() -> Pty {
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on a fresh descriptor we own.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut buf = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, buf.as_mut_ptr(), buf.len()), 0);
        let path = std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_string_lossy()
            .into_owned();
        let index = path
            .trim_start_matches("/dev/pts/")
            .parse()
            .expect("pts index");
        let fl = libc::fcntl(m, libc::F_GETFL);
        libc::fcntl(m, libc::F_SETFL, fl | libc::O_NONBLOCK);
        Pty {
            master: std::fs::File::from(OwnedFd::from_raw_fd(m)),
            index,
            path,
        }
    }
}

/// Read from the master until `needle` shows up (or panic after `secs`); returns everything
/// up to and including it, and keeps the rest for the next call. The master is non-blocking.
fn expect(m: &mut std::fs::File, needle: &str, secs: u64) -> String {
    thread_local! {
        static PENDING: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let start = Instant::now();
    loop {
        let found = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            let text = String::from_utf8_lossy(&p).into_owned();
            text.find(needle).map(|i| {
                let end = i + needle.len();
                let head = text[..end].to_string();
                let rest = text.as_bytes()[end..].to_vec();
                *p = rest;
                head
            })
        });
        if let Some(head) = found {
            return head;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let seen = PENDING.with(|p| String::from_utf8_lossy(&p.borrow()).into_owned());
            panic!("terminal output never showed {needle:?}; saw {seen:?}");
        }
        let mut buf = [0u8; 4096];
        match m.read(&mut buf) {
            Ok(k) if k > 0 => PENDING.with(|p| p.borrow_mut().extend_from_slice(&buf[..k])),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn send(m: &mut std::fs::File, line: &str) {
    m.write_all(line.as_bytes())
        .expect("write to the pty master");
}

#[test]
fn interactive_bash_in_a_pty_survives_checkpoint_and_restore() {
    let _g = serial();
    reap_comm("bash");
    let mut pty = open_pty();
    let slave_path = CString::new(pty.path.clone()).unwrap();
    let mut cmd = Command::new("/bin/bash");
    cmd.args(["--noprofile", "--norc", "-i"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TERM", "dumb")
        .env("PS1", "PROMPT> ")
        .env("HOME", "/tmp")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let s = libc::open(slave_path.as_ptr(), libc::O_RDWR);
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
    let child = cmd.spawn().expect("spawn bash");
    let pid = child.id() as i32;
    expect(&mut pty.master, "PROMPT> ", 10);
    send(&mut pty.master, "X=42; unset HISTFILE; echo set-$X\n");
    expect(&mut pty.master, "set-42", 10);
    expect(&mut pty.master, "PROMPT> ", 10);
    send(&mut pty.master, "echo second-command\n");
    expect(&mut pty.master, "PROMPT> ", 10);

    let img = image_dir("bash-pty");
    let dir = img.path().join("img");
    let out = checkpoint(pid, &dir, &[]);
    assert!(
        out.status.success(),
        "checkpoint of interactive bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The restorer gets a slave of the same terminal as fd 3 and hands it to the tree.
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags_noctty()
        .open(&pty.path)
        .expect("open slave");
    let sfd = slave.as_raw_fd();
    let key = format!("tty:[{}]={}", pty.index, 3);
    let (np, _) = restore_with(&dir, &["--inherit-fd", &key], move |c| {
        // SAFETY: dup2 only, between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(sfd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    assert_eq!(np, pid, "restored bash must have its pid back");
    drop(slave);

    send(&mut pty.master, "echo after-$X\n");
    expect(&mut pty.master, "after-42", 10);
    send(&mut pty.master, "history\n");
    let h = expect(&mut pty.master, "second-command", 10);
    assert!(h.contains("X=42"), "history lost its first command: {h:?}");
    // Job control still works: the shell owns the terminal's foreground group.
    send(
        &mut pty.master,
        "sleep 0.1 & wait; echo jobs-ok-$(ps -o tpgid= -p $$ | tr -d ' ')-$$\n",
    );
    // (the typed line is echoed with `$$` unexpanded: only the output holds the pid twice;
    // a wrong foreground group shows up in the panic message's "saw".)
    expect(&mut pty.master, &format!("jobs-ok-{pid}-{pid}"), 10);
    send(&mut pty.master, "exit\n");
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child);
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY)
    }
}

fn tmux(sock: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(sock)
        .args(args)
        .env("TERM", "xterm")
        .output()
        .expect("run tmux (apt-get install tmux)");
    assert!(
        out.status.success(),
        "tmux {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tmux server (a real program: unix listener, pty masters, an interactive bash in a pane
/// running a background counter) checkpointed, ended and restored: the session, the shell's
/// variables and the counter carry on, and tmux clients talk to the restored server.
#[test]
fn tmux_server_with_a_session_and_a_running_command() {
    let _g = serial();
    reap_comm("tmux: server");
    reap_comm("bash");
    reap_comm("sleep");
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("tmux.sock");
    let count = dir.path().join("count");
    // Whatever happens, the server goes away with the test.
    struct KillServer(std::path::PathBuf);
    impl Drop for KillServer {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .arg("-S")
                .arg(&self.0)
                .arg("kill-server")
                .status();
        }
    }
    let _kill = KillServer(sock.clone());
    tmux(
        &sock,
        &[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "80",
            "-y",
            "24",
            "bash --norc --noprofile",
        ],
    );
    let pid: i32 = tmux(&sock, &["display-message", "-p", "#{pid}"])
        .trim()
        .parse()
        .expect("server pid");
    let cmd = format!(
        "Y=kept-$((6*7)); i=0; (while sleep 0.1; do i=$((i+1)); echo $i > {}; done) &",
        count.display()
    );
    tmux(&sock, &["send-keys", "-t", "t", &cmd, "Enter"]);
    let read = || {
        std::fs::read_to_string(&count)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    wait_for("the pane's counter", || read().is_some_and(|n| n > 2));

    let img = image_dir("tmux");
    let out = checkpoint(pid, &img.path().join("img"), &[]);
    assert!(
        out.status.success(),
        "checkpoint of the tmux server failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = read().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        read().unwrap(),
        before,
        "the counter ran while the tree was down"
    );
    let (np, _) = restore_with(&img.path().join("img"), &[], |_| {});
    assert_eq!(np, pid);
    wait_for("the counter to move again", || {
        read().is_some_and(|n| n > before)
    });
    assert!(
        tmux(&sock, &["list-sessions"]).starts_with("t:"),
        "session t is gone"
    );
    tmux(&sock, &["send-keys", "-t", "t", "echo Y=$Y", "Enter"]);
    wait_for("the shell to answer in its pane", || {
        tmux(&sock, &["capture-pane", "-p", "-t", "t"]).contains("Y=kept-42")
    });
}

/// `cmd` as one `sh -c` line (every word single-quoted).
fn shell_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|w| format!("'{}'", w.to_string_lossy().replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `stasis checkpoint` and `restore` draw a spinner with the engine's phase on stderr only
/// when stderr is a terminal: with stderr a pipe (as here, and with `--json`) nothing of it is
/// written (no carriage return, no escape sequence, no phase text); under `script` (a
/// pseudo-terminal) the checkpoint's phase is drawn.
#[test]
fn checkpoint_and_restore_draw_their_phase_only_on_a_terminal() {
    let _g = serial();
    let mut child = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn sleep");
    let pid = child.id() as i32;
    let img = image_dir("spinner");
    let drawn = |what: &str, stderr: &[u8]| {
        let s = String::from_utf8_lossy(stderr);
        assert!(
            !s.contains('\r') && !s.contains('\x1b') && !s.contains("freezing the tree"),
            "{what} drew on a stderr that is not a terminal: {s:?}"
        );
    };

    // Not a terminal: nothing drawn, with and without --json.
    let a = img.path().join("a");
    let out = checkpoint(pid, &a, &["--leave-running"]);
    assert!(out.status.success(), "checkpoint: {out:?}");
    drawn("checkpoint", &out.stderr);
    let b = img.path().join("b");
    let out = checkpoint(pid, &b, &["--leave-running", "--json"]);
    assert!(out.status.success(), "checkpoint --json: {out:?}");
    drawn("checkpoint --json", &out.stderr);

    // A terminal: `script` runs the checkpoint with stdout and stderr a pseudo-terminal.
    let c = img.path().join("c");
    let line = shell_line(&common::checkpoint_cmd(pid, &c, &["--leave-running"]));
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "checkpoint under script: {text}");
    let phases = [
        "starting",
        "freezing the tree",
        "inspecting the tree",
        "collecting task state",
        "writing memory pages",
        "committing the image",
        "done",
    ];
    assert!(
        text.contains('\r')
            && phases
                .iter()
                .any(|p| text.contains(&format!("checkpoint: {p}"))),
        "no spinner with a phase drawn on a terminal: {text:?}"
    );

    // Restore (the tree is killed first), stderr a pipe: the pid on stdout, nothing drawn.
    let _ = child.kill();
    let _ = child.wait();
    let (rpid, out) = common::restore(&a);
    drawn("restore", &out.stderr);
    common::send_signal(rpid, libc::SIGKILL);
}

/// A partition's checkpoint and restore (their engine runs in another process) draw a line
/// naming the operation on a terminal (one line, cleared after: the checkpointer forks, so no
/// spinner thread), and nothing on a pipe.
#[test]
fn partition_checkpoint_and_restore_spin_only_on_a_terminal() {
    let _g = serial();
    let parts = common::partition::Parts::new("spin");
    parts
        .run("spin", &[], &["/bin/sleep", "1000"])
        .expect("run a partition");
    let img = image_dir("pspinner");
    let a = img.path().join("a");
    let out = parts.checkpoint("spin", &a, &["--leave-running"]);
    assert!(out.ok(), "checkpoint --name: {}", out.show());
    assert!(
        !out.stderr.contains('\r') && !out.stderr.contains('\x1b'),
        "checkpoint --name drew on a pipe: {:?}",
        out.stderr
    );
    let b = img.path().join("b");
    let b_arg = b.to_string_lossy().into_owned();
    let line = shell_line(&parts.cmd(&[
        "checkpoint",
        "--name",
        "spin",
        "--dir",
        &b_arg,
        "--leave-running",
    ]));
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "checkpoint under script: {text}");
    assert!(
        text.contains("checkpoint of partition spin…\r"),
        "no spinner drawn on a terminal: {text:?}"
    );
}
