//! The agent verbs of the CLI: `agent` (the daemon) and the clients that talk to it —
//! `workload add|ls|status|rm|checkpoint`, `ffdc ls|show`, `hibernate`, `resume`, `events`.
//!
//! Clients reach the agent over its unix socket `ROOT/api/agent.sock` unless `--agent URL` says
//! otherwise, and wait up to `--agent-wait` for an agent that is still starting. Over the
//! socket they send no credentials (the agent checks the caller's uid and groups); over
//! `http://` and `https://` they send the token from `--token-file`, `$STASIS_TOKEN`, or (as
//! root) `ROOT/agent/token`; over `https://` they pin the agent's certificate
//! (`--agent-fingerprint`, `--agent-cert`, or as root `ROOT/agent/tls/cert.pem`).
//! Exit codes: 2 bad request, 6 name taken or wrong state (HTTP 409), 7 no such workload or
//! bundle (404), 8 no agent answers, 1 anything else.

use crate::partition::{spec_from, PartitionArgs};
use crate::Failed;
use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::Value;
use stasis_agent::client::{Client, ClientError, Endpoint};
use stasis_agent::duration;
use stasis_agent::policy::Policy;
use stasis_agent::probe::Probe;
use stasis_agent::supervisor::{ProbeSpec, WorkloadSpec};
use std::path::Path;
use std::time::Duration;

