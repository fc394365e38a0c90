//! Envoy ext_proc (`envoy.service.ext_proc.v3.ExternalProcessor/Process`) against the
//! service started in-process, driven by a real tonic client the way Envoy drives it:
//! one stream per HTTP request, one answer per message.

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse, body_mutation,
    processing_request, processing_response,
};
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use mcp_authz::api::proto::v1::{FilterListRequest, filter_list_request};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::gateway::{bearer, channel, client, trusted};
use crate::support::inproc::Service;
use crate::support::tokens::demo_token as token;
use crate::support::{self, config, poll, reference_policies};

struct Setup {
    _dir: tempfile::TempDir,
    server: Service,
}

fn start() -> Setup {
    start_with("")
}

fn start_with(sections: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("decisions.jsonl");
    let config = config::write(
        dir.path(),
        &[
            &config::trusted_caller(dir.path()),
            &config::demo_issuer(),
            &format!("[decision_log]\nfile = {:?}\n", log.display().to_string()),
            sections,
        ],
    );
    let server = Service::start(&reference_policies(), Some(&config));
    Setup { _dir: dir, server }
}

impl Setup {
    /// The decision log's list records of ext_proc, once `n` are written.
    fn list_records(&self, n: usize) -> Vec<Value> {
        let path = self._dir.path().join("decisions.jsonl");
        poll(std::time::Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&path).ok()?;
            let records: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| r["interface"] == "ext_proc" && r.get("list").is_some())
                .collect();
            (records.len() >= n).then_some(records)
        })
        .unwrap_or_else(|| panic!("fewer than {n} ext_proc list records"))
    }
}

/// One HTTP request as Envoy's ext_proc filter streams it: each message sent once
/// the previous one is answered.
struct Stream {
    tx: mpsc::Sender<ProcessingRequest>,
    rx: tonic::Streaming<ProcessingResponse>,
}

impl Stream {
    async fn open(addr: &str) -> Stream {
        let mut c = ExternalProcessorClient::new(channel(addr).await);
        let (tx, rx) = mpsc::channel(4);
        let rx = c
            .process(ReceiverStream::new(rx))
            .await
            .expect("process")
            .into_inner();
        Stream { tx, rx }
    }

    async fn send(&mut self, request: ProcessingRequest) -> ProcessingResponse {
        self.tx.send(request).await.expect("send");
        self.rx
            .message()
            .await
            .expect("answer")
            .expect("an answer to every message")
    }
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    HeaderMap {
        headers: headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).to_owned(),
                raw_value: v.as_bytes().to_vec(),
                ..HeaderValue::default()
            })
            .collect(),
    }
}

fn string(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// What ext_authz left in the dynamic metadata for a request it allowed.
fn authz_metadata(method: &str, server: &str) -> Metadata {
    let fields = [
        ("mcp_method", string(method)),
        ("mcp_server", string(server)),
        ("decision_id", string("authz-1")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Metadata {
        filter_metadata: [("envoy.filters.http.ext_authz".to_owned(), Struct { fields })]
            .into_iter()
            .collect(),
        ..Metadata::default()
    }
}

fn request_headers(
    method: &str,
    user_token: Option<&str>,
    metadata: Option<Metadata>,
) -> ProcessingRequest {
    let mut headers = vec![
        (":method", method.to_owned()),
        (":path", "/docs/mcp".to_owned()),
        (":authority", "docs.mcp.internal".to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    if let Some(t) = user_token {
        headers.push(("authorization", format!("Bearer {t}")));
    }
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ProcessingRequest {
        metadata_context: metadata,
        request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
            headers: Some(header_map(&pairs)),
            ..HttpHeaders::default()
        })),
        ..ProcessingRequest::default()
    }
}

fn response_headers(status: &str, content_type: &str, extra: &[(&str, &str)]) -> ProcessingRequest {
    let mut headers = vec![(":status", status), ("content-type", content_type)];
    headers.extend_from_slice(extra);
    ProcessingRequest {
        request: Some(processing_request::Request::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(&headers)),
            ..HttpHeaders::default()
        })),
        ..ProcessingRequest::default()
    }
}

