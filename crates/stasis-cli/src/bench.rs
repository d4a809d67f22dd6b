//! `stasis bench`: checkpoint and restore throughput on a process with touched anonymous memory.
//!
//! The workload is this binary in its hidden `bench-worker` mode: it maps SIZE MiB of private
//! anonymous memory, writes a non-zero pattern into every page (so none is skipped as zero),
//! creates a ready file and sleeps.
//!
//! `bench agent` runs it as a workload of a real agent (a child `stasis agent` on a root of
//! its own): consistency checkpoints through the API, then SIGKILLs of its first process and
//! the time until the agent shows it running again from its latest image.

use crate::child_agent::ChildAgent;
use anyhow::{bail, Context};
use stasis_agent::unix_ms;
use stasis_sys::wait::{wait_exit, Block, Who};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Checkpoint and restore a process with SIZE MiB of touched anonymous memory.
    Checkpoint {
        /// Memory of the workload, in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Where to write the image (default: a directory in /dev/shm, a tmpfs).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Worker threads.
        #[arg(long)]
        workers: Option<usize>,
        /// Compress chunks with lz4.
        #[arg(long)]
        compress: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Lazy restore of SIZE MiB of touched anonymous memory against a full restore: how long
    /// until `restore` returns, until the restored root runs (the first page fault its page
    /// server serves), and until every page is placed.
    RestoreLazy {
        /// Memory of the workload, in MiB (repeatable).
        #[arg(long, default_values_t = [64, 1024])]
        size_mib: Vec<u64>,
        /// Restores of each kind per size.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Where to write the image (default: a directory in /dev/shm, a tmpfs).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// An idle workload of SIZE MiB: the freeze and the bytes stored of an incremental image
    /// (write tracking with a DirtyTracker, and by difference without one) next to the full
    /// image's.
    Incremental {
        /// Memory of the workload, in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Where to write the images (default: a directory in /dev/shm, a tmpfs).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Worker threads.
        #[arg(long)]
        workers: Option<usize>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// A partition holding SIZE MiB: how long periodic `checkpoint --name --leave-running`
    /// freezes it, and how long a kill-mode checkpoint and a restore (to running) take, end to
    /// end through the CLI.
    Partition {
        /// Memory of the workload, in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Leave-running checkpoints to measure.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Where to keep state and images (default: a directory in $TMPDIR or /tmp).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// A workload of SIZE MiB supervised by a real agent: how long its consistency
    /// checkpoints freeze it (and take), and how long it takes from a failure (SIGKILL of its
    /// first process) until it runs again from its latest image.
    Agent {
        /// Memory of the workload, in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Checkpoints to force through the API.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Failures to cause (default: as many as --rounds).
        #[arg(long)]
        failures: Option<usize>,
        /// Where to make the agent's root, which holds the images (default: $TMPDIR or
        /// /tmp).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// The benchmark workload.
pub fn worker(size_mib: u64, ready: PathBuf) -> ! {
    let len = (size_mib << 20) as usize;
    let mut v: Vec<u64> = Vec::with_capacity(len / 8);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..len / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x | 1);
    }
    let _ = std::fs::write(&ready, b"ready");
    loop {
        std::thread::sleep(Duration::from_secs(1));
        std::hint::black_box(&v);
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let md = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            total += if md.is_dir() {
                dir_size(&e.path())
            } else {
                md.len()
            };
        }
    }
    total
}

fn cli(root: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "stasis {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn partition_bench(
    size_mib: u64,
    rounds: usize,
    dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let base = dir.unwrap_or_else(|| {
        // Not /dev/shm: a partition has a /dev/shm of its own, and the workload's ready file
        // must be seen from here.
        std::env::temp_dir().join(format!("stasis-pbench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&base)?;
    let root = base.join("state");
    let ready = base.join("ready");
    let _ = std::fs::remove_file(&ready);
    let name = format!("bench-{}", std::process::id());
    let exe = std::env::current_exe()?;
    let result = (|| -> anyhow::Result<serde_json::Value> {
        cli(
            &root,
            &[
                "run",
                "--name",
                &name,
                "--",
                &exe.to_string_lossy(),
                "bench-worker",
                "--size-mib",
                &size_mib.to_string(),
                "--ready",
                &ready.to_string_lossy(),
            ],
        )?;
        let start = Instant::now();
        while !ready.exists() {
            if start.elapsed() > Duration::from_secs(120) {
                bail!("benchmark partition did not get ready");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (mut frozen, mut total) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            let img = base.join(format!("img-{i}"));
            let t = Instant::now();
            let out = cli(
                &root,
                &[
                    "checkpoint",
                    "--name",
                    &name,
                    "--dir",
                    &img.to_string_lossy(),
                    "--leave-running",
                    "--json",
                ],
            )?;
            total.push(t.elapsed().as_secs_f64());
            let v: serde_json::Value = serde_json::from_str(&out)?;
            frozen.push(v["frozen_secs"].as_f64().unwrap_or(0.0));
            let _ = std::fs::remove_dir_all(&img);
        }
        let img = base.join("img-final");
        let t = Instant::now();
        cli(
            &root,
            &[
                "checkpoint",
                "--name",
                &name,
                "--dir",
                &img.to_string_lossy(),
            ],
        )?;
        let kill_secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        cli(&root, &["restore", "--dir", &img.to_string_lossy()])?;
        let restore_secs = t.elapsed().as_secs_f64();
        let mb = (size_mib << 20) as f64;
        Ok(serde_json::json!({
            "size_mib": size_mib,
            "rounds": rounds,
            "leave_running_frozen_secs_median": median(&mut frozen.clone()),
            "leave_running_frozen_secs_max": frozen.iter().cloned().fold(0.0, f64::max),
            "leave_running_total_secs_median": median(&mut total),
            "checkpoint_kill_secs": kill_secs,
            "restore_to_running_secs": restore_secs,
            "checkpoint_kill_gb_per_s": mb / kill_secs / 1e9,
            "restore_gb_per_s": mb / restore_secs / 1e9,
        }))
    })();
    let _ = cli(&root, &["rm", "-f", &name]);
    let _ = std::fs::remove_dir_all(&base);
    let v = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("partition with {size_mib} MiB touched anonymous memory, {rounds} leave-running checkpoints:");
        println!(
            "  frozen per checkpoint: median {:.3} s, max {:.3} s; checkpoint command {:.3} s",
            v["leave_running_frozen_secs_median"]
                .as_f64()
                .unwrap_or(0.0),
            v["leave_running_frozen_secs_max"].as_f64().unwrap_or(0.0),
            v["leave_running_total_secs_median"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  checkpoint that ends it: {:.3} s ({:.2} GB/s); restore to running: {:.3} s ({:.2} GB/s)",
            v["checkpoint_kill_secs"].as_f64().unwrap_or(0.0),
            v["checkpoint_kill_gb_per_s"].as_f64().unwrap_or(0.0),
            v["restore_to_running_secs"].as_f64().unwrap_or(0.0),
            v["restore_gb_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// Nearest-rank percentile `q` (0..=1) of `v`, sorted in place; 0 for none.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Median, p90, max and min of a series, as JSON, with the values in the order measured.
fn spread(v: &[f64]) -> serde_json::Value {
    let mut s = v.to_vec();
    serde_json::json!({
        "n": s.len(),
        "median": median(&mut s),
        "p90": percentile(&mut s, 0.9),
        "max": s.last().copied().unwrap_or(0.0),
        "min": s.first().copied().unwrap_or(0.0),
        "all": v,
    })
}

/// A benchmark agent on a root of its own, its workload, and their clean-up: the workload is
/// removed through the agent, the agent is stopped, a partition left over is removed with
/// `stasis rm -f`, and the root is deleted.
struct BenchAgent {
    agent: ChildAgent,
    name: String,
    /// The workload was (or may have been) added: it is removed on drop.
    added: bool,
}

impl BenchAgent {
    fn start(exe: &Path, root: &Path, name: String) -> anyhow::Result<BenchAgent> {
        let agent = ChildAgent::start(exe, root, &["--tick", "100ms"], &root.join("agent.out"))?;
        Ok(BenchAgent {
            agent,
            name,
            added: false,
        })
    }

    /// The end of the agent's output, to explain a failure.
    fn output(&self) -> String {
        let tail = self.agent.output_tail(10);
        if tail.is_empty() {
            String::new()
        } else {
            format!("\nthe agent's last output:\n{tail}")
        }
    }

    fn path(&self) -> String {
        format!("/v1/workloads/{}", self.name)
    }

    fn view(&self) -> anyhow::Result<serde_json::Value> {
        self.agent
            .client()
            .get(&self.path())
            .map_err(|e| anyhow::anyhow!("GET {}: {e}{}", self.path(), self.output()))
    }
}

impl Drop for BenchAgent {
    fn drop(&mut self) {
        let workload = self.added.then_some(self.name.as_str());
        if let Err(e) = self.agent.shutdown(workload) {
            eprintln!("stasis bench: cleaning up: {e:#}");
        }
        let _ = std::fs::remove_dir_all(self.agent.root());
    }
}

/// A file removed when this is dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One failure and the way back.
struct Failover {
    /// Until the agent shows the workload running with a new pid.
    running_secs: f64,
    /// Until the agent's view shows `restarts` incremented.
    restarts_secs: f64,
    /// Until the agent noticed (its FFDC record of the failure).
    detect_secs: Option<f64>,
    /// Until the restore returned (the restored first process exists; its restart record).
    restored_secs: Option<f64>,
}

fn agent_bench(
    size_mib: u64,
    rounds: usize,
    failures: usize,
    dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    const EVERY: &str = "2s";
    const WINDOW_MS: u64 = 1000;
    const GAP: Duration = Duration::from_millis(1500);
    let exe = std::env::current_exe()?;
    let base = dir.unwrap_or_else(std::env::temp_dir);
    let root = base.join(format!("stasis-abench-{}", std::process::id()));
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("removing an old {}", root.display()))?;
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    // The ready file goes where the partition sees the same file (not /dev/shm, even when
    // the root is there).
    let ready = std::env::temp_dir().join(format!("stasis-abench-{}.ready", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let _ready_gone = RemoveOnDrop(ready.clone());
    // Partition names are global (their cgroups are): one of its own.
    let name = format!("bench-agent-{}", std::process::id());
    let mut agent = BenchAgent::start(&exe, &root, name.clone())?;
    let c = agent.agent.client().clone();
    let wpath = agent.path();

    // The workload.
    let spec = serde_json::json!({
        "name": name,
        "partition": {
            "cmd": [exe.to_string_lossy(), "bench-worker", "--size-mib", size_mib.to_string(),
                    "--ready", ready.to_string_lossy()],
            "net": "host",
            "hostname": "bench",
            "cwd": "/",
            "env": [],
            "limits": {},
        },
        "checkpoint_every": EVERY,
        "images_kept": 2,
        "policy": { "failover_window": format!("{WINDOW_MS}ms"), "boot_restarts": 3 },
    });
    let seq0 = c.get("/v1/health")?["last_seq"].as_u64().unwrap_or(0);
    agent.added = true;
    c.post("/v1/workloads", Some(&spec))
        .map_err(|e| anyhow::anyhow!("adding the workload: {e}{}", agent.output()))?;
    let start = Instant::now();
    while !ready.exists() {
        crate::check_interrupt()?;
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the benchmark workload did not get ready");
        }
        if agent.view()?["state"] == "failed" {
            bail!("the benchmark workload failed to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // (a) Consistency checkpoints forced through the API.
    let (mut frozen, mut wall) = (Vec::new(), Vec::new());
    let mut forced = std::collections::BTreeSet::new();
    for i in 0..rounds {
        crate::check_interrupt()?;
        if i > 0 {
            // Paced like the periodic schedule (which each forced one postpones), not back to
            // back: images written in a row compete with the writeback of the previous ones.
            std::thread::sleep(GAP);
        }
        let t = Instant::now();
        let v = c
            .post(&format!("{wpath}/checkpoint"), None)
            .map_err(|e| anyhow::anyhow!("checkpoint: {e}"))?;
        wall.push(t.elapsed().as_secs_f64());
        frozen.push(v["frozen_secs"].as_f64().unwrap_or(0.0));
        if let Some(id) = v["image"].as_str() {
            forced.insert(id.to_string());
        }
    }
    let image_bytes = c
        .get(&format!("{wpath}/images"))
        .ok()
        .and_then(|v| {
            v["images"]
                .as_array()
                .and_then(|l| l.iter().filter_map(|i| i["bytes"].as_u64()).max())
        })
        .unwrap_or(0);

    // (b) Failures: each right after a periodic image of the current run is committed (so no
    // checkpoint is under way) and longer than the failover window after the last restart, so
    // that the policy restores the image.
    let mut overs: Vec<Failover> = Vec::new();
    let mut discarded = 0usize;
    let mut attempts = 0usize;
    let mut seen_ckpt = agent.view()?["last_checkpoint_unix_ms"]
        .as_u64()
        .unwrap_or(0);
    while overs.len() < failures {
        attempts += 1;
        if attempts > failures * 2 + 3 {
            bail!(
                "{} of {attempts} failures were boot restarts, not image restarts",
                discarded
            );
        }
        let wait_from = Instant::now();
        let v = loop {
            crate::check_interrupt()?;
            if wait_from.elapsed() > Duration::from_secs(300) {
                bail!("no new consistency image within 300 s");
            }
            let v = agent.view()?;
            let restart_at = v["restart_log"]
                .as_array()
                .and_then(|l| l.last())
                .and_then(|e| e["at_unix_ms"].as_u64())
                .unwrap_or(0);
            let ckpt = v["last_checkpoint_unix_ms"].as_u64().unwrap_or(0);
            if v["state"] == "failed" {
                bail!(
                    "the workload was marked failed: {}",
                    v["last_failure"].as_str().unwrap_or("?")
                );
            }
            if v["state"] == "running"
                && v["pid"].as_i64().is_some()
                && v["images"].as_u64().unwrap_or(0) >= 1
                && ckpt > seen_ckpt
                && ckpt > restart_at
                && unix_ms().saturating_sub(restart_at) > WINDOW_MS + 200
            {
                seen_ckpt = ckpt;
                break v;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let old_pid = v["pid"].as_i64().unwrap_or(0) as i32;
        let restarts0 = v["restarts"].as_u64().unwrap_or(0);
        let kill_ms = unix_ms();
        let t0 = Instant::now();
        stasis_sys::sys::kill(old_pid, libc::SIGKILL)
            .with_context(|| format!("killing the workload's first process {old_pid}"))?;
        let mut restarts_secs = None;
        let v = loop {
            crate::check_interrupt()?;
            if t0.elapsed() > Duration::from_secs(300) {
                bail!("the workload did not run again within 300 s of its failure");
            }
            let v = agent.view()?;
            let el = t0.elapsed().as_secs_f64();
            if restarts_secs.is_none() && v["restarts"].as_u64().unwrap_or(0) > restarts0 {
                restarts_secs = Some(el);
            }
            if v["state"] == "failed" {
                bail!(
                    "the workload was marked failed: {}",
                    v["last_failure"].as_str().unwrap_or("?")
                );
            }
            let pid = v["pid"].as_i64().unwrap_or(0) as i32;
            if v["state"] == "running"
                && pid > 0
                && pid != old_pid
                && stasis_partition::state::alive(pid)
            {
                break v;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let running_secs = t0.elapsed().as_secs_f64();
        if v["last_restart"] != "image" {
            // Restarted from its boot command: not what is measured here. Its images are
            // gone; the next attempt waits for a new one.
            discarded += 1;
            continue;
        }
        let since_kill = |ms: u64| ms.saturating_sub(kill_ms) as f64 / 1000.0;
        let new_pid = v["pid"].as_i64().unwrap_or(0);
        let restored_secs = v["restart_log"]
            .as_array()
            .and_then(|l| l.iter().rev().find(|e| e["pid"].as_i64() == Some(new_pid)))
            .and_then(|e| e["at_unix_ms"].as_u64())
            .map(since_kill);
        let detect_secs = c
            .get(&format!("/v1/ffdc?workload={name}"))
            .ok()
            .and_then(|b| {
                b["bundles"].as_array().and_then(|l| {
                    l.iter()
                        .filter_map(|b| b["failure"]["at_unix_ms"].as_u64())
                        .filter(|&at| at >= kill_ms)
                        .min()
                })
            })
            .map(since_kill);
        overs.push(Failover {
            running_secs,
            restarts_secs: restarts_secs.unwrap_or(running_secs),
            detect_secs,
            restored_secs,
        });
    }

    // The periodic checkpoints taken meanwhile, from the event log.
    let events = c.get(&format!("/v1/events?since={seq0}&limit=1000000"))?;
    let periodic: Vec<f64> = events["events"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|e| e["kind"] == "workload.checkpointed")
                .filter(|e| {
                    e["payload"]["image"]
                        .as_str()
                        .is_some_and(|i| !forced.contains(i))
                })
                .filter_map(|e| e["payload"]["frozen_secs"].as_f64())
                .collect()
        })
        .unwrap_or_default();
    drop(agent);

    let col =
        |f: fn(&Failover) -> Option<f64>| -> Vec<f64> { overs.iter().filter_map(f).collect() };
    let wall_median = median(&mut wall.clone());
    let mib_per_s = if wall_median > 0.0 {
        size_mib as f64 / wall_median
    } else {
        0.0
    };
    let out = serde_json::json!({
        "size_mib": size_mib,
        "tick": "100ms",
        "checkpoint_every": EVERY,
        "failover_window": format!("{WINDOW_MS}ms"),
        "root": root,
        "checkpoint": {
            "rounds": rounds,
            "frozen_secs": spread(&frozen),
            "wall_secs": spread(&wall),
            "mib_per_s": mib_per_s,
            "image_bytes": image_bytes,
        },
        "periodic_checkpoint_frozen_secs": spread(&periodic),
        "failover": {
            "failures": overs.len(),
            "boot_restarts_discarded": discarded,
            "running_secs": spread(&col(|o| Some(o.running_secs))),
            "restarts_incremented_secs": spread(&col(|o| Some(o.restarts_secs))),
            "detected_secs": spread(&col(|o| o.detect_secs)),
            "restored_secs": spread(&col(|o| o.restored_secs)),
        },
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let line = |v: &serde_json::Value| {
        format!(
            "median {:.3} s, p90 {:.3} s, max {:.3} s",
            f(v, "median"),
            f(v, "p90"),
            f(v, "max")
        )
    };
    println!(
        "agent (tick 100ms) supervising a workload of {size_mib} MiB touched anonymous memory; \
         images every {EVERY} under {}",
        root.display()
    );
    let ck = &out["checkpoint"];
    println!(
        "  frozen by a consistency checkpoint ({size_mib} MiB, {rounds} forced through the API): {}",
        line(&ck["frozen_secs"])
    );
    println!(
        "  whole checkpoint (API call to committed image): {}; {:.0} MiB/s; image {:.1} MiB",
        line(&ck["wall_secs"]),
        mib_per_s,
        image_bytes as f64 / 1048576.0
    );
    println!(
        "  frozen by the periodic checkpoints ({} taken meanwhile): {}",
        periodic.len(),
        line(&out["periodic_checkpoint_frozen_secs"])
    );
    let fo = &out["failover"];
    println!(
        "  failure (SIGKILL) → running from its image ({} failures): {}",
        overs.len(),
        line(&fo["running_secs"])
    );
    println!(
        "    detected by the agent after {}",
        line(&fo["detected_secs"])
    );
    println!(
        "    restored (new first process exists) after {}",
        line(&fo["restored_secs"])
    );
    println!(
        "    `restarts` incremented in the API after {}",
        line(&fo["restarts_incremented_secs"])
    );
    if discarded > 0 {
        println!("  ({discarded} failure(s) ended in a boot restart and were not counted)");
    }
    Ok(())
}

/// The physical limits a checkpoint and a restore of the same memory are bounded by, measured
/// in the same run: `process_vm_readv`/`process_vm_writev` of the workload's anonymous memory
/// (with as many threads as the engine uses), and the image file system's write and read speed
/// for as many bytes.
struct Limits {
    readv_gbps: f64,
    writev_gbps: f64,
    fs_write_gbps: f64,
    fs_read_gbps: f64,
}

/// The workload's private anonymous writable mappings of at least 1 MiB, as 4 MiB pieces.
fn worker_ranges(pid: i32) -> anyhow::Result<Vec<stasis_sys::mem::RemoteRange>> {
    let maps = stasis_sys::proc::read_maps(pid).context("reading the workload's maps")?;
    let mut out = Vec::new();
    for m in maps
        .iter()
        .filter(|m| m.write && !m.shared && m.inode == 0 && m.end - m.start >= 1 << 20)
    {
        let mut a = m.start;
        while a < m.end {
            let len = (m.end - a).min(4 << 20);
            out.push(stasis_sys::mem::RemoteRange {
                addr: a,
                len: len as usize,
            });
            a += len;
        }
    }
    Ok(out)
}

/// A memory transfer of one 4 MiB piece: untimed preparation, then the timed operation.
type Piece<'a> =
    &'a (dyn Fn(&stasis_sys::mem::RemoteRange, &mut [u8]) -> std::io::Result<usize> + Sync);

/// Bytes per second of `op` run on `workers` threads over the pieces of `ranges` (each thread
/// takes every `workers`-th piece; `prep` runs before each `op`, untimed): all bytes over the
/// longest time a thread spent in `op`.
fn threaded_rate(
    ranges: &[stasis_sys::mem::RemoteRange],
    workers: usize,
    prep: Piece<'_>,
    op: Piece<'_>,
) -> anyhow::Result<f64> {
    let workers = workers.max(1);
    let total: usize = ranges.iter().map(|r| r.len).sum();
    let longest = std::thread::scope(|sc| -> anyhow::Result<Duration> {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                sc.spawn(move || -> std::io::Result<Duration> {
                    let mut buf = vec![0u8; 4 << 20];
                    let mut spent = Duration::ZERO;
                    for r in ranges.iter().skip(w).step_by(workers) {
                        prep(r, &mut buf[..r.len])?;
                        let t = Instant::now();
                        op(r, &mut buf[..r.len])?;
                        spent += t.elapsed();
                    }
                    Ok(spent)
                })
            })
            .collect();
        let mut longest = Duration::ZERO;
        for h in handles {
            let spent = h
                .join()
                .map_err(|_| anyhow::anyhow!("a measuring thread panicked"))??;
            longest = longest.max(spent);
        }
        Ok(longest)
    })?;
    Ok(total as f64 / longest.as_secs_f64().max(1e-9))
}

fn measure_limits(pid: i32, dir: &Path, bytes: u64, workers: usize) -> anyhow::Result<Limits> {
    use std::io::{Read, Write};
    let ranges = worker_ranges(pid)?;
    let none = |_: &stasis_sys::mem::RemoteRange, _: &mut [u8]| Ok(0);
    let read = |r: &stasis_sys::mem::RemoteRange, buf: &mut [u8]| {
        stasis_sys::mem::read_ranges(pid, std::slice::from_ref(r), buf)
    };
    let write = |r: &stasis_sys::mem::RemoteRange, buf: &mut [u8]| {
        stasis_sys::mem::write_ranges(pid, std::slice::from_ref(r), buf)
    };
    let readv = threaded_rate(&ranges, workers, &none, &read)?;
    // Writes back what it has just read: the workload's memory is unchanged.
    let writev = threaded_rate(&ranges, workers, &read, &write)?;
    let path = dir.join("limit-probe.tmp");
    let block = vec![0x5au8; 4 << 20];
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&path).context("creating the write-speed probe")?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    let fs_write = bytes as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    {
        let mut f = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 4 << 20];
        while f.read(&mut buf)? > 0 {}
    }
    let fs_read = bytes as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    Ok(Limits {
        readv_gbps: readv / 1e9,
        writev_gbps: writev / 1e9,
        fs_write_gbps: fs_write / 1e9,
        fs_read_gbps: fs_read / 1e9,
    })
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    if let BenchCmd::Incremental {
        size_mib,
        dir,
        workers,
        json,
    } = cmd
    {
        return crate::bench_incr::run(size_mib, dir, workers, json);
    }
    if let BenchCmd::RestoreLazy {
        size_mib,
        rounds,
        dir,
        json,
    } = cmd
    {
        return crate::bench_lazy::run(&size_mib, rounds, dir, json);
    }
    if let BenchCmd::Agent {
        size_mib,
        rounds,
        failures,
        dir,
        json,
    } = cmd
    {
        return agent_bench(size_mib, rounds, failures.unwrap_or(rounds), dir, json);
    }
    if let BenchCmd::Partition {
        size_mib,
        rounds,
        dir,
        json,
    } = cmd
    {
        return partition_bench(size_mib, rounds, dir, json);
    }
    let BenchCmd::Checkpoint {
        size_mib,
        dir,
        workers,
        compress,
        json,
    } = cmd
    else {
        unreachable!("handled above")
    };
    let base = dir
        .unwrap_or_else(|| PathBuf::from(format!("/dev/shm/stasis-bench-{}", std::process::id())));
    std::fs::create_dir_all(&base)?;
    let image = base.join("image");
    let mut child = spawn_worker(size_mib, &base)?;
    let pid = child.id() as i32;
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let limits = match measure_limits(pid, &base, size_mib << 20, workers) {
        Ok(l) => l,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context("measuring the physical limits"));
        }
    };
    // The benchmark signs with a key of its own, kept in memory only.
    let keyring = stasis_engine::Keyring::ephemeral()?;
    let cs = stasis_engine::checkpoint(&stasis_engine::CheckpointOptions {
        progress: None,
        parent: None,
        tracker: None,
        signer: Some(keyring.clone()),
        before_commit: None,
        buffer_limit: None,
        freezer: None,
        pid_ns: false,
        pid,
        dir: image.clone(),
        leave_running: false,
        force: true,
        compression: if compress {
            stasis_image::Compression::Lz4
        } else {
            stasis_image::Compression::None
        },
        workers,
    });
    let _ = child.wait();
    let cs = cs?;
    let image_bytes = dir_size(&image);
    let rs = stasis_engine::restore(&stasis_engine::RestoreOptions {
        progress: None,
        new_pid_ns: false,
        root_mnt_ns: None,
        on_root: None,
        dir: image.clone(),
        inherit: Default::default(),
        workers,
        pid_wait: Duration::from_secs(10),
        trust: stasis_engine::Trust::Verify(keyring),
    })?;
    let _ = stasis_sys::sys::kill(rs.root_pid, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..100 {
        if matches!(
            wait_exit(Who::Pid(rs.root_pid), Block::No),
            Ok(Some(_)) | Err(_)
        ) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&base);
    let gb = |b: u64, s: f64| if s > 0.0 { b as f64 / s / 1e9 } else { 0.0 };
    // Pages are read from the tree and written to the image (checkpoint), read from the image
    // and written into the tasks (restore): each is bounded by the slower of its two sides.
    let ck_bound = limits.readv_gbps.min(limits.fs_write_gbps);
    let rs_bound = limits.writev_gbps.min(limits.fs_read_gbps);
    let out = serde_json::json!({
        "size_mib": size_mib,
        "workers": workers,
        "compress": compress,
        "checkpoint_frozen_secs": cs.frozen_secs,
        "checkpoint_total_secs": cs.total_secs,
        "checkpoint_memory_secs": cs.memory_secs,
        "checkpoint_gb_per_s": gb(cs.memory_bytes, cs.memory_secs),
        "checkpoint_total_gb_per_s": gb(cs.memory_bytes, cs.total_secs),
        "restore_total_secs": rs.total_secs,
        "restore_fill_secs": rs.memory_secs,
        "restore_gb_per_s": gb(rs.memory_bytes, rs.memory_secs),
        "restore_total_gb_per_s": gb(rs.memory_bytes, rs.total_secs),
        "image_bytes": image_bytes,
        "memory_bytes": cs.memory_bytes,
        "limits": {
            "process_vm_readv_gb_per_s": limits.readv_gbps,
            "process_vm_writev_gb_per_s": limits.writev_gbps,
            "image_fs_write_gb_per_s": limits.fs_write_gbps,
            "image_fs_read_gb_per_s": limits.fs_read_gbps,
            "checkpoint_bound_gb_per_s": ck_bound,
            "restore_bound_gb_per_s": rs_bound,
        },
        "checkpoint_fraction_of_bound": gb(cs.memory_bytes, cs.memory_secs) / ck_bound,
        "restore_fraction_of_bound": gb(rs.memory_bytes, rs.memory_secs) / rs_bound,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "workload: {size_mib} MiB touched anonymous memory; {workers} worker(s); image on {}",
            base.display()
        );
        println!(
            "checkpoint: frozen {:.3} s, total {:.3} s; pages {:.2} GB/s ({:.2} GB/s end to end)",
            cs.frozen_secs,
            cs.total_secs,
            gb(cs.memory_bytes, cs.memory_secs),
            gb(cs.memory_bytes, cs.total_secs)
        );
        println!("restore:    total {:.3} s until every page is resident; pages {:.2} GB/s ({:.2} GB/s end to end)", rs.total_secs, gb(rs.memory_bytes, rs.memory_secs), gb(rs.memory_bytes, rs.total_secs));
        println!("image:      {:.1} MiB", image_bytes as f64 / 1048576.0);
        println!(
            "limits:     process_vm_readv {:.2} GB/s, image fs write {:.2} GB/s; process_vm_writev {:.2} GB/s, image fs read {:.2} GB/s",
            limits.readv_gbps, limits.fs_write_gbps, limits.writev_gbps, limits.fs_read_gbps
        );
        println!(
            "ratio:      checkpoint pages {:.0}% of min(readv, fs write) = {:.2} GB/s; restore pages {:.0}% of min(writev, fs read) = {:.2} GB/s",
            100.0 * gb(cs.memory_bytes, cs.memory_secs) / ck_bound,
            ck_bound,
            100.0 * gb(rs.memory_bytes, rs.memory_secs) / rs_bound,
            rs_bound
        );
    }
    Ok(())
}

/// Start the benchmark workload (`bench-worker`) with `size_mib` MiB touched, its ready file in
/// `base`; returns once it is ready (killed if it is not within 2 minutes).
pub(crate) fn spawn_worker(size_mib: u64, base: &Path) -> anyhow::Result<std::process::Child> {
    let ready = base.join("ready");
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "bench-worker",
            "--size-mib",
            &size_mib.to_string(),
            "--ready",
        ])
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the benchmark workload")?;
    let start = Instant::now();
    while !ready.exists() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("benchmark workload did not get ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}
