//! The controller: watches and caches, the mappers from Secrets to credentials, the guard
//! around each reconcile, `error_policy`, and `run`. What a reconcile does is in
//! [`crate::reconcile`]; what it decides, in [`crate::status`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::bulk::Bulk;
use crate::crd::{CachedCredential, ClusterGroupDocsCredential, GroupDocsCredential};
use crate::error::Error;
use crate::events::Publisher;
use crate::guard::{Guarded, guarded};
use crate::index::ClientSecretIndex;
use crate::metrics::Metrics;
use crate::policy::TokenUrlPolicy;
use crate::schedule;
use crate::target::store::SecretViews;
use crate::target::{CLUSTER_CREDENTIAL_LABEL, MANAGED_BY, MANAGED_BY_LABEL, WatchedSecret};
use crate::token::broker::Broker;
use crate::token::client::HttpTokenClient;
use crate::wakes::Wakes;
use crate::writes::RecentWrites;

pub const FIELD_MANAGER: &str = "groupdocs-token-operator";

/// Client Secrets opt in with this label; the operator watches (caches) only those.
pub const CLIENT_CREDENTIALS_LABEL: &str = "groupdocs.cloud/client-credentials";

/// Settings of the `run` command that the reconciler needs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub policy: TokenUrlPolicy,
    pub min_refresh_interval: SignedDuration,
    /// Empty means all namespaces.
    pub watch_namespaces: Vec<String>,
    pub concurrency: u16,
    /// `Some(min interval)` when `spec.rolloutRestartTargets` are acted on.
    pub rollout_restarts: Option<SignedDuration>,
    /// How Secrets are read: watched (cached, changes act at once) or fetched per reconcile.
    pub secret_access: SecretAccess,
    /// `--credential-selector`: only credentials (both kinds) with matching labels are
    /// watched; `None` watches all.
    pub credential_selector: Option<String>,
    /// Where the client Secrets of cluster-scoped credentials live.
    pub cluster_resource_namespace: String,
    /// The longest a failed request can hold a credential back (the largest of
    /// `--invalid-client-retry`, the longest 429 pause and `--max-backoff`): a retry time in
    /// status further out than this was not written by the operator and is ignored.
    pub max_hold: SignedDuration,
}

/// How the operator reads Secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretAccess {
    /// Label-selected list/watch: rotation, deletion and hand edits act at once.
    Watch,
    /// No list/watch on Secrets (for the strictest clusters): each reconcile GETs the two
    /// Secrets it needs, and every credential is re-checked each `recheck` interval, so
    /// rotation and repairs wait for the next check.
    Get { recheck: SignedDuration },
}

/// What all reconciles share, whatever namespace they serve.
pub struct Shared {
    pub client: Client,
    pub broker: Broker<HttpTokenClient>,
    pub metrics: Arc<Metrics>,
    pub events: Publisher,
    pub settings: Settings,
    pub writes: RecentWrites,
    /// Cancelled when this replica lost its lease: reconciles in flight stop at once, so the
    /// new leader is the only writer.
    pub halt: CancellationToken,
    /// Consecutive failed reconciles by credential uid, for `error_policy`'s backoff and for
    /// logging once per change rather than once per retry.
    retries: Mutex<HashMap<String, Retry>>,
    /// How many controllers (one per watch scope) are still running, for `/healthz`.
    pub running: std::sync::atomic::AtomicUsize,
    /// Every watch scope's caches, set before the controllers start.
    scopes: OnceLock<Vec<Caches>>,
    /// Set once the failures recorded in status are back in the budget.
    restored: OnceLock<()>,
    /// The cluster credentials' cache and whether it synced, once their controller runs.
    cluster: OnceLock<(Store<ClusterGroupDocsCredential>, Arc<crate::cluster::Synced4>)>,
    started: Instant,
}

/// The longest one watch scope waits for the others to sync before it starts.
const WAIT_FOR_OTHER_SCOPES: Duration = Duration::from_secs(30);

struct Retry {
    attempts: u32,
    last_error: String,
    at: Instant,
}

impl Shared {
    /// False once a controller has stopped (for `/healthz`); true before they start (a standby).
    pub fn controllers_alive(&self) -> bool {
        self.scopes.get().is_none_or(|scopes| self.running.load(std::sync::atomic::Ordering::SeqCst) == scopes.len())
    }

