//! The one rule by which every header of the request Envoy describes is read: each
//! value kept apart, never joined; a security header is single or the request is
//! refused.

use std::borrow::Cow;
use std::collections::HashMap;

use super::PARTIAL_BODY_HEADER;
use crate::uri::Shown;

/// Where a header value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderSource {
    /// `CheckRequest.attributes.request.http.headers` (Envoy joins a repeated
    /// header there into one value).
    Headers,
    /// `CheckRequest.attributes.request.http.header_map` (one entry per value, with
    /// `encode_raw_headers`).
    HeaderMap,
    /// The check request of the HTTP mode.
    Http,
}

/// Why the headers of a request were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A header that must be single arrived more than once.
    #[error("the header `{0}` is sent more than once")]
    Repeated(String),
    /// A header has different values in `headers` and `header_map`.
    #[error("the header `{0}` has different values in `headers` and `header_map`")]
    Conflicting(String),
}

/// Whether the decision, or the MCP server behind Envoy, acts on the header, so
/// that it must arrive at most once: `authorization`, `content-type`, Envoy's
/// partial-body marker, every `mcp-*` header (`mcp-method`, `mcp-name`,
/// `mcp-session-id`, `mcp-protocol-version`, ...) and every `x-mcp-authz-*`
/// header (the server of the HTTP mode, and the client copies of the headers an
/// allow replaces), and `:authority`/`host` (they may name the server). `name` is in
/// lower case.
pub fn is_security_header(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "content-type" | ":authority" | "host" | PARTIAL_BODY_HEADER
    ) || name.starts_with("mcp-")
        || name.starts_with("x-mcp-authz-")
}

/// The headers of the request Envoy describes: names in lower case, and every
/// value each one arrived with, with where it came from. Values are never joined:
/// `true` in `headers` and `false` in `header_map` stay two values, so that a
/// reader can tell one header from two. Every reading goes through
/// [`Headers::get`]: one value, or a refusal.
///
/// A list in arrival order, read by scanning: a request has tens of headers (Envoy
/// bounds them), and a scan of those costs less than hashing each name, on every
/// request.
#[derive(Debug, Default, Clone)]
pub struct Headers<'a> {
    entries: Vec<Entry<'a>>,
}

#[derive(Debug, Clone)]
struct Entry<'a> {
    name: Cow<'a, str>,
    source: HeaderSource,
    value: Cow<'a, str>,
}

impl<'a> Headers<'a> {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `n` values without growing.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    /// Add one value of `name` (any case).
    pub fn add(&mut self, source: HeaderSource, name: &'a str, value: Cow<'a, str>) {
        self.entries.push(Entry {
            name: lower_case(name),
            source,
            value,
        });
    }

