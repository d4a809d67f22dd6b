//! Incremental images (issue 14 item 3): chains of images restored byte-exact, an idle
//! workload's second image nearly empty, write tracking with a `DirtyTracker` held by the test
//! (a tree that forks, maps, moves and unmaps between images), parents altered or missing.

mod common;

use common::*;
use stasis_engine::incremental::DirtyTracker;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// The workload's own round trips (full images).
crate::conformance_tests!(dirty_pages, "dirty_pages", &[]);

/// Ask the workload for generation `g` and wait until it is applied.
fn next_gen(w: &Workload, g: u64) {
    let ctl = w.ctl_path();
    std::fs::write(ctl.join("gen.tmp"), format!("{g}\n")).unwrap();
    std::fs::rename(ctl.join("gen.tmp"), ctl.join("gen")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = std::fs::read_to_string(ctl.join("gen_done")).unwrap_or_default();
        if done.trim() == g.to_string() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "generation {g} not applied; out.log:\n{}",
            w.out_log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `stasis checkpoint --leave-running --json [--parent P]`: its stored bytes.
fn cli_checkpoint(w: &Workload, dir: &Path, parent: Option<&Path>) -> u64 {
    let mut extra = vec!["--leave-running", "--json"];
    let p;
    if let Some(parent) = parent {
        p = parent.display().to_string();
        extra.extend(["--parent", p.as_str()]);
    }
    let out = checkpoint(w.pid, dir, &extra);
    assert!(
        out.status.success(),
        "checkpoint into {} failed\n{}",
        dir.display(),
        show_output(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json output");
    v["stored_bytes"].as_u64().expect("stored_bytes")
}

/// Kill the running copy and restore `dir`, which must be at generation `gen`; verify.
fn restore_and_verify(w: &mut Workload, dir: &Path, gen: u64, extra: &[&str]) {
    w.kill_tree();
    w.reset_verify();
    // The restored copy must not go on to the generations asked for since.
    std::fs::write(w.ctl_path().join("gen"), format!("{gen}\n")).unwrap();
    std::fs::write(w.ctl_path().join("expect"), format!("{gen}\n")).unwrap();
    let (pid, _) = restore_with(dir, extra, |_| {});
    w.set_pid(pid);
    std::thread::sleep(Duration::from_millis(100));
    if let Err(e) = w.verify() {
        panic!("restore of {} (generation {gen}): {e}", dir.display());
    }
}

#[test]
fn chain_of_four_images_restores_byte_exact() {
    let _g = serial();
    let mut w = Workload::start("dirty_pages", &["--mib", "32"]);
    let t = image_dir("hi-chain");
    let dirs: Vec<PathBuf> = (0..4).map(|i| t.path().join(format!("g{i}"))).collect();
    let mut stored = Vec::new();
    for g in 0..4 {
        if g > 0 {
            next_gen(&w, g as u64);
        }
        let parent = (g > 0).then(|| dirs[g - 1].as_path());
        stored.push(cli_checkpoint(&w, &dirs[g], parent));
    }
    eprintln!(
        "stored bytes: full {} then incremental {:?}",
        stored[0],
        &stored[1..]
    );
    for (g, s) in stored.iter().enumerate().skip(1) {
        // Each generation changes two eighths of the 32 MiB region.
        assert!(
            *s < stored[0] / 2,
            "image {g} stored {s} bytes, the full one {}",
            stored[0]
        );
    }
    // The last image of the chain, then one in the middle.
    restore_and_verify(&mut w, &dirs[3], 3, &[]);
    restore_and_verify(&mut w, &dirs[1], 1, &[]);
}

#[test]
fn idle_workload_second_image_stores_under_1_mib() {
    let _g = serial();
    let mut w = Workload::start("dirty_pages", &["--mib", "64", "--idle"]);
    let t = image_dir("hi-idle");
    let (full, inc) = (t.path().join("full"), t.path().join("inc"));
    let s0 = cli_checkpoint(&w, &full, None);
    std::thread::sleep(Duration::from_millis(200));
    let s1 = cli_checkpoint(&w, &inc, Some(&full));
    eprintln!("idle 64 MiB workload: full image stored {s0} bytes, the next one {s1} bytes");
    assert!(s0 > 64 << 20, "full image stored only {s0} bytes");
    assert!(
        s1 < 1 << 20,
        "incremental image of an idle workload stored {s1} bytes"
    );
    restore_and_verify(&mut w, &inc, 0, &[]);
}

#[test]
fn altered_or_missing_parent_is_refused_by_name() {
    let _g = serial();
    let mut w = Workload::start("dirty_pages", &["--mib", "8"]);
    let t = image_dir("hi-altered");
    let (base, inc) = (t.path().join("base"), t.path().join("inc"));
    cli_checkpoint(&w, &base, None);
    next_gen(&w, 1);
    cli_checkpoint(&w, &inc, Some(&base));

    // A parent that does not exist: the checkpoint is refused naming it; the tree runs on.
    let nowhere = t.path().join("nowhere");
    let out = checkpoint(
        w.pid,
        &t.path().join("inc2"),
        &["--leave-running", "--parent", nowhere.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "checkpoint with a missing parent succeeded"
    );
    assert!(
        err.contains("nowhere"),
        "error does not name the parent: {err}"
    );
    assert!(
        pid_alive(w.pid),
        "the tree is gone after a refused checkpoint"
    );
    assert!(
        !t.path().join("inc2").exists(),
        "a refused checkpoint left its directory"
    );

    // The parent replaced by another image (same place, other content): restore refuses,
    // naming it, and starts nothing.
    w.kill_tree();
    let pids_before = w.tree_pids();
    assert!(pids_before.is_empty());
    std::fs::rename(&base, t.path().join("base.orig")).unwrap();
    std::fs::rename(&inc, t.path().join("inc.keep")).unwrap();
    let w2 = Workload::start("dirty_pages", &["--mib", "8"]);
    cli_checkpoint(&w2, &base, None);
    w2.kill_tree();
    std::fs::rename(t.path().join("inc.keep"), &inc).unwrap();
    let out = run_cmd(&mut restore_cmd(&inc));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "restore over an altered parent succeeded"
    );
    assert!(
        err.contains(&*base.to_string_lossy()) && err.contains("altered"),
        "error does not name the altered parent: {err}"
    );
    assert!(
        !pid_alive(w.pid),
        "a refused restore left pid {} running",
        w.pid
    );

    // The parent missing: refused naming it.
    std::fs::remove_dir_all(&base).unwrap();
    let out = run_cmd(&mut restore_cmd(&inc));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "restore without its parent succeeded"
    );
    assert!(
        err.contains(&*base.to_string_lossy()) && err.contains("cannot be opened"),
        "error does not name the missing parent: {err}"
    );

    // The original parent back in place: the chain restores.
    std::fs::rename(t.path().join("base.orig"), &base).unwrap();
    restore_and_verify(&mut w, &inc, 1, &[]);
}

/// A library checkpoint (leave-running) with `tracker`, relative to `parent`.
fn lib_checkpoint(
    w: &Workload,
    dir: &Path,
    parent: Option<&Path>,
    tracker: &Arc<Mutex<DirtyTracker>>,
) -> stasis_engine::CheckpointStats {
    let opts = stasis_engine::CheckpointOptions {
        pid: w.pid,
        dir: dir.to_path_buf(),
        leave_running: true,
        force: false,
        compression: stasis_image::Compression::None,
        workers: 2,
        freezer: None,
        pid_ns: false,
        before_commit: None,
        buffer_limit: None,
        signer: None,
        progress: None,
        parent: parent.map(Path::to_path_buf),
        tracker: Some(tracker.clone()),
    };
    let pids = w.tree_pids();
    with_reaper_away(&pids, || stasis_engine::checkpoint(&opts)).unwrap_or_else(|e| {
        let mut msg = e.to_string();
        let mut s = std::error::Error::source(&e);
        while let Some(c) = s {
            msg += &format!(": {c}");
            s = c.source();
        }
        panic!("library checkpoint into {}: {msg}", dir.display())
    })
}

#[test]
fn tracked_tree_that_forks_maps_and_unmaps_restores_exact() {
    let _g = serial();
    let mut w = Workload::start("dirty_pages", &["--mib", "16", "--churn"]);
    let tracker = Arc::new(Mutex::new(DirtyTracker::new()));
    let t = image_dir("hi-tracked");
    let dirs: Vec<PathBuf> = (0..4).map(|i| t.path().join(format!("g{i}"))).collect();
    let mut figures = Vec::new();
    for g in 0..4 {
        if g > 0 {
            next_gen(&w, g as u64);
        }
        let parent = (g > 0).then(|| dirs[g - 1].as_path());
        let s = lib_checkpoint(&w, &dirs[g], parent, &tracker);
        assert!(
            tracker.lock().unwrap().base().is_some(),
            "tracker not armed by image {g}"
        );
        figures.push((s.memory_bytes, s.stored_bytes, s.frozen_secs));
    }
    eprintln!("tracked chain (read, stored, frozen s): {figures:?}");
    for (g, f) in figures.iter().enumerate().skip(1) {
        // The children hold their own copies of the pages the root rewrote since their fork
        // (no longer shared, and not in the parent image, which had them as inherited): read.
        assert!(
            f.0 < figures[0].0,
            "image {g} read {} bytes, the full one {}: unwritten pages were read",
            f.0,
            figures[0].0
        );
    }
    let tree = w.tree_pids();
    assert_eq!(tree.len(), 4, "root and three children: {tree:?}");
    // Dropping the tracker ends the tracking: the registrations go with the userfaultfds.
    drop(tracker);
    restore_and_verify(&mut w, &dirs[3], 3, &["--insecure-unsigned"]);
    restore_and_verify(&mut w, &dirs[2], 2, &["--insecure-unsigned"]);
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    x
}

/// What generation `g` of `dirty_pages` does to page `p` (as `action()` in the workload).
fn action(g: u64, p: u64, npages: u64) -> u8 {
    let band = p * 8 / npages;
    if band == (5 * g) % 8 {
        return 1;
    }
    if band != (5 * g + 3) % 8 {
        return 0;
    }
    let h = mix((g << 40) ^ p);
    if h.is_multiple_of(5) {
        1
    } else if h % 31 == 1 {
        2
    } else {
        0
    }
}

#[test]
fn tracker_reports_exactly_the_pages_written() {
    tracker_exact(&[], false);
}

/// Without CAP_SYS_PTRACE the task may only have a user-mode-only userfaultfd
/// (`vm.unprivileged_userfaultfd` is 0): tracking works the same with it.
#[test]
fn tracker_without_ptrace_capability_uses_user_mode_only() {
    let sysctl = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").unwrap();
    assert_eq!(
        sysctl.trim(),
        "0",
        "this test expects vm.unprivileged_userfaultfd = 0"
    );
    tracker_exact(&["--no-ptrace-cap"], true);
}

fn tracker_exact(extra: &[&str], user_mode_only: bool) {
    let _g = serial();
    let mut args = vec!["--mib", "8"];
    args.extend(extra);
    let mut w = Workload::start("dirty_pages", &args);
    let region = std::fs::read_to_string(w.ctl_path().join("region")).unwrap();
    let mut it = region.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    let (start, npages) = (it.next().unwrap(), it.next().unwrap());
    let end = start + npages * 4096;
    let tracker = Arc::new(Mutex::new(DirtyTracker::new()));
    let t = image_dir("hi-exact");
    let full = lib_checkpoint(&w, &t.path().join("g0"), None, &tracker);
    let in_region = |tr: &DirtyTracker| -> Vec<u64> {
        let mut pages = Vec::new();
        for (a, b) in tr.written(w.pid).expect("PAGEMAP_SCAN") {
            let (a, b) = (a.max(start), b.min(end));
            pages.extend((a..b.max(a)).step_by(4096).map(|x| (x - start) / 4096));
        }
        pages
    };
    assert_eq!(
        in_region(&tracker.lock().unwrap()),
        Vec::<u64>::new(),
        "pages reported written before the workload wrote any"
    );
    assert_eq!(
        tracker.lock().unwrap().user_mode_only(w.pid),
        Some(user_mode_only),
        "UFFD_USER_MODE_ONLY used (a task without CAP_SYS_PTRACE) or not (a root task)"
    );
    for g in 1..=2 {
        next_gen(&w, g);
        let want: Vec<u64> = (0..npages).filter(|&p| action(g, p, npages) != 0).collect();
        let got = in_region(&tracker.lock().unwrap());
        assert_eq!(
            got.len(),
            want.len(),
            "generation {g}: pages reported written"
        );
        assert_eq!(got, want, "generation {g}: pages reported written");
        // The next image resets the tracking: the following generation's set alone is seen.
        let inc = lib_checkpoint(
            &w,
            &t.path().join(format!("g{g}")),
            Some(&t.path().join(format!("g{}", g - 1))),
            &tracker,
        );
        // Two eighths of the region written: only those pages (and the heap's) are read.
        assert!(
            inc.memory_bytes < full.memory_bytes / 2,
            "generation {g}: read {} bytes, the full image {}",
            inc.memory_bytes,
            full.memory_bytes
        );
    }
    drop(tracker);
    restore_and_verify(&mut w, &t.path().join("g2"), 2, &["--insecure-unsigned"]);
}
