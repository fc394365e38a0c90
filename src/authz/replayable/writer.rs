//! JSON text written straight into a byte buffer: how a decision log record and its
//! replayable `input` are written, byte for byte what serde_json writes for the same
//! object (compact, keys in the order written), at a fraction of its cost.
//!
//! A record is mostly strings that need no escaping (uids, ids, digests, keys): they
//! are checked eight bytes at a time and copied whole; a string that needs escaping
//! is written by serde_json. A uid is written from the JSON text this thread keeps of
//! it, and once written in a record, copied from the record's own text when written
//! again ([`JsonWriter::uid`]). Values of any shape (context, claims, arguments) are
//! written by serde_json.

use std::collections::HashMap;
use std::hash::BuildHasher;

use cedar_policy::EntityUid;
use serde::Serialize;

/// How many uid texts a thread keeps (about 100 bytes each); then it starts over.
const UID_TEXTS: usize = 8192;

/// How many uids a writer remembers where it wrote (a record names at most a few).
const WRITTEN_UIDS: usize = 8;

/// A uid's Cedar text, and the same as a JSON string (quoted, escaped).
struct UidText {
    text: Box<str>,
    json: Box<[u8]>,
}

impl UidText {
    fn of(uid: &EntityUid) -> Self {
        let text = uid.to_string();
        let mut json = Vec::with_capacity(text.len() + 8);
        string(&mut json, &text);
        Self {
            text: text.into(),
            json: json.into(),
        }
    }
}

/// A uid and its texts.
type Kept = (EntityUid, UidText);

/// Kept uid texts: a uid's texts under a hash of its id and its type's base name
/// (hashing Cedar's uid whole costs several times as much), each with its uid, which
/// decides.
#[derive(Default)]
struct UidTexts {
    by_hash: HashMap<u64, Vec<Kept>, foldhash::fast::RandomState>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl UidTexts {
    fn hash(&self, uid: &EntityUid) -> u64 {
        self.hasher
            .hash_one((uid.id().unescaped(), uid.type_name().basename()))
    }

    fn get(&self, hash: u64, uid: &EntityUid) -> Option<&UidText> {
        let kept = self.by_hash.get(&hash)?;
        kept.iter().find(|(k, _)| k == uid).map(|(_, text)| text)
    }

    fn insert(&mut self, hash: u64, uid: EntityUid, text: UidText) {
        if self.len >= UID_TEXTS {
            self.by_hash.clear();
            self.len = 0;
        }
        self.by_hash.entry(hash).or_default().push((uid, text));
        self.len += 1;
    }
}

thread_local! {
    /// Each uid's Cedar text, as it is and as a JSON string: records and evaluations
    /// name the same few thousand uids over and over, and Cedar's text of a uid costs
    /// more than looking it up.
    static UID_TEXTS_KEPT: std::cell::RefCell<UidTexts> = std::cell::RefCell::default();
}

/// JSON text being written into a buffer. Its methods write one value each; an
/// [`Object`] writes the members of one object.
pub struct JsonWriter<'b, 'u> {
    out: &'b mut Vec<u8>,
    /// The uids written so far (the first [`WRITTEN_UIDS`]) and where in `out` their
    /// text is.
    written: [Option<(&'u EntityUid, usize, usize)>; WRITTEN_UIDS],
}

impl<'b, 'u> JsonWriter<'b, 'u> {
    /// A writer appending to `out`.
    pub fn new(out: &'b mut Vec<u8>) -> Self {
        Self {
            out,
            written: [None; WRITTEN_UIDS],
        }
    }

    /// `s` as a JSON string.
    pub fn str(&mut self, s: &str) {
        string(self.out, s);
    }

    /// `value` as serde_json writes it.
    pub fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        serde_json::to_writer(&mut *self.out, value)
    }

    /// `uid`'s Cedar text (`Mcp::User::"alice"`) as a JSON string: copied from where
    /// this writer wrote the same uid before, else from this thread's kept texts.
    pub fn uid(&mut self, uid: &'u EntityUid) {
        // The same uid (a record's fields and its input borrow the same), else an equal
        // one (a request entity's uid is the user's, cloned).
        let written = self.written.iter().map_while(|w| w.as_ref());
        let same = written
            .clone()
            .find(|(seen, ..)| std::ptr::eq(*seen, uid))
            .or_else(|| written.clone().find(|(seen, ..)| *seen == uid));
        if let Some(&(_, start, end)) = same {
            self.out.extend_from_within(start..end);
            return;
        }
        let start = self.out.len();
        with_uid_json(uid, &mut |json| self.out.extend_from_slice(json));
        if let Some(free) = self.written.iter_mut().find(|w| w.is_none()) {
            *free = Some((uid, start, self.out.len()));
        }
    }

    /// An array of `items`, each written by `write`.
    pub fn array<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut write: impl FnMut(&mut Self, T) -> serde_json::Result<()>,
    ) -> serde_json::Result<()> {
        self.out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write(self, item)?;
        }
        self.out.push(b']');
        Ok(())
    }

