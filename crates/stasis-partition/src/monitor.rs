//! The per-partition monitor.
//!
//! `stasis run` and a partition restore start a small monitor process (the hidden verb
//! `stasis __monitor`, in a session of its own) that:
//!
//! 1. creates the partition's cgroup with its limits;
//! 2. starts the first process — `run`: forks it into new pid, mount, IPC, UTS (and network)
//!    namespaces, puts it in the cgroup, and lets it set its namespaces up and exec the command;
//!    restore: forks a restorer that rebuilds the namespaces and the tree (see
//!    [`crate::restore`]);
//! 3. reports [`Message::Started`] (or a typed [`Message::Failed`]; a restore's progress
//!    before) on the channel it was started with ([`crate::helper`]), and closes it;
//! 4. copies the partition's stdout and stderr (a pipe) into `output.log`, samples the
//!    cgroup's accounting into `stats.jsonl`, and is a child subreaper: the first process is (or
//!    becomes, once the restorer exits) its child, so it collects the exit status, records how
//!    the partition ended, folds the accounting into the record and removes the cgroup.

use crate::accounting;
use crate::cgroup::Cgroups;
use crate::helper::{self, HelperError, Message};
use crate::setup;
use crate::state::{self, ExitInfo, Record, Root, State};
use stasis_sys::ns::{self, Forked};
use stasis_sys::wait::{wait_exit, Block, Exit, Who};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the monitor starts.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The record's command, fresh.
    Run,
    /// The tree saved in an image directory.
    Restore {
        /// Image directory (absolute).
        dir: PathBuf,
        /// Worker threads for page I/O.
        workers: usize,
        /// Restore it unsigned (`--insecure-unsigned`); otherwise it must be signed by a key
        /// of the root's keyring.
        insecure_unsigned: bool,
    },
}

/// How often accounting is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Error text with its chain of causes.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Send the final message on the caller's channel and close it (once).
fn send(report: &mut Option<std::fs::File>, m: &Message) {
    if let Some(mut f) = report.take() {
        let _ = helper::send(&mut f, m);
    }
}

/// A failure as the final message.
fn failed(e: HelperError) -> Message {
    Message::Failed(e)
}

/// The monitor's main function. `report` is the caller's channel ([`crate::helper`]): progress
/// of a restore, then the final [`Message::Started`] or [`Message::Failed`]; it is closed once
/// the partition runs. Returns the monitor's exit code.
pub fn main(root: Root, name: &str, mode: Mode, report: std::fs::File) -> i32 {
    let mut report = Some(report);
    let started = start(&root, name, &mode, &mut report);
    let (pid, rec, cg, group, log_r) = match started {
        Ok(s) => s,
        Err(e) => {
            send(&mut report, &failed(e));
            return 1;
        }
    };
    send(&mut report, &Message::Started { pid });
    let log_dir = root.paths(name).dir;
    let pump = std::thread::spawn(move || pump_log(log_r, log_dir));
    supervise(&root, name, pid, &rec, &cg, &group);
    // Output written by the last processes is still in the pipe: wait (bounded) for the copy.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pump.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    0
}

