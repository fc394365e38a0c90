//! `mcp-authz test` at scale (issue 16: "10,000 cases on the reference set in well under
//! a second"): the cases of `policies/reference.test.yaml` repeated under new names to
//! 10,000, read and decided as `mcp-authz test` does it.
//!
//! Measured:
//! - `policy_tests/parse_10k`: `policytest::parse` of the 10,000-case suite (YAML, every
//!   case's request built);
//! - `policy_tests/run_10k`: `policytest::run` of it (10,000 decisions through
//!   `Engine::evaluate`, no cache, expectations compared);
//! - `policy_tests/coverage_10k`: the coverage of that run.
//!
//! `cargo bench --bench policy_tests` (add `-- --test` for a smoke run).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use mcp_authz::authz::Engine;
use mcp_authz::policy::{PolicyStore, Snapshot};
use mcp_authz::policytest;

const CASES: usize = 10_000;

/// The reference suite with its cases repeated, each under a new name, to `CASES`.
fn big_suite(reference: &str) -> String {
    let (head, cases) = reference.split_once("\ncases:\n").expect("a `cases:` list");
    let blocks: Vec<&str> = cases
        .split("\n  - name: ")
        .filter(|b| !b.trim_start().starts_with('#') && !b.trim().is_empty())
        .collect();
    let mut out = format!("{head}\ncases:\n");
    let mut n = 0;
    'all: for round in 0.. {
        for block in &blocks {
            if n == CASES {
                break 'all;
            }
            let block = block.trim_start_matches("  - name: ");
            out.push_str(&format!("  - name: r{round} {}\n", block.trim_end()));
            n += 1;
        }
    }
    out
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let reference =
        std::fs::read_to_string(dir.join("reference.test.yaml")).expect("reference suite");
    let text = big_suite(&reference);
    let suite = policytest::parse("big.test.yaml", &text).expect("the big suite reads");
    assert_eq!(suite.cases.len(), CASES);
    let snapshot = Snapshot::load(&dir, 1).expect("reference policies");
    let engine = Engine::new(Arc::new(PolicyStore::from_snapshot(snapshot)));
    let suites = [suite];
    let report = policytest::run(&engine, &suites);
    assert_eq!(report.failed(), 0, "the repeated reference cases pass");

    let mut group = c.benchmark_group("policy_tests");
    group.bench_function("parse_10k", |b| {
        b.iter(|| black_box(policytest::parse("big.test.yaml", black_box(&text))))
    });
    group.bench_function("run_10k", |b| {
        b.iter(|| black_box(policytest::run(&engine, black_box(&suites)).passed()))
    });
    let snapshot = engine.snapshot();
    group.bench_function("coverage_10k", |b| {
        b.iter(|| black_box(report.coverage(&snapshot)))
    });
    group.finish();
    c.final_summary();
}
