//! The `GroupDocsCredential` custom resource (`groupdocs.cloud/v1alpha1`).

use std::collections::BTreeMap;

use jiff::SignedDuration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::format::TokenFormat;

pub mod cached;
pub mod cluster;
pub mod rules;
pub use cached::CachedCredential;
pub use cluster::{ClusterGroupDocsCredential, ClusterGroupDocsCredentialSpec, ClusterGroupDocsCredentialStatus};

/// Default token endpoint, as GroupDocs documents it.
pub const DEFAULT_TOKEN_URL: &str = "https://api.groupdocs.cloud/connect/token";
/// Annotation that forces one renewal per new value (like ESO's force-sync).
pub const REFRESH_ANNOTATION: &str = "groupdocs.cloud/refresh-requested-at";

/// A GroupDocs Cloud client whose access token the operator keeps fresh in a Secret.
///
/// The operator exchanges the client id and secret of `clientSecretRef` for a JWT with the
/// OAuth 2.0 `client_credentials` grant, writes it into the target Secret, and renews it
/// before it expires.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "groupdocs.cloud",
    version = "v1alpha1",
    kind = "GroupDocsCredential",
    namespaced,
    status = "GroupDocsCredentialStatus",
    shortname = "gdc",
    category = "groupdocs",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    derive = "PartialEq",
    derive = "Default",
    doc = "Keeps a GroupDocs Cloud access token fresh in a Secret of the same namespace",
    validation = kube::core::Rule::new(rules::TARGET_DIFFERS_RULE)
        .message(rules::TARGET_DIFFERS_MESSAGE)
        .field_path(".spec.target.name"),
    validation = kube::core::Rule::new(rules::DEFAULT_TARGET_FITS_RULE)
        .message(rules::DEFAULT_TARGET_FITS_MESSAGE)
        .field_path(".spec.target")
)]
#[serde(rename_all = "camelCase")]
pub struct GroupDocsCredentialSpec {
    /// The Secret, in the same namespace, that holds the GroupDocs client id and secret. It
    /// must carry the label `groupdocs.cloud/client-credentials: "true"`.
    pub client_secret_ref: ClientSecretRef,

    /// Token endpoint. Must match one of the operator's allowed token URL prefixes.
    #[serde(default = "default_token_url")]
    #[schemars(length(min = 1, max = 2048), extend("x-kubernetes-validations" = [
        {"rule": rules::TOKEN_URL_RULE, "message": rules::TOKEN_URL_MESSAGE}
    ]))]
    pub token_url: String,

    /// OAuth 2.0 scope, sent only when set (GroupDocs needs none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), extend("x-kubernetes-validations" = [
        {"rule": rules::SCOPE_RULE, "message": rules::SCOPE_MESSAGE}
    ]))]
    pub scope: Option<String>,

    /// The Secret the token is written to.
    #[serde(default)]
    pub target: TargetSecret,

    /// How long before expiry the token is renewed, as a duration such as `1h`, `30m` or
    /// `1h30m`. Default: when one third of the token's lifetime is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = rules::MAX_DURATION_LENGTH), extend("x-kubernetes-validations" = [
        {"rule": rules::DURATION_RULE, "message": rules::DURATION_MESSAGE}
    ]))]
    pub renew_before: Option<String>,

    /// Workloads in this namespace whose pods are restarted when the token changes, for
    /// programs that read the token only at start-up. Takes effect only when the operator runs
    /// with `--rollout-restarts`; at most one restart per workload per
    /// `--rollout-restart-min-interval`, none for the first token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = rules::MAX_ROLLOUT_TARGETS))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,

    /// Stop renewing. The token already in the Secret stays until it expires.
    #[serde(default)]
    pub suspend: bool,
}

pub(crate) fn default_token_url() -> String {
    DEFAULT_TOKEN_URL.to_string()
}

/// Where the client credentials live.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecretRef {
    /// Name of the Secret in the credential's namespace.
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [
        {"rule": rules::SECRET_NAME_RULE, "message": rules::NAME_MESSAGE}
    ]))]
    pub name: String,
    /// Key of the client id in the Secret.
    #[serde(default = "default_client_id_key")]
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [
        {"rule": rules::SECRET_KEY_RULE, "message": rules::SECRET_KEY_MESSAGE}
    ]))]
    pub client_id_key: String,
    /// Key of the client secret in the Secret.
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [
        {"rule": rules::SECRET_KEY_RULE, "message": rules::SECRET_KEY_MESSAGE}
    ]))]
    pub client_secret_key: String,
}

