//! `mcp-authz serve`: read the configuration, start the log, and run the service
//! ([`crate::app`]) until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use super::{EXIT_ERROR, ServeArgs, load_config, report_problems};
use crate::app::{App, AppError};
use crate::config::{MAX_WORKER_THREADS, Overrides, worker_count};

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
    let workers = match config.worker_threads {
        Some(n) => Some(n.get()),
        None => match runtime_env_workers(std::env::var_os(RUNTIME_WORKERS_ENV)) {
            Ok(n) => n,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(EXIT_ERROR);
            }
        },
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = workers {
        builder.worker_threads(n);
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

/// The runtime's own variable for its worker count, read when `worker_threads` is unset.
const RUNTIME_WORKERS_ENV: &str = "TOKIO_WORKER_THREADS";

/// The worker count [`RUNTIME_WORKERS_ENV`] asks for, checked here by the rule
/// `worker_threads` is ([`worker_count`]: the runtime itself panics on one that is
/// not a whole number of at least 1, and has no upper bound). `None`: unset, one
/// worker per CPU.
fn runtime_env_workers(value: Option<std::ffi::OsString>) -> Result<Option<usize>, String> {
    let Some(value) = value else { return Ok(None) };
    value
        .to_str()
        .and_then(|text| text.parse::<u64>().ok())
        .and_then(|n| worker_count(n).ok())
        .map(|n| Some(n.get()))
        .ok_or_else(|| {
            format!(
                "`{RUNTIME_WORKERS_ENV}` is `{}`: the worker count must be a whole number from 1 to {MAX_WORKER_THREADS} (or set `worker_threads`)",
                value.to_string_lossy()
            )
        })
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

#[cfg(test)]
mod tests {
    use super::runtime_env_workers;

    #[test]
    fn the_runtime_variable_is_checked_before_the_runtime_reads_it() {
        assert_eq!(runtime_env_workers(None), Ok(None));
        for (text, n) in [("1", 1), ("3", 3), ("64", 64), ("1024", 1024), ("0002", 2)] {
            assert_eq!(
                runtime_env_workers(Some(text.into())),
                Ok(Some(n)),
                "{text}"
            );
        }
        for text in [
            "0",
            "",
            " 2",
            "2 ",
            "-1",
            "two",
            "1.5",
            "+",
            "1025",
            "40000",
            "99999999999999999999999",
        ] {
            let err = runtime_env_workers(Some(text.into())).expect_err(text);
            assert!(
                err.contains("TOKIO_WORKER_THREADS") && err.contains("from 1 to 1024"),
                "{err}"
            );
        }
        // The bound is the setting's: the same numbers pass and fail both ways.
        for n in [0_u64, 1, 2, 1023, 1024, 1025, u64::MAX] {
            assert_eq!(
                runtime_env_workers(Some(n.to_string().into())).is_ok(),
                crate::config::worker_count(n).is_ok(),
                "{n}"
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt as _;
            let not_utf8 = std::ffi::OsString::from_vec(vec![b'2', 0xff]);
            assert!(runtime_env_workers(Some(not_utf8)).is_err());
        }
    }
}
