//! Image trust and safe image writing, end to end with the real `stasis` binary: a forged image
//! (credentials changed, re-hashed as an attacker would) and an image with files another user
//! can write are refused before any process exists; `stasis image trust` and trusted keys
//! accept images of another root; `--insecure-unsigned` restores an unsigned image and says
//! what it risks; planted symlinks make a checkpoint fail and touch nothing; `--force` leaves
//! other tools' files alone and replaces links, never following them.
#![cfg(target_os = "linux")]

mod common;

use common::{
    checkpoint_cmd, pid_alive, run_cmd, serial, tree_pids, wait_gone, watch_pid, workload_bin,
    Workload, GONE_TIMEOUT,
};
use prost::Message;
use stasis_image::records as rec;
use stasis_image::{ImageReader, Manifest, MANIFEST_FILE, OBJECTS_FILE};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_millis(200);
const TEST_USER: &str = "stasis-trust-t";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    )
}

/// `stasis --root ROOT ARGS...`.
fn at(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(common::stasis());
    c.arg("--root").arg(root).args(args);
    c
}

/// `stasis --root ROOT checkpoint --pid PID --dir DIR EXTRA...` (tree registered with the
/// reaper first).
fn checkpoint_at(root: &Path, pid: i32, dir: &Path, extra: &[&str]) -> Output {
    for p in tree_pids(pid) {
        watch_pid(p);
    }
    let c = checkpoint_cmd(pid, dir, extra);
    let mut full = at(root, &[]);
    full.args(c.get_args());
    run_cmd(&mut full)
}

/// `stasis --root ROOT restore --dir DIR EXTRA...`; on success the restored root's pid.
fn restore_at(root: &Path, dir: &Path, extra: &[&str]) -> (Option<i32>, Output) {
    let mut c = at(root, &["restore", "--dir"]);
    c.arg(dir).args(extra);
    let out = run_cmd(&mut c);
    let pid = out
        .status
        .success()
        .then(|| {
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<i32>()
                .ok()
        })
        .flatten();
    if let Some(p) = pid {
        watch_pid(p);
    }
    (pid, out)
}

fn kill_tree(pid: i32) {
    let pids = tree_pids(pid);
    for &p in &pids {
        let _ = stasis_sys::sys::kill(p, libc::SIGKILL);
    }
    assert!(wait_gone(&pids, GONE_TIMEOUT).is_empty());
}

/// Checkpoint (ending the tree) a counter under `root` into `dir`; returns its pid.
fn counter_image(root: &Path, dir: &Path) -> i32 {
    let w = Workload::start("counter", &[]);
    thread::sleep(SETTLE);
    let pid = w.pid;
    let out = checkpoint_at(root, pid, dir, &[]);
    assert!(out.status.success(), "checkpoint\n{}", show(&out));
    assert!(wait_gone(&[pid], GONE_TIMEOUT).is_empty());
    std::mem::forget(w); // the restored tree keeps using its control dir
    pid
}

/// A non-root user for the test (created once).
fn test_user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").arg(flag).arg(TEST_USER).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let o = Command::new("useradd")
            .args(["-M", "-r", "-s", "/usr/sbin/nologin", TEST_USER])
            .output()
            .expect("run useradd");
        assert!(
            o.status.success() || id("-u").is_some(),
            "useradd {TEST_USER}: {}",
            stderr(&o)
        );
    }
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

/// Reframe a payload as a framed file of `kind` (what an attacker with write access does).
fn frame(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(56 + payload.len());
    v.extend_from_slice(b"STASISIM");
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&kind.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    v.extend_from_slice(blake3::hash(payload).as_bytes());
    v.extend_from_slice(payload);
    v
}

/// No process with this pid, nor any process running the image's command as root.
fn assert_nothing_restored(pid: i32, what: &str) {
    thread::sleep(Duration::from_millis(100));
    assert!(
        !pid_alive(pid),
        "{what}: a process with the image's pid {pid} exists"
    );
}

