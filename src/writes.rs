//! Writes this process made that its watches have not shown yet.
//!
//! Every write comes back as a watch event. A token Secret we wrote coming back is no news:
//! it is dropped before it triggers a reconcile (that halves the reconciles of a cold start).
//! Any other trigger can still run a reconcile before the credential watch delivers the
//! status written just before; acting on that older status would write the same status again
//! and repeat the event (measured in the README's Scale section), so such a reconcile waits
//! for the cache.
//!
//! Only small keys are kept, and only until the watch catches up: a Secret's
//! resourceVersion, and a hash of the status the API server returned (which matches the
//! cache exactly once the watch delivers it, whatever else changes on the object).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::GroupDocsCredentialStatus;
use crate::crd::cached::status_digest;

/// After this long the cache is trusted again whatever it shows (someone else may have
/// written the status, or a relist may have skipped our version).
const TRUST_CACHE_AFTER: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct RecentWrites {
    by_uid: Mutex<HashMap<String, (u64, Instant)>>,
    secrets: Versions,
    /// The resourceVersion of each credential our last status write produced.
    statuses: Versions,
}

/// `(namespace, name)` to the resourceVersion a write of ours produced, and when.
type Versions = Mutex<HashMap<(String, String), (String, Instant)>>;

impl RecentWrites {
    /// Records the Secret as the API server returned it after our create or update.
    pub fn wrote_secret(&self, secret: &Secret, now: Instant) {
        record(&self.secrets, &secret.metadata, now);
    }

    /// Whether `secret` is the watch showing a write of ours (each write is matched once).
    pub fn is_own_secret_write(&self, secret: &ObjectMeta) -> bool {
        is_own(&self.secrets, secret)
    }

    /// Records the credential as the API server returned it after our status write.
    pub fn wrote_status_of(&self, credential: &ObjectMeta, now: Instant) {
        record(&self.statuses, credential, now);
    }

    /// Whether `credential` is the watch showing a status write of ours (matched once): it
    /// needs no reconcile. Kept by resourceVersion rather than as a per-credential filter
    /// cache, which would hold an entry for every credential.
    pub fn is_own_status_write(&self, credential: &ObjectMeta) -> bool {
        is_own(&self.statuses, credential)
    }

    /// Records `status` as the API server returned it after our write.
    pub fn wrote(&self, uid: &str, status: Option<&GroupDocsCredentialStatus>, now: Instant) {
        crate::lock(&self.by_uid).insert(uid.to_string(), (status_digest(status), now));
    }

    /// Whether the cached `status` predates a status this process wrote.
    pub fn cache_is_behind(&self, uid: &str, status: Option<&GroupDocsCredentialStatus>, now: Instant) -> bool {
        self.cache_is_behind_digest(uid, status_digest(status), now)
    }

    /// [`RecentWrites::cache_is_behind`], for a cache that keeps only the status's digest
    /// ([`status_digest`]).
    pub fn cache_is_behind_digest(&self, uid: &str, cached: u64, now: Instant) -> bool {
        let mut by_uid = crate::lock(&self.by_uid);
        let Some((written, at)) = by_uid.get(uid).copied() else {
            return false;
        };
        let behind = now.duration_since(at) < TRUST_CACHE_AFTER && cached != written;
        if !behind {
            by_uid.remove(uid);
        }
        behind
    }

    /// Forgets writes the cache had time to show, for credentials not reconciled since.
    pub fn prune(&self, now: Instant) {
        crate::lock(&self.by_uid).retain(|_, (_, at)| now.duration_since(*at) < TRUST_CACHE_AFTER);
        for versions in [&self.secrets, &self.statuses] {
            crate::lock(versions).retain(|_, (_, at)| now.duration_since(*at) < TRUST_CACHE_AFTER);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        crate::lock(&self.by_uid).len() + crate::lock(&self.secrets).len() + crate::lock(&self.statuses).len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn record(versions: &Versions, meta: &ObjectMeta, now: Instant) {
    if let Some(rv) = meta.resource_version.clone() {
        crate::lock(versions).insert(key(meta), (rv, now));
    }
}

fn is_own(versions: &Versions, meta: &ObjectMeta) -> bool {
    let mut versions = crate::lock(versions);
    let key = key(meta);
    let own = versions.get(&key).is_some_and(|(rv, _)| Some(rv) == meta.resource_version.as_ref());
    if own {
        versions.remove(&key);
    }
    own
}

fn key(meta: &ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(fingerprint: &str) -> GroupDocsCredentialStatus {
        GroupDocsCredentialStatus { token_fingerprint: Some(fingerprint.into()), ..Default::default() }
    }

    #[test]
    fn a_cache_without_our_write_is_behind_until_it_shows_it() {
        let writes = RecentWrites::default();
        let t0 = Instant::now();
        assert!(!writes.cache_is_behind("u", None, t0), "nothing written: the cache is right");
        writes.wrote("u", Some(&status("new")), t0);
        assert!(writes.cache_is_behind("u", None, t0));
        assert!(writes.cache_is_behind("u", Some(&status("old")), t0 + Duration::from_secs(1)));
        assert!(!writes.cache_is_behind("u", Some(&status("new")), t0 + Duration::from_secs(1)));
        assert!(writes.is_empty(), "caught up: forgotten");
    }

    fn secret(rv: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.namespace = Some("apps".into());
        s.metadata.name = Some("viewer-token".into());
        s.metadata.resource_version = Some(rv.into());
        s
    }

    fn secret_meta(rv: &str) -> ObjectMeta {
        secret(rv).metadata
    }

    #[test]
    fn our_secret_write_is_recognised_once_and_other_versions_never() {
        let writes = RecentWrites::default();
        let t0 = Instant::now();
        writes.wrote_secret(&secret("7"), t0);
        assert!(!writes.is_own_secret_write(&secret_meta("6")), "an older version is news");
        assert!(writes.is_own_secret_write(&secret_meta("7")));
        assert!(!writes.is_own_secret_write(&secret_meta("7")), "matched once");
        assert!(!writes.is_own_secret_write(&secret_meta("8")), "someone else's edit is news");
        writes.wrote_secret(&secret("9"), t0);
        writes.prune(t0 + TRUST_CACHE_AFTER);
        assert!(writes.is_empty());
    }

    #[test]
    fn our_status_write_is_recognised_once_and_other_versions_never() {
        let writes = RecentWrites::default();
        let t0 = Instant::now();
        let credential = secret_meta("7");
        writes.wrote_status_of(&credential, t0);
        assert!(!writes.is_own_status_write(&secret_meta("6")), "an older version is news");
        assert!(!writes.is_own_secret_write(&credential), "a Secret of the same name is another object");
        assert!(writes.is_own_status_write(&credential));
        assert!(!writes.is_own_status_write(&credential), "matched once");
        assert!(!writes.is_own_status_write(&secret_meta("8")), "someone else's change is news");
        writes.wrote_status_of(&credential, t0);
        writes.prune(t0 + TRUST_CACHE_AFTER);
        assert!(writes.is_empty(), "forgotten after a while");
    }

    #[test]
    fn the_cache_is_trusted_again_after_a_while() {
        let writes = RecentWrites::default();
        let t0 = Instant::now();
        writes.wrote("u", Some(&status("new")), t0);
        writes.wrote("v", Some(&status("new")), t0 + TRUST_CACHE_AFTER);
        assert!(!writes.cache_is_behind("u", Some(&status("edited")), t0 + TRUST_CACHE_AFTER));
        writes.prune(t0 + TRUST_CACHE_AFTER + Duration::from_secs(1));
        assert_eq!(writes.len(), 1, "v is recent and stays");
    }
}
