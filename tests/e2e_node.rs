//! The product as users run it: the operator's own image (`make image`) installed by the real
//! helm onto a real node (containerd, runc, the kubelet, kube-scheduler, kube-proxy; see
//! `testenv::node`), reaching the API server through the standard in-cluster configuration
//! and the development token server over TLS on the node bridge; and workloads that read the
//! renewed token from their mounted Secret volume.
//!
//! One test, in phases, because they share one node and one release and must run in order:
//! install, renewals under consumer load (with a rollout-restarted Deployment), leader
//! failover, `helm upgrade`, `helm uninstall`.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use groupdocs_dev_token_server::{DevServer, DevServerArgs};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sha2::Digest;
use test_support::{helm, kubectl, kubectl_ok, wait_for};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/groupdocs-token-operator");
const RELEASE: &str = "groupdocs-token-operator";
const SYSTEM_NS: &str = "gdto-system";
const APP_NS: &str = "viewer-app";
const IMAGE_REPO: &str = "localhost/groupdocs-token-operator";
const IMAGE_TAG: &str = "dev";
const CONSUMER_IMAGE: &str = "localhost/gdto-consumer:1";
/// Token lifetime while renewals are observed, and how long before expiry they happen.
const SHORT_LIFETIME_SECS: i64 = 60;
const RENEW_BEFORE: &str = "30s";
const RENEWALS: usize = 3;
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// Starts this binary's control plane with a node, or says why it cannot (a failure in CI).
fn node_available() -> bool {
    if std::env::var_os(testenv::EXISTING_CLUSTER_ENV).is_some_and(|v| v == "1") {
        test_support::control_plane();
        return true;
    }
    match testenv::node::preflight().and_then(|()| testenv::node_images()) {
        Ok(images) => {
            testenv::shared_with(testenv::Options { node_images: Some(images), ..Default::default() });
            true
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the node tests cannot run in CI: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED e2e_node: {e}");
            false
        }
    }
}

/// The address pods reach the host on (the bridge's gateway), where the token server listens.
fn host_ip() -> String {
    std::env::var("GDTO_E2E_HOST_IP").unwrap_or_else(|_| testenv::node::GATEWAY.to_string())
}

fn run_helm(args: &[&str]) -> String {
    let out = helm(args);
    assert!(out.status.success(), "helm {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn restricted_namespace(name: &str) {
    kubectl(&["create", "namespace", name]);
    kubectl(&["label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted"]);
}

/// A short digest of a token, as the consumer pods print it.
fn fingerprint(token: &str) -> String {
    hex::encode(&sha2::Sha256::digest(token.as_bytes())[..4])
}

/// Restricted-PSS container settings for the busybox consumer pods.
fn restricted_container(name: &str, script: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "image": CONSUMER_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "token", "mountPath": "/var/run/groupdocs", "readOnly": true}],
    })
}

fn token_volume() -> serde_json::Value {
    serde_json::json!([{"name": "token", "secret": {"secretName": "viewer-token"}}])
}

/// Every second: call the protected API with the mounted `authorization` value and print
/// `<unix time> ok|fail <token digest>`. The digest is sha256 of `access_token`, 8 hex digits.
fn consumer_script(api: &str) -> String {
    format!(
        r#"while true; do
  now=$(date +%s); auth=$(cat /var/run/groupdocs/authorization)
  fp=$(sha256sum /var/run/groupdocs/access_token | cut -c1-8)
  if wget -q -O /dev/null --header "Authorization: $auth" "{api}"; then echo "$now ok $fp"; else echo "$now fail $fp"; fi
  sleep 1
done"#
    )
}

