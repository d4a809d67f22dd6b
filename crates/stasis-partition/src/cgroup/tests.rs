//! Unit tests: mount-table parsing, routing and description of the combination, interface-file
//! parsers. No real cgroup is touched here (see `tests/cgroup.rs` for those).

use super::*;
use proptest::prelude::*;
use std::fs;

const HYBRID: &str = "\
23 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const PURE_V2: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
26 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

const PURE_V1: &str = "\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
32 25 0:28 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,freezer
33 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
34 25 0:30 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,blkio
35 25 0:31 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,cpuset,clone_children
";

fn hier(mount: &str, c: &[&str]) -> V1Hierarchy {
    V1Hierarchy {
        mount: PathBuf::from(mount),
        controllers: c.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[test]
fn mountinfo_hybrid() {
    let m = Mounts::parse(HYBRID).unwrap();
    assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
    assert_eq!(
        m.v1,
        vec![
            hier("/sys/fs/cgroup/cpu", &["cpu"]),
            hier("/sys/fs/cgroup/cpuacct", &["cpuacct"]),
            hier("/sys/fs/cgroup/cpuset", &["cpuset"]),
            hier("/sys/fs/cgroup/memory", &["memory"]),
            hier("/sys/fs/cgroup/devices", &["devices"]),
            hier("/sys/fs/cgroup/freezer", &["freezer"]),
            hier("/sys/fs/cgroup/blkio", &["blkio"]),
            hier("/sys/fs/cgroup/pids", &["pids"]),
        ]
    );
    let v1 = V1::new(m.v1);
    assert_eq!(
        v1.controllers(),
        ["memory", "cpu", "cpuacct", "pids", "blkio", "freezer"]
    );
    assert!(v1.can_freeze());
    let acct = v1.without_freezer();
    assert!(!acct.can_freeze());
    assert_eq!(
        acct.controllers(),
        ["memory", "cpu", "cpuacct", "pids", "blkio"]
    );
    assert_eq!(
        v1.path("cpuacct", "stasis/web1").unwrap(),
        Path::new("/sys/fs/cgroup/cpuacct/stasis/web1")
    );
    assert_eq!(acct.path("freezer", "stasis/web1"), None);
    assert_eq!(v1.path("memory", "../x"), None);
}

#[test]
fn mountinfo_pure_v2() {
    let m = Mounts::parse(PURE_V2).unwrap();
    assert!(m.v1.is_empty());
    assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
}

#[test]
fn mountinfo_pure_v1_comounted() {
    let m = Mounts::parse(PURE_V1).unwrap();
    assert_eq!(m.v2, None);
    // name=systemd carries no controller; flags (xattr, clone_children) are not controllers.
    assert_eq!(
        m.v1,
        vec![
            hier("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
            hier("/sys/fs/cgroup/memory", &["memory"]),
            hier("/sys/fs/cgroup/net_cls,net_prio", &["net_cls", "net_prio"]),
            hier("/sys/fs/cgroup/freezer", &["freezer"]),
            hier("/sys/fs/cgroup/pids", &["pids"]),
            hier("/sys/fs/cgroup/blkio", &["blkio"]),
            hier("/sys/fs/cgroup/cpuset", &["cpuset"]),
        ]
    );
    let v1 = V1::new(m.v1);
    assert_eq!(v1.mount_of("cpu"), v1.mount_of("cpuacct"));
    assert_eq!(
        v1.mount_of("cpu"),
        Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
    );
    assert!(!v1.has("net_cls"), "not a controller this crate uses");
}

#[test]
fn mountinfo_bind_mounts_and_escapes() {
    // The same hierarchy twice (0:40): the mount showing its root wins, whatever the order.
    // Mount points with spaces are octal-escaped.
    let text = "\
50 23 0:40 /sub /mnt/a rw - cgroup cgroup rw,memory
51 23 0:40 / /mnt/my\\040cgroups/memory rw - cgroup cgroup rw,memory
52 23 0:41 /x /mnt/u1 rw - cgroup2 cgroup2 rw
53 23 0:41 / /mnt/u2 rw - cgroup2 cgroup2 rw
54 23 0:41 / /mnt/u3 rw - cgroup2 cgroup2 rw
";
    let m = Mounts::parse(text).unwrap();
    assert_eq!(m.v1, vec![hier("/mnt/my cgroups/memory", &["memory"])]);
    assert_eq!(m.v2.as_deref(), Some(Path::new("/mnt/u2")));
}

#[test]
fn mountinfo_garbage_is_an_error() {
    let e = Mounts::parse("this is not a mount table\n").unwrap_err();
    assert!(matches!(e, CgroupError::ParseMountinfo { .. }), "{e}");
    assert_eq!(Mounts::parse("").unwrap(), Mounts::default());
}

/// A mount table like `base` with `/sys/fs/cgroup` replaced by a temporary directory, whose
/// v2 root offers `v2_controllers`.
fn fake(base: &str, v2_dir: &str, v2_controllers: &str) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap().to_owned();
    let v2 = tmp.path().join(v2_dir);
    fs::create_dir_all(&v2).unwrap();
    fs::write(v2.join("cgroup.controllers"), v2_controllers).unwrap();
    (tmp, base.replace("/sys/fs/cgroup", &root))
}

#[test]
fn combination_hybrid_freezes_through_v2() {
    let (tmp, text) = fake(HYBRID, "unified", "hugetlb\n");
    let c = Cgroups::from_mountinfo(&text).unwrap();
    let root = tmp.path().display();
    assert_eq!(c.mode(), Mode::Hybrid);
    assert_eq!(
        c.describe(),
        format!(
            "hybrid: freeze v2 ({root}/unified), limits and accounting v1 (memory, cpu, \
             cpuacct, pids, blkio)"
        )
    );
    assert_eq!(c.freezer().unwrap().version(), "v2");
    assert!(!c.v1().unwrap().can_freeze(), "v1 freezer unused on hybrid");
    assert!(c.v2().unwrap().controllers().is_empty());
    assert_eq!(c.version(), "hybrid");
}

#[test]
fn combination_pure_v2() {
    let (tmp, text) = fake(PURE_V2, "", "cpuset cpu io memory hugetlb pids rdma misc\n");
    let c = Cgroups::from_mountinfo(&text).unwrap();
    assert_eq!(c.mode(), Mode::V2);
    assert!(c.v1().is_none());
    assert_eq!(
        c.describe(),
        format!(
            "v2: freeze v2 ({}), limits and accounting v2 (memory, cpu, io, pids)",
            tmp.path().display()
        )
    );
}

#[test]
fn combination_pure_v1_freezes_through_freezer_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let text = PURE_V1.replace("/sys/fs/cgroup", tmp.path().to_str().unwrap());
    let c = Cgroups::from_mountinfo(&text).unwrap();
    assert_eq!(c.mode(), Mode::V1);
    assert!(c.v2().is_none());
    assert_eq!(c.freezer().unwrap().version(), "v1");
    assert_eq!(
        c.describe(),
        format!(
            "v1: freeze v1 ({}/freezer), limits and accounting v1 (memory, cpu, cpuacct, pids, \
             blkio, freezer)",
            tmp.path().display()
        )
    );
}

#[test]
fn combination_reports_what_is_missing() {
    // Hybrid without pids and blkio anywhere; v2 with nothing: cpu time falls back to nothing
    // else since v1 has cpuacct.
    let base = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    let (_tmp, text) = fake(base, "unified", "");
    let c = Cgroups::from_mountinfo(&text).unwrap();
    assert!(
        c.describe()
            .ends_with("limits and accounting v1 (cpu, cpuacct); not available: memory, pids, io"),
        "{}",
        c.describe()
    );
    let e = c
        .set_limits(
            "stasis/x",
            &Limits {
                memory_bytes: Some(1 << 20),
                ..Limits::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "controller memory is not available in any hierarchy: mount it or run on a host with \
         cgroup v2 memory"
    );

    // Only an empty v2: cpu time comes from cpu.stat.
    let base = "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    let (tmp, text) = fake(base, "", "");
    let c = Cgroups::from_mountinfo(&text).unwrap();
    assert_eq!(
        c.describe(),
        format!(
            "v2: freeze v2 ({}), limits and accounting v2 (cpu.stat); not available: memory, \
             cpu, pids, io",
            tmp.path().display()
        )
    );
}

#[test]
fn combination_needs_a_hierarchy() {
    let e = Cgroups::from_mountinfo("23 1 254:0 / / rw - ext4 /dev/vda rw\n").unwrap_err();
    assert!(matches!(e, CgroupError::NoHierarchy));
    // A v2 mount whose root cannot be read is an error naming the file.
    let e = Cgroups::from_mountinfo(
        "41 31 0:38 / /nonexistent/stasis-cgroup rw - cgroup2 cgroup2 rw\n",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("/nonexistent/stasis-cgroup/cgroup.controllers"),
        "{e}"
    );
    let e = V2::from_mountinfo(HYBRID.lines().next().unwrap()).unwrap_err();
    assert!(matches!(
        e,
        CgroupError::VersionNotMounted { version: "v2", .. }
    ));
    let e = V1::from_mountinfo(PURE_V2).unwrap_err();
    assert!(matches!(
        e,
        CgroupError::VersionNotMounted { version: "v1", .. }
    ));
}

#[test]
fn v2_create_enables_offered_controllers_in_ancestors() {
    // A directory tree standing in for a v2 hierarchy: what create() writes to
    // cgroup.subtree_control is observable.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::write(
        root.join("cgroup.controllers"),
        "cpu io memory hugetlb pids\n",
    )
    .unwrap();
    fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    fs::create_dir(root.join("stasis")).unwrap();
    fs::write(root.join("stasis/cgroup.controllers"), "memory pids\n").unwrap();
    fs::write(root.join("stasis/cgroup.subtree_control"), "pids\n").unwrap();
    let v2 = V2::new(root).unwrap();
    assert_eq!(v2.controllers(), ["memory", "cpu", "io", "pids"]);
    v2.create("stasis/web1").unwrap();
    assert!(v2.exists("stasis/web1"));
    assert_eq!(
        fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
        "+memory +cpu +io +pids"
    );
    // Only what the parent offers and has not enabled yet.
    assert_eq!(
        fs::read_to_string(root.join("stasis/cgroup.subtree_control")).unwrap(),
        "+memory"
    );
    // Nothing is enabled in the leaf (v2 keeps processes in leaves only).
    assert!(!root.join("stasis/web1/cgroup.subtree_control").exists());
}

#[test]
fn v2_set_limits_names_the_absent_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::write(root.join("cgroup.controllers"), "hugetlb\n").unwrap();
    fs::create_dir(root.join("g")).unwrap();
    fs::write(root.join("g/cgroup.controllers"), "").unwrap();
    let v2 = V2::new(root).unwrap();
    let e = v2
        .set_limits(
            "g",
            &Limits {
                pids: Some(10),
                ..Limits::default()
            },
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("controller pids is not available in the cgroup v2 hierarchy at "),
        "{msg}"
    );
    assert!(msg.contains("(it offers: hugetlb)"), "{msg}");
    // No limit asked: nothing to do, no error.
    v2.set_limits("g", &Limits::default()).unwrap();
    // Missing group.
    let e = v2.usage("nope").unwrap_err();
    assert!(matches!(e, CgroupError::NotFound { .. }), "{e}");
}

