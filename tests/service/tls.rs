//! TLS on the listeners and callers authenticated by their client certificates:
//! the whole service from a config file with `[tls]`, asked over real TLS
//! connections on 127.0.0.1 by callers holding certificates of a test CA.

use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use mcp_authz::api::proto::v1::authorizer_client::AuthorizerClient;
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity as TlsIdentity};

use crate::support::gateway::{bearer, parsed, verified};
use crate::support::inproc::{Launch, Service};
use crate::support::pki::{Ca, Pair};
use crate::support::process::{bin, run, text};
use crate::support::tokens::demo_token;
use crate::support::{config, envoy, reference_policies};

const GATEWAY: &str = "spiffe://corp.example/ns/mesh/sa/mcp-gateway";
const ENVOY: &str = "spiffe://corp.example/ns/docs/sa/docs-server";
const ROGUE: &str = "spiffe://corp.example/ns/apps/sa/rogue";
const CORPASSIST: &str = "spiffe://corp.example/ns/apps/sa/corpassist";
const GET: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_document","arguments":{"document_id":"titan/q1-strategy"}}}"#;

/// The service with TLS on every listener, client certificates required on the gRPC
/// and HTTP listeners, the gateway and one Envoy sidecar trusted.
struct Mesh {
    dir: tempfile::TempDir,
    ca: Ca,
    server: Pair,
    service: Service,
}

impl Mesh {
    fn start(extra: &str) -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new(dir.path(), "mesh");
        let server = ca.server("mcp-authz");
        let tls = format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\ntrusted_callers = [\"{GATEWAY}\", \"{ENVOY}\"]\n{extra}",
            server.cert.display(),
            server.key.display(),
            ca.cert.display(),
        );
        let file = config::write(
            dir.path(),
            &[
                &config::demo_issuer(),
                "[spiffe]\ntrust_domains = [\"corp.example\"]\n",
                &tls,
            ],
        );
        // These tests read which refusal (an untrusted caller's) the client is told.
        let service = Launch::new(&reference_policies())
            .config(&file)
            .admin()
            .full_denials()
            .start();
        Mesh {
            dir,
            ca,
            server,
            service,
        }
    }

    /// A client certificate of this mesh's CA with `uris` as URI SANs.
    fn client(&self, name: &str, uris: &[&str]) -> Pair {
        self.ca.client(name, uris)
    }
}

/// alice's `get_document` through CorpAssist, as the gateway asserts it.
fn alice_get() -> mcp_authz::api::proto::v1::CheckRequest {
    parsed(
        verified("alice", "corpassist"),
        "docs",
        "tools/call",
        "get_document",
        None,
    )
}

fn pem(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read PEM")
}

/// A TLS channel to `addr` that trusts `ca` and presents `identity`, if any.
async fn channel(addr: &str, ca: &Path, identity: Option<&Pair>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem(ca)))
        .domain_name("localhost");
    if let Some(p) = identity {
        tls = tls.identity(TlsIdentity::from_pem(pem(&p.cert), pem(&p.key)));
    }
    Channel::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// An HTTPS client that trusts `ca` and presents `identity`, if any.
fn https(ca: &Path, identity: Option<&Pair>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem(ca)).expect("CA"))
        .timeout(Duration::from_secs(10));
    if let Some(p) = identity {
        let mut both = pem(&p.cert);
        both.extend(pem(&p.key));
        b = b.identity(reqwest::Identity::from_pem(&both).expect("identity"));
    }
    b.build().expect("client")
}

