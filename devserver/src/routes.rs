//! The HTTP routes: `POST /connect/token` (GroupDocs' token endpoint), `GET
//! /v2.0/viewer/formats` (a protected API route that wants a valid bearer token), and the
//! admin routes `/admin/*` for tests (faults, lifetime, clients, counts), guarded by
//! [`admin_access`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::limiter::retry_after_secs;
use crate::{AdminToken, Fault, LimitBy, Shared, faults, lock};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let admin = Router::new()
        .route("/admin/stats", get(|State(s): State<Arc<Shared>>| async move { Json(lock(&s.stats).clone()) }))
        .route(
            "/admin/fault",
            post(|State(s): State<Arc<Shared>>, Json(f): Json<Fault>| async move {
                *lock(&s.fault) = f;
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/admin/expires-in",
            post(|State(s): State<Arc<Shared>>, Json(v): Json<i64>| async move {
                *lock(&s.expires_in) = v;
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/admin/clients",
            post(|State(s): State<Arc<Shared>>, Json(c): Json<HashMap<String, String>>| async move {
                lock(&s.clients).extend(c);
                StatusCode::NO_CONTENT
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), admin_guard));
    Router::new()
        .route("/connect/token", post(token))
        .route("/v2.0/viewer/formats", get(protected_api))
        .merge(admin)
        .with_state(shared)
}

/// Lets a request through to an admin route only when [`admin_access`] allows it.
async fn admin_guard(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| *peer);
    match admin_access(s.args.admin_token.as_ref(), peer, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(StatusCode::UNAUTHORIZED) => {
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response()
        }
        Err(status) => status.into_response(),
    }
}

/// Who may use the admin routes. Without an admin token: loopback callers only (403 for the
/// rest). With one: whoever sends it as a bearer token, from anywhere (401 without a bearer
/// token, 403 with a wrong one).
pub fn admin_access(
    token: Option<&AdminToken>,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), StatusCode> {
    let Some(token) = token else {
        return match peer {
            Some(peer) if peer.ip().to_canonical().is_loopback() => Ok(()),
            _ => Err(StatusCode::FORBIDDEN),
        };
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    if constant_time_eq(presented.as_bytes(), token.expose().as_bytes()) { Ok(()) } else { Err(StatusCode::FORBIDDEN) }
}

/// Compares the SHA-256 digests of `a` and `b` in time that depends on neither value nor
/// length, so that timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[derive(Deserialize, Default)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

/// `POST /connect/token`: a fault if one is switched on, else the rate limiter, else the
/// grant and the client's credentials decide between a token and `400`.
async fn token(
    State(s): State<Arc<Shared>>,
    axum::Extension(ConnectInfo(peer)): axum::Extension<ConnectInfo<SocketAddr>>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if s.args.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(s.args.latency_ms)).await;
    }
    let mut form = form.map(|Form(f)| f).unwrap_or_default();
    if let Some((id, secret)) = basic_credentials(&headers) {
        form.client_id.get_or_insert(id);
        form.client_secret.get_or_insert(secret);
    }
    let client_id = form.client_id.clone().unwrap_or_default();
    {
        let mut stats = lock(&s.stats);
        stats.token_requests += 1;
        *stats.by_client.entry(client_id.clone()).or_default() += 1;
    }
    let fault = lock(&s.fault).clone();
    if let Some(resp) = faults::answer(&fault, |lifetime| s.issue(&client_id, form.scope.as_deref(), lifetime)).await {
        lock(&s.stats).faulted += 1;
        return resp;
    }

    let caller = match s.args.limit_by {
        LimitBy::Ip => peer.ip().to_string(),
        LimitBy::Client => client_id.clone(),
    };
    if let Some(wait) = s.limiter.cooldown_left(&caller, Instant::now()) {
        lock(&s.stats).rate_limited += 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_secs(wait).to_string())],
            Json(json!({"error": "too_many_requests"})),
        )
            .into_response();
    }

    let error = if form.grant_type.as_deref() != Some("client_credentials") {
        Some("unsupported_grant_type")
    } else {
        let clients = lock(&s.clients);
        match (form.client_id.as_deref(), form.client_secret.as_deref()) {
            (Some(id), Some(secret)) if clients.get(id).is_some_and(|known| known == secret) => None,
            _ => Some("invalid_client"),
        }
    };
    if let Some(error) = error {
        lock(&s.stats).rejected += 1;
        s.limiter.record_failure(&caller, Instant::now());
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
    }
    let expires_in = *lock(&s.expires_in);
    let Some(token) = s.issue(&client_id, form.scope.as_deref(), expires_in) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "server_error"}))).into_response();
    };
    lock(&s.stats).issued += 1;
    Json(json!({
        "access_token": token,
        "expires_in": expires_in,
        "token_type": "Bearer",
    }))
    .into_response()
}

