//! End-to-end: two operators split one namespace's credentials with `--credential-selector`,
//! each elected on its own Lease, as two Helm releases would. Each caches, reconciles and
//! writes only its own shard; a credential moved between shards keeps its token.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use groupdocs_dev_token_server::DevServerArgs;
use groupdocs_token_operator::crd::GroupDocsCredential;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Env, OPERATOR, Operator, control_plane, metrics, objects, wait_for};

const SECS_30: Duration = Duration::from_secs(30);

/// One shard: its label value, its GroupDocs client, its credentials.
struct Shard {
    label: &'static str,
    client: &'static str,
    credentials: [&'static str; 2],
}

const A: Shard = Shard { label: "a", client: "client-a", credentials: ["a-1", "a-2"] };
const B: Shard = Shard { label: "b", client: "client-b", credentials: ["b-1", "b-2"] };
/// Labelled for neither shard: no operator may touch it.
const UNSELECTED: &str = "no-shard";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sharding_two_selectors_two_leases_each_writes_only_its_own() {
    let env = Env::new(OPERATOR, "shard", DevServerArgs::default()).await;
    for shard in [&A, &B] {
        env.dev.set_client(shard.client, &format!("{}-secret", shard.client));
        env.put_client_secret(shard.client, shard.client, &format!("{}-secret", shard.client), true).await;
        for name in shard.credentials {
            create_labelled(&env, name, shard.client, Some(shard.label)).await;
        }
    }
    create_labelled(&env, UNSELECTED, A.client, None).await;

    // Shard a alone first: b's credentials must stay untouched while a works.
    let op_a = start_shard(&env, &A);
    for name in A.credentials {
        env.wait_ready(name).await;
    }
    wait_for("shard a's cache to hold exactly its 2 credentials", SECS_30, || async {
        (cached_credentials(&op_a).await == 2.0).then_some(())
    })
    .await;
    for name in B.credentials.into_iter().chain([UNSELECTED]) {
        assert_untouched(&env, name).await;
    }
    assert_eq!(requests_by(&env, B.client), 0, "shard a never asked for shard b's client");
    let a_before = snapshot(&env, &A).await;

    let op_b = start_shard(&env, &B);
    for name in B.credentials {
        env.wait_ready(name).await;
    }
    wait_for("shard b's cache to hold exactly its 2 credentials", SECS_30, || async {
        (cached_credentials(&op_b).await == 2.0).then_some(())
    })
    .await;
    assert_eq!(snapshot(&env, &A).await, a_before, "shard b wrote nothing of shard a's");
    assert_untouched(&env, UNSELECTED).await;
    assert_eq!(requests_by(&env, A.client), 1, "one request for shard a's client");
    assert_eq!(requests_by(&env, B.client), 1, "one request for shard b's client");
    for (lease, op) in [("shard-a", &op_a), ("shard-b", &op_b)] {
        let holder = lease_holder(&env, lease).await;
        assert_eq!(holder.as_deref(), Some(lease), "each shard leads on its own Lease\n{}", op.logs());
    }

    // Relabelled to shard b: a lets go, b takes it over with the token in place.
    let moved = A.credentials[1];
    let token = env.token_in(&format!("{moved}-token")).await;
    let patch = json!({"metadata": {"labels": {"shard": B.label}}});
    env.credentials().patch(moved, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("the moved credential to leave shard a's cache and enter shard b's", SECS_30, || async {
        (cached_credentials(&op_a).await == 1.0 && cached_credentials(&op_b).await == 3.0).then_some(())
    })
    .await;
    support::wait_reconciles(&op_b, 0, 3, SECS_30).await;
    env.wait_ready(moved).await;
    assert_eq!(env.token_in(&format!("{moved}-token")).await, token, "the token in place was kept");
    assert_eq!(requests_by(&env, A.client), 1, "moving a credential between shards costs no token request");
    assert_untouched(&env, UNSELECTED).await;

    drop((op_a, op_b));
    env.cleanup().await;
}

/// A credential of `client`, labelled `shard=<label>` when `label` is given.
async fn create_labelled(env: &Env, name: &str, client: &str, label: Option<&str>) {
    let spec = json!({"clientSecretRef": {"name": client}, "tokenUrl": env.dev.token_url()});
    let mut cr = objects::credential(name, spec);
    cr.metadata.labels = label.map(|l| [("shard".to_string(), l.to_string())].into());
    env.credentials().create(&PostParams::default(), &cr).await.unwrap();
}

/// An operator for `shard` only, leading on a Lease of its own in the test's namespace.
fn start_shard(env: &Env, shard: &Shard) -> Operator {
    let lease = format!("shard-{}", shard.label);
    let selector = format!("shard={}", shard.label);
    env.launch(
        &[
            "--credential-selector",
            &selector,
            "--leader-elect",
            "--lease-name",
            &lease,
            "--leader-election-namespace",
            &env.ns,
            "--lease-duration",
            "4s",
        ],
        &control_plane().kubeconfig,
        &[("POD_NAME", lease.as_str())],
    )
}

/// The credentials in `op`'s cache (its `credentials` gauge is recomputed from it per scrape).
async fn cached_credentials(op: &Operator) -> f64 {
    metrics::sum(&op.metrics().await, "groupdocs_token_operator_credentials", |_| true)
}

/// Asserts that no operator wrote `name`'s status or its token Secret.
async fn assert_untouched(env: &Env, name: &str) {
    let cr: GroupDocsCredential = env.credentials().get(name).await.unwrap();
    assert!(cr.status.is_none(), "{name} has a status: {:?}", cr.status);
    let secret = env.secrets().get_opt(&format!("{name}-token")).await.unwrap();
    assert!(secret.is_none(), "{name} has a token Secret");
}

/// The resourceVersions of `shard`'s credentials and token Secrets: any write changes one.
async fn snapshot(env: &Env, shard: &Shard) -> Vec<(String, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    for name in shard.credentials {
        let cr = env.credentials().get(name).await.unwrap();
        let secret = env.secrets().get(&format!("{name}-token")).await.unwrap();
        out.push((name.to_string(), cr.metadata.resource_version, secret.metadata.resource_version));
    }
    out
}

fn requests_by(env: &Env, client: &str) -> u64 {
    env.dev.stats().by_client.get(client).copied().unwrap_or(0)
}

async fn lease_holder(env: &Env, name: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}
