use super::*;
use jiff::SignedDuration;

use crate::fixtures::issued_for;
use crate::redact::Sensitive;
use k8s_openapi::ByteString;

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

fn cr() -> GroupDocsCredential {
    let mut cr = crate::fixtures::credential("uid-1");
    cr.spec.target.labels.insert("team".into(), "docs".into());
    cr
}

fn token() -> Token {
    crate::fixtures::token("eyJ.abc.def")
}

#[test]
fn renders_the_documented_keys_labels_and_owner() {
    let s = render(&Target::of(&cr()), &token(), &issued_for()).unwrap();
    let data = s.data.as_ref().unwrap();
    assert_eq!(data[ACCESS_TOKEN_KEY].0, b"eyJ.abc.def");
    assert_eq!(data[TOKEN_TYPE_KEY].0, b"Bearer");
    assert_eq!(data[EXPIRES_AT_KEY].0, b"2026-11-29T10:00:00Z");
    assert_eq!(data[AUTHORIZATION_KEY].0, b"Bearer eyJ.abc.def");
    let labels = s.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(labels["team"], "docs");
    assert_eq!(s.metadata.name.as_deref(), Some("viewer-token"));
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.uid.as_str(), owner.controller), ("uid-1", Some(true)));
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
}

#[test]
fn reads_back_what_it_rendered() {
    let s = render(&Target::of(&cr()), &token(), &issued_for()).unwrap();
    assert_eq!(read_token(&s), Some((token(), issued_for())));
}

#[test]
fn ownership_is_by_controller_uid_not_labels() {
    let cr = cr();
    let mut s = render(&Target::of(&cr), &token(), &issued_for()).unwrap();
    assert_eq!(ownership(Some(&s.metadata), &Target::of(&cr)), Ownership::Ours);
    s.metadata.labels = None;
    assert_eq!(
        ownership(Some(&s.metadata), &Target::of(&cr)),
        Ownership::Ours,
        "a stripped label does not make it foreign"
    );
    s.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    assert_eq!(ownership(Some(&s.metadata), &Target::of(&cr)), Ownership::Foreign);
    assert_eq!(ownership(None, &Target::of(&cr)), Ownership::Absent);
}

/// The cache keeps hashes of the ownerReferences, not the references: it must decide
/// ownership exactly as the full Secret does.
#[test]
fn the_cached_view_decides_ownership_as_the_secret_does() {
    let cr = cr();
    let target = Target::of(&cr);
    let edits: Vec<(&str, Edit)> = vec![
        ("as rendered", |_| {}),
        ("no labels", |s| s.metadata.labels = None),
        ("other uid", |s| s.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into()),
        ("not the controller", |s| s.metadata.owner_references.as_mut().unwrap()[0].controller = Some(false)),
        ("controller unset", |s| s.metadata.owner_references.as_mut().unwrap()[0].controller = None),
        ("no owners", |s| s.metadata.owner_references = None),
        ("a second owner first", |s| {
            let mut other = s.metadata.owner_references.as_ref().unwrap()[0].clone();
            other.uid = "other".into();
            other.controller = None;
            s.metadata.owner_references.as_mut().unwrap().insert(0, other);
        }),
    ];
    for (what, edit) in edits {
        let mut s = render(&target, &token(), &issued_for()).unwrap();
        edit(&mut s);
        let cached = CachedSecret::from(&s);
        assert_eq!(cached_ownership(Some(&cached), &target), ownership(Some(&s.metadata), &target), "{what}");
    }
    assert_eq!(cached_ownership(None, &target), Ownership::Absent);
    let mut unowned = cr.clone();
    unowned.metadata.uid = None;
    let s = render(&target, &token(), &issued_for()).unwrap();
    let without_owner = Target::of(&unowned);
    assert_eq!(
        cached_ownership(Some(&CachedSecret::from(&s)), &without_owner),
        ownership(Some(&s.metadata), &without_owner)
    );
}

