//! One reconcile of a cluster credential: the token (exactly as for a namespaced credential,
//! through [`ClusterGroupDocsCredential::token_view`]), then one copy per selected namespace,
//! then the copies in namespaces that no longer match removed, then status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::ClusterContext;
use super::select::{NamespaceFacts, Selected, select};
use super::summary::{Copy, Fanout, cluster_status};
use crate::conditions::Outcome;
use crate::controller::FIELD_MANAGER;
use crate::crd::cluster::ClusterGroupDocsCredentialStatus;
use crate::crd::{ClusterGroupDocsCredential, GroupDocsCredentialStatus};
use crate::error::Error;
use crate::events::{self, Occurrence};
use crate::reconcile::inputs::resolve_inputs;
use crate::reconcile::secret::{SecretWrite, write_secret};
use crate::reconcile::{Decided, decide_token};
use crate::schedule;
use crate::status::{Inputs, Synced, next_status, next_wake, requeue_after, usable_token};
use crate::target::{self, CachedSecret, Ownership, Target};
use crate::token::{Token, TokenFacts};

/// Copies written at once: enough to fan out to a thousand namespaces in seconds without
/// flooding the API server.
const WRITE_CONCURRENCY: usize = 16;

/// How soon a namespace whose copy failed for a transient reason is tried again.
const TRANSIENT_RETRY: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);

pub(super) async fn reconcile(cr: Arc<ClusterGroupDocsCredential>, ctx: Arc<ClusterContext>) -> Result<Action, Error> {
    let started = Instant::now();
    let shared = &ctx.shared;
    let uid = cr.uid().unwrap_or_default();
    let previous = cr.status.clone().unwrap_or_default();
    if shared.writes.cache_is_behind(&uid, Some(&previous.token), started) {
        return Ok(Action::requeue(Duration::from_millis(250)));
    }
    let now = schedule::whole_seconds(Timestamp::now());
    let view = cr.token_view(&shared.settings.cluster_resource_namespace);
    let (synced, fanout) = sync(&cr, &ctx, &previous.token, now).await;
    if let Some(until) = synced.result.as_ref().err().and_then(|r| r.busy_until()) {
        shared.metrics.reconciled("Busy", started.elapsed());
        let jitter = Duration::from_millis(rand::random::<u64>() % 2000);
        return Ok(Action::requeue(requeue_after(until, now) + jitter));
    }
    let token_status = next_status(&view, &previous.token, &synced, now, shared.settings.min_refresh_interval);
    let mut status = cluster_status(token_status, &previous.token.conditions, cr.metadata.generation, &fanout, now);
    let restarts_pending_until = restart_workloads(&cr, &ctx, &mut status, &fanout, now).await;
    if status != previous {
        write_status(&cr, &ctx, &status).await?;
        publish_events(&cr, &ctx, &previous, &status, &synced).await;
    }
    let result = match &synced.result {
        Ok(_) => "Ok",
        Err(refused) => refused.error.reason(),
    };
    shared.metrics.reconciled(result, started.elapsed());
    debug!(cluster_credential = %cr.name_any(), result, selected = fanout.selected, "reconciled");
    let retry_copies = fanout
        .copies
        .iter()
        .flatten()
        .any(|(_, c)| matches!(c, Copy::Failed { stalled: false, .. }))
        .then(|| schedule::add(now, TRANSIENT_RETRY));
    let wake =
        [next_wake(&synced, &status.token, now), retry_copies, synced.refresh_throttled_until, restarts_pending_until]
            .into_iter()
            .flatten()
            .min();
    Ok(match wake {
        Some(t) => Action::requeue(requeue_after(t, now)),
        None => Action::await_change(),
    })
}

