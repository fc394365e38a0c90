//! How decisions and snapshot builds scale with the number of policies (issue 8).
//!
//! A mesh grows by tools: each size is N tools × 10 groups, one permit per
//! (tool, group) pair, plus the forbids of the reference policies (`policies/`),
//! with the reference schema (and its typed tools, `policies/tools/`) and entity
//! data extended by the mesh's groups, users, applications, servers and tools.
//! Sizes: N = 1, 10, 100, 1,000, i.e. 10, 100, 1,000 and 10,000 generated permits.
//!
//! Measured, on the same requests:
//! - `decide/indexed`: `decide()`, the index choosing the policies to evaluate;
//! - `decide/unindexed`: `decide_unindexed()`, Cedar evaluating every policy;
//! - `decide/indexed_no_set_cache`: `decide()` with the cache of candidate sets
//!   off, so every evaluation builds its `PolicySet` (the cache-miss path);
//! - `decide_request_entities/*`: requests that bring entity data of their own
//!   (groups from a token, a tool the entity data does not list);
//! - `snapshot_build`: sources in memory to a validated, indexed snapshot;
//! - `index_build`: the index alone.
//!
//! Each `decide` iteration is one whole decision (user and application: two
//! Cedar evaluations), cycling through 64 requests. No decision cache is
//! involved: these call the free function `decide`.
//!
//! `cargo bench --bench scaling` runs it all in a few minutes on 2 cores. Set
//! `SCALING_BENCH_DIR` to keep the generated policy directories there.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cedar_policy::{Effect, PolicySet};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use mcp_authz::authz::{DecisionRequest, RequestEntity, decide, decide_unindexed};
use mcp_authz::mcp::{Kind, action};
use mcp_authz::policy::{IndexOptions, PolicyIndex, Snapshot, build, read_sources};
use serde_json::{Map, Value, json};

#[path = "common/mod.rs"]
mod common;

const GROUPS: usize = 10;
const TOOLS_PER_SERVER: usize = 10;
const USERS: usize = 44;
const APPS: usize = 6;
const REQUESTS: usize = 64;
/// Tools in the mesh; times `GROUPS` permits each.
const SIZES: [usize; 4] = [1, 10, 100, 1_000];

fn reference_dir() -> PathBuf {
    common::root().join("policies")
}

fn server_of(tool: usize) -> usize {
    tool / TOOLS_PER_SERVER
}

fn entity(ty: &str, id: &str, parents: &[(&str, String)]) -> Value {
    json!({
        "uid": { "type": format!("Mcp::{ty}"), "id": id },
        "attrs": {},
        "parents": parents.iter().map(|(t, i)| json!({ "type": format!("Mcp::{t}"), "id": i })).collect::<Vec<_>>(),
    })
}

/// The groups of mesh user `k`: one or two of the ten, or none for every
/// eleventh user (whose requests are denied).
fn user_groups(k: usize) -> Vec<usize> {
    match k % 11 {
        10 => vec![],
        r if r % 2 == 0 => vec![k % GROUPS],
        _ => vec![k % GROUPS, (k * 3 + 1) % GROUPS],
    }
}

/// Write a policy directory for a mesh of `tools` tools.
fn generate(dir: &Path, tools: usize) {
    let reference = reference_dir();
    std::fs::copy(
        reference.join("mcp.cedarschema"),
        dir.join("mcp.cedarschema"),
    )
    .expect("schema");
    // The reference forbids name typed tool actions, declared by the schema fragments
    // (and tool entities) under `tools/`: copied as they are.
    std::fs::create_dir_all(dir.join("tools")).expect("tools dir");
    common::copy_dir(&reference.join("tools"), &dir.join("tools"));

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
        let parents: Vec<_> = user_groups(k)
            .into_iter()
            .map(|g| ("Group", format!("g{g}")))
            .collect();
        entities.push(entity("User", &format!("m{k}"), &parents));
    }
    for a in 0..APPS {
        // agent5 is in no group.
        let parents: Vec<_> = (a < APPS - 1)
            .then(|| ("Group", format!("g{}", a * 2)))
            .into_iter()
            .collect();
        entities.push(entity("Application", &format!("agent{a}"), &parents));
    }
    for s in 0..=server_of(tools - 1) {
        entities.push(entity("Server", &format!("mesh{s}"), &[]));
    }
    for t in 0..tools {
        let s = server_of(t);
        entities.push(entity(
            "Tool",
            &format!("mesh{s}/tool{t}"),
            &[("Server", format!("mesh{s}"))],
        ));
    }
    std::fs::write(
        dir.join("entities.json"),
        serde_json::to_string(&entities).expect("json"),
    )
    .expect("write entities");

    // The reference forbids, as they are written.
    let mut forbids = String::new();
    for entry in std::fs::read_dir(&reference).expect("reference") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "cedar") {
            let text = std::fs::read_to_string(&path).expect("read");
            let set = PolicySet::from_str(&text).expect("reference parses");
            for p in set.policies().filter(|p| p.effect() == Effect::Forbid) {
                let _ = writeln!(forbids, "{p}\n");
            }
        }
    }
    std::fs::write(dir.join("reference-forbids.cedar"), forbids).expect("write forbids");

    // One file per MCP server: a permit per (tool, group).
    std::fs::create_dir_all(dir.join("mesh")).expect("mesh dir");
    for s in 0..=server_of(tools - 1) {
        let mut text = String::new();
        for t in (0..tools).filter(|t| server_of(*t) == s) {
            for g in 0..GROUPS {
                let _ = writeln!(
                    text,
                    "@id(\"mesh{s}-tool{t}-g{g}\")\npermit (\n  principal in Mcp::Group::\"g{g}\",\n  action in Mcp::Action::\"tools/call\",\n  resource == Mcp::Tool::\"mesh{s}/tool{t}\"\n);\n"
                );
            }
        }
        std::fs::write(dir.join("mesh").join(format!("server{s}.cedar")), text)
            .expect("write policies");
    }
}

