//! Supervision of one node's workloads: consistency images, failure detection, HA restarts,
//! FFDC, application hooks, hibernation.
//!
//! Each workload runs as a partition of the same name. [`Supervisor::tick`] is called
//! periodically (the agent's loop; tests may call it directly) and, for every workload:
//!
//! 1. notices a failure: the partition ended without being asked (exit, signal), its cgroup
//!    counted a new OOM kill, or its health probe failed `threshold` times in a row;
//! 2. writes a first-failure data capture bundle ([`crate::ffdc`]) while what is left of the
//!    workload still exists (a hung process or a failed probe leaves it running: its /proc is
//!    captured), then ends what is left;
//! 3. applies the [`policy`](crate::policy): restore the latest consistency image, or run the
//!    boot command again (after a back-off), or mark the workload failed; images older than a
//!    boot restart are discarded (they hold the state that failed);
//! 4. takes a consistency image when one is due: the workload is told first
//!    (`PRE-CHECKPOINT`, [`stasis_hooks`], bounded by the spec's `hooks_timeout`), then
//!    a checkpoint helper (`--leave-running`) writes into a pending directory of the
//!    repository, committed only once complete; older images beyond the policy's count are
//!    deleted only after that (a state is never deleted before its successor is durable). A
//!    failed checkpoint leaves the workload running and is reported.
//!
//! After any restore (image restart, resume) the workload is told `POST-RESTORE`.
//! Hooks: the agent puts `STASIS_HOOKS_SOCKET` in the workload's environment (a path in its
//! own filesystem view) and connects to it through `/proc/<pid>/root`, so nothing of the
//! agent's crosses the partition boundary.
//!
//! Checkpoints run in a child `stasis __helper` process spoken to through the typed
//! [`helper`] protocol (request, progress, a typed result or error, cancellation): the
//! partition checkpointer forks, which needs a single-threaded process, and the agent is not
//! one. A periodic image runs in the
//! background: the tick starts it and polls it on the next ticks, supervising the other
//! workloads meanwhile (the workload being checkpointed waits for its image: its checkpointer
//! holds the partition); a verb on that workload (checkpoint, hibernate, rm) first waits for
//! it. Partition monitors started by the supervisor are its children: they are reaped on every
//! tick.
//!
//! The supervisor's whole state per workload ([`Persisted`]) can be exported and adopted again
//! by a later agent; adoption finds partitions that kept running while no agent was there.

use crate::ffdc::{self, Capture, Failure, FailureKind};
use crate::policy::{self, Decision, History, Policy, RestartKind};
use crate::probe::{self, Probe, Target, Tracker};
use crate::repo::{ImageInfo, Repository};
use crate::spec::PartitionSpec;
use serde::{Deserialize, Serialize};
use stasis_hooks::Event as HookEvent;
use stasis_image::name::Name;
use stasis_image::safefs::{self, Dir, PRIVATE_DIR};
use stasis_partition::helper::{self, HelperError, Message};
use stasis_partition::ops;
use stasis_partition::state::{NetMode, Root, State};
use stasis_sys::wait::{wait_exit, Block, Who};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Restarts remembered in a workload's status.
pub const RESTART_LOG: usize = 50;
/// FFDC bundles kept per workload.
pub const FFDC_KEPT: usize = 20;
/// The environment variable naming the hooks socket.
pub const HOOKS_ENV: &str = stasis_hooks::ENV_SOCKET;
/// How long a monitor gets to record how its partition's first process ended.
const MONITOR_GRACE: Duration = Duration::from_secs(2);

/// A health probe with its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// What to check.
    pub probe: Probe,
    /// How often.
    #[serde(default = "default_period", with = "crate::duration::human")]
    pub period: Duration,
    /// Failures in a row that make a failure.
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// Time each check gets.
    #[serde(default = "default_timeout", with = "crate::duration::human")]
    pub timeout: Duration,
}

fn default_period() -> Duration {
    Duration::from_secs(2)
}
fn default_threshold() -> u32 {
    3
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_images_kept() -> usize {
    3
}
fn default_hooks_timeout() -> Duration {
    stasis_hooks::DEFAULT_TIMEOUT
}

/// A workload as the operator describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Name (also its partition's).
    pub name: Name,
    /// The partition: boot command, namespaces, limits (no host-side network settings: those
    /// are stasis's to choose).
    pub partition: PartitionSpec,
    /// How often to take a consistency image (None: never).
    #[serde(default, with = "crate::duration::human::option")]
    pub checkpoint_every: Option<Duration>,
    /// Consistency images kept (at least 1).
    #[serde(default = "default_images_kept")]
    pub images_kept: usize,
    /// Health probe.
    #[serde(default)]
    pub probe: Option<ProbeSpec>,
    /// Restart policy.
    #[serde(default)]
    pub policy: Policy,
    /// Time the workload gets to answer a hook (PRE-CHECKPOINT, POST-RESTORE).
    #[serde(default = "default_hooks_timeout", with = "crate::duration::human")]
    pub hooks_timeout: Duration,
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
    /// Checkpointed to the repository with its resources released (`hibernate`).
    Hibernated,
    /// Given up after repeated failed boots.
    Failed,
}

impl std::fmt::Display for WState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WState::Starting => "starting",
            WState::Running => "running",
            WState::Restarting => "restarting",
            WState::Hibernated => "hibernated",
            WState::Failed => "failed",
        })
    }
}

/// One restart, for the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartEntry {
    /// When (unix ms).
    pub at_unix_ms: u64,
    /// How.
    pub from: RestartKind,
    /// The image, for an image restart.
    pub image: Option<String>,
    /// The failure that caused it.
    pub reason: String,
    /// New host pid.
    pub pid: i32,
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
    /// Image used by the last image restart or resume.
    pub last_image: Option<String>,
    /// Consistency images held.
    pub images: usize,
    /// Last failure, in words.
    pub last_failure: Option<String>,
    /// Last checkpoint problem, in words.
    pub last_checkpoint_error: Option<String>,
    /// When the last consistency image was committed (unix ms).
    #[serde(default)]
    pub last_checkpoint_unix_ms: Option<u64>,
    /// How long the last consistency image froze the workload.
    #[serde(default)]
    pub last_frozen_secs: Option<f64>,
    /// The last restarts, oldest first.
    #[serde(default)]
    pub restart_log: Vec<RestartEntry>,
}

