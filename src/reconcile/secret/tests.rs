//! The Secret write against a scripted API server (`tower-test`), for the paths an end-to-end
//! test can hardly provoke on purpose: a create that meets an existing Secret, a foreign one,
//! a Secret that changed between cache and read, a replace that loses a race, and a 422.

use super::*;
use crate::crd::GroupDocsCredential;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

const SECRETS: &str = "/api/v1/namespaces/apps/secrets";
const TARGET: &str = "/api/v1/namespaces/apps/secrets/viewer-token";

use crate::fixtures::{issued_for, token};

fn cr() -> GroupDocsCredential {
    crate::fixtures::credential("cr-uid")
}

/// Our Secret as the API server would hold it, holding `value`.
fn stored(value: &str, owner_uid: &str) -> Value {
    let mut secret = target::render(&Target::of(&cr()), &token(value), &issued_for()).unwrap();
    secret.metadata.uid = Some("secret-uid".into());
    secret.metadata.resource_version = Some("7".into());
    secret.metadata.owner_references.as_mut().unwrap()[0].uid = owner_uid.into();
    serde_json::to_value(secret).unwrap()
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{reason} (scripted)"), "reason": reason, "code": code})
}

/// Answers the next request, which must be `method path`, with what `respond` makes of its
/// JSON body.
async fn answer_with(handle: &mut Handle, method: &str, path: &str, respond: impl FnOnce(&Value) -> (u16, Value)) {
    let (request, send) = handle.next_request().await.expect("another request");
    assert_eq!((request.method().as_str(), request.uri().path()), (method, path));
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let sent = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    let (code, body) = respond(&sent);
    let response = Response::builder().status(code).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap();
    send.send_response(response);
}

async fn answer(handle: &mut Handle, method: &str, path: &str, code: u16, body: Value) {
    answer_with(handle, method, path, |_| (code, body)).await;
}

/// Runs one write against a scripted server: `script` answers every request it expects, and
/// no other request may follow.
async fn write_with<F: std::future::Future<Output = Handle>>(
    existing: Option<&CachedSecret>,
    fresh: Option<&Token>,
    script: impl FnOnce(Handle) -> F,
) -> (Result<(), Error>, RecentWrites) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "apps");
    let writes = RecentWrites::default();
    let (cr, issued) = (cr(), issued_for());
    let facts = fresh.cloned().unwrap_or_else(|| token("in-place")).facts();
    let desired = target::desired(&Target::of(&cr), &facts, &issued);
    let write = SecretWrite { existing, desired: &desired, fresh };
    let target = Target::of(&cr);
    let run = async { tokio::join!(write_secret(&client, &writes, &target, write, &issued), script(handle)) };
    let (result, mut handle) = tokio::time::timeout(std::time::Duration::from_secs(10), run).await.expect("no hang");
    drop(client);
    let extra = tokio::time::timeout(std::time::Duration::from_secs(10), handle.next_request()).await.expect("no hang");
    assert!(extra.is_none(), "an unexpected request: {:?}", extra.map(|(r, _)| (r.method().clone(), r.uri().clone())));
    (result, writes)
}

#[tokio::test]
async fn a_create_that_meets_our_own_secret_replaces_it_with_a_precondition() {
    let fresh = token("new-token");
    let (result, writes) = write_with(None, Some(&fresh), |mut h| async move {
        answer(&mut h, "POST", SECRETS, 409, status(409, "AlreadyExists")).await;
        answer(&mut h, "GET", TARGET, 200, stored("old-token", "cr-uid")).await;
        answer_with(&mut h, "PUT", TARGET, |sent| {
            assert_eq!(sent["metadata"]["uid"], "secret-uid", "the replace is guarded by the uid we read");
            assert_eq!(sent["metadata"]["resourceVersion"], "7", "and by its resourceVersion");
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD.encode("new-token");
            assert_eq!(sent["data"]["access_token"], token.as_str());
            let mut updated = sent.clone();
            updated["metadata"]["resourceVersion"] = "8".into();
            (200, updated)
        })
        .await;
        h
    })
    .await;
    result.unwrap();
    let mut meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta::default();
    (meta.namespace, meta.name, meta.resource_version) =
        (Some("apps".into()), Some("viewer-token".into()), Some("8".into()));
    assert!(writes.is_own_secret_write(&meta), "its watch event will not trigger another reconcile");
}

#[tokio::test]
async fn a_foreign_secret_is_a_conflict_and_is_not_written() {
    let fresh = token("new-token");
    let (result, _) = write_with(None, Some(&fresh), |mut h| async move {
        answer(&mut h, "POST", SECRETS, 409, status(409, "AlreadyExists")).await;
        answer(&mut h, "GET", TARGET, 200, stored("theirs", "someone-else")).await;
        h
    })
    .await;
    assert_eq!(result.unwrap_err(), Error::TargetConflict { name: "viewer-token".into() });
}

#[tokio::test]
async fn a_secret_kubernetes_refuses_is_an_invalid_spec() {
    let fresh = token("new-token");
    let (result, _) = write_with(None, Some(&fresh), |mut h| async move {
        answer(&mut h, "POST", SECRETS, 422, status(422, "Invalid")).await;
        h
    })
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.reason(), "InvalidSpec");
    assert!(err.to_string().contains("Kubernetes rejects the target Secret"), "{err}");
}

#[tokio::test]
async fn a_secret_that_changed_since_the_cache_is_left_for_the_next_reconcile() {
    // The cache shows our Secret needing a repair; the full read shows another token.
    let mut edited: Secret = serde_json::from_value(stored("in-place", "cr-uid")).unwrap();
    edited.metadata.labels.as_mut().unwrap().clear();
    let cached = CachedSecret::from(edited);
    let (result, _) = write_with(Some(&cached), None, |mut h| async move {
        answer(&mut h, "GET", TARGET, 200, stored("replaced-meanwhile", "cr-uid")).await;
        h
    })
    .await;
    assert_eq!(result.unwrap_err(), Error::TargetChanged { name: "viewer-token".into() });
}

#[tokio::test]
async fn a_replace_that_loses_a_race_is_a_retried_api_error() {
    let fresh = token("new-token");
    let cached = CachedSecret::from(serde_json::from_value::<Secret>(stored("old-token", "cr-uid")).unwrap());
    let (result, writes) = write_with(Some(&cached), Some(&fresh), |mut h| async move {
        answer(&mut h, "GET", TARGET, 200, stored("old-token", "cr-uid")).await;
        answer(&mut h, "PUT", TARGET, 409, status(409, "Conflict")).await;
        h
    })
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.reason(), "KubernetesApiError");
    assert!(!err.is_stalled(), "retried, not stalled");
    assert!(writes.is_empty(), "nothing was written");
}

#[tokio::test]
async fn an_up_to_date_secret_costs_no_request() {
    let current = token("in-place");
    let cached = CachedSecret::from(target::render(&Target::of(&cr()), &current, &issued_for()).unwrap());
    let (result, _) = write_with(Some(&cached), None, |h| async move { h }).await;
    result.unwrap();
}
