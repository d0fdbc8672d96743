//! Smoke tests that prove the test environment is a real Kubernetes control plane:
//! CRDs become Established, kube-controller-manager collects garbage, service-account tokens
//! authenticate and RBAC refuses what they may not do.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use test_support::{client, kubectl, kubectl_as, service_account_kubeconfig, wait_for};

#[test]
fn e2e_version_is_the_pinned_release() {
    let version = kubectl(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&version).unwrap();
    if std::env::var_os(testenv::EXISTING_CLUSTER_ENV).is_none() {
        assert_eq!(v["serverVersion"]["gitVersion"], testenv::kubernetes_version());
    }
    assert_eq!(kubectl(&["get", "--raw", "/readyz"]).trim(), "ok");
}

#[test]
fn e2e_crd_becomes_established() {
    test_support::install_crd();
    let out = kubectl(&[
        "get",
        "crd",
        "groupdocscredentials.groupdocs.cloud",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
    ]);
    assert_eq!(out, "True");
    // The OpenAPI document of a new CRD is published shortly after it is Established.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out =
            test_support::control_plane().kubectl().args(["explain", "gdc.spec.clientSecretRef"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("groupdocs.cloud/client-credentials") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl explain: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_garbage_collector_deletes_dependents() {
    let client = client().await;
    let ns = format!("gc-smoke-{}", std::process::id());
    kubectl(&["create", "namespace", &ns]);
    let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "dependent", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid.unwrap(), "controller": true,
        }]},
    }))
    .unwrap();
    cms.create(&PostParams::default(), &dependent).await.unwrap();
    cms.delete("owner", &DeleteParams::background()).await.unwrap();
    wait_for("the dependent to be collected", Duration::from_secs(90), || async {
        cms.get_opt("dependent").await.unwrap().is_none().then_some(())
    })
    .await;
    kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
fn e2e_service_account_tokens_authenticate_and_rbac_refuses() {
    let ns = format!("rbac-smoke-{}", std::process::id());
    kubectl(&["create", "namespace", &ns]);
    kubectl(&["create", "serviceaccount", "reader", "-n", &ns]);
    kubectl(&["create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", "-n", &ns]);
    kubectl(&[
        "create",
        "rolebinding",
        "cm-reader",
        "--role=cm-reader",
        &format!("--serviceaccount={ns}:reader"),
        "-n",
        &ns,
    ]);
    // A kubeconfig for the service account: the same cluster, only its token.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&ns, "reader", dir.path());
    let as_reader = |args: &[&str]| kubectl_as(&kubeconfig, args);
    let allowed = as_reader(&["get", "configmaps", "-n", &ns]);
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));
    let refused = as_reader(&["get", "secrets", "-n", &ns]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Forbidden") && stderr.contains(&format!("system:serviceaccount:{ns}:reader")), "{stderr}");
    kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
