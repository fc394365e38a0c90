//! Unit tests of the configuration: merging, checking, the table of settings and the
//! README's copy of it.

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
        "shadow.policies" => dir.join("candidate").display().to_string(),
        "grpc.trusted_caller_token_file" => {
            let path = dir.join("gateway.secret");
            std::fs::write(&path, "a-secret-of-more-than-16-characters").expect("write");
            path.display().to_string()
        }
        k if k.ends_with("_max_connections") => "100".into(),
        "worker_threads" => "2".into(),
        "tls.cert_file" => dir.join("tls.crt").display().to_string(),
        "tls.key_file" => dir.join("tls.key").display().to_string(),
        "tls.client_ca_file" => dir.join("ca.crt").display().to_string(),
        "tls.require_client_cert" => "true".into(),
        "tls.listeners" => "grpc,http".into(),
        "otlp.endpoint" => "http://127.0.0.1:4317".into(),
        k => panic!("no sample value for `{k}`: give it a default or a sample here"),
    }
}

/// The settings `s` needs beside it to be accepted (`tls.*` settings need a
/// certificate and key, client certificate settings a CA bundle), with `s` itself.
fn with_companions(s: &Setting, value: &str, dir: &Path) -> BTreeMap<String, String> {
    let needs: &[&str] = match s.key {
        "tls.cert_file" => &["tls.key_file"],
        "tls.key_file" => &["tls.cert_file"],
        "tls.client_ca_file" | "tls.listeners" => &["tls.cert_file", "tls.key_file"],
        "tls.require_client_cert" => &["tls.cert_file", "tls.key_file", "tls.client_ca_file"],
        k if k.starts_with("otlp.") && k != "otlp.endpoint" => &["otlp.endpoint"],
        _ => &[],
    };
    let mut out: Vec<(String, String)> = needs
        .iter()
        .filter_map(|k| Setting::by_key(k))
        .filter_map(|c| Some((c.env()?, sample(c, dir))))
        .collect();
    out.extend(s.env().map(|name| (name, value.to_owned())));
    let pairs: Vec<(&str, &str)> = out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env(&pairs)
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
        let vars = with_companions(s, &value, dir.path());
        if let Err(e) = Config::load(None, &vars, &Overrides::default()) {
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
            Some(inner) => keys.extend(inner.iter().map(|f| format!("{}.{}", top.name, f.name))),
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
fn worker_threads_are_one_to_a_bound_and_unset_by_default() {
    let c = Config::load(None, &env(&[]), &Overrides::default()).expect("config");
    assert_eq!(c.worker_threads, None, "the runtime's default");
    let (_d, path) = write("worker_threads = 3\n");
    let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("config");
    assert_eq!(c.worker_threads.map(|n| n.get()), Some(3));
    // The environment overrides the file.
    let e = env(&[("MCP_AUTHZ_WORKER_THREADS", "1")]);
    let c = Config::load(Some(&path), &e, &Overrides::default()).expect("config");
    assert_eq!(c.worker_threads.map(|n| n.get()), Some(1));
    let c = Config::load(
        None,
        &env(&[("MCP_AUTHZ_WORKER_THREADS", "1024")]),
        &Overrides::default(),
    )
    .expect("config");
    assert_eq!(c.worker_threads.map(|n| n.get()), Some(1024));
    for (value, says) in [
        ("0", "at least 1"),
        ("1025", "at most 1024"),
        ("40000", "at most 1024"),
        ("-1", "whole number"),
        ("two", "whole number"),
        ("", "whole number"),
    ] {
        let err = Config::load(
            None,
            &env(&[("MCP_AUTHZ_WORKER_THREADS", value)]),
            &Overrides::default(),
        )
        .expect_err(value)
        .to_string();
        assert!(
            err.contains("MCP_AUTHZ_WORKER_THREADS") && err.contains(says) && !err.contains('\n'),
            "{value}: {err}"
        );
    }
    for text in [
        "worker_threads = 0\n",
        "worker_threads = \"2\"\n",
        "worker_threads = 2.5\n",
    ] {
        let (_d, path) = write(text);
        let err = Config::load(Some(&path), &env(&[]), &Overrides::default())
            .expect_err(text)
            .to_string();
        assert!(err.contains("worker_threads"), "{text}: {err}");
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
    let start = "<!-- settings: generated from `SETTINGS` in src/config/settings.rs -->\n";
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
        Config::load(
            None,
            &with_companions(s, &value, dir.path()),
            &Overrides::default(),
        )
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
    let issuer = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect_err("issuer");
    let load_env = |pairs: &[(&str, &str)]| {
        Config::load(None, &env(pairs), &Overrides::default()).expect_err("identity")
    };
    let spiffe = load_env(&[("MCP_AUTHZ_SPIFFE_TRUST_DOMAINS", "not a domain")]);
    let jwt = load_env(&[("MCP_AUTHZ_JWT_CLOCK_SKEW_SECS", "601")]);
    for err in [issuer, spiffe, jwt] {
        let inner = match &err {
            ConfigError::Identity(inner) => inner.to_string(),
            other => panic!("not an identity error: {other}"),
        };
        let shown = err.to_string();
        assert_eq!(shown, format!("invalid identity configuration: {inner}"));
        assert_eq!(shown.matches(&inner).count(), 1, "{shown}");
        // What the message already says is not also its source: `{e:#}`-style chains
        // (anyhow, miette) would print it twice.
        assert!(std::error::Error::source(&err).is_none(), "{shown}");
        assert_eq!(crate::policy::error_chain(&err), shown);
    }
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
            if message.contains(&format!("{{{name}}}")) || message.contains(&format!("{{{name}:")) {
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
    // This file holds the sample above: it is the one file not scanned.
    let this_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/tests.rs");
    assert!(files.contains(&this_file), "{}", this_file.display());
    for file in files.iter().filter(|f| **f != this_file) {
        let text = std::fs::read_to_string(file).expect("read");
        let found = messages_repeating_their_source(&text);
        assert!(found.is_empty(), "{}: {found:?}", file.display());
    }
}

#[test]
fn envoy_server_tables_are_checked_at_start() {
    let (_d, path) = write(
        "[envoy.servers]\n\"docs.*.svc.cluster.local\" = \"docs\"\n[envoy.principals]\n\"spiffe://corp.example/ns/docs/sa/docs\" = \"docs\"\n",
    );
    let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("config");
    assert_eq!(
        c.envoy_servers
            .by_authority("docs.prod.svc.cluster.local:80"),
        Some("docs")
    );
    assert_eq!(
        c.envoy_servers
            .by_principal("spiffe://corp.example/ns/docs/sa/docs"),
        Some("docs")
    );
    assert_eq!(c.envoy_default_server, None);
    for (text, key, why) in [
        (
            "[envoy.servers]\n\"docs-*.example.com\" = \"docs\"\n",
            "`envoy.servers`",
            "inside a label",
        ),
        (
            "[envoy.servers]\n\"a.*.svc\" = \"a\"\n\"*.b.svc\" = \"b\"\n",
            "`envoy.servers`",
            "both match some host",
        ),
        (
            "[envoy.principals]\n\"docs\" = \"docs\"\n",
            "`envoy.principals`",
            "is not a SPIFFE ID",
        ),
    ] {
        let err = Config::load(
            Some(&path_of(&write(text))),
            &env(&[]),
            &Overrides::default(),
        )
        .expect_err("refused")
        .to_string();
        assert!(err.contains(key) && err.contains(why), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

fn path_of(written: &(tempfile::TempDir, PathBuf)) -> PathBuf {
    written.1.clone()
}

#[test]
fn shadow_settings_are_checked() {
    let c = Config::load(None, &env(&[]), &Overrides::default()).expect("defaults");
    assert_eq!(c.shadow.policies, None);
    assert_eq!(c.shadow.settings, crate::authz::ShadowSettings::default());
    let c = Config::load(
        None,
        &env(&[
            ("MCP_AUTHZ_SHADOW_POLICIES", "candidate"),
            ("MCP_AUTHZ_SHADOW_SAMPLE", "0.25"),
            ("MCP_AUTHZ_SHADOW_QUEUE_CAPACITY", "16"),
        ]),
        &Overrides::default(),
    )
    .expect("valid");
    assert_eq!(c.shadow.policies, Some(PathBuf::from("candidate")));
    assert!((c.shadow.settings.sample - 0.25).abs() < f64::EPSILON);
    assert_eq!(c.shadow.settings.queue_capacity, 16);
    // The flag wins over the environment.
    let flags = Overrides {
        shadow_policies: Some(PathBuf::from("flagged")),
        ..Overrides::default()
    };
    let c = Config::load(
        None,
        &env(&[("MCP_AUTHZ_SHADOW_POLICIES", "candidate")]),
        &flags,
    )
    .expect("valid");
    assert_eq!(c.shadow.policies, Some(PathBuf::from("flagged")));
    for (vars, needle) in [
        (
            vec![("MCP_AUTHZ_SHADOW_SAMPLE", "1.5")],
            "invalid `shadow.sample` (from environment variable `MCP_AUTHZ_SHADOW_SAMPLE`): `1.5` is not a fraction from 0 to 1",
        ),
        (
            vec![("MCP_AUTHZ_SHADOW_SAMPLE", "half")],
            "`half` is not a number such as `0.25`",
        ),
        (
            vec![("MCP_AUTHZ_SHADOW_QUEUE_CAPACITY", "0")],
            "invalid `shadow.queue_capacity`",
        ),
        (
            vec![("MCP_AUTHZ_SHADOW_POLICIES", "policies")],
            "`policies` is the live policy directory",
        ),
    ] {
        let err = Config::load(None, &env(&vars), &Overrides::default())
            .expect_err(needle)
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
    // In the file, an integer fraction is accepted and paths are relative to it.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mcp-authz.toml");
    std::fs::write(&path, "[shadow]\npolicies = \"next\"\nsample = 1\n").expect("write");
    let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("valid");
    assert_eq!(c.shadow.policies, Some(dir.path().join("next")));
    assert!((c.shadow.settings.sample - 1.0).abs() < f64::EPSILON);
}

#[test]
fn otlp_is_off_without_an_endpoint_and_takes_its_defaults() {
    use crate::telemetry::otlp::{OtlpConfig, OtlpProtocol};
    let c = Config::load(None, &env(&[]), &Overrides::default()).expect("config");
    assert_eq!(c.otlp, None);
    // Settings without an endpoint export nothing.
    let c = Config::load(
        None,
        &env(&[("MCP_AUTHZ_OTLP_SAMPLE_RATIO", "0.5")]),
        &Overrides::default(),
    )
    .expect("config");
    assert_eq!(c.otlp, None);
    let c = Config::load(
        None,
        &env(&[("MCP_AUTHZ_OTLP_ENDPOINT", "http://127.0.0.1:4317")]),
        &Overrides::default(),
    )
    .expect("config");
    assert_eq!(c.otlp, Some(OtlpConfig::new("http://127.0.0.1:4317")));
    let (_d, path) = write(
        "[otlp]\nendpoint = \"https://otel.example.com/v1/traces\"\nprotocol = \"http\"\nservice_name = \"pdp-eu\"\nsample_ratio = 0.25\nqueue_size = 100\nbatch_size = 10\nexport_interval_ms = 1000\nexport_timeout_ms = 2000\n[otlp.headers]\n\"x-api-key\" = \"k\"\n",
    );
    let c = Config::load(
        Some(&path),
        &env(&[("MCP_AUTHZ_OTLP_SAMPLE_RATIO", "0.5")]),
        &Overrides::default(),
    )
    .expect("config");
    let o = c.otlp.expect("otlp");
    assert_eq!(o.protocol, OtlpProtocol::Http);
    assert_eq!(o.service_name, "pdp-eu");
    assert!((o.sample_ratio - 0.5).abs() < f64::EPSILON);
    assert_eq!((o.queue_size, o.batch_size), (100, 10));
    assert_eq!(o.export_interval, Duration::from_secs(1));
    assert_eq!(o.export_timeout, Duration::from_secs(2));
    assert_eq!(o.headers.get("x-api-key").map(String::as_str), Some("k"));
}

#[test]
fn deny_detail_from_the_file_and_environment() {
    let c = Config::load(None, &env(&[]), &Overrides::default()).expect("config");
    assert_eq!(c.deny_detail, DenyDetail::Generic, "the default");
    for (word, detail) in [
        ("generic", DenyDetail::Generic),
        ("full", DenyDetail::Full),
        ("not_found", DenyDetail::NotFound),
    ] {
        let (_d, path) = write(&format!("[decisions]\ndeny_detail = \"{word}\"\n"));
        let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("config");
        assert_eq!(c.deny_detail, detail, "{word}");
        let e = env(&[("MCP_AUTHZ_DECISIONS_DENY_DETAIL", word)]);
        let c = Config::load(None, &e, &Overrides::default()).expect("config");
        assert_eq!(c.deny_detail, detail, "{word}");
    }
    // The environment wins over the file.
    let (_d, path) = write("[decisions]\ndeny_detail = \"full\"\n");
    let e = env(&[("MCP_AUTHZ_DECISIONS_DENY_DETAIL", "not_found")]);
    let c = Config::load(Some(&path), &e, &Overrides::default()).expect("config");
    assert_eq!(c.deny_detail, DenyDetail::NotFound);
    // Anything else: a one-line error naming the setting and its words.
    let e = env(&[("MCP_AUTHZ_DECISIONS_DENY_DETAIL", "verbose")]);
    let err = Config::load(None, &e, &Overrides::default())
        .expect_err("bad")
        .to_string();
    assert!(
        err.contains("`decisions.deny_detail`")
            && err.contains("`verbose`")
            && err.contains("`not_found`")
            && !err.contains('\n'),
        "{err}"
    );
    let (_d, path) = write("[decisions]\ndeny_detail = \"none\"\n");
    let err = Config::load(Some(&path), &env(&[]), &Overrides::default())
        .expect_err("bad")
        .to_string();
    assert!(err.contains("none") && !err.contains('\n'), "{err}");
}

#[test]
fn servers_are_protected_resources_checked_at_start() {
    let issuer = "[[issuers]]\nissuer = \"https://idp.example.com\"\njwks_file = \"k.json\"\n";
    let docs = "[servers.docs]\nresource = \"https://docs.mcp.example.com/mcp\"\nauthorization_servers = [\"https://idp.example.com\"]\nscope = \"docs.read\"\n";
    // The issuer needs no `audiences`: a server with a resource trusts it.
    let (_d, path) = write(&format!("{issuer}{docs}"));
    let c = Config::load(Some(&path), &env(&[]), &Overrides::default()).expect("config");
    let s = c.resource_servers.get("docs").expect("docs");
    assert_eq!(
        s.metadata_url,
        "https://docs.mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(
        c.identity.issuers[0].resources,
        vec!["https://docs.mcp.example.com/mcp".to_owned()]
    );
    // Without a server naming it, the issuer needs an audience again.
    let (_d, path) = write(issuer);
    let e = Config::load(Some(&path), &env(&[]), &Overrides::default())
        .expect_err("no audience")
        .to_string();
    assert!(
        e.contains("`audiences` must name at least one audience"),
        "{e}"
    );
    // A bad setting is one line naming it.
    for (bad, key) in [
        (
            docs.replace("https://docs", "http://docs"),
            "servers.docs.resource",
        ),
        (
            docs.replace("[\"https://idp.example.com\"]", "[\"https://other\"]"),
            "servers.docs.authorization_servers",
        ),
        (format!("{docs}unknown = 1\n"), "unknown"),
    ] {
        let (_d, path) = write(&format!("{issuer}{bad}"));
        let e = Config::load(Some(&path), &env(&[]), &Overrides::default())
            .expect_err("refused")
            .to_string();
        assert!(e.contains(key) && !e.contains('\n'), "{e}");
    }
}
