//! Network lock: an nftables table that drops the packets of TCP connections while they are
//! being saved and until restore has them again.
//!
//! Without it the peer's next segment would meet no socket (after the checkpoint ended the
//! tree) or a socket in repair mode, and the peer would get a reset. The table (family `inet`,
//! named `stasis_<hex>`) has an input and an output chain at priority -300 (before conntrack),
//! each dropping both directions of every locked connection. A checkpoint that ends the tree
//! leaves the table in place and records its name in the image; restore deletes it once the
//! sockets exist again. Everything goes through the `nft` command (Debian's nftables).

use std::io::Write;
use std::process::{Command, Stdio};

/// Run an nft script.
fn nft(script: &str) -> std::io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("running nft (install Debian's nftables): {e}"),
            )
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// One connection: (family, local ip, local port, remote ip, remote port).
#[derive(Debug, Clone)]
pub struct Conn {
    /// AF_INET or AF_INET6.
    pub family: i32,
    /// Local address.
    pub local: std::net::IpAddr,
    /// Local port.
    pub lport: u16,
    /// Remote address.
    pub remote: std::net::IpAddr,
    /// Remote port.
    pub rport: u16,
}

/// The lock (guard): removed on drop unless [`NetLock::persist`] was called.
pub struct NetLock {
    /// nftables table name.
    pub table: String,
    created: bool,
    persist: bool,
}

impl NetLock {
    /// A lock that will use table `stasis_<tag>` (nothing is created until [`NetLock::add`]).
    pub fn new(tag: &str) -> Self {
        Self {
            table: format!("stasis_{tag}"),
            created: false,
            persist: false,
        }
    }

    /// Drop every packet of `c`, both directions, from now on.
    pub fn add(&mut self, c: &Conn) -> std::io::Result<()> {
        let t = &self.table;
        let mut s = String::new();
        if !self.created {
            s.push_str(&format!(
                "add table inet {t}\n\
                 add chain inet {t} out {{ type filter hook output priority -300; policy accept; }}\n\
                 add chain inet {t} in {{ type filter hook input priority -300; policy accept; }}\n"
            ));
        }
        // An IPv6 socket talking to IPv4-mapped addresses sends and receives IPv4 packets.
        let v4 = |a: &std::net::IpAddr| match a {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4),
            std::net::IpAddr::V4(_) => Some(*a),
        };
        let (ip, local, remote) = match (c.family, v4(&c.local), v4(&c.remote)) {
            (libc::AF_INET6, Some(l), Some(r)) if c.local.is_ipv6() => ("ip", l, r),
            (libc::AF_INET6, ..) => ("ip6", c.local, c.remote),
            _ => ("ip", c.local, c.remote),
        };
        for chain in ["out", "in"] {
            s.push_str(&format!(
                "add rule inet {t} {chain} {ip} saddr {} tcp sport {} {ip} daddr {} tcp dport {} drop\n",
                local, c.lport, remote, c.rport
            ));
            s.push_str(&format!(
                "add rule inet {t} {chain} {ip} saddr {} tcp sport {} {ip} daddr {} tcp dport {} drop\n",
                remote, c.rport, local, c.lport
            ));
        }
        nft(&s)?;
        self.created = true;
        Ok(())
    }

    /// Whether any rule exists.
    pub fn active(&self) -> bool {
        self.created
    }

    /// Keep the table after this process (the image records it; restore removes it).
    pub fn persist(&mut self) {
        self.persist = true;
    }
}

impl Drop for NetLock {
    fn drop(&mut self) {
        if self.created && !self.persist {
            if let Err(e) = unlock(&self.table) {
                tracing::error!(table = %self.table, error = %e, "could not remove the network lock");
            }
        }
    }
}

/// Delete a lock table (no error if it is already gone).
pub fn unlock(table: &str) -> std::io::Result<()> {
    match nft(&format!("delete table inet {table}\n")) {
        Err(e) if e.to_string().contains("No such file") => Ok(()),
        other => other,
    }
}
