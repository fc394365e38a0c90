//! Differential test of the policy index: for generated policy sets and random
//! requests, `decide` (indexed) and `decide_unindexed` (every policy evaluated)
//! give the same decision, determining policies and errors, in the same order.
//!
//! The policy sets mix `==`/`in`/`is`/`is ... in` scopes on principal and
//! resource, `==`/`in [...]`/action groups on action, forbids, `when`/`unless`
//! conditions (some of which overflow at run time), deep group hierarchies,
//! unconstrained policies, templates and template-linked policies. Requests come
//! from users and applications with and without per-request groups, unknown
//! principals, known and synthesized tools, wrong resource types, action groups
//! and unknown actions. A seeded generator keeps every run the same.
//!
//! `decide` also evaluates a request that brings entity data (token groups,
//! attributes, unlisted tools) with a slice of the entity data, `decide_unindexed`
//! with all of it; so entities refer to entities in their attributes (managers,
//! owners, leads, chains of them, dangling ones), the context carries entity
//! references, and conditions read attributes of entity literals and of entities
//! reached through attributes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{EntityUid, PolicyId, PolicySet, SlotId, ValidationMode, Validator};
use mcp_authz::authz::{DecisionRequest, RequestEntity, decide, decide_unindexed};
use mcp_authz::mcp::{Kind, action};
use mcp_authz::policy::{IndexOptions, PolicyIndex, Snapshot};
use serde_json::{Map, json};

/// SplitMix64: small, seeded, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const SCHEMA: &str = r#"
namespace Mcp {
  entity Group in [Group] { lead?: User };
  entity User in [Group] { department?: String, manager?: User };
  entity Application in [Group] { owner?: String };
  entity Server { environment?: String };
  entity Tool in [Server] { destructive?: Bool, owner?: Group };
  entity Resource in [Server] { classification?: String };
  entity Prompt in [Server];

  type Args = { n?: Long, path?: String };
  type Ctx = {
    application?: Application, user?: User, server?: Server,
    scopes?: Set<String>, arguments?: Args, delegate?: User,
  };

  action "any";
  action "use" in ["any"];
  action "read" in ["use"];
  action "write" in ["use"];
  action "housekeeping" in ["any"];
  action "tools/call" in ["read", "write"]
    appliesTo { principal: [User, Application], resource: Tool, context: Ctx };
  action "resources/read", "resources/subscribe" in ["read"]
    appliesTo { principal: [User, Application], resource: Resource, context: Ctx };
  action "prompts/get" in ["read"]
    appliesTo { principal: [User, Application], resource: Prompt, context: Ctx };
  action "completion/complete"
    appliesTo { principal: [User, Application], resource: [Prompt, Resource], context: Ctx };
  action "tools/list", "ping", "initialize" in ["housekeeping"]
    appliesTo { principal: [User, Application], resource: Server, context: Ctx };
  action "logging/setLevel"
    appliesTo { principal: [User, Application], resource: Server, context: Ctx };
}
"#;

/// Actions a request may name: applicable ones, action groups (which no request
/// may use: the request does not fit the schema) and an unknown one.
const REQUEST_ACTIONS: &[&str] = &[
    "tools/call",
    "tools/call",
    "tools/call",
    "resources/read",
    "resources/subscribe",
    "prompts/get",
    "completion/complete",
    "tools/list",
    "ping",
    "initialize",
    "logging/setLevel",
    "read",
    "nope/unknown",
];
/// Actions and action groups a policy may name.
const POLICY_ACTIONS: &[&str] = &[
    "tools/call",
    "resources/read",
    "resources/subscribe",
    "prompts/get",
    "completion/complete",
    "tools/list",
    "ping",
    "initialize",
    "logging/setLevel",
    "any",
    "use",
    "read",
    "write",
    "housekeeping",
];

const GROUPS: usize = 12;
const USERS: usize = 14;
const APPS: usize = 6;
const DELEGATES: usize = 6;
const SERVERS: usize = 3;
const PER_SERVER: usize = 5;

fn uid(kind: &str, id: &str) -> String {
    format!("Mcp::{kind}::\"{id}\"")
}