impl WStatus {
    fn new(state: WState) -> WStatus {
        WStatus {
            state,
            pid: None,
            restarts: 0,
            last_restart: None,
            last_image: None,
            images: 0,
            last_failure: None,
            last_checkpoint_error: None,
            last_checkpoint_unix_ms: None,
            last_frozen_secs: None,
            restart_log: Vec::new(),
        }
    }
}

/// A workload as the API shows it: its name, status and spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadView {
    /// Name.
    pub name: String,
    /// Status.
    #[serde(flatten)]
    pub status: WStatus,
    /// Spec.
    pub spec: WorkloadSpec,
}

/// Everything the supervisor knows about a workload, as kept in the agent's store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// Spec.
    pub spec: WorkloadSpec,
    /// Status.
    pub status: WStatus,
    /// Policy memory.
    pub history: History,
    /// A boot restart waiting for its back-off (unix ms).
    pub pending_boot_unix_ms: Option<u64>,
}

/// Something that happened, for the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Happening {
    /// A workload was added.
    Added {
        /// Workload.
        workload: String,
    },
    /// A workload was started from its boot command for the first time.
    Started {
        /// Workload.
        workload: String,
        /// Host pid.
        pid: i32,
    },
    /// A running partition was taken over by a (re)started agent.
    Adopted {
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
    /// A first-failure data capture bundle was written.
    Ffdc {
        /// Workload.
        workload: String,
        /// Bundle id.
        bundle: String,
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
    /// Checkpointed to the repository, resources released.
    Hibernated {
        /// Workload.
        workload: String,
        /// The image it will resume from.
        image: String,
    },
    /// Back from hibernation.
    Resumed {
        /// Workload.
        workload: String,
        /// Image.
        image: String,
        /// Host pid.
        pid: i32,
    },
    /// Removed from supervision.
    Removed {
        /// Workload.
        workload: String,
    },
}

impl Happening {
    /// The event kind in the log: `workload.<event>`.
    pub fn kind(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        format!("workload.{}", v["event"].as_str().unwrap_or("unknown"))
    }

    /// Is this a failure detected by the supervisor?
    pub fn is_failure(&self) -> bool {
        matches!(self, Happening::Failed { .. })
    }
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
    /// When the first process was first seen gone while its record said running.
    gone_since: Option<Instant>,
    /// A periodic image under way (the supervisor goes on with the other workloads).
    inflight: Option<Inflight>,
}

impl Slot {
    fn new(spec: WorkloadSpec, status: WStatus, history: History) -> Slot {
        let mut s = Slot {
            spec,
            status,
            history,
            next_checkpoint: None,
            next_probe: None,
            tracker: None,
            oom_seen: 0,
            pending_boot: None,
            gone_since: None,
            inflight: None,
        };
        s.reset_schedules();
        s
    }

    fn reset_schedules(&mut self) {
        let now = Instant::now();
        self.tracker = self.spec.probe.as_ref().map(|p| Tracker::new(p.threshold));
        self.next_probe = self.spec.probe.as_ref().map(|p| now + p.period);
        self.next_checkpoint = self.spec.checkpoint_every.map(|d| now + d);
        self.oom_seen = 0;
    }
}

/// Supervises workloads on this node.
pub struct Supervisor {
    root: Root,
    repo: Arc<dyn Repository>,
    exe: PathBuf,
    ffdc_dir: PathBuf,
    agent_log: Option<PathBuf>,
    workers: usize,
    slots: BTreeMap<String, Slot>,
    /// Monitors we started (our children until they end).
    children: BTreeSet<i32>,
    /// Outcomes of periodic images a verb had to wait for, reported by the next tick.
    backlog: Vec<Happening>,
}

/// Errors of the supervisor's verbs.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Already supervised.
    #[error("workload '{0}' exists: remove it first (`stasis workload rm {0}`)")]
    Exists(String),
    /// Not supervised.
    #[error("no workload named '{0}' (see `stasis workload ls`)")]
    NotFound(String),
    /// A partition not supervised by the agent has the name.
    #[error("a partition named '{name}' exists ({state}); pick another name or remove it with `stasis rm -f {name}`")]
    PartitionExists {
        /// Name.
        name: String,
        /// Its state.
        state: State,
    },
    /// The spec is not usable.
    #[error("bad workload spec: {0}")]
    BadSpec(String),
    /// The verb does not apply in the workload's state.
    #[error("workload '{name}' is {state}: {what}")]
    WrongState {
        /// Workload.
        name: String,
        /// Its state.
        state: WState,
        /// What would be needed.
        what: &'static str,
    },
    /// Starting its partition failed.
    #[error("starting workload '{name}'")]
    Start {
        /// Workload.
        name: String,
        /// Cause.
        #[source]
        source: ops::OpsError,
    },
    /// A checkpoint failed (the workload runs on).
    #[error("checkpoint of workload '{name}' failed (it keeps running)")]
    Checkpoint {
        /// Workload.
        name: String,
        /// Why.
        #[source]
        error: Box<ImageError>,
    },
    /// Restoring an image failed.
    #[error("restoring workload '{name}' from image {image} failed")]
    Restore {
        /// Workload.
        name: String,
        /// Image.
        image: String,
        /// Cause.
        #[source]
        source: ops::OpsError,
    },
    /// The agent panicked while handling the workload (it is marked failed).
    #[error("internal error: the agent panicked while handling workload '{name}' (it is marked failed; see its FFDC bundle): {message}")]
    Panicked {
        /// Workload.
        name: String,
        /// The panic message.
        message: String,
    },
    /// Removing it failed.
    #[error("removing workload '{name}': {error}")]
    Remove {
        /// Workload.
        name: String,
        /// Why.
        error: String,
    },
}

pub use crate::unix_ms;

