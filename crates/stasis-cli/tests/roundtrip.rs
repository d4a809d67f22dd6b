//! Checkpoint/restore round trips of the self-verifying workloads in
//! `workloads/` (see `tests/common/mod.rs` for the harness and modes).
//!
//! Every test holds the global `SERIAL` lock: they all juggle pids.
#![cfg(target_os = "linux")]

mod common;

use common::{roundtrip, serial, standalone, Mode, WORKLOADS};

/// Each workload passes its own verification when nothing is checkpointed.
#[test]
fn workloads_pass_standalone() {
    let _g = serial();
    let mut failures = Vec::new();
    for (name, args) in WORKLOADS {
        if let Err(e) = standalone(name, args) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "standalone failures:\n{}",
        failures.join("\n\n")
    );
}

/// counter with --print (stdout redirected into out.log) also passes.
#[test]
fn counter_print_standalone() {
    let _g = serial();
    standalone("counter", &["--print"]).unwrap();
}

/// Harness self-test: a tree whose processes are all SIGKILLed (as a
/// checkpoint that ends the tree does) disappears completely, including
/// the zombies that get reparented to the test process (subreaper).
#[test]
fn harness_reaps_killed_tree() {
    let _g = serial();
    let w = common::Workload::start("multiproc", &[]);
    let mut pids = w.tree_pids();
    assert_eq!(pids.len(), 5, "multiproc tree: {pids:?}");
    // leaves first, so their zombies are reparented when their parents die
    pids.reverse();
    for &p in &pids {
        // SAFETY: kill(2) of a specific workload pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(p, libc::SIGKILL)
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left = common::wait_gone(&pids, common::GONE_TIMEOUT);
    assert!(left.is_empty(), "pids not reaped: {left:?}");
}

/// Harness self-test: when only the root dies, the orphaned children are
/// reparented to the test process, notice it and exit; they are reaped.
#[test]
fn harness_reaps_orphans() {
    let _g = serial();
    let w = common::Workload::start("multiproc", &[]);
    let pids = w.tree_pids();
    // SAFETY: kill(2) of the workload root.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(w.pid, libc::SIGKILL)
    };
    let left = common::wait_gone(&pids, common::GONE_TIMEOUT);
    assert!(left.is_empty(), "pids not reaped: {left:?}");
}

/// `roundtrip_tests!(workload, [args], kill_test, leave_running_test, double_test);`
macro_rules! roundtrip_tests {
    ($wl:literal, $args:expr, $kill:ident, $leave:ident, $double:ident) => {
        #[test]
        fn $kill() {
            let _g = serial();
            roundtrip($wl, $args, Mode::Kill);
        }
        #[test]
        fn $leave() {
            let _g = serial();
            roundtrip($wl, $args, Mode::LeaveRunning);
        }
        #[test]
        fn $double() {
            let _g = serial();
            roundtrip($wl, $args, Mode::Double);
        }
    };
}

roundtrip_tests!(
    "counter",
    &[],
    counter_kill,
    counter_leave_running,
    counter_double
);
roundtrip_tests!(
    "mem_anon",
    &[],
    mem_anon_kill,
    mem_anon_leave_running,
    mem_anon_double
);
roundtrip_tests!(
    "mem_shared",
    &[],
    mem_shared_kill,
    mem_shared_leave_running,
    mem_shared_double
);
roundtrip_tests!(
    "mem_file",
    &[],
    mem_file_kill,
    mem_file_leave_running,
    mem_file_double
);
roundtrip_tests!("memfd", &[], memfd_kill, memfd_leave_running, memfd_double);
roundtrip_tests!(
    "threads",
    &[],
    threads_kill,
    threads_leave_running,
    threads_double
);
roundtrip_tests!(
    "multiproc",
    &[],
    multiproc_kill,
    multiproc_leave_running,
    multiproc_double
);
roundtrip_tests!(
    "signals",
    &[],
    signals_kill,
    signals_leave_running,
    signals_double
);
roundtrip_tests!(
    "timers",
    &[],
    timers_kill,
    timers_leave_running,
    timers_double
);
roundtrip_tests!("files", &[], files_kill, files_leave_running, files_double);
roundtrip_tests!("creds", &[], creds_kill, creds_leave_running, creds_double);
roundtrip_tests!(
    "restart",
    &[],
    restart_kill,
    restart_leave_running,
    restart_double
);
roundtrip_tests!(
    "mt_load",
    &[],
    mt_load_kill,
    mt_load_leave_running,
    mt_load_double
);
roundtrip_tests!(
    "unix_sock",
    &[],
    unix_sock_kill,
    unix_sock_leave_running,
    unix_sock_double
);
roundtrip_tests!(
    "events",
    &[],
    events_kill,
    events_leave_running,
    events_double
);
roundtrip_tests!("pty", &[], pty_kill, pty_leave_running, pty_double);
roundtrip_tests!(
    "unix_scm",
    &[],
    unix_scm_kill,
    unix_scm_leave_running,
    unix_scm_double
);
roundtrip_tests!(
    "udp_sock",
    &[],
    udp_sock_kill,
    udp_sock_leave_running,
    udp_sock_double
);
roundtrip_tests!(
    "posix_mq",
    &[],
    posix_mq_kill,
    posix_mq_leave_running,
    posix_mq_double
);
roundtrip_tests!(
    "sysv_ipc",
    &[],
    sysv_ipc_kill,
    sysv_ipc_leave_running,
    sysv_ipc_double
);

/// `--leave-running` copies pages into memory while the tree is frozen and writes them after it
/// runs again; `--copy-limit 0` writes them while it is frozen instead. Both give an image the
/// tree comes back from (the copy path is what every other leave-running test takes).
#[test]
fn leave_running_written_while_frozen() {
    let _g = serial();
    for name in ["mem_anon", "threads"] {
        let mut w = common::Workload::start(name, &[]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let img = common::image_dir(name);
        let dir = img.path().join("img");
        let out = common::checkpoint(w.pid, &dir, &["--leave-running", "--copy-limit", "0"]);
        assert!(out.status.success(), "{}", common::show_output(&out));
        assert!(common::pid_alive(w.pid), "{name}: left running");
        w.kill_tree();
        w.reset_verify();
        let (pid, _) = common::restore(&dir);
        w.set_pid(pid);
        std::thread::sleep(std::time::Duration::from_millis(300));
        if let Err(e) = w.verify() {
            panic!("{name} [--copy-limit 0]: verification after restore failed:\n{e}");
        }
    }
}
