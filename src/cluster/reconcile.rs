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
use crate::crd::TargetSecret;
use crate::crd::cluster::ClusterGroupDocsCredentialStatus;
use crate::crd::{ClusterGroupDocsCredential, GroupDocsCredentialStatus};
use crate::error::Error;
use crate::events::{self, Occurrence};
use crate::reconcile::inputs::resolve_inputs;
use crate::reconcile::secret::{SecretWrite, write_secret};
use crate::reconcile::{Decided, decide_token};
use crate::schedule;
use crate::status::{Inputs, Synced, next_status, next_wake, requeue_after, usable_token};
use crate::target::{self, Target, WatchedSecret};
use crate::token::{Token, TokenFacts};

/// Copies written at once: enough to fan out to a thousand namespaces in seconds without
/// flooding the API server.
const WRITE_CONCURRENCY: usize = 16;

/// How soon a namespace whose copy failed is tried again: for a transient reason, and for
/// one a person must fix.
const TRANSIENT_RETRY: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);
const STALLED_RETRY: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

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
    let status_written = status != previous;
    if status_written {
        write_status(&cr, &ctx, &status).await?;
        publish_events(&cr, &ctx, &previous, &status, &synced).await;
    }
    let result = synced.result_label();
    shared.metrics.reconciled(result, started.elapsed());
    let ms = started.elapsed().as_millis();
    debug!(cluster_credential = %cr.name_any(), result, selected = fanout.selected, status_written, ms, "reconciled");
    // A namespace whose copy failed is looked at again: soon for a transient failure, in five
    // minutes for one a person must fix (a foreign Secret's removal sends no event we watch).
    let retry_copies = fanout
        .copies
        .iter()
        .flatten()
        .filter_map(|(_, c)| match c {
            Copy::Failed { stalled: false, .. } => Some(schedule::add(now, TRANSIENT_RETRY)),
            Copy::Failed { stalled: true, .. } => Some(schedule::add(now, STALLED_RETRY)),
            Copy::Current => None,
        })
        .min();
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
///
/// The token is read back only from the operator's own copy in the client Secret's namespace
/// (the source, which only the operator and that namespace's admins can write), never from a
/// copy in a selected namespace: those are their tenants' to write, and one tenant must not be
/// able to change what the others receive.
async fn sync(
    cr: &ClusterGroupDocsCredential,
    ctx: &ClusterContext,
    previous: &GroupDocsCredentialStatus,
    now: Timestamp,
) -> (Synced, Fanout) {
    let started = Instant::now();
    let shared = &ctx.shared;
    let client_namespace = &shared.settings.cluster_resource_namespace;
    let no_copies = |selected: usize| Fanout { copies: None, missing: Vec::new(), selected };
    let valid = match cr.validate(client_namespace) {
        Ok(valid) => valid,
        Err(e) => return (Synced::failed(e, None), no_copies(0)),
    };
    let names = Names { target: valid.common.target_name.clone(), source: cr.source_secret_name(), client_namespace };
    let selected = selected_namespaces(ctx, &valid.selection);
    let owned = Owned::of(ctx, cr, &names);
    remove_stale_copies(ctx, cr, &owned, &selected, &names).await;
    let view = cr.token_view(client_namespace);
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
    let prepared = started.elapsed();
    let in_place = owned.source.as_deref().and_then(|s| usable_token(&s.cached, &inputs, previous));
    let (decided, ended) = match decide_token(&view, shared, previous, &inputs, in_place.clone(), now).await {
        Ok(decided) => (Some(decided), None),
        // Refused or held: the token in place (if still valid) still goes to new namespaces.
        Err(ended) => {
            let keep = in_place.filter(|f| f.expires_at > now).map(|facts| Decided {
                fresh: None,
                facts: facts.clone(),
                in_place: Some(facts),
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
    let tokened = started.elapsed();
    let written = write_copies(cr, ctx, &owned, &selected, &inputs, &decided, &names).await;
    debug!(
        cluster_credential = %cr.name_any(),
        prepare_ms = prepared.as_millis(),
        token_ms = (tokened - prepared).as_millis(),
        copies_ms = (started.elapsed() - tokened).as_millis(),
        "synced"
    );
    let renew_before = inputs.renew_before;
    if let Err(error) = &written.source {
        if !written.copies.iter().any(|(_, c)| *c == Copy::Current) {
            // The new token is nowhere: status must not claim it.
            let synced = Synced { renew_before, ..Synced::failed(error.clone(), decided.in_place.clone()) };
            let count = selected.count();
            return (synced, Fanout { copies: Some(written.copies), missing: selected.missing, selected: count });
        }
        warn!(cluster_credential = %cr.name_any(), %error, "could not write the source copy of the token; retrying");
    }
    let fanout = Fanout { copies: Some(written.copies), missing: selected.missing.clone(), selected: selected.count() };
    let synced = match ended {
        Some(ended) => ended,
        None => decided.written(previous, renew_before),
    };
    (synced, fanout)
}

/// The Secret names a reconcile works with.
struct Names<'a> {
    /// The copies' name in every selected namespace.
    target: String,
    /// The source's name, in `client_namespace`.
    source: String,
    client_namespace: &'a str,
}

impl Names<'_> {
    fn is_source(&self, secret: &WatchedSecret) -> bool {
        secret.metadata.namespace.as_deref() == Some(self.client_namespace)
            && secret.metadata.name.as_deref() == Some(self.source.as_str())
    }
}

/// The cached Secrets this credential owns.
struct Owned {
    source: Option<Arc<WatchedSecret>>,
    /// Copies of the target's name, by namespace.
    copies: BTreeMap<String, Arc<WatchedSecret>>,
    /// Everything else it owns: copies of an old target name, in namespaces no longer selected.
    others: Vec<Arc<WatchedSecret>>,
}

impl Owned {
    fn of(ctx: &ClusterContext, cr: &ClusterGroupDocsCredential, names: &Names) -> Owned {
        let uid = cr.uid().unwrap_or_default();
        let mut owned = Owned { source: None, copies: BTreeMap::new(), others: Vec::new() };
        let ours = |s: &Arc<WatchedSecret>| {
            s.metadata.owner_references.iter().flatten().any(|o| o.controller == Some(true) && o.uid == uid)
        };
        for secret in ctx.copies.state().into_iter().filter(ours) {
            if names.is_source(&secret) {
                owned.source = Some(secret);
            } else if secret.metadata.name.as_deref() == Some(names.target.as_str())
                && let Some(ns) = secret.metadata.namespace.clone()
            {
                owned.copies.insert(ns, secret);
            } else {
                owned.others.push(secret);
            }
        }
        owned
    }
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

/// What [`write_copies`] did: each selected namespace's outcome, and the source's.
struct Written {
    copies: Vec<(String, Copy)>,
    source: Result<(), Error>,
}

/// Brings the source and every selected namespace's copy in line, a few at a time.
async fn write_copies(
    cr: &ClusterGroupDocsCredential,
    ctx: &ClusterContext,
    owned: &Owned,
    selected: &Selected,
    inputs: &Inputs,
    decided: &Decided,
    names: &Names<'_>,
) -> Written {
    let name = cr.name_any();
    let owner = cr.controller_owner_ref(&());
    // The source holds the token in the default format and nothing of `spec.target`.
    let source_spec = TargetSecret::default();
    let target_for = |ns: &str| Target {
        credential: &name,
        namespace: ns.to_string(),
        name: names.target.clone(),
        spec: &cr.spec.target,
        owner: owner.clone(),
        cluster_credential: Some(&name),
    };
    let source_target = Target {
        namespace: names.client_namespace.to_string(),
        name: names.source.clone(),
        spec: &source_spec,
        ..target_for(names.client_namespace)
    };
    let source_desired = target::desired(&source_target, &decided.facts, &inputs.issued_for);
    let source_current = owned.source.as_deref().is_some_and(|s| !target::needs_update(&s.cached, &source_desired));
    let mut outcomes = Vec::with_capacity(selected.namespaces.len());
    let mut pending = Vec::new();
    for ns in &selected.namespaces {
        let desired = target::desired(&target_for(ns), &decided.facts, &inputs.issued_for);
        match owned.copies.get(ns) {
            Some(s) if !target::needs_update(&s.cached, &desired) => outcomes.push((ns.clone(), Copy::Current)),
            _ => pending.push((Some(ns.clone()), desired)),
        }
    }
    if !source_current {
        pending.push((None, source_desired));
    }
    let mut written = Written { copies: outcomes, source: Ok(()) };
    if pending.is_empty() {
        return written;
    }
    let token = match &decided.fresh {
        Some(token) => Ok(token.clone()),
        None => read_token_value(ctx, names, &decided.facts).await,
    };
    let token = match token {
        Ok(token) => token,
        Err(e) => {
            for (ns, _) in pending {
                match ns {
                    Some(ns) => written.copies.push((ns, Copy::failed(&e))),
                    None => written.source = Err(e.clone()),
                }
            }
            written.copies.sort_by(|a, b| a.0.cmp(&b.0));
            return written;
        }
    };
    let shared = &ctx.shared;
    let results = futures::stream::iter(pending)
        .map(|(ns, desired)| {
            let target = match &ns {
                Some(ns) => target_for(ns),
                None => source_target.clone(),
            };
            let existing = match &ns {
                Some(ns) => owned.copies.get(ns),
                None => owned.source.as_ref(),
            };
            let token = &token;
            async move {
                let write =
                    SecretWrite { existing: existing.map(|s| &s.cached), desired: &desired, fresh: Some(token) };
                (ns, write_secret(&shared.client, &shared.writes, &target, write, &inputs.issued_for).await)
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (ns, result) in results {
        match ns {
            Some(ns) => written.copies.push((ns, result.map_or_else(|e| Copy::failed(&e), |()| Copy::Current))),
            None => written.source = result,
        }
    }
    written.copies.sort_by(|a, b| a.0.cmp(&b.0));
    written
}

/// The cache keeps facts about the token, not the token: to copy it into a namespace, read it
/// from the source (and only if it is the token status records, whose times are trusted).
async fn read_token_value(ctx: &ClusterContext, names: &Names<'_>, facts: &TokenFacts) -> Result<Token, Error> {
    let changed = || Error::TargetChanged { name: names.source.clone() };
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), names.client_namespace);
    let secret = api.get_opt(&names.source).await?.ok_or_else(changed)?;
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
    owned: &Owned,
    selected: &Selected,
    names: &Names<'_>,
) {
    let stale = owned.copies.iter().filter(|(ns, _)| !selected.contains(ns)).map(|(_, s)| s).chain(&owned.others);
    for copy in stale {
        let (ns, name) =
            (copy.metadata.namespace.clone().unwrap_or_default(), copy.metadata.name.clone().unwrap_or_default());
        if names.is_source(copy) {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), &ns);
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: copy.metadata.uid.clone(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                info!(cluster_credential = %cr.name_any(), namespace = %ns, secret = %name, "removed a token Secret that is no longer wanted there")
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                warn!(cluster_credential = %cr.name_any(), namespace = %ns, error = %e, "could not remove a token Secret")
            }
        }
    }
}

/// Records a panicked reconcile on the cluster credential, as the namespaced kind does.
pub(super) async fn report_panic(
    cr: &ClusterGroupDocsCredential,
    ctx: &ClusterContext,
    message: String,
) -> Result<Action, Error> {
    tracing::error!(cluster_credential = %cr.name_any(), panic = %message, "reconcile panicked; reported on the credential");
    ctx.shared.metrics.panicked();
    let error = Error::Internal(message);
    ctx.shared.metrics.reconciled(error.reason(), Duration::ZERO);
    let previous = cr.status.clone().unwrap_or_default();
    let facts = crate::conditions::Facts {
        generation: cr.metadata.generation,
        token_expires_at: previous.token.expires_at.as_ref().map(|t| t.0),
        outcome: Outcome::Failed(&error),
        now: schedule::whole_seconds(Timestamp::now()),
        note: None,
    };
    let mut status = previous.clone();
    status.token.conditions = crate::conditions::conditions(&previous.token.conditions, &facts);
    if status != previous {
        write_status(cr, ctx, &status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
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
    let selected = status.namespaces.as_ref().map_or(0, |n| n.ready);
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