fn tool_call(server: usize, tool_id: &str) -> DecisionRequest {
    let mut r = DecisionRequest::new(action("tools/call"), Kind::Tool.uid(tool_id));
    r.server = Some(Kind::Server.uid(&format!("mesh{server}")));
    r
}

/// Requests from users and applications the entity data lists, for tools it lists.
fn known_requests(tools: usize) -> Vec<DecisionRequest> {
    (0..REQUESTS)
        .map(|k| {
            let t = (k * 7919) % tools;
            let s = server_of(t);
            let mut r = tool_call(s, &format!("mesh{s}/tool{t}"));
            r.user = Some(Kind::User.uid(&format!("m{}", k % USERS)));
            r.application = Some(Kind::Application.uid(&format!("agent{}", k % APPS)));
            r.context
                .insert("arguments".into(), json!({ "query": "titan" }));
            r
        })
        .collect()
}

/// Requests that bring entity data: users known only from their token's groups,
/// and every other request for a tool the entity data does not list.
fn request_entity_requests(tools: usize) -> Vec<DecisionRequest> {
    (0..REQUESTS)
        .map(|k| {
            let t = (k * 7919) % tools;
            let s = server_of(t);
            let tool_id = if k % 2 == 0 {
                format!("mesh{s}/tool{t}")
            } else {
                format!("mesh{s}/unlisted{k}")
            };
            let mut r = tool_call(s, &tool_id);
            let user = Kind::User.uid(&format!("token-user{k}"));
            r.entities.push(RequestEntity {
                uid: user.clone(),
                parents: vec![Kind::Group.uid(&format!("g{}", k % GROUPS))],
                attrs: Map::new(),
            });
            r.user = Some(user);
            r.application = Some(Kind::Application.uid(&format!("agent{}", k % APPS)));
            r
        })
        .collect()
}

struct Mesh {
    policies: usize,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    snapshot: Snapshot,
    /// The same policies, with the cache of candidate sets off.
    uncached: Snapshot,
}

