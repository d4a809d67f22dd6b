//! Conformance, files (issue 13, item 3): file locks of every kind with their owners, owners and
//! signals of descriptions, status flags on every kind, fd tables shared by processes, `O_PATH`
//! descriptors. Each workload verifies its own state after the round trips.

mod common;

conformance_tests!(locks, "locks", &[]);

// ---------------------------------------------------------------------------------------------
// A real SQLite writer (the motivating case of item 3): its EXCLUSIVE transaction holds POSIX
// locks on the database file; after a restore another process must still be refused.

use common::{checkpoint, checkpoint_kill, image_dir, restore, serial, Workload};
use std::path::{Path, PathBuf};
use std::process::Command;

fn python3() -> PathBuf {
    let p = Path::new("/usr/bin/python3");
    assert!(
        p.is_file(),
        "python3 not found (Debian: apt-get install python3)"
    );
    p.to_path_buf()
}

fn start_sqlite_writer(wal: bool) -> Workload {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/sqlite_writer.py");
    Workload::start_program(
        "sqlite_writer",
        &python3(),
        &[
            std::ffi::OsStr::new("-u"),
            std::ffi::OsStr::new("-I"),
            script.as_os_str(),
        ],
        if wal { &["wal"] } else { &[] },
        None,
        None,
    )
}

