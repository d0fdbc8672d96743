//! groupdocs-token-operator: keeps GroupDocs Cloud access tokens fresh in Kubernetes Secrets.
//!
//! Data flows one way: a `GroupDocsCredential` ([`crd`]) names a client Secret; the
//! [`controller`] runs [`reconcile`], which reads it, asks the token [`token::broker`] for a
//! token, renders the target Secret ([`target`]) and records what [`status`] decides.

pub mod bulk;
pub mod cli;
pub mod cluster;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod error;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod format;
pub mod guard;
pub mod http;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod policy;
pub mod reconcile;
pub mod redact;
pub mod rollout;
pub mod schedule;
pub mod status;
pub mod target;
pub mod telemetry;
pub mod token;
pub mod wakes;
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

/// Completes on SIGTERM or SIGINT. (Without a SIGTERM handler, which the process cannot be
/// refused in practice, only SIGINT is awaited; the kubelet's SIGKILL still ends the process.)
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot handle SIGTERM; only SIGINT stops the operator gracefully");
            let _ = ctrl_c.await;
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
