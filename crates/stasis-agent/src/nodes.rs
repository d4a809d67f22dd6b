//! Trusted nodes: the agents this one moves workloads to and from.
//!
//! `stasis --root A node trust HOST:PORT --token TOKEN` makes two agents trust each other in
//! one exchange, run by A's side (the CLI, as root of A's root directory; A's agent need not
//! run):
//!
//! 1. A connects to HOST:PORT over TLS and pins the certificate it is shown: the one named by
//!    `--fingerprint`, else the one first seen (printed, for the operator to compare with
//!    `stasis --root B node id` on B). A listener on a loopback address that does not speak
//!    TLS is reached over plain HTTP (same machine: nothing to pin).
//! 2. A sends `POST /v1/nodes/trust` with B's API token: A's node name, A's certificate
//!    fingerprint, A's image-signing key and a fresh secret B will present when it calls A.
//! 3. B stores A's key as `keys/trusted/node-A.key` (so images signed on A restore on B) and
//!    A's record as `agent/nodes/A.json`, then answers with its own name, fingerprint,
//!    image-signing key and a fresh secret A will present when it calls B.
//! 4. A checks that the fingerprint B names is the one it pinned, and stores B the same way.
//!
//! A node's calls to another present `Authorization: Bearer node.NAME.SECRET`; the receiver
//! keeps only the secret's blake3 (see [`check_secret`]) and accepts it on node routes only.
//! Image-signing keys are symmetric (keyed blake3): trusting a node means accepting code from
//! it, as root — trust only agents you run.

use crate::daemon::AgentPaths;
use serde::{Deserialize, Serialize};
use stasis_image::name::Name;
use stasis_image::safefs::{Dir, PRIVATE_DIR, PRIVATE_FILE};
use stasis_image::trust::{Key, Keyring};
use std::path::PathBuf;

/// `ROOT/agent/nodes/`: one `NAME.json` per trusted node.
pub const NODES_DIR: &str = "nodes";
/// `ROOT/agent/node-name`: this agent's node name.
pub const NODE_NAME_FILE: &str = "node-name";
/// Prefix of a node credential in `Authorization: Bearer`.
pub const CREDENTIAL_PREFIX: &str = "node.";

/// Errors of node trust.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file of the root could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The image keys could not be loaded or made.
    #[error("the image-signing keys of this root")]
    Keys(#[source] stasis_image::trust::TrustError),
    /// The TLS certificate could not be made or read.
    #[error("this agent's TLS certificate")]
    Tls(#[source] crate::tls::TlsError),
    /// A record that does not parse.
    #[error("node record {path} is damaged: {why} (remove it with `stasis node forget NAME` and trust the node again)")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A request or reply field that is not what it must be.
    #[error("bad node trust {field}: {why}")]
    Bad {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A node name that breaks the name rule.
    #[error(transparent)]
    Name(#[from] stasis_image::name::NameError),
    /// Asked to trust itself.
    #[error("{0} is this node itself: give the address of another agent")]
    Itself(Name),
    /// Talking to the other agent failed.
    #[error("talking to the agent at {addr}")]
    Peer {
        /// Where.
        addr: String,
        /// Cause.
        #[source]
        source: crate::client::ClientError,
    },
    /// The peer named a certificate other than the one pinned during the exchange.
    #[error("the agent at {addr} says its certificate is {said}, but it showed {seen}: refusing (a proxy in between?)")]
    FingerprintMismatch {
        /// Where.
        addr: String,
        /// What it said.
        said: String,
        /// What the TLS handshake showed.
        seen: String,
    },
    /// No such node.
    #[error("no trusted node {0} (see `stasis node ls`)")]
    Unknown(String),
}

fn io(what: &'static str, path: PathBuf) -> impl FnOnce(std::io::Error) -> NodeError {
    move |source| NodeError::Io { what, path, source }
}

/// A trusted node, as stored in `ROOT/agent/nodes/NAME.json` (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// Its node name.
    pub name: Name,
    /// Where it listens (`HOST:PORT`), when known (the side that ran `node trust` knows it).
    pub addr: Option<String>,
    /// SHA-256 of its TLS certificate (hex), pinned for every call to it; `None` for a peer
    /// reached over plain HTTP on loopback.
    pub fingerprint: Option<String>,
    /// Whether the pin was the certificate first seen (not given with `--fingerprint`).
    #[serde(default)]
    pub first_seen: bool,
    /// Id of its image-signing key (`keys/trusted/node-NAME.key`).
    pub key_id: String,
    /// The secret this node presents when calling it (hex); only on the side that calls.
    pub secret_to: String,
    /// blake3 (hex) of the secret it presents when calling this node.
    pub secret_from_hash: String,
    /// When it was trusted (ms since the epoch).
    pub trusted_at_ms: u64,
}

/// This agent as a node: what it tells a node it trusts.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Node name.
    pub name: Name,
    /// SHA-256 of the TLS certificate its listener uses by default (`ROOT/agent/tls/cert.pem`).
    pub fingerprint: [u8; 32],
    /// Its image-signing key.
    pub image_key: Key,
}

/// Body of `POST /v1/nodes/trust` (the calling node), and its answer (the called node).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustMessage {
    /// The sender's node name.
    pub name: Name,
    /// SHA-256 of the sender's TLS certificate (hex).
    pub fingerprint: String,
    /// The sender's image-signing key (64 hex digits).
    pub image_key: String,
    /// A fresh secret (64 hex digits) the receiver presents when it calls the sender.
    pub secret: String,
    /// Where the sender listens, if it knows (`HOST:PORT`).
    #[serde(default)]
    pub addr: Option<String>,
}

