//! FFDC bundles on real files and real processes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use stasis_agent::ffdc::{self, Capture, Failure, FailureKind, FfdcError};

fn failure(workload: &str, at: u64, kind: FailureKind, pid: Option<i32>) -> Failure {
    Failure {
        workload: workload.to_string(),
        kind,
        at_unix_ms: at,
        pid,
        image_in_use: Some("img-42".to_string()),
        incarnation: 3,
    }
}

fn write_log(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

/// Reads `/proc/PID/task/*/children` until it lists a child, for up to 5 s.
fn wait_children(pid: i32) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut kids = Vec::new();
        if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
            for t in rd.flatten() {
                if let Ok(s) = fs::read_to_string(t.path().join("children")) {
                    kids.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
                }
            }
        }
        if !kids.is_empty() || Instant::now() > deadline {
            return kids;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the given pids and reaps the direct child.
struct Tree {
    child: Child,
    pids: Vec<i32>,
}

impl Drop for Tree {
    fn drop(&mut self) {
        for p in &self.pids {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(p.to_string())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn exited_workload_bundle_has_failure_and_output_tail_cut_at_line_start() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("ffdc");
    // A large log with lines of varying length: ~200 KiB.
    let mut log = String::new();
    for i in 0..5000 {
        log.push_str(&format!("line {i:05} {}\n", "x".repeat(i % 37)));
    }
    let out = write_log(tmp.path(), "output.log", &log);
    let agent_log = write_log(
        tmp.path(),
        "agent.log",
        "t=1 workload=web started\nt=2 workload=db started\nt=3 workload=web checkpointed\n\
         t=4 workload=db failed\nt=5 workload=web failed status=3\n",
    );
    let mut c = Capture::new(
        failure(
            "web",
            1_700_000_000_123,
            FailureKind::Exit { code: 3 },
            None,
        ),
        &out,
    );
    c.agent_log = Some(agent_log);
    c.agent_log_lines = 2;
    assert_eq!(c.output_bytes, 64 * 1024);

    let info = ffdc::write_bundle(&repo, &c).unwrap();
    assert_eq!(info.id, "1700000000123-0");
    assert_eq!(info.workload, "web");
    assert_eq!(info.path, repo.join("web").join("1700000000123-0"));

    let json: Failure =
        serde_json::from_slice(&fs::read(info.path.join("failure.json")).unwrap()).unwrap();
    assert_eq!(json, c.failure);

    let tail = fs::read_to_string(info.path.join("output.tail")).unwrap();
    assert!(
        tail.len() <= 64 * 1024 && tail.len() > 60 * 1024,
        "tail is {} bytes",
        tail.len()
    );
    assert!(log.ends_with(&tail), "tail must be a suffix of the log");
    assert!(
        tail.starts_with("line "),
        "tail must start at a line: {:?}",
        &tail[..20]
    );
    assert_eq!(log.as_bytes()[log.len() - tail.len() - 1], b'\n');
    assert!(tail.ends_with(&format!("line 04999 {}\n", "x".repeat(4999 % 37))));

    let agent = fs::read_to_string(info.path.join("agent.log.tail")).unwrap();
    assert_eq!(
        agent,
        "t=3 workload=web checkpointed\nt=5 workload=web failed status=3\n"
    );

    assert!(
        !info.path.join("proc").exists(),
        "no pid, no /proc snapshot"
    );
    let summary = fs::read_to_string(info.path.join("summary.txt")).unwrap();
    assert!(summary.contains("exited with status 3"), "{summary}");
    assert!(summary.contains("img-42"), "{summary}");
    assert!(summary.contains("truncated at a line start"), "{summary}");
    assert!(summary.contains("(truncated: 3 matched)"), "{summary}");
}

#[test]
fn output_tail_window_that_starts_exactly_at_a_line_keeps_that_line() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("ffdc");
    let log: String = (0..100).map(|i| format!("l{i:07}\n")).collect(); // 9 bytes per line
    let out = write_log(tmp.path(), "output.log", &log);
    let mut c = Capture::new(failure("w", 5, FailureKind::OomKill, None), &out);
    c.output_bytes = 90;
    let info = ffdc::write_bundle(&repo, &c).unwrap();
    let tail = fs::read_to_string(info.path.join("output.tail")).unwrap();
    let expect: String = (90..100).map(|i| format!("l{i:07}\n")).collect();
    assert_eq!(tail, expect);
}

#[test]
fn missing_output_log_and_gone_pid_are_noted_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("ffdc");
    // A pid that exited: spawn, wait, then capture with it.
    let mut ch = Command::new("true").spawn().unwrap();
    let pid = ch.id() as i32;
    ch.wait().unwrap();
    let c = Capture::new(
        failure("w", 9, FailureKind::Signal { signo: 9 }, Some(pid)),
        tmp.path().join("nope.log"),
    );
    let info = ffdc::write_bundle(&repo, &c).unwrap();
    assert!(!info.path.join("output.tail").exists());
    let summary = fs::read_to_string(info.path.join("summary.txt")).unwrap();
    assert!(summary.contains("cannot read"), "{summary}");
    assert!(summary.contains("killed by signal 9"), "{summary}");
}

#[test]
fn live_process_bundle_snapshots_the_process_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("ffdc");
    let out = write_log(tmp.path(), "output.log", "hello\n");
    let child = Command::new("sh")
        .args(["-c", "sleep 30 & sleep 30"])
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut tree = Tree {
        child,
        pids: Vec::new(),
    };
    // sh forks its two sleeps one after the other: wait for both (counting only the first
    // raced with the second fork, which the bundle then listed).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut kids = wait_children(pid);
    while kids.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        kids = wait_children(pid);
    }
    tree.pids.extend(&kids);
    assert!(!kids.is_empty(), "sh has no child yet");

    let c = Capture::new(
        failure(
            "svc",
            1000,
            FailureKind::ProbeFailed {
                probe: "exec".into(),
                detail: "timed out".into(),
            },
            Some(pid),
        ),
        &out,
    );
    let info = ffdc::write_bundle(&repo, &c).unwrap();
    let proc_dir = info.path.join("proc");
    for p in std::iter::once(pid).chain(kids.iter().copied()) {
        let d = proc_dir.join(p.to_string());
        assert!(d.is_dir(), "no snapshot for {p}");
        for f in [
            "status", "stat", "cmdline", "maps", "limits", "cgroup", "fds",
        ] {
            assert!(d.join(f).is_file(), "{p}: no {f}");
        }
        for f in ["wchan", "stack"] {
            assert!(
                d.join(f).is_file() || d.join(format!("{f}.error")).is_file(),
                "{p}: neither {f} nor {f}.error"
            );
        }
        assert!(
            !d.join("environ").exists(),
            "environ must never be captured"
        );
        let status = fs::read_to_string(d.join("status")).unwrap();
        assert!(status.contains(&format!("Pid:\t{p}\n")), "{status}");
        let task = d.join("task").join(p.to_string());
        assert!(task.join("status").is_file(), "{p}: no task snapshot");
        let fds = fs::read_to_string(d.join("fds")).unwrap();
        assert!(
            fds.lines().any(|l| l.starts_with("0 -> ")),
            "{p}: fds: {fds}"
        );
        let cmd = fs::read_to_string(d.join("cmdline")).unwrap();
        assert!(cmd.contains("sleep") || cmd.contains("sh"), "{p}: {cmd}");
    }
    let summary = fs::read_to_string(info.path.join("summary.txt")).unwrap();
    assert!(
        summary.contains("health probe exec failed: timed out"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("processes ({})", 1 + kids.len())),
        "{summary}"
    );
    drop(tree);
}

