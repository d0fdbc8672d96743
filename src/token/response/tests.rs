use super::*;
use serde_json::json;

fn now() -> Timestamp {
    "2026-11-28T10:00:00Z".parse().unwrap()
}

fn parse_json(status: u16, body: serde_json::Value) -> Result<Token, Failure> {
    parse(status, None, body.to_string().as_bytes(), now(), &Sensitive::new("the-client-secret"))
}

fn jwt_with_exp(exp: i64) -> String {
    let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.sig", enc(json!({"alg":"HS256","typ":"JWT"})), enc(json!({"exp": exp})))
}

#[test]
fn success_uses_expires_in_of_each_response() {
    for lifetime in [86400, 3600] {
        let t = parse_json(200, json!({"access_token":"abc","expires_in":lifetime,"token_type":"Bearer"})).unwrap();
        assert_eq!(t.expires_at.duration_since(now()).as_secs(), lifetime);
        assert_eq!(t.token_type, "Bearer");
        assert_eq!(t.authorization().expose(), "Bearer abc");
    }
}

#[test]
fn jwt_exp_is_the_fallback() {
    let exp = now().as_second() + 1800;
    let t = parse_json(200, json!({"access_token": jwt_with_exp(exp)})).unwrap();
    assert_eq!(t.expires_at.as_second(), exp);
    let err = parse_json(200, json!({"access_token": "opaque"})).unwrap_err();
    assert!(matches!(err, Failure::InvalidResponse(m) if m.contains("exp")));
}

#[test]
fn broken_bodies_are_invalid_responses() {
    let cases = [
        json!({"expires_in": 10}),
        json!({"access_token": "", "expires_in": 10}),
        json!({"access_token": 5, "expires_in": 10}),
        json!({"access_token": "a", "expires_in": 0}),
        json!({"access_token": "a", "expires_in": -5}),
        json!({"access_token": "a", "expires_in": "3600.5"}),
        json!({"access_token": "a", "expires_in": "1h"}),
        json!({"access_token": "a", "expires_in": ""}),
        json!({"access_token": "a", "expires_in": "-5"}),
        json!({"access_token": "a", "expires_in": "0"}),
        json!({"access_token": "a", "expires_in": "99999999999999999999999"}),
        json!({"access_token": "a", "expires_in": [3600]}),
        json!({"access_token": "a", "expires_in": null}),
        json!({"access_token": "a", "expires_in": 18446744073709551615_u64}),
        json!({"access_token": "a", "expires_in": 1e30}),
        json!({"access_token": "a", "expires_in": 999999999999_i64}),
        json!({"access_token": "a", "expires_in": 10, "token_type": "mac"}),
        json!([1, 2]),
    ];
    for body in cases {
        assert!(matches!(parse_json(200, body.clone()), Err(Failure::InvalidResponse(_))), "{body}");
    }
    let not_json = parse(200, None, b"<html>", now(), &Sensitive::default());
    assert!(matches!(not_json, Err(Failure::InvalidResponse(_))));
}

#[test]
fn statuses_are_classified() {
    assert!(
        matches!(parse_json(400, json!({"error":"invalid_client"})), Err(Failure::InvalidClient(m)) if m.contains("invalid_client"))
    );
    assert!(matches!(parse_json(401, json!({})), Err(Failure::InvalidClient(_))));
    assert!(matches!(parse_json(500, json!({})), Err(Failure::Unavailable(_))));
    assert!(matches!(parse_json(503, json!({})), Err(Failure::Unavailable(_))));
    assert!(matches!(parse_json(404, json!({})), Err(Failure::InvalidResponse(_))));
    let limited = parse(429, Some("42"), b"", now(), &Sensitive::default());
    assert!(matches!(limited, Err(Failure::RateLimited { until, .. }) if until.duration_since(now()).as_secs() == 42));
}

