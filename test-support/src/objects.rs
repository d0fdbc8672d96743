//! The objects every test and the benchmark create: namespaces, client Secrets and
//! credentials.

use groupdocs_token_operator::controller::CLIENT_CREDENTIALS_LABEL;
use groupdocs_token_operator::crd::GroupDocsCredential;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Creates namespace `name`.
pub async fn create_namespace(client: &Client, name: &str) -> kube::Result<Namespace> {
    let api: Api<Namespace> = Api::all(client.clone());
    let meta = ObjectMeta { name: Some(name.to_string()), ..Default::default() };
    api.create(&PostParams::default(), &Namespace { metadata: meta, ..Default::default() }).await
}

/// A client Secret with `client_id` and `client_secret`, labelled for the operator unless
/// `labelled` is false.
pub fn client_secret(name: &str, id: &str, secret: &str, labelled: bool) -> Secret {
    let labels = if labelled { json!({CLIENT_CREDENTIALS_LABEL: "true"}) } else { json!({}) };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "stringData": {"client_id": id, "client_secret": secret},
    }))
    .expect("a Secret")
}

/// Creates or replaces a [`client_secret`] in `ns` (server-side apply).
pub async fn put_client_secret(client: &Client, ns: &str, name: &str, id: &str, secret: &str, labelled: bool) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let body = client_secret(name, id, secret, labelled);
    api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&body)).await.expect("apply the client Secret");
}

/// A GroupDocsCredential named `name` with `spec`.
pub fn credential(name: &str, spec: Value) -> GroupDocsCredential {
    serde_json::from_value(json!({
        "apiVersion": "groupdocs.cloud/v1alpha1", "kind": "GroupDocsCredential",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a GroupDocsCredential")
}

/// Creates [`credential`] `name` in `ns`.
pub async fn create_credential(client: &Client, ns: &str, name: &str, spec: Value) {
    let api: Api<GroupDocsCredential> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &credential(name, spec)).await.expect("create the credential");
}

/// Whether the credential's Ready condition is True.
pub fn is_ready(cr: &GroupDocsCredential) -> bool {
    cr.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
