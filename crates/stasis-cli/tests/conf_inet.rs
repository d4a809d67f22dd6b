//! Conformance (issue 13, item 4, IP and other families): socket options, TCP half-closed
//! states, UDP shutdown, UDP-Lite, raw, ICMP ("ping"), packet and netlink sockets through
//! kill / leave-running / double / partition round trips, and the refusals the issue allows
//! (a packet socket with an mmap ring, a netlink socket with messages waiting).
#![cfg(target_os = "linux")]

mod common;

conformance_tests!(sockopts, "sockopts", &[]);
conformance_tests!(netlink_sock, "netlink_sock", &[]);
conformance_tests!(packet_sock, "packet_sock", &[]);
conformance_tests!(udplite, "udplite", &[]);
