//! A cluster credential's status from the token's status and each namespace's outcome: pure.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::conditions::{self, Facts, Outcome, READY};
use crate::crd::GroupDocsCredentialStatus;
use crate::crd::cluster::{
    ClusterGroupDocsCredentialStatus, FailedNamespace, MAX_FAILED_NAMESPACES_LISTED, NamespaceCounts,
};
use crate::error::Error;

/// What happened to one selected namespace's copy.
#[derive(Clone, Debug, PartialEq)]
pub enum Copy {
    /// It holds the current token.
    Current,
    Failed {
        reason: &'static str,
        message: String,
        stalled: bool,
    },
}

impl Copy {
    pub fn failed(error: &Error) -> Self {
        Copy::Failed { reason: error.reason(), message: error.to_string(), stalled: error.is_stalled() }
    }
}

/// Each selected namespace's outcome, in name order; `None` when no token could be written
/// anywhere (the token's own failure then explains everything).
pub struct Fanout {
    pub copies: Option<Vec<(String, Copy)>>,
    /// Listed in `spec.namespaces` but absent.
    pub missing: Vec<String>,
    pub selected: usize,
}

impl Fanout {
    fn failures(&self) -> Vec<FailedNamespace> {
        let missing = self.missing.iter().map(|ns| FailedNamespace {
            namespace: ns.clone(),
            reason: "NamespaceNotFound".to_string(),
            message: format!("namespace {ns:?} is listed in spec.namespaces but does not exist"),
        });
        let failed = self.copies.iter().flatten().filter_map(|(ns, copy)| match copy {
            Copy::Current => None,
            Copy::Failed { reason, message, .. } => {
                Some(FailedNamespace { namespace: ns.clone(), reason: reason.to_string(), message: message.clone() })
            }
        });
        let mut all: Vec<_> = missing.chain(failed).collect();
        all.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        all
    }

    /// The error the conditions report when some namespaces lack the token.
    fn error(&self, failures: &[FailedNamespace]) -> Option<Error> {
        if self.selected == 0 {
            return Some(Error::NoNamespaceSelected);
        }
        let first = failures.first()?;
        let stalled_copy = |ns: &str| {
            self.copies.iter().flatten().any(|(n, c)| n == ns && matches!(c, Copy::Failed { stalled: true, .. }))
        };
        let stalled = failures.iter().any(|f| f.reason == "NamespaceNotFound" || stalled_copy(&f.namespace));
        let reason = match self.copies.iter().flatten().find(|(n, _)| *n == first.namespace) {
            Some((_, Copy::Failed { reason, .. })) => reason,
            _ => "NamespaceNotFound",
        };
        Some(Error::NamespacesFailed {
            failed: failures.len(),
            selected: self.selected,
            namespace: first.namespace.clone(),
            reason,
            message: first.message.clone(),
            stalled,
        })
    }
}

