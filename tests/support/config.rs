//! Configuration files of `mcp-authz` for the tests: sections put together and written as
//! `mcp-authz.toml`.

use std::path::{Path, PathBuf};

use super::gateway::CALLER_SECRET;
use super::tokens::{AUDIENCE, ISSUER, TestKey, jwks};

/// Write `sections` (TOML; top-level keys first) as `dir/mcp-authz.toml`.
pub fn write(dir: &Path, sections: &[&str]) -> PathBuf {
    let path = dir.join("mcp-authz.toml");
    std::fs::write(&path, sections.join("\n")).expect("write the configuration");
    path
}

/// An `[[issuers]]` section for [`ISSUER`] and [`AUDIENCE`] with keys in `jwks_file` (a
/// path relative to the configuration file's directory, or absolute), tokens signed with
/// `algorithm`, groups from the `groups` claim.
pub fn issuer(jwks_file: &str, algorithm: &str) -> String {
    format!(
        "[[issuers]]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\njwks_file = \"{jwks_file}\"\nalgorithms = [\"{algorithm}\"]\ngroups_claim = \"groups\"\n"
    )
}

/// The demo token issuer of `examples/identity` (EdDSA; the demo tokens of
/// [`super::tokens::demo_token`]).
pub fn demo_issuer() -> String {
    let jwks = super::repo().join("examples/identity/jwks.json");
    issuer(&jwks.display().to_string(), "EdDSA")
}

/// The test issuer with `key` (RS256), its JWKS written to `dir/jwks.json`.
pub fn test_issuer(dir: &Path, key: &TestKey) -> String {
    std::fs::write(dir.join("jwks.json"), jwks(&[key]).to_string()).expect("write");
    issuer("jwks.json", "RS256")
}

/// A `[grpc]` section that trusts the caller with [`CALLER_SECRET`], written to
/// `dir/caller.secret`.
pub fn trusted_caller(dir: &Path) -> String {
    std::fs::write(dir.join("caller.secret"), CALLER_SECRET).expect("write");
    "[grpc]\ntrusted_caller_token_file = \"caller.secret\"\n".to_owned()
}
