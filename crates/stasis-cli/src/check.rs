//! `stasis check`: the kernel features and programs stasis uses, each probed for real (as
//! `criu check` does). Exit 0 when every required one is present, 1 otherwise.

use crate::Failed;
use serde::Serialize;
use std::process::{Command, Stdio};

/// The oldest kernel with everything required (`pidfd_getfd`, 5.6).
const MIN_KERNEL: (u32, u32) = (5, 6);

/// One feature and what was found.
#[derive(Debug, Serialize)]
pub struct Item {
    /// Short name.
    pub name: &'static str,
    /// Whether checkpoint/restore cannot work at all without it.
    pub required: bool,
    /// Present and usable.
    pub ok: bool,
    /// What was found (version, error).
    pub detail: String,
    /// What needs it.
    pub needed_by: &'static str,
}

fn item(
    name: &'static str,
    required: bool,
    needed_by: &'static str,
    r: Result<String, String>,
) -> Item {
    let (ok, detail) = match r {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Item {
        name,
        required,
        ok,
        detail,
        needed_by,
    }
}

/// `MAJOR.MINOR` of a release string such as `6.18.44-fc-v1300`.
pub fn parse_release(r: &str) -> Option<(u32, u32)> {
    let mut it = r.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Is `[vdso]` sealed (VmFlags `sl`) in this `smaps` text?
pub fn vdso_sealed(smaps: &str) -> Option<bool> {
    let mut in_vdso = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_vdso = line.trim_end().ends_with("[vdso]");
        } else if in_vdso {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.split_whitespace().any(|f| f == "sl"));
            }
        }
    }
    None
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn kernel() -> Result<String, String> {
    let r = stasis_engine::checkpoint::kernel_release();
    match parse_release(&r) {
        Some(v) if v >= MIN_KERNEL => Ok(r),
        Some(_) => Err(format!("{r}: older than {}.{}", MIN_KERNEL.0, MIN_KERNEL.1)),
        None => Err(format!("cannot read the release ({r:?})")),
    }
}

fn root() -> Result<String, String> {
    if stasis_sys::sys::geteuid() == 0 {
        Ok("euid 0".into())
    } else {
        Err(format!("euid {}: run as root", stasis_sys::sys::geteuid()))
    }
}

/// PTRACE_SEIZE of a child of ours, and Yama's scope for the processes that are not.
fn ptrace() -> Result<String, String> {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(s) = scope.filter(|s| *s > 1) {
        return Err(format!(
            "Yama ptrace_scope is {s}: attaching to any process needs 0 or 1"
        ));
    }
    let mut child = Command::new("/bin/sleep")
        .arg("10")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start a child to seize: {e}"))?;
    let r = stasis_sys::ptrace::seize(child.id() as i32, 0);
    let _ = child.kill();
    let _ = child.wait();
    r.map_err(|e| format!("PTRACE_SEIZE: {e}"))?;
    Ok(match scope {
        Some(s) => format!("PTRACE_SEIZE works, Yama ptrace_scope {s}"),
        None => "PTRACE_SEIZE works".into(),
    })
}

/// PTRACE_SEIZE of a child of ours with seccomp suspended (CONFIG_CHECKPOINT_RESTORE, which
/// PTRACE_SECCOMP_GET_FILTER needs too; CAP_SYS_ADMIN; stasis itself not under seccomp).
fn seccomp_suspend() -> Result<String, String> {
    let mut child = Command::new("/bin/sleep")
        .arg("10")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start a child to seize: {e}"))?;
    let r = stasis_sys::ptrace::seize(child.id() as i32, stasis_sys::ptrace::OPT_SUSPEND_SECCOMP);
    let _ = child.kill();
    let _ = child.wait();
    r.map_err(|e| format!("PTRACE_O_SUSPEND_SECCOMP: {e}"))?;
    Ok("PTRACE_O_SUSPEND_SECCOMP".into())
}

fn pidfd_getfd() -> Result<String, String> {
    let pidfd = stasis_sys::sys::pidfd_open(stasis_sys::sys::getpid())
        .map_err(|e| format!("pidfd_open: {e}"))?;
    let f = std::fs::File::open("/dev/null").map_err(err)?;
    use std::os::fd::AsRawFd;
    stasis_sys::sys::pidfd_getfd(&pidfd, f.as_raw_fd()).map_err(|e| format!("pidfd_getfd: {e}"))?;
    Ok("pidfd_open, pidfd_getfd".into())
}

fn uffd_wp_async() -> Result<String, String> {
    let f = stasis_sys::probe::userfaultfd_features().map_err(|e| format!("userfaultfd: {e}"))?;
    if f & stasis_sys::probe::UFFD_FEATURE_WP_ASYNC != 0 {
        Ok(format!("features {f:#x}"))
    } else {
        Err(format!("userfaultfd without WP_ASYNC (features {f:#x})"))
    }
}

fn tcp_repair() -> Result<String, String> {
    let s = stasis_sys::net::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
        .map_err(|e| format!("socket: {e}"))?;
    use std::os::fd::AsRawFd;
    stasis_sys::net::setsockopt_int(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_REPAIR, 1)
        .map_err(|e| format!("TCP_REPAIR: {e} (needs CAP_NET_ADMIN)"))?;
    Ok("TCP_REPAIR on a socket".into())
}

