//! Which token URLs the operator may send client secrets to.

use std::net::IpAddr;

use url::{Host, Url};

use crate::error::Error;

pub const DEFAULT_ALLOWED: &str = "https://api.groupdocs.cloud/";

#[derive(Clone, Debug)]
pub struct TokenUrlPolicy {
    allowed: Vec<Url>,
    allow_http_loopback: bool,
    allow_private_networks: bool,
}

impl TokenUrlPolicy {
    /// `allowed` are URL prefixes such as `https://api.groupdocs.cloud/`.
    pub fn new(allowed: &[String], allow_http_loopback: bool, allow_private_networks: bool) -> Result<Self, String> {
        let allowed = allowed
            .iter()
            .map(|p| Url::parse(p.trim()).map_err(|e| format!("--allowed-token-url {p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TokenUrlPolicy { allowed, allow_http_loopback, allow_private_networks })
    }

    /// Accepts `url` or says why not. Rules: https only (plain http only for loopback hosts
    /// with `--allow-http-loopback`); no user info or fragment; and the URL must fall under an
    /// allowed prefix (same scheme, host and port, path beneath the prefix's path). With
    /// `--allow-http-loopback`, loopback URLs are allowed without being listed, for development.
    pub fn check(&self, raw: &str) -> Result<Url, Error> {
        let deny = |detail: &str| Error::TokenUrlNotAllowed { url: printable(raw), detail: detail.to_string() };
        let url = Url::parse(raw).map_err(|e| deny(&format!("not a URL ({e})")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(deny("credentials in the URL are not allowed"));
        }
        if url.fragment().is_some() {
            return Err(deny("a fragment is not allowed"));
        }
        let loopback = is_loopback(&url);
        match url.scheme() {
            "https" => {}
            "http" if loopback && self.allow_http_loopback => {}
            "http" if loopback => {
                return Err(deny("plain http needs --allow-http-loopback (development only)"));
            }
            "http" => return Err(deny("plain http is not allowed; use https")),
            _ => return Err(deny("only https URLs are allowed")),
        }
        let literal_ip = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal_ip
            && let Err(detail) = self.check_address(ip)
        {
            return Err(deny(&detail));
        }
        if (loopback && self.allow_http_loopback) || self.allowed.iter().any(|prefix| under(&url, prefix)) {
            Ok(url)
        } else {
            let list: Vec<&str> = self.allowed.iter().map(Url::as_str).collect();
            Err(deny(&format!(
                "not under an allowed prefix ({}); see the operator's --allowed-token-url",
                list.join(", ")
            )))
        }
    }
}

impl TokenUrlPolicy {
    /// Refuses addresses inside the cluster's or the cloud's private space (the metadata
    /// service at 169.254.169.254 above all), unless `--allow-private-networks`; loopback only
    /// with `--allow-http-loopback`. Applied to literal IPs here and to resolved names before
    /// each request, so an allowed name cannot be pointed at an internal address.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), String> {
        if ip.is_loopback() {
            return if self.allow_http_loopback || self.allow_private_networks {
                Ok(())
            } else {
                Err(format!("{ip} is a loopback address (allowed only with --allow-http-loopback)"))
            };
        }
        if is_internal(ip) && !self.allow_private_networks {
            return Err(format!(
                "{ip} is a private, link-local or otherwise internal address (allowed only with --allow-private-networks)"
            ));
        }
        Ok(())
    }
}

/// Link-local, private, unique-local, shared, unspecified, broadcast, multicast and
/// documentation addresses: none is a public token endpoint.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space, RFC 6598
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4)) || v4.is_loopback();
            }
            v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

fn under(url: &Url, prefix: &Url) -> bool {
    url.scheme() == prefix.scheme()
        && url.host() == prefix.host()
        && url.port_or_known_default() == prefix.port_or_known_default()
        && url.path().starts_with(prefix.path())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(loopback: bool) -> TokenUrlPolicy {
        TokenUrlPolicy::new(&[DEFAULT_ALLOWED.to_string()], loopback, false).unwrap()
    }

    #[test]
    fn default_allows_groupdocs_only() {
        let p = policy(false);
        assert!(p.check("https://api.groupdocs.cloud/connect/token").is_ok());
        for bad in [
            "https://api.groupdocs.cloud.evil.example/connect/token",
            "https://evil.example/connect/token",
            "https://api.groupdocs.cloud:8443/connect/token",
            "http://api.groupdocs.cloud/connect/token",
            "https://user:pw@api.groupdocs.cloud/connect/token",
            "https://api.groupdocs.cloud/connect/token#x",
            "ftp://api.groupdocs.cloud/connect/token",
            "not a url",
            "http://127.0.0.1:8080/connect/token",
        ] {
            let err = p.check(bad).unwrap_err();
            assert_eq!(err.reason(), "TokenUrlNotAllowed", "{bad}");
        }
    }

    #[test]
    fn path_prefixes_are_respected() {
        let p = TokenUrlPolicy::new(&["https://idp.example.com/tenants/a/".to_string()], false, false).unwrap();
        assert!(p.check("https://idp.example.com/tenants/a/connect/token").is_ok());
        assert!(p.check("https://idp.example.com/tenants/b/connect/token").is_err());
    }

    #[test]
    fn http_loopback_only_when_enabled() {
        let p = policy(true);
        for ok in
            ["http://127.0.0.1:8080/connect/token", "http://localhost:1/connect/token", "http://[::1]:9/connect/token"]
        {
            assert!(p.check(ok).is_ok(), "{ok}");
        }
        assert!(p.check("http://10.0.0.1/connect/token").is_err());
        assert!(
            policy(false)
                .check("http://localhost:1/connect/token")
                .unwrap_err()
                .to_string()
                .contains("--allow-http-loopback")
        );
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let allowed =
            ["https://169.254.169.254/".to_string(), "https://10.1.2.3/".to_string(), "https://[fd00::1]/".to_string()];
        let strict = TokenUrlPolicy::new(&allowed, false, false).unwrap();
        for url in [
            "https://169.254.169.254/connect/token",
            "https://10.1.2.3/connect/token",
            "https://[fd00::1]/connect/token",
        ] {
            let err = strict.check(url).unwrap_err().to_string();
            assert!(err.contains("--allow-private-networks"), "{err}");
        }
        let open = TokenUrlPolicy::new(&allowed, false, true).unwrap();
        assert!(open.check("https://10.1.2.3/connect/token").is_ok());
        for ip in ["8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.168.1.1", "172.16.0.1", "100.64.0.1", "0.0.0.0", "::ffff:10.0.0.1", "fe80::1", "224.0.0.1"] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
