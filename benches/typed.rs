//! Typed tools at scale (issue 15, "Performance"): 10 servers × 100 tools imported
//! from synthetic `tools/list` results through the project's own import code
//! (`mcp_authz::mcp::import`, as `mcp-authz schema import` runs it), beside the
//! reference base schema, with 1,000 policies.
//!
//! The policy directory (written to a temporary directory, or to
//! `TYPED_BENCH_DIR` to keep it):
//! - `mcp.cedarschema`: the reference base schema (`policies/`), as it is;
//! - `tools/S.cedarschema`, `tools/S.entities.json` for each of the 10 servers,
//!   written by `import::render_fragment` / `import::render_entities` from a
//!   `tools/list` of 100 tools whose `inputSchema`s cycle through ten shapes
//!   (strings, integers, numbers, booleans, enums, nested objects, arrays of
//!   strings, integers and objects, `date-time` and `ipv4` formats, required and
//!   optional properties, a tool without arguments);
//! - `entities.json`: the reference entities, plus 10 groups, 100 users, 6
//!   applications and the 10 servers;
//! - `S.cedar`, 100 policies per server, every one with an `@id`: server-wide
//!   `action in Mcp::Action::"tools/call"` permits for groups (on a condition on the
//!   application) and for applications, a server-wide contractors forbid, 60
//!   per-tool permits `action == Mcp::Action::"tools/call/S/T"` with a condition
//!   on that tool's arguments, 30 per-tool forbids on arguments (some on two tools'
//!   actions), 4 contractors forbids on single tools.
//!
//! Measured:
//! - `typed/snapshot_load`: `Snapshot::load_with` (read, parse, schema from the
//!   fragments, strict validation, authoring checks, entities, index), as the
//!   service loads and reloads; `typed/store_open`: `PolicyStore::open_with`;
//!   `typed/snapshot_build`: the same from the files' text in memory;
//! - `typed/raw_cedar_is_authorized_x2`: Cedar's `is_authorized` twice (user,
//!   application) on a typed `tools/call` request, context and entities already
//!   built, every policy of the set — the baseline;
//! - `typed/decision_cache_miss`: `authz::decide` on the same request (typing it
//!   with its tool action, context, undeclared-argument check, both evaluations);
//! - the same two cycling through 64 typed calls of different tools and shapes
//!   (`..._cycling`);
//! - `typed/listed_one_tool`: `authz::listed` of one declared tool (partial
//!   evaluation with the arguments unknown, per principal);
//! - `typed/filter_list_100_tools`: a whole `tools/list` of one server filtered as
//!   the gRPC `FilterList` does it (read the result, each entry's use call, the
//!   decision request, `Engine::listed`, the filtered JSON).
//!
//! `cargo bench --bench typed` (add `-- --test` for a smoke run). Sample sizes are
//! set in code to keep the run to about two minutes on 2 cores.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Entities, EntityUid, PolicyId, PolicySet, Request,
    Schema, SchemaFragment, ValidationMode, Validator,
};
use criterion::{Criterion, Throughput};
use mcp_authz::api::mcp_check::request_for;
use mcp_authz::authz::{DecisionRequest, Engine, Rules, build_context, decide, listed};
use mcp_authz::identity::Identity;
use mcp_authz::mcp::import::{self, Base, Provenance};
use mcp_authz::mcp::lists::{ListKind, read_list_result};
use mcp_authz::mcp::{Kind, action};
use mcp_authz::policy::{LoadOptions, PolicyStore, Snapshot, build, read_sources};
use serde_json::{Value, json};

const SERVERS: [&str; 10] = [
    "payments",
    "crm",
    "tickets",
    "wiki",
    "hr",
    "infra",
    "search",
    "calendar",
    "storage",
    "analytics",
];
const TOOLS_PER_SERVER: usize = 100;
const GROUPS: usize = 10;
const USERS: usize = 100;
const APPS: usize = 6;
/// Applications in `approved-apps`: agent0 … agent3.
const APPROVED_APPS: usize = 4;
const REQUESTS: usize = 64;

