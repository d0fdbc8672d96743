//! `spec.rolloutRestartTargets`: restart workloads that read the token only at start-up, by
//! setting an annotation on their pod template (what `kubectl rollout restart` does).
//! Off unless the operator runs with `--rollout-restarts` (it needs patch rights on workloads).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::crd::{RolloutRestartTarget, WorkloadKind};

/// When the operator last restarted the workload (on the pod template).
pub const RESTARTED_AT_ANNOTATION: &str = "groupdocs.cloud/restarted-at";
/// Fingerprint of the token the workload was restarted for.
pub const FINGERPRINT_ANNOTATION: &str = "groupdocs.cloud/token-fingerprint";

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restart now.
    Restart,
    /// Restarted too recently: not before this time.
    WaitUntil(Timestamp),
    /// Already restarted for this token.
    Done,
}

/// Whether a workload whose pod template carries `annotations` should restart for the token
/// with `fingerprint`, at most once per `min_interval`.
pub fn decide(
    annotations: Option<&BTreeMap<String, String>>,
    fingerprint: &str,
    now: Timestamp,
    min_interval: SignedDuration,
) -> Decision {
    let get = |key: &str| annotations.and_then(|a| a.get(key));
    if get(FINGERPRINT_ANNOTATION).is_some_and(|fp| fp == fingerprint) {
        return Decision::Done;
    }
    // The annotation is the workload owner's to write: the operator writes only the present,
    // so a restart time in the future is not ours and is ignored (counting it as now would
    // postpone the restart for ever); the sum saturates near the end of the timestamp range.
    let last = get(RESTARTED_AT_ANNOTATION).and_then(|t| t.parse::<Timestamp>().ok()).filter(|last| *last <= now);
    match last {
        Some(last) if now.duration_since(last) < min_interval => {
            Decision::WaitUntil(last.checked_add(min_interval).unwrap_or(Timestamp::MAX))
        }
        _ => Decision::Restart,
    }
}

/// The outcome for one target, for events and requeueing.
#[derive(Debug)]
pub enum Outcome {
    Restarted,
    Deferred(Timestamp),
    AlreadyDone,
    /// No such workload (a cluster credential's targets exist in some namespaces only).
    NotFound,
    Failed(String),
}

/// One restart to consider: which workload, for which token, when.
pub struct Request<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub target: &'a RolloutRestartTarget,
    pub fingerprint: &'a str,
    pub now: Timestamp,
    pub min_interval: SignedDuration,
}

/// Restarts the workload of `req` if [`decide`] says so.
pub async fn restart(req: Request<'_>) -> Outcome {
    match req.target.kind {
        WorkloadKind::Deployment => req.run::<Deployment>(|d| d.spec.as_ref().map(|s| &s.template)).await,
        WorkloadKind::StatefulSet => req.run::<StatefulSet>(|s| s.spec.as_ref().map(|s| &s.template)).await,
        WorkloadKind::DaemonSet => req.run::<DaemonSet>(|d| d.spec.as_ref().map(|s| &s.template)).await,
    }
}

impl Request<'_> {
    async fn run<K>(&self, template: fn(&K) -> Option<&PodTemplateSpec>) -> Outcome
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let (kind, name) = (self.target.kind, &self.target.name);
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let workload = match api.get_opt(name).await {
            Ok(Some(w)) => w,
            Ok(None) => return Outcome::NotFound,
            Err(e) => return Outcome::Failed(format!("{kind:?} {name}: {e}")),
        };
        let annotations = template(&workload).and_then(|t| t.metadata.as_ref()?.annotations.as_ref());
        match decide(annotations, self.fingerprint, self.now, self.min_interval) {
            Decision::Done => Outcome::AlreadyDone,
            Decision::WaitUntil(t) => Outcome::Deferred(t),
            Decision::Restart => {
                let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
                    RESTARTED_AT_ANNOTATION: self.now.to_string(),
                    FINGERPRINT_ANNOTATION: self.fingerprint,
                }}}}});
                match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => Outcome::Restarted,
                    Err(e) => Outcome::Failed(format!("{kind:?} {name}: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn restarts_once_per_token_and_interval() {
        let min = SignedDuration::from_mins(10);
        let now = t("2026-11-28T10:00:00Z");
        assert_eq!(decide(None, "fp1", now, min), Decision::Restart);
        let mut a = BTreeMap::new();
        a.insert(FINGERPRINT_ANNOTATION.to_string(), "fp1".to_string());
        a.insert(RESTARTED_AT_ANNOTATION.to_string(), "2026-11-28T09:55:00Z".to_string());
        assert_eq!(decide(Some(&a), "fp1", now, min), Decision::Done);
        assert_eq!(decide(Some(&a), "fp2", now, min), Decision::WaitUntil(t("2026-11-28T10:05:00Z")));
        assert_eq!(decide(Some(&a), "fp2", t("2026-11-28T10:06:00Z"), min), Decision::Restart);
        a.insert(RESTARTED_AT_ANNOTATION.to_string(), "garbage".to_string());
        assert_eq!(decide(Some(&a), "fp2", now, min), Decision::Restart);
    }

    #[test]
    fn a_restart_time_in_the_future_is_ignored_and_nothing_overflows() {
        let min = SignedDuration::from_mins(10);
        let now = t("2026-11-28T10:00:00Z");
        let mut a = BTreeMap::new();
        for hostile in [
            Timestamp::MAX.to_string(),
            "2027-01-01T00:00:00Z".into(),
            "2026-11-28T10:00:01Z".into(),
            "9999-12-31T23:59:59Z".into(),
            "-009999-01-02T00:00:00Z".into(),
        ] {
            a.insert(RESTARTED_AT_ANNOTATION.to_string(), hostile.clone());
            assert_eq!(decide(Some(&a), "fp", now, min), Decision::Restart, "{hostile}");
        }
        // Near the end of the range, with the largest interval, the sum saturates.
        let late = Timestamp::MAX;
        a.insert(RESTARTED_AT_ANNOTATION.to_string(), late.to_string());
        assert_eq!(decide(Some(&a), "fp", late, SignedDuration::MAX), Decision::WaitUntil(Timestamp::MAX));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a workload owner writes into the annotations, deciding never panics, and a
        /// wait never ends more than one interval from now.
        #[test]
        fn any_annotation_any_time(
            restarted_at in prop_oneof![".{0,40}", (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second()).prop_map(|s| Timestamp::from_second(s).unwrap().to_string())],
            now in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            interval in 0i64..=i64::MAX,
        ) {
            let mut a = BTreeMap::new();
            a.insert(RESTARTED_AT_ANNOTATION.to_string(), restarted_at);
            let now = Timestamp::from_second(now).unwrap();
            let interval = SignedDuration::from_secs(interval);
            if let Decision::WaitUntil(t) = decide(Some(&a), "fp", now, interval) {
                prop_assert!(t >= now);
                prop_assert!(t.duration_since(now) <= interval);
            }
        }
    }
}