/// Failpoint (`STASIS_FAILPOINTS=agent.tick.panic=NAME`): panic while handling workload NAME
/// in a tick.
pub const FP_TICK_PANIC: &str = "agent.tick.panic";

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

fn instant_from_unix_ms(at: u64) -> Instant {
    let now = unix_ms();
    Instant::now() + Duration::from_millis(at.saturating_sub(now))
}

impl Supervisor {
    /// A supervisor keeping partitions under `root`, images in `repo`, FFDC bundles in
    /// `ROOT/ffdc`, and running checkpoints with the `stasis` binary `exe`.
    pub fn new(root: Root, repo: Arc<dyn Repository>, exe: PathBuf) -> Supervisor {
        let ffdc_dir = root.path.join("ffdc");
        Supervisor {
            root,
            repo,
            exe,
            ffdc_dir,
            agent_log: None,
            workers: 2,
            slots: BTreeMap::new(),
            children: BTreeSet::new(),
            backlog: Vec::new(),
        }
    }

    /// Write FFDC bundles into `dir`.
    pub fn with_ffdc_dir(mut self, dir: PathBuf) -> Self {
        self.ffdc_dir = dir;
        self
    }

    /// The agent's log, whose lines about a workload go into its FFDC bundles.
    pub fn with_agent_log(mut self, log: PathBuf) -> Self {
        self.agent_log = Some(log);
        self
    }

    /// Where FFDC bundles go.
    pub fn ffdc_dir(&self) -> &Path {
        &self.ffdc_dir
    }

    /// The hooks socket path a workload is given (in its own filesystem view).
    pub fn hooks_path(&self, spec: &WorkloadSpec) -> PathBuf {
        if spec.partition.rootfs.is_some() {
            PathBuf::from("/tmp/stasis-hooks.sock")
        } else {
            // Resolved without symlinks (see `notify`): name it by its canonical path.
            let root = self
                .root
                .path
                .canonicalize()
                .unwrap_or_else(|_| self.root.path.clone());
            root.join("hooks").join(format!("{}.sock", spec.name))
        }
    }

    /// Add a workload and start it from its boot command; returns once it runs. The spec is
    /// validated first ([`WorkloadSpec::validate`]); a start that fails leaves nothing behind
    /// (no partition, cgroup, record or child).
    pub fn add(&mut self, mut spec: WorkloadSpec) -> Result<Vec<Happening>, SupervisorError> {
        spec.validate()
            .map_err(|e| SupervisorError::BadSpec(e.to_string()))?;
        if spec.partition.hostname.is_empty() {
            spec.partition.hostname = spec.name.to_string();
        }
        if spec.partition.cwd.is_none() {
            spec.partition.cwd = Some(PathBuf::from("/"));
        }
        if self.slots.contains_key(spec.name.as_str()) {
            return Err(SupervisorError::Exists(spec.name.to_string()));
        }
        if let Ok(rec) = self.root.load(&spec.name) {
            return Err(SupervisorError::PartitionExists {
                name: spec.name.to_string(),
                state: rec.state,
            });
        }
        let hooks = self.hooks_path(&spec);
        if spec.partition.rootfs.is_none() {
            // ROOT/hooks: private, created without following links.
            if let Ok(d) = Dir::create_all(self.root.path.join("hooks"), PRIVATE_DIR) {
                let _ = d.remove_file(format!("{}.sock", spec.name));
            }
        }
        if !spec
            .partition
            .env
            .iter()
            .any(|e| e.starts_with(&format!("{HOOKS_ENV}=")))
        {
            spec.partition
                .env
                .push(format!("{HOOKS_ENV}={}", hooks.display()));
        }
        // Images of an earlier workload of the same name hold someone else's state.
        let _ = self.repo.remove_all(&spec.name);
        let pid = self.boot(&spec)?;
        let mut status = WStatus::new(WState::Running);
        status.pid = Some(pid);
        let history = History {
            started_ms: unix_ms(),
            ..Default::default()
        };
        let name = spec.name.to_string();
        self.slots
            .insert(name.clone(), Slot::new(spec, status, history));
        Ok(vec![
            Happening::Added {
                workload: name.clone(),
            },
            Happening::Started {
                workload: name,
                pid,
            },
        ])
    }

    fn boot(&mut self, spec: &WorkloadSpec) -> Result<i32, SupervisorError> {
        let r = run_fresh(&self.root, spec).map_err(|source| SupervisorError::Start {
            name: spec.name.to_string(),
            source,
        });
        self.note_monitor(&spec.name);
        r
    }

    fn note_monitor(&mut self, name: &str) {
        if let Some(m) = self.root.load(name).ok().and_then(|r| r.monitor_pid) {
            self.children.insert(m);
        }
    }

    /// Reap monitors that ended.
    fn reap(&mut self) {
        self.children
            .retain(|&pid| matches!(wait_exit(Who::Pid(pid), Block::No), Ok(None)));
    }

    /// Status of a workload.
    pub fn status(&self, name: &str) -> Option<WStatus> {
        self.slots.get(name).map(|s| s.status.clone())
    }

    /// A workload as the API shows it.
    pub fn view(&self, name: &str) -> Option<WorkloadView> {
        self.slots.get(name).map(|s| WorkloadView {
            name: name.to_string(),
            status: s.status.clone(),
            spec: s.spec.clone(),
        })
    }

    /// Every workload, by name.
    pub fn views(&self) -> Vec<WorkloadView> {
        self.slots.keys().filter_map(|n| self.view(n)).collect()
    }

    /// Names of every workload.
    pub fn names(&self) -> Vec<String> {
        self.slots.keys().cloned().collect()
    }

    /// Everything to keep, per workload.
    pub fn export(&self) -> Vec<Persisted> {
        let now = Instant::now();
        let now_ms = unix_ms();
        self.slots
            .values()
            .map(|s| Persisted {
                spec: s.spec.clone(),
                status: s.status.clone(),
                history: s.history,
                pending_boot_unix_ms: s
                    .pending_boot
                    .map(|t| now_ms + t.saturating_duration_since(now).as_millis() as u64),
            })
            .collect()
    }

