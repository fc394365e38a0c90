//! The latency ext_authz adds through real Envoy (issue 20; `bench/envoy_latency.sh`).
//!
//! - `allow`: the do-nothing authorizer, a tonic `envoy.service.auth.v3.Authorization/Check`
//!   that allows every request, on a runtime laid out as mcp-authz's (multi-threaded, one
//!   worker per core, `TCP_NODELAY`): what Envoy's ext_authz filter and the gRPC hop cost.
//! - `envoy`: MCP `tools/call` POSTs with a bearer token to three Envoy listeners (the arms:
//!   ext_authz off, to the do-nothing authorizer, to mcp-authz), in blocks that alternate
//!   between the arms, first at saturation (closed loop: every connection sends its next
//!   request as soon as the last is answered), then at a fixed rate paced evenly (open
//!   loop: request `i` is due at `i / rate` seconds, the connections taking turns, and its
//!   latency counts from when it was due, so a late answer delays nothing unmeasured).
//!
//! The HTTP/1.1 client is plain blocking sockets, one thread per connection: each
//! request's time is its own, and a thread sleeps to the microsecond where tokio's timer
//! would round to the millisecond.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::CheckResponseExt;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, OkHttpResponse,
};
use serde_json::json;

use crate::driver::percentile_us;

#[derive(Debug, clap::Args)]
pub struct AllowArgs {
    /// Where to listen (host:port).
    #[arg(long, default_value = "127.0.0.1:19293")]
    addr: SocketAddr,
}

#[derive(Debug, clap::Args)]
pub struct EnvoyArgs {
    /// The Envoy listener without ext_authz.
    #[arg(long)]
    off: SocketAddr,
    /// The Envoy listener whose ext_authz goes to the do-nothing authorizer (`allow`).
    #[arg(long)]
    allow: SocketAddr,
    /// The Envoy listener whose ext_authz goes to mcp-authz.
    #[arg(long)]
    authz: SocketAddr,
    /// The request path (the route of the MCP server).
    #[arg(long, default_value = "/docs/call")]
    path: String,
    /// A file holding the bearer token.
    #[arg(long)]
    token_file: PathBuf,
    /// Seconds per block (one arm, one mode).
    #[arg(long, default_value_t = 3.0)]
    block: f64,
    /// Blocks per arm and mode (the arms alternate, their order rotating each round).
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Seconds of warm-up per arm before the first round (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Connections at saturation.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Connections of the paced run (each sends one request at a time).
    #[arg(long, default_value_t = 16)]
    paced_connections: usize,
    /// The paced rate, requests per second [default: `--rate-fraction` of the lowest
    /// saturation throughput of the three arms].
    #[arg(long)]
    rate: Option<f64>,
    /// The paced rate as a fraction of the lowest saturation throughput.
    #[arg(long, default_value_t = 0.5)]
    rate_fraction: f64,
}

/// The do-nothing authorizer: every `Check` is an allow.
#[derive(Debug, Default)]
struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let mut response = CheckResponse::with_status(tonic::Status::ok(""));
        response.set_http_response(OkHttpResponse::default());
        Ok(tonic::Response::new(response))
    }
}

/// Serve the do-nothing authorizer until stopped.
pub fn allow(a: AllowArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let addr = a.addr;
    rt.block_on(async move {
        eprintln!("allow: ext_authz Check (always allow) on {addr}");
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(AuthorizationServer::new(AllowAll))
            .serve_with_shutdown(addr, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| format!("{addr}: {e}"))
    })
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Send `request`, read the whole answer; `Ok(status)`.
    fn call(&mut self, request: &[u8]) -> Result<u16, String> {
        let result = self.try_call(request);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn try_call(&mut self, request: &[u8]) -> Result<u16, String> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(self.addr)
                    .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| e.to_string())?;
                self.stream.insert(s)
            }
        };
        stream.write_all(request).map_err(|e| e.to_string())?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let mut head_end = None;
        let mut total = None;
        loop {
            if let (Some(_), Some(t)) = (head_end, total)
                && self.buf.len() >= t
            {
                break;
            }
            let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the connection closed mid-answer".into());
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
            if head_end.is_none()
                && let Some(i) = find(&self.buf, b"\r\n\r\n")
            {
                head_end = Some(i + 4);
                let head = String::from_utf8_lossy(self.buf.get(..i).unwrap_or_default());
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| format!("an answer without content-length: {head}"))?;
                total = Some(i + 4 + length);
            }
        }
        let status = self
            .buf
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or("an answer without a status line")?;
        if self.buf.len() > total.unwrap_or_default() {
            return Err("more bytes than the answer (pipelining?)".into());
        }
        Ok(status)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, Default)]
