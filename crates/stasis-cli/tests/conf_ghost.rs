//! Conformance (issue 13, item 3, second half): files deleted while open ("ghost" files,
//! sparse, with owner, mode and times), a removed FIFO, a removed cwd or root, inode flags
//! (chattr) of open files. Each workload checks its own state after every round trip.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;

conformance_tests!(ghost, "ghost", &[]);
conformance_tests!(deleted_dirs, "deleted_dirs", &[]);
conformance_tests!(chattr, "chattr", &[]);

/// Inode flags changed while the tree is down (`chattr -a -i -A -d`) are set back by the
/// restore: the workload finds the flags it read at setup.
#[test]
fn chattr_set_back_after_change() {
    let _g = common::serial();
    let mut w = common::Workload::start("chattr", &[]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let img = common::image_dir("chattr");
    let dir = img.path().join("img");
    common::checkpoint_kill(&w, &dir);
    for f in ["app", "imm", "imm_rw", "noat", "sub"] {
        let p = w.ctl_path().join(f);
        let st = Command::new("chattr")
            .args(["-a", "-i", "-A", "-d"])
            .arg(&p)
            .status()
            .expect("run chattr");
        assert!(st.success(), "chattr {}", p.display());
    }
    let (pid, _) = common::restore(&dir);
    w.set_pid(pid);
    std::thread::sleep(std::time::Duration::from_millis(200));
    if let Err(e) = w.verify() {
        panic!("chattr [flags cleared while down]: verification failed:\n{e}");
    }
}
conformance_tests!(unix_mode, "unix_mode", &[]);
conformance_tests!(procfiles, "procfiles", &[]);
conformance_tests!(inotify_deleted, "inotify_deleted", &[]);
conformance_tests!(fanotify, "fanotify", &[]);

/// A fanotify mark on a file that is gone (deleted, held only by a queued event) is the one
/// refusal the issue accepts for fanotify: the checkpoint refuses naming the group's fd and
/// the object, leaves no image, and the tree keeps running (its group still works).
#[test]
fn fanotify_mark_on_gone_object_refused() {
    let _g = common::serial();
    let w = common::Workload::start("fanotify", &["gone"]);
    let fd: i32 = std::fs::read_to_string(w.ctl_path().join("fd"))
        .expect("fd file")
        .trim()
        .parse()
        .expect("fd number");
    let img = common::image_dir("fanotify-gone");
    let out = common::checkpoint(w.pid, &img.path().join("img"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "expected refusal: {stderr}");
    for needle in [
        format!("pid {}", w.pid),
        format!("fd {fd} (fanotify)"),
        "fan_gone (deleted)".to_string(),
        "objects that are gone".to_string(),
    ] {
        assert!(
            stderr.contains(&needle),
            "message lacks {needle:?}: {stderr}"
        );
    }
    assert!(!img.path().join("img/manifest.img").exists());
    w.verify()
        .expect("workload must keep running correctly after the refused checkpoint");
}
conformance_tests!(ghost_mapped, "ghost_mapped", &[]);

/// A file under /proc of a process outside the tree (`/proc/1/comm`) is refused: at restore
/// that pid would be some other process. The message names the fd and the process; the tree
/// keeps running. (Not as a partition: there pid 1 is the tree's own root.)
#[test]
fn proc_file_of_outside_process_refused() {
    let _g = common::serial();
    let w = common::Workload::start("procfiles", &["outside"]);
    let fd: i32 = std::fs::read_to_string(w.ctl_path().join("fd"))
        .expect("fd file")
        .trim()
        .parse()
        .expect("fd number");
    let img = common::image_dir("procfiles-outside");
    let out = common::checkpoint(w.pid, &img.path().join("img"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "expected refusal: {stderr}");
    for needle in [
        format!("pid {}", w.pid),
        format!("fd {fd} (/proc/1/comm)"),
        "process 1, which is not in the tree".to_string(),
    ] {
        assert!(
            stderr.contains(&needle),
            "message lacks {needle:?}: {stderr}"
        );
    }
    assert!(!img.path().join("img/manifest.img").exists());
    w.verify()
        .expect("workload must keep running correctly after the refused checkpoint");
}
