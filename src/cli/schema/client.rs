//! A minimal MCP client over streamable HTTP, for `schema import --url` and
//! `schema check --url`: it lists a live server's tools (and prompts) and nothing else.
//!
//! The exchange (MCP 2025-06-18 / 2025-11-25, "Streamable HTTP" transport):
//!
//! 1. `POST initialize` (`protocolVersion` 2025-11-25, no client capabilities,
//!    `clientInfo` mcp-authz); the server's `Mcp-Session-Id` header, when it sends one,
//!    goes with every later request, and so does `MCP-Protocol-Version` with the version
//!    the server chose (2025-11-25, 2025-06-18 or 2025-03-26; any other is refused);
//! 2. `POST notifications/initialized` (answered 202 or another 2xx);
//! 3. `tools/list`, then `prompts/list` when the server declares the `prompts`
//!    capability, each following `nextCursor` (an absent, null or empty cursor ends the
//!    list) for at most `max_pages` pages; a cursor seen twice is a page loop;
//! 4. `DELETE` of the session (its answer is ignored).
//!
//! Every answer may be `application/json` (one JSON-RPC response) or
//! `text/event-stream` (SSE: the `data:` lines of each event form one JSON-RPC message;
//! messages other than the response with the request's id, such as the server's
//! notifications, are skipped, and reading stops at that response).
//!
//! Limits: every request has `timeout` (connection and whole answer); the bytes of all
//! answers together are at most `max_bytes`; JSON is read with the strict reader (no
//! duplicate keys, bounded depth). The `--header` values are sent on every request and
//! never printed.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value, json};

use crate::mcp::json::{JsonFault, parse_with};

/// The protocol version asked for in `initialize`.
pub const PROTOCOL_VERSION: &str = "2025-11-25";
/// The versions a server may answer with: those of the streamable HTTP transport.
const SPOKEN: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
/// Nesting of the JSON read (as a saved listing).
const MAX_DEPTH: usize = 128;
/// Characters of an HTTP error's body shown in the error.
const BODY_EXCERPT: usize = 200;

/// Where and how to list.
#[derive(Debug, Clone)]
pub struct Live {
    /// The server's MCP endpoint.
    pub url: Url,
    /// Extra request headers (`--header`), e.g. authorization.
    pub headers: HeaderMap,
    /// Bound of each request (connection and whole answer).
    pub timeout: Duration,
    /// Most pages read of one list.
    pub max_pages: usize,
    /// Most bytes read of all answers together.
    pub max_bytes: u64,
}

/// What a server lists, as the documents a saved listing holds.
#[derive(Debug)]
pub struct Listing {
    /// `{"tools": [...]}`: every page's tools, in order.
    pub tools: String,
    /// `{"prompts": [...]}` when the server declares the `prompts` capability.
    pub prompts: Option<String>,
    /// The protocol version the server chose.
    pub protocol_version: String,
}

