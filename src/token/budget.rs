//! The failed-request budget of one token endpoint, shared fairly: every request counts while
//! it is in flight and every failure for a minute, so the endpoint never sees more failures
//! per minute than the budget; no namespace holds more than its share; and part of the budget
//! is kept for clients that hold a valid token.

use std::collections::VecDeque;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use crate::schedule;

pub(crate) const WINDOW: SignedDuration = SignedDuration::from_mins(1);

/// Who a request of the budget is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) tenant: Arc<str>,
    /// The client holds a valid token: it was working until now.
    pub(crate) healthy: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Used {
    pub(crate) at: Timestamp,
    pub(crate) user: User,
}

/// One endpoint's failed-request budget: failures of the last minute (oldest first) and
/// requests in flight. A request in flight counts until it succeeds: otherwise a burst of
/// concurrent requests could overshoot the budget.
#[derive(Default)]
pub(crate) struct Budget {
    pub(crate) failures: VecDeque<Used>,
    pub(crate) in_flight: Vec<User>,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Admission {
    Admitted,
    /// Held by requests in flight: look again shortly.
    Busy,
    /// Held by failures: not before this time.
    SpentUntil(Timestamp),
}

impl Budget {
    pub(crate) fn forget_old(&mut self, now: Timestamp) {
        while self.failures.front().is_some_and(|u| now.duration_since(u.at) >= WINDOW) {
            self.failures.pop_front();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.in_flight.is_empty()
    }

    pub(crate) fn record_failure(&mut self, used: Used) {
        let i = self.failures.partition_point(|u| u.at <= used.at);
        self.failures.insert(i, used);
    }

    /// Whether one more request for `user` fits in a budget of `limit` per minute:
    /// - the whole budget: all failures and requests in flight;
    /// - a reserve of a fifth is kept for clients with a valid token (healthy ones);
    /// - each namespace in use holds at most `pool / max(namespaces, 2)`, so even alone a
    ///   namespace leaves half the budget to the next one that needs it (rounded up: the
    ///   whole caps keep the sum within the budget).
    pub(crate) fn admit(&self, user: &User, limit: usize) -> Admission {
        let reserve = if limit >= 2 { (limit / 5).max(1) } else { 0 };
        let pool = if user.healthy { limit } else { limit - reserve };
        let mut tenants: Vec<&str> = self
            .failures
            .iter()
            .map(|u| &*u.user.tenant)
            .chain(self.in_flight.iter().map(|u| &*u.tenant))
            .chain(std::iter::once(&*user.tenant))
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        let share = pool.div_ceil(tenants.len().max(2)).max(1);
        let checks: [(usize, Counts); 3] = [
            (limit, &|_| true),
            (pool, &|u: &User| user.healthy || !u.healthy),
            (share, &|u: &User| u.tenant == user.tenant),
        ];
        for (cap, counts) in checks {
            let failures: Vec<&Used> = self.failures.iter().filter(|u| counts(&u.user)).collect();
            let in_flight = self.in_flight.iter().filter(|u| counts(u)).count();
            if failures.len() + in_flight >= cap {
                return match failures.len().checked_sub(cap) {
                    // Failures alone fill it: wait until enough of them leave the minute.
                    Some(excess) => SpentUntil(schedule::add(failures[excess].at, WINDOW)),
                    None => Admission::Busy,
                };
            }
        }
        Admission::Admitted
    }
}

pub(crate) use Admission::SpentUntil;

/// Which uses of the budget a cap counts.
type Counts<'a> = &'a dyn Fn(&User) -> bool;

#[cfg(test)]
mod tests {
    use super::*;

    fn user(tenant: &str, healthy: bool) -> User {
        User { tenant: tenant.into(), healthy }
    }

    #[test]
    fn admission_shares_the_budget() {
        let now = Timestamp::now();
        let mut budget = Budget::default();
        let failed = |budget: &mut Budget, tenant: &str, ago: i64| {
            budget.record_failure(Used { at: now - SignedDuration::from_secs(ago), user: user(tenant, false) })
        };
        for ago in [50, 40, 30, 20] {
            failed(&mut budget, "x", ago);
        }
        // x alone holds its share (8 / 2) and waits until its oldest failure leaves the minute.
        assert_eq!(budget.admit(&user("x", false), 10), SpentUntil(now + SignedDuration::from_secs(10)));
        assert_eq!(budget.admit(&user("x", true), 10), Admission::Admitted, "x's working clients: 10 / 2");
        assert_eq!(budget.admit(&user("y", false), 10), Admission::Admitted, "y has its own share");
        for _ in 0..4 {
            budget.in_flight.push(user("y", false));
        }
        assert_eq!(budget.admit(&user("y", false), 10), Admission::Busy, "y's share is held in flight");
        budget.in_flight.clear();
        for _ in 0..4 {
            failed(&mut budget, "y", 5);
        }
        assert_eq!(
            budget.admit(&user("z", false), 10),
            SpentUntil(now + SignedDuration::from_secs(10)),
            "the pool for clients without a token (8) is spent"
        );
        assert_eq!(budget.admit(&user("w", true), 10), Admission::Admitted, "the reserve is for working clients");
        budget.in_flight.push(user("w", true));
        budget.in_flight.push(user("v", true));
        assert_eq!(budget.admit(&user("u", true), 10), Admission::Busy, "the whole budget is held");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever sequence of requests, tenants and outcomes: failures plus requests in
        /// flight never exceed the budget, and clients without a valid token never take the
        /// reserve.
        #[test]
        fn the_budget_is_never_exceeded(
            limit in 1usize..30,
            steps in proptest::collection::vec((0u8..5, any::<bool>(), 0u8..3, 0i64..90), 0..200),
        ) {
            let mut budget = Budget::default();
            let mut now = Timestamp::from_second(1_800_000_000).unwrap();
            for (tenant, healthy, action, advance) in steps {
                now += SignedDuration::from_secs(advance / 10);
                budget.forget_old(now);
                let user = User { tenant: tenant.to_string().into(), healthy };
                match action {
                    0 if budget.admit(&user, limit) == Admission::Admitted => budget.in_flight.push(user),
                    0 => {}
                    1 if !budget.in_flight.is_empty() => {
                        let u = budget.in_flight.swap_remove(0);
                        budget.record_failure(Used { at: now, user: u });
                    }
                    _ if !budget.in_flight.is_empty() => {
                        budget.in_flight.pop();
                    }
                    _ => {}
                }
                prop_assert!(budget.failures.len() + budget.in_flight.len() <= limit);
                let reserve = if limit >= 2 { (limit / 5).max(1) } else { 0 };
                let unhealthy = budget.failures.iter().filter(|u| !u.user.healthy).count()
                    + budget.in_flight.iter().filter(|u| !u.healthy).count();
                prop_assert!(unhealthy <= limit - reserve);
            }
        }
    }
}
