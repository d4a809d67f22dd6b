//! The partition verbs of the CLI: `run`, `ps`, `stop`, `rm`, `stats`, and the partition forms
//! of `checkpoint` and `restore` (the work is in stasis-partition).

use crate::Failed;
use anyhow::anyhow;
use clap::Args;
use stasis_partition::cgroup::Limits;
use stasis_partition::ops;
use stasis_partition::state::{NetMode, Root, Spec};
use std::path::PathBuf;
use std::time::Duration;

/// Options of a partition, shared by `run` and `workload add`.
#[derive(Args, Debug, Clone)]
pub struct PartitionArgs {
    /// Network: host (share the host's), none (own namespace, loopback only), veth (own
    /// namespace joined to the host by a veth pair with addresses from 10.231.0.0/16).
    #[arg(long, default_value = "host")]
    pub net: NetMode,
    /// Own root filesystem (a directory holding a Linux userland).
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Hostname inside the partition (default: the name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Working directory of the first process (default: the current one, or / with --rootfs).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment for the first process: KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Memory limit, e.g. 512M, 2G (bytes without a suffix).
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU limit in CPUs, e.g. 0.5 or 2.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of tasks (processes and threads).
    #[arg(long)]
    pub pids: Option<u64>,
}

/// `stasis run` options.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Partition name (also its hostname unless --hostname).
    #[arg(long)]
    pub name: String,
    /// Partition options.
    #[command(flatten)]
    pub partition: PartitionArgs,
    /// Print the result as JSON (`{"name": ..., "pid": N}`) instead of the bare pid.
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// Parse a size: 512, 64K, 512M, 2G.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        Some('t' | 'T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.parse().map_err(|_| {
        anyhow!("bad size '{s}': use a number with an optional K, M, G or T suffix")
    })?;
    if n.is_nan() || n <= 0.0 {
        return Err(anyhow!("bad size '{s}': must be positive"));
    }
    Ok((n * mul as f64) as u64)
}

fn fail(code: i32, e: impl std::fmt::Display) -> Failed {
    (code.clamp(1, 255) as u8, anyhow!("{e}"))
}

/// Exit code of a partition verb's failure: 4 unusable image, 6 name conflicts/state, the
/// engine's or monitor's failure as [`crate::cause_code`], else 1.
fn ops_code(e: &ops::OpsError) -> u8 {
    use ops::OpsError as E;
    match e {
        E::BadImage { .. } => 4,
        E::Exists { .. } | E::Running(_) | E::NameBusy(_) => 6,
        E::Start(e) => crate::cause_code(e.cause()),
        _ => 1,
    }
}

fn ops_err(e: ops::OpsError) -> Failed {
    (ops_code(&e), anyhow!("{e}"))
}

/// The partition spec `a` describes, for partition `name` running `cmd`.
pub fn spec_from(name: &str, a: PartitionArgs, cmd: Vec<String>) -> Result<Spec, Failed> {
    stasis_image::name::Name::check(name).map_err(|e| fail(2, e))?;
    let memory = a
        .memory
        .as_deref()
        .map(parse_size)
        .transpose()
        .map_err(|e| (2, e))?;
    if let Some(c) = a.cpus {
        if c.is_nan() || c <= 0.0 {
            return Err(fail(2, "--cpus must be positive"));
        }
    }
    if let Some(r) = &a.rootfs {
        if !r.is_dir() {
            return Err(fail(
                2,
                format!("--rootfs {}: not a directory", r.display()),
            ));
        }
    }
    let rootfs = a
        .rootfs
        .map(|r| r.canonicalize())
        .transpose()
        .map_err(|e| fail(2, format!("--rootfs: {e}")))?;
    let cwd = match (a.cwd, &rootfs) {
        // A relative --cwd is taken from where the command is run (or from / in a rootfs).
        (Some(c), None) if c.is_relative() => std::env::current_dir().ok().map(|d| d.join(c)),
        (Some(c), Some(_)) if c.is_relative() => Some(PathBuf::from("/").join(c)),
        (Some(c), _) => Some(c),
        (None, Some(_)) => Some(PathBuf::from("/")),
        (None, None) => std::env::current_dir().ok(),
    };
    Ok(Spec {
        cmd,
        net: a.net,
        veth: None,
        rootfs,
        hostname: a.hostname.unwrap_or_else(|| name.to_string()),
        cwd,
        env: a.env,
        limits: Limits {
            memory_bytes: memory,
            cpus: a.cpus,
            pids: a.pids,
        },
    })
}

