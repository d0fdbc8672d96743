//! The reconcile of every cached credential once a scope's caches have synced, paced.
//!
//! kube-runtime's `reconcile_all_on` puts the whole cache into its scheduler at once. With
//! 100,000 credentials and 16 reconciles at a time, every request then sits in the
//! scheduler's map, its delay queue and its pending set (each holding a copy of the
//! credential's name, namespace, uid and resourceVersion), and none of the three gives its
//! capacity back: tens of MiB kept for the life of the process (README, Scale). Here the
//! requests go in a few at a time: the next one when a reconcile has taken one out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::Notify;

use crate::crd::CachedCredential;

/// Requests waiting in kube-runtime's scheduler at most: enough that a freed reconcile slot
/// never waits for the next.
pub const IN_SCHEDULER: usize = 64;

/// A request whose reconcile never started (its credential was deleted meanwhile) stops
/// counting after this long.
const FORGET_AFTER: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Bulk {
    /// Requests handed to the scheduler whose reconcile has not started, by namespace/name.
    waiting: Mutex<HashMap<String, Instant>>,
    taken: Notify,
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

    /// How many more requests may go in now.
    fn room(&self, now: Instant) -> usize {
        let mut waiting = crate::lock(&self.waiting);
        waiting.retain(|_, since| now.duration_since(*since) < FORGET_AFTER);
        IN_SCHEDULER.saturating_sub(waiting.len())
    }

    fn handed_over(&self, namespace: &str, name: &str, now: Instant) {
        crate::lock(&self.waiting).insert(key(namespace, name), now);
    }

    /// Once `synced` resolves, every credential `store` then holds, as reconcile triggers
    /// for `watches_stream` (mapped by [`crate::wakes::credential_of`]), no more than
    /// [`IN_SCHEDULER`] waiting at a time.
    pub fn stream(
        self: Arc<Self>,
        store: Store<CachedCredential>,
        synced: impl Future<Output = ()> + Send + 'static,
    ) -> impl Stream<Item = Result<PartialObjectMeta<CachedCredential>, watcher::Error>> + Send + 'static {
        let cached = async move {
            synced.await;
            // A pointer each (8 bytes, where names would be about 80): an object replaced
            // before its turn stays alive only until then.
            store.state()
        };
        futures::stream::once(cached).flat_map(move |cached| {
            let bulk = self.clone();
            futures::stream::unfold((bulk, cached.into_iter()), |(bulk, mut cached)| async move {
                let cr = cached.next()?;
                let (namespace, name) = (cr.namespace().unwrap_or_default(), cr.name_any());
                drop(cr);
                loop {
                    // Registered before looking, so a slot freed in between is not missed.
                    let taken = bulk.taken.notified();
                    if bulk.room(Instant::now()) > 0 {
                        break;
                    }
                    // Also wakes to forget requests that never started.
                    let _ = tokio::time::timeout(FORGET_AFTER, taken).await;
                }
                bulk.handed_over(&namespace, &name, Instant::now());
                Some((Ok(crate::wakes::request(namespace, name)), (bulk, cached)))
            })
        })
    }
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

    fn store_of(n: usize) -> Store<CachedCredential> {
        let (reader, mut writer) = reflector::store();
        for i in 0..n {
            let mut cr = crate::fixtures::credential(&format!("uid-{i}"));
            cr.metadata.name = Some(format!("c{i}"));
            writer.apply_watcher_event(&Event::Apply(CachedCredential::from(cr)));
        }
        reader
    }

    fn name_of(item: Result<PartialObjectMeta<CachedCredential>, watcher::Error>) -> (String, String) {
        let meta = item.unwrap().metadata;
        (meta.namespace.unwrap(), meta.name.unwrap())
    }

    #[tokio::test]
    async fn nothing_before_the_caches_synced_then_all_paced_by_started_reconciles() {
        let n = IN_SCHEDULER + 10;
        let bulk = Arc::new(Bulk::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut stream = Box::pin(bulk.clone().stream(store_of(n), async move { rx.await.unwrap() }));
        let next = |stream: &mut std::pin::Pin<Box<_>>| {
            futures::FutureExt::now_or_never(StreamExt::next(stream)).flatten().map(name_of)
        };
        assert!(next(&mut stream).is_none(), "not before the caches synced");
        tx.send(()).unwrap();
        let mut handed = Vec::new();
        while let Some(item) = tokio::time::timeout(Duration::from_millis(50), stream.next()).await.ok().flatten() {
            handed.push(name_of(item));
        }
        assert_eq!(handed.len(), IN_SCHEDULER, "at most this many wait in the scheduler");
        for (namespace, name) in handed.drain(..5) {
            bulk.started(&namespace, &name);
        }
        bulk.started("elsewhere", "not-from-the-bulk");
        for _ in 0..5 {
            handed.push(name_of(tokio::time::timeout(Duration::from_secs(1), stream.next()).await.unwrap().unwrap()));
        }
        assert!(next(&mut stream).is_none(), "one more per started reconcile, no more");
        for (namespace, name) in handed.drain(..) {
            bulk.started(&namespace, &name);
        }
        let rest: Vec<_> = stream.map(name_of).collect().await;
        assert_eq!(rest.len(), 5, "every credential comes out once, then the stream ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_never_starts_stops_counting() {
        let bulk = Arc::new(Bulk::default());
        let mut stream = Box::pin(bulk.clone().stream(store_of(IN_SCHEDULER + 1), async {}));
        for _ in 0..IN_SCHEDULER {
            stream.next().await.unwrap().unwrap();
        }
        // None of them starts (all deleted, say): the last one still comes, after the timeout.
        let started = tokio::time::Instant::now();
        stream.next().await.unwrap().unwrap();
        assert!(started.elapsed() >= FORGET_AFTER);
        assert!(stream.next().await.is_none());
    }
}
