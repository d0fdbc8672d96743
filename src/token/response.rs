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
        200 => parse_success(body, crate::schedule::whole_seconds(now), secret),
        429 => {
            let until = retry_after::pause_until(retry_after, now);
            let detail = match retry_after {
                Some(v) => format!("429 Too Many Requests (Retry-After: {})", quote(v, 64, secret)),
                None => "429 Too Many Requests without Retry-After".to_string(),
            };
            Err(Failure::RateLimited { detail, until })
        }
        400 | 401 | 403 => Err(Failure::InvalidClient(describe_oauth_error(status, body, secret))),
        408 | 500..=599 => Err(Failure::Unavailable(format!("HTTP {status}{}", oauth_suffix(body, secret)))),
        _ => Err(Failure::InvalidResponse(format!("unexpected HTTP {status}{}", oauth_suffix(body, secret)))),
    }
}

/// A 200 answer: the token and its lifetime, the earlier of `expires_in` and the JWT's `exp`
/// claim when both are there.
fn parse_success(body: &[u8], now: Timestamp, secret: &Sensitive) -> Result<Token, Failure> {
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
                describe_value(&other, 32, secret)
            )));
        }
    };
    let from_expires_in = body.expires_in.as_ref().map(|v| expires_in(v, secret)).transpose()?;
    let from_exp = match jwt_exp(&access_token) {
        Some(exp) if exp <= now => {
            return Err(Failure::InvalidResponse(format!(
                "the token's exp claim ({exp}) is not after the time of the answer ({now}): it is already expired"
            )));
        }
        Some(exp) => Some(exp.duration_since(now)),
        None => None,
    };
    let lifetime = match (from_expires_in, from_exp) {
        (Some(expires_in), Some(exp)) => expires_in.min(exp),
        (Some(expires_in), None) => expires_in,
        (None, Some(exp)) if exp <= MAX_LIFETIME => exp,
        (None, Some(_)) => {
            return Err(Failure::InvalidResponse(format!(
                "expires_in is missing and the token's exp claim is more than {} seconds away",
                MAX_LIFETIME.as_secs()
            )));
        }
        (None, None) => return Err(invalid("expires_in is missing and the token carries no usable exp claim")),
    };
    let expires_at = now.checked_add(lifetime).map_err(|_| invalid("expires_in is out of range"))?;
    Ok(Token { access_token: Sensitive::new(access_token), token_type, issued_at: now, expires_at })
}

/// `expires_in` in seconds: a JSON number with no fraction, or a string of one (`"3600"`),
/// within `1..=MAX_LIFETIME`.
fn expires_in(v: &serde_json::Value, secret: &Sensitive) -> Result<SignedDuration, Failure> {
    /// `Some(Err(()))` for whole numbers beyond i64.
    fn whole_seconds(v: &serde_json::Value) -> Option<Result<i64, ()>> {
        match v {
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(Ok)
                .or_else(|| n.as_u64().map(|_| Err(())))
                .or_else(|| n.as_f64().filter(|f| f.is_finite() && f.fract() == 0.0).map(|f| Ok(f as i64))),
            serde_json::Value::String(s) => {
                let t = s.trim();
                let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(t.parse::<i64>().map_err(|_| ()))
            }
            _ => None,
        }
    }
    match whole_seconds(v) {
        Some(Ok(s)) if s > 0 && s <= MAX_LIFETIME.as_secs() => Ok(SignedDuration::from_secs(s)),
        Some(_) => Err(Failure::InvalidResponse(format!(
            "expires_in {} is outside 1..={} seconds",
            describe_value(v, 32, secret),
            MAX_LIFETIME.as_secs()
        ))),
        None => Err(Failure::InvalidResponse(format!(
            "expires_in {} is not a whole number of seconds",
            describe_value(v, 32, secret)
        ))),
    }
}

