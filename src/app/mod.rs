//! The composition root: the one place that builds the service from its
//! configuration and runs it.
//!
//! [`App::bind`] does everything that can fail on configuration before the
//! policies are read: it opens the decision log, builds the identity resolver,
//! reads the admin token, fits the connection caps in the descriptor limit and
//! binds every listener (so their addresses are known, port 0 included).
//! [`Bound::serve`] then serves: every listener answers from the start, "not
//! ready" until the policy directory is loaded ([`Ready`]); an invalid policy
//! directory ends it with its diagnostics; a change on disk is reloaded; the
//! `shutdown` future stops it gracefully and the decision log is flushed.
//!
//! The command line (`mcp-authz serve`) parses its arguments and calls these two;
//! the integration tests start the service in-process the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;

use crate::api::ext_authz::AuthorizationService;
use crate::api::ext_proc::ExtProc;
use crate::api::grpc::GatewayApi;
use crate::api::http::{admin_router, main_router};
use crate::api::listener::{self, Caps, Listener, Protocol};
use crate::api::proto::v1::authorizer_server::AuthorizerServer;
use crate::api::services::{AdminToken, Ready, Services};
use crate::api::tls::{ServerTls, TlsRole, spawn_reloader as spawn_tls_reloader};
use crate::authz::Engine;
use crate::config::Config;
use crate::identity::Resolver;
use crate::policy::{PolicyStore, Problems, WatchOptions, spawn_watcher};
use crate::telemetry::{DecisionLog, Telemetry};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The policy directory is invalid: the service never starts without a
    /// valid policy set.
    #[error("the policy directory is invalid ({} problem(s))", .0.errors().count())]
    Policies(Problems),
    /// The shadow policy directory (`shadow.policies`) is invalid: checked at start
    /// like the live one.
    #[error("the shadow policy directory `{}` is invalid ({} problem(s))", .dir.display(), .problems.errors().count())]
    ShadowPolicies {
        /// The directory.
        dir: std::path::PathBuf,
        /// Its problems.
        problems: Problems,
    },
    /// Anything else, said in one sentence.
    #[error("{0}")]
    Message(String),
}

impl From<String> for AppError {
    fn from(s: String) -> Self {
        AppError::Message(s)
    }
}

/// The service, before it binds anything.
pub struct App;

impl App {
    /// Check what can be checked, bind every listener, and return the bound
    /// service. Nothing is served yet.
    pub async fn bind(config: Config) -> Result<Bound, AppError> {
        let decision_log = if config.decision_log.enabled {
            let log = DecisionLog::open(&config.decision_log).map_err(|e| {
                let target = config
                    .decision_log
                    .file
                    .as_ref()
                    .map_or_else(|| "stdout".to_owned(), |p| format!("`{}`", p.display()));
                format!("cannot open the decision log {target}: {e}")
            })?;
            Some(log)
        } else {
            None
        };
        let telemetry = Arc::new(Telemetry::new(decision_log).with_dry_run(config.dry_run));
        if config.dry_run {
            tracing::warn!(
                "DRY RUN (`decisions.dry_run`): every request is decided and logged as usual, and answered ALLOW; nothing is enforced"
            );
        }
        let resolver = Resolver::new(&config.identity, &config.base_dir)
            .await
            .map_err(|e| format!("invalid identity configuration: {e}"))?;
        let admin_token = config
            .admin_token_file
            .as_deref()
            .map(AdminToken::from_file)
            .transpose()?;
        let caps = connection_caps(&config)?;
        let tls = config
            .tls
            .as_ref()
            .map(ServerTls::load)
            .transpose()
            .map_err(|e| e.to_string())?;
        let listener = |name, tcp, protocol, max_connections, role: TlsRole| Listener {
            name,
            tcp,
            protocol,
            timeouts: config.listeners.timeouts,
            max_connections,
            tls: tls
                .as_ref()
                .zip(config.tls.as_ref())
                .filter(|(_, settings)| role.enabled_in(settings.listeners))
                .map(|(tls, _)| (Arc::clone(tls), role)),
        };
        let grpc = listener(
            "gRPC",
            bind(config.grpc_listen, "gRPC").await?,
            Protocol::Grpc,
            caps.grpc,
            TlsRole::Grpc,
        );
        let http = listener(
            "HTTP",
            bind(config.http_listen, "HTTP").await?,
            Protocol::Http,
            caps.http,
            TlsRole::Http,
        );
        let admin = match (config.admin_listen, caps.admin) {
            (Some(addr), Some(cap)) => Some(listener(
                "admin",
                bind(addr, "admin").await?,
                Protocol::Http,
                cap,
                TlsRole::Admin,
            )),
            _ => None,
        };
        for l in [Some(&grpc), Some(&http), admin.as_ref()]
            .into_iter()
            .flatten()
        {
            warn_if_exposed(l);
        }
        // Every listener answers from the start, "not ready" until the policies are in.
        let (health, health_service) = tonic_health::server::health_reporter();
        let ready = Ready::with_health(health).await;
        let (reflection_v1, reflection_v1alpha) = crate::api::reflection::services()
            .map_err(|e| format!("cannot build gRPC reflection: {e}"))?;
        let grpc_routes = tonic::service::Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(AuthorizerServer::new(GatewayApi::new(ready.clone())))
            .add_service(AuthorizationService::new(ready.clone()))
            .add_service(ExternalProcessorServer::new(ExtProc::new(ready.clone())))
            .prepare()
            .into_axum_router();
        let grpc_addr = local_addr(&grpc)?;
        let http_addr = local_addr(&http)?;
        let admin_addr = admin.as_ref().map(local_addr).transpose()?;
        let mut listeners = vec![
            (grpc, grpc_routes),
            (http, main_router(ready.clone(), admin_token.is_some())),
        ];
        listeners.extend(admin.map(|a| (a, admin_router(ready.clone()))));
        Ok(Bound {
            grpc_addr,
            http_addr,
            admin_addr,
            listeners,
            config,
            telemetry,
            resolver,
            admin_token,
            ready,
            tls,
        })
    }
}

