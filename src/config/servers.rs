//! Which MCP server an Envoy request targets when its route names none: the
//! `[envoy.servers]` table (`:authority`/Host patterns) and the `[envoy.principals]`
//! table (the destination workload's SPIFFE ID), read and checked at start. The
//! order in which the sources are asked is in `api::ext_authz`.
//!
//! A host pattern is a DNS name whose labels are each a literal or `*` (exactly one
//! label); it is matched case-insensitively, without the port and a final dot. An
//! exact host wins over a wildcard; two wildcard patterns that can match the same
//! host are a configuration error, because a TOML table has no order to break the tie.

use std::collections::BTreeMap;

/// One label of a host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Label {
    /// `*`: any one label.
    Any,
    /// This label, lower case.
    Exact(String),
}

/// A host pattern with a `*` label, and the server it names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wildcard {
    pattern: String,
    labels: Vec<Label>,
    server: String,
}

/// The server of a request by its `:authority` or its destination's SPIFFE ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerMap {
    exact: BTreeMap<String, String>,
    wildcards: Vec<Wildcard>,
    principals: BTreeMap<String, String>,
}

/// Why a table entry is refused, and the table's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMapError {
    /// `envoy.servers` or `envoy.principals`.
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

const HOSTS: &str = "envoy.servers";
const PRINCIPALS: &str = "envoy.principals";

fn error(key: &'static str, reason: String) -> ServerMapError {
    ServerMapError { key, reason }
}

impl std::fmt::Display for ServerMapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// `host` without a port and a final dot, lower case; `None` when empty.
pub fn normalized_host(authority: &str) -> Option<String> {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        authority.split_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn parse_pattern(pattern: &str) -> Result<Vec<Label>, ServerMapError> {
    let bad = |why: &str| error(HOSTS, format!("host pattern `{pattern}` {why}"));
    if pattern.is_empty() {
        return Err(bad("is empty"));
    }
    if pattern.contains(':') {
        return Err(bad("has a port; ports are ignored, leave it out"));
    }
    let text = pattern.strip_suffix('.').unwrap_or(pattern);
    text.split('.')
        .map(|label| match label {
            "" => Err(bad("has an empty label")),
            "*" => Ok(Label::Any),
            l if l.contains('*') => {
                Err(bad("has `*` inside a label; `*` stands for a whole label"))
            }
            l if l
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Ok(Label::Exact(l.to_ascii_lowercase()))
            }
            _ => Err(bad("has a character that is not in a DNS name")),
        })
        .collect()
}

/// Whether some host matches both label lists.
fn overlap(a: &[Label], b: &[Label]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Label::Exact(x), Label::Exact(y)) => x == y,
            _ => true,
        })
}

fn server_id(table: &'static str, key: &str, server: &str) -> Result<String, ServerMapError> {
    let server = server.trim();
    if server.is_empty() {
        return Err(error(table, format!("`{key}` names an empty server id")));
    }
    Ok(server.to_owned())
}

