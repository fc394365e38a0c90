//! `mcp-authz serve`: load the policies, watch them, serve.
//!
//! Order: configuration and identity settings are checked before any port is
//! bound, and so are the connection caps against the descriptor limit (raised to
//! the hard limit first); the gRPC listener comes up next, reporting NOT_SERVING (and answering
//! "unavailable") until the policies are loaded; an invalid policy directory ends
//! the process with its diagnostics; then everything serves.

use std::process::ExitCode;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tonic_health::ServingStatus;

use super::{EXIT_ERROR, ServeArgs, load_config, report_problems};
use crate::api::ext_authz::ExtAuthzGrpc;
use crate::api::grpc::GatewayApi;
use crate::api::http::{AdminToken, HttpState, admin_router, main_router};
use crate::api::listener::{self, Caps, Listener, Protocol};
use crate::api::proto::v1::authorizer_server::AuthorizerServer;
use crate::api::services::{Ready, Services};
use crate::authz::Engine;
use crate::config::{Config, Overrides};
use crate::identity::Resolver;
use crate::policy::{PolicyStore, Problems, WatchOptions, spawn_watcher};
use crate::telemetry::{DecisionLog, Telemetry};

/// gRPC services whose health is reported.
const GRPC_SERVICES: [&str; 3] = [
    "",
    "mcp_authz.v1.Authorizer",
    "envoy.service.auth.v3.Authorization",
];

enum Failure {
    Policies(Problems),
    Message(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Message(s)
    }
}

pub(super) fn run(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        grpc_listen: args.grpc_listen,
        http_listen: args.http_listen,
        admin_listen: args.admin_listen,
        log_format: args.log_format,
        ..Overrides::default()
    };
    let config = match load_config(&args.common, overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::telemetry::init(config.log_format, &config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let dir = config.policies.clone();
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Policies(problems)) => {
            // Never start without a valid policy set.
            report_problems(&dir, &problems);
            ExitCode::from(EXIT_ERROR)
        }
        Err(Failure::Message(message)) => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn serve(config: Config) -> Result<(), Failure> {
    // Everything that can fail on configuration fails before a port is bound.
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
    let telemetry = Arc::new(Telemetry::new(decision_log));
    let resolver = Resolver::new(&config.identity, &config.base_dir)
        .await
        .map_err(|e| format!("invalid identity configuration: {e}"))?;
    let admin_token = config
        .admin_token_file
        .as_deref()
        .map(AdminToken::from_file)
        .transpose()?;
    let caps = connection_caps(&config)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut servers = tokio::task::JoinSet::new();

    // gRPC first: its health says NOT_SERVING until the policies are loaded.
    let ready = Ready::new();
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in GRPC_SERVICES {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let (reflection_v1, reflection_v1alpha) = crate::api::reflection::services()
        .map_err(|e| format!("cannot build gRPC reflection: {e}"))?;
    let grpc_listener = Listener {
        name: "gRPC",
        tcp: bind(config.grpc_listen, "gRPC").await?,
        protocol: Protocol::Grpc,
        timeouts: config.listeners.timeouts,
        max_connections: caps.grpc,
    };
    let grpc = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AuthorizerServer::new(
            GatewayApi::new(ready.clone()).with_settings(config.grpc),
        ))
        .add_service(AuthorizationServer::new(ExtAuthzGrpc::new(ready.clone())))
        .prepare()
        .into_axum_router();
    let stop = stopped(stop_rx.clone());
    servers.spawn(async move {
        listener::serve(grpc_listener, grpc, stop).await;
        Ok::<(), String>(())
    });

    let dir = config.policies.clone();
    let store = match tokio::task::spawn_blocking(move || PolicyStore::open(&dir)).await {
        Ok(Ok(store)) => Arc::new(store),
        Ok(Err(problems)) => {
            let _ = stop_tx.send(true);
            return Err(Failure::Policies(problems));
        }
        Err(e) => return Err(format!("policy loading failed: {e}").into()),
    };
    let snapshot = store.snapshot();
    tracing::info!(
        dir = %config.policies.display(),
        policies = snapshot.policy_count(),
        files = snapshot.policy_files,
        generation = snapshot.generation,
        "policies loaded"
    );
    drop(snapshot);
    let engine = Engine::with_telemetry(Arc::clone(&store), Arc::clone(&telemetry))
        .with_cache(&config.cache)
        .with_rules(config.rules);
    ready.set(Services {
        engine: engine.clone(),
        resolver: resolver.clone(),
        trusted_caller_token: config.trusted_caller_token.clone(),
        envoy_default_server: config.envoy_default_server.clone(),
    });
    for name in GRPC_SERVICES {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }

    let state = Arc::new(HttpState {
        engine,
        resolver: Some(resolver),
        authzen: config.authzen.clone(),
        admin_token,
    });
    let http = Listener {
        name: "HTTP",
        tcp: bind(config.http_listen, "HTTP").await?,
        protocol: Protocol::Http,
        timeouts: config.listeners.timeouts,
        max_connections: caps.http,
    };
    let admin = match (config.admin_listen, caps.admin) {
        (Some(addr), Some(max_connections)) => Some(Listener {
            name: "admin",
            tcp: bind(addr, "admin").await?,
            protocol: Protocol::Http,
            timeouts: config.listeners.timeouts,
            max_connections,
        }),
        _ => None,
    };
    let watcher = spawn_watcher(
        Arc::clone(&store),
        WatchOptions {
            debounce: config.reload_debounce,
            poll_interval: config.reload_poll_interval,
        },
    );
    for listener in [Some(http), admin].into_iter().flatten() {
        let app = if listener.name == "admin" {
            admin_router(Arc::clone(&state))
        } else {
            main_router(Arc::clone(&state), ready.clone())
        };
        let stop = stopped(stop_rx.clone());
        servers.spawn(async move {
            listener::serve(listener, app, stop).await;
            Ok(())
        });
    }
    let result = tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
        Some(r) = servers.join_next() => r.map_err(|e| e.to_string()).and_then(|r| r),
    };
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    watcher.abort();
    if let Some(log) = &telemetry.decision_log
        && !log.close(std::time::Duration::from_secs(2))
    {
        tracing::warn!("the decision log writer did not finish in time; records may be lost");
    }
    result.map_err(Failure::Message)
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

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<tokio::net::TcpListener, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {what} on `{addr}`: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(listener = %what, addr = %local, "listening");
    Ok(listener)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
