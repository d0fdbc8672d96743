//! The development token server against the rules of the GroupDocs seed document
//! (`shared/seed/authenticating-api-requests.md`), in process and as its binary. No cluster
//! needed.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser as _;
use groupdocs_dev_token_server::{AdminToken, DevServer, DevServerArgs, Fault};
use serde_json::Value;

/// reqwest is built without a default crypto provider.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn server(args: DevServerArgs) -> DevServer {
    install_crypto_provider();
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
    install_crypto_provider();
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
        server(DevServerArgs { admin_token: Some(AdminToken::new("adm1n-t0ken-value")), ..Default::default() }).await;
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
    let args = DevServerArgs::try_parse_from([
        "groupdocs-dev-token-server",
        "--client",
        "first-id:first-s3cret,second-id:second-s3cret",
        "--client",
        "no-colon-s3cret",
        "--admin-token",
        "adm1n-t0ken-value",
    ])
    .unwrap();
    assert_eq!(args.admin_token.as_ref().map(AdminToken::expose), Some("adm1n-t0ken-value"));
    assert_eq!(args.clients, ["first-id:first-s3cret", "second-id:second-s3cret", "no-colon-s3cret"]);
    for shown in [format!("{args:?}"), format!("{args:#?}")] {
        for secret in ["s3cret", "adm1n-t0ken-value"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("first-id") && shown.contains("second-id"), "client ids still shown: {shown}");
    }
    let defaults = format!("{:?}", DevServerArgs::default());
    assert!(!defaults.contains("demo-client-secret"), "{defaults}");
}

const BINARY: &str = env!("CARGO_BIN_EXE_groupdocs-dev-token-server");

/// The binary with `args` and only the `GDTO_DEV_*` variables in `env`.
fn binary(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BINARY);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GDTO_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// Starts the binary and returns it with the address it announces on stderr.
fn start_binary(mut cmd: Command) -> (std::process::Child, String) {
    let mut child = cmd.spawn().expect("start the binary");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    let addr = first
        .strip_prefix("development token server on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    // Keep draining stderr so that the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

async fn token_from(addr: &str, id: &str, secret: &str) -> Value {
    let form = [("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)];
    let resp = reqwest::Client::new().post(format!("http://{addr}/connect/token")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_binary_serves_with_its_flags() {
    install_crypto_provider();
    let cmd = binary(&["--listen", "127.0.0.1:0", "--client", "flag-id:flag-secret", "--expires-in", "77"], &[]);
    let (mut child, addr) = start_binary(cmd);
    let body = token_from(&addr, "flag-id", "flag-secret").await;
    assert_eq!(body["expires_in"], 77);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn the_binary_takes_its_flags_from_the_environment() {
    install_crypto_provider();
    let env = [
        ("GDTO_DEV_LISTEN", "127.0.0.1:0"),
        ("GDTO_DEV_CLIENTS", "env-id:env-secret,other-id:other-secret"),
        ("GDTO_DEV_EXPIRES_IN", "120"),
    ];
    let (mut child, addr) = start_binary(binary(&[], &env));
    assert_eq!(token_from(&addr, "other-id", "other-secret").await["expires_in"], 120);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_binary_fails_with_a_clear_error_when_its_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let out = binary(&["--listen", &busy], &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("groupdocs-dev-token-server: ") && stderr.contains("in use"), "{stderr}");
}