/// The world: entity data with a deep, random group hierarchy.
fn entities_json(rng: &mut Rng) -> String {
    let mut out = Vec::new();
    let ent = |ty: &str, id: &str, attrs: serde_json::Value, parents: Vec<(&str, String)>| {
        json!({
            "uid": { "type": format!("Mcp::{ty}"), "id": id },
            "attrs": attrs,
            "parents": parents.into_iter().map(|(t, i)| json!({ "type": format!("Mcp::{t}"), "id": i })).collect::<Vec<_>>(),
        })
    };
    for g in 0..GROUPS {
        // A chain-like hierarchy: each group under one or two earlier ones.
        let mut parents = Vec::new();
        if g > 0 {
            parents.push(("Group", format!("g{}", g - 1 - rng.below(g.min(2)))));
            if rng.chance(25) {
                parents.push(("Group", format!("g{}", rng.below(g))));
            }
        }
        let attrs = if rng.chance(30) {
            json!({ "lead": { "__entity": { "type": "Mcp::User", "id": format!("u{}", rng.below(USERS + 1)) } } })
        } else {
            json!({})
        };
        out.push(ent("Group", &format!("g{g}"), attrs, parents));
    }
    for u in 0..USERS {
        let parents = (0..rng.below(4))
            .map(|_| ("Group", format!("g{}", rng.below(GROUPS))))
            .collect();
        let mut attrs = if rng.chance(50) {
            json!({ "department": rng.pick(&["eng", "finance"]) })
        } else {
            json!({})
        };
        if rng.chance(50) {
            // Managers form chains; u14 does not exist (a dangling reference).
            attrs["manager"] = json!({ "__entity": { "type": "Mcp::User", "id": format!("u{}", rng.below(USERS + 1)) } });
        }
        out.push(ent("User", &format!("u{u}"), attrs, parents));
    }
    // Users no policy names: reached only through a request's context.
    for d in 0..DELEGATES {
        let manager =
            json!({ "__entity": { "type": "Mcp::User", "id": format!("u{}", rng.below(USERS)) } });
        out.push(ent(
            "User",
            &format!("d{d}"),
            json!({ "manager": manager }),
            vec![],
        ));
    }
    for a in 0..APPS {
        let parents = (0..rng.below(3))
            .map(|_| ("Group", format!("g{}", rng.below(GROUPS))))
            .collect();
        out.push(ent("Application", &format!("a{a}"), json!({}), parents));
    }
    for s in 0..SERVERS {
        out.push(ent("Server", &format!("s{s}"), json!({}), vec![]));
        for i in 0..PER_SERVER {
            let mut attrs = if rng.chance(50) {
                json!({ "destructive": rng.chance(50) })
            } else {
                json!({})
            };
            if rng.chance(40) {
                attrs["owner"] = json!({ "__entity": { "type": "Mcp::Group", "id": format!("g{}", rng.below(GROUPS + 1)) } });
            }
            out.push(ent(
                "Tool",
                &format!("s{s}/t{i}"),
                attrs,
                vec![("Server", format!("s{s}"))],
            ));
        }
        out.push(ent(
            "Resource",
            &format!("s{s}/r0"),
            json!({ "classification": "finance" }),
            vec![("Server", format!("s{s}"))],
        ));
        out.push(ent(
            "Prompt",
            &format!("s{s}/p0"),
            json!({}),
            vec![("Server", format!("s{s}"))],
        ));
    }
    // Dangling memberships are fine for Cedar; dedup keeps the JSON tidy.
    for e in &mut out {
        if let Some(ps) = e.get_mut("parents").and_then(|p| p.as_array_mut()) {
            ps.dedup();
        }
    }
    serde_json::to_string_pretty(&out).expect("json")
}

fn any_group(rng: &mut Rng) -> String {
    uid("Group", &format!("g{}", rng.below(GROUPS + 1))) // g12 does not exist
}

