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
mod tests {
    use super::*;

    #[test]
    fn quoted_urls_never_carry_credentials() {
        let p = TokenUrlPolicy::new(&[DEFAULT_ALLOWED.to_string()], false, false).unwrap();
        for raw in [
            "https://client:s3cr3t@api.groupdocs.cloud/connect/token",
            "https://client:s3cr3t@evil.example/x",
            "https://client:s3cr3t@bad host/x",
            "http://:s3cr3t@[::1/",
        ] {
            let err = p.check(raw).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("s3cr3t"), "{text}");
        }
        assert_eq!(without_userinfo("https://a:b@h/p@q"), "https://***@h/p@q");
        assert_eq!(without_userinfo("no scheme a:b@h"), "no scheme a:b@h");
    }

    fn policy(loopback: bool) -> TokenUrlPolicy {
        TokenUrlPolicy::new(&[DEFAULT_ALLOWED.to_string()], loopback, false).unwrap()
    }

    fn listing(prefixes: &[&str], loopback: bool, private: bool) -> TokenUrlPolicy {
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        TokenUrlPolicy::new(&prefixes, loopback, private).unwrap()
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
        let p = listing(&["https://idp.example.com/tenants/a/"], false, false);
        assert!(p.check("https://idp.example.com/tenants/a/connect/token").is_ok());
        assert!(p.check("https://idp.example.com/tenants/b/connect/token").is_err());
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        for prefix in ["https://idp.example.com/tenants/a", "https://idp.example.com/tenants/a/"] {
            let p = listing(&[prefix], false, false);
            for ok in [
                "https://idp.example.com/tenants/a",
                "https://idp.example.com/tenants/a/",
                "https://idp.example.com/tenants/a/connect/token",
                "https://idp.example.com:443/tenants/a/connect/token",
                "https://idp.example.com/tenants/a/connect/token?tenant=a&x=1",
                "https://IDP.example.com/tenants/a/connect/token",
            ] {
                assert!(p.check(ok).is_ok(), "{prefix}: {ok}");
            }
            for bad in [
                "https://idp.example.com/tenants/ab/connect/token",
                "https://idp.example.com/tenants/ab",
                "https://idp.example.com/tenants/a%2F..%2Fb/connect/token",
                "https://idp.example.com/tenants/a/../b/connect/token",
                "https://idp.example.com/tenants/a/%2e%2e/b/connect/token",
                "https://idp.example.com/tenants/",
                "https://idp.example.com/Tenants/a/connect/token",
                "https://idp.example.com:8443/tenants/a/connect/token",
                "https://idp.example.com.evil.example/tenants/a/connect/token",
                "https://other.example.com/tenants/a/connect/token",
            ] {
                let err = p.check(bad).unwrap_err().to_string();
                assert!(err.contains("allowed prefix"), "{prefix}: {bad}: {err}");
            }
        }
        // A root prefix covers the whole origin; an explicit default port is the same origin.
        let root = listing(&["https://idp.example.com:443"], false, false);
        assert!(root.check("https://idp.example.com/any/path").is_ok());
        assert!(root.check("https://idp.example.com:444/any/path").is_err());
    }

    #[test]
    fn http_loopback_only_when_enabled() {
        let listed = ["http://127.0.0.1:8080/", "http://localhost:1/", "http://[::1]:9/"];
        let p = listing(&listed, true, false);
        for ok in
            ["http://127.0.0.1:8080/connect/token", "http://localhost:1/connect/token", "http://[::1]:9/connect/token"]
        {
            assert!(p.check(ok).is_ok(), "{ok}");
        }
        assert!(p.check("http://10.0.0.1/connect/token").is_err());
        assert!(
            listing(&listed, false, false)
                .check("http://localhost:1/connect/token")
                .unwrap_err()
                .to_string()
                .contains("--allow-http-loopback")
        );
    }

    #[test]
    fn loopback_urls_need_an_allowed_prefix_too() {
        let p = listing(&[DEFAULT_ALLOWED, "http://127.0.0.1:8080/"], true, false);
        assert!(p.check("http://127.0.0.1:8080/connect/token").is_ok());
        for unlisted in [
            "http://127.0.0.1:8081/connect/token",
            "http://localhost:8080/connect/token",
            "http://[::1]:8080/connect/token",
            "http://127.0.0.2:8080/connect/token",
            "https://127.0.0.1:8080/connect/token",
        ] {
            let err = p.check(unlisted).unwrap_err().to_string();
            assert!(err.contains("allowed prefix"), "{unlisted}: {err}");
        }
        // Without --allow-http-loopback a listed plain-http loopback URL is still refused.
        let err = listing(&["http://127.0.0.1:8080/"], false, false)
            .check("http://127.0.0.1:8080/connect/token")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--allow-http-loopback"), "{err}");
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let allowed =
            ["https://169.254.169.254/", "https://10.1.2.3/", "https://[fd00::1]/", "https://[64:ff9b::a01:203]/"];
        let strict = listing(&allowed, false, false);
        for url in [
            "https://169.254.169.254/connect/token",
            "https://10.1.2.3/connect/token",
            "https://[fd00::1]/connect/token",
            "https://[64:ff9b::a01:203]/connect/token",
        ] {
            let err = strict.check(url).unwrap_err().to_string();
            assert!(err.contains("--allow-private-networks"), "{err}");
        }
        let open = listing(&allowed, false, true);
        assert!(open.check("https://10.1.2.3/connect/token").is_ok());
        for ip in ["8.8.8.8", "2001:4860:4860::8888", "1.1.1.1", "198.17.255.255", "198.20.0.0", "223.255.255.255"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.168.1.1", "172.16.0.1", "100.64.0.1", "0.0.0.0", "::ffff:10.0.0.1", "fe80::1", "224.0.0.1"] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    fn internal(ip: &str) -> bool {
        is_internal(ip.parse().unwrap())
    }

    #[test]
    fn nat64_addresses_are_internal() {
        // The whole /96, whatever IPv4 address it embeds: a public one is reached through
        // the translator, which sits inside the network.
        for ip in ["64:ff9b::", "64:ff9b::a9fe:a9fe", "64:ff9b::169.254.169.254", "64:ff9b::8.8.8.8", "64:ff9b::1:2"] {
            assert!(internal(ip), "{ip}");
        }
        assert!(internal("64:ff9b:1::10.0.0.1"), "local-use NAT64");
        assert!(!internal("64:ff9b:0:0:1::1"), "outside the /96");
        assert!(!internal("64:ff9a::1"));
    }

    #[test]
    fn six_to_four_addresses_are_internal() {
        for ip in ["2002::", "2002:a9fe:a9fe::1", "2002:808:808::1", "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff"] {
            assert!(internal(ip), "{ip}");
        }
        assert!(!internal("2003::1"));
        assert!(!internal("2001:4860:4860::8888"));
    }

    #[test]
    fn ipv4_compatible_addresses_are_internal() {
        for ip in ["::10.0.0.1", "::169.254.169.254", "::8.8.8.8", "::127.0.0.1", "::2", "::ffff"] {
            assert!(internal(ip), "{ip}");
        }
        // The unspecified address is internal; ::1 is judged as loopback instead.
        assert!(internal("::"));
        assert!(!internal("::1"));
        let strict = listing(&[], false, false);
        assert!(strict.check_address("::1".parse().unwrap()).unwrap_err().contains("loopback"));
        assert!(strict.check_address("::7f00:1".parse().unwrap()).unwrap_err().contains("--allow-private-networks"));
        assert!(listing(&[], true, false).check_address("::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn benchmarking_addresses_are_internal() {
        for ip in ["198.18.0.0", "198.18.0.1", "198.19.255.255"] {
            assert!(internal(ip), "{ip}");
        }
        assert!(!internal("198.17.255.255"));
        assert!(!internal("198.20.0.0"));
    }

    #[test]
    fn reserved_addresses_are_internal() {
        for ip in ["240.0.0.0", "240.0.0.1", "250.1.2.3", "255.255.255.254", "255.255.255.255", "::ffff:240.0.0.1"] {
            assert!(internal(ip), "{ip}");
        }
        assert!(internal("239.255.255.255"), "multicast, as before");
        assert!(!internal("223.255.255.255"));
    }

    #[test]
    fn ietf_protocol_assignments_are_internal() {
        for ip in ["192.0.0.0", "192.0.0.8", "192.0.0.170", "192.0.0.255"] {
            assert!(internal(ip), "{ip}");
        }
        assert!(!internal("192.0.1.1"));
        assert!(!internal("192.0.3.1"));
        // 192.0.2.0/24 (TEST-NET-1) stays internal as documentation.
        assert!(internal("192.0.2.1"));
    }

    #[test]
    fn the_existing_ranges_stay_internal() {
        for ip in [
            "10.0.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.127.255.255",
            "0.1.2.3",
            "198.51.100.1",
            "203.0.113.1",
            "fc00::1",
            "fdff::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "2001:db8::1",
        ] {
            assert!(internal(ip), "{ip}");
        }
        assert!(!internal("127.0.0.1"), "loopback is judged separately");
        assert!(!internal("100.128.0.1"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const PREFIXES: [&str; 4] = [
        "https://idp.example.com/tenants/a",
        "https://idp.example.com:8443/t/",
        "http://127.0.0.1:8090/",
        "https://[2001:4860::1]/x/y/",
    ];

    /// Candidate URLs built from pieces that are close to the prefixes: the same and similar
    /// hosts, ports and path segments, including dot segments and encoded slashes.
    fn candidate() -> impl Strategy<Value = String> {
        let scheme = prop_oneof![Just("https"), Just("http"), Just("HTTPS"), Just("ftp")];
        let host = prop_oneof![
            Just("idp.example.com"),
            Just("IDP.example.com"),
            Just("idp.example.com."),
            Just("idp.example.com.evil.example"),
            Just("127.0.0.1"),
            Just("localhost"),
            Just("[::1]"),
            Just("[2001:4860::1]"),
            Just("[2001:4860:0::1]"),
            Just("user@idp.example.com"),
        ];
        let port = proptest::option::of(prop_oneof![Just(443u16), Just(80), Just(8443), Just(8090), Just(1)]);
        let segment = prop_oneof![
            Just("tenants"),
            Just("a"),
            Just("ab"),
            Just("t"),
            Just("x"),
            Just("y"),
            Just(""),
            Just(".."),
            Just("."),
            Just("%2e%2e"),
            Just("a%2F..%2Fb"),
            Just("connect"),
            Just("token"),
        ];
        let path = proptest::collection::vec(segment, 0..6);
        let tail = prop_oneof![Just(""), Just("?x=1"), Just("#f"), Just("?a=/../b")];
        (scheme, host, port, path, tail).prop_map(|(scheme, host, port, path, tail)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}/{}{tail}", path.join("/"))
        })
    }

    /// A prefix with something glued on: often beneath it, sometimes only alike
    /// (`/tenants/a` + `b/token`), sometimes climbing out of it (`/../b`).
    fn derived() -> impl Strategy<Value = String> {
        let glue = prop_oneof![Just(""), Just("/"), Just("b"), Just("/../"), Just("%2F"), Just("/./"), Just("?q=/..")];
        let rest = proptest::collection::vec(prop_oneof![Just("x"), Just(".."), Just("token"), Just("")], 0..3);
        (proptest::sample::select(PREFIXES.to_vec()), glue, rest)
            .prop_map(|(prefix, glue, rest)| format!("{prefix}{glue}{}", rest.join("/")))
    }

    proptest! {
        /// Whatever the string, `check` answers and does not panic.
        #[test]
        fn check_never_panics(raw in any::<String>(), loopback in any::<bool>(), private in any::<bool>()) {
            let p = TokenUrlPolicy::new(&[DEFAULT_ALLOWED.to_string(), "http://127.0.0.1:8090/".to_string()], loopback, private).unwrap();
            let _ = p.check(&raw);
        }

        #[test]
        fn check_never_panics_on_url_like_strings(raw in "(https?|ftp)://[ -~]{0,40}") {
            let p = TokenUrlPolicy::new(&PREFIXES.map(String::from), true, true).unwrap();
            let _ = p.check(&raw);
        }

        /// An accepted URL has one prefix's scheme, host and port, and a path that is that
        /// prefix's path or beneath it at a `/` boundary.
        #[test]
        fn accepted_urls_stay_under_their_prefix(
            raw in prop_oneof![candidate(), derived()],
            which in proptest::sample::subsequence(PREFIXES.to_vec(), 1..=PREFIXES.len()),
            loopback in any::<bool>(),
            private in any::<bool>(),
        ) {
            let prefixes: Vec<String> = which.iter().map(|p| p.to_string()).collect();
            let p = TokenUrlPolicy::new(&prefixes, loopback, private).unwrap();
            if let Ok(url) = p.check(&raw) {
                let covered = which.iter().any(|prefix| {
                    let prefix = Url::parse(prefix).unwrap();
                    let base = prefix.path().trim_end_matches('/');
                    url.scheme() == prefix.scheme()
                        && url.host_str() == prefix.host_str()
                        && url.port_or_known_default() == prefix.port_or_known_default()
                        && (url.path() == base || url.path().starts_with(&format!("{base}/")))
                });
                prop_assert!(covered, "{raw} accepted as {url} under none of {which:?}");
                prop_assert!(url.username().is_empty() && url.password().is_none() && url.fragment().is_none());
                prop_assert!(url.scheme() == "https" || (loopback && url.scheme() == "http"));
                // Nothing in the accepted path climbs out of the prefix.
                prop_assert!(!url.path().split('/').any(|s| s == ".." || s.eq_ignore_ascii_case("%2e%2e")));
            }
        }
    }
}
