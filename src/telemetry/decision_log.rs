//! The decision log: one JSON object per line for every decision made through
//! `Engine::decide_for`, written to stdout or a file by a thread of its own.
//!
//! A decision never waits for the log. Records go through a bounded queue; when
//! it is full (the writer is slow or blocked, say a pipe nobody reads) the record
//! is dropped and counted (`mcp_authz_decision_log_records_total{result="dropped"}`).
//! Serialization happens on the writer thread.
//!
//! A record:
//!
//! ```json
//! {"decision_id":"0199...","time":"2026-11-25T10:00:00.123456Z","interface":"authzen",
//!  "decision":"deny","reason":"denied: ...","generation":3,
//!  "user":"Mcp::User::\"dave\"","application":"Mcp::Application::\"corpassist\"",
//!  "server":"Mcp::Server::\"docs\"","action":"Mcp::Action::\"tools/call\"",
//!  "resource":"Mcp::Tool::\"docs/delete_document\"",
//!  "evaluations":[{"role":"user","principal":"Mcp::User::\"dave\"","allow":true,
//!                  "policies":["employees-use-docs"],"errors":[]}, ...],
//!  "latency_us":41.2,"trace_id":"4bf9...","parent_span_id":"00f0...","request_id":"abc",
//!  "arguments":{"document_id":"x","token":"[REDACTED]"}}
//! ```
//!
//! `user`, `application`, `server`, `action` and `resource` are Cedar uids (absent when
//! unknown); `evaluations` holds each principal's verdict, determining policy ids and
//! errors; `trace_id`/`parent_span_id` come from the caller's W3C `traceparent`,
//! `request_id` from its `X-Request-ID` (each absent when not sent). `arguments` (the
//! tool or prompt arguments, `context.arguments`) appear only with
//! `decision_log.include_arguments = true`, and every key named in
//! `decision_log.redact` (any depth, case-insensitive) has its value replaced by
//! `"[REDACTED]"`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use cedar_policy::EntityUid;
use serde_json::{Map, Value, json};

use super::trace::TraceContext;
use crate::authz::{Decision, Interface};

/// Where the decision log goes and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLogConfig {
    /// Whether decisions are logged at all.
    pub enabled: bool,
    /// A file to append to; `None` is stdout.
    pub file: Option<PathBuf>,
    /// Records that may wait for the writer before new ones are dropped.
    pub queue_capacity: usize,
    /// Whether tool and prompt arguments are logged.
    pub include_arguments: bool,
    /// Argument keys whose values are replaced by `"[REDACTED]"` (case-insensitive).
    pub redact: Vec<String>,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            file: None,
            queue_capacity: 4096,
            include_arguments: false,
            redact: default_redactions(),
        }
    }
}

