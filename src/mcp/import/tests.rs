use super::*;

const BASE: &str = include_str!("../../../policies/mcp.cedarschema");
const FIXTURE: &str = include_str!("../../../tests/fixtures/mcp/tools_list_result.json");

fn tools(json: &str) -> Vec<ToolDef> {
    read_tools(json).expect("tools")
}

fn one_tool(input_schema: Value) -> (Record, Vec<Untypable>) {
    let tool = ToolDef {
        name: "t".into(),
        description: None,
        input_schema,
        annotations: Map::new(),
    };
    let mut notes = Vec::new();
    let record = map_tool(&tool, &mut notes);
    (record, notes)
}

fn attr(ty: Ty, required: bool) -> Attr {
    Attr { ty, required }
}

fn provenance() -> Provenance {
    Provenance {
        server: "docs".into(),
        tools_file: "tools.json".into(),
        prompts_file: None,
        live: false,
    }
}

/// The base schema plus the fragment, as one Cedar schema.
fn combined(fragment: &str) -> cedar_policy::Schema {
    let base = SchemaFragment::from_cedarschema_str(BASE).expect("base").0;
    let frag = SchemaFragment::from_cedarschema_str(fragment)
        .unwrap_or_else(|e| panic!("{e:?}\n{fragment}"))
        .0;
    cedar_policy::Schema::from_schema_fragments([base, frag])
        .unwrap_or_else(|e| panic!("{e:?}\n{fragment}"))
}

