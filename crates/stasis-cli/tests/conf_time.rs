//! Conformance: timers and time (issue 13, item 7) — periodic timerfds whose expiry was not
//! read yet, on every clock and with every settime flag.
#![cfg(target_os = "linux")]

mod common;

/// The workload passes on its own (its checks are not too tight for an unloaded run).
#[test]
fn timerfd_periodic_standalone() {
    let _g = common::serial();
    if let Err(e) = common::standalone("timerfd_periodic", &[]) {
        panic!("{e}");
    }
}

conformance_tests!(timerfd_periodic, "timerfd_periodic", &[]);
