//! Restoring a whole partition.
//!
//! Runs in a restorer forked by the partition's monitor (so the restored first process ends up
//! the monitor's child once the restorer exits; the monitor is a child subreaper):
//!
//! 1. open the image (its directory is reached later through `/proc/self/fd/N`) and the host's
//!    root (for the cgroup hierarchies);
//! 2. `unshare` new mount, IPC, UTS and (unless `--net host`) network namespaces: these become
//!    the partition's; set them up as `stasis run` does ([`crate::setup`]), then recreate the
//!    saved private mounts with their content and set the saved hostname;
//! 3. stay in that mount namespace — files the restorer opens for the tasks must belong to it
//!    (a file opened through a copy of the namespace would keep the copy's mounts, and its
//!    path would read wrong once the copy is gone) — with the host's procfs on /proc (the
//!    engine works with host pids) and, for a rootfs, chrooted into it;
//! 4. run the engine: the root is created as pid 1 of a new pid namespace, joins the
//!    partition's mount namespace, and — through the root hook, while still blank — is moved
//!    into the cgroup and switches to the rootfs (pivot_root); once every task has its memory,
//!    the hook replaces the host's procfs by the partition's own /proc (the restorer reads no
//!    /proc after that); the tree is rebuilt with the same pids inside the namespace. The partition's stdout
//!    and stderr pipe (an object outside the tree) is replaced by the new monitor's pipe.
//!
//! Any failure before the tasks run kills what was created (the engine's guard) and the
//! namespaces vanish with the restorer.

use crate::helper::{self, HelperError, Message};
use crate::monitor::chain;
use crate::setup;
use crate::state::Record;
use stasis_engine::{Cause, RestoreOptions, RootHook, RootStage};
use stasis_sys::ns::{self, Forked};
use stasis_sys::wait::{wait_exit, Block, Who};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Fork the restorer and wait for its result (progress handed to `on_progress`). Called by
/// the monitor.
pub fn start(
    rec: &Record,
    group: &str,
    dir: &Path,
    workers: usize,
    trust: &stasis_image::Trust,
    log_w: OwnedFd,
    on_progress: &mut dyn FnMut(&helper::Progress),
) -> Result<i32, HelperError> {
    let (mut res_r, res_w) =
        std::io::pipe().map_err(|e| rep(Cause::Other, format!("pipe: {e}")))?;
    match ns::fork_into(0, None) {
        Err(e) => Err(rep(Cause::Other, format!("fork: {e}"))),
        Ok(Forked::Child) => {
            drop(res_r);
            let mut w = res_w;
            let out = match restorer(rec, group, dir, workers, trust, &log_w, &mut w) {
                Ok(pid) => Message::Started { pid },
                Err(e) => Message::Failed(e),
            };
            let _ = helper::send(&mut w, &out);
            drop(w);
            ns::exit_now(0);
        }
        Ok(Forked::Parent(child)) => {
            drop(res_w);
            drop(log_w);
            // A restorer that dies without its final message is reaped (for its status) at once.
            let mut reaped = false;
            let r = helper::recv_reply(&mut res_r, on_progress, |_| {
                let s = wait_exit(Who::Pid(child), Block::Yes);
                reaped = true;
                rep(
                    Cause::Other,
                    format!("the restorer died ({s:?}) without a result"),
                )
            });
            if !reaped {
                let _ = wait_exit(Who::Pid(child), Block::Yes);
            }
            match r {
                Message::Started { pid } => Ok(pid),
                Message::Failed(e) => Err(e),
                m => Err(rep(Cause::Other, format!("the restorer answered {m:?}"))),
            }
        }
    }
}

fn rep(cause: Cause, error: impl Into<String>) -> HelperError {
    HelperError::of_cause(cause, error)
}

