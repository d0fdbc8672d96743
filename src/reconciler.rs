//! The reconcile loop: CR -> client Secret -> token -> target Secret -> status.
//!
//! Level-triggered and idempotent: every reconcile recomputes what the target Secret and the
//! status should be and writes only what differs, so a no-op reconcile sends no request.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate as _, predicates};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::conditions::{self, Facts, Outcome};
use crate::crd::{GroupDocsCredential, GroupDocsCredentialStatus};
use crate::error::{Error, Limit};
use crate::events::{self, Occurrence, Publisher};
use crate::metrics::Metrics;
use crate::policy::TokenUrlPolicy;
use crate::redact::Sensitive;
use crate::rollout;
use crate::schedule;
use crate::target::{self, CachedSecret, IssuedFor, MANAGED_BY, MANAGED_BY_LABEL, Ownership};
use crate::token::broker::{Broker, Refused, Want};
use crate::token::client::HttpTokenClient;
use crate::token::{Token, TokenFacts, TokenRequest};
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
        self.scopes.get().is_some_and(|scopes| scopes.iter().all(|c| c.synced.all()))
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
            started: Instant::now(),
        }
    }
}

/// One controller's view: the shared parts plus the caches of its watch scope.
pub struct Context {
    pub shared: Arc<Shared>,
    pub credentials: Store<GroupDocsCredential>,
    pub client_secrets: Store<Secret>,
    pub owned_secrets: Store<CachedSecret>,
    pub synced: Arc<Synced3>,
}

/// What the reconcile established about the token, before status is computed.
struct Synced {
    /// The token now in the target Secret, when it was issued for the current spec and client
    /// Secret (it may have expired).
    token: Option<TokenFacts>,
    result: Result<Outcome<'static>, Refused>,
    /// The force-refresh annotation value this reconcile acted on.
    refresh_request: Option<String>,
    /// A forced refresh waits for `--min-refresh-interval` after the last token: until then.
    refresh_throttled_until: Option<Timestamp>,
    /// The client Secret's resourceVersion the request used, when one was sent.
    client_secret_version: Option<String>,
}

impl Synced {
    fn new(result: Result<Outcome<'static>, Refused>, token: Option<TokenFacts>) -> Self {
        Synced { token, result, refresh_request: None, refresh_throttled_until: None, client_secret_version: None }
    }

    /// Nothing was sent: `error` stopped the reconcile first.
    fn failed(error: Error, token: Option<TokenFacts>) -> Self {
        Synced::new(Err(Refused { error, sent: false }), token)
    }
}

/// Inputs resolved from the spec and the client Secret.
struct Inputs {
    request: TokenRequest,
    issued_for: IssuedFor,
    renew_before: Option<SignedDuration>,
}

/// Reconciles one credential. A panic (a bug) fails only this credential: it is reported as
/// `Stalled`/`InternalError` and the process and every other credential carry on.
pub async fn reconcile(cr: Arc<GroupDocsCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = match guarded(reconcile_guarded(cr.clone(), ctx.clone()), &ctx.shared.halt).await {
        Guarded::Done(result) => result,
        Guarded::Panicked(message) => report_panic(&cr, &ctx, message).await,
        Guarded::Halted => return Ok(Action::await_change()),
    };
    if result.is_ok() {
        recovered(&cr, &ctx);
    }
    result
}

/// How a [`guarded`] future ended.
#[derive(Debug, PartialEq)]
enum Guarded<T> {
    Done(T),
    /// It panicked, with this message.
    Panicked(String),
    /// `halt` was cancelled first; the future was dropped where it stood.
    Halted,
}

/// Runs `future`, turning a panic into a value and stopping at once when `halt` is cancelled.
async fn guarded<T>(future: impl std::future::Future<Output = T>, halt: &CancellationToken) -> Guarded<T> {
    tokio::select! {
        biased;
        () = halt.cancelled() => Guarded::Halted,
        result = AssertUnwindSafe(future).catch_unwind() => match result {
            Ok(value) => Guarded::Done(value),
            Err(panic) => Guarded::Panicked(panic_message(panic.as_ref())),
        },
    }
}

/// Debug builds only (the e2e tests run them): `GDTO_FAULT_PANIC_CREDENTIAL=<namespace>/<name>`
/// makes that credential's reconcile panic, to show that a bug hits one credential only.
#[cfg(debug_assertions)]
fn inject_panic_for_tests(cr: &GroupDocsCredential) {
    if let Ok(target) = std::env::var("GDTO_FAULT_PANIC_CREDENTIAL")
        && target == format!("{}/{}", namespace(cr), cr.name_any())
    {
        panic!("injected by GDTO_FAULT_PANIC_CREDENTIAL");
    }
}

