//! Issue 14 item 4, end to end with real checkpoints: the images of a workload share its chunk
//! store (an idle workload's second image stores under 1 MiB), `stasis image gc` removes only
//! unreachable chunks and restore still works, `stasis image export | stasis image import`
//! round-trips and restores on another root, a corrupted or truncated archive is refused with a
//! clear error, and the quota stops a checkpoint (the tree runs on, the previous image stays).
#![cfg(target_os = "linux")]

mod common;

use common::{serial, tree_pids, wait_gone, watch_pid, Workload, GONE_TIMEOUT};
use stasis_agent::repo::{LocalRepo, Repository};
use stasis_image::store::ChunkStore;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::Duration;

const SETTLE: Duration = Duration::from_millis(300);
/// The workload: an idle service holding 48 MiB of incompressible data (`workloads/idle_mem.c`).
/// The engine stores memory in 1 MiB windows, so any page written in a window makes the whole
/// window a new chunk: a workload with incompressible data next to its stack (`mem_anon`) adds
/// ~1 MiB per image; an idle one whose changing pages sit among compressible ones adds little.
const WL: &str = "idle_mem";

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn at(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(common::stasis());
    c.arg("--root").arg(root).args(args);
    c
}

fn run(root: &Path, args: &[&str]) -> Output {
    common::run_cmd(&mut at(root, args))
}

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}\n{}", show(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: Output, what: &str) -> serde_json::Value {
    let s = ok(o, what);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {s}"))
}

/// An agent-like root: `ROOT/images` is the repository, as under `stasis agent`.
fn new_root(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("hs-{tag}-"))
        .tempdir()
        .expect("root")
}

fn repo(root: &Path) -> LocalRepo {
    LocalRepo::new(root.join("images")).expect("repo")
}

/// One consistency image of `pid` into the repository, as the agent takes it
/// (`--leave-running` into a pending directory, then committed). Returns its directory.
fn image(root: &Path, workload: &str, pid: i32) -> Result<PathBuf, Output> {
    let r = repo(root);
    let p = r.begin(workload).expect("begin");
    for t in tree_pids(pid) {
        watch_pid(t);
    }
    let mut c = at(root, &["checkpoint", "--leave-running", "--pid"]);
    c.arg(pid.to_string()).arg("--dir").arg(&p.dir);
    let out = common::run_cmd(&mut c);
    if !out.status.success() {
        r.abort(p).expect("abort");
        return Err(out);
    }
    Ok(r.commit(p).expect("commit").dir)
}

fn store_bytes(root: &Path, workload: &str) -> (u64, usize) {
    let s = ChunkStore::open(&root.join("images").join(workload).join("images"))
        .unwrap()
        .expect("a store");
    let (chunks, _) = s.scan().unwrap();
    (chunks.iter().map(|c| c.file_bytes).sum(), chunks.len())
}

fn restore_at(root: &Path, dir: &Path) -> i32 {
    let mut c = at(root, &["restore", "--dir"]);
    c.arg(dir);
    let out = common::run_cmd(&mut c);
    let s = ok(out, "restore");
    let pid: i32 = s.trim().parse().expect("pid");
    watch_pid(pid);
    for p in tree_pids(pid) {
        watch_pid(p);
    }
    pid
}

fn kill(w: &Workload) {
    let pids = w.tree_pids();
    w.kill_tree();
    assert!(wait_gone(&pids, GONE_TIMEOUT).is_empty());
}

