//! The one state every interface serves from ([`Services`]), and the one
//! readiness ([`Ready`]) that gRPC health and `/readyz` both report.
//!
//! Every listener is bound and answering from the start; until the policies are
//! loaded each interface answers "not ready" (gRPC `UNAVAILABLE` and health
//! `NOT_SERVING`, HTTP 503), then [`Ready::set`] makes them all serve at once.

use std::sync::{Arc, OnceLock};

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::authz::Engine;
use crate::config::{
    AuthzenSettings, DenyDetail, GrpcSettings, ResourceServer, ResourceServers, Secret, ServerMap,
};
use crate::identity::Resolver;
use crate::telemetry::Telemetry;

/// Realm of `WWW-Authenticate` challenges.
pub const REALM: &str = "mcp-authz";

/// gRPC services whose health is reported (`""` is the server as a whole).
pub const HEALTH_SERVICES: [&str; 4] = [
    "",
    "mcp_authz.v1.Authorizer",
    "envoy.service.auth.v3.Authorization",
    "envoy.service.ext_proc.v3.ExternalProcessor",
];

/// What the interfaces decide with, and their settings: built once the policies
/// are loaded.
#[derive(Debug, Clone)]
pub struct Services {
    /// The decision engine (it reports its decisions to `telemetry`).
    pub engine: Engine,
    /// Metrics and the decision log; lists are recorded here by the interfaces.
    pub telemetry: Arc<Telemetry>,
    /// Proves who asks.
    pub resolver: Resolver,
    /// The secret a trusted caller (the gateway) presents to have its verified
    /// identities honoured; none: no caller is trusted.
    pub trusted_caller_token: Option<Secret>,
    /// SPIFFE IDs of callers whose verified client certificate makes them trusted
    /// (`tls.trusted_callers`).
    pub trusted_callers: Arc<[String]>,
    /// The MCP server id of Envoy requests whose route names none.
    pub envoy_default_server: Option<String>,
    /// The MCP server ids of Envoy requests by destination SPIFFE ID and `:authority`.
    pub envoy_servers: ServerMap,
    /// The MCP servers as protected resources (`[servers.<id>]`): their canonical
    /// URIs (tokens' audience), metadata and challenges.
    pub resource_servers: ResourceServers,
    /// AuthZEN's limits.
    pub authzen: AuthzenSettings,
    /// The gateway API's limits.
    pub grpc: GrpcSettings,
    /// The admin bearer token, if configured.
    pub admin_token: Option<AdminToken>,
    /// Dry run (`decisions.dry_run`): every decision is made and logged as usual,
    /// every answer is allow ([`Services::enforced`]).
    pub dry_run: bool,
    /// How much of a deny's reason the client is told (`decisions.deny_detail`).
    pub deny_detail: DenyDetail,
    /// Whole lists' answers (`FilterList`, ext_proc).
    pub lists: super::list_filter::ListCache,
}

impl Services {
    /// Whether the caller is answered "allow" for a request decided `allowed`: always
    /// in a dry run, else exactly when it was allowed. The one rule every interface
    /// answers by.
    pub fn enforced(&self, allowed: bool) -> bool {
        allowed || self.dry_run
    }

    /// Whether callers are authenticated by their client certificates
    /// (`tls.trusted_callers` is set): then every assertion, Envoy's
    /// `source.principal` and an AuthZEN subject without a token included, needs a
    /// trusted caller. The caller secret alone keeps the earlier rule (Envoy's
    /// `source.principal` is taken as proven; keep the port reachable by Envoy only).
    pub fn authenticates_callers(&self) -> bool {
        !self.trusted_callers.is_empty()
    }

    /// The protected-resource settings of server `id`, if it has any.
    pub fn resource_server(&self, id: &str) -> Option<&ResourceServer> {
        self.resource_servers.get(id).map(AsRef::as_ref)
    }

    /// Services deciding with `engine`, which must report to `telemetry`, with the
    /// default settings, no trusted caller and no admin token.
    pub fn new(engine: Engine, telemetry: Arc<Telemetry>, resolver: Resolver) -> Self {
        Self {
            engine,
            telemetry,
            resolver,
            trusted_caller_token: None,
            trusted_callers: Arc::from([]),
            envoy_default_server: None,
            envoy_servers: ServerMap::default(),
            resource_servers: ResourceServers::default(),
            authzen: AuthzenSettings::default(),
            grpc: GrpcSettings::default(),
            admin_token: None,
            dry_run: false,
            deny_detail: DenyDetail::default(),
            lists: super::list_filter::ListCache::default(),
        }
    }
}

/// The services, once the policies are loaded: interfaces bound before that
/// answer "unavailable" until then.
#[derive(Debug, Clone, Default)]
pub struct Ready {
    services: Arc<OnceLock<Arc<Services>>>,
    health: Option<HealthReporter>,
    became_ready: Arc<tokio::sync::Notify>,
}

impl Ready {
    /// Not ready yet; nothing reports health.
    pub fn new() -> Self {
        Self::default()
    }

    /// Not ready yet; gRPC health reports `NOT_SERVING` for every
    /// [`HEALTH_SERVICES`] entry until [`Ready::set`].
    pub async fn with_health(health: HealthReporter) -> Self {
        for name in HEALTH_SERVICES {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        Self {
            health: Some(health),
            ..Self::default()
        }
    }

    /// Ready with `services` (for tests and tools).
    pub fn with(services: Services) -> Self {
        let ready = Self::new();
        let _ = ready.services.set(Arc::new(services));
        ready
    }

    /// Become ready (only the first call counts): every interface serves, gRPC
    /// health reports `SERVING`.
    pub async fn set(&self, services: Services) {
        if self.services.set(Arc::new(services)).is_err() {
            return;
        }
        if let Some(health) = &self.health {
            for name in HEALTH_SERVICES {
                health
                    .set_service_status(name, ServingStatus::Serving)
                    .await;
            }
        }
        self.became_ready.notify_waiters();
    }

    /// The services, if ready.
    pub fn get(&self) -> Option<&Arc<Services>> {
        self.services.get()
    }

    /// Whether the interfaces serve.
    pub fn is_ready(&self) -> bool {
        self.services.get().is_some()
    }

    /// Wait until ready.
    pub async fn wait(&self) -> Arc<Services> {
        loop {
            let notified = self.became_ready.notified();
            if let Some(s) = self.services.get() {
                return Arc::clone(s);
            }
            notified.await;
        }
    }
}

/// The admin bearer token, kept as its SHA-256 only.
#[derive(Clone)]
pub struct AdminToken {
    digest: Digest,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token from its text (surrounding whitespace ignored); `None` if empty.
    pub fn new(secret: &str) -> Option<Self> {
        let secret = secret.trim();
        (!secret.is_empty()).then(|| Self {
            digest: digest(secret.as_bytes()),
        })
    }

    /// Read the token from `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read admin token file `{}`: {e}", path.display()))?;
        Self::new(&text).ok_or_else(|| format!("admin token file `{}` is empty", path.display()))
    }

    /// Whether `presented` is the token, compared in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        digests_match(&digest(presented.as_bytes()), &self.digest)
    }
}

/// A SHA-256 digest.
type Digest = [u8; 32];

fn digest(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Compare two digests in constant time.
fn digests_match(a: &Digest, b: &Digest) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Compare a presented secret with the expected one in constant time. Hashing
/// first makes the comparison independent of the lengths too.
pub fn secret_matches(presented: &[u8], expected: &[u8]) -> bool {
    digests_match(&digest(presented), &digest(expected))
}
