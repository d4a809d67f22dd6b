//! Conformance, processes (issue 13, item 1): zombies, processes stopped by job control, and
//! per-process kernel state (loginuid, THP disable, membarrier registrations, timer slack),
//! each through checkpoint→kill→restore, `--leave-running`, a double round trip and as a
//! partition.
#![cfg(target_os = "linux")]

mod common;

conformance_tests!(zombie, "zombie", &[]);
conformance_tests!(stopped, "stopped", &[]);
conformance_tests!(proc_misc, "proc_misc", &[]);
conformance_tests!(pidfd, "pidfd", &[]);