fn principal_scope(rng: &mut Rng) -> String {
    match rng.below(11) {
        0 | 1 => "principal".into(),
        2 => format!(
            "principal == {}",
            uid("User", &format!("u{}", rng.below(USERS + 2)))
        ),
        3 => format!(
            "principal == {}",
            uid("Application", &format!("a{}", rng.below(APPS + 1)))
        ),
        4 | 5 => format!("principal in {}", any_group(rng)),
        6 => format!(
            "principal in {}",
            uid("User", &format!("u{}", rng.below(USERS)))
        ),
        7 => format!("principal is Mcp::{}", rng.pick(&["User", "Application"])),
        8 | 9 => format!(
            "principal is Mcp::{} in {}",
            rng.pick(&["User", "Application"]),
            any_group(rng)
        ),
        _ => format!("principal in {}", uid("Server", "s0")),
    }
}

fn action_scope(rng: &mut Rng) -> String {
    let a = |rng: &mut Rng| uid("Action", rng.pick(POLICY_ACTIONS));
    match rng.below(6) {
        0 => "action".into(),
        1 | 2 => format!(
            "action == {}",
            uid("Action", rng.pick(&POLICY_ACTIONS[..9]))
        ),
        3 => format!("action in {}", a(rng)),
        _ => {
            let n = 1 + rng.below(3);
            let list: Vec<String> = (0..n).map(|_| a(rng)).collect();
            format!("action in [{}]", list.join(", "))
        }
    }
}

fn resource_entity(rng: &mut Rng) -> String {
    let s = rng.below(SERVERS);
    match rng.below(5) {
        0 | 1 => uid("Tool", &format!("s{s}/t{}", rng.below(PER_SERVER + 1))),
        2 => uid("Resource", &format!("s{s}/r0")),
        3 => uid("Prompt", &format!("s{s}/p0")),
        _ => uid("Server", &format!("s{s}")),
    }
}

fn resource_scope(rng: &mut Rng) -> String {
    let ty = |rng: &mut Rng| rng.pick(&["Tool", "Resource", "Prompt", "Server"]);
    match rng.below(9) {
        0 | 1 => "resource".into(),
        2 | 3 => format!("resource == {}", resource_entity(rng)),
        4 | 5 => format!("resource in {}", resource_entity(rng)),
        6 => format!("resource is Mcp::{}", ty(rng)),
        _ => format!(
            "resource is Mcp::{} in {}",
            ty(rng),
            uid("Server", &format!("s{}", rng.below(SERVERS)))
        ),
    }
}

fn conditions(rng: &mut Rng) -> String {
    let mut out = String::new();
    for _ in 0..rng.below(3) {
        let c = match rng.below(15) {
            // Overflows at run time for n >= 2 or n <= -3: an evaluation error.
            0 | 1 => "when { context has arguments && context.arguments has n && context.arguments.n * 4611686018427387904 > 1 }".to_owned(),
            2 => format!("unless {{ principal in {} }}", any_group(rng)),
            3 => "when { context has user }".to_owned(),
            4 => r#"when { context has scopes && context.scopes.contains("admin") }"#.to_owned(),
            5 => r#"when { principal has department && principal.department == "eng" }"#.to_owned(),
            6 => "when { resource has destructive && resource.destructive }".to_owned(),
            // Entities reached through attributes, context references and literals.
            7 => format!("when {{ principal has manager && principal.manager in {} }}", any_group(rng)),
            8 => r#"when { principal has manager && principal.manager has manager && principal.manager.manager has department && principal.manager.manager.department == "eng" }"#.to_owned(),
            9 => format!(
                r#"when {{ {u} has department && {u}.department == "finance" }}"#,
                u = uid("User", &format!("u{}", rng.below(USERS + 1)))
            ),
            10 => format!(
                "unless {{ {} in {} }}",
                uid("User", &format!("u{}", rng.below(USERS))),
                any_group(rng)
            ),
            11 => "when { resource has owner && principal in resource.owner }".to_owned(),
            12 => format!(
                "when {{ resource has owner && resource.owner has lead && resource.owner.lead has manager && resource.owner.lead.manager in {} }}",
                any_group(rng)
            ),
            13 => format!(
                "when {{ context has delegate && context.delegate has manager && context.delegate.manager in {} }}",
                any_group(rng)
            ),
            14 => format!(
                "when {{ {g} has lead && {g}.lead has department && {g}.lead.department == \"eng\" }}",
                g = any_group(rng)
            ),
            _ => format!("when {{ resource in {} }}", resource_entity(rng)),
        };
        out.push_str(&c);
        out.push('\n');
    }
    out
}

