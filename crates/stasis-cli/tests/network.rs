//! TCP and UDP across checkpoint and restore.
//!
//! `tcp_client` streams numbered lines to an echo server that runs in this test process —
//! outside the checkpointed tree — and checks every echo. Its connection is saved through
//! TCP_REPAIR behind a network lock (nftables) and restored with its sequence numbers, windows
//! and queued bytes: the server notices nothing, and no byte is lost or repeated.
#![cfg(target_os = "linux")]

mod common;

use common::{checkpoint, image_dir, roundtrip, serial, Mode, Workload};
use std::io::{Read, Write};
use std::net::TcpListener;

/// An echo server on 127.0.0.1 (a thread per connection), for the life of the test binary.
fn echo_server() -> String {
    baseline();
    static ADDR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ADDR.get_or_init(|| {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
        let addr = l.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if c.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    })
    .clone()
}

fn lock_tables() -> std::collections::BTreeSet<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .filter(|t| t.starts_with("stasis_"))
        .collect()
}

/// No lock table other than those that existed before this test binary's first check (a failed
/// restore keeps its lock on purpose, so an earlier failure must not fail the next test).
static BEFORE: std::sync::OnceLock<std::collections::BTreeSet<String>> = std::sync::OnceLock::new();

/// Note the lock tables that exist before a test touches anything.
fn baseline() {
    BEFORE.get_or_init(lock_tables);
}

fn no_lock_left() {
    let before = BEFORE.get_or_init(lock_tables);
    let now = lock_tables();
    let new: Vec<_> = now.difference(before).collect();
    assert!(
        new.is_empty(),
        "a network lock table was left behind: {new:?}"
    );
}

#[test]
fn tcp_client_to_outside_server_kill_restore() {
    let _g = serial();
    let addr = echo_server();
    roundtrip("tcp_client", &[&addr], Mode::Kill);
    no_lock_left();
}

/// With --leave-running the connection leaves repair mode and the lock goes away at once: the
/// client and the server carry on. (Restoring that image after the original went on talking is
/// not meaningful for a connection to the outside — its sequence numbers moved on — so unlike
/// the other workloads this one is not restored from a leave-running image.)
#[test]
fn tcp_client_to_outside_server_leave_running() {
    let _g = serial();
    let addr = echo_server();
    let w = Workload::start("tcp_client", &[&addr]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    for _ in 0..3 {
        let img = image_dir("tcp-leave");
        let out = checkpoint(w.pid, &img.path().join("img"), &["--leave-running"]);
        assert!(
            out.status.success(),
            "checkpoint failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        no_lock_left();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    w.verify()
        .expect("tcp_client must carry on after --leave-running checkpoints");
}

#[test]
fn tcp_client_to_outside_server_double() {
    let _g = serial();
    let addr = echo_server();
    roundtrip("tcp_client", &[&addr], Mode::Double);
    no_lock_left();
}

/// The network lock stays between checkpoint and restore: while the tree is down, the server's
/// packets to it are dropped (no reset), and the connection carries on after restore.
#[test]
fn tcp_lock_holds_while_the_tree_is_down() {
    let _g = serial();
    let addr = echo_server();
    let w = Workload::start("tcp_client", &[&addr]);
    let img = image_dir("tcp-lock");
    let dir = img.path().join("img");
    let out = checkpoint(w.pid, &dir, &[]);
    assert!(
        out.status.success(),
        "checkpoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !lock_tables().is_empty(),
        "no network lock while the tree is down"
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (np, _) = common::restore(&dir);
    let mut w = w;
    w.set_pid(np);
    no_lock_left();
    w.verify()
        .expect("tcp_client must pass after a 1.5 s outage");
}

/// UDP sockets (bound, connected, queued datagrams with their senders).
#[test]
fn udp_kill_restore() {
    let _g = serial();
    roundtrip("udp_sock", &[], Mode::Kill);
}

/// A TCP listener with connections waiting to be accepted is refused for now, and the tree
/// keeps running untouched.
#[test]
fn tcp_pending_connection_refused() {
    let _g = serial();
    let w = Workload::start("tcp_sock", &[]);
    let img = image_dir("tcp-refuse");
    let out = checkpoint(w.pid, &img.path().join("img"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "expected refusal: {err}");
    assert!(err.contains("waiting to be accepted"), "message: {err}");
    no_lock_left();
    w.verify()
        .expect("tcp_sock must run on after a refused checkpoint");
}

fn http_get(c: &mut std::net::TcpStream, path: &str) -> String {
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: keep-alive\r\n\r\n"
    )
    .expect("send request");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).expect("read response header");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "unexpected response: {head}"
    );
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("length"))
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).expect("read body");
    String::from_utf8_lossy(&body).into_owned()
}

