use super::*;

const TOKEN: &str = "eyJ.abc.def";

fn token() -> Token {
    crate::fixtures::token(TOKEN)
}

fn spec(format: TokenFormat, templates: &[(&str, &str)]) -> TargetSecret {
    TargetSecret {
        format,
        template: templates.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..TargetSecret::default()
    }
}

fn text(rendered: &Rendered, key: &str) -> String {
    String::from_utf8(rendered.data[key].0.clone()).unwrap()
}

fn keys(rendered: &Rendered) -> Vec<&str> {
    rendered.data.keys().map(String::as_str).collect()
}

fn error(spec: &TargetSecret) -> String {
    let err = check(spec).unwrap_err();
    assert_eq!(err.reason(), "InvalidSpec");
    err.to_string()
}

#[test]
fn the_default_format_writes_todays_keys() {
    let r = render(&spec(TokenFormat::Default, &[]), &token()).unwrap();
    assert_eq!(keys(&r), ["access_token", "authorization", "expires_at", "token_type"]);
    assert_eq!(text(&r, ACCESS_TOKEN_KEY), TOKEN);
    assert_eq!(text(&r, TOKEN_TYPE_KEY), "Bearer");
    assert_eq!(text(&r, EXPIRES_AT_KEY), "2026-11-29T10:00:00Z");
    assert_eq!(text(&r, AUTHORIZATION_KEY), "Bearer eyJ.abc.def");
    assert_eq!(r.templates_digest, None);
}

#[test]
fn the_env_format_writes_one_dotenv_key() {
    let r = render(&spec(TokenFormat::Env, &[]), &token()).unwrap();
    assert_eq!(keys(&r), [ENV_KEY]);
    assert_eq!(
        text(&r, ENV_KEY),
        "GROUPDOCS_ACCESS_TOKEN=eyJ.abc.def\nGROUPDOCS_TOKEN_TYPE=Bearer\nGROUPDOCS_EXPIRES_AT=2026-11-29T10:00:00Z\n"
    );
}

#[test]
fn the_json_format_writes_one_document_with_the_lifetime_as_expires_in() {
    let r = render(&spec(TokenFormat::Json, &[]), &token()).unwrap();
    assert_eq!(keys(&r), [JSON_KEY]);
    let doc: serde_json::Value = serde_json::from_str(&text(&r, JSON_KEY)).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_at": "2026-11-29T10:00:00Z",
            "expires_in": 86400,
        })
    );
    let later = render(&spec(TokenFormat::Json, &[]), &token()).unwrap();
    assert_eq!(r, later, "rendering is deterministic, so an unchanged token is never rewritten");
}

#[test]
fn every_format_reads_back_what_it_wrote() {
    for format in TokenFormat::ALL {
        let r = render(&spec(format, &[]), &token()).unwrap();
        let stored = read(format, &r.data).unwrap_or_else(|| panic!("{format:?}"));
        assert_eq!(stored.access_token.expose(), TOKEN, "{format:?}");
        assert_eq!(stored.token_type.as_deref(), Some("Bearer"), "{format:?}");
        assert_eq!(stored.expires_at, token().expires_at, "{format:?}");
        for other in TokenFormat::ALL.into_iter().filter(|f| *f != format) {
            assert!(read(other, &r.data).is_none(), "{format:?} data read as {other:?}");
        }
    }
}

#[test]
fn the_format_is_found_from_the_annotation_or_else_the_keys() {
    for format in TokenFormat::ALL {
        let data = render(&spec(format, &[]), &token()).unwrap().data;
        assert_eq!(read_any(Some(format), &data).map(|(f, _)| f), Some(format), "annotated");
        assert_eq!(read_any(None, &data).map(|(f, _)| f), Some(format), "annotation stripped");
        let wrong = TokenFormat::ALL.into_iter().find(|f| *f != format);
        assert_eq!(read_any(wrong, &data).map(|(f, _)| f), Some(format), "annotation wrong");
    }
    assert!(read_any(None, &BTreeMap::new()).is_none());
}

#[test]
fn the_env_reader_takes_hand_written_files() {
    let data = BTreeMap::from([(
        ENV_KEY.to_string(),
        ByteString(
            b"# comment\n\nexport GROUPDOCS_ACCESS_TOKEN=a.b.c\r\nGROUPDOCS_EXPIRES_AT=2026-11-29T10:00:00Z".to_vec(),
        ),
    )]);
    let stored = read(TokenFormat::Env, &data).unwrap();
    assert_eq!((stored.access_token.expose(), stored.token_type), ("a.b.c", None));
    for broken in ["GROUPDOCS_ACCESS_TOKEN=\nGROUPDOCS_EXPIRES_AT=2026-11-29T10:00:00Z", "GROUPDOCS_ACCESS_TOKEN=x", ""]
    {
        let data = BTreeMap::from([(ENV_KEY.to_string(), ByteString(broken.as_bytes().to_vec()))]);
        assert!(read(TokenFormat::Env, &data).is_none(), "{broken:?}");
    }
    let json = BTreeMap::from([(JSON_KEY.to_string(), ByteString(b"{\"access_token\": 1}".to_vec()))]);
    assert!(read(TokenFormat::Json, &json).is_none());
}

