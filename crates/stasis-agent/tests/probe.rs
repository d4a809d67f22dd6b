//! Health probes against real processes, sockets and a network namespace.

use stasis_agent::probe::{check, Probe, ProbeError, Target};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_millis(1500);

fn here() -> Target {
    Target {
        pid: std::process::id() as i32,
        own_net: false,
    }
}

fn http_server(status: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = write!(c, "HTTP/1.0 {status} X\r\nContent-Length: 0\r\n\r\n");
        }
    });
    port
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exec_probes() {
    let p: Probe = "exec:/bin/true".parse().unwrap();
    check(&p, here(), T).unwrap();
    let p: Probe = "exec:/bin/sh -c exit_3_please".parse().unwrap();
    assert!(matches!(
        check(&p, here(), T),
        Err(ProbeError::Unhealthy(_))
    ));
    let p: Probe = "exec:/bin/sleep 5".parse().unwrap();
    let t = Instant::now();
    assert_eq!(
        check(&p, here(), Duration::from_millis(200)),
        Err(ProbeError::Timeout(Duration::from_millis(200)))
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    let p: Probe = "exec:/no/such/program".parse().unwrap();
    assert!(matches!(check(&p, here(), T), Err(ProbeError::Setup(_))));
}

#[test]
fn tcp_and_http_probes() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    check(&format!("tcp:127.0.0.1:{port}").parse().unwrap(), here(), T).unwrap();
    drop(l);
    // A port bound by a socket that does not listen refuses connections, and no other test
    // can take it meanwhile (a port merely freed can be handed out again at once).
    let closed = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    rustix::net::bind(
        &closed,
        &"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
    )
    .unwrap();
    let closed_port = std::net::SocketAddrV4::try_from(rustix::net::getsockname(&closed).unwrap())
        .unwrap()
        .port();
    assert!(matches!(
        check(
            &format!("tcp:127.0.0.1:{closed_port}").parse().unwrap(),
            here(),
            T
        ),
        Err(ProbeError::Unhealthy(_))
    ));
    let ok = http_server(200);
    check(
        &format!("http://127.0.0.1:{ok}/health").parse().unwrap(),
        here(),
        T,
    )
    .unwrap();
    let bad = http_server(503);
    match check(
        &format!("http://127.0.0.1:{bad}/").parse().unwrap(),
        here(),
        T,
    ) {
        Err(ProbeError::Unhealthy(m)) => assert!(m.contains("503"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let sp = silent.local_addr().unwrap().port();
    assert_eq!(
        check(
            &format!("http://127.0.0.1:{sp}/").parse().unwrap(),
            here(),
            Duration::from_millis(300)
        ),
        Err(ProbeError::Timeout(Duration::from_millis(300)))
    );
}

/// TCP and HTTP probes of a workload with its own network namespace connect to *its*
/// loopback, not the host's.
#[test]
fn probes_run_in_the_workload_network_namespace() {
    let port = 18000 + (std::process::id() % 2000) as u16;
    let child = Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            &format!("ip link set lo up && exec python3 -m http.server {port} --bind 127.0.0.1"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unshare (util-linux) and python3 are needed");
    let k = Kill(child);
    let target = Target {
        pid: k.0.id() as i32,
        own_net: true,
    };
    let url: Probe = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while check(&url, target, T).is_err() {
        assert!(
            Instant::now() < deadline,
            "server in the namespace never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // From the host's namespace the same address has nothing.
    assert!(check(&url, here(), T).is_err());
    check(&format!("tcp:127.0.0.1:{port}").parse().unwrap(), target, T).unwrap();
    // An exec probe runs in the namespace too: only `lo` is there. (Arguments are split on
    // whitespace, so a script holds the check.)
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("only_lo.sh");
    std::fs::write(&script, "#!/bin/sh\n[ \"$(ip -o link | wc -l)\" = 1 ]\n").unwrap();
    let mut perm = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&script, perm).unwrap();
    let p: Probe = format!("exec:{}", script.display()).parse().unwrap();
    check(&p, target, T).unwrap();
    assert!(check(&p, here(), T).is_err(), "the host has more than lo");
}
