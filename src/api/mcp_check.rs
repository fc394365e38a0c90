//! What the gateway API and Envoy ext_authz share: prove who asks, turn each MCP
//! message into a decision request, ask the core, and combine the answers (a
//! batch is allowed only if every message in it is).
//!
//! # Who may assert what
//!
//! A request proves who asks with a bearer token (verified against the configured
//! issuers), or is vouched for by its transport: Envoy's
//! `attributes.source.principal` is the peer of an mTLS connection Envoy itself
//! authenticated. Everything else a request says about who asks is an *assertion*
//! mcp-authz cannot check: a SPIFFE ID or a user/application named in a gRPC
//! `Identity`, a SPIFFE ID in the HTTP mode's `x-mcp-authz-spiffe-id` header.
//! [`admit`] is the one rule for assertions: honoured only from a trusted caller
//! ([`CallerTrust::of`]: one whose verified client certificate names a SPIFFE ID in
//! `tls.trusted_callers`, or that presents the configured caller secret), refused
//! from anyone else — never silently used, never silently dropped. [`Credentials`]
//! can only be built from admitted assertions, so no interface can skip the rule.
//! Once callers are authenticated by certificate (`tls.trusted_callers` set),
//! Envoy's `source.principal` is an assertion too ([`admit_envoy_peer`]): only a
//! trusted Envoy vouches for the handshake it reports.
//!
//! # Many decisions in one request
//!
//! A request that asks for more than one decision (a JSON-RPC batch, a
//! `BatchCheck`, a `FilterList`) is decided by [`off_workers`]: on tokio's blocking
//! pool, never on the async workers that answer health checks and single
//! decisions.

use serde_json::{Map, Value};

use super::services::{Services, secret_matches};
use super::tls::PeerIdentity;
use crate::authz::{DecisionMeta, DecisionRequest, Engine, Interface, Outcome};
use crate::config::ResourceServers;
use crate::identity::{
    AuthnError, Identity, IdentityInput, Resolver, ServerAudience, TrustedIdentity,
};
use crate::mcp::jsonrpc::McpCall;
use crate::policy::Snapshot;
use crate::policy::reads_as;
use crate::telemetry::TraceContext;

/// The context attribute an MCP message itself fills: a caller's extra context
/// never carries it (what the service fills besides, `user`, `scopes` and the
/// like, the core refuses: [`crate::authz::service_filled_in`]).
const MESSAGE_FILLED: &str = "arguments";
/// The gRPC metadata (gateway API) or HTTP header (Envoy's HTTP ext_authz mode) in
/// which the trusted caller presents the secret of `grpc.trusted_caller_token_file`.
pub const CALLER_TOKEN_HEADER: &str = "x-mcp-authz-caller-token";

/// Whether a request comes from a trusted caller (the MCP gateway, or an Envoy
/// sidecar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerTrust {
    /// The caller's verified client certificate names a SPIFFE ID of
    /// `tls.trusted_callers`, or it presented the configured caller secret.
    Trusted,
    /// Anyone else, including every caller when neither is configured.
    Untrusted,
}

impl CallerTrust {
    /// The trust of a caller whose TLS handshake proved `peer` (none: plaintext, or
    /// no client certificate) and that presented `presented` as its secret (compared
    /// in constant time with the configured one).
    pub fn of(services: &Services, presented: Option<&[u8]>, peer: Option<&PeerIdentity>) -> Self {
        let by_certificate = peer.and_then(|p| p.spiffe_id.as_deref()).is_some_and(|id| {
            services
                .trusted_callers
                .iter()
                .any(|t| crate::config::trusted_caller_matches(t, id))
        });
        let by_secret = match (&services.trusted_caller_token, presented) {
            (Some(expected), Some(presented)) => {
                secret_matches(presented, expected.expose().as_bytes())
            }
            _ => false,
        };
        if by_certificate || by_secret {
            CallerTrust::Trusted
        } else {
            CallerTrust::Untrusted
        }
    }
}

impl CallerTrust {
    /// The trust of the caller of a gRPC call: its client certificate (the
    /// listener's [`PeerIdentity`]) or the secret in its `x-mcp-authz-caller-token`
    /// metadata. Every gRPC service asks this.
    pub fn of_grpc<T>(services: &Services, request: &tonic::Request<T>) -> Self {
        Self::of(
            services,
            request
                .metadata()
                .get(CALLER_TOKEN_HEADER)
                .map(|v| v.as_bytes()),
            request
                .extensions()
                .get::<std::sync::Arc<PeerIdentity>>()
                .map(AsRef::as_ref),
        )
    }

