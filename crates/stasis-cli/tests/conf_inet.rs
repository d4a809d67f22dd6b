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
conformance_tests!(raw_sock, "raw_sock", &[]);

/// `net.ipv4.ping_group_range` opened to every group while it lives (the workload's network
/// namespace is the host's, partitions included), put back as it was afterwards.
struct PingRange(String);

const PING_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

impl PingRange {
    fn open() -> PingRange {
        let old = std::fs::read_to_string(PING_RANGE).expect("read ping_group_range");
        std::fs::write(PING_RANGE, "0 2147483647").expect("set ping_group_range");
        PingRange(old.trim().to_string())
    }
}

impl Drop for PingRange {
    fn drop(&mut self) {
        let _ = std::fs::write(PING_RANGE, &self.0);
    }
}

mod ping_sock {
    use super::{common, PingRange};

    #[test]
    fn kill() {
        let _g = common::serial();
        let _r = PingRange::open();
        common::roundtrip("ping_sock", &[], common::Mode::Kill);
    }

    #[test]
    fn leave_running() {
        let _g = common::serial();
        let _r = PingRange::open();
        common::roundtrip("ping_sock", &[], common::Mode::LeaveRunning);
    }

    #[test]
    fn double() {
        let _g = common::serial();
        let _r = PingRange::open();
        common::roundtrip("ping_sock", &[], common::Mode::Double);
    }

    #[test]
    fn partition() {
        let _g = common::serial();
        let _r = PingRange::open();
        common::partition::roundtrip("ping_sock", &[]);
    }