fn body(request: bool, bytes: &[u8], end: bool) -> ProcessingRequest {
    let body = HttpBody {
        body: bytes.to_vec(),
        end_of_stream: end,
        ..HttpBody::default()
    };
    ProcessingRequest {
        request: Some(if request {
            processing_request::Request::RequestBody(body)
        } else {
            processing_request::Request::ResponseBody(body)
        }),
        ..ProcessingRequest::default()
    }
}

/// What the answer to a response body chunk puts in its place: `None` leaves it as
/// it is, `Some(empty)` clears it.
fn replacement(answer: &ProcessingResponse) -> Option<Vec<u8>> {
    let Some(processing_response::Response::ResponseBody(b)) = &answer.response else {
        panic!("not a response body answer: {answer:?}");
    };
    let mutation = b
        .response
        .as_ref()?
        .body_mutation
        .as_ref()?
        .mutation
        .as_ref()?;
    Some(match mutation {
        body_mutation::Mutation::Body(bytes) => bytes.clone(),
        body_mutation::Mutation::ClearBody(_) => Vec::new(),
        other => panic!("unexpected mutation {other:?}"),
    })
}

fn tools_list_response(id: u64) -> Vec<u8> {
    let result: Value = serde_json::from_slice(
        &std::fs::read(support::repo().join("tests/fixtures/mcp/tools_list_result.json"))
            .expect("fixture"),
    )
    .expect("json");
    serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": id, "result": result })).expect("json")
}

fn names(response: &Value, array: &str) -> Vec<String> {
    response["result"][array]
        .as_array()
        .unwrap_or_else(|| panic!("no `{array}` in {response}"))
        .iter()
        .map(|t| {
            t["name"]
                .as_str()
                .or(t["uri"].as_str())
                .expect("name")
                .to_owned()
        })
        .collect()
}

/// What the gateway's `FilterList` shows the holder of `token`.
async fn filter_list_names(s: &Setup, token: &str, method: &str, result: &[u8]) -> Vec<String> {
    let mut c = client(&s.server.grpc).await;
    c.filter_list(trusted(FilterListRequest {
        identity: Some(bearer(token)),
        server: "docs".into(),
        method: method.into(),
        list: Some(filter_list_request::List::Result(result.to_vec())),
        ..FilterListRequest::default()
    }))
    .await
    .expect("filter list")
    .into_inner()
    .allowed
}

