//! The soak driver (`bench/soak.sh` runs it): starts `mcp-authz serve` (release build)
//! on 127.0.0.1 with a temporary copy of the reference policies and a JWKS served over
//! local HTTP, then for a bounded time:
//!
//! - sends a mixed load over Envoy ext_authz gRPC, the gateway's gRPC API and AuthZEN,
//!   each request carrying a bearer token of one of three users (alice, carol, dave)
//!   for CorpAssist, for one of five tools;
//! - flips the policies every `--flip-ms` between two versions (a ConfigMap-style
//!   `..data` symlink swap, atomic): version `a` is the reference set plus a forbid of
//!   a tool nobody calls (`soak-a`), version `b` forbids `docs/get_document` (`soak-b`),
//!   so the answers for `get_document` differ between them;
//! - rotates the issuer's signing key every `--rotate-secs` the way an identity
//!   provider does it: publish the next key beside the current one, sign with it a
//!   third of the period later, withdraw the old key at two thirds;
//! - samples the server's resident memory every second and its `/v1/policies`
//!   (generation → which version it loaded) every 50 ms.
//!
//! Afterwards it stops the server (SIGTERM, so the decision log is flushed) and checks:
//! every request answered (no transport error, no 401, no unexpected status); every
//! answer has a decision-log record with the same decision; every record's generation
//! was seen loading version `a` or `b`; and every answer is what `mcp-authz check
//! --json` says that version decides for that request. It prints a summary (also as
//! JSON into the work directory) and exits non-zero if any check fails.
//!
//! The decision log's queue is large (`--queue`, default 262,144 records) so that no
//! record is dropped and every answer can be checked; the service allocates it whole,
//! about 200 MB at this size, which the memory figures include.
//!
//! The load is paced (`--rate`, requests per second over all workers; default 1500):
//! the point is every answer over minutes of changes, not throughput.
//!
//! Only when asked: `cargo bench --bench soak -- run ...`; without a command (as under
//! `cargo bench`) it prints its usage and does nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use mcp_authz::api::proto::v1::authorizer_client::AuthorizerClient;
use mcp_authz::api::proto::v1::{self as gw, check_request::Message as GwMessage};
use serde_json::{Value, json};
use tonic::transport::Channel;

const USAGE: &str = "usage: cargo bench --bench soak -- run --bin PATH --work DIR \
[--duration SECS] [--flip-ms MS] [--rotate-secs SECS] [--workers N] [--rate REQUESTS_PER_SEC] [--queue DECISION_LOG_QUEUE]";

const ISSUER: &str = "https://idp.soak.example";
const AUDIENCE: &str = "mcp-mesh";
const USERS: [&str; 3] = ["alice", "carol", "dave"];
const TOOLS: [(&str, &str); 5] = [
    ("docs", "get_document"),
    ("docs", "delete_document"),
    ("docs", "summarize_document"),
    ("projects", "find_project"),
    ("projects", "update_issue"),
];
const INTERFACES: [&str; 3] = ["ext_authz", "gateway", "authzen"];

struct Args {
    bin: PathBuf,
    work: PathBuf,
    duration: Duration,
    flip: Duration,
    rotate: Duration,
    workers: usize,
    rate: f64,
    queue: usize,
}

fn parse_args() -> Option<Args> {
    // `cargo bench` appends `--bench`.
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    if it.next().as_deref() != Some("run") {
        return None;
    }
    let mut bin = None;
    let mut work = None;
    let mut duration = 180.0;
    let mut flip_ms = 1000u64;
    let mut rotate = 30u64;
    let mut workers = 2usize;
    let mut rate = 1500.0f64;
    let mut queue = 262_144usize;
    while let Some(a) = it.next() {
        let v = it.next()?;
        match a.as_str() {
            "--bin" => bin = Some(PathBuf::from(v)),
            "--work" => work = Some(PathBuf::from(v)),
            "--duration" => duration = v.parse().ok()?,
            "--flip-ms" => flip_ms = v.parse().ok()?,
            "--rotate-secs" => rotate = v.parse().ok()?,
            "--workers" => workers = v.parse().ok()?,
            "--rate" => rate = v.parse().ok()?,
            "--queue" => queue = v.parse().ok()?,
            _ => return None,
        }
    }
    Some(Args {
        bin: bin?,
        work: work?,
        duration: Duration::from_secs_f64(duration),
        flip: Duration::from_millis(flip_ms),
        rotate: Duration::from_secs(rotate.max(3)),
        workers: workers.max(1),
        rate: if rate > 0.0 { rate } else { 1500.0 },
        queue,
    })
}

