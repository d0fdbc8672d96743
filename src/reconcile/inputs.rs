//! The first step: the spec checked and the client credentials read.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};

use super::namespace;
use crate::controller::{CLIENT_CREDENTIALS_LABEL, Context, SecretAccess, Shared};
use crate::crd::GroupDocsCredential;
use crate::error::Error;
use crate::redact::Sensitive;
use crate::status::Inputs;
use crate::target::{CachedSecret, IssuedFor};
use crate::token::TokenRequest;

/// Validates the spec and reads the client credentials.
pub(crate) async fn resolve_inputs(
    cr: &GroupDocsCredential,
    shared: &Shared,
    client_secrets: &Store<Secret>,
) -> Result<Inputs, Error> {
    let spec = &cr.spec;
    let valid = cr.validate()?;
    let url = shared.settings.policy.check(&spec.token_url)?;

    let ns = namespace(cr);
    let secret_name = &spec.client_secret_ref.name;
    let secret = client_secret(shared, client_secrets, &ns, secret_name).await?;
    let read = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::SecretKeyMissing { name: secret_name.clone(), key: key.to_string() })
    };
    let client_id = read(&spec.client_secret_ref.client_id_key)?;
    let client_secret = Sensitive::new(read(&spec.client_secret_ref.client_secret_key)?);
    let scope = valid.scope;
    Ok(Inputs {
        issued_for: IssuedFor {
            token_url: url.to_string(),
            client_id: client_id.clone(),
            scope: scope.clone(),
            client_secret_version: secret.resource_version().unwrap_or_default(),
        },
        request: TokenRequest { url: url.to_string(), client_id, client_secret, scope },
        renew_before: valid.renew_before,
    })
}

/// The labelled client Secret, from the cache or (in `get` mode) the API server.
async fn client_secret(shared: &Shared, store: &Store<Secret>, ns: &str, name: &str) -> Result<Arc<Secret>, Error> {
    if let SecretAccess::Get { .. } = shared.settings.secret_access {
        let api: Api<Secret> = Api::namespaced(shared.client.clone(), ns);
        return match api.get_opt(name).await? {
            Some(s) if s.labels().get(CLIENT_CREDENTIALS_LABEL).is_some_and(|v| v == "true") => Ok(Arc::new(s)),
            Some(_) => Err(Error::SecretNotLabelled { namespace: ns.to_string(), name: name.to_string() }),
            None => Err(Error::SecretNotFound { namespace: ns.to_string(), name: name.to_string() }),
        };
    }
    match store.get(&ObjectRef::new(name).within(ns)) {
        Some(secret) => Ok(secret),
        None => Err(explain_missing_client_secret(shared, ns, name).await),
    }
}

/// The Secret of the target's name if it carries our label, from the cache or the API server.
pub(super) async fn target_secret(cr: &GroupDocsCredential, ctx: &Context) -> Result<Option<Arc<CachedSecret>>, Error> {
    let name = cr.target_name();
    if let SecretAccess::Get { .. } = ctx.shared.settings.secret_access {
        let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), &namespace(cr));
        return Ok(api.get_opt(&name).await?.map(|s| Arc::new(CachedSecret::from(s))));
    }
    Ok(ctx.owned_secrets.get(&namespace(cr), &name))
}

/// The client Secret is not in the cache of labelled Secrets: find out whether it is absent
/// or only unlabelled, so the message can say what to do.
async fn explain_missing_client_secret(shared: &Shared, ns: &str, name: &str) -> Error {
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), ns);
    match api.get_metadata_opt(name).await {
        Ok(Some(_)) => Error::SecretNotLabelled { namespace: ns.to_string(), name: name.to_string() },
        Ok(None) => Error::SecretNotFound { namespace: ns.to_string(), name: name.to_string() },
        Err(e) => Error::from(e),
    }
}
