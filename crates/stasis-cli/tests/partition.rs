//! Partitions (`stasis run/ps/stats/stop/rm`, `checkpoint --name`, partition `restore`)
//! against the real kernel.
//!
//! Every test takes the global `serial()` lock, uses a root directory of its own (`--root`) and
//! a [`Parts`] guard that runs `stasis rm -f` on every partition it created, even when the test
//! fails. Every `stasis` command runs with only stdio open (nothing of the test runner leaks
//! into a partition) in a process group of its own, under a time limit: a command that hangs
//! is killed with its whole group (the checkpointer it forked included) and reported.
//!
//! Workloads are the self-verifying programs of `workloads/` (see `tests/common/mod.rs`). Run
//! as a partition's first process they are pid 1 of the partition's pid namespace, so their
//! `ready` file says `1`. Two ways to reach their control directory (CTL_DIR):
//!
//! - a host directory (a tempdir), as the other tests do: fine while one copy of the workload
//!   runs;
//! - `/dev/shm/ctl` inside the partition ("private CTL"): every partition has a tmpfs of its own
//!   on `/dev/shm`, saved in the image with its content, so every restored copy has its own
//!   control directory. The test reaches it through `/proc/HOSTPID/root/dev/shm/ctl`; the
//!   verdict is the first process's exit status (0 = PASS) as `ps --json` reports it, since the
//!   directory goes away with the partition.
#![cfg(target_os = "linux")]
#![allow(unsafe_code)]

mod common;

use common::{serial, workload_bin, RESULT_TIMEOUT, WORKLOADS};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::partition::*;

// ---------------------------------------------------------------------------
// 1. the workloads as partitions

/// Every self-verifying workload started as a partition's first process survives a
/// checkpoint that ends the partition and a restore; and a `--leave-running` checkpoint
/// restored under another name while the original runs gives two copies that both verify.
#[test]
fn workloads_as_partitions() {
    let _g = serial();
    let parts = Parts::new("wl");
    let mut failures = Vec::new();
    for (wl, args) in WORKLOADS {
        if let Err(e) = workload_kill_roundtrip(&parts, wl, args) {
            failures.push(e);
        }
    }

    // --leave-running, then the image restored under another name beside the original.
    let res = (|| -> Result<(), String> {
        let cmd = private_ctl_cmd("counter");
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let pid = parts.run("lr-counter", &[], &cmd)?;
        wait_private_ready(&parts, "lr-counter", pid)?;
        thread::sleep(SETTLE);
        let (_t, img) = image("lr-counter");
        let out = parts.checkpoint("lr-counter", &img, &["--leave-running"]);
        if !out.ok() {
            return Err(format!("checkpoint --leave-running failed: {}", out.show()));
        }
        if parts.running_pid("lr-counter") != Some(pid) {
            return Err(format!(
                "after checkpoint --leave-running: ps says {:?}, expected running with pid {pid}",
                parts.ps_row("lr-counter")
            ));
        }
        // Under its own name it is refused while the original runs.
        let d = img.to_string_lossy().into_owned();
        let busy = parts.exec(&["restore", "--dir", &d], T_RESTORE);
        if busy.code != Some(6) {
            return Err(format!(
                "restore under the running original's name: expected exit code 6\n{}",
                busy.show()
            ));
        }
        let copy = parts.restore(&img, Some("lr-counter-copy"))?;
        if copy == pid {
            return Err(format!("the copy has the original's host pid {pid}"));
        }
        if parts.running_pid("lr-counter-copy") != Some(copy)
            || parts.running_pid("lr-counter") != Some(pid)
        {
            return Err(format!(
                "expected both running (original {pid}, copy {copy}): {:?}",
                parts.ps()
            ));
        }
        thread::sleep(SETTLE);
        let a = verify_private(&parts, "lr-counter", pid);
        let b = verify_private(&parts, "lr-counter-copy", copy);
        match (a, b) {
            (Ok(()), Ok(())) => Ok(()),
            (a, b) => Err(format!(
                "original: {}\ncopy: {}",
                a.err().unwrap_or_else(|| "PASS".into()),
                b.err().unwrap_or_else(|| "PASS".into())
            )),
        }
    })();
    if let Err(e) = res {
        failures.push(format!(
            "counter [--leave-running, copy under another name]: {e}"
        ));
    }
    report(&failures, "workloads as partitions");
}