fn main() -> std::process::ExitCode {
    let Some(args) = parse_args() else {
        println!("{USAGE}");
        return std::process::ExitCode::SUCCESS;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(soak(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

// ---- keys and tokens ----

struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn load_key(file: &str, kid: &str, alg: Algorithm) -> SigningKey {
    let pem = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/identity")
            .join(file),
    )
    .expect("test key");
    let encoding = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("test key");
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).expect("jwk")).expect("jwk");
    jwk["kid"] = kid.into();
    jwk["use"] = "sig".into();
    SigningKey {
        kid: kid.to_owned(),
        alg,
        encoding,
        jwk,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn sign(key: &SigningKey, user: &str, jti: u64) -> String {
    let header = json!({ "alg": key.alg, "kid": key.kid, "typ": "JWT" });
    let now = unix_now();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": user, "azp": "corpassist",
        "iat": now, "exp": now + 300, "jti": format!("soak-{jti}"),
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding, key.alg).expect("sign");
    format!("{input}.{sig}")
}

/// What the key rotation has published and signs with.
struct KeyState {
    jwks: Value,
    /// One token per user, signed with the current signing key.
    tokens: Vec<String>,
    signing: String,
}

// ---- the policy directory ----

fn write_versions(work: &Path) -> std::io::Result<(PathBuf, PathBuf, PathBuf)> {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let a = work.join("versions/a");
    let b = work.join("versions/b");
    for (dir, flip) in [
        (
            &a,
            "@id(\"soak-a\")\nforbid (principal, action == Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/never_called\");\n",
        ),
        (
            &b,
            "@id(\"soak-b\")\nforbid (principal, action == Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/get_document\");\n",
        ),
    ] {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(&reference)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
            }
        }
        std::fs::write(dir.join("soak-flip.cedar"), flip)?;
    }
    // A ConfigMap's layout: files linked at the top level through `..data`.
    let live = work.join("live");
    std::fs::create_dir_all(&live)?;
    std::os::unix::fs::symlink(&a, live.join("..data"))?;
    for entry in std::fs::read_dir(&a)? {
        let name = entry?.file_name();
        std::os::unix::fs::symlink(Path::new("..data").join(&name), live.join(&name))?;
    }
    Ok((a, b, live))
}

/// Point `live/..data` at `target`, atomically (a rename over the old link).
fn swap_data(live: &Path, target: &Path) -> std::io::Result<()> {
    let tmp = live.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, live.join("..data"))
}

/// `mcp-authz check --json` for every user × tool on a version.
fn expected_answers(bin: &Path, dir: &Path) -> Result<HashMap<(usize, usize), bool>, String> {
    let mut out = HashMap::new();
    for (u, user) in USERS.iter().enumerate() {
        for (t, (server, tool)) in TOOLS.iter().enumerate() {
            let o = Command::new(bin)
                .args([
                    "check",
                    "--json",
                    "--action",
                    "tools/call",
                    "--app",
                    "corpassist",
                ])
                .args(["--resource", &format!("{server}/{tool}"), "--user", user])
                .arg("--policies")
                .arg(dir)
                .env_remove("MCP_AUTHZ_CONFIG")
                .output()
                .map_err(|e| format!("cannot run `check`: {e}"))?;
            let v: Value = serde_json::from_slice(&o.stdout).map_err(|e| {
                format!(
                    "`check --json` printed no JSON ({e}): {}",
                    String::from_utf8_lossy(&o.stderr)
                )
            })?;
            out.insert((u, t), v["decision"] == "allow");
        }
    }
    Ok(out)
}

