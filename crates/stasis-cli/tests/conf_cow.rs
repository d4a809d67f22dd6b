//! Copy-on-write sharing between forked processes kept across a restore (issue 13, item 2):
//! the `cow_fork` workload through every round trip, and the memory a pre-fork tree uses after a
//! restore (256 MiB in a parent and 8 children that never write it: about 256 MiB, not 2.3 GiB),
//! as a plain tree (summed PSS) and as a partition (its memory cgroup).

mod common;

use common::partition::{self as part, Ctl, Parts};
use std::path::Path;
use std::time::Duration;

// 16 MiB, 2 readers, a writer, an unmapper with a grandchild, parent writes after fork.
crate::conformance_tests!(cow_fork, "cow_fork", &[]);

const MIB: u64 = 1 << 20;
const SHARED_MIB: u64 = 256;
const CHILDREN: &str = "8";

/// Sums of `/proc/PID/smaps_rollup` fields (kB) over `pids`.
fn rollup(pids: &[i32]) -> std::collections::BTreeMap<String, u64> {
    let mut sums = std::collections::BTreeMap::new();
    for p in pids {
        let text = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            .unwrap_or_else(|e| panic!("read smaps_rollup of {p}: {e}"));
        for line in text.lines().skip(1) {
            let mut it = line.split_whitespace();
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            if let Ok(v) = v.parse::<u64>() {
                *sums.entry(k.trim_end_matches(':').to_string()).or_insert(0) += v;
            }
        }
    }
    sums
}

fn show(sums: &std::collections::BTreeMap<String, u64>) -> String {
    [
        "Rss",
        "Pss",
        "Pss_Anon",
        "Shared_Clean",
        "Shared_Dirty",
        "Private_Dirty",
        "Anonymous",
    ]
    .iter()
    .map(|k| format!("{k} {} MiB", sums.get(*k).copied().unwrap_or(0) / 1024))
    .collect::<Vec<_>>()
    .join(", ")
}

/// A parent with 256 MiB of private data and 8 children that never write it, restored as a
/// plain tree: the anonymous memory of the tree, summed as PSS (each shared page counted once
/// overall), stays about 256 MiB.
#[test]
fn prefork_tree_memory_not_multiplied() {
    let _g = common::serial();
    let size = SHARED_MIB.to_string();
    let mut w = common::Workload::start("cow_fork", &[&size, CHILDREN, "plain"]);
    let pids = w.tree_pids();
    assert_eq!(pids.len(), 9, "the tree: {pids:?}");
    let before = rollup(&pids);
    eprintln!(
        "before the checkpoint, {} processes: {}",
        pids.len(),
        show(&before)
    );
    // Twice: the restored tree shares its pages again, so its own image keeps them once too.
    for round in 1..=2 {
        let img = common::image_dir("hc-cow-mem");
        let dir = img.path().join("img");
        common::checkpoint_kill(&w, &dir);
        let (pid, _) = common::restore(&dir);
        w.set_pid(pid);
        let pids = w.tree_pids();
        assert_eq!(pids.len(), 9, "the restored tree: {pids:?}");
        let after = rollup(&pids);
        eprintln!(
            "after restore {round}, {} processes: {}",
            pids.len(),
            show(&after)
        );
        let anon = after["Pss_Anon"] * 1024;
        let rss_anon = after.get("Anonymous").copied().unwrap_or(0) * 1024;
        eprintln!(
            "anonymous memory after restore {round}: {} MiB (PSS), mapped {} MiB in all (RSS)",
            anon / MIB,
            rss_anon / MIB
        );
        assert!(
            anon < 2 * SHARED_MIB * MIB,
            "restore {round}: the tree uses {} MiB of anonymous memory (PSS); sharing kept would be about {SHARED_MIB} MiB",
            anon / MIB
        );
        assert!(
            rss_anon >= 9 * (SHARED_MIB - 8) * MIB,
            "restore {round}: every process should still map its {SHARED_MIB} MiB ({} MiB in all)",
            rss_anon / MIB
        );
    }
    if let Err(e) = w.verify() {
        panic!("cow_fork after restore: {e}");
    }
}

/// `anon` of the partition's memory cgroup: v2 `memory.stat` `anon` when the unified hierarchy
/// has the memory controller, else v1 `total_rss` (the same count, named otherwise).
fn cgroup_anon(name: &str) -> u64 {
    let v2 = Path::new(part::CG_V2).join(name).join("memory.stat");
    let v1 = Path::new("/sys/fs/cgroup/memory/stasis")
        .join(name)
        .join("memory.stat");
    for (file, key) in [(v2, "anon"), (v1, "total_rss")] {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let found = text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
        });
        if let Some(v) = found {
            eprintln!("{}: {key} {} MiB", file.display(), v / MIB);
            return v;
        }
    }
    panic!("partition {name}: no memory cgroup with anon or total_rss in memory.stat");
}