fn hex32(field: &'static str, s: &str) -> Result<[u8; 32], NodeError> {
    crate::tls::parse_fingerprint(s).map_err(|_| NodeError::Bad {
        field,
        why: "not 64 hex digits".into(),
    })
}

use crate::auth::hex;

fn random32() -> Result<[u8; 32], NodeError> {
    crate::auth::random32().map_err(io("reading", PathBuf::from("the system's random source")))
}

fn agent_dir(paths: &AgentPaths) -> Result<Dir, NodeError> {
    Dir::create_all(paths.dir(), PRIVATE_DIR).map_err(io("creating", paths.dir()))
}

fn nodes_dir(paths: &AgentPaths) -> Result<Dir, NodeError> {
    agent_dir(paths)?
        .ensure_dir(NODES_DIR, PRIVATE_DIR)
        .map_err(io("creating", paths.dir().join(NODES_DIR)))
}

/// This agent's node name: `ROOT/agent/node-name`, made at first use from the host name and
/// 8 random hex digits (two agents on one machine are two nodes).
pub fn node_name(paths: &AgentPaths) -> Result<Name, NodeError> {
    let d = agent_dir(paths)?;
    let path = paths.dir().join(NODE_NAME_FILE);
    match d.read(NODE_NAME_FILE) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b).trim().to_string();
            return Name::new(s).map_err(|e| NodeError::Damaged {
                path,
                why: e.to_string(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading", path)(e)),
    }
    let host: String = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(40)
        .collect();
    let host = if host.is_empty() { "node".into() } else { host };
    let r = random32()?;
    let name = Name::new(format!("{host}-{}", &hex(&r)[..8]))?;
    d.write_atomic(NODE_NAME_FILE, format!("{name}\n").as_bytes(), PRIVATE_FILE)
        .map_err(io("writing", path))?;
    Ok(name)
}

/// This agent's identity (creates its name, host key and certificate if missing).
pub fn identity(paths: &AgentPaths) -> Result<Identity, NodeError> {
    let name = node_name(paths)?;
    let keys = Keyring::load_or_create(&paths.root).map_err(NodeError::Keys)?;
    let image_key = keys.host().cloned().ok_or_else(|| NodeError::Bad {
        field: "host key",
        why: "missing after creation".into(),
    })?;
    crate::tls::ensure_self_signed(paths, vec!["localhost".into()]).map_err(NodeError::Tls)?;
    let fingerprint = crate::tls::cert_file_fingerprint(&paths.tls_dir().join("cert.pem"))
        .map_err(NodeError::Tls)?;
    Ok(Identity {
        name,
        fingerprint,
        image_key,
    })
}

fn key_file(name: &Name) -> String {
    format!("node-{name}.key")
}

/// Record `msg`'s sender as trusted: its key first (under `keys/trusted/`), then its record
/// (the record's presence is the trust). `secret_from` is what the sender will present.
fn store(
    paths: &AgentPaths,
    msg: &TrustMessage,
    secret_from: &[u8; 32],
    first_seen: bool,
) -> Result<NodeRecord, NodeError> {
    let key = hex32("image_key", &msg.image_key)?;
    hex32("secret", &msg.secret)?;
    let fingerprint = if msg.fingerprint.is_empty() {
        None
    } else {
        Some(hex(&hex32("fingerprint", &msg.fingerprint)?))
    };
    let key_id = stasis_image::trust::key_id(&key).to_string();
    Keyring::add_trusted(&paths.root, &key_file(&msg.name), &key).map_err(NodeError::Keys)?;
    let rec = NodeRecord {
        name: msg.name.clone(),
        addr: msg.addr.clone(),
        fingerprint,
        first_seen,
        key_id,
        secret_to: msg.secret.to_ascii_lowercase(),
        secret_from_hash: blake3::hash(secret_from).to_hex().to_string(),
        trusted_at_ms: crate::unix_ms(),
    };
    let d = nodes_dir(paths)?;
    let file = format!("{}.json", rec.name);
    let body = serde_json::to_vec_pretty(&rec).expect("a record serialises");
    d.write_atomic(&file, &body, PRIVATE_FILE)
        .map_err(io("writing", d.child_path(&file)))?;
    Ok(rec)
}

/// The called side of `POST /v1/nodes/trust`: trust the caller, answer with this node.
/// `fingerprint` is the certificate the listener really uses (it may differ from the default
/// one under `ROOT/agent/tls/` when the agent was given `--tls-cert`).
pub fn accept(
    paths: &AgentPaths,
    msg: &TrustMessage,
    fingerprint: Option<[u8; 32]>,
) -> Result<TrustMessage, NodeError> {
    let me = identity(paths)?;
    if msg.name == me.name {
        return Err(NodeError::Itself(me.name));
    }
    let secret = random32()?;
    store(paths, msg, &secret, false)?;
    tracing::info!(node = %msg.name, "trusting node (asked by it, with this agent's token)");
    Ok(TrustMessage {
        name: me.name,
        fingerprint: hex(&fingerprint.unwrap_or(me.fingerprint)),
        image_key: hex(me.image_key.secret()),
        secret: hex(&secret),
        addr: None,
    })
}

/// What [`trust`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Trusted {
    /// The other node's record, as stored here.
    pub node: NodeRecord,
    /// This node's name (what the other one now knows it as).
    pub local_name: Name,
}

