//! Seccomp (issue 13, item 1): filters stacked, shared between threads (TSYNC) and inherited
//! across fork, with and without no_new_privs; strict mode per thread and per process. Each
//! workload checks after restore that its filters still answer as before (errno values, a
//! KILL_PROCESS action), the /proc counts, and that the chains are shared as they were.
#![cfg(target_os = "linux")]

mod common;

// no_new_privs set, as container runtimes usually do.
conformance_tests!(filter, "seccomp_filter", &[]);
// no_new_privs unset and every capability dropped after the filters went in: restore must
// install them before the credentials.
conformance_tests!(filter_nonnp, "seccomp_filter", &["nonnp"]);
// Strict mode in a child process and in one thread of the root.
conformance_tests!(strict, "seccomp_strict", &[]);
