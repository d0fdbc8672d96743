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
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Client, ResourceExt};
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
    extra: Vec<String>,
    operator: Option<Operator>,
}

impl World {
    async fn new(name: &str) -> World {
        World::with_flags(name, &[]).await
    }

    async fn with_flags(name: &str, extra: &[&str]) -> World {
        let env = Env::new(OPERATOR, name, DevServerArgs::default()).await;
        env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
        let key = format!("e2e.groupdocs.cloud/{}", env.ns);
        let shard = env.ns.clone();
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut world = World { env, key, shard, extra, operator: None };
        world.start_operator();
        world
    }

    fn start_operator(&mut self) {
        let mut args = vec![
            format!("--cluster-resource-namespace={}", self.env.ns),
            format!("--credential-selector=e2e-shard={}", self.shard),
        ];
        args.extend(self.extra.iter().cloned());
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
        let selection = json!({"namespaceSelector": {"matchLabels": {self.key.clone(): "yes"}}});
        self.create_credential_with(name, selection).await;
    }

    /// A cluster credential of this test's shard with `extra` fields in its spec.
    async fn create_credential_with(&self, name: &str, extra: serde_json::Value) {
        let mut spec = json!({
            "clientSecretRef": {"name": "gd-client"},
            "tokenUrl": self.env.dev.token_url(),
            "target": {"name": "groupdocs-token"},
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let cr: ClusterGroupDocsCredential = serde_json::from_value(json!({
            "apiVersion": "groupdocs.cloud/v1alpha1",
            "kind": "ClusterGroupDocsCredential",
            "metadata": {"name": name, "labels": {"e2e-shard": self.shard}},
            "spec": spec,
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

    // Removing the foreign Secret lets the copy in: within five minutes, or at once on any
    // change to the credential (here an annotation).
    secrets.delete("groupdocs-token", &DeleteParams::default()).await.unwrap();
    let poke = json!({"metadata": {"annotations": {"e2e/retry": "now"}}});
    world.credentials().patch("conflicted", &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
    world.wait_status("conflicted", 2, 2, "True", "TokenIssued").await;
    assert_eq!(world.env.dev.stats().token_requests, 1);

    // The operator keeps its own copy in its namespace and reads the token back only from it:
    // a tenant who rewrites its copy changes nothing for the others, and its copy is repaired.
    let source = Api::<Secret>::namespaced(world.client(), &world.env.ns).get("cgdc.conflicted").await.unwrap();
    assert_eq!(source.labels().get("groupdocs.cloud/cluster-credential").map(String::as_str), Some("conflicted"));
    let real = world.token_in(&good).await.unwrap();
    let forged =
        json!({"stringData": {"access_token": "forged", "token_type": "Bearer\nGROUPDOCS_ACCESS_TOKEN=forged"}});
    secrets.patch("groupdocs-token", &PatchParams::default(), &Patch::Merge(&forged)).await.unwrap();
    let repaired = until(DEADLINE, || async {
        let s = secrets.get("groupdocs-token").await.ok()?;
        let data = s.data?;
        let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
        (text("access_token")? == real && text("token_type")? == "Bearer").then_some(())
    })
    .await;
    assert!(repaired.is_some(), "the tenant's edited copy was not repaired\n{}", world.logs());
    let good_secret = Api::<Secret>::namespaced(world.client(), &good).get("groupdocs-token").await.unwrap();
    let good_type = String::from_utf8(good_secret.data.unwrap()["token_type"].0.clone()).unwrap();
    assert_eq!(good_type, "Bearer", "another tenant's edit reached this namespace");
    assert_eq!(world.token_in(&good).await.as_deref(), Some(real.as_str()));
    assert_eq!(world.env.dev.stats().token_requests, 1, "a repair requests nothing");

    for ns in [&good, &taken] {
        let _ = Api::<Namespace>::all(world.client()).delete(ns, &DeleteParams::background()).await;
    }
    let _ = world.credentials().delete("conflicted", &DeleteParams::default()).await;
    let World { env, operator, .. } = world;
    drop(operator);
    env.cleanup().await;
}

/// A Deployment `app` (no pods run without a node: its pod template is what a restart changes).
async fn deployment(client: &Client, ns: &str) -> Api<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {
            "selector": {"matchLabels": {"app": "app"}},
            "template": {"metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]}},
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    api
}

fn restarted_for(d: &Deployment) -> Option<String> {
    let annotations = d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?;
    annotations.get("groupdocs.cloud/token-fingerprint").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_listed_namespaces_force_refresh_rollout_restarts_and_metrics() {
    let world = World::with_flags("cgdc-list", &["--rollout-restarts", "--rollout-restart-min-interval=1s"]).await;
    let a = world.namespace("a", false).await;
    let b = world.namespace("b", false).await;
    let missing = format!("{}-later", world.env.ns);
    let apps = [deployment(&world.client(), &a).await, deployment(&world.client(), &b).await];
    world
        .create_credential_with(
            "listed",
            json!({"namespaces": [a, b, missing], "rolloutRestartTargets": [{"kind": "Deployment", "name": "app"}]}),
        )
        .await;

    // A listed namespace that does not exist is reported; the others are served.
    let cr = world.wait_status("listed", 3, 2, "False", "NamespaceNotFound").await;
    let failed = &cr.status.unwrap().failed_namespaces;
    assert_eq!((failed[0].namespace.as_str(), failed[0].reason.as_str()), (missing.as_str(), "NamespaceNotFound"));
    world.namespace("later", false).await;
    let cr = world.wait_status("listed", 3, 3, "True", "TokenIssued").await;
    let first = cr.status.unwrap().token.token_fingerprint.unwrap();
    for app in &apps {
        assert_eq!(restarted_for(&app.get("app").await.unwrap()), None, "the first token restarts nothing");
    }

    // Metrics: the cluster credential's gauges, with an empty namespace label.
    let metrics = world.operator.as_ref().unwrap().metrics().await;
    assert!(
        metrics.contains(r#"groupdocs_token_operator_token_expiry_timestamp_seconds{namespace="",name="listed"}"#),
        "{metrics}"
    );

    // A forced refresh renews once, for every namespace, and restarts the workloads in each.
    let patch = json!({"metadata": {"annotations": {"groupdocs.cloud/refresh-requested-at": "1"}}});
    world.credentials().patch("listed", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let renewed = until(DEADLINE, || async {
        let cr = world.credentials().get("listed").await.ok()?;
        let status = cr.status?;
        let fp = status.token.token_fingerprint?;
        (fp != first && status.namespaces?.ready == 3).then_some(fp)
    })
    .await
    .unwrap_or_else(|| panic!("no renewal\n{}", world.logs()));
    assert_eq!(world.env.dev.stats().token_requests, 2, "one request for the refresh, whatever the namespaces");
    let token = world.token_in(&a).await.unwrap();
    for ns in [&b, &missing] {
        assert_eq!(world.token_in(ns).await.as_deref(), Some(token.as_str()), "{ns} has the renewed token");
    }
    for app in &apps {
        let restarted =
            until(DEADLINE, || async { (restarted_for(&app.get("app").await.ok()?)? == renewed).then_some(()) }).await;
        assert!(restarted.is_some(), "a Deployment was not restarted for the renewed token\n{}", world.logs());
    }

    let _ = world.credentials().delete("listed", &DeleteParams::default()).await;
    for ns in [&a, &b, &missing] {
        let _ = Api::<Namespace>::all(world.client()).delete(ns, &DeleteParams::background()).await;
    }
    let World { env, operator, .. } = world;
    drop(operator);
    env.cleanup().await;
}
