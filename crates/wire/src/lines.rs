//! Newline-delimited JSON-RPC over byte streams (the stdio transport): a
//! reader that bounds line length and a single writer task that puts each
//! message on exactly one line.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The input ended.
    Eof,
    /// One line without surrounding whitespace (empty for a blank line).
    Text(&'a [u8]),
    /// A line longer than the limit; the rest of it was skipped.
    TooLong,
}

/// Reads the next line into `buf` (cleared first), holding at most `max + 1`
/// bytes of it in memory.
pub async fn read_line<'a, R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &'a mut Vec<u8>,
    max: usize,
) -> io::Result<Line<'a>> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if (&mut *reader).take(limit).read_until(b'\n', buf).await? == 0 {
        return Ok(Line::Eof);
    }
    let complete = buf.last() == Some(&b'\n');
    // Cut short by the limit, or over it once trimmed: too long either way.
    if (!complete && buf.len() > max) || buf.trim_ascii().len() > max {
        if !complete {
            skip_line(reader).await?;
        }
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(buf.trim_ascii()))
}

/// Discards the rest of an over-long line.
async fn skip_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<()> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            r.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        r.consume(n);
    }
}

/// Spawns the only writer of `out`: every message sent on the returned
/// channel (bounded by `capacity`) is written as one line and flushed. Line
/// breaks inside a message, which in valid JSON can only be whitespace
/// between tokens, become spaces so the framing holds. The task ends, with
/// the first write error if any, once every sender is dropped.
pub fn spawn_writer<W>(
    mut out: W,
    capacity: usize,
) -> (mpsc::Sender<Vec<u8>>, JoinHandle<io::Result<()>>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(capacity);
    let writer = tokio::spawn(async move {
        while let Some(mut line) = rx.recv().await {
            for b in &mut line {
                if *b == b'\n' || *b == b'\r' {
                    *b = b' ';
                }
            }
            line.push(b'\n');
            out.write_all(&line).await?;
            out.flush().await?;
        }
        Ok(())
    });
    (tx, writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounds_and_skips_long_lines() {
        let input = b"{\"a\":1}\r\n\n0123456789abc\n  x  \nlast".to_vec();
        let mut r = tokio::io::BufReader::with_capacity(4, &input[..]);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        loop {
            match read_line(&mut r, &mut buf, 8).await.unwrap() {
                Line::Eof => break,
                Line::Text(t) => seen.push(String::from_utf8_lossy(t).into_owned()),
                Line::TooLong => seen.push("<too long>".into()),
            }
        }
        assert_eq!(seen, ["{\"a\":1}", "", "<too long>", "x", "last"]);
        // Padding that pushes a line past the limit leaves nothing behind.
        let padded = b"  {\"a\":1}   \nnext\n".to_vec();
        let mut r = tokio::io::BufReader::new(&padded[..]);
        assert_eq!(read_line(&mut r, &mut buf, 8).await.unwrap(), Line::TooLong);
        assert_eq!(
            read_line(&mut r, &mut buf, 8).await.unwrap(),
            Line::Text(b"next")
        );
    }

    #[tokio::test]
    async fn writes_one_line_per_message() {
        let (client, mut server) = tokio::io::duplex(64);
        let (tx, writer) = spawn_writer(client, 2);
        tx.send(b"{\n  \"a\": 1\r\n}".to_vec()).await.unwrap();
        tx.send(b"{}".to_vec()).await.unwrap();
        drop(tx);
        writer.await.unwrap().unwrap();
        let mut text = String::new();
        server.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "{   \"a\": 1  }\n{}\n");
    }
}