    /// Whether this caller's word is taken for what only the transport or a trusted
    /// caller can vouch for — Envoy's `source.principal`, an AuthZEN subject without
    /// a token: when it is trusted, and from anyone while callers are not
    /// authenticated by certificate ([`Services::authenticates_callers`]).
    pub fn vouches(self, services: &Services) -> bool {
        self == CallerTrust::Trusted || !services.authenticates_callers()
    }
}

/// Whether Envoy's `attributes.source.principal` (the mTLS peer of the connection
/// Envoy reports) is taken as proven: from a trusted caller always; from any caller
/// while callers are not authenticated by certificate (no `tls.trusted_callers`: the
/// port must then be reachable by Envoy only, as the README says). Otherwise it is
/// an assertion of an untrusted caller, and the request is refused.
pub fn admit_envoy_peer(services: &Services, trust: CallerTrust) -> Result<(), UntrustedAssertion> {
    if trust.vouches(services) {
        Ok(())
    } else {
        Err(UntrustedAssertion(Assertion::SpiffeId))
    }
}

/// What a request asserts about who asks, beyond what it proves.
#[derive(Debug, Default)]
pub struct Asserted<'a> {
    /// A SPIFFE ID the request names (not the peer of a connection Envoy authenticated).
    pub spiffe_id: Option<&'a str>,
    /// A user, application and groups the request names as already verified.
    pub identity: Option<TrustedIdentity>,
}

impl Asserted<'_> {
    /// Whether the request asserts nothing.
    pub fn is_empty(&self) -> bool {
        self.spiffe_id.is_none() && self.identity.is_none()
    }
}

/// Assertions [`admit`] let through: the only way to put them into [`Credentials`].
#[derive(Debug, Default)]
pub struct Admitted<'a>(Asserted<'a>);

/// What an untrusted caller asserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assertion {
    /// A SPIFFE ID.
    SpiffeId,
    /// A user, application or groups.
    Identity,
}

/// An assertion from a caller that is not trusted: the request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} asserted in the request is accepted only from a trusted caller (a client certificate of `tls.trusted_callers`, or the caller secret in `{CALLER_TOKEN_HEADER}`)",
    match .0 { Assertion::SpiffeId => "a SPIFFE ID", Assertion::Identity => "an identity" }
)]
pub struct UntrustedAssertion(pub Assertion);

/// The one rule for asserted identities, on every interface: honoured only from
/// the trusted caller, exactly like a verified identity; from anyone else the
/// request is refused.
pub fn admit(
    asserted: Asserted<'_>,
    trust: CallerTrust,
) -> Result<Admitted<'_>, UntrustedAssertion> {
    if trust == CallerTrust::Trusted {
        return Ok(Admitted(asserted));
    }
    if asserted.spiffe_id.is_some() {
        return Err(UntrustedAssertion(Assertion::SpiffeId));
    }
    if asserted.identity.is_some() {
        return Err(UntrustedAssertion(Assertion::Identity));
    }
    Ok(Admitted::default())
}

/// What a caller presented to prove who it is.
#[derive(Debug, Default)]
pub struct Credentials<'a> {
    /// A bearer token to verify.
    bearer_token: Option<&'a str>,
    /// The mTLS peer's SPIFFE ID, as the transport proved it (Envoy's `source.principal`).
    peer_spiffe_id: Option<&'a str>,
    /// Assertions of a trusted caller.
    admitted: Admitted<'a>,
}

impl<'a> Credentials<'a> {
    /// A bearer token (verified when resolved) and the SPIFFE ID of a peer whose
    /// mTLS handshake Envoy made.
    pub fn proven(bearer_token: Option<&'a str>, peer_spiffe_id: Option<&'a str>) -> Self {
        Self {
            bearer_token,
            peer_spiffe_id,
            admitted: Admitted::default(),
        }
    }

    /// A bearer token and what a caller asserted, once [`admit`] let it through.
    pub fn admitted(bearer_token: Option<&'a str>, admitted: Admitted<'a>) -> Self {
        Self {
            bearer_token,
            peer_spiffe_id: None,
            admitted,
        }
    }

    /// Whether nothing at all was presented.
    pub fn is_empty(&self) -> bool {
        self.bearer_token.is_none() && self.peer_spiffe_id.is_none() && self.admitted.0.is_empty()
    }
}

/// One MCP message and the decision on it.
#[derive(Debug)]
pub struct CallOutcome {
    /// The message.
    pub call: McpCall,
    /// The request the core decided.
    pub request: DecisionRequest,
    /// The decision.
    pub outcome: Outcome,
}

