//! A development token server that behaves as GroupDocs documents its `/connect/token`
//! (`../shared/seed/authenticating-api-requests.md`): OAuth 2.0 `client_credentials`, a signed
//! JWT that lives `expires_in` seconds (86400 by default), `400 invalid_client` for bad
//! credentials, and the rate limiter: 20 failed requests within one minute put the caller
//! into a 10-minute cooldown answered `429` with `Retry-After`.
//!
//! For tests and the demo it adds a time scale (minutes become seconds), switchable faults,
//! request counts, and one protected API route that accepts only a valid bearer token. The
//! admin routes (`/admin/*`) that switch faults and read counts answer loopback callers only,
//! or, with `--admin-token`, callers that present that token from anywhere.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::redact::Sensitive;

/// `Debug` shows client ids but never client secrets or the admin token.
#[derive(clap::Args, Clone)]
pub struct DevServerArgs {
    /// Address to listen on.
    #[arg(long, env = "GDTO_DEV_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// A client as `id:secret` (repeatable).
    #[arg(
        long = "client",
        env = "GDTO_DEV_CLIENTS",
        value_delimiter = ',',
        default_value = "demo-client-id:demo-client-secret",
        hide_env_values = true
    )]
    pub clients: Vec<String>,
    /// Token lifetime in seconds, returned as `expires_in` and used for the `exp` claim.
    #[arg(long, env = "GDTO_DEV_EXPIRES_IN", default_value_t = 86400)]
    pub expires_in: i64,
    /// Divides the rate limiter's window (60 s) and cooldown (600 s): 60 makes them 1 s and 10 s.
    #[arg(long, env = "GDTO_DEV_TIME_SCALE", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Failed requests within the window that trigger the cooldown.
    #[arg(long, env = "GDTO_DEV_FAILURE_LIMIT", default_value_t = 20)]
    pub failure_limit: u32,
    /// What the rate limiter counts failures by: the caller's address, or the client id.
    #[arg(long, env = "GDTO_DEV_LIMIT_BY", value_enum, default_value_t = LimitBy::Ip)]
    pub limit_by: LimitBy,
    /// Added latency of every token response, in milliseconds (for benchmarks).
    #[arg(long, env = "GDTO_DEV_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Also serve over TLS on this address (needs `--tls-cert` and `--tls-key`), as the
    /// operator requires https for any token endpoint that is not on loopback.
    #[arg(long, env = "GDTO_DEV_TLS_LISTEN", requires_all = ["tls_cert", "tls_key"])]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for `--tls-listen`.
    #[arg(long, env = "GDTO_DEV_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for `--tls-listen`.
    #[arg(long, env = "GDTO_DEV_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Bearer token of the admin routes (`/admin/*`). Without it they answer loopback
    /// callers only; with it they answer callers from anywhere that send
    /// `Authorization: Bearer <token>`, and nobody else.
    #[arg(long, env = "GDTO_DEV_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Sensitive>,
}

impl std::fmt::Debug for DevServerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `id:[REDACTED]`; an entry without a colon may be all secret.
        let clients: Vec<String> = self
            .clients
            .iter()
            .map(|c| c.split_once(':').map_or_else(|| "[REDACTED]".to_string(), |(id, _)| format!("{id}:[REDACTED]")))
            .collect();
        f.debug_struct("DevServerArgs")
            .field("listen", &self.listen)
            .field("clients", &clients)
            .field("expires_in", &self.expires_in)
            .field("time_scale", &self.time_scale)
            .field("failure_limit", &self.failure_limit)
            .field("limit_by", &self.limit_by)
            .field("latency_ms", &self.latency_ms)
            .field("tls_listen", &self.tls_listen)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("admin_token", &self.admin_token)
            .finish()
    }
}

