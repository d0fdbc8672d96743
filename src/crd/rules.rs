//! What a valid spec looks like, said twice from one source: as CEL rules that the API server
//! runs at `kubectl apply` (the CRD's `x-kubernetes-validations`), and as checks the operator
//! runs itself, because a CRD applied by hand may be older than the operator. The rules and the
//! checks share the messages below; `tests/validation-cases.yaml` holds them to the same answers
//! (a unit test for the checks, `tests/e2e_validation.rs` for the API server).
//!
//! Every string, map and list a rule walks has a length bound in the schema: the API server
//! refuses a CRD whose rules it estimates could cost too much.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde_json::Value;

use super::{ClusterGroupDocsCredential, GroupDocsCredential};
use crate::error::Error;

// Patterns are macros so that `concat!` can build the rule text at compile time. They are RE2
// (CEL's `matches`); the checks below implement the same languages by hand.
macro_rules! dns_label {
    () => {
        "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    };
}
macro_rules! dns_subdomain {
    () => {
        concat!(dns_label!(), "([.]", dns_label!(), ")*")
    };
}
/// A label or annotation key: an optional DNS subdomain and `/`, then a name of at most 63.
macro_rules! qualified_name {
    () => {
        concat!("(", dns_subdomain!(), "/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
    };
}
/// One unit of a duration; a fraction only on the last one (`$` inside the group).
macro_rules! duration_unit {
    ($unit:literal) => {
        concat!("([0-9]{1,9}[.][0-9]{1,9}", $unit, "$|[0-9]{1,9}", $unit, ")?")
    };
}

pub const SECRET_NAME_RULE: &str = concat!("self.matches(r'^", dns_subdomain!(), "$')");
pub const NAME_MESSAGE: &str = "must be lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit (an RFC 1123 subdomain)";

pub const NAMESPACE_NAME_RULE: &str = concat!("self.matches(r'^", dns_label!(), "$')");
pub const NAMESPACE_NAME_MESSAGE: &str = "must be a namespace name: lowercase letters, digits and '-', beginning and ending with a letter or digit (an RFC 1123 label)";

pub const SECRET_KEY_RULE: &str = "self.matches(r'^[-._a-zA-Z0-9]+$')";
pub const SECRET_KEY_MESSAGE: &str = "must be a Secret key: letters, digits, '-', '_' and '.'";

/// Template keys: Kubernetes also refuses `.` and anything starting with `..` as a data key.
pub const SECRET_KEYS_RULE: &str =
    "self.all(k, size(k) <= 253 && k.matches(r'^[-._a-zA-Z0-9]+$') && k != '.' && !k.startsWith('..'))";
pub const SECRET_KEYS_MESSAGE: &str =
    "not a Secret key: letters, digits, '-', '_' and '.', at most 253 characters, not '.' or starting with '..'";

/// Template keys may not reuse the keys the format writes itself (`crate::format`).
pub const TEMPLATE_KEYS_FREE_RULE: &str = "!has(self.template) || !self.template.exists(k, \
    has(self.format) && self.format == 'env' ? k == 'groupdocs.env' : \
    has(self.format) && self.format == 'json' ? k == 'token.json' : \
    k in ['access_token', 'token_type', 'expires_at', 'authorization'])";
pub const TEMPLATE_KEYS_FREE_MESSAGE: &str = "the format writes this key itself (default: access_token, token_type, expires_at, authorization; env: groupdocs.env; json: token.json); choose another name";

pub const DURATION_RULE: &str = concat!(
    "self != '' && self.matches(r'^",
    duration_unit!("h"),
    duration_unit!("m"),
    duration_unit!("s"),
    duration_unit!("ms"),
    duration_unit!("(us|µs)"),
    "([0-9]{1,9}ns)?$')"
);
pub const DURATION_MESSAGE: &str = "must be a duration such as 1h, 30m, 1h30m or 90s: units h, m, s, ms, us and ns from largest to smallest, each at most once, whole numbers of at most 9 digits (a fraction only on the last unit, as in 1.5h)";

pub const TOKEN_URL_RULE: &str = concat!(
    r"self.matches(r'^(?i)https://\S+$') || ",
    r"self.matches(r'^(?i)http://(localhost|127([.][0-9]{1,3}){3}|\[::1\])(:[0-9]{1,5})?([/?#]\S*)?$')"
);
pub const TOKEN_URL_MESSAGE: &str = "must be an https URL, or plain http to a loopback host (localhost, 127.0.0.1, [::1]), which the operator accepts only with --allow-http-loopback";

pub const SCOPE_RULE: &str = r"!self.matches(r'\p{Cc}')";
pub const SCOPE_MESSAGE: &str = "must not contain control characters";

pub const LABEL_KEYS_RULE: &str =
    concat!("self.all(k, k.matches(r'^", qualified_name!(), "$') && (!k.contains('/') || k.indexOf('/') <= 253))");
pub const LABEL_KEYS_MESSAGE: &str = "keys must be label keys: an optional DNS subdomain prefix and '/', then a name of at most 63 letters, digits, '-', '_' and '.', beginning and ending with a letter or digit";
pub const ANNOTATION_KEYS_MESSAGE: &str = "keys must be annotation keys: an optional DNS subdomain prefix and '/', then a name of at most 63 letters, digits, '-', '_' and '.', beginning and ending with a letter or digit";

pub const LABEL_KEY_RULE: &str =
    concat!("self.matches(r'^", qualified_name!(), "$') && (!self.contains('/') || self.indexOf('/') <= 253)");
pub const LABEL_KEY_MESSAGE: &str = "must be a label key: an optional DNS subdomain prefix and '/', then a name of at most 63 letters, digits, '-', '_' and '.', beginning and ending with a letter or digit";

pub const LABEL_VALUES_RULE: &str =
    "self.all(k, self[k].matches(r'^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$'))";
pub const LABEL_VALUES_MESSAGE: &str = "values must be label values: at most 63 letters, digits, '-', '_' and '.', beginning and ending with a letter or digit";

/// The default target name `<metadata.name>-token` is taken into account: CEL sees
/// `metadata.name` only from the root of the schema, so this rule sits there.
pub const TARGET_DIFFERS_RULE: &str = "self.spec.clientSecretRef.name != (has(self.spec.target) && has(self.spec.target.name) ? self.spec.target.name : self.metadata.name + '-token')";
pub const TARGET_DIFFERS_MESSAGE: &str = "the target Secret (spec.target.name, default <metadata.name>-token) must differ from spec.clientSecretRef.name: the token would overwrite the client credentials";

pub const DEFAULT_TARGET_FITS_RULE: &str =
    "(has(self.spec.target) && has(self.spec.target.name)) || size(self.metadata.name) <= 247";
pub const DEFAULT_TARGET_FITS_MESSAGE: &str = "metadata.name is too long for the default target name <metadata.name>-token (at most 253 characters): set spec.target.name";

pub const SELECTION_RULE: &str = "has(self.namespaceSelector) || (has(self.namespaces) && size(self.namespaces) > 0)";
pub const SELECTION_MESSAGE: &str = "set spec.namespaceSelector or spec.namespaces: no namespace is selected";

pub const SELECTOR_VALUES_RULE: &str = "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0";
pub const SELECTOR_VALUES_MESSAGE: &str = "values must be given for the operators In and NotIn, and only for them";
pub const SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];
pub const MAX_SELECTOR_EXPRESSIONS: usize = 32;

/// Bounds the rules' cost estimate, and so what a spec may hold.
pub const MAX_MAP_ENTRIES: usize = 64;
pub const MAX_ROLLOUT_TARGETS: usize = 64;
pub const MAX_DURATION_LENGTH: usize = 64;

/// The schema of a namespace selector: a metav1 LabelSelector with the bounds and rules the API
/// server needs to check it at apply time (k8s-openapi's schema has neither).
pub fn label_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let label_values = serde_json::json!({"type": "string", "maxLength": 63});
    schemars::json_schema!({
        "description": "Namespaces whose labels match receive the token Secret. `{}` selects every namespace.",
        "type": "object",
        "nullable": true,
        "properties": {
            "matchLabels": {
                "type": "object",
                "maxProperties": MAX_MAP_ENTRIES,
                "additionalProperties": label_values,
                "x-kubernetes-validations": [
                    {"rule": LABEL_KEYS_RULE, "message": LABEL_KEYS_MESSAGE},
                    {"rule": LABEL_VALUES_RULE, "message": LABEL_VALUES_MESSAGE}
                ]
            },
            "matchExpressions": {
                "type": "array",
                "maxItems": MAX_SELECTOR_EXPRESSIONS,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {
                            "type": "string",
                            "maxLength": 317,
                            "x-kubernetes-validations": [{"rule": LABEL_KEY_RULE, "message": LABEL_KEY_MESSAGE}]
                        },
                        "operator": {"type": "string", "enum": SELECTOR_OPERATORS},
                        "values": {
                            "type": "array",
                            "maxItems": MAX_MAP_ENTRIES,
                            "items": label_values,
                            "x-kubernetes-validations": [
                                {"rule": "self.all(v, v.matches(r'^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$'))",
                                 "message": LABEL_VALUES_MESSAGE}
                            ]
                        }
                    },
                    "x-kubernetes-validations": [{"rule": SELECTOR_VALUES_RULE, "message": SELECTOR_VALUES_MESSAGE}]
                }
            }
        },
        "x-kubernetes-map-type": "atomic"
    })
}

