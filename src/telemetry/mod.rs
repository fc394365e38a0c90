//! The service's own log (tracing), decision metrics ([`metrics`]), the decision
//! log ([`decision_log`]) and W3C trace context ([`trace`]).
//!
//! [`Telemetry`] is the decision core's [`Recorder`]: the core reports every
//! decision it makes, and telemetry counts it and queues its decision log record,
//! so every interface gets both without doing anything.

pub mod decision_log;
pub mod log_file;
pub mod metrics;
pub mod otlp;
/// W3C trace context (a leaf module of its own: the decision core carries it).
pub use crate::trace;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::authz::{Decided, ReasonKind, Recorder, ShadowCompared};
use crate::identity::Resolver;

/// Output format of the service's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
use crate::policy::PolicyStore;

pub use decision_log::{
    DecisionLog, DecisionLogConfig, DecisionRecord, ListRecord, RecordInput, RecordedRequest,
    Redactor, ShadowRecord,
};
pub use metrics::Metrics;
pub use trace::TraceContext;

/// Send the log to stderr in `format`, filtered by `RUST_LOG` or else `level`.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// As [`init`], and with OTLP export of the service's spans when `otlp` is given
/// (call it inside the tokio runtime: the exporter runs on it). The returned
/// [`otlp::Otlp`] is shut down on graceful shutdown, to export what is queued.
/// With `otlp` absent this is [`init`]: no span is exported and no layer added.
pub fn init_with_otlp(
    format: LogFormat,
    level: &str,
    otlp: Option<&otlp::OtlpConfig>,
) -> Result<Option<otlp::Otlp>, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let Some(config) = otlp else {
        init(format, level);
        return Ok(None);
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let (exporter, layer) = otlp::Otlp::start(config)?;
    // The service's own spans (the request spans and what happens inside them),
    // whatever the log's level: not those of the libraries.
    let spans = tracing_subscriber::filter::Targets::new()
        .with_target("mcp_authz", tracing::Level::INFO)
        .with_target("mcp-authz", tracing::Level::INFO);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(layer.with_filter(spans))
        .try_init();
    Ok(Some(exporter))
}

/// What decisions are recorded into: the metrics, and the decision log if one is
/// configured.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Decision counters and latency.
    pub metrics: Metrics,
    /// The decision log, if enabled.
    pub decision_log: Option<DecisionLog>,
    /// A dry run (`decisions.dry_run`): reported as `mcp_authz_dry_run 1`.
    pub dry_run: bool,
    /// The shadow policy directory's store, once the service has one.
    shadow_store: std::sync::OnceLock<std::sync::Arc<PolicyStore>>,
}

impl Telemetry {
    /// Metrics and the given decision log.
    pub fn new(decision_log: Option<DecisionLog>) -> Self {
        Self {
            metrics: Metrics::default(),
            decision_log,
            dry_run: false,
            shadow_store: std::sync::OnceLock::new(),
        }
    }

    /// The same telemetry, reporting a dry run when `on`.
    pub fn with_dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// Render the state of the shadow policy directory's `store` too (set once).
    pub fn set_shadow_store(&self, store: std::sync::Arc<PolicyStore>) {
        let _ = self.shadow_store.set(store);
    }

    /// The decision log record of `decided`.
    fn record_of(log: &DecisionLog, decided: Decided<'_>) -> DecisionRecord {
        let decision = &decided.outcome.decision;
        DecisionRecord {
            decision_id: decided.outcome.decision_id.clone(),
            time: std::time::SystemTime::now(),
            interface: decided.interface,
            request: match decided.request {
                Some(request) => log.recorded(decision, request),
                None => std::sync::Arc::default(),
            },
            decision: std::sync::Arc::clone(decision),
            latency: decided.outcome.latency,
            trace: decided.meta.trace,
            request_id: decided.meta.request_id.clone(),
            server_source: decided.meta.server_source,
        }
    }

    /// Record a request that filtered a list: counted once (an allow unless every
    /// entry was hidden) and written as one decision log record, however many
    /// entries it decided.
    pub fn record_list(&self, record: ListRecord) {
        self.metrics.record_decision(
            record.record.interface,
            record.record.decision.allow,
            record.record.latency,
        );
        if let Some(log) = &self.decision_log {
            log.submit_list(record);
        }
    }

