//! Unit and property tests of the pure decisions.
use super::*;

use crate::crd::GroupDocsCredentialSpec;
use crate::redact::Sensitive;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The longest hold `run` would allow with a 1h `--invalid-client-retry`.
const MAX_HOLD: SignedDuration = SignedDuration::from_hours(1);

fn inputs(version: &str) -> Inputs {
    let issued_for = IssuedFor {
        token_url: "https://api.groupdocs.cloud/connect/token".into(),
        client_id: "id".into(),
        scope: None,
        client_secret_version: version.into(),
    };
    let request = TokenRequest {
        url: issued_for.token_url.clone(),
        client_id: "id".into(),
        client_secret: Sensitive::new("s"),
        scope: None,
    };
    Inputs { request, issued_for, renew_before: None }
}

fn failed_status(reason: &str, failed_at: &str, retry_at: &str) -> GroupDocsCredentialStatus {
    GroupDocsCredentialStatus {
        observed_generation: Some(1),
        failed_attempts: 1,
        last_failure_time: Some(Time(t(failed_at))),
        next_retry_time: Some(Time(t(retry_at))),
        last_failure_client_secret_version: Some("7".into()),
        conditions: vec![Condition {
            type_: conditions::STALLED.into(),
            status: "True".into(),
            reason: reason.into(),
            message: "the token endpoint rejected the client credentials: HTTP 400".into(),
            observed_generation: Some(1),
            last_transition_time: Time(t(failed_at)),
        }],
        ..Default::default()
    }
}

fn credential() -> GroupDocsCredential {
    let mut cr = GroupDocsCredential::new("c", GroupDocsCredentialSpec::default());
    cr.metadata.generation = Some(1);
    cr
}

#[test]
fn a_failure_in_status_holds_until_its_retry_time_unless_something_changed() {
    let status = failed_status("InvalidClient", "2026-11-28T10:00:00Z", "2026-11-28T10:30:00Z");
    let now = t("2026-11-28T10:05:00Z");
    let held = held_by_status(&credential(), &status, &inputs("7"), now, MAX_HOLD).unwrap();
    assert_eq!((held.reason(), held.retry_at()), ("InvalidClient", Some(t("2026-11-28T10:30:00Z"))));
    assert_eq!(held.to_string(), status.conditions[0].message, "the same message: no status write");
    assert!(held.is_stalled());
    let none = |status: &GroupDocsCredentialStatus, inputs: &Inputs, cr: &GroupDocsCredential, now| {
        held_by_status(cr, status, inputs, now, MAX_HOLD).is_none()
    };
    assert!(none(&status, &inputs("8"), &credential(), now), "a changed client Secret is retried at once");
    let mut edited = credential();
    edited.metadata.generation = Some(2);
    assert!(none(&status, &inputs("7"), &edited, now), "a changed spec is retried at once");
    assert!(none(&status, &inputs("7"), &credential(), t("2026-11-28T10:30:00Z")), "the time has come");
    let forged = failed_status("InvalidClient", "2026-11-28T10:00:00Z", "2099-01-01T00:00:00Z");
    assert!(none(&forged, &inputs("7"), &credential(), now), "a retry beyond the longest hold is not ours");
    let future = failed_status("InvalidClient", "2027-01-01T00:00:00Z", "2027-01-01T00:10:00Z");
    assert!(none(&future, &inputs("7"), &credential(), now), "a failure in the future is not ours");
    let spec = failed_status("InvalidSpec", "2026-11-28T10:00:00Z", "2026-11-28T10:30:00Z");
    assert!(none(&spec, &inputs("7"), &credential(), now), "only token failures hold requests");
}

#[test]
fn status_times_override_edited_secret_times() {
    let facts = TokenFacts {
        fingerprint: "fp".into(),
        token_type: "Bearer".into(),
        issued_at: t("2026-11-28T12:00:00Z"),
        expires_at: t("2099-01-01T00:00:00Z"),
    };
    let status = GroupDocsCredentialStatus {
        token_fingerprint: Some("fp".into()),
        expires_at: Some(Time(t("2026-11-29T10:00:00Z"))),
        last_refresh_time: Some(Time(t("2026-11-28T10:00:00Z"))),
        ..Default::default()
    };
    let trusted = trusted_times(facts.clone(), &status);
    assert_eq!((trusted.issued_at, trusted.expires_at), (t("2026-11-28T10:00:00Z"), t("2026-11-29T10:00:00Z")));
    let other = GroupDocsCredentialStatus { token_fingerprint: Some("other".into()), ..status };
    assert_eq!(trusted_times(facts.clone(), &other).expires_at, facts.expires_at);
}

proptest::proptest! {
    /// Whatever times a status holds (edited by hand, or restored from an old backup),
    /// deciding holds, trusting times and requeueing never panic.
    #[test]
    fn status_times_never_panic(
        retry in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
        failed in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
        expires in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
        issued in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
        now in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
    ) {
        let at = |s| Timestamp::from_second(s).unwrap();
        let mut status = failed_status("RateLimited", "2026-11-28T10:00:00Z", "2026-11-28T10:00:00Z");
        status.conditions[0].type_ = conditions::RECONCILING.into();
        status.next_retry_time = Some(Time(at(retry)));
        status.last_failure_time = Some(Time(at(failed)));
        if let Some(held) = held_by_status(&credential(), &status, &inputs("7"), at(now), MAX_HOLD) {
            let until = held.retry_at().unwrap();
            proptest::prop_assert!(until > at(now) && until <= schedule::add(at(failed), MAX_HOLD));
        }
        let facts = TokenFacts { fingerprint: "fp".into(), token_type: "Bearer".into(), issued_at: at(issued), expires_at: at(expires) };
        let trusted = trusted_times(facts, &GroupDocsCredentialStatus { token_fingerprint: Some("fp".into()), expires_at: Some(Time(at(retry))), ..Default::default() });
        proptest::prop_assert!(trusted.issued_at <= trusted.expires_at);
        let wait = requeue_after(at(retry), at(now));
        proptest::prop_assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(86400));
    }
}
