//! Service configuration: a TOML file, overridden by `MCP_AUTHZ_*` environment
//! variables, overridden by command-line flags — merged explicitly, in that order.
//!
//! Every problem is reported as one line naming the key, before any port is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::listener::{ListenerConfig, Timeouts};
use crate::authz::CacheSettings;
use crate::identity::{
    IdentityConfig, IdentityConfigError, IssuerConfig, JwtSettings, SpiffeConfig,
};
use crate::telemetry::DecisionLogConfig;

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
    /// The issuers, SPIFFE or token settings are not usable.
    #[error("invalid identity configuration: {0}")]
    Identity(#[from] IdentityConfigError),
    /// An `MCP_AUTHZ_*` environment variable that names no setting.
    #[error("unknown environment variable `{0}` (see `mcp-authz serve --help` for the settings)")]
    UnknownEnv(String),
}

/// Output format of the service's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

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

/// The `[envoy]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyFile {
    /// Server id when a route carries no `context_extensions.mcp_server`.
    pub default_server: Option<String>,
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
    /// Logging.
    #[serde(default)]
    pub log: LogFile,
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
    /// Listener time limits and connection caps.
    #[serde(default)]
    pub listeners: ListenersFile,
}

/// Values given as command-line flags (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--policies`.
    pub policies: Option<PathBuf>,
    /// `--grpc-listen`.
    pub grpc_listen: Option<String>,
    /// `--http-listen`.
    pub http_listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
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
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Reload debounce.
    pub reload_debounce: Duration,
    /// Fallback check interval (zero: off).
    pub reload_poll_interval: Duration,
    /// Envoy default server.
    pub envoy_default_server: Option<String>,
    /// Token issuers, SPIFFE and token verification settings.
    pub identity: IdentityConfig,
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
    /// Listener time limits and connection caps.
    pub listeners: ListenerConfig,
}

impl Config {
    /// Read `file` (if any), apply `env` (the process environment, passed in so it
    /// can be tested) and `flags`, and check the result.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let (mut fc, base_dir, file_origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                let fc: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    reason: one_line(&e.to_string()),
                })?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (fc, base, format!("config file `{}`", path.display()))
            }
            None => (FileConfig::default(), PathBuf::new(), String::new()),
        };
        // Paths written in the file are relative to the file.
        if let Some(p) = &fc.policies
            && p.is_relative()
        {
            fc.policies = Some(base_dir.join(p));
        }
        for p in [&mut fc.admin.token_file, &mut fc.decision_log.file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        }
        // Where each value came from, for messages: the file unless overridden.
        let mut origins = BTreeMap::new();
        apply_env(&mut fc, env, &mut origins)?;
        apply_flags(&mut fc, flags, &mut origins);
        let origin = |k: &str| {
            origins.get(k).cloned().unwrap_or_else(|| {
                if file_origin.is_empty() {
                    "default".into()
                } else {
                    file_origin.clone()
                }
            })
        };

        let addr =
            |key: &str, v: Option<&String>, default: &str| -> Result<SocketAddr, ConfigError> {
                let text = v.map_or(default, String::as_str);
                text.parse().map_err(|_| ConfigError::Value {
                    key: key.into(),
                    origin: origin(key),
                    reason: format!("`{text}` is not an address such as `127.0.0.1:8181`"),
                })
            };
        let grpc_listen = addr("grpc_listen", fc.grpc_listen.as_ref(), DEFAULT_GRPC_LISTEN)?;
        let http_listen = addr("http_listen", fc.http_listen.as_ref(), DEFAULT_HTTP_LISTEN)?;
        // A bare port is a loopback address: the admin listener is local by default.
        let admin_listen = match &fc.admin_listen {
            Some(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => {
                Some(addr("admin_listen", Some(&format!("127.0.0.1:{a}")), "")?)
            }
            Some(a) => Some(addr("admin_listen", Some(a), "")?),
            None => None,
        };
        if let Some(a) = admin_listen
            && !a.ip().is_loopback()
            && fc.admin.token_file.is_none()
        {
            return Err(ConfigError::Value {
                key: "admin_listen".into(),
                origin: origin("admin_listen"),
                reason: format!(
                    "`{a}` is not a loopback address: set `admin.token_file` to protect the admin endpoints"
                ),
            });
        }
        let authzen = checked_authzen(&fc.authzen, &origin)?;
        let grpc = checked_grpc(&fc.grpc, &origin)?;
        let decision_log = checked_decision_log(&fc.decision_log, &origin)?;
        let listeners = checked_listeners(&fc.listeners, &origin)?;
        if grpc_listen == http_listen && grpc_listen.port() != 0 {
            return Err(ConfigError::Value {
                key: "http_listen".into(),
                origin: origin("http_listen"),
                reason: format!("`{http_listen}` is also the gRPC listen address"),
            });
        }
        let policies = fc
            .policies
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_POLICIES));
        if policies.as_os_str().is_empty() {
            return Err(ConfigError::Value {
                key: "policies".into(),
                origin: origin("policies"),
                reason: "empty path".into(),
            });
        }
        if let Some(s) = &fc.envoy.default_server
            && s.trim().is_empty()
        {
            return Err(ConfigError::Value {
                key: "envoy.default_server".into(),
                origin: origin("envoy.default_server"),
                reason: "empty server id".into(),
            });
        }
        let identity = IdentityConfig {
            issuers: fc.issuers.clone(),
            spiffe: fc.spiffe.clone(),
            jwt: fc.jwt.clone(),
        };
        identity.validate()?;
        let trusted_caller_token = match &fc.grpc.trusted_caller_token_file {
            Some(path) => {
                let path = if path.is_relative() {
                    base_dir.join(path)
                } else {
                    path.clone()
                };
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Value {
                    key: "grpc.trusted_caller_token_file".into(),
                    origin: origin("grpc.trusted_caller_token_file"),
                    reason: format!("cannot read `{}`: {e}", path.display()),
                })?;
                let token = text.trim().to_owned();
                if token.len() < 16 {
                    return Err(ConfigError::Value {
                        key: "grpc.trusted_caller_token_file".into(),
                        origin: origin("grpc.trusted_caller_token_file"),
                        reason: "the secret must be at least 16 characters".into(),
                    });
                }
                Some(Secret(token))
            }
            None => None,
        };
        let defaults = CacheSettings::default();
        if fc.cache.ttl_secs == Some(0) {
            return Err(ConfigError::Value {
                key: "cache.ttl_secs".into(),
                origin: origin("cache.ttl_secs"),
                reason: "must be at least 1 (set `cache.enabled = false` to turn the cache off)"
                    .into(),
            });
        }
        let cache = CacheSettings {
            enabled: fc.cache.enabled.unwrap_or(defaults.enabled),
            max_entries: fc.cache.max_entries.unwrap_or(defaults.max_entries),
            ttl: fc.cache.ttl_secs.map_or(defaults.ttl, Duration::from_secs),
        };
        Ok(Config {
            cache,
            identity,
            trusted_caller_token,
            grpc,
            policies,
            grpc_listen,
            http_listen,
            admin_listen,
            log_format: fc.log.format.unwrap_or_default(),
            log_level: fc.log.level.clone().unwrap_or_else(|| "info".into()),
            reload_debounce: Duration::from_millis(fc.reload.debounce_ms.unwrap_or(250)),
            reload_poll_interval: Duration::from_secs(fc.reload.poll_interval_secs.unwrap_or(5)),
            envoy_default_server: fc.envoy.default_server.clone(),
            base_dir,
            authzen,
            admin_token_file: fc.admin.token_file.clone(),
            decision_log,
            rules: crate::authz::Rules {
                allow_user_only: fc.decisions.allow_user_only.unwrap_or(false),
            },
            listeners,
        })
    }

    /// The process environment's `MCP_AUTHZ_*` variables.
    pub fn process_env() -> BTreeMap<String, String> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with("MCP_AUTHZ_"))
            .collect()
    }
}

