//! Conformance (issue 13, item 4): unix sockets in every state and epoll registrations whose
//! fd number was closed or reused, round trips of self-verifying workloads (kill,
//! leave-running, double, partition).

mod common;

conformance_tests!(unix_states, "unix_states", &[]);
conformance_tests!(epoll_reuse, "epoll_reuse", &[]);
conformance_tests!(scm_epoll, "scm_epoll", &[]);
conformance_tests!(unix_listen_data, "unix_listen_data", &[]);
conformance_tests!(unix_listen_data_epoll, "unix_listen_data", &["epoll"]);

use common::{checkpoint_cmd, describe_output, image_dir, run_cmd, serial, Workload};
use std::thread;
use std::time::Duration;

const SETTLE: Duration = Duration::from_millis(200);

/// A checkpoint that fails after the pending connections were read (failpoint "tasks", right
/// after they are put back) leaves them as they were: the workload verifies unchanged.
#[test]
fn failed_checkpoint_leaves_pending_connections() {
    let _g = serial();
    let w = Workload::start("unix_listen_data", &[]);
    thread::sleep(SETTLE);
    let img = image_dir("unix_listen_data");
    let journal = tempfile::Builder::new()
        .prefix("hu-journal-")
        .tempdir()
        .expect("journal dir");
    let mut c = checkpoint_cmd(w.pid, &img.path().join("img"), &[]);
    c.env("STASIS_JOURNAL_DIR", journal.path())
        .env("STASIS_FAILPOINTS", "tasks");
    let out = run_cmd(&mut c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("failpoint tasks"),
        "the checkpoint was expected to fail at failpoint tasks\n{}",
        describe_output(&out)
    );
    if let Err(e) = w.verify() {
        panic!("after the failed checkpoint, the pending connections changed:\n{e}");
    }
}

/// A pending connection holding data whose client is also in flight in a unix socket is
/// refused (the copy in flight could not be replaced), naming the listener and why, before
/// anything is accepted: the tree runs on unchanged.
#[test]
fn refuses_pending_client_in_flight() {
    let _g = serial();
    let w = Workload::start("unix_listen_data", &["inflight"]);
    thread::sleep(SETTLE);
    let img = image_dir("unix_listen_data");
    let out = common::checkpoint(w.pid, &img.path().join("img"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("socket:[")
            && err.contains("pending connection holding data")
            && err.contains("in flight"),
        "expected a refusal naming the listener and the client in flight\n{}",
        describe_output(&out)
    );
    if let Err(e) = w.verify() {
        panic!("after the refused checkpoint, the workload changed:\n{e}");
    }
}