#[test]
fn a_forged_image_is_refused_and_creates_nothing() {
    let _g = serial();
    let (uid, gid) = test_user();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    // The counter runs as the test user, in a control directory it owns.
    let ctl = t.path().join("ctl");
    fs::create_dir(&ctl).unwrap();
    std::os::unix::fs::chown(&ctl, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = workload_bin("counter");
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
        "--",
    ])
    .arg(&bin)
    .arg(&ctl)
    .current_dir(&ctl)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: setsid() is async-signal-safe; nothing else runs in the child.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn setpriv counter");
    let pid = child.id() as i32;
    watch_pid(pid);
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctl.join("ready").exists() {
        assert!(
            Instant::now() < deadline,
            "counter as {TEST_USER} never became ready"
        );
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(SETTLE);
    let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        st.lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&uid.to_string())),
        "the workload runs as {uid}"
    );
    let dir = t.path().join("img");
    let out = checkpoint_at(&root, pid, &dir, &[]);
    assert!(out.status.success(), "checkpoint\n{}", show(&out));
    assert!(wait_gone(&[pid], GONE_TIMEOUT).is_empty());

    // The attacker's rewrite: saved uids -> 0, objects.img re-framed, manifest re-hashed.
    let r = ImageReader::open(&dir).unwrap();
    let mut img = rec::Checkpoint::decode(r.read_file(OBJECTS_FILE).unwrap().as_slice()).unwrap();
    let creds = img.processes[0].creds.as_mut().unwrap();
    assert!(creds.uids.contains(&uid), "saved uids {:?}", creds.uids);
    creds.uids = vec![0; creds.uids.len()];
    creds.gids = vec![0; creds.gids.len()];
    let payload = img.encode_to_vec();
    let mut m = r.manifest().clone();
    drop(r);
    fs::write(dir.join(OBJECTS_FILE), frame(2, &payload)).unwrap();
    let e = m.files.iter_mut().find(|f| f.name == OBJECTS_FILE).unwrap();
    e.length = payload.len() as u64;
    e.blake3 = blake3::hash(&payload).as_bytes().to_vec();
    fs::write(dir.join(MANIFEST_FILE), frame(1, &m.encode_to_vec())).unwrap();
    // Integrity alone no longer tells: the image verifies.
    ImageReader::open(&dir).unwrap().verify_all().unwrap();
    let _: Manifest = m;

    let (p, out) = restore_at(&root, &dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "forged image restored\n{}",
        show(&out)
    );
    assert!(p.is_none());
    let err = stderr(&out);
    assert!(err.contains("signature mismatch"), "{err}");
    assert!(err.contains("stasis image trust"), "says what to do: {err}");
    assert_nothing_restored(pid, "forged image");
    // `inspect` shows it without refusing.
    let o = run_cmd(&mut {
        let mut c = at(&root, &["inspect", "--dir"]);
        c.arg(&dir);
        c
    });
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("does not match"),
        "{}",
        show(&o)
    );
    // So does `image verify` (exit 4).
    let o = run_cmd(&mut {
        let mut c = at(&root, &["image", "verify"]);
        c.arg(&dir);
        c
    });
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
}

