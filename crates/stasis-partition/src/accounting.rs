//! Accounting history.
//!
//! The cgroup's counters start at zero with every incarnation (a restore creates a new cgroup),
//! so the record carries what earlier incarnations used ([`crate::state::Record::carried`]) and
//! every figure shown is `carried + cgroup` for cumulative counters (cpu, io, OOM kills), the
//! larger of the two for the memory peak, and the cgroup's alone for gauges (memory, pids).
//! The monitor appends a [`Sample`] of those totals to `stats.jsonl` every few seconds; a
//! checkpoint stores the history and the totals in the image, so they follow the partition
//! through restore and migration.

use crate::cgroup::Usage;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Samples kept in the history file (older ones are dropped when it grows past twice this).
pub const KEEP_SAMPLES: usize = 5000;

/// One accounting sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time in milliseconds.
    pub t_ms: u64,
    /// Totals at that time.
    #[serde(flatten)]
    pub usage: Usage,
}

impl Sample {
    /// A sample taken now.
    pub fn now(usage: Usage) -> Sample {
        let t_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Sample { t_ms, usage }
    }
}

/// Totals: `carried` from earlier incarnations plus the cgroup's current counters.
pub fn total(carried: &Usage, cur: &Usage) -> Usage {
    Usage {
        cpu_ns: carried.cpu_ns + cur.cpu_ns,
        memory_bytes: cur.memory_bytes,
        memory_peak_bytes: carried.memory_peak_bytes.max(cur.memory_peak_bytes),
        io_read_bytes: carried.io_read_bytes + cur.io_read_bytes,
        io_write_bytes: carried.io_write_bytes + cur.io_write_bytes,
        pids: cur.pids,
        oom_kills: carried.oom_kills + cur.oom_kills,
    }
}

/// Append a sample to a history file (and trim it when it has grown too long).
pub fn append(path: &Path, s: &Sample) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(s).expect("sample serializes");
    line.push(b'\n');
    let (dir, name) = parent_dir(path)?;
    let mut f = dir.open_append(name, stasis_image::safefs::PRIVATE_FILE)?;
    f.write_all(&line)?;
    if f.metadata()?.len() > (KEEP_SAMPLES as u64) * 2 * 256 {
        let all = read(path);
        if all.len() > KEEP_SAMPLES * 2 {
            write_all(path, &all[all.len() - KEEP_SAMPLES..])?;
        }
    }
    Ok(())
}

/// Read a history file; unreadable lines are skipped (a crash may leave half a line).
pub fn read(path: &Path) -> Vec<Sample> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    parse(&text)
}

/// Parse history text (JSON lines).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The opened directory of `path` and its file name (the file is then opened relative to the
/// directory, never through a link).
fn parent_dir(path: &Path) -> std::io::Result<(stasis_image::safefs::Dir, &std::ffi::OsStr)> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path");
    let name = path.file_name().ok_or_else(bad)?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = stasis_image::safefs::Dir::open(parent.unwrap_or(Path::new(".")))?;
    Ok((dir, name))
}

/// Replace a history file atomically (mode 0600).
pub fn write_all(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let mut body = Vec::new();
    for s in samples {
        body.extend(serde_json::to_vec(s).expect("sample serializes"));
        body.push(b'\n');
    }
    let (dir, name) = parent_dir(path)?;
    dir.write_atomic(name, &body, stasis_image::safefs::PRIVATE_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn u(cpu: u64, mem: u64, peak: u64) -> Usage {
        Usage {
            cpu_ns: cpu,
            memory_bytes: mem,
            memory_peak_bytes: peak,
            io_read_bytes: cpu / 2,
            io_write_bytes: cpu / 3,
            pids: 3,
            oom_kills: 1,
        }
    }

    #[test]
    fn totals_add_counters_and_keep_gauges() {
        let t = total(&u(100, 50, 900), &u(10, 7, 20));
        assert_eq!(t.cpu_ns, 110);
        assert_eq!(t.memory_bytes, 7);
        assert_eq!(t.memory_peak_bytes, 900);
        assert_eq!(t.oom_kills, 2);
        assert_eq!(t.pids, 3);
    }

    #[test]
    fn history_roundtrip_skips_torn_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("stats.jsonl");
        append(&p, &Sample::now(u(1, 2, 3))).unwrap();
        append(&p, &Sample::now(u(4, 5, 6))).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"t_ms\": 1, \"cpu")
            .unwrap();
        let h = read(&p);
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].usage.cpu_ns, 4);
    }

    proptest! {
        #[test]
        fn total_is_monotonic_in_carried(a in 0u64..1<<40, b in 0u64..1<<40, c in 0u64..1<<40) {
            let t = total(&u(a, 0, a), &u(b, 0, c));
            prop_assert!(t.cpu_ns >= a && t.cpu_ns >= b);
            prop_assert!(t.memory_peak_bytes >= a.max(c));
        }
    }
}