/// The service with its listeners bound, ready to [`serve`](Bound::serve).
pub struct Bound {
    /// Where the gRPC listener listens (our API, Envoy ext_authz, health, reflection).
    pub grpc_addr: SocketAddr,
    /// Where the HTTP listener listens (AuthZEN, HTTP ext_authz, health, metrics).
    pub http_addr: SocketAddr,
    /// Where the admin listener listens, if there is one.
    pub admin_addr: Option<SocketAddr>,
    /// Each listener with what it serves.
    listeners: Vec<(Listener, axum::Router)>,
    config: Config,
    telemetry: Arc<Telemetry>,
    resolver: Resolver,
    admin_token: Option<AdminToken>,
    ready: Ready,
    tls: Option<Arc<ServerTls>>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// The service's readiness: [`Ready::wait`] returns once the policies are
    /// loaded and every interface serves.
    pub fn ready(&self) -> Ready {
        self.ready.clone()
    }

    /// Serve until `shutdown` completes (or a listener fails), then stop
    /// gracefully and flush the decision log. Fails at once if the policy
    /// directory is invalid.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AppError> {
        let Bound {
            listeners,
            config,
            telemetry,
            resolver,
            admin_token,
            ready,
            tls,
            ..
        } = self;
        let tls_reloader = tls.map(spawn_tls_reloader);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut servers = tokio::task::JoinSet::new();
        for (listener, routes) in listeners {
            let stop = stopped(stop_rx.clone());
            servers.spawn(listener::serve(listener, routes, stop));
        }