fn https_url(addr: &str, path: &str) -> String {
    let port = addr.rsplit(':').next().expect("port");
    format!("https://localhost:{port}{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_callers_assert_identities_others_present_tokens() {
    let m = Mesh::start("");
    let gateway = m.client("gateway", &[GATEWAY]);
    let rogue = m.client("rogue", &[ROGUE]);
    // A certificate with two URI SANs is no X.509-SVID: it names no caller.
    let two = m.client("two", &[GATEWAY, ROGUE]);

    let mut trusted = AuthorizerClient::new(
        channel(&m.service.grpc, &m.ca.cert, Some(&gateway))
            .await
            .expect("gateway connects"),
    );
    let answer = trusted
        .check(alice_get())
        .await
        .expect("the gateway may assert")
        .into_inner();
    assert!(!answer.decision_id.is_empty(), "{answer:?}");

    for (name, pair) in [("rogue", &rogue), ("two URI SANs", &two)] {
        let mut c = AuthorizerClient::new(
            channel(&m.service.grpc, &m.ca.cert, Some(pair))
                .await
                .expect("connects"),
        );
        let err = c.check(alice_get()).await.expect_err(name);
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{name}: {err:?}");
        assert!(err.message().contains("trusted caller"), "{name}: {err:?}");
        // A bearer token is what an untrusted caller may present.
        let token = parsed(
            bearer(demo_token("erin")),
            "docs",
            "tools/call",
            "get_document",
            None,
        );
        let answer = c
            .check(token)
            .await
            .expect("a token is decided")
            .into_inner();
        assert!(
            answer.allowed,
            "{name}: erin may read documents: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_source_principal_is_taken_only_from_a_trusted_sidecar() {
    let m = Mesh::start("");
    let envoy_cert = m.client("envoy", &[ENVOY]);
    let rogue = m.client("rogue", &[ROGUE]);
    let request = || envoy::post(GET).principal(CORPASSIST).json().build();

    let mut sidecar = AuthorizationClient::new(
        channel(&m.service.grpc, &m.ca.cert, Some(&envoy_cert))
            .await
            .expect("envoy connects"),
    );
    let (status, body) =
        envoy::status(&sidecar.check(request()).await.expect("check").into_inner());
    assert!(!body.contains("trusted caller"), "{status}: {body}");

    let mut forger = AuthorizationClient::new(
        channel(&m.service.grpc, &m.ca.cert, Some(&rogue))
            .await
            .expect("connects"),
    );
    let (status, body) = envoy::status(&forger.check(request()).await.expect("check").into_inner());
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("trusted caller"), "{body}");
    // Without a principal, its client's token is decided as from anyone.
    let token = envoy::post(GET).bearer(&demo_token("erin")).json().build();
    let (status, body) = envoy::status(&forger.check(token).await.expect("check").into_inner());
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authzen_subjects_need_a_token_unless_the_caller_is_trusted() {
    let m = Mesh::start("");
    let gateway = m.client("gateway", &[GATEWAY]);
    let rogue = m.client("rogue", &[ROGUE]);
    let evaluation = json!({
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "tools/call"},
        "resource": {"type": "tool", "id": "docs/get_document"},
        "context": {"agent": "corpassist"}
    });
    let url = https_url(&m.service.http, "/access/v1/evaluation");
    let trusted = https(&m.ca.cert, Some(&gateway))
        .post(&url)
        .json(&evaluation)
        .send()
        .await
        .expect("gateway request");
    assert_eq!(trusted.status(), 200);
    let r = https(&m.ca.cert, Some(&rogue))
        .post(&url)
        .json(&evaluation)
        .send()
        .await
        .expect("rogue request");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let text = r.text().await.expect("body");
    assert!(text.contains("trusted caller"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_except_on_the_admin_listener() {
    let m = Mesh::start("");
    // No client certificate: the handshake (or the first call) fails.
    match channel(&m.service.grpc, &m.ca.cert, None).await {
        Err(_) => {}
        Ok(ch) => {
            let err = AuthorizerClient::new(ch)
                .check(parsed(
                    bearer(demo_token("erin")),
                    "docs",
                    "tools/call",
                    "get_document",
                    None,
                ))
                .await
                .expect_err("no client certificate");
            // The server refuses the handshake (TLS alert `certificate required`); the
            // client learns it at its first call, as a transport error of some kind.
            assert!(
                matches!(
                    err.code(),
                    tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                ),
                "{err:?}"
            );
            assert!(
                err.message().contains("transport") || err.message().contains("cancel"),
                "{err:?}"
            );
        }
    }
    let health = https(&m.ca.cert, None)
        .get(https_url(&m.service.http, "/healthz"))
        .send()
        .await;
    assert!(
        health.is_err(),
        "the HTTP listener asks for a client certificate"
    );
    // A certificate of another CA is refused too.
    let other = Ca::new(m.dir.path(), "other");
    let stranger = other.client("stranger", &[GATEWAY]);
    assert!(
        https(&m.ca.cert, Some(&stranger))
            .get(https_url(&m.service.http, "/healthz"))
            .send()
            .await
            .is_err(),
        "a client certificate of another CA"
    );
    // Probes and scrapers have no certificate: the admin listener asks for none.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = https(&m.ca.cert, None)
            .get(https_url(&m.service.admin, path))
            .send()
            .await
            .expect(path);
        assert_eq!(r.status(), 200, "{path}");
    }
    // Plaintext to a TLS listener is no request.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", m.service.admin))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_without_dropping_open_ones() {
    let m = Mesh::start("");
    let gateway = m.client("gateway", &[GATEWAY]);
    let mut open = AuthorizerClient::new(
        channel(&m.service.grpc, &m.ca.cert, Some(&gateway))
            .await
            .expect("connects"),
    );
    open.check(alice_get()).await.expect("before rotation");

    // The new server certificate comes from another CA (as after a CA rotation):
    // a client that trusts only the new CA cannot connect before the swap.
    let next = Ca::new(m.dir.path(), "next");
    let renewed = next.server("mcp-authz-renewed");
    assert!(
        channel(&m.service.grpc, &next.cert, Some(&gateway))
            .await
            .is_err()
    );

    // A broken replacement is refused; the certificate in use stays.
    std::fs::write(&m.server.key, "not a key").expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    while m
        .service
        .find_log(|l| l.contains("cannot be used"))
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the broken key is not reported:\n{}",
            m.service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    open.check(alice_get()).await.expect("still served");
    // New connections still get the certificate in use.
    channel(&m.service.grpc, &m.ca.cert, Some(&gateway))
        .await
        .expect("the previous certificate is still served");

    // Replaced the way cert-manager does: new files renamed over the old ones.
    for (from, to) in [
        (&renewed.key, &m.server.key),
        (&renewed.cert, &m.server.cert),
    ] {
        std::fs::rename(from, to).expect("rename");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fresh = loop {
        if let Ok(ch) = channel(&m.service.grpc, &next.cert, Some(&gateway)).await {
            break AuthorizerClient::new(ch);
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    fresh
        .check(alice_get())
        .await
        .expect("a new connection with the renewed certificate");
    open.check(alice_get())
        .await
        .expect("the open connection was not dropped");
    assert!(
        m.service
            .find_log(|l| l.contains("TLS certificate reloaded"))
            .is_some()
    );
}

#[test]
fn serve_refuses_unusable_tls_files_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "mesh");
    let a = ca.server("a");
    let b = ca.server("b");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN NOTHING-----\n").expect("write");
    let cases = [
        (
            a.cert.clone(),
            dir.path().join("missing.pem"),
            "tls.key_file",
        ),
        (a.cert.clone(), b.key.clone(), "cannot be used"),
        (garbage.clone(), a.key.clone(), "tls.cert_file"),
        (a.cert.clone(), garbage.clone(), "tls.key_file"),
    ];
    for (cert, key, says) in cases {
        let file = config::write(
            dir.path(),
            &[&format!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                cert.display(),
                key.display()
            )],
        );
        let out = run(bin()
            .args(["serve", "--config"])
            .arg(&file)
            .args(["--policies"])
            .arg(reference_policies())
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ]));
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{says}: {stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
}
