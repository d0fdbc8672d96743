//! When each credential is next due: a renewal hours away, kept here rather than in
//! kube-runtime's scheduler. Every credential waits for its next renewal almost all the time;
//! the scheduler keeps two copies of a full object reference and a delay-queue slot for each
//! (about 500 bytes), this keeps one shared `namespace/name` and a time (about 120 bytes).
//! Waits shorter than [`LONG_WAIT`] stay with the scheduler.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::Notify;

use crate::crd::CachedCredential;

/// Waits at least this long are kept here.
pub const LONG_WAIT: Duration = Duration::from_secs(60);

/// The longest the stream sleeps before looking again (the clock may jump).
const MAX_SLEEP: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Wakes {
    inner: Mutex<Inner>,
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    /// `(when, namespace/name)`, earliest first.
    queue: BTreeSet<(Timestamp, Arc<str>)>,
    /// The one time each credential is due (a new one replaces it).
    due: HashMap<Arc<str>, Timestamp>,
}

impl Wakes {
    /// Asks for the credential `namespace/name` to be reconciled at `when`, instead of any
    /// earlier request.
    pub fn at(&self, namespace: &str, name: &str, when: Timestamp) {
        let key: Arc<str> = format!("{namespace}/{name}").into();
        let earliest_before = {
            let mut inner = crate::lock(&self.inner);
            let earliest_before = inner.queue.first().map(|(t, _)| *t);
            if let Some(previous) = inner.due.insert(key.clone(), when) {
                inner.queue.remove(&(previous, key.clone()));
            }
            inner.queue.insert((when, key));
            earliest_before
        };
        if earliest_before.is_none_or(|t| when < t) {
            self.changed.notify_one();
        }
    }

    /// Takes out every credential due at `now`, earliest first.
    pub fn take_due(&self, now: Timestamp) -> Vec<ObjectRef<CachedCredential>> {
        let mut inner = crate::lock(&self.inner);
        let mut due = Vec::new();
        while let Some((when, key)) = inner.queue.first().cloned() {
            if when > now {
                break;
            }
            inner.queue.pop_first();
            inner.due.remove(&key);
            if let Some((namespace, name)) = key.split_once('/') {
                due.push(ObjectRef::new(name).within(namespace));
            }
        }
        due
    }

    /// Forgets a deleted credential.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key: Arc<str> = format!("{namespace}/{name}").into();
        let mut inner = crate::lock(&self.inner);
        if let Some(when) = inner.due.remove(&key) {
            inner.queue.remove(&(when, key));
        }
    }

    fn earliest(&self) -> Option<Timestamp> {
        crate::lock(&self.inner).queue.first().map(|(t, _)| *t)
    }

    pub fn len(&self) -> usize {
        crate::lock(&self.inner).due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The credentials as they come due, for the controller's `watches_stream` (each item is
    /// a credential's name and namespace only).
    pub fn stream(
        self: Arc<Self>,
    ) -> impl Stream<Item = Result<PartialObjectMeta<CachedCredential>, watcher::Error>> + Send + 'static {
        futures::stream::unfold((self, VecDeque::new()), |(wakes, mut ready)| async move {
            loop {
                if let Some(due) = ready.pop_front() {
                    return Some((Ok(as_object(due)), (wakes, ready)));
                }
                ready = wakes.take_due(Timestamp::now()).into();
                if !ready.is_empty() {
                    continue;
                }
                let sleep = wakes.earliest().map_or(MAX_SLEEP, |t| until(t).min(MAX_SLEEP));
                tokio::select! {
                    () = tokio::time::sleep(sleep) => {}
                    () = wakes.changed.notified() => {}
                }
            }
        })
    }
}

fn until(t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
}

fn as_object(due: ObjectRef<CachedCredential>) -> PartialObjectMeta<CachedCredential> {
    request(due.namespace.unwrap_or_default(), due.name)
}

/// A reconcile trigger for `namespace/name`, for `watches_stream` with [`credential_of`].
pub fn request(namespace: String, name: String) -> PartialObjectMeta<CachedCredential> {
    ObjectMeta { name: Some(name), namespace: Some(namespace), ..ObjectMeta::default() }.into_request_partial()
}

/// The credential a [`Wakes::stream`] item names.
pub fn credential_of(object: PartialObjectMeta<CachedCredential>) -> Option<ObjectRef<CachedCredential>> {
    let ObjectMeta { name, namespace, .. } = object.metadata;
    Some(ObjectRef::new(&name?).within(&namespace?))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use jiff::SignedDuration;

    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn names(refs: Vec<ObjectRef<CachedCredential>>) -> Vec<String> {
        refs.into_iter().map(|r| format!("{}/{}", r.namespace.unwrap(), r.name)).collect()
    }

    #[test]
    fn due_credentials_come_out_once_in_time_order() {
        let wakes = Wakes::default();
        wakes.at("b", "late", t("2026-11-28T12:00:00Z"));
        wakes.at("a", "early", t("2026-11-28T10:00:00Z"));
        wakes.at("a", "middle", t("2026-11-28T11:00:00Z"));
        assert!(wakes.take_due(t("2026-11-28T09:59:59Z")).is_empty());
        assert_eq!(names(wakes.take_due(t("2026-11-28T11:00:00Z"))), ["a/early", "a/middle"]);
        assert!(wakes.take_due(t("2026-11-28T11:00:00Z")).is_empty(), "taken once");
        assert_eq!(wakes.len(), 1);
    }

    #[test]
    fn a_new_time_replaces_the_old_one() {
        let wakes = Wakes::default();
        wakes.at("a", "c", t("2026-11-28T10:00:00Z"));
        wakes.at("a", "c", t("2026-11-28T18:00:00Z"));
        assert!(wakes.take_due(t("2026-11-28T12:00:00Z")).is_empty(), "the earlier time is gone");
        assert_eq!(wakes.len(), 1);
        assert_eq!(names(wakes.take_due(t("2026-11-28T18:00:00Z"))), ["a/c"]);
        assert!(wakes.is_empty());
    }

    #[test]
    fn a_deleted_credential_is_forgotten() {
        let wakes = Wakes::default();
        wakes.at("a", "gone", t("2026-11-28T10:00:00Z"));
        wakes.at("a", "kept", t("2026-11-28T10:00:00Z"));
        wakes.forget("a", "gone");
        wakes.forget("a", "never-there");
        assert_eq!(names(wakes.take_due(t("2026-11-28T10:00:00Z"))), ["a/kept"]);
    }

    #[tokio::test]
    async fn the_stream_yields_a_credential_when_it_comes_due() {
        let wakes = Arc::new(Wakes::default());
        let mut stream = Box::pin(wakes.clone().stream());
        wakes.at("a", "far", Timestamp::now() + SignedDuration::from_hours(1));
        wakes.at("a", "soon", Timestamp::now() + SignedDuration::from_millis(50));
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("due within 10 s");
        let due = credential_of(item.unwrap().unwrap()).unwrap();
        assert_eq!((due.namespace.as_deref(), due.name.as_str()), (Some("a"), "soon"));
        assert_eq!(wakes.len(), 1, "the far one still waits");
    }
}