#[test]
fn group_names() {
    assert_eq!(Cgroups::group_for("web1"), "stasis/web1");
    assert!(check_group("stasis/web1").is_ok());
    assert!(check_group("a").is_ok());
    for bad in ["", "/abs", "a/../b", "..", "a//b", "./a", "a/", "a\nb"] {
        let e = check_group(bad).unwrap_err();
        assert!(
            matches!(e, CgroupError::InvalidGroup { .. }),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn limit_validation() {
    assert_eq!(cpu_quota_us(0.5).unwrap(), 50_000);
    assert_eq!(cpu_quota_us(2.0).unwrap(), 200_000);
    assert_eq!(cpu_quota_us(0.01).unwrap(), 1_000);
    for bad in [0.0, -1.0, 0.001, f64::NAN, f64::INFINITY] {
        assert!(cpu_quota_us(bad).is_err(), "{bad} accepted");
    }
    assert!(check_pids(0).is_err());
    assert!(check_pids(1).is_ok());
    assert!(check_memory(100).is_err());
    assert!(check_memory(1 << 20).is_ok());
}

#[test]
fn max_values() {
    assert_eq!(parse_max("max\n").unwrap(), None);
    assert_eq!(parse_max("4096\n").unwrap(), Some(4096));
    assert!(parse_max("maximum").is_err());
    assert!(parse_max("").is_err());
    assert_eq!(parse_v1_limit("9223372036854771712\n").unwrap(), None);
    assert_eq!(parse_v1_limit("-1").unwrap(), None);
    assert_eq!(parse_v1_limit("104857600\n").unwrap(), Some(104_857_600));
    assert_eq!(parse_cpu_max("max 100000\n").unwrap(), None);
    assert_eq!(parse_cpu_max("50000 100000\n").unwrap(), Some(0.5));
    assert_eq!(parse_cpu_max("150000 100000").unwrap(), Some(1.5));
    assert!(parse_cpu_max("50000").is_err());
    assert!(parse_cpu_max("50000 0").is_err());
    assert!(parse_cpu_max("a b").is_err());
    assert_eq!(cpus_from_quota(-1, 100_000).unwrap(), None);
    assert_eq!(cpus_from_quota(25_000, 100_000).unwrap(), Some(0.25));
}

#[test]
fn stat_files() {
    let cpu_stat = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 0\n";
    let kv = parse_flat_keyed(cpu_stat).unwrap();
    assert_eq!(parse::keyed(&kv, "usage_usec"), Some(1234));
    assert_eq!(parse::keyed(&kv, "nope"), None);
    let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_eq!(
        parse::keyed(&parse_flat_keyed(oom).unwrap(), "oom_kill"),
        Some(3)
    );
    assert!(parse_flat_keyed("a 1 2\n").is_err());
    assert!(parse_flat_keyed("a x\n").is_err());
    assert!(parse_flat_keyed("\n\n").unwrap().is_empty());

    let io_stat = "\
254:0 rbytes=8392704 wbytes=4096 rios=5 wios=1 dbytes=0 dios=0
253:0 rbytes=100 wbytes=200 rios=1 wios=1 dbytes=0 dios=0
";
    assert_eq!(
        parse_io_stat(io_stat).unwrap(),
        IoBytes {
            read: 8_392_804,
            written: 4296
        }
    );
    assert!(parse_io_stat("254:0 rbytes\n").is_err());
    assert!(parse_io_stat("rbytes=1\n").is_err());

    let blkio = "\
254:0 Read 8392704
254:0 Write 8388608
254:0 Sync 16781312
254:0 Async 0
254:0 Discard 0
254:0 Total 16781312
8:0 Read 1
8:0 Write 2
Total 16781315
";
    assert_eq!(
        parse_blkio_service_bytes(blkio).unwrap(),
        IoBytes {
            read: 8_392_705,
            written: 8_388_610
        }
    );
    assert_eq!(
        parse_blkio_service_bytes("Total 0\n").unwrap(),
        IoBytes::default()
    );
    assert!(parse_blkio_service_bytes("254:0 Read\n").is_err());
}

#[test]
fn error_messages_say_what_to_do() {
    let e = CgroupError::Write {
        path: PathBuf::from("/x/memory.limit_in_bytes"),
        value: "4096".into(),
        source: io::Error::from_raw_os_error(libc::EBUSY),
    };
    assert!(
        e.to_string().contains("memory limit below current usage"),
        "{e}"
    );
    assert!(std::error::Error::source(&e).is_some());
    let e = CgroupError::Attach {
        pid: 5,
        path: PathBuf::from("/x/cgroup.procs"),
        source: io::Error::from_raw_os_error(libc::ESRCH),
    };
    assert!(e.to_string().contains("has exited"), "{e}");
}

fn key() -> impl Strategy<Value = String> {
    "[a-z][a-z_]{0,15}"
}

proptest! {
    #[test]
    fn flat_keyed_round_trip(pairs in proptest::collection::vec((key(), any::<u64>()), 0..20)) {
        let text: String = pairs.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        prop_assert_eq!(parse_flat_keyed(&text).unwrap(), pairs);
    }

    #[test]
    fn max_round_trip(v in proptest::option::of(any::<u64>())) {
        let text = v.map_or("max\n".to_owned(), |v| format!("{v}\n"));
        prop_assert_eq!(parse_max(&text).unwrap(), v);
    }

    #[test]
    fn cpu_max_round_trip(quota in 1_000u64..100_000_000) {
        let cpus = parse_cpu_max(&format!("{quota} {CPU_PERIOD_US}\n")).unwrap().unwrap();
        prop_assert_eq!(cpu_quota_us(cpus).unwrap(), quota);
    }

    #[test]
    fn io_stat_sums(devs in proptest::collection::vec(
        (0u32..300, 0u32..16, 0u64..1 << 50, 0u64..1 << 50, 0u64..1000), 0..8)) {
        let text: String = devs
            .iter()
            .map(|(ma, mi, r, w, n)| {
                format!("{ma}:{mi} rbytes={r} wbytes={w} rios={n} wios={n} dbytes=0 dios=0\n")
            })
            .collect();
        let io = parse_io_stat(&text).unwrap();
        prop_assert_eq!(io.read, devs.iter().map(|d| d.2).sum::<u64>());
        prop_assert_eq!(io.written, devs.iter().map(|d| d.3).sum::<u64>());
    }

    #[test]
    fn blkio_sums(devs in proptest::collection::vec(
        (0u32..300, 0u32..16, 0u64..1 << 50, 0u64..1 << 50), 0..8)) {
        let mut text = String::new();
        for (ma, mi, r, w) in &devs {
            let d = format!("{ma}:{mi}");
            text.push_str(&format!(
                "{d} Read {r}\n{d} Write {w}\n{d} Sync {r}\n{d} Async {w}\n{d} Discard 0\n\
                 {d} Total {}\n", r + w));
        }
        let total: u64 = devs.iter().map(|d| d.2 + d.3).sum();
        text.push_str(&format!("Total {total}\n"));
        let io = parse_blkio_service_bytes(&text).unwrap();
        prop_assert_eq!(io.read, devs.iter().map(|d| d.2).sum::<u64>());
        prop_assert_eq!(io.written, devs.iter().map(|d| d.3).sum::<u64>());
    }
}
