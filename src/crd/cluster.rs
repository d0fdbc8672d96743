//! The `ClusterGroupDocsCredential` custom resource: one GroupDocs client shared with many
//! namespaces. Its client Secret lives in the operator's own namespace
//! (`--cluster-resource-namespace`), like a cert-manager ClusterIssuer's, so only those who can
//! write there control the client; each selected namespace receives a copy of the token Secret.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::CustomResource;
use kube::core::{Selector, SelectorExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ClientSecretRef, GroupDocsCredential, GroupDocsCredentialSpec, GroupDocsCredentialStatus, REFRESH_ANNOTATION,
    RolloutRestartTarget, TargetSecret, ValidSpec, default_token_url, rules,
};
use crate::error::Error;

/// The most failing namespaces listed in status (the counts cover them all).
pub const MAX_FAILED_NAMESPACES_LISTED: usize = 20;

/// A GroupDocs Cloud client whose access token the operator keeps fresh in a Secret of every
/// selected namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "groupdocs.cloud",
    version = "v1alpha1",
    kind = "ClusterGroupDocsCredential",
    status = "ClusterGroupDocsCredentialStatus",
    shortname = "cgdc",
    category = "groupdocs",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"integer","jsonPath":".status.namespaces.selected"}"#,
    printcolumn = r#"{"name":"Synced","type":"integer","jsonPath":".status.namespaces.ready"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.namespaces.failed"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    derive = "PartialEq",
    derive = "Default",
    doc = "Keeps a GroupDocs Cloud access token fresh in a Secret of every selected namespace",
    validation = kube::core::Rule::new(rules::TARGET_DIFFERS_RULE)
        .message(rules::TARGET_DIFFERS_MESSAGE)
        .field_path(".spec.target.name"),
    validation = kube::core::Rule::new(rules::DEFAULT_TARGET_FITS_RULE)
        .message(rules::DEFAULT_TARGET_FITS_MESSAGE)
        .field_path(".spec.target")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": rules::SELECTION_RULE, "message": rules::SELECTION_MESSAGE}]))]
pub struct ClusterGroupDocsCredentialSpec {
    /// The Secret, in the operator's `--cluster-resource-namespace`, that holds the GroupDocs
    /// client id and secret. It must carry the label `groupdocs.cloud/client-credentials: "true"`.
    pub client_secret_ref: ClientSecretRef,

    /// Namespaces whose labels match receive the token Secret. `{}` selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rules::label_selector_schema")]
    pub namespace_selector: Option<LabelSelector>,

    /// Namespaces that receive the token Secret, in addition to those the selector matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("items" = {"type": "string", "maxLength": 63,
        "x-kubernetes-validations": [{"rule": rules::NAMESPACE_NAME_RULE, "message": rules::NAMESPACE_NAME_MESSAGE}]}))]
    pub namespaces: Vec<String>,

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

    /// The Secret written into each selected namespace. Default name: `<metadata.name>-token`.
    #[serde(default)]
    pub target: TargetSecret,

    /// How long before expiry the token is renewed, as a duration such as `1h`, `30m` or
    /// `1h30m`. Default: when one third of the token's lifetime is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = rules::MAX_DURATION_LENGTH), extend("x-kubernetes-validations" = [
        {"rule": rules::DURATION_RULE, "message": rules::DURATION_MESSAGE}
    ]))]
    pub renew_before: Option<String>,

    /// Workloads restarted in each selected namespace (where they exist) when the token
    /// changes. Takes effect only when the operator runs with `--rollout-restarts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = rules::MAX_ROLLOUT_TARGETS))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,

    /// Stop renewing. The tokens already written stay until they expire.
    #[serde(default)]
    pub suspend: bool,
}

