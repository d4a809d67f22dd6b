//! `stasis logs NAME [--follow]`: a partition's output (its stdout and stderr,
//! `ROOT/partitions/NAME/output.log`). An agent workload is a partition of the same name.

use crate::Failed;
use stasis_partition::state::{Root, StateError};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

/// How often `--follow` looks for more output.
const POLL: Duration = Duration::from_millis(200);

/// The partition's log; `None` while a partition that exists has written nothing yet (its
/// monitor creates the log as the first process starts).
fn open_log(root: &Root, name: &str) -> Result<Option<std::fs::File>, Failed> {
    let dir = root.open_dir(name).map_err(|e| match e {
        StateError::NotFound(_) => (
            7,
            anyhow::anyhow!("no partition or workload named '{name}'"),
        ),
        StateError::BadName(_) => (2, anyhow::Error::new(e)),
        e => (1, anyhow::Error::new(e)),
    })?;
    // Opened relative to the partition's directory, a link never followed.
    match dir.open_file("output.log") {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err((
            1,
            anyhow::Error::new(e).context(format!("opening {}", root.paths(name).log().display())),
        )),
    }
}

fn copy_out(f: &mut std::fs::File, out: &mut impl Write) -> std::io::Result<u64> {
    let n = std::io::copy(f, out)?;
    out.flush()?;
    Ok(n)
}

/// `stasis logs NAME [--follow]`.
pub fn run(root: &Root, name: &str, follow: bool) -> Result<(), Failed> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let io_err = |e: std::io::Error| (1, anyhow::Error::new(e).context("copying the log"));
    let mut f = open_log(root, name)?;
    if let Some(f) = f.as_mut() {
        copy_out(f, &mut out).map_err(io_err)?;
    }
    if !follow {
        return Ok(());
    }
    // Follow until interrupted or the partition is removed; a log that appears, is replaced (a
    // restore starts a new one) or is truncated is read (again) from its start.
    loop {
        crate::check_interrupt().map_err(|e| (130, e))?;
        std::thread::sleep(POLL);
        let now = match open_log(root, name) {
            Ok(now) => now,
            Err((7, _)) => return Ok(()),
            Err(e) => return Err(e),
        };
        match (f.as_mut(), now) {
            (Some(cur), Some(mut now)) => {
                copy_out(cur, &mut out).map_err(io_err)?;
                let pos = cur.stream_position().map_err(io_err)?;
                let (c, m) = (
                    cur.metadata().map_err(io_err)?,
                    now.metadata().map_err(io_err)?,
                );
                if (m.dev(), m.ino()) != (c.dev(), c.ino()) {
                    copy_out(&mut now, &mut out).map_err(io_err)?;
                    f = Some(now);
                } else if m.len() < pos {
                    cur.seek(SeekFrom::Start(0)).map_err(io_err)?;
                }
            }
            (None, Some(mut now)) => {
                copy_out(&mut now, &mut out).map_err(io_err)?;
                f = Some(now);
            }
            (Some(cur), None) => {
                copy_out(cur, &mut out).map_err(io_err)?;
            }
            (None, None) => {}
        }
    }
}