    /// Take over a workload a previous agent supervised. A partition still running is adopted
    /// as it is; one that ended while no agent watched is handled as a failure by the next
    /// tick.
    pub fn adopt(&mut self, p: Persisted) -> Vec<Happening> {
        let name = p.spec.name.to_string();
        let mut slot = Slot::new(p.spec, p.status, p.history);
        slot.pending_boot = p.pending_boot_unix_ms.map(instant_from_unix_ms);
        slot.status.images = self.repo.list(&name).map(|l| l.len()).unwrap_or(0);
        let mut out = Vec::new();
        if matches!(
            slot.status.state,
            WState::Running | WState::Starting | WState::Restarting
        ) {
            if let Ok(rec) = self.root.load(&name) {
                if ops::is_running(&rec) {
                    if let Some(pid) = rec.pid {
                        slot.status.state = WState::Running;
                        slot.status.pid = Some(pid);
                        slot.pending_boot = None;
                        if let Ok(st) = ops::stats(&self.root, &name) {
                            slot.oom_seen = st.usage.oom_kills;
                        }
                        out.push(Happening::Adopted {
                            workload: name.clone(),
                            pid,
                        });
                    }
                }
            }
        }
        self.slots.insert(name, slot);
        out
    }

    /// The slot of running workload `name`, once a periodic image under way for it is done
    /// (its outcome goes to the backlog).
    fn running_slot(
        &mut self,
        ctx: &Ctx,
        name: &str,
        what: &'static str,
    ) -> Result<&mut Slot, SupervisorError> {
        let slot = slot_in(&mut self.slots, name, WState::Running, what)?;
        if let Some(h) = settle_inflight(ctx, slot) {
            self.backlog.push(h);
        }
        Ok(slot)
    }

    /// Take a consistency image of `name` now.
    pub fn checkpoint_now(&mut self, name: &str) -> Result<Happening, SupervisorError> {
        let ctx = self.ctx();
        let slot = self.running_slot(&ctx, name, "only a running workload can be checkpointed")?;
        take_image(&ctx, slot).map_err(|error| SupervisorError::Checkpoint {
            name: name.to_string(),
            error: Box::new(error),
        })
    }

    /// Checkpoint `name` into the repository and end it, releasing its resources.
    pub fn hibernate(&mut self, name: &str) -> Result<Vec<Happening>, SupervisorError> {
        let ctx = self.ctx();
        let slot = self.running_slot(&ctx, name, "only a running workload can be hibernated")?;
        let info = checkpoint_into_repo(&ctx, slot, false).map_err(|error| {
            slot.status.last_checkpoint_error = Some(stasis_partition::monitor::chain(&error));
            SupervisorError::Checkpoint {
                name: name.to_string(),
                error: Box::new(error),
            }
        })?;
        slot.status.state = WState::Hibernated;
        slot.status.pid = None;
        slot.status.last_checkpoint_error = None;
        slot.status.images = ctx.repo.list(name).map(|l| l.len()).unwrap_or(0);
        Ok(vec![Happening::Hibernated {
            workload: name.to_string(),
            image: info.0.id.to_string(),
        }])
    }

    /// Bring a hibernated workload back from its image.
    pub fn resume(&mut self, name: &str) -> Result<Vec<Happening>, SupervisorError> {
        let ctx = self.ctx();
        let slot = slot_in(
            &mut self.slots,
            name,
            WState::Hibernated,
            "only a hibernated workload can be resumed",
        )?;
        let img =
            ctx.repo.latest(name).ok().flatten().ok_or_else(|| {
                SupervisorError::BadSpec(format!("no image of '{name}' to resume"))
            })?;
        let pid = ops::restore(&ctx.root, &img.dir, Some(name), ctx.workers).map_err(|source| {
            SupervisorError::Restore {
                name: name.to_string(),
                image: img.id.to_string(),
                source,
            }
        })?;
        slot.status.state = WState::Running;
        slot.status.pid = Some(pid);
        slot.status.last_image = Some(img.id.to_string());
        // A resumed workload starts a new run: its next failure is an image restart.
        slot.history = History {
            started_ms: unix_ms(),
            ..Default::default()
        };
        slot.reset_schedules();
        post_restore(&ctx, slot, pid);
        self.note_monitor(name);
        Ok(vec![Happening::Resumed {
            workload: name.to_string(),
            image: img.id.to_string(),
            pid,
        }])
    }

