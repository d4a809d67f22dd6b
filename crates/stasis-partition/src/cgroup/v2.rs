//! cgroup v2: the unified hierarchy. Controllers a group needs are enabled in each ancestor's
//! `cgroup.subtree_control`; freezing uses `cgroup.freeze`/`cgroup.events`, which every
//! non-root group has whatever controllers are enabled.

use super::parse::{self, keyed};
use super::settle_freeze;
use super::{
    check_group, check_memory, check_pids, cpu_quota_us, read, read_optional, read_procs,
    read_u64_or_zero, rmdir, wait_until, write, Backend, CgroupError, Limits, Mounts, Usage,
    CPU_PERIOD_US,
};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// v2 controllers this crate uses, in the order they are listed.
const USED: &[&str] = &["memory", "cpu", "io", "pids"];

/// The cgroup v2 backend over one mounted unified hierarchy.
#[derive(Debug, Clone)]
pub struct V2 {
    mount: PathBuf,
    available: Vec<String>,
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

impl V2 {
    /// The hierarchy mounted at `mount`; reads the controllers its root offers
    /// (`cgroup.controllers`).
    pub fn new(mount: impl Into<PathBuf>) -> Result<V2, CgroupError> {
        let mount = mount.into();
        let available = words(&read(&mount.join("cgroup.controllers"))?);
        Ok(V2 { mount, available })
    }

    /// The v2 hierarchy of `/proc/self/mountinfo`.
    pub fn detect() -> Result<V2, CgroupError> {
        V2::from_mounts(Mounts::detect()?)
    }

    /// The v2 hierarchy of a mountinfo text.
    pub fn from_mountinfo(text: &str) -> Result<V2, CgroupError> {
        V2::from_mounts(Mounts::parse(text)?)
    }

    fn from_mounts(m: Mounts) -> Result<V2, CgroupError> {
        let mount = m.v2.ok_or(CgroupError::VersionNotMounted {
            version: "v2",
            hint: ": mount it (mount -t cgroup2 none /sys/fs/cgroup) or use v1",
        })?;
        V2::new(mount)
    }

    /// Mount point.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Every controller the root offers (`cgroup.controllers`), used here or not.
    pub fn available(&self) -> &[String] {
        &self.available
    }

    /// True when controller `c` is one this crate uses and the root offers it.
    pub fn has(&self, c: &str) -> bool {
        USED.contains(&c) && self.available.iter().any(|a| a == c)
    }

    /// Directory of `group` (it may not exist).
    pub fn path(&self, group: &str) -> Option<PathBuf> {
        check_group(group).ok().map(|g| self.mount.join(g))
    }

    fn dir(&self, group: &str) -> Result<PathBuf, CgroupError> {
        let dir = self.mount.join(check_group(group)?);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(CgroupError::NotFound { path: dir })
        }
    }

    /// Enable in `dir`'s `cgroup.subtree_control` the used controllers `dir` offers that are
    /// not enabled yet.
    fn enable_subtree(&self, dir: &Path) -> Result<(), CgroupError> {
        let Some(offered) = read_optional(&dir.join("cgroup.controllers"))? else {
            return Ok(());
        };
        let offered = words(&offered);
        let control = dir.join("cgroup.subtree_control");
        let enabled = words(&read_optional(&control)?.unwrap_or_default());
        let missing: Vec<String> = USED
            .iter()
            .filter(|c| offered.iter().any(|o| o == *c) && !enabled.iter().any(|e| e == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        write(&control, &missing.join(" "))?;
        tracing::debug!(dir = %dir.display(), controllers = ?missing, "enabled v2 controllers");
        Ok(())
    }

    /// Controllers enabled for `dir` (its `cgroup.controllers`).
    fn enabled(dir: &Path) -> Result<Vec<String>, CgroupError> {
        Ok(words(
            &read_optional(&dir.join("cgroup.controllers"))?.unwrap_or_default(),
        ))
    }

    fn unavailable(&self, controller: &'static str, dir: &Path) -> CgroupError {
        let where_ = if self.has(controller) {
            format!(
                " for {} (not enabled in its parent's cgroup.subtree_control; create the group \
                 through this backend)",
                dir.display()
            )
        } else {
            let list = if self.available.is_empty() {
                "none".to_owned()
            } else {
                self.available.join(" ")
            };
            format!(" at {} (it offers: {list})", self.mount.display())
        };
        CgroupError::ControllerUnavailable {
            controller,
            version: "v2",
            where_,
        }
    }
}

impl Backend for V2 {
    fn version(&self) -> &'static str {
        "v2"
    }

    fn controllers(&self) -> Vec<String> {
        USED.iter()
            .filter(|c| self.has(c))
            .map(|c| (*c).to_owned())
            .collect()
    }

    /// `cgroup.freeze` exists in every non-root v2 group since Linux 5.2.
    fn can_freeze(&self) -> bool {
        true
    }

    fn create(&self, group: &str) -> Result<(), CgroupError> {
        let g = check_group(group)?;
        let mut dir = self.mount.clone();
        for comp in g.components() {
            self.enable_subtree(&dir)?;
            dir.push(comp);
            if dir.is_dir() {
                continue;
            }
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(source) => return Err(CgroupError::Create { path: dir, source }),
            }
        }
        tracing::debug!(group, "created v2 cgroup");
        Ok(())
    }

    fn exists(&self, group: &str) -> bool {
        self.dir(group).is_ok()
    }

    fn attach(&self, group: &str, pid: i32) -> Result<(), CgroupError> {
        let path = self.dir(group)?.join("cgroup.procs");
        write(&path, &pid.to_string()).map_err(|e| match e {
            CgroupError::Write { path, source, .. } => CgroupError::Attach { pid, path, source },
            other => other,
        })?;
        tracing::debug!(group, pid, "attached to v2 cgroup");
        Ok(())
    }

