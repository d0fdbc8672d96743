//! Wiring of the `run` and `token` commands: configuration in, running parts out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use jiff::Timestamp;
use kube::Client;
use tracing::info;

use crate::cli::{HttpArgs, RunArgs, SecretAccessArg, TokenArgs};
use crate::controller::{self, Caches, SecretAccess, Settings, Shared};
use crate::error::{Error, Limit};
use crate::http::{self, Readiness};
use crate::leader::{self, Role};
use crate::metrics::{Described, Metrics, ready_status};
use crate::policy::TokenUrlPolicy;
use crate::redact::Sensitive;
use crate::token::broker::{Broker, BrokerConfig, Fetch};
use crate::token::client::{ClientConfig, HttpTokenClient};
use crate::token::response::Failure;
use crate::token::{TokenRequest, retry_after};

/// Why the `run` or `token` command stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag, or a file a flag names, is unusable; the message names the flag.
    #[error("{0}")]
    Config(String),
    #[error("Kubernetes client configuration: {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("leader election: {0}")]
    LeaderElection(#[from] kube_lease_manager::LeaseManagerError),
    #[error("leader election: the lease task ended")]
    LeaseTaskEnded,
    /// Exits so that the pod restarts as a standby with empty caches.
    #[error("lost the leader lease to another replica")]
    LostLease,
    /// The `token` command's request failed; the message starts with the condition reason.
    #[error("{0}")]
    Token(String),
}

impl From<String> for StartError {
    fn from(message: String) -> Self {
        StartError::Config(message)
    }
}

pub async fn run(args: RunArgs) -> Result<(), StartError> {
    crate::telemetry::init(&args.log);
    crate::install_crypto_provider();
    let policy = TokenUrlPolicy::new(&args.allowed_token_urls, args.allow_http_loopback, args.allow_private_networks)?;
    // Bound before the Kubernetes client is built: a port that is taken ends start-up at once.
    let probe_listener = http::bind("--probe-addr", args.probe_addr).await?;
    let metrics_listener = http::bind("--metrics-addr", args.metrics_addr).await?;
    let client = kube_client(args.kube_api_qps).await?;
    let metrics = Arc::new(Metrics::new(args.credential_metrics));
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
        rollout_restarts: args.rollout_restarts.then_some(args.rollout_restart_min_interval),
        secret_access: match args.secret_access {
            SecretAccessArg::Watch => SecretAccess::Watch,
            SecretAccessArg::Get => SecretAccess::Get { recheck: args.recheck_interval },
        },
        credential_selector: args.credential_selector().map(str::to_string),
        cluster_resource_namespace: args.cluster_resource_namespace.clone().unwrap_or_else(|| {
            crate::cli::own_namespace(
                std::env::var("POD_NAMESPACE").ok(),
                std::path::Path::new(crate::cli::SERVICE_ACCOUNT_NAMESPACE_FILE),
            )
        }),
        // Status records the failure at the reconcile's start, the retry time from the answer:
        // allow for the request's own duration between them.
        max_hold: args.invalid_client_retry.max(retry_after::MAX_PAUSE).max(args.max_backoff)
            + jiff::SignedDuration::try_from(args.http.token_request_timeout).unwrap_or_default()
            + jiff::SignedDuration::from_secs(2),
    };
    let shared = Arc::new(Shared::new(client, broker, metrics.clone(), settings));

    let signal = crate::shutdown_signal().shared();
    let caches: Arc<Mutex<Vec<Caches>>> = Arc::default();
    let scopes = args.watch_namespaces.len().max(1);
    let role = if args.leader_elect { Role::default() } else { Role::leader() };
    // A standby is ready: it serves probes and metrics and is ready to take over. The leader
    // is ready once its watch caches have synced.
    let readiness: Readiness = {
        let caches = caches.clone();
        let role = role.clone();
        Arc::new(move || {
            let caches = crate::lock(&caches);
            !role.is_leader() || (caches.len() == scopes && caches.iter().all(|c| c.synced.all()))
        })
    };
    let liveness: http::Liveness = {
        let shared = shared.clone();
        Arc::new(move || shared.controllers_alive())
    };
    let cluster_store: Arc<Mutex<Option<crate::cluster::ClusterCredentials>>> = Arc::default();
    let scrape_caches = caches.clone();
    let scrape_cluster = cluster_store.clone();
    let scrape_metrics = metrics.clone();
    let before_scrape = Arc::new(move || {
        refresh_gauges(&scrape_metrics, &crate::lock(&scrape_caches), crate::lock(&scrape_cluster).as_ref())
    });
    tokio::spawn(http::serve(probe_listener, http::probes(readiness, liveness), signal.clone()));
    tokio::spawn(http::serve(metrics_listener, http::metrics(metrics.clone(), before_scrape), signal.clone()));
    tokio::spawn(prune_periodically(shared.clone()));
    info!(
        namespaces = ?args.watch_namespaces,
        credential_selector = args.credential_selector().unwrap_or("(all)"),
        allowed_token_urls = ?args.allowed_token_urls,
        metrics = %args.metrics_addr,
        probes = %args.probe_addr,
        "starting groupdocs-token-operator {}",
        env!("CARGO_PKG_VERSION")
    );
    let on_caches = {
        let caches = caches.clone();
        move |c: Caches| crate::lock(&caches).push(c)
    };
    let mut leadership = None;
    if args.leader_elect {
        let namespace = args
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_string());
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("groupdocs-token-operator-{}", hex::encode(rand::random::<[u8; 4]>())));
        let lease_seconds = args.lease_duration.as_secs().max(2) as u64;
        let client = shared.client.clone();
        match leader::acquire(
            client,
            &namespace,
            &args.lease_name,
            &identity,
            lease_seconds,
            role.clone(),
            signal.clone(),
        )
        .await?
        {
            Some(l) => leadership = Some(l),
            None => return Ok(()),
        }
    }

    // Controllers stop on SIGTERM, or when another replica took the lease.
    let stop = tokio_util::sync::CancellationToken::new();
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, lost) = (stop.clone(), lost.clone());
        let halt = shared.halt.clone();
        let signal = signal.clone();
        let mut leadership = leadership.take();
        tokio::spawn(async move {
            match leadership.as_mut() {
                Some(l) => tokio::select! {
                    () = signal => {},
                    () = l.lost() => {
                        // Another replica leads now: stop every reconcile in flight at once
                        // rather than let it finish a write the new leader may also make.
                        halt.cancel();
                        lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                },
                None => signal.await,
            }
            stop.cancel();
            leadership
        })
    };
    let shutdown = {
        let stop = stop.clone();
        async move { stop.cancelled().await }.boxed().shared()
    };
    let serve_cluster_kind = !args.no_cluster_credentials
        && args.watch_namespaces.is_empty()
        && shared.settings.secret_access == SecretAccess::Watch;
    let cluster_kind = async {
        if serve_cluster_kind {
            let on_store = |store| *crate::lock(&cluster_store) = Some(store);
            crate::cluster::run(shared.clone(), shutdown.clone(), on_store).await;
        } else {
            info!(
                "ClusterGroupDocsCredentials are not served: they need all namespaces watched and --secret-access=watch"
            );
        }
    };
    tokio::join!(controller::run(shared.clone(), shutdown.clone(), on_caches), cluster_kind);
    if let Ok(Some(leadership)) = watcher.await {
        leadership.release().await;
    }
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(StartError::LostLease);
    }
    info!("stopped");
    Ok(())
}

