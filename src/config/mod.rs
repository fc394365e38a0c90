//! Service configuration: a TOML file, overridden by `MCP_AUTHZ_*` environment
//! variables, overridden by command-line flags — merged explicitly, in that order.
//!
//! Every problem is reported as one line naming the key, before any port is bound.
//!
//! [`Config::load`] reads the file (`file.rs`: the TOML structure, paths relative to
//! the file), applies the environment (`env.rs`) and the flags (`flags.rs`), then
//! checks every value and builds the [`Config`] (`validate.rs`). The one table of
//! settings, from which the TOML keys, the environment variables, `serve --help` and
//! the README's table come, is [`SETTINGS`] (`settings.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::authz::CacheSettings;
use crate::identity::{IdentityConfig, IdentityConfigError};
use crate::telemetry::DecisionLogConfig;

mod env;
mod file;
mod flags;
mod resources;
mod servers;
mod settings;
#[cfg(test)]
mod tests;
mod tls;
mod validate;

pub use file::{
    AdminFile, AuthzenFile, CacheFile, DecisionLogFile, DecisionsFile, EnvoyFile, FileConfig,
    GrpcFile, ListenersFile, LogFile, OtlpFile, ReloadFile, ShadowFile, ValidationFile,
};
pub use flags::Overrides;
pub use resources::{METADATA_PREFIX, ResourceServer, ResourceServers, ServerFile, check_resource};
pub use servers::{ServerMap, ServerMapError, normalized_host};
pub use settings::{SETTINGS, Setting, ValueKind, env_help, settings_markdown};
pub use tls::{TlsConfig, TlsFile, TlsListeners, trusted_caller_matches};
pub use validate::{MAX_WORKER_THREADS, worker_count};

/// Default policy directory.
pub const DEFAULT_POLICIES: &str = "policies";
/// Default gRPC listen address (our API, Envoy ext_authz, health, reflection).
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:9191";
/// Default HTTP listen address (AuthZEN, HTTP ext_authz, health, metrics).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8181";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "MCP_AUTHZ_CONFIG";

/// A configuration problem, in one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file `{path}`: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file `{path}`: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// Why, with the line.
        reason: String,
    },
    /// A value is not acceptable.
    #[error("invalid `{key}` (from {origin}): {reason}")]
    Value {
        /// The key, e.g. `http_listen`.
        key: String,
        /// Where the value came from: the file, an environment variable, a flag.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The issuers, SPIFFE or token settings are not usable. The inner error is in
    /// the message, so it is not also a `source` (it would print twice).
    #[error("invalid identity configuration: {0}")]
    Identity(IdentityConfigError),
    /// An `MCP_AUTHZ_*` environment variable that names no setting.
    #[error("unknown environment variable `{0}` (see `mcp-authz serve --help` for the settings)")]
    UnknownEnv(String),
}

impl From<IdentityConfigError> for ConfigError {
    fn from(e: IdentityConfigError) -> Self {
        ConfigError::Identity(e)
    }
}

/// Output format of the service's own log (defined where the log is set up).
pub use crate::telemetry::LogFormat;

/// How much of a deny's reason reaches the client (`decisions.deny_detail`): the
/// JSON-RPC error of a deny, and the gateway API's `reason`. The decision log
/// always keeps the full reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyDetail {
    /// `forbidden: this request is not allowed`: no policy ids, principals or reason.
    #[default]
    Generic,
    /// `forbidden: <reason>`: the reason as the decision log has it.
    Full,
    /// As if the tool, prompt or resource did not exist (as an MCP server answers
    /// an unknown one); other methods as [`DenyDetail::Generic`].
    NotFound,
}

