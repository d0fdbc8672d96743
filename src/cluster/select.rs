//! Which namespaces a cluster credential serves: pure, from the cached namespaces.

use std::collections::BTreeMap;

use crate::crd::cluster::Selection;

/// One cached namespace, as selection needs it.
pub struct NamespaceFacts<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Being deleted: nothing can be created in it any more.
    pub terminating: bool,
}

/// The outcome of selection, each list sorted by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selected {
    /// Namespaces that receive the token Secret.
    pub namespaces: Vec<String>,
    /// Namespaces named in `spec.namespaces` that do not exist.
    pub missing: Vec<String>,
}

impl Selected {
    pub fn count(&self) -> usize {
        self.namespaces.len() + self.missing.len()
    }

    pub fn contains(&self, namespace: &str) -> bool {
        self.namespaces.binary_search_by(|n| n.as_str().cmp(namespace)).is_ok()
    }
}

/// Namespaces matched by the selector or named in the list; terminating ones are left out
/// (their Secrets go with them), listed ones that do not exist are reported as missing.
pub fn select<'a>(selection: &Selection, namespaces: impl IntoIterator<Item = NamespaceFacts<'a>>) -> Selected {
    let mut found = Vec::new();
    let mut existing = std::collections::BTreeSet::new();
    for ns in namespaces {
        existing.insert(ns.name.to_string());
        if ns.terminating {
            continue;
        }
        let listed = selection.listed.binary_search_by(|n| n.as_str().cmp(ns.name)).is_ok();
        if listed || selection.matches_labels(ns.labels) {
            found.push(ns.name.to_string());
        }
    }
    found.sort();
    found.dedup();
    let missing = selection.listed.iter().filter(|n| !existing.contains(*n)).cloned().collect();
    Selected { namespaces: found, missing }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ClusterGroupDocsCredential;

    fn selection(spec: serde_json::Value) -> Selection {
        let mut spec = spec;
        spec["clientSecretRef"] = serde_json::json!({"name": "c"});
        ClusterGroupDocsCredential::new("x", serde_json::from_value(spec).unwrap()).validate("ops").unwrap().selection
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selector_and_list_add_up_and_terminating_namespaces_are_left_out() {
        let docs = labels(&[("team", "docs")]);
        let none = labels(&[]);
        let all = [
            NamespaceFacts { name: "b", labels: &docs, terminating: false },
            NamespaceFacts { name: "a", labels: &docs, terminating: false },
            NamespaceFacts { name: "c", labels: &none, terminating: false },
            NamespaceFacts { name: "d", labels: &docs, terminating: true },
            NamespaceFacts { name: "e", labels: &none, terminating: false },
        ];
        let s = selection(serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "docs"}},
            "namespaces": ["c", "zz", "d"]}));
        let selected = select(&s, all);
        assert_eq!(selected.namespaces, ["a", "b", "c"]);
        assert_eq!(selected.missing, ["zz"], "a terminating namespace exists; it is not missing");
        assert_eq!(selected.count(), 4);
        assert!(selected.contains("b") && !selected.contains("e"));
    }

    #[test]
    fn a_label_removed_deselects() {
        let before = labels(&[("groupdocs", "yes")]);
        let after = labels(&[]);
        let s = selection(serde_json::json!({"namespaceSelector": {"matchExpressions": [
            {"key": "groupdocs", "operator": "In", "values": ["yes"]}]}}));
        assert_eq!(select(&s, [NamespaceFacts { name: "a", labels: &before, terminating: false }]).namespaces, ["a"]);
        assert!(select(&s, [NamespaceFacts { name: "a", labels: &after, terminating: false }]).namespaces.is_empty());
    }
}
