//! Nodes for multi-agent tests: agents with their own roots, either side by side on this
//! machine's loopback ([`Agent::start`]) or each in its own network namespace ([`Fabric`]),
//! joined by veth pairs to a bridge that lives in a namespace of its own — nothing is added to
//! the host's network, and only the fabric's addresses are ever targets. Links are cut with
//! nftables inside a node's namespace ([`Fabric::cut`] / [`Fabric::mend`]).
//!
//! Agents run in a node's namespace through `nsenter --net` (not `ip netns exec`, which
//! remounts /sys and would hide the cgroup hierarchies the agent needs).

use super::{run_cmd, spawn_owned, stasis};
use stasis_agent::client::{Client, Endpoint};
use stasis_agent::daemon::AgentPaths;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A running `stasis agent` with a TCP listener; SIGTERM when dropped.
pub struct Agent {
    /// Its root.
    pub root: PathBuf,
    /// Its listener (`HOST:PORT`).
    pub listen: String,
    /// Its network namespace (a name under `/run/netns`), if not the host's.
    pub netns: Option<String>,
    child: Child,
}

impl Agent {
    /// An agent on loopback (a free port), TLS or plain.
    pub fn start(root: &Path, tls: bool) -> Agent {
        let listen = format!("127.0.0.1:{}", super::free_port());
        Agent::start_in(root, &listen, tls, None)
    }

    /// An agent listening on `listen`, in network namespace `netns` (a name under
    /// `/run/netns`) if given.
    pub fn start_in(root: &Path, listen: &str, tls: bool, netns: Option<&str>) -> Agent {
        std::fs::create_dir_all(root).unwrap();
        let log = std::fs::File::create(root.with_extension("log")).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(stasis());
                c
            }
            None => Command::new(stasis()),
        };
        cmd.arg("--root")
            .arg(root)
            .args(["agent", "--tick", "100ms", "--listen", listen]);
        if tls {
            cmd.arg("--tls");
        }
        let child = spawn_owned(
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let a = Agent {
            root: root.to_path_buf(),
            listen: listen.to_string(),
            netns: netns.map(str::to_string),
            child,
        };
        a.local()
            .wait_ready(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("agent did not come up: {e}\n{}", a.log()));
        a
    }

    /// A client over its unix socket.
    pub fn local(&self) -> Client {
        Client::new(Endpoint::Unix(AgentPaths::new(&self.root).socket()))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.with_extension("log")).unwrap_or_default()
    }

    /// Its API token.
    pub fn token(&self) -> String {
        stasis_agent::auth::read_token(&AgentPaths::new(&self.root)).unwrap()
    }

    /// SHA-256 (hex) of its generated certificate.
    pub fn fingerprint(&self) -> String {
        let fp = stasis_agent::tls::cert_file_fingerprint(
            &AgentPaths::new(&self.root).tls_dir().join("cert.pem"),
        )
        .unwrap();
        stasis_agent::tls::fingerprint_hex(&fp)
    }

    /// `stasis --root ITS_ROOT ARGS...`, run in its network namespace (as an operator on
    /// that node would).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(stasis());
                c
            }
            None => Command::new(stasis()),
        };
        run_cmd(cmd.arg("--root").arg(&self.root).args(args))
    }

    /// Whether its process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = stasis_sys::sys::kill(self.child.id() as i32, libc::SIGTERM);
        let _ = self.child.wait();
    }
}

fn ip(args: &[&str]) {
    let o = run_cmd(Command::new("ip").args(args));
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn nft_in(ns: &str, script: &str) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "nft", "-f", "-"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("ip netns exec nft (nftables installed?)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Network namespaces joined by a bridge: node `i` is `PREFIX-nI` with `eth0` at
/// `10.PP.0.(i+1)/24` (PP from the prefix), its peer `PREFIX-bI` on bridge `br0` in namespace
/// `PREFIX-fab`. Everything is deleted when dropped.
pub struct Fabric {
    prefix: String,
    net: u8,
    nodes: usize,
}

impl Fabric {
    /// `nodes` namespaces named after `prefix` (at most 8 characters: interface names are
    /// short), on subnet `10.NET.0.0/24`.
    pub fn new(prefix: &str, net: u8, nodes: usize) -> Fabric {
        assert!(prefix.len() <= 8 && nodes < 200);
        let f = Fabric {
            prefix: prefix.to_string(),
            net,
            nodes: 0,
        };
        f.delete_leftovers(nodes);
        let fab = f.fabric_ns();
        ip(&["netns", "add", &fab]);
        ip(&["-n", &fab, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &fab, "link", "set", "br0", "up"]);
        let mut f = f;
        for i in 0..nodes {
            let ns = f.ns(i);
            let (inner, outer) = (format!("{}-n{i}", f.prefix), format!("{}-b{i}", f.prefix));
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer,
                "netns", &fab,
            ]);
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", f.addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &fab, "link", "set", &outer, "master", "br0"]);
            ip(&["-n", &fab, "link", "set", &outer, "up"]);
            f.nodes = i + 1;
        }
        f
    }

    fn fabric_ns(&self) -> String {
        format!("{}-fab", self.prefix)
    }

    /// Namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// Address of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.net, i + 1)
    }

    /// Start an agent for node `i` (TLS: its address is not loopback) with root `root`.
    pub fn agent(&self, i: usize, root: &Path) -> Agent {
        let listen = format!("{}:7670", self.addr(i));
        Agent::start_in(root, &listen, true, Some(&self.ns(i)))
    }

    /// Cut node `i` off the fabric (nftables in its namespace drops everything on `eth0`).
    pub fn cut(&self, i: usize) {
        let o = nft_in(
            &self.ns(i),
            "table inet stasis_test_cut {\n chain in { type filter hook input priority -10; iifname \"eth0\" drop; }\n chain out { type filter hook output priority -10; oifname \"eth0\" drop; }\n}\n",
        );
        assert!(
            o.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Whether node `i` reaches node `j`: a TCP connection from `i`'s namespace to port 7670
    /// of `j` is answered within 2 s (accepted, or refused when no agent listens there).
    pub fn reaches(&self, i: usize, j: usize) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/7670", self.addr(j));
        let o = run_cmd(Command::new("ip").args([
            "netns",
            "exec",
            &self.ns(i),
            "timeout",
            "2",
            "bash",
            "-c",
            &script,
        ]));
        // 124: timed out (dropped); 0: connected; 1: refused (reached).
        matches!(o.status.code(), Some(0) | Some(1))
    }

    /// Undo [`Fabric::cut`].
    pub fn mend(&self, i: usize) {
        let o = nft_in(&self.ns(i), "delete table inet stasis_test_cut\n");
        assert!(
            o.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn delete_leftovers(&self, nodes: usize) {
        for i in 0..nodes.max(8) {
            let _ = run_cmd(Command::new("ip").args(["netns", "del", &self.ns(i)]));
        }
        let _ = run_cmd(Command::new("ip").args(["netns", "del", &self.fabric_ns()]));
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.delete_leftovers(self.nodes);
    }
}