/// Why a server could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Not an http(s) URL.
    #[error("`{0}` is not an http or https URL")]
    Scheme(String),
    /// A `--header` that is not `Name: value`, or one the client sets itself.
    #[error("bad `--header`: {0}")]
    Header(String),
    /// The HTTP client could not be made.
    #[error("cannot make the HTTP client: {0}")]
    Client(String),
    /// No answer in time.
    #[error("`{method}`: no answer from `{url}` within {secs} s (`--timeout`)")]
    Timeout {
        /// The JSON-RPC method.
        method: String,
        /// The endpoint.
        url: String,
        /// The bound.
        secs: u64,
    },
    /// Connection or transfer failed.
    #[error("`{method}`: cannot reach `{url}`: {reason}")]
    Unreachable {
        /// The JSON-RPC method.
        method: String,
        /// The endpoint.
        url: String,
        /// The transport's reason.
        reason: String,
    },
    /// An HTTP status other than success.
    #[error("`{method}`: `{url}` answered HTTP {status}{hint}{body}")]
    Status {
        /// The JSON-RPC method.
        method: String,
        /// The endpoint.
        url: String,
        /// The status.
        status: StatusCode,
        /// What to try, for 401 and 403.
        hint: &'static str,
        /// An excerpt of the answer's text, if any.
        body: String,
    },
    /// The answer is not what an MCP server answers.
    #[error("`{url}` does not answer as an MCP server: `{method}`: {reason}")]
    NotMcp {
        /// The JSON-RPC method.
        method: String,
        /// The endpoint.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A JSON-RPC error response.
    #[error("`{method}`: the server answered JSON-RPC error {code}: {message}")]
    JsonRpc {
        /// The JSON-RPC method.
        method: String,
        /// The error code.
        code: i64,
        /// The error message (control characters removed, shortened).
        message: String,
    },
    /// A protocol version this client does not speak.
    #[error(
        "the server chose protocol version `{0}`: this client speaks {PROTOCOL_VERSION}, 2025-06-18 and 2025-03-26 (streamable HTTP)"
    )]
    Version(String),
    /// The server declares no tools.
    #[error("the server does not declare the `tools` capability: it has no tools to list")]
    NoTools,
    /// More answer bytes than allowed.
    #[error("the server's answers exceed {0} bytes")]
    TooLarge(u64),
    /// More pages than allowed.
    #[error("`{method}`: more than {max} pages (`--max-pages`)")]
    TooManyPages {
        /// The JSON-RPC method.
        method: String,
        /// The bound.
        max: usize,
    },
    /// A cursor seen before.
    #[error("`{method}`: the server returned the cursor `{cursor}` twice: the pages loop")]
    PageLoop {
        /// The JSON-RPC method.
        method: String,
        /// The cursor (shortened).
        cursor: String,
    },
}

/// Parse a `--header 'Name: value'` into `headers`. The headers the protocol needs are
/// the client's own and refused here.
pub fn add_header(headers: &mut HeaderMap, spec: &str) -> Result<(), LiveError> {
    let Some((name, value)) = spec.split_once(':') else {
        return Err(LiveError::Header(format!(
            "`{}` is not `Name: value`",
            printable(spec.split_once(' ').map_or(spec, |(n, _)| n), 64)
        )));
    };
    let name = name.trim();
    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        LiveError::Header(format!("`{}` is not a header name", printable(name, 64)))
    })?;
    if [ACCEPT, CONTENT_TYPE].contains(&header)
        || [SESSION_HEADER, VERSION_HEADER].contains(&header.as_str())
    {
        return Err(LiveError::Header(format!(
            "`{header}` is set by the MCP client itself"
        )));
    }
    // The value is never shown: it is usually a secret.
    let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
        LiveError::Header(format!(
            "the value of `{header}` is not a valid header value"
        ))
    })?;
    value.set_sensitive(true);
    headers.append(header, value);
    Ok(())
}

/// The URL as written into generated files: without user name, password, query or
/// fragment (they may hold secrets). Whether anything was left out.
pub fn public_url(url: &Url) -> (String, bool) {
    let mut shown = url.clone();
    let hidden = !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    (shown.to_string(), hidden)
}

/// Parse an endpoint URL (http or https only).
pub fn endpoint(text: &str) -> Result<Url, LiveError> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err(LiveError::Scheme(printable(text, 200))),
    }
}

/// List the server's tools (and prompts): a session from `initialize` to `DELETE`.
pub fn list(live: &Live) -> Result<Listing, LiveError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LiveError::Client(e.to_string()))?;
    runtime.block_on(async {
        let mut session = Session::new(live)?;
        let listed = session.list().await;
        session.close().await;
        listed
    })
}

struct Session<'a> {
    live: &'a Live,
    client: reqwest::Client,
    /// The endpoint as shown in errors.
    shown: String,
    session_id: Option<HeaderValue>,
    version: Option<HeaderValue>,
    next_id: u64,
    /// Answer bytes read so far.
    read: u64,
}

