//! The router: given one client message in its [`RequestContext`], decides
//! which upstream(s) serve it and hands back an [`Outcome`] — a message, a
//! live stream, or 202. It never sees HTTP.
//!
//! A request goes, in order: era rules (a method that does not exist in the
//! client's era is unknown), a modern client's retry carrying input for a
//! waiting call, the requests Tether answers itself, then by endpoint — one
//! upstream (forwarded unchanged, save for policy filtering) or the
//! federated catalogue (lists merged, names and URIs routed back). Each
//! forwarded request goes through the [`forward`] module to the request's
//! upstream session ([`connector`]).

mod catalog;
mod connector;
mod context;
mod era_results;
mod federation;
mod forward;
mod input_required;
mod input_rounds;
mod listen;
mod log_level;
mod outcome;
mod param_mirror;
mod progress_swap;
mod reply_relay;
mod result_cache;
mod server_requests;
mod session_stream;
mod subscriptions;
mod task_relay;
mod task_runs;
mod tasks;
mod waiting_calls;

pub use context::{RequestContext, RequestOptions};
pub use era_results::add_cache_fields;
pub use outcome::Outcome;

use std::sync::Arc;
use std::time::Duration;

use tether_wire::jsonrpc::{
    self, Incoming, Method, Notification, RawObject, Request, Response, code,
};
use tether_wire::protocol::Era;
use tether_wire::subscriptions::Filter;

use crate::config::{CacheConfig, FederationConfig, TasksConfig};
use crate::metrics::Metrics;
use crate::session::{ClientSession, PendingRequest, Scope};
use crate::store::Store;
use crate::sync::Closing;
use crate::upstream::{Upstream, UpstreamSet, Upstreams};
use catalog::ListKind;
use connector::Connector;
use federation::Federation;
use forward::Forwarder;
use outcome::{error, forbidden, method_not_found, resource_not_found};
use result_cache::ResultCache;
use tasks::Tasks;
use waiting_calls::WaitingCalls;

/// The cluster node a modern request must be served on, if it names one:
/// the node a retry's Tether-issued `requestState` names (its call waits
/// there), or the one running the task a `tasks/update` or `tasks/cancel`
/// is for.
pub fn waiting_node(request: &Request) -> Option<String> {
    if let Some(node) = tasks::run_node(request) {
        return Some(node);
    }
    let state = waiting_calls::request_state(request)?;
    waiting_calls::state_node(&state).map(str::to_owned)
}

/// Time limits of the router.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Bounds closing one client's upstream sessions.
    pub close: Duration,
    /// How long a client may leave a relayed message unread before it is cut off.
    pub send: Duration,
}

/// The router over all configured upstreams (see the module documentation).
pub struct Router {
    upstreams: Arc<UpstreamSet>,
    connector: Arc<Connector>,
    forwarder: Arc<Forwarder>,
    federation: Federation,
    tasks: Arc<Tasks>,
    waiting: Arc<WaitingCalls>,
    store: Arc<Store>,
    close_timeout: Duration,
    send_timeout: Duration,
    /// Ends the `subscriptions/listen` streams Tether serves at shutdown.
    listens: Closing,
}

impl Router {
    /// The router over `upstreams`; client sessions' upstream sessions are
    /// recorded in `store` as they open.
    /// `node`: this node's id in a cluster.
    pub fn new(
        upstreams: Arc<UpstreamSet>,
        (federation, cache, tasks): (FederationConfig, CacheConfig, TasksConfig),
        metrics: Arc<Metrics>,
        store: Arc<Store>,
        timeouts: Timeouts,
        node: Option<Arc<str>>,
    ) -> Self {
        let cache = Arc::new(ResultCache::new(cache, metrics.clone()));
        let connector = Arc::new(Connector::new(store.clone(), timeouts.send, cache));
        let waiting = Arc::new(WaitingCalls::on_node(node.clone()));
        let forwarder = Arc::new(Forwarder::new(
            connector.clone(),
            waiting.clone(),
            timeouts.send,
        ));
        Router {
            tasks: Arc::new(Tasks::new(store.clone(), tasks, forwarder.clone(), node)),
            forwarder,
            federation: Federation::new(upstreams.clone(), connector.clone(), federation, metrics),
            upstreams,
            connector,
            waiting,
            store,
            close_timeout: timeouts.close,
            send_timeout: timeouts.send,
            listens: Closing::default(),
        }
    }

