//! `mcp-authz serve`: read the configuration, start the log, and run the service
//! ([`crate::app`]) until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use super::{EXIT_ERROR, ServeArgs, load_config, report_problems};
use crate::app::{App, AppError};
use crate::config::Overrides;

pub(super) fn run(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        grpc_listen: args.grpc_listen,
        http_listen: args.http_listen,
        admin_listen: args.admin_listen,
        log_format: args.log_format,
        dry_run: args.dry_run,
        shadow_policies: args.shadow_policies,
        ..Overrides::default()
    };
    let config = match load_config(&args.common, overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = config.worker_threads {
        builder.worker_threads(n.get());
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    // The OTLP exporter runs on the runtime: started inside it.
    let otlp = {
        let _entered = runtime.enter();
        match crate::telemetry::init_with_otlp(
            config.log_format,
            &config.log_level,
            config.otlp.as_ref(),
        ) {
            Ok(otlp) => otlp,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
        }
    };
    tracing::info!(workers = runtime.metrics().num_workers(), "runtime started");
    let dir = config.policies.clone();
    let result =
        runtime.block_on(async { App::bind(config).await?.serve(shutdown_signal()).await });
    // Export the spans still queued, from this thread while the runtime runs.
    if let Some(otlp) = otlp {
        otlp.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(AppError::Policies(problems)) => {
            // Never start without a valid policy set.
            report_problems(&dir, &problems);
            ExitCode::from(EXIT_ERROR)
        }
        Err(AppError::ShadowPolicies { dir, problems }) => {
            report_problems(&dir, &problems);
            ExitCode::from(EXIT_ERROR)
        }
        Err(AppError::Message(message)) => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
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
