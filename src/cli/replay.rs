//! `mcp-authz replay`: decide the requests of a decision log again on a candidate policy
//! directory ([`crate::replay`]) and report where the answers differ.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use serde_json::{Value, json};

use super::{CommonArgs, EXIT_DENY, EXIT_ERROR, load_config, report_problems};
use crate::authz::replayable::ArgumentsForm;
use crate::authz::{Decision, Role};
use crate::config::Overrides;
use crate::policy::{PolicyStore, Snapshot};
use crate::replay::{Difference, Options, Report, Summary};

/// `replay` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Every live decision record of the log (one JSON object per line, as the service
writes it with `[decision_log]`) that carries its `input` is decided again on the candidate
directory, by the service's decision core under the `[decisions]` settings of `--config`, and
compared with the record's `decision` (also under dry-run). The differences are listed (user,
application, action, resource, live -> candidate, both sides' determining policies), then a
summary.

Not replayed, and counted: records without `input` (list requests, requests refused before
they became one, logs of earlier versions), other records (a top-level `record` key, e.g.
shadow disagreements), malformed lines (reported with their line number: not JSON, not
UTF-8, no `allow`/`deny` decision, an unreadable `input`). A record whose arguments the log
left out (`decision_log.include_arguments = false`) or redacted is replayed on what the log
has: a difference on it is counted as uncertain.

Exit status: 0 no difference, 1 a difference, 2 bad input: the log cannot be opened or read,
no line of it is a JSON record (an empty log too), or the configuration or the candidate
directory does not load. Malformed lines alone do not make it 2.

Examples:
  mcp-authz replay --log decisions.jsonl --policies candidate/
  mcp-authz replay --log decisions.jsonl --policies candidate/ --config mcp-authz.toml --json
  kubectl logs deploy/mcp-authz | mcp-authz replay --log - --policies candidate/
  mcp-authz replay --log decisions.jsonl --limit 100000"
)]
pub struct ReplayArgs {
    /// The decision log (JSON lines); `-` reads standard input
    #[arg(long, value_name = "FILE")]
    log: PathBuf,
    /// Candidate policy directory [default: the configuration's, ./policies]
    #[arg(long, value_name = "DIR")]
    policies: Option<PathBuf>,
    /// Configuration file (TOML), as `serve` reads it: its `[decisions]` settings apply
    #[arg(long, value_name = "FILE", env = crate::config::CONFIG_ENV)]
    config: Option<PathBuf>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// Stop after N live records have been replayed
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

pub(super) fn run(args: &ReplayArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) | Err(code) => code,
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_ERROR)
}

fn run_inner(args: &ReplayArgs) -> Result<ExitCode, ExitCode> {
    let common = CommonArgs {
        config: args.config.clone(),
        policies: args.policies.clone(),
    };
    let config = load_config(&common, Overrides::default())?;
    crate::telemetry::init(config.log_format, "warn");
    let dir = &config.policies;
    let snapshot = Snapshot::load_with(dir, 1, config.policy_load).map_err(|problems| {
        report_problems(dir, &problems);
        ExitCode::from(EXIT_ERROR)
    })?;
    // Decided as the service decides: its entry point and rules.
    let engine =
        crate::replay::engine(Arc::new(PolicyStore::from_snapshot(snapshot)), config.rules);
    let options = Options {
        limit: args.limit,
        ..Options::default()
    };
    let shown = args.log.display().to_string();
    let report = if args.log.as_os_str() == "-" {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        crate::replay::replay(&engine, &mut lock, &options)
    } else {
        let file = std::fs::File::open(&args.log)
            .map_err(|e| fail(format!("cannot open the log `{shown}`: {e}")))?;
        let mut reader: Box<dyn BufRead> =
            Box::new(std::io::BufReader::with_capacity(256 * 1024, file));
        crate::replay::replay(&engine, &mut reader, &options)
    }
    .map_err(|e| fail(format!("cannot read the log `{shown}`: {e}")))?;
    for (line, reason) in &report.malformed {
        eprintln!("warning: `{shown}` line {line} skipped: {reason}");
    }
    let s = &report.summary;
    if s.malformed > report.malformed.len() as u64 {
        eprintln!(
            "warning: {} more malformed lines skipped",
            s.malformed - report.malformed.len() as u64
        );
    }
    let read = s.live + s.other_records;
    if read == 0 {
        return Err(fail(format!(
            "no decision record in `{shown}` ({} line{}, {} malformed)",
            s.lines,
            plural(s.lines),
            s.malformed
        )));
    }
    if s.replayed == 0 {
        eprintln!(
            "warning: no record of `{shown}` carries its input: nothing was replayed \
             (records written before the decision log carried inputs, or only lists and refusals)"
        );
    }
    let output = if args.json {
        format!("{}\n", to_json(&report))
    } else {
        text(&report)
    };
    // A reader that stops early (`| head`) is no error of the replay.
    let mut stdout = std::io::stdout().lock();
    match std::io::Write::write_all(&mut stdout, output.as_bytes())
        .and_then(|()| std::io::Write::flush(&mut stdout))
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(fail(format!("cannot write the report: {e}")));
        }
        _ => {}
    }
    Ok(if s.different() > 0 {
        ExitCode::from(EXIT_DENY)
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn verdict(allow: bool) -> &'static str {
    if allow { "allow" } else { "deny" }
}

/// The id of a uid (what the table shows), or `-`.
fn id_of(uid: Option<&cedar_policy::EntityUid>) -> String {
    uid.map_or_else(|| "-".to_owned(), |u| u.id().unescaped().to_owned())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Application => "application",
    }
}

