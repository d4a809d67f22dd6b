//! The C SDK (`sdk/c/stasis_hooks.h`) through `sdk/c/example.c`, compiled with
//! `cc -pthread` and run as a real process. A missing compiler fails the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use stasis_hooks::{notify, notify_with_id, Event, NotifyError, ENV_SOCKET};
use tempfile::TempDir;

const T: Duration = Duration::from_secs(5);

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/c")
}

/// Compile the example once per test binary.
fn example_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("stasis-hooks-example-{}", std::process::id()));
        let sdk = sdk_dir();
        let result = Command::new("cc")
            .args(["-pthread", "-Wall", "-Wextra", "-Werror", "-O1", "-I"])
            .arg(&sdk)
            .arg("-o")
            .arg(&out)
            .arg(sdk.join("example.c"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run `cc` (a C compiler is required): {e}"));
        assert!(
            result.status.success(),
            "cc failed: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        out
    })
}

struct Example {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Example {
    /// Start the example; `socket` None leaves STASIS_HOOKS_SOCKET unset.
    fn start(socket: Option<&Path>, log: &Path) -> (Example, String) {
        let mut cmd = Command::new(example_binary());
        cmd.arg(log)
            .env_remove(ENV_SOCKET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(s) = socket {
            cmd.env(ENV_SOCKET, s);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        (Example { child, stdout }, first)
    }

    /// Close stdin; the example prints its restore count and exits 0.
    fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "example exited with {status}");
        rest
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raw_exchange(path: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn c_example_answers_both_events() {
    let dir = TempDir::new().unwrap();
    let socket = dir.path().join("app.sock");
    let log = dir.path().join("events.log");
    // A stale socket file from an earlier run must not stop the SDK.
    drop(UnixListener::bind(&socket).unwrap());

    let (example, first) = Example::start(Some(&socket), &log);
    assert_eq!(first, "hooks: on\n");

    notify(&socket, Event::PreCheckpoint, T).unwrap();
    notify(&socket, Event::PostRestore, T).unwrap();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "PRE-CHECKPOINT\nPOST-RESTORE\n"
    );

    // Protocol edges, spoken raw to the C implementation.
    assert_eq!(raw_exchange(&socket, "STASIS/1 PRE-MIGRATE 5\n"), "OK 5\n");
    assert_eq!(
        raw_exchange(&socket, "STASIS/2 PRE-CHECKPOINT 6\n"),
        "FAIL 6 unsupported protocol version\n"
    );
    assert_eq!(raw_exchange(&socket, "garbage\n"), "");
    assert_eq!(
        raw_exchange(&socket, "STASIS/1 PRE-CHECKPOINT 18446744073709551615\r\n"),
        "OK 18446744073709551615\n"
    );
    notify_with_id(&socket, Event::PostRestore, 0, T).unwrap();

    assert_eq!(example.finish(), "restores: 2\n");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "PRE-CHECKPOINT\nPOST-RESTORE\nPRE-CHECKPOINT\nPOST-RESTORE\n"
    );
}

#[test]
fn c_callback_failure_is_refused() {
    let dir = TempDir::new().unwrap();
    let socket = dir.path().join("app.sock");
    // The "log" is a directory: fopen fails, the callback returns 1.
    let (example, first) = Example::start(Some(&socket), dir.path());
    assert_eq!(first, "hooks: on\n");
    match notify(&socket, Event::PostRestore, T) {
        Err(NotifyError::Refused(reason)) => assert_eq!(reason, "callback returned 1"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(example.finish(), "restores: 0\n");
}

#[test]
fn c_example_without_variable_runs_with_hooks_off() {
    let dir = TempDir::new().unwrap();
    let log = dir.path().join("events.log");
    let (example, first) = Example::start(None, &log);
    assert_eq!(first, "hooks: off\n");
    assert_eq!(example.finish(), "restores: 0\n");
    assert!(!log.exists());
}

#[test]
fn c_sdk_refuses_to_replace_a_regular_file() {
    let dir = TempDir::new().unwrap();
    let socket = dir.path().join("app.sock");
    std::fs::write(&socket, b"keep").unwrap();
    let out = Command::new(example_binary())
        .arg(dir.path().join("events.log"))
        .env(ENV_SOCKET, &socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stasis_hooks_start"));
    assert_eq!(std::fs::read(&socket).unwrap(), b"keep");
}
