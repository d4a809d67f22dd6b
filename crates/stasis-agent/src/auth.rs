//! Who may use the agent's API, and how it is decided.
//!
//! The agent runs as root and turns requests into processes with any credentials, so every
//! interface authenticates before a handler runs:
//!
//! - **Unix socket** (`ROOT/api/agent.sock`, [`crate::daemon::AgentPaths::socket`]): the
//!   peer's credentials decide (`SO_PEERCRED`, taken when the connection is accepted). Root
//!   (uid 0) is allowed; so are the members of the admin group named by
//!   `stasis agent --admin-group NAME` (its gid is resolved once, at start). Membership is the
//!   peer process's own: its effective gid, and the supplementary groups the kernel holds for
//!   it (`Groups:` of `/proc/PID/status`), read when the connection is accepted. We use the
//!   process's groups rather than the group database (`getgrouplist`) because they are what the
//!   kernel itself used to let the process through the socket directory's permissions: a user
//!   added to the group who has not logged in again, or a process that dropped its groups, is
//!   refused by both alike. As the pid could be reused between `connect` and the read, the
//!   status's effective uid must equal the `SO_PEERCRED` uid, else the peer is refused.
//!   Everybody else gets 403 naming their uid and why. File permissions keep them out first:
//!   without an admin group `ROOT` and `ROOT/api` are 0700 root and the socket 0600; with one,
//!   `ROOT` is 0710 root:GROUP (the group may pass through, not list), `ROOT/api` 0750
//!   root:GROUP and the socket 0660 root:GROUP; everything else under `ROOT` stays root-only.
//!   The unix socket does no Host/Origin check: browsers cannot reach it.
//! - **TCP** (`--listen`): every request needs the agent's token, as `Authorization: Bearer
//!   TOKEN` or as the dashboard's session cookie, except `GET /` (the dashboard page, which
//!   holds no data) and `POST /v1/login`/`/v1/logout`. Without it: 401 before any handler
//!   runs (`/v1/health` included). The token is 32 random bytes (`getrandom`), hex, created at
//!   the agent's first start in `ROOT/agent/token` (0600 root, created with `O_EXCL|O_NOFOLLOW`
//!   in a 0700 directory). `stasis token --rotate` replaces it atomically (temporary file +
//!   rename); the agent notices on the next request (it compares the file's inode, size and
//!   mtime on each authentication and re-reads it when they changed), so the old token and
//!   every session made from it stop working at once. Tokens are compared in constant time
//!   (equality of their blake3 hashes).
//! - **Browsers**: `POST /v1/login` with the token sets `stasis_session`, an HttpOnly,
//!   SameSite=Strict, Path=/ cookie (`Secure` under TLS) whose value is a key derived from the
//!   token (blake3 `derive_key`), so rotating the token logs every session out. A request
//!   authenticated by the cookie that changes state (any method but GET/HEAD/OPTIONS) must also
//!   carry `X-Stasis-Request: 1`, a header a cross-origin form cannot send (and a cross-origin
//!   `fetch` cannot either without a CORS preflight, which the agent never grants). On every
//!   TCP request the `Host` header must name the listener — its `IP:PORT`, `localhost:PORT` on
//!   a loopback listener, any IP literal with the right port on a wildcard listener, or a name
//!   given with `--allow-host` — else 421 (this defeats DNS rebinding, whose requests carry the
//!   attacker's name); a request with an `Origin` that is not the listener itself (scheme
//!   included; `null` too) is refused 403.
//! - **TLS**: see [`crate::tls`]; a non-loopback `--listen` must use it.

use crate::api::ApiError;
use crate::daemon::AgentPaths;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stasis_image::safefs::{Dir, PRIVATE_DIR, PRIVATE_FILE};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Name of the token file in `ROOT/agent/`.
pub const TOKEN_FILE: &str = "token";
/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "stasis_session";
/// The header a state-changing cookie-authenticated request must carry (value `1`).
pub const REQUEST_HEADER: &str = "x-stasis-request";
/// Default cap on concurrent event streams.
pub const DEFAULT_MAX_STREAMS: usize = 1024;

