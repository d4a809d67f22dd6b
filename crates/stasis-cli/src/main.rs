//! `stasis`: checkpoint, restore and inspect Linux process trees; run partitions; run the node
//! agent and talk to it.
//!
//! Exit codes: 0 success; 1 failure; 2 usage error; 3 the tree holds something not supported
//! (checkpoint refused, tree left running); 4 the image is unusable (missing, corrupt, other
//! version or kernel); 5 a pid the image needs is in use; 6 a name is taken or the partition or
//! workload is in the wrong state; 7 no such workload or FFDC bundle; 8 no agent answers; 130
//! interrupted (SIGINT/SIGTERM).

mod agent;
mod bench;
mod bench_incr;
mod bench_lazy;
mod check;
mod child_agent;
mod demo;
mod gendocs;
mod image;
mod image_store;
mod inspect;
mod logs;
mod newtty;
mod node;
mod partition;
mod spinner;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stasis_engine::{Cause, CheckpointError, RestoreError};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// An error if SIGINT or SIGTERM arrived (for the loops of the long-running verbs).
pub(crate) fn check_interrupt() -> anyhow::Result<()> {
    if stasis_sys::sys::interrupt_requested() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

#[derive(Parser)]
#[command(
    name = "stasis",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("STASIS_COMMIT"), ")"),
    about = "Checkpoint and restore Linux process trees (no CRIU)"
)]
struct Cli {
    /// More logging on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Root directory of partition state (records, logs, accounting).
    #[arg(long, global = true, default_value = stasis_partition::state::DEFAULT_ROOT, env = "STASIS_ROOT")]
    root: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Checkpoint the process tree rooted at PID, or partition NAME, into DIR, then end it
    /// (unless --leave-running).
    Checkpoint {
        /// Root of the tree (every descendant and every thread is included).
        #[arg(long, required_unless_present = "name", conflicts_with = "name")]
        pid: Option<i32>,
        /// A partition (started by `stasis run`): checkpointed whole, frozen through its cgroup.
        #[arg(long)]
        name: Option<String>,
        /// Image directory (created; must be empty unless --force).
        #[arg(long)]
        dir: PathBuf,
        /// Keep the tree running after the image is written.
        #[arg(long)]
        leave_running: bool,
        /// Overwrite a non-empty DIR.
        #[arg(long)]
        force: bool,
        /// Compress page chunks with lz4.
        #[arg(long)]
        compress: bool,
        /// Worker threads for page I/O (default: number of CPUs).
        #[arg(long)]
        workers: Option<usize>,
        /// With --leave-running: the most memory copied while the tree is frozen, to be written
        /// after it runs again (e.g. 512M, 2G; 0: write while frozen). Default: half of the
        /// memory available.
        #[arg(long, value_name = "SIZE")]
        copy_limit: Option<String>,
        /// An incremental image: store only the page windows that differ from the image in
        /// PARENT (itself full or incremental); restore then needs PARENT where it is now,
        /// relative to DIR, unchanged.
        #[arg(long, value_name = "PARENT", conflicts_with = "name")]
        parent: Option<PathBuf>,
        /// Print figures as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Restore the tree saved in DIR; prints the restored root's pid on stdout. A partition
    /// image is restored as a partition (under its own name unless --name).
    Restore {
        /// Image directory.
        #[arg(long)]
        dir: PathBuf,
        /// Partition images: the name of the restored partition (default: the saved one).
        #[arg(long)]
        name: Option<String>,
        /// Reattach an object outside the tree to one of our fds: KEY=FD, e.g. pipe:[1234]=0
        /// (see `stasis inspect` for keys). Repeatable.
        #[arg(long = "inherit-fd", value_name = "KEY=FD")]
        inherit_fd: Vec<String>,
        /// Give each terminal outside the tree (tty:[N], not given with --inherit-fd) a new
        /// pseudo-terminal instead of failing or taking ours; each master is sent (SCM_RIGHTS,
        /// text "tty:[N] /dev/pts/M") to the unix socket listening at SOCKET once the tree runs.
        #[arg(long = "new-tty", value_name = "SOCKET")]
        new_tty: Option<PathBuf>,
        /// Worker threads for page I/O.
        #[arg(long)]
        workers: Option<usize>,
        /// Seconds to wait for pids still held by zombies of the dumped tree.
        #[arg(long, default_value_t = 10)]
        pid_wait: u64,
        /// Print the result as JSON (`{"pid": N}`, plus `"name"` for a partition).
        #[arg(long)]
        json: bool,
        /// Restore an image that is not signed by this root's host key or a trusted key.
        /// DANGEROUS: an image is code: it sets credentials, memory and registers; anyone who
        /// could write DIR gets a process with the saved credentials (root, capabilities).
        /// Files owned by another user or writable by group/others are refused even so.
        /// Prefer `stasis image trust DIR` once you know where the image comes from.
        #[arg(long)]
        insecure_unsigned: bool,
        /// Place private anonymous memory on demand (userfaultfd) from a page server process,
        /// which prefetches the rest and exits once every page is placed (not for partition
        /// images).
        #[arg(long)]
        lazy: bool,
        /// The page server's log (with --lazy; default /run/stasis/lazy-<pid of stasis>.log).
        #[arg(long, value_name = "FILE")]
        lazy_log: Option<PathBuf>,
    },
    /// Images: trust, verify, list and collect the agent's images, export and import them.
    Image {
        #[command(subcommand)]
        cmd: image::ImageCmd,
    },
    /// Start CMD as the first process of a new partition (own pid, ipc, uts and mount
    /// namespaces, own devpts, a cgroup with optional limits); prints its host pid.
    Run(partition::RunArgs),
    /// List partitions.
    Ps {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Stop a partition: SIGTERM to its first process, SIGKILL after a timeout.
    Stop {
        /// Partition name.
        name: String,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(long, short = 't', default_value_t = 10)]
        timeout: u64,
    },
    /// Remove partitions (their records, logs and accounting).
    Rm {
        /// Partition names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Kill a running partition first.
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Print a partition's output (stdout and stderr); an agent workload's too (a workload is
    /// a partition of the same name).
    Logs {
        /// Partition or workload name.
        name: String,
        /// Keep printing new output (until interrupted or the partition is removed).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Check the kernel features and programs stasis uses (each probed); exit 0 when every
    /// required one is present.
    Check {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Resource accounting of a partition, or of every partition and the host.
    Stats {
        /// Partition name (all partitions if omitted).
        name: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Run the node agent in the foreground: supervises workloads (consistency images, HA
    /// restarts, FFDC, hibernation), serves the API and dashboard. Stopping it leaves every
    /// workload running; the next agent adopts them.
    Agent {
        /// TCP address of the API and dashboard (`off`: the unix socket ROOT/api/agent.sock
        /// only). Every TCP request needs the token (`stasis token`); an address beyond
        /// loopback needs TLS.
        #[arg(long, default_value = "127.0.0.1:7670")]
        listen: String,
        /// Supervision period (failure detection, due checkpoints).
        #[arg(long, default_value = "200ms", value_name = "DURATION")]
        tick: String,
        #[command(flatten)]
        api: agent::ApiArgs,
    },
    /// Print the agent's API token (root only); --rotate replaces it (the running agent uses
    /// the new one at once; the old one and its dashboard sessions stop working).
    Token {
        /// Replace the token with a new random one, and print it.
        #[arg(long)]
        rotate: bool,
    },
    /// Trusted nodes: `node trust HOST:PORT --token TOKEN` (mutual), `ls`, `forget`, `id`.
    Node {
        #[command(subcommand)]
        cmd: node::NodeCmd,
    },
    /// Supervised workloads (through the agent).
    Workload {
        #[command(subcommand)]
        cmd: agent::WorkloadCmd,
        #[command(flatten)]
        conn: agent::ClientArgs,
    },
    /// Checkpoint a workload into the agent's repository and release its resources.
    Hibernate {
        /// Workload name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: agent::ClientArgs,
    },
    /// Bring a hibernated workload back with its state.
    Resume {
        /// Workload name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: agent::ClientArgs,
    },
    /// First-failure data capture bundles written by the agent.
    Ffdc {
        #[command(subcommand)]
        cmd: agent::FfdcCmd,
        #[command(flatten)]
        conn: agent::ClientArgs,
    },
    /// The agent's lifecycle events, in order; --follow streams them (and survives agent
    /// restarts, resuming after the last event seen).
    Events {
        /// Keep streaming new events.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: agent::ClientArgs,
    },
    /// Serve one request of the helper protocol read from standard input (internal: partition
    /// monitors, the agent's checkpoints).
    #[command(name = "__helper", hide = true)]
    Helper,
    /// Show what an image holds: tasks, mappings, files, sizes.
    Inspect {
        /// Image directory.
        #[arg(long)]
        dir: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Also verify every chunk's checksum.
        #[arg(long)]
        verify: bool,
    },
    /// Undo what a killed stasis left in processes (also done automatically by every command).
    Recover,
    /// Measure checkpoint and restore speed.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCmd,
    },
    /// Run the node agent demo: a supervised counter is killed twice and comes back (from its
    /// image, then cold), with FFDC bundles and the event log.
    Demo {
        /// Where to keep the demo's files (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The demo's workload (internal).
    #[command(hide = true)]
    DemoWorker,
    /// Write man pages, shell completions and the packaged systemd unit into DIR (packaging).
    #[command(name = "__gen-docs", hide = true)]
    GenDocs {
        /// Output directory.
        dir: PathBuf,
    },
    /// The benchmark's workload (internal).
    #[command(hide = true)]
    BenchWorker {
        #[arg(long)]
        size_mib: u64,
        #[arg(long)]
        ready: PathBuf,
    },
}

fn workers(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    })
}

fn compression(compress: bool) -> stasis_image::Compression {
    if compress {
        stasis_image::Compression::Lz4
    } else {
        stasis_image::Compression::None
    }
}

fn copy_limit_bytes(text: Option<&str>) -> Result<Option<u64>, Failed> {
    match text {
        None => Ok(None),
        Some("0") => Ok(Some(0)),
        Some(t) => partition::parse_size(t)
            .map(Some)
            .map_err(|e| (2, e.context("--copy-limit"))),
    }
}

fn parse_inherit(items: &[String]) -> anyhow::Result<HashMap<String, i32>> {
    let mut m = HashMap::new();
    for it in items {
        let (k, v) = it
            .rsplit_once('=')
            .with_context(|| format!("--inherit-fd {it}: expected KEY=FD"))?;
        let fd: i32 = v
            .parse()
            .with_context(|| format!("--inherit-fd {it}: FD must be a number"))?;
        m.insert(k.to_string(), fd);
    }
    Ok(m)
}

fn report(err: &anyhow::Error) {
    eprintln!("stasis: error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

/// The figures of a finished checkpoint: JSON on stdout, or one line on stderr.
fn print_checkpoint(
    stats: &stasis_engine::CheckpointStats,
    what: &str,
    dir: &std::path::Path,
    json: bool,
) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(stats).expect("serialisable")
        );
    } else {
        eprintln!(
            "checkpointed {what}{} process(es), {} thread(s): {:.1} MiB of memory in {:.3} s (frozen {:.3} s) into {}",
            stats.processes,
            stats.threads,
            stats.memory_bytes as f64 / (1 << 20) as f64,
            stats.total_secs,
            stats.frozen_secs,
            dir.display()
        );
    }
}

/// The exit code of an engine failure (also when the partition layer reports it): the one
/// place engine errors become exit codes.
pub(crate) fn cause_code(c: Cause) -> u8 {
    match c {
        Cause::Refused => 3,
        Cause::BadImage => 4,
        Cause::PidInUse => 5,
        Cause::Interrupted => 130,
        Cause::Other => 1,
    }
}

fn checkpoint_code(e: &CheckpointError) -> u8 {
    cause_code(e.cause())
}

fn restore_code(e: &RestoreError) -> u8 {
    cause_code(e.cause())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    if matches!(cli.cmd, Cmd::Agent { .. }) {
        if let Err(e) = agent_logging(&cli.root, cli.verbose) {
            eprintln!("stasis: error: {e:#}");
            return ExitCode::from(1);
        }
    } else {
        tracing_subscriber::fmt()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("STASIS_LOG")
                    .unwrap_or_else(|_| level.into()),
            )
            .init();
    }
    if let Err(e) = stasis_engine::failpoint::validate_config() {
        eprintln!("stasis: error: {e}");
        return ExitCode::from(2);
    }
    // The agent and its clients keep the default signal dispositions (the agent's runtime
    // handles SIGINT/SIGTERM itself; a client simply ends).
    let agent_verb = matches!(
        cli.cmd,
        Cmd::Agent { .. }
            | Cmd::Workload { .. }
            | Cmd::Hibernate { .. }
            | Cmd::Resume { .. }
            | Cmd::Ffdc { .. }
            | Cmd::Events { .. }
    );
    if agent_verb {
        // nothing to install
    } else if let Err(e) = stasis_sys::sys::install_interrupt_handlers() {
        eprintln!("stasis: warning: cannot install signal handlers: {e}");
    }
    // The hidden workload modes are the programs being checkpointed: they repair nothing (nor
    // does the packaging step that writes the docs).
    let is_workload = matches!(
        cli.cmd,
        Cmd::DemoWorker | Cmd::BenchWorker { .. } | Cmd::GenDocs { .. }
    );
    let repaired = if is_workload {
        0
    } else {
        stasis_engine::journal::recover()
    };
    if repaired > 0 {
        eprintln!(
            "stasis: repaired {repaired} process(es) left behind by an interrupted stasis run"
        );
    }
    let root = stasis_partition::state::Root::new(cli.root.clone());
    if !is_workload && !matches!(cli.cmd, Cmd::Helper) {
        // A command's output may go to a pipe that closes early (`stasis ps | head`). Not for
        // the agent nor `node`: they write to sockets whose peer may go away (vectored
        // writes to a closed TCP socket raise SIGPIPE; they must get EPIPE instead).
        if !matches!(cli.cmd, Cmd::Agent { .. } | Cmd::Node { .. }) {
            stasis_sys::sys::default_sigpipe();
        }
        for name in stasis_partition::ops::recover(&root) {
            eprintln!("stasis: thawed partition {name}, left frozen by an interrupted checkpoint");
        }
    }
    if let Cmd::Helper = &cli.cmd {
        let code = partition::helper(&root);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let r = match cli.cmd {
        Cmd::Agent { listen, tick, api } => agent::agent(&cli.root, &listen, &tick, api),
        Cmd::Token { rotate } => agent::token(&cli.root, rotate),
        Cmd::Node { cmd } => node::run(&cli.root, cmd),
        Cmd::Workload { cmd, conn } => agent::workload(&cli.root, &conn, cmd),
        Cmd::Hibernate { name, json, conn } => {
            agent::hibernate_or_resume(&cli.root, &conn, &name, false, json)
        }
        Cmd::Resume { name, json, conn } => {
            agent::hibernate_or_resume(&cli.root, &conn, &name, true, json)
        }
        Cmd::Ffdc { cmd, conn } => agent::ffdc(&cli.root, &conn, cmd),
        Cmd::Events {
            follow,
            since,
            json,
            conn,
        } => agent::events(&cli.root, &conn, since, follow, json),
        cmd => run(&root, cmd),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, err)) => {
            report(&err);
            ExitCode::from(code)
        }
    }
}

type Failed = (u8, anyhow::Error);

/// The agent logs to stderr and to ROOT/agent/agent.log, rotated at 10 MiB keeping 3 older
/// files (FFDC bundles quote its lines).
fn agent_logging(root: &std::path::Path, verbose: u8) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let paths = stasis_agent::daemon::AgentPaths::new(root);
    // A private root (0700, tightened if looser) and a private log (0600), opened relative to
    // its directory without following a link.
    // Rotated by size: agent.log, agent.log.1 … agent.log.3.
    let file = stasis_partition::state::private_root(root)
        .and_then(|r| r.ensure_dir("agent", stasis_image::safefs::PRIVATE_DIR))
        .and_then(|d| {
            stasis_agent::logfile::RotatingLog::open(
                d,
                "agent.log",
                stasis_agent::logfile::DEFAULT_MAX_BYTES,
                stasis_agent::logfile::DEFAULT_KEEP,
            )
        })
        .with_context(|| format!("opening {}", paths.log().display()))?;
    let level = if verbose > 1 { "debug" } else { "info" };
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("STASIS_LOG").unwrap_or_else(|_| level.into())
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .with_filter(filter()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Arc::new(file))
                .with_filter(filter()),
        )
        .init();
    Ok(())
}

