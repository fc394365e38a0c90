//! Resource URIs in one normal form: the rule every interface applies before a
//! resource URI becomes an `Mcp::Resource` entity. Pure functions, no I/O, and no
//! imports from the rest of the crate (the policy loader uses it too).
//!
//! A resource URI must be decided as the resource the MCP server will serve. MCP
//! SDKs may resolve a URI before they look the resource up (the TypeScript SDK's
//! `McpServer` does it with `new URL(uri)`, a WHATWG URL parser; so does pydantic's
//! `AnyUrl` wherever a Python server wraps a URI in it), so
//! `docs://finance/x/../budget-2026` reaches the resource `docs://finance/budget-2026`. Had the alias become an entity of its own, it
//! would be an unlisted child of the server without the attributes that
//! attribute-based forbids read. So [`normalize`] either turns a URI into the
//! one form that every equivalent spelling shares, or refuses it (a deny with
//! the reason): a URI is never decided under a name the server does not use.
//!
//! # Normalized (RFC 3986 §6.2.2 and the scheme-based rules of §6.2.3)
//!
//! | what | normal form | why |
//! |---|---|---|
//! | scheme case | lower case (`DOCS:` → `docs:`) | case-insensitive (§3.1); WHATWG lower-cases it too |
//! | host case | lower case (`docs://FINANCE/` → `docs://finance/`) | case-insensitive (§3.2.2); a WHATWG server keeps a custom scheme's host case, so this can only deny more, for a server that would not find the upper-case name |
//! | percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) | decoded (`%66inance` → `finance`, `%2e` → `.`) | §6.2.2.2 |
//! | other percent-encodings | kept, hex digits upper case (`%c3%a9` → `%C3%A9`) | §6.2.2.1 |
//! | non-ASCII characters in the path or query | UTF-8 percent-encoded (`é` → `%C3%A9`) | what WHATWG parsers and RFC 3987 (IRI to URI) both do |
//! | dot segments `.` and `..` (also `%2e`, `%2E%2e`, ...) | removed per §5.2.4 (`a/./b/../c` → `a/c`; `..` never climbs above the root) | WHATWG parsers remove them the same way |
//! | IPv6 hosts | the canonical text of RFC 5952 (`[0:0::1]` → `[::1]`) | one address, one spelling |
//! | ports | decimal without leading zeros; the default port of `http`/`ws` (80), `https`/`wss` (443), `ftp` (21) dropped | §6.2.3 |
//! | empty path of `http`, `https`, `ws`, `wss`, `ftp`, `file` | `/` | §6.2.3; WHATWG does the same |
//! | `file:/path`, `file://localhost/path` | `file:///path` | RFC 8089; WHATWG does the same |
//!
//! # Refused
//!
//! | what | why |
//! |---|---|
//! | empty, or longer than [`MAX_URI_BYTES`] | nothing to decide / a limit |
//! | no scheme (`budget-2026`, `//finance/x`, `/x`) | MCP resources are named by absolute URIs; a relative reference has no single meaning |
//! | whitespace or control characters anywhere (also leading/trailing), invisible formatting characters (zero-width, bidi, BOM, soft hyphen) | WHATWG parsers strip leading/trailing spaces and remove tabs and newlines anywhere, others keep them: two readings |
//! | backslashes, literal or `%5C` in a path | WHATWG reads `\` as `/` in `http`/`https`/`file` URIs, other parsers do not |
//! | `%2F` in a path | a server that decodes before splitting reads another path (`x%2F..%2Fbudget` → `budget`) |
//! | user information (`docs://@finance/`, `docs://x@finance/`) | WHATWG drops an empty one (`@finance` is `finance`), keeps others; no MCP resource needs one |
//! | an empty port (`docs://finance:/`), a port above 65535 or not decimal | WHATWG drops an empty port; a port is digits |
//! | percent-encoded characters in a host other than unreserved ones, non-ASCII hosts, empty host labels (`finance.`, `a..b`) | IDNA mapping and DNS's trailing dot give one host several spellings; write international names in their `xn--` form |
//! | a host of `http`/`https`/`ws`/`wss`/`ftp`/`file` that ends in a number but is not a dotted-decimal IPv4 address (`0x7f.1`, `2130706433`) | WHATWG reads those as IPv4 addresses |
//! | missing host for `http`/`https`/`ws`/`wss`/`ftp`; any other form than `scheme://host/...` for them (`http:x`, `http:/x`) | WHATWG reads all of these as `scheme://x` |
//! | an empty path segment (`docs://finance//budget`), except a trailing `/` | a server reading the path as a file path collapses `//` |
//! | `.` or `..` segments in a path without a leading `/` (`urn:a/../b`) | RFC 3986 would remove them, WHATWG keeps such an opaque path as it is |
//! | `..` in a `file:` path that starts with a drive letter (`file:///C:/../x`) | WHATWG never removes the drive letter, RFC 3986 does |
//! | percent-encoded control or invisible characters (`%00`, `%7F`, `%C2%85`, `%E2%80%8B`) and percent-encodings that are not UTF-8 (`%FF`, the overlong `%C0%AE`) | a server decoding them reads a name no one can write, or none at all |
//! | `%` not followed by two hex digits | not a URI |
//! | `%25` followed by two hex digits in the normal form (`%252e`) | a server that decodes twice reads a `.` or `/` there |
//! | ASCII characters a URI may not hold literally (`"`, `<`, `>`, `^`, `` ` ``, `{`, `\|`, `}`, `[`/`]` outside an IPv6 host) | WHATWG percent-encodes some of them and keeps others: write them percent-encoded |
//! | a fragment (`#...`), an empty query (a trailing `?`) | a fragment is not part of the resource (§3.5), but WHATWG servers look it up with it; a trailing `?` is kept by some parsers and dropped by others |
//!
//! A query is part of the resource (§3.4) and is kept, normalized like the path
//! (without dot segments).
//!
//! # URI templates
//!
//! [`normalize_template`] applies the same rules to an RFC 6570 URI template (what
//! `resources/templates/list` lists and `completion/complete` names), keeping each
//! `{...}` expression as written (after checking its syntax). Dot segments are
//! refused in templates rather than removed: an expression may expand to several
//! segments, so removing them from the template would not match the expanded URI.
//!
//! # Entity ids
//!
//! [`normal_resource_id`] is the form of an `Mcp::Resource` id, `<server>/<uri>`:
//! the server as it is, the URI (or URI template) in normal form. Entity data and
//! policies naming a resource must use it (the policy loader checks).

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// The longest resource URI or URI template read, in bytes (8 KiB).
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The entity type whose ids are `<server>/<uri>` ([`normal_resource_id`]).
pub const RESOURCE_TYPE: &str = "Mcp::Resource";

