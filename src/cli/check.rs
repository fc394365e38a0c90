//! `mcp-authz check`: decide one request and explain it, with what it dropped or
//! did not know ([`notes`]).

mod notes;

use clap::Args;
use serde_json::{Value, json};
use std::process::ExitCode;

use super::{CommonArgs, EXIT_DENY, EXIT_ERROR, load_config, report_problems};
use crate::authz::{Decision, DecisionMeta, DecisionRequest, Engine, Interface, Role};
use crate::config::{Config, Overrides};
use crate::identity::{
    AuthnError, GivenError, GivenFacts, Identity, IdentityInput, Resolver, TrustedIdentity,
};
use crate::mcp;
use crate::policy::Snapshot;
use notes::Note;

/// `check` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 allow, 1 deny, 2 bad input, configuration or policies (and, with
`--strict`, any note).

Notes: what the decision did not use or did not know, printed after it (`notes` in `--json`):
context attributes, arguments and claims the schema does not declare for the action (dropped
before evaluation), and a user, application, group, server, tool, resource or prompt the entity
data does not define. A note does not change the decision.

Examples:
  mcp-authz check --action tools/call --resource docs/get_document --user alice --app corpassist \\
      --context '{\"arguments\": {\"document_id\": \"titan/q1-strategy\"}}'
  mcp-authz check --action tools/call --resource docs/search_documents --user alice --app corpassist \\
      --context '{\"arguments\": {\"query\": \"titan\", \"max_results\": 500}}' --json
  mcp-authz check --action tools/call --resource docs/get_document --user erin --group engineering \\
      --app corpassist --scope docs.read --claim 'department=\"finance\"' --strict"
)]
pub struct CheckArgs {
    /// The MCP method, e.g. `tools/call` (or a full Cedar action uid)
    #[arg(long, value_name = "ACTION")]
    action: String,
    /// What is used: `server/tool` for a tool, `server/uri` for a resource,
    /// `server/prompt` for a prompt, the server id for methods on a server,
    /// or a full Cedar uid
    #[arg(long, value_name = "RESOURCE")]
    resource: String,
    /// The end user's id (`Mcp::User`)
    #[arg(long, value_name = "ID")]
    user: Option<String>,
    /// The calling application's id (`Mcp::Application`)
    #[arg(long = "app", value_name = "ID")]
    application: Option<String>,
    /// The MCP server id, when RESOURCE does not name it
    #[arg(long, value_name = "ID")]
    server: Option<String>,
    /// A bearer token (JWT) to verify with the configured `[[issuers]]`; its user,
    /// application, groups, scopes and claims are used
    #[arg(long, value_name = "JWT")]
    token: Option<String>,
    /// Context attributes as a JSON object, e.g. `{"arguments": {"document_id": "x"}}`
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
    /// A group of the user, as a verified token's groups give it (repeatable; needs
    /// `--user`; not with `--token`)
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// A scope for `context.scopes`, as a verified token's (repeatable; not with `--token`)
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// A claim for `context.claims`, as a verified token's: NAME=JSON, e.g.
    /// `department="finance"` (repeatable; not with `--token`)
    #[arg(long = "claim", value_name = "NAME=JSON")]
    claims: Vec<String>,
    /// Make any note (something dropped or not known) an error: exit status 2
    #[arg(long)]
    strict: bool,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

pub(super) fn run(args: &CheckArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(code) => code,
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_ERROR)
}

fn run_inner(args: &CheckArgs) -> Result<ExitCode, ExitCode> {
    let config = load_config(&args.common, Overrides::default())?;
    crate::telemetry::init(config.log_format, "warn");
    let mut request = build_request(args).map_err(fail)?;
    given_identity(args).map_err(fail)?.apply_to(&mut request);
    let snapshot =
        Snapshot::load_with(&config.policies, 1, config.policy_load).map_err(|problems| {
            report_problems(&config.policies, &problems);
            ExitCode::from(EXIT_ERROR)
        })?;
    // Decided as the service decides: the same entry point and rules.
    let engine = Engine::new(std::sync::Arc::new(
        crate::policy::PolicyStore::from_snapshot(snapshot),
    ))
    .with_rules(config.rules);
    let refused = match &args.token {
        Some(token) => match verify(&config, token, args)? {
            Ok(identity) => {
                identity.apply_to(&mut request);
                None
            }
            Err(e) => {
                eprintln!("error: the token was refused: {e} ({})", e.reason_code());
                Some(e)
            }
        },
        None => None,
    };
    let snapshot = engine.snapshot();
    let meta = DecisionMeta::default();
    // A refused token is a deny before any evaluation, as on every interface.
    let decision = match &refused {
        Some(e) => {
            engine
                .reject(
                    &snapshot,
                    Interface::Cli,
                    format!("unauthenticated: {e}"),
                    &meta,
                )
                .decision
        }
        None => {
            engine
                .decide(&snapshot, Interface::Cli, &request, &meta)
                .decision
        }
    };
    let notes = notes::notes(&snapshot, &request);
    // The `@shadow` policies are not enforced: say what they would have decided.
    let shadow = match (&snapshot.all_enforced, &refused) {
        (Some(view), None) => Some(crate::authz::decide_uncached(
            view,
            &request,
            engine.rules(),
        )),
        _ => None,
    };
    let shadow = shadow
        .as_ref()
        .map(|s| ShadowAnswer::new(&decision, s, &snapshot));
    if args.json {
        let mut out = to_json(&decision, &request, &snapshot, &notes);
        if let (Some(s), Value::Object(map)) = (&shadow, &mut out) {
            map.insert("shadow".into(), s.to_json());
        }
        if let (Some(e), Value::Object(map)) = (&refused, &mut out) {
            map.insert(
                "token_error".into(),
                json!({ "class": e.reason_code(), "message": e.to_string() }),
            );
        }
        println!("{out}");
    } else {
        print!("{}", explain(&decision, &request, &snapshot, &notes));
        if let Some(s) = &shadow {
            print!("{}", s.explain(&snapshot));
        }
    }
    if args.strict && !notes.is_empty() {
        let kinds: Vec<String> = notes
            .iter()
            .map(|n| format!("{} `{}`", n.kind, n.name))
            .collect();
        return Err(fail(format!(
            "`--strict`: {} note{}: {}",
            notes.len(),
            if notes.len() == 1 { "" } else { "s" },
            kinds.join(", ")
        )));
    }
    Ok(if decision.allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENY)
    })
}

