//! Node trust (issue 14 item 6): `stasis --root A node trust HOST:PORT --token TOKEN` between two
//! real agents on this machine (separate roots and listeners are two nodes).
//!
//! Covered: a wrong token or a wrong `--fingerprint` is refused and leaves neither side
//! trusting anything; with the token, both sides trust each other (each pins the other's
//! certificate — the one first seen, printed — and holds the other's image key); an image
//! made under A is refused under B before and restores under B after; a node credential opens
//! the node routes only; a loopback agent without TLS is trusted over plain HTTP with nothing
//! pinned; `node forget` ends the trust of images.
#![cfg(target_os = "linux")]

mod common;

use common::nodes::{Agent, Fabric};
use common::{
    checkpoint_cmd, run_cmd, serial, stasis, tree_pids, wait_gone, watch_pid, Workload,
    GONE_TIMEOUT,
};
use serde_json::Value;
use stasis_agent::client::{Client, ClientError, Endpoint};
use stasis_agent::daemon::AgentPaths;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn at(root: &Path, args: &[&str]) -> Output {
    run_cmd(Command::new(stasis()).arg("--root").arg(root).args(args))
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json_of(o: &Output, what: &str) -> Value {
    assert!(o.status.success(), "{what}\n{}", show(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{what}: {e}\n{}", show(o)))
}

fn nodes(root: &Path) -> Vec<Value> {
    json_of(&at(root, &["node", "ls", "--json"]), "node ls")["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

fn node_name(root: &Path) -> String {
    json_of(&at(root, &["node", "id", "--json"]), "node id")["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `stasis --root ROOT image verify DIR`: exit 0 if a restore would accept the image.
fn accepted(root: &Path, dir: &Path) -> Output {
    run_cmd(
        Command::new(stasis())
            .arg("--root")
            .arg(root)
            .args(["image", "verify"])
            .arg(dir),
    )
}

/// An image of a counter checkpointed (and ended) under `root`.
fn image_under(root: &Path, dir: &Path) {
    let w = Workload::start("counter", &[]);
    std::thread::sleep(Duration::from_millis(200));
    for p in tree_pids(w.pid) {
        watch_pid(p);
    }
    let c = checkpoint_cmd(w.pid, dir, &[]);
    let out = run_cmd(
        Command::new(stasis())
            .arg("--root")
            .arg(root)
            .args(c.get_args()),
    );
    assert!(out.status.success(), "checkpoint\n{}", show(&out));
    assert!(wait_gone(&[w.pid], GONE_TIMEOUT).is_empty());
}

#[test]
fn node_trust_is_mutual_pinned_and_carries_image_keys() {
    let _g = serial();
    let t = tempfile::tempdir().unwrap();
    let (ra, rb) = (t.path().join("a"), t.path().join("b"));
    let a = Agent::start(&ra, true);
    let b = Agent::start(&rb, true);
    let (name_a, name_b) = (node_name(&ra), node_name(&rb));
    assert_ne!(name_a, name_b, "two roots are two nodes");

    // An image made under A is not accepted under B yet.
    let img = t.path().join("img");
    image_under(&ra, &img);
    let o = accepted(&rb, &img);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));

    // A wrong token: refused by B, nothing trusted on either side.
    let o = at(
        &ra,
        &["node", "trust", &b.listen, "--token", &"0".repeat(64)],
    );
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("token"),
        "{}",
        show(&o)
    );
    // A wrong fingerprint: the handshake fails before the token is sent.
    let o = at(
        &ra,
        &[
            "node",
            "trust",
            &b.listen,
            "--token",
            &b.token(),
            "--fingerprint",
            &"ab".repeat(32),
        ],
    );
    assert!(!o.status.success(), "{}", show(&o));
    assert!(nodes(&ra).is_empty() && nodes(&rb).is_empty());

    // The token: mutual trust, B's certificate pinned as first seen and printed.
    let o = at(&ra, &["node", "trust", &b.listen, "--token", &b.token()]);
    assert!(o.status.success(), "node trust\n{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&b.fingerprint()) && text.contains("first seen"),
        "{text}"
    );
    let on_a = nodes(&ra);
    assert_eq!(on_a.len(), 1, "{on_a:?}");
    assert_eq!(on_a[0]["name"], name_b.as_str());
    assert_eq!(on_a[0]["addr"], b.listen.as_str());
    assert_eq!(on_a[0]["fingerprint"], b.fingerprint().as_str());
    assert_eq!(on_a[0]["first_seen"], true);
    let on_b = nodes(&rb);
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    assert_eq!(on_b[0]["name"], name_a.as_str());
    assert_eq!(on_b[0]["fingerprint"], a.fingerprint().as_str());
    // The API lists the same.
    let listed = Client::new(Endpoint::Unix(AgentPaths::new(&rb).socket()))
        .get("/v1/nodes")
        .unwrap();
    assert_eq!(listed["nodes"][0]["name"], name_a.as_str());

    // Images made under A are accepted under B, and B's under A.
    let o = accepted(&rb, &img);
    assert!(o.status.success(), "A's image under B\n{}", show(&o));
    let img_b = t.path().join("img-b");
    image_under(&rb, &img_b);
    let o = accepted(&ra, &img_b);
    assert!(o.status.success(), "B's image under A\n{}", show(&o));

    // A's node credential opens B's node routes, nothing else; a wrong secret nothing.
    let rec: Value = serde_json::from_slice(
        &std::fs::read(ra.join(format!("agent/nodes/{name_b}.json"))).unwrap(),
    )
    .unwrap();
    let cred = format!("node.{name_a}.{}", rec["secret_to"].as_str().unwrap());
    let fp_b = stasis_agent::tls::parse_fingerprint(&b.fingerprint()).unwrap();
    let url: Endpoint = format!("https://{}", b.listen).parse().unwrap();
    let c = Client::new(url.clone())
        .with_token(cred.clone())
        .with_pin(fp_b)
        .unwrap();
    assert_eq!(c.get("/v1/nodes/self").unwrap()["name"], name_b.as_str());
    match c.get("/v1/workloads") {
        Err(ClientError::Api { status: 403, .. }) => {}
        other => panic!("a node credential opened /v1/workloads: {other:?}"),
    }
    let bad = Client::new(url)
        .with_token(format!("node.{name_a}.{}", "1".repeat(64)))
        .with_pin(fp_b)
        .unwrap();
    match bad.get("/v1/nodes/self") {
        Err(ClientError::Api { status: 401, .. }) => {}
        other => panic!("a wrong node secret was accepted: {other:?}"),
    }

    // Forgetting B on A: B's images are no longer accepted under A.
    let o = at(&ra, &["node", "forget", &name_b]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(nodes(&ra).is_empty());
    let o = accepted(&ra, &img_b);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    drop((a, b));
}

#[test]
fn node_trust_over_plain_loopback_and_refusals() {
    let _g = serial();
    let t = tempfile::tempdir().unwrap();
    let (ra, rc) = (t.path().join("a"), t.path().join("c"));
    let _a = Agent::start(&ra, true);
    let c = Agent::start(&rc, false);
    // A plain loopback listener: trusted, nothing pinned.
    let o = at(
        &ra,
        &["node", "trust", &c.listen, "--token", &c.token(), "--json"],
    );
    let v = json_of(&o, "node trust (plain)");
    assert_eq!(v["fingerprint"], Value::Null, "{v}");
    assert_eq!(nodes(&rc).len(), 1);
    // But a fingerprint cannot be checked over plain HTTP: refused.
    let rd = t.path().join("d");
    let o = at(
        &rd,
        &[
            "node",
            "trust",
            &c.listen,
            "--token",
            &c.token(),
            "--fingerprint",
            &"ab".repeat(32),
        ],
    );
    assert!(!o.status.success(), "{}", show(&o));
    // Nobody answers: exit 8.
    let o = at(
        &ra,
        &[
            "node",
            "trust",
            &format!("127.0.0.1:{}", common::free_port()),
            "--token",
            &c.token(),
        ],
    );
    assert_eq!(o.status.code(), Some(8), "{}", show(&o));
    // Trusting itself is refused.
    let a_listen = &_a.listen;
    let a_token = _a.token();
    let o = at(&ra, &["node", "trust", a_listen, "--token", &a_token]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("itself"),
        "{}",
        show(&o)
    );
}

/// Nodes in their own network namespaces (a bridge between them, TLS required beyond
/// loopback): trust from inside node A's namespace, pinned by the fingerprint given; the
/// fabric's links cut and mended by nftables.
#[test]
fn nodes_in_their_own_network_namespaces_trust_over_tls() {
    let _g = serial();
    let t = tempfile::tempdir().unwrap();
    let fabric = Fabric::new("stn", 231, 2);
    let a = fabric.agent(0, &t.path().join("a"));
    let b = fabric.agent(1, &t.path().join("b"));
    assert!(fabric.reaches(0, 1));
    let o = a.cli(&[
        "node",
        "trust",
        &b.listen,
        "--token",
        &b.token(),
        "--fingerprint",
        &b.fingerprint(),
        "--json",
    ]);
    let v = json_of(&o, "node trust across namespaces");
    assert_eq!(v["fingerprint"], b.fingerprint().as_str());
    assert_eq!(v["first_seen"], false);
    assert_eq!(v["addr"], b.listen.as_str());
    assert_eq!(nodes(&b.root).len(), 1);
    // A node credential works across the fabric (from node A's namespace).
    fabric.cut(0);
    assert!(!fabric.reaches(0, 1) && !fabric.reaches(1, 0));
    fabric.mend(0);
    assert!(fabric.reaches(0, 1));
    drop((a, b));
}

/// Peers that hang up mid-exchange get EPIPE in the agent, not SIGPIPE: it stays up. (Found by
/// this work: the agent ran with SIGPIPE's default action, and a client that completed a TLS
/// handshake, asked for the dashboard with a tiny receive window and reset killed it — the TLS
/// layer's vectored writes raise SIGPIPE, unlike plain `send`.)
#[test]
fn agent_survives_peers_that_hang_up() {
    use std::io::{Read, Write};
    let _g = serial();
    let t = tempfile::tempdir().unwrap();
    for tls in [true, false] {
        let a = Agent::start(&t.path().join(format!("h{tls}")), tls);
        for _ in 0..20 {
            let Some(s) = small_window_connection(&a.listen) else {
                panic!(
                    "the agent (tls {tls}) stopped accepting connections:\n{}",
                    a.log()
                )
            };
            let req = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", a.listen);
            let mut first = [0u8; 100];
            let raw = if tls {
                let config =
                    stasis_agent::tls::recording_client(None, stasis_agent::tls::Seen::default())
                        .unwrap();
                let conn =
                    rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
                let mut st = rustls::StreamOwned::new(conn, s);
                let _ = st.write_all(req.as_bytes());
                let _ = st.read(&mut first);
                st.sock
            } else {
                let mut s = s;
                let _ = s.write_all(req.as_bytes());
                let _ = s.read(&mut first);
                s
            };
            // SO_LINGER 0: close resets the connection while the agent still writes.
            reset_on_close(&raw);
            drop(raw);
        }
        std::thread::sleep(Duration::from_millis(300));
        let alive = Client::new(Endpoint::Unix(AgentPaths::new(&a.root).socket()))
            .get("/v1/health")
            .unwrap_or_else(|e| panic!("the agent (tls {tls}) died: {e}\n{}", a.log()));
        assert_eq!(alive["ok"], true);
    }
}

/// A TCP connection to `addr` with an 8 KiB receive buffer (set before connecting, so the
/// window stays small): room for a TLS handshake, not for the 53 KB dashboard, so the agent is
/// still writing its answer when the connection is reset. (Smaller windows stall the handshake
/// for seconds.)
fn small_window_connection(addr: &str) -> Option<std::net::TcpStream> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_recv_buffer_size(&fd, 8192).unwrap();
    let sa: std::net::SocketAddr = addr.parse().unwrap();
    rustix::net::connect(&fd, &sa).ok()?;
    let s = std::net::TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(s)
}

fn reset_on_close(s: &std::net::TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(s, Some(Duration::ZERO));
}
