//! `Retry-After` (RFC 9110 section 10.2.3): delta-seconds or an HTTP-date.

use jiff::{SignedDuration, Timestamp};

/// Used when a 429 carries no usable `Retry-After`: the documented GroupDocs cooldown.
pub const DEFAULT_PAUSE: SignedDuration = SignedDuration::from_secs(600);
/// A server cannot pause us for longer than this (protects against absurd values).
pub const MAX_PAUSE: SignedDuration = SignedDuration::from_secs(3600);
const MIN_PAUSE: SignedDuration = SignedDuration::from_secs(1);

/// The time before which no request may be sent, from a 429's `Retry-After` header value.
/// Missing or unparsable values give [`DEFAULT_PAUSE`]; every result lies within
/// `[now + 1s, now + MAX_PAUSE]`.
pub fn pause_until(header: Option<&str>, now: Timestamp) -> Timestamp {
    let pause = header.and_then(|v| parse(v.trim(), now)).unwrap_or(DEFAULT_PAUSE);
    now.saturating_add(pause.clamp(MIN_PAUSE, MAX_PAUSE)).unwrap_or(now)
}

fn parse(value: &str, now: Timestamp) -> Option<SignedDuration> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than i64 seconds is "very long": clamp rather than fail.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX).min(i64::MAX as u64);
        return Some(SignedDuration::from_secs(secs as i64));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    let at = Timestamp::try_from(date).ok()?;
    Some(at.duration_since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-28T10:00:00Z".parse().unwrap()
    }

    fn secs_from_now(header: Option<&str>) -> i64 {
        pause_until(header, now()).duration_since(now()).as_secs()
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(secs_from_now(Some("120")), 120);
        assert_eq!(secs_from_now(Some(" 30 ")), 30);
    }

    #[test]
    fn http_date() {
        assert_eq!(secs_from_now(Some("Sat, 28 Nov 2026 10:05:00 GMT")), 300);
    }

    #[test]
    fn missing_or_garbage_means_the_documented_cooldown() {
        assert_eq!(secs_from_now(None), 600);
        assert_eq!(secs_from_now(Some("soon")), 600);
        assert_eq!(secs_from_now(Some("-5")), 600);
        assert_eq!(secs_from_now(Some("")), 600);
    }

    #[test]
    fn clamped_to_sane_bounds() {
        assert_eq!(secs_from_now(Some("0")), 1);
        assert_eq!(secs_from_now(Some("Thu, 01 Jan 2015 00:00:00 GMT")), 1);
        assert_eq!(secs_from_now(Some("99999999999999999999999")), 3600);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a server sends, the pause is between one second and the maximum.
        #[test]
        fn any_header_gives_a_bounded_pause(header in proptest::option::of(".{0,64}"), now in 0i64..4_000_000_000) {
            let now = Timestamp::from_second(now).unwrap();
            let until = pause_until(header.as_deref(), now);
            let pause = until.duration_since(now);
            prop_assert!(pause >= SignedDuration::from_secs(1) && pause <= MAX_PAUSE);
        }

        #[test]
        fn delta_seconds_are_exact_within_bounds(secs in 1u64..3600) {
            let now = Timestamp::from_second(1_800_000_000).unwrap();
            let until = pause_until(Some(&secs.to_string()), now);
            prop_assert_eq!(until.duration_since(now).as_secs() as u64, secs);
        }
    }
}
