//! The reconcile of every cached credential once a scope's caches have synced, paced.
//!
//! kube-runtime's `reconcile_all_on` puts the whole cache into its scheduler at once. With
//! 100,000 credentials and 16 reconciles at a time, every request then sits in the
//! scheduler's map, its delay queue and its pending set (each holding a copy of the
//! credential's name, namespace, uid and resourceVersion), and none of the three gives its
//! capacity back: tens of MiB kept for the life of the process (README, Scale). Here the
//! requests go in a few at a time: the next one when a reconcile has taken one out. The same
//! runs again after a watch of the scope had to list again (after an outage of the watch).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::Notify;

use crate::crd::CachedCredential;

/// Requests waiting in kube-runtime's scheduler at most: enough that a freed reconcile slot
/// never waits for the next.
pub const IN_SCHEDULER: usize = 64;

/// How often requests waiting this long are checked against the cache: a request whose
/// credential was deleted before its reconcile started never starts.
const CHECK_AFTER: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Bulk {
    /// Requests handed to the scheduler whose reconcile has not started, by namespace/name.
    waiting: Mutex<HashMap<String, Instant>>,
    taken: Notify,
    /// A watch of the scope listed again after the first sync: one more round is due.
    relisted: Notify,
}

impl Bulk {
    /// A reconcile of `namespace/name` started: the scheduler holds one request fewer.
    pub fn started(&self, namespace: &str, name: &str) {
        let mut waiting = crate::lock(&self.waiting);
        if waiting.is_empty() {
            return;
        }
        if waiting.remove(&key(namespace, name)).is_some() {
            drop(waiting);
            self.taken.notify_one();
        }
    }

    /// A watch of the scope completed a relist after the first sync. The relist's events
    /// cannot stand for a reconcile of everything: an object deleted meanwhile (a token
    /// Secret) has no event, and a credential created meanwhile is not yet in the cache its
    /// trigger is looked up in. Rounds do not pile up: besides the one that a relist starts,
    /// one more at most is remembered.
    pub fn relisted(&self) {
        self.relisted.notify_one();
    }

    /// How many more requests may go in now.
    fn room(&self, now: Instant, store: &Store<CachedCredential>) -> usize {
        let mut waiting = crate::lock(&self.waiting);
        waiting.retain(|key, since| now.duration_since(*since) < CHECK_AFTER || still_cached(store, key));
        IN_SCHEDULER.saturating_sub(waiting.len())
    }

    fn handed_over(&self, namespace: &str, name: &str, now: Instant) {
        crate::lock(&self.waiting).insert(key(namespace, name), now);
    }

    /// Once `synced` resolves, and again after each [`Bulk::relisted`], every credential
    /// `store` then holds, as reconcile triggers for `watches_stream` (mapped by
    /// [`crate::wakes::credential_of`]), no more than [`IN_SCHEDULER`] waiting at a time.
    pub fn stream(
        self: Arc<Self>,
        store: Store<CachedCredential>,
        synced: impl Future<Output = ()> + Send + 'static,
    ) -> impl Stream<Item = Result<PartialObjectMeta<CachedCredential>, watcher::Error>> + Send + 'static {
        let relists = futures::stream::unfold(self.clone(), |bulk| async move {
            bulk.relisted.notified().await;
            Some(((), bulk))
        });
        futures::stream::once(synced).chain(relists).flat_map(move |()| self.clone().round(store.clone()))
    }

    /// One round: what `store` holds now, paced.
    fn round(
        self: Arc<Self>,
        store: Store<CachedCredential>,
    ) -> impl Stream<Item = Result<PartialObjectMeta<CachedCredential>, watcher::Error>> + Send + 'static {
        // A pointer each (8 bytes, where names would be about 80): an object replaced before
        // its turn stays alive only until then.
        let cached = store.state().into_iter();
        futures::stream::unfold((self, store, cached), |(bulk, store, mut cached)| async move {
            let cr = cached.next()?;
            let (namespace, name) = (cr.namespace().unwrap_or_default(), cr.name_any());
            drop(cr);
            loop {
                // Registered before looking, so a slot freed in between is not missed.
                let taken = bulk.taken.notified();
                if bulk.room(Instant::now(), &store) > 0 {
                    break;
                }
                let _ = tokio::time::timeout(CHECK_AFTER, taken).await;
            }
            bulk.handed_over(&namespace, &name, Instant::now());
            Some((Ok(crate::wakes::request(namespace, name)), (bulk, store, cached)))
        })
    }
}