/// How the API is exposed and protected (`stasis agent` flags).
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// `--admin-group`: members may use the unix socket.
    pub admin_group: Option<String>,
    /// `--max-streams`: concurrent event streams, past which 429.
    pub max_streams: usize,
    /// `--tls`: TLS on the TCP listener even on loopback.
    pub tls: bool,
    /// `--tls-cert` (PEM chain; with `tls_key`): instead of the generated certificate.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` (PEM private key).
    pub tls_key: Option<PathBuf>,
    /// `--allow-host`: more names the `Host` header may carry.
    pub allow_hosts: Vec<String>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            admin_group: None,
            max_streams: DEFAULT_MAX_STREAMS,
            tls: false,
            tls_cert: None,
            tls_key: None,
            allow_hosts: Vec::new(),
        }
    }
}

// ------------------------------------------------------------------------------------ token

/// Errors reading, creating or rotating the agent's token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The caller is not root.
    #[error("only root can read or change the agent's token ({path} is root's, mode 0600): run this as root, or ask an administrator for it")]
    NotRoot {
        /// The token file.
        path: PathBuf,
    },
    /// No token yet.
    #[error("there is no agent token at {path}: start the agent once (it creates one) or run `stasis token --rotate` as root")]
    Missing {
        /// The token file.
        path: PathBuf,
    },
    /// The file does not hold a token.
    #[error("{path} does not hold an agent token (64 hex digits)")]
    Malformed {
        /// The token file.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from the kernel's CSPRNG.
pub(crate) fn random32() -> io::Result<[u8; 32]> {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        filled +=
            rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(buf)
}

/// A new random token: 32 bytes from the kernel's CSPRNG, as 64 hex digits.
pub fn new_token() -> io::Result<String> {
    Ok(hex(&random32()?))
}

fn well_formed(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

fn must_be_root(paths: &AgentPaths) -> Result<(), TokenError> {
    if !rustix::process::geteuid().is_root() {
        return Err(TokenError::NotRoot {
            path: paths.token(),
        });
    }
    Ok(())
}

fn parse_token(bytes: &[u8], paths: &AgentPaths) -> Result<String, TokenError> {
    let t = String::from_utf8_lossy(bytes).trim().to_string();
    if !well_formed(&t) {
        return Err(TokenError::Malformed {
            path: paths.token(),
        });
    }
    Ok(t)
}

/// The agent's token (`stasis token`; the CLI over TCP). Root only.
pub fn read_token(paths: &AgentPaths) -> Result<String, TokenError> {
    must_be_root(paths)?;
    let missing = || TokenError::Missing {
        path: paths.token(),
    };
    let dir = match Dir::open(paths.dir()) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
        Err(source) => {
            return Err(TokenError::Io {
                what: "opening",
                path: paths.dir(),
                source,
            })
        }
    };
    match dir.read(TOKEN_FILE) {
        Ok(b) => parse_token(&b, paths),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing()),
        Err(source) => Err(TokenError::Io {
            what: "reading",
            path: paths.token(),
            source,
        }),
    }
}

/// Replace the token with a new one, atomically (`stasis token --rotate`); a running agent
/// uses it from its next request on. Root only. Returns the new token.
pub fn rotate_token(paths: &AgentPaths) -> Result<String, TokenError> {
    must_be_root(paths)?;
    let dir = Dir::create_all(paths.dir(), PRIVATE_DIR).map_err(|source| TokenError::Io {
        what: "creating",
        path: paths.dir(),
        source,
    })?;
    let t = new_token().map_err(|source| TokenError::Io {
        what: "generating a token for",
        path: paths.token(),
        source,
    })?;
    dir.write_atomic(TOKEN_FILE, format!("{t}\n").as_bytes(), PRIVATE_FILE)
        .map_err(|source| TokenError::Io {
            what: "writing",
            path: paths.token(),
            source,
        })?;
    Ok(t)
}

