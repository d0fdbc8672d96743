//! A reconcile: CR -> client Secret -> token -> target Secret -> status.
//!
//! Level-triggered and idempotent: every reconcile recomputes what the target Secret and the
//! status should be and writes only what differs, so a no-op reconcile sends no request.
//! The steps live in files named for them, in the order data flows: [`inputs`], the token
//! (the broker, in [`crate::token`]), [`secret`], then [`publish`] (status, events, restarts).
//! The decisions between the steps are pure functions in [`crate::status`].

pub(crate) mod inputs;
pub(crate) mod publish;
pub(crate) mod secret;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{debug, error};

use crate::conditions::{self, Facts, Outcome};
use crate::controller::{Context, SecretAccess, Shared};
use crate::crd::{CachedCredential, GroupDocsCredential, GroupDocsCredentialStatus};
use crate::error::Error;
use crate::guard::inject_panic_for_tests;
use crate::schedule;
use crate::status::{
    Inputs, Synced, held_by_status, next_status, next_wake, refresh_time, requeue_after, usable_token,
};
use crate::target::{self, Ownership, Target};
use crate::token::broker::{Refused, Want};
use crate::token::{Token, TokenFacts};

use inputs::{resolve_inputs, target_secret};
use publish::{publish_events, restart_workloads, write_status};
use secret::{SecretWrite, write_secret};

/// One reconcile, in the order data flows: inputs, token, Secret, status, then events and
/// restarts. Writes only what differs from what the caches show.
pub async fn reconcile(cached: Arc<CachedCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    let cr = cached.view();
    inject_panic_for_tests(&cr);
    let started = Instant::now();
    if ctx.shared.writes.cache_is_behind_digest(&cr.uid().unwrap_or_default(), cached.status_digest(), started) {
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
    if cached.status_differs(&status) {
        write_status(&cr, &ctx, &status).await?;
        publish_events(&cr, &ctx, &previous, &status, &synced).await;
    }
    let result = synced.result_label();
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
        Some(t) => ctx.wake_at(&cr, t, now),
        None => Action::await_change(),
    })
}

