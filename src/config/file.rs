//! The configuration file as written: its TOML structure (every section refuses
//! unknown keys), how it is read, and its relative paths.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, DenyDetail, LogFormat, SETTINGS, ValueKind};
use crate::identity::{IssuerConfig, JwtSettings, SpiffeConfig};

/// The `[log]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `text` or `json`.
    pub format: Option<LogFormat>,
    /// A tracing filter such as `info` or `mcp_authz=debug` (`RUST_LOG` wins).
    pub level: Option<String>,
}

/// The `[reload]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadFile {
    /// Quiet time after a change before reloading, in milliseconds (default 250).
    pub debounce_ms: Option<u64>,
    /// Interval of the fallback check of the policy files, in seconds (default 5; 0 turns it off).
    pub poll_interval_secs: Option<u64>,
}

/// The `[validation]` section: how strictly the policy directory is checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationFile {
    /// Every warning about the policy directory is an error (default false).
    pub deny_warnings: Option<bool>,
}

/// The `[envoy]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyFile {
    /// Server id when a route carries no `context_extensions.mcp_server`.
    pub default_server: Option<String>,
    /// `:authority`/Host patterns (`docs.*.svc.cluster.local`) and their server ids.
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, String>,
    /// Destination SPIFFE IDs (`attributes.destination.principal`) and their server ids.
    #[serde(default)]
    pub principals: std::collections::BTreeMap<String, String>,
}

/// The `[cache]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    /// Cache decisions (default true).
    pub enabled: Option<bool>,
    /// Most decisions kept (default 100000).
    pub max_entries: Option<u64>,
    /// Seconds a decision is kept (default 60).
    pub ttl_secs: Option<u64>,
}

/// The `[grpc]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcFile {
    /// A file holding the secret that a trusted caller (the gateway) sends in the
    /// `x-mcp-authz-caller-token` metadata to have its asserted identities honoured.
    pub trusted_caller_token_file: Option<PathBuf>,
    /// Most checks in one `BatchCheck`, and most MCP messages in all its checks
    /// together (default 1000).
    pub max_batch_checks: Option<u64>,
    /// Most entries (names, or entries of a raw result) in one `FilterList` (default 1000).
    pub max_list_entries: Option<u64>,
}

/// The `[authzen]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzenFile {
    /// The PDP's public base URL (`policy_decision_point` in the AuthZEN metadata);
    /// default: `http://` and the request's `Host`.
    pub base_url: Option<String>,
    /// Most evaluations in one `/access/v1/evaluations` request (default 1000).
    pub max_batch: Option<u64>,
}

/// The `[decisions]` section: rules every decision follows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsFile {
    /// Decide a request that has a user but no application by the user alone
    /// (default `false`: such a request is denied).
    pub allow_user_only: Option<bool>,
    /// Allow `tools/call` of a tool (`prompts/get` of a prompt) the schema does not
    /// declare on a server that has imported ones (default `false`: denied).
    pub allow_undeclared_tools: Option<bool>,
    /// Allow a declared tool's call with arguments it does not declare, left out of
    /// the context (default `false`: such a call is denied).
    pub allow_undeclared_arguments: Option<bool>,
    /// Decide and log every request as usual but answer allow (default `false`).
    pub dry_run: Option<bool>,
    /// How much of a deny's reason the client is told (default `generic`).
    pub deny_detail: Option<DenyDetail>,
}

/// The `[shadow]` section: a policy set decided beside the live one, never
/// enforced.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowFile {
    /// The shadow policy directory (relative paths are relative to the config file).
    pub policies: Option<PathBuf>,
    /// The fraction of live decisions shadowed, 0 to 1 (default 1).
    pub sample: Option<f64>,
    /// Decisions waiting to be shadowed before new ones are dropped (default 1024).
    pub queue_capacity: Option<u64>,
}

/// The `[admin]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// A file holding the bearer token of the admin endpoints (`/v1/policies`,
    /// `/v1/reload`). Without it they are served on the admin listener only.
    pub token_file: Option<PathBuf>,
}

/// The `[decision_log]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogFile {
    /// Whether every decision is logged (default true).
    pub enabled: Option<bool>,
    /// A file to append to (default: stdout).
    pub file: Option<PathBuf>,
    /// Records waiting for the writer before new ones are dropped (default 4096).
    pub queue_capacity: Option<u64>,
    /// Whether tool and prompt arguments are logged (default false).
    pub include_arguments: Option<bool>,
    /// Patterns of argument keys whose values are redacted: a key matches when its
    /// normalized form (NFKC, case folded, letters and digits only) contains a
    /// pattern's (default: token, secret, password, passwd, pwd, key, credential,
    /// auth, cookie, session, signature, private).
    pub redact: Option<Vec<String>>,
}