/// A secret read from configuration: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, to compare with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The merged, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Policy directory.
    pub policies: PathBuf,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Separate health/admin listen address, if any.
    pub admin_listen: Option<SocketAddr>,
    /// Threads that serve requests; `None`: the runtime's default (one per CPU the
    /// process may use, or `TOKIO_WORKER_THREADS`).
    pub worker_threads: Option<std::num::NonZeroUsize>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// How strictly the policy directory is checked, at startup and on reload.
    pub policy_load: crate::policy::LoadOptions,
    /// Reload debounce.
    pub reload_debounce: Duration,
    /// Fallback check interval (zero: off).
    pub reload_poll_interval: Duration,
    /// Envoy default server.
    pub envoy_default_server: Option<String>,
    /// Envoy requests' servers by `:authority` and destination SPIFFE ID.
    pub envoy_servers: ServerMap,
    /// Token issuers, SPIFFE and token verification settings.
    pub identity: IdentityConfig,
    /// The MCP servers as protected resources (`[servers.<id>]`).
    pub resource_servers: ResourceServers,
    /// The decision cache.
    pub cache: CacheSettings,
    /// The trusted caller's secret, read from `grpc.trusted_caller_token_file`.
    pub trusted_caller_token: Option<Secret>,
    /// Gateway API limits.
    pub grpc: GrpcSettings,
    /// Directory that relative paths of the config file are resolved against.
    pub base_dir: PathBuf,
    /// AuthZEN API settings.
    pub authzen: AuthzenSettings,
    /// The admin bearer token's file, if admin endpoints are token-protected.
    pub admin_token_file: Option<PathBuf>,
    /// The decision log.
    pub decision_log: DecisionLogConfig,
    /// Rules every decision follows.
    pub rules: crate::authz::Rules,
    /// Dry run: every decision is made and logged, every answer is allow.
    pub dry_run: bool,
    /// How much of a deny's reason the client is told.
    pub deny_detail: DenyDetail,
    /// Listener time limits and connection caps.
    pub listeners: ListenerConfig,
    /// TLS on the listeners; `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// SPIFFE IDs of callers that may assert identities, proven by their client
    /// certificate (`tls.trusted_callers`).
    pub trusted_callers: Vec<String>,
    /// The shadow policy set and sampling (`[shadow]`).
    pub shadow: ShadowConfig,
    /// Traces over OTLP (`[otlp]`); `None`: off.
    pub otlp: Option<crate::telemetry::otlp::OtlpConfig>,
}

/// The `[shadow]` settings, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowConfig {
    /// The shadow policy directory, if any.
    pub policies: Option<PathBuf>,
    /// Sampling, queue and the worker's caches (the live cache's settings; used for
    /// `@shadow` policies too).
    pub settings: crate::authz::ShadowSettings,
}

impl Config {
    /// Read `file` (if any), apply `env` (the process environment, passed in so it
    /// can be tested) and `flags`, and check the result.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let (mut table, base_dir, file_origin) = match file {
            Some(path) => {
                let table = file::read(path)?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (table, base, format!("config file `{}`", path.display()))
            }
            None => (toml::Table::new(), PathBuf::new(), String::new()),
        };
        // Paths written in the file are relative to the file.
        file::resolve_paths(&mut table, &base_dir)?;
        // Where each value came from, for messages: the file unless overridden.
        let mut origins = BTreeMap::new();
        env::apply(&mut table, env, &mut origins)?;
        let mut fc = file::from_table(table, file)?;
        flags::apply(&mut fc, flags, &mut origins);
        let origin = |k: &str| {
            origins.get(k).cloned().unwrap_or_else(|| {
                if file_origin.is_empty() {
                    "default".into()
                } else {
                    file_origin.clone()
                }
            })
        };
        validate::checked(&fc, base_dir, &origin)
    }

    /// The process environment's `MCP_AUTHZ_*` variables.
    pub fn process_env() -> BTreeMap<String, String> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with("MCP_AUTHZ_"))
            .collect()
    }
}

/// Gateway API settings, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcSettings {
    /// Most checks in one `BatchCheck` (and MCP messages in all of them).
    pub max_batch_checks: usize,
    /// Most entries in one `FilterList`.
    pub max_list_entries: usize,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            max_batch_checks: 1000,
            max_list_entries: 1000,
        }
    }
}

/// AuthZEN settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzenSettings {
    /// The PDP's public base URL, without a trailing `/`.
    pub base_url: Option<String>,
    /// Most evaluations in one batch.
    pub max_batch: usize,
}

impl Default for AuthzenSettings {
    fn default() -> Self {
        Self {
            base_url: None,
            max_batch: 1000,
        }
    }
}

/// Default number of descriptors kept free for everything but connections.
pub const DEFAULT_RESERVED_DESCRIPTORS: u64 = 64;

/// Listener time limits, the same for every listener (`[listeners]`; used by
/// the listeners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time to receive a complete HTTP/1 request head.
    pub header_read: Duration,
    /// Time a connection with no request in flight stays open.
    pub idle: Duration,
    /// Interval of HTTP/2 keepalive pings (`None`: no pings).
    pub keepalive_interval: Option<Duration>,
    /// Time to wait for the answer to a keepalive ping.
    pub keepalive_timeout: Duration,
    /// Time from a request head to its response head.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(120),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(10),
            request: Duration::from_secs(30),
        }
    }
}

/// The `[listeners]` settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Time limits.
    pub timeouts: Timeouts,
    /// Cap of the gRPC listener (`None`: derived from the descriptor limit).
    pub grpc_max_connections: Option<usize>,
    /// Cap of the HTTP listener (`None`: derived).
    pub http_max_connections: Option<usize>,
    /// Cap of the admin listener (`None`: derived).
    pub admin_max_connections: Option<usize>,
    /// Descriptors kept free for everything but connections.
    pub reserved_descriptors: u64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            grpc_max_connections: None,
            http_max_connections: None,
            admin_max_connections: None,
            reserved_descriptors: DEFAULT_RESERVED_DESCRIPTORS,
        }
    }
}