/// One JSON-RPC message that answers a request: its `result`, or the error.
type Answer = Result<Map<String, Value>, LiveError>;

impl<'a> Session<'a> {
    fn new(live: &'a Live) -> Result<Session<'a>, LiveError> {
        let client = reqwest::Client::builder()
            .timeout(live.timeout)
            .connect_timeout(live.timeout)
            // A redirect could carry the headers to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| LiveError::Client(e.to_string()))?;
        Ok(Session {
            live,
            client,
            shown: public_url(&live.url).0,
            session_id: None,
            version: None,
            next_id: 1,
            read: 0,
        })
    }

    async fn list(&mut self) -> Result<Listing, LiveError> {
        let init = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "mcp-authz", "version": env!("CARGO_PKG_VERSION")},
                }),
            )
            .await?;
        let version = match init.get("protocolVersion") {
            Some(Value::String(v)) if SPOKEN.contains(&v.as_str()) => v.clone(),
            Some(Value::String(v)) => return Err(LiveError::Version(printable(v, 64))),
            _ => return Err(self.not_mcp("initialize", "no `protocolVersion` in the result")),
        };
        self.version = HeaderValue::from_str(&version).ok();
        let capabilities = match init.get("capabilities") {
            Some(Value::Object(c)) => c.clone(),
            _ => return Err(self.not_mcp("initialize", "no `capabilities` in the result")),
        };
        self.notify("notifications/initialized").await?;
        if !capabilities.contains_key("tools") {
            return Err(LiveError::NoTools);
        }
        let tools = self.list_all("tools/list", "tools").await?;
        let prompts = if capabilities.contains_key("prompts") {
            let prompts = self.list_all("prompts/list", "prompts").await?;
            Some(json!({ "prompts": prompts }).to_string())
        } else {
            None
        };
        Ok(Listing {
            tools: json!({ "tools": tools }).to_string(),
            prompts,
            protocol_version: version,
        })
    }

    /// Every page of a list: the entries under `key`, in order.
    async fn list_all(&mut self, method: &str, key: &str) -> Result<Vec<Value>, LiveError> {
        let mut entries = Vec::new();
        let mut cursors = BTreeSet::new();
        let mut cursor: Option<String> = None;
        for _ in 0..self.live.max_pages {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let mut page = self.request(method, params).await?;
            match page.remove(key) {
                Some(Value::Array(items)) => entries.extend(items),
                _ => {
                    return Err(self.not_mcp(method, &format!("no `{key}` array in the result")));
                }
            }
            match page.remove("nextCursor") {
                None | Some(Value::Null) => return Ok(entries),
                Some(Value::String(c)) if c.is_empty() => return Ok(entries),
                Some(Value::String(c)) => {
                    if !cursors.insert(c.clone()) {
                        return Err(LiveError::PageLoop {
                            method: method.to_owned(),
                            cursor: printable(&c, 64),
                        });
                    }
                    cursor = Some(c);
                }
                Some(_) => return Err(self.not_mcp(method, "`nextCursor` is not a string")),
            }
        }
        Err(LiveError::TooManyPages {
            method: method.to_owned(),
            max: self.live.max_pages,
        })
    }

    fn not_mcp(&self, method: &str, reason: &str) -> LiveError {
        LiveError::NotMcp {
            method: method.to_owned(),
            url: self.shown.clone(),
            reason: reason.to_owned(),
        }
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(self.live.url.clone())
            .headers(self.live.headers.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(id) = &self.session_id {
            request = request.header(SESSION_HEADER, id.clone());
        }
        if let Some(v) = &self.version {
            request = request.header(VERSION_HEADER, v.clone());
        }
        request
    }

    async fn send(
        &self,
        method: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, LiveError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(method, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                " (does it need `--header 'Authorization: ...'`?)"
            }
            s if s.is_redirection() => " (redirects are not followed: give the final URL)",
            _ => "",
        };
        // A short excerpt of a textual answer helps; a long or binary one does not.
        let text = response.text().await.unwrap_or_default();
        let excerpt = printable(text.trim(), BODY_EXCERPT);
        Err(LiveError::Status {
            method: method.to_owned(),
            url: self.shown.clone(),
            status,
            hint,
            body: if excerpt.is_empty() {
                String::new()
            } else {
                format!(": {excerpt}")
            },
        })
    }

    fn transport(&self, method: &str, e: &reqwest::Error) -> LiveError {
        if e.is_timeout() {
            LiveError::Timeout {
                method: method.to_owned(),
                url: self.shown.clone(),
                secs: self.live.timeout.as_secs(),
            }
        } else {
            // reqwest's message names the URL, which may hold secrets: the chain of
            // sources carries the reason.
            let mut reason = String::new();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                reason = s.to_string();
                source = s.source();
            }
            if reason.is_empty() {
                reason = "request failed".to_owned();
            }
            LiveError::Unreachable {
                method: method.to_owned(),
                url: self.shown.clone(),
                reason,
            }
        }
    }

    /// A notification: a 2xx answer (usually 202, no body) is all it gets.
    async fn notify(&mut self, method: &str) -> Result<(), LiveError> {
        let body = json!({"jsonrpc": "2.0", "method": method});
        let request = self.post(&body);
        self.send(method, request).await.map(drop)
    }

    /// A request: the `result` of the response with its id.
    async fn request(&mut self, method: &str, params: Value) -> Answer {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let request = self.post(&body);
        let mut response = self.send(method, request).await?;
        if method == "initialize"
            && let Some(session) = response.headers().get(SESSION_HEADER)
        {
            // Visible ASCII only (the specification's rule).
            if session.is_empty() || !session.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)) {
                return Err(
                    self.not_mcp(method, "the `Mcp-Session-Id` header is not visible ASCII")
                );
            }
            self.session_id = Some(session.clone());
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match content_type.as_str() {
            "application/json" => {
                let mut body = Vec::new();
                while let Some(chunk) = self.chunk(method, &mut response).await? {
                    body.extend_from_slice(&chunk);
                }
                let text = String::from_utf8(body)
                    .map_err(|_| self.not_mcp(method, "the answer is not UTF-8"))?;
                match self.message(method, id, &text)? {
                    Some(answer) => answer,
                    None => {
                        Err(self.not_mcp(method, "the answer is not the response to the request"))
                    }
                }
            }
            "text/event-stream" => self.events(method, id, &mut response).await,
            "" => Err(self.not_mcp(method, "the answer has no content type")),
            other => Err(self.not_mcp(
                method,
                &format!(
                    "the answer is `{}`, not JSON or an event stream",
                    printable(other, 64)
                ),
            )),
        }
    }

    /// The next chunk of an answer, counted against the byte limit.
    async fn chunk(
        &mut self,
        method: &str,
        response: &mut reqwest::Response,
    ) -> Result<Option<Vec<u8>>, LiveError> {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| self.transport(method, &e))?;
        if let Some(c) = &chunk {
            self.read = self.read.saturating_add(c.len() as u64);
            if self.read > self.live.max_bytes {
                return Err(LiveError::TooLarge(self.live.max_bytes));
            }
        }
        Ok(chunk.map(|c| c.to_vec()))
    }

    /// Read an event stream until the response with `id`.
    async fn events(&mut self, method: &str, id: u64, response: &mut reqwest::Response) -> Answer {
        let mut pending: Vec<u8> = Vec::new();
        let mut data = String::new();
        while let Some(chunk) = self.chunk(method, response).await? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let line = std::str::from_utf8(line)
                    .map_err(|_| self.not_mcp(method, "the event stream is not UTF-8"))?;
                if line.is_empty() {
                    // The end of an event: its data is one JSON-RPC message.
                    if !data.is_empty()
                        && let Some(answer) = self.message(method, id, &data)?
                    {
                        return answer;
                    }
                    data.clear();
                } else if let Some(value) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
                // Other fields (`event`, `id`, `retry`) and comments are not needed.
            }
        }
        Err(self.not_mcp(method, "the event stream ended without the response"))
    }

    /// One JSON-RPC message: `None` when it is not the response to request `id` (a
    /// notification or a request of the server's).
    fn message(&self, method: &str, id: u64, text: &str) -> Result<Option<Answer>, LiveError> {
        // Below `result` keys that differ only in case are allowed here (tool
        // properties); the listing's own reader checks the rest.
        let value = parse_with(text, MAX_DEPTH, &["result", "error"]).map_err(|fault| {
            self.not_mcp(
                method,
                &match fault {
                    JsonFault::Syntax(e) => format!("the answer is not JSON ({e})"),
                    JsonFault::TooDeep => format!("the answer is nested deeper than {MAX_DEPTH}"),
                    JsonFault::DuplicateKey(k) => {
                        format!("the answer has the key `{}` twice", printable(&k, 64))
                    }
                    JsonFault::CaseVariantKeys(a, b) => format!(
                        "the answer has the keys `{}` and `{}`",
                        printable(&a, 64),
                        printable(&b, 64)
                    ),
                },
            )
        })?;
        let Value::Object(mut message) = value else {
            return Err(self.not_mcp(method, "the answer is not a JSON-RPC message"));
        };
        if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(self.not_mcp(method, "the answer is not JSON-RPC 2.0"));
        }
        if message.contains_key("method") || message.get("id").and_then(Value::as_u64) != Some(id) {
            return Ok(None);
        }
        if let Some(error) = message.remove("error") {
            let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
            let text = error.get("message").and_then(Value::as_str).unwrap_or("");
            return Ok(Some(Err(LiveError::JsonRpc {
                method: method.to_owned(),
                code,
                message: printable(text, 300),
            })));
        }
        match message.remove("result") {
            Some(Value::Object(result)) => Ok(Some(Ok(result))),
            _ => Err(self.not_mcp(method, "the response has no `result` object")),
        }
    }

    /// End the session (best effort: a server may not support it).
    async fn close(&mut self) {
        let Some(id) = self.session_id.take() else {
            return;
        };
        let mut request = self
            .client
            .delete(self.live.url.clone())
            .headers(self.live.headers.clone())
            .header(SESSION_HEADER, id)
            .timeout(Duration::from_secs(2).min(self.live.timeout));
        if let Some(v) = &self.version {
            request = request.header(VERSION_HEADER, v.clone());
        }
        let _ = request.send().await;
    }
}

