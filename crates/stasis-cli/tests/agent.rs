//! The node agent end to end: a real `stasis agent` process driven through the CLI and its API.
//!
//! Covered: a killed workload comes back from its latest image with its state (and is told
//! POST-RESTORE); a second failure within the failover window is a boot restart with the old
//! images discarded; a failing health probe and an OOM kill trigger the policy; FFDC bundles
//! hold the exit/signal, the output tail, the agent's log lines, a /proc snapshot when the
//! process still existed, the image in use and the time; an agent restart keeps workloads
//! running and adopts them; hibernate/resume keeps state; event subscribers (the CLI's
//! `events --follow`) miss nothing across an agent restart; bad requests get 4xx answers; CLI
//! clients wait a bounded time for a starting agent.
#![cfg(target_os = "linux")]

mod common;

use common::{run_cmd, serial, spawn_owned, stasis, workload_bin};
use serde_json::{json, Value};
use stasis_agent::client::{Client, ClientError, Endpoint};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A running `stasis agent` on a root of its own; stopped (SIGTERM) when dropped.
struct Agent {
    root: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn start(root: &Path, extra: &[&str]) -> Agent {
        std::fs::create_dir_all(root).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("agent-test.log"))
            .unwrap();
        let mut args = vec!["agent", "--listen", "off", "--tick", "100ms"];
        if extra.contains(&"--listen") {
            args.truncate(1);
            args.extend(["--tick", "100ms"]);
        }
        let child = spawn_owned(
            Command::new(stasis())
                .arg("--root")
                .arg(root)
                .args(&args)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let a = Agent {
            root: root.to_path_buf(),
            child: Some(child),
        };
        a.client()
            .wait_ready(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("agent did not come up: {e}\n{}", a.log()));
        a
    }

    fn client(&self) -> Client {
        Client::new(Endpoint::Unix(
            stasis_agent::daemon::AgentPaths::new(&self.root).socket(),
        ))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("agent-test.log")).unwrap_or_default()
    }

    /// SIGKILL and wait: the agent gets no chance to save anything.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the agent saves its state and exits, workloads stay.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = stasis_sys::sys::kill(c.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(st)) = c.try_wait() {
                    assert!(st.success(), "agent exited with {st}\n{}", self.log());
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("agent did not stop on SIGTERM\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = stasis_sys::sys::kill(c.id() as i32, libc::SIGTERM);
            let _ = c.wait();
        }
    }
}

/// What every agent test starts with: the serial lock, a temporary root, an agent on it, and
/// the removal of the test's partitions. Dropped in field order: agent, partitions, files, lock.
struct Env {
    agent: Agent,
    _cleanup: Cleanup,
    tmp: tempfile::TempDir,
    root: PathBuf,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Env {
    fn new(names: Vec<&'static str>) -> Env {
        let serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let cleanup = Cleanup(root.clone(), names);
        Env {
            agent: Agent::start(&root, &[]),
            _cleanup: cleanup,
            tmp,
            root,
            _serial: serial,
        }
    }
}

/// Removes the partitions a test made, whatever happened.
struct Cleanup(PathBuf, Vec<&'static str>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.1 {
            let _ = run_cmd(
                Command::new(stasis())
                    .arg("--root")
                    .arg(&self.0)
                    .args(["rm", "-f", n]),
            );
        }
    }
}

fn cli(root: &Path, args: &[&str]) -> Output {
    run_cmd(Command::new(stasis()).arg("--root").arg(root).args(args))
}

