//! A partition with a root filesystem of its own (`stasis run --rootfs`), checkpointed and
//! restored: the root switch, its /dev, its private /dev/shm tmpfs with content, its /proc.
#![cfg(target_os = "linux")]

mod common;

use common::{run_cmd, serial};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A minimal root filesystem: a shell, a few tools and the libraries they load.
fn build_rootfs(dir: &Path) {
    for d in ["bin", "tmp", "proc", "dev", "sys"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    for b in ["/bin/sh", "/bin/sleep", "/bin/cat", "/bin/echo"] {
        std::fs::copy(b, dir.join("bin").join(Path::new(b).file_name().unwrap()))
            .unwrap_or_else(|e| panic!("copying {b}: {e}"));
        let out = run_cmd(Command::new("ldd").arg(b));
        assert!(out.status.success(), "ldd {b}");
        for lib in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let dst = dir.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            if !dst.exists() {
                std::fs::copy(lib, &dst).unwrap_or_else(|e| panic!("copying {lib}: {e}"));
            }
        }
    }
}

use common::{ok_stdout as ok, stasis_at as st};

fn read_count(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_count_above(p: &Path, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = read_count(p);
        if c > n {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "counter in {} stuck at {c}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Cleanup(PathBuf, &'static str);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = st(&self.0, &["rm", "-f", self.1]);
    }
}

#[test]
fn rootfs_partition_checkpoint_restore() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    let state = tmp.path().join("state");
    let img = tmp.path().join("img");
    build_rootfs(&rootfs);
    let _c = Cleanup(state.clone(), "rf");
    let script = "echo kept-in-shm > /dev/shm/keep; i=0; \
                  while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done";
    let pid: i32 = ok(
        &st(
            &state,
            &[
                "run",
                "--name",
                "rf",
                "--rootfs",
                rootfs.to_str().unwrap(),
                "--",
                "/bin/sh",
                "-c",
                script,
            ],
        ),
        "run",
    )
    .parse()
    .expect("run prints a pid");
    let count = rootfs.join("tmp/count");
    wait_count_above(&count, 3);
    // The partition sees its own root: the host's /etc is not there.
    assert!(!Path::new(&format!("/proc/{pid}/root/etc/passwd")).exists());
    ok(
        &st(
            &state,
            &["checkpoint", "--name", "rf", "--dir", img.to_str().unwrap()],
        ),
        "checkpoint",
    );
    let at_ckpt = read_count(&count);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read_count(&count),
        at_ckpt,
        "the partition still runs after its checkpoint"
    );
    let ps = ok(&st(&state, &["ps", "--json"]), "ps");
    assert!(ps.contains("\"checkpointed\""), "{ps}");

    let out = ok(
        &st(
            &state,
            &["restore", "--dir", img.to_str().unwrap(), "--json"],
        ),
        "restore",
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("restore --json prints JSON");
    assert_eq!(v["name"], "rf", "{out}");
    let pid = v["pid"].as_i64().expect("a pid") as i32;
    let after = wait_count_above(&count, at_ckpt);
    assert!(after > at_ckpt);
    // The private /dev/shm came back with its content; /proc is the partition's.
    let keep = std::fs::read_to_string(format!("/proc/{pid}/root/dev/shm/keep")).unwrap();
    assert_eq!(keep.trim(), "kept-in-shm");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.trim_end().ends_with("\t1"), "{nspid}");
    assert!(Path::new(&format!("/proc/{pid}/root/proc/1/status")).exists());
    assert!(!Path::new(&format!("/proc/{pid}/root/proc/{pid}")).exists() || pid == 1);

    // And it can be checkpointed again from there.
    let img2 = tmp.path().join("img2");
    ok(
        &st(
            &state,
            &[
                "checkpoint",
                "--name",
                "rf",
                "--dir",
                img2.to_str().unwrap(),
                "--leave-running",
            ],
        ),
        "second checkpoint",
    );
    let c = read_count(&count);
    wait_count_above(&count, c);
    ok(&st(&state, &["rm", "-f", "rf"]), "rm");
}
