//! Slow and idle clients against the service on 127.0.0.1: half-sent HTTP requests,
//! silent TCP and HTTP/2 connections, unanswered keepalive pings and slow bodies
//! (in-process, `support::inproc::Service`); and a flood of them at a 128-descriptor
//! limit while health checks, decisions and reloads go on, and the raise of the soft
//! descriptor limit (`mcp-authz serve` as a process: the limit and the log are the
//! process's own).
//!
//! Timeouts are configured short (1 s); the tests assert that nothing is closed
//! *before* its timeout and poll, with a generous failure deadline, until it is
//! closed — never a wall-clock upper bound.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::inproc::{Launch, Service};
use crate::support::process::{Serve, Server};
use crate::support::tokens::demo_token;
use crate::support::{config, copy_of_reference, gateway, http, poll};

/// How long a test waits for something that should happen after about a second.
const DEADLINE: Duration = Duration::from_secs(30);
/// The client preface of HTTP/2 and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Start the service in-process (with an admin listener) with `env`; ready.
fn start(policies: &Path, env: &[(&str, &str)]) -> Service {
    Launch::new(policies).admin().envs(env).start()
}

/// Start `serve` (with an admin listener) with `env` under a descriptor limit (the
/// arguments of the shell's `ulimit`, such as `-n 128`), and wait until it is ready.
fn spawn(policies: &Path, env: &[(&str, &str)], ulimit: &str) -> Server {
    Serve::new(policies)
        .admin()
        .envs(env)
        .ulimit(ulimit)
        .start()
}

fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).expect("connect")
}

/// Read until the server closes the connection (end of stream or reset): when,
/// measured from `since`, and what it sent. `None` if still open at the deadline.
fn wait_closed(s: &mut TcpStream, since: Instant) -> Option<(Duration, Vec<u8>)> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some((since.elapsed(), received)),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if since.elapsed() > DEADLINE {
                    return None;
                }
            }
            Err(_) => return Some((since.elapsed(), received)),
        }
    }
}

/// Whether the server still holds the connection open. What it sent (such as its
/// HTTP/2 SETTINGS) is read and dropped to see whether the end of stream follows.
fn is_open(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    let open = loop {
        match s.read(&mut buf) {
            Ok(0) => break false,
            Ok(_) => {}
            Err(e) => break e.kind() == ErrorKind::WouldBlock,
        }
    };
    s.set_nonblocking(false).expect("blocking");
    open
}

/// One HTTP/2 frame: type, flags, stream id and payload; `None` at end of stream.
fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some((head[3], head[4], stream, payload))
}

/// The types of the HTTP/2 frames in `bytes`.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = bytes.get(9 + len..).unwrap_or_default();
    }
    types
}

const PING: u8 = 6;
const GOAWAY: u8 = 7;

