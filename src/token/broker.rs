//! The token broker: the only way the operator asks for a token.
//!
//! - Credentials with the same token URL, client id, client secret and scope share one
//!   request (single flight) and its result (cache), however many CRs use them.
//! - It refuses to send a request that the endpoint's rules or our own forbid: inside a 429
//!   `Retry-After` pause for that client, beyond the failed-request budget of the endpoint,
//!   during the backoff after a failure, or again with credentials the endpoint rejected.
//!   Reconciles may run early (any watch event triggers one), so requeue timing alone could
//!   not enforce any of this.
//!
//! The budget is shared fairly (see [`super::budget`]): every request counts while it is in
//! flight and every failure for a minute, so the endpoint never sees more failures per minute
//! than the budget, whatever answers it gives; no namespace may hold more than its share, so
//! one tenant's broken credentials cannot stop another tenant's retries; and part of the
//! budget is kept for clients that hold a valid token, so those are retried first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use super::budget::{Admission, Budget, Used, User, WINDOW};
use super::response::Failure;
use super::{Token, TokenRequest};
use crate::error::{Error, Limit};
use crate::metrics::Metrics;
use crate::schedule;

/// Sends one token request. Implemented by the HTTP client; tests script it.
pub trait Fetch: Send + Sync + 'static {
    fn fetch(&self, req: &TokenRequest) -> impl Future<Output = Result<Token, Failure>> + Send;
}

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Failed requests allowed per endpoint in any rolling minute, across all clients.
    pub failed_request_budget: u32,
    /// How long rejected credentials wait before they are tried again (unless they change).
    pub invalid_client_retry: SignedDuration,
    pub backoff_base: SignedDuration,
    pub backoff_cap: SignedDuration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            failed_request_budget: 10,
            invalid_client_retry: SignedDuration::from_hours(1),
            backoff_base: SignedDuration::from_secs(2),
            backoff_cap: SignedDuration::from_mins(1),
        }
    }
}

/// What a caller needs from the token it gets back.
#[derive(Clone, Copy, Debug, Default)]
pub struct Want {
    /// A cached token is good enough only while it is not yet due for renewal by this lead.
    pub renew_before: Option<SignedDuration>,
    /// A new token, whatever the cache holds (forced renewal).
    pub force: bool,
    pub min_interval: SignedDuration,
    /// Expiry of the token the caller already has in place for these credentials (e.g. in
    /// the target Secret, from before a restart): such a client counts as working.
    pub valid_until: Option<Timestamp>,
}

/// How long a client that was working waits after one `invalid_client` answer: this share of
/// its token's remaining lifetime (capped by `--invalid-client-retry`)...
const INVALID_CLIENT_SHARE_OF_REMAINING: i32 = 4;
/// ...but not less than this.
const MIN_HOLD: SignedDuration = SignedDuration::from_secs(10);
/// How long a request waits in place for others in flight to settle before it is refused.
const BUSY_WAIT_IN_PLACE: std::time::Duration = std::time::Duration::from_secs(1);
/// A request refused because others are in flight looks again after this long.
const BUSY_WAIT: SignedDuration = SignedDuration::from_secs(3);

/// Identifies one client at one endpoint. The secret enters only as a salted hash that never
/// leaves this process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SlotKey {
    url: String,
    client_id: String,
    scope: Option<String>,
    secret_hash: [u8; 32],
}

/// A client's identity for 429 pauses: endpoint, id and (hashed) secret, so that someone who
/// knows only a client id cannot pause the real client.
type PauseKey = (String, String, [u8; 32]);

#[derive(Default)]
struct Slot {
    token: Option<Token>,
    /// No request for this exact client before this time; the error says why.
    blocked: Option<Error>,
    failures: u32,
}

pub struct Broker<F> {
    fetcher: F,
    config: BrokerConfig,
    metrics: Arc<Metrics>,
    salt: [u8; 16],
    slots: Mutex<HashMap<SlotKey, Arc<tokio::sync::Mutex<Slot>>>>,
    pauses: Mutex<HashMap<PauseKey, Timestamp>>,
    /// Recent failures and requests in flight by endpoint origin, for the failed-request budget.
    budgets: Mutex<HashMap<String, Budget>>,
    /// Notified whenever a request leaves the budget's in-flight list.
    settled: tokio::sync::Notify,
}

