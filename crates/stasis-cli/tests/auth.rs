//! Who may drive the agent (issue 10): a real `stasis agent` attacked the way a local user or a
//! web page would.
//!
//! Covered: TCP without the token is refused (401) and runs nothing; with it, it works; a
//! foreign Host (421) or Origin (403) is refused even with the token; the dashboard's login
//! sets an HttpOnly SameSite=Strict cookie, and a cookie-authenticated POST without
//! `X-Stasis-Request` is refused; `stasis token` prints the token (root only) and `--rotate`
//! ends the old one and its sessions; the root CLI needs no flag on the socket nor over TCP;
//! on the unix socket, non-root users outside `--admin-group` are refused (by the directory's
//! modes, and by their credentials when the modes are loosened) while members get in; a
//! 10 MB body is 413; 1,024 event streams are served without threads piling up, the next is
//! 429; a non-loopback listener needs TLS, and TLS clients pin the certificate.
#![cfg(target_os = "linux")]

mod common;

use common::{run_cmd, serial, spawn_owned, stasis};
use serde_json::json;
use stasis_agent::client::{Client, ClientError, Endpoint};
use stasis_agent::daemon::AgentPaths;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `stasis agent`; stopped (SIGTERM) when dropped, with the named partitions removed.
struct Agent {
    root: PathBuf,
    child: Option<Child>,
    names: Vec<&'static str>,
}

impl Agent {
    /// Start with `args` after `agent` (default `--listen off`); wait until the socket answers.
    fn start(root: &Path, args: &[&str], names: Vec<&'static str>) -> Agent {
        let child = Agent::spawn(root, args);
        let a = Agent {
            root: root.to_path_buf(),
            child: Some(child),
            names,
        };
        a.client()
            .wait_ready(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("agent did not come up: {e}\n{}", a.log()));
        a
    }

    fn spawn(root: &Path, args: &[&str]) -> Child {
        std::fs::create_dir_all(root).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.with_extension("log"))
            .unwrap();
        let mut all = vec!["agent", "--tick", "100ms"];
        if !args.contains(&"--listen") {
            all.extend(["--listen", "off"]);
        }
        all.extend(args);
        spawn_owned(
            Command::new(stasis())
                .arg("--root")
                .arg(root)
                .args(&all)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
    }