fn run(root: &stasis_partition::state::Root, cmd: Cmd) -> Result<(), Failed> {
    match cmd {
        Cmd::Run(a) => partition::run(root, a),
        Cmd::Ps { json } => partition::ps(root, json),
        Cmd::Stop { name, timeout } => partition::stop(root, &name, timeout),
        Cmd::Rm { names, force } => partition::rm(root, &names, force),
        Cmd::Stats { name, json } => partition::stats(root, name.as_deref(), json),
        Cmd::Logs { name, follow } => logs::run(root, &name, follow),
        Cmd::Check { json } => check::run(json),
        Cmd::Helper
        | Cmd::Agent { .. }
        | Cmd::Token { .. }
        | Cmd::Node { .. }
        | Cmd::Workload { .. }
        | Cmd::Hibernate { .. }
        | Cmd::Resume { .. }
        | Cmd::Ffdc { .. }
        | Cmd::Events { .. } => unreachable!("handled before"),
        Cmd::Checkpoint {
            pid: None,
            name: Some(name),
            dir,
            leave_running,
            force,
            compress,
            workers: w,
            copy_limit,
            parent: _,
            json,
        } => partition::checkpoint(
            stasis_partition::checkpoint::Options {
                root: root.clone(),
                name,
                dir,
                leave_running,
                force,
                compression: compression(compress),
                workers: workers(w),
                copy_limit: copy_limit_bytes(copy_limit.as_deref())?,
            },
            json,
        ),
        Cmd::Checkpoint {
            pid,
            name: _,
            dir,
            leave_running,
            force,
            compress,
            workers: w,
            copy_limit,
            parent,
            json,
        } => {
            let pid = pid.ok_or_else(|| (2, anyhow::anyhow!("give --pid or --name")))?;
            let signer = stasis_engine::Keyring::load_or_create(&root.path).map_err(|e| {
                (
                    1,
                    anyhow::Error::new(e).context("the root's image signing key"),
                )
            })?;
            let progress = std::sync::Arc::new(stasis_engine::progress::Progress::default());
            let opts = stasis_engine::CheckpointOptions {
                signer: Some(signer),
                before_commit: None,
                buffer_limit: copy_limit_bytes(copy_limit.as_deref())?,
                freezer: None,
                pid_ns: false,
                pid,
                dir: dir.clone(),
                leave_running,
                force,
                compression: compression(compress),
                workers: workers(w),
                progress: Some(progress.clone()),
                parent,
                tracker: None,
            };
            let shown = spinner::show("checkpoint", &progress, json);
            let stats = stasis_engine::checkpoint(&opts);
            drop(shown);
            let stats = stats.map_err(|e| {
                let code = checkpoint_code(&e);
                (
                    code,
                    anyhow::Error::new(e).context(format!(
                        "checkpoint of pid {pid} into {} failed",
                        dir.display()
                    )),
                )
            })?;
            // Pids still held by zombies (`stats.pids_still_busy`) are normal now that a
            // kill-mode checkpoint returns once the tree is dead: a restore waits for them.
            print_checkpoint(&stats, "", &dir, json);
            Ok(())
        }
        Cmd::Restore {
            dir,
            name,
            inherit_fd,
            new_tty,
            workers: w,
            pid_wait: _,
            json,
            insecure_unsigned,
            lazy,
            lazy_log: _,
        } if partition::is_partition_image(&dir) => {
            if lazy {
                return Err((
                    2,
                    anyhow::anyhow!("--lazy does not apply to a partition image (yet)"),
                ));
            }
            if !inherit_fd.is_empty() || new_tty.is_some() {
                return Err((
                    2,
                    anyhow::anyhow!("--inherit-fd and --new-tty do not apply to a partition image: its output goes to its log"),
                ));
            }
            partition::restore(
                root,
                &dir,
                name.as_deref(),
                workers(w),
                insecure_unsigned,
                json,
            )
        }
        Cmd::Restore {
            dir,
            name,
            inherit_fd,
            new_tty,
            workers: w,
            pid_wait,
            json,
            insecure_unsigned,
            lazy,
            lazy_log,
        } => {
            if name.is_some() {
                return Err((
                    2,
                    anyhow::anyhow!(
                        "--name applies to partition images only; {} holds a process tree",
                        dir.display()
                    ),
                ));
            }
            let mut inherit = parse_inherit(&inherit_fd).map_err(|e| (2, e))?;
            let trust = image::trust_for_restore(&root.path, insecure_unsigned)?;
            let given = match &new_tty {
                Some(sock) => {
                    let g = newtty::prepare(&dir, &trust, sock, &inherit).map_err(|e| (1, e))?;
                    g.inherit(&mut inherit);
                    Some(g)
                }
                None => None,
            };
            let progress = std::sync::Arc::new(stasis_engine::progress::Progress::default());
            let opts = stasis_engine::RestoreOptions {
                trust,
                new_pid_ns: false,
                root_mnt_ns: None,
                on_root: None,
                dir: dir.clone(),
                inherit,
                workers: workers(w),
                pid_wait: std::time::Duration::from_secs(pid_wait),
                progress: Some(progress.clone()),
            };
            let shown = spinner::show("restore", &progress, json);
            let log = lazy_log.unwrap_or_else(|| {
                PathBuf::from(format!("/run/stasis/lazy-{}.log", std::process::id()))
            });
            let stats = if lazy {
                if let Some(d) = log.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                let log = log.clone();
                stasis_engine::restore_lazy(&opts, &stasis_engine::lazy::LazyOptions { log })
            } else {
                stasis_engine::restore(&opts)
            };
            drop(shown);
            let stats = stats.map_err(|e| {
                let code = restore_code(&e);
                (
                    code,
                    anyhow::Error::new(e).context(format!("restore from {} failed", dir.display())),
                )
            })?;
            if let Some(g) = given {
                g.hand_over().map_err(|e| (1, e))?;
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"pid": stats.root_pid, "stats": stats})
                );
            } else {
                println!("{}", stats.root_pid);
                if let Some(s) = stats.page_server {
                    eprintln!(
                        "stasis: page server {s} places the remaining pages; its log: {}",
                        log.display()
                    );
                }
                for r in &stats.replaced {
                    eprintln!(
                        "stasis: note: {} is outside the tree and was not given with --inherit-fd, \
                         so the restored tree holds {} in its place; to reattach it, pass an fd \
                         of yours with --inherit-fd '{}=FD'",
                        r.key, r.now, r.key
                    );
                }
            }
            tracing::info!(?stats, "restored");
            Ok(())
        }
        Cmd::Inspect { dir, json, verify } => inspect::run(&root.path, &dir, json, verify),
        Cmd::Image { cmd } => image::run(&root.path, cmd),
        Cmd::Recover => {
            eprintln!(
                "recovered {} process(es)",
                stasis_engine::journal::recover()
            );
            Ok(())
        }
        Cmd::Bench { what } => bench::run(what).map_err(|e| (1, e)),
        Cmd::Demo { dir } => demo::run(dir).map_err(|e| (1, e)),
        Cmd::DemoWorker => demo::worker(),
        Cmd::GenDocs { dir } => {
            use clap::CommandFactory;
            gendocs::run(Cli::command(), &dir).map_err(|e| (1, e))
        }
        Cmd::BenchWorker { size_mib, ready } => bench::worker(size_mib, ready),
    }
}
