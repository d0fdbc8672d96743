//! `make bench`: the operator at scale on a local control plane and the development token
//! server ([`TOKEN_LATENCY_MS`] of latency). The operator runs as the chart's ServiceAccount,
//! so the API server's priority and fairness limits apply to it as in production. Writes
//! `bench/results/latest.{json,md}` (with issue #14's targets checked against the largest
//! population) and four SVG plots: time to Ready and peak RSS over N, and both per
//! credential. Not part of `make test`; `make bench-large` adds N = 100,000.
//!
//! Per population: the operator's baseline (no credentials) once, then for each N the cold
//! start, idle, restart, a `/metrics` scrape of the restarted operator, the floor, and the
//! control plane's own memory and etcd size after the cold start and after the floor.
//!
//! Environment: `BENCH_SIZES` (default `100,1000,10000`), `BENCH_IDLE_SECS` (300),
//! `BENCH_UNRELATED` (30000), `BENCH_NEW` (100), `BENCH_LOG_LEVEL` (warn),
//! `BENCH_OPERATOR_WRAPPER` (a profiler command to run the operator under),
//! `BENCH_WAVE_N` (1000 credentials over N/10 clients; 0 skips the renewal wave),
//! `BENCH_WAVE_LIFETIME_SECS` (120), `BENCH_SHARDING_N` (10000 credentials split over two
//! processes, against one; 0 skips it), `BENCH_FANOUT_N` (1000 namespaces one cluster credential
//! selects; 0 skips it), `BENCH_SCENARIOS` (`populations,wave,sharding,fanout`: the
//! scenarios to run; a run of some only updates them in the existing `latest.json`),
//! `BENCH_FLOOR_UP_TO` (unset: every population has its floor; else only those up to this
//! size, the others' ratios reading as not met), `BENCH_RESULTS_DIR` (bench/results), `BENCH_OPERATOR_BIN`
//! (target/release/groupdocs-token-operator), `BENCH_CREDENTIAL_METRICS` (passed to every
//! operator as `--credential-metrics=<value>` when set; unset: the operator's default).
//!
//! By concern: [`cluster`] (control plane, objects, API request counts), [`operator`] (the
//! operator under test), [`floor`], [`wave`], [`sharding`], [`fanout`], [`report`]; here, the inputs and
//! the order of the scenarios.

mod cluster;
mod fanout;
mod floor;
mod operator;
mod report;
mod sharding;
mod wave;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use groupdocs_dev_token_server::{DevServer, DevServerArgs};
use jiff::SignedDuration;
use test_support::{Operator, process};

use crate::cluster::{Cluster, ROOT, diff, writes};
use crate::fanout::Fanout;
use crate::floor::Floor;
use crate::operator::{OperatorCommand, ready_deadline, run_settings, scrape_metrics, wait_reconciled};
use crate::report::{Baseline, NewCredentials, Report, Row, Unrelated, percentiles};
use crate::sharding::Sharding;
use crate::wave::Wave;

/// The token server's answer time, as a remote endpoint's.
const TOKEN_LATENCY_MS: u64 = 20;
/// Credentials per client: N credentials share N/10 client Secrets.
const CREDENTIALS_PER_CLIENT: usize = 10;
/// How long the operator's memory may settle after the unrelated Secrets.
const UNRELATED_SETTLE: Duration = Duration::from_secs(10);
/// New credentials beside the largest population come one per this interval.
const NEW_CREDENTIAL_INTERVAL: Duration = Duration::from_secs(1);
/// The empty namespace the baseline operator watches.
const BASELINE_NS: &str = "bench-baseline";

