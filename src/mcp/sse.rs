//! Server-sent events (the `text/event-stream` of MCP's streamable HTTP), read
//! event by event as the bytes arrive, so that a response stream can be rewritten
//! one event at a time without ever holding more than the event being read.
//! Pure functions, no I/O.
//!
//! The event stream format of the HTML standard: lines end in CRLF, LF or CR; an
//! empty line ends an event; `data:` lines are joined with `\n`; a line starting
//! with `:` is a comment; one space after the colon is not part of a value. An
//! event still open when the stream ends is not an event (clients discard it).
//!
//! [`EventReader::push`] takes a chunk and returns the events it completed, each
//! with its bytes as sent ([`Event::raw`]) and its data. [`Event::with_data`] writes
//! the same event with other data: every other line (`event:`, `id:`, `retry:`,
//! comments) kept as it was and where it was, the data as one `data:` line.

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The bytes of the event as sent, its final empty line included.
    raw: Vec<u8>,
}

impl Event {
    /// The bytes as sent.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The event's data: its `data:` lines joined with `\n`; `None` if it has none.
    pub fn data(&self) -> Option<Vec<u8>> {
        let mut data: Option<Vec<u8>> = None;
        for (line, _) in lines(&self.raw) {
            if let Some(value) = field(line, b"data") {
                match &mut data {
                    Some(d) => {
                        d.push(b'\n');
                        d.extend_from_slice(value);
                    }
                    None => data = Some(value.to_vec()),
                }
            }
        }
        data
    }

    /// The event with `data` instead of its data: the first `data:` line becomes
    /// `data: <data>`, the other `data:` lines go, every other line stays as sent.
    /// `data` must hold no line break (compact JSON never does).
    pub fn with_data(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut written = false;
        for (line, whole) in lines(&self.raw) {
            if field(line, b"data").is_none() {
                out.extend_from_slice(whole);
            } else if !written {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(data);
                out.push(b'\n');
                written = true;
            }
        }
        out
    }
}

/// An event of type `message` carrying `data` (which must hold no line break).
pub fn message_event(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 24);
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out
}

/// The value of `line` if it is the field `name` (`name:value`, `name: value`, or
/// a bare `name`).
fn field<'l>(line: &'l [u8], name: &[u8]) -> Option<&'l [u8]> {
    let rest = line.strip_prefix(name)?;
    match rest.first() {
        None => Some(&[]),
        Some(b':') => {
            let value = rest.get(1..).unwrap_or_default();
            Some(value.strip_prefix(b" ").unwrap_or(value))
        }
        Some(_) => None,
    }
}

/// The first line of `bytes` and the length of its ending (1 or 2), if it has a
/// complete one. A CR at the very end may be the first half of a CRLF: complete
/// only at the `end` of the stream.
fn next_line(bytes: &[u8], end: bool) -> Option<(&[u8], usize)> {
    let at = bytes.iter().position(|b| *b == b'\n' || *b == b'\r')?;
    let line = bytes.get(..at)?;
    match (bytes.get(at), bytes.get(at + 1)) {
        (Some(b'\r'), Some(b'\n')) => Some((line, 2)),
        (Some(b'\r'), None) if !end => None,
        _ => Some((line, 1)),
    }
}

/// The lines of a whole event: each without and with its ending (the final CR of
/// an event is a whole line ending: the event is complete).
fn lines(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let (line, ending) = next_line(rest, true)?;
        let (whole, after) = rest.split_at_checked(line.len() + ending)?;
        rest = after;
        Some((line, whole))
    })
}

/// Why a stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event is longer than the limit.
    #[error("an event of the stream is longer than {limit} bytes")]
    EventTooLong {
        /// The limit.
        limit: usize,
    },
}

/// Reads a stream of events chunk by chunk.
#[derive(Debug)]
pub struct EventReader {
    /// Bytes of the event being read.
    pending: Vec<u8>,
    /// Where the scan for the end of that event goes on.
    scanned: usize,
    /// The longest event read.
    limit: usize,
}

impl EventReader {
    /// A reader of events up to `limit` bytes each.
    pub fn new(limit: usize) -> Self {
        Self {
            pending: Vec::new(),
            scanned: 0,
            limit,
        }
    }