/// One policy file; each policy is validated on its own and dropped if the
/// validator rejects it (so the directory always loads).
fn policy_file(rng: &mut Rng, validator: &Validator, n: usize, file: usize) -> (String, usize) {
    let mut text = String::new();
    let mut kept = 0;
    for i in 0..n {
        let effect = if rng.chance(70) { "permit" } else { "forbid" };
        let policy = if rng.chance(6) {
            // A template: `?principal` and/or `?resource`.
            let p = if rng.chance(50) {
                "principal == ?principal"
            } else {
                "principal in ?principal"
            };
            let r = if rng.chance(50) {
                "resource in ?resource"
            } else {
                "resource"
            };
            format!(
                "{effect} ({p}, {}, {r})\n{};",
                action_scope(rng),
                conditions(rng)
            )
        } else {
            format!(
                "{effect} (\n  {},\n  {},\n  {}\n)\n{};",
                principal_scope(rng),
                action_scope(rng),
                resource_scope(rng),
                conditions(rng)
            )
        };
        let Ok(set) = PolicySet::from_str(&policy) else {
            panic!("generated policy does not parse: {policy}");
        };
        let result = validator.validate(&set, ValidationMode::Strict);
        if !result.validation_passed() {
            continue;
        }
        // The loader refuses a forbid the validator finds impossible (it guards nothing).
        if effect == "forbid"
            && result.validation_warnings().any(|w| {
                matches!(
                    w,
                    cedar_policy::ValidationWarning::ImpossiblePolicy(_)
                        | cedar_policy::ValidationWarning::InvalidActionApplication(_)
                )
            })
        {
            continue;
        }
        kept += 1;
        if rng.chance(50) {
            let _ = writeln!(text, "@id(\"f{file}-p{i}\")");
        }
        text.push_str(&policy);
        text.push_str("\n\n");
    }
    (text, kept)
}

/// Link some of the snapshot's templates, then rebuild its index.
fn link_templates(rng: &mut Rng, snapshot: &mut Snapshot, cache: bool) {
    let templates: Vec<(PolicyId, Vec<SlotId>)> = snapshot
        .policies
        .templates()
        .map(|t| (t.id().clone(), t.slots().cloned().collect()))
        .collect();
    for (n, (id, slots)) in templates.iter().enumerate() {
        for k in 0..rng.below(3) {
            let vals: HashMap<SlotId, EntityUid> = slots
                .iter()
                .map(|s| {
                    let v = if *s == SlotId::principal() {
                        if rng.chance(50) {
                            any_group(rng)
                        } else {
                            uid("User", &format!("u{}", rng.below(USERS)))
                        }
                    } else {
                        resource_entity(rng)
                    };
                    (s.clone(), EntityUid::from_str(&v).expect("uid"))
                })
                .collect();
            snapshot
                .policies
                .link(id.clone(), PolicyId::new(format!("link-{n}-{k}")), vals)
                .expect("link");
        }
    }
    reindex(snapshot, cache);
}

/// Rebuild the snapshot's index so that every request is evaluated on its
/// candidates alone (by default a request matching most policies evaluates them all).
fn reindex(snapshot: &mut Snapshot, cache: bool) {
    snapshot.index = PolicyIndex::with_options(
        &snapshot.policies,
        IndexOptions {
            cache_policies: if cache { 4096 } else { 0 },
            whole_set_above_percent: 100,
        },
    );
}

fn principal(
    rng: &mut Rng,
    kind: Kind,
    prefix: &str,
    known: usize,
    r: &mut DecisionRequest,
) -> Option<EntityUid> {
    if rng.chance(20) {
        return None;
    }
    let id = format!("{prefix}{}", rng.below(known + 2)); // two unknown ones
    let u = kind.uid(&id);
    if rng.chance(35) {
        // Groups for this request only, as a token would give them.
        // Attributes from the token, used where the entity data has none.
        let mut attrs = Map::new();
        if rng.chance(40) {
            attrs.insert("department".into(), json!(rng.pick(&["eng", "finance"])));
        }
        if kind == Kind::User && rng.chance(40) {
            attrs.insert(
                "manager".into(),
                json!({ "__entity": { "type": "Mcp::User", "id": format!("u{}", rng.below(USERS + 1)) } }),
            );
        }
        r.entities.push(RequestEntity {
            uid: u.clone(),
            parents: (0..1 + rng.below(2))
                .map(|_| Kind::Group.uid(&format!("g{}", rng.below(GROUPS))))
                .collect(),
            attrs,
        });
    }
    Some(u)
}