/// The answer to an MCP request.
#[derive(Debug)]
pub enum Verdict {
    /// Who asks could not be proven: a deny, answered as HTTP 401.
    Unauthenticated(AuthnError),
    /// Every message decided.
    Decided {
        /// Who asked.
        identity: Box<Identity>,
        /// One outcome per message, in order.
        calls: Vec<CallOutcome>,
    },
}

impl Verdict {
    /// Allowed only if every message is (and there is at least one).
    pub fn allowed(&self) -> bool {
        match self {
            Verdict::Unauthenticated(_) => false,
            Verdict::Decided { calls, .. } => {
                !calls.is_empty() && calls.iter().all(|c| c.outcome.decision.allow)
            }
        }
    }

    /// The message that decided: the first denied one, else the first.
    pub fn deciding(&self) -> Option<&CallOutcome> {
        match self {
            Verdict::Unauthenticated(_) => None,
            Verdict::Decided { calls, .. } => calls
                .iter()
                .find(|c| !c.outcome.decision.allow)
                .or_else(|| calls.first()),
        }
    }
}

/// Prove the identity, then decide every message (off the async workers when
/// there is more than one).
pub async fn check_calls(
    services: &Services,
    interface: Interface,
    credentials: Credentials<'_>,
    server: &str,
    calls: Vec<McpCall>,
    extra_context: &Map<String, Value>,
    meta: &DecisionMeta,
) -> Verdict {
    let identity = match resolve_for(services, credentials, server).await {
        Ok(i) => i,
        Err(e) => return Verdict::Unauthenticated(e),
    };
    // Every message of the request is decided on one snapshot.
    let snapshot = services.engine.snapshot();
    let calls = if calls.len() <= 1 {
        let on = Deciding {
            engine: &services.engine,
            snapshot: &snapshot,
            interface,
            meta,
        };
        decide_calls(on, &identity, server, calls, extra_context)
    } else {
        let engine = services.engine.clone();
        let (identity, server, extra, meta) = (
            identity.clone(),
            server.to_owned(),
            extra_context.clone(),
            meta.clone(),
        );
        off_workers(move || {
            let on = Deciding {
                engine: &engine,
                snapshot: &snapshot,
                interface,
                meta: &meta,
            };
            decide_calls(on, &identity, &server, calls, &extra)
        })
        .await
        .unwrap_or_default()
    };
    Verdict::Decided {
        identity: Box::new(identity),
        calls,
    }
}

/// A request being decided: the engine, the one snapshot every message of the
/// request (and every check of a batch) is decided on, the interface and the
/// caller's metadata.
#[derive(Debug, Clone, Copy)]
pub struct Deciding<'a> {
    /// The engine.
    pub engine: &'a Engine,
    /// The snapshot taken once for the whole request.
    pub snapshot: &'a Snapshot,
    /// The interface the request came in through.
    pub interface: Interface,
    /// The caller's trace context and request id.
    pub meta: &'a DecisionMeta,
}

/// Decide every message of a request, in order, on the calling thread, on the
/// request's one snapshot.
pub fn decide_calls(
    on: Deciding<'_>,
    identity: &Identity,
    server: &str,
    calls: Vec<McpCall>,
    extra_context: &Map<String, Value>,
) -> Vec<CallOutcome> {
    let Deciding {
        engine,
        snapshot,
        interface,
        meta,
    } = on;
    let refusal = caller_context_refusal(extra_context);
    calls
        .into_iter()
        .map(|call| {
            let request = request_for(&call, server, identity, extra_context);
            let outcome = match &refusal {
                Some(reason) => engine.reject(snapshot, interface, reason.clone(), meta),
                None => engine.decide(snapshot, interface, &request, meta),
            };
            CallOutcome {
                call,
                request,
                outcome,
            }
        })
        .collect()
}

/// Run `work` (the decisions of a request that asks for many) on tokio's blocking
/// pool, so that it cannot hold the async workers, at most one such request per
/// CPU at a time; `None` if it panicked.
///
/// Measured against deciding on the async workers in chunks with
/// `tokio::task::yield_now` between them, and against an unbounded blocking pool:
/// this answers `/healthz` and single decisions 10 to 30 times faster at the median
/// while lists are decided, with the same or more list throughput (README.md,
/// "Batches and lists").
pub async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    // Waiting for a slot holds no worker; at most one request per CPU decides at
    // once, so that the async workers keep their share of the CPUs.
    let _slot = DECISION_SLOTS.acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

/// How many requests may decide off the async workers at once: one per CPU, so
/// that however many arrive, the async workers keep their share of the CPUs.
static DECISION_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        )
    });

