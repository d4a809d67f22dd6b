//! Lazy restore (issue 14 item 5): `stasis restore --lazy` places private anonymous memory on
//! demand from a page server process. The workload `lazy_mem` checks every page as the kernel
//! reads it (write(2) from the region), as a forked child and as itself sees it, zero pages,
//! MADV_DONTNEED and mremap after the restore.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Checkpoint (kill mode) a `lazy_mem` of `mib` MiB into `dir`.
fn image_of(w: &Workload, dir: &Path) {
    checkpoint_kill(w, dir);
    w.reset_verify();
}

/// The page server's pid and log lines once its log says `needle` (≤ `timeout`).
fn wait_log(log: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let s = std::fs::read_to_string(log).unwrap_or_default();
        if s.contains(needle) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Processes of session `sid` (the page server and its watchdog), after ≤ 5 s.
fn session_left(sid: i32) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
            let f: Vec<&str> = after.split(' ').collect();
            if f.len() > 3 && f[3] == sid.to_string() && f[0] != "Z" {
                left.push(pid);
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn server_pid(out: &std::process::Output) -> i32 {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json output");
    v["stats"]["page_server"]
        .as_i64()
        .unwrap_or_else(|| panic!("no page server in {v}")) as i32
}

/// `stasis restore --lazy --json`: (root pid, page server pid).
fn restore_lazy(dir: &Path, log: &Path) -> (i32, i32) {
    let out = run_cmd(
        restore_cmd(dir)
            .args(["--lazy", "--json", "--lazy-log"])
            .arg(log),
    );
    assert!(
        out.status.success(),
        "lazy restore failed\n{}",
        show_output(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json output");
    let pid = v["pid"].as_i64().expect("pid") as i32;
    for p in tree_pids(pid) {
        watch_pid(p);
    }
    (pid, server_pid(&out))
}

#[test]
fn lazy_restore_serves_every_page_and_the_server_exits() {
    let _g = serial();
    let mut w = Workload::start("lazy_mem", &["--mib", "256"]);
    let t = image_dir("hl-lazy");
    let dir = t.path().join("img");
    image_of(&w, &dir);
    let log = t.path().join("lazy.log");
    let (pid, server) = restore_lazy(&dir, &log);
    w.set_pid(pid);
    if let Err(e) = w.verify() {
        panic!(
            "lazy restore: {e}\n--- page server log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let s = wait_log(&log, "done:", Duration::from_secs(30));
    assert!(s.contains("done:"), "the page server did not finish:\n{s}");
    eprintln!("page server log:\n{s}");
    assert!(
        wait_gone(&[server], Duration::from_secs(10)).is_empty(),
        "the page server {server} is still there after it finished:\n{s}"
    );
    // Pages were placed on demand (faults served) and the fork was followed.
    let faults: u64 = s
        .split("done: ")
        .nth(1)
        .and_then(|x| x.split(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    assert!(faults > 0, "no fault served on demand:\n{s}");
    assert!(
        !s.contains(" 0 forks followed"),
        "the child's fork was not followed:\n{s}"
    );
    let left = session_left(server);
    assert!(
        left.is_empty(),
        "the page server's watchdog {left:?} is still there"
    );
}

#[test]
fn killing_the_page_server_kills_the_tree() {
    let _g = serial();
    let w = Workload::start("lazy_mem", &["--mib", "1024"]);
    let t = image_dir("hl-lazykill");
    let dir = t.path().join("img");
    image_of(&w, &dir);
    let log = t.path().join("lazy.log");
    let (pid, server) = restore_lazy(&dir, &log);
    let pids = tree_pids(pid);
    assert!(
        send_signal(server, libc::SIGKILL),
        "page server {server} gone already"
    );
    let left = wait_gone(&pids, Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "tree pids {left:?} still run after the page server {server} died; log:\n{}\nstatus: {}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(format!("/proc/{}/status", pids[0])).unwrap_or_default()
    );
    let s = wait_log(&log, "killing the restored tree", Duration::from_secs(5));
    assert!(
        s.contains("the page server ended before every page was placed: killing the restored tree"),
        "no message in the log:\n{s}"
    );
    let left = session_left(server);
    assert!(
        left.is_empty(),
        "the page server's watchdog {left:?} is still there"
    );
    assert!(
        !w.ctl_path().join("result").exists(),
        "the workload reported a result after its page server died"
    );
}

#[test]
fn full_restore_unchanged() {
    let _g = serial();
    let mut w = Workload::start("lazy_mem", &["--mib", "16"]);
    let t = image_dir("hl-full");
    let dir = t.path().join("img");
    image_of(&w, &dir);
    let (pid, out) = restore(&dir);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("page server"));
    w.set_pid(pid);
    w.verify().expect("full restore of lazy_mem");
}

/// The largest chunk file of an image (one of the big region's: only lazy pages use it).
fn largest_chunk(dir: &Path) -> std::path::PathBuf {
    let mut best: Option<(u64, std::path::PathBuf)> = None;
    for sub in std::fs::read_dir(dir.join("chunks")).unwrap().flatten() {
        for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
            let len = f.metadata().unwrap().len();
            if best.as_ref().is_none_or(|b| len > b.0) {
                best = Some((len, f.path()));
            }
        }
    }
    best.expect("a chunk").1
}

#[test]
fn a_corrupt_lazy_chunk_ends_the_tree() {
    let _g = serial();
    let w = Workload::start("lazy_mem", &["--mib", "64"]);
    let t = image_dir("hl-lazybad");
    let dir = t.path().join("img");
    image_of(&w, &dir);
    let chunk = largest_chunk(&dir);
    let mut bytes = std::fs::read(&chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&chunk, &bytes).unwrap();
    let log = t.path().join("lazy.log");
    // The restore does not read the chunk (only lazy pages use it): it succeeds; the page
    // server finds the chunk corrupt when it needs it, and the tree is ended.
    let (pid, server) = restore_lazy(&dir, &log);
    let pids = tree_pids(pid);
    std::fs::write(w.ctl_path().join("verify"), b"1\n").unwrap();
    let left = wait_gone(&pids, Duration::from_secs(10));
    assert!(
        !w.ctl_path().join("result").exists(),
        "the workload ran on with a corrupt page and wrote a result"
    );
    let s = wait_log(&log, "killing the restored tree", Duration::from_secs(5));
    assert!(left.is_empty(), "tree pids {left:?} still run; log:\n{s}");
    assert!(
        s.contains("FATAL: reading pages at"),
        "no reason in the log:\n{s}"
    );
    assert!(
        s.contains("killing the restored tree"),
        "no message in the log:\n{s}"
    );
    assert!(
        session_left(server).is_empty(),
        "page server or watchdog left"
    );
}

/// Kill-mode checkpoint of workload `name`, lazy restore, verify, and the page server done.
fn lazy_round_trip(name: &str, args: &[&str]) {
    let _g = serial();
    let mut w = Workload::start(name, args);
    std::thread::sleep(Duration::from_millis(200));
    let t = image_dir(&format!("hl-rt-{name}"));
    let dir = t.path().join("img");
    image_of(&w, &dir);
    let log = t.path().join("lazy.log");
    let (pid, server) = restore_lazy(&dir, &log);
    w.set_pid(pid);
    if let Err(e) = w.verify() {
        panic!(
            "lazy restore of {name}: {e}\n--- page server log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let s = wait_log(&log, "done:", Duration::from_secs(30));
    assert!(
        s.contains("done:"),
        "the page server of {name} did not finish:\n{s}"
    );
    assert!(
        session_left(server).is_empty(),
        "page server or watchdog left"
    );
}

#[test]
fn lazy_round_trips_of_other_workloads() {
    // Pages shared copy-on-write with children (placed before the fork), threads, a tree that
    // forks, maps, moves and unmaps, and the varied mappings of mem_anon.
    lazy_round_trip("cow_fork", &[]);
    lazy_round_trip("threads", &[]);
    lazy_round_trip("mem_anon", &[]);
    lazy_round_trip("multiproc", &[]);
}
