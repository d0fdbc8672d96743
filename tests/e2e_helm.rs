//! The Helm chart on the real control plane with the real helm: lint, the rendered manifests,
//! install into a restricted namespace, the chart's RBAC proven by running the operator with
//! its ServiceAccount (and refused what it must not do), namespaced mode, leader election
//! failover, and rollout restarts. Own binary: helm owns the CRD here.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use groupdocs_dev_token_server::DevServerArgs;
use groupdocs_token_operator::leader::LEASE_NAME;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::{
    Env, OPERATOR, helm, kubectl, kubectl_as, reconciles, service_account_kubeconfig, wait_for, wait_reconciles,
};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/groupdocs-token-operator");
const RELEASE_NS: &str = "gdto-system";
const SA: &str = "groupdocs-token-operator";

fn run_helm(args: &[&str]) -> (String, String) {
    let out = helm(args);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "helm {}: {stderr}", args.join(" "));
    (stdout, stderr)
}

/// The main release, installed once per test binary into a namespace that enforces the
/// restricted Pod Security Standard. Returns helm's stderr (warnings).
fn installed() -> &'static str {
    static INSTALL: OnceLock<String> = OnceLock::new();
    INSTALL.get_or_init(|| {
        kubectl(&["create", "namespace", RELEASE_NS]);
        for mode in ["enforce", "warn", "audit"] {
            kubectl(&["label", "namespace", RELEASE_NS, &format!("pod-security.kubernetes.io/{mode}=restricted")]);
        }
        let (_, stderr) = run_helm(&[
            "install",
            "groupdocs-token-operator",
            CHART,
            "--namespace",
            RELEASE_NS,
            "--set",
            "rolloutRestarts.enabled=true",
            "--set",
            "replicaCount=2",
        ]);
        kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/groupdocscredentials.groupdocs.cloud"]);
        stderr
    })
}

