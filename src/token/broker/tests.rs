//! The broker against a scripted token endpoint.
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
    assert_eq!(b.token(&same_id_other_secret, Want::default(), "ns").await.unwrap_err().error.reason(), "RateLimited");
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
    assert!(matches!(&err, Error::RateLimited { detail, by: Limit::Budget, .. } if detail.contains("budget")), "{err}");

    // Concurrent requests cannot overshoot it either.
    let b = Arc::new(broker_with_budget(
        Scripted { delay: Duration::from_millis(50), ..Scripted::failing(1000, Failure::InvalidClient("bad".into())) },
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
async fn new_clients_wait_in_place_for_requests_in_flight_rather_than_minutes() {
    // A cold start: 20 new clients of one namespace at once, the namespace's share is 4.
    let b = Arc::new(broker_with_budget(Scripted { delay: Duration::from_millis(20), ..Scripted::ok() }, 10));
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.token(&req(&format!("new-{i}")), Want::default(), "ns").await })
        })
        .collect();
    for c in calls {
        assert!(c.await.unwrap().is_ok(), "no new client is sent away while others' requests are in flight");
    }
    assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 20);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_vendor_wide_burst_of_400s_stays_within_the_budget() {
    // Every client was working (valid tokens in place), then the vendor answers 400 to all.
    let b = Arc::new(broker_with_budget(
        Scripted { delay: Duration::from_millis(20), ..Scripted::failing(1000, Failure::InvalidClient("400".into())) },
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

#[test]
fn a_working_client_rejected_once_waits_a_share_of_its_remaining_lifetime() {
    let now = Timestamp::now();
    let hour = SignedDuration::from_hours(1);
    assert_eq!(invalid_client_hold(hour, None, now), hour);
    assert_eq!(invalid_client_hold(hour, Some(now + SignedDuration::from_mins(20)), now), SignedDuration::from_mins(5));
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
    assert_eq!(b.token(&req("a"), Want::default(), "ns").await.unwrap_err().error.reason(), "TokenEndpointUnavailable");
    assert_eq!(b.fetcher.calls.load(Ordering::SeqCst), 1, "no request during the backoff");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
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
