//! The service in-process: every construction of an engine, a state or a router of the
//! tests is here (one place per kind), the HTTP routes driven without a socket with
//! `tower::ServiceExt::oneshot`, and the whole service started through the composition
//! root on ephemeral ports of 127.0.0.1 ([`Service`], [`Launch`]): its addresses come
//! from `App::bind`, never from a log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use mcp_authz::api::ext_authz::{ExtAuthzGrpc, http_router};
use mcp_authz::api::http::{admin_router, main_router, router};
use mcp_authz::api::services::{Ready, Services};
use mcp_authz::app::AppError;
use mcp_authz::authz::Engine;
use mcp_authz::config::{Config, Overrides};
use mcp_authz::identity::Resolver;
use mcp_authz::policy::PolicyStore;
use mcp_authz::telemetry::Telemetry;
use serde_json::Value;
use tokio::sync::watch;

use super::Capture;
use tower::ServiceExt;

/// The AuthZEN certification fixture.
pub fn fixture() -> PathBuf {
    super::repo().join("tests/fixtures/authzen")
}

/// The policy store of `dir`, which must be valid.
fn store(dir: &Path) -> Arc<PolicyStore> {
    Arc::new(PolicyStore::open(dir).expect("valid policies"))
}

/// An engine on `dir`.
pub fn engine(dir: &Path) -> Engine {
    Engine::new(store(dir))
}

/// An engine on `dir`, recording into `telemetry`.
pub fn engine_with(dir: &Path, telemetry: &Arc<Telemetry>) -> Engine {
    Engine::with_recorder(store(dir), telemetry.clone())
}

/// A resolver that knows no issuer: every bearer token is refused.
pub fn no_issuers() -> Resolver {
    // Building it awaits nothing without issuers; a thread of its own keeps this
    // usable from async tests and plain ones alike.
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(Resolver::new(&Default::default(), Path::new(".")))
                .expect("a resolver without issuers")
        })
        .join()
        .expect("resolver thread")
    })
}

/// The services on `engine` (which records nothing) with `resolver` (none: no
/// issuer), default settings, no trusted caller, no default server for Envoy.
pub fn state(engine: Engine, resolver: Option<Resolver>) -> Services {
    Services::new(
        engine,
        Arc::new(Telemetry::default()),
        resolver.unwrap_or_else(no_issuers),
    )
}

/// The services on `dir`, deciding through an engine that records into
/// `telemetry` (read it back from `Services::telemetry`).
pub fn state_on(dir: &Path, telemetry: Telemetry, resolver: Option<Resolver>) -> Services {
    let telemetry = Arc::new(telemetry);
    Services::new(
        engine_with(dir, &telemetry),
        telemetry,
        resolver.unwrap_or_else(no_issuers),
    )
}

/// [`state`] with `resolver`, ready.
pub fn ready(engine: Engine, resolver: Resolver) -> Ready {
    Ready::with(state(engine, Some(resolver)))
}

/// Envoy's ext_authz gRPC service on `ready`, called without a socket.
pub fn ext_authz_grpc(ready: Ready) -> ExtAuthzGrpc {
    ExtAuthzGrpc::new(ready)
}

/// The routes of Envoy's HTTP ext_authz mode on `ready`.
pub fn ext_authz_http(ready: Ready) -> Router {
    http_router(ready)
}

/// The main router on `dir`.
pub fn app(dir: &Path) -> Router {
    app_of(state_on(dir, Telemetry::default(), None))
}

/// The main router of `state` (the admin endpoints too when it has an admin token).
pub fn app_of(state: Services) -> Router {
    let admin = state.admin_token.is_some();
    router(Ready::with(state), admin)
}

/// The admin router of `state`.
pub fn admin_of(state: Services) -> Router {
    admin_router(Ready::with(state))
}

/// The main listener's router as the service composes it (AuthZEN, the HTTP ext_authz
/// mode, health) on `state`.
pub fn main_of(state: Services) -> Router {
    let admin = state.admin_token.is_some();
    main_router(Ready::with(state), admin)
}

/// A response: status, headers and body text.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Send a request.
pub async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// POST a JSON value.
pub async fn post(router: &Router, path: &str, body: &Value) -> Reply {
    post_with(router, path, body, &[]).await
}

/// POST a JSON value with extra headers.
pub async fn post_with(
    router: &Router,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        router,
        b.body(Body::from(body.to_string())).expect("request"),
    )
    .await
}

/// POST raw bytes with an optional content type.
pub async fn post_raw(
    router: &Router,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    let mut b = Request::post(path);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    send(
        router,
        b.body(Body::from(body.to_owned())).expect("request"),
    )
    .await
}

/// GET with extra headers.
pub async fn get(router: &Router, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::get(path).header("host", "pdp.test:8181");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(router, b.body(Body::empty()).expect("request")).await
}