    /// The values of `name`, in arrival order.
    fn values<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = &'s Entry<'a>> + use<'s, 'n, 'a> {
        self.entries.iter().filter(move |e| e.name == name)
    }

    /// The value of `name` (lower case): `None` if absent. More than one value
    /// from one source (a repeated header, or two names that differ only in case),
    /// or different values in `headers` and `header_map`, are refused; the same
    /// value in both is one header that Envoy described twice.
    pub fn get(&self, name: &str) -> Result<Option<&str>, HeaderError> {
        let mut reading: Option<Reading<'_>> = None;
        for entry in self.values(name) {
            match &mut reading {
                None => reading = Some(Reading::new(entry)),
                Some(r) => r.read(entry).map_err(|f| f.error(name))?,
            }
        }
        Ok(reading.map(|r| r.first))
    }

    /// The value of `name` if it arrived once; `None` if absent or repeated. Only
    /// for headers no decision depends on (trace context, request id).
    pub fn get_lenient(&self, name: &str) -> Option<&str> {
        self.get(name).ok().flatten()
    }

    /// Every name `keep` accepts, once, in the order it first arrived, with what
    /// [`Headers::get`] reads of it: one pass over the entries, each name looked up
    /// among the names kept so far (by a scan while they are few, through a hash
    /// table once they are many), so that a request of many names costs linear time.
    fn read_named<'s>(&'s self, keep: impl Fn(&str) -> bool) -> Vec<(&'s str, Read<'s>)> {
        let mut read: Vec<(&'s str, Read<'s>)> = Vec::new();
        let mut index: HashMap<&'s str, usize> = HashMap::new();
        for entry in &self.entries {
            let name = entry.name.as_ref();
            if !keep(name) {
                continue;
            }
            let at = if read.len() < FEW_NAMES {
                read.iter().position(|(n, _)| *n == name)
            } else {
                if index.is_empty() {
                    index = read.iter().enumerate().map(|(i, (n, _))| (*n, i)).collect();
                }
                index.get(name).copied()
            };
            match at.and_then(|i| read.get_mut(i)) {
                // The first fault of a name is its answer, as in `get`.
                Some((_, slot)) => {
                    if let Ok(r) = slot
                        && let Err(fault) = r.read(entry)
                    {
                        *slot = Err(fault);
                    }
                }
                None => {
                    if !index.is_empty() {
                        index.insert(name, read.len());
                    }
                    read.push((name, Ok(Reading::new(entry))));
                }
            }
        }
        read
    }

    /// Refuse the request if any security header ([`is_security_header`]) is not
    /// single, whether or not this adapter reads it: the MCP server behind Envoy
    /// may read the other copy. Otherwise their values, read in this one pass: what
    /// every later reading of a security header goes through ([`Checked`]).
    pub fn check(&self) -> Result<Checked<'_>, HeaderError> {
        let mut values = Vec::new();
        let mut refused: Option<(&str, Fault)> = None;
        for (name, read) in self.read_named(is_security_header) {
            match read {
                Ok(reading) => values.push((name, reading.first)),
                // The same request is refused with the same message, whatever the
                // order: the first refused name in byte order.
                Err(fault) if refused.is_none_or(|(first, _)| name < first) => {
                    refused = Some((name, fault));
                }
                Err(_) => {}
            }
        }
        match refused {
            Some((name, fault)) => Err(fault.error(name)),
            None => Ok(Checked { values }),
        }
    }

    /// Every header name (lower case) with its value, for those that arrived once.
    /// The tests' reading of the headers, name by name as [`Headers::get`] reads
    /// them; the service reads the security headers through [`Headers::check`].
    #[cfg(test)]
    pub fn singles(&self) -> impl Iterator<Item = (&str, &str)> {
        self.singles_named(|_| true)
    }

    /// [`Headers::singles`] of the names `keep` accepts.
    #[cfg(test)]
    pub fn singles_named(&self, keep: impl Fn(&str) -> bool) -> impl Iterator<Item = (&str, &str)> {
        self.read_named(keep)
            .into_iter()
            .filter_map(|(name, read)| Some((name, read.ok()?.first)))
    }
}

/// The security headers of a request ([`is_security_header`]), each found single by
/// [`Headers::check`]: how the adapter reads them after the check, so that it reads
/// no security header the rule did not pass, and none twice.
#[derive(Debug, Clone)]
pub struct Checked<'s> {
    /// Every security header, once, in the order it first arrived, with its value.
    values: Vec<(&'s str, &'s str)>,
}

impl<'s> Checked<'s> {
    /// The value of the security header `name` (lower case), `None` if absent. Only
    /// security headers are here: any other name is absent.
    pub fn get(&self, name: &str) -> Option<&'s str> {
        debug_assert!(
            is_security_header(name),
            "`{name}` is not a security header"
        );
        self.named(|n| n == name).next().map(|(_, value)| value)
    }

    /// Whether Envoy saw the whole body: its marker is exactly one `false`, or there
    /// is none (Envoy adds one whenever it forwards a body). `true`, an empty value,
    /// ` false`, `FALSE`, `false,true` (Envoy's joining of two) are a partial body.
    pub fn body_is_whole(&self) -> bool {
        matches!(self.get(PARTIAL_BODY_HEADER), None | Some("false"))
    }

    /// The security headers whose name `keep` accepts, with their values, in the
    /// order they first arrived.
    pub fn named<F: Fn(&str) -> bool>(
        &self,
        keep: F,
    ) -> impl Iterator<Item = (&'s str, &'s str)> + use<'_, 's, F> {
        self.values
            .iter()
            .copied()
            .filter(move |(name, _)| keep(name))
    }
}