/// The ten `inputSchema` shapes, by `t % 10`.
const SHAPES: [&str; 10] = [
    "search",
    "get",
    "refund",
    "filter",
    "batch",
    "probe",
    "update",
    "ping",
    "configure",
    "query",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool_name(t: usize) -> String {
    format!("{}_{t:03}", SHAPES[t % SHAPES.len()])
}

/// The `inputSchema` of tool `t`.
fn input_schema(t: usize) -> Value {
    match t % 10 {
        0 => json!({
            "type": "object",
            "properties": {
                "query": { "type": "string", "description": "What to look for" },
                "limit": { "type": "integer", "minimum": 1, "maximum": 1000 },
                "include_archived": { "type": "boolean" }
            },
            "required": ["query"]
        }),
        1 => json!({
            "type": "object",
            "properties": {
                "document_id": { "type": "string" },
                "format": { "type": "string", "enum": ["text", "markdown", "html"] }
            },
            "required": ["document_id"]
        }),
        2 => json!({
            "type": "object",
            "properties": {
                "amount": { "type": "number", "description": "In the currency's units" },
                "currency": { "type": "string", "enum": ["USD", "EUR", "GBP"] },
                "memo": { "type": "string" }
            },
            "required": ["amount", "currency"]
        }),
        3 => json!({
            "type": "object",
            "properties": {
                "filter": {
                    "type": "object",
                    "properties": {
                        "owner": { "type": "string" },
                        "created_after": { "type": "string", "format": "date-time" },
                        "labels": { "type": "array", "items": { "type": "string" } }
                    },
                    "required": ["owner"]
                },
                "page": { "type": "integer" }
            },
            "required": ["filter"]
        }),
        4 => json!({
            "type": "object",
            "properties": {
                "ids": { "type": "array", "items": { "type": "integer" } },
                "dry_run": { "type": "boolean" }
            },
            "required": ["ids"]
        }),
        5 => json!({
            "type": "object",
            "properties": {
                "host": { "type": "string" },
                "source": { "type": "string", "format": "ipv4" },
                "port": { "type": "integer" }
            },
            "required": ["host"]
        }),
        6 => json!({
            "type": "object",
            "properties": {
                "issue_id": { "type": "string" },
                "status": { "type": "string", "enum": ["open", "in_progress", "closed"] },
                "priority": { "type": "integer" },
                "assignees": { "type": "array", "items": { "type": "string" } }
            },
            "required": ["issue_id", "status"]
        }),
        7 => json!({ "type": "object" }),
        8 => json!({
            "type": "object",
            "properties": {
                "config": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "limits": {
                            "type": "object",
                            "properties": {
                                "max": { "type": "integer" },
                                "min": { "type": "integer" }
                            },
                            "required": ["max"]
                        }
                    },
                    "required": ["name", "limits"]
                },
                "tags": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": { "key": { "type": "string" }, "value": { "type": "string" } },
                        "required": ["key", "value"]
                    }
                }
            },
            "required": ["config"]
        }),
        _ => json!({
            "type": "object",
            "properties": {
                "query": { "type": "string" },
                "max_results": { "type": "integer" },
                "score": { "type": "number" },
                "verbose": { "type": "boolean" }
            },
            "required": ["query"]
        }),
    }
}

/// Arguments of a call of tool `t` that fit its `inputSchema` (`k` varies them),
/// in a form that both the service (an MCP call's JSON) and Cedar's schema-based
/// JSON reader accept: decimals, date-times and addresses as strings.
fn arguments(t: usize, k: usize) -> Value {
    match t % 10 {
        0 => {
            json!({ "query": format!("titan {k}"), "limit": 10 + k % 50, "include_archived": k.is_multiple_of(2) })
        }
        1 => json!({ "document_id": format!("reports/q{}-{k}", k % 4 + 1), "format": "text" }),
        2 => json!({ "amount": format!("{}.50", 100 + k), "currency": "EUR", "memo": "refund" }),
        3 => json!({
            "filter": {
                "owner": format!("u{k}"),
                "created_after": "2026-01-01T00:00:00Z",
                "labels": ["q1", "public"]
            },
            "page": k % 5
        }),
        4 => json!({ "ids": [k + 1, k + 2, k + 3], "dry_run": true }),
        5 => json!({ "host": "db.internal", "source": "10.1.2.3", "port": 5432 }),
        6 => {
            json!({ "issue_id": format!("OPS-{k}"), "status": "in_progress", "priority": 2, "assignees": ["u1"] })
        }
        7 => json!({}),
        8 => json!({
            "config": { "name": format!("team-{k}"), "limits": { "max": 100, "min": 1 } },
            "tags": [{ "key": "env", "value": "prod" }]
        }),
        _ => {
            json!({ "query": "titan strategy", "max_results": 20, "score": "0.5", "verbose": true })
        }
    }
}

