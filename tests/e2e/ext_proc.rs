//! List filtering on the sidecar path: real Envoy with ext_authz AND ext_proc
//! (`examples/envoy/envoy-ext-proc.yaml`) in front of real MCP servers answering with an
//! event stream (`docs`, `projects`) and with `application/json` (`docs` again, at
//! `/docs-json/`), driven by the real MCP client and by raw HTTP, mcp-authz in-process on
//! the reference policies.
//!
//! What each caller should see is written here from the policies (`policies/*.cedar`),
//! not read from an output, and compared with the gateway's `FilterList` on the same
//! lists: one rule for listing on both paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mcp_authz::api::proto::v1::{FilterListRequest, Names, filter_list_request};
use serde_json::{Value, json};

use crate::harness::{
    ClientOptions, Envoy, McpServer, Protocol, envoy_example, envoy_vars, run_client,
    run_client_opts, step_text,
};
use crate::support::http::{Response, raw_post};
use crate::support::inproc::Service;
use crate::support::process::WorkDir;
use crate::support::tokens::TestKey;
use crate::support::{config, gateway, reference_policies};

const TEMPLATE: &str = "envoy-ext-proc.yaml";
const ACCEPT: &str = "application/json, text/event-stream";
const PROTOCOL: &str = "2025-11-25";

struct Issuer {
    key: TestKey,
    dir: tempfile::TempDir,
}

impl Issuer {
    /// A token issuer (test keys) and an mcp-authz configuration trusting it, plus
    /// `sections`.
    fn new(sections: &[&str]) -> Issuer {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = TestKey::rsa(1, "e2e");
        let mut all = vec![
            config::test_issuer(dir.path(), &key),
            "[decision_log]\nenabled = false\n".to_owned(),
        ];
        all.extend(sections.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        config::write(dir.path(), &refs);
        Issuer { key, dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("mcp-authz.toml")
    }

    fn token(&self, caller: &Caller) -> String {
        self.key.token(json!({
            "sub": caller.user,
            "azp": caller.app,
            "groups": caller.groups,
        }))
    }
}

/// Envoy (ext_authz + ext_proc), the three MCP servers, mcp-authz in-process.
struct Mesh {
    issuer: Issuer,
    authz: Service,
    /// `docs`, answering with an event stream, at `/docs/`.
    docs: McpServer,
    /// `docs`, answering with `application/json`, at `/docs-json/`.
    docs_json: McpServer,
    /// `projects` (event stream), at `/projects/`.
    projects: McpServer,
    envoy: Envoy,
    /// The template with the tests' timeout.
    _template: tempfile::TempDir,
}

/// The mesh on `template` with `extra_tools` more tools on both docs servers and
/// `sections` added to mcp-authz's configuration.
fn mesh_with(template: &Path, extra_tools: usize, sections: &[&str]) -> Mesh {
    let issuer = Issuer::new(sections);
    let authz = Service::start(&reference_policies(), Some(&issuer.config()));
    let docs = McpServer::start_with_extra_tools("docs", false, extra_tools);
    let docs_json = McpServer::start_with_extra_tools("docs", true, extra_tools);
    let projects = McpServer::start("projects");
    let mut vars = envoy_vars(Some((&authz).into()), Some(&docs), Some(&projects));
    vars.push(("DOCS_JSON_PORT", docs_json.port().to_string()));
    // The tests run a debug build of mcp-authz beside many other tests: a list's
    // first (uncached) decision of 300 entries can take longer than the example's
    // 1 s `message_timeout`, which then fails closed. Give the tests 10 s.
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(template).expect("read the template");
    assert!(
        text.contains("message_timeout: 1s"),
        "the example's timeout"
    );
    let relaxed = dir.path().join("envoy.yaml");
    std::fs::write(
        &relaxed,
        text.replace("message_timeout: 1s", "message_timeout: 10s"),
    )
    .expect("write the template");
    let envoy = Envoy::start(&relaxed, &vars);
    Mesh {
        issuer,
        authz,
        docs,
        docs_json,
        projects,
        envoy,
        _template: dir,
    }
}

fn mesh() -> Mesh {
    mesh_with(&envoy_example(TEMPLATE), 0, &[])
}

/// Who calls: a user (with the groups of the token) through an application.
#[derive(Debug)]
struct Caller {
    user: &'static str,
    groups: &'static [&'static str],
    app: &'static str,
}

const ALICE: Caller = Caller {
    user: "alice",
    groups: &["engineering", "project-ops"],
    app: "corpassist",
};
const CAROL: Caller = Caller {
    user: "carol",
    groups: &["contractors"],
    app: "corpassist",
};
const ALICE_SUMMARIZER: Caller = Caller {
    user: "alice",
    groups: &["engineering", "project-ops"],
    app: "summarizer",
};
const ALICE_OPS_CONSOLE: Caller = Caller {
    user: "alice",
    groups: &["engineering", "project-ops"],
    app: "ops-console",
};
const ERIN_OPS_CONSOLE: Caller = Caller {
    user: "erin",
    groups: &["engineering"],
    app: "ops-console",
};
/// Not an employee: in no group the policies grant anything to.
const MALLORY: Caller = Caller {
    user: "mallory",
    groups: &[],
    app: "corpassist",
};

/// What a caller should see of `docs`, from the reference policies.
struct DocsView {
    tools: &'static [&'static str],
    prompts: &'static [&'static str],
    resources: &'static [&'static str],
}