#[test]
fn an_echoed_basic_authorization_is_scrubbed() {
    use base64::engine::general_purpose::STANDARD;
    let secret = "the-client-secret-0123";
    for id in ["a", "ab", "abc", "client-id"] {
        let header = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
        let body = json!({"error": "invalid_client", "error_description": format!("you sent {header}")});
        let err = parse(401, None, body.to_string().as_bytes(), now(), &Sensitive::new(secret)).unwrap_err();
        let Failure::InvalidClient(msg) = err else { panic!() };
        let encoded = STANDARD.encode(format!("{id}:{secret}"));
        // No run of 8 characters of the encoded credentials survives beyond the id's part.
        let leaked = (8..encoded.len()).any(|i| msg.contains(&encoded[i - 8..i]) && i > id.len() * 4 / 3 + 8);
        assert!(!leaked, "{id}: {msg}");
    }
}

#[test]
fn an_echoed_secret_is_scrubbed() {
    let err = parse_json(400, json!({"error":"invalid_client","error_description":"bad secret the-client-secret"}));
    let Err(Failure::InvalidClient(msg)) = err else { panic!() };
    assert!(!msg.contains("the-client-secret"), "{msg}");
}

#[test]
fn expires_in_may_be_a_numeric_string() {
    for (value, secs) in [(json!("3600"), 3600), (json!(" 3600 "), 3600), (json!("+60"), 60), (json!(3600.0), 3600)] {
        let t = parse_json(200, json!({"access_token": "abc", "expires_in": value})).unwrap();
        assert_eq!(t.lifetime().as_secs(), secs, "{value}");
    }
    let Err(Failure::InvalidResponse(m)) = parse_json(200, json!({"access_token": "a", "expires_in": "soon"})) else {
        panic!()
    };
    assert_eq!(m, "expires_in \"soon\" is not a whole number of seconds");
    let Err(Failure::InvalidResponse(m)) = parse_json(200, json!({"access_token": "a", "expires_in": "0"})) else {
        panic!()
    };
    assert!(m.contains("outside 1..="), "{m}");
}

#[test]
fn the_earlier_of_expires_in_and_exp_wins() {
    let soon = now().as_second() + 600;
    let later = now().as_second() + 7200;
    let t = parse_json(200, json!({"access_token": jwt_with_exp(soon), "expires_in": 3600})).unwrap();
    assert_eq!(t.expires_at.as_second(), soon, "exp is earlier");
    let t = parse_json(200, json!({"access_token": jwt_with_exp(later), "expires_in": 3600})).unwrap();
    assert_eq!(t.lifetime().as_secs(), 3600, "expires_in is earlier");
    let t = parse_json(200, json!({"access_token": jwt_with_exp(later), "expires_in": "1800"})).unwrap();
    assert_eq!(t.lifetime().as_secs(), 1800);
    // An exp beyond the bound does not matter when expires_in is within it.
    let far = now().as_second() + 2 * MAX_LIFETIME.as_secs();
    let t = parse_json(200, json!({"access_token": jwt_with_exp(far), "expires_in": 3600})).unwrap();
    assert_eq!(t.lifetime().as_secs(), 3600);
    let err = parse_json(200, json!({"access_token": jwt_with_exp(far)})).unwrap_err();
    assert!(matches!(err, Failure::InvalidResponse(m) if m.contains("exp claim is more than")));
    // A fractional NumericDate is cut to the second.
    let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let fractional = format!("{}.{}.sig", enc(json!({"alg":"none"})), enc(json!({"exp": soon as f64 + 0.75})));
    assert_eq!(parse_json(200, json!({"access_token": fractional})).unwrap().expires_at.as_second(), soon);
}

#[test]
fn a_past_exp_is_an_invalid_response() {
    for exp in [now().as_second() - 60, now().as_second()] {
        for body in
            [json!({"access_token": jwt_with_exp(exp), "expires_in": 3600}), json!({"access_token": jwt_with_exp(exp)})]
        {
            let Err(Failure::InvalidResponse(m)) = parse_json(200, body) else { panic!("{exp}") };
            assert!(m.contains("exp claim") && m.contains("already expired"), "{m}");
        }
    }
}

#[test]
fn an_echoed_secret_cut_by_truncation_is_scrubbed() {
    let secret = Sensitive::new("s3cr3t-value-0123456789");
    for at in 180..205 {
        let desc = format!("{}{}", "x".repeat(at), secret.expose());
        let body = json!({"error": "invalid_client", "error_description": desc}).to_string();
        let Err(Failure::InvalidClient(m)) = parse(401, None, body.as_bytes(), now(), &secret) else { panic!() };
        assert!(!m.contains("s3cr3t-v"), "{at}: {m}");
    }
}

