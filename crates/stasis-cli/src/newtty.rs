//! `stasis restore --new-tty SOCKET`: a tree whose terminal is outside it (started from a
//! shell: the master is not in the tree) gets a new pseudo-terminal instead of the caller's.
//!
//! Before the restore, a pty pair is made for every such terminal (`tty:[N]` keys, as
//! `stasis inspect` shows them) not given with `--inherit-fd`; the new slave takes the outside
//! terminal's place (a session leader of the tree whose controlling terminal it was takes the
//! new one). Once the tree runs, each master is sent to the unix socket listening at SOCKET
//! (one message per terminal, `SCM_RIGHTS`, text `tty:[N] /dev/pts/M\n`) and a note on stderr
//! says where it went. Whoever holds the master is the tree's terminal.

use anyhow::Context;
use stasis_engine::pty::NewTty;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// New terminals made for a restore, and the caller's socket for their masters.
pub struct Given {
    ttys: Vec<NewTty>,
    sock: UnixStream,
    path: String,
}

/// Make the new terminals of image `dir` (those not in `inherit`) and connect to `socket`.
pub fn prepare(
    dir: &Path,
    trust: &stasis_image::Trust,
    socket: &Path,
    inherit: &HashMap<String, i32>,
) -> anyhow::Result<Given> {
    let (_, img) = stasis_engine::restore::load_trusted(dir, trust)?;
    let sock = UnixStream::connect(socket).with_context(|| {
        format!(
            "--new-tty {}: connecting to the socket that receives the masters",
            socket.display()
        )
    })?;
    let ttys = stasis_engine::pty::new_terminals(&img)?
        .into_iter()
        .filter(|t| !inherit.contains_key(&t.key))
        .collect();
    Ok(Given {
        ttys,
        sock,
        path: socket.display().to_string(),
    })
}

impl Given {
    /// The new slaves, as `--inherit-fd` entries.
    pub fn inherit(&self, map: &mut HashMap<String, i32>) {
        for t in &self.ttys {
            map.insert(t.key.clone(), t.slave.as_raw_fd());
        }
    }

    /// Send every master to the caller's socket and say so on stderr.
    pub fn hand_over(self) -> anyhow::Result<()> {
        if self.ttys.is_empty() {
            eprintln!("stasis: note: --new-tty: the tree holds no terminal outside it");
        }
        for t in &self.ttys {
            let text = format!("{} {}\n", t.key, t.path);
            stasis_sys::net::send_with_fds(
                self.sock.as_raw_fd(),
                text.as_bytes(),
                None,
                &[t.master.as_raw_fd()],
            )
            .with_context(|| {
                format!(
                    "--new-tty: sending the master of {} to {}",
                    t.path, self.path
                )
            })?;
            eprintln!(
                "stasis: note: {} is outside the tree: the tree holds the new terminal {} in its \
                 place, whose master was sent to {}",
                t.key, t.path, self.path
            );
        }
        Ok(())
    }
}
