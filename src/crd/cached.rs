//! The credential as the cache keeps it, the way token Secrets are kept as
//! [`crate::target::CachedSecret`]s: the spec, the metadata a reconcile reads, and the status
//! with its conditions in a compact form (the words they repeat stored once, the messages
//! nothing reads dropped), plus a digest of the whole status to tell whether a status to write
//! differs from the one the API server holds.
//!
//! A cluster-wide operator holds one per credential for its whole life, so its size is the
//! operator's memory per credential (README, Scale).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, OnceLock};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::Resource;

use super::{GroupDocsCredential, GroupDocsCredentialSpec, GroupDocsCredentialStatus};
use crate::error::TokenFailure;

#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(from = "GroupDocsCredential")]
pub struct CachedCredential {
    /// Identity, versions, deletion and annotations (a change to any of them triggers a
    /// reconcile, as users expect of `kubectl annotate`), but not kubectl's copy of the object.
    pub metadata: ObjectMeta,
    pub spec: GroupDocsCredentialSpec,
    /// Without its conditions: they are in `conditions`.
    status: Option<GroupDocsCredentialStatus>,
    conditions: Box<[CachedCondition]>,
    /// [`status_digest`] of the status as the API server holds it.
    digest: u64,
}

/// A status condition as the cache keeps it: `type`, `status` and `reason` are a few words
/// repeated in every credential, stored once ([`Words`]), and only the messages a reconcile
/// reads are kept ([`keeps_message`]). A condition with words beyond the table is kept whole.
#[derive(Clone, Debug, PartialEq)]
enum CachedCondition {
    Compact { words: [u16; 3], message: Box<str>, last_transition_time: Time, observed_generation: Option<i64> },
    Whole(Box<Condition>),
}

impl CachedCondition {
    fn of(c: Condition) -> Self {
        let message = if keeps_message(&c.reason) { c.message.as_str().into() } else { Box::default() };
        match [&c.type_, &c.status, &c.reason].map(|w| Words::index(w)) {
            [Some(t), Some(s), Some(r)] => CachedCondition::Compact {
                words: [t, s, r],
                message,
                last_transition_time: c.last_transition_time,
                observed_generation: c.observed_generation,
            },
            _ => CachedCondition::Whole(Box::new(Condition { message: message.into(), ..c })),
        }
    }

    fn condition(&self) -> Condition {
        match self {
            CachedCondition::Compact { words, message, last_transition_time, observed_generation } => {
                let [type_, status, reason] = words.map(|i| Words::word(i).to_string());
                Condition {
                    type_,
                    status,
                    reason,
                    message: message.to_string(),
                    last_transition_time: last_transition_time.clone(),
                    observed_generation: *observed_generation,
                }
            }
            CachedCondition::Whole(c) => (**c).clone(),
        }
    }

    fn is(&self, type_: &str) -> Option<&str> {
        match self {
            CachedCondition::Compact { words: [t, s, _], .. } => (Words::word(*t) == type_).then(|| Words::word(*s)),
            CachedCondition::Whole(c) => (c.type_ == type_).then_some(c.status.as_str()),
        }
    }
}

/// The words of conditions (types, statuses, reasons), each stored once for the process.
/// The operator's own words are there from the start ([`OWN_WORDS`]), so that whoever writes
/// status first cannot fill the table with invented ones; at most [`MAX_WORDS`] in all
/// (conditions with other words are kept whole rather than grow the table).
struct Words {
    list: Vec<&'static str>,
    index: HashMap<&'static str, u16>,
}

const MAX_WORDS: usize = 256;

/// Every word the operator writes in a condition of a namespaced credential.
const OWN_WORDS: &[&str] = &[
    crate::conditions::READY,
    crate::conditions::RECONCILING,
    crate::conditions::STALLED,
    "True",
    "False",
    "Unknown",
    "TokenIssued",
    "TokenRenewed",
    "TokenExpired",
    "Suspended",
    "SecretNotFound",
    "SecretNotLabelled",
    "SecretKeyMissing",
    "InvalidClient",
    "RateLimited",
    "TokenEndpointUnavailable",
    "InvalidTokenResponse",
    "TokenUrlNotAllowed",
    "TargetConflict",
    "InvalidSpec",
    "KubernetesApiError",
    "InternalError",
];

