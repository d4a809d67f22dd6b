//! The agent's log file, rotated by size: `agent.log` grows to a limit, then becomes
//! `agent.log.1` (`.1` becomes `.2`, …, the oldest kept is dropped) and a new `agent.log`
//! starts. Every file is opened and renamed relative to the log directory's descriptor, never
//! following a link, mode 0600 whatever the umask.

use stasis_image::safefs::{Dir, PRIVATE_FILE};
use std::fs::File;
use std::io::{self, Write};
use std::sync::Mutex;

/// Default size at which `agent.log` is rotated (10 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;
/// Default number of rotated files kept (`agent.log.1` … `agent.log.3`).
pub const DEFAULT_KEEP: usize = 3;

struct Current {
    file: File,
    len: u64,
}

/// A size-rotated log file. `&RotatingLog` is [`Write`]: wrap it in an `Arc` to hand it to
/// `tracing_subscriber` as a writer. Each `write` call lands whole in one file (the fmt layer
/// writes one event per call), so a line is never split across a rotation.
pub struct RotatingLog {
    dir: Dir,
    name: String,
    max_bytes: u64,
    keep: usize,
    current: Mutex<Current>,
}

impl RotatingLog {
    /// Opens (creating if missing) `name` in `dir` for appending; rotated once it would
    /// grow past `max_bytes`, keeping `keep` older files.
    pub fn open(dir: Dir, name: &str, max_bytes: u64, keep: usize) -> io::Result<RotatingLog> {
        let file = dir.open_append(name, PRIVATE_FILE)?;
        let len = file.metadata()?.len();
        Ok(RotatingLog {
            dir,
            name: name.to_string(),
            max_bytes: max_bytes.max(1),
            keep,
            current: Mutex::new(Current { file, len }),
        })
    }

    fn rotated(&self, n: usize) -> String {
        format!("{}.{n}", self.name)
    }

    /// Shifts the rotated files by one and starts a new file.
    fn rotate(&self, cur: &mut Current) -> io::Result<()> {
        if self.keep == 0 {
            self.dir.remove_file(&self.name).or_else(not_found_ok)?;
        } else {
            for n in (1..self.keep).rev() {
                self.dir
                    .rename(self.rotated(n), self.rotated(n + 1))
                    .or_else(not_found_ok)?;
            }
            self.dir.rename(&self.name, self.rotated(1))?;
        }
        cur.file = self.dir.open_append(&self.name, PRIVATE_FILE)?;
        cur.len = 0;
        Ok(())
    }
}

fn not_found_ok(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl Write for &RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.len > 0 && cur.len + buf.len() as u64 > self.max_bytes {
            // A failed rotation keeps writing to the current file: losing log lines is worse.
            if let Err(e) = self.rotate(&mut cur) {
                eprintln!("stasis: cannot rotate {}: {e}", self.name);
            }
        }
        cur.file.write_all(buf)?;
        cur.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = || Dir::open(tmp.path()).unwrap();
        let log = RotatingLog::open(dir(), "agent.log", 1000, 3).unwrap();
        let line = |i: usize| format!("line {i:05} {}\n", "x".repeat(88)); // 100 bytes
        for i in 0..55 {
            (&log).write_all(line(i).as_bytes()).unwrap();
        }
        drop(log);
        let read = |n: &str| std::fs::read_to_string(tmp.path().join(n)).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["agent.log", "agent.log.1", "agent.log.2", "agent.log.3"]
        );
        for n in &names {
            let m = std::fs::metadata(tmp.path().join(n)).unwrap();
            assert!(m.len() <= 1000, "{n}: {} bytes", m.len());
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{n}");
        }
        // Oldest to newest, the kept lines are the last ones written, in order, none split.
        let all = [
            read("agent.log.3"),
            read("agent.log.2"),
            read("agent.log.1"),
            read("agent.log"),
        ]
        .concat();
        let expected: String = (20..55).map(line).collect();
        assert_eq!(all, expected);

        // Reopened: appends to the current file, and rotates on from where it was.
        let log = RotatingLog::open(dir(), "agent.log", 1000, 3).unwrap();
        for i in 55..61 {
            (&log).write_all(line(i).as_bytes()).unwrap();
        }
        assert_eq!(read("agent.log"), line(60));
        assert!(read("agent.log.1").ends_with(&line(59)));
        assert!(read("agent.log.3").starts_with(&line(30)));
    }

    #[test]
    fn a_link_planted_as_a_rotated_name_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let logs = tmp.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::os::unix::fs::symlink(&target, logs.join("agent.log.1")).unwrap();
        let log = RotatingLog::open(Dir::open(&logs).unwrap(), "agent.log", 10, 1).unwrap();
        (&log).write_all(b"0123456789").unwrap();
        (&log).write_all(b"abc").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert_eq!(
            std::fs::read(logs.join("agent.log.1")).unwrap(),
            b"0123456789"
        );
        assert_eq!(std::fs::read(logs.join("agent.log")).unwrap(), b"abc");
    }
}
