//! The load benchmark of mcp-authz and its peers: drives RUNNING servers over their
//! real interfaces, on 127.0.0.1, for a fixed time, and reports throughput,
//! latency percentiles, errors, wrong answers and the server's memory and CPU.
//!
//! It runs only when asked (`cargo bench --bench load -- COMMAND ...`); `cargo bench`
//! without a command, and test runs, print the usage and do nothing. The whole
//! side-by-side comparison is `bench/compare.sh`; BENCHMARKS.md has the results.
//!
//! ```text
//! cargo bench --bench load -- prepare [--out DIR] [--users 10000]
//! cargo bench --bench load -- run --target ext-authz --addr 127.0.0.1:9191 \
//!     --workload randomized --duration 10 --connections 4 --streams 8 --pid PID
//! cargo bench --bench load -- body --target authzen --out FILE   # for wrk / h2load
//! cargo bench --bench load -- report --results FILE
//! cargo bench --bench load -- floor --addr 127.0.0.1:19292   # the transport floor
//! cargo bench --bench load -- floor --service ext-authz --addr 127.0.0.1:19294   # ext_authz's
//! cargo bench --bench load -- run --target health --addr 127.0.0.1:19292 --workload repeated
//! cargo bench --bench load -- allow --addr 127.0.0.1:19293   # the do-nothing ext_authz
//! cargo bench --bench load -- envoy --off A --allow B --authz C --token-file F   # bench/envoy_latency.sh
//! ```

mod cerbos;
mod driver;
mod envoy;
mod files;
mod floor;
mod report;
mod targets;
mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use http::{HeaderName, HeaderValue};
use serde_json::json;

use driver::{Plan, Prepared};
use targets::{Codec, Target};
use workload::Rng;

#[derive(Debug, Parser)]
#[command(name = "load", about = "Load benchmark of mcp-authz and peer PDPs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the bench policies and configurations of mcp-authz, Cerbos and cedar-agent,
    /// and check the workload's expected decisions against mcp-authz's decision core.
    Prepare(PrepareArgs),
    /// Check a running PDP's answers on the probe requests, then load it.
    Run(RunArgs),
    /// Write the repeated request's body (gRPC-framed for gRPC targets), for wrk / h2load.
    Body(BodyArgs),
    /// Print the results (JSON lines written by `run`) as Markdown tables, with ratios.
    Report(ReportArgs),
    /// Serve a transport floor until stopped: a tonic server that only answers, on a
    /// runtime laid out as mcp-authz's (multi-threaded, one worker per core), with
    /// `TCP_NODELAY` as mcp-authz sets it. `--service health` (gRPC health `Check`,
    /// always `SERVING`; load it with `run --target health --workload repeated`) or
    /// `--service ext-authz` (ext_authz `Check` that reads nothing of the request and
    /// allows; load it with `run --target ext-authz --workload repeated --no-probe`).
    Floor(FloorArgs),
    /// Serve the do-nothing authorizer until stopped: ext_authz `Check` that always allows,
    /// on a tonic server laid out as `floor` (bench/envoy_latency.sh).
    Allow(envoy::AllowArgs),
    /// MCP `tools/call` through three Envoy listeners (ext_authz off, to the do-nothing
    /// authorizer, to mcp-authz), alternating, at saturation and at a paced rate; JSON
    /// lines on stdout (bench/envoy_latency.sh).
    Envoy(envoy::EnvoyArgs),
}

#[derive(Debug, clap::Args)]
struct FloorArgs {
    /// Where to listen (host:port).
    #[arg(long, default_value = "127.0.0.1:19292")]
    addr: SocketAddr,
    /// Which floor.
    #[arg(long, value_enum, default_value = "health")]
    service: floor::FloorService,
}

