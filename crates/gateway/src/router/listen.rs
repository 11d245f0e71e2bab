//! `subscriptions/listen` (2026-07-28) served by Tether: on the federated
//! `/mcp` one stream fans in every upstream the caller reaches; on
//! `/u/<upstream>/mcp` it covers that upstream (a legacy one, which has no
//! such method, bridged). Each upstream is asked in its own era: a modern one with a
//! listen stream of its own for its share of the filter (the resources it
//! serves), a legacy one by its GET stream and a `resources/subscribe` per
//! resource. The client's stream opens with the acknowledgement of what it
//! will carry; every notification on it passes the filter and carries the
//! client's subscription id. Changes of Tether's own catalogue (an upstream
//! added, replaced, removed, or its health changed) are list changes too.
//! It ends when the client leaves or Tether shuts down; an upstream stream
//! that ends is opened again, with backoff.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tether_wire::jsonrpc::{Kind, Message, Method, Request};
use tether_wire::protocol::Era;
use tether_wire::subscriptions::{self, Filter};
use tokio::sync::{broadcast, mpsc};

use super::connector::Connector;
use super::context::RequestContext;
use super::listen_stream::open_acknowledged;
use super::outcome::Outcome;
use super::result_cache::ResultCache;
use super::server_requests::relay_server_request;
use crate::sync::Closing;
use crate::upstream::{EventStream, Upstream, UpstreamSession};

/// Messages buffered for a client's listen stream; a client that leaves
/// them unread for the send timeout loses the stream [invariant: bounded].
const QUEUE: usize = 32;
/// Longest wait between attempts to open an upstream's stream again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One upstream's part of a listen stream: the list changes asked for, and
/// the resources it serves among those asked for.
pub struct Share {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// Its part of the filter.
    pub filter: Filter,
}

/// Changes of Tether's own catalogue a listen stream hears: those touching
/// `only` (an upstream's own endpoint), or any (`None`: federated), as the
/// list changes the client asked for.
pub struct CatalogChanges {
    /// Announced changes (names of the upstreams touched).
    pub changes: broadcast::Receiver<Arc<[Arc<str>]>>,
    /// The one upstream the stream covers, if not all.
    pub only: Option<Arc<str>>,
    /// The list changes asked for (Tether honours them all: its own
    /// catalogue changes are list changes, whatever the upstreams report).
    pub lists: Filter,
}

/// Serves `request` (a `subscriptions/listen`) with `shares` and `catalog`'s
/// changes. `closing` ends the stream at shutdown; `send_timeout` bounds a
/// slow client.
pub async fn serve(
    connector: &Arc<Connector>,
    ctx: &Arc<RequestContext>,
    (request, shares, catalog): (&Request, Vec<Share>, CatalogChanges),
    closing: &Closing,
    send_timeout: Duration,
) -> Outcome {
    let subscription: Value = serde_json::from_str(request.id.get()).unwrap_or(Value::Null);
    let opened = futures_util::future::join_all(
        shares
            .into_iter()
            .map(|share| attach(connector, ctx, share)),
    )
    .await;
    let feeds: Vec<Feed> = opened.into_iter().flatten().collect();
    let mut honoured = catalog.lists.clone();
    for feed in &feeds {
        honoured.uris.extend(feed.filter.uris.iter().cloned());
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let ack = subscriptions::acknowledged(&honoured, &subscription);
    let _ = tx.try_send(Bytes::from(ack.to_string()));
    let relay = Relay {
        _ctx: ctx.clone(),
        cache: connector.cache().clone(),
        tx,
        subscription,
        send_timeout,
    };
    spawn_until(closing, relay.clone().catalog(catalog));
    for feed in feeds {
        spawn_until(closing, relay.clone().run(feed));
    }
    Outcome::Stream(rx)
}

/// Runs `task` until it ends or Tether shuts down.
fn spawn_until(closing: &Closing, task: impl Future<Output = ()> + Send + 'static) {
    let closed = closing.closed();
    tokio::spawn(async move {
        tokio::select! {
            () = task => {}
            () = closed => {}
        }
    });
}

/// An upstream's stream of changes, as attached.
struct Feed {
    session: Arc<UpstreamSession>,
    stream: Box<EventStream>,
    /// What it was asked for and took.
    filter: Filter,
}

/// Asks one upstream for its share; `None` when it cannot be listened to.
async fn attach(connector: &Connector, ctx: &RequestContext, share: Share) -> Option<Feed> {
    let name = share.upstream.name.clone();
    let session = match connector.session_for(ctx, &share.upstream).await {
        Ok(session) => session,
        Err(e) => {
            tracing::debug!(upstream = %name, error = %e, "not listened to");
            return None;
        }
    };
    // An upstream that never acknowledges holds no one's stream open.
    let limit = share.upstream.config.timeout();
    let opened = tokio::time::timeout(limit, open_feed(&session, share.filter)).await;
    let (stream, filter) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(why)) => {
            tracing::debug!(upstream = %name, %why, "not listened to");
            return None;
        }
        Err(_) => {
            tracing::debug!(upstream = %name, "not listened to: no acknowledgement in time");
            return None;
        }
    };
    Some(Feed {
        session,
        stream,
        filter,
    })
}