/// The inputs, from the environment.
struct Config {
    sizes: Vec<usize>,
    idle: Duration,
    unrelated: usize,
    new_credentials: usize,
    wave_n: usize,
    wave_lifetime: Duration,
    sharding_n: usize,
    fanout_n: usize,
    scenarios: Scenarios,
    /// `BENCH_FLOOR_UP_TO`: floors only for populations up to this size.
    floor_up_to: usize,
    results: PathBuf,
    operator: OperatorCommand,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Config {
    fn from_env() -> Config {
        let var = |name: &str| std::env::var(name).ok();
        Config {
            sizes: var("BENCH_SIZES")
                .unwrap_or_else(|| "100,1000,10000".into())
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect(),
            idle: Duration::from_secs(env_or("BENCH_IDLE_SECS", 300)),
            unrelated: env_or("BENCH_UNRELATED", 30_000),
            new_credentials: env_or("BENCH_NEW", 100),
            wave_n: env_or("BENCH_WAVE_N", 1000),
            wave_lifetime: Duration::from_secs(env_or("BENCH_WAVE_LIFETIME_SECS", 120)),
            sharding_n: env_or("BENCH_SHARDING_N", 10_000),
            fanout_n: env_or("BENCH_FANOUT_N", 1_000),
            scenarios: Scenarios::parse(var("BENCH_SCENARIOS").as_deref()),
            floor_up_to: env_or("BENCH_FLOOR_UP_TO", usize::MAX),
            results: var("BENCH_RESULTS_DIR")
                .map_or_else(|| PathBuf::from(format!("{ROOT}/bench/results")), PathBuf::from),
            operator: OperatorCommand {
                bin: var("BENCH_OPERATOR_BIN").map_or_else(
                    || PathBuf::from(format!("{ROOT}/target/release/groupdocs-token-operator")),
                    PathBuf::from,
                ),
                wrapper: var("BENCH_OPERATOR_WRAPPER").unwrap_or_default(),
                log_level: var("BENCH_LOG_LEVEL").unwrap_or_else(|| "warn".into()),
                log_dir: std::env::temp_dir().join("gdto-bench-logs"),
                credential_metrics: var("BENCH_CREDENTIAL_METRICS").filter(|v| !v.is_empty()),
            },
        }
    }
}

/// Which scenarios run (`BENCH_SCENARIOS`, comma-separated; default all).
struct Scenarios {
    populations: bool,
    wave: bool,
    sharding: bool,
    fanout: bool,
}

impl Scenarios {
    fn parse(list: Option<&str>) -> Scenarios {
        let Some(list) = list else { return Scenarios { populations: true, wave: true, sharding: true, fanout: true } };
        let names: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        for name in &names {
            assert!(
                ["populations", "wave", "sharding", "fanout"].contains(name),
                "BENCH_SCENARIOS: unknown scenario {name:?}; known: populations, wave, sharding, fanout"
            );
        }
        Scenarios {
            populations: names.contains(&"populations"),
            wave: names.contains(&"wave"),
            sharding: names.contains(&"sharding"),
            fanout: names.contains(&"fanout"),
        }
    }