/// Create the token file if there is none (the agent's first start).
pub(crate) fn ensure_token(dir: &Dir, paths: &AgentPaths) -> Result<(), TokenError> {
    let io_err = |what| {
        move |source| TokenError::Io {
            what,
            path: paths.token(),
            source,
        }
    };
    if dir.exists(TOKEN_FILE).map_err(io_err("looking for"))? {
        return Ok(());
    }
    let t = new_token().map_err(io_err("generating"))?;
    let mut f = dir
        .create_file(TOKEN_FILE, PRIVATE_FILE)
        .map_err(io_err("creating"))?;
    f.write_all(format!("{t}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing"))?;
    dir.sync().map_err(io_err("syncing the directory of"))?;
    tracing::info!(path = %paths.token().display(), "created the agent's API token (`stasis token` prints it)");
    Ok(())
}

/// The session cookie's value for `token`.
fn session_of(token: &str) -> blake3::Hash {
    blake3::Hash::from(blake3::derive_key(
        "stasis agent dashboard session v1",
        token.as_bytes(),
    ))
}

/// The token file as the running agent sees it: re-read whenever it changed.
pub struct TokenFile {
    dir: Dir,
    paths: AgentPaths,
    cache: Mutex<Option<Cached>>,
}

struct Cached {
    id: (u64, u64, i64, i64, i64),
    token_hash: blake3::Hash,
    session: blake3::Hash,
}

impl TokenFile {
    /// The token in `dir` (`ROOT/agent`), created if missing.
    pub(crate) fn open(dir: Dir, paths: &AgentPaths) -> Result<TokenFile, TokenError> {
        ensure_token(&dir, paths)?;
        Ok(TokenFile {
            dir,
            paths: paths.clone(),
            cache: Mutex::new(None),
        })
    }

    /// Run `f` on the current token's hashes (None: no usable token; everything is refused).
    fn with_current<T>(&self, f: impl FnOnce(&Cached) -> T) -> Option<T> {
        let st = match self.dir.metadata(TOKEN_FILE) {
            Ok(st) => st,
            Err(e) => {
                tracing::error!(error = %e, path = %self.paths.token().display(), "the agent's token is gone: TCP requests are refused until `stasis token --rotate`");
                return None;
            }
        };
        let id = (
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime,
            st.st_mtime_nsec as i64,
        );
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(cache.as_ref(), Some(c) if c.id == id) {
            *cache = None;
            match self
                .dir
                .read(TOKEN_FILE)
                .map_err(|source| TokenError::Io {
                    what: "reading",
                    path: self.paths.token(),
                    source,
                })
                .and_then(|b| parse_token(&b, &self.paths))
            {
                Ok(t) => {
                    *cache = Some(Cached {
                        id,
                        token_hash: blake3::hash(t.as_bytes()),
                        session: session_of(&t),
                    })
                }
                Err(e) => {
                    tracing::error!(error = %stasis_partition::monitor::chain(&e), "the agent's token is unusable: TCP requests are refused");
                    return None;
                }
            }
        }
        cache.as_ref().map(f)
    }

    /// Whether `given` is the token (constant time).
    pub fn check_token(&self, given: &str) -> bool {
        let h = blake3::hash(given.trim().as_bytes());
        self.with_current(|c| c.token_hash == h).unwrap_or(false)
    }

    /// Whether `cookie` is a session made from the current token (constant time).
    pub fn check_session(&self, cookie: &str) -> bool {
        let Ok(h) = blake3::Hash::from_hex(cookie.trim()) else {
            return false;
        };
        self.with_current(|c| c.session == h).unwrap_or(false)
    }

    /// The session cookie value for the current token.
    fn session(&self) -> Option<String> {
        self.with_current(|c| c.session.to_hex().to_string())
    }
}

// ------------------------------------------------------------------------------ setup