fn still_cached(store: &Store<CachedCredential>, key: &str) -> bool {
    key.split_once('/').is_some_and(|(namespace, name)| store.get(&ObjectRef::new(name).within(namespace)).is_some())
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    use super::*;

    type Writer = reflector::store::Writer<CachedCredential>;

    fn credential(i: usize) -> CachedCredential {
        let mut cr = crate::fixtures::credential(&format!("uid-{i}"));
        cr.metadata.name = Some(format!("c{i}"));
        CachedCredential::from(cr)
    }

    fn store_of(n: usize) -> (Store<CachedCredential>, Writer) {
        let (reader, mut writer) = reflector::store();
        for i in 0..n {
            writer.apply_watcher_event(&Event::Apply(credential(i)));
        }
        (reader, writer)
    }

    fn name_of(item: Result<PartialObjectMeta<CachedCredential>, watcher::Error>) -> (String, String) {
        let meta = item.unwrap().metadata;
        (meta.namespace.unwrap(), meta.name.unwrap())
    }

    type Requests = std::pin::Pin<Box<dyn Stream<Item = Result<PartialObjectMeta<CachedCredential>, watcher::Error>>>>;

    /// The requests that come within `wait` of each other.
    async fn drain(stream: &mut Requests, wait: Duration) -> Vec<(String, String)> {
        let mut handed = Vec::new();
        while let Ok(Some(item)) = tokio::time::timeout(wait, stream.next()).await {
            handed.push(name_of(item));
        }
        handed
    }

    fn start_all(bulk: &Bulk, handed: Vec<(String, String)>) {
        for (namespace, name) in handed {
            bulk.started(&namespace, &name);
        }
    }

    #[tokio::test]
    async fn nothing_before_the_caches_synced_then_all_paced_by_started_reconciles() {
        let n = IN_SCHEDULER + 10;
        let bulk = Arc::new(Bulk::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (store, _writer) = store_of(n);
        let mut stream: Requests = Box::pin(bulk.clone().stream(store, async move { rx.await.unwrap() }));
        let short = Duration::from_millis(50);
        assert!(drain(&mut stream, short).await.is_empty(), "not before the caches synced");
        tx.send(()).unwrap();
        let mut handed = drain(&mut stream, short).await;
        assert_eq!(handed.len(), IN_SCHEDULER, "at most this many wait in the scheduler");
        start_all(&bulk, handed.drain(..5).collect());
        bulk.started("elsewhere", "not-from-the-bulk");
        let more = drain(&mut stream, short).await;
        assert_eq!(more.len(), 5, "one more per started reconcile, no more");
        start_all(&bulk, handed);
        start_all(&bulk, more);
        assert_eq!(drain(&mut stream, short).await.len(), 5, "the rest");
        assert!(drain(&mut stream, short).await.is_empty(), "each credential once a round");
    }

    #[tokio::test]
    async fn a_relist_brings_another_round() {
        let bulk = Arc::new(Bulk::default());
        let (store, _writer) = store_of(3);
        let mut stream: Requests = Box::pin(bulk.clone().stream(store, async {}));
        let short = Duration::from_millis(50);
        let first = drain(&mut stream, short).await;
        assert_eq!(first.len(), 3);
        start_all(&bulk, first);
        bulk.relisted();
        let second = drain(&mut stream, short).await;
        assert_eq!(second.len(), 3, "every credential again");
        start_all(&bulk, second);
        assert!(drain(&mut stream, short).await.is_empty(), "one round a relist");
        for _ in 0..5 {
            bulk.relisted();
        }
        let after_five = drain(&mut stream, short).await;
        assert_eq!(after_five.len(), 6, "relists that come together bring two rounds, not five");
        start_all(&bulk, after_five);
        assert!(drain(&mut stream, short).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_credential_was_deleted_stops_counting() {
        let bulk = Arc::new(Bulk::default());
        let (store, mut writer) = store_of(IN_SCHEDULER + 1);
        let mut stream: Requests = Box::pin(bulk.clone().stream(store, async {}));
        let handed = drain(&mut stream, Duration::from_millis(1)).await;
        assert_eq!(handed.len(), IN_SCHEDULER);
        // None starts, and all are still cached (slow reconciles): nothing more goes in.
        assert!(drain(&mut stream, CHECK_AFTER * 3).await.is_empty());
        // One of them is deleted before its reconcile started: its place is taken.
        let (_, name) = &handed[0];
        let index: usize = name.trim_start_matches('c').parse().unwrap();
        writer.apply_watcher_event(&Event::Delete(credential(index)));
        let started = tokio::time::Instant::now();
        assert_eq!(drain(&mut stream, CHECK_AFTER * 2).await.len(), 1);
        assert!(started.elapsed() >= CHECK_AFTER - Duration::from_secs(1));
    }
}
