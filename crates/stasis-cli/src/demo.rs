//! `stasis demo`: start a counter, checkpoint it, end it, restore it, show that it carried on.
//!
//! The workload is this binary in its hidden `demo-worker` mode: a plain single-threaded loop
//! that appends "tick N" to a log file every 200 ms and keeps N only in memory.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The demo workload.
pub fn worker() -> ! {
    let mut n: u64 = 0;
    loop {
        n += 1;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "tick {n}");
        let _ = out.flush();
        drop(out);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn last_tick(log: &std::path::Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(log)?;
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("tick ").and_then(|n| n.parse().ok()))
        .context("no tick in the log yet")
}

pub fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = tempdir()?;
            tmp.clone()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("counter.log");
    let image = dir.join("image");
    let _ = std::fs::remove_file(&log);
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("demo-worker")
        .stdin(Stdio::null())
        .stdout(logf)
        .stderr(Stdio::null())
        .spawn()
        .context("starting the demo workload")?;
    let pid = child.id() as i32;
    // Whatever happens below, the demo leaves no counter running.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = stasis_sys::sys::kill(self.0, libc::SIGKILL);
        }
    }
    let _guard = KillOnDrop(pid);
    println!(
        "1. started a counter (pid {pid}) that appends \"tick N\" to {} every 200 ms",
        log.display()
    );
    std::thread::sleep(Duration::from_millis(1500));
    println!("   it has counted to {}", last_tick(&log)?);

    let stats = stasis_engine::checkpoint(&stasis_engine::CheckpointOptions {
        before_commit: None,
        freezer: None,
        pid_ns: false,
        pid,
        dir: image.clone(),
        leave_running: false,
        force: true,
        compression: stasis_image::Compression::None,
        workers: 2,
    })?;
    let _ = child.try_wait();
    let before = last_tick(&log)?;
    println!(
        "2. checkpointed it into {} ({:.1} MiB of memory, frozen {:.0} ms) and ended it at tick {before}",
        image.display(),
        stats.memory_bytes as f64 / 1048576.0,
        stats.frozen_secs * 1000.0
    );
    std::thread::sleep(Duration::from_millis(1000));
    let still = last_tick(&log)?;
    if still != before {
        bail!("the counter kept running after the checkpoint ended it ({before} → {still})");
    }
    println!("3. one second later the log still ends at tick {still}: nothing runs");

    let rs = stasis_engine::restore(&stasis_engine::RestoreOptions {
        new_pid_ns: false,
        root_mnt_ns: None,
        on_root: None,
        dir: image.clone(),
        inherit: Default::default(),
        workers: 2,
        pid_wait: Duration::from_secs(10),
    })?;
    println!(
        "4. restored it from the image as pid {} in {:.0} ms",
        rs.root_pid,
        rs.total_secs * 1000.0
    );
    std::thread::sleep(Duration::from_millis(1500));
    let text = std::fs::read_to_string(&log)?;
    let after: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("tick ").and_then(|n| n.parse().ok()))
        .collect();
    let pos = after
        .iter()
        .rposition(|&n| n == before)
        .context("tick before checkpoint missing")?;
    let resumed = &after[pos + 1..];
    let _ = stasis_sys::sys::kill(rs.root_pid, libc::SIGKILL);
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(50));
    let _ = stasis_sys::sys::reap_nohang(rs.root_pid);
    if resumed.is_empty()
        || resumed[0] != before + 1
        || resumed.windows(2).any(|w| w[1] != w[0] + 1)
    {
        bail!("after restore the counter did not carry on from {before}: {resumed:?}");
    }
    println!(
        "5. it carried on from where it was: tick {} → {} (same pid {}; its count lived only in its memory)",
        resumed[0],
        resumed[resumed.len() - 1],
        rs.root_pid
    );
    println!("demo passed");
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("stasis-demo-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
