//! The target Secret: what it holds, how we recognise our own, and how a stored token is
//! read back (so a restarted operator reuses a token that is still right). The data itself,
//! in the credential's format and with its templates, is [`crate::format`]'s.
//!
//! The watch cache keeps a [`CachedSecret`], a digest of each token Secret rather than the
//! Secret itself: full Secrets were the largest part of the operator's memory (the token
//! twice, three B-tree nodes each; see the README's Scale section).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::{GroupDocsCredential, TargetSecret};
use crate::error::Error;
use crate::format::{self, TokenFormat};
use crate::token::{Token, TokenFacts};

pub mod store;

pub use crate::format::{ACCESS_TOKEN_KEY, AUTHORIZATION_KEY, EXPIRES_AT_KEY, TOKEN_TYPE_KEY};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "groupdocs-token-operator";
pub const CREDENTIAL_ANNOTATION: &str = "groupdocs.cloud/credential";
pub const TOKEN_URL_ANNOTATION: &str = "groupdocs.cloud/token-url";
pub const CLIENT_ID_ANNOTATION: &str = "groupdocs.cloud/client-id";
pub const SCOPE_ANNOTATION: &str = "groupdocs.cloud/scope";
pub const CLIENT_SECRET_VERSION_ANNOTATION: &str = "groupdocs.cloud/client-secret-version";
pub const ISSUED_AT_ANNOTATION: &str = "groupdocs.cloud/issued-at";
/// The format of the data, when not `default`: read first when the token is read back.
pub const FORMAT_ANNOTATION: &str = "groupdocs.cloud/format";
/// With templates: `<templates digest>.<output digest>`, so that the cache, which holds
/// neither the templates nor the data, can tell a changed spec and a hand edit.
pub const TEMPLATES_ANNOTATION: &str = "groupdocs.cloud/templates";
/// Annotations written only in some cases, removed when not (others' annotations stay).
const CONDITIONAL_ANNOTATIONS: [&str; 3] = [SCOPE_ANNOTATION, FORMAT_ANNOTATION, TEMPLATES_ANNOTATION];

/// What a token was issued for. A stored token is reused only when all of it still holds;
/// the client secret enters as the client Secret's resourceVersion, never as a hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IssuedFor {
    pub token_url: String,
    pub client_id: String,
    pub scope: Option<String>,
    pub client_secret_version: String,
}

impl IssuedFor {
    fn digest(&self) -> u64 {
        hash_of(self)
    }
}

/// Whose Secret a Secret of the target's name is. Decided by the controller ownerReference's
/// UID alone: labels can be edited by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    Absent,
    Ours,
    Foreign,
}

/// One token Secret to write: the target of a namespaced credential, or one selected
/// namespace's copy for a cluster credential. Everything here is rendered from this alone.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    /// The credential's name, recorded in an annotation.
    pub credential: &'a str,
    pub namespace: String,
    pub name: String,
    pub spec: &'a TargetSecret,
    /// The controller ownerReference (none only for objects a test built without a uid).
    pub owner: Option<OwnerReference>,
    /// A label naming the cluster credential, so its copies can be listed across namespaces.
    pub cluster_credential: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The target of a namespaced credential.
    pub fn of(cr: &'a GroupDocsCredential) -> Self {
        Target {
            credential: cr.metadata.name.as_deref().unwrap_or_default(),
            namespace: cr.metadata.namespace.clone().unwrap_or_default(),
            name: cr.target_name(),
            spec: &cr.spec.target,
            owner: cr.controller_owner_ref(&()),
            cluster_credential: None,
        }
    }

    fn owner_uid(&self) -> Option<&str> {
        self.owner.as_ref().map(|o| o.uid.as_str())
    }
}

/// Label on the copies a `ClusterGroupDocsCredential` writes: its name.
pub const CLUSTER_CREDENTIAL_LABEL: &str = "groupdocs.cloud/cluster-credential";