impl ServerMap {
    /// The map of host patterns to servers and SPIFFE IDs to servers, or the first
    /// entry that is refused.
    pub fn new(
        hosts: &BTreeMap<String, String>,
        principals: &BTreeMap<String, String>,
    ) -> Result<Self, ServerMapError> {
        let mut map = ServerMap::default();
        for (pattern, server) in hosts {
            let labels = parse_pattern(pattern)?;
            let server = server_id(HOSTS, pattern, server)?;
            if labels.contains(&Label::Any) {
                if let Some(other) = map.wildcards.iter().find(|w| overlap(&w.labels, &labels)) {
                    return Err(error(
                        HOSTS,
                        format!(
                            "host patterns `{}` and `{pattern}` both match some host; make them disjoint or list the host exactly",
                            other.pattern
                        ),
                    ));
                }
                map.wildcards.push(Wildcard {
                    pattern: pattern.clone(),
                    labels,
                    server,
                });
            } else {
                let host = labels
                    .iter()
                    .map(|l| match l {
                        Label::Exact(s) => s.as_str(),
                        Label::Any => "*",
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                if map.exact.insert(host.clone(), server).is_some() {
                    return Err(error(
                        HOSTS,
                        format!("host `{host}` is listed twice (hosts are compared in lower case)"),
                    ));
                }
            }
        }
        for (principal, server) in principals {
            if !principal.starts_with("spiffe://") || principal.len() <= "spiffe://".len() {
                return Err(error(
                    PRINCIPALS,
                    format!(
                        "principal `{principal}` is not a SPIFFE ID such as `spiffe://corp.example/ns/docs/sa/docs-server`"
                    ),
                ));
            }
            let server = server_id(PRINCIPALS, principal, server)?;
            map.principals.insert(principal.clone(), server);
        }
        Ok(map)
    }

    /// Whether the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty() && self.principals.is_empty()
    }

    /// The server of the `:authority` (or Host) `authority`: an exact host first, then
    /// the one wildcard pattern that matches.
    pub fn by_authority(&self, authority: &str) -> Option<&str> {
        let host = normalized_host(authority)?;
        if let Some(s) = self.exact.get(&host) {
            return Some(s);
        }
        let labels: Vec<&str> = host.split('.').collect();
        self.wildcards
            .iter()
            .find(|w| {
                w.labels.len() == labels.len()
                    && w.labels.iter().zip(&labels).all(|(p, l)| match p {
                        Label::Any => !l.is_empty(),
                        Label::Exact(e) => e == l,
                    })
            })
            .map(|w| w.server.as_str())
    }

    /// The server of the destination workload whose SPIFFE ID is `principal`.
    pub fn by_principal(&self, principal: &str) -> Option<&str> {
        self.principals.get(principal).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(hosts: &[(&str, &str)], principals: &[(&str, &str)]) -> Result<ServerMap, String> {
        let t = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        ServerMap::new(&t(hosts), &t(principals)).map_err(|e| e.to_string())
    }

    #[test]
    fn exact_hosts_ignore_port_case_and_final_dot() {
        let m = map(&[("Docs.Example.com", "docs")], &[]).unwrap();
        for a in [
            "docs.example.com",
            "DOCS.example.COM",
            "docs.example.com:8443",
            "docs.example.com.",
            "docs.example.com.:80",
        ] {
            assert_eq!(m.by_authority(a), Some("docs"), "{a}");
        }
        for a in [
            "example.com",
            "x.docs.example.com",
            "docs.example.co",
            "",
            ":80",
        ] {
            assert_eq!(m.by_authority(a), None, "{a}");
        }
    }

    #[test]
    fn a_wildcard_is_exactly_one_label() {
        let m = map(&[("docs.*.svc.cluster.local", "docs")], &[]).unwrap();
        assert_eq!(m.by_authority("docs.prod.svc.cluster.local"), Some("docs"));
        assert_eq!(
            m.by_authority("DOCS.Staging.svc.cluster.local:8080"),
            Some("docs")
        );
        assert_eq!(m.by_authority("docs.svc.cluster.local"), None);
        assert_eq!(m.by_authority("docs.a.b.svc.cluster.local"), None);
        assert_eq!(m.by_authority("tickets.prod.svc.cluster.local"), None);
        let m = map(&[("*.example.com", "any")], &[]).unwrap();
        assert_eq!(m.by_authority("a.example.com"), Some("any"));
        assert_eq!(m.by_authority("example.com"), None);
        assert_eq!(m.by_authority("a.b.example.com"), None);
    }

    #[test]
    fn an_exact_host_wins_over_a_wildcard() {
        let m = map(
            &[
                ("docs.*.svc.cluster.local", "docs"),
                ("docs.legacy.svc.cluster.local", "docs-legacy"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            m.by_authority("docs.legacy.svc.cluster.local"),
            Some("docs-legacy")
        );
        assert_eq!(m.by_authority("docs.prod.svc.cluster.local"), Some("docs"));
    }

    #[test]
    fn ipv6_authorities_lose_their_port() {
        assert_eq!(normalized_host("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(normalized_host("[::1]").as_deref(), Some("::1"));
        assert_eq!(normalized_host(" Host:1 ").as_deref(), Some("host"));
    }

    #[test]
    fn overlapping_wildcards_are_refused() {
        let e = map(&[("docs.*.svc", "a"), ("*.prod.svc", "b")], &[]).unwrap_err();
        assert!(e.contains("both match some host"), "{e}");
        let e = map(&[("*.example.com", "a"), ("*.EXAMPLE.com", "b")], &[]).unwrap_err();
        assert!(e.contains("both match"), "{e}");
        // Different lengths or a differing literal label never overlap.
        map(&[("*.example.com", "a"), ("*.*.example.com", "b")], &[]).unwrap();
        map(&[("docs.*.svc", "a"), ("tickets.*.svc", "b")], &[]).unwrap();
        let e = map(&[("Docs.example.com", "a"), ("docs.example.com", "b")], &[]).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for (p, why) in [
            ("", "is empty"),
            ("docs.example.com:443", "has a port"),
            ("docs..example.com", "empty label"),
            ("docs-*.example.com", "inside a label"),
            ("**.example.com", "inside a label"),
            ("docs/x.example.com", "not in a DNS name"),
            (".example.com", "empty label"),
        ] {
            let e = map(&[(p, "docs")], &[]).unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
        let e = map(&[("docs.example.com", " ")], &[]).unwrap_err();
        assert!(e.contains("empty server id"), "{e}");
    }

    #[test]
    fn principals_are_spiffe_ids_matched_exactly() {
        let id = "spiffe://corp.example/ns/docs/sa/docs-server";
        let m = map(&[], &[(id, "docs")]).unwrap();
        assert_eq!(m.by_principal(id), Some("docs"));
        assert_eq!(
            m.by_principal("spiffe://corp.example/ns/docs/sa/other"),
            None
        );
        assert!(!m.is_empty());
        for bad in ["docs", "spiffe://", "https://corp.example/x"] {
            let e = map(&[], &[(bad, "docs")]).unwrap_err();
            assert!(e.contains("is not a SPIFFE ID"), "{bad}: {e}");
        }
    }
}
