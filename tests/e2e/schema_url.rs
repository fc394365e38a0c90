//! `mcp-authz schema import --url` and `schema check --url` against the real MCP server
//! of the reference scenario (`tests/e2e/mcp_server.py`, MCP Python SDK), answering with
//! event streams (the SDK's default) and with JSON (`--json-response`).

use std::path::Path;

use crate::harness::McpServer;
use crate::support::copy_of_reference;
use crate::support::process::{bin, run, text};

fn schema(verb: &str, url: &str, dir: &Path) -> (i32, String, String) {
    let out = run(bin()
        .args(["schema", verb, "--server", "docs", "--url", url])
        .arg("--policies")
        .arg(dir));
    let (o, e) = text(&out);
    (out.status.code().unwrap_or(-1), o, e)
}

/// The fragment without its comments (which name the URL).
fn declarations(dir: &Path) -> String {
    let path = dir.join("tools/docs.cedarschema");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn live_import_and_check_of_the_document_server_over_sse_and_json() {
    let mut imported = Vec::new();
    for json_response in [false, true] {
        let server = McpServer::start_answering("docs", json_response);
        let url = format!("http://127.0.0.1:{}/mcp", server.port());
        let dir = copy_of_reference();
        let (code, out, err) = schema("import", &url, dir.path());
        assert_eq!(
            code,
            0,
            "json {json_response}: {out}{err}\n{}",
            server.log()
        );
        assert!(
            out.contains("ok: server `docs`: 4 tools, 1 prompts, 0 not typed"),
            "{out}"
        );
        assert!(err.contains("tools and prompts"), "{err}");
        let fragment = declarations(dir.path());
        for action in [
            "tools/call/docs/search_documents",
            "tools/call/docs/get_document",
            "tools/call/docs/summarize_document",
            "tools/call/docs/delete_document",
            "prompts/get/docs/executive_summary",
        ] {
            assert!(
                fragment.contains(&format!("action \"{action}\"")),
                "{action}\n{fragment}"
            );
        }
        let (code, out, err) = schema("check", &url, dir.path());
        assert_eq!(code, 0, "json {json_response}: {out}{err}");
        assert!(out.contains("ok: server `docs` lists what"), "{out}");

        // The handshake, then the lists, twice (import, check); the session and the
        // negotiated version go with every request after `initialize`.
        let requests = server.requests();
        let session: Vec<_> = requests
            .iter()
            .filter(|r| r["http_method"] == "POST")
            .map(|r| {
                (
                    r["jsonrpc_method"].as_str().unwrap_or("").to_owned(),
                    r["headers"]["mcp-session-id"].is_string(),
                    r["headers"]["mcp-protocol-version"]
                        .as_str()
                        .map(str::to_owned),
                )
            })
            .collect();
        let version = Some("2025-11-25".to_owned());
        let one = [
            ("initialize".to_owned(), false, None),
            (
                "notifications/initialized".to_owned(),
                true,
                version.clone(),
            ),
            ("tools/list".to_owned(), true, version.clone()),
            ("prompts/list".to_owned(), true, version.clone()),
        ];
        assert_eq!(session, [one.clone(), one].concat(), "{requests:#?}");
        imported.push(fragment);
    }
    // The same declarations whichever way the server answers.
    assert_eq!(imported.first(), imported.last());
}

/// The reference set agrees with the servers the end-to-end tests run: `schema check
/// --url` of each live reference server against `policies/` is clean, and the saved
/// lists of `tests/fixtures/mcp/` (which `policies/tools/` is imported from, see
/// `cli_schema::the_reference_fragments_are_the_import_of_the_reference_servers_lists`)
/// are what the servers list now; a list that differs is named.
#[test]
fn the_reference_policies_match_the_live_reference_servers() {
    let repo = crate::support::repo();
    for name in ["docs", "projects"] {
        let server = McpServer::start_answering(name, false);
        let url = format!("http://127.0.0.1:{}/mcp", server.port());
        let out = run(bin()
            .args([
                "schema",
                "check",
                "--server",
                name,
                "--url",
                &url,
                "--policies",
            ])
            .arg(repo.join("policies")));
        let (o, e) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {o}{e}\n{}",
            server.log()
        );
    }
    let capture = repo.join("tests/fixtures/mcp/capture_lists.py");
    let out = run(std::process::Command::new(crate::harness::python())
        .arg(&capture)
        .arg("--check")
        .arg(repo.join("tests/fixtures/mcp")));
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{o}{e}");
    // The check can fail: a saved list that differs from the server's is named.
    let copy = tempfile::tempdir().expect("tempdir");
    for name in [
        "tools_list_result.json",
        "prompts_list_result.json",
        "projects_tools_list_result.json",
    ] {
        let text = std::fs::read_to_string(repo.join("tests/fixtures/mcp").join(name))
            .expect("saved list");
        let text = if name == "projects_tools_list_result.json" {
            text.replace("\"since\"", "\"days\"")
        } else {
            text
        };
        std::fs::write(copy.path().join(name), text).expect("write");
    }
    let out = run(std::process::Command::new(crate::harness::python())
        .arg(&capture)
        .arg("--check")
        .arg(copy.path()));
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}{e}");
    assert!(o.contains("projects_tools_list_result.json"), "{o}");
    assert!(!o.contains(" tools_list_result.json"), "{o}");
}