    /// Read `chunk`: the events it completes, in order. The bytes of an event not
    /// yet complete are kept for the next chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        self.pending.extend_from_slice(chunk);
        self.read(false)
    }

    /// The events the pending bytes complete; at the `end` of the stream a final
    /// CR ends its line.
    fn read(&mut self, end: bool) -> Result<Vec<Event>, SseError> {
        let mut events = Vec::new();
        let mut start = 0;
        let mut at = self.scanned;
        // `at` is always the start of a line of the event that began at `start`.
        while let Some((line, ending)) = self.pending.get(at..).and_then(|b| next_line(b, end)) {
            let end = at + line.len() + ending;
            if line.is_empty() {
                events.push(Event {
                    raw: self.pending.get(start..end).unwrap_or_default().to_vec(),
                });
                start = end;
            }
            at = end;
        }
        self.pending.drain(..start);
        self.scanned = at - start;
        if self.pending.len() > self.limit {
            return Err(SseError::EventTooLong { limit: self.limit });
        }
        Ok(events)
    }

    /// At the end of the stream: the events a final CR completes, and the bytes of
    /// an event the stream left open (clients discard those).
    pub fn finish(&mut self) -> (Vec<Event>, Vec<u8>) {
        let events = self.read(true).unwrap_or_default();
        self.scanned = 0;
        (events, std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(chunks: &[&[u8]]) -> (Vec<Event>, Vec<u8>) {
        let mut reader = EventReader::new(1 << 20);
        let mut events = Vec::new();
        for c in chunks {
            events.extend(reader.push(c).expect("within the limit"));
        }
        let (last, rest) = reader.finish();
        events.extend(last);
        (events, rest)
    }

    const STREAM: &[u8] = b"event: message\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\n: comment\ndata: x\ndata:y\n\nretry: 5\rdata: z\r\r";

    #[test]
    fn events_whatever_the_line_endings() {
        let (events, rest) = read_all(&[STREAM]);
        assert!(rest.is_empty());
        let data: Vec<Option<Vec<u8>>> = events.iter().map(Event::data).collect();
        assert_eq!(
            data,
            [
                Some(b"{\"a\":1}".to_vec()),
                Some(b"x\ny".to_vec()),
                Some(b"z".to_vec())
            ]
        );
        let raw: Vec<u8> = events.iter().flat_map(|e| e.raw().to_vec()).collect();
        assert_eq!(raw, STREAM, "the events are the stream, byte for byte");
    }

    #[test]
    fn the_same_events_for_every_split_of_the_stream() {
        let (whole, _) = read_all(&[STREAM]);
        for cut in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            assert_eq!(read_all(&[a, b]).0, whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(read_all(&bytes).0, whole, "one byte at a time");
    }

    #[test]
    fn an_open_event_at_the_end_is_returned_as_bytes() {
        let (events, rest) = read_all(&[b"data: 1\n\ndata: 2\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(rest, b"data: 2\n");
        // A CR that may be half of a CRLF waits for the next byte.
        let mut reader = EventReader::new(100);
        assert!(reader.push(b"data: 1\r\n\r").expect("ok").is_empty());
        assert_eq!(reader.push(b"\n").expect("ok").len(), 1);
    }

    #[test]
    fn with_data_keeps_every_other_line() {
        let (events, _) = read_all(&[STREAM]);
        let first = events.first().expect("an event");
        assert_eq!(
            first.with_data(b"{}"),
            b"event: message\r\nid: 1\r\ndata: {}\n\r\n".to_vec()
        );
        let second = events.get(1).expect("two events");
        assert_eq!(second.with_data(b"[]"), b": comment\ndata: []\n\n".to_vec());
        let third = events.get(2).expect("three events");
        assert_eq!(third.with_data(b"1"), b"retry: 5\rdata: 1\n\r".to_vec());
    }

    #[test]
    fn fields_are_read_exactly() {
        assert_eq!(field(b"data: x", b"data"), Some(&b"x"[..]));
        assert_eq!(field(b"data:  x", b"data"), Some(&b" x"[..]));
        assert_eq!(field(b"data", b"data"), Some(&b""[..]));
        assert_eq!(field(b"datax: y", b"data"), None);
        assert_eq!(field(b": data", b"data"), None);
        assert_eq!(field(b"Data: y", b"data"), None);
    }

    #[test]
    fn an_event_over_the_limit_is_refused() {
        let mut reader = EventReader::new(10);
        assert_eq!(
            reader.push(b"data: 0123456789"),
            Err(SseError::EventTooLong { limit: 10 })
        );
        let mut reader = EventReader::new(10);
        assert_eq!(
            reader.push(b"data: 12\n\ndata: 3\n\n").expect("ok").len(),
            2
        );
    }
}
