//! Conformance, processes (issue 13, item 1; seccomp is elsewhere): zombies, processes stopped
//! by job control, pending signals with their siginfo, pidfds, and per-process kernel state
//! (loginuid, THP disable, membarrier registrations, timer slack), each workload through
//! checkpoint→kill→restore, `--leave-running`, a double round trip and as a partition; a pidfd
//! of a process outside the tree is refused.
#![cfg(target_os = "linux")]

mod common;

conformance_tests!(zombie, "zombie", &[]);
conformance_tests!(stopped, "stopped", &[]);
conformance_tests!(sig_pending, "sig_pending", &[]);
conformance_tests!(proc_misc, "proc_misc", &[]);
conformance_tests!(pidfd, "pidfd", &[]);

/// A pidfd of a process outside the tree (the workload's parent, the test) is refused with a
/// message naming the pid, the fd and why; the tree runs on untouched.
#[test]
fn pidfd_outside_refused() {
    let _g = common::serial();
    let w = common::Workload::start("pidfd", &["outside"]);
    let fd: i32 = std::fs::read_to_string(w.ctl_path().join("fd"))
        .expect("fd file")
        .trim()
        .parse()
        .expect("fd number");
    let maps_before = std::fs::read_to_string(format!("/proc/{}/maps", w.pid)).unwrap();
    let img = common::image_dir("hp-pidfd-outside");
    let out = common::checkpoint(w.pid, &img.path().join("img"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "expected a refusal: {stderr}");
    for needle in [
        format!("pid {}", w.pid),
        format!("fd {fd}"),
        "is a pidfd of pid".to_string(),
        "not in the tree".to_string(),
    ] {
        assert!(
            stderr.contains(&needle),
            "message lacks {needle:?}: {stderr}"
        );
    }
    assert!(!img.path().join("img/manifest.img").exists());
    let maps_after = std::fs::read_to_string(format!("/proc/{}/maps", w.pid)).unwrap();
    assert_eq!(
        maps_before, maps_after,
        "the refused checkpoint changed the tree"
    );
    w.verify()
        .expect("the workload runs on correctly after the refused checkpoint");
}
