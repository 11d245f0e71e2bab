//! A request's session with an upstream: opened on first use in the
//! request's context (one per client session and upstream:
//! [invariant: isolation]), probed before reuse when it sat idle, recorded
//! in the store so another node or a restart re-attaches it, told the
//! client's log level, and relayed into the client's GET stream. Also the
//! requests Tether itself makes on it (listing every page of a catalogue), retried once on a
//! fresh session when the old one was lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tether_wire::jsonrpc::{self, Message, Method, RawObject};
use tether_wire::protocol::Era;

use super::catalog::{ListKind, Listing, Reuse};
use super::context::RequestContext;
use super::result_cache::ResultCache;
use super::session_stream;
use crate::session::ClientSession;
use crate::store::Store;
use crate::upstream::{ClientIdentity, Upstream, UpstreamError, UpstreamSession};

/// How long a request waits for a new upstream session's GET stream to
/// open before it goes on without it.
const STREAM_OPEN_WAIT: Duration = Duration::from_secs(1);

/// Pages fetched per upstream list before giving up on a runaway cursor.
const MAX_PAGES: usize = 64;

/// Hands requests their upstream sessions (see the module documentation).
pub struct Connector {
    store: Arc<Store>,
    send_timeout: Duration,
    cache: Arc<ResultCache>,
}

impl Connector {
    /// Records upstream sessions in `store`; a client that leaves a relayed
    /// message unread for `send_timeout` loses its GET stream. Tether's own
    /// list calls are answered from `cache` when they may be.
    pub fn new(store: Arc<Store>, send_timeout: Duration, cache: Arc<ResultCache>) -> Self {
        Connector {
            store,
            send_timeout,
            cache,
        }
    }

    /// The cache of upstream results.
    pub fn cache(&self) -> &Arc<ResultCache> {
        &self.cache
    }

    /// The request's session with `upstream`, opened on first use.
    pub async fn session_for(
        &self,
        ctx: &RequestContext,
        upstream: &Arc<Upstream>,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        // An upstream that takes the client's own token gets it from the
        // first request (initialize) on.
        let forwarding;
        let identity = if upstream.config.forward_client_token {
            forwarding = ClientIdentity {
                credentials: ctx.caller.credentials.clone(),
                ..ctx.identity().clone()
            };
            &forwarding
        } else {
            ctx.identity()
        };
        let (mut session, mut opened) = ctx.upstreams().get(upstream, identity).await?;
        if !opened && session.needs_validation() && !session.validate().await {
            // Dead while idle (the upstream restarted, a proxy dropped it):
            // replace it before the client's request rather than fail it.
            tracing::debug!(upstream = %upstream.name, "idle upstream session failed its probe; replaced");
            upstream
                .stats
                .sessions_replaced
                .fetch_add(1, Ordering::Relaxed);
            ctx.upstreams().evict(&session);
            (session, opened) = ctx.upstreams().get(upstream, identity).await?;
        }
        session.forward_credentials(ctx.caller.credentials.clone());
        if opened
            && session.is_reattachable()
            && let Some(client) = ctx.session()
        {
            session = self.record(client, session, identity).await;
        }
        if opened
            && session.era == Era::Legacy
            && let Some(level) = ctx.log_level()
        {
            // The client chose a log level before this upstream was in use.
            let params = serde_json::json!({ "level": level });
            if let Err(e) = session.call(Method::LoggingSetLevel, params).await {
                tracing::debug!(upstream = %upstream.name, error = %e, "logging/setLevel failed");
            }
        }
        if let Some(client) = ctx.session()
            && client.has_outbound()
        {
            self.relay_streams(client);
            // What the upstream sends on its own stream once the request is
            // there (a list change the request causes, say) must find that
            // stream open: it is not kept for a stream opened later. Whoever
            // started its relay (this request, a concurrent one, the GET).
            if opened
                && (tokio::time::timeout(STREAM_OPEN_WAIT, session.own_stream_was_tried()))
                    .await
                    .is_err()
            {
                tracing::warn!(upstream = %upstream.name, "the upstream's own stream took over {STREAM_OPEN_WAIT:?} to open; the request went on without it");
            }
        }
        Ok(session)
    }

