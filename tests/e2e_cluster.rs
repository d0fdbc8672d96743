//! End-to-end: `ClusterGroupDocsCredential` on the real control plane (kube-controller-manager
//! included, for garbage collection). One operator per test watches every namespace; a
//! `--credential-selector` of its own keeps it off other tests' credentials. Request counts
//! are read on the token server's side.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use groupdocs_dev_token_server::DevServerArgs;
use groupdocs_token_operator::crd::ClusterGroupDocsCredential;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use serde_json::json;
use support::wait::until;
use support::{Env, OPERATOR, Operator, tail, wait_reconciles};

const DEADLINE: Duration = Duration::from_secs(60);

/// A test's world: the operator's namespace (holding the client Secret), a label that selects
/// this test's namespaces, and a selector label on its cluster credentials.
struct World {
    env: Env,
    /// Namespace label key that this test's credential selects.
    key: String,
    shard: String,
    operator: Option<Operator>,
}

impl World {
    async fn new(name: &str) -> World {
        let env = Env::new(OPERATOR, name, DevServerArgs::default()).await;
        env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
        let key = format!("e2e.groupdocs.cloud/{}", env.ns);
        let shard = env.ns.clone();
        let mut world = World { env, key, shard, operator: None };
        world.start_operator();
        world
    }

    fn start_operator(&mut self) {
        let args = [
            format!("--cluster-resource-namespace={}", self.env.ns),
            format!("--credential-selector=e2e-shard={}", self.shard),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.operator = Some(self.env.launch_cluster_wide(&args));
    }

    fn client(&self) -> Client {
        self.env.client.clone()
    }

    fn logs(&self) -> String {
        self.operator.as_ref().map(|o| tail(&o.logs(), 40)).unwrap_or_default()
    }

    /// Creates namespace `<ns>-<suffix>`, labelled for this test when `selected`.
    async fn namespace(&self, suffix: &str, selected: bool) -> String {
        let name = format!("{}-{suffix}", self.env.ns);
        let labels = selected.then(|| BTreeMap::from([(self.key.clone(), "yes".to_string())]));
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(name.clone()), labels, ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client()).create(&PostParams::default(), &ns).await.unwrap();
        name
    }

