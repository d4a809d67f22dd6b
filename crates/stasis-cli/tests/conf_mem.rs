//! Memory behaviours of issue 13 item 2 beyond copy-on-write sharing (which is `conf_cow.rs`):
//! madvise state, protection changes within file mappings, a private mapping of /dev/zero.

mod common;

// MADV_DONTFORK, WIPEONFORK, HUGEPAGE, NOHUGEPAGE, DONTDUMP: VmFlags, contents, and what a
// fork after restore does with each.
crate::conformance_tests!(mem_madvise, "mem_madvise", &[]);
// mprotect of parts of private and shared file mappings; a private mapping of /dev/zero.
crate::conformance_tests!(mem_fileprot, "mem_fileprot", &[]);
// Private mappings of deleted files (and of a closed memfd), shared copy-on-write with a child.
crate::conformance_tests!(mem_deleted, "mem_deleted", &[]);
