//! `stasis bench incremental`: the freeze of an incremental image of an idle workload, next to
//! the full image's (issue 14: under 10 ms for 1 GiB).

use anyhow::Context;
use stasis_engine::incremental::DirtyTracker;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Kills and reaps the benchmark workload on drop.
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(size_mib: u64, base: &Path) -> anyhow::Result<Worker> {
    Ok(Worker(crate::bench::spawn_worker(size_mib, base)?))
}

fn image(
    pid: i32,
    dir: PathBuf,
    parent: Option<&Path>,
    tracker: Option<&Arc<Mutex<DirtyTracker>>>,
    workers: usize,
) -> anyhow::Result<stasis_engine::CheckpointStats> {
    let shown = dir.display().to_string();
    stasis_engine::checkpoint(&stasis_engine::CheckpointOptions {
        pid,
        dir,
        leave_running: true,
        force: true,
        compression: stasis_image::Compression::None,
        workers,
        freezer: None,
        pid_ns: false,
        before_commit: None,
        buffer_limit: None,
        signer: Some(stasis_engine::Keyring::ephemeral()?),
        progress: None,
        parent: parent.map(Path::to_path_buf),
        tracker: tracker.cloned(),
    })
    .with_context(|| format!("checkpoint into {shown}"))
}

/// Run the benchmark: a full image (arming a tracker), then after `idle_ms` an incremental
/// image with the tracker, and one without (read all, stored by difference).
pub fn run(
    size_mib: u64,
    dir: Option<PathBuf>,
    workers: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let base = dir.unwrap_or_else(|| {
        PathBuf::from(format!("/dev/shm/stasis-bench-incr-{}", std::process::id()))
    });
    std::fs::create_dir_all(&base)?;
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let res = (|| {
        let w = start_worker(size_mib, &base)?;
        let pid = w.0.id() as i32;
        let tracker = Arc::new(Mutex::new(DirtyTracker::new()));
        let full = image(pid, base.join("full"), None, Some(&tracker), workers)?;
        std::thread::sleep(Duration::from_millis(300));
        let inc = image(
            pid,
            base.join("inc"),
            Some(&base.join("full")),
            Some(&tracker),
            workers,
        )?;
        let untracked = image(
            pid,
            base.join("diff"),
            Some(&base.join("full")),
            None,
            workers,
        )?;
        drop(w);
        Ok::<_, anyhow::Error>((full, inc, untracked))
    })();
    let _ = std::fs::remove_dir_all(&base);
    let (full, inc, untracked) = res?;
    let fig = |s: &stasis_engine::CheckpointStats| {
        serde_json::json!({
            "frozen_secs": s.frozen_secs,
            "total_secs": s.total_secs,
            "read_bytes": s.memory_bytes,
            "stored_bytes": s.stored_bytes,
        })
    };
    let out = serde_json::json!({
        "size_mib": size_mib,
        "workers": workers,
        "full": fig(&full),
        "incremental_tracked": fig(&inc),
        "incremental_untracked": fig(&untracked),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "workload: {size_mib} MiB touched anonymous memory, idle; leave-running images on {}",
        base.display()
    );
    for (what, s) in [
        ("full image", &full),
        ("incremental, tracked", &inc),
        ("incremental, by difference", &untracked),
    ] {
        println!(
            "{what:<27} frozen {:>8.2} ms, total {:>8.3} s, read {:>8.1} MiB, stored {:>8.2} MiB",
            s.frozen_secs * 1e3,
            s.total_secs,
            mib(s.memory_bytes),
            mib(s.stored_bytes)
        );
    }
    Ok(())
}
