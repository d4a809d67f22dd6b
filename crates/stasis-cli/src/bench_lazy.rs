//! `stasis bench restore-lazy`: lazy restore against a full restore of the same image.

use anyhow::{bail, Context};
use stasis_sys::wait::{wait_exit, Block, Who};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Start the benchmark worker with `size_mib` MiB touched; its pid once ready.
fn start_worker(base: &Path, size_mib: u64) -> anyhow::Result<i32> {
    let child = crate::bench::spawn_worker(size_mib, base)?;
    let pid = child.id() as i32;
    std::mem::forget(child); // reaped by the checkpoint's wait below
    Ok(pid)
}

fn end(pid: i32) {
    let _ = stasis_sys::sys::kill(pid, libc::SIGKILL);
    for _ in 0..250 {
        if matches!(wait_exit(Who::Pid(pid), Block::No), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The wall-clock time of the first fault the server served (from its log), once it is done.
fn first_fault(log: &Path, server: i32) -> anyhow::Result<(u128, String)> {
    let start = Instant::now();
    loop {
        if matches!(wait_exit(Who::Pid(server), Block::No), Ok(Some(_)) | Err(_)) {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("the page server did not finish in 300 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = std::fs::read_to_string(log)?;
    let line = s
        .lines()
        .find(|l| l.contains("done:"))
        .with_context(|| format!("the page server did not finish: {s}"))?;
    let ns = line
        .split("unix ns ")
        .nth(1)
        .and_then(|x| x.split(';').next())
        .and_then(|x| x.parse().ok())
        .context("no first fault in the log")?;
    Ok((ns, line.to_string()))
}

fn opts(image: &Path, keyring: &stasis_engine::Keyring) -> stasis_engine::RestoreOptions {
    stasis_engine::RestoreOptions {
        progress: None,
        new_pid_ns: false,
        root_mnt_ns: None,
        on_root: None,
        dir: image.to_path_buf(),
        inherit: Default::default(),
        workers: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        pid_wait: Duration::from_secs(10),
        trust: stasis_engine::Trust::Verify(keyring.clone()),
    }
}

fn one(base: &Path, size_mib: u64, rounds: usize) -> anyhow::Result<serde_json::Value> {
    let image = base.join(format!("image-{size_mib}"));
    let pid = start_worker(base, size_mib)?;
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
        compression: stasis_image::Compression::None,
        workers: 2,
    });
    let _ = wait_exit(Who::Pid(pid), Block::Yes);
    cs?;
    let mut full = Vec::new();
    let mut returned = Vec::new();
    let mut first = Vec::new();
    let mut placed = Vec::new();
    let mut done = String::new();
    let mut eager = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let rs = stasis_engine::restore(&opts(&image, &keyring))?;
        full.push(t.elapsed().as_secs_f64());
        end(rs.root_pid);
        let log = base.join(format!("lazy-{size_mib}.log"));
        let _ = std::fs::remove_file(&log);
        let t0 = unix_ns();
        let t = Instant::now();
        let lazy = stasis_engine::restore_lazy(
            &opts(&image, &keyring),
            &stasis_engine::lazy::LazyOptions { log: log.clone() },
        )?;
        returned.push(t.elapsed().as_secs_f64());
        let server = lazy.page_server.context("no page server")?;
        let (ff, d) = first_fault(&log, server)?;
        placed.push(t.elapsed().as_secs_f64());
        first.push(ff.saturating_sub(t0) as f64 / 1e9);
        end(lazy.root_pid);
        done = d;
        eager = lazy.memory_bytes;
    }
    let _ = std::fs::remove_dir_all(&image);
    Ok(serde_json::json!({
        "size_mib": size_mib,
        "rounds": rounds,
        "full_restore_secs": stats(&full),
        "lazy_restore_returns_secs": stats(&returned),
        "lazy_first_instruction_secs": stats(&first),
        "lazy_all_placed_secs": stats(&placed),
        "lazy_memory_written_eagerly_bytes": eager,
        "page_server_last": done,
    }))
}

/// min, median, max.
fn stats(v: &[f64]) -> serde_json::Value {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "min": s.first().copied().unwrap_or(0.0),
        "median": s.get(s.len() / 2).copied().unwrap_or(0.0),
        "max": s.last().copied().unwrap_or(0.0),
    })
}

/// Run the benchmark for each size.
pub fn run(sizes: &[u64], rounds: usize, dir: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let base = dir.unwrap_or_else(|| {
        PathBuf::from(format!("/dev/shm/stasis-bench-lazy-{}", std::process::id()))
    });
    std::fs::create_dir_all(&base)?;
    let mut rows = Vec::new();
    for &s in sizes {
        let r = one(&base, s, rounds);
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&base);
        }
        rows.push(r?);
    }
    let _ = std::fs::remove_dir_all(&base);
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let ms = |r: &serde_json::Value, k: &str, w: &str| r[k][w].as_f64().unwrap_or(0.0) * 1e3;
    for r in &rows {
        println!(
            "{:>5} MiB ({} rounds, min/median/max): full restore {:.0}/{:.0}/{:.0} ms | lazy: restore returns {:.1}/{:.1}/{:.1} ms, root runs (first fault served) {:.1}/{:.1}/{:.1} ms, every page placed {:.0}/{:.0}/{:.0} ms",
            r["size_mib"],
            r["rounds"],
            ms(r, "full_restore_secs", "min"),
            ms(r, "full_restore_secs", "median"),
            ms(r, "full_restore_secs", "max"),
            ms(r, "lazy_restore_returns_secs", "min"),
            ms(r, "lazy_restore_returns_secs", "median"),
            ms(r, "lazy_restore_returns_secs", "max"),
            ms(r, "lazy_first_instruction_secs", "min"),
            ms(r, "lazy_first_instruction_secs", "median"),
            ms(r, "lazy_first_instruction_secs", "max"),
            ms(r, "lazy_all_placed_secs", "min"),
            ms(r, "lazy_all_placed_secs", "median"),
            ms(r, "lazy_all_placed_secs", "max"),
        );
    }
    Ok(())
}