/// The `exp` claim of a JWT, without verifying the signature (the issuer verifies it): a
/// NumericDate, fractions cut off. `None` for anything else.
pub fn jwt_exp(token: &str) -> Option<Timestamp> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs =
        exp.as_i64().or_else(|| exp.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f.floor() as i64))?;
    Timestamp::from_second(secs).ok()
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
        out.push_str(&quote(&code, 64, secret));
    }
    if let Some(desc) = err.error_description {
        out.push_str(&format!(" ({})", quote(&desc, 200, secret)));
    }
    // The pieces are clean; this catches a secret spread over two of them.
    scrub(&out, secret)
}

/// A JSON value from the server for a message: a string quoted, a number or literal as is,
/// an array or object by its kind only.
fn describe_value(v: &serde_json::Value, max: usize, secret: &Sensitive) -> String {
    match v {
        serde_json::Value::String(s) => format!("\"{}\"", quote(s, max, secret)),
        serde_json::Value::Array(_) => "(an array)".to_string(),
        serde_json::Value::Object(_) => "(an object)".to_string(),
        other => quote(&other.to_string(), max, secret),
    }
}

/// A server's text made safe for a message. The client secret is scrubbed from the raw text
/// first, so that cutting the text cannot leave part of it behind; then only printable ASCII
/// is kept, scrubbed again (dropping a character can join the pieces of a secret), and the
/// result is cut to `max` characters.
fn quote(text: &str, max: usize, secret: &Sensitive) -> String {
    let printable: String = scrub(text, secret).chars().filter(|c| c.is_ascii_graphic() || *c == ' ').collect();
    let clean = scrub(&printable, secret);
    let mut out: String = clean.chars().take(max).collect();
    if clean.chars().count() > max {
        out.push('…');
    }
    out
}

const REDACTED: &str = "[REDACTED]";

/// `text` without the secret and the forms a server may echo it in: as sent in the form body
/// (`application/x-www-form-urlencoded`, upper- or lower-case hex), percent-encoded with `%20`
/// for spaces, and with the characters a message drops removed. Like [`Sensitive::scrub`],
/// forms shorter than four characters are left alone. Replacing repeats until nothing is
/// left; a text that keeps producing the secret is dropped.
fn scrub(text: &str, secret: &Sensitive) -> String {
    let needles = secret_forms(secret);
    let mut out = secret.scrub(text);
    for _ in 0..4 {
        if !needles.iter().any(|n| out.contains(n.as_str())) {
            return out;
        }
        for needle in &needles {
            out = out.replace(needle.as_str(), REDACTED);
        }
    }
    if needles.iter().any(|n| out.contains(n.as_str())) { String::new() } else { out }
}

/// What the secret looks like inside any base64 text that contains it, such as an echoed
/// `Authorization: Basic base64(id:secret)` header: whatever precedes it, its bytes start at
/// one of three offsets within a 3-byte group, and from the next group boundary on their
/// encoding is fixed. (At most the two bytes before that boundary stay encoded around it.)
fn base64_forms(bytes: &[u8]) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = Vec::new();
    for skip in 0..3.min(bytes.len()) {
        let rest = &bytes[skip..];
        let whole = &rest[..rest.len() / 3 * 3];
        if whole.len() >= 6 {
            forms.push(STANDARD_NO_PAD.encode(whole));
            forms.push(URL_SAFE_NO_PAD.encode(whole));
        }
    }
    forms
}

fn secret_forms(secret: &Sensitive) -> Vec<String> {
    let raw = secret.expose();
    let form: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
    let percent = form.replace('+', "%20");
    let lower_hex = |s: &str| {
        // Lower-case only the two hex digits after each '%'.
        let mut out = String::with_capacity(s.len());
        let mut hex = 0;
        for c in s.chars() {
            if hex > 0 {
                out.push(c.to_ascii_lowercase());
                hex -= 1;
            } else {
                out.push(c);
                if c == '%' {
                    hex = 2;
                }
            }
        }
        out
    };
    let printable: String = raw.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').collect();
    let mut forms = vec![raw.to_string(), lower_hex(&form), lower_hex(&percent), form.clone(), percent, printable];
    forms.extend(base64_forms(raw.as_bytes()));
    forms.extend(base64_forms(form.as_bytes()));
    forms.retain(|f| f.chars().count() >= 4);
    // Longest first, so that a form containing another is replaced whole.
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests;