/// The operator's reading of [`label_selector_schema`]: the error is a path below the
/// selector and what is wrong there.
pub fn check_label_selector(selector: &LabelSelector) -> Result<(), String> {
    let labels = selector.match_labels.as_ref();
    if labels.is_some_and(|l| l.len() > MAX_MAP_ENTRIES) {
        return Err(format!(".matchLabels: must have at most {MAX_MAP_ENTRIES} items"));
    }
    if labels.is_some_and(|l| !l.keys().all(|k| is_qualified_name(k))) {
        return Err(format!(".matchLabels: {LABEL_KEYS_MESSAGE}"));
    }
    if labels.is_some_and(|l| !l.values().all(|v| is_label_value(v))) {
        return Err(format!(".matchLabels: {LABEL_VALUES_MESSAGE}"));
    }
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    if expressions.len() > MAX_SELECTOR_EXPRESSIONS {
        return Err(format!(".matchExpressions: must have at most {MAX_SELECTOR_EXPRESSIONS} items"));
    }
    for (i, e) in expressions.iter().enumerate() {
        let at = format!(".matchExpressions[{i}]");
        if !is_qualified_name(&e.key) {
            return Err(format!("{at}.key: {LABEL_KEY_MESSAGE}"));
        }
        if !SELECTOR_OPERATORS.contains(&e.operator.as_str()) {
            return Err(format!("{at}.operator: Unsupported value: {:?}", e.operator));
        }
        let values = e.values.as_deref().unwrap_or_default();
        if values.is_empty() == ["In", "NotIn"].contains(&e.operator.as_str()) {
            return Err(format!("{at}: {SELECTOR_VALUES_MESSAGE}"));
        }
        if values.len() > MAX_MAP_ENTRIES || !values.iter().all(|v| is_label_value(v)) {
            return Err(format!("{at}.values: {LABEL_VALUES_MESSAGE}"));
        }
    }
    Ok(())
}

