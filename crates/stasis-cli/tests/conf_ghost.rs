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
