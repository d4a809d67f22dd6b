//! Conformance (issue 13, item 3, second half): files deleted while open ("ghost" files,
//! sparse, with owner, mode and times), a removed cwd or root, a removed FIFO, inode flags
//! (chattr) of open files. Each workload checks its own state after every round trip.
#![cfg(target_os = "linux")]

mod common;

conformance_tests!(ghost, "ghost", &[]);
