//! Conformance (issue 13, item 4): unix sockets in every state and epoll registrations whose
//! fd number was closed or reused, round trips of self-verifying workloads (kill,
//! leave-running, double, partition).

mod common;

conformance_tests!(unix_states, "unix_states", &[]);
conformance_tests!(epoll_reuse, "epoll_reuse", &[]);
conformance_tests!(scm_epoll, "scm_epoll", &[]);
conformance_tests!(unix_listen_data, "unix_listen_data", &[]);
