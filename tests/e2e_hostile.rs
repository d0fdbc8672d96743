//! Hostile or broken GroupDocsCredentials: each one ends as a specific reason with a human
//! message (or is refused by the API server's schema validation with one), no token request
//! goes to a URL that is not allowed, and nothing makes the operator renew in a loop.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use groupdocs_dev_token_server::{DevServer, DevServerArgs, Fault};
use groupdocs_token_operator::crd::GroupDocsCredential;
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use support::{Env, OPERATOR, kubectl_with_input, reconciles_where, wait_reconciles_where};

enum Expect {
    /// The API server refuses the object; its message contains this.
    Rejected(&'static str),
    /// The credential gets condition `type`=`status` with `reason`; the message contains the text.
    Condition(&'static str, &'static str, &'static str, &'static str),
}

use Expect::{Condition, Rejected};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_hostile_credentials_get_specific_reasons() {
    let mut env = Env::new(OPERATOR, "hostile", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    env.put_client_secret("empty-values", " ", "", true).await;
    let redirector = DevServer::start(DevServerArgs::default()).await.unwrap();
    redirector.set_fault(Fault::Redirect { location: "https://evil.example/steal".into() });
    // The two local servers are listed like any endpoint (the loopback flag only permits http).
    let allowed = format!(
        "https://api.groupdocs.cloud/,https://169.254.169.254/,https://10.0.0.5/,http://{}/,http://{}/",
        env.dev.addr(),
        redirector.addr()
    );
    env.start_operator(&["--allowed-token-url", &allowed, "--max-backoff", "2s"]);

    let dev = env.dev.token_url();
    let long_scope = "s".repeat(2000);
    let cases: Vec<(&str, Value, Expect)> = vec![
        ("empty-ref-name", json!({"clientSecretRef": {"name": ""}}), Rejected("clientSecretRef.name")),
        ("missing-ref", json!({"clientSecretRef": null}), Rejected("clientSecretRef")),
        (
            "wrong-key-name",
            json!({"clientSecretRef": {"name": "gd-client", "clientIdKey": "id"}}),
            Condition("Stalled", "True", "SecretKeyMissing", "\"id\""),
        ),
        (
            "empty-key-values",
            json!({"clientSecretRef": {"name": "empty-values"}}),
            Condition("Stalled", "True", "SecretKeyMissing", "client_id"),
        ),
        ("http-url", json!({"tokenUrl": "http://api.groupdocs.cloud/connect/token"}), Rejected("must be an https URL")),
        (
            "userinfo-url",
            json!({"tokenUrl": "https://user:pw@api.groupdocs.cloud/connect/token"}),
            Condition("Stalled", "True", "TokenUrlNotAllowed", "credentials in the URL"),
        ),
        (
            "foreign-host",
            json!({"tokenUrl": "https://evil.example/connect/token"}),
            Condition("Stalled", "True", "TokenUrlNotAllowed", "allowed prefix"),
        ),
        (
            "lookalike-host",
            json!({"tokenUrl": "https://api.groupdocs.cloud.evil.example/connect/token"}),
            Condition("Stalled", "True", "TokenUrlNotAllowed", "allowed prefix"),
        ),
        (
            "redirecting-endpoint",
            json!({"tokenUrl": redirector.token_url()}),
            Condition("Reconciling", "True", "InvalidTokenResponse", "302"),
        ),
        (
            "link-local-metadata",
            json!({"tokenUrl": "https://169.254.169.254/connect/token"}),
            Condition("Stalled", "True", "TokenUrlNotAllowed", "--allow-private-networks"),
        ),
        (
            "private-address",
            json!({"tokenUrl": "https://10.0.0.5/connect/token"}),
            Condition("Stalled", "True", "TokenUrlNotAllowed", "--allow-private-networks"),
        ),
        (
            "control-chars-in-scope",
            json!({"tokenUrl": dev, "scope": "read\u{7}\nwrite"}),
            Rejected("control characters"),
        ),
        (
            "renew-before-too-long",
            json!({"tokenUrl": dev, "renewBefore": "48h"}),
            Condition("Ready", "True", "TokenIssued", "not shorter than the token lifetime"),
        ),
        ("negative-duration", json!({"renewBefore": "-5m"}), Rejected("renewBefore")),
        ("garbage-duration", json!({"renewBefore": "soon"}), Rejected("renewBefore")),
        // The CRD's CEL rules refuse these at apply; tests/validation-cases.yaml holds the
        // operator's own validation (for CRDs applied by hand) to the same answers.
        (
            "invalid-target-name",
            json!({"tokenUrl": dev, "target": {"name": "Not_A_Secret_Name"}}),
            Rejected("RFC 1123"),
        ),
        (
            "own-target-as-client",
            json!({"tokenUrl": dev, "target": {"name": "gd-client"}}),
            Rejected("would overwrite"),
        ),
        (
            "path-in-ref-name",
            json!({"tokenUrl": dev, "clientSecretRef": {"name": "../gd-client"}}),
            Rejected("RFC 1123"),
        ),
        ("not-a-url", json!({"tokenUrl": "not a url"}), Rejected("tokenUrl")),
        ("ftp-url", json!({"tokenUrl": "ftp://api.groupdocs.cloud/connect/token"}), Rejected("tokenUrl")),
        ("scope-too-long", json!({"scope": long_scope}), Rejected("scope")),
        ("bad-target-label", json!({"tokenUrl": dev, "target": {"labels": {"bad key!": "x"}}}), Rejected("label keys")),
    ];

    let api = env.credentials();
    let mut created = Vec::new();
    for (name, spec_patch, expect) in &cases {
        let mut spec =
            json!({"clientSecretRef": {"name": "gd-client"}, "tokenUrl": "https://api.groupdocs.cloud/connect/token"});
        merge(&mut spec, spec_patch);
        let object = json!({"apiVersion": "groupdocs.cloud/v1alpha1", "kind": "GroupDocsCredential", "metadata": {"name": name}, "spec": spec});
        // Through the dynamic path: a typed client could not even express some of these.
        let result = match serde_json::from_value::<GroupDocsCredential>(object.clone()) {
            Ok(cr) => api.create(&PostParams::default(), &cr).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(_) => kubectl_with_input(&["create", "-n", &env.ns, "-f", "-"], &object.to_string()).map(drop),
        };
        match (expect, result) {
            (Rejected(text), Err(e)) => {
                assert!(e.contains(text), "{name}: rejected, but the message lacks {text:?}: {e}")
            }
            (Rejected(_), Ok(())) => panic!("{name}: the API server accepted it"),
            (Condition(..), Err(e)) => panic!("{name}: rejected unexpectedly: {e}"),
            (Condition(..), Ok(())) => created.push(*name),
        }
    }
    let mut reached = 0;
    for (name, _, expect) in &cases {
        if let Condition(type_, status, reason, text) = expect {
            let c = env.wait_condition(name, type_, status, reason, Duration::from_secs(30)).await;
            assert!(c.message.contains(text), "{name}: message lacks {text:?}: {}", c.message);
            if *type_ == "Stalled" || *reason == "InvalidTokenResponse" {
                let ready = env.condition(name, "Ready").await.unwrap();
                assert_eq!(ready.status, "False", "{name}: no usable token");
            }
            reached += 1;
        }
    }

    // The server holds exactly the accepted cases, each with the condition it was expected to
    // reach, and none of the refused ones.
    let expected: BTreeSet<&str> =
        cases.iter().filter(|(_, _, e)| matches!(e, Condition(..))).map(|(name, _, _)| *name).collect();
    let refused = cases.len() - expected.len();
    let on_server: BTreeSet<String> =
        api.list(&ListParams::default()).await.unwrap().iter().map(|c| c.name_any()).collect();
    let on_server: BTreeSet<&str> = on_server.iter().map(String::as_str).collect();
    assert_eq!(on_server, expected, "the credentials on the server are the accepted cases");
    assert_eq!(created.iter().copied().collect::<BTreeSet<_>>(), expected, "every accepted case was created");
    assert_eq!(created.len(), expected.len());
    assert_eq!(reached, expected.len(), "every accepted case reached its condition");
    assert!(expected.len() >= 8 && refused >= 5, "{} accepted and {refused} refused cases", expected.len());

    // Only allowed URLs were ever asked, and the operator is not spinning on any case: once it
    // has reconciled every case again (an annotation on each triggers that), no new token
    // request went out, and the redirecting endpoint saw its retries spaced by the backoff.
    let requests = env.dev.stats().token_requests;
    assert_eq!(requests, 1, "one shared token for every case that reached the allowed endpoint");
    let op = env.operator.as_ref().unwrap();
    let is_redirect_result = |r: &str| matches!(r, "InvalidTokenResponse" | "RateLimited");
    let others = |r: &str| !is_redirect_result(r);
    let since = reconciles_where(op, others).await;
    let redirected = redirector.stats().token_requests;
    let watching = Instant::now();
    for name in &created {
        env.annotate(name, "e2e/poke", "again").await;
    }
    // Every case but the redirecting one ends in a result of its own: count those.
    let poked = created.len() as u64 - 1;
    wait_reconciles_where(op, others, since, poked, Duration::from_secs(30)).await;
    assert_eq!(env.dev.stats().token_requests, requests, "no renewal loop");
    // The redirecting case is looked at again and again (each annotation triggers a
    // reconcile), yet its retries stay at least 1 s apart (half the 2 s backoff cap): a loop
    // would send a request per look.
    let looks = reconciles_where(op, is_redirect_result).await;
    for i in 0..6 {
        env.annotate("redirecting-endpoint", "e2e/poke", &format!("look-{i}")).await;
        wait_reconciles_where(op, is_redirect_result, looks, i + 1, Duration::from_secs(30)).await;
    }
    let more = redirector.stats().token_requests - redirected;
    let elapsed = watching.elapsed();
    assert!(more as f64 <= elapsed.as_secs_f64() + 1.0, "backoff, not a loop: {more} requests in {elapsed:?}");
    assert!(!env.logs().contains("panicked"));
    env.cleanup().await;
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}