#[cfg(not(debug_assertions))]
fn inject_panic_for_tests(_: &GroupDocsCredential) {}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Records a panicked reconcile on the credential and looks again in five minutes.
async fn report_panic(cr: &GroupDocsCredential, ctx: &Context, message: String) -> Result<Action, Error> {
    error!(credential = %cr.name_any(), namespace = ?cr.namespace(), panic = %message, "reconcile panicked; reported on the credential");
    ctx.shared.metrics.panicked();
    ctx.shared.metrics.reconciled("InternalError", Duration::ZERO);
    let previous = cr.status.clone().unwrap_or_default();
    let now = schedule::whole_seconds(Timestamp::now());
    let error = Error::Internal(message);
    let facts = Facts {
        generation: cr.metadata.generation,
        token_expires_at: previous.expires_at.as_ref().map(|t| t.0),
        outcome: Outcome::Failed(&error),
        now,
        note: None,
    };
    let status = GroupDocsCredentialStatus {
        conditions: conditions::conditions(&previous.conditions, &facts),
        ..previous.clone()
    };
    if status != previous {
        write_status(cr, ctx, &status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn reconcile_guarded(cr: Arc<GroupDocsCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.synced.all() {
        // This scope's caches are still filling: wait rather than act on a partial view.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    if !ctx.shared.all_synced() && ctx.shared.started.elapsed() < WAIT_FOR_OTHER_SCOPES {
        // The budget is restored from every scope's statuses before the first request; a scope
        // that cannot sync (its RBAC removed by a tenant) delays the others only this long.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    ctx.shared.restored.get_or_init(|| restore_budget(&ctx.shared));
    inject_panic_for_tests(&cr);
    let started = Instant::now();
    if ctx.shared.writes.cache_is_behind(&cr.uid().unwrap_or_default(), cr.status.as_ref(), started) {
        return Ok(Action::requeue(Duration::from_millis(250)));
    }
    let now = schedule::whole_seconds(Timestamp::now());
    let previous = cr.status.clone().unwrap_or_default();
    let synced = sync(&cr, &ctx, &previous, now).await;
    if let Some(until) = synced.result.as_ref().err().and_then(Refused::busy_until) {
        // Others' requests hold the budget; nothing failed, so status stays as it is.
        ctx.shared.metrics.reconciled("Busy", started.elapsed());
        let jitter = Duration::from_millis(rand::random::<u64>() % 2000);
        return Ok(Action::requeue(requeue_after(until, now) + jitter));
    }
    let mut status = next_status(&cr, &previous, &synced, now, ctx.shared.settings.min_refresh_interval);
    let restarts_pending_until = restart_workloads(&cr, &ctx, &mut status, now).await;
    if status != previous {
        write_status(&cr, &ctx, &status).await?;
        publish_events(&cr, &ctx, &previous, &status, &synced).await;
    }
    let result = match &synced.result {
        Ok(_) => "Ok",
        Err(refused) => refused.error.reason(),
    };
    ctx.shared.metrics.reconciled(result, started.elapsed());
    debug!(credential = %cr.name_any(), namespace = ?cr.namespace(), result, "reconciled");
    let recheck = match ctx.shared.settings.secret_access {
        SecretAccess::Get { recheck } => Some(schedule::add(now, recheck)),
        SecretAccess::Watch => None,
    };
    let wake = [next_wake(&synced, &status, now), restarts_pending_until, recheck, synced.refresh_throttled_until]
        .into_iter()
        .flatten()
        .min();
    Ok(match wake {
        Some(t) => Action::requeue(requeue_after(t, now)),
        None => Action::await_change(),
    })
}

/// Restarts `spec.rolloutRestartTargets` once per new token (not for the first one), at most
/// once per interval each. Returns when to look again if some had to wait.
async fn restart_workloads(
    cr: &GroupDocsCredential,
    ctx: &Context,
    status: &mut GroupDocsCredentialStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    let min_interval = ctx.shared.settings.rollout_restarts?;
    let fingerprint = status.token_fingerprint.clone()?;
    if cr.spec.rollout_restart_targets.is_empty() || status.rollout_restart_fingerprint.as_deref() == Some(&fingerprint)
    {
        return None;
    }
    if status.rollout_restart_fingerprint.is_none() {
        // The first token: the workloads start with it anyway.
        status.rollout_restart_fingerprint = Some(fingerprint);
        return None;
    }
    let mut wait: Option<Timestamp> = None;
    for target in &cr.spec.rollout_restart_targets {
        let ns = namespace(cr);
        let request = rollout::Request {
            client: &ctx.shared.client,
            namespace: &ns,
            target,
            fingerprint: &fingerprint,
            now,
            min_interval,
        };
        let outcome = rollout::restart(request).await;
        let (kind, reason, note) = match outcome {
            rollout::Outcome::Restarted => (
                events::Kind::Normal,
                "RolloutRestarted",
                format!("restarted {:?} {} for the renewed token", target.kind, target.name),
            ),
            rollout::Outcome::AlreadyDone => continue,
            rollout::Outcome::Deferred(t) => {
                wait = Some(wait.map_or(t, |w| w.min(t)));
                continue;
            }
            rollout::Outcome::Failed(e) => {
                let retry = schedule::add(now, SignedDuration::from_mins(5));
                wait = Some(wait.map_or(retry, |w| w.min(retry)));
                (events::Kind::Warning, "RolloutRestartFailed", e)
            }
        };
        let occurrence = Occurrence { kind, reason, action: "RolloutRestart", note };
        if let Err(e) = ctx.shared.events.publish(cr, occurrence).await {
            warn!(credential = %cr.name_any(), error = %e, "could not publish event");
        }
    }
    if wait.is_none() {
        status.rollout_restart_fingerprint = Some(fingerprint);
    }
    wait
}

/// How long until `t`: at least a second, and at most a day (a reconcile then simply plans
/// again), so no time in a Secret or status can ask the scheduler for an absurd wait.
fn requeue_after(t: Timestamp, now: Timestamp) -> Duration {
    let wait = t.duration_since(now).clamp(SignedDuration::from_secs(1), MAX_REQUEUE);
    Duration::try_from(wait).unwrap_or(Duration::from_secs(1))
}

const MAX_REQUEUE: SignedDuration = SignedDuration::from_hours(24);

/// Called when `reconcile` itself fails (Kubernetes API errors while writing status): retries
/// with exponential backoff and jitter, and logs once per new error rather than per retry
/// (an API server outage would otherwise log every credential every few seconds).
pub fn error_policy(cr: Arc<GroupDocsCredential>, error: &Error, ctx: Arc<Context>) -> Action {
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
fn recovered(cr: &GroupDocsCredential, ctx: &Context) {
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
    for cr in synced.flat_map(|c| c.credentials.state()) {
        let Some(status) = cr.status.as_ref() else { continue };
        if let Some(at) = status.last_failure_time.as_ref().filter(|_| status.failed_attempts > 0) {
            let count = u32::try_from(status.failed_attempts).unwrap_or(u32::MAX);
            shared.broker.restore_failures(&cr.spec.token_url, &namespace(&cr), at.0, count, now);
            restored += 1;
        }
    }
    if restored > 0 {
        info!(credentials = restored, "restored recent token request failures from status into the budget");
    }
}

async fn sync(cr: &GroupDocsCredential, ctx: &Context, previous: &GroupDocsCredentialStatus, now: Timestamp) -> Synced {
    let fail = |error: Error| Synced::failed(error, None);
    let inputs = match resolve_inputs(cr, ctx).await {
        Ok(inputs) => inputs,
        Err(e) => return fail(e),
    };
    let existing = match target_secret(cr, ctx).await {
        Ok(existing) => existing,
        Err(e) => return fail(e),
    };
    if target::ownership(existing.as_deref().map(|s| &s.metadata), cr) == Ownership::Foreign {
        return fail(Error::TargetConflict { name: cr.target_name() });
    }
    let in_place = existing.as_deref().and_then(|s| usable_token(s, &inputs, previous));
    if cr.spec.suspend {
        return Synced::new(Ok(Outcome::Suspended), in_place);
    }

    let min_interval = ctx.shared.settings.min_refresh_interval;
    let mut refresh_request = cr.refresh_request().filter(|v| previous.last_refresh_request.as_deref() != Some(*v));
    // A forced refresh right after a token was issued waits out the minimum interval, so
    // that annotating in a loop cannot turn into a request loop.
    let refresh_throttled_until = match (&refresh_request, &in_place) {
        (Some(_), Some(token)) => Some(schedule::add(token.issued_at, min_interval)).filter(|t| *t > now),
        _ => None,
    };
    if refresh_throttled_until.is_some() {
        refresh_request = None;
    }
    let due = match &in_place {
        None => true,
        Some(token) => now >= refresh_time(cr, token, inputs.renew_before, min_interval),
    };
    // A new token from the broker, or (None) the one in place, which the cache knows only by its facts.
    let fresh = if refresh_request.is_some() || due {
        if let Some(held) = held_by_status(cr, previous, &inputs, now, &ctx.shared.settings) {
            return Synced { refresh_throttled_until, ..Synced::failed(held, in_place) };
        }
        if let Some(until) = previous.rate_limited_until.as_ref().map(|t| t.0).filter(|t| *t > now) {
            // Written by the operator only for a 429; a time beyond the longest pause is not ours.
            if until <= schedule::add(now, crate::token::retry_after::MAX_PAUSE) {
                ctx.shared.broker.honour_pause(&inputs.request, until);
            }
        }
        let want = Want {
            renew_before: inputs.renew_before,
            force: refresh_request.is_some(),
            min_interval,
            // Only a token status recorded makes a client count as working (a tenant can write
            // a token Secret, but not the status).
            valid_until: in_place
                .as_ref()
                .filter(|t| previous.token_fingerprint.as_deref() == Some(t.fingerprint.as_str()))
                .map(|t| t.expires_at),
        };
        match ctx.shared.broker.token(&inputs.request, want, &namespace(cr)).await {
            Ok(issued) => Some(issued.token),
            Err(refused) => {
                let client_secret_version = refused.sent.then(|| inputs.issued_for.client_secret_version.clone());
                return Synced {
                    token: in_place,
                    result: Err(refused),
                    refresh_request: None,
                    refresh_throttled_until,
                    client_secret_version,
                };
            }
        }
    } else {
        None
    };
    let facts = match (&fresh, &in_place) {
        (Some(token), _) => token.facts(),
        (None, Some(facts)) => facts.clone(),
        (None, None) => unreachable!("no token in place means one is due"),
    };

    let desired = target::desired(cr, &facts, &inputs.issued_for);
    let write = SecretWrite { existing: existing.as_deref(), desired: &desired, fresh: fresh.as_ref() };
    if let Err(error) = write_secret(cr, ctx, write, &inputs.issued_for).await {
        return Synced::failed(error, in_place);
    }
    let outcome = match previous.token_fingerprint.as_deref() {
        None => Outcome::Issued,
        Some(fp) if fp != facts.fingerprint => Outcome::Renewed,
        Some(_) => Outcome::Current,
    };
    Synced {
        token: Some(facts),
        result: Ok(outcome),
        refresh_request: refresh_request.map(str::to_owned),
        refresh_throttled_until,
        client_secret_version: None,
    }
}

/// The failure an earlier process recorded in status, while its retry time has not come and
/// neither the spec nor the client Secret changed since: a restart or a new leader must not
/// retry sooner than the old one would have. Times that the operator could not have written
/// (a retry beyond the longest hold, a failure in the future) are ignored.
fn held_by_status(
    cr: &GroupDocsCredential,
    previous: &GroupDocsCredentialStatus,
    inputs: &Inputs,
    now: Timestamp,
    settings: &Settings,
) -> Option<Error> {
    let retry_at = previous.next_retry_time.as_ref()?.0;
    let failed_at = previous.last_failure_time.as_ref()?.0;
    let plausible = failed_at <= now && retry_at <= schedule::add(failed_at, settings.max_hold);
    let unchanged = previous.observed_generation == cr.metadata.generation
        && previous.last_failure_client_secret_version.as_deref() == Some(&inputs.issued_for.client_secret_version);
    if retry_at <= now || !plausible || !unchanged {
        return None;
    }
    let failing = previous
        .conditions
        .iter()
        .filter(|c| c.status == "True" && (c.type_ == conditions::STALLED || c.type_ == conditions::RECONCILING))
        .find_map(|c| Some((crate::error::known_reason(&c.reason)?, c.message.clone())))?;
    let held = Error::Held { reason: failing.0, message: failing.1, retry_at };
    held.is_token_failure().then_some(held)
}

/// Validates the spec and reads the client credentials.
async fn resolve_inputs(cr: &GroupDocsCredential, ctx: &Context) -> Result<Inputs, Error> {
    let spec = &cr.spec;
    let renew_before = spec
        .renew_before
        .as_deref()
        .map(schedule::parse_duration)
        .transpose()
        .map_err(|e| Error::InvalidSpec(format!("spec.renewBefore: {e}")))?;
    validate_names(cr)?;
    if let Some(scope) = &spec.scope
        && scope.chars().any(|c| c.is_control())
    {
        return Err(Error::InvalidSpec("spec.scope contains control characters".into()));
    }
    let url = ctx.shared.settings.policy.check(&spec.token_url)?;

    let ns = namespace(cr);
    let secret_name = &spec.client_secret_ref.name;
    let secret = client_secret(ctx, &ns, secret_name).await?;
    let read = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::SecretKeyMissing { name: secret_name.clone(), key: key.to_string() })
    };
    let client_id = read(&spec.client_secret_ref.client_id_key)?;
    let client_secret = Sensitive::new(read(&spec.client_secret_ref.client_secret_key)?);
    let scope = spec.scope.clone().filter(|s| !s.is_empty());
    Ok(Inputs {
        issued_for: IssuedFor {
            token_url: url.to_string(),
            client_id: client_id.clone(),
            scope: scope.clone(),
            client_secret_version: secret.resource_version().unwrap_or_default(),
        },
        request: TokenRequest { url: url.to_string(), client_id, client_secret, scope },
        renew_before,
    })
}

fn validate_names(cr: &GroupDocsCredential) -> Result<(), Error> {
    let target = cr.target_name();
    if !is_dns_subdomain(&target) {
        return Err(Error::InvalidSpec(format!(
            "target Secret name {target:?} is not a valid Secret name (lowercase letters, digits, '-' and '.', at most 253)"
        )));
    }
    let client = &cr.spec.client_secret_ref.name;
    if !is_dns_subdomain(client) {
        return Err(Error::InvalidSpec(format!("spec.clientSecretRef.name {client:?} is not a valid Secret name")));
    }
    if *client == target {
        return Err(Error::InvalidSpec(format!(
            "spec.clientSecretRef.name and the target Secret are both {target:?}; the token would overwrite the credentials"
        )));
    }
    Ok(())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The labelled client Secret, from the cache or (in `get` mode) the API server.
async fn client_secret(ctx: &Context, ns: &str, name: &str) -> Result<Arc<Secret>, Error> {
    if let SecretAccess::Get { .. } = ctx.shared.settings.secret_access {
        let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), ns);
        return match api.get_opt(name).await? {
            Some(s) if s.labels().get(CLIENT_CREDENTIALS_LABEL).is_some_and(|v| v == "true") => Ok(Arc::new(s)),
            Some(_) => Err(Error::SecretNotLabelled { namespace: ns.to_string(), name: name.to_string() }),
            None => Err(Error::SecretNotFound { namespace: ns.to_string(), name: name.to_string() }),
        };
    }
    match ctx.client_secrets.get(&ObjectRef::new(name).within(ns)) {
        Some(secret) => Ok(secret),
        None => Err(explain_missing_client_secret(ctx, ns, name).await),
    }
}

/// The Secret of the target's name if it carries our label, from the cache or the API server.
async fn target_secret(cr: &GroupDocsCredential, ctx: &Context) -> Result<Option<Arc<CachedSecret>>, Error> {
    let name = cr.target_name();
    if let SecretAccess::Get { .. } = ctx.shared.settings.secret_access {
        let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), &namespace(cr));
        return Ok(api.get_opt(&name).await?.map(|s| Arc::new(CachedSecret::from(s))));
    }
    Ok(ctx.owned_secrets.get(&ObjectRef::new(&name).within(&namespace(cr))))
}

