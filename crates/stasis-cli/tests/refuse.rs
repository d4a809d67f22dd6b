//! Objects the engine does not support yet make `stasis checkpoint` refuse (exit code 3) with
//! a message naming the pid, the fd and its kind — and the tree keeps running untouched.
//! Some are refusals issue 13 allows for good (netlink sockets with messages waiting, packet
//! sockets with an mmap ring).
#![cfg(target_os = "linux")]

mod common;

use common::{checkpoint, image_dir, serial, Workload};

fn refuses(kind: &str, words: &[&str]) {
    refuses_in("unsupported", kind, words)
}

fn refuses_in(workload: &str, kind: &str, words: &[&str]) {
    let _g = serial();
    let args: Vec<&str> = if kind.is_empty() { vec![] } else { vec![kind] };
    let w = Workload::start(workload, &args);
    // The fd number, when the workload says which one it is.
    let fd: Option<i32> = std::fs::read_to_string(w.ctl_path().join("fd"))
        .ok()
        .map(|s| s.trim().parse().expect("fd number"));
    let maps_before = std::fs::read_to_string(format!("/proc/{}/maps", w.pid)).unwrap();
    let img = image_dir("refuse");
    let out = checkpoint(w.pid, &img.path().join("img"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "expected refusal (exit 3), got {:?}: {stderr}",
        out.status
    );
    let pid = format!("pid {}", w.pid);
    let fdw = fd.map(|fd| format!("fd {fd}")).unwrap_or_default();
    for needle in [pid.as_str(), fdw.as_str()].iter().chain(words) {
        assert!(
            stderr.contains(needle),
            "message lacks {needle:?}: {stderr}"
        );
    }
    assert!(
        !img.path().join("img/manifest.img").exists(),
        "a refused checkpoint left a manifest"
    );
    let maps_after = std::fs::read_to_string(format!("/proc/{}/maps", w.pid)).unwrap();
    assert_eq!(
        maps_before, maps_after,
        "the refused checkpoint changed the address space"
    );
    w.verify()
        .expect("workload must keep running correctly after a refused checkpoint");
}

#[test]
fn refuses_socket_of_other_family() {
    refuses("socket", &["family not supported"]);
}

/// Allowed refusal (issue 13): a netlink socket with messages waiting to be read.
#[test]
fn refuses_netlink_socket_with_pending_messages() {
    refuses_in(
        "netlink_sock",
        "--pending",
        &["netlink socket", "waiting to be read", "cannot be read"],
    );
}

/// Allowed refusal (issue 13): a packet socket with an mmap ring.
#[test]
fn refuses_packet_socket_with_mmap_ring() {
    refuses_in(
        "packet_sock",
        "--ring",
        &["packet socket", "mmap ring", "refused"],
    );
}

/// Bytes held under UDP_CORK sit in no queue that can be read without sending them.
#[test]
fn refuses_udp_socket_with_corked_data() {
    refuses("udpcork", &["UDP_CORK", "corked data"]);
}

#[test]
fn refuses_userfaultfd() {
    refuses("userfaultfd", &["userfaultfd", "not supported"]);
}

#[test]
fn refuses_terminal() {
    refuses("tty", &["terminal other than a pseudo-terminal"]);
}
