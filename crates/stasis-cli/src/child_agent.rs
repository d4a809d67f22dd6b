//! A `stasis agent` run as a child of this process, for the verbs that need a real agent of
//! their own (`stasis demo`, `stasis bench agent`).
//!
//! [`ChildAgent::start`] runs `EXE --root ROOT agent --listen off EXTRA…` in its own process
//! group (so a Ctrl-C reaches this process only, which then cleans up in order), with its
//! stdout and stderr appended to a log file, and waits up to 10 s until it answers on
//! `ROOT/api/agent.sock`. If the agent that answers there is not the child (another agent already
//! owns the root), the child is killed and the start refused, leaving that agent and its
//! workloads alone.
//!
//! [`ChildAgent::shutdown`] (also run on drop, without a workload) removes the caller's
//! workload through the API (`DELETE /v1/workloads/NAME`), stops the agent (SIGTERM, up to
//! 15 s, then SIGKILL; an agent that already ended is not signalled, as its pid may be someone
//! else's by then), and, as a last resort, runs `EXE --root ROOT rm -f NAME` so that no
//! partition of the workload stays behind.

use anyhow::{anyhow, bail, Context};
use stasis_agent::client::{Client, ClientError, Endpoint};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`ChildAgent::start`] waits for the agent to answer.
const START_BOUND: Duration = Duration::from_secs(10);
/// How long [`ChildAgent::shutdown`] waits for the agent to end after SIGTERM.
const STOP_BOUND: Duration = Duration::from_secs(15);
/// Lines of the agent's output quoted when it fails to come up.
const TAIL_LINES: usize = 20;

/// A child `stasis agent` on a root, and a client of it.
pub(crate) struct ChildAgent {
    exe: PathBuf,
    root: PathBuf,
    log: PathBuf,
    client: Client,
    child: Option<Child>,
}

impl ChildAgent {
    /// Start `exe --root root agent --listen off extra…`, its output appended to `log`, and
    /// wait until it answers.
    pub(crate) fn start(
        exe: &Path,
        root: &Path,
        extra: &[&str],
        log: &Path,
    ) -> anyhow::Result<ChildAgent> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(exe)
            .arg("--root")
            .arg(root)
            .args(["agent", "--listen", "off"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a Ctrl-C reaches this process only, which then removes
            // its workload before it stops the agent.
            .process_group(0)
            .spawn()
            .context("starting the agent")?;
        let mut agent = ChildAgent {
            exe: exe.to_path_buf(),
            root: root.to_path_buf(),
            log: log.to_path_buf(),
            client: Client::new(Endpoint::Unix(
                stasis_agent::daemon::AgentPaths::new(root).socket(),
            )),
            child: Some(child),
        };
        let deadline = Instant::now() + START_BOUND;
        loop {
            crate::check_interrupt()?;
            if let Some(c) = agent.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    agent.child = None;
                    bail!("the agent ended at once ({st}){}", agent.output_note());
                }
            }
            match agent.client.wait_ready(Duration::from_millis(500)) {
                Ok(h) if h["pid"].as_i64() == Some(i64::from(agent.pid())) => return Ok(agent),
                Ok(h) => {
                    // Someone else's agent owns this root: leave it and its workloads alone.
                    if let Some(mut c) = agent.child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    bail!(
                        "another agent (pid {}) already runs on {}: stop it or use another root",
                        h["pid"],
                        root.display()
                    );
                }
                Err(ClientError::Unreachable { .. }) if Instant::now() < deadline => {}
                Err(e) => bail!("the agent did not come up: {e}{}", agent.output_note()),
            }
        }
    }

    /// The client of the agent (on `ROOT/api/agent.sock`).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The client, to change its settings (e.g. its timeout).
    pub(crate) fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The agent's pid (0 once it is stopped).
    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The agent's root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The last `n` lines of the agent's output (empty if there is none).
    pub(crate) fn output_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// "; its output ends with: …" (and where it is), to explain a failure to start.
    fn output_note(&self) -> String {
        let tail = self.output_tail(TAIL_LINES);
        if tail.is_empty() {
            format!(" (no output in {})", self.log.display())
        } else {
            format!(
                "; its output ends with (see {}):\n{tail}",
                self.log.display()
            )
        }
    }

    /// Remove `workload` (if any) through the API, stop the agent, and remove any partition of
    /// `workload` left over. Done once: later calls do nothing.
    pub(crate) fn shutdown(&mut self, workload: Option<&str>) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let result = match child.try_wait() {
            // Ended (and reaped here) already: its pid may be someone else's by now.
            Ok(Some(st)) => Err(anyhow!("the agent had ended already ({st})")),
            Err(e) => Err(anyhow!(e).context("checking on the agent")),
            Ok(None) => {
                let removed = match workload {
                    Some(name) => {
                        let mut c = self.client.clone();
                        c.timeout = Duration::from_secs(60);
                        match c.delete(&format!("/v1/workloads/{name}")) {
                            Ok(_) | Err(ClientError::Api { status: 404, .. }) => Ok(()),
                            Err(e) => Err(anyhow!(e).context(format!("removing workload {name}"))),
                        }
                    }
                    None => Ok(()),
                };
                removed.and(stop(&mut child))
            }
        };
        // Last resort, whatever happened above: no partition of the workload stays behind
        // (nothing to do if the agent removed it).
        if let Some(name) = workload {
            let _ = Command::new(&self.exe)
                .arg("--root")
                .arg(&self.root)
                .args(["rm", "-f", name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        result
    }
}

/// SIGTERM the running agent and wait for it to end, for at most [`STOP_BOUND`]; then
/// SIGKILL it.
fn stop(child: &mut Child) -> anyhow::Result<()> {
    let _ = stasis_sys::sys::kill(child.id() as i32, libc::SIGTERM);
    let deadline = Instant::now() + STOP_BOUND;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the agent did not stop within {} s of SIGTERM: killed it",
                    STOP_BOUND.as_secs()
                );
            }
        }
    }
}

impl Drop for ChildAgent {
    /// Stops the agent if [`ChildAgent::shutdown`] was not called (its users call it with their
    /// workload first).
    fn drop(&mut self) {
        if let Err(e) = self.shutdown(None) {
            eprintln!("stasis: stopping the agent: {e:#}");
        }
    }
}
