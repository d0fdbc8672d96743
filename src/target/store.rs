//! The namespaced controller's cache of token Secrets: each one's [`CachedSecret`] by
//! namespace and name, filled from the watch.
//!
//! kube's reflector store would keep each Secret's whole `ObjectMeta` beside it, under a key
//! that repeats its name, namespace, uid and resourceVersion: about 1 KiB per Secret that no
//! reconcile reads, a quarter of the operator's memory at 100,000 credentials (README, Scale).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::watcher;

use super::{CachedSecret, WatchedSecret};

type Namespaces = HashMap<Box<str>, HashMap<Box<str>, Arc<CachedSecret>>>;

#[derive(Default)]
pub struct SecretViews {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    live: Namespaces,
    /// A (re)list in progress. It replaces the whole cache when complete, as kube's reflector
    /// does: Secrets deleted while the watch was down must go, and until then reconciles read
    /// the previous state rather than a half-filled one.
    listing: Option<Namespaces>,
}

impl SecretViews {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CachedSecret>> {
        crate::lock(&self.inner).live.get(namespace)?.get(name).cloned()
    }

    pub fn len(&self) -> usize {
        crate::lock(&self.inner).live.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings the cache in line with one watch event.
    pub fn apply(&self, event: &watcher::Event<WatchedSecret>) {
        let mut inner = crate::lock(&self.inner);
        match event {
            watcher::Event::Init => inner.listing = Some(Namespaces::new()),
            watcher::Event::InitApply(secret) => {
                if let Some(listing) = inner.listing.as_mut() {
                    insert(listing, secret);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = inner.listing.take() {
                    inner.live = listed;
                }
            }
            watcher::Event::Apply(secret) => insert(&mut inner.live, secret),
            watcher::Event::Delete(secret) => remove(&mut inner.live, secret),
        }
    }
}

fn insert(namespaces: &mut Namespaces, secret: &WatchedSecret) {
    let (Some(namespace), Some(name)) = (&secret.metadata.namespace, &secret.metadata.name) else { return };
    let cached = Arc::new(secret.cached.clone());
    match namespaces.get_mut(namespace.as_str()) {
        Some(names) => {
            names.insert(name.as_str().into(), cached);
        }
        None => {
            namespaces.insert(namespace.as_str().into(), HashMap::from([(name.as_str().into(), cached)]));
        }
    }
}

fn remove(namespaces: &mut Namespaces, secret: &WatchedSecret) {
    let (Some(namespace), Some(name)) = (&secret.metadata.namespace, &secret.metadata.name) else { return };
    if let Some(names) = namespaces.get_mut(namespace.as_str()) {
        names.remove(name.as_str());
        if names.is_empty() {
            namespaces.remove(namespace.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use watcher::Event;

    use super::*;

    fn secret(namespace: &str, name: &str, kind: &str) -> WatchedSecret {
        WatchedSecret::from(Secret {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            type_: Some(kind.into()),
            ..Secret::default()
        })
    }

    fn kind_of(views: &SecretViews, namespace: &str, name: &str) -> Option<String> {
        views.get(namespace, name).map(|c| c.type_.clone().unwrap_or_default())
    }

    #[test]
    fn events_add_replace_and_remove() {
        let views = SecretViews::default();
        views.apply(&Event::Apply(secret("a", "t", "one")));
        views.apply(&Event::Apply(secret("b", "t", "other")));
        views.apply(&Event::Apply(secret("a", "t", "two")));
        assert_eq!(kind_of(&views, "a", "t").as_deref(), Some("two"));
        assert_eq!(kind_of(&views, "b", "t").as_deref(), Some("other"));
        assert_eq!(views.len(), 2);
        views.apply(&Event::Delete(secret("a", "t", "two")));
        assert_eq!(kind_of(&views, "a", "t"), None);
        assert_eq!(views.len(), 1);
        assert!(!crate::lock(&views.inner).live.contains_key("a"), "an emptied namespace goes too");
    }

    #[test]
    fn a_relist_replaces_the_cache_when_complete() {
        let views = SecretViews::default();
        views.apply(&Event::Apply(secret("a", "gone", "x")));
        views.apply(&Event::Apply(secret("a", "kept", "old")));
        views.apply(&Event::Init);
        views.apply(&Event::InitApply(secret("a", "kept", "new")));
        assert_eq!(kind_of(&views, "a", "kept").as_deref(), Some("old"), "reads see the old state meanwhile");
        assert_eq!(kind_of(&views, "a", "gone").as_deref(), Some("x"));
        views.apply(&Event::InitDone);
        assert_eq!(kind_of(&views, "a", "kept").as_deref(), Some("new"));
        assert_eq!(kind_of(&views, "a", "gone"), None, "deleted while the watch was down");
        assert_eq!(views.len(), 1);
    }

    #[test]
    fn a_secret_without_a_name_is_ignored() {
        let views = SecretViews::default();
        views.apply(&Event::Apply(WatchedSecret::default()));
        assert!(views.is_empty());
    }
}
