//! What the decision log costs a decision (issue 20): `Engine::decide` on the reference
//! policies through the decision cache (a hit: the live path at its cheapest, where the
//! log's share shows most), with the log off and on (written to a file by its writer
//! thread), and what a record costs to build on the deciding thread: its request's part
//! built, and shared on a cache hit.
//!
//! The request is shaped like an ext_authz one: a verified token's groups (a
//! per-request entity), scopes and claims, the tool's arguments and the HTTP request's
//! context.
//!
//! `cargo bench --bench decision_log`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_authz::authz::{
    CacheSettings, DecisionMeta, DecisionRequest, Engine, Interface, RequestEntity, TokenFacts,
};
use mcp_authz::mcp::Kind;
use mcp_authz::policy::PolicyStore;
use mcp_authz::telemetry::{
    DecisionLog, DecisionLogConfig, RecordInput, RecordedRequest, Telemetry,
};
use serde_json::{Map, json};

#[path = "common/mod.rs"]
mod common;

fn request() -> DecisionRequest {
    let mut r = common::request();
    r.context.insert(
        "request".into(),
        json!({ "method": "POST", "path": "/docs/mcp", "source_ip": "10.0.0.7" }),
    );
    r.entities.push(RequestEntity {
        uid: Kind::User.uid("alice"),
        parents: vec![Kind::Group.uid("engineering")],
        attrs: Map::new(),
    });
    r.token = Some(TokenFacts {
        scopes: vec!["docs.read".into(), "docs.search".into()],
        claims: Map::new(),
    });
    r
}

fn decision_log(c: &mut Criterion) {
    let store = Arc::new(
        PolicyStore::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
            .expect("reference policies"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let req = request();
    let meta = DecisionMeta::default();
    let mut group = c.benchmark_group("decision_log");
    for (name, file) in [
        ("decide_cached_log_off", None),
        (
            "decide_cached_log_file",
            Some(dir.path().join("decisions.jsonl")),
        ),
    ] {
        let log = file.map(|file| {
            DecisionLog::open(&DecisionLogConfig {
                file: Some(file),
                ..DecisionLogConfig::default()
            })
            .expect("log")
        });
        let telemetry = Arc::new(Telemetry::new(log));
        let engine = Engine::with_recorder(Arc::clone(&store), telemetry.clone())
            .with_cache(&CacheSettings::default());
        let snapshot = engine.snapshot();
        assert!(
            engine
                .decide(&snapshot, Interface::Grpc, &req, &meta)
                .decision
                .allow
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(engine.decide(&snapshot, Interface::Grpc, black_box(&req), &meta));
            });
        });
        if let Some(log) = &telemetry.decision_log {
            assert!(log.close(Duration::from_secs(10)));
            let stats = log.stats();
            eprintln!(
                "{name}: written {}, dropped {}",
                stats.written.load(std::sync::atomic::Ordering::Relaxed),
                stats.dropped.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    group.bench_function("record_input_of", |b| {
        b.iter(|| black_box(RecordInput::of(black_box(&req))));
    });
    group.bench_function("recorded_request_of", |b| {
        b.iter(|| black_box(RecordedRequest::of(black_box(&req), false)));
    });
    // What a cache hit's record takes of its request: the thread's shared copy.
    let log = DecisionLog::open(&DecisionLogConfig {
        file: Some(dir.path().join("recorded.jsonl")),
        ..DecisionLogConfig::default()
    })
    .expect("log");
    let engine = Engine::new(Arc::clone(&store)).with_cache(&CacheSettings::default());
    let snapshot = engine.snapshot();
    let decision = engine
        .decide(&snapshot, Interface::Grpc, &req, &meta)
        .decision;
    group.bench_function("recorded_cache_hit", |b| {
        b.iter(|| black_box(log.recorded(black_box(&decision), black_box(&req))));
    });
    group.finish();
}

criterion_group!(benches, decision_log);
criterion_main!(benches);