    /// Stop supervising `name`: end its partition, remove it and its images (FFDC bundles
    /// stay).
    pub fn remove(&mut self, name: &str) -> Result<Vec<Happening>, SupervisorError> {
        let ctx = self.ctx();
        let slot = self
            .slots
            .get_mut(name)
            .ok_or_else(|| SupervisorError::NotFound(name.to_string()))?;
        let mut out: Vec<Happening> = settle_inflight(&ctx, slot).into_iter().collect();
        let spec = slot.spec.clone();
        if self.root.load(name).is_ok() {
            if let Err(e) = ops::rm(&self.root, name, true) {
                self.backlog.extend(out);
                return Err(SupervisorError::Remove {
                    name: name.to_string(),
                    error: e.to_string(),
                });
            }
        }
        if spec.partition.rootfs.is_none() {
            if let Ok(d) = Dir::open(self.root.path.join("hooks")) {
                let _ = d.remove_file(format!("{}.sock", spec.name));
            }
        }
        let _ = self.repo.remove_all(name);
        self.slots.remove(name);
        self.reap();
        out.push(Happening::Removed {
            workload: name.to_string(),
        });
        Ok(out)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            root: self.root.clone(),
            repo: self.repo.clone(),
            exe: self.exe.clone(),
            ffdc_dir: self.ffdc_dir.clone(),
            agent_log: self.agent_log.clone(),
            workers: self.workers,
        }
    }

    /// Outcomes of periodic images a verb had to wait for (report them before the verb's own).
    pub fn take_backlog(&mut self) -> Vec<Happening> {
        std::mem::take(&mut self.backlog)
    }

    /// Wait for every image under way (before the agent exits); returns their outcomes.
    pub fn finish_all(&mut self) -> Vec<Happening> {
        let ctx = self.ctx();
        let mut out = std::mem::take(&mut self.backlog);
        for slot in self.slots.values_mut() {
            out.extend(settle_inflight(&ctx, slot));
        }
        out
    }

    /// A panic while handling workload `name` (caught by the caller): the workload is marked
    /// failed with an FFDC bundle carrying `message`; a checkpoint child of it under way is
    /// ended. Its partition, if running, is left as it is (not supervised any more).
    pub fn panicked(&mut self, name: &str, message: &str) -> Vec<Happening> {
        let ctx = self.ctx();
        let mut out = Vec::new();
        let Some(slot) = self.slots.get_mut(name) else {
            return out;
        };
        tracing::error!(workload = %name, panic = %message, "the agent panicked while handling this workload; it is marked failed");
        if let Some(mut i) = slot.inflight.take() {
            // Cancel it (the workload is left as it was), then end the helper.
            let _ = helper::send(&mut i.helper.chan, &helper::Request::Cancel);
            let _ = i.helper.process.kill();
            let _ = i.helper.process.wait();
            let _ = ctx.repo.abort(i.pending);
        }
        slot.pending_boot = None;
        let kind = FailureKind::Panic {
            message: message.to_string(),
        };
        let pid = slot
            .status
            .pid
            .filter(|p| stasis_partition::state::alive(*p));
        out.push(Happening::Failed {
            workload: name.to_string(),
            reason: kind.to_string(),
            pid,
        });
        slot.status.last_failure = Some(kind.to_string());
        slot.status.state = WState::Failed;
        // Writing the bundle must not take the supervisor down either.
        let mut captured = Vec::new();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            capture(&ctx, slot, kind, pid, &mut captured)
        }));
        out.extend(captured);
        out.push(Happening::MarkedFailed {
            workload: name.to_string(),
        });
        out
    }

    /// One round of supervision; returns what happened. A panic in one workload's handling
    /// marks that workload failed ([`Supervisor::panicked`]); the others are supervised on.
    pub fn tick(&mut self) -> Vec<Happening> {
        self.reap();
        let mut out = std::mem::take(&mut self.backlog);
        let ctx = self.ctx();
        for name in self.names() {
            let Some(slot) = self.slots.get_mut(&name) else {
                continue;
            };
            let mut step = Vec::new();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if slot.status.state != WState::Failed
                    && stasis_engine::failpoint::action(FP_TICK_PANIC).as_deref()
                        == Some(name.as_str())
                {
                    panic!("failpoint {FP_TICK_PANIC}: injected panic while handling {name}");
                }
                supervise(&ctx, slot, &mut step);
            }));
            out.extend(step);
            if let Err(p) = r {
                let msg = panic_message(&*p);
                out.extend(self.panicked(&name, &msg));
                continue;
            }
            if out
                .iter()
                .any(|h| matches!(h, Happening::Restarted { workload, .. } if workload == &name))
            {
                self.note_monitor(&name);
            }
        }
        out
    }
}

/// The slot of `name`, which must be in state `want` (`what` says so otherwise).
fn slot_in<'a>(
    slots: &'a mut BTreeMap<String, Slot>,
    name: &str,
    want: WState,
    what: &'static str,
) -> Result<&'a mut Slot, SupervisorError> {
    let slot = slots
        .get_mut(name)
        .ok_or_else(|| SupervisorError::NotFound(name.to_string()))?;
    if slot.status.state != want {
        return Err(SupervisorError::WrongState {
            name: name.to_string(),
            state: slot.status.state,
            what,
        });
    }
    Ok(slot)
}

/// What the per-workload steps need of the supervisor.
struct Ctx {
    root: Root,
    repo: Arc<dyn Repository>,
    exe: PathBuf,
    ffdc_dir: PathBuf,
    agent_log: Option<PathBuf>,
    workers: usize,
}

fn supervise(ctx: &Ctx, slot: &mut Slot, out: &mut Vec<Happening>) {
    let name = slot.spec.name.to_string();
    if matches!(slot.status.state, WState::Failed | WState::Hibernated) {
        return;
    }
    // A periodic image under way: its outcome once done; until then this workload waits (its
    // checkpointer holds the partition), the others are supervised meanwhile.
    if slot.inflight.is_some() {
        out.extend(poll_inflight(ctx, slot));
        if slot.inflight.is_some() {
            return;
        }
    }
    if let Some(at) = slot.pending_boot {
        if Instant::now() >= at {
            slot.pending_boot = None;
            let reason = slot.status.last_failure.clone().unwrap_or_default();
            out.extend(boot_restart(&ctx.root, slot, &reason));
        }
        return;
    }
    let Some(kind) = failure(&ctx.root, slot) else {
        if slot.next_checkpoint.is_some_and(|t| Instant::now() >= t) {
            match start_checkpoint(ctx, slot, true) {
                Ok(i) => slot.inflight = Some(i),
                Err(e) => out.push(image_outcome(ctx, slot, &Err(e))),
            }
        }
        return;
    };
    let mut kind = kind;
    let mut pid = slot
        .status
        .pid
        .filter(|p| stasis_partition::state::alive(*p));
    // Each pass handles one failure; an image that does not restore is a failure of its own
    // (within the window, so the next decision is a boot restart).
    loop {
        let reason = kind.to_string();
        tracing::warn!(workload = %name, %reason, "workload failed");
        out.push(Happening::Failed {
            workload: name.clone(),
            reason: reason.clone(),
            pid,
        });
        slot.status.last_failure = Some(reason.clone());
        // Capture first, while what is left of it still exists.
        capture(ctx, slot, kind, pid, out);
        // End what is left of it before restarting.
        if pid.is_some() {
            let _ = ops::stop(&ctx.root, &name, Duration::from_millis(0));
        }
        slot.status.pid = None;
        let now_ms = unix_ms();
        let latest = ctx.repo.latest(&name).ok().flatten();
        let (d, h) = policy::decide(&slot.spec.policy, &slot.history, now_ms, latest.is_some());
        slot.history = h;
        match d {
            Decision::ImageRestart => {
                // Decided with an image (`latest` is Some): never None here.
                let Some(img) = latest else {
                    slot.status.state = WState::Failed;
                    return;
                };
                slot.status.state = WState::Restarting;
                match ops::restore(&ctx.root, &img.dir, Some(&name), ctx.workers) {
                    Ok(pid) => {
                        slot.status.state = WState::Running;
                        slot.status.pid = Some(pid);
                        slot.status.restarts += 1;
                        slot.status.last_restart = Some(RestartKind::Image);
                        slot.status.last_image = Some(img.id.to_string());
                        log_restart(
                            slot,
                            RestartKind::Image,
                            Some(img.id.to_string()),
                            &reason,
                            pid,
                        );
                        slot.reset_schedules();
                        post_restore(ctx, slot, pid);
                        tracing::info!(workload = %name, image = %img.id, pid, "restarted from its image");
                        out.push(Happening::Restarted {
                            workload: name.clone(),
                            from: RestartKind::Image,
                            image: Some(img.id.to_string()),
                            pid,
                        });
                    }
                    Err(e) => {
                        // The image itself does not come back: it counts as a restart from it
                        // that failed at once, so the next decision boots.
                        slot.history.last_restart = Some((RestartKind::Image, now_ms));
                        slot.status.last_image = Some(img.id.to_string());
                        kind = FailureKind::RestoreFailed {
                            detail: format!(
                                "image {}: {}",
                                img.id,
                                stasis_partition::monitor::chain(&e)
                            ),
                        };
                        pid = None;
                        continue;
                    }
                }
            }
            Decision::BootRestart {
                delay,
                discard_images,
            } => {
                if discard_images {
                    let _ = ctx.repo.remove_all(&name);
                    slot.status.images = 0;
                }
                slot.status.state = WState::Restarting;
                if delay.is_zero() {
                    out.extend(boot_restart(&ctx.root, slot, &reason));
                } else {
                    tracing::info!(workload = %name, ?delay, "boot restart after a back-off");
                    slot.pending_boot = Some(Instant::now() + delay);
                }
            }
            Decision::MarkFailed => {
                slot.status.state = WState::Failed;
                tracing::error!(workload = %name, "workload marked failed");
                out.push(Happening::MarkedFailed {
                    workload: name.clone(),
                });
            }
        }
        return;
    }
}