/// Descriptors the process `pid` has open (Linux).
fn open_descriptors(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// `key=value` of the "connection limits" log line.
fn limit_from_log(server: &Server, key: &str) -> usize {
    let line = poll(Duration::from_secs(10), || {
        server.find_log(|l| l.contains("connection limits"))
    })
    .expect("connection limits logged");
    line.split(&format!("{key}="))
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// No line of `log` says that descriptors ran out.
fn no_descriptor_exhaustion(log: Vec<String>) {
    for line in log {
        let lower = line.to_lowercase();
        assert!(
            !lower.contains("too many open files") && !lower.contains("os error 24"),
            "{line}"
        );
    }
}

#[test]
fn half_sent_requests_are_closed_after_the_header_timeout() {
    let dir = copy_of_reference();
    let server = start(
        dir.path(),
        &[
            ("MCP_AUTHZ_LISTENERS_HEADER_READ_TIMEOUT_SECS", "1"),
            ("MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT_SECS", "600"),
        ],
    );
    let half_sent: [&[u8]; 5] = [
        b"POST /access/v1/evaluation HTTP/1.1\r\nHost: pdp\r\nContent-Type: application/json\r\n",
        b"GET /healthz HTTP/1.1\r\n",
        b"GET /hea",
        b"G",
        b"POST /v1/reload HTTP/1.1\r\nHost: pdp\r\nContent-Length: 0\r\nX-Slow: a",
    ];
    // A connection that sent nothing is not a half-sent request: the (long) idle
    // timeout applies to it, not the header timeout.
    let silent = [connect(&server.http), connect(&server.admin)];
    let mut clients = Vec::new();
    for addr in [&server.http, &server.admin] {
        for bytes in half_sent {
            let started = Instant::now();
            let mut s = connect(addr);
            s.write_all(bytes).expect("write");
            clients.push((
                started,
                s,
                format!("{addr} {:?}", String::from_utf8_lossy(bytes)),
            ));
        }
        // A complete request on a keep-alive connection, then half of the next one.
        let started = Instant::now();
        let mut s = connect(addr);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: pdp\r\n\r\nGET /readyz HTTP/1.1\r\nHost:")
            .expect("write");
        clients.push((
            started,
            s,
            format!("{addr} keep-alive, then half a request"),
        ));
        // A header line every 200 ms: bytes keep coming, the head never completes.
        let started = Instant::now();
        let mut s = connect(addr);
        s.write_all(b"GET /healthz HTTP/1.1\r\n").expect("write");
        let mut writer = s.try_clone().expect("clone");
        std::thread::spawn(move || {
            for i in 0..150 {
                std::thread::sleep(Duration::from_millis(200));
                if writer
                    .write_all(format!("X-Drip-{i}: x\r\n").as_bytes())
                    .is_err()
                {
                    break;
                }
            }
        });
        clients.push((started, s, format!("{addr} dripping header lines")));
    }
    for (started, mut s, what) in clients {
        let (after, received) = wait_closed(&mut s, started)
            .unwrap_or_else(|| panic!("{what}: still open after {DEADLINE:?}"));
        assert!(
            after >= Duration::from_secs(1),
            "{what}: closed after {after:?}"
        );
        let text = String::from_utf8_lossy(&received);
        if what.contains("keep-alive") {
            assert!(text.starts_with("HTTP/1.1 200"), "{what}: {text}");
        }
        assert!(!text.contains("HTTP/1.1 5"), "{what}: {text}");
    }
    for s in &silent {
        assert!(
            is_open(s),
            "a silent connection was closed by the header timeout"
        );
    }
    // The service still answers.
    assert_eq!(http::get(&server.http, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http::get(&server.admin, "/healthz").map(|r| r.0), Some(200));
    no_descriptor_exhaustion(server.log());
}

#[test]
fn silent_connections_are_closed_after_the_idle_timeout() {
    let dir = copy_of_reference();
    let server = start(
        dir.path(),
        &[
            ("MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT_SECS", "1"),
            ("MCP_AUTHZ_LISTENERS_HEADER_READ_TIMEOUT_SECS", "600"),
            ("MCP_AUTHZ_LISTENERS_KEEPALIVE_INTERVAL_SECS", "0"),
        ],
    );
    let mut clients = Vec::new();
    for (addr, name) in [
        (&server.grpc, "gRPC"),
        (&server.http, "HTTP"),
        (&server.admin, "admin"),
    ] {
        // Nothing at all.
        let started = Instant::now();
        clients.push((started, connect(addr), format!("{name}: silent TCP")));
        // The HTTP/2 preface and SETTINGS, then nothing.
        let started = Instant::now();
        let mut s = connect(addr);
        s.write_all(H2_PREFACE).expect("write");
        clients.push((started, s, format!("{name}: HTTP/2 preface only")));
        if name != "gRPC" {
            // One complete HTTP/1.1 request, then nothing on the kept-alive connection.
            let started = Instant::now();
            let mut s = connect(addr);
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: pdp\r\n\r\n")
                .expect("write");
            clients.push((started, s, format!("{name}: HTTP/1.1 keep-alive")));
        }
    }
    for (started, mut s, what) in clients {
        let (after, received) = wait_closed(&mut s, started)
            .unwrap_or_else(|| panic!("{what}: still open after {DEADLINE:?}"));
        assert!(
            after >= Duration::from_secs(1),
            "{what}: closed after {after:?}"
        );
        if what.contains("keep-alive") {
            let text = String::from_utf8_lossy(&received);
            assert!(text.starts_with("HTTP/1.1 200"), "{what}: {text}");
        }
        if what.contains("HTTP/2") {
            assert!(
                frame_types(&received).contains(&GOAWAY),
                "{what}: no GOAWAY"
            );
        }
    }

    // An HTTP/2 connection that made a request is closed gracefully (GOAWAY) once idle.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for (addr, path, grpc) in [
        (&server.http, "/healthz", false),
        (&server.grpc, "/grpc.health.v1.Health/Check", true),
    ] {
        let (after, ended) = rt.block_on(async {
            let started = Instant::now();
            let tcp = tokio::net::TcpStream::connect(addr.as_str())
                .await
                .expect("connect");
            let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
            let connection = tokio::spawn(connection);
            let mut client = client.ready().await.expect("ready");
            let mut request = ::http::Request::builder()
                .method(if grpc { "POST" } else { "GET" })
                .uri(format!("http://{addr}{path}"));
            if grpc {
                request = request
                    .header("content-type", "application/grpc")
                    .header("te", "trailers");
            }
            let (response, mut body) = client
                .send_request(request.body(()).expect("request"), false)
                .expect("send");
            if grpc {
                // An empty HealthCheckRequest: a 5-byte gRPC frame header.
                body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
                    .expect("data");
            } else {
                body.send_data(bytes::Bytes::new(), true).expect("end");
            }
            let response = response.await.expect("response");
            assert_eq!(response.status(), 200);
            drop(response);
            let ended = tokio::time::timeout(DEADLINE, connection).await;
            (started.elapsed(), ended)
        });
        let ended = ended.unwrap_or_else(|_| panic!("{addr}{path}: still open after {DEADLINE:?}"));
        assert!(
            matches!(ended, Ok(Ok(()))),
            "{addr}{path}: not a graceful close: {ended:?}"
        );
        assert!(
            after >= Duration::from_secs(1),
            "{path}: closed after {after:?}"
        );
    }
    assert_eq!(http::get(&server.http, "/healthz").map(|r| r.0), Some(200));
    no_descriptor_exhaustion(server.log());
}

#[test]
fn unanswered_http2_pings_close_the_connection() {
    let dir = copy_of_reference();
    let server = start(
        dir.path(),
        &[
            ("MCP_AUTHZ_LISTENERS_KEEPALIVE_INTERVAL_SECS", "1"),
            // Long enough for the answering peer on a busy machine.
            ("MCP_AUTHZ_LISTENERS_KEEPALIVE_TIMEOUT_SECS", "3"),
            ("MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT_SECS", "600"),
        ],
    );
    for addr in [&server.grpc, &server.http] {
        // A peer that answers the pings: it stays.
        let mut answering = connect(addr);
        answering.write_all(H2_PREFACE).expect("write");
        let mut writer = answering.try_clone().expect("clone");
        let answered = std::thread::spawn(move || {
            let mut pings = 0;
            while pings < 4 {
                let Some((kind, flags, _, payload)) = read_frame(&mut answering) else {
                    return (pings, true);
                };
                if kind == PING && flags & 1 == 0 {
                    pings += 1;
                    let mut ack = vec![0, 0, 8, PING, 1, 0, 0, 0, 0];
                    ack.extend_from_slice(&payload);
                    if writer.write_all(&ack).is_err() {
                        return (pings, true);
                    }
                }
            }
            (pings, !is_open(&answering))
        });
        // A peer that never answers: closed after the keepalive timeout.
        let started = Instant::now();
        let mut silent = connect(addr);
        silent.write_all(H2_PREFACE).expect("write");
        let mut pinged = false;
        let mut goaway = false;
        while let Some((kind, flags, _, _)) = read_frame(&mut silent) {
            pinged |= kind == PING && flags & 1 == 0;
            goaway |= kind == GOAWAY;
            assert!(started.elapsed() < DEADLINE, "{addr}: still open");
        }
        assert!(pinged, "{addr}: no keepalive ping");
        assert!(goaway, "{addr}: closed without GOAWAY");
        // A ping after 1 s without frames, then 3 s for its answer.
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "{addr}: closed early"
        );
        let (pings, closed) = answered.join().expect("thread");
        assert_eq!((pings, closed), (4, false), "{addr}: the answering peer");
    }
    no_descriptor_exhaustion(server.log());
}

#[test]
fn slow_bodies_are_cut_off_by_the_request_timeout() {
    let dir = copy_of_reference();
    let server = start(
        dir.path(),
        &[
            ("MCP_AUTHZ_LISTENERS_REQUEST_TIMEOUT_SECS", "1"),
            ("MCP_AUTHZ_LISTENERS_HEADER_READ_TIMEOUT_SECS", "600"),
            ("MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT_SECS", "600"),
        ],
    );
    // HTTP/1.1: AuthZEN and the HTTP ext_authz check, a body announced and not sent.
    for (addr, head) in [
        (
            &server.http,
            "POST /access/v1/evaluation HTTP/1.1\r\nHost: pdp\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"subject\"",
        ),
        (
            &server.http,
            "POST /access/v1/evaluations HTTP/1.1\r\nHost: pdp\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"ev",
        ),
        (
            &server.http,
            "POST /ext_authz/mcp HTTP/1.1\r\nHost: pdp\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{",
        ),
    ] {
        let started = Instant::now();
        let mut s = connect(addr);
        s.write_all(head.as_bytes()).expect("write");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{head}: {text}");
        assert!(started.elapsed() >= Duration::from_secs(1), "{head}");
    }
    // gRPC: the gateway's Check and Envoy's, a message announced and not sent.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for path in [
        "/mcp_authz.v1.Authorizer/Check",
        "/envoy.service.auth.v3.Authorization/Check",
    ] {
        let (after, status) = rt.block_on(async {
            let started = Instant::now();
            let tcp = tokio::net::TcpStream::connect(server.grpc.as_str())
                .await
                .expect("connect");
            let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
            tokio::spawn(connection);
            let mut client = client.ready().await.expect("ready");
            let request = ::http::Request::builder()
                .method("POST")
                .uri(format!("http://{}{path}", server.grpc))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            let (response, mut body) = client.send_request(request, false).expect("send");
            body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2]), false)
                .expect("data");
            let response = tokio::time::timeout(DEADLINE, response)
                .await
                .expect("an answer")
                .expect("response");
            let status = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (started.elapsed(), status)
        });
        assert_eq!(status.as_deref(), Some("4"), "{path}: DEADLINE_EXCEEDED");
        assert!(after >= Duration::from_secs(1), "{path}");
    }
    no_descriptor_exhaustion(server.log());
}