    /// How long closing one client's upstream sessions may take.
    pub fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// Closes every call still waiting for client input, and stops the
    /// tasks this node runs (shutdown).
    pub async fn close_waiting(&self) {
        tokio::join!(self.waiting.close_all(), self.tasks.runs().stop_all());
    }

    /// Ends the `subscriptions/listen` streams Tether serves, and any opened
    /// from now on (shutdown).
    pub fn close_listens(&self) {
        self.listens.close_all();
    }

    /// The upstreams now, in definition order.
    pub fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams.snapshot()
    }

    /// An upstream by name.
    pub fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// Starts relaying the client session's upstream streams into its GET stream.
    pub fn relay_upstream_streams(&self, session: &Arc<ClientSession>) {
        self.connector.relay_streams(session);
    }

    /// The request's session with `upstream` and what the upstream says
    /// about itself (its `initialize` or `server/discover` result).
    pub async fn describe_upstream(
        &self,
        ctx: &RequestContext,
        upstream: &Arc<Upstream>,
    ) -> Result<Arc<serde_json::value::RawValue>, crate::upstream::UpstreamError> {
        // Through the connector, like any first use: the session is recorded
        // in the store, so a restart or another node re-attaches it.
        let session = self.connector.session_for(ctx, upstream).await?;
        session.server_description().await
    }

    /// Handles one client message.
    pub async fn handle(&self, ctx: Arc<RequestContext>, incoming: Incoming) -> Outcome {
        match incoming {
            Incoming::Request(request) => self.request(ctx, request).await,
            Incoming::Notification(notification) => self.notification(&ctx, notification).await,
            Incoming::Response(response) => self.response(&ctx, response).await,
        }
    }

    /// Handles one client request.
    pub async fn request(&self, ctx: Arc<RequestContext>, request: Request) -> Outcome {
        if !request.method.exists_in(ctx.era) {
            return method_not_found(&request, ctx.era);
        }
        if ctx.era == Era::Modern
            && let Some(state) = waiting_calls::request_state(&request)
        {
            if tasks::declared(&ctx) {
                return Box::pin(self.tasks.resume(&ctx, &state, request)).await;
            }
            return self.forwarder.resume_waiting(&ctx, &state, request).await;
        }
        match request.method {
            Method::Ping => outcome::empty_answer(&request),
            Method::LoggingSetLevel => log_level::set_log_level(&self.store, &ctx, &request).await,
            Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
                self.subscription(&ctx, request).await
            }
            Method::TasksGet | Method::TasksUpdate | Method::TasksCancel
                if ctx.era == Era::Modern =>
            {
                self.tasks.method(&ctx, &self.upstreams, request).await
            }
            _ => match ctx.scope.clone() {
                Scope::Single(name) => self.single(&ctx, &name, request).await,
                Scope::Federated => self.federated(&ctx, request).await,
            },
        }
    }

    /// `/u/<upstream>/mcp`: everything goes to the one upstream, unchanged,
    /// save what the caller's policy keeps out.
    async fn single(&self, ctx: &Arc<RequestContext>, name: &str, request: Request) -> Outcome {
        let Some(upstream) = self.upstreams.get(name) else {
            return error(
                &request,
                code::INTERNAL_ERROR,
                format!("upstream {name:?} is not configured"),
            );
        };
        let access = ctx.access();
        if !access.reaches_upstream(name) {
            return forbidden(&request, &format!("upstream {name}"));
        }
        if request.method == Method::SubscriptionsListen {
            return self.listen(ctx, request, Some(upstream)).await;
        }
        if !access.restricts() {
            if request.method == Method::ToolsCall {
                return self.call_tool(ctx, &upstream, request, None).await;
            }
            return self.forwarder.forward(ctx, &upstream, request, None).await;
        }
        match request.method {
            Method::ToolsList => {
                self.federation
                    .permitted_tools(ctx, &upstream, &request)
                    .await
            }
            Method::ToolsCall => {
                let Ok(params) = request.params_object() else {
                    return error(&request, code::INVALID_PARAMS, "params must be an object");
                };
                let tool = jsonrpc::str_member(&params, "name").unwrap_or_default();
                if !access.reaches_tool(name, &tool) {
                    return forbidden(&request, &format!("tool {tool}"));
                }
                // The checked name is the one sent (raw bytes could repeat the key).
                self.call_tool(ctx, &upstream, request, Some(params)).await
            }
            _ => self.forwarder.forward(ctx, &upstream, request, None).await,
        }
    }

    /// `/mcp`: the federated catalogue.
    async fn federated(&self, ctx: &Arc<RequestContext>, request: Request) -> Outcome {
        let list = |kind| self.federation.list(ctx, kind, &request);
        match request.method {
            Method::ToolsList => list(ListKind::Tools).await,
            Method::PromptsList => list(ListKind::Prompts).await,
            Method::ResourcesList => list(ListKind::Resources).await,
            Method::ResourcesTemplatesList => list(ListKind::Templates).await,
            Method::ToolsCall => self.call_named(ctx, ListKind::Tools, request).await,
            Method::PromptsGet => self.call_named(ctx, ListKind::Prompts, request).await,
            Method::ResourcesRead => self.read_resource(ctx, request).await,
            Method::CompletionComplete => self.complete(ctx, request).await,
            Method::SubscriptionsListen => self.listen(ctx, request, None).await,
            // Answered before routing, or by the transport (the handshake
            // and `server/discover`): nothing to federate.
            Method::Initialize
            | Method::Ping
            | Method::ServerDiscover
            | Method::LoggingSetLevel
            | Method::ResourcesSubscribe
            | Method::ResourcesUnsubscribe
            // What servers ask clients, and notifications: not client requests.
            | Method::SamplingCreateMessage
            | Method::ElicitationCreate
            | Method::RootsList
            | Method::Initialized
            | Method::Cancelled
            | Method::Progress
            | Method::LogMessage
            | Method::ToolsListChanged
            | Method::PromptsListChanged
            | Method::ResourcesListChanged
            | Method::ResourceUpdated
            | Method::SubscriptionsAcknowledged
            // A modern client's task methods are answered before routing;
            // the 2025-11-25 ones are not federated.
            | Method::TasksGet
            | Method::TasksUpdate
            | Method::TasksCancel
            | Method::Other(_) => method_not_found(&request, ctx.era),
        }
    }

    /// `subscriptions/listen`: on `/u/<upstream>/mcp` (`single`) one stream
    /// over that upstream, on `/mcp` over every upstream the caller reaches,
    /// each resource asked of the upstream serving it (see `listen`).
    async fn listen(
        &self,
        ctx: &Arc<RequestContext>,
        request: Request,
        single: Option<Arc<Upstream>>,
    ) -> Outcome {
        let requested = request
            .params_object()
            .ok()
            .and_then(|p| serde_json::from_str(p.get("notifications")?.get()).ok())
            .map(|n: serde_json::Value| Filter::requested(&n))
            .unwrap_or_default();
        let access = ctx.access();
        // Heard from now on: no change between here and the acknowledgement is lost.
        let changes = self.upstreams.changes();
        let only = single.as_ref().map(|u| u.name.clone());
        let lists = Filter {
            uris: Vec::new(),
            ..requested.clone()
        };
        let shares = match single {
            Some(upstream) => vec![listen::Share {
                upstream,
                filter: requested,
            }],
            None => {
                let mut shares: Vec<listen::Share> = (self.upstreams.snapshot().iter())
                    .filter(|u| access.reaches_upstream(&u.name))
                    .map(|upstream| listen::Share {
                        upstream: upstream.clone(),
                        filter: lists.clone(),
                    })
                    .collect();
                let serving = self
                    .federation
                    .resolve_resources(ctx, &requested.uris)
                    .await;
                for (uri, serving) in requested.uris.iter().zip(serving) {
                    let Some(serving) = serving else {
                        continue;
                    };
                    if let Some(share) = shares.iter_mut().find(|s| s.upstream.name == serving.name)
                    {
                        share.filter.uris.push(uri.clone());
                    }
                }
                shares
            }
        };
        let catalog = listen::CatalogChanges {
            changes,
            only,
            lists,
        };
        listen::serve(
            &self.connector,
            ctx,
            (&request, shares, catalog),
            &self.listens,
            self.send_timeout,
        )
        .await
    }

    /// `tools/call` or `prompts/get` by an exposed name: to the upstream
    /// behind it, under its original name.
    async fn call_named(
        &self,
        ctx: &Arc<RequestContext>,
        kind: ListKind,
        request: Request,
    ) -> Outcome {
        let mut params = match request.params_object() {
            Ok(p) => p,
            Err(e) => return error(&request, code::INVALID_PARAMS, e.message()),
        };
        let Some(exposed) = jsonrpc::str_member(&params, "name") else {
            return error(&request, code::INVALID_PARAMS, "params.name is required");
        };
        let Some((upstream, original)) = self.federation.resolve_named(ctx, kind, &exposed).await
        else {
            let what = if kind == ListKind::Tools {
                "tool"
            } else {
                "prompt"
            };
            return error(
                &request,
                code::INVALID_PARAMS,
                format!("Unknown {what}: {exposed}"),
            );
        };
        let access = ctx.access();
        let permitted = match kind {
            ListKind::Tools => access.reaches_tool(&upstream.name, &exposed),
            _ => access.reaches_upstream(&upstream.name),
        };
        if !permitted {
            return forbidden(&request, &exposed);
        }
        params.insert("name".into(), jsonrpc::to_raw(&original));
        match kind {
            ListKind::Tools => self.call_tool(ctx, &upstream, request, Some(params)).await,
            _ => {
                self.forwarder
                    .forward(ctx, &upstream, request, Some(params))
                    .await
            }
        }
    }

    /// A `tools/call` to `upstream`: through the tasks extension when the
    /// client declared it (a task may come back), else forwarded.
    async fn call_tool(
        &self,
        ctx: &Arc<RequestContext>,
        upstream: &Arc<Upstream>,
        request: Request,
        params: Option<RawObject>,
    ) -> Outcome {
        if tasks::declared(ctx) {
            // Boxed: the common path's future stays as small as it was.
            return Box::pin(self.tasks.call(ctx, upstream, request, params)).await;
        }
        self.forwarder.forward(ctx, upstream, request, params).await
    }

    /// `resources/read`: to the upstream serving the URI.
    async fn read_resource(&self, ctx: &Arc<RequestContext>, request: Request) -> Outcome {
        let params = match request.params_object() {
            Ok(p) => p,
            Err(e) => return error(&request, code::INVALID_PARAMS, e.message()),
        };
        let Some(uri) = jsonrpc::str_member(&params, "uri") else {
            return error(&request, code::INVALID_PARAMS, "params.uri is required");
        };
        match self.federation.resolve_resource(ctx, &uri).await {
            Some(up) if !ctx.access().reaches_upstream(&up.name) => {
                forbidden(&request, &format!("resource {uri}"))
            }
            Some(up) => self.forwarder.forward(ctx, &up, request, None).await,
            None => resource_not_found(&request, ctx.era, &uri),
        }
    }

    /// `completion/complete`: to the upstream of the prompt or resource it refers to.
    async fn complete(&self, ctx: &Arc<RequestContext>, request: Request) -> Outcome {
        let mut params = match request.params_object() {
            Ok(p) => p,
            Err(e) => return error(&request, code::INVALID_PARAMS, e.message()),
        };
        let reference: Option<RawObject> = params
            .get("ref")
            .and_then(|r| serde_json::from_str(r.get()).ok());
        let Some(mut reference) = reference else {
            return error(&request, code::INVALID_PARAMS, "params.ref is required");
        };
        match jsonrpc::str_member(&reference, "type").as_deref() {
            Some("ref/prompt") => {
                let name = jsonrpc::str_member(&reference, "name").unwrap_or_default();
                let Some((upstream, original)) = self
                    .federation
                    .resolve_named(ctx, ListKind::Prompts, &name)
                    .await
                else {
                    return error(
                        &request,
                        code::INVALID_PARAMS,
                        format!("Unknown prompt: {name}"),
                    );
                };
                if !ctx.access().reaches_upstream(&upstream.name) {
                    return forbidden(&request, &format!("prompt {name}"));
                }
                reference.insert("name".into(), jsonrpc::to_raw(&original));
                params.insert("ref".into(), jsonrpc::to_raw(&reference));
                self.forwarder
                    .forward(ctx, &upstream, request, Some(params))
                    .await
            }
            Some("ref/resource") => {
                let uri = jsonrpc::str_member(&reference, "uri").unwrap_or_default();
                match self.federation.resolve_resource(ctx, &uri).await {
                    Some(up) if !ctx.access().reaches_upstream(&up.name) => {
                        forbidden(&request, &format!("resource {uri}"))
                    }
                    Some(up) => self.forwarder.forward(ctx, &up, request, None).await,
                    None => resource_not_found(&request, ctx.era, &uri),
                }
            }
            _ => error(
                &request,
                code::INVALID_PARAMS,
                "params.ref.type must be ref/prompt or ref/resource",
            ),
        }
    }

    /// `resources/(un)subscribe`: to the upstream serving the URI.
    async fn subscription(&self, ctx: &Arc<RequestContext>, request: Request) -> Outcome {
        let Some(uri) = request.str_param("uri") else {
            return error(&request, code::INVALID_PARAMS, "params.uri is required");
        };
        let upstream = match &ctx.scope {
            Scope::Single(name) => self.upstreams.get(name),
            Scope::Federated => self.federation.resolve_resource(ctx, &uri).await,
        };
        match upstream {
            Some(up) if !ctx.access().reaches_upstream(&up.name) => {
                forbidden(&request, &format!("resource {uri}"))
            }
            Some(up) => {
                subscriptions::subscribe(&self.connector, &self.forwarder, ctx, &up, request, uri)
                    .await
            }
            None => resource_not_found(&request, ctx.era, &uri),
        }
    }

    /// A client notification: passed to the client's legacy upstream sessions
    /// (`notifications/initialized` is Tether's own business with each).
    async fn notification(&self, ctx: &RequestContext, notification: Notification) -> Outcome {
        if notification.method != Method::Initialized {
            let sessions = ctx.upstreams().sessions();
            let sends = sessions
                .iter()
                .filter(|s| s.era == Era::Legacy)
                .map(|s| s.send_message(notification.raw.clone()));
            futures_util::future::join_all(sends).await;
        }
        Outcome::Accepted
    }

    /// A client's answer to a request Tether relayed or made: back to the
    /// upstream session that asked (under its own id), or to the call
    /// waiting for it inside Tether.
    async fn response(&self, ctx: &RequestContext, response: Response) -> Outcome {
        let pending = ctx
            .session()
            .and_then(|s| s.take_pending(response.id_text()));
        match pending {
            None => tracing::debug!("client response for no pending request; dropped"),
            Some(PendingRequest::Upstream {
                session,
                original_id,
            }) => {
                if let Err(e) = session.send_message(response.with_id(&original_id)).await {
                    tracing::warn!(upstream = %session.upstream.name, error = %e, "relaying client response upstream failed");
                }
            }
            Some(PendingRequest::Local(waiting)) => {
                let _ = waiting.send(response);
            }
        }
        Outcome::Accepted
    }
}
