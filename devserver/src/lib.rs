//! A development token server that behaves as GroupDocs documents its `/connect/token`
//! (`shared/seed/authenticating-api-requests.md`): OAuth 2.0 `client_credentials`, a signed
//! JWT that lives `expires_in` seconds (86400 by default), `400 invalid_client` for bad
//! credentials, and the rate limiter: 20 failed requests within one minute put the caller
//! into a 10-minute cooldown answered `429` with `Retry-After`.
//!
//! For tests and the demo it adds a time scale (minutes become seconds), switchable faults,
//! request counts, and one protected API route that accepts only a valid bearer token. The
//! admin routes (`/admin/*`) that switch faults and read counts answer loopback callers only,
//! or, with `--admin-token`, callers that present that token from anywhere.
//!
//! It is a test fixture, not part of the operator: the demo runs the
//! `groupdocs-dev-token-server` binary, the tests and the benchmark start a [`DevServer`] in
//! process. By concern: `jwt` (the tokens), `limiter` (the rate limiter), `faults` (injected
//! faults), `routes` (the HTTP routes), `listener` (plain and TLS connections).

mod faults;
mod jwt;
mod limiter;
mod listener;
mod routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use faults::Fault;

/// A development token server compatible with GroupDocs Cloud's /connect/token, for the demo
/// and the tests of groupdocs-token-operator.
// `Debug` shows client ids but never client secrets or the admin token.
#[derive(clap::Parser, Clone)]
#[command(name = "groupdocs-dev-token-server", version)]
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
    pub admin_token: Option<AdminToken>,
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
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
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

/// The admin routes' bearer token. Formatting prints `[REDACTED]`; only
/// [`AdminToken::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(value: impl Into<String>) -> Self {
        AdminToken(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<String> for AdminToken {
    fn from(s: String) -> Self {
        AdminToken(s)
    }
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

/// What the routes and the listeners share.
pub(crate) struct Shared {
    pub(crate) args: DevServerArgs,
    pub(crate) keys: jwt::Keys,
    pub(crate) clients: Mutex<HashMap<String, String>>,
    pub(crate) expires_in: Mutex<i64>,
    pub(crate) fault: Mutex<Fault>,
    pub(crate) stats: Mutex<Stats>,
    pub(crate) limiter: limiter::Limiter,
    /// Every token issued, so tests can search logs and objects for leaks.
    pub(crate) issued: Mutex<Vec<String>>,
}

impl Shared {
    /// Signs a token for `client_id` that lives `lifetime` seconds and records it; `None` if
    /// signing failed (it does not with the server's key).
    pub(crate) fn issue(&self, client_id: &str, scope: Option<&str>, lifetime: i64) -> Option<String> {
        let token = self.keys.sign(&jwt::Claims::new(client_id, scope, lifetime)).ok()?;
        lock(&self.issued).push(token.clone());
        Some(token)
    }
}

/// A running server; cheap to clone. Dropping it does not stop it: abort the task or end the runtime.
#[derive(Clone)]
pub struct DevServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
}

impl DevServer {
    /// Binds and starts serving in the background of the current tokio runtime.
    pub async fn start(args: DevServerArgs) -> std::io::Result<DevServer> {
        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let tls = match (&args.tls_listen, &args.tls_cert, &args.tls_key) {
            (Some(listen), Some(cert), Some(key)) => {
                Some((TcpListener::bind(listen).await?, listener::tls_acceptor(cert, key)?))
            }
            _ => None,
        };
        let tls_addr = tls.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
        let clients = args
            .clients
            .iter()
            .filter_map(|c| c.split_once(':'))
            .map(|(id, secret)| (id.to_string(), secret.to_string()))
            .collect();
        let shared = Arc::new(Shared {
            keys: jwt::Keys::new(&rand::random::<[u8; 32]>()).map_err(std::io::Error::other)?,
            clients: Mutex::new(clients),
            expires_in: Mutex::new(args.expires_in),
            fault: Mutex::default(),
            stats: Mutex::default(),
            limiter: limiter::Limiter::new(args.failure_limit, args.time_scale),
            issued: Mutex::default(),
            args,
        });
        tokio::spawn(listener::accept_loop(listener, shared.clone(), None));
        if let Some((listener, acceptor)) = tls {
            tokio::spawn(listener::accept_loop(listener, shared.clone(), Some(acceptor)));
        }
        Ok(DevServer { shared, addr, tls_addr })
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
        *lock(&self.shared.fault) = fault;
    }

    pub fn set_expires_in(&self, secs: i64) {
        *lock(&self.shared.expires_in) = secs;
    }

    /// Adds a client or changes its secret.
    pub fn set_client(&self, id: &str, secret: &str) {
        lock(&self.shared.clients).insert(id.to_string(), secret.to_string());
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Every access token this server has handed out.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.issued).clone()
    }

    /// True when `token` is a valid, unexpired token of this server.
    pub fn accepts(&self, token: &str) -> bool {
        self.shared.keys.verify(token).is_some()
    }
}

/// The binary: serve until SIGTERM or SIGINT.
pub async fn serve(args: DevServerArgs) -> std::io::Result<()> {
    let server = DevServer::start(args).await?;
    eprintln!("development token server on http://{} (POST /connect/token, GET /v2.0/viewer/formats)", server.addr());
    if let Some(url) = server.tls_token_url() {
        eprintln!("and with TLS: {url}");
    }
    match server.shared.args.admin_token {
        Some(_) => eprintln!("admin routes (/admin/*): callers with the --admin-token bearer token"),
        None => eprintln!("admin routes (/admin/*): loopback callers only"),
    }
    shutdown_signal().await
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() -> std::io::Result<()> {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = ctrl_c => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await
}

/// Locks `m`, recovering from poisoning: every lock here guards state that stays valid
/// between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