/// The client Secret is not in the cache of labelled Secrets: find out whether it is absent
/// or only unlabelled, so the message can say what to do.
async fn explain_missing_client_secret(ctx: &Context, ns: &str, name: &str) -> Error {
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), ns);
    match api.get_metadata_opt(name).await {
        Ok(Some(_)) => Error::SecretNotLabelled { namespace: ns.to_string(), name: name.to_string() },
        Ok(None) => Error::SecretNotFound { namespace: ns.to_string(), name: name.to_string() },
        Err(e) => Error::from(e),
    }
}

/// The token in `secret`, if it is ours, was issued for these inputs and is the one status
/// recorded (a token edited by hand is not trusted).
///
/// Its times come from status, which only the operator writes: a hand-edited `expires_at` or
/// issued-at annotation on the Secret cannot postpone renewal (the write that follows puts
/// the recorded times back).
fn usable_token(secret: &CachedSecret, inputs: &Inputs, previous: &GroupDocsCredentialStatus) -> Option<TokenFacts> {
    let (facts, issued_for) = secret.held_token()?;
    let untampered = previous.token_fingerprint.as_deref().is_none_or(|fp| *fp == facts.fingerprint);
    if *issued_for != inputs.issued_for || !untampered {
        return None;
    }
    Some(trusted_times(facts.clone(), previous))
}