#[test]
fn process_cap_is_enforced_and_noted() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("ffdc");
    let out = write_log(tmp.path(), "output.log", "");
    let child = Command::new("sh")
        .args(["-c", "sleep 30 & sleep 30 & sleep 30 & wait"])
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut tree = Tree {
        child,
        pids: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while wait_children(pid).len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    tree.pids = wait_children(pid);
    assert_eq!(tree.pids.len(), 3);
    let mut c = Capture::new(failure("capped", 1, FailureKind::Hang, Some(pid)), &out);
    c.max_processes = 2;
    let info = ffdc::write_bundle(&repo, &c).unwrap();
    assert_eq!(fs::read_dir(info.path.join("proc")).unwrap().count(), 2);
    let summary = fs::read_to_string(info.path.join("summary.txt")).unwrap();
    assert!(
        summary.contains("process tree truncated: 2 more processes beyond the cap of 2"),
        "{summary}"
    );
}

#[test]
fn list_orders_newest_first_filters_and_ignores_tmp_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("ffdc");
    assert!(
        ffdc::list(&repo, None).unwrap().is_empty(),
        "missing dir lists nothing"
    );
    let out = write_log(tmp.path(), "output.log", "x\n");
    for (w, at) in [("a", 10), ("b", 30), ("a", 20), ("a", 20), ("b", 5)] {
        ffdc::write_bundle(
            &repo,
            &Capture::new(failure(w, at, FailureKind::Hang, None), &out),
        )
        .unwrap();
    }
    // A crash mid-write leaves a temp dir behind (even with a failure.json in it).
    let crashed = repo.join("a").join(".tmp-99-0");
    fs::create_dir_all(&crashed).unwrap();
    fs::write(crashed.join("failure.json"), b"{").unwrap();
    // And a stray file.
    fs::write(repo.join("a").join("README"), b"").unwrap();

    let all = ffdc::list(&repo, None).unwrap();
    let ids: Vec<String> = all
        .iter()
        .map(|b| format!("{}/{}", b.workload, b.id))
        .collect();
    assert_eq!(ids, ["b/30-0", "a/20-1", "a/20-0", "a/10-0", "b/5-0"]);
    let a: Vec<String> = ffdc::list(&repo, Some("a"))
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(a, ["20-1", "20-0", "10-0"]);
    assert!(ffdc::list(&repo, Some("nobody")).unwrap().is_empty());
    assert!(matches!(
        ffdc::list(&repo, Some("../x")),
        Err(FfdcError::InvalidWorkload(_))
    ));

    // A later bundle for the same millisecond skips past the stale temp dir's id.
    let info = ffdc::write_bundle(
        &repo,
        &Capture::new(failure("a", 99, FailureKind::Hang, None), &out),
    )
    .unwrap();
    assert_eq!(info.id, "99-1");
}