/// The Kubernetes client, with a client-side request rate when `qps` is not 0.
async fn kube_client(qps: u32) -> Result<Client, StartError> {
    let config = kube::Config::infer().await?;
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(match qps {
        0 => builder.build(),
        qps => builder.with_layer(&tower::limit::RateLimitLayer::new(qps.into(), Duration::from_secs(1))).build(),
    })
}

async fn prune_periodically(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(600)).await;
        shared.broker.prune(Timestamp::now());
        shared.writes.prune(std::time::Instant::now());
        shared.prune_retries(std::time::Instant::now());
    }
}

/// The gauges that describe credentials, from the caches at scrape time. Cluster credentials
/// have an empty `namespace` label.
fn refresh_gauges(metrics: &Metrics, caches: &[Caches], cluster: Option<&crate::cluster::ClusterCredentials>) {
    let namespaced: Vec<_> = caches.iter().flat_map(|c| c.credentials.state()).collect();
    let cluster: Vec<_> = cluster
        .into_iter()
        .flat_map(|store| store.state())
        .map(|cr| (cr.metadata.name.clone().unwrap_or_default(), cr.status.clone().map(served_token)))
        .collect();
    let namespaced = namespaced.iter().map(|cr| Described {
        namespace: cr.metadata.namespace.as_deref().unwrap_or_default(),
        name: cr.metadata.name.as_deref().unwrap_or_default(),
        ready: cr.ready(),
        status: cr.status_fields(),
    });
    let cluster = cluster.iter().map(|(name, status)| Described {
        namespace: "",
        name,
        ready: status.as_ref().map_or("Unknown", ready_status),
        status: status.as_ref(),
    });
    metrics.describe_credentials(namespaced.chain(cluster), Timestamp::now());
}

/// A cluster credential's token status for the gauges: without an expiry while it selects no
/// namespace (no copy holds a token then, so none can expire).
fn served_token(status: crate::crd::ClusterGroupDocsCredentialStatus) -> crate::crd::GroupDocsCredentialStatus {
    let mut token = status.token;
    if status.namespaces.is_some_and(|n| n.selected == 0) {
        token.expires_at = None;
    }
    token
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
pub async fn fetch_once(args: TokenArgs) -> Result<(), StartError> {
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
        Err(failure) => {
            // The same reasons as in status: nothing is held back here, so "retry" means now.
            let now = Timestamp::now();
            let error = match failure {
                Failure::InvalidClient(detail) => Error::InvalidClient { detail, retry_at: now },
                Failure::RateLimited { detail, until } => Error::RateLimited { detail, until, by: Limit::Endpoint },
                Failure::Unavailable(detail) => Error::TokenEndpointUnavailable { detail, retry_at: now },
                Failure::InvalidResponse(detail) => Error::InvalidTokenResponse { detail, retry_at: now },
                Failure::NotAllowed(detail) => Error::TokenUrlNotAllowed { url: req.url.clone(), detail },
            };
            Err(StartError::Token(format!("{}: {error}", error.reason())))
        }
    }
}