#[test]
fn merge_repairs_our_parts_and_keeps_others() {
    let cr = cr();
    let desired = render(&Target::of(&cr), &token(), &issued_for()).unwrap();
    let mut edited = desired.clone();
    edited.metadata.uid = Some("secret-uid".into());
    edited.metadata.resource_version = Some("7".into());
    edited.metadata.labels.as_mut().unwrap().remove(MANAGED_BY_LABEL);
    edited.metadata.labels.as_mut().unwrap().insert("extra".into(), "kept".into());
    edited.data.as_mut().unwrap().insert(ACCESS_TOKEN_KEY.into(), bytes("tampered"));
    edited.data.as_mut().unwrap().insert("junk".into(), bytes("x"));
    let want = super::desired(&Target::of(&cr), &token().facts(), &issued_for());
    assert!(needs_update(&CachedSecret::from(edited.clone()), &want));
    let merged = merge(&edited, &desired);
    assert_eq!(merged.data, desired.data);
    assert_eq!(merged.metadata.labels.as_ref().unwrap()["extra"], "kept");
    assert_eq!(merged.metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(merged.metadata.uid.as_deref(), Some("secret-uid"));
    assert_eq!(merged.metadata.resource_version.as_deref(), Some("7"));
    assert!(!needs_update(&CachedSecret::from(merged), &want), "a repaired Secret needs no further write");
}

#[test]
fn the_cached_view_of_a_rendered_secret_is_the_desired_view() {
    let cr = cr();
    let rendered = CachedSecret::from(render(&Target::of(&cr), &token(), &issued_for()).unwrap());
    let want = desired(&Target::of(&cr), &token().facts(), &issued_for());
    assert!(!needs_update(&rendered, &want));
    assert_eq!(rendered.held_token_for(&issued_for()), Some(&token().facts()));
    let other = IssuedFor { client_secret_version: "43".into(), ..issued_for() };
    assert_eq!(rendered.held_token_for(&other), None, "issued for other inputs");
    assert_eq!(rendered.held_token(), Some(&token().facts()));
}

type Edit = fn(&mut Secret);

#[test]
fn the_cached_view_sees_every_change_a_repair_would_undo() {
    let cr = cr();
    let want = desired(&Target::of(&cr), &token().facts(), &issued_for());
    let edits: Vec<(&str, Edit)> = vec![
        ("token", |s| {
            data(s).insert(ACCESS_TOKEN_KEY.into(), bytes("other"));
        }),
        ("authorization", |s| {
            data(s).insert(AUTHORIZATION_KEY.into(), bytes("x"));
        }),
        ("expiry format", |s| {
            data(s).insert(EXPIRES_AT_KEY.into(), bytes("2026-11-29T10:00:00+00:00"));
        }),
        ("extra key", |s| {
            data(s).insert("junk".into(), bytes("x"));
        }),
        ("missing token_type", |s| {
            data(s).remove(TOKEN_TYPE_KEY);
        }),
        ("our label", |s| {
            s.metadata.labels.as_mut().unwrap().remove(MANAGED_BY_LABEL);
        }),
        ("target label", |s| {
            s.metadata.labels.as_mut().unwrap().insert("team".into(), "other".into());
        }),
        ("annotation", |s| {
            s.metadata.annotations.as_mut().unwrap().remove(CLIENT_ID_ANNOTATION);
        }),
        ("stray scope", |s| {
            s.metadata.annotations.as_mut().unwrap().insert(SCOPE_ANNOTATION.into(), "x".into());
        }),
        ("owner", |s| s.metadata.owner_references = None),
        ("owner's kind", |s| s.metadata.owner_references.as_mut().unwrap()[0].kind = "Other".into()),
        ("owner not controller", |s| s.metadata.owner_references.as_mut().unwrap()[0].controller = Some(false)),
        ("type", |s| s.type_ = Some("kubernetes.io/tls".into())),
    ];
    for (what, edit) in edits {
        let mut s = render(&Target::of(&cr), &token(), &issued_for()).unwrap();
        edit(&mut s);
        assert!(needs_update(&CachedSecret::from(s), &want), "{what}");
    }
    let mut foreign_additions = render(&Target::of(&cr), &token(), &issued_for()).unwrap();
    foreign_additions.metadata.labels.as_mut().unwrap().insert("extra".into(), "x".into());
    foreign_additions.metadata.annotations.as_mut().unwrap().insert("extra".into(), "x".into());
    assert!(!needs_update(&CachedSecret::from(foreign_additions), &want), "what others add stays");
}

fn data(s: &mut Secret) -> &mut BTreeMap<String, ByteString> {
    s.data.as_mut().unwrap()
}

#[test]
fn a_jwt_exp_bounds_an_edited_expiry() {
    use base64::Engine as _;
    let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let exp = token().issued_at + SignedDuration::from_hours(1);
    let jwt =
        format!("{}.{}.sig", enc(serde_json::json!({"alg":"HS256"})), enc(serde_json::json!({"exp": exp.as_second()})));
    let t = Token { access_token: Sensitive::new(jwt), ..token() };
    let mut s = render(&Target::of(&cr()), &t, &issued_for()).unwrap();
    data(&mut s).insert(EXPIRES_AT_KEY.into(), bytes("2099-01-01T00:00:00Z"));
    assert_eq!(read_token(&s).unwrap().0.expires_at, exp);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a Secret holds (anyone with write access to it may edit it), reading it
        /// back never panics and never yields an issue time after the expiry.
        #[test]
        fn any_secret_reads_without_panicking(
            token in proptest::option::of(".{0,64}"),
            expires in proptest::option::of(prop_oneof![".{0,40}", (-400_000_000_000i64..400_000_000_000).prop_map(|s| Timestamp::from_second(s.clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second())).unwrap().to_string())]),
            issued in proptest::option::of(prop_oneof![".{0,40}", (-400_000_000_000i64..400_000_000_000).prop_map(|s| Timestamp::from_second(s.clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second())).unwrap().to_string())]),
            annotations in proptest::collection::btree_map("[a-z./-]{0,30}", ".{0,30}", 0..6),
        ) {
            let mut s = Secret::default();
            let mut data = BTreeMap::new();
            if let Some(t) = token { data.insert(ACCESS_TOKEN_KEY.to_string(), bytes(&t)); }
            if let Some(e) = expires { data.insert(EXPIRES_AT_KEY.to_string(), bytes(&e)); }
            s.data = Some(data);
            let mut a = annotations;
            if let Some(i) = issued { a.insert(ISSUED_AT_ANNOTATION.to_string(), i); }
            for key in [TOKEN_URL_ANNOTATION, CLIENT_ID_ANNOTATION, CLIENT_SECRET_VERSION_ANNOTATION] {
                a.entry(key.to_string()).or_insert_with(|| "x".to_string());
            }
            s.metadata.annotations = Some(a);
            if let Some((token, _)) = read_token(&s) {
                prop_assert!(token.issued_at <= token.expires_at);
                let _ = token.facts().lifetime();
            }
            let _ = CachedSecret::from(s);
        }
    }
}

