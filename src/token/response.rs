//! Turning a token endpoint's answer into a [`Token`] or a classified [`Failure`].

use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::Token;
use super::retry_after;
use crate::redact::Sensitive;

/// Longest token lifetime believed; anything longer is a broken server.
pub const MAX_LIFETIME: SignedDuration = SignedDuration::from_secs(366 * 24 * 3600);

/// A failed token request, classified. Details never contain the client secret or a token.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// 400/401/403, or an OAuth error such as `invalid_client`: retrying will not help.
    InvalidClient(String),
    /// 429: no request before `until`.
    RateLimited { detail: String, until: Timestamp },
    /// 5xx, timeout, connection failure: retry later.
    Unavailable(String),
    /// The endpoint answered, but not with a usable token.
    InvalidResponse(String),
    /// The request was not sent: the endpoint's address is not allowed.
    NotAllowed(String),
}

#[derive(Deserialize)]
struct Body {
    access_token: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: Option<String>,
    error_description: Option<String>,
}

/// Classifies a complete HTTP answer. `secret` is scrubbed from anything quoted back.
pub fn parse(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: Timestamp,
    secret: &Sensitive,
) -> Result<Token, Failure> {
    match status {
        200 => parse_success(body, crate::schedule::whole_seconds(now)),
        429 => {
            let until = retry_after::pause_until(retry_after, now);
            let detail = match retry_after {
                Some(v) => format!("429 Too Many Requests (Retry-After: {})", printable(v, 64)),
                None => "429 Too Many Requests without Retry-After".to_string(),
            };
            Err(Failure::RateLimited { detail, until })
        }
        400 | 401 | 403 => Err(Failure::InvalidClient(describe_oauth_error(status, body, secret))),
        408 | 500..=599 => Err(Failure::Unavailable(format!("HTTP {status}{}", oauth_suffix(body, secret)))),
        _ => Err(Failure::InvalidResponse(format!("unexpected HTTP {status}{}", oauth_suffix(body, secret)))),
    }
}

fn parse_success(body: &[u8], now: Timestamp) -> Result<Token, Failure> {
    let invalid = |msg: &str| Failure::InvalidResponse(msg.to_string());
    let body: Body = serde_json::from_slice(body).map_err(|_| invalid("the body is not a JSON object"))?;
    let access_token = match body.access_token {
        Some(serde_json::Value::String(t)) if !t.trim().is_empty() => t,
        Some(serde_json::Value::String(_)) => return Err(invalid("access_token is empty")),
        Some(_) => return Err(invalid("access_token is not a string")),
        None => return Err(invalid("access_token is missing")),
    };
    if access_token.len() > 16 * 1024 || access_token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(invalid("access_token is not a printable token of at most 16 KiB"));
    }
    let token_type = match body.token_type {
        None => "Bearer".to_string(),
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => "Bearer".to_string(),
        Some(other) => {
            return Err(Failure::InvalidResponse(format!(
                "token_type {} is not Bearer",
                printable(&other.to_string(), 32)
            )));
        }
    };
    let lifetime = match body.expires_in {
        Some(v) => expires_in(&v)?,
        // expires_in is authoritative; the JWT's own exp claim is the fallback.
        None => jwt_exp(&access_token)
            .map(|exp| exp.duration_since(now))
            .filter(|d| d.is_positive() && *d <= MAX_LIFETIME)
            .ok_or_else(|| invalid("expires_in is missing and the token carries no usable exp claim"))?,
    };
    let expires_at = now.checked_add(lifetime).map_err(|_| invalid("expires_in is out of range"))?;
    Ok(Token { access_token: Sensitive::new(access_token), token_type, issued_at: now, expires_at })
}

fn expires_in(v: &serde_json::Value) -> Result<SignedDuration, Failure> {
    let secs = v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15).map(|f| f as i64));
    match secs {
        Some(s) if s > 0 && s <= MAX_LIFETIME.as_secs() => Ok(SignedDuration::from_secs(s)),
        Some(s) => {
            Err(Failure::InvalidResponse(format!("expires_in {s} is outside 1..={} seconds", MAX_LIFETIME.as_secs())))
        }
        None => Err(Failure::InvalidResponse(format!(
            "expires_in {} is not a whole number of seconds",
            printable(&v.to_string(), 32)
        ))),
    }
}

/// The `exp` claim of a JWT, without verifying the signature (the issuer verifies it).
pub fn jwt_exp(token: &str) -> Option<Timestamp> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Timestamp::from_second(claims.get("exp")?.as_i64()?).ok()
}

fn describe_oauth_error(status: u16, body: &[u8], secret: &Sensitive) -> String {
    format!("HTTP {status}{}", oauth_suffix(body, secret))
}

/// `: invalid_client (description)` when the body is an RFC 6749 error object.
fn oauth_suffix(body: &[u8], secret: &Sensitive) -> String {
    let Ok(err) = serde_json::from_slice::<OAuthError>(body) else {
        return String::new();
    };
    let mut out = String::new();
    if let Some(code) = err.error {
        out.push_str(": ");
        out.push_str(&printable(&code, 64));
    }
    if let Some(desc) = err.error_description {
        out.push_str(&format!(" ({})", printable(&desc, 200)));
    }
    secret.scrub(&out)
}

