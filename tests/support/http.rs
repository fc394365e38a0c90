//! Plain HTTP/1.1 over TCP on 127.0.0.1, written by hand: what a test sends is exactly
//! what goes on the wire (a lying `Content-Length`, repeated headers, a half-sent request).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Response headers: lowercase names and values, in order.
pub type Headers = Vec<(String, String)>;

/// A response. `status` 0: the connection closed (or timed out) before a status line.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// In order, names lowercased.
    pub headers: Headers,
    /// The body, de-chunked when the response was chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; for a `text/event-stream` body, the JSON of its first `data:` line.
    pub fn json(&self) -> Option<Value> {
        let text = self.text();
        if self
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
        {
            let data = text.lines().find_map(|l| l.strip_prefix("data:"))?;
            return serde_json::from_str(data.trim()).ok();
        }
        serde_json::from_str(&text).ok()
    }
}

/// A plain `GET` (`Connection: close`): status and body (`None`: no connection or no
/// answer within 5 s).
pub fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let r = request(addr, "GET", path, &[], "")?;
    Some((r.0, r.2))
}

/// A request with `Connection: close`: status code, headers (lowercase names) and body
/// (`None`: no connection or no answer within 5 s). `Host`, `Content-Length` (unless the
/// method is `GET` with an empty body) and `Connection` are added unless `headers` has them.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, Headers, String)> {
    let bytes = request_bytes(addr, method, path, headers, body.as_bytes());
    let mut stream = TcpStream::connect(addr).ok()?;
    let r = exchange(&mut stream, &bytes, Duration::from_secs(5));
    (r.status != 0).then(|| (r.status, r.headers.clone(), r.text()))
}

/// `POST` a JSON body: status and body parsed as JSON (`Null` if it is not JSON).
pub fn post_json(addr: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
    let (status, _, text) = request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &body.to_string(),
    )?;
    Some((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    ))
}

/// A plain `POST` of `body` to `url` (`http://HOST:PORT/PATH`). `Host`, `Content-Length`
/// and `Connection: close` are added unless `headers` has them (so a test can lie about the
/// length); nothing else is added. Reads the response for at most 10 s.
pub fn raw_post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let (authority, path) = split_url(url);
    raw_request(
        &authority,
        &request_bytes(&authority, "POST", &path, headers, body),
    )
}

/// Send `bytes` as they are to `authority` (`127.0.0.1:PORT`) and read the response until
/// the connection closes, the response is complete, or 10 s pass.
pub fn raw_request(authority: &str, bytes: &[u8]) -> Response {
    let mut stream =
        TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    exchange(&mut stream, bytes, Duration::from_secs(10))
}

/// The bytes of a request; see [`request`] for the headers added.
fn request_bytes(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("Host: {authority}\r\n"));
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    if !has("content-length") && !has("transfer-encoding") && (method != "GET" || !body.is_empty())
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Write `bytes`, then read until the connection closes, the response is complete, or
/// `limit` passes.
fn exchange(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> Response {
    let _ = stream.set_read_timeout(Some(limit));
    if stream.write_all(bytes).is_err() {
        return parse_response(&[]);
    }
    let mut buf = Vec::new();
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 16384];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if response_complete(&buf) {
                    break;
                }
            }
        }
    }
    parse_response(&buf)
}

/// `(host:port, path)` of an `http://` URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

/// Whether `buf` holds a whole response (by content-length or the final chunk), so a
/// server that keeps the connection open does not cost the read timeout.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return find(body, b"0\r\n\r\n").is_some_and(|i| i == 0 || body[..i].ends_with(b"\r\n"));
    }
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| body.len() >= len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(buf: &[u8]) -> Response {
    let empty = Response {
        status: 0,
        headers: Vec::new(),
        body: buf.to_vec(),
    };
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return empty;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let Some(status) = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
    else {
        return empty;
    };
    let headers: Headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(raw, b"\r\n") {
        let size = String::from_utf8_lossy(&raw[..line_end]);
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        raw = &raw[line_end + 2..];
        if size == 0 || raw.len() < size {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
    out
}
