//! When to renew a token and how long to wait after a failure. Pure functions of time.

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

/// Jitter spreads a fleet's renewals: up to this share of the lifetime...
const JITTER_SHARE: f64 = 0.05;
/// ...and never more than this.
const MAX_JITTER: SignedDuration = SignedDuration::from_secs(300);

/// How long before expiry to renew: `renew_before` when it is shorter than the lifetime,
/// otherwise (and by default) one third of the lifetime.
pub fn renew_lead(lifetime: SignedDuration, renew_before: Option<SignedDuration>) -> SignedDuration {
    match renew_before {
        Some(lead) if lead.is_positive() && lead < lifetime => lead,
        _ => lifetime / 3,
    }
}

/// When a token issued at `issued_at` and expiring at `expires_at` should be renewed.
///
/// `jitter` in `[0, 1)` moves the time earlier by up to 5% of the lifetime (at most 5 min).
/// The result is never sooner than `min_interval` after issue, so no input can make the
/// operator renew in a loop, and it is strictly before expiry whenever the lifetime exceeds
/// `min_interval`.
pub fn refresh_at(
    issued_at: Timestamp,
    expires_at: Timestamp,
    renew_before: Option<SignedDuration>,
    jitter: f64,
    min_interval: SignedDuration,
) -> Timestamp {
    let lifetime = expires_at.duration_since(issued_at);
    let earliest = add(issued_at, min_interval);
    if !lifetime.is_positive() {
        return whole_seconds(earliest);
    }
    let lead = renew_lead(lifetime, renew_before);
    let max_jitter = lifetime.mul_f64(JITTER_SHARE).min(MAX_JITTER);
    let jitter = max_jitter.mul_f64(unit(jitter));
    let at = expires_at.saturating_sub(lead).and_then(|t| t.saturating_sub(jitter)).unwrap_or(issued_at);
    whole_seconds(at.max(earliest))
}

/// `x` as a factor in `[0, 1]`; NaN counts as 0 (`SignedDuration::mul_f64` panics on NaN).
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// `t` rounded up to the next whole second: a "not before" time in status and messages that
/// stays the same on every reconcile and is never earlier than the real one.
pub fn ceil_seconds(t: Timestamp) -> Timestamp {
    let floor = whole_seconds(t);
    if floor == t { t } else { floor.saturating_add(SignedDuration::from_secs(1)).unwrap_or(floor) }
}

/// `t + d`, pinned to the ends of the timestamp range instead of panicking.
pub fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.saturating_add(d).unwrap_or(if d.is_negative() { Timestamp::MIN } else { Timestamp::MAX })
}