#[test]
fn show_returns_failure_files_and_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("ffdc");
    let out = write_log(tmp.path(), "output.log", "one\ntwo\n");
    let f = failure(
        "web",
        77,
        FailureKind::RestoreFailed {
            detail: "bad page".into(),
        },
        None,
    );
    let info = ffdc::write_bundle(&repo, &Capture::new(f.clone(), &out)).unwrap();

    let b = ffdc::show(&repo, "77-0").unwrap();
    assert_eq!(b.info, info);
    assert_eq!(b.info.failure, f);
    let names: Vec<&str> = b.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["failure.json", "output.tail", "summary.txt"]);
    assert_eq!(b.files[1].size, 8);
    assert_eq!(b.output_tail.as_deref(), Some("one\ntwo\n"));
    assert_eq!(b.agent_log_tail, None);
    assert!(b.summary.contains("restore failed: bad page"));
    assert_eq!(b.read("output.tail").unwrap(), b"one\ntwo\n");
    assert!(matches!(b.read("../x"), Err(FfdcError::InvalidPath(_))));
    assert!(matches!(
        b.read("/etc/passwd"),
        Err(FfdcError::InvalidPath(_))
    ));

    // The same id for another workload makes the bare id ambiguous.
    ffdc::write_bundle(
        &repo,
        &Capture::new(failure("db", 77, FailureKind::Hang, None), &out),
    )
    .unwrap();
    match ffdc::show(&repo, "77-0") {
        Err(FfdcError::Ambiguous { candidates, .. }) => {
            let mut c = candidates;
            c.sort();
            assert_eq!(c, ["db/77-0", "web/77-0"]);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    assert_eq!(ffdc::show(&repo, "db/77-0").unwrap().info.workload, "db");
    assert!(matches!(
        ffdc::show(&repo, "78-0"),
        Err(FfdcError::NotFound { .. })
    ));
    assert!(matches!(
        ffdc::show(&repo, "web/78-0"),
        Err(FfdcError::NotFound { .. })
    ));
    assert!(matches!(
        ffdc::show(&repo, "garbage"),
        Err(FfdcError::NotFound { .. })
    ));
}

#[test]
fn prune_keeps_the_newest_n_and_never_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("ffdc");
    let out = write_log(tmp.path(), "output.log", "x\n");
    for at in 1..=6 {
        ffdc::write_bundle(
            &repo,
            &Capture::new(failure("w", at, FailureKind::Hang, None), &out),
        )
        .unwrap();
    }
    ffdc::write_bundle(
        &repo,
        &Capture::new(failure("other", 1, FailureKind::Hang, None), &out),
    )
    .unwrap();

    let removed = ffdc::prune(&repo, "w", 4).unwrap();
    assert_eq!(removed, ["2-0", "1-0"]);
    let ids: Vec<String> = ffdc::list(&repo, Some("w"))
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, ["6-0", "5-0", "4-0", "3-0"]);
    assert!(ffdc::prune(&repo, "w", 10).unwrap().is_empty());

    // keep = 0 still keeps the newest.
    assert_eq!(ffdc::prune(&repo, "w", 0).unwrap(), ["5-0", "4-0", "3-0"]);
    let ids: Vec<String> = ffdc::list(&repo, Some("w"))
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, ["6-0"]);
    // Other workloads are untouched; pruning an unknown workload is a no-op.
    assert_eq!(ffdc::list(&repo, Some("other")).unwrap().len(), 1);
    assert!(ffdc::prune(&repo, "ghost", 1).unwrap().is_empty());
}