/// The decision of a single evaluation.
pub async fn decision(router: &Router, body: &Value) -> bool {
    let r = post(router, "/access/v1/evaluation", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()["decision"]
        .as_bool()
        .expect("decision is a boolean")
}

/// How to start the whole service in-process ([`Service`]), as `mcp-authz serve
/// --policies DIR --http-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 [--admin-listen
/// 127.0.0.1:0] [--config FILE]` would: `MCP_AUTHZ_*` settings only from [`Launch::envs`]
/// (never the process's environment), `MCP_AUTHZ_RELOAD_DEBOUNCE_MS=100` unless given.
#[derive(Debug, Clone)]
pub struct Launch {
    policies: PathBuf,
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
    admin: bool,
    wait_ready: bool,
}

impl Launch {
    pub fn new(policies: &Path) -> Launch {
        Launch {
            policies: policies.to_owned(),
            file: None,
            env: Vec::new(),
            admin: false,
            wait_ready: true,
        }
    }

    /// A configuration file (`--config FILE`; its relative paths are relative to it).
    pub fn config(mut self, file: &Path) -> Launch {
        self.file = Some(file.to_owned());
        self
    }

    /// `MCP_AUTHZ_*` settings, as if from the environment.
    pub fn envs(mut self, env: &[(&str, &str)]) -> Launch {
        self.env
            .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// `decisions.deny_detail = "full"`: clients are told the full reason of a deny
    /// (the default tells them a generic `forbidden`), for tests that read which
    /// policy, rule or refusal denied a request in what the client receives.
    pub fn full_denials(self) -> Launch {
        self.envs(&[("MCP_AUTHZ_DECISIONS_DENY_DETAIL", "full")])
    }

    /// An admin listener on an ephemeral port.
    pub fn admin(mut self) -> Launch {
        self.admin = true;
        self
    }

    /// Return as soon as the listeners are bound and serving (the policies may still be
    /// loading: every listener answers "not ready" meanwhile).
    pub fn listening(mut self) -> Launch {
        self.wait_ready = false;
        self
    }

    /// The configuration `serve` would run with.
    fn config_of(&self) -> Config {
        let mut env: BTreeMap<String, String> = self.env.iter().cloned().collect();
        env.entry("MCP_AUTHZ_RELOAD_DEBOUNCE_MS".into())
            .or_insert_with(|| "100".into());
        let any = || Some("127.0.0.1:0".to_owned());
        let flags = Overrides {
            policies: Some(self.policies.clone()),
            grpc_listen: any(),
            http_listen: any(),
            admin_listen: if self.admin { any() } else { None },
            ..Default::default()
        };
        Config::load(self.file.as_deref(), &env, &flags).unwrap_or_else(|e| panic!("config: {e}"))
    }

    /// Start it on a thread of its own; panics if it cannot bind or does not become
    /// ready (unless [`Launch::listening`]).
    pub fn start(self) -> Service {
        let mut config = self.config_of();
        // The process's stdout is `/dev/null` in `process::Serve`; this one's is the test
        // binary's: a decision log to stdout goes to a file of the service instead.
        let files = tempfile::tempdir().expect("tempdir");
        if config.decision_log.enabled && config.decision_log.file.is_none() {
            config.decision_log.file = Some(files.path().join("stdout.jsonl"));
        }
        Service::run(config, self.wait_ready, files)
    }
}

/// How long the service may take to bind and load its policies, and to stop.
const LIMIT: Duration = Duration::from_secs(60);

/// What the service's thread reports once it serves.
struct Started {
    grpc: SocketAddr,
    http: SocketAddr,
    admin: Option<SocketAddr>,
    ready: Ready,
}

/// The whole service in-process, through the composition root (`App::bind`,
/// `Bound::serve`): a thread of its own runs it on its own multi-thread tokio runtime (2
/// workers), so that plain `#[test]`s and async tests of any flavour can use it alike.
/// Dropped (or [`Service::stop`]ped), it stops gracefully: the listeners close, the
/// decision log is flushed, the thread is joined.
///
/// Its own log (what `serve` writes to stderr, as text) is kept: every thread of its
/// runtime logs to it, and only those (a default subscriber of their own, never the
/// global one), so parallel tests never see each other's lines.
pub struct Service {
    /// The HTTP listener (health, AuthZEN, HTTP ext_authz, metrics), `127.0.0.1:PORT`.
    pub http: String,
    /// The gRPC listener (the gateway API, Envoy ext_authz, health, reflection).
    pub grpc: String,
    /// The admin listener (empty without [`Launch::admin`]).
    pub admin: String,
    ready: Ready,
    log: Capture,
    stop: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<Result<(), AppError>>>,
    /// Its own files (dropped after the thread is joined: fields drop after `drop`).
    _files: tempfile::TempDir,
}

impl Service {
    /// The service on `policies` with the configuration file `config`, if any; ready.
    pub fn start(policies: &Path, config: Option<&Path>) -> Service {
        let launch = Launch::new(policies);
        match config {
            Some(file) => launch.config(file),
            None => launch,
        }
        .start()
    }

    fn run(config: Config, wait_ready: bool, files: tempfile::TempDir) -> Service {
        let (stop, stopping) = watch::channel(false);
        let (started_tx, started) = std::sync::mpsc::channel::<Result<Started, String>>();
        let log = Capture::default();
        let dispatch = log_dispatch(&log, &config.log_level);
        let thread = std::thread::Builder::new()
            .name("mcp-authz-service".into())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                serve_on_own_runtime(config, wait_ready, dispatch, stopping, started_tx)
            })
            .expect("spawn the service thread");
        let started = match started.recv_timeout(LIMIT) {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                let _ = thread.join();
                panic!("{e}\n{}", log.text())
            }
            Err(e) => panic!(
                "the service did not start within {LIMIT:?}: {e}\n{}",
                log.text()
            ),
        };
        Service {
            http: started.http.to_string(),
            grpc: started.grpc.to_string(),
            admin: started.admin.map(|a| a.to_string()).unwrap_or_default(),
            ready: started.ready,
            log,
            stop: Some(stop),
            thread: Some(thread),
            _files: files,
        }
    }

    /// Its readiness (and, once ready, its one state).
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// The HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.parse().expect("the HTTP address")
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http_addr().port()
    }

    /// The gRPC port.
    pub fn grpc_port(&self) -> u16 {
        self.grpc
            .parse::<SocketAddr>()
            .expect("the gRPC address")
            .port()
    }

    /// Its log so far, line by line.
    pub fn log(&self) -> Vec<String> {
        self.log_text().lines().map(str::to_owned).collect()
    }

    /// Its log so far, as text.
    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// The first log line that satisfies `f`.
    pub fn find_log(&self, f: impl Fn(&str) -> bool) -> Option<String> {
        self.log().into_iter().find(|l| f(l))
    }

    /// Stop it gracefully and return how serving ended.
    pub fn stop(mut self) -> Result<(), AppError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), AppError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(AppError::Message("the service thread panicked".into()))),
            None => Ok(()),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// A subscriber that writes the service's log (text, as `serve --log-format text`
