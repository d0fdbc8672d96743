//! The development token server against the rules of the GroupDocs seed document
//! (`shared/seed/authenticating-api-requests.md`). No cluster needed.

use std::io::Read as _;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser as _;
use groupdocs_token_operator::cli::Cli;
use groupdocs_token_operator::devserver::{DevServer, DevServerArgs, Fault};
use groupdocs_token_operator::redact::Sensitive;
use serde_json::Value;

async fn server(args: DevServerArgs) -> DevServer {
    groupdocs_token_operator::install_crypto_provider();
    DevServer::start(args).await.unwrap()
}

async fn post(server: &DevServer, form: &[(&str, &str)]) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.token_url())
        .header("Accept", "application/json")
        .form(form)
        .send()
        .await
        .unwrap()
}

const GOOD: &[(&str, &str)] =
    &[("grant_type", "client_credentials"), ("client_id", "demo-client-id"), ("client_secret", "demo-client-secret")];
const BAD: &[(&str, &str)] =
    &[("grant_type", "client_credentials"), ("client_id", "demo-client-id"), ("client_secret", "wrong")];

fn claims(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "header.payload.signature");
    let decode = |p: &str| -> Value {
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    };
    (decode(parts[0]), decode(parts[1]))
}

#[tokio::test]
async fn issues_a_one_day_bearer_jwt() {
    let s = server(DevServerArgs::default()).await;
    let resp = post(&s, GOOD).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], 86400);
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    let (header, payload) = claims(token);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(payload["exp"].as_i64().unwrap() - payload["nbf"].as_i64().unwrap(), 86400);
    assert_eq!(payload["client_id"], "demo-client-id");
    assert_eq!(payload["iss"], "https://api.groupdocs.cloud");
    assert!(s.accepts(token));
    let tampered = format!("{}x", &token[..token.len() - 1]);
    assert!(!s.accepts(&tampered));
}

#[tokio::test]
async fn lifetime_is_configurable_as_the_vendor_also_shows_3600() {
    let s = server(DevServerArgs { expires_in: 3600, ..Default::default() }).await;
    let body: Value = post(&s, GOOD).await.json().await.unwrap();
    assert_eq!(body["expires_in"], 3600);
    let (_, payload) = claims(body["access_token"].as_str().unwrap());
    assert_eq!(payload["exp"].as_i64().unwrap() - payload["nbf"].as_i64().unwrap(), 3600);
}

