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
    let result =
        runtime.block_on(async { App::bind(config).await?.serve(shutdown_signal()).await });
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
