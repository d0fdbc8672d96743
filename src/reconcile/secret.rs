//! The target Secret written: created when absent, brought in line when ours, never touched
//! when foreign.

use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::info;

use crate::controller::FIELD_MANAGER;
use crate::error::Error;
use crate::target::{self, CachedSecret, IssuedFor, Ownership, Target};
use crate::token::Token;
use crate::writes::RecentWrites;

/// What `write_secret` works from.
pub(crate) struct SecretWrite<'a> {
    /// The target Secret as the cache (or a GET, in `get` mode) saw it.
    pub(crate) existing: Option<&'a CachedSecret>,
    pub(crate) desired: &'a CachedSecret,
    /// A new token; `None` keeps the one in place.
    pub(crate) fresh: Option<&'a Token>,
}

/// Creates the target Secret or brings ours in line; never touches a Secret we do not own.
/// Records what it wrote in `writes`, so that the watch event it causes is not news.
pub(crate) async fn write_secret(
    client: &Client,
    writes: &RecentWrites,
    target: &Target<'_>,
    write: SecretWrite<'_>,
    issued_for: &IssuedFor,
) -> Result<(), Error> {
    if let Some(existing) = write.existing
        && !target::needs_update(existing, write.desired)
    {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let name = target.name.clone();
    // The cache holds no token and no foreign labels: an update starts from the full Secret.
    let existing = match write.existing {
        Some(_) => api.get(&name).await?,
        None => match api
            .create(
                &PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
                &target::render(target, write.fresh.ok_or_else(|| changed(&name))?, issued_for)?,
            )
            .await
        {
            Ok(created) => {
                writes.wrote_secret(&created, Instant::now());
                info!(credential = %target.credential, namespace = %target.namespace, secret = %name, "created target Secret");
                return Ok(());
            }
            // Not in our cache: either foreign, or ours with the managed-by label stripped.
            Err(kube::Error::Api(s)) if s.code == 409 => api.get(&name).await?,
            Err(e) => return Err(secret_write_error(e)),
        },
    };
    match target::ownership(Some(&existing.metadata), target) {
        Ownership::Ours => {}
        _ => return Err(Error::TargetConflict { name }),
    }
    let token = match write.fresh {
        Some(token) => token.clone(),
        None => token_in_place(&existing, write.desired).ok_or_else(|| changed(&name))?,
    };
    let desired = target::render(target, &token, issued_for)?;
    if !target::needs_update(&CachedSecret::from(existing.clone()), write.desired) {
        return Ok(());
    }
    // The merged object carries the uid and resourceVersion we read: the update fails rather
    // than overwrite a Secret that was replaced or changed meanwhile.
    let merged = target::merge(&existing, &desired);
    let updated = api
        .replace(&name, &PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &merged)
        .await
        .map_err(secret_write_error)?;
    writes.wrote_secret(&updated, Instant::now());
    info!(credential = %target.credential, namespace = %target.namespace, secret = %name, "updated target Secret");
    Ok(())
}

/// The token of the full Secret, when it is still the one the cache showed.
fn token_in_place(existing: &Secret, desired: &CachedSecret) -> Option<Token> {
    let want = desired.held_token();
    match (target::read_token(existing), want) {
        // The times are the trusted ones (from status), not whatever the Secret now says.
        (Some((token, _)), Some(facts)) if token.access_token.fingerprint() == facts.fingerprint => {
            Some(Token { issued_at: facts.issued_at, expires_at: facts.expires_at, ..token })
        }
        _ => None,
    }
}

/// The Secret changed between the cache and the read: the next reconcile sees the change.
fn changed(name: &str) -> Error {
    Error::TargetChanged { name: name.to_string() }
}

/// The API server refusing the Secret itself (422) is a spec problem (labels or annotations
/// from `spec.target` that Kubernetes rejects), not a transient failure.
fn secret_write_error(e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) if s.code == 422 => {
            Error::InvalidSpec(format!("Kubernetes rejects the target Secret: {}", s.message))
        }
        e => e.into(),
    }
}

#[cfg(test)]
mod tests;
