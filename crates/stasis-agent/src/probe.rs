//! Health probes: is a running workload still doing its job?
//!
//! Three kinds, written as operators write them:
//!
//! - `exec:CMD ARGS…` — the command runs in the partition's mount and network namespaces (so
//!   it sees the partition's files and its `localhost`) and must exit 0;
//! - `tcp:HOST:PORT` — a TCP connection must be accepted;
//! - `http://HOST:PORT/PATH` — an HTTP/1.0 GET must answer with a 2xx or 3xx status.
//!
//! TCP and HTTP probes connect from inside the partition's network namespace when it has one
//! (a dedicated thread joins it: network namespaces are per thread), so `127.0.0.1` means the
//! partition's loopback. Every probe has a timeout. [`Tracker`] turns results into a verdict:
//! a workload fails after `threshold` failed probes in a row; one success resets the count.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A probe as configured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Probe {
    /// Run a command; exit status 0 is healthy.
    Exec {
        /// Program and arguments.
        cmd: Vec<String>,
    },
    /// Connect to HOST:PORT.
    Tcp {
        /// HOST:PORT.
        addr: String,
    },
    /// GET a URL.
    Http {
        /// `http://HOST:PORT/PATH`.
        url: String,
    },
}

/// A probe that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The probe specification does not parse.
    #[error("bad probe '{0}': write exec:CMD ARGS, tcp:HOST:PORT or http://HOST:PORT/PATH")]
    Spec(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The check ran and said no.
    #[error("{0}")]
    Unhealthy(String),
    /// The check could not run.
    #[error("cannot run the probe: {0}")]
    Setup(String),
}

impl std::str::FromStr for Probe {
    type Err = ProbeError;
    fn from_str(s: &str) -> Result<Self, ProbeError> {
        let bad = || ProbeError::Spec(s.to_string());
        if let Some(rest) = s.strip_prefix("exec:") {
            let cmd: Vec<String> = rest.split_whitespace().map(String::from).collect();
            let p = Probe::Exec { cmd };
            crate::spec::check_probe("probe", &p).map_err(|_| bad())?;
            return Ok(p);
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let p = Probe::Tcp {
                addr: rest.to_string(),
            };
            crate::spec::check_probe("probe", &p).map_err(|_| bad())?;
            return Ok(p);
        }
        if s.starts_with("http://") {
            let p = Probe::Http { url: s.to_string() };
            crate::spec::check_probe("probe", &p).map_err(|_| bad())?;
            return Ok(p);
        }
        Err(bad())
    }
}

/// `http://host:port/path` → ("host:port", "/path").
pub(crate) fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if hostport.is_empty() {
        return None;
    }
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Some((hostport, path.to_string()))
}

/// Where a probe runs: the partition's first process (its namespaces), or the host.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Host pid of the partition's first process.
    pub pid: i32,
    /// The partition has a network namespace of its own.
    pub own_net: bool,
}

/// Run `probe` against `target` with `timeout`.
pub fn check(probe: &Probe, target: Target, timeout: Duration) -> Result<(), ProbeError> {
    match probe {
        Probe::Exec { cmd } => exec(cmd, target, timeout),
        Probe::Tcp { addr } => {
            let addr = addr.clone();
            in_net(target, timeout, move || connect(&addr, timeout).map(|_| ()))
        }
        Probe::Http { url } => {
            let (hostport, path) = split_url(url).ok_or_else(|| ProbeError::Spec(url.clone()))?;
            in_net(target, timeout, move || http_get(&hostport, &path, timeout))
        }
    }
}

fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, ProbeError> {
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| ProbeError::Setup(format!("{addr}: {e}")))?
        .next()
        .ok_or_else(|| ProbeError::Setup(format!("{addr}: no address")))?;
    TcpStream::connect_timeout(&sa, timeout).map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            ProbeError::Timeout(timeout)
        } else {
            ProbeError::Unhealthy(format!("connect to {addr}: {e}"))
        }
    })
}

fn http_get(hostport: &str, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let mut s = connect(hostport, timeout)?;
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) {
            ProbeError::Timeout(timeout)
        } else {
            ProbeError::Unhealthy(format!("GET {path}: {e}"))
        }
    };
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {hostport}\r\nUser-Agent: stasis-probe\r\n\r\n"
    )
    .map_err(io)?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]).map_err(io)? {
            0 => break,
            k => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]).to_string();
    let status: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ProbeError::Unhealthy(format!("GET {path}: not an HTTP answer")))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(ProbeError::Unhealthy(format!(
            "GET {path}: status {status}"
        )))
    }
}

