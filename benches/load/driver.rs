//! The load driver: N connections (and, for gRPC, M requests in flight on each)
//! sending prepared requests for a fixed time, recording every latency and reading
//! a sample of the answers.
//!
//! gRPC goes over a raw HTTP/2 client (`h2`) and HTTP/1.1 over hyper's connection
//! API: per request the driver copies prepared bytes and writes the nonce, nothing
//! else, so the client's share of the two cores stays small and the same for every
//! PDP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

use crate::targets::{Codec, Target};
use crate::workload::NONCE_LEN;

/// One prepared request.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The body (framed for gRPC).
    pub bytes: Bytes,
    /// Where to write the nonce; none: sent as it is (the repeated request).
    pub nonce_at: Option<usize>,
    /// The decision the policies give.
    pub expected: bool,
}

/// What to run.
#[derive(Clone)]
pub struct Plan {
    /// Which interface.
    pub target: Target,
    /// Where.
    pub addr: SocketAddr,
    /// The requests to pick from.
    pub pool: Arc<Vec<Prepared>>,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection (gRPC; HTTP/1.1 has one).
    pub streams: usize,
    /// How long.
    pub duration: Duration,
    /// Stop after this many requests (whichever comes first).
    pub max_requests: Option<u64>,
    /// Read the decision of every n-th answer (gRPC status / HTTP status always).
    pub check_every: u64,
    /// Seed of the picks from the pool.
    pub seed: u64,
    /// Extra gRPC metadata / HTTP headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Keep latencies (false for warm-ups).
    pub record: bool,
    /// Send the pool in order instead of picking at random.
    pub sequential: bool,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latency of every successful request, in nanoseconds.
    pub latencies: Vec<u64>,
    /// Requests answered with a decision.
    pub ok: u64,
    /// Transport errors, non-200 statuses, gRPC errors, unreadable answers.
    pub errors: u64,
    /// Answers read whose decision differs from the expected one.
    pub wrong: u64,
    /// Answers whose decision was read.
    pub checked: u64,
    /// Of those, allows.
    pub allowed: u64,
    /// The first error seen.
    pub first_error: Option<String>,
    /// Wall time from start to the end of the last request.
    pub elapsed: Duration,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.errors += other.errors;
        self.wrong += other.wrong;
        self.checked += other.checked;
        self.allowed += other.allowed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

/// Shared state of the workers.
struct Shared {
    plan: Plan,
    codec: Arc<Codec>,
    deadline: Instant,
    budget: AtomicU64,
    nonce: AtomicU64,
    sequence: AtomicU64,
}

impl Shared {
    /// The next request, or none when the run is over.
    fn next(&self, rng: &mut crate::workload::Rng) -> Option<(Bytes, bool)> {
        if Instant::now() >= self.deadline {
            return None;
        }
        if self.plan.max_requests.is_some()
            && self
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                .is_err()
        {
            return None;
        }
        let pool = &self.plan.pool;
        let entry = if pool.len() == 1 {
            &pool[0]
        } else if self.plan.sequential {
            &pool[(self.sequence.fetch_add(1, Ordering::Relaxed) % pool.len() as u64) as usize]
        } else {
            &pool[rng.below(pool.len() as u64) as usize]
        };
        let bytes = match entry.nonce_at {
            None => entry.bytes.clone(),
            Some(at) => {
                let n = self.nonce.fetch_add(1, Ordering::Relaxed) % 10_000_000_000;
                let mut b = BytesMut::from(&entry.bytes[..]);
                write_digits(&mut b[at..at + NONCE_LEN], n);
                b.freeze()
            }
        };
        Some((bytes, entry.expected))
    }

    fn read(&self, tally: &mut Tally, count: u64, message: &[u8], expected: bool) {
        tally.ok += 1;
        if !count.is_multiple_of(self.plan.check_every) {
            return;
        }
        match self.codec.decision(message) {
            Ok(allow) => {
                tally.checked += 1;
                tally.allowed += u64::from(allow);
                if allow != expected {
                    tally.wrong += 1;
                    if tally.first_error.is_none() {
                        tally.first_error = Some(format!(
                            "wrong decision: {} where {} was expected",
                            verdict(allow),
                            verdict(expected)
                        ));
                    }
                }
            }
            Err(e) => {
                tally.ok -= 1;
                tally.error(e);
            }
        }
    }
}

fn verdict(allow: bool) -> &'static str {
    if allow { "allow" } else { "deny" }
}

/// Ten ASCII digits of `n` into `out`.
fn write_digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// A nonce base unlikely to meet the nonces of an earlier run on the same server.
pub fn nonce_base() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_secs() % 100_000) * 100_000
}