// ---- the server ----

struct Server {
    child: Child,
    grpc: String,
    http: String,
    admin: String,
}

fn start_server(bin: &Path, config: &Path, log: &Path) -> Result<Server, String> {
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    let log = log.to_path_buf();
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(log).ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = file.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(f, "{line}");
            }
            // `--log-format json` writes the event's fields at the top level (or under
            // `fields`, as tracing-subscriber does without flattening).
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let f = if v.get("fields").is_some() {
                    &v["fields"]
                } else {
                    &v
                };
                if f["message"] == "listening"
                    && let (Some(l), Some(a)) = (f["listener"].as_str(), f["addr"].as_str())
                {
                    let _ = tx.send((l.to_ascii_lowercase(), a.to_owned()));
                }
            }
        }
    });
    let mut addrs = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while addrs.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((l, a)) => {
                addrs.insert(l, a);
            }
            Err(_) => {
                let _ = child.kill();
                return Err(format!(
                    "the server did not report its three listeners: {addrs:?}"
                ));
            }
        }
    }
    let find = |what: &str| {
        addrs
            .iter()
            .find(|(l, _)| l.contains(what))
            .map(|(_, a)| a.clone())
            .ok_or(format!("no `{what}` listener in {addrs:?}"))
    };
    Ok(Server {
        grpc: find("grpc")?,
        admin: find("admin")?,
        http: addrs
            .iter()
            .find(|(l, _)| l.contains("http") && !l.contains("admin"))
            .map(|(_, a)| a.clone())
            .ok_or(format!("no http listener in {addrs:?}"))?,
        child,
    })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---- the load ----

/// One answered (or failed) request.
struct Answer {
    interface: usize,
    user: usize,
    tool: usize,
    allowed: bool,
    decision_id: String,
    /// The generation the answer names, where the interface returns one.
    generation: Option<u64>,
}

#[derive(Default)]
struct Tally {
    answers: Vec<Answer>,
    failures: BTreeMap<String, u64>,
}

fn jsonrpc_body(tool: &str, n: u64) -> String {
    json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
           "params": {"name": tool, "arguments": {"id": format!("doc-{}", n % 17)}}})
    .to_string()
}

async fn ext_authz_call(
    client: &mut AuthorizationClient<Channel>,
    token: &str,
    user: usize,
    tool: usize,
    n: u64,
) -> Result<Answer, String> {
    let (server, name) = TOOLS[tool];
    let bearer = format!("Bearer {token}");
    let check = mcp_authz::fuzzing::check_request(
        "POST",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
            ("mcp-method", "tools/call"),
            ("mcp-name", name),
        ],
        jsonrpc_body(name, n).as_bytes(),
        None,
        Some(server),
    );
    let r = client
        .check(check)
        .await
        .map_err(|s| format!("ext_authz: grpc {:?}", s.code()))?
        .into_inner();
    let code = r.status.map(|s| s.code).unwrap_or_default();
    let allowed = match code {
        0 => true,
        7 => false,
        c => {
            let http = match r.http_response {
                Some(envoy_types::ext_authz::v3::pb::HttpResponse::DeniedResponse(d)) => {
                    d.status.map(|s| s.code).unwrap_or_default()
                }
                _ => 0,
            };
            return Err(format!("ext_authz: status {c} (http {http})"));
        }
    };
    let decision_id = r
        .dynamic_metadata
        .and_then(|m| m.fields.get("decision_id").cloned())
        .and_then(|v| match v.kind {
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => Some(s),
            _ => None,
        })
        .ok_or("ext_authz: no decision id")?;
    Ok(Answer {
        interface: 0,
        user,
        tool,
        allowed,
        decision_id,
        generation: None,
    })
}