/// How many names [`Headers::read_named`] looks up by a scan before it takes a hash table.
const FEW_NAMES: usize = 16;

/// The values of one name read so far, in arrival order: the first, and the
/// sources seen (one value each, or the name is refused).
#[derive(Debug, Clone, Copy)]
struct Reading<'s> {
    first: &'s str,
    sources: [bool; 3],
}

/// A name's values as [`Headers::get`] reads them: the one value, or why not.
type Read<'s> = Result<Reading<'s>, Fault>;

/// Why the values of a name were refused (the name is added by [`Fault::error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Repeated,
    Conflicting,
}

impl Fault {
    fn error(self, name: &str) -> HeaderError {
        let shown = Shown(name).to_string();
        match self {
            Fault::Repeated => HeaderError::Repeated(shown),
            Fault::Conflicting => HeaderError::Conflicting(shown),
        }
    }
}

impl<'s> Reading<'s> {
    fn new(first: &'s Entry<'_>) -> Self {
        let mut sources = [false; 3];
        if let Some(seen) = sources.get_mut(first.source as usize) {
            *seen = true;
        }
        Self {
            first: first.value.as_ref(),
            sources,
        }
    }

    /// The rule for a name's next value: a second one from a source that gave one
    /// is a repeat; one that differs from the first conflicts with it.
    fn read(&mut self, entry: &Entry<'_>) -> Result<(), Fault> {
        let seen = self.sources.get_mut(entry.source as usize);
        if seen.as_deref() != Some(&false) {
            return Err(Fault::Repeated);
        }
        if entry.value != self.first {
            return Err(Fault::Conflicting);
        }
        if let Some(seen) = seen {
            *seen = true;
        }
        Ok(())
    }
}