    /// Records a client session's newly opened upstream session in the
    /// store, where the first one recorded wins on every node: when another
    /// node's is there already, that one is adopted and this one closed
    /// ([invariant: isolation]). Returns the session to use.
    async fn record(
        &self,
        client: &Arc<ClientSession>,
        opened: Arc<UpstreamSession>,
        identity: &ClientIdentity,
    ) -> Arc<UpstreamSession> {
        let upstream = &opened.upstream;
        if let Some(lost) = client.upstreams.take_evicted(&upstream.name)
            && let Err(e) = self.store.unbind(&client.id, &lost).await
        {
            tracing::warn!(error = %e, "lost upstream session not forgotten in the store");
        }
        let winner = match self.store.bind_first(&client.id, &opened.binding()).await {
            Ok(None) => return opened,
            Ok(Some(winner)) => winner,
            Err(e) => {
                tracing::warn!(error = %e, "upstream session not stored: a restart will open a new one");
                return opened;
            }
        };
        let Some(adopted) = UpstreamSession::reattach(upstream.clone(), &winner, identity) else {
            return opened;
        };
        if !client.upstreams.adopt(&opened, adopted.clone()) {
            return opened;
        }
        tracing::debug!(upstream = %upstream.name, "another node opened this session's upstream session first; adopted it");
        opened.close().await;
        adopted
    }

    /// A request Tether makes itself on the context's session with
    /// `upstream`, retried once on a fresh session when the old one was lost.
    pub async fn call(
        &self,
        ctx: &RequestContext,
        upstream: &Arc<Upstream>,
        method: Method,
        params: serde_json::Value,
    ) -> Result<Bytes, UpstreamError> {
        let raw = jsonrpc::to_raw(&params);
        let ask = self
            .cache
            .ask(&upstream.name, &method, Some(&raw), &ctx.caller.principal);
        if let Some(result) = ask.as_ref().and_then(|a| a.cached()) {
            let id = jsonrpc::to_raw("tether");
            return Ok(Bytes::from(jsonrpc::response(&id, &result)));
        }
        let mut attempt = 0;
        loop {
            let session = self.session_for(ctx, upstream).await?;
            match session.call(method.clone(), params.clone()).await {
                Ok(b) => {
                    if let Some(ask) = &ask {
                        ask.keep(&b);
                    }
                    return Ok(b);
                }
                Err(e) => {
                    if e.poisons_session() {
                        ctx.upstreams().evict(&session);
                    }
                    attempt += 1;
                    if attempt > 1 || !e.retryable(&method) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Every page of one upstream's list. A JSON-RPC error (e.g. the upstream
    /// has no prompts) counts as an empty list; transport failures are errors.
    pub async fn list_all(
        &self,
        ctx: &RequestContext,
        upstream: &Arc<Upstream>,
        kind: ListKind,
    ) -> Result<Listing, UpstreamError> {
        let mut items = Vec::new();
        let mut reuse = Reuse::UNSAID;
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let answer = self.call(ctx, upstream, kind.method(), params).await?;
            let Ok(msg) = Message::parse(&answer) else {
                return Err(UpstreamError::Protocol(
                    "list answer is not JSON-RPC".into(),
                ));
            };
            let Some(result) = msg.result else {
                return Ok(Listing {
                    items,
                    reuse: Reuse { ttl_ms: 0, ..reuse },
                });
            };
            let obj: RawObject = serde_json::from_str(result.get())
                .map_err(|_| UpstreamError::Protocol("list result is not an object".into()))?;
            reuse = reuse.and(Reuse::of(&obj));
            if let Some(page) = obj.get(kind.items_key()) {
                let page: Vec<RawObject> = serde_json::from_str(page.get()).map_err(|_| {
                    UpstreamError::Protocol(
                        format!("{} is not a list of objects", kind.items_key()).into(),
                    )
                })?;
                items.extend(page);
            }
            cursor = jsonrpc::str_member(&obj, "nextCursor");
            if cursor.is_none() {
                return Ok(Listing { items, reuse });
            }
        }
        // A runaway cursor: what was listed, not to be reused.
        Ok(Listing {
            items,
            reuse: Reuse { ttl_ms: 0, ..reuse },
        })
    }

    /// Starts relaying the streams of the client session's upstream sessions
    /// (those not relayed yet) into its GET stream.
    pub fn relay_streams(&self, client: &Arc<ClientSession>) {
        session_stream::relay_upstream_streams(client, self.send_timeout, &self.cache);
    }
}
