//! Which credentials use which client Secret. A client Secret's change is mapped to the
//! credentials to reconcile through this index rather than a scan of every credential: at
//! 100,000 credentials over 10,000 client Secrets, the initial list of the Secrets alone would
//! otherwise cost 10^9 comparisons.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;

use crate::crd::CachedCredential;

/// `(namespace, client Secret name)` to the names of the credentials there that reference it.
///
/// A superset: an entry stays behind when a credential's `clientSecretRef` changes (the
/// previous reference is taken out only when the cache still has it), so lookups check each
/// name against the cache.
#[derive(Default)]
pub struct ClientSecretIndex {
    inner: Mutex<Inner>,
}

type BySecret = HashMap<(String, String), HashSet<String>>;

#[derive(Default)]
struct Inner {
    by_secret: BySecret,
    /// While the watch lists again: the new index, swapped in when the list is done. Until
    /// then the cache still shows the old list, and so does `by_secret`; lookups use both.
    relisting: Option<BySecret>,
}

impl ClientSecretIndex {
    /// Takes in one event of the credentials' watch, before the cache (`store`) applies it.
    pub fn observe(&self, event: &Event<CachedCredential>, store: &Store<CachedCredential>) {
        let mut inner = crate::lock(&self.inner);
        let Inner { by_secret, relisting } = &mut *inner;
        match event {
            Event::Init => *relisting = Some(BySecret::new()),
            Event::InitApply(cr) => insert(relisting.get_or_insert_default(), cr),
            Event::InitDone => *by_secret = relisting.take().unwrap_or_default(),
            Event::Apply(cr) => {
                if let Some(previous) = store.get(&ObjectRef::from_obj(cr)) {
                    remove(by_secret, &previous);
                }
                insert(by_secret, cr);
            }
            Event::Delete(cr) => remove(by_secret, cr),
        }
    }

    /// The credentials in `namespace` whose `clientSecretRef` names `secret`, as the cache
    /// has them now.
    pub fn credentials_using(
        &self,
        store: &Store<CachedCredential>,
        namespace: &str,
        secret: &str,
    ) -> Vec<ObjectRef<CachedCredential>> {
        let key = (namespace.to_string(), secret.to_string());
        let names: HashSet<String> = {
            let inner = crate::lock(&self.inner);
            [Some(&inner.by_secret), inner.relisting.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|index| index.get(&key))
                .flatten()
                .cloned()
                .collect()
        };
        names
            .into_iter()
            .map(|name| ObjectRef::new(&name).within(namespace))
            .filter(|key| store.get(key).is_some_and(|cr| cr.spec.client_secret_ref.name == secret))
            .collect()
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        crate::lock(&self.inner).by_secret.values().map(HashSet::len).sum()
    }
}

fn key(cr: &CachedCredential) -> (String, String) {
    (cr.namespace().unwrap_or_default(), cr.spec.client_secret_ref.name.clone())
}

fn insert(by_secret: &mut BySecret, cr: &CachedCredential) {
    by_secret.entry(key(cr)).or_default().insert(cr.name_any());
}

fn remove(by_secret: &mut BySecret, cr: &CachedCredential) {
    let key = key(cr);
    if let Some(names) = by_secret.get_mut(&key) {
        names.remove(&cr.name_any());
        if names.is_empty() {
            by_secret.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector::store::Writer;

    use super::*;

    fn credential(ns: &str, name: &str, secret: &str) -> CachedCredential {
        let mut cr = crate::fixtures::credential(&format!("uid-{name}"));
        cr.metadata.namespace = Some(ns.into());
        cr.metadata.name = Some(name.into());
        cr.spec.client_secret_ref.name = secret.into();
        cr.into()
    }

    /// Feeds `event` to the index and then to the cache, in the watch's order.
    fn feed(index: &ClientSecretIndex, writer: &mut Writer<CachedCredential>, event: Event<CachedCredential>) {
        index.observe(&event, &writer.as_reader());
        writer.apply_watcher_event(&event);
    }

    fn names(refs: Vec<ObjectRef<CachedCredential>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    fn listed(crs: &[CachedCredential]) -> (ClientSecretIndex, Writer<CachedCredential>) {
        let (index, mut writer) = (ClientSecretIndex::default(), Writer::default());
        feed(&index, &mut writer, Event::Init);
        for cr in crs {
            feed(&index, &mut writer, Event::InitApply(cr.clone()));
        }
        feed(&index, &mut writer, Event::InitDone);
        (index, writer)
    }

    #[test]
    fn finds_the_credentials_of_a_secret_in_its_namespace_only() {
        let (index, writer) = listed(&[
            credential("a", "one", "client"),
            credential("a", "two", "client"),
            credential("a", "other", "another-client"),
            credential("b", "three", "client"),
        ]);
        let store = writer.as_reader();
        assert_eq!(names(index.credentials_using(&store, "a", "client")), ["one", "two"]);
        assert_eq!(names(index.credentials_using(&store, "b", "client")), ["three"]);
        assert!(index.credentials_using(&store, "c", "client").is_empty());
    }

    #[test]
    fn follows_a_changed_reference_and_a_deletion() {
        let (index, mut writer) = listed(&[credential("a", "one", "client"), credential("a", "two", "client")]);
        feed(&index, &mut writer, Event::Apply(credential("a", "one", "rotated-client")));
        feed(&index, &mut writer, Event::Delete(credential("a", "two", "client")));
        let store = writer.as_reader();
        assert!(index.credentials_using(&store, "a", "client").is_empty());
        assert_eq!(names(index.credentials_using(&store, "a", "rotated-client")), ["one"]);
        assert_eq!(index.entries(), 1, "nothing stale left behind");
    }

    #[test]
    fn a_relist_starts_over_and_answers_meanwhile() {
        let (index, mut writer) = listed(&[credential("a", "one", "client"), credential("a", "gone", "client")]);
        feed(&index, &mut writer, Event::Init);
        feed(&index, &mut writer, Event::InitApply(credential("a", "one", "client")));
        let store = writer.as_reader();
        assert_eq!(
            names(index.credentials_using(&store, "a", "client")),
            ["gone", "one"],
            "while the list runs, the cache still shows the old one"
        );
        feed(&index, &mut writer, Event::InitDone);
        assert_eq!(names(index.credentials_using(&writer.as_reader(), "a", "client")), ["one"]);
        assert_eq!(index.entries(), 1);
    }

    #[test]
    fn a_stale_entry_is_checked_against_the_cache() {
        // The cache applied a change the index never saw (as if the index were behind).
        let (index, mut writer) = listed(&[credential("a", "one", "client")]);
        writer.apply_watcher_event(&Event::Apply(credential("a", "one", "elsewhere")));
        assert!(index.credentials_using(&writer.as_reader(), "a", "client").is_empty());
    }
}
