//! Server-Sent Events framing: an encoder for what Tether sends and an
//! incremental, bounded decoder for what upstreams send.

use bytes::{Bytes, BytesMut};

/// Encodes one `message` event carrying a JSON-RPC message (no event id).
pub fn message_event(json: &[u8]) -> Bytes {
    named_event("message", json)
}

/// Encodes one event of type `name` (no event id); line breaks in the name
/// (never in names Tether uses) are dropped.
pub fn named_event(name: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + name.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend(name.bytes().filter(|b| *b != b'\n' && *b != b'\r'));
    out.extend_from_slice(b"\n");
    push_data(&mut out, data);
    out.extend_from_slice(b"\n");
    out.freeze()
}

/// Encodes one `message` event with an `id:` (for resumable streams).
pub fn message_event_with_id(id: &str, json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + id.len() + 30);
    push_id(&mut out, id);
    out.extend_from_slice(b"event: message\n");
    push_data(&mut out, json);
    out.extend_from_slice(b"\n");
    out.freeze()
}

/// Encodes a priming event: an `id:`, a `retry:` hint in milliseconds and
/// empty data, so a client can resume the stream after it closes.
pub fn priming_event(id: &str, retry_millis: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(id.len() + 40);
    push_id(&mut out, id);
    out.extend_from_slice(format!("retry: {retry_millis}\ndata: \n\n").as_bytes());
    out.freeze()
}

/// Writes an `id:` line; line breaks (never in ids Tether makes) are dropped.
fn push_id(out: &mut BytesMut, id: &str) {
    out.extend_from_slice(b"id: ");
    out.extend(id.bytes().filter(|b| *b != b'\n' && *b != b'\r'));
    out.extend_from_slice(b"\n");
}

/// Encodes the `retry:` reconnection hint in milliseconds.
pub fn retry_hint(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

/// A comment line that keeps idle connections (and proxies) alive.
pub fn keepalive() -> Bytes {
    Bytes::from_static(b": keepalive\n\n")
}

/// Writes `data:` lines; JSON has no raw newlines except as whitespace, but
/// split defensively so any payload frames correctly.
fn push_data(out: &mut BytesMut, payload: &[u8]) {
    for line in payload.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\n");
    }
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field; empty means the default `message`.
    pub event: String,
    /// The joined `data:` lines.
    pub data: String,
    /// The `id:` field, if present.
    pub id: Option<String>,
}

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A single event grew past the configured limit.
    TooLarge(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLarge(limit) => write!(f, "SSE event larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Incremental SSE decoder: feed it chunks, take complete events out.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    pending: Event,
    pending_size: usize,
    has_data: bool,
    max_event: usize,
    /// Bytes of `buf` already known to hold no newline.
    scanned: usize,
    /// The latest `retry:` value seen, in milliseconds.
    retry: Option<u64>,
}

impl Decoder {
    /// A decoder that rejects events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Decoder {
            buf: BytesMut::new(),
            pending: Event::default(),
            pending_size: 0,
            has_data: false,
            max_event,
            scanned: 0,
            retry: None,
        }
    }

    /// Adds bytes and returns the events they complete.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, DecodeError> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(offset) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
            let pos = self.scanned + offset;
            self.scanned = 0;
            let line = self.buf.split_to(pos + 1);
            let line = &line[..pos];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(ev) = self.take_line(line)? {
                events.push(ev);
            }
        }
        self.scanned = self.buf.len();
        if self.buf.len() + self.pending_size > self.max_event {
            return Err(DecodeError::TooLarge(self.max_event));
        }
        Ok(events)
    }

    /// The reconnection delay the stream asked for with `retry:`, if any.
    pub fn retry_millis(&self) -> Option<u64> {
        self.retry
    }

    fn take_line(&mut self, line: &[u8]) -> Result<Option<Event>, DecodeError> {
        if line.is_empty() {
            let ev = std::mem::take(&mut self.pending);
            let had = std::mem::replace(&mut self.has_data, false);
            self.pending_size = 0;
            return Ok(had.then_some(ev));
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        self.pending_size += value.len();
        if self.pending_size > self.max_event {
            return Err(DecodeError::TooLarge(self.max_event));
        }
        match field {
            b"data" => {
                if self.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.pending.event = value.into_owned(),
            b"id" if !value.contains('\0') => self.pending.id = Some(value.into_owned()),
            b"retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_across_chunk_boundaries() {
        let mut d = Decoder::new(1024);
        assert!(d.feed(b"event: message\r\nda").unwrap().is_empty());
        let evs = d
            .feed(b"ta: {\"a\":1}\n\n: comment\n\nid: 7\ndata: x\ndata: y\n\n")
            .unwrap();
        assert_eq!(
            evs,
            vec![
                Event {
                    event: "message".into(),
                    data: "{\"a\":1}".into(),
                    id: None
                },
                Event {
                    event: String::new(),
                    data: "x\ny".into(),
                    id: Some("7".into())
                },
            ]
        );
    }

    #[test]
    fn encodes_ids_and_priming() {
        let mut d = Decoder::new(1024);
        let mut wire = priming_event("1-0", 500).to_vec();
        wire.extend_from_slice(&message_event_with_id("1-2", b"{}"));
        let evs = d.feed(&wire).unwrap();
        assert_eq!(
            evs,
            vec![
                Event {
                    event: String::new(),
                    data: String::new(),
                    id: Some("1-0".into())
                },
                Event {
                    event: "message".into(),
                    data: "{}".into(),
                    id: Some("1-2".into())
                },
            ]
        );
        assert_eq!(d.retry_millis(), Some(500));
        assert!(priming_event("a\nb", 1).starts_with(b"id: ab\nretry: 1\n"));
    }

    #[test]
    fn reads_retry_field() {
        let mut d = Decoder::new(1024);
        assert_eq!(d.retry_millis(), None);
        d.feed(b"id: 1\nretry: 25").unwrap();
        d.feed(b"00\ndata: \n\n").unwrap();
        assert_eq!(d.retry_millis(), Some(2500));
    }

    #[test]
    fn bounds_event_size() {
        let mut d = Decoder::new(16);
        assert_eq!(d.feed(&[b'a'; 64]), Err(DecodeError::TooLarge(16)));
        let mut d = Decoder::new(16);
        assert_eq!(
            d.feed(b"data: 0123456789abcdefgh\n"),
            Err(DecodeError::TooLarge(16))
        );
    }

    #[test]
    fn encodes_round_trip() {
        let ev = message_event(b"{\"x\":1}");
        let mut d = Decoder::new(1024);
        let out = d.feed(&ev).unwrap();
        assert_eq!(out[0].data, "{\"x\":1}");
        assert_eq!(out[0].event, "message");
        let ev = named_event("end\npoint", b"/messages?session_id=a");
        assert_eq!(
            &ev[..],
            b"event: endpoint\ndata: /messages?session_id=a\n\n"
        );
    }
}
