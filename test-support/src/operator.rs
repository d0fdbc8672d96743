//! The operator as a subprocess, for the end-to-end tests and the benchmark: `run` in one
//! namespace with metrics and probes on free loopback ports, its output in a log file, stopped
//! with SIGTERM (then SIGKILL) when dropped. Which binary is the caller's to say: only a
//! test of the operator's own package knows where Cargo built it (`CARGO_BIN_EXE_*`).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testenv::process::{self, Target};

use crate::wait;

/// The operator's counter of finished reconciles, by `result` (`Ok` or a condition reason).
pub const RECONCILES: &str = "groupdocs_token_operator_reconciles_total";

/// How long the operator may take to shut down after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How to start the operator: [`Launch::new`], then options, then [`Launch::start`].
#[derive(Clone, Debug)]
pub struct Launch {
    bin: PathBuf,
    namespace: String,
    kubeconfig: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    wrapper: Vec<String>,
    log: Option<PathBuf>,
    stop_grace: Duration,
    all_namespaces: bool,
}

impl Launch {
    /// `bin run --watch-namespace namespace --allow-http-loopback`, with `kubeconfig`'s
    /// credentials.
    pub fn new(bin: impl Into<PathBuf>, namespace: &str, kubeconfig: &Path) -> Launch {
        Launch {
            bin: bin.into(),
            namespace: namespace.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
            args: Vec::new(),
            envs: Vec::new(),
            wrapper: Vec::new(),
            log: None,
            stop_grace: STOP_GRACE,
            all_namespaces: false,
        }
    }

    /// Watches every namespace instead of the test's own (which then only names the log):
    /// what cluster credentials need. Give it a `--credential-selector` of its own, or it
    /// serves other tests' credentials too.
    pub fn all_namespaces(mut self) -> Launch {
        self.all_namespaces = true;
        self
    }

    /// More flags.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Launch {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// More environment variables (`RUST_LOG` is always removed: flags set the log level).
    pub fn envs<K: AsRef<str>, V: AsRef<str>>(mut self, envs: impl IntoIterator<Item = (K, V)>) -> Launch {
        self.envs.extend(envs.into_iter().map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())));
        self
    }

    /// Runs the operator under `command` (words split on white space, e.g. a profiler's
    /// `heaptrack -o /tmp/op`), in its own process group so that stopping stops both.
    pub fn wrapper(mut self, command: &str) -> Launch {
        self.wrapper = command.split_whitespace().map(str::to_string).collect();
        self
    }

    /// Appends the operator's output to `log` (default: a new file in the temporary directory).
    pub fn log(mut self, log: impl Into<PathBuf>) -> Launch {
        self.log = Some(log.into());
        self
    }

    /// How long [`Operator::stop`] waits after SIGTERM before SIGKILL (`Duration::MAX`: as long
    /// as it takes, for a profiler that writes its output at the end).
    pub fn stop_grace(mut self, grace: Duration) -> Launch {
        self.stop_grace = grace;
        self
    }

    /// Starts it; panics when it cannot be started.
    pub fn start(self) -> Operator {
        let [metrics_port, probe_port] = process::free_ports();
        let log = self.log.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("gdto-operator-{}-{metrics_port}.log", self.namespace))
        });
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).expect("create the log directory");
        }
        let file = OpenOptions::new().create(true).append(true).open(&log).expect("open the operator log");
        let (mut command, target) = match self.wrapper.split_first() {
            Some((program, args)) => {
                use std::os::unix::process::CommandExt;
                let mut command = Command::new(program);
                command.args(args).arg(&self.bin).process_group(0);
                (command, Target::Group)
            }
            None => (Command::new(&self.bin), Target::Process),
        };
        let child = command
            .arg("run")
            .args(if self.all_namespaces { vec![] } else { vec!["--watch-namespace", &self.namespace] })
            .arg("--allow-http-loopback")
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--probe-addr", &format!("127.0.0.1:{probe_port}")])
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .envs(self.envs)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start the operator {}: {e}", self.bin.display()));
        Operator { child, log, metrics_port, probe_port, target, stop_grace: self.stop_grace }
    }
}

/// A running operator, stopped on drop.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
    pub metrics_port: u16,
    pub probe_port: u16,
    target: Target,
    stop_grace: Duration,
}

impl Operator {
    /// Everything it has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its `/metrics` text; empty while it does not answer.
    pub async fn metrics(&self) -> String {
        get(self.metrics_port, "/metrics").await.unwrap_or_default()
    }

    /// Whether `/readyz` answers `ok`.
    pub async fn ready(&self) -> bool {
        get(self.probe_port, "/readyz").await.is_some_and(|body| body == "ok")
    }

    /// Waits until `/readyz` answers `ok`; panics with the log tail after `deadline`.
    pub async fn wait_ready(&self, deadline: Duration) {
        if wait::until(deadline, || async { self.ready().await.then_some(()) }).await.is_none() {
            panic!("the operator was not ready within {deadline:?}\n{}", tail(&self.logs(), 30));
        }
    }

    /// The process id (the wrapper's, when it runs under one).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM first, so that it shuts down gracefully; SIGKILL if it has not after the grace.
    pub fn stop(&mut self) {
        process::stop(&mut self.child, self.target, self.stop_grace);
    }

    /// SIGKILL: no graceful shutdown, as when a node dies.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True once it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A GET on a loopback port: the body of a 2xx answer.
async fn get(port: u16, path: &str) -> Option<String> {
    groupdocs_token_operator::install_crypto_provider();
    let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// The last `n` lines of `text` (a log), for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The sum of [`RECONCILES`] in a /metrics text, over the results (`Ok` or a condition
/// reason) that `include` accepts; 0 when there is none yet.
pub fn reconciles_in(metrics: &str, include: impl Fn(&str) -> bool) -> u64 {
    crate::metrics::sum(metrics, RECONCILES, |s| include(s.label("result").unwrap_or_default())) as u64
}

/// Reconciles the operator has finished so far, all results.
pub async fn reconciles(op: &Operator) -> u64 {
    reconciles_in(&op.metrics().await, |_| true)
}

/// Reconciles the operator has finished so far, with a result that `include` accepts.
pub async fn reconciles_where(op: &Operator, include: impl Fn(&str) -> bool) -> u64 {
    reconciles_in(&op.metrics().await, include)
}

/// Waits until the operator has finished at least `k` reconciles since the count was `since`
/// ([`reconciles`]): proof that it looked, before a test asserts that nothing happened.
/// Returns the new count; panics with the log tail after `deadline`.
pub async fn wait_reconciles(op: &Operator, since: u64, k: u64, deadline: Duration) -> u64 {
    wait_reconciles_where(op, |_| true, since, k, deadline).await
}

/// [`wait_reconciles`] counting only results that `include` accepts.
pub async fn wait_reconciles_where(
    op: &Operator,
    include: impl Fn(&str) -> bool,
    since: u64,
    k: u64,
    deadline: Duration,
) -> u64 {
    let done = wait::until(deadline, || async {
        let now = reconciles_where(op, &include).await;
        (now >= since + k).then_some(now)
    })
    .await;
    match done {
        Some(now) => now,
        None => panic!(
            "timed out after {deadline:?} waiting for {k} reconciles since {since} (now {})\noperator log tail:\n{}",
            reconciles_where(op, &include).await,
            tail(&op.logs(), 30)
        ),
    }
}
