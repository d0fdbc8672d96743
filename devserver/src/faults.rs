//! Faults the server injects into `/connect/token` answers until switched off, for the tests
//! of how the operator copes with a broken or hostile token endpoint.

use std::time::Duration;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A fault, as `POST /admin/fault` takes it: `{"kind": "status", "status": 503}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    #[default]
    None,
    /// Answer with this HTTP status and an empty JSON object.
    Status { status: u16 },
    /// Never answer.
    Hang,
    /// Reset the connection before answering.
    Reset,
    /// `200` with a body that is not JSON.
    NotJson,
    /// `200` with JSON that lacks `access_token`.
    NoAccessToken,
    /// `200` with a real token but this `expires_in` value.
    ExpiresIn { value: serde_json::Value },
    /// `200` with a body of this many bytes.
    HugeBody { bytes: usize },
    /// `429`, with this `Retry-After` header value, or none.
    TooManyRequests { retry_after: Option<String> },
    /// `302` to this location.
    Redirect { location: String },
}

/// The answer to a token request under `fault`, or `None` when the request is to be served
/// normally (no fault, or a reset, which happens before any request is read). `issue` hands
/// out a real token of the given lifetime (for [`Fault::ExpiresIn`]).
pub async fn answer(fault: &Fault, issue: impl FnOnce(i64) -> Option<String>) -> Option<Response> {
    let resp = match fault {
        Fault::None | Fault::Reset => return None,
        Fault::Status { status } => {
            (StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(json!({})))
                .into_response()
        }
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Fault::NotJson => (StatusCode::OK, "<html>maintenance</html>").into_response(),
        Fault::NoAccessToken => Json(json!({"expires_in": 86400, "token_type": "Bearer"})).into_response(),
        Fault::ExpiresIn { value } => {
            let lifetime = value.as_i64().unwrap_or(86400).clamp(-1_000_000, 10_000_000);
            match issue(lifetime) {
                Some(token) => {
                    Json(json!({"access_token": token, "expires_in": value, "token_type": "Bearer"})).into_response()
                }
                None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        Fault::HugeBody { bytes } => {
            let body = format!("{{\"access_token\":\"{}\"}}", "x".repeat(*bytes));
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Fault::TooManyRequests { retry_after } => {
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(json!({"error": "too_many_requests"}))).into_response();
            if let Some(v) = retry_after.as_deref().and_then(|v| v.parse().ok()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Fault::Redirect { location } => (StatusCode::FOUND, [(header::LOCATION, location.clone())]).into_response(),
    };
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn no_token(_: i64) -> Option<String> {
        panic!("no token for this fault")
    }

    #[test]
    fn faults_read_as_the_admin_route_takes_them() {
        let parse = |s: &str| serde_json::from_str::<Fault>(s).unwrap();
        assert_eq!(parse(r#"{"kind":"none"}"#), Fault::None);
        assert_eq!(parse(r#"{"kind":"status","status":503}"#), Fault::Status { status: 503 });
        assert_eq!(parse(r#"{"kind":"not_json"}"#), Fault::NotJson);
        assert_eq!(
            parse(r#"{"kind":"too_many_requests","retry_after":null}"#),
            Fault::TooManyRequests { retry_after: None }
        );
        assert_eq!(parse(r#"{"kind":"expires_in","value":"soon"}"#), Fault::ExpiresIn { value: json!("soon") });
    }

    #[tokio::test]
    async fn no_fault_and_reset_leave_the_request_to_the_server() {
        assert!(answer(&Fault::None, no_token).await.is_none());
        assert!(answer(&Fault::Reset, no_token).await.is_none());
    }

    #[tokio::test]
    async fn faulted_answers() {
        let resp = answer(&Fault::Status { status: 503 }, no_token).await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(body(resp).await, "{}");
        let resp = answer(&Fault::Status { status: 1000 }, no_token).await.unwrap();
        assert_eq!(resp.status(), 500, "an invalid status becomes 500");

        let resp = answer(&Fault::NotJson, no_token).await.unwrap();
        assert_eq!((resp.status(), body(resp).await.as_str()), (StatusCode::OK, "<html>maintenance</html>"));

        let resp = answer(&Fault::NoAccessToken, no_token).await.unwrap();
        let json: serde_json::Value = serde_json::from_str(&body(resp).await).unwrap();
        assert_eq!(json, json!({"expires_in": 86400, "token_type": "Bearer"}));

        let resp = answer(&Fault::HugeBody { bytes: 1000 }, no_token).await.unwrap();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body(resp).await.len(), 1000 + r#"{"access_token":""}"#.len());

        let resp = answer(&Fault::TooManyRequests { retry_after: Some("7".into()) }, no_token).await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
        let resp = answer(&Fault::TooManyRequests { retry_after: None }, no_token).await.unwrap();
        assert!(!resp.headers().contains_key(header::RETRY_AFTER));

        let resp = answer(&Fault::Redirect { location: "http://elsewhere/".into() }, no_token).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(resp.headers()[header::LOCATION], "http://elsewhere/");
    }

    #[tokio::test]
    async fn expires_in_issues_a_real_token_with_a_bounded_lifetime() {
        for (value, lifetime) in [
            (json!(60), 60),
            (json!("60"), 86400),
            (json!(-5), -5),
            (json!(1e12), 86400),
            (json!(i64::MAX), 10_000_000),
        ] {
            let resp = answer(&Fault::ExpiresIn { value: value.clone() }, |l| {
                assert_eq!(l, lifetime, "{value}");
                Some("t0ken".into())
            })
            .await
            .unwrap();
            let json: serde_json::Value = serde_json::from_str(&body(resp).await).unwrap();
            assert_eq!(json, json!({"access_token": "t0ken", "expires_in": value, "token_type": "Bearer"}));
        }
    }
}