/// Errors setting up the API's protection at the agent's start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `--admin-group` names no group.
    #[error("there is no group named '{0}' (stasis agent --admin-group): create it with groupadd, or leave the flag out")]
    NoSuchGroup(String),
    /// Looking the group up failed.
    #[error("looking up the group '{name}'")]
    GroupLookup {
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A plain listener on a non-loopback address.
    #[error("--listen {0} is not a loopback address, and the API is not served in clear text beyond loopback: add --tls (a self-signed certificate is generated under ROOT/agent/tls and its fingerprint logged), or --tls-cert FILE --tls-key FILE, or listen on 127.0.0.1")]
    PlainNonLoopback(SocketAddr),
    /// One of `--tls-cert`/`--tls-key` without the other.
    #[error("--tls-cert and --tls-key go together")]
    TlsHalf,
    /// TLS given without a TCP listener.
    #[error("TLS options need a TCP listener (--listen HOST:PORT)")]
    TlsWithoutListener,
    /// The token.
    #[error("the agent's token")]
    Token(#[source] TokenError),
    /// TLS.
    #[error("the agent's TLS certificate")]
    Tls(#[source] crate::tls::TlsError),
    /// The root or the socket's directory.
    #[error("{what} {path}")]
    Io {
        /// What.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Check the options, resolve the admin group, set the modes of the root and of the socket's
/// directory, create the token if missing, and load (or generate) the TLS certificate.
pub(crate) fn prepare(
    paths: &AgentPaths,
    opts: &ApiOptions,
    listen: Option<SocketAddr>,
) -> Result<crate::api::Security, SetupError> {
    let wants_tls = opts.tls || opts.tls_cert.is_some() || opts.tls_key.is_some();
    if opts.tls_cert.is_some() != opts.tls_key.is_some() {
        return Err(SetupError::TlsHalf);
    }
    match listen {
        Some(a) if !a.ip().is_loopback() && !wants_tls => {
            return Err(SetupError::PlainNonLoopback(a))
        }
        None if wants_tls => return Err(SetupError::TlsWithoutListener),
        _ => {}
    }
    let admin = match &opts.admin_group {
        None => None,
        Some(name) => {
            let gid = stasis_sys::sys::group_gid(name)
                .map_err(|source| SetupError::GroupLookup {
                    name: name.clone(),
                    source,
                })?
                .ok_or_else(|| SetupError::NoSuchGroup(name.clone()))?;
            Some(Arc::new(AdminGroup {
                name: name.clone(),
                gid,
            }))
        }
    };
    let io_err = |what, path: PathBuf| move |source| SetupError::Io { what, path, source };
    // The root: 0700, or 0710 root:GROUP so that the group may pass through to the socket's
    // directory without listing (or reaching) anything else.
    let root = Dir::create_all(&paths.root, PRIVATE_DIR)
        .map_err(io_err("creating", paths.root.clone()))?;
    let api_name = paths
        .api_dir()
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let api = root
        .ensure_dir(&api_name, PRIVATE_DIR)
        .map_err(io_err("creating", paths.api_dir()))?;
    let set = |d: &Dir, gid: u32, mode: u32, path: PathBuf| {
        d.chown(Some(0), Some(gid))
            .and_then(|()| d.chmod(mode))
            .map_err(io_err("setting the owner and mode of", path))
    };
    match &admin {
        Some(g) => {
            set(&root, g.gid, 0o710, paths.root.clone())?;
            set(&api, g.gid, 0o750, paths.api_dir())?;
        }
        None => {
            root.chmod(PRIVATE_DIR)
                .map_err(io_err("setting the mode of", paths.root.clone()))?;
            set(&api, 0, PRIVATE_DIR, paths.api_dir())?;
        }
    }
    let agent_dir =
        Dir::create_all(paths.dir(), PRIVATE_DIR).map_err(io_err("creating", paths.dir()))?;
    let token = Arc::new(TokenFile::open(agent_dir, paths).map_err(SetupError::Token)?);
    let tls = match (listen, wants_tls) {
        (Some(addr), true) => {
            let (cert, key) = match (&opts.tls_cert, &opts.tls_key) {
                (Some(c), Some(k)) => (c.clone(), k.clone()),
                _ => {
                    let mut names = vec!["localhost".to_string(), addr.ip().to_string()];
                    names.extend(opts.allow_hosts.iter().cloned());
                    crate::tls::ensure_self_signed(paths, names).map_err(SetupError::Tls)?;
                    (
                        paths.tls_dir().join("cert.pem"),
                        paths.tls_dir().join("key.pem"),
                    )
                }
            };
            let t = crate::tls::server(&cert, &key).map_err(SetupError::Tls)?;
            let fp = crate::tls::fingerprint_hex(&t.fingerprint);
            tracing::info!(cert = %cert.display(), sha256 = %fp, "TLS certificate (clients pin it: --agent-fingerprint {fp})");
            Some(t)
        }
        _ => None,
    };
    raise_fd_limit(opts.max_streams);
    Ok(crate::api::Security {
        admin,
        token,
        tls,
        allow_hosts: opts.allow_hosts.clone(),
    })
}

/// Every stream is a connection: raise the soft limit on open files to the hard one.
fn raise_fd_limit(streams: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current.is_some_and(|c| c < streams as u64 + 256) && l.current != l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
}

// ------------------------------------------------------------------------- unix peers

/// The credentials of a unix-socket peer, taken when its connection was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCreds {
    /// Effective uid at `connect` (`SO_PEERCRED`).
    pub uid: u32,
    /// Effective gid at `connect`.
    pub gid: u32,
    /// Its pid (in our pid namespace).
    pub pid: Option<i32>,
    /// Its supplementary groups (from `/proc/PID/status`), or why they could not be read.
    pub groups: Result<Vec<u32>, PeerRefused>,
}

/// Why a unix-socket peer is refused, or its credentials could not be read (the 403 answer's
/// message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PeerRefused(pub String);

impl From<String> for PeerRefused {
    fn from(s: String) -> Self {
        PeerRefused(s)
    }
}

impl From<&str> for PeerRefused {
    fn from(s: &str) -> Self {
        PeerRefused(s.to_string())
    }
}

impl std::ops::Deref for PeerRefused {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// `ConnectInfo` of a unix-socket connection.
#[derive(Debug, Clone)]
pub struct UnixPeer(pub Result<PeerCreds, PeerRefused>);

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, tokio::net::UnixListener>,
    > for UnixPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        UnixPeer(peer_creds(stream.io()))
    }
}

fn peer_creds(s: &tokio::net::UnixStream) -> Result<PeerCreds, PeerRefused> {
    let c = s
        .peer_cred()
        .map_err(|e| PeerRefused(format!("cannot read the peer's credentials: {e}")))?;
    let (uid, gid, pid) = (c.uid(), c.gid(), c.pid());
    let groups = match pid {
        None => Err(PeerRefused::from("the peer's pid is unknown")),
        Some(p) => std::fs::read_to_string(format!("/proc/{p}/status"))
            .map_err(|e| PeerRefused(format!("cannot read /proc/{p}/status: {e}")))
            .and_then(|s| status_groups(&s, uid)),
    };
    Ok(PeerCreds {
        uid,
        gid,
        pid,
        groups,
    })
}

/// The supplementary groups in a `/proc/PID/status` text, if its effective uid is `uid`.
pub fn status_groups(status: &str, uid: u32) -> Result<Vec<u32>, PeerRefused> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let euid = field("Uid:")
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or(PeerRefused::from("no Uid: line in the peer's status"))?;
    if euid != uid {
        return Err(PeerRefused(format!(
            "the peer's pid now runs as uid {euid}, not uid {uid} (exited or changed credentials)"
        )));
    }
    field("Groups:")
        .ok_or(PeerRefused::from("no Groups: line in the peer's status"))?
        .split_whitespace()
        .map(|g| {
            g.parse::<u32>()
                .map_err(|_| PeerRefused(format!("bad group id {g:?}")))
        })
        .collect()
}

/// The admin group: name and gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminGroup {
    /// Name.
    pub name: String,
    /// Gid.
    pub gid: u32,
}