/// An RFC 1123 subdomain of at most 253 characters, as Secret and workload names are.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label_part)
}

/// An RFC 1123 label of at most 63 characters, as namespace names are.
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_label_part(s)
}

fn is_dns_label_part(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_secret_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// A label or annotation key.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && name.len() <= 63 && is_label_value(name) && !name.is_empty()
}

pub fn is_label_value(s: &str) -> bool {
    let ends_ok = |c: Option<u8>| c.is_none_or(|b| b.is_ascii_alphanumeric());
    s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && ends_ok(s.bytes().next())
        && ends_ok(s.bytes().last())
}

/// The duration language of [`DURATION_RULE`]: `<digits>[.<digits>]<unit>` repeated, units
/// strictly from largest to smallest, a fraction only on the last (never on ns).
pub fn is_duration(s: &str) -> bool {
    const UNITS: [&[&str]; 6] = [&["h"], &["m"], &["s"], &["ms"], &["us", "µs"], &["ns"]];
    let mut rest = s;
    let mut smallest_allowed = 0;
    while !rest.is_empty() {
        let Some((whole, after)) = leading_digits(rest) else { return false };
        let (fraction, after) = match after.strip_prefix('.') {
            Some(f) => match leading_digits(f) {
                Some((_, after)) => (true, after),
                None => return false,
            },
            None => (false, after),
        };
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let Some(rank) = UNITS.iter().position(|names| names.contains(&unit)) else { return false };
        let last = after.is_empty();
        if rank < smallest_allowed || (fraction && (!last || rank == UNITS.len() - 1)) || whole.is_empty() {
            return false;
        }
        smallest_allowed = rank + 1;
        rest = after;
    }
    !s.is_empty()
}