/// Reads the token once at start and keeps using it, as SDKs that never re-read do.
fn startup_reader_script(api: &str) -> String {
    format!(
        r#"auth=$(cat /var/run/groupdocs/authorization); fp=$(sha256sum /var/run/groupdocs/access_token | cut -c1-8)
echo "started with $fp"
while true; do
  if wget -q -O /dev/null --header "Authorization: $auth" "{api}"; then echo "$(date +%s) ok $fp"; else echo "$(date +%s) fail $fp"; fi
  sleep 2
done"#
    )
}

fn apply_json(value: &serde_json::Value) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), value.to_string()).unwrap();
    kubectl(&["apply", "-f", file.path().to_str().unwrap()]);
}

/// Pod names of the operator release, by phase.
fn operator_pods() -> Vec<(String, String)> {
    let out = kubectl_ok(&[
        "get",
        "pods",
        "-n",
        SYSTEM_NS,
        "-l",
        "app.kubernetes.io/name=groupdocs-token-operator",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}",
    ])
    .unwrap_or_default();
    out.lines().filter_map(|l| l.split_once(' ')).map(|(n, p)| (n.to_string(), p.to_string())).collect()
}

async fn lease_holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NS);
    leases.get_opt(groupdocs_token_operator::leader::LEASE_NAME).await.ok()??.spec?.holder_identity
}

