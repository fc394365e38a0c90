//! Helpers of the integration tests, shared by both test binaries: `service` (the service
//! in-process and as a process, the CLI) and `e2e` (real Envoy and real MCP, with its own
//! `harness` for those processes).
//!
//! - [`process`]: the built binary; `mcp-authz serve` as a child process on ephemeral ports
//!   (for tests of the process itself: signals, exit codes, its log, descriptor limits,
//!   restarts); the one place that reads mcp-authz's ports from its log
//! - [`inproc`]: the service in-process: engines, states and routers, driven with
//!   `tower::ServiceExt::oneshot`, and the whole service on ephemeral ports through the
//!   composition root, [`inproc::Service`] (every construction of a service is there)
//! - [`http`]: plain HTTP/1.1 over TCP, written by hand
//! - [`gateway`]: the gateway's gRPC API: messages, the trusted caller, clients
//! - [`envoy`]: Envoy ext_authz `CheckRequest`s as Envoy sends them, and the answers
//! - [`tokens`]: test keys, tokens, JWKS documents and a JWKS server, the demo tokens
//! - [`config`]: configuration files
//! - here: paths, polling, capturing a writer, running a test alone in its own process
//!
//! Each binary uses a part of these, and no item is unused by both (check with this
//! module's `allow(dead_code)` removed: `cargo check --test service` and `--test e2e`
//! warn only about items that the other binary uses).

#![allow(
    dead_code,
    reason = "shared by the two test binaries, each of which uses a part"
)]

pub mod config;
pub mod envoy;
pub mod gateway;
pub mod http;
pub mod inproc;
pub mod pki;
pub mod process;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A policy that lets the application `summarizer` (which the reference policies never
/// allow) call `docs/get_document`: an edit that flips a decision.
pub const SUMMARIZER_GRANT: &str = "@id(\"summarizer-gets-documents\")\npermit (principal == Mcp::Application::\"summarizer\", action in Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/get_document\");\n";

/// The arguments a call of the reference tool or prompt `id` (`server/name`) needs
/// to fit its imported action (policies/tools/): its required arguments, from
/// `tests/fixtures/mcp/reference_arguments.json` (the table the unit tests use too);
/// `None` for any other tool.
pub fn reference_arguments(id: &str) -> Option<serde_json::Value> {
    static TABLE: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        let text =
            std::fs::read_to_string(repo().join("tests/fixtures/mcp/reference_arguments.json"))
                .expect("the reference arguments table");
        serde_json::from_str(&text).expect("the reference arguments table is JSON")
    });
    TABLE.get(id).cloned()
}

/// The `--context` of a `check` of `action` on the reference tool or prompt
/// `resource` that only gives the arguments it requires (see
/// [`reference_arguments`]); `None` for other actions and resources.
pub fn reference_context(action: &str, resource: &str) -> Option<String> {
    if !matches!(action, "tools/call" | "prompts/get") {
        return None;
    }
    reference_arguments(resource).map(|a| serde_json::json!({ "arguments": a }).to_string())
}

/// `check` arguments (`--action A --resource R ...`) with the reference arguments
/// of `R` added as `--context` when they give none.
pub fn with_reference_context(args: &[&str]) -> Vec<String> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
            .copied()
    };
    let mut out: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    if value("--context").is_none()
        && let (Some(action), Some(resource)) = (value("--action"), value("--resource"))
        && let Some(context) = reference_context(action, resource)
    {
        out.extend(["--context".to_owned(), context]);
    }
    out
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference policy directory of the repository.
pub fn reference_policies() -> PathBuf {
    repo().join("policies")
}

/// A temporary copy of the reference policies.
pub fn copy_of_reference() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&reference_policies(), dir.path());
    dir
}

/// Write a file the way editors and deploy tools do: aside, then renamed into
/// place. A file written in place can be read by a watching service half written
/// (an empty `.cedar` file is a valid, empty policy file, and a reload of it is a
/// new generation), so every test that changes a watched directory writes this way.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Copy the files of `from` into `to`, and its directories (the imported
/// `tools/` of a policy directory) with theirs.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read reference policies") {
        let entry = entry.expect("entry");
        let kind = entry.file_type().expect("type");
        if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        } else if kind.is_dir() {
            let sub = to.join(entry.file_name());
            std::fs::create_dir_all(&sub).expect("mkdir");
            copy_dir(&entry.path(), &sub);
        }
    }
}

/// Call `f` every 20 ms until it returns `Some`, for at most `limit`.
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

/// Polls `check` every 20 ms until it holds, for at most `limit` (the async [`poll`]).
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A writer that keeps what it is given (a decision log, a tracing subscriber's output).
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("capture").clone()).expect("utf-8")
    }

    /// Everything written so far, one JSON value per line.
    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
            .collect()
    }
}

/// The variable that tells a child started by [`run_alone`] which test it runs.
const ALONE: &str = "MCP_AUTHZ_TEST_ALONE";

/// Run the test `name` (its full name in this binary, `module::test`) alone in a child
/// process of this test binary, for a test that sets process-wide state (a global tracing
/// subscriber) or must see every log line of its process. Returns `true` in the calling
/// test once the child passed (the caller then returns), `false` in the child (the caller
/// then runs its body). Use it as the first line of the test:
///
/// ```ignore
/// if support::run_alone("reload::every_reload_logs_and_shows_what_changed") {
///     return;
/// }
/// ```
pub fn run_alone(name: &str) -> bool {
    if std::env::var_os(ALONE).is_some_and(|v| v == name) {
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([name, "--exact", "--test-threads=1"])
        .env(ALONE, name)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "`{name}` in its own process ({}):\n{stdout}\n{stderr}",
        out.status
    );
    true
}