// ---------------------------------------------------------------------------
// 2. System V and pty objects restored beside partitions that use the same ids

#[test]
fn sysv_and_pty_beside_another_partition() {
    let _g = serial();
    let parts = Parts::new("ipc");
    let mut failures = Vec::new();
    let start = |name: &str, wl: &str, ctl: &Ctl| -> Result<(), String> {
        let bin = workload_bin(wl);
        parts.run(name, &[], &[&bin.to_string_lossy(), &ctl.arg()])?;
        ctl.wait_ready(&parts, name)
    };
    let (ca, cb, cc, cd) = (
        Ctl::new("A-sysv"),
        Ctl::new("B-pty"),
        Ctl::new("C-sysv"),
        Ctl::new("D-pty"),
    );
    start("A", "sysv_ipc", &ca).expect("start A");
    start("B", "pty", &cb).expect("start B");
    thread::sleep(SETTLE);
    let (_ta, img_a) = image("A");
    let (_tb, img_b) = image("B");
    parts.checkpoint_kill("A", &img_a).expect("checkpoint A");
    parts.checkpoint_kill("B", &img_b).expect("checkpoint B");
    // Fresh partitions: the same System V ids and pty indexes, in their own namespaces.
    start("C", "sysv_ipc", &cc).expect("start C");
    start("D", "pty", &cd).expect("start D");
    thread::sleep(SETTLE);
    let mut restored = Vec::new();
    for (name, img) in [("A", &img_a), ("B", &img_b)] {
        match parts.restore(img, None) {
            Ok(_) => restored.push(name),
            Err(e) => failures.push(format!("restoring {name} beside C and D: {e}")),
        }
    }
    thread::sleep(SETTLE);
    for (name, ctl) in [("A", &ca), ("B", &cb), ("C", &cc), ("D", &cd)] {
        if (name == "A" || name == "B") && !restored.contains(&name) {
            continue;
        }
        if let Err(e) = ctl.verify(&parts, name) {
            failures.push(format!("{name}: {e}"));
        }
    }
    report(&failures, "System V and pty partitions side by side");
}

// ---------------------------------------------------------------------------
// 3. one image restored twice, side by side

