//! Command line. Every flag of `run` can also come from `GDTO_<FLAG_IN_UPPER_SNAKE_CASE>`
//! (lists comma-separated).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::SignedDuration;

use crate::token::ClientAuth;

pub mod names;

#[derive(Parser, Debug)]
#[command(
    name = "groupdocs-token-operator",
    version,
    about = "Keeps GroupDocs Cloud access tokens fresh in Kubernetes Secrets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up and moved out at once: its size costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the GroupDocsCredential CRD as YAML.
    Crd,
    /// Fetch one token from the command line and print its expiry (never the token).
    Token(TokenArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SecretAccessArg {
    Watch,
    Get,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "GDTO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `groupdocs_token_operator=debug`.
    #[arg(long, env = "GDTO_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    /// How token requests authenticate: `post` (form fields, as GroupDocs documents) or `basic`.
    #[arg(long, env = "GDTO_CLIENT_AUTH", value_enum, default_value_t = ClientAuth::Post)]
    pub client_auth: ClientAuth,
    /// Timeout of one token request, connection included (1s to 10m).
    #[arg(long, env = "GDTO_TOKEN_REQUEST_TIMEOUT", default_value = "30s", value_parser = |s: &str| TOKEN_REQUEST_TIMEOUT.parse(s).map(SignedDuration::unsigned_abs))]
    pub token_request_timeout: std::time::Duration,
    /// PEM file of extra CA certificates to trust for token endpoints (besides the system's).
    #[arg(long, env = "GDTO_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Token URL prefix that credentials may use (repeatable).
    #[arg(long = "allowed-token-url", env = "GDTO_ALLOWED_TOKEN_URL", value_delimiter = ',', default_value = crate::policy::DEFAULT_ALLOWED)]
    pub allowed_token_urls: Vec<String>,
    /// Accept plain http token URLs on 127.0.0.1, ::1 and localhost (development only); they
    /// must still fall under an `--allowed-token-url` prefix.
    #[arg(long, env = "GDTO_ALLOW_HTTP_LOOPBACK")]
    pub allow_http_loopback: bool,
    /// Allow token endpoints on private, link-local or otherwise internal addresses (refused
    /// by default so that a credential cannot aim the operator at the cloud metadata service).
    #[arg(long, env = "GDTO_ALLOW_PRIVATE_NETWORKS")]
    pub allow_private_networks: bool,
    /// Namespace to watch (repeatable). Default: all namespaces.
    #[arg(long = "watch-namespace", env = "GDTO_WATCH_NAMESPACE", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Only credentials (both kinds) whose labels match this selector are watched and
    /// reconciled, so that several releases, each with its own lease, can split a fleet.
    /// Default (or empty): all. Read it through [`RunArgs::credential_selector`].
    #[arg(long = "credential-selector", env = "GDTO_CREDENTIAL_SELECTOR", value_parser = names::parse_label_selector)]
    pub credential_selector_arg: Option<String>,
    /// Namespace of the client Secrets that ClusterGroupDocsCredentials name. Default: the
    /// operator's own (`$POD_NAMESPACE`, else the service account's namespace file, else
    /// `default`).
    #[arg(long, env = "GDTO_CLUSTER_RESOURCE_NAMESPACE", value_parser = namespace_name)]
    pub cluster_resource_namespace: Option<String>,
    /// Failed token requests allowed per endpoint per minute, across all credentials
    /// (GroupDocs locks a caller out for 10 minutes after 20).
    #[arg(long, env = "GDTO_FAILED_REQUEST_BUDGET", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub failed_request_budget: u32,
    /// How long credentials the endpoint rejected wait before they are tried again, unless
    /// their client Secret changes first (1m to 168h).
    #[arg(long, env = "GDTO_INVALID_CLIENT_RETRY", default_value = "1h", value_parser = |s: &str| INVALID_CLIENT_RETRY.parse(s))]
    pub invalid_client_retry: SignedDuration,
    /// Shortest time between two renewals of one credential, whatever the token lifetime
    /// (1s to 1h).
    #[arg(long, env = "GDTO_MIN_REFRESH_INTERVAL", default_value = "30s", value_parser = |s: &str| MIN_REFRESH_INTERVAL.parse(s))]
    pub min_refresh_interval: SignedDuration,
    /// Longest wait between retries after transient failures (exponential backoff cap; 1s
    /// to 1h).
    #[arg(long, env = "GDTO_MAX_BACKOFF", default_value = "1m", value_parser = |s: &str| MAX_BACKOFF.parse(s))]
    pub max_backoff: SignedDuration,
    /// Credentials reconciled at the same time (1 to 1024).
    #[arg(long, env = "GDTO_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Requests per second to the Kubernetes API server at most (0: no client-side limit;
    /// the API server's priority and fairness still applies; at most 10000). A watch counts
    /// once.
    #[arg(long, env = "GDTO_KUBE_API_QPS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub kube_api_qps: u32,
    /// Act on `spec.rolloutRestartTargets` (needs get and patch on Deployments, StatefulSets
    /// and DaemonSets).
    #[arg(long, env = "GDTO_ROLLOUT_RESTARTS")]
    pub rollout_restarts: bool,
    /// Do not serve ClusterGroupDocsCredentials (for installs without the cluster rules:
    /// namespaces, and delete on Secrets to remove copies from namespaces that stop matching).
    /// They are never served with `--watch-namespace` or `--secret-access get`.
    #[arg(long, env = "GDTO_NO_CLUSTER_CREDENTIALS")]
    pub no_cluster_credentials: bool,
    /// At most one rollout restart per workload per this interval (1s to 24h).
    #[arg(long, env = "GDTO_ROLLOUT_RESTART_MIN_INTERVAL", default_value = "10m", value_parser = |s: &str| ROLLOUT_RESTART_MIN_INTERVAL.parse(s))]
    pub rollout_restart_min_interval: SignedDuration,
    /// How Secrets are read: `watch` (label-selected list/watch; changes act at once) or
    /// `get` (no list/watch on Secrets; GETs per reconcile and a periodic re-check).
    #[arg(long, env = "GDTO_SECRET_ACCESS", value_enum, default_value_t = SecretAccessArg::Watch)]
    pub secret_access: SecretAccessArg,
    /// With `--secret-access get`: how often every credential is re-checked (1s to 24h).
    #[arg(long, env = "GDTO_RECHECK_INTERVAL", default_value = "5m", value_parser = |s: &str| RECHECK_INTERVAL.parse(s))]
    pub recheck_interval: SignedDuration,
    /// Elect a leader on a Lease: of several replicas only the leader reconciles.
    #[arg(long, env = "GDTO_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease. Default: `$POD_NAMESPACE`, else `default`.
    #[arg(long, env = "GDTO_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease: one per release, so that releases that split a fleet with
    /// `--credential-selector` each elect their own leader.
    #[arg(long, env = "GDTO_LEASE_NAME", default_value = crate::leader::LEASE_NAME, value_parser = lease_name)]
    pub lease_name: String,
    /// How long a leader's lease lasts without renewal: the longest a failover takes (2s to
    /// 1h).
    #[arg(long, env = "GDTO_LEASE_DURATION", default_value = "15s", value_parser = |s: &str| LEASE_DURATION.parse(s))]
    pub lease_duration: SignedDuration,
    /// Which per-credential series `/metrics` carries: `all` (the token's expiry and Ready,
    /// two series a credential, about 200 bytes of each scrape), `unhealthy` (only for
    /// credentials not Ready, rate limited, overdue for renewal or whose token expires within
    /// the hour; for fleets beyond about 40,000 credentials) or `none`. The counts by Ready status and the earliest expiry are
    /// always there.
    #[arg(long, env = "GDTO_CREDENTIAL_METRICS", value_enum, default_value_t = crate::metrics::CredentialMetrics::All)]
    pub credential_metrics: crate::metrics::CredentialMetrics,
    /// Address of the Prometheus metrics endpoint (`/metrics`).
    #[arg(long, env = "GDTO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address of the health probes (`/healthz`, `/readyz`).
    #[arg(long, env = "GDTO_PROBE_ADDR", default_value = "0.0.0.0:8081")]
    pub probe_addr: SocketAddr,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

impl RunArgs {
    /// `--credential-selector`, `None` when it selects every credential (unset or empty).
    pub fn credential_selector(&self) -> Option<&str> {
        self.credential_selector_arg.as_deref().filter(|s| !s.is_empty())
    }
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// Token endpoint.
    #[arg(long, env = "GDTO_TOKEN_URL", default_value = crate::crd::DEFAULT_TOKEN_URL)]
    pub token_url: String,
    /// Client id.
    #[arg(long, env = "GDTO_CLIENT_ID")]
    pub client_id: String,
    /// Environment variable that holds the client secret (kept off the command line).
    #[arg(long, default_value = "GDTO_CLIENT_SECRET")]
    pub client_secret_env: String,
    /// OAuth scope, sent only when set.
    #[arg(long, env = "GDTO_SCOPE")]
    pub scope: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// A namespace flag's value: a DNS-1123 label.
fn namespace_name(s: &str) -> Result<String, String> {
    names::is_dns_label(s)
        .then(|| s.to_string())
        .ok_or_else(|| format!("{s:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"))
}

/// A Lease name: a DNS-1123 subdomain.
fn lease_name(s: &str) -> Result<String, String> {
    names::is_dns_subdomain(s)
        .then(|| s.to_string())
        .ok_or_else(|| format!("{s:?} is not a Lease name (lowercase letters, digits, '-' and '.', at most 253)"))
}

/// Where the client Secrets of cluster-scoped credentials live when
/// `--cluster-resource-namespace` is not given: the operator's own namespace, as the downward
/// API (`$POD_NAMESPACE`) or the mounted service account token says, else `default`.
pub fn own_namespace(pod_namespace: Option<String>, service_account_file: &std::path::Path) -> String {
    let usable = |ns: String| Some(ns.trim().to_string()).filter(|ns| names::is_dns_label(ns));
    pod_namespace
        .and_then(usable)
        .or_else(|| std::fs::read_to_string(service_account_file).ok().and_then(usable))
        .unwrap_or_else(|| "default".to_string())
}

/// The namespace file of the mounted service account token.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Parses a duration that is not negative, such as `1h`, `30m`, `1h30m` or `90s`, without
/// bounds. Flags use [`DurationRange::parse`].
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    crate::schedule::parse_duration(s)
}

/// The values a duration flag accepts, both ends included.
///
/// No lower bound is zero: each of these durations paces a loop (retries, renewals,
/// re-checks, lease renewals) or bounds a request, and zero would make it spin or fail at
/// once. No upper bound exceeds a week: these durations are added to "now", and jiff's
/// parser accepts values such as `9999999999h` that would take a timestamp past the end of
/// its range (year 9999) and panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationRange {
    pub min: SignedDuration,
    pub max: SignedDuration,
}

impl DurationRange {
    const fn new(min: SignedDuration, max: SignedDuration) -> Self {
        DurationRange { min, max }
    }

    /// Parses `s` and checks it lies in the range; every error names the range.
    pub fn parse(&self, s: &str) -> Result<SignedDuration, String> {
        let allowed = || format!("allowed: {:#} to {:#}", self.min, self.max);
        let d = parse_duration(s).map_err(|e| format!("{e}; {}", allowed()))?;
        if d < self.min || d > self.max {
            return Err(format!("{:?} is out of range; {}", s.trim(), allowed()));
        }
        Ok(d)
    }
}

const SECOND: SignedDuration = SignedDuration::from_secs(1);
const DAY: SignedDuration = SignedDuration::from_hours(24);
const WEEK: SignedDuration = SignedDuration::from_hours(7 * 24);

/// `--invalid-client-retry`: at least a minute, the failed-request budget's window (sooner
/// only spends the budget on credentials the endpoint already refused); at most a week.
pub const INVALID_CLIENT_RETRY: DurationRange = DurationRange::new(SignedDuration::from_mins(1), WEEK);
/// `--min-refresh-interval`: zero would let a short-lived token renew in a loop; more than an
/// hour would keep tokens of an hour's lifetime from being renewed before they expire.
pub const MIN_REFRESH_INTERVAL: DurationRange = DurationRange::new(SECOND, SignedDuration::from_hours(1));
/// `--max-backoff`: the cap of the exponential backoff; zero would retry at once.
pub const MAX_BACKOFF: DurationRange = DurationRange::new(SECOND, SignedDuration::from_hours(1));
/// `--rollout-restart-min-interval`: zero would restart on every token write; a day is the
/// lifetime of a GroupDocs token, longer would let restarts fall behind the tokens.
pub const ROLLOUT_RESTART_MIN_INTERVAL: DurationRange = DurationRange::new(SECOND, DAY);
/// `--recheck-interval`: zero would re-check every credential in a loop; at most a day.
pub const RECHECK_INTERVAL: DurationRange = DurationRange::new(SECOND, DAY);
/// `--lease-duration`: whole seconds on the Lease, renewed with a third of it left (at least
/// 1 s), so 2 s is the shortest that leaves room to renew; an hour is already a long failover.
pub const LEASE_DURATION: DurationRange =
    DurationRange::new(SignedDuration::from_secs(2), SignedDuration::from_hours(1));
/// `--token-request-timeout`: zero would fail every request; ten minutes is far beyond any
/// answer worth waiting for.
pub const TOKEN_REQUEST_TIMEOUT: DurationRange = DurationRange::new(SECOND, SignedDuration::from_mins(10));

/// Every duration flag of `run`, its range and its default, for the tests.
#[cfg(test)]
const DURATION_FLAGS: &[(&str, DurationRange, &str)] = &[
    ("--invalid-client-retry", INVALID_CLIENT_RETRY, "1h"),
    ("--min-refresh-interval", MIN_REFRESH_INTERVAL, "30s"),
    ("--max-backoff", MAX_BACKOFF, "1m"),
    ("--rollout-restart-min-interval", ROLLOUT_RESTART_MIN_INTERVAL, "10m"),
    ("--recheck-interval", RECHECK_INTERVAL, "5m"),
    ("--lease-duration", LEASE_DURATION, "15s"),
    ("--token-request-timeout", TOKEN_REQUEST_TIMEOUT, "30s"),
];

/// `run` with the given arguments.
#[cfg(test)]
fn parse_run(extra: &[&str]) -> Result<RunArgs, clap::Error> {
    let argv = ["groupdocs-token-operator", "run"].into_iter().chain(extra.iter().copied());
    Cli::try_parse_from(argv).map(|cli| match cli.command {
        Command::Run(args) => args,
        _ => unreachable!("parsed run"),
    })
}

/// The value of the duration flag `flag` in `args`.
#[cfg(test)]
fn duration_of(args: &RunArgs, flag: &str) -> SignedDuration {
    match flag {
        "--invalid-client-retry" => args.invalid_client_retry,
        "--min-refresh-interval" => args.min_refresh_interval,
        "--max-backoff" => args.max_backoff,
        "--rollout-restart-min-interval" => args.rollout_restart_min_interval,
        "--recheck-interval" => args.recheck_interval,
        "--lease-duration" => args.lease_duration,
        "--token-request-timeout" => SignedDuration::try_from(args.http.token_request_timeout).unwrap(),
        other => panic!("not a duration flag: {other}"),
    }
}

#[cfg(test)]
mod tests;
