//! The one rule by which every header of the request Envoy describes is read: each
//! value kept apart, never joined; a security header is single or the request is
//! refused.

use std::borrow::Cow;

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
        let mut values = self.values(name);
        let Some(first) = values.next() else {
            return Ok(None);
        };
        for (i, entry) in values.enumerate() {
            // The values before this one: the first and the `i` after it.
            if self
                .values(name)
                .take(i + 1)
                .any(|e| e.source == entry.source)
            {
                return Err(HeaderError::Repeated(Shown(name).to_string()));
            }
            if entry.value != first.value {
                return Err(HeaderError::Conflicting(Shown(name).to_string()));
            }
        }
        Ok(Some(first.value.as_ref()))
    }

    /// The value of `name` if it arrived once; `None` if absent or repeated. Only
    /// for headers no decision depends on (trace context, request id).
    pub fn get_lenient(&self, name: &str) -> Option<&str> {
        self.get(name).ok().flatten()
    }

    /// Every name `keep` accepts, once, in the order it first arrived.
    fn names<'s>(&'s self, keep: impl Fn(&str) -> bool + 's) -> impl Iterator<Item = &'s str> {
        self.entries.iter().enumerate().filter_map(move |(i, e)| {
            if !keep(&e.name) {
                return None;
            }
            let seen = self.entries.iter().take(i).any(|p| p.name == e.name);
            (!seen).then_some(e.name.as_ref())
        })
    }

    /// Refuse the request if any security header ([`is_security_header`]) is not
    /// single, whether or not this adapter reads it: the MCP server behind Envoy
    /// may read the other copy.
    pub fn check(&self) -> Result<(), HeaderError> {
        // The security headers are a few of the request's tens: picked out first, so
        // that only they are compared with each other.
        let mut names: Vec<&str> = self
            .entries
            .iter()
            .map(|e| e.name.as_ref())
            .filter(|n| is_security_header(n))
            .collect();
        // The same request is refused with the same message, whatever the order.
        names.sort_unstable();
        names.dedup();
        for name in names {
            self.get(name)?;
        }
        Ok(())
    }

    /// Whether Envoy saw the whole body: its marker is exactly one `false`, or there
    /// is none (Envoy adds one whenever it forwards a body). `true`, an empty value,
    /// ` false`, `FALSE`, `false,true` (Envoy's joining of two) are a partial body.
    pub fn body_is_whole(&self) -> Result<bool, HeaderError> {
        Ok(matches!(
            self.get(PARTIAL_BODY_HEADER)?,
            None | Some("false")
        ))
    }

    /// Every header name (lower case) with its value, for those that arrived once.
    pub fn singles(&self) -> impl Iterator<Item = (&str, &str)> {
        self.singles_named(|_| true)
    }

    /// [`Headers::singles`] of the names `keep` accepts: the others are never
    /// compared or read (a request has tens of headers; a reader wants a few).
    pub fn singles_named<'s>(
        &'s self,
        keep: impl Fn(&str) -> bool + 's,
    ) -> impl Iterator<Item = (&'s str, &'s str)> {
        self.names(keep)
            .filter_map(|k| Some((k, self.get(k).ok().flatten()?)))
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
