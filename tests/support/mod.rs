//! Shared parts of the end-to-end tests: the test binary's control plane, one namespace per
//! test, the development token server in-process, and the operator as a real subprocess.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use groupdocs_dev_token_server::{DevServer, DevServerArgs};
use groupdocs_token_operator::crd::GroupDocsCredential;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

pub const OPERATOR: &str = env!("CARGO_BIN_EXE_groupdocs-token-operator");

/// The control plane of this test binary (started on first use).
pub fn control_plane() -> &'static testenv::SharedControlPlane {
    testenv::shared()
}

pub async fn client() -> Client {
    groupdocs_token_operator::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(&control_plane().kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Runs kubectl against the test control plane; panics with its stderr on failure.
pub fn kubectl(args: &[&str]) -> String {
    let out = control_plane().kubectl().args(args).output().expect("run kubectl");
    assert!(out.status.success(), "kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs the committed CRD once per test binary and waits until it is Established.
pub fn install_crd() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/groupdocs.cloud_groupdocscredentials.yaml");
        kubectl(&["apply", "--server-side", "-f", crd]);
        kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/groupdocscredentials.groupdocs.cloud"]);
    });
}

/// Polls `check` until it returns `Some`, or panics after `deadline` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

static NAMESPACES: AtomicU32 = AtomicU32::new(0);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The operator as a subprocess, killed on drop. Its log goes to a file kept for failures.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
    pub metrics_port: u16,
    pub probe_port: u16,
}

impl Operator {
    pub fn start(namespace: &str, extra: &[&str]) -> Operator {
        Operator::start_as(namespace, extra, &control_plane().kubeconfig)
    }

    /// Starts the operator with the credentials of `kubeconfig` (e.g. a ServiceAccount's).
    pub fn start_as(namespace: &str, extra: &[&str], kubeconfig: &std::path::Path) -> Operator {
        Operator::start_with(namespace, extra, kubeconfig, &[])
    }