/// Observed state, written only by the operator: the token's, as on the namespaced kind, and
/// how its copies fare across namespaces.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterGroupDocsCredentialStatus {
    #[serde(flatten)]
    pub token: GroupDocsCredentialStatus,
    /// How many namespaces are selected, hold the current token, and failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespaceCounts>,
    /// Namespaces whose Secret could not be written, with the reason (at most 20 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_namespaces: Vec<FailedNamespace>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NamespaceCounts {
    pub selected: i64,
    pub ready: i64,
    pub failed: i64,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct FailedNamespace {
    pub namespace: String,
    /// A condition reason, such as `TargetConflict`.
    pub reason: String,
    pub message: String,
}

/// A cluster credential's spec checked once: the namespaced checks plus the selection.
#[derive(Clone, Debug)]
pub struct ValidClusterSpec {
    pub common: ValidSpec,
    pub selection: Selection,
}

/// Which namespaces a cluster credential serves.
#[derive(Clone, Debug)]
pub struct Selection {
    selector: Option<Selector>,
    pub listed: Vec<String>,
}

impl Selection {
    /// True when a namespace with these labels is selected by the selector (the explicit list
    /// is handled by the caller, which also needs to know which listed namespaces are missing).
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

impl ClusterGroupDocsCredential {
    /// The token side of this credential as a namespaced credential living in
    /// `client_namespace`: the client Secret, the token request, renewal and status logic are
    /// then exactly the namespaced kind's.
    pub fn token_view(&self, client_namespace: &str) -> GroupDocsCredential {
        let spec = &self.spec;
        let annotations: BTreeMap<String, String> = self
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.as_str() == REFRESH_ANNOTATION)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        GroupDocsCredential {
            metadata: ObjectMeta {
                name: self.metadata.name.clone(),
                namespace: Some(client_namespace.to_string()),
                uid: self.metadata.uid.clone(),
                generation: self.metadata.generation,
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: GroupDocsCredentialSpec {
                client_secret_ref: spec.client_secret_ref.clone(),
                token_url: spec.token_url.clone(),
                scope: spec.scope.clone(),
                target: spec.target.clone(),
                renew_before: spec.renew_before.clone(),
                rollout_restart_targets: Vec::new(),
                suspend: spec.suspend,
            },
            status: self.status.as_ref().map(|s| s.token.clone()),
        }
    }

    /// The operator's own copy of the token, in the client Secret's namespace: the only one it
    /// reads the token back from.
    pub fn source_secret_name(&self) -> String {
        format!("cgdc.{}", self.metadata.name.as_deref().unwrap_or_default())
    }

