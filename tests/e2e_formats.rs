//! End-to-end: token formats (`spec.target.format`) and templates (`spec.target.template`) on
//! the real control plane, read back as a workload would, and reused across a restart. Token
//! requests are counted on the token server's side.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use groupdocs_dev_token_server::DevServerArgs;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{Env, OPERATOR, wait_for};

const SECS_30: Duration = Duration::from_secs(30);

async fn env(name: &str) -> Env {
    let mut env = Env::new(OPERATOR, name, DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    env.start_operator(&[]);
    env
}

/// The Secret's data as text.
async fn data(env: &Env, secret: &str) -> BTreeMap<String, String> {
    let s = env.secrets().get(secret).await.unwrap();
    s.data.unwrap().into_iter().map(|(k, v)| (k, String::from_utf8(v.0).unwrap())).collect()
}

async fn resource_version(env: &Env, secret: &str) -> Option<String> {
    env.secrets().get(secret).await.unwrap().metadata.resource_version
}

/// `KEY=value` lines, as a dotenv reader takes them.
fn dotenv(text: &str) -> BTreeMap<&str, &str> {
    text.lines().filter_map(|l| l.split_once('=')).collect()
}

fn keys(data: &BTreeMap<String, String>) -> Vec<&str> {
    data.keys().map(String::as_str).collect()
}

async fn patch_spec(env: &Env, name: &str, spec: serde_json::Value) {
    let patch = json!({"spec": spec});
    env.credentials().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

async fn wait_operator_ready(env: &Env) {
    let op = env.operator.as_ref().unwrap();
    wait_for("the operator to report ready", SECS_30, || async {
        let url = format!("http://127.0.0.1:{}/readyz", op.probe_port);
        reqwest::get(&url).await.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_formats_render_and_a_restart_reuses_their_tokens() {
    let mut env = env("formats").await;
    let template = json!({
        "config.ini": "[groupdocs]\ntoken = {{ access_token }}\nexpires = {{ expires_at }}\n",
        "header": "{{ authorization }}",
    });
    env.create_credential("as-env", "gd-client", json!({"target": {"format": "env"}})).await;
    env.create_credential("as-json", "gd-client", json!({"target": {"format": "json"}})).await;
    env.create_credential("templated", "gd-client", json!({"target": {"format": "json", "template": template}})).await;
    for name in ["as-env", "as-json", "templated"] {
        env.wait_ready(name).await;
    }
    assert_eq!(env.dev.stats().token_requests, 1, "one client, one request");

    let as_env = data(&env, "as-env-token").await;
    assert_eq!(keys(&as_env), ["groupdocs.env"]);
    let vars = dotenv(&as_env["groupdocs.env"]);
    let token = vars["GROUPDOCS_ACCESS_TOKEN"].to_string();
    assert!(env.dev.accepts(&token), "the env file holds a token the server accepts");
    assert_eq!(vars["GROUPDOCS_TOKEN_TYPE"], "Bearer");
    let expires_at: jiff::Timestamp = vars["GROUPDOCS_EXPIRES_AT"].parse().unwrap();
    assert_eq!(vars.len(), 3, "{vars:?}");

    let as_json = data(&env, "as-json-token").await;
    assert_eq!(keys(&as_json), ["token.json"]);
    let doc: serde_json::Value = serde_json::from_str(&as_json["token.json"]).unwrap();
    assert_eq!(doc["access_token"], token.as_str());
    assert_eq!(doc["token_type"], "Bearer");
    assert_eq!(doc["expires_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap(), expires_at);
    assert_eq!(doc["expires_in"], 86_400, "the token's lifetime, as the endpoint granted it");

    let templated = data(&env, "templated-token").await;
    assert_eq!(keys(&templated), ["config.ini", "header", "token.json"]);
    assert_eq!(templated["config.ini"], format!("[groupdocs]\ntoken = {token}\nexpires = {expires_at}\n"));
    assert_eq!(templated["header"], format!("Bearer {token}"));
    assert_eq!(templated["token.json"], as_json["token.json"]);

    // A hand edit of a template's key is repaired from the token in place.
    let patch = json!({"stringData": {"header": "tampered"}});
    env.secrets().patch("templated-token", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("the edited key to be repaired", SECS_30, || async {
        (data(&env, "templated-token").await["header"] == format!("Bearer {token}")).then_some(())
    })
    .await;
    assert_eq!(env.dev.stats().token_requests, 1, "a repair needs no new token");

    let names = ["as-env-token", "as-json-token", "templated-token"];
    let mut versions = Vec::new();
    for name in names {
        versions.push(resource_version(&env, name).await);
    }
    env.restart_operator();
    wait_operator_ready(&env).await;
    let op = env.operator.as_ref().unwrap();
    support::wait_reconciles_where(op, |r| r == "Ok", 0, 3, SECS_30).await;
    assert_eq!(env.dev.stats().token_requests, 1, "the restarted operator reads every format back");
    for (name, before) in names.iter().zip(&versions) {
        assert_eq!(&resource_version(&env, name).await, before, "no write to {name}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_template_mistakes_are_invalid_spec_before_any_request() {
    let env = env("templates").await;
    let typo = json!({"target": {"template": {"config": "token={{ acess_token }}"}}});
    env.create_credential("typo", "gd-client", typo).await;
    let cond = env.wait_condition("typo", "Ready", "False", "InvalidSpec", SECS_30).await;
    assert!(cond.message.contains("`acess_token` is undefined"), "{}", cond.message);
    assert!(cond.message.contains("spec.target.template[\"config\"]"), "{}", cond.message);
    assert_eq!(env.dev.stats().token_requests, 0, "nothing is requested for a spec that cannot be rendered");
    assert!(env.secrets().get_opt("typo-token").await.unwrap().is_none());

    patch_spec(&env, "typo", json!({"target": {"template": {"config": "token={{ access_token }}"}}})).await;
    env.wait_ready("typo").await;
    let fixed = data(&env, "typo-token").await;
    assert_eq!(keys(&fixed), ["access_token", "authorization", "config", "expires_at", "token_type"]);
    assert_eq!(fixed["config"], format!("token={}", fixed["access_token"]));
    assert_eq!(env.dev.stats().token_requests, 1);

    // A change of format rewrites the Secret from the token in place.
    patch_spec(&env, "typo", json!({"target": {"format": "env"}})).await;
    let env_data = wait_for("the Secret in the env format", SECS_30, || async {
        let d = data(&env, "typo-token").await;
        (keys(&d) == ["config", "groupdocs.env"]).then_some(d)
    })
    .await;
    assert_eq!(dotenv(&env_data["groupdocs.env"])["GROUPDOCS_ACCESS_TOKEN"], fixed["access_token"]);
    let annotations = env.secrets().get("typo-token").await.unwrap().metadata.annotations.unwrap();
    assert_eq!(annotations["groupdocs.cloud/format"], "env");
    assert_eq!(env.dev.stats().token_requests, 1, "a new format needs no new token");
    env.cleanup().await;
}