/// The expected views of `docs`:
/// - alice through CorpAssist: every docs tool (`employees-use-docs`,
///   `corpassist-read-docs`) but `delete_document` (`only-doc-admins-delete`,
///   `corpassist-never-deletes`); the argument-guarded ones (`corpassist-bounded-search`,
///   `contractors-*`) are shown, as some use of them is allowed; the prompt (its
///   `audience` decides); both resources.
/// - carol (contractors): the same tools and prompt, but not the finance resource
///   (`contractors-no-finance-resources`, on the resource itself).
/// - alice through the summarizer: only `search_documents` and `summarize_document`
///   (`summarizer-search-and-summarize`), no prompt, no resource.
/// - mallory, in no group: nothing.
fn docs_cases() -> Vec<(Caller, DocsView)> {
    let all_tools: &[&str] = &["get_document", "search_documents", "summarize_document"];
    vec![
        (
            ALICE,
            DocsView {
                tools: all_tools,
                prompts: &["executive_summary"],
                resources: &["docs://finance/budget-2026", "docs://titan/q1-strategy"],
            },
        ),
        (
            CAROL,
            DocsView {
                tools: all_tools,
                prompts: &["executive_summary"],
                resources: &["docs://titan/q1-strategy"],
            },
        ),
        (
            ALICE_SUMMARIZER,
            DocsView {
                tools: &["search_documents", "summarize_document"],
                prompts: &[],
                resources: &[],
            },
        ),
        (
            MALLORY,
            DocsView {
                tools: &[],
                prompts: &[],
                resources: &[],
            },
        ),
    ]
}

/// The expected tools of `projects`: alice through CorpAssist looks projects up
/// (`employees-look-up-projects`, `corpassist-look-up-projects`) but may not update
/// (`project-ops-update-issues` needs an approved application); through the ops console
/// she may only update (`approved-apps-update-issues`); erin through the ops console:
/// nothing (not project-ops, and the console has no lookup grant).
fn projects_cases() -> Vec<(Caller, &'static [&'static str])> {
    vec![
        (
            ALICE,
            &["find_project", "get_project_lead", "list_issues"][..],
        ),
        (ALICE_OPS_CONSOLE, &["update_issue"][..]),
        (ERIN_OPS_CONSOLE, &[][..]),
    ]
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The names listed by step `i` (`tools`, `prompts` or `resources`) of a client report.
fn listed(report: &Value, i: usize, key: &str) -> BTreeSet<String> {
    let step = &report["steps"][i];
    assert_eq!(step["ok"], true, "step {i} failed: {report:#}");
    step["result"][key]
        .as_array()
        .unwrap_or_else(|| panic!("step {i} has no {key}: {report:#}"))
        .iter()
        .map(|n| n.as_str().unwrap_or_default().to_owned())
        .collect()
}

const LIST_STEPS: [(&str, &str, &str); 3] = [
    ("list_tools", "tools/list", "tools"),
    ("list_prompts", "prompts/list", "prompts"),
    ("list_resources", "resources/list", "resources"),
];

/// tools, prompts and resources as listed at `url` (with `token` if any).
fn lists(url: &str, token: Option<&str>) -> [BTreeSet<String>; 3] {
    lists_by(url, token, Protocol::Handshake)
}

/// [`lists`], the session opened by `protocol`.
fn lists_by(url: &str, token: Option<&str>, protocol: Protocol) -> [BTreeSet<String>; 3] {
    let steps: Vec<Value> = LIST_STEPS
        .iter()
        .map(|(op, _, _)| json!({ "op": op }))
        .collect();
    let options = ClientOptions {
        protocol,
        ..ClientOptions::default()
    };
    let report = run_client_opts(url, token, Value::Array(steps), &options);
    assert_eq!(report["initialize"]["ok"], true, "{url}: {report:#}");
    [0, 1, 2].map(|i| listed(&report, i, LIST_STEPS[i].2))
}

/// What the gateway's `FilterList` allows of `names` for `token` on `server`.
fn filter_list(
    mesh: &Mesh,
    token: &str,
    server: &str,
    method: &str,
    names: &BTreeSet<String>,
) -> BTreeSet<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = format!("127.0.0.1:{}", mesh.authz.grpc_port());
    let request = FilterListRequest {
        identity: Some(gateway::bearer(token)),
        server: server.into(),
        method: method.into(),
        list: Some(filter_list_request::List::Names(Names {
            names: names.iter().cloned().collect(),
        })),
        ..FilterListRequest::default()
    };
    let answer = rt.block_on(async {
        let mut client = gateway::client(&addr).await;
        client.filter_list(request).await
    });
    let answer = answer
        .unwrap_or_else(|e| panic!("FilterList {method}: {e}"))
        .into_inner();
    assert!(answer.error.is_none(), "FilterList {method}: {answer:?}");
    answer.allowed.into_iter().collect()
}

