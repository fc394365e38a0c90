//! The listeners: one accept loop and one connection driver for every TCP
//! listener (gRPC, HTTP, admin), so that every interface has the same limits.
//!
//! The rules, each enforced here and nowhere else:
//!
//! - **Connection cap.** A listener holds at most `max_connections` connections.
//!   When a new connection arrives at the cap, the oldest connection that is not
//!   *busy* is shed. Busy means: a request has been received in full (head and
//!   body) and is not answered yet. Shed first are connections that never
//!   completed a request head (silent or half-sent clients), then the oldest of
//!   the rest. One that is idle after serving requests is closed gracefully
//!   (HTTP/2 `GOAWAY`); one that is still sending a request body is closed at once.
//!   If every connection is busy, the new one waits (in the kernel's accept
//!   backlog) until one closes or becomes idle. So a flood of idle or slow
//!   clients can never lock out health checks or decisions, and a request that
//!   the service is working on is never cut off.
//! - **Header-read timeout (HTTP/1).** A request head must arrive within
//!   `header_read_timeout` (hyper's timer: it runs whenever the connection waits
//!   for a request head, so it also bounds an idle HTTP/1 keep-alive connection).
//! - **Idle timeout.** A connection with no request in flight is closed after
//!   `idle_timeout` (gracefully when it has served requests).
//! - **HTTP/2 keepalive.** A `PING` every `keepalive_interval`; a connection
//!   whose peer does not answer within `keepalive_timeout` is closed.
//! - **Request timeout.** From the request head to the response head (so it
//!   covers reading the body): `request_timeout`, or for gRPC the caller's
//!   `grpc-timeout` if shorter. HTTP answers `408`, gRPC `DEADLINE_EXCEEDED`.
//!
//! A request is "in flight" from its head to its response head. A response body
//! still streaming (the gRPC health `Watch`) does not keep its connection busy:
//! such a stream ends with the idle timeout and the client opens it again. This
//! bounds every connection's life, also that of a client that never reads.
//!
//! The caps are checked against the process's descriptor limit before any port
//! is bound ([`raise_descriptor_limit`], [`connection_caps`]): the soft
//! `RLIMIT_NOFILE` is raised to the hard one, and the caps plus the descriptors
//! already open plus a reserve (policy files during a reload, the decision log,
//! token key fetches) must fit in it, so a full listener never makes a reload,
//! a health check or an accept fail with "too many open files".

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use super::tls::{PeerIdentity, ServerTls, TlsRole, peer_identity};

/// Time a connection that is being closed gracefully gets before it is dropped
/// (once no request is in flight on it).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// At most one "connection cap reached" (and one "cannot accept") warning per
/// listener in this time.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Descriptors a listener needs besides its connections: the listening socket and
/// the one accepted connection that waits for room.
const PER_LISTENER_DESCRIPTORS: u64 = 2;

/// Default cap of the gRPC and of the HTTP listener when the descriptor limit
/// allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap of the admin listener (probes, Prometheus, operators).
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
/// The admin listener's cap is never derived below this.
const MIN_ADMIN_CONNECTIONS: usize = 4;
// The settings are defined with the rest of the configuration (the layers point
// one way: adapters read the configuration, never the other way round).
pub use crate::config::{DEFAULT_RESERVED_DESCRIPTORS, ListenerConfig, Timeouts};

/// The connection caps do not fit the descriptor limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// Configured caps need more descriptors than there are.
    #[error(
        "the connection caps ({wanted} connections) do not fit the descriptor limit {limit}: {open} descriptors are open, {reserved} are kept in reserve and {listeners} per listener are needed to accept; lower `listeners.*_max_connections` or raise the limit (`ulimit -n`)"
    )]
    TooMany {
        /// Sum of the configured caps.
        wanted: u64,
        /// The soft descriptor limit.
        limit: u64,
        /// Descriptors open at start.
        open: u64,
        /// `listeners.reserved_descriptors`.
        reserved: u64,
        /// Descriptors every listener needs besides its connections.
        listeners: u64,
    },
    /// The limit leaves no room for a listener.
    #[error(
        "the descriptor limit {limit} leaves no room for connections on the {listener} listener ({open} descriptors are open, {reserved} are kept in reserve); raise the limit (`ulimit -n`) or lower `listeners.reserved_descriptors`"
    )]
    NoRoom {
        /// The soft descriptor limit.
        limit: u64,
        /// Descriptors open at start.
        open: u64,
        /// `listeners.reserved_descriptors`.
        reserved: u64,
        /// The listener without room.
        listener: &'static str,
    },
}