    fn all(&self) -> bool {
        self.populations && self.wave && self.sharding && self.fanout
    }
}

/// The clients of a population of `n`.
fn clients_for(n: usize) -> usize {
    (n / CREDENTIALS_PER_CLIENT).max(1)
}

#[tokio::main]
async fn main() {
    groupdocs_token_operator::install_crypto_provider();
    let config = Config::from_env();
    let settings = run_settings();
    let cluster = Cluster::start(&std::env::temp_dir().join(format!("gdto-bench-{}", std::process::id()))).await;
    let dev_args = DevServerArgs { latency_ms: TOKEN_LATENCY_MS, ..Default::default() };
    let dev = DevServer::start(dev_args.clone()).await.unwrap();
    let floor =
        Floor { settings: &settings, dev: &dev, token_lifetime: SignedDuration::from_secs(dev_args.expires_in) };
    // A run of some scenarios keeps the others' figures from the last full run.
    let mut report =
        if config.scenarios.all() { Report::new() } else { Report::load(&config.results).unwrap_or_else(Report::new) };
    eprintln!(
        "bench: sizes {:?}, idle {}s, {} unrelated Secrets, {} new CRs",
        config.sizes,
        config.idle.as_secs(),
        config.unrelated,
        config.new_credentials
    );

    // The operator of the last population stays up for the scenarios beside it.
    let mut last: Option<(String, usize, Operator)> = None;
    let sizes: &[usize] = if config.scenarios.populations { &config.sizes } else { &[] };
    if config.scenarios.populations {
        report.rows.clear();
        (report.unrelated_secrets, report.new_crs) = (None, None);
        report.credential_metrics = config.operator.credential_metrics.clone();
        report.baseline = Some(baseline(&config, &cluster, &dev).await);
    }
    for &n in sizes {
        let ns = format!("bench-{n}");
        let _ = test_support::objects::create_namespace(&cluster.admin, &ns).await;
        let clients = clients_for(n);
        cluster::register_clients(&dev, clients);
        cluster::create_client_secrets(&cluster.admin, &ns, clients).await;
        if let Some((_, _, mut op)) = last.take() {
            op.stop();
        }
        let (mut row, op) = population(&config, &cluster, &dev, &floor, &ns, n, clients).await;
        row.derive_per_credential(report.baseline.as_ref().expect("measured before the populations"));
        report.rows.push(row);
        last = Some((ns, clients, op));
    }

    if config.scenarios.wave && config.wave_n > 0 {
        let (n, lifetime) = (config.wave_n, config.wave_lifetime);
        report.renewal_wave =
            Some(Wave::run(&cluster, &config.operator, dev_args.clone(), n, clients_for(n), lifetime).await);
    }

    if let Some((ns, clients, mut op)) = last.take() {
        // Unrelated Secrets: the operator caches only labelled ones.
        let rss_before_mib = process::rss_mib(op.pid());
        cluster::create_unrelated_secrets(&cluster.admin, config.unrelated).await;
        tokio::time::sleep(UNRELATED_SETTLE).await;
        let rss_after_mib = process::rss_mib(op.pid());
        report.unrelated_secrets = Some(Unrelated { count: config.unrelated, rss_before_mib, rss_after_mib });
        // New credentials, one at a time, while the largest population exists.
        let mut latencies = Vec::new();
        for i in 0..config.new_credentials {
            let name = format!("late-{i}");
            let start = Instant::now();
            let spec = cluster::credential_spec(i % clients, &dev);
            test_support::objects::create_credential(&cluster.admin, &ns, &name, spec).await;
            cluster::wait_ready(&cluster.admin, &ns, &name).await;
            latencies.push(start.elapsed());
            tokio::time::sleep(NEW_CREDENTIAL_INTERVAL.saturating_sub(start.elapsed())).await;
        }
        let (p50_ms, p99_ms) = percentiles(&latencies);
        report.new_crs = Some(NewCredentials {
            count: config.new_credentials,
            interval_s: NEW_CREDENTIAL_INTERVAL.as_secs_f64(),
            p50_ms,
            p99_ms,
        });
        op.stop();
    }

    if config.scenarios.sharding && config.sharding_n > 0 {
        let n = config.sharding_n;
        report.sharding = Some(Sharding::run(&cluster, &config.operator, &dev, n, clients_for(n)).await);
    }
    if config.scenarios.fanout && config.fanout_n > 0 {
        report.fanout = Some(Fanout::run(&cluster, &config.operator, &dev, config.fanout_n).await);
    }
    report.write(&config.results);
}

/// The operator with no credentials: started on an empty namespace, read once ready and
/// scraped once (the restarted instances the rows subtract it from have served `/metrics`).
async fn baseline(config: &Config, cluster: &Cluster, dev: &DevServer) -> Baseline {
    let _ = test_support::objects::create_namespace(&cluster.admin, BASELINE_NS).await;
    let mut op = config.operator.start(&cluster.sa_kubeconfig, BASELINE_NS, dev);
    op.wait_ready(ready_deadline(0)).await;
    scrape_metrics(&op).await;
    let baseline = Baseline { rss_mib: process::rss_mib(op.pid()), peak_rss_mib: process::peak_rss_mib(op.pid()) };
    op.stop();
    eprintln!("bench: baseline: {:.1} MiB RSS, {:.1} MiB peak", baseline.rss_mib, baseline.peak_rss_mib);
    baseline
}

/// One population of `n` credentials over `clients` clients in `ns`: cold start, idle,
/// restart with valid tokens, a `/metrics` scrape, and the floor. The operator watches `ns`
/// alone: the floor's namespace and the other populations' are not its to see. Returns the
/// row and the restarted operator.
async fn population(
    config: &Config,
    cluster: &Cluster,
    dev: &DevServer,
    floor: &Floor<'_>,
    ns: &str,
    n: usize,
    clients: usize,
) -> (Row, Operator) {
    let mut row = Row { n, clients, idle_secs: config.idle.as_secs(), ..Row::default() };

    // Cold start: N credentials exist, then the operator starts.
    cluster::create_credentials(&cluster.admin, ns, n, clients, dev).await;
    let api_before = cluster.api_requests();
    let tokens_before = dev.stats().token_requests;
    let watch = cluster::watch_ready(&cluster.admin, ns, n).await;
    let started = Instant::now();
    let mut op = config.operator.start(&cluster.sa_kubeconfig, ns, dev);
    let ready_at = watch.await;
    row.cold_start_s = started.elapsed().as_secs_f64();
    let latencies: Vec<Duration> = ready_at.iter().map(|t| t.duration_since(started)).collect();
    (row.p50_ms, row.p99_ms) = percentiles(&latencies);
    row.token_requests = dev.stats().token_requests - tokens_before;
    row.api_requests = diff(&cluster.api_requests(), &api_before);
    row.peak_rss_mib = process::peak_rss_mib(op.pid());
    row.cpu_s = process::cpu_seconds(op.pid());
    row.control_plane_after_cold_start = cluster.usage();
    eprintln!("bench: N={n}: all Ready in {:.1}s, p50 {} ms, p99 {} ms", row.cold_start_s, row.p50_ms, row.p99_ms);

    // Idle: nothing to do, nothing may be written or fetched.
    let api_before = cluster.api_requests();
    let tokens_before = dev.stats().token_requests;
    let cpu_before = process::cpu_seconds(op.pid());
    tokio::time::sleep(config.idle).await;
    row.idle_writes = writes(&diff(&cluster.api_requests(), &api_before));
    row.idle_token_requests = dev.stats().token_requests - tokens_before;
    row.idle_cpu_s = process::cpu_seconds(op.pid()) - cpu_before;

    // Restart with valid tokens: zero requests, zero writes.
    op.stop();
    let api_before = cluster.api_requests();
    let tokens_before = dev.stats().token_requests;
    let restarted = Instant::now();
    let op = config.operator.start(&cluster.sa_kubeconfig, ns, dev);
    wait_reconciled(&op, n).await;
    row.restart_s = restarted.elapsed().as_secs_f64();
    row.restart_peak_rss_mib = process::peak_rss_mib(op.pid());
    row.restart_writes = writes(&diff(&cluster.api_requests(), &api_before));
    row.restart_token_requests = dev.stats().token_requests - tokens_before;
    row.metrics_scrape = scrape_metrics(&op).await;
    eprintln!(
        "bench: N={n}: restart {:.1}s; /metrics {:.0} ms, {} bytes, {} series",
        row.restart_s, row.metrics_scrape.ms, row.metrics_scrape.bytes, row.metrics_scrape.series
    );

    // The floor: the same writes by a plain parallel client, as the same ServiceAccount.
    if n <= config.floor_up_to {
        row.floor_s = floor.run(cluster, n, clients).await.as_secs_f64();
        row.ratio = row.cold_start_s / row.floor_s;
        eprintln!("bench: N={n}: floor {:.1}s, ratio {:.2}", row.floor_s, row.ratio);
    } else {
        // Not a ratio of zero: the target reads as not met.
        row.ratio = f64::NAN;
    }
    row.control_plane_after_floor = cluster.usage();
    (row, op)
}
