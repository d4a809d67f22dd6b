//! The recovery journal is trusted only when nobody but root could have written it.
//!
//! A journal tells `stasis recover` (which every stasis command runs first, as root) which
//! threads to seize and which signal masks and registers to put back. A journal planted by
//! another user would let them change root-owned processes, so `recover` ignores journals in a
//! directory others may write, and journal files that are not root's alone (0600). The positive
//! control shows the same journal *is* acted on where it is trusted, so the refusals are real.
#![cfg(target_os = "linux")]

mod common;

use common::{run_cmd_reliably, serial, stasis};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A live process of our own for the journal to name.
struct Victim(Child);

impl Victim {
    fn start() -> Victim {
        let c = Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        std::thread::sleep(Duration::from_millis(100));
        Victim(c)
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    fn sigblk(&self) -> String {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .unwrap()
            .trim()
            .to_string()
    }
    fn start_time(&self) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(19).unwrap().parse().unwrap()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A journal of a dead stasis run naming `v`, asking for signal mask 0x1 (SIGHUP blocked).
fn journal_for(v: &Victim) -> String {
    serde_json::json!({
        "owner": 999_999,
        "procs": [{
            "pid": v.pid(),
            "start_time": v.start_time(),
            "parasite": null,
            "threads": [{"tid": v.pid(), "regs": vec![0u64; 27], "sigmask": 1}],
        }],
    })
    .to_string()
}

fn recover(dir: &Path) -> String {
    let out = run_cmd_reliably(
        Command::new(stasis())
            .arg("recover")
            .env("STASIS_JOURNAL_DIR", dir),
    );
    assert!(out.status.success(), "stasis recover failed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn plant(dir: &Path, dir_mode: u32, file_mode: u32, owner: Option<u32>, body: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(dir_mode)).unwrap();
    let f = dir.join("4242.json");
    fs::write(&f, body).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(file_mode)).unwrap();
    if let Some(uid) = owner {
        std::os::unix::fs::chown(&f, Some(uid), None).unwrap();
    }
}

#[test]
fn recover_ignores_journals_others_could_write() {
    let _g = serial();
    let t = tempfile::tempdir().unwrap();
    let v = Victim::start();
    let before = v.sigblk();
    assert_eq!(
        before, "0000000000000000",
        "precondition: sleep blocks nothing"
    );
    let body = journal_for(&v);

    // A directory anyone may write: nothing is read from it.
    let open_dir = t.path().join("open");
    plant(&open_dir, 0o777, 0o600, None, &body);
    recover(&open_dir);
    assert_eq!(
        v.sigblk(),
        before,
        "journal in a 0777 directory was acted on"
    );
    assert!(open_dir.join("4242.json").exists());

    // A journal file others may read/write, or owned by another user: left alone.
    for (name, mode, owner) in [
        ("group-writable", 0o660, None),
        ("nobody", 0o600, Some(65534)),
    ] {
        let d = t.path().join(name);
        plant(&d, 0o700, mode, owner, &body);
        recover(&d);
        assert_eq!(v.sigblk(), before, "{name} journal was acted on");
        assert!(d.join("4242.json").exists(), "{name} journal was removed");
    }

    // Positive control: root's own journal in root's own directory is acted on.
    let ok = t.path().join("ok");
    plant(&ok, 0o700, 0o600, None, &body);
    let err = recover(&ok);
    assert_eq!(
        v.sigblk(),
        "0000000000000001",
        "a trusted journal was not acted on: {err}"
    );
    assert!(!ok.join("4242.json").exists());
}