/// Write the FFDC bundle of a failure and announce it.
fn capture(ctx: &Ctx, slot: &Slot, kind: FailureKind, pid: Option<i32>, out: &mut Vec<Happening>) {
    let name = slot.spec.name.as_str();
    let capture = Capture {
        agent_log: ctx.agent_log.clone(),
        ..Capture::new(
            Failure {
                workload: name.to_string(),
                kind,
                at_unix_ms: unix_ms(),
                pid,
                image_in_use: slot.status.last_image.clone(),
                incarnation: slot.status.restarts,
            },
            ctx.root.paths(name).log(),
        )
    };
    match ffdc::write_bundle(&ctx.ffdc_dir, &capture) {
        Ok(b) => {
            out.push(Happening::Ffdc {
                workload: name.to_string(),
                bundle: b.id,
            });
            let _ = ffdc::prune(&ctx.ffdc_dir, name, FFDC_KEPT);
        }
        Err(e) => tracing::error!(workload = %name, error = %e, "writing the FFDC bundle failed"),
    }
}

fn log_restart(slot: &mut Slot, from: RestartKind, image: Option<String>, reason: &str, pid: i32) {
    slot.status.restart_log.push(RestartEntry {
        at_unix_ms: unix_ms(),
        from,
        image,
        reason: reason.to_string(),
        pid,
    });
    let n = slot.status.restart_log.len();
    if n > RESTART_LOG {
        slot.status.restart_log.drain(..n - RESTART_LOG);
    }
}

/// The hooks socket of a running workload, opened as an `O_PATH` descriptor: its path (a
/// path in the workload's own filesystem view, which the workload controls) is resolved
/// inside the workload's root (`/proc/PID/root`) with no symlink followed and no `..` out of
/// it. `None` (and a warning saying why) when there is no socket to use.
fn hooks_socket(slot: &Slot, pid: i32) -> Option<std::os::fd::OwnedFd> {
    let p = slot
        .spec
        .partition
        .env
        .iter()
        .find_map(|e| e.strip_prefix(&format!("{HOOKS_ENV}=")))?;
    let name = &slot.spec.name;
    let root = match Dir::open_following(format!("/proc/{pid}/root")) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(workload = %name, pid, error = %e, "cannot open the workload's root; no hook sent");
            return None;
        }
    };
    let opened = safefs::open_beneath(&root, p, safefs::OpenFlags::PATH);
    match opened {
        Ok(fd) => Some(fd),
        // Hooks not enabled by the workload.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(workload = %name, path = p, "no hooks socket");
            None
        }
        Err(e) => {
            tracing::warn!(workload = %name, path = p, error = %e, "hooks socket path does not resolve inside the workload's root without symlinks; not connecting (no hook sent)");
            None
        }
    }
}

fn notify(slot: &Slot, pid: i32, event: HookEvent) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileTypeExt;
    let Some(fd) = hooks_socket(slot, pid) else {
        return;
    };
    // Connect through the descriptor's magic link: the very socket resolved above.
    let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if !std::fs::metadata(&via).is_ok_and(|m| m.file_type().is_socket()) {
        tracing::warn!(workload = %slot.spec.name, "the hooks socket path is not a socket; no hook sent");
        return;
    }
    if let Err(e) = stasis_hooks::notify(&via, event, slot.spec.hooks_timeout) {
        tracing::warn!(workload = %slot.spec.name, %event, error = %e, "hook not acknowledged; going on");
    }
    drop(fd);
}

fn post_restore(_ctx: &Ctx, slot: &Slot, pid: i32) {
    notify(slot, pid, HookEvent::PostRestore);
}

/// Start the workload's partition from its boot command: a new partition for the first
/// boot, a new incarnation of the same partition for a boot restart (its accounting and
/// output log carry on).
fn run_fresh(root: &Root, spec: &WorkloadSpec) -> Result<i32, ops::OpsError> {
    ops::run_again(root, &spec.name, spec.partition.to_spec())
}