#[test]
fn lists_through_envoy_show_only_what_the_caller_may_use() {
    let mesh = mesh();
    // What the servers offer, asked directly (no Envoy): the lists to filter.
    let direct =
        |server: &McpServer| lists(&format!("http://127.0.0.1:{}/mcp", server.port()), None);
    let offered = direct(&mesh.docs);
    assert_eq!(
        offered[0],
        set(&[
            "delete_document",
            "get_document",
            "search_documents",
            "summarize_document"
        ])
    );
    assert_eq!(offered[1], set(&["executive_summary"]));
    assert_eq!(
        offered[2],
        set(&["docs://finance/budget-2026", "docs://titan/q1-strategy"])
    );
    assert_eq!(direct(&mesh.docs_json), offered);

    for (caller, view) in docs_cases() {
        let token = mesh.issuer.token(&caller);
        let expected = [set(view.tools), set(view.prompts), set(view.resources)];
        for path in ["/docs/mcp", "/docs-json/mcp"] {
            // A session (2025-11-25), and stateless requests (2026-07-28, `Mcp-Method`).
            for protocol in [Protocol::Handshake, Protocol::Discover] {
                let shown = lists_by(&mesh.envoy.url(path), Some(&token), protocol);
                assert_eq!(
                    shown,
                    expected,
                    "{caller:?} at {path} ({protocol:?})\n{}\n{}",
                    mesh.authz.log_text(),
                    mesh.envoy.log()
                );
            }
        }
        // The gateway's answer on the same lists is the same.
        for (i, (_, method, _)) in LIST_STEPS.iter().enumerate() {
            assert_eq!(
                filter_list(&mesh, &token, "docs", method, &offered[i]),
                expected[i],
                "FilterList {method} for {caller:?}"
            );
        }
    }

    let offered_projects = direct(&mesh.projects)[0].clone();
    assert_eq!(
        offered_projects,
        set(&[
            "find_project",
            "get_project_lead",
            "list_issues",
            "update_issue"
        ])
    );
    for (caller, tools) in projects_cases() {
        let token = mesh.issuer.token(&caller);
        let report = run_client(
            &mesh.envoy.url("/projects/mcp"),
            Some(&token),
            json!([{"op": "list_tools"}]),
        );
        assert_eq!(report["initialize"]["ok"], true, "{caller:?}: {report:#}");
        assert_eq!(listed(&report, 0, "tools"), set(tools), "{caller:?}");
        assert_eq!(
            filter_list(&mesh, &token, "projects", "tools/list", &offered_projects),
            set(tools),
            "FilterList for {caller:?}"
        );
    }
}

#[test]
fn calls_still_pass_both_filters() {
    let mesh = mesh();
    let alice = mesh.issuer.token(&ALICE);
    for (path, server) in [
        ("/docs/mcp", &mesh.docs),
        ("/docs-json/mcp", &mesh.docs_json),
    ] {
        let report = run_client(
            &mesh.envoy.url(path),
            Some(&alice),
            json!([
                {"op": "call_tool", "name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
                {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "titan/q1-strategy"}},
                {"op": "get_prompt", "name": "executive_summary", "arguments": {"audience": "internal"}},
                {"op": "read_resource", "uri": "docs://titan/q1-strategy"},
            ]),
        );
        assert!(
            step_text(&report, 0).starts_with("Project Titan Q1 strategy:"),
            "{path}: {report:#}\n{}",
            mesh.envoy.log()
        );
        let denied = &report["steps"][1];
        assert_eq!(denied["ok"], false, "{path}: {report:#}");
        assert_eq!(denied["error"]["http_status"], 403, "{path}: {report:#}");
        assert!(
            step_text(&report, 2).contains("executive summary"),
            "{path}: {report:#}"
        );
        assert!(
            step_text(&report, 3).contains("Titan"),
            "{path}: {report:#}"
        );
        assert!(
            !server
                .requests()
                .iter()
                .any(|r| r["jsonrpc_method"] == "tools/call" && r["name"] == "delete_document"),
            "{path}: a denied call reached the server"
        );
    }
    // A tool call of the projects server, through the lookups alice may use.
    let report = run_client(
        &mesh.envoy.url("/projects/mcp"),
        Some(&alice),
        json!([{"op": "call_tool", "name": "get_project_lead", "arguments": {"project": "titan"}}]),
    );
    assert_eq!(
        step_text(&report, 0),
        "Project Titan is led by Dana Whitfield",
        "{report:#}"
    );
    assert!(
        mesh.projects
            .jsonrpc_methods()
            .contains(&"tools/call".to_owned())
    );
}