/// Why a URI has no normal form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The URI is the empty string.
    #[error("the URI is empty")]
    Empty,
    /// Longer than [`MAX_URI_BYTES`], as given or in normal form.
    #[error("the URI is longer than {MAX_URI_BYTES} bytes")]
    TooLong,
    /// A relative reference, or no `scheme:` at the start.
    #[error("the URI has no scheme (`scheme:...`)")]
    NoScheme,
    /// The scheme has characters a scheme may not have.
    #[error("the scheme is not a letter followed by letters, digits, `+`, `-` or `.`")]
    BadScheme,
    /// Whitespace anywhere.
    #[error("the URI contains whitespace")]
    Whitespace,
    /// A control character anywhere.
    #[error("the URI contains a control character")]
    ControlCharacter,
    /// An invisible formatting character (zero-width, bidi control, BOM, soft hyphen).
    #[error("the URI contains an invisible formatting character")]
    Invisible,
    /// A backslash.
    #[error("the URI contains a backslash")]
    Backslash,
    /// An ASCII character a URI may not hold literally.
    #[error("`{0}` must be percent-encoded")]
    Disallowed(char),
    /// `%` not followed by two hex digits.
    #[error("`%` is not followed by two hex digits")]
    BadEscape,
    /// Percent-encoded bytes that are not UTF-8.
    #[error("a percent-encoded sequence is not UTF-8")]
    NotUtf8,
    /// A percent-encoded control or invisible character.
    #[error("the URI percent-encodes a control or invisible character")]
    EncodedControl,
    /// `%25` followed by two hex digits: what a server decoding twice reads differently.
    #[error("the URI percent-encodes `%` before two hex digits (double encoding)")]
    DoubleEncoding,
    /// `%2F` or `%5C` in a path.
    #[error("the path percent-encodes `/` or `\\`")]
    EncodedSeparator,
    /// User information before the host.
    #[error("the URI has user information (`...@` before the host)")]
    UserInfo,
    /// `host:` with nothing after the colon.
    #[error("the port is empty (`host:` with nothing after the colon)")]
    EmptyPort,
    /// A port that is not a decimal number up to 65535.
    #[error("the port is not a number from 0 to 65535")]
    BadPort,
    /// A host that has no single spelling.
    #[error("the host {0}")]
    BadHost(&'static str),
    /// A scheme's required form is not respected.
    #[error("`{0}:` URIs are written `{0}://host/path`")]
    SchemeForm(&'static str),
    /// `file:` in another form than `file:///path` or `file://host/path`.
    #[error("`file:` URIs are written `file:///path` or `file://host/path`")]
    FileForm,
    /// An empty segment (`//`) in a path.
    #[error("the path has an empty segment (`//`)")]
    EmptySegment,
    /// `.` or `..` in a path without a leading `/`.
    #[error("a path without a leading `/` has a `.` or `..` segment")]
    OpaqueDotSegment,
    /// `..` after a drive letter in a `file:` path.
    #[error("a `file:` path starting with a drive letter has a `..` segment")]
    DriveDotSegment,
    /// `.` or `..` in a URI template.
    #[error("a URI template has a `.` or `..` segment")]
    TemplateDotSegment,
    /// A fragment.
    #[error("the URI has a fragment (`#...`): it is not part of the resource")]
    Fragment,
    /// A `?` with no query after it.
    #[error("the query is empty (`?` with nothing after it)")]
    EmptyQuery,
    /// A template expression that is not RFC 6570.
    #[error("a URI template expression (`{{...}}`) is malformed")]
    BadExpression,
    /// An `Mcp::Resource` id that is not `<server>/<uri>`.
    #[error("the id is not `server/uri`")]
    NotServerAndUri,
}

/// The normal form of the resource URI `uri`, or why it has none. See the module
/// documentation. Idempotent: the normal form of a normal form is itself.
pub fn normalize(uri: &str) -> Result<String, UriError> {
    Parser { template: false }.run(uri)
}

/// The normal form of the URI template `template` (RFC 6570): the rules of
/// [`normalize`] for everything outside `{...}` expressions, which are kept as
/// written; dot segments are refused.
pub fn normalize_template(template: &str) -> Result<String, UriError> {
    Parser { template: true }.run(template)
}

/// The normal form of an `Mcp::Resource` id, `<server>/<uri>`: the URI part as
/// [`normalize`] (or [`normalize_template`], when it holds `{` or `}`) writes it.
pub fn normal_resource_id(id: &str) -> Result<String, UriError> {
    let Some((server, uri)) = id.split_once('/') else {
        return Err(UriError::NotServerAndUri);
    };
    if server.is_empty() || uri.is_empty() {
        return Err(UriError::NotServerAndUri);
    }
    let uri = if uri.contains(['{', '}']) {
        normalize_template(uri)?
    } else {
        normalize(uri)?
    };
    Ok(format!("{server}/{uri}"))
}

/// Schemes WHATWG parsers treat specially, with their default ports.
const SPECIAL: &[(&str, Option<u16>)] = &[
    ("http", Some(80)),
    ("https", Some(443)),
    ("ws", Some(80)),
    ("wss", Some(443)),
    ("ftp", Some(21)),
    ("file", None),
];

/// Characters no spelling of a resource may hold: removed or kept depending on
/// the parser, and invisible to whoever reads the URI.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Which component a piece of a URI is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Host,
    /// A path with a leading `/` or after an authority: segments mean something.
    Path,
    /// A path without authority and without a leading `/` (`urn:isbn:...`).
    Opaque,
    Query,
}

