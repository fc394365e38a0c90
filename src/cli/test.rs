//! `mcp-authz test`: run the policy test suites (`*.test.yaml`) of a policy directory
//! ([`crate::policytest`]) and print what failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use serde_json::{Value, json};

use super::{CommonArgs, EXIT_DENY, EXIT_ERROR, load_config, report_problems};
use crate::authz::{Engine, Role};
use crate::config::Overrides;
use crate::policy::{PolicyStore, Snapshot};
use crate::policytest::{self, CaseResult, Coverage, Report, SUITE_SUFFIX, Suite};

/// `test` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Suites are YAML files `*.test.yaml` anywhere under DIR, never loaded as
policies. Each case is decided as `mcp-authz check` decides it, by the service's decision core,
with the settings of `--config` (e.g. `decisions.allow_user_only`), without the cache.

Exit status: 0 every case passed, 1 a case failed (or coverage is below `--min-coverage`),
2 bad input: a suite that cannot be read, or a policy directory that does not load.

Examples:
  mcp-authz test
  mcp-authz test policies --json
  mcp-authz test policies --coverage --min-coverage 100
  mcp-authz test policies --junit target/policy-tests.xml
  mcp-authz test policies --config mcp-authz.toml"
)]
pub struct TestArgs {
    /// Policy directory, with its suites [default: the configuration's, ./policies]
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// Print which policies some case made determining (a forbid: hit), and the percentage
    #[arg(long)]
    coverage: bool,
    /// Fail (exit status 1) when coverage is below N percent
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=100))]
    min_coverage: Option<u8>,
    /// Also write a JUnit XML report to FILE (one `testsuite` per suite file)
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Configuration file (TOML), as `serve` and `check` read it
    #[arg(long, value_name = "FILE", env = crate::config::CONFIG_ENV)]
    config: Option<PathBuf>,
}

pub(super) fn run(args: &TestArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) | Err(code) => code,
    }
}

fn run_inner(args: &TestArgs) -> Result<ExitCode, ExitCode> {
    let common = CommonArgs {
        config: args.config.clone(),
        policies: args.dir.clone(),
    };
    let config = load_config(&common, Overrides::default())?;
    crate::telemetry::init(config.log_format, "warn");
    let dir = &config.policies;
    let files = policytest::find(dir).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_ERROR)
    })?;
    if files.is_empty() {
        eprintln!(
            "error: no test suites (`*{SUITE_SUFFIX}`) under `{}`",
            dir.display()
        );
        return Err(ExitCode::from(EXIT_ERROR));
    }
    let mut suites = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for (file, path) in &files {
        match policytest::read(file, path) {
            Ok(s) => suites.push(s),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        eprintln!(
            "error: {} of {} test suite{} cannot be read",
            errors.len(),
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        );
        return Err(ExitCode::from(EXIT_ERROR));
    }
    let snapshot = Snapshot::load_with(dir, 1, config.policy_load).map_err(|problems| {
        report_problems(dir, &problems);
        ExitCode::from(EXIT_ERROR)
    })?;
    // Decided as the service decides: its entry point and rules, no cache.
    let engine =
        Engine::new(Arc::new(PolicyStore::from_snapshot(snapshot))).with_rules(config.rules);
    let snapshot = engine.snapshot();
    let report = policytest::run(&engine, &suites);
    let coverage =
        (args.coverage || args.min_coverage.is_some()).then(|| report.coverage(&snapshot));
    let below = match (&coverage, args.min_coverage) {
        (Some(c), Some(min)) => c.percent() < f64::from(min),
        _ => false,
    };
    if let Some(file) = &args.junit {
        std::fs::write(file, junit(&report, &suites, &snapshot)).map_err(|e| {
            eprintln!("error: cannot write `{}`: {e}", file.display());
            ExitCode::from(EXIT_ERROR)
        })?;
    }
    if args.json {
        println!(
            "{}",
            to_json(&report, &suites, coverage.as_ref(), args.min_coverage)
        );
    } else {
        let shown = if args.coverage {
            coverage.as_ref()
        } else {
            None
        };
        print!("{}", text(&report, &snapshot, shown));
        if below && let (Some(c), Some(min)) = (&coverage, args.min_coverage) {
            println!(
                "coverage {:.1}% is below the minimum of {min}%",
                c.percent()
            );
        }
    }
    Ok(if report.failed() > 0 || below {
        ExitCode::from(EXIT_DENY)
    } else {
        ExitCode::SUCCESS
    })
}

fn origin(snapshot: &Snapshot, id: &str) -> String {
    match snapshot.origins.get(id) {
        Some(o) => format!("{id} ({}:{})", o.file, o.line),
        None => id.to_owned(),
    }
}

fn location(r: &CaseResult<'_>) -> String {
    match r.case.line {
        Some(line) => format!("{}:{line}", r.suite.file),
        None => r.suite.file.clone(),
    }
}

