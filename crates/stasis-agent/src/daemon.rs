//! The agent daemon: `stasis agent --root DIR`.
//!
//! One agent owns one root directory (an exclusive `flock` on `ROOT/agent/agent.lock`):
//!
//! ```text
//! ROOT/api/agent.sock      the HTTP API on a unix socket (the CLI's default way in)
//! ROOT/agent/token         the API token for TCP clients (0600; `stasis token`)
//! ROOT/agent/tls/          the generated TLS certificate and key (0600 each)
//! ROOT/agent/state.redb    the embedded store: workload specs and status, the event log
//! ROOT/agent/agent.log     the agent's log (FFDC bundles quote the lines about a workload),
//!                          rotated at 10 MiB into agent.log.1 … agent.log.3 (0600 each)
//! ROOT/images/NAME/ID/     consistency and hibernation images (the repository)
//! ROOT/ffdc/NAME/ID/       first-failure data capture bundles
//! ROOT/partitions/NAME/    the partitions themselves (stasis-partition)
//! ```
//!
//! Threads: the **supervisor thread** owns the [`Supervisor`]; it takes commands from the API
//! (add, remove, checkpoint, hibernate, resume) over a channel, ticks every
//! [`AgentOptions::tick`], appends what happened to the event log, writes every workload's
//! state to the store when it changed, and publishes a snapshot of the views that the API
//! reads without waiting for a checkpoint in progress. The **HTTP side** is a tokio runtime
//! serving [`crate::api`] on the unix socket and on `--listen`.
//!
//! Restarting the agent never stops a workload: partitions run in their own sessions under
//! their own monitors, and a new agent adopts those still running
//! ([`Supervisor::adopt`]). SIGINT/SIGTERM make the agent save its state and exit, leaving
//! every workload as it is.

use crate::api;
use crate::repo::{LocalRepo, Repository};
use crate::supervisor::{Happening, Persisted, Supervisor, SupervisorError, WorkloadView};
use serde_json::{json, Value};
use stasis_cluster::{EmbeddedStore, EventLog, Store};
use stasis_partition::state::Root;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

/// Name of the socket's directory under the root.
const API_DIR: &str = "api";
/// Name of the socket in it.
const SOCKET_NAME: &str = "agent.sock";

/// Key prefix of workload records in the store.
const WORKLOADS: &str = "workloads/";
/// Key prefix of the event log.
const EVENTS: &str = "events";

/// How the agent is started.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Root directory.
    pub root: PathBuf,
    /// TCP address for the dashboard and remote clients (None: unix socket only).
    pub listen: Option<SocketAddr>,
    /// The `stasis` binary checkpoints and monitors run as.
    pub exe: PathBuf,
    /// Supervision period.
    pub tick: Duration,
    /// Who may use the API and how it is exposed ([`crate::auth`]).
    pub api: crate::auth::ApiOptions,
}

/// Paths of an agent root.
#[derive(Debug, Clone)]
pub struct AgentPaths {
    /// The root.
    pub root: PathBuf,
}

impl AgentPaths {
    /// Paths under `root`.
    pub fn new(root: impl Into<PathBuf>) -> AgentPaths {
        AgentPaths { root: root.into() }
    }
    /// The API's unix socket (in [`AgentPaths::api_dir`]).
    pub fn socket(&self) -> PathBuf {
        self.api_dir().join(SOCKET_NAME)
    }
    /// The directory of the unix socket: 0700 root, or 0750 root:GROUP with an admin group.
    pub fn api_dir(&self) -> PathBuf {
        self.root.join(API_DIR)
    }
    /// The API token for TCP clients.
    pub fn token(&self) -> PathBuf {
        self.dir().join(crate::auth::TOKEN_FILE)
    }
    /// The generated TLS certificate and key.
    pub fn tls_dir(&self) -> PathBuf {
        self.dir().join("tls")
    }
    /// The agent's own directory.
    pub fn dir(&self) -> PathBuf {
        self.root.join("agent")
    }
    /// The agent's log.
    pub fn log(&self) -> PathBuf {
        self.dir().join("agent.log")
    }
    /// The embedded store.
    pub fn store(&self) -> PathBuf {
        self.dir().join("state.redb")
    }
    /// The image repository.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// FFDC bundles.
    pub fn ffdc(&self) -> PathBuf {
        self.root.join("ffdc")
    }
}

