//! Any `inputSchema` built of the types the import maps, with any property and tool names,
//! becomes a fragment Cedar accepts beside the base schema, and reads back as imported.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const BASE: &str = include_str!("../../../policies/mcp.cedarschema");
const CASES: u32 = 64;

/// Names: any characters, quotes, backslashes and control characters included.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,8}",
        any::<String>().prop_filter("not empty", |s| !s.is_empty()),
        Just("a\"b\\c".to_owned()),
        Just("line\nbreak\t\u{0}".to_owned()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"type": "string"})),
        Just(json!({"type": "integer"})),
        Just(json!({"type": "number"})),
        Just(json!({"type": "boolean"})),
        Just(json!({"type": "string", "format": "date-time"})),
        Just(json!({"type": "string", "format": "ipv6"})),
        Just(json!({"enum": ["a", "b"]})),
        Just(json!({"oneOf": [{"type": "string"}, {"type": "integer"}]})),
        Just(json!({"type": ["integer", "null"]})),
    ]
}

fn object_of(inner: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(name(), (inner, any::<bool>()), 0..5).prop_map(|props| {
        let required: Vec<&String> = props
            .iter()
            .filter(|(_, (_, r))| *r)
            .map(|(k, _)| k)
            .collect();
        let properties: Map<String, Value> = props
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        json!({"type": "object", "properties": properties, "required": required})
    })
}

fn schema() -> impl Strategy<Value = Value> {
    let value = leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|items| json!({"type": "array", "items": items})),
            object_of(inner),
        ]
    });
    object_of(value)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_mapped_schema_is_accepted_by_cedar_and_reads_back(
        tool in name(),
        input_schema in schema(),
    ) {
        let base = Base::from_cedarschema(BASE).expect("base");
        let listed = vec![ToolDef {
            name: tool,
            description: Some("any \"text\"\n*/ // here".into()),
            input_schema,
            annotations: Map::new(),
        }];
        let (declared, notes) = declare(&listed, &[]);
        let from = Provenance {
            server: "srv".into(),
            tools_file: "tools\nfile.json".into(),
            prompts_file: None,
            live: false,
        };
        let fragment = render_fragment(&from, &listed, &[], &declared, &notes, &base).expect("render");
        let parsed = SchemaFragment::from_cedarschema_str(&fragment);
        prop_assert!(parsed.is_ok(), "{:?}\n{fragment}", parsed.err());
        let combined = cedar_policy::Schema::from_schema_fragments([
            SchemaFragment::from_cedarschema_str(BASE).expect("base").0,
            parsed.expect("checked").0,
        ]);
        prop_assert!(combined.is_ok(), "{:?}\n{fragment}", combined.err());
        prop_assert_eq!(read_fragment("srv", &fragment), Ok(declared));
        let entities = render_entities("srv", &listed, &[], &base);
        prop_assert!(
            cedar_policy::Entities::from_json_str(&entities, Some(&combined.expect("checked"))).is_ok()
        );
    }
}
