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

fn no_lock_left() {
    let out = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        !t.contains("stasis_"),
        "a network lock table was left behind: {t}"
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
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    assert!(
        String::from_utf8_lossy(&tables.stdout).contains("stasis_"),
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