/// Decide whether a unix-socket peer may use the API: `Err` says why not.
pub fn authorize_peer(peer: &PeerCreds, admin: Option<&AdminGroup>) -> Result<(), PeerRefused> {
    if peer.uid == 0 {
        return Ok(());
    }
    let who = match peer.pid {
        Some(p) => format!("uid {} (pid {p})", peer.uid),
        None => format!("uid {}", peer.uid),
    };
    let Some(g) = admin else {
        return Err(PeerRefused(format!(
            "{who} is not root, and the agent has no admin group (stasis agent --admin-group NAME): only root may use this socket"
        )));
    };
    if peer.gid == g.gid {
        return Ok(());
    }
    match &peer.groups {
        Ok(list) if list.contains(&g.gid) => Ok(()),
        Ok(_) => Err(PeerRefused(format!(
            "{who} is not root and not in the agent's admin group '{}' (gid {})",
            g.name, g.gid
        ))),
        Err(why) => Err(PeerRefused(format!(
            "{who} is not root, and its groups could not be checked against the admin group '{}': {why}",
            g.name
        ))),
    }
}

/// The unix socket's guard: refuses (403) a peer that is not root or an admin group member.
pub(crate) async fn unix_guard(
    State(admin): State<Option<Arc<AdminGroup>>>,
    ConnectInfo(peer): ConnectInfo<UnixPeer>,
    req: Request,
    next: Next,
) -> Response {
    let verdict = peer.0.and_then(|p| authorize_peer(&p, admin.as_deref()));
    match verdict {
        Ok(()) => next.run(req).await,
        Err(why) => {
            tracing::warn!(%why, path = %req.uri().path(), "unix socket request refused");
            ApiError(StatusCode::FORBIDDEN, format!("forbidden: {why}")).into_response()
        }
    }
}

