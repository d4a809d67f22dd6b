//! Supervision of one node's workloads: consistency images, failure detection, HA restarts.
//!
//! Each workload runs as a partition of the same name. [`Supervisor::tick`] is called
//! periodically (the agent's loop; tests call it directly) and, for every workload:
//!
//! 1. notices a failure: the partition ended without being asked (exit, signal), its cgroup
//!    counted a new OOM kill, or its health probe failed `threshold` times in a row;
//! 2. on a failure applies the [`policy`](crate::policy): restore the latest consistency
//!    image, or run the boot command again (after a back-off), or mark the workload failed;
//!    images older than a boot restart are discarded (they hold the state that failed);
//! 3. takes a consistency image when one is due: `stasis checkpoint --name --leave-running`
//!    into a pending directory of the repository, committed only once complete; older images
//!    beyond the policy's count are deleted only after that (a state is never deleted before
//!    its successor is durable). A failed checkpoint leaves the workload running and is
//!    reported.
//!
//! Checkpoints run as a child `stasis` process: the partition checkpointer forks, which needs
//! a single-threaded process, and the agent is not one.

use crate::policy::{self, Decision, History, Policy, RestartKind};
use crate::probe::{self, Probe, Target, Tracker};
use crate::repo::{LocalRepo, Repository};
use serde::{Deserialize, Serialize};
use stasis_partition::ops;
use stasis_partition::state::{Root, Spec, State};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A health probe with its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// What to check.
    pub probe: Probe,
    /// How often.
    pub period: Duration,
    /// Failures in a row that make a failure.
    pub threshold: u32,
    /// Time each check gets.
    pub timeout: Duration,
}

/// A workload as the operator describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Name (also its partition's).
    pub name: String,
    /// The partition: boot command, namespaces, limits.
    pub partition: Spec,
    /// How often to take a consistency image (None: never).
    pub checkpoint_every: Option<Duration>,
    /// Consistency images kept (at least 1).
    pub images_kept: usize,
    /// Health probe.
    pub probe: Option<ProbeSpec>,
    /// Restart policy.
    pub policy: Policy,
}

/// Lifecycle state of a workload (the documented set shown by `workload status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WState {
    /// Being started for the first time.
    Starting,
    /// Running.
    Running,
    /// Failed; a restart is under way or waiting for its back-off.
    Restarting,
    /// Given up after repeated failed boots.
    Failed,
}

/// What `workload status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WStatus {
    /// State.
    pub state: WState,
    /// Host pid of the first process while running.
    pub pid: Option<i32>,
    /// Restarts of any kind.
    pub restarts: u32,
    /// How the last restart was done.
    pub last_restart: Option<RestartKind>,
    /// Image used by the last image restart.
    pub last_image: Option<String>,
    /// Consistency images held.
    pub images: usize,
    /// Last failure, in words.
    pub last_failure: Option<String>,
    /// Last checkpoint problem, in words.
    pub last_checkpoint_error: Option<String>,
}

/// Something that happened, for the event log and FFDC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Happening {
    /// A workload was added and started.
    Started {
        /// Workload.
        workload: String,
        /// Host pid.
        pid: i32,
    },
    /// A consistency image was committed.
    Checkpointed {
        /// Workload.
        workload: String,
        /// Image id.
        image: String,
        /// Seconds the workload was frozen.
        frozen_secs: f64,
    },
    /// A consistency image could not be taken (the workload runs on).
    CheckpointFailed {
        /// Workload.
        workload: String,
        /// Why.
        error: String,
    },
    /// A failure was detected.
    Failed {
        /// Workload.
        workload: String,
        /// What.
        reason: String,
        /// Host pid of the first process, if it still exists.
        pid: Option<i32>,
    },
    /// Restarted from an image or its boot command.
    Restarted {
        /// Workload.
        workload: String,
        /// How.
        from: RestartKind,
        /// Image, for an image restart.
        image: Option<String>,
        /// New host pid.
        pid: i32,
    },
    /// Given up.
    MarkedFailed {
        /// Workload.
        workload: String,
    },
}