impl Default for DevServerArgs {
    fn default() -> Self {
        DevServerArgs {
            listen: "127.0.0.1:0".parse().expect("address"),
            clients: vec!["demo-client-id:demo-client-secret".into()],
            expires_in: 86400,
            time_scale: 1.0,
            failure_limit: 20,
            limit_by: LimitBy::Ip,
            latency_ms: 0,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            admin_token: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitBy {
    Ip,
    Client,
}

/// A fault the server injects into `/connect/token` answers until switched off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    #[default]
    None,
    /// Answer with this HTTP status and an empty JSON object.
    Status { status: u16 },
    /// Never answer.
    Hang,
    /// Reset the connection before answering.
    Reset,
    /// `200` with a body that is not JSON.
    NotJson,
    /// `200` with JSON that lacks `access_token`.
    NoAccessToken,
    /// `200` with a real token but this `expires_in` value.
    ExpiresIn { value: serde_json::Value },
    /// `200` with a body of this many bytes.
    HugeBody { bytes: usize },
    /// `429`, with this `Retry-After` header value, or none.
    TooManyRequests { retry_after: Option<String> },
    /// `302` to this location.
    Redirect { location: String },
}

/// Counts as seen by the server.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Every POST to /connect/token (connections reset by a fault included).
    pub token_requests: u64,
    pub issued: u64,
    pub rejected: u64,
    pub rate_limited: u64,
    pub faulted: u64,
    /// Requests by client id (as sent, valid or not).
    pub by_client: HashMap<String, u64>,
    pub api_calls_ok: u64,
    pub api_calls_unauthorized: u64,
}

struct Limiter {
    failures: VecDeque<Instant>,
    cooldown_until: Option<Instant>,
}

struct Inner {
    args: DevServerArgs,
    key: [u8; 32],
    clients: Mutex<HashMap<String, String>>,
    expires_in: Mutex<i64>,
    fault: Mutex<Fault>,
    stats: Mutex<Stats>,
    limiters: Mutex<HashMap<String, Limiter>>,
    /// Every token issued, so tests can search logs and objects for leaks.
    issued: Mutex<Vec<String>>,
}

/// A running server; cheap to clone. Dropping it does not stop it: abort the task or end the runtime.
#[derive(Clone)]
pub struct DevServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
}

impl DevServer {
    /// Binds and starts serving in the background of the current tokio runtime.
    pub async fn start(args: DevServerArgs) -> std::io::Result<DevServer> {
        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let tls = match (&args.tls_listen, &args.tls_cert, &args.tls_key) {
            (Some(listen), Some(cert), Some(key)) => Some((TcpListener::bind(listen).await?, tls_acceptor(cert, key)?)),
            _ => None,
        };
        let tls_addr = tls.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
        let clients = args
            .clients
            .iter()
            .filter_map(|c| c.split_once(':'))
            .map(|(id, secret)| (id.to_string(), secret.to_string()))
            .collect();
        let inner = Arc::new(Inner {
            key: rand::random(),
            clients: Mutex::new(clients),
            expires_in: Mutex::new(args.expires_in),
            fault: Mutex::default(),
            stats: Mutex::default(),
            limiters: Mutex::default(),
            issued: Mutex::default(),
            args,
        });
        tokio::spawn(accept_loop(listener, inner.clone(), None));
        if let Some((listener, acceptor)) = tls {
            tokio::spawn(accept_loop(listener, inner.clone(), Some(acceptor)));
        }
        Ok(DevServer { inner, addr, tls_addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/connect/token", self.addr)
    }

    /// The https token URL, when the server also listens with TLS.
    pub fn tls_token_url(&self) -> Option<String> {
        self.tls_addr.map(|a| format!("https://{a}/connect/token"))
    }

    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.inner.fault) = fault;
    }

    pub fn set_expires_in(&self, secs: i64) {
        *lock(&self.inner.expires_in) = secs;
    }

    /// Adds a client or changes its secret.
    pub fn set_client(&self, id: &str, secret: &str) {
        lock(&self.inner.clients).insert(id.to_string(), secret.to_string());
    }

    pub fn stats(&self) -> Stats {
        lock(&self.inner.stats).clone()
    }