/// Everything up to a running first process: (its pid, the record, the cgroups, its group,
/// the read end of its output pipe). A failure leaves no cgroup and marks the record.
fn start(
    root: &Root,
    name: &str,
    mode: &Mode,
    report: &mut Option<std::fs::File>,
) -> Result<(i32, Record, Cgroups, String, std::io::PipeReader), HelperError> {
    stasis_sys::sys::set_child_subreaper()
        .map_err(|e| HelperError::internal(format!("prctl(PR_SET_CHILD_SUBREAPER): {e}")))?;
    let rec = root
        .load(name)
        .map_err(|e| HelperError::internal(chain(&e)))?;
    let fail = |e: HelperError| {
        fail_record(root, name);
        e
    };
    let cg = Cgroups::detect().map_err(|e| fail(HelperError::internal(chain(&e))))?;
    let group = Cgroups::group_for(name);
    prepare_cgroup(&cg, &group, &rec).map_err(|e| fail(HelperError::internal(e)))?;
    // The partition's stdout and stderr: a pipe we copy into output.log.
    let (log_r, log_w) = std::io::pipe().map_err(|e| {
        let _ = cg.remove(&group);
        fail(HelperError::internal(format!(
            "creating the output pipe: {e}"
        )))
    })?;
    let log_ino = pipe_ino(log_r.as_fd());
    let mut relay = |p: &helper::Progress| {
        if let Some(f) = report.as_mut() {
            let _ = helper::send(f, &Message::Progress(p.clone()));
        }
    };
    let started = match mode {
        Mode::Run => start_run(&rec, &cg, &group, OwnedFd::from(log_w)),
        Mode::Restore {
            dir,
            workers,
            insecure_unsigned,
        } => match crate::ops::trust_of(root, *insecure_unsigned) {
            Ok(trust) => crate::restore::start(
                &rec,
                &group,
                dir,
                *workers,
                &trust,
                OwnedFd::from(log_w),
                &mut relay,
            ),
            Err(e) => Err(HelperError::ImageInvalid {
                message: e.to_string(),
            }),
        },
    };
    // On failure the first process is gone (killed and reaped by the failed start); a veth
    // pair it made was removed by the start itself. (A host interface is never deleted here:
    // it may not be ours.)
    let pid = started.map_err(|e| {
        let _ = cg.remove(&group);
        fail(e)
    })?;
    let upd = root.update(name, |r| {
        r.state = State::Running;
        r.pid = Some(pid);
        r.monitor_pid = Some(stasis_sys::sys::getpid());
        r.started_at = state::now();
        r.exit = None;
        r.ending = None;
        r.log_pipe_ino = log_ino;
    });
    if let Err(e) = upd {
        tracing::error!(error = %chain(&e), "could not record the running partition");
    }
    Ok((pid, rec, cg, group, log_r))
}

fn pipe_ino(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|m| m.ino())
        .unwrap_or(0)
}

fn fail_record(root: &Root, name: &str) {
    let _ = root.update(name, |r| {
        if r.state == State::Starting {
            r.state = State::Exited;
            r.pid = None;
            r.monitor_pid = None;
        }
    });
}

fn prepare_cgroup(cg: &Cgroups, group: &str, rec: &Record) -> Result<(), String> {
    if cg.exists(group) {
        // Left by an earlier incarnation that is gone (its monitor removes it normally).
        if let Ok(p) = cg.procs(group) {
            if !p.is_empty() {
                return Err(format!(
                    "cgroup {group} still holds processes {p:?} of an earlier incarnation: end them first"
                ));
            }
        }
        let _ = cg.remove(group);
    }
    cg.create(group).map_err(|e| chain(&e))?;
    if let Err(e) = cg.set_limits(group, &rec.spec.limits) {
        // A refused limit leaves no group behind.
        let _ = cg.remove(group);
        return Err(chain(&e));
    }
    Ok(())
}

