//! The agent's HTTP API (v1), its event stream and the dashboard.
//!
//! Served on the unix socket ([`crate::daemon::AgentPaths::socket`]) and on `--listen`, each
//! behind its guard ([`crate::auth`]: peer credentials on the socket; Host, Origin and the
//! token on TCP, with TLS from [`crate::tls`]). Bodies are limited to [`BODY_LIMIT`] (413
//! beyond). Documented in
//! `assets/openapi.yaml` (served at `/openapi.yaml`); a unit test checks that every route here
//! is in that document and the reverse. Errors are `{"error": "..."}` with a 4xx status for
//! what the caller can fix (400 bad request, 404 unknown, 409 wrong state or name taken) and
//! 500 for an operation that failed (the message says why), 503 while shutting down.
//!
//! The event stream (`/v1/events/stream`) is Server-Sent Events: each event is sent with
//! `id: SEQ`, so a client that reconnects with `Last-Event-ID` (browsers do this on their own)
//! or `?since=SEQ` gets every event after the last one it saw, in order, without a gap: the
//! stream is read from the store's event log, asynchronously and with a cap on concurrent
//! streams (429 past it): see [`crate::stream`].

use crate::auth::{AdminGroup, TcpGuard, UnixPeer};
use crate::daemon::{Op, Shared};
use crate::supervisor::{SupervisorError, WorkloadSpec};
use axum::extract::rejection::JsonRejection;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1 << 20;

/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("../assets/openapi.yaml");
/// The dashboard.
pub const DASHBOARD: &str = include_str!("../assets/dashboard.html");

/// An error answer.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

use stasis_partition::monitor::chain;

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        let code = match &e {
            SupervisorError::Exists(_) | SupervisorError::WrongState { .. } => StatusCode::CONFLICT,
            SupervisorError::NotFound(_) => StatusCode::NOT_FOUND,
            SupervisorError::BadSpec(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, chain(&e))
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

async fn call(s: &Shared, op: Op) -> ApiResult {
    match s.call(op).await {
        Ok(Ok(v)) => Ok(Json(v)),
        Ok(Err(e)) => Err(e.into()),
        Err(why) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, why.into())),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no workload named '{name}' (see `stasis workload ls`)"),
    )
}

/// The routes, as `(method, path)` — kept equal to the OpenAPI document by a test.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/openapi.yaml"),
    ("get", "/v1/openapi.yaml"),
    ("get", "/v1/health"),
    ("get", "/v1/workloads"),
    ("post", "/v1/workloads"),
    ("get", "/v1/workloads/{name}"),
    ("delete", "/v1/workloads/{name}"),
    ("post", "/v1/workloads/{name}/checkpoint"),
    ("post", "/v1/workloads/{name}/hibernate"),
    ("post", "/v1/workloads/{name}/resume"),
    ("get", "/v1/workloads/{name}/images"),
    ("get", "/v1/workloads/{name}/stats"),
    ("get", "/v1/ffdc"),
    ("get", "/v1/ffdc/{id}"),
    ("get", "/v1/events"),
    ("get", "/v1/events/stream"),
    ("post", "/v1/login"),
    ("post", "/v1/logout"),
    ("get", "/v1/nodes"),
    ("get", "/v1/nodes/self"),
    ("post", "/v1/nodes/trust"),
];

/// The API's routes, without a guard and without the login routes (see [`unix_app`] and
/// [`tcp_app`]).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/openapi.yaml", get(openapi))
        .route("/v1/openapi.yaml", get(openapi))
        .route("/v1/health", get(health))
        .route("/v1/workloads", get(list).post(add))
        .route("/v1/workloads/{name}", get(show).delete(remove))
        .route("/v1/workloads/{name}/checkpoint", post(checkpoint))
        .route("/v1/workloads/{name}/hibernate", post(hibernate))
        .route("/v1/workloads/{name}/resume", post(resume))
        .route("/v1/workloads/{name}/images", get(images))
        .route("/v1/workloads/{name}/stats", get(stats))
        .route("/v1/ffdc", get(ffdc_list))
        .route("/v1/ffdc/{id}", get(ffdc_show))
        .route("/v1/events", get(events))
        .route("/v1/events/stream", get(stream))
        .route("/v1/nodes", get(nodes_list))
        .route("/v1/nodes/self", get(node_self))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such route (see /openapi.yaml)".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route (see /openapi.yaml)".into(),
            )
        })
        .with_state(shared)
}

