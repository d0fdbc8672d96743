//! `make bench`: the operator at scale on a local control plane and the development token
//! server (20 ms latency). The operator runs as the chart's ServiceAccount, so the API
//! server's priority and fairness limits apply to it as in production. Writes
//! `bench/results/latest.{json,md}` and two SVG plots. Not part of `make test`.
//!
//! Environment: `BENCH_SIZES` (default `100,1000,10000`), `BENCH_IDLE_SECS` (300),
//! `BENCH_UNRELATED` (30000), `BENCH_NEW` (100), `BENCH_LOG_LEVEL` (warn),
//! `BENCH_OPERATOR_WRAPPER` (a profiler command to run the operator under),
//! `BENCH_WAVE_N` (1000 credentials over N/10 clients; 0 skips the renewal wave),
//! `BENCH_WAVE_LIFETIME_SECS` (120), `BENCH_RESULTS_DIR` (bench/results), `BENCH_OPERATOR_BIN`
//! (target/release/groupdocs-token-operator).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use groupdocs_dev_token_server::{DevServer, DevServerArgs};
use groupdocs_token_operator::conditions;
use groupdocs_token_operator::crd::GroupDocsCredential;
use groupdocs_token_operator::redact::Sensitive;
use groupdocs_token_operator::target::{self, IssuedFor};
use groupdocs_token_operator::token::Token;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::{Value, json};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    groupdocs_token_operator::install_crypto_provider();
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let idle_secs: u64 = env_or("BENCH_IDLE_SECS", 300);
    let unrelated: usize = env_or("BENCH_UNRELATED", 30_000);
    let new_crs: usize = env_or("BENCH_NEW", 100);

    let dir = std::env::temp_dir().join(format!("gdto-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = testenv::ControlPlane::start(&dir, testenv::Lifetime::Attached).expect("control plane");
    let kubectl = |args: &[&str]| {
        let out = cp.kubectl_run(args);
        out.unwrap_or_else(|e| panic!("{e}"))
    };
    kubectl(&["apply", "--server-side", "-f", &format!("{ROOT}/deploy/manifests/groupdocs-token-operator.yaml")]);
    kubectl(&["wait", "--for=condition=Established", "crd/groupdocscredentials.groupdocs.cloud"]);
    let sa_kubeconfig = service_account_kubeconfig(&cp, &dir);
    let admin = client(cp.kubeconfig()).await;
    let sa = client(&sa_kubeconfig).await;
    let dev = DevServer::start(DevServerArgs { latency_ms: 20, ..Default::default() }).await.unwrap();
    let mut report = Report::default();
    let operator_bin = std::env::var("BENCH_OPERATOR_BIN")
        .map_or_else(|_| PathBuf::from(format!("{ROOT}/target/release/groupdocs-token-operator")), PathBuf::from);
    eprintln!("bench: sizes {sizes:?}, idle {idle_secs}s, {unrelated} unrelated Secrets, {new_crs} new CRs");

    let mut last: Option<(String, Operator)> = None;
    for &n in &sizes {
        let ns = format!("bench-{n}");
        create_namespace(&admin, &ns).await;
        let clients = (n / 10).max(1);
        for c in 0..clients {
            dev.set_client(&format!("client-{c}"), &format!("secret-{c}"));
        }
        create_client_secrets(&admin, &ns, clients).await;
        if let Some((_, mut op)) = last.take() {
            op.stop();
        }
        // Cold start: N credentials exist, then the operator starts.
        create_credentials(&admin, &ns, n, clients, &dev).await;
        let mut row = Row { n, clients, ..Row::default() };
        let api_before = api_requests(&cp);
        let tokens_before = dev.stats().token_requests;
        let watch = watch_ready(&admin, &ns, n);
        let started = Instant::now();
        let mut op = Operator::start(&operator_bin, &sa_kubeconfig, &ns, &dir, &dev);
        let cpu_before = 0.0;
        let ready_at = watch.await;
        let all_ready = started.elapsed();
        let latencies: Vec<Duration> = ready_at.iter().map(|t| t.duration_since(started)).collect();
        row.cold_start_s = all_ready.as_secs_f64();
        (row.p50_ms, row.p99_ms) = percentiles(&latencies);
        row.token_requests = dev.stats().token_requests - tokens_before;
        row.api_requests = diff(&api_requests(&cp), &api_before);
        row.peak_rss_mib = op.peak_rss_mib();
        row.cpu_s = op.cpu_seconds() - cpu_before;
        eprintln!("bench: N={n}: all Ready in {:.1}s, p50 {} ms, p99 {} ms", row.cold_start_s, row.p50_ms, row.p99_ms);

        // Idle: nothing to do, nothing may be written or fetched.
        let api_before = api_requests(&cp);
        let tokens_before = dev.stats().token_requests;
        let cpu_before = op.cpu_seconds();
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        row.idle_writes = writes(&diff(&api_requests(&cp), &api_before));
        row.idle_token_requests = dev.stats().token_requests - tokens_before;
        row.idle_cpu_s = op.cpu_seconds() - cpu_before;

        // Restart with valid tokens: zero requests, zero writes.
        op.stop();
        let api_before = api_requests(&cp);
        let tokens_before = dev.stats().token_requests;
        let restarted = Instant::now();
        let op = Operator::start(&operator_bin, &sa_kubeconfig, &ns, &dir, &dev);
        op.wait_reconciled(n).await;
        row.restart_s = restarted.elapsed().as_secs_f64();
        row.restart_peak_rss_mib = op.peak_rss_mib();
        row.restart_writes = writes(&diff(&api_requests(&cp), &api_before));
        row.restart_token_requests = dev.stats().token_requests - tokens_before;

        // The floor: the same writes by a plain parallel client, as the same ServiceAccount.
        row.floor_s = floor(&admin, &sa, n, &dev).await.as_secs_f64();
        row.ratio = row.cold_start_s / row.floor_s;
        eprintln!("bench: N={n}: floor {:.1}s, ratio {:.2}", row.floor_s, row.ratio);
        report.rows.push(row);
        last = Some((ns, op));
    }

    let wave_n: usize = env_or("BENCH_WAVE_N", 1000);
    if wave_n > 0 {
        let lifetime = Duration::from_secs(env_or("BENCH_WAVE_LIFETIME_SECS", 120));
        report.wave = Some(renewal_wave(&admin, &sa_kubeconfig, &operator_bin, &dir, wave_n, lifetime).await);
    }

    if let Some((ns, mut op)) = last.take() {
        // 30,000 unrelated Secrets: the operator caches only labelled ones.
        let rss_before = op.rss_mib();
        create_unrelated_secrets(&admin, unrelated).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        report.unrelated = Some((unrelated, rss_before, op.rss_mib()));
        // New credentials, one a second, while the largest population exists.
        let mut latencies = Vec::new();
        for i in 0..new_crs {
            let name = format!("late-{i}");
            let start = Instant::now();
            create_credential(&admin, &ns, &name, &format!("client-{}", i % 10), &dev).await;
            wait_ready(&admin, &ns, &name).await;
            latencies.push(start.elapsed());
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(start.elapsed())).await;
        }
        report.new_cr = Some((new_crs, percentiles(&latencies)));
        op.stop();
    }
    let results = std::env::var("BENCH_RESULTS_DIR").unwrap_or_else(|_| format!("{ROOT}/bench/results"));
    report.write(Path::new(&results), idle_secs);
    drop(cp);
}

