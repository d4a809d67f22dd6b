//! Conformance: timers and time (issue 13, item 7) — periodic timerfds whose expiry was not
//! read yet, on every clock and with every settime flag; a partition's time namespace, whose
//! clocks go on from where they were when it is restored (on another boot too).
#![cfg(target_os = "linux")]

mod common;

use common::partition::{exec, image, pid_line, Ctl, Parts, SETTLE, T_RUN};
use std::thread;
use std::time::Duration;

/// The workload passes on its own (its checks are not too tight for an unloaded run).
#[test]
fn timerfd_periodic_standalone() {
    let _g = common::serial();
    if let Err(e) = common::standalone("timerfd_periodic", &[]) {
        panic!("{e}");
    }
}

conformance_tests!(timerfd_periodic, "timerfd_periodic", &[]);
conformance_tests!(timens_clock, "timens_clock", &[]);

/// Another boot, simulated: a partition started with its clocks 10 days ahead of this host's
/// (`STASIS_PARTITION_CLOCK_SHIFT`, as if it came from a host that had been up longer) is
/// checkpointed, left down 6 s, restored (and a second time): CLOCK_MONOTONIC and
/// CLOCK_BOOTTIME never go backward, never jump by more than 3 s (the downtime is not seen:
/// the clocks go on from where they were frozen), and an absolute monotonic timerfd stays on
/// its grid on the partition's clock.
#[test]
fn partition_clocks_continue_on_another_boot() {
    let _g = common::serial();
    let parts = Parts::new("ht-timens");
    let name = "ht-timens";
    let ctl = Ctl::new("ht-timens");
    let bin = common::workload_bin("timens_clock");
    let shift = "864000";
    let res = (|| -> Result<(), String> {
        parts.track(name);
        let mut cmd = parts.cmd(&["run", "--name", name, "--"]);
        cmd.arg(&bin).arg(ctl.arg()).args(["3000", shift]);
        cmd.env("STASIS_PARTITION_CLOCK_SHIFT", shift);
        let out = exec(cmd, T_RUN);
        if !out.ok() {
            return Err(format!("run failed: {}", out.show()));
        }
        pid_line(&out)?;
        ctl.wait_ready(&parts, name)?;
        for round in 0..2 {
            thread::sleep(SETTLE);
            let (_t, img) = image("ht-timens");
            parts.checkpoint_kill(name, &img)?;
            thread::sleep(Duration::from_secs(6));
            parts
                .restore(&img, None)
                .map_err(|e| format!("round {round}: {e}"))?;
        }
        thread::sleep(SETTLE);
        ctl.verify(&parts, name)
    })();
    let _ = parts.rm_f(name);
    if let Err(e) = res {
        panic!("{e}");
    }
}
