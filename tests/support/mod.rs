//! Helpers shared by the integration tests: the built binary, copies of the
//! reference policies, and polling instead of sleeping.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The built `mcp-authz` binary.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcp-authz"));
    // Keep the developer's environment out of the tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("MCP_AUTHZ_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// The reference policy directory of the repository.
pub fn reference_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A temporary copy of the reference policies.
pub fn copy_of_reference() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&reference_policies(), dir.path());
    dir
}

/// Copy the files of `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read reference policies") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
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

/// Call `f` until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1: status code and body.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Response headers: lowercase names and values.
pub type Headers = Vec<(String, String)>;

/// A plain HTTP/1.1 request on 127.0.0.1: status code, headers (lowercase names)
/// and body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, Headers, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((status, headers, body.to_owned()))
}

/// POST a JSON body: status and body parsed as JSON (`Null` if it is not JSON).
pub fn post_json(
    addr: &str,
    path: &str,
    body: &serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let (status, _, text) = http_request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &body.to_string(),
    )?;
    Some((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    ))
}

/// A running `mcp-authz serve`, its log collected line by line; killed on drop.
pub struct Server {
    pub child: std::process::Child,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub http: String,
    pub grpc: String,
    /// The admin listener's address, when `--admin-listen` was given.
    pub admin: String,
}

impl Server {
    /// Start `serve` on ephemeral ports with extra arguments; wait until it listens.
    pub fn start(args: &[&str], policies: &Path) -> Server {
        let mut server = Server::spawn(args, policies);
        server.grpc = server.wait_for_listener("gRPC");
        server.http = server.wait_for_listener("HTTP");
        if args.contains(&"--admin-listen") {
            server.admin = server.wait_for_listener("admin");
        }
        server
    }

    /// [`Server::start`] with extra `MCP_AUTHZ_*` environment variables.
    pub fn start_with_env(args: &[&str], policies: &Path, env: &[(&str, &str)]) -> Server {
        let mut server = Server::spawn_with_env(args, policies, env);
        server.grpc = server.wait_for_listener("gRPC");
        server.http = server.wait_for_listener("HTTP");
        server
    }

    /// Start `serve` and return as soon as its gRPC listener is up (its policies
    /// may still be loading).
    pub fn start_grpc_only(args: &[&str], policies: &Path) -> Server {
        let mut server = Server::spawn(args, policies);
        server.grpc = server.wait_for_listener("gRPC");
        server
    }

    /// The address a listener (`HTTP`, `gRPC`) was bound to, from the log.
    pub fn wait_for_listener(&self, name: &str) -> String {
        let needle = format!("listener={name}");
        let json_needle = format!("\"listener\":\"{name}\"");
        let found = poll(Duration::from_secs(60), || {
            let line = self.find_log(|l| {
                l.contains("listening") && (l.contains(&needle) || l.contains(&json_needle))
            })?;
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(json) => json["addr"].as_str().map(str::to_owned),
                Err(_) => line
                    .split("addr=")
                    .nth(1)
                    .and_then(|a| a.split_whitespace().next())
                    .map(str::to_owned),
            }
        });
        match found {
            Some(addr) => addr,
            None => panic!("serve did not listen for {name}: {:?}", self.log()),
        }
    }

    fn spawn(args: &[&str], policies: &Path) -> Server {
        Server::spawn_with_env(args, policies, &[])
    }

    fn spawn_with_env(args: &[&str], policies: &Path, env: &[(&str, &str)]) -> Server {
        use std::io::BufRead;
        let mut child = bin()
            .args([
                "serve",
                "--http-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--policies",
            ])
            .arg(policies)
            .args(args)
            .env("MCP_AUTHZ_RELOAD_DEBOUNCE_MS", "100")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("log").push(line);
            }
        });
        Server {
            child,
            log,
            http: String::new(),
            grpc: String::new(),
            admin: String::new(),
        }
    }

    /// The log so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// The first log line that satisfies `f`.
    pub fn find_log(&self, f: impl Fn(&str) -> bool) -> Option<String> {
        self.log.lock().expect("log").iter().find(|l| f(l)).cloned()
    }

    /// Send a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
