//! Leader election on a Lease (`kube-lease-manager`), so that of several replicas only one
//! reconciles and writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::info;

use crate::operator::StartError;

/// The default of `--lease-name`.
pub const LEASE_NAME: &str = "groupdocs-token-operator";

/// What this replica is doing, for `/readyz` and logs.
#[derive(Clone, Default)]
pub struct Role(Arc<AtomicU8>);

const STANDBY: u8 = 0;
const LEADER: u8 = 1;

impl Role {
    pub fn leader() -> Self {
        Role(Arc::new(AtomicU8::new(LEADER)))
    }

    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::SeqCst) == LEADER
    }

    fn set(&self, leader: bool) {
        self.0.store(if leader { LEADER } else { STANDBY }, Ordering::SeqCst);
    }
}

/// A held lease: `lost()` completes if it is lost; dropping it releases it.
pub struct Leadership {
    rx: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Leadership {
    /// Completes when another replica holds the lease (or the lease task ends).
    pub async fn lost(&mut self) {
        loop {
            if !*self.rx.borrow_and_update() {
                return;
            }
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Releases the lease so a standby takes over at once (on graceful shutdown).
    pub async fn release(self) {
        drop(self.rx);
        let _ = self.task.await;
    }
}

/// Waits until this replica holds the Lease `namespace/lease`; `None` if `shutdown` comes
/// first.
pub async fn acquire(
    client: Client,
    namespace: &str,
    lease: &str,
    identity: &str,
    lease_seconds: u64,
    role: Role,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Option<Leadership>, StartError> {
    let manager = LeaseManagerBuilder::new(client, lease)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(lease_seconds)
        .with_grace((lease_seconds / 3).max(1))
        .with_field_manager(crate::controller::FIELD_MANAGER)
        .build()
        .await?;
    let (mut rx, task) = manager.watch().await;
    info!(identity, namespace, lease, "waiting for leadership");
    tokio::pin!(shutdown);
    loop {
        if *rx.borrow_and_update() {
            role.set(true);
            info!(identity, "became the leader");
            return Ok(Some(Leadership { rx, task }));
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Err(StartError::LeaseTaskEnded);
                }
            }
            () = &mut shutdown => {
                drop(rx);
                let _ = task.await;
                return Ok(None);
            }
        }
    }
}
