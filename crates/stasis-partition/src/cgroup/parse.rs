//! Parsers of cgroup interface files. Pure functions: the error is a description of what was
//! wrong, which the caller turns into [`CgroupError::Parse`](super::CgroupError::Parse) with
//! the file's path.

/// Values at or above this in a v1 `*.limit_in_bytes` file mean "no limit": the kernel prints
/// its unlimited counter (`LONG_MAX` rounded down to a page, 9223372036854771712 on x86_64).
pub const V1_UNLIMITED: u64 = 0x7FFF_FFFF_0000_0000;

/// What was wrong in a cgroup interface file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl std::ops::Deref for ParseError {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for ParseError {
    fn from(s: String) -> Self {
        ParseError(s)
    }
}

/// Bytes read and written, summed over devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoBytes {
    /// Bytes read.
    pub read: u64,
    /// Bytes written.
    pub written: u64,
}

fn number(s: &str) -> Result<u64, ParseError> {
    s.parse()
        .map_err(|_| ParseError(format!("expected a number, found {s:?}")))
}

/// A v2 single value that is a number or `max` (`memory.max`, `pids.max`): `max` is `None`.
/// Also used for v1 `pids.max`, which has the same format.
pub fn parse_max(s: &str) -> Result<Option<u64>, ParseError> {
    match s.trim() {
        "max" => Ok(None),
        t => number(t).map(Some),
    }
}

/// A v1 limit in bytes (`memory.limit_in_bytes`): `-1` or the kernel's huge unlimited value is
/// `None`.
pub fn parse_v1_limit(s: &str) -> Result<Option<u64>, ParseError> {
    match s.trim() {
        "-1" => Ok(None),
        t => number(t).map(|v| (v < V1_UNLIMITED).then_some(v)),
    }
}

/// Quota and period (µs) as CPUs; a negative quota (v1's `-1`) is `None`.
pub fn cpus_from_quota(quota_us: i64, period_us: u64) -> Result<Option<f64>, ParseError> {
    if quota_us < 0 {
        return Ok(None);
    }
    if period_us == 0 {
        return Err(ParseError("cpu period is 0".to_owned()));
    }
    Ok(Some(quota_us as f64 / period_us as f64))
}

/// v2 `cpu.max`: `"QUOTA PERIOD"` or `"max PERIOD"` (`None`).
pub fn parse_cpu_max(s: &str) -> Result<Option<f64>, ParseError> {
    let mut it = s.split_whitespace();
    let (Some(quota), Some(period), None) = (it.next(), it.next(), it.next()) else {
        return Err(ParseError::from(format!(
            "expected \"QUOTA PERIOD\", found {:?}",
            s.trim()
        )));
    };
    let period = number(period)?;
    if quota == "max" {
        return Ok(None);
    }
    let quota =
        i64::try_from(number(quota)?).map_err(|_| ParseError("quota out of range".to_owned()))?;
    cpus_from_quota(quota, period)
}

/// A flat-keyed file, one `KEY VALUE` per line (`cpu.stat`, `memory.events`,
/// `memory.oom_control`, `memory.stat`). Empty lines are skipped.
pub fn parse_flat_keyed(text: &str) -> Result<Vec<(String, u64)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(k), Some(v), None) => {
                let v = number(v).map_err(|e| format!("line {}: {e}", i + 1))?;
                out.push((k.to_owned(), v));
            }
            _ => {
                return Err(ParseError::from(format!(
                    "line {}: expected \"KEY VALUE\", found {line:?}",
                    i + 1
                )))
            }
        }
    }
    Ok(out)
}

/// The value of `key` in a flat-keyed file, if present.
pub(crate) fn keyed(pairs: &[(String, u64)], key: &str) -> Option<u64> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// v2 `io.stat`: one line per device, `MAJ:MIN rbytes=N wbytes=N rios=N ...`. Sums `rbytes`
/// and `wbytes` over devices; other keys are ignored.
pub fn parse_io_stat(text: &str) -> Result<IoBytes, ParseError> {
    let mut io = IoBytes::default();
    for (i, line) in text.lines().enumerate() {
        let mut it = line.split_whitespace();
        let Some(dev) = it.next() else { continue };
        if !dev.contains(':') {
            return Err(ParseError::from(format!(
                "line {}: expected MAJ:MIN, found {dev:?}",
                i + 1
            )));
        }
        for kv in it {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("line {}: expected KEY=VALUE, found {kv:?}", i + 1))?;
            let v = number(v).map_err(|e| format!("line {}: {e}", i + 1))?;
            match k {
                "rbytes" => io.read = io.read.saturating_add(v),
                "wbytes" => io.written = io.written.saturating_add(v),
                _ => {}
            }
        }
    }
    Ok(io)
}

/// v1 `blkio.throttle.io_service_bytes[_recursive]`: lines `MAJ:MIN OP BYTES` with OP one of
/// `Read Write Sync Async Discard Total`, and a last `Total BYTES` line. Sums `Read` and
/// `Write` over devices.
pub fn parse_blkio_service_bytes(text: &str) -> Result<IoBytes, ParseError> {
    let mut io = IoBytes::default();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [] => {}
            ["Total", v] => {
                number(v).map_err(|e| format!("line {}: {e}", i + 1))?;
            }
            [dev, op, v] if dev.contains(':') => {
                let v = number(v).map_err(|e| format!("line {}: {e}", i + 1))?;
                match *op {
                    "Read" => io.read = io.read.saturating_add(v),
                    "Write" => io.written = io.written.saturating_add(v),
                    _ => {}
                }
            }
            _ => {
                return Err(ParseError::from(format!(
                    "line {}: expected \"MAJ:MIN OP BYTES\", found {line:?}",
                    i + 1
                )))
            }
        }
    }
    Ok(io)
}