/// One to nine ASCII digits at the start of `s`, and what follows them.
fn leading_digits(s: &str) -> Option<(&str, &str)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    (1..=9).contains(&n).then(|| s.split_at(n))
}

/// The URL shape of [`TOKEN_URL_RULE`]. Whether the operator sends anything there is its
/// allow-list's call at run time (`--allowed-token-url`, `--allow-http-loopback`).
pub fn is_token_url_shape(s: &str) -> bool {
    let no_space = |t: &str| !t.contains([' ', '\t', '\n', '\x0C', '\r']);
    if let Some(rest) = strip_prefix_ignore_case(s, "https://") {
        return !rest.is_empty() && no_space(rest);
    }
    let Some(rest) = strip_prefix_ignore_case(s, "http://") else { return false };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    is_loopback_host(host) && no_space(tail)
}

fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") || host == "[::1]" {
        return true;
    }
    let mut octets = host.split('.');
    octets.next() == Some("127")
        && octets.clone().count() == 3
        && octets.all(|o| (1..=3).contains(&o.len()) && o.bytes().all(|b| b.is_ascii_digit()))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

pub fn has_control_characters(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// What the operator says of a whole object of either kind, as a watch would hand it over:
/// `Ok` when it would work from it, else the `InvalidSpec` it would report.
/// `client_namespace` is the cluster kind's `--cluster-resource-namespace`.
pub fn check_object(object: Value, client_namespace: &str) -> Result<(), Error> {
    let unreadable = |e: serde_json::Error| Error::InvalidSpec(format!("not readable: {e}"));
    match object.get("kind").and_then(Value::as_str) {
        Some("ClusterGroupDocsCredential") => serde_json::from_value::<ClusterGroupDocsCredential>(object)
            .map_err(unreadable)?
            .validate(client_namespace)
            .map(drop),
        _ => serde_json::from_value::<GroupDocsCredential>(object).map_err(unreadable)?.validate().map(drop),
    }
}

/// One case of `tests/validation-cases.yaml`, the table that both the API server (with the
/// CRDs' rules) and [`check_object`] must answer as it says.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidationCase {
    pub name: String,
    #[serde(default = "namespaced_kind")]
    pub kind: String,
    /// `metadata.name`, when the case's name will not do.
    #[serde(default)]
    pub metadata_name: Option<String>,
    pub spec: Value,
    pub expect: Expected,
    /// For a rejection: text that both answers contain.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Expected {
    Accepted,
    Rejected,
}

fn namespaced_kind() -> String {
    "GroupDocsCredential".into()
}

/// Reads the table.
pub fn parse_validation_cases(yaml: &str) -> Result<Vec<ValidationCase>, serde_yaml_ng::Error> {
    serde_yaml_ng::from_str(yaml)
}

impl ValidationCase {
    /// The object to apply (namespaced kinds into `namespace`).
    pub fn object(&self, namespace: &str) -> Value {
        let name = self.metadata_name.as_deref().unwrap_or(&self.name);
        let mut metadata = serde_json::json!({"name": name});
        if self.kind == "GroupDocsCredential" {
            metadata["namespace"] = namespace.into();
        }
        serde_json::json!({"apiVersion": "groupdocs.cloud/v1alpha1", "kind": self.kind, "metadata": metadata, "spec": self.spec})
    }