#[derive(Debug, clap::Args)]
struct PrepareArgs {
    /// Output directory [default: target/bench-work]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Bench users in the entity data.
    #[arg(long, default_value_t = 10_000)]
    users: u32,
    /// Cerbos HTTP port (written into its configuration).
    #[arg(long, default_value_t = 13592)]
    cerbos_http: u16,
    /// Cerbos gRPC port.
    #[arg(long, default_value_t = 13593)]
    cerbos_grpc: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// One request over and over (decision cache hits).
    Repeated,
    /// Random users × tools with a unique argument each (decision cache misses).
    Randomized,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Which interface to load.
    #[arg(long, value_enum)]
    target: Target,
    /// Its address (host:port).
    #[arg(long)]
    addr: SocketAddr,
    /// Which workload.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before (not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Stop the measurement after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per connection (gRPC only; HTTP/1.1 has one).
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Bench users (as prepared).
    #[arg(long, default_value_t = 10_000)]
    users: u32,
    /// Distinct randomized requests prepared (each sent with a fresh nonce).
    #[arg(long, default_value_t = 20_000)]
    pool: usize,
    /// Seed of the randomized workload (the same for every PDP).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Read the decision of every n-th answer (statuses are always checked).
    #[arg(long, default_value_t = 16)]
    check_every: u64,
    /// Server process whose memory (VmRSS, VmHWM) and CPU time are read.
    #[arg(long)]
    pid: Option<u32>,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Label of the run in the results.
    #[arg(long)]
    label: Option<String>,
    /// Append the result (one JSON line) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the probe requests.
    #[arg(long)]
    no_probe: bool,
    /// Skip priming ext_authz's token cache before a randomized run (every prepared
    /// request sent once): for a server an earlier run already primed.
    #[arg(long)]
    no_prime: bool,
    /// The longest the priming may take, in seconds (a server under an instrument
    /// such as valgrind needs far longer than 30 to verify 10,000 tokens).
    #[arg(long, default_value_t = 30.0)]
    prime_secs: f64,
    /// What distinguishes this run from others of the same target and workload, in
    /// the results (e.g. `decision-log-file`); the report's ratios compare runs with
    /// none, and name the variants they compare.
    #[arg(long)]
    variant: Option<String>,
    /// The round this run belongs to, in rounds of runs of several servers (`bench/compare.sh`
    /// with ROUNDS): the report compares the runs of each round with each other.
    #[arg(long)]
    round: Option<u32>,
}

#[derive(Debug, clap::Args)]
struct BodyArgs {
    /// Which interface.
    #[arg(long, value_enum)]
    target: Target,
    /// Where to write the body.
    #[arg(long)]
    out: PathBuf,
    /// Cerbos gRPC address (its descriptors come from its reflection service).
    #[arg(long)]
    addr: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// Results file (JSON lines).
    #[arg(long)]
    results: PathBuf,
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; without a command this target does nothing, so
    // that `cargo bench` (all targets) and test runs never start a load run.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.len() < 2 {
        println!(
            "load: nothing to do (usage: cargo bench --bench load -- prepare | run | body | report | floor | allow | envoy; see bench/compare.sh)"
        );
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Prepare(a) => files::prepare(
            &a.out.unwrap_or_else(files::default_work_dir),
            a.users,
            files::CerbosPorts {
                http: a.cerbos_http,
                grpc: a.cerbos_grpc,
            },
        ),
        Command::Run(a) => runtime(a.threads).and_then(|rt| rt.block_on(run(a))),
        Command::Body(a) => runtime(1).and_then(|rt| rt.block_on(body(a))),
        Command::Report(a) => report::print(&a.results),
        Command::Floor(a) => floor::serve(a.addr, a.service),
        Command::Allow(a) => envoy::allow(a),
        Command::Envoy(a) => envoy::envoy(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().map_err(|e| e.to_string())
}

async fn codec_for(target: Target, addr: &str) -> Result<Codec, String> {
    let cerbos = match target {
        Target::CerbosGrpc => Some(cerbos::CerbosCodec::fetch(addr).await?),
        _ => None,
    };
    Codec::new(target, cerbos)
}

fn headers_for(target: Target) -> Vec<(HeaderName, HeaderValue)> {
    match target {
        Target::Gateway => vec![(
            HeaderName::from_static("x-mcp-authz-caller-token"),
            HeaderValue::from_static(files::CALLER_TOKEN),
        )],
        _ => Vec::new(),
    }
}

/// The repeated request, as sent (the nonce fixed).
fn repeated_body(codec: &mut Codec) -> Result<bytes::Bytes, String> {
    codec.encode(&workload::repeated(), Some("0000000020"))
}

async fn body(a: BodyArgs) -> Result<(), String> {
    let mut codec = codec_for(a.target, a.addr.as_deref().unwrap_or("127.0.0.1:13593")).await?;
    let bytes = repeated_body(&mut codec)?;
    std::fs::write(&a.out, &bytes).map_err(|e| format!("{}: {e}", a.out.display()))?;
    for (k, v) in headers_for(a.target) {
        println!("{}: {}", k, v.to_str().unwrap_or_default());
    }
    Ok(())
}

/// Memory and CPU time of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct ProcStats {
    rss_kib: u64,
    hwm_kib: u64,
    cpu_secs: f64,
}