/// The unix socket's application: the routes behind the peer-credentials guard.
pub fn unix_app(shared: Arc<Shared>, admin: Option<Arc<AdminGroup>>) -> Router {
    router(shared)
        .route("/v1/login", post(crate::auth::login_unix))
        .route("/v1/logout", post(crate::auth::login_unix))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            admin,
            crate::auth::unix_guard,
        ))
}

/// The TCP listener's application: the routes and the login behind the Host/Origin/token
/// guard.
pub fn tcp_app(shared: Arc<Shared>, guard: Arc<TcpGuard>) -> Router {
    router(shared)
        .merge(
            Router::new()
                .route("/v1/login", post(crate::auth::login))
                .route("/v1/logout", post(crate::auth::logout))
                .route("/v1/nodes/trust", post(node_trust))
                .with_state(guard.clone()),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::auth::tcp_guard,
        ))
}

async fn dashboard() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD,
    )
}

fn node_error(e: crate::nodes::NodeError) -> ApiError {
    use crate::nodes::NodeError as E;
    let code = match &e {
        E::Bad { .. } | E::Name(_) | E::Itself(_) => StatusCode::BAD_REQUEST,
        E::Unknown(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(code, chain(&e))
}

/// `/v1/nodes`: the trusted nodes (without their secrets).
async fn nodes_list(State(s): State<Arc<Shared>>) -> ApiResult {
    let paths = s.paths.clone();
    let nodes = tokio::task::spawn_blocking(move || crate::nodes::list(&paths))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(node_error)?;
    let nodes: Vec<Value> = nodes
        .into_iter()
        .map(|n| {
            json!({"name": n.name, "addr": n.addr, "fingerprint": n.fingerprint,
                   "first_seen": n.first_seen, "key_id": n.key_id, "trusted_at_ms": n.trusted_at_ms})
        })
        .collect();
    Ok(Json(json!({ "nodes": nodes })))
}

/// `/v1/nodes/self`: this node's name and certificate (a trusted node's credential suffices).
async fn node_self(State(s): State<Arc<Shared>>) -> ApiResult {
    let paths = s.paths.clone();
    let me = tokio::task::spawn_blocking(move || crate::nodes::identity(&paths))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(node_error)?;
    Ok(Json(json!({
        "name": me.name,
        "fingerprint": crate::tls::fingerprint_hex(&me.fingerprint),
        "image_key_id": me.image_key.id().to_string(),
    })))
}

/// `POST /v1/nodes/trust` (TCP only, with this agent's token): trust the calling node and
/// answer with this one (see [`crate::nodes`]).
async fn node_trust(
    State(g): State<Arc<TcpGuard>>,
    body: Result<Json<crate::nodes::TrustMessage>, JsonRejection>,
) -> Response {
    let Json(msg) = match body {
        Ok(b) => b,
        Err(e) => return ApiError(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let paths = g.paths.clone();
    let fp = g.tls_fingerprint;
    match tokio::task::spawn_blocking(move || crate::nodes::accept(&paths, &msg, fp)).await {
        Ok(Ok(reply)) => Json(reply).into_response(),
        Ok(Err(e)) => node_error(e).into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI)
}

/// `/v1/health`: 200 with `"ok": true` while the supervisor thread lives and turns; 503 with
/// `"ok": false` and `why` when it has stopped or is stuck (see [`crate::daemon::Liveness`]).
async fn health(State(s): State<Arc<Shared>>) -> Response {
    let live = s.liveness.check();
    let body = json!({
        "ok": live.is_ok(),
        "why": live.as_ref().err().map(|e| e.to_string()),
        "supervisor": {
            "heartbeat_age_ms": s.liveness.age_ms(),
            "bound_ms": s.liveness.bound().as_millis() as u64,
        },
        "version": env!("CARGO_PKG_VERSION"),
        "root": s.paths.root,
        "pid": std::process::id(),
        "last_seq": s.events.last_seq().unwrap_or(0),
    });
    let code = if live.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn list(State(s): State<Arc<Shared>>) -> ApiResult {
    let views: Vec<Value> = s
        .views
        .read()
        .map(|v| {
            v.values()
                .map(|w| serde_json::to_value(w).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({ "workloads": views })))
}

async fn show(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    let v = s.views.read().ok().and_then(|v| v.get(&name).cloned());
    match v {
        Some(v) => Ok(Json(serde_json::to_value(v).unwrap_or_default())),
        None => Err(not_found(&name)),
    }
}

fn bad_json(e: JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {BODY_LIMIT} bytes"),
        );
    }
    ApiError(
        StatusCode::BAD_REQUEST,
        format!("bad workload spec: {}", e.body_text()),
    )
}

async fn add(
    State(s): State<Arc<Shared>>,
    body: Result<Json<WorkloadSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(spec) = body.map_err(bad_json)?;
    // The one validation (the supervisor checks again): 400 naming the field.
    spec.validate()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad workload spec: {e}")))?;
    let v = call(&s, Op::Add(Box::new(spec))).await?;
    Ok((StatusCode::CREATED, v))
}

async fn remove(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    call(&s, Op::Remove(name)).await
}

async fn checkpoint(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    call(&s, Op::Checkpoint(name)).await
}

async fn hibernate(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    call(&s, Op::Hibernate(name)).await
}

async fn resume(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    call(&s, Op::Resume(name)).await
}

fn known(s: &Shared, name: &str) -> Result<(), ApiError> {
    let ok = s
        .views
        .read()
        .map(|v| v.contains_key(name))
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(not_found(name))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

async fn images(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    known(&s, &name)?;
    blocking(move || {
        let list = s
            .repo
            .list(&name)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, chain(&e)))?;
        let images: Vec<Value> = list
            .iter()
            .map(|i| {
                json!({
                    "id": i.id.to_string(),
                    "dir": i.dir,
                    "created_unix_ms": i.created_unix_ms,
                    "bytes": i.bytes,
                })
            })
            .collect();
        Ok(Json(json!({ "images": images })))
    })
    .await
}

async fn stats(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    known(&s, &name)?;
    blocking(move || match stasis_partition::ops::stats(&s.root, &name) {
        Ok(st) => Ok(Json(serde_json::to_value(st).unwrap_or_default())),
        Err(e) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no accounting for '{name}' now: {e}"),
        )),
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FfdcQuery {
    workload: Option<String>,
}

async fn ffdc_list(
    State(s): State<Arc<Shared>>,
    q: Result<Query<FfdcQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    blocking(move || {
        let list = crate::ffdc::list(&s.paths.ffdc(), q.workload.as_deref())
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, chain(&e)))?;
        Ok(Json(json!({ "bundles": list })))
    })
    .await
}

async fn ffdc_show(State(s): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> ApiResult {
    blocking(move || match crate::ffdc::show(&s.paths.ffdc(), &id) {
        Ok(b) => Ok(Json(serde_json::to_value(b).unwrap_or_default())),
        Err(crate::ffdc::FfdcError::NotFound { .. }) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no FFDC bundle '{id}' (see `stasis ffdc ls`)"),
        )),
        Err(e) => Err(ApiError(StatusCode::BAD_REQUEST, chain(&e))),
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

async fn events(
    State(s): State<Arc<Shared>>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000).max(1);
    blocking(move || {
        let mut list = s
            .events
            .since(since)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, chain(&e)))?;
        list.truncate(limit);
        let last = s.events.last_seq().unwrap_or(0);
        Ok(Json(json!({ "events": list, "last_seq": last })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    since: Option<u64>,
}

async fn stream(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let from_header = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        "Last-Event-ID must be an event sequence number".into(),
                    )
                })?,
        ),
        None => None,
    };
    let since = from_header.or(q.since).unwrap_or(0);
    let rx = s
        .streams
        .subscribe(since)
        .map_err(|e| ApiError(StatusCode::TOO_MANY_REQUESTS, e.to_string()))?;
    let stream =
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |e| {
            Ok(SseEvent::default()
                .id(e.seq.to_string())
                .event(e.kind.clone())
                .data(serde_json::to_string(&e).unwrap_or_default()))
        });
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keepalive"),
    ))
}