/// A [`Broker::token`] call that gave no token.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    pub error: Error,
    /// True when a request was sent and failed; false when the broker refused to send one.
    pub sent: bool,
}

impl Refused {
    /// Refused only because the budget is held by requests in flight: nothing failed, and
    /// the caller should simply look again at this time.
    pub fn busy_until(&self) -> Option<Timestamp> {
        match &self.error {
            Error::RateLimited { until, by: Limit::InFlight, .. } => Some(*until),
            _ => None,
        }
    }
}

/// The result of a successful [`Broker::token`] call.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: Token,
    /// True when this call sent a request; false when the cache answered.
    pub fetched: bool,
}

impl<F: Fetch> Broker<F> {
    pub fn new(fetcher: F, config: BrokerConfig, metrics: Arc<Metrics>) -> Self {
        Broker {
            fetcher,
            config,
            metrics,
            salt: rand::random(),
            slots: Mutex::default(),
            pauses: Mutex::default(),
            budgets: Mutex::default(),
            settled: tokio::sync::Notify::new(),
        }
    }

    /// A token for `req` that satisfies `want`, from the cache or from one request shared by
    /// every concurrent caller with the same client. `tenant` (the namespace) is charged for
    /// the request in the failed-request budget.
    pub async fn token(&self, req: &TokenRequest, want: Want, tenant: &str) -> Result<Issued, Refused> {
        let key = self.key(req);
        let slot = self.slot(&key);
        let mut slot = slot.lock().await;
        let now = Timestamp::now();
        if let Some(token) = slot.token.as_ref().filter(|t| acceptable(t, &want, now)) {
            return Ok(Issued { token: token.clone(), fetched: false });
        }
        if let Some(blocked) = slot.blocked.as_ref().filter(|e| e.retry_at().is_some_and(|t| t > now)) {
            return Err(Refused { error: blocked.clone(), sent: false });
        }
        let not_sent = |error| Refused { error, sent: false };
        self.check_pause(&key, now).map_err(not_sent)?;
        let valid_until = [want.valid_until, slot.token.as_ref().map(|t| t.expires_at)]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .max();
        let user = User { tenant: tenant.into(), healthy: valid_until.is_some() };
        self.reserve_budget(req, &user).await.map_err(not_sent)?;

        let started = Instant::now();
        let result = self.fetcher.fetch(req).await;
        let now = Timestamp::now();
        self.settle_budget(req, &user, result.is_err(), now);
        match result {
            Ok(token) => {
                self.metrics.token_requested("Ok", started.elapsed());
                *slot = Slot { token: Some(token.clone()), blocked: None, failures: 0 };
                Ok(Issued { token, fetched: true })
            }
            Err(failure) => {
                slot.failures = slot.failures.saturating_add(1);
                let error = self.classify(&key, failure, slot.failures, valid_until, now);
                self.metrics.token_requested(error.reason(), started.elapsed());
                slot.blocked = Some(error.clone());
                Err(Refused { error, sent: true })
            }
        }
    }