#[test]
fn concurrent_writers_get_distinct_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("ffdc");
    let out = write_log(tmp.path(), "output.log", "x\n");
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let repo = repo.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                let mut f = failure("busy", 4242, FailureKind::Exit { code: i }, None);
                f.incarnation = i as u32;
                ffdc::write_bundle(&repo, &Capture::new(f, out)).unwrap()
            })
        })
        .collect();
    let mut ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap().id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    let listed = ffdc::list(&repo, Some("busy")).unwrap();
    assert_eq!(listed.len(), 10);
    let mut incarnations: Vec<u32> = listed.iter().map(|b| b.failure.incarnation).collect();
    incarnations.sort_unstable();
    assert_eq!(incarnations, (0..10).collect::<Vec<_>>());
    // No temp dirs left behind.
    let leftovers = fs::read_dir(repo.join("busy"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn invalid_workload_names_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let out = write_log(tmp.path(), "output.log", "");
    for bad in ["", ".", "..", "a/b", ".hidden"] {
        let r = ffdc::write_bundle(
            tmp.path(),
            &Capture::new(failure(bad, 1, FailureKind::Hang, None), &out),
        );
        assert!(matches!(r, Err(FfdcError::InvalidWorkload(_))), "{bad:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The output tail is a suffix of the log, starts at a line start (unless no line start fits
    /// in the window) and respects the byte budget.
    #[test]
    fn output_tail_is_a_bounded_line_aligned_suffix(
        lines in proptest::collection::vec("[a-z]{0,40}", 0..80),
        trailing_newline in any::<bool>(),
        budget in 1usize..400,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = lines.join("\n");
        if trailing_newline && !log.is_empty() {
            log.push('\n');
        }
        let out = write_log(tmp.path(), "output.log", &log);
        let mut c = Capture::new(failure("p", 1, FailureKind::Hang, None), &out);
        c.output_bytes = budget;
        let info = ffdc::write_bundle(&tmp.path().join("ffdc"), &c).unwrap();
        let tail = fs::read_to_string(info.path.join("output.tail")).unwrap();
        prop_assert!(tail.len() <= budget);
        prop_assert!(log.ends_with(&tail));
        if log.len() <= budget {
            prop_assert_eq!(&tail, &log);
        } else {
            let cut = log.len() - tail.len();
            let window = &log[log.len() - budget..];
            if log.as_bytes()[log.len() - budget - 1] == b'\n' || window.contains('\n') {
                // Line-aligned: the byte before the tail is a newline, and nothing longer fits.
                prop_assert_eq!(log.as_bytes()[cut - 1], b'\n');
                let first_nl = window.find('\n');
                if log.as_bytes()[log.len() - budget - 1] == b'\n' {
                    prop_assert_eq!(tail.len(), budget);
                } else {
                    prop_assert_eq!(tail.len(), budget - first_nl.unwrap() - 1);
                }
            } else {
                prop_assert_eq!(tail.len(), budget);
            }
        }
    }
}
