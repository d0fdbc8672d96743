//! The HTTP side of a token request: OAuth 2.0 `client_credentials`, form-encoded.

use std::time::Duration;

use jiff::Timestamp;

use super::broker::Fetch;
use super::response::{self, Failure};
use super::{ClientAuth, Token, TokenRequest};

/// Token responses are about 1-2 KiB; anything beyond this is not a token response.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub auth: ClientAuth,
    /// PEM bundle of extra CA certificates trusted besides the system's.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Decides which resolved addresses a request may go to.
    pub policy: Option<crate::policy::TokenUrlPolicy>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            auth: ClientAuth::Post,
            extra_ca_pem: None,
            policy: None,
        }
    }
}

pub struct HttpTokenClient {
    http: reqwest::Client,
    auth: ClientAuth,
    policy: Option<crate::policy::TokenUrlPolicy>,
}

impl HttpTokenClient {
    /// Builds the client. Proxies come from `HTTPS_PROXY`/`NO_PROXY`; redirects are never
    /// followed (a redirected credential request could hand the secret to another host).
    pub fn new(config: &ClientConfig) -> Result<Self, String> {
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("groupdocs-token-operator/", env!("CARGO_PKG_VERSION")))
            .https_only(false);
        if let Some(pem) = &config.extra_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("extra CA bundle: {e}"))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(HttpTokenClient { http, auth: config.auth, policy: config.policy.clone() })
    }

    /// Refuses endpoints whose name resolves to an address the policy forbids. (The HTTP
    /// client resolves again; a DNS answer that changes in between is not caught.)
    async fn check_resolved(&self, url: &str) -> Result<(), Failure> {
        let Some(policy) = &self.policy else { return Ok(()) };
        let Ok(url) = url::Url::parse(url) else { return Ok(()) };
        let (Some(url::Host::Domain(host)), Some(port)) = (url.host(), url.port_or_known_default()) else {
            return Ok(());
        };
        // A failed lookup is left to the request itself, which reports it as unavailable.
        let Ok(addrs) = tokio::net::lookup_host((host, port)).await else { return Ok(()) };
        for addr in addrs {
            policy.check_address(addr.ip()).map_err(|e| Failure::NotAllowed(format!("{host} resolves to {e}")))?;
        }
        Ok(())
    }

    async fn send(&self, req: &TokenRequest) -> Result<Token, Failure> {
        self.check_resolved(&req.url).await?;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(scope) = req.scope.as_deref().filter(|s| !s.is_empty()) {
            form.push(("scope", scope));
        }
        let mut builder = self.http.post(&req.url).header(reqwest::header::ACCEPT, "application/json");
        match self.auth {
            ClientAuth::Post => {
                form.push(("client_id", &req.client_id));
                form.push(("client_secret", req.client_secret.expose()));
            }
            ClientAuth::Basic => {
                builder =
                    builder.basic_auth(form_encode(&req.client_id), Some(form_encode(req.client_secret.expose())));
            }
        }
        let mut resp = builder.form(&form).send().await.map_err(|e| transport_failure(&e))?;
        let status = resp.status().as_u16();
        let retry_after =
            resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport_failure(&e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Failure::InvalidResponse(format!(
                    "HTTP {status} with a body larger than {} KiB",
                    MAX_BODY / 1024
                )));
            }
            body.extend_from_slice(&chunk);
        }
        response::parse(status, retry_after.as_deref(), &body, Timestamp::now(), &req.client_secret)
    }
}

impl Fetch for HttpTokenClient {
    async fn fetch(&self, req: &TokenRequest) -> Result<Token, Failure> {
        self.send(req).await
    }
}

/// RFC 6749 section 2.3.1: Basic credentials are form-encoded before base64.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A transport error as text without the URL's query or anything request-specific.
fn transport_failure(e: &reqwest::Error) -> Failure {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read"
    } else {
        "request failed"
    };
    // The source chain says why (refused, reset, certificate...) and never holds the form body.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        Failure::Unavailable(kind.to_string())
    } else {
        Failure::Unavailable(format!("{kind}: {cause}"))
    }
}
