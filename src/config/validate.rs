//! Checking: every value of the merged file, environment and flags is checked and
//! turned into the [`Config`]; a problem is one line naming the key and where its
//! value came from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    AuthzenFile, AuthzenSettings, CacheFile, Config, ConfigError, DEFAULT_GRPC_LISTEN,
    DEFAULT_HTTP_LISTEN, DEFAULT_POLICIES, DecisionLogFile, FileConfig, GrpcFile, GrpcSettings,
    ListenerConfig, ListenersFile, OtlpFile, Secret, ServerMap, ShadowConfig, ShadowFile, Timeouts,
};
use crate::authz::{CacheSettings, ShadowSettings};
use crate::identity::IdentityConfig;
use crate::telemetry::DecisionLogConfig;
use crate::telemetry::otlp::OtlpConfig;

/// The configuration that `fc` describes; `origin` names where a key's value came from.
pub(super) fn checked(
    fc: &FileConfig,
    base_dir: PathBuf,
    origin: &dyn Fn(&str) -> String,
) -> Result<Config, ConfigError> {
    let addr = |key: &str, v: Option<&String>, default: &str| -> Result<SocketAddr, ConfigError> {
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
    let authzen = checked_authzen(&fc.authzen, origin)?;
    let grpc = checked_grpc(&fc.grpc, origin)?;
    let mut decision_log = checked_decision_log(&fc.decision_log, origin)?;
    decision_log.dry_run = fc.decisions.dry_run.unwrap_or(false);
    let listeners = checked_listeners(&fc.listeners, origin)?;
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
    let envoy_servers = ServerMap::new(&fc.envoy.servers, &fc.envoy.principals).map_err(|e| {
        ConfigError::Value {
            key: e.key.into(),
            origin: origin(e.key),
            reason: e.reason,
        }
    })?;
    let issuer_urls: Vec<String> = fc.issuers.iter().map(|i| i.issuer.clone()).collect();
    let resource_servers =
        super::ResourceServers::new(&fc.servers, &issuer_urls).map_err(|e| ConfigError::Value {
            origin: origin("servers"),
            key: e.key,
            reason: e.reason,
        })?;
    let mut issuers = fc.issuers.clone();
    for issuer in &mut issuers {
        issuer.resources = resource_servers.resources_of(&issuer.issuer);
    }
    let identity = IdentityConfig {
        issuers,
        spiffe: fc.spiffe.clone(),
        jwt: fc.jwt.clone(),
    };
    identity.validate()?;
    let trusted_caller_token = checked_trusted_caller_token(&fc.grpc, origin)?;
    let (tls, trusted_callers) = super::tls::checked(&fc.tls).map_err(|e| ConfigError::Value {
        key: e.key.into(),
        origin: origin(e.key),
        reason: e.reason,
    })?;
    let cache = checked_cache(&fc.cache, origin)?;
    let shadow = checked_shadow(&fc.shadow, &policies, cache, origin)?;
    let otlp = checked_otlp(&fc.otlp, origin)?;
    let worker_threads = checked_worker_threads(fc.worker_threads, origin)?;
    Ok(Config {
        worker_threads,
        otlp,
        shadow,
        cache,
        identity,
        resource_servers,
        trusted_caller_token,
        grpc,
        policies,
        grpc_listen,
        http_listen,
        admin_listen,
        log_format: fc.log.format.unwrap_or_default(),
        log_level: fc.log.level.clone().unwrap_or_else(|| "info".into()),
        policy_load: crate::policy::LoadOptions {
            deny_warnings: fc.validation.deny_warnings.unwrap_or(false),
        },
        reload_debounce: Duration::from_millis(fc.reload.debounce_ms.unwrap_or(250)),
        reload_poll_interval: Duration::from_secs(fc.reload.poll_interval_secs.unwrap_or(5)),
        envoy_default_server: fc.envoy.default_server.clone(),
        envoy_servers,
        base_dir,
        authzen,
        admin_token_file: fc.admin.token_file.clone(),
        decision_log,
        rules: crate::authz::Rules {
            allow_user_only: fc.decisions.allow_user_only.unwrap_or(false),
            allow_undeclared_tools: fc.decisions.allow_undeclared_tools.unwrap_or(false),
            allow_undeclared_arguments: fc.decisions.allow_undeclared_arguments.unwrap_or(false),
        },
        dry_run: fc.decisions.dry_run.unwrap_or(false),
        deny_detail: fc.decisions.deny_detail.unwrap_or_default(),
        listeners,
        tls,
        trusted_callers,
    })
}

/// Most threads that may serve requests: more than any machine this runs on has
/// cores, and few enough that a typo (`40000`) is refused, not started.
pub const MAX_WORKER_THREADS: u64 = 1024;

/// The one rule for a count of threads that serve requests, however it is given
/// (`worker_threads`, its environment variable, the runtime's own
/// `TOKIO_WORKER_THREADS`): 1 to [`MAX_WORKER_THREADS`]; the error says which bound.
pub fn worker_count(n: u64) -> Result<std::num::NonZeroUsize, String> {
    if n > MAX_WORKER_THREADS {
        return Err(format!("must be at most {MAX_WORKER_THREADS}"));
    }
    usize::try_from(n)
        .ok()
        .and_then(std::num::NonZeroUsize::new)
        .ok_or_else(|| "must be at least 1".to_owned())
}

/// `worker_threads`: [`worker_count`]; unset, the runtime's default.
fn checked_worker_threads(
    v: Option<u64>,
    origin: &dyn Fn(&str) -> String,
) -> Result<Option<std::num::NonZeroUsize>, ConfigError> {
    let Some(n) = v else { return Ok(None) };
    worker_count(n)
        .map(Some)
        .map_err(|reason| ConfigError::Value {
            key: "worker_threads".into(),
            origin: origin("worker_threads"),
            reason,
        })
}

/// The trusted caller's secret, read from `grpc.trusted_caller_token_file`.
fn checked_trusted_caller_token(
    file: &GrpcFile,
    origin: &dyn Fn(&str) -> String,
) -> Result<Option<Secret>, ConfigError> {
    Ok(match &file.trusted_caller_token_file {
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
    })
}

fn checked_cache(
    file: &CacheFile,
    origin: &dyn Fn(&str) -> String,
) -> Result<CacheSettings, ConfigError> {
    let defaults = CacheSettings::default();
    if file.ttl_secs == Some(0) {
        return Err(ConfigError::Value {
            key: "cache.ttl_secs".into(),
            origin: origin("cache.ttl_secs"),
            reason: "must be at least 1 (set `cache.enabled = false` to turn the cache off)".into(),
        });
    }
    Ok(CacheSettings {
        enabled: file.enabled.unwrap_or(defaults.enabled),
        max_entries: file.max_entries.unwrap_or(defaults.max_entries),
        ttl: file.ttl_secs.map_or(defaults.ttl, Duration::from_secs),
    })
}

fn checked_shadow(
    file: &ShadowFile,
    live: &std::path::Path,
    cache: CacheSettings,
    origin: &dyn Fn(&str) -> String,
) -> Result<ShadowConfig, ConfigError> {
    let value = |key: &str, reason: String| ConfigError::Value {
        key: key.into(),
        origin: origin(key),
        reason,
    };
    let defaults = ShadowSettings::default();
    let sample = file.sample.unwrap_or(defaults.sample);
    if !(0.0..=1.0).contains(&sample) {
        return Err(value(
            "shadow.sample",
            format!("`{sample}` is not a fraction from 0 to 1"),
        ));
    }
    let queue_capacity = match file.queue_capacity {
        Some(0) => return Err(value("shadow.queue_capacity", "must be at least 1".into())),
        Some(n) => usize::try_from(n)
            .map_err(|_| value("shadow.queue_capacity", format!("`{n}` is too large")))?,
        None => defaults.queue_capacity,
    };
    if let Some(p) = &file.policies {
        if p.as_os_str().is_empty() {
            return Err(value("shadow.policies", "empty path".into()));
        }
        if p == live {
            return Err(value(
                "shadow.policies",
                format!(
                    "`{}` is the live policy directory: a shadow set is another directory",
                    p.display()
                ),
            ));
        }
    }
    Ok(ShadowConfig {
        policies: file.policies.clone(),
        settings: ShadowSettings {
            sample,
            queue_capacity,
            cache,
        },
    })
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
        dry_run: false,
    })
}