    /// An array of strings.
    pub fn strs(&mut self, items: &[String]) {
        // Writing strings cannot fail.
        let _ = self.array(items, |w, s| {
            w.str(s);
            Ok(())
        });
    }

    /// An array of uids' texts (see [`JsonWriter::uid`]).
    pub fn uids(&mut self, items: &'u [EntityUid]) {
        // Writing uids cannot fail.
        let _ = self.array(items, |w, u| {
            w.uid(u);
            Ok(())
        });
    }

    /// An object: its members are written through the [`Object`], which closes it
    /// when [ended](Object::end).
    pub fn object(&mut self) -> Object<'_, 'b, 'u> {
        self.out.push(b'{');
        Object {
            writer: self,
            empty: true,
        }
    }
}

/// The members of an object being written.
pub struct Object<'w, 'b, 'u> {
    writer: &'w mut JsonWriter<'b, 'u>,
    empty: bool,
}

impl<'b, 'u> Object<'_, 'b, 'u> {
    /// Member `key` (one the code names, [`key!`]): write its value through the
    /// writer returned.
    pub fn key(&mut self, key: Key) -> &mut JsonWriter<'b, 'u> {
        // `,"key":`, without its comma when first.
        let text = match key.0.split_first() {
            Some((_, first)) if self.empty => first,
            _ => key.0,
        };
        self.empty = false;
        self.writer.out.extend_from_slice(text);
        self.writer
    }

    /// Member `key` (one the data names: escaped as JSON needs): write its value
    /// through the writer returned.
    pub fn key_str(&mut self, key: &str) -> &mut JsonWriter<'b, 'u> {
        if !self.empty {
            self.writer.out.push(b',');
        }
        self.empty = false;
        string(self.writer.out, key);
        self.writer.out.push(b':');
        self.writer
    }

    /// Member `key` with the string `value`.
    pub fn str(&mut self, key: Key, value: &str) {
        self.key(key).str(value);
    }

    /// Where the next member's text starts in the buffer: the text between two
    /// positions is the members written between them, each with its leading comma.
    pub fn position(&self) -> usize {
        self.writer.out.len()
    }

    /// Members written before (the text between two [positions](Object::position), each
    /// member with its leading comma), copied whole after the members of this object so far.
    pub fn members(&mut self, text: &[u8]) {
        debug_assert!(
            text.is_empty() || (!self.empty && text.first() == Some(&b',')),
            "members follow another member, each with its comma"
        );
        self.empty &= text.is_empty();
        self.writer.out.extend_from_slice(text);
    }

    /// Close the object.
    pub fn end(self) {
        self.writer.out.push(b'}');
    }
}