    async fn label(&self, ns: &str, selected: bool) {
        let value = if selected { json!("yes") } else { serde_json::Value::Null };
        let patch = json!({"metadata": {"labels": {self.key.clone(): value}}});
        Api::<Namespace>::all(self.client()).patch(ns, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }

    async fn create_credential(&self, name: &str) {
        let cr: ClusterGroupDocsCredential = serde_json::from_value(json!({
            "apiVersion": "groupdocs.cloud/v1alpha1",
            "kind": "ClusterGroupDocsCredential",
            "metadata": {"name": name, "labels": {"e2e-shard": self.shard}},
            "spec": {
                "clientSecretRef": {"name": "gd-client"},
                "tokenUrl": self.env.dev.token_url(),
                "namespaceSelector": {"matchLabels": {self.key.clone(): "yes"}},
                "target": {"name": "groupdocs-token"},
            },
        }))
        .unwrap();
        self.credentials().create(&PostParams::default(), &cr).await.unwrap();
    }

    fn credentials(&self) -> Api<ClusterGroupDocsCredential> {
        Api::all(self.client())
    }

    async fn token_in(&self, ns: &str) -> Option<String> {
        let s = Api::<Secret>::namespaced(self.client(), ns).get_opt("groupdocs-token").await.ok()??;
        String::from_utf8(s.data?.get("access_token")?.0.clone()).ok()
    }

    /// Waits until the credential's status reports `ready` of `selected` namespaces and Ready
    /// has `status`/`reason`.
    async fn wait_status(
        &self,
        name: &str,
        selected: i64,
        ready: i64,
        status: &str,
        reason: &str,
    ) -> ClusterGroupDocsCredential {
        let found = until(DEADLINE, || async {
            let cr = self.credentials().get(name).await.ok()?;
            let s = cr.status.as_ref()?;
            let counts = s.namespaces.as_ref()?;
            let cond = s.token.conditions.iter().find(|c| c.type_ == "Ready")?;
            (counts.selected == selected && counts.ready == ready && cond.status == status && cond.reason == reason)
                .then_some(cr)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "{name}: wanted {ready}/{selected} namespaces, Ready={status}/{reason}; status: {:#?}\n{}",
                futures::executor::block_on(self.credentials().get(name)).ok().and_then(|c| c.status),
                self.logs()
            )
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_one_cluster_credential_serves_fifty_namespaces_with_one_request() {
    let mut world = World::new("cgdc").await;
    let mut namespaces = Vec::new();
    for i in 0..50 {
        namespaces.push(world.namespace(&format!("t{i:02}"), true).await);
    }
    let unselected = world.namespace("other", false).await;
    world.create_credential("shared").await;
    let cr = world.wait_status("shared", 50, 50, "True", "TokenIssued").await;
    let fingerprint = cr.status.unwrap().token.token_fingerprint.unwrap();

    let stats = world.env.dev.stats();
    assert_eq!(stats.token_requests, 1, "one token request for 50 namespaces");
    let first = world.token_in(&namespaces[0]).await.unwrap();
    for ns in &namespaces {
        assert_eq!(world.token_in(ns).await.as_deref(), Some(first.as_str()), "{ns} holds the shared token");
    }
    assert!(world.token_in(&unselected).await.is_none(), "an unselected namespace gets nothing");
    assert!(world.env.dev.accepts(&first));
    // The client secret stays in the operator's namespace.
    for ns in &namespaces[..3] {
        let secrets = Api::<Secret>::namespaced(world.client(), ns).list(&ListParams::default()).await.unwrap();
        for s in secrets.items {
            let data = s.data.unwrap_or_default();
            assert!(data.values().all(|v| !String::from_utf8_lossy(&v.0).contains("demo-client-secret")));
        }
    }

    // A namespace that newly matches gets its copy; one that stops matching loses it.
    world.label(&unselected, true).await;
    world.wait_status("shared", 51, 51, "True", "TokenIssued").await;
    assert_eq!(world.token_in(&unselected).await.as_deref(), Some(first.as_str()));
    world.label(&namespaces[0], false).await;
    world.wait_status("shared", 50, 50, "True", "TokenIssued").await;
    let gone = until(DEADLINE, || async { world.token_in(&namespaces[0]).await.is_none().then_some(()) }).await;
    assert!(gone.is_some(), "the unlabelled namespace still has the Secret\n{}", world.logs());
    assert_eq!(world.env.dev.stats().token_requests, 1, "selection changes request nothing");

    // A restart reuses the copies: no request.
    world.operator.take().unwrap().stop();
    world.start_operator();
    let op = world.operator.as_ref().unwrap();
    op.wait_ready(DEADLINE).await;
    wait_reconciles(op, 0, 1, DEADLINE).await;
    let cr = world.wait_status("shared", 50, 50, "True", "TokenIssued").await;
    assert_eq!(cr.status.unwrap().token.token_fingerprint.unwrap(), fingerprint);
    assert_eq!(world.env.dev.stats().token_requests, 1, "a restart requests nothing");

    // Deleting the cluster credential garbage-collects every copy.
    world.credentials().delete("shared", &DeleteParams::foreground()).await.unwrap();
    let all_gone = until(Duration::from_secs(90), || async {
        for ns in &namespaces[1..] {
            if world.token_in(ns).await.is_some() {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(all_gone.is_some(), "copies survived the credential's deletion");

    for ns in namespaces.iter().chain([&unselected]) {
        let _ = Api::<Namespace>::all(world.client()).delete(ns, &DeleteParams::background()).await;
    }
    drop(world.operator.take());
    world.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_foreign_secret_in_one_namespace_is_reported_and_left_alone() {
    let world = World::new("cgdc-conflict").await;
    let good = world.namespace("good", true).await;
    let taken = world.namespace("taken", true).await;
    let foreign = Secret {
        metadata: ObjectMeta { name: Some("groupdocs-token".into()), ..Default::default() },
        string_data: Some(BTreeMap::from([("access_token".to_string(), "hand-made".to_string())])),
        ..Default::default()
    };
    let secrets = Api::<Secret>::namespaced(world.client(), &taken);
    secrets.create(&PostParams::default(), &foreign).await.unwrap();
    world.create_credential("conflicted").await;

    let cr = world.wait_status("conflicted", 2, 1, "False", "TargetConflict").await;
    let status = cr.status.unwrap();
    assert_eq!(status.failed_namespaces.len(), 1);
    assert_eq!(status.failed_namespaces[0].namespace, taken);
    assert_eq!(status.failed_namespaces[0].reason, "TargetConflict");
    assert!(world.token_in(&good).await.is_some(), "the other namespace is served");
    assert_eq!(world.token_in(&taken).await.as_deref(), Some("hand-made"), "the foreign Secret is untouched");
    let stalled = status.token.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.status, "True");

    // Removing the foreign Secret lets the copy in.
    secrets.delete("groupdocs-token", &DeleteParams::default()).await.unwrap();
    world.wait_status("conflicted", 2, 2, "True", "TokenIssued").await;
    assert_eq!(world.env.dev.stats().token_requests, 1);

    for ns in [&good, &taken] {
        let _ = Api::<Namespace>::all(world.client()).delete(ns, &DeleteParams::background()).await;
    }
    let _ = world.credentials().delete("conflicted", &DeleteParams::default()).await;
    let World { env, operator, .. } = world;
    drop(operator);
    env.cleanup().await;
}
