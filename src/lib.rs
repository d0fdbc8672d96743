//! groupdocs-token-operator: keeps GroupDocs Cloud access tokens fresh in Kubernetes Secrets.
//!
//! Data flows one way: a `GroupDocsCredential` ([`crd`]) names a client Secret; the
//! [`reconciler`] reads it, asks the token [`token::broker`] for a token, renders the target
//! Secret ([`target`]) and records [`conditions`] in status.

pub mod cli;
pub mod conditions;
pub mod crd;
pub mod devserver;
pub mod error;
pub mod events;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod policy;
pub mod reconciler;
pub mod redact;
pub mod rollout;
pub mod schedule;
pub mod target;
pub mod telemetry;
pub mod token;
pub mod writes;

pub use error::{Error, Result};

/// Locks `m`, recovering from poisoning: the state behind every shared lock here stays valid
/// between statements, so a panic elsewhere (caught per reconcile) must not turn every later
/// lock into another panic.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One rustls crypto provider (ring) for both kube and reqwest, so one TLS stack is built.
pub fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