/// The process's descriptor limit at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
    /// The soft limit before it was raised, if it was.
    pub raised_from: Option<u64>,
    /// Why the soft limit could not be raised, if it could not.
    pub raise_error: Option<String>,
    /// Descriptors open now.
    pub open: u64,
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit and report both; `None`
/// where the platform has no such limit.
#[cfg(unix)]
pub fn raise_descriptor_limit() -> Option<DescriptorLimit> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let soft = before.current?;
    let mut limit = DescriptorLimit {
        soft,
        hard: before.maximum,
        raised_from: None,
        raise_error: None,
        open: open_descriptors().unwrap_or(0),
    };
    // An unlimited hard limit still has a kernel ceiling; 1 Mi is what Linux allows
    // by default (`fs.nr_open`).
    let target = before.maximum.unwrap_or(1 << 20);
    if target > soft {
        let wanted = Rlimit {
            current: Some(target),
            maximum: before.maximum,
        };
        match setrlimit(Resource::Nofile, wanted) {
            Ok(()) => {
                limit.soft = target;
                limit.raised_from = Some(soft);
            }
            Err(e) => limit.raise_error = Some(e.to_string()),
        }
    }
    Some(limit)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit and report both; `None`
/// where the platform has no such limit.
#[cfg(not(unix))]
pub fn raise_descriptor_limit() -> Option<DescriptorLimit> {
    None
}

/// The number of descriptors this process has open, where the platform says.
pub fn open_descriptors() -> Option<u64> {
    ["/proc/self/fd", "/dev/fd"].iter().find_map(|dir| {
        let entries = std::fs::read_dir(dir).ok()?;
        // Reading the directory holds one descriptor itself.
        Some((entries.count() as u64).saturating_sub(1))
    })
}

/// The cap of each listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// gRPC listener.
    pub grpc: usize,
    /// HTTP listener.
    pub http: usize,
    /// Admin listener, when there is one.
    pub admin: Option<usize>,
}

/// The connection caps: the configured ones, checked against the descriptor
/// limit, and the others derived from it (a listener's default, or less when the
/// limit is low: the admin listener a sixteenth of the room, at least 4; the gRPC
/// and HTTP listeners an equal share of the rest).
pub fn connection_caps(
    config: &ListenerConfig,
    limit: Option<&DescriptorLimit>,
    admin: bool,
) -> Result<Caps, CapError> {
    let Some(limit) = limit else {
        return Ok(Caps {
            grpc: config
                .grpc_max_connections
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            http: config
                .http_max_connections
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            admin: admin.then(|| {
                config
                    .admin_max_connections
                    .unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS)
            }),
        });
    };
    let listeners: u64 = if admin { 3 } else { 2 };
    let overhead = limit.open + config.reserved_descriptors + listeners * PER_LISTENER_DESCRIPTORS;
    let room = limit.soft.saturating_sub(overhead);
    let admin_cap = if admin {
        config.admin_max_connections
    } else {
        None
    };
    let configured: u64 = [
        config.grpc_max_connections,
        config.http_max_connections,
        admin_cap,
    ]
    .iter()
    .flatten()
    .map(|&n| n as u64)
    .sum();
    if configured > room {
        return Err(CapError::TooMany {
            wanted: configured,
            limit: limit.soft,
            open: limit.open,
            reserved: config.reserved_descriptors,
            listeners: PER_LISTENER_DESCRIPTORS,
        });
    }
    let mut rest = room - configured;
    let no_room = |listener| CapError::NoRoom {
        limit: limit.soft,
        open: limit.open,
        reserved: config.reserved_descriptors,
        listener,
    };
    let admin_cap = match (admin, config.admin_max_connections) {
        (false, _) => None,
        (true, Some(n)) => Some(n),
        (true, None) => {
            let n = (rest / 16)
                .max(MIN_ADMIN_CONNECTIONS as u64)
                .min(DEFAULT_ADMIN_MAX_CONNECTIONS as u64)
                .min(rest);
            if n == 0 {
                return Err(no_room("admin"));
            }
            rest -= n;
            Some(usize::try_from(n).unwrap_or(usize::MAX))
        }
    };
    let unset = [config.grpc_max_connections, config.http_max_connections]
        .iter()
        .filter(|c| c.is_none())
        .count() as u64;
    let share = (rest / unset.max(1)).min(DEFAULT_MAX_CONNECTIONS as u64);
    let share = usize::try_from(share).unwrap_or(usize::MAX);
    let grpc = match config.grpc_max_connections {
        Some(n) => n,
        None if share == 0 => return Err(no_room("gRPC")),
        None => share,
    };
    let http = match config.http_max_connections {
        Some(n) => n,
        None if share == 0 => return Err(no_room("HTTP")),
        None => share,
    };
    Ok(Caps {
        grpc,
        http,
        admin: admin_cap,
    })
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge): AuthZEN, health, metrics, admin.
    Http,
    /// HTTP/2 only, gRPC statuses: our API, Envoy ext_authz, gRPC health.
    Grpc,
}