    fn procs(&self, group: &str) -> Result<Vec<i32>, CgroupError> {
        let mut p = read_procs(&self.dir(group)?.join("cgroup.procs"))?;
        p.sort_unstable();
        p.dedup();
        Ok(p)
    }

    fn set_limits(&self, group: &str, l: &Limits) -> Result<(), CgroupError> {
        let dir = self.dir(group)?;
        let enabled = V2::enabled(&dir)?;
        let on = |c: &str| enabled.iter().any(|e| e == c);
        // Check everything before writing anything.
        for (asked, c) in [
            (l.memory_bytes.is_some(), "memory"),
            (l.cpus.is_some(), "cpu"),
            (l.pids.is_some(), "pids"),
        ] {
            if asked && !on(c) {
                return Err(self.unavailable(c, &dir));
            }
        }
        if let Some(m) = l.memory_bytes {
            check_memory(m)?;
        }
        let quota = l.cpus.map(cpu_quota_us).transpose()?;
        if let Some(p) = l.pids {
            check_pids(p)?;
        }

        if on("memory") {
            let v = l.memory_bytes.map_or("max".to_owned(), |m| m.to_string());
            write(&dir.join("memory.max"), &v)?;
        }
        if on("cpu") {
            let q = quota.map_or("max".to_owned(), |q| q.to_string());
            write(&dir.join("cpu.max"), &format!("{q} {CPU_PERIOD_US}"))?;
        }
        if on("pids") {
            let v = l.pids.map_or("max".to_owned(), |p| p.to_string());
            write(&dir.join("pids.max"), &v)?;
        }
        tracing::debug!(group, ?l, "set v2 limits");
        Ok(())
    }

    fn limits(&self, group: &str) -> Result<Limits, CgroupError> {
        let dir = self.dir(group)?;
        let enabled = V2::enabled(&dir)?;
        let on = |c: &str| enabled.iter().any(|e| e == c);
        let get = |name: &str, f: fn(&str) -> Result<Option<u64>, parse::ParseError>| {
            let p = dir.join(name);
            f(&read(&p)?).map_err(|what| CgroupError::Parse {
                path: p,
                what: what.0,
            })
        };
        let mut l = Limits::default();
        if on("memory") {
            l.memory_bytes = get("memory.max", parse::parse_max)?;
        }
        if on("cpu") {
            let p = dir.join("cpu.max");
            l.cpus = parse::parse_cpu_max(&read(&p)?).map_err(|what| CgroupError::Parse {
                path: p,
                what: what.0,
            })?;
        }
        if on("pids") {
            l.pids = get("pids.max", parse::parse_max)?;
        }
        Ok(l)
    }

    fn usage(&self, group: &str) -> Result<Usage, CgroupError> {
        let dir = self.dir(group)?;
        let keyed_file = |name: &str| -> Result<Vec<(String, u64)>, CgroupError> {
            let p = dir.join(name);
            match read_optional(&p)? {
                None => Ok(Vec::new()),
                Some(text) => parse::parse_flat_keyed(&text).map_err(|what| CgroupError::Parse {
                    path: p,
                    what: what.0,
                }),
            }
        };
        let mut u = Usage::default();
        // cpu.stat exists in every group, with or without the cpu controller.
        let cpu = keyed_file("cpu.stat")?;
        u.cpu_ns = keyed(&cpu, "usage_usec").unwrap_or(0).saturating_mul(1000);
        u.memory_bytes = read_u64_or_zero(&dir.join("memory.current"))?;
        u.memory_peak_bytes = read_u64_or_zero(&dir.join("memory.peak"))?;
        u.oom_kills = keyed(&keyed_file("memory.events")?, "oom_kill").unwrap_or(0);
        u.pids = read_u64_or_zero(&dir.join("pids.current"))?;
        let p = dir.join("io.stat");
        if let Some(text) = read_optional(&p)? {
            let io = parse::parse_io_stat(&text).map_err(|what| CgroupError::Parse {
                path: p,
                what: what.0,
            })?;
            u.io_read_bytes = io.read;
            u.io_write_bytes = io.written;
        }
        Ok(u)
    }

    fn freeze(&self, group: &str, timeout: Duration) -> Result<(), CgroupError> {
        let dir = self.dir(group)?;
        let freeze = dir.join("cgroup.freeze");
        let events = dir.join("cgroup.events");
        write(&freeze, "1")?;
        let res = wait_until(timeout, || {
            let kv =
                parse::parse_flat_keyed(&read(&events)?).map_err(|what| CgroupError::Parse {
                    path: events.clone(),
                    what: what.0,
                })?;
            let frozen = keyed(&kv, "frozen");
            Ok((frozen == Some(1), format!("frozen {}", frozen.unwrap_or(0))))
        });
        settle_freeze("v2", group, dir, timeout, res, || write(&freeze, "0"))
    }

    fn thaw(&self, group: &str) -> Result<(), CgroupError> {
        write(&self.dir(group)?.join("cgroup.freeze"), "0")?;
        tracing::debug!(group, "v2 cgroup thawed");
        Ok(())
    }

    fn remove(&self, group: &str) -> Result<(), CgroupError> {
        let dir = self.mount.join(check_group(group)?);
        if !dir.is_dir() {
            return Ok(());
        }
        let procs = || read_procs(&dir.join("cgroup.procs")).unwrap_or_default();
        let pids = procs();
        if !pids.is_empty() {
            return Err(CgroupError::Busy {
                path: dir,
                pids,
                source: None,
            });
        }
        rmdir(&dir, procs)?;
        tracing::debug!(group, "removed v2 cgroup");
        Ok(())
    }
}