fn default_client_id_key() -> String {
    "client_id".to_string()
}

fn default_client_secret_key() -> String {
    "client_secret".to_string()
}

/// The Secret that receives the token.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": rules::TEMPLATE_KEYS_FREE_RULE, "message": rules::TEMPLATE_KEYS_FREE_MESSAGE, "fieldPath": ".template"}
]))]
pub struct TargetSecret {
    /// Secret name. Default: `<metadata.name>-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [
        {"rule": rules::SECRET_NAME_RULE, "message": rules::NAME_MESSAGE}
    ]))]
    pub name: Option<String>,
    /// Labels copied onto the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = rules::MAX_MAP_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": 63},
        "x-kubernetes-validations" = [
            {"rule": rules::LABEL_KEYS_RULE, "message": rules::LABEL_KEYS_MESSAGE},
            {"rule": rules::LABEL_VALUES_RULE, "message": rules::LABEL_VALUES_MESSAGE}
        ]
    ))]
    pub labels: BTreeMap<String, String>,
    /// Annotations copied onto the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = rules::MAX_MAP_ENTRIES,
        "x-kubernetes-validations" = [{"rule": rules::LABEL_KEYS_RULE, "message": rules::ANNOTATION_KEYS_MESSAGE}]
    ))]
    pub annotations: BTreeMap<String, String>,
    /// How the token is laid out in the Secret: `default` (keys `access_token`, `token_type`,
    /// `expires_at`, `authorization`), `env` (one key `groupdocs.env`, dotenv lines) or `json`
    /// (one key `token.json`).
    #[serde(default, skip_serializing_if = "TokenFormat::is_default")]
    pub format: TokenFormat,
    /// Extra Secret keys, each rendered from a template (MiniJinja, a Jinja2 dialect) whose only
    /// variables are `access_token`, `token_type`, `expires_at`, `expires_in` and
    /// `authorization`. They are written next to the format's keys and may not reuse them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = crate::format::MAX_TEMPLATES,
        "additionalProperties" = {"type": "string", "maxLength": crate::format::MAX_TEMPLATE_LEN},
        "x-kubernetes-validations" = [{"rule": rules::SECRET_KEYS_RULE, "message": rules::SECRET_KEYS_MESSAGE}]
    ))]
    pub template: BTreeMap<String, String>,
}

/// A workload whose pod template gets a restart annotation when the token changes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// Workload kind.
    pub kind: WorkloadKind,
    /// Workload name, in the credential's namespace.
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [
        {"rule": rules::SECRET_NAME_RULE, "message": rules::NAME_MESSAGE}
    ]))]
    pub name: String,
}

/// Kinds of workload that can be restarted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Observed state, written only by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupDocsCredentialStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`, in the kstatus convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the token in the target Secret expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the token in the target Secret was obtained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<Time>,
    /// When the operator plans to renew the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_time: Option<Time>,
    /// First 12 hex digits of the token's SHA-256: shows rotation without showing the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_fingerprint: Option<String>,
    /// When the last token request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Failed token requests since the last success.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_attempts: i64,
    /// After a failed token request: no request for this credential before this time, unless
    /// its spec or client Secret changes (kept across restarts and leader changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<Time>,
    /// The resourceVersion of the client Secret the last failed request used: a change to
    /// the Secret lifts `nextRetryTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_client_secret_version: Option<String>,
    /// The endpoint answered 429: no token request for this client before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_until: Option<Time>,
    /// The token for which `rolloutRestartTargets` were last restarted (or the first token,
    /// which restarts nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_restart_fingerprint: Option<String>,
    /// The last value of the `groupdocs.cloud/refresh-requested-at` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_request: Option<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl GroupDocsCredential {
    /// Name of the target Secret: `spec.target.name`, else `<metadata.name>-token`.
    pub fn target_name(&self) -> String {
        match &self.spec.target.name {
            Some(name) if !name.is_empty() => name.clone(),
            _ => format!("{}-token", self.metadata.name.as_deref().unwrap_or_default()),
        }
    }

    /// The value of the force-refresh annotation, if any.
    pub fn refresh_request(&self) -> Option<&str> {
        self.metadata.annotations.as_ref()?.get(REFRESH_ANNOTATION).map(String::as_str)
    }
}

/// A spec checked once, with its fields parsed: what a reconcile works from. The CRD's schema
/// already refuses most bad specs, but CRDs applied by hand may be old, so the operator checks
/// everything it relies on itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec {
    pub target_name: String,
    pub renew_before: Option<SignedDuration>,
    /// `spec.scope` when not empty.
    pub scope: Option<String>,
}