/// The calling side: make this agent and the agent at `addr` trust each other, with the other
/// agent's API `token`. `pin`: its certificate's SHA-256; `None` pins the one first seen.
pub fn trust(
    paths: &AgentPaths,
    addr: &str,
    token: &str,
    pin: Option<[u8; 32]>,
) -> Result<Trusted, NodeError> {
    let me = identity(paths)?;
    let secret = random32()?;
    let msg = TrustMessage {
        name: me.name.clone(),
        fingerprint: hex(&me.fingerprint),
        image_key: hex(me.image_key.secret()),
        secret: hex(&secret),
        addr: None,
    };
    let peer_err = |source| NodeError::Peer {
        addr: addr.to_string(),
        source,
    };
    let (client, seen) = crate::client::Client::to_node(addr, pin).map_err(peer_err)?;
    let body = serde_json::to_value(&msg).expect("serialises");
    let answer = client
        .with_token(token)
        .post("/v1/nodes/trust", Some(&body))
        .map_err(peer_err)?;
    let mut reply: TrustMessage = serde_json::from_value(answer).map_err(|e| NodeError::Bad {
        field: "answer",
        why: e.to_string(),
    })?;
    if reply.name == me.name {
        return Err(NodeError::Itself(me.name));
    }
    let seen = seen.get();
    match seen {
        Some(fp) if hex32("fingerprint", &reply.fingerprint)? != fp => {
            return Err(NodeError::FingerprintMismatch {
                addr: addr.into(),
                said: reply.fingerprint,
                seen: hex(&fp),
            })
        }
        Some(_) => {}
        // Plain HTTP on loopback: nothing was pinned.
        None => reply.fingerprint.clear(),
    }
    reply.addr = Some(addr.to_string());
    let node = store(paths, &reply, &secret, seen.is_some() && pin.is_none())?;
    Ok(Trusted {
        node,
        local_name: me.name,
    })
}

/// Every trusted node, by name.
pub fn list(paths: &AgentPaths) -> Result<Vec<NodeRecord>, NodeError> {
    let dirpath = paths.dir().join(NODES_DIR);
    let d = match Dir::open(&dirpath) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("opening", dirpath)(e)),
    };
    let mut names = d.entries().map_err(io("listing", dirpath.clone()))?;
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let n = n.to_string_lossy().into_owned();
        if n.starts_with('.') || !n.ends_with(".json") {
            continue;
        }
        out.push(read_record(&d, &n)?);
    }
    Ok(out)
}

fn read_record(d: &Dir, file: &str) -> Result<NodeRecord, NodeError> {
    let b = d.read(file).map_err(io("reading", d.child_path(file)))?;
    serde_json::from_slice(&b).map_err(|e| NodeError::Damaged {
        path: d.child_path(file),
        why: e.to_string(),
    })
}