impl Words {
    fn table() -> &'static Mutex<Words> {
        static WORDS: OnceLock<Mutex<Words>> = OnceLock::new();
        WORDS.get_or_init(|| {
            let list = OWN_WORDS.to_vec();
            let index = (0u16..).zip(list.iter()).map(|(i, w)| (*w, i)).collect();
            Mutex::new(Words { list, index })
        })
    }

    /// The index of `word`, added to the table if there is room.
    fn index(word: &str) -> Option<u16> {
        let mut words = crate::lock(Words::table());
        if let Some(i) = words.index.get(word) {
            return Some(*i);
        }
        if words.list.len() >= MAX_WORDS || word.len() > 64 {
            return None;
        }
        let stored: &'static str = Box::leak(word.into());
        let i = u16::try_from(words.list.len()).ok()?;
        words.list.push(stored);
        words.index.insert(stored, i);
        Some(i)
    }

    fn word(i: u16) -> &'static str {
        crate::lock(Words::table()).list.get(usize::from(i)).copied().unwrap_or_default()
    }
}

impl From<GroupDocsCredential> for CachedCredential {
    fn from(cr: GroupDocsCredential) -> Self {
        let GroupDocsCredential { metadata, spec, status } = cr;
        let digest = status_digest(status.as_ref());
        let (status, conditions) = match status {
            Some(mut status) => {
                let conditions = std::mem::take(&mut status.conditions).into_iter().map(CachedCondition::of).collect();
                (Some(status), conditions)
            }
            None => (None, Box::default()),
        };
        CachedCredential { metadata: compact_metadata(metadata), spec, status, conditions, digest }
    }
}

impl CachedCredential {
    /// The credential a reconcile works on. Its status lacks the messages [`keeps_message`]
    /// drops: compare a new status with [`CachedCredential::status_differs`], not with it.
    pub fn view(&self) -> GroupDocsCredential {
        let status = self.status.as_ref().map(|status| GroupDocsCredentialStatus {
            conditions: self.conditions.iter().map(CachedCondition::condition).collect(),
            ..status.clone()
        });
        GroupDocsCredential { metadata: self.metadata.clone(), spec: self.spec.clone(), status }
    }

    /// The status's fields other than its conditions (for those, [`CachedCredential::ready`]
    /// or [`CachedCredential::view`]).
    pub fn status_fields(&self) -> Option<&GroupDocsCredentialStatus> {
        self.status.as_ref()
    }

    /// The status of the `Ready` condition: `True`, `False` or `Unknown` (also when absent).
    pub fn ready(&self) -> &str {
        self.conditions.iter().find_map(|c| c.is(crate::conditions::READY)).unwrap_or("Unknown")
    }

    /// Whether writing `status` would change the status the API server holds.
    pub fn status_differs(&self, status: &GroupDocsCredentialStatus) -> bool {
        match &self.status {
            None => *status != GroupDocsCredentialStatus::default(),
            Some(_) => status_digest(Some(status)) != self.digest,
        }
    }

    /// [`status_digest`] of the status the API server holds.
    pub fn status_digest(&self) -> u64 {
        self.digest
    }
}

/// A digest of a whole status, as serialized (so a status read back from the API server and
/// the same status computed here agree).
pub fn status_digest(status: Option<&GroupDocsCredentialStatus>) -> u64 {
    let mut hasher = DefaultHasher::new();
    // A status always serialises; were it not to, every digest would match: writes would be
    // skipped and the cache trusted, until the next change.
    serde_json::to_vec(&status).unwrap_or_default().hash(&mut hasher);
    hasher.finish()
}

fn compact_metadata(metadata: ObjectMeta) -> ObjectMeta {
    let annotations = metadata.annotations.map(|mut a| {
        a.remove(LAST_APPLIED_ANNOTATION);
        a
    });
    ObjectMeta {
        name: metadata.name,
        namespace: metadata.namespace,
        uid: metadata.uid,
        resource_version: metadata.resource_version,
        generation: metadata.generation,
        deletion_timestamp: metadata.deletion_timestamp,
        annotations: annotations.filter(|a| !a.is_empty()),
        ..ObjectMeta::default()
    }
}

/// `kubectl apply`'s copy of the whole object: large, and never read here.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A failed token request's message is carried into the next status while the failure holds
/// the credential back ([`crate::status::held_by_status`]); no other message is read.
fn keeps_message(reason: &str) -> bool {
    TokenFailure::from_reason(reason).is_some()
}

