//! Workload and supervisor sides over real unix sockets.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use stasis_hooks::{notify, notify_with_id, Event, Hooks, HooksError, NotifyError};
use tempfile::TempDir;

const T: Duration = Duration::from_secs(5);

fn sock(dir: &TempDir) -> PathBuf {
    dir.path().join("hooks.sock")
}

/// A served `Hooks` whose handler records events and fails when `fail` says so.
fn served(
    fail: impl Fn(Event) -> Option<String> + Send + 'static,
) -> (TempDir, Hooks, Arc<Mutex<Vec<Event>>>) {
    let dir = TempDir::new().unwrap();
    let hooks = Hooks::bind(sock(&dir)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = Arc::clone(&seen);
    hooks
        .serve(move |ev| {
            rec.lock().unwrap().push(ev);
            fail(ev).map_or(Ok(()), Err)
        })
        .unwrap();
    (dir, hooks, seen)
}

/// Send a raw line, return everything the workload wrote before closing.
fn raw_exchange(path: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn pre_checkpoint_is_handled_and_acknowledged() {
    let (dir, hooks, seen) = served(|_| None);
    notify(&sock(&dir), Event::PreCheckpoint, T).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![Event::PreCheckpoint]);
    assert_eq!(hooks.checkpoint_count(), 1);
    assert_eq!(hooks.restore_count(), 0);
    assert!(!hooks.was_restored());
}

#[test]
fn post_restore_increments_restore_count() {
    let (dir, hooks, seen) = served(|_| None);
    assert!(!hooks.was_restored());
    notify(&sock(&dir), Event::PostRestore, T).unwrap();
    assert_eq!(hooks.restore_count(), 1);
    assert!(hooks.was_restored());
    notify(&sock(&dir), Event::PostRestore, T).unwrap();
    assert_eq!(hooks.restore_count(), 2);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn handler_error_gives_refused_with_reason() {
    let (dir, hooks, _) = served(|ev| Some(format!("cannot flush\nbefore {ev}")));
    match notify(&sock(&dir), Event::PreCheckpoint, T) {
        Err(NotifyError::Refused(reason)) => {
            assert_eq!(reason, "cannot flush before PRE-CHECKPOINT")
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    // A refused POST-RESTORE is not counted as handled.
    assert!(matches!(
        notify(&sock(&dir), Event::PostRestore, T),
        Err(NotifyError::Refused(_))
    ));
    assert_eq!(hooks.restore_count(), 0);
    assert_eq!(hooks.checkpoint_count(), 0);
}

#[test]
fn panicking_handler_gives_refused_and_keeps_serving() {
    let dir = TempDir::new().unwrap();
    let hooks = Hooks::bind(sock(&dir)).unwrap();
    hooks
        .serve(|ev| match ev {
            Event::PreCheckpoint => panic!("boom"),
            Event::PostRestore => Ok(()),
        })
        .unwrap();
    match notify(&sock(&dir), Event::PreCheckpoint, T) {
        Err(NotifyError::Refused(r)) => assert!(r.contains("panicked"), "{r}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    notify(&sock(&dir), Event::PostRestore, T).unwrap();
    assert_eq!(hooks.restore_count(), 1);
}

fn assert_timeout_in(result: Result<(), NotifyError>, started: Instant, timeout: Duration) {
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(NotifyError::Timeout { after }) if after == timeout),
        "expected Timeout, got {result:?}"
    );
    assert!(elapsed >= timeout, "returned early: {elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_millis(500),
        "returned late: {elapsed:?}"
    );
}

#[test]
fn silent_workload_times_out() {
    let dir = TempDir::new().unwrap();
    let listener = UnixListener::bind(sock(&dir)).unwrap();
    let silent = thread::spawn(move || {
        // Accept, never answer; return once the supervisor hangs up.
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    });
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = notify_with_id(&sock(&dir), Event::PreCheckpoint, 77, timeout);
    assert_timeout_in(result, started, timeout);
    assert_eq!(silent.join().unwrap(), "STASIS/1 PRE-CHECKPOINT 77\n");
}

#[test]
fn listener_that_never_accepts_times_out() {
    let dir = TempDir::new().unwrap();
    let _listener = UnixListener::bind(sock(&dir)).unwrap();
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let result = notify(&sock(&dir), Event::PostRestore, timeout);
    assert_timeout_in(result, started, timeout);
}

#[test]
fn slow_handler_times_out_then_next_event_succeeds() {
    let (dir, _hooks, seen) = served(|ev| {
        if ev == Event::PreCheckpoint {
            thread::sleep(Duration::from_millis(600));
        }
        None
    });
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    assert_timeout_in(
        notify(&sock(&dir), Event::PreCheckpoint, timeout),
        started,
        timeout,
    );
    // The workload finishes the slow event (its reply is lost) and serves on.
    notify(&sock(&dir), Event::PostRestore, T).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Event::PreCheckpoint, Event::PostRestore]
    );
}

#[test]
fn missing_socket_is_unreachable() {
    let dir = TempDir::new().unwrap();
    match notify(&sock(&dir), Event::PreCheckpoint, T) {
        Err(NotifyError::Unreachable { path, source }) => {
            assert_eq!(path, sock(&dir));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn stale_socket_is_unreachable_and_rebindable() {
    let dir = TempDir::new().unwrap();
    drop(UnixListener::bind(sock(&dir)).unwrap()); // leaves the socket file
    assert!(sock(&dir).exists());
    match notify(&sock(&dir), Event::PreCheckpoint, T) {
        Err(NotifyError::Unreachable { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // Hooks::bind removes the stale file and listens again.
    let hooks = Hooks::bind(sock(&dir)).unwrap();
    hooks.serve(|_| Ok(())).unwrap();
    notify(&sock(&dir), Event::PreCheckpoint, T).unwrap();
}

#[test]
fn bind_never_removes_a_regular_file() {
    let dir = TempDir::new().unwrap();
    std::fs::write(sock(&dir), b"precious").unwrap();
    assert!(matches!(
        Hooks::bind(sock(&dir)),
        Err(HooksError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read(sock(&dir)).unwrap(), b"precious");
}

#[test]
fn serve_twice_is_an_error() {
    let (_dir, hooks, _) = served(|_| None);
    assert!(matches!(
        hooks.serve(|_| Ok(())),
        Err(HooksError::AlreadyServing)
    ));
}

/// A fake workload answering the first connection with `reply` (raw bytes).
fn fake_workload(dir: &TempDir, reply: &'static str) -> thread::JoinHandle<()> {
    let listener = UnixListener::bind(sock(dir)).unwrap();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 128];
        let _ = s.read(&mut buf).unwrap();
        s.write_all(reply.as_bytes()).unwrap();
    })
}

#[test]
fn malformed_replies_are_protocol_errors() {
    for (reply, expect) in [
        ("HELLO\n", "malformed reply"),
        ("OK 2\n", "does not match"),
        ("OK 1", "closed"),
        ("", "closed"),
        ("OK \u{ff}1\n", "malformed"),
    ] {
        let dir = TempDir::new().unwrap();
        let fake = fake_workload(&dir, reply);
        match notify_with_id(&sock(&dir), Event::PreCheckpoint, 1, T) {
            Err(NotifyError::Protocol(msg)) => {
                assert!(msg.contains(expect), "reply {reply:?}: {msg}")
            }
            other => panic!("reply {reply:?}: expected Protocol, got {other:?}"),
        }
        fake.join().unwrap();
    }
}

#[test]
fn raw_protocol_edges() {
    let (dir, _hooks, seen) = served(|_| None);
    let p = sock(&dir);
    assert_eq!(
        raw_exchange(&p, "STASIS/1 PRE-CHECKPOINT 12\r\n"),
        "OK 12\n"
    );
    // Unknown event under v1: acknowledged without calling the handler.
    assert_eq!(raw_exchange(&p, "STASIS/1 PRE-MIGRATE 5\n"), "OK 5\n");
    assert_eq!(
        raw_exchange(&p, "STASIS/2 PRE-CHECKPOINT 6\n"),
        "FAIL 6 unsupported protocol version 2\n"
    );
    // Unparseable: closed without a reply.
    assert_eq!(raw_exchange(&p, "hello there\n"), "");
    assert_eq!(raw_exchange(&p, "STASIS/1 POST-RESTORE abc\n"), "");
    assert_eq!(*seen.lock().unwrap(), vec![Event::PreCheckpoint]);
    // Still serving.
    notify(&p, Event::PostRestore, T).unwrap();
}

#[test]
fn many_sequential_events() {
    let (dir, hooks, _) = served(|_| None);
    for i in 0..50 {
        let ev = if i % 2 == 0 {
            Event::PreCheckpoint
        } else {
            Event::PostRestore
        };
        notify(&sock(&dir), ev, T).unwrap();
    }
    assert_eq!(hooks.checkpoint_count(), 25);
    assert_eq!(hooks.restore_count(), 25);
}

#[test]
fn paths_longer_than_sun_path_work() {
    let dir = TempDir::new().unwrap();
    let mut deep = dir.path().to_path_buf();
    for _ in 0..6 {
        deep.push("a-rather-long-directory-name");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let path = deep.join("hooks.sock");
    assert!(path.as_os_str().len() > 108);
    let hooks = Hooks::bind(&path).unwrap();
    hooks.serve(|_| Ok(())).unwrap();
    assert!(path.exists(), "socket created at the long path");
    notify(&path, Event::PostRestore, T).unwrap();
    assert_eq!(hooks.restore_count(), 1);
}

#[test]
fn supervisor_reaches_socket_through_proc_pid_root() {
    let (dir, hooks, _) = served(|_| None);
    let via_proc = PathBuf::from(format!("/proc/{}/root", std::process::id()))
        .join(sock(&dir).strip_prefix("/").unwrap());
    notify(&via_proc, Event::PostRestore, T).unwrap();
    assert_eq!(hooks.restore_count(), 1);
}