struct Slot {
    spec: WorkloadSpec,
    status: WStatus,
    history: History,
    next_checkpoint: Option<Instant>,
    next_probe: Option<Instant>,
    tracker: Option<Tracker>,
    oom_seen: u64,
    /// A restart waiting for its back-off.
    pending_boot: Option<Instant>,
}

/// Supervises workloads on this node.
pub struct Supervisor {
    root: Root,
    repo: Arc<LocalRepo>,
    exe: PathBuf,
    workers: usize,
    slots: BTreeMap<String, Slot>,
    epoch: Instant,
}

/// Errors adding a workload.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Already supervised.
    #[error("workload '{0}' exists: remove it first")]
    Exists(String),
    /// Not supervised.
    #[error("no workload named '{0}'")]
    NotFound(String),
    /// Starting its partition failed.
    #[error("starting workload '{name}'")]
    Start {
        /// Workload.
        name: String,
        /// Cause.
        #[source]
        source: ops::OpsError,
    },
}

impl Supervisor {
    /// A supervisor keeping partitions under `root`, images in `repo`, and running
    /// checkpoints with the `stasis` binary `exe`.
    pub fn new(root: Root, repo: Arc<LocalRepo>, exe: PathBuf) -> Supervisor {
        Supervisor {
            root,
            repo,
            exe,
            workers: 2,
            slots: BTreeMap::new(),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Add a workload and start it from its boot command.
    pub fn add(&mut self, spec: WorkloadSpec) -> Result<Vec<Happening>, SupervisorError> {
        if self.slots.contains_key(&spec.name) {
            return Err(SupervisorError::Exists(spec.name));
        }
        let pid = self.boot(&spec)?;
        let now = Instant::now();
        let slot = Slot {
            status: WStatus {
                state: WState::Running,
                pid: Some(pid),
                restarts: 0,
                last_restart: None,
                last_image: None,
                images: 0,
                last_failure: None,
                last_checkpoint_error: None,
            },
            history: History {
                started_ms: self.now_ms(),
                ..Default::default()
            },
            next_checkpoint: spec.checkpoint_every.map(|d| now + d),
            next_probe: spec.probe.as_ref().map(|p| now + p.period),
            tracker: spec.probe.as_ref().map(|p| Tracker::new(p.threshold)),
            oom_seen: 0,
            pending_boot: None,
            spec,
        };
        let name = slot.spec.name.clone();
        self.slots.insert(name.clone(), slot);
        Ok(vec![Happening::Started {
            workload: name,
            pid,
        }])
    }

    fn boot(&self, spec: &WorkloadSpec) -> Result<i32, SupervisorError> {
        run_fresh(&self.root, spec).map_err(|source| SupervisorError::Start {
            name: spec.name.clone(),
            source,
        })
    }

    /// Status of a workload.
    pub fn status(&self, name: &str) -> Option<WStatus> {
        self.slots.get(name).map(|s| s.status.clone())
    }

    /// Names of every workload.
    pub fn names(&self) -> Vec<String> {
        self.slots.keys().cloned().collect()
    }

    /// Take a consistency image of `name` now.
    pub fn checkpoint_now(&mut self, name: &str) -> Result<Happening, SupervisorError> {
        let repo = self.repo.clone();
        let exe = self.exe.clone();
        let root = self.root.clone();
        let workers = self.workers;
        let slot = self
            .slots
            .get_mut(name)
            .ok_or_else(|| SupervisorError::NotFound(name.to_string()))?;
        Ok(take_image(&repo, &exe, &root, workers, slot))
    }

    /// One round of supervision; returns what happened.
    pub fn tick(&mut self) -> Vec<Happening> {
        let mut out = Vec::new();
        let names = self.names();
        for name in names {
            let now_ms = self.now_ms();
            let repo = self.repo.clone();
            let root = self.root.clone();
            let exe = self.exe.clone();
            let workers = self.workers;
            let Some(slot) = self.slots.get_mut(&name) else {
                continue;
            };
            if slot.status.state == WState::Failed {
                continue;
            }
            if let Some(at) = slot.pending_boot {
                if Instant::now() >= at {
                    slot.pending_boot = None;
                    out.extend(boot_restart(&root, slot));
                }
                continue;
            }
            if let Some(reason) = failure(&root, slot) {
                let pid = slot
                    .status
                    .pid
                    .filter(|p| stasis_partition::state::alive(*p));
                out.push(Happening::Failed {
                    workload: name.clone(),
                    reason: reason.clone(),
                    pid,
                });
                slot.status.last_failure = Some(reason);
                // End what is left of it before restarting.
                if pid.is_some() {
                    let _ = ops::stop(&root, &name, Duration::from_millis(0));
                }
                slot.status.pid = None;
                let latest = repo.latest(&name).ok().flatten();
                let (d, h) =
                    policy::decide(&slot.spec.policy, &slot.history, now_ms, latest.is_some());
                slot.history = h;
                match d {
                    Decision::ImageRestart => {
                        let img = latest.expect("decided with an image");
                        slot.status.state = WState::Restarting;
                        match ops::restore(&root, &img.dir, Some(&name), workers) {
                            Ok(pid) => {
                                slot.status.state = WState::Running;
                                slot.status.pid = Some(pid);
                                slot.status.restarts += 1;
                                slot.status.last_restart = Some(RestartKind::Image);
                                slot.status.last_image = Some(img.id.to_string());
                                reset_probe(slot);
                                out.push(Happening::Restarted {
                                    workload: name.clone(),
                                    from: RestartKind::Image,
                                    image: Some(img.id.to_string()),
                                    pid,
                                });
                            }
                            Err(e) => {
                                // The image itself does not come back: that is a failure
                                // within the window; the next tick boots.
                                slot.status.last_failure =
                                    Some(format!("restore of image {} failed: {e}", img.id));
                                slot.history.last_restart = Some((RestartKind::Image, now_ms));
                            }
                        }
                    }
                    Decision::BootRestart {
                        delay,
                        discard_images,
                    } => {
                        if discard_images {
                            let _ = repo.remove_all(&name);
                            slot.status.images = 0;
                        }
                        slot.status.state = WState::Restarting;
                        if delay.is_zero() {
                            out.extend(boot_restart(&root, slot));
                        } else {
                            slot.pending_boot = Some(Instant::now() + delay);
                        }
                    }
                    Decision::MarkFailed => {
                        slot.status.state = WState::Failed;
                        out.push(Happening::MarkedFailed {
                            workload: name.clone(),
                        });
                    }
                }
                continue;
            }
            if slot.next_checkpoint.is_some_and(|t| Instant::now() >= t) {
                slot.next_checkpoint = slot.spec.checkpoint_every.map(|d| Instant::now() + d);
                out.push(take_image(&repo, &exe, &root, workers, slot));
            }
        }
        out
    }
}

fn reset_probe(slot: &mut Slot) {
    slot.tracker = slot.spec.probe.as_ref().map(|p| Tracker::new(p.threshold));
    slot.next_probe = slot.spec.probe.as_ref().map(|p| Instant::now() + p.period);
    slot.oom_seen = 0;
}

/// Start the workload's partition from its boot command; a boot (re)start is a fresh
/// partition, so an earlier record of that name goes first.
fn run_fresh(root: &Root, spec: &WorkloadSpec) -> Result<i32, ops::OpsError> {
    if root.load(&spec.name).is_ok() {
        let _ = ops::rm(root, &spec.name, true);
    }
    ops::run(
        root,
        ops::RunOptions {
            name: spec.name.clone(),
            spec: spec.partition.clone(),
        },
    )
}

fn boot_restart(root: &Root, slot: &mut Slot) -> Vec<Happening> {
    let name = slot.spec.name.clone();
    match run_fresh(root, &slot.spec) {
        Ok(pid) => {
            slot.status.state = WState::Running;
            slot.status.pid = Some(pid);
            slot.status.restarts += 1;
            slot.status.last_restart = Some(RestartKind::Boot);
            slot.status.last_image = None;
            reset_probe(slot);
            vec![Happening::Restarted {
                workload: name,
                from: RestartKind::Boot,
                image: None,
                pid,
            }]
        }
        Err(e) => {
            slot.status.last_failure = Some(format!("boot restart failed: {e}"));
            vec![Happening::Failed {
                workload: name,
                reason: format!("boot restart failed: {e}"),
                pid: None,
            }]
        }
    }
}

/// Has the workload failed? Returns why.
fn failure(root: &Root, slot: &mut Slot) -> Option<String> {
    let name = &slot.spec.name;
    let rec = match root.load(name) {
        Ok(r) => r,
        Err(e) => return Some(format!("its partition record is gone: {e}")),
    };
    if !ops::is_running(&rec) {
        return Some(match (&rec.exit, rec.state) {
            (_, State::Stopped) => "stopped from outside the agent".into(),
            (Some(x), _) => match (x.code, x.signal) {
                (Some(c), _) => format!("exited with code {c}"),
                (_, Some(s)) => format!("killed by signal {s}"),
                _ => "ended".into(),
            },
            (None, _) => "ended".into(),
        });
    }
    if let Ok(st) = ops::stats(root, name) {
        if st.usage.oom_kills > slot.oom_seen {
            let n = st.usage.oom_kills;
            if slot.oom_seen != 0 || n > rec.carried.oom_kills {
                slot.oom_seen = n;
                return Some(format!("the OOM killer killed a process ({n} so far)"));
            }
            slot.oom_seen = n;
        }
    }
    if let (Some(p), Some(t), Some(at)) = (&slot.spec.probe, slot.tracker.as_mut(), slot.next_probe)
    {
        if Instant::now() >= at {
            slot.next_probe = Some(Instant::now() + p.period);
            let target = Target {
                pid: rec.pid.unwrap_or(0),
                own_net: rec.spec.net != stasis_partition::state::NetMode::Host,
            };
            let r = probe::check(&p.probe, target, p.timeout);
            if let probe::Health::Failed = t.record(r.is_ok()) {
                return Some(format!(
                    "health probe failed {} times in a row: {}",
                    p.threshold,
                    r.err().map(|e| e.to_string()).unwrap_or_default()
                ));
            }
        }
    }
    None
}

/// Take one consistency image through a child `stasis checkpoint --leave-running`.
fn take_image(
    repo: &Arc<LocalRepo>,
    exe: &PathBuf,
    root: &Root,
    workers: usize,
    slot: &mut Slot,
) -> Happening {
    let name = slot.spec.name.clone();
    let fail = |slot: &mut Slot, error: String| {
        slot.status.last_checkpoint_error = Some(error.clone());
        Happening::CheckpointFailed {
            workload: slot.spec.name.clone(),
            error,
        }
    };
    let pending = match repo.begin(&name) {
        Ok(p) => p,
        Err(e) => return fail(slot, format!("preparing the image directory: {e}")),
    };
    let out = std::process::Command::new(exe)
        .arg("--root")
        .arg(&root.path)
        .args([
            "checkpoint",
            "--name",
            &name,
            "--leave-running",
            "--force",
            "--json",
        ])
        .arg("--dir")
        .arg(&pending.dir)
        .arg("--workers")
        .arg(workers.to_string())
        .stdin(std::process::Stdio::null())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            let _ = repo.abort(pending);
            return fail(slot, String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        Err(e) => {
            let _ = repo.abort(pending);
            return fail(slot, format!("running {}: {e}", exe.display()));
        }
    };
    let frozen_secs = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["frozen_secs"].as_f64())
        .unwrap_or(0.0);
    let info = match repo.commit(pending) {
        Ok(i) => i,
        Err(e) => return fail(slot, format!("committing the image: {e}")),
    };
    // Only now that the new image is durable may older ones go.
    let _ = repo.retain(&name, slot.spec.images_kept.max(1));
    slot.status.images = repo.list(&name).map(|l| l.len()).unwrap_or(0);
    slot.status.last_checkpoint_error = None;
    Happening::Checkpointed {
        workload: name,
        image: info.id.to_string(),
        frozen_secs,
    }
}
