//! The HTTP side of a token request: OAuth 2.0 `client_credentials`, form-encoded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::policy::TokenUrlPolicy;

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
    /// Decides which resolved addresses a request may go to (see [`PolicyResolver`]).
    pub policy: Option<TokenUrlPolicy>,
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
}

impl HttpTokenClient {
    /// Builds the client. Proxies come from `HTTPS_PROXY`/`NO_PROXY`; redirects are never
    /// followed (a redirected credential request could hand the secret to another host).
    /// With a policy, names are resolved by a [`PolicyResolver`]: a name that resolves to an
    /// address the policy refuses is never connected to. (Literal IPs are not resolved; the
    /// policy's `check` judges them before a request is made.)
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
        if let Some(policy) = &config.policy {
            builder = builder.dns_resolver(PolicyResolver::new(policy.clone(), config.connect_timeout));
        }
        let http = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(HttpTokenClient { http, auth: config.auth })
    }

    async fn send(&self, req: &TokenRequest) -> Result<Token, Failure> {
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

/// A transport error as text without the URL's query or anything request-specific. A name
/// the [`PolicyResolver`] refused is [`Failure::NotAllowed`]; everything else is
/// [`Failure::Unavailable`].
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
        match s.downcast_ref::<ResolveError>() {
            Some(refused @ ResolveError::NotAllowed { .. }) => return Failure::NotAllowed(refused.to_string()),
            Some(timed_out @ ResolveError::TimedOut { .. }) => return Failure::Unavailable(timed_out.to_string()),
            Some(ResolveError::Lookup { .. }) | None => {}
        }
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        Failure::Unavailable(kind.to_string())
    } else {
        Failure::Unavailable(format!("{kind}: {cause}"))
    }
}

/// The token client's DNS resolver: `tokio::net::lookup_host` under a timeout, and the whole
/// answer refused when any address in it is one the policy refuses
/// ([`TokenUrlPolicy::check_address`]). Because reqwest connects to exactly these addresses,
/// the address checked is the address connected to; a DNS answer that changes between a
/// check and the connection cannot slip through.
///
/// The names of the configured proxies (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, as reqwest
/// reads them) are resolved without the check: a proxy is the administrator's choice and
/// usually sits on a private address. Through a proxy, the proxy resolves the token host.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    policy: TokenUrlPolicy,
    timeout: Duration,
    proxies: Arc<Vec<String>>,
}

/// Why [`PolicyResolver`] gave no addresses.
#[derive(Debug)]
pub enum ResolveError {
    /// An address in the answer is refused by the policy; `why` names it.
    NotAllowed { host: String, why: String },
    /// No answer within the timeout.
    TimedOut { host: String, after: Duration },
    /// The lookup itself failed (no such name, no DNS server...).
    Lookup { host: String, source: std::io::Error },
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::NotAllowed { host, why } => write!(f, "{host} resolves to {why}"),
            ResolveError::TimedOut { host, after } => {
                write!(f, "the DNS lookup of {host} timed out after {}", seconds_or_millis(*after))
            }
            ResolveError::Lookup { host, .. } => write!(f, "the DNS lookup of {host} failed"),
        }
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResolveError::Lookup { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn seconds_or_millis(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{} s", d.as_secs()) } else { format!("{} ms", d.as_millis()) }
}

impl PolicyResolver {
    pub fn new(policy: TokenUrlPolicy, timeout: Duration) -> Self {
        PolicyResolver { policy, timeout, proxies: Arc::new(proxy_hosts(|name| std::env::var(name).ok())) }
    }

    /// The addresses of `host` (port 0: reqwest sets the URL's), all of them allowed.
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        self.checked(host, tokio::net::lookup_host((host, 0))).await
    }

    /// [`PolicyResolver::lookup`] with the DNS query `query` (replaced in tests).
    async fn checked<I: Iterator<Item = SocketAddr>>(
        &self,
        host: &str,
        query: impl std::future::Future<Output = std::io::Result<I>>,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let answer = tokio::time::timeout(self.timeout, query)
            .await
            .map_err(|_| ResolveError::TimedOut { host: host.to_string(), after: self.timeout })?
            .map_err(|source| ResolveError::Lookup { host: host.to_string(), source })?;
        let addrs: Vec<SocketAddr> = answer.collect();
        if !self.proxies.iter().any(|p| p.eq_ignore_ascii_case(host.trim_end_matches('.'))) {
            for addr in &addrs {
                self.policy
                    .check_address(addr.ip())
                    .map_err(|why| ResolveError::NotAllowed { host: host.to_string(), why })?;
            }
        }
        Ok(addrs)
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolver.lookup(&host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Host names of the proxies reqwest takes from the environment (`var` reads a variable).
fn proxy_hosts(var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .filter_map(|name| var(name))
        .filter_map(|value| {
            let value = value.trim();
            let url = if value.contains("://") { value.to_string() } else { format!("http://{value}") };
            match url::Url::parse(&url).ok()?.host()? {
                // Addresses are never resolved; a non-http scheme's IP reads as a domain here.
                url::Host::Domain(d) if d.parse::<std::net::IpAddr>().is_err() => {
                    Some(d.trim_end_matches('.').to_ascii_lowercase())
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