/// Errors starting or running the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Another agent holds the root.
    #[error("another agent is running on {0} (its lock is held)")]
    Busy(PathBuf),
    /// A file or socket could not be set up.
    #[error("{what} {path}")]
    Io {
        /// What.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error("the agent's store {path}")]
    Store {
        /// Store file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: stasis_cluster::StoreError,
    },
    /// The event log failed.
    #[error("the agent's event log")]
    Events(#[source] stasis_cluster::EventLogError),
    /// The API's protection could not be set up (admin group, token, TLS, socket directory).
    #[error("setting up the API's access control")]
    Api(#[source] crate::auth::SetupError),
    /// The repository failed.
    #[error("the image repository")]
    Repo(#[source] crate::repo::RepoError),
    /// A stored workload spec does not validate any more (written by an older agent): it is
    /// skipped and reported like a corrupt record.
    #[error("workload record {key} in the store holds a spec that does not validate; its workload is not supervised (its partition runs on: see `stasis ps`)")]
    Invalid {
        /// Key.
        key: String,
        /// Why.
        #[source]
        source: crate::spec::SpecError,
    },
    /// A stored workload record does not parse (it is skipped and reported).
    #[error("workload record {key} in the store is corrupt; its workload is not supervised (its partition runs on: see `stasis ps`)")]
    Corrupt {
        /// Key.
        key: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Failpoint (`STASIS_FAILPOINTS=agent.loop.panic=NAME`): the supervisor thread itself
/// panics (outside any workload's guard) once a workload NAME exists — for tests of
/// `/v1/health`.
pub const FP_LOOP_PANIC: &str = "agent.loop.panic";

/// The supervisor thread's liveness, as `/v1/health` reports it: the thread bumps a heartbeat
/// at every turn of its loop and clears `alive` when it ends (a panic included).
#[derive(Debug)]
pub struct Liveness {
    heartbeat_ms: AtomicU64,
    alive: AtomicBool,
    bound: Duration,
}

impl Liveness {
    /// A living supervisor ticking every `tick`: its heartbeat may be as old as
    /// max(10 × tick, 60 s) — a long verb (a big checkpoint or restore) blocks the loop
    /// legitimately — before health says it is stuck.
    pub fn new(tick: Duration) -> Liveness {
        Liveness {
            heartbeat_ms: AtomicU64::new(crate::unix_ms()),
            alive: AtomicBool::new(true),
            bound: (tick * 10).max(Duration::from_secs(60)),
        }
    }

    /// One turn of the loop.
    pub fn beat(&self) {
        self.heartbeat_ms.store(crate::unix_ms(), Ordering::SeqCst);
    }

    /// The thread has ended.
    pub fn gone(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    /// The heartbeat's age bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Milliseconds since the last heartbeat.
    pub fn age_ms(&self) -> u64 {
        crate::unix_ms().saturating_sub(self.heartbeat_ms.load(Ordering::SeqCst))
    }

    /// `Ok` while the supervisor lives and beats; why not otherwise.
    pub fn check(&self) -> Result<(), Unhealthy> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err(Unhealthy::Stopped);
        }
        let age_ms = self.age_ms();
        let bound_ms = self.bound.as_millis() as u64;
        if age_ms > bound_ms {
            return Err(Unhealthy::Stuck { age_ms, bound_ms });
        }
        Ok(())
    }
}

/// Why the supervisor is not healthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    /// Its thread has ended.
    #[error("the supervisor thread has stopped: workloads are not supervised")]
    Stopped,
    /// Its thread has not turned within the bound.
    #[error(
        "the supervisor thread has not turned for {age_ms} ms (bound {bound_ms} ms): it is stuck"
    )]
    Stuck {
        /// Milliseconds since its last turn.
        age_ms: u64,
        /// The bound.
        bound_ms: u64,
    },
}

/// Clears [`Liveness::alive`] when the supervisor thread ends, however it ends.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.liveness.gone();
    }
}

/// What the API asks the supervisor thread to do.
#[derive(Debug)]
pub enum Op {
    /// Add and start.
    Add(Box<crate::supervisor::WorkloadSpec>),
    /// Stop supervising and remove.
    Remove(String),
    /// Consistency image now.
    Checkpoint(String),
    /// Hibernate.
    Hibernate(String),
    /// Resume.
    Resume(String),
}

