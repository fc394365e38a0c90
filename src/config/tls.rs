//! The `[tls]` section: TLS on the listeners, client certificates (mTLS) and the
//! callers whose certificates make them trusted. Checked here for consistency; the
//! files themselves are read (and re-read when they change) by the listeners.

use std::path::PathBuf;

use serde::Deserialize;

use crate::identity::SpiffeId;

/// The `[tls]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain of the service (leaf first); with `key_file` turns TLS on.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle that client certificates are verified against (mTLS on the gRPC
    /// and HTTP listeners).
    pub client_ca_file: Option<PathBuf>,
    /// Refuse a connection without a client certificate (default true when
    /// `client_ca_file` is set).
    pub require_client_cert: Option<bool>,
    /// The listeners that serve TLS (default: all three).
    pub listeners: Option<Vec<String>>,
    /// SPIFFE IDs of callers that may assert identities, proven by their client
    /// certificate's URI SAN.
    pub trusted_callers: Option<Vec<String>>,
}

/// Which listeners serve TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsListeners {
    /// The gRPC listener.
    pub grpc: bool,
    /// The HTTP listener.
    pub http: bool,
    /// The admin listener (never asks for client certificates: probes and scrapers
    /// have none).
    pub admin: bool,
}

/// The checked `[tls]` section: TLS is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The service's certificate chain.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// CA bundle for client certificates; `None`: no client certificates are asked for.
    pub client_ca_file: Option<PathBuf>,
    /// Whether a client without a certificate is refused (only with `client_ca_file`).
    pub require_client_cert: bool,
    /// The listeners that serve TLS.
    pub listeners: TlsListeners,
}

/// A `[tls]` setting that does not fit the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfigError {
    /// The setting at fault.
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

fn error(key: &'static str, reason: impl Into<String>) -> TlsConfigError {
    TlsConfigError {
        key,
        reason: reason.into(),
    }
}

/// The checked section: the TLS settings (`None`: plaintext) and the trusted
/// callers' SPIFFE IDs.
pub fn checked(file: &TlsFile) -> Result<(Option<TlsConfig>, Vec<String>), TlsConfigError> {
    let trusted_callers = trusted_callers(file)?;
    let (cert_file, key_file) = match (&file.cert_file, &file.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (Some(_), None) => {
            return Err(error(
                "tls.key_file",
                "missing: `tls.cert_file` is set, the key of the certificate is needed too",
            ));
        }
        (None, Some(_)) => {
            return Err(error(
                "tls.cert_file",
                "missing: `tls.key_file` is set, the certificate is needed too",
            ));
        }
        (None, None) => {
            let needs_tls = [
                ("tls.client_ca_file", file.client_ca_file.is_some()),
                (
                    "tls.require_client_cert",
                    file.require_client_cert.is_some(),
                ),
                ("tls.listeners", file.listeners.is_some()),
                ("tls.trusted_callers", !trusted_callers.is_empty()),
            ];
            if let Some((key, _)) = needs_tls.iter().find(|(_, set)| *set) {
                return Err(error(
                    key,
                    "needs TLS: set `tls.cert_file` and `tls.key_file`",
                ));
            }
            return Ok((None, trusted_callers));
        }
    };
    let listeners = listeners(file.listeners.as_deref())?;
    let require_client_cert = match (file.require_client_cert, &file.client_ca_file) {
        (Some(true), None) => {
            return Err(error(
                "tls.require_client_cert",
                "needs `tls.client_ca_file` to verify client certificates against",
            ));
        }
        (r, Some(_)) => r.unwrap_or(true),
        (_, None) => false,
    };
    if !trusted_callers.is_empty() {
        if file.client_ca_file.is_none() {
            return Err(error(
                "tls.trusted_callers",
                "needs `tls.client_ca_file`: a caller is known by its verified client certificate",
            ));
        }
        if !listeners.grpc && !listeners.http {
            return Err(error(
                "tls.trusted_callers",
                "needs TLS on the gRPC or HTTP listener (`tls.listeners`)",
            ));
        }
    }
    Ok((
        Some(TlsConfig {
            cert_file,
            key_file,
            client_ca_file: file.client_ca_file.clone(),
            require_client_cert,
            listeners,
        }),
        trusted_callers,
    ))
}

fn listeners(names: Option<&[String]>) -> Result<TlsListeners, TlsConfigError> {
    let Some(names) = names else {
        return Ok(TlsListeners {
            grpc: true,
            http: true,
            admin: true,
        });
    };
    if names.is_empty() {
        return Err(error(
            "tls.listeners",
            "empty: name at least one of `grpc`, `http`, `admin` (or leave TLS off)",
        ));
    }
    let mut out = TlsListeners {
        grpc: false,
        http: false,
        admin: false,
    };
    for name in names {
        let slot = match name.trim() {
            "grpc" => &mut out.grpc,
            "http" => &mut out.http,
            "admin" => &mut out.admin,
            other => {
                return Err(error(
                    "tls.listeners",
                    format!("unknown listener `{other}`: expected `grpc`, `http` or `admin`"),
                ));
            }
        };
        if *slot {
            return Err(error(
                "tls.listeners",
                format!("`{}` is named twice", name.trim()),
            ));
        }
        *slot = true;
    }
    Ok(out)
}

/// Whether the SPIFFE ID `id` is the trusted caller `pattern`: the same ID, or for a
/// pattern ending in `/*`, an ID under that path (`spiffe://td/ns/mcp/sa/*`: every
/// service account of namespace `mcp`).
pub fn trusted_caller_matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(prefix) => id
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| !rest.is_empty()),
        None => pattern == id,
    }
}