    /// How `answer` (`who`'s) departs from the table, if it does.
    pub fn judge(&self, who: &str, answer: &Result<(), String>) -> Option<String> {
        match (&self.expect, answer, &self.message) {
            (Expected::Accepted, Err(_), _) => Some(format!("{who} rejected what the table accepts")),
            (Expected::Rejected, Ok(()), _) => Some(format!("{who} accepted what the table rejects")),
            (Expected::Rejected, Err(e), Some(text)) if !e.contains(text.as_str()) => {
                Some(format!("{who}'s message lacks {text:?}"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator's half of `tests/validation-cases.yaml` (`tests/e2e_validation.rs` holds
    /// the API server to the same table). Lists every case it answers wrongly.
    #[test]
    fn the_operator_answers_every_validation_case_as_the_table_says() {
        let cases = parse_validation_cases(include_str!("../../tests/validation-cases.yaml")).unwrap();
        assert!(cases.len() >= 40, "{} cases", cases.len());
        let problems: Vec<String> = cases
            .iter()
            .filter_map(|case| {
                let answer = check_object(case.object("apps"), "groupdocs-token-operator").map_err(|e| {
                    assert_eq!(e.reason(), "InvalidSpec", "{}", case.name);
                    e.to_string()
                });
                case.judge("the operator", &answer).map(|p| format!("{}: {p} ({answer:?})", case.name))
            })
            .collect();
        assert!(problems.is_empty(), "{} of {} cases:\n{}", problems.len(), cases.len(), problems.join("\n"));
    }

    #[test]
    fn names() {
        assert!(is_dns_subdomain("viewer-token") && is_dns_subdomain("a.b-c"));
        for bad in ["", "Upper", "-x", "x-", "a..b", "a_b", &"x".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        assert!(is_dns_label("team-a") && !is_dns_label("a.b") && !is_dns_label(&"x".repeat(64)));
        assert!(is_qualified_name("app.kubernetes.io/name") && is_qualified_name("A_b.c"));
        for bad in ["", "/x", "a/", "a/b/c", "bad key!", "-x", "UP/x", &"x".repeat(64)] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
        assert!(is_label_value("") && is_label_value("v1.2_3") && !is_label_value("-v") && !is_label_value("a b"));
    }

    #[test]
    fn durations() {
        for good in ["1h", "30m", "1h30m", "90s", "1.5h", "1h0.5m", "500ms", "10us", "10µs", "1ns", "1h2m3s4ms5us6ns"]
        {
            assert!(is_duration(good), "{good}");
        }
        for bad in [
            "",
            "soon",
            "-5m",
            "1h1h",
            "30m1h",
            "1.5h30m",
            "1.5ns",
            "1 h",
            " 1h",
            "1d",
            "1",
            "h",
            "1234567890s",
            "1.h",
            ".5h",
        ] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    /// What the rule lets through, the operator's parser must read.
    #[test]
    fn every_duration_the_rule_accepts_parses() {
        let units = ["h", "m", "s", "ms", "us", "µs", "ns"];
        for (i, a) in units.iter().enumerate() {
            for b in &units[i..] {
                for s in
                    [format!("1{a}"), format!("999999999{a}2{b}"), format!("7{a}0.123456789{b}"), format!("3.5{a}")]
                {
                    if is_duration(&s) {
                        crate::schedule::parse_duration(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
                    }
                }
            }
        }
    }

    #[test]
    fn token_url_shapes() {
        for good in [
            "https://api.groupdocs.cloud/connect/token",
            "HTTPS://x",
            "http://127.0.0.1:8080/connect/token",
            "http://LOCALHOST/x",
            "http://[::1]:9/x",
            "http://127.1.2.3",
        ] {
            assert!(is_token_url_shape(good), "{good}");
        }
        for bad in
            ["http://api.groupdocs.cloud/", "ftp://x", "not a url", "https://", "https://a b", "http://127.0.0.1.evil/"]
        {
            assert!(!is_token_url_shape(bad), "{bad}");
        }
    }
}
