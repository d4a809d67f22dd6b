//! A blocking client of the agent's API, for the CLI and tests.
//!
//! It speaks HTTP/1.1 (hyper) over the agent's unix socket (`unix:/path` or a bare absolute
//! path), over TCP (`http://HOST:PORT`) or over TLS (`https://HOST:PORT`, the agent's
//! certificate pinned: [`Client::with_pin`]). Over TCP and TLS it sends the agent's token
//! ([`Client::with_token`]) as `Authorization: Bearer`; over the unix socket it sends none (the
//! agent decides by the peer's credentials). Every call runs on a small current-thread tokio
//! runtime of its own, so callers stay synchronous. A client made with
//! [`Client::wait_ready`] waits a bounded time for an agent that is still starting (its socket
//! not there yet, or refusing connections).
//!
//! [`Client::follow_events`] reads the event stream and reconnects on its own after a
//! disconnect, from the last sequence number it delivered, so the caller misses nothing.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
    /// `host:port` over TLS.
    Https(String),
}

impl std::str::FromStr for Endpoint {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, ClientError> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        for (scheme, tls) in [("http://", false), ("https://", true)] {
            if let Some(rest) = s.strip_prefix(scheme) {
                let hostport = rest.trim_end_matches('/');
                if !hostport.is_empty() && !hostport.contains('/') {
                    return Ok(if tls {
                        Endpoint::Https(hostport.to_string())
                    } else {
                        Endpoint::Tcp(hostport.to_string())
                    });
                }
            }
        }
        Err(ClientError::BadEndpoint(s.to_string()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "http://{a}"),
            Endpoint::Https(a) => write!(f, "https://{a}"),
        }
    }
}