#[derive(Default, Debug)]
struct Row {
    n: usize,
    clients: usize,
    cold_start_s: f64,
    p50_ms: u128,
    p99_ms: u128,
    token_requests: u64,
    api_requests: BTreeMap<String, f64>,
    peak_rss_mib: f64,
    cpu_s: f64,
    idle_writes: f64,
    idle_token_requests: u64,
    idle_cpu_s: f64,
    restart_s: f64,
    restart_writes: f64,
    restart_token_requests: u64,
    restart_peak_rss_mib: f64,
    floor_s: f64,
    ratio: f64,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    unrelated: Option<(usize, f64, f64)>,
    new_cr: Option<(usize, (u128, u128))>,
    wave: Option<Wave>,
}

impl Report {
    fn write(&self, dir: &Path, idle_secs: u64) {
        std::fs::create_dir_all(dir).unwrap();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "n": r.n, "clients": r.clients, "cold_start_s": r.cold_start_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                    "token_requests": r.token_requests, "api_requests": r.api_requests, "peak_rss_mib": r.peak_rss_mib,
                    "cpu_s": r.cpu_s, "idle_secs": idle_secs, "idle_writes": r.idle_writes,
                    "idle_token_requests": r.idle_token_requests, "idle_cpu_s": r.idle_cpu_s,
                    "restart_s": r.restart_s, "restart_writes": r.restart_writes,
                    "restart_token_requests": r.restart_token_requests, "restart_peak_rss_mib": r.restart_peak_rss_mib, "floor_s": r.floor_s, "ratio": r.ratio,
                })
            })
            .collect();
        let doc = json!({
            "date": jiff::Timestamp::now().to_string(),
            "machine": format!("{} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)),
            "rows": rows,
            "unrelated_secrets": self.unrelated.map(|(n, before, after)| json!({"count": n, "rss_before_mib": before, "rss_after_mib": after})),
            "new_crs": self.new_cr.map(|(n, (p50, p99))| json!({"count": n, "p50_ms": p50, "p99_ms": p99})),
            "renewal_wave": self.wave.as_ref().map(Wave::to_json),
        });
        std::fs::write(dir.join("latest.json"), serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();

        let mut md = String::from(
            "| N CRs | clients | all Ready | p50 | p99 | token requests | peak RSS | CPU | floor | ratio | idle writes / token requests / CPU | restart: time, writes, token requests, peak RSS |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            md.push_str(&format!(
                "| {} | {} | {:.1} s | {} ms | {} ms | {} | {:.1} MiB | {:.1} s | {:.1} s | {:.2} | {} / {} / {:.2} s in {idle_secs} s | {:.1} s, {}, {}, {:.1} MiB |\n",
                r.n, r.clients, r.cold_start_s, r.p50_ms, r.p99_ms, r.token_requests, r.peak_rss_mib, r.cpu_s,
                r.floor_s, r.ratio, r.idle_writes, r.idle_token_requests, r.idle_cpu_s, r.restart_s, r.restart_writes,
                r.restart_token_requests, r.restart_peak_rss_mib
            ));
        }
        if let Some((n, before, after)) = self.unrelated {
            md.push_str(&format!(
                "\n{n} unrelated Secrets: operator RSS {before:.1} MiB before, {after:.1} MiB after.\n"
            ));
        }
        if let Some((n, (p50, p99))) = self.new_cr {
            md.push_str(&format!("\n{n} new CRs, one a second, beside the largest population: creation-to-Ready p50 {p50} ms, p99 {p99} ms.\n"));
        }
        if let Some(wave) = &self.wave {
            md.push_str(&wave.to_markdown());
        }
        std::fs::write(dir.join("latest.md"), md).unwrap();
        let points = |f: &dyn Fn(&Row) -> f64| self.rows.iter().map(|r| (r.n as f64, f(r))).collect::<Vec<_>>();
        std::fs::write(
            dir.join("time-to-ready.svg"),
            svg(
                "time until all Ready (s) over N",
                &points(&|r| r.cold_start_s),
                &points(&|r| r.floor_s),
                "operator",
                "floor",
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("memory.svg"),
            svg("operator peak RSS (MiB) over N", &points(&|r| r.peak_rss_mib), &[], "peak RSS", ""),
        )
        .unwrap();
        eprintln!("bench: results in {}", dir.display());
        print!("{}", std::fs::read_to_string(dir.join("latest.md")).unwrap());
    }
}