#[test]
fn reads_a_result_or_a_whole_response() {
    assert_eq!(tools(FIXTURE).len(), 4);
    let response = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{FIXTURE}}}"#);
    assert_eq!(tools(&response).len(), 4);
    assert!(matches!(
        read_tools(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}}"#),
        Err(ImportError::NotAList { .. })
    ));
    assert!(matches!(
        read_tools("[1]"),
        Err(ImportError::NotAList { .. })
    ));
    assert!(matches!(read_tools("{"), Err(ImportError::Json(_))));
    assert!(matches!(
        read_tools(r#"{"tools":[],"nextCursor":"2"}"#),
        Err(ImportError::NotAList { .. })
    ));
    assert_eq!(
        read_tools(r#"{"tools":[{"name":"a"},{"name":"a"}]}"#).err(),
        Some(ImportError::Duplicate {
            kind: "tool",
            name: "a".into()
        })
    );
}

#[test]
fn every_kind_of_type() {
    let (record, notes) = one_tool(serde_json::json!({
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "b": {"type": "boolean"},
            "when": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "ip4": {"type": "string", "format": "ipv4"},
            "ip6": {"type": "string", "format": "ipv6"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "nested": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"$ref": "#/$defs/B"}},
                "required": ["a"]
            },
            "color": {"enum": ["red", "green"]},
            "fixed": {"const": 3},
            "wrapped": {"allOf": [{"$ref": "#/$defs/B"}]},
            "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "maybe2": {"type": ["string", "null"]}
        },
        "required": ["s", "n", "maybe", "maybe2"],
        "$defs": {"B": {"type": "boolean"}}
    }));
    let expect: BTreeMap<String, Attr> = [
        ("s", attr(Ty::String, true)),
        ("n", attr(Ty::Long, true)),
        ("x", attr(Ty::Ext("decimal"), false)),
        ("b", attr(Ty::Bool, false)),
        ("when", attr(Ty::Ext("datetime"), false)),
        ("day", attr(Ty::Ext("datetime"), false)),
        ("ip4", attr(Ty::Ext("ipaddr"), false)),
        ("ip6", attr(Ty::Ext("ipaddr"), false)),
        ("tags", attr(Ty::Set(Box::new(Ty::String)), false)),
        (
            "nested",
            attr(
                Ty::Record(Record(
                    [
                        ("a".to_owned(), attr(Ty::Long, true)),
                        ("b".to_owned(), attr(Ty::Bool, false)),
                    ]
                    .into(),
                )),
                false,
            ),
        ),
        ("color", attr(Ty::String, false)),
        ("fixed", attr(Ty::Long, false)),
        ("wrapped", attr(Ty::Bool, false)),
        ("maybe", attr(Ty::Long, false)),
        ("maybe2", attr(Ty::String, false)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(record.0, expect);
    // Only the two nullable ones are noted: typed without `null`.
    let noted: Vec<(&str, Fallback)> = notes
        .iter()
        .map(|n| (n.pointer.as_str(), n.fallback))
        .collect();
    assert_eq!(
        noted,
        [
            ("/properties/maybe/anyOf", Fallback::NullDropped),
            ("/properties/maybe2/type", Fallback::NullDropped),
        ]
    );
}

#[test]
fn untypable_properties_are_left_out_and_named_by_pointer() {
    let (record, notes) = one_tool(serde_json::json!({
        "type": "object",
        "properties": {
            "ok": {"type": "string"},
            "union": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "one": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "multi": {"type": ["string", "integer"]},
            "tuple": {"type": "array", "prefixItems": [{"type": "string"}]},
            "old_tuple": {"type": "array", "items": [{"type": "string"}]},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
            "null": {"type": "null"},
            "any": {},
            "set_of_union": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "boolean"}]}},
            "loop": {"$ref": "#/$defs/Node"},
            "a/b": {"type": "object", "properties": {"c~d": {"type": ["integer", "boolean"]}}}
        },
        "required": ["ok", "union"],
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}
    }));
    assert_eq!(
        record.0.keys().collect::<Vec<_>>(),
        ["a/b", "loop", "ok"],
        "{record:?}"
    );
    // The recursive reference is cut where it recurs.
    assert_eq!(
        record.0.get("loop").map(|a| &a.ty),
        Some(&Ty::Record(Record::default()))
    );
    let mut pointers: Vec<&str> = notes.iter().map(|n| n.pointer.as_str()).collect();
    pointers.sort_unstable();
    assert_eq!(
        pointers,
        [
            "/$defs/Node/properties/next/$ref",
            "/properties/any",
            "/properties/a~1b/properties/c~0d/type",
            "/properties/map",
            "/properties/multi/type",
            "/properties/null/type",
            "/properties/old_tuple/items",
            "/properties/one/oneOf",
            "/properties/set_of_union/items/oneOf",
            "/properties/tuple/prefixItems",
            "/properties/union/anyOf",
        ]
    );
    assert!(notes.iter().all(|n| n.fallback == Fallback::LeftOut));
    let union = notes
        .iter()
        .find(|n| n.pointer == "/properties/one/oneOf")
        .map(ToString::to_string);
    assert_eq!(
        union.as_deref(),
        Some(
            "tool `t` at `/properties/one/oneOf`: a union (`oneOf`) of 2 types cannot be typed \
             in Cedar: left out of the typed arguments (a call that carries it has an undeclared argument)"
        )
    );
}

#[test]
fn extra_keys_of_an_object_are_noted() {
    let (record, notes) = one_tool(serde_json::json!({
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": true
    }));
    assert_eq!(record.0.len(), 1);
    assert_eq!(notes.len(), 1);
    assert_eq!(
        notes.first().map(|n| n.fallback),
        Some(Fallback::ExtraKeysUntyped)
    );
    // `additionalProperties: false` is what Cedar's closed records say anyway.
    let (_, notes) = one_tool(serde_json::json!({
        "type": "object", "properties": {}, "additionalProperties": false
    }));
    assert!(notes.is_empty());
}