fn random_request(rng: &mut Rng) -> DecisionRequest {
    let method = rng.pick(REQUEST_ACTIONS);
    let s = rng.below(SERVERS);
    let server = Kind::Server.uid(&format!("s{s}"));
    // Mostly the kind of resource the action applies to; sometimes another.
    let kind = if rng.chance(85) {
        match method {
            "tools/call" => Kind::Tool,
            "resources/read" | "resources/subscribe" => Kind::Resource,
            "prompts/get" => Kind::Prompt,
            "completion/complete" => rng.pick(&[Kind::Prompt, Kind::Resource]),
            _ => Kind::Server,
        }
    } else {
        rng.pick(&[Kind::Tool, Kind::Resource, Kind::Prompt, Kind::Server])
    };
    let resource = match kind {
        Kind::Server => server.clone(),
        // t5, r1, p1 are not in the entity data: synthesized under the server.
        Kind::Tool => kind.uid(&format!("s{s}/t{}", rng.below(PER_SERVER + 1))),
        _ => kind.uid(&format!(
            "s{s}/{}{}",
            if kind == Kind::Prompt { "p" } else { "r" },
            rng.below(2)
        )),
    };
    let mut r = DecisionRequest::new(action(method), resource.clone());
    r.server = (!rng.chance(10)).then_some(server);
    r.user = principal(rng, Kind::User, "u", USERS, &mut r);
    r.application = principal(rng, Kind::Application, "a", APPS, &mut r);
    if kind == Kind::Tool && rng.chance(10) {
        // A tool that also sits under another server, for this request.
        r.entities.push(RequestEntity {
            uid: resource,
            parents: vec![Kind::Server.uid(&format!("s{}", rng.below(SERVERS)))],
            attrs: Map::new(),
        });
    }
    if rng.chance(60) {
        let n: i64 = rng.below(9) as i64 - 4;
        let args = if rng.chance(5) {
            json!({ "n": "two" })
        } else {
            json!({ "n": n, "path": "/x" })
        };
        r.context.insert("arguments".into(), args);
    }
    if rng.chance(30) {
        r.context.insert("scopes".into(), json!(["admin", "read"]));
    }
    if rng.chance(30) {
        r.context.insert(
            "delegate".into(),
            json!({ "__entity": { "type": "Mcp::User", "id": format!("d{}", rng.below(DELEGATES + 1)) } }),
        );
    }
    r
}

#[derive(Default, Debug)]
struct Coverage {
    requests: usize,
    evaluations: usize,
    allows: usize,
    forbidden: usize,
    with_errors: usize,
    denied_before: usize,
    /// Candidates found, and policies in the set, summed over evaluations
    /// (ignoring per-request entity data).
    candidates: usize,
    policies: usize,
}

fn check(snapshot: &Snapshot, rng: &mut Rng, requests: usize, cov: &mut Coverage) {
    for _ in 0..requests {
        let r = random_request(rng);
        let indexed = decide(snapshot, &r);
        let whole = decide_unindexed(snapshot, &r);
        assert_eq!(indexed, whole, "indexed and unindexed differ for {r:#?}");
        cov.requests += 1;
        cov.evaluations += whole.evaluations.len();
        cov.allows += usize::from(whole.allow);
        cov.denied_before += usize::from(whole.evaluations.is_empty());
        for p in [&r.user, &r.application].into_iter().flatten() {
            cov.candidates += snapshot
                .index
                .candidates(p, &r.action, &r.resource, &snapshot.entities)
                .len();
            cov.policies += snapshot.index.len();
        }
        for e in &whole.evaluations {
            cov.with_errors += usize::from(!e.errors.is_empty());
            cov.forbidden += usize::from(!e.allow && !e.policies.is_empty());
        }
    }
}

