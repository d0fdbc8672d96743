//! `Ready`, `Reconciling` and `Stalled` in the kstatus convention, from plain facts.
//!
//! Ready says whether workloads have a usable token; it does not flap on a failed renewal
//! while the old token is still valid. Reconciling says a transient failure is being retried;
//! Stalled says a person has to act.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::error::Error;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// What this reconcile did.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// The first token for the current spec was written.
    Issued,
    /// A newer token replaced one that was already in place.
    Renewed,
    /// The token in place is still right; nothing was fetched.
    Current,
    /// `spec.suspend` is set.
    Suspended,
    Failed(&'a Error),
}

#[derive(Debug)]
pub struct Facts<'a> {
    pub generation: Option<i64>,
    /// Expiry of the token in the target Secret, if it was issued for the current spec and
    /// client Secret (it may have expired).
    pub token_expires_at: Option<Timestamp>,
    pub outcome: Outcome<'a>,
    pub now: Timestamp,
    /// Something the user should know that does not stop the token (appended to Ready's message).
    pub note: Option<String>,
}

/// The new condition list. `lastTransitionTime` moves only when a condition's status does.
pub fn conditions(previous: &[Condition], facts: &Facts) -> Vec<Condition> {
    let valid_until = facts.token_expires_at.filter(|t| *t > facts.now);
    let prev_ready_reason = previous
        .iter()
        .find(|c| c.type_ == READY && c.status == "True")
        .map(|c| c.reason.as_str())
        .filter(|r| *r == "TokenIssued" || *r == "TokenRenewed")
        .unwrap_or("TokenIssued");

    let (ready, ready_reason, ready_message): (bool, &str, String) = match (&facts.outcome, valid_until) {
        (Outcome::Issued, Some(t)) => (true, "TokenIssued", format!("token valid until {t}")),
        (Outcome::Renewed, Some(t)) => (true, "TokenRenewed", format!("token valid until {t}")),
        (Outcome::Current, Some(t)) => (true, prev_ready_reason, format!("token valid until {t}")),
        (Outcome::Suspended, Some(t)) => {
            (true, "Suspended", format!("renewal is suspended; the token stays valid until {t}"))
        }
        (Outcome::Failed(e), Some(t)) => {
            (true, prev_ready_reason, format!("token valid until {t}; renewal failing: {e}"))
        }
        (outcome, None) => match (facts.token_expires_at, outcome) {
            (Some(expired), Outcome::Failed(e)) => (false, "TokenExpired", format!("token expired at {expired}; {e}")),
            (Some(expired), _) => (false, "TokenExpired", format!("token expired at {expired}")),
            (None, Outcome::Failed(e)) => (false, e.reason(), e.to_string()),
            (None, Outcome::Suspended) => {
                (false, "Suspended", "renewal is suspended and no valid token is in place".to_string())
            }
            (None, _) => (false, "TokenExpired", "no valid token is in place".to_string()),
        },
    };

    let failure = match &facts.outcome {
        Outcome::Failed(e) => Some(*e),
        _ => None,
    };
    let (reconciling, stalled) = match failure {
        Some(e) if e.is_stalled() => (
            condition(RECONCILING, false, e.reason(), "waiting for a change to the spec or the client Secret"),
            condition(STALLED, true, e.reason(), &e.to_string()),
        ),
        Some(e) => (
            condition(RECONCILING, true, e.reason(), &e.to_string()),
            condition(STALLED, false, e.reason(), "retrying"),
        ),
        None => (
            condition(RECONCILING, false, ready_reason, "up to date"),
            condition(STALLED, false, ready_reason, "up to date"),
        ),
    };
    let ready_message = match &facts.note {
        Some(note) => format!("{ready_message}; {note}"),
        None => ready_message,
    };
    let ready = condition(READY, ready, ready_reason, &ready_message);
    [ready, reconciling, stalled]
        .into_iter()
        .map(|mut c| {
            c.observed_generation = facts.generation;
            c.last_transition_time = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .map_or(Time(facts.now), |p| p.last_transition_time.clone());
            c
        })
        .collect()
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.chars().take(32 * 1024).collect(),
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn now() -> Timestamp {
        "2026-11-28T10:00:00Z".parse().unwrap()
    }

    fn get<'a>(cs: &'a [Condition], t: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == t).unwrap()
    }

    fn facts(outcome: Outcome<'_>, expires_in_secs: Option<i64>) -> Facts<'_> {
        Facts {
            generation: Some(3),
            token_expires_at: expires_in_secs.map(|s| now() + SignedDuration::from_secs(s)),
            outcome,
            now: now(),
            note: None,
        }
    }

    #[test]
    fn issued_token_is_ready() {
        let cs = conditions(&[], &facts(Outcome::Issued, Some(3600)));
        let ready = get(&cs, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "TokenIssued"));
        assert_eq!(get(&cs, RECONCILING).status, "False");
        assert_eq!(get(&cs, STALLED).status, "False");
        assert!(cs.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn failed_renewal_keeps_ready_true_while_the_token_is_valid() {
        let before = conditions(&[], &facts(Outcome::Renewed, Some(3600)));
        let err = Error::RateLimited {
            detail: "429".into(),
            until: now() + SignedDuration::from_secs(600),
            by: crate::error::Limit::Endpoint,
        };
        let cs = conditions(&before, &facts(Outcome::Failed(&err), Some(3000)));
        let ready = get(&cs, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "TokenRenewed"));
        assert_eq!(ready.last_transition_time, get(&before, READY).last_transition_time);
        let rec = get(&cs, RECONCILING);
        assert_eq!((rec.status.as_str(), rec.reason.as_str()), ("True", "RateLimited"));
        assert!(rec.message.contains("2026-11-28T10:10:00Z"), "the retry time is in the message: {}", rec.message);
    }

    #[test]
    fn expired_token_makes_ready_false_token_expired() {
        let err = Error::TokenEndpointUnavailable { detail: "HTTP 503".into(), retry_at: now() };
        let cs = conditions(&[], &facts(Outcome::Failed(&err), Some(-1)));
        let ready = get(&cs, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "TokenExpired"));
        assert_eq!(get(&cs, RECONCILING).reason, "TokenEndpointUnavailable");
    }

    #[test]
    fn person_needed_is_stalled_and_not_ready_without_a_token() {
        let err = Error::InvalidClient { detail: "HTTP 400: invalid_client".into(), retry_at: now() };
        let cs = conditions(&[], &facts(Outcome::Failed(&err), None));
        assert_eq!((get(&cs, READY).status.as_str(), get(&cs, READY).reason.as_str()), ("False", "InvalidClient"));
        assert_eq!((get(&cs, STALLED).status.as_str(), get(&cs, STALLED).reason.as_str()), ("True", "InvalidClient"));
        assert_eq!(get(&cs, RECONCILING).status, "False");
    }

    #[test]
    fn transition_time_changes_only_with_status() {
        let first = conditions(&[], &facts(Outcome::Issued, Some(3600)));
        let later = Facts { now: now() + SignedDuration::from_secs(60), ..facts(Outcome::Current, Some(3600)) };
        let second = conditions(&first, &later);
        assert_eq!(first, second, "an unchanged state gives identical conditions (so no write)");
        let err = Error::InvalidSpec("x".into());
        let third = conditions(
            &second,
            &Facts { now: now() + SignedDuration::from_secs(120), ..facts(Outcome::Failed(&err), None) },
        );
        assert_ne!(get(&third, READY).last_transition_time, get(&second, READY).last_transition_time);
    }

    #[test]
    fn suspended() {
        let cs = conditions(&[], &facts(Outcome::Suspended, Some(60)));
        assert_eq!((get(&cs, READY).status.as_str(), get(&cs, READY).reason.as_str()), ("True", "Suspended"));
        let cs = conditions(&[], &facts(Outcome::Suspended, None));
        assert_eq!(get(&cs, READY).status, "False");
    }
}
