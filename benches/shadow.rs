//! What a shadow adds to a live decision (issue 18): `Engine::decide` on the reference
//! policies through the decision cache (a hit: the live path at its cheapest, where an
//! addition shows most), without a shadow and with a shadow directory as large as the
//! live set (a copy of it) at several sample fractions, and with `@shadow` policies in
//! the live set.
//!
//! The shadow's worker decides on a thread of its own; with every decision sampled it
//! cannot keep up with cache hits, so the queue fills and copies are dropped: the cost
//! measured on the live path is then the sampling draw, the request's clone and a
//! `try_send` (as when the queue has room, less the wake-up of the worker).
//!
//! `cargo bench --bench shadow`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_authz::authz::{CacheSettings, DecisionMeta, Engine, Interface, ShadowSettings};
use mcp_authz::policy::PolicyStore;

#[path = "common/mod.rs"]
mod common;
use common::{copy_dir, request, root};

/// A shadow: its directory (if any) and sample fraction.
type ShadowCase = Option<(Option<Arc<PolicyStore>>, f64)>;

fn engine(store: &Arc<PolicyStore>, shadow: ShadowCase) -> Engine {
    let e = Engine::new(Arc::clone(store)).with_cache(&CacheSettings::default());
    match shadow {
        None => e,
        Some((dir, sample)) => e
            .with_shadow(
                dir,
                ShadowSettings {
                    sample,
                    ..ShadowSettings::default()
                },
            )
            .expect("shadow starts"),
    }
}

fn shadow(c: &mut Criterion) {
    let live = Arc::new(PolicyStore::open(&root().join("policies")).expect("reference"));
    let candidate = tempfile::tempdir().expect("tempdir");
    copy_dir(&root().join("policies"), candidate.path());
    std::fs::write(
        candidate.path().join("candidate.cedar"),
        "@id(\"candidate\")\nforbid (principal, action in Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/delete_document\");\n",
    )
    .expect("write");
    let shadow_dir = Arc::new(PolicyStore::open(candidate.path()).expect("candidate"));
    let staged = tempfile::tempdir().expect("tempdir");
    copy_dir(&root().join("policies"), staged.path());
    std::fs::write(
        staged.path().join("staged.cedar"),
        "@id(\"staged\")\n@shadow\nforbid (principal, action in Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/delete_document\");\n",
    )
    .expect("write");
    let annotated = Arc::new(PolicyStore::open(staged.path()).expect("staged"));

    let req = request();
    let meta = DecisionMeta::default();
    let mut group = c.benchmark_group("shadow");
    let cases: [(&str, &Arc<PolicyStore>, ShadowCase); 6] = [
        ("decide_cached_no_shadow", &live, None),
        ("decide_cached_shadow_idle", &live, Some((None, 1.0))),
        (
            "decide_cached_shadow_dir_sample_0",
            &live,
            Some((Some(Arc::clone(&shadow_dir)), 0.0)),
        ),
        (
            "decide_cached_shadow_dir_sample_0.1",
            &live,
            Some((Some(Arc::clone(&shadow_dir)), 0.1)),
        ),
        (
            "decide_cached_shadow_dir_sample_1",
            &live,
            Some((Some(Arc::clone(&shadow_dir)), 1.0)),
        ),
        (
            "decide_cached_at_shadow_sample_1",
            &annotated,
            Some((None, 1.0)),
        ),
    ];
    for (name, store, shadow) in cases {
        let e = engine(store, shadow);
        let snapshot = e.snapshot();
        assert!(
            e.decide(&snapshot, Interface::Grpc, &req, &meta)
                .decision
                .allow
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(e.decide(&snapshot, Interface::Grpc, black_box(&req), &meta));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, shadow);
criterion_main!(benches);