/// Fork the first process of a fresh partition and wait until it has exec'd its command.
/// The first process reports a failure to set up or exec as a final message on its result
/// pipe (close-on-exec: end of file without a message means it runs its command).
fn start_run(rec: &Record, cg: &Cgroups, group: &str, log_w: OwnedFd) -> Result<i32, HelperError> {
    let spec = rec.spec.clone();
    let (go_r, go_w) = std::io::pipe().map_err(|e| HelperError::internal(format!("pipe: {e}")))?;
    let (err_r, err_w) =
        std::io::pipe().map_err(|e| HelperError::internal(format!("pipe: {e}")))?;
    let mut flags =
        (libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) as u64;
    if spec.net != state::NetMode::Host {
        flags |= libc::CLONE_NEWNET as u64;
    }
    match ns::fork_into(flags, None) {
        Err(e) => Err(HelperError::internal(format!(
            "creating the partition's namespaces (clone3): {e}"
        ))),
        Ok(Forked::Child) => {
            drop(go_w);
            drop(err_r);
            let msg = init_child(&spec, go_r, &log_w);
            let mut err_w = err_w;
            let _ = helper::send(&mut err_w, &failed(HelperError::internal(msg)));
            ns::exit_now(127);
        }
        Ok(Forked::Parent(pid)) => {
            drop(go_r);
            drop(err_w);
            drop(log_w);
            let fail = |what: String| {
                let _ = stasis_sys::sys::kill(pid, libc::SIGKILL);
                let _ = wait_exit(Who::Pid(pid), Block::Yes);
                HelperError::internal(what)
            };
            if let Err(e) = cg.attach(group, pid) {
                return Err(fail(chain(&e)));
            }
            if let Err(e) = setup::veth_host_side(&spec, pid, None) {
                return Err(fail(chain(&e)));
            }
            // From here the veth pair, if any, was created by this start: a failure removes
            // its host end at once (the kernel tears a dead namespace's interfaces down only
            // later, asynchronously).
            let mut go_w = go_w;
            if let Err(e) = go_w.write_all(b"g") {
                let r = fail(format!("starting the first process: {e}"));
                setup::veth_remove(&spec);
                return Err(r);
            }
            drop(go_w);
            let mut err_r = err_r;
            let failure = match helper::recv::<Message>(&mut err_r) {
                Ok(None) => None,
                Ok(Some(Message::Failed(e))) => Some(e),
                Ok(Some(m)) => Some(HelperError::internal(format!(
                    "the first process answered {m:?}"
                ))),
                Err(e) => Some(HelperError::internal(format!(
                    "the first process's report: {}",
                    chain(&e)
                ))),
            };
            if let Some(e) = failure {
                let _ = wait_exit(Who::Pid(pid), Block::Yes);
                setup::veth_remove(&spec);
                return Err(e);
            }
            Ok(pid)
        }
    }
}

/// Offsets of a new partition's time namespace: zero, or for tests
/// `STASIS_PARTITION_CLOCK_SHIFT=SECS` added to its monotonic and boot-time clocks (a partition
/// that seems to come from a host that has been up longer, to check that a restore on this one
/// does not take its clocks back).
fn start_offsets() -> Result<ns::TimeOffsets, String> {
    match std::env::var("STASIS_PARTITION_CLOCK_SHIFT") {
        Err(_) => Ok(Default::default()),
        Ok(v) => {
            let secs: i64 = v.trim().parse().map_err(|_| {
                format!("STASIS_PARTITION_CLOCK_SHIFT={v:?}: not a number of seconds")
            })?;
            Ok(ns::TimeOffsets {
                monotonic: secs * 1_000_000_000,
                boottime: secs * 1_000_000_000,
            })
        }
    }
}

/// In the first process (pid 1 of the new namespaces): set everything up and exec. Returns
/// only on failure, with the message.
fn init_child(spec: &state::Spec, go: std::io::PipeReader, log_w: &OwnedFd) -> String {
    let mut go = go;
    let mut b = [0u8; 1];
    if go.read_exact(&mut b).is_err() {
        return "the monitor did not start the first process".into();
    }
    let r = (|| -> Result<(), String> {
        ns::setsid().map_err(|e| format!("setsid: {e}"))?;
        ns::enter_new_timens(start_offsets()?)
            .map_err(|e| format!("creating the partition's time namespace: {e}"))?;
        setup::base_mounts(spec, true).map_err(|e| chain(&e))?;
        setup::uts_and_net(spec).map_err(|e| chain(&e))?;
        setup::mount_proc(&setup::base(spec)).map_err(|e| chain(&e))?;
        if let Some(rootfs) = &spec.rootfs {
            setup::switch_root(rootfs).map_err(|e| chain(&e))?;
        }
        let cwd = spec.cwd.clone().unwrap_or_else(|| PathBuf::from("/"));
        std::env::set_current_dir(&cwd)
            .map_err(|e| format!("working directory {}: {e}", cwd.display()))?;
        let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        ns::dup2(null.as_fd(), 0).map_err(|e| format!("dup2: {e}"))?;
        ns::dup2(log_w.as_fd(), 1).map_err(|e| format!("dup2: {e}"))?;
        ns::dup2(log_w.as_fd(), 2).map_err(|e| format!("dup2: {e}"))?;
        Ok(())
    })();
    if let Err(e) = r {
        return e;
    }
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&spec.cmd[0]);
    cmd.args(&spec.cmd[1..]);
    for kv in &spec.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let e = cmd.exec();
    format!("cannot run {}: {e}", spec.cmd[0])
}

