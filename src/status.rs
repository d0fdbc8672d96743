//! What a reconcile decides, as plain functions of plain data: which token in place can be
//! trusted, whether a failure recorded in status still holds, the next status, and when to
//! look again. [`crate::reconcile`] gathers the facts and does the I/O.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::conditions::{self, Facts, Outcome};
use crate::crd::{GroupDocsCredential, GroupDocsCredentialStatus};
use crate::error::{Error, Limit, TokenFailure};
use crate::schedule;
use crate::target::{CachedSecret, IssuedFor};
use crate::token::broker::Refused;
use crate::token::{TokenFacts, TokenRequest};

/// What the reconcile established about the token, before status is computed.
pub(crate) struct Synced {
    /// The token now in the target Secret, when it was issued for the current spec and client
    /// Secret (it may have expired).
    pub(crate) token: Option<TokenFacts>,
    pub(crate) result: Result<Outcome<'static>, Refused>,
    /// The force-refresh annotation value this reconcile acted on.
    pub(crate) refresh_request: Option<String>,
    /// A forced refresh waits for `--min-refresh-interval` after the last token: until then.
    pub(crate) refresh_throttled_until: Option<Timestamp>,
    /// The client Secret's resourceVersion the request used, when one was sent.
    pub(crate) client_secret_version: Option<String>,
    /// `spec.renewBefore`, parsed once by [`GroupDocsCredential::validate`].
    pub(crate) renew_before: Option<SignedDuration>,
}

impl Synced {
    pub(crate) fn new(result: Result<Outcome<'static>, Refused>, token: Option<TokenFacts>) -> Self {
        Synced {
            token,
            result,
            refresh_request: None,
            refresh_throttled_until: None,
            client_secret_version: None,
            renew_before: None,
        }
    }

    /// The reconcile's result as the metrics label it: `Ok` or a condition reason.
    pub(crate) fn result_label(&self) -> &'static str {
        match &self.result {
            Ok(_) => "Ok",
            Err(refused) => refused.error.reason(),
        }
    }

    /// Nothing was sent: `error` stopped the reconcile first.
    pub(crate) fn failed(error: Error, token: Option<TokenFacts>) -> Self {
        Synced::new(Err(Refused { error, sent: false }), token)
    }
}

/// Inputs resolved from the spec and the client Secret.
pub(crate) struct Inputs {
    pub(crate) request: TokenRequest,
    pub(crate) issued_for: IssuedFor,
    pub(crate) renew_before: Option<SignedDuration>,
}

/// How long until `t`: at least a second, and at most a day (a reconcile then simply plans
/// again), so no time in a Secret or status can ask the scheduler for an absurd wait.
pub(crate) fn requeue_after(t: Timestamp, now: Timestamp) -> Duration {
    let wait = t.duration_since(now).clamp(SignedDuration::from_secs(1), MAX_REQUEUE);
    Duration::try_from(wait).unwrap_or(Duration::from_secs(1))
}

pub(crate) const MAX_REQUEUE: SignedDuration = SignedDuration::from_hours(24);

/// The failure an earlier process recorded in status, while its retry time has not come and
/// neither the spec nor the client Secret changed since: a restart or a new leader must not
/// retry sooner than the old one would have. Times that the operator could not have written
/// (a retry beyond the longest hold, a failure in the future) are ignored.
pub(crate) fn held_by_status(
    cr: &GroupDocsCredential,
    previous: &GroupDocsCredentialStatus,
    inputs: &Inputs,
    now: Timestamp,
    max_hold: SignedDuration,
) -> Option<Error> {
    let retry_at = previous.next_retry_time.as_ref()?.0;
    let failed_at = previous.last_failure_time.as_ref()?.0;
    let plausible = failed_at <= now && retry_at <= schedule::add(failed_at, max_hold);
    let unchanged = previous.observed_generation == cr.metadata.generation
        && previous.last_failure_client_secret_version.as_deref() == Some(&inputs.issued_for.client_secret_version);
    if retry_at <= now || !plausible || !unchanged {
        return None;
    }
    let failing = previous
        .conditions
        .iter()
        .filter(|c| c.status == "True" && (c.type_ == conditions::STALLED || c.type_ == conditions::RECONCILING))
        .find_map(|c| Some((TokenFailure::from_reason(&c.reason)?, c.message.clone())))?;
    Some(Error::Held { kind: failing.0, message: failing.1, retry_at })
}

/// The token in `secret`, if it is ours, was issued for these inputs and is the one status
/// recorded (a token edited by hand is not trusted).
///
/// Its times come from status, which only the operator writes: a hand-edited `expires_at` or
/// issued-at annotation on the Secret cannot postpone renewal (the write that follows puts
/// the recorded times back).
pub(crate) fn usable_token(
    secret: &CachedSecret,
    inputs: &Inputs,
    previous: &GroupDocsCredentialStatus,
) -> Option<TokenFacts> {
    let facts = secret.held_token_for(&inputs.issued_for)?;
    let untampered = previous.token_fingerprint.as_deref().is_none_or(|fp| *fp == facts.fingerprint);
    if !untampered {
        return None;
    }
    Some(trusted_times(facts.clone(), previous))
}

/// `facts` with the issue and expiry times status recorded for the same token; without such
/// a record, the Secret's, but never a later expiry than what status or the token shows.
pub(crate) fn trusted_times(mut facts: TokenFacts, previous: &GroupDocsCredentialStatus) -> TokenFacts {
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

pub(crate) fn refresh_time(
    cr: &GroupDocsCredential,
    token: &TokenFacts,
    renew_before: Option<SignedDuration>,
    min: SignedDuration,
) -> Timestamp {
    let seed = format!("{}/{}", cr.uid().unwrap_or_default(), token.fingerprint);
    schedule::refresh_at(token.issued_at, token.expires_at, renew_before, schedule::jitter_for(&seed), min)
}

/// A note for the Ready message when `spec.renewBefore` cannot be honoured.
pub(crate) fn renew_before_note(renew_before: Option<SignedDuration>, token: &TokenFacts) -> Option<String> {
    let lead = renew_before?;
    (lead >= token.lifetime()).then(|| {
        format!(
            "spec.renewBefore ({lead:#}) is not shorter than the token lifetime ({:#}), so the token is renewed with a third of its lifetime left",
            token.lifetime()
        )
    })
}

pub(crate) fn next_status(
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
        note: synced.token.as_ref().and_then(|t| renew_before_note(synced.renew_before, t)),
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
        status.next_refresh_time =
            (!cr.spec.suspend).then(|| Time(refresh_time(cr, token, synced.renew_before, min_interval)));
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
pub(crate) fn next_wake(synced: &Synced, status: &GroupDocsCredentialStatus, now: Timestamp) -> Option<Timestamp> {
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

#[cfg(test)]
mod tests;
