//! Wiring of the `run` and `token` commands: configuration in, running parts out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use jiff::Timestamp;
use kube::Client;
use tracing::info;

use crate::cli::{HttpArgs, RunArgs, TokenArgs};
use crate::http::{self, Readiness};
use crate::metrics::{CredentialLabel, Metrics, ReadyLabel};
use crate::policy::TokenUrlPolicy;
use crate::reconciler::{self, Caches, Settings, Shared};
use crate::redact::Sensitive;
use crate::token::broker::{Broker, BrokerConfig, Fetch};
use crate::token::client::{ClientConfig, HttpTokenClient};
use crate::token::response::Failure;
use crate::token::{TokenRequest, retry_after};

pub async fn run(args: RunArgs) -> Result<(), String> {
    crate::telemetry::init(&args.log);
    crate::install_crypto_provider();
    let policy = TokenUrlPolicy::new(&args.allowed_token_urls, args.allow_http_loopback, args.allow_private_networks)?;
    let client = Client::try_default().await.map_err(|e| format!("Kubernetes client: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let broker_config = BrokerConfig {
        failed_request_budget: args.failed_request_budget,
        invalid_client_retry: args.invalid_client_retry,
        backoff_cap: args.max_backoff,
        ..BrokerConfig::default()
    };
    let broker = Broker::new(token_client(&args.http, Some(policy.clone()))?, broker_config, metrics.clone());
    let settings = Settings {
        policy,
        min_refresh_interval: args.min_refresh_interval,
        watch_namespaces: args.watch_namespaces.clone(),
        concurrency: args.concurrency,
    };
    let shared = Arc::new(Shared::new(client, broker, metrics.clone(), settings));

    let shutdown = crate::shutdown_signal().shared();
    let caches: Arc<Mutex<Vec<Caches>>> = Arc::default();
    let scopes = args.watch_namespaces.len().max(1);
    let readiness: Readiness = {
        let caches = caches.clone();
        Arc::new(move || {
            let caches = caches.lock().expect("caches lock");
            caches.len() == scopes && caches.iter().all(|c| c.synced.all())
        })
    };
    let scrape_caches = caches.clone();
    let scrape_metrics = metrics.clone();
    let before_scrape = Arc::new(move || refresh_gauges(&scrape_metrics, &scrape_caches.lock().expect("caches lock")));
    tokio::spawn(http::serve(args.probe_addr, http::probes(readiness), shutdown.clone()));
    tokio::spawn(http::serve(args.metrics_addr, http::metrics(metrics.clone(), before_scrape), shutdown.clone()));
    tokio::spawn(prune_periodically(shared.clone()));
    info!(
        namespaces = ?args.watch_namespaces,
        allowed_token_urls = ?args.allowed_token_urls,
        metrics = %args.metrics_addr,
        probes = %args.probe_addr,
        "starting groupdocs-token-operator {}",
        env!("CARGO_PKG_VERSION")
    );
    let on_caches = {
        let caches = caches.clone();
        move |c: Caches| caches.lock().expect("caches lock").push(c)
    };
    reconciler::run(shared, shutdown, on_caches).await;
    info!("stopped");
    Ok(())
}

async fn prune_periodically(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(600)).await;
        shared.broker.prune(Timestamp::now());
    }
}

/// Gauges that describe the cached credentials are recomputed at scrape time, so a deleted
/// credential leaves no stale series behind.
fn refresh_gauges(metrics: &Metrics, caches: &[Caches]) {
    metrics.token_expiry.clear();
    metrics.rate_limited_until.clear();
    metrics.credentials.clear();
    for cr in caches.iter().flat_map(|c| c.credentials.state()) {
        let label = CredentialLabel {
            namespace: cr.metadata.namespace.clone().unwrap_or_default(),
            name: cr.metadata.name.clone().unwrap_or_default(),
        };
        let status = cr.status.clone().unwrap_or_default();
        if let Some(t) = &status.expires_at {
            metrics.token_expiry.get_or_create(&label).set(t.0.as_second());
        }
        if let Some(t) = status.rate_limited_until.as_ref().filter(|t| t.0 > Timestamp::now()) {
            metrics.rate_limited_until.get_or_create(&label).set(t.0.as_second());
        }
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == crate::conditions::READY)
            .map_or("Unknown".to_string(), |c| c.status.clone());
        metrics.credentials.get_or_create(&ReadyLabel { status: ready }).inc();
    }
}

fn token_client(args: &HttpArgs, policy: Option<TokenUrlPolicy>) -> Result<HttpTokenClient, String> {
    let extra_ca_pem = match &args.extra_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| format!("--extra-ca-file {}: {e}", path.display()))?),
        None => None,
    };
    HttpTokenClient::new(&ClientConfig {
        timeout: args.token_request_timeout,
        auth: args.client_auth,
        extra_ca_pem,
        policy,
        ..ClientConfig::default()
    })
}

/// The `token` command: one request, the expiry printed, the token never.
pub async fn fetch_once(args: TokenArgs) -> Result<(), String> {
    crate::install_crypto_provider();
    let secret = std::env::var(&args.client_secret_env)
        .map_err(|_| format!("set the client secret in the environment variable {}", args.client_secret_env))?;
    let client = token_client(&args.http, None)?;
    let req = TokenRequest {
        url: args.token_url.clone(),
        client_id: args.client_id.clone(),
        client_secret: Sensitive::new(secret),
        scope: args.scope.clone(),
    };
    match client.fetch(&req).await {
        Ok(token) => {
            println!(
                "token issued: type {}, expires at {} (in {:#}), fingerprint {}",
                token.token_type,
                token.expires_at,
                token.lifetime(),
                token.access_token.fingerprint()
            );
            Ok(())
        }
        Err(Failure::RateLimited { detail, until }) => {
            Err(format!("RateLimited: {detail}; retry after {until} (default pause {:#})", retry_after::DEFAULT_PAUSE))
        }
        Err(Failure::InvalidClient(d)) => Err(format!("InvalidClient: {d}")),
        Err(Failure::Unavailable(d)) => Err(format!("TokenEndpointUnavailable: {d}")),
        Err(Failure::InvalidResponse(d)) => Err(format!("InvalidTokenResponse: {d}")),
        Err(Failure::NotAllowed(d)) => Err(format!("TokenUrlNotAllowed: {d}")),
    }
}