/// `t` without its fraction of a second: Kubernetes stores times to the second, and status
/// written with finer times would never compare equal to what is read back.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// A stable number in `[0, 1)` from `seed`: the same token of the same credential always gets
/// the same jitter, so repeated reconciles do not move its renewal time around.
pub fn jitter_for(seed: &str) -> f64 {
    let digest = Sha256::digest(seed.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(first);
    (n >> 11) as f64 / (1u64 << 53) as f64
}

/// Exponential backoff with jitter and a cap, after `failures` consecutive failures (>= 1).
/// `random` in `[0, 1)` picks a point in the upper half of the window ("equal jitter").
pub fn backoff(failures: u32, base: SignedDuration, cap: SignedDuration, random: f64) -> SignedDuration {
    let exp = failures.saturating_sub(1).min(30);
    let window = base.checked_mul(1i32 << exp.min(30)).unwrap_or(cap).min(cap);
    let half = window / 2;
    half.saturating_add(half.mul_f64(unit(random)))
}

/// Parses a duration such as `1h`, `30m`, `1h30m` or `90s`.
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let d: SignedDuration =
        s.trim().parse().map_err(|_| format!("{s:?} is not a duration such as 1h, 30m or 1h30m"))?;
    if d.is_negative() {
        return Err(format!("{s:?} is negative"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const MIN: SignedDuration = SignedDuration::from_secs(30);

    #[test]
    fn default_renews_with_a_third_left() {
        let at = refresh_at(t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z"), None, 0.0, MIN);
        assert_eq!(at, t("2026-01-01T16:00:00Z"));
        // one-hour tokens: 20 minutes before expiry
        let at = refresh_at(t("2026-01-01T00:00:00Z"), t("2026-01-01T01:00:00Z"), None, 0.0, MIN);
        assert_eq!(at, t("2026-01-01T00:40:00Z"));
    }

    #[test]
    fn renew_before_is_honoured_and_jitter_moves_earlier_within_bounds() {
        let issued = t("2026-01-01T00:00:00Z");
        let expires = t("2026-01-02T00:00:00Z");
        let lead = Some(SignedDuration::from_hours(1));
        assert_eq!(refresh_at(issued, expires, lead, 0.0, MIN), t("2026-01-01T23:00:00Z"));
        let jittered = refresh_at(issued, expires, lead, 0.999, MIN);
        assert!(jittered < t("2026-01-01T23:00:00Z") && jittered >= t("2026-01-01T22:55:00Z"));
    }

    #[test]
    fn renew_before_longer_than_lifetime_falls_back_to_a_third() {
        let at = refresh_at(
            t("2026-01-01T00:00:00Z"),
            t("2026-01-01T01:00:00Z"),
            Some(SignedDuration::from_hours(2)),
            0.0,
            MIN,
        );
        assert_eq!(at, t("2026-01-01T00:40:00Z"));
    }

    #[test]
    fn never_sooner_than_the_minimum_interval() {
        let issued = t("2026-01-01T00:00:00Z");
        let at = refresh_at(issued, t("2026-01-01T00:00:10Z"), None, 0.5, MIN);
        assert_eq!(at, t("2026-01-01T00:00:30Z"));
        let at = refresh_at(issued, issued, None, 0.5, MIN);
        assert_eq!(at, t("2026-01-01T00:00:30Z"));
    }

    #[test]
    fn jitter_is_stable_and_in_range() {
        assert_eq!(jitter_for("a"), jitter_for("a"));
        assert_ne!(jitter_for("a"), jitter_for("b"));
        for i in 0..1000 {
            let j = jitter_for(&i.to_string());
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = SignedDuration::from_secs(5);
        let cap = SignedDuration::from_secs(300);
        assert_eq!(backoff(1, base, cap, 0.0), SignedDuration::from_millis(2500));
        assert_eq!(backoff(1, base, cap, 1.0), base);
        assert_eq!(backoff(3, base, cap, 1.0), SignedDuration::from_secs(20));
        assert_eq!(backoff(50, base, cap, 1.0), cap);
        assert!(backoff(50, base, cap, 0.0) >= cap / 2);
    }

    #[test]
    fn whole_second_ceilings() {
        assert_eq!(ceil_seconds(t("2026-01-01T00:00:00Z")), t("2026-01-01T00:00:00Z"));
        assert_eq!(ceil_seconds(t("2026-01-01T00:00:00.001Z")), t("2026-01-01T00:00:01Z"));
        assert_eq!(add(Timestamp::MAX, SignedDuration::from_secs(1)), Timestamp::MAX);
        assert_eq!(add(Timestamp::MIN, SignedDuration::from_secs(-1)), Timestamp::MIN);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1h").unwrap(), SignedDuration::from_hours(1));
        assert_eq!(parse_duration("1h30m").unwrap(), SignedDuration::from_mins(90));
        assert_eq!(parse_duration("90s").unwrap(), SignedDuration::from_secs(90));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5m").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Renewal is strictly before expiry whenever the lifetime exceeds the minimum
        /// interval, never sooner than the minimum interval after issue, and never panics.
        #[test]
        fn refresh_time_invariants(
            issued in 0i64..4_000_000_000,
            lifetime in -100_000i64..40_000_000,
            renew_before in proptest::option::of(-100_000i64..80_000_000),
            jitter in any::<f64>(),
            min in 0i64..3_600,
        ) {
            let issued_at = Timestamp::from_second(issued).unwrap();
            let expires_at = Timestamp::from_second(issued + lifetime).unwrap();
            let min = SignedDuration::from_secs(min);
            let at = refresh_at(issued_at, expires_at, renew_before.map(SignedDuration::from_secs), jitter, min);
            prop_assert!(at >= issued_at + min);
            if SignedDuration::from_secs(lifetime) > min + SignedDuration::from_secs(1) {
                prop_assert!(at < expires_at, "{at} not before {expires_at}");
            }
        }

        /// The same over the whole timestamp range, with any jitter (NaN and infinities too)
        /// and any lead: never panics, never before issue plus the minimum.
        #[test]
        fn refresh_time_never_panics_at_the_ends_of_time(
            issued in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            expires in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            renew_before in proptest::option::of(any::<i64>()),
            jitter in prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
            min in 0i64..=7 * 24 * 3600,
        ) {
            let issued_at = Timestamp::from_second(issued).unwrap();
            let expires_at = Timestamp::from_second(expires).unwrap();
            let min = SignedDuration::from_secs(min);
            let at = refresh_at(issued_at, expires_at, renew_before.map(SignedDuration::from_secs), jitter, min);
            prop_assert!(at >= whole_seconds(add(issued_at, min)) || at == whole_seconds(Timestamp::MAX));
        }

        #[test]
        fn ceil_and_add_never_panic(secs in any::<i64>(), nanos in 0i32..1_000_000_000, d in any::<i64>()) {
            if let Ok(t) = Timestamp::new(secs.clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second() - 1), nanos) {
                let c = ceil_seconds(t);
                prop_assert!(c >= t && c.subsec_nanosecond() == 0);
                let _ = add(t, SignedDuration::from_secs(d));
            }
        }

        #[test]
        fn backoff_stays_within_bounds(failures in any::<u32>(), random in any::<f64>()) {
            let base = SignedDuration::from_secs(2);
            let cap = SignedDuration::from_secs(60);
            let d = backoff(failures, base, cap, random);
            prop_assert!(d >= base / 2 || failures == 0);
            prop_assert!(d <= cap);
        }

        #[test]
        fn parse_duration_never_panics(s in ".{0,40}") {
            let _ = parse_duration(&s);
        }
    }
}