#[tokio::test]
async fn bad_credentials_and_grants_are_rejected() {
    let s = server(DevServerArgs::default()).await;
    let resp = post(&s, BAD).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_client");
    let resp = post(
        &s,
        &[("grant_type", "password"), ("client_id", "demo-client-id"), ("client_secret", "demo-client-secret")],
    )
    .await;
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
    // HTTP Basic client authentication works too.
    let resp = reqwest::Client::new()
        .post(s.token_url())
        .basic_auth("demo-client-id", Some("demo-client-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn twenty_failures_in_a_minute_bring_a_ten_minute_cooldown() {
    // time scale 20: the 60 s window is 3 s (room for 21 requests on a loaded machine) and
    // the 600 s cooldown is 30 s.
    let s = server(DevServerArgs { time_scale: 20.0, ..Default::default() }).await;
    for i in 0..19 {
        assert_eq!(post(&s, BAD).await.status(), 400, "failure {}", i + 1);
    }
    assert_eq!(post(&s, GOOD).await.status(), 200, "19 failures are still allowed");
    assert_eq!(post(&s, BAD).await.status(), 400, "the 20th failure is answered, then the cooldown starts");
    let started = Instant::now();
    let resp = post(&s, GOOD).await;
    assert_eq!(resp.status(), 429, "even valid credentials wait out the cooldown");
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry_after, 30, "600 s scaled by 20");
    // Wait out the cooldown on a deadline, then the caller is served again.
    loop {
        let status = post(&s, GOOD).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(started.elapsed() < Duration::from_secs(45), "cooldown did not end");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(29), "the cooldown lasted {:?}", started.elapsed());
}

#[tokio::test]
async fn failures_outside_the_window_do_not_add_up() {
    let s = server(DevServerArgs { time_scale: 60.0, ..Default::default() }).await;
    for _ in 0..15 {
        post(&s, BAD).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // one scaled minute
    for _ in 0..15 {
        assert_eq!(post(&s, BAD).await.status(), 400);
    }
    assert_eq!(post(&s, GOOD).await.status(), 200);
}

#[tokio::test]
async fn protected_api_needs_a_valid_token() {
    let s = server(DevServerArgs::default()).await;
    let token = post(&s, GOOD).await.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    let call = |auth: Option<String>| {
        let mut req = reqwest::Client::new().get(format!("http://{}/v2.0/viewer/formats", s.addr()));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send()
    };
    assert_eq!(call(Some(format!("Bearer {token}"))).await.unwrap().status(), 200);
    assert_eq!(call(None).await.unwrap().status(), 401);
    assert_eq!(call(Some("Bearer nope".into())).await.unwrap().status(), 401);
    let stats = s.stats();
    assert_eq!((stats.api_calls_ok, stats.api_calls_unauthorized), (1, 2));
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let s = server(DevServerArgs { expires_in: 1, ..Default::default() }).await;
    let token = post(&s, GOOD).await.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.accepts(&token) {
        assert!(Instant::now() < deadline, "token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn faults_can_be_switched_on_and_off() {
    let s = server(DevServerArgs::default()).await;
    s.set_fault(Fault::Status { status: 503 });
    assert_eq!(post(&s, GOOD).await.status(), 503);
    s.set_fault(Fault::TooManyRequests { retry_after: Some("7".into()) });
    let resp = post(&s, GOOD).await;
    assert_eq!((resp.status().as_u16(), resp.headers()["retry-after"].to_str().unwrap()), (429, "7"));
    s.set_fault(Fault::Reset);
    assert!(reqwest::Client::new().post(s.token_url()).form(GOOD).send().await.is_err());
    s.set_fault(Fault::None);
    assert_eq!(post(&s, GOOD).await.status(), 200);
    assert_eq!(s.stats().faulted, 3);
}

#[tokio::test]
async fn serves_the_same_routes_over_tls_to_a_client_that_trusts_its_ca() {
    groupdocs_token_operator::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = testenv::pki::serving_cert(&["127.0.0.1".to_string()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    let s = server(DevServerArgs {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(dir.path().join("tls.crt")),
        tls_key: Some(dir.path().join("tls.key")),
        ..DevServerArgs::default()
    })
    .await;
    let url = s.tls_token_url().expect("a TLS listener");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = trusting.post(&url).form(GOOD).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(s.accepts(body["access_token"].as_str().unwrap()));
    // A client that does not trust the CA is refused at the handshake.
    assert!(reqwest::Client::new().post(&url).form(GOOD).send().await.is_err());
}

async fn admin(server: &DevServer, path: &str, auth: Option<&str>) -> reqwest::StatusCode {
    let url = format!("http://{}{path}", server.addr());
    let client = reqwest::Client::new();
    let mut req = if path == "/admin/stats" {
        client.get(url)
    } else {
        client.post(url).json(&serde_json::json!({"kind": "none"}))
    };
    if let Some(auth) = auth {
        req = req.header("Authorization", auth);
    }
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn admin_routes_answer_loopback_callers() {
    let s = server(DevServerArgs::default()).await;
    assert!(s.addr().ip().is_loopback());
    assert_eq!(admin(&s, "/admin/stats", None).await, 200);
    assert_eq!(admin(&s, "/admin/fault", None).await, 204);
    // The token route is not guarded.
    assert_eq!(post(&s, GOOD).await.status(), 200);
}

#[tokio::test]
async fn with_an_admin_token_admin_routes_need_it() {
    let s =
        server(DevServerArgs { admin_token: Some(Sensitive::new("adm1n-t0ken-value")), ..Default::default() }).await;
    for path in ["/admin/stats", "/admin/fault"] {
        assert_eq!(admin(&s, path, None).await, 401, "{path} without a token");
        assert_eq!(admin(&s, path, Some("Basic YTpi")).await, 401, "{path} without a bearer token");
        assert_eq!(admin(&s, path, Some("Bearer wrong")).await, 403, "{path} with a wrong token");
        assert_eq!(admin(&s, path, Some("Bearer adm1n-t0ken-value-")).await, 403, "{path} with a longer token");
    }
    assert_eq!(admin(&s, "/admin/stats", Some("Bearer adm1n-t0ken-value")).await, 200);
    assert_eq!(admin(&s, "/admin/fault", Some("Bearer adm1n-t0ken-value")).await, 204);
    // Token requests and the protected API know nothing of the admin token.
    assert_eq!(post(&s, GOOD).await.status(), 200);
    assert_eq!(s.stats().faulted, 0);
}

#[test]
fn debug_output_shows_no_client_secret_nor_admin_token() {
    let cli = Cli::try_parse_from([
        "groupdocs-token-operator",
        "dev-server",
        "--client",
        "first-id:first-s3cret,second-id:second-s3cret",
        "--client",
        "no-colon-s3cret",
        "--admin-token",
        "adm1n-t0ken-value",
    ])
    .unwrap();
    let groupdocs_token_operator::cli::Command::DevServer(args) = &cli.command else { panic!("dev-server") };
    assert_eq!(args.admin_token.as_ref().map(Sensitive::expose), Some("adm1n-t0ken-value"));
    for shown in [format!("{args:?}"), format!("{args:#?}"), format!("{cli:?}")] {
        for secret in ["s3cret", "adm1n-t0ken-value"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("first-id") && shown.contains("second-id"), "client ids still shown: {shown}");
    }
    let defaults = format!("{:?}", DevServerArgs::default());
    assert!(!defaults.contains("demo-client-secret"), "{defaults}");
}

const OPERATOR: &str = env!("CARGO_BIN_EXE_groupdocs-token-operator");

/// Runs `cmd` with stderr piped until it exits, or until `enough` holds for what it wrote to
/// stderr (then it is killed); fails the test after `deadline`. Returns the exit status
/// (`None` when killed) and stderr.
fn run_until(mut cmd: Command, deadline: Duration, enough: impl Fn(&str) -> bool) -> (Option<ExitStatus>, Vec<u8>) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start");
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut out = Vec::new();
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(chunk) => out.extend(chunk),
            // The pipe closed: the process has exited (or closed stderr).
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break Some(child.wait().unwrap()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if enough(&String::from_utf8_lossy(&out)) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no outcome within {deadline:?}; stderr so far:\n{}", String::from_utf8_lossy(&out));
        }
    };
    let _ = reader.join();
    out.extend(rx.try_iter().flatten());
    (status, out)
}

/// The operator's `run`, with a kubeconfig that points nowhere and nothing from the
/// environment that could change the outcome.
fn operator_run(kubeconfig: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(OPERATOR);
    cmd.arg("run").args(args).env("KUBECONFIG", kubeconfig).env_remove("KUBERNETES_SERVICE_HOST");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GDTO_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn a_taken_metrics_or_probe_port_fails_start_up_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let busy = format!("127.0.0.1:{port}");
    for (flag, other) in [("--metrics-addr", "--probe-addr"), ("--probe-addr", "--metrics-addr")] {
        // A kubeconfig that does not exist: binding must fail before the client is built.
        let cmd = operator_run(std::path::Path::new("/nonexistent/kubeconfig"), &[flag, &busy, other, "127.0.0.1:0"]);
        let (status, stderr) = run_until(cmd, Duration::from_secs(60), |_| false);
        let stderr = String::from_utf8_lossy(&stderr);
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("{flag} {busy}")) && stderr.contains("in use"), "{stderr}");
        assert!(!stderr.contains("Kubernetes client"), "bound after building the client: {stderr}");
    }
    drop(taken);
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    // A kubeconfig whose API server is a closed port: the operator starts and logs, then
    // fails to reach it; the test stops it once the start-up line is out.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: nowhere\n  cluster:\n    server: http://{closed}\n\
             contexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: nobody\n\
             users:\n- name: nobody\n  user: {{}}\ncurrent-context: nowhere\n"
        ),
    )
    .unwrap();
    let mut cmd = operator_run(
        &kubeconfig,
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--probe-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--log-level",
            "info",
        ],
    );
    // Colours would be wanted, were stderr a terminal.
    cmd.env_remove("NO_COLOR").env("TERM", "xterm-256color").env("CLICOLOR_FORCE", "1");
    let (_, stderr) = run_until(cmd, Duration::from_secs(60), |out| out.contains("starting groupdocs-token-operator"));
    let text = String::from_utf8_lossy(&stderr);
    assert!(text.contains("starting groupdocs-token-operator"), "{text}");
    assert!(text.contains(" INFO "), "plain level names: {text}");
    assert!(!stderr.windows(2).any(|w| w == b"\x1b["), "ANSI escape codes in: {text:?}");
}