/// Records every token the target Secret holds, with the time it was first seen.
struct SecretWatch {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SecretWatch {
    fn start(client: kube::Client) -> SecretWatch {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, String)>::new()));
        let recorder = seen.clone();
        let task =
            tokio::spawn(async move {
                let secrets: Api<Secret> = Api::namespaced(client, APP_NS);
                loop {
                    let token =
                        secrets.get_opt("viewer-token").await.ok().flatten().and_then(|s| {
                            s.data?.get("access_token").map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        });
                    if let Some(token) = token {
                        let mut seen = recorder.lock().unwrap();
                        if seen.last().is_none_or(|(_, t)| *t != token) {
                            seen.push((Instant::now(), token));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        SecretWatch { seen, task }
    }

    fn tokens(&self) -> Vec<(Instant, String)> {
        self.seen.lock().unwrap().clone()
    }

    fn current(&self) -> Option<String> {
        self.seen.lock().unwrap().last().map(|(_, t)| t.clone())
    }
}

impl Drop for SecretWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ready_status(client: &kube::Client) -> Option<String> {
    let api: Api<groupdocs_token_operator::crd::GroupDocsCredential> = Api::namespaced(client.clone(), APP_NS);
    let cr = api.get_opt("viewer").await.ok()??;
    cr.status?.conditions.into_iter().find(|c| c.type_ == "Ready").map(|c| c.status)
}

fn pod_log(pod: &str) -> String {
    kubectl_ok(&["logs", "-n", APP_NS, pod]).unwrap_or_default()
}

/// Where the test's figures go besides stdout (captured by the test harness), so that
/// `.ci/run` can print them: `target/tmp/e2e_node_report.txt`.
const REPORT: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/e2e_node_report.txt");

fn report(line: &str) {
    use std::io::Write as _;
    println!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(REPORT) {
        let _ = writeln!(f, "e2e_node: {line}");
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_node_operator_image_renews_tokens_for_mounting_pods() {
    if !node_available() {
        return;
    }
    groupdocs_token_operator::install_crypto_provider();
    let _ = std::fs::remove_file(REPORT);
    let client = test_support::client().await;
    let host = host_ip();

    // The token server, over TLS for the operator (https is required off loopback) and plain
    // http for the busybox consumers, on the address pods reach the host on.
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = testenv::pki::serving_cert(std::slice::from_ref(&host)).unwrap();
    for (name, pem) in [("ca.crt", &ca), ("tls.crt", &cert), ("tls.key", &key)] {
        std::fs::write(certs.path().join(name), pem).unwrap();
    }
    let listen: SocketAddr = format!("{host}:0").parse().unwrap();
    let dev = DevServer::start(DevServerArgs {
        listen,
        tls_listen: Some(listen),
        tls_cert: Some(certs.path().join("tls.crt")),
        tls_key: Some(certs.path().join("tls.key")),
        expires_in: SHORT_LIFETIME_SECS,
        ..DevServerArgs::default()
    })
    .await
    .expect("start the token server");
    let token_url = dev.tls_token_url().unwrap();
    let token_origin = token_url.trim_end_matches("connect/token").to_string();
    let api = format!("http://{}/v2.0/viewer/formats", dev.addr());

    // Phase 1: helm install of the local image into a restricted namespace, two replicas.
    restricted_namespace(SYSTEM_NS);
    kubectl(&[
        "create",
        "configmap",
        "dev-token-ca",
        "-n",
        SYSTEM_NS,
        "--from-file",
        &format!("ca.crt={}", certs.path().join("ca.crt").display()),
    ]);
    let started = Instant::now();
    let base_values = [
        format!("image.repository={IMAGE_REPO}"),
        format!("image.tag={IMAGE_TAG}"),
        "image.pullPolicy=Never".to_string(),
        "replicaCount=2".to_string(),
        format!("operator.allowedTokenUrls={{{token_origin}}}"),
        "operator.allowPrivateNetworks=true".to_string(),
        "operator.extraCaConfigMap=dev-token-ca".to_string(),
        "operator.minRefreshInterval=5s".to_string(),
        "operator.logFormat=text".to_string(),
        "rolloutRestarts.enabled=true".to_string(),
        "rolloutRestarts.minInterval=5s".to_string(),
    ];
    let mut install: Vec<String> =
        ["install", RELEASE, CHART, "--namespace", SYSTEM_NS].iter().map(|s| s.to_string()).collect();
    for v in &base_values {
        install.extend(["--set".to_string(), v.clone()]);
    }
    let install_refs: Vec<&str> = install.iter().map(String::as_str).collect();
    run_helm(&install_refs);
    let rollout = kubectl_ok(&["rollout", "status", "deployment", RELEASE, "-n", SYSTEM_NS, "--timeout=180s"]);
    assert!(
        rollout.is_ok(),
        "operator pods not ready: {rollout:?}\n{}",
        kubectl_ok(&["describe", "pods", "-n", SYSTEM_NS]).unwrap_or_default()
    );
    report(&format!("operator: 2 pods Ready {:.1}s after helm install", started.elapsed().as_secs_f64()));
    let pods = operator_pods();
    assert_eq!(pods.len(), 2, "{pods:?}");
    let images = kubectl(&["get", "pods", "-n", SYSTEM_NS, "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
    assert!(images.split(' ').all(|i| i == format!("{IMAGE_REPO}:{IMAGE_TAG}")), "{images}");
    // The kubelet's readiness probe on /readyz is what made them Ready; the runtime was given
    // a read-only root filesystem, as the chart asks.
    let ready = kubectl(&[
        "get",
        "pods",
        "-n",
        SYSTEM_NS,
        "-o",
        "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\" \"}{end}",
    ]);
    assert_eq!(ready.trim(), "True True");
    assert_root_filesystems_read_only();

    // Phase 2: a credential, a consumer pod calling the API every second, and a Deployment
    // that reads the token only at start (restarted by the operator on renewal).
    restricted_namespace(APP_NS);
    kubectl(&[
        "create",
        "secret",
        "generic",
        "groupdocs-client",
        "-n",
        APP_NS,
        "--from-literal=client_id=demo-client-id",
        "--from-literal=client_secret=demo-client-secret",
    ]);
    kubectl(&["label", "secret", "groupdocs-client", "-n", APP_NS, "groupdocs.cloud/client-credentials=true"]);
    apply_json(&serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "startup-reader", "namespace": APP_NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "startup-reader"}},
            "template": {
                "metadata": {"labels": {"app": "startup-reader"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [restricted_container("reader", &startup_reader_script(&api))],
                    "volumes": token_volume(),
                },
            },
        },
    }));
    let watch = SecretWatch::start(client.clone());
    apply_json(&serde_json::json!({
        "apiVersion": "groupdocs.cloud/v1alpha1", "kind": "GroupDocsCredential",
        "metadata": {"name": "viewer", "namespace": APP_NS},
        "spec": {
            "clientSecretRef": {"name": "groupdocs-client"},
            "tokenUrl": token_url,
            "target": {"name": "viewer-token"},
            "renewBefore": RENEW_BEFORE,
            "rolloutRestartTargets": [{"kind": "Deployment", "name": "startup-reader"}],
        },
    }));
    wait_for("credential Ready", Duration::from_secs(60), || async {
        (ready_status(&client).await.as_deref() == Some("True")).then_some(())
    })
    .await;
    report(&format!("credential Ready {:.1}s after helm install", started.elapsed().as_secs_f64()));
    apply_json(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "consumer", "namespace": APP_NS},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [restricted_container("consumer", &consumer_script(&api))],
            "volumes": token_volume(),
        },
    }));
    kubectl(&["wait", "--for=condition=Ready", "pod/consumer", "-n", APP_NS, "--timeout=120s"]);

    let first = watch.tokens().len();
    wait_for(&format!("{RENEWALS} renewals"), Duration::from_secs(60 * (RENEWALS as u64 + 1)), || async {
        (watch.tokens().len() >= first + RENEWALS).then_some(())
    })
    .await;
    // The last renewal reaches the pod before its log is read.
    let last = fingerprint(&watch.current().unwrap());
    wait_for("the consumer using the newest token", Duration::from_secs(90), || async {
        pod_log("consumer").contains(&format!(" ok {last}")).then_some(())
    })
    .await;

    let tokens = watch.tokens();
    let consumer = pod_log("consumer");
    let lines: Vec<(u64, bool, String)> = consumer
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((f.next()?.parse().ok()?, f.next()? == "ok", f.next()?.to_string()))
        })
        .collect();
    let failed = lines.iter().filter(|(_, ok, _)| !ok).count();
    // One call a second, from before the first counted renewal to after the last: at least the
    // RENEWALS - 1 whole renewal intervals between them (each at least the lifetime less
    // renewBefore less 5% jitter, 27 s), less a few seconds of pod scheduling slack. (The span
    // before the first renewal varies from 0 to one interval, so no tighter bound holds.)
    let min_calls = (RENEWALS - 1) * 25;
    assert!(lines.len() >= min_calls, "the consumer made {} calls:\n{consumer}", lines.len());
    assert_eq!(failed, 0, "failed calls with the mounted token:\n{consumer}");
    // Propagation: from the Secret's change (seen by the test) to the pod's first call with it.
    let now_unix = jiff::Timestamp::now().as_second() as f64;
    let now = Instant::now();
    let mut delays: Vec<f64> = Vec::new();
    for (seen_at, token) in tokens.iter().skip(1) {
        let written_unix = now_unix - now.duration_since(*seen_at).as_secs_f64();
        let fp = fingerprint(token);
        let first_use = lines.iter().find(|(_, _, f)| *f == fp).map(|(t, _, _)| *t as f64);
        let first_use = first_use.unwrap_or_else(|| panic!("the pod never used token {fp}:\n{consumer}"));
        delays.push((first_use - written_unix).max(0.0));
    }
    delays.sort_by(f64::total_cmp);
    report(&format!(
        "propagation (Secret written -> file changed in the pod, {} renewals, kubelet syncFrequency {}): p50 {:.1}s, max {:.1}s; {} calls, 0 failed",
        delays.len(),
        testenv::node::SYNC_FREQUENCY,
        percentile(&delays, 0.5),
        percentile(&delays, 1.0),
        lines.len()
    ));

    // The startup reader was restarted onto the current token.
    let current = fingerprint(&watch.current().unwrap());
    wait_for("a startup-reader pod that started with the current token", Duration::from_secs(90), || async {
        let pods = kubectl_ok(&["get", "pods", "-n", APP_NS, "-l", "app=startup-reader", "-o", "name"]).ok()?;
        pods.lines()
            .map(|p| p.trim_start_matches("pod/"))
            .any(|p| pod_log(p).contains(&format!("started with {current}")))
            .then_some(())
    })
    .await;
    let restarts = kubectl(&[
        "get",
        "deployment",
        "startup-reader",
        "-n",
        APP_NS,
        "-o",
        "jsonpath={.spec.template.metadata.annotations}",
    ]);
    assert!(
        restarts.contains("groupdocs.cloud/restarted-at"),
        "the operator did not restart startup-reader: {restarts}"
    );
    let stats = dev.stats();
    assert_eq!(stats.api_calls_unauthorized, 0, "{stats:?}");
    // One token request per renewal, none duplicated: every issued token reached the Secret.
    let seen: BTreeSet<String> = watch.tokens().into_iter().map(|(_, t)| t).collect();
    let issued = dev.issued_tokens();
    assert!(issued.iter().all(|t| seen.contains(t)), "{} issued, {} seen in the Secret", issued.len(), seen.len());

    // Phase 3: leader failover. A day-long token first, so no renewal is due meanwhile.
    dev.set_expires_in(86400);
    let before_force = dev.stats().token_requests;
    force_refresh("long-token");
    wait_for("the day-long token", Duration::from_secs(30), || async {
        (dev.stats().token_requests == before_force + 1
            && watch.current().as_deref() == dev.issued_tokens().last().map(String::as_str))
        .then_some(())
    })
    .await;
    let requests = dev.stats().token_requests;
    let leader = lease_holder(&client).await.expect("a lease holder");
    assert!(operator_pods().iter().any(|(p, _)| *p == leader), "the leader {leader} is not an operator pod");
    let handover = Instant::now();
    kubectl(&["delete", "pod", &leader, "-n", SYSTEM_NS, "--wait=false"]);
    let new_leader = wait_for("a new leader", LEASE_DURATION + Duration::from_secs(15), || async {
        lease_holder(&client).await.filter(|h| *h != leader)
    })
    .await;
    let took = handover.elapsed();
    report(&format!(
        "leader failover: {leader} -> {new_leader} in {:.1}s (lease duration {LEASE_DURATION:?})",
        took.as_secs_f64()
    ));
    assert!(took <= LEASE_DURATION, "handover took {took:?}");
    // A quiet window: the new leader has synced and reconciled (it is Ready) and must not
    // have asked for the token it finds in the Secret.
    wait_for("the new leader Ready", Duration::from_secs(60), || async {
        let ready = kubectl_ok(&[
            "get",
            "pod",
            &new_leader,
            "-n",
            SYSTEM_NS,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .ok()?;
        (ready.trim() == "True").then_some(())
    })
    .await;
    // Proof that it looked: its own reconcile counter, read through the API server's proxy.
    let metrics_path = format!("/api/v1/namespaces/{SYSTEM_NS}/pods/{new_leader}:8080/proxy/metrics");
    wait_for("the new leader's first reconciles", Duration::from_secs(60), || async {
        let metrics = kubectl_ok(&["get", "--raw", &metrics_path]).ok()?;
        (test_support::reconciles_in(&metrics, |result| result == "Ok") >= 1).then_some(())
    })
    .await;
    assert_eq!(dev.stats().token_requests, requests, "the new leader requested a token it already had");
    force_refresh("after-failover");
    wait_for("a renewal by the new leader", Duration::from_secs(30), || async {
        (dev.stats().token_requests == requests + 1).then_some(())
    })
    .await;
    kubectl_ok(&["rollout", "status", "deployment", RELEASE, "-n", SYSTEM_NS, "--timeout=120s"]).unwrap();

    // Phase 4: helm upgrade rolls both pods with a changed value: no token request, Ready
    // never False.
    let requests = dev.stats().token_requests;
    let mut upgrade: Vec<String> =
        ["upgrade", RELEASE, CHART, "--namespace", SYSTEM_NS].iter().map(|s| s.to_string()).collect();
    for v in base_values.iter().chain([&"operator.logLevel=debug".to_string()]) {
        upgrade.extend(["--set".to_string(), v.clone()]);
    }
    let sampler = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut samples: BTreeMap<String, u32> = BTreeMap::new();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                let s = ready_status(&client).await.unwrap_or_else(|| "missing".into());
                *samples.entry(s).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            samples
        })
    };
    let before_pods: BTreeSet<String> = operator_pods().into_iter().map(|(p, _)| p).collect();
    let upgrade_refs: Vec<&str> = upgrade.iter().map(String::as_str).collect();
    run_helm(&upgrade_refs);
    kubectl_ok(&["rollout", "status", "deployment", RELEASE, "-n", SYSTEM_NS, "--timeout=180s"]).unwrap();
    // The last old pod may still be terminating when the rollout reports success.
    let after_pods = wait_for("the old operator pods gone", Duration::from_secs(60), || async {
        let pods: BTreeSet<String> = operator_pods().into_iter().map(|(p, _)| p).collect();
        (pods.len() == 2 && before_pods.is_disjoint(&pods)).then_some(pods)
    })
    .await;
    wait_for("a leader after the upgrade", Duration::from_secs(30), || async {
        lease_holder(&client).await.filter(|h| after_pods.contains(h))
    })
    .await;
    let samples = sampler.await.unwrap();
    report(&format!("helm upgrade: Ready samples every 250 ms over 60 s: {samples:?}"));
    assert_eq!(samples.keys().collect::<Vec<_>>(), vec!["True"], "Ready was not always True: {samples:?}");
    assert_eq!(dev.stats().token_requests, requests, "the upgraded operator requested a token");

    // Phase 5: helm uninstall keeps the CRD, the credentials and the token Secrets.
    run_helm(&["uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait"]);
    kubectl(&["get", "crd", "groupdocscredentials.groupdocs.cloud"]);
    kubectl(&["get", "gdc", "viewer", "-n", APP_NS]);
    kubectl(&["get", "secret", "viewer-token", "-n", APP_NS]);
    assert_eq!(dev.stats().api_calls_unauthorized, 0);
}