impl GroupDocsCredential {
    /// Checks the spec and parses each field once; the error names the field. It says what the
    /// CRD's CEL rules say (`rules`), for CRDs applied by hand that lack them.
    pub fn validate(&self) -> Result<ValidSpec, Error> {
        let spec = &self.spec;
        check_client_secret_ref(&spec.client_secret_ref)?;
        check_token_url(&spec.token_url)?;
        check_scope(spec.scope.as_deref())?;
        check_target(&spec.target)?;
        crate::format::check(&spec.target)?;
        check_rollout_targets(&spec.rollout_restart_targets)?;
        let renew_before = spec.renew_before.as_deref().map(parse_renew_before).transpose()?;
        let target_name = self.target_name();
        check_target_name(self, &target_name)?;
        Ok(ValidSpec { target_name, renew_before, scope: spec.scope.clone().filter(|s| !s.is_empty()) })
    }
}

fn invalid(field: &str, message: impl std::fmt::Display) -> Error {
    Error::InvalidSpec(format!("{field}: {message}"))
}

/// The API server's own words for a string over its schema's `maxLength` (which counts
/// characters, not bytes).
fn check_length(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.chars().count() > max {
        return Err(invalid(field, format!("Too long: may not be more than {max}")));
    }
    Ok(())
}

fn check_entries(field: &str, entries: usize, max: usize) -> Result<(), Error> {
    if entries > max {
        return Err(invalid(field, format!("Too many: {entries}: must have at most {max} items")));
    }
    Ok(())
}

fn check_client_secret_ref(r: &ClientSecretRef) -> Result<(), Error> {
    if !rules::is_dns_subdomain(&r.name) {
        return Err(invalid("spec.clientSecretRef.name", rules::NAME_MESSAGE));
    }
    for (field, key) in [
        ("spec.clientSecretRef.clientIdKey", &r.client_id_key),
        ("spec.clientSecretRef.clientSecretKey", &r.client_secret_key),
    ] {
        if !rules::is_secret_key(key) {
            return Err(invalid(field, rules::SECRET_KEY_MESSAGE));
        }
    }
    Ok(())
}

fn check_token_url(url: &str) -> Result<(), Error> {
    check_length("spec.tokenUrl", url, 2048)?;
    if !rules::is_token_url_shape(url) {
        return Err(invalid("spec.tokenUrl", rules::TOKEN_URL_MESSAGE));
    }
    Ok(())
}

fn check_scope(scope: Option<&str>) -> Result<(), Error> {
    let Some(scope) = scope else { return Ok(()) };
    check_length("spec.scope", scope, 1024)?;
    if rules::has_control_characters(scope) {
        return Err(invalid("spec.scope", rules::SCOPE_MESSAGE));
    }
    Ok(())
}

fn check_target(target: &TargetSecret) -> Result<(), Error> {
    if let Some(name) = &target.name
        && !rules::is_dns_subdomain(name)
    {
        return Err(invalid("spec.target.name", rules::NAME_MESSAGE));
    }
    check_entries("spec.target.labels", target.labels.len(), rules::MAX_MAP_ENTRIES)?;
    if !target.labels.keys().all(|k| rules::is_qualified_name(k)) {
        return Err(invalid("spec.target.labels", rules::LABEL_KEYS_MESSAGE));
    }
    if !target.labels.values().all(|v| rules::is_label_value(v)) {
        return Err(invalid("spec.target.labels", rules::LABEL_VALUES_MESSAGE));
    }
    check_entries("spec.target.annotations", target.annotations.len(), rules::MAX_MAP_ENTRIES)?;
    if !target.annotations.keys().all(|k| rules::is_qualified_name(k)) {
        return Err(invalid("spec.target.annotations", rules::ANNOTATION_KEYS_MESSAGE));
    }
    Ok(())
}

pub(crate) fn check_rollout_targets(targets: &[RolloutRestartTarget]) -> Result<(), Error> {
    check_entries("spec.rolloutRestartTargets", targets.len(), rules::MAX_ROLLOUT_TARGETS)?;
    match targets.iter().position(|t| !rules::is_dns_subdomain(&t.name)) {
        Some(i) => Err(invalid(&format!("spec.rolloutRestartTargets[{i}].name"), rules::NAME_MESSAGE)),
        None => Ok(()),
    }
}