/// `stasis run`.
pub fn run(root: &Root, a: RunArgs) -> Result<(), Failed> {
    let spec = spec_from(&a.name, a.partition, a.cmd)?;
    let name = a.name;
    let pid = ops::run(
        root,
        ops::RunOptions {
            name: name.clone(),
            spec,
        },
    )
    .map_err(ops_err)?;
    print_started(&name, pid, a.json);
    Ok(())
}

/// `stasis ps`.
pub fn ps(root: &Root, json: bool) -> Result<(), Failed> {
    let rows = ops::ps(root).map_err(ops_err)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("serializable")
        );
        return Ok(());
    }
    println!(
        "{:<20} {:<13} {:>8} {:>9} {:>5}  COMMAND",
        "NAME", "STATE", "PID", "UPTIME", "INC"
    );
    for r in rows {
        let state = match (r.state, r.exit_code, r.exit_signal) {
            (stasis_partition::state::State::Exited, Some(c), _) => format!("exited({c})"),
            (stasis_partition::state::State::Exited, _, Some(s)) => format!("killed({s})"),
            (s, _, _) => s.to_string(),
        };
        println!(
            "{:<20} {:<13} {:>8} {:>9} {:>5}  {}",
            r.name,
            state,
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.uptime_secs
                .map(|s| format!("{}s", s))
                .unwrap_or_else(|| "-".into()),
            r.incarnation,
            r.command.join(" ")
        );
    }
    Ok(())
}

/// `stasis stop`.
pub fn stop(root: &Root, name: &str, timeout: u64) -> Result<(), Failed> {
    let st = ops::stop(root, name, Duration::from_secs(timeout)).map_err(ops_err)?;
    eprintln!("{name}: {st}");
    Ok(())
}

/// `stasis rm`.
pub fn rm(root: &Root, names: &[String], force: bool) -> Result<(), Failed> {
    for n in names {
        ops::rm(root, n, force).map_err(ops_err)?;
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// `stasis stats [NAME]`.
pub fn stats(root: &Root, name: Option<&str>, json: bool) -> Result<(), Failed> {
    match name {
        Some(n) => {
            let s = ops::stats(root, n).map_err(ops_err)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s).expect("serializable")
                );
                return Ok(());
            }
            let u = &s.usage;
            println!("partition {} ({})", s.name, s.state);
            println!(
                "  cpu time     {:.3} s{}",
                u.cpu_ns as f64 / 1e9,
                s.cpu_rate
                    .map(|r| format!(" (now {:.2} CPUs)", r))
                    .unwrap_or_default()
            );
            println!(
                "  memory       {} (peak {})",
                mib(u.memory_bytes),
                mib(u.memory_peak_bytes)
            );
            println!(
                "  io           read {}, written {}",
                mib(u.io_read_bytes),
                mib(u.io_write_bytes)
            );
            println!("  tasks        {}", u.pids);
            println!("  oom kills    {}", u.oom_kills);
            println!(
                "  limits       memory {}, cpus {}, tasks {}",
                s.limits.memory_bytes.map(mib).unwrap_or_else(|| "-".into()),
                s.limits
                    .cpus
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.limits
                    .pids
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into())
            );
            println!("  history      {} samples", s.samples);
        }
        None => {
            let g = ops::global_stats(root).map_err(ops_err)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&g).expect("serializable")
                );
                return Ok(());
            }
            println!(
                "{:<20} {:<13} {:>10} {:>12} {:>12} {:>6} {:>4}",
                "NAME", "STATE", "CPU s", "MEMORY", "PEAK", "TASKS", "OOM"
            );
            let row = |n: &str, st: &str, u: &stasis_partition::cgroup::Usage| {
                println!(
                    "{:<20} {:<13} {:>10.2} {:>12} {:>12} {:>6} {:>4}",
                    n,
                    st,
                    u.cpu_ns as f64 / 1e9,
                    mib(u.memory_bytes),
                    mib(u.memory_peak_bytes),
                    u.pids,
                    u.oom_kills
                )
            };
            for p in &g.partitions {
                row(&p.name, &p.state.to_string(), &p.usage);
            }
            row("(all partitions)", "", &g.total);
            println!(
                "host: {} CPUs, {:.1} s cpu since boot, memory {} of {}",
                g.host.cpus,
                g.host.cpu_ns as f64 / 1e9,
                mib(g.host.memory_bytes),
                mib(g.host.memory_total_bytes)
            );
        }
    }
    Ok(())
}

