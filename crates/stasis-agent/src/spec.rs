//! One validation of a workload spec, used by the API's add handler, the supervisor and the
//! CLI alike: nothing the CLI refuses gets in by JSON.
//!
//! - The client-facing partition part is [`PartitionSpec`]: the partition's [`Spec`] without
//!   its network plumbing. Host-side interface names and addresses are chosen by stasis (see
//!   `stasis_partition::setup::allocate_veth`); a spec that names them is refused.
//! - [`WorkloadSpec::validate`] checks everything else and names the field at fault:
//!   `probe.cmd: empty command`, `partition.limits.memory_bytes: …`.
//!
//! Minimums: probe timeout and period 10 ms, checkpoint interval 100 ms; hooks timeout,
//! back-off and failover window above zero; every duration at most [`MAX_DURATION`]; counts
//! (images kept, thresholds) at least 1.

use crate::probe::Probe;
use crate::supervisor::WorkloadSpec;
use serde::{Deserialize, Serialize};
use stasis_partition::cgroup::Limits;
use stasis_partition::state::{NetMode, Spec};
use std::path::PathBuf;
use std::time::Duration;

/// Shortest probe period and timeout.
pub const MIN_PROBE: Duration = Duration::from_millis(10);
/// Shortest checkpoint interval.
pub const MIN_CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Longest duration of any setting (a year).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most consistency images kept per workload.
pub const MAX_IMAGES_KEPT: usize = 1000;
/// Largest count setting (thresholds, restarts).
pub const MAX_COUNT: u32 = 10_000;

/// A spec that does not validate: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct SpecError {
    /// The field, as a JSON path (`probe.timeout`, `partition.env[2]`).
    pub field: String,
    /// What is wrong.
    pub why: String,
}

fn bad(field: impl Into<String>, why: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        why: why.into(),
    }
}

/// A partition as a client describes it (no host-side network settings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// Command and arguments of the first process.
    pub cmd: Vec<String>,
    /// Network mode.
    #[serde(default)]
    pub net: NetMode,
    /// Own root filesystem (absolute path), or None to share the host's.
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
    /// Hostname inside the partition (empty: the workload's name).
    #[serde(default)]
    pub hostname: String,
    /// Working directory of the first process (absolute).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Extra environment (KEY=VALUE) of the first process.
    #[serde(default)]
    pub env: Vec<String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Never given by a client: a `veth` other than null is refused (records of older
    /// agents carry `"veth": null`).
    #[serde(
        default,
        rename = "veth",
        skip_serializing,
        deserialize_with = "refuse_veth"
    )]
    no_veth: NoVeth,
}

/// Marker: the spec carries no veth settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NoVeth;

/// The message for a client-chosen veth.
pub const VETH_REFUSED: &str =
    "host-side interface names and addresses are chosen by stasis, not by the client (remove `veth`; `net: veth` is enough)";

fn refuse_veth<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NoVeth, D::Error> {
    let v = Option::<serde::de::IgnoredAny>::deserialize(d)?;
    match v {
        None => Ok(NoVeth),
        Some(_) => Err(serde::de::Error::custom(VETH_REFUSED)),
    }
}

impl PartitionSpec {
    /// The partition's spec (its veth is allocated by the partition layer).
    pub fn to_spec(&self) -> Spec {
        Spec {
            cmd: self.cmd.clone(),
            net: self.net,
            veth: None,
            rootfs: self.rootfs.clone(),
            hostname: self.hostname.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            limits: self.limits,
        }
    }

    /// Checks the partition part (`prefix` names it in messages).
    pub fn validate(&self, prefix: &str) -> Result<(), SpecError> {
        let f = |name: &str| format!("{prefix}.{name}");
        check_cmd(&f("cmd"), &self.cmd)?;
        for (i, kv) in self.env.iter().enumerate() {
            let field = format!("{prefix}.env[{i}]");
            let Some((k, _)) = kv.split_once('=') else {
                return Err(bad(field, "write KEY=VALUE"));
            };
            if k.is_empty() {
                return Err(bad(field, "empty variable name"));
            }
            if kv.contains('\0') {
                return Err(bad(field, "contains a NUL byte"));
            }
        }
        if let Some(c) = &self.cwd {
            check_abs(&f("cwd"), c)?;
        }
        if let Some(r) = &self.rootfs {
            check_abs(&f("rootfs"), r)?;
        }
        if self.hostname.len() > 64 {
            return Err(bad(f("hostname"), "longer than 64 bytes"));
        }
        if self.hostname.contains('\0') {
            return Err(bad(f("hostname"), "contains a NUL byte"));
        }
        self.limits
            .check()
            .map_err(|(field, e)| bad(format!("{prefix}.limits.{field}"), e.to_string()))?;
        Ok(())
    }
}