/// A server's text made safe for a message: printable ASCII only, bounded length.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-11-28T10:00:00Z".parse().unwrap()
    }

    fn parse_json(status: u16, body: serde_json::Value) -> Result<Token, Failure> {
        parse(status, None, body.to_string().as_bytes(), now(), &Sensitive::new("the-client-secret"))
    }

    fn jwt_with_exp(exp: i64) -> String {
        let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", enc(json!({"alg":"HS256","typ":"JWT"})), enc(json!({"exp": exp})))
    }

    #[test]
    fn success_uses_expires_in_of_each_response() {
        for lifetime in [86400, 3600] {
            let t = parse_json(200, json!({"access_token":"abc","expires_in":lifetime,"token_type":"Bearer"})).unwrap();
            assert_eq!(t.expires_at.duration_since(now()).as_secs(), lifetime);
            assert_eq!(t.token_type, "Bearer");
            assert_eq!(t.authorization().expose(), "Bearer abc");
        }
    }

    #[test]
    fn jwt_exp_is_the_fallback() {
        let exp = now().as_second() + 1800;
        let t = parse_json(200, json!({"access_token": jwt_with_exp(exp)})).unwrap();
        assert_eq!(t.expires_at.as_second(), exp);
        let err = parse_json(200, json!({"access_token": "opaque"})).unwrap_err();
        assert!(matches!(err, Failure::InvalidResponse(m) if m.contains("exp")));
    }

    #[test]
    fn broken_bodies_are_invalid_responses() {
        let cases = [
            json!({"expires_in": 10}),
            json!({"access_token": "", "expires_in": 10}),
            json!({"access_token": 5, "expires_in": 10}),
            json!({"access_token": "a", "expires_in": 0}),
            json!({"access_token": "a", "expires_in": -5}),
            json!({"access_token": "a", "expires_in": "3600"}),
            json!({"access_token": "a", "expires_in": 1e30}),
            json!({"access_token": "a", "expires_in": 999999999999_i64}),
            json!({"access_token": "a", "expires_in": 10, "token_type": "mac"}),
            json!([1, 2]),
        ];
        for body in cases {
            assert!(matches!(parse_json(200, body.clone()), Err(Failure::InvalidResponse(_))), "{body}");
        }
        let not_json = parse(200, None, b"<html>", now(), &Sensitive::default());
        assert!(matches!(not_json, Err(Failure::InvalidResponse(_))));
    }

    #[test]
    fn statuses_are_classified() {
        assert!(
            matches!(parse_json(400, json!({"error":"invalid_client"})), Err(Failure::InvalidClient(m)) if m.contains("invalid_client"))
        );
        assert!(matches!(parse_json(401, json!({})), Err(Failure::InvalidClient(_))));
        assert!(matches!(parse_json(500, json!({})), Err(Failure::Unavailable(_))));
        assert!(matches!(parse_json(503, json!({})), Err(Failure::Unavailable(_))));
        assert!(matches!(parse_json(404, json!({})), Err(Failure::InvalidResponse(_))));
        let limited = parse(429, Some("42"), b"", now(), &Sensitive::default());
        assert!(
            matches!(limited, Err(Failure::RateLimited { until, .. }) if until.duration_since(now()).as_secs() == 42)
        );
    }

    #[test]
    fn an_echoed_secret_is_scrubbed() {
        let err = parse_json(400, json!({"error":"invalid_client","error_description":"bad secret the-client-secret"}));
        let Err(Failure::InvalidClient(msg)) = err else { panic!() };
        assert!(!msg.contains("the-client-secret"), "{msg}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    proptest! {
        /// No body and no status makes the parser panic; a success always has a positive,
        /// bounded lifetime.
        #[test]
        fn arbitrary_bodies(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(token) = parse(status, None, &body, now(), &Sensitive::new("secret")) {
                prop_assert!(token.expires_at > token.issued_at);
                prop_assert!(token.lifetime() <= MAX_LIFETIME);
            }
        }

        #[test]
        fn arbitrary_json_fields(
            token in proptest::option::of("[ -~]{0,64}"),
            expires_in in proptest::option::of(prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                "[ -~]{0,12}".prop_map(serde_json::Value::from),
            ]),
        ) {
            let mut body = serde_json::Map::new();
            if let Some(t) = token { body.insert("access_token".into(), t.into()); }
            if let Some(e) = expires_in { body.insert("expires_in".into(), e); }
            let bytes = serde_json::to_vec(&body).unwrap();
            if let Ok(t) = parse(200, None, &bytes, now(), &Sensitive::default()) {
                prop_assert!(t.lifetime().is_positive() && t.lifetime() <= MAX_LIFETIME);
                prop_assert!(!t.access_token.expose().is_empty());
            }
        }

        /// An error message never quotes the client secret, whatever the server echoes.
        #[test]
        fn secrets_never_echo(secret in "[a-zA-Z0-9]{8,32}", status in prop_oneof![Just(400u16), Just(401), Just(500), Just(404)]) {
            let body = serde_json::json!({"error": format!("bad {secret}"), "error_description": format!("you sent {secret}")});
            let err = parse(status, None, body.to_string().as_bytes(), now(), &Sensitive::new(secret.clone())).unwrap_err();
            let text = format!("{:?}", err);
            prop_assert!(!text.contains(&secret));
        }
    }
}