struct Block {
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
}

impl Block {
    fn merge(&mut self, other: Block) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Closed loop.
    Saturate,
    /// Requests per second, paced evenly over the connections.
    Rate(f64),
}

/// One block on one arm: `connections` threads for `seconds`.
fn block(addr: SocketAddr, request: &[u8], connections: usize, seconds: f64, pace: Pace) -> Block {
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(seconds);
    let mut total = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|k| {
                scope.spawn(move || {
                    let mut conn = Conn::new(addr);
                    let mut out = Block::default();
                    let mut i: u64 = 0;
                    loop {
                        let due = match pace {
                            Pace::Saturate => {
                                let now = Instant::now();
                                if now < start {
                                    std::thread::sleep(start - now);
                                    continue;
                                }
                                now
                            }
                            Pace::Rate(rate) => {
                                let n = i * connections as u64 + k as u64;
                                start + Duration::from_secs_f64(n as f64 / rate)
                            }
                        };
                        if due >= end {
                            break;
                        }
                        let now = Instant::now();
                        if now < due {
                            std::thread::sleep(due - now);
                        }
                        i += 1;
                        match conn.call(request) {
                            Ok(200) => out.latencies.push(due.elapsed().as_nanos() as u64),
                            Ok(status) => {
                                out.errors += 1;
                                out.first_error
                                    .get_or_insert(format!("HTTP status {status}"));
                            }
                            Err(e) => {
                                out.errors += 1;
                                out.first_error.get_or_insert(e);
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        let mut total = Block::default();
        for h in handles {
            match h.join() {
                Ok(b) => total.merge(b),
                Err(_) => {
                    total.errors += 1;
                    total
                        .first_error
                        .get_or_insert("a load thread panicked".into());
                }
            }
        }
        total
    });
    total.seconds = seconds;
    total
}

const ARMS: [&str; 3] = ["off", "allow", "mcp-authz"];

#[derive(Debug, Default)]
struct Arm {
    total: Block,
}

impl Arm {
    fn summary(&mut self, mode: &str, rate: Option<f64>) -> serde_json::Value {
        self.total.latencies.sort_unstable();
        let l = &self.total.latencies;
        let n = l.len() as f64;
        json!({
            "mode": mode,
            "rate": rate,
            "n": l.len(),
            "errors": self.total.errors,
            "first_error": self.total.first_error,
            "rps": if self.total.seconds > 0.0 { n / self.total.seconds } else { 0.0 },
            "p50_us": percentile_us(l, 50.0),
            "p90_us": percentile_us(l, 90.0),
            "p99_us": percentile_us(l, 99.0),
            "p999_us": percentile_us(l, 99.9),
        })
    }
}

fn run_mode(
    a: &EnvoyArgs,
    request: &[u8],
    pace: Pace,
    connections: usize,
) -> Result<[Arm; 3], String> {
    let addrs = [a.off, a.allow, a.authz];
    let mut arms: [Arm; 3] = Default::default();
    for round in 0..a.rounds as usize {
        for j in 0..3 {
            let i = (round + j) % 3;
            let addr = *addrs.get(i).ok_or("no such arm")?;
            let b = block(addr, request, connections, a.block, pace);
            let arm = arms.get_mut(i).ok_or("no such arm")?;
            eprintln!(
                "  round {} {:>9}: {:>6} ok, {} errors, {:.0} req/s",
                round + 1,
                ARMS.get(i).copied().unwrap_or_default(),
                b.latencies.len(),
                b.errors,
                b.latencies.len() as f64 / a.block
            );
            let seconds = arm.total.seconds + b.seconds;
            arm.total.merge(b);
            arm.total.seconds = seconds;
        }
    }
    Ok(arms)
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v.get(k)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// Measure the three arms at saturation and at a paced rate; JSON lines on stdout.
pub fn envoy(a: EnvoyArgs) -> Result<(), String> {
    if !(a.block > 0.0 && a.rounds > 0 && a.connections > 0 && a.paced_connections > 0) {
        return Err("`--block`, `--rounds` and the connections must be above 0".into());
    }
    let token = std::fs::read_to_string(&a.token_file)
        .map_err(|e| format!("`{}`: {e}", a.token_file.display()))?;
    let body = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
    })
    .to_string();
    let request = format!(
        "POST {} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-protocol-version: 2025-11-25\r\ncontent-length: {}\r\n\r\n{}",
        a.path,
        token.trim(),
        body.len(),
        body
    )
    .into_bytes();

    for (name, addr) in ARMS.iter().zip([a.off, a.allow, a.authz]) {
        let b = block(addr, &request, a.connections, a.warmup, Pace::Saturate);
        if b.latencies.is_empty() {
            return Err(format!(
                "arm {name} ({addr}) answered nothing: {}",
                b.first_error.unwrap_or_default()
            ));
        }
        eprintln!(
            "warm-up {name:>9}: {} ok, {} errors{}",
            b.latencies.len(),
            b.errors,
            b.first_error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }

    let mut lines = Vec::new();
    eprintln!("saturation: {} connections", a.connections);
    let mut sat = run_mode(&a, &request, Pace::Saturate, a.connections)?;
    let mut sat_json = Vec::new();
    for (name, arm) in ARMS.iter().zip(sat.iter_mut()) {
        let mut v = arm.summary("saturation", None);
        v["arm"] = json!(name);
        v["connections"] = json!(a.connections);
        sat_json.push(v);
    }
    let lowest = sat_json
        .iter()
        .map(|v| num(v, "rps"))
        .fold(f64::INFINITY, f64::min);
    let rate = a.rate.unwrap_or(lowest * a.rate_fraction);
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("no rate to pace at ({rate})"));
    }
    eprintln!(
        "paced: {rate:.0} req/s over {} connections",
        a.paced_connections
    );
    let mut paced = run_mode(&a, &request, Pace::Rate(rate), a.paced_connections)?;
    let mut paced_json = Vec::new();
    for (name, arm) in ARMS.iter().zip(paced.iter_mut()) {
        let mut v = arm.summary("paced", Some(rate));
        v["arm"] = json!(name);
        v["connections"] = json!(a.paced_connections);
        paced_json.push(v);
    }
    lines.extend(sat_json.iter().cloned());
    lines.extend(paced_json.iter().cloned());
    let pick =
        |set: &[serde_json::Value], i: usize, k: &str| set.get(i).map_or(f64::NAN, |v| num(v, k));
    let summary = json!({
        "summary": true,
        "rate": rate,
        "saturation_rps": {"off": pick(&sat_json, 0, "rps"), "allow": pick(&sat_json, 1, "rps"), "mcp-authz": pick(&sat_json, 2, "rps")},
        "throughput_ratio_to_allow": pick(&sat_json, 2, "rps") / pick(&sat_json, 1, "rps"),
        "saturation_added_p50_us": pick(&sat_json, 2, "p50_us") - pick(&sat_json, 1, "p50_us"),
        "saturation_added_p99_us": pick(&sat_json, 2, "p99_us") - pick(&sat_json, 1, "p99_us"),
        "paced_added_p50_us": pick(&paced_json, 2, "p50_us") - pick(&paced_json, 1, "p50_us"),
        "paced_added_p99_us": pick(&paced_json, 2, "p99_us") - pick(&paced_json, 1, "p99_us"),
        "paced_allow_over_off_p50_us": pick(&paced_json, 1, "p50_us") - pick(&paced_json, 0, "p50_us"),
    });
    lines.push(summary);
    for l in &lines {
        println!("{l}");
    }
    eprintln!();
    eprintln!("| mode | arm | req/s | p50 µs | p99 µs | errors |");
    eprintln!("|---|---|---:|---:|---:|---:|");
    for l in lines.iter().take(6) {
        eprintln!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} |",
            l["mode"].as_str().unwrap_or_default(),
            l["arm"].as_str().unwrap_or_default(),
            num(l, "rps"),
            num(l, "p50_us"),
            num(l, "p99_us"),
            l["errors"]
        );
    }
    let s = lines.last().cloned().unwrap_or_default();
    eprintln!(
        "mcp-authz over the do-nothing authorizer: p50 +{:.0} µs paced (+{:.0} µs at saturation), p99 +{:.0} µs paced; throughput ×{:.2}",
        num(&s, "paced_added_p50_us"),
        num(&s, "saturation_added_p50_us"),
        num(&s, "paced_added_p99_us"),
        num(&s, "throughput_ratio_to_allow")
    );
    Ok(())
}
