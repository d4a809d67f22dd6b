//! Conformance: System V segments smaller than a page that outlive the tree (issue 13,
//! item 6): the kernel maps a whole page, but `shm_segsz` stays 56.
#![cfg(target_os = "linux")]

mod common;

conformance_tests!(sysv_small, "sysv_small", &[]);
