use super::*;
use crate::api::proto::v1::{self as pb, DenyKind, check_request, filter_list_request};
use crate::api::test_support::{ready, services, token, tools_call};
use crate::mcp::jsonrpc::INVALID_REQUEST;

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
    assert_eq!(error.message, format!("forbidden: {}", denied.reason));

    let unauthenticated = answer(&api, check("not-a-token", &tools_call("get_document"))).await;
    assert_eq!(unauthenticated.deny_kind, DenyKind::Unauthenticated as i32);
    assert_eq!(unauthenticated.error.map(|e| e.code), Some(-32001));
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
    assert_eq!(invalid.error.map(|e| e.code), Some(INVALID_REQUEST));

    let not_json = answer(&api, check(&alice, "{")).await;
    assert_eq!(not_json.deny_kind, DenyKind::InvalidRequest as i32);
    assert_eq!(not_json.error.map(|e| e.code), Some(-32700));
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
        r.error.map(|e| e.message),
        Some("`tools/call` is not a list method".to_owned())
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
