//! The guard around each reconcile: a panic becomes a value (so it fails one credential, not
//! the process) and a cancelled lease stops the reconcile where it stands.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::crd::GroupDocsCredential;

/// How a [`guarded`] future ended.
#[derive(Debug, PartialEq)]
pub enum Guarded<T> {
    Done(T),
    /// It panicked, with this message.
    Panicked(String),
    /// `halt` was cancelled first; the future was dropped where it stood.
    Halted,
}

/// Runs `future`, turning a panic into a value and stopping at once when `halt` is cancelled.
pub async fn guarded<T>(future: impl std::future::Future<Output = T>, halt: &CancellationToken) -> Guarded<T> {
    tokio::select! {
        biased;
        () = halt.cancelled() => Guarded::Halted,
        result = AssertUnwindSafe(future).catch_unwind() => match result {
            Ok(value) => Guarded::Done(value),
            Err(panic) => Guarded::Panicked(panic_message(panic.as_ref())),
        },
    }
}

/// Debug builds only (the e2e tests run them): `GDTO_FAULT_PANIC_CREDENTIAL=<namespace>/<name>`
/// makes that credential's reconcile panic, to show that a bug hits one credential only.
#[cfg(debug_assertions)]
pub fn inject_panic_for_tests(cr: &GroupDocsCredential) {
    if let Ok(target) = std::env::var("GDTO_FAULT_PANIC_CREDENTIAL")
        && target
            == format!("{}/{}", kube::ResourceExt::namespace(cr).unwrap_or_default(), kube::ResourceExt::name_any(cr))
    {
        panic!("injected by GDTO_FAULT_PANIC_CREDENTIAL");
    }
}

#[cfg(not(debug_assertions))]
pub fn inject_panic_for_tests(_: &GroupDocsCredential) {}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::{SignedDuration, Timestamp};
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_guarded_future_reports_panics_and_stops_on_halt() {
        let halt = CancellationToken::new();
        assert_eq!(guarded(async { 7 }, &halt).await, Guarded::Done(7));
        let panicking = async {
            let far = Timestamp::MAX;
            #[allow(clippy::unnecessary_literal_unwrap)]
            let _ = far.checked_add(SignedDuration::from_secs(1)).expect("timestamp overflow");
        };
        match guarded(panicking, &halt).await {
            Guarded::Panicked(message) => assert!(message.contains("timestamp overflow"), "{message}"),
            other => panic!("{other:?}"),
        }
        let stop = halt.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        });
        let started = Instant::now();
        assert_eq!(guarded(std::future::pending::<()>(), &halt).await, Guarded::Halted);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn panic_messages_are_bounded_and_printable() {
        let long = "x\n".repeat(500);
        let boxed: Box<dyn std::any::Any + Send> = Box::new(long);
        let m = panic_message(boxed.as_ref());
        assert!(m.len() <= 300 && !m.contains('\n'));
        let boxed: Box<dyn std::any::Any + Send> = Box::new("overflow");
        assert_eq!(panic_message(boxed.as_ref()), "overflow");
        let boxed: Box<dyn std::any::Any + Send> = Box::new(42);
        assert_eq!(panic_message(boxed.as_ref()), "a panic without a message");
    }
}