    /// Forgets failed reconciles not retried for an hour (their credentials were deleted).
    pub fn prune_retries(&self, now: Instant) {
        crate::lock(&self.retries).retain(|_, r| now.duration_since(r.at) < Duration::from_secs(3600));
    }

    /// True once every watch scope's caches hold the whole cluster view.
    fn all_synced(&self) -> bool {
        let cluster = self.cluster.get().is_none_or(|(_, synced)| synced.all());
        cluster && self.scopes.get().is_some_and(|scopes| scopes.iter().all(|c| c.synced.all()))
    }

    /// Registers the cluster credential controller's cache: its statuses count for
    /// [`restore_budget`] too.
    pub fn register_cluster_credentials(
        &self,
        store: Store<ClusterGroupDocsCredential>,
        synced: Arc<crate::cluster::Synced4>,
    ) {
        if self.cluster.set((store, synced)).is_err() {
            warn!("the cluster credential controller registered twice; the first cache is used");
        }
    }

    /// Waits (by requeueing, up to 30 s after start) until every cache has synced, then puts
    /// the failures statuses record back into the budget once; false: look again shortly.
    pub fn ready_to_request(&self) -> bool {
        if !self.all_synced() && self.started.elapsed() < WAIT_FOR_OTHER_SCOPES {
            return false;
        }
        self.restore_budget_once();
        true
    }

    fn restore_budget_once(&self) {
        self.restored.get_or_init(|| restore_budget(self));
    }

    pub fn new(client: Client, broker: Broker<HttpTokenClient>, metrics: Arc<Metrics>, settings: Settings) -> Self {
        let events = Publisher::new(client.clone(), FIELD_MANAGER, std::env::var("POD_NAME").ok());
        Shared {
            client,
            broker,
            metrics,
            events,
            settings,
            writes: RecentWrites::default(),
            halt: CancellationToken::new(),
            retries: Mutex::default(),
            running: std::sync::atomic::AtomicUsize::new(0),
            scopes: OnceLock::new(),
            restored: OnceLock::new(),
            cluster: OnceLock::new(),
            started: Instant::now(),
        }
    }
}

/// One controller's view: the shared parts plus the caches of its watch scope.
pub struct Context {
    pub shared: Arc<Shared>,
    pub credentials: Store<CachedCredential>,
    pub client_secrets: Store<Secret>,
    pub owned_secrets: Arc<SecretViews>,
    pub synced: Arc<Synced3>,
    pub wakes: Arc<Wakes>,
    pub bulk: Arc<Bulk>,
}

impl Context {
    /// The action that reconciles `cr` again at `t`: long waits go to [`Wakes`].
    pub fn wake_at(&self, cr: &GroupDocsCredential, t: Timestamp, now: Timestamp) -> Action {
        let after = crate::status::requeue_after(t, now);
        if after < crate::wakes::LONG_WAIT {
            return Action::requeue(after);
        }
        let (namespace, name) = (cr.namespace().unwrap_or_default(), cr.name_any());
        self.wakes.at(&namespace, &name, schedule::add(now, SignedDuration::try_from(after).unwrap_or_default()));
        Action::await_change()
    }
}

/// Reconciles one credential: waits until the caches can be trusted, then runs
/// [`crate::reconcile::reconcile`] under a guard. A panic (a bug) fails only this credential:
/// it is reported as `Stalled`/`InternalError` and the process and every other credential
/// carry on. On lease loss the reconcile stops where it stands.
pub async fn reconcile(cr: Arc<CachedCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.bulk.started(&cr.namespace().unwrap_or_default(), &cr.name_any());
    if !ctx.synced.all() {
        // This scope's caches are still filling: wait rather than act on a partial view.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    if !ctx.shared.ready_to_request() {
        // The budget is restored from every scope's statuses before the first request; a scope
        // that cannot sync (its RBAC removed by a tenant) delays the others only this long.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let result = match guarded(crate::reconcile::reconcile(cr.clone(), ctx.clone()), &ctx.shared.halt).await {
        Guarded::Done(result) => result,
        Guarded::Panicked(message) => crate::reconcile::report_panic(&cr, &ctx, message).await,
        Guarded::Halted => return Ok(Action::await_change()),
    };
    if result.is_ok() {
        recovered(&cr, &ctx);
    }
    result
}