/// `stasis workload` verbs.
#[derive(Subcommand, Debug)]
pub enum WorkloadCmd {
    /// Add a workload and start it from its boot command; returns once it runs.
    Add(Box<AddArgs>),
    /// List workloads.
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a workload: state, pid, restarts, images, last failure.
    Status {
        /// Workload name.
        name: String,
        /// JSON output (state, pid, restarts, last_restart, last_image, images, spec…).
        #[arg(long)]
        json: bool,
    },
    /// Stop supervising a workload: end it, remove its partition and images (FFDC stays).
    Rm {
        /// Workload name.
        name: String,
        /// JSON output (`{"removed": NAME}`).
        #[arg(long)]
        json: bool,
    },
    /// Take a consistency image now (the workload keeps running).
    Checkpoint {
        /// Workload name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// `stasis workload add` options.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Workload name (also its partition's).
    pub name: String,
    /// Partition options.
    #[command(flatten)]
    pub partition: PartitionArgs,
    /// Take a consistency image this often (e.g. 500ms, 2s, 1m); none if omitted.
    #[arg(long, value_name = "DURATION")]
    pub checkpoint_every: Option<String>,
    /// Consistency images kept.
    #[arg(long, default_value_t = 3)]
    pub images_kept: usize,
    /// A failure this soon after a restart means the restart did not help.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub failover_window: String,
    /// Boot restarts in a row (each failing within the window) before backing off.
    #[arg(long, default_value_t = 3)]
    pub boot_restarts: u32,
    /// First back-off delay (doubled each time).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub backoff: String,
    /// Back-off restarts before the workload is marked failed.
    #[arg(long, default_value_t = 5)]
    pub backoff_restarts: u32,
    /// Longest back-off delay.
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    pub backoff_max: String,
    /// Health probe: exec:CMD ARGS (run inside the workload), tcp:HOST:PORT or
    /// http://HOST:PORT/PATH (from the workload's network namespace).
    #[arg(long, value_name = "PROBE")]
    pub probe: Option<String>,
    /// How often the probe runs.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub probe_period: String,
    /// Failed probes in a row that make a failure.
    #[arg(long, default_value_t = 3)]
    pub probe_threshold: u32,
    /// Time each probe gets.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub probe_timeout: String,
    /// Time the workload gets to answer a hook (PRE-CHECKPOINT, POST-RESTORE).
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub hooks_timeout: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// The boot command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// `stasis ffdc` verbs.
#[derive(Subcommand, Debug)]
pub enum FfdcCmd {
    /// List first-failure data capture bundles, newest first.
    Ls {
        /// Only this workload's.
        #[arg(long)]
        workload: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a bundle: the failure, its summary, the workload's last output, agent log lines.
    Show {
        /// Bundle id (from `stasis ffdc ls`).
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// How clients reach the agent: the options of the verbs that talk to it (global within
/// each such verb, so they may follow its subcommand).
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The agent to talk to: unix:/path/agent.sock, http://HOST:PORT or https://HOST:PORT
    /// (default: the unix socket ROOT/api/agent.sock).
    #[arg(long, global = true, env = "STASIS_AGENT")]
    pub agent: Option<String>,
    /// How long to wait for an agent that is still starting.
    #[arg(
        long = "agent-wait",
        global = true,
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub wait: String,
    /// Over http(s): a file holding the agent's token (default: $STASIS_TOKEN, else, as root,
    /// ROOT/agent/token).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Over https: the agent's certificate (PEM) to pin (default, as root:
    /// ROOT/agent/tls/cert.pem).
    #[arg(long, global = true, value_name = "FILE")]
    pub agent_cert: Option<std::path::PathBuf>,
    /// Over https: the SHA-256 fingerprint of the agent's certificate to pin (the agent logs
    /// it at start).
    #[arg(long, global = true, value_name = "SHA256")]
    pub agent_fingerprint: Option<String>,
}

/// `stasis agent` options about the API's exposure and access.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// Members of this group may use the unix socket (it then lives in a 0750 root:GROUP
    /// directory); otherwise root only.
    #[arg(long, value_name = "GROUP")]
    pub admin_group: Option<String>,
    /// Concurrent event streams; more are refused (429).
    #[arg(long, default_value_t = stasis_agent::auth::DEFAULT_MAX_STREAMS, value_name = "N")]
    pub max_streams: usize,
    /// Serve TLS on --listen even on loopback (with the generated certificate unless
    /// --tls-cert/--tls-key).
    #[arg(long)]
    pub tls: bool,
    /// TLS certificate chain (PEM) for --listen, instead of the generated one.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// A host name the Host header may carry besides the listener's address (e.g. the name
    /// of a reverse proxy). Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
}

fn fail(code: u8, e: impl std::fmt::Display) -> Failed {
    (code, anyhow!("{e}"))
}

fn client_err(e: ClientError) -> Failed {
    let code = match &e {
        ClientError::BadEndpoint(_) | ClientError::NoPin(_) => 2,
        ClientError::Unreachable { .. } => 8,
        ClientError::Api { status: 400, .. } => 2,
        ClientError::Api { status: 404, .. } => 7,
        ClientError::Api { status: 409, .. } => 6,
        _ => 1,
    };
    (code, anyhow::Error::new(e))
}

fn dur(flag: &str, text: &str) -> Result<Duration, Failed> {
    duration::parse(text).map_err(|e| fail(2, format!("--{flag}: {e}")))
}

impl ClientArgs {
    /// A client of the agent, once it answers.
    pub fn client(&self, root: &Path) -> Result<Client, Failed> {
        let endpoint = match &self.agent {
            Some(a) => a.parse::<Endpoint>().map_err(client_err)?,
            None => Endpoint::Unix(stasis_agent::daemon::AgentPaths::new(root).socket()),
        };
        let wait = dur("agent-wait", &self.wait)?;
        let paths = stasis_agent::daemon::AgentPaths::new(root);
        let mut c = Client::new(endpoint.clone());
        if matches!(endpoint, Endpoint::Tcp(_) | Endpoint::Https(_)) {
            if let Some(t) = self.token(&paths)? {
                c = c.with_token(t);
            }
        }
        if matches!(endpoint, Endpoint::Https(_)) {
            let pin = match (&self.agent_fingerprint, &self.agent_cert) {
                (Some(f), _) => Some(
                    stasis_agent::tls::parse_fingerprint(f)
                        .map_err(|e| fail(2, format!("--agent-fingerprint: {e}")))?,
                ),
                (None, Some(p)) => Some(
                    stasis_agent::tls::cert_file_fingerprint(p)
                        .map_err(|e| (2, anyhow::Error::new(e).context("--agent-cert")))?,
                ),
                (None, None) => {
                    let own = paths.tls_dir().join("cert.pem");
                    if rustix::process::geteuid().is_root() && own.exists() {
                        Some(
                            stasis_agent::tls::cert_file_fingerprint(&own)
                                .map_err(|e| (1, anyhow::Error::new(e)))?,
                        )
                    } else {
                        None
                    }
                }
            };
            if let Some(p) = pin {
                c = c.with_pin(p).map_err(client_err)?;
            }
        }
        // Quiet when the agent answers at once; otherwise say what we wait for.
        match c.get("/v1/health") {
            Err(ClientError::Unreachable { .. }) if !wait.is_zero() => {
                eprintln!(
                    "waiting for the agent at {endpoint} (up to {})…",
                    humantime::format_duration(wait)
                );
                c.wait_ready(wait).map_err(client_err)?;
            }
            r => {
                r.map_err(client_err)?;
            }
        }
        Ok(c)
    }
}

impl ClientArgs {
    /// The token for a TCP agent: `--token-file`, `$STASIS_TOKEN`, or (root) ROOT/agent/token.
    fn token(&self, paths: &stasis_agent::daemon::AgentPaths) -> Result<Option<String>, Failed> {
        if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f)
                .map_err(|e| fail(2, format!("--token-file {}: {e}", f.display())))?;
            return Ok(Some(t.trim().to_string()));
        }
        if let Ok(t) = std::env::var("STASIS_TOKEN") {
            if !t.trim().is_empty() {
                return Ok(Some(t.trim().to_string()));
            }
        }
        if rustix::process::geteuid().is_root() {
            return match stasis_agent::auth::read_token(paths) {
                Ok(t) => Ok(Some(t)),
                Err(stasis_agent::auth::TokenError::Missing { .. }) => Ok(None),
                Err(e) => Err((1, anyhow::Error::new(e))),
            };
        }
        Ok(None)
    }
}

/// `stasis token [--rotate]`.
pub fn token(root: &Path, rotate: bool) -> Result<(), Failed> {
    let paths = stasis_agent::daemon::AgentPaths::new(root);
    let r = if rotate {
        stasis_agent::auth::rotate_token(&paths)
    } else {
        stasis_agent::auth::read_token(&paths)
    };
    match r {
        Ok(t) => {
            println!("{t}");
            Ok(())
        }
        Err(e) => {
            let code = match e {
                stasis_agent::auth::TokenError::NotRoot { .. } => 2,
                _ => 1,
            };
            Err((code, anyhow::Error::new(e)))
        }
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

fn opt_str(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// ` (pid N)` when the answer names a pid, nothing otherwise.
fn pid_suffix(v: &Value) -> String {
    match v.as_i64() {
        Some(p) if p > 0 => format!(" (pid {p})"),
        _ => String::new(),
    }
}

/// `stasis agent`.
pub fn agent(root: &Path, listen: &str, tick: &str, api: ApiArgs) -> Result<(), Failed> {
    let listen = match listen {
        "off" | "none" | "" => None,
        a => Some(a.parse().map_err(|e| {
            fail(
                2,
                format!("--listen {a}: {e} (write HOST:PORT, e.g. 127.0.0.1:7670, or off)"),
            )
        })?),
    };
    let tick = dur("tick", tick)?;
    let exe = stasis_partition::ops::stasis_exe().map_err(|e| fail(1, e))?;
    stasis_agent::daemon::run(stasis_agent::daemon::AgentOptions {
        root: root.to_path_buf(),
        listen,
        exe,
        tick,
        api: stasis_agent::auth::ApiOptions {
            admin_group: api.admin_group,
            max_streams: api.max_streams.max(1),
            tls: api.tls,
            tls_cert: api.tls_cert,
            tls_key: api.tls_key,
            allow_hosts: api.allow_hosts,
        },
    })
    .map_err(|e| {
        let code = match e {
            stasis_agent::daemon::AgentError::Busy(_) => 6,
            _ => 1,
        };
        (code, anyhow::Error::new(e))
    })
}

/// `stasis workload ...`.
pub fn workload(root: &Path, conn: &ClientArgs, cmd: WorkloadCmd) -> Result<(), Failed> {
    match cmd {
        WorkloadCmd::Add(a) => add(root, conn, *a),
        WorkloadCmd::Ls { json } => {
            let v = conn
                .client(root)?
                .get("/v1/workloads")
                .map_err(client_err)?;
            let list = v["workloads"].as_array().cloned().unwrap_or_default();
            if json {
                print_json(&Value::Array(list));
                return Ok(());
            }
            println!(
                "{:<20} {:<11} {:>8} {:>8} {:<7} {:>6}  LAST FAILURE",
                "NAME", "STATE", "PID", "RESTARTS", "LAST", "IMAGES"
            );
            for w in list {
                println!(
                    "{:<20} {:<11} {:>8} {:>8} {:<7} {:>6}  {}",
                    opt_str(&w["name"]),
                    opt_str(&w["state"]),
                    opt_str(&w["pid"]),
                    opt_str(&w["restarts"]),
                    opt_str(&w["last_restart"]),
                    opt_str(&w["images"]),
                    opt_str(&w["last_failure"]),
                );
            }
            Ok(())
        }
        WorkloadCmd::Status { name, json } => {
            let v = conn
                .client(root)?
                .get(&format!("/v1/workloads/{name}"))
                .map_err(client_err)?;
            if json {
                print_json(&v);
                return Ok(());
            }
            for k in [
                "name",
                "state",
                "pid",
                "restarts",
                "last_restart",
                "last_image",
                "images",
                "last_failure",
                "last_checkpoint_error",
                "last_frozen_secs",
            ] {
                println!("{:<22} {}", format!("{k}:"), opt_str(&v[k]));
            }
            Ok(())
        }
        WorkloadCmd::Rm { name, json } => {
            let c = conn.client(root)?;
            let v = crate::spinner::busy(format!("removing {name}…"), json, || {
                c.delete(&format!("/v1/workloads/{name}"))
            })
            .map_err(client_err)?;
            if json {
                print_json(&v);
            } else {
                eprintln!("{name}: removed");
            }
            Ok(())
        }
        WorkloadCmd::Checkpoint { name, json } => {
            let c = conn.client(root)?;
            let v = crate::spinner::busy(format!("checkpointing {name}…"), json, || {
                c.post(&format!("/v1/workloads/{name}/checkpoint"), None)
            })
            .map_err(client_err)?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "{name}: image {} (frozen {:.3} s)",
                    opt_str(&v["image"]),
                    v["frozen_secs"].as_f64().unwrap_or(0.0)
                );
            }
            Ok(())
        }
    }
}

fn add(root: &Path, conn: &ClientArgs, a: AddArgs) -> Result<(), Failed> {
    let partition = spec_from(&a.name, a.partition, a.cmd)?;
    let probe = match &a.probe {
        Some(p) => Some(ProbeSpec {
            probe: p.parse::<Probe>().map_err(|e| fail(2, e))?,
            period: dur("probe-period", &a.probe_period)?,
            threshold: a.probe_threshold,
            timeout: dur("probe-timeout", &a.probe_timeout)?,
        }),
        None => None,
    };
    let spec = WorkloadSpec {
        name: a.name.parse().map_err(|e| fail(2, e))?,
        partition: partition.into(),
        checkpoint_every: a
            .checkpoint_every
            .as_deref()
            .map(|t| dur("checkpoint-every", t))
            .transpose()?,
        images_kept: a.images_kept,
        probe,
        policy: Policy {
            failover_window: dur("failover-window", &a.failover_window)?,
            boot_restarts: a.boot_restarts,
            backoff: dur("backoff", &a.backoff)?,
            backoff_restarts: a.backoff_restarts,
            backoff_max: dur("backoff-max", &a.backoff_max)?,
        },
        hooks_timeout: dur("hooks-timeout", &a.hooks_timeout)?,
    };
    // The agent's own validation, before sending: the same rules either way.
    spec.validate()
        .map_err(|e| fail(2, format!("bad workload spec: {e}")))?;
    let body = serde_json::to_value(&spec).expect("serializable");
    let c = conn.client(root)?;
    let v = crate::spinner::busy(format!("starting {}…", a.name), a.json, || {
        c.post("/v1/workloads", Some(&body))
    })
    .map_err(client_err)?;
    if a.json {
        print_json(&v);
    } else {
        println!(
            "{}: {}{}",
            a.name,
            opt_str(&v["state"]),
            pid_suffix(&v["pid"])
        );
    }
    Ok(())
}

/// `stasis hibernate NAME` / `stasis resume NAME`.
pub fn hibernate_or_resume(
    root: &Path,
    conn: &ClientArgs,
    name: &str,
    resume: bool,
    json: bool,
) -> Result<(), Failed> {
    let verb = if resume { "resume" } else { "hibernate" };
    let c = conn.client(root)?;
    let v = crate::spinner::busy(
        format!("{}ing {name}…", verb.trim_end_matches('e')),
        json,
        || c.post(&format!("/v1/workloads/{name}/{verb}"), None),
    )
    .map_err(client_err)?;
    if json {
        print_json(&v);
    } else if resume {
        println!(
            "{name}: running again from image {}{}",
            opt_str(&v["last_image"]),
            pid_suffix(&v["pid"])
        );
    } else {
        println!(
            "{name}: hibernated ({} image(s) kept)",
            opt_str(&v["images"])
        );
    }
    Ok(())
}

/// `stasis ffdc ...`.
pub fn ffdc(root: &Path, conn: &ClientArgs, cmd: FfdcCmd) -> Result<(), Failed> {
    match cmd {
        FfdcCmd::Ls { workload, json } => {
            let path = match &workload {
                Some(w) => format!("/v1/ffdc?workload={w}"),
                None => "/v1/ffdc".into(),
            };
            let v = conn.client(root)?.get(&path).map_err(client_err)?;
            let list = v["bundles"].as_array().cloned().unwrap_or_default();
            if json {
                print_json(&Value::Array(list));
                return Ok(());
            }
            println!(
                "{:<22} {:<20} {:<24} FAILURE",
                "ID", "WORKLOAD", "WHEN (UTC)"
            );
            for b in list {
                let f = &b["failure"];
                println!(
                    "{:<22} {:<20} {:<24} {}",
                    opt_str(&b["id"]),
                    opt_str(&b["workload"]),
                    when(f["at_unix_ms"].as_u64().unwrap_or(0)),
                    failure_text(&f["kind"])
                );
            }
            Ok(())
        }
        FfdcCmd::Show { id, json } => {
            let v = conn
                .client(root)?
                .get(&format!("/v1/ffdc/{id}"))
                .map_err(client_err)?;
            if json {
                print_json(&v);
                return Ok(());
            }
            println!("bundle {} ({})", id, opt_str(&v["info"]["path"]));
            println!();
            print!("{}", v["summary"].as_str().unwrap_or(""));
            if let Some(t) = v["output_tail"].as_str() {
                println!("\n--- last output of the workload ---");
                print!("{t}");
            }
            if let Some(t) = v["agent_log_tail"].as_str() {
                println!("\n--- agent log lines about it ---");
                print!("{t}");
            }
            println!("\n--- files ---");
            for f in v["files"].as_array().cloned().unwrap_or_default() {
                println!("{:>10}  {}", opt_str(&f["size"]), opt_str(&f["path"]));
            }
            Ok(())
        }
    }
}

fn failure_text(kind: &Value) -> String {
    serde_json::from_value::<stasis_agent::ffdc::FailureKind>(kind.clone())
        .map(|k| k.to_string())
        .unwrap_or_else(|_| kind.to_string())
}

fn when(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// One event as a text line: sequence, time, kind, then the payload as `key=value` words
/// (the same with and without `--follow`).
pub(crate) fn event_line(e: &stasis_cluster::Event) -> String {
    format!(
        "{:>6}  {}  {:<24} {}",
        e.seq,
        when(e.unix_ms),
        e.kind,
        crate::demo::payload_words(&e.payload, &["event"])
    )
}

/// `stasis events [--follow] [--since N]`.
pub fn events(
    root: &Path,
    conn: &ClientArgs,
    since: u64,
    follow: bool,
    json: bool,
) -> Result<(), Failed> {
    let c = conn.client(root)?;
    let show = |e: &stasis_cluster::Event| {
        if json {
            println!("{}", serde_json::to_string(e).expect("serializable"));
        } else {
            println!("{}", event_line(e));
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    };
    if !follow {
        // Page through the log (the API answers at most 1000 events at a time).
        let mut last = since;
        loop {
            let v = c
                .get(&format!("/v1/events?since={last}&limit=1000"))
                .map_err(client_err)?;
            let page = v["events"].as_array().cloned().unwrap_or_default();
            for e in &page {
                if let Ok(e) = serde_json::from_value::<stasis_cluster::Event>(e.clone()) {
                    last = e.seq;
                    show(&e);
                }
            }
            if page.len() < 1000 {
                return Ok(());
            }
        }
    }
    // Follow until interrupted (SIGINT ends the process); an agent restart is bridged,
    // resuming after the last event shown.
    c.follow_events(since, Duration::from_secs(300), |e| {
        show(e);
        true
    })
    .map_err(client_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_are_key_value_words() {
        let e = stasis_cluster::Event {
            seq: 7,
            kind: "workload.restarted".into(),
            payload: serde_json::json!({
                "event": "workload.restarted",
                "workload": "web",
                "kind": "image",
                "pid": 42,
                "image": null,
                "frozen_secs": 0.0125,
            }),
            unix_ms: 0,
        };
        let l = event_line(&e);
        assert!(
            l.starts_with("     7  1970-01-01T00:00:00.000Z  workload.restarted"),
            "{l}"
        );
        assert!(l.contains("workload=web"), "{l}");
        assert!(l.contains("kind=image"), "{l}");
        assert!(l.contains("pid=42"), "{l}");
        assert!(
            l.contains("frozen=13ms") || l.contains("frozen=12ms"),
            "{l}"
        );
        assert!(
            !l.contains('{') && !l.contains("event=") && !l.contains("image="),
            "{l}"
        );
    }
}
