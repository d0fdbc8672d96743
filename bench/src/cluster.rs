//! The benchmark's cluster: a local control plane with the operator's plain manifests
//! applied, clients as its administrator and as the chart's ServiceAccount, the objects of a
//! scenario created in bulk, and the API server's request counters.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use groupdocs_dev_token_server::DevServer;
use groupdocs_token_operator::crd::GroupDocsCredential;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use test_support::{kubeconfig, metrics, objects, wait};

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The ServiceAccount of the plain manifests (the chart's), and its namespace.
const SERVICE_ACCOUNT: &str = "groupdocs-token-operator";
const SERVICE_ACCOUNT_NS: &str = "groupdocs-token-operator";
/// Long enough for the longest run.
const SERVICE_ACCOUNT_TOKEN_LIFETIME: &str = "24h";
/// Watches and lists of 10,000 objects take a while on a loaded machine.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Requests in flight while the benchmark creates its objects.
pub const CREATE_CONCURRENCY: usize = 32;
const UNRELATED_CREATE_CONCURRENCY: usize = 64;
/// The size of an unrelated Secret's value.
const UNRELATED_SECRET_BYTES: usize = 512;
const UNRELATED_NS: &str = "unrelated";
/// How long a population may take to become Ready.
const ALL_READY_DEADLINE: Duration = Duration::from_secs(1800);
/// How long one new credential may take, and how often it is looked at (the creation-to-Ready
/// latency is measured at this resolution).
const READY_DEADLINE: Duration = Duration::from_secs(120);
const READY_POLL: Duration = Duration::from_millis(20);
/// The API server's request counter, and the resources whose requests the benchmark counts.
const API_REQUESTS: &str = "apiserver_request_total";
const COUNTED_RESOURCES: [&str; 3] = ["secrets", "groupdocscredentials", "events"];
/// Verbs that write.
const WRITE_VERBS: [&str; 7] = ["POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"];

/// The control plane and the clients the scenarios use.
pub struct Cluster {
    pub cp: testenv::ControlPlane,
    /// The cluster's administrator: creates the objects and watches them.
    pub admin: Client,
    /// The operator's ServiceAccount (the floor writes as it).
    pub sa: Client,
    pub sa_kubeconfig: PathBuf,
}

impl Cluster {
    /// Starts a control plane in `dir` and applies the operator's plain manifests.
    pub async fn start(dir: &Path) -> Cluster {
        let _ = std::fs::remove_dir_all(dir);
        let cp = testenv::ControlPlane::start(dir, testenv::Lifetime::Attached).expect("control plane");
        let kubectl = |args: &[&str]| cp.kubectl_run(args).unwrap_or_else(|e| panic!("{e}"));
        kubectl(&["apply", "--server-side", "-f", &format!("{ROOT}/deploy/manifests/groupdocs-token-operator.yaml")]);
        kubectl(&["wait", "--for=condition=Established", "crd/groupdocscredentials.groupdocs.cloud"]);
        let sa_kubeconfig = kubeconfig::service_account(
            cp.kubeconfig(),
            SERVICE_ACCOUNT_NS,
            SERVICE_ACCOUNT,
            SERVICE_ACCOUNT_TOKEN_LIFETIME,
            dir,
        );
        let admin = client(cp.kubeconfig()).await;
        let sa = client(&sa_kubeconfig).await;
        Cluster { cp, admin, sa, sa_kubeconfig }
    }

    /// [`API_REQUESTS`] of the counted resources, summed by verb and resource
    /// (`POST secrets`, `APPLY groupdocscredentials/status`, ...).
    pub fn api_requests(&self) -> BTreeMap<String, f64> {
        let text = self.cp.kubectl_run(&["get", "--raw", "/metrics"]).unwrap_or_default();
        let mut out = BTreeMap::new();
        for sample in metrics::samples(&text).filter(|s| s.name == API_REQUESTS) {
            let label = |k: &str| sample.label(k).unwrap_or_default();
            if !COUNTED_RESOURCES.contains(&label("resource")) {
                continue;
            }
            let subresource = match label("subresource") {
                "" => String::new(),
                sub => format!("/{sub}"),
            };
            *out.entry(format!("{} {}{subresource}", label("verb"), label("resource"))).or_default() += sample.value;
        }
        out
    }
}

async fn client(kubeconfig: &Path) -> Client {
    let mut config = kubeconfig::config(kubeconfig).await;
    config.read_timeout = Some(CLIENT_READ_TIMEOUT);
    Client::try_from(config).unwrap()
}

/// What the counters rose by.
pub fn diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// The writes among `requests`.
pub fn writes(requests: &BTreeMap<String, f64>) -> f64 {
    // A fold from +0.0: an empty float sum is -0.0.
    requests.iter().filter(|(k, _)| WRITE_VERBS.iter().any(|v| k.starts_with(v))).fold(0.0, |sum, (_, v)| sum + v)
}

/// Client `c`'s id; its Secret has the same name.
pub fn client_id(c: usize) -> String {
    format!("client-{c}")
}

fn client_secret_value(c: usize) -> String {
    format!("secret-{c}")
}

/// Makes `dev` accept clients `0..clients`.
pub fn register_clients(dev: &DevServer, clients: usize) {
    for c in 0..clients {
        dev.set_client(&client_id(c), &client_secret_value(c));
    }
}

/// Creates the labelled client Secrets of clients `0..clients` in `ns`.
pub async fn create_client_secrets(client: &Client, ns: &str, clients: usize) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(0..clients)
        .for_each_concurrent(CREATE_CONCURRENCY, |c| {
            let api = api.clone();
            async move {
                let secret = objects::client_secret(&client_id(c), &client_id(c), &client_secret_value(c), true);
                api.create(&PostParams::default(), &secret).await.unwrap();
            }
        })
        .await;
}

