//! The direct context path against Cedar's schema-based JSON parser, on generated
//! schemas and values: every way the schema grammar spells a type (built-ins with
//! and without `__cedar::`, extension types, common types in and out of
//! namespaces, qualified and not, nested records with optional attributes, sets,
//! entity references in every JSON form), and values of the right and the wrong
//! shape. The direct path must accept exactly what Cedar accepts, build the same
//! context, and refuse what Cedar refuses.
//!
//! The cases come from a fixed seed (`MCP_AUTHZ_DIFFERENTIAL_SEED` picks another,
//! `MCP_AUTHZ_DIFFERENTIAL_SCHEMAS` runs more schemas).

use cedar_policy::Context;
use serde_json::{Map, Value, json};

use super::*;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A generated type, with how the schema spells it.
#[derive(Debug, Clone)]
enum Ty {
    String,
    Long,
    Bool,
    Ext(&'static str),
    Set(Box<Ty>),
    Record(Vec<(String, bool, Ty)>),
    /// An entity type of namespace `N` (`E`, `F`, or `En`, enumerated: `x` and `é`)
    /// or the empty one (`Z`).
    Entity(&'static str),
    /// A common type: its index in the schema's list, resolved to `Ty`.
    Common(usize, Box<Ty>),
}

const EXTENSIONS: &[&str] = &["ipaddr", "decimal", "datetime", "duration"];

/// A common type of the schema: where it is declared, its name, its body.
struct CommonType {
    in_namespace: bool,
    name: String,
    body: Ty,
}

struct Generated {
    commons: Vec<CommonType>,
    context: Ty,
}

fn gen_ty(rng: &mut Rng, depth: usize, commons: &[CommonType]) -> Ty {
    let leaf_only = depth >= 3;
    match rng.below(if leaf_only { 6 } else { 9 }) {
        0 => Ty::String,
        1 => Ty::Long,
        2 => Ty::Bool,
        3 => Ty::Ext(EXTENSIONS[rng.below(EXTENSIONS.len())]),
        4 => Ty::Entity(["E", "F", "Z", "En"][rng.below(4)]),
        5 if !commons.is_empty() => {
            let i = rng.below(commons.len());
            Ty::Common(i, Box::new(commons[i].body.clone()))
        }
        5 => Ty::Long,
        6 => Ty::Set(Box::new(gen_ty(rng, depth + 1, commons))),
        _ => {
            let n = rng.below(4);
            Ty::Record(
                (0..n)
                    .map(|i| {
                        (
                            format!("{}{i}", rng.pick(&["f", "g", "h"])),
                            rng.chance(40),
                            gen_ty(rng, depth + 1, commons),
                        )
                    })
                    .collect(),
            )
        }
    }
}

fn generate(rng: &mut Rng) -> Generated {
    let mut commons: Vec<CommonType> = Vec::new();
    for i in 0..rng.below(5) {
        let body = gen_ty(rng, 1, &commons);
        let in_namespace = rng.chance(50);
        let name = if in_namespace {
            format!("C{i}")
        } else {
            format!("G{i}")
        };
        commons.push(CommonType {
            in_namespace,
            name,
            body,
        });
    }
    let n = 1 + rng.below(4);
    let context = Ty::Record(
        (0..n)
            .map(|i| (format!("a{i}"), rng.chance(40), gen_ty(rng, 1, &commons)))
            .collect(),
    );
    Generated { commons, context }
}

/// The schema spelling of `ty` inside namespace `N` (or the empty one).
fn spell(rng: &mut Rng, ty: &Ty, commons: &[CommonType], in_namespace: bool) -> String {
    let builtin = |rng: &mut Rng, name: &str| {
        if rng.chance(50) {
            format!("__cedar::{name}")
        } else {
            name.to_owned()
        }
    };
    match ty {
        Ty::String => builtin(rng, "String"),
        Ty::Long => builtin(rng, "Long"),
        Ty::Bool => builtin(rng, "Bool"),
        Ty::Ext(e) => builtin(rng, e),
        Ty::Set(inner) => format!("Set<{}>", spell(rng, inner, commons, in_namespace)),
        Ty::Record(attrs) => {
            let fields: Vec<String> = attrs
                .iter()
                .map(|(k, optional, t)| {
                    format!(
                        "{k}{}: {}",
                        if *optional { "?" } else { "" },
                        spell(rng, t, commons, in_namespace)
                    )
                })
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        Ty::Entity("Z") => "Z".to_owned(),
        Ty::Entity(e) if in_namespace && rng.chance(50) => (*e).to_owned(),
        Ty::Entity(e) => format!("N::{e}"),
        Ty::Common(i, _) => {
            let c = &commons[*i];
            match (c.in_namespace, in_namespace) {
                (true, true) if rng.chance(50) => c.name.clone(),
                (true, _) => format!("N::{}", c.name),
                (false, _) => c.name.clone(),
            }
        }
    }
}

fn schema_text(rng: &mut Rng, g: &Generated) -> String {
    let mut empty = String::from("entity Z;\n");
    let mut ns =
        String::from("namespace N {\n  entity E;\n  entity F;\n  entity En enum [\"x\", \"é\"];\n");
    for c in &g.commons {
        let body = spell(rng, &c.body, &g.commons, c.in_namespace);
        let line = format!("  type {} = {body};\n", c.name);
        if c.in_namespace {
            ns.push_str(&line);
        } else {
            empty.push_str(&line);
        }
    }
    let context = spell(rng, &g.context, &g.commons, true);
    ns.push_str(&format!(
        "  action \"a\" appliesTo {{ principal: E, resource: E, context: {context} }};\n}}\n"
    ));
    format!("{empty}{ns}")
}

fn entity_value(rng: &mut Rng, ty: &str) -> Value {
    let ty = if ty == "Z" {
        "Z".to_owned()
    } else {
        format!("N::{ty}")
    };
    let uid = json!({ "type": ty, "id": rng.pick(&["", "x", "\"q\"", "é"]) });
    if rng.chance(50) {
        json!({ "__entity": uid })
    } else {
        uid
    }
}

fn extension_value(rng: &mut Rng, ext: &str) -> Value {
    let (good, bad): (&[&str], &[&str]) = match ext {
        "ipaddr" => (
            &["10.0.0.1", "::1", "192.168.0.0/16"],
            &["", "10.0.0.256", "x"],
        ),
        "decimal" => (
            &["1.5", "-0.0001", "922337203685477.5807"],
            &["1", "1.23456", "a"],
        ),
        "datetime" => (
            &[
                "2026-12-01",
                "2026-12-01T10:00:00Z",
                "2026-12-01T10:00:00.123+0100",
            ],
            &["2026-13-01", "yesterday", ""],
        ),
        _ => (&["1h", "-2d3h", "0ms"], &["1", "1y", ""]),
    };
    let arg = if rng.chance(75) {
        *rng.pick(good)
    } else {
        *rng.pick(bad)
    };
    if rng.chance(25) {
        let function = match ext {
            "ipaddr" => "ip",
            other => other,
        };
        json!({ "__extn": { "fn": function, "arg": arg } })
    } else {
        json!(arg)
    }
}

/// A value of `ty`, mostly of the right shape.
fn value(rng: &mut Rng, ty: &Ty) -> Value {
    if rng.chance(8) {
        return wrong(rng);
    }
    match ty {
        Ty::String => json!(rng.pick(&["", "a", "titan", "ünïcode", "1"])),
        Ty::Long => match rng.below(6) {
            0 => json!(i64::MAX),
            1 => json!(i64::MIN),
            2 => json!(u64::MAX),
            3 => json!(1.5),
            _ => json!(rng.below(1000) as i64 - 500),
        },
        Ty::Bool => json!(rng.chance(50)),
        Ty::Ext(e) => extension_value(rng, e),
        Ty::Entity(e) => entity_value(rng, e),
        Ty::Set(inner) => Value::Array((0..rng.below(4)).map(|_| value(rng, inner)).collect()),
        Ty::Record(attrs) => {
            let mut m = Map::new();
            for (k, optional, t) in attrs {
                // Optional attributes are often left out, required ones rarely.
                if rng.chance(if *optional { 40 } else { 3 }) {
                    continue;
                }
                m.insert(k.clone(), value(rng, t));
            }
            Value::Object(m)
        }
        Ty::Common(_, body) => value(rng, body),
    }
}

/// A value of some shape, whatever the type.
fn wrong(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => json!(null),
        1 => json!("s"),
        2 => json!(3),
        3 => json!(true),
        4 => json!([1, "a"]),
        5 => json!({}),
        _ => json!({ "__entity": { "type": "N::E", "id": "x" } }),
    }
}

#[test]
fn the_direct_path_agrees_with_cedar_on_generated_schemas_and_values() {
    let seed = std::env::var("MCP_AUTHZ_DIFFERENTIAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d_u64);
    let schemas: usize = std::env::var("MCP_AUTHZ_DIFFERENTIAL_SCHEMAS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let mut rng = Rng(seed | 1);
    let action: EntityUid = r#"N::Action::"a""#.parse().expect("uid");
    let resource: EntityUid = r#"N::E::"r""#.parse().expect("uid");
    let (mut loaded, mut accepted, mut refused, mut direct_hits) = (0, 0, 0, 0);
    // Cases whose signature an earlier case of the same schema was accepted with:
    // `build_context` takes them as fitting without validating them again.
    let mut known = 0;
    for _ in 0..schemas {
        let g = generate(&mut rng);
        let text = schema_text(&mut rng, &g);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("s.cedarschema"), &text).expect("write");
        std::fs::write(
            dir.path().join("p.cedar"),
            "permit (principal, action, resource);",
        )
        .expect("write");
        let snapshot = match Snapshot::load(dir.path(), 1) {
            Ok(s) => s,
            Err(problems) => panic!("generated schema does not load: {problems:?}\n{text}"),
        };
        loaded += 1;
        let shape = &snapshot.context_shapes[&action];
        let mut accepted_signatures = std::collections::HashSet::new();
        for _ in 0..25 {
            let given = value(&mut rng, &g.context);
            let Value::Object(map) = &given else {
                continue;
            };
            let mut request = DecisionRequest::new(action.clone(), resource.clone());
            request.context = map.clone();
            // The reference: Cedar's parser on the value with numbers for decimals and
            // RFC 3339 date-times in Cedar's forms (`convert`, which both paths apply).
            let cedar = super::convert::convert(shape, given.clone())
                .ok()
                .and_then(|v| Context::from_json_value(v, Some((&snapshot.schema, &action))).ok())
                .filter(|c| c.validate(&snapshot.schema, &action).is_ok());
            let mut signature = Signature::new(&snapshot.context_fits);
            let direct = direct(shape, &request, &mut signature)
                .filter(|c| c.validate(&snapshot.schema, &action).is_ok());
            if direct.is_some() && !accepted_signatures.insert(signature.bytes) {
                known += 1;
            }
            let built = build_context(&snapshot, &request).ok();
            match &cedar {
                Some(c) => {
                    accepted += 1;
                    // What Cedar accepts, the direct path builds (never falling back).
                    assert_eq!(direct.as_ref(), Some(c), "{given}\n{text}");
                    direct_hits += 1;
                }
                None => {
                    refused += 1;
                    assert_eq!(direct, None, "Cedar refuses {given}\n{text}");
                }
            }
            assert_eq!(built, cedar, "{given}\n{text}");
        }
        // `build_context` kept exactly the signatures accepted here: the known ones
        // above were answered from them.
        assert_eq!(
            snapshot.context_fits.len(),
            accepted_signatures.len(),
            "{text}"
        );
    }
    assert_eq!(loaded, schemas);
    // Both kinds of case must be well represented, or the test tests little.
    assert!(
        accepted > schemas * 3,
        "accepted {accepted}, refused {refused}"
    );
    assert!(
        refused > schemas * 3,
        "accepted {accepted}, refused {refused}"
    );
    assert_eq!(direct_hits, accepted);
    assert!(known > schemas, "{known} cases with a known signature");
}