/// Whether `addr` (`HOST:PORT`) names this machine's loopback.
fn is_loopback(addr: &str) -> bool {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint text does not parse.
    #[error("bad agent address '{0}': use unix:/path/to/agent.sock, http://HOST:PORT or https://HOST:PORT")]
    BadEndpoint(String),
    /// An https endpoint without a pinned certificate.
    #[error("{0} needs the agent's certificate pinned: --agent-fingerprint SHA256 or --agent-cert FILE (root reads ROOT/agent/tls/cert.pem by itself)")]
    NoPin(Endpoint),
    /// The pin could not be used.
    #[error("the agent's certificate pin")]
    Pin(#[source] crate::tls::TlsError),
    /// The TLS handshake failed (a certificate other than the pinned one, among others).
    #[error("TLS with the agent at {endpoint} failed")]
    Tls {
        /// Where.
        endpoint: Endpoint,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No agent answers there.
    #[error("no agent answers at {endpoint} (start one with `stasis agent --root DIR`)")]
    Unreachable {
        /// Where.
        endpoint: Endpoint,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to the agent at {endpoint}: {message}")]
    Http {
        /// Where.
        endpoint: Endpoint,
        /// What.
        message: String,
    },
    /// The agent answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The agent's message.
        message: String,
    },
}

/// A client of one agent.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Bound on each request.
    pub timeout: Duration,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl Client {
    /// A client of the agent at `endpoint`.
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            token: None,
            tls: None,
            timeout: Duration::from_secs(600),
        }
    }

    /// Send `token` as `Authorization: Bearer` over TCP and TLS (never over the unix socket).
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// Pin the agent's certificate by its SHA-256 (for `https://`).
    pub fn with_pin(mut self, sha256: [u8; 32]) -> Result<Client, ClientError> {
        self.tls = Some(crate::tls::pinned_client(sha256).map_err(ClientError::Pin)?);
        Ok(self)
    }

    /// A client of the agent at `addr` (`HOST:PORT`) for node trust: over TLS, pinning `pin`
    /// or else the certificate first seen (returned in [`Seen`](crate::tls::Seen) once the
    /// handshake ran); a loopback listener that does not speak TLS is reached over plain HTTP
    /// when no pin is given (then nothing is seen).
    pub fn to_node(
        addr: &str,
        pin: Option<[u8; 32]>,
    ) -> Result<(Client, crate::tls::Seen), ClientError> {
        let seen = crate::tls::Seen::default();
        let config = crate::tls::recording_client(pin, seen.clone()).map_err(ClientError::Pin)?;
        let mut tls = Client::new(Endpoint::Https(addr.to_string()));
        tls.tls = Some(config);
        tls.timeout = Duration::from_secs(30);
        match tls.handshake() {
            Ok(()) => Ok((tls, seen)),
            Err(ClientError::Tls { source, .. })
                if pin.is_none()
                    && is_loopback(addr)
                    && matches!(
                        source.kind(),
                        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                    ) =>
            {
                tracing::info!(
                    addr,
                    "the agent there does not speak TLS (loopback): plain HTTP"
                );
                let mut plain = Client::new(Endpoint::Tcp(addr.to_string()));
                plain.timeout = tls.timeout;
                Ok((plain, crate::tls::Seen::default()))
            }
            Err(e) => Err(e),
        }
    }

    /// Connect (and for TLS, complete the handshake) without sending a request.
    fn handshake(&self) -> Result<(), ClientError> {
        let rt = self.runtime()?;
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), self.connect())
                .await
                .map_err(|_| self.http("no TLS handshake within 10 s".into()))?
                .map(drop)
        })
    }

    /// Where it talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn runtime(&self) -> Result<tokio::runtime::Runtime, ClientError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| self.http(format!("starting a runtime: {e}")))
    }

    fn http(&self, message: String) -> ClientError {
        ClientError::Http {
            endpoint: self.endpoint.clone(),
            message,
        }
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            endpoint: self.endpoint.clone(),
            source,
        };
        Ok(match &self.endpoint {
            Endpoint::Unix(p) => Box::new(
                tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(unreachable)?,
            ),
            Endpoint::Tcp(a) => Box::new(
                tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .map_err(unreachable)?,
            ),
            Endpoint::Https(a) => {
                let config = self
                    .tls
                    .clone()
                    .ok_or_else(|| ClientError::NoPin(self.endpoint.clone()))?;
                let tcp = tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .map_err(unreachable)?;
                // The pin replaces name checks; the name only goes into SNI.
                let host = a
                    .rsplit_once(':')
                    .map_or(a.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name =
                    rustls_pki_types::ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
                        rustls_pki_types::ServerName::try_from("localhost").expect("a valid name")
                    });
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|source| ClientError::Tls {
                        endpoint: self.endpoint.clone(),
                        source,
                    })?;
                Box::new(tls)
            }
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.http(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = match &self.endpoint {
            Endpoint::Tcp(a) | Endpoint::Https(a) => a.clone(),
            Endpoint::Unix(_) => "localhost".into(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        if let (Some(t), Endpoint::Tcp(_) | Endpoint::Https(_)) = (&self.token, &self.endpoint) {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| self.http(format!("building the request: {e}")))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| self.http(format!("request: {e}")))
    }

    /// One request; the JSON answer on success, [`ClientError::Api`] for an error status.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let rt = self.runtime()?;
        rt.block_on(async {
            let fut = async {
                let resp = self.send(method, path, body, &[]).await?;
                let status = resp.status();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| self.http(format!("reading the answer: {e}")))?
                    .to_bytes();
                let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&bytes).into_owned())
                });
                if status.is_success() {
                    Ok(v)
                } else {
                    Err(ClientError::Api {
                        status: status.as_u16(),
                        message: v["error"]
                            .as_str()
                            .map(String::from)
                            .unwrap_or_else(|| format!("HTTP {status}: {v}")),
                    })
                }
            };
            tokio::time::timeout(self.timeout, fut)
                .await
                .map_err(|_| self.http(format!("no answer within {:?}", self.timeout)))?
        })
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None)
    }

    /// POST `body` to `path`.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.call(Method::POST, path, body)
    }

    /// DELETE `path`.
    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::DELETE, path, None)
    }

    /// Wait up to `bound` for the agent to answer `/v1/health`.
    pub fn wait_ready(&self, bound: Duration) -> Result<Value, ClientError> {
        let deadline = Instant::now() + bound;
        loop {
            match self.get("/v1/health") {
                Err(ClientError::Unreachable { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                r => return r,
            }
        }
    }

    /// Follow the event stream from after `since`, calling `f` for each event in order until
    /// it returns false. A dropped connection is reopened from the last event delivered
    /// (within `reconnect_for` of trying), so no event is missed or repeated.
    pub fn follow_events(
        &self,
        since: u64,
        reconnect_for: Duration,
        mut f: impl FnMut(&stasis_cluster::Event) -> bool,
    ) -> Result<(), ClientError> {
        let rt = self.runtime()?;
        let mut last = since;
        let mut down_since: Option<Instant> = None;
        loop {
            let r: Result<bool, ClientError> = rt.block_on(async {
                let resp = self
                    .send(
                        Method::GET,
                        &format!("/v1/events/stream?since={last}"),
                        None,
                        &[("accept", "text/event-stream".into())],
                    )
                    .await?;
                if !resp.status().is_success() {
                    return Err(ClientError::Api {
                        status: resp.status().as_u16(),
                        message: format!("event stream refused: HTTP {}", resp.status()),
                    });
                }
                down_since = None;
                let mut body = resp.into_body();
                let mut buf = String::new();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| self.http(format!("event stream: {e}")))?;
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    buf.push_str(&String::from_utf8_lossy(&data));
                    while let Some(end) = buf.find("\n\n") {
                        let msg: String = buf.drain(..end + 2).collect();
                        let data: String = msg
                            .lines()
                            .filter_map(|l| l.strip_prefix("data:"))
                            .map(|l| l.strip_prefix(' ').unwrap_or(l))
                            .collect::<Vec<_>>()
                            .join("\n");
                        if data.is_empty() {
                            continue;
                        }
                        let Ok(e) = serde_json::from_str::<stasis_cluster::Event>(&data) else {
                            continue;
                        };
                        if e.seq <= last {
                            continue;
                        }
                        last = e.seq;
                        if !f(&e) {
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            });
            match r {
                Ok(false) => return Ok(()),
                Ok(true) | Err(ClientError::Unreachable { .. }) | Err(ClientError::Http { .. }) => {
                    let started = *down_since.get_or_insert_with(Instant::now);
                    if started.elapsed() > reconnect_for {
                        return match r {
                            Err(e) => Err(e),
                            Ok(_) => Err(self.http("the event stream ended".into())),
                        };
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            "unix:/x/agent.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/x/agent.sock".into())
        );
        assert_eq!(
            "/x/agent.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/x/agent.sock".into())
        );
        assert_eq!(
            "http://127.0.0.1:7670/".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.1:7670".into())
        );
        assert_eq!(
            "https://10.0.0.1:7670".parse::<Endpoint>().unwrap(),
            Endpoint::Https("10.0.0.1:7670".into())
        );
        assert!("ftp://x".parse::<Endpoint>().is_err());
        assert!("http://".parse::<Endpoint>().is_err());
    }
}