/// Restarts `spec.rolloutRestartTargets` in every namespace holding the new token (not for
/// the first token), where they exist; one event sums them up. Returns when to look again if
/// some had to wait or failed.
async fn restart_workloads(
    cr: &ClusterGroupDocsCredential,
    ctx: &ClusterContext,
    status: &mut ClusterGroupDocsCredentialStatus,
    fanout: &Fanout,
    now: Timestamp,
) -> Option<Timestamp> {
    let min_interval = ctx.shared.settings.rollout_restarts?;
    let token = &mut status.token;
    let fingerprint = token.token_fingerprint.clone()?;
    if cr.spec.rollout_restart_targets.is_empty() || token.rollout_restart_fingerprint.as_deref() == Some(&fingerprint)
    {
        return None;
    }
    if token.rollout_restart_fingerprint.is_none() {
        // The first token: the workloads start with it anyway.
        token.rollout_restart_fingerprint = Some(fingerprint);
        return None;
    }
    let current = fanout.copies.iter().flatten().filter(|(_, c)| *c == Copy::Current).map(|(ns, _)| ns);
    let (mut restarted, mut failed, mut wait) = (0usize, Vec::new(), None::<Timestamp>);
    for ns in current {
        for target in &cr.spec.rollout_restart_targets {
            let request = crate::rollout::Request {
                client: &ctx.shared.client,
                namespace: ns,
                target,
                fingerprint: &fingerprint,
                now,
                min_interval,
            };
            match crate::rollout::restart(request).await {
                crate::rollout::Outcome::Restarted => restarted += 1,
                crate::rollout::Outcome::AlreadyDone | crate::rollout::Outcome::NotFound => {}
                crate::rollout::Outcome::Deferred(t) => wait = Some(wait.map_or(t, |w| w.min(t))),
                crate::rollout::Outcome::Failed(e) => {
                    let retry = schedule::add(now, jiff::SignedDuration::from_mins(5));
                    wait = Some(wait.map_or(retry, |w| w.min(retry)));
                    failed.push(format!("{ns}: {e}"));
                }
            }
        }
    }
    if wait.is_none() {
        token.rollout_restart_fingerprint = Some(fingerprint);
    }
    let mut occurrences = Vec::new();
    if restarted > 0 {
        let note = format!("restarted {restarted} workloads for the renewed token");
        occurrences.push(Occurrence {
            kind: events::Kind::Normal,
            reason: "RolloutRestarted",
            action: "RolloutRestart",
            note,
        });
    }
    if !failed.is_empty() {
        let note = format!("{} restarts failed: {}", failed.len(), failed.join("; "));
        occurrences.push(Occurrence {
            kind: events::Kind::Warning,
            reason: "RolloutRestartFailed",
            action: "RolloutRestart",
            note,
        });
    }
    for occurrence in occurrences {
        if let Err(e) = ctx.shared.events.publish(cr, occurrence).await {
            warn!(cluster_credential = %cr.name_any(), error = %e, "could not publish event");
        }
    }
    wait
}

/// The token, then the copies. The token side is the namespaced kind's own code.
async fn sync(
    cr: &ClusterGroupDocsCredential,
    ctx: &ClusterContext,
    previous: &GroupDocsCredentialStatus,
    now: Timestamp,
) -> (Synced, Fanout) {
    let shared = &ctx.shared;
    let no_copies = |selected: usize| Fanout { copies: None, missing: Vec::new(), selected };
    let valid = match cr.validate(&shared.settings.cluster_resource_namespace) {
        Ok(valid) => valid,
        Err(e) => return (Synced::failed(e, None), no_copies(0)),
    };
    let selected = selected_namespaces(ctx, &valid.selection);
    let copies = copies_of(ctx, cr);
    remove_stale_copies(ctx, cr, &copies, &selected, &valid.common.target_name).await;
    let view = cr.token_view(&shared.settings.cluster_resource_namespace);
    let inputs = match resolve_inputs(&view, shared, &ctx.client_secrets).await {
        Ok(inputs) => inputs,
        Err(e) => return (Synced::failed(e, None), no_copies(selected.count())),
    };
    if selected.namespaces.is_empty() {
        // Nowhere to put a token: none is requested.
        let synced = Synced::new(Ok(Outcome::Current), None);
        let count = selected.count();
        return (synced, Fanout { copies: Some(Vec::new()), missing: selected.missing, selected: count });
    }
    let in_place = token_in_place(&copies, &selected, &inputs, previous, &valid.common.target_name);
    let (decided, ended) =
        match decide_token(&view, shared, previous, &inputs, in_place.clone().map(|(f, _)| f), now).await {
            Ok(decided) => (Some(decided), None),
            // Refused or held: the token in place (if still valid) still goes to new namespaces.
            Err(ended) => {
                let keep = in_place.as_ref().filter(|(f, _)| f.expires_at > now).map(|(facts, _)| Decided {
                    fresh: None,
                    facts: facts.clone(),
                    in_place: Some(facts.clone()),
                    refresh_request: None,
                    refresh_throttled_until: None,
                });
                (keep, Some(ended))
            }
        };
    let Some(decided) = decided else {
        let synced = ended.unwrap_or_else(|| Synced::failed(Error::Internal("no token and no result".into()), None));
        let count = selected.count();
        return (synced, Fanout { copies: None, missing: selected.missing, selected: count });
    };
    let source = in_place.and_then(|(_, ns)| ns);
    let written =
        write_copies(cr, ctx, &copies, &selected, &inputs, &decided, source.as_deref(), &valid.common.target_name)
            .await;
    let fanout = Fanout { copies: Some(written), missing: selected.missing.clone(), selected: selected.count() };
    let renew_before = inputs.renew_before;
    let synced = match ended {
        Some(ended) => ended,
        None => decided.written(previous, renew_before),
    };
    (synced, fanout)
}

