//! The controller of `ClusterGroupDocsCredential`s: its watches (the cluster credentials, the
//! namespaces they select, the copies they own, and the client Secrets of
//! `--cluster-resource-namespace`) and its run loop. A reconcile is in [`reconcile`]; selection
//! and the status summary are pure functions in [`select`] and [`summary`].
//!
//! Served only when the operator watches all namespaces with Secret watches (the cluster RBAC
//! mode of the chart): a namespaced install cannot read other namespaces.

mod reconcile;
pub mod select;
pub mod summary;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate as _, WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

use crate::controller::{CLIENT_CREDENTIALS_LABEL, Shared, credentials_watch_config};
use crate::crd::ClusterGroupDocsCredential;
use crate::error::Error;
use crate::guard::{Guarded, guarded};
use crate::target::{CLUSTER_CREDENTIAL_LABEL, WatchedSecret};

/// What a cluster credential's reconcile reads.
pub struct ClusterContext {
    pub shared: Arc<Shared>,
    pub credentials: Store<ClusterGroupDocsCredential>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Token Secrets labelled with a cluster credential's name, in every namespace.
    pub copies: Store<WatchedSecret>,
    /// Labelled client Secrets of `--cluster-resource-namespace`.
    pub client_secrets: Store<Secret>,
    pub synced: Arc<Synced4>,
}

/// Whether each of the four watches has completed its initial list.
#[derive(Default)]
pub struct Synced4([AtomicBool; 4]);

impl Synced4 {
    pub fn all(&self) -> bool {
        self.0.iter().all(|f| f.load(Ordering::SeqCst))
    }

    fn mark<K>(self: &Arc<Self>, i: usize) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let flags = self.clone();
        move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                flags.0[i].store(true, Ordering::SeqCst);
            }
        }
    }
}

/// A hash of what selection reads of a namespace, so other changes to it reconcile nothing.
fn selection_facts(ns: &PartialObjectMeta<Namespace>) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    ns.metadata.labels.hash(&mut hasher);
    ns.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// The cluster credentials, for metrics.
pub type ClusterCredentials = Store<ClusterGroupDocsCredential>;

/// Runs the cluster credential controller until `shutdown`; `on_store` receives its
/// credential cache as soon as it exists.
pub async fn run(
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
    on_store: impl FnOnce(ClusterCredentials),
) {
    let (controller, ctx) = controller(shared.clone());
    shared.register_cluster_credentials(ctx.credentials.clone(), ctx.synced.clone());
    on_store(ctx.credentials.clone());
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "cluster controller event");
            }
        })
        .await;
}

/// Waits for the caches, then reconciles under the same guard as the namespaced kind: a panic
/// fails this credential only, lease loss stops it where it stands.
async fn reconcile(cr: Arc<ClusterGroupDocsCredential>, ctx: Arc<ClusterContext>) -> Result<Action, Error> {
    if !ctx.synced.all() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    if !ctx.shared.ready_to_request() {
        // Failures recorded in every status go back into the budget before the first request.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    match guarded(reconcile::reconcile(cr.clone(), ctx.clone()), &ctx.shared.halt).await {
        Guarded::Done(result) => result,
        Guarded::Panicked(message) => reconcile::report_panic(&cr, &ctx, message).await,
        Guarded::Halted => Ok(Action::await_change()),
    }
}

fn error_policy(cr: Arc<ClusterGroupDocsCredential>, error: &Error, ctx: Arc<ClusterContext>) -> Action {
    ctx.shared.metrics.reconciled(error.reason(), Duration::ZERO);
    warn!(cluster_credential = %cr.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5) + Duration::from_millis(rand::random::<u64>() % 5000))
}

fn controller(shared: Arc<Shared>) -> (Controller<ClusterGroupDocsCredential>, ClusterContext) {
    let client: &Client = &shared.client;
    let synced = Arc::new(Synced4::default());
    let settings = &shared.settings;

    let (cr_reader, cr_writer) = reflector::store();
    let crs = watcher(Api::<ClusterGroupDocsCredential>::all(client.clone()), credentials_watch_config(settings))
        .default_backoff()
        .inspect(synced.mark(0))
        .modify(|cr| cr.managed_fields_mut().clear())
        .reflect(cr_writer)
        .applied_objects()
        .predicate_filter(predicates::generation.combine(predicates::annotations), Default::default());

    let (ns_reader, ns_writer) = reflector::store();
    let namespaces = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .inspect(synced.mark(1))
        .modify(|ns| {
            ns.metadata.managed_fields = None;
            ns.metadata.annotations = None;
        })
        .reflect(ns_writer)
        .touched_objects()
        // Only what selection reads: labels, and whether the namespace is being deleted.
        .predicate_filter(selection_facts, Default::default());

    let (copies_reader, copies_writer) = reflector::store();
    let copies =
        watcher(Api::<WatchedSecret>::all(client.clone()), watcher::Config::default().labels(CLUSTER_CREDENTIAL_LABEL))
            .default_backoff()
            .inspect(synced.mark(2))
            .reflect(copies_writer)
            .touched_objects()
            .try_filter({
                let shared = shared.clone();
                move |secret| std::future::ready(!shared.writes.is_own_secret_write(&secret.metadata))
            });

    let (client_reader, client_writer) = reflector::store();
    let client_secrets = watcher(
        Api::<Secret>::namespaced(client.clone(), &settings.cluster_resource_namespace),
        watcher::Config::default().labels(&format!("{CLIENT_CREDENTIALS_LABEL}=true")),
    )
    .default_backoff()
    .inspect(synced.mark(3))
    .modify(|s| s.metadata.managed_fields = None)
    .reflect(client_writer)
    .touched_objects();

    let all = cr_reader.clone();
    let by_client_secret = cr_reader.clone();
    let controller = Controller::for_stream(crs, cr_reader.clone())
        .with_config(ControllerConfig::default().concurrency(settings.concurrency.min(4)))
        // Cluster credentials are few: a namespace event looks at all of them.
        .watches_stream(namespaces, move |_| {
            all.state().iter().map(|cr| ObjectRef::from_obj(cr.as_ref())).collect::<Vec<_>>()
        })
        // A copy's owner is cluster-scoped, which kube's `owns` (namespaced owners) cannot map.
        .watches_stream(copies, |secret| {
            secret
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.controller == Some(true) && o.kind == "ClusterGroupDocsCredential")
                .map(|o| ObjectRef::new(&o.name))
                .collect::<Vec<_>>()
        })
        .watches_stream(client_secrets, move |secret| {
            let name = secret.name_any();
            by_client_secret
                .state()
                .iter()
                .filter(|cr| cr.spec.client_secret_ref.name == name)
                .map(|cr| ObjectRef::from_obj(cr.as_ref()))
                .collect::<Vec<_>>()
        });
    let ctx = ClusterContext {
        shared,
        credentials: cr_reader,
        namespaces: ns_reader,
        copies: copies_reader,
        client_secrets: client_reader,
        synced,
    };
    (controller, ctx)
}
