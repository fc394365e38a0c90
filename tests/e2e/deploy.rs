//! The deployment material (`deploy/`, `examples/mesh/`), checked offline: the
//! Containerfile parsed (PyPI `dockerfile-parse`), the Kustomize base and overlay built and
//! validated against the Kubernetes schemas of named versions (PyPI `kubernetes-validate`,
//! strict), the Istio and Envoy Gateway resources by the fields that matter (no registry
//! we reach ships their CRD schemas for this Python), the mesh Envoy configs by real
//! Envoy's `--mode validate` with generated certificates, and every place where the
//! manifests and the service's config must agree. `deploy/validate.py` does the Python
//! side; these tests assert on what it prints.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::{python, substitute, validate_envoy_config};
use crate::support::process::WorkDir;
use crate::support::repo;

/// The Kubernetes versions the manifests are validated for (the oldest one assumed, and
/// the newest `kubernetes-validate` knows).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.31.0", "1.37.0"];

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

/// `python deploy/validate.py ARGS...`: its JSON output, or a panic with its reasons.
fn validate(args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(deploy("validate.py"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run deploy/validate.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "deploy/validate.py {args:?} failed:\n{stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("validate.py output: {e}\n{stdout}"))
}

/// The objects of a Kustomize directory, validated for every [`KUBERNETES_VERSIONS`].
fn kustomize(dir: &str) -> Vec<Value> {
    let dir = deploy(dir);
    let mut args = vec!["kubernetes", dir.to_str().expect("utf-8 path")];
    args.extend(KUBERNETES_VERSIONS);
    validate(&args).as_array().expect("a list").clone()
}

fn yaml(path: &Path) -> Vec<Value> {
    validate(&["yaml", path.to_str().expect("utf-8 path")])
        .as_array()
        .expect("a list")
        .clone()
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected: {found:?}");
    found[0]
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no `{name}` in {list}"))
}

// ---------------------------------------------------------------------------------------
// The container image.

#[test]
fn containerfile_builds_in_a_rust_stage_and_runs_as_non_root_from_a_pinned_runtime() {
    let parsed = validate(&["containerfile", "deploy/Containerfile"]);
    let instructions: Vec<(String, String)> = parsed["instructions"]
        .as_array()
        .expect("instructions")
        .iter()
        .map(|i| {
            (
                i["instruction"].as_str().unwrap_or_default().to_owned(),
                i["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let of = |name: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };

    let froms = of("FROM");
    assert_eq!(froms.len(), 2, "a builder and a runtime stage: {froms:?}");
    assert!(froms[0].ends_with(" AS builder"), "{}", froms[0]);
    assert!(
        !froms[1].contains("builder"),
        "the final stage: {}",
        froms[1]
    );
    // Base images (build arguments resolved to their defaults): tagged, never `latest`.
    let images: Vec<&str> = parsed["parent_images"]
        .as_array()
        .expect("parent_images")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(images.len(), 2, "{images:?}");
    for image in &images {
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        assert!(
            !tag.is_empty() && !tag.contains('/') && tag != "latest",
            "base image `{image}` must have a tag other than latest"
        );
    }
    assert!(images[0].contains("rust:"), "{images:?}");
    assert!(images[1].contains("distroless/cc"), "{images:?}");

    assert!(
        of("RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "{:?}",
        of("RUN")
    );
    // USER after the last FROM, numeric and not root.
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("FROM");
    let users: Vec<&str> = instructions[last_from..]
        .iter()
        .filter(|(i, _)| i == "USER")
        .map(|(_, v)| v.as_str())
        .collect();
    let user = users.last().expect("a USER in the final stage");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "numeric non-root user: {user}"
    );
    let copies = of("COPY");
    assert!(
        copies
            .iter()
            .any(|c| c.ends_with("policies /etc/mcp-authz/policies")),
        "{copies:?}"
    );
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with("--from=builder ") && c.ends_with("/usr/local/bin/mcp-authz")),
        "{copies:?}"
    );
    let entrypoint: Vec<String> =
        serde_json::from_str(of("ENTRYPOINT").last().expect("ENTRYPOINT")).expect("exec form");
    assert_eq!(entrypoint, ["/usr/local/bin/mcp-authz", "serve"]);
    let exposed: Vec<&str> = of("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .collect();
    for port in ["9191", "8181", "9901"] {
        assert!(exposed.contains(&port), "EXPOSE {port}: {exposed:?}");
    }

    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for excluded in ["target/", ".venv/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            "{excluded} not in .dockerignore"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes.

#[test]
fn kubernetes_base_is_valid_and_hardened() {
    let objects = kustomize("kubernetes/base");
    let mut kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
    );
    for o in &objects {
        assert_eq!(o["metadata"]["namespace"], "mcp-authz", "{}", o["kind"]);
    }

    let deployment = object(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = named(&pod["containers"], "mcp-authz");
    assert_eq!(container["image"], "registry.example.com/mcp-authz:0.1.0");
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    // Probes: HTTPS on the admin listener (TLS without client certificates).
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/readyz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "admin", "{probe}");
        assert_eq!(get["scheme"], "HTTPS", "{probe}");
    }
    let port = |name: &str| named(&container["ports"], name)["containerPort"].as_u64();

    // The policy directory is a whole ConfigMap volume (no subPath: the `..data` swap
    // must reach the watcher), TLS a Secret, the only writable mount an emptyDir.
    let mounts = &container["volumeMounts"];
    let mount_path = |name: &str| {
        named(mounts, name)["mountPath"]
            .as_str()
            .unwrap_or_default()
    };
    for m in mounts.as_array().expect("volumeMounts") {
        assert!(m.get("subPath").is_none(), "no subPath mounts: {m}");
        let writable = m["name"] == "decision-log";
        assert_eq!(m["readOnly"].as_bool().unwrap_or(false), !writable, "{m}");
    }
    let volumes = &pod["volumes"];
    assert_eq!(
        named(volumes, "policies")["configMap"]["name"],
        "mcp-authz-policies"
    );
    assert_eq!(
        named(volumes, "config")["configMap"]["name"],
        "mcp-authz-config"
    );
    assert_eq!(
        named(volumes, "tls")["secret"]["secretName"],
        "mcp-authz-tls"
    );
    assert!(named(volumes, "decision-log")["emptyDir"].is_object());
    // Every policy file of the reference set is mapped (keys cannot hold `tools/`).
    let items = named(volumes, "policies")["configMap"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["path"].as_str())
        .collect::<Vec<_>>();
    let reference = repo().join("policies");
    for (rel, _) in mcp_authz::policy::files_under(&reference, &mut Vec::new()) {
        let loaded =
            rel.ends_with(".cedar") || rel.ends_with(".cedarschema") || rel.ends_with(".json");
        if loaded {
            assert!(
                items.contains(&rel.as_str()),
                "policies/{rel} is not in the ConfigMap items"
            );
        }
    }

    // The config file in the ConfigMap agrees with the Deployment.
    let config = object(&objects, "ConfigMap")["data"]["mcp-authz.toml"]
        .as_str()
        .expect("mcp-authz.toml");
    // It is a configuration mcp-authz accepts (every key known, [tls] consistent).
    let dir = WorkDir::new("e2e-deploy-config-");
    let file = dir.path().join("mcp-authz.toml");
    std::fs::write(&file, config).expect("write");
    if let Err(e) = mcp_authz::config::Config::load(
        Some(&file),
        &Default::default(),
        &mcp_authz::config::Overrides::default(),
    ) {
        panic!("the ConfigMap's mcp-authz.toml is refused: {e}");
    }
    let config: toml::Table = toml::from_str(config).expect("mcp-authz.toml parses");
    assert_eq!(config["policies"].as_str(), Some(mount_path("policies")));
    let listen_port = |key: &str| {
        config[key]
            .as_str()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u64>().ok())
    };
    assert_eq!(listen_port("grpc_listen"), port("grpc-authz"));
    assert_eq!(listen_port("http_listen"), port("http-authz"));
    assert_eq!(listen_port("admin_listen"), port("admin"));
    let tls = config["tls"].as_table().expect("[tls]");
    for key in ["cert_file", "key_file", "client_ca_file"] {
        let file = tls[key].as_str().expect(key);
        assert!(
            file.starts_with(&format!("{}/", mount_path("tls"))),
            "{key}: {file}"
        );
    }
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "--config",
            &format!("{}/mcp-authz.toml", mount_path("config"))
        ]
    );
    assert!(
        config["envoy"]["servers"]
            .as_table()
            .is_some_and(|t| !t.is_empty())
    );

    // Service ports named for the mesh.
    let service = object(&objects, "Service");
    let ports = &service["spec"]["ports"];
    assert_eq!(named(ports, "grpc-authz")["appProtocol"], "grpc");
    assert_eq!(named(ports, "http-authz")["appProtocol"], "http");
    assert_eq!(
        named(ports, "grpc-authz")["port"].as_u64(),
        port("grpc-authz")
    );
    assert_eq!(
        named(ports, "http-authz")["port"].as_u64(),
        port("http-authz")
    );
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(&service["spec"]["selector"], selector);
    assert_eq!(
        &object(&objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        selector
    );

    let hpa = object(&objects, "HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert!(hpa["spec"]["minReplicas"].as_u64() >= Some(2));

    // Ingress only to the named ports, only from selected peers.
    let policy = object(&objects, "NetworkPolicy");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], *selector);
    for rule in policy["spec"]["ingress"].as_array().expect("ingress") {
        assert!(
            rule["from"].as_array().is_some_and(|f| !f.is_empty()),
            "{rule}"
        );
        assert!(
            rule["ports"].as_array().is_some_and(|p| !p.is_empty()),
            "{rule}"
        );
    }
}

#[test]
fn kubernetes_validation_refuses_an_unknown_field() {
    // The checker is not vacuous: a misspelt field of the Deployment fails it.
    let dir = WorkDir::new("e2e-deploy-bad-");
    for entry in std::fs::read_dir(deploy("kubernetes/base")).expect("read base") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let text = text.replace(
            "readOnlyRootFilesystem: true\n",
            "readOnlyRootFilesystem: true\n            readOnlyRootFS: true\n",
        );
        std::fs::write(dir.path().join(path.file_name().expect("name")), text).expect("write");
    }
    let out = Command::new(python())
        .arg(deploy("validate.py"))
        .args([
            "kubernetes",
            dir.path().to_str().expect("utf-8 path"),
            "1.37.0",
        ])
        .output()
        .expect("run deploy/validate.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("'readOnlyRootFS' was unexpected"),
        "{stderr}"
    );
}

#[test]
fn git_sync_overlay_is_valid_and_fills_the_policy_volume() {
    let objects = kustomize("kubernetes/git-sync");
    let pod = &object(&objects, "Deployment")["spec"]["template"]["spec"];
    let policies = named(&pod["volumes"], "policies");
    assert!(policies.get("configMap").is_none(), "{policies}");
    assert!(policies["emptyDir"].is_object(), "{policies}");
    for (list, name) in [
        ("initContainers", "git-sync-init"),
        ("containers", "git-sync"),
    ] {
        let c = named(&pod[list], name);
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{name}"
        );
        assert!(
            c["image"]
                .as_str()
                .is_some_and(|i| i.contains("git-sync:v")),
            "{name}"
        );
    }
    let authz = named(&pod["containers"], "mcp-authz");
    assert_eq!(
        named(&authz["env"], "MCP_AUTHZ_POLICIES")["value"],
        "/etc/mcp-authz/policies/current"
    );
    assert_eq!(authz["securityContext"]["readOnlyRootFilesystem"], true);
}