fn mesh(tools: usize) -> Mesh {
    let (dir, temp) = match std::env::var_os("SCALING_BENCH_DIR") {
        Some(root) => {
            let dir = PathBuf::from(root).join(format!("{}", tools * GROUPS));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("bench dir");
            (dir, None)
        }
        None => {
            let temp = tempfile::tempdir().expect("tempdir");
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    generate(&dir, tools);
    let snapshot = Snapshot::load(&dir, 1).unwrap_or_else(|p| {
        panic!(
            "generated mesh does not load: {}",
            p.one_line_each().join("\n")
        )
    });
    let mut uncached = Snapshot::load(&dir, 1).expect("loads twice");
    uncached.index = PolicyIndex::with_options(
        &uncached.policies,
        IndexOptions {
            cache_policies: 0,
            ..IndexOptions::default()
        },
    );
    // The indexed and unindexed decisions agree here too.
    for r in known_requests(tools)
        .iter()
        .chain(&request_entity_requests(tools))
    {
        assert_eq!(decide(&snapshot, r), decide_unindexed(&snapshot, r));
    }
    Mesh {
        policies: snapshot.policy_count(),
        dir,
        _temp: temp,
        snapshot,
        uncached,
    }
}

fn cycle<'a>(requests: &'a [DecisionRequest]) -> impl FnMut() -> &'a DecisionRequest + 'a {
    let mut k = 0;
    move || {
        k = (k + 1) % requests.len();
        &requests[k]
    }
}

/// One benchmark of `group`: `decide_fn` on `snapshot`, cycling through `requests`.
fn bench_cycling(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    m: &Mesh,
    snapshot: &Snapshot,
    requests: &[DecisionRequest],
    decide_fn: fn(&Snapshot, &DecisionRequest) -> mcp_authz::authz::Decision,
) {
    group.bench_with_input(BenchmarkId::new(name, m.policies), snapshot, |b, s| {
        let mut next = cycle(requests);
        b.iter(|| black_box(decide_fn(s, next())));
    });
}

fn bench_decide(c: &mut Criterion, meshes: &[Mesh]) {
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    for m in meshes {
        let requests = known_requests((m.policies - reference_forbids()) / GROUPS);
        bench_cycling(&mut group, "indexed", m, &m.snapshot, &requests, decide);
        bench_cycling(
            &mut group,
            "unindexed",
            m,
            &m.snapshot,
            &requests,
            decide_unindexed,
        );
        bench_cycling(
            &mut group,
            "indexed_no_set_cache",
            m,
            &m.uncached,
            &requests,
            decide,
        );
    }
    group.finish();

    let mut group = c.benchmark_group("decide_request_entities");
    group.throughput(Throughput::Elements(1));
    for m in meshes {
        let requests = request_entity_requests((m.policies - reference_forbids()) / GROUPS);
        bench_cycling(&mut group, "indexed", m, &m.snapshot, &requests, decide);
        bench_cycling(
            &mut group,
            "unindexed",
            m,
            &m.snapshot,
            &requests,
            decide_unindexed,
        );
    }
    group.finish();
}

fn bench_build(c: &mut Criterion, meshes: &[Mesh]) {
    let mut group = c.benchmark_group("snapshot_build");
    for m in meshes {
        let sources = read_sources(&m.dir).expect("sources");
        // The snapshot built is dropped outside the measurement: a reload drops the
        // old snapshot when its last reader lets go of it, not while building.
        group.bench_with_input(BenchmarkId::from_parameter(m.policies), &sources, |b, s| {
            b.iter_with_large_drop(|| build(s, 1).expect("builds"));
        });
    }
    // The largest mesh again, with every policy in one file.
    if let Some(m) = meshes.last() {
        let mut sources = read_sources(&m.dir).expect("sources");
        let all: String = sources
            .policies
            .iter()
            .map(|(_, text)| text.as_str())
            .collect();
        sources.policies = vec![("all.cedar".to_owned(), all)];
        group.bench_with_input(
            BenchmarkId::new("one_file", m.policies),
            &sources,
            |b, s| b.iter_with_large_drop(|| build(s, 1).expect("builds")),
        );
    }
    group.finish();
    let mut group = c.benchmark_group("index_build");
    for m in meshes {
        group.bench_with_input(
            BenchmarkId::from_parameter(m.policies),
            &m.snapshot.policies,
            |b, p| b.iter_with_large_drop(|| PolicyIndex::new(p)),
        );
    }
    group.finish();
}

/// How many forbids the reference policies hold.
fn reference_forbids() -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(reference_dir()).expect("reference") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "cedar") {
            let text = std::fs::read_to_string(&path).expect("read");
            let set = PolicySet::from_str(&text).expect("parses");
            n += set
                .policies()
                .filter(|p| p.effect() == Effect::Forbid)
                .count();
        }
    }
    n
}

/// Fill the largest mesh's cache of candidate sets to its capacity (every tool,
/// for users of every group combination), and report what it holds and costs.
fn fill_set_cache(m: &Mesh) {
    let before = memory();
    let tools = (m.policies - reference_forbids()) / GROUPS;
    let started = std::time::Instant::now();
    let mut decisions = 0;
    for t in 0..tools {
        let s = server_of(t);
        for k in 0..11 {
            let mut r = tool_call(s, &format!("mesh{s}/tool{t}"));
            r.user = Some(Kind::User.uid(&format!("m{k}")));
            r.application = Some(Kind::Application.uid(&format!("agent{}", k % APPS)));
            black_box(decide(&m.snapshot, &r));
            decisions += 1;
        }
    }
    let stats = m.snapshot.index.stats();
    eprintln!(
        "{} policies: {decisions} distinct decisions in {:?}; {} candidate sets cached; memory before: {before}; after: {}",
        m.policies,
        started.elapsed(),
        stats.cached_sets,
        memory()
    );
}

/// `VmRSS` and `VmHWM` of this process, from `/proc/self/status` (Linux).
fn memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let meshes: Vec<Mesh> = SIZES.iter().map(|&t| mesh(t)).collect();
    for m in &meshes {
        let stats = m.snapshot.index.stats();
        eprintln!(
            "mesh: {} policies ({} indexed, {} always evaluated), {} entities, dir {}",
            m.policies,
            stats.indexed,
            stats.always,
            m.snapshot.entities.len(),
            m.dir.display()
        );
    }
    eprintln!("memory with every mesh loaded: {}", memory());
    bench_decide(&mut c, &meshes);
    for m in &meshes {
        eprintln!(
            "{} policies: {} candidate sets cached",
            m.policies,
            m.snapshot.index.stats().cached_sets
        );
    }
    eprintln!("memory after the decide benchmarks: {}", memory());
    if let Some(m) = meshes.last() {
        fill_set_cache(m);
    }
    bench_build(&mut c, &meshes);
    c.final_summary();
}