pub fn ownership(existing: Option<&ObjectMeta>, target: &Target) -> Ownership {
    let Some(meta) = existing else {
        return Ownership::Absent;
    };
    let uid = target.owner_uid();
    let owned =
        meta.owner_references.iter().flatten().any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid);
    if owned { Ownership::Ours } else { Ownership::Foreign }
}

/// [`ownership`] as the cache tells it.
pub fn cached_ownership(existing: Option<&CachedSecret>, target: &Target) -> Ownership {
    let Some(cached) = existing else {
        return Ownership::Absent;
    };
    let uid = target.owner_uid().map(hash_of);
    let owned = uid.is_some() && cached.owners.iter().any(|o| o.controller_uid == uid);
    if owned { Ownership::Ours } else { Ownership::Foreign }
}

fn desired_labels(target: &Target) -> BTreeMap<String, String> {
    let mut labels = target.spec.labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    if let Some(name) = target.cluster_credential {
        labels.insert(CLUSTER_CREDENTIAL_LABEL.to_string(), name.to_string());
    }
    labels
}

fn desired_annotations(target: &Target, issued_at: Timestamp, issued_for: &IssuedFor) -> BTreeMap<String, String> {
    let mut annotations = target.spec.annotations.clone();
    annotations.insert(CREDENTIAL_ANNOTATION.to_string(), target.credential.to_string());
    annotations.insert(TOKEN_URL_ANNOTATION.to_string(), issued_for.token_url.clone());
    annotations.insert(CLIENT_ID_ANNOTATION.to_string(), issued_for.client_id.clone());
    annotations.insert(CLIENT_SECRET_VERSION_ANNOTATION.to_string(), issued_for.client_secret_version.clone());
    annotations.insert(ISSUED_AT_ANNOTATION.to_string(), issued_at.to_string());
    match &issued_for.scope {
        Some(scope) => annotations.insert(SCOPE_ANNOTATION.to_string(), scope.clone()),
        None => annotations.remove(SCOPE_ANNOTATION),
    };
    match target.spec.format {
        TokenFormat::Default => annotations.remove(FORMAT_ANNOTATION),
        format => annotations.insert(FORMAT_ANNOTATION.to_string(), format.name().to_string()),
    };
    // Depends on the token: added by `render`, compared apart by `needs_update`.
    annotations.remove(TEMPLATES_ANNOTATION);
    annotations
}