    /// Re-establishes a 429 pause known from a credential's status (after a restart or a
    /// leader change), so that it holds even though this process never saw the 429.
    pub fn honour_pause(&self, req: &TokenRequest, until: Timestamp) {
        let key = pause_key(&self.key(req));
        let mut pauses = crate::lock(&self.pauses);
        let entry = pauses.entry(key).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Counts `count` failures that an earlier process saw (from a credential's status: its
    /// last failure and the failures since its last success) in the budget of `url`'s
    /// endpoint, if the last one falls within the last minute. All are counted at the last
    /// one's time, which can only make the budget stricter than it was.
    pub fn restore_failures(&self, url: &str, tenant: &str, at: Timestamp, count: u32, now: Timestamp) {
        // Status holds the reconcile's start, to the second; the request ended a little later.
        let at = schedule::add(at, SignedDuration::from_secs(1)).min(now);
        if now.duration_since(at) >= WINDOW {
            return;
        }
        let mut budgets = crate::lock(&self.budgets);
        let budget = budgets.entry(endpoint(url)).or_default();
        let count = count.min(self.config.failed_request_budget);
        for _ in 0..count {
            budget.record_failure(Used { at, user: User { tenant: tenant.into(), healthy: false } });
        }
    }

    /// Forgets clients with nothing worth keeping (expired tokens, no pending block).
    pub fn prune(&self, now: Timestamp) {
        let mut slots = crate::lock(&self.slots);
        slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.try_lock().map_or(true, |s| {
                    s.token.as_ref().is_some_and(|t| !t.is_expired(now))
                        || s.blocked.as_ref().and_then(Error::retry_at).is_some_and(|t| t > now)
                })
        });
        crate::lock(&self.pauses).retain(|_, until| *until > now);
        let mut budgets = crate::lock(&self.budgets);
        budgets.retain(|_, b| {
            b.forget_old(now);
            !b.is_empty()
        });
    }

    fn key(&self, req: &TokenRequest) -> SlotKey {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(req.client_secret.expose().as_bytes());
        SlotKey {
            url: req.url.clone(),
            client_id: req.client_id.clone(),
            scope: req.scope.clone(),
            secret_hash: h.finalize().into(),
        }
    }

    fn slot(&self, key: &SlotKey) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = crate::lock(&self.slots);
        slots.entry(key.clone()).or_default().clone()
    }

    fn check_pause(&self, key: &SlotKey, now: Timestamp) -> Result<(), Error> {
        let pauses = crate::lock(&self.pauses);
        match pauses.get(&pause_key(key)) {
            Some(until) if *until > now => Err(Error::RateLimited {
                detail: "the token endpoint answered 429 Too Many Requests for this client".to_string(),
                until: *until,
                by: Limit::Endpoint,
            }),
            _ => Ok(()),
        }
    }

    /// Takes room in the budget for one request. When the room is held only by requests in
    /// flight (which usually end within milliseconds), waits for one of them, up to
    /// [`BUSY_WAIT_IN_PLACE`]; then gives up with a "look again shortly" refusal, so that a
    /// reconcile never holds one of the controller's workers for long.
    async fn reserve_budget(&self, req: &TokenRequest, user: &User) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + BUSY_WAIT_IN_PLACE;
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Registered before the check, so a request settling in between still wakes us.
            settled.as_mut().enable();
            let now = Timestamp::now();
            match self.try_reserve(req, user, now) {
                Err(e) if matches!(e, Error::RateLimited { by: Limit::InFlight, .. }) => {
                    if tokio::time::timeout_at(deadline, settled).await.is_err() {
                        return Err(e);
                    }
                }
                result => return result,
            }
        }
    }

    fn try_reserve(&self, req: &TokenRequest, user: &User, now: Timestamp) -> Result<(), Error> {
        let limit = self.config.failed_request_budget as usize;
        let mut budgets = crate::lock(&self.budgets);
        let budget = budgets.entry(endpoint(&req.url)).or_default();
        budget.forget_old(now);
        match budget.admit(user, limit) {
            Admission::Admitted => {
                budget.in_flight.push(user.clone());
                Ok(())
            }
            Admission::Busy => Err(Error::RateLimited {
                detail: format!(
                    "other token requests to {} are in flight and hold the operator's failed-request budget",
                    endpoint(&req.url)
                ),
                until: schedule::ceil_seconds(schedule::add(now, BUSY_WAIT)),
                by: Limit::InFlight,
            }),
            Admission::SpentUntil(until) => Err(Error::RateLimited {
                detail: format!(
                    "the operator's budget of {limit} failed token requests per minute for {} is spent (this namespace's share, or the whole), which protects every client of this endpoint from its cooldown",
                    endpoint(&req.url)
                ),
                until: schedule::ceil_seconds(until),
                by: Limit::Budget,
            }),
        }
    }

    fn settle_budget(&self, req: &TokenRequest, user: &User, failed: bool, now: Timestamp) {
        let mut budgets = crate::lock(&self.budgets);
        let budget = budgets.entry(endpoint(&req.url)).or_default();
        if let Some(i) = budget.in_flight.iter().position(|u| u == user) {
            budget.in_flight.swap_remove(i);
        }
        if failed {
            budget.record_failure(Used { at: now, user: user.clone() });
        }
        drop(budgets);
        self.settled.notify_waiters();
    }

    /// The error for a failed request, with a whole-second retry time (so status written
    /// while waiting does not change from one reconcile to the next).
    fn classify(
        &self,
        key: &SlotKey,
        failure: Failure,
        failures: u32,
        valid_until: Option<Timestamp>,
        now: Timestamp,
    ) -> Error {
        let at = |wait: SignedDuration| schedule::ceil_seconds(schedule::add(now, wait));
        let backoff = || schedule::backoff(failures, self.config.backoff_base, self.config.backoff_cap, rand::random());
        match failure {
            Failure::InvalidClient(detail) => {
                let hold = invalid_client_hold(self.config.invalid_client_retry, valid_until, now);
                let when = match valid_until {
                    Some(_) => {
                        format!("retried at once when it changes, else in {hold:#} while the token in place is valid")
                    }
                    None => format!("retried at once when it changes, else after {hold:#}"),
                };
                Error::InvalidClient {
                    detail: format!("{detail}; fix the client id or secret in the client Secret ({when})"),
                    retry_at: at(hold),
                }
            }
            Failure::RateLimited { detail, until } => {
                let until = schedule::ceil_seconds(until);
                let mut pauses = crate::lock(&self.pauses);
                let entry = pauses.entry(pause_key(key)).or_insert(until);
                *entry = (*entry).max(until);
                Error::RateLimited { detail, until, by: Limit::Endpoint }
            }
            Failure::Unavailable(detail) => Error::TokenEndpointUnavailable { detail, retry_at: at(backoff()) },
            Failure::InvalidResponse(detail) => Error::InvalidTokenResponse { detail, retry_at: at(backoff()) },
            Failure::NotAllowed(detail) => Error::TokenUrlNotAllowed { url: key.url.clone(), detail },
        }
    }
}

