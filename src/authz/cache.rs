//! The decision cache: decisions keyed by a 128-bit keyed hash of every input of
//! the decision — the snapshot generation, both principals, the action, the
//! resource, its server, the whole context as given, and the per-request entity
//! data (token-derived groups among them). A reload changes the generation, so an
//! earlier snapshot's decision is never served; anything that varies per request
//! (a time, an address) is part of the context and so of the key.
//!
//! The hash is SipHash-1-3 with 128 bits of output and a random key per process:
//! a collision is as unlikely as guessing the key, and no caller can aim for one.

use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use siphasher::sip128::{Hasher128, SipHasher13};

use super::{Decision, DecisionRequest};

/// Cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Whether decisions are cached.
    pub enabled: bool,
    /// Most decisions kept.
    pub max_entries: u64,
    /// How long a decision is kept.
    pub ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 100_000,
            ttl: Duration::from_secs(60),
        }
    }
}

/// Hit and miss counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Decisions served from the cache.
    pub hits: u64,
    /// Decisions computed.
    pub misses: u64,
    /// Decisions held now (approximate).
    pub entries: u64,
}

/// A bounded cache of decisions.
pub struct DecisionCache {
    /// Keyed by the keyed SipHash-128 of the request ([`DecisionCache::key`]): the
    /// map hashes that digest again, with a fast seeded hash.
    entries: moka::sync::Cache<u128, Arc<Decision>, foldhash::fast::RandomState>,
    keys: (u64, u64),
    hits: AtomicU64,
    misses: AtomicU64,
    generation: AtomicU64,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl DecisionCache {
    /// An empty cache.
    pub fn new(settings: &CacheSettings) -> Self {
        let random = std::collections::hash_map::RandomState::new();
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.ttl)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            keys: (random.hash_one(1u8), random.hash_one(2u8)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// The cached decision for `request` on snapshot `generation`, or the one
    /// `compute` makes (then cached); and whether it was a hit.
    pub fn get_or_compute(
        &self,
        generation: u64,
        request: &DecisionRequest,
        compute: impl FnOnce() -> Decision,
    ) -> (Arc<Decision>, bool) {
        // A new snapshot: the old decisions can never be served again; free them.
        if self.generation.swap(generation, Ordering::Relaxed) != generation {
            self.entries.invalidate_all();
        }
        let key = self.key(generation, request);
        if let Some(d) = self.entries.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return (d, true);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let decision = Arc::new(compute());
        self.entries.insert(key, Arc::clone(&decision));
        (decision, false)
    }

    /// Hits, misses and size so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
        }
    }

    /// Finish pending maintenance (for exact counts in tests and benchmarks).
    pub fn sync(&self) {
        self.entries.run_pending_tasks();
    }

    fn key(&self, generation: u64, r: &DecisionRequest) -> u128 {
        KEY_BYTES.with_borrow_mut(|b| {
            b.clear();
            let b = &mut KeyBytes(b);
            b.u64(generation);
            b.uid(r.user.as_ref());
            b.uid(r.application.as_ref());
            b.uid(Some(&r.action));
            b.uid(Some(&r.resource));
            b.uid(r.server.as_ref());
            b.map(&r.context);
            match &r.token {
                None => b.u8(0),
                Some(t) => {
                    b.u8(1);
                    b.len(t.scopes.len());
                    for s in &t.scopes {
                        b.str(s);
                    }
                    b.map(&t.claims);
                }
            }
            b.len(r.entities.len());
            for e in &r.entities {
                b.uid(Some(&e.uid));
                b.len(e.parents.len());
                for p in &e.parents {
                    b.uid(Some(p));
                }
                b.map(&e.attrs);
            }
            // One write of the whole encoding: SipHash's per-write bookkeeping is paid
            // once, not per field.
            let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
            h.write(b.0);
            if b.0.capacity() > KEY_BYTES_KEPT {
                *b.0 = Vec::new();
            }
            h.finish128().as_u128()
        })
    }
}

/// Most bytes of a key's encoding kept between requests (per thread).
const KEY_BYTES_KEPT: usize = 64 * 1024;

thread_local! {
    /// The encoding of the request being keyed, reused by the next one on this thread.
    static KEY_BYTES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A request encoded for its key: every piece with a tag or its length in front, so
/// that two different requests never give the same bytes (`A::"x"` and the like can
/// never run together).
struct KeyBytes<'a>(&'a mut Vec<u8>);