// ---------------------------------------------------------------------------- TCP

/// Which `Host` (and `Origin`) a TCP listener answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// The bound address.
    pub listen: SocketAddr,
    /// `--allow-host` names (lower case).
    pub allow: Vec<String>,
    /// Whether the listener speaks TLS (the Origin's scheme must be https).
    pub tls: bool,
}

fn split_host_port(h: &str) -> Option<(String, Option<u16>)> {
    let h = h.trim().to_ascii_lowercase();
    if h.is_empty() {
        return None;
    }
    if let Some(rest) = h.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if tail.is_empty() => None,
            None => return None,
        };
        return Some((ip.to_string(), port));
    }
    match h.rsplit_once(':') {
        Some((name, p)) if !name.contains(':') => Some((name.to_string(), Some(p.parse().ok()?))),
        Some(_) => None,
        None => Some((h, None)),
    }
}

impl HostPolicy {
    /// Whether a `Host` value names this listener.
    pub fn host_ok(&self, host: &str) -> bool {
        let Some((name, port)) = split_host_port(host) else {
            return false;
        };
        if self.allow.contains(&name) {
            return port.is_none_or(|p| p == self.listen.port());
        }
        if port != Some(self.listen.port()) {
            return false;
        }
        let ip = self.listen.ip();
        if let Ok(given) = name.parse::<IpAddr>() {
            return given == ip || ip.is_unspecified() || (ip.is_loopback() && given.is_loopback());
        }
        name == "localhost" && (ip.is_loopback() || ip.is_unspecified())
    }

    /// Whether an `Origin` value is this listener itself.
    pub fn origin_ok(&self, origin: &str) -> bool {
        let scheme = if self.tls { "https://" } else { "http://" };
        match origin.trim().strip_prefix(scheme) {
            Some(auth) if !auth.contains('/') => self.host_ok(auth),
            _ => false,
        }
    }
}

/// What the TCP guard needs.
pub struct TcpGuard {
    /// Host/Origin policy.
    pub hosts: HostPolicy,
    /// The token.
    pub token: Arc<TokenFile>,
    /// The agent's paths (trusted nodes' credentials).
    pub paths: AgentPaths,
    /// SHA-256 of the listener's certificate, when it speaks TLS.
    pub tls_fingerprint: Option<[u8; 32]>,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET && path == "/")
        || (method == Method::POST && (path == "/v1/login" || path == "/v1/logout"))
}

fn unauthorized(why: &str) -> Response {
    let mut r = ApiError(StatusCode::UNAUTHORIZED, why.to_string()).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"stasis\""),
    );
    r
}