/// A member's key as the code names it, as JSON text with its comma and colon
/// (`,"key":`), made when compiled by [`key!`]: written with one copy.
#[derive(Debug, Clone, Copy)]
pub struct Key(&'static [u8]);

impl Key {
    /// The key of `text`, which is `,"key":`. Panics (in [`key!`]'s constant: does not
    /// compile) when it is not, or the key holds a character JSON escapes.
    pub(crate) const fn new(text: &'static str) -> Self {
        assert!(
            matches!(text.as_bytes(), [b',', b'"', .., b'"', b':']),
            "a key's text is `,\"key\":`"
        );
        let mut key: &[u8] = match text.as_bytes() {
            [b',', b'"', key @ .., b'"', b':'] => key,
            _ => &[],
        };
        while let [b, rest @ ..] = key {
            assert!(
                *b >= 0x20 && *b != b'"' && *b != b'\\',
                "a key the code names must not need escaping"
            );
            key = rest;
        }
        Self(text.as_bytes())
    }
}

/// The [`Key`] of a literal key, made when compiled: `key!("decision_id")`.
macro_rules! key {
    ($key:literal) => {{
        const KEY: $crate::authz::replayable::Key =
            $crate::authz::replayable::Key::new(concat!(",\"", $key, "\":"));
        KEY
    }};
}
pub(crate) use key;

/// The JSON value `write` writes into a buffer, read back (`null` if it fails): how a
/// record's text is offered as a value, so that the text stays its one layout.
pub fn read_back(write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>) -> serde_json::Value {
    let mut text = Vec::new();
    write(&mut text)
        .and_then(|()| serde_json::from_slice(&text))
        .unwrap_or(serde_json::Value::Null)
}

/// `s` as a JSON string onto `out`.
fn string(out: &mut Vec<u8>, s: &str) {
    if plain(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Whether JSON writes `bytes` as they are: no control character, quote or backslash
/// (serde_json escapes exactly these). Eight bytes at a time, each word tested at once
/// for a byte below 0x20 and for a byte equal to either; the last word padded with
/// spaces.
fn plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of a byte set when some byte of `w` is below `n` (n <= 0x80), or is
    // zero: exact for "any byte", which is all that is asked.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w;
    let plain_word = |w: u64| {
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        (below(w, 0x20) | below(quote, 1) | below(backslash, 1)) & HIGH == 0
    };
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        if !plain_word(u64::from_le_bytes(w)) {
            return false;
        }
    }
    let rest = words.remainder();
    let mut last = [b' '; 8];
    for (slot, &b) in last.iter_mut().zip(rest) {
        *slot = b;
    }
    plain_word(u64::from_le_bytes(last))
}

/// `uid`'s Cedar text (`Mcp::User::"alice"`), from this thread's kept texts when it
/// has it.
pub fn uid_text(uid: &EntityUid) -> String {
    with_uid_texts(uid, &mut |text| text.text.to_string())
}

/// `f` of `uid`'s JSON text (see [`with_uid_texts`]).
fn with_uid_json<R>(uid: &EntityUid, f: &mut dyn FnMut(&[u8]) -> R) -> R {
    with_uid_texts(uid, &mut |text| f(&text.json))
}

/// `f` of `uid`'s texts, kept by this thread (made and kept the first time).
fn with_uid_texts<R>(uid: &EntityUid, f: &mut dyn FnMut(&UidText) -> R) -> R {
    let kept = UID_TEXTS_KEPT.try_with(|texts| {
        let mut texts = texts.try_borrow_mut().ok()?;
        let hash = texts.hash(uid);
        if let Some(text) = texts.get(hash, uid) {
            return Some(f(text));
        }
        let text = UidText::of(uid);
        let out = f(&text);
        texts.insert(hash, uid.clone(), text);
        Some(out)
    });
    match kept {
        Ok(Some(out)) => out,
        // No kept texts on this thread (being torn down, or in use up the stack).
        _ => f(&UidText::of(uid)),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use serde_json::json;

    use super::*;

    fn written<'u>(write: impl FnOnce(&mut JsonWriter<'_, 'u>)) -> String {
        let mut out = Vec::new();
        write(&mut JsonWriter::new(&mut out));
        String::from_utf8(out).expect("utf-8")
    }

    /// Strings of every length around the sixteen-byte step, with each character JSON
    /// escapes (and some it does not) at every position.
    fn strings() -> Vec<String> {
        let specials = [
            '"',
            '\\',
            '\n',
            '\r',
            '\t',
            '\u{0}',
            '\u{1f}',
            '\u{7f}',
            '/',
            '\u{e9}',
            '\u{2028}',
            '\u{1f600}',
        ];
        let mut out = vec![String::new()];
        for len in [1, 7, 15, 16, 17, 31, 32, 33, 40] {
            let base: String = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"
                .chars()
                .take(len)
                .collect();
            out.push(base.clone());
            for &c in &specials {
                for at in 0..len {
                    let mut s: String = base.chars().take(at).collect();
                    s.push(c);
                    s.extend(base.chars().skip(at + 1));
                    out.push(s);
                }
            }
        }
        out
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in strings() {
            assert_eq!(
                written(|w| w.str(&s)),
                serde_json::to_string(&s).expect("json"),
                "{s:?}"
            );
        }
    }

    #[test]
    fn every_character_at_every_place_of_a_word_is_written_as_serde_json_writes_it() {
        let chars = (0..=0x7f_u8).map(char::from).chain([
            '\u{80}',
            '\u{ff}',
            '\u{100}',
            '\u{2028}',
            '\u{fffd}',
            '\u{10ffff}',
        ]);
        for c in chars {
            for len in 1..=17 {
                for at in 0..len {
                    let s: String = (0..len).map(|i| if i == at { c } else { 'x' }).collect();
                    assert_eq!(
                        written(|w| w.str(&s)),
                        serde_json::to_string(&s).expect("json"),
                        "{s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn objects_and_arrays_are_written_as_serde_json_writes_them() {
        let text = written(|w| {
            let mut o = w.object();
            o.key_str("a \"key\"").str("v\n");
            o.key(key!("n")).value(&1.5).expect("value");
            o.key(key!("list"))
                .array(["x", "y\\"], |w, s| {
                    w.str(s);
                    Ok(())
                })
                .expect("array");
            o.key(key!("empty"))
                .array([0; 0], |_, _| Ok(()))
                .expect("array");
            o.members(br#","raw":{"k":[1]}"#);
            let w = o.key(key!("inner"));
            w.object().end();
            o.end();
        });
        let expected = json!({
            "a \"key\"": "v\n", "n": 1.5, "list": ["x", "y\\"], "empty": [], "raw": {"k": [1]},
            "inner": {},
        });
        assert_eq!(text, serde_json::to_string(&expected).expect("json"));
        // The first member a code-named key, then a data-named one.
        let text = written(|w| {
            let mut o = w.object();
            o.str(key!("a"), "1");
            o.key_str("b\u{1}").str("2");
            o.end();
        });
        assert_eq!(text, r#"{"a":"1","b\u0001":"2"}"#);
    }

    #[test]
    fn a_uid_is_its_cedar_text_made_kept_or_copied() {
        let uids: Vec<EntityUid> = [
            ("Mcp::User", "alice"),
            ("Mcp::User", "a\"b\\c"),
            ("Mcp::Tool", "docs/\u{fc}n\u{ef}c\u{f6}d\u{e9}"),
            ("A::B::C", "x"),
            ("Mcp::Group", "tab\tand\nnewline\u{1}"),
            ("Mcp::User", "o'neil \"q\" \\ \u{e9}\u{301} \u{1f600}"),
            (
                "Mcp::User",
                "a-very-long-user-identifier-longer-than-sixteen-bytes",
            ),
            ("Mcp::User", ""),
        ]
        .iter()
        .map(|(t, id)| {
            EntityUid::from_type_name_and_id(
                cedar_policy::EntityTypeName::from_str(t).expect("type"),
                cedar_policy::EntityId::new(id),
            )
        })
        .collect();
        for uid in &uids {
            let twin = uid.clone();
            let expected = serde_json::to_string(&uid.to_string()).expect("json");
            // Twice: made, then kept by the thread; within one writer, the same uid and
            // an equal one are copied from the first text.
            for _ in 0..2 {
                let text = written(|w| {
                    w.array([uid, uid, &twin], |w, u| {
                        w.uid(u);
                        Ok(())
                    })
                    .expect("array")
                });
                assert_eq!(text, format!("[{expected},{expected},{expected}]"));
                assert_eq!(uid_text(uid), uid.to_string());
            }
        }
        // More uids than a thread keeps: it starts over, and every text stays right.
        for i in 0..(UID_TEXTS + 10) {
            let uid = EntityUid::from_str(&format!(r#"Mcp::User::"u{i}""#)).expect("uid");
            assert_eq!(
                written(|w| w.uid(&uid)),
                format!(r#""Mcp::User::\"u{i}\"""#)
            );
        }
        assert_eq!(
            written(|w| w.uid(&uids[1])),
            serde_json::to_string(&uids[1].to_string()).expect("json")
        );
    }

    #[test]
    fn more_uids_than_a_writer_remembers_are_each_their_own_text() {
        let uids: Vec<EntityUid> = (0..WRITTEN_UIDS * 2 + 1)
            .map(|i| EntityUid::from_str(&format!("Mcp::Group::\"g{i}\"")).expect("uid"))
            .collect();
        let text = written(|w| {
            w.array(uids.iter().chain(uids.iter()), |w, u| {
                w.uid(u);
                Ok(())
            })
            .expect("array")
        });
        let texts: Vec<String> = uids.iter().map(ToString::to_string).collect();
        let both: Vec<&String> = texts.iter().chain(texts.iter()).collect();
        assert_eq!(text, serde_json::to_string(&both).expect("json"));
    }
}
