//! Prometheus metrics (OpenMetrics text on `/metrics`). Labels carry namespaces, names and
//! reasons, never a client id, a secret or a token.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::crd::GroupDocsCredentialStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabel {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabel {
    pub status: String,
}

/// Which per-credential series `/metrics` carries (`--credential-metrics`). Each series costs
/// about 100 bytes of every scrape: two per credential is 20 MB at 100,000 credentials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialMetrics {
    /// The token's expiry and the Ready gauge for every credential.
    #[default]
    All,
    /// Both only for credentials that need attention: not Ready, rate limited, renewal
    /// overdue ([`RENEWAL_OVERDUE_AFTER`] past `nextRefreshTime`), or a token that expires
    /// within [`EXPIRY_WINDOW`] (also a suspended credential's, which is never renewed), so
    /// the expiry alerts, whose threshold is below that window, fire as with `all`.
    Unhealthy,
    /// No per-credential series: the counts by Ready status and the earliest expiry.
    None,
}

/// How long past its planned renewal a token counts as overdue for [`CredentialMetrics::Unhealthy`]
/// (a renewal runs at `nextRefreshTime`; a busy operator may start it somewhat later).
pub const RENEWAL_OVERDUE_AFTER: SignedDuration = SignedDuration::from_mins(5);

/// A token that expires within this window is described by [`CredentialMetrics::Unhealthy`]
/// (the chart's expiry alert fires 15 minutes before by default; a healthy day-long token is
/// renewed 8 hours before).
pub const EXPIRY_WINDOW: SignedDuration = SignedDuration::from_hours(1);

pub struct Metrics {
    registry: Registry,
    credential_metrics: CredentialMetrics,
    reconciles: Family<ResultLabel, Counter>,
    reconcile_duration: Histogram,
    token_requests: Family<ResultLabel, Counter>,
    token_request_duration: Histogram,
    pub token_expiry: Family<CredentialLabel, Gauge>,
    pub rate_limited_until: Family<CredentialLabel, Gauge>,
    pub credentials: Family<ReadyLabel, Gauge>,
    pub credential_ready: Family<CredentialLabel, Gauge>,
    earliest_expiry: Gauge,
    status_writes: Counter,
    panics: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(CredentialMetrics::default())
    }
}

impl Metrics {
    pub fn new(credential_metrics: CredentialMetrics) -> Self {
        let mut registry = Registry::with_prefix("groupdocs_token_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register("reconciles", "Reconciles by outcome (a condition reason, or Ok)", reconciles.clone());
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register("reconcile_duration_seconds", "Time spent in one reconcile", reconcile_duration.clone());
        let token_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "token_requests",
            "HTTP requests sent to token endpoints, by result (Ok or a condition reason)",
            token_requests.clone(),
        );
        let token_request_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "token_request_duration_seconds",
            "Duration of token endpoint requests",
            token_request_duration.clone(),
        );
        let token_expiry = Family::<CredentialLabel, Gauge>::default();
        registry.register(
            "token_expiry_timestamp_seconds",
            "Unix time at which the token in the credential's target Secret expires",
            token_expiry.clone(),
        );
        let rate_limited_until = Family::<CredentialLabel, Gauge>::default();
        registry.register(
            "rate_limited_until_timestamp_seconds",
            "Unix time before which no token request is sent for the credential's client",
            rate_limited_until.clone(),
        );
        let credentials = Family::<ReadyLabel, Gauge>::default();
        registry.register("credentials", "GroupDocsCredentials by Ready condition status", credentials.clone());
        // Per credential, so that a not-Ready alert names the credential (the count above
        // cannot tell one credential stuck for an hour from several flapping).
        let credential_ready = Family::<CredentialLabel, Gauge>::default();
        registry.register(
            "credential_ready",
            "1 when the credential's Ready condition is True, else 0",
            credential_ready.clone(),
        );
        let earliest_expiry = Gauge::default();
        registry.register(
            "token_expiry_earliest_timestamp_seconds",
            "Unix time at which the first of the tokens in target Secrets expires (whatever --credential-metrics says)",
            earliest_expiry.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "status_writes",
            "Status updates written to GroupDocsCredentials (a no-op reconcile writes none)",
            status_writes.clone(),
        );
        let panics = Counter::default();
        registry.register(
            "reconcile_panics",
            "Reconciles that panicked (a bug; the credential is reported as InternalError)",
            panics.clone(),
        );
        registry.register("build", "Build information", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        Metrics {
            registry,
            credential_metrics,
            reconciles,
            reconcile_duration,
            token_requests,
            token_request_duration,
            token_expiry,
            rate_limited_until,
            credentials,
            credential_ready,
            earliest_expiry,
            status_writes,
            panics,
        }
    }
}

