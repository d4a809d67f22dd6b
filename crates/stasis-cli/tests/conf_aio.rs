//! Conformance, memory (issue 13, item 2): Linux AIO contexts (`io_setup` rings), empty, with
//! completed events not yet reaped, with events already reaped (head past 0, wrapped around),
//! a ring of several pages, and a child with its own context and the copies of its parent's
//! rings that fork gave it: checkpoint→kill→restore, `--leave-running`, a double round trip
//! and as a partition. A copy of a ring whose context is outside the tree is refused.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

// Context ids unchanged, headers, saved events reaped by io_getevents and from the ring
// directly, new submissions three times around every ring, io_destroy; the child's copies
// share the parent's pages and are no contexts of its own.
conformance_tests!(aio_ring, "aio_ring", &[]);

/// The tree is a child whose ring is a copy (made by fork) of its parent's context, and the
/// parent is outside the tree: refused with a message naming the pid, the ring and why; the
/// tree runs on untouched.
#[test]
fn aio_copy_outside_refused() {
    let _g = common::serial();
    let w = common::Workload::start("aio_ring", &["outside"]);
    let child: i32 = std::fs::read_to_string(w.ctl_path().join("child"))
        .expect("child file")
        .trim()
        .parse()
        .expect("child pid");
    let maps_before = std::fs::read_to_string(format!("/proc/{child}/maps")).unwrap();
    assert!(
        maps_before.contains("/[aio]"),
        "no ring in the child: {maps_before}"
    );
    let img = common::image_dir("ha-aio-outside");
    let out = common::checkpoint(child, &img.path().join("img"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "expected a refusal: {stderr}");
    for needle in [
        format!("pid {child}"),
        "AIO ring 0x".to_string(),
        "is a copy (made by fork)".to_string(),
        "not supported".to_string(),
    ] {
        assert!(
            stderr.contains(&needle),
            "message lacks {needle:?}: {stderr}"
        );
    }
    assert!(!img.path().join("img/manifest.img").exists());
    let maps_after = std::fs::read_to_string(format!("/proc/{child}/maps")).unwrap();
    assert_eq!(
        maps_before, maps_after,
        "the refused checkpoint changed the tree"
    );
    w.verify()
        .expect("the workload runs on correctly after the refused checkpoint");
}

/// A ring cannot have the same size on a machine with many more possible CPUs (64 here, through
/// `STASIS_AIO_POSSIBLE_CPUS`: with them io_setup makes rings of 5 pages at least): the restore
/// fails naming the ring and why, and leaves nothing behind; a restore here then succeeds.
#[test]
fn aio_other_cpus_fails_restore() {
    let _g = common::serial();
    let mut w = common::Workload::start("aio_ring", &[]);
    let pids = w.tree_pids();
    let img = common::image_dir("ha-aio-cpus");
    let dir = img.path().join("img");
    common::checkpoint_kill(&w, &dir);
    let out = common::run_cmd(common::restore_cmd(&dir).env("STASIS_AIO_POSSIBLE_CPUS", "0-63"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restore succeeded: {stderr}");
    for needle in [
        "AIO ring 0x",
        "a ring of 1 pages (127 events) cannot be made on this machine",
        "with 64 possible CPUs io_setup gives at least 5 pages",
    ] {
        assert!(
            stderr.contains(needle),
            "message lacks {needle:?}: {stderr}"
        );
    }
    assert!(out.stdout.is_empty(), "a failed restore printed a pid");
    let left = common::wait_gone(&pids, Duration::from_secs(5));
    assert!(left.is_empty(), "tasks of the image left behind: {left:?}");
    let (pid, _) = common::restore(&dir);
    w.set_pid(pid);
    w.verify()
        .expect("aio_ring restored after the failed restore");
}
