//! System V semaphore sets and message queues.
//!
//! They belong to the IPC namespace, not to a process: nothing in a task points at them. In
//! the namespace the tree shares with others (the host's), the sets and queues the tree *used*
//! are saved — a semaphore set whose last operation on some semaphore was by a pid of the tree,
//! a queue whose last sender or receiver is in the tree (`/proc/sysvipc/{sem,msg}`). Values are
//! read with `semctl(GETALL)`, messages with `msgrcv(MSG_COPY)` (not consumed), in order.
//!
//! Restore: an object that still exists with the same id and key (it outlived the tree on this
//! host) is used as it is; a missing one is created with the same id through
//! `kernel.{sem,msg}_next_id`, then filled; an id held by another object fails naming it.
//! SEM_UNDO adjustments cannot be read from the kernel and are lost.

use crate::error::{Ctx, Failure};
use stasis_image::records as rec;
use stasis_sys::sys;

/// Save the sets and queues used by the tree (`pids`: every pid and tid of the tree).
pub fn dump(pids: &[i32]) -> Result<(Vec<rec::SysvSem>, Vec<rec::SysvMsg>), Failure> {
    let mut sems = Vec::new();
    for row in sys::sysvipc_rows("sem").ctx(0, || "reading /proc/sysvipc/sem".into())? {
        let id = row.get("semid").copied().unwrap_or(-1) as i32;
        let nsems = row.get("nsems").copied().unwrap_or(0) as usize;
        let Ok((vals, last)) = sys::sem_values(id, nsems) else {
            continue;
        };
        if !last.iter().any(|p| pids.contains(p)) {
            continue;
        }
        sems.push(rec::SysvSem {
            id,
            key: row.get("key").copied().unwrap_or(0) as i32,
            mode: row
                .get("perms")
                .map(|p| u32::from_str_radix(&p.to_string(), 8).unwrap_or(0o600))
                .unwrap_or(0o600),
            values: vals.into_iter().map(u32::from).collect(),
        });
    }
    let mut msgs = Vec::new();
    for row in sys::sysvipc_rows("msg").ctx(0, || "reading /proc/sysvipc/msg".into())? {
        let id = row.get("msqid").copied().unwrap_or(-1) as i32;
        let ls = row.get("lspid").copied().unwrap_or(0) as i32;
        let lr = row.get("lrpid").copied().unwrap_or(0) as i32;
        if !pids.contains(&ls) && !pids.contains(&lr) {
            continue;
        }
        let qnum = row.get("qnum").copied().unwrap_or(0) as usize;
        let messages = sys::msg_copy_all(id, qnum, 65536)
            .ctx(0, || {
                format!("System V message queue {id}: reading messages (MSG_COPY)")
            })?
            .into_iter()
            .map(|(mtype, data)| rec::SysvMessage { mtype, data })
            .collect();
        msgs.push(rec::SysvMsg {
            id,
            key: row.get("key").copied().unwrap_or(0) as i32,
            mode: row
                .get("perms")
                .map(|p| u32::from_str_radix(&p.to_string(), 8).unwrap_or(0o600))
                .unwrap_or(0o600),
            messages,
        });
    }
    Ok((sems, msgs))
}

fn exists(kind: &str, idcol: &str, id: i32) -> Result<Option<i64>, Failure> {
    Ok(sys::sysvipc_rows(kind)
        .ctx(0, || format!("reading /proc/sysvipc/{kind}"))?
        .into_iter()
        .find(|r| r.get(idcol).copied() == Some(id as i64))
        .map(|r| r.get("key").copied().unwrap_or(0)))
}

/// Make sure every saved set and queue exists with its id.
pub fn restore(img: &rec::Checkpoint) -> Result<(), Failure> {
    for s in &img.sysv_sem {
        let what = || format!("System V semaphore set {} (key {:#x})", s.id, s.key);
        match exists("sem", "semid", s.id)? {
            Some(k) if k as i32 == s.key => continue,
            Some(k) => return Err(Failure::msg(0, format!("{}: id {} is taken by another set (key {k:#x}); restore into a partition with its own IPC namespace", what(), s.id))),
            None => {}
        }
        let got = sys::sysv_create("sem", s.id, s.key, s.mode, s.values.len() as i32)
            .ctx(0, || format!("{}: creating it", what()))?;
        if got != s.id {
            let _ = sys::sysv_remove("sem", got);
            return Err(Failure::msg(
                0,
                format!("{}: the kernel gave id {got}", what()),
            ));
        }
        let vals: Vec<u16> = s.values.iter().map(|&v| v as u16).collect();
        sys::sem_set_all(s.id, &vals).ctx(0, || format!("{}: setting values", what()))?;
    }
    for q in &img.sysv_msg {
        let what = || format!("System V message queue {} (key {:#x})", q.id, q.key);
        match exists("msg", "msqid", q.id)? {
            Some(k) if k as i32 == q.key => continue,
            Some(k) => return Err(Failure::msg(0, format!("{}: id {} is taken by another queue (key {k:#x}); restore into a partition with its own IPC namespace", what(), q.id))),
            None => {}
        }
        let got = sys::sysv_create("msg", q.id, q.key, q.mode, 0)
            .ctx(0, || format!("{}: creating it", what()))?;
        if got != q.id {
            let _ = sys::sysv_remove("msg", got);
            return Err(Failure::msg(
                0,
                format!("{}: the kernel gave id {got}", what()),
            ));
        }
        for m in &q.messages {
            sys::msg_send(q.id, m.mtype, &m.data).ctx(0, || {
                format!(
                    "{}: re-queueing a message (above kernel.msgmnb needs CAP_SYS_RESOURCE)",
                    what()
                )
            })?;
        }
    }
    Ok(())
}