/// A list call through the stream: request headers with ext_authz's metadata, a 200
/// response of `content_type` in `chunks`; the body the client receives.
async fn list_through(
    s: &Setup,
    user_token: Option<&str>,
    method: &str,
    content_type: &str,
    chunks: &[&[u8]],
) -> Vec<u8> {
    let mut stream = Stream::open(&s.server.grpc).await;
    let answer = stream
        .send(request_headers(
            "POST",
            user_token,
            Some(authz_metadata(method, "docs")),
        ))
        .await;
    let mode = answer
        .mode_override
        .expect("a list call asks for its response");
    assert_eq!(mode.response_body_mode, BodySendMode::Streamed as i32);
    assert_eq!(mode.request_body_mode, BodySendMode::None as i32);
    let answer = stream
        .send(response_headers(
            "200",
            content_type,
            &[("content-length", "1234")],
        ))
        .await;
    let Some(processing_response::Response::ResponseHeaders(h)) = &answer.response else {
        panic!("{answer:?}");
    };
    let removed = &h
        .response
        .as_ref()
        .and_then(|r| r.header_mutation.as_ref())
        .expect("a header mutation")
        .remove_headers;
    assert!(
        removed.contains(&"content-length".to_owned()),
        "{removed:?}"
    );
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let answer = stream.send(body(false, chunk, i + 1 == chunks.len())).await;
        out.extend(replacement(&answer).unwrap_or_else(|| chunk.to_vec()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_list_shows_what_filter_list_shows_the_same_token() {
    let s = start();
    let response = tools_list_response(7);
    let third = response.len() / 3;
    let chunks = [
        &response[..third],
        &response[third..2 * third],
        &response[2 * third..],
    ];
    let mut seen = Vec::new();
    for user in ["erin", "frank"] {
        let t = token(user);
        let out = list_through(&s, Some(&t), "tools/list", "application/json", &chunks).await;
        let out: Value = serde_json::from_slice(&out).expect("the client receives JSON");
        assert_eq!(out["id"], 7);
        let shown = names(&out, "tools");
        let gateway = filter_list_names(&s, &t, "tools/list", &response).await;
        assert_eq!(shown, gateway, "{user}: ext_proc and FilterList agree");
        seen.push(shown);
    }
    // The reference policies: erin (engineering) may not delete.
    assert!(!seen[0].contains(&"delete_document".to_owned()), "{seen:?}");
    assert!(seen[0].contains(&"search_documents".to_owned()), "{seen:?}");
    // Every other member of the response is kept as it was.
    let out = list_through(
        &s,
        Some(&token("erin")),
        "tools/list",
        "application/json",
        &[&response],
    )
    .await;
    let out: Value = serde_json::from_slice(&out).expect("json");
    let original: Value = serde_json::from_slice(&response).expect("json");
    assert_eq!(out["result"]["_meta"], original["result"]["_meta"]);
    assert_eq!(out["result"]["tools"][0], original["result"]["tools"][0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_is_filtered_event_by_event_wherever_the_chunks_split() {
    let s = start();
    let t = token("erin");
    let list = tools_list_response(3);
    let notification = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"tools/call refund"}}"#;
    let mut stream_bytes = Vec::new();
    stream_bytes.extend_from_slice(b": keep-alive\r\n\r\nevent: message\r\nid: n1\r\ndata: ");
    stream_bytes.extend_from_slice(notification);
    stream_bytes.extend_from_slice(b"\r\n\r\nevent: message\r\nid: r1\r\ndata: ");
    stream_bytes.extend_from_slice(&list);
    stream_bytes.extend_from_slice(b"\r\n\r\n");
    let response = tools_list_response(3);
    let expected = filter_list_names(&s, &t, "tools/list", &response).await;
    let cuts = [
        1,
        17,
        40,
        stream_bytes.len() / 2,
        stream_bytes.len() - 3,
        stream_bytes.len() - 1,
    ];
    for cut in cuts {
        let (a, b) = stream_bytes.split_at(cut);
        let out = list_through(&s, Some(&t), "tools/list", "text/event-stream", &[a, b]).await;
        let text = String::from_utf8(out).expect("utf-8");
        // The keep-alive and the server's notification pass byte for byte.
        assert!(
            text.starts_with(&format!(
                ": keep-alive\r\n\r\nevent: message\r\nid: n1\r\ndata: {}\r\n\r\n",
                String::from_utf8_lossy(notification)
            )),
            "cut {cut}: {text}"
        );
        let last = text
            .split("id: r1\r\n")
            .nth(1)
            .unwrap_or_else(|| panic!("cut {cut}: the list event is kept: {text}"));
        assert!(last.ends_with("\n\r\n"), "cut {cut}: {last:?}");
        let data = last.strip_prefix("data: ").expect("data").trim_end();
        let filtered: Value = serde_json::from_str(data).expect("json data");
        assert_eq!(names(&filtered, "tools"), expected, "cut {cut}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_resources_are_filtered_too() {
    let s = start();
    let t = token("frank");
    let prompts =
        std::fs::read(support::repo().join("tests/fixtures/mcp/prompts_list_result.json"))
            .expect("fixture");
    let prompts: Value = serde_json::from_slice(&prompts).expect("json");
    let response =
        serde_json::to_vec(&json!({"jsonrpc":"2.0","id":1,"result":prompts})).expect("json");
    let out = list_through(
        &s,
        Some(&t),
        "prompts/list",
        "application/json",
        &[&response],
    )
    .await;
    let out: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(
        names(&out, "prompts"),
        filter_list_names(&s, &t, "prompts/list", &response).await
    );
    let resources = json!({"jsonrpc":"2.0","id":2,"result":{"resources":[
        {"uri":"docs://titan/q1-strategy","name":"q1"},
        {"uri":"docs://finance/budget-2026","name":"budget"}]}});
    let response = serde_json::to_vec(&resources).expect("json");
    let out = list_through(
        &s,
        Some(&t),
        "resources/list",
        "application/json",
        &[&response],
    )
    .await;
    let out: Value = serde_json::from_slice(&out).expect("json");
    let shown: Vec<String> = out["result"]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r["uri"].as_str().expect("uri").to_owned())
        .collect();
    assert_eq!(
        shown,
        filter_list_names(&s, &t, "resources/list", &response).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_cost_one_answer_and_nothing_more() {
    let s = start();
    let t = token("erin");
    // A call ext_authz allowed: continue, no override.
    let mut stream = Stream::open(&s.server.grpc).await;
    let answer = stream
        .send(request_headers(
            "POST",
            Some(&t),
            Some(authz_metadata("tools/call", "docs")),
        ))
        .await;
    assert!(answer.mode_override.is_none(), "{answer:?}");
    assert!(matches!(
        answer.response,
        Some(processing_response::Response::RequestHeaders(_))
    ));
    // GET (the SSE stream) and DELETE with no metadata: nothing to filter.
    for method in ["GET", "DELETE"] {
        let mut stream = Stream::open(&s.server.grpc).await;
        let answer = stream.send(request_headers(method, Some(&t), None)).await;
        assert!(answer.mode_override.is_none(), "{method}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metadata_the_request_body_says_the_method() {
    // Without ext_authz's metadata, the server comes from the `:authority`.
    let s = start_with("[envoy.servers]\n\"docs.mcp.internal\" = \"docs\"\n");
    let t = token("erin");
    let response = tools_list_response(5);
    let expected = filter_list_names(&s, &t, "tools/list", &response).await;
    // A list call: the body is asked for, then the response is filtered.
    let mut stream = Stream::open(&s.server.grpc).await;
    let answer = stream.send(request_headers("POST", Some(&t), None)).await;
    let mode = answer.mode_override.expect("the body is asked for");
    assert_eq!(mode.request_body_mode, BodySendMode::Buffered as i32);
    let list = br#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
    let out = without_metadata(&s, &t, list, &response).await;
    let out: Value = serde_json::from_slice(&out.expect("rewritten")).expect("json");
    assert_eq!(names(&out, "tools"), expected);
    // A call: its response's body is not asked for any more.
    let mut stream = Stream::open(&s.server.grpc).await;
    stream.send(request_headers("POST", Some(&t), None)).await;
    stream
        .send(body(
            true,
            br#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"search_documents"}}"#,
            true,
        ))
        .await;
    let answer = stream
        .send(response_headers("200", "application/json", &[]))
        .await;
    let mode = answer.mode_override.expect("no more body");
    assert_eq!(mode.response_body_mode, BodySendMode::None as i32);
    // What the server may read otherwise than this service: a body with the method
    // twice, a batch holding a list call, broken JSON — the answer is never passed
    // unread.
    for request in [
        br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","method":"tools/list"}"#.to_vec(),
        br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","METHOD":"tools/list"}"#.to_vec(),
        br#"[{"jsonrpc":"2.0","id":5,"method":"tools/list"},{"jsonrpc":"2.0","id":6,"method":"ping"}]"#
            .to_vec(),
        b"{not json".to_vec(),
    ] {
        let out = without_metadata(&s, &t, &request, &response).await;
        assert_eq!(
            error_of(&out.expect("replaced"))["code"],
            -32600,
            "{}",
            String::from_utf8_lossy(&request)
        );
    }
}

/// A POST through the stream with no metadata (the body says the method): `request`
/// as its body, a 200 JSON response `response`; what replaces the response body.
async fn without_metadata(s: &Setup, t: &str, request: &[u8], response: &[u8]) -> Option<Vec<u8>> {
    let mut stream = Stream::open(&s.server.grpc).await;
    stream.send(request_headers("POST", Some(t), None)).await;
    stream.send(body(true, request, true)).await;
    stream
        .send(response_headers("200", "application/json", &[]))
        .await;
    replacement(&stream.send(body(false, response, true)).await)
}

/// The error a refused list is replaced with.
fn error_of(bytes: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(bytes));
    });
    assert!(v.get("result").is_none(), "never the list: {v}");
    v["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_cannot_be_filtered_never_comes_through() {
    let s = start();
    let t = token("erin");
    let response = tools_list_response(9);
    // No server: without ext_authz's metadata, an authority no setting maps.
    let request = br#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#;
    let answer = without_metadata(&s, &t, request, &response).await;
    let error = error_of(&answer.expect("replaced"));
    // Told as every deny is (`decisions.deny_detail`), with its decision id.
    assert_eq!(error["code"], -32003, "{error}");
    assert!(error["data"]["decision_id"].is_string(), "{error}");
    // No credentials: the caller cannot be identified.
    let out = list_through(&s, None, "tools/list", "application/json", &[&response]).await;
    assert_eq!(
        error_of(&out)["code"],
        -32001,
        "{}",
        String::from_utf8_lossy(&out)
    );
    // A forged token.
    let out = list_through(
        &s,
        Some("e30.e30.AAAA"),
        "tools/list",
        "application/json",
        &[&response],
    )
    .await;
    assert_eq!(error_of(&out)["code"], -32001);
    // A result read strictly: a second list riding along, duplicate keys.
    for bad in [
        br#"{"jsonrpc":"2.0","id":9,"result":{"tools":[],"prompts":[{"name":"x"}]}}"#.to_vec(),
        br#"{"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"delete_document"}],"tools":[]}}"#
            .to_vec(),
        br#"[{"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"delete_document"}]}}]"#.to_vec(),
        b"{not json".to_vec(),
    ] {
        let out = list_through(&s, Some(&t), "tools/list", "application/json", &[&bad]).await;
        assert_eq!(
            error_of(&out)["code"],
            -32600,
            "{}",
            String::from_utf8_lossy(&bad)
        );
    }
    // The same in an event stream: the event carries the error instead.
    let bad = br#"data: {"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"delete_document"}],"Tools":[]}}

"#;
    let out = list_through(&s, Some(&t), "tools/list", "text/event-stream", &[bad]).await;
    let text = String::from_utf8(out).expect("utf-8");
    let data = text.strip_prefix("data: ").expect("an event").trim_end();
    assert_eq!(error_of(data.as_bytes())["code"], -32600);
    // A compressed body, or one of another type: replaced whole.
    for (content_type, extra) in [
        ("application/json", vec![("content-encoding", "gzip")]),
        ("text/plain", vec![]),
    ] {
        let mut stream = Stream::open(&s.server.grpc).await;
        stream
            .send(request_headers(
                "POST",
                Some(&t),
                Some(authz_metadata("tools/list", "docs")),
            ))
            .await;
        stream
            .send(response_headers("200", content_type, &extra))
            .await;
        let first = stream.send(body(false, &response[..10], false)).await;
        assert_eq!(replacement(&first), Some(Vec::new()), "dropped");
        let last = stream.send(body(false, &response[10..], true)).await;
        let out = replacement(&last).expect("replaced");
        assert!(
            error_of(&out)["message"]
                .as_str()
                .expect("message")
                .contains("cannot be filtered")
        );
    }
    // A body whose headers were not seen.
    let mut stream = Stream::open(&s.server.grpc).await;
    stream
        .send(request_headers(
            "POST",
            Some(&t),
            Some(authz_metadata("tools/list", "docs")),
        ))
        .await;
    let answer = stream.send(body(false, &response, true)).await;
    assert!(error_of(&replacement(&answer).expect("replaced"))["message"].is_string());
    // A message with no part: the stream ends with an error, the service goes on.
    let mut stream = Stream::open(&s.server.grpc).await;
    stream
        .tx
        .send(ProcessingRequest::default())
        .await
        .expect("send");
    let status = stream.rx.message().await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // An error answer of the server passes as it is.
    let error = br#"{"jsonrpc":"2.0","id":9,"error":{"code":-32601,"message":"no lists here"}}"#;
    let out = list_through(&s, Some(&t), "tools/list", "application/json", &[error]).await;
    assert_eq!(out, error.to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_shows_everything_and_says_what_it_would_hide() {
    let s = start_with("[decisions]\ndry_run = true\n");
    let t = token("frank");
    let response = tools_list_response(4);
    let out = list_through(&s, Some(&t), "tools/list", "application/json", &[&response]).await;
    let out: Value = serde_json::from_slice(&out).expect("json");
    let original: Value = serde_json::from_slice(&response).expect("json");
    assert_eq!(names(&out, "tools"), names(&original, "tools"));
    // The record names what the policies would hide: FilterList's `would_deny`.
    let mut c = client(&s.server.grpc).await;
    let gateway = c
        .filter_list(trusted(FilterListRequest {
            identity: Some(bearer(&t)),
            server: "docs".into(),
            method: "tools/list".into(),
            list: Some(filter_list_request::List::Result(response.clone())),
            ..FilterListRequest::default()
        }))
        .await
        .expect("filter list")
        .into_inner();
    assert!(
        gateway.dry_run && !gateway.would_deny.is_empty(),
        "{gateway:?}"
    );
    let record = s
        .list_records(1)
        .into_iter()
        .find(|r| r["list"]["authorized_by"] == "authz-1")
        .expect("the ext_proc record");
    assert_eq!(
        record["list"]["denied_names"],
        json!(gateway.would_deny),
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filtered_list_is_one_record_linked_to_its_authorization() {
    let s = start();
    let t = token("frank");
    let response = tools_list_response(4);
    let shown = filter_list_names(&s, &t, "tools/list", &response).await;
    list_through(&s, Some(&t), "tools/list", "application/json", &[&response]).await;
    let record = s.list_records(1).pop().expect("a record");
    let all = names(&serde_json::from_slice(&response).expect("json"), "tools");
    let hidden: Vec<&String> = all.iter().filter(|n| !shown.contains(n)).collect();
    assert_eq!(record["list"]["denied_names"], json!(hidden), "{record}");
    assert_eq!(record["list"]["entries"], all.len());
    assert_eq!(record["list"]["authorized_by"], "authz-1");
    assert_eq!(record["user"], "Mcp::User::\"frank\"", "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_has_its_replayed_lists_filtered_and_nothing_else_touched() {
    let s = start();
    let t = token("erin");
    let list = tools_list_response(3);
    let expected = filter_list_names(&s, &t, "tools/list", &list).await;
    let call = br#"{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"tools"}],"isError":false}}"#;
    // A notification whose data spans two lines passes byte for byte too.
    let two_lines = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"method\":\"notifications/progress\"}\n\n";
    let mut stream_bytes = Vec::new();
    stream_bytes.extend_from_slice(two_lines);
    stream_bytes.extend_from_slice(b"id: 7\ndata: ");
    stream_bytes.extend_from_slice(call);
    stream_bytes.extend_from_slice(b"\n\nid: 8\ndata: ");
    stream_bytes.extend_from_slice(&list);
    stream_bytes.extend_from_slice(b"\n\n");
    let mut stream = Stream::open(&s.server.grpc).await;
    let mut headers = request_headers(
        "GET",
        Some(&t),
        Some(authz_metadata("session/stream", "docs")),
    );
    if let Some(processing_request::Request::RequestHeaders(h)) = &mut headers.request {
        h.headers
            .get_or_insert_with(HeaderMap::default)
            .headers
            .push(HeaderValue {
                key: "last-event-id".into(),
                raw_value: b"6".to_vec(),
                ..HeaderValue::default()
            });
    }
    let answer = stream.send(headers).await;
    let mode = answer.mode_override.expect("a resumed stream is read");
    assert_eq!(mode.response_body_mode, BodySendMode::Streamed as i32);
    stream
        .send(response_headers("200", "text/event-stream", &[]))
        .await;
    let (a, b) = stream_bytes.split_at(50);
    let mut out = Vec::new();
    for (chunk, end) in [(a, false), (b, true)] {
        let answer = stream.send(body(false, chunk, end)).await;
        out.extend(replacement(&answer).unwrap_or_else(|| chunk.to_vec()));
    }
    let text = String::from_utf8(out).expect("utf-8");
    let mut expected_start = String::from_utf8_lossy(two_lines).into_owned();
    expected_start.push_str(&format!(
        "id: 7\ndata: {}\n\n",
        String::from_utf8_lossy(call)
    ));
    assert!(text.starts_with(&expected_start), "{text}");
    let data = text
        .split("id: 8\n")
        .nth(1)
        .and_then(|e| e.strip_prefix("data: "))
        .expect("the replayed list")
        .trim_end();
    let filtered: Value = serde_json::from_str(data).expect("json");
    assert_eq!(names(&filtered, "tools"), expected);
    // Without `Last-Event-ID`, a GET is not read at all.
    let mut stream = Stream::open(&s.server.grpc).await;
    let answer = stream
        .send(request_headers(
            "GET",
            Some(&t),
            Some(authz_metadata("session/stream", "docs")),
        ))
        .await;
    assert!(answer.mode_override.is_none());
}