fn checked_otlp(
    file: &OtlpFile,
    origin: &dyn Fn(&str) -> String,
) -> Result<Option<OtlpConfig>, ConfigError> {
    let bad = |key: &str, reason: String| ConfigError::Value {
        key: format!("otlp.{key}"),
        origin: origin(&format!("otlp.{key}")),
        reason,
    };
    let Some(endpoint) = &file.endpoint else {
        return Ok(None);
    };
    let protocol = file.protocol.unwrap_or_default();
    let uri: http::Uri = endpoint.parse().map_err(|_| {
        bad(
            "endpoint",
            format!("`{endpoint}` is not a URL such as `http://127.0.0.1:4317`"),
        )
    })?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
        return Err(bad(
            "endpoint",
            format!("`{endpoint}` is not an http:// or https:// URL with a host and no query"),
        ));
    }
    let mut config = OtlpConfig::new(endpoint.clone());
    config.protocol = protocol;
    if let Some(name) = &file.service_name {
        if name.trim().is_empty() {
            return Err(bad("service_name", "empty name".into()));
        }
        config.service_name = name.clone();
    }
    for (name, value) in &file.headers {
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !valid_name {
            return Err(bad(
                "headers",
                format!("`{name}` is not a header name (lowercase letters, digits, `-`, `_`, `.`)"),
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(bad(
                "headers",
                format!("the value of `{name}` is not a valid header value"),
            ));
        }
    }
    config.headers = file.headers.clone();
    if let Some(ratio) = file.sample_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(bad(
                "sample_ratio",
                format!("`{ratio}` is not a fraction from 0 to 1"),
            ));
        }
        config.sample_ratio = ratio;
    }
    let count = |key: &str, v: Option<u64>, default: usize| match v {
        None => Ok(default),
        Some(0) => Err(bad(key, "must be at least 1".into())),
        Some(n) if n > 1 << 20 => Err(bad(key, format!("must be at most {}", 1 << 20))),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    config.queue_size = count("queue_size", file.queue_size, config.queue_size)?;
    config.batch_size = count("batch_size", file.batch_size, config.batch_size)?;
    if config.batch_size > config.queue_size {
        return Err(bad(
            "batch_size",
            format!(
                "`{}` is more than `otlp.queue_size` ({})",
                config.batch_size, config.queue_size
            ),
        ));
    }
    let millis = |key: &str, v: Option<u64>, default: Duration| match v {
        None => Ok(default),
        Some(0) => Err(bad(key, "must be at least 1".into())),
        Some(n) if n > MAX_TIMEOUT_SECS * 1000 => Err(bad(
            key,
            format!("must be at most {}", MAX_TIMEOUT_SECS * 1000),
        )),
        Some(n) => Ok(Duration::from_millis(n)),
    };
    config.export_interval = millis(
        "export_interval_ms",
        file.export_interval_ms,
        config.export_interval,
    )?;
    config.export_timeout = millis(
        "export_timeout_ms",
        file.export_timeout_ms,
        config.export_timeout,
    )?;
    Ok(Some(config))
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