#[test]
fn indexed_and_unindexed_decide_alike_on_generated_policy_sets() {
    let mut rng = Rng(0x5EED_1DE4);
    let (schema, _) = cedar_policy::Schema::from_cedarschema_str(SCHEMA).expect("schema");
    let validator = Validator::new(schema);
    let mut cov = Coverage::default();
    let mut generated = 0;
    for set in 0..10 {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("mcp.cedarschema"), SCHEMA).expect("schema");
        std::fs::write(dir.path().join("entities.json"), entities_json(&mut rng))
            .expect("entities");
        for file in 0..1 + rng.below(3) {
            let n = 10 + rng.below(30);
            let (text, kept) = policy_file(&mut rng, &validator, n, file);
            generated += kept;
            // A file of nothing but dropped policies would be an empty policy file.
            let text = if kept == 0 {
                "permit (principal, action, resource) when { false };".into()
            } else {
                text
            };
            std::fs::write(dir.path().join(format!("p{file}.cedar")), text).expect("policies");
        }
        let mut snapshot = match Snapshot::load(dir.path(), 1) {
            Ok(s) => s,
            Err(p) => panic!(
                "generated set {set} does not load: {}",
                p.one_line_each().join("\n")
            ),
        };
        reindex(&mut snapshot, set % 2 == 1);
        check(&snapshot, &mut rng, 150, &mut cov);
        link_templates(&mut rng, &mut snapshot, set % 2 == 0);
        check(&snapshot, &mut rng, 150, &mut cov);
    }
    eprintln!("{generated} policies kept; {cov:?}");
    // The cases that matter were met, many times.
    assert!(generated > 250, "{generated}");
    assert!(cov.allows > 100, "{cov:?}");
    assert!(cov.forbidden > 100, "{cov:?}");
    assert!(cov.with_errors > 50, "{cov:?}");
    assert!(cov.denied_before > 50, "{cov:?}");
}

#[test]
fn indexed_and_unindexed_decide_alike_on_the_reference_policies() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let snapshot = Snapshot::load(&dir, 1).expect("reference policies");
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let apps = ["corpassist", "summarizer", "ops-console", "unknown-app"];
    let tools = [
        "docs/search_documents",
        "docs/get_document",
        "docs/summarize_document",
        "docs/delete_document",
        "docs/brand_new",
        "projects/find_project",
        "projects/get_project_lead",
        "projects/list_issues",
        "projects/update_issue",
    ];
    let mut rng = Rng(42);
    let mut allows = 0;
    for _ in 0..600 {
        let tool = rng.pick(&tools);
        let (server, _) = tool.split_once('/').expect("server/tool");
        let mut r = if rng.chance(75) {
            DecisionRequest::new(action("tools/call"), Kind::Tool.uid(tool))
        } else {
            let m = rng.pick(&["tools/list", "ping", "initialize", "logging/setLevel"]);
            DecisionRequest::new(action(m), Kind::Server.uid(server))
        };
        r.server = Some(Kind::Server.uid(server));
        r.user = rng.chance(85).then(|| Kind::User.uid(rng.pick(&users)));
        r.application = rng
            .chance(90)
            .then(|| Kind::Application.uid(rng.pick(&apps)));
        if let Some(u) = &r.user
            && rng.chance(30)
        {
            r.entities.push(RequestEntity {
                uid: u.clone(),
                parents: vec![Kind::Group.uid(rng.pick(&[
                    "engineering",
                    "contractors",
                    "project-ops",
                    "doc-admins",
                ]))],
                attrs: Map::new(),
            });
        }
        if rng.chance(50) {
            r.context.insert(
                "arguments".into(),
                json!({ "max_results": rng.below(100), "document_id": rng.pick(&["finance/q1", "titan/q1"]) }),
            );
        }
        let indexed = decide(&snapshot, &r);
        assert_eq!(indexed, decide_unindexed(&snapshot, &r), "{r:#?}");
        allows += usize::from(indexed.allow);
    }
    assert!(allows > 100, "{allows}");
}
