//! cgroup v1: one hierarchy per controller set (`memory`, `cpu`, `cpuacct`, `pids`, `blkio`,
//! `freezer`, possibly co-mounted like `cpu,cpuacct`). A group is a directory of the same
//! relative path in each hierarchy used.

use super::parse::{self, keyed};
use super::settle_freeze;
use super::{
    check_group, check_memory, check_pids, cpu_quota_us, read, read_optional, read_procs, read_u64,
    read_u64_or_zero, rmdir, wait_until, write, Backend, CgroupError, Limits, Mounts, Usage,
    CPU_PERIOD_US,
};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// v1 controllers this crate uses, in the order they are listed.
const USED: &[&str] = &["memory", "cpu", "cpuacct", "pids", "blkio", "freezer"];

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Mount point.
    pub mount: PathBuf,
    /// Controllers attached to it (from the mount's superblock options).
    pub controllers: Vec<String>,
}

impl V1Hierarchy {
    fn has(&self, c: &str) -> bool {
        self.controllers.iter().any(|x| x == c)
    }
}

/// The cgroup v1 backend: the hierarchies carrying `memory`, `cpu`, `cpuacct`, `pids`,
/// `blkio` and (unless [`V1::without_freezer`]) `freezer`.
#[derive(Debug, Clone)]
pub struct V1 {
    hierarchies: Vec<V1Hierarchy>,
    use_freezer: bool,
}

impl V1 {
    /// A backend over these hierarchies (those without a used controller are ignored).
    pub fn new(hierarchies: Vec<V1Hierarchy>) -> V1 {
        V1 {
            hierarchies,
            use_freezer: true,
        }
    }

    /// The v1 hierarchies of `/proc/self/mountinfo`, freezer included.
    pub fn detect() -> Result<V1, CgroupError> {
        V1::from_mounts(Mounts::detect()?)
    }

    /// The v1 hierarchies of a mountinfo text, freezer included.
    pub fn from_mountinfo(text: &str) -> Result<V1, CgroupError> {
        V1::from_mounts(Mounts::parse(text)?)
    }

    fn from_mounts(m: Mounts) -> Result<V1, CgroupError> {
        let v1 = V1::new(m.v1);
        if v1.controllers().is_empty() {
            return Err(CgroupError::VersionNotMounted {
                version: "v1",
                hint: ": no cgroup mount carries memory, cpu, cpuacct, pids, blkio or freezer",
            });
        }
        Ok(v1)
    }

    /// The same hierarchies without using the freezer (a hybrid host freezes through v2).
    pub fn without_freezer(&self) -> V1 {
        V1 {
            hierarchies: self.hierarchies.clone(),
            use_freezer: false,
        }
    }

    /// All hierarchies given, used or not.
    pub fn hierarchies(&self) -> &[V1Hierarchy] {
        &self.hierarchies
    }

    fn uses(&self, c: &str) -> bool {
        USED.contains(&c) && (c != "freezer" || self.use_freezer)
    }

    fn hierarchy(&self, c: &str) -> Option<&V1Hierarchy> {
        if !self.uses(c) {
            return None;
        }
        self.hierarchies.iter().find(|h| h.has(c))
    }

    /// True when the backend uses controller `c` and a hierarchy carries it.
    pub fn has(&self, c: &str) -> bool {
        self.hierarchy(c).is_some()
    }

    /// Mount point of the hierarchy carrying controller `c`, if used.
    pub fn mount_of(&self, c: &str) -> Option<&Path> {
        self.hierarchy(c).map(|h| h.mount.as_path())
    }

    /// Directory of `group` in the hierarchy carrying controller `c` (it may not exist).
    pub fn path(&self, c: &str, group: &str) -> Option<PathBuf> {
        let g = check_group(group).ok()?;
        self.mount_of(c).map(|m| m.join(g))
    }

    /// Hierarchies carrying at least one used controller (each once).
    fn used(&self) -> impl Iterator<Item = &V1Hierarchy> {
        self.hierarchies
            .iter()
            .filter(|h| h.controllers.iter().any(|c| self.uses(c)))
    }

    /// Directory of an existing group in the hierarchy of `c`.
    fn dir(&self, c: &str, group: &Path) -> Result<Option<PathBuf>, CgroupError> {
        let Some(h) = self.hierarchy(c) else {
            return Ok(None);
        };
        existing(&h.mount, group).map(Some)
    }

    fn unavailable(&self, controller: &'static str) -> CgroupError {
        CgroupError::ControllerUnavailable {
            controller,
            version: "v1",
            where_: String::new(),
        }
    }
}

fn existing(mount: &Path, group: &Path) -> Result<PathBuf, CgroupError> {
    let dir = mount.join(group);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(CgroupError::NotFound { path: dir })
    }
}