#[test]
fn the_fixture_becomes_a_fragment_that_cedar_accepts_with_the_base() {
    let base = Base::from_cedarschema(BASE).expect("base");
    let tools = tools(FIXTURE);
    let (declared, notes) = declare(&tools, &[]);
    assert!(notes.is_empty(), "{notes:?}");
    let fragment =
        render_fragment(&provenance(), &tools, &[], &declared, &notes, &base).expect("render");
    let schema = combined(&fragment);
    let ids: Vec<String> = schema.actions().map(ToString::to_string).collect();
    assert!(
        ids.contains(&r#"Mcp::Action::"tools/call/docs/search_documents""#.to_owned()),
        "{ids:?}"
    );
    assert!(
        fragment.contains("  action \"tools/call/docs/search_documents\" in [\"tools/call\"]\n")
    );
    assert!(fragment.contains("        \"arguments\": {\n          \"max_results\"?: Long,\n          \"query\": String,\n          \"since\"?: datetime,\n        },\n"), "{fragment}");
    // The base context is kept, by name.
    assert!(fragment.contains("\"claims\"?: Mcp::Claims,"), "{fragment}");
    // Read back, it declares what was imported.
    assert_eq!(read_fragment("docs", &fragment), Ok(declared));
    // The entities are Cedar entities of the combined schema.
    let entities = render_entities("docs", &tools, &[], &base);
    let parsed = cedar_policy::Entities::from_json_str(&entities, Some(&schema)).expect("entities");
    let tool_entities = parsed
        .iter()
        .filter(|e| e.uid().type_name().to_string() == "Mcp::Tool")
        .count();
    assert_eq!(tool_entities, 4);
}

#[test]
fn rendering_is_stable_whatever_the_order_of_the_listing() {
    let base = Base::from_cedarschema(BASE).expect("base");
    let mut listed = tools(FIXTURE);
    let (declared, notes) = declare(&listed, &[]);
    let first = render_fragment(&provenance(), &listed, &[], &declared, &notes, &base);
    let first_entities = render_entities("docs", &listed, &[], &base);
    listed.reverse();
    let (declared, notes) = declare(&listed, &[]);
    let again = render_fragment(&provenance(), &listed, &[], &declared, &notes, &base);
    assert_eq!(first, again);
    assert_eq!(first_entities, render_entities("docs", &listed, &[], &base));
}

#[test]
fn every_kind_of_type_is_accepted_by_cedar_and_typed_in_a_context() {
    let base = Base::from_cedarschema(BASE).expect("base");
    let listed = tools(
        r#"{"tools":[{"name":"odd \"name\"","inputSchema":{"type":"object","properties":{
            "n":{"type":"integer"},"x":{"type":"number"},"when":{"type":"string","format":"date-time"},
            "ip":{"type":"string","format":"ipv4"},"tags":{"type":"array","items":{"type":"string"}},
            "rec":{"type":"object","properties":{"b":{"type":"boolean"}},"required":["b"]},
            "weird key \\ \"q\"":{"type":"string"}},"required":["n"]}}]}"#,
    );
    let (declared, notes) = declare(&listed, &[]);
    let fragment =
        render_fragment(&provenance(), &listed, &[], &declared, &notes, &base).expect("render");
    let schema = combined(&fragment);
    assert_eq!(read_fragment("docs", &fragment), Ok(declared));
    let action: cedar_policy::EntityUid = r#"Mcp::Action::"tools/call/docs/odd \"name\"""#
        .parse()
        .expect("uid");
    // Parsed and checked as Cedar does with the schema: `Context::from_json_value`, then
    // `Request::new` validating the context against the action's.
    let context = |arguments: Value| -> Result<(), String> {
        let context = cedar_policy::Context::from_json_value(
            serde_json::json!({ "arguments": arguments }),
            Some((&schema, &action)),
        )
        .map_err(|e| e.to_string())?;
        let principal: cedar_policy::EntityUid = r#"Mcp::User::"u""#.parse().expect("uid");
        let resource: cedar_policy::EntityUid = r#"Mcp::Tool::"docs/t""#.parse().expect("uid");
        cedar_policy::Request::new(principal, action.clone(), resource, context, Some(&schema))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(
        context(serde_json::json!({
            "n": 1, "x": "12.5", "when": "2026-12-01T10:00:00Z", "ip": "10.0.0.1",
            "tags": ["a"], "rec": {"b": true}, "weird key \\ \"q\"": "v"
        }))
        .is_ok(),
        "{fragment}"
    );
    // What Cedar refuses for such a context (the service's contract: a refused context is
    // a deny): a JSON number for a decimal, more than four decimal places, an RFC 3339
    // offset with a colon, a missing required argument, a wrong type.
    for refused in [
        serde_json::json!({"n": 1, "x": 12.5}),
        serde_json::json!({"n": 1, "x": "1.23456"}),
        serde_json::json!({"n": 1, "x": "922337203685478"}),
        serde_json::json!({"n": 1, "when": "2026-12-01T10:00:00+05:30"}),
        serde_json::json!({"x": "1.5"}),
        serde_json::json!({"n": "1"}),
        serde_json::json!({"n": 1, "undeclared": 1}),
    ] {
        assert!(context(refused.clone()).is_err(), "{refused}");
    }
}