/// Prove who asks.
pub async fn resolve(
    resolver: &Resolver,
    credentials: Credentials<'_>,
) -> Result<Identity, AuthnError> {
    let Admitted(asserted) = credentials.admitted;
    resolver
        .resolve(IdentityInput {
            bearer_token: credentials.bearer_token,
            spiffe_id: credentials.peer_spiffe_id.or(asserted.spiffe_id),
            trusted: asserted.identity,
        })
        .await
}

/// Prove who asks a request on the MCP server `server`: [`resolve`], then
/// [`for_server`].
pub async fn resolve_for(
    services: &Services,
    credentials: Credentials<'_>,
    server: &str,
) -> Result<Identity, AuthnError> {
    let identity = resolve(&services.resolver, credentials).await?;
    for_server(services, &identity, server)?;
    Ok(identity)
}

/// Whether `identity`'s token (if any) is for the MCP server `server` (RFC 8707;
/// [`Identity::check_server_audience`]): the one per-server audience check of every
/// interface that knows the server.
pub fn for_server(
    services: &Services,
    identity: &Identity,
    server: &str,
) -> Result<(), AuthnError> {
    server_audience(&services.resource_servers, identity, server)
}

/// [`for_server`] with the servers' settings `servers`.
pub fn server_audience(
    servers: &ResourceServers,
    identity: &Identity,
    server: &str,
) -> Result<(), AuthnError> {
    identity.check_server_audience(servers.get(server).map(|s| ServerAudience {
        resource: &s.resource,
        authorization_servers: &s.authorization_servers,
    }))
}

/// The decision request for one MCP message on `server`, asked by `identity`.
pub fn request_for(
    call: &McpCall,
    server: &str,
    identity: &Identity,
    extra_context: &Map<String, Value>,
) -> DecisionRequest {
    let mut request = call.decision_request(server);
    identity.apply_to(&mut request);
    add_context(&mut request, extra_context);
    request
}

/// Merge a caller's extra context attributes. The message's own `arguments` are
/// kept (a caller's `arguments`, in any spelling, are left out: see
/// [`caller_context_refusal`]); what only the service fills is passed on for the
/// core to refuse.
pub fn add_context(request: &mut DecisionRequest, extra: &Map<String, Value>) {
    for (k, v) in extra {
        if !reads_as(k, MESSAGE_FILLED) {
            request
                .context
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
}

/// Why a caller's extra context may not go with MCP messages, if it may not: it
/// names what only the service fills (`user`, `scopes`, ...) or the message's own
/// `arguments`, in any spelling that reads as one of them.
pub fn caller_context_refusal(extra: &Map<String, Value>) -> Option<String> {
    if let Some(given) = extra.keys().find(|k| reads_as(k, MESSAGE_FILLED)) {
        return Some(format!(
            "the request sets `context.{given}`: the arguments come from the MCP message only"
        ));
    }
    crate::authz::service_filled_attribute(extra)
}

/// What the decision log keeps of a call: its W3C trace context and request id
/// (at most 128 printable ASCII characters), from headers or gRPC metadata.
pub fn decision_meta(traceparent: Option<&str>, request_id: Option<&str>) -> DecisionMeta {
    DecisionMeta {
        trace: traceparent.and_then(TraceContext::parse),
        request_id: request_id
            .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned),
        ..DecisionMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> TrustedIdentity {
        TrustedIdentity {
            user: Some("alice".into()),
            application: Some("corpassist".into()),
            groups: vec![],
        }
    }

    #[test]
    fn assertions_need_a_trusted_caller() {
        let spiffe = "spiffe://corp.example/ns/apps/sa/ops-console";
        let cases = [
            (Some(spiffe), None, Some(Assertion::SpiffeId)),
            (None, Some(identity()), Some(Assertion::Identity)),
            (Some(spiffe), Some(identity()), Some(Assertion::SpiffeId)),
            (None, None, None),
        ];
        for (spiffe_id, identity, refused) in cases {
            let asserted = || Asserted {
                spiffe_id,
                identity: identity.clone(),
            };
            assert_eq!(
                admit(asserted(), CallerTrust::Untrusted).err(),
                refused.map(UntrustedAssertion)
            );
            let admitted = admit(asserted(), CallerTrust::Trusted).expect("trusted");
            assert_eq!(admitted.0.spiffe_id, spiffe_id);
            assert_eq!(admitted.0.identity, identity);
        }
    }

    #[test]
    fn the_refusal_names_the_assertion_and_the_secret() {
        let e = UntrustedAssertion(Assertion::SpiffeId).to_string();
        assert!(e.starts_with("a SPIFFE ID asserted"), "{e}");
        assert!(e.contains("`x-mcp-authz-caller-token`"), "{e}");
        assert!(!e.ends_with('.'));
    }
}
