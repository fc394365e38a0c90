//! Traces over OTLP (`[otlp]`): the service's request spans (`grpc.request`,
//! `http.request`) exported to an OpenTelemetry collector, over gRPC or protobuf
//! over HTTP.
//!
//! - Off unless `otlp.endpoint` is set: then no layer is installed and
//!   [`set_caller_parent`] returns at once, so a request does no extra work.
//! - A request span is a child of the caller's span: its parent is the W3C
//!   `traceparent` the request carried ([`set_caller_parent`], called where each
//!   request span is made). Sampling is parent-based: a caller's sampled flag is
//!   honoured; a request without a `traceparent` is sampled at `otlp.sample_ratio`.
//! - Export is batched on the tokio runtime (the SDK's batch span processor); a
//!   request never waits for it. At most `otlp.queue_size` ended spans wait for
//!   export: past that a span is dropped and counted (`mcp_authz_otlp_spans_total`
//!   with `result="dropped"`).
//! - [`Otlp::shutdown`] exports what is queued, on graceful shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::TraceContext;

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`POST /v1/traces`).
    Http,
}

/// The `[otlp]` settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The collector: `http://host:4317` (gRPC) or `http://host:4318/v1/traces` (HTTP).
    pub endpoint: String,
    /// gRPC or HTTP.
    pub protocol: OtlpProtocol,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Headers (gRPC metadata) sent with every export, such as an API key.
    pub headers: BTreeMap<String, String>,
    /// Fraction of traces started here that are sampled (a caller's choice wins).
    pub sample_ratio: f64,
    /// Most ended spans waiting for export; more are dropped.
    pub queue_size: usize,
    /// Most spans in one export.
    pub batch_size: usize,
    /// Time between two exports.
    pub export_interval: Duration,
    /// Time limit of one export.
    pub export_timeout: Duration,
}

impl OtlpConfig {
    /// The settings' defaults, exporting to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol: OtlpProtocol::Grpc,
            service_name: DEFAULT_SERVICE_NAME.into(),
            headers: BTreeMap::new(),
            sample_ratio: 1.0,
            queue_size: DEFAULT_QUEUE_SIZE,
            batch_size: DEFAULT_BATCH_SIZE,
            export_interval: Duration::from_millis(DEFAULT_EXPORT_INTERVAL_MS),
            export_timeout: Duration::from_millis(DEFAULT_EXPORT_TIMEOUT_MS),
        }
    }
}

/// Default `otlp.service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "mcp-authz";
/// Default `otlp.queue_size`.
pub const DEFAULT_QUEUE_SIZE: usize = 2048;
/// Default `otlp.batch_size`.
pub const DEFAULT_BATCH_SIZE: usize = 512;
/// Default `otlp.export_interval_ms`.
pub const DEFAULT_EXPORT_INTERVAL_MS: u64 = 5000;
/// Default `otlp.export_timeout_ms`.
pub const DEFAULT_EXPORT_TIMEOUT_MS: u64 = 10_000;

/// Whether a layer exports spans (set once, by [`Otlp::start`]).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The export counters, once export is on.
static STATS: OnceLock<Arc<OtlpStats>> = OnceLock::new();

/// What happened to the spans handed to the exporter.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Spans in exports the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because `otlp.queue_size` spans were waiting.
    pub dropped: AtomicU64,
    /// Spans in exports that failed (collector down, refused, timed out).
    pub failed: AtomicU64,
    /// Spans waiting for export now.
    waiting: AtomicUsize,
    /// The last export failed.
    failing: AtomicBool,
}

/// The export counters, when OTLP export is on.
pub fn stats() -> Option<&'static OtlpStats> {
    STATS.get().map(Arc::as_ref)
}