/// What protects the API (prepared by the daemon, see [`crate::auth`]).
pub struct Security {
    /// The admin group, if configured.
    pub admin: Option<Arc<AdminGroup>>,
    /// The agent's token.
    pub token: Arc<crate::auth::TokenFile>,
    /// TLS for the TCP listener.
    pub tls: Option<crate::tls::ServerTls>,
    /// `--allow-host` names.
    pub allow_hosts: Vec<String>,
}

/// A TLS listener: TCP connections whose handshakes run concurrently (each bounded by
/// [`HANDSHAKE_BOUND`]), so a client that stalls its handshake delays nobody else.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
}

/// Time a TLS client gets to finish its handshake.
const HANDSHAKE_BOUND: Duration = Duration::from_secs(10);

impl TlsListener {
    fn new(
        tcp: tokio::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(256));
        tokio::spawn(async move {
            loop {
                if tx.is_closed() {
                    return;
                }
                let (sock, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "TCP accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_BOUND, acceptor.accept(sock)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serve the API on the unix socket and on `listen` until SIGINT/SIGTERM.
pub async fn serve(
    shared: Arc<Shared>,
    security: Security,
    listen: Option<SocketAddr>,
) -> std::io::Result<()> {
    let socket = shared.paths.socket();
    // A socket file left by an agent that died is stale (the agent lock is ours now); its
    // directory is root's, prepared by the daemon.
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let unix = tokio::net::UnixListener::bind(&socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let (mode, gid) = match &security.admin {
            Some(g) => (0o660, g.gid),
            None => (0o600, 0),
        };
        std::os::unix::fs::chown(&socket, Some(0), Some(gid))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode))?;
    }
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = tokio::task::JoinSet::new();
    {
        let app = unix_app(shared.clone(), security.admin.clone());
        let mut stop = stop_tx.subscribe();
        tasks.spawn(async move {
            axum::serve(unix, app.into_make_service_with_connect_info::<UnixPeer>())
                .with_graceful_shutdown(async move {
                    let _ = stop.recv().await;
                })
                .await
        });
    }
    if let Some(addr) = listen {
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let bound = tcp.local_addr()?;
        let guard = Arc::new(TcpGuard {
            hosts: crate::auth::HostPolicy {
                listen: bound,
                allow: security
                    .allow_hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                tls: security.tls.is_some(),
            },
            token: security.token.clone(),
            paths: shared.paths.clone(),
            tls_fingerprint: security.tls.as_ref().map(|t| t.fingerprint),
        });
        let app = tcp_app(shared.clone(), guard);
        let mut stop = stop_tx.subscribe();
        let shutdown = async move {
            let _ = stop.recv().await;
        };
        match &security.tls {
            Some(tls) => {
                let fp = crate::tls::fingerprint_hex(&tls.fingerprint);
                tracing::info!(addr = %bound, cert = %tls.cert.display(), sha256 = %fp, "dashboard and API listening (https, token required)");
                let l = TlsListener::new(tcp, tls.config.clone())?;
                tasks.spawn(
                    async move { axum::serve(l, app).with_graceful_shutdown(shutdown).await },
                );
            }
            None => {
                tracing::info!(addr = %bound, "dashboard and API listening (http, token required)");
                tasks.spawn(
                    async move { axum::serve(tcp, app).with_graceful_shutdown(shutdown).await },
                );
            }
        }
    }
    tracing::info!(socket = %socket.display(), "API listening");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = tasks.join_next() => {
            if let Some(Ok(Err(e))) = r { return Err(e); }
        }
    }
    tracing::info!("shutting down");
    shared
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    shared.streams.stop();
    let _ = stop_tx.send(());
    // Event streams end at once; do not wait for anything longer.
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route is documented, and the document has no route that does not exist.
    #[test]
    fn openapi_matches_the_router() {
        let doc: Value = serde_yaml_ng::from_str(OPENAPI).expect("openapi.yaml parses");
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (p, ops) in paths {
            for m in ops.as_object().expect("ops").keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&m.as_str()) {
                    documented.push((m.clone(), p.clone()));
                }
            }
        }
        documented.sort();
        let mut ours: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        ours.sort();
        assert_eq!(documented, ours);
    }
}