/// How long to wait after an `invalid_client` answer: the configured hold, but for a client
/// whose token is still valid at most a share of what is left of it, so that a one-off
/// rejection (a glitch at the vendor) does not let the token run out.
pub fn invalid_client_hold(
    configured: SignedDuration,
    valid_until: Option<Timestamp>,
    now: Timestamp,
) -> SignedDuration {
    match valid_until {
        Some(expiry) if expiry > now => {
            let remaining = expiry.duration_since(now);
            // Whole seconds: the hold is quoted in the condition message.
            let share = SignedDuration::from_secs((remaining / INVALID_CLIENT_SHARE_OF_REMAINING).as_secs());
            share.max(MIN_HOLD).min(configured)
        }
        _ => configured,
    }
}

fn pause_key(key: &SlotKey) -> PauseKey {
    (key.url.clone(), key.client_id.clone(), key.secret_hash)
}

/// May a cached token answer this caller?
fn acceptable(token: &Token, want: &Want, now: Timestamp) -> bool {
    if want.force {
        // A forced renewal is answered by a token issued within the minimum interval: the
        // one another credential of the same client just forced.
        return now < schedule::add(token.issued_at, want.min_interval) && !token.is_expired(now);
    }
    let due = schedule::refresh_at(token.issued_at, token.expires_at, want.renew_before, 0.0, want.min_interval);
    now < due && !token.is_expired(now)
}

/// The budget applies per endpoint (scheme, host, port): that is what a server rate limits.
fn endpoint(url: &str) -> String {
    url::Url::parse(url).map(|u| u.origin().ascii_serialization()).unwrap_or_else(|_| url.to_string())
}

#[cfg(test)]
mod tests;