/// Make `span` (a request's span) a child of the caller's span named by `trace`.
/// Does nothing when OTLP export is off or the request carried no `traceparent`.
pub fn set_caller_parent(span: &tracing::Span, trace: Option<&TraceContext>) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let Some(trace) = trace else { return };
    let flags = if trace.sampled() {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let caller = SpanContext::new(
        TraceId::from_bytes(trace.trace_id_bytes()),
        SpanId::from_bytes(trace.parent_id_bytes()),
        flags,
        true,
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(caller);
    // Fails only when the span is disabled (filtered out): nothing to export then.
    let _ = span.set_parent(cx);
}

/// The running exporter: the `tracing` layer to install, and the provider to shut
/// down.
#[derive(Debug)]
pub struct Otlp {
    provider: SdkTracerProvider,
    export_timeout: Duration,
}

/// The longest a graceful shutdown waits for the last export.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(3);

/// The `tracing` layer that turns the service's spans into OpenTelemetry spans.
pub type OtlpLayer<S> =
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

impl Otlp {
    /// Build the exporter of `config` and its batch processor, on the current tokio
    /// runtime (call it inside one). The error is one line.
    pub fn start<S>(config: &OtlpConfig) -> Result<(Self, OtlpLayer<S>), String>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let exporter = exporter(config)?;
        let stats = Arc::clone(STATS.get_or_init(Arc::default));
        let counted = CountingExporter {
            inner: exporter,
            stats: Arc::clone(&stats),
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.queue_size)
            .with_max_export_batch_size(config.batch_size)
            .with_scheduled_delay(config.export_interval)
            .with_max_export_timeout(config.export_timeout)
            .build();
        let processor =
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                counted,
                opentelemetry_sdk::runtime::Tokio,
            )
            .with_batch_config(batch)
            .build();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Admission {
                inner: processor,
                stats,
                capacity: config.queue_size,
            })
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("mcp-authz");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false);
        ENABLED.store(true, Ordering::Relaxed);
        Ok((
            Self {
                provider,
                export_timeout: config.export_timeout,
            },
            layer,
        ))
    }

    /// Export the spans still queued and stop, waiting at most the export time
    /// limit (and never more than [`SHUTDOWN_LIMIT`]): a collector that does not
    /// answer does not hold up the end of the process. Call it outside the
    /// runtime's worker threads, while the runtime still runs.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        let limit = self.export_timeout.min(SHUTDOWN_LIMIT);
        let (done, wait) = std::sync::mpsc::channel();
        let provider = self.provider;
        let spawned = std::thread::Builder::new()
            .name("otlp-shutdown".into())
            .spawn(move || {
                let _ = done.send(provider.shutdown());
            });
        if spawned.is_err() {
            tracing::warn!("OTLP exporter shutdown: cannot start a thread; queued spans are lost");
            return;
        }
        match wait.recv_timeout(limit) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("OTLP exporter shutdown: {e}"),
            Err(_) => tracing::warn!(
                limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                "OTLP exporter shutdown: the collector did not take the last spans in time"
            ),
        }
    }
}

/// The OTLP exporter of `config`.
fn exporter(config: &OtlpConfig) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match config.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (name, value) in &config.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a header name"))?;
                let value = tonic::metadata::MetadataValue::try_from(value.as_str())
                    .map_err(|_| format!("the value of header `{name}` is not valid"))?;
                metadata.insert(key, value);
            }
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.export_timeout)
                .with_metadata(metadata);
            if config.endpoint.starts_with("https://") {
                builder = builder
                    .with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
            }
            builder.build()
        }
        OtlpProtocol::Http => {
            let client = reqwest::Client::builder()
                .timeout(config.export_timeout)
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.export_timeout)
                .with_headers(config.headers.clone().into_iter().collect())
                .build()
        }
    };
    built.map_err(|e| {
        format!(
            "cannot build the OTLP exporter for `{}`: {e}",
            config.endpoint
        )
    })
}

/// The batch processor behind a count of the spans waiting for export: a span
/// that would make more than `capacity` wait is dropped here and counted (the
/// SDK's own queue drops silently).
#[derive(Debug)]
struct Admission<P> {
    inner: P,
    stats: Arc<OtlpStats>,
    capacity: usize,
}

impl<P: SpanProcessor> SpanProcessor for Admission<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let admitted = self
            .stats
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else if self.stats.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                queue_size = self.capacity,
                "OTLP export queue full: spans are dropped (counted in mcp_authz_otlp_spans_total)"
            );
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting the spans of each export and releasing their
/// places in the queue.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    stats: Arc<OtlpStats>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let _ = self
            .stats
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(w.saturating_sub(n))
            });
        let result = self.inner.export(batch).await;
        let count = u64::try_from(n).unwrap_or(u64::MAX);
        match &result {
            Ok(()) => {
                self.stats.exported.fetch_add(count, Ordering::Relaxed);
                if self.stats.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("OTLP export succeeds again");
                }
            }
            Err(e) => {
                self.stats.failed.fetch_add(count, Ordering::Relaxed);
                // Once per run of failures, not once per batch.
                if !self.stats.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(spans = n, "OTLP export failed: {e}");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
