//! Service configuration: a TOML file, overridden by `MCP_AUTHZ_*` environment
//! variables, overridden by command-line flags — merged explicitly, in that order.
//!
//! Every problem is reported as one line naming the key, before any port is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
        let (mut table, base_dir, file_origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                let parse_error = |e: toml::de::Error| ConfigError::Parse {
                    path: path.display().to_string(),
                    reason: one_line(&e.to_string()),
                };
                // Checked against the structure first, so that an error names its line.
                toml::from_str::<FileConfig>(&text).map_err(parse_error)?;
                let table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (table, base, format!("config file `{}`", path.display()))
            }
            None => (toml::Table::new(), PathBuf::new(), String::new()),
        };
        // Paths written in the file are relative to the file.
        resolve_file_paths(&mut table, &base_dir)?;
        // Where each value came from, for messages: the file unless overridden.
        let mut origins = BTreeMap::new();
        apply_env(&mut table, env, &mut origins)?;
        let mut fc: FileConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: file
                        .map_or_else(|| "(environment)".to_owned(), |p| p.display().to_string()),
                    reason: one_line(&e.to_string()),
                })?;
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
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Value {
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

/// How the text of a setting's environment variable is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Text as given (an address, a URL, an id, a filter).
    Text,
    /// A path: relative to the config file's directory when written in the file,
    /// to the working directory when given in the environment.
    Path,
    /// A whole number.
    Number,
    /// `true` or `false` (`1` and `0` too).
    Bool,
    /// A comma-separated list (empty text: an empty list).
    List,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A list of tables written in the file only (`[[issuers]]`): no environment variable.
    FileOnly,
}

/// One setting of the configuration: the one place that names it. The TOML key, the
/// `MCP_AUTHZ_*` environment variable, the `serve --help` list and the README's table
/// of settings all come from [`SETTINGS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The TOML key: `name` at the top level, `section.name` in a section.
    pub key: &'static str,
    /// How its environment variable is read.
    pub kind: ValueKind,
    /// Its default, spelled as its environment variable would be; `None` when it is
    /// unset by default or computed (`help` says how).
    pub default: Option<&'static str>,
    /// What it does, in a few words.
    pub help: &'static str,
}

impl Setting {
    /// Its environment variable: `MCP_AUTHZ_` and the key in capitals with `_` for `.`;
    /// none for a setting of the file only.
    pub fn env(&self) -> Option<String> {
        (self.kind != ValueKind::FileOnly).then(|| {
            format!(
                "MCP_AUTHZ_{}",
                self.key.replace('.', "_").to_ascii_uppercase()
            )
        })
    }

