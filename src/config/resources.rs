//! The MCP servers as OAuth protected resources: the `[servers.<id>]` tables, read
//! and checked at start.
//!
//! A server with settings has a canonical URI (`resource`, RFC 8707 and the MCP
//! authorization spec: an absolute `https` URI without a fragment; `http` only on a
//! loopback host, for tests), the issuers that may mint its tokens
//! (`authorization_servers`, each one of the `[[issuers]]`), and what its Protected
//! Resource Metadata (RFC 9728) and its `WWW-Authenticate` challenges say. Its
//! metadata is served at the path-suffixed well-known URI of RFC 9728 §3.1:
//! `https://h/mcp` → `https://h/.well-known/oauth-protected-resource/mcp`.
//!
//! A resource with a query component is refused: the well-known URI would have to
//! carry it too (RFC 9728 §3.1), which no client we know of builds.

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Url;
use serde::Deserialize;

/// The well-known path prefix of RFC 9728.
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// One `[servers.<id>]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// The server's canonical URI, e.g. `https://docs.mcp.example.com/mcp`.
    pub resource: Option<String>,
    /// Issuer URLs that may mint its tokens (each one of `[[issuers]]`).
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// `scopes_supported` of its metadata.
    pub scopes_supported: Option<Vec<String>>,
    /// `resource_name` of its metadata.
    pub resource_name: Option<String>,
    /// The scopes a 401 asks for (RFC 6750 §3 `scope`), space-separated.
    pub scope: Option<String>,
}

/// One MCP server's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceServer {
    /// The server id (`Mcp::Server::"<id>"`).
    pub id: String,
    /// The canonical URI, as written (tokens' `aud` must hold it exactly).
    pub resource: String,
    /// The URL of its Protected Resource Metadata.
    pub metadata_url: String,
    /// The host (and port, if the URI names one) of `resource`, lower case.
    host: String,
    /// The path of its metadata document (`/.well-known/oauth-protected-resource/mcp`).
    metadata_path: String,
    /// Issuers that may mint its tokens.
    pub authorization_servers: Vec<String>,
    /// Scopes of its metadata.
    pub scopes_supported: Option<Vec<String>>,
    /// Its human-readable name.
    pub resource_name: Option<String>,
    /// The scopes its 401s ask for.
    pub scope: Option<String>,
}

impl ResourceServer {
    /// The Protected Resource Metadata document (RFC 9728 §2).
    pub fn metadata(&self) -> serde_json::Value {
        let mut doc = serde_json::Map::new();
        doc.insert("resource".into(), self.resource.clone().into());
        doc.insert(
            "authorization_servers".into(),
            self.authorization_servers.clone().into(),
        );
        if let Some(scopes) = &self.scopes_supported {
            doc.insert("scopes_supported".into(), scopes.clone().into());
        }
        doc.insert("bearer_methods_supported".into(), vec!["header"].into());
        if let Some(name) = &self.resource_name {
            doc.insert("resource_name".into(), name.clone().into());
        }
        serde_json::Value::Object(doc)
    }
}

/// Every `[servers.<id>]`, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceServers {
    by_id: BTreeMap<String, Arc<ResourceServer>>,
}

/// Why a `[servers.<id>]` table is refused: the setting and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceError {
    /// `servers.<id>.<setting>`.
    pub key: String,
    /// Why.
    pub reason: String,
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().map_or_else(
        |_| host.eq_ignore_ascii_case("localhost"),
        |ip| ip.is_loopback(),
    )
}

