//! Issue 13 item 2, memfds and the vdso of stopped tasks: memfd mode, owner, name, seals and
//! size on every path (open only, mapped only, mapped private, reopened read-only, shared
//! with a child, in flight in SCM_RIGHTS); the vdso/vvar of processes stopped by job control
//! (one thread, two threads) used after SIGCONT.

mod common;

// Every memfd path of `memfd_paths.c`, each checked by value after the restore.
crate::conformance_tests!(memfd_paths, "memfd_paths", &[]);
// Stopped processes (SIGTSTP, SIGSTOP with two threads): vdso where AT_SYSINFO_EHDR says,
// the maps lines unchanged, every vdso call agreeing with its system call.
crate::conformance_tests!(vdso_stopped, "vdso_stopped", &[]);
