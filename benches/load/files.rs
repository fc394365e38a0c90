//! `prepare`: the files every PDP runs on — mcp-authz's bench configuration (the
//! reference policies with the bench users added to the entity data, a token
//! issuer whose key is the test-only `tests/fixtures/identity/ed1.pem`, the trusted
//! caller secret), Cerbos' policies and configuration, cedar-agent's policies and
//! data — and the check that the workload's oracle agrees with mcp-authz's decision
//! core on the reference policies.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use mcp_authz::authz::{DecisionRequest, RequestEntity, decide};
use mcp_authz::mcp::{Kind, action};
use mcp_authz::policy::Snapshot;
use serde_json::{Value, json};

use crate::targets::{AUDIENCE, ISSUER, KID, signing_key_path};
use crate::workload::{Case, GROUPS, all_variants, group_of};

/// The trusted caller secret of the bench configuration (a test value).
pub const CALLER_TOKEN: &str = "bench-gateway-secret-0123456789abcdef";

/// Ports written into the Cerbos configuration.
#[derive(Debug, Clone, Copy)]
pub struct CerbosPorts {
    /// HTTP.
    pub http: u16,
    /// gRPC.
    pub grpc: u16,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn user_entity(user: u32) -> Value {
    json!({
        "uid": { "type": "Mcp::User", "id": format!("user-{user}") },
        "attrs": {},
        "parents": [{ "type": "Mcp::Group", "id": group_of(user) }],
    })
}

/// The reference entity data with `users` bench users added.
fn entities(users: u32) -> Result<Vec<Value>, String> {
    let path = repo().join("policies/entities.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut all: Vec<Value> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    all.extend((0..users).map(user_entity));
    Ok(all)
}

/// Write everything under `out`.
pub fn prepare(out: &Path, users: u32, cerbos: CerbosPorts) -> Result<(), String> {
    let out = std::path::absolute(out).map_err(|e| e.to_string())?;
    let authz = out.join("mcp-authz");
    let policies = authz.join("policies");
    let _ = std::fs::remove_dir_all(&policies);
    std::fs::create_dir_all(&policies).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(repo().join("policies")).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".cedar") || name.ends_with(".cedarschema") {
            std::fs::copy(entry.path(), policies.join(&*name)).map_err(|e| e.to_string())?;
        }
    }
    // The imported servers' typed tools (`tools/<server>.cedarschema` and entity data):
    // the reference policies name their tool actions.
    let tools = repo().join("policies/tools");
    if tools.is_dir() {
        std::fs::create_dir_all(policies.join("tools")).map_err(|e| e.to_string())?;
        for entry in std::fs::read_dir(&tools).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            std::fs::copy(entry.path(), policies.join("tools").join(entry.file_name()))
                .map_err(|e| e.to_string())?;
        }
    }
    let all = entities(users)?;
    write(
        &policies.join("entities.json"),
        &serde_json::to_string(&all).map_err(|e| e.to_string())?,
    )?;
    write_identity(&authz)?;
    write(
        &authz.join("mcp-authz.toml"),
        &format!(
            r#"# Written by `cargo bench --bench load -- prepare`: the reference policies with
# {users} bench users in the entity data, a test-only token issuer, the gateway's
# trusted caller secret, no decision log (the peers run without audit logs too).
policies = "policies"

[log]
level = "warn"

[reload]
poll_interval_secs = 0

[[issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_file = "jwks.json"
algorithms = ["EdDSA"]
user_claim = "sub"
application_claims = ["azp", "client_id"]
groups_claim = "groups"

[jwt]
# one token per bench user must stay cached
token_cache_size = {cache}

[grpc]
trusted_caller_token_file = "caller.token"

[decision_log]
enabled = false
"#,
            cache = (u64::from(users) * 2).max(10_000),
        ),
    )?;
    write_cerbos(&out.join("cerbos"), cerbos)?;
    write_cedar_agent(&out.join("cedar-agent"), &all)?;
    check_oracle(&policies)?;
    eprintln!(
        "prepared {} ({users} bench users); the oracle agrees with mcp-authz on {} cases",
        out.display(),
        all_variants().len()
    );
    Ok(())
}

fn write_identity(dir: &Path) -> Result<(), String> {
    let path = signing_key_path();
    let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = EncodingKey::from_ed_pem(&pem).map_err(|e| e.to_string())?;
    let mut jwk = serde_json::to_value(
        Jwk::from_encoding_key(&key, Algorithm::EdDSA).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    jwk["kid"] = KID.into();
    jwk["use"] = "sig".into();
    write(
        &dir.join("jwks.json"),
        &serde_json::to_string_pretty(&json!({ "keys": [jwk] })).map_err(|e| e.to_string())?,
    )?;
    write(&dir.join("caller.token"), CALLER_TOKEN)
}

/// The decision request mcp-authz's adapters make for `case` (user and application
/// from the identity, the user's group from the token).
fn decision_request(case: &Case) -> DecisionRequest {
    let mut r = DecisionRequest::new(action("tools/call"), Kind::Tool.uid(&case.tool_id()));
    let user = Kind::User.uid(&case.user_id());
    r.user = Some(user.clone());
    r.application = Some(Kind::Application.uid(case.app()));
    r.server = Some(Kind::Server.uid(case.server()));
    r.context
        .insert("arguments".into(), case.arguments(Some("0000000001")));
    r.entities.push(RequestEntity {
        uid: user,
        parents: vec![Kind::Group.uid(case.group())],
        attrs: serde_json::Map::new(),
    });
    r
}

fn check_oracle(policies: &Path) -> Result<(), String> {
    let snapshot = Snapshot::load(policies, 1)
        .map_err(|p| format!("the bench policy directory is invalid:\n{p}"))?;
    let mut wrong = String::new();
    for case in all_variants() {
        let decision = decide(&snapshot, &decision_request(&case));
        if decision.allow != case.expected() {
            let _ = writeln!(
                wrong,
                "  {case:?} ({} / {} / {}): mcp-authz {} ({}), the oracle {}",
                case.group(),
                case.app(),
                case.tool_id(),
                decision.verdict(),
                decision.reason,
                if case.expected() { "allow" } else { "deny" }
            );
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the workload oracle disagrees with the reference policies:\n{wrong}"
        ))
    }
}

fn write_cerbos(dir: &Path, ports: CerbosPorts) -> Result<(), String> {
    let policies = dir.join("policies");
    let _ = std::fs::remove_dir_all(&policies);
    let groups = GROUPS.map(|g| format!("\"{g}\"")).join(", ");
    write(
        &policies.join("mcp_roles.yaml"),
        &format!(
            r#"# The reference policies' groups as Cerbos derived roles (a user's groups are its roles).
apiVersion: api.cerbos.dev/v1
derivedRoles:
  name: mcp_roles
  definitions:
    - name: employee
      parentRoles: [{groups}]
    - name: contractor
      parentRoles: ["contractors"]
    - name: project_ops
      parentRoles: ["project-ops"]
"#
        ),
    )?;
    write(
        &policies.join("mcp_tool.yaml"),
        r#"# The reference policies (policies/*.cedar) for `tools/call`, as one Cerbos resource
# policy. Cerbos evaluates one principal: the user, with the application acting for
# it in `P.attr.app`; each grant requires the user's rule and the application's.
apiVersion: api.cerbos.dev/v1
resourcePolicy:
  resource: mcp_tool
  version: default
  importDerivedRoles: [mcp_roles]
  variables:
    local:
      lookup_tool: R.attr.server == "projects" && R.attr.tool in ["find_project", "get_project_lead", "list_issues"]
      corpassist_grant: P.attr.app == "corpassist" && (R.attr.server == "docs" || (R.attr.server == "projects" && R.attr.tool in ["find_project", "get_project_lead", "list_issues"]))
      summarizer_grant: P.attr.app == "summarizer" && R.attr.server == "docs" && R.attr.tool in ["search_documents", "summarize_document"]
  rules:
    # employees-use-docs, employees-look-up-projects; corpassist-read-docs,
    # corpassist-look-up-projects, summarizer-search-and-summarize
    - name: employees-through-a-permitted-application
      actions: ["tools/call"]
      effect: EFFECT_ALLOW
      derivedRoles: [employee]
      condition:
        match:
          all:
            of:
              - expr: R.attr.server == "docs" || V.lookup_tool
              - expr: V.corpassist_grant || V.summarizer_grant
    # project-ops-update-issues, approved-apps-update-issues (ops-console is the approved app)
    - name: project-ops-update-issues
      actions: ["tools/call"]
      effect: EFFECT_ALLOW
      derivedRoles: [project_ops]
      condition:
        match:
          expr: R.id == "projects/update_issue" && P.attr.app in ["ops-console"]
    # corpassist-never-deletes, only-doc-admins-delete (no application is a document admin)
    - name: nobody-deletes-through-an-application
      actions: ["tools/call"]
      effect: EFFECT_DENY
      roles: ["*"]
      condition:
        match:
          expr: R.id == "docs/delete_document"
    - name: corpassist-bounded-search
      actions: ["tools/call"]
      effect: EFFECT_DENY
      roles: ["*"]
      condition:
        match:
          expr: P.attr.app == "corpassist" && R.id == "docs/search_documents" && has(R.attr.args.max_results) && R.attr.args.max_results > 50.0
    - name: contractors-no-finance-documents
      actions: ["tools/call"]
      effect: EFFECT_DENY
      derivedRoles: [contractor]
      condition:
        match:
          expr: R.id in ["docs/get_document", "docs/summarize_document"] && has(R.attr.args.document_id) && R.attr.args.document_id.startsWith("finance/")
"#,
    )?;
    write(
        &dir.join("config.yaml"),
        &format!(
            r#"# Written by `cargo bench --bench load -- prepare`.
server:
  httpListenAddr: "127.0.0.1:{http}"
  grpcListenAddr: "127.0.0.1:{grpc}"
storage:
  driver: disk
  disk:
    directory: "{dir}"
    watchForChanges: false
telemetry:
  disabled: true
audit:
  enabled: false
"#,
            http = ports.http,
            grpc = ports.grpc,
            dir = policies.display()
        ),
    )
}

fn write_cedar_agent(dir: &Path, entities: &[Value]) -> Result<(), String> {
    let tool = |t: &str| format!("Mcp::Tool::\"{t}\"");
    let app = |a: &str| format!("Mcp::Application::\"{a}\"");
    let policies = [
        (
            "employees-use-docs-through-a-permitted-application",
            format!(
                r#"permit (principal in Mcp::Group::"employees", action == Mcp::Action::"tools/call", resource in Mcp::Server::"docs")
when {{ context.application == {ca} || (context.application == {su} && (resource == {search} || resource == {summarize})) }};"#,
                ca = app("corpassist"),
                su = app("summarizer"),
                search = tool("docs/search_documents"),
                summarize = tool("docs/summarize_document"),
            ),
        ),
        (
            "employees-look-up-projects-through-corpassist",
            format!(
                r#"permit (principal in Mcp::Group::"employees", action == Mcp::Action::"tools/call", resource)
when {{ resource in [{a}, {b}, {c}] && context.application == {ca} }};"#,
                a = tool("projects/find_project"),
                b = tool("projects/get_project_lead"),
                c = tool("projects/list_issues"),
                ca = app("corpassist"),
            ),
        ),
        (
            "project-ops-update-issues",
            format!(
                r#"permit (principal in Mcp::Group::"project-ops", action == Mcp::Action::"tools/call", resource == {t})
when {{ context.application in Mcp::Group::"approved-apps" }};"#,
                t = tool("projects/update_issue"),
            ),
        ),
        (
            "corpassist-never-deletes",
            format!(
                r#"forbid (principal, action == Mcp::Action::"tools/call", resource == {t})
when {{ context.application == {ca} }};"#,
                t = tool("docs/delete_document"),
                ca = app("corpassist"),
            ),
        ),
        (
            "only-doc-admins-delete",
            format!(
                r#"forbid (principal, action == Mcp::Action::"tools/call", resource == {t})
unless {{ principal in Mcp::Group::"doc-admins" && context.application in Mcp::Group::"doc-admins" }};"#,
                t = tool("docs/delete_document"),
            ),
        ),
        (
            "corpassist-bounded-search",
            format!(
                r#"forbid (principal, action == Mcp::Action::"tools/call", resource == {t})
when {{ context.application == {ca} && context has arguments && context.arguments has max_results && context.arguments.max_results > 50 }};"#,
                t = tool("docs/search_documents"),
                ca = app("corpassist"),
            ),
        ),
        (
            "contractors-no-finance-documents",
            format!(
                r#"forbid (principal in Mcp::Group::"contractors", action == Mcp::Action::"tools/call", resource)
when {{ (resource == {a} || resource == {b}) && context has arguments && context.arguments has document_id && context.arguments.document_id like "finance/*" }};"#,
                a = tool("docs/get_document"),
                b = tool("docs/summarize_document"),
            ),
        ),
    ];
    let policies: Vec<Value> = policies
        .iter()
        .map(|(id, content)| json!({ "id": id, "content": content }))
        .collect();
    write(
        &dir.join("policies.json"),
        &serde_json::to_string_pretty(&policies).map_err(|e| e.to_string())?,
    )?;
    write(
        &dir.join("data.json"),
        &serde_json::to_string(entities).map_err(|e| e.to_string())?,
    )
}

/// The directory `prepare` writes by default.
pub fn default_work_dir() -> PathBuf {
    repo().join("target/bench-work")
}