/// `client_id` and `client_secret` from `Authorization: Basic`, each form-urlencoded first
/// as OAuth 2.0 (RFC 6749, 2.3.1) has it.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape =
        |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((unescape(id)?, unescape(secret)?))
}

/// `GET /v2.0/viewer/formats`: a stand-in for any GroupDocs API route.
async fn protected_api(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| s.keys.verify(t)) {
        Some(claims) => {
            lock(&s.stats).api_calls_ok += 1;
            Json(json!({"formats": [{"extension": ".docx"}, {"extension": ".pdf"}], "client_id": claims.client_id}))
                .into_response()
        }
        None => {
            lock(&s.stats).api_calls_unauthorized += 1;
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn without_a_token_admin_routes_are_for_loopback_callers_only() {
        let none = HeaderMap::new();
        for peer in ["127.0.0.1:5000", "127.1.2.3:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert_eq!(admin_access(None, Some(peer.parse().unwrap()), &none), Ok(()), "{peer}");
        }
        for peer in ["10.0.0.5:5000", "192.168.1.2:80", "[fd00::1]:5000", "[::ffff:10.0.0.5]:5000", "0.0.0.0:1"] {
            assert_eq!(admin_access(None, Some(peer.parse().unwrap()), &none), Err(StatusCode::FORBIDDEN), "{peer}");
        }
        assert_eq!(admin_access(None, None, &none), Err(StatusCode::FORBIDDEN), "unknown peer");
        // A bearer token means nothing when none is configured.
        let remote = Some("10.0.0.5:5000".parse().unwrap());
        assert_eq!(admin_access(None, remote, &bearer("Bearer x")), Err(StatusCode::FORBIDDEN));
    }

    #[test]
    fn with_a_token_admin_routes_need_it_from_anywhere() {
        let token = AdminToken::new("s3cret-admin");
        let (remote, local) = (Some("10.0.0.5:5000".parse().unwrap()), Some("127.0.0.1:5000".parse().unwrap()));
        for peer in [remote, local, None] {
            assert_eq!(admin_access(Some(&token), peer, &bearer("Bearer s3cret-admin")), Ok(()));
            assert_eq!(admin_access(Some(&token), peer, &HeaderMap::new()), Err(StatusCode::UNAUTHORIZED));
            assert_eq!(admin_access(Some(&token), peer, &bearer("Basic s3cret-admin")), Err(StatusCode::UNAUTHORIZED));
            for wrong in
                ["Bearer s3cret-admiN", "Bearer s3cret-admin2", "Bearer s3cret", "Bearer ", "Bearer  s3cret-admin"]
            {
                assert_eq!(admin_access(Some(&token), peer, &bearer(wrong)), Err(StatusCode::FORBIDDEN), "{wrong}");
            }
        }
    }

    #[test]
    fn constant_time_eq_compares_values() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn basic_credentials_are_form_urlencoded() {
        let basic = |raw: &str| bearer(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)));
        assert_eq!(basic_credentials(&basic("id:secret")), Some(("id".into(), "secret".into())));
        assert_eq!(basic_credentials(&basic("a%3Ab:s%2Bt+u")), Some(("a:b".into(), "s+t u".into())));
        assert_eq!(basic_credentials(&basic("no-colon")), None);
        assert_eq!(basic_credentials(&bearer("Basic !!")), None);
        assert_eq!(basic_credentials(&bearer("Bearer x")), None);
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }
}
