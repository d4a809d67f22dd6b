//! `stasis node trust|ls|forget|id`: the nodes an agent root trusts (see
//! `stasis_agent::nodes`). These verbs work on the root's files directly (as root); the agent of
//! that root need not run. Exit codes: 2 bad arguments or refused by the other agent's checks,
//! 3 the other agent refused the token, 7 no such node, 8 no agent answers there, 1 anything
//! else.

use crate::Failed;
use anyhow::anyhow;
use clap::Subcommand;
use stasis_agent::client::ClientError;
use stasis_agent::daemon::AgentPaths;
use stasis_agent::nodes::{self, NodeError};
use stasis_image::name::Name;
use std::path::Path;

/// `stasis node` verbs.
#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Make this root's agent and the agent listening at HOST:PORT trust each other: each pins
    /// the other's TLS certificate and accepts images signed by the other's key. Needs the
    /// other agent's API token (`stasis --root ITS_ROOT token` there).
    Trust {
        /// The other agent's listener.
        addr: String,
        /// The other agent's API token.
        #[arg(long)]
        token: String,
        /// SHA-256 of the other agent's certificate (64 hex digits); without it the certificate
        /// first seen is pinned and printed, for you to compare with `stasis node id` there.
        #[arg(long)]
        fingerprint: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// The trusted nodes.
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a node: its record and its image key go (do the same on its side).
    Forget {
        /// Its node name (`stasis node ls`).
        name: String,
    },
    /// This node's name, certificate fingerprint and image key id.
    Id {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn node_err(e: NodeError) -> Failed {
    let code = match &e {
        NodeError::Bad { .. } | NodeError::Name(_) | NodeError::Itself(_) => 2,
        NodeError::Unknown(_) => 7,
        NodeError::Peer { source, .. } => match source {
            ClientError::Unreachable { .. } => 8,
            ClientError::Api { status: 401, .. } => 3,
            ClientError::Api { status: 400, .. } => 2,
            _ => 1,
        },
        _ => 1,
    };
    (code, anyhow::Error::new(e))
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON serialises")
    );
}

/// Run a `stasis node` verb against `root`.
pub fn run(root: &Path, cmd: NodeCmd) -> Result<(), Failed> {
    let paths = AgentPaths::new(root);
    match cmd {
        NodeCmd::Trust {
            addr,
            token,
            fingerprint,
            json,
        } => {
            let pin = fingerprint
                .as_deref()
                .map(stasis_agent::tls::parse_fingerprint)
                .transpose()
                .map_err(|e| (2, anyhow::Error::new(e)))?;
            if addr.contains('/') || !addr.contains(':') {
                return Err((
                    2,
                    anyhow!("give the other agent's listener as HOST:PORT, not {addr:?}"),
                ));
            }
            let t = nodes::trust(&paths, &addr, token.trim(), pin).map_err(node_err)?;
            if json {
                print_json(&serde_json::json!({
                    "node": t.node.name, "addr": t.node.addr, "fingerprint": t.node.fingerprint,
                    "first_seen": t.node.first_seen, "key_id": t.node.key_id,
                    "local_name": t.local_name,
                }));
            } else {
                println!("trusting node {} at {addr}", t.node.name);
                match (&t.node.fingerprint, t.node.first_seen) {
                    (Some(fp), true) => println!(
                        "  certificate SHA-256 {fp} (first seen: compare it with `stasis node id` on that node)"
                    ),
                    (Some(fp), false) => println!("  certificate SHA-256 {fp} (as given)"),
                    (None, _) => println!("  plain HTTP on loopback: no certificate to pin"),
                }
                println!("  its images are accepted here (key {})", t.node.key_id);
                println!("  it knows this node as {}", t.local_name);
            }
            Ok(())
        }
        NodeCmd::Ls { json } => {
            let list = nodes::list(&paths).map_err(node_err)?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|n| {
                        serde_json::json!({"name": n.name, "addr": n.addr, "fingerprint": n.fingerprint,
                            "first_seen": n.first_seen, "key_id": n.key_id, "trusted_at_ms": n.trusted_at_ms})
                    })
                    .collect();
                print_json(&serde_json::json!({ "nodes": v }));
            } else if list.is_empty() {
                println!(
                    "no trusted nodes (add one with `stasis node trust HOST:PORT --token TOKEN`)"
                );
            } else {
                println!("{:<32} {:<22} CERTIFICATE", "NODE", "ADDRESS");
                for n in list {
                    println!(
                        "{:<32} {:<22} {}",
                        n.name,
                        n.addr.as_deref().unwrap_or("-"),
                        n.fingerprint.as_deref().unwrap_or("(plain, loopback)")
                    );
                }
            }
            Ok(())
        }
        NodeCmd::Forget { name } => {
            let name = Name::new(name).map_err(|e| (2, anyhow::Error::new(e)))?;
            nodes::forget(&paths, &name).map_err(node_err)?;
            println!("node {name} is no longer trusted");
            Ok(())
        }
        NodeCmd::Id { json } => {
            let me = nodes::identity(&paths).map_err(node_err)?;
            let fp = stasis_agent::tls::fingerprint_hex(&me.fingerprint);
            if json {
                print_json(&serde_json::json!({
                    "name": me.name, "fingerprint": fp,
                    "image_key_id": me.image_key.id().to_string(),
                }));
            } else {
                println!("node {}", me.name);
                println!("  certificate SHA-256 {fp}");
                println!("  image key {}", me.image_key.id());
            }
            Ok(())
        }
    }
}