/// The checked canonical URI `raw`, or why not.
pub fn check_resource(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("`{raw}` is not an absolute URI: {e}"))?;
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => is_loopback(&url),
        _ => false,
    };
    if !scheme_ok {
        return Err(format!(
            "`{raw}` must be an `https` URI (`http` only on a loopback host)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` has no host"));
    }
    if url.fragment().is_some() || raw.contains('#') {
        return Err(format!("`{raw}` must not have a fragment (RFC 8707)"));
    }
    if url.query().is_some() {
        return Err(format!("`{raw}` must not have a query"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{raw}` must not have user information"));
    }
    Ok(url)
}

/// The path of the metadata document of the resource `url`: the well-known prefix,
/// then the resource's path (none for `/`).
fn metadata_path(url: &Url) -> String {
    let path = url.path();
    if path == "/" || path.is_empty() {
        METADATA_PREFIX.to_owned()
    } else {
        format!("{METADATA_PREFIX}{path}")
    }
}

fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

fn scope_tokens_ok(s: &str) -> bool {
    // RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

impl ResourceServers {
    /// The checked tables; `issuers` are the configured issuer URLs.
    pub fn new(
        tables: &BTreeMap<String, ServerFile>,
        issuers: &[String],
    ) -> Result<Self, ResourceError> {
        let mut by_id = BTreeMap::new();
        for (id, t) in tables {
            let err = |setting: &str, reason: String| ResourceError {
                key: format!("servers.{id}.{setting}"),
                reason,
            };
            if id.trim().is_empty() || id.trim() != id {
                return Err(err(
                    "resource",
                    format!("server id `{id}` is empty or padded"),
                ));
            }
            let raw = t
                .resource
                .as_deref()
                .ok_or_else(|| err("resource", "is required".into()))?;
            let url = check_resource(raw).map_err(|r| err("resource", r))?;
            if t.authorization_servers.is_empty() {
                return Err(err(
                    "authorization_servers",
                    "must name at least one issuer of `[[issuers]]`".into(),
                ));
            }
            for a in &t.authorization_servers {
                if !issuers.contains(a) {
                    return Err(err(
                        "authorization_servers",
                        format!("`{a}` is not the `issuer` of any `[[issuers]]`"),
                    ));
                }
            }
            if let Some(scopes) = &t.scopes_supported
                && let Some(bad) = scopes.iter().find(|s| !scope_tokens_ok(s))
            {
                return Err(err(
                    "scopes_supported",
                    format!("`{bad}` is not a scope (no spaces, quotes or backslashes)"),
                ));
            }
            if let Some(scope) = &t.scope
                && (scope.split(' ').any(|s| !scope_tokens_ok(s)))
            {
                return Err(err(
                    "scope",
                    format!("`{scope}` is not a space-separated list of scopes"),
                ));
            }
            if let Some(name) = &t.resource_name
                && name.trim().is_empty()
            {
                return Err(err("resource_name", "is empty".into()));
            }
            let metadata_path = metadata_path(&url);
            let metadata_url = format!(
                "{}://{}{}",
                url.scheme(),
                url.host_str().map(|_| authority(&url)).unwrap_or_default(),
                metadata_path
            );
            by_id.insert(
                id.clone(),
                Arc::new(ResourceServer {
                    id: id.clone(),
                    resource: raw.to_owned(),
                    metadata_url,
                    host: authority(&url),
                    metadata_path,
                    authorization_servers: t.authorization_servers.clone(),
                    scopes_supported: t.scopes_supported.clone(),
                    resource_name: t.resource_name.clone(),
                    scope: t.scope.clone(),
                }),
            );
        }
        let servers = Self { by_id };
        // Two servers at one metadata URL could not both be discovered.
        let mut seen: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        for s in servers.by_id.values() {
            if let Some(other) = seen.insert((&s.host, &s.metadata_path), &s.id) {
                return Err(ResourceError {
                    key: format!("servers.{}.resource", s.id),
                    reason: format!(
                        "`{}` has the same metadata URL as server `{other}`",
                        s.resource
                    ),
                });
            }
        }
        Ok(servers)
    }

    /// Whether no server has settings.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The settings of server `id`, if it has any.
    pub fn get(&self, id: &str) -> Option<&Arc<ResourceServer>> {
        self.by_id.get(id)
    }

    /// The canonical URIs of the servers that name `issuer` as an authorization server.
    pub fn resources_of(&self, issuer: &str) -> Vec<String> {
        self.by_id
            .values()
            .filter(|s| s.authorization_servers.iter().any(|a| a == issuer))
            .map(|s| s.resource.clone())
            .collect()
    }

    /// The server whose metadata is at `path` on `host` (the request's Host; ignored
    /// when only one server has that path).
    pub fn by_metadata_path(&self, host: Option<&str>, path: &str) -> Option<&Arc<ResourceServer>> {
        let mut at_path = self.by_id.values().filter(|s| s.metadata_path == path);
        let first = at_path.next()?;
        if at_path.next().is_none() {
            return Some(first);
        }
        let host = host?.trim().to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
        self.by_id.values().find(|s| {
            s.metadata_path == path
                && (s.host == host
                    || s.host.split_once(':').map(|(h, _)| h) == Some(host.as_str())
                    || host.split_once(':').map(|(h, _)| h) == Some(s.host.as_str()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(resource: &str) -> ServerFile {
        ServerFile {
            resource: Some(resource.into()),
            authorization_servers: vec!["https://idp.example".into()],
            ..ServerFile::default()
        }
    }

    fn servers(t: &[(&str, ServerFile)]) -> Result<ResourceServers, String> {
        let tables = t
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        ResourceServers::new(&tables, &["https://idp.example".to_owned()])
            .map_err(|e| format!("{}: {}", e.key, e.reason))
    }

    #[test]
    fn metadata_urls_are_path_suffixed() {
        let s = servers(&[
            ("docs", table("https://docs.mcp.example.com/mcp")),
            ("root", table("https://Root.example:8443/")),
            ("local", table("http://127.0.0.1:9000/mcp")),
        ])
        .unwrap();
        let docs = s.get("docs").unwrap();
        assert_eq!(
            docs.metadata_url,
            "https://docs.mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            s.get("root").unwrap().metadata_url,
            "https://root.example:8443/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            s.get("local").unwrap().metadata_url,
            "http://127.0.0.1:9000/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(s.resources_of("https://idp.example").len(), 3);
        assert!(s.resources_of("https://other").is_empty());
    }

    #[test]
    fn the_host_chooses_only_between_servers_at_one_path() {
        let s = servers(&[
            ("docs", table("https://docs.example/mcp")),
            ("projects", table("https://projects.example/mcp")),
            ("wiki", table("https://wiki.example/wiki/mcp")),
        ])
        .unwrap();
        let at = |h: Option<&str>, p: &str| s.by_metadata_path(h, p).map(|s| s.id.as_str());
        let mcp = "/.well-known/oauth-protected-resource/mcp";
        assert_eq!(at(Some("docs.example"), mcp), Some("docs"));
        assert_eq!(at(Some("PROJECTS.example:443"), mcp), Some("projects"));
        assert_eq!(at(Some("other.example"), mcp), None);
        assert_eq!(at(None, mcp), None);
        let wiki = "/.well-known/oauth-protected-resource/wiki/mcp";
        assert_eq!(at(Some("anything"), wiki), Some("wiki"));
        assert_eq!(at(None, wiki), Some("wiki"));
        assert_eq!(
            at(
                Some("docs.example"),
                "/.well-known/oauth-protected-resource"
            ),
            None
        );
    }

    #[test]
    fn the_document_is_rfc_9728() {
        let mut t = table("https://docs.example/mcp");
        t.scopes_supported = Some(vec!["docs.read".into(), "docs.write".into()]);
        t.resource_name = Some("Documents".into());
        let s = servers(&[("docs", t)]).unwrap();
        assert_eq!(
            s.get("docs").unwrap().metadata(),
            serde_json::json!({
                "resource": "https://docs.example/mcp",
                "authorization_servers": ["https://idp.example"],
                "scopes_supported": ["docs.read", "docs.write"],
                "bearer_methods_supported": ["header"],
                "resource_name": "Documents",
            })
        );
        let s = servers(&[("docs", table("https://docs.example/mcp"))]).unwrap();
        let doc = s.get("docs").unwrap().metadata();
        assert!(doc.get("scopes_supported").is_none() && doc.get("resource_name").is_none());
    }

    #[test]
    fn bad_settings_are_refused_naming_the_setting() {
        for (t, key, why) in [
            (
                table("docs.example/mcp"),
                "servers.docs.resource",
                "not an absolute URI",
            ),
            (
                table("http://docs.example/mcp"),
                "servers.docs.resource",
                "must be an `https` URI",
            ),
            (
                table("ftp://docs.example/mcp"),
                "servers.docs.resource",
                "must be an `https` URI",
            ),
            (
                table("https://docs.example/mcp#x"),
                "servers.docs.resource",
                "fragment",
            ),
            (
                table("https://docs.example/mcp?a=1"),
                "servers.docs.resource",
                "query",
            ),
            (
                table("https://u:p@docs.example/mcp"),
                "servers.docs.resource",
                "user information",
            ),
            (
                ServerFile {
                    resource: None,
                    ..table("x")
                },
                "servers.docs.resource",
                "is required",
            ),
            (
                ServerFile {
                    authorization_servers: vec![],
                    ..table("https://docs.example/mcp")
                },
                "servers.docs.authorization_servers",
                "at least one",
            ),
            (
                ServerFile {
                    authorization_servers: vec!["https://evil".into()],
                    ..table("https://docs.example/mcp")
                },
                "servers.docs.authorization_servers",
                "`https://evil` is not the `issuer`",
            ),
            (
                ServerFile {
                    scope: Some("docs.read  docs.write".into()),
                    ..table("https://docs.example/mcp")
                },
                "servers.docs.scope",
                "space-separated",
            ),
            (
                ServerFile {
                    scopes_supported: Some(vec!["a\"b".into()]),
                    ..table("https://docs.example/mcp")
                },
                "servers.docs.scopes_supported",
                "not a scope",
            ),
        ] {
            let e = servers(&[("docs", t)]).unwrap_err();
            assert!(e.starts_with(key) && e.contains(why), "{e}");
        }
        let e = servers(&[
            ("a", table("https://docs.example/mcp")),
            ("b", table("https://DOCS.example/mcp")),
        ])
        .unwrap_err();
        assert!(e.contains("same metadata URL as server `a`"), "{e}");
    }
}