/// A client connection to 127.0.0.1:`port` with a 10 s read timeout.
fn client(port: u16) -> std::net::TcpStream {
    let c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    c
}

/// Kills the server (original or restored: same pid) when the test ends, even on failure.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = stasis_sys_kill(self.0);
    }
}

/// Start a server in its own session with only stdio open (stdout and stderr to `log`), and
/// return it with a client connected to `port` once it accepts (waiting up to 10 s).
fn start_server(
    cmd: &mut std::process::Command,
    log: &std::path::Path,
    port: u16,
) -> (std::process::Child, std::net::TcpStream) {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(log).expect("server log");
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log);
    // SAFETY: setsid and close_range only, between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let start = std::time::Instant::now();
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => {
                c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .expect("timeout");
                return (child, c);
            }
            Err(_) if start.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("{cmd:?} did not come up on port {port}: {e}"),
        }
    }
}

/// Checkpoint (ending it) and restore a server started by the test; returns the restored pid.
fn checkpoint_and_restore(pid: i32, name: &str) -> i32 {
    let img = image_dir(name);
    let out = checkpoint(pid, &img.path().join("img"), &[]);
    assert!(
        out.status.success(),
        "checkpoint of {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (np, _) = common::restore(&img.path().join("img"));
    assert_eq!(np, pid);
    no_lock_left();
    np
}

/// A real program nobody here wrote: Python's http.server (HTTP/1.1, keep-alive) with a client
/// connected across checkpoint, kill and restore — the client's connection keeps working.
#[test]
fn python_http_server_keeps_its_keepalive_client() {
    let _g = serial();
    baseline();
    common::reap_comm("python3");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("hello.txt"),
        "hello from the checkpointed server\n",
    )
    .unwrap();
    let port = common::free_port();
    let mut cmd = std::process::Command::new("/usr/bin/python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "-p",
        "HTTP/1.1",
        "--directory",
    ])
    .arg(dir.path());
    let (child, mut c) = start_server(&mut cmd, &dir.path().join("server.log"), port);
    let _kill = KillOnDrop(child.id() as i32);
    assert!(http_get(&mut c, "/hello.txt").contains("hello from"));
    checkpoint_and_restore(child.id() as i32, "http-server");
    // The same keep-alive connection, then a new one.
    assert!(
        http_get(&mut c, "/hello.txt").contains("hello from"),
        "keep-alive request after restore"
    );
    assert!(http_get(&mut client(port), "/hello.txt").contains("hello from"));
    drop(child);
}