/// Copy the partition's output into `DIR/output.log` (mode 0600, opened relative to the
/// partition's directory, never through a link).
fn pump_log(mut r: std::io::PipeReader, dir: PathBuf) {
    let path = dir.join("output.log");
    let opened = stasis_image::safefs::Dir::open(&dir)
        .and_then(|d| d.open_append("output.log", stasis_image::safefs::PRIVATE_FILE));
    let mut out = match opened {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the output log");
            return;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Wait for the first process to end, sampling accounting meanwhile; then record the end.
fn supervise(root: &Root, name: &str, pid: i32, start: &Record, cg: &Cgroups, group: &str) {
    let incarnation = start.incarnation;
    let stats_path = root.paths(name).stats();
    let mut next_sample = Instant::now();
    let exit = loop {
        match wait_exit(Who::Any, Block::No) {
            Ok(Some((p, e))) if p == pid => break e,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "waitpid");
                break Exit::Code(-1);
            }
        }
        if Instant::now() >= next_sample {
            next_sample = Instant::now() + SAMPLE_EVERY;
            if let Ok(rec) = root.load(name) {
                if let Ok(u) = cg.usage(group) {
                    let total = accounting::total(&rec.carried, &u);
                    let _ = accounting::append(&stats_path, &accounting::Sample::now(total));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The namespace's other processes die with its first one: wait until the cgroup is empty.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cg.procs(group).map(|p| !p.is_empty()).unwrap_or(false) && Instant::now() < deadline {
        let _ = wait_exit(Who::Any, Block::No);
        std::thread::sleep(Duration::from_millis(20));
    }
    let usage = cg.usage(group).ok();
    let upd = root.update(name, |r| {
        if r.incarnation != incarnation || r.pid != Some(pid) {
            // A newer incarnation (restored meanwhile) owns the record now.
            return None;
        }
        if let Some(u) = usage {
            r.carried = accounting::total(&r.carried, &u);
            r.carried.memory_bytes = 0;
            r.carried.pids = 0;
            let _ = accounting::append(&stats_path, &accounting::Sample::now(r.carried));
        }
        r.state = r.ending.take().unwrap_or(State::Exited);
        r.pid = None;
        r.monitor_pid = None;
        r.exit = Some(ExitInfo {
            code: match exit {
                Exit::Code(c) => Some(c),
                Exit::Signal(_) => None,
            },
            signal: match exit {
                Exit::Signal(s) => Some(s),
                Exit::Code(_) => None,
            },
            at: state::now(),
        });
        Some(r.spec.clone())
    });
    // The group and the veth are this incarnation's only while the record still is (not
    // removed by `rm`, not taken over by a newer incarnation).
    let mine = match upd {
        Ok((_, Some(spec))) => Some(spec),
        // Removed by `rm` meanwhile: nobody else owns the name's group.
        Err(state::StateError::NotFound(_)) => Some(start.spec.clone()),
        _ => None,
    };
    if let Some(spec) = mine {
        if let Err(e) = cg.remove(group) {
            tracing::warn!(error = %chain(&e), "could not remove the partition's cgroup");
        }
        setup::veth_remove(&spec);
    }
}