/// The Secret as it should be for `token`. Fails only when a template that passed validation
/// with stand-in values fails with the real token (`InvalidSpec`, without the token).
pub fn render(target: &Target, token: &Token, issued_for: &IssuedFor) -> Result<Secret, Error> {
    let labels = desired_labels(target);
    let mut annotations = desired_annotations(target, token.issued_at, issued_for);
    let rendered = format::render(target.spec, token)?;
    if let Some(digest) = rendered.templates_digest {
        annotations.insert(TEMPLATES_ANNOTATION.to_string(), digest);
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(target.name.clone()),
            namespace: Some(target.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(target.owner.clone().into_iter().collect()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(rendered.data),
        ..Secret::default()
    })
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
    for key in CONDITIONAL_ANNOTATIONS {
        if !desired.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(key)) {
            annotations.remove(key);
        }
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

/// What a reconcile reads of a token Secret: hashes of its ownerReferences, labels and
/// annotations, and facts about the token it holds, never the token and not its metadata:
/// a fraction of the Secret's size. An update reads the full Secret first (updates come once
/// per renewal or repair).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CachedSecret {
    // Boxed slices, not vectors: 24 bytes less keeps the whole in jemalloc's 256-byte class.
    owners: Box<[OwnerKey]>,
    labels: Box<[u64]>,
    annotations: Box<[u64]>,
    markers: Markers,
    type_: Option<String>,
    held: Option<Held>,
}

/// A token Secret as its watch decodes it: the metadata the watch and the cluster controller
/// read beside the [`CachedSecret`]. The namespaced controller keeps only the latter
/// ([`store::SecretViews`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(from = "Secret")]
pub struct WatchedSecret {
    /// Without labels, annotations and managedFields.
    pub metadata: ObjectMeta,
    pub cached: CachedSecret,
}

/// An ownerReference as the cache keeps it: enough to compare it whole and to tell the
/// controller's UID.
#[derive(Clone, Copy, Debug, PartialEq)]
struct OwnerKey {
    reference: u64,
    controller_uid: Option<u64>,
}

impl OwnerKey {
    fn of(owner: &OwnerReference) -> Self {
        let OwnerReference { api_version, block_owner_deletion, controller, kind, name, uid } = owner;
        OwnerKey {
            reference: hash_of(&(api_version, block_owner_deletion, controller, kind, name, uid)),
            controller_uid: (*controller == Some(true)).then(|| hash_of(uid)),
        }
    }
}

fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Our annotations that are present only in some cases: a stray one must be noticed too.
#[derive(Clone, Debug, Default, PartialEq)]
struct Markers {
    scope: bool,
    format: Option<String>,
    /// The templates' digest (the part of the annotation that does not depend on the token).
    templates: Option<String>,
}

impl Markers {
    fn of(annotations: &BTreeMap<String, String>) -> Self {
        Markers {
            scope: annotations.contains_key(SCOPE_ANNOTATION),
            format: annotations.get(FORMAT_ANNOTATION).cloned(),
            templates: annotations.get(TEMPLATES_ANNOTATION).map(|a| format::spec_part(a).to_string()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Held {
    facts: TokenFacts,
    /// [`IssuedFor::digest`]: only ever compared, and a third of the cached Secret's size
    /// as strings.
    issued_for: u64,
    /// The format the token was found in.
    format: TokenFormat,
    /// The data is exactly what [`render`] writes for this token in this format.
    exact: bool,
}

impl From<&Secret> for CachedSecret {
    fn from(secret: &Secret) -> Self {
        let held = read_held(secret).map(|(token, issued_for, format)| Held {
            exact: is_exact(secret, format, &token),
            facts: token.facts(),
            issued_for: issued_for.digest(),
            format,
        });
        let empty = BTreeMap::new();
        let meta = &secret.metadata;
        let annotations = meta.annotations.as_ref().unwrap_or(&empty);
        CachedSecret {
            owners: meta.owner_references.iter().flatten().map(OwnerKey::of).collect(),
            labels: pair_hashes(meta.labels.as_ref().unwrap_or(&empty)),
            markers: Markers::of(annotations),
            annotations: pair_hashes(annotations),
            type_: secret.type_.clone(),
            held,
        }
    }
}

impl From<Secret> for CachedSecret {
    fn from(secret: Secret) -> Self {
        CachedSecret::from(&secret)
    }
}

impl From<Secret> for WatchedSecret {
    fn from(secret: Secret) -> Self {
        let cached = CachedSecret::from(&secret);
        let Secret { mut metadata, .. } = secret;
        metadata.labels = None;
        metadata.annotations = None;
        metadata.managed_fields = None;
        WatchedSecret { metadata, cached }
    }
}

fn is_exact(secret: &Secret, format: TokenFormat, token: &Token) -> bool {
    let templates = secret.metadata.annotations.as_ref().and_then(|a| a.get(TEMPLATES_ANNOTATION));
    secret.data.as_ref().is_some_and(|data| format::is_exact(format, token, data, templates.map(String::as_str)))
}

impl Resource for WatchedSecret {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Secret::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Secret::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Secret::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Secret::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CachedSecret {
    /// The token it holds, if complete and readable.
    pub fn held_token(&self) -> Option<&TokenFacts> {
        self.held.as_ref().map(|h| &h.facts)
    }

    /// The token it holds, if complete, readable and issued for `issued_for`.
    pub fn held_token_for(&self, issued_for: &IssuedFor) -> Option<&TokenFacts> {
        self.held.as_ref().filter(|h| h.issued_for == issued_for.digest()).map(|h| &h.facts)
    }
}

/// Sorted hashes of `key=value` pairs: enough to tell whether ours are all present.
fn pair_hashes(map: &BTreeMap<String, String>) -> Box<[u64]> {
    let mut hashes: Vec<u64> = map.iter().map(|pair| hash_of(&pair)).collect();
    hashes.sort_unstable();
    hashes.into_boxed_slice()
}

fn contains_all(have: &[u64], want: &[u64]) -> bool {
    want.iter().all(|h| have.binary_search(h).is_ok())
}

/// The Secret as [`render`] would write it for a token with these facts, as the cache sees it.
pub fn desired(target: &Target, facts: &TokenFacts, issued_for: &IssuedFor) -> CachedSecret {
    CachedSecret {
        owners: target.owner.iter().map(OwnerKey::of).collect(),
        labels: pair_hashes(&desired_labels(target)),
        annotations: pair_hashes(&desired_annotations(target, facts.issued_at, issued_for)),
        markers: Markers {
            scope: issued_for.scope.is_some(),
            format: (!target.spec.format.is_default()).then(|| target.spec.format.name().to_string()),
            templates: format::templates_spec_digest(&target.spec.template),
        },
        type_: Some("Opaque".to_string()),
        held: Some(Held {
            facts: facts.clone(),
            issued_for: issued_for.digest(),
            format: target.spec.format,
            exact: true,
        }),
    }
}

/// True when writing `merge(existing, desired)` would change anything: our data, labels,
/// annotations or ownerReference differ or are missing (what others added does not count).
pub fn needs_update(existing: &CachedSecret, desired: &CachedSecret) -> bool {
    let owner = desired.owners.iter().all(|want| existing.owners.iter().any(|have| have.reference == want.reference));
    !(owner
        && existing.held == desired.held
        && existing.type_ == desired.type_
        && existing.markers == desired.markers
        && contains_all(&existing.labels, &desired.labels)
        && contains_all(&existing.annotations, &desired.annotations))
}

/// The token a Secret holds and what it was issued for, if it is complete and readable, in
/// whichever format it holds it (see [`format::read_any`]).
pub fn read_token(secret: &Secret) -> Option<(Token, IssuedFor)> {
    read_held(secret).map(|(token, issued_for, _)| (token, issued_for))
}

fn read_held(secret: &Secret) -> Option<(Token, IssuedFor, TokenFormat)> {
    let data = secret.data.as_ref()?;
    let annotations = secret.metadata.annotations.as_ref()?;
    let annotation = |key: &str| annotations.get(key).cloned();
    let annotated = annotations.get(FORMAT_ANNOTATION).and_then(|f| TokenFormat::from_name(f));
    let (format, stored) = format::read_any(annotated, data)?;
    let mut expires_at = stored.expires_at;
    // The token's own expiry bounds what the Secret claims (it may have been edited).
    if let Some(exp) = crate::token::response::jwt_exp(stored.access_token.expose()) {
        expires_at = expires_at.min(exp);
    }
    let issued_at: Timestamp = annotation(ISSUED_AT_ANNOTATION)?.parse::<Timestamp>().ok()?.min(expires_at);
    let token = Token {
        access_token: stored.access_token,
        token_type: stored.token_type.unwrap_or_else(|| "Bearer".to_string()),
        issued_at,
        expires_at,
    };
    let issued_for = IssuedFor {
        token_url: annotation(TOKEN_URL_ANNOTATION)?,
        client_id: annotation(CLIENT_ID_ANNOTATION)?,
        scope: annotation(SCOPE_ANNOTATION),
        client_secret_version: annotation(CLIENT_SECRET_VERSION_ANNOTATION)?,
    };
    Some((token, issued_for, format))
}

#[cfg(test)]
mod tests;
