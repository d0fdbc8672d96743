//! GroupDocs' rate limiter on `/connect/token`: `failure_limit` (20) failed requests within a
//! 60 s window put the caller into a 600 s cooldown, during which every request is refused.
//! A time scale divides both: 60 turns the minute into a second and the cooldown into 10 s.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock;

/// The window in which failures add up, before scaling.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a caller waits once over the limit, before scaling.
pub const COOLDOWN: Duration = Duration::from_secs(600);

/// Failures and cooldowns by caller (an address or a client id, as the server is told).
pub struct Limiter {
    failure_limit: usize,
    window: Duration,
    cooldown: Duration,
    callers: Mutex<HashMap<String, Caller>>,
}

#[derive(Default)]
struct Caller {
    failures: VecDeque<Instant>,
    cooldown_until: Option<Instant>,
}

impl Limiter {
    /// A limiter whose window and cooldown are divided by `time_scale` (at most by 1000).
    pub fn new(failure_limit: u32, time_scale: f64) -> Limiter {
        let scaled = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() / time_scale.max(0.001));
        Limiter {
            failure_limit: failure_limit as usize,
            window: scaled(WINDOW),
            cooldown: scaled(COOLDOWN),
            callers: Mutex::default(),
        }
    }

    /// How long `caller` still has to wait at `now`, if it is cooling down.
    pub fn cooldown_left(&self, caller: &str, now: Instant) -> Option<Duration> {
        let callers = lock(&self.callers);
        callers.get(caller)?.cooldown_until?.checked_duration_since(now)
    }

    /// Counts a failed request of `caller` at `now`; the one that reaches the limit within the
    /// window starts the cooldown (it is itself still answered) and clears the count.
    pub fn record_failure(&self, caller: &str, now: Instant) {
        let mut callers = lock(&self.callers);
        let c = callers.entry(caller.to_string()).or_default();
        while c.failures.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            c.failures.pop_front();
        }
        c.failures.push_back(now);
        if c.failures.len() >= self.failure_limit {
            c.cooldown_until = Some(now + self.cooldown);
            c.failures.clear();
        }
    }
}

/// `Retry-After` in whole seconds, rounded up so that a caller who waits that long is served.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn twenty_failures_in_the_window_start_a_ten_minute_cooldown() {
        let l = Limiter::new(20, 1.0);
        let t0 = Instant::now();
        for i in 0..19 {
            l.record_failure("a", t0 + i * S);
            assert_eq!(l.cooldown_left("a", t0 + i * S), None, "after {} failures", i + 1);
        }
        l.record_failure("a", t0 + 59 * S);
        assert_eq!(l.cooldown_left("a", t0 + 59 * S), Some(600 * S));
        assert_eq!(l.cooldown_left("a", t0 + 659 * S - S / 2), Some(S / 2));
        assert_eq!(l.cooldown_left("a", t0 + 659 * S), Some(Duration::ZERO));
        assert_eq!(l.cooldown_left("a", t0 + 660 * S), None);
        // Other callers are not affected.
        assert_eq!(l.cooldown_left("b", t0 + 59 * S), None);
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let l = Limiter::new(20, 1.0);
        let t0 = Instant::now();
        for _ in 0..19 {
            l.record_failure("a", t0);
        }
        // Exactly one window later the first 19 have left it.
        l.record_failure("a", t0 + 60 * S);
        assert_eq!(l.cooldown_left("a", t0 + 60 * S), None);
        for _ in 0..18 {
            l.record_failure("a", t0 + 61 * S);
        }
        assert_eq!(l.cooldown_left("a", t0 + 61 * S), None, "19 in the window");
        l.record_failure("a", t0 + 61 * S);
        assert!(l.cooldown_left("a", t0 + 61 * S).is_some(), "20 in the window");
    }

    #[test]
    fn after_a_cooldown_the_count_starts_again() {
        let l = Limiter::new(2, 1.0);
        let t0 = Instant::now();
        l.record_failure("a", t0);
        l.record_failure("a", t0);
        let after = t0 + 601 * S;
        assert_eq!(l.cooldown_left("a", after), None);
        l.record_failure("a", after);
        assert_eq!(l.cooldown_left("a", after), None, "one failure since the cooldown");
    }

    #[test]
    fn the_time_scale_divides_window_and_cooldown() {
        let l = Limiter::new(20, 60.0);
        let t0 = Instant::now();
        for _ in 0..10 {
            l.record_failure("a", t0);
        }
        for _ in 0..10 {
            l.record_failure("a", t0 + S); // one scaled minute later: the first ten are gone
        }
        assert_eq!(l.cooldown_left("a", t0 + S), None);
        for _ in 0..10 {
            l.record_failure("a", t0 + S + S / 2);
        }
        assert_eq!(l.cooldown_left("a", t0 + S + S / 2), Some(10 * S));
        // A scale of zero or less is taken as 0.001.
        let slow = Limiter::new(1, 0.0);
        slow.record_failure("a", t0);
        assert_eq!(slow.cooldown_left("a", t0), Some(600_000 * S));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 0);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(30 * S), 30);
        assert_eq!(retry_after_secs(30 * S + Duration::from_nanos(1)), 31);
    }
}