#[test]
fn templates_render_every_variable_next_to_the_format_keys() {
    let s = spec(
        TokenFormat::Json,
        &[
            ("config.ini", "token={{ access_token }}\ntype={{ token_type }}\n"),
            ("header", "Authorization: {{ authorization }}"),
            (
                "meta.json",
                "{\"t\": {{ access_token | tojson }}, \"at\": \"{{ expires_at }}\", \"in\": {{ expires_in }}}",
            ),
        ],
    );
    check(&s).unwrap();
    let r = render(&s, &token()).unwrap();
    assert_eq!(keys(&r), ["config.ini", "header", "meta.json", JSON_KEY]);
    assert_eq!(text(&r, "config.ini"), "token=eyJ.abc.def\ntype=Bearer\n");
    assert_eq!(text(&r, "header"), "Authorization: Bearer eyJ.abc.def");
    // No escaping guessed from `.json`: the template quotes with `tojson` where it wants to.
    assert_eq!(text(&r, "meta.json"), r#"{"t": "eyJ.abc.def", "at": "2026-11-29T10:00:00Z", "in": 86400}"#);
    assert!(r.templates_digest.is_some());
}

#[test]
fn template_mistakes_fail_validation_with_the_engines_message() {
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("a", "{{ acess_token }}")], "`acess_token` is undefined"),
        (&[("a", "{{ access_token ")], "syntax error"),
        (&[("a", "{{ access_token | nosuchfilter }}")], "unknown filter"),
        (&[("a", "{{ access_token + 1 }}")], "unsupported types"),
        (&[("a", "{% include 'x' %}")], "unknown statement include"),
        (&[("a", "{{ env.HOME }}")], "`env` is undefined"),
    ];
    for (templates, want) in cases {
        let msg = error(&spec(TokenFormat::Default, templates));
        assert!(msg.starts_with("invalid spec: spec.target.template[\"a\"]: "), "{msg}");
        assert!(msg.contains(want), "{templates:?}: {msg}");
    }
}

#[test]
fn template_keys_are_secret_keys_and_do_not_take_the_formats_keys() {
    for bad in ["", "a/b", "a b", ".", "..a", "ü", &"k".repeat(254)] {
        let msg = error(&spec(TokenFormat::Default, &[(bad, "x")]));
        assert!(msg.contains("not a Secret key"), "{bad:?}: {msg}");
    }
    check(&spec(TokenFormat::Default, &[(&"k".repeat(253), "x"), ("a.b-c_D9", "x"), (".hidden", "x")])).unwrap();
    for format in TokenFormat::ALL {
        for key in format.keys() {
            let msg = error(&spec(format, &[(key, "x")]));
            assert!(msg.contains("writes this key itself"), "{msg}");
        }
    }
    check(&spec(TokenFormat::Env, &[(ACCESS_TOKEN_KEY, "{{ access_token }}")])).unwrap();
}