fn build_request(args: &CheckArgs) -> Result<DecisionRequest, String> {
    let mut request = mcp::request_for(&args.action, &args.resource, args.server.as_deref())?;
    if let Some(text) = &args.context {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => request.context = map,
            Ok(_) => return Err("`--context` must be a JSON object".into()),
            Err(e) => return Err(format!("`--context` is not valid JSON: {e}")),
        }
    }
    Ok(request)
}

/// Who `--user` and `--app` say asks, with the token facts of `--group`, `--scope`
/// and `--claim`: put into the request by [`Identity::apply_to`], the rule every
/// interface applies to a verified token (the groups as the user's parents for this
/// request, `context.scopes`, `context.claims`). Any of the three stands for a
/// verified token, so the token facts are set (scopes possibly empty) as a token's
/// would be; none of them, no token facts.
fn given_identity(args: &CheckArgs) -> Result<Identity, String> {
    let mut claims = serde_json::Map::new();
    for text in &args.claims {
        let (name, value) = parse_claim(text)?;
        if claims.insert(name.to_owned(), value).is_some() {
            return Err(format!("`--claim {name}=...` is given twice"));
        }
    }
    let given = GivenFacts {
        user: args.user.clone(),
        application: args.application.clone(),
        groups: args.groups.clone(),
        scopes: args.scopes.clone(),
        claims,
    };
    if given.has_token_facts() && args.token.is_some() {
        return Err(
            "`--group`, `--scope` and `--claim` stand for a token's facts: give them or \
             `--token`, not both"
                .into(),
        );
    }
    given.identity().map_err(|e| match e {
        GivenError::GroupsWithoutUser => "`--group` needs `--user`: groups are the user's".into(),
        GivenError::EmptyGroup => "`--group` must name a group, not ``".into(),
        GivenError::BadScope(s) => format!(
            "`--scope` must be one scope, without spaces, not `{s}` (repeat `--scope` for more)"
        ),
    })
}

/// `NAME=JSON`: the claim's name and its value.
fn parse_claim(text: &str) -> Result<(&str, Value), String> {
    let Some((name, value)) = text.split_once('=').filter(|(n, _)| !n.trim().is_empty()) else {
        return Err(format!(
            "`--claim {text}` is not NAME=JSON, e.g. `--claim 'department=\"finance\"'`"
        ));
    };
    let value = serde_json::from_str(value).map_err(|e| {
        format!(
            "`--claim {text}`: the value is not JSON ({e}); write a string in quotes: \
             `{name}=\"...\"`"
        )
    })?;
    Ok((name, value))
}