/// The template with ext_proc's `grpc_service` pointed at `cluster`, a cluster added
/// whose one endpoint is `port`; ext_authz still asks mcp-authz.
fn template_with_ext_proc_at(dir: &Path, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(envoy_example(TEMPLATE)).expect("read the template");
    let ext_proc = text
        .find("envoy.filters.http.ext_proc\n")
        .expect("the ext_proc filter");
    let (head, tail) = text.split_at(ext_proc);
    let tail = tail.replacen(
        "envoy_grpc: { cluster_name: mcp_authz_grpc }",
        "envoy_grpc: { cluster_name: ext_proc_down }",
        1,
    );
    assert!(tail.contains("ext_proc_down"), "ext_proc's grpc_service");
    let cluster = format!(
        "    - name: ext_proc_down
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: ext_proc_down
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {port} }}
"
    );
    let file = dir.join(TEMPLATE);
    std::fs::write(&file, format!("{head}{tail}{cluster}")).expect("write the template");
    file
}

/// The JSON-RPC `tools/list` of protocol 2026-07-28: stateless, no session needed.
fn stateless_tools_list(url: &str, token: &str) -> Response {
    let bearer = format!("Bearer {token}");
    raw_post(
        url,
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
            ("accept", ACCEPT),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
        json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            }},
        })
        .to_string()
        .as_bytes(),
    )
}

#[test]
fn ext_proc_unreachable_fails_closed() {
    let dir = WorkDir::new("e2e-ext-proc-down-");
    let closed = crate::support::process::unused_port();
    let template = template_with_ext_proc_at(dir.path(), closed);
    let mesh = mesh_with(&template, 0, &[]);
    let alice = mesh.issuer.token(&ALICE);
    for path in ["/docs/mcp", "/docs-json/mcp"] {
        // A session opens and a tool call works (their routes skip ext_proc); a list
        // fails, its route needs ext_proc. (By raw HTTP: the SDK's `call_tool` lists
        // the tools first.)
        let url = mesh.envoy.url(path);
        let bearer = format!("Bearer {alice}");
        let session = raw_session(&url, &bearer);
        let headers = in_session(&bearer, &session);
        let r = raw_post(
            &url,
            &headers,
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}}})
            .to_string()
            .as_bytes(),
        );
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(
            r.text().contains("Project Titan Q1 strategy"),
            "{path}: {}",
            r.text()
        );
        let r = raw_post(
            &url,
            &headers,
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
        );
        assert!(r.status >= 500, "{path}: {} {}", r.status, r.text());
        assert!(
            !r.text().contains("delete_document"),
            "{path}: {}",
            r.text()
        );
        // A list asked for directly gets an error, never the list.
        let r = stateless_tools_list(&mesh.envoy.url(path), &alice);
        assert!(r.status >= 500, "{path}: {} {}", r.status, r.text());
        assert!(
            !r.text().contains("delete_document"),
            "{path}: {}",
            r.text()
        );
    }
    for server in [&mesh.docs, &mesh.docs_json] {
        assert!(
            !server.jsonrpc_methods().iter().any(|m| m == "tools/list"),
            "a list was asked of the server with ext_proc down"
        );
    }
    // ext_authz still allowed them: the error is ext_proc's.
    let (_, stats) = mesh.envoy.admin_get("/stats?filter=ext_");
    assert!(counter(&mesh.envoy, "ext_authz.ok") > 0, "{stats}");
}

/// The `data:` payloads of an event stream, each parsed as JSON.
fn sse_messages(body: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    for event in body.replace("\r\n", "\n").split("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            let text = data.join("\n");
            messages.push(
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {text}")),
            );
        }
    }
    messages
}

/// A session opened by raw HTTP through Envoy at `url` (initialize, then
/// notifications/initialized): its `mcp-session-id`.
fn raw_session(url: &str, bearer: &str) -> String {
    let headers = [
        ("authorization", bearer),
        ("content-type", "application/json"),
        ("accept", ACCEPT),
    ];
    let init = raw_post(
        url,
        &headers,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "raw-e2e", "version": "0"}}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(init.status, 200, "initialize: {}", init.text());
    let session = init
        .header("mcp-session-id")
        .unwrap_or_else(|| panic!("no session id: {:?}", init.headers))
        .to_owned();
    let mut h = headers.to_vec();
    h.push(("mcp-session-id", session.as_str()));
    h.push(("mcp-protocol-version", PROTOCOL));
    let done = raw_post(
        url,
        &h,
        br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(
        done.status,
        202,
        "notifications/initialized: {}",
        done.text()
    );
    session
}

