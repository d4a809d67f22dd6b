//! IPC objects that outlive the tree: a POSIX message queue removed while the tree is down is
//! created again by restore, with its limits and its messages in order.
#![cfg(target_os = "linux")]

mod common;

use common::{checkpoint, image_dir, serial, Workload};
use std::ffi::CString;

#[test]
fn posix_mq_recreated_when_removed() {
    let _g = serial();
    let mut w = Workload::start("posix_mq", &[]);
    let name = std::fs::read_to_string(w.ctl_path().join("mq"))
        .expect("queue name")
        .trim()
        .to_string();
    let img = image_dir("mq");
    let dir = img.path().join("img");
    let out = checkpoint(w.pid, &dir, &[]);
    assert!(
        out.status.success(),
        "checkpoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = CString::new(name.clone()).unwrap();
    // SAFETY: mq_unlink of the test's own queue name.
    #[allow(unsafe_code)]
    let r = unsafe { libc::mq_unlink(c.as_ptr()) };
    assert_eq!(
        r,
        0,
        "mq_unlink {name}: {}",
        std::io::Error::last_os_error()
    );
    let (np, _) = common::restore(&dir);
    w.set_pid(np);
    w.verify()
        .expect("posix_mq must find its queue and messages again");
}

/// System V objects removed while the tree is down — shared memory segments, a semaphore set, a
/// message queue — are created again with the same ids, sizes, modes and content (values,
/// messages in order), and the segments attached at the same addresses.
#[test]
fn sysv_objects_recreated_when_removed() {
    let _g = serial();
    let mut w = Workload::start("sysv_ipc", &[]);
    let ids = std::fs::read_to_string(w.ctl_path().join("ipc")).expect("ipc ids");
    let shm: Vec<i32> = ids
        .lines()
        .filter(|l| l.starts_with("shm"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(shm.len(), 2, "ipc file: {ids}");
    let img = image_dir("sysv");
    let dir = img.path().join("img");
    let out = checkpoint(w.pid, &dir, &[]);
    assert!(
        out.status.success(),
        "checkpoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in &shm {
        // SAFETY: IPC_RMID of the workload's own segment (no attachments left: the tree ended).
        #[allow(unsafe_code)]
        let r = unsafe { libc::shmctl(*id, libc::IPC_RMID, std::ptr::null_mut()) };
        assert_eq!(
            r,
            0,
            "removing segment {id}: {}",
            std::io::Error::last_os_error()
        );
    }
    let (np, _) = common::restore(&dir);
    w.set_pid(np);
    w.verify().expect("sysv_ipc must find its segments again");
}