#[test]
fn e2e_helm_lint_is_clean() {
    let out = helm(&["lint", "--strict", CHART]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 chart(s) failed") && !text.contains("[WARNING]") && !text.contains("[ERROR]"), "{text}");
    let out = helm(&["template", "x", CHART, "--set", "replicaCount=2", "--set", "leaderElection.enabled=false"]);
    assert!(!out.status.success(), "two replicas without leader election are refused");
}

#[test]
fn e2e_helm_rendered_manifests_are_current() {
    let (rendered, _) = run_helm(&[
        "template",
        "groupdocs-token-operator",
        CHART,
        "--namespace",
        "groupdocs-token-operator",
        "--set",
        "namespace.create=true",
    ]);
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/manifests/groupdocs-token-operator.yaml"))
            .unwrap();
    assert!(rendered == committed, "deploy/manifests is stale: run `make manifests` and commit the result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_helm_install_restricted_and_its_rbac_suffices() {
    let stderr = installed();
    assert!(!stderr.to_lowercase().contains("warning"), "helm install warned: {stderr}");
    let deployment: Deployment = serde_json::from_str(&kubectl(&[
        "get",
        "deployment",
        "groupdocs-token-operator",
        "-n",
        RELEASE_NS,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));
    kubectl(&["get", "poddisruptionbudget", "groupdocs-token-operator", "-n", RELEASE_NS]);
    let crd =
        kubectl(&["get", "crd", "groupdocscredentials.groupdocs.cloud", "-o", "jsonpath={.metadata.annotations}"]);
    assert!(crd.contains("\"helm.sh/resource-policy\":\"keep\""), "{crd}");

    // The operator, run with a token of the chart's ServiceAccount, does the whole job.
    let mut env = Env::new(OPERATOR, "helm-rbac", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    let dir = tempfile::tempdir().unwrap();
    env.start_operator_as(RELEASE_NS, SA, dir.path());
    env.create_credential("via-chart", "gd-client", json!({})).await;
    env.wait_ready("via-chart").await;
    env.put_client_secret("unlabelled", "demo-client-id", "demo-client-secret", false).await;
    env.create_credential("needs-get", "unlabelled", json!({})).await;
    env.wait_condition("needs-get", "Stalled", "True", "SecretNotLabelled", Duration::from_secs(30)).await;
    assert!(!env.logs().to_lowercase().contains("forbidden"), "{}", support::tail(&env.logs(), 20));

    // What it must not do is refused.
    let kubeconfig = service_account_kubeconfig(RELEASE_NS, SA, dir.path());
    let as_operator = |args: &[&str]| {
        let out = kubectl_as(&kubeconfig, args);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for args in [
        // Copies of cluster credentials are deleted from namespaces that stop matching;
        // nothing else of a Secret is rewritten in place.
        vec!["patch", "secret", "gd-client", "-n", env.ns.as_str(), "-p", "{\"data\":{}}"],
        vec!["get", "configmaps", "-n", env.ns.as_str()],
        vec!["delete", "gdc", "via-chart", "-n", env.ns.as_str()],
        vec!["create", "namespace", "not-allowed"],
    ] {
        let (ok, stderr) = as_operator(&args);
        assert!(!ok && stderr.contains("Forbidden"), "{args:?} should be refused: {stderr}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_helm_namespaced_mode_is_confined() {
    installed(); // the CRD comes with the main release
    let mut allowed = Env::new(OPERATOR, "scoped-in", DevServerArgs::default()).await;
    let outside = Env::new(OPERATOR, "scoped-out", DevServerArgs::default()).await;
    kubectl(&["create", "namespace", "gdto-scoped"]);
    run_helm(&[
        "install",
        "scoped",
        CHART,
        "--namespace",
        "gdto-scoped",
        "--set",
        "crds.install=false",
        "--set",
        "rbac.scope=namespaced",
        "--set",
        &format!("watchNamespaces={{{}}}", allowed.ns),
        "--set",
        "leaderElection.enabled=false",
    ]);
    let sa = "scoped-groupdocs-token-operator";
    allowed.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    outside.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig("gdto-scoped", sa, dir.path());
    allowed.operator = Some(allowed.launch(&[], &kubeconfig, &[]));
    allowed.create_credential("inside", "gd-client", json!({})).await;
    allowed.wait_ready("inside").await;

    let out = kubectl_as(&kubeconfig, &["get", "secrets", "-n", &outside.ns]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("Forbidden"), "Secrets outside the list: {stderr}");
    let out = kubectl_as(&kubeconfig, &["get", "secrets", "--all-namespaces"]);
    assert!(!out.status.success(), "no cluster-wide Secret access");
    outside.cleanup().await;
    allowed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_helm_leader_failover_without_duplicate_requests() {
    installed();
    let env = Env::new(OPERATOR, "leader", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(RELEASE_NS, SA, dir.path());
    let flags = ["--leader-elect", "--leader-election-namespace", RELEASE_NS, "--lease-duration", "4s"];
    let mut first = env.launch(&flags, &kubeconfig, &[("POD_NAME", "replica-a")]);
    let holder = wait_for("a leader", Duration::from_secs(30), || async { lease_holder(&env).await }).await;
    assert_eq!(holder, "replica-a");
    let mut second = env.launch(&flags, &kubeconfig, &[("POD_NAME", "replica-b")]);
    env.create_credential("led", "gd-client", json!({})).await;
    env.wait_ready("led").await;
    assert_eq!(env.dev.stats().token_requests, 1);
    // The standby is ready (to take over) and reconciles nothing.
    let probe = reqwest::get(format!("http://127.0.0.1:{}/readyz", second.probe_port)).await.unwrap();
    assert_eq!(probe.status(), 200);
    // Both see the same change; once the leader has reconciled it, the standby has not.
    let looked = reconciles(&first).await;
    env.annotate("led", "e2e/poke", "1").await;
    wait_reconciles(&first, looked, 1, Duration::from_secs(30)).await;
    let standby = second.metrics().await;
    assert!(standby.contains("groupdocs_token_operator_build_info"), "the standby's metrics were read: {standby}");
    assert!(!standby.contains("reconciles_total{"), "the standby does not reconcile");

    first.kill_hard();
    let takeover = std::time::Instant::now();
    let holder = wait_for("the standby to take over", Duration::from_secs(30), || async {
        lease_holder(&env).await.filter(|h| h == "replica-b")
    })
    .await;
    assert_eq!(holder, "replica-b");
    // A 4 s lease: about 4-6 s; 20 s leaves room for two loaded cores and still fails a
    // takeover that waits for anything but the lease.
    assert!(takeover.elapsed() < Duration::from_secs(20), "took over in {:?}", takeover.elapsed());
    env.create_credential("after-failover", "gd-client", json!({})).await;
    env.wait_ready("after-failover").await;
    env.wait_ready("led").await;
    assert_eq!(
        env.dev.stats().token_requests,
        2,
        "the valid token was not fetched again; one for the new leader's cache"
    );
    second.stop();
    drop(first);
    env.cleanup().await;
}

async fn lease_holder(env: &Env) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), RELEASE_NS);
    leases.get_opt(LEASE_NAME).await.ok()??.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_helm_rollout_restart_targets() {
    installed(); // rolloutRestarts.enabled=true: the chart's RBAC allows patching workloads
    let mut env = Env::new(OPERATOR, "rollout", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    let app: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "reads-once"},
        "spec": {
            "selector": {"matchLabels": {"app": "reads-once"}},
            "template": {"metadata": {"labels": {"app": "reads-once"}},
                         "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}},
        },
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    deployments.create(&PostParams::default(), &app).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(RELEASE_NS, SA, dir.path());
    // Long enough that the second renewal below surely comes inside it.
    const MIN_INTERVAL: i64 = 10;
    let interval = format!("{MIN_INTERVAL}s");
    env.operator =
        Some(env.launch(&["--rollout-restarts", "--rollout-restart-min-interval", &interval], &kubeconfig, &[]));
    env.create_credential(
        "restarts",
        "gd-client",
        json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "reads-once"}]}),
    )
    .await;
    env.wait_ready("restarts").await;
    // (token fingerprint, restarted-at) on the Deployment's pod template.
    let restart_of = |d: &Deployment| -> Option<(String, jiff::Timestamp)> {
        let annotations = d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?;
        let fingerprint = annotations.get("groupdocs.cloud/token-fingerprint")?.clone();
        let at = annotations.get("groupdocs.cloud/restarted-at")?.parse().ok()?;
        Some((fingerprint, at))
    };
    let restart_now = || async { restart_of(&deployments.get("reads-once").await.unwrap()) };
    assert_eq!(restart_now().await, None, "no restart for the first token");
    let renew = |round: &'static str| {
        let env = &env;
        async move {
            env.annotate("restarts", "groupdocs.cloud/refresh-requested-at", round).await;
            wait_for("the renewed token", Duration::from_secs(30), || async {
                let status = env.credentials().get("restarts").await.ok()?.status?;
                (status.last_refresh_request.as_deref() == Some(round)).then_some(status)
            })
            .await
        }
    };

    // The first renewal restarts the workload at once.
    let fp1 = renew("1").await.token_fingerprint.unwrap();
    let restarted_at1 = wait_for("the first restart", Duration::from_secs(30), || async {
        restart_now().await.filter(|(fp, _)| *fp == fp1).map(|(_, at)| at)
    })
    .await;

    // The second comes within the minimum interval: the restart waits for it.
    let renewed = renew("2").await;
    let fp2 = renewed.token_fingerprint.clone().unwrap();
    assert_ne!(fp1, fp2);
    let renewed_at = renewed.last_refresh_time.unwrap().0;
    let due = restarted_at1 + jiff::SignedDuration::from_secs(MIN_INTERVAL);
    assert!(renewed_at < due, "the second renewal ({renewed_at}) came inside the interval (until {due})");
    // The reconcile that renewed it deferred the restart: status still records the first.
    assert_eq!(renewed.rollout_restart_fingerprint.as_deref(), Some(fp1.as_str()), "status: restart pending");
    // While it waits, the workload keeps the first restart; then it restarts, not earlier.
    let waiting_seen = std::cell::Cell::new(0);
    let restarted_at2 = wait_for("the deferred restart", Duration::from_secs(MIN_INTERVAL as u64 + 30), || async {
        let (fp, at) = restart_now().await.expect("the restart annotations stay");
        if fp == fp1 {
            assert_eq!(at, restarted_at1, "still the first restart");
            waiting_seen.set(waiting_seen.get() + 1);
            return None;
        }
        assert_eq!(fp, fp2, "restarted for the renewed token");
        // Seen after the restart happened, so this holds whatever the load.
        assert!(jiff::Timestamp::now() >= due, "restarted before {due}");
        Some(at)
    })
    .await;
    assert!(waiting_seen.get() > 0, "the workload was seen waiting with the first restart");
    assert!(
        restarted_at2.duration_since(restarted_at1) >= jiff::SignedDuration::from_secs(MIN_INTERVAL),
        "restarts at {restarted_at1} and {restarted_at2}: at least {MIN_INTERVAL} s apart"
    );
    wait_for("status to record the restart", Duration::from_secs(30), || async {
        let status = env.credentials().get("restarts").await.ok()?.status?;
        (status.rollout_restart_fingerprint.as_deref() == Some(fp2.as_str())).then_some(())
    })
    .await;
    let restarts = env.events("RolloutRestarted").await.len();
    assert_eq!(restarts, 2, "one RolloutRestarted event per restart");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_helm_get_only_secret_access() {
    installed();
    let mut env = Env::new(OPERATOR, "get-only", DevServerArgs::default()).await;
    kubectl(&["create", "namespace", "gdto-get-only"]);
    run_helm(&[
        "install",
        "strict",
        CHART,
        "--namespace",
        "gdto-get-only",
        "--set",
        "crds.install=false",
        "--set",
        "rbac.scope=namespaced",
        "--set",
        &format!("watchNamespaces={{{}}}", env.ns),
        "--set",
        "secretAccess=get",
        "--set",
        "leaderElection.enabled=false",
    ]);
    let role = kubectl(&["get", "role", "strict-groupdocs-token-operator", "-n", &env.ns, "-o", "json"]);
    let role: serde_json::Value = serde_json::from_str(&role).unwrap();
    let secret_verbs = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"][0] == "secrets")
        .map(|r| r["verbs"].clone())
        .unwrap();
    assert_eq!(secret_verbs, json!(["get", "create", "update"]), "no list or watch on Secrets");

    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig("gdto-get-only", "strict-groupdocs-token-operator", dir.path());
    env.operator = Some(env.launch(&["--secret-access", "get", "--recheck-interval", "3s"], &kubeconfig, &[]));
    env.create_credential("polled", "gd-client", json!({})).await;
    env.wait_ready("polled").await;
    let token = env.token_in("polled-token").await.unwrap();
    // Without a watch, a deleted token Secret comes back at the next re-check.
    env.secrets().delete("polled-token", &Default::default()).await.unwrap();
    let back = wait_for("the re-check to repair the Secret", Duration::from_secs(30), || async {
        env.token_in("polled-token").await
    })
    .await;
    assert_eq!(back, token);
    env.put_client_secret("unlabelled", "demo-client-id", "demo-client-secret", false).await;
    env.create_credential("no-label", "unlabelled", json!({})).await;
    env.wait_condition("no-label", "Stalled", "True", "SecretNotLabelled", Duration::from_secs(30)).await;
    assert!(!env.logs().to_lowercase().contains("forbidden"), "{}", support::tail(&env.logs(), 20));
    assert_eq!(env.dev.stats().token_requests, 1);
    env.cleanup().await;
}