impl Resource for CachedCredential {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        GroupDocsCredential::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        GroupDocsCredential::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        GroupDocsCredential::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        GroupDocsCredential::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jiff::{SignedDuration, Timestamp};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::conditions::{Facts, Outcome};
    use crate::crd::REFRESH_ANNOTATION;
    use crate::error::{Error, Limit};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Statuses as reconciles write them: every outcome, every token failure, and the same
    /// status with one field changed at a time.
    fn statuses() -> Vec<GroupDocsCredentialStatus> {
        let now = t("2026-11-28T10:00:00Z");
        let retry_at = now + SignedDuration::from_mins(10);
        let failures = [
            Error::InvalidClient { detail: "HTTP 400 invalid_client".into(), retry_at },
            Error::RateLimited { detail: "HTTP 429".into(), until: retry_at, by: Limit::Endpoint },
            Error::TokenEndpointUnavailable { detail: "HTTP 503".into(), retry_at },
            Error::InvalidTokenResponse { detail: "not JSON".into(), retry_at },
            Error::SecretNotFound { namespace: "apps".into(), name: "client".into() },
            Error::InvalidSpec("spec.tokenUrl: not a URL".into()),
        ];
        let mut outcomes: Vec<Outcome> = vec![Outcome::Issued, Outcome::Renewed, Outcome::Current, Outcome::Suspended];
        outcomes.extend(failures.iter().map(Outcome::Failed));
        let mut all = Vec::new();
        for outcome in outcomes {
            let failed = matches!(outcome, Outcome::Failed(_));
            let facts = Facts {
                generation: Some(3),
                token_expires_at: Some(now + SignedDuration::from_hours(20)),
                outcome,
                now,
                note: None,
            };
            let status = GroupDocsCredentialStatus {
                observed_generation: Some(3),
                conditions: crate::conditions::conditions(&[], &facts),
                expires_at: Some(Time(now + SignedDuration::from_hours(20))),
                last_refresh_time: Some(Time(now - SignedDuration::from_hours(4))),
                next_refresh_time: Some(Time(now + SignedDuration::from_hours(12))),
                token_fingerprint: Some("0123456789ab".into()),
                failed_attempts: i64::from(failed),
                last_failure_time: failed.then_some(Time(now)),
                next_retry_time: failed.then_some(Time(retry_at)),
                last_failure_client_secret_version: failed.then(|| "7".into()),
                ..Default::default()
            };
            let mut other_message = status.clone();
            other_message.conditions[0].message.push_str(" (again)");
            let mut other_time = status.clone();
            other_time.conditions[1].last_transition_time = Time(now + SignedDuration::from_secs(1));
            let mut other_fingerprint = status.clone();
            other_fingerprint.token_fingerprint = Some("ba9876543210".into());
            all.extend([status, other_message, other_time, other_fingerprint]);
        }
        all.push(GroupDocsCredentialStatus::default());
        all
    }

    fn full(status: Option<GroupDocsCredentialStatus>) -> GroupDocsCredential {
        let mut cr = crate::fixtures::credential("uid-1");
        cr.metadata.generation = Some(3);
        cr.metadata.resource_version = Some("41".into());
        cr.status = status;
        cr
    }

    fn inputs(client_secret_version: &str) -> crate::status::Inputs {
        let issued_for = crate::target::IssuedFor {
            client_secret_version: client_secret_version.into(),
            ..crate::fixtures::issued_for()
        };
        let request = crate::token::TokenRequest {
            url: issued_for.token_url.clone(),
            client_id: issued_for.client_id.clone(),
            client_secret: crate::redact::Sensitive::new("s"),
            scope: None,
        };
        crate::status::Inputs { request, issued_for, renew_before: None }
    }

    /// Through JSON, as the watch delivers it.
    fn cached(cr: &GroupDocsCredential) -> CachedCredential {
        serde_json::from_value(serde_json::to_value(cr).unwrap()).unwrap()
    }

    #[test]
    fn a_status_to_write_differs_exactly_when_it_differs_from_the_full_status() {
        let statuses = statuses();
        let mut compared = 0;
        for held in statuses.iter().cloned().map(Some).chain([None]) {
            let cache = cached(&full(held.clone()));
            for candidate in &statuses {
                let differs_from_full = held.clone().unwrap_or_default() != *candidate;
                assert_eq!(cache.status_differs(candidate), differs_from_full, "held {held:?}, writing {candidate:?}");
                compared += 1;
            }
        }
        assert!(compared > 1500, "{compared} pairs");
    }

