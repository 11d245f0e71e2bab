//! How an HTTP/1.1 response body ends — a `Content-Length`, chunked
//! transfer coding, or the connection closing — and the incremental decoder
//! that takes body bytes out of a read buffer as they arrive (RFC 9112 §6).

use bytes::{Bytes, BytesMut};

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

/// How the body of one response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes the connection (never reusable).
    UntilClose,
}

/// A body that breaks its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError(pub &'static str);

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed HTTP/1.1 body: {}", self.0)
    }
}

impl std::error::Error for FramingError {}

/// Where the decoder is within the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many body bytes are still to come (a `Content-Length` body, or
    /// the rest of the current chunk when `chunked`).
    Data(u64),
    /// Chunked: a chunk-size line is next.
    Size,
    /// Chunked: the CRLF after a chunk's data is next.
    DataEnd,
    /// Chunked: trailer lines until an empty one.
    Trailer,
    /// Until the connection closes.
    Rest,
    /// The body is complete.
    Done,
}

/// Takes a response body out of a read buffer, piece by piece.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    chunked: bool,
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// More input is needed.
    Incomplete,
    /// The body is complete (the buffer holds only what follows it).
    Done,
}

impl Decoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> Decoder {
        let (state, chunked) = match framing {
            Framing::Empty | Framing::Length(0) => (State::Done, false),
            Framing::Length(n) => (State::Data(n), false),
            Framing::Chunked => (State::Size, true),
            Framing::UntilClose => (State::Rest, false),
        };
        Decoder { state, chunked }
    }

    /// Whether the whole body has been taken.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the body ends when the connection does.
    pub fn ends_at_close(&self) -> bool {
        self.state == State::Rest
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, FramingError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Rest => {
                    return Ok(if buf.is_empty() {
                        Step::Incomplete
                    } else {
                        Step::Data(buf.split().freeze())
                    });
                }
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Step::Incomplete);
                    }
                    let n = remaining.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    let left = remaining - n as u64;
                    self.state = match (left, self.chunked) {
                        (0, true) => State::DataEnd,
                        (0, false) => State::Done,
                        (left, _) => State::Data(left),
                    };
                    return Ok(Step::Data(data));
                }
                State::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::Incomplete);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
                State::DataEnd => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::Incomplete);
                    };
                    if !line.is_empty() {
                        return Err(FramingError("chunk data longer than its size"));
                    }
                    self.state = State::Size;
                }
                State::Trailer => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::Incomplete);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }
}

/// Takes one CRLF- (or LF-) terminated line out of `buf`, without its end.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, FramingError> {
    match memchr::memchr(b'\n', buf) {
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(FramingError("chunk line too long")),
        None => Ok(None),
    }
}

/// The size on a chunk-size line (hex digits, then optional extensions).
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 15 {
        return Err(FramingError("bad chunk size"));
    }
    let rest = &line[digits..];
    if !rest.is_empty() && !matches!(rest[0], b';' | b' ' | b'\t') {
        return Err(FramingError("bad chunk size"));
    }
    let mut size = 0u64;
    for b in &line[..digits] {
        size = size * 16 + u64::from((*b as char).to_digit(16).unwrap_or(0));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; the body and what is left.
    fn run(
        framing: Framing,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), FramingError> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Step::Data(b) => body.extend_from_slice(&b),
                Step::Done => return Ok((body, buf.to_vec())),
                Step::Incomplete if fed < input.len() => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                Step::Incomplete => return Err(FramingError("eof")),
            }
        }
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        for step in [1, 3, 100] {
            let (body, rest) = run(Framing::Length(5), b"hello HTTP/1.1", step).unwrap();
            assert_eq!(body, b"hello");
            assert!(b" HTTP/1.1".starts_with(&rest));
        }
        assert_eq!(run(Framing::Empty, b"", 1).unwrap().0, b"");
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 7, 1000] {
            let (body, rest) = run(Framing::Chunked, wire, step).unwrap();
            assert_eq!(body, b"hello world!", "step {step}");
            assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
        }
        let (body, _) = run(Framing::Chunked, b"3\nabc\n0\n\n", 1).unwrap();
        assert_eq!(body, b"abc");
    }

    #[test]
    fn broken_chunking_is_an_error() {
        assert!(run(Framing::Chunked, b"zz\r\n", 100).is_err());
        assert!(run(Framing::Chunked, b"2\r\nabc\r\n0\r\n\r\n", 100).is_err());
        assert!(run(Framing::Chunked, b"ffffffffffffffff\r\n", 100).is_err());
        let long = vec![b'1'; MAX_LINE + 10];
        assert!(run(Framing::Chunked, &long, 10_000).is_err());
    }

    #[test]
    fn an_until_close_body_takes_everything() {
        let mut d = Decoder::new(Framing::UntilClose);
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Step::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(d.decode(&mut buf).unwrap(), Step::Incomplete);
        assert!(d.ends_at_close());
    }
}