mod formats {
    use super::*;
    use crate::format::{ENV_KEY, JSON_KEY, TokenFormat};

    type Layout = (TokenFormat, &'static [(&'static str, &'static str)]);

    const LAYOUTS: [Layout; 5] = [
        (TokenFormat::Default, &[]),
        (TokenFormat::Env, &[]),
        (TokenFormat::Json, &[]),
        (TokenFormat::Default, &[("config.ini", "token={{ access_token }}\n")]),
        (TokenFormat::Json, &[("a", "{{ authorization }}"), ("b", "{{ expires_in }}")]),
    ];

    fn cr_with((format, templates): Layout) -> GroupDocsCredential {
        let mut cr = cr();
        cr.spec.target.format = format;
        cr.spec.target.template = templates.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        cr
    }

    fn rendered(cr: &GroupDocsCredential) -> Secret {
        render(&Target::of(cr), &token(), &issued_for()).unwrap()
    }

    fn want(cr: &GroupDocsCredential) -> CachedSecret {
        desired(&Target::of(cr), &token().facts(), &issued_for())
    }

    fn annotations(s: &mut Secret) -> &mut BTreeMap<String, String> {
        s.metadata.annotations.as_mut().unwrap()
    }

    #[test]
    fn every_layout_reads_back_and_needs_no_second_write() {
        for layout in LAYOUTS {
            let cr = cr_with(layout);
            let s = rendered(&cr);
            assert_eq!(read_token(&s), Some((token(), issued_for())), "{layout:?}");
            let cached = CachedSecret::from(s);
            assert!(!needs_update(&cached, &want(&cr)), "{layout:?}: a rendered Secret is what is desired");
            assert_eq!(cached.held_token_for(&issued_for()), Some(&token().facts()), "{layout:?}");
        }
    }

    #[test]
    fn the_annotations_name_the_format_and_templates_only_when_used() {
        let plain = rendered(&cr_with(LAYOUTS[0]));
        let a = plain.metadata.annotations.as_ref().unwrap();
        assert!(!a.contains_key(FORMAT_ANNOTATION) && !a.contains_key(TEMPLATES_ANNOTATION), "{a:?}");
        let json = rendered(&cr_with(LAYOUTS[4]));
        let a = json.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[FORMAT_ANNOTATION], "json");
        assert!(a[TEMPLATES_ANNOTATION].contains('.'));
        let keys: Vec<&str> = json.data.as_ref().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "b", JSON_KEY]);
    }

    #[test]
    fn a_layout_change_rewrites_the_secret_from_the_token_in_place() {
        for from in LAYOUTS {
            for to in LAYOUTS {
                let (old, new) = (cr_with(from), cr_with(to));
                let existing = rendered(&old);
                let cached = CachedSecret::from(existing.clone());
                assert_eq!(needs_update(&cached, &want(&new)), from != to, "{from:?} -> {to:?}");
                // The token in place is read from the old layout: no token request.
                let (token_in_place, _) = read_token(&existing).unwrap();
                let merged = merge(&existing, &render(&Target::of(&new), &token_in_place, &issued_for()).unwrap());
                assert_eq!(merged.data, rendered(&new).data, "{from:?} -> {to:?}: old keys are gone");
                assert_eq!(
                    merged.metadata.annotations,
                    rendered(&new).metadata.annotations,
                    "{from:?} -> {to:?}: stale format and templates annotations are gone"
                );
                assert!(!needs_update(&CachedSecret::from(merged), &want(&new)), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn hand_edits_to_formatted_secrets_are_seen() {
        type Edit = fn(&mut Secret);
        let edits: Vec<(Layout, &str, Edit)> = vec![
            (LAYOUTS[4], "template value", |s| drop(data(s).insert("a".into(), bytes("x")))),
            (LAYOUTS[4], "template key removed", |s| drop(data(s).remove("b"))),
            (LAYOUTS[4], "token.json", |s| drop(data(s).insert(JSON_KEY.into(), bytes("{}")))),
            (LAYOUTS[4], "templates annotation", |s| drop(annotations(s).remove(TEMPLATES_ANNOTATION))),
            (LAYOUTS[1], "env line", |s| drop(data(s).insert(ENV_KEY.into(), bytes("GROUPDOCS_ACCESS_TOKEN=x")))),
            (LAYOUTS[1], "format annotation", |s| drop(annotations(s).remove(FORMAT_ANNOTATION))),
            (LAYOUTS[1], "extra key", |s| drop(data(s).insert(ACCESS_TOKEN_KEY.into(), bytes("x")))),
            (LAYOUTS[0], "stray format", |s| drop(annotations(s).insert(FORMAT_ANNOTATION.into(), "json".into()))),
            (LAYOUTS[0], "stray templates", |s| drop(annotations(s).insert(TEMPLATES_ANNOTATION.into(), "a.b".into()))),
            (LAYOUTS[3], "extra key", |s| drop(data(s).insert("junk".into(), bytes("x")))),
        ];
        for (layout, what, edit) in edits {
            let cr = cr_with(layout);
            let mut s = rendered(&cr);
            edit(&mut s);
            assert!(needs_update(&CachedSecret::from(s), &want(&cr)), "{layout:?}: {what}");
        }
    }

    #[test]
    fn a_stripped_format_annotation_still_yields_the_token() {
        for layout in [LAYOUTS[1], LAYOUTS[2], LAYOUTS[4]] {
            let mut s = rendered(&cr_with(layout));
            annotations(&mut s).remove(FORMAT_ANNOTATION);
            assert_eq!(read_token(&s), Some((token(), issued_for())), "{layout:?}");
            annotations(&mut s).insert(FORMAT_ANNOTATION.into(), "yaml".into());
            assert_eq!(read_token(&s), Some((token(), issued_for())), "{layout:?}: unknown name");
        }
    }
}

#[test]
fn validation_finds_template_mistakes_before_any_token_is_requested() {
    let spec = serde_json::from_value(serde_json::json!({"clientSecretRef": {"name": "client"}})).unwrap();
    let mut cr = GroupDocsCredential::new("viewer", spec);
    cr.spec.target.template.insert("a".into(), "{{ acess_token }}".into());
    let err = cr.validate().unwrap_err();
    assert_eq!(err.reason(), "InvalidSpec");
    assert!(err.to_string().contains("`acess_token` is undefined"), "{err}");
    cr.spec.target.template.insert("a".into(), "{{ access_token }}".into());
    cr.validate().unwrap();
}
