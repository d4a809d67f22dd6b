//! What a new user meets in the first hour (issue 12): help texts that list only the options
//! that apply, waiting verbs that say what they wait for, plain logs when stderr is not a
//! terminal, a failed checkpoint that cleans up after itself, messages without placeholder
//! values, and the verbs `logs`, `check` and `--version`.
#![cfg(target_os = "linux")]

mod common;

use common::{run_cmd, serial, stasis};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn cli(root: &Path, args: &[&str]) -> Output {
    run_cmd(
        Command::new(stasis())
            .arg("--root")
            .arg(root)
            .args(args)
            .env_remove("STASIS_AGENT")
            .env_remove("STASIS_FAILPOINTS")
            .stdin(Stdio::null()),
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `sleep` the test owns (killed and reaped on drop).
struct Sleeper(std::process::Child);
impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(common::spawn_owned(
            Command::new("sleep").arg("1000").stdin(Stdio::null()),
        ))
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}
impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CLIENT_OPTIONS: &[&str] = &[
    "--agent ",
    "--agent-wait",
    "--token-file",
    "--agent-cert",
    "--agent-fingerprint",
];

#[test]
fn agent_client_options_appear_only_on_the_verbs_that_talk_to_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    for verb in [
        &["checkpoint", "--help"][..],
        &["restore", "--help"],
        &["run", "--help"],
        &["ps", "--help"],
        &["inspect", "--help"],
        &["--help"],
    ] {
        let o = cli(tmp.path(), verb);
        assert!(o.status.success(), "{verb:?}: {}", text(&o.stderr));
        let help = text(&o.stdout);
        for opt in CLIENT_OPTIONS {
            assert!(!help.contains(opt), "{verb:?} lists {opt}:\n{help}");
        }
        assert!(help.contains("--root"), "{verb:?} lacks --root:\n{help}");
    }
    for verb in [
        &["workload", "--help"][..],
        &["workload", "ls", "--help"],
        &["hibernate", "--help"],
        &["resume", "--help"],
        &["ffdc", "ls", "--help"],
        &["events", "--help"],
    ] {
        let o = cli(tmp.path(), verb);
        assert!(o.status.success(), "{verb:?}: {}", text(&o.stderr));
        let help = text(&o.stdout);
        for opt in CLIENT_OPTIONS {
            assert!(help.contains(opt), "{verb:?} lacks {opt}:\n{help}");
        }
    }
    // Before or after the subcommand, and STASIS_AGENT still works.
    for args in [
        &["workload", "--agent-wait", "0s", "ls"][..],
        &["workload", "ls", "--agent-wait", "0s"],
    ] {
        let o = cli(tmp.path(), args);
        assert_eq!(o.status.code(), Some(8), "{args:?}: {}", text(&o.stderr));
    }
    let o = run_cmd(
        Command::new(stasis())
            .arg("--root")
            .arg(tmp.path())
            .args(["events", "--agent-wait", "0s"])
            .env("STASIS_AGENT", "http://127.0.0.1:1"),
    );
    assert_eq!(o.status.code(), Some(8), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("http://127.0.0.1:1"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn agent_verbs_say_what_they_wait_for() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let o = cli(tmp.path(), &["workload", "ls", "--agent-wait", "700ms"]);
    assert!(t0.elapsed() >= Duration::from_millis(600));
    assert_eq!(o.status.code(), Some(8));
    let err = text(&o.stderr);
    let sock = tmp.path().join("api/agent.sock");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("waiting for the agent at unix:")
            && first.contains(&sock.display().to_string())
            && first.contains("up to 700ms"),
        "first line: {first:?}\n{err}"
    );
    assert!(err.contains("no agent answers"), "{err}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let s = Sleeper::start();
    let o = cli(
        tmp.path(),
        &[
            "-v",
            "checkpoint",
            "--pid",
            &s.pid().to_string(),
            "--dir",
            tmp.path().join("img").to_str().unwrap(),
            "--leave-running",
        ],
    );
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("INFO"), "no log lines at -v: {err}");
    assert!(!err.contains('\u{1b}'), "ANSI codes on a pipe: {err:?}");
}

fn failing_checkpoint(root: &Path, pid: i32, dir: &Path) -> Output {
    run_cmd(
        Command::new(stasis())
            .arg("--root")
            .arg(root)
            .args(["checkpoint", "--pid", &pid.to_string(), "--dir"])
            .arg(dir)
            .env("STASIS_FAILPOINTS", "write")
            .stdin(Stdio::null()),
    )
}

#[test]
fn a_failed_checkpoint_removes_the_directory_it_created_and_only_that() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let s = Sleeper::start();
    // A directory the checkpoint creates (and its missing parent): the directory goes, the
    // parent it created on the way stays (it may be shared).
    let dir = tmp.path().join("parent/new");
    let o = failing_checkpoint(tmp.path(), s.pid(), &dir);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        !dir.exists(),
        "the failed checkpoint left {}",
        dir.display()
    );
    // One "failed", no placeholder pid.
    assert_eq!(err.matches("failed").count(), 1, "{err}");
    assert!(!err.contains("pid 0"), "{err}");

    // A directory that existed, with another tool's file: both stay, no image file is left.
    let dir = tmp.path().join("existing");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{}").unwrap();
    let o = failing_checkpoint(tmp.path(), s.pid(), &dir);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(dir.join("config.json").exists());
    assert!(!dir.join("manifest.img").exists());

    // The tree runs on, and a good checkpoint into the first path works.
    assert!(Path::new(&format!("/proc/{}", s.pid())).exists());
    let dir = tmp.path().join("parent/new");
    let o = cli(
        tmp.path(),
        &[
            "checkpoint",
            "--pid",
            &s.pid().to_string(),
            "--dir",
            dir.to_str().unwrap(),
            "--leave-running",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(dir.join("manifest.img").exists());
}

/// `stasis rm -f NAME` when dropped.
/// The same for a partition checkpoint (the partition layer creates the directory for its
/// checkpointer): a failed one leaves no directory behind, so trying again needs no --force.
#[test]
fn a_failed_partition_checkpoint_removes_the_directory_it_created() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let o = cli(
        &root,
        &["run", "--name", "fcp1", "--", "/bin/sleep", "1000"],
    );
    let _p = Partition(&root, "fcp1");
    assert!(o.status.success(), "run: {}", text(&o.stderr));
    let dir = tmp.path().join("img");
    for _ in 0..2 {
        let o = run_cmd(
            Command::new(stasis())
                .arg("--root")
                .arg(&root)
                .args(["checkpoint", "--name", "fcp1", "--leave-running", "--dir"])
                .arg(&dir)
                .env("STASIS_FAILPOINTS", "write")
                .stdin(Stdio::null()),
        );
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("failpoint"), "{err}");
        assert!(
            !dir.exists(),
            "the failed checkpoint left {}",
            dir.display()
        );
    }
    let o = cli(
        &root,
        &[
            "checkpoint",
            "--name",
            "fcp1",
            "--leave-running",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(dir.join("manifest.img").exists());
}

struct Partition<'a>(&'a Path, &'a str);
impl Drop for Partition<'_> {
    fn drop(&mut self) {
        let _ = cli(self.0, &["rm", "-f", self.1]);
    }
}