fn cli_ok(root: &Path, args: &[&str]) -> String {
    let o = cli(root, args);
    assert!(
        o.status.success(),
        "stasis {args:?} failed ({}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn status(root: &Path, name: &str) -> Value {
    serde_json::from_str(&cli_ok(root, &["workload", "status", name, "--json"])).unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_status(root: &Path, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = status(root, name);
        if f(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_num(p: &Path) -> u64 {
    common::read_counter(p)
}

fn pid_of(v: &Value) -> i32 {
    v["pid"].as_i64().expect("a pid") as i32
}

fn alive(pid: i32) -> bool {
    stasis_partition::state::alive(pid)
}

/// The hooks workload in its own control directory; returns (ctl dir, command).
fn hooks_workload(tmp: &Path, name: &str) -> (PathBuf, Vec<String>) {
    let ctl = tmp.join(format!("ctl-{name}"));
    std::fs::create_dir_all(&ctl).unwrap();
    let bin = workload_bin("hooks");
    (
        ctl.clone(),
        vec![bin.display().to_string(), ctl.display().to_string()],
    )
}

fn add_args<'a>(name: &'a str, ctl: &'a str, opts: &[&'a str], cmd: &'a [String]) -> Vec<&'a str> {
    let mut v = vec!["workload", "add", name, "--cwd", ctl];
    v.extend(opts);
    v.push("--");
    v.extend(cmd.iter().map(String::as_str));
    v
}

/// The kinds of every event in the agent's log, in order.
fn event_kinds(root: &Path) -> Vec<String> {
    cli_ok(root, &["events", "--json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Ask the workload in `ctl` to verify its own state; it must report PASS.
/// Ask the workload to verify itself and return its verdict. A workload exits once it has
/// reported, and the agent restarts it at once: the next incarnation finds the request still
/// there and writes a verdict of its own over the first. So the first verdict is read as soon as
/// it appears (the restart takes at least a supervision tick).
fn first_verdict(ctl: &Path) -> String {
    std::fs::write(ctl.join("verify"), b"").unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(v) = std::fs::read_to_string(ctl.join("result")) {
            if !v.is_empty() {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the workload's verdict"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn verify_passes(ctl: &Path) {
    let verdict = first_verdict(ctl);
    assert!(verdict.starts_with("PASS"), "{verdict}");
}

fn ffdc(root: &Path, name: &str) -> Vec<Value> {
    let out = cli_ok(root, &["ffdc", "ls", "--workload", name, "--json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

fn ffdc_show(root: &Path, id: &str) -> Value {
    serde_json::from_str(&cli_ok(root, &["ffdc", "show", id, "--json"])).unwrap()
}

fn files_of(bundle: &Value) -> Vec<String> {
    bundle["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn killed_workload_comes_back_from_its_image_then_boots_on_a_second_failure() {
    let env = Env::new(vec!["ha1"]);
    let (tmp, root) = (&env.tmp, env.root.clone());
    let (ctl, cmd) = hooks_workload(tmp.path(), "ha1");
    let ctl_s = ctl.display().to_string();
    let out = cli_ok(
        &root,
        &add_args(
            "ha1",
            &ctl_s,
            &["--checkpoint-every", "1s", "--failover-window", "30s"],
            &cmd,
        ),
    );
    assert!(out.contains("running"), "{out}");
    // `add` returns once it runs.
    let v = status(&root, "ha1");
    assert_eq!(v["state"], "running");
    assert_eq!(v["restarts"], 0);
    assert_eq!(v["last_restart"], Value::Null);
    assert_eq!(v["last_image"], Value::Null);
    let pid0 = pid_of(&v);
    assert!(alive(pid0));

    let v = wait_status(&root, "ha1", "two consistency images", |v| {
        v["images"].as_u64() >= Some(2)
    });
    assert_eq!(
        v["pid"], pid0,
        "a consistency image leaves the workload running"
    );
    let events = std::fs::read_to_string(ctl.join("events")).unwrap_or_default();
    assert!(
        events.contains("PRE-CHECKPOINT"),
        "the workload was told before each checkpoint: {events:?}"
    );

    // Failure 1: SIGKILL. Back from the latest image, with its state.
    let at_kill = read_num(&ctl.join("counter"));
    stasis_sys::sys::kill(pid0, libc::SIGKILL).unwrap();
    let v = wait_status(&root, "ha1", "an image restart", |v| {
        v["restarts"] == 1 && v["state"] == "running"
    });
    assert_eq!(v["last_restart"], "image");
    let image1 = v["last_image"]
        .as_str()
        .expect("the image used")
        .to_string();
    let pid1 = pid_of(&v);
    assert_ne!(pid1, pid0);
    assert!(
        v["last_failure"].as_str().unwrap().contains("signal 9"),
        "{v}"
    );
    wait_for("the POST-RESTORE hook", || {
        std::fs::read_to_string(ctl.join("events"))
            .unwrap_or_default()
            .contains("POST-RESTORE")
    });
    let events = std::fs::read_to_string(ctl.join("events")).unwrap();
    let restored_at: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("POST-RESTORE counter="))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        restored_at > 0 && restored_at <= at_kill,
        "restored from the image's counter ({restored_at}), at most where it was killed ({at_kill})"
    );
    wait_for("the counter to go on", || {
        read_num(&ctl.join("counter")) > restored_at + 3
    });

    // Failure 2 within the window: the image is suspect; a boot restart, images dropped.
    stasis_sys::sys::kill(pid1, libc::SIGKILL).unwrap();
    let v = wait_status(&root, "ha1", "a boot restart", |v| {
        v["restarts"] == 2 && v["state"] == "running"
    });
    assert_eq!(v["last_restart"], "boot");
    assert_eq!(v["last_image"], Value::Null);
    let pid2 = pid_of(&v);
    let log = v["restart_log"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["from"], "image");
    assert_eq!(log[1]["from"], "boot");
    // A cold restart is a new incarnation of the same partition: its accounting carries on.
    let ps: Value = serde_json::from_str(&cli_ok(&root, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["incarnation"], 3, "{ps:#}");
    // The boot restart counted from zero again.
    std::thread::sleep(Duration::from_millis(300));
    let fresh = read_num(&ctl.join("counter"));
    assert!(
        fresh < restored_at,
        "a cold restart starts over ({fresh} vs {restored_at})"
    );
    let repo_images: Vec<String> = std::fs::read_dir(root.join("images/ha1/images"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !repo_images.contains(&image1),
        "images of the failed state were discarded: {repo_images:?}"
    );

    // FFDC: one bundle per failure, holding what was asked for.
    let bundles = ffdc(&root, "ha1");
    assert_eq!(bundles.len(), 2, "{bundles:?}");
    for b in &bundles {
        assert_eq!(b["failure"]["kind"]["kind"], "signal");
        assert_eq!(b["failure"]["kind"]["signo"], 9);
        assert!(b["failure"]["at_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
    // Newest first: the second failure ran from image1, the first from its boot command.
    assert_eq!(bundles[1]["failure"]["image_in_use"], Value::Null);
    assert_eq!(bundles[0]["failure"]["image_in_use"], image1.as_str());
    let shown = ffdc_show(&root, bundles[0]["id"].as_str().unwrap());
    let files = files_of(&shown);
    for f in [
        "failure.json",
        "summary.txt",
        "output.tail",
        "agent.log.tail",
    ] {
        assert!(files.iter().any(|x| x == f), "{f} in {files:?}");
    }
    assert!(
        shown["output_tail"].as_str().unwrap().contains("hooks: on"),
        "{shown:#}"
    );
    assert!(
        shown["agent_log_tail"].as_str().unwrap().contains("ha1"),
        "{shown:#}"
    );
    assert!(shown["summary"].as_str().unwrap().contains("signal 9"));

    // The workload verifies its own state.
    verify_passes(&ctl);
    let _ = pid2;
    // It exited on its own after verifying: that is a failure too (restarted from its image).
    cli_ok(&root, &["workload", "rm", "ha1"]);
    let o = cli(&root, &["workload", "status", "ha1", "--json"]);
    assert_eq!(o.status.code(), Some(7), "unknown workload: exit code 7");
}

#[test]
fn failing_probe_triggers_the_policy_and_captures_proc() {
    let env = Env::new(vec!["pr1"]);
    let (tmp, root) = (&env.tmp, env.root.clone());
    let flag = tmp.path().join("healthy");
    std::fs::write(&flag, b"ok").unwrap();
    let probe = format!("exec:/bin/cat {}", flag.display());
    cli_ok(
        &root,
        &[
            "workload",
            "add",
            "pr1",
            "--checkpoint-every",
            "500ms",
            "--probe",
            &probe,
            "--probe-period",
            "200ms",
            "--probe-threshold",
            "2",
            "--",
            "/bin/sh",
            "-c",
            "echo started; while :; do sleep 1; done",
        ],
    );
    let v = wait_status(&root, "pr1", "an image", |v| {
        v["images"].as_u64() >= Some(1)
    });
    let pid0 = pid_of(&v);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        status(&root, "pr1")["restarts"],
        0,
        "a healthy probe is quiet"
    );
    std::fs::remove_file(&flag).unwrap();
    let v = wait_status(&root, "pr1", "a restart after the probe failed", |v| {
        v["restarts"].as_u64() >= Some(1) && v["state"] == "running"
    });
    assert_eq!(v["last_restart"], "image");
    assert!(
        v["last_failure"].as_str().unwrap().contains("health probe"),
        "{v}"
    );
    assert_ne!(pid_of(&v), pid0);
    assert!(!alive(pid0), "the unhealthy incarnation was ended");
    std::fs::write(&flag, b"ok").unwrap();
    let bundles = ffdc(&root, "pr1");
    let b = &bundles[0];
    assert_eq!(b["failure"]["kind"]["kind"], "probe_failed");
    assert_eq!(b["failure"]["pid"], pid0);
    let shown = ffdc_show(&root, b["id"].as_str().unwrap());
    let files = files_of(&shown);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("proc/{pid0}/"))),
        "a /proc snapshot of the still-running process: {files:?}"
    );
    cli_ok(&root, &["workload", "rm", "pr1"]);
}

#[test]
fn an_oom_kill_in_the_cgroup_is_a_failure() {
    let env = Env::new(vec!["oom1"]);
    let root = env.root.clone();
    cli_ok(
        &root,
        &[
            "workload",
            "add",
            "oom1",
            "--memory",
            "64M",
            "--failover-window",
            "2s",
            "--",
            "/bin/sh",
            "-c",
            "sleep 0.5; python3 -c 'bytearray(768 << 20)'; exec sleep 1000",
        ],
    );
    let v = wait_status(&root, "oom1", "a restart after the OOM kill", |v| {
        v["restarts"].as_u64() >= Some(1)
    });
    assert!(v["last_failure"].as_str().unwrap().contains("OOM"), "{v:#}");
    let bundles = ffdc(&root, "oom1");
    assert_eq!(bundles[0]["failure"]["kind"]["kind"], "oom_kill");
    cli_ok(&root, &["workload", "rm", "oom1"]);
}

/// Follows `stasis events --follow --json` in a thread, collecting every line.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Follower {
    fn start(root: &Path) -> Follower {
        let mut child = spawn_owned(
            Command::new(stasis())
                .arg("--root")
                .arg(root)
                .args(["events", "--agent-wait", "30s", "--follow", "--json"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    l2.lock().unwrap().push(v);
                }
            }
        });
        Follower { child, lines }
    }

    fn seen(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn agent_restart_keeps_workloads_and_event_followers_miss_nothing() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let _c = Cleanup(root.clone(), vec!["ad1"]);
    let mut agent = Agent::start(&root, &[]);
    let follower = Follower::start(&root);
    let (ctl, cmd) = hooks_workload(tmp.path(), "ad1");
    let ctl_s = ctl.display().to_string();
    cli_ok(
        &root,
        &add_args("ad1", &ctl_s, &["--checkpoint-every", "300ms"], &cmd),
    );
    let v = wait_status(&root, "ad1", "an image", |v| {
        v["images"].as_u64() >= Some(1)
    });
    let pid = pid_of(&v);

    // Stop the agent: the workload runs on without it.
    agent.stop();
    assert!(alive(pid), "stopping the agent left the workload running");
    let c1 = read_num(&ctl.join("counter"));
    std::thread::sleep(Duration::from_millis(700));
    assert!(read_num(&ctl.join("counter")) > c1, "it kept working");
    // A client with a short wait gets a clear refusal (exit code 8).
    let o = cli(&root, &["workload", "--agent-wait", "300ms", "ls"]);
    assert_eq!(
        o.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A client started before the agent waits for it.
    let early = spawn_owned(
        Command::new(stasis())
            .arg("--root")
            .arg(&root)
            .args(["workload", "--agent-wait", "30s", "status", "ad1", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut agent2 = Agent::start(&root, &[]);
    let early = early.wait_with_output().unwrap();
    assert!(
        early.status.success(),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );
    let v: Value = serde_json::from_slice(&early.stdout).unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(v["pid"], pid, "the same process, adopted");
    assert_eq!(v["restarts"], 0);
    // It is supervised again: new images come.
    let images_before = agent_images(&root, "ad1");
    wait_for("a checkpoint by the new agent", || {
        agent_images(&root, "ad1") != images_before
    });

    // The follower bridged the restart: every event, in order, none twice.
    let all: Vec<Value> = cli_ok(&root, &["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = all.last().unwrap()["seq"].as_u64().unwrap();
    wait_for("the follower to catch up", || {
        follower
            .seen()
            .last()
            .and_then(|e| e["seq"].as_u64())
            .is_some_and(|s| s >= last)
    });
    let seen = follower.seen();
    let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, want, "contiguous from 1, no gap, no repeat");
    for (a, b) in all.iter().zip(seen.iter()) {
        assert_eq!(a, b, "the follower saw exactly the log");
    }
    let kinds: Vec<&str> = seen.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "agent.started",
        "workload.added",
        "workload.started",
        "workload.checkpointed",
        "workload.adopted",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "agent.started").count(), 2);
    // Resuming from a sequence number gives exactly what follows it.
    let k = seqs[seqs.len() / 2];
    let after: Vec<u64> = cli_ok(&root, &["events", "--since", &k.to_string(), "--json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(after.first(), Some(&(k + 1)));

    // A killed agent (no chance to save anything) changes nothing either.
    agent2.kill9();
    assert!(alive(pid));
    let _agent3 = Agent::start(&root, &[]);
    let v = status(&root, "ad1");
    assert_eq!(v["state"], "running");
    assert_eq!(v["pid"], pid);
    cli_ok(&root, &["workload", "rm", "ad1"]);
}

fn agent_images(root: &Path, name: &str) -> Vec<String> {
    let c = Client::new(Endpoint::Unix(
        stasis_agent::daemon::AgentPaths::new(root).socket(),
    ));
    c.get(&format!("/v1/workloads/{name}/images"))
        .map(|v| {
            v["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn hibernate_and_resume_keep_state() {
    let env = Env::new(vec!["hib1"]);
    let (tmp, root) = (&env.tmp, env.root.clone());
    let (ctl, cmd) = hooks_workload(tmp.path(), "hib1");
    let ctl_s = ctl.display().to_string();
    cli_ok(&root, &add_args("hib1", &ctl_s, &[], &cmd));
    let pid = pid_of(&status(&root, "hib1"));
    wait_for("some work", || read_num(&ctl.join("counter")) > 5);
    let o = cli(&root, &["resume", "hib1"]);
    assert_eq!(o.status.code(), Some(6), "resume of a running workload: 6");

    let out = cli_ok(&root, &["hibernate", "hib1", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "hibernated");
    assert_eq!(v["pid"], Value::Null);
    assert!(!alive(pid), "its processes are gone");
    let ps: Value = serde_json::from_str(&cli_ok(&root, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["state"], "checkpointed");
    for h in ["memory", "pids", "unified", "."] {
        let g = Path::new("/sys/fs/cgroup").join(h).join("stasis/hib1");
        assert!(!g.exists(), "its cgroup {} was released", g.display());
    }
    let frozen = read_num(&ctl.join("counter"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_num(&ctl.join("counter")), frozen, "nothing runs");
    let events = std::fs::read_to_string(ctl.join("events")).unwrap();
    assert!(events.contains("PRE-CHECKPOINT"), "{events}");

    let out = cli_ok(&root, &["resume", "hib1", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "running");
    assert!(alive(pid_of(&v)));
    assert_eq!(v["restarts"], 0, "a resume is not a restart");
    wait_for("the counter to go on", || {
        read_num(&ctl.join("counter")) > frozen + 3
    });
    let events = std::fs::read_to_string(ctl.join("events")).unwrap();
    assert!(
        events.contains(&format!("POST-RESTORE counter={frozen} ")),
        "told after the restore, with the state it had: {events}\n--- agent log ---\n{}",
        env.agent.log()
    );
    let kinds = event_kinds(&root);
    assert!(kinds.contains(&"workload.hibernated".to_string()));
    assert!(kinds.contains(&"workload.resumed".to_string()));
    verify_passes(&ctl);
    cli_ok(&root, &["workload", "rm", "hib1"]);
}

#[test]
fn the_api_answers_bad_requests_with_4xx_and_serves_its_document() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let _c = Cleanup(root.clone(), vec!["api1", "api2"]);
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let _agent = Agent::start(&root, &["--listen", &listen]);
    let url = format!("http://{listen}");
    let token =
        stasis_agent::auth::read_token(&stasis_agent::daemon::AgentPaths::new(&root)).unwrap();
    let c = Client::new(url.parse().unwrap()).with_token(token);
    let code = |r: Result<Value, ClientError>| match r {
        Err(ClientError::Api { status, message }) => {
            assert!(!message.is_empty());
            status
        }
        other => panic!("expected an error answer, got {other:?}"),
    };
    assert_eq!(
        code(c.post("/v1/workloads", Some(&json!({"bogus": 1})))),
        400
    );
    assert_eq!(
        code(c.post(
            "/v1/workloads",
            Some(&json!({"name": "bad name!", "partition": {"cmd": ["true"], "net": "host", "hostname": "x"}}))
        )),
        400
    );
    assert_eq!(
        code(c.post(
            "/v1/workloads",
            Some(&json!({"name": "api1", "checkpoint_every": "soon", "partition": {"cmd": ["true"], "net": "host", "hostname": "x"}}))
        )),
        400
    );
    assert_eq!(code(c.get("/v1/workloads/nope")), 404);
    assert_eq!(code(c.post("/v1/workloads/nope/checkpoint", None)), 404);
    assert_eq!(code(c.get("/v1/ffdc/nope")), 404);
    assert_eq!(code(c.get("/v1/nothing")), 404);
    assert_eq!(code(c.get("/v1/events?since=abc")), 400);
    assert_eq!(code(c.delete("/v1/events")), 405);
    // A real one through --agent URL, then a duplicate: 409 / exit code 6.
    let agent_url = url.clone();
    let o = cli(
        &root,
        &[
            "workload",
            "--agent",
            &agent_url,
            "add",
            "api1",
            "--",
            "/bin/sleep",
            "1000",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(
        &root,
        &[
            "workload",
            "--agent",
            &agent_url,
            "add",
            "api1",
            "--",
            "/bin/true",
        ],
    );
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"));
    let o = cli(
        &root,
        &[
            "workload",
            "add",
            "x",
            "--checkpoint-every",
            "soon",
            "--",
            "true",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "a bad duration is a usage error");
    assert_eq!(code(c.post("/v1/workloads/api1/resume", None)), 409);
    let doc = c.get("/openapi.yaml").unwrap();
    assert!(doc.as_str().unwrap().contains("openapi: 3"), "{doc}");
    // Only the name and the command are required.
    let v = c
        .post(
            "/v1/workloads",
            Some(&json!({"name": "api2", "partition": {"cmd": ["/bin/sleep", "1000"]}})),
        )
        .unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(v["spec"]["partition"]["hostname"], "api2");
    assert_eq!(v["spec"]["policy"]["failover_window"], "30s");
    c.delete("/v1/workloads/api2").unwrap();
    let h = c.get("/v1/health").unwrap();
    assert_eq!(h["ok"], true);
    let list = c.get("/v1/workloads").unwrap();
    assert_eq!(list["workloads"][0]["name"], "api1");
    let st = c.get("/v1/workloads/api1/stats").unwrap();
    assert!(st["usage"]["pids"].as_u64() >= Some(1), "{st}");
    cli_ok(&root, &["workload", "--agent", &agent_url, "rm", "api1"]);
    assert_eq!(code(c.get("/v1/workloads/api1")), 404);
}

#[test]
fn a_failing_checkpoint_leaves_the_workload_running_and_is_reported() {
    let env = Env::new(vec!["uns1"]);
    let (tmp, root) = (&env.tmp, env.root.clone());
    let ctl = tmp.path().join("ctl-uns1");
    std::fs::create_dir_all(&ctl).unwrap();
    let bin = workload_bin("unsupported").display().to_string();
    let ctl_s = ctl.display().to_string();
    let cmd = vec![bin, ctl_s.clone(), "socket".to_string()];
    cli_ok(
        &root,
        &add_args("uns1", &ctl_s, &["--checkpoint-every", "300ms"], &cmd),
    );
    let pid = pid_of(&status(&root, "uns1"));
    let v = wait_status(&root, "uns1", "a reported checkpoint failure", |v| {
        v["last_checkpoint_error"].is_string()
    });
    assert!(
        v["last_checkpoint_error"]
            .as_str()
            .unwrap()
            .contains("netlink"),
        "the error names the object: {v:#}"
    );
    assert_eq!(v["state"], "running");
    assert_eq!(v["pid"], pid);
    assert_eq!(v["images"], 0);
    assert_eq!(v["restarts"], 0, "a failed checkpoint is not a failure");
    // Asked for one: refused with the reason, exit 1, still running.
    let o = cli(&root, &["workload", "checkpoint", "uns1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("keeps running"));
    let kinds = event_kinds(&root);
    assert!(kinds.contains(&"workload.checkpoint_failed".to_string()));
    // The workload checks that it was left intact (not frozen, its socket works).
    let verdict = first_verdict(&ctl);
    assert!(
        verdict.starts_with("PASS"),
        "{verdict}\nstatus: {:#}\n--- agent log ---\n{}",
        status(&root, "uns1"),
        env.agent.log()
    );
    cli_ok(&root, &["workload", "rm", "uns1"]);
}

fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string())
}

#[test]
fn a_python_server_under_the_agent_keeps_its_state_across_a_kill() {
    let env = Env::new(vec!["py1"]);
    let root = env.root.clone();
    let port = common::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/counter_server.py");
    let probe = format!("http://127.0.0.1:{port}/");
    cli_ok(
        &root,
        &[
            "workload",
            "add",
            "py1",
            "--checkpoint-every",
            "400ms",
            "--probe",
            &probe,
            "--probe-period",
            "1s",
            "--",
            "python3",
            &script.display().to_string(),
            &port.to_string(),
        ],
    );
    wait_for("the server to answer", || http_get(port).is_some());
    for _ in 0..20 {
        http_get(port).unwrap();
    }
    // An image taken after those requests (the probe's own requests count too).
    let served: u64 = http_get(port).unwrap().parse().unwrap();
    let v = status(&root, "py1");
    let images_before = v["last_checkpoint_unix_ms"].as_u64().unwrap_or(0);
    wait_status(&root, "py1", "an image after the requests", |v| {
        v["last_checkpoint_unix_ms"].as_u64().unwrap_or(0) > images_before
    });
    stasis_sys::sys::kill(pid_of(&v), libc::SIGKILL).unwrap();
    let v = wait_status(&root, "py1", "an image restart", |v| {
        v["restarts"] == 1 && v["state"] == "running"
    });
    assert_eq!(v["last_restart"], "image");
    let now: u64 = http_get(port).expect("answers again").parse().unwrap();
    assert!(
        now > served,
        "the count came back from the image ({now} after {served} served before the kill)"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        status(&root, "py1")["restarts"],
        1,
        "the probe is happy again"
    );
    cli_ok(&root, &["workload", "rm", "py1"]);
}

/// The README's demo, as `scripts/demo.sh` runs it.
#[test]
fn the_demo_passes() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let o = run_cmd(Command::new(stasis()).arg("demo").arg("--dir").arg(&dir));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("demo passed"),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("came back from image"), "{out}");
    assert!(out.contains("restarted cold"), "{out}");
    let ps = cli_ok(&dir, &["ps", "--json"]);
    assert_eq!(ps.trim(), "[]", "the demo leaves nothing running");
}

#[test]
fn a_silent_hooks_listener_does_not_stall_checkpoints() {
    let env = Env::new(vec!["sil1"]);
    let root = env.root.clone();
    let agent = &env.agent;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/silent_hooks.py");
    cli_ok(
        &root,
        &[
            "workload",
            "add",
            "sil1",
            "--checkpoint-every",
            "300ms",
            "--hooks-timeout",
            "200ms",
            "--",
            "python3",
            &script.display().to_string(),
        ],
    );
    // Each checkpoint goes on after the hook timeout.
    let v = wait_status(&root, "sil1", "three images", |v| {
        v["images"].as_u64() >= Some(3)
    });
    assert_eq!(v["last_checkpoint_error"], Value::Null);
    assert!(
        agent.log().contains("no reply from workload within 200ms"),
        "the silence is logged"
    );
    cli_ok(&root, &["workload", "rm", "sil1"]);
}

#[test]
fn boot_restarts_that_keep_failing_back_off_then_mark_the_workload_failed() {
    let env = Env::new(vec!["bad1"]);
    let root = env.root.clone();
    cli_ok(
        &root,
        &[
            "workload",
            "add",
            "bad1",
            "--failover-window",
            "30s",
            "--boot-restarts",
            "1",
            "--backoff",
            "200ms",
            "--backoff-restarts",
            "1",
            "--",
            "/bin/sh",
            "-c",
            "sleep 0.3; echo giving up; exit 3",
        ],
    );
    let v = wait_status(&root, "bad1", "the workload marked failed", |v| {
        v["state"] == "failed"
    });
    assert_eq!(v["pid"], Value::Null);
    assert_eq!(v["last_restart"], "boot", "never an image: none was taken");
    let restarts = v["restarts"].as_u64().unwrap();
    assert!((2..=3).contains(&restarts), "{v:#}");
    assert!(
        v["last_failure"].as_str().unwrap().contains("status 3"),
        "{v:#}"
    );
    let kinds = event_kinds(&root);
    assert!(
        kinds.contains(&"workload.marked_failed".to_string()),
        "{kinds:?}"
    );
    let bundles = ffdc(&root, "bad1");
    assert_eq!(bundles.len() as u64, restarts + 1, "one bundle per failure");
    assert_eq!(bundles[0]["failure"]["kind"]["kind"], "exit");
    assert_eq!(bundles[0]["failure"]["kind"]["code"], 3);
    let shown = ffdc_show(&root, bundles[0]["id"].as_str().unwrap());
    assert!(shown["output_tail"].as_str().unwrap().contains("giving up"));
    // A failed workload stays failed (no more restarts) until it is removed.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status(&root, "bad1")["restarts"], restarts);
    cli_ok(&root, &["workload", "rm", "bad1"]);
}

#[test]
fn a_corrupt_workload_record_is_skipped_and_reported() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("agent")).unwrap();
    {
        use stasis_cluster::Store;
        let store = stasis_cluster::EmbeddedStore::open(root.join("agent/state.redb")).unwrap();
        store.put("workloads/broken", b"{not json").unwrap();
    }
    let _agent = Agent::start(&root, &[]);
    let out = cli_ok(&root, &["events", "--json"]);
    let started: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(started["kind"], "agent.started");
    assert_eq!(
        started["payload"]["corrupt_records"],
        json!(["workloads/broken"])
    );
    // The agent works: the list is empty and a workload can be added.
    let ls: Value = serde_json::from_str(&cli_ok(&root, &["workload", "ls", "--json"])).unwrap();
    assert_eq!(ls, json!([]));
}

#[test]
fn an_image_that_does_not_restore_is_a_failure_and_the_workload_boots() {
    let env = Env::new(vec!["cor1"]);
    let root = env.root.clone();
    cli_ok(
        &root,
        &[
            "workload",
            "add",
            "cor1",
            "--",
            "/bin/sh",
            "-c",
            "while :; do sleep 0.2; done",
        ],
    );
    let out = cli_ok(&root, &["workload", "checkpoint", "cor1", "--json"]);
    let image = serde_json::from_str::<Value>(&out).unwrap()["image"]
        .as_str()
        .unwrap()
        .to_string();
    // Damage every page chunk of the only image (the manifest still opens): they are in the
    // workload's chunk store beside it.
    let own = root.join("images/cor1/images").join(&image).join("chunks");
    assert_eq!(
        std::fs::read_dir(&own).unwrap().count(),
        0,
        "no chunk of its own"
    );
    let chunks = root.join("images/cor1/images/chunks");
    let mut damaged = 0;
    for sub in std::fs::read_dir(&chunks).unwrap() {
        let sub = sub.unwrap().path();
        if !sub.is_dir() {
            continue; // store.json
        }
        for f in std::fs::read_dir(sub).unwrap() {
            let f = f.unwrap().path();
            let mut bytes = std::fs::read(&f).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&f, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    let pid0 = pid_of(&status(&root, "cor1"));
    stasis_sys::sys::kill(pid0, libc::SIGKILL).unwrap();
    let v = wait_status(&root, "cor1", "a boot restart", |v| {
        v["restarts"] == 1 && v["state"] == "running"
    });
    assert_eq!(v["last_restart"], "boot", "{v:#}");
    assert!(
        v["last_failure"]
            .as_str()
            .unwrap()
            .contains("is corrupt: checksum mismatch"),
        "the failure says why: {v:#}"
    );
    assert!(
        !v["last_failure"]
            .as_str()
            .unwrap()
            .contains("/proc/self/fd"),
        "it names the image directory, not a handle of ours: {v:#}"
    );
    // Nothing half-running: only the booted process is in the partition.
    let ps: Value = serde_json::from_str(&cli_ok(&root, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["pid"], v["pid"]);
    let bundles = ffdc(&root, "cor1");
    assert_eq!(bundles.len(), 2, "{bundles:#?}");
    assert_eq!(bundles[0]["failure"]["kind"]["kind"], "restore_failed");
    assert_eq!(bundles[0]["failure"]["image_in_use"], image.as_str());
    assert_eq!(bundles[1]["failure"]["kind"]["kind"], "signal");
    let kinds = event_kinds(&root);
    let want = [
        "workload.failed",
        "workload.ffdc",
        "workload.failed",
        "workload.ffdc",
        "workload.restarted",
    ];
    assert!(
        kinds.windows(want.len()).any(|w| w == want),
        "the kill, then the image that did not restore, then the boot: {kinds:?}"
    );
    cli_ok(&root, &["workload", "rm", "cor1"]);
}

/// Upgrade path: an image written before images were signed (its `signature.img` removed) is
/// signed by the agent at its next start, so a failure then restarts from it.
#[test]
fn the_agent_signs_unsigned_repository_images_at_start() {
    let mut env = Env::new(vec!["sig1"]);
    let root = env.root.clone();
    cli_ok(
        &root,
        &[
            "workload",
            "add",
            "sig1",
            "--failover-window",
            "30s",
            "--",
            "/bin/sh",
            "-c",
            "while :; do sleep 0.2; done",
        ],
    );
    let out = cli_ok(&root, &["workload", "checkpoint", "sig1", "--json"]);
    let image = serde_json::from_str::<Value>(&out).unwrap()["image"]
        .as_str()
        .unwrap()
        .to_string();
    let sig = root
        .join("images/sig1/images")
        .join(&image)
        .join("signature.img");
    assert!(sig.exists(), "the agent's images are signed");
    env.agent.stop();
    std::fs::remove_file(&sig).unwrap();
    env.agent = Agent::start(&root, &[]);
    assert!(sig.exists(), "signed at start\n{}", env.agent.log());
    let pid0 = pid_of(&status(&root, "sig1"));
    stasis_sys::sys::kill(pid0, libc::SIGKILL).unwrap();
    let v = wait_status(&root, "sig1", "an image restart", |v| {
        v["restarts"] == 1 && v["state"] == "running"
    });
    assert_eq!(v["last_restart"], "image", "{v:#}");
    assert_eq!(v["last_image"], image.as_str());
    cli_ok(&root, &["workload", "rm", "sig1"]);
}