/// The cluster status: the token's status, the namespace counts and failures, and conditions
/// that say Ready only when every selected namespace holds a valid token.
pub fn cluster_status(
    token: GroupDocsCredentialStatus,
    previous_conditions: &[Condition],
    generation: Option<i64>,
    fanout: &Fanout,
    now: Timestamp,
) -> ClusterGroupDocsCredentialStatus {
    let failures = fanout.failures();
    let ready = fanout.copies.iter().flatten().filter(|(_, c)| *c == Copy::Current).count();
    let counts =
        NamespaceCounts { selected: count(fanout.selected), ready: count(ready), failed: count(failures.len()) };
    let token_ready = token.conditions.iter().any(|c| c.type_ == READY && c.status == "True");
    let mut token = token;
    // The token's own failure explains a not-Ready credential; a namespace's failure matters
    // once the token is fine (or there is nowhere to put it).
    if let Some(error) = fanout.error(&failures).filter(|e| token_ready || matches!(e, Error::NoNamespaceSelected)) {
        let facts = Facts { generation, token_expires_at: None, outcome: Outcome::Failed(&error), now, note: None };
        token.conditions = conditions::conditions(previous_conditions, &facts);
    }
    ClusterGroupDocsCredentialStatus {
        token,
        namespaces: Some(counts),
        failed_namespaces: failures.into_iter().take(MAX_FAILED_NAMESPACES_LISTED).collect(),
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{RECONCILING, STALLED};

    fn now() -> Timestamp {
        "2026-11-28T12:00:00Z".parse().unwrap()
    }

    /// A token status whose conditions say Ready (as `next_status` writes it).
    fn ready_token() -> GroupDocsCredentialStatus {
        let facts = Facts {
            generation: Some(1),
            token_expires_at: Some("2026-11-29T12:00:00Z".parse().unwrap()),
            outcome: Outcome::Issued,
            now: now(),
            note: None,
        };
        GroupDocsCredentialStatus { conditions: conditions::conditions(&[], &facts), ..Default::default() }
    }

    fn condition<'a>(s: &'a ClusterGroupDocsCredentialStatus, t: &str) -> &'a Condition {
        s.token.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn conflict(ns: &str) -> (String, Copy) {
        (ns.to_string(), Copy::failed(&Error::TargetConflict { name: "t".into() }))
    }

    #[test]
    fn every_namespace_current_is_ready() {
        let fanout = Fanout {
            copies: Some(vec![("a".into(), Copy::Current), ("b".into(), Copy::Current)]),
            missing: vec![],
            selected: 2,
        };
        let s = cluster_status(ready_token(), &[], Some(1), &fanout, now());
        assert_eq!(s.namespaces, Some(NamespaceCounts { selected: 2, ready: 2, failed: 0 }));
        assert!(s.failed_namespaces.is_empty());
        assert_eq!(condition(&s, READY).status, "True");
    }

    #[test]
    fn a_conflict_in_one_namespace_is_named_and_stalls() {
        let fanout =
            Fanout { copies: Some(vec![("a".into(), Copy::Current), conflict("b")]), missing: vec![], selected: 2 };
        let s = cluster_status(ready_token(), &[], Some(1), &fanout, now());
        assert_eq!(s.namespaces, Some(NamespaceCounts { selected: 2, ready: 1, failed: 1 }));
        assert_eq!(s.failed_namespaces[0].namespace, "b");
        assert_eq!(s.failed_namespaces[0].reason, "TargetConflict");
        let ready = condition(&s, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "TargetConflict"));
        assert!(ready.message.contains("1 of 2") && ready.message.contains("first b"), "{}", ready.message);
        assert_eq!(condition(&s, STALLED).status, "True");
    }

    #[test]
    fn a_transient_failure_reconciles_and_missing_namespaces_are_listed() {
        let api = Copy::failed(&Error::TargetChanged { name: "t".into() });
        let fanout = Fanout { copies: Some(vec![("a".into(), api)]), missing: vec![], selected: 1 };
        let s = cluster_status(ready_token(), &[], Some(1), &fanout, now());
        assert_eq!(condition(&s, RECONCILING).status, "True");
        assert_eq!(condition(&s, STALLED).status, "False");
        let fanout =
            Fanout { copies: Some(vec![("a".into(), Copy::Current)]), missing: vec!["zz".into()], selected: 2 };
        let s = cluster_status(ready_token(), &[], Some(1), &fanout, now());
        assert_eq!(s.failed_namespaces[0].reason, "NamespaceNotFound");
        assert_eq!(condition(&s, STALLED).status, "True");
    }

    #[test]
    fn the_list_is_capped_but_the_counts_are_not() {
        let copies = (0..50).map(|i| conflict(&format!("ns-{i:02}"))).collect();
        let fanout = Fanout { copies: Some(copies), missing: vec![], selected: 50 };
        let s = cluster_status(ready_token(), &[], Some(1), &fanout, now());
        assert_eq!(s.failed_namespaces.len(), MAX_FAILED_NAMESPACES_LISTED);
        assert_eq!(s.namespaces.unwrap().failed, 50);
        assert_eq!(s.failed_namespaces[0].namespace, "ns-00");
    }

    #[test]
    fn no_namespace_selected_is_not_ready_and_a_token_failure_keeps_its_own_reason() {
        let fanout = Fanout { copies: Some(vec![]), missing: vec![], selected: 0 };
        let s = cluster_status(ready_token(), &[], Some(1), &fanout, now());
        assert_eq!(condition(&s, READY).reason, "NoNamespaceSelected");
        let failing = Error::SecretNotFound { namespace: "ops".into(), name: "c".into() };
        let facts = Facts {
            generation: Some(1),
            token_expires_at: None,
            outcome: Outcome::Failed(&failing),
            now: now(),
            note: None,
        };
        let token = GroupDocsCredentialStatus { conditions: conditions::conditions(&[], &facts), ..Default::default() };
        let fanout = Fanout { copies: None, missing: vec![], selected: 3 };
        let s = cluster_status(token, &[], Some(1), &fanout, now());
        assert_eq!(condition(&s, READY).reason, "SecretNotFound");
        assert_eq!(s.namespaces, Some(NamespaceCounts { selected: 3, ready: 0, failed: 0 }));
    }
}