/// `tools/list` in a raw session at `url`: the response and the names it lists.
fn raw_tools_list(url: &str, token: &str) -> (Response, Vec<String>) {
    let bearer = format!("Bearer {token}");
    let session = raw_session(url, &bearer);
    let r = raw_post(
        url,
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
            ("accept", ACCEPT),
            ("mcp-session-id", session.as_str()),
            ("mcp-protocol-version", PROTOCOL),
        ],
        br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    assert_eq!(r.status, 200, "tools/list: {}", r.text());
    let text = r.text();
    let message = if r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream"))
    {
        sse_messages(&text)
            .into_iter()
            .find(|m| m["id"] == 2)
            .unwrap_or_else(|| panic!("no answer to the list in the stream: {text}"))
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    let names = message["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {message}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    (r, names)
}

/// An Envoy counter of the admin API's `/stats` (0 when absent).
fn counter(envoy: &Envoy, name: &str) -> u64 {
    let (_, stats) = envoy.admin_get(&format!("/stats?filter={name}"));
    stats
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.ends_with(name))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

const EXTRA_TOOLS: usize = 300;

#[test]
fn large_lists_from_the_real_server_are_filtered() {
    // 304 tools, about 150 KB, through the real server. Undeclared tools allowed, so
    // that most of the list is kept. (How Envoy cuts it into chunks is up to its socket
    // reads: `an_event_split_across_chunks_is_filtered_whole` cuts one on purpose.)
    let mesh = mesh_with(
        &envoy_example(TEMPLATE),
        EXTRA_TOOLS,
        &["[decisions]\nallow_undeclared_tools = true\n"],
    );
    let extras: Vec<String> = (1..=EXTRA_TOOLS)
        .map(|i| format!("extra_tool_{i:03}"))
        .collect();
    let mut alice_sees: Vec<String> = ["search_documents", "get_document", "summarize_document"]
        .map(str::to_owned)
        .to_vec();
    alice_sees.extend(extras.iter().cloned());
    let cases: [(&Caller, Vec<String>); 2] = [
        (&ALICE, alice_sees),
        (
            &ALICE_SUMMARIZER,
            vec!["search_documents".into(), "summarize_document".into()],
        ),
    ];
    for (path, event_stream) in [("/docs/mcp", true), ("/docs-json/mcp", false)] {
        for (caller, expected) in &cases {
            let before = counter(&mesh.envoy, "ext_proc.stream_msgs_sent");
            let streams = ext_proc_streams(&mesh.envoy);
            let token = mesh.issuer.token(caller);
            let (r, names) = raw_tools_list(&mesh.envoy.url(path), &token);
            let sent = counter(&mesh.envoy, "ext_proc.stream_msgs_sent") - before;
            let streams = ext_proc_streams(&mesh.envoy) - streams;
            let content_type = r.header("content-type").unwrap_or_default().to_owned();
            assert_eq!(
                content_type.starts_with("text/event-stream"),
                event_stream,
                "{path}: {content_type}"
            );
            // In the server's order, nothing else.
            assert_eq!(
                &names,
                expected,
                "{caller:?} at {path}\n{}",
                mesh.authz.log_text()
            );
            // The initialize and the notification of the session skip ext_proc; the list
            // costs one stream: its request headers, its response headers and its body
            // (at least one message).
            assert_eq!(streams, 1, "{path}: {streams} ext_proc streams");
            assert!(sent >= 3, "{path}: {sent} messages to ext_proc");
        }
    }
    // The client sees the same.
    let report = run_client(
        &mesh.envoy.url("/docs/mcp"),
        Some(&mesh.issuer.token(&ALICE_SUMMARIZER)),
        json!([{"op": "list_tools"}]),
    );
    assert_eq!(
        listed(&report, 0, "tools"),
        set(&["search_documents", "summarize_document"])
    );
}

#[test]
fn the_example_config_is_valid_and_fails_closed() {
    let text = std::fs::read_to_string(envoy_example(TEMPLATE)).expect("read the template");
    let position = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("`{s}` not in {TEMPLATE}"))
    };
    // The MCP filter, ext_authz, ext_proc, the router: in that order.
    let order = [
        "- name: envoy.filters.http.mcp",
        "- name: envoy.filters.http.ext_authz",
        "- name: envoy.filters.http.ext_proc",
        "- name: envoy.filters.http.router",
    ]
    .map(position);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert_eq!(text.matches("failure_mode_allow: false").count(), 2);
    // bench/ext_proc.sh measures these very filters.
    let filters = &text[order[0]..order[3]];
    let bench = std::fs::read_to_string(crate::support::repo().join("bench/ext_proc/envoy.yaml"))
        .expect("read bench/ext_proc/envoy.yaml");
    assert!(
        bench.contains(filters),
        "bench/ext_proc/envoy.yaml's filters differ from {TEMPLATE}'s"
    );
    // And its routes: ext_proc only where a list can come back.
    let docs_routes =
        text[position("# /docs/: a list call")..position("# /docs-json/: a list call")].trim_end();
    assert!(
        bench.contains(&docs_routes.replace("cluster: docs,", "cluster: upstream,")),
        "bench/ext_proc/envoy.yaml's /docs/ routes differ from {TEMPLATE}'s"
    );
    assert!(
        text.contains("clear_route_cache: true"),
        "the MCP filter must re-route"
    );
    let vars = envoy_vars(None, None, None)
        .into_iter()
        .chain([
            ("DOCS_JSON_PORT", "8003".to_owned()),
            ("LISTEN_PORT", "0".to_owned()),
            ("ADMIN_PORT", "0".to_owned()),
        ])
        .collect::<Vec<_>>();
    if let Err(e) = crate::harness::validate_envoy_config(&envoy_example(TEMPLATE), &vars) {
        panic!("envoy --mode validate refused {TEMPLATE}:\n{e}");
    }
}