#[test]
fn logs_prints_a_partitions_output_and_follows_it() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let o = cli(
        root,
        &[
            "run",
            "--name",
            "logs1",
            "--",
            "/bin/sh",
            "-c",
            "echo first line; echo to stderr >&2; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done",
        ],
    );
    let _p = Partition(root, "logs1");
    assert!(o.status.success(), "run: {}", text(&o.stderr));
    // Its output arrives through the monitor: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let o = cli(root, &["logs", "logs1"]);
        assert!(o.status.success(), "logs: {}", text(&o.stderr));
        let out = text(&o.stdout);
        if out.contains("to stderr") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(out.contains("first line\n"), "{out:?}");
    assert!(out.contains("to stderr\n"), "{out:?}");

    // --follow: what was there, then what comes, and it ends when the partition goes.
    // (spawn_owned: the test harness's reaper leaves it to us)
    let mut f = common::spawn_owned(
        Command::new(stasis())
            .arg("--root")
            .arg(root)
            .args(["logs", "logs1", "--follow"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = f.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout).lines() {
            if tx.send(l.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("first line");
    assert_eq!(first, "first line");
    // New output keeps coming: a tick later than any in the log when --follow started.
    let last_before = out.matches("tick ").count();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("logs --follow printed no new output");
        if let Some(n) = l.strip_prefix("tick ") {
            if n.parse::<usize>().unwrap() > last_before + 3 {
                break;
            }
        }
    }
    let o = cli(root, &["rm", "-f", "logs1"]);
    assert!(o.status.success(), "rm: {}", text(&o.stderr));
    let t0 = Instant::now();
    loop {
        if let Some(st) = f.try_wait().unwrap() {
            assert!(st.success(), "logs --follow ended with {st}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "logs --follow did not end when the partition was removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // No such partition: exit 7, named.
    let o = cli(root, &["logs", "nope"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("'nope'"));
}

#[test]
fn check_probes_the_kernel_and_says_what_needs_each_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let o = cli(tmp.path(), &["check"]);
    let out = text(&o.stdout);
    // These machines have everything (docs/kernel-requirements.md): a missing feature fails.
    assert!(o.status.success(), "{out}\n{}", text(&o.stderr));
    for name in [
        "root",
        "kernel",
        "ptrace",
        "clone3 set_tid",
        "pidfd_getfd",
        "vdso",
        "cgroup freeze",
        "seccomp suspend",
        "TCP_REPAIR",
        "nft",
        "ip",
        "PAGEMAP_SCAN",
        "userfaultfd WP_ASYNC",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"));
        assert!(
            line.contains(" ok ") && line.contains("needed by"),
            "{line}"
        );
    }
    let o = cli(tmp.path(), &["check", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let items = v["items"].as_array().unwrap();
    assert!(items.len() >= 12);
    assert!(items
        .iter()
        .all(|i| i["ok"] == true && i["needed_by"].is_string()));

    // Without the programs it uses, the optional ones say missing, and it still passes.
    let o = run_cmd(
        Command::new(stasis())
            .args(["check"])
            .env("PATH", "/nonexistent")
            .stdin(Stdio::null()),
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}");
    let nft = out.lines().find(|l| l.starts_with("nft ")).unwrap();
    assert!(nft.contains("missing") && nft.contains("nftables"), "{nft}");
}

#[test]
fn version_names_the_commit() {
    let o = run_cmd(Command::new(stasis()).arg("--version"));
    let v = text(&o.stdout);
    assert!(o.status.success());
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_string());
    match head {
        // Built from this checkout: the commit is the one the binary was built from, which
        // is HEAD unless a commit happened since the build.
        Some(h) => assert!(
            v.starts_with(&format!("stasis {} (commit ", env!("CARGO_PKG_VERSION")))
                && !v.contains("unknown"),
            "{v} (HEAD {h})"
        ),
        None => assert!(v.contains("(commit unknown)"), "{v}"),
    }
}

#[test]
fn the_agent_logs_plain_text_to_a_pipe_and_to_its_file() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let agent = common::spawn_owned(
        Command::new(stasis())
            .arg("--root")
            .arg(tmp.path())
            .args(["agent", "--listen", "off"])
            .env("STASIS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let sock = tmp.path().join("api/agent.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = cli(tmp.path(), &["workload", "ls"]);
    common::send_signal(agent.id() as i32, libc::SIGTERM);
    let out = agent.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(err.contains("INFO"), "{err}");
    assert!(!err.contains('\u{1b}'), "ANSI codes on a pipe: {err:?}");
    let file = std::fs::read_to_string(tmp.path().join("agent/agent.log")).unwrap();
    assert!(
        file.contains("INFO") && !file.contains('\u{1b}'),
        "{file:?}"
    );
}