async fn gateway_call(
    client: &mut AuthorizerClient<Channel>,
    token: &str,
    user: usize,
    tool: usize,
    n: u64,
) -> Result<Answer, String> {
    let (server, name) = TOOLS[tool];
    let message = if n.is_multiple_of(2) {
        GwMessage::Jsonrpc(jsonrpc_body(name, n).into_bytes())
    } else {
        GwMessage::Mcp(gw::McpRequest {
            method: "tools/call".into(),
            name: name.into(),
            arguments: None,
        })
    };
    let r = client
        .check(gw::CheckRequest {
            identity: Some(gw::Identity {
                bearer_token: token.into(),
                ..gw::Identity::default()
            }),
            server: server.into(),
            message: Some(message),
            ..gw::CheckRequest::default()
        })
        .await
        .map_err(|s| format!("gateway: grpc {:?}", s.code()))?
        .into_inner();
    if !r.allowed && r.deny_kind != gw::DenyKind::Forbidden as i32 {
        return Err(format!("gateway: deny kind {} ({})", r.deny_kind, r.reason));
    }
    if r.decision_id.is_empty() {
        return Err("gateway: no decision id".into());
    }
    Ok(Answer {
        interface: 1,
        user,
        tool,
        allowed: r.allowed,
        decision_id: r.decision_id,
        generation: Some(r.policy_generation),
    })
}

async fn authzen_call(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    user: usize,
    tool: usize,
) -> Result<Answer, String> {
    let (server, name) = TOOLS[tool];
    let body = json!({
        "subject": {"type": "user", "id": USERS[user]},
        "action": {"name": "tools/call"},
        "resource": {"type": "tool", "id": format!("{server}/{name}")},
        "context": {"agent": "corpassist"},
    });
    let r = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            format!(
                "authzen: {}",
                if e.is_timeout() {
                    "timeout"
                } else {
                    "transport error"
                }
            )
        })?;
    if r.status() != reqwest::StatusCode::OK {
        return Err(format!("authzen: http {}", r.status().as_u16()));
    }
    let decision_id = r
        .headers()
        .get("x-decision-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or("authzen: no decision id")?;
    let v: Value = r
        .json()
        .await
        .map_err(|_| "authzen: body is not JSON".to_owned())?;
    let allowed = v["decision"].as_bool().ok_or("authzen: no decision")?;
    Ok(Answer {
        interface: 2,
        user,
        tool,
        allowed,
        decision_id,
        generation: None,
    })
}

