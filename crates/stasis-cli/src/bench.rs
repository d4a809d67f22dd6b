//! `stasis bench`: checkpoint and restore throughput on a process with touched anonymous memory.
//!
//! The workload is this binary in its hidden `bench-worker` mode: it maps SIZE MiB of private
//! anonymous memory, writes a non-zero pattern into every page (so none is skipped as zero),
//! creates a ready file and sleeps.

use anyhow::{bail, Context};
use std::path::PathBuf;
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

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
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
    let ready = base.join("ready");
    let image = base.join("image");
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
    let pid = child.id() as i32;
    let start = Instant::now();
    while !ready.exists() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            bail!("benchmark workload did not get ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let cs = stasis_engine::checkpoint(&stasis_engine::CheckpointOptions {
        before_commit: None,
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
        new_pid_ns: false,
        root_mnt_ns: None,
        on_root: None,
        dir: image.clone(),
        inherit: Default::default(),
        workers,
        pid_wait: Duration::from_secs(10),
    })?;
    let _ = stasis_sys::sys::kill(rs.root_pid, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..100 {
        if matches!(
            stasis_sys::sys::reap_nohang(rs.root_pid),
            Ok(Some(_)) | Err(_)
        ) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&base);
    let gb = |b: u64, s: f64| if s > 0.0 { b as f64 / s / 1e9 } else { 0.0 };
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
    }
    Ok(())
}