#[test]
fn idle_workload_shares_chunks_gc_keeps_what_is_reachable() {
    let _g = serial();
    let root = new_root("idle");
    let root = root.path();
    let name = "hs-idle";
    let mut w = Workload::start(WL, &[]);
    thread::sleep(SETTLE);
    let first = image(root, name, w.pid).unwrap_or_else(|o| panic!("first image\n{}", show(&o)));
    let (b1, c1) = store_bytes(root, name);
    thread::sleep(SETTLE);
    let second = image(root, name, w.pid).unwrap_or_else(|o| panic!("second image\n{}", show(&o)));
    let (b2, c2) = store_bytes(root, name);
    let new = b2 - b1;
    eprintln!(
        "store after the first image: {b1} bytes in {c1} chunks; the second image added {new} \
         bytes in {} chunks",
        c2 - c1
    );
    assert!(
        b1 > 1 << 20,
        "the first image stores the workload's memory ({b1} bytes)"
    );
    assert!(
        new < 1 << 20,
        "an idle workload's second image stores {new} bytes, not < 1 MiB"
    );

    // `image ls`: both images, most of their store bytes shared.
    let v = json(
        run(root, &["image", "ls", "--workload", name, "--json"]),
        "image ls",
    );
    let wl = &v["workloads"][0];
    assert_eq!(wl["name"], name);
    assert_eq!(wl["images"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(wl["store_bytes"].as_u64().unwrap(), b2);
    let im2 = &wl["images"][1];
    let (sb, sh) = (
        im2["store_bytes"].as_u64().unwrap(),
        im2["shared_bytes"].as_u64().unwrap(),
    );
    assert!(
        sb > 0 && sb - sh < 1 << 20,
        "second image: store {sb}, shared {sh}"
    );
    let text = ok(run(root, &["image", "ls"]), "image ls");
    assert!(text.contains(name) && text.contains("shared"), "{text}");

    // The first image goes (as retention would, without its GC): its own chunks become
    // unreachable; `image gc --dry-run` counts them, `image gc` removes exactly them.
    fs::remove_dir_all(&first).unwrap();
    let dry = json(
        run(root, &["image", "gc", "--dry-run", "--json"]),
        "gc --dry-run",
    );
    let rep = &dry["stores"][0]["report"];
    let (removed, kept) = (
        rep["removed_chunks"].as_u64().unwrap(),
        rep["kept_chunks"].as_u64().unwrap(),
    );
    assert_eq!(store_bytes(root, name).1, c2, "dry run removes nothing");
    let done = json(run(root, &["image", "gc", "--json"]), "gc");
    assert_eq!(
        done["stores"][0]["report"]["removed_chunks"]
            .as_u64()
            .unwrap(),
        removed
    );
    let listed = stasis_image::ImageReader::open(&second)
        .unwrap()
        .manifest()
        .chunks
        .len() as u64;
    assert_eq!(
        kept, listed,
        "kept exactly the chunks of the remaining image"
    );
    assert_eq!(store_bytes(root, name).1 as u64, kept);
    eprintln!("gc removed {removed} unreachable chunks, kept {kept}");
    let v = ok(run(root, &["image", "verify", name]), "image verify NAME");
    assert!(v.contains("integrity: ok"), "{v}");

    // Restore from the remaining image works.
    kill(&w);
    w.reset_verify();
    let pid = restore_at(root, &second);
    w.set_pid(pid);
    w.verify().expect("restored from the shared store");
}

#[test]
fn export_import_round_trips_to_another_root_and_corruption_is_refused() {
    let _g = serial();
    let (ra, rb) = (new_root("exa"), new_root("exb"));
    let (ra, rb) = (ra.path(), rb.path());
    let name = "hs-exp";
    let mut w = Workload::start(WL, &[]);
    thread::sleep(SETTLE);
    image(ra, name, w.pid).unwrap_or_else(|o| panic!("image\n{}", show(&o)));

    // export NAME -o - | import - --dir, streamed through a pipe.
    let dst = rb.join("imported");
    let mut exp = common::spawn_owned(
        at(ra, &["image", "export", name, "-o", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut imp = at(rb, &["image", "import", "-", "--dir"]);
    imp.arg(&dst)
        .stdin(exp.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let io = common::spawn_owned(&mut imp).wait_with_output().unwrap();
    let eo = exp.wait_with_output().unwrap();
    let said = ok(io, "import");
    assert!(eo.status.success(), "export\n{}", show(&eo));
    assert!(said.contains("now signed by this host's key"), "{said}");
    eprintln!("{}{said}", String::from_utf8_lossy(&eo.stderr));
    // The imported image is standalone and root B's restore accepts it.
    let v = ok(
        run(rb, &["image", "verify", dst.to_str().unwrap()]),
        "verify",
    );
    assert!(v.contains("integrity: ok"), "{v}");
    kill(&w);
    w.reset_verify();
    let pid = restore_at(rb, &dst);
    w.set_pid(pid);
    w.verify()
        .expect("restored on another root from the imported image");

    // A corrupted archive (one byte flipped in the middle) and a truncated one: refused with
    // a clear error, exit 4, no panic, nothing left behind.
    let file = rb.join("a.stasis");
    ok(
        run(ra, &["image", "export", name, "-o", file.to_str().unwrap()]),
        "export to a file",
    );
    let good = fs::read(&file).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    fs::write(&file, &bad).unwrap();
    let dst2 = rb.join("bad");
    let o = run(
        rb,
        &[
            "image",
            "import",
            file.to_str().unwrap(),
            "--dir",
            dst2.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(
        err.contains("corrupt") && err.contains("export the image again"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dst2.exists(), "a refused import leaves nothing");
    eprintln!("corrupt archive: {}", err.trim());
    fs::write(&file, &good[..good.len() * 2 / 3]).unwrap();
    let o = run(
        rb,
        &[
            "image",
            "import",
            file.to_str().unwrap(),
            "--dir",
            dst2.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(
        err.contains("truncated") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!dst2.exists());
    eprintln!("truncated archive: {}", err.trim());
}

#[test]
fn quota_stops_a_checkpoint_and_keeps_the_previous_image() {
    let _g = serial();
    let root = new_root("quota");
    let root = root.path();
    let name = "hs-quota";
    let mut w = Workload::start(WL, &[]);
    thread::sleep(SETTLE);
    let first = image(root, name, w.pid).unwrap_or_else(|o| panic!("image\n{}", show(&o)));
    let q = json(run(root, &["image", "quota", name, "--json"]), "quota");
    let used = q["used_bytes"].as_u64().unwrap();
    assert!(q["quota_bytes"].is_null());
    // One byte of room: the next image cannot fit.
    ok(
        run(root, &["image", "quota", name, &(used + 1).to_string()]),
        "set quota",
    );
    let o = image(root, name, w.pid).expect_err("a checkpoint beyond the quota must fail");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("quota") && err.contains(name), "{}", show(&o));
    eprintln!("over quota: {}", err.trim());
    // (A workload ends once verified: it is verified after the restore below.)
    assert!(common::pid_alive(w.pid), "the tree runs on");
    // The previous image is intact and alone; the store holds nothing of the failed one.
    let r = repo(root);
    let list = r.list(name).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].dir, first);
    ok(
        run(root, &["image", "verify", name]),
        "verify the previous image",
    );
    let g = json(run(root, &["image", "gc", "--dry-run", "--json"]), "gc");
    assert_eq!(g["stores"][0]["report"]["removed_chunks"], 0, "{g}");
    assert_eq!(g["stores"][0]["report"]["removed_temps"], 0, "{g}");
    // Without the quota the next image is taken.
    ok(run(root, &["image", "quota", name, "none"]), "remove quota");
    image(root, name, w.pid).unwrap_or_else(|o| panic!("image\n{}", show(&o)));
    assert_eq!(r.list(name).unwrap().len(), 2);
    kill(&w);
    w.reset_verify();
    let pid = restore_at(root, &first);
    w.set_pid(pid);
    w.verify()
        .expect("restored from the image kept under the quota");
}

#[test]
fn cli_help_and_errors_say_what_to_do() {
    let root = new_root("help");
    let root = root.path();
    for verb in ["ls", "verify", "gc", "export", "import", "quota", "trust"] {
        let o = run(root, &["image", verb, "--help"]);
        assert!(
            o.status.success() && !o.stdout.is_empty(),
            "{verb} --help\n{}",
            show(&o)
        );
    }
    let o = run(root, &["image", "verify", "hs-nothing"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("stasis image ls"),
        "{}",
        show(&o)
    );
    let o = run(root, &["image", "ls"]);
    assert_eq!(o.status.code(), Some(7), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no image repository"));
}

/// A real agent: the consistency images of an idle partition workload share its store (the
/// second stores < 1 MiB), `image ls` lists them, and the workload comes back from its image
/// after a kill (restore reads the store through the partition layer's descriptor path).
#[test]
fn the_agents_images_of_an_idle_workload_share_the_store() {
    let _g = serial();
    let root = new_root("agent");
    let root = root.path();
    let name = "hs-agent";
    let ctl = root.join("ctl");
    fs::create_dir(&ctl).unwrap();
    let bin = common::workload_bin(WL);
    let mut agent = common::spawn_owned(
        at(root, &["agent", "--listen", "off", "--tick", "100ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    struct Stop<'a>(&'a Path, &'a mut std::process::Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = run(self.0, &["rm", "-f", "hs-agent"]);
            let _ = stasis_sys::sys::kill(self.1.id() as i32, libc::SIGTERM);
            let _ = self.1.wait();
        }
    }
    let _stop = Stop(root, &mut agent);
    stasis_agent::client::Client::new(stasis_agent::client::Endpoint::Unix(
        stasis_agent::daemon::AgentPaths::new(root).socket(),
    ))
    .wait_ready(Duration::from_secs(20))
    .expect("agent up");
    ok(
        run(
            root,
            &[
                "workload",
                "add",
                name,
                "--",
                bin.to_str().unwrap(),
                ctl.to_str().unwrap(),
            ],
        ),
        "workload add",
    );
    for _ in 0..200 {
        if ctl.join("ready").exists() {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(ctl.join("ready").exists(), "the workload became ready");
    ok(
        run(root, &["workload", "checkpoint", name, "--json"]),
        "first image",
    );
    let (b1, _) = store_bytes(root, name);
    thread::sleep(SETTLE);
    ok(
        run(root, &["workload", "checkpoint", name, "--json"]),
        "second image",
    );
    let (b2, _) = store_bytes(root, name);
    eprintln!(
        "agent: first image {b1} bytes in the store, the second added {} bytes",
        b2 - b1
    );
    assert!(b1 > 40 << 20, "the data is in the store ({b1})");
    assert!(
        b2 - b1 < 1 << 20,
        "the second image added {} bytes",
        b2 - b1
    );
    let v = json(
        run(root, &["image", "ls", "--workload", name, "--json"]),
        "image ls",
    );
    let imgs = v["workloads"][0]["images"].as_array().unwrap().clone();
    assert_eq!(imgs.len(), 2, "{v}");
    assert!(imgs[1]["shared_bytes"].as_u64().unwrap() > 40 << 20, "{v}");
    // Kill it: the agent restores it from its newest image (chunks from the store).
    let st = json(run(root, &["workload", "status", name, "--json"]), "status");
    let pid = st["pid"].as_i64().unwrap() as i32;
    stasis_sys::sys::kill(pid, libc::SIGKILL).unwrap();
    let mut back = serde_json::Value::Null;
    for _ in 0..300 {
        back = json(run(root, &["workload", "status", name, "--json"]), "status");
        if back["restarts"] == 1 && back["state"] == "running" {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(back["last_restart"], "image", "{back:#}");
    fs::write(ctl.join("verify"), b"1\n").unwrap();
    let mut result = String::new();
    for _ in 0..200 {
        if let Ok(r) = fs::read_to_string(ctl.join("result")) {
            result = r;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(result.trim(), "PASS", "restored workload verifies");
}
