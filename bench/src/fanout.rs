//! Fan-out: one `ClusterGroupDocsCredential` selecting `n` labelled namespaces. Measured from
//! its creation until its status reports the token in all `n` (every copy written), against
//! the floor: the operator's own copy (its data, labels, annotations and ownerReference) created
//! directly in the same `n` namespaces under another name, as the operator's ServiceAccount,
//! with the operator's own write concurrency, then the status the operator wrote written once.
//! Both start once kube-controller-manager has finished setting up the new namespaces.

use std::time::{Duration, Instant};

use futures::StreamExt;
use groupdocs_dev_token_server::DevServer;
use groupdocs_token_operator::controller::FIELD_MANAGER;
use groupdocs_token_operator::crd::ClusterGroupDocsCredential;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
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
/// kube-controller-manager gives every new namespace a `default` ServiceAccount and the
/// `kube-root-ca.crt` ConfigMap, each controller at its client's rate (about 20 a second): a
/// minute for a thousand namespaces.
const SETTLE_DEADLINE: Duration = Duration::from_secs(900);
const SETTLE_POLL: Duration = Duration::from_secs(1);
/// The credential's name, and the one whose status the floor writes.
const NAME: &str = "fanout";
const FLOOR_TWIN: &str = "fanout-floor";
/// The name of the floor's Secret in each namespace, beside the operator's copy.
const FLOOR_SECRET: &str = "floor-token";

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
        wait_namespaces_settled(cluster, n).await;
        let mut op = start(cluster, operator, dev);
        op.wait_ready(Duration::from_secs(60)).await;

        let tokens_before = dev.stats().token_requests;
        let started = Instant::now();
        create_credential(cluster, dev, NAME).await;
        let ready = wait::until_every(POLL, DEADLINE, || async {
            let cr = Api::<ClusterGroupDocsCredential>::all(cluster.admin.clone()).get(NAME).await.ok()?;
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

        let floor_s = floor(cluster, dev, &namespaces).await;
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
             namespace holds the token, against the floor (the operator's copy created directly in each namespace, \
             {WRITE_CONCURRENCY} at a time, then its status written once):\n\n\
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

async fn create_credential(cluster: &Cluster, dev: &DevServer, name: &str) {
    let cr: ClusterGroupDocsCredential = serde_json::from_value(json!({
        "apiVersion": "groupdocs.cloud/v1alpha1",
        "kind": "ClusterGroupDocsCredential",
        "metadata": {"name": name},
        "spec": {
            "clientSecretRef": {"name": cluster::client_id(0)},
            "tokenUrl": dev.token_url(),
            "namespaceSelector": {"matchLabels": {LABEL: "yes"}},
        },
    }))
    .unwrap();
    Api::<ClusterGroupDocsCredential>::all(cluster.admin.clone()).create(&PostParams::default(), &cr).await.unwrap();
}

/// Waits until kube-controller-manager has given each of the `n` namespaces its ServiceAccount
/// and CA ConfigMap. Until then it writes alongside whatever is measured, at its own pace: a
/// different share of the operator's run and of the floor's. In a real cluster the namespaces
/// are there long before the credential.
async fn wait_namespaces_settled(cluster: &Cluster, n: usize) {
    let started = Instant::now();
    let sas: Api<ServiceAccount> = Api::all(cluster.admin.clone());
    let cas: Api<ConfigMap> = Api::all(cluster.admin.clone());
    let in_fanout = |names: Vec<Option<String>>| names.iter().flatten().filter(|ns| ns.starts_with("fanout-")).count();
    let settled = wait::until_every(SETTLE_POLL, SETTLE_DEADLINE, || async {
        let sa = sas.list_metadata(&ListParams::default().fields("metadata.name=default")).await.ok()?;
        let ca = cas.list_metadata(&ListParams::default().fields("metadata.name=kube-root-ca.crt")).await.ok()?;
        let sa = in_fanout(sa.items.into_iter().map(|o| o.metadata.namespace).collect());
        let ca = in_fanout(ca.items.into_iter().map(|o| o.metadata.namespace).collect());
        (sa >= n && ca >= n).then_some(())
    })
    .await;
    assert!(settled.is_some(), "kube-controller-manager did not set up {n} namespaces within {SETTLE_DEADLINE:?}");
    eprintln!(
        "bench: fan-out: namespaces set up by kube-controller-manager in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// The floor: the operator's copy in the first namespace, as it wrote it, created under another
/// name in every namespace as the ServiceAccount, then the operator's status written once, to a
/// twin credential (written to the same one, it would change nothing and cost less). The twin
/// is created first, outside the measurement; no operator runs any more.
async fn floor(cluster: &Cluster, dev: &DevServer, namespaces: &[String]) -> f64 {
    let copy = Api::<Secret>::namespaced(cluster.admin.clone(), &namespaces[0])
        .get(&format!("{NAME}-token"))
        .await
        .expect("the operator's copy");
    let crs: Api<ClusterGroupDocsCredential> = Api::all(cluster.sa.clone());
    let status = crs.get(NAME).await.expect("the credential").status;
    create_credential(cluster, dev, FLOOR_TWIN).await;
    let status =
        json!({"apiVersion": "groupdocs.cloud/v1alpha1", "kind": "ClusterGroupDocsCredential", "status": status});

    let started = Instant::now();
    futures::stream::iter(namespaces)
        .for_each_concurrent(WRITE_CONCURRENCY, |ns| {
            let api: Api<Secret> = Api::namespaced(cluster.sa.clone(), ns);
            let secret = floor_secret(&copy, ns);
            async move {
                let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                api.create(&params, &secret).await.expect("the floor's Secret");
            }
        })
        .await;
    crs.patch_status(FLOOR_TWIN, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&status))
        .await
        .expect("the floor's status");
    started.elapsed().as_secs_f64()
}

/// `copy` as a new object named [`FLOOR_SECRET`] in `ns`: what the operator sent, not what the
/// API server added.
fn floor_secret(copy: &Secret, ns: &str) -> Secret {
    let meta = &copy.metadata;
    let mut secret = Secret { data: copy.data.clone(), type_: copy.type_.clone(), ..Secret::default() };
    secret.metadata.name = Some(FLOOR_SECRET.to_string());
    secret.metadata.namespace = Some(ns.to_string());
    secret.metadata.labels = meta.labels.clone();
    secret.metadata.annotations = meta.annotations.clone();
    secret.metadata.owner_references = meta.owner_references.clone();
    secret
}
