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
