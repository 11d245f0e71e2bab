//! `tether connect <url>`: a local stdio MCP server relaying to a remote
//! Streamable HTTP MCP server, for clients that can only launch stdio servers.
//!
//! Messages are newline-delimited JSON-RPC on stdin and stdout; only protocol
//! messages are written to stdout (diagnostics go to stderr). Every client
//! message becomes one POST; requests run concurrently and their replies —
//! a JSON body, or an SSE stream relayed message by message as it arrives —
//! are written back through a single writer. The remote session is managed
//! in [`remote`]: it survives the remote forgetting it (re-initialized
//! transparently) and short outages (refused connections are retried).

mod out;
mod remote;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::BufReader;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use out::Output;
use remote::{Remote, Route};
use tether_gateway::config::UpstreamConfig;
use tether_gateway::upstream::Upstream;
use tether_wire::jsonrpc::{ErrorObject, Kind, Message, Method, code};
use tether_wire::lines::{self, Line};

/// Longest accepted stdin line (one JSON-RPC message).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Messages waiting for stdout at most.
const OUT_QUEUE: usize = 256;
/// Client requests relayed at once at most; reading stdin waits beyond that.
const MAX_IN_FLIGHT: usize = 64;
/// How long requests still in flight may finish after stdin closes.
const DRAIN: Duration = Duration::from_secs(5);

/// Parses a `--header` argument of the form `Name: value`.
pub fn parse_header(arg: &str) -> Result<(String, String), String> {
    let Some((name, value)) = arg.split_once(':') else {
        return Err("expected 'Name: value'".into());
    };
    let (name, value) = (name.trim(), value.trim());
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))?;
    http::HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Serves MCP on stdin/stdout until stdin closes, relaying every message to
/// the Streamable HTTP MCP endpoint `url` with the extra `headers` (e.g.
/// `Authorization`). `timeout` bounds the wait for each reply and between
/// the messages of a streamed one. At the end, requests in flight get a few
/// seconds to finish and the remote session is ended with DELETE.
pub async fn run(
    url: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let upstream = Upstream::new(UpstreamConfig {
        headers: headers.into_iter().collect(),
        timeout_secs: timeout.as_secs().max(1),
        ..UpstreamConfig::http("remote", &url)
    })?;
    tracing::info!(url = %upstream.config.url, "relaying stdio to the remote MCP server");
    let (tx, writer) = lines::spawn_writer(tokio::io::stdout(), OUT_QUEUE);
    let out = Output::new(tx.clone());
    let remote =
        Remote::new(upstream, Output::new(tx)).ok_or("tether connect relays to an HTTP URL")?;
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        let text = match lines::read_line(&mut stdin, &mut line, MAX_LINE).await? {
            Line::Eof => break,
            Line::Text([]) => continue,
            Line::Text(text) => text,
            Line::TooLong => {
                let e = ErrorObject::new(
                    code::INVALID_REQUEST,
                    "Invalid Request: message larger than 16 MiB",
                );
                out.send(e.to_response(None)).await;
                continue;
            }
        };
        let (kind, msg) = match Message::parse(text).and_then(|m| Ok((m.kind()?, m))) {
            Ok(m) => m,
            Err(e) => {
                let e = ErrorObject::new(e.code(), e.message());
                out.send(e.to_response(None)).await;
                continue;
            }
        };
        let raw = Bytes::copy_from_slice(text);
        let route = Route::of(&msg);
        match kind {
            // Nothing else may be sent before initialize's answer: handled in line.
            Kind::Request
                if msg.method == Some(Method::Initialize) && matches!(route, Route::Session) =>
            {
                remote.initialize(&msg, raw).await;
            }
            Kind::Request => {
                let slot = slots.clone().acquire_owned().await?;
                let remote = remote.clone();
                tasks.spawn(async move {
                    remote.request(&msg, raw, &route).await;
                    drop(slot);
                });
            }
            // In line, so they reach the remote in the client's order.
            Kind::Notification | Kind::Response => remote.deliver(&msg, raw, &route).await,
        }
        while tasks.try_join_next().is_some() {}
    }
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            requests = tasks.len(),
            "stdin closed; abandoning requests still in flight"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    remote.close().await;
    drop((remote, out));
    writer.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_arguments() {
        assert_eq!(
            parse_header("Authorization: Bearer abc").unwrap(),
            ("Authorization".into(), "Bearer abc".into())
        );
        assert_eq!(parse_header("x-a:b").unwrap(), ("x-a".into(), "b".into()));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header("x: a\nb").is_err());
    }
}