#[test]
fn the_form_encoded_secret_is_scrubbed() {
    let secret = Sensitive::new("p@ss w/rd+&=%x!");
    let form: String = url::form_urlencoded::byte_serialize(secret.expose().as_bytes()).collect();
    assert_eq!(form, "p%40ss+w%2Frd%2B%26%3D%25x%21");
    for echo in [
        format!("grant_type=client_credentials&client_id=id&client_secret={form}"),
        format!("client_secret={}", form.to_lowercase()),
        format!("client_secret={}", form.replace('+', "%20")),
        format!("raw {}", secret.expose()),
    ] {
        let body = json!({"error": "invalid_request", "error_description": format!("cannot parse {echo}")}).to_string();
        let Err(Failure::InvalidClient(m)) = parse(400, None, body.as_bytes(), now(), &secret) else { panic!() };
        assert!(m.contains("[REDACTED]"), "{m}");
        assert!(!m.to_lowercase().contains(&form.to_lowercase()) && !m.contains(secret.expose()), "{m}");
        assert!(!m.contains("p%40ss"), "{m}");
    }
}

#[test]
fn dropped_characters_cannot_join_a_secret() {
    let secret = Sensitive::new("joined-secret");
    let body = json!({"error": "invalid_client", "error_description": "joined-\u{7}secret and joined\u{e9}-secret"});
    let Err(Failure::InvalidClient(m)) = parse(401, None, body.to_string().as_bytes(), now(), &secret) else {
        panic!()
    };
    assert!(!m.contains("joined-secret"), "{m}");
}

