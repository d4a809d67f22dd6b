//! The helper protocol (`stasis_partition::helper`): every message round-trips through its
//! framing; a partition checkpoint through `stasis __helper` reports progress and a typed
//! result, a refusal comes back as a typed error naming the object (the workload runs on), and
//! a cancelled checkpoint (Cancel sent, or the channel closed) leaves the workload running and
//! intact.
#![cfg(target_os = "linux")]

mod common;

use common::partition::*;
use common::{serial, stasis, workload_bin};
use stasis_engine::{Cause, CheckpointStats};
use stasis_partition::helper::{
    self, CheckpointRequest, Figures, HelperError, Message, MonitorRequest, Progress, ProtoError,
    Request, RestoreSource,
};
use std::io::Cursor;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// unit: framing and every message type

fn every_request() -> Vec<Request> {
    vec![
        Request::Checkpoint(CheckpointRequest {
            name: "ht-a".into(),
            dir: PathBuf::from("/tmp/ht-img"),
            leave_running: true,
            force: false,
            compress: true,
            workers: 3,
            copy_limit: Some(1 << 20),
        }),
        Request::Monitor(MonitorRequest {
            name: "ht-b".into(),
            restore: None,
        }),
        Request::Monitor(MonitorRequest {
            name: "ht-c".into(),
            restore: Some(RestoreSource {
                dir: PathBuf::from("/tmp/ht-img2"),
                workers: 2,
                insecure_unsigned: true,
            }),
        }),
        Request::Cancel,
    ]
}

fn every_error() -> Vec<HelperError> {
    vec![
        HelperError::WorkloadGone {
            message: "partition 'x' is not running".into(),
        },
        HelperError::Refused {
            pid: 42,
            what: "fd 3 (socket:[7]) is a vsock socket".into(),
            message: "cannot checkpoint pid 42: fd 3".into(),
        },
        HelperError::ImageInvalid {
            message: "bad manifest".into(),
        },
        HelperError::PidInUse {
            message: "pid 7 is in use".into(),
        },
        HelperError::Cancelled {
            message: "interrupted".into(),
        },
        HelperError::Internal {
            message: "fork: EAGAIN".into(),
        },
    ]
}

fn every_message() -> Vec<Message> {
    let mut v = vec![
        Message::Progress(Progress {
            stage: "writing memory pages".into(),
            bytes_done: 12345,
            bytes_total: 99999,
        }),
        Message::Checkpointed(Figures {
            dir: PathBuf::from("/tmp/ht-img"),
            pid: 4321,
            stats: CheckpointStats {
                processes: 2,
                threads: 5,
                memory_bytes: 1 << 30,
                stored_bytes: 1 << 29,
                chunks: 512,
                frozen_secs: 0.25,
                memory_secs: 0.5,
                total_secs: 1.5,
                pids_still_busy: vec![17, 18],
            },
        }),
        Message::Started { pid: 99 },
    ];
    v.extend(every_error().into_iter().map(Message::Failed));
    v
}

#[test]
fn every_message_round_trips() {
    let mut buf = Vec::new();
    for r in every_request() {
        helper::send(&mut buf, &r).unwrap();
    }
    for m in every_message() {
        helper::send(&mut buf, &m).unwrap();
    }
    let mut rd = Cursor::new(buf);
    for r in every_request() {
        assert_eq!(helper::recv::<Request>(&mut rd).unwrap(), Some(r));
    }
    for m in every_message() {
        assert_eq!(helper::recv::<Message>(&mut rd).unwrap(), Some(m));
    }
    // A clean end between frames.
    assert!(helper::recv::<Message>(&mut rd).unwrap().is_none());
}

#[test]
fn errors_keep_their_kind() {
    let kinds: Vec<Cause> = every_error().iter().map(HelperError::cause).collect();
    assert_eq!(
        kinds,
        vec![
            Cause::Other,
            Cause::Refused,
            Cause::BadImage,
            Cause::PidInUse,
            Cause::Interrupted,
            Cause::Other
        ]
    );
    // The text is the message, whole.
    assert_eq!(
        every_error()[1].to_string(),
        "cannot checkpoint pid 42: fd 3"
    );
    let e = stasis_engine::CheckpointError::Unsupported {
        pid: 5,
        what: "fd 4 (anon_inode:[userfaultfd]) is userfaultfd".into(),
    };
    match HelperError::from_checkpoint(&e) {
        HelperError::Refused { pid, what, message } => {
            assert_eq!(pid, 5);
            assert!(what.contains("userfaultfd"), "{what}");
            assert!(message.contains("pid 5"), "{message}");
        }
        other => panic!("a refusal became {other:?}"),
    }
    assert!(matches!(
        HelperError::from_checkpoint(&stasis_engine::CheckpointError::NoSuchProcess(3)),
        HelperError::WorkloadGone { .. }
    ));
}