/// Another process (python3's sqlite3 module, no busy timeout) tries to write and to read the
/// database: both must fail with "database is locked" while the writer holds EXCLUSIVE. In WAL
/// mode readers go on: the read must see the 100 committed rows, and only the write is refused.
fn assert_refused(w: &Workload, when: &str, wal: bool) {
    let db = std::fs::canonicalize(w.ctl.path())
        .unwrap()
        .join("db.sqlite");
    let code = "import sqlite3,sys\n\
        c=sqlite3.connect(sys.argv[1],timeout=0,isolation_level=None)\n\
        for q in ('BEGIN IMMEDIATE','SELECT count(*) FROM t'):\n\
        \x20   try:\n\
        \x20       print('GRANTED', q, c.execute(q).fetchall())\n\
        \x20   except sqlite3.OperationalError as e: print('REFUSED', q, e)\n";
    // (run_cmd: the harness's reaper must not take the command's exit status)
    let out = common::run_cmd(Command::new(python3()).args(["-I", "-c", code]).arg(&db));
    let text = String::from_utf8_lossy(&out.stdout);
    let refused = |l: &str| l.contains("REFUSED") && l.contains("locked");
    let lines: Vec<&str> = text.lines().collect();
    let ok = match (wal, lines.as_slice()) {
        (false, [a, b]) => refused(a) && refused(b),
        (true, [a, b]) => refused(a) && b.contains("GRANTED") && b.contains("[(100,)]"),
        _ => false,
    };
    assert!(
        ok,
        "sqlite {when}: another process must be refused the database{}, got:\n{text}{}",
        if wal { " for writing (WAL)" } else { "" },
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rows committed, as the sqlite3 CLI (if installed) or python3 reads them after the writer ended.
fn committed_rows(w: &Workload) -> String {
    let db = std::fs::canonicalize(w.ctl.path())
        .unwrap()
        .join("db.sqlite");
    let out = if Path::new("/usr/bin/sqlite3").is_file() {
        common::run_cmd(
            Command::new("/usr/bin/sqlite3")
                .arg(&db)
                .arg("SELECT count(*) FROM t"),
        )
    } else {
        let code = "import sqlite3,sys\n\
            print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM t').fetchone()[0])";
        common::run_cmd(Command::new(python3()).args(["-I", "-c", code]).arg(&db))
    };
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn sqlite_roundtrip(double: bool, leave_running: bool, wal: bool) {
    let _g = serial();
    let mut w = start_sqlite_writer(wal);
    let assert_refused = |w: &Workload, when: &str| assert_refused(w, when, wal);
    assert_refused(&w, "before checkpoint");
    let img = image_dir("sqlite");
    let dir = img.path().join("img");
    if leave_running {
        let out = checkpoint(w.pid, &dir, &["--leave-running"]);
        assert!(
            out.status.success(),
            "checkpoint --leave-running: {}",
            common::show_output(&out)
        );
        assert_refused(&w, "after checkpoint --leave-running");
        checkpoint_kill(&w, &img.path().join("img2"));
    } else {
        checkpoint_kill(&w, &dir);
    }
    let (pid, _) = restore(&dir);
    w.set_pid(pid);
    assert_refused(&w, "after restore");
    if double {
        let dir2 = img.path().join("img3");
        checkpoint_kill(&w, &dir2);
        let (pid, _) = restore(&dir2);
        w.set_pid(pid);
        assert_refused(&w, "after the second restore");
    }
    if let Err(e) = w.verify() {
        panic!("sqlite writer: verification failed:\n{e}");
    }
    // The writer closes its connection as it exits (in WAL mode a last checkpoint, under lock).
    let left = common::wait_gone(&[w.pid], std::time::Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "the sqlite writer did not exit after verifying"
    );
    assert_eq!(
        committed_rows(&w),
        "150",
        "rows committed after the restored writer's COMMIT"
    );
}

#[test]
fn sqlite_writer_kill() {
    sqlite_roundtrip(false, false, false);
}

#[test]
fn sqlite_writer_leave_running() {
    sqlite_roundtrip(false, true, false);
}

#[test]
fn sqlite_writer_double() {
    sqlite_roundtrip(true, false, false);
}

#[test]
fn sqlite_writer_wal_kill() {
    sqlite_roundtrip(false, false, true);
}

#[test]
fn sqlite_writer_wal_double() {
    sqlite_roundtrip(true, false, true);
}

conformance_tests!(status_flags, "status_flags", &[]);

conformance_tests!(opath, "opath", &[]);

conformance_tests!(shared_fdtable, "shared_fdtable", &[]);

conformance_tests!(shared_fdtable_sibling, "shared_fdtable", &["sibling"]);

// ---------------------------------------------------------------------------------------------
// A lock that another process holds when the image is restored: the restore must fail naming
// the file and the lock (never a restore without it), leave nothing running, and the holder
// keeps its locks.

#[test]
fn restore_refused_while_another_process_holds_the_lock() {
    use common::partition::{image, Ctl, Parts, T_RESTORE};
    let _g = serial();
    let parts = Parts::new("hf-locks");
    let ctl = Ctl::new("locks");
    let bin = common::workload_bin("locks");
    let bin = bin.to_string_lossy().into_owned();
    let res = (|| -> Result<(), String> {
        parts.run("hf-locks", &[], &[&bin, &ctl.arg()])?;
        ctl.wait_ready(&parts, "hf-locks")?;
        let (_t, img) = image("hf-locks");
        let out = parts.checkpoint("hf-locks", &img, &["--leave-running"]);
        if !out.ok() {
            return Err(format!("checkpoint --leave-running: {}", out.show()));
        }
        // The copy opens the same files in CTL_DIR: the original still holds their locks.
        parts.track("hf-locks2");
        let d = img.to_string_lossy().into_owned();
        let out = parts.exec(&["restore", "--dir", &d, "--name", "hf-locks2"], T_RESTORE);
        if out.ok() {
            return Err(format!(
                "the restore beside the lock holder succeeded: {}",
                out.show()
            ));
        }
        let ok_msg = out.stderr.contains(&ctl.arg())
            && out.stderr.contains("lock again")
            && out
                .stderr
                .contains("another process holds a conflicting lock");
        if !ok_msg {
            return Err(format!(
                "the error must name the file, the lock and why: {}",
                out.show()
            ));
        }
        eprintln!("refused as expected: {}", out.stderr.trim());
        if parts.running_pid("hf-locks2").is_some() {
            return Err("the failed restore left hf-locks2 running".into());
        }
        ctl.verify(&parts, "hf-locks")
    })();
    let _ = parts.rm_f("hf-locks2");
    let _ = parts.rm_f("hf-locks");
    if let Err(e) = res {
        panic!("locks held elsewhere at restore: {e}");
    }
}