/// A condition clause on tool `t`'s arguments for a permit (`true`) or a forbid (`false`).
fn argument_condition(t: usize, permit: bool) -> &'static str {
    match (t % 10, permit) {
        (0, true) => "unless { context.arguments has limit && context.arguments.limit > 100 }",
        (0, false) => "when { context.arguments has limit && context.arguments.limit > 500 }",
        (1, true) => {
            "unless { context.arguments has format && context.arguments.format == \"html\" }"
        }
        (1, false) => "when { context.arguments.document_id like \"secret/*\" }",
        (2, true) => "when { [\"USD\", \"EUR\"].contains(context.arguments.currency) }",
        (2, false) => "when { context.arguments.amount.greaterThan(decimal(\"10000.0\")) }",
        (3, true) => "when { context.arguments.filter.owner != \"\" }",
        (3, false) => {
            "when { context.arguments.filter has labels && context.arguments.filter.labels.contains(\"restricted\") }"
        }
        (4, true) => "unless { context.arguments.ids.isEmpty() }",
        (4, false) => "when { context.arguments.ids.containsAny([0, -1]) }",
        (5, true) => "unless { context.arguments has port && context.arguments.port < 1024 }",
        (5, false) => {
            "when { context.arguments has source && context.arguments.source.isLoopback() }"
        }
        (6, true) => "unless { context.arguments has priority && context.arguments.priority < 1 }",
        (6, false) => {
            "when { context.arguments.status == \"closed\" && context.arguments has assignees && context.arguments.assignees.isEmpty() }"
        }
        (7, true) => "when { context has user }",
        (7, false) => {
            "when { context has request && context.request has source_ip && !context.request.source_ip.isInRange(ip(\"10.0.0.0/8\")) }"
        }
        (8, true) => "when { context.arguments.config.name like \"team-*\" }",
        (8, false) => "when { context.arguments.config.limits.max > 1000 }",
        (_, true) => {
            "unless { context.arguments has score && context.arguments.score.greaterThan(decimal(\"0.9\")) }"
        }
        (_, false) => {
            "when { context.arguments has max_results && context.arguments.max_results > 50 }"
        }
    }
}

/// A server's `tools/list` result.
fn tools_list(s: usize) -> String {
    let tools: Vec<Value> = (0..TOOLS_PER_SERVER)
        .map(|t| {
            let mut tool = json!({
                "name": tool_name(t),
                "description": format!("{} tool {t} of {}", SHAPES[t % 10], SERVERS[s]),
                "inputSchema": input_schema(t),
            });
            if t.is_multiple_of(3) {
                tool["annotations"] =
                    json!({ "readOnlyHint": t.is_multiple_of(2), "destructiveHint": t % 6 == 3 });
            }
            tool
        })
        .collect();
    serde_json::to_string_pretty(&json!({ "tools": tools })).expect("json")
}

fn entity(ty: &str, id: &str, parents: &[(&str, String)]) -> Value {
    json!({
        "uid": { "type": format!("Mcp::{ty}"), "id": id },
        "attrs": {},
        "parents": parents.iter().map(|(t, i)| json!({ "type": format!("Mcp::{t}"), "id": i })).collect::<Vec<_>>(),
    })
}