impl Part {
    /// Whether the ASCII character `b` may stand literally in this part.
    fn allows(self, b: u8) -> bool {
        let pchar = unreserved(b) || sub_delim(b) || b == b':' || b == b'@';
        match self {
            Part::Host => unreserved(b) || sub_delim(b),
            Part::Path | Part::Opaque => pchar || b == b'/',
            Part::Query => pchar || b == b'/' || b == b'?',
        }
    }
}

struct Parser {
    template: bool,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, b: u8) {
    use std::fmt::Write;
    // Writing to a `String` cannot fail.
    let _ = write!(out, "%{b:02X}");
}

/// The length of the UTF-8 sequence that `lead` starts, if it can start one.
fn utf8_len(lead: u8) -> Option<usize> {
    match lead {
        0xC2..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF4 => Some(4),
        _ => None,
    }
}

impl Parser {
    fn run(&self, input: &str) -> Result<String, UriError> {
        if input.is_empty() {
            return Err(UriError::Empty);
        }
        if input.len() > MAX_URI_BYTES {
            return Err(UriError::TooLong);
        }
        for c in input.chars() {
            if c.is_control() {
                return Err(UriError::ControlCharacter);
            }
            if c.is_whitespace() {
                return Err(UriError::Whitespace);
            }
            if invisible(c) {
                return Err(UriError::Invisible);
            }
            if c == '\\' {
                return Err(UriError::Backslash);
            }
        }

        // scheme ":"
        let colon = self.find(input, b":/?#")?;
        let (scheme, rest) = match colon {
            Some(i) if input.as_bytes().get(i) == Some(&b':') => {
                (input.get(..i).unwrap_or_default(), input.get(i + 1..))
            }
            _ => return Err(UriError::NoScheme),
        };
        let rest = rest.unwrap_or_default();
        let scheme = scheme_of(scheme)?;
        let special = SPECIAL.iter().find(|(s, _)| *s == scheme);

        // [ "#" fragment ] — refused.
        if self.find(rest, b"#")?.is_some() {
            return Err(UriError::Fragment);
        }
        // [ "?" query ]
        let (hier, query) = match self.find(rest, b"?")? {
            Some(i) => (
                rest.get(..i).unwrap_or_default(),
                Some(rest.get(i + 1..).unwrap_or_default()),
            ),
            None => (rest, None),
        };
        // [ "//" authority ] path
        let (authority, path) = match hier.strip_prefix("//") {
            Some(after) => {
                let end = self.find(after, b"/")?.unwrap_or(after.len());
                (
                    Some(after.get(..end).unwrap_or_default()),
                    after.get(end..).unwrap_or_default(),
                )
            }
            None => (None, hier),
        };

        let mut out = String::with_capacity(input.len() + 8);
        out.push_str(&scheme);
        out.push(':');
        let mut path = path.to_owned();
        match special {
            Some((name, default_port)) if *name != "file" => {
                let Some(authority) = authority else {
                    return Err(UriError::SchemeForm(name));
                };
                out.push_str("//");
                self.authority(authority, true, *default_port, &mut out)?;
                if path.is_empty() {
                    path.push('/');
                }
            }
            Some(_) => {
                // file: `file:///path`, `file://host/path`, or `file:/path`.
                let authority = match authority {
                    Some(a) => a,
                    None if path.starts_with('/') => "",
                    None => return Err(UriError::FileForm),
                };
                if authority.contains(':') {
                    return Err(UriError::FileForm);
                }
                out.push_str("//");
                let host_start = out.len();
                self.authority(authority, true, None, &mut out)?;
                if out.get(host_start..) == Some("localhost") {
                    out.truncate(host_start);
                }
                if path.is_empty() {
                    path.push('/');
                }
            }
            None => {
                if let Some(authority) = authority {
                    out.push_str("//");
                    self.authority(authority, false, None, &mut out)?;
                }
            }
        }

        let part = if authority.is_some() || path.starts_with('/') {
            Part::Path
        } else {
            Part::Opaque
        };
        let mut normal_path = String::with_capacity(path.len());
        self.component(&path, part, &mut normal_path)?;
        let normal_path = self.segments(&normal_path, part, scheme == "file")?;
        out.push_str(&normal_path);

        if let Some(query) = query {
            if query.is_empty() {
                return Err(UriError::EmptyQuery);
            }
            out.push('?');
            self.component(query, Part::Query, &mut out)?;
        }
        if has_double_encoding(&out) {
            return Err(UriError::DoubleEncoding);
        }
        if out.len() > MAX_URI_BYTES {
            return Err(UriError::TooLong);
        }
        Ok(out)
    }