    /// [`Operator::start_as`] with extra environment variables (e.g. `POD_NAME`).
    pub fn start_with(
        namespace: &str,
        extra: &[&str],
        kubeconfig: &std::path::Path,
        envs: &[(&str, &str)],
    ) -> Operator {
        let log = std::env::temp_dir().join(format!("gdto-operator-{namespace}-{}.log", free_port()));
        let file = std::fs::File::create(&log).unwrap();
        let (metrics_port, probe_port) = (free_port(), free_port());
        let child = Command::new(OPERATOR)
            .arg("run")
            .args(["--watch-namespace", namespace, "--allow-http-loopback"])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--probe-addr", &format!("127.0.0.1:{probe_port}")])
            .args(test_defaults(extra))
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .envs(envs.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the operator");
        Operator { child, log, metrics_port, probe_port }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub fn stop(&mut self) {
        // SIGTERM first: the operator shuts down gracefully.
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL: no graceful shutdown, as when a node dies.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

/// Shorter timings than production, unless a test sets them itself; and, unless a test lists
/// its own `--allowed-token-url`, the default prefix plus every token server this test binary
/// started through [`Env::new`] (see [`allow_token_server`]): loopback URLs need a listed
/// prefix like any other, `--allow-http-loopback` only permits plain http on them.
fn test_defaults(extra: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, value) in [("--min-refresh-interval", "1s"), ("--max-backoff", "4s")] {
        if !extra.iter().any(|a| a.starts_with(flag)) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    if !extra.iter().any(|a| a.starts_with("--allowed-token-url")) {
        let mut allowed = vec![groupdocs_token_operator::policy::DEFAULT_ALLOWED.to_string()];
        allowed.extend(TOKEN_SERVERS.lock().unwrap().iter().cloned());
        args.push(format!("--allowed-token-url={}", allowed.join(",")));
    }
    args
}

/// Origins (`http://127.0.0.1:<port>/`, and the https one when it serves TLS) of the token
/// servers started in this test binary. Tests run in parallel, so an operator may use the
/// servers of other tests too; all are local development servers.
static TOKEN_SERVERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Lists `dev` for the operators started from now on without their own
/// `--allowed-token-url`. [`Env::new`] does this for the test's own server.
pub fn allow_token_server(dev: &DevServer) {
    let mut origins = vec![format!("http://{}/", dev.addr())];
    origins.extend(dev.tls_token_url().map(|url| url.trim_end_matches("connect/token").to_string()));
    let mut servers = TOKEN_SERVERS.lock().unwrap();
    for origin in origins {
        if !servers.contains(&origin) {
            servers.push(origin);
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One test's world: its namespace, its token server and (once started) its operator.
pub struct Env {
    pub client: Client,
    pub ns: String,
    pub dev: DevServer,
    pub operator: Option<Operator>,
    operator_args: Mutex<Vec<String>>,
}

impl Env {
    /// A fresh namespace and token server; the operator is started by [`Env::start_operator`].
    pub async fn new(name: &str, dev_args: DevServerArgs) -> Env {
        install_crd();
        let client = client().await;
        let ns = format!("{name}-{}-{}", std::process::id(), NAMESPACES.fetch_add(1, Ordering::SeqCst));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let meta = ObjectMeta { name: Some(ns.clone()), ..Default::default() };
        namespaces.create(&PostParams::default(), &Namespace { metadata: meta, ..Default::default() }).await.unwrap();
        let dev = DevServer::start(dev_args).await.expect("start the token server");
        allow_token_server(&dev);
        Env { client, ns, dev, operator: None, operator_args: Mutex::new(Vec::new()) }
    }

    /// Runs the operator as ServiceAccount `sa` of namespace `sa_ns`, with a token from
    /// `kubectl create token`.
    pub fn start_operator_as(&mut self, sa_ns: &str, sa: &str, dir: &std::path::Path) {
        let kubeconfig = service_account_kubeconfig(sa_ns, sa, dir);
        self.operator = Some(Operator::start_as(&self.ns, &[], &kubeconfig));
    }

    pub fn start_operator(&mut self, extra: &[&str]) {
        *self.operator_args.lock().unwrap() = extra.iter().map(|s| s.to_string()).collect();
        self.operator = Some(Operator::start(&self.ns, extra));
    }

    pub fn restart_operator(&mut self) {
        if let Some(mut op) = self.operator.take() {
            op.stop();
        }
        let args = self.operator_args.lock().unwrap().clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.operator = Some(Operator::start(&self.ns, &args));
    }

    pub fn logs(&self) -> String {
        self.operator.as_ref().map(Operator::logs).unwrap_or_default()
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn credentials(&self) -> Api<GroupDocsCredential> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates or replaces a client Secret (labelled for the operator unless `labelled` is false).
    pub async fn put_client_secret(&self, name: &str, id: &str, secret: &str, labelled: bool) {
        let mut labels = BTreeMap::new();
        if labelled {
            labels.insert("groupdocs.cloud/client-credentials".to_string(), "true".to_string());
        }
        let body = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": labels},
            "stringData": {"client_id": id, "client_secret": secret},
        });
        self.secrets().patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&body)).await.unwrap();
    }

    /// Creates a GroupDocsCredential pointing at this test's token server.
    pub async fn create_credential(&self, name: &str, client_secret: &str, extra_spec: serde_json::Value) {
        let mut spec = json!({"clientSecretRef": {"name": client_secret}, "tokenUrl": self.dev.token_url()});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        let cr: GroupDocsCredential = serde_json::from_value(json!({
            "apiVersion": "groupdocs.cloud/v1alpha1", "kind": "GroupDocsCredential",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.credentials().create(&PostParams::default(), &cr).await.unwrap();
    }

    pub async fn condition(&self, name: &str, type_: &str) -> Option<Condition> {
        let cr = self.credentials().get_opt(name).await.ok()??;
        cr.status?.conditions.into_iter().find(|c| c.type_ == type_)
    }

    /// Waits until condition `type_` of `name` has `status` and `reason`; returns it.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
        deadline: Duration,
    ) -> Condition {
        let what = format!("{name}: {type_}={status}/{reason}");
        let found = tokio::time::timeout(
            deadline,
            wait_for(&what, deadline + Duration::from_secs(5), || async {
                self.condition(name, type_).await.filter(|c| c.status == status && c.reason == reason)
            }),
        )
        .await;
        match found {
            Ok(c) => c,
            Err(_) => panic!(
                "timed out waiting for {what}; last: {:?}\noperator log tail:\n{}",
                self.condition(name, type_).await,
                tail(&self.logs(), 30)
            ),
        }
    }

    pub async fn wait_ready(&self, name: &str) -> Condition {
        let what = format!("{name} Ready");
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            wait_for(&what, Duration::from_secs(35), || async {
                self.condition(name, "Ready").await.filter(|c| c.status == "True")
            }),
        )
        .await;
        match result {
            Ok(c) => c,
            Err(_) => panic!("{name} not Ready: {:?}\n{}", self.condition(name, "Ready").await, tail(&self.logs(), 30)),
        }
    }

    /// The decoded `access_token` of a Secret.
    pub async fn token_in(&self, secret: &str) -> Option<String> {
        let s = self.secrets().get_opt(secret).await.ok()??;
        let bytes = s.data?.get("access_token")?.0.clone();
        String::from_utf8(bytes).ok()
    }

    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.credentials().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }

    pub async fn cleanup(self) {
        drop(self.operator);
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(&self.ns, &DeleteParams::background()).await;
    }
}

/// A kubeconfig for ServiceAccount `sa` of `sa_ns` (a `kubectl create token` token), in `dir`.
pub fn service_account_kubeconfig(sa_ns: &str, sa: &str, dir: &std::path::Path) -> PathBuf {
    let token = kubectl(&["create", "token", sa, "-n", sa_ns, "--duration=1h"]);
    let kubeconfig = dir.join(format!("kubeconfig-{sa_ns}-{sa}"));
    std::fs::write(&kubeconfig, kubectl(&["config", "view", "--raw", "--minify"])).unwrap();
    let path = kubeconfig.to_str().unwrap();
    kubectl(&["--kubeconfig", path, "config", "set-credentials", sa, "--token", token.trim()]);
    kubectl(&["--kubeconfig", path, "config", "set-context", "--current", "--user", sa]);
    kubeconfig
}

/// The helm built with the control plane, bound to it.
pub fn helm(args: &[&str]) -> std::process::Output {
    let helm = testenv::testbin("helm").expect("helm (make testbins)");
    Command::new(helm).args(args).env("KUBECONFIG", &control_plane().kubeconfig).output().expect("run helm")
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The sum of `groupdocs_token_operator_reconciles_total` in a /metrics text, over the
/// results (`Ok` or a condition reason) that `include` accepts; 0 when there is none yet.
pub fn reconciles_in(metrics: &str, include: impl Fn(&str) -> bool) -> u64 {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("groupdocs_token_operator_reconciles_total{result=\"")?;
            let (result, value) = rest.split_once("\"} ")?;
            let value = value.split_whitespace().next()?;
            include(result)
                .then(|| value.parse::<u64>().ok().or_else(|| value.parse::<f64>().ok().map(|v| v as u64)))?
        })
        .sum()
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
    let start = Instant::now();
    loop {
        let now = reconciles_where(op, &include).await;
        if now >= since + k {
            return now;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {k} reconciles since {since} (now {now})\noperator log tail:\n{}",
            tail(&op.logs(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
