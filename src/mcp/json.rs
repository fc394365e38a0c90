//! A strict JSON reader for bodies an authorizer decides on.
//!
//! `serde_json::from_slice::<Value>` is not enough here: it keeps the last of two
//! equal keys (`{"name":"safe","name":"evil"}`), while the MCP server behind us may
//! keep the first, and Go's `encoding/json` even matches keys case-insensitively
//! (`"NAME"` fills a field named `name`). Either way the authorizer and the server
//! would disagree on what is called. So this reader builds the same
//! [`serde_json::Value`] but refuses:
//!
//! - two equal keys in one object (compared after unescaping, so `"a"` and `"\u0061"` are equal);
//! - two keys of one object that differ only in case ([`fold`]);
//! - nesting deeper than a limit, counted by the reader itself, so the limit holds even if
//!   some crate in the build switches on serde_json's `unbounded_depth` feature, and a
//!   body of 10,000 `[` is a clean error, never a stack overflow.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonFault {
    /// Not JSON; the parser's message (position only, never the input).
    Syntax(String),
    /// Arrays and objects nested deeper than the limit.
    TooDeep,
    /// The same key twice in one object.
    DuplicateKey(String),
    /// Two keys of one object that differ only in case: the earlier, then the later.
    CaseVariantKeys(String, String),
}

/// Parse `text` as one JSON value, with at most `max_depth` levels of nested
/// arrays and objects (`{"a":[1]}` has two).
pub(crate) fn parse(text: &str, max_depth: usize) -> Result<Value, JsonFault> {
    parse_with(text, max_depth, &[])
}

/// [`parse`], except that below a member named in `free_form` (at any depth) keys
/// that differ only in case are two keys, as they are to Cedar: the attributes of a
/// caller's own `context` or `properties`. Equal keys are refused there too.
pub(crate) fn parse_with(
    text: &str,
    max_depth: usize,
    free_form: &[&str],
) -> Result<Value, JsonFault> {
    let fault = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Seed {
        depth: 0,
        max_depth,
        fault: &fault,
        fold_keys: true,
        free_form,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        // A fault recorded by the visitor is the real reason; serde_json's error
        // then only carries our placeholder message.
        Err(e) => Err(fault
            .take()
            .unwrap_or_else(|| JsonFault::Syntax(e.to_string()))),
    }
}

/// The case-folded form of a key, used to find keys that differ only in case.
///
/// Lowercase, plus the two non-ASCII letters that Go's `strings.EqualFold` (and so
/// `encoding/json`) folds onto ASCII letters: `ſ` (U+017F) onto `s` and the Kelvin
/// sign `K` (U+212A, which `to_lowercase` already maps to `k`); and the final sigma
/// onto `σ`. Borrowed when the key is already folded, as almost every key is.
pub(crate) fn fold(key: &str) -> Cow<'_, str> {
    let folded = |c: char| !c.is_ascii_uppercase() && (c.is_ascii() || c == 'σ');
    if key.chars().all(folded) {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        match c {
            'ſ' => out.push('s'),
            'ς' => out.push('σ'),
            c => out.extend(c.to_lowercase()),
        }
    }
    Cow::Owned(out)
}

/// Builds a [`Value`], one nesting level deeper per `Seed`.
#[derive(Clone, Copy)]
struct Seed<'f> {
    /// How many arrays and objects enclose the value this seed reads.
    depth: usize,
    max_depth: usize,
    fault: &'f Cell<Option<JsonFault>>,
    /// Whether keys that differ only in case are refused in the objects read.
    fold_keys: bool,
    /// Members below which keys are not folded (see [`parse_with`]).
    free_form: &'f [&'f str],
}

