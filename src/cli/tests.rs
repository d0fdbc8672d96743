use super::*;

#[test]
fn duration_flags_accept_their_defaults_and_bounds() {
    let defaults = parse_run(&[]).unwrap();
    for (flag, range, default) in DURATION_FLAGS {
        let default = parse_duration(default).unwrap();
        assert_eq!(duration_of(&defaults, flag), default, "{flag}");
        assert!(range.min <= default && default <= range.max, "{flag}: default {default:#} out of its range");
        for d in [default, range.min, range.max] {
            let arg = format!("{flag}={d:#}");
            let args = parse_run(&[&arg]).unwrap_or_else(|e| panic!("{arg}: {e}"));
            assert_eq!(duration_of(&args, flag), d, "{arg}");
        }
        // ISO 8601 is accepted too.
        let arg = format!("{flag}={default}");
        assert_eq!(duration_of(&parse_run(&[&arg]).unwrap(), flag), default, "{arg}");
    }
}

#[test]
fn duration_flags_refuse_zero_negative_huge_and_out_of_range_values() {
    for (flag, range, _) in DURATION_FLAGS {
        let just_below = range.min - SignedDuration::from_nanos(1);
        let just_above = range.max + SignedDuration::from_nanos(1);
        let bad = [
            "0s".to_string(),
            "0".to_string(),
            "PT0S".to_string(),
            "-1s".to_string(),
            "-5m".to_string(),
            "-9223372036s".to_string(),
            "100000000h".to_string(),
            "9999999999h".to_string(),
            "9223372036s".to_string(),
            "9223372036854775807s".to_string(),
            "1d".to_string(),
            "soon".to_string(),
            String::new(),
            format!("{just_below:#}"),
            format!("{just_above:#}"),
        ];
        for value in bad {
            let arg = format!("{flag}={value}");
            let err = parse_run(&[&arg]).map(|_| ()).expect_err(&arg).to_string();
            assert!(err.contains(flag), "{arg}: {err}");
            let allowed = format!("allowed: {:#} to {:#}", range.min, range.max);
            assert!(err.contains(&allowed), "{arg}: {err} does not name the range");
        }
    }
}

#[test]
fn token_command_bounds_its_timeout_too() {
    let parse = |timeout: &str| {
        Cli::try_parse_from([
            "groupdocs-token-operator",
            "token",
            "--client-id",
            "x",
            "--token-request-timeout",
            timeout,
        ])
    };
    assert!(parse("0s").is_err());
    assert!(parse("100000000h").is_err());
    let Command::Token(args) = parse("5s").unwrap().command else { panic!() };
    assert_eq!(args.http.token_request_timeout, std::time::Duration::from_secs(5));
}

#[test]
fn concurrency_and_qps_are_bounded() {
    assert_eq!(parse_run(&[]).unwrap().concurrency, 16);
    assert_eq!(parse_run(&[]).unwrap().kube_api_qps, 0);
    for ok in ["1", "16", "1024"] {
        assert_eq!(parse_run(&["--concurrency", ok]).unwrap().concurrency.to_string(), ok);
    }
    for bad in ["0", "1025", "-1", "65536", "99999999999"] {
        let err = parse_run(&[&format!("--concurrency={bad}")]).map(|_| ()).expect_err(bad).to_string();
        assert!(err.contains("--concurrency") && err.contains("1..=1024"), "{err}");
    }
    for ok in ["0", "50", "10000"] {
        assert_eq!(parse_run(&["--kube-api-qps", ok]).unwrap().kube_api_qps.to_string(), ok);
    }
    for bad in ["10001", "-1", "4294967296"] {
        let err = parse_run(&[&format!("--kube-api-qps={bad}")]).map(|_| ()).expect_err(bad).to_string();
        assert!(err.contains("--kube-api-qps"), "{err}");
    }
}

#[test]
fn cli_is_well_formed() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn run_defaults_follow_the_design() {
    let cli = Cli::try_parse_from(["groupdocs-token-operator", "run"]).unwrap();
    let Command::Run(args) = cli.command else { panic!() };
    assert_eq!(args.allowed_token_urls, ["https://api.groupdocs.cloud/"]);
    assert_eq!(args.failed_request_budget, 10);
    assert!(!args.allow_http_loopback);
    assert!(args.watch_namespaces.is_empty());
}

#[test]
fn lists_are_repeatable_and_comma_separated() {
    let cli = Cli::try_parse_from([
        "groupdocs-token-operator",
        "run",
        "--watch-namespace=a,b",
        "--watch-namespace",
        "c",
        "--allowed-token-url=https://x.example/",
    ])
    .unwrap();
    let Command::Run(args) = cli.command else { panic!() };
    assert_eq!(args.watch_namespaces, ["a", "b", "c"]);
    assert_eq!(args.allowed_token_urls, ["https://x.example/"]);
}