/// Called when `reconcile` itself fails (Kubernetes API errors while writing status): retries
/// with exponential backoff and jitter, and logs once per new error rather than per retry
/// (an API server outage would otherwise log every credential every few seconds).
pub fn error_policy(cr: Arc<CachedCredential>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.shared.metrics.reconciled(error.reason(), Duration::ZERO);
    let text = error.to_string();
    let attempts = {
        let mut retries = crate::lock(&ctx.shared.retries);
        let retry = retries.entry(cr.uid().unwrap_or_default()).or_insert(Retry {
            attempts: 0,
            last_error: String::new(),
            at: Instant::now(),
        });
        retry.at = Instant::now();
        retry.attempts = retry.attempts.saturating_add(1);
        if retry.last_error != text {
            warn!(credential = %cr.name_any(), namespace = ?cr.namespace(), %error, "reconcile failed; retrying with backoff");
            retry.last_error = text;
        } else {
            debug!(credential = %cr.name_any(), namespace = ?cr.namespace(), %error, attempts = retry.attempts, "reconcile failed again");
        }
        retry.attempts
    };
    let wait = schedule::backoff(attempts, ERROR_BACKOFF_BASE, ERROR_BACKOFF_CAP, rand::random());
    Action::requeue(Duration::try_from(wait).unwrap_or(Duration::from_secs(1)))
}

const ERROR_BACKOFF_BASE: SignedDuration = SignedDuration::from_secs(2);

const ERROR_BACKOFF_CAP: SignedDuration = SignedDuration::from_mins(5);

/// A reconcile succeeded: forget its failures, and say so once if there were any.
fn recovered(cr: &CachedCredential, ctx: &Context) {
    let mut retries = crate::lock(&ctx.shared.retries);
    if retries.is_empty() {
        return;
    }
    if let Some(retry) = retries.remove(&cr.uid().unwrap_or_default()) {
        info!(credential = %cr.name_any(), namespace = ?cr.namespace(), attempts = retry.attempts, "reconcile succeeded again");
    }
}

/// Puts the failures that the statuses of every watch scope record for the last minute back
/// into the failed-request budget, once, before this process sends its first request: a
/// restarted or new leader must not spend a budget its predecessor already spent.
fn restore_budget(shared: &Shared) {
    let now = Timestamp::now();
    let mut restored = 0;
    let synced = shared.scopes.get().into_iter().flatten().filter(|c| c.synced.all());
    let namespaced = synced
        .flat_map(|c| c.credentials.state())
        .map(|cr| (cr.spec.token_url.clone(), cr.namespace().unwrap_or_default(), cr.status_fields().cloned()));
    // A cluster credential's requests count for the tenant of its client Secret's namespace.
    let cluster_tenant = &shared.settings.cluster_resource_namespace;
    let cluster = shared.cluster.get().filter(|(_, synced)| synced.all()).into_iter().flat_map(|(store, _)| {
        store
            .state()
            .into_iter()
            .map(|cr| (cr.spec.token_url.clone(), cluster_tenant.clone(), cr.status.clone().map(|s| s.token)))
    });
    for (url, tenant, status) in namespaced.chain(cluster) {
        let Some(status) = status else { continue };
        if let Some(at) = status.last_failure_time.as_ref().filter(|_| status.failed_attempts > 0) {
            let count = u32::try_from(status.failed_attempts).unwrap_or(u32::MAX);
            shared.broker.restore_failures(&url, &tenant, at.0, count, now);
            restored += 1;
        }
    }
    if restored > 0 {
        info!(credentials = restored, "restored recent token request failures from status into the budget");
    }
}

/// The watch of credentials (of either kind): only those `--credential-selector` matches.
pub fn credentials_watch_config(settings: &Settings) -> watcher::Config {
    match &settings.credential_selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    }
}