/// SplitMix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn worker(
    interface: usize,
    seed: u64,
    server: Arc<(String, String)>,
    keys: Arc<RwLock<KeyState>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    period: Duration,
) -> Result<(), String> {
    let (grpc, http) = &*server;
    let endpoint = format!("http://{grpc}");
    let mut ext = AuthorizationClient::connect(endpoint.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut gwc = AuthorizerClient::connect(endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let web = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{http}/access/v1/evaluation");
    let mut rng = seed;
    let mut n = 0u64;
    let mut due = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Paced: the soak is about answers and memory over time, not throughput.
        due += period;
        tokio::time::sleep_until(due).await;
        n += 1;
        let user = (next(&mut rng) % USERS.len() as u64) as usize;
        let tool = (next(&mut rng) % TOOLS.len() as u64) as usize;
        let token = keys.read().expect("keys").tokens[user].clone();
        let result = match interface {
            0 => ext_authz_call(&mut ext, &token, user, tool, n).await,
            1 => gateway_call(&mut gwc, &token, user, tool, n).await,
            _ => authzen_call(&web, &url, &token, user, tool).await,
        };
        let mut t = tally.lock().expect("tally");
        match result {
            Ok(a) => t.answers.push(a),
            Err(e) => *t.failures.entry(e).or_default() += 1,
        }
    }
    Ok(())
}

// ---- the run ----

async fn soak(args: Args) -> Result<bool, String> {
    let io = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(&args.work).map_err(io)?;
    // Absolute: the service reads paths in its configuration relative to the file.
    let args = Args {
        work: args.work.canonicalize().map_err(io)?,
        ..args
    };
    let (a, b, live) = write_versions(&args.work).map_err(io)?;
    let expected = [
        expected_answers(&args.bin, &a)?,
        expected_answers(&args.bin, &b)?,
    ];
    if (0..USERS.len())
        .all(|u| (0..TOOLS.len()).all(|t| expected[0][&(u, t)] == expected[1][&(u, t)]))
    {
        return Err("the two policy versions decide every request alike".into());
    }

    // The issuer's keys, and the JWKS endpoint.
    let ring = [
        load_key("ec1.pem", "soak-ec1", Algorithm::ES256),
        load_key("ed1.pem", "soak-ed1", Algorithm::EdDSA),
        load_key("rsa1.pem", "soak-rsa1", Algorithm::RS256),
        load_key("ec2.pem", "soak-ec2", Algorithm::ES256),
        load_key("ed2.pem", "soak-ed2", Algorithm::EdDSA),
        load_key("rsa2.pem", "soak-rsa2", Algorithm::RS256),
    ];
    let jti = AtomicU64::new(0);
    let tokens_for = |k: &SigningKey| -> Vec<String> {
        USERS
            .iter()
            .map(|u| sign(k, u, jti.fetch_add(1, Ordering::Relaxed)))
            .collect()
    };
    let keys = Arc::new(RwLock::new(KeyState {
        jwks: json!({ "keys": [ring[0].jwk] }),
        tokens: tokens_for(&ring[0]),
        signing: ring[0].kid.clone(),
    }));
    let jwks_fetches = Arc::new(AtomicU64::new(0));
    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io)?;
    let jwks_addr = jwks_listener.local_addr().map_err(io)?;
    {
        let keys = Arc::clone(&keys);
        let fetches = Arc::clone(&jwks_fetches);
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let doc = keys.read().expect("keys").jwks.clone();
                fetches.fetch_add(1, Ordering::Relaxed);
                async move { axum::Json(doc) }
            }),
        );
        tokio::spawn(async move { axum::serve(jwks_listener, app).await });
    }

    let config = args.work.join("mcp-authz.toml");
    let decisions = args.work.join("decisions.jsonl");
    std::fs::write(
        &config,
        format!(
            r#"policies = "{live}"
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[log]
format = "json"

[[issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_url = "http://{jwks_addr}/jwks.json"
algorithms = ["ES256", "EdDSA", "RS256"]

[jwt]
jwks_refresh_secs = 5
jwks_min_refresh_secs = 1

[decision_log]
file = "{decisions}"
queue_capacity = {queue}
"#,
            live = live.display(),
            decisions = decisions.display(),
            queue = args.queue,
        ),
    )
    .map_err(io)?;

    let mut server = start_server(&args.bin, &config, &args.work.join("server.log"))?;
    let pid = server.child.id();
    let web = reqwest::Client::new();
    let admin = format!("http://{}/v1/policies", server.admin);
    let ready = format!("http://{}/readyz", server.http);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if web
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if Instant::now() > deadline {
            let _ = server.child.kill();
            return Err("the server never became ready".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let addrs = Arc::new((server.grpc.clone(), server.http.clone()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for interface in 0..INTERFACES.len() {
        for w in 0..args.workers {
            tasks.push(tokio::spawn(worker(
                interface,
                (interface * 100 + w) as u64 + 1,
                Arc::clone(&addrs),
                Arc::clone(&keys),
                Arc::clone(&stop),
                Arc::clone(&tally),
                Duration::from_secs_f64((INTERFACES.len() * args.workers) as f64 / args.rate),
            )));
        }
    }

    // Flips, generations, rotation and memory, until the time is up.
    let mut generations: BTreeMap<u64, String> = BTreeMap::new();
    let mut poll_errors = 0u64;
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let mut flips = 0u64;
    let mut rotations = 0u64;
    let mut version_b = false;
    let mut next_flip = started + args.flip;
    let mut next_rss = started;
    let mut next_tokens = started + Duration::from_secs(1);
    let mut phase = 0usize;
    let mut phase_start = started;
    let mut phase_step = 0u8;
    while started.elapsed() < args.duration {
        let now = Instant::now();
        if now >= next_flip {
            version_b = !version_b;
            swap_data(&live, if version_b { &b } else { &a }).map_err(io)?;
            flips += 1;
            next_flip += args.flip;
        }
        if now >= next_rss {
            if let Some(kib) = rss_kib(pid) {
                rss.push((started.elapsed().as_secs_f64(), kib));
            }
            next_rss += Duration::from_secs(1);
        }
        // Rotation, per period: publish the next key beside the current one; a third
        // later sign with it; at two thirds withdraw the old one.
        let in_phase = now.duration_since(phase_start);
        let (current, upcoming) = (&ring[phase % ring.len()], &ring[(phase + 1) % ring.len()]);
        if phase_step == 0 {
            keys.write().expect("keys").jwks = json!({ "keys": [current.jwk, upcoming.jwk] });
            phase_step = 1;
        }
        if phase_step == 1 && in_phase >= args.rotate / 3 {
            let tokens = tokens_for(upcoming);
            let mut k = keys.write().expect("keys");
            k.tokens = tokens;
            k.signing = upcoming.kid.clone();
            drop(k);
            phase_step = 2;
        }
        if phase_step == 2 && in_phase >= args.rotate * 2 / 3 {
            keys.write().expect("keys").jwks = json!({ "keys": [upcoming.jwk] });
            phase_step = 3;
        }
        if phase_step == 3 && in_phase >= args.rotate {
            phase += 1;
            rotations += 1;
            phase_start = now;
            phase_step = 0;
        }
        if now >= next_tokens {
            // Fresh tokens every second: verified anew, not only cache hits.
            let signing = keys.read().expect("keys").signing.clone();
            if let Some(k) = ring.iter().find(|k| k.kid == signing) {
                let tokens = tokens_for(k);
                keys.write().expect("keys").tokens = tokens;
            }
            next_tokens += Duration::from_secs(1);
        }
        match web.get(&admin).send().await {
            Ok(r) => match r.json::<Value>().await {
                Ok(v) => {
                    let ids: Vec<&str> = v["policy_ids"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|p| p["id"].as_str()).collect())
                        .unwrap_or_default();
                    let version = match (ids.contains(&"soak-a"), ids.contains(&"soak-b")) {
                        (true, false) => "a",
                        (false, true) => "b",
                        _ => "?",
                    };
                    if let Some(g) = v["generation"].as_u64() {
                        generations.entry(g).or_insert_with(|| version.to_owned());
                    }
                }
                Err(_) => poll_errors += 1,
            },
            Err(_) => poll_errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut worker_errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => worker_errors.push(e),
            Err(e) => worker_errors.push(e.to_string()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(kib) = rss_kib(pid) {
        rss.push((elapsed, kib));
    }

    // Stop the server gracefully, so the decision log is complete.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let exit_deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = server.child.try_wait().map_err(io)? {
            break Some(s);
        }
        if Instant::now() > exit_deadline {
            let _ = server.child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    // The decision log.
    let mut logged: HashMap<String, (u64, bool)> = HashMap::new();
    let text = std::fs::read_to_string(&decisions).map_err(io)?;
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && let (Some(id), Some(g), Some(d)) = (
                v["decision_id"].as_str(),
                v["generation"].as_u64(),
                v["decision"].as_str(),
            )
        {
            logged.insert(id.to_owned(), (g, d == "allow"));
        }
    }

    let tally = tally.lock().expect("tally");
    let mut per_interface = [0u64; 3];
    let mut missing_log = 0u64;
    let mut log_disagrees = 0u64;
    let mut generation_disagrees = 0u64;
    let mut unknown_generation = 0u64;
    let mut wrong = 0u64;
    let mut served_by: BTreeMap<String, u64> = BTreeMap::new();
    let mut examples = Vec::new();
    for answer in &tally.answers {
        per_interface[answer.interface] += 1;
        let Some(&(g, logged_allow)) = logged.get(&answer.decision_id) else {
            missing_log += 1;
            continue;
        };
        if logged_allow != answer.allowed {
            log_disagrees += 1;
        }
        if answer.generation.is_some_and(|ag| ag != g) {
            generation_disagrees += 1;
        }
        let version = generations.get(&g).map(String::as_str).unwrap_or("?");
        *served_by.entry(version.to_owned()).or_default() += 1;
        let v = match version {
            "a" => 0,
            "b" => 1,
            _ => {
                unknown_generation += 1;
                continue;
            }
        };
        if expected[v][&(answer.user, answer.tool)] != answer.allowed {
            wrong += 1;
            if examples.len() < 5 {
                examples.push(format!(
                    "{} {} {}/{} generation {g} (version {version}): answered {}",
                    INTERFACES[answer.interface],
                    USERS[answer.user],
                    TOOLS[answer.tool].0,
                    TOOLS[answer.tool].1,
                    if answer.allowed { "allow" } else { "deny" }
                ));
            }
        }
    }
    let failed: u64 = tally.failures.values().sum();
    let answered = tally.answers.len() as u64;
    let allowed = tally.answers.iter().filter(|a| a.allowed).count() as u64;
    let flipped_answers = tally.answers.iter().filter(|a| a.tool == 0).count() as u64;
    // RSS: after the first 20% of the run (warm-up), compare the first and last fifths.
    let steady: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= elapsed * 0.2)
        .map(|(_, k)| *k)
        .collect();
    let fifth = (steady.len() / 5).max(1);
    let mean = |s: &[u64]| {
        if s.is_empty() {
            0.0
        } else {
            s.iter().sum::<u64>() as f64 / s.len() as f64
        }
    };
    let early = mean(&steady[..fifth.min(steady.len())]);
    let late = mean(&steady[steady.len().saturating_sub(fifth)..]);
    let growth = if early > 0.0 {
        (late - early) / early * 100.0
    } else {
        0.0
    };
    let rss_min = rss.iter().map(|r| r.1).min().unwrap_or_default();
    let rss_max = rss.iter().map(|r| r.1).max().unwrap_or_default();
    let versions_seen: BTreeMap<&str, usize> =
        generations.values().fold(BTreeMap::new(), |mut m, v| {
            *m.entry(v.as_str()).or_default() += 1;
            m
        });

    let summary = json!({
        "duration_secs": (elapsed * 10.0).round() / 10.0,
        "requests": answered + failed,
        "requests_per_sec": ((answered + failed) as f64 / elapsed).round(),
        "answered": answered,
        "answered_by_interface": {"ext_authz_grpc": per_interface[0], "gateway_grpc": per_interface[1], "authzen_http": per_interface[2]},
        "allowed": allowed,
        "get_document_answers": flipped_answers,
        "failed": failed,
        "failures": tally.failures,
        "worker_errors": worker_errors,
        "decision_log_records": logged.len(),
        "answers_without_log_record": missing_log,
        "log_decision_differs_from_answer": log_disagrees,
        "gateway_generation_differs_from_log": generation_disagrees,
        "answers_of_unknown_generation": unknown_generation,
        "answers_differing_from_their_generation": wrong,
        "answers_by_version": served_by,
        "wrong_examples": examples,
        "policy_flips": flips,
        "generations_seen": generations.len(),
        "generations_by_version": versions_seen,
        "admin_poll_errors": poll_errors,
        "key_rotations": rotations,
        "jwks_fetches": jwks_fetches.load(Ordering::Relaxed),
        "rss_kib": {"min": rss_min, "max": rss_max, "steady_first_fifth_mean": early.round(), "steady_last_fifth_mean": late.round(), "growth_percent": (growth * 10.0).round() / 10.0, "samples": rss.len()},
        "server_exit": exit.map(|s| s.to_string()),
    });
    std::fs::write(
        args.work.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .map_err(io)?;
    let rss_series: String = rss.iter().map(|(t, k)| format!("{t:.1} {k}\n")).collect();
    std::fs::write(args.work.join("rss.txt"), rss_series).map_err(io)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    );

    let ok = failed == 0
        && worker_errors.is_empty()
        && answered > 0
        && missing_log == 0
        && log_disagrees == 0
        && generation_disagrees == 0
        && unknown_generation == 0
        && wrong == 0
        && versions_seen.contains_key("a")
        && versions_seen.contains_key("b")
        && growth < 10.0;
    println!("soak: {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}