fn proc_stats(pid: &str) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is the 14th field.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    let cpu_secs = (ticks(11) + ticks(12)) / 100.0;
    Some(ProcStats {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        cpu_secs,
    })
}

/// The machine's CPU seconds so far, from /proc/stat.
#[derive(Debug, Clone, Copy)]
struct MachineCpu {
    /// Spent busy by all processes (steal included).
    busy: f64,
    /// Taken by the hypervisor for other guests while this machine had work (steal).
    steal: f64,
}

fn machine_cpu() -> Option<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    // USER_HZ is 100 on Linux.
    Some(MachineCpu {
        busy: busy / 100.0,
        steal: v.get(7)? / 100.0,
    })
}

fn prepare_pool(codec: &mut Codec, a: &RunArgs) -> Result<Vec<Prepared>, String> {
    match a.workload {
        Workload::Repeated => {
            let case = workload::repeated();
            Ok(vec![Prepared {
                bytes: repeated_body(codec)?,
                nonce_at: None,
                expected: case.expected(),
            }])
        }
        Workload::Randomized => {
            let mut rng = Rng::new(a.seed, 0);
            let mut pool = Vec::with_capacity(a.pool);
            for _ in 0..a.pool {
                let case = workload::random_case(&mut rng, a.users);
                let bytes = codec.encode(&case, None)?;
                let at = targets::nonce_offset(&bytes)?;
                pool.push(Prepared {
                    bytes,
                    nonce_at: Some(at),
                    expected: case.expected(),
                });
            }
            Ok(pool)
        }
    }
}