/// Asks the operator to renew now (once per new annotation value).
fn force_refresh(value: &str) {
    let annotation = format!("groupdocs.cloud/refresh-requested-at={value}");
    kubectl(&["annotate", "gdc", "viewer", "-n", APP_NS, &annotation, "--overwrite"]);
}

/// Asks the node's containerd for the operator containers' OCI specs.
fn assert_root_filesystems_read_only() {
    if std::env::var_os(testenv::EXISTING_CLUSTER_ENV).is_some_and(|v| v == "1") {
        return; // another cluster's runtime is not ours to inspect
    }
    let socket = testenv::node::Layout::new(&test_support::control_plane().dir).containerd_socket();
    let ctr = |args: &[&str]| {
        let out = std::process::Command::new("ctr")
            .args(["--address", socket.to_str().unwrap(), "--namespace", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr");
        assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ids = ctr(&["containers", "ls", "-q", "labels.\"io.kubernetes.container.name\"==operator"]);
    let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
    assert!(!ids.is_empty(), "no operator container in the node's runtime");
    for id in ids {
        let info: serde_json::Value = serde_json::from_str(&ctr(&["containers", "info", id])).unwrap();
        assert_eq!(info["Spec"]["root"]["readonly"], true, "container {id}: {}", info["Spec"]["root"]);
        assert_eq!(info["Spec"]["process"]["user"]["uid"], 65532, "container {id}");
    }
}