        let stop_all = |servers: tokio::task::JoinSet<()>| async move {
            let _ = stop_tx.send(true);
            let mut servers = servers;
            while servers.join_next().await.is_some() {}
        };
        let dir = config.policies.clone();
        let options = config.policy_load;
        let store = match tokio::task::spawn_blocking(move || PolicyStore::open_with(&dir, options))
            .await
        {
            Ok(Ok(store)) => Arc::new(store),
            Ok(Err(problems)) => {
                stop_all(servers).await;
                return Err(AppError::Policies(problems));
            }
            Err(e) => {
                stop_all(servers).await;
                return Err(format!("policy loading failed: {e}").into());
            }
        };
        let snapshot = store.snapshot();
        tracing::info!(
            dir = %config.policies.display(),
            policies = snapshot.policy_count(),
            files = snapshot.policy_files,
            generation = snapshot.generation,
            shadow_policies = snapshot.shadow_policies.len(),
            "policies loaded"
        );
        if !snapshot.shadow_policies.is_empty() {
            tracing::info!(
                ids = %serde_json::to_string(&snapshot.shadow_policies).unwrap_or_default(),
                sample = config.shadow.settings.sample,
                "`@shadow` policies are evaluated, not enforced"
            );
        }
        drop(snapshot);
        // The shadow directory, like the live one: invalid at start is an error.
        let shadow_store = match &config.shadow.policies {
            None => None,
            Some(dir) => {
                let dir = dir.clone();
                let opened = {
                    let dir = dir.clone();
                    tokio::task::spawn_blocking(move || PolicyStore::open_with(&dir, options)).await
                };
                match opened {
                    Ok(Ok(shadow)) => {
                        let s = shadow.snapshot();
                        tracing::info!(
                            dir = %dir.display(),
                            policies = s.policy_count(),
                            generation = s.generation,
                            content_digest = %s.digests.content,
                            sample = config.shadow.settings.sample,
                            "shadow policies loaded: decided beside the live ones, never enforced"
                        );
                        Some(Arc::new(shadow))
                    }
                    Ok(Err(problems)) => {
                        stop_all(servers).await;
                        return Err(AppError::ShadowPolicies { dir, problems });
                    }
                    Err(e) => {
                        stop_all(servers).await;
                        return Err(format!("shadow policy loading failed: {e}").into());
                    }
                }
            }
        };
        if let Some(s) = &shadow_store {
            telemetry.set_shadow_store(Arc::clone(s));
        }
        let engine = Engine::with_recorder(Arc::clone(&store), telemetry.clone())
            .with_cache(&config.cache)
            .with_rules(config.rules)
            .with_shadow(shadow_store.clone(), config.shadow.settings)
            .map_err(|e| format!("cannot start the shadow worker: {e}"))?;
        ready
            .set(Services {
                engine,
                telemetry: Arc::clone(&telemetry),
                resolver,
                trusted_caller_token: config.trusted_caller_token.clone(),
                trusted_callers: config.trusted_callers.clone().into(),
                envoy_default_server: config.envoy_default_server.clone(),
                envoy_servers: config.envoy_servers.clone(),
                resource_servers: config.resource_servers.clone(),
                authzen: config.authzen.clone(),
                grpc: config.grpc,
                admin_token,
                dry_run: config.dry_run,
                deny_detail: config.deny_detail,
                lists: crate::api::list_filter::ListCache::new(&config.cache),
            })
            .await;
        let watch_options = WatchOptions {
            debounce: config.reload_debounce,
            poll_interval: config.reload_poll_interval,
        };
        let watcher = spawn_watcher(Arc::clone(&store), watch_options);
        let shadow_watcher = shadow_store.map(|s| spawn_watcher(s, watch_options));
        let result = tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down");
                Ok(())
            }
            Some(r) = servers.join_next() => r.map_err(|e| AppError::Message(e.to_string())),
        };
        stop_all(servers).await;
        watcher.abort();
        if let Some(w) = shadow_watcher {
            w.abort();
        }
        if let Some(t) = tls_reloader {
            t.abort();
        }
        if let Some(log) = &telemetry.decision_log
            && !log.close(Duration::from_secs(2))
        {
            tracing::warn!("the decision log writer did not finish in time; records may be lost");
        }
        result
    }
}

/// Raise the descriptor limit, log it, and fit the connection caps in it.
fn connection_caps(config: &Config) -> Result<Caps, String> {
    let limit = listener::raise_descriptor_limit();
    if let Some(l) = &limit {
        let hard = l
            .hard
            .map_or_else(|| "unlimited".to_owned(), |h| h.to_string());
        if let Some(from) = l.raised_from {
            tracing::info!(from, to = l.soft, hard = %hard, "raised the descriptor limit");
        }
        if let Some(e) = &l.raise_error {
            tracing::warn!(soft = l.soft, hard = %hard, "cannot raise the descriptor limit: {e}");
        }
    }
    let caps = listener::connection_caps(
        &config.listeners,
        limit.as_ref(),
        config.admin_listen.is_some(),
    )
    .map_err(|e| e.to_string())?;
    let t = &config.listeners.timeouts;
    tracing::info!(
        descriptor_limit = limit.as_ref().map(|l| l.soft),
        descriptor_limit_hard = limit.as_ref().and_then(|l| l.hard),
        descriptors_open = limit.as_ref().map(|l| l.open),
        reserved = config.listeners.reserved_descriptors,
        grpc_max_connections = caps.grpc,
        http_max_connections = caps.http,
        admin_max_connections = caps.admin,
        header_read_timeout = ?t.header_read,
        idle_timeout = ?t.idle,
        keepalive_interval = ?t.keepalive_interval,
        keepalive_timeout = ?t.keepalive_timeout,
        request_timeout = ?t.request,
        "connection limits"
    );
    Ok(caps)
}

/// A listener that other machines can reach without TLS: said loudly, once.
fn warn_if_exposed(listener: &Listener) {
    let Ok(addr) = listener.tcp.local_addr() else {
        return;
    };
    if listener.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            listener = listener.name,
            addr = %addr,
            "the {} listener is reachable beyond this machine without TLS: callers are not authenticated and traffic is in the clear; set `tls.cert_file` and `tls.key_file` (and `tls.client_ca_file` for client certificates)",
            listener.name
        );
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {what} on `{addr}`: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(listener = %what, addr = %local, "listening");
    Ok(listener)
}

fn local_addr(listener: &Listener) -> Result<SocketAddr, String> {
    listener
        .tcp
        .local_addr()
        .map_err(|e| format!("the {} listener has no address: {e}", listener.name))
}
