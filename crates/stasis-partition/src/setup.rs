//! Building a partition's namespaces from inside them.
//!
//! Both `stasis run` (in the first process, before it execs the command) and a partition
//! restore (in the restorer, before the tree is recreated) run this in a fresh mount, IPC, UTS
//! and (optionally) network namespace:
//!
//! - the whole mount tree is made private, so nothing mounted here reaches the host and the
//!   host's later mounts do not come in;
//! - with `--rootfs DIR`, DIR is bind-mounted on itself and gets a small `/dev` (a tmpfs with
//!   the host's null, zero, full, random, urandom and tty bound in), `/proc` and `/sys`; the
//!   switch of root (`pivot_root`) is done by the first process itself;
//! - a devpts instance of its own (`newinstance`) on `/dev/pts` with `/dev/ptmx` pointing at it,
//!   so pty numbers start at 0 and can be recreated anywhere;
//! - an mqueue instance for the IPC namespace's POSIX queues, and (at `run`) a private tmpfs on
//!   `/dev/shm` for POSIX shared memory — a private mount, so it is saved with its content;
//! - the hostname, loopback up, and for `--net veth` the partition's end of the pair.
//!
//! `/proc` must be mounted by a process inside the new pid namespace (a procfs shows the pid
//! namespace of the process that mounts it): at `run` the first process does it; at restore
//! it is injected into the restored root.

use crate::state::{NetMode, Spec};
use stasis_sys::mount::{self as m, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC};
use std::path::{Path, PathBuf};