/// managedFields are a large share of every object and never read here: keep them out of the caches.
fn strip_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// For objects the operator never writes back: `kubectl apply` also keeps a full copy of the
/// object in an annotation that nothing here reads.
fn strip_for_read_only_cache<K: Resource>(obj: &mut K) {
    strip_managed_fields(obj);
    if let Some(annotations) = obj.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The stores a running controller reads, for readiness and metrics.
#[derive(Clone)]
pub struct Caches {
    pub credentials: Store<CachedCredential>,
    pub client_secrets: Store<Secret>,
    pub owned_secrets: Arc<SecretViews>,
    pub synced: Arc<Synced3>,
    /// When each credential is next due.
    pub wakes: Arc<Wakes>,
    /// The reconcile of everything once synced.
    pub bulk: Arc<Bulk>,
}

/// Whether each of a scope's three watches has completed its initial list.
///
/// Tracked on the watch streams themselves: a reconcile must not read a Secret cache that is
/// still filling (it would take a present token for a missing one and fetch again).
#[derive(Default)]
pub struct Synced3 {
    credentials: std::sync::atomic::AtomicBool,
    client_secrets: std::sync::atomic::AtomicBool,
    owned_secrets: std::sync::atomic::AtomicBool,
}

impl Synced3 {
    pub fn all(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.credentials.load(SeqCst) && self.secrets()
    }

    fn secrets(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.client_secrets.load(SeqCst) && self.owned_secrets.load(SeqCst)
    }
}

/// Changes (of credentials and of Secrets) as reconcile triggers, none before every cache of
/// the scope has synced (a reconcile then could only requeue, and 100,000 credentials
/// requeueing every 200 ms while the lists are still running crowd out the lists). The caches
/// fill meanwhile; [`Bulk`] then reconciles everything they hold, once [`all_synced`].
fn only_once_synced<S, K, E>(synced: Arc<Synced3>, credentials: S) -> impl futures::Stream<Item = Result<K, E>>
where
    S: futures::Stream<Item = Result<K, E>>,
{
    credentials.try_filter(move |_| std::future::ready(synced.all()))
}

/// Resolves when every cache of the scope has synced.
async fn all_synced(synced: Arc<Synced3>) {
    while !synced.all() {
        tokio::time::sleep(SYNC_POLL).await;
    }
}

/// How often [`all_synced`] looks.
const SYNC_POLL: Duration = Duration::from_millis(20);

/// A watch that completes a list after the scope's first sync (it lost its place: an outage,
/// or its resourceVersion expired) asks for one more bulk round ([`Bulk::relisted`]). Runs
/// before the list's own flag is set, so the first sync does not count.
fn on_relist<K>(synced: Arc<Synced3>, bulk: Arc<Bulk>) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) && synced.all() {
            bulk.relisted();
        }
    }
}