fn trusted_callers(file: &TlsFile) -> Result<Vec<String>, TlsConfigError> {
    let mut out: Vec<String> = Vec::new();
    for id in file.trusted_callers.iter().flatten() {
        let id = id.trim();
        SpiffeId::parse(id.strip_suffix("/*").unwrap_or(id)).map_err(|e| {
            error(
                "tls.trusted_callers",
                format!("`{id}`: {e} (a SPIFFE ID, or one followed by `/*` for every ID under it)"),
            )
        })?;
        if !out.iter().any(|o| o == id) {
            out.push(id.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml_text: &str) -> TlsFile {
        toml::from_str(toml_text).expect("tls section")
    }

    #[test]
    fn without_certificate_tls_is_off_and_nothing_else_may_be_set() {
        assert_eq!(checked(&file("")), Ok((None, vec![])));
        for (text, key) in [
            ("client_ca_file = \"ca\"", "tls.client_ca_file"),
            ("require_client_cert = false", "tls.require_client_cert"),
            ("listeners = [\"grpc\"]", "tls.listeners"),
            (
                "trusted_callers = [\"spiffe://td/ns/a/sa/gw\"]",
                "tls.trusted_callers",
            ),
            ("cert_file = \"c\"", "tls.key_file"),
            ("key_file = \"k\"", "tls.cert_file"),
        ] {
            let e = checked(&file(text)).expect_err(text);
            assert_eq!(e.key, key, "{text}");
        }
    }

    #[test]
    fn defaults_with_a_certificate() {
        let (tls, callers) = checked(&file("cert_file = \"c\"\nkey_file = \"k\"")).expect("ok");
        let tls = tls.expect("tls on");
        assert_eq!(
            tls.listeners,
            TlsListeners {
                grpc: true,
                http: true,
                admin: true
            }
        );
        assert!(!tls.require_client_cert);
        assert!(callers.is_empty());
        let (tls, _) = checked(&file(
            "cert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"",
        ))
        .expect("ok");
        assert!(
            tls.expect("on").require_client_cert,
            "mTLS is required by default"
        );
        let (tls, _) = checked(&file(
            "cert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\nrequire_client_cert = false",
        ))
        .expect("ok");
        assert!(!tls.expect("on").require_client_cert);
    }

    #[test]
    fn inconsistent_settings_are_errors() {
        let base = "cert_file = \"c\"\nkey_file = \"k\"\n";
        for (extra, key, says) in [
            (
                "require_client_cert = true",
                "tls.require_client_cert",
                "client_ca_file",
            ),
            ("listeners = []", "tls.listeners", "empty"),
            ("listeners = [\"grpc\", \"web\"]", "tls.listeners", "`web`"),
            ("listeners = [\"grpc\", \"grpc\"]", "tls.listeners", "twice"),
            (
                "trusted_callers = [\"spiffe://td/ns/a/sa/gw\"]",
                "tls.trusted_callers",
                "client_ca_file",
            ),
            (
                "client_ca_file = \"ca\"\ntrusted_callers = [\"https://gw\"]",
                "tls.trusted_callers",
                "`https://gw`",
            ),
            (
                "client_ca_file = \"ca\"\ntrusted_callers = [\"spiffe://TD/x\"]",
                "tls.trusted_callers",
                "lowercase",
            ),
            (
                "client_ca_file = \"ca\"\nlisteners = [\"admin\"]\ntrusted_callers = [\"spiffe://td/gw\"]",
                "tls.trusted_callers",
                "gRPC or HTTP",
            ),
        ] {
            let text = format!("{base}{extra}");
            let e = checked(&file(&text)).expect_err(&text);
            assert_eq!(e.key, key, "{text}");
            assert!(e.reason.contains(says), "{text}: {}", e.reason);
        }
    }

    #[test]
    fn a_trusted_caller_pattern_covers_the_ids_under_it() {
        let p = "spiffe://td/ns/mcp/sa/*";
        assert!(trusted_caller_matches(p, "spiffe://td/ns/mcp/sa/docs"));
        assert!(trusted_caller_matches(p, "spiffe://td/ns/mcp/sa/docs/x"));
        for id in [
            "spiffe://td/ns/mcp/sa",
            "spiffe://td/ns/mcp/sa/",
            "spiffe://td/ns/mcp/sax/docs",
            "spiffe://other/ns/mcp/sa/docs",
        ] {
            assert!(!trusted_caller_matches(p, id), "{id}");
        }
        assert!(trusted_caller_matches("spiffe://td/gw", "spiffe://td/gw"));
        assert!(!trusted_caller_matches(
            "spiffe://td/gw",
            "spiffe://td/gw/x"
        ));
        let bad = checked(&file(
            "cert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\ntrusted_callers = [\"spiffe://td/*\"]",
        ))
        .expect_err("a whole trust domain");
        assert!(bad.reason.contains("no path"), "{}", bad.reason);
    }

    #[test]
    fn trusted_callers_are_kept_once() {
        let (_, callers) = checked(&file(
            "cert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\ntrusted_callers = [\"spiffe://td/gw\", \" spiffe://td/gw\", \"spiffe://td/envoy\"]",
        ))
        .expect("ok");
        assert_eq!(callers, vec!["spiffe://td/gw", "spiffe://td/envoy"]);
    }
}
