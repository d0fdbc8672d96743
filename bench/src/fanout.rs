//! Fan-out: one `ClusterGroupDocsCredential` selecting `n` labelled namespaces. Measured from
//! its creation until its status reports the token in all `n` (every copy written), against
//! the floor: the same `n` Secrets created directly, as the operator's ServiceAccount, with the
//! operator's own write concurrency.

use std::time::{Duration, Instant};

use futures::StreamExt;
use groupdocs_dev_token_server::DevServer;
use groupdocs_token_operator::crd::ClusterGroupDocsCredential;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use test_support::{Operator, process, wait};

use crate::cluster::{self, CREATE_CONCURRENCY, Cluster};
use crate::operator::OperatorCommand;

/// The namespace label the credential selects.
const LABEL: &str = "bench.groupdocs.cloud/fanout";
/// The operator's namespace in the plain manifests: the cluster credential's client Secret lives there.
const CLIENT_NAMESPACE: &str = "groupdocs-token-operator";
/// The operator writes this many copies at once (`src/cluster/reconcile.rs`); so does the floor.
const WRITE_CONCURRENCY: usize = 16;
const POLL: Duration = Duration::from_millis(100);
const DEADLINE: Duration = Duration::from_secs(1800);

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Fanout {
    pub date: String,
    pub namespaces: usize,
    /// From the credential's creation until `status.namespaces.ready` is `namespaces`.
    pub all_ready_s: f64,
    /// The same Secrets created directly (the floor), and the ratio.
    pub floor_s: f64,
    pub ratio: f64,
    pub token_requests: u64,
    pub peak_rss_mib: f64,
    pub cpu_s: f64,
}

impl Fanout {
    pub async fn run(cluster: &Cluster, operator: &OperatorCommand, dev: &DevServer, n: usize) -> Self {
        cluster
            .cp
            .kubectl_run(&["wait", "--for=condition=Established", "crd/clustergroupdocscredentials.groupdocs.cloud"])
            .expect("the cluster CRD");
        cluster::register_clients(dev, 1);
        cluster::create_client_secrets(&cluster.admin, CLIENT_NAMESPACE, 1).await;
        let namespaces = create_namespaces(cluster, n).await;
        let mut op = start(cluster, operator, dev);
        op.wait_ready(Duration::from_secs(60)).await;

        let tokens_before = dev.stats().token_requests;
        let started = Instant::now();
        create_credential(cluster, dev).await;
        let ready = wait::until_every(POLL, DEADLINE, || async {
            let cr = Api::<ClusterGroupDocsCredential>::all(cluster.admin.clone()).get("fanout").await.ok()?;
            let counts = cr.status?.namespaces?;
            (counts.ready == i64::try_from(n).unwrap_or(i64::MAX)).then_some(())
        })
        .await;
        assert!(ready.is_some(), "the cluster credential did not reach {n} namespaces");
        let all_ready_s = started.elapsed().as_secs_f64();
        let token_requests = dev.stats().token_requests - tokens_before;
        let (peak_rss_mib, cpu_s) = (process::peak_rss_mib(op.pid()), process::cpu_seconds(op.pid()));
        op.stop();
        eprintln!("bench: fan-out: {n} namespaces Ready in {all_ready_s:.1}s, {token_requests} token requests");

        let floor_s = floor(cluster, &namespaces).await;
        eprintln!("bench: fan-out floor: {n} Secrets in {floor_s:.1}s");
        Fanout {
            date: jiff::Timestamp::now().to_string(),
            namespaces: n,
            all_ready_s,
            floor_s,
            ratio: all_ready_s / floor_s.max(f64::EPSILON),
            token_requests,
            peak_rss_mib,
            cpu_s,
        }
    }

    /// Its table in `latest.md`.
    pub fn markdown(&self) -> String {
        format!(
            "\nFan-out ({}): one ClusterGroupDocsCredential selecting {} namespaces, from its creation until every \
             namespace holds the token, against the floor (the same Secrets created directly, {WRITE_CONCURRENCY} at a time):\n\n\
             | namespaces | all Ready | floor | ratio | token requests | peak RSS | CPU |\n|---|---|---|---|---|---|---|\n\
             | {} | {:.1} s | {:.1} s | {:.2} | {} | {:.1} MiB | {:.1} s |\n",
            self.date,
            self.namespaces,
            self.namespaces,
            self.all_ready_s,
            self.floor_s,
            self.ratio,
            self.token_requests,
            self.peak_rss_mib,
            self.cpu_s
        )
    }
}

async fn create_namespaces(cluster: &Cluster, n: usize) -> Vec<String> {
    let api: Api<Namespace> = Api::all(cluster.admin.clone());
    let names: Vec<String> = (0..n).map(|i| format!("fanout-{i}")).collect();
    let started = Instant::now();
    futures::stream::iter(names.clone())
        .for_each_concurrent(CREATE_CONCURRENCY, |name| {
            let api = api.clone();
            async move {
                let ns: Namespace =
                    serde_json::from_value(json!({"metadata": {"name": name, "labels": {LABEL: "yes"}}})).unwrap();
                let _ = api.create(&PostParams::default(), &ns).await;
            }
        })
        .await;
    eprintln!("bench: fan-out: {n} namespaces created in {:.1}s", started.elapsed().as_secs_f64());
    names
}

/// The operator watching every namespace, as the chart's ServiceAccount.
fn start(cluster: &Cluster, operator: &OperatorCommand, dev: &DevServer) -> Operator {
    operator
        .launch(&cluster.sa_kubeconfig, "fanout", dev, "fanout")
        .all_namespaces()
        .args([format!("--cluster-resource-namespace={CLIENT_NAMESPACE}")])
        .start()
}

async fn create_credential(cluster: &Cluster, dev: &DevServer) {
    let cr: ClusterGroupDocsCredential = serde_json::from_value(json!({
        "apiVersion": "groupdocs.cloud/v1alpha1",
        "kind": "ClusterGroupDocsCredential",
        "metadata": {"name": "fanout"},
        "spec": {
            "clientSecretRef": {"name": cluster::client_id(0)},
            "tokenUrl": dev.token_url(),
            "namespaceSelector": {"matchLabels": {LABEL: "yes"}},
        },
    }))
    .unwrap();
    Api::<ClusterGroupDocsCredential>::all(cluster.admin.clone()).create(&PostParams::default(), &cr).await.unwrap();
}

/// The floor: one Secret of the copies' size per namespace, created as the ServiceAccount.
async fn floor(cluster: &Cluster, namespaces: &[String]) -> f64 {
    let started = Instant::now();
    futures::stream::iter(namespaces)
        .for_each_concurrent(WRITE_CONCURRENCY, |ns| {
            let api: Api<Secret> = Api::namespaced(cluster.sa.clone(), ns);
            async move {
                let s: Secret = serde_json::from_value(json!({
                    "metadata": {"name": "floor-token", "labels": {"app.kubernetes.io/managed-by": "floor"}},
                    "stringData": {"access_token": "x".repeat(900), "token_type": "Bearer",
                        "expires_at": "2026-11-29T00:00:00Z", "authorization": format!("Bearer {}", "x".repeat(900))},
                }))
                .unwrap();
                api.create(&PostParams::default(), &s).await.expect("the floor's Secret");
            }
        })
        .await;
    started.elapsed().as_secs_f64()
}