/// A new cpuset group has empty `cpuset.cpus`/`cpuset.mems` and refuses tasks: copy the
/// parent's (only matters when cpuset is co-mounted with a controller we use).
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if let Some(cur) = read_optional(&dir.join(f))? {
            if cur.trim().is_empty() {
                let from = read(&parent.join(f))?;
                write(&dir.join(f), from.trim())?;
            }
        }
    }
    Ok(())
}

/// v1 blkio only counts I/O once block throttling is active on the disk's queue, which the
/// first throttle rule written for that disk does. Write a "no limit" rule (`MAJ:MIN 0`) for
/// every disk that has no rule in this group yet; failures only mean no I/O accounting.
fn activate_blkio_accounting(dir: &Path) {
    let rules = dir.join("blkio.throttle.read_bps_device");
    let listed: BTreeSet<String> = match read_optional(&rules) {
        Ok(Some(text)) => text
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect(),
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read blkio rules; I/O may not be accounted");
            return;
        }
    };
    let disks = match std::fs::read_dir("/sys/block") {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list /sys/block; I/O may not be accounted");
            return;
        }
    };
    for disk in disks.flatten() {
        let Ok(dev) = std::fs::read_to_string(disk.path().join("dev")) else {
            continue;
        };
        let dev = dev.trim();
        if dev.is_empty() || listed.contains(dev) {
            continue;
        }
        if let Err(e) = write(&rules, &format!("{dev} 0")) {
            tracing::debug!(disk = ?disk.file_name(), error = %e,
                "cannot activate blkio throttling; I/O on this disk is not accounted");
        }
    }
}