/// The event stream the split upstream answers a list with: a notification, then the
/// docs server's four tools and `extras` more (`get_document`'s description has an
/// `é`, two bytes in UTF-8), the JSON-RPC id that of the request.
fn split_stream(id: &Value, extras: usize) -> String {
    let mut tools = vec![
        json!({"name": "search_documents", "inputSchema": {"type": "object"}}),
        json!({"name": "get_document", "description": "Get a document (résumé included)", "inputSchema": {"type": "object"}}),
        json!({"name": "summarize_document", "inputSchema": {"type": "object"}}),
        json!({"name": "delete_document", "inputSchema": {"type": "object"}}),
    ];
    tools.extend(
        (1..=extras).map(
            |i| json!({"name": format!("extra_tool_{i:03}"), "inputSchema": {"type": "object"}}),
        ),
    );
    let notification = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "listing"}});
    let list = json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}});
    format!("event: message\r\ndata: {notification}\r\n\r\nevent: message\r\ndata: {list}\r\n\r\n")
}

/// Where the split upstream cuts `body`: inside `event`, inside the first `data:` line,
/// between the two CRLFs that end the first event, inside the second `data:`, inside a
/// tool name, between the two bytes of the `é`, and the rest in three.
fn cuts(body: &str) -> Vec<usize> {
    let at = |s: &str| {
        body.find(s)
            .unwrap_or_else(|| panic!("`{s}` not in the stream"))
    };
    let second_data = at("\r\n\r\n") + 4 + body[at("\r\n\r\n") + 4..].find("data:").expect("data");
    let mut cuts = vec![
        3,
        at("notifications/") + 4,
        at("\r\n\r\n") + 2,
        second_data + 2,
        at("get_docu") + 8,
        at("é") + 1,
    ];
    let last = *cuts.iter().max().expect("cuts");
    let rest = body.len() - last;
    cuts.extend([last + rest / 3, last + 2 * rest / 3]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// An HTTP/1.1 upstream on 127.0.0.1 answering every request with [`split_stream`] as
/// an event stream, one HTTP chunk per piece ([`cuts`]), 30 ms apart, so that Envoy
/// passes each piece to ext_proc on its own. Its thread lives as long as the test binary.
fn split_upstream(extras: usize) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut out = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end().to_ascii_lowercase();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let id = serde_json::from_slice::<Value>(&body)
                        .map(|v| v["id"].clone())
                        .unwrap_or(Value::Null);
                    let stream = split_stream(&id, extras);
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
                    if out.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let mut from = 0;
                    for to in cuts(&stream).into_iter().chain([stream.len()]) {
                        let piece = &stream.as_bytes()[from..to];
                        from = to;
                        let chunk =
                            [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
                        if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(30));
                    }
                    if out.write_all(b"0\r\n\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn an_event_split_across_chunks_is_filtered_whole() {
    let issuer = Issuer::new(&[]);
    let authz = Service::start(&reference_policies(), Some(&issuer.config()));
    let upstream = split_upstream(40);
    let mut vars = envoy_vars(Some((&authz).into()), None, None);
    for (name, value) in &mut vars {
        if *name == "DOCS_PORT" {
            *value = upstream.to_string();
        }
    }
    vars.push(("DOCS_JSON_PORT", upstream.to_string()));
    let envoy = Envoy::start(&envoy_example(TEMPLATE), &vars);
    let pieces = cuts(&split_stream(&json!(7), 40)).len() + 1;
    for (caller, expected) in [
        (
            &ALICE,
            &["search_documents", "get_document", "summarize_document"][..],
        ),
        (
            &ALICE_SUMMARIZER,
            &["search_documents", "summarize_document"][..],
        ),
    ] {
        let bearer = format!("Bearer {}", issuer.token(caller));
        let before = counter(&envoy, "ext_proc.stream_msgs_sent");
        let r = raw_post(
            &envoy.url("/docs/mcp"),
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
                ("accept", ACCEPT),
                ("mcp-protocol-version", PROTOCOL),
            ],
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
        );
        let sent = counter(&envoy, "ext_proc.stream_msgs_sent") - before;
        assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.log());
        let messages = sse_messages(&r.text());
        assert_eq!(messages.len(), 2, "{}", r.text());
        // The server's notification passes as it is.
        assert_eq!(
            messages[0]["method"],
            "notifications/message",
            "{}",
            r.text()
        );
        assert_eq!(messages[1]["id"], 7);
        let tools = messages[1]["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("no tools: {}", r.text()));
        let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, expected, "{caller:?}: {}", authz.log_text());
        if let Some(get) = tools.iter().find(|t| t["name"] == "get_document") {
            assert_eq!(get["description"], "Get a document (résumé included)");
        }
        // Request headers, response headers, and the pieces one by one.
        assert!(
            sent >= 2 + pieces as u64 - 1,
            "{sent} messages to ext_proc for {pieces} pieces"
        );
    }
}