/// A setup step that failed.
#[derive(Debug, thiserror::Error)]
#[error("setting up the partition: {what}")]
pub struct SetupError {
    /// The step.
    pub what: String,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

fn step<T>(what: impl Into<String>, r: std::io::Result<T>) -> Result<T, SetupError> {
    r.map_err(|source| SetupError {
        what: what.into(),
        source,
    })
}

/// Host devices bound into a rootfs's /dev.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Where the partition's "/" is, seen from the setup process (before the root switch).
pub fn base(spec: &Spec) -> PathBuf {
    spec.rootfs.clone().unwrap_or_else(|| PathBuf::from("/"))
}

fn under(base: &Path, p: &str) -> PathBuf {
    base.join(p.trim_start_matches('/'))
}

/// Mount points set up by stasis itself, as the partition sees them (they are recreated, not
/// saved).
pub fn our_mounts(spec: &Spec) -> Vec<String> {
    let mut v: Vec<String> = ["/proc", "/dev/pts", "/dev/mqueue"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if spec.rootfs.is_some() {
        v.push("/".into());
        v.push("/dev".into());
        v.push("/sys".into());
        v.extend(DEV_NODES.iter().map(|n| format!("/dev/{n}")));
    } else {
        v.push("/dev/ptmx".into());
    }
    v
}

/// Make the (new) mount namespace private and mount what every partition gets, except
/// `/proc`. `shm`: mount a fresh tmpfs on /dev/shm (at `run`; a restore recreates the saved
/// one with its content).
pub fn base_mounts(spec: &Spec, shm: bool) -> Result<(), SetupError> {
    step(
        "making the mount namespace private",
        m::mount("", Path::new("/"), "", MS_REC | MS_PRIVATE, ""),
    )?;
    let b = base(spec);
    if let Some(root) = &spec.rootfs {
        step(
            format!("bind-mounting the root {}", root.display()),
            m::mount(&root.to_string_lossy(), root, "", MS_BIND | MS_REC, ""),
        )?;
        let dev = under(&b, "/dev");
        step(
            format!("creating {}", dev.display()),
            std::fs::create_dir_all(&dev),
        )?;
        step(
            "mounting a tmpfs on the root's /dev",
            m::mount("tmpfs", &dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k"),
        )?;
        for n in DEV_NODES {
            let p = dev.join(n);
            step(
                format!("creating {}", p.display()),
                std::fs::File::create(&p),
            )?;
            step(
                format!("binding /dev/{n}"),
                m::mount(&format!("/dev/{n}"), &p, "", MS_BIND, ""),
            )?;
        }
        for d in ["pts", "shm", "mqueue"] {
            step("creating /dev dirs", std::fs::create_dir_all(dev.join(d)))?;
        }
        for (l, t) in [
            ("ptmx", "pts/ptmx"),
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            step(
                format!("linking /dev/{l}"),
                std::os::unix::fs::symlink(t, dev.join(l)),
            )?;
        }
        for d in ["proc", "sys"] {
            step(
                "creating /proc and /sys",
                std::fs::create_dir_all(under(&b, d)),
            )?;
        }
        step(
            "mounting sysfs",
            m::mount(
                "sysfs",
                &under(&b, "/sys"),
                "sysfs",
                MS_NOSUID | MS_NODEV | MS_NOEXEC | m::MS_RDONLY,
                "",
            ),
        )?;
    }
    let pts = under(&b, "/dev/pts");
    step("creating /dev/pts", std::fs::create_dir_all(&pts))?;
    step(
        "mounting a devpts instance of its own on /dev/pts",
        m::mount(
            "devpts",
            &pts,
            "devpts",
            MS_NOSUID | MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
    )?;
    if spec.rootfs.is_none() {
        step(
            "binding /dev/pts/ptmx on /dev/ptmx",
            m::mount("/dev/pts/ptmx", Path::new("/dev/ptmx"), "", MS_BIND, ""),
        )?;
    }
    let mq = under(&b, "/dev/mqueue");
    if mq.is_dir() {
        step(
            "mounting an mqueue instance on /dev/mqueue",
            m::mount(
                "mqueue",
                &mq,
                "mqueue",
                MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "",
            ),
        )?;
    }
    if shm {
        let shm = under(&b, "/dev/shm");
        step("creating /dev/shm", std::fs::create_dir_all(&shm))?;
        step(
            "mounting a tmpfs on /dev/shm",
            m::mount("tmpfs", &shm, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
        )?;
    }
    Ok(())
}

/// Mount the partition's /proc (by a process of its pid namespace, at `base`).
pub fn mount_proc(base: &Path) -> Result<(), SetupError> {
    let p = under(base, "/proc");
    step(
        "mounting /proc",
        m::mount("proc", &p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
    )
}

/// Switch the calling process's root to the rootfs (pivot_root with the old root stacked on
/// the new one, then detached).
pub fn switch_root(rootfs: &Path) -> Result<(), SetupError> {
    step(
        format!("entering {}", rootfs.display()),
        std::env::set_current_dir(rootfs),
    )?;
    step(
        "pivot_root",
        stasis_sys::ns::pivot_root(Path::new("."), Path::new(".")),
    )?;
    step(
        "detaching the old root",
        m::umount(Path::new("."), m::MNT_DETACH),
    )?;
    step("chdir /", std::env::set_current_dir("/"))
}

/// Hostname and network inside the partition (the caller is in its UTS and network
/// namespaces). For veth, the pair must exist already with its inner end in this namespace.
pub fn uts_and_net(spec: &Spec) -> Result<(), SetupError> {
    step(
        format!("setting hostname {}", spec.hostname),
        stasis_sys::ns::sethostname(&spec.hostname),
    )?;
    if spec.net == NetMode::Host {
        return Ok(());
    }
    step("bringing loopback up", stasis_sys::ns::link_up("lo"))?;
    if let (NetMode::Veth, Some(v)) = (spec.net, &spec.veth) {
        let gw = v
            .host_addr
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        ip(&["addr", "add", &v.inner_addr, "dev", &v.inner_if])?;
        ip(&["link", "set", &v.inner_if, "up"])?;
        ip(&["route", "add", "default", "via", &gw])?;
    }
    Ok(())
}

/// Run `ip ARGS` (iproute2) and fail with its stderr.
pub fn ip(args: &[&str]) -> Result<(), SetupError> {
    ip_cmd(std::process::Command::new("ip").args(args), args)
}

/// Run a prepared `ip` command.
pub fn ip_cmd(cmd: &mut std::process::Command, args: &[&str]) -> Result<(), SetupError> {
    let out = step(
        format!("running ip {} (is iproute2 installed?)", args.join(" ")),
        cmd.stdin(std::process::Stdio::null()).output(),
    )?;
    if !out.status.success() {
        return Err(SetupError {
            what: format!("ip {}", args.join(" ")),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    Ok(())
}

/// The host's network and mount namespaces, for a process that has left them.
pub struct HostNs {
    /// Network namespace.
    pub net: std::os::fd::OwnedFd,
    /// Mount namespace (where `ip` is found).
    pub mnt: std::os::fd::OwnedFd,
}

fn ip_in(host: Option<&HostNs>, args: &[&str]) -> Result<(), SetupError> {
    let mut c = std::process::Command::new("ip");
    c.args(args);
    if let Some(h) = host {
        let net = step("duplicating a namespace fd", h.net.try_clone())?;
        let mnt = step("duplicating a namespace fd", h.mnt.try_clone())?;
        stasis_sys::ns::command_in_ns(&mut c, Some(net), Some(mnt));
    }
    ip_cmd(&mut c, args)
}

/// Create the veth pair from the host side: `host_if` stays in the host's namespace and
/// `inner_if` goes into the namespace of `pid`; the host end gets its address and comes up.
/// `host`: the host's namespaces when the caller is no longer in them.
pub fn veth_host_side(spec: &Spec, pid: i32, host: Option<&HostNs>) -> Result<(), SetupError> {
    let Some(v) = spec.veth.as_ref().filter(|_| spec.net == NetMode::Veth) else {
        return Ok(());
    };
    let pid = pid.to_string();
    // Creating the pair fails if an interface of that name exists: nothing is touched then.
    ip_in(
        host,
        &[
            "link",
            "add",
            &v.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &v.inner_if,
            "netns",
            &pid,
        ],
    )?;
    // From here the pair is ours: a later failure removes it again.
    let r = ip_in(host, &["addr", "add", &v.host_addr, "dev", &v.host_if])
        .and_then(|()| ip_in(host, &["link", "set", &v.host_if, "up"]));
    if r.is_err() {
        let _ = ip_in(host, &["link", "del", &v.host_if]);
    }
    r
}

/// Remove the host end of a veth pair (the inner end goes with its namespace).
pub fn veth_remove(spec: &Spec) {
    if let Some(v) = spec.veth.as_ref().filter(|_| spec.net == NetMode::Veth) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &v.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A veth configuration for partition `name`: interface names from a hash of the name, a /30
/// in 10.231.0.0/16 that no other partition of `taken` uses.
pub fn allocate_veth(name: &str, taken: &[String]) -> crate::state::Veth {
    let h = name_hash(name);
    let mut idx = h % 16384;
    loop {
        let a = idx * 4;
        let host = format!("10.231.{}.{}/30", a / 256, a % 256 + 1);
        if !taken.contains(&host) {
            return crate::state::Veth {
                host_if: format!("sv{:08x}", h),
                inner_if: "eth0".into(),
                inner_addr: format!("10.231.{}.{}/30", a / 256, a % 256 + 2),
                host_addr: host,
            };
        }
        idx = (idx + 1) % 16384;
    }
}

fn name_hash(s: &str) -> u32 {
    // FNV-1a: stable across versions and enough to spread names.
    let mut h: u32 = 0x811c9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_allocation_skips_taken() {
        let a = allocate_veth("web", &[]);
        assert!(a.host_if.len() <= 15);
        let b = allocate_veth("web", std::slice::from_ref(&a.host_addr));
        assert_ne!(a.host_addr, b.host_addr);
        assert!(b.inner_addr.ends_with("/30"));
    }
}