/// `name` in lower case, copied only if it is not already.
fn lower_case(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: [HeaderSource; 3] = [
        HeaderSource::Headers,
        HeaderSource::HeaderMap,
        HeaderSource::Http,
    ];

    /// `n` values under names that repeat, from sources and with values that make
    /// some names single, some repeated, some conflicting, in arrival orders that
    /// put a name's values far apart: below and well above [`FEW_NAMES`] names.
    fn headers(n: usize, stride: usize) -> Vec<(HeaderSource, String, String)> {
        (0..n)
            .map(|i| {
                let name = match (i * stride) % 7 {
                    0 => format!("mcp-{}", i % 50),
                    1 => format!("X-Mcp-Authz-{}", i % 30),
                    2 => format!("accept-{}", i % 40),
                    3 => "Authorization".to_owned(),
                    4 => format!("mcp-{i}"),
                    5 => format!("content-type-{}", i % 3),
                    _ => format!("h{i}"),
                };
                let source = SOURCES[(i / 3) % 3];
                let value = if i % 11 == 0 { "b" } else { "a" };
                (source, name, value.to_owned())
            })
            .collect()
    }

    #[test]
    fn names_read_together_read_as_each_name_alone() {
        for n in [0, 1, 2, 15, 16, 17, 33, 100, 400] {
            for stride in [1, 3, 5] {
                let values = headers(n, stride);
                let mut h = Headers::new();
                for (source, name, value) in &values {
                    h.add(*source, name, Cow::Borrowed(value));
                }
                // Each distinct name, in the order it first arrived, read alone.
                let mut names: Vec<String> = Vec::new();
                for (_, name, _) in &values {
                    let name = name.to_ascii_lowercase();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                for prefix in ["", "mcp-", "x-mcp-authz-", "authorization", "none"] {
                    let alone: Vec<(&str, &str)> = names
                        .iter()
                        .filter(|k| k.starts_with(prefix))
                        .filter_map(|k| Some((k.as_str(), h.get(k).ok().flatten()?)))
                        .collect();
                    let together: Vec<(&str, &str)> =
                        h.singles_named(|k| k.starts_with(prefix)).collect();
                    assert_eq!(together, alone, "{n} {stride} {prefix}");
                }
                let mut security: Vec<&String> =
                    names.iter().filter(|k| is_security_header(k)).collect();
                security.sort_unstable();
                let alone = security.iter().try_for_each(|k| h.get(k).map(|_| ()));
                let checked = h.check();
                assert_eq!(
                    checked.as_ref().map(|_| ()).map_err(Clone::clone),
                    alone,
                    "{n} {stride}"
                );
                // Passed, the check hands back every security header as `get` reads
                // it, and nothing else.
                let Ok(checked) = checked else { continue };
                for k in &names {
                    let kept: Vec<(&str, &str)> = checked.named(|n| n == k).collect();
                    if is_security_header(k) {
                        let value = h.get(k).expect("passed").expect("present");
                        assert_eq!(checked.get(k), Some(value), "{n} {stride} {k}");
                        assert_eq!(kept, [(k.as_str(), value)], "{n} {stride} {k}");
                    } else {
                        assert_eq!(kept, [], "{n} {stride} {k}");
                    }
                }
                for prefix in ["mcp-", "x-mcp-authz-", "authorization"] {
                    let from_check: Vec<(&str, &str)> =
                        checked.named(|k| k.starts_with(prefix)).collect();
                    let read: Vec<(&str, &str)> =
                        h.singles_named(|k| k.starts_with(prefix)).collect();
                    assert_eq!(from_check, read, "{n} {stride} {prefix}");
                }
            }
        }
    }

    #[test]
    fn a_name_is_refused_at_its_first_fault() {
        use HeaderSource::{HeaderMap, Headers as Envoy, Http};
        let read = |values: &[(HeaderSource, &str)]| {
            let mut h = super::Headers::new();
            for (source, value) in values {
                h.add(*source, "mcp-x", Cow::Borrowed(*value));
            }
            let get = h.get("mcp-x").map(|v| v.map(str::to_owned));
            (get, h.check().map(|_| ()), h.singles().count())
        };
        let repeated = Err(HeaderError::Repeated("mcp-x".into()));
        let conflicting = Err(HeaderError::Conflicting("mcp-x".into()));
        for (values, want) in [
            (vec![(Envoy, "a")], Ok(Some("a".to_owned()))),
            (
                vec![(Envoy, "a"), (HeaderMap, "a"), (Http, "a")],
                Ok(Some("a".to_owned())),
            ),
            (vec![(Envoy, "a"), (Envoy, "a")], repeated.clone()),
            (vec![(Envoy, "a"), (HeaderMap, "b")], conflicting.clone()),
            // A repeat is named before a conflict of the same value.
            (vec![(Envoy, "a"), (Envoy, "b")], repeated.clone()),
            // The first fault in arrival order is the answer.
            (
                vec![(Envoy, "a"), (HeaderMap, "b"), (Envoy, "a")],
                conflicting.clone(),
            ),
            (
                vec![(Envoy, "a"), (HeaderMap, "a"), (HeaderMap, "b")],
                repeated.clone(),
            ),
        ] {
            let (get, check, singles) = read(&values);
            assert_eq!(get, want, "{values:?}");
            assert_eq!(
                check,
                get.as_ref().map(|_| ()).map_err(Clone::clone),
                "{values:?}"
            );
            assert_eq!(singles, usize::from(get.is_ok()), "{values:?}");
        }
    }
}