/// Run `f` in the partition's network namespace (a thread that joins it), or here.
fn in_net(
    target: Target,
    timeout: Duration,
    f: impl FnOnce() -> Result<(), ProbeError> + Send + 'static,
) -> Result<(), ProbeError> {
    if !target.own_net {
        return f();
    }
    let pid = target.pid;
    let ns = stasis_sys::ns::open_ns(pid, "net")
        .map_err(|e| ProbeError::Setup(format!("network namespace of pid {pid}: {e}")))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::fd::AsFd;
        let r = stasis_sys::ns::setns(ns.as_fd(), libc::CLONE_NEWNET)
            .map_err(|e| ProbeError::Setup(format!("joining the network namespace: {e}")))
            .and_then(|()| f());
        let _ = tx.send(r);
    });
    rx.recv_timeout(timeout + Duration::from_millis(500))
        .unwrap_or(Err(ProbeError::Timeout(timeout)))
}

fn exec(cmd: &[String], target: Target, timeout: Duration) -> Result<(), ProbeError> {
    let Some((prog, args)) = cmd.split_first() else {
        return Err(ProbeError::Spec("exec: empty command".into()));
    };
    let mut c = std::process::Command::new(prog);
    c.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mnt = stasis_sys::ns::open_ns(target.pid, "mnt")
        .map_err(|e| ProbeError::Setup(format!("mount namespace of pid {}: {e}", target.pid)))?;
    let net = if target.own_net {
        Some(stasis_sys::ns::open_ns(target.pid, "net").map_err(|e| {
            ProbeError::Setup(format!("network namespace of pid {}: {e}", target.pid))
        })?)
    } else {
        None
    };
    stasis_sys::ns::command_in_ns(&mut c, net, Some(mnt));
    let mut child = c
        .spawn()
        .map_err(|e| ProbeError::Setup(format!("running {prog}: {e}")))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(ProbeError::Unhealthy(format!(
                    "{} exited with {st}{}",
                    cmd.join(" "),
                    if err.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", err.trim())
                    }
                )));
            }
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeError::Timeout(timeout));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(ProbeError::Setup(format!("waiting for {prog}: {e}"))),
        }
    }
}

/// Health verdicts from a run of probe results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last probe succeeded.
    Healthy,
    /// `n` probes in a row failed, fewer than the threshold.
    Failing(u32),
    /// The threshold is reached: the workload has failed.
    Failed,
}

/// Counts failed probes in a row.
#[derive(Debug, Clone, Copy)]
pub struct Tracker {
    threshold: u32,
    failures: u32,
}

impl Tracker {
    /// Fail after `threshold` failures in a row (at least 1).
    pub fn new(threshold: u32) -> Tracker {
        Tracker {
            threshold: threshold.max(1),
            failures: 0,
        }
    }

    /// Record one result.
    pub fn record(&mut self, ok: bool) -> Health {
        if ok {
            self.failures = 0;
            return Health::Healthy;
        }
        self.failures += 1;
        if self.failures >= self.threshold {
            Health::Failed
        } else {
            Health::Failing(self.failures)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(
            "exec:/bin/true -x".parse::<Probe>().unwrap(),
            Probe::Exec {
                cmd: vec!["/bin/true".into(), "-x".into()]
            }
        );
        assert!(matches!(
            "tcp:127.0.0.1:80".parse::<Probe>(),
            Ok(Probe::Tcp { .. })
        ));
        assert!(matches!(
            "http://localhost:8080/health".parse::<Probe>(),
            Ok(Probe::Http { .. })
        ));
        for bad in ["exec:", "tcp:foo", "tcp::80", "ftp://x", "http://", "nope"] {
            assert!(bad.parse::<Probe>().is_err(), "{bad}");
        }
        assert_eq!(
            split_url("http://h/x").unwrap(),
            ("h:80".to_string(), "/x".to_string())
        );
    }

    #[test]
    fn tracker() {
        let mut t = Tracker::new(3);
        assert_eq!(t.record(false), Health::Failing(1));
        assert_eq!(t.record(false), Health::Failing(2));
        assert_eq!(t.record(true), Health::Healthy);
        assert_eq!(t.record(false), Health::Failing(1));
        assert_eq!(t.record(false), Health::Failing(2));
        assert_eq!(t.record(false), Health::Failed);
    }
}
