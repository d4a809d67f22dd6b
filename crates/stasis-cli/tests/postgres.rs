//! PostgreSQL 15 (Debian's `postgresql` package) as a partition: a multi-process server —
//! `runuser`, the postmaster, checkpointer, background writer, walwriter, autovacuum launcher,
//! logical replication launcher and client backends — with System V and POSIX shared memory
//! (`/dev/shm`, the partition's own tmpfs), latches, a TCP listener on 127.0.0.1 and a unix
//! socket listener.
//!
//! The test makes a cluster with `initdb` in a temporary directory owned by `postgres`, starts
//! the server with `stasis run`, writes rows over TCP and over the unix socket, and keeps one
//! `psql` session open over TCP in the middle of a transaction (with a temporary table). With
//! `pgbench` running two more clients, it checkpoints the whole partition (the server must be
//! gone: processes, TCP port and unix socket) and restores it; pgbench must finish without a
//! failed transaction and with consistent balances, the held session finishes its
//! transaction, and new clients (TCP and unix socket) see every row, can write, and can run a
//! parallel query (background workers forked by the restored postmaster, dynamic shared
//! memory in /dev/shm).
//! The restored partition is checkpointed and restored a second time, then checkpointed with
//! `--leave-running` (that image is not restored: the data directory, which no image holds,
//! moves on without it). Last, `stasis stop` shuts the restored server down cleanly.
//!
//! A `psql` session over the unix socket cannot be held across a checkpoint: its server end
//! would be connected to a socket outside the partition, which checkpoint refuses (the
//! partition keeps running); the test checks that refusal too. Before each checkpoint the
//! test waits for the backends of its finished one-shot clients to be reaped (see
//! [`Pg::settle`]), so that each image holds exactly the backends the test expects.
//!
//! PostgreSQL missing is a failure, not a skip: `scripts/ensure-deps.sh` installs it.
#![cfg(target_os = "linux")]
#![allow(unsafe_code)]
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::{image_dir, run_cmd, serial, show_output, tree_pids, wait_gone};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PSQL: &str = "/usr/bin/psql";
/// How long a query (or the server's start) may take.
const PG_TIMEOUT: Duration = Duration::from_secs(30);
/// pgbench clients, and how long they run (the checkpoint comes a moment after they start).
const BENCH_CLIENTS: u32 = 2;
const BENCH_SECONDS: u32 = 3;

fn require(path: &Path) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: PostgreSQL 15 is required (Debian: apt-get install postgresql, or run \
         scripts/ensure-deps.sh)",
        path.display()
    );
    path.to_path_buf()
}

fn pg_bin(name: &str) -> PathBuf {
    require(&Path::new(PG_BIN).join(name))
}