/// The rule's grammar first (narrower than the parser's, which also reads `1 hour` or
/// `PT1H`), so that the operator and the API server accept the same strings.
fn parse_renew_before(s: &str) -> Result<SignedDuration, Error> {
    check_length("spec.renewBefore", s, rules::MAX_DURATION_LENGTH)?;
    if !rules::is_duration(s) {
        return Err(invalid("spec.renewBefore", rules::DURATION_MESSAGE));
    }
    crate::schedule::parse_duration(s).map_err(|e| invalid("spec.renewBefore", e))
}

fn check_target_name(cr: &GroupDocsCredential, target: &str) -> Result<(), Error> {
    if !rules::is_dns_subdomain(target) {
        return Err(invalid("metadata.name", rules::DEFAULT_TARGET_FITS_MESSAGE));
    }
    if cr.spec.client_secret_ref.name == target {
        return Err(invalid("spec.target.name", rules::TARGET_DIFFERS_MESSAGE));
    }
    Ok(())
}

/// The namespaced kind's CRD as YAML, as `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    serde_yaml_ng::to_string(&GroupDocsCredential::crd())
}

/// The cluster kind's CRD as YAML, as `crds/` holds it.
pub fn cluster_crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    serde_yaml_ng::to_string(&ClusterGroupDocsCredential::crd())
}

/// Both CRDs, as `groupdocs-token-operator crd` prints them (`make crds` splits them at `---`).
pub fn all_crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    Ok(format!("{}---\n{}", crd_yaml()?, cluster_crd_yaml()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_follow_the_design() {
        let spec: GroupDocsCredentialSpec =
            serde_json::from_value(serde_json::json!({"clientSecretRef": {"name": "c"}})).unwrap();
        assert_eq!(spec.token_url, DEFAULT_TOKEN_URL);
        assert_eq!(spec.client_secret_ref.client_id_key, "client_id");
        assert_eq!(spec.client_secret_ref.client_secret_key, "client_secret");
        assert!(!spec.suspend);
        let cr = GroupDocsCredential::new("viewer", spec);
        assert_eq!(cr.target_name(), "viewer-token");
    }

    #[test]
    fn committed_crd_is_current() {
        let committed = include_str!("../crds/groupdocs.cloud_groupdocscredentials.yaml");
        assert!(committed == crd_yaml().unwrap(), "crds/ is stale: run `make crds` and commit the result");
    }

    #[test]
    fn the_charts_crd_is_current() {
        let chart =
            include_str!("../deploy/helm/groupdocs-token-operator/files/groupdocs.cloud_groupdocscredentials.yaml");
        assert!(chart == crd_yaml().unwrap(), "the chart's CRD is stale: run `make crds` and commit the result");
    }

    #[test]
    fn crd_has_list_map_conditions_and_printer_columns() {
        let yaml = crd_yaml().unwrap();
        assert!(yaml.contains("x-kubernetes-list-type: map"));
        for col in ["Ready", "Reason", "Expires", "Age"] {
            assert!(yaml.contains(&format!("name: {col}")), "missing printer column {col}");
        }
        assert!(yaml.contains("- gdc"));
        assert!(yaml.contains("- groupdocs"));
    }
    #[test]
    fn validate_parses_each_field_once_and_names_the_field() {
        let spec = |v: serde_json::Value| -> GroupDocsCredential {
            let mut cr = GroupDocsCredential::new("viewer", serde_json::from_value(v).unwrap());
            cr.metadata.namespace = Some("apps".into());
            cr
        };
        let ok = spec(serde_json::json!({"clientSecretRef": {"name": "c"}, "renewBefore": "1h30m", "scope": ""}))
            .validate()
            .unwrap();
        assert_eq!(ok.renew_before, Some(SignedDuration::from_mins(90)));
        assert_eq!((ok.target_name.as_str(), ok.scope), ("viewer-token", None));
        for (bad, field) in [
            (serde_json::json!({"clientSecretRef": {"name": "c"}, "renewBefore": "soon"}), "spec.renewBefore"),
            (serde_json::json!({"clientSecretRef": {"name": "C"}}), "spec.clientSecretRef.name"),
            (serde_json::json!({"clientSecretRef": {"name": "c"}, "target": {"name": "c"}}), "would overwrite"),
            (serde_json::json!({"clientSecretRef": {"name": "c"}, "scope": "a\nb"}), "spec.scope"),
        ] {
            let err = spec(bad.clone()).validate().unwrap_err();
            assert_eq!(err.reason(), "InvalidSpec");
            assert!(err.to_string().contains(field), "{bad}: {err}");
        }
    }
}
