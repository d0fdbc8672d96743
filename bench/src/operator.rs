//! The operator under test: the release build (or `BENCH_OPERATOR_BIN`), as the chart's
//! ServiceAccount, optionally under a profiler, its log kept after the run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser as _;
use groupdocs_dev_token_server::DevServer;
use groupdocs_token_operator::cli::{Cli, Command, RunArgs};
use test_support::{Launch, Operator, reconciles_in, tail, wait};

/// How long a started operator may take to become ready (its caches listed: the
/// credentials and their Secrets), before and per credential.
const READY_BASE: Duration = Duration::from_secs(60);
const READY_PER_CREDENTIAL: Duration = Duration::from_millis(2);
/// How long it may take to reconcile a population once ready, before and per credential.
const RECONCILED_BASE: Duration = Duration::from_secs(600);
const RECONCILED_PER_CREDENTIAL: Duration = Duration::from_millis(30);
/// A scrape of `/metrics` walks every cached credential: while waiting on the reconcile
/// counter, the benchmark looks at most once per this many scrapes' time, so that its own
/// polling costs the operator at most a fifth of its time at any N.
const SCRAPE_DUTY: u32 = 5;
/// Scrapes per measurement: the slowest is reported, against a target that any one must meet.
const SCRAPES: usize = 3;

/// How the benchmark runs the operator.
pub struct OperatorCommand {
    pub bin: PathBuf,
    /// A profiler command to run it under, e.g. `heaptrack -o /tmp/op` (empty: none).
    pub wrapper: String,
    pub log_level: String,
    /// Where the logs go: outside the control plane's directory, for a look after the run.
    pub log_dir: PathBuf,
    /// `--credential-metrics` (which credentials get per-credential series), when set.
    pub credential_metrics: Option<String>,
}

impl OperatorCommand {
    /// Starts it for namespace `ns` with the credentials of `kubeconfig`, allowed to use the
    /// token server `dev` (loopback URLs, like any other, need an allowed prefix).
    pub fn start(&self, kubeconfig: &Path, ns: &str, dev: &DevServer) -> Operator {
        self.launch(kubeconfig, ns, dev, ns).start()
    }

    /// [`OperatorCommand::start`]'s launch, for a caller to add flags to; the log is
    /// `operator-<log_name>.log`.
    pub fn launch(&self, kubeconfig: &Path, ns: &str, dev: &DevServer, log_name: &str) -> Launch {
        Launch::new(&self.bin, ns, kubeconfig)
            .args([format!("--allowed-token-url=http://{}/", dev.addr())])
            .args(["--log-level", &self.log_level])
            .args(self.credential_metrics.iter().map(|v| format!("--credential-metrics={v}")))
            .wrapper(&self.wrapper)
            .log(self.log_dir.join(format!("operator-{log_name}.log")))
            // A profiler writes its output after the operator has stopped: wait for it.
            .stop_grace(Duration::MAX)
    }
}

/// How long an operator of `n` credentials may take to become ready.
pub fn ready_deadline(n: usize) -> Duration {
    READY_BASE + READY_PER_CREDENTIAL * u32::try_from(n).unwrap_or(u32::MAX)
}

/// Waits until `op` is ready and has reconciled `n` credentials since it started.
pub async fn wait_reconciled(op: &Operator, n: usize) {
    op.wait_ready(ready_deadline(n)).await;
    let deadline = RECONCILED_BASE + RECONCILED_PER_CREDENTIAL * u32::try_from(n).unwrap_or(u32::MAX);
    let poll = async {
        loop {
            let asked = Instant::now();
            let done = reconciles_in(&op.metrics().await, |_| true);
            if done >= n as u64 {
                return;
            }
            tokio::time::sleep(asked.elapsed().saturating_mul(SCRAPE_DUTY).max(wait::POLL)).await;
        }
    };
    if tokio::time::timeout(deadline, poll).await.is_err() {
        panic!("{n} reconciles not done within {deadline:?}\noperator log tail:\n{}", tail(&op.logs(), 30));
    }
}

/// One scrape of the operator's `/metrics`: how long the GET took and what it returned.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Scrape {
    pub ms: f64,
    pub bytes: usize,
    pub lines: usize,
    /// Samples: lines that are neither comments nor blank.
    pub series: usize,
}

/// Scrapes `op`'s `/metrics` [`SCRAPES`] times and keeps the slowest, with its size.
pub async fn scrape_metrics(op: &Operator) -> Scrape {
    let mut slowest = Scrape::default();
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let text = op.metrics().await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        assert!(!text.is_empty(), "the operator's /metrics did not answer");
        if ms >= slowest.ms {
            slowest = Scrape {
                ms,
                bytes: text.len(),
                lines: text.lines().count(),
                series: text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count(),
            };
        }
    }
    slowest
}

/// The operator's `run` settings as it starts them here: its defaults, and the `GDTO_*`
/// variables it inherits.
pub fn run_settings() -> RunArgs {
    match Cli::try_parse_from(["groupdocs-token-operator", "run"]).expect("the operator's defaults").command {
        Command::Run(args) => args,
        _ => unreachable!("parsed as run"),
    }
}