/// The `[otlp]` section: the service's spans exported to an OpenTelemetry
/// collector (off unless `endpoint` is set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpFile {
    /// The collector: `http://127.0.0.1:4317` (gRPC) or
    /// `http://127.0.0.1:4318/v1/traces` (HTTP).
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http` (protobuf over HTTP).
    pub protocol: Option<crate::telemetry::otlp::OtlpProtocol>,
    /// `service.name` of the spans (default `mcp-authz`).
    pub service_name: Option<String>,
    /// Headers sent with every export, such as an API key.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Fraction of the traces started here that are exported, 0 to 1 (default 1);
    /// a caller's sampled flag in `traceparent` wins.
    pub sample_ratio: Option<f64>,
    /// Ended spans waiting for export before new ones are dropped (default 2048).
    pub queue_size: Option<u64>,
    /// Most spans in one export (default 512).
    pub batch_size: Option<u64>,
    /// Time between two exports, in milliseconds (default 5000).
    pub export_interval_ms: Option<u64>,
    /// Time limit of one export, in milliseconds (default 10000).
    pub export_timeout_ms: Option<u64>,
}

/// The `[listeners]` section: time limits and connection caps of the gRPC, HTTP
/// and admin listeners.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersFile {
    /// Time to receive a complete HTTP/1 request head, in seconds (default 10).
    pub header_read_timeout_secs: Option<u64>,
    /// Time a connection with no request in flight stays open, in seconds (default 120).
    pub idle_timeout_secs: Option<u64>,
    /// Interval of HTTP/2 keepalive pings, in seconds (default 30; 0 turns them off).
    pub keepalive_interval_secs: Option<u64>,
    /// Time to wait for a keepalive ping's answer, in seconds (default 10).
    pub keepalive_timeout_secs: Option<u64>,
    /// Time from a request head to its response head, in seconds (default 30).
    pub request_timeout_secs: Option<u64>,
    /// Most connections of the gRPC listener (default: 10000, less if the
    /// descriptor limit is lower).
    pub grpc_max_connections: Option<u64>,
    /// Most connections of the HTTP listener (default: as for gRPC).
    pub http_max_connections: Option<u64>,
    /// Most connections of the admin listener (default: 64, less if the descriptor
    /// limit is lower).
    pub admin_max_connections: Option<u64>,
    /// Descriptors kept free for policy files, the decision log and key fetches
    /// (default 64).
    pub reserved_descriptors: Option<u64>,
}

/// The configuration file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Policy directory (relative paths are relative to the config file).
    pub policies: Option<PathBuf>,
    /// gRPC listen address.
    pub grpc_listen: Option<String>,
    /// HTTP listen address.
    pub http_listen: Option<String>,
    /// Optional separate listen address for health and admin endpoints.
    pub admin_listen: Option<String>,
    /// Threads that serve requests (default: one per CPU).
    pub worker_threads: Option<u64>,
    /// Logging.
    #[serde(default)]
    pub log: LogFile,
    /// How strictly the policy directory is checked.
    #[serde(default)]
    pub validation: ValidationFile,
    /// Policy reloading.
    #[serde(default)]
    pub reload: ReloadFile,
    /// Envoy ext_authz settings.
    #[serde(default)]
    pub envoy: EnvoyFile,
    /// The gateway API.
    #[serde(default)]
    pub grpc: GrpcFile,
    /// The decision cache.
    #[serde(default)]
    pub cache: CacheFile,
    /// Trusted token issuers.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// The MCP servers as protected resources, by server id.
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, super::ServerFile>,
    /// SPIFFE (workload identity) settings.
    #[serde(default)]
    pub spiffe: SpiffeConfig,
    /// Token verification settings.
    #[serde(default)]
    pub jwt: JwtSettings,
    /// AuthZEN API settings.
    #[serde(default)]
    pub authzen: AuthzenFile,
    /// Admin endpoint settings.
    #[serde(default)]
    pub admin: AdminFile,
    /// The decision log.
    #[serde(default)]
    pub decision_log: DecisionLogFile,
    /// `[decisions]`.
    #[serde(default)]
    pub decisions: DecisionsFile,
    /// `[shadow]`.
    #[serde(default)]
    pub shadow: ShadowFile,
    /// Listener time limits and connection caps.
    #[serde(default)]
    pub listeners: ListenersFile,
    /// TLS on the listeners and trusted callers.
    #[serde(default)]
    pub tls: super::TlsFile,
    /// Traces over OTLP.
    #[serde(default)]
    pub otlp: OtlpFile,
}

/// The settings of the file at `path`, checked against the structure first so that
/// an error names its line.
pub(super) fn read(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let parse_error = |e: toml::de::Error| ConfigError::Parse {
        path: path.display().to_string(),
        reason: one_line(&e.to_string()),
    };
    toml::from_str::<FileConfig>(&text).map_err(parse_error)?;
    toml::from_str(&text).map_err(parse_error)
}

/// The file's settings with the environment applied, as the file's structure; `file`
/// names it in an error.
pub(super) fn from_table(
    table: toml::Table,
    file: Option<&Path>,
) -> Result<FileConfig, ConfigError> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: file.map_or_else(|| "(environment)".to_owned(), |p| p.display().to_string()),
            reason: one_line(&e.to_string()),
        })
}

/// Make the relative paths written in the file relative to the file's directory.
pub(super) fn resolve_paths(table: &mut toml::Table, base_dir: &Path) -> Result<(), ConfigError> {
    for s in SETTINGS.iter().filter(|s| s.kind == ValueKind::Path) {
        let slot = match s.key.split_once('.') {
            Some((section, key)) => table
                .get_mut(section)
                .and_then(toml::Value::as_table_mut)
                .and_then(|t| t.get_mut(key)),
            None => table.get_mut(s.key),
        };
        if let Some(toml::Value::String(p)) = slot
            && Path::new(p.as_str()).is_relative()
        {
            let joined = base_dir.join(p.as_str());
            *p = joined
                .to_str()
                .ok_or_else(|| ConfigError::Value {
                    key: s.key.into(),
                    origin: "the config file".into(),
                    reason: format!(
                        "the config file's directory `{}` is not valid UTF-8: give an absolute path",
                        base_dir.display()
                    ),
                })?
                .to_owned();
        }
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
