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