/// An operation with its reply channel.
#[derive(Debug)]
pub struct Command {
    /// What.
    pub op: Op,
    /// Where the answer goes.
    pub reply: tokio::sync::oneshot::Sender<Result<Value, SupervisorError>>,
}

/// What the HTTP side shares with the supervisor thread.
pub struct Shared {
    /// Partitions root.
    pub root: Root,
    /// Paths.
    pub paths: AgentPaths,
    /// Image repository.
    pub repo: Arc<dyn Repository>,
    /// The event log.
    pub events: EventLog<dyn Store>,
    /// Latest views of every workload.
    pub views: RwLock<BTreeMap<String, WorkloadView>>,
    /// Commands to the supervisor thread.
    pub commands: mpsc::Sender<Command>,
    /// Set once shutting down.
    pub stopping: AtomicBool,
    /// The event streams.
    pub streams: crate::stream::Streams,
    /// The supervisor thread's liveness (`/v1/health`).
    pub liveness: Liveness,
}

impl Op {
    /// The workload the operation is about.
    pub fn workload(&self) -> &str {
        match self {
            Op::Add(spec) => spec.name.as_str(),
            Op::Remove(n) | Op::Checkpoint(n) | Op::Hibernate(n) | Op::Resume(n) => n,
        }
    }
}

impl Shared {
    /// Send `op` to the supervisor thread and wait for its answer.
    pub async fn call(&self, op: Op) -> Result<Result<Value, SupervisorError>, &'static str> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("the agent is shutting down");
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command { op, reply: tx })
            .map_err(|_| "the agent's supervisor has stopped")?;
        rx.await.map_err(|_| "the agent's supervisor has stopped")
    }
}

