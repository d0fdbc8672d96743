//! End-to-end: the operator binary against the real control plane and the development token
//! server. Request counts are read on the server's side.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use groupdocs_dev_token_server::{DevServerArgs, Fault};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Env, OPERATOR, reconciles, wait_for, wait_reconciles};

const SECS_30: Duration = Duration::from_secs(30);

async fn env_with(name: &str, dev: DevServerArgs) -> Env {
    let mut env = Env::new(OPERATOR, name, dev).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    env.start_operator(&[]);
    env
}

async fn env(name: &str) -> Env {
    env_with(name, DevServerArgs::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_credential_gets_a_token_secret_and_ready() {
    let env = env("issue").await;
    env.create_credential("viewer", "gd-client", json!({})).await;
    let ready = env.wait_ready("viewer").await;
    assert_eq!(ready.reason, "TokenIssued");

    let secret = env.secrets().get("viewer-token").await.unwrap();
    let data = secret.data.clone().unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    let token = text("access_token");
    assert!(env.dev.accepts(&token), "the Secret holds a token the server accepts");
    assert_eq!(text("authorization"), format!("Bearer {token}"));
    assert_eq!(text("token_type"), "Bearer");
    let expires: jiff::Timestamp = text("expires_at").parse().unwrap();
    let lifetime = expires.duration_since(jiff::Timestamp::now()).as_secs();
    assert!((86_000..=86_400).contains(&lifetime), "a one-day token: {lifetime}s");
    let labels = secret.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "groupdocs-token-operator");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));

    // A workload calls the protected API with the Secret's header value.
    let resp = reqwest::Client::new()
        .get(format!("http://{}/v2.0/viewer/formats", env.dev.addr()))
        .header("Authorization", text("authorization"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let status = env.credentials().get("viewer").await.unwrap().status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.token_fingerprint.as_deref().map(str::len), Some(12));
    assert!(status.next_refresh_time.unwrap().0 < status.expires_at.unwrap().0);
    assert_eq!(env.dev.stats().token_requests, 1);

    // Metrics: the families users alert on, with this credential's series.
    let metrics = env.operator.as_ref().unwrap().metrics().await;
    for family in [
        "groupdocs_token_operator_reconciles_total{result=\"Ok\"}",
        "groupdocs_token_operator_reconcile_duration_seconds_count",
        "groupdocs_token_operator_token_requests_total{result=\"Ok\"} 1",
        "groupdocs_token_operator_token_request_duration_seconds_count 1",
        "groupdocs_token_operator_token_expiry_timestamp_seconds{namespace=",
        "groupdocs_token_operator_credentials{status=\"True\"} 1",
        "groupdocs_token_operator_build_info{version=",
    ] {
        assert!(metrics.contains(family), "missing {family} in\n{metrics}");
    }
    let probe =
        reqwest::get(format!("http://127.0.0.1:{}/healthz", env.operator.as_ref().unwrap().probe_port)).await.unwrap();
    assert_eq!(probe.status(), 200);

    // Idle: a no-op reconcile writes nothing. The Secret's resourceVersion stays put once the
    // reconcile the annotation triggers has run.
    let rv = env.secrets().get("viewer-token").await.unwrap().metadata.resource_version;
    let op = env.operator.as_ref().unwrap();
    let looked = reconciles(op).await;
    env.annotate("viewer", "unrelated", "poke").await;
    wait_reconciles(op, looked, 1, SECS_30).await;
    assert_eq!(env.secrets().get("viewer-token").await.unwrap().metadata.resource_version, rv);
    assert_eq!(env.dev.stats().token_requests, 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_renews_before_expiry_with_short_lifetimes() {
    let env = env_with("renew", DevServerArgs { expires_in: 9, ..Default::default() }).await;
    env.create_credential("short", "gd-client", json!({})).await;
    env.wait_ready("short").await;
    let first = env.token_in("short-token").await.unwrap();
    let first_exp = env.credentials().get("short").await.unwrap().status.unwrap().expires_at.unwrap().0;
    // Renewal is due with a third of the lifetime left: about 6 s after issue.
    let renewed =
        wait_for("a renewed token", SECS_30, || async { env.token_in("short-token").await.filter(|t| *t != first) })
            .await;
    assert!(env.dev.accepts(&renewed));
    env.wait_condition("short", "Ready", "True", "TokenRenewed", SECS_30).await;
    // When the operator renewed (its own record, not when this test happened to look).
    let renewed_at = env.credentials().get("short").await.unwrap().status.unwrap().last_refresh_time.unwrap().0;
    assert!(renewed_at < first_exp, "renewed at {renewed_at}, before the old token expired at {first_exp}");
    env.cleanup().await;
}

/// A renewal more than a minute away waits in the operator's own wake queue (`src/wakes.rs`),
/// not kube-runtime's scheduler: it must still come, and before the token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_renewal_minutes_away_still_comes_in_time() {
    let env = env_with("longwait", DevServerArgs { expires_in: 120, ..Default::default() }).await;
    env.create_credential("patient", "gd-client", json!({})).await;
    env.wait_ready("patient").await;
    let first = env.token_in("patient-token").await.unwrap();
    let status = env.credentials().get("patient").await.unwrap().status.unwrap();
    let (planned, first_exp) = (status.next_refresh_time.unwrap().0, status.expires_at.unwrap().0);
    let wait = planned.duration_since(status.last_refresh_time.unwrap().0);
    assert!(wait.as_secs() > 60, "the renewal must be planned more than a minute out: {wait}");
    let renewed = wait_for("the renewed token", Duration::from_secs(150), || async {
        env.token_in("patient-token").await.filter(|t| *t != first)
    })
    .await;
    assert!(env.dev.accepts(&renewed));
    let renewed_at = env.credentials().get("patient").await.unwrap().status.unwrap().last_refresh_time.unwrap().0;
    assert!(renewed_at >= planned, "renewed at {renewed_at}, not before the planned {planned}");
    assert!(renewed_at < first_exp, "renewed at {renewed_at}, before the old token expired at {first_exp}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_429_retry_after_is_honoured_and_ready_stays_true() {
    let env = env("ratelimit").await;
    env.create_credential("limited", "gd-client", json!({})).await;
    env.wait_ready("limited").await;
    let token = env.token_in("limited-token").await.unwrap();
    // A pause long enough that the checks below run inside it, however loaded the machine.
    env.dev.set_fault(Fault::TooManyRequests { retry_after: Some("20".into()) });
    env.annotate("limited", "groupdocs.cloud/refresh-requested-at", "1").await;
    let rec = env.wait_condition("limited", "Reconciling", "True", "RateLimited", SECS_30).await;
    assert!(rec.message.contains("not before"), "{}", rec.message);
    let ready = env.condition("limited", "Ready").await.unwrap();
    assert_eq!(ready.status, "True", "a valid token is in place: {ready:?}");
    assert_eq!(env.token_in("limited-token").await.unwrap(), token, "the old token stays");
    let status = env.credentials().get("limited").await.unwrap().status.unwrap();
    assert!(status.rate_limited_until.is_some());
    let after_429 = env.dev.stats().token_requests;
    assert_eq!(after_429, 2);

    // Watch events inside the pause must not cause requests: once the reconcile they trigger
    // has run, still no request.
    let op = env.operator.as_ref().unwrap();
    let looked = reconciles(op).await;
    env.annotate("limited", "poke", "1").await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    wait_reconciles(op, looked, 1, Duration::from_secs(15)).await;
    let until = status.rate_limited_until.unwrap().0;
    assert!(jiff::Timestamp::now() < until, "the check ran inside the pause (until {until})");
    assert_eq!(env.dev.stats().token_requests, after_429, "no request before Retry-After");

    env.dev.set_fault(Fault::None);
    env.wait_condition("limited", "Ready", "True", "TokenRenewed", SECS_30).await;
    env.wait_condition("limited", "Reconciling", "False", "TokenRenewed", SECS_30).await;
    assert_ne!(env.token_in("limited-token").await.unwrap(), token);
    assert_eq!(env.dev.stats().token_requests, after_429 + 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_invalid_client_is_stalled_until_the_secret_is_rotated() {
    let env = env("invalid").await;
    env.put_client_secret("bad-client", "demo-client-id", "wrong-secret", true).await;
    env.create_credential("bad", "bad-client", json!({})).await;
    env.wait_condition("bad", "Ready", "False", "InvalidClient", SECS_30).await;
    let stalled = env.wait_condition("bad", "Stalled", "True", "InvalidClient", SECS_30).await;
    assert!(!stalled.message.contains("wrong-secret"), "{}", stalled.message);
    assert_eq!(env.dev.stats().rejected, 1);
    env.put_client_secret("bad-client", "demo-client-id", "demo-client-secret", true).await;
    env.wait_condition("bad", "Ready", "True", "TokenIssued", SECS_30).await;
    env.wait_condition("bad", "Stalled", "False", "TokenIssued", SECS_30).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_deleted_or_edited_target_secret_is_repaired() {
    let env = env("repair").await;
    env.create_credential("fixme", "gd-client", json!({})).await;
    env.wait_ready("fixme").await;
    let token = env.token_in("fixme-token").await.unwrap();

    env.secrets().delete("fixme-token", &DeleteParams::default()).await.unwrap();
    let back = wait_for("the Secret to be recreated", SECS_30, || async { env.token_in("fixme-token").await }).await;
    assert_eq!(back, token, "recreated from the cache, no new request");

    let edit = json!({"data": {"access_token": "dGFtcGVyZWQ="}, "metadata": {"labels": {"app.kubernetes.io/managed-by": null}}});
    env.secrets().patch("fixme-token", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    let repaired = wait_for("the edit to be repaired", SECS_30, || async {
        let s = env.secrets().get("fixme-token").await.ok()?;
        let labelled = s.metadata.labels.as_ref()?.contains_key("app.kubernetes.io/managed-by");
        let t = String::from_utf8(s.data?.get("access_token")?.0.clone()).ok()?;
        (labelled && t != "tampered").then_some(t)
    })
    .await;
    assert!(env.dev.accepts(&repaired));
    assert_eq!(env.dev.stats().token_requests, 1);

    // Metadata alone edited: the token in place stays (the cache holds no token, so the
    // operator reads it from the Secret for the update).
    let edit = json!({"metadata": {"annotations": {"groupdocs.cloud/credential": null}}});
    env.secrets().patch("fixme-token", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    wait_for("the annotation to be restored", SECS_30, || async {
        let s = env.secrets().get("fixme-token").await.ok()?;
        (s.metadata.annotations?.get("groupdocs.cloud/credential")? == "fixme").then_some(())
    })
    .await;
    assert_eq!(env.token_in("fixme-token").await.as_deref(), Some(repaired.as_str()), "same token");
    assert_eq!(env.dev.stats().token_requests, 1);
    env.wait_ready("fixme").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_deleting_the_credential_garbage_collects_its_secret() {
    let env = env("gc").await;
    env.create_credential("gone", "gd-client", json!({})).await;
    env.wait_ready("gone").await;
    env.credentials().delete("gone", &DeleteParams::default()).await.unwrap();
    // kube-controller-manager has to discover the new CRD kind first: allow 90 s and more.
    wait_for("the token Secret to be collected", Duration::from_secs(120), || async {
        env.secrets().get_opt("gone-token").await.unwrap().is_none().then_some(())
    })
    .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_foreign_secret_is_a_conflict_and_left_untouched() {
    let env = env("conflict").await;
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "taken", "labels": {"app.kubernetes.io/managed-by": "groupdocs-token-operator"}},
        "stringData": {"mine": "yes"},
    }))
    .unwrap();
    env.secrets().create(&PostParams::default(), &foreign).await.unwrap();
    let before = env.secrets().get("taken").await.unwrap();
    env.create_credential("wants-taken", "gd-client", json!({"target": {"name": "taken"}})).await;
    let stalled = env.wait_condition("wants-taken", "Stalled", "True", "TargetConflict", SECS_30).await;
    assert!(stalled.message.contains("taken"));
    env.wait_condition("wants-taken", "Ready", "False", "TargetConflict", SECS_30).await;
    let after = env.secrets().get("taken").await.unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "untouched");
    assert_eq!(env.dev.stats().token_requests, 0, "a known conflict costs no token request");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_client_secret_problems_have_their_reasons() {
    let env = env("inputs").await;
    env.create_credential("no-secret", "does-not-exist", json!({})).await;
    env.put_client_secret("unlabelled", "demo-client-id", "demo-client-secret", false).await;
    env.create_credential("no-label", "unlabelled", json!({})).await;
    env.create_credential(
        "no-key",
        "gd-client",
        json!({"clientSecretRef": {"name": "gd-client", "clientSecretKey": "nope"}}),
    )
    .await;
    env.create_credential("bad-url", "gd-client", json!({"tokenUrl": "https://evil.example/connect/token"})).await;

    env.wait_condition("no-secret", "Stalled", "True", "SecretNotFound", SECS_30).await;
    let c = env.wait_condition("no-label", "Stalled", "True", "SecretNotLabelled", SECS_30).await;
    assert!(
        c.message.contains(&format!(
            "kubectl label secret unlabelled -n {} groupdocs.cloud/client-credentials=true",
            env.ns
        )),
        "{}",
        c.message
    );
    let c = env.wait_condition("no-key", "Stalled", "True", "SecretKeyMissing", SECS_30).await;
    assert!(c.message.contains("nope"));
    env.wait_condition("bad-url", "Stalled", "True", "TokenUrlNotAllowed", SECS_30).await;
    for name in ["no-secret", "no-label", "no-key", "bad-url"] {
        assert_eq!(env.condition(name, "Ready").await.unwrap().status, "False", "{name}");
    }
    assert_eq!(env.dev.stats().token_requests, 0, "no request for any of them");

    // Labelling the Secret fixes the credential at once (the label brings it into the watch).
    kubectl_label(&env.ns, "unlabelled");
    env.wait_condition("no-label", "Ready", "True", "TokenIssued", SECS_30).await;
    env.cleanup().await;
}

fn kubectl_label(ns: &str, secret: &str) {
    support::kubectl(&["label", "secret", secret, "-n", ns, "groupdocs.cloud/client-credentials=true"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_restart_with_valid_tokens_sends_no_request() {
    let mut env = env("restart").await;
    for i in 0..3 {
        env.create_credential(&format!("r{i}"), "gd-client", json!({})).await;
    }
    for i in 0..3 {
        env.wait_ready(&format!("r{i}")).await;
    }
    assert_eq!(env.dev.stats().token_requests, 1);
    let versions: Vec<_> = futures::future::join_all((0..3).map(|i| {
        let secrets = env.secrets();
        async move { secrets.get(&format!("r{i}-token")).await.unwrap().metadata.resource_version }
    }))
    .await;
    env.restart_operator();
    let op = env.operator.as_ref().unwrap();
    // Readiness means the caches synced and the first reconciles ran on them.
    wait_for("the new operator to report ready", SECS_30, || async {
        let url = format!("http://127.0.0.1:{}/readyz", op.probe_port);
        reqwest::get(&url).await.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;
    support::wait_reconciles_where(op, |r| r == "Ok", 0, 3, SECS_30).await;
    assert_eq!(env.dev.stats().token_requests, 1, "valid tokens are reused after a restart");
    for (i, before) in versions.iter().enumerate() {
        let rv = env.secrets().get(&format!("r{i}-token")).await.unwrap().metadata.resource_version;
        assert_eq!(&rv, before, "no write to r{i}-token");
    }
    env.cleanup().await;
}

/// More credentials than the paced start-up round lets wait in the scheduler at a time
/// (`bulk::IN_SCHEDULER`): before the caches sync no change triggers a reconcile, so every
/// one of them is reached only through that round, on a cold start and on a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_cold_start_and_a_restart_reach_every_credential_through_the_paced_round() {
    let n = 3 * groupdocs_token_operator::bulk::IN_SCHEDULER;
    let mut env = Env::new(OPERATOR, "bulk", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    let names: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    futures::future::join_all(names.iter().map(|n| env.create_credential(n, "gd-client", json!({})))).await;
    env.start_operator(&[]);
    for name in &names {
        env.wait_ready(name).await;
    }
    assert_eq!(env.dev.stats().token_requests, 1);
    env.restart_operator();
    let op = env.operator.as_ref().unwrap();
    support::wait_reconciles_where(op, |r| r == "Ok", 0, n as u64, SECS_30).await;
    assert_eq!(env.dev.stats().token_requests, 1, "the restart reuses every token");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_ten_credentials_on_one_client_cost_one_request() {
    let env = env("shared").await;
    let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    futures::future::join_all(names.iter().map(|n| env.create_credential(n, "gd-client", json!({})))).await;
    for i in 0..10 {
        env.wait_ready(&format!("c{i}")).await;
    }
    assert_eq!(env.dev.stats().token_requests, 1);
    let first = env.token_in("c0-token").await.unwrap();
    for i in 1..10 {
        assert_eq!(env.token_in(&format!("c{i}-token")).await.unwrap(), first);
    }

    // Each credential's first token is written once: its own Secret write coming back on the
    // watch must not make it write the status and the event again. A later credential's
    // round trip orders the check after those echoes.
    env.create_credential("late", "gd-client", json!({})).await;
    env.wait_ready("late").await;
    let issued = env.events("TokenIssued").await;
    for name in names.iter().map(String::as_str).chain(["late"]) {
        let count =
            issued.iter().filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)).count();
        assert_eq!(count, 1, "TokenIssued events for {name}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_force_refresh_annotation_renews_exactly_once() {
    let env = env("force").await;
    env.create_credential("forced", "gd-client", json!({})).await;
    env.wait_ready("forced").await;
    let first = env.token_in("forced-token").await.unwrap();
    env.annotate("forced", "groupdocs.cloud/refresh-requested-at", "2026-11-28T10:00:00Z").await;
    let second =
        wait_for("a forced renewal", SECS_30, || async { env.token_in("forced-token").await.filter(|t| *t != first) })
            .await;
    wait_for("status to record the request", SECS_30, || async {
        let s = env.credentials().get("forced").await.ok()?.status?;
        (s.last_refresh_request.as_deref() == Some("2026-11-28T10:00:00Z")).then_some(())
    })
    .await;
    // Other events do not renew again for the same value: not once the reconcile the poke
    // triggers has run.
    let op = env.operator.as_ref().unwrap();
    let looked = reconciles(op).await;
    env.annotate("forced", "poke", "1").await;
    wait_reconciles(op, looked, 1, SECS_30).await;
    assert_eq!(env.token_in("forced-token").await.unwrap(), second);
    assert_eq!(env.dev.stats().token_requests, 2, "exactly one new token");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_plain_manifests_rbac_suffices() {
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/manifests/groupdocs-token-operator.yaml");
    support::kubectl(&["apply", "--server-side", "--force-conflicts", "-f", manifests]);
    let mut env = Env::new(OPERATOR, "rbac", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    let dir = tempfile::tempdir().unwrap();
    env.start_operator_as("groupdocs-token-operator", "groupdocs-token-operator", dir.path());
    env.create_credential("least-privilege", "gd-client", json!({})).await;
    env.wait_ready("least-privilege").await;
    env.put_client_secret("unlabelled", "demo-client-id", "demo-client-secret", false).await;
    env.create_credential("needs-get", "unlabelled", json!({})).await;
    env.wait_condition("needs-get", "Stalled", "True", "SecretNotLabelled", SECS_30).await;
    let logs = env.logs();
    assert!(!logs.contains("forbidden") && !logs.contains("Forbidden"), "{}", support::tail(&logs, 20));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_kube_api_qps_spreads_the_writes_and_still_converges() {
    const CREDENTIALS: usize = 10;
    const QPS: u32 = 2;
    let mut env = Env::new(OPERATOR, "qps", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    // All there before the operator starts: without a limit, their writes land within moments.
    let names: Vec<String> = (0..CREDENTIALS).map(|i| format!("q{i}")).collect();
    for name in &names {
        env.create_credential(name, "gd-client", json!({})).await;
    }
    env.start_operator(&["--kube-api-qps", &QPS.to_string()]);
    for name in &names {
        env.wait_condition(name, "Ready", "True", "TokenIssued", Duration::from_secs(120)).await;
    }
    assert_eq!(env.dev.stats().token_requests, 1);

    // When the operator's writes landed, by the API server's clock: each target Secret's
    // creation and each credential's last status write (besides an event per credential).
    let mut landed = Vec::new();
    for name in &names {
        let secret = env.secrets().get(&format!("{name}-token")).await.unwrap();
        landed.push(secret.metadata.creation_timestamp.unwrap().0);
        let cr = env.credentials().get(name).await.unwrap();
        let status_write = cr
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.manager.as_deref() == Some("groupdocs-token-operator"))
            .filter(|f| f.subresource.as_deref() == Some("status"))
            .find_map(|f| f.time)
            .unwrap_or_else(|| panic!("{name}: no status write by the operator"));
        landed.push(status_write.0);
    }
    // The limit allows QPS requests per window of a second: 2 x CREDENTIALS writes fill at
    // least 10 windows, so more than 8 s pass from the first to the last being sent. Whole
    // seconds and the first write's latency take up to 2 s off, and 1 s of margin: 5 s.
    // Load only spreads the writes further; without the limit they land within a second or two.
    let first = landed.iter().min().unwrap();
    let last = landed.iter().max().unwrap();
    let spread = last.duration_since(*first).as_secs();
    let floor = (2 * CREDENTIALS as i64) / i64::from(QPS) - 5;
    assert!(
        spread >= floor,
        "{} writes landed within {spread} s; at {QPS} requests a second they need at least {floor} s",
        landed.len()
    );
    env.cleanup().await;
}
