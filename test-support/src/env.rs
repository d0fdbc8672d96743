//! One end-to-end test's world ([`Env`]): the test binary's control plane, a namespace of its
//! own, the development token server in-process, and the operator as a real subprocess.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use groupdocs_dev_token_server::{DevServer, DevServerArgs};
use groupdocs_token_operator::crd::GroupDocsCredential;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::kubectl::kubectl;
use crate::operator::{Launch, Operator, tail};
use crate::{kubeconfig, objects, wait};

/// The CRDs as committed, installed by [`install_crd`].
const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/");

/// The control plane of this test binary (started on first use).
pub fn control_plane() -> &'static testenv::SharedControlPlane {
    testenv::shared()
}

/// A client of the test binary's control plane, as its administrator.
pub async fn client() -> Client {
    kubeconfig::client(&control_plane().kubeconfig).await
}

/// A kubeconfig for ServiceAccount `sa` of `sa_ns` (an hour's `kubectl create token` token),
/// in `dir`.
pub fn service_account_kubeconfig(sa_ns: &str, sa: &str, dir: &Path) -> PathBuf {
    kubeconfig::service_account(&control_plane().kubeconfig, sa_ns, sa, "1h", dir)
}

/// Installs the committed CRDs once per test binary and waits until it is Established.
pub fn install_crd() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        kubectl(&["apply", "--server-side", "-f", CRDS]);
        kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/groupdocscredentials.groupdocs.cloud",
            "crd/clustergroupdocscredentials.groupdocs.cloud",
        ]);
    });
}

/// The helm built with the control plane, bound to it.
pub fn helm(args: &[&str]) -> std::process::Output {
    let helm = testenv::testbin("helm").expect("helm (make testbins)");
    Command::new(helm).args(args).env("KUBECONFIG", &control_plane().kubeconfig).output().expect("run helm")
}

static NAMESPACES: AtomicU32 = AtomicU32::new(0);

/// Origins (`http://127.0.0.1:<port>/`, and the https one when it serves TLS) of the token
/// servers started in this test binary. Tests run in parallel, so an operator may use the
/// servers of other tests too; all are local development servers.
static TOKEN_SERVERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Lists `dev` for the operators started from now on without their own
/// `--allowed-token-url`. [`Env::new`] does this for the test's own server.
fn allow_token_server(dev: &DevServer) {
    let mut origins = vec![format!("http://{}/", dev.addr())];
    origins.extend(dev.tls_token_url().map(|url| url.trim_end_matches("connect/token").to_string()));
    let mut servers = TOKEN_SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    for origin in origins {
        if !servers.contains(&origin) {
            servers.push(origin);
        }
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
        allowed.extend(TOKEN_SERVERS.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        args.push(format!("--allowed-token-url={}", allowed.join(",")));
    }
    args
}

/// One test's world: its namespace, its token server and (once started) its operator.
pub struct Env {
    pub client: Client,
    pub ns: String,
    pub dev: DevServer,
    pub operator: Option<Operator>,
    operator_bin: PathBuf,
    operator_args: Vec<String>,
}

impl Env {
    /// A fresh namespace and token server; the operator (`operator_bin`, which only the test
    /// knows: `env!("CARGO_BIN_EXE_...")`) is started by [`Env::start_operator`].
    pub async fn new(operator_bin: &str, name: &str, dev_args: DevServerArgs) -> Env {
        install_crd();
        let client = client().await;
        let ns = format!("{name}-{}-{}", std::process::id(), NAMESPACES.fetch_add(1, Ordering::SeqCst));
        objects::create_namespace(&client, &ns).await.expect("create the test's namespace");
        let dev = DevServer::start(dev_args).await.expect("start the token server");
        allow_token_server(&dev);
        Env { client, ns, dev, operator: None, operator_bin: operator_bin.into(), operator_args: Vec::new() }
    }

    /// An operator for this test's namespace with the test defaults and `extra` flags, as the
    /// user of `kubeconfig`, with `envs` besides; the caller owns it.
    pub fn launch(&self, extra: &[&str], kubeconfig: &Path, envs: &[(&str, &str)]) -> Operator {
        Launch::new(&self.operator_bin, &self.ns, kubeconfig)
            .args(test_defaults(extra))
            .args(extra)
            .envs(envs.iter().copied())
            .start()
    }

    /// An operator watching every namespace (for cluster credentials), as the administrator,
    /// with the test defaults and `extra` flags; the caller owns it.
    pub fn launch_cluster_wide(&self, extra: &[&str]) -> Operator {
        Launch::new(&self.operator_bin, &self.ns, &control_plane().kubeconfig)
            .all_namespaces()
            .args(test_defaults(extra))
            .args(extra)
            .start()
    }

    /// Runs the operator as ServiceAccount `sa` of namespace `sa_ns`, with a token from
    /// `kubectl create token`.
    pub fn start_operator_as(&mut self, sa_ns: &str, sa: &str, dir: &Path) {
        let kubeconfig = service_account_kubeconfig(sa_ns, sa, dir);
        self.operator = Some(self.launch(&[], &kubeconfig, &[]));
    }

    /// Runs the operator as the cluster's administrator with `extra` flags.
    pub fn start_operator(&mut self, extra: &[&str]) {
        self.operator_args = extra.iter().map(|s| s.to_string()).collect();
        self.operator = Some(self.launch(extra, &control_plane().kubeconfig, &[]));
    }

    /// Stops the operator and starts it again with the flags of [`Env::start_operator`].
    pub fn restart_operator(&mut self) {
        if let Some(mut op) = self.operator.take() {
            op.stop();
        }
        let args: Vec<&str> = self.operator_args.iter().map(String::as_str).collect();
        self.operator = Some(self.launch(&args, &control_plane().kubeconfig, &[]));
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
        objects::put_client_secret(&self.client, &self.ns, name, id, secret, labelled).await;
    }

    /// Creates a GroupDocsCredential pointing at this test's token server.
    pub async fn create_credential(&self, name: &str, client_secret: &str, extra_spec: serde_json::Value) {
        let mut spec = json!({"clientSecretRef": {"name": client_secret}, "tokenUrl": self.dev.token_url()});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        objects::create_credential(&self.client, &self.ns, name, spec).await;
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
        let found = wait::until(deadline, || async {
            self.condition(name, type_).await.filter(|c| c.status == status && c.reason == reason)
        })
        .await;
        match found {
            Some(c) => c,
            None => panic!(
                "timed out waiting for {name}: {type_}={status}/{reason}; last: {:?}\noperator log tail:\n{}",
                self.condition(name, type_).await,
                tail(&self.logs(), 30)
            ),
        }
    }

    /// Waits (30 s) until `name` is Ready.
    pub async fn wait_ready(&self, name: &str) -> Condition {
        let found = wait::until(Duration::from_secs(30), || async {
            self.condition(name, "Ready").await.filter(|c| c.status == "True")
        })
        .await;
        match found {
            Some(c) => c,
            None => panic!("{name} not Ready: {:?}\n{}", self.condition(name, "Ready").await, tail(&self.logs(), 30)),
        }
    }

    /// The decoded `access_token` of a Secret.
    pub async fn token_in(&self, secret: &str) -> Option<String> {
        let s = self.secrets().get_opt(secret).await.ok()??;
        let bytes = s.data?.get("access_token")?.0.clone();
        String::from_utf8(bytes).ok()
    }

    /// The events in this test's namespace with `reason`.
    pub async fn events(&self, reason: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let all = events.list(&Default::default()).await.expect("list events").items;
        all.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).collect()
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