#[test]
fn broken_frames_are_refused() {
    let mut buf = Vec::new();
    helper::send(&mut buf, &Message::Started { pid: 1 }).unwrap();
    // Truncated in the body and in the length.
    for cut in [buf.len() - 1, 2] {
        let mut rd = Cursor::new(buf[..cut].to_vec());
        assert!(matches!(
            helper::recv::<Message>(&mut rd),
            Err(ProtoError::Truncated)
        ));
    }
    // Too long.
    let mut rd = Cursor::new(u32::MAX.to_le_bytes().to_vec());
    assert!(matches!(
        helper::recv::<Message>(&mut rd),
        Err(ProtoError::TooLong(_))
    ));
    // Not a message.
    let mut bad = 4u32.to_le_bytes().to_vec();
    bad.extend_from_slice(b"nope");
    assert!(matches!(
        helper::recv::<Message>(&mut Cursor::new(bad)),
        Err(ProtoError::Decode(_))
    ));
    // A reply cut short is the helper's death, told by the caller.
    let mut seen = 0;
    let mut one = Vec::new();
    helper::send(&mut one, &Message::Progress(progress("x"))).unwrap();
    let m = helper::recv_reply(&mut Cursor::new(one), &mut |_| seen += 1, |e| {
        HelperError::internal(format!("died {}", e.is_some()))
    });
    assert_eq!(seen, 1);
    assert_eq!(m, Message::Failed(HelperError::internal("died false")));
}

fn progress(stage: &str) -> Progress {
    Progress {
        stage: stage.into(),
        bytes_done: 0,
        bytes_total: 0,
    }
}

// ---------------------------------------------------------------------------
// integration: `stasis __helper` against real partitions

/// `stasis --root ROOT __helper` on one end of a socket pair (the test keeps the other), with
/// `failpoints` in its environment.
fn helper_process(root: &Path, failpoints: Option<&str>) -> (std::process::Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut cmd = std::process::Command::new(stasis());
    cmd.arg("--root")
        .arg(root)
        .arg("__helper")
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .stdout(std::process::Stdio::null())
        .process_group(0);
    match failpoints {
        Some(f) => cmd.env("STASIS_FAILPOINTS", f),
        None => cmd.env_remove("STASIS_FAILPOINTS"),
    };
    (cmd.spawn().expect("start stasis __helper"), ours)
}

fn checkpoint_request(name: &str, dir: &Path, leave_running: bool) -> Request {
    Request::Checkpoint(CheckpointRequest {
        name: name.into(),
        dir: dir.to_path_buf(),
        leave_running,
        force: false,
        compress: false,
        workers: 2,
        copy_limit: None,
    })
}

/// Read the reply up to its final message (bounded): the progress seen, the final message.
fn reply(chan: &mut UnixStream, limit: Duration) -> (Vec<Progress>, Message) {
    chan.set_read_timeout(Some(limit)).unwrap();
    let mut seen = Vec::new();
    let m = helper::recv_reply(chan, &mut |p| seen.push(p.clone()), |e| {
        HelperError::internal(format!("no final message: {e:?}"))
    });
    (seen, m)
}

/// Start workload `wl ctl args…` as partition `name`; its host pid once it is ready.
fn start(parts: &Parts, name: &str, wl: &str, ctl: &Path, args: &[&str]) -> i32 {
    let bin = workload_bin(wl).display().to_string();
    let c = ctl.display().to_string();
    let mut cmd = vec![bin.as_str(), c.as_str()];
    cmd.extend_from_slice(args);
    let pid = parts.run(name, &[], &cmd).expect("stasis run");
    assert!(
        wait_file(&ctl.join("ready"), Duration::from_secs(10)).is_some(),
        "{wl} never got ready: {}",
        parts.logs(name)
    );
    pid
}