    /// Restore where the range no longer admits the restorer's group (the default "1 0"):
    /// stasis widens it for the socket() call alone and puts it back.
    #[test]
    fn restore_with_closed_range() {
        let _g = common::serial();
        let r = PingRange::open();
        let mut w = common::Workload::start("ping_sock", &[]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let img = common::image_dir("ping_sock");
        common::checkpoint_kill(&w, &img.path().join("img"));
        std::fs::write(super::PING_RANGE, "1 0").unwrap();
        common::restore_into(&mut w, &img.path().join("img"));
        let now = std::fs::read_to_string(super::PING_RANGE).unwrap();
        assert_eq!(
            now.split_whitespace().collect::<Vec<_>>(),
            ["1", "0"],
            "restore did not put ping_group_range back"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        if let Err(e) = w.verify() {
            panic!("ping_sock [closed range]: verification after restore failed:\n{e}");
        }
        drop(r);
    }
}
conformance_tests!(tcp_halfclosed_v4, "tcp_halfclosed", &["v4"]);
conformance_tests!(tcp_halfclosed_v6, "tcp_halfclosed", &["v6"]);
conformance_tests!(tcp_halfclosed_mapped, "tcp_halfclosed", &["mapped"]);

/// A TCP connection whose peer outside the tree shut down its side (the peer's FIN is replayed
/// into the restored socket through a raw socket), over IPv6 and over IPv4-mapped IPv6.
mod peer_closed {
    use super::common;
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};

    /// A server on `bind` that sends "hello\n", shuts down its side and collects what it gets.
    fn closing_server(bind: &str) -> Arc<Mutex<Vec<Vec<u8>>>> {
        let l = std::net::TcpListener::bind(bind).expect("bind the closing server");
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let g = g.clone();
                std::thread::spawn(move || {
                    let _ = c.write_all(b"hello\n");
                    let _ = c.shutdown(std::net::Shutdown::Write);
                    let mut all = Vec::new();
                    let _ = c.read_to_end(&mut all);
                    g.lock().unwrap().push(all);
                });
            }
        });
        got
    }

    fn wait_for_bye(got: &Arc<Mutex<Vec<Vec<u8>>>>) {
        let start = std::time::Instant::now();
        while !got.lock().unwrap().iter().any(|d| d == b"bye\n") {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "the server never got the bytes sent after restore: {:?}",
                got.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn run(bind: &str, connect: &str, mode: common::Mode) {
        let _g = common::serial();
        let got = closing_server(bind);
        common::roundtrip("tcp_peer_closed", &[connect], mode);
        wait_for_bye(&got);
    }

    #[test]
    fn v6_kill() {
        run("[::1]:42161", "[::1]:42161", common::Mode::Kill);
    }

    #[test]
    fn v6_double() {
        run("[::1]:42162", "[::1]:42162", common::Mode::Double);
    }

    #[test]
    fn mapped_kill() {
        run(
            "127.0.0.1:42163",
            "[::ffff:127.0.0.1]:42163",
            common::Mode::Kill,
        );
    }

    #[test]
    fn mapped_double() {
        run(
            "127.0.0.1:42164",
            "[::ffff:127.0.0.1]:42164",
            common::Mode::Double,
        );
    }
}

/// A connection to a server outside the tree in FIN_WAIT1, LAST_ACK or CLOSING, its data and
/// FIN unacknowledged (the server does not read): checkpoint→kill→restore, then the server
/// reads every byte (pattern-checked) and end of file, and the connection finishes closing.
mod closing_out {
    use super::common;
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Byte `i` of the workloads' pattern `seed` (`wl_fill_pattern` in workloads/common.c).
    fn pattern_byte(seed: u64, i: usize) -> u8 {
        let mut z = seed
            .wrapping_mul(0x9e3779b97f4a7c15)
            .wrapping_add(((i >> 3) as u64).wrapping_mul(0xbf58476d1ce4e5b9))
            .wrapping_add(0x94d049bb133111eb);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        ((z ^ (z >> 31)) >> ((i & 7) * 8)) as u8
    }

    type Got = Arc<Mutex<Option<Vec<u8>>>>;

    /// Accepts one connection; shuts down its side at once (`last_ack`) or after 1.5 s
    /// (`closing`); reads nothing until `go`, then everything, then shuts down.
    fn server(bind: &str, mode: &'static str) -> (Arc<AtomicBool>, Got) {
        let l = std::net::TcpListener::bind(bind).expect("bind");
        let go = Arc::new(AtomicBool::new(false));
        let got: Got = Arc::new(Mutex::new(None));
        let (g, r) = (go.clone(), got.clone());
        std::thread::spawn(move || {
            let Ok((mut c, _)) = l.accept() else { return };
            if mode == "last_ack" {
                let _ = c.shutdown(std::net::Shutdown::Write);
            }
            if mode == "closing" {
                std::thread::sleep(Duration::from_millis(1500));
                let _ = c.shutdown(std::net::Shutdown::Write);
            }
            while !g.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut all = Vec::new();
            let _ = c.read_to_end(&mut all);
            let _ = c.shutdown(std::net::Shutdown::Write);
            *r.lock().unwrap() = Some(all);
        });
        (go, got)
    }

    fn run(bind: &str, connect: &str, mode: &'static str) {
        let _g = common::serial();
        let (go, got) = server(bind, mode);
        let mut w = common::Workload::start("tcp_closing_out", &[connect, mode]);
        let sent: usize = std::fs::read_to_string(w.ctl_path().join("sent"))
            .expect("sent")
            .trim()
            .parse()
            .unwrap();
        let img = common::image_dir("tcp_closing_out");
        common::checkpoint_kill(&w, &img.path().join("img"));
        std::thread::sleep(Duration::from_millis(500));
        common::restore_into(&mut w, &img.path().join("img"));
        std::thread::sleep(Duration::from_millis(300));
        go.store(true, Ordering::SeqCst);
        if let Err(e) = w.verify() {
            panic!("tcp_closing_out {mode}: verification after restore failed:\n{e}");
        }
        let start = std::time::Instant::now();
        let all = loop {
            if let Some(a) = got.lock().unwrap().take() {
                break a;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "server never finished"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            all.len(),
            sent,
            "the server got {} of {sent} bytes",
            all.len()
        );
        if let Some(i) = (0..sent).find(|&i| all[i] != pattern_byte(21, i)) {
            panic!("the server's bytes differ from what was written, first at {i}");
        }
    }

    #[test]
    fn fin_wait1_v4() {
        run("127.0.0.1:42171", "127.0.0.1:42171", "fin_wait1");
    }

    #[test]
    fn last_ack_v4() {
        run("127.0.0.1:42172", "127.0.0.1:42172", "last_ack");
    }

    #[test]
    fn closing_v4() {
        run("127.0.0.1:42173", "127.0.0.1:42173", "closing");
    }

    #[test]
    fn fin_wait1_v6() {
        run("[::1]:42174", "[::1]:42174", "fin_wait1");
    }

    #[test]
    fn last_ack_v6() {
        run("[::1]:42175", "[::1]:42175", "last_ack");
    }

    #[test]
    fn closing_mapped() {
        run("127.0.0.1:42176", "[::ffff:127.0.0.1]:42176", "closing");
    }
}
conformance_tests!(tcp_closed, "tcp_closed", &[]);
