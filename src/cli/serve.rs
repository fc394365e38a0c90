//! `mcp-authz serve`: load the policies, watch them, serve.

use std::process::ExitCode;
use std::sync::Arc;

use super::{EXIT_ERROR, ServeArgs, load_config, report_problems};
use crate::api::http::{AdminToken, HttpState, admin_router, router};
use crate::authz::Engine;
use crate::config::{Config, Overrides};
use crate::identity::Resolver;
use crate::policy::{PolicyStore, WatchOptions, spawn_watcher};
use crate::telemetry::{DecisionLog, Telemetry};

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
    // Never start without a valid policy set.
    let store = match PolicyStore::open(&config.policies) {
        Ok(s) => Arc::new(s),
        Err(problems) => {
            report_problems(&config.policies, &problems);
            return ExitCode::from(EXIT_ERROR);
        }
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
    match runtime.block_on(serve(config, store)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn serve(config: Config, store: Arc<PolicyStore>) -> Result<(), String> {
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
    let engine = Engine::with_telemetry(Arc::clone(&store), Arc::clone(&telemetry));
    let resolver = Resolver::new(&config.identity, &config.base_dir)
        .await
        .map_err(|e| format!("invalid identity configuration: {e}"))?;
    let admin_token = config
        .admin_token_file
        .as_deref()
        .map(AdminToken::from_file)
        .transpose()?;
    let state = Arc::new(HttpState {
        engine,
        resolver: Some(resolver),
        authzen: config.authzen.clone(),
        admin_token,
    });
    let http = bind(config.http_listen, "HTTP").await?;
    let admin = match config.admin_listen {
        Some(addr) => Some(bind(addr, "admin").await?),
        None => None,
    };
    let watcher = spawn_watcher(
        Arc::clone(&store),
        WatchOptions {
            debounce: config.reload_debounce,
            poll_interval: config.reload_poll_interval,
        },
    );
    let mut servers = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for (listener, name) in [(Some(http), "http"), (admin, "admin")] {
        let Some(listener) = listener else { continue };
        let app = if name == "admin" {
            admin_router(Arc::clone(&state))
        } else {
            router(Arc::clone(&state))
        };
        let mut stop = stop_rx.clone();
        servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .map_err(|e| format!("{name} server failed: {e}"))
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
    result
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
