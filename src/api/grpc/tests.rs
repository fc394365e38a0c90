use super::*;
use crate::api::proto::v1::{self as pb, DenyKind, check_request, filter_list_request};
use crate::api::refusal::GENERIC_FORBIDDEN;
use crate::api::test_support::{ready, services, token, tools_call};
use crate::config::DenyDetail;
use crate::mcp::jsonrpc::INVALID_REQUEST;
use serde_json::json;

fn check(token: &str, body: &str) -> CheckRequest {
    CheckRequest {
        identity: Some(pb::Identity {
            bearer_token: token.to_owned(),
            ..pb::Identity::default()
        }),
        server: "docs".into(),
        message: Some(check_request::Message::Jsonrpc(body.as_bytes().to_vec())),
        ..CheckRequest::default()
    }
}

async fn answer(api: &GatewayApi, request: CheckRequest) -> CheckResponse {
    api.check(Request::new(request))
        .await
        .expect("an answer")
        .into_inner()
}

#[tokio::test]
async fn check_allows_denies_and_refuses_in_the_answer() {
    let api = GatewayApi::new(ready().await);
    let alice = token("alice", "corpassist");

    let allowed = answer(&api, check(&alice, &tools_call("get_document"))).await;
    assert!(allowed.allowed, "{allowed:?}");
    assert_eq!(
        (allowed.user.as_str(), allowed.application.as_str()),
        ("alice", "corpassist")
    );
    assert!(allowed.error.is_none());
    assert_eq!(allowed.deny_kind, DenyKind::Unspecified as i32);

    let denied = answer(&api, check(&alice, &tools_call("delete_document"))).await;
    assert!(!denied.allowed);
    assert_eq!(denied.deny_kind, DenyKind::Forbidden as i32);
    let error = denied.error.expect("a JSON-RPC error");
    assert_eq!(error.code, crate::mcp::jsonrpc::FORBIDDEN_CODE);
    // By default the client is told nothing of the reason, and the decision id.
    assert_eq!(error.message, GENERIC_FORBIDDEN);
    assert_eq!(denied.reason, GENERIC_FORBIDDEN);
    assert_eq!(
        data_of(error.data.as_ref()),
        json!({ "decision_id": denied.decision_id })
    );

    let unauthenticated = answer(&api, check("not-a-token", &tools_call("get_document"))).await;
    assert_eq!(unauthenticated.deny_kind, DenyKind::Unauthenticated as i32);
    assert_eq!(unauthenticated.error.as_ref().map(|e| e.code), Some(-32001));
    assert_eq!(
        data_of(unauthenticated.error.as_ref().and_then(|e| e.data.as_ref())),
        json!({ "decision_id": unauthenticated.decision_id })
    );
    assert!(
        unauthenticated
            .www_authenticate
            .starts_with("Bearer realm=\"mcp-authz\"")
    );
    assert!(!unauthenticated.decision_id.is_empty(), "logged as a deny");

    let mut no_server = check(&alice, &tools_call("get_document"));
    no_server.server.clear();
    let invalid = answer(&api, no_server).await;
    assert_eq!(invalid.deny_kind, DenyKind::InvalidRequest as i32);
    assert_eq!(invalid.reason, "`server` is empty");
    assert_eq!(
        invalid.error.as_ref().map(|e| e.code),
        Some(INVALID_REQUEST)
    );
    assert_eq!(
        invalid.error.as_ref().map(|e| e.message.as_str()),
        Some("`server` is empty")
    );
    assert_eq!(
        data_of(invalid.error.as_ref().and_then(|e| e.data.as_ref())),
        json!({ "decision_id": invalid.decision_id })
    );

    let not_json = answer(&api, check(&alice, "{")).await;
    assert_eq!(not_json.deny_kind, DenyKind::InvalidRequest as i32);
    assert_eq!(not_json.error.map(|e| e.code), Some(-32700));
}

/// `error.data` as JSON (`null` when absent).
fn data_of(data: Option<&prost_types::Struct>) -> serde_json::Value {
    data.map_or(serde_json::Value::Null, |d| {
        serde_json::Value::Object(crate::api::pbjson::struct_to_json(d))
    })
}

/// A gateway API whose denied clients are told `detail`.
async fn api_with(detail: DenyDetail) -> GatewayApi {
    GatewayApi::new(Ready::with(Services {
        deny_detail: detail,
        ..services().await
    }))
}