impl Metrics {
    /// Recomputes the gauges that describe credentials from every cached one, so that a
    /// deleted credential leaves no stale series behind.
    pub fn describe_credentials<'a>(&self, credentials: impl Iterator<Item = Described<'a>>, now: Timestamp) {
        self.token_expiry.clear();
        self.rate_limited_until.clear();
        self.credentials.clear();
        self.credential_ready.clear();
        let mut counts: [(&str, i64); 3] = [("True", 0), ("False", 0), ("Unknown", 0)];
        let mut earliest: Option<Timestamp> = None;
        for Described { namespace, name, ready, status } in credentials {
            if let Some(count) = counts.iter_mut().find(|(s, _)| *s == ready) {
                count.1 += 1;
            }
            let expires_at = status.and_then(|s| s.expires_at.as_ref()).map(|t| t.0);
            if let Some(t) = expires_at.filter(|t| *t > now) {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
            if !self.per_credential(status, ready, now) {
                continue;
            }
            let label = CredentialLabel { namespace: namespace.to_string(), name: name.to_string() };
            if let Some(t) = expires_at {
                self.token_expiry.get_or_create(&label).set(t.as_second());
            }
            if let Some(t) = status.and_then(|s| s.rate_limited_until.as_ref()).filter(|t| t.0 > now) {
                self.rate_limited_until.get_or_create(&label).set(t.0.as_second());
            }
            self.credential_ready.get_or_create(&label).set(i64::from(ready == "True"));
        }
        for (status, count) in counts {
            if count > 0 {
                self.credentials.get_or_create(&ReadyLabel { status: status.to_string() }).set(count);
            }
        }
        self.earliest_expiry.set(earliest.map_or(0, Timestamp::as_second));
    }

    fn per_credential(&self, status: Option<&GroupDocsCredentialStatus>, ready: &str, now: Timestamp) -> bool {
        match self.credential_metrics {
            CredentialMetrics::All => true,
            CredentialMetrics::None => false,
            CredentialMetrics::Unhealthy => ready != "True" || status.is_some_and(|s| needs_attention(s, now)),
        }
    }

    pub fn reconciled(&self, result: &str, took: Duration) {
        self.reconciles.get_or_create(&ResultLabel { result: result.to_string() }).inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    pub fn panicked(&self) {
        self.panics.inc();
    }

    pub fn token_requested(&self, result: &str, took: Duration) {
        self.token_requests.get_or_create(&ResultLabel { result: result.to_string() }).inc();
        self.token_request_duration.observe(took.as_secs_f64());
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A credential as the gauges see it.
pub struct Described<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The status of its `Ready` condition ([`ready_status`]).
    pub ready: &'a str,
    pub status: Option<&'a GroupDocsCredentialStatus>,
}

/// `True`, `False`, or `Unknown` when there is no `Ready` condition.
pub fn ready_status(status: &GroupDocsCredentialStatus) -> &str {
    status.conditions.iter().find(|c| c.type_ == crate::conditions::READY).map_or("Unknown", |c| c.status.as_str())
}

/// Rate limited, its renewal overdue, or its token expires soon (or has expired).
fn needs_attention(status: &GroupDocsCredentialStatus, now: Timestamp) -> bool {
    let overdue =
        status.next_refresh_time.as_ref().is_some_and(|t| crate::schedule::add(t.0, RENEWAL_OVERDUE_AFTER) < now);
    let limited = status.rate_limited_until.as_ref().is_some_and(|t| t.0 > now);
    let expiring = status.expires_at.as_ref().is_some_and(|t| t.0 < crate::schedule::add(now, EXPIRY_WINDOW));
    overdue || limited || expiring
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    #[test]
    fn encodes_openmetrics_with_counts() {
        let m = Metrics::default();
        m.token_requested("Ok", Duration::from_millis(20));
        m.token_requested("InvalidClient", Duration::from_millis(20));
        m.reconciled("Ok", Duration::from_millis(2));
        let text = m.encode();
        assert!(text.contains("groupdocs_token_operator_token_requests_total{result=\"Ok\"} 1"), "{text}");
        assert!(text.contains("groupdocs_token_operator_reconciles_total{result=\"Ok\"} 1"));
        assert!(text.contains("groupdocs_token_operator_build_info{version="));
        assert!(text.ends_with("# EOF\n"));
    }

    const NOW: i64 = 100_000;

    /// Times in seconds from [`NOW`]; no `next_refresh` when `None`.
    fn status(ready: &str, expires: i64, next_refresh: Option<i64>) -> GroupDocsCredentialStatus {
        let at = |s: i64| Some(Time(Timestamp::from_second(NOW + s).unwrap()));
        GroupDocsCredentialStatus {
            conditions: vec![Condition {
                type_: crate::conditions::READY.into(),
                status: ready.into(),
                reason: "TokenIssued".into(),
                message: String::new(),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            expires_at: at(expires),
            next_refresh_time: next_refresh.and_then(at),
            ..Default::default()
        }
    }

    /// healthy (renews in 6 h), not Ready with an expired token, renewal 10 minutes overdue,
    /// suspended (never renewed) with 30 minutes left, no status yet.
    fn scrape(mode: CredentialMetrics) -> String {
        let m = Metrics::new(mode);
        let healthy = status("True", 14 * 3600, Some(6 * 3600));
        let failing = status("False", -100, Some(-600));
        let overdue = status("True", 7 * 3600, Some(-600));
        let suspended = status("True", 1800, None);
        let creds = [
            ("a", "healthy", Some(&healthy)),
            ("a", "failing", Some(&failing)),
            ("b", "overdue", Some(&overdue)),
            ("b", "suspended", Some(&suspended)),
            ("b", "new", None),
        ];
        let described = creds.into_iter().map(|(namespace, name, status)| Described {
            namespace,
            name,
            ready: status.map_or("Unknown", ready_status),
            status,
        });
        m.describe_credentials(described, Timestamp::from_second(NOW).unwrap());
        m.encode()
    }

    fn series(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("groupdocs_token_operator_{name}{{")))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_mode_keeps_the_counts_and_the_earliest_expiry() {
        for mode in [CredentialMetrics::All, CredentialMetrics::Unhealthy, CredentialMetrics::None] {
            let text = scrape(mode);
            assert!(text.contains("groupdocs_token_operator_credentials{status=\"True\"} 3"), "{mode:?}: {text}");
            assert!(text.contains("groupdocs_token_operator_credentials{status=\"False\"} 1"), "{mode:?}");
            assert!(text.contains("groupdocs_token_operator_credentials{status=\"Unknown\"} 1"), "{mode:?}");
            let earliest = format!("groupdocs_token_operator_token_expiry_earliest_timestamp_seconds {}", NOW + 1800);
            assert!(text.contains(&earliest), "{mode:?}: the earliest of the tokens not yet expired: {text}");
        }
    }

    #[test]
    fn all_describes_every_credential() {
        let text = scrape(CredentialMetrics::All);
        assert_eq!(series(&text, "credential_ready").len(), 5, "{text}");
        assert_eq!(series(&text, "token_expiry_timestamp_seconds").len(), 4, "the new one has no token yet");
    }

    #[test]
    fn unhealthy_describes_only_credentials_that_need_attention() {
        let text = scrape(CredentialMetrics::Unhealthy);
        let ready = series(&text, "credential_ready");
        assert_eq!(ready.len(), 4, "{text}");
        assert!(!ready.iter().any(|l| l.contains("name=\"healthy\"")), "{ready:?}");
        assert!(ready.iter().any(|l| l.contains("name=\"failing\"") && l.ends_with(" 0")));
        assert!(ready.iter().any(|l| l.contains("name=\"new\"") && l.ends_with(" 0")), "no status yet: not Ready");
        let expiry = series(&text, "token_expiry_timestamp_seconds");
        assert!(
            expiry.iter().any(|l| l.contains("name=\"overdue\"")),
            "an overdue renewal keeps its expiry: {expiry:?}"
        );
        assert!(
            expiry.iter().any(|l| l.contains("name=\"suspended\"")),
            "a token expiring within the hour is described, renewed or not: {expiry:?}"
        );
        assert_eq!(expiry.len(), 3, "{expiry:?}");
    }

    #[test]
    fn none_describes_no_credential() {
        let text = scrape(CredentialMetrics::None);
        assert!(
            series(&text, "credential_ready").is_empty() && series(&text, "token_expiry_timestamp_seconds").is_empty(),
            "{text}"
        );
    }
}
