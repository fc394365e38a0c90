//! The command line: `serve`, `validate`, `check`, `schema`, `fmt`, `test`, `replay`.

mod check;
mod fmt;
mod replay;
mod schema;
mod serve;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat, Overrides};
use crate::policy::{LoadOptions, Problem, Problems, Snapshot};

/// Exit code of `check` for a deny.
pub const EXIT_DENY: u8 = 1;
/// Exit code for bad usage, configuration or policies.
pub const EXIT_ERROR: u8 = 2;

/// mcp-authz: Cedar policy decisions for the MCP mesh.
///
/// May this user, through this application, use this MCP tool, resource or
/// prompt? mcp-authz answers from Cedar policies kept in a directory.
#[derive(Debug, Parser)]
#[command(name = "mcp-authz", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the decision service on a policy directory, reloading it when it changes.
    Serve(ServeArgs),
    /// Check a policy directory: parse, validate against its schema, report problems.
    Validate(ValidateArgs),
    /// Decide one request from the command line and explain the decision.
    Check(check::CheckArgs),
    /// Import an MCP server's tools into the policy directory's schema, or check it for drift.
    Schema(schema::SchemaArgs),
    /// Format the policy files of a directory with Cedar's formatter, or check them (`--check`)
    Fmt(fmt::FmtArgs),
    /// Run the policy test suites (`*.test.yaml`) of a policy directory.
    Test(test::TestArgs),
    /// Decide the requests of a decision log again on a candidate policy directory and
    /// report the differences.
    Replay(replay::ReplayArgs),
}

/// Settings shared by `serve` and `check`.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Configuration file (TOML). Environment variables `MCP_AUTHZ_*` override it,
    /// flags override both.
    #[arg(long, value_name = "FILE", env = crate::config::CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// Policy directory [default: ./policies]
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
}

/// `serve` arguments.
#[derive(Debug, Args)]
#[command(after_help = crate::config::env_help())]
pub struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// gRPC listen address (our API, Envoy ext_authz, health) [default: 127.0.0.1:9191]
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<String>,
    /// HTTP listen address (AuthZEN, health, metrics) [default: 127.0.0.1:8181]
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Admin listen address: health, metrics, /v1/policies, /v1/reload (optional;
    /// a bare port means 127.0.0.1)
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Log format [default: text]
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Dry run: decide and log every request as usual, but answer allow (for
    /// onboarding a mesh without breaking it; the would-be decision travels with the
    /// answer)
    #[arg(long)]
    dry_run: bool,
    /// Shadow policy directory: every live decision (or `shadow.sample` of them) is
    /// decided on it too, never enforced; disagreements are counted in /metrics and
    /// logged [default: none]
    #[arg(long, value_name = "DIR")]
    shadow_policies: Option<PathBuf>,
}

/// `validate` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 valid (warnings allowed unless `--deny-warnings`), 2 not valid.

With `--json`, one object on stdout instead of the text: {\"ok\": bool, \"policies\": N or null,
\"shadow_policies\": [ids of `@shadow` policies] or null, \"problems\": [{\"file\", \"line\", \"column\", \"policy_id\", \"severity\", \"message\", \"help\"}]}
(null where unknown; `severity` is `error` or `warning`; `file` is relative to DIR).

Examples:
  mcp-authz validate
  mcp-authz validate --deny-warnings policies
  mcp-authz validate --json policies | jq '.problems[] | select(.severity == \"error\")'"
)]
pub struct ValidateArgs {
    /// Policy directory
    #[arg(value_name = "DIR", default_value = "policies")]
    dir: PathBuf,
    /// Treat every warning as an error: exit 2 if there is any (as the service does
    /// with `validation.deny_warnings`)
    #[arg(long, env = "MCP_AUTHZ_VALIDATION_DENY_WARNINGS")]
    deny_warnings: bool,
    /// Print one JSON object (`ok`, `policies`, `problems`) on stdout instead of the text
    #[arg(long)]
    json: bool,
}

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Validate(args) => validate(&args),
        Command::Check(args) => check::run(&args),
        Command::Schema(args) => schema::run(&args),
        Command::Fmt(args) => fmt::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Replay(args) => replay::run(&args),
    }
}

fn validate(args: &ValidateArgs) -> ExitCode {
    let options = LoadOptions {
        deny_warnings: args.deny_warnings,
    };
    let result = Snapshot::load_with(&args.dir, 1, options);
    if args.json {
        let (ok, policies, problems, shadow) = match &result {
            Ok(snapshot) => (
                true,
                Some(snapshot.policy_count()),
                &snapshot.warnings,
                Some(&snapshot.shadow_policies),
            ),
            Err(problems) => (false, None, problems, None),
        };
        let problems: Vec<serde_json::Value> = problems.0.iter().map(Problem::to_json).collect();
        let out = serde_json::json!({
            "ok": ok,
            "policies": policies,
            "shadow_policies": shadow,
            "problems": problems,
        });
        println!("{out}");
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_ERROR)
        };
    }
    match result {
        Ok(snapshot) => {
            eprint!("{}", snapshot.warnings);
            println!(
                "ok: {} policies in {} files, validated against the schema in `{}`",
                snapshot.policy_count(),
                snapshot.policy_files,
                args.dir.display()
            );
            if !snapshot.shadow_policies.is_empty() {
                let ids: Vec<String> = snapshot
                    .shadow_policies
                    .iter()
                    .map(|id| format!("`{id}`"))
                    .collect();
                println!("shadow (evaluated, not enforced): {}", ids.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            report_problems(&args.dir, &problems);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Print the problems of a policy directory, and a summary line, to stderr.
pub fn report_problems(dir: &std::path::Path, problems: &Problems) {
    eprint!("{problems}");
    let errors = problems.errors().count();
    eprintln!(
        "error: `{}` is not a valid policy directory ({errors} error{})",
        dir.display(),
        if errors == 1 { "" } else { "s" }
    );
}

/// Merge the configuration for a command, or print the one-line reason.
fn load_config(common: &CommonArgs, overrides: Overrides) -> Result<Config, ExitCode> {
    let overrides = Overrides {
        policies: common.policies.clone(),
        ..overrides
    };
    Config::load(common.config.as_deref(), &Config::process_env(), &overrides).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_ERROR)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;
    use crate::config::{CONFIG_ENV, SETTINGS};

    #[test]
    fn serve_help_lists_every_variable() {
        let mut cli = Cli::command();
        let serve = cli.find_subcommand_mut("serve").expect("serve");
        let help = serve.render_long_help().to_string();
        assert!(help.contains(CONFIG_ENV), "{help}");
        for s in SETTINGS {
            if let Some(name) = s.env() {
                assert!(
                    help.contains(&format!("{name} ")),
                    "{name} is not in:\n{help}"
                );
                assert!(help.contains(&format!(" {}: ", s.key)), "{}", s.key);
            }
        }
    }
}