    fn client(&self) -> Client {
        Client::new(Endpoint::Unix(AgentPaths::new(&self.root).socket()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.with_extension("log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn token(&self) -> String {
        stasis_agent::auth::read_token(&AgentPaths::new(&self.root)).unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = stasis_sys::sys::kill(c.id() as i32, libc::SIGTERM);
            let _ = c.wait();
        }
        for n in &self.names {
            let _ = run_cmd(
                Command::new(stasis())
                    .arg("--root")
                    .arg(&self.root)
                    .args(["rm", "-f", n]),
            );
        }
    }
}

fn cli(root: &Path, args: &[&str]) -> Output {
    run_cmd(Command::new(stasis()).arg("--root").arg(root).args(args))
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An HTTP answer: status, head (lower-cased), body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One raw HTTP/1.1 request over `io` (`Connection: close`), read to the end.
fn exchange(mut io: impl Read + Write, req: &str, body: &[u8]) -> Answer {
    io.write_all(req.as_bytes()).unwrap();
    // The agent may answer (401, 413) before reading a large body and close: that is fine.
    let _ = io.write_all(body);
    let mut buf = Vec::new();
    let _ = io.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {req:?}: {text:?}"));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// `METHOD path` to 127.0.0.1:port with `headers` (a Host naming the listener unless given).
fn tcp(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    exchange(s, &req, body)
}

fn add_body(name: &str, marker: &Path) -> Vec<u8> {
    json!({
        "name": name,
        "partition": {"cmd": ["/bin/sh", "-c", format!("touch {} && exec sleep 1000", marker.display())]}
    })
    .to_string()
    .into_bytes()
}

fn mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn tcp_needs_the_token_checks_host_and_origin_and_limits_bodies() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent = Agent::start(&root, &["--listen", &listen], vec!["auth1", "auth2"]);
    let token = agent.token();
    let bearer = format!("Bearer {token}");
    let marker = tmp.path().join("ran");

    // No token: 401 before anything runs.
    let a = tcp(
        port,
        "POST",
        "/v1/workloads",
        &[],
        &add_body("auth1", &marker),
    );
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.head.contains("www-authenticate: bearer"), "{}", a.head);
    let a = tcp(
        port,
        "POST",
        "/v1/workloads",
        &[("Authorization", "Bearer 00")],
        &add_body("auth1", &marker),
    );
    assert_eq!(a.status, 401, "a wrong token: {}", a.body);
    assert_eq!(tcp(port, "GET", "/v1/health", &[], b"").status, 401);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!marker.exists(), "the refused command ran");
    let list = agent.client().get("/v1/workloads").unwrap();
    assert_eq!(list["workloads"], json!([]), "{list}");
    assert!(!root.join("partitions/auth1").exists());

    // Foreign Host or Origin: refused even with the token.
    let a = tcp(
        port,
        "GET",
        "/v1/workloads",
        &[
            ("Authorization", &bearer),
            ("Host", &format!("evil.example:{port}")),
        ],
        b"",
    );
    assert_eq!(a.status, 421, "{}", a.body);
    let a = tcp(
        port,
        "POST",
        "/v1/workloads",
        &[
            ("Authorization", &bearer),
            ("Origin", "http://evil.example"),
        ],
        &add_body("auth1", &marker),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(!marker.exists());

    // 10 MB: 413.
    let mut big = b"{\"name\": \"".to_vec();
    big.resize(10 << 20, b'a');
    let a = tcp(
        port,
        "POST",
        "/v1/workloads",
        &[("Authorization", &bearer)],
        &big,
    );
    assert_eq!(a.status, 413, "{}", a.body);

    // With the token (header): it works.
    let a = tcp(
        port,
        "POST",
        "/v1/workloads",
        &[("Authorization", &bearer)],
        &add_body("auth1", &marker),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the workload's command did not run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The dashboard's login: a cookie, HttpOnly and SameSite=Strict.
    let login = json!({ "token": token }).to_string();
    let a = tcp(
        port,
        "POST",
        "/v1/login",
        &[("X-Stasis-Request", "1")],
        br#"{"token": "00"}"#,
    );
    assert_eq!(a.status, 401, "{}", a.body);
    let a = tcp(port, "POST", "/v1/login", &[], login.as_bytes());
    assert_eq!(
        a.status, 403,
        "a login without X-Stasis-Request: {}",
        a.body
    );
    let a = tcp(
        port,
        "POST",
        "/v1/login",
        &[("X-Stasis-Request", "1")],
        login.as_bytes(),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let set = a
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a Set-Cookie")
        .to_string();
    assert!(
        set.contains("httponly") && set.contains("samesite=strict") && set.contains("path=/"),
        "{set}"
    );
    let session = set.split(';').next().unwrap().to_string();
    let a = tcp(port, "GET", "/v1/workloads", &[("Cookie", &session)], b"");
    assert_eq!(a.status, 200, "{}", a.body);
    // A POST by cookie alone (what a cross-site form would send) is refused; with the header
    // it goes through to the handler.
    let a = tcp(
        port,
        "POST",
        "/v1/workloads/auth1/hibernate",
        &[("Cookie", &session)],
        b"",
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("X-Stasis-Request"), "{}", a.body);
    let a = tcp(
        port,
        "POST",
        "/v1/workloads/nope/checkpoint",
        &[("Cookie", &session), ("X-Stasis-Request", "1")],
        b"",
    );
    assert_eq!(a.status, 404, "{}", a.body);
    let a = tcp(
        port,
        "POST",
        "/v1/workloads/auth1/hibernate",
        &[
            ("Cookie", &session),
            ("X-Stasis-Request", "1"),
            ("Origin", "http://evil.example"),
        ],
        b"",
    );
    assert_eq!(a.status, 403, "{}", a.body);
    let a = tcp(
        port,
        "GET",
        "/v1/workloads",
        &[
            ("Cookie", &session),
            ("Host", &format!("evil.example:{port}")),
        ],
        b"",
    );
    assert_eq!(a.status, 421, "{}", a.body);
    assert_eq!(
        agent.client().get("/v1/workloads/auth1").unwrap()["state"],
        "running"
    );
    // The page itself needs no token.
    assert_eq!(tcp(port, "GET", "/", &[], b"").status, 200);

    // The root CLI: no flag on the socket, nor over TCP (it reads the token from --root).
    let out = ok(&cli(&root, &["workload", "ls"]), "workload ls");
    assert!(out.contains("auth1"), "{out}");
    let url = format!("http://{listen}");
    let out = ok(
        &cli(&root, &["workload", "--agent", &url, "ls"]),
        "workload ls over TCP",
    );
    assert!(out.contains("auth1"), "{out}");
    let tf = tmp.path().join("tokenfile");
    std::fs::write(&tf, &token).unwrap();
    let out = ok(
        &cli(
            &tmp.path().join("elsewhere"),
            &[
                "workload",
                "--agent",
                &url,
                "--token-file",
                tf.to_str().unwrap(),
                "ls",
            ],
        ),
        "workload ls with --token-file",
    );
    assert!(out.contains("auth1"), "{out}");

    // `stasis token` prints it; --rotate replaces it: the old token and session stop working.
    assert_eq!(ok(&cli(&root, &["token"]), "token").trim(), token);
    let new = ok(&cli(&root, &["token", "--rotate"]), "token --rotate")
        .trim()
        .to_string();
    assert_ne!(new, token);
    assert_eq!(new.len(), 64);
    assert_eq!(mode(&AgentPaths::new(&root).token()).0, 0o600);
    let a = tcp(
        port,
        "GET",
        "/v1/health",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(a.status, 401, "the old token still works: {}", a.body);
    let a = tcp(port, "GET", "/v1/health", &[("Cookie", &session)], b"");
    assert_eq!(a.status, 401, "the old session still works: {}", a.body);
    let a = tcp(
        port,
        "GET",
        "/v1/health",
        &[("Authorization", &format!("Bearer {new}"))],
        b"",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let out = ok(
        &cli(&root, &["workload", "--agent", &url, "ls"]),
        "workload ls after rotation",
    );
    assert!(out.contains("auth1"), "{out}");
    let o = cli(
        &tmp.path().join("elsewhere"),
        &[
            "workload",
            "--agent",
            &url,
            "--token-file",
            tf.to_str().unwrap(),
            "ls",
        ],
    );
    assert!(!o.status.success(), "the old token file still works");

    ok(&cli(&root, &["workload", "rm", "auth1"]), "workload rm");
}

/// Users and a group made for a test, removed when dropped.
struct Users {
    users: Vec<String>,
    group: String,
}

impl Users {
    fn new(group: &str, member: &str, outsider: &str) -> Users {
        let u = Users {
            users: vec![member.into(), outsider.into()],
            group: group.into(),
        };
        u.remove();
        let run = |args: &[&str]| {
            let o = run_cmd(Command::new(args[0]).args(&args[1..]));
            assert!(
                o.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(&["groupadd", "--system", group]);
        run(&[
            "useradd",
            "--system",
            "--no-create-home",
            "-G",
            group,
            member,
        ]);
        run(&["useradd", "--system", "--no-create-home", outsider]);
        u
    }

    fn remove(&self) {
        for user in &self.users {
            let _ = run_cmd(Command::new("userdel").arg(user));
        }
        let _ = run_cmd(Command::new("groupdel").arg(&self.group));
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `curl` on the unix socket as `user` (with their groups): (HTTP status, body), or None when
/// the connection itself was refused.
fn curl_as(user: &str, socket: &Path, path: &str) -> (Option<u16>, String) {
    let o = run_cmd(
        Command::new("setpriv")
            .args(["--reuid", user, "--regid", user, "--init-groups", "--"])
            .args(["curl", "-s", "-S", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(socket)
            .arg(format!("http://localhost{path}")),
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    let code = code.trim().parse::<u16>().ok().filter(|c| *c != 0);
    (code, format!("{body}{err}"))
}

#[test]
fn the_unix_socket_admits_root_and_the_admin_group_only() {
    let _g = serial();
    let (group, member, outsider) = ("stasis-t-adm", "stasis-t-in", "stasis-t-out");
    let _users = Users::new(group, member, outsider);
    let gid = stasis_sys::sys::group_gid(group).unwrap().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The users must be able to reach the root's parent.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let root = tmp.path().join("root");
    let agent = Agent::start(&root, &["--admin-group", group], vec![]);
    let paths = AgentPaths::new(&root);
    let socket = paths.socket();

    // The modes: the group passes through ROOT, reads the socket's directory, uses the
    // socket; the rest of ROOT stays root's.
    assert_eq!(mode(&root), (0o710, 0, gid));
    assert_eq!(mode(&paths.api_dir()), (0o750, 0, gid));
    assert_eq!(mode(&socket), (0o660, 0, gid));
    assert_eq!(mode(&paths.dir()).0, 0o700);
    assert_eq!(mode(&paths.token()).0, 0o600);

    // Root, with no flag.
    agent.client().get("/v1/health").unwrap();
    // The member gets in.
    let (code, body) = curl_as(member, &socket, "/v1/workloads");
    assert_eq!(code, Some(200), "{body}");
    // The outsider cannot even reach the socket.
    let (code, body) = curl_as(outsider, &socket, "/v1/workloads");
    assert_eq!(code, None, "the outsider reached the socket: {body}");

    // Loosened modes (an administrator's mistake) let the outsider connect: its credentials
    // still refuse it, naming why.
    for (p, m) in [(&root, 0o711), (&paths.api_dir(), 0o755), (&socket, 0o666)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let (code, body) = curl_as(outsider, &socket, "/v1/workloads");
    assert_eq!(code, Some(403), "{body}");
    assert!(
        body.contains("not in the agent's admin group 'stasis-t-adm'"),
        "{body}"
    );
    let (code, body) = curl_as(outsider, &socket, "/v1/health");
    assert_eq!(code, Some(403), "{body}");
    let (code, body) = curl_as(member, &socket, "/v1/health");
    assert_eq!(code, Some(200), "{body}");
    drop(agent);

    // Without an admin group, only root: the directory is 0700, and a non-root caller that
    // reaches the socket anyway is refused.
    let agent = Agent::start(&root, &[], vec![]);
    assert_eq!(mode(&root).0, 0o700);
    assert_eq!(mode(&paths.api_dir()), (0o700, 0, 0));
    assert_eq!(mode(&socket), (0o600, 0, 0));
    for (p, m) in [(&root, 0o711), (&paths.api_dir(), 0o755), (&socket, 0o666)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let (code, body) = curl_as(member, &socket, "/v1/health");
    assert_eq!(code, Some(403), "{body}");
    assert!(body.contains("no admin group"), "{body}");
    agent.client().get("/v1/health").unwrap();

    // `stasis token` is root's.
    let o = run_cmd(
        Command::new("setpriv")
            .args(["--reuid", member, "--regid", member, "--init-groups", "--"])
            .arg(stasis())
            .arg("--root")
            .arg(&root)
            .arg("token"),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("only root can read"), "{err}");
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// Open an event stream on the unix socket; returns it once its answer's head is read.
fn open_stream(socket: &Path, since: u64) -> (std::os::unix::net::UnixStream, u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /v1/events/stream?since={since} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            other => panic!(
                "stream head: {other:?} after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (s, status, head)
}

/// Read from `s` until `needle` shows up.
fn read_until(s: &mut std::os::unix::net::UnixStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the stream: {text:?}"
        );
        match s.read(&mut buf) {
            Ok(0) => panic!("the stream ended: {text:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the stream: {e} after {text:?}"),
        }
    }
}

#[test]
fn a_thousand_streams_are_served_without_a_thread_each_and_the_cap_answers_429() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let agent = Agent::start(&root, &[], vec!["strm1"]);
    let c = agent.client();
    let socket = AgentPaths::new(&root).socket();
    let before = threads(agent.pid());
    let last = c.get("/v1/health").unwrap()["last_seq"].as_u64().unwrap();
    let max = stasis_agent::auth::DEFAULT_MAX_STREAMS;
    let mut streams: Vec<_> = (0..max)
        .map(|i| {
            let (s, status, head) = open_stream(&socket, last);
            assert_eq!(status, 200, "stream {i}: {head}");
            s
        })
        .collect();
    let during = threads(agent.pid());
    assert!(
        during < 40,
        "{during} threads with {max} streams open (before: {before})"
    );
    // It keeps answering, and the next stream is refused.
    assert_eq!(c.get("/v1/health").unwrap()["ok"], true);
    let (_, status, head) = open_stream(&socket, last);
    assert_eq!(status, 429, "{head}");
    // Every stream gets the next event.
    c.post(
        "/v1/workloads",
        Some(&json!({"name": "strm1", "partition": {"cmd": ["/bin/sleep", "1000"]}})),
    )
    .unwrap();
    for (i, s) in streams.iter_mut().enumerate() {
        let text = read_until(s, "event: workload.added");
        assert!(text.contains("strm1"), "stream {i}: {text}");
    }
    let after = threads(agent.pid());
    assert!(after < 40, "{after} threads after the fan-out");
    // A stream that ends frees its place.
    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, status, _) = open_stream(&socket, last);
        if status == 200 {
            streams.push(s);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(streams);
    c.delete("/v1/workloads/strm1").unwrap();
}

#[test]
fn a_non_loopback_listener_needs_tls_and_clients_pin_the_certificate() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");

    // Plain HTTP beyond loopback: refused at start, saying what to do.
    let mut child = Agent::spawn(&root, &["--listen", "0.0.0.0:0"]);
    let st = child.wait().unwrap();
    assert!(!st.success());
    let log = std::fs::read_to_string(root.with_extension("log")).unwrap();
    assert!(
        log.contains("not a loopback address") && log.contains("--tls"),
        "{log}"
    );

    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent = Agent::start(&root, &["--listen", &listen, "--tls"], vec![]);
    let paths = AgentPaths::new(&root);
    let cert = paths.tls_dir().join("cert.pem");
    assert_eq!(mode(&paths.tls_dir().join("key.pem")).0, 0o600);
    let fp = stasis_agent::tls::cert_file_fingerprint(&cert).unwrap();
    let fp_hex = stasis_agent::tls::fingerprint_hex(&fp);
    assert!(
        agent.log().contains(&fp_hex),
        "the fingerprint is not logged:\n{}",
        agent.log()
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "GET /v1/health HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n"
    );
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "plain HTTP answered"
    );

    let url = format!("https://{listen}");
    let token = agent.token();
    // The right pin and the token: in.
    let c = Client::new(url.parse().unwrap())
        .with_token(token.clone())
        .with_pin(fp)
        .unwrap();
    assert_eq!(c.get("/v1/health").unwrap()["ok"], true);
    // Over TLS too, the token is required.
    let c = Client::new(url.parse().unwrap()).with_pin(fp).unwrap();
    assert!(matches!(
        c.get("/v1/health"),
        Err(ClientError::Api { status: 401, .. })
    ));
    // A wrong pin: the handshake fails, nothing is sent.
    let c = Client::new(url.parse().unwrap())
        .with_token(token)
        .with_pin([7u8; 32])
        .unwrap();
    match c.get("/v1/health") {
        Err(ClientError::Tls { .. }) => {}
        other => panic!("a wrong pin was not refused: {other:?}"),
    }
    // No pin at all: refused before connecting.
    let c = Client::new(url.parse().unwrap());
    assert!(matches!(c.get("/v1/health"), Err(ClientError::NoPin(_))));

    // The root CLI pins ROOT/agent/tls/cert.pem and sends the token by itself.
    ok(
        &cli(&root, &["workload", "--agent", &url, "ls"]),
        "workload ls over https",
    );
    ok(
        &cli(
            &root,
            &[
                "workload",
                "--agent",
                &url,
                "--agent-fingerprint",
                &fp_hex,
                "ls",
            ],
        ),
        "workload ls with --agent-fingerprint",
    );
    let o = cli(
        &root,
        &[
            "workload",
            "--agent",
            &url,
            "--agent-fingerprint",
            &"ab".repeat(32),
            "ls",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("TLS") && err.contains("not the pinned"),
        "{err}"
    );
}