    #[test]
    fn decisions_read_the_same_from_the_view_as_from_the_full_credential() {
        let now = t("2026-11-28T10:05:00Z");
        let inputs = inputs("7");
        for status in statuses() {
            let full = full(Some(status.clone()));
            let view = cached(&full).view();
            let (a, b) = (full.status.clone().unwrap(), view.status.clone().unwrap());
            let held = |cr: &GroupDocsCredential, s: &GroupDocsCredentialStatus| {
                crate::status::held_by_status(cr, s, &inputs, now, SignedDuration::from_hours(1))
                    .map(|e| (e.reason(), e.to_string(), e.retry_at()))
            };
            assert_eq!(held(&full, &a), held(&view, &b), "{status:?}");
            for outcome in [Outcome::Current, Outcome::Renewed, Outcome::Suspended] {
                let facts = Facts { generation: Some(3), token_expires_at: None, outcome, now, note: None };
                assert_eq!(
                    crate::conditions::conditions(&a.conditions, &facts),
                    crate::conditions::conditions(&b.conditions, &facts),
                    "{status:?}"
                );
            }
            let compact = cached(&full);
            let own_words =
                |c: &Condition| [&c.type_, &c.status, &c.reason].iter().all(|w| OWN_WORDS.contains(&w.as_str()));
            for (condition, kept) in a.conditions.iter().zip(compact.conditions.iter()) {
                if own_words(condition) {
                    assert!(
                        matches!(kept, CachedCondition::Compact { .. }),
                        "the operator's own words are compact: {condition:?}"
                    );
                }
            }
            let without_conditions =
                |s: &GroupDocsCredentialStatus| GroupDocsCredentialStatus { conditions: vec![], ..s.clone() };
            assert_eq!(without_conditions(&a), without_conditions(&b), "every other field is kept");
            let reasons = |s: &GroupDocsCredentialStatus| {
                s.conditions.iter().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())).collect::<Vec<_>>()
            };
            assert_eq!(reasons(&a), reasons(&b), "events compare reasons");
        }
    }

    #[test]
    fn ready_reads_the_ready_condition() {
        for status in statuses() {
            let expected = crate::metrics::ready_status(&status).to_string();
            assert_eq!(cached(&full(Some(status))).ready(), expected);
        }
        assert_eq!(cached(&full(None)).ready(), "Unknown");
    }

    #[test]
    fn conditions_with_words_beyond_the_table_are_kept_whole() {
        // Known before the table fills (other tests share it).
        let ready = Words::index("Ready").unwrap();
        for i in 0..MAX_WORDS + 10 {
            let _ = Words::index(&format!("Invented{i}"));
        }
        assert_eq!(Words::index(&format!("Invented{}", MAX_WORDS + 9)), None, "the table is bounded");
        assert_eq!(Words::index("Ready"), Some(ready), "known words are still shared");
        assert_eq!(Words::index(&"x".repeat(65)), None);
        for word in OWN_WORDS {
            assert!(Words::index(word).is_some(), "{word} is there from the start");
        }
        let mut status = statuses().remove(0);
        status.conditions[0].reason = "x".repeat(65);
        let cache = cached(&full(Some(status.clone())));
        assert!(matches!(cache.conditions[0], CachedCondition::Whole(_)));
        assert_eq!(cache.view().status.unwrap().conditions[0].reason, status.conditions[0].reason);
        assert!(!cache.status_differs(&status));
    }

    #[test]
    fn metadata_keeps_identity_versions_and_annotations_only() {
        let mut cr = full(None);
        cr.metadata.annotations = Some(BTreeMap::from([
            (REFRESH_ANNOTATION.to_string(), "2026-11-28T10:00:00Z".to_string()),
            (LAST_APPLIED_ANNOTATION.to_string(), "{...}".repeat(100)),
            ("team.example.com/note".to_string(), "poke".to_string()),
        ]));
        cr.metadata.labels = Some(BTreeMap::from([("team".to_string(), "docs".to_string())]));
        cr.metadata.finalizers = Some(vec!["example.com/keep".into()]);
        let view = cached(&cr).view();
        assert_eq!(view.refresh_request(), cr.refresh_request());
        let annotations = view.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), [REFRESH_ANNOTATION, "team.example.com/note"]);
        assert_eq!(
            (
                view.metadata.name,
                view.metadata.namespace,
                view.metadata.uid,
                view.metadata.resource_version,
                view.metadata.generation
            ),
            (
                cr.metadata.name,
                cr.metadata.namespace,
                cr.metadata.uid,
                cr.metadata.resource_version,
                cr.metadata.generation
            )
        );
        assert!(view.metadata.labels.is_none() && view.metadata.finalizers.is_none());
        assert_eq!(view.spec, cr.spec);
        assert!(cached(&full(None)).view().metadata.annotations.is_none());
    }
}
