//! TLS on the listeners: the service's certificate and key, the CA bundle client
//! certificates are verified against, re-read when the files change on disk, and
//! the caller's SPIFFE ID read from its verified client certificate.
//!
//! - **Files.** `tls.cert_file` (PEM chain, leaf first), `tls.key_file` (PKCS#8,
//!   PKCS#1 or SEC1) and `tls.client_ca_file` (PEM bundle). An unreadable file, a
//!   file without a certificate or key, a key that does not belong to the
//!   certificate: an error at start (the service does not start), a warning on a
//!   later change (the certificate in use stays).
//! - **Rotation.** [`spawn_reloader`] reads the files every [`CHECK_EVERY`] and
//!   builds new server configurations when their content changed (cert-manager and
//!   SPIRE replace files, Kubernetes swaps a `..data` symlink: content is what
//!   counts, not events). New connections use the new certificate; open connections
//!   keep theirs and are never dropped for it.
//! - **Per listener.** gRPC offers ALPN `h2` only, HTTP and admin `h2` and
//!   `http/1.1`. The gRPC and HTTP listeners ask for client certificates when a CA
//!   bundle is configured (required unless `tls.require_client_cert = false`); the
//!   admin listener never asks (probes and scrapers have none; its endpoints have
//!   their own token).
//! - **Caller identity.** [`PeerIdentity`]: the SPIFFE ID of a client certificate
//!   that the CA bundle verified, if the certificate has exactly one URI SAN and it
//!   is a valid SPIFFE ID (X.509-SVID); put into every request's extensions.
//!   Whether that caller is trusted is decided with the rest of the trust rule
//!   ([`crate::api::mcp_check::CallerTrust`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsConfig, TlsListeners};
use crate::identity::SpiffeId;

/// How often the certificate files are read to see whether they changed.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Which listener a TLS configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRole {
    /// The gRPC listener: ALPN `h2`, client certificates when configured.
    Grpc,
    /// The HTTP listener: ALPN `h2` and `http/1.1`, client certificates when configured.
    Http,
    /// The admin listener: ALPN `h2` and `http/1.1`, never client certificates.
    Admin,
}

impl TlsRole {
    /// Whether `listeners` turns TLS on for this role.
    pub fn enabled_in(self, listeners: TlsListeners) -> bool {
        match self {
            TlsRole::Grpc => listeners.grpc,
            TlsRole::Http => listeners.http,
            TlsRole::Admin => listeners.admin,
        }
    }
}

/// Why the TLS files cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read `{path}` ({key}): {reason}")]
    Read {
        /// The file.
        path: String,
        /// The setting naming it.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// A file holds nothing usable.
    #[error("`{path}` ({key}) {reason}")]
    Content {
        /// The file.
        path: String,
        /// The setting naming it.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate, key or CA bundle.
    #[error("the TLS certificate, key or CA bundle cannot be used: {0}")]
    Rustls(String),
}

/// The caller of a connection as its TLS handshake proved it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The SPIFFE ID of the verified client certificate, if it carries exactly one
    /// URI SAN that is a valid SPIFFE ID.
    pub spiffe_id: Option<Arc<str>>,
}

/// The server configurations of every listener, swapped whole on a reload.
#[derive(Debug)]
struct Configs {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    admin: Arc<ServerConfig>,
}

/// The listeners' TLS: the configuration in use and where it comes from.
#[derive(Debug)]
pub struct ServerTls {
    settings: TlsConfig,
    current: ArcSwap<Configs>,
    /// Digest of the files' content the current configurations were built from, or
    /// that last failed to build (so a broken file is reported once, not every check).
    seen: Mutex<[u8; 32]>,
}

/// What one check of the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files are as they were.
    Unchanged,
    /// New configurations are in use.
    Reloaded,
    /// The files changed but cannot be used; the previous ones stay.
    Failed(TlsError),
}

impl ServerTls {
    /// Read the files and build every listener's configuration.
    pub fn load(settings: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let files = Files::read(settings)?;
        let configs = files.build(settings)?;
        log_certificate(&files, "TLS certificate loaded");
        Ok(Arc::new(Self {
            settings: settings.clone(),
            current: ArcSwap::from_pointee(configs),
            seen: Mutex::new(files.digest()),
        }))
    }

    /// The acceptor for new connections of `role`.
    pub fn acceptor(&self, role: TlsRole) -> TlsAcceptor {
        let configs = self.current.load();
        TlsAcceptor::from(Arc::clone(match role {
            TlsRole::Grpc => &configs.grpc,
            TlsRole::Http => &configs.http,
            TlsRole::Admin => &configs.admin,
        }))
    }

    /// Read the files; when their content changed, build and use new configurations.
    pub fn reload_if_changed(&self) -> Reload {
        let files = match Files::read(&self.settings) {
            Ok(f) => f,
            Err(e) => return self.failed_once(None, e),
        };
        let digest = files.digest();
        if *self.seen.lock().unwrap_or_else(PoisonError::into_inner) == digest {
            return Reload::Unchanged;
        }
        match files.build(&self.settings) {
            Ok(configs) => {
                self.current.store(Arc::new(configs));
                *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = digest;
                log_certificate(&files, "TLS certificate reloaded");
                Reload::Reloaded
            }
            Err(e) => self.failed_once(Some(digest), e),
        }
    }