/// The groups of user `k`: one or two of the ten; every tenth also a contractor.
fn user_groups(k: usize) -> Vec<String> {
    let mut groups = vec![format!("g{}", k % GROUPS)];
    if k % 3 == 1 {
        groups.push(format!("g{}", (k / GROUPS + 1) % GROUPS));
    }
    if k % 10 == 7 {
        groups.push("contractors".into());
    }
    groups
}

/// The 100 policies of server `s`.
fn server_policies(s: usize) -> (String, usize) {
    let server = SERVERS[s];
    let mut out = String::new();
    let mut n = 0;
    let mut policy = |text: String| {
        n += 1;
        let _ = writeln!(out, "{text}\n");
    };
    // Server-wide grants to groups, through approved applications.
    for j in 0..3 {
        let g = (s + j) % GROUPS;
        policy(format!(
            "@id(\"{server}-g{g}-use\")\npermit (\n  principal in Mcp::Group::\"g{g}\",\n  action in Mcp::Action::\"tools/call\",\n  resource in Mcp::Server::\"{server}\"\n)\nwhen {{ context has application && context.application in Mcp::Group::\"approved-apps\" }};"
        ));
    }
    // Server-wide grants to applications.
    policy(format!(
        "@id(\"{server}-approved-apps\")\npermit (\n  principal in Mcp::Group::\"approved-apps\",\n  action in Mcp::Action::\"tools/call\",\n  resource in Mcp::Server::\"{server}\"\n);"
    ));
    policy(format!(
        "@id(\"{server}-agent{a}-for-users\")\npermit (\n  principal == Mcp::Application::\"agent{a}\",\n  action in [Mcp::Action::\"tools/call\"],\n  resource in Mcp::Server::\"{server}\"\n)\nwhen {{ context has user }};",
        a = APPROVED_APPS + s % (APPS - APPROVED_APPS)
    ));
    // Contractors never use destructive tools.
    policy(format!(
        "@id(\"{server}-contractors-not-destructive\")\nforbid (\n  principal in Mcp::Group::\"contractors\",\n  action in Mcp::Action::\"tools/call\",\n  resource in Mcp::Server::\"{server}\"\n)\nwhen {{ resource has destructive && resource.destructive }};"
    ));
    // Per-tool grants with argument conditions.
    for t in 0..60 {
        let g = (t + s) % GROUPS;
        policy(format!(
            "@id(\"{server}-{tool}-g{g}\")\npermit (\n  principal in Mcp::Group::\"g{g}\",\n  action == Mcp::Action::\"tools/call/{server}/{tool}\",\n  resource\n)\n{cond};",
            tool = tool_name(t),
            cond = argument_condition(t, true)
        ));
    }
    // Guardrails on arguments: 20 on one tool, 10 on two tools of the same shape.
    for t in 0..20 {
        policy(format!(
            "@id(\"{server}-{tool}-guardrail\")\nforbid (\n  principal,\n  action == Mcp::Action::\"tools/call/{server}/{tool}\",\n  resource\n)\n{cond};",
            tool = tool_name(t),
            cond = argument_condition(t, false)
        ));
    }
    for t in 20..30 {
        let other = t + 50;
        policy(format!(
            "@id(\"{server}-{tool}-{other_tool}-guardrail\")\nforbid (\n  principal,\n  action in [\n    Mcp::Action::\"tools/call/{server}/{tool}\",\n    Mcp::Action::\"tools/call/{server}/{other_tool}\"\n  ],\n  resource\n)\n{cond};",
            tool = tool_name(t),
            other_tool = tool_name(other),
            cond = argument_condition(t, false)
        ));
    }
    // Tools contractors may not use at all.
    for t in 90..94 {
        policy(format!(
            "@id(\"{server}-{tool}-no-contractors\")\nforbid (\n  principal in Mcp::Group::\"contractors\",\n  action in Mcp::Action::\"tools/call\",\n  resource == Mcp::Tool::\"{server}/{tool}\"\n);",
            tool = tool_name(t)
        ));
    }
    (out, n)
}

