//! Many tenants, one operator: what one namespace does (broken credentials, hostile workload
//! annotations, a credential whose reconcile panics, restart storms) must not stop another
//! namespace's renewals or push the token endpoint into its cooldown.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use groupdocs_dev_token_server::{DevServerArgs, Fault, Stats};
use groupdocs_token_operator::crd::GroupDocsCredential;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::objects::{create_credential as credential, create_namespace, put_client_secret};
use support::{Env, OPERATOR, control_plane, metrics, wait_for};

async fn fingerprint(client: &Client, ns: &str, name: &str) -> Option<String> {
    let api: Api<GroupDocsCredential> = Api::namespaced(client.clone(), ns);
    api.get_opt(name).await.ok()??.status?.token_fingerprint
}

/// Waits until credential `ns/name` has shown `n` different token fingerprints.
async fn wait_renewals(client: &Client, ns: &str, name: &str, n: usize, deadline: Duration) -> Vec<String> {
    let seen = Mutex::new(Vec::<String>::new());
    wait_for(&format!("{n} tokens for {ns}/{name}"), deadline, || async {
        if let Some(fp) = fingerprint(client, ns, name).await {
            let mut seen = seen.lock().unwrap();
            if seen.last() != Some(&fp) {
                seen.push(fp);
            }
            return (seen.len() >= n).then(|| seen.clone());
        }
        None
    })
    .await
}

/// Where the figures go besides stdout (captured by the test harness), so that `.ci/run`
/// can print them: `target/tmp/e2e_tenants_report.txt`.
const REPORT: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/e2e_tenants_report.txt");

fn report(line: &str) {
    use std::io::Write as _;
    println!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(REPORT) {
        let _ = writeln!(f, "e2e_tenants: {line}");
    }
}

/// The sum of the samples of `name` in the operator's /metrics, 0 when absent.
fn metric(text: &str, name: &str) -> u64 {
    metrics::sum(text, name, |_| true) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_hostile_workload_annotation_leaves_another_namespace_renewing() {
    let mut env =
        Env::new(OPERATOR, "hostile-workload", DevServerArgs { expires_in: 20, ..DevServerArgs::default() }).await;
    let bystander = format!("{}-bystander", env.ns);
    create_namespace(&env.client, &bystander).await.unwrap();
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    put_client_secret(&env.client, &bystander, "gd-client", "demo-client-id", "demo-client-secret", true).await;

    // The workload owner of the hostile namespace writes restart annotations at the far ends
    // of time, and garbage, on the workloads the operator restarts.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let hostile_values = [
        jiff::Timestamp::MAX.to_string(),
        "9999-12-31T23:59:59Z".to_string(),
        jiff::Timestamp::MIN.to_string(),
        "+99999-01-01T00:00:00Z".to_string(),
        "not a time".to_string(),
    ];
    let mut targets = Vec::new();
    for (i, value) in hostile_values.iter().enumerate() {
        let name = format!("app-{i}");
        let annotations: BTreeMap<String, String> = [
            ("groupdocs.cloud/restarted-at".to_string(), value.clone()),
            ("groupdocs.cloud/token-fingerprint".to_string(), "stale".to_string()),
        ]
        .into();
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": annotations},
                    "spec": {"containers": [{"name": "c", "image": "localhost/none:1"}]},
                },
            },
        }))
        .unwrap();
        deployments.create(&PostParams::default(), &deployment).await.unwrap();
        targets.push(json!({"kind": "Deployment", "name": name}));
    }
    let url = env.dev.token_url();
    let spec = |targets: serde_json::Value| json!({"clientSecretRef": {"name": "gd-client"}, "tokenUrl": url, "rolloutRestartTargets": targets});
    credential(&env.client, &env.ns, "hostile", spec(json!(targets))).await;
    credential(&env.client, &bystander, "bystander", spec(json!([]))).await;
    env.start_operator(&[
        "--watch-namespace",
        &bystander,
        "--rollout-restarts",
        "--rollout-restart-min-interval",
        "1s",
    ]);

    // 20 s tokens renew about every 13 s: three tokens each take two renewals, and the
    // hostile credential's renewals go through the rollout restart of every target.
    let client = env.client.clone();
    let (hostile_ns, bystander_ns) = (env.ns.clone(), bystander.clone());
    let (hostile, bystanding) = tokio::join!(
        wait_renewals(&client, &hostile_ns, "hostile", 3, Duration::from_secs(120)),
        wait_renewals(&client, &bystander_ns, "bystander", 3, Duration::from_secs(120)),
    );
    assert_eq!((hostile.len(), bystanding.len()), (3, 3));
    let op = env.operator.as_mut().unwrap();
    assert!(!op.exited(), "the operator is still running");
    let logs = op.logs();
    assert!(!logs.contains("panicked"), "no panic:\n{}", support::tail(&logs, 30));
    // The far-future and out-of-range values were handled: every workload was looked at.
    let events = support::kubectl(&["get", "events", "-n", &env.ns, "-o", "json"]);
    assert!(!events.contains("InternalError"), "no reconcile failed internally");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_panicking_reconcile_fails_only_its_credential() {
    let mut env = Env::new(OPERATOR, "panic", DevServerArgs { expires_in: 12, ..DevServerArgs::default() }).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    env.create_credential("doomed", "gd-client", json!({})).await;
    env.create_credential("healthy", "gd-client", json!({"target": {"name": "healthy-token"}})).await;
    let target = format!("{}/doomed", env.ns);
    env.operator =
        Some(env.launch(&[], &control_plane().kubeconfig, &[("GDTO_FAULT_PANIC_CREDENTIAL", target.as_str())]));

    let stalled = env.wait_condition("doomed", "Stalled", "True", "InternalError", Duration::from_secs(30)).await;
    assert!(stalled.message.contains("GDTO_FAULT_PANIC_CREDENTIAL"), "{}", stalled.message);
    let ready = env.condition("doomed", "Ready").await.unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InternalError"));
    // The other credential of the same namespace and client keeps renewing, in the same process.
    let client = env.client.clone();
    let tokens = wait_renewals(&client, &env.ns, "healthy", 3, Duration::from_secs(60)).await;
    assert_eq!(tokens.len(), 3);
    let op = env.operator.as_mut().unwrap();
    assert!(!op.exited(), "the process stays up");
    let metrics = op.metrics().await;
    assert!(metric(&metrics, "groupdocs_token_operator_reconcile_panics_total") >= 1, "{metrics}");
    env.cleanup().await;
}