/// The environment variables this configuration reads, with their keys.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("MCP_AUTHZ_POLICIES", "policies"),
    ("MCP_AUTHZ_GRPC_LISTEN", "grpc_listen"),
    ("MCP_AUTHZ_HTTP_LISTEN", "http_listen"),
    ("MCP_AUTHZ_ADMIN_LISTEN", "admin_listen"),
    ("MCP_AUTHZ_LOG_FORMAT", "log.format"),
    ("MCP_AUTHZ_LOG_LEVEL", "log.level"),
    ("MCP_AUTHZ_RELOAD_DEBOUNCE_MS", "reload.debounce_ms"),
    (
        "MCP_AUTHZ_RELOAD_POLL_INTERVAL_SECS",
        "reload.poll_interval_secs",
    ),
    ("MCP_AUTHZ_ENVOY_DEFAULT_SERVER", "envoy.default_server"),
    (
        "MCP_AUTHZ_GRPC_TRUSTED_CALLER_TOKEN_FILE",
        "grpc.trusted_caller_token_file",
    ),
    ("MCP_AUTHZ_GRPC_MAX_BATCH_CHECKS", "grpc.max_batch_checks"),
    ("MCP_AUTHZ_GRPC_MAX_LIST_ENTRIES", "grpc.max_list_entries"),
    ("MCP_AUTHZ_SPIFFE_TRUST_DOMAINS", "spiffe.trust_domains"),
    ("MCP_AUTHZ_SPIFFE_FORWARDERS", "spiffe.forwarders"),
    ("MCP_AUTHZ_JWT_CLOCK_SKEW_SECS", "jwt.clock_skew_secs"),
    ("MCP_AUTHZ_JWT_JWKS_REFRESH_SECS", "jwt.jwks_refresh_secs"),
    (
        "MCP_AUTHZ_JWT_JWKS_MIN_REFRESH_SECS",
        "jwt.jwks_min_refresh_secs",
    ),
    ("MCP_AUTHZ_JWT_TOKEN_CACHE_SIZE", "jwt.token_cache_size"),
    ("MCP_AUTHZ_AUTHZEN_BASE_URL", "authzen.base_url"),
    ("MCP_AUTHZ_AUTHZEN_MAX_BATCH", "authzen.max_batch"),
    ("MCP_AUTHZ_ADMIN_TOKEN_FILE", "admin.token_file"),
    ("MCP_AUTHZ_DECISION_LOG_ENABLED", "decision_log.enabled"),
    ("MCP_AUTHZ_DECISION_LOG_FILE", "decision_log.file"),
    (
        "MCP_AUTHZ_DECISION_LOG_QUEUE_CAPACITY",
        "decision_log.queue_capacity",
    ),
    (
        "MCP_AUTHZ_DECISION_LOG_INCLUDE_ARGUMENTS",
        "decision_log.include_arguments",
    ),
    ("MCP_AUTHZ_DECISION_LOG_REDACT", "decision_log.redact"),
    (
        "MCP_AUTHZ_DECISIONS_ALLOW_USER_ONLY",
        "decisions.allow_user_only",
    ),
    (
        "MCP_AUTHZ_LISTENERS_HEADER_READ_TIMEOUT_SECS",
        "listeners.header_read_timeout_secs",
    ),
    (
        "MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT_SECS",
        "listeners.idle_timeout_secs",
    ),
    (
        "MCP_AUTHZ_LISTENERS_KEEPALIVE_INTERVAL_SECS",
        "listeners.keepalive_interval_secs",
    ),
    (
        "MCP_AUTHZ_LISTENERS_KEEPALIVE_TIMEOUT_SECS",
        "listeners.keepalive_timeout_secs",
    ),
    (
        "MCP_AUTHZ_LISTENERS_REQUEST_TIMEOUT_SECS",
        "listeners.request_timeout_secs",
    ),
    (
        "MCP_AUTHZ_LISTENERS_GRPC_MAX_CONNECTIONS",
        "listeners.grpc_max_connections",
    ),
    (
        "MCP_AUTHZ_LISTENERS_HTTP_MAX_CONNECTIONS",
        "listeners.http_max_connections",
    ),
    (
        "MCP_AUTHZ_LISTENERS_ADMIN_MAX_CONNECTIONS",
        "listeners.admin_max_connections",
    ),
    (
        "MCP_AUTHZ_LISTENERS_RESERVED_DESCRIPTORS",
        "listeners.reserved_descriptors",
    ),
];