    /// The setting named `key`.
    pub fn by_key(key: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.key == key)
    }

    /// The setting whose environment variable is `name` (file-only settings included,
    /// to say that they are).
    fn by_env(name: &str) -> Option<&'static Setting> {
        let rest = name.strip_prefix("MCP_AUTHZ_")?;
        SETTINGS
            .iter()
            .find(|s| s.key.replace('.', "_").to_ascii_uppercase() == rest)
    }

    /// The TOML value of `text`, read as this setting's kind; the error is the reason.
    fn value_of(&self, text: &str) -> Result<toml::Value, String> {
        Ok(match self.kind {
            ValueKind::Text | ValueKind::Path => toml::Value::String(text.to_owned()),
            ValueKind::Number => {
                let n: u64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{text}` is not a whole number"))?;
                let n = i64::try_from(n).map_err(|_| format!("`{text}` is too large"))?;
                toml::Value::Integer(n)
            }
            ValueKind::Bool => toml::Value::Boolean(match text.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => return Err(format!("`{other}` is not `true` or `false`")),
            }),
            ValueKind::List => {
                toml::Value::Array(list(text).into_iter().map(toml::Value::String).collect())
            }
            ValueKind::OneOf(words) => {
                let t = text.trim();
                if !words.contains(&t) {
                    let words: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
                    return Err(format!("`{text}` is not one of {}", words.join(", ")));
                }
                toml::Value::String(t.to_owned())
            }
            ValueKind::FileOnly => {
                return Err("is set in the config file only".into());
            }
        })
    }
}

const NUMBER: ValueKind = ValueKind::Number;
const TEXT: ValueKind = ValueKind::Text;
const PATH: ValueKind = ValueKind::Path;
const BOOL: ValueKind = ValueKind::Bool;
const LIST: ValueKind = ValueKind::List;

const fn setting(
    key: &'static str,
    kind: ValueKind,
    default: Option<&'static str>,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        kind,
        default,
        help,
    }
}

/// Every setting of the configuration file, in the order of the README.
pub const SETTINGS: &[Setting] = &[
    setting("policies", PATH, Some("policies"), "policy directory"),
    setting(
        "grpc_listen",
        TEXT,
        Some(DEFAULT_GRPC_LISTEN),
        "gRPC listen address: gateway API, Envoy ext_authz, health, reflection",
    ),
    setting(
        "http_listen",
        TEXT,
        Some(DEFAULT_HTTP_LISTEN),
        "HTTP listen address: AuthZEN, HTTP ext_authz, health, metrics",
    ),
    setting(
        "admin_listen",
        TEXT,
        None,
        "admin listener: health, metrics, /v1/policies, /v1/reload (default: none; a bare port means 127.0.0.1)",
    ),
    setting(
        "log.format",
        ValueKind::OneOf(&["text", "json"]),
        Some("text"),
        "format of the service's own log",
    ),
    setting(
        "log.level",
        TEXT,
        Some("info"),
        "log filter such as `info` or `mcp_authz=debug` (`RUST_LOG` wins)",
    ),
    setting(
        "reload.debounce_ms",
        NUMBER,
        Some("250"),
        "quiet time after a change of the policy files before reloading",
    ),
    setting(
        "reload.poll_interval_secs",
        NUMBER,
        Some("5"),
        "fallback check of the policy files; 0 turns it off",
    ),
    setting(
        "issuers",
        ValueKind::FileOnly,
        None,
        "trusted token issuers: `[[issuers]]` tables (issuer, audiences, jwks_file or jwks_url, algorithms, user_claim, application_claims, groups_claim, context_claims)",
    ),
    setting(
        "spiffe.trust_domains",
        LIST,
        Some(""),
        "trusted SPIFFE trust domains; ids of others are refused (empty: every SPIFFE id is refused)",
    ),
    setting(
        "spiffe.application_id",
        ValueKind::OneOf(&["k8s-sa", "k8s-ns-sa", "path", "spiffe-id"]),
        Some("k8s-sa"),
        "how a SPIFFE id names an application",
    ),
    setting(
        "spiffe.forwarders",
        LIST,
        Some(""),
        "SPIFFE ids of intermediaries, such as the gateway, that name no application",
    ),
    setting(
        "jwt.clock_skew_secs",
        NUMBER,
        Some("30"),
        "allowed clock difference for `exp` and `nbf`",
    ),
    setting(
        "jwt.jwks_refresh_secs",
        NUMBER,
        Some("300"),
        "interval of the periodic JWKS refresh",
    ),
    setting(
        "jwt.jwks_min_refresh_secs",
        NUMBER,
        Some("10"),
        "least time between two refreshes for unknown `kid`s, per issuer",
    ),
    setting(
        "jwt.jwks_fetch_timeout_secs",
        NUMBER,
        Some("5"),
        "time limit of one JWKS request",
    ),
    setting(
        "jwt.token_cache_size",
        NUMBER,
        Some("10000"),
        "verified tokens kept; 0 turns the cache off",
    ),
    setting(
        "jwt.max_token_bytes",
        NUMBER,
        Some("16384"),
        "longer tokens are refused unparsed",
    ),
    setting(
        "envoy.default_server",
        TEXT,
        None,
        "server id when an Envoy route carries no `context_extensions.mcp_server` (default: none)",
    ),
    setting(
        "grpc.trusted_caller_token_file",
        PATH,
        None,
        "file holding the gateway's secret (`x-mcp-authz-caller-token`); its verified identities are honoured (default: none)",
    ),
    setting(
        "grpc.max_batch_checks",
        NUMBER,
        Some("1000"),
        "most checks, and MCP messages in them, in one `BatchCheck`",
    ),
    setting(
        "grpc.max_list_entries",
        NUMBER,
        Some("1000"),
        "most entries in one `FilterList`",
    ),
    setting("cache.enabled", BOOL, Some("true"), "cache decisions"),
    setting(
        "cache.max_entries",
        NUMBER,
        Some("100000"),
        "most decisions cached",
    ),
    setting(
        "cache.ttl_secs",
        NUMBER,
        Some("60"),
        "seconds a decision is cached (at least 1)",
    ),
    setting(
        "authzen.base_url",
        TEXT,
        None,
        "`policy_decision_point` of the AuthZEN metadata (default: `http://` and the request's `Host`)",
    ),
    setting(
        "authzen.max_batch",
        NUMBER,
        Some("1000"),
        "most items in one /access/v1/evaluations request",
    ),
    setting(
        "decisions.allow_user_only",
        BOOL,
        Some("false"),
        "decide a request with a user and no application by the user alone (else a deny)",
    ),
    setting(
        "admin.token_file",
        PATH,
        None,
        "file holding the bearer token of /v1/policies and /v1/reload (required to serve them on the main listener)",
    ),
    setting(
        "decision_log.enabled",
        BOOL,
        Some("true"),
        "log every decision",
    ),
    setting(
        "decision_log.file",
        PATH,
        None,
        "file the decision log is appended to (default: stdout)",
    ),
    setting(
        "decision_log.queue_capacity",
        NUMBER,
        Some("4096"),
        "records waiting for the writer before new ones are dropped",
    ),
    setting(
        "decision_log.include_arguments",
        BOOL,
        Some("false"),
        "log tool and prompt arguments",
    ),
    setting(
        "decision_log.redact",
        LIST,
        Some(
            "token,secret,password,passwd,pwd,key,credential,auth,cookie,session,signature,private",
        ),
        "patterns: an argument key whose normalized form contains one is masked in the log",
    ),
    setting(
        "listeners.header_read_timeout_secs",
        NUMBER,
        Some("10"),
        "time to receive a complete HTTP/1 request head",
    ),
    setting(
        "listeners.idle_timeout_secs",
        NUMBER,
        Some("120"),
        "time a connection with no request in flight stays open",
    ),
    setting(
        "listeners.keepalive_interval_secs",
        NUMBER,
        Some("30"),
        "interval of HTTP/2 keepalive pings; 0 turns them off",
    ),
    setting(
        "listeners.keepalive_timeout_secs",
        NUMBER,
        Some("10"),
        "an unanswered ping closes the connection after this time",
    ),
    setting(
        "listeners.request_timeout_secs",
        NUMBER,
        Some("30"),
        "time from a request head to its response head",
    ),
    setting(
        "listeners.grpc_max_connections",
        NUMBER,
        None,
        "most connections of the gRPC listener (default: 10000, fewer if the descriptor limit is lower)",
    ),
    setting(
        "listeners.http_max_connections",
        NUMBER,
        None,
        "most connections of the HTTP listener (default: as for gRPC)",
    ),
    setting(
        "listeners.admin_max_connections",
        NUMBER,
        None,
        "most connections of the admin listener (default: 64, fewer if the descriptor limit is lower)",
    ),
    setting(
        "listeners.reserved_descriptors",
        NUMBER,
        Some("64"),
        "descriptors kept free for policy files, the decision log and key fetches",
    ),
];

/// The environment variables, one a line, for `mcp-authz serve --help`.
pub fn env_help() -> String {
    let mut out = String::from(
        "Environment (overrides the config file, overridden by flags; every setting \
         `section.key` of the file is MCP_AUTHZ_SECTION_KEY):\n",
    );
    let mut line = |name: &str, text: &str| out.push_str(&format!("  {name:<45} {text}\n"));
    line(CONFIG_ENV, "the config file");
    for s in SETTINGS {
        if let Some(name) = s.env() {
            let default = match s.default {
                Some("") => " [default: empty]".to_owned(),
                Some(d) => format!(" [default: {d}]"),
                None => String::new(),
            };
            line(&name, &format!("{}: {}{default}", s.key, s.help));
        }
    }
    out.push_str("RUST_LOG sets the log filter. Send SIGHUP to reload the policies at once.");
    out
}

/// The README's table of settings (between its `settings` markers).
pub fn settings_markdown() -> String {
    let mut out =
        String::from("| setting | environment variable | default | what |\n|---|---|---|---|\n");
    out.push_str(&format!(
        "| | `{CONFIG_ENV}` | | the config file (or `--config`) |\n"
    ));
    for s in SETTINGS {
        let env = s
            .env()
            .map_or_else(|| "(file only)".to_owned(), |e| format!("`{e}`"));
        let default = match s.default {
            Some("") => "empty".to_owned(),
            Some(d) => format!("`{d}`"),
            None => String::new(),
        };
        let kind = match s.kind {
            ValueKind::List => " (comma-separated in the environment)",
            _ => "",
        };
        out.push_str(&format!(
            "| `{}` | {env} | {default} | {}{kind} |\n",
            s.key,
            s.help.replace('|', "\\|")
        ));
    }
    out
}

/// Apply the `MCP_AUTHZ_*` variables of `env` to `table` (the file's settings).
fn apply_env(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
    origins: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        if !name.starts_with("MCP_AUTHZ_") || name == CONFIG_ENV {
            continue;
        }
        let Some(setting) = Setting::by_env(name) else {
            return Err(ConfigError::UnknownEnv(name.clone()));
        };
        let origin = format!("environment variable `{name}`");
        let value = setting
            .value_of(value)
            .map_err(|reason| ConfigError::Value {
                key: setting.key.into(),
                origin: origin.clone(),
                reason,
            })?;
        let (section, key) = match setting.key.split_once('.') {
            Some((section, key)) => {
                let entry = table
                    .entry(section)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry {
                    toml::Value::Table(t) => (t, key),
                    // The file was checked against the structure: a section is a table.
                    _ => return Err(ConfigError::UnknownEnv(name.clone())),
                }
            }
            None => (&mut *table, setting.key),
        };
        section.insert(key.to_owned(), value);
        origins.insert(setting.key.into(), origin);
    }
    Ok(())
}

/// Make the relative paths written in the file relative to the file's directory.
fn resolve_file_paths(table: &mut toml::Table, base_dir: &Path) -> Result<(), ConfigError> {
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

    /// A value `Config::load` accepts for `s` from the environment: its default, or a
    /// sample for settings without one (a file is made in `dir` where one is read).
    fn sample(s: &Setting, dir: &Path) -> String {
        if let Some(d) = s.default {
            return d.to_owned();
        }
        match s.key {
            "admin_listen" => "127.0.0.1:9901".into(),
            "envoy.default_server" => "docs".into(),
            "authzen.base_url" => "https://pdp.example.com".into(),
            "admin.token_file" => dir.join("admin.token").display().to_string(),
            "decision_log.file" => dir.join("decisions.jsonl").display().to_string(),
            "grpc.trusted_caller_token_file" => {
                let path = dir.join("gateway.secret");
                std::fs::write(&path, "a-secret-of-more-than-16-characters").expect("write");
                path.display().to_string()
            }
            k if k.ends_with("_max_connections") => "100".into(),
            k => panic!("no sample value for `{k}`: give it a default or a sample here"),
        }
    }

    fn readme() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README.md")
    }

    #[test]
    fn every_setting_has_one_variable_and_is_a_key_of_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut names = std::collections::BTreeSet::new();
        let mut toml_text = String::new();
        for s in SETTINGS {
            assert_eq!(Setting::by_key(s.key), Some(s), "`{}` twice", s.key);
            let Some(name) = s.env() else {
                assert_eq!(s.kind, ValueKind::FileOnly);
                continue;
            };
            assert_eq!(
                name,
                format!("MCP_AUTHZ_{}", s.key.replace('.', "_").to_uppercase())
            );
            assert!(names.insert(name.clone()), "`{name}` names two settings");
            assert_eq!(Setting::by_env(&name), Some(s));
            // Accepted from the environment, and recorded as coming from there.
            let value = sample(s, dir.path());
            if let Err(e) = Config::load(None, &env(&[(&name, &value)]), &Overrides::default()) {
                panic!("`{name}={value}` is refused: {e}");
            }
            // The same value is a key of the file (whose sections refuse unknown keys).
            let v = s.value_of(&value).expect("valid");
            toml_text.push_str(&format!("{} = {v}\n", s.key));
        }
        let file: FileConfig = toml::from_str(&toml_text)
            .unwrap_or_else(|e| panic!("the settings are not all keys of the file: {e}"));
        assert_eq!(file.cache.ttl_secs, Some(60));
        // Names that differ only in case, or that name a file-only setting, are refused.
        for name in [
            "MCP_AUTHZ_cache_ttl_secs",
            "MCP_AUTHZ_CACHE_TTL",
            "MCP_AUTHZ_ISSUERS",
        ] {
            let err = Config::load(None, &env(&[(name, "1")]), &Overrides::default())
                .expect_err(name)
                .to_string();
            assert!(err.contains(name) && !err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn every_key_of_the_file_is_a_setting() {
        use serde_reflection::{ContainerFormat, Format, Tracer, TracerConfig};
        let mut tracer = Tracer::new(TracerConfig::default());
        tracer
            .trace_simple_type::<FileConfig>()
            .expect("trace FileConfig");
        // Enum variants are not needed: only the structs' field names are.
        let registry = tracer.registry_unchecked();
        let fields = |name: &str| match registry.get(name) {
            Some(ContainerFormat::Struct(fields)) => Some(fields.clone()),
            _ => None,
        };
        let mut keys = std::collections::BTreeSet::new();
        for top in fields("FileConfig").expect("a struct") {
            let section = match &top.value {
                Format::TypeName(t) => fields(t),
                _ => None,
            };
            match section {
                Some(inner) => {
                    keys.extend(inner.iter().map(|f| format!("{}.{}", top.name, f.name)))
                }
                None => {
                    keys.insert(top.name.clone());
                }
            }
        }
        let table: std::collections::BTreeSet<String> =
            SETTINGS.iter().map(|s| s.key.to_owned()).collect();
        assert_eq!(
            keys, table,
            "the file's keys and the table of settings differ"
        );
    }

    #[test]
    fn the_defaults_in_the_table_are_the_defaults() {
        let default = format!(
            "{:?}",
            Config::load(None, &env(&[]), &Overrides::default()).expect("config")
        );
        for s in SETTINGS {
            let (Some(name), Some(value)) = (s.env(), s.default) else {
                continue;
            };
            let c = Config::load(None, &env(&[(&name, value)]), &Overrides::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                format!("{c:?}"),
                default,
                "the default of `{}` is not `{value}`",
                s.key
            );
        }
    }

    #[test]
    fn the_cache_variables_are_settings() {
        let e = env(&[
            ("MCP_AUTHZ_CACHE_ENABLED", "false"),
            ("MCP_AUTHZ_CACHE_MAX_ENTRIES", "5"),
            ("MCP_AUTHZ_CACHE_TTL_SECS", "7"),
        ]);
        let c = Config::load(None, &e, &Overrides::default()).expect("config");
        assert!(!c.cache.enabled);
        assert_eq!(c.cache.max_entries, 5);
        assert_eq!(c.cache.ttl, Duration::from_secs(7));
        // The environment overrides the file.
        let (_d, path) = write("[cache]\nenabled = true\nmax_entries = 9\n");
        let c = Config::load(Some(&path), &e, &Overrides::default()).expect("config");
        assert_eq!((c.cache.enabled, c.cache.max_entries), (false, 5));
        for (name, value) in [
            ("MCP_AUTHZ_CACHE_ENABLED", "yes"),
            ("MCP_AUTHZ_CACHE_MAX_ENTRIES", "-1"),
            ("MCP_AUTHZ_CACHE_TTL_SECS", "0"),
            ("MCP_AUTHZ_CACHE_TTL_SECS", "9223372036854775808"),
            ("MCP_AUTHZ_SPIFFE_APPLICATION_ID", "k8s"),
            ("MCP_AUTHZ_LOG_FORMAT", "yaml"),
        ] {
            let err = Config::load(None, &env(&[(name, value)]), &Overrides::default())
                .expect_err(name)
                .to_string();
            assert!(err.contains(name) && !err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn paths_are_relative_to_the_file_only_when_written_there() {
        let (d, path) = write(
            "policies = \"p\"\n[admin]\ntoken_file = \"t\"\n[decision_log]\nfile = \"/abs/d.jsonl\"\n[grpc]\ntrusted_caller_token_file = \"s\"\n",
        );
        std::fs::write(d.path().join("s"), "a-secret-of-more-than-16-characters").expect("write");
        let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("config");
        assert_eq!(c.policies, d.path().join("p"));
        assert_eq!(c.admin_token_file, Some(d.path().join("t")));
        assert_eq!(c.decision_log.file, Some(PathBuf::from("/abs/d.jsonl")));
        assert!(c.trusted_caller_token.is_some());
        let e = env(&[
            ("MCP_AUTHZ_POLICIES", "q"),
            ("MCP_AUTHZ_ADMIN_TOKEN_FILE", "u"),
        ]);
        let c = Config::load(Some(&path), &e, &Overrides::default()).expect("config");
        assert_eq!(c.policies, PathBuf::from("q"));
        assert_eq!(c.admin_token_file, Some(PathBuf::from("u")));
    }

    #[test]
    fn the_readme_documents_every_setting_and_only_settings() {
        let readme = readme();
        // The table of settings is the one rendered from `SETTINGS`.
        let start = "<!-- settings: generated from `SETTINGS` in src/config.rs -->\n";
        let end = "<!-- /settings -->";
        let (Some(a), Some(b)) = (readme.find(start), readme.find(end)) else {
            panic!("README.md has no `{}` ... `{end}` block", start.trim());
        };
        let documented = &readme[a + start.len()..b];
        let rendered = settings_markdown();
        if documented != rendered {
            if std::env::var_os("UPDATE_README").is_some() {
                let updated = format!("{}{rendered}{}", &readme[..a + start.len()], &readme[b..]);
                std::fs::write(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
                    updated,
                )
                .expect("write README.md");
            } else {
                panic!(
                    "README.md's table of settings is out of date (UPDATE_README=1 rewrites it); it should be:\n{rendered}"
                );
            }
        }
        // Every variable the README names anywhere is accepted.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = 0;
        for (i, _) in readme.match_indices("MCP_AUTHZ_") {
            let name: String = readme[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let next = readme[i + name.len()..].chars().next();
            // `MCP_AUTHZ_<SECTION>_<KEY>`, `MCP_AUTHZ_*` and the prefix alone are patterns.
            if matches!(next, Some('<' | '*')) || name == "MCP_AUTHZ_" || name == CONFIG_ENV {
                continue;
            }
            let Some(s) = Setting::by_env(&name).filter(|s| s.kind != ValueKind::FileOnly) else {
                panic!("README.md names `{name}`, which is no setting");
            };
            let value = sample(s, dir.path());
            Config::load(None, &env(&[(&name, &value)]), &Overrides::default())
                .unwrap_or_else(|e| panic!("README.md's `{name}={value}` is refused: {e}"));
            seen += 1;
        }
        assert!(seen >= SETTINGS.len() - 1, "{seen}");
        // The example configuration file of the README is a valid file.
        let example = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml block");
        assert!(example.contains("[listeners]"), "{example}");
        let file: FileConfig = toml::from_str(example)
            .unwrap_or_else(|e| panic!("README.md's example is not a valid file: {e}"));
        assert_eq!(file.cache.max_entries, Some(100_000));
    }

    #[test]
    fn an_identity_error_is_printed_once() {
        let (_d, path) = write(
            "[[issuers]]\nissuer = \"https://idp.example.com\"\naudiences = []\njwks_file = \"k.json\"\n",
        );
        let err = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect_err("bad");
        let inner = match &err {
            ConfigError::Identity(inner) => inner.to_string(),
            other => panic!("{other}"),
        };
        assert_eq!(err.to_string().matches(&inner).count(), 1, "{err}");
        // What the message already says is not also its source: `{e:#}`-style chains
        // (anyhow, miette) would print it twice.
        assert!(std::error::Error::source(&err).is_none());
    }

    /// The variants of the thiserror enums in `text` whose message shows their source
    /// (`#[from]`, `#[source]`, or a field named `source`): such an error prints its
    /// inner error twice wherever the chain of sources is printed too.
    fn messages_repeating_their_source(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        // Each variant: from its `#[error(...)]` to the next one or the enum's end.
        for part in text.split("#[error(").skip(1) {
            let variant = part.split("\n}").next().unwrap_or(part);
            let (message, fields) = variant.split_once(")]").unwrap_or((variant, ""));
            let mut sources = Vec::new();
            if fields.contains("(#[from]") || fields.contains("(#[source]") {
                sources.push("0".to_owned());
            }
            for marker in ["#[from]", "#[source]"] {
                for after in fields.split(marker).skip(1) {
                    let after = after.trim_start();
                    let name: String = after
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && after[name.len()..].starts_with(':') {
                        sources.push(name);
                    }
                }
            }
            // A field named `source` is the source without an attribute.
            if fields.match_indices("source:").any(|(i, _)| {
                !fields[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            }) {
                sources.push("source".into());
            }
            for name in sources {
                if message.contains(&format!("{{{name}}}"))
                    || message.contains(&format!("{{{name}:"))
                {
                    found.push(format!("{message} ({name})"));
                }
            }
        }
        found
    }

    #[test]
    fn no_error_message_repeats_its_source() {
        // The scan finds each way of writing the mistake, and not the right ways.
        let sample = r#"
enum E {
    #[error("a: {0}")]
    A(#[from] X),
    #[error("b: {inner}")]
    B { #[source] inner: X },
    #[error("c: {source:?}")]
    C { source: X },
    #[error("d")]
    D(#[from] X),
    #[error("e: {0}")]
    E(X),
}
"#;
        assert_eq!(messages_repeating_their_source(sample).len(), 3, "{sample}");
        fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    rust_files(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        rust_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 20, "{files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            // This file's tests hold the sample above: its code is checked without them.
            let code = if file.ends_with("src/config.rs") {
                text.split("#[cfg(test)]").next().unwrap_or(&text)
            } else {
                &text
            };
            let found = messages_repeating_their_source(code);
            assert!(found.is_empty(), "{}: {found:?}", file.display());
        }
    }
}