/// The TCP listener's guard: Host, Origin, then the token (bearer or session cookie).
pub(crate) async fn tcp_guard(
    State(g): State<Arc<TcpGuard>>,
    req: Request,
    next: Next,
) -> Response {
    let h = req.headers();
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !g.hosts.host_ok(host) {
        tracing::warn!(host, "TCP request refused: foreign Host");
        return ApiError(
            StatusCode::MISDIRECTED_REQUEST,
            format!("Host {host:?} does not name this agent's listener ({}); use its address or add the name with `stasis agent --allow-host NAME`", g.hosts.listen),
        )
        .into_response();
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or("");
        if !g.hosts.origin_ok(o) {
            tracing::warn!(origin = o, "TCP request refused: foreign Origin");
            return ApiError(
                StatusCode::FORBIDDEN,
                format!("cross-origin requests are refused (Origin {o:?})"),
            )
            .into_response();
        }
    }
    if is_public(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    if let Some(a) = h.get(header::AUTHORIZATION) {
        let given = a.to_str().ok().and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
        return match given {
            Some(t) if g.token.check_token(t) => next.run(req).await,
            // A trusted node's credential opens the node routes only (not trust itself).
            Some(t) if t.starts_with(crate::nodes::CREDENTIAL_PREFIX) => {
                let path = req.uri().path();
                let node_route = path.starts_with("/v1/nodes/") && path != "/v1/nodes/trust";
                match crate::nodes::check_secret(&g.paths, t) {
                    Some(_) if node_route => next.run(req).await,
                    Some(n) => ApiError(
                        StatusCode::FORBIDDEN,
                        format!("node {n}'s credential does not open {path}"),
                    )
                    .into_response(),
                    None => {
                        unauthorized("not the credential of a trusted node (see `stasis node ls`)")
                    }
                }
            }
            _ => unauthorized("the bearer token is not the agent's (see `stasis token`)"),
        };
    }
    if let Some(c) = cookie(h, SESSION_COOKIE) {
        if !g.token.check_session(c) {
            return unauthorized("the session has ended (the token changed): log in again");
        }
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let marked = h.get(REQUEST_HEADER).is_some_and(|v| v.as_bytes() == b"1");
        if !safe && !marked {
            return ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "a {} with a session cookie needs the header X-Stasis-Request: 1",
                    req.method()
                ),
            )
            .into_response();
        }
        return next.run(req).await;
    }
    unauthorized("authentication required: send Authorization: Bearer TOKEN (`stasis token` prints it, as root) or log in on the dashboard")
}

/// `POST /v1/login` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    token: String,
}

