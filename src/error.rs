//! The one error type. Every variant is a condition reason, a metric label and an event
//! reason, so a failure reads the same in `kubectl describe`, in status and in Prometheus.
//! No variant ever holds a client secret or a token.

use jiff::Timestamp;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("client Secret {name:?} not found in namespace {namespace:?}")]
    SecretNotFound { namespace: String, name: String },

    #[error(
        "client Secret {name:?} lacks the label groupdocs.cloud/client-credentials=true that lets the operator read it; run: kubectl label secret {name} -n {namespace} groupdocs.cloud/client-credentials=true"
    )]
    SecretNotLabelled { namespace: String, name: String },

    #[error("client Secret {name:?} has no non-empty key {key:?}")]
    SecretKeyMissing { name: String, key: String },

    #[error("the token endpoint rejected the client credentials: {detail}")]
    InvalidClient { detail: String, retry_at: Timestamp },

    #[error("rate limited: {detail}; next token request not before {until}")]
    RateLimited { detail: String, until: Timestamp, by: Limit },

    #[error("token endpoint unavailable: {detail}")]
    TokenEndpointUnavailable { detail: String, retry_at: Timestamp },

    #[error("invalid token response: {detail}")]
    InvalidTokenResponse { detail: String, retry_at: Timestamp },

    #[error("token URL {url:?} is not allowed: {detail}")]
    TokenUrlNotAllowed { url: String, detail: String },

    #[error(
        "Secret {name:?} already exists and is not owned by this GroupDocsCredential; delete it or choose another spec.target.name"
    )]
    TargetConflict { name: String },

    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    #[error("Kubernetes API error: {0}")]
    KubeApi(#[source] KubeError),

    /// Between reading the target Secret and replacing it, someone else changed it; the next
    /// reconcile starts from the new version.
    #[error("the target Secret {name:?} changed while it was being updated; retrying")]
    TargetChanged { name: String },

    /// Some namespaces a cluster credential selects have no current token; the first one
    /// (by name) is named, `status.failedNamespaces` lists more.
    #[error("{failed} of {selected} selected namespaces have no current token; first {namespace}: {message}")]
    NamespacesFailed {
        failed: usize,
        selected: usize,
        namespace: String,
        reason: &'static str,
        message: String,
        stalled: bool,
    },

    /// A cluster credential whose selector and list match no namespace.
    #[error("no namespace matches spec.namespaceSelector or spec.namespaces")]
    NoNamespaceSelected,

    /// A reconcile panicked: a bug, reported on the one credential it hit.
    #[error("internal error (a bug; please report it): {0}")]
    Internal(String),

    /// A failure recorded in status by an earlier process (before a restart or failover), held
    /// until its retry time so the new process sends nothing the old one would not have.
    #[error("{message}")]
    Held { kind: TokenFailure, message: String, retry_at: Timestamp },
}

/// Who imposed a [`Error::RateLimited`] pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The token endpoint answered 429: recorded as `status.rateLimitedUntil`.
    Endpoint,
    /// The operator's own failed-request budget for the endpoint, spent by failures.
    Budget,
    /// The budget is held by requests in flight: nothing failed, look again shortly.
    InFlight,
}

/// The kinds of failed token request: what status records and a restarted operator holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    InvalidClient,
    RateLimited,
    TokenEndpointUnavailable,
    InvalidTokenResponse,
}

impl TokenFailure {
    const ALL: [TokenFailure; 4] = [
        TokenFailure::InvalidClient,
        TokenFailure::RateLimited,
        TokenFailure::TokenEndpointUnavailable,
        TokenFailure::InvalidTokenResponse,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            TokenFailure::InvalidClient => "InvalidClient",
            TokenFailure::RateLimited => "RateLimited",
            TokenFailure::TokenEndpointUnavailable => "TokenEndpointUnavailable",
            TokenFailure::InvalidTokenResponse => "InvalidTokenResponse",
        }
    }

    /// The kind whose condition reason is `reason`, read back from status.
    pub fn from_reason(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.reason() == reason)
    }
}