#[test]
fn retry_after_and_token_type_are_scrubbed() {
    let secret = Sensitive::new("the-client-secret");
    let header = format!("{}the-client-secret", "9".repeat(50));
    let Err(Failure::RateLimited { detail, .. }) = parse(429, Some(&header), b"", now(), &secret) else { panic!() };
    assert!(!detail.contains("the-clie"), "{detail}");
    let body =
        json!({"access_token": "abc", "expires_in": 60, "token_type": format!("{}the-client-secret", "x".repeat(20))});
    let Err(Failure::InvalidResponse(m)) = parse(200, None, body.to_string().as_bytes(), now(), &secret) else {
        panic!()
    };
    assert!(m.starts_with("token_type \"") && !m.contains("the-clie"), "{m}");
    let body = json!({"access_token": "abc", "expires_in": "the-client-secret"});
    let Err(Failure::InvalidResponse(m)) = parse(200, None, body.to_string().as_bytes(), now(), &secret) else {
        panic!()
    };
    assert!(!m.contains("the-client-secret") && m.contains("[REDACTED]"), "{m}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            (-1_000i64..40_000_000).prop_map(serde_json::Value::from),
            (-1_000i64..40_000_000).prop_map(|n| serde_json::Value::from(n.to_string())),
            "[ +-]?[0-9]{0,22}[ .]?[0-9]{0,3}".prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z]{0,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    proptest! {
        /// No body and no status makes the parser panic; a success always has a positive,
        /// bounded lifetime.
        #[test]
        fn arbitrary_bodies(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(token) = parse(status, None, &body, now(), &Sensitive::new("secret")) {
                prop_assert!(token.expires_at > token.issued_at);
                prop_assert!(token.lifetime() <= MAX_LIFETIME);
            }
        }

        #[test]
        fn arbitrary_json_fields(
            token in proptest::option::of("[ -~]{0,64}"),
            expires_in in proptest::option::of(prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                "[ -~]{0,12}".prop_map(serde_json::Value::from),
            ]),
        ) {
            let mut body = serde_json::Map::new();
            if let Some(t) = token { body.insert("access_token".into(), t.into()); }
            if let Some(e) = expires_in { body.insert("expires_in".into(), e); }
            let bytes = serde_json::to_vec(&body).unwrap();
            if let Ok(t) = parse(200, None, &bytes, now(), &Sensitive::default()) {
                prop_assert!(t.lifetime().is_positive() && t.lifetime() <= MAX_LIFETIME);
                prop_assert!(!t.access_token.expose().is_empty());
            }
        }

        /// An error message never quotes the client secret, whatever the server echoes.
        #[test]
        fn secrets_never_echo(secret in "[a-zA-Z0-9]{8,32}", status in prop_oneof![Just(400u16), Just(401), Just(500), Just(404)]) {
            let body = serde_json::json!({"error": format!("bad {secret}"), "error_description": format!("you sent {secret}")});
            let err = parse(status, None, body.to_string().as_bytes(), now(), &Sensitive::new(secret.clone())).unwrap_err();
            let text = format!("{:?}", err);
            prop_assert!(!text.contains(&secret));
        }

        /// Whatever the server echoes and wherever a message cuts it, neither the secret nor
        /// its form-encoded form appears, and no cut leaves a piece of it (8 characters or more).
        #[test]
        fn cut_secrets_never_echo(
            secret in "[a-z0-9@/+&= %!]{8,32}",
            before in "[A-Z.,:;_-]{0,260}",
            after in "[A-Z.,:;_-]{0,40}",
            form in 0..4usize,
            place in 0..4usize,
        ) {
            prop_assume!(secret.trim().len() >= 8);
            let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            let echo = match form {
                0 => secret.clone(),
                1 => encoded.clone(),
                2 => encoded.replace('+', "%20"),
                _ => format!("{secret}&client_secret={encoded}"),
            };
            let text = format!("{before}{echo}{after}");
            let sensitive = Sensitive::new(secret.clone());
            let err = match place {
                0 => parse(400, None, json!({"error": text, "error_description": text}).to_string().as_bytes(), now(), &sensitive),
                1 => parse(503, None, json!({"error": "x", "error_description": text}).to_string().as_bytes(), now(), &sensitive),
                2 => parse(429, Some(&text), b"", now(), &sensitive),
                _ => parse(200, None, json!({"access_token": "a", "expires_in": 5, "token_type": text}).to_string().as_bytes(), now(), &sensitive),
            }.unwrap_err();
            let message = format!("{err:?}");
            prop_assert!(!message.contains(&secret), "{message}");
            prop_assert!(!message.contains(&encoded), "{message}");
            let lower = message.to_lowercase();
            for piece in [&secret[..8], &encoded[..8]] {
                prop_assert!(!lower.contains(&piece.to_lowercase()), "{piece:?} in {message}");
            }
        }

        /// `expires_in` of any JSON value: no panic, and an accepted value is within bounds
        /// and agrees with the number it spells.
        #[test]
        fn expires_in_of_any_value(v in json_value()) {
            if let Ok(d) = expires_in(&v, &Sensitive::default()) {
                prop_assert!(d.is_positive() && d <= MAX_LIFETIME);
                match &v {
                    serde_json::Value::Number(n) => prop_assert_eq!(n.as_f64(), Some(d.as_secs() as f64)),
                    serde_json::Value::String(s) => prop_assert_eq!(s.trim().parse::<i64>().ok(), Some(d.as_secs())),
                    other => prop_assert!(false, "accepted {other}"),
                }
            }
        }

        #[test]
        fn expires_in_of_any_string(s in any::<String>()) {
            if let Ok(d) = expires_in(&serde_json::Value::String(s.clone()), &Sensitive::default()) {
                prop_assert!(d.is_positive() && d <= MAX_LIFETIME);
                prop_assert_eq!(s.trim().parse::<i64>().ok(), Some(d.as_secs()));
            }
        }

        #[test]
        fn expires_in_of_numeric_strings(n in any::<i64>(), pad in "[ \t]{0,2}") {
            let result = expires_in(&serde_json::Value::String(format!("{pad}{n}{pad}")), &Sensitive::default());
            if n > 0 && n <= MAX_LIFETIME.as_secs() {
                prop_assert_eq!(result, Ok(SignedDuration::from_secs(n)));
            } else {
                prop_assert!(matches!(result, Err(Failure::InvalidResponse(m)) if m.contains("outside")));
            }
        }
    }
}