/// `n` Secrets the operator must ignore, in a namespace of their own.
pub async fn create_unrelated_secrets(client: &Client, n: usize) {
    let _ = objects::create_namespace(client, UNRELATED_NS).await;
    let api: Api<Secret> = Api::namespaced(client.clone(), UNRELATED_NS);
    futures::stream::iter(0..n)
        .for_each_concurrent(UNRELATED_CREATE_CONCURRENCY, |i| {
            let api = api.clone();
            async move {
                let s: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("unrelated-{i}")},
                    "stringData": {"data": "x".repeat(UNRELATED_SECRET_BYTES)},
                }))
                .unwrap();
                let _ = api.create(&PostParams::default(), &s).await;
            }
        })
        .await;
}

/// The spec of a credential of client `c` against `dev`.
pub fn credential_spec(c: usize, dev: &DevServer) -> serde_json::Value {
    json!({"clientSecretRef": {"name": client_id(c)}, "tokenUrl": dev.token_url()})
}

/// Creates `n` credentials (`cr-0`, ...) over `clients` client Secrets.
pub async fn create_credentials(client: &Client, ns: &str, n: usize, clients: usize, dev: &DevServer) {
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(CREATE_CONCURRENCY, |i| async move {
            objects::create_credential(client, ns, &format!("cr-{i}"), credential_spec(i % clients, dev)).await;
        })
        .await;
    eprintln!("bench: {n} credentials created in {:.1}s", started.elapsed().as_secs_f64());
}

/// Waits until credential `name` is Ready.
pub async fn wait_ready(client: &Client, ns: &str, name: &str) {
    let api: Api<GroupDocsCredential> = Api::namespaced(client.clone(), ns);
    let ready = wait::until_every(READY_POLL, READY_DEADLINE, || async {
        api.get(name).await.is_ok_and(|cr| objects::is_ready(&cr)).then_some(())
    })
    .await;
    assert!(ready.is_some(), "{name} not Ready");
}

/// Watches until `n` credentials are Ready; returns when each was first seen Ready.
pub fn watch_ready(client: &Client, ns: &str, n: usize) -> impl Future<Output = Vec<Instant>> + use<> {
    let api: Api<GroupDocsCredential> = Api::namespaced(client.clone(), ns);
    let task = tokio::spawn(async move {
        let mut ready: HashMap<String, Instant> = HashMap::new();
        let stream = watcher(api, watcher::Config::default()).applied_objects();
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(cr)) = stream.try_next().await {
            if objects::is_ready(&cr) {
                ready.entry(cr.metadata.name.clone().unwrap_or_default()).or_insert_with(Instant::now);
                if ready.len() >= n {
                    break;
                }
            }
        }
        ready.into_values().collect::<Vec<_>>()
    });
    async move {
        let ready = tokio::time::timeout(ALL_READY_DEADLINE, task)
            .await
            .unwrap_or_else(|_| panic!("all Ready within {ALL_READY_DEADLINE:?}"))
            .unwrap();
        assert_eq!(ready.len(), n);
        ready
    }
}