    /// The first of `delims` in `s`, outside template expressions.
    fn find(&self, s: &str, delims: &[u8]) -> Result<Option<usize>, UriError> {
        let bytes = s.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if self.template && b == b'{' {
                i = expression_end(s, i)?;
                continue;
            }
            if self.template && b == b'}' {
                return Err(UriError::BadExpression);
            }
            if delims.contains(&b) {
                return Ok(Some(i));
            }
            i += 1;
        }
        Ok(None)
    }

    /// `host [ ":" port ]`, written to `out`. `special`: a scheme WHATWG parsers
    /// read hosts of as domain names or IPv4 addresses.
    fn authority(
        &self,
        authority: &str,
        special: bool,
        default_port: Option<u16>,
        out: &mut String,
    ) -> Result<(), UriError> {
        if self.find(authority, b"@")?.is_some() {
            return Err(UriError::UserInfo);
        }
        let (host, port) = if authority.starts_with('[') {
            let end = authority
                .find(']')
                .ok_or(UriError::BadHost("has `[` without `]`"))?;
            let (host, after) = authority.split_at(end + 1);
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(UriError::BadHost("has characters after `]`")),
            }
        } else {
            match self.find(authority, b":")? {
                Some(i) => (
                    authority.get(..i).unwrap_or_default(),
                    authority.get(i + 1..),
                ),
                None => (authority, None),
            }
        };

        if let Some(inner) = host.strip_prefix('[') {
            let inner = inner.strip_suffix(']').unwrap_or(inner);
            let address = Ipv6Addr::from_str(inner)
                .map_err(|_| UriError::BadHost("in brackets is not an IPv6 address"))?;
            out.push('[');
            out.push_str(&address.to_string());
            out.push(']');
        } else {
            let start = out.len();
            self.component(host, Part::Host, out)?;
            let normal = out.get(start..).unwrap_or_default();
            if special && normal.is_empty() && default_port.is_some() {
                return Err(UriError::BadHost("is missing"));
            }
            if !normal.is_empty() && normal.split('.').any(str::is_empty) {
                return Err(UriError::BadHost("has an empty label (`a..b`, `.a`, `a.`)"));
            }
            if special && ends_in_number(normal) && !is_dotted_ipv4(normal) {
                return Err(UriError::BadHost(
                    "ends in a number but is not an IPv4 address `a.b.c.d`",
                ));
            }
        }

        match port {
            None => {}
            Some("") => return Err(UriError::EmptyPort),
            Some(p) if self.template && p.starts_with('{') => {
                // A port given by an expression: kept as written.
                if expression_end(p, 0)? != p.len() {
                    return Err(UriError::BadPort);
                }
                out.push(':');
                out.push_str(p);
            }
            Some(p) => {
                if !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(UriError::BadPort);
                }
                let digits = p.trim_start_matches('0');
                if digits.len() > 5 {
                    return Err(UriError::BadPort);
                }
                let n: u32 = if digits.is_empty() {
                    0
                } else {
                    digits.parse().map_err(|_| UriError::BadPort)?
                };
                let n = u16::try_from(n).map_err(|_| UriError::BadPort)?;
                if Some(n) != default_port {
                    out.push(':');
                    out.push_str(&n.to_string());
                }
            }
        }
        Ok(())
    }

    /// One component, characters normalized, appended to `out`.
    fn component(&self, s: &str, part: Part, out: &mut String) -> Result<(), UriError> {
        let bytes = s.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                i = self.escapes(s, i, part, out)?;
            } else if self.template && b == b'{' {
                let end = expression_end(s, i)?;
                out.push_str(s.get(i..end).unwrap_or_default());
                i = end;
            } else if b.is_ascii() {
                if !part.allows(b) {
                    return Err(UriError::Disallowed(char::from(b)));
                }
                out.push(char::from(if part == Part::Host {
                    b.to_ascii_lowercase()
                } else {
                    b
                }));
                i += 1;
            } else {
                let c = s.get(i..).and_then(|r| r.chars().next()).unwrap_or('\0');
                if part == Part::Host {
                    return Err(UriError::BadHost(
                        "is not ASCII: write an international name in its `xn--` form",
                    ));
                }
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    push_escaped(out, b);
                }
                i += c.len_utf8();
            }
        }
        Ok(())
    }

    /// A run of percent-encodings starting at `start`: unreserved characters
    /// decoded, the rest kept with upper-case hex. Returns where the run ends.
    fn escapes(
        &self,
        s: &str,
        start: usize,
        part: Part,
        out: &mut String,
    ) -> Result<usize, UriError> {
        let bytes = s.as_bytes();
        let mut decoded = Vec::new();
        let mut i = start;
        while bytes.get(i) == Some(&b'%') {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(UriError::BadEscape);
            };
            decoded.push((h << 4) | l);
            i += 3;
        }
        let mut k = 0;
        while let Some(&b) = decoded.get(k) {
            if b.is_ascii() {
                if unreserved(b) {
                    out.push(char::from(if part == Part::Host {
                        b.to_ascii_lowercase()
                    } else {
                        b
                    }));
                } else if b.is_ascii_control() {
                    return Err(UriError::EncodedControl);
                } else if part == Part::Host {
                    return Err(UriError::BadHost(
                        "percent-encodes characters other than letters, digits, `-`, `.`, `_` and `~`",
                    ));
                } else if part == Part::Path && (b == b'/' || b == b'\\') {
                    return Err(UriError::EncodedSeparator);
                } else {
                    push_escaped(out, b);
                }
                k += 1;
                continue;
            }
            let len = utf8_len(b).ok_or(UriError::NotUtf8)?;
            let sequence = decoded.get(k..k + len).ok_or(UriError::NotUtf8)?;
            let text = std::str::from_utf8(sequence).map_err(|_| UriError::NotUtf8)?;
            if text.chars().any(|c| c.is_control() || invisible(c)) {
                return Err(UriError::EncodedControl);
            }
            if part == Part::Host {
                return Err(UriError::BadHost(
                    "is not ASCII: write an international name in its `xn--` form",
                ));
            }
            for &b in sequence {
                push_escaped(out, b);
            }
            k += len;
        }
        Ok(i)
    }

    /// The path's segments checked, and dot segments removed (RFC 3986 §5.2.4).
    fn segments(&self, path: &str, part: Part, file: bool) -> Result<String, UriError> {
        let segments = self.split(path)?;
        let dot = |s: &&str| *s == "." || *s == "..";
        if part == Part::Opaque {
            if segments.iter().any(dot) {
                return Err(UriError::OpaqueDotSegment);
            }
            return Ok(path.to_owned());
        }
        if path.is_empty() {
            return Ok(String::new());
        }
        // A hierarchical path starts with `/` (after an authority it is empty or does).
        let rest = segments.get(1..).unwrap_or_default();
        let last = rest.len().saturating_sub(1);
        if rest
            .iter()
            .enumerate()
            .any(|(i, s)| s.is_empty() && i != last)
        {
            return Err(UriError::EmptySegment);
        }
        if !rest.iter().any(dot) {
            return Ok(path.to_owned());
        }
        if self.template {
            return Err(UriError::TemplateDotSegment);
        }
        if file && rest.first().is_some_and(|s| is_drive_letter(s)) && rest.contains(&"..") {
            return Err(UriError::DriveDotSegment);
        }
        let mut output: Vec<&str> = Vec::with_capacity(rest.len());
        for (i, s) in rest.iter().enumerate() {
            let is_last = i == last;
            match *s {
                "." => {}
                ".." => {
                    output.pop();
                }
                s => {
                    output.push(s);
                    continue;
                }
            }
            if is_last {
                output.push("");
            }
        }
        let mut normal = String::with_capacity(path.len());
        for s in &output {
            normal.push('/');
            normal.push_str(s);
        }
        if normal.is_empty() {
            normal.push('/');
        }
        Ok(normal)
    }

    /// `path` split at `/` outside template expressions.
    fn split<'a>(&self, path: &'a str) -> Result<Vec<&'a str>, UriError> {
        let mut out = Vec::new();
        let mut rest = path;
        while let Some(i) = self.find(rest, b"/")? {
            out.push(rest.get(..i).unwrap_or_default());
            rest = rest.get(i + 1..).unwrap_or_default();
        }
        out.push(rest);
        Ok(out)
    }
}