fn apply_env(
    fc: &mut FileConfig,
    env: &BTreeMap<String, String>,
    origins: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        if !name.starts_with("MCP_AUTHZ_") || name == CONFIG_ENV {
            continue;
        }
        let Some((_, key)) = ENV_KEYS.iter().find(|(n, _)| n == name) else {
            return Err(ConfigError::UnknownEnv(name.clone()));
        };
        let origin = format!("environment variable `{name}`");
        let number = |v: &str| -> Result<u64, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Value {
                key: (*key).into(),
                origin: origin.clone(),
                reason: format!("`{v}` is not a whole number"),
            })
        };
        let boolean = |v: &str| -> Result<bool, ConfigError> {
            match v.trim() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                other => Err(ConfigError::Value {
                    key: (*key).into(),
                    origin: origin.clone(),
                    reason: format!("`{other}` is not `true` or `false`"),
                }),
            }
        };
        match *key {
            "policies" => fc.policies = Some(PathBuf::from(value)),
            "grpc_listen" => fc.grpc_listen = Some(value.clone()),
            "http_listen" => fc.http_listen = Some(value.clone()),
            "admin_listen" => fc.admin_listen = Some(value.clone()),
            "log.format" => {
                fc.log.format = Some(match value.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => {
                        return Err(ConfigError::Value {
                            key: (*key).into(),
                            origin,
                            reason: format!("`{other}` is not `text` or `json`"),
                        });
                    }
                })
            }
            "log.level" => fc.log.level = Some(value.clone()),
            "reload.debounce_ms" => fc.reload.debounce_ms = Some(number(value)?),
            "reload.poll_interval_secs" => fc.reload.poll_interval_secs = Some(number(value)?),
            "envoy.default_server" => fc.envoy.default_server = Some(value.clone()),
            "cache.enabled" => {
                fc.cache.enabled = Some(match value.trim() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(ConfigError::Value {
                            key: (*key).into(),
                            origin,
                            reason: format!("`{other}` is not `true` or `false`"),
                        });
                    }
                })
            }
            "cache.max_entries" => fc.cache.max_entries = Some(number(value)?),
            "cache.ttl_secs" => fc.cache.ttl_secs = Some(number(value)?),
            "grpc.trusted_caller_token_file" => {
                fc.grpc.trusted_caller_token_file = Some(PathBuf::from(value))
            }
            "grpc.max_batch_checks" => fc.grpc.max_batch_checks = Some(number(value)?),
            "grpc.max_list_entries" => fc.grpc.max_list_entries = Some(number(value)?),
            "spiffe.trust_domains" => fc.spiffe.trust_domains = list(value),
            "spiffe.forwarders" => fc.spiffe.forwarders = list(value),
            "jwt.clock_skew_secs" => fc.jwt.clock_skew_secs = number(value)?,
            "jwt.jwks_refresh_secs" => fc.jwt.jwks_refresh_secs = number(value)?,
            "jwt.jwks_min_refresh_secs" => fc.jwt.jwks_min_refresh_secs = number(value)?,
            "jwt.token_cache_size" => fc.jwt.token_cache_size = number(value)?,
            "authzen.base_url" => fc.authzen.base_url = Some(value.clone()),
            "authzen.max_batch" => fc.authzen.max_batch = Some(number(value)?),
            "admin.token_file" => fc.admin.token_file = Some(PathBuf::from(value)),
            "decision_log.enabled" => fc.decision_log.enabled = Some(boolean(value)?),
            "decision_log.file" => fc.decision_log.file = Some(PathBuf::from(value)),
            "decision_log.queue_capacity" => {
                fc.decision_log.queue_capacity = Some(number(value)?);
            }
            "decision_log.include_arguments" => {
                fc.decision_log.include_arguments = Some(boolean(value)?);
            }
            "decision_log.redact" => fc.decision_log.redact = Some(list(value)),
            "decisions.allow_user_only" => fc.decisions.allow_user_only = Some(boolean(value)?),
            listener if listener.starts_with("listeners.") => {
                let l = &mut fc.listeners;
                let slot = match listener {
                    "listeners.header_read_timeout_secs" => &mut l.header_read_timeout_secs,
                    "listeners.idle_timeout_secs" => &mut l.idle_timeout_secs,
                    "listeners.keepalive_interval_secs" => &mut l.keepalive_interval_secs,
                    "listeners.keepalive_timeout_secs" => &mut l.keepalive_timeout_secs,
                    "listeners.request_timeout_secs" => &mut l.request_timeout_secs,
                    "listeners.grpc_max_connections" => &mut l.grpc_max_connections,
                    "listeners.http_max_connections" => &mut l.http_max_connections,
                    "listeners.admin_max_connections" => &mut l.admin_max_connections,
                    "listeners.reserved_descriptors" => &mut l.reserved_descriptors,
                    _ => return Err(ConfigError::UnknownEnv(name.clone())),
                };
                *slot = Some(number(value)?);
            }
            _ => return Err(ConfigError::UnknownEnv(name.clone())),
        }
        origins.insert((*key).into(), origin);
    }
    Ok(())
}