#[test]
fn files_another_user_can_write_are_refused() {
    let _g = serial();
    let (uid, _) = test_user();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let dir = t.path().join("img");
    let pid = counter_image(&root, &dir);

    let objects = dir.join(OBJECTS_FILE);
    std::os::unix::fs::chown(&objects, Some(uid), None).unwrap();
    let (_, out) = restore_at(&root, &dir, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains(&objects.display().to_string()), "{err}");
    assert!(err.contains(&format!("owned by uid {uid}")), "{err}");
    assert!(err.contains("chown -R root:"), "says what to do: {err}");
    assert_nothing_restored(pid, "foreign owner");
    // Even --insecure-unsigned does not take files another user owns.
    let (_, out) = restore_at(&root, &dir, &["--insecure-unsigned"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert_nothing_restored(pid, "foreign owner, insecure");
    std::os::unix::fs::chown(&objects, Some(0), None).unwrap();

    // A group-writable chunk.
    let sub = fs::read_dir(dir.join("chunks"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let chunk = fs::read_dir(&sub).unwrap().next().unwrap().unwrap().path();
    fs::set_permissions(&chunk, fs::Permissions::from_mode(0o660)).unwrap();
    let (_, out) = restore_at(&root, &dir, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains(&chunk.display().to_string()), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
    assert_nothing_restored(pid, "group-writable chunk");

    // Fixed: it restores.
    fs::set_permissions(&chunk, fs::Permissions::from_mode(0o600)).unwrap();
    let (p, out) = restore_at(&root, &dir, &[]);
    let p = p.unwrap_or_else(|| panic!("restore after the fix\n{}", show(&out)));
    kill_tree(p);
}

#[test]
fn image_trust_and_trusted_keys_accept_another_roots_images() {
    let _g = serial();
    let t = tempfile::tempdir().unwrap();
    let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
    let dir = t.path().join("img");
    let pid = counter_image(&a, &dir);
    let dir2 = t.path().join("img2");
    common::copy_tree(&dir, &dir2);

    // Under root b: signed by an unknown key.
    let (_, out) = restore_at(&b, &dir, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(stderr(&out).contains("unknown key"), "{}", show(&out));
    assert_nothing_restored(pid, "unknown key");
    // `image trust` re-signs it with b's key; then it restores under b.
    let o = run_cmd(&mut {
        let mut cmd = at(&b, &["image", "trust"]);
        cmd.arg(&dir);
        cmd
    });
    assert!(o.status.success(), "image trust\n{}", show(&o));
    let (p, out) = restore_at(&b, &dir, &[]);
    let p = p.unwrap_or_else(|| panic!("restore after image trust\n{}", show(&out)));
    kill_tree(p);

    // Root c trusts a's key: a's images restore there as they are.
    fs::create_dir_all(c.join("keys/trusted")).unwrap();
    fs::copy(a.join("keys/host.key"), c.join("keys/trusted/a.key")).unwrap();
    fs::set_permissions(
        c.join("keys/trusted/a.key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let (p, out) = restore_at(&c, &dir2, &[]);
    let p = p.unwrap_or_else(|| panic!("restore with a trusted key\n{}", show(&out)));
    kill_tree(p);
}

#[test]
fn insecure_unsigned_restores_and_says_what_it_risks() {
    let _g = serial();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let dir = t.path().join("img");
    let pid = counter_image(&root, &dir);
    fs::remove_file(dir.join(stasis_image::SIGNATURE_FILE)).unwrap();
    let (_, out) = restore_at(&root, &dir, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(stderr(&out).contains("not signed"), "{}", show(&out));
    assert!(
        stderr(&out).contains("--insecure-unsigned"),
        "{}",
        show(&out)
    );
    assert_nothing_restored(pid, "unsigned");
    let (p, out) = restore_at(&root, &dir, &["--insecure-unsigned"]);
    let p = p.unwrap_or_else(|| panic!("--insecure-unsigned\n{}", show(&out)));
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("an image is code"), "{err}");
    assert!(err.contains("saved credentials"), "{err}");
    kill_tree(p);
}

fn mtime_and_bytes(p: &Path) -> (i64, i64, Vec<u8>) {
    let m = fs::metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec(), fs::read(p).unwrap())
}

#[test]
fn planted_symlinks_fail_the_checkpoint_and_touch_nothing() {
    let _g = serial();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let victim = t.path().join("victim");
    fs::write(&victim, b"root-owned precious\n").unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"keep").unwrap();
    let before = mtime_and_bytes(&victim);
    let keep_before = mtime_and_bytes(&outside.join("keep"));
    let w = Workload::start("counter", &[]);
    thread::sleep(SETTLE);
    for (name, target, mode) in [
        (OBJECTS_FILE, &victim, &[][..]),
        ("chunks", &outside, &["--leave-running"][..]),
        ("manifest.img.tmp", &victim, &[][..]),
    ] {
        let dir = t.path().join(format!("img-{name}"));
        fs::create_dir(&dir).unwrap();
        symlink(target, dir.join(name)).unwrap();
        let out = checkpoint_at(&root, w.pid, &dir, mode);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", show(&out));
        assert!(stderr(&out).contains(name), "{name}: {}", show(&out));
        assert!(pid_alive(w.pid), "{name}: the tree must keep running");
        assert_eq!(mtime_and_bytes(&victim), before, "{name}: victim changed");
        assert_eq!(mtime_and_bytes(&outside.join("keep")), keep_before);
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            1,
            "{name}: outside changed"
        );
        assert!(fs::symlink_metadata(dir.join(name))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    w.verify().unwrap();
}

#[test]
fn force_keeps_other_tools_files_and_replaces_links_without_following_them() {
    let _g = serial();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let victim = t.path().join("victim");
    fs::write(&victim, b"root-owned precious\n").unwrap();
    let before = mtime_and_bytes(&victim);
    let dir = t.path().join("img");
    // An old image, then a runtime's files, then a planted link.
    let old_pid = counter_image(&root, &dir);
    let old_manifest = fs::read(dir.join(MANIFEST_FILE)).unwrap();
    fs::write(dir.join("descriptors.json"), b"[\"pipe:[1]\"]\n").unwrap();
    fs::write(dir.join("dump.log"), b"runtime log\n").unwrap();
    fs::remove_file(dir.join(OBJECTS_FILE)).unwrap();
    symlink(&victim, dir.join(OBJECTS_FILE)).unwrap();
    let others = |d: &Path| {
        (
            mtime_and_bytes(&d.join("descriptors.json")),
            mtime_and_bytes(&d.join("dump.log")),
        )
    };
    let others_before = others(&dir);
    assert!(!pid_alive(old_pid));

    let w = Workload::start("counter", &[]);
    thread::sleep(SETTLE);
    let out = checkpoint_at(&root, w.pid, &dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "without --force: {}",
        show(&out)
    );
    assert!(stderr(&out).contains("--force"), "{}", show(&out));
    let out = checkpoint_at(&root, w.pid, &dir, &["--force"]);
    assert!(out.status.success(), "--force\n{}", show(&out));
    assert_eq!(
        mtime_and_bytes(&victim),
        before,
        "the link's target changed"
    );
    assert_eq!(others(&dir), others_before, "other tools' files changed");
    assert!(!fs::symlink_metadata(dir.join(OBJECTS_FILE))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_ne!(fs::read(dir.join(MANIFEST_FILE)).unwrap(), old_manifest);
    let pid = w.pid;
    assert!(wait_gone(&[pid], GONE_TIMEOUT).is_empty());
    let (p, out) = restore_at(&root, &dir, &[]);
    let p = p.unwrap_or_else(|| panic!("restore of the replaced image\n{}", show(&out)));
    assert_eq!(p, pid);
    thread::sleep(SETTLE);
    w.verify().unwrap();
    kill_tree(p);
}