/// A small line chart with a logarithmic N axis.
fn svg(title: &str, a: &[(f64, f64)], b: &[(f64, f64)], a_name: &str, b_name: &str) -> String {
    let (w, h, m) = (640.0, 360.0, 50.0);
    let max_y = a.iter().chain(b).map(|p| p.1).fold(1e-9, f64::max) * 1.1;
    let (min_x, max_x) = a.iter().map(|p| p.0.log10()).fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let span = (max_x - min_x).max(1e-9);
    let xy = |p: &(f64, f64)| (m + (p.0.log10() - min_x) / span * (w - 2.0 * m), h - m - p.1 / max_y * (h - 2.0 * m));
    let line = |pts: &[(f64, f64)], color: &str| {
        let path: Vec<String> = pts
            .iter()
            .map(|p| {
                let (x, y) = xy(p);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let dots: String = pts.iter().map(|p| { let (x, y) = xy(p); format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{color}\"/><text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\">{:.1}</text>", y - 6.0, p.1) }).collect();
        format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>{dots}", path.join(" "))
    };
    let labels: String = a
        .iter()
        .map(|p| {
            let (x, _) = xy(p);
            format!(
                "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">N={}</text>",
                h - m + 18.0,
                p.0
            )
        })
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{m}\" y=\"25\" font-size=\"14\">{title}</text><line x1=\"{m}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/><line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{0}\" stroke=\"black\"/>{labels}{2}{3}<text x=\"{4}\" y=\"45\" font-size=\"11\" fill=\"#1f77b4\">{a_name}</text><text x=\"{4}\" y=\"60\" font-size=\"11\" fill=\"#ff7f0e\">{b_name}</text></svg>\n",
        h - m,
        w - m,
        line(a, "#1f77b4"),
        if b.is_empty() { String::new() } else { line(b, "#ff7f0e") },
        w - 150.0
    )
}