/// `facts` with the issue and expiry times status recorded for the same token; without such
/// a record, the Secret's, but never a later expiry than what status or the token shows.
fn trusted_times(mut facts: TokenFacts, previous: &GroupDocsCredentialStatus) -> TokenFacts {
    if previous.token_fingerprint.as_deref() == Some(facts.fingerprint.as_str()) {
        if let Some(expires_at) = &previous.expires_at {
            facts.expires_at = expires_at.0;
        }
        if let Some(issued_at) = &previous.last_refresh_time {
            facts.issued_at = issued_at.0;
        }
    }
    facts.issued_at = facts.issued_at.min(facts.expires_at);
    facts
}

fn refresh_time(
    cr: &GroupDocsCredential,
    token: &TokenFacts,
    renew_before: Option<SignedDuration>,
    min: SignedDuration,
) -> Timestamp {
    let seed = format!("{}/{}", cr.uid().unwrap_or_default(), token.fingerprint);
    schedule::refresh_at(token.issued_at, token.expires_at, renew_before, schedule::jitter_for(&seed), min)
}

/// What `write_secret` works from.
struct SecretWrite<'a> {
    /// The target Secret as the cache (or a GET, in `get` mode) saw it.
    existing: Option<&'a CachedSecret>,
    desired: &'a CachedSecret,
    /// A new token; `None` keeps the one in place.
    fresh: Option<&'a Token>,
}