/// Write the policy directory; returns how many policies it holds.
fn generate(dir: &Path) -> usize {
    let reference = root().join("policies");
    let base_text = std::fs::read_to_string(reference.join("mcp.cedarschema")).expect("schema");
    std::fs::write(dir.join("mcp.cedarschema"), &base_text).expect("write schema");
    let base = Base::from_cedarschema(&base_text).expect("base schema");

    // Import each server's tools as `mcp-authz schema import` does.
    std::fs::create_dir_all(dir.join("tools")).expect("tools dir");
    for (s, server) in SERVERS.iter().enumerate() {
        let list = tools_list(s);
        let tools = import::read_tools(&list).expect("tools/list");
        let (declared, notes) = import::declare(&tools, &[]);
        assert!(notes.is_empty(), "every shape is typed: {notes:?}");
        let from = Provenance {
            server: (*server).to_owned(),
            tools_file: format!("bench/{server}-tools.json"),
            prompts_file: None,
            live: false,
        };
        let fragment = import::render_fragment(&from, &tools, &[], &declared, &notes, &base)
            .expect("fragment");
        let entities = import::render_entities(server, &tools, &[], &base);
        std::fs::write(
            dir.join("tools").join(format!("{server}.cedarschema")),
            fragment,
        )
        .expect("write fragment");
        std::fs::write(
            dir.join("tools").join(format!("{server}.entities.json")),
            entities,
        )
        .expect("write entities");
    }

    let text = std::fs::read_to_string(reference.join("entities.json")).expect("entities");
    let mut entities: Vec<Value> = serde_json::from_str(&text).expect("entities json");
    for g in 0..GROUPS {
        entities.push(entity(
            "Group",
            &format!("g{g}"),
            &[("Group", "employees".into())],
        ));
    }
    for k in 0..USERS {
        let parents: Vec<_> = user_groups(k).into_iter().map(|g| ("Group", g)).collect();
        entities.push(entity("User", &format!("u{k}"), &parents));
    }
    for a in 0..APPS {
        let parents: Vec<_> = (a < APPROVED_APPS)
            .then(|| ("Group", "approved-apps".to_owned()))
            .into_iter()
            .collect();
        entities.push(entity("Application", &format!("agent{a}"), &parents));
    }
    for server in SERVERS {
        entities.push(entity("Server", server, &[]));
    }
    std::fs::write(
        dir.join("entities.json"),
        serde_json::to_string_pretty(&entities).expect("json"),
    )
    .expect("write entities");

    let mut policies = 0;
    for (s, server) in SERVERS.iter().enumerate() {
        let (text, n) = server_policies(s);
        std::fs::write(dir.join(format!("{server}.cedar")), text).expect("write policies");
        policies += n;
    }
    policies
}

/// A typed `tools/call` of tool `t` of server `s` by user `u` through application `a`.
fn call(s: usize, t: usize, u: usize, a: usize, k: usize) -> DecisionRequest {
    let server = SERVERS[s];
    let mut r = DecisionRequest::new(
        action("tools/call"),
        Kind::Tool.uid(&format!("{server}/{}", tool_name(t))),
    );
    r.user = Some(Kind::User.uid(&format!("u{u}")));
    r.application = Some(Kind::Application.uid(&format!("agent{a}")));
    r.server = Some(Kind::Server.uid(server));
    r.context.insert("arguments".into(), arguments(t, k));
    r
}

/// The measured request: `payments/query_019` (a per-tool permit for group g9 with a
/// decimal condition, a guardrail on `max_results`, server-wide grants) by u9 (g9)
/// through agent0 (approved): allowed.
fn the_request() -> DecisionRequest {
    call(0, 19, 9, 0, 0)
}

/// 64 typed calls of different servers, tools and shapes, by different users and
/// applications.
fn cycling_requests() -> Vec<DecisionRequest> {
    (0..REQUESTS)
        .map(|k| {
            let s = k % SERVERS.len();
            let t = (k * 37 + 11) % TOOLS_PER_SERVER;
            call(s, t, (k * 13) % USERS, k % APPS, k)
        })
        .collect()
}