#[test]
fn restored_twice_side_by_side() {
    let _g = serial();
    let parts = Parts::new("twice");
    let cmd = private_ctl_cmd("multiproc");
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let pid = parts.run("orig", &[], &cmd).expect("run");
    wait_private_ready(&parts, "orig", pid).expect("ready");
    thread::sleep(SETTLE);
    let (_t, img) = image("twice");
    parts.checkpoint_kill("orig", &img).expect("checkpoint");
    let p1 = parts.restore(&img, Some("copy1")).expect("restore copy1");
    let p2 = parts.restore(&img, Some("copy2")).expect("restore copy2");
    assert_ne!(p1, p2, "both copies have host pid {p1}");
    let rows = parts.ps();
    let running: BTreeSet<(String, i64)> = rows
        .iter()
        .filter(|r| r["state"] == "running")
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("?").to_string(),
                r["pid"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let want: BTreeSet<(String, i64)> = [
        ("copy1".to_string(), p1 as i64),
        ("copy2".into(), p2 as i64),
    ]
    .into_iter()
    .collect();
    assert_eq!(running, want, "running partitions per ps --json: {rows:#?}");
    for (name, p) in [("copy1", p1), ("copy2", p2)] {
        let n = nspid(p);
        assert_eq!(
            n,
            vec![p, 1],
            "{name}: /proc/{p}/status NSpid: the first process must be pid 1 inside"
        );
        // The whole tree came back in the partition's pid namespace.
        for q in common::tree_pids(p) {
            assert_eq!(
                nspid(q).len(),
                2,
                "{name}: process {q} is not in a pid namespace of its own"
            );
        }
    }
    thread::sleep(SETTLE);
    let a = verify_private(&parts, "copy1", p1);
    let b = verify_private(&parts, "copy2", p2);
    assert!(
        a.is_ok() && b.is_ok(),
        "copy1: {:?}\ncopy2: {:?}",
        a.err(),
        b.err()
    );
}

// ---------------------------------------------------------------------------
// 4. accounting follows the partition

fn cpu_ns(stats: &Value) -> u64 {
    stats["usage"]["cpu_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("no usage.cpu_ns in {stats}"))
}

fn samples(stats: &Value) -> u64 {
    stats["samples"]
        .as_u64()
        .unwrap_or_else(|| panic!("no samples in {stats}"))
}

#[test]
fn accounting_carried_across_restore() {
    let _g = serial();
    let parts = Parts::new("acct");
    let started = Instant::now();
    parts
        .run(
            "burn",
            &["--cpus", "0.5"],
            &["/bin/sh", "-c", "while :; do :; done"],
        )
        .expect("run");
    thread::sleep(Duration::from_millis(1200));
    let s0 = parts.stats("burn");
    let wall = started.elapsed().as_nanos() as u64;
    let (cpu0, n0) = (cpu_ns(&s0), samples(&s0));
    assert!(
        cpu0 >= 200_000_000,
        "a busy loop at 0.5 CPUs for 1.2 s used only {cpu0} ns: {s0:#}"
    );
    assert!(
        cpu0 <= wall * 8 / 10,
        "--cpus 0.5 not enforced: {cpu0} ns of CPU in {wall} ns: {s0:#}"
    );
    assert!(n0 >= 1, "no accounting sample after 1.2 s: {s0:#}");

    let (_t, img) = image("acct");
    parts.checkpoint_kill("burn", &img).expect("checkpoint");
    let s_down = parts.stats("burn");
    assert!(
        cpu_ns(&s_down) >= cpu0,
        "while checkpointed: cpu_ns {} < {cpu0} before: {s_down:#}",
        cpu_ns(&s_down)
    );
    parts.restore(&img, None).expect("restore");
    let s1 = parts.stats("burn");
    let (cpu1, n1) = (cpu_ns(&s1), samples(&s1));
    assert!(
        cpu1 >= cpu0,
        "after restore cpu_ns {cpu1} < {cpu0} before the checkpoint: {s1:#}"
    );
    assert!(
        n1 >= n0,
        "after restore the history has {n1} samples, {n0} before: {s1:#}"
    );
    assert_eq!(s1["state"], "running", "{s1:#}");
    assert_eq!(
        s1["limits"]["cpus"].as_f64(),
        Some(0.5),
        "cpu limit after restore: {s1:#}"
    );

    // The same image under another name starts from the image's totals and history.
    parts
        .restore(&img, Some("burn-copy"))
        .expect("restore under another name");
    let sc = parts.stats("burn-copy");
    assert!(
        cpu_ns(&sc) >= cpu0,
        "copy: cpu_ns {} < {cpu0} saved in the image: {sc:#}",
        cpu_ns(&sc)
    );
    assert!(
        samples(&sc) >= n0,
        "copy: {} samples < {n0} saved in the image: {sc:#}",
        samples(&sc)
    );

    thread::sleep(Duration::from_millis(2600));
    let s2 = parts.stats("burn");
    assert!(
        cpu_ns(&s2) > cpu1,
        "cpu_ns did not grow after restore: {} then {}: {s2:#}",
        cpu1,
        cpu_ns(&s2)
    );
    assert!(
        samples(&s2) > n1,
        "the history did not grow after restore: {n1} then {} samples: {s2:#}",
        samples(&s2)
    );

    let g = parts.json(&["stats", "--json"]);
    let ps = g["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("global stats without partitions: {g:#}"));
    let names: BTreeSet<&str> = ps.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        ["burn", "burn-copy"].into_iter().collect(),
        "global stats partitions: {g:#}"
    );
    for key in [
        "cpu_ns",
        "memory_bytes",
        "io_read_bytes",
        "io_write_bytes",
        "pids",
        "oom_kills",
    ] {
        let sum: u64 = ps
            .iter()
            .map(|p| p["usage"][key].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(
            g["total"][key].as_u64(),
            Some(sum),
            "global total.{key} is not the sum over partitions: {g:#}"
        );
    }
    let burn_cpu = ps
        .iter()
        .find(|p| p["name"] == "burn")
        .map(cpu_ns)
        .unwrap_or(0);
    assert!(burn_cpu >= cpu_ns(&s2), "global view of burn: {g:#}");
    assert!(
        g["host"]["cpus"].as_u64().unwrap_or(0) >= 1,
        "host cpus: {g:#}"
    );
}

// ---------------------------------------------------------------------------
// 5. limits

#[test]
fn limits_enforced_after_restore() {
    let _g = serial();
    let parts = Parts::new("limits");
    let ctl = Ctl::new("limits");
    let bin = workload_bin("partition_limits");
    let name = "lim";
    parts
        .run(
            name,
            &["--pids", "20", "--memory", "64M"],
            &[&bin.to_string_lossy(), &ctl.arg(), "40", "160"],
        )
        .expect("run");
    ctl.wait_ready(&parts, name).expect("ready");
    let before = parts.stats(name);
    assert_eq!(before["limits"]["pids"], 20, "{before:#}");
    assert_eq!(before["limits"]["memory_bytes"], 64u64 << 20, "{before:#}");
    thread::sleep(SETTLE);
    let (_t, img) = image("limits");
    parts.checkpoint_kill(name, &img).expect("checkpoint");
    parts.restore(&img, None).expect("restore");
    let after = parts.stats(name);
    assert_eq!(
        after["limits"], before["limits"],
        "limits read back after restore differ"
    );
    assert_eq!(after["usage"]["oom_kills"], 0, "{after:#}");

    // pids: 20 tasks at most, the workload being one of them.
    fs::write(ctl.file("fork"), "1").unwrap();
    let forks = wait_file(&ctl.file("forks"), RESULT_TIMEOUT)
        .unwrap_or_else(|| panic!("no fork report\n{}", parts.logs(name)));
    let field = |k: &str| -> i64 {
        forks
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad fork report {forks:?}"))
    };
    let (ok, failed, errno) = (field("ok"), field("failed"), field("errno"));
    assert!(
        (1..=19).contains(&ok) && failed == 40 - ok && failed > 0 && errno == libc::EAGAIN as i64,
        "--pids 20 after restore: forking 40 children gave {forks:?}; expected at most 19 to \
         succeed and the others to fail with EAGAIN"
    );

    // memory: a child locking 160 MiB is killed by the OOM killer.
    fs::write(ctl.file("hog"), "1").unwrap();
    let hogged = wait_file(&ctl.file("hogged"), Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no memory hog report\n{}", parts.logs(name)));
    assert_eq!(
        hogged, "signal 9",
        "--memory 64M after restore: a child touching 160 MiB should be OOM-killed"
    );
    let s = parts.stats(name);
    assert!(
        s["usage"]["oom_kills"].as_u64().unwrap_or(0) > 0,
        "stats shows no OOM kill: {s:#}"
    );
    assert!(
        s["usage"]["memory_peak_bytes"].as_u64().unwrap_or(u64::MAX) <= 64 << 20,
        "memory peak above the limit: {s:#}"
    );
    ctl.verify(&parts, name)
        .expect("the workload itself survives");
}

// ---------------------------------------------------------------------------
// 6. network modes

/// bash script run as a partition's first process: `SCRIPT CTL_DIR`. Writes `netdev` (what
/// /proc/net/dev shows inside) at start and whenever `dev` appears; for each `goN` (holding
/// "IP PORT") it connects, sends "hello N", and writes the reply line (or "connect failed") to
/// `gotN`.
const NET_SCRIPT: &str = r#"
C=$1; n=0
snap() { cat /proc/net/dev > "$C/netdev.tmp" && mv "$C/netdev.tmp" "$C/netdev"; }
snap
echo 1 > "$C/ready.tmp" && mv "$C/ready.tmp" "$C/ready"
while :; do
  if [ -e "$C/dev" ]; then rm -f "$C/dev"; snap; fi
  if [ -e "$C/go$n" ]; then
    read -r IP PORT < "$C/go$n"
    if ( exec 3<>"/dev/tcp/$IP/$PORT" || exit 1
         echo "hello $n" >&3 && read -r l <&3 && echo "$l" > "$C/got$n.tmp" ); then :
    else echo "connect failed" > "$C/got$n.tmp"; fi
    mv "$C/got$n.tmp" "$C/got$n"; n=$((n+1))
  fi
  sleep 0.05
done
"#;

/// Interface names listed in /proc/net/dev text.
fn interfaces(netdev: &str) -> BTreeSet<String> {
    netdev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Ask the script to connect to `ip:port` (connection number `n`); the reply line.
fn connect_from_inside(ctl: &Ctl, n: u32, ip: &str, port: u16) -> Option<String> {
    fs::write(ctl.file(&format!("go{n}")), format!("{ip} {port}\n")).unwrap();
    wait_file(&ctl.file(&format!("got{n}")), Duration::from_secs(15))
}

#[test]
fn net_none_and_veth() {
    let _g = serial();
    let parts = Parts::new("net");

    // --net none: loopback only, before and after a checkpoint/restore.
    let ctl = Ctl::new("net-none");
    let pid = parts
        .run(
            "nonet",
            &["--net", "none"],
            &["/bin/bash", "-c", NET_SCRIPT, "bash", &ctl.arg()],
        )
        .expect("run --net none");
    ctl.wait_ready(&parts, "nonet").expect("ready");
    let lo: BTreeSet<String> = ["lo".to_string()].into_iter().collect();
    let seen = read_trim(&ctl.file("netdev")).unwrap_or_default();
    assert_eq!(
        interfaces(&seen),
        lo,
        "--net none: /proc/net/dev inside shows:\n{seen}"
    );
    let host_view = fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    assert_eq!(
        interfaces(&host_view),
        lo,
        "/proc/{pid}/net/dev:\n{host_view}"
    );
    let (_t, img) = image("nonet");
    parts
        .checkpoint_kill("nonet", &img)
        .expect("checkpoint --net none");
    let pid = parts.restore(&img, None).expect("restore --net none");
    let _ = fs::remove_file(ctl.file("netdev"));
    fs::write(ctl.file("dev"), "1").unwrap();
    let seen = wait_file(&ctl.file("netdev"), Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no netdev after restore\n{}", parts.logs("nonet")));
    assert_eq!(
        interfaces(&seen),
        lo,
        "--net none after restore: /proc/net/dev inside shows:\n{seen}"
    );
    let host_view = fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    assert_eq!(
        interfaces(&host_view),
        lo,
        "/proc/{pid}/net/dev:\n{host_view}"
    );
    let _ = parts.rm_f("nonet");

    // --net veth: a TCP server on the host-side address only, reached from inside before and
    // after a checkpoint/restore.
    let ctl = Ctl::new("net-veth");
    parts
        .run(
            "vnet",
            &["--net", "veth"],
            &["/bin/bash", "-c", NET_SCRIPT, "bash", &ctl.arg()],
        )
        .expect("run --net veth");
    ctl.wait_ready(&parts, "vnet").expect("ready");
    let rec = parts.record("vnet");
    let addr = |k: &str| -> IpAddr {
        rec["spec"]["veth"][k]
            .as_str()
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no spec.veth.{k} in the record: {rec:#}"))
    };
    let (host_ip, inner_ip) = (addr("host_addr"), addr("inner_addr"));
    let seen = read_trim(&ctl.file("netdev")).unwrap_or_default();
    let ifs = interfaces(&seen);
    assert!(
        ifs.contains("lo") && ifs.len() == 2,
        "--net veth: expected lo and the veth end inside, /proc/net/dev shows:\n{seen}"
    );
    let listener = TcpListener::bind((host_ip, 0)).expect("bind the host-side address");
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let mut peers = Vec::new();
        for _ in 0..2 {
            let Ok((c, peer)) = listener.accept() else {
                break;
            };
            let mut line = String::new();
            let mut r = BufReader::new(c.try_clone().unwrap());
            let _ = r.read_line(&mut line);
            let mut c = c;
            let _ = c.write_all(format!("echo {}\n", line.trim()).as_bytes());
            peers.push(peer.ip());
        }
        peers
    });
    let ip = host_ip.to_string();
    let r0 = connect_from_inside(&ctl, 0, &ip, port);
    assert_eq!(
        r0.as_deref(),
        Some("echo hello 0"),
        "TCP from the veth partition to {ip}:{port}\n{}",
        parts.logs("vnet")
    );
    let (_t, img) = image("vnet");
    parts
        .checkpoint_kill("vnet", &img)
        .expect("checkpoint --net veth");
    parts.restore(&img, None).expect("restore --net veth");
    let r1 = connect_from_inside(&ctl, 1, &ip, port);
    assert_eq!(
        r1.as_deref(),
        Some("echo hello 1"),
        "a new TCP connection to {ip}:{port} after restore\n{}",
        parts.logs("vnet")
    );
    let peers = server.join().expect("server thread");
    assert_eq!(
        peers,
        vec![inner_ip, inner_ip],
        "connections must come from the partition's address"
    );
}

// ---------------------------------------------------------------------------
// 7. failures leave the partition as it was

const CHECKPOINT_STEPS: &[&str] = &[
    "seize", "inspect", "parasite", "tasks", "memory", "write", "commit",
];
const RESTORE_STEPS: &[&str] = &[
    "validate", "prepare", "root", "tasks", "mappings", "pages", "state", "detach",
];

fn journal_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stasis-part-journal-")
        .tempdir()
        .expect("create journal dir")
}

fn dir_entries(d: &Path) -> Vec<String> {
    fs::read_dir(d)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn failed_checkpoint_leaves_partition_running() {
    let _g = serial();
    let parts = Parts::new("fail-ckpt");
    let ctl = Ctl::new("fail-ckpt");
    let bin = workload_bin("multiproc");
    let name = "fc";
    let pid = parts
        .run(name, &[], &[&bin.to_string_lossy(), &ctl.arg()])
        .expect("run");
    ctl.wait_ready(&parts, name).expect("ready");
    let tree_before: BTreeSet<i32> = common::tree_pids(pid).into_iter().collect();
    let mut failures = Vec::new();
    for step in CHECKPOINT_STEPS {
        let (_t, img) = image(step);
        let journal = journal_dir();
        let d = img.to_string_lossy().into_owned();
        let mut c = parts.cmd(&["checkpoint", "--name", name, "--dir", &d]);
        c.env("STASIS_FAILPOINTS", step)
            .env("STASIS_JOURNAL_DIR", journal.path());
        let out = exec(c, T_CHECKPOINT);
        let mut problems = Vec::new();
        if out.timed_out || out.code == Some(0) {
            problems.push("expected a nonzero exit code".to_string());
        }
        if !out.stderr.contains(&format!("failpoint {step}")) {
            problems.push(format!("stderr does not name failpoint {step}"));
        }
        if parts.running_pid(name) != Some(pid) {
            problems.push(format!(
                "ps does not show it running with pid {pid}: {:?}",
                parts.ps_row(name)
            ));
        }
        let tree: BTreeSet<i32> = common::tree_pids(pid).into_iter().collect();
        if tree != tree_before {
            problems.push(format!("tree changed: {tree_before:?} -> {tree:?}"));
        }
        match cgroup_events(name) {
            Ok(ev) if ev.lines().any(|l| l.trim() == "frozen 0") => {}
            Ok(ev) => problems.push(format!("left frozen: cgroup.events:\n{ev}")),
            Err(e) => problems.push(e),
        }
        if img.join("manifest.img").exists() {
            problems.push("a complete-looking image (manifest.img) was left".into());
        }
        let left = dir_entries(journal.path());
        if !left.is_empty() {
            problems.push(format!("journal files left behind: {left:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "failpoint {step}:\n  - {}\n{}",
                problems.join("\n  - "),
                out.show()
            ));
        }
    }
    thread::sleep(SETTLE);
    if let Err(e) = ctl.verify(&parts, name) {
        failures.push(format!("the workload after the failed checkpoints: {e}"));
    }
    report(&failures, "failed partition checkpoints");
}

#[test]
fn failed_restore_leaves_nothing() {
    let _g = serial();
    let parts = Parts::new("fail-rst");
    let ctl = Ctl::new("fail-rst");
    let bin = workload_bin("multiproc");
    let name = "fr";
    parts
        .run(name, &[], &[&bin.to_string_lossy(), &ctl.arg()])
        .expect("run");
    ctl.wait_ready(&parts, name).expect("ready");
    thread::sleep(SETTLE);
    let (_t, img) = image("fail-rst");
    parts.checkpoint_kill(name, &img).expect("checkpoint");
    let snapshot = common::snapshot_tree(&img);
    let d = img.to_string_lossy().into_owned();
    let mut failures = Vec::new();
    let root_str = parts.path().to_string_lossy().into_owned();
    for (i, step) in RESTORE_STEPS.iter().enumerate() {
        // Alternate: under a new name, and under the image's own (checkpointed) name.
        let target = if i % 2 == 0 {
            format!("fr-{step}")
        } else {
            name.to_string()
        };
        parts.track(&target);
        let journal = journal_dir();
        let mut c = parts.cmd(&["restore", "--dir", &d, "--name", &target]);
        c.env("STASIS_FAILPOINTS", step)
            .env("STASIS_JOURNAL_DIR", journal.path());
        let out = exec(c, T_RESTORE);
        let mut problems = Vec::new();
        if out.timed_out || out.code == Some(0) {
            problems.push("expected a nonzero exit code".to_string());
        }
        if !out.stderr.contains(&format!("failpoint {step}")) {
            problems.push(format!("stderr does not name failpoint {step}"));
        }
        if !out.stdout.trim().is_empty() {
            problems.push("a failed restore printed something on stdout".into());
        }
        if let Some(row) = parts.ps_row(&target) {
            if row["state"] == "running" || row["state"] == "starting" || !row["pid"].is_null() {
                problems.push(format!("ps shows it as {row}"));
            }
        }
        if target == name && parts.state(name).as_deref() != Some("checkpointed") {
            problems.push(format!(
                "the checkpointed partition's record changed: ps says {:?}",
                parts.ps_row(name)
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let procs = cgroup_procs(&target).unwrap_or_default();
            let strays = namespaced_procs_of(&bin);
            let monitors: Vec<(i32, String)> = procs_with_cmdline(&root_str)
                .into_iter()
                .filter(|(_, c)| c.contains("__monitor") && c.contains(&target))
                .collect();
            if procs.is_empty() && strays.is_empty() && monitors.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                problems.push(format!(
                    "left behind: cgroup {CG_V2}/{target} procs {procs:?}; namespaced {} \
                     processes {strays:?}; monitors {monitors:?}",
                    bin.display()
                ));
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let left = dir_entries(journal.path());
        if !left.is_empty() {
            problems.push(format!("journal files left behind: {left:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "restore failpoint {step} (as {target}):\n  - {}\n{}\n{}",
                problems.join("\n  - "),
                out.show(),
                parts.logs(&target)
            ));
        }
        if target != name {
            let _ = parts.rm_f(&target);
        }
    }
    let changed = common::diff_trees(&snapshot, &common::snapshot_tree(&img));
    if !changed.is_empty() {
        failures.push(format!(
            "the failed restores changed the image: {changed:?}"
        ));
    }
    // The image still restores, and the workload verifies.
    ctl.reset();
    match parts.restore(&img, None) {
        Ok(_) => {
            thread::sleep(SETTLE);
            if let Err(e) = ctl.verify(&parts, name) {
                failures.push(format!("after the failed restores: {e}"));
            }
        }
        Err(e) => failures.push(format!("after the failed restores: {e}")),
    }
    report(&failures, "failed partition restores");
}

// ---------------------------------------------------------------------------
// 8. CLI behaviour

#[test]
fn cli_names_rm_stop_and_help() {
    let _g = serial();
    let parts = Parts::new("cli");
    let sleeper = ["/bin/sh", "-c", "while :; do sleep 1; done"];
    let pid = parts.run("c1", &[], &sleeper).expect("run c1");

    let again = parts.exec(&["run", "--name", "c1", "--", "/bin/true"], T_RUN);
    assert_eq!(
        again.code,
        Some(6),
        "run of an existing name\n{}",
        again.show()
    );
    assert!(
        again.stderr.contains("stasis rm"),
        "the message should name `stasis rm`\n{}",
        again.show()
    );
    assert_eq!(
        parts.running_pid("c1"),
        Some(pid),
        "c1 disturbed by the second run"
    );

    let rm = parts.exec(&["rm", "c1"], T_QUICK);
    assert_eq!(rm.code, Some(6), "rm of a running partition\n{}", rm.show());
    assert_eq!(
        parts.running_pid("c1"),
        Some(pid),
        "c1 disturbed by rm without -f"
    );
    let rm = parts.rm_f("c1");
    assert!(rm.ok(), "rm -f\n{}", rm.show());
    assert!(
        parts.ps_row("c1").is_none(),
        "c1 still listed: {:?}",
        parts.ps()
    );
    assert!(
        common::wait_gone(&[pid], T_STATE).is_empty(),
        "c1's first process {pid} survived rm -f"
    );
    assert!(
        cgroup_procs("c1").is_none(),
        "rm -f left the cgroup {CG_V2}/c1"
    );

    let stubborn = ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"];
    let pid = parts.run("c2", &[], &stubborn).expect("run c2");
    thread::sleep(SETTLE);
    let stop = parts.exec(&["stop", "-t", "1", "c2"], T_QUICK);
    assert!(stop.ok(), "stop -t 1\n{}", stop.show());
    assert!(
        stop.elapsed < Duration::from_secs(6),
        "stop -t 1 of an init that ignores SIGTERM took {:?}",
        stop.elapsed
    );
    assert!(
        common::wait_gone(&[pid], T_STATE).is_empty(),
        "c2's first process {pid} survived stop"
    );
    assert_eq!(
        parts.state("c2").as_deref(),
        Some("stopped"),
        "{:?}",
        parts.ps_row("c2")
    );

    for verb in ["run", "ps", "stats", "checkpoint", "restore", "stop", "rm"] {
        let out = exec(stasis_cmd(None, &[verb, "--help"]), T_QUICK);
        assert!(out.ok(), "{verb} --help\n{}", out.show());
        assert!(
            out.stdout.contains("Usage"),
            "{verb} --help prints no usage\n{}",
            out.show()
        );
    }
}

/// The partition's first process gets stdin, stdout and stderr and nothing else of whoever
/// ran `stasis run` (its other descriptors are objects outside the partition: an image of it
/// would record them, and a restore would silently replace them).
#[test]
fn run_gives_the_partition_only_stdio() {
    let _g = serial();
    let parts = Parts::new("fds");
    let (r, w) = std::io::pipe().expect("pipe");
    use std::os::fd::AsRawFd;
    let wfd = w.as_raw_fd();
    let mut c = Command::new(common::stasis());
    c.arg("--root").arg(parts.path()).args([
        "run",
        "--name",
        "fds",
        "--",
        "/bin/sh",
        "-c",
        "while :; do sleep 1; done",
    ]);
    c.env_remove("STASIS_FAILPOINTS").process_group(0);
    parts.track("fds");
    // SAFETY: dup2(2) and close_range(2) are async-signal-safe; nothing else runs in the child.
    unsafe {
        c.pre_exec(move || {
            if libc::dup2(wfd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_close_range, 3u32, 6u32, 0u32);
            libc::syscall(libc::SYS_close_range, 8u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let out = exec(c, T_RUN);
    drop(w);
    drop(r);
    assert!(out.ok(), "{}", out.show());
    let pid = pid_line(&out).unwrap();
    let fds: BTreeSet<String> = dir_entries(Path::new(&format!("/proc/{pid}/fd")))
        .into_iter()
        .collect();
    let want: BTreeSet<String> = ["0", "1", "2"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        fds,
        want,
        "descriptors of the partition's first process (`stasis run` was started with a pipe \
         on fd 7): {:?}",
        fds.iter()
            .map(|f| (
                f.clone(),
                fs::read_link(format!("/proc/{pid}/fd/{f}")).unwrap_or_default()
            ))
            .collect::<Vec<_>>()
    );
}

/// `rm` of a partition whose first process has just exited (the monitor may not have recorded
/// the end yet) removes it for good: nothing under the root comes back afterwards.
#[test]
fn rm_right_after_exit_leaves_nothing() {
    let _g = serial();
    let parts = Parts::new("rm-race");
    let mut failures = Vec::new();
    for i in 0..10 {
        let name = format!("brief{i}");
        let pid = parts
            .run(&name, &[], &["/bin/sh", "-c", "sleep 0.3"])
            .expect("run");
        let deadline = Instant::now() + T_STATE;
        while common::pid_alive(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let rm = parts.exec(&["rm", &name], T_QUICK);
        if !rm.ok() {
            failures.push(format!("{name}: rm after its end: {}", rm.show()));
            continue;
        }
        let deadline = Instant::now() + T_STATE;
        while !parts.monitors().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let dir = parts.dir_of(&name);
        if dir.exists() {
            failures.push(format!(
                "{name}: {} exists again after `stasis rm` succeeded (holding {:?}); its \
                 monitor recorded the end after the removal",
                dir.display(),
                dir_entries(&dir)
            ));
            let _ = fs::remove_dir_all(&dir);
        }
        if cgroup_procs(&name).is_some() {
            failures.push(format!("{name}: cgroup {CG_V2}/{name} left after rm"));
        }
    }
    report(&failures, "rm right after the partition ended");
}