type Samples = Arc<Mutex<Vec<(Instant, Stats)>>>;

/// Samples the token server's counters, to look at them per rolling minute afterwards.
fn sample(env: &Env) -> (Samples, tokio::task::JoinHandle<()>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let dev = env.dev.clone();
    let task = {
        let samples = samples.clone();
        tokio::spawn(async move {
            loop {
                samples.lock().unwrap().push((Instant::now(), dev.stats()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    (samples, task)
}

/// The most rejections the server saw within any 60 s (sampled every 200 ms).
fn max_rejections_per_minute(samples: &[(Instant, Stats)]) -> u64 {
    let mut max = 0;
    for (i, (start, first)) in samples.iter().enumerate() {
        let window = samples[i..].iter().take_while(|(t, _)| t.duration_since(*start) <= Duration::from_secs(60));
        for (_, stats) in window {
            max = max.max(stats.rejected - first.rejected);
        }
    }
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_restart_storm_keeps_broken_credentials_within_the_budget() {
    // The real limiter: 20 failures within a minute bring a 10-minute cooldown.
    let mut env = Env::new(OPERATOR, "storm", DevServerArgs::default()).await;
    let namespaces = [env.ns.clone(), format!("{}-b", env.ns), format!("{}-c", env.ns)];
    for ns in &namespaces[1..] {
        create_namespace(&env.client, ns).await.unwrap();
    }
    let url = env.dev.token_url();
    for (n, ns) in namespaces.iter().enumerate() {
        for i in 0..10 {
            let secret = format!("broken-{i}");
            put_client_secret(&env.client, ns, &secret, &format!("unknown-{n}-{i}"), "wrong", true).await;
            credential(
                &env.client,
                ns,
                &format!("broken-{i}"),
                json!({"clientSecretRef": {"name": secret}, "tokenUrl": url}),
            )
            .await;
        }
    }
    let (samples, sampler) = sample(&env);
    let storm_started = Instant::now();
    env.start_operator(&["--watch-namespace", &namespaces[1], "--watch-namespace", &namespaces[2]]);
    let dev = env.dev.clone();
    wait_for("the first rejections", Duration::from_secs(30), || async { (dev.stats().rejected > 0).then_some(()) })
        .await;

    // Five hard kills and restarts within a minute.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(9)).await;
        env.operator.as_mut().unwrap().kill_hard();
        env.restart_operator();
    }
    let storm = storm_started.elapsed();
    // Then a quiet minute under the last process, so every rolling minute is covered.
    tokio::time::sleep(Duration::from_secs(60)).await;
    sampler.abort();
    let samples = samples.lock().unwrap().clone();
    let last = samples.last().unwrap().1.clone();
    let max = max_rejections_per_minute(&samples);
    report(&format!(
        "restart storm: 30 broken credentials in 3 namespaces, 5 kills in {:.0} s; token endpoint saw {} rejections in {:.0} s, at most {max} in any minute, {} answered 429",
        storm.as_secs_f64(),
        last.rejected,
        samples.last().unwrap().0.duration_since(samples[0].0).as_secs_f64(),
        last.rate_limited,
    ));
    assert!(last.rejected >= 8, "the broken credentials were tried: {}", last.rejected);
    assert!(max <= 10, "at most the budget (10) per minute, saw {max}");
    assert_eq!(last.rate_limited, 0, "the endpoint never entered its cooldown");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_rate_limited_credential_writes_no_status_while_it_waits() {
    let mut env = Env::new(OPERATOR, "quiet", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    env.dev.set_fault(Fault::TooManyRequests { retry_after: Some("600".into()) });
    env.create_credential("limited", "gd-client", json!({})).await;
    env.start_operator(&[]);
    env.wait_condition("limited", "Reconciling", "True", "RateLimited", Duration::from_secs(30)).await;
    let status_before = env.credentials().get("limited").await.unwrap().status;
    let op = env.operator.as_ref().unwrap();
    let writes_before = metric(&op.metrics().await, "groupdocs_token_operator_status_writes_total");

    // Every annotation change is a reconcile; none may write status while the pause holds.
    let started = Instant::now();
    let mut reconciles = support::reconciles(op).await;
    let pokes = 20;
    for i in 0..pokes {
        env.annotate("limited", "example.com/poke", &i.to_string()).await;
        reconciles = support::wait_reconciles(op, reconciles, 1, Duration::from_secs(20)).await;
        // Paced, to measure a rate over time rather than a burst.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let took = started.elapsed();
    let writes = metric(&op.metrics().await, "groupdocs_token_operator_status_writes_total") - writes_before;
    report(&format!(
        "rate limited: {writes} status writes in {pokes} reconciles over {:.0} s ({:.1} per minute)",
        took.as_secs_f64(),
        writes as f64 * 60.0 / took.as_secs_f64()
    ));
    assert_eq!(writes, 0, "no status write while waiting out the pause");
    assert_eq!(env.credentials().get("limited").await.unwrap().status, status_before);
    assert_eq!(env.dev.stats().token_requests, 1, "one request, then the pause");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_forced_refreshes_wait_for_the_minimum_interval() {
    let mut env = Env::new(OPERATOR, "forced", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    env.create_credential("viewer", "gd-client", json!({})).await;
    env.start_operator(&["--min-refresh-interval", "15s"]);
    env.wait_ready("viewer").await;
    let first = fingerprint(&env.client, &env.ns, "viewer").await.unwrap();
    let issued = Instant::now();
    // A loop of forced refreshes: at most one renewal per minimum interval.
    let op = env.operator.as_ref().unwrap();
    let mut reconciles = support::reconciles(op).await;
    for i in 0..5 {
        env.annotate("viewer", "groupdocs.cloud/refresh-requested-at", &format!("loop-{i}")).await;
        reconciles = support::wait_reconciles(op, reconciles, 1, Duration::from_secs(20)).await;
    }
    if issued.elapsed() < Duration::from_secs(12) {
        assert_eq!(env.dev.stats().issued, 1, "no forced renewal within the minimum interval");
    }
    let client = env.client.clone();
    let renewed = wait_for("the forced renewal after the interval", Duration::from_secs(40), || async {
        fingerprint(&client, &env.ns, "viewer").await.filter(|fp| *fp != first)
    })
    .await;
    // The token was issued a little before `issued` (whole seconds, polling): allow 3 s.
    assert!(issued.elapsed() >= Duration::from_secs(12), "renewed only after the interval");
    assert_ne!(renewed, first);
    assert_eq!(env.dev.stats().issued, 2, "the five requests made one renewal");
    env.cleanup().await;
}