fn boot_restart(root: &Root, slot: &mut Slot, reason: &str) -> Vec<Happening> {
    let name = slot.spec.name.to_string();
    match run_fresh(root, &slot.spec) {
        Ok(pid) => {
            slot.status.state = WState::Running;
            slot.status.pid = Some(pid);
            slot.status.restarts += 1;
            slot.status.last_restart = Some(RestartKind::Boot);
            slot.status.last_image = None;
            log_restart(slot, RestartKind::Boot, None, reason, pid);
            slot.reset_schedules();
            tracing::info!(workload = %name, pid, "restarted from its boot command");
            vec![Happening::Restarted {
                workload: name,
                from: RestartKind::Boot,
                image: None,
                pid,
            }]
        }
        Err(e) => {
            // Counted as a failed boot: the next tick decides again.
            slot.status.last_failure = Some(format!("boot restart failed: {e}"));
            slot.status.pid = None;
            slot.history.last_restart = Some((RestartKind::Boot, unix_ms()));
            vec![Happening::Failed {
                workload: name,
                reason: format!("boot restart failed: {e}"),
                pid: None,
            }]
        }
    }
}

/// Has the workload failed? Returns how.
fn failure(root: &Root, slot: &mut Slot) -> Option<FailureKind> {
    let name = slot.spec.name.as_str();
    let rec = match root.load(name) {
        Ok(r) => r,
        Err(e) => {
            return Some(FailureKind::Ended {
                detail: format!("its partition record is gone: {e}"),
            })
        }
    };
    if !ops::is_running(&rec) {
        // The first process is gone but its monitor has not recorded how yet: give it a
        // moment, so the failure says "killed by signal 9" rather than "ended".
        if matches!(rec.state, State::Running | State::Starting)
            && rec.monitor_pid.is_some_and(stasis_partition::state::alive)
        {
            let since = *slot.gone_since.get_or_insert_with(Instant::now);
            if since.elapsed() < MONITOR_GRACE {
                return None;
            }
        }
        slot.gone_since = None;
        return Some(match (&rec.exit, rec.state) {
            (_, State::Stopped) => FailureKind::Ended {
                detail: "stopped from outside the agent".into(),
            },
            (Some(x), _) => match (x.code, x.signal) {
                (Some(c), _) => FailureKind::Exit { code: c },
                (_, Some(s)) => FailureKind::Signal { signo: s },
                _ => FailureKind::Ended {
                    detail: "ended".into(),
                },
            },
            (None, st) => FailureKind::Ended {
                detail: format!("its partition is {st}"),
            },
        });
    }
    if let Ok(st) = ops::stats(root, name) {
        if st.usage.oom_kills > slot.oom_seen {
            let n = st.usage.oom_kills;
            if slot.oom_seen != 0 || n > rec.carried.oom_kills {
                slot.oom_seen = n;
                return Some(FailureKind::OomKill);
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
                own_net: rec.spec.net != NetMode::Host,
            };
            let r = probe::check(&p.probe, target, p.timeout);
            if let probe::Health::Failed = t.record(r.is_ok()) {
                return Some(FailureKind::ProbeFailed {
                    probe: probe_name(&p.probe),
                    detail: format!(
                        "{} checks in a row, the last: {}",
                        p.threshold,
                        r.err().map(|e| e.to_string()).unwrap_or_default()
                    ),
                });
            }
        }
    }
    None
}

fn probe_name(p: &Probe) -> String {
    match p {
        Probe::Exec { cmd } => format!("exec:{}", cmd.join(" ")),
        Probe::Tcp { addr } => format!("tcp:{addr}"),
        Probe::Http { url } => url.clone(),
    }
}

