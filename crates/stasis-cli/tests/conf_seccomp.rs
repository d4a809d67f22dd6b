//! Seccomp (issue 13, item 1): filters stacked, shared between threads (TSYNC) and inherited
//! across fork, with and without no_new_privs; strict mode per thread and per process. Each
//! workload checks after restore that its filters still answer as before (errno values, a
//! KILL_PROCESS action), the /proc counts, and that the chains are shared as they were.
#![cfg(target_os = "linux")]

mod common;

// no_new_privs set, as container runtimes usually do.
conformance_tests!(filter, "seccomp_filter", &[]);
// no_new_privs unset and every capability dropped after the filters went in: restore must
// install them before the credentials.
conformance_tests!(filter_nonnp, "seccomp_filter", &["nonnp"]);
// The same as an unprivileged user (uid/gid 65534 in every thread), as a container's.
conformance_tests!(filter_nonroot, "seccomp_filter", &["nonroot"]);
// Strict mode in a child process and in one thread of the root.
conformance_tests!(strict, "seccomp_strict", &[]);

use common::{checkpoint, checkpoint_cmd, image_dir, run_cmd, serial, tree_pids, Workload};

/// `Seccomp` and `Seccomp_filters` of every thread of every process of the tree.
fn seccomp_state(root: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for pid in tree_pids(root) {
        for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let tid: i32 = e.unwrap().file_name().to_str().unwrap().parse().unwrap();
            let st = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
            let lines: Vec<&str> = st
                .lines()
                .filter(|l| l.starts_with("Seccomp") || l.starts_with("TracerPid"))
                .collect();
            out.push((tid, lines.join(" ")));
        }
    }
    out.sort();
    out
}

/// A checkpoint that fails after it injected calls into the confined tasks (with seccomp
/// suspended) leaves every filter and strict mode as it was: same modes and counts, no tracer,
/// and the workloads' own checks (errno values, SIGSYS and SIGKILL actions, TSYNC sharing)
/// pass.
#[test]
fn failed_checkpoint_leaves_seccomp_as_it_was() {
    let _g = serial();
    for (wl, args) in [
        ("seccomp_filter", &[][..]),
        ("seccomp_filter", &["nonnp"][..]),
        ("seccomp_filter", &["nonroot"][..]),
        ("seccomp_strict", &[][..]),
    ] {
        let w = Workload::start(wl, args);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let before = seccomp_state(w.pid);
        assert!(before.iter().any(|(_, s)| !s.contains("Seccomp:\t0")));
        let img = image_dir("hs-seccomp-fail");
        let mut cmd = checkpoint_cmd(w.pid, &img.path().join("img"), &[]);
        cmd.env("STASIS_FAILPOINTS", "memory");
        let out = run_cmd(&mut cmd);
        assert!(
            !out.status.success(),
            "{wl}: the failpoint did not fail the checkpoint"
        );
        assert_eq!(seccomp_state(w.pid), before, "{wl}: seccomp state changed");
        w.verify()
            .unwrap_or_else(|e| panic!("{wl} after a failed checkpoint: {e}"));
    }
}

/// A filter that hands calls to a supervisor (SECCOMP_RET_USER_NOTIF) is refused, naming the
/// process, the thread and why; the tree keeps running as before.
#[test]
fn refuses_user_notif_filter() {
    let _g = serial();
    let w = Workload::start("seccomp_filter", &["notif"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = seccomp_state(w.pid);
    let img = image_dir("hs-seccomp-notif");
    let out = checkpoint(w.pid, &img.path().join("img"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "expected refusal: {stderr}");
    for needle in [
        format!("pid {}", w.pid),
        format!("thread {}", w.pid),
        "SECCOMP_RET_USER_NOTIF".to_string(),
        "ENOSYS".to_string(),
    ] {
        assert!(
            stderr.contains(&needle),
            "message lacks {needle:?}: {stderr}"
        );
    }
    assert_eq!(seccomp_state(w.pid), before);
    w.verify()
        .expect("workload must keep running correctly after a refused checkpoint");
}