#[test]
fn templates_are_bounded_in_number_size_work_and_output() {
    let many: Vec<(String, String)> = (0..=MAX_TEMPLATES).map(|i| (format!("k{i}"), "x".to_string())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert!(error(&spec(TokenFormat::Default, &many)).contains("at most 16 templates"));
    let long = "x".repeat(MAX_TEMPLATE_LEN + 1);
    assert!(error(&spec(TokenFormat::Default, &[("a", &long)])).contains("longer than"));
    check(&spec(TokenFormat::Default, &[("a", &"é".repeat(MAX_TEMPLATE_LEN))])).unwrap();

    let started = std::time::Instant::now();
    let doubling = format!("{{% set a = access_token %}}{}{{{{ a }}}}", "{% set a = a ~ a %}".repeat(60));
    for bomb in [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set ns = namespace(x=access_token) %}{% for i in range(64) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        "{{ access_token * 1000000000 }}",
        &doubling,
    ] {
        let msg = error(&spec(TokenFormat::Default, &[("a", bomb)]));
        assert!(msg.contains("out of fuel"), "{bomb}: {msg}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "fuel stops work early: {:?}", started.elapsed());

    // Within the fuel, but more than a Secret value should hold.
    let msg = error(&spec(TokenFormat::Default, &[("a", "{{ access_token * 20 }}")]));
    assert!(msg.contains("renders more than"), "{msg}");
}

#[test]
fn a_template_that_fails_only_with_the_real_token_fails_the_render_without_showing_it() {
    // Passes with the stand-in (2 KiB) token, fails with a short one.
    let s = spec(TokenFormat::Default, &[("a", "{{ access_token[1500] }}")]);
    check(&s).unwrap();
    let err = render(&s, &token()).unwrap_err();
    assert_eq!(err.reason(), "InvalidSpec");
    let msg = err.to_string();
    assert!(msg.contains("is undefined"), "{msg}");
    let varying = spec(TokenFormat::Default, &[("a", "{{ 1 // (access_token | length - 11) }}")]);
    check(&varying).unwrap();
    assert!(render(&varying, &token()).unwrap_err().to_string().contains("1 // 0"));
    assert!(render(&varying, &crate::fixtures::token("a.longer.token")).is_ok());
    // The engine's messages seldom quote a value, but should one, the token is scrubbed out.
    let quoted = Error::InvalidSpec(format!("spec.target.template[\"a\"]: bad value {TOKEN} / Bearer {TOKEN}"));
    let msg = scrub(quoted, &token()).to_string();
    assert!(!msg.contains(TOKEN) && msg.contains("[REDACTED]"), "{msg}");
}

#[test]
fn debug_output_and_errors_never_show_the_token() {
    let s = spec(TokenFormat::Env, &[("a", "{{ access_token }}")]);
    let r = render(&s, &token()).unwrap();
    let shown = format!("{r:?} {r:#?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("groupdocs.env"), "keys are shown: {shown}");
    let stored = read(TokenFormat::Env, &r.data).unwrap();
    assert!(!format!("{:?}", stored.access_token).contains(TOKEN));
    // The stand-in values of validation never leak into a message either.
    let msg = error(&spec(TokenFormat::Default, &[("a", "{{ access_token ~ nope }}")]));
    assert!(!msg.contains("xxxxxxxx"), "{msg}");
}

#[test]
fn the_exact_check_sees_every_edit_to_format_or_template_keys() {
    let s = spec(TokenFormat::Json, &[("a", "{{ access_token }}"), ("b", "{{ expires_in }}")]);
    let r = render(&s, &token()).unwrap();
    let annotation = r.templates_digest.as_deref();
    assert!(is_exact(TokenFormat::Json, &token(), &r.data, annotation));
    type Edit = fn(&mut BTreeMap<String, ByteString>);
    let edits: [(&str, Edit); 4] = [
        ("format key", |d| drop(d.insert(JSON_KEY.into(), ByteString(b"{}".to_vec())))),
        ("template key", |d| drop(d.insert("a".into(), ByteString(b"x".to_vec())))),
        ("template key removed", |d| drop(d.remove("b"))),
        ("extra key", |d| drop(d.insert("c".into(), ByteString(b"x".to_vec())))),
    ];
    for (what, edit) in edits {
        let mut data = r.data.clone();
        edit(&mut data);
        assert!(!is_exact(TokenFormat::Json, &token(), &data, annotation), "{what}");
    }
    assert!(!is_exact(TokenFormat::Json, &token(), &r.data, None), "template keys without their annotation");
    let plain = render(&spec(TokenFormat::Json, &[]), &token()).unwrap();
    assert!(is_exact(TokenFormat::Json, &token(), &plain.data, None));
    assert!(!is_exact(TokenFormat::Default, &token(), &plain.data, None), "another format");
}

#[test]
fn the_templates_digest_changes_with_the_templates_not_the_token() {
    let a = spec(TokenFormat::Default, &[("a", "{{ access_token }}")]);
    let b = spec(TokenFormat::Default, &[("a", "{{ authorization }}")]);
    let renamed = spec(TokenFormat::Default, &[("b", "{{ access_token }}")]);
    let digest = |s: &TargetSecret| templates_spec_digest(&s.template).unwrap();
    assert_ne!(digest(&a), digest(&b));
    assert_ne!(digest(&a), digest(&renamed));
    assert_eq!(templates_spec_digest(&BTreeMap::new()), None);
    let first = render(&a, &token()).unwrap().templates_digest.unwrap();
    let other = render(&a, &crate::fixtures::token("other")).unwrap().templates_digest.unwrap();
    assert_eq!(spec_part(&first), digest(&a));
    assert_eq!(spec_part(&first), spec_part(&other));
    assert_ne!(first, other, "the output part follows the token");
}

#[test]
fn format_names_round_trip_through_the_spec() {
    for format in TokenFormat::ALL {
        assert_eq!(TokenFormat::from_name(format.name()), Some(format));
        let json = serde_json::to_value(format).unwrap();
        assert_eq!(json, serde_json::json!(format.name()));
    }
    assert_eq!(TokenFormat::from_name("yaml"), None);
    let target: TargetSecret = serde_json::from_value(serde_json::json!({"name": "t"})).unwrap();
    assert_eq!(target.format, TokenFormat::Default);
    assert_eq!(serde_json::to_value(&target).unwrap(), serde_json::json!({"name": "t"}), "default is not written");
    let bad = serde_json::from_value::<TargetSecret>(serde_json::json!({"format": "yaml"}));
    assert!(bad.is_err());
}
