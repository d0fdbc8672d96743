//! The token broker: the only way the operator asks for a token.
//!
//! - Credentials with the same token URL, client id, client secret and scope share one
//!   request (single flight) and its result (cache), however many CRs use them.
//! - It refuses to send a request that the endpoint's rules or our own forbid: inside a 429
//!   `Retry-After` pause for that client, beyond the failed-request budget of the endpoint,
//!   during the backoff after a failure, or again with credentials the endpoint rejected.
//!   Reconciles may run early (any watch event triggers one), so requeue timing alone could
//!   not enforce any of this.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use super::response::Failure;
use super::{Token, TokenRequest};
use crate::error::Error;
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
}

/// Identifies one client at one endpoint. The secret enters only as a salted hash that never
/// leaves this process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SlotKey {
    url: String,
    client_id: String,
    scope: Option<String>,
    secret_hash: [u8; 32],
}

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
    /// 429 pauses by (endpoint, client id).
    pauses: Mutex<HashMap<(String, String), Timestamp>>,
    /// Recent failures and requests in flight by endpoint origin, for the failed-request budget.
    budgets: Mutex<HashMap<String, Budget>>,
}

/// A request in flight counts against the budget until it succeeds: otherwise a burst of
/// concurrent requests with broken credentials could overshoot it.
#[derive(Default)]
struct Budget {
    failures: VecDeque<Timestamp>,
    in_flight: usize,
}