// ---------------------------------------------------------------------------------------
// Istio and Envoy Gateway: their CRDs are not in kubernetes-validate; the fields that
// decide what Envoy does are asserted here.

#[test]
fn istio_provider_forwards_the_body_and_fails_closed() {
    let mesh = yaml(&deploy("istio/mesh-config.yaml"));
    let providers = &mesh[0]["spec"]["meshConfig"]["extensionProviders"];
    let provider = named(providers, "mcp-authz");
    let grpc = &provider["envoyExtAuthzGrpc"];
    assert_eq!(grpc["service"], "mcp-authz.mcp-authz.svc.cluster.local");
    assert_eq!(grpc["port"], 9191);
    assert_eq!(grpc["failOpen"], false);
    assert!(grpc["timeout"].as_str().is_some_and(|t| t.ends_with('s')));
    let body = &grpc["includeRequestBodyInCheck"];
    assert_eq!(body["packAsBytes"], true);
    assert!(
        body["maxRequestBytes"]
            .as_u64()
            .is_some_and(|n| (65_536..=8 << 20).contains(&n))
    );

    let policy = &yaml(&deploy("istio/authorization-policy.yaml"))[0];
    assert_eq!(policy["apiVersion"], "security.istio.io/v1");
    assert_eq!(policy["kind"], "AuthorizationPolicy");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], "mcp-authz");
    assert!(
        policy["spec"]["selector"]["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    );

    let rule = &yaml(&deploy("istio/destination-rule.yaml"))[0];
    assert_eq!(rule["spec"]["host"], grpc["service"]);
    assert_eq!(rule["spec"]["trafficPolicy"]["tls"]["mode"], "ISTIO_MUTUAL");
}

#[test]
fn envoy_gateway_security_policy_asks_mcp_authz_over_grpc_with_the_body() {
    let route = &yaml(&deploy("envoy-gateway/httproute.yaml"))[0];
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(route["kind"], "HTTPRoute");
    let policy = &yaml(&deploy("envoy-gateway/security-policy.yaml"))[0];
    assert_eq!(policy["apiVersion"], "gateway.envoyproxy.io/v1alpha1");
    assert_eq!(policy["kind"], "SecurityPolicy");
    let target = &policy["spec"]["targetRefs"][0];
    assert_eq!(target["kind"], "HTTPRoute");
    assert_eq!(target["name"], route["metadata"]["name"]);
    assert_eq!(
        policy["metadata"]["namespace"],
        route["metadata"]["namespace"]
    );
    let ext = &policy["spec"]["extAuth"];
    assert_eq!(ext["failOpen"], false);
    assert!(ext.get("http").is_none());
    let backend = &ext["grpc"]["backendRefs"][0];
    assert_eq!(backend["kind"], "Service");
    assert_eq!(backend["name"], "mcp-authz");
    assert_eq!(backend["namespace"], "mcp-authz");
    assert_eq!(backend["port"], 9191);
    assert!(
        ext["bodyToExtAuth"]["maxRequestBytes"]
            .as_u64()
            .is_some_and(|n| n >= 65_536)
    );
    // No contextExtensions: the server comes from the route's hostname.
    assert!(ext.get("contextExtensions").is_none());

    let grant = &yaml(&deploy("envoy-gateway/reference-grant.yaml"))[0];
    assert_eq!(grant["spec"]["from"][0]["kind"], "SecurityPolicy");
    assert_eq!(
        grant["spec"]["from"][0]["namespace"],
        policy["metadata"]["namespace"]
    );
    assert_eq!(grant["spec"]["to"][0]["name"], "mcp-authz");
    let tls = &yaml(&deploy("envoy-gateway/backend-tls-policy.yaml"))[0];
    assert_eq!(tls["spec"]["targetRefs"][0]["name"], "mcp-authz");
    assert_eq!(tls["spec"]["targetRefs"][0]["sectionName"], "grpc-authz");
    let proxy = &yaml(&deploy("envoy-gateway/envoy-proxy.yaml"))[0];
    assert_eq!(
        proxy["spec"]["backendTLS"]["clientCertificateRef"]["kind"],
        "Secret"
    );

    // mcp-authz's example config names the route's hostname.
    let config: toml::Table = toml::from_str(
        &std::fs::read_to_string(repo().join("examples/mesh/mcp-authz.toml")).expect("read"),
    )
    .expect("parse");
    let host = route["spec"]["hostnames"][0].as_str().expect("hostname");
    assert_eq!(config["envoy"]["servers"][host].as_str(), Some("docs"));
}

// ---------------------------------------------------------------------------------------
// The Envoy configurations they produce (examples/mesh).

/// PEM files for the mesh examples (tests/support/pki.rs): a CA, mcp-authz's server
/// certificate (the Service's DNS name and its SPIFFE ID) and a sidecar's client
/// certificate whose URI SAN is its SPIFFE ID.
struct Pki {
    _dir: WorkDir,
    ca: std::path::PathBuf,
    client: crate::support::pki::Pair,
}

impl Pki {
    fn new() -> Pki {
        let dir = WorkDir::new("e2e-deploy-pki-");
        let ca = crate::support::pki::Ca::new(dir.path(), "mesh");
        ca.workload(
            "mcp-authz",
            "spiffe://cluster.local/ns/mcp-authz/sa/mcp-authz",
            &["mcp-authz.mcp-authz.svc.cluster.local"],
        );
        let client = ca.workload(
            "client",
            "spiffe://cluster.local/ns/mcp-servers/sa/docs",
            &[],
        );
        Pki {
            ca: ca.cert.clone(),
            client,
            _dir: dir,
        }
    }

    fn file(&self, name: &str) -> String {
        match name {
            "ca.crt" => &self.ca,
            "client.crt" => &self.client.cert,
            "client.key" => &self.client.key,
            other => panic!("no PEM file `{other}`"),
        }
        .display()
        .to_string()
    }
}

fn mesh_vars(pki: &Pki) -> Vec<(&'static str, String)> {
    vec![
        ("LISTEN_PORT", "0".to_owned()),
        ("ADMIN_PORT", "0".to_owned()),
        ("AUTHZ_GRPC_PORT", "9191".to_owned()),
        ("DOCS_PORT", "8080".to_owned()),
        ("AUTHZ_CA", pki.file("ca.crt")),
        ("CLIENT_CERT", pki.file("client.crt")),
        ("CLIENT_KEY", pki.file("client.key")),
    ]
}

#[test]
fn mesh_envoy_configs_pass_envoy_validate() {
    let pki = Pki::new();
    let vars = mesh_vars(&pki);
    let dir = WorkDir::new("e2e-deploy-mesh-");
    for name in ["istio-sidecar.yaml", "envoy-gateway.yaml"] {
        let path = repo().join("examples/mesh").join(name);
        if let Err(out) = validate_envoy_config(&path, &vars) {
            panic!("envoy --mode validate refuses examples/mesh/{name}:\n{out}");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let rendered = dir.path().join(name);
        std::fs::write(&rendered, substitute(&text, &vars).expect("substitute")).expect("write");
        let config = &yaml(&rendered)[0];
        let filters = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"];
        let ext_authz = filters
            .as_array()
            .and_then(|f| {
                f.iter().find(|f| {
                    f["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("envoy.filters.http.ext_authz"))
                })
            })
            .unwrap_or_else(|| panic!("{name}: no ext_authz filter"));
        let ext = &ext_authz["typed_config"];
        assert_eq!(ext["failure_mode_allow"], false, "{name}");
        assert_eq!(ext["with_request_body"]["pack_as_bytes"], true, "{name}");
        assert!(ext["grpc_service"]["timeout"].is_string(), "{name}");
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        assert!(
            !code.contains("context_extensions"),
            "{name}: the server must come from :authority"
        );

        // The ext_authz cluster speaks TLS with a client certificate.
        let cluster_name = &ext["grpc_service"]["envoy_grpc"]["cluster_name"];
        let cluster = named(
            &config["static_resources"]["clusters"],
            cluster_name.as_str().expect("cluster"),
        );
        let tls = &cluster["transport_socket"]["typed_config"];
        assert!(
            tls["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("UpstreamTlsContext")),
            "{name}"
        );
        let common = &tls["common_tls_context"];
        assert_eq!(
            common["tls_certificates"][0]["certificate_chain"]["filename"],
            pki.file("client.crt")
        );
        assert_eq!(
            common["validation_context"]["trusted_ca"]["filename"],
            pki.file("ca.crt")
        );
    }
}