/// Ask the workload to verify itself (it ends afterwards); its verdict.
fn verdict(ctl: &Path) -> String {
    let _ = std::fs::remove_file(ctl.join("result"));
    std::fs::write(ctl.join("verify"), b"1").unwrap();
    wait_file(&ctl.join("result"), Duration::from_secs(20)).unwrap_or_else(|| "no result".into())
}

#[test]
fn checkpoint_through_the_helper_reports_progress_and_figures() {
    let _g = serial();
    let parts = Parts::new("ht-prog");
    let ctl = tempfile::tempdir().unwrap();
    let pid = start(&parts, "ht-prog", "mem_anon", ctl.path(), &[]);
    let (_t, img) = image("ht-prog");
    let t0 = Instant::now();
    let (mut child, mut chan) = helper_process(parts.path(), None);
    helper::send(&mut chan, &checkpoint_request("ht-prog", &img, true)).unwrap();
    let (seen, m) = reply(&mut chan, T_CHECKPOINT);
    let st = child.wait().unwrap();
    eprintln!(
        "checkpoint through the helper: {:.3} s, {} progress messages",
        t0.elapsed().as_secs_f64(),
        seen.len()
    );
    let f = match m {
        Message::Checkpointed(f) => f,
        other => panic!(
            "expected Checkpointed, got {other:?}\n{}",
            parts.logs("ht-prog")
        ),
    };
    assert!(st.success(), "the helper exits 0 after a success: {st}");
    assert_eq!(f.pid, pid, "the figures name the partition's first process");
    assert_eq!(f.dir, img);
    assert_eq!(f.stats.processes, 1, "{:?}", f.stats);
    assert!(f.stats.memory_bytes > 1 << 20, "{:?}", f.stats);
    assert!(f.stats.frozen_secs > 0.0, "{:?}", f.stats);
    assert!(img.join("manifest").exists() || img.read_dir().unwrap().count() > 2);
    assert!(!seen.is_empty(), "at least one progress message");
    // Progress goes forward: page bytes never decrease, stages are the engine's.
    for w in seen.windows(2) {
        assert!(w[1].bytes_done >= w[0].bytes_done, "{seen:?}");
    }
    let stages: std::collections::BTreeSet<&str> = seen.iter().map(|p| p.stage.as_str()).collect();
    assert!(
        seen.last().unwrap().bytes_done >= f.stats.memory_bytes.min(1 << 20),
        "the last progress counts the pages read: {seen:?}"
    );
    assert!(
        stages.iter().all(|s| !s.is_empty()),
        "named stages: {stages:?}"
    );
    // The partition runs on (leave-running) and its state is intact.
    assert_eq!(parts.running_pid("ht-prog"), Some(pid));
    assert_eq!(verdict(ctl.path()), "PASS");
}

#[test]
fn a_refusal_is_a_typed_error_naming_the_object() {
    let _g = serial();
    let parts = Parts::new("ht-ref");
    let ctl = tempfile::tempdir().unwrap();
    let pid = start(
        &parts,
        "ht-ref",
        "unsupported",
        ctl.path(),
        &["userfaultfd"],
    );
    let fd = read_trim(&ctl.path().join("fd")).expect("the workload names its fd");
    let (_t, img) = image("ht-ref");
    let (mut child, mut chan) = helper_process(parts.path(), None);
    helper::send(&mut chan, &checkpoint_request("ht-ref", &img, true)).unwrap();
    let (_seen, m) = reply(&mut chan, T_CHECKPOINT);
    let st = child.wait().unwrap();
    match &m {
        Message::Failed(HelperError::Refused {
            pid: p,
            what,
            message,
        }) => {
            // Pids are recorded as the partition sees them: its first process is 1.
            assert!(*p == 1 || *p == pid, "refused pid {p}");
            assert!(what.contains(&format!("fd {fd}")), "names the fd: {what}");
            assert!(what.contains("userfaultfd"), "names the kind: {what}");
            assert!(message.contains(what.as_str()), "{message}");
        }
        other => panic!("expected a typed refusal, got {other:?}"),
    }
    assert_eq!(st.code(), Some(1), "the helper's exit code says it failed");
    // The tree kept running, untouched.
    assert_eq!(parts.running_pid("ht-ref"), Some(pid));
    assert_eq!(verdict(ctl.path()), "PASS");
    assert!(!img.join("manifest").exists(), "no image was committed");
}