impl Seed<'_> {
    /// The seed for the members of an array or object read by this one, or a fault
    /// if that array or object is one level too many.
    fn enter<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth >= self.max_depth {
            return Err(self.fail(JsonFault::TooDeep));
        }
        Ok(Seed {
            depth: self.depth + 1,
            ..self
        })
    }

    fn fail<E: serde::de::Error>(self, fault: JsonFault) -> E {
        self.fault.set(Some(fault));
        E::custom("refused")
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json refuses numbers out of f64 range, so `v` is finite.
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut object = Map::new();
        // The hash of each key's folded form: a repeat is checked exactly (a hash
        // can collide), so only a real case variant is refused.
        let mut folded = FoldedKeys::default();
        while let Some(key) = map.next_key::<String>()? {
            // A repeated key folds to a hash already seen, so with folding on only
            // a seen hash needs the exact look-up: a new key's is hashed once.
            let maybe_seen = if self.fold_keys {
                !folded.insert(fold_hash(&key))
            } else {
                true
            };
            if maybe_seen && object.contains_key(&key) {
                return Err(self.fail(JsonFault::DuplicateKey(key)));
            }
            if self.fold_keys && maybe_seen {
                let f = fold(&key);
                if let Some(earlier) = object.keys().find(|k| fold(k) == f) {
                    let earlier = earlier.clone();
                    return Err(self.fail(JsonFault::CaseVariantKeys(earlier, key)));
                }
            }
            let member = Seed {
                fold_keys: inner.fold_keys && !self.free_form.contains(&key.as_str()),
                ..inner
            };
            let value = map.next_value_seed(member)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The seed of [`fold_hash`]: random per process, so that no body can be built to
/// make its keys' hashes collide (a collision costs a scan of the object's keys).
static FOLD_SEED: std::sync::LazyLock<foldhash::fast::RandomState> =
    std::sync::LazyLock::new(foldhash::fast::RandomState::default);

/// The longest ASCII key [`fold_hash`] folds on the stack.
const FOLD_ON_STACK: usize = 64;

/// The hash of [`fold`]`(key)`'s bytes: an ASCII key (nearly every key) lowercased on
/// the stack and hashed in one write, any other folded by [`fold`] itself.
fn fold_hash(key: &str) -> u64 {
    use std::hash::BuildHasher as _;
    if key.len() <= FOLD_ON_STACK && key.is_ascii() {
        let mut folded = [0u8; FOLD_ON_STACK];
        for (f, b) in folded.iter_mut().zip(key.bytes()) {
            *f = b.to_ascii_lowercase();
        }
        return FOLD_SEED.hash_one(folded.get(..key.len()).unwrap_or_default());
    }
    FOLD_SEED.hash_one(fold(key).as_bytes())
}

/// How many folded-key hashes [`FoldedKeys`] keeps in place before it takes a set.
const FEW_KEYS: usize = 16;

/// The folded-key hashes of one object: a short list kept in place (objects are
/// small: no allocation), a set once it is long, so that a huge object costs linear
/// time, not quadratic.
enum FoldedKeys {
    Few { hashes: [u64; FEW_KEYS], len: usize },
    Many(HashSet<u64>),
}

impl Default for FoldedKeys {
    fn default() -> Self {
        FoldedKeys::Few {
            hashes: [0; FEW_KEYS],
            len: 0,
        }
    }
}

impl FoldedKeys {
    /// Add `hash`; `false` if it was already there.
    fn insert(&mut self, hash: u64) -> bool {
        match self {
            FoldedKeys::Few { hashes, len } => {
                if hashes.iter().take(*len).any(|h| *h == hash) {
                    return false;
                }
                if let Some(slot) = hashes.get_mut(*len) {
                    *slot = hash;
                    *len += 1;
                    return true;
                }
                let mut set: HashSet<u64> = hashes.iter().copied().collect();
                set.insert(hash);
                *self = FoldedKeys::Many(set);
                true
            }
            FoldedKeys::Many(set) => set.insert(hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPTH: usize = 64;

    #[test]
    fn parses_what_serde_json_parses() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":"\u00e9\ud83d\ude00"}"#;
        assert_eq!(
            parse(text, DEPTH),
            Ok(serde_json::from_str::<Value>(text).unwrap_or_default())
        );
        assert_eq!(parse(" 7 ", DEPTH), Ok(json!(7)));
        assert_eq!(
            parse("18446744073709551615", DEPTH),
            Ok(json!(u64::MAX)),
            "u64 stays exact"
        );
    }

    #[test]
    fn refuses_syntax_errors_without_echoing_input() {
        for text in [
            "",
            "{",
            "[1,]",
            r#"{"a":1,}"#,
            "nul",
            "1e999",
            r#""\ud800""#,
            "{} {}",
            "{}x",
            "'a'",
            "NaN",
        ] {
            match parse(text, DEPTH) {
                Err(JsonFault::Syntax(m)) => assert!(!m.is_empty(), "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_duplicate_keys_anywhere() {
        assert_eq!(
            parse(r#"{"name":"a","name":"b"}"#, DEPTH),
            Err(JsonFault::DuplicateKey("name".into()))
        );
        assert_eq!(
            parse(r#"{"x":[{"k":1,"\u006b":2}]}"#, DEPTH),
            Err(JsonFault::DuplicateKey("k".into())),
            "escapes are compared unescaped"
        );
        assert!(parse(r#"{"a":{"k":1},"b":{"k":1}}"#, DEPTH).is_ok());
    }

    #[test]
    fn free_form_members_keep_keys_that_differ_only_in_case() {
        let free = ["context", "properties"];
        let text =
            r#"{"context":{"R":1,"r":2,"n":{"A":1,"a":2}},"subject":{"properties":{"X":1,"x":2}}}"#;
        let v = parse_with(text, DEPTH, &free).expect("parsed");
        assert_eq!(v["context"]["r"], json!(2));
        assert_eq!(v["subject"]["properties"]["X"], json!(1));
        // The envelope is still read strictly, and equal keys are refused everywhere.
        for refused in [
            r#"{"subject":{},"Subject":{}}"#,
            r#"{"context":{"a":1,"a":2}}"#,
            r#"{"context":{"n":{"a":1,"a":2}}}"#,
            r#"{"subject":{"id":"a","ID":"b","properties":{}}}"#,
        ] {
            assert!(parse_with(refused, DEPTH, &free).is_err(), "{refused}");
        }
        // Without free-form members, nothing changes.
        assert!(parse(text, DEPTH).is_err());
    }

    #[test]
    fn refuses_keys_that_differ_only_in_case() {
        assert_eq!(
            parse(r#"{"name":"a","NAME":"b"}"#, DEPTH),
            Err(JsonFault::CaseVariantKeys("name".into(), "NAME".into()))
        );
        // Go folds `ſ` onto `s` and the Kelvin sign onto `k`.
        assert_eq!(
            parse("{\"arguments\":{},\"argument\u{17f}\":{}}", DEPTH),
            Err(JsonFault::CaseVariantKeys(
                "arguments".into(),
                "argument\u{17f}".into()
            ))
        );
        assert_eq!(
            parse("{\"task\":1,\"tas\u{212a}\":2}", DEPTH),
            Err(JsonFault::CaseVariantKeys(
                "task".into(),
                "tas\u{212a}".into()
            ))
        );
        assert!(parse(r#"{"name":"a","names":"b"}"#, DEPTH).is_ok());
    }

    #[test]
    fn limits_nesting() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&nest(DEPTH), DEPTH).is_ok());
        assert_eq!(parse(&nest(DEPTH + 1), DEPTH), Err(JsonFault::TooDeep));
        assert_eq!(parse(&nest(10_000), DEPTH), Err(JsonFault::TooDeep));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
        assert_eq!(parse(&objects, DEPTH), Err(JsonFault::TooDeep));
        // Unterminated: still the depth, found before the end of the text.
        assert_eq!(parse(&"[".repeat(100_000), DEPTH), Err(JsonFault::TooDeep));
    }

    #[test]
    fn keys_that_fold_alike_hash_alike() {
        let long = "K".repeat(FOLD_ON_STACK);
        let keys = [
            "name", "NAME", "Name", "nAmE", "ſ", "s", "S", "\u{212a}", "k", "K", "σ", "ς", "Σ", "",
            "é", "É", "straße", "STRASSE", "ǅ", "ǆ", "a-b_c", "A-B_C",
        ];
        let mut all: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        all.push(long.clone());
        all.push(long.to_lowercase());
        all.push(format!("{long}K"));
        all.push(format!("{}k", long.to_lowercase()));
        all.push(format!("{}\u{212a}", long.to_lowercase()));
        for a in &all {
            for b in &all {
                if fold(a) == fold(b) {
                    assert_eq!(fold_hash(a), fold_hash(b), "{a:?} / {b:?}");
                } else {
                    assert_ne!(fold_hash(a), fold_hash(b), "{a:?} / {b:?}");
                }
            }
        }
    }

    #[test]
    fn folds_like_go() {
        assert_eq!(fold("name"), "name");
        assert!(matches!(fold("name"), Cow::Borrowed(_)));
        assert_eq!(fold("NaMe"), "name");
        assert_eq!(fold("\u{17f}\u{212a}"), "sk");
        assert_eq!(fold("ΣΑΣ"), fold("σας"));
    }

    #[test]
    fn case_variants_are_found_in_objects_of_any_size() {
        for n in [2, 15, 16, 17, 40, 2000] {
            let mut members: Vec<String> = (0..n).map(|i| format!("\"key{i}\":{i}")).collect();
            members.push("\"KEY1\":0".to_owned());
            let text = format!("{{{}}}", members.join(","));
            assert_eq!(
                parse(&text, DEPTH),
                Err(JsonFault::CaseVariantKeys("key1".into(), "KEY1".into())),
                "{n} keys"
            );
            members.pop();
            members.push("\"Key\\u017f\":0".to_owned());
            members.push("\"keys\":0".to_owned());
            let text = format!("{{{}}}", members.join(","));
            assert!(
                matches!(parse(&text, DEPTH), Err(JsonFault::CaseVariantKeys(..))),
                "{n} keys: ſ folds onto s"
            );
            members.truncate(n);
            let text = format!("{{{}}}", members.join(","));
            assert!(parse(&text, DEPTH).is_ok(), "{n} distinct keys");
        }
    }
}
