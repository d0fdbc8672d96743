//! The operator under test: the release build (or `BENCH_OPERATOR_BIN`), as the chart's
//! ServiceAccount, optionally under a profiler, its log kept after the run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser as _;
use groupdocs_dev_token_server::DevServer;
use groupdocs_token_operator::cli::{Cli, Command, RunArgs};
use test_support::{Launch, Operator};

/// How long a started operator may take to become ready, and to reconcile a population.
const READY_DEADLINE: Duration = Duration::from_secs(60);
const RECONCILED_DEADLINE: Duration = Duration::from_secs(3600);

/// How the benchmark runs the operator.
pub struct OperatorCommand {
    pub bin: PathBuf,
    /// A profiler command to run it under, e.g. `heaptrack -o /tmp/op` (empty: none).
    pub wrapper: String,
    pub log_level: String,
    /// Where the logs go: outside the control plane's directory, for a look after the run.
    pub log_dir: PathBuf,
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
            .wrapper(&self.wrapper)
            .log(self.log_dir.join(format!("operator-{log_name}.log")))
            // A profiler writes its output after the operator has stopped: wait for it.
            .stop_grace(Duration::MAX)
    }
}

/// Waits until `op` is ready and has reconciled `n` credentials since it started.
pub async fn wait_reconciled(op: &Operator, n: usize) {
    op.wait_ready(READY_DEADLINE).await;
    test_support::wait_reconciles(op, 0, n as u64, RECONCILED_DEADLINE).await;
}

/// The operator's `run` settings as it starts them here: its defaults, and the `GDTO_*`
/// variables it inherits.
pub fn run_settings() -> RunArgs {
    match Cli::try_parse_from(["groupdocs-token-operator", "run"]).expect("the operator's defaults").command {
        Command::Run(args) => args,
        _ => unreachable!("parsed as run"),
    }
}