    /// Every series of the service in the Prometheus text format: the decision
    /// metrics, the decision cache's size (when there is one), the policy store's
    /// state, the JWKS refreshes of `resolver` (when given) and the decision log's
    /// counters.
    pub fn render_prometheus(
        &self,
        store: &PolicyStore,
        resolver: Option<&Resolver>,
        cache: Option<&crate::authz::DecisionCache>,
    ) -> String {
        use metrics::Exposition;
        use std::sync::atomic::Ordering;
        let mut out = Exposition::default();
        self.metrics.render(&mut out);
        if let Some(cache) = cache {
            out.family(
                "mcp_authz_decision_cache_entries",
                "gauge",
                "Decisions the decision cache holds now (approximate).",
            );
            out.sample(
                "mcp_authz_decision_cache_entries",
                &[],
                cache.stats().entries,
            );
        }

        let snapshot = store.snapshot();
        let status = store.status();
        out.family(
            "mcp_authz_policy_generation",
            "gauge",
            "Generation of the policy snapshot serving now.",
        );
        out.sample("mcp_authz_policy_generation", &[], snapshot.generation);
        out.family(
            "mcp_authz_dry_run",
            "gauge",
            "1 in a dry run (`decisions.dry_run`): every request is decided and logged, and answered allow.",
        );
        out.sample("mcp_authz_dry_run", &[], u64::from(self.dry_run));
        out.family(
            "mcp_authz_policy_info",
            "gauge",
            "Content digest of the policy snapshot serving now (policies, schema, entity data): equal on replicas serving the same files.",
        );
        out.sample(
            "mcp_authz_policy_info",
            &[("content_digest", &snapshot.digests.content)],
            1,
        );
        out.family(
            "mcp_authz_policies",
            "gauge",
            "Policies in the snapshot serving now.",
        );
        out.sample(
            "mcp_authz_policies",
            &[],
            u64::try_from(snapshot.policy_count()).unwrap_or(u64::MAX),
        );
        out.family(
            "mcp_authz_policy_reloads_total",
            "counter",
            "Policy reloads that swapped in a new snapshot (success) or were rejected (failure).",
        );
        out.sample(
            "mcp_authz_policy_reloads_total",
            &[("result", "success")],
            status.successes,
        );
        out.sample(
            "mcp_authz_policy_reloads_total",
            &[("result", "failure")],
            status.failures,
        );
        out.family(
            "mcp_authz_policies_in_sync",
            "gauge",
            "1 when the policies serving match the files, 0 while an invalid change is pending.",
        );
        out.sample("mcp_authz_policies_in_sync", &[], u64::from(status.in_sync));
        if let Some(t) = status.last_attempt {
            out.family(
                "mcp_authz_policy_last_reload_timestamp_seconds",
                "gauge",
                "When the last policy reload attempt ended (Unix time).",
            );
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            out.sample_f64("mcp_authz_policy_last_reload_timestamp_seconds", &[], secs);
        }

        if let Some(shadow) = self.shadow_store.get() {
            let snapshot = shadow.snapshot();
            out.family(
                "mcp_authz_shadow_policy_generation",
                "gauge",
                "Generation of the shadow policy directory's snapshot.",
            );
            out.sample(
                "mcp_authz_shadow_policy_generation",
                &[],
                snapshot.generation,
            );
            out.family(
                "mcp_authz_shadow_policy_info",
                "gauge",
                "Content digest of the shadow policy directory's snapshot.",
            );
            out.sample(
                "mcp_authz_shadow_policy_info",
                &[("content_digest", &snapshot.digests.content)],
                1,
            );
            out.family(
                "mcp_authz_shadow_policies_in_sync",
                "gauge",
                "1 when the shadow policies match their files, 0 while an invalid change is pending.",
            );
            out.sample(
                "mcp_authz_shadow_policies_in_sync",
                &[],
                u64::from(shadow.status().in_sync),
            );
        }

        let stats = resolver.map(Resolver::jwks_stats).unwrap_or_default();
        out.family(
            "mcp_authz_jwks_refreshes_total",
            "counter",
            "JWKS fetches per issuer, by result.",
        );
        for s in stats.iter().filter(|s| s.has_url) {
            out.sample(
                "mcp_authz_jwks_refreshes_total",
                &[("issuer", &s.issuer), ("result", "success")],
                s.refresh_successes,
            );
            out.sample(
                "mcp_authz_jwks_refreshes_total",
                &[("issuer", &s.issuer), ("result", "failure")],
                s.refresh_failures,
            );
        }
        out.family("mcp_authz_jwks_keys", "gauge", "Keys in force per issuer.");
        for s in &stats {
            out.sample(
                "mcp_authz_jwks_keys",
                &[("issuer", &s.issuer)],
                u64::try_from(s.keys).unwrap_or(u64::MAX),
            );
        }

        out.family(
            "mcp_authz_decision_log_records_total",
            "counter",
            "Decision log records written, dropped because the queue was full, or lost to a write error.",
        );
        let (written, dropped, failed) = match &self.decision_log {
            Some(log) => {
                let s = log.stats();
                (
                    s.written.load(Ordering::Relaxed),
                    s.dropped.load(Ordering::Relaxed),
                    s.failed.load(Ordering::Relaxed),
                )
            }
            None => (0, 0, 0),
        };
        out.sample(
            "mcp_authz_decision_log_records_total",
            &[("result", "written")],
            written,
        );
        out.sample(
            "mcp_authz_decision_log_records_total",
            &[("result", "dropped")],
            dropped,
        );
        out.sample(
            "mcp_authz_decision_log_records_total",
            &[("result", "failed")],
            failed,
        );
        if let Some(otlp) = otlp::stats() {
            out.family(
                "mcp_authz_otlp_spans_total",
                "counter",
                "Spans exported over OTLP, dropped because the export queue was full, or lost in failed exports.",
            );
            for (result, n) in [
                ("exported", &otlp.exported),
                ("dropped", &otlp.dropped),
                ("failed", &otlp.failed),
            ] {
                out.sample(
                    "mcp_authz_otlp_spans_total",
                    &[("result", result)],
                    n.load(Ordering::Relaxed),
                );
            }
        }
        out.family("mcp_authz_build_info", "gauge", "The running version.");
        out.sample(
            "mcp_authz_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        out.finish()
    }
}
/// The server and kind of an undeclared-tool, -prompt or -argument denial (the
/// server is the first segment of the tool's or prompt's id, `server/name`).
fn undeclared<'d>(decided: &'d Decided<'_>) -> Option<(&'d str, metrics::Undeclared)> {
    let request = decided.request?;
    let kind = match decided.outcome.decision.reason.kind() {
        ReasonKind::UndeclaredArgument => metrics::Undeclared::Argument,
        ReasonKind::UndeclaredTool if request.resource.type_name().basename() == "Prompt" => {
            metrics::Undeclared::Prompt
        }
        ReasonKind::UndeclaredTool => metrics::Undeclared::Tool,
        _ => return None,
    };
    let (server, _) = request.resource.id().unescaped().split_once('/')?;
    Some((server, kind))
}