impl KeyBytes<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn uid(&mut self, uid: Option<&cedar_policy::EntityUid>) {
        match uid {
            None => self.u8(0),
            Some(u) => {
                self.u8(1);
                // Type and id separately; the type's pieces without formatting it.
                let t = u.type_name();
                for part in t.namespace_components() {
                    self.u8(1);
                    self.str(part);
                }
                self.u8(0);
                self.str(t.basename());
                self.str(u.id().unescaped());
            }
        }
    }

    fn map(&mut self, m: &Map<String, Value>) {
        // In the map's order (serde_json keeps insertion order, as Cedar needs): the same
        // object in the same order encodes the same, and a record written of the request
        // (the decision log keeps one text per shared decision) writes that order too.
        self.len(m.len());
        for (k, v) in m {
            self.str(k);
            self.value(v);
        }
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.u8(0),
            Value::Bool(b) => {
                self.u8(1);
                self.u8(u8::from(*b));
            }
            Value::Number(n) => {
                self.u8(2);
                // The number's text, with its length in front.
                let at = self.0.len();
                self.u64(0);
                // Writing to a `Vec` cannot fail.
                let _ = write!(self.0, "{n}");
                let n = (self.0.len() - at - 8) as u64;
                if let Some(slot) = self.0.get_mut(at..at + 8) {
                    slot.copy_from_slice(&n.to_le_bytes());
                }
            }
            Value::String(s) => {
                self.u8(3);
                self.str(s);
            }
            Value::Array(a) => {
                self.u8(4);
                self.len(a.len());
                for x in a {
                    self.value(x);
                }
            }
            Value::Object(o) => {
                self.u8(5);
                self.map(o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::RequestEntity;
    use crate::mcp::{Kind, action};
    use serde_json::json;

    fn request() -> DecisionRequest {
        let mut r = DecisionRequest::new(action("tools/call"), Kind::Tool.uid("docs/t"));
        r.user = Some(Kind::User.uid("u"));
        r.application = Some(Kind::Application.uid("a"));
        r.server = Some(Kind::Server.uid("docs"));
        r.context
            .insert("arguments".into(), json!({ "q": "x", "n": 1 }));
        r
    }

    #[test]
    fn every_input_changes_the_key() {
        let c = DecisionCache::new(&CacheSettings::default());
        let base = c.key(1, &request());
        assert_eq!(base, c.key(1, &request()));
        assert_ne!(base, c.key(2, &request()));
        type Change = Box<dyn Fn(&mut DecisionRequest)>;
        let variants: Vec<Change> = vec![
            Box::new(|r| r.user = Some(Kind::User.uid("v"))),
            Box::new(|r| r.user = None),
            Box::new(|r| r.application = Some(Kind::Application.uid("b"))),
            Box::new(|r| r.action = action("prompts/get")),
            Box::new(|r| r.resource = Kind::Tool.uid("docs/u")),
            Box::new(|r| r.resource = Kind::Prompt.uid("docs/t")),
            Box::new(|r| r.server = None),
            Box::new(|r| {
                r.context
                    .insert("arguments".into(), json!({ "q": "y", "n": 1 }));
            }),
            Box::new(|r| {
                r.context
                    .insert("arguments".into(), json!({ "q": "x", "n": "1" }));
            }),
            Box::new(|r| {
                r.context
                    .insert("arguments".into(), json!({ "q": "x", "n": 1.0 }));
            }),
            Box::new(|r| {
                r.token = Some(super::super::TokenFacts {
                    scopes: vec!["a".into()],
                    claims: Map::new(),
                });
            }),
            Box::new(|r| {
                r.token = Some(super::super::TokenFacts::default());
            }),
            Box::new(|r| {
                let mut claims = Map::new();
                claims.insert("tenant".into(), json!("t1"));
                r.token = Some(super::super::TokenFacts {
                    scopes: Vec::new(),
                    claims,
                });
            }),
            Box::new(|r| {
                r.entities.push(RequestEntity {
                    uid: Kind::User.uid("u"),
                    parents: vec![Kind::Group.uid("g")],
                    attrs: Map::new(),
                });
            }),
            Box::new(|r| {
                r.entities.push(RequestEntity {
                    uid: Kind::User.uid("u"),
                    parents: Vec::new(),
                    attrs: Map::from_iter([("level".to_owned(), json!(3))]),
                });
            }),
            Box::new(|r| {
                r.server = Some(Kind::Server.uid("mail"));
            }),
            Box::new(|r| {
                r.context
                    .insert("request".into(), json!({ "ip": "10.0.0.1" }));
            }),
            // The same arguments in another order: a record writes them in their order.
            Box::new(|r| {
                r.context
                    .insert("arguments".into(), json!({ "n": 1, "q": "x" }));
            }),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut r = request();
            change(&mut r);
            assert_ne!(base, c.key(1, &r), "variant {i} shares the key");
        }
        // Different groups never share an entry.
        let with_group = |g: &str| {
            let mut r = request();
            r.entities.push(RequestEntity {
                uid: Kind::User.uid("u"),
                parents: vec![Kind::Group.uid(g)],
                attrs: Map::new(),
            });
            c.key(1, &r)
        };
        assert_ne!(with_group("a"), with_group("b"));
        // Strings cannot run together across fields.
        let mut a = request();
        a.context = [("ab".to_owned(), json!("c"))].into_iter().collect();
        let mut b = request();
        b.context = [("a".to_owned(), json!("bc"))].into_iter().collect();
        assert_ne!(c.key(1, &a), c.key(1, &b));
    }

    #[test]
    fn hits_and_misses_are_counted_and_a_new_generation_clears() {
        let c = DecisionCache::new(&CacheSettings::default());
        let make = |allow| Decision {
            allow,
            reason: crate::authz::Reason::new(crate::authz::ReasonKind::Allowed, ""),
            evaluations: Vec::new(),
            generation: 1,
            policy_digest: std::sync::Arc::from("sha256:test"),
        };
        assert!(c.get_or_compute(1, &request(), || make(true)).0.allow);
        assert!(c.get_or_compute(1, &request(), || make(false)).0.allow);
        assert_eq!((c.stats().hits, c.stats().misses), (1, 1));
        assert!(!c.get_or_compute(2, &request(), || make(false)).0.allow);
        c.sync();
        assert_eq!(c.stats().entries, 1);
    }
}