fn percentiles(samples: &[Duration]) -> (u128, u128) {
    let mut ms: Vec<u128> = samples.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    let at = |q: f64| ms.get(((ms.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
    (at(0.50), at(0.99))
}

async fn client(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    config.read_timeout = Some(Duration::from_secs(300));
    Client::try_from(config).unwrap()
}

fn service_account_kubeconfig(cp: &testenv::ControlPlane, dir: &Path) -> PathBuf {
    let token = cp
        .kubectl_run(&[
            "create",
            "token",
            "groupdocs-token-operator",
            "-n",
            "groupdocs-token-operator",
            "--duration=24h",
        ])
        .unwrap();
    let path = dir.join("sa-kubeconfig");
    std::fs::write(&path, cp.kubectl_run(&["config", "view", "--raw", "--minify"]).unwrap()).unwrap();
    let p = path.to_str().unwrap();
    cp.kubectl_run(&["--kubeconfig", p, "config", "set-credentials", "sa", "--token", token.trim()]).unwrap();
    cp.kubectl_run(&["--kubeconfig", p, "config", "set-context", "--current", "--user", "sa"]).unwrap();
    path
}

async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    let _ = api.create(&PostParams::default(), &ns).await;
}

async fn create_client_secrets(client: &Client, ns: &str, n: usize) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |c| {
            let api = api.clone();
            async move {
                let s: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("client-{c}"), "labels": {"groupdocs.cloud/client-credentials": "true"}},
                    "stringData": {"client_id": format!("client-{c}"), "client_secret": format!("secret-{c}")},
                }))
                .unwrap();
                api.create(&PostParams::default(), &s).await.unwrap();
            }
        })
        .await;
}

async fn create_unrelated_secrets(client: &Client, n: usize) {
    create_namespace(client, "unrelated").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), "unrelated");
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let api = api.clone();
            async move {
                let s: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("unrelated-{i}")},
                    "stringData": {"data": "x".repeat(512)},
                }))
                .unwrap();
                let _ = api.create(&PostParams::default(), &s).await;
            }
        })
        .await;
}