/// `stasis checkpoint --name`.
pub fn checkpoint(opts: stasis_partition::checkpoint::Options, json: bool) -> Result<(), Failed> {
    let name = opts.name.clone();
    let dir = opts.dir.clone();
    let stats = crate::spinner::note(format!("checkpoint of partition {name}"), json, || {
        stasis_partition::checkpoint::checkpoint(&opts)
    })
    .map_err(|e| {
        (
            match &e {
                stasis_partition::checkpoint::PartitionCheckpointError::Failed(e) => {
                    crate::cause_code(e.cause())
                }
                _ => 1,
            },
            anyhow!(
                "checkpoint of partition {name} into {} failed: {e}",
                dir.display()
            ),
        )
    })?;
    crate::print_checkpoint(&stats, &format!("partition {name}: "), &dir, json);
    Ok(())
}

/// Is `dir` a partition image?
pub fn is_partition_image(dir: &std::path::Path) -> bool {
    dir.join(stasis_image::PARTITION_FILE).exists()
}

/// `stasis restore` of a partition image.
pub fn restore(
    root: &Root,
    dir: &std::path::Path,
    name: Option<&str>,
    workers: usize,
    insecure_unsigned: bool,
    json: bool,
) -> Result<(), Failed> {
    if insecure_unsigned {
        eprintln!("{}", crate::image::INSECURE_WARNING);
    }
    let what = format!("restore of {}", dir.display());
    let pid = crate::spinner::note(what, json, || {
        ops::restore_with(root, dir, name, workers, insecure_unsigned)
    })
    .map_err(ops_err)?;
    let name = match name {
        Some(n) => n.to_string(),
        None => stasis_image::ImageReader::open(dir)
            .ok()
            .and_then(|r| stasis_partition::image::read(&r).ok().flatten())
            .map(|p| p.raw.name)
            .unwrap_or_default(),
    };
    print_started(&name, pid, json);
    Ok(())
}

/// The one line `run` and `restore` print: the host pid, or JSON.
fn print_started(name: &str, pid: i32, json: bool) {
    if json {
        println!("{}", serde_json::json!({"name": name, "pid": pid}));
    } else {
        println!("{pid}");
    }
}

/// The hidden `__helper` verb: its request comes on standard input, a socket of the helper
/// protocol.
pub fn helper(root: &Root) -> i32 {
    use std::os::fd::AsFd;
    // Keep the channel, and point stdin at /dev/null so the processes we fork (a monitor's
    // restorer and first process) do not hold the caller's socket open.
    let chan = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::os::unix::net::UnixStream::from(fd),
        Err(_) => return 2,
    };
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = stasis_sys::ns::dup2(null.as_fd(), 0);
    }
    stasis_partition::helper::serve(root, chan)
}
