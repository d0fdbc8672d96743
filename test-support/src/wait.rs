//! Waiting for a condition with a deadline: the one polling loop of the tests and the benchmark.

use std::future::Future;
use std::time::Duration;

/// How often [`until`] and [`wait_for`] look.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `check` every `every` until it returns `Some`; `None` once `deadline` has passed
/// (a check still running then is abandoned).
pub async fn until_every<T, F, Fut>(every: Duration, deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let poll = async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(every).await;
        }
    };
    tokio::time::timeout(deadline, poll).await.ok()
}

/// [`until_every`] at [`POLL`].
pub async fn until<T, F, Fut>(deadline: Duration, check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    until_every(POLL, deadline, check).await
}

/// Polls `check` until it returns `Some`, or panics after `deadline` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match until(deadline, check).await {
        Some(v) => v,
        None => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_first_value_and_gives_up_at_the_deadline() {
        let mut calls = 0;
        let found = until(Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(found, Some(3));
        let never = until(Duration::from_secs(1), || async { None::<()> }).await;
        assert_eq!(never, None);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for nothing")]
    async fn wait_for_names_what_it_waited_for() {
        wait_for("nothing", Duration::from_secs(1), || async { None::<()> }).await;
    }
}