fn mark_synced<K>(flag: &std::sync::atomic::AtomicBool, event: &Result<watcher::Event<K>, watcher::Error>) {
    if matches!(event, Ok(watcher::Event::InitDone)) {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs one controller per watch scope (all namespaces, or each listed one) until `shutdown`.
/// `on_caches` receives each scope's stores as soon as they exist.
pub async fn run(
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
    on_caches: impl Fn(Caches),
) {
    let scopes: Vec<Option<String>> = if shared.settings.watch_namespaces.is_empty() {
        vec![None]
    } else {
        shared.settings.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let built: Vec<_> = scopes.iter().map(|scope| controller_for(shared.clone(), scope.as_deref())).collect();
    let all_caches = built.iter().map(|(_, caches)| caches.clone()).collect();
    shared.running.fetch_add(built.len(), std::sync::atomic::Ordering::SeqCst);
    if shared.scopes.set(all_caches).is_err() {
        warn!("reconciler::run called twice on the same state; the first call's caches are used");
    }
    let controllers = built.into_iter().map(|(controller, caches)| {
        on_caches(caches.clone());
        let ctx = Arc::new(Context {
            shared: shared.clone(),
            credentials: caches.credentials,
            client_secrets: caches.client_secrets,
            owned_secrets: caches.owned_secrets,
            synced: caches.synced,
            wakes: caches.wakes,
            bulk: caches.bulk,
        });
        let shared = shared.clone();
        controller
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                if let Err(e) = result {
                    debug!(error = %e, "controller event");
                }
            })
            .map(move |()| {
                shared.running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            })
    });
    futures::future::join_all(controllers).await;
}

fn controller_for(shared: Arc<Shared>, scope: Option<&str>) -> (Controller<CachedCredential>, Caches) {
    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        client: &Client,
        scope: Option<&str>,
    ) -> Api<K> {
        match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let client = &shared.client;
    let synced = Arc::new(Synced3::default());
    let (cr_reader, cr_writer) = reflector::store();
    let index = Arc::new(ClientSecretIndex::default());
    let wakes = Arc::new(Wakes::default());
    let bulk = Arc::new(Bulk::default());
    let flags = synced.clone();
    let crs = watcher(api::<CachedCredential>(client, scope), credentials_watch_config(&shared.settings))
        .default_backoff()
        .inspect(on_relist(synced.clone(), bulk.clone()))
        .inspect(move |e| mark_synced(&flags.credentials, e))
        .inspect({
            let (index, wakes, store) = (index.clone(), wakes.clone(), cr_reader.clone());
            move |event| {
                if let Ok(event) = event {
                    index.observe(event, &store);
                }
                if let Ok(watcher::Event::Delete(cr)) = event {
                    wakes.forget(&cr.namespace().unwrap_or_default(), &cr.name_any());
                }
            }
        })
        .reflect(cr_writer)
        .applied_objects()
        // Our own status writes must not trigger reconciles (every other change does; most
        // are spec, annotation or someone else's status edits).
        .try_filter({
            let shared = shared.clone();
            move |cr| std::future::ready(!shared.writes.is_own_status_write(&cr.metadata))
        });
    let crs = only_once_synced(synced.clone(), crs);

    let owned_views = Arc::new(SecretViews::default());
    let flags = synced.clone();
    // Token Secrets are decoded straight from the watch into `WatchedSecret`s, of which the
    // cache keeps the `CachedSecret`.
    let owned = watcher(
        api::<WatchedSecret>(client, scope),
        // Copies of cluster credentials are the cluster controller's to watch.
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY},!{CLUSTER_CREDENTIAL_LABEL}")),
    )
    .default_backoff()
    .inspect({
        let views = owned_views.clone();
        move |event| {
            if let Ok(event) = event {
                views.apply(event);
            }
        }
    })
    .inspect(on_relist(synced.clone(), bulk.clone()))
    .inspect(move |e| mark_synced(&flags.owned_secrets, e))
    .touched_objects()
    .try_filter({
        let shared = shared.clone();
        move |secret| std::future::ready(!shared.writes.is_own_secret_write(&secret.metadata))
    });

    let (client_reader, client_writer) = reflector::store();
    let flags = synced.clone();
    let client_secrets = watcher(
        api::<Secret>(client, scope),
        watcher::Config::default().labels(&format!("{CLIENT_CREDENTIALS_LABEL}=true")),
    )
    .default_backoff()
    .inspect(on_relist(synced.clone(), bulk.clone()))
    .inspect(move |e| mark_synced(&flags.client_secrets, e))
    .modify(strip_for_read_only_cache)
    .reflect(client_writer)
    .touched_objects();
    // Secrets trigger too: listing 100,000 token Secrets would otherwise put 100,000
    // reconciles into the scheduler before anything can be decided.
    let (owned, client_secrets) =
        (only_once_synced(synced.clone(), owned), only_once_synced(synced.clone(), client_secrets));

    let mapper_store = cr_reader.clone();
    let mut controller = Controller::for_stream(crs, cr_reader.clone())
        .with_config(ControllerConfig::default().concurrency(shared.settings.concurrency))
        .watches_stream(bulk.clone().stream(cr_reader.clone(), all_synced(synced.clone())), crate::wakes::credential_of)
        .watches_stream(wakes.clone().stream(), crate::wakes::credential_of);
    match shared.settings.secret_access {
        SecretAccess::Watch => {
            controller = controller.owns_stream(owned).watches_stream(client_secrets, move |secret| {
                index.credentials_using(&mapper_store, &secret.namespace().unwrap_or_default(), &secret.name_any())
            });
        }
        SecretAccess::Get { .. } => {
            // No Secret is listed or watched: the two streams are never polled.
            drop((owned, client_secrets));
            synced.client_secrets.store(true, std::sync::atomic::Ordering::SeqCst);
            synced.owned_secrets.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let caches = Caches {
        credentials: cr_reader,
        client_secrets: client_reader,
        owned_secrets: owned_views,
        synced,
        wakes,
        bulk,
    };
    (controller, caches)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn triggers_pass_only_once_every_cache_synced() {
        let synced = Arc::new(Synced3::default());
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<u32, ()>>();
        let mut triggers = Box::pin(only_once_synced(synced.clone(), rx));
        let send = |i| tx.unbounded_send(Ok(i)).unwrap();
        fn next<S: futures::Stream + Unpin>(triggers: &mut S) -> Option<S::Item> {
            futures::FutureExt::now_or_never(triggers.next()).flatten()
        }
        send(1);
        synced.credentials.store(true, SeqCst);
        synced.owned_secrets.store(true, SeqCst);
        send(2);
        assert_eq!(next(&mut triggers), None, "dropped while the client Secrets are still listed");
        synced.client_secrets.store(true, SeqCst);
        send(3);
        assert_eq!(next(&mut triggers), Some(Ok(3)));
        assert!(futures::FutureExt::now_or_never(all_synced(synced)).is_some());
    }
}
