//! The target Secret: what it holds, how we recognise our own, and how a stored token is
//! read back (so a restarted operator reuses a token that is still right).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::GroupDocsCredential;
use crate::redact::Sensitive;
use crate::token::Token;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "groupdocs-token-operator";
pub const CREDENTIAL_ANNOTATION: &str = "groupdocs.cloud/credential";
pub const TOKEN_URL_ANNOTATION: &str = "groupdocs.cloud/token-url";
pub const CLIENT_ID_ANNOTATION: &str = "groupdocs.cloud/client-id";
pub const SCOPE_ANNOTATION: &str = "groupdocs.cloud/scope";
pub const CLIENT_SECRET_VERSION_ANNOTATION: &str = "groupdocs.cloud/client-secret-version";
pub const ISSUED_AT_ANNOTATION: &str = "groupdocs.cloud/issued-at";

pub const ACCESS_TOKEN_KEY: &str = "access_token";
pub const TOKEN_TYPE_KEY: &str = "token_type";
pub const EXPIRES_AT_KEY: &str = "expires_at";
pub const AUTHORIZATION_KEY: &str = "authorization";

/// What a token was issued for. A stored token is reused only when all of it still holds;
/// the client secret enters as the client Secret's resourceVersion, never as a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedFor {
    pub token_url: String,
    pub client_id: String,
    pub scope: Option<String>,
    pub client_secret_version: String,
}

/// Whose Secret a Secret of the target's name is. Decided by the controller ownerReference's
/// UID alone: labels can be edited by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    Absent,
    Ours,
    Foreign,
}

pub fn ownership(existing: Option<&Secret>, cr: &GroupDocsCredential) -> Ownership {
    let Some(secret) = existing else {
        return Ownership::Absent;
    };
    let uid = cr.meta().uid.as_deref();
    let owned = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid);
    if owned { Ownership::Ours } else { Ownership::Foreign }
}