/// Creates the target Secret or brings ours in line; never touches a Secret we do not own.
async fn write_secret(
    cr: &GroupDocsCredential,
    ctx: &Context,
    write: SecretWrite<'_>,
    issued_for: &IssuedFor,
) -> Result<(), Error> {
    if let Some(existing) = write.existing
        && !target::needs_update(existing, write.desired)
    {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), &namespace(cr));
    let name = cr.target_name();
    // The cache holds no token and no foreign labels: an update starts from the full Secret.
    let existing = match write.existing {
        Some(_) => api.get(&name).await?,
        None => match api
            .create(
                &PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
                &target::render(cr, write.fresh.ok_or_else(no_token)?, issued_for),
            )
            .await
        {
            Ok(created) => {
                ctx.shared.writes.wrote_secret(&created, Instant::now());
                info!(credential = %cr.name_any(), secret = %name, "created target Secret");
                return Ok(());
            }
            // Not in our cache: either foreign, or ours with the managed-by label stripped.
            Err(kube::Error::Api(s)) if s.code == 409 => api.get(&name).await?,
            Err(e) => return Err(secret_write_error(e)),
        },
    };
    match target::ownership(Some(&existing.metadata), cr) {
        Ownership::Ours => {}
        _ => return Err(Error::TargetConflict { name }),
    }
    let token = match write.fresh {
        Some(token) => token.clone(),
        None => token_in_place(&existing, write.desired)?,
    };
    let desired = target::render(cr, &token, issued_for);
    if !target::needs_update(&CachedSecret::from(existing.clone()), write.desired) {
        return Ok(());
    }
    // The merged object carries the uid and resourceVersion we read: the update fails rather
    // than overwrite a Secret that was replaced or changed meanwhile.
    let merged = target::merge(&existing, &desired);
    let updated = api
        .replace(&name, &PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &merged)
        .await
        .map_err(secret_write_error)?;
    ctx.shared.writes.wrote_secret(&updated, Instant::now());
    info!(credential = %cr.name_any(), secret = %name, "updated target Secret");
    Ok(())
}

/// The token of the full Secret, when it is still the one the cache showed.
fn token_in_place(existing: &Secret, desired: &CachedSecret) -> Result<Token, Error> {
    let want = desired.held_token().map(|(facts, _)| facts);
    match (target::read_token(existing), want) {
        // The times are the trusted ones (from status), not whatever the Secret now says.
        (Some((token, _)), Some(facts)) if token.access_token.fingerprint() == facts.fingerprint => {
            Ok(Token { issued_at: facts.issued_at, expires_at: facts.expires_at, ..token })
        }
        _ => Err(no_token()),
    }
}

/// The Secret changed between the cache and the read: the next reconcile sees the change.
fn no_token() -> Error {
    Error::KubeApi("the target Secret changed while it was being updated; retrying".into())
}

/// The API server refusing the Secret itself (422) is a spec problem (labels or annotations
/// from `spec.target` that Kubernetes rejects), not a transient failure.
fn secret_write_error(e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) if s.code == 422 => {
            Error::InvalidSpec(format!("Kubernetes rejects the target Secret: {}", s.message))
        }
        e => e.into(),
    }
}