fn candidate_policies(decision: &Decision) -> Vec<(String, Vec<String>)> {
    decision
        .evaluations
        .iter()
        .map(|e| (role_name(e.role).to_owned(), e.policies.clone()))
        .collect()
}

/// `user: a, b; application: c`, or `not evaluated`.
fn policies_text(policies: &[(String, Vec<String>)]) -> String {
    if policies.is_empty() {
        return "not evaluated".into();
    }
    policies
        .iter()
        .map(|(role, ids)| {
            if ids.is_empty() {
                format!("{role}: none")
            } else {
                format!("{role}: {}", ids.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn arguments_note(form: ArgumentsForm) -> &'static str {
    match form {
        ArgumentsForm::Complete => "",
        ArgumentsForm::Omitted => " (uncertain: arguments omitted)",
        ArgumentsForm::Redacted => " (uncertain: arguments redacted)",
    }
}

fn text(report: &Report) -> String {
    let mut out = String::new();
    if !report.differences.is_empty() {
        let header = [
            "LINE",
            "USER",
            "APPLICATION",
            "ACTION",
            "RESOURCE",
            "LIVE -> CANDIDATE",
            "LIVE POLICIES",
            "CANDIDATE POLICIES",
        ];
        let rows: Vec<[String; 8]> = report
            .differences
            .iter()
            .map(|d| {
                [
                    d.line.to_string(),
                    id_of(d.request.user.as_ref()),
                    id_of(d.request.application.as_ref()),
                    id_of(Some(&d.request.action)),
                    id_of(Some(&d.request.resource)),
                    format!(
                        "{} -> {}{}",
                        verdict(d.live_allow),
                        verdict(d.candidate.allow),
                        arguments_note(d.arguments)
                    ),
                    policies_text(&d.live_policies),
                    policies_text(&candidate_policies(&d.candidate)),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut line = |cells: &[&str]| {
            let mut l = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(cell);
                } else {
                    l.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&header);
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(&cells);
        }
        out.push('\n');
    }
    out.push_str(&summary_text(&report.summary, &report.candidate_digest));
    out
}

fn summary_text(s: &Summary, candidate: &str) -> String {
    let mut out = format!(
        "replayed {} of {} live records: {} same, {} different ({} allow -> deny, {} deny -> allow",
        s.replayed,
        s.live,
        s.same,
        s.different(),
        s.allow_to_deny,
        s.deny_to_allow
    );
    if s.uncertain > 0 {
        out.push_str(&format!(
            "; {} uncertain: the log lacked their arguments",
            s.uncertain
        ));
    }
    out.push_str(")\n");
    out.push_str(&format!(
        "skipped: {} without input, {} other record{}, {} malformed line{} (of {} line{})\n",
        s.without_input,
        s.other_records,
        plural(s.other_records),
        s.malformed,
        plural(s.malformed),
        s.lines,
        plural(s.lines)
    ));
    if s.arguments_omitted + s.arguments_redacted > 0 {
        out.push_str(&format!(
            "arguments: replay lacked them for {} record{} (omitted from the log) and had them \
             redacted for {}: those were decided without them\n",
            s.arguments_omitted,
            plural(s.arguments_omitted),
            s.arguments_redacted
        ));
    }
    let live: Vec<String> = s
        .live_digests
        .iter()
        .map(|(d, n)| format!("{d} ({n})"))
        .collect();
    out.push_str(&format!(
        "policies: live {}; candidate {candidate}\n",
        if live.is_empty() {
            "unknown".to_owned()
        } else {
            live.join(", ")
        }
    ));
    out
}

fn policies_json(policies: &[(String, Vec<String>)]) -> Value {
    Value::Object(
        policies
            .iter()
            .map(|(role, ids)| (role.clone(), json!(ids)))
            .collect(),
    )
}

fn difference_json(d: &Difference) -> Value {
    let uid = |u: Option<&cedar_policy::EntityUid>| u.map(ToString::to_string);
    json!({
        "line": d.line,
        "decision_id": d.decision_id,
        "user": uid(d.request.user.as_ref()),
        "application": uid(d.request.application.as_ref()),
        "action": d.request.action.to_string(),
        "resource": d.request.resource.to_string(),
        "live": verdict(d.live_allow),
        "candidate": verdict(d.candidate.allow),
        "uncertain": d.uncertain(),
        "arguments": d.arguments.as_str(),
        "live_policies": policies_json(&d.live_policies),
        "candidate_policies": policies_json(&candidate_policies(&d.candidate)),
        "live_reason": d.live_reason,
        "candidate_reason": d.candidate.reason.as_str(),
    })
}

fn to_json(report: &Report) -> Value {
    let s = &report.summary;
    json!({
        "differences": report.differences.iter().map(difference_json).collect::<Vec<_>>(),
        "summary": {
            "lines": s.lines,
            "live": s.live,
            "replayed": s.replayed,
            "same": s.same,
            "different": s.different(),
            "allow_to_deny": s.allow_to_deny,
            "deny_to_allow": s.deny_to_allow,
            "uncertain": s.uncertain,
            "skipped": {
                "without_input": s.without_input,
                "other_records": s.other_records,
                "malformed": s.malformed,
            },
            "arguments_omitted": s.arguments_omitted,
            "arguments_redacted": s.arguments_redacted,
            "live_policy_digests": s.live_digests,
            "candidate_policy_digest": &*report.candidate_digest,
        },
        "malformed": report.malformed.iter().map(|(line, reason)| json!({"line": line, "reason": reason})).collect::<Vec<_>>(),
    })
}
