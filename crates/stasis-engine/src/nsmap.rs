//! Pids as a partition's pid namespace sees them.
//!
//! The engine works from the host pid namespace: ptrace, `/proc` and `process_vm_*` take host
//! pids. A tree that is the whole of its own pid namespace (a partition) must be recorded with
//! the pids its processes see (`NSpid`, the last field of `/proc/PID/status`), because those are
//! what restore recreates (`clone3` with `set_tid` in a new namespace whose first pid is 1) and
//! what the tasks themselves hold in memory (a saved child pid, a pid file). Every pid-valued
//! field of the image is translated here after the dump; restore keeps the reverse map as it
//! creates tasks.

use crate::error::{Ctx, Failure};
use stasis_image::records as rec;
use std::collections::HashMap;

/// Rewrite every pid of `img` from host pids to the root's pid namespace.
pub fn to_namespace(img: &mut rec::Checkpoint) -> Result<(), Failure> {
    let mut map: HashMap<i32, i32> = HashMap::new();
    for p in &img.processes {
        for t in &p.threads {
            let st = stasis_sys::proc::read_status(t.tid)
                .ctx(t.tid, || "reading status for its namespace pid".into())?;
            let ns = *st
                .ns_pid
                .last()
                .ok_or_else(|| Failure::msg(t.tid, "status has no NSpid line"))?;
            map.insert(t.tid, ns);
        }
    }
    let root_host = img.root_pid;
    if map.get(&root_host) != Some(&1) {
        return Err(Failure::msg(
            root_host,
            "the root is not the first process (pid 1) of its pid namespace",
        ));
    }
    let tr = |what: &str, owner: i32, v: i32| -> Result<i32, Failure> {
        if v <= 0 {
            return Ok(v);
        }
        map.get(&v).copied().ok_or_else(|| {
            Failure::msg(
                owner,
                format!("{what} {v} is a process outside the partition's pid namespace"),
            )
        })
    };
    for p in &mut img.processes {
        let owner = p.pid;
        p.ppid = if p.pid == root_host {
            0
        } else {
            tr("parent", owner, p.ppid)?
        };
        // A session or group led from outside the namespace shows as 0 inside it.
        p.pgid = map.get(&p.pgid).copied().unwrap_or(0);
        p.sid = map.get(&p.sid).copied().unwrap_or(0);
        if let Some(c) = p.ctty.as_mut() {
            c.fg_pgid = map.get(&c.fg_pgid).copied().unwrap_or(0);
        }
        for t in &mut p.posix_timers {
            t.notify_tid = tr("timer target thread", owner, t.notify_tid)?;
        }
        p.fd_table_of = tr("fd table owner", owner, p.fd_table_of)?;
        for t in &mut p.threads {
            t.tid = map[&t.tid];
        }
        p.pid = map[&p.pid];
    }
    for f in &mut img.files {
        if let Some(pf) = f.pidfd_mut().filter(|pf| !pf.exited) {
            pf.pid = tr("pidfd target", pf.pid, pf.pid)?;
        }
        if let Some(o) = f.owner.as_mut() {
            // An owner outside the namespace reads as 0 from inside it (no owner).
            o.pid = map.get(&o.pid).copied().unwrap_or(0);
        }
        if let Some(ep) = f.epoll_mut() {
            for it in &mut ep.items {
                it.owner_pid = tr("epoll owner", it.owner_pid, it.owner_pid)?;
            }
        }
    }
    img.root_pid = 1;
    Ok(())
}