fn stasis_sys_kill(pid: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) of the restored server.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(pid, libc::SIGKILL) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn resp(c: &mut std::net::TcpStream, args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    c.write_all(req.as_bytes()).expect("send to redis");
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    // One line, plus one more for a bulk string.
    while !out.ends_with(b"\r\n") {
        c.read_exact(&mut b).expect("read from redis");
        out.push(b[0]);
    }
    if out.first() == Some(&b'$') && out != b"$-1\r\n" {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            c.read_exact(&mut b).expect("read from redis");
            line.push(b[0]);
        }
        out.extend(line);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// redis-server (Debian's package) with data and a client holding its connection across
/// checkpoint, kill and restore.
#[test]
fn redis_keeps_its_data_and_its_client() {
    let _g = serial();
    baseline();
    common::reap_comm("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let mut cmd = std::process::Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ])
    .arg(dir.path());
    let (child, mut c) = start_server(&mut cmd, &dir.path().join("redis.log"), port);
    let _kill = KillOnDrop(child.id() as i32);
    assert_eq!(resp(&mut c, &["SET", "greeting", "hello"]), "+OK\r\n");
    for i in 0..1000 {
        resp(&mut c, &["RPUSH", "list", &i.to_string()]);
    }
    checkpoint_and_restore(child.id() as i32, "redis");
    assert_eq!(
        resp(&mut c, &["GET", "greeting"]),
        "$5\r\nhello\r\n",
        "same connection, after restore"
    );
    assert_eq!(resp(&mut c, &["LLEN", "list"]), ":1000\r\n");
    assert_eq!(resp(&mut c, &["INCR", "counter"]), ":1\r\n");
    assert_eq!(resp(&mut client(port), &["INCR", "counter"]), ":2\r\n");
    drop(child);
}

/// A TCP connection with both ends in the tree (100 KiB and 10 KiB queued unread, NODELAY,
/// keepalive settings, TOS) next to its listener on the same port.
#[test]
fn tcp_connection_inside_the_tree_kill() {
    let _g = serial();
    baseline();
    roundtrip("tcp_sock", &["--established-only"], Mode::Kill);
    no_lock_left();
}

#[test]
fn tcp_connection_inside_the_tree_leave_running() {
    let _g = serial();
    baseline();
    roundtrip("tcp_sock", &["--established-only"], Mode::LeaveRunning);
    no_lock_left();
}

#[test]
fn tcp_connection_inside_the_tree_double() {
    let _g = serial();
    baseline();
    roundtrip("tcp_sock", &["--established-only"], Mode::Double);
    no_lock_left();
}

/// A half-closed TCP connection with both ends in the tree (FIN_WAIT2 ↔ CLOSE_WAIT, bytes
/// queued both ways): rebuilt established, then the FIN is sent again.
#[test]
fn tcp_half_closed_inside_the_tree_kill() {
    let _g = serial();
    baseline();
    roundtrip("tcp_sock", &["--no-pending"], Mode::Kill);
    no_lock_left();
}

#[test]
fn tcp_half_closed_inside_the_tree_leave_running() {
    let _g = serial();
    baseline();
    roundtrip("tcp_sock", &["--no-pending"], Mode::LeaveRunning);
    no_lock_left();
}

#[test]
fn tcp_half_closed_inside_the_tree_double() {
    let _g = serial();
    baseline();
    roundtrip("tcp_sock", &["--no-pending"], Mode::Double);
    no_lock_left();
}

/// A server outside the tree that sends "hello\n", shuts down its side, and keeps what each
/// connection sends until end of stream.
fn closing_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                let _ = c.write_all(b"hello\n");
                let _ = c.shutdown(std::net::Shutdown::Write);
                let mut all = Vec::new();
                let _ = c.read_to_end(&mut all);
                g.lock().unwrap().push(all);
            });
        }
    });
    (addr, got)
}

fn wait_for_bye(got: &std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let start = std::time::Instant::now();
    while !got.lock().unwrap().iter().any(|d| d == b"bye\n") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the server never got the client's bytes sent after restore: {:?}",
            got.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The peer (outside the tree) had shut down its side: restore replays its FIN (a raw segment
/// at the FIN's sequence number) so the restored socket is in CLOSE_WAIT with the unread bytes
/// before end of stream, and what it sends afterwards reaches the peer.
#[test]
fn tcp_peer_outside_closed_its_side_kill() {
    let _g = serial();
    baseline();
    let (addr, got) = closing_server();
    roundtrip("tcp_peer_closed", &[&addr], Mode::Kill);
    wait_for_bye(&got);
    no_lock_left();
}

#[test]
fn tcp_peer_outside_closed_its_side_double() {
    let _g = serial();
    baseline();
    let (addr, got) = closing_server();
    roundtrip("tcp_peer_closed", &[&addr], Mode::Double);
    wait_for_bye(&got);
    no_lock_left();
}
