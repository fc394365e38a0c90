//! The built `mcp-authz` binary: a command to run, and `mcp-authz serve` as a child process
//! on ephemeral ports of 127.0.0.1, found from its `listening` log lines. Also what the
//! end-to-end harness needs for its own processes: process groups, work directories.

use std::ffi::OsString;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::poll;

/// How long `serve` may take to listen (and to be ready, when waited for).
pub const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// The built `mcp-authz` binary, without the developer's `MCP_AUTHZ_*` and `RUST_LOG`.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcp-authz"));
    clean_env(&mut c);
    c
}

/// `mcp-authz serve` on ephemeral loopback ports, for a start that is meant to fail
/// (more arguments after it).
pub fn serve_command() -> Command {
    let mut c = bin();
    c.args([
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
    ]);
    c
}

/// Keep the developer's environment out of a command of the tests.
fn clean_env(c: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("MCP_AUTHZ_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
}

/// Run a command and return its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run mcp-authz")
}

/// Stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released). Racy by
/// nature: use it only for "nothing listens here" or fixed configs. Never one this
/// process was given before: the system may hand a released port out again at once,
/// and a config asking for several ports (one process's gRPC and HTTP, Envoy's
/// listener) would then name one port twice.
pub fn unused_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Children.

/// Send `signal` (`TERM`, `KILL`, `HUP`, ...) to the process `pid`, or to the process group
/// `pid` when `group`.
pub fn kill(pid: u32, signal: &str, group: bool) -> bool {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(target)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Wait for `child` to exit, for at most `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    poll(limit, || child.try_wait().ok().flatten())
}

/// Stop a child: `TERM` (when `grace` > 0), then `KILL`; to its whole process group when
/// `group` (a child started with `process_group(0)`). The group is signalled only while its
/// leader is our child and not yet reaped, so its id (the leader's PID) cannot belong to
/// anyone else.
pub fn stop_child(child: &mut Child, grace: Duration, group: bool) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if !grace.is_zero() {
        kill(child.id(), "TERM", group);
        if let Some(status) = wait_exit(child, grace) {
            return Some(status);
        }
    }
    if group {
        kill(child.id(), "KILL", true);
    }
    let _ = child.kill();
    wait_exit(child, Duration::from_secs(10))
}

/// A temporary directory for one process's files, kept when `MCP_AUTHZ_E2E_KEEP` is set
/// (its path is then printed).
pub struct WorkDir(Option<tempfile::TempDir>);

impl WorkDir {
    pub fn new(prefix: &str) -> WorkDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        WorkDir(Some(dir))
    }

    pub fn path(&self) -> &Path {
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

/// A file's text (lossy), empty when it cannot be read.
pub fn read_text(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A new file for a child's output.
pub fn log_file(path: &Path) -> File {
    File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// `mcp-authz serve`.

/// How to start `mcp-authz serve --policies DIR --http-listen 127.0.0.1:0 --grpc-listen
/// 127.0.0.1:0 [ARGS]`: the developer's `MCP_AUTHZ_*` and `RUST_LOG` removed,
/// `MCP_AUTHZ_RELOAD_DEBOUNCE_MS=100` unless given, stderr (the log) to a file of its own
/// temporary directory. [`Serve::start`] waits until every listener logged its address
/// and `/readyz` answers 200 (every listener binds at once and answers "not ready" until
/// the policies are loaded).
#[derive(Debug, Clone)]
pub struct Serve {
    policies: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    ulimit: Option<String>,
    admin: bool,
}

impl Serve {
    pub fn new(policies: &Path) -> Serve {
        Serve {
            policies: policies.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            ulimit: None,
            admin: false,
        }
    }

    /// More arguments; `--admin-listen` among them is waited for too.
    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Serve {
        for a in args {
            let a = a.as_ref();
            self.admin |= a == "--admin-listen";
            self.args.push(a.to_owned());
        }
        self
    }

    /// `--config FILE`.
    pub fn config(self, file: &Path) -> Serve {
        self.args([OsString::from("--config"), file.as_os_str().to_owned()])
    }

    /// An admin listener on an ephemeral port (`--admin-listen 127.0.0.1:0`).
    pub fn admin(self) -> Serve {
        self.args(["--admin-listen", "127.0.0.1:0"])
    }

    /// Extra environment variables (`MCP_AUTHZ_*`).
    pub fn envs(mut self, env: &[(&str, &str)]) -> Serve {
        self.env
            .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// Run under a descriptor limit: the arguments of the shell's `ulimit`, such as `-n 128`.
    pub fn ulimit(mut self, limit: &str) -> Serve {
        self.ulimit = Some(limit.to_owned());
        self
    }

    /// Start it; panics with its log if it exits or does not listen in time.
    pub fn start(self) -> Server {
        let dir = WorkDir::new("mcp-authz-serve-");
        let ports = Ports::default();
        let (child, ports) = self
            .spawn(&ports, dir.path(), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        Server {
            http: ports.http.clone(),
            grpc: ports.grpc.clone(),
            admin: ports.admin.clone(),
            child,
            serve: self,
            runs: 1,
            dir,
        }
    }

    fn command(&self, ports: &Ports) -> Command {
        let bin = env!("CARGO_BIN_EXE_mcp-authz");
        let mut cmd = match &self.ulimit {
            Some(limit) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        clean_env(&mut cmd);
        let or_any = |addr: &str| {
            if addr.is_empty() {
                "127.0.0.1:0".to_owned()
            } else {
                addr.to_owned()
            }
        };
        cmd.args(["serve", "--http-listen", &or_any(&ports.http)])
            .args(["--grpc-listen", &or_any(&ports.grpc)])
            .arg("--policies")
            .arg(&self.policies);
        let mut args = self.args.iter();
        while let Some(a) = args.next() {
            // A restart binds the admin listener where it was.
            if a == "--admin-listen" && !ports.admin.is_empty() {
                args.next();
                cmd.args(["--admin-listen", &ports.admin]);
            } else {
                cmd.arg(a);
            }
        }
        // Reload tests need not wait the default 250 ms debounce (overridable).
        cmd.env("MCP_AUTHZ_RELOAD_DEBOUNCE_MS", "100")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// Start a process with `ports` (empty: any) and wait for it.
    fn spawn(&self, ports: &Ports, dir: &Path, run: usize) -> Result<(Child, Ports), String> {
        let log = dir.join(format!("mcp-authz.{run}.log"));
        let mut child = self
            .command(ports)
            .stderr(log_file(&log))
            .spawn()
            .map_err(|e| format!("start mcp-authz: {e}"))?;
        let mut names = vec!["gRPC", "HTTP"];
        if self.admin {
            names.push("admin");
        }
        let found = poll(STARTUP_LIMIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(format!(
                    "mcp-authz exited ({status}) before listening:\n{}",
                    read_text(&log)
                )));
            }
            let text = read_text(&log);
            let addrs: Vec<(String, SocketAddr)> =
                text.lines().filter_map(listening_line).collect();
            let addr = |name: &str| {
                addrs
                    .iter()
                    .find(|(l, _)| l == name)
                    .map(|(_, a)| a.to_string())
            };
            let mut found = Ports::default();
            for name in &names {
                let a = addr(name)?;
                match *name {
                    "gRPC" => found.grpc = a,
                    "HTTP" => found.http = a,
                    _ => found.admin = a,
                }
            }
            let (status, _) = super::http::get(&found.http, "/readyz")?;
            if status != 200 {
                return None;
            }
            Some(Ok(found))
        });
        match found {
            Some(Ok(found)) => Ok((child, found)),
            Some(Err(e)) => Err(e),
            None => {
                stop_child(&mut child, Duration::ZERO, false);
                Err(format!(
                    "mcp-authz did not listen for {names:?} within {STARTUP_LIMIT:?}:\n{}",
                    read_text(&log)
                ))
            }
        }
    }
}

/// The addresses of a `serve` process (`host:port`; empty: not waited for).
#[derive(Debug, Clone, Default)]
struct Ports {
    http: String,
    grpc: String,
    admin: String,
}

/// A running `mcp-authz serve`; killed on drop.
pub struct Server {
    /// The HTTP listener (health, AuthZEN, HTTP ext_authz, metrics), `127.0.0.1:PORT`.
    pub http: String,
    /// The gRPC listener (the gateway API, Envoy ext_authz, health, reflection).
    pub grpc: String,
    /// The admin listener, when `--admin-listen` was given.
    pub admin: String,
    child: Child,
    serve: Serve,
    runs: usize,
    dir: WorkDir,
}

impl Server {
    /// Start `serve` on ephemeral ports with extra arguments; wait until it listens.
    pub fn start(args: &[&str], policies: &Path) -> Server {
        Serve::new(policies).args(args).start()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// `GET` on the HTTP listener: status and body (`None`: no answer).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        super::http::get(&self.http, path)
    }

    /// The log so far, line by line: every run, a `--- restart ---` line between two.
    pub fn log(&self) -> Vec<String> {
        self.log_text().lines().map(str::to_owned).collect()
    }

    /// The log so far as text: every run, a `--- restart ---` line between two.
    pub fn log_text(&self) -> String {
        (0..self.runs)
            .map(|run| read_text(&self.dir.path().join(format!("mcp-authz.{run}.log"))))
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// The first log line that satisfies `f`.
    pub fn find_log(&self, f: impl Fn(&str) -> bool) -> Option<String> {
        self.log().into_iter().find(|l| f(l))
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Send a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        assert!(kill(self.child.id(), name, false), "kill -{name}");
    }

    /// Stop it: `SIGTERM` (graceful shutdown), `SIGKILL` after 5 s.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5), false);
    }

    /// Stop it if it runs, and start it again on the same ports: an Envoy configured
    /// with them reaches the new process.
    pub fn restart(&mut self) {
        self.stop();
        let run = self.runs;
        self.runs += 1;
        let ports = Ports {
            http: self.http.clone(),
            grpc: self.grpc.clone(),
            admin: self.admin.clone(),
        };
        let mut last = String::new();
        // The ports were ours a moment ago; if the kernel is slow to release them, retry.
        let started = poll(Duration::from_secs(10), || {
            match self.serve.spawn(&ports, self.dir.path(), run) {
                Ok(v) => Some(v),
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        let Some((child, found)) = started else {
            panic!(
                "mcp-authz did not restart on {} / {}:\n{last}",
                self.http, self.grpc
            );
        };
        assert_eq!(found.http, self.http, "restarted on another HTTP address");
        assert_eq!(found.grpc, self.grpc, "restarted on another gRPC address");
        self.child = child;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::ZERO, false);
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