async fn create_credential(client: &Client, ns: &str, name: &str, secret: &str, dev: &DevServer) {
    let api: Api<GroupDocsCredential> = Api::namespaced(client.clone(), ns);
    let cr: GroupDocsCredential = serde_json::from_value(json!({
        "apiVersion": "groupdocs.cloud/v1alpha1", "kind": "GroupDocsCredential",
        "metadata": {"name": name},
        "spec": {"clientSecretRef": {"name": secret}, "tokenUrl": dev.token_url()},
    }))
    .unwrap();
    api.create(&PostParams::default(), &cr).await.unwrap();
}

fn is_ready(cr: &GroupDocsCredential) -> bool {
    cr.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_ready(client: &Client, ns: &str, name: &str) {
    let api: Api<GroupDocsCredential> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !api.get(name).await.map(|cr| is_ready(&cr)).unwrap_or(false) {
        assert!(Instant::now() < deadline, "{name} not Ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `n` credentials over `clients` client Secrets.
async fn create_credentials(client: &Client, ns: &str, n: usize, clients: usize, dev: &DevServer) {
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| async move {
            create_credential(client, ns, &format!("cr-{i}"), &format!("client-{}", i % clients), dev).await;
        })
        .await;
    eprintln!("bench: {n} credentials created in {:.1}s", started.elapsed().as_secs_f64());
}

/// Watches until `n` credentials are Ready; returns when each was first seen Ready.
fn watch_ready(client: &Client, ns: &str, n: usize) -> impl std::future::Future<Output = Vec<Instant>> {
    let api: Api<GroupDocsCredential> = Api::namespaced(client.clone(), ns);
    let task = tokio::spawn(async move {
        let mut ready: HashMap<String, Instant> = HashMap::new();
        let stream = watcher(api, watcher::Config::default()).applied_objects();
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(cr)) = stream.try_next().await {
            if is_ready(&cr) {
                ready.entry(cr.metadata.name.clone().unwrap_or_default()).or_insert_with(Instant::now);
                if ready.len() >= n {
                    break;
                }
            }
        }
        ready.into_values().collect::<Vec<_>>()
    });
    async move {
        let ready =
            tokio::time::timeout(Duration::from_secs(1800), task).await.expect("all Ready within 30 min").unwrap();
        assert_eq!(ready.len(), n);
        ready
    }
}

/// N Secret creates, N status patches and N events by a plain parallel client (concurrency
/// 16, like the operator's default), on credentials the operator does not watch. The objects
/// are the operator's own: Secrets rendered by its code (token of a real token's length,
/// ownerReference, labels, annotations) and a status with its three conditions, so the API
/// server and the garbage collector do the same work; a watch on the credentials runs as
/// during the operator's run.
async fn floor(admin: &Client, sa: &Client, n: usize, dev: &DevServer) -> Duration {
    let ns = format!("floor-{n}");
    create_namespace(admin, &ns).await;
    let crs: Api<GroupDocsCredential> = Api::namespaced(admin.clone(), &ns);
    let created: Vec<GroupDocsCredential> = futures::stream::iter(0..n)
        .map(|i| {
            let crs = crs.clone();
            async move {
                let cr: GroupDocsCredential = serde_json::from_value(json!({
                    "apiVersion": "groupdocs.cloud/v1alpha1", "kind": "GroupDocsCredential",
                    "metadata": {"name": format!("f-{i}")},
                    "spec": {"clientSecretRef": {"name": format!("client-{}", i % 10)}, "tokenUrl": dev.token_url()},
                }))
                .unwrap();
                crs.create(&PostParams::default(), &cr).await.unwrap()
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let issued_at = jiff::Timestamp::now();
    let token = Token {
        access_token: Sensitive::new("x".repeat(dev_token_length(dev).await)),
        token_type: "Bearer".into(),
        issued_at,
        expires_at: issued_at + jiff::SignedDuration::from_hours(24),
    };
    let issued_for = IssuedFor {
        token_url: dev.token_url(),
        client_id: "client-0".into(),
        scope: None,
        client_secret_version: "1".into(),
    };
    let observer = watch_ready(admin, &ns, n);
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), &ns);
    let status: Api<GroupDocsCredential> = Api::namespaced(sa.clone(), &ns);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(sa.clone(), &ns);
    let start = Instant::now();
    futures::stream::iter(created)
        .for_each_concurrent(16, |cr| {
            let (secrets, status, events, ns) = (secrets.clone(), status.clone(), events.clone(), ns.clone());
            let (token, issued_for) = (token.clone(), issued_for.clone());
            async move {
                let name = cr.metadata.name.clone().unwrap();
                secrets.create(&PostParams::default(), &target::render(&cr, &token, &issued_for)).await.unwrap();
                let patch = json!({"apiVersion": "groupdocs.cloud/v1alpha1", "kind": "GroupDocsCredential", "status": ready_status(&cr, &token)});
                status.patch_status(&name, &PatchParams::apply("floor").force(), &Patch::Apply(&patch)).await.unwrap();
                let ev: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
                    "metadata": {"name": format!("{name}.floor")}, "eventTime": jiff::Timestamp::now().to_string(),
                    "reportingController": "floor", "reportingInstance": "floor", "action": "Reconcile", "reason": "TokenIssued",
                    "note": format!("token written to Secret {name}-token"),
                    "type": "Normal", "regarding": {"kind": "GroupDocsCredential", "namespace": ns, "name": name},
                }))
                .unwrap();
                events.create(&PostParams::default(), &ev).await.unwrap();
            }
        })
        .await;
    observer.await;
    start.elapsed()
}