impl Backend for V1 {
    fn version(&self) -> &'static str {
        "v1"
    }

    fn controllers(&self) -> Vec<String> {
        USED.iter()
            .filter(|c| self.has(c))
            .map(|c| (*c).to_owned())
            .collect()
    }

    fn can_freeze(&self) -> bool {
        self.has("freezer")
    }

    fn create(&self, group: &str) -> Result<(), CgroupError> {
        let g = check_group(group)?;
        for h in self.used() {
            let mut dir = h.mount.clone();
            for comp in g.components() {
                dir.push(comp);
                if dir.is_dir() {
                    continue;
                }
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                    Err(source) => return Err(CgroupError::Create { path: dir, source }),
                }
                if h.has("cpuset") {
                    inherit_cpuset(&dir)?;
                }
            }
            if h.has("blkio") {
                activate_blkio_accounting(&dir);
            }
        }
        tracing::debug!(group, "created v1 cgroup");
        Ok(())
    }

    fn exists(&self, group: &str) -> bool {
        let Ok(g) = check_group(group) else {
            return false;
        };
        let mut used = self.used().peekable();
        used.peek().is_some() && used.all(|h| h.mount.join(g).is_dir())
    }

    fn attach(&self, group: &str, pid: i32) -> Result<(), CgroupError> {
        let g = check_group(group)?;
        let dirs = self
            .used()
            .map(|h| existing(&h.mount, g))
            .collect::<Result<Vec<_>, _>>()?;
        for dir in dirs {
            let path = dir.join("cgroup.procs");
            write(&path, &pid.to_string()).map_err(|e| match e {
                CgroupError::Write { path, source, .. } => {
                    CgroupError::Attach { pid, path, source }
                }
                other => other,
            })?;
        }
        tracing::debug!(group, pid, "attached to v1 cgroup");
        Ok(())
    }

    fn procs(&self, group: &str) -> Result<Vec<i32>, CgroupError> {
        let g = check_group(group)?;
        let mut all = BTreeSet::new();
        for h in self.used() {
            all.extend(read_procs(&existing(&h.mount, g)?.join("cgroup.procs"))?);
        }
        Ok(all.into_iter().collect())
    }

    fn set_limits(&self, group: &str, l: &Limits) -> Result<(), CgroupError> {
        let g = check_group(group)?;
        // Check everything before writing anything.
        if l.memory_bytes.is_some() && !self.has("memory") {
            return Err(self.unavailable("memory"));
        }
        if l.cpus.is_some() && !self.has("cpu") {
            return Err(self.unavailable("cpu"));
        }
        if l.pids.is_some() && !self.has("pids") {
            return Err(self.unavailable("pids"));
        }
        if let Some(m) = l.memory_bytes {
            check_memory(m)?;
        }
        let quota = l.cpus.map(cpu_quota_us).transpose()?;
        if let Some(p) = l.pids {
            check_pids(p)?;
        }
        let mem_dir = self.dir("memory", g)?;
        let cpu_dir = self.dir("cpu", g)?;
        let pids_dir = self.dir("pids", g)?;

        if let Some(dir) = mem_dir {
            let v = l.memory_bytes.map_or("-1".to_owned(), |m| m.to_string());
            write(&dir.join("memory.limit_in_bytes"), &v)?;
        }
        if let Some(dir) = cpu_dir {
            write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            let v = quota.map_or("-1".to_owned(), |q| q.to_string());
            write(&dir.join("cpu.cfs_quota_us"), &v)?;
        }
        if let Some(dir) = pids_dir {
            let v = l.pids.map_or("max".to_owned(), |p| p.to_string());
            write(&dir.join("pids.max"), &v)?;
        }
        tracing::debug!(group, ?l, "set v1 limits");
        Ok(())
    }

    fn limits(&self, group: &str) -> Result<Limits, CgroupError> {
        let g = check_group(group)?;
        let parse_err = |path: &Path| {
            let path = path.to_owned();
            move |what: parse::ParseError| CgroupError::Parse { path, what: what.0 }
        };
        let mut l = Limits::default();
        if let Some(dir) = self.dir("memory", g)? {
            let p = dir.join("memory.limit_in_bytes");
            l.memory_bytes = parse::parse_v1_limit(&read(&p)?).map_err(parse_err(&p))?;
        }
        if let Some(dir) = self.dir("cpu", g)? {
            let qp = dir.join("cpu.cfs_quota_us");
            let q = read(&qp)?;
            let quota: i64 = q.trim().parse().map_err(|_| CgroupError::Parse {
                path: qp.clone(),
                what: format!("expected a number, found {:?}", q.trim()),
            })?;
            let period = read_u64(&dir.join("cpu.cfs_period_us"))?;
            l.cpus = parse::cpus_from_quota(quota, period).map_err(parse_err(&qp))?;
        }
        if let Some(dir) = self.dir("pids", g)? {
            let p = dir.join("pids.max");
            l.pids = parse::parse_max(&read(&p)?).map_err(parse_err(&p))?;
        }
        Ok(l)
    }

    fn usage(&self, group: &str) -> Result<Usage, CgroupError> {
        let g = check_group(group)?;
        let mut u = Usage::default();
        if let Some(dir) = self.dir("cpuacct", g)? {
            u.cpu_ns = read_u64(&dir.join("cpuacct.usage"))?;
        }
        if let Some(dir) = self.dir("memory", g)? {
            u.memory_bytes = read_u64(&dir.join("memory.usage_in_bytes"))?;
            u.memory_peak_bytes = read_u64_or_zero(&dir.join("memory.max_usage_in_bytes"))?;
            let p = dir.join("memory.oom_control");
            if let Some(text) = read_optional(&p)? {
                let kv = parse::parse_flat_keyed(&text).map_err(|what| CgroupError::Parse {
                    path: p,
                    what: what.0,
                })?;
                u.oom_kills = keyed(&kv, "oom_kill").unwrap_or(0);
            }
        }
        if let Some(dir) = self.dir("pids", g)? {
            u.pids = read_u64(&dir.join("pids.current"))?;
        }
        if let Some(dir) = self.dir("blkio", g)? {
            for name in [
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
            ] {
                let p = dir.join(name);
                if let Some(text) = read_optional(&p)? {
                    let io = parse::parse_blkio_service_bytes(&text).map_err(|what| {
                        CgroupError::Parse {
                            path: p,
                            what: what.0,
                        }
                    })?;
                    u.io_read_bytes = io.read;
                    u.io_write_bytes = io.written;
                    break;
                }
            }
        }
        Ok(u)
    }

    fn freeze(&self, group: &str, timeout: Duration) -> Result<(), CgroupError> {
        let g = check_group(group)?;
        let dir = self.dir("freezer", g)?.ok_or(CgroupError::NoFreezer)?;
        let state = dir.join("freezer.state");
        write(&state, "FROZEN")?;
        let res = wait_until(timeout, || {
            let s = read(&state)?.trim().to_owned();
            Ok((s == "FROZEN", s))
        });
        settle_freeze("v1", group, dir, timeout, res, || write(&state, "THAWED"))
    }

    fn thaw(&self, group: &str) -> Result<(), CgroupError> {
        let g = check_group(group)?;
        let dir = self.dir("freezer", g)?.ok_or(CgroupError::NoFreezer)?;
        write(&dir.join("freezer.state"), "THAWED")?;
        tracing::debug!(group, "v1 cgroup thawed");
        Ok(())
    }

    fn remove(&self, group: &str) -> Result<(), CgroupError> {
        let g = check_group(group)?;
        let dirs: Vec<PathBuf> = self
            .used()
            .map(|h| h.mount.join(g))
            .filter(|d| d.is_dir())
            .collect();
        let mut pids = BTreeSet::new();
        for d in &dirs {
            pids.extend(read_procs(&d.join("cgroup.procs")).unwrap_or_default());
        }
        if let (false, Some(first)) = (pids.is_empty(), dirs.first()) {
            return Err(CgroupError::Busy {
                path: first.clone(),
                pids: pids.into_iter().collect(),
                source: None,
            });
        }
        for d in &dirs {
            rmdir(d, || {
                read_procs(&d.join("cgroup.procs")).unwrap_or_default()
            })?;
        }
        tracing::debug!(group, "removed v1 cgroup");
        Ok(())
    }
}
