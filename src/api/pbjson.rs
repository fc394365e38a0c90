//! `google.protobuf.Struct` to JSON and back. Two copies of the type exist (ours
//! from `prost-types`, Envoy's from `envoy-types`); the conversion is the same.
//!
//! A number that is a whole number within the range of a Cedar `Long` becomes a
//! JSON integer (protobuf carries every number as a double); any other number
//! stays a float, which a `Long` attribute then refuses.

use serde_json::{Map, Number, Value};

macro_rules! converters {
    ($($module:ident)::+, $struct_fn:ident, $value_fn:ident) => {
        /// The fields of a `Struct` as a JSON object.
        pub fn $struct_fn(s: &$($module)::+::Struct) -> Map<String, Value> {
            s.fields.iter().map(|(k, v)| (k.clone(), $value_fn(v))).collect()
        }

        /// A `Value` as JSON.
        pub fn $value_fn(v: &$($module)::+::Value) -> Value {
            use $($module)::+::value::Kind;
            match &v.kind {
                None | Some(Kind::NullValue(_)) => Value::Null,
                Some(Kind::NumberValue(n)) => number(*n),
                Some(Kind::StringValue(s)) => Value::String(s.clone()),
                Some(Kind::BoolValue(b)) => Value::Bool(*b),
                Some(Kind::StructValue(s)) => Value::Object($struct_fn(s)),
                Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map($value_fn).collect()),
            }
        }
    };
}

converters!(prost_types, struct_to_json, value_to_json);
converters!(
    envoy_types::pb::google::protobuf,
    envoy_struct_to_json,
    envoy_value_to_json
);

/// A JSON object as our `Struct` (numbers become doubles, as protobuf has them).
pub fn json_to_struct(object: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: object
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// JSON as our `Value`.
pub fn json_to_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn number(n: f64) -> Value {
    // 2^63 is exactly representable; every whole double below it fits an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if n.fract() == 0.0 && (-LIMIT..LIMIT).contains(&n) {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "whole and in range, checked above"
        )]
        return Value::Number(Number::from(n as i64));
    }
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{ListValue, Struct, Value as PbValue, value::Kind};

    fn v(kind: Kind) -> PbValue {
        PbValue { kind: Some(kind) }
    }

    #[test]
    fn numbers_strings_lists_and_structs() {
        let inner = Struct {
            fields: [("n".to_owned(), v(Kind::NumberValue(500.0)))]
                .into_iter()
                .collect(),
        };
        let s = Struct {
            fields: [
                ("whole".to_owned(), v(Kind::NumberValue(42.0))),
                ("half".to_owned(), v(Kind::NumberValue(0.5))),
                ("huge".to_owned(), v(Kind::NumberValue(1e300))),
                ("s".to_owned(), v(Kind::StringValue("x".into()))),
                ("b".to_owned(), v(Kind::BoolValue(true))),
                ("null".to_owned(), v(Kind::NullValue(0))),
                (
                    "list".to_owned(),
                    v(Kind::ListValue(ListValue {
                        values: vec![v(Kind::NumberValue(-3.0))],
                    })),
                ),
                ("obj".to_owned(), v(Kind::StructValue(inner))),
            ]
            .into_iter()
            .collect(),
        };
        let json = Value::Object(struct_to_json(&s));
        assert_eq!(json["whole"], serde_json::json!(42));
        assert!(json["whole"].is_i64());
        assert_eq!(json["half"], serde_json::json!(0.5));
        assert!(json["huge"].is_f64());
        assert_eq!(json["list"], serde_json::json!([-3]));
        assert_eq!(json["obj"]["n"], serde_json::json!(500));
        assert_eq!(json["null"], Value::Null);
        assert_eq!(number(f64::NAN), Value::Null);
    }

    #[test]
    fn json_to_struct_and_back() {
        let json = serde_json::json!({
            "decision_id": "d1", "n": 3, "half": 0.5, "b": false, "null": null,
            "list": ["a", 1], "obj": { "uri": "file:///x" }
        });
        let Value::Object(object) = json.clone() else {
            panic!("an object");
        };
        assert_eq!(
            Value::Object(struct_to_json(&json_to_struct(&object))),
            json
        );
    }
}