#[test]
fn prompts_are_actions_with_string_arguments() {
    let base = Base::from_cedarschema(BASE).expect("base");
    let prompts = read_prompts(
        r#"{"prompts":[{"name":"executive_summary","description":"Summary.\nSecond line",
            "arguments":[{"name":"audience","required":true},{"name":"tone"}]}]}"#,
    )
    .expect("prompts");
    let (declared, notes) = declare(&[], &prompts);
    let from = Provenance {
        prompts_file: Some("prompts.json".into()),
        ..provenance()
    };
    let fragment = render_fragment(&from, &[], &prompts, &declared, &notes, &base).expect("render");
    combined(&fragment);
    assert!(
        fragment.contains("action \"prompts/get/docs/executive_summary\" in [\"prompts/get\"]")
    );
    assert!(
        fragment.contains("  // executive_summary: Summary. Second line\n"),
        "{fragment}"
    );
    assert_eq!(read_fragment("docs", &fragment), Ok(declared));
    assert!(render_entities("docs", &[], &prompts, &base).contains(r#""type":"Mcp::Prompt""#));
}

#[test]
fn hints_become_attributes_only_when_the_base_declares_them() {
    let listed = tools(
        r#"{"tools":[{"name":"del","annotations":{"destructiveHint":true,"readOnlyHint":false,"title":"x"}}]}"#,
    );
    let plain = Base::from_cedarschema(BASE).expect("base");
    assert!(render_entities("docs", &listed, &[], &plain).contains(r#""attrs":{}"#));
    let declaring = BASE.replace(
        "entity Tool in [Server] {",
        "entity Tool in [Server] {\n    destructiveHint?: Bool,",
    );
    let base = Base::from_cedarschema(&declaring).expect("base");
    let entities = render_entities("docs", &listed, &[], &base);
    assert!(
        entities.contains(r#""attrs":{"destructiveHint":true}"#),
        "{entities}"
    );
}

#[test]
fn drift_names_every_kind_of_change() {
    let record = |attrs: &[(&str, Ty, bool)]| {
        Record(
            attrs
                .iter()
                .map(|(k, t, r)| ((*k).to_owned(), attr(t.clone(), *r)))
                .collect(),
        )
    };
    let was = Declared {
        tools: [
            (
                "kept".to_owned(),
                record(&[("a", Ty::Long, true), ("b", Ty::String, false)]),
            ),
            ("gone".to_owned(), Record::default()),
            (
                "nested".to_owned(),
                record(&[("r", Ty::Record(record(&[("x", Ty::Long, false)])), true)]),
            ),
        ]
        .into(),
        prompts: BTreeMap::new(),
    };
    let now = Declared {
        tools: [
            (
                "kept".to_owned(),
                record(&[("a", Ty::String, true), ("c", Ty::Bool, false)]),
            ),
            ("new".to_owned(), Record::default()),
            (
                "nested".to_owned(),
                record(&[("r", Ty::Record(record(&[("x", Ty::Long, true)])), true)]),
            ),
        ]
        .into(),
        prompts: BTreeMap::new(),
    };
    assert!(drift(&was, &was, true).is_empty());
    let lines: Vec<String> = drift(&was, &now, true)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "tool `gone` removed",
            "tool `kept`: argument `a` changed from `Long` to `String`",
            "tool `kept`: argument `b` removed (was `String (optional)`)",
            "tool `kept`: argument `c` added: `Bool (optional)`",
            "tool `nested`: argument `r.x` changed from `Long (optional)` to `Long`",
            "tool `new` added",
        ]
    );
}

#[test]
fn server_names_are_checked() {
    assert!(check_server_name("docs").is_ok());
    assert!(check_server_name("my-server_2.v1").is_ok());
    for bad in ["", ".hidden", "a/b", "a b", "../x", &"x".repeat(129)] {
        assert!(check_server_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn arguments_behind_a_reference_are_typed() {
    let (record, notes) = one_tool(serde_json::json!({
        "$ref": "#/$defs/Args",
        "$defs": {"Args": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}
    }));
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(record.0.get("a"), Some(&attr(Ty::Long, true)));
    // Arguments that are not one object are not typed at all, and say so.
    let (record, notes) = one_tool(serde_json::json!({
        "oneOf": [{"type": "object", "properties": {}}, {"type": "object", "properties": {"b": {"type": "string"}}}]
    }));
    assert!(record.0.is_empty());
    assert_eq!(
        notes.iter().map(|n| n.pointer.as_str()).collect::<Vec<_>>(),
        ["/oneOf"]
    );
}

#[test]
fn two_servers_may_type_one_argument_name_two_ways() {
    let base = Base::from_cedarschema(BASE).expect("base");
    let fragment = |server: &str, ty: &str| {
        let listed = tools(&format!(
            r#"{{"tools":[{{"name":"search","inputSchema":{{"type":"object","properties":{{"amount":{{"type":"{ty}"}}}}}}}}]}}"#
        ));
        let (declared, notes) = declare(&listed, &[]);
        let from = Provenance {
            server: server.into(),
            ..provenance()
        };
        let text = render_fragment(&from, &listed, &[], &declared, &notes, &base).expect("render");
        SchemaFragment::from_cedarschema_str(&text)
            .expect("fragment")
            .0
    };
    let schema = cedar_policy::Schema::from_schema_fragments([
        SchemaFragment::from_cedarschema_str(BASE).expect("base").0,
        fragment("docs", "string"),
        fragment("payments", "integer"),
    ])
    .expect("one schema");
    let policies: cedar_policy::PolicySet = r#"
        forbid (principal, action == Mcp::Action::"tools/call/payments/search", resource)
        when { context.arguments has amount && context.arguments.amount > 100 };
        forbid (principal, action == Mcp::Action::"tools/call/docs/search", resource)
        when { context.arguments has amount && context.arguments.amount like "*secret*" };
        permit (principal, action in Mcp::Action::"tools/call", resource);
    "#
    .parse()
    .expect("policies");
    let validator = cedar_policy::Validator::new(schema);
    let result = validator.validate(&policies, cedar_policy::ValidationMode::Strict);
    assert!(
        result.validation_passed(),
        "{:?}",
        result.validation_errors().collect::<Vec<_>>()
    );
    // The same comparison on the other server's `amount` is a type error.
    let wrong: cedar_policy::PolicySet = r#"
        forbid (principal, action == Mcp::Action::"tools/call/docs/search", resource)
        when { context.arguments has amount && context.arguments.amount > 100 };
    "#
    .parse()
    .expect("policies");
    assert!(
        !validator
            .validate(&wrong, cedar_policy::ValidationMode::Strict)
            .validation_passed()
    );
}

#[test]
fn a_definition_used_twice_is_reported_once_at_its_own_pointer() {
    let listed = tools(
        r##"{"tools":[{"name":"t","inputSchema":{"type":"object",
            "properties":{"a":{"$ref":"#/$defs/U"},"b":{"$ref":"#/$defs/U"}},
            "$defs":{"U":{"type":"object","properties":{"v":{"oneOf":[{"type":"string"},{"type":"integer"}]},"w":{"type":"string"}}}}}}]}"##,
    );
    let (declared, notes) = declare(&listed, &[]);
    assert_eq!(
        notes.iter().map(|n| n.pointer.as_str()).collect::<Vec<_>>(),
        ["/$defs/U/properties/v/oneOf"]
    );
    let args = declared.tools.get("t").expect("t");
    assert_eq!(args.0.keys().collect::<Vec<_>>(), ["a", "b"]);
}