fn restorer(
    rec: &Record,
    group: &str,
    dir: &Path,
    workers: usize,
    trust: &stasis_image::Trust,
    log_w: &OwnedFd,
    w: &mut std::io::PipeWriter,
) -> Result<i32, HelperError> {
    let reader = stasis_image::ImageReader::open(dir).map_err(|e| {
        rep(
            Cause::BadImage,
            format!("cannot open image {}: {}", dir.display(), chain(&e)),
        )
    })?;
    // Nothing of an image that is not trusted is used (its mounts' content included).
    stasis_image::trust::check(&reader, trust).map_err(|e| {
        rep(
            Cause::BadImage,
            chain(&stasis_engine::restore::trust_refusal(dir, e)),
        )
    })?;
    let pimg = crate::image::read(&reader)
        .map_err(|e| {
            rep(
                Cause::BadImage,
                format!("{}: partition.img {e}", dir.display()),
            )
        })?
        .ok_or_else(|| {
            rep(
                Cause::BadImage,
                format!("{} is not a partition image", dir.display()),
            )
        })?;
    // The record's spec: the image's, possibly with a new veth (restored under another name).
    let spec = rec.spec.clone();
    // The engine reaches the image through the directory the reader opened (and checked).
    let dir_fd: OwnedFd = reader
        .handle()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| rep(Cause::Other, format!("opening {}: {e}", dir.display())))?;
    let root_fd: OwnedFd = std::fs::File::open("/")
        .map_err(|e| rep(Cause::Other, format!("opening /: {e}")))?
        .into();
    let ppid = std::os::unix::process::parent_id() as i32;
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| rep(Cause::Other, format!("reading /proc/self/mountinfo: {e}")))?;

    // 2. The partition's namespaces.
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if spec.net != crate::state::NetMode::Host {
        flags |= libc::CLONE_NEWNET;
    }
    ns::unshare(flags).map_err(|e| {
        rep(
            Cause::Other,
            format!("creating the partition's namespaces: {e}"),
        )
    })?;
    setup::base_mounts(&spec, false).map_err(|e| rep(Cause::Other, chain(&e)))?;
    if spec.net == crate::state::NetMode::Veth {
        // The pair is made from the host side (the monitor's namespaces).
        let host = setup::HostNs {
            net: ns::open_ns(ppid, "net")
                .map_err(|e| rep(Cause::Other, format!("host netns: {e}")))?,
            mnt: ns::open_ns(ppid, "mnt")
                .map_err(|e| rep(Cause::Other, format!("host mntns: {e}")))?,
        };
        setup::veth_host_side(&spec, stasis_sys::sys::getpid(), Some(&host))
            .map_err(|e| rep(Cause::Other, chain(&e)))?;
    }
    let mut s2 = spec.clone();
    if !pimg.raw.hostname.is_empty() {
        s2.hostname = pimg.raw.hostname.clone();
    }
    setup::uts_and_net(&s2).map_err(|e| rep(Cause::Other, chain(&e)))?;
    let base = setup::base(&spec);
    for m in &pimg.raw.mounts {
        let mut m = m.clone();
        m.mountpoint = base
            .join(m.mountpoint.trim_start_matches('/'))
            .to_string_lossy()
            .into_owned();
        if m.source_in_partition {
            // A bind of part of a saved tmpfs: its source is a partition path too.
            m.host_path = base
                .join(m.host_path.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned();
        }
        crate::mounts::restore_mount(&m, &reader).map_err(|e| {
            rep(
                Cause::Other,
                format!("restoring mount {}: {}", m.mountpoint, chain(&e)),
            )
        })?;
    }
    drop(reader);

    // 3. The restorer stays in the partition's mount namespace (files it opens for the tasks
    // must belong to it), with the host's procfs on /proc until the root hook replaces it.
    let part_mnt = ns::open_ns(stasis_sys::sys::getpid(), "mnt")
        .map_err(|e| rep(Cause::Other, format!("opening our mount namespace: {e}")))?;
    if let Some(rootfs) = &spec.rootfs {
        use stasis_sys::mount as m;
        let proc_dir = rootfs.join("proc");
        m::mount(
            "proc",
            &proc_dir,
            "proc",
            m::MS_NOSUID | m::MS_NODEV | m::MS_NOEXEC,
            "",
        )
        .map_err(|e| {
            rep(
                Cause::Other,
                format!("mounting the host's procfs for the restorer: {e}"),
            )
        })?;
        ns::chroot(rootfs)
            .map_err(|e| rep(Cause::Other, format!("chroot {}: {e}", rootfs.display())))?;
        std::env::set_current_dir("/").map_err(|e| rep(Cause::Other, format!("chdir /: {e}")))?;
    }
    let cg = crate::checkpoint::cgroups_via(&root_fd, &host_mounts)
        .map_err(|e| rep(Cause::Other, chain(&e)))?;

    // 4. The engine.
    let group = group.to_string();
    let rootfs = spec.rootfs.clone();
    let hook = RootHook::new(move |stage, host_pid, r| {
        let fail = |m: String| stasis_engine::Failure::msg(host_pid, m);
        match stage {
            RootStage::Created => {
                cg.attach(&group, host_pid)
                    .map_err(|e| fail(format!("moving the root into its cgroup: {}", chain(&e))))?;
                if let Some(rootfs) = &rootfs {
                    let p = r.put_str(0, &rootfs.to_string_lossy())?;
                    r.call("chdir(rootfs)", libc::SYS_chdir, &[p])?;
                    let dot = r.put_str(0, ".")?;
                    r.call("pivot_root(., .)", libc::SYS_pivot_root, &[dot, dot])?;
                    r.call(
                        "umount2(., MNT_DETACH)",
                        libc::SYS_umount2,
                        &[dot, libc::MNT_DETACH as u64],
                    )?;
                    let slash = r.put_str(0, "/")?;
                    r.call("chdir(/)", libc::SYS_chdir, &[slash])?;
                }
            }
            RootStage::Filled => {
                // The host's procfs goes; the partition's (mounted from inside its pid
                // namespace) comes.
                let src = r.put_str(0, "proc")?;
                let tgt = r.put_str(64, "/proc")?;
                r.call(
                    "umount2(/proc, MNT_DETACH)",
                    libc::SYS_umount2,
                    &[tgt, libc::MNT_DETACH as u64],
                )?;
                r.call(
                    "mounting the partition's /proc",
                    libc::SYS_mount,
                    &[
                        src,
                        tgt,
                        src,
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        0,
                    ],
                )?;
            }
        }
        Ok(())
    });
    let mut inherit = HashMap::new();
    if pimg.raw.log_pipe_ino != 0 {
        inherit.insert(
            format!("pipe:[{}]", pimg.raw.log_pipe_ino),
            log_w.as_fd().as_raw_fd(),
        );
    }
    // The partition's time namespace, given to the root when the engine creates it: its
    // clocks go on from where they were when it was frozen (no process of ours is created
    // before the root, so the offsets are still ours to set).
    ns::unshare(libc::CLONE_NEWTIME).map_err(|e| {
        rep(
            Cause::Other,
            format!("creating the partition's time namespace: {e}"),
        )
    })?;
    crate::image::offsets_continuing(pimg.raw.monotonic_ns, pimg.raw.boottime_ns)
        .and_then(ns::set_timens_offsets)
        .map_err(|e| {
            rep(
                Cause::Other,
                format!("setting the partition's clock offsets: {e}"),
            )
        })?;
    let fd_path = format!("/proc/self/fd/{}", dir_fd.as_raw_fd());
    let progress = std::sync::Arc::new(stasis_engine::progress::Progress::default());
    let opts = RestoreOptions {
        progress: Some(progress.clone()),
        dir: PathBuf::from(&fd_path),
        inherit,
        workers,
        pid_wait: Duration::from_secs(0),
        new_pid_ns: true,
        root_mnt_ns: Some(part_mnt.as_raw_fd()),
        on_root: Some(hook),
        trust: trust.clone(),
    };
    // The total is not known ahead (chunks are compressed): 0.
    let r = helper::with_progress(&progress, 0, w.try_clone().ok(), || {
        stasis_engine::restore(&opts)
    });
    match r {
        Ok(s) => Ok(s.root_pid),
        Err(e) => {
            // Errors name the image as the operator gave it, not our handle on it.
            Err(rep(
                e.cause(),
                chain(&e).replace(&fd_path, &dir.display().to_string()),
            ))
        }
    }
}