/// A [`Broker::token`] call that gave no token.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    pub error: Error,
    /// True when a request was sent and failed; false when the broker refused to send one.
    pub sent: bool,
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
    /// every concurrent caller with the same client.
    pub async fn token(&self, req: &TokenRequest, want: Want) -> Result<Issued, Refused> {
        let key = self.key(req);
        let slot = self.slot(&key);
        let mut slot = slot.lock().await;
        let now = Timestamp::now();
        if let Some(token) = slot.token.as_ref().filter(|t| !want.force && acceptable(t, &want, now)) {
            return Ok(Issued { token: token.clone(), fetched: false });
        }
        if let Some(blocked) = slot.blocked.as_ref().filter(|e| e.retry_at().is_some_and(|t| t > now)) {
            return Err(Refused { error: blocked.clone(), sent: false });
        }
        let not_sent = |error| Refused { error, sent: false };
        self.check_pause(req, now).map_err(not_sent)?;
        // A client whose last request succeeded is not held back by other clients' failures
        // (its own failure still counts); everyone else needs room in the budget.
        let known_good = slot.token.is_some() && slot.failures == 0;
        if !known_good {
            self.reserve_budget(req, now).map_err(not_sent)?;
        }

        let started = Instant::now();
        let result = self.fetcher.fetch(req).await;
        let now = Timestamp::now();
        self.settle_budget(req, !known_good, result.is_err(), now);
        match result {
            Ok(token) => {
                self.metrics.token_requested("Ok", started.elapsed());
                *slot = Slot { token: Some(token.clone()), blocked: None, failures: 0 };
                Ok(Issued { token, fetched: true })
            }
            Err(failure) => {
                slot.failures += 1;
                let error = self.classify(req, failure, slot.failures, now);
                self.metrics.token_requested(error.reason(), started.elapsed());
                slot.blocked = Some(error.clone());
                Err(Refused { error, sent: true })
            }
        }
    }

    /// Re-establishes a 429 pause known from a credential's status (after a restart or a
    /// leader change), so that it holds even though this process never saw the 429.
    pub fn honour_pause(&self, url: &str, client_id: &str, until: Timestamp) {
        let mut pauses = self.pauses.lock().expect("pauses lock");
        let entry = pauses.entry((url.to_string(), client_id.to_string())).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Forgets clients with nothing worth keeping (expired tokens, no pending block).
    pub fn prune(&self, now: Timestamp) {
        let mut slots = self.slots.lock().expect("slots lock");
        slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.try_lock().map_or(true, |s| {
                    s.token.as_ref().is_some_and(|t| !t.is_expired(now))
                        || s.blocked.as_ref().and_then(Error::retry_at).is_some_and(|t| t > now)
                })
        });
        self.pauses.lock().expect("pauses lock").retain(|_, until| *until > now);
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
        let mut slots = self.slots.lock().expect("slots lock");
        slots.entry(key.clone()).or_default().clone()
    }

    fn check_pause(&self, req: &TokenRequest, now: Timestamp) -> Result<(), Error> {
        let pauses = self.pauses.lock().expect("pauses lock");
        match pauses.get(&(req.url.clone(), req.client_id.clone())) {
            Some(until) if *until > now => Err(Error::RateLimited {
                detail: "the token endpoint answered 429 Too Many Requests for this client".to_string(),
                until: *until,
            }),
            _ => Ok(()),
        }
    }

    fn reserve_budget(&self, req: &TokenRequest, now: Timestamp) -> Result<(), Error> {
        let mut budgets = self.budgets.lock().expect("budgets lock");
        let budget = budgets.entry(endpoint(&req.url)).or_default();
        forget_older_than_a_minute(&mut budget.failures, now);
        if budget.failures.len() + budget.in_flight >= self.config.failed_request_budget as usize {
            let limit = self.config.failed_request_budget as usize;
            // Spent by failures: wait until the oldest leaves the minute. Held by requests in
            // flight: look again shortly, they may well succeed.
            let until = match budget.failures.front() {
                Some(oldest) if budget.failures.len() >= limit => *oldest + SignedDuration::from_mins(1),
                _ => now + SignedDuration::from_secs(1),
            };
            return Err(Error::RateLimited {
                detail: format!(
                    "the operator's budget of {} failed token requests per minute for {} is spent, which protects the other clients of this endpoint from its cooldown",
                    self.config.failed_request_budget,
                    endpoint(&req.url)
                ),
                until,
            });
        }
        budget.in_flight += 1;
        Ok(())
    }

    fn settle_budget(&self, req: &TokenRequest, reserved: bool, failed: bool, now: Timestamp) {
        let mut budgets = self.budgets.lock().expect("budgets lock");
        let budget = budgets.entry(endpoint(&req.url)).or_default();
        if reserved {
            budget.in_flight = budget.in_flight.saturating_sub(1);
        }
        if failed {
            budget.failures.push_back(now);
        }
    }

    fn classify(&self, req: &TokenRequest, failure: Failure, failures: u32, now: Timestamp) -> Error {
        let backoff_until = || {
            let wait = schedule::backoff(failures, self.config.backoff_base, self.config.backoff_cap, rand::random());
            now + wait
        };
        match failure {
            Failure::InvalidClient(detail) => Error::InvalidClient {
                detail: format!(
                    "{detail}; fix the client id or secret in the client Secret (retried at once when it changes, else after {:#})",
                    self.config.invalid_client_retry
                ),
                retry_at: now + self.config.invalid_client_retry,
            },
            Failure::RateLimited { detail, until } => {
                self.honour_pause(&req.url, &req.client_id, until);
                Error::RateLimited { detail, until }
            }
            Failure::Unavailable(detail) => Error::TokenEndpointUnavailable { detail, retry_at: backoff_until() },
            Failure::InvalidResponse(detail) => Error::InvalidTokenResponse { detail, retry_at: backoff_until() },
            Failure::NotAllowed(detail) => Error::TokenUrlNotAllowed { url: req.url.clone(), detail },
        }
    }
}

/// May a cached token answer this caller?
fn acceptable(token: &Token, want: &Want, now: Timestamp) -> bool {
    let due = schedule::refresh_at(token.issued_at, token.expires_at, want.renew_before, 0.0, want.min_interval);
    now < due && !token.is_expired(now)
}