    /// Every access token this server has handed out.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.inner.issued).clone()
    }

    /// True when `token` is a valid, unexpired token of this server.
    pub fn accepts(&self, token: &str) -> bool {
        verify(&self.inner.key, token).is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: &dyn std::fmt::Display| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(&e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, tls: Option<tokio_rustls::TlsAcceptor>) {
    let router = router(inner.clone());
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        if *lock(&inner.fault) == Fault::Reset {
            // Only token requests are faulted; a reset fault resets every connection,
            // so count it as the token request it most likely was.
            lock(&inner.stats).token_requests += 1;
            lock(&inner.stats).faulted += 1;
            // A zero linger makes the close a TCP reset, without blocking.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
            continue;
        }
        let service = router.clone().layer(axum::Extension(ConnectInfo(peer)));
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(service);
            // One request per connection, so that a reset fault reaches clients that pool them.
            let http = hyper::server::conn::http1::Builder::new().keep_alive(false).clone();
            match tls {
                None => {
                    let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                    }
                }
            }
        });
    }
}

fn router(inner: Arc<Inner>) -> Router {
    let admin = Router::new()
        .route("/admin/stats", get(|State(s): State<Arc<Inner>>| async move { Json(lock(&s.stats).clone()) }))
        .route(
            "/admin/fault",
            post(|State(s): State<Arc<Inner>>, Json(f): Json<Fault>| async move {
                *lock(&s.fault) = f;
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/admin/expires-in",
            post(|State(s): State<Arc<Inner>>, Json(v): Json<i64>| async move {
                *lock(&s.expires_in) = v;
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/admin/clients",
            post(|State(s): State<Arc<Inner>>, Json(c): Json<HashMap<String, String>>| async move {
                lock(&s.clients).extend(c);
                StatusCode::NO_CONTENT
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(inner.clone(), admin_guard));
    Router::new()
        .route("/connect/token", post(token))
        .route("/v2.0/viewer/formats", get(protected_api))
        .merge(admin)
        .with_state(inner)
}

/// Lets a request through to an admin route only when [`admin_access`] allows it.
async fn admin_guard(
    State(s): State<Arc<Inner>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| *peer);
    match admin_access(s.args.admin_token.as_ref(), peer, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(StatusCode::UNAUTHORIZED) => {
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response()
        }
        Err(status) => status.into_response(),
    }
}

/// Who may use the admin routes. Without an admin token: loopback callers only (403 for the
/// rest). With one: whoever sends it as a bearer token, from anywhere (401 without a bearer
/// token, 403 with a wrong one).
fn admin_access(token: Option<&Sensitive>, peer: Option<SocketAddr>, headers: &HeaderMap) -> Result<(), StatusCode> {
    let Some(token) = token else {
        return match peer {
            Some(peer) if peer.ip().to_canonical().is_loopback() => Ok(()),
            _ => Err(StatusCode::FORBIDDEN),
        };
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    if constant_time_eq(presented.as_bytes(), token.expose().as_bytes()) { Ok(()) } else { Err(StatusCode::FORBIDDEN) }
}

/// Compares the SHA-256 digests of `a` and `b` in time that depends on neither value nor
/// length, so that timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest as _;
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[derive(Deserialize, Default)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

async fn token(
    State(s): State<Arc<Inner>>,
    axum::Extension(ConnectInfo(peer)): axum::Extension<ConnectInfo<SocketAddr>>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if s.args.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(s.args.latency_ms)).await;
    }
    let mut form = form.map(|Form(f)| f).unwrap_or_default();
    if let Some((id, secret)) = basic_credentials(&headers) {
        form.client_id.get_or_insert(id);
        form.client_secret.get_or_insert(secret);
    }
    let client_id = form.client_id.clone().unwrap_or_default();
    {
        let mut stats = lock(&s.stats);
        stats.token_requests += 1;
        *stats.by_client.entry(client_id.clone()).or_default() += 1;
    }
    let fault = lock(&s.fault).clone();
    if let Some(resp) = faulted(&s, &fault, &client_id, form.scope.as_deref()).await {
        lock(&s.stats).faulted += 1;
        return resp;
    }

    let limiter_key = match s.args.limit_by {
        LimitBy::Ip => peer.ip().to_string(),
        LimitBy::Client => client_id.clone(),
    };
    if let Some(wait) = cooldown_left(&s, &limiter_key) {
        lock(&s.stats).rate_limited += 1;
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Json(json!({"error": "too_many_requests"})),
        )
            .into_response();
    }

    let error = if form.grant_type.as_deref() != Some("client_credentials") {
        Some("unsupported_grant_type")
    } else {
        let clients = lock(&s.clients);
        match (form.client_id.as_deref(), form.client_secret.as_deref()) {
            (Some(id), Some(secret)) if clients.get(id).is_some_and(|known| known == secret) => None,
            _ => Some("invalid_client"),
        }
    };
    if let Some(error) = error {
        lock(&s.stats).rejected += 1;
        record_failure(&s, &limiter_key);
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
    }
    lock(&s.stats).issued += 1;
    let expires_in = *lock(&s.expires_in);
    let token = sign(&s.key, &client_id, form.scope.as_deref(), expires_in);
    lock(&s.issued).push(token.clone());
    Json(json!({
        "access_token": token,
        "expires_in": expires_in,
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn faulted(s: &Inner, fault: &Fault, client_id: &str, scope: Option<&str>) -> Option<Response> {
    let resp = match fault {
        Fault::None | Fault::Reset => return None,
        Fault::Status { status } => {
            (StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(json!({})))
                .into_response()
        }
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Fault::NotJson => (StatusCode::OK, "<html>maintenance</html>").into_response(),
        Fault::NoAccessToken => Json(json!({"expires_in": 86400, "token_type": "Bearer"})).into_response(),
        Fault::ExpiresIn { value } => {
            let lifetime = value.as_i64().unwrap_or(86400).clamp(-1_000_000, 10_000_000);
            let token = sign(&s.key, client_id, scope, lifetime);
            lock(&s.issued).push(token.clone());
            Json(json!({"access_token": token, "expires_in": value, "token_type": "Bearer"})).into_response()
        }
        Fault::HugeBody { bytes } => {
            let body = format!("{{\"access_token\":\"{}\"}}", "x".repeat(*bytes));
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Fault::TooManyRequests { retry_after } => {
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(json!({"error": "too_many_requests"}))).into_response();
            if let Some(v) = retry_after.as_deref().and_then(|v| v.parse().ok()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Fault::Redirect { location } => (StatusCode::FOUND, [(header::LOCATION, location.clone())]).into_response(),
    };
    Some(resp)
}

fn scaled(s: &Inner, secs: u64) -> Duration {
    Duration::from_secs_f64(secs as f64 / s.args.time_scale.max(0.001))
}

fn cooldown_left(s: &Inner, key: &str) -> Option<Duration> {
    let limiters = lock(&s.limiters);
    let until = limiters.get(key)?.cooldown_until?;
    until.checked_duration_since(Instant::now())
}

fn record_failure(s: &Inner, key: &str) {
    let now = Instant::now();
    let window = scaled(s, 60);
    let mut limiters = lock(&s.limiters);
    let l = limiters.entry(key.to_string()).or_insert(Limiter { failures: VecDeque::new(), cooldown_until: None });
    while l.failures.front().is_some_and(|t| now.duration_since(*t) >= window) {
        l.failures.pop_front();
    }
    l.failures.push_back(now);
    if l.failures.len() >= s.args.failure_limit as usize {
        l.cooldown_until = Some(now + scaled(s, 600));
        l.failures.clear();
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape =
        |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((unescape(id)?, unescape(secret)?))
}

async fn protected_api(State(s): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| verify(&s.key, t)) {
        Some(claims) => {
            lock(&s.stats).api_calls_ok += 1;
            Json(json!({"formats": [{"extension": ".docx"}, {"extension": ".pdf"}], "client_id": claims["client_id"]}))
                .into_response()
        }
        None => {
            lock(&s.stats).api_calls_unauthorized += 1;
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response()
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// An HS256 JWT with the claims GroupDocs tokens carry.
fn sign(key: &[u8; 32], client_id: &str, scope: Option<&str>, lifetime: i64) -> String {
    let now = jiff::Timestamp::now().as_second();
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({
        "nbf": now,
        "exp": now + lifetime,
        "iss": "https://api.groupdocs.cloud",
        "aud": ["https://api.groupdocs.cloud/resources", "api.storage"],
        "client_id": client_id,
        "scope": scope.map_or_else(|| vec!["api.storage".to_string()], |s| s.split(' ').map(str::to_owned).collect()),
        "jti": hex::encode(rand::random::<[u8; 8]>()),
    });
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

/// The claims of a valid, unexpired token signed with `key`.
fn verify(key: &[u8; 32], token: &str) -> Option<serde_json::Value> {
    let (signing_input, signature) = token.rsplit_once('.')?;
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).ok()?).ok()?;
    let payload = signing_input.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (claims["exp"].as_i64()? > jiff::Timestamp::now().as_second()).then_some(claims)
}

/// The `dev-server` subcommand: serve until interrupted.
pub async fn serve_forever(args: DevServerArgs) -> std::io::Result<()> {
    let server = DevServer::start(args).await?;
    eprintln!("development token server on http://{} (POST /connect/token, GET /v2.0/viewer/formats)", server.addr());
    if let Some(url) = server.tls_token_url() {
        eprintln!("and with TLS: {url}");
    }
    match server.inner.args.admin_token {
        Some(_) => eprintln!("admin routes (/admin/*): callers with the --admin-token bearer token"),
        None => eprintln!("admin routes (/admin/*): loopback callers only"),
    }
    crate::shutdown_signal().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn without_a_token_admin_routes_are_for_loopback_callers_only() {
        let none = HeaderMap::new();
        for peer in ["127.0.0.1:5000", "127.1.2.3:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert_eq!(admin_access(None, Some(peer.parse().unwrap()), &none), Ok(()), "{peer}");
        }
        for peer in ["10.0.0.5:5000", "192.168.1.2:80", "[fd00::1]:5000", "[::ffff:10.0.0.5]:5000", "0.0.0.0:1"] {
            assert_eq!(admin_access(None, Some(peer.parse().unwrap()), &none), Err(StatusCode::FORBIDDEN), "{peer}");
        }
        assert_eq!(admin_access(None, None, &none), Err(StatusCode::FORBIDDEN), "unknown peer");
        // A bearer token means nothing when none is configured.
        let remote = Some("10.0.0.5:5000".parse().unwrap());
        assert_eq!(admin_access(None, remote, &bearer("Bearer x")), Err(StatusCode::FORBIDDEN));
    }

    #[test]
    fn with_a_token_admin_routes_need_it_from_anywhere() {
        let token = Sensitive::new("s3cret-admin");
        let (remote, local) = (Some("10.0.0.5:5000".parse().unwrap()), Some("127.0.0.1:5000".parse().unwrap()));
        for peer in [remote, local, None] {
            assert_eq!(admin_access(Some(&token), peer, &bearer("Bearer s3cret-admin")), Ok(()));
            assert_eq!(admin_access(Some(&token), peer, &HeaderMap::new()), Err(StatusCode::UNAUTHORIZED));
            assert_eq!(admin_access(Some(&token), peer, &bearer("Basic s3cret-admin")), Err(StatusCode::UNAUTHORIZED));
            for wrong in
                ["Bearer s3cret-admiN", "Bearer s3cret-admin2", "Bearer s3cret", "Bearer ", "Bearer  s3cret-admin"]
            {
                assert_eq!(admin_access(Some(&token), peer, &bearer(wrong)), Err(StatusCode::FORBIDDEN), "{wrong}");
            }
        }
    }

    #[test]
    fn constant_time_eq_compares_values() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