/// Argument keys redacted unless configured otherwise.
pub fn default_redactions() -> Vec<String> {
    [
        "password",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Everything a record says about one decision. Built on the deciding thread
/// (clones only), serialized on the writer thread.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    /// The decision id.
    pub decision_id: String,
    /// When the decision was made.
    pub time: SystemTime,
    /// The interface it came through.
    pub interface: Interface,
    /// The user principal.
    pub user: Option<EntityUid>,
    /// The application principal.
    pub application: Option<EntityUid>,
    /// The MCP server.
    pub server: Option<EntityUid>,
    /// The action.
    pub action: Option<EntityUid>,
    /// The resource.
    pub resource: Option<EntityUid>,
    /// The decision.
    pub decision: std::sync::Arc<Decision>,
    /// Time spent deciding.
    pub latency: Duration,
    /// `context.arguments`, when arguments are logged (redacted when written).
    pub arguments: Option<Value>,
    /// The caller's trace context.
    pub trace: Option<TraceContext>,
    /// The caller's request id.
    pub request_id: Option<String>,
}

impl DecisionRecord {
    /// The JSON object of this record, with `redact` applied to the arguments.
    pub fn to_json(&self, redact: &[String]) -> Value {
        let mut m = Map::new();
        m.insert("decision_id".into(), json!(self.decision_id));
        m.insert("time".into(), json!(rfc3339(self.time)));
        m.insert("interface".into(), json!(self.interface.as_str()));
        m.insert("decision".into(), json!(self.decision.verdict()));
        m.insert("reason".into(), json!(self.decision.reason));
        m.insert("generation".into(), json!(self.decision.generation));
        for (key, uid) in [
            ("user", &self.user),
            ("application", &self.application),
            ("server", &self.server),
            ("action", &self.action),
            ("resource", &self.resource),
        ] {
            if let Some(uid) = uid {
                m.insert(key.into(), json!(uid.to_string()));
            }
        }
        m.insert(
            "evaluations".into(),
            serde_json::to_value(&self.decision.evaluations).unwrap_or(Value::Null),
        );
        m.insert(
            "latency_us".into(),
            json!((self.latency.as_nanos() as f64 / 1000.0 * 1000.0).round() / 1000.0),
        );
        if let Some(t) = &self.trace {
            m.insert("trace_id".into(), json!(t.trace_id()));
            m.insert("parent_span_id".into(), json!(t.parent_span_id()));
        }
        if let Some(id) = &self.request_id {
            m.insert("request_id".into(), json!(id));
        }
        if let Some(args) = &self.arguments {
            m.insert("arguments".into(), redacted(args.clone(), redact));
        }
        Value::Object(m)
    }
}

/// `value` with the value of every key named in `keys` (any depth,
/// case-insensitive) replaced by `"[REDACTED]"`.
pub fn redacted(value: Value, keys: &[String]) -> Value {
    match value {
        Value::Object(obj) => Value::Object(
            obj.into_iter()
                .map(|(k, v)| {
                    if keys.iter().any(|r| r.eq_ignore_ascii_case(&k)) {
                        (k, Value::String("[REDACTED]".into()))
                    } else {
                        (k, redacted(v, keys))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| redacted(v, keys)).collect()),
        v => v,
    }
}

/// Counters of the decision log.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Records written.
    pub written: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records lost to a write error.
    pub failed: AtomicU64,
}

/// The sending side of the decision log.
#[derive(Debug)]
pub struct DecisionLog {
    tx: ArcSwapOption<SyncSender<DecisionRecord>>,
    stats: Arc<LogStats>,
    include_arguments: bool,
    done: std::sync::Mutex<Option<Receiver<()>>>,
}

impl DecisionLog {
    /// Open the configured output and start the writer thread.
    pub fn open(config: &DecisionLogConfig) -> std::io::Result<Self> {
        let writer: Box<dyn Write + Send> = match &config.file {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        Self::with_writer(writer, config)
    }

    /// Start the writer thread on `writer` (tests pass their own).
    pub fn with_writer(
        writer: Box<dyn Write + Send>,
        config: &DecisionLogConfig,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_capacity.max(1));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let stats = Arc::new(LogStats::default());
        let writer_stats = Arc::clone(&stats);
        let redact: Vec<String> = config.redact.clone();
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                write_loop(rx, writer, &writer_stats, &redact);
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            tx: ArcSwapOption::from_pointee(tx),
            stats,
            include_arguments: config.include_arguments,
            done: std::sync::Mutex::new(Some(done_rx)),
        })
    }

    /// Whether records should carry the tool arguments.
    pub fn include_arguments(&self) -> bool {
        self.include_arguments
    }

    /// Queue a record; drop and count it when the queue is full. Never blocks.
    pub fn submit(&self, record: DecisionRecord) {
        let guard = self.tx.load();
        let Some(tx) = guard.as_ref() else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// Stop accepting records and wait up to `timeout` for the queued ones to be
    /// written. Returns whether the writer finished in time (it may be blocked).
    pub fn close(&self, timeout: Duration) -> bool {
        self.tx.store(None);
        let done = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match done {
            Some(rx) => rx.recv_timeout(timeout).is_ok(),
            None => true,
        }
    }
}

fn write_loop(
    rx: Receiver<DecisionRecord>,
    writer: Box<dyn Write + Send>,
    stats: &LogStats,
    redact: &[String],
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    let mut line = Vec::with_capacity(1024);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            line.clear();
            let written = serde_json::to_writer(&mut line, &record.to_json(redact))
                .map_err(std::io::Error::from)
                .and_then(|()| {
                    line.push(b'\n');
                    out.write_all(&line)
                });
            count(stats, written);
            next = rx.try_recv().ok();
        }
        // The queue is empty: push what we have out.
        if let Err(e) = out.flush() {
            report_failure(stats, &e);
        }
    }
    let _ = out.flush();
}

fn count(stats: &LogStats, result: std::io::Result<()>) {
    match result {
        Ok(()) => {
            stats.written.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            report_failure(stats, &e);
        }
    }
}

fn report_failure(stats: &LogStats, e: &std::io::Error) {
    let failed = stats.failed.load(Ordering::Relaxed);
    // The first failure, then every thousandth: a broken output must not flood the log.
    if failed <= 1 || failed.is_multiple_of(1000) {
        tracing::error!(error = %e, failed, "cannot write the decision log");
    }
}

/// `time` as RFC 3339 in UTC with microseconds, e.g. `2026-11-25T10:00:00.123456Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let d = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn redaction_reaches_every_depth_and_ignores_case() {
        let v = json!({"Password": "p", "nested": {"token": "t", "keep": 1}, "list": [{"SECRET": "s"}]});
        let r = redacted(v, &default_redactions());
        assert_eq!(
            r,
            json!({"Password": "[REDACTED]", "nested": {"token": "[REDACTED]", "keep": 1}, "list": [{"SECRET": "[REDACTED]"}]})
        );
    }
}