/// Run the agent in the foreground until SIGINT/SIGTERM.
pub fn run(opts: AgentOptions) -> Result<(), AgentError> {
    let paths = AgentPaths::new(&opts.root);
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| AgentError::Io { what, path, source }
    };
    // The root and everything the agent keeps there are private (0700 directories, 0600
    // files, whatever the umask); an existing root with a looser mode is tightened.
    let root_dir =
        stasis_partition::state::private_root(&opts.root).map_err(io("creating", &opts.root))?;
    let agent_dir = root_dir
        .ensure_dir("agent", stasis_image::safefs::PRIVATE_DIR)
        .map_err(io("creating", &paths.dir()))?;
    let lock_path = paths.dir().join("agent.lock");
    let lock = agent_dir
        .open_append("agent.lock", stasis_image::safefs::PRIVATE_FILE)
        .map_err(io("opening", &lock_path))?;
    if !stasis_sys::sys::flock_try_exclusive(&lock).map_err(io("locking", &lock_path))? {
        return Err(AgentError::Busy(opts.root.clone()));
    }
    let security = crate::auth::prepare(&paths, &opts.api, opts.listen).map_err(AgentError::Api)?;
    // The embedded store on one node; a cluster hands in its shared store instead.
    let store: Arc<dyn Store> =
        Arc::new(
            EmbeddedStore::open(paths.store()).map_err(|source| AgentError::Store {
                path: paths.store(),
                source,
            })?,
        );
    {
        use std::os::unix::fs::PermissionsExt;
        // The store is created by the embedded database with the process's umask.
        std::fs::set_permissions(paths.store(), std::fs::Permissions::from_mode(0o600))
            .map_err(io("setting the mode of", &paths.store()))?;
    }
    let events = EventLog::new(store.clone(), EVENTS);
    let local = Arc::new(LocalRepo::new(paths.images()).map_err(AgentError::Repo)?);
    if let Err(e) = local.recover() {
        tracing::warn!(error = %e, "repository recovery");
    }
    // Images written before images were signed are signed once, so a failover after the
    // upgrade still restores from them (restore refuses unsigned images).
    match stasis_image::Keyring::load_or_create(&opts.root) {
        Ok(k) => match local.sign_unsigned(&k) {
            Ok(n) => tracing::info!(signed = n, "signed the repository's unsigned images"),
            Err(e) => tracing::warn!(error = %e, "signing the repository's unsigned images"),
        },
        Err(e) => tracing::warn!(error = %e, "the root's image signing key"),
    }
    let repo: Arc<dyn Repository> = local;
    let root = Root::new(&opts.root);
    let mut sup = Supervisor::new(root.clone(), repo.clone(), opts.exe.clone())
        .with_ffdc_dir(paths.ffdc())
        .with_agent_log(paths.log());

    // Adopt what an earlier agent supervised.
    let stored = store.list(WORKLOADS).map_err(|source| AgentError::Store {
        path: paths.store(),
        source,
    })?;
    let mut adopted_names = Vec::new();
    let mut happenings = Vec::new();
    let mut written: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut corrupt: Vec<String> = Vec::new();
    for e in stored {
        // A record that does not parse is left in the store (for inspection) and reported;
        // the other workloads are supervised as usual.
        let p: Persisted = match serde_json::from_slice(&e.value) {
            Ok(p) => p,
            Err(source) => {
                let err = AgentError::Corrupt {
                    key: e.key.clone(),
                    source,
                };
                tracing::error!(error = %stasis_partition::monitor::chain(&err), "skipping a workload record");
                corrupt.push(e.key.clone());
                continue;
            }
        };
        // A spec that an older agent accepted and this one refuses: the same.
        if let Err(source) = p.spec.validate() {
            let err = AgentError::Invalid {
                key: e.key.clone(),
                source,
            };
            tracing::error!(error = %stasis_partition::monitor::chain(&err), "skipping a workload record");
            corrupt.push(e.key.clone());
            continue;
        }
        adopted_names.push(p.spec.name.to_string());
        written.insert(e.key.clone(), e.value.clone());
        happenings.extend(sup.adopt(p));
    }
    events
        .append(
            "agent.started",
            json!({
                "event": "agent_started",
                "pid": std::process::id(),
                "adopted": adopted_names,
                "corrupt_records": corrupt,
            }),
        )
        .map_err(AgentError::Events)?;
    tracing::info!(root = %opts.root.display(), workloads = adopted_names.len(), "agent started");

    let (tx, rx) = mpsc::channel::<Command>();
    let shared = Arc::new(Shared {
        root: root.clone(),
        paths: paths.clone(),
        repo: repo.clone(),
        events: events.clone(),
        views: RwLock::new(BTreeMap::new()),
        commands: tx,
        stopping: AtomicBool::new(false),
        streams: crate::stream::Streams::new(events.clone(), opts.api.max_streams),
        liveness: Liveness::new(opts.tick),
    });
    let mut state = Loop {
        sup,
        store: store.clone(),
        events: events.clone(),
        shared: shared.clone(),
        written,
    };
    state.record(happenings);
    state.publish();

    let tick = opts.tick;
    let worker = std::thread::Builder::new()
        .name("supervisor".into())
        .spawn(move || state.run(rx, tick))
        .map_err(io("starting the supervisor thread", &opts.root))?;

    // Few blocking threads: event streams read their backlog there, and a thousand streams
    // opening at once must not mean a thousand threads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .map_err(io("starting the HTTP runtime", &opts.root))?;
    let served = rt.block_on(api::serve(shared.clone(), security, opts.listen));
    shared.stopping.store(true, Ordering::SeqCst);
    // Closing the channel ends the supervisor loop after the command in progress.
    drop(shared);
    let _ = worker.join();
    let _ = std::fs::remove_file(paths.socket());
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(lock);
    tracing::info!("agent stopped; workloads keep running");
    served.map_err(io("serving the API", &opts.root))
}

/// The supervisor thread's state.
struct Loop {
    sup: Supervisor,
    store: Arc<dyn Store>,
    events: EventLog<dyn Store>,
    shared: Arc<Shared>,
    written: BTreeMap<String, Vec<u8>>,
}