    /// A failed reload, reported as failed once per content (`None`: unreadable).
    fn failed_once(&self, digest: Option<[u8; 32]>, e: TlsError) -> Reload {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let key = digest.unwrap_or_else(|| Sha256::digest(e.to_string().as_bytes()).into());
        if *seen == key {
            return Reload::Unchanged;
        }
        *seen = key;
        Reload::Failed(e)
    }
}

/// Check the files every [`CHECK_EVERY`] and reload them when they change, until
/// the task is aborted.
pub fn spawn_reloader(tls: Arc<ServerTls>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let tls = Arc::clone(&tls);
            match tokio::task::spawn_blocking(move || tls.reload_if_changed()).await {
                Ok(Reload::Failed(e)) => {
                    tracing::error!(
                        "TLS files changed but cannot be used; the previous certificate stays in use: {e}"
                    );
                }
                Ok(Reload::Reloaded | Reload::Unchanged) => {}
                Err(e) => tracing::error!("TLS reload failed: {e}"),
            }
        }
    })
}

/// The content of the TLS files.
struct Files {
    cert: (PathBuf, Vec<u8>),
    key: (PathBuf, Vec<u8>),
    client_ca: Option<(PathBuf, Vec<u8>)>,
}

fn read(path: &Path, key: &'static str) -> Result<(PathBuf, Vec<u8>), TlsError> {
    std::fs::read(path)
        .map(|bytes| (path.to_path_buf(), bytes))
        .map_err(|e| TlsError::Read {
            path: path.display().to_string(),
            key,
            reason: e.to_string(),
        })
}

impl Files {
    fn read(settings: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&settings.cert_file, "tls.cert_file")?,
            key: read(&settings.key_file, "tls.key_file")?,
            client_ca: settings
                .client_ca_file
                .as_deref()
                .map(|p| read(p, "tls.client_ca_file"))
                .transpose()?,
        })
    }

    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            let bytes = part.map_or(&[][..], |(_, b)| b.as_slice());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        h.finalize().into()
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let (path, bytes) = &self.cert;
        let content = |reason: String| TlsError::Content {
            path: path.display().to_string(),
            key: "tls.cert_file",
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| content(format!("is not a PEM certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(content("holds no PEM certificate".into()));
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let (path, bytes) = &self.key;
        PrivateKeyDer::from_pem_slice(bytes).map_err(|e| TlsError::Content {
            path: path.display().to_string(),
            key: "tls.key_file",
            reason: format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        })
    }

    fn client_roots(&self) -> Result<Option<RootCertStore>, TlsError> {
        let Some((path, bytes)) = &self.client_ca else {
            return Ok(None);
        };
        let content = |reason: String| TlsError::Content {
            path: path.display().to_string(),
            key: "tls.client_ca_file",
            reason,
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(bytes) {
            let cert = cert.map_err(|e| content(format!("is not a PEM CA bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| content(format!("holds a CA certificate that cannot be used: {e}")))?;
        }
        if roots.is_empty() {
            return Err(content("holds no PEM CA certificate".into()));
        }
        Ok(Some(roots))
    }

    fn build(&self, settings: &TlsConfig) -> Result<Configs, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = self.certificates()?;
        let key = self.private_key()?;
        let roots = self.client_roots()?.map(Arc::new);
        let one = |role: TlsRole| -> Result<Arc<ServerConfig>, TlsError> {
            let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            let builder = match (&roots, role) {
                (Some(roots), TlsRole::Grpc | TlsRole::Http) => {
                    let verifier = client_verifier(roots, &provider, settings)?;
                    builder.with_client_cert_verifier(verifier)
                }
                _ => builder.with_no_client_auth(),
            };
            let mut config = builder
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            config.alpn_protocols = match role {
                TlsRole::Grpc => vec![b"h2".to_vec()],
                TlsRole::Http | TlsRole::Admin => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            };
            Ok(Arc::new(config))
        };
        Ok(Configs {
            grpc: one(TlsRole::Grpc)?,
            http: one(TlsRole::Http)?,
            admin: one(TlsRole::Admin)?,
        })
    }
}

fn client_verifier(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    settings: &TlsConfig,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider));
    let builder = if settings.require_client_cert {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| TlsError::Rustls(e.to_string()))
}

/// Log the leaf certificate's subject and validity.
fn log_certificate(files: &Files, what: &str) {
    let Ok(certs) = files.certificates() else {
        return;
    };
    let Some(leaf) = certs.first() else {
        return;
    };
    match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => {
            let validity = cert.validity();
            tracing::info!(
                subject = %cert.subject(),
                not_before = %validity.not_before,
                not_after = %validity.not_after,
                client_ca = files.client_ca.is_some(),
                "{what}"
            );
        }
        Err(e) => tracing::info!("{what} (its fields cannot be read: {e})"),
    }
}

/// The identity a verified client certificate proves: its one URI SAN when that
/// is a valid SPIFFE ID (an X.509-SVID has exactly one).
pub fn peer_identity(peer_certificates: Option<&[CertificateDer<'_>]>) -> PeerIdentity {
    let Some(leaf) = peer_certificates.and_then(<[_]>::first) else {
        return PeerIdentity::default();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return PeerIdentity::default();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return PeerIdentity::default();
    };
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let spiffe_id = match (uris.next(), uris.next()) {
        (Some(uri), None) if SpiffeId::parse(uri).is_ok() => Some(Arc::from(uri)),
        _ => None,
    };
    PeerIdentity { spiffe_id }
}