/// Records a panicked reconcile on the credential and looks again in five minutes.
pub async fn report_panic(cached: &CachedCredential, ctx: &Context, message: String) -> Result<Action, Error> {
    let cr = &cached.view();
    error!(credential = %cr.name_any(), namespace = ?cr.namespace(), panic = %message, "reconcile panicked; reported on the credential");
    ctx.shared.metrics.panicked();
    let error = Error::Internal(message);
    ctx.shared.metrics.reconciled(error.reason(), Duration::ZERO);
    let previous = cr.status.clone().unwrap_or_default();
    let now = schedule::whole_seconds(Timestamp::now());
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
    if cached.status_differs(&status) {
        write_status(cr, ctx, &status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn sync(cr: &GroupDocsCredential, ctx: &Context, previous: &GroupDocsCredentialStatus, now: Timestamp) -> Synced {
    let fail = |error: Error| Synced::failed(error, None);
    let inputs = match resolve_inputs(cr, &ctx.shared, &ctx.client_secrets).await {
        Ok(inputs) => inputs,
        Err(e) => return fail(e),
    };
    let existing = match target_secret(cr, ctx).await {
        Ok(existing) => existing,
        Err(e) => return fail(e),
    };
    let target = Target::of(cr);
    if target::cached_ownership(existing.as_deref(), &target) == Ownership::Foreign {
        return fail(Error::TargetConflict { name: cr.target_name() });
    }
    let in_place = existing.as_deref().and_then(|s| usable_token(s, &inputs, previous));
    let decided = match decide_token(cr, &ctx.shared, previous, &inputs, in_place, now).await {
        Ok(decided) => decided,
        Err(ended) => return ended,
    };
    let renew_before = inputs.renew_before;
    let desired = target::desired(&target, &decided.facts, &inputs.issued_for);
    let write = SecretWrite { existing: existing.as_deref(), desired: &desired, fresh: decided.fresh.as_ref() };
    if let Err(error) = write_secret(&ctx.shared.client, &ctx.shared.writes, &target, write, &inputs.issued_for).await {
        return Synced { renew_before, ..Synced::failed(error, decided.in_place) };
    }
    decided.written(previous, renew_before)
}

/// The token both kinds write: a new one from the broker, or the one in place.
pub(crate) struct Decided {
    /// A new token; `None` keeps the one in place, which the cache knows only by its facts.
    pub(crate) fresh: Option<Token>,
    pub(crate) facts: TokenFacts,
    pub(crate) in_place: Option<TokenFacts>,
    pub(crate) refresh_request: Option<String>,
    pub(crate) refresh_throttled_until: Option<Timestamp>,
}

impl Decided {
    /// The reconcile's result once the token is in every Secret it belongs in.
    pub(crate) fn written(self, previous: &GroupDocsCredentialStatus, renew_before: Option<SignedDuration>) -> Synced {
        let outcome = match previous.token_fingerprint.as_deref() {
            None => Outcome::Issued,
            Some(fp) if fp != self.facts.fingerprint => Outcome::Renewed,
            Some(_) => Outcome::Current,
        };
        Synced {
            token: Some(self.facts),
            result: Ok(outcome),
            refresh_request: self.refresh_request,
            refresh_throttled_until: self.refresh_throttled_until,
            client_secret_version: None,
            renew_before,
        }
    }
}

/// Decides whether the token in place will do or a new one is due (renewal time, forced
/// refresh, no token), and asks the broker for it. `Err` ends the reconcile with that result:
/// suspended, held back by a recorded failure, or refused by the broker.
pub(crate) async fn decide_token(
    cr: &GroupDocsCredential,
    shared: &Shared,
    previous: &GroupDocsCredentialStatus,
    inputs: &Inputs,
    in_place: Option<TokenFacts>,
    now: Timestamp,
) -> Result<Decided, Synced> {
    let renew_before = inputs.renew_before;
    if cr.spec.suspend {
        return Err(Synced { renew_before, ..Synced::new(Ok(Outcome::Suspended), in_place) });
    }
    let min_interval = shared.settings.min_refresh_interval;
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
    let refresh_request = refresh_request.map(str::to_owned);
    if !(refresh_request.is_some() || due) {
        let Some(facts) = in_place.clone() else { unreachable!("no token in place means one is due") };
        return Ok(Decided { fresh: None, facts, in_place, refresh_request, refresh_throttled_until });
    }
    if let Some(held) = held_by_status(cr, previous, inputs, now, shared.settings.max_hold) {
        return Err(Synced { refresh_throttled_until, renew_before, ..Synced::failed(held, in_place) });
    }
    if let Some(until) = previous.rate_limited_until.as_ref().map(|t| t.0).filter(|t| *t > now) {
        // Written by the operator only for a 429; a time beyond the longest pause is not ours.
        if until <= schedule::add(now, crate::token::retry_after::MAX_PAUSE) {
            shared.broker.honour_pause(&inputs.request, until);
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
    match shared.broker.token(&inputs.request, want, &namespace(cr)).await {
        Ok(issued) => {
            let facts = issued.token.facts();
            Ok(Decided { fresh: Some(issued.token), facts, in_place, refresh_request, refresh_throttled_until })
        }
        Err(refused) => {
            let client_secret_version = refused.sent.then(|| inputs.issued_for.client_secret_version.clone());
            Err(Synced {
                token: in_place,
                result: Err(refused),
                refresh_request: None,
                refresh_throttled_until,
                client_secret_version,
                renew_before,
            })
        }
    }
}

pub(crate) fn namespace(cr: &GroupDocsCredential) -> String {
    cr.namespace().unwrap_or_default()
}