/// The length of the development token server's tokens, so the floor writes as many bytes.
async fn dev_token_length(dev: &DevServer) -> usize {
    dev.issued_tokens().first().map_or(600, String::len)
}

/// A status as the operator writes it for a freshly issued token.
fn ready_status(cr: &GroupDocsCredential, token: &Token) -> Value {
    let now = jiff::Timestamp::now();
    let facts = conditions::Facts {
        generation: cr.metadata.generation,
        token_expires_at: Some(token.expires_at),
        outcome: conditions::Outcome::Issued,
        now,
        note: None,
    };
    let time = |t: jiff::Timestamp| jiff::Timestamp::from_second(t.as_second()).unwrap().to_string();
    json!({
        "observedGeneration": cr.metadata.generation,
        "conditions": conditions::conditions(&[], &facts),
        "expiresAt": time(token.expires_at), "lastRefreshTime": time(token.issued_at),
        "nextRefreshTime": time(token.expires_at - jiff::SignedDuration::from_hours(8)),
        "tokenFingerprint": token.access_token.fingerprint(), "failedAttempts": 0,
    })
}

/// `apiserver_request_total` summed by verb and resource.
fn api_requests(cp: &testenv::ControlPlane) -> BTreeMap<String, f64> {
    let text = cp.kubectl_run(&["get", "--raw", "/metrics"]).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |k: &str| line.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
        let resource = label("resource");
        if !["secrets", "groupdocscredentials", "events"].contains(&resource) {
            continue;
        }
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(format!(
            "{} {}{}",
            label("verb"),
            resource,
            if label("subresource").is_empty() { String::new() } else { format!("/{}", label("subresource")) }
        ))
        .or_default() += value;
    }
    out
}

fn diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn writes(requests: &BTreeMap<String, f64>) -> f64 {
    requests
        .iter()
        .filter(|(k, _)| {
            ["POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"].iter().any(|v| k.starts_with(v))
        })
        .fold(0.0, |sum, (_, v)| sum + v)
}

struct Operator {
    child: Child,
    metrics_port: u16,
    probe_port: u16,
}