/// The Secret as it should be for `token`.
pub fn render(cr: &GroupDocsCredential, token: &Token, issued_for: &IssuedFor) -> Secret {
    let mut labels = cr.spec.target.labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    let mut annotations = cr.spec.target.annotations.clone();
    annotations.insert(CREDENTIAL_ANNOTATION.to_string(), cr.metadata.name.clone().unwrap_or_default());
    annotations.insert(TOKEN_URL_ANNOTATION.to_string(), issued_for.token_url.clone());
    annotations.insert(CLIENT_ID_ANNOTATION.to_string(), issued_for.client_id.clone());
    annotations.insert(CLIENT_SECRET_VERSION_ANNOTATION.to_string(), issued_for.client_secret_version.clone());
    annotations.insert(ISSUED_AT_ANNOTATION.to_string(), token.issued_at.to_string());
    match &issued_for.scope {
        Some(scope) => annotations.insert(SCOPE_ANNOTATION.to_string(), scope.clone()),
        None => annotations.remove(SCOPE_ANNOTATION),
    };
    let data = BTreeMap::from([
        (ACCESS_TOKEN_KEY.to_string(), bytes(token.access_token.expose())),
        (TOKEN_TYPE_KEY.to_string(), bytes(&token.token_type)),
        (EXPIRES_AT_KEY.to_string(), bytes(&token.expires_at.to_string())),
        (AUTHORIZATION_KEY.to_string(), bytes(token.authorization().expose())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(cr.target_name()),
            namespace: cr.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(cr)]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

fn owner_reference(cr: &GroupDocsCredential) -> OwnerReference {
    cr.controller_owner_ref(&()).expect("a stored GroupDocsCredential has a name and uid")
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

/// `existing` brought in line with `desired`: our data exactly, our labels, annotations and
/// ownerReference; labels and annotations others added stay. The result keeps `existing`'s
/// uid and resourceVersion, so the update fails rather than overwrite a different object.
pub fn merge(existing: &Secret, desired: &Secret) -> Secret {
    let mut merged = existing.clone();
    let meta = &mut merged.metadata;
    meta.managed_fields = None;
    meta.labels.get_or_insert_default().extend(desired.metadata.labels.clone().unwrap_or_default());
    let annotations = meta.annotations.get_or_insert_default();
    if !desired.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(SCOPE_ANNOTATION)) {
        annotations.remove(SCOPE_ANNOTATION);
    }
    annotations.extend(desired.metadata.annotations.clone().unwrap_or_default());
    let desired_owner = desired.metadata.owner_references.clone().unwrap_or_default();
    let owners = meta.owner_references.get_or_insert_default();
    owners.retain(|o| !desired_owner.iter().any(|d| d.uid == o.uid));
    owners.extend(desired_owner);
    merged.data = desired.data.clone();
    merged.string_data = None;
    merged.type_ = desired.type_.clone();
    merged
}

/// True when writing `merge(existing, desired)` would change anything.
pub fn needs_update(existing: &Secret, desired: &Secret) -> bool {
    let merged = merge(existing, desired);
    let mut current = existing.clone();
    current.metadata.managed_fields = None;
    merged != current
}

/// The token a Secret holds and what it was issued for, if it is complete and readable.
pub fn read_token(secret: &Secret) -> Option<(Token, IssuedFor)> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok());
    let annotations = secret.metadata.annotations.as_ref()?;
    let annotation = |key: &str| annotations.get(key).cloned();
    let access_token = text(ACCESS_TOKEN_KEY).filter(|t| !t.is_empty())?;
    let expires_at: Timestamp = text(EXPIRES_AT_KEY)?.parse().ok()?;
    let issued_at: Timestamp = annotation(ISSUED_AT_ANNOTATION)?.parse().ok()?;
    let token = Token {
        access_token: Sensitive::new(access_token),
        token_type: text(TOKEN_TYPE_KEY).unwrap_or_else(|| "Bearer".to_string()),
        issued_at,
        expires_at,
    };
    let issued_for = IssuedFor {
        token_url: annotation(TOKEN_URL_ANNOTATION)?,
        client_id: annotation(CLIENT_ID_ANNOTATION)?,
        scope: annotation(SCOPE_ANNOTATION),
        client_secret_version: annotation(CLIENT_SECRET_VERSION_ANNOTATION)?,
    };
    Some((token, issued_for))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::GroupDocsCredentialSpec;
    use jiff::SignedDuration;

    fn cr() -> GroupDocsCredential {
        let mut cr = GroupDocsCredential::new("viewer", GroupDocsCredentialSpec::default());
        cr.metadata.namespace = Some("apps".into());
        cr.metadata.uid = Some("uid-1".into());
        cr.spec.target.labels.insert("team".into(), "docs".into());
        cr
    }

    fn token() -> Token {
        let issued_at: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        Token {
            access_token: Sensitive::new("eyJ.abc.def"),
            token_type: "Bearer".into(),
            issued_at,
            expires_at: issued_at + SignedDuration::from_hours(24),
        }
    }

    fn issued_for() -> IssuedFor {
        IssuedFor {
            token_url: "https://api.groupdocs.cloud/connect/token".into(),
            client_id: "client".into(),
            scope: None,
            client_secret_version: "42".into(),
        }
    }

    #[test]
    fn renders_the_documented_keys_labels_and_owner() {
        let s = render(&cr(), &token(), &issued_for());
        let data = s.data.as_ref().unwrap();
        assert_eq!(data[ACCESS_TOKEN_KEY].0, b"eyJ.abc.def");
        assert_eq!(data[TOKEN_TYPE_KEY].0, b"Bearer");
        assert_eq!(data[EXPIRES_AT_KEY].0, b"2026-11-29T10:00:00Z");
        assert_eq!(data[AUTHORIZATION_KEY].0, b"Bearer eyJ.abc.def");
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels["team"], "docs");
        assert_eq!(s.metadata.name.as_deref(), Some("viewer-token"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("uid-1", Some(true)));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
    }

    #[test]
    fn reads_back_what_it_rendered() {
        let s = render(&cr(), &token(), &issued_for());
        assert_eq!(read_token(&s), Some((token(), issued_for())));
    }

    #[test]
    fn ownership_is_by_controller_uid_not_labels() {
        let cr = cr();
        let mut s = render(&cr, &token(), &issued_for());
        assert_eq!(ownership(Some(&s), &cr), Ownership::Ours);
        s.metadata.labels = None;
        assert_eq!(ownership(Some(&s), &cr), Ownership::Ours, "a stripped label does not make it foreign");
        s.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
        assert_eq!(ownership(Some(&s), &cr), Ownership::Foreign);
        assert_eq!(ownership(None, &cr), Ownership::Absent);
    }

    #[test]
    fn merge_repairs_our_parts_and_keeps_others() {
        let cr = cr();
        let desired = render(&cr, &token(), &issued_for());
        let mut edited = desired.clone();
        edited.metadata.uid = Some("secret-uid".into());
        edited.metadata.resource_version = Some("7".into());
        edited.metadata.labels.as_mut().unwrap().remove(MANAGED_BY_LABEL);
        edited.metadata.labels.as_mut().unwrap().insert("extra".into(), "kept".into());
        edited.data.as_mut().unwrap().insert(ACCESS_TOKEN_KEY.into(), bytes("tampered"));
        edited.data.as_mut().unwrap().insert("junk".into(), bytes("x"));
        assert!(needs_update(&edited, &desired));
        let merged = merge(&edited, &desired);
        assert_eq!(merged.data, desired.data);
        assert_eq!(merged.metadata.labels.as_ref().unwrap()["extra"], "kept");
        assert_eq!(merged.metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(merged.metadata.uid.as_deref(), Some("secret-uid"));
        assert_eq!(merged.metadata.resource_version.as_deref(), Some("7"));
        assert!(!needs_update(&merged, &desired), "a repaired Secret needs no further write");
    }
}