impl Error {
    /// The condition reason (PascalCase), also used as metric label and event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::SecretNotFound { .. } => "SecretNotFound",
            Error::SecretNotLabelled { .. } => "SecretNotLabelled",
            Error::SecretKeyMissing { .. } => "SecretKeyMissing",
            Error::InvalidClient { .. } => TokenFailure::InvalidClient.reason(),
            Error::RateLimited { .. } => TokenFailure::RateLimited.reason(),
            Error::TokenEndpointUnavailable { .. } => TokenFailure::TokenEndpointUnavailable.reason(),
            Error::InvalidTokenResponse { .. } => TokenFailure::InvalidTokenResponse.reason(),
            Error::TokenUrlNotAllowed { .. } => "TokenUrlNotAllowed",
            Error::TargetConflict { .. } => "TargetConflict",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::KubeApi(_) | Error::TargetChanged { .. } => "KubernetesApiError",
            Error::Internal(_) => "InternalError",
            Error::Held { kind, .. } => kind.reason(),
            Error::NamespacesFailed { reason, .. } => reason,
            Error::NoNamespaceSelected => "NoNamespaceSelected",
        }
    }

    /// True when only a person can fix it (the `Stalled` condition); false when retrying may.
    pub fn is_stalled(&self) -> bool {
        matches!(
            self,
            Error::SecretNotFound { .. }
                | Error::SecretNotLabelled { .. }
                | Error::SecretKeyMissing { .. }
                | Error::InvalidClient { .. }
                | Error::TokenUrlNotAllowed { .. }
                | Error::TargetConflict { .. }
                | Error::InvalidSpec(_)
                | Error::Internal(_)
                | Error::Held { kind: TokenFailure::InvalidClient, .. }
                | Error::NamespacesFailed { stalled: true, .. }
                | Error::NoNamespaceSelected
        )
    }

    /// The earliest time a token request may be retried, where the failure dictates one.
    pub fn retry_at(&self) -> Option<Timestamp> {
        match self {
            Error::InvalidClient { retry_at, .. }
            | Error::TokenEndpointUnavailable { retry_at, .. }
            | Error::InvalidTokenResponse { retry_at, .. }
            | Error::Held { retry_at, .. } => Some(*retry_at),
            Error::RateLimited { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// True for failures of a token request (as opposed to configuration or Kubernetes).
    pub fn is_token_failure(&self) -> bool {
        matches!(
            self,
            Error::Held { .. }
                | Error::InvalidClient { .. }
                | Error::RateLimited { .. }
                | Error::TokenEndpointUnavailable { .. }
                | Error::InvalidTokenResponse { .. }
        )
    }
}

/// A [`kube::Error`] kept whole as the source of [`Error::KubeApi`] (shared, so that errors
/// stay cheap to clone; equal when they read the same, for tests).
#[derive(Debug, Clone)]
pub struct KubeError(std::sync::Arc<kube::Error>);

impl KubeError {
    pub fn inner(&self) -> &kube::Error {
        &self.0
    }
}

impl std::fmt::Display for KubeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for KubeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for KubeError {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::KubeApi(KubeError(std::sync::Arc::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_pascal_case_and_stalled_matches_design() {
        let t = Timestamp::UNIX_EPOCH;
        let all = [
            Error::SecretNotFound { namespace: "n".into(), name: "s".into() },
            Error::SecretNotLabelled { namespace: "n".into(), name: "s".into() },
            Error::SecretKeyMissing { name: "s".into(), key: "k".into() },
            Error::InvalidClient { detail: "d".into(), retry_at: t },
            Error::RateLimited { detail: "d".into(), until: t, by: Limit::Endpoint },
            Error::TokenEndpointUnavailable { detail: "d".into(), retry_at: t },
            Error::InvalidTokenResponse { detail: "d".into(), retry_at: t },
            Error::TokenUrlNotAllowed { url: "u".into(), detail: "d".into() },
            Error::TargetConflict { name: "t".into() },
            Error::InvalidSpec("x".into()),
            Error::from(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::TargetChanged { name: "t".into() },
            Error::Internal("x".into()),
            Error::NoNamespaceSelected,
        ];
        for e in &all {
            let r = e.reason();
            assert!(r.chars().next().unwrap().is_ascii_uppercase() && r.chars().all(|c| c.is_ascii_alphanumeric()));
        }
        let stalled: Vec<_> = all.iter().filter(|e| e.is_stalled()).map(Error::reason).collect();
        assert_eq!(
            stalled,
            [
                "SecretNotFound",
                "SecretNotLabelled",
                "SecretKeyMissing",
                "InvalidClient",
                "TokenUrlNotAllowed",
                "TargetConflict",
                "InvalidSpec",
                "InternalError",
                "NoNamespaceSelected"
            ]
        );
        let in_namespaces = |reason, stalled| Error::NamespacesFailed {
            failed: 1,
            selected: 2,
            namespace: "a".into(),
            reason,
            message: "m".into(),
            stalled,
        };
        let conflict = in_namespaces("TargetConflict", true);
        assert_eq!((conflict.reason(), conflict.is_stalled()), ("TargetConflict", true));
        assert!(!in_namespaces("KubernetesApiError", false).is_stalled());
        // A failure held from status reads and counts as the failure it was.
        for e in all.iter().filter(|e| e.is_token_failure()) {
            let kind = TokenFailure::from_reason(e.reason()).expect("every token failure has a kind");
            let held = Error::Held { kind, message: e.to_string(), retry_at: t };
            assert_eq!((held.reason(), held.is_stalled()), (e.reason(), e.is_stalled()));
            assert_eq!(held.to_string(), e.to_string());
        }
        assert_eq!(all.iter().filter(|e| e.is_token_failure()).count(), TokenFailure::ALL.len());
        assert_eq!(TokenFailure::from_reason("InvalidSpec"), None);
    }

    #[test]
    fn kube_errors_are_kept_as_the_source() {
        use std::error::Error as _;
        let e = Error::from(kube::Error::LinesCodecMaxLineLengthExceeded);
        let source = e.source().and_then(|s| s.downcast_ref::<KubeError>()).expect("the kube error is the source");
        assert!(matches!(source.inner(), kube::Error::LinesCodecMaxLineLengthExceeded));
        assert!(e.to_string().starts_with("Kubernetes API error: "));
    }

    #[test]
    fn not_labelled_message_gives_the_kubectl_command() {
        let e = Error::SecretNotLabelled { namespace: "apps".into(), name: "gd".into() };
        assert!(e.to_string().contains("kubectl label secret gd -n apps groupdocs.cloud/client-credentials=true"));
    }
}