/// Run `plan`; the answers are read with `codec`.
pub async fn run(plan: Plan, codec: Arc<Codec>, nonce: u64) -> Tally {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        deadline: started + plan.duration,
        budget: AtomicU64::new(plan.max_requests.unwrap_or(u64::MAX)),
        nonce: AtomicU64::new(nonce),
        sequence: AtomicU64::new(0),
        codec,
        plan,
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut worker = 0u64;
    for _ in 0..shared.plan.connections {
        if shared.plan.target.is_grpc() {
            let sender = match h2_connect(shared.plan.addr).await {
                Ok(s) => s,
                Err(e) => {
                    let mut t = Tally::default();
                    t.error(e);
                    return t;
                }
            };
            for _ in 0..shared.plan.streams {
                worker += 1;
                tasks.spawn(grpc_worker(Arc::clone(&shared), sender.clone(), worker));
            }
        } else {
            worker += 1;
            tasks.spawn(http_worker(Arc::clone(&shared), worker));
        }
    }
    let mut tally = Tally::default();
    while let Some(t) = tasks.join_next().await {
        match t {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(format!("worker failed: {e}")),
        }
    }
    tally.elapsed = started.elapsed();
    tally
}

async fn h2_connect(addr: SocketAddr) -> Result<h2::client::SendRequest<Bytes>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .handshake(tcp)
        .await
        .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn grpc_worker(
    shared: Arc<Shared>,
    mut sender: h2::client::SendRequest<Bytes>,
    worker: u64,
) -> Tally {
    let mut rng = crate::workload::Rng::new(shared.plan.seed, worker);
    let mut tally = Tally::default();
    let uri: http::Uri = format!("http://{}{}", shared.plan.addr, shared.plan.target.path())
        .parse()
        .expect("a valid URI");
    let mut count = worker;
    while let Some((body, expected)) = shared.next(&mut rng) {
        count += 1;
        let started = Instant::now();
        match grpc_call(&mut sender, &uri, &shared.plan.headers, body).await {
            Ok(message) => {
                if shared.plan.record {
                    tally.latencies.push(started.elapsed().as_nanos() as u64);
                }
                shared.read(&mut tally, count, &message, expected);
            }
            Err(e) => {
                tally.error(e);
                if sender.clone().ready().await.is_err() {
                    // The connection is gone: reconnect.
                    match h2_connect(shared.plan.addr).await {
                        Ok(s) => sender = s,
                        Err(e) => {
                            tally.error(e);
                            break;
                        }
                    }
                }
            }
        }
    }
    tally
}

/// One unary gRPC call; the answer's message without its frame.
pub async fn grpc_call(
    sender: &mut h2::client::SendRequest<Bytes>,
    uri: &http::Uri,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<Bytes, String> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(CONTENT_TYPE, "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let request = request.body(()).map_err(|e| e.to_string())?;
    let mut ready = sender.clone().ready().await.map_err(|e| e.to_string())?;
    let (response, mut stream) = ready
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    stream.send_data(body, true).map_err(|e| e.to_string())?;
    let response = response.await.map_err(|e| e.to_string())?;
    let (head, mut recv) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(format!("HTTP status {}", head.status));
    }
    let mut data = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await.map_err(|e| e.to_string())?;
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| head.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing");
    if status != "0" {
        let message = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| head.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(format!("grpc-status {status} {message}"));
    }
    if data.len() < 5 {
        return Err("a gRPC answer without a message".into());
    }
    Ok(data.freeze().slice(5..))
}

type Http1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn http_connect(addr: SocketAddr) -> Result<Http1, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP/1.1 with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn http_worker(shared: Arc<Shared>, worker: u64) -> Tally {
    let mut rng = crate::workload::Rng::new(shared.plan.seed, worker);
    let mut tally = Tally::default();
    let mut sender = match http_connect(shared.plan.addr).await {
        Ok(s) => s,
        Err(e) => {
            tally.error(e);
            return tally;
        }
    };
    let host = HeaderValue::from_str(&shared.plan.addr.to_string()).expect("a valid host");
    let mut count = worker;
    while let Some((body, expected)) = shared.next(&mut rng) {
        count += 1;
        let started = Instant::now();
        match http_call(
            &mut sender,
            shared.plan.target.path(),
            &shared.plan.headers,
            &host,
            body,
        )
        .await
        {
            Ok(message) => {
                if shared.plan.record {
                    tally.latencies.push(started.elapsed().as_nanos() as u64);
                }
                shared.read(&mut tally, count, &message, expected);
            }
            Err(e) => {
                tally.error(e);
                if sender.is_closed() {
                    match http_connect(shared.plan.addr).await {
                        Ok(s) => sender = s,
                        Err(e) => {
                            tally.error(e);
                            break;
                        }
                    }
                }
            }
        }
    }
    tally
}

/// One JSON POST; the answer's body.
pub async fn http_call(
    sender: &mut Http1,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    host: &HeaderValue,
    body: Bytes,
) -> Result<Bytes, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, host)
        .header(CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != http::StatusCode::OK {
        return Err(format!(
            "HTTP status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(body)
}

/// Send `body` once and read its decision (for the probes).
pub async fn once(
    target: Target,
    addr: SocketAddr,
    headers: &[(HeaderName, HeaderValue)],
    codec: &Codec,
    body: Bytes,
) -> Result<bool, String> {
    let message = if target.is_grpc() {
        let mut sender = h2_connect(addr).await?;
        let uri: http::Uri = format!("http://{addr}{}", target.path())
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        grpc_call(&mut sender, &uri, headers, body).await?
    } else {
        let mut sender = http_connect(addr).await?;
        let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
        http_call(&mut sender, target.path(), headers, &host, body).await?
    };
    codec.decision(&message)
}

/// Percentile `p` (0..=100) of sorted latencies, in microseconds.
pub fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}