fn cgroup_freeze() -> Result<String, String> {
    let cg = stasis_partition::cgroup::Cgroups::detect().map_err(err)?;
    if cg.freezer().is_none() {
        return Err(format!("no freezer ({})", cg.describe()));
    }
    Ok(cg.describe())
}

/// A program answering its version flag.
fn program(cmd: &str, arg: &str) -> Result<String, String> {
    let o = Command::new(cmd)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{cmd}`: {e}"))?;
    if !o.status.success() {
        return Err(format!("`{cmd} {arg}` failed ({})", o.status));
    }
    let out = String::from_utf8_lossy(&o.stdout);
    Ok(out.lines().next().unwrap_or("").trim().to_string())
}

fn vdso() -> Result<String, String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(err)?;
    match vdso_sealed(&smaps) {
        Some(false) => Ok("[vdso] movable".into()),
        Some(true) => {
            Err("[vdso] is sealed (CONFIG_MSEAL_SYSTEM_MAPPINGS): restore cannot move it".into())
        }
        None => Err("no [vdso] mapping".into()),
    }
}

/// Every item, probed now.
pub fn probe() -> Vec<Item> {
    vec![
        item(
            "root",
            true,
            "everything (ptrace of any process, set_tid, map_files)",
            root(),
        ),
        item("kernel", true, "everything (5.6 or later)", kernel()),
        item(
            "ptrace",
            true,
            "checkpoint (freezing a tree without signals)",
            ptrace(),
        ),
        item(
            "clone3 set_tid",
            true,
            "restore (same pids and tids)",
            stasis_sys::probe::clone3_set_tid()
                .map(|()| "clone3 honours set_tid".into())
                .map_err(|e| format!("clone3 set_tid: {e}")),
        ),
        item(
            "pidfd_getfd",
            true,
            "checkpoint and restore of files",
            pidfd_getfd(),
        ),
        item("vdso", true, "restore (moving [vdso] into place)", vdso()),
        item(
            "cgroup freeze",
            true,
            "partitions and the agent (freezing a partition at once)",
            cgroup_freeze(),
        ),
        item(
            "time namespace",
            false,
            "partitions (CLONE_NEWTIME: their clocks go on across restores; 5.6)",
            std::fs::metadata("/proc/self/timens_offsets")
                .map(|_| "/proc/self/timens_offsets".into())
                .map_err(|e| format!("no time namespaces (CONFIG_TIME_NS): {e}")),
        ),
        item(
            "timer ids",
            false,
            "POSIX timers (PR_TIMER_CREATE_RESTORE_IDS, 6.16)",
            stasis_sys::probe::timer_create_restore_ids()
                .map(|()| "PR_TIMER_CREATE_RESTORE_IDS".into())
                .map_err(|e| format!("PR_TIMER_CREATE_RESTORE_IDS: {e}")),
        ),
        item(
            "seccomp suspend",
            false,
            "processes under seccomp (containers): strict mode and filters",
            seccomp_suspend(),
        ),
        item(
            "TCP_REPAIR",
            false,
            "established TCP connections",
            tcp_repair(),
        ),
        item(
            "nft",
            false,
            "the network lock of TCP connections (Debian: nftables)",
            program("nft", "--version"),
        ),
        item(
            "ip",
            false,
            "--net veth partitions (Debian: iproute2)",
            program("ip", "-V"),
        ),
        item(
            "PAGEMAP_SCAN",
            false,
            "incremental images (planned; 6.7)",
            stasis_sys::probe::pagemap_scan()
                .map(|()| "ioctl on /proc/PID/pagemap".into())
                .map_err(|e| format!("PAGEMAP_SCAN: {e}")),
        ),
        item(
            "userfaultfd WP_ASYNC",
            false,
            "incremental images (planned; 6.7)",
            uffd_wp_async(),
        ),
    ]
}

/// `stasis check [--json]`.
pub fn run(json: bool) -> Result<(), Failed> {
    let items = probe();
    let missing: Vec<&str> = items
        .iter()
        .filter(|i| i.required && !i.ok)
        .map(|i| i.name)
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": missing.is_empty(),
                "items": items,
            }))
            .expect("serializable")
        );
    } else {
        for i in &items {
            let state = match (i.ok, i.required) {
                (true, _) => "ok",
                (false, true) => "MISSING",
                (false, false) => "missing",
            };
            println!(
                "{:<22} {:<8} {} — needed by {}",
                i.name, state, i.detail, i.needed_by
            );
        }
    }
    if missing.is_empty() {
        if !json {
            println!("every required feature is present");
        }
        Ok(())
    } else {
        Err((
            1,
            anyhow::anyhow!("required feature(s) missing: {}", missing.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(parse_release("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_release("6.7"), Some((6, 7)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
    }

    #[test]
    fn vdso_seal_is_read_from_smaps() {
        let open = "7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]\nSize:                  8 kB\nVmFlags: rd ex mr mw me de sd\n";
        let sealed = "7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]\nSize:                  8 kB\nVmFlags: rd ex mr mw me de sd sl\n";
        let other = "00400000-00401000 r-xp 00000000 08:01 1 /bin/x\nVmFlags: rd ex sl\n";
        assert_eq!(vdso_sealed(open), Some(false));
        assert_eq!(vdso_sealed(sealed), Some(true));
        assert_eq!(vdso_sealed(&format!("{other}{open}")), Some(false));
        assert_eq!(vdso_sealed(other), None);
    }
}
