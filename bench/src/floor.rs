//! The floor: what the operator's writes cost the API server when nothing else happens.
//! N Secret creates, N status patches and N events by a plain parallel client, as the
//! operator's ServiceAccount and at the operator's concurrency, on credentials the operator
//! does not watch. The objects are the operator's own: Secrets rendered by its code (a token
//! of a real token's length, ownerReference, labels, annotations) and the status it writes
//! for a freshly issued token, so the API server and the garbage collector do the same work;
//! a watch on the credentials runs as during the operator's run.

use std::time::{Duration, Instant};

use futures::StreamExt;
use groupdocs_dev_token_server::DevServer;
use groupdocs_token_operator::cli::RunArgs;
use groupdocs_token_operator::conditions::{self, Facts, Outcome};
use groupdocs_token_operator::crd::{GroupDocsCredential, GroupDocsCredentialStatus};
use groupdocs_token_operator::redact::Sensitive;
use groupdocs_token_operator::schedule;
use groupdocs_token_operator::target::{self, IssuedFor};
use groupdocs_token_operator::token::Token;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use test_support::objects;

use crate::cluster::{self, Cluster};

/// Requests in flight while the floor creates its credentials (not measured).
const SETUP_CONCURRENCY: usize = 64;

/// What the floor needs to know of the operator's run.
pub struct Floor<'a> {
    /// The operator's settings: its concurrency, its minimum refresh interval.
    pub settings: &'a RunArgs,
    /// The token server of the cold start, and its tokens' lifetime.
    pub dev: &'a DevServer,
    pub token_lifetime: SignedDuration,
}

impl Floor<'_> {
    /// The time the floor takes for `n` credentials over `clients` clients.
    pub async fn run(&self, cluster: &Cluster, n: usize, clients: usize) -> Duration {
        let ns = format!("floor-{n}");
        let _ = objects::create_namespace(&cluster.admin, &ns).await;
        let crs: Api<GroupDocsCredential> = Api::namespaced(cluster.admin.clone(), &ns);
        let created: Vec<GroupDocsCredential> = futures::stream::iter(0..n)
            .map(|i| {
                let crs = crs.clone();
                async move {
                    let cr = objects::credential(&format!("f-{i}"), cluster::credential_spec(i % clients, self.dev));
                    let mut cr = crs.create(&PostParams::default(), &cr).await.unwrap();
                    // Held until written, 100,000 of them at the largest size: the Secret and
                    // the status need the name, uid, generation and spec, not the field owners.
                    cr.metadata.managed_fields = None;
                    cr
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        let token = self.token();
        let issued_for = IssuedFor {
            token_url: self.dev.token_url(),
            client_id: cluster::client_id(0),
            scope: None,
            client_secret_version: "1".into(),
        };
        let observer = cluster::watch_ready(&cluster.admin, &ns, n).await;
        let secrets: Api<Secret> = Api::namespaced(cluster.sa.clone(), &ns);
        let status: Api<GroupDocsCredential> = Api::namespaced(cluster.sa.clone(), &ns);
        let events: Api<Event> = Api::namespaced(cluster.sa.clone(), &ns);
        let start = Instant::now();
        futures::stream::iter(created)
            .for_each_concurrent(usize::from(self.settings.concurrency), |cr| {
                let (secrets, status, events, ns) = (secrets.clone(), status.clone(), events.clone(), ns.clone());
                let (token, issued_for) = (token.clone(), issued_for.clone());
                async move {
                    let name = cr.metadata.name.clone().unwrap();
                    let secret = target::render(&target::Target::of(&cr), &token, &issued_for).unwrap();
                    secrets.create(&PostParams::default(), &secret).await.unwrap();
                    let patch = json!({
                        "apiVersion": "groupdocs.cloud/v1alpha1", "kind": "GroupDocsCredential",
                        "status": self.ready_status(&cr, &token),
                    });
                    status.patch_status(&name, &PatchParams::apply("floor").force(), &Patch::Apply(&patch)).await.unwrap();
                    let ev: Event = serde_json::from_value(json!({
                        "metadata": {"name": format!("{name}.floor")}, "eventTime": Timestamp::now().to_string(),
                        "reportingController": "floor", "reportingInstance": "floor", "action": "Reconcile", "reason": "TokenIssued",
                        "note": format!("token written to Secret {name}-token"),
                        "type": "Normal", "regarding": {"kind": "GroupDocsCredential", "namespace": ns, "name": name},
                    }))
                    .unwrap();
                    events.create(&PostParams::default(), &ev).await.unwrap();
                }
            })
            .await;
        observer.await;
        start.elapsed()
    }

    /// A token like the token server's: as long as the ones it issued, living as long.
    fn token(&self) -> Token {
        let length = self.dev.issued_tokens().first().map(String::len).expect("the cold start issued tokens");
        let issued_at = schedule::whole_seconds(Timestamp::now());
        Token {
            access_token: Sensitive::new("x".repeat(length)),
            token_type: "Bearer".into(),
            issued_at,
            expires_at: issued_at + self.token_lifetime,
        }
    }

    /// The status the operator writes for a freshly issued token, renewal time included.
    fn ready_status(&self, cr: &GroupDocsCredential, token: &Token) -> GroupDocsCredentialStatus {
        let facts = Facts {
            generation: cr.metadata.generation,
            token_expires_at: Some(token.expires_at),
            outcome: Outcome::Issued,
            now: Timestamp::now(),
            note: None,
        };
        let fingerprint = token.access_token.fingerprint();
        let seed = format!("{}/{fingerprint}", cr.metadata.uid.as_deref().unwrap_or_default());
        let refresh = schedule::refresh_at(
            token.issued_at,
            token.expires_at,
            None,
            schedule::jitter_for(&seed),
            self.settings.min_refresh_interval,
        );
        GroupDocsCredentialStatus {
            observed_generation: cr.metadata.generation,
            conditions: conditions::conditions(&[], &facts),
            expires_at: Some(Time(token.expires_at)),
            last_refresh_time: Some(Time(token.issued_at)),
            next_refresh_time: Some(Time(refresh)),
            token_fingerprint: Some(fingerprint),
            ..GroupDocsCredentialStatus::default()
        }
    }
}