impl Operator {
    /// `dev` is the token server: loopback URLs, like any other, need an allowed prefix.
    fn start(bin: &Path, kubeconfig: &Path, ns: &str, dir: &Path, dev: &DevServer) -> Operator {
        let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (metrics_port, probe_port) = (port(), port());
        // Logs outlive the control plane's directory, for a look after the run.
        let logs = std::env::temp_dir().join("gdto-bench-logs");
        let _ = dir;
        std::fs::create_dir_all(&logs).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("operator-{ns}.log")))
            .unwrap();
        // BENCH_OPERATOR_WRAPPER runs the operator under a profiler, e.g. "heaptrack -o /tmp/op".
        let wrapper = std::env::var("BENCH_OPERATOR_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        // Its own process group, so that stopping it also stops a wrapper's child.
        use std::os::unix::process::CommandExt;
        let child = command
            .process_group(0)
            .args(["run", "--watch-namespace", ns, "--allow-http-loopback"])
            .arg(format!("--allowed-token-url=http://{}/", dev.addr()))
            .args(["--log-level", &std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into())])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{metrics_port}"),
                "--probe-addr",
                &format!("127.0.0.1:{probe_port}"),
            ])
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the operator (make bench builds it)");
        Operator { child, metrics_port, probe_port }
    }

    async fn get(&self, port: u16, path: &str) -> Option<String> {
        let resp = reqwest_get(port, path).await?;
        Some(resp)
    }

    async fn wait_ready(&self) {
        for _ in 0..600 {
            if self.get(self.probe_port, "/readyz").await.is_some_and(|b| b == "ok") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operator not ready");
    }

    /// Waits until the operator has reconciled `n` credentials since it started.
    async fn wait_reconciled(&self, n: usize) {
        self.wait_ready().await;
        for _ in 0..36_000 {
            let text = self.get(self.metrics_port, "/metrics").await.unwrap_or_default();
            let done: f64 = text
                .lines()
                .filter(|l| l.starts_with("groupdocs_token_operator_reconciles_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if done >= n as f64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operator did not reconcile {n} credentials");
    }

    fn proc_status(&self, key: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn peak_rss_mib(&self) -> f64 {
        self.proc_status("VmHWM:")
    }

    fn rss_mib(&self) -> f64 {
        self.proc_status("VmRSS:")
    }

    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").args(["--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

async fn reqwest_get(port: u16, path: &str) -> Option<String> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// The renewal wave: credentials whose tokens live `lifetime` (a second development token
/// server), watched for two lifetimes after they are all Ready.
#[derive(Debug, Default)]
struct Wave {
    n: usize,
    clients: usize,
    lifetime_s: u64,
    observed_s: u64,
    /// Token changes seen in the Secrets, and Secrets that never changed.
    renewals: usize,
    not_renewed: usize,
    token_requests: u64,
    peak_requests_per_s: u64,
    mean_requests_per_s: f64,
    /// How long before expiry tokens were replaced: the least and the median.
    min_margin_s: f64,
    median_margin_s: f64,
    /// Samples (every 200 ms) in which some Secret held an expired token.
    expired_samples: usize,
    still_ready: usize,
}

impl Wave {
    fn to_json(&self) -> Value {
        json!({
            "n": self.n, "clients": self.clients, "lifetime_s": self.lifetime_s, "observed_s": self.observed_s,
            "renewals": self.renewals, "not_renewed": self.not_renewed, "token_requests": self.token_requests,
            "peak_requests_per_s": self.peak_requests_per_s, "mean_requests_per_s": self.mean_requests_per_s,
            "min_margin_s": self.min_margin_s, "median_margin_s": self.median_margin_s,
            "expired_samples": self.expired_samples, "still_ready": self.still_ready,
        })
    }

    fn to_markdown(&self) -> String {
        format!(
            "\nRenewal wave: {} credentials over {} clients, {} s tokens, watched {} s: {} renewals, {} Secrets never renewed, \
             {} token requests (peak {}/s, mean {:.2}/s), tokens replaced {:.0} s (least) / {:.0} s (median) before expiry, \
             {} samples with an expired token in a Secret, {} of {} Ready at the end.\n",
            self.n,
            self.clients,
            self.lifetime_s,
            self.observed_s,
            self.renewals,
            self.not_renewed,
            self.token_requests,
            self.peak_requests_per_s,
            self.mean_requests_per_s,
            self.min_margin_s,
            self.median_margin_s,
            self.expired_samples,
            self.still_ready,
            self.n
        )
    }
}

async fn renewal_wave(
    admin: &Client,
    sa_kubeconfig: &Path,
    bin: &Path,
    dir: &Path,
    n: usize,
    lifetime: Duration,
) -> Wave {
    let ns = "wave";
    let clients = (n / 10).max(1);
    let dev =
        DevServer::start(DevServerArgs { latency_ms: 20, expires_in: lifetime.as_secs() as i64, ..Default::default() })
            .await
            .unwrap();
    for c in 0..clients {
        dev.set_client(&format!("client-{c}"), &format!("secret-{c}"));
    }
    create_namespace(admin, ns).await;
    create_client_secrets(admin, ns, clients).await;
    create_credentials(admin, ns, n, clients, &dev).await;
    let ready = watch_ready(admin, ns, n);
    let mut op = Operator::start(bin, sa_kubeconfig, ns, dir, &dev);
    ready.await;
    eprintln!("bench: wave: {n} Ready; watching {} s", 2 * lifetime.as_secs());

    // Every token in every target Secret, as the watch shows them.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let held = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, (String, jiff::Timestamp)>::new()));
    let margins = std::sync::Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let watch = {
        let (held, margins) = (held.clone(), margins.clone());
        tokio::spawn(async move {
            let config = watcher::Config::default().labels("app.kubernetes.io/managed-by=groupdocs-token-operator");
            let mut stream = std::pin::pin!(watcher(secrets, config).applied_objects());
            while let Ok(Some(secret)) = stream.try_next().await {
                let read = |k: &str| {
                    secret.data.as_ref().and_then(|d| d.get(k)).map(|v| String::from_utf8_lossy(&v.0).into_owned())
                };
                let (Some(token), Some(expires)) = (read("access_token"), read("expires_at")) else { continue };
                let Ok(expires) = expires.parse::<jiff::Timestamp>() else { continue };
                let name = secret.metadata.name.clone().unwrap_or_default();
                let mut held = held.lock().unwrap();
                if let Some((old, old_expiry)) = held.get(&name)
                    && *old != token
                {
                    let margin = old_expiry.duration_since(jiff::Timestamp::now()).as_secs_f64();
                    margins.lock().unwrap().push(margin);
                }
                held.insert(name, (token, expires));
            }
        })
    };
    let tokens_before = dev.stats().token_requests;
    let observe = 2 * lifetime;
    let started = Instant::now();
    let (mut expired_samples, mut per_second, mut last_count, mut second) =
        (0, Vec::new(), tokens_before, Instant::now());
    while started.elapsed() < observe {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = jiff::Timestamp::now();
        if held.lock().unwrap().values().any(|(_, expires)| *expires <= now) {
            expired_samples += 1;
        }
        if second.elapsed() >= Duration::from_secs(1) {
            let count = dev.stats().token_requests;
            per_second.push(count - last_count);
            (last_count, second) = (count, Instant::now());
        }
    }
    watch.abort();
    let token_requests = dev.stats().token_requests - tokens_before;
    let mut margins = std::mem::take(&mut *margins.lock().unwrap());
    margins.sort_by(f64::total_cmp);
    let crs: Api<GroupDocsCredential> = Api::namespaced(admin.clone(), ns);
    let still_ready = crs.list(&Default::default()).await.unwrap().items.iter().filter(|cr| is_ready(cr)).count();
    op.stop();
    let distinct_renewed = {
        // A Secret whose token never changed still holds its first token.
        let first_tokens: std::collections::HashSet<String> = dev.issued_tokens().into_iter().take(clients).collect();
        held.lock().unwrap().values().filter(|(t, _)| first_tokens.contains(t)).count()
    };
    Wave {
        n,
        clients,
        lifetime_s: lifetime.as_secs(),
        observed_s: observe.as_secs(),
        renewals: margins.len(),
        not_renewed: distinct_renewed,
        token_requests,
        peak_requests_per_s: per_second.iter().copied().max().unwrap_or(0),
        mean_requests_per_s: token_requests as f64 / observe.as_secs_f64(),
        min_margin_s: margins.first().copied().unwrap_or(0.0),
        median_margin_s: margins.get(margins.len() / 2).copied().unwrap_or(0.0),
        expired_samples,
        still_ready,
    }
}