/// A bound listener with its limits.
#[derive(Debug)]
pub struct Listener {
    /// Its name in logs (`gRPC`, `HTTP`, `admin`).
    pub name: &'static str,
    /// The bound socket.
    pub tcp: TcpListener,
    /// What it speaks.
    pub protocol: Protocol,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Most connections open at once.
    pub max_connections: usize,
    /// TLS, if this listener serves it.
    pub tls: Option<(Arc<ServerTls>, TlsRole)>,
}

/// Serve `router` on `listener` until `shutdown` completes; then stop accepting,
/// close every connection gracefully and return when all are closed.
pub async fn serve(listener: Listener, router: axum::Router, shutdown: impl Future<Output = ()>) {
    let Listener {
        name,
        tcp,
        protocol,
        timeouts,
        max_connections,
        tls,
    } = listener;
    let max_connections = max_connections.max(1);
    let local = tcp.local_addr().ok();
    let builder = Arc::new(connection_builder(protocol, &timeouts));
    let table = Arc::new(Table::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut warned: Option<Instant> = None;
    let mut shed_since_warning = 0u64;
    let mut accept_warned: Option<Instant> = None;
    'accept: loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = tcp.accept() => r,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or memory: wait a little rather than spin.
                if accept_warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(listener = name, "cannot accept a connection: {e}");
                    accept_warned = Some(Instant::now());
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        // Make room for it: shed the oldest idle connection, or wait for one to close.
        loop {
            let changed = table.changed.notified();
            let mut changed = pin!(changed);
            changed.as_mut().enable();
            if table.len() < max_connections {
                break;
            }
            if table.shed_oldest_idle() {
                shed_since_warning += 1;
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        listener = name,
                        max_connections,
                        shed = shed_since_warning,
                        "connection cap reached: shedding the oldest connections that are not busy for new ones"
                    );
                    warned = Some(Instant::now());
                    shed_since_warning = 0;
                }
            }
            tokio::select! {
                () = &mut shutdown => break 'accept,
                () = changed => {}
            }
        }
        let _ = stream.set_nodelay(true);
        let conn = table.insert();
        let service = ConnService {
            router: router.clone(),
            conn: Arc::clone(&conn),
            table: Arc::clone(&table),
            protocol,
            request_timeout: timeouts.request,
            remote,
            local,
            peer: None,
        };
        let builder = Arc::clone(&builder);
        let stop = stop_rx.clone();
        match &tls {
            None => {
                tokio::spawn(drive(stream, builder, service, timeouts.idle, stop));
            }
            Some((tls, role)) => {
                let acceptor = tls.acceptor(*role);
                let handshake_timeout = timeouts.header_read;
                tokio::spawn(async move {
                    let Some(stream) =
                        handshake(acceptor, stream, &service, handshake_timeout, stop.clone())
                            .await
                    else {
                        service.table.remove(service.conn.id);
                        return;
                    };
                    let peer = peer_identity(stream.get_ref().1.peer_certificates());
                    let service = ConnService {
                        peer: Some(Arc::new(peer)),
                        ..service
                    };
                    drive(stream, builder, service, timeouts.idle, stop).await;
                });
            }
        }
    }
    drop(tcp);
    let _ = stop_tx.send(true);
    loop {
        let changed = table.changed.notified();
        let mut changed = pin!(changed);
        changed.as_mut().enable();
        if table.len() == 0 {
            break;
        }
        changed.await;
    }
}

