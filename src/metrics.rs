//! Prometheus metrics (OpenMetrics text on `/metrics`). Labels carry namespaces, names and
//! reasons, never a client id, a secret or a token.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

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

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    reconcile_duration: Histogram,
    token_requests: Family<ResultLabel, Counter>,
    token_request_duration: Histogram,
    pub token_expiry: Family<CredentialLabel, Gauge>,
    pub rate_limited_until: Family<CredentialLabel, Gauge>,
    pub credentials: Family<ReadyLabel, Gauge>,
    pub credential_ready: Family<CredentialLabel, Gauge>,
    status_writes: Counter,
    panics: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
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
            reconciles,
            reconcile_duration,
            token_requests,
            token_request_duration,
            token_expiry,
            rate_limited_until,
            credentials,
            credential_ready,
            status_writes,
            panics,
        }
    }
}

impl Metrics {
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

#[cfg(test)]
mod tests {
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
}
