//! Token-endpoint faults, end to end: the expected reason on `Reconciling`, `Ready` still True
//! and the last good token untouched while it is valid, `TokenExpired` only after expiry,
//! recovery within seconds of the fault ending, request counts (seen by the server) inside
//! the budget, and nothing secret in logs, events, status or metrics. The operator runs at
//! the most verbose log level throughout.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use groupdocs_dev_token_server::{DevServerArgs, Fault, LimitBy};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{Env, OPERATOR, reconciles_in, wait_for};

const VICTIM: &str = "victim";
const CLIENT_SECRET: &str = "demo-client-secret";
const DEADLINE: Duration = Duration::from_secs(30);
/// What "recovery within seconds" means here: the backoff cap (2 s) plus a reconcile, with
/// room for two loaded cores.
const RECOVERY: Duration = Duration::from_secs(15);

const OPERATOR_FLAGS: &[&str] = &["--log-level", "trace", "--token-request-timeout", "2s", "--max-backoff", "2s"];

async fn env_with(name: &str, dev: DevServerArgs, extra: &[&str]) -> Env {
    let mut env = Env::new(OPERATOR, name, dev).await;
    env.put_client_secret("gd-client", "demo-client-id", CLIENT_SECRET, true).await;
    let flags: Vec<&str> = OPERATOR_FLAGS.iter().chain(extra).copied().collect();
    env.start_operator(&flags);
    env.create_credential(VICTIM, "gd-client", json!({})).await;
    env.wait_ready(VICTIM).await;
    env
}

/// Injects `fault`, forces a renewal and checks the failure is reported without harm; then
/// removes the fault and checks recovery. Returns the failed requests the server saw.
async fn fault_then_recover(env: &Env, round: usize, fault: Fault, reason: &str) -> u64 {
    let good = env.token_in("victim-token").await.unwrap();
    let before = env.dev.stats();
    env.dev.set_fault(fault.clone());
    env.annotate(VICTIM, "groupdocs.cloud/refresh-requested-at", &format!("round-{round}")).await;
    let rec = env.wait_condition(VICTIM, "Reconciling", "True", reason, DEADLINE).await;
    assert!(!rec.message.is_empty(), "{fault:?}: a message says what failed");
    let ready = env.condition(VICTIM, "Ready").await.unwrap();
    assert_eq!(ready.status, "True", "{fault:?}: the old token is valid, so Ready stays True: {ready:?}");
    assert_eq!(env.token_in("victim-token").await.unwrap(), good, "{fault:?}: the last good token stays");

    env.dev.set_fault(Fault::None);
    let renewed = wait_for(&format!("recovery from {fault:?}"), RECOVERY, || async {
        env.token_in("victim-token").await.filter(|t| *t != good)
    })
    .await;
    assert!(env.dev.accepts(&renewed));
    env.wait_condition(VICTIM, "Reconciling", "False", "TokenRenewed", RECOVERY).await;
    assert!(!env.operator.as_ref().unwrap().logs().contains("panicked"), "{fault:?}: no panic");
    let after = env.dev.stats();
    after.token_requests - before.token_requests - (after.issued - before.issued)
}

/// Each of `faults` in turn on one credential ([`fault_then_recover`]), reported as `reason`:
/// the failed requests stay inside the budget and nothing leaks.
async fn faults_in_turn(name: &str, faults: impl IntoIterator<Item = Fault>, reason: &str) {
    let env = env_with(name, DevServerArgs::default(), &[]).await;
    let mut failures = 0;
    for (i, fault) in faults.into_iter().enumerate() {
        failures += fault_then_recover(&env, i, fault, reason).await;
    }
    assert!(failures <= 10, "{failures} failed requests: inside the budget");
    assert_nothing_leaked(&env).await;
    env.cleanup().await;
}