/// `text` without control characters, at most `max` characters.
fn printable(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().filter(|c| !c.is_control()).count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_name_colon_value_and_the_protocol_headers_are_the_clients() {
        let mut headers = HeaderMap::new();
        add_header(&mut headers, "Authorization: Bearer abc: def").expect("header");
        assert_eq!(
            headers.get("authorization").map(HeaderValue::as_bytes),
            Some(&b"Bearer abc: def"[..])
        );
        let secret = "Authorization Bearer s3cret";
        let err = add_header(&mut headers, secret)
            .expect_err("no colon")
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
        for reserved in [
            "Accept: */*",
            "mcp-session-id: x",
            "Content-Type: text/plain",
        ] {
            assert!(add_header(&mut headers, reserved).is_err(), "{reserved}");
        }
        assert!(add_header(&mut headers, "bad name: x").is_err());
    }

    #[test]
    fn the_url_written_down_has_no_secrets() {
        let url = endpoint("https://user:pw@mcp.example.com:8443/mcp?key=k#f").expect("url");
        assert_eq!(
            public_url(&url),
            ("https://mcp.example.com:8443/mcp".to_owned(), true)
        );
        let url = endpoint("http://127.0.0.1:1/mcp").expect("url");
        assert_eq!(
            public_url(&url),
            ("http://127.0.0.1:1/mcp".to_owned(), false)
        );
        assert!(endpoint("file:///etc/passwd").is_err());
        assert!(endpoint("mcp.example.com/mcp").is_err());
    }
}