/// uid and gid of the `postgres` user (the package creates it).
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = run_cmd(Command::new("id").args([flag, "postgres"]));
        assert!(
            out.status.success(),
            "no postgres user (the postgresql package creates it)\n{}",
            show_output(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// nftables tables of network locks (`stasis_*`).
fn lock_tables() -> std::collections::BTreeSet<String> {
    let out = run_cmd(Command::new("nft").args(["list", "tables"]));
    assert!(
        out.status.success(),
        "nft list tables\n{}",
        show_output(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .filter(|t| t.starts_with("stasis_"))
        .collect()
}

/// A `stasis --root ROOT ARGS...` command. Only stdio reaches it (and so the partition's
/// monitor and processes it starts): not whatever else the test runner inherited.
fn stasis(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(common::stasis());
    c.arg("--root").arg(root).args(args);
    // SAFETY: close_range(2) only, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    c
}

/// The one line a successful `stasis run` / `stasis restore` prints: a host pid.
fn pid_from(out: &Output, what: &str) -> i32 {
    assert!(out.status.success(), "{what} failed\n{}", show_output(out));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{what}: stdout is not a pid\n{}", show_output(out)))
}

/// A cluster in a temporary directory and the partition running its server. Dropping it
/// removes the partition (killing it if it runs) and then the directories, even when the test
/// fails (set STASIS_KEEP to keep the directories).
struct Pg {
    name: String,
    port: u16,
    root: PathBuf,
    sock: PathBuf,
    host_pid: i32,
    // Dropped after `drop` has removed the partition.
    _dir: tempfile::TempDir,
}

impl Pg {
    /// initdb, then `stasis run` the server; waits until it answers.
    fn start() -> Pg {
        let initdb = pg_bin("initdb");
        let postgres = pg_bin("postgres");
        require(Path::new(PSQL));
        let (uid, gid) = postgres_ids();
        let mut dir = tempfile::Builder::new()
            .prefix("stasis-pg-")
            .tempdir()
            .expect("tempdir");
        if std::env::var_os("STASIS_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let base = std::fs::canonicalize(dir.path()).expect("canonicalize");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let data = base.join("data");
        let sock = base.join("sock");
        let root = base.join("stasis-root");
        for (d, mode) in [(&data, 0o700), (&sock, 0o755)] {
            std::fs::create_dir(d).expect("mkdir");
            std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown to postgres");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let out = run_cmd(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&initdb)
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-N",
                    "-D",
                ])
                .arg(&data),
        );
        assert!(out.status.success(), "initdb failed\n{}", show_output(&out));

        let name = format!("pgtest-{}", std::process::id());
        let port = common::free_port();
        let (data_s, sock_s, base_s) = (
            data.to_str().expect("utf-8 path").to_string(),
            sock.to_str().expect("utf-8 path").to_string(),
            base.to_str().expect("utf-8 path").to_string(),
        );
        let port_s = port.to_string();
        let out = run_cmd(&mut stasis(
            &root,
            &[
                "run",
                "--name",
                &name,
                "--cwd",
                &base_s,
                "--",
                "runuser",
                "-u",
                "postgres",
                "--",
                postgres.to_str().expect("utf-8 path"),
                "-D",
                &data_s,
                "-k",
                &sock_s,
                "-p",
                &port_s,
                "-c",
                "listen_addresses=127.0.0.1",
            ],
        ));
        let mut pg = Pg {
            name,
            port,
            root,
            sock,
            host_pid: 0,
            _dir: dir,
        };
        pg.host_pid = pid_from(&out, "stasis run");
        pg.wait_up();
        pg
    }

    fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.root.join("partitions").join(&self.name).join(file))
            .unwrap_or_else(|e| format!("<{file}: {e}>"))
    }

    /// The partition's output and monitor logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- output.log ---\n{}\n--- monitor.log ---\n{}",
            self.log("output.log"),
            self.log("monitor.log")
        )
    }

    /// Wait until a new TCP client gets an answer.
    fn wait_up(&self) {
        let start = Instant::now();
        loop {
            let out = self.psql_tcp_raw("select 1");
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" {
                return;
            }
            assert!(
                start.elapsed() < PG_TIMEOUT,
                "the server does not answer on 127.0.0.1:{}\n{}\n{}",
                self.port,
                show_output(&out),
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn psql_args(&self, host: &Path) -> Command {
        let mut c = Command::new(PSQL);
        c.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-d",
        ])
        .arg("postgres")
        .arg("-h")
        .arg(host)
        .args(["-p", &self.port.to_string()]);
        c
    }

    /// A client program (psql, pgbench) with the connection options for TCP.
    fn tcp_client(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &self.port.to_string(),
        ]);
        c
    }

    fn psql_tcp_raw(&self, sql: &str) -> Output {
        run_cmd(self.psql_args(Path::new("127.0.0.1")).args(["-c", sql]))
    }

    fn run_psql(&self, host: &Path, sql: &str) -> String {
        let out = run_cmd(self.psql_args(host).args(["-c", sql]));
        assert!(
            out.status.success(),
            "psql -h {} -c {sql:?} failed\n{}\n{}",
            host.display(),
            show_output(&out),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new client over TCP (127.0.0.1) runs `sql`; its output, trimmed.
    fn tcp(&self, sql: &str) -> String {
        self.run_psql(Path::new("127.0.0.1"), sql)
    }

    /// A new client over the unix socket runs `sql`; its output, trimmed.
    fn unix(&self, sql: &str) -> String {
        let sock = self.sock.clone();
        self.run_psql(&sock, sql)
    }

    fn count(&self) -> i64 {
        self.tcp("select count(*) from items")
            .parse()
            .expect("count is a number")
    }

    /// The partition's host processes (the first one and its descendants).
    fn pids(&self) -> Vec<i32> {
        tree_pids(self.host_pid)
    }

    /// Wait until the partition holds exactly `clients` client backends, no short-lived worker
    /// (autovacuum, parallel query) and no zombie.
    ///
    /// A zombie is checkpointed and restored as a zombie, but a backend exits a moment after its
    /// client disconnects, so without this wait an image taken right after a one-shot `psql`
    /// would hold that backend alive, a zombie, or neither — and the counts the test checks
    /// after the restore would vary from run to run.
    fn settle(&self, clients: usize) {
        let start = Instant::now();
        loop {
            let mut zombies = 0;
            let mut backends = 0;
            let mut workers = 0;
            for p in self.pids() {
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                let state = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].trim_start().chars().next());
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                if state == Some('Z') {
                    zombies += 1;
                } else if cmd.starts_with("postgres: postgres postgres ") {
                    backends += 1;
                } else if cmd.contains("autovacuum worker") || cmd.contains("parallel worker") {
                    workers += 1;
                }
            }
            if zombies == 0 && backends == clients && workers == 0 {
                return;
            }
            assert!(
                start.elapsed() < common::GONE_TIMEOUT,
                "the partition does not settle: {zombies} zombie(s), {backends} client \
                 backend(s) (expected {clients}), {workers} worker(s)"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Checkpoint the partition once it has settled with `clients` client connections.
    fn checkpoint(&self, dir: &Path, extra: &[&str], clients: usize) -> Output {
        self.settle(clients);
        let mut args = vec!["checkpoint", "--name", self.name.as_str(), "--dir"];
        let d = dir.to_str().expect("utf-8 path");
        args.push(d);
        args.extend_from_slice(extra);
        run_cmd(&mut stasis(&self.root, &args))
    }

    /// Checkpoint the whole partition (ending it) and check that the server is gone.
    fn checkpoint_kill(&self, dir: &Path, clients: usize) {
        self.settle(clients);
        let pids = self.pids();
        assert!(
            pids.len() >= 7 + clients,
            "expected runuser, the postmaster, 5 auxiliary processes and {clients} backend(s): \
             {pids:?}"
        );
        let t = Instant::now();
        let out = self.checkpoint(dir, &[], clients);
        assert!(
            out.status.success(),
            "checkpoint of partition {} failed after {:.2?}\n{}\n{}",
            self.name,
            t.elapsed(),
            show_output(&out),
            self.logs()
        );
        let left = wait_gone(&pids, common::GONE_TIMEOUT);
        assert!(left.is_empty(), "still there after checkpoint: {left:?}");
        let tcp = std::net::TcpStream::connect(("127.0.0.1", self.port));
        assert!(
            tcp.is_err(),
            "port {} still accepts after checkpoint",
            self.port
        );
        let unix = std::os::unix::net::UnixStream::connect(
            self.sock.join(format!(".s.PGSQL.{}", self.port)),
        );
        assert!(
            unix.is_err(),
            "the unix socket still accepts after checkpoint"
        );
        // The record says so once the monitor has seen the partition end (`stasis ps` may
        // show it `exited` for a moment before).
        let start = Instant::now();
        loop {
            let st = run_cmd(&mut stasis(&self.root, &["ps"]));
            if String::from_utf8_lossy(&st.stdout).contains("checkpointed") {
                break;
            }
            assert!(
                start.elapsed() < common::GONE_TIMEOUT,
                "stasis ps after checkpoint\n{}",
                show_output(&st)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restore the partition from `dir`; the server answers new clients again.
    fn restore(&mut self, dir: &Path) {
        let d = dir.to_str().expect("utf-8 path");
        let out = run_cmd(&mut stasis(&self.root, &["restore", "--dir", d]));
        if !out.status.success() {
            panic!(
                "restore of partition {} from {d} failed\n{}\n{}",
                self.name,
                show_output(&out),
                self.logs()
            );
        }
        self.host_pid = pid_from(&out, "stasis restore");
        self.wait_up();
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("STASIS_KEEP").is_some() {
            eprintln!("partition {}:\n{}", self.name, self.logs());
        }
        let out = run_cmd(&mut stasis(&self.root, &["rm", "-f", &self.name]));
        if !out.status.success() {
            eprintln!("cleanup: stasis rm -f {}\n{}", self.name, show_output(&out));
        }
    }
}

/// One `psql` process kept open: statements go to its stdin, and each batch ends with an
/// `\echo` of a marker so its output can be told apart.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    seq: u32,
}

impl Session {
    fn open(mut cmd: Command) -> Session {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let e2 = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut err, &mut buf) {
                if n == 0 {
                    return;
                }
                e2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Session {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            seq: 0,
        }
    }

    /// Run `sql` (one or more statements) in the session; its output lines.
    fn query(&mut self, sql: &str) -> Vec<String> {
        self.seq += 1;
        let marker = format!("--done {}--", self.seq);
        let stdin = self.stdin.as_mut().expect("session open");
        let end = if sql.trim_end().ends_with(';') {
            ""
        } else {
            ";"
        };
        writeln!(stdin, "{sql}{end}\n\\echo {marker}").expect("write to psql");
        stdin.flush().expect("flush");
        let deadline = Instant::now() + PG_TIMEOUT;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == marker => return out,
                Ok(l) => out.push(l),
                Err(e) => panic!(
                    "held psql session: no answer to {sql:?} ({e}); output so far {out:?}; \
                     exited: {:?}; stderr: {}",
                    self.child.try_wait(),
                    String::from_utf8_lossy(&self.stderr.lock().unwrap())
                ),
            }
        }
    }

    /// Like [`query`](Self::query), for a single value.
    fn value(&mut self, sql: &str) -> String {
        let out = self.query(sql);
        assert_eq!(out.len(), 1, "{sql:?} gave {out:?}");
        out[0].clone()
    }

    /// End of input: psql disconnects and exits; panics unless it exits 0 without errors.
    fn close(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + PG_TIMEOUT;
        let st = loop {
            if let Some(st) = self.child.try_wait().expect("wait for psql") {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "psql does not exit at end of input"
            );
            thread::sleep(Duration::from_millis(10));
        };
        let err = String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
        assert!(
            st.success() && err.is_empty(),
            "psql session: {st}; stderr: {err}"
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn postgres_partition_keeps_its_data_and_its_client() {
    let _g = serial();
    let locks_before = lock_tables();
    let t0 = Instant::now();
    let mut pg = Pg::start();
    eprintln!("server up after {:.2?}", t0.elapsed());

    // Data over both transports.
    pg.tcp(
        "create table items(id int primary key, note text); \
         insert into items select g, 'row ' || g from generate_series(1, 1000) g",
    );
    pg.unix("insert into items values (1001, 'over the unix socket')");
    assert_eq!(pg.count(), 1001);

    // A session over TCP, held across everything below: a temporary table, a session setting
    // and a transaction left open with 100 uncommitted rows.
    let mut s = Session::open(pg.psql_args(Path::new("127.0.0.1")));
    let backend = s.value("select pg_backend_pid()");
    s.query(
        "create temp table scratch as select 42 as answer; \
         set application_name = 'held-session'; \
         begin; \
         insert into items select g, 'uncommitted ' || g from generate_series(2001, 2100) g;",
    );
    assert_eq!(s.value("select count(*) from items"), "1101");
    assert_eq!(
        pg.count(),
        1001,
        "other clients must not see the open transaction"
    );

    // A session over the unix socket cannot cross a checkpoint (its server end is connected to
    // a socket outside the partition): refused, and the partition runs on.
    {
        let mut u = Session::open(pg.psql_args(&pg.sock));
        assert_eq!(u.value("select 7"), "7");
        let img = image_dir("pg-refused");
        let out = pg.checkpoint(&img.path().join("img"), &[], 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(3),
            "expected a refusal\n{}",
            show_output(&out)
        );
        assert!(
            err.contains("unix socket outside the tree"),
            "refusal message: {err}"
        );
        assert_eq!(
            u.value("select 8"),
            "8",
            "the refused checkpoint broke the session"
        );
        u.close();
    }
    assert_eq!(s.value("select count(*) from items"), "1101");

    // Load: pgbench (TPC-B-like transactions) with two clients over TCP, running while the
    // partition is checkpointed and restored.
    let pgbench = pg_bin("pgbench");
    let out = run_cmd(
        pg.tcp_client(&pgbench)
            .args(["-i", "-q", "-s", "1", "postgres"]),
    );
    assert!(out.status.success(), "pgbench -i\n{}", show_output(&out));
    let bench = common::Background::spawn(pg.tcp_client(&pgbench).args([
        "-n",
        "-c",
        &BENCH_CLIENTS.to_string(),
        "-j",
        "2",
        "-T",
        &BENCH_SECONDS.to_string(),
        "postgres",
    ]));
    let start = Instant::now();
    while pg
        .tcp("select count(*) from pgbench_history")
        .parse::<u64>()
        .unwrap()
        < 200
    {
        assert!(start.elapsed() < PG_TIMEOUT, "pgbench does not get going");
        thread::sleep(Duration::from_millis(10));
    }

    // Round trip 1: checkpoint (kill), restore.
    let img1 = image_dir("pg");
    let t = Instant::now();
    pg.checkpoint_kill(&img1.path().join("img"), 1 + BENCH_CLIENTS as usize);
    // (It cannot end while the server is down: its clients wait for their transactions.)
    assert!(
        common::pid_alive(bench.pid()),
        "pgbench ended before the checkpoint"
    );
    pg.restore(&img1.path().join("img"));
    eprintln!(
        "first round trip (checkpoint, restore, answering) in {:.2?}",
        t.elapsed()
    );
    assert_eq!(
        lock_tables(),
        locks_before,
        "a network lock table was left behind"
    );

    // pgbench finishes every transaction without an error, and they all left their mark.
    let (out, in_time) = bench.wait(Duration::from_secs(120));
    let text = String::from_utf8_lossy(&out.stdout);
    let processed = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(
        in_time
            && out.status.success()
            && processed.is_some()
            && text.contains("number of failed transactions: 0 "),
        "pgbench across the round trip (finished in time: {in_time})\n{}\n{}",
        show_output(&out),
        pg.logs()
    );
    assert_eq!(
        pg.tcp("select count(*) from pgbench_history"),
        processed.unwrap().to_string(),
        "pgbench's committed transactions and its history table disagree"
    );
    let sums = pg.unix(
        "select (select sum(abalance) from pgbench_accounts), \
                (select sum(bbalance) from pgbench_branches), \
                (select sum(tbalance) from pgbench_tellers), \
                (select sum(delta) from pgbench_history)",
    );
    let sums: Vec<&str> = sums.split('|').collect();
    assert!(
        sums.len() == 4 && sums.iter().all(|v| *v == sums[0]),
        "balances and history disagree: {sums:?}"
    );

    // The held session carries on where it was.
    assert_eq!(s.value("select pg_backend_pid()"), backend);
    assert_eq!(
        s.value("select current_setting('application_name')"),
        "held-session"
    );
    assert_eq!(s.value("select count(*) from items"), "1101");
    assert_eq!(pg.count(), 1001, "the open transaction is still open");
    s.query("commit");
    assert_eq!(s.value("select answer from scratch"), "42");
    assert_eq!(pg.count(), 1101);

    // New clients over both transports read and write.
    pg.unix("insert into items select g, 'after restore' from generate_series(3001, 3010) g");
    pg.tcp("update items set note = 'updated' where id <= 10");
    assert_eq!(
        pg.unix("select count(*) from items where note = 'updated'"),
        "10"
    );
    assert_eq!(pg.count(), 1111);
    assert_eq!(
        pg.unix("select count(*), sum(id) from items"),
        format!(
            "1111|{}",
            500_500 + 1001 + (2001..=2100).sum::<i64>() + (3001..=3010).sum::<i64>()
        )
    );
    // A parallel query: the restored postmaster forks background workers, which attach to
    // dynamic shared memory in /dev/shm.
    let plan = pg.tcp(
        "set max_parallel_workers_per_gather = 2; set parallel_setup_cost = 0; \
         set parallel_tuple_cost = 0; set min_parallel_table_scan_size = 0; \
         explain (analyze, costs off, timing off) select count(*) from items",
    );
    let launched = plan
        .lines()
        .find_map(|l| l.trim().strip_prefix("Workers Launched: "))
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        matches!(launched, Some(n) if n >= 1),
        "no parallel worker launched after restore:\n{plan}"
    );
    pg.tcp("checkpoint");
    pg.tcp("vacuum analyze items");

    // Round trip 2: the restored partition, checkpointed and restored again.
    s.query("begin; insert into items values (4001, 'second transaction');");
    let img2 = image_dir("pg");
    pg.checkpoint_kill(&img2.path().join("img"), 1);
    pg.restore(&img2.path().join("img"));
    assert_eq!(
        lock_tables(),
        locks_before,
        "a network lock table was left behind"
    );
    assert_eq!(s.value("select pg_backend_pid()"), backend);
    s.query("commit");
    assert_eq!(pg.count(), 1112);
    assert_eq!(
        pg.unix("select note from items where id = 4001"),
        "second transaction"
    );

    // --leave-running: the server and the held session carry on.
    let img3 = image_dir("pg");
    let out = pg.checkpoint(&img3.path().join("img"), &["--leave-running"], 1);
    assert!(
        out.status.success(),
        "checkpoint --leave-running failed\n{}\n{}",
        show_output(&out),
        pg.logs()
    );
    assert_eq!(
        lock_tables(),
        locks_before,
        "a network lock table was left behind"
    );
    s.query("insert into items values (5001, 'after leave-running')");
    assert_eq!(s.value("select count(*) from items"), "1113");
    assert_eq!(pg.unix("select count(*) from items"), "1113");
    s.close();

    // A clean shutdown of the restored server: SIGTERM to runuser, which passes it on to the
    // postmaster (smart shutdown: a final checkpoint, then exit).
    let out = run_cmd(&mut stasis(&pg.root, &["stop", &pg.name]));
    assert!(
        out.status.success(),
        "stasis stop\n{}\n{}",
        show_output(&out),
        pg.logs()
    );
    assert!(
        pg.log("output.log")
            .contains("database system is shut down"),
        "no clean shutdown\n{}",
        pg.logs()
    );
    eprintln!("whole test in {:.2?}", t0.elapsed());
}
