//! Newline-delimited JSON-RPC framing (the stdio transport): bounded line
//! reads that never hold more than one maximum-size line in memory.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// One read from a newline-delimited stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line (without its newline and surrounding whitespace) is in the buffer.
    Complete,
    /// The line was longer than the limit; it has been skipped entirely.
    TooLong,
    /// The stream ended.
    End,
}

/// Reads the next line into `buf` (cleared first), at most `max` bytes of it.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let n = (&mut *reader)
        .take(max as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(Line::End);
    }
    let complete = buf.last() == Some(&b'\n');
    if !complete && n > max {
        // The limit cut the line short.
        buf.clear();
        skip_line(reader).await?;
        return Ok(Line::TooLong);
    }
    let trimmed = buf.trim_ascii();
    let (start, len) = (
        trimmed.as_ptr() as usize - buf.as_ptr() as usize,
        trimmed.len(),
    );
    buf.truncate(start + len);
    buf.drain(..start);
    Ok(Line::Complete)
}

/// Discards the rest of an over-long line.
async fn skip_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<()> {
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

/// A JSON message as one line: JSON allows raw line breaks only as
/// whitespace between tokens (inside strings they must be escaped), so
/// dropping them keeps the message intact.
pub fn single_line(message: &[u8]) -> Vec<u8> {
    let mut line: Vec<u8> = message
        .iter()
        .copied()
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_bounded_lines() {
        let input = b"  {\"a\":1}  \n\n".to_vec();
        let long = [vec![b'x'; 100], b"\n{\"b\":2}\nlast".to_vec()].concat();
        let all = [input, long].concat();
        let mut r = tokio::io::BufReader::new(&all[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, 16).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"{\"a\":1}");
        assert_eq!(
            read_line(&mut r, &mut buf, 16).await.unwrap(),
            Line::Complete
        );
        assert!(buf.is_empty());
        assert_eq!(
            read_line(&mut r, &mut buf, 16).await.unwrap(),
            Line::TooLong
        );
        assert_eq!(
            read_line(&mut r, &mut buf, 16).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"{\"b\":2}");
        assert_eq!(
            read_line(&mut r, &mut buf, 16).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut r, &mut buf, 16).await.unwrap(), Line::End);
    }

    #[test]
    fn joins_pretty_json_into_one_line() {
        let pretty = b"{\r\n  \"text\": \"a\\nb\"\n}";
        assert_eq!(single_line(pretty), b"{  \"text\": \"a\\nb\"}\n");
    }
}
