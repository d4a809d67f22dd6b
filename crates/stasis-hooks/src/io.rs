//! Socket plumbing shared by both sides: long socket paths and bounded line I/O.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::protocol::MAX_LINE;

/// `sun_path` holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

/// Run `f` with a path naming the same socket that fits in `sun_path`.
///
/// A path too long for `sun_path` (typical for `/proc/<pid>/root/...`) is
/// reached through `/proc/self/fd/<dirfd>/<name>`, where `dirfd` is an open
/// descriptor of the parent directory; the kernel resolves it like the original.
pub(crate) fn with_short_path<T>(
    path: &Path,
    f: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return f(path);
    }
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "socket path has no file name")
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = File::open(parent)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    if short.as_os_str().len() > SUN_PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket file name too long for sun_path",
        ));
    }
    let result = f(&short);
    drop(dir);
    result
}

/// Why reading a line failed.
#[derive(Debug)]
pub(crate) enum LineError {
    TimedOut,
    Eof { partial: usize },
    TooLong,
    NotUtf8,
    Io(io::Error),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TimedOut => f.write_str("timed out"),
            LineError::Eof { partial } => write!(f, "connection closed after {partial} bytes"),
            LineError::TooLong => write!(f, "line longer than {MAX_LINE} bytes"),
            LineError::NotUtf8 => f.write_str("line is not UTF-8"),
            LineError::Io(e) => write!(f, "{e}"),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Read one `\n`-terminated line (returned without the `\n`) before `deadline`.
/// Bytes after the newline are ignored: a connection carries one line each way.
pub(crate) fn read_line(stream: &mut UnixStream, deadline: Instant) -> Result<String, LineError> {
    let mut line = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(LineError::TimedOut);
        }
        stream
            .set_read_timeout(Some(deadline - now))
            .map_err(LineError::Io)?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(LineError::Eof {
                    partial: line.len(),
                })
            }
            Ok(n) => {
                let (data, done) = match chunk[..n].iter().position(|&b| b == b'\n') {
                    Some(pos) => (&chunk[..pos], true),
                    None => (&chunk[..n], false),
                };
                if line.len() + data.len() >= MAX_LINE {
                    return Err(LineError::TooLong);
                }
                line.extend_from_slice(data);
                if done {
                    return String::from_utf8(line).map_err(|_| LineError::NotUtf8);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(LineError::Io(e)),
        }
    }
}

/// Write `line` plus `\n` before `deadline`. `Ok(false)` means the deadline passed.
pub(crate) fn write_line(
    stream: &mut UnixStream,
    line: &str,
    deadline: Instant,
) -> io::Result<bool> {
    let now = Instant::now();
    if now >= deadline {
        return Ok(false);
    }
    stream.set_write_timeout(Some(deadline - now))?;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    match stream.write_all(&buf) {
        Ok(()) => Ok(true),
        Err(e) if is_timeout(&e) => Ok(false),
        Err(e) => Err(e),
    }
}