/// writes it, at `level`) to `log`.
fn log_dispatch(log: &Capture, level: &str) -> tracing::Dispatch {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = log.clone();
    tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || log.clone())
            .with_target(false)
            .with_ansi(false)
            .finish(),
    )
}

/// The body of a [`Service`]'s thread: bind, report the addresses (once ready, if
/// `wait_ready`), serve until `stopping`, and give up on a stop that takes longer than
/// [`LIMIT`].
fn serve_on_own_runtime(
    config: Config,
    wait_ready: bool,
    log: tracing::Dispatch,
    mut stopping: watch::Receiver<bool>,
    started: std::sync::mpsc::Sender<Result<Started, String>>,
) -> Result<(), AppError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mcp-authz-service-worker")
        .on_thread_start(move || {
            // The thread's default subscriber for as long as it lives.
            std::mem::forget(tracing::dispatcher::set_default(&log));
        })
        .enable_all()
        .build()
        .expect("the service's runtime");
    let result = runtime.block_on(async move {
        let bound = match mcp_authz::app::App::bind(config).await {
            Ok(bound) => bound,
            Err(e) => {
                let _ = started.send(Err(format!("the service did not bind: {e}")));
                return Err(e);
            }
        };
        let addresses = (bound.grpc_addr, bound.http_addr, bound.admin_addr);
        let ready = bound.ready();
        let mut stop = stopping.clone();
        let mut served = tokio::spawn(bound.serve(async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        if wait_ready {
            tokio::select! {
                _ = ready.wait() => {}
                r = &mut served => {
                    let r = r.unwrap_or_else(|e| Err(AppError::Message(e.to_string())));
                    let _ = started.send(Err(format!("the service ended before it was ready: {r:?}")));
                    return r;
                }
            }
        }
        let (grpc, http, admin) = addresses;
        let _ = started.send(Ok(Started {
            grpc,
            http,
            admin,
            ready,
        }));
        // Serve until stopped; then give the graceful stop a bound.
        let deadline = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(LIMIT).await;
        };
        tokio::select! {
            r = &mut served => r.unwrap_or_else(|e| Err(AppError::Message(e.to_string()))),
            () = deadline => Err(AppError::Message(format!("the service did not stop within {LIMIT:?}"))),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