#[test]
fn credential_selector_accepts_equality_and_set_based_requirements() {
    for ok in [
        "shard=a",
        "shard==a",
        "shard!=a",
        "shard in (a,b)",
        "shard in(a, b )",
        "shard notin (x)",
        "shard",
        "!shard",
        " ! shard ",
        "shard=",
        "shard = a",
        "example.com/shard=a-1",
        "app.kubernetes.io/part-of=billing,tier notin (dev,test),!legacy,shard",
        "Shard_1.x=A.b_c",
    ] {
        assert_eq!(names::parse_label_selector(ok).as_deref(), Ok(ok.trim()), "{ok}");
        let args = parse_run(&["--credential-selector", ok]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(args.credential_selector(), Some(ok.trim()));
    }
    assert_eq!(parse_run(&[]).unwrap().credential_selector(), None, "all credentials by default");
    for blank in ["", "  "] {
        let args = parse_run(&["--credential-selector", blank]).unwrap();
        assert_eq!(args.credential_selector(), None, "{blank:?} selects all, as an unset variable would");
    }
}

#[test]
fn credential_selector_refuses_bad_syntax_with_the_flag_and_the_part_named() {
    for (bad, says) in [
        ("shard=a,", "empty requirement"),
        (",shard=a", "empty requirement"),
        ("shard=a,,b", "empty requirement"),
        ("shard in (a,b", "without ')'"),
        ("shard in a,b)", "without '('"),
        ("shard in ((a))", "nested"),
        ("shard in ()", "empty value list"),
        ("shard in (a) x", "nothing may follow"),
        ("shard inside (a)", "unknown operator"),
        ("shard > 3", "unknown operator"),
        ("shard ~ a", "unknown operator"),
        ("shard a", "unknown operator"),
        ("!shard=a", "label key"),
        ("=a", "label key"),
        ("-shard=a", "label key"),
        ("shard-=a", "label key"),
        ("Example.com/shard=a", "prefix"),
        ("a/b/c=d", "label key"),
        ("/shard=a", "prefix"),
        ("shard=a b", "label value"),
        ("shard=-a", "label value"),
        ("shard in (a,-b)", "label value"),
        ("shard=\u{e9}", "label value"),
    ] {
        let err = names::parse_label_selector(bad).expect_err(bad);
        assert!(err.contains(says), "{bad:?}: {err:?} does not say {says:?}");
        let err = parse_run(&[&format!("--credential-selector={bad}")]).map(|_| ()).expect_err(bad).to_string();
        assert!(err.contains("--credential-selector"), "{bad:?}: {err}");
    }
    let long = "k".repeat(64);
    assert!(names::parse_label_selector(&format!("{long}=a")).is_err());
    assert!(names::parse_label_selector(&format!("a={long}")).is_err());
    assert!(names::parse_label_selector(&format!("{}=a", "k".repeat(63))).is_ok());
    assert!(names::parse_label_selector(&format!("{}/k=a", "p".repeat(254))).is_err());
}

#[test]
fn cluster_resource_namespace_is_a_dns_label_and_defaults_to_the_own_namespace() {
    assert_eq!(parse_run(&[]).unwrap().cluster_resource_namespace, None);
    let args = parse_run(&["--cluster-resource-namespace", "platform-1"]).unwrap();
    assert_eq!(args.cluster_resource_namespace.as_deref(), Some("platform-1"));
    for bad in ["", "Platform", "-a", "a-", "a.b", "a_b", &"n".repeat(64)] {
        let err = parse_run(&[&format!("--cluster-resource-namespace={bad}")]).map(|_| ()).expect_err(bad).to_string();
        assert!(err.contains("--cluster-resource-namespace") && err.contains("not a namespace name"), "{bad:?}: {err}");
    }

    let dir = std::env::temp_dir().join(format!("gdto-cli-ns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("namespace");
    std::fs::write(&file, "from-file\n").unwrap();
    let missing = dir.join("missing");
    assert_eq!(own_namespace(Some("from-env".into()), &file), "from-env", "the downward API first");
    assert_eq!(own_namespace(None, &file), "from-file", "then the service account's file, trimmed");
    assert_eq!(own_namespace(Some(String::new()), &file), "from-file", "an empty variable is no answer");
    assert_eq!(own_namespace(None, &missing), "default");
    std::fs::write(&file, "Not A Namespace").unwrap();
    assert_eq!(own_namespace(None, &file), "default");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lease_name_defaults_to_the_historic_name_and_is_a_dns_subdomain() {
    assert_eq!(parse_run(&[]).unwrap().lease_name, crate::leader::LEASE_NAME);
    assert_eq!(parse_run(&["--lease-name", "shard-a.gdto"]).unwrap().lease_name, "shard-a.gdto");
    for bad in ["", "Shard", "shard_a", "a..b", "-a"] {
        let err = parse_run(&[&format!("--lease-name={bad}")]).map(|_| ()).expect_err(bad).to_string();
        assert!(err.contains("--lease-name") && err.contains("not a Lease name"), "{bad:?}: {err}");
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Any text, and text shaped like durations (huge, negative, fractional, ISO 8601).
    fn inputs() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,40}",
            "[0-9]{1,3} ?(ms|s|m|h)",
            "[ +-]?[0-9]{1,22}(\\.[0-9]{1,12})? ?(ns|us|ms|s|m|h|sec|secs|min|mins|hour|hours|d|w)",
            "[0-9]{1,20}h ?[0-9]{1,20}m ?[0-9]{1,20}s",
            "[+-]?P(T[0-9]{1,20}(\\.[0-9]{1,9})?[HMS]|[0-9]{1,6}[DWMY])",
        ]
    }

    proptest! {
        /// A selector check never panics, and what it accepts it returns trimmed.
        #[test]
        fn selector_check_never_panics(s in prop_oneof![".{0,40}", "[!a-z =,()/.-]{0,30}"]) {
            if let Ok(selector) = names::parse_label_selector(&s) {
                prop_assert_eq!(selector, s.trim());
            }
        }

        /// Parsing never panics, and an accepted value lies within the flag's range.
        #[test]
        fn duration_flags_never_panic_and_stay_in_range(s in inputs()) {
            for (flag, range, _) in DURATION_FLAGS {
                let arg = format!("{flag}={s}");
                if let Ok(args) = parse_run(&[&arg]) {
                    let d = duration_of(&args, flag);
                    prop_assert!(range.min <= d && d <= range.max, "{} gave {:#}", arg, d);
                }
                if let Ok(d) = range.parse(&s) {
                    prop_assert!(range.min <= d && d <= range.max, "{} gave {:#}", arg, d);
                }
            }
        }
    }
}