fn selected_namespaces(ctx: &ClusterContext, selection: &crate::crd::cluster::Selection) -> Selected {
    let namespaces = ctx.namespaces.state();
    let empty = BTreeMap::new();
    select(
        selection,
        namespaces.iter().map(|ns| NamespaceFacts {
            name: ns.metadata.name.as_deref().unwrap_or_default(),
            labels: ns.metadata.labels.as_ref().unwrap_or(&empty),
            terminating: ns.metadata.deletion_timestamp.is_some(),
        }),
    )
}

/// Every cached copy this credential owns, by namespace.
fn copies_of(ctx: &ClusterContext, cr: &ClusterGroupDocsCredential) -> BTreeMap<String, Arc<CachedSecret>> {
    let uid = cr.uid().unwrap_or_default();
    ctx.copies
        .state()
        .into_iter()
        .filter(|s| s.metadata.owner_references.iter().flatten().any(|o| o.controller == Some(true) && o.uid == uid))
        .filter_map(|s| Some((s.metadata.namespace.clone()?, s)))
        .collect()
}

/// The token the copies hold, if one is right for the current inputs: preferably the one
/// status records; with the namespace it was read from.
fn token_in_place(
    copies: &BTreeMap<String, Arc<CachedSecret>>,
    selected: &Selected,
    inputs: &Inputs,
    previous: &GroupDocsCredentialStatus,
    target_name: &str,
) -> Option<(TokenFacts, Option<String>)> {
    let usable = copies
        .iter()
        .filter(|(ns, s)| selected.contains(ns) && s.metadata.name.as_deref() == Some(target_name))
        .filter_map(|(ns, s)| usable_token(s, inputs, previous).map(|facts| (facts, Some(ns.clone()))));
    usable.max_by_key(|(facts, _)| {
        (previous.token_fingerprint.as_deref() == Some(facts.fingerprint.as_str()), facts.expires_at)
    })
}