fn scheme_of(scheme: &str) -> Result<String, UriError> {
    let mut bytes = scheme.bytes();
    match bytes.next() {
        None => return Err(UriError::NoScheme),
        Some(b) if b.is_ascii_alphabetic() => {}
        Some(_) => return Err(UriError::BadScheme),
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) {
        return Err(UriError::BadScheme);
    }
    Ok(scheme.to_ascii_lowercase())
}

/// Where the template expression starting at `start` (a `{`) ends (after its
/// `}`), if it is one: RFC 6570 `"{" [ operator ] varspec *( "," varspec ) "}"`.
fn expression_end(s: &str, start: usize) -> Result<usize, UriError> {
    let body_start = start + 1;
    let close = s
        .get(body_start..)
        .and_then(|r| r.find('}'))
        .ok_or(UriError::BadExpression)?;
    let body = s
        .get(body_start..body_start + close)
        .ok_or(UriError::BadExpression)?;
    let body = body
        .strip_prefix(['+', '#', '.', '/', ';', '?', '&'])
        .unwrap_or(body);
    for varspec in body.split(',') {
        let name = match varspec.split_once(':') {
            Some((name, length)) => {
                let valid = (1..=4).contains(&length.len())
                    && length.bytes().all(|b| b.is_ascii_digit())
                    && !length.starts_with('0');
                if !valid {
                    return Err(UriError::BadExpression);
                }
                name
            }
            None => varspec.strip_suffix('*').unwrap_or(varspec),
        };
        if !is_varname(name) {
            return Err(UriError::BadExpression);
        }
    }
    Ok(body_start + close + 1)
}