/// A note for the Ready message when `spec.renewBefore` cannot be honoured.
fn renew_before_note(cr: &GroupDocsCredential, token: &TokenFacts) -> Option<String> {
    let lead = schedule::parse_duration(cr.spec.renew_before.as_deref()?).ok()?;
    (lead >= token.lifetime()).then(|| {
        format!(
            "spec.renewBefore ({lead:#}) is not shorter than the token lifetime ({:#}), so the token is renewed with a third of its lifetime left",
            token.lifetime()
        )
    })
}

fn next_status(
    cr: &GroupDocsCredential,
    previous: &GroupDocsCredentialStatus,
    synced: &Synced,
    now: Timestamp,
    min_interval: SignedDuration,
) -> GroupDocsCredentialStatus {
    let outcome = match &synced.result {
        Ok(Outcome::Issued) => Outcome::Issued,
        Ok(Outcome::Renewed) => Outcome::Renewed,
        Ok(Outcome::Suspended) => Outcome::Suspended,
        Ok(_) => Outcome::Current,
        Err(refused) => Outcome::Failed(&refused.error),
    };
    let facts = Facts {
        generation: cr.metadata.generation,
        token_expires_at: synced.token.as_ref().map(|t| t.expires_at),
        outcome,
        now,
        note: synced.token.as_ref().and_then(|t| renew_before_note(cr, t)),
    };
    let mut status = GroupDocsCredentialStatus {
        observed_generation: cr.metadata.generation,
        conditions: conditions::conditions(&previous.conditions, &facts),
        last_refresh_request: synced.refresh_request.clone().or_else(|| previous.last_refresh_request.clone()),
        ..previous.clone()
    };
    if let Some(token) = &synced.token {
        status.expires_at = Some(Time(token.expires_at));
        status.last_refresh_time = Some(Time(token.issued_at));
        status.token_fingerprint = Some(token.fingerprint.clone());
        status.next_refresh_time = (!cr.spec.suspend).then(|| {
            let renew_before = cr.spec.renew_before.as_deref().and_then(|d| schedule::parse_duration(d).ok());
            Time(refresh_time(cr, token, renew_before, min_interval))
        });
    } else {
        status.next_refresh_time = None;
    }
    match &synced.result {
        Ok(_) => {
            status.failed_attempts = 0;
            status.rate_limited_until = None;
            status.next_retry_time = None;
            status.last_failure_client_secret_version = None;
        }
        Err(refused) => {
            if refused.sent {
                status.failed_attempts = previous.failed_attempts.saturating_add(1);
                status.last_failure_time = Some(Time(now));
                status.next_retry_time = refused.error.retry_at().map(|t| Time(schedule::ceil_seconds(t)));
                status.last_failure_client_secret_version = synced.client_secret_version.clone();
            }
            if let Error::RateLimited { until, by: Limit::Endpoint, .. } = &refused.error {
                status.rate_limited_until = Some(Time(schedule::ceil_seconds(*until)));
            }
        }
    }
    status
}

/// When to reconcile again without a watch event: at the renewal time, after a failure when
/// it may be retried, and at expiry (so Ready turns False on time). `None`: on events only.
fn next_wake(synced: &Synced, status: &GroupDocsCredentialStatus, now: Timestamp) -> Option<Timestamp> {
    let expiry = synced.token.as_ref().map(|t| t.expires_at).filter(|t| *t > now);
    match &synced.result {
        Ok(Outcome::Suspended) => expiry,
        Ok(_) => status.next_refresh_time.as_ref().map(|t| t.0),
        Err(refused) => {
            let retry = refused.error.retry_at().unwrap_or_else(|| {
                if refused.error.is_stalled() {
                    schedule::add(now, SignedDuration::from_mins(5))
                } else {
                    schedule::add(now, SignedDuration::from_secs(5))
                }
            });
            Some(expiry.map_or(retry, |e| e.min(retry)))
        }
    }
}

