//! `stasis inspect`: what an image holds.

use serde_json::json;
use stasis_image::records::{self as rec, VmaKind};
use std::path::Path;

fn kind_name<T: std::fmt::Debug>(k: Result<T, impl Sized>) -> String {
    k.map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn run(root: &Path, dir: &Path, json_out: bool, verify: bool) -> Result<(), super::Failed> {
    let (reader, img) =
        stasis_engine::restore::load(dir).map_err(|e| (4, anyhow::Error::new(e)))?;
    let signature = crate::image::signature_status(root, &reader);
    let verified = if verify {
        Some(reader.verify_all().map_err(|e| {
            (
                4,
                anyhow::Error::new(e).context("image verification failed"),
            )
        })?)
    } else {
        None
    };
    let m = reader.manifest();
    let part = stasis_partition::image::read(&reader)
        .map_err(|e| (4, anyhow::anyhow!("{}: partition.img {e}", dir.display())))?;
    let part_json = part.as_ref().map(|p| {
        json!({
            "name": p.raw.name,
            "hostname": p.raw.hostname,
            "incarnation": p.raw.incarnation,
            "spec": p.spec,
            "usage": p.usage,
            "history_samples": p.history.len(),
            "mounts": p.raw.mounts.iter().map(|m| json!({
                "mountpoint": m.mountpoint,
                "kind": if m.kind == stasis_partition::mounts::MountKind::Tmpfs as i32 { "tmpfs" } else { "bind" },
                "options": m.fs_options,
                "host_path": m.host_path,
                "entries": m.entries.len(),
                "bytes": m.entries.iter().filter(|e| e.kind == stasis_partition::mounts::EntryKind::File as i32).map(|e| e.size).sum::<u64>(),
            })).collect::<Vec<_>>(),
        })
    });
    let procs: Vec<_> = img
        .processes
        .iter()
        .map(|p| {
            let stored: u64 = p.vmas.iter().flat_map(|v| &v.pages).map(|r| r.count as u64 * 4096).sum();
            json!({
                "pid": p.pid, "ppid": p.ppid, "pgid": p.pgid, "sid": p.sid,
                "exe": p.exe, "cwd": p.cwd,
                "comm": p.threads.first().map(|t| t.comm.clone()).unwrap_or_default(),
                "threads": p.threads.iter().map(|t| json!({"tid": t.tid, "comm": t.comm})).collect::<Vec<_>>(),
                "uids": p.creds.as_ref().map(|c| c.uids.clone()),
                "mappings": p.vmas.iter().map(|v| json!({
                    "start": format!("{:#x}", v.start), "end": format!("{:#x}", v.end),
                    "prot": format!("{}{}{}", if v.prot & 1 != 0 {'r'} else {'-'}, if v.prot & 2 != 0 {'w'} else {'-'}, if v.prot & 4 != 0 {'x'} else {'-'}),
                    "shared": v.flags & libc::MAP_SHARED as u32 != 0,
                    "kind": kind_name(VmaKind::try_from(v.kind)), "path": v.path,
                    "stored_pages": v.pages.iter().map(|r| r.count as u64).sum::<u64>(),
                })).collect::<Vec<_>>(),
                "stored_bytes": stored,
                "fds": p.fds.iter().map(|fd| {
                    let f = &img.files[fd.file_id as usize];
                    json!({"fd": fd.fd, "cloexec": fd.cloexec, "file": fd.file_id, "what": stasis_engine::files::describe(&img, f), "pos": f.pos, "flags": format!("{:#o}", f.flags)})
                }).collect::<Vec<_>>(),
                "pending_signals": p.shared_pending.len() + p.threads.iter().map(|t| t.pending.len()).sum::<usize>(),
                "posix_timers": p.posix_timers.len(),
            })
        })
        .collect();
    let out = json!({
        "dir": dir.display().to_string(),
        "format_version": m.format_version,
        "tool_version": m.tool_version,
        "created_unix_ms": m.created_unix_ms,
        "kernel": img.kernel_release,
        "root_pid": img.root_pid,
        "processes": procs,
        "pipes": img.pipes.iter().map(|p| json!({"key": format!("pipe:[{}]", p.ino), "fifo": p.fifo_path, "buffered": p.data.len(), "external_reader": p.external_reader, "external_writer": p.external_writer})).collect::<Vec<_>>(),
        "shared_memory": img.shmem.iter().map(|s| json!({"id": s.id, "kind": kind_name(rec::ShmemKind::try_from(s.kind)), "name": s.name, "size": s.size})).collect::<Vec<_>>(),
        "sysv_shm": img.shmem.iter().filter(|s| s.kind == rec::ShmemKind::SysvShm as i32).map(|s| json!({"id": s.sysv_id, "key": s.sysv_key, "size": s.size})).collect::<Vec<_>>(),
        "sysv_sem": img.sysv_sem.iter().map(|s| json!({"id": s.id, "key": s.key, "values": s.values})).collect::<Vec<_>>(),
        "sysv_msg": img.sysv_msg.iter().map(|q| json!({"id": q.id, "key": q.key, "messages": q.messages.len()})).collect::<Vec<_>>(),
        "network_lock": img.net_lock,
        "partition": part_json,
        "chunks": m.chunks.len(),
        "chunk_bytes": m.chunks.iter().map(|c| c.raw_len).sum::<u64>(),
        "verified": verified.map(|v| v.chunks),
        "signature": signature,
    });
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serialisable")
        );
        return Ok(());
    }
    println!(
        "image {} (format v{}, kernel {}, by {})",
        dir.display(),
        m.format_version,
        img.kernel_release,
        m.tool_version
    );
    println!("signature: {signature}");
    println!(
        "root pid {}; {} chunk(s), {:.1} MiB of page data",
        img.root_pid,
        m.chunks.len(),
        out["chunk_bytes"].as_u64().unwrap_or(0) as f64 / 1048576.0
    );
    if let Some(p) = &part {
        println!(
            "partition {} (hostname {}, incarnation {}): {} — net {:?}{}",
            p.raw.name,
            p.raw.hostname,
            p.raw.incarnation,
            p.spec.cmd.join(" "),
            p.spec.net,
            p.spec
                .rootfs
                .as_ref()
                .map(|r| format!(", rootfs {}", r.display()))
                .unwrap_or_default()
        );
        println!(
            "  limits: memory {:?}, cpus {:?}, tasks {:?}; used: cpu {:.2} s, memory peak {:.1} MiB, {} sample(s)",
            p.spec.limits.memory_bytes,
            p.spec.limits.cpus,
            p.spec.limits.pids,
            p.usage.cpu_ns as f64 / 1e9,
            p.usage.memory_peak_bytes as f64 / 1048576.0,
            p.history.len()
        );
        for mnt in &p.raw.mounts {
            println!(
                "  mount {} {} ({} entries, {} bytes){}",
                mnt.mountpoint,
                if mnt.kind == stasis_partition::mounts::MountKind::Tmpfs as i32 {
                    "tmpfs"
                } else {
                    "bind"
                },
                mnt.entries.len(),
                mnt.entries
                    .iter()
                    .filter(|e| e.kind == stasis_partition::mounts::EntryKind::File as i32)
                    .map(|e| e.size)
                    .sum::<u64>(),
                if mnt.host_path.is_empty() {
                    String::new()
                } else {
                    format!(" from {}", mnt.host_path)
                }
            );
        }
    }
    for p in &img.processes {
        let stored: u64 = p
            .vmas
            .iter()
            .flat_map(|v| &v.pages)
            .map(|r| r.count as u64 * 4096)
            .sum();
        println!(
            "\nprocess {} (ppid {}, pgid {}, sid {}) {} — {} thread(s), {} mapping(s), {:.1} MiB stored",
            p.pid, p.ppid, p.pgid, p.sid, p.exe, p.threads.len(), p.vmas.len(), stored as f64 / 1048576.0
        );
        for t in &p.threads {
            println!("  thread {} '{}'", t.tid, t.comm);
        }
        if p.zombie {
            println!("  zombie: exited, wait status {:#x}", p.exit_status);
        } else if p.stop_signal != 0 {
            let seen = if p.stop_reported {
                "collected"
            } else {
                "not collected"
            };
            println!(
                "  stopped by signal {} ({seen} by its parent)",
                p.stop_signal
            );
        } else if p.continued {
            println!("  continued (not collected by its parent)");
        }
        for v in &p.vmas {
            let n: u64 = v.pages.iter().map(|r| r.count as u64).sum();
            println!(
                "  map {:#014x}-{:#014x} {}{}{}{} {:<11} {:>6} pages {}",
                v.start,
                v.end,
                if v.prot & 1 != 0 { 'r' } else { '-' },
                if v.prot & 2 != 0 { 'w' } else { '-' },
                if v.prot & 4 != 0 { 'x' } else { '-' },
                if v.flags & libc::MAP_SHARED as u32 != 0 {
                    's'
                } else {
                    'p'
                },
                kind_name(VmaKind::try_from(v.kind)),
                n,
                v.path
            );
        }
        for fd in &p.fds {
            let f = &img.files[fd.file_id as usize];
            println!(
                "  fd {:>3}{} {} (pos {}, flags {:#o})",
                fd.fd,
                if fd.cloexec { " cloexec" } else { "" },
                stasis_engine::files::describe(&img, f),
                f.pos,
                f.flags
            );
        }
    }
    for s in img
        .shmem
        .iter()
        .filter(|s| s.kind == rec::ShmemKind::SysvShm as i32)
    {
        println!(
            "\nSystem V shared memory {} (key {:#x}), {} bytes",
            s.sysv_id, s.sysv_key, s.size
        );
    }
    for s in &img.sysv_sem {
        println!(
            "System V semaphore set {} (key {:#x}): values {:?}",
            s.id, s.key, s.values
        );
    }
    for q in &img.sysv_msg {
        println!(
            "System V message queue {} (key {:#x}): {} message(s)",
            q.id,
            q.key,
            q.messages.len()
        );
    }
    if !img.net_lock.is_empty() {
        println!(
            "network lock: nftables table inet {} (removed by restore)",
            img.net_lock
        );
    }
    if let Some(v) = verified {
        println!("\nverified {} chunk(s) and {} file(s)", v.chunks, v.files);
    }
    Ok(())
}
