//! The one table of settings, [`SETTINGS`]: the TOML keys, the `MCP_AUTHZ_*`
//! environment variables, the `serve --help` list and the README's table all come
//! from it.

use super::{CONFIG_ENV, DEFAULT_GRPC_LISTEN, DEFAULT_HTTP_LISTEN};

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
    /// A fraction from 0 to 1 (`0.25`).
    Fraction,
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
    pub(super) fn by_env(name: &str) -> Option<&'static Setting> {
        let rest = name.strip_prefix("MCP_AUTHZ_")?;
        SETTINGS
            .iter()
            .find(|s| s.key.replace('.', "_").to_ascii_uppercase() == rest)
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
        "worker_threads",
        NUMBER,
        None,
        "threads that serve requests (default: one per CPU the process may use, or `TOKIO_WORKER_THREADS`)",
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
        "validation.deny_warnings",
        BOOL,
        Some("false"),
        "refuse a policy directory with any warning, at startup and on reload (as `validate --deny-warnings`)",
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
        "servers",
        ValueKind::FileOnly,
        None,
        "MCP servers as OAuth protected resources: `[servers.<id>]` tables (resource: the canonical `https` URI its tokens' `aud` must hold exactly; authorization_servers: issuers of `[[issuers]]`; scopes_supported, resource_name: its RFC 9728 metadata; scope: what its 401s ask for)",
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
        "server id of an Envoy request that names none and matches no `envoy.principals` or `envoy.servers` entry (default: none: such a request is denied)",
    ),
    setting(
        "envoy.principals",
        ValueKind::FileOnly,
        None,
        "server ids by the destination's SPIFFE ID (`attributes.destination.principal`): `[envoy.principals]` table, `\"spiffe://corp.example/ns/docs/sa/docs\" = \"docs\"`",
    ),
    setting(
        "envoy.servers",
        ValueKind::FileOnly,
        None,
        "server ids by `:authority`/Host: `[envoy.servers]` table, `\"docs.*.svc.cluster.local\" = \"docs\"` (`*` is one whole label; port and case ignored; an exact host wins, overlapping wildcards are refused)",
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
        "decisions.allow_undeclared_tools",
        BOOL,
        Some("false"),
        "allow calls of tools (prompts) the schema does not declare on a server with imported ones (else a deny)",
    ),
    setting(
        "decisions.allow_undeclared_arguments",
        BOOL,
        Some("false"),
        "allow arguments a declared tool does not declare, left out of the context (else a deny)",
    ),
    setting(
        "decisions.dry_run",
        BOOL,
        Some("false"),
        "dry run: decide and log every request as usual, but answer allow (the would-be decision in `x-mcp-authz-would-be`, the gateway's `dry_run`/`decided_allowed`, AuthZEN's `context.dry_run`); flag `--dry-run`",
    ),
    setting(
        "decisions.deny_detail",
        ValueKind::OneOf(&["generic", "full", "not_found"]),
        Some("generic"),
        "what a denied client is told: `generic` (`forbidden: this request is not allowed`), `full` (the reason, with policy ids and principals) or `not_found` (as if the tool, prompt or resource did not exist); always with `error.data.decision_id`, the decision log keeps the full reason",
    ),
    setting(
        "shadow.policies",
        PATH,
        None,
        "shadow policy directory: decided beside the live one, never enforced; disagreements counted and logged (default: none; flag `--shadow-policies`)",
    ),
    setting(
        "shadow.sample",
        ValueKind::Fraction,
        Some("1.0"),
        "fraction of live decisions decided again on the shadow set and the `@shadow` policies (0 to 1)",
    ),
    setting(
        "shadow.queue_capacity",
        NUMBER,
        Some("1024"),
        "decisions waiting to be shadowed before new ones are dropped",
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
    setting(
        "tls.cert_file",
        PATH,
        None,
        "PEM certificate chain of the listeners; with `tls.key_file` turns TLS on, re-read when it changes (default: none, plaintext)",
    ),
    setting(
        "tls.key_file",
        PATH,
        None,
        "PEM private key of `tls.cert_file` (PKCS#8, PKCS#1 or SEC1), re-read when it changes",
    ),
    setting(
        "tls.client_ca_file",
        PATH,
        None,
        "PEM CA bundle: client certificates (mTLS) are verified against it on the gRPC and HTTP listeners (default: none, no client certificates)",
    ),
    setting(
        "tls.require_client_cert",
        BOOL,
        None,
        "refuse connections without a client certificate (default: true with `tls.client_ca_file`)",
    ),
    setting(
        "tls.listeners",
        LIST,
        None,
        "the listeners that serve TLS (default: `grpc,http,admin`); the admin listener never asks for client certificates",
    ),
    setting(
        "tls.trusted_callers",
        LIST,
        Some(""),
        "SPIFFE IDs (client certificate URI SAN) of callers that may assert identities, such as the gateway and the Envoy sidecars; `spiffe://td/ns/x/sa/*` covers every ID under that path",
    ),
    setting(
        "otlp.endpoint",
        TEXT,
        None,
        "OpenTelemetry collector the service's spans are exported to: `http://127.0.0.1:4317` (gRPC) or `http://127.0.0.1:4318/v1/traces` (HTTP) (default: none, no export)",
    ),
    setting(
        "otlp.protocol",
        ValueKind::OneOf(&["grpc", "http"]),
        Some("grpc"),
        "OTLP over gRPC, or over HTTP with protobuf bodies",
    ),
    setting(
        "otlp.service_name",
        TEXT,
        Some("mcp-authz"),
        "`service.name` of the exported spans",
    ),
    setting(
        "otlp.headers",
        ValueKind::FileOnly,
        None,
        "headers (gRPC metadata) sent with every export, such as an API key: `[otlp.headers]` table, `\"x-api-key\" = \"...\"`",
    ),
    setting(
        "otlp.sample_ratio",
        ValueKind::Fraction,
        Some("1.0"),
        "fraction of the traces started here that are exported (0 to 1); a caller's sampled flag in `traceparent` wins",
    ),
    setting(
        "otlp.queue_size",
        NUMBER,
        Some("2048"),
        "ended spans waiting for export before new ones are dropped",
    ),
    setting(
        "otlp.batch_size",
        NUMBER,
        Some("512"),
        "most spans in one export (at most `otlp.queue_size`)",
    ),
    setting(
        "otlp.export_interval_ms",
        NUMBER,
        Some("5000"),
        "time between two exports, in milliseconds",
    ),
    setting(
        "otlp.export_timeout_ms",
        NUMBER,
        Some("10000"),
        "time limit of one export, in milliseconds",
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