/// `POST /v1/login`: a valid token sets the session cookie.
pub(crate) async fn login(
    State(g): State<Arc<TcpGuard>>,
    headers: HeaderMap,
    body: Result<axum::Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let axum::Json(l) = match body {
        Ok(b) => b,
        Err(e) => return ApiError(e.status(), e.body_text()).into_response(),
    };
    if headers
        .get(REQUEST_HEADER)
        .is_none_or(|v| v.as_bytes() != b"1")
    {
        return ApiError(
            StatusCode::FORBIDDEN,
            "a login needs the header X-Stasis-Request: 1".into(),
        )
        .into_response();
    }
    if !g.token.check_token(&l.token) {
        tracing::warn!("dashboard login with a wrong token");
        return unauthorized("wrong token");
    }
    let Some(s) = g.token.session() else {
        return unauthorized("the agent has no usable token");
    };
    let secure = if g.hosts.tls { "; Secure" } else { "" };
    let c = format!("{SESSION_COOKIE}={s}; HttpOnly; SameSite=Strict; Path=/{secure}");
    let mut r = axum::Json(serde_json::json!({ "ok": true })).into_response();
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /v1/logout`: clears the session cookie.
pub(crate) async fn logout(State(g): State<Arc<TcpGuard>>) -> Response {
    let secure = if g.hosts.tls { "; Secure" } else { "" };
    let c = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}");
    let mut r = axum::Json(serde_json::json!({ "ok": true })).into_response();
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The unix socket's login route: nothing to log in to (peer credentials decide).
pub(crate) async fn login_unix() -> Response {
    ApiError(
        StatusCode::BAD_REQUEST,
        "the unix socket authenticates by peer credentials: there is nothing to log in to".into(),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: Vec<u32>) -> PeerCreds {
        PeerCreds {
            uid,
            gid,
            pid: Some(42),
            groups: Ok(groups),
        }
    }

    #[test]
    fn peers_are_root_or_admin_group_members() {
        let g = AdminGroup {
            name: "ops".into(),
            gid: 900,
        };
        assert!(authorize_peer(&peer(0, 0, vec![]), None).is_ok());
        let e = authorize_peer(&peer(1000, 1000, vec![900]), None).unwrap_err();
        assert!(
            e.contains("uid 1000") && e.contains("no admin group"),
            "{e}"
        );
        assert!(authorize_peer(&peer(1000, 1000, vec![5, 900]), Some(&g)).is_ok());
        assert!(authorize_peer(&peer(1000, 900, vec![]), Some(&g)).is_ok());
        let e = authorize_peer(&peer(1000, 1000, vec![5]), Some(&g)).unwrap_err();
        assert!(e.contains("not in the agent's admin group 'ops'"), "{e}");
        let mut p = peer(1000, 1000, vec![]);
        p.groups = Err("gone".into());
        assert!(authorize_peer(&p, Some(&g)).is_err());
    }

    #[test]
    fn status_groups_checks_the_uid() {
        let s = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t4 900 \n";
        assert_eq!(status_groups(s, 1000).unwrap(), vec![4, 900]);
        assert!(status_groups(s, 1001).is_err());
        let s = "Uid:\t1000\t1000\t1000\t1000\nGroups:\t\n";
        assert_eq!(status_groups(s, 1000).unwrap(), Vec::<u32>::new());
    }

    fn policy(listen: &str, allow: &[&str], tls: bool) -> HostPolicy {
        HostPolicy {
            listen: listen.parse().unwrap(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            tls,
        }
    }

    #[test]
    fn hosts_must_name_the_listener() {
        let p = policy("127.0.0.1:7670", &["agent.example"], false);
        for ok in [
            "127.0.0.1:7670",
            "localhost:7670",
            "LOCALHOST:7670",
            "agent.example",
            "agent.example:7670",
            "[::1]:7670",
        ] {
            assert!(p.host_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example:7670",
            "127.0.0.1:7671",
            "127.0.0.1",
            "localhost",
            "agent.example:80",
            "10.0.0.1:7670",
            "127.0.0.1:7670:1",
            "[::1",
        ] {
            assert!(!p.host_ok(bad), "{bad}");
        }
        let p = policy("0.0.0.0:7670", &[], true);
        assert!(p.host_ok("10.1.2.3:7670"));
        assert!(!p.host_ok("rebind.example:7670"));
        assert!(p.origin_ok("https://10.1.2.3:7670"));
        assert!(!p.origin_ok("http://10.1.2.3:7670"));
        let p = policy("127.0.0.1:7670", &[], false);
        assert!(p.origin_ok("http://127.0.0.1:7670"));
        assert!(p.origin_ok("http://localhost:7670"));
        for bad in [
            "null",
            "http://evil.example",
            "http://evil.example:7670",
            "https://127.0.0.1:7670",
            "http://127.0.0.1:7670/x",
        ] {
            assert!(!p.origin_ok(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_are_random_hex_and_sessions_follow_them() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert!(well_formed(&a) && well_formed(&b) && a != b);
        assert_ne!(session_of(&a), session_of(&b));
        assert_eq!(session_of(&a), session_of(&a));
    }

    #[test]
    fn token_file_is_reread_when_rotated() {
        let t = tempfile::tempdir().unwrap();
        let paths = AgentPaths::new(t.path());
        let dir = Dir::create_all(paths.dir(), PRIVATE_DIR).unwrap();
        let f = TokenFile::open(Dir::open(paths.dir()).unwrap(), &paths).unwrap();
        let first = parse_token(&dir.read(TOKEN_FILE).unwrap(), &paths).unwrap();
        let mode = dir.metadata(TOKEN_FILE).unwrap().st_mode & 0o777;
        assert_eq!(mode, 0o600);
        assert!(f.check_token(&first));
        assert!(!f.check_token("nope"));
        let s1 = f.session().unwrap();
        assert!(f.check_session(&s1));
        let second = new_token().unwrap();
        dir.write_atomic(TOKEN_FILE, second.as_bytes(), PRIVATE_FILE)
            .unwrap();
        assert!(!f.check_token(&first));
        assert!(f.check_token(&second));
        assert!(!f.check_session(&s1));
    }
}