/// A checkpoint paused (failpoint) with the tree frozen is cancelled: by a Cancel message,
/// then by closing the channel. Each time the workload runs on; a later checkpoint still works
/// and the workload finds its state intact.
#[test]
fn a_cancelled_checkpoint_leaves_the_workload_running() {
    let _g = serial();
    let parts = Parts::new("ht-can");
    let ctl = tempfile::tempdir().unwrap();
    let pid = start(&parts, "ht-can", "mem_anon", ctl.path(), &[]);
    for by_close in [false, true] {
        let (_t, img) = image("ht-can");
        let (mut child, mut chan) = helper_process(parts.path(), Some("memory=pause"));
        helper::send(&mut chan, &checkpoint_request("ht-can", &img, false)).unwrap();
        // Wait until the engine is inside the checkpoint (tree seized), then cancel.
        chan.set_read_timeout(Some(T_CHECKPOINT)).unwrap();
        let deadline = Instant::now() + T_CHECKPOINT;
        loop {
            match helper::recv::<Message>(&mut chan) {
                Ok(Some(Message::Progress(p))) if p.stage != "starting" => break,
                Ok(Some(Message::Progress(_))) => {}
                other => panic!("before cancelling: {other:?}"),
            }
            assert!(Instant::now() < deadline, "the checkpoint never started");
        }
        let t_cancel = Instant::now();
        if by_close {
            chan.shutdown(std::net::Shutdown::Write).unwrap();
        } else {
            helper::send(&mut chan, &Request::Cancel).unwrap();
        }
        let (_seen, m) = reply(&mut chan, T_CHECKPOINT);
        let st = child.wait().unwrap();
        eprintln!(
            "cancel ({}) answered in {:.3} s",
            if by_close { "closed" } else { "Cancel" },
            t_cancel.elapsed().as_secs_f64()
        );
        assert!(
            matches!(m, Message::Failed(HelperError::Cancelled { .. })),
            "a cancelled checkpoint says so: {m:?}"
        );
        assert_eq!(st.code(), Some(1));
        assert!(!img.join("manifest").exists(), "no image was committed");
        // Kill mode was asked, yet the partition runs on, unfrozen, with its state.
        assert_eq!(parts.running_pid("ht-can"), Some(pid));
        assert_eq!(parts.state("ht-can").as_deref(), Some("running"));
    }
    // A checkpoint afterwards works, and the workload (which ends once it has verified) finds
    // its state intact.
    let (_t, img) = image("ht-can");
    let (mut child, mut chan) = helper_process(parts.path(), None);
    helper::send(&mut chan, &checkpoint_request("ht-can", &img, true)).unwrap();
    let (_seen, m) = reply(&mut chan, T_CHECKPOINT);
    child.wait().unwrap();
    assert!(matches!(m, Message::Checkpointed(_)), "{m:?}");
    assert_eq!(verdict(ctl.path()), "PASS");
}

/// The monitor is started through the same protocol: `stasis run` is a monitor request.
#[test]
fn a_monitor_request_starts_a_partition() {
    let _g = serial();
    let parts = Parts::new("ht-mon");
    let ctl = tempfile::tempdir().unwrap();
    // A partition record must exist: `run` creates it (and its monitor through the helper).
    let pid = start(&parts, "ht-mon", "counter", ctl.path(), &[]);
    assert!(pid > 1);
    let out = parts.exec(&["stop", "ht-mon"], T_QUICK);
    assert!(out.ok(), "{}", out.show());
    // A monitor request for a partition that is not there: a typed error, no partition.
    let (mut child, mut chan) = helper_process(parts.path(), None);
    helper::send(
        &mut chan,
        &Request::Monitor(MonitorRequest {
            name: "ht-none".into(),
            restore: None,
        }),
    )
    .unwrap();
    let (_seen, m) = reply(&mut chan, T_RUN);
    child.wait().unwrap();
    match m {
        Message::Failed(HelperError::Internal { message }) => {
            assert!(message.contains("ht-none"), "{message}")
        }
        other => panic!("expected a failure naming the partition, got {other:?}"),
    }
}