/// Open `n` connections to `addr` that each send `bytes` (nothing if empty).
fn flood(addr: &str, n: usize, bytes: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = connect(addr);
            if !bytes.is_empty() {
                s.write_all(bytes).expect("write");
            }
            s
        })
        .collect()
}

/// A gRPC `Check` whose message is announced (100 bytes) and never sent; the
/// call and its connection stay open as long as the returned value lives.
async fn slow_grpc_call(addr: &str) -> impl Sized {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("ready");
    let request = ::http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/mcp_authz.v1.Authorizer/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2]), false)
        .expect("data");
    (client, body, response)
}

#[test]
fn health_decisions_and_reload_work_while_the_caps_are_reached() {
    let dir = copy_of_reference();
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    // A config file trusting the demo token issuer.
    let config = config::write(cfg_dir.path(), &[&config::demo_issuer()]);
    let config = config.to_str().expect("utf-8");
    // Long timeouts: only the caps act during this test.
    let server = spawn(
        dir.path(),
        &[
            ("MCP_AUTHZ_CONFIG", config),
            ("MCP_AUTHZ_LISTENERS_HEADER_READ_TIMEOUT_SECS", "600"),
            ("MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT_SECS", "600"),
        ],
        "-n 128",
    );
    let pid = server.pid();
    assert_eq!(limit_from_log(&server, "descriptor_limit"), 128);
    let caps = [
        limit_from_log(&server, "grpc_max_connections"),
        limit_from_log(&server, "http_max_connections"),
        limit_from_log(&server, "admin_max_connections"),
    ];
    assert!(caps.iter().all(|&c| c >= 1), "{caps:?}");

    // 40 half-sent HTTP requests and 40 whose body stalls, 80 silent gRPC
    // connections and 10 gRPC calls whose message stalls, 12 silent admin ones:
    // 182 connections, more than the process has descriptors.
    let half = b"POST /access/v1/evaluation HTTP/1.1\r\nHost: pdp\r\n";
    let slow_body = b"POST /access/v1/evaluation HTTP/1.1\r\nHost: pdp\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut http_flood = flood(&server.http, 40, half);
    http_flood.extend(flood(&server.http, 40, slow_body));
    let mut grpc_flood = flood(&server.grpc, 80, b"");
    let slow_calls: Vec<_> = (0..10)
        .map(|_| rt.block_on(slow_grpc_call(&server.grpc)))
        .collect();
    let mut admin_flood = flood(&server.admin, 12, b"");
    let total = http_flood.len() + grpc_flood.len() + admin_flood.len();
    let held = caps.iter().sum::<usize>();
    // The oldest connections were shed for the new ones; the newest are held.
    // Every listener works through its own backlog: wait until each one is
    // within its cap (the total alone can be reached while one listener still
    // sheds, since the stalled gRPC calls leave room in the sum).
    let floods = [
        ("HTTP", &http_flood, caps[1]),
        ("gRPC", &grpc_flood, caps[0]),
        ("admin", &admin_flood, caps[2]),
    ];
    let count_open = |flood: &Vec<TcpStream>| flood.iter().filter(|s| is_open(s)).count();
    let open = poll(DEADLINE, || {
        let per_listener: Vec<usize> = floods.iter().map(|(_, f, _)| count_open(f)).collect();
        let within = floods
            .iter()
            .zip(&per_listener)
            .all(|((_, _, cap), &open)| open <= *cap);
        let open: usize = per_listener.iter().sum();
        (within && open <= held).then_some(open)
    })
    .unwrap_or_else(|| {
        let per_listener: Vec<String> = floods
            .iter()
            .map(|(name, f, cap)| format!("{name} {} of cap {cap}", count_open(f)))
            .collect();
        panic!(
            "more than {held} of {total} connections held open, or a listener above its cap: {}",
            per_listener.join(", ")
        )
    });
    // The stalled gRPC calls hold the rest of the gRPC listener's slots.
    assert!(open + slow_calls.len() >= held - 3, "{open} of {held} held");
    for (name, flood, _) in floods {
        assert!(
            !is_open(&flood[0]),
            "{name}: the oldest connection was not shed"
        );
        assert!(
            is_open(&flood[flood.len() - 1]),
            "{name}: the newest connection was shed"
        );
    }
    if let Some(n) = open_descriptors(pid) {
        assert!(n <= 128, "{n} descriptors open");
    }
    assert!(
        server
            .find_log(|l| l.contains("connection cap reached"))
            .is_some()
    );

    // Before each check the listeners are full again.
    let top_up = |http_flood: &mut Vec<TcpStream>,
                  grpc_flood: &mut Vec<TcpStream>,
                  admin_flood: &mut Vec<TcpStream>| {
        // Half-sent heads, then more stalled bodies than the cap: the HTTP
        // listener is full of requests in flight.
        http_flood.extend(flood(&server.http, caps[1] / 2 + 1, half));
        http_flood.extend(flood(&server.http, caps[1] + 2, slow_body));
        grpc_flood.extend(flood(&server.grpc, caps[0] + 2, b""));
        admin_flood.extend(flood(&server.admin, caps[2] + 2, b""));
    };

    // Health on both listeners.
    top_up(&mut http_flood, &mut grpc_flood, &mut admin_flood);
    assert_eq!(http::get(&server.http, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http::get(&server.http, "/readyz").map(|r| r.0), Some(200));
    assert_eq!(http::get(&server.admin, "/healthz").map(|r| r.0), Some(200));

    // An AuthZEN decision.
    top_up(&mut http_flood, &mut grpc_flood, &mut admin_flood);
    let (status, body) = http::post_json(
        &server.http,
        "/access/v1/evaluation",
        &json!({
            "subject": { "type": "user", "id": "alice" },
            "action": { "name": "tools/call" },
            "resource": { "type": "tool", "id": "docs/summarize_document" },
            "context": { "agent": "corpassist", "arguments": { "document_id": "titan/q1-strategy" } },
        }),
    )
    .expect("AuthZEN answer");
    assert_eq!(status, 200, "{body}");
    assert!(body["decision"].is_boolean(), "{body}");

    // gRPC: health and a decision (erin through CorpAssist, from her token).
    top_up(&mut http_flood, &mut grpc_flood, &mut admin_flood);
    let token = demo_token("erin");
    rt.block_on(async {
        let channel = gateway::channel(&server.grpc).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(status.status, 1, "SERVING");
        let mut client = gateway::client(&server.grpc).await;
        let r = client
            .check(gateway::parsed(
                gateway::bearer(token),
                "docs",
                "tools/call",
                "search_documents",
                None,
            ))
            .await
            .expect("check")
            .into_inner();
        assert!(r.allowed, "{r:?}");
    });

    // A reload on request, and one from a changed policy file.
    top_up(&mut http_flood, &mut grpc_flood, &mut admin_flood);
    let (status, _, body) =
        http::request(&server.admin, "POST", "/v1/reload", &[], "").expect("reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"generation\":2"), "{body}");
    top_up(&mut http_flood, &mut grpc_flood, &mut admin_flood);
    std::fs::write(
        dir.path().join("extra.cedar"),
        "@id(\"extra-under-flood\")\npermit (principal, action, resource) when { false };\n",
    )
    .expect("write");
    let reloaded = poll(DEADLINE, || {
        top_up(&mut http_flood, &mut grpc_flood, &mut admin_flood);
        let (_, body) = http::get(&server.admin, "/v1/policies")?;
        body.contains("\"generation\":3").then_some(body)
    })
    .unwrap_or_else(|| panic!("no reload: {:?}", server.log()));
    assert!(reloaded.contains("\"in_sync\":true"), "{reloaded}");

    if let Some(n) = open_descriptors(pid) {
        assert!(n <= 128, "{n} descriptors open");
    }
    no_descriptor_exhaustion(server.log());
    drop(slow_calls);
    assert!(
        server
            .find_log(|l| l.contains("policy reload rejected"))
            .is_none(),
        "{:?}",
        server.log()
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let dir = copy_of_reference();
    let hard = Command::new("sh")
        .arg("-c")
        .arg("ulimit -H -n")
        .output()
        .expect("ulimit");
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    // Soft 100, hard unchanged.
    let server = spawn(dir.path(), &[], "-S -n 100");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files limit");
    let soft = line.split_whitespace().nth(3).expect("soft");
    if hard != "unlimited" {
        assert_eq!(soft, hard, "{line}");
        assert_eq!(
            limit_from_log(&server, "descriptor_limit").to_string(),
            hard,
            "{:?}",
            server.log()
        );
    }
    let raised = server
        .find_log(|l| l.contains("raised the descriptor limit"))
        .unwrap_or_else(|| panic!("not raised: {:?}", server.log()));
    assert!(raised.contains("from=100"), "{raised}");
}
