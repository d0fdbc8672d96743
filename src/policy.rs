//! Which token URLs the operator may send client secrets to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// with `--allow-http-loopback`); no user info or fragment; a literal IP must pass
    /// [`TokenUrlPolicy::check_address`]; and the URL must fall under an allowed prefix: the
    /// same scheme, host and port, and a path equal to the prefix's path or beneath it at a
    /// `/` boundary (`/tenants/a` covers `/tenants/a/token`, not `/tenants/ab/token`). This
    /// holds for loopback URLs too: `--allow-http-loopback` permits plain http, it does not
    /// list anything.
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
        if self.allowed.iter().any(|prefix| under(&url, prefix)) {
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
    /// with `--allow-http-loopback` (or `--allow-private-networks`). Applied to literal IPs by
    /// [`TokenUrlPolicy::check`] and to every address a name resolves to by the token client's
    /// resolver, so the address checked is the address connected to and an allowed name
    /// cannot be pointed at an internal address.
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

/// Private, link-local, unique-local, shared (RFC 6598), unspecified, broadcast, multicast,
/// documentation, benchmarking (198.18.0.0/15), reserved (240.0.0.0/4), IETF protocol
/// (192.0.0.0/24) and "this network" (0.0.0.0/8) addresses, and IPv6 forms that carry an
/// IPv4 address the operator cannot judge from here (IPv4-mapped and -compatible, NAT64
/// 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16): none is a public token endpoint.
/// Loopback (127.0.0.0/8, `::1`) is not counted here; [`TokenUrlPolicy::check_address`]
/// judges it on its own.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space, RFC 6598
        || o[0] == 0 // "this network", RFC 791
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking, RFC 2544
        || o[0] >= 240 // reserved, RFC 1112 (and the broadcast address)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments, RFC 6890
}

fn is_internal_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    if let Some(v4) = v6.to_ipv4_mapped() {
        // ::ffff:a.b.c.d reaches a.b.c.d; its loopback is internal here too.
        return is_internal_v4(v4) || v4.is_loopback();
    }
    if s[..6] == [0; 6] {
        // :: and ::1 are the unspecified and the loopback address; every other address with
        // 96 leading zero bits is IPv4-compatible (::a.b.c.d, deprecated by RFC 4291).
        return !v6.is_loopback();
    }
    v6.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation, RFC 3849
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4]) // NAT64, RFC 6052: 64:ff9b::/96
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local-use NAT64, RFC 8215
        || s[0] == 0x2002 // 6to4, RFC 3056
}

/// `url` is under `prefix`: the same scheme, host and port, and the prefix's path itself or
/// a path beneath it at a segment boundary.
fn under(url: &Url, prefix: &Url) -> bool {
    if url.scheme() != prefix.scheme()
        || url.host() != prefix.host()
        || url.port_or_known_default() != prefix.port_or_known_default()
    {
        return false;
    }
    let base = prefix.path().trim_end_matches('/');
    match url.path().strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A URL made safe to quote in status and events: control characters dropped, any user info
/// (`user:password@`) replaced, at most 256 characters.
fn printable(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    without_userinfo(&clean).chars().take(256).collect()
}

/// `scheme://user:pw@host/...` as `scheme://***@host/...`, also for text that does not parse
/// as a URL (the authority ends at the first `/`, `?` or `#` after `://`).
fn without_userinfo(s: &str) -> String {
    let Some(start) = s.find("://").map(|i| i + 3) else { return s.to_string() };
    let authority_end = s[start..].find(['/', '?', '#']).map_or(s.len(), |i| start + i);
    match s[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &s[..start], &s[start + at..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests;