#[tokio::test]
async fn check_tells_the_client_what_deny_detail_allows() {
    let alice = token("alice", "corpassist");
    let delete = || check(&alice, &tools_call("delete_document"));
    // `full`: the reason, in `error.message` (with `forbidden: `) and `reason`.
    let full = answer(&api_with(DenyDetail::Full).await, delete()).await;
    let error = full.error.as_ref().expect("a JSON-RPC error");
    assert_eq!(error.message, format!("forbidden: {}", full.reason));
    assert_ne!(error.message, GENERIC_FORBIDDEN);
    assert_eq!(
        data_of(error.data.as_ref()),
        json!({ "decision_id": full.decision_id })
    );
    // `generic` and `not_found` hide the reason from `error` and `reason`, never
    // from `evaluations` and `calls` (for the gateway).
    for (detail, code, message) in [
        (DenyDetail::Generic, -32003, GENERIC_FORBIDDEN),
        (
            DenyDetail::NotFound,
            -32602,
            "Unknown tool: delete_document",
        ),
    ] {
        let denied = answer(&api_with(detail).await, delete()).await;
        assert!(!denied.allowed);
        assert_eq!(denied.deny_kind, DenyKind::Forbidden as i32);
        let error = denied.error.as_ref().expect("a JSON-RPC error");
        assert_eq!((error.code, error.message.as_str()), (code, message));
        assert_eq!(denied.reason, message);
        assert_eq!(
            data_of(error.data.as_ref()),
            json!({ "decision_id": denied.decision_id })
        );
        assert_eq!(denied.evaluations, full.evaluations, "{detail:?}");
        assert_eq!(denied.calls.first().map(|c| &c.reason), Some(&full.reason));
    }
    // A batch (even of one) gets one error, never a server's answer to a batch: generic.
    let batch = format!("[{}]", tools_call("delete_document"));
    let denied = answer(&api_with(DenyDetail::NotFound).await, check(&alice, &batch)).await;
    let error = denied.error.as_ref().expect("a JSON-RPC error");
    assert_eq!(
        (error.code, error.message.as_str()),
        (-32003, GENERIC_FORBIDDEN)
    );
    // A resource, as a server without it answers (`data.uri`, MCP's `-32002`).
    let api = api_with(DenyDetail::NotFound).await;
    let carol = token("carol", "corpassist");
    let read = json!({ "jsonrpc": "2.0", "id": 3, "method": "resources/read",
        "params": { "uri": "docs://finance/budget-2026" } });
    let denied = answer(&api, check(&carol, &read.to_string())).await;
    assert!(!denied.allowed, "{denied:?}");
    let error = denied.error.as_ref().expect("a JSON-RPC error");
    assert_eq!(
        (error.code, error.message.as_str()),
        (-32002, "Resource not found")
    );
    assert_eq!(
        data_of(error.data.as_ref()),
        json!({ "uri": "docs://finance/budget-2026", "decision_id": denied.decision_id })
    );
}

#[tokio::test]
async fn whole_calls_are_refused_with_a_status() {
    let status = GatewayApi::new(Ready::new())
        .check(Request::new(CheckRequest::default()))
        .await
        .expect_err("not ready");
    assert_eq!(status.code(), tonic::Code::Unavailable);

    let mut services = services().await;
    services.grpc.max_batch_checks = 1;
    let api = GatewayApi::new(Ready::with(services));
    let alice = token("alice", "corpassist");
    let batch = BatchCheckRequest {
        checks: vec![check(&alice, &tools_call("get_document")); 2],
        ..BatchCheckRequest::default()
    };
    let status = api
        .batch_check(Request::new(batch))
        .await
        .expect_err("too large");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("`grpc.max_batch_checks`"),
        "{status:?}"
    );
    assert!(status.metadata().get(DECISION_ID_METADATA).is_some());

    let mut asserted = check("", &tools_call("get_document"));
    asserted.identity = Some(pb::Identity {
        verified: Some(pb::VerifiedIdentity {
            user: "alice".into(),
            ..pb::VerifiedIdentity::default()
        }),
        ..pb::Identity::default()
    });
    let status = api
        .check(Request::new(asserted))
        .await
        .expect_err("an untrusted assertion");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status
            .message()
            .starts_with("`identity.verified`: an identity asserted")
    );
    assert!(status.metadata().get(DECISION_ID_METADATA).is_some());
}