/// Opens `session`'s stream of changes for `filter`; what it takes of it.
async fn open_feed(
    session: &Arc<UpstreamSession>,
    mut filter: Filter,
) -> Result<(Box<EventStream>, Filter), String> {
    match session.era {
        Era::Modern => open_acknowledged(session, &filter)
            .await
            .map_err(|e| e.to_string()),
        Era::Legacy => {
            let stream = session.listen().await.map_err(|e| e.to_string())?;
            let mut taken = Vec::new();
            for uri in filter.uris.drain(..) {
                let answer = session
                    .call(Method::ResourcesSubscribe, json!({ "uri": uri }))
                    .await;
                match answer.map(|body| Message::parse(&body).map(|m| m.result.is_some())) {
                    Ok(Ok(true)) => taken.push(uri),
                    _ => {
                        tracing::debug!(upstream = %session.upstream.name, %uri, "subscription refused")
                    }
                }
            }
            filter.uris = taken;
            Ok((Box::new(stream), filter))
        }
    }
}

/// Relays one source of changes into the client's listen stream.
#[derive(Clone)]
struct Relay {
    /// Keeps the request's upstream sessions open while it listens.
    _ctx: Arc<RequestContext>,
    /// What the upstream's notifications make stale is dropped here.
    cache: Arc<ResultCache>,
    tx: mpsc::Sender<Bytes>,
    subscription: Value,
    send_timeout: Duration,
}

impl Relay {
    /// Until the client leaves; the upstream's stream is opened again
    /// whenever it ends.
    async fn run(self, mut feed: Feed) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let item = tokio::select! {
                item = feed.stream.next_message() => item,
                () = self.tx.closed() => return,
            };
            match item {
                Some(Ok(bytes)) => {
                    if !self.relay(&feed.session, &feed.filter, &bytes).await {
                        return;
                    }
                    backoff = Duration::from_secs(1);
                }
                Some(Err(_)) | None => {
                    if feed.session.is_closed() {
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.tx.closed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    let again = open_feed(&feed.session, feed.filter.clone());
                    let opened = tokio::select! {
                        opened = again => opened,
                        () = self.tx.closed() => return,
                    };
                    match opened {
                        Ok((stream, _)) => feed.stream = stream,
                        Err(why) => {
                            tracing::debug!(upstream = %feed.session.upstream.name, %why, "listening again failed")
                        }
                    }
                }
            }
        }
    }

    /// Announces Tether's own catalogue changes as the list changes `lists`
    /// lets through, until the client leaves.
    async fn catalog(self, mut catalog: CatalogChanges) {
        loop {
            let change = tokio::select! {
                change = catalog.changes.recv() => change,
                () = self.tx.closed() => return,
            };
            let touches = match change {
                Ok(touched) => catalog
                    .only
                    .as_ref()
                    .is_none_or(|only| touched.iter().any(|t| t == only)),
                // Missed some: say everything may have changed.
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !touches {
                continue;
            }
            for method in [
                Method::ToolsListChanged,
                Method::PromptsListChanged,
                Method::ResourcesListChanged,
            ] {
                if catalog.lists.wants(&method, None)
                    && !self
                        .send(json!({"jsonrpc": "2.0", "method": method.as_str()}))
                        .await
                {
                    return;
                }
            }
        }
    }

    /// Sends one notification, tagged; false when the client is gone or
    /// stopped reading.
    async fn send(&self, notification: Value) -> bool {
        let out = subscriptions::tagged(notification, &self.subscription);
        matches!(
            tokio::time::timeout(
                self.send_timeout,
                self.tx.send(Bytes::from(out.to_string()))
            )
            .await,
            Ok(Ok(()))
        )
    }

    /// Relays one upstream message if it is a wanted change; false when
    /// the client is gone or stopped reading.
    async fn relay(&self, session: &Arc<UpstreamSession>, filter: &Filter, bytes: &[u8]) -> bool {
        let Ok(msg) = Message::parse(bytes) else {
            return true;
        };
        if matches!(msg.kind(), Ok(Kind::Request)) {
            // Nobody here to ask (a ping, sampling): refused, not left hanging.
            relay_server_request(None, session, msg).await;
            return true;
        }
        self.cache.invalidate_by(&session.upstream.name, &msg);
        let (Ok(Kind::Notification), Some(method)) = (msg.kind(), msg.method.as_ref()) else {
            return true;
        };
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            return true;
        };
        let uri = value["params"]["uri"].as_str();
        if !filter.wants(method, uri) {
            return true;
        }
        self.send(value).await
    }
}