/// RFC 6570 `varname`: varchars, single dots between them; a varchar is a
/// letter, digit, `_` or a percent-encoding.
fn is_varname(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    let mut previous_dot = true;
    while let Some(&b) = bytes.get(i) {
        if b == b'.' {
            if previous_dot {
                return false;
            }
            previous_dot = true;
            i += 1;
            continue;
        }
        previous_dot = false;
        if b == b'%' {
            let valid = bytes.get(i + 1).copied().and_then(hex).is_some()
                && bytes.get(i + 2).copied().and_then(hex).is_some();
            if !valid {
                return false;
            }
            i += 3;
        } else if b.is_ascii_alphanumeric() || b == b'_' {
            i += 1;
        } else {
            return false;
        }
    }
    !name.is_empty() && !previous_dot
}

/// WHATWG's "ends in a number": the last label is decimal digits or `0x` hex.
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or_default();
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Four decimal numbers 0-255 without leading zeros, separated by dots.
fn is_dotted_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

fn is_drive_letter(segment: &str) -> bool {
    let b = segment.as_bytes();
    b.len() == 2 && b.first().is_some_and(u8::is_ascii_alphabetic) && b.get(1) == Some(&b':')
}

/// Whether `s` holds `%25` followed by two hex digits.
fn has_double_encoding(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.windows(5).any(
        |w| matches!(w, [b'%', b'2', b'5', h, l] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit()),
    )
}

/// How many characters of caller-supplied text a message shows.
pub const SHOWN_CHARS: usize = 64;

/// Caller-supplied text (a URI, a key, a header name, a method) as an error message
/// shows it: at most [`SHOWN_CHARS`] characters, `…` where cut; control characters,
/// invisible ones (bidirectional overrides, zero-width characters) and backticks
/// escaped as `\u{..}`, so that it cannot break the backticks it is quoted in, nor
/// a terminal or a log line. Every layer above this leaf uses it (`authz` keeps its
/// own, as it imports only `policy`; `identity` keeps its ASCII-only one for
/// `WWW-Authenticate`).
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(SHOWN_CHARS) {
            if c.is_control() || c == '`' || invisible(c) {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
