//! Test fixtures shared by the unit tests of several modules.

use jiff::{SignedDuration, Timestamp};

use crate::crd::{GroupDocsCredential, GroupDocsCredentialSpec};
use crate::redact::Sensitive;
use crate::target::IssuedFor;
use crate::token::Token;

/// Credential `viewer` of namespace `apps`, as the API server would hold it (with a uid).
pub fn credential(uid: &str) -> GroupDocsCredential {
    let mut cr = GroupDocsCredential::new("viewer", GroupDocsCredentialSpec::default());
    cr.metadata.namespace = Some("apps".into());
    cr.metadata.uid = Some(uid.into());
    cr
}

/// A day-long token issued at 2026-11-28T10:00:00Z.
pub fn token(value: &str) -> Token {
    let issued_at: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
    Token {
        access_token: Sensitive::new(value),
        token_type: "Bearer".into(),
        issued_at,
        expires_at: issued_at + SignedDuration::from_hours(24),
    }
}

pub fn issued_for() -> IssuedFor {
    IssuedFor {
        token_url: "https://api.groupdocs.cloud/connect/token".into(),
        client_id: "client".into(),
        scope: None,
        client_secret_version: "42".into(),
    }
}