/// Verify the token with the configured issuers; `--user` and `--app`, when given,
/// must agree with it. The outer error is a usage error (exit 2), the inner one a
/// refused token (a deny).
fn verify(
    config: &Config,
    token: &str,
    args: &CheckArgs,
) -> Result<Result<Identity, AuthnError>, ExitCode> {
    if config.identity.issuers.is_empty() {
        return Err(fail(
            "`--token` needs trusted issuers: add `[[issuers]]` to the file given with `--config`",
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let resolver = Resolver::new(&config.identity, &config.base_dir)
            .await
            .map_err(fail)?;
        let input = IdentityInput {
            bearer_token: Some(token),
            spiffe_id: None,
            trusted: Some(TrustedIdentity {
                user: args.user.clone(),
                application: args.application.clone(),
                groups: Vec::new(),
            }),
        };
        Ok(resolver.resolve(input).await)
    })
}

fn origin(snapshot: &Snapshot, id: &str) -> String {
    match snapshot.origins.get(id) {
        Some(o) => format!("{id} ({}:{})", o.file, o.line),
        None => id.to_owned(),
    }
}

fn explain(
    decision: &Decision,
    request: &DecisionRequest,
    snapshot: &Snapshot,
    notes: &[Note],
) -> String {
    let mut out = format!(
        "{}: {} on {}\n",
        decision.verdict().to_uppercase(),
        request.action,
        request.resource
    );
    // A declared tool's call is evaluated with its tool action.
    if let Some(action) = decision.evaluations.iter().find_map(|e| e.action.as_ref()) {
        out.push_str(&format!(
            "  as          {action}
"
        ));
    }
    let groups = groups_of(request);
    if !groups.is_empty() {
        out.push_str(&format!("  groups      {}\n", groups.join(", ")));
    }
    if let Some(token) = &request.token {
        out.push_str(&format!("  scopes      [{}]\n", token.scopes.join(", ")));
        let claims: Vec<String> = token
            .claims
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("  claims      {{{}}}\n", claims.join(", ")));
    }
    for e in &decision.evaluations {
        let role = match e.role {
            Role::User => "user",
            Role::Application => "application",
        };
        let verdict = if e.allow { "allow" } else { "deny" };
        out.push_str(&format!("  {role:<11} {}: {verdict}\n", e.principal));
        for p in &e.policies {
            let how = if e.allow {
                "permitted by"
            } else {
                "forbidden by"
            };
            out.push_str(&format!("      {how} {}\n", origin(snapshot, p)));
        }
        if !e.allow && e.policies.is_empty() && e.errors.is_empty() {
            out.push_str("      no policy permits it\n");
        }
        for err in &e.errors {
            out.push_str(&format!("      error: {err}\n"));
        }
    }
    if !decision.allow {
        out.push_str(&format!("  reason: {}\n", decision.reason));
    }
    for n in notes {
        out.push_str(&format!("  note: {}\n", n.message));
    }
    out
}

/// What the request would get with the `@shadow` policies enforced.
struct ShadowAnswer {
    allow: bool,
    /// The policies that make it differ from the enforced decision.
    difference: Vec<String>,
    /// Of those, the `@shadow` ones.
    shadow_policies: Vec<String>,
}

impl ShadowAnswer {
    fn new(live: &Decision, shadow: &Decision, snapshot: &Snapshot) -> Self {
        let difference = crate::authz::difference(live, shadow);
        let shadow_policies = difference
            .iter()
            .filter(|id| snapshot.shadow_policies.binary_search(id).is_ok())
            .cloned()
            .collect();
        Self {
            allow: shadow.allow,
            difference,
            shadow_policies,
        }
    }

    fn verdict(&self) -> &'static str {
        if self.allow { "allow" } else { "deny" }
    }

    fn to_json(&self) -> Value {
        json!({
            "decision": self.verdict(),
            "difference": self.difference,
            "shadow_policies": self.shadow_policies,
        })
    }

    fn explain(&self, snapshot: &Snapshot) -> String {
        let ids: Vec<String> = snapshot
            .shadow_policies
            .iter()
            .map(|id| format!("`{id}`"))
            .collect();
        let mut out = format!(
            "  shadow      {} evaluated, not enforced: with them {}\n",
            ids.join(", "),
            self.verdict()
        );
        for p in &self.shadow_policies {
            out.push_str(&format!("      decided by {}\n", origin(snapshot, p)));
        }
        out
    }
}

/// The groups given to the user for this request (by `--group` or a token).
fn groups_of(request: &DecisionRequest) -> Vec<String> {
    request
        .entities
        .iter()
        .flat_map(|e| e.parents.iter().map(ToString::to_string))
        .collect()
}

fn to_json(
    decision: &Decision,
    request: &DecisionRequest,
    snapshot: &Snapshot,
    notes: &[Note],
) -> Value {
    let evaluations: Vec<Value> = decision
        .evaluations
        .iter()
        .map(|e| {
            // Where each determining policy is written, as the text output says it.
            let origins: Vec<Value> = e.policies.iter().map(|p| snapshot.origin_json(p)).collect();
            let mut evaluation = json!({
                "role": e.role,
                "principal": e.principal,
                "allow": e.allow,
                "policies": e.policies,
                "origins": origins,
                "errors": e.errors,
            });
            // The tool action a declared tool's call was evaluated with.
            if let (Some(action), Value::Object(m)) = (&e.action, &mut evaluation) {
                m.insert("action".into(), json!(action));
            }
            evaluation
        })
        .collect();
    json!({
        "decision": decision.verdict(),
        "reason": decision.reason,
        "action": request.action.to_string(),
        "resource": request.resource.to_string(),
        "user": request.user.as_ref().map(ToString::to_string),
        "groups": groups_of(request),
        "application": request.application.as_ref().map(ToString::to_string),
        "scopes": request.token.as_ref().map(|t| &t.scopes),
        "claims": request.token.as_ref().map(|t| &t.claims),
        "notes": notes,
        "evaluations": evaluations,
        "generation": decision.generation,
        "policy_digest": &*decision.policy_digest,
        "policies": snapshot.policy_count(),
        "shadow_policies": snapshot.shadow_policies,
    })
}