/// No token the server issued and no client secret appears in logs, events, status or metrics.
async fn assert_nothing_leaked(env: &Env) {
    let mut secrets = env.dev.issued_tokens();
    assert!(!secrets.is_empty());
    secrets.push(CLIENT_SECRET.to_string());
    secrets.push("wrong-secret-value".to_string());
    let op = env.operator.as_ref().unwrap();
    let logs = op.logs();
    assert!(logs.contains("TRACE"), "the operator ran at trace level");
    let places = [
        ("logs", logs),
        ("events", support::kubectl(&["get", "events", "-n", &env.ns, "-o", "json"])),
        ("credentials", support::kubectl(&["get", "gdc", "-n", &env.ns, "-o", "json"])),
        ("metrics", op.metrics().await),
    ];
    for (place, text) in &places {
        assert!(!text.is_empty(), "{place} were read");
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret leaked into {place}");
            // A JWT's signature alone would leak it as well.
            if let Some(sig) = secret.rsplit('.').next().filter(|s| s.len() > 20) {
                assert!(!text.contains(sig), "a token signature leaked into {place}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_faults_endpoint_unavailable() {
    let faults = [Fault::Status { status: 500 }, Fault::Status { status: 503 }, Fault::Hang, Fault::Reset];
    faults_in_turn("unavailable", faults, "TokenEndpointUnavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_faults_unusable_bodies() {
    let faults = [Fault::NotJson, Fault::NoAccessToken, Fault::HugeBody { bytes: 64 * 1024 * 1024 }];
    faults_in_turn("bodies", faults, "InvalidTokenResponse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_faults_bad_expires_in() {
    let values = [json!(0), json!(-5), json!(999_999_999_999_i64), json!("soon")];
    faults_in_turn("expires", values.map(|value| Fault::ExpiresIn { value }), "InvalidTokenResponse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_faults_429_with_retry_after() {
    let env = env_with("retryafter", DevServerArgs::default(), &[]).await;
    for i in 0..2 {
        let retry_after = match i {
            // Long enough that the fault is lifted inside the pause on a loaded machine too.
            0 => "6".to_string(),
            _ => httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(8)),
        };
        let failures =
            fault_then_recover(&env, i, Fault::TooManyRequests { retry_after: Some(retry_after) }, "RateLimited").await;
        assert_eq!(failures, 1, "exactly one request until Retry-After passed");
    }
    assert_nothing_leaked(&env).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_faults_429_without_usable_retry_after_pauses_ten_minutes() {
    for (name, retry_after) in [("garbage", Some("soon".to_string())), ("missing", None)] {
        let mut env = env_with(&format!("ra-{name}"), DevServerArgs::default(), &[]).await;
        let good = env.token_in("victim-token").await.unwrap();
        env.dev.set_fault(Fault::TooManyRequests { retry_after });
        env.annotate(VICTIM, "groupdocs.cloud/refresh-requested-at", "now").await;
        env.wait_condition(VICTIM, "Reconciling", "True", "RateLimited", DEADLINE).await;
        let status = env.credentials().get(VICTIM).await.unwrap().status.unwrap();
        let pause = status.rate_limited_until.unwrap().0.duration_since(jiff::Timestamp::now()).as_secs();
        // Read back after the condition was seen: some seconds may have passed on a loaded machine.
        assert!((570..=600).contains(&pause), "the documented 10-minute cooldown: {pause}s");
        env.dev.set_fault(Fault::None);
        let requests = env.dev.stats().token_requests;
        // The pause holds across events and across a restart of the operator.
        env.annotate(VICTIM, "poke", "1").await;
        env.restart_operator();
        wait_for("the restarted operator to reconcile", DEADLINE, || async {
            let text = env.operator.as_ref()?.metrics().await;
            (reconciles_in(&text, |result| result == "RateLimited") > 0).then_some(())
        })
        .await;
        assert_eq!(env.dev.stats().token_requests, requests, "no request inside the pause");
        assert_eq!(env.condition(VICTIM, "Ready").await.unwrap().status, "True");
        assert_eq!(env.token_in("victim-token").await.unwrap(), good);
        assert_nothing_leaked(&env).await;
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_faults_ready_false_only_after_expiry() {
    let env = env_with("expiry", DevServerArgs { expires_in: 5, ..Default::default() }, &[]).await;
    let expires = env.credentials().get(VICTIM).await.unwrap().status.unwrap().expires_at.unwrap().0;
    env.dev.set_fault(Fault::Status { status: 503 });
    // Renewal fails from about 3 s after issue; Ready holds until the token actually expires.
    let expired = env.wait_condition(VICTIM, "Ready", "False", "TokenExpired", DEADLINE).await;
    assert!(expired.last_transition_time.0 >= expires, "False only once expired");
    assert_eq!(env.condition(VICTIM, "Reconciling").await.unwrap().reason, "TokenEndpointUnavailable");
    env.dev.set_fault(Fault::None);
    env.wait_condition(VICTIM, "Ready", "True", "TokenRenewed", RECOVERY).await;
    assert_nothing_leaked(&env).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_faults_broken_credentials_never_trigger_the_cooldown() {
    // The real limiter: 20 failures within 60 s from this address bring a 600 s cooldown for
    // every client, the healthy one included. The operator's budget (10 a minute, of which a
    // namespace with only broken credentials may use 4) keeps a dozen broken credentials from
    // getting there.
    let env = env_with("budget", DevServerArgs::default(), &[]).await;
    for i in 0..12 {
        env.put_client_secret(&format!("broken-{i}"), &format!("broken-{i}"), "wrong-secret-value", true).await;
        env.create_credential(&format!("broken-{i}"), &format!("broken-{i}"), json!({})).await;
    }
    let mut by_budget = 0;
    for i in 0..12 {
        let name = format!("broken-{i}");
        let ready = wait_for(&format!("{name} to fail"), DEADLINE, || async {
            env.condition(&name, "Ready").await.filter(|c| c.status == "False")
        })
        .await;
        match ready.reason.as_str() {
            "InvalidClient" => {}
            "RateLimited" => {
                assert!(ready.message.contains("budget"), "{}", ready.message);
                by_budget += 1;
            }
            other => panic!("{name}: unexpected reason {other}"),
        }
    }
    assert_eq!(by_budget, 8, "all but the namespace's share of 4 wait for the budget");
    let stats = env.dev.stats();
    assert_eq!(stats.rejected, 4, "four failed requests in the minute, no more");
    assert_eq!(stats.rate_limited, 0, "the server never entered its cooldown");
    // The healthy credential still renews: its last request succeeded, so other clients'
    // failures do not hold it back.
    let good = env.token_in("victim-token").await.unwrap();
    env.annotate(VICTIM, "groupdocs.cloud/refresh-requested-at", "while-others-fail").await;
    wait_for("the healthy credential to renew", DEADLINE, || async {
        env.token_in("victim-token").await.filter(|t| *t != good)
    })
    .await;
    assert_eq!(env.dev.stats().rate_limited, 0);
    assert_nothing_leaked(&env).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_faults_a_real_cooldown_is_waited_out() {
    // Time scale 60: the 600 s cooldown lasts 10 s. Someone else on this address fails 20 times.
    let env =
        env_with("cooldown", DevServerArgs { time_scale: 60.0, limit_by: LimitBy::Ip, ..Default::default() }, &[])
            .await;
    let good = env.token_in("victim-token").await.unwrap();
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let form = [("grant_type", "client_credentials"), ("client_id", "intruder"), ("client_secret", "x")];
        http.post(env.dev.token_url()).form(&form).send().await.unwrap();
    }
    let before = env.dev.stats().token_requests;
    env.annotate(VICTIM, "groupdocs.cloud/refresh-requested-at", "after-cooldown").await;
    let rec = env.wait_condition(VICTIM, "Reconciling", "True", "RateLimited", DEADLINE).await;
    assert!(rec.message.contains("429"), "{}", rec.message);
    assert_eq!(env.condition(VICTIM, "Ready").await.unwrap().status, "True");
    assert_eq!(env.token_in("victim-token").await.unwrap(), good);
    let renewed = wait_for("renewal after the cooldown", Duration::from_secs(25), || async {
        env.token_in("victim-token").await.filter(|t| *t != good)
    })
    .await;
    assert!(env.dev.accepts(&renewed));
    assert_eq!(env.dev.stats().token_requests - before, 2, "one 429, then one request after Retry-After");
    assert_nothing_leaked(&env).await;
    env.cleanup().await;
}

const API_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_write_conflicts_are_retried() {
    let mut env = Env::new(OPERATOR, "conflicts", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    env.start_operator(&[]);
    env.create_credential("busy", "gd-client", json!({})).await;
    env.wait_ready("busy").await;
    let first = env.token_in("busy-token").await.unwrap();
    let op = env.operator.as_ref().unwrap();
    // How the operator reports a failed Secret update (the API server's 409 among them).
    let api_errors = |result: &str| result == "KubernetesApiError";
    assert_eq!(support::reconciles_where(op, api_errors).await, 0, "no API error before the edits");

    // Other tools keep editing the Secret while the operator renews it. The operator's update
    // carries the resourceVersion it read, so an edit landing between its read and its
    // update makes the API server answer 409 Conflict.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (secrets, stop) = (env.secrets(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let patch =
                        json!({"metadata": {"annotations": {format!("other-tool/touched-{w}"): i.to_string()}}});
                    let _ = secrets.patch("busy-token", &PatchParams::default(), &Patch::Merge(&patch)).await;
                    i += 1;
                }
            })
        })
        .collect();
    // Forced renewals, one at a time, until one of them meets a conflict.
    let mut conflicted = None;
    for round in 0..60 {
        let value = format!("r{round}");
        env.annotate("busy", "groupdocs.cloud/refresh-requested-at", &value).await;
        let met_conflict = wait_for(&format!("renewal {value} to land or to fail"), API_DEADLINE, || async {
            if support::reconciles_where(op, api_errors).await > 0 {
                return Some(true);
            }
            let status = env.credentials().get("busy").await.ok()?.status?;
            (status.last_refresh_request.as_deref() == Some(value.as_str())).then_some(false)
        })
        .await;
        if met_conflict {
            conflicted = Some(value);
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    let round = conflicted.expect("no renewal met a conflict in 60 rounds of concurrent edits");

    // It was a 409 on the Secret update: the operator says so in its Warning event.
    let notes: Vec<String> = env.events("KubernetesApiError").await.into_iter().filter_map(|e| e.note).collect();
    assert!(
        notes.iter().any(|n| n.contains("Conflict") && n.contains("busy-token")),
        "a Warning event reports the 409 Conflict on busy-token: {notes:?}"
    );

    // The renewal that met the conflict is retried and lands, and converges.
    wait_for(&format!("the renewal {round} that met the conflict to land"), API_DEADLINE, || async {
        let status = env.credentials().get("busy").await.ok()?.status?;
        (status.last_refresh_request.as_deref() == Some(round.as_str())).then_some(())
    })
    .await;
    let last = env.token_in("busy-token").await.unwrap();
    assert_ne!(last, first);
    assert!(env.dev.accepts(&last));
    let status = env.credentials().get("busy").await.unwrap().status.unwrap();
    let secret_fp = groupdocs_token_operator::redact::Sensitive::new(last).fingerprint();
    assert_eq!(status.token_fingerprint.as_deref(), Some(secret_fp.as_str()), "status describes the Secret's token");
    let secret = env.secrets().get("busy-token").await.unwrap();
    let annotations = secret.metadata.annotations.unwrap();
    for w in 0..3 {
        assert!(annotations.contains_key(&format!("other-tool/touched-{w}")), "the other tools' edits stay");
    }
    env.wait_condition("busy", "Reconciling", "False", "TokenRenewed", API_DEADLINE).await;
    env.wait_ready("busy").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_operator_killed_mid_refresh_converges_without_extra_requests() {
    let mut env = Env::new(OPERATOR, "killed", DevServerArgs::default()).await;
    env.dev.set_client("second-client", "second-secret");
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    env.put_client_secret("second", "second-client", "second-secret", true).await;
    env.start_operator(&["--token-request-timeout", "20s"]);
    env.create_credential("steady-a", "gd-client", json!({})).await;
    env.create_credential("steady-b", "gd-client", json!({})).await;
    env.create_credential("renewing", "second", json!({})).await;
    for name in ["steady-a", "steady-b", "renewing"] {
        env.wait_ready(name).await;
    }
    assert_eq!(env.dev.stats().token_requests, 2);
    let old = env.token_in("renewing-token").await.unwrap();

    env.dev.set_fault(Fault::Hang);
    env.annotate("renewing", "groupdocs.cloud/refresh-requested-at", "now").await;
    wait_for("the renewal request to be in flight", API_DEADLINE, || async {
        (env.dev.stats().token_requests == 3).then_some(())
    })
    .await;
    env.operator.as_mut().unwrap().kill_hard();
    env.dev.set_fault(Fault::None);
    env.restart_operator();

    let fresh = wait_for("the interrupted renewal to complete", API_DEADLINE, || async {
        env.token_in("renewing-token").await.filter(|t| *t != old)
    })
    .await;
    assert!(env.dev.accepts(&fresh));
    for name in ["steady-a", "steady-b", "renewing"] {
        env.wait_ready(name).await;
    }
    assert_eq!(env.dev.stats().token_requests, 4, "only the interrupted renewal is repeated");
    env.cleanup().await;
}