#[test]
fn a_list_longer_than_the_limit_is_replaced_by_an_error() {
    // `grpc.max_list_entries` caps ext_proc's lists as it caps `FilterList`'s: the docs
    // server's four tools are one too many. The client gets a JSON-RPC error, not the list.
    let mesh = mesh_with(
        &envoy_example(TEMPLATE),
        0,
        &["[grpc]\nmax_list_entries = 3\n"],
    );
    let alice = mesh.issuer.token(&ALICE);
    for path in ["/docs/mcp", "/docs-json/mcp"] {
        let report = run_client(
            &mesh.envoy.url(path),
            Some(&alice),
            json!([{"op": "list_tools"}, {"op": "list_prompts"}]),
        );
        let step = &report["steps"][0];
        assert_eq!(step["ok"], false, "{path}: {report:#}");
        assert!(
            step["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("max_list_entries"),
            "{path}: {report:#}"
        );
        assert!(
            !report.to_string().contains("delete_document"),
            "{report:#}"
        );
        // A shorter list still comes through.
        assert_eq!(
            listed(&report, 1, "prompts"),
            set(&["executive_summary"]),
            "{path}"
        );
    }
}

/// The headers of a raw request in `session`.
fn in_session<'a>(bearer: &'a str, session: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("authorization", bearer),
        ("content-type", "application/json"),
        ("accept", ACCEPT),
        ("mcp-session-id", session),
        ("mcp-protocol-version", PROTOCOL),
    ]
}

/// How many ext_proc streams Envoy started.
fn ext_proc_streams(envoy: &Envoy) -> u64 {
    counter(envoy, "ext_proc.streams_started")
}

/// The ext_proc streams started by a request that stays open (an SSE `GET`): send it,
/// wait until ext_authz allowed it, then count; the connection is dropped after.
fn streams_for_open_request(
    envoy: &Envoy,
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> u64 {
    use std::io::Write;
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let allowed = counter(envoy, "ext_authz.ok");
    let before = ext_proc_streams(envoy);
    let mut stream = std::net::TcpStream::connect(authority).expect("connect to Envoy");
    stream.write_all(head.as_bytes()).expect("send the request");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while counter(envoy, "ext_authz.ok") == allowed {
        assert!(
            std::time::Instant::now() < deadline,
            "{method} {path} was not allowed by ext_authz\n{}",
            envoy.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // ext_proc sees the request headers right after ext_authz let them go on.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let started = ext_proc_streams(envoy) - before;
    drop(stream);
    started
}

#[test]
fn ext_proc_runs_only_where_a_list_can_come_back() {
    // Envoy's own counters: the routes chosen on the MCP filter's `method` start an
    // ext_proc stream for a list call and a resumed stream, and for nothing else.
    let mesh = mesh();
    let bearer = format!("Bearer {}", mesh.issuer.token(&ALICE));
    for path in ["/docs/mcp", "/docs-json/mcp"] {
        let url = mesh.envoy.url(path);
        let before = ext_proc_streams(&mesh.envoy);
        let session = raw_session(&url, &bearer);
        assert_eq!(
            ext_proc_streams(&mesh.envoy) - before,
            0,
            "{path}: initialize and notifications/initialized"
        );
        let headers = in_session(&bearer, &session);
        let post = |body: Value| {
            let before = ext_proc_streams(&mesh.envoy);
            let r = raw_post(&url, &headers, body.to_string().as_bytes());
            (r, ext_proc_streams(&mesh.envoy) - before)
        };
        let (r, started) = post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}}}));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(
            r.text().contains("Project Titan Q1 strategy"),
            "{path}: {}",
            r.text()
        );
        assert_eq!(started, 0, "{path}: tools/call started an ext_proc stream");
        let (r, started) = post(json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(started, 0, "{path}: ping started an ext_proc stream");
        for (i, method) in [
            "tools/list",
            "prompts/list",
            "resources/list",
            "resources/templates/list",
        ]
        .into_iter()
        .enumerate()
        {
            let (r, started) = post(json!({"jsonrpc": "2.0", "id": 10 + i, "method": method}));
            assert_eq!(r.status, 200, "{path} {method}: {}", r.text());
            assert_eq!(started, 1, "{path} {method}: {started} ext_proc streams");
            if method == "tools/list" {
                let text = r.text();
                assert!(text.contains("get_document"), "{path}: {text}");
                assert!(!text.contains("delete_document"), "{path}: {text}");
            }
        }
        // A new stream: no ext_proc; a resumed one (it may replay a list's answer): one.
        let get = [
            ("authorization", bearer.as_str()),
            ("accept", "text/event-stream"),
            ("mcp-session-id", session.as_str()),
            ("mcp-protocol-version", PROTOCOL),
        ];
        assert_eq!(
            streams_for_open_request(&mesh.envoy, &url, "GET", &get),
            0,
            "{path}: GET"
        );
        let mut resumed = get.to_vec();
        resumed.push(("last-event-id", "1"));
        assert_eq!(
            streams_for_open_request(&mesh.envoy, &url, "GET", &resumed),
            1,
            "{path}: GET with Last-Event-ID"
        );
        let before = ext_proc_streams(&mesh.envoy);
        let (authority, rest) = url
            .strip_prefix("http://")
            .and_then(|u| u.split_once('/'))
            .expect("a URL with a path");
        let ended =
            crate::support::http::request(authority, "DELETE", &format!("/{rest}"), &get, "")
                .expect("an answer to DELETE");
        assert!(ended.0 < 300, "{path}: DELETE: {ended:?}");
        assert_eq!(ext_proc_streams(&mesh.envoy) - before, 0, "{path}: DELETE");
    }
}