fn forget_older_than_a_minute(recent: &mut VecDeque<Timestamp>, now: Timestamp) {
    while recent.front().is_some_and(|t| now.duration_since(*t) >= SignedDuration::from_mins(1)) {
        recent.pop_front();
    }
}

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
                tokio::spawn(async move { b.token(&req("a"), Want::default()).await.unwrap() })
            })
            .collect();
        let mut fetched = 0;
        for c in calls {
            fetched += u32::from(c.await.unwrap().fetched);
        }
        assert_eq!(fetched, 1);
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 1);
        b.token(&req("b"), Want::default()).await.unwrap();
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 2, "another client is another request");
        let mut other_secret = req("a");
        other_secret.client_secret = Sensitive::new("rotated");
        b.token(&other_secret, Want::default()).await.unwrap();
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 3, "a rotated secret is another request");
    }

    #[tokio::test]
    async fn forced_renewal_bypasses_the_cache_once() {
        let b = broker(Scripted::ok());
        let first = b.token(&req("a"), Want::default()).await.unwrap().token;
        let forced = b.token(&req("a"), Want { force: true, ..Want::default() }).await.unwrap();
        assert!(forced.fetched);
        assert_ne!(forced.token.access_token, first.access_token);
        let again = b.token(&req("a"), Want::default()).await.unwrap();
        assert!(!again.fetched, "others are answered by the fresh token");
        assert_eq!(again.token.access_token, forced.token.access_token);
    }

    #[tokio::test]
    async fn a_429_pauses_the_client_until_retry_after() {
        let until = Timestamp::now() + SignedDuration::from_secs(120);
        let b = broker(Scripted::failing(1, Failure::RateLimited { detail: "429".into(), until }));
        let err = b.token(&req("a"), Want::default()).await.unwrap_err();
        assert_eq!(err, Refused { error: Error::RateLimited { detail: "429".into(), until }, sent: true });
        let err = b.token(&req("a"), Want::default()).await.unwrap_err();
        assert_eq!((err.error.reason(), err.sent), ("RateLimited", false));
        let mut other_secret = req("a");
        other_secret.client_secret = Sensitive::new("other");
        assert_eq!(b.token(&other_secret, Want::default()).await.unwrap_err().error.reason(), "RateLimited");
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 1, "no request inside the pause");
    }

    #[tokio::test]
    async fn a_restored_pause_is_honoured() {
        let b = broker(Scripted::ok());
        b.honour_pause(&req("a").url, "a", Timestamp::now() + SignedDuration::from_secs(60));
        assert_eq!(b.token(&req("a"), Want::default()).await.unwrap_err().error.reason(), "RateLimited");
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn invalid_clients_are_not_retried_until_the_secret_changes() {
        let b = broker(Scripted::failing(1, Failure::InvalidClient("HTTP 400: invalid_client".into())));
        assert_eq!(b.token(&req("a"), Want::default()).await.unwrap_err().error.reason(), "InvalidClient");
        assert_eq!(b.token(&req("a"), Want::default()).await.unwrap_err().error.reason(), "InvalidClient");
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 1);
        let mut fixed = req("a");
        fixed.client_secret = Sensitive::new("fixed");
        assert!(b.token(&fixed, Want::default()).await.is_ok());
    }

    #[tokio::test]
    async fn the_failed_request_budget_protects_the_endpoint() {
        let b = Broker::new(
            Scripted::failing(1000, Failure::InvalidClient("bad".into())),
            BrokerConfig { failed_request_budget: 3, ..BrokerConfig::default() },
            Arc::new(Metrics::default()),
        );
        for i in 0..10 {
            let _ = b.token(&req(&format!("broken-{i}")), Want::default()).await;
        }
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 3);
        let err = b.token(&req("healthy"), Want::default()).await.unwrap_err().error;
        assert!(matches!(&err, Error::RateLimited { detail, .. } if detail.contains("budget")), "{err}");

        // Concurrent requests cannot overshoot it either.
        let b = Arc::new(Broker::new(
            Scripted {
                delay: Duration::from_millis(50),
                ..Scripted::failing(1000, Failure::InvalidClient("bad".into()))
            },
            BrokerConfig { failed_request_budget: 3, ..BrokerConfig::default() },
            Arc::new(Metrics::default()),
        ));
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.token(&req(&format!("c-{i}")), Want::default()).await })
            })
            .collect();
        for c in calls {
            let _ = c.await.unwrap();
        }
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 3);
        let err = b.token(&req("healthy"), Want::default()).await.unwrap_err().error;
        assert!(matches!(&err, Error::RateLimited { detail, .. } if detail.contains("budget")), "{err}");
    }

    #[tokio::test]
    async fn transient_failures_back_off() {
        let b = broker(Scripted::failing(1, Failure::Unavailable("HTTP 503".into())));
        let err = b.token(&req("a"), Want::default()).await.unwrap_err().error;
        assert_eq!(err.reason(), "TokenEndpointUnavailable");
        let retry = err.retry_at().unwrap().duration_since(Timestamp::now());
        assert!(retry >= SignedDuration::from_millis(900) && retry <= SignedDuration::from_secs(2), "{retry:?}");
        assert_eq!(b.token(&req("a"), Want::default()).await.unwrap_err().error.reason(), "TokenEndpointUnavailable");
        assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 1, "no request during the backoff");
    }
}
