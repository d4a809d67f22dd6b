//! The agent's supervisor driven directly (no daemon yet): a stateful workload killed comes
//! back from its latest consistency image with its state; killed again within the failover
//! window it is restarted from its boot command; a failing health probe triggers the policy.
#![cfg(target_os = "linux")]

mod common;

use common::{serial, stasis};
use stasis_agent::policy::{Policy, RestartKind};
use stasis_agent::probe::Probe;
use stasis_agent::repo::{LocalRepo, Repository};
use stasis_agent::supervisor::{Happening, ProbeSpec, Supervisor, WState, WorkloadSpec};
use stasis_partition::state::{NetMode, Root, Spec};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn supervisor(root: &Root, repo: Arc<LocalRepo>) -> Supervisor {
    // Partition monitors are the stasis binary, not this test program.
    std::env::set_var("STASIS_BIN", stasis());
    Supervisor::new(root.clone(), repo, stasis())
}

fn spec(name: &str, cmd: &str, probe: Option<ProbeSpec>) -> WorkloadSpec {
    WorkloadSpec {
        name: name.parse().unwrap(),
        partition: Spec {
            cmd: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
            net: NetMode::Host,
            veth: None,
            rootfs: None,
            hostname: name.into(),
            cwd: Some("/".into()),
            env: vec![],
            limits: Default::default(),
        }
        .into(),
        checkpoint_every: Some(Duration::from_millis(300)),
        images_kept: 2,
        probe,
        policy: Policy {
            failover_window: Duration::from_secs(20),
            ..Policy::default()
        },
        hooks_timeout: Duration::from_secs(2),
    }
}

fn read_num(p: &Path) -> u64 {
    common::read_counter(p)
}

/// Tick until `pred` holds on the happenings (bounded).
fn tick_until(s: &mut Supervisor, what: &str, pred: impl Fn(&Happening) -> bool) -> Vec<Happening> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    loop {
        let h = s.tick();
        let hit = h.iter().any(&pred);
        all.extend(h);
        if hit {
            return all;
        }
        assert!(Instant::now() < deadline, "waiting for {what}; saw {all:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Cleanup(Root, Vec<&'static str>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.1 {
            let _ = stasis_partition::ops::rm(&self.0, n, true);
        }
    }
}

#[test]
fn killed_workload_comes_back_from_its_image_then_boots() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = Root::new(tmp.path().join("state"));
    let _c = Cleanup(root.clone(), vec!["ha1"]);
    let repo = Arc::new(LocalRepo::new(tmp.path().join("repo")).unwrap());
    let out = tmp.path().join("count");
    // The count lives only in the shell's memory; the file just shows it.
    let cmd = format!(
        "i=0; while :; do i=$((i+1)); echo $i > {}; sleep 0.05; done",
        out.display()
    );
    let mut s = supervisor(&root, repo.clone());
    s.add(spec("ha1", &cmd, None)).unwrap();
    tick_until(&mut s, "a consistency image", |h| {
        matches!(h, Happening::Checkpointed { .. })
    });
    tick_until(&mut s, "a second image", |h| {
        matches!(h, Happening::Checkpointed { .. })
    });
    let st = s.status("ha1").unwrap();
    assert_eq!(st.state, WState::Running);
    assert!(st.images >= 1 && st.images <= 2, "{st:?}");
    let at_image = read_num(&out);
    assert!(at_image > 3);

    // Kill it: it must come back from its image, counting on from there (not from 0).
    std::thread::sleep(Duration::from_millis(300));
    let pid = st.pid.unwrap();
    stasis_sys::sys::kill(pid, libc::SIGKILL).unwrap();
    let h = tick_until(&mut s, "an image restart", |h| {
        matches!(
            h,
            Happening::Restarted {
                from: RestartKind::Image,
                ..
            }
        )
    });
    assert!(
        h.iter().any(|h| matches!(h, Happening::Failed { .. })),
        "{h:?}"
    );
    let st = s.status("ha1").unwrap();
    assert_eq!(st.last_restart, Some(RestartKind::Image));
    assert_eq!(st.restarts, 1);
    assert!(st.last_image.is_some());
    std::thread::sleep(Duration::from_millis(400));
    let after = read_num(&out);
    assert!(
        after >= at_image,
        "restored count {after} < {at_image} at the image"
    );

    // Killed again within the failover window: the image is suspect, boot restart.
    stasis_sys::sys::kill(st.pid.unwrap(), libc::SIGKILL).unwrap();
    tick_until(&mut s, "a boot restart", |h| {
        matches!(
            h,
            Happening::Restarted {
                from: RestartKind::Boot,
                ..
            }
        )
    });
    let st = s.status("ha1").unwrap();
    assert_eq!(st.last_restart, Some(RestartKind::Boot));
    assert_eq!(st.restarts, 2);
    // Images of the state that failed are gone.
    assert!(repo.list("ha1").unwrap().is_empty() || st.images <= 1);
    std::thread::sleep(Duration::from_millis(300));
    let fresh = read_num(&out);
    assert!(
        fresh < after,
        "a boot restart starts counting again ({fresh} vs {after})"
    );
}

#[test]
fn failing_probe_triggers_the_policy() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = Root::new(tmp.path().join("state"));
    let _c = Cleanup(root.clone(), vec!["ha2"]);
    let repo = Arc::new(LocalRepo::new(tmp.path().join("repo")).unwrap());
    let flag = tmp.path().join("healthy");
    std::fs::write(&flag, b"1").unwrap();
    let probe = ProbeSpec {
        probe: format!("exec:/bin/cat {}", flag.display())
            .parse::<Probe>()
            .unwrap(),
        period: Duration::from_millis(100),
        threshold: 2,
        timeout: Duration::from_secs(2),
    };
    let mut s = supervisor(&root, repo);
    let mut sp = spec("ha2", "while :; do sleep 1; done", Some(probe));
    sp.checkpoint_every = None;
    s.add(sp).unwrap();
    for _ in 0..5 {
        assert!(s.tick().is_empty());
        std::thread::sleep(Duration::from_millis(110));
    }
    std::fs::remove_file(&flag).unwrap();
    let h = tick_until(&mut s, "a restart after a failed probe", |h| {
        matches!(h, Happening::Restarted { .. })
    });
    let reason = h
        .iter()
        .find_map(|h| match h {
            Happening::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("failed: 2 checks in a row"), "{reason}");
    // No image yet: a boot restart.
    assert_eq!(
        s.status("ha2").unwrap().last_restart,
        Some(RestartKind::Boot)
    );
}
