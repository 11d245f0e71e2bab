//! Newline-delimited JSON-RPC over stdin/stdout with one implicit session.
//!
//! Requests run concurrently so `sample` can wait for the client's response
//! line; every message (progress, sampling requests, results) goes through one
//! writer task, one line each. Nothing but protocol messages is written to stdout.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio::io::BufReader;
use tokio::sync::mpsc::Sender;

use super::{
    Call, ClientCaps, MAX_BODY, Session, Shared, initialize_result, params_of, route,
    validate_modern,
};
use tether_wire::jsonrpc::{ErrorObject, Kind, Message, code, response, to_raw};
use tether_wire::lines::{self, Line};
use tether_wire::protocol::Era;

/// How long in-flight requests may still answer after stdin closes.
const DRAIN: Duration = Duration::from_secs(2);

pub(super) async fn serve(shared: Arc<Shared>) -> io::Result<()> {
    let session = Arc::new(Session::new(ClientCaps::default()));
    let (tx, writer) = lines::spawn_writer(tokio::io::stdout(), 64);
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        match lines::read_line(&mut stdin, &mut line, MAX_BODY).await? {
            Line::Eof => break,
            Line::TooLong => {
                let e = ErrorObject::new(
                    code::INVALID_REQUEST,
                    "Invalid Request: message larger than 4 MiB",
                );
                let _ = tx.send(e.to_response(None)).await;
            }
            Line::Text(text) if !text.is_empty() => handle(&shared, &session, &tx, text).await,
            Line::Text(_) => {}
        }
    }
    // Nobody can answer sampling requests any more; let waiting calls finish.
    session.pending.clear();
    drop(tx);
    match tokio::time::timeout(DRAIN, writer).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(io::Error::other(e)),
        Err(_) => Ok(()),
    }
}

async fn handle(shared: &Arc<Shared>, session: &Arc<Session>, tx: &Sender<Vec<u8>>, line: &[u8]) {
    let (kind, msg) = match Message::parse(line).and_then(|m| Ok((m.kind()?, m))) {
        Ok(m) => m,
        Err(e) => {
            return send(
                tx,
                ErrorObject::new(e.code(), e.message()).to_response(None),
            )
            .await;
        }
    };
    let params = params_of(&msg);
    let (Kind::Request, Some(method), Some(id)) = (kind, msg.method.map(|m| m.to_string()), msg.id)
    else {
        if kind == Kind::Response {
            session.deliver(serde_json::from_slice(line).unwrap_or(Value::Null));
        }
        return; // notifications need no answer
    };
    let era = match route(shared.era, Some(&method), &params, None) {
        Ok(era) => era,
        Err(e) => return send(tx, e.to_response(Some(&id))).await,
    };
    if era == Era::Modern {
        shared.modern_requests.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = validate_modern(&params, None) {
            return send(tx, e.to_response(Some(&id))).await;
        }
    } else if method == "initialize" {
        let (result, caps) = initialize_result(shared.profile, &params);
        session.set_caps(caps);
        shared.initializes.fetch_add(1, Ordering::Relaxed);
        return send(tx, response(&id, &to_raw(&result))).await;
    }
    let mut call = Call::new(shared, era, Some(session.clone()), params);
    call.out = Some(tx.clone());
    let tx = tx.clone();
    tokio::spawn(async move { send(&tx, call.run(&method, &id).await.1).await });
}

async fn send(tx: &Sender<Vec<u8>>, message: Vec<u8>) {
    let _ = tx.send(message).await;
}
