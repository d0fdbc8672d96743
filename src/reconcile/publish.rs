//! The last steps: status written, events published, workloads restarted.

use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tracing::warn;

use super::namespace;
use crate::conditions::Outcome;
use crate::controller::{Context, FIELD_MANAGER};
use crate::crd::{GroupDocsCredential, GroupDocsCredentialStatus};
use crate::error::Error;
use crate::events::{self, Occurrence};
use crate::rollout;
use crate::schedule;
use crate::status::Synced;

pub(crate) async fn write_status(
    cr: &GroupDocsCredential,
    ctx: &Context,
    status: &GroupDocsCredentialStatus,
) -> Result<(), Error> {
    let api: Api<GroupDocsCredential> = Api::namespaced(ctx.shared.client.clone(), &namespace(cr));
    let patch = serde_json::json!({
        "apiVersion": "groupdocs.cloud/v1alpha1",
        "kind": "GroupDocsCredential",
        "status": status,
    });
    let written =
        api.patch_status(&cr.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.shared.metrics.status_written();
    ctx.shared.writes.wrote(&cr.uid().unwrap_or_default(), written.status.as_ref(), Instant::now());
    ctx.shared.writes.wrote_status_of(&written.metadata, Instant::now());
    Ok(())
}

/// One event per change of outcome: issued, renewed, or a new failure reason.
pub(super) async fn publish_events(
    cr: &GroupDocsCredential,
    ctx: &Context,
    previous: &GroupDocsCredentialStatus,
    status: &GroupDocsCredentialStatus,
    synced: &Synced,
) {
    let (kind, reason, note) = match &synced.result {
        Ok(Outcome::Issued) if previous.token_fingerprint.is_none() => {
            (events::Kind::Normal, "TokenIssued", format!("token written to Secret {}", cr.target_name()))
        }
        Ok(Outcome::Renewed) if previous.token_fingerprint != status.token_fingerprint => (
            events::Kind::Normal,
            "TokenRenewed",
            format!(
                "token in Secret {} renewed (fingerprint {})",
                cr.target_name(),
                status.token_fingerprint.clone().unwrap_or_default()
            ),
        ),
        Err(refused) if !previous.conditions.iter().any(|c| c.reason == refused.error.reason()) => {
            (events::Kind::Warning, refused.error.reason(), refused.error.to_string())
        }
        _ => return,
    };
    let occurrence = Occurrence { kind, reason, action: "Reconcile", note };
    if let Err(e) = ctx.shared.events.publish(cr, occurrence).await {
        warn!(credential = %cr.name_any(), error = %e, "could not publish event");
    }
}

/// Restarts `spec.rolloutRestartTargets` once per new token (not for the first one), at most
/// once per interval each. Returns when to look again if some had to wait.
pub(super) async fn restart_workloads(
    cr: &GroupDocsCredential,
    ctx: &Context,
    status: &mut GroupDocsCredentialStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    let min_interval = ctx.shared.settings.rollout_restarts?;
    let fingerprint = status.token_fingerprint.clone()?;
    if cr.spec.rollout_restart_targets.is_empty() || status.rollout_restart_fingerprint.as_deref() == Some(&fingerprint)
    {
        return None;
    }
    if status.rollout_restart_fingerprint.is_none() {
        // The first token: the workloads start with it anyway.
        status.rollout_restart_fingerprint = Some(fingerprint);
        return None;
    }
    let mut wait: Option<Timestamp> = None;
    for target in &cr.spec.rollout_restart_targets {
        let ns = namespace(cr);
        let request = rollout::Request {
            client: &ctx.shared.client,
            namespace: &ns,
            target,
            fingerprint: &fingerprint,
            now,
            min_interval,
        };
        let outcome = rollout::restart(request).await;
        let (kind, reason, note) = match outcome {
            rollout::Outcome::Restarted => (
                events::Kind::Normal,
                "RolloutRestarted",
                format!("restarted {:?} {} for the renewed token", target.kind, target.name),
            ),
            rollout::Outcome::AlreadyDone => continue,
            rollout::Outcome::NotFound => {
                let retry = schedule::add(now, SignedDuration::from_mins(5));
                wait = Some(wait.map_or(retry, |w| w.min(retry)));
                (events::Kind::Warning, "RolloutRestartFailed", format!("{:?} {} not found", target.kind, target.name))
            }
            rollout::Outcome::Deferred(t) => {
                wait = Some(wait.map_or(t, |w| w.min(t)));
                continue;
            }
            rollout::Outcome::Failed(e) => {
                let retry = schedule::add(now, SignedDuration::from_mins(5));
                wait = Some(wait.map_or(retry, |w| w.min(retry)));
                (events::Kind::Warning, "RolloutRestartFailed", e)
            }
        };
        let occurrence = Occurrence { kind, reason, action: "RolloutRestart", note };
        if let Err(e) = ctx.shared.events.publish(cr, occurrence).await {
            warn!(credential = %cr.name_any(), error = %e, "could not publish event");
        }
    }
    if wait.is_none() {
        status.rollout_restart_fingerprint = Some(fingerprint);
    }
    wait
}
