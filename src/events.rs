//! Kubernetes Events about credentials (`kubectl describe` and `kubectl events` show them).
//!
//! kube-runtime's `Recorder` keeps every event it publishes for six minutes, to fold repeats
//! into a series, and scans that whole cache under a write lock on each publish. This
//! operator publishes an event only when an outcome changes, so repeats are rare, while a
//! cold start publishes one event per credential at once: the cache cost memory and
//! serialised the publishes (figures in the README's Scale section). Events are created
//! directly instead.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

/// The API server refuses an event note longer than this many bytes.
const MAX_NOTE_BYTES: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// What happened to one object.
#[derive(Clone, Debug)]
pub struct Occurrence {
    pub kind: Kind,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
}

impl Publisher {
    /// `instance` names the replica (the pod name in a cluster).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Publisher { client, controller: controller.to_string(), instance: instance.unwrap_or(controller.to_string()) }
    }

    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        regarding: &K,
        occurrence: Occurrence,
    ) -> Result<(), kube::Error> {
        let event =
            render(&self.controller, &self.instance, regarding.object_ref(&()), occurrence, jiff::Timestamp::now());
        let namespace = event.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        Api::<Event>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await?;
        Ok(())
    }
}

/// An events.k8s.io/v1 Event named like kube-runtime's (`<object>.<nanoseconds in hex>`).
fn render(
    controller: &str,
    instance: &str,
    regarding: ObjectReference,
    occurrence: Occurrence,
    now: jiff::Timestamp,
) -> Event {
    let name = format!("{}.{:x}", regarding.name.as_deref().unwrap_or(controller), now.as_nanosecond());
    Event {
        metadata: ObjectMeta { name: Some(name), namespace: regarding.namespace.clone(), ..ObjectMeta::default() },
        event_time: Some(MicroTime(now)),
        action: Some(occurrence.action.to_string()),
        reason: Some(occurrence.reason.to_string()),
        note: Some(truncate(occurrence.note, MAX_NOTE_BYTES)),
        type_: Some(format!("{:?}", occurrence.kind)),
        reporting_controller: Some(controller.to_string()),
        reporting_instance: Some(instance.to_string()),
        regarding: Some(regarding),
        ..Event::default()
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_reporter_and_reason() {
        let regarding = ObjectReference {
            kind: Some("GroupDocsCredential".into()),
            name: Some("viewer".into()),
            namespace: Some("apps".into()),
            ..ObjectReference::default()
        };
        let occurrence =
            Occurrence { kind: Kind::Warning, reason: "SecretNotFound", action: "Reconcile", note: "x".repeat(2000) };
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let e = render("groupdocs-token-operator", "pod-1", regarding, occurrence, now);
        assert_eq!(e.metadata.name.as_deref(), Some(format!("viewer.{:x}", now.as_nanosecond()).as_str()));
        assert_eq!(e.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("SecretNotFound"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-1"));
        assert!(e.note.unwrap().len() <= MAX_NOTE_BYTES);
    }

    #[test]
    fn notes_are_cut_to_what_the_api_server_accepts() {
        assert_eq!(truncate("short".into(), 1024), "short");
        let long = "é".repeat(1000);
        let cut = truncate(long, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }
}
