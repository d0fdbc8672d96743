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
//! The budget is shared fairly (see [`Budget::admit`]): every request counts while it is in
//! flight and every failure for a minute, so the endpoint never sees more failures per minute
//! than the budget, whatever answers it gives; no namespace may hold more than its share, so
//! one tenant's broken credentials cannot stop another tenant's retries; and part of the
//! budget is kept for clients that hold a valid token, so those are retried first.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

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
        self.reserve_budget(req, &user, now).map_err(not_sent)?;

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

    fn reserve_budget(&self, req: &TokenRequest, user: &User, now: Timestamp) -> Result<(), Error> {
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

const WINDOW: SignedDuration = SignedDuration::from_mins(1);

/// Who a request of the budget is for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct User {
    tenant: Arc<str>,
    /// The client holds a valid token: it was working until now.
    healthy: bool,
}

#[derive(Clone, Debug)]
struct Used {
    at: Timestamp,
    user: User,
}

/// One endpoint's failed-request budget: failures of the last minute (oldest first) and
/// requests in flight. A request in flight counts until it succeeds: otherwise a burst of
/// concurrent requests could overshoot the budget.
#[derive(Default)]
struct Budget {
    failures: VecDeque<Used>,
    in_flight: Vec<User>,
}

#[derive(Debug, PartialEq)]
enum Admission {
    Admitted,
    /// Held by requests in flight: look again shortly.
    Busy,
    /// Held by failures: not before this time.
    SpentUntil(Timestamp),
}

impl Budget {
    fn forget_old(&mut self, now: Timestamp) {
        while self.failures.front().is_some_and(|u| now.duration_since(u.at) >= WINDOW) {
            self.failures.pop_front();
        }
    }

    fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.in_flight.is_empty()
    }

    fn record_failure(&mut self, used: Used) {
        let i = self.failures.partition_point(|u| u.at <= used.at);
        self.failures.insert(i, used);
    }

    /// Whether one more request for `user` fits in a budget of `limit` per minute:
    /// - the whole budget: all failures and requests in flight;
    /// - a reserve of a fifth is kept for clients with a valid token (healthy ones);
    /// - each namespace in use holds at most `pool / max(namespaces, 2)`, so even alone a
    ///   namespace leaves half the budget to the next one that needs it (rounded up: the
    ///   whole caps keep the sum within the budget).
    fn admit(&self, user: &User, limit: usize) -> Admission {
        let reserve = if limit >= 2 { (limit / 5).max(1) } else { 0 };
        let pool = if user.healthy { limit } else { limit - reserve };
        let mut tenants: Vec<&str> = self
            .failures
            .iter()
            .map(|u| &*u.user.tenant)
            .chain(self.in_flight.iter().map(|u| &*u.tenant))
            .chain(std::iter::once(&*user.tenant))
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        let share = pool.div_ceil(tenants.len().max(2)).max(1);
        let checks: [(usize, Counts); 3] = [
            (limit, &|_| true),
            (pool, &|u: &User| user.healthy || !u.healthy),
            (share, &|u: &User| u.tenant == user.tenant),
        ];
        for (cap, counts) in checks {
            let failures: Vec<&Used> = self.failures.iter().filter(|u| counts(&u.user)).collect();
            let in_flight = self.in_flight.iter().filter(|u| counts(u)).count();
            if failures.len() + in_flight >= cap {
                return match failures.len().checked_sub(cap) {
                    // Failures alone fill it: wait until enough of them leave the minute.
                    Some(excess) => SpentUntil(schedule::add(failures[excess].at, WINDOW)),
                    None => Admission::Busy,
                };
            }
        }
        Admission::Admitted
    }
}

use Admission::SpentUntil;

/// Which uses of the budget a cap counts.
type Counts<'a> = &'a dyn Fn(&User) -> bool;

