//! Obtaining GroupDocs access tokens: the wire format ([`response`], [`retry_after`]), the
//! HTTP client ([`client`]) and the broker that shares, caches and rations requests
//! ([`broker`]).

pub mod broker;
pub mod budget;
pub mod client;
pub mod response;
pub mod retry_after;

use jiff::{SignedDuration, Timestamp};

use crate::redact::Sensitive;

/// How the client credentials travel to the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum ClientAuth {
    /// Form fields `client_id` and `client_secret`, as GroupDocs documents.
    #[default]
    Post,
    /// HTTP Basic authentication (RFC 6749 section 2.3.1).
    Basic,
}

/// Everything a token request needs. Two requests that compare equal may share one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub url: String,
    pub client_id: String,
    pub client_secret: Sensitive,
    pub scope: Option<String>,
}

/// An access token and what is known of its lifetime.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub access_token: Sensitive,
    pub token_type: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What is known of a token without holding it: enough for status and scheduling. The watch
/// cache keeps these rather than tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    pub fingerprint: String,
    pub token_type: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl TokenFacts {
    pub fn lifetime(&self) -> SignedDuration {
        self.expires_at.duration_since(self.issued_at)
    }
}

impl Token {
    pub fn lifetime(&self) -> SignedDuration {
        self.expires_at.duration_since(self.issued_at)
    }

    pub fn facts(&self) -> TokenFacts {
        TokenFacts {
            fingerprint: self.access_token.fingerprint(),
            token_type: self.token_type.clone(),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
        }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    /// The `Authorization` header value: `Bearer <token>`.
    pub fn authorization(&self) -> Sensitive {
        let scheme = if self.token_type.eq_ignore_ascii_case("bearer") { "Bearer" } else { &self.token_type };
        Sensitive::new(format!("{scheme} {}", self.access_token.expose()))
    }
}