async fn probe(
    target: Target,
    addr: SocketAddr,
    codec: &mut Codec,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<usize, String> {
    let mut problems = Vec::new();
    let probes = workload::probes();
    for case in &probes {
        let body = codec.encode(case, Some("0000000001"))?;
        match driver::once(target, addr, headers, codec, body).await {
            Ok(allow) if allow == case.expected() => {}
            Ok(allow) => problems.push(format!(
                "{} / {} / {} n={}: answered {}, expected {}",
                case.user_id(),
                case.app(),
                case.tool_id(),
                case.n,
                if allow { "allow" } else { "deny" },
                if case.expected() { "allow" } else { "deny" }
            )),
            Err(e) => problems.push(format!("{}: {e}", case.tool_id())),
        }
    }
    if problems.is_empty() {
        Ok(probes.len())
    } else {
        Err(format!(
            "{target} at {addr} gives wrong answers:\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// Prime the token cache of ext_authz: the prepared requests once, in order (so
/// every user's token is verified once), as an Envoy fleet whose callers reuse their
/// tokens would have done long before. At most `secs` (30 by default): where decisions
/// are that slow, a token verification (tens of µs) no longer matters.
async fn prime(plan: &Plan, codec: &Arc<Codec>, nonce: u64, secs: f64) -> Result<(), String> {
    let priming = Plan {
        sequential: true,
        record: false,
        duration: Duration::from_secs_f64(secs),
        max_requests: Some(plan.pool.len() as u64),
        ..plan.clone()
    };
    let tally = driver::run(priming, Arc::clone(codec), nonce).await;
    if tally.ok == 0 {
        return Err(format!(
            "priming failed: {}",
            tally.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

async fn run(a: RunArgs) -> Result<(), String> {
    let mut codec = codec_for(a.target, &a.addr.to_string()).await?;
    let headers = headers_for(a.target);
    if a.target == Target::Health && a.workload != Workload::Repeated {
        return Err("the transport floor has the repeated workload only".into());
    }
    let probes = if a.no_probe || a.target == Target::Health {
        0
    } else {
        probe(a.target, a.addr, &mut codec, &headers).await?
    };
    let pool = prepare_pool(&mut codec, &a)?;
    let allowed_share =
        pool.iter().filter(|p| p.expected).count() as f64 / pool.len().max(1) as f64;
    let codec = Arc::new(codec);
    let plan = Plan {
        target: a.target,
        addr: a.addr,
        pool: Arc::new(pool),
        connections: a.connections,
        streams: if a.target.is_grpc() { a.streams } else { 1 },
        duration: Duration::from_secs_f64(a.warmup),
        max_requests: None,
        check_every: a.check_every.max(1),
        seed: a.seed.wrapping_add(1),
        headers,
        record: false,
        sequential: false,
    };
    let mut nonce = driver::nonce_base();
    if a.workload == Workload::Randomized && a.target == Target::ExtAuthz && !a.no_prime {
        prime(&plan, &codec, nonce, a.prime_secs).await?;
        nonce += 1_000_000;
    }
    if a.warmup > 0.0 {
        let warm = driver::run(plan.clone(), Arc::clone(&codec), nonce).await;
        if warm.ok == 0 {
            return Err(format!(
                "warm-up failed: {}",
                warm.first_error.unwrap_or_default()
            ));
        }
        nonce += 10_000_000;
    }
    let pid = a.pid.map(|p| p.to_string());
    let before = pid.as_deref().and_then(proc_stats);
    let client_before = proc_stats("self");
    let machine_before = machine_cpu();
    let measured = Plan {
        duration: Duration::from_secs_f64(a.duration),
        max_requests: a.requests,
        seed: a.seed,
        record: true,
        ..plan
    };
    let mut tally = driver::run(measured, Arc::clone(&codec), nonce).await;
    let after = pid.as_deref().and_then(proc_stats);
    let client_after = proc_stats("self");
    let machine_after = machine_cpu();
    tally.latencies.sort_unstable();
    let secs = tally.elapsed.as_secs_f64();
    let l = &tally.latencies;
    let mean_us = if l.is_empty() {
        0.0
    } else {
        l.iter().sum::<u64>() as f64 / l.len() as f64 / 1000.0
    };
    let cpu = |b: Option<ProcStats>, a: Option<ProcStats>| match (b, a) {
        (Some(b), Some(a)) => Some(((a.cpu_secs - b.cpu_secs) * 100.0).round() / 100.0),
        _ => None,
    };
    let record = json!({
        "label": a.label.clone().unwrap_or_else(|| a.target.to_string()),
        "variant": a.variant.clone(),
        "target": a.target.to_possible_value().map(|v| v.get_name().to_owned()),
        "interface": a.target.to_string(),
        "workload": a.workload.to_possible_value().map(|v| v.get_name().to_owned()),
        "addr": a.addr.to_string(),
        "connections": a.connections,
        "streams": if a.target.is_grpc() { a.streams } else { 1 },
        "threads": a.threads,
        "users": a.users,
        "duration_s": (secs * 100.0).round() / 100.0,
        "requests": tally.ok,
        "rps": (tally.ok as f64 / secs).round(),
        "p50_us": driver::percentile_us(l, 50.0),
        "p90_us": driver::percentile_us(l, 90.0),
        "p99_us": driver::percentile_us(l, 99.0),
        "max_us": driver::percentile_us(l, 100.0),
        "mean_us": (mean_us * 10.0).round() / 10.0,
        "errors": tally.errors,
        "checked": tally.checked,
        "wrong": tally.wrong,
        "allowed_checked": tally.allowed,
        "allowed_expected_share": (allowed_share * 1000.0).round() / 1000.0,
        "probes_ok": probes,
        "rss_before_kib": before.map(|s| s.rss_kib),
        "rss_after_kib": after.map(|s| s.rss_kib),
        "hwm_kib": after.map(|s| s.hwm_kib),
        "server_cpu_s": cpu(before, after),
        "client_cpu_s": cpu(client_before, client_after),
        // Everything else the machine did meanwhile (other users' builds and runs).
        "other_cpu_s": match (machine_before, machine_after, cpu(before, after), cpu(client_before, client_after)) {
            (Some(b), Some(a), Some(s), Some(c)) => Some((((a.busy - b.busy) - s - c) * 100.0).round() / 100.0),
            _ => None,
        },
        // CPU the hypervisor gave other guests during the measurement: a run with much
        // of it measured a smaller machine than its neighbours did.
        "steal_s": match (machine_before, machine_after) {
            (Some(b), Some(a)) => Some(((a.steal - b.steal) * 100.0).round() / 100.0),
            _ => None,
        },
        "round": a.round,
        "first_error": tally.first_error,
    });
    println!("{record}");
    eprintln!(
        "{} {:?}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs, {} errors, {} wrong of {} read",
        a.target,
        a.workload,
        tally.ok as f64 / secs,
        driver::percentile_us(l, 50.0),
        driver::percentile_us(l, 99.0),
        driver::percentile_us(l, 100.0),
        tally.errors,
        tally.wrong,
        tally.checked
    );
    if let Some(out) = &a.out {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        writeln!(f, "{record}").map_err(|e| e.to_string())?;
    }
    if tally.wrong > 0 {
        return Err(format!("{} wrong decisions", tally.wrong));
    }
    Ok(())
}