#[tokio::test]
async fn filter_list_hides_what_would_be_denied() {
    let api = GatewayApi::new(ready().await);
    let request = FilterListRequest {
        identity: Some(pb::Identity {
            bearer_token: token("alice", "corpassist"),
            ..pb::Identity::default()
        }),
        server: "docs".into(),
        method: "tools/list".into(),
        list: Some(filter_list_request::List::Result(
            br#"{"tools":[{"name":"get_document"},{"name":"delete_document"}]}"#.to_vec(),
        )),
        ..FilterListRequest::default()
    };
    let r = api
        .filter_list(Request::new(request.clone()))
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!(
        (r.allowed, r.denied),
        (
            vec!["get_document".to_owned()],
            vec!["delete_document".to_owned()]
        )
    );
    assert_eq!(r.result, br#"{"tools":[{"name":"get_document"}]}"#);

    let not_a_list = FilterListRequest {
        method: "tools/call".into(),
        ..request
    };
    let r = api
        .filter_list(Request::new(not_a_list))
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!(r.deny_kind, DenyKind::InvalidRequest as i32);
    assert_eq!(
        r.error.as_ref().map(|e| e.message.as_str()),
        Some("`tools/call` is not a list method")
    );
    assert!(!r.decision_id.is_empty());
    assert_eq!(
        data_of(r.error.as_ref().and_then(|e| e.data.as_ref())),
        json!({ "decision_id": r.decision_id })
    );
}

#[tokio::test]
async fn a_batch_is_decided_on_one_snapshot_even_across_a_reload() {
    let (_dir, store, services) = crate::api::test_support::reloading_after_first_decision().await;
    let api = GatewayApi::new(Ready::with(services));
    let alice = token("alice", "corpassist");

    // Three checks, and a JSON-RPC batch of two messages in one check.
    let two = format!(
        "[{},{}]",
        tools_call("get_document"),
        tools_call("search_documents")
    );
    let batch = BatchCheckRequest {
        checks: vec![
            check(&alice, &tools_call("get_document")),
            check(&alice, &tools_call("get_document")),
            check(&alice, &two),
            check(&alice, "{ not json"),
        ],
        ..BatchCheckRequest::default()
    };
    let results = api
        .batch_check(Request::new(batch))
        .await
        .expect("answers")
        .into_inner()
        .results;
    assert_eq!(store.snapshot().generation, 2, "the reload happened");
    assert_eq!(results.len(), 4);
    for r in &results[..3] {
        assert!(
            r.allowed,
            "decided on the snapshot the batch started with: {r:?}"
        );
    }
    // A refused check of the batch is recorded on the batch's snapshot too.
    assert!(!results[3].allowed);
    for r in &results {
        assert_eq!(r.policy_generation, 1, "{r:?}");
    }
    // The next request sees the new snapshot.
    let after = answer(&api, check(&alice, &tools_call("get_document"))).await;
    assert!(!after.allowed);
    assert_eq!(after.policy_generation, 2);
}

#[tokio::test]
async fn filter_list_shows_declared_tools_whose_arguments_decide() {
    // Servers `docs` and `payments` with typed tools whose arguments are required.
    let dir = crate::policy::typed_policy_dir();
    let store =
        std::sync::Arc::new(crate::policy::PolicyStore::open(dir.path()).expect("typed policies"));
    let telemetry = std::sync::Arc::new(crate::telemetry::Telemetry::default());
    let engine = crate::authz::Engine::with_recorder(store, telemetry.clone());
    let api = GatewayApi::new(crate::api::services::Ready::with(
        crate::api::test_support::services_with(engine, telemetry).await,
    ));
    let list = |user: &str, app: &str, server: &str, names: &str| FilterListRequest {
        identity: Some(pb::Identity {
            bearer_token: token(user, app),
            ..pb::Identity::default()
        }),
        server: server.into(),
        method: "tools/list".into(),
        list: Some(filter_list_request::List::Result(
            format!(r#"{{"tools":[{names}]}}"#).into_bytes(),
        )),
        ..FilterListRequest::default()
    };
    // `search_documents` needs a `query`, guarded by a forbid on `max_results`;
    // `get_document` needs a `document_id`: both listed. `delete_document` is not
    // declared for `docs`: hidden.
    let r = api
        .filter_list(Request::new(list(
            "alice",
            "corpassist",
            "docs",
            r#"{"name":"search_documents"},{"name":"get_document"},{"name":"delete_document"}"#,
        )))
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!(
        (r.allowed, r.denied),
        (
            vec!["search_documents".to_owned(), "get_document".to_owned()],
            vec!["delete_document".to_owned()]
        )
    );
    // `refund` is for finance (bob) only, and large refunds are forbidden by argument.
    for (user, shown) in [("bob", true), ("alice", false)] {
        let r = api
            .filter_list(Request::new(list(
                user,
                "corpassist",
                "payments",
                r#"{"name":"refund"}"#,
            )))
            .await
            .expect("an answer")
            .into_inner();
        assert_eq!(r.allowed.len() == 1, shown, "{user}: {r:?}");
    }
}
