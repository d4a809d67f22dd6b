//! The agent does not fall over and keeps its state private (issue 10): bad specs answer 400
//! naming the field while supervision goes on; a panic in one workload's handling marks only
//! that workload failed (FFDC kind `panic`) and `/v1/health` stays honest (503 once the
//! supervisor thread is gone); failed adds leak no partition, cgroup, zombie or veth, and never
//! delete a host interface; links planted in FFDC and repository directories fail the
//! operation and leave their targets unchanged; a link planted as the hooks socket makes the
//! agent connect nowhere; everything under a root is 0600/0700 whatever the agent's umask.
#![cfg(target_os = "linux")]

mod common;

use common::{run_cmd, serial, spawn_owned, stasis};
use serde_json::{json, Value};
use stasis_agent::client::{Client, ClientError, Endpoint};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A `stasis agent` on its own root, its output in a file outside the root; SIGTERM on drop,
/// then the partitions named are removed.
struct Agent {
    root: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    names: Vec<&'static str>,
    _tmp: tempfile::TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Agent {
    /// `env`: extra environment; `umask0`: the agent runs with umask 000.
    fn start(names: Vec<&'static str>, env: &[(&str, &str)], umask0: bool) -> Agent {
        let serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let log = tmp.path().join("agent.out");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = if umask0 {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg("umask 000; exec \"$0\" \"$@\"")
                .arg(stasis());
            c
        } else {
            Command::new(stasis())
        };
        cmd.arg("--root")
            .arg(&root)
            .args(["agent", "--listen", "off", "--tick", "100ms"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = spawn_owned(&mut cmd);
        let a = Agent {
            root,
            log,
            child: Some(child),
            names,
            _tmp: tmp,
            _serial: serial,
        };
        a.client()
            .wait_ready(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("agent did not come up: {e}\n{}", a.log()));
        a
    }

    fn client(&self) -> Client {
        Client::new(Endpoint::Unix(self.root.join("api/agent.sock")))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn add(&self, spec: Value) -> Result<Value, ClientError> {
        self.client().post("/v1/workloads", Some(&spec))
    }

    fn status(&self, name: &str) -> Value {
        self.client()
            .get(&format!("/v1/workloads/{name}"))
            .unwrap_or_else(|e| panic!("status of {name}: {e}\n{}", self.log()))
    }

    /// Kill the workload's first process; it must come back running with another pid.
    fn kill_and_see_it_back(&self, name: &str) {
        let before = self.status(name);
        let pid = before["pid"].as_i64().unwrap() as i32;
        let restarts = before["restarts"].as_u64().unwrap();
        stasis_sys::sys::kill(pid, libc::SIGKILL).unwrap();
        wait_for(&format!("{name} restarted"), || {
            let v = self.status(name);
            v["state"] == "running"
                && v["restarts"].as_u64().unwrap() > restarts
                && v["pid"].as_i64().is_some_and(|p| p as i32 != pid)
        });
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

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sleeper(name: &str) -> Value {
    json!({"name": name, "partition": {"cmd": ["/bin/sleep", "1000"]}})
}

fn api_status(r: Result<Value, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn bad_specs_answer_400_naming_the_field_and_supervision_goes_on() {
    let a = Agent::start(vec!["rb-keep", "rb-bad"], &[], false);
    a.add(sleeper("rb-keep")).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = sleeper("rb-bad");
        f(&mut v);
        v
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            with(&|v| v["probe"] = json!({"probe": {"kind": "exec", "cmd": []}})),
            "probe.cmd: empty command",
        ),
        (
            with(&|v| {
                v["probe"] =
                    json!({"probe": {"kind": "tcp", "addr": "127.0.0.1:1"}, "timeout": "0s"})
            }),
            "probe.timeout",
        ),
        (
            with(&|v| {
                v["probe"] = json!({"probe": {"kind": "tcp", "addr": "127.0.0.1:1"}, "period": 0})
            }),
            "probe.period",
        ),
        (
            with(&|v| v["checkpoint_every"] = json!("0s")),
            "checkpoint_every",
        ),
        (with(&|v| v["hooks_timeout"] = json!("0s")), "hooks_timeout"),
        (
            with(&|v| v["policy"] = json!({"backoff": "0s"})),
            "policy.backoff",
        ),
        (
            with(&|v| v["partition"]["limits"] = json!({"memory_bytes": 1})),
            "partition.limits.memory_bytes",
        ),
        (
            with(&|v| v["partition"]["limits"] = json!({"pids": 0})),
            "partition.limits.pids",
        ),
        (
            with(&|v| {
                v["partition"]["net"] = json!("veth");
                v["partition"]["veth"] = json!({"host_if": "lo", "inner_if": "eth0",
                    "host_addr": "10.0.0.1/30", "inner_addr": "10.0.0.2/30"});
            }),
            "partition.veth",
        ),
        (with(&|v| v["name"] = json!("../etc")), "bad name"),
    ];
    for (spec, field) in cases {
        let (status, msg) = api_status(a.add(spec.clone()));
        assert_eq!(status, 400, "{spec}: {msg}");
        assert!(msg.contains(field), "{spec}: {msg:?} should name {field}");
        assert!(a.client().get("/v1/workloads/rb-bad").is_err());
    }
    assert!(!a.root.join("partitions/rb-bad").exists());
    // The agent kept supervising.
    a.kill_and_see_it_back("rb-keep");
    assert_eq!(a.client().get("/v1/health").unwrap()["ok"], true);
}

#[test]
fn a_panic_in_one_workload_marks_only_it_failed() {
    let a = Agent::start(
        vec!["rb-other", "rb-doomed"],
        &[("STASIS_FAILPOINTS", "agent.tick.panic=rb-doomed")],
        false,
    );
    a.add(sleeper("rb-other")).unwrap();
    a.add(sleeper("rb-doomed")).unwrap();
    wait_for("rb-doomed failed", || {
        a.status("rb-doomed")["state"] == "failed"
    });
    let st = a.status("rb-doomed");
    assert!(
        st["last_failure"]
            .as_str()
            .unwrap()
            .contains("injected panic"),
        "{st}"
    );
    let b = a.client().get("/v1/ffdc?workload=rb-doomed").unwrap();
    let kind = &b["bundles"][0]["failure"]["kind"];
    assert_eq!(kind["kind"], "panic", "{b}");
    assert!(kind["message"].as_str().unwrap().contains("injected panic"));
    // The other workload is supervised, the supervisor alive.
    a.kill_and_see_it_back("rb-other");
    let h = a.client().get("/v1/health").unwrap();
    assert_eq!(h["ok"], true, "{h}");
    // A failed workload can be removed.
    a.client().delete("/v1/workloads/rb-doomed").unwrap();
}

#[test]
fn health_is_503_once_the_supervisor_thread_is_gone() {
    let a = Agent::start(
        vec!["rb-loop"],
        &[("STASIS_FAILPOINTS", "agent.loop.panic=rb-loop")],
        false,
    );
    assert_eq!(a.client().get("/v1/health").unwrap()["ok"], true);
    a.add(sleeper("rb-loop")).unwrap();
    wait_for("health 503", || {
        matches!(
            a.client().get("/v1/health"),
            Err(ClientError::Api { status: 503, .. })
        )
    });
    let (status, msg) = api_status(a.client().post("/v1/workloads/rb-loop/checkpoint", None));
    assert_eq!(status, 503, "{msg}");
}

/// Pids of the agent's children that are zombies.
fn zombie_children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let c = std::fs::read_to_string(t.unwrap().path().join("children")).unwrap_or_default();
        for p in c.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
            if state == Some(Some('Z')) {
                out.push(p);
            }
        }
    }
    out
}

fn cgroup_exists(name: &str) -> bool {
    use stasis_partition::cgroup::Cgroups;
    Cgroups::detect().unwrap().exists(&Cgroups::group_for(name))
}

fn iface_exists(ifname: &str) -> bool {
    Path::new("/sys/class/net").join(ifname).exists()
}

#[test]
fn failed_adds_leak_nothing_and_never_delete_a_host_interface() {
    let a = Agent::start(vec!["rb-leak", "rb-leak2"], &[], false);
    let veth = stasis_partition::setup::allocate_veth("rb-leak", &[]).host_if;
    for spec in [
        json!({"name": "rb-leak", "partition": {"cmd": ["/nonexistent/command"]}}),
        json!({"name": "rb-leak", "partition": {"cmd": ["/nonexistent/command"], "net": "veth"}}),
        json!({"name": "rb-leak", "partition": {"cmd": ["/bin/sleep", "1000"],
            "limits": {"cpus": 0.0001}}}),
    ] {
        let (status, msg) = api_status(a.add(spec.clone()));
        assert!(status == 400 || status == 500, "{spec}: {status} {msg}");
        assert!(a.client().get("/v1/workloads/rb-leak").is_err());
        assert!(!a.root.join("partitions/rb-leak").exists(), "{spec}");
        assert!(!cgroup_exists("rb-leak"), "{spec}: cgroup left");
        assert_eq!(zombie_children(a.pid()), Vec::<i32>::new(), "{spec}");
        assert!(!iface_exists(&veth), "{spec}: veth left");
    }
    // The name is free for a valid add.
    a.add(sleeper("rb-leak")).unwrap();
    a.client().delete("/v1/workloads/rb-leak").unwrap();
    assert!(!cgroup_exists("rb-leak"));

    // A host interface with the name stasis would choose is never deleted by a failed start.
    let taken = stasis_partition::setup::allocate_veth("rb-leak2", &[]).host_if;
    let peer = format!("{taken}p");
    let o = run_cmd(
        Command::new("ip").args(["link", "add", &taken, "type", "veth", "peer", "name", &peer]),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = a.add(json!({"name": "rb-leak2",
        "partition": {"cmd": ["/bin/sleep", "1000"], "net": "veth"}}));
    let still = iface_exists(&taken);
    let _ = run_cmd(Command::new("ip").args(["link", "del", &taken]));
    assert!(r.is_err(), "the start should fail: {r:?}");
    assert!(still, "a failed start deleted the host interface {taken}");
    assert!(!a.root.join("partitions/rb-leak2").exists());
    assert_eq!(zombie_children(a.pid()), Vec::<i32>::new());
}

fn listing(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = walk(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap_or_default();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn links_planted_in_ffdc_and_repository_dirs_touch_nothing() {
    let a = Agent::start(vec!["rb-link"], &[], false);
    a.add(sleeper("rb-link")).unwrap();
    let outside = a.root.parent().unwrap().join("outside");
    std::fs::create_dir_all(outside.join("00000001700000000000-000001")).unwrap();
    std::fs::write(outside.join("precious"), b"keep me").unwrap();
    std::fs::write(
        outside.join("00000001700000000000-000001/manifest.img"),
        b"x",
    )
    .unwrap();
    let before = listing(&outside);
    // FFDC: the workload's bundle directory is a link.
    std::fs::create_dir_all(a.root.join("ffdc")).unwrap();
    std::os::unix::fs::symlink(&outside, a.root.join("ffdc/rb-link")).unwrap();

    a.kill_and_see_it_back("rb-link");
    wait_for("the FFDC failure reported", || {
        a.log().contains("writing the FFDC bundle failed")
    });
    assert_eq!(listing(&outside), before, "a planted link's target changed");
    // Repository: the workload's images directory is a link (planted after the restart, which
    // discarded the images: a discard removes a link as a link).
    std::fs::create_dir_all(a.root.join("images/rb-link")).unwrap();
    std::os::unix::fs::symlink(&outside, a.root.join("images/rb-link/images")).unwrap();
    let (status, msg) = api_status(a.client().get("/v1/workloads/rb-link/images"));
    assert_eq!(status, 500, "{msg}");
    a.client().delete("/v1/workloads/rb-link").unwrap();
    assert_eq!(listing(&outside), before, "a planted link's target changed");
}

#[test]
fn a_link_planted_as_the_hooks_socket_is_not_followed() {
    let a = Agent::start(vec!["rb-hooks"], &[], false);
    let outside = a.root.parent().unwrap().join("outside.sock");
    let l = std::os::unix::net::UnixListener::bind(&outside).unwrap();
    l.set_nonblocking(true).unwrap();
    let cmd = format!(
        "ln -s {} \"$STASIS_HOOKS_SOCKET\" && exec sleep 1000",
        outside.display()
    );
    a.add(
        json!({"name": "rb-hooks", "partition": {"cmd": ["/bin/sh", "-c", cmd]},
        "hooks_timeout": "1s"}),
    )
    .unwrap();
    wait_for("the link planted", || {
        a.root
            .join("hooks/rb-hooks.sock")
            .symlink_metadata()
            .is_ok()
    });
    let v = a
        .client()
        .post("/v1/workloads/rb-hooks/checkpoint", None)
        .unwrap_or_else(|e| panic!("checkpoint: {e}\n{}", a.log()));
    assert!(v["image"].is_string(), "{v}");
    match l.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the agent connected through the planted link: {other:?}"),
    }
    assert!(a.log().contains("not connecting"), "{}", a.log());
}

#[test]
fn everything_under_the_root_is_private_whatever_the_umask() {
    let a = Agent::start(vec!["rb-modes"], &[], true);
    a.add(json!({"name": "rb-modes",
        "partition": {"cmd": ["/bin/sh", "-c", "echo hello; exec sleep 1000"],
            "env": ["SECRET=1"]}}))
        .unwrap();
    // A failure: FFDC bundle, boot restart, a new incarnation.
    a.kill_and_see_it_back("rb-modes");
    wait_for("an FFDC bundle", || {
        a.client().get("/v1/ffdc").unwrap()["bundles"]
            .as_array()
            .is_some_and(|b| !b.is_empty())
    });
    wait_for("stats sampled", || {
        a.root.join("partitions/rb-modes/stats.jsonl").exists()
    });
    let mut bad = Vec::new();
    let root_mode = std::fs::metadata(&a.root).unwrap().mode() & 0o7777;
    if root_mode != 0o700 {
        bad.push(format!("{} {root_mode:o}", a.root.display()));
    }
    for p in walk(&a.root) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.mode() & 0o7777;
        let ft = m.file_type();
        if ft.is_socket() {
            continue; // the API socket's mode is the API's; hooks sockets are the workload's
        }
        let want = if ft.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            bad.push(format!("{} {mode:o}", p.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "not private under umask 000:\n{}",
        bad.join("\n")
    );
}
