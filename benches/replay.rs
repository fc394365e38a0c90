//! `mcp-authz replay` at scale (issue 18: "replay decides ≥ 50,000 logged requests per
//! second on this machine"): a decision log of 100,000 records of the reference policies,
//! written as the service writes them (each request decided, its record built by the
//! decision log's own code, `include_arguments = true`), replayed on the same policies as
//! `mcp-authz replay` does it: read line by line, parsed, every request decided on every
//! core through the engine's entry point and its decision cache, compared in log order.
//!
//! Measured:
//! - `replay/log_100k`: a log that repeats requests as traffic does: 2,000 distinct requests
//!   (285 users with groups from their tokens, 3 applications, 8 tools, 50 documents, varied
//!   arguments), each 50 times, interleaved;
//! - `replay/distinct_100k`: every record a distinct request (a unique document id): the
//!   decision cache never answers, every record is a full decision;
//! - `decision_log_record/*`: what the replayable `input` costs the service per decision:
//!   `input_of` (on the deciding thread: the clone of the request's context, token facts
//!   and entities) and the record's serialization with and without it (on the writer thread).
//!
//! `cargo bench --bench replay` (add `-- --test` for a smoke run).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cedar_policy::EntityUid;
use criterion::{Criterion, Throughput};
use mcp_authz::authz::{DecisionRequest, Engine, Interface, RequestEntity, Rules, TokenFacts};
use mcp_authz::policy::{PolicyStore, Snapshot};
use mcp_authz::replay::{Options, engine, replay};
use mcp_authz::telemetry::decision_log::default_redactions;
use mcp_authz::telemetry::{DecisionRecord, RecordInput, RecordedRequest, Redactor};
use serde_json::{Map, Value, json};

const RECORDS: usize = 100_000;
/// Distinct requests of the repeating log.
const POOL: usize = 2_000;

fn uid(kind: &str, id: &str) -> EntityUid {
    format!("Mcp::{kind}::{}", Value::String(id.to_owned()))
        .parse()
        .expect("uid")
}

const TOOLS: [(&str, &str); 9] = [
    ("docs", "search_documents"),
    ("docs", "get_document"),
    ("docs", "summarize_document"),
    ("docs", "delete_document"),
    ("projects", "find_project"),
    ("projects", "get_project_lead"),
    ("projects", "list_issues"),
    ("projects", "update_issue"),
    ("docs", "get_document"),
];
const GROUPS: [&str; 5] = [
    "engineering",
    "finance",
    "contractors",
    "project-ops",
    "doc-admins",
];
const APPS: [&str; 3] = ["corpassist", "summarizer", "ops-console"];

/// The `i`th request of the log; `distinct`: a document id of its own.
fn request(i: usize, distinct: bool) -> DecisionRequest {
    let (server, tool) = TOOLS[i % TOOLS.len()];
    let mut r = DecisionRequest::new(
        uid("Action", "tools/call"),
        uid("Tool", &format!("{server}/{tool}")),
    );
    let user = format!("user{}", (i / 7) % 400);
    r.user = Some(uid("User", &user));
    r.application = Some(uid("Application", APPS[(i / 3) % APPS.len()]));
    r.server = Some(uid("Server", server));
    let doc = if distinct {
        format!("titan/doc-{i}")
    } else if i.is_multiple_of(11) {
        format!("finance/report-{}", i % 50)
    } else {
        format!("titan/doc-{}", i % 50)
    };
    let arguments = match tool {
        "search_documents" => json!({"query": "titan", "max_results": (i % 80) as i64}),
        "get_document" | "summarize_document" | "delete_document" => json!({"document_id": doc}),
        "find_project" => json!({"name": "titan"}),
        "get_project_lead" => json!({"project": "titan"}),
        "list_issues" => json!({"project": "titan", "since": (i % 120) as i64}),
        _ => json!({"issue_id": format!("TITAN-{}", i % 30), "status": "done"}),
    };
    r.context.insert("arguments".into(), arguments);
    r.token = Some(TokenFacts {
        scopes: vec!["docs.read".into()],
        claims: Map::new(),
    });
    r.entities.push(RequestEntity {
        uid: uid("User", &user),
        parents: vec![uid("Group", GROUPS[(i / 7) % GROUPS.len()])],
        attrs: Map::new(),
    });
    r
}

/// The decision log record of `request` decided by `engine`, as the service writes it.
fn record(engine: &Engine, snapshot: &Snapshot, request: &DecisionRequest) -> DecisionRecord {
    DecisionRecord {
        decision_id: mcp_authz::authz::new_decision_id(),
        time: SystemTime::now(),
        interface: Interface::Authzen,
        request: Arc::new(RecordedRequest::of(request, true)),
        decision: engine.evaluate(snapshot, request),
        latency: Duration::from_micros(20),
        trace: None,
        request_id: None,
        server_source: None,
    }
}

fn log(store: &Arc<PolicyStore>, distinct: bool) -> String {
    let engine = engine(store.clone(), Rules::default());
    let snapshot = engine.snapshot();
    let redactor = Redactor::new(&default_redactions());
    let mut out = String::with_capacity(RECORDS * 1200);
    let mut line = Vec::new();
    for i in 0..RECORDS {
        // Repeated: the 2,000 requests in a fixed shuffled order, 50 rounds.
        let n = if distinct { i } else { (i * 7919) % POOL };
        let record = record(&engine, &snapshot, &request(n, distinct));
        line.clear();
        record.write(&redactor, &mut line).expect("written");
        out.push_str(std::str::from_utf8(&line).expect("UTF-8"));
        out.push('\n');
    }
    out
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let snapshot = Snapshot::load(&dir, 1).expect("reference policies");
    let store = Arc::new(PolicyStore::from_snapshot(snapshot));

    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(RECORDS as u64));
    for (name, distinct) in [("log_100k", false), ("distinct_100k", true)] {
        let text = log(&store, distinct);
        // Sanity: the log replays on its own policies with no difference.
        let check = replay(
            &engine(store.clone(), Rules::default()),
            &mut text.as_bytes(),
            &Options::default(),
        )
        .expect("replay");
        assert_eq!(check.summary.replayed, RECORDS as u64);
        assert_eq!(check.summary.different(), 0);
        assert!(check.summary.same > 0);
        group.bench_function(name, |b| {
            b.iter(|| {
                // A new engine each time: its decision cache starts empty, as in a run.
                let engine = engine(store.clone(), Rules::default());
                let report =
                    replay(&engine, &mut text.as_bytes(), &Options::default()).expect("replay");
                black_box(report.summary.replayed)
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decision_log_record");
    let engine = engine(store.clone(), Rules::default());
    let snapshot = engine.snapshot();
    let redactor = Redactor::new(&default_redactions());
    let request = request(1, false);
    let record = record(&engine, &snapshot, &request);
    let bare = DecisionRecord {
        request: Arc::new(RecordedRequest {
            input: None,
            ..(*record.request).clone()
        }),
        ..record.clone()
    };
    group.bench_function("input_of", |b| {
        b.iter(|| black_box(RecordInput::of(black_box(&request))))
    });
    group.bench_function("serialize_without_input", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            bare.write(&redactor, &mut out).expect("written");
            black_box(out.len())
        })
    });
    group.bench_function("serialize_with_input", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            record.write(&redactor, &mut out).expect("written");
            black_box(out.len())
        })
    });
    group.finish();
    c.final_summary();
}