/// Errors of one connection attempt, not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

fn connection_builder(protocol: Protocol, t: &Timeouts) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if protocol == Protocol::Grpc {
        builder = builder.http2_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(t.header_read)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(t.keepalive_interval)
        .keep_alive_timeout(t.keepalive_timeout);
    builder
}

/// The open connections of one listener, oldest first.
#[derive(Default)]
struct Table {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// A connection closed or went idle.
    changed: Notify,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn insert(&self) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            in_flight: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: Mutex::new(Instant::now()),
            shed: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.lock().insert(id, Arc::clone(&conn));
        conn
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.changed.notify_waiters();
    }

    /// Start closing the oldest connection that is not busy, preferring one that
    /// never sent a request head; `false` if all are busy. While a shed connection
    /// is still closing, no other is shed: its slot is on the way.
    fn shed_oldest_idle(&self) -> bool {
        let conns = self.lock();
        if conns.values().any(|c| c.shed.load(Ordering::Acquire)) {
            return false;
        }
        let sheddable = |c: &&Arc<Conn>| c.busy.load(Ordering::Acquire) == 0;
        let victim = conns
            .values()
            .filter(sheddable)
            .find(|c| c.requests.load(Ordering::Acquire) == 0)
            .or_else(|| conns.values().find(sheddable));
        match victim {
            Some(c) => {
                c.shed.store(true, Ordering::Release);
                c.wake.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One connection's state, shared by its driver, its requests and the table.
struct Conn {
    id: u64,
    /// Requests from head to response head.
    in_flight: AtomicUsize,
    /// Requests in flight whose body has been received in full.
    busy: AtomicUsize,
    /// Requests whose head arrived.
    requests: AtomicU64,
    /// When the last request in flight ended (or the connection was accepted).
    idle_since: Mutex<Instant>,
    /// The listener wants this connection's slot.
    shed: AtomicBool,
    /// Its driver has something to look at.
    wake: Notify,
}

impl Conn {
    fn idle_since(&self) -> Instant {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts a request in flight until dropped, and as busy from when its body has
/// been received in full.
struct InFlight {
    request: Arc<RequestState>,
}

/// One request's progress, shared by its guard and its body.
struct RequestState {
    conn: Arc<Conn>,
    table: Arc<Table>,
    /// `RECEIVING`, `RECEIVED` (counted in `busy`) or `DONE`.
    stage: AtomicU8,
}

const RECEIVING: u8 = 0;
const RECEIVED: u8 = 1;
const DONE: u8 = 2;

impl InFlight {
    fn begin(conn: &Arc<Conn>, table: &Arc<Table>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.requests.fetch_add(1, Ordering::AcqRel);
        Self {
            request: Arc::new(RequestState {
                conn: Arc::clone(conn),
                table: Arc::clone(table),
                stage: AtomicU8::new(RECEIVING),
            }),
        }
    }
}

impl RequestState {
    /// The body has been received in full: the connection is busy.
    fn received(&self) {
        // Counted first, so that `done` never takes away what was not added.
        self.conn.busy.fetch_add(1, Ordering::AcqRel);
        if self
            .stage
            .compare_exchange(RECEIVING, RECEIVED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            self.conn.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn done(&self) {
        if self.stage.swap(DONE, Ordering::AcqRel) == RECEIVED
            && self.conn.busy.fetch_sub(1, Ordering::AcqRel) == 1
        {
            // No longer busy: the listener may shed it if it waits for room.
            self.table.changed.notify_waiters();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let r = &self.request;
        r.done();
        if r.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *r.conn
                .idle_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
            r.conn.wake.notify_one();
            r.table.changed.notify_waiters();
        }
    }
}

/// A request body that marks its request as received at its end.
struct TrackedBody {
    inner: Incoming,
    request: Arc<RequestState>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.request.received(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.request.received(),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The TLS handshake of a new connection, within `timeout`; `None` when it fails,
/// takes too long, or the connection is shed or the listener stops meanwhile (a
/// connection in its handshake has sent no request: nothing is lost).
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    service: &ConnService,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = acceptor.accept(stream);
    let mut accept = pin!(accept);
    let deadline = Instant::now() + timeout;
    loop {
        let woken = service.conn.wake.notified();
        if service.conn.shed.load(Ordering::Acquire) || *stop.borrow() {
            return None;
        }
        tokio::select! {
            r = accept.as_mut() => {
                return match r {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::debug!(remote = %service.remote, "TLS handshake failed: {e}");
                        None
                    }
                };
            }
            () = woken => {}
            r = stop.changed() => {
                if r.is_err() {
                    return None;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!(remote = %service.remote, "TLS handshake timed out");
                return None;
            }
        }
    }
}

/// Drive one connection until it ends, is idle too long, is shed, or the listener
/// stops; then free its slot.
async fn drive<S>(
    stream: S,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: ConnService,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::clone(&service.conn);
    let table = Arc::clone(&service.table);
    {
        // No HTTP upgrades are served (no route needs one), and hyper-util's
        // `http2_only` holds only without them.
        let connection = builder.serve_connection(connection_io(stream, service.protocol), service);
        let mut connection = pin!(connection);
        // Once closing: when to drop the connection if it has not ended by itself.
        let mut closing: Option<Instant> = None;
        let mut stopping = *stop.borrow();
        loop {
            let woken = conn.wake.notified();
            if closing.is_none() {
                let shed = conn.shed.load(Ordering::Acquire);
                let receiving_only = conn.busy.load(Ordering::Acquire) == 0
                    && conn.in_flight.load(Ordering::Acquire) > 0;
                if shed && (conn.requests.load(Ordering::Acquire) == 0 || receiving_only) {
                    // Never sent a request head, or is still sending a body: nothing
                    // the service works on is lost.
                    tracing::debug!("shedding a connection with no request received in full");
                    break;
                }
                if shed || stopping {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            let idle_at = (closing.is_none() && conn.in_flight.load(Ordering::Acquire) == 0)
                .then(|| conn.idle_since() + idle_timeout);
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                r = connection.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("connection ended: {e}");
                    }
                    break;
                }
                () = woken => {}
                r = stop.changed(), if !stopping => {
                    stopping = r.is_err() || *stop.borrow();
                }
                () = tokio::time::sleep_until(idle_at.unwrap_or(far)), if idle_at.is_some() => {
                    if conn.in_flight.load(Ordering::Acquire) == 0
                        && conn.idle_since() + idle_timeout <= Instant::now()
                    {
                        tracing::debug!("closing an idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + CLOSE_GRACE);
                    }
                }
                () = tokio::time::sleep_until(closing.unwrap_or(far)), if closing.is_some() => {
                    if conn.in_flight.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    // A request still runs; it ends within the request timeout.
                    closing = Some(Instant::now() + CLOSE_GRACE);
                }
            }
        }
    }
    // The connection (and its socket) is dropped: free the slot.
    table.remove(conn.id);
}

/// A connection's socket as hyper and h2 see it.
///
/// - **No vectored writes.** h2 chains a DATA frame of 256 bytes or more to its
///   write buffer by reference when the socket takes vectored writes, and then
///   buffers no other frame until that write is done: a gRPC answer of a few
///   hundred bytes (every `CheckResponse` with headers) costs two `writev`s of
///   its own (headers and message, then the trailers), and answers ready at the
///   same time are never written together. Without vectored writes h2 copies
///   frames up to 1 KiB into its 16 KiB buffer, so an answer is one `write`.
/// - **gRPC: the first write of a flush waits one turn** (`batch`). On the
///   multi-threaded runtime the connection's task runs right after the request
///   task that woke it (tokio's LIFO slot), so each answer was written the moment
///   it was ready, while the other requests read with it had not run yet. Waiting
///   one turn (the task wakes itself and goes to the back of its worker's queue)
///   lets those run first: their answers go out in the same write. With nothing
///   else to run the turn comes at once. The HTTP listener writes at once: its
///   callers speak HTTP/1 (one answer at a time on a connection) almost always.
struct ConnIo<S> {
    inner: S,
    batch: bool,
    waited: bool,
}

/// A connection's socket as [`drive`] hands it to hyper (see [`ConnIo`]).
fn connection_io<S>(stream: S, protocol: Protocol) -> TokioIo<ConnIo<S>> {
    TokioIo::new(ConnIo {
        inner: stream,
        batch: protocol == Protocol::Grpc,
        waited: false,
    })
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ConnIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ConnIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.batch && !this.waited {
            this.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // The flush is done: the next write starts another one.
        this.waited = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The service of one connection: counts requests in flight, gives handlers the
/// peer's address and bounds each request by the request timeout.
#[derive(Clone)]
struct ConnService {
    router: axum::Router,
    conn: Arc<Conn>,
    table: Arc<Table>,
    protocol: Protocol,
    request_timeout: Duration,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    /// The caller as the TLS handshake proved it (TLS listeners only).
    peer: Option<Arc<PeerIdentity>>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<axum::body::Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::begin(&self.conn, &self.table);
        if req.body().is_end_stream() {
            in_flight.request.received();
        }
        let extensions = req.extensions_mut();
        extensions.insert(ConnectInfo(self.remote));
        extensions.insert(tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.remote),
        });
        if let Some(peer) = &self.peer {
            extensions.insert(Arc::clone(peer));
        }
        let protocol = self.protocol;
        let limit = match protocol {
            Protocol::Grpc => grpc_timeout(req.headers())
                .map_or(self.request_timeout, |t| t.min(self.request_timeout)),
            Protocol::Http => self.request_timeout,
        };
        let router = self.router.clone();
        let request = Arc::clone(&in_flight.request);
        let req = req.map(|inner| TrackedBody { inner, request });
        Box::pin(async move {
            let response = match tokio::time::timeout(limit, router.oneshot(req)).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => timed_out(protocol),
            };
            drop(in_flight);
            Ok(response)
        })
    }
}

fn timed_out(protocol: Protocol) -> Response<axum::body::Body> {
    match protocol {
        Protocol::Grpc => tonic::Status::deadline_exceeded("request timed out").into_http(),
        Protocol::Http => (StatusCode::REQUEST_TIMEOUT, "request timed out\n").into_response(),
    }
}

/// The `grpc-timeout` request header: 1 to 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`). Anything else is ignored (the server's timeout applies).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(soft: u64, open: u64) -> DescriptorLimit {
        DescriptorLimit {
            soft,
            hard: Some(soft),
            raised_from: None,
            raise_error: None,
            open,
        }
    }

    #[test]
    fn caps_default_when_the_limit_is_ample() {
        let c = ListenerConfig::default();
        let caps = connection_caps(&c, Some(&limit(1 << 20, 20)), true).expect("caps");
        assert_eq!(
            caps,
            Caps {
                grpc: DEFAULT_MAX_CONNECTIONS,
                http: DEFAULT_MAX_CONNECTIONS,
                admin: Some(DEFAULT_ADMIN_MAX_CONNECTIONS),
            }
        );
        let caps = connection_caps(&c, None, false).expect("caps");
        assert_eq!(caps.admin, None);
        assert_eq!(caps.grpc, DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn caps_are_derived_to_fit_a_low_limit() {
        let c = ListenerConfig::default();
        for (soft, open, admin) in [
            (128, 12, true),
            (128, 12, false),
            (256, 40, true),
            (1024, 15, true),
            (4096, 100, false),
            (30_000, 20, true),
        ] {
            let caps = connection_caps(&c, Some(&limit(soft, open)), admin).expect("caps");
            let listeners = if admin { 3 } else { 2 };
            let total = caps.grpc + caps.http + caps.admin.unwrap_or(0);
            let used = open + c.reserved_descriptors + listeners * 2 + total as u64;
            assert!(used <= soft, "{soft} {open} {caps:?}");
            assert!(caps.grpc >= 1 && caps.http >= 1, "{caps:?}");
            assert_eq!(caps.grpc, caps.http);
            if admin {
                let a = caps.admin.expect("admin");
                assert!((MIN_ADMIN_CONNECTIONS..=DEFAULT_ADMIN_MAX_CONNECTIONS).contains(&a));
            }
        }
        // At 128 descriptors every listener still gets room.
        let caps = connection_caps(&c, Some(&limit(128, 12)), true).expect("caps");
        assert_eq!(caps.admin, Some(4));
        assert_eq!((caps.grpc, caps.http), (21, 21));
    }

    #[test]
    fn configured_caps_are_checked_against_the_limit() {
        let c = ListenerConfig {
            grpc_max_connections: Some(500),
            http_max_connections: Some(600),
            ..ListenerConfig::default()
        };
        let err = connection_caps(&c, Some(&limit(1024, 20)), true).expect_err("too many");
        let text = err.to_string();
        assert!(
            text.contains("1100 connections") && text.contains("1024") && !text.contains('\n'),
            "{text}"
        );
        // Configured caps that fit are kept; the others share what is left.
        let c = ListenerConfig {
            grpc_max_connections: Some(500),
            ..ListenerConfig::default()
        };
        let caps = connection_caps(&c, Some(&limit(1024, 20)), false).expect("caps");
        assert_eq!(caps.grpc, 500);
        assert_eq!(caps.http, 1024 - 20 - 64 - 4 - 500);
        // A configured cap larger than the default is honoured when it fits.
        let c = ListenerConfig {
            http_max_connections: Some(50_000),
            ..ListenerConfig::default()
        };
        let caps = connection_caps(&c, Some(&limit(1 << 20, 20)), true).expect("caps");
        assert_eq!(caps.http, 50_000);
    }

    #[test]
    fn a_limit_without_room_is_an_error() {
        let c = ListenerConfig::default();
        for (soft, open) in [(64, 10), (80, 10), (10, 40)] {
            let err = connection_caps(&c, Some(&limit(soft, open)), true).expect_err("no room");
            assert!(err.to_string().contains("ulimit -n"), "{err}");
        }
        let c = ListenerConfig {
            reserved_descriptors: 0,
            ..ListenerConfig::default()
        };
        assert!(connection_caps(&c, Some(&limit(80, 10)), true).is_ok());
    }

    #[test]
    fn grpc_timeout_header() {
        let parse = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().expect("header"));
            grpc_timeout(&h)
        };
        assert_eq!(parse("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        for bad in [
            "",
            "m",
            "100",
            "123456789m",
            "+1S",
            "-1S",
            "1s",
            "1.5S",
            " 1S",
            "1SS",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn shedding_prefers_connections_that_never_sent_a_request_and_spares_busy_ones() {
        let table = Arc::new(Table::default());
        let served = table.insert();
        let busy = table.insert();
        let silent_old = table.insert();
        let silent_new = table.insert();
        let receiving = table.insert();
        drop(InFlight::begin(&served, &table));
        let working = InFlight::begin(&busy, &table);
        working.request.received();
        let _sending = InFlight::begin(&receiving, &table);
        let shed_next = |expected: &Arc<Conn>| {
            assert!(table.shed_oldest_idle());
            assert!(
                expected.shed.load(Ordering::Acquire),
                "conn {}",
                expected.id
            );
            // One at a time: nothing else is shed while that one closes.
            assert!(!table.shed_oldest_idle());
            table.remove(expected.id);
        };
        shed_next(&silent_old);
        shed_next(&silent_new);
        // Then the oldest that is not busy: idle after a request, or still sending one.
        shed_next(&served);
        shed_next(&receiving);
        // Never one whose request was received in full and is not answered yet.
        assert!(!table.shed_oldest_idle());
        assert!(!busy.shed.load(Ordering::Acquire));
        drop(working);
        assert_eq!(busy.busy.load(Ordering::Acquire), 0);
        shed_next(&busy);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_request_is_busy_from_its_full_body_to_its_answer() {
        let table = Arc::new(Table::default());
        let conn = table.insert();
        let a = InFlight::begin(&conn, &table);
        let b = InFlight::begin(&conn, &table);
        assert_eq!(conn.busy.load(Ordering::Acquire), 0);
        a.request.received();
        a.request.received();
        assert_eq!(conn.busy.load(Ordering::Acquire), 1);
        // Answered before its body ended (the handler did not read it): never busy.
        drop(b);
        assert_eq!(conn.busy.load(Ordering::Acquire), 1);
        assert_eq!(conn.in_flight.load(Ordering::Acquire), 1);
        let state = Arc::clone(&a.request);
        drop(a);
        assert_eq!(conn.busy.load(Ordering::Acquire), 0);
        assert_eq!(conn.in_flight.load(Ordering::Acquire), 0);
        // A body that ends after its answer changes nothing.
        state.received();
        assert_eq!(conn.busy.load(Ordering::Acquire), 0);
        assert_eq!(conn.requests.load(Ordering::Acquire), 2);
    }

    /// The writing half of a socket end, counting the writes it is given; it takes
    /// vectored writes when `vectored` (as a `TcpStream` does).
    struct CountingWriter<W> {
        inner: W,
        vectored: bool,
        writes: Arc<AtomicUsize>,
    }

    impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountingWriter<W> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            let r = Pin::new(&mut this.inner).poll_write(cx, buf);
            if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
                this.writes.fetch_add(1, Ordering::Relaxed);
            }
            r
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.poll_write(cx, &all)
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    /// The server's writes for `calls` gRPC-shaped answers (headers, a 300-byte
    /// message, trailers) asked for at once, after a first call has settled the
    /// connection; the server's socket writes through `CountingWriter`, passed through
    /// [`connection_io`] as a listener of `served_as` would, or handed to hyper
    /// as it is when `None`.
    async fn writes_for_answers(
        calls: usize,
        vectored: bool,
        served_as: Option<Protocol>,
    ) -> usize {
        let (client_end, server_end) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let (read, write) = tokio::io::split(server_end);
        let socket = tokio::io::join(
            read,
            CountingWriter {
                inner: write,
                vectored,
                writes: Arc::clone(&writes),
            },
        );
        let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames: [Result<Frame<Bytes>, Infallible>; 2] = [
                Ok(Frame::data(Bytes::from(vec![b'x'; 300]))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
            Ok::<_, Infallible>(Response::new(body))
        });
        let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        match served_as {
            Some(protocol) => {
                tokio::spawn(builder.serve_connection(connection_io(socket, protocol), service))
            }
            None => tokio::spawn(builder.serve_connection(TokioIo::new(socket), service)),
        };
        let (client, connection) = h2::client::handshake(client_end).await.expect("handshake");
        tokio::spawn(connection);
        // Sent from one task without a pause, so that they reach the server in one
        // read (the client's connection task writes them together).
        let send = |client: &h2::client::SendRequest<Bytes>| {
            let request = Request::post("http://localhost/x")
                .body(())
                .expect("request");
            let mut client = client.clone();
            client.send_request(request, true).expect("send").0
        };
        let answer = |response: h2::client::ResponseFuture| async move {
            let mut body = response.await.expect("response").into_body();
            let mut read = 0;
            while let Some(data) = body.data().await {
                let data = data.expect("data");
                read += data.len();
                let _ = body.flow_control().release_capacity(data.len());
            }
            let trailers = body.trailers().await.expect("trailers").expect("some");
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(read, 300);
        };
        let client = client.ready().await.expect("ready");
        answer(send(&client)).await;
        tokio::task::yield_now().await;
        let before = writes.load(Ordering::Relaxed);
        let responses: Vec<_> = (0..calls).map(|_| send(&client)).collect();
        for response in responses {
            answer(response).await;
        }
        writes.load(Ordering::Relaxed) - before
    }

    /// On the runtime as the service runs it (multi-threaded, here one worker: the
    /// connection's task runs right after the request task that wakes it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_answer_goes_out_in_one_write_and_answers_ready_together_share_writes() {
        let grpc = Some(Protocol::Grpc);
        assert_eq!(writes_for_answers(1, true, grpc).await, 1);
        assert_eq!(writes_for_answers(1, false, grpc).await, 1);
        let together = writes_for_answers(8, true, grpc).await;
        assert!(together <= 2, "8 answers took {together} writes");
        // Without waiting a turn (as HTTP/1 listeners write) each answer is written
        // as soon as it is ready.
        let at_once = writes_for_answers(8, true, Some(Protocol::Http)).await;
        assert!(
            at_once > together,
            "{at_once} writes, {together} with gRPC's"
        );
        // And h2 with a socket that takes vectored writes writes the headers and
        // message, then the trailers, apart.
        assert_eq!(writes_for_answers(1, true, None).await, 2);
        let apart = writes_for_answers(8, true, None).await;
        assert!(
            apart >= 8 && apart > together,
            "{apart} writes, {together} as served"
        );
    }
}
