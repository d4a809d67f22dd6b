//! Conformance: terminals (issue 13, item 5) — `/dev/tty` held by the tree comes back as
//! `/dev/tty`; a tree whose terminal is outside it gets a new pseudo-terminal on request.
#![cfg(target_os = "linux")]

mod common;

conformance_tests!(devtty, "devtty", &[]);
