use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::redact::Sensitive;

fn policy(prefix: &str, loopback: bool) -> TokenUrlPolicy {
    TokenUrlPolicy::new(&[prefix.to_string()], loopback, false).unwrap()
}

/// A resolver that ignores the process's proxy variables.
fn resolver(loopback: bool, timeout: Duration) -> PolicyResolver {
    PolicyResolver { policy: policy("https://api.groupdocs.cloud/", loopback), timeout, proxies: Arc::default() }
}

#[tokio::test]
async fn the_resolver_refuses_loopback_unless_allowed() {
    let err = resolver(false, Duration::from_secs(5)).lookup("localhost").await.unwrap_err();
    assert!(matches!(&err, ResolveError::NotAllowed { host, why } if host == "localhost" && why.contains("loopback")));
    assert!(err.to_string().starts_with("localhost resolves to "), "{err}");
    assert!(err.to_string().contains("--allow-http-loopback"), "{err}");
    let addrs = resolver(true, Duration::from_secs(5)).lookup("localhost").await.unwrap();
    assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
}

#[tokio::test]
async fn the_resolver_refuses_internal_answers() {
    for host in ["10.0.0.1", "169.254.169.254", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe"] {
        let err = resolver(true, Duration::from_secs(5)).lookup(host).await.unwrap_err();
        assert!(err.to_string().contains("--allow-private-networks"), "{host}: {err}");
    }
    let open = PolicyResolver {
        policy: TokenUrlPolicy::new(&[], false, true).unwrap(),
        timeout: Duration::from_secs(5),
        proxies: Arc::default(),
    };
    assert_eq!(open.lookup("10.0.0.1").await.unwrap()[0].ip().to_string(), "10.0.0.1");
    assert!(resolver(false, Duration::from_secs(5)).lookup("8.8.8.8").await.is_ok());
}

#[tokio::test]
async fn proxies_are_resolved_without_the_check() {
    let mut r = resolver(false, Duration::from_secs(5));
    r.proxies = Arc::new(vec!["localhost".to_string()]);
    assert!(r.lookup("localhost").await.is_ok());
    assert!(r.lookup("127.0.0.1").await.is_err(), "only the proxy's name");
    let env = |name: &str| match name {
        "HTTPS_PROXY" => Some("http://Squid.Egress.svc:3128".to_string()),
        "http_proxy" => Some("proxy.example:8080".to_string()),
        "ALL_PROXY" => Some("socks5://10.0.0.9:1080".to_string()),
        _ => None,
    };
    assert_eq!(proxy_hosts(env), ["squid.egress.svc", "proxy.example"]);
}

#[tokio::test]
async fn a_slow_lookup_times_out() {
    let r = resolver(true, Duration::from_millis(20));
    let never = std::future::pending::<std::io::Result<std::vec::IntoIter<SocketAddr>>>();
    let err = r.checked("slow.example", never).await.unwrap_err();
    assert!(matches!(err, ResolveError::TimedOut { .. }), "{err:?}");
    assert_eq!(err.to_string(), "the DNS lookup of slow.example timed out after 20 ms");
    let failed =
        r.checked("x.invalid", async { Err::<std::vec::IntoIter<SocketAddr>, _>(std::io::Error::other("nxdomain")) });
    let err = failed.await.unwrap_err();
    assert!(matches!(err, ResolveError::Lookup { .. }), "{err:?}");
    assert_eq!(std::error::Error::source(&err).unwrap().to_string(), "nxdomain");
}

fn request(url: String) -> TokenRequest {
    TokenRequest { url, client_id: "id".to_string(), client_secret: Sensitive::new("the-client-secret"), scope: None }
}

/// Answers one token request on `listener` with a token `abc`.
async fn answer_once(listener: tokio::net::TcpListener) {
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()))
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                break;
            }
        }
        assert!(n > 0, "the client closed the connection");
    }
    let body = r#"{"access_token":"abc","expires_in":3600,"token_type":"Bearer"}"#;
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await.unwrap();
}

#[tokio::test]
async fn a_client_with_a_policy_never_connects_to_a_refused_name() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let prefix = format!("http://localhost:{port}/");
    let url = format!("http://localhost:{port}/connect/token");

    let strict =
        HttpTokenClient::new(&ClientConfig { policy: Some(policy(&prefix, false)), ..ClientConfig::default() })
            .unwrap();
    let err = strict.fetch(&request(url.clone())).await.unwrap_err();
    assert!(
        matches!(&err, Failure::NotAllowed(m) if m.starts_with("localhost resolves to ") && m.contains("loopback")),
        "{err:?}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "no connection was made");

    // The same request with loopback allowed reaches the listener through the resolver.
    let server = tokio::spawn(answer_once(listener));
    let open =
        HttpTokenClient::new(&ClientConfig { policy: Some(policy(&prefix, true)), ..ClientConfig::default() }).unwrap();
    let token = open.fetch(&request(url)).await.unwrap();
    assert_eq!(token.access_token.expose(), "abc");
    server.await.unwrap();
}

#[tokio::test]
async fn an_unknown_name_is_unavailable_not_refused() {
    let client =
        HttpTokenClient::new(&ClientConfig { policy: Some(policy("https://x/", false)), ..ClientConfig::default() })
            .unwrap();
    let err = client.fetch(&request("https://no-such-host.invalid/connect/token".into())).await.unwrap_err();
    assert!(matches!(&err, Failure::Unavailable(_)), "{err:?}");
}