/// Every decision is counted, and queued for the decision log when there is one.
impl Recorder for Telemetry {
    fn decided(&self, decided: Decided<'_>) {
        self.metrics.record_decision(
            decided.interface,
            decided.outcome.decision.allow,
            decided.outcome.latency,
        );
        if let Some((server, kind)) = undeclared(&decided) {
            self.metrics.undeclared_denial(server, kind);
        }
        if let Some(log) = &self.decision_log {
            log.submit(Self::record_of(log, decided));
        }
    }

    fn cache_lookup(&self, hit: bool) {
        if hit {
            self.metrics.cache_hit();
        } else {
            self.metrics.cache_miss();
        }
    }

    /// Every shadow decision is counted; one that differs from the live decision
    /// is counted by policy and logged as a `"record":"shadow"` line.
    fn shadow_compared(&self, c: ShadowCompared<'_>) {
        self.metrics
            .shadow_decision(c.live.allow, c.shadow.allow, c.difference);
        if !c.disagrees() {
            return;
        }
        tracing::debug!(
            decision_id = c.decision_id,
            set = c.set.as_str(),
            live = c.live.verdict(),
            shadow = c.shadow.verdict(),
            "shadow decision differs"
        );
        if let Some(log) = &self.decision_log {
            log.submit_shadow(ShadowRecord {
                decision_id: c.decision_id.to_owned(),
                time: std::time::SystemTime::now(),
                set: c.set.as_str(),
                interface: c.interface,
                user: c.request.user.clone(),
                application: c.request.application.clone(),
                server: c.request.server.clone(),
                action: c.request.action.clone(),
                resource: c.request.resource.clone(),
                live: std::sync::Arc::new(c.live.clone()),
                shadow: c.shadow.clone(),
                difference: c.difference.to_vec(),
                shadow_policies: c.shadow_policies.to_vec(),
                trace: c.meta.trace,
                request_id: c.meta.request_id.clone(),
            });
        }
    }

    fn shadow_dropped(&self) {
        self.metrics.shadow_dropped();
    }
}
