//! Who calls: the call's metadata (caller secret, `authorization`, trace context),
//! the credentials of a request admitted by the one rule, and the identity proven
//! from them (once per distinct `Identity` message in a batch).

use std::collections::HashMap;

use prost::Message as _;
use tonic::Status;

use super::untrusted;
use crate::api::mcp_check::{
    Asserted, CallerTrust, Credentials, UntrustedAssertion, admit, decision_meta, for_server,
    resolve,
};
use crate::api::proto::v1::{self as pb, CheckRequest};
use crate::api::refusal::Refusal;
use crate::api::services::Services;
use crate::authz::DecisionMeta;
use crate::identity::{AuthnError, Identity, TrustedIdentity, bearer_token_from_header};

/// Who the call's metadata says is calling.
pub(super) struct Caller {
    trust: CallerTrust,
    authorization: Option<String>,
    pub(super) meta: DecisionMeta,
}

pub(super) fn caller<T>(request: &tonic::Request<T>, services: &Services) -> Caller {
    let metadata = request.metadata();
    let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    Caller {
        trust: CallerTrust::of_grpc(services, request),
        authorization: text("authorization").map(str::to_owned),
        meta: decision_meta(text("traceparent"), text("x-request-id")),
    }
}

/// Why the credentials of a request cannot be used.
pub(super) enum CredentialProblem {
    /// An assertion from an untrusted caller: the whole call is refused.
    Untrusted(UntrustedAssertion),
    /// A malformed `authorization` metadata: this request is refused.
    Refused(Refusal),
}

/// The credentials of a request: the identity message (its assertions admitted by
/// the one rule), else the call's `authorization` metadata for the token.
pub(super) fn credentials<'a>(
    identity: Option<&'a pb::Identity>,
    caller: &'a Caller,
    server: Option<&crate::config::ResourceServer>,
) -> Result<Credentials<'a>, CredentialProblem> {
    let non_empty = |s: &'a str| (!s.is_empty()).then_some(s);
    let mut bearer_token = None;
    let mut asserted = Asserted::default();
    if let Some(id) = identity {
        bearer_token = non_empty(&id.bearer_token);
        asserted.spiffe_id = non_empty(&id.spiffe_id);
        if let Some(v) = &id.verified
            && (!v.user.is_empty() || !v.application.is_empty() || !v.groups.is_empty())
        {
            asserted.identity = Some(TrustedIdentity {
                user: non_empty(&v.user).map(str::to_owned),
                application: non_empty(&v.application).map(str::to_owned),
                groups: v.groups.clone(),
            });
        }
    }
    let admitted = admit(asserted, caller.trust).map_err(CredentialProblem::Untrusted)?;
    if bearer_token.is_none()
        && let Some(header) = &caller.authorization
    {
        bearer_token = Some(
            bearer_token_from_header(header)
                .map_err(|e| CredentialProblem::Refused(Refusal::unauthenticated(&e, server)))?,
        );
    }
    Ok(Credentials::admitted(bearer_token, admitted))
}

/// Identities already resolved in this call, by their `Identity` message: a batch
/// usually names one identity for all its checks.
#[derive(Default)]
pub(super) struct Resolved(pub(super) HashMap<Vec<u8>, Result<Identity, AuthnError>>);

/// Who asks, for one check.
#[derive(Debug)]
pub(super) enum Who {
    /// Proven.
    Known(Identity),
    /// The check is refused before its message is read (no server, a malformed
    /// `authorization`).
    Refused(Refusal),
    /// The credentials did not verify (the refusal, with the server's challenge):
    /// reported after a malformed message.
    Failed(Refusal),
}

/// Prove who asks, for one check (`Err` refuses the whole call).
pub(super) async fn prove(
    services: &Services,
    caller: &Caller,
    request: &CheckRequest,
    resolved: Option<&mut Resolved>,
) -> Result<Who, Status> {
    if request.server.is_empty() {
        return Ok(Who::Refused(Refusal::invalid("`server` is empty")));
    }
    let creds = match credentials(
        request.identity.as_ref(),
        caller,
        services.resource_server(&request.server),
    ) {
        Ok(c) => c,
        Err(CredentialProblem::Untrusted(e)) => {
            return Err(untrusted(&services.engine, &caller.meta, &e));
        }
        Err(CredentialProblem::Refused(r)) => return Ok(Who::Refused(r)),
    };
    let identity = match resolved {
        None => resolve(&services.resolver, creds).await,
        Some(resolved) => {
            let key = request
                .identity
                .as_ref()
                .map(|i| i.encode_to_vec())
                .unwrap_or_default();
            match resolved.0.get(&key) {
                Some(known) => known.clone(),
                None => {
                    let fresh = resolve(&services.resolver, creds).await;
                    resolved.0.insert(key, fresh.clone());
                    fresh
                }
            }
        }
    };
    // The per-server audience check after the batch's cache of identities: one
    // identity may be asked about several servers.
    Ok(
        match identity.and_then(|i| for_server(services, &i, &request.server).map(|()| i)) {
            Ok(i) => Who::Known(i),
            Err(e) => Who::Failed(Refusal::unauthenticated(
                &e,
                services.resource_server(&request.server),
            )),
        },
    )
}