/// Raw Cedar's requests for `request`: the tool action, the same typed context
/// (read by Cedar's own schema-based JSON reader), one per principal.
fn raw_requests(snapshot: &Snapshot, request: &DecisionRequest) -> Vec<Request> {
    let tool = request.resource.id().unescaped().to_owned();
    let typed: EntityUid = action(&format!("tools/call/{tool}"));
    let uid = |u: &Option<EntityUid>| {
        let u = u.as_ref().expect("principal");
        json!({ "__entity": { "type": u.type_name().to_string(), "id": u.id().unescaped() } })
    };
    let context = Context::from_json_value(
        json!({
            "arguments": request.context["arguments"],
            "application": uid(&request.application),
            "user": uid(&request.user),
            "server": uid(&request.server),
        }),
        Some((&snapshot.schema, &typed)),
    )
    .expect("typed context");
    [request.user.clone(), request.application.clone()]
        .into_iter()
        .flatten()
        .map(|p| {
            Request::new(
                p,
                typed.clone(),
                request.resource.clone(),
                context.clone(),
                Some(&snapshot.schema),
            )
            .expect("typed request")
        })
        .collect()
}

/// The median of three timings of `f`.
fn median_of_3<T>(mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..3)
        .map(|_| {
            let started = Instant::now();
            black_box(f());
            started.elapsed()
        })
        .collect();
    times.sort();
    times[1]
}

/// The schema of the base and the first `servers` fragments of `sources`.
fn schema_of(sources: &mcp_authz::policy::Sources, servers: usize) -> Schema {
    let fragments = std::iter::once(&sources.schema)
        .chain(sources.fragments.iter().take(servers))
        .map(|(_, text)| {
            SchemaFragment::from_cedarschema_str(text)
                .expect("fragment")
                .0
        });
    Schema::from_schema_fragments(fragments).expect("schema")
}