/// The budget applies per endpoint (scheme, host, port): that is what a server rate limits.
fn endpoint(url: &str) -> String {
    url::Url::parse(url).map(|u| u.origin().ascii_serialization()).unwrap_or_else(|_| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Sensitive;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// Answers with scripted failures first, then tokens; counts requests.
    struct Scripted {
        calls: AtomicU32,
        fail_first: u32,
        failure: Failure,
        delay: Duration,
    }

    impl Scripted {
        fn ok() -> Self {
            Scripted {
                calls: AtomicU32::new(0),
                fail_first: 0,
                failure: Failure::Unavailable(String::new()),
                delay: Duration::ZERO,
            }
        }
        fn failing(n: u32, failure: Failure) -> Self {
            Scripted { fail_first: n, failure, ..Self::ok() }
        }
    }

    impl Fetch for Scripted {
        async fn fetch(&self, _req: &TokenRequest) -> Result<Token, Failure> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if n < self.fail_first {
                return Err(self.failure.clone());
            }
            let now = Timestamp::now();
            Ok(Token {
                access_token: Sensitive::new(format!("token-{n}")),
                token_type: "Bearer".into(),
                issued_at: now,
                expires_at: now + SignedDuration::from_hours(24),
            })
        }
    }

    fn req(client: &str) -> TokenRequest {
        TokenRequest {
            url: "https://api.groupdocs.cloud/connect/token".into(),
            client_id: client.into(),
            client_secret: Sensitive::new("s3cret"),
            scope: None,
        }
    }

    fn broker(f: Scripted) -> Broker<Scripted> {
        Broker::new(f, BrokerConfig::default(), Arc::new(Metrics::default()))
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_request_and_the_cache() {
        let b = Arc::new(broker(Scripted { delay: Duration::from_millis(50), ..Scripted::ok() }));
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.token(&req("a"), Want::default(), "ns").await.unwrap() })
            })
            .collect();
        let mut fetched = 0;
        for c in calls {
            fetched += u32::from(c.await.unwrap().fetched);
        }
        assert_eq!(fetched, 1);
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 1);
        b.token(&req("b"), Want::default(), "ns").await.unwrap();
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 2, "another client is another request");
        let mut other_secret = req("a");
        other_secret.client_secret = Sensitive::new("rotated");
        b.token(&other_secret, Want::default(), "ns").await.unwrap();
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 3, "a rotated secret is another request");
    }

    #[tokio::test]
    async fn forced_renewal_bypasses_the_cache_once() {
        let b = broker(Scripted::ok());
        let first = b.token(&req("a"), Want::default(), "ns").await.unwrap().token;
        let forced = b.token(&req("a"), Want { force: true, ..Want::default() }, "ns").await.unwrap();
        assert!(forced.fetched);
        assert_ne!(forced.token.access_token, first.access_token);
        let again = b.token(&req("a"), Want::default(), "ns").await.unwrap();
        assert!(!again.fetched, "others are answered by the fresh token");
        assert_eq!(again.token.access_token, forced.token.access_token);
    }

    #[tokio::test]
    async fn a_429_pauses_the_client_until_retry_after() {
        let until = Timestamp::now() + SignedDuration::from_secs(120);
        let b = broker(Scripted::failing(1, Failure::RateLimited { detail: "429".into(), until }));
        let err = b.token(&req("a"), Want::default(), "ns").await.unwrap_err();
        let until = schedule::ceil_seconds(until);
        assert_eq!(
            err,
            Refused { error: Error::RateLimited { detail: "429".into(), until, by: Limit::Endpoint }, sent: true }
        );
        let err = b.token(&req("a"), Want::default(), "ns").await.unwrap_err();
        assert_eq!((err.error.reason(), err.sent), ("RateLimited", false));
        let mut same_id_other_secret = req("a");
        same_id_other_secret.scope = Some("other".into());
        assert_eq!(
            b.token(&same_id_other_secret, Want::default(), "ns").await.unwrap_err().error.reason(),
            "RateLimited"
        );
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 1, "no request inside the pause");
        // Someone who knows only the client id (not the secret) is another client: their 429
        // pauses them, never the real one.
        let mut impostor = req("a");
        impostor.client_secret = Sensitive::new("guessed");
        assert!(b.token(&impostor, Want::default(), "ns").await.is_ok());
    }

    #[tokio::test]
    async fn a_restored_pause_is_honoured() {
        let b = broker(Scripted::ok());
        b.honour_pause(&req("a"), Timestamp::now() + SignedDuration::from_secs(60));
        assert_eq!(b.token(&req("a"), Want::default(), "ns").await.unwrap_err().error.reason(), "RateLimited");
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn invalid_clients_are_not_retried_until_the_secret_changes() {
        let b = broker(Scripted::failing(1, Failure::InvalidClient("HTTP 400: invalid_client".into())));
        assert_eq!(b.token(&req("a"), Want::default(), "ns").await.unwrap_err().error.reason(), "InvalidClient");
        assert_eq!(b.token(&req("a"), Want::default(), "ns").await.unwrap_err().error.reason(), "InvalidClient");
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 1);
        let mut fixed = req("a");
        fixed.client_secret = Sensitive::new("fixed");
        assert!(b.token(&fixed, Want::default(), "ns").await.is_ok());
    }

    fn broker_with_budget(fetcher: Scripted, budget: u32) -> Broker<Scripted> {
        Broker::new(
            fetcher,
            BrokerConfig { failed_request_budget: budget, ..BrokerConfig::default() },
            Arc::new(Metrics::default()),
        )
    }

    #[tokio::test]
    async fn the_failed_request_budget_protects_the_endpoint() {
        let b = broker_with_budget(Scripted::failing(1000, Failure::InvalidClient("bad".into())), 10);
        for i in 0..30 {
            let _ = b.token(&req(&format!("broken-{i}")), Want::default(), &format!("ns-{}", i % 6)).await;
        }
        let calls = b.fetcher.calls.load(Ordering::SeqCst);
        assert_eq!(calls, 8, "broken clients get the budget minus the healthy reserve");
        let err = b.token(&req("more"), Want::default(), "ns-new").await.unwrap_err().error;
        assert!(
            matches!(&err, Error::RateLimited { detail, by: Limit::Budget, .. } if detail.contains("budget")),
            "{err}"
        );

        // Concurrent requests cannot overshoot it either.
        let b = Arc::new(broker_with_budget(
            Scripted {
                delay: Duration::from_millis(50),
                ..Scripted::failing(1000, Failure::InvalidClient("bad".into()))
            },
            3,
        ));
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.token(&req(&format!("c-{i}")), Want::default(), &format!("ns-{i}")).await })
            })
            .collect();
        for c in calls {
            let _ = c.await.unwrap();
        }
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_vendor_wide_burst_of_400s_stays_within_the_budget() {
        // Every client was working (valid tokens in place), then the vendor answers 400 to all.
        let b = Arc::new(broker_with_budget(
            Scripted {
                delay: Duration::from_millis(20),
                ..Scripted::failing(1000, Failure::InvalidClient("400".into()))
            },
            10,
        ));
        let valid = Want { valid_until: Some(Timestamp::now() + SignedDuration::from_hours(8)), ..Want::default() };
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.token(&req(&format!("c-{i}")), valid, &format!("ns-{}", i % 7)).await })
            })
            .collect();
        for c in calls {
            let _ = c.await.unwrap();
        }
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 10, "exactly the budget, never more");
    }

    #[tokio::test]
    async fn one_namespace_cannot_starve_another() {
        let b = broker_with_budget(Scripted::failing(1000, Failure::InvalidClient("bad".into())), 10);
        for i in 0..30 {
            let _ = b.token(&req(&format!("broken-{i}")), Want::default(), "hostile").await;
        }
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 4, "alone, a namespace holds at most half the pool");
        // A working client of another namespace fails and is retried: both attempts are sent.
        let valid = Want { valid_until: Some(Timestamp::now() + SignedDuration::from_hours(8)), ..Want::default() };
        for i in 0..3 {
            let result = b.token(&req(&format!("bystander-{i}")), valid, "bystander").await;
            assert!(result.unwrap_err().sent, "attempt {i} of the bystander was sent");
        }
    }

    fn user(tenant: &str, healthy: bool) -> User {
        User { tenant: tenant.into(), healthy }
    }

    #[test]
    fn admission_shares_the_budget() {
        let now = Timestamp::now();
        let mut budget = Budget::default();
        let failed = |budget: &mut Budget, tenant: &str, ago: i64| {
            budget.record_failure(Used { at: now - SignedDuration::from_secs(ago), user: user(tenant, false) })
        };
        for ago in [50, 40, 30, 20] {
            failed(&mut budget, "x", ago);
        }
        // x alone holds its share (8 / 2) and waits until its oldest failure leaves the minute.
        assert_eq!(budget.admit(&user("x", false), 10), SpentUntil(now + SignedDuration::from_secs(10)));
        assert_eq!(budget.admit(&user("x", true), 10), Admission::Admitted, "x's working clients: 10 / 2");
        assert_eq!(budget.admit(&user("y", false), 10), Admission::Admitted, "y has its own share");
        for _ in 0..4 {
            budget.in_flight.push(user("y", false));
        }
        assert_eq!(budget.admit(&user("y", false), 10), Admission::Busy, "y's share is held in flight");
        budget.in_flight.clear();
        for _ in 0..4 {
            failed(&mut budget, "y", 5);
        }
        assert_eq!(
            budget.admit(&user("z", false), 10),
            SpentUntil(now + SignedDuration::from_secs(10)),
            "the pool for clients without a token (8) is spent"
        );
        assert_eq!(budget.admit(&user("w", true), 10), Admission::Admitted, "the reserve is for working clients");
        budget.in_flight.push(user("w", true));
        budget.in_flight.push(user("v", true));
        assert_eq!(budget.admit(&user("u", true), 10), Admission::Busy, "the whole budget is held");
    }

    #[test]
    fn a_working_client_rejected_once_waits_a_share_of_its_remaining_lifetime() {
        let now = Timestamp::now();
        let hour = SignedDuration::from_hours(1);
        assert_eq!(invalid_client_hold(hour, None, now), hour);
        assert_eq!(
            invalid_client_hold(hour, Some(now + SignedDuration::from_mins(20)), now),
            SignedDuration::from_mins(5)
        );
        assert_eq!(invalid_client_hold(hour, Some(now + SignedDuration::from_hours(8)), now), hour);
        assert_eq!(invalid_client_hold(hour, Some(now + SignedDuration::from_secs(20)), now), MIN_HOLD);
        assert_eq!(invalid_client_hold(hour, Some(now - SignedDuration::from_secs(20)), now), hour);
    }

    #[tokio::test]
    async fn restored_failures_count_against_the_budget() {
        let b = broker_with_budget(Scripted::ok(), 10);
        let now = Timestamp::now();
        for i in 0..10 {
            b.restore_failures(&req("a").url, &format!("ns-{i}"), now - SignedDuration::from_secs(i), 1, now);
        }
        b.restore_failures(&req("a").url, "old", now - SignedDuration::from_secs(90), 5, now);
        let err = b.token(&req("a"), Want::default(), "ns").await.unwrap_err().error;
        assert_eq!(err.reason(), "RateLimited");
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 0);
        // One credential that failed three times since its last success counts three times.
        let b = broker_with_budget(Scripted::ok(), 10);
        b.restore_failures(&req("a").url, "ns", now - SignedDuration::from_secs(5), 3, now);
        assert_eq!(crate::lock(&b.budgets).values().map(|b| b.failures.len()).sum::<usize>(), 3);
    }

    #[tokio::test]
    async fn forced_renewals_within_the_minimum_interval_share_the_fresh_token() {
        let b = broker(Scripted::ok());
        let force = Want { force: true, min_interval: SignedDuration::from_secs(30), ..Want::default() };
        let first = b.token(&req("a"), force, "ns").await.unwrap();
        let second = b.token(&req("a"), force, "ns").await.unwrap();
        assert!(first.fetched && !second.fetched);
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn transient_failures_back_off() {
        let b = broker(Scripted::failing(1, Failure::Unavailable("HTTP 503".into())));
        let err = b.token(&req("a"), Want::default(), "ns").await.unwrap_err().error;
        assert_eq!(err.reason(), "TokenEndpointUnavailable");
        let retry = err.retry_at().unwrap().duration_since(Timestamp::now());
        assert!(retry >= SignedDuration::from_millis(900) && retry <= SignedDuration::from_secs(3), "{retry:?}");
        assert_eq!(err.retry_at().unwrap().subsec_nanosecond(), 0, "whole seconds");
        assert_eq!(
            b.token(&req("a"), Want::default(), "ns").await.unwrap_err().error.reason(),
            "TokenEndpointUnavailable"
        );
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 1, "no request during the backoff");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever sequence of requests, tenants and outcomes: failures plus requests in
        /// flight never exceed the budget, and clients without a valid token never take the
        /// reserve.
        #[test]
        fn the_budget_is_never_exceeded(
            limit in 1usize..30,
            steps in proptest::collection::vec((0u8..5, any::<bool>(), 0u8..3, 0i64..90), 0..200),
        ) {
            let mut budget = Budget::default();
            let mut now = Timestamp::from_second(1_800_000_000).unwrap();
            for (tenant, healthy, action, advance) in steps {
                now += SignedDuration::from_secs(advance / 10);
                budget.forget_old(now);
                let user = User { tenant: tenant.to_string().into(), healthy };
                match action {
                    0 if budget.admit(&user, limit) == Admission::Admitted => budget.in_flight.push(user),
                    0 => {}
                    1 if !budget.in_flight.is_empty() => {
                        let u = budget.in_flight.swap_remove(0);
                        budget.record_failure(Used { at: now, user: u });
                    }
                    _ if !budget.in_flight.is_empty() => {
                        budget.in_flight.pop();
                    }
                    _ => {}
                }
                prop_assert!(budget.failures.len() + budget.in_flight.len() <= limit);
                let reserve = if limit >= 2 { (limit / 5).max(1) } else { 0 };
                let unhealthy = budget.failures.iter().filter(|u| !u.user.healthy).count()
                    + budget.in_flight.iter().filter(|u| !u.healthy).count();
                prop_assert!(unhealthy <= limit - reserve);
            }
        }

        #[test]
        fn holds_never_panic_and_stay_within_bounds(
            configured in 1i64..=7 * 24 * 3600,
            valid in proptest::option::of(Timestamp::MIN.as_second()..=Timestamp::MAX.as_second()),
        ) {
            let now = Timestamp::from_second(1_800_000_000).unwrap();
            let configured = SignedDuration::from_secs(configured);
            let hold = invalid_client_hold(configured, valid.map(|s| Timestamp::from_second(s).unwrap()), now);
            prop_assert!(hold <= configured.max(MIN_HOLD) && hold.is_positive());
        }
    }
}