impl From<Spec> for PartitionSpec {
    /// The client-facing part of a partition spec (its veth, if any, is dropped).
    fn from(s: Spec) -> PartitionSpec {
        PartitionSpec {
            cmd: s.cmd,
            net: s.net,
            rootfs: s.rootfs,
            hostname: s.hostname,
            cwd: s.cwd,
            env: s.env,
            limits: s.limits,
            no_veth: NoVeth,
        }
    }
}

fn check_cmd(field: &str, cmd: &[String]) -> Result<(), SpecError> {
    let Some(first) = cmd.first() else {
        return Err(bad(field, "empty command"));
    };
    if first.is_empty() {
        return Err(bad(field, "empty program name"));
    }
    if cmd.iter().any(|a| a.contains('\0')) {
        return Err(bad(field, "an argument contains a NUL byte"));
    }
    Ok(())
}

fn check_abs(field: &str, p: &std::path::Path) -> Result<(), SpecError> {
    if !p.is_absolute() {
        return Err(bad(
            field,
            format!("{} is not an absolute path", p.display()),
        ));
    }
    if p.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(bad(field, "contains a NUL byte"));
    }
    Ok(())
}

fn check_duration(field: &str, d: Duration, min: Duration) -> Result<(), SpecError> {
    if d < min {
        let want = if min == Duration::from_nanos(1) {
            "longer than zero".to_string()
        } else {
            format!("at least {}", crate::duration::format(min))
        };
        return Err(bad(
            field,
            format!(
                "{} is too short: must be {want}",
                crate::duration::format(d)
            ),
        ));
    }
    if d > MAX_DURATION {
        return Err(bad(
            field,
            format!("{} is too long (at most 366d)", crate::duration::format(d)),
        ));
    }
    Ok(())
}

fn check_count(field: &str, n: u64, min: u64, max: u64) -> Result<(), SpecError> {
    if n < min || n > max {
        return Err(bad(field, format!("{n} is out of range {min}..={max}")));
    }
    Ok(())
}

/// Checks a probe (the `probe` part of a spec; `field` names it).
pub fn check_probe(field: &str, p: &Probe) -> Result<(), SpecError> {
    match p {
        Probe::Exec { cmd } => check_cmd(&format!("{field}.cmd"), cmd),
        Probe::Tcp { addr } => match addr.rsplit_once(':') {
            Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok() => {
                if addr.contains('\0') {
                    return Err(bad(format!("{field}.addr"), "contains a NUL byte"));
                }
                Ok(())
            }
            _ => Err(bad(
                format!("{field}.addr"),
                format!("{addr:?} is not HOST:PORT"),
            )),
        },
        Probe::Http { url } => {
            let port_ok = crate::probe::split_url(url).is_some_and(|(hp, _)| {
                hp.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            });
            if !port_ok || url.contains(['\0', '\r', '\n', ' ']) {
                return Err(bad(
                    format!("{field}.url"),
                    format!("{url:?} is not http://HOST[:PORT]/PATH"),
                ));
            }
            Ok(())
        }
    }
}

const NANO: Duration = Duration::from_nanos(1);

