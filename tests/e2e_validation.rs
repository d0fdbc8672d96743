//! The API server and the operator judge specs alike: every case of
//! `tests/validation-cases.yaml` goes to the real control plane as a server-side dry-run apply
//! (the CRDs' schema and CEL rules) and to the operator's own validation; the test fails when
//! they disagree, or when either departs from what the table expects, and lists every case
//! that does. The table's other reader is the unit test in `src/crd/rules.rs`.

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The operator binary's path is there for other tests; this one runs no operator.
#[allow(dead_code)]
mod support;

use groupdocs_token_operator::crd::rules::{ValidationCase, check_object, parse_validation_cases};
use serde_json::Value;
use support::{control_plane, kubectl, kubectl_with_input};

const CRDS: [(&str, &str); 2] = [
    ("crds/groupdocs.cloud_groupdocscredentials.yaml", "groupdocscredentials.groupdocs.cloud"),
    ("crds/groupdocs.cloud_clustergroupdocscredentials.yaml", "clustergroupdocscredentials.groupdocs.cloud"),
];

/// The namespace the operator's cluster kind reads client Secrets from, as the operator would
/// be told with `--cluster-resource-namespace`.
const CLIENT_NAMESPACE: &str = "groupdocs-token-operator";

fn install_crds() {
    control_plane();
    for (file, name) in CRDS {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &path]);
        kubectl(&["wait", "--for=condition=Established", "--timeout=60s", &format!("crd/{name}")]);
    }
}

/// The API server's answer: `Ok` when a server-side dry-run apply is admitted, else kubectl's
/// error output.
fn api_server_verdict(object: &Value) -> Result<(), String> {
    kubectl_with_input(&["apply", "--server-side", "--dry-run=server", "-f", "-"], &object.to_string()).map(drop)
}

/// What is wrong with one case, if anything.
fn disagreement(case: &ValidationCase, api: &Result<(), String>, operator: &Result<(), String>) -> Option<String> {
    let say = |r: &Result<(), String>| match r {
        Ok(()) => "accepted".to_string(),
        Err(e) => format!("rejected: {}", e.trim()),
    };
    let both = format!("\n    API server: {}\n    operator:   {}", say(api), say(operator));
    if api.is_ok() != operator.is_ok() {
        return Some(format!("{}: the API server and the operator disagree{both}", case.name));
    }
    let problem = case.judge("API server", api).or_else(|| case.judge("operator", operator))?;
    Some(format!("{}: {problem}{both}", case.name))
}

#[test]
fn e2e_api_server_and_operator_agree_on_every_validation_case() {
    install_crds();
    let namespace = format!("validation-{}", std::process::id());
    kubectl(&["create", "namespace", &namespace]);
    let cases = parse_validation_cases(include_str!("validation-cases.yaml")).unwrap();
    let mut problems = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    for case in &cases {
        let object = case.object(&namespace);
        let api = api_server_verdict(&object);
        let operator = check_object(object, CLIENT_NAMESPACE).map_err(|e| e.to_string());
        match &api {
            Ok(()) => accepted += 1,
            Err(e) => {
                rejected += 1;
                eprintln!("{}: {}", case.name, e.trim());
            }
        }
        problems.extend(disagreement(case, &api, &operator));
    }
    kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
    eprintln!("{} cases: the API server accepted {accepted} and rejected {rejected}", cases.len());
    assert!(problems.is_empty(), "{} of {} cases:\n{}", problems.len(), cases.len(), problems.join("\n"));
}