/// The trusted node called `what`, or the one trusted at address `what` (`HOST:PORT`).
pub fn find(paths: &AgentPaths, what: &str) -> Result<NodeRecord, NodeError> {
    list(paths)?
        .into_iter()
        .find(|r| r.name.as_str() == what || r.addr.as_deref() == Some(what))
        .ok_or_else(|| NodeError::Unknown(what.to_string()))
}

/// Stop trusting node `name`: its record, then its image key.
pub fn forget(paths: &AgentPaths, name: &Name) -> Result<(), NodeError> {
    let d = nodes_dir(paths)?;
    let file = format!("{name}.json");
    match d.remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(NodeError::Unknown(name.to_string()))
        }
        Err(e) => return Err(io("removing", d.child_path(&file))(e)),
    }
    Keyring::remove_trusted(&paths.root, &key_file(name)).map_err(NodeError::Keys)?;
    Ok(())
}

/// The credential this node presents to `rec` (`Bearer node.NAME.SECRET`, NAME = this node).
pub fn credential(paths: &AgentPaths, rec: &NodeRecord) -> Result<String, NodeError> {
    Ok(format!(
        "{CREDENTIAL_PREFIX}{}.{}",
        node_name(paths)?,
        rec.secret_to
    ))
}

/// Whether `cred` (the text after `Bearer `) is the credential of a trusted node; its name
/// if so. Compared as blake3 hashes (constant time).
pub fn check_secret(paths: &AgentPaths, cred: &str) -> Option<Name> {
    let rest = cred.strip_prefix(CREDENTIAL_PREFIX)?;
    let (name, secret) = rest.rsplit_once('.')?;
    let name = Name::new(name).ok()?;
    let secret = hex32("secret", secret).ok()?;
    let d = Dir::open(paths.dir().join(NODES_DIR)).ok()?;
    let rec = read_record(&d, &format!("{name}.json")).ok()?;
    let want = blake3::Hash::from_hex(&rec.secret_from_hash).ok()?;
    (blake3::hash(&secret) == want).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stasis_image::trust::KEY_LEN;

    fn msg(name: &str) -> TrustMessage {
        TrustMessage {
            name: Name::new(name).unwrap(),
            fingerprint: hex(&[7u8; 32]),
            image_key: hex(&[9u8; KEY_LEN]),
            secret: hex(&[3u8; 32]),
            addr: None,
        }
    }

    #[test]
    fn accepted_node_is_stored_with_its_key_and_credential() {
        let t = tempfile::tempdir().unwrap();
        let paths = AgentPaths::new(t.path());
        let reply = accept(&paths, &msg("peer-a"), None).unwrap();
        let me = identity(&paths).unwrap();
        assert_eq!(reply.name, me.name);
        assert_eq!(reply.image_key, hex(me.image_key.secret()));
        let recs = list(&paths).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].name.as_str(), "peer-a");
        assert_eq!(
            recs[0].fingerprint.as_deref(),
            Some(hex(&[7u8; 32]).as_str())
        );
        let keys = Keyring::load(&paths.root).unwrap();
        assert!(keys.trusted().iter().any(|k| k.secret() == &[9u8; KEY_LEN]));
        // The peer presents the secret of the reply; nothing else passes.
        let good = format!("node.peer-a.{}", reply.secret);
        assert_eq!(check_secret(&paths, &good).unwrap().as_str(), "peer-a");
        assert!(check_secret(&paths, &format!("node.peer-b.{}", reply.secret)).is_none());
        assert!(check_secret(&paths, &format!("node.peer-a.{}", hex(&[0u8; 32]))).is_none());
        assert!(check_secret(&paths, "node.peer-a").is_none());
        forget(&paths, &Name::new("peer-a").unwrap()).unwrap();
        assert!(list(&paths).unwrap().is_empty());
        assert!(Keyring::load(&paths.root).unwrap().trusted().is_empty());
        assert!(check_secret(&paths, &good).is_none());
    }

    #[test]
    fn refuses_itself_and_bad_fields() {
        let t = tempfile::tempdir().unwrap();
        let paths = AgentPaths::new(t.path());
        let me = node_name(&paths).unwrap();
        assert!(matches!(
            accept(&paths, &msg(me.as_str()), None),
            Err(NodeError::Itself(_))
        ));
        let mut m = msg("peer-x");
        m.image_key = "zz".into();
        assert!(matches!(
            accept(&paths, &m, None),
            Err(NodeError::Bad { .. })
        ));
        assert!(list(&paths).unwrap().is_empty());
        assert_eq!(node_name(&paths).unwrap(), me, "the node name is kept");
    }
}
