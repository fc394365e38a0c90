//! What the decision interfaces need, built once the policies are loaded.

use std::sync::{Arc, OnceLock};

use crate::authz::Engine;
use crate::identity::Resolver;

/// Realm of `WWW-Authenticate` challenges.
pub const REALM: &str = "mcp-authz";

/// The engine and the identity resolver, and the settings of the interfaces.
#[derive(Debug, Clone)]
pub struct Services {
    /// The decision engine.
    pub engine: Engine,
    /// Proves who asks.
    pub resolver: Resolver,
    /// The secret a trusted caller (the gateway) presents to have its verified
    /// identities honoured; none: no caller is trusted.
    pub trusted_caller_token: Option<crate::config::Secret>,
    /// The MCP server id of Envoy requests whose route names none.
    pub envoy_default_server: Option<String>,
}

/// The services, once the policies are loaded: interfaces bound before that answer
/// "unavailable" until then.
#[derive(Debug, Clone, Default)]
pub struct Ready(Arc<OnceLock<Arc<Services>>>);

impl Ready {
    /// Not ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ready with `services`.
    pub fn with(services: Services) -> Self {
        let ready = Self::new();
        ready.set(services);
        ready
    }

    /// Become ready (only the first call counts).
    pub fn set(&self, services: Services) {
        let _ = self.0.set(Arc::new(services));
    }

    /// The services, if ready.
    pub fn get(&self) -> Option<&Arc<Services>> {
        self.0.get()
    }
}

/// Compare a presented secret with the expected one in constant time.
pub fn secret_matches(presented: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Hashing first makes the comparison independent of the lengths too.
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected);
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
