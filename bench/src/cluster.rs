//! The benchmark's cluster: a local control plane with the operator's plain manifests
//! applied, clients as its administrator and as the chart's ServiceAccount, the objects of a
//! scenario created in bulk, and the API server's request counters.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use groupdocs_dev_token_server::DevServer;
use groupdocs_token_operator::crd::GroupDocsCredential;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use serde_json::json;
use test_support::{kubeconfig, metrics, objects, process, wait};

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The ServiceAccount of the plain manifests (the chart's), and its namespace.
const SERVICE_ACCOUNT: &str = "groupdocs-token-operator";
const SERVICE_ACCOUNT_NS: &str = "groupdocs-token-operator";
/// Long enough for the longest run.
const SERVICE_ACCOUNT_TOKEN_LIFETIME: &str = "24h";
/// How long one request may go unanswered. Lists are paged (500 objects a page) and watches
/// end after at most 290 s, so this bounds one page or one write on a loaded API server, at
/// any N.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Requests in flight while the benchmark creates its objects.
pub const CREATE_CONCURRENCY: usize = 32;
const UNRELATED_CREATE_CONCURRENCY: usize = 64;
/// The size of an unrelated Secret's value.
const UNRELATED_SECRET_BYTES: usize = 512;
const UNRELATED_NS: &str = "unrelated";
/// How long a population of N may take to become Ready: [`ALL_READY_BASE`] and
/// [`ALL_READY_PER_CREDENTIAL`] each (an hour and more at 100,000; the cold start is expected
/// to take 10-15 minutes there on two cores, the floor the same).
const ALL_READY_BASE: Duration = Duration::from_secs(1800);
const ALL_READY_PER_CREDENTIAL: Duration = Duration::from_millis(20);
/// How long one new credential may take, and how often it is looked at (the creation-to-Ready
/// latency is measured at this resolution).
const READY_DEADLINE: Duration = Duration::from_secs(120);
const READY_POLL: Duration = Duration::from_millis(20);
/// The API server's request counter, and the resources whose requests the benchmark counts.
const API_REQUESTS: &str = "apiserver_request_total";
const COUNTED_RESOURCES: [&str; 3] = ["secrets", "groupdocscredentials", "events"];
/// Verbs that write.
const WRITE_VERBS: [&str; 7] = ["POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"];
/// etcd's space quota: room for the largest run's objects and all their revisions until
/// compaction (100,000 credentials, their Secrets, status writes and events, then the floor's
/// same again, on top of the smaller sizes'), where the default 2 GiB could fill up and turn
/// the cluster read-only. 8 GiB is etcd's documented maximum recommendation.
const ETCD_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// Watch errors (a 410 after compaction, a dropped connection) restart the observer's watch
/// after this long instead of ending it.
const WATCH_RETRY: Duration = Duration::from_secs(1);

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
        let cp = testenv::ControlPlane::start_with(dir, testenv::Lifetime::Attached, &control_plane_options())
            .expect("control plane");
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

/// The control plane's sizing beyond the defaults: etcd's quota only. kube-apiserver's
/// defaults suffice: lists are paged, its watch cache sizes itself, priority and fairness
/// (400 + 200 seats) queues rather than rejects the creators' and the operator's requests, and
/// events expire after an hour as in production. Changing them would measure a cluster tuned
/// for the benchmark rather than a stock one.
fn control_plane_options() -> testenv::Options {
    testenv::Options { etcd_args: vec![format!("--quota-backend-bytes={ETCD_QUOTA_BYTES}")], ..Default::default() }
}

/// What the control plane uses at one moment: the floor's own limits.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ControlPlaneUsage {
    /// kube-apiserver's resident memory now and at its peak so far (`VmHWM`), in MiB.
    pub apiserver_rss_mib: f64,
    pub apiserver_peak_rss_mib: f64,
    pub etcd_rss_mib: f64,
    pub etcd_peak_rss_mib: f64,
    /// etcd's database file (what the quota limits; it does not shrink without a defrag).
    pub etcd_db_bytes: u64,
    pub etcd_quota_bytes: u64,
}

impl Cluster {
    /// kube-apiserver's and etcd's memory and etcd's database size, now.
    pub fn usage(&self) -> ControlPlaneUsage {
        let pid = |name: &str| self.cp.pid(name).unwrap_or_else(|| panic!("{name} is not running"));
        let (apiserver, etcd) = (pid("kube-apiserver"), pid("etcd"));
        ControlPlaneUsage {
            apiserver_rss_mib: process::rss_mib(apiserver),
            apiserver_peak_rss_mib: process::peak_rss_mib(apiserver),
            etcd_rss_mib: process::rss_mib(etcd),
            etcd_peak_rss_mib: process::peak_rss_mib(etcd),
            etcd_db_bytes: std::fs::metadata(self.cp.etcd_db()).map(|m| m.len()).unwrap_or(0),
            etcd_quota_bytes: ETCD_QUOTA_BYTES,
        }
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

/// How long a population of `n` may take to become Ready.
pub fn all_ready_deadline(n: usize) -> Duration {
    ALL_READY_BASE + ALL_READY_PER_CREDENTIAL * u32::try_from(n).unwrap_or(u32::MAX)
}

/// Starts watching the credentials of `ns` and returns once the watch has listed them, so
/// that a clock started next does not include the observer's own list (200 pages at
/// 100,000). The future it returns waits until `n` are Ready and gives when each was first
/// seen Ready.
pub async fn watch_ready(client: &Client, ns: &str, n: usize) -> impl Future<Output = Vec<Instant>> + use<> {
    let api: Api<GroupDocsCredential> = Api::namespaced(client.clone(), ns);
    let ns = ns.to_string();
    let (listed_tx, listed) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        // Only names and times are kept, never the objects.
        let mut ready: HashMap<String, Instant> = HashMap::with_capacity(n);
        let mut listed_tx = Some(listed_tx);
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        while ready.len() < n {
            match stream.next().await {
                Some(Ok(watcher::Event::Apply(cr) | watcher::Event::InitApply(cr))) => {
                    if objects::is_ready(&cr) {
                        ready.entry(cr.metadata.name.unwrap_or_default()).or_insert_with(Instant::now);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(tx) = listed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Some(Ok(watcher::Event::Init | watcher::Event::Delete(_))) => {}
                // The watcher lists again on its next poll: a 410 or a dropped connection in
                // an hour-long cold start must not end the observation.
                Some(Err(e)) => {
                    eprintln!("bench: the watch of {ns}'s credentials failed ({e}); watching again");
                    tokio::time::sleep(WATCH_RETRY).await;
                }
                None => break,
            }
        }
        ready.into_values().collect::<Vec<_>>()
    });
    let deadline = all_ready_deadline(n);
    // An error (the task ended) shows in the future below; a watch that never lists does here.
    let never_listed = tokio::time::timeout(deadline, listed).await.is_err();
    assert!(!never_listed, "the credentials of a namespace not listed within {deadline:?}");
    async move {
        let ready = tokio::time::timeout(deadline, task)
            .await
            .unwrap_or_else(|_| panic!("all Ready within {deadline:?}"))
            .unwrap();
        assert_eq!(ready.len(), n);
        ready
    }
}
