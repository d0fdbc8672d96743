//! A 30 s kube-apiserver outage in the middle of renewals. Alone in its binary: it stops the
//! control plane that the binary's other tests would share.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use groupdocs_dev_token_server::DevServerArgs;
use serde_json::json;
use support::{Env, OPERATOR, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_operator_rides_out_a_30s_apiserver_outage() {
    if std::env::var_os(testenv::EXISTING_CLUSTER_ENV).is_some() {
        // Stopping someone's API server is not an option; CI always runs the local one.
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI runs against the local control plane");
        eprintln!("skipped: needs the local control plane (it stops kube-apiserver)");
        return;
    }
    // 20 s tokens renew about 13 s after issue: inside the outage.
    let mut env = Env::new(OPERATOR, "outage", DevServerArgs { expires_in: 20, ..Default::default() }).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    env.start_operator(&["--max-backoff", "2s"]);
    for i in 0..3 {
        env.create_credential(&format!("o{i}"), "gd-client", json!({})).await;
    }
    let mut before = Vec::new();
    for i in 0..3 {
        env.wait_ready(&format!("o{i}")).await;
        before.push(env.token_in(&format!("o{i}-token")).await.unwrap());
    }

    testenv::with_shared(|cp| cp.stop_apiserver()).unwrap();
    // The outage itself: 30 s without an API server.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!env.operator.as_mut().unwrap().exited(), "the operator survives the outage");
    testenv::with_shared(|cp| cp.start_apiserver()).unwrap().unwrap();

    for (i, old) in before.iter().enumerate() {
        let name = format!("o{i}");
        let fresh = wait_for(&format!("{name} renewed after the outage"), DEADLINE, || async {
            env.token_in(&format!("{name}-token")).await.filter(|t| t != old && env.dev.accepts(t))
        })
        .await;
        assert!(env.dev.accepts(&fresh));
        env.wait_condition(&name, "Ready", "True", "TokenRenewed", DEADLINE).await;
    }
    assert!(!env.operator.as_mut().unwrap().exited(), "recovered without a restart");
    env.cleanup().await;
}