/// What a failed case got: what did not match, each principal's evaluation, the reason.
fn failure(r: &CaseResult<'_>, snapshot: &Snapshot) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "FAIL {} / {} ({})\n",
        r.suite.name,
        r.case.name,
        location(r)
    ));
    for f in &r.failures {
        out.push_str(&format!("  {f}\n"));
    }
    out.push_str(&format!(
        "  decision: {} on {}\n",
        r.decision.verdict(),
        r.case.request.resource
    ));
    for role in [Role::User, Role::Application] {
        let name = match role {
            Role::User => "user",
            Role::Application => "application",
        };
        match r.decision.evaluations.iter().find(|e| e.role == role) {
            Some(e) => {
                let verdict = if e.allow { "allow" } else { "deny" };
                let policies: Vec<String> =
                    e.policies.iter().map(|p| origin(snapshot, p)).collect();
                let by = if policies.is_empty() {
                    "no determining policy".to_owned()
                } else {
                    policies.join(", ")
                };
                out.push_str(&format!("  {name:<11} {}: {verdict}: {by}\n", e.principal));
                for err in &e.errors {
                    out.push_str(&format!("      error: {err}\n"));
                }
            }
            None => out.push_str(&format!("  {name:<11} not evaluated\n")),
        }
    }
    out.push_str(&format!("  reason: {}\n", r.decision.reason));
    out
}

fn text(report: &Report<'_>, snapshot: &Snapshot, coverage: Option<&Coverage>) -> String {
    let mut out = String::new();
    for r in report.results.iter().filter(|r| !r.passed()) {
        out.push_str(&failure(r, snapshot));
    }
    if let Some(c) = coverage {
        out.push_str("coverage:\n");
        for (id, forbid, covered) in &c.policies {
            out.push_str(&format!(
                "  {} {} {}\n",
                if *covered {
                    "covered    "
                } else {
                    "NOT COVERED"
                },
                if *forbid { "forbid" } else { "permit" },
                origin(snapshot, id)
            ));
        }
        out.push_str(&format!(
            "coverage: {} of {} policies ({:.1}%)\n",
            c.covered(),
            c.policies.len(),
            c.percent()
        ));
    }
    out.push_str(&format!(
        "{} passed, {} failed\n",
        report.passed(),
        report.failed()
    ));
    out
}

fn to_json(
    report: &Report<'_>,
    suites: &[Suite],
    coverage: Option<&Coverage>,
    min_coverage: Option<u8>,
) -> Value {
    let cases: Vec<Value> = report
        .results
        .iter()
        .map(|r| {
            let evaluations: Vec<Value> = r
                .decision
                .evaluations
                .iter()
                .map(|e| {
                    json!({
                        "role": e.role,
                        "principal": e.principal,
                        "allow": e.allow,
                        "policies": e.policies,
                        "errors": e.errors,
                    })
                })
                .collect();
            json!({
                "suite": r.suite.name,
                "file": r.suite.file,
                "line": r.case.line,
                "case": r.case.name,
                "passed": r.passed(),
                "expected": r.case.expect,
                "got": r.got,
                "reason": r.decision.reason,
                "reason_kind": r.decision.reason.kind(),
                "evaluations": evaluations,
                "failures": r.failures,
            })
        })
        .collect();
    let mut out = json!({
        "suites": suites.iter().map(|s| json!({
            "name": s.name, "file": s.file, "cases": s.cases.len(),
        })).collect::<Vec<_>>(),
        "cases": cases,
        "summary": { "passed": report.passed(), "failed": report.failed() },
    });
    if let (Some(c), Value::Object(map)) = (coverage, &mut out) {
        let policies: Vec<Value> = c
            .policies
            .iter()
            .map(|(id, forbid, covered)| {
                json!({
                    "id": id,
                    "effect": if *forbid { "forbid" } else { "permit" },
                    "covered": covered,
                })
            })
            .collect();
        map.insert(
            "coverage".into(),
            json!({
                "policies": policies,
                "covered": c.covered(),
                "total": c.policies.len(),
                "percent": c.percent(),
                "minimum": min_coverage,
            }),
        );
    }
    out
}

/// A JUnit XML report: one `testsuite` per suite, one `testcase` per case, a
/// `failure` with what [`failure`] prints for each failed case.
fn junit(report: &Report<'_>, suites: &[Suite], snapshot: &Snapshot) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"mcp-authz test\" tests=\"{}\" failures=\"{}\">\n",
        report.results.len(),
        report.failed()
    ));
    for suite in suites {
        let results: Vec<&CaseResult<'_>> = report
            .results
            .iter()
            .filter(|r| std::ptr::eq(r.suite, suite))
            .collect();
        let failed = results.iter().filter(|r| !r.passed()).count();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" file=\"{}\" tests=\"{}\" failures=\"{failed}\">\n",
            xml(&suite.name),
            xml(&suite.file),
            results.len()
        ));
        for r in results {
            let line = r
                .case
                .line
                .map(|l| format!(" line=\"{l}\""))
                .unwrap_or_default();
            out.push_str(&format!(
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\"{line}",
                xml(&r.case.name),
                xml(&suite.name),
                xml(&suite.file)
            ));
            if r.passed() {
                out.push_str("/>\n");
            } else {
                out.push_str(&format!(
                    ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>\n",
                    xml(&r.failures.join("; ")),
                    r.got.as_str(),
                    xml(&failure(r, snapshot))
                ));
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// `text` escaped for an XML attribute or element; characters XML 1.0 cannot hold
/// (most control characters) are left out.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn xml_is_escaped() {
        assert_eq!(
            super::xml("a <b> & \"c\" 'd'\u{1}\n"),
            "a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos;\n"
        );
    }
}