async fn write_status(
    cr: &GroupDocsCredential,
    ctx: &Context,
    status: &GroupDocsCredentialStatus,
) -> Result<(), Error> {
    let api: Api<GroupDocsCredential> = Api::namespaced(ctx.shared.client.clone(), &namespace(cr));
    let patch = serde_json::json!({
        "apiVersion": "groupdocs.cloud/v1alpha1",
        "kind": "GroupDocsCredential",
        "status": status,
    });
    let written =
        api.patch_status(&cr.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.shared.metrics.status_written();
    ctx.shared.writes.wrote(&cr.uid().unwrap_or_default(), written.status.as_ref(), Instant::now());
    Ok(())
}

/// One event per change of outcome: issued, renewed, or a new failure reason.
async fn publish_events(
    cr: &GroupDocsCredential,
    ctx: &Context,
    previous: &GroupDocsCredentialStatus,
    status: &GroupDocsCredentialStatus,
    synced: &Synced,
) {
    let (kind, reason, note) = match &synced.result {
        Ok(Outcome::Issued) if previous.token_fingerprint.is_none() => {
            (events::Kind::Normal, "TokenIssued", format!("token written to Secret {}", cr.target_name()))
        }
        Ok(Outcome::Renewed) if previous.token_fingerprint != status.token_fingerprint => (
            events::Kind::Normal,
            "TokenRenewed",
            format!(
                "token in Secret {} renewed (fingerprint {})",
                cr.target_name(),
                status.token_fingerprint.clone().unwrap_or_default()
            ),
        ),
        Err(refused) if !previous.conditions.iter().any(|c| c.reason == refused.error.reason()) => {
            (events::Kind::Warning, refused.error.reason(), refused.error.to_string())
        }
        _ => return,
    };
    let occurrence = Occurrence { kind, reason, action: "Reconcile", note };
    if let Err(e) = ctx.shared.events.publish(cr, occurrence).await {
        warn!(credential = %cr.name_any(), error = %e, "could not publish event");
    }
}

fn namespace(cr: &GroupDocsCredential) -> String {
    cr.namespace().unwrap_or_default()
}

/// Maps a client Secret to the credentials of its namespace that reference it.
fn credentials_using(crs: &Store<GroupDocsCredential>, secret: &Secret) -> Vec<ObjectRef<GroupDocsCredential>> {
    let (ns, name) = (secret.namespace(), secret.name_any());
    crs.state()
        .iter()
        .filter(|cr| cr.namespace() == ns && cr.spec.client_secret_ref.name == name)
        .map(|cr| ObjectRef::from_obj(cr.as_ref()))
        .collect()
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
    pub credentials: Store<GroupDocsCredential>,
    pub client_secrets: Store<Secret>,
    pub owned_secrets: Store<CachedSecret>,
    pub synced: Arc<Synced3>,
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
        self.credentials.load(SeqCst) && self.client_secrets.load(SeqCst) && self.owned_secrets.load(SeqCst)
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

fn controller_for(shared: Arc<Shared>, scope: Option<&str>) -> (Controller<GroupDocsCredential>, Caches) {
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
    let flags = synced.clone();
    let crs = watcher(api::<GroupDocsCredential>(client, scope), watcher::Config::default())
        .default_backoff()
        .inspect(move |e| mark_synced(&flags.credentials, e))
        .modify(strip_for_read_only_cache)
        .reflect(cr_writer)
        .applied_objects()
        // Our own status writes must not trigger reconciles: only spec (generation) and
        // annotation (force refresh) changes do.
        .predicate_filter(predicates::generation.combine(predicates::annotations), Default::default());

    let (owned_reader, owned_writer) = reflector::store();
    let flags = synced.clone();
    // Token Secrets are cached as `CachedSecret`s, decoded straight from the watch.
    let owned = watcher(
        api::<CachedSecret>(client, scope),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .default_backoff()
    .inspect(move |e| mark_synced(&flags.owned_secrets, e))
    .reflect(owned_writer)
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
    .inspect(move |e| mark_synced(&flags.client_secrets, e))
    .modify(strip_for_read_only_cache)
    .reflect(client_writer)
    .touched_objects();

    let mapper_store = cr_reader.clone();
    let mut controller = Controller::for_stream(crs, cr_reader.clone())
        .with_config(ControllerConfig::default().concurrency(shared.settings.concurrency));
    match shared.settings.secret_access {
        SecretAccess::Watch => {
            controller = controller
                .owns_stream(owned)
                .watches_stream(client_secrets, move |secret| credentials_using(&mapper_store, &secret));
        }
        SecretAccess::Get { .. } => {
            // No Secret is listed or watched: the two streams are never polled.
            drop((owned, client_secrets));
            synced.client_secrets.store(true, std::sync::atomic::Ordering::SeqCst);
            synced.owned_secrets.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    (controller, Caches { credentials: cr_reader, client_secrets: client_reader, owned_secrets: owned_reader, synced })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::crd::GroupDocsCredentialSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn settings() -> Settings {
        Settings {
            policy: TokenUrlPolicy::new(&[], false, false).unwrap(),
            min_refresh_interval: SignedDuration::from_secs(30),
            watch_namespaces: vec![],
            concurrency: 1,
            rollout_restarts: None,
            secret_access: SecretAccess::Watch,
            max_hold: SignedDuration::from_hours(1),
        }
    }

    fn inputs(version: &str) -> Inputs {
        let issued_for = IssuedFor {
            token_url: "https://api.groupdocs.cloud/connect/token".into(),
            client_id: "id".into(),
            scope: None,
            client_secret_version: version.into(),
        };
        let request = TokenRequest {
            url: issued_for.token_url.clone(),
            client_id: "id".into(),
            client_secret: Sensitive::new("s"),
            scope: None,
        };
        Inputs { request, issued_for, renew_before: None }
    }

    fn failed_status(reason: &str, failed_at: &str, retry_at: &str) -> GroupDocsCredentialStatus {
        GroupDocsCredentialStatus {
            observed_generation: Some(1),
            failed_attempts: 1,
            last_failure_time: Some(Time(t(failed_at))),
            next_retry_time: Some(Time(t(retry_at))),
            last_failure_client_secret_version: Some("7".into()),
            conditions: vec![Condition {
                type_: conditions::STALLED.into(),
                status: "True".into(),
                reason: reason.into(),
                message: "the token endpoint rejected the client credentials: HTTP 400".into(),
                observed_generation: Some(1),
                last_transition_time: Time(t(failed_at)),
            }],
            ..Default::default()
        }
    }

    fn credential() -> GroupDocsCredential {
        let mut cr = GroupDocsCredential::new("c", GroupDocsCredentialSpec::default());
        cr.metadata.generation = Some(1);
        cr
    }

    #[test]
    fn a_failure_in_status_holds_until_its_retry_time_unless_something_changed() {
        let status = failed_status("InvalidClient", "2026-11-28T10:00:00Z", "2026-11-28T10:30:00Z");
        let now = t("2026-11-28T10:05:00Z");
        let held = held_by_status(&credential(), &status, &inputs("7"), now, &settings()).unwrap();
        assert_eq!((held.reason(), held.retry_at()), ("InvalidClient", Some(t("2026-11-28T10:30:00Z"))));
        assert_eq!(held.to_string(), status.conditions[0].message, "the same message: no status write");
        assert!(held.is_stalled());
        let none = |status: &GroupDocsCredentialStatus, inputs: &Inputs, cr: &GroupDocsCredential, now| {
            held_by_status(cr, status, inputs, now, &settings()).is_none()
        };
        assert!(none(&status, &inputs("8"), &credential(), now), "a changed client Secret is retried at once");
        let mut edited = credential();
        edited.metadata.generation = Some(2);
        assert!(none(&status, &inputs("7"), &edited, now), "a changed spec is retried at once");
        assert!(none(&status, &inputs("7"), &credential(), t("2026-11-28T10:30:00Z")), "the time has come");
        let forged = failed_status("InvalidClient", "2026-11-28T10:00:00Z", "2099-01-01T00:00:00Z");
        assert!(none(&forged, &inputs("7"), &credential(), now), "a retry beyond the longest hold is not ours");
        let future = failed_status("InvalidClient", "2027-01-01T00:00:00Z", "2027-01-01T00:10:00Z");
        assert!(none(&future, &inputs("7"), &credential(), now), "a failure in the future is not ours");
        let spec = failed_status("InvalidSpec", "2026-11-28T10:00:00Z", "2026-11-28T10:30:00Z");
        assert!(none(&spec, &inputs("7"), &credential(), now), "only token failures hold requests");
    }

    #[test]
    fn status_times_override_edited_secret_times() {
        let facts = TokenFacts {
            fingerprint: "fp".into(),
            token_type: "Bearer".into(),
            issued_at: t("2026-11-28T12:00:00Z"),
            expires_at: t("2099-01-01T00:00:00Z"),
        };
        let status = GroupDocsCredentialStatus {
            token_fingerprint: Some("fp".into()),
            expires_at: Some(Time(t("2026-11-29T10:00:00Z"))),
            last_refresh_time: Some(Time(t("2026-11-28T10:00:00Z"))),
            ..Default::default()
        };
        let trusted = trusted_times(facts.clone(), &status);
        assert_eq!((trusted.issued_at, trusted.expires_at), (t("2026-11-28T10:00:00Z"), t("2026-11-29T10:00:00Z")));
        let other = GroupDocsCredentialStatus { token_fingerprint: Some("other".into()), ..status };
        assert_eq!(trusted_times(facts.clone(), &other).expires_at, facts.expires_at);
    }

    #[tokio::test]
    async fn a_guarded_future_reports_panics_and_stops_on_halt() {
        let halt = CancellationToken::new();
        assert_eq!(guarded(async { 7 }, &halt).await, Guarded::Done(7));
        let panicking = async {
            let far = Timestamp::MAX;
            #[allow(clippy::unnecessary_literal_unwrap)]
            let _ = far.checked_add(SignedDuration::from_secs(1)).expect("timestamp overflow");
        };
        match guarded(panicking, &halt).await {
            Guarded::Panicked(message) => assert!(message.contains("timestamp overflow"), "{message}"),
            other => panic!("{other:?}"),
        }
        let stop = halt.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        });
        let started = Instant::now();
        assert_eq!(guarded(std::future::pending::<()>(), &halt).await, Guarded::Halted);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn panic_messages_are_bounded_and_printable() {
        let long = "x\n".repeat(500);
        let boxed: Box<dyn std::any::Any + Send> = Box::new(long);
        let m = panic_message(boxed.as_ref());
        assert!(m.len() <= 300 && !m.contains('\n'));
        let boxed: Box<dyn std::any::Any + Send> = Box::new("overflow");
        assert_eq!(panic_message(boxed.as_ref()), "overflow");
        let boxed: Box<dyn std::any::Any + Send> = Box::new(42);
        assert_eq!(panic_message(boxed.as_ref()), "a panic without a message");
    }

    proptest::proptest! {
        /// Whatever times a status holds (edited by hand, or restored from an old backup),
        /// deciding holds, trusting times and requeueing never panic.
        #[test]
        fn status_times_never_panic(
            retry in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            failed in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            expires in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            issued in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            now in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
        ) {
            let at = |s| Timestamp::from_second(s).unwrap();
            let mut status = failed_status("RateLimited", "2026-11-28T10:00:00Z", "2026-11-28T10:00:00Z");
            status.conditions[0].type_ = conditions::RECONCILING.into();
            status.next_retry_time = Some(Time(at(retry)));
            status.last_failure_time = Some(Time(at(failed)));
            if let Some(held) = held_by_status(&credential(), &status, &inputs("7"), at(now), &settings()) {
                let until = held.retry_at().unwrap();
                proptest::prop_assert!(until > at(now) && until <= schedule::add(at(failed), settings().max_hold));
            }
            let facts = TokenFacts { fingerprint: "fp".into(), token_type: "Bearer".into(), issued_at: at(issued), expires_at: at(expires) };
            let trusted = trusted_times(facts, &GroupDocsCredentialStatus { token_fingerprint: Some("fp".into()), expires_at: Some(Time(at(retry))), ..Default::default() });
            proptest::prop_assert!(trusted.issued_at <= trusted.expires_at);
            let wait = requeue_after(at(retry), at(now));
            proptest::prop_assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(86400));
        }
    }

    #[test]
    fn secret_names_are_validated() {
        assert!(is_dns_subdomain("viewer-token"));
        assert!(is_dns_subdomain("a.b-c"));
        for bad in ["", "Upper", "-x", "x-", "a..b", "a_b", &"x".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }
}