    /// Checks the spec; the error names the field.
    pub fn validate(&self, client_namespace: &str) -> Result<ValidClusterSpec, Error> {
        let common = self.token_view(client_namespace).validate()?;
        let spec = &self.spec;
        super::check_rollout_targets(&spec.rollout_restart_targets)?;
        if let Some(selector) = &spec.namespace_selector {
            rules::check_label_selector(selector)
                .map_err(|e| Error::InvalidSpec(format!("spec.namespaceSelector{e}")))?;
        }
        if spec.namespace_selector.is_none() && spec.namespaces.is_empty() {
            return Err(Error::InvalidSpec(
                "set spec.namespaceSelector or spec.namespaces: no namespace is selected".into(),
            ));
        }
        let source = self.source_secret_name();
        if !rules::is_dns_subdomain(&source) {
            return Err(Error::InvalidSpec(format!(
                "metadata.name is too long: the operator keeps the token in a Secret named {source:?}, at most 253 characters"
            )));
        }
        if let Some(bad) = spec.namespaces.iter().find(|ns| !rules::is_dns_label(ns)) {
            return Err(Error::InvalidSpec(format!(
                "spec.namespaces: {bad:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
            )));
        }
        let selector = spec
            .namespace_selector
            .clone()
            .map(Selector::try_from)
            .transpose()
            .map_err(|e| Error::InvalidSpec(format!("spec.namespaceSelector: {e}")))?;
        let mut listed = spec.namespaces.clone();
        listed.sort();
        listed.dedup();
        Ok(ValidClusterSpec { common, selection: Selection { selector, listed } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgdc(spec: serde_json::Value) -> ClusterGroupDocsCredential {
        let mut cr = ClusterGroupDocsCredential::new("shared", serde_json::from_value(spec).unwrap());
        cr.metadata.uid = Some("uid-c".into());
        cr.metadata.generation = Some(3);
        cr
    }

    #[test]
    fn the_token_view_is_the_namespaced_credential_in_the_client_namespace() {
        let mut cr = cgdc(serde_json::json!({"clientSecretRef": {"name": "c"}, "namespaces": ["a"], "scope": "s"}));
        cr.metadata.annotations = Some(BTreeMap::from([
            (REFRESH_ANNOTATION.to_string(), "1".to_string()),
            ("other".to_string(), "x".to_string()),
        ]));
        let view = cr.token_view("ops");
        assert_eq!(view.metadata.namespace.as_deref(), Some("ops"));
        assert_eq!(view.metadata.uid.as_deref(), Some("uid-c"));
        assert_eq!(view.metadata.generation, Some(3));
        assert_eq!(view.refresh_request(), Some("1"));
        assert_eq!(view.target_name(), "shared-token");
        assert_eq!(view.spec.scope.as_deref(), Some("s"));
    }

    #[test]
    fn a_selection_is_required_and_checked() {
        let err = cgdc(serde_json::json!({"clientSecretRef": {"name": "c"}})).validate("ops").unwrap_err();
        assert!(err.to_string().contains("no namespace is selected"), "{err}");
        let err = cgdc(serde_json::json!({"clientSecretRef": {"name": "c"}, "namespaces": ["Team_A"]}))
            .validate("ops")
            .unwrap_err();
        assert!(err.to_string().contains("spec.namespaces"), "{err}");
        let err = cgdc(serde_json::json!({"clientSecretRef": {"name": "c"},
            "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}))
        .validate("ops")
        .unwrap_err();
        assert!(err.to_string().contains("spec.namespaceSelector"), "{err}");
        assert_eq!(err.reason(), "InvalidSpec");
    }

    #[test]
    fn the_selector_matches_labels_and_an_empty_one_matches_all() {
        let valid = cgdc(serde_json::json!({"clientSecretRef": {"name": "c"},
            "namespaceSelector": {"matchLabels": {"team": "docs"}}, "namespaces": ["b", "a", "a"]}))
        .validate("ops")
        .unwrap();
        assert_eq!(valid.selection.listed, vec!["a", "b"]);
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(valid.selection.matches_labels(&labels(&[("team", "docs")])));
        assert!(!valid.selection.matches_labels(&labels(&[("team", "web")])));
        let all = cgdc(serde_json::json!({"clientSecretRef": {"name": "c"}, "namespaceSelector": {}}))
            .validate("ops")
            .unwrap();
        assert!(all.selection.matches_labels(&BTreeMap::new()));
        let listed_only =
            cgdc(serde_json::json!({"clientSecretRef": {"name": "c"}, "namespaces": ["a"]})).validate("ops").unwrap();
        assert!(!listed_only.selection.matches_labels(&BTreeMap::new()));
    }
}

#[cfg(test)]
mod generated {
    #[test]
    fn committed_cluster_crd_is_current() {
        let yaml = super::super::cluster_crd_yaml().unwrap();
        let committed = include_str!("../../crds/groupdocs.cloud_clustergroupdocscredentials.yaml");
        assert!(committed == yaml, "crds/ is stale: run `make crds` and commit the result");
        let chart = include_str!(
            "../../deploy/helm/groupdocs-token-operator/files/groupdocs.cloud_clustergroupdocscredentials.yaml"
        );
        assert!(chart == yaml, "the chart's CRD is stale: run `make crds` and commit the result");
        assert!(yaml.contains("scope: Cluster") && yaml.contains("- cgdc") && yaml.contains("- groupdocs"));
    }
}