/// Brings every selected namespace's copy in line, a few at a time; returns each outcome.
#[allow(clippy::too_many_arguments)]
async fn write_copies(
    cr: &ClusterGroupDocsCredential,
    ctx: &ClusterContext,
    copies: &BTreeMap<String, Arc<CachedSecret>>,
    selected: &Selected,
    inputs: &Inputs,
    decided: &Decided,
    source: Option<&str>,
    target_name: &str,
) -> Vec<(String, Copy)> {
    let name = cr.name_any();
    let owner = cr.controller_owner_ref(&());
    let target_for = |ns: &str| Target {
        credential: &name,
        namespace: ns.to_string(),
        name: target_name.to_string(),
        spec: &cr.spec.target,
        owner: owner.clone(),
        cluster_credential: Some(&name),
    };
    let mut outcomes = Vec::with_capacity(selected.namespaces.len());
    let mut pending = Vec::new();
    for ns in &selected.namespaces {
        let target = target_for(ns);
        let existing = copies.get(ns).filter(|s| s.metadata.name.as_deref() == Some(target_name));
        let desired = target::desired(&target, &decided.facts, &inputs.issued_for);
        match existing {
            Some(s) if target::ownership(Some(&s.metadata), &target) == Ownership::Foreign => {
                outcomes.push((ns.clone(), Copy::failed(&Error::TargetConflict { name: target_name.to_string() })));
            }
            Some(s) if !target::needs_update(s, &desired) => outcomes.push((ns.clone(), Copy::Current)),
            _ => pending.push((ns.clone(), desired)),
        }
    }
    if pending.is_empty() {
        return outcomes;
    }
    let token = match &decided.fresh {
        Some(token) => Ok(token.clone()),
        None => read_token_value(ctx, source, target_name, &decided.facts).await,
    };
    let token = match token {
        Ok(token) => token,
        Err(e) => {
            outcomes.extend(pending.into_iter().map(|(ns, _)| (ns, Copy::failed(&e))));
            outcomes.sort_by(|a, b| a.0.cmp(&b.0));
            return outcomes;
        }
    };
    let shared = &ctx.shared;
    let writes = futures::stream::iter(pending)
        .map(|(ns, desired)| {
            let target = target_for(&ns);
            let token = &token;
            async move {
                let existing = copies.get(&ns).filter(|s| s.metadata.name.as_deref() == Some(target_name));
                let write =
                    SecretWrite { existing: existing.map(AsRef::as_ref), desired: &desired, fresh: Some(token) };
                let result = write_secret(&shared.client, &shared.writes, &target, write, &inputs.issued_for).await;
                (ns, result.map_or_else(|e| Copy::failed(&e), |()| Copy::Current))
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    outcomes.extend(writes);
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    outcomes
}

/// The cache keeps facts about the token, not the token: to copy it into another namespace,
/// read it from the copy it came from.
async fn read_token_value(
    ctx: &ClusterContext,
    source: Option<&str>,
    target_name: &str,
    facts: &TokenFacts,
) -> Result<Token, Error> {
    let changed = || Error::TargetChanged { name: target_name.to_string() };
    let ns = source.ok_or_else(changed)?;
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), ns);
    let secret = api.get(target_name).await?;
    match target::read_token(&secret) {
        Some((token, _)) if token.access_token.fingerprint() == facts.fingerprint => {
            Ok(Token { issued_at: facts.issued_at, expires_at: facts.expires_at, ..token })
        }
        _ => Err(changed()),
    }
}

/// Deletes the copies in namespaces that no longer match, and those of an old target name.
/// The UID precondition makes sure only the copy that was seen is deleted.
async fn remove_stale_copies(
    ctx: &ClusterContext,
    cr: &ClusterGroupDocsCredential,
    copies: &BTreeMap<String, Arc<CachedSecret>>,
    selected: &Selected,
    target_name: &str,
) {
    for (ns, copy) in copies {
        let current = selected.contains(ns) && copy.metadata.name.as_deref() == Some(target_name);
        if current {
            continue;
        }
        let name = copy.metadata.name.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), ns);
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: copy.metadata.uid.clone(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                info!(cluster_credential = %cr.name_any(), namespace = %ns, secret = %name, "removed the token Secret from a namespace that is no longer selected")
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                warn!(cluster_credential = %cr.name_any(), namespace = %ns, error = %e, "could not remove a token Secret")
            }
        }
    }
}

async fn write_status(
    cr: &ClusterGroupDocsCredential,
    ctx: &ClusterContext,
    status: &ClusterGroupDocsCredentialStatus,
) -> Result<(), Error> {
    let api: Api<ClusterGroupDocsCredential> = Api::all(ctx.shared.client.clone());
    let patch = serde_json::json!({
        "apiVersion": "groupdocs.cloud/v1alpha1",
        "kind": "ClusterGroupDocsCredential",
        "status": status,
    });
    let written =
        api.patch_status(&cr.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.shared.metrics.status_written();
    let token = written.status.as_ref().map(|s| &s.token);
    ctx.shared.writes.wrote(&cr.uid().unwrap_or_default(), token, Instant::now());
    Ok(())
}

/// One event per change of outcome, as for the namespaced kind.
async fn publish_events(
    cr: &ClusterGroupDocsCredential,
    ctx: &ClusterContext,
    previous: &ClusterGroupDocsCredentialStatus,
    status: &ClusterGroupDocsCredentialStatus,
    synced: &Synced,
) {
    let selected = status.namespaces.as_ref().map_or(0, |n| n.selected);
    let (kind, reason, note) = match &synced.result {
        Ok(Outcome::Issued) if previous.token.token_fingerprint.is_none() => {
            (events::Kind::Normal, "TokenIssued", format!("token written to {selected} namespaces"))
        }
        Ok(Outcome::Renewed) if previous.token.token_fingerprint != status.token.token_fingerprint => (
            events::Kind::Normal,
            "TokenRenewed",
            format!(
                "token renewed in {selected} namespaces (fingerprint {})",
                status.token.token_fingerprint.clone().unwrap_or_default()
            ),
        ),
        Err(refused) if !previous.token.conditions.iter().any(|c| c.reason == refused.error.reason()) => {
            (events::Kind::Warning, refused.error.reason(), refused.error.to_string())
        }
        _ => return,
    };
    let occurrence = Occurrence { kind, reason, action: "Reconcile", note };
    if let Err(e) = ctx.shared.events.publish(cr, occurrence).await {
        warn!(cluster_credential = %cr.name_any(), error = %e, "could not publish event");
    }
}