/// Why a consistency image failed (the workload runs on).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The repository could not give a directory.
    #[error("preparing the image directory")]
    Begin(#[source] crate::repo::RepoError),
    /// The checkpoint helper could not be started.
    #[error("starting the checkpoint helper")]
    Spawn(#[source] helper::SpawnError),
    /// The checkpoint failed: its typed error (the kind, the object refused…).
    #[error("the checkpoint failed")]
    Checkpoint(#[source] HelperError),
    /// The image could not be committed.
    #[error("committing the image")]
    Commit(#[source] crate::repo::RepoError),
    /// The checkpoint was still under way.
    #[error("the checkpoint did not finish")]
    Unfinished,
}

impl ImageError {
    /// The typed error of the checkpoint itself, if that is what failed.
    pub fn checkpoint(&self) -> Option<&HelperError> {
        match self {
            ImageError::Checkpoint(e) => Some(e),
            _ => None,
        }
    }
}

/// A checkpoint under way: a `stasis __helper` process ([`helper`] protocol) writing into a
/// pending image. Its messages are read by a thread into `rx`; dropping the channel (or
/// sending Cancel) cancels it.
struct Inflight {
    helper: helper::Helper,
    pending: crate::repo::PendingImage,
    rx: std::sync::mpsc::Receiver<Message>,
    /// The last progress reported.
    progress: Option<helper::Progress>,
}

/// Start checkpointing the workload into a new repository image through a checkpoint helper
/// (`leave_running` or kill mode), telling it PRE-CHECKPOINT first.
fn start_checkpoint(ctx: &Ctx, slot: &Slot, leave_running: bool) -> Result<Inflight, ImageError> {
    let name = slot.spec.name.as_str();
    if let Some(pid) = slot.status.pid {
        notify(slot, pid, HookEvent::PreCheckpoint);
    }
    let pending = ctx.repo.begin(name).map_err(ImageError::Begin)?;
    let req = helper::Request::Checkpoint(helper::CheckpointRequest {
        name: name.to_string(),
        dir: pending.dir.clone(),
        leave_running,
        force: true,
        compress: false,
        workers: ctx.workers,
        copy_limit: None,
    });
    // The helper's log (tracing) goes to the agent's stderr.
    let started = helper::spawn(
        &ctx.exe,
        &ctx.root.path,
        &req,
        std::process::Stdio::inherit(),
        false,
    )
    .and_then(|h| {
        let r = h.chan.try_clone().map_err(helper::SpawnError::Channel)?;
        Ok((h, r))
    });
    let (h, mut reader) = match started {
        Ok(x) => x,
        Err(e) => {
            let _ = ctx.repo.abort(pending);
            return Err(ImageError::Spawn(e));
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || loop {
        let m = match helper::recv::<Message>(&mut reader) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => Message::Failed(HelperError::internal(format!(
                "reading the checkpoint helper: {e}"
            ))),
        };
        let fin = m.is_final();
        if tx.send(m).is_err() || fin {
            return;
        }
    });
    Ok(Inflight {
        helper: h,
        pending,
        rx,
        progress: None,
    })
}

/// Where a checkpoint under way stands.
enum Finish {
    /// Its image is committed: the image and the seconds the workload was frozen.
    Done(ImageInfo, f64),
    /// Still running (only when not waiting).
    Running(Box<Inflight>),
    /// It failed (the workload runs on): why.
    Failed(ImageError),
}

impl Finish {
    fn into_result(self) -> Result<(ImageInfo, f64), ImageError> {
        match self {
            Finish::Done(i, f) => Ok((i, f)),
            Finish::Running(_) => Err(ImageError::Unfinished),
            Finish::Failed(e) => Err(e),
        }
    }
}

/// The final message of a checkpoint under way (`wait`: block until it comes), progress
/// noted meanwhile; None while it runs.
fn final_message(inflight: &mut Inflight, wait: bool) -> Option<Message> {
    use std::sync::mpsc::TryRecvError;
    loop {
        let m = if wait {
            inflight.rx.recv().map_err(|_| TryRecvError::Disconnected)
        } else {
            inflight.rx.try_recv()
        };
        match m {
            Ok(Message::Progress(p)) => {
                tracing::debug!(stage = %p.stage, bytes = p.bytes_done, "checkpoint progress");
                inflight.progress = Some(p);
            }
            Ok(m) => return Some(m),
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => {
                let st = inflight.helper.process.wait();
                return Some(Message::Failed(HelperError::internal(format!(
                    "the checkpoint helper ended ({}) without a result",
                    st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
                ))));
            }
        }
    }
}

/// Finish a checkpoint whose helper has answered (`wait`: block until it has): commit its
/// image, then apply retention.
fn finish_checkpoint(ctx: &Ctx, slot: &Slot, mut inflight: Inflight, wait: bool) -> Finish {
    let Some(m) = final_message(&mut inflight, wait) else {
        return Finish::Running(Box::new(inflight));
    };
    // The helper exits right after its final message.
    let _ = inflight.helper.process.wait();
    let figures = match m {
        Message::Checkpointed(f) => f,
        Message::Failed(e) => {
            let _ = ctx.repo.abort(inflight.pending);
            return Finish::Failed(ImageError::Checkpoint(e));
        }
        m => {
            let _ = ctx.repo.abort(inflight.pending);
            return Finish::Failed(ImageError::Checkpoint(HelperError::internal(format!(
                "the checkpoint helper answered {m:?}"
            ))));
        }
    };
    let info = match ctx.repo.commit(inflight.pending) {
        Ok(i) => i,
        Err(e) => return Finish::Failed(ImageError::Commit(e)),
    };
    // Only now that the new image is durable may older ones go.
    let _ = ctx
        .repo
        .retain(&slot.spec.name, slot.spec.images_kept.max(1));
    Finish::Done(info, figures.stats.frozen_secs)
}

/// Checkpoint the workload into a new repository image and wait for it.
fn checkpoint_into_repo(
    ctx: &Ctx,
    slot: &Slot,
    leave_running: bool,
) -> Result<(ImageInfo, f64), ImageError> {
    let inflight = start_checkpoint(ctx, slot, leave_running)?;
    finish_checkpoint(ctx, slot, inflight, true).into_result()
}

/// What a finished consistency image means for the workload's status.
fn image_outcome(
    ctx: &Ctx,
    slot: &mut Slot,
    r: &Result<(ImageInfo, f64), ImageError>,
) -> Happening {
    let name = slot.spec.name.to_string();
    slot.next_checkpoint = slot.spec.checkpoint_every.map(|d| Instant::now() + d);
    match r {
        Ok((info, frozen_secs)) => {
            let frozen_secs = *frozen_secs;
            slot.status.images = ctx.repo.list(&name).map(|l| l.len()).unwrap_or(0);
            slot.status.last_checkpoint_error = None;
            slot.status.last_checkpoint_unix_ms = Some(unix_ms());
            slot.status.last_frozen_secs = Some(frozen_secs);
            Happening::Checkpointed {
                workload: name,
                image: info.id.to_string(),
                frozen_secs,
            }
        }
        Err(e) => {
            let error = stasis_partition::monitor::chain(e);
            tracing::warn!(workload = %name, %error, "consistency image failed; the workload runs on");
            slot.status.last_checkpoint_error = Some(error.clone());
            Happening::CheckpointFailed {
                workload: name,
                error,
            }
        }
    }
}

/// Take one consistency image now and wait for it (the workload keeps running).
fn take_image(ctx: &Ctx, slot: &mut Slot) -> Result<Happening, ImageError> {
    let r = checkpoint_into_repo(ctx, slot, true);
    let h = image_outcome(ctx, slot, &r);
    r.map(|_| h)
}

/// Wait for a periodic image under way, if any (before a verb that needs the partition).
fn settle_inflight(ctx: &Ctx, slot: &mut Slot) -> Option<Happening> {
    let inflight = slot.inflight.take()?;
    let r = finish_checkpoint(ctx, slot, inflight, true).into_result();
    Some(image_outcome(ctx, slot, &r))
}

/// Poll a periodic image under way: its outcome once finished.
fn poll_inflight(ctx: &Ctx, slot: &mut Slot) -> Option<Happening> {
    let inflight = slot.inflight.take()?;
    match finish_checkpoint(ctx, slot, inflight, false) {
        Finish::Running(still) => {
            slot.inflight = Some(*still);
            None
        }
        done => Some(image_outcome(ctx, slot, &done.into_result())),
    }
}