#[test]
fn a_list_call_never_reaches_a_route_without_ext_proc() {
    // A request goes without ext_proc only when the MCP filter read a method that is
    // not a list's. Bodies where that reading and the MCP server's could differ: each
    // is refused, or its list comes back filtered (through ext_proc), never whole.
    let mesh = mesh();
    let bearer = format!("Bearer {}", mesh.issuer.token(&ALICE));
    let call =
        r#""params":{"name":"get_document","arguments":{"document_id":"titan/q1-strategy"}}"#;
    let padding = "x".repeat(9000);
    let cases: Vec<(&str, String)> = vec![
        (
            "the method twice, the list first",
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","method":"tools/call",{call}}}"#
            ),
        ),
        (
            "the method twice, the list last",
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call",{call},"method":"tools/list"}}"#
            ),
        ),
        (
            "the method written with an escaped slash",
            r#"{"jsonrpc":"2.0","id":2,"method":"tools\/list"}"#.to_owned(),
        ),
        (
            "the method written with a unicode escape",
            r#"{"jsonrpc":"2.0","id":2,"method":"tools\u002flist"}"#.to_owned(),
        ),
        (
            "a key written with a unicode escape",
            r#"{"jsonrpc":"2.0","id":2,"met\u0068od":"tools/list"}"#.to_owned(),
        ),
        (
            "a batch of one list call",
            r#"[{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#.to_owned(),
        ),
        (
            "a batch of a call and a list call",
            format!(
                r#"[{{"jsonrpc":"2.0","id":2,"method":"tools/call",{call}}},{{"jsonrpc":"2.0","id":3,"method":"tools/list"}}]"#
            ),
        ),
        (
            "the method after 9 KB, past what the MCP filter reads",
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"params":{{"_meta":{{"pad":"{padding}"}}}},"method":"tools/list"}}"#
            ),
        ),
        (
            "not JSON to the MCP filter",
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list",}"#.to_owned(),
        ),
    ];
    for path in ["/docs/mcp", "/docs-json/mcp"] {
        let url = mesh.envoy.url(path);
        let session = raw_session(&url, &bearer);
        let headers = in_session(&bearer, &session);
        for (case, body) in &cases {
            let before = ext_proc_streams(&mesh.envoy);
            let r = raw_post(&url, &headers, body.as_bytes());
            let started = ext_proc_streams(&mesh.envoy) - before;
            let text = r.text();
            eprintln!(
                "{path}: {case}: HTTP {}, {started} ext_proc streams: {text}",
                r.status
            );
            assert!(
                !text.contains("delete_document"),
                "{path}: {case}: the whole list came back: {text}"
            );
            // Refused by ext_authz (its error carries the decision id), or on a route
            // with ext_proc.
            assert!(
                started == 1 || text.contains("decision_id"),
                "{path}: {case}: neither refused nor through ext_proc: HTTP {} {text}",
                r.status
            );
            if text.contains("\"tools\"") {
                assert_eq!(
                    started, 1,
                    "{path}: {case}: a list without ext_proc: {text}"
                );
                assert!(text.contains("get_document"), "{path}: {case}: {text}");
            }
        }
    }
}