/// The same tree as a partition, measured from its memory cgroup.
#[test]
fn prefork_partition_memory_not_multiplied() {
    let _g = common::serial();
    let parts = Parts::new("hc-cow");
    let name = "hc-cow-mem";
    let ctl = Ctl::new("hc-cow-mem");
    let bin = common::workload_bin("cow_fork");
    let (bin, arg) = (bin.to_string_lossy().into_owned(), ctl.arg());
    let size = SHARED_MIB.to_string();
    let res = (|| -> Result<(), String> {
        parts.run(name, &[], &[&bin, &arg, &size, CHILDREN, "plain"])?;
        ctl.wait_ready(&parts, name)?;
        std::thread::sleep(Duration::from_millis(200));
        let before = cgroup_anon(name);
        eprintln!("before the checkpoint: anon {} MiB", before / MIB);
        let (_t, img) = part::image("hc-cow-mem");
        parts.checkpoint_kill(name, &img)?;
        parts.restore(&img, None)?;
        let after = cgroup_anon(name);
        eprintln!(
            "after the restore: anon {} MiB (before the checkpoint {} MiB)",
            after / MIB,
            before / MIB
        );
        if after >= 2 * SHARED_MIB * MIB {
            return Err(format!(
                "the restored partition uses {} MiB of anonymous memory; sharing kept would be about {SHARED_MIB} MiB",
                after / MIB
            ));
        }
        ctl.verify(&parts, name)
    })();
    let _ = parts.rm_f(name);
    if let Err(e) = res {
        panic!("{e}");
    }
}

/// A restore of a copy-on-write tree that fails once the root holds the memory its children
/// inherit ("root"), once every process exists with its inherited memory ("tasks"), or after
/// the pages ("pages") leaves no task behind; the same image then restores and verifies.
#[test]
fn failed_restore_leaves_nothing() {
    let _g = common::serial();
    let mut w = common::Workload::start("cow_fork", &[]);
    let pids = w.tree_pids();
    let img = common::image_dir("hc-cow-fail");
    let dir = img.path().join("img");
    common::checkpoint_kill(&w, &dir);
    for step in ["root", "tasks", "pages"] {
        let out = common::run_cmd(common::restore_cmd(&dir).env("STASIS_FAILPOINTS", step));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(&format!("failpoint {step}")),
            "restore with failpoint {step}: {}\n{stderr}",
            out.status
        );
        assert!(out.stdout.is_empty(), "a failed restore printed a pid");
        let left = common::wait_gone(&pids, Duration::from_secs(5));
        assert!(
            left.is_empty(),
            "failpoint {step}: tasks of the image left behind: {left:?}"
        );
    }
    let (pid, _) = common::restore(&dir);
    w.set_pid(pid);
    if let Err(e) = w.verify() {
        panic!("cow_fork after failed restores then a good one: {e}");
    }
}

/// A pre-fork server in CPython (`tests/programs/prefork.py`): 128 MiB of data loaded by the
/// parent, 4 workers forked that only read it. After a checkpoint and restore every process
/// finds its data intact and the tree still shares it (summed PSS well under 5 copies).
#[test]
fn python_prefork_server_keeps_sharing() {
    let _g = common::serial();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/prefork.py");
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.is_file(),
        "python3 is needed (Debian: apt-get install python3)"
    );
    let mut w = common::Workload::start_program(
        "prefork",
        python,
        &[
            std::ffi::OsStr::new("-u"),
            std::ffi::OsStr::new("-I"),
            script.as_os_str(),
        ],
        &["128", "4"],
        None,
        None,
    );
    w.register_tree();
    let pids = w.tree_pids();
    assert_eq!(pids.len(), 5, "the tree: {pids:?}");
    let before = rollup(&pids);
    eprintln!("python before the checkpoint: {}", show(&before));
    let img = common::image_dir("hc-cow-py");
    let dir = img.path().join("img");
    common::checkpoint_kill(&w, &dir);
    let (pid, _) = common::restore(&dir);
    w.set_pid(pid);
    let pids = w.tree_pids();
    assert_eq!(pids.len(), 5, "the restored tree: {pids:?}");
    let after = rollup(&pids);
    eprintln!("python after the restore: {}", show(&after));
    let pss = after["Pss_Anon"] * 1024;
    assert!(
        pss < 2 * 128 * MIB + 64 * MIB,
        "the restored Python tree uses {} MiB of anonymous memory (PSS); sharing kept would be \
         about 128 MiB plus the interpreters' own",
        pss / MIB
    );
    if let Err(e) = w.verify() {
        panic!("prefork.py after restore: {e}");
    }
}
