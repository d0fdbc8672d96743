//! Command line. Every flag of `run` can also come from `GDTO_<FLAG_IN_UPPER_SNAKE_CASE>`
//! (lists comma-separated).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::token::ClientAuth;

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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the GroupDocsCredential CRD as YAML.
    Crd,
    /// Fetch one token from the command line and print its expiry (never the token).
    Token(TokenArgs),
    /// Run the development token server, compatible with GroupDocs' /connect/token.
    DevServer(crate::devserver::DevServerArgs),
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
    /// Timeout of one token request, connection included.
    #[arg(long, env = "GDTO_TOKEN_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_std_duration)]
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
    /// Accept plain http token URLs on 127.0.0.1, ::1 and localhost (development only).
    #[arg(long, env = "GDTO_ALLOW_HTTP_LOOPBACK")]
    pub allow_http_loopback: bool,
    /// Allow token endpoints on private, link-local or otherwise internal addresses (refused
    /// by default so that a credential cannot aim the operator at the cloud metadata service).
    #[arg(long, env = "GDTO_ALLOW_PRIVATE_NETWORKS")]
    pub allow_private_networks: bool,
    /// Namespace to watch (repeatable). Default: all namespaces.
    #[arg(long = "watch-namespace", env = "GDTO_WATCH_NAMESPACE", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Failed token requests allowed per endpoint per minute, across all credentials
    /// (GroupDocs locks a caller out for 10 minutes after 20).
    #[arg(long, env = "GDTO_FAILED_REQUEST_BUDGET", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub failed_request_budget: u32,
    /// How long credentials the endpoint rejected wait before they are tried again, unless
    /// their client Secret changes first.
    #[arg(long, env = "GDTO_INVALID_CLIENT_RETRY", default_value = "1h", value_parser = parse_duration)]
    pub invalid_client_retry: jiff::SignedDuration,
    /// Shortest time between two renewals of one credential, whatever the token lifetime.
    #[arg(long, env = "GDTO_MIN_REFRESH_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub min_refresh_interval: jiff::SignedDuration,
    /// Longest wait between retries after transient failures (exponential backoff cap).
    #[arg(long, env = "GDTO_MAX_BACKOFF", default_value = "1m", value_parser = parse_duration)]
    pub max_backoff: jiff::SignedDuration,
    /// Credentials reconciled at the same time.
    #[arg(long, env = "GDTO_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Requests per second to the Kubernetes API server at most (0: no client-side limit;
    /// the API server's priority and fairness still applies). A watch counts once.
    #[arg(long, env = "GDTO_KUBE_API_QPS", default_value_t = 0)]
    pub kube_api_qps: u32,
    /// Act on `spec.rolloutRestartTargets` (needs get and patch on Deployments, StatefulSets
    /// and DaemonSets).
    #[arg(long, env = "GDTO_ROLLOUT_RESTARTS")]
    pub rollout_restarts: bool,
    /// At most one rollout restart per workload per this interval.
    #[arg(long, env = "GDTO_ROLLOUT_RESTART_MIN_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub rollout_restart_min_interval: jiff::SignedDuration,
    /// How Secrets are read: `watch` (label-selected list/watch; changes act at once) or
    /// `get` (no list/watch on Secrets; GETs per reconcile and a periodic re-check).
    #[arg(long, env = "GDTO_SECRET_ACCESS", value_enum, default_value_t = SecretAccessArg::Watch)]
    pub secret_access: SecretAccessArg,
    /// With `--secret-access get`: how often every credential is re-checked.
    #[arg(long, env = "GDTO_RECHECK_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub recheck_interval: jiff::SignedDuration,
    /// Elect a leader on a Lease: of several replicas only the leader reconciles.
    #[arg(long, env = "GDTO_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease. Default: `$POD_NAMESPACE`, else `default`.
    #[arg(long, env = "GDTO_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// How long a leader's lease lasts without renewal: the longest a failover takes.
    #[arg(long, env = "GDTO_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: jiff::SignedDuration,
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

pub fn parse_duration(s: &str) -> Result<jiff::SignedDuration, String> {
    crate::schedule::parse_duration(s)
}

fn parse_std_duration(s: &str) -> Result<std::time::Duration, String> {
    std::time::Duration::try_from(parse_duration(s)?).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_follow_the_design() {
        let cli = Cli::try_parse_from(["groupdocs-token-operator", "run"]).unwrap();
        let Command::Run(args) = cli.command else { panic!() };
        assert_eq!(args.allowed_token_urls, ["https://api.groupdocs.cloud/"]);
        assert_eq!(args.failed_request_budget, 10);
        assert!(!args.allow_http_loopback);
        assert!(args.watch_namespaces.is_empty());
    }

    #[test]
    fn lists_are_repeatable_and_comma_separated() {
        let cli = Cli::try_parse_from([
            "groupdocs-token-operator",
            "run",
            "--watch-namespace=a,b",
            "--watch-namespace",
            "c",
            "--allowed-token-url=https://x.example/",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else { panic!() };
        assert_eq!(args.watch_namespaces, ["a", "b", "c"]);
        assert_eq!(args.allowed_token_urls, ["https://x.example/"]);
    }
}