impl WorkloadSpec {
    /// Checks the whole spec; the error names the field at fault.
    pub fn validate(&self) -> Result<(), SpecError> {
        // The name is a `Name`: checked when it was made.
        self.partition.validate("partition")?;
        if let Some(d) = self.checkpoint_every {
            check_duration("checkpoint_every", d, MIN_CHECKPOINT_EVERY)?;
        }
        check_count(
            "images_kept",
            self.images_kept as u64,
            1,
            MAX_IMAGES_KEPT as u64,
        )?;
        if let Some(p) = &self.probe {
            check_probe("probe", &p.probe)?;
            check_duration("probe.period", p.period, MIN_PROBE)?;
            check_duration("probe.timeout", p.timeout, MIN_PROBE)?;
            check_count("probe.threshold", p.threshold.into(), 1, MAX_COUNT.into())?;
        }
        let pol = &self.policy;
        check_duration("policy.failover_window", pol.failover_window, NANO)?;
        check_duration("policy.backoff", pol.backoff, NANO)?;
        check_duration("policy.backoff_max", pol.backoff_max, NANO)?;
        check_count(
            "policy.boot_restarts",
            pol.boot_restarts.into(),
            0,
            MAX_COUNT.into(),
        )?;
        check_count(
            "policy.backoff_restarts",
            pol.backoff_restarts.into(),
            0,
            MAX_COUNT.into(),
        )?;
        check_duration("hooks_timeout", self.hooks_timeout, NANO)?;
        Ok(())
    }
}

/// Why a posted workload spec is refused (the 400 answer's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

impl std::ops::Deref for BadRequest {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Parses and validates a posted workload spec: the API's request parsing, in one function
/// (fuzzed). `Err` is the 400 answer's message.
pub fn parse_request(body: &[u8]) -> Result<WorkloadSpec, BadRequest> {
    let spec: WorkloadSpec = serde_json::from_slice(body).map_err(|e| BadRequest(e.to_string()))?;
    spec.validate().map_err(|e| BadRequest(e.to_string()))?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"name": "web", "partition": {"cmd": ["sleep", "100"]}})
    }

    fn err(v: serde_json::Value) -> String {
        parse_request(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .0
    }

    #[test]
    fn a_minimal_spec_passes() {
        parse_request(&serde_json::to_vec(&base()).unwrap()).unwrap();
        let mut v = base();
        v["partition"]["veth"] = json!(null);
        parse_request(&serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn fields_are_named() {
        let mut v = base();
        v["probe"] = json!({"probe": {"kind": "exec", "cmd": []}});
        assert_eq!(err(v), "probe.cmd: empty command");
        let mut v = base();
        v["probe"] = json!({"probe": {"kind": "tcp", "addr": "x"}, "timeout": "0s"});
        assert!(err(v).starts_with("probe.addr"));
        let mut v = base();
        v["probe"] = json!({"probe": {"kind": "tcp", "addr": "h:1"}, "timeout": "0s"});
        assert!(err(v).starts_with("probe.timeout: 0s is too short"));
        let mut v = base();
        v["checkpoint_every"] = json!("50ms");
        assert!(err(v).starts_with("checkpoint_every"));
        let mut v = base();
        v["policy"] = json!({"backoff": "0s"});
        assert!(err(v).starts_with("policy.backoff"));
        let mut v = base();
        v["hooks_timeout"] = json!(0);
        assert!(err(v).starts_with("hooks_timeout"));
        let mut v = base();
        v["images_kept"] = json!(0);
        assert!(err(v).starts_with("images_kept"));
        let mut v = base();
        v["partition"]["limits"] = json!({"memory_bytes": 0});
        assert!(err(v).starts_with("partition.limits.memory_bytes"));
        let mut v = base();
        v["partition"]["limits"] = json!({"cpus": -1.0});
        assert!(err(v).starts_with("partition.limits.cpus"));
        let mut v = base();
        v["partition"]["cmd"] = json!([]);
        assert_eq!(err(v), "partition.cmd: empty command");
        let mut v = base();
        v["partition"]["env"] = json!(["NOEQUALS"]);
        assert!(err(v).starts_with("partition.env[0]"));
        let mut v = base();
        v["partition"]["cwd"] = json!("rel");
        assert!(err(v).starts_with("partition.cwd"));
        let mut v = base();
        v["partition"]["rootfs"] = json!("rel");
        assert!(err(v).starts_with("partition.rootfs"));
        let mut v = base();
        v["partition"]["veth"] =
            json!({"host_if": "eth0", "inner_if": "eth0", "host_addr": "", "inner_addr": ""});
        assert!(err(v).contains("chosen by stasis"));
        let mut v = base();
        v["name"] = json!("../x");
        assert!(err(v).contains("bad name"));
    }
}