/// Where a snapshot build's time goes (`TYPED_BENCH_BREAKDOWN=1`): its parts, done
/// with Cedar's API the way `policy::build` does them, each the median of three runs;
/// and how strict validation of a policy scoped `action in Mcp::Action::"tools/call"`
/// grows with the number of tool actions.
fn breakdown(dir: &Path) {
    let sources = read_sources(dir).expect("sources");
    eprintln!("breakdown (median of 3):");
    let t = median_of_3(|| read_sources(dir).expect("sources"));
    eprintln!("  read_sources: {t:?}");
    let t = median_of_3(|| schema_of(&sources, SERVERS.len()));
    eprintln!("  schema: base + 10 fragments parsed, Schema::from_schema_fragments: {t:?}");
    let schema = schema_of(&sources, SERVERS.len());
    // The policies, split by what their action scope names.
    let mut groups = PolicySet::new();
    let mut per_tool = PolicySet::new();
    for (_, text) in &sources.policies {
        let set: PolicySet = text.parse().expect("parses");
        for p in set.policies() {
            let by_group = match p.action_constraint() {
                ActionConstraint::In(actions) => actions.contains(&action("tools/call")),
                _ => false,
            };
            let target = if by_group { &mut groups } else { &mut per_tool };
            // Cedar numbers each file's policies from `policy0`: the `@id`s are unique.
            let id = PolicyId::new(p.annotation("id").expect("@id"));
            target.add(p.new_id(id)).expect("unique ids");
        }
    }
    let t = median_of_3(|| {
        for (_, text) in &sources.policies {
            black_box(text.parse::<PolicySet>().expect("parses"));
        }
    });
    eprintln!("  parse the 10 policy files: {t:?}");
    let validator = Validator::new(schema.clone());
    let t = median_of_3(|| validator.validate(&groups, ValidationMode::Strict));
    eprintln!(
        "  strict validation of the {} policies scoped `action in Mcp::Action::\"tools/call\"`: {t:?} ({:?} each)",
        groups.policies().count(),
        t / u32::try_from(groups.policies().count()).expect("count")
    );
    let t = median_of_3(|| validator.validate(&per_tool, ValidationMode::Strict));
    eprintln!(
        "  strict validation of the {} per-tool policies (`action ==` / `in [..]` tool actions): {t:?} ({:?} each)",
        per_tool.policies().count(),
        t / u32::try_from(per_tool.policies().count()).expect("count")
    );
    let entity_json = || -> Value {
        Value::Array(
            sources
                .entities
                .iter()
                .chain(&sources.entity_fragments)
                .flat_map(|(_, text)| {
                    serde_json::from_str::<Vec<Value>>(text).expect("entity json")
                })
                .collect(),
        )
    };
    let t =
        median_of_3(|| Entities::from_json_value(entity_json(), Some(&schema)).expect("entities"));
    eprintln!("  entity data (11 files) read and validated against the schema: {t:?}");
    let t = median_of_3(|| build(&sources, 1).expect("builds"));
    eprintln!("  the whole build (policy::build): {t:?}");
    // The same `action in` policies of one server against 100, 300 and 1,000 tool
    // actions (the base schema and the first 1, 3, 10 fragments).
    let first: PolicySet = {
        let mut set = PolicySet::new();
        for p in groups
            .policies()
            .filter(|p| p.id().to_string().starts_with("payments-"))
        {
            set.add(p.clone()).expect("unique ids");
        }
        set
    };
    let n = u32::try_from(first.policies().count()).expect("count");
    for servers in [1, 3, 10] {
        let validator = Validator::new(schema_of(&sources, servers));
        let t = median_of_3(|| validator.validate(&first, ValidationMode::Strict));
        eprintln!(
            "  {} tool actions: one `action in Mcp::Action::\"tools/call\"` policy validates in {:?}",
            servers * TOOLS_PER_SERVER,
            t / n
        );
    }
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    eprintln!("{what}: {:?}", started.elapsed());
    out
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    let (dir, _temp) = match std::env::var_os("TYPED_BENCH_DIR") {
        Some(d) => {
            let dir = PathBuf::from(d);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("bench dir");
            (dir, None)
        }
        None => {
            let temp = tempfile::tempdir().expect("tempdir");
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let policies = timed(
        "generate (import of 10 × 100 tools, 1,000 policies)",
        || generate(&dir),
    );
    let snapshot = timed("first load", || {
        Snapshot::load_with(&dir, 1, LoadOptions::default()).unwrap_or_else(|p| {
            panic!(
                "generated directory does not load: {}",
                p.one_line_each().join("\n")
            )
        })
    });
    assert_eq!(snapshot.policy_count(), policies);
    assert!(
        snapshot.warnings.0.is_empty(),
        "no warnings: {}",
        snapshot.warnings.one_line_each().join("\n")
    );
    let stats = snapshot.index.stats();
    eprintln!(
        "typed mesh: {} policies ({} indexed), {} tool actions, {} entities, dir {}",
        snapshot.policy_count(),
        stats.indexed,
        snapshot.tool_actions.len(),
        snapshot.entities.len(),
        dir.display()
    );

    if std::env::var_os("TYPED_BENCH_BREAKDOWN").is_some() {
        breakdown(&dir);
    }

    // Snapshot builds.
    {
        let mut group = c.benchmark_group("typed");
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(10));
        group.bench_function("snapshot_load", |b| {
            b.iter_with_large_drop(|| {
                Snapshot::load_with(&dir, 1, LoadOptions::default()).expect("loads")
            })
        });
        group.bench_function("store_open", |b| {
            b.iter_with_large_drop(|| {
                PolicyStore::open_with(&dir, LoadOptions::default()).expect("opens")
            })
        });
        let sources = read_sources(&dir).expect("sources");
        group.bench_function("snapshot_build", |b| {
            b.iter_with_large_drop(|| build(&sources, 1).expect("builds"))
        });
        group.finish();
    }

    // One typed call, decided and raw.
    let req = the_request();
    let decision = decide(&snapshot, &req);
    assert!(decision.allow, "{decision:?}");
    assert_eq!(
        decision.evaluations[0].action.as_deref(),
        Some("Mcp::Action::\"tools/call/payments/query_019\"")
    );
    let authorizer = Authorizer::new();
    let raw = raw_requests(&snapshot, &req);
    for r in &raw {
        let response = authorizer.is_authorized(r, &snapshot.policies, &snapshot.entities);
        assert_eq!(response.decision(), cedar_policy::Decision::Allow);
        assert!(response.diagnostics().errors().next().is_none());
    }
    let requests = cycling_requests();
    let raws: Vec<Vec<Request>> = requests
        .iter()
        .map(|r| raw_requests(&snapshot, r))
        .collect();
    let mut allowed = 0;
    for (r, raw) in requests.iter().zip(&raws) {
        let d = decide(&snapshot, r);
        assert!(
            d.evaluations.iter().all(|e| e.errors.is_empty()),
            "{r:?}: {d:?}"
        );
        let cedar_allow = raw.iter().all(|q| {
            authorizer
                .is_authorized(q, &snapshot.policies, &snapshot.entities)
                .decision()
                == cedar_policy::Decision::Allow
        });
        assert_eq!(d.allow, cedar_allow, "{r:?}");
        allowed += usize::from(d.allow);
    }
    eprintln!("cycling requests: {allowed} of {REQUESTS} allowed");
    {
        let mut group = c.benchmark_group("typed");
        group.sample_size(50);
        group.bench_function("raw_cedar_is_authorized_x2", |b| {
            b.iter(|| {
                for r in &raw {
                    black_box(authorizer.is_authorized(r, &snapshot.policies, &snapshot.entities));
                }
            })
        });
        group.bench_function("context_build", |b| {
            let typed = DecisionRequest {
                action: action("tools/call/payments/query_019"),
                ..req.clone()
            };
            b.iter(|| black_box(build_context(&snapshot, black_box(&typed))))
        });
        group.bench_function("decision_cache_miss", |b| {
            b.iter(|| black_box(decide(&snapshot, black_box(&req))))
        });
        group.bench_function("raw_cedar_is_authorized_x2_cycling", |b| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % raws.len();
                for r in &raws[k] {
                    black_box(authorizer.is_authorized(r, &snapshot.policies, &snapshot.entities));
                }
            })
        });
        group.bench_function("decision_cache_miss_cycling", |b| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % requests.len();
                black_box(decide(&snapshot, black_box(&requests[k])))
            })
        });
        group.finish();
    }

    // Lists.
    let identity = Identity {
        user: Some("u9".into()),
        application: Some("agent0".into()),
        ..Identity::default()
    };
    let extra = serde_json::Map::new();
    let kind = ListKind::of("tools/list").expect("tools/list");
    let one = request_for(
        &kind.use_call(&tool_name(19)).expect("use call"),
        SERVERS[0],
        &identity,
        &extra,
    );
    assert!(listed(&snapshot, &one, Rules::default()));
    let list_json = tools_list(0);
    let store = Arc::new(PolicyStore::from_snapshot(
        Snapshot::load(&dir, 1).expect("loads"),
    ));
    let engine = Engine::new(store);
    let filter = |bytes: &[u8]| -> Vec<u8> {
        let snapshot = engine.snapshot();
        let result = read_list_result(bytes, kind).expect("list");
        let allowed: Vec<bool> = result
            .names()
            .iter()
            .map(|name| {
                kind.use_call(name).is_some_and(|call| {
                    engine.listed(
                        &snapshot,
                        &request_for(&call, SERVERS[0], &identity, &extra),
                    )
                })
            })
            .collect();
        result.filtered(kind, &allowed)
    };
    let filtered: Value = serde_json::from_slice(&filter(list_json.as_bytes())).expect("json");
    let shown = filtered["tools"].as_array().map_or(0, Vec::len);
    eprintln!("filter list: {shown} of {TOOLS_PER_SERVER} tools shown for u9 through agent0");
    {
        let mut group = c.benchmark_group("typed");
        group.sample_size(20);
        group.bench_function("listed_one_tool", |b| {
            b.iter(|| black_box(listed(&snapshot, black_box(&one), Rules::default())))
        });
        group.throughput(Throughput::Elements(TOOLS_PER_SERVER as u64));
        group.bench_function("filter_list_100_tools", |b| {
            b.iter(|| black_box(filter(black_box(list_json.as_bytes()))))
        });
        group.finish();
    }
    c.final_summary();
}