impl Loop {
    fn run(mut self, rx: mpsc::Receiver<Command>, tick: Duration) {
        let _alive = AliveGuard(self.shared.clone());
        let mut last_tick = Instant::now() - tick;
        loop {
            self.shared.liveness.beat();
            if let Some(n) = stasis_engine::failpoint::action(FP_LOOP_PANIC) {
                if self.sup.status(&n).is_some() {
                    panic!("failpoint {FP_LOOP_PANIC}: the supervisor thread panics");
                }
            }
            let wait = tick.saturating_sub(last_tick.elapsed());
            match rx.recv_timeout(wait) {
                Ok(cmd) => {
                    let answer = self.execute_guarded(cmd.op);
                    self.persist();
                    self.publish();
                    let _ = cmd.reply.send(answer);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if self.shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            if last_tick.elapsed() >= tick {
                last_tick = Instant::now();
                let h = self.sup.tick();
                self.record(h);
                self.persist();
                self.publish();
            }
        }
        // Images under way are finished (or reported failed) before the agent goes.
        let h = self.sup.finish_all();
        self.record(h);
        self.persist();
    }

    /// [`Loop::execute`], with a panic caught: the workload concerned is marked failed (with
    /// an FFDC bundle), the caller gets an error, and the loop goes on.
    fn execute_guarded(&mut self, op: Op) -> Result<Value, SupervisorError> {
        let name = op.workload().to_string();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.execute(op))) {
            Ok(answer) => answer,
            Err(p) => {
                let message = crate::supervisor::panic_message(&*p);
                let h = self.sup.panicked(&name, &message);
                self.record(h);
                Err(SupervisorError::Panicked { name, message })
            }
        }
    }

    fn execute(&mut self, op: Op) -> Result<Value, SupervisorError> {
        match op {
            Op::Add(spec) => {
                let name = spec.name.to_string();
                let h = self.sup.add(*spec)?;
                self.record(h);
                Ok(serde_json::to_value(self.sup.view(&name)).unwrap_or_default())
            }
            Op::Remove(name) => {
                let h = self.sup.remove(&name);
                let early = self.sup.take_backlog();
                self.record(early);
                self.record(h?);
                Ok(json!({ "removed": name }))
            }
            Op::Checkpoint(name) => {
                let h = self.sup.checkpoint_now(&name);
                let early = self.sup.take_backlog();
                self.record(early);
                // A failed checkpoint is an event too.
                match &h {
                    Ok(h) => self.record(vec![h.clone()]),
                    Err(SupervisorError::Checkpoint { error, .. }) => {
                        self.record(vec![Happening::CheckpointFailed {
                            workload: name.clone(),
                            error: stasis_partition::monitor::chain(error),
                        }])
                    }
                    Err(_) => {}
                }
                match h? {
                    Happening::Checkpointed {
                        image, frozen_secs, ..
                    } => Ok(json!({ "image": image, "frozen_secs": frozen_secs })),
                    other => Ok(serde_json::to_value(other).unwrap_or_default()),
                }
            }
            Op::Hibernate(name) => {
                let h = self.sup.hibernate(&name);
                let early = self.sup.take_backlog();
                self.record(early);
                self.record(h?);
                Ok(serde_json::to_value(self.sup.view(&name)).unwrap_or_default())
            }
            Op::Resume(name) => {
                let h = self.sup.resume(&name)?;
                self.record(h);
                Ok(serde_json::to_value(self.sup.view(&name)).unwrap_or_default())
            }
        }
    }

    /// Append what happened to the event log.
    fn record(&mut self, happenings: Vec<Happening>) {
        for h in happenings {
            let payload = serde_json::to_value(&h).unwrap_or_default();
            if let Err(e) = self.events.append(&h.kind(), payload) {
                tracing::error!(error = %e, "appending to the event log failed");
            }
        }
    }

    /// Write every workload whose state changed to the store; delete removed ones.
    fn persist(&mut self) {
        let mut now: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for p in self.sup.export() {
            let key = format!("{WORKLOADS}{}", p.spec.name);
            now.insert(key, serde_json::to_vec(&p).unwrap_or_default());
        }
        for (k, v) in &now {
            if self.written.get(k) != Some(v) {
                if let Err(e) = self.store.put(k, v) {
                    tracing::error!(key = %k, error = %e, "saving workload state failed");
                    continue;
                }
                self.written.insert(k.clone(), v.clone());
            }
        }
        let gone: Vec<String> = self
            .written
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if self.store.delete(&k).is_ok() {
                self.written.remove(&k);
            }
        }
    }

    fn publish(&self) {
        let views: BTreeMap<String, WorkloadView> = self
            .sup
            .views()
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect();
        if let Ok(mut w) = self.shared.views.write() {
            *w = views;
        }
    }
}