fn apply_flags(fc: &mut FileConfig, flags: &Overrides, origins: &mut BTreeMap<String, String>) {
    let mut set = |key: &str, flag: &str| {
        origins.insert(key.into(), format!("flag `--{flag}`"));
    };
    if let Some(p) = &flags.policies {
        fc.policies = Some(p.clone());
        set("policies", "policies");
    }
    if let Some(a) = &flags.grpc_listen {
        fc.grpc_listen = Some(a.clone());
        set("grpc_listen", "grpc-listen");
    }
    if let Some(a) = &flags.http_listen {
        fc.http_listen = Some(a.clone());
        set("http_listen", "http-listen");
    }
    if let Some(a) = &flags.admin_listen {
        fc.admin_listen = Some(a.clone());
        set("admin_listen", "admin-listen");
    }
    if let Some(f) = flags.log_format {
        fc.log.format = Some(f);
        set("log.format", "log-format");
    }
}

fn checked_authzen(
    file: &AuthzenFile,
    origin: &dyn Fn(&str) -> String,
) -> Result<AuthzenSettings, ConfigError> {
    let base_url = match &file.base_url {
        Some(url) => {
            let trimmed = url.trim_end_matches('/');
            let scheme_ok = trimmed.starts_with("https://") || trimmed.starts_with("http://");
            let host = trimmed.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme_ok || host.is_empty() || trimmed.contains(['?', '#', ' ']) {
                return Err(ConfigError::Value {
                    key: "authzen.base_url".into(),
                    origin: origin("authzen.base_url"),
                    reason: format!(
                        "`{url}` is not a URL such as `https://pdp.example.com` (no query or fragment)"
                    ),
                });
            }
            Some(trimmed.to_owned())
        }
        None => None,
    };
    let max_batch = match file.max_batch {
        Some(0) => {
            return Err(ConfigError::Value {
                key: "authzen.max_batch".into(),
                origin: origin("authzen.max_batch"),
                reason: "must be at least 1".into(),
            });
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => AuthzenSettings::default().max_batch,
    };
    Ok(AuthzenSettings {
        base_url,
        max_batch,
    })
}

fn checked_grpc(
    file: &GrpcFile,
    origin: &dyn Fn(&str) -> String,
) -> Result<GrpcSettings, ConfigError> {
    let defaults = GrpcSettings::default();
    let limit = |key: &str, value: Option<u64>, default: usize| match value {
        Some(0) => Err(ConfigError::Value {
            key: key.into(),
            origin: origin(key),
            reason: "must be at least 1".into(),
        }),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        None => Ok(default),
    };
    Ok(GrpcSettings {
        max_batch_checks: limit(
            "grpc.max_batch_checks",
            file.max_batch_checks,
            defaults.max_batch_checks,
        )?,
        max_list_entries: limit(
            "grpc.max_list_entries",
            file.max_list_entries,
            defaults.max_list_entries,
        )?,
    })
}

fn checked_decision_log(
    file: &DecisionLogFile,
    origin: &dyn Fn(&str) -> String,
) -> Result<DecisionLogConfig, ConfigError> {
    let defaults = DecisionLogConfig::default();
    let queue_capacity = match file.queue_capacity {
        Some(0) => {
            return Err(ConfigError::Value {
                key: "decision_log.queue_capacity".into(),
                origin: origin("decision_log.queue_capacity"),
                reason: "must be at least 1".into(),
            });
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(1 << 20),
        None => defaults.queue_capacity,
    };
    if let Some(f) = &file.file
        && f.as_os_str().is_empty()
    {
        return Err(ConfigError::Value {
            key: "decision_log.file".into(),
            origin: origin("decision_log.file"),
            reason: "empty path".into(),
        });
    }
    if let Some(bad) = file
        .redact
        .iter()
        .flatten()
        .find(|p| crate::telemetry::decision_log::normalize_key(p).is_empty())
    {
        return Err(ConfigError::Value {
            key: "decision_log.redact".into(),
            origin: origin("decision_log.redact"),
            reason: format!("the pattern `{bad}` has no letter or digit"),
        });
    }
    Ok(DecisionLogConfig {
        enabled: file.enabled.unwrap_or(defaults.enabled),
        file: file.file.clone(),
        queue_capacity,
        include_arguments: file.include_arguments.unwrap_or(defaults.include_arguments),
        redact: file.redact.clone().unwrap_or(defaults.redact),
    })
}

/// The longest time limit accepted (a day): longer ones are surely a mistake and
/// would overflow clocks.
const MAX_TIMEOUT_SECS: u64 = 86_400;

fn checked_listeners(
    file: &ListenersFile,
    origin: &dyn Fn(&str) -> String,
) -> Result<ListenerConfig, ConfigError> {
    let defaults = ListenerConfig::default();
    let bad = |key: &str, reason: String| ConfigError::Value {
        key: format!("listeners.{key}"),
        origin: origin(&format!("listeners.{key}")),
        reason,
    };
    // A time limit in seconds: 1 to a day (0 only where it turns something off).
    let secs = |key: &str, v: Option<u64>, default: Duration, zero_is_off: bool| match v {
        None => Ok(Some(default)),
        Some(0) if zero_is_off => Ok(None),
        Some(0) => Err(bad(key, "must be at least 1".into())),
        Some(n) if n > MAX_TIMEOUT_SECS => {
            Err(bad(key, format!("must be at most {MAX_TIMEOUT_SECS}")))
        }
        Some(n) => Ok(Some(Duration::from_secs(n))),
    };
    let d = defaults.timeouts;
    let required = |key: &str, v: Option<u64>, default: Duration| {
        secs(key, v, default, false).map(|t| t.unwrap_or(default))
    };
    let timeouts = Timeouts {
        header_read: required(
            "header_read_timeout_secs",
            file.header_read_timeout_secs,
            d.header_read,
        )?,
        idle: required("idle_timeout_secs", file.idle_timeout_secs, d.idle)?,
        keepalive_interval: match file.keepalive_interval_secs {
            None => d.keepalive_interval,
            v => secs("keepalive_interval_secs", v, Duration::from_secs(0), true)?,
        },
        keepalive_timeout: required(
            "keepalive_timeout_secs",
            file.keepalive_timeout_secs,
            d.keepalive_timeout,
        )?,
        request: required("request_timeout_secs", file.request_timeout_secs, d.request)?,
    };
    let cap = |key: &str, v: Option<u64>| match v {
        Some(0) => Err(bad(key, "must be at least 1".into())),
        Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        None => Ok(None),
    };
    Ok(ListenerConfig {
        timeouts,
        grpc_max_connections: cap("grpc_max_connections", file.grpc_max_connections)?,
        http_max_connections: cap("http_max_connections", file.http_max_connections)?,
        admin_max_connections: cap("admin_max_connections", file.admin_max_connections)?,
        reserved_descriptors: file
            .reserved_descriptors
            .unwrap_or(defaults.reserved_descriptors),
    })
}

/// A comma-separated list.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mcp-authz.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn defaults() {
        let c = Config::load(None, &env(&[]), &Overrides::default()).expect("config");
        assert_eq!(c.policies, PathBuf::from("policies"));
        assert_eq!(c.grpc_listen.to_string(), "127.0.0.1:9191");
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:8181");
        assert_eq!(c.admin_listen, None);
    }

    #[test]
    fn file_then_env_then_flags() {
        let (_d, path) = write(
            "policies = \"p\"\nhttp_listen = \"127.0.0.1:1\"\ngrpc_listen = \"127.0.0.1:2\"\n[envoy]\ndefault_server = \"docs\"\n",
        );
        let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("config");
        assert_eq!(c.policies, path.parent().expect("dir").join("p"));
        assert_eq!(c.http_listen.port(), 1);
        assert_eq!(c.envoy_default_server.as_deref(), Some("docs"));
        let e = env(&[
            ("MCP_AUTHZ_HTTP_LISTEN", "127.0.0.1:3"),
            ("MCP_AUTHZ_GRPC_LISTEN", "127.0.0.1:4"),
        ]);
        let c = Config::load(Some(&path), &e, &Overrides::default()).expect("config");
        assert_eq!((c.http_listen.port(), c.grpc_listen.port()), (3, 4));
        let flags = Overrides {
            http_listen: Some("127.0.0.1:5".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&path), &e, &flags).expect("config");
        assert_eq!((c.http_listen.port(), c.grpc_listen.port()), (5, 4));
    }

    #[test]
    fn issuers_and_spiffe_from_the_file_and_environment() {
        let (_d, path) = write(
            "[[issuers]]\nissuer = \"https://idp.example.com\"\naudiences = [\"mcp-mesh\"]\njwks_file = \"keys.json\"\nalgorithms = [\"RS256\"]\ngroups_claim = \"groups\"\n[spiffe]\ntrust_domains = [\"corp.example\"]\n",
        );
        let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("config");
        assert_eq!(c.identity.issuers.len(), 1);
        assert_eq!(c.identity.spiffe.trust_domains, vec!["corp.example"]);
        let e = env(&[
            ("MCP_AUTHZ_SPIFFE_TRUST_DOMAINS", "a.example, b.example"),
            ("MCP_AUTHZ_JWT_CLOCK_SKEW_SECS", "5"),
        ]);
        let c = Config::load(Some(&path), &e, &Overrides::default()).expect("config");
        assert_eq!(
            c.identity.spiffe.trust_domains,
            vec!["a.example", "b.example"]
        );
        assert_eq!(c.identity.jwt.clock_skew_secs, 5);
        let (_d, path) = write(
            "[[issuers]]\nissuer = \"https://idp.example.com\"\naudiences = []\njwks_file = \"k.json\"\n",
        );
        let err = Config::load(Some(&path), &env(&[]), &Overrides::default())
            .expect_err("no audience")
            .to_string();
        assert!(
            err.contains("idp.example.com") && !err.contains('\n'),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_key_and_origin_in_one_line() {
        let e = env(&[("MCP_AUTHZ_HTTP_LISTEN", "nowhere")]);
        let err = Config::load(None, &e, &Overrides::default())
            .expect_err("bad")
            .to_string();
        assert!(
            err.contains("`http_listen`") && err.contains("MCP_AUTHZ_HTTP_LISTEN"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let err = Config::load(
            None,
            &env(&[("MCP_AUTHZ_NOPE", "1")]),
            &Overrides::default(),
        )
        .expect_err("unknown")
        .to_string();
        assert!(err.contains("MCP_AUTHZ_NOPE"), "{err}");
        let (_d, path) = write("polices = \"typo\"\n");
        let err = Config::load(Some(&path), &env(&[]), &Overrides::default())
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("polices") && !err.contains('\n'), "{err}");
        let (_d, path) = write("http_listen = 5\n");
        assert!(Config::load(Some(&path), &env(&[]), &Overrides::default()).is_err());
        let err = Config::load(
            Some(Path::new("/nonexistent/x.toml")),
            &env(&[]),
            &Overrides::default(),
        )
        .expect_err("missing")
        .to_string();
        assert!(err.contains("cannot read config file"), "{err}");
    }

    #[test]
    fn http_observability_and_admin_settings() {
        let c = Config::load(None, &env(&[]), &Overrides::default()).expect("config");
        assert_eq!(c.authzen, AuthzenSettings::default());
        assert!(c.decision_log.enabled && c.decision_log.file.is_none());
        assert!(!c.decision_log.include_arguments);
        assert_eq!(c.admin_token_file, None);
        let (d, path) = write(
            "[authzen]\nbase_url = \"https://pdp.example.com/\"\nmax_batch = 10\n[admin]\ntoken_file = \"admin.token\"\n[decision_log]\nfile = \"d.jsonl\"\nqueue_capacity = 8\ninclude_arguments = true\nredact = [\"pin\"]\n",
        );
        let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("config");
        assert_eq!(
            c.authzen.base_url.as_deref(),
            Some("https://pdp.example.com")
        );
        assert_eq!(c.authzen.max_batch, 10);
        assert_eq!(c.admin_token_file, Some(d.path().join("admin.token")));
        assert_eq!(c.decision_log.file, Some(d.path().join("d.jsonl")));
        assert_eq!(c.decision_log.queue_capacity, 8);
        assert!(c.decision_log.include_arguments);
        assert_eq!(c.decision_log.redact, vec!["pin"]);
        let e = env(&[
            ("MCP_AUTHZ_DECISION_LOG_ENABLED", "false"),
            ("MCP_AUTHZ_DECISION_LOG_REDACT", "a, b"),
            ("MCP_AUTHZ_AUTHZEN_MAX_BATCH", "3"),
            ("MCP_AUTHZ_ADMIN_TOKEN_FILE", "/run/secrets/t"),
            ("MCP_AUTHZ_ADMIN_LISTEN", "0.0.0.0:9901"),
        ]);
        let c = Config::load(Some(&path), &e, &Overrides::default()).expect("config");
        assert!(!c.decision_log.enabled);
        assert_eq!(c.decision_log.redact, vec!["a", "b"]);
        assert_eq!(c.authzen.max_batch, 3);
        assert_eq!(c.admin_token_file, Some(PathBuf::from("/run/secrets/t")));
        assert_eq!(
            c.admin_listen.map(|a| a.to_string()).as_deref(),
            Some("0.0.0.0:9901")
        );
    }

    #[test]
    fn gateway_api_limits_and_redaction_patterns() {
        let c = Config::load(None, &env(&[]), &Overrides::default()).expect("config");
        assert_eq!(c.grpc, GrpcSettings::default());
        assert_eq!(
            (c.grpc.max_batch_checks, c.grpc.max_list_entries),
            (1000, 1000)
        );
        assert!(c.decision_log.redact.iter().any(|p| p == "token"));
        let (_d, path) = write(
            "[grpc]\nmax_batch_checks = 10\nmax_list_entries = 20\n[decision_log]\nredact = [\"Api-Key\", \"pin\"]\n",
        );
        let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("config");
        assert_eq!((c.grpc.max_batch_checks, c.grpc.max_list_entries), (10, 20));
        assert_eq!(c.decision_log.redact, vec!["Api-Key", "pin"]);
        let e = env(&[
            ("MCP_AUTHZ_GRPC_MAX_BATCH_CHECKS", "3"),
            ("MCP_AUTHZ_GRPC_MAX_LIST_ENTRIES", "4"),
        ]);
        let c = Config::load(Some(&path), &e, &Overrides::default()).expect("config");
        assert_eq!((c.grpc.max_batch_checks, c.grpc.max_list_entries), (3, 4));
        for (name, value) in [
            ("MCP_AUTHZ_GRPC_MAX_BATCH_CHECKS", "0"),
            ("MCP_AUTHZ_GRPC_MAX_LIST_ENTRIES", "0"),
            ("MCP_AUTHZ_GRPC_MAX_LIST_ENTRIES", "many"),
            ("MCP_AUTHZ_DECISION_LOG_REDACT", "token, -_-"),
        ] {
            let err = Config::load(None, &env(&[(name, value)]), &Overrides::default())
                .expect_err(name)
                .to_string();
            assert!(err.contains(name) && !err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn the_admin_listener_is_local_unless_protected() {
        let flags = Overrides {
            admin_listen: Some("9901".into()),
            ..Overrides::default()
        };
        let c = Config::load(None, &env(&[]), &flags).expect("config");
        assert_eq!(
            c.admin_listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9901")
        );
        let flags = Overrides {
            admin_listen: Some("0.0.0.0:9901".into()),
            ..Overrides::default()
        };
        let err = Config::load(None, &env(&[]), &flags)
            .expect_err("open admin")
            .to_string();
        assert!(
            err.contains("admin.token_file") && err.contains("--admin-listen"),
            "{err}"
        );
    }

    #[test]
    fn listener_limits_from_the_file_and_environment() {
        let c = Config::load(None, &env(&[]), &Overrides::default()).expect("config");
        assert_eq!(c.listeners, ListenerConfig::default());
        let t = c.listeners.timeouts;
        assert_eq!(t.header_read, Duration::from_secs(10));
        assert_eq!(t.idle, Duration::from_secs(120));
        assert_eq!(t.keepalive_interval, Some(Duration::from_secs(30)));
        assert_eq!(t.keepalive_timeout, Duration::from_secs(10));
        assert_eq!(t.request, Duration::from_secs(30));
        let (_d, path) = write(
            "[listeners]\nheader_read_timeout_secs = 2\nidle_timeout_secs = 3\nkeepalive_interval_secs = 0\nkeepalive_timeout_secs = 4\nrequest_timeout_secs = 5\ngrpc_max_connections = 100\nhttp_max_connections = 200\nadmin_max_connections = 8\nreserved_descriptors = 16\n",
        );
        let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("config");
        let l = &c.listeners;
        assert_eq!(l.timeouts.header_read, Duration::from_secs(2));
        assert_eq!(l.timeouts.idle, Duration::from_secs(3));
        assert_eq!(l.timeouts.keepalive_interval, None);
        assert_eq!(l.timeouts.keepalive_timeout, Duration::from_secs(4));
        assert_eq!(l.timeouts.request, Duration::from_secs(5));
        assert_eq!(
            (
                l.grpc_max_connections,
                l.http_max_connections,
                l.admin_max_connections
            ),
            (Some(100), Some(200), Some(8))
        );
        assert_eq!(l.reserved_descriptors, 16);
        let e = env(&[
            ("MCP_AUTHZ_LISTENERS_HEADER_READ_TIMEOUT_SECS", "7"),
            ("MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT_SECS", "8"),
            ("MCP_AUTHZ_LISTENERS_KEEPALIVE_INTERVAL_SECS", "9"),
            ("MCP_AUTHZ_LISTENERS_KEEPALIVE_TIMEOUT_SECS", "1"),
            ("MCP_AUTHZ_LISTENERS_REQUEST_TIMEOUT_SECS", "11"),
            ("MCP_AUTHZ_LISTENERS_GRPC_MAX_CONNECTIONS", "12"),
            ("MCP_AUTHZ_LISTENERS_HTTP_MAX_CONNECTIONS", "13"),
            ("MCP_AUTHZ_LISTENERS_ADMIN_MAX_CONNECTIONS", "14"),
            ("MCP_AUTHZ_LISTENERS_RESERVED_DESCRIPTORS", "0"),
        ]);
        let c = Config::load(Some(&path), &e, &Overrides::default()).expect("config");
        let l = &c.listeners;
        assert_eq!(l.timeouts.header_read, Duration::from_secs(7));
        assert_eq!(l.timeouts.idle, Duration::from_secs(8));
        assert_eq!(l.timeouts.keepalive_interval, Some(Duration::from_secs(9)));
        assert_eq!(l.timeouts.keepalive_timeout, Duration::from_secs(1));
        assert_eq!(l.timeouts.request, Duration::from_secs(11));
        assert_eq!(
            (
                l.grpc_max_connections,
                l.http_max_connections,
                l.admin_max_connections
            ),
            (Some(12), Some(13), Some(14))
        );
        assert_eq!(l.reserved_descriptors, 0);
        // Every key has its environment variable.
        for (name, key) in ENV_KEYS {
            if key.starts_with("listeners.") {
                assert_eq!(
                    *name,
                    format!("MCP_AUTHZ_{}", key.replace('.', "_").to_uppercase())
                );
            }
        }
    }

    #[test]
    fn bad_listener_limits_are_one_line_errors() {
        for (name, value) in [
            ("MCP_AUTHZ_LISTENERS_HEADER_READ_TIMEOUT_SECS", "0"),
            ("MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT_SECS", "0"),
            ("MCP_AUTHZ_LISTENERS_KEEPALIVE_TIMEOUT_SECS", "0"),
            ("MCP_AUTHZ_LISTENERS_REQUEST_TIMEOUT_SECS", "0"),
            ("MCP_AUTHZ_LISTENERS_REQUEST_TIMEOUT_SECS", "86401"),
            (
                "MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT_SECS",
                "18446744073709551615",
            ),
            ("MCP_AUTHZ_LISTENERS_KEEPALIVE_INTERVAL_SECS", "100000"),
            ("MCP_AUTHZ_LISTENERS_GRPC_MAX_CONNECTIONS", "0"),
            ("MCP_AUTHZ_LISTENERS_HTTP_MAX_CONNECTIONS", "-1"),
            ("MCP_AUTHZ_LISTENERS_ADMIN_MAX_CONNECTIONS", "many"),
            ("MCP_AUTHZ_LISTENERS_RESERVED_DESCRIPTORS", "1.5"),
        ] {
            let err = Config::load(None, &env(&[(name, value)]), &Overrides::default())
                .expect_err(name)
                .to_string();
            assert!(
                err.contains(name) && err.contains("listeners.") && !err.contains('\n'),
                "{err}"
            );
        }
        let err = Config::load(
            None,
            &env(&[("MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT", "5")]),
            &Overrides::default(),
        )
        .expect_err("unknown")
        .to_string();
        assert!(err.contains("MCP_AUTHZ_LISTENERS_IDLE_TIMEOUT"), "{err}");
        let (_d, path) = write("[listeners]\nidle_timeout = 5\n");
        let err = Config::load(Some(&path), &env(&[]), &Overrides::default())
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("idle_timeout") && !err.contains('\n'), "{err}");
        let (_d, path) = write("[listeners]\nheader_read_timeout_secs = 0\n");
        let err = Config::load(Some(&path), &env(&[]), &Overrides::default())
            .expect_err("zero")
            .to_string();
        assert!(
            err.contains("`listeners.header_read_timeout_secs`") && err.contains("config file"),
            "{err}"
        );
    }

    #[test]
    fn bad_http_settings_are_one_line_errors() {
        for (name, value) in [
            ("MCP_AUTHZ_AUTHZEN_BASE_URL", "pdp.example.com"),
            ("MCP_AUTHZ_AUTHZEN_BASE_URL", "https://pdp.example.com/?x=1"),
            ("MCP_AUTHZ_AUTHZEN_MAX_BATCH", "0"),
            ("MCP_AUTHZ_DECISION_LOG_ENABLED", "maybe"),
            ("MCP_AUTHZ_DECISION_LOG_QUEUE_CAPACITY", "0"),
        ] {
            let err = Config::load(None, &env(&[(name, value)]), &Overrides::default())
                .expect_err(name)
                .to_string();
            assert!(err.contains(name) && !err.contains('\n'), "{err}");
        }
    }
}
