//! The router: given one client message in its [`RequestContext`], decides
//! which upstream(s) serve it and hands back an [`Outcome`] — a message, a
//! live stream, or 202. It never sees HTTP.
//!
//! A request goes, in order: era rules (a method that does not exist in the
//! client's era is unknown), a modern client's retry carrying input for a
//! waiting call, the requests Tether answers itself, then by endpoint — one
//! upstream (forwarded unchanged, save for policy filtering and the
//! upstream's tool shapes), the federated catalogue (lists merged, names and
//! URIs routed back) or a virtual server's part of it. A tool call is
//! checked on the real tool behind the name it was made with (policy,
//! [`call_limits`]) whatever the endpoint, alias or meta-tool
//! ([`tool_search`]). Each forwarded request goes through the [`forward`]
//! module to the request's upstream session ([`connector`]).

mod call_limits;
mod catalog;
mod connector;
mod context;
mod era_results;
mod federation;
mod forward;
mod input_required;
mod input_rounds;
mod listen;
mod listen_stream;
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
mod tool_search;
mod waiting_calls;

pub use call_limits::retry_after;
pub use context::{RequestContext, RequestOptions};
pub use era_results::add_cache_fields;
pub use outcome::Outcome;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tether_wire::jsonrpc::{
    self, Incoming, Method, Notification, RawObject, Request, Response, code,
};
use tether_wire::protocol::Era;
use tether_wire::subscriptions::Filter;

use crate::cluster::Cluster;
use crate::config::{CacheConfig, FederationConfig, TasksConfig};
use crate::metrics::Metrics;
use crate::session::{ClientSession, PendingRequest, Scope};
use crate::shaping::fix_arguments;
use crate::store::Store;
use crate::sync::Closing;
use crate::upstream::{Upstream, UpstreamSet, Upstreams};
use crate::virtual_servers::{VirtualServer, VirtualServers};
use call_limits::CallLimits;
use catalog::{ListKind, Reuse};
use connector::Connector;
use context::ToolCall;
use federation::Federation;
use forward::Forwarder;
use outcome::{answer, error, forbidden, method_not_found, resource_not_found};
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

/// A tool call by a shown name: the name its upstream shows (`shown`), the
/// one the client used (`exposed`, for messages), arguments the endpoint
/// fixes besides the upstream's, and the arguments the client sent when
/// the call was unwrapped from `call_tool` (`Some(None)`: none).
struct ShownCall<'a> {
    shown: &'a str,
    exposed: &'a str,
    fixed: Option<&'a serde_json::Map<String, serde_json::Value>>,
    unwrapped_from: UnwrappedFrom,
}

/// The arguments the client sent to `call_tool` when a call was unwrapped
/// from it (`Some(None)`: none), else `None`.
type UnwrappedFrom = Option<Option<Box<serde_json::value::RawValue>>>;

/// Whose tools a search ranks: `/mcp`'s or a virtual server's (federated),
/// or one upstream's on `/u/<upstream>/mcp`.
#[derive(Clone, Copy)]
enum ToolsOf<'a> {
    Endpoint(Option<&'a VirtualServer>),
    Upstream(&'a Arc<Upstream>),
}

/// `tools/list` on an endpoint with progressive discovery: the meta-tools.
fn meta_tools_listed(ctx: &RequestContext, request: &Request) -> Outcome {
    let meta = tool_search::meta_tools();
    federation::list_answer(ctx, ListKind::Tools, request, meta, Reuse::NONE)
}

/// The answer for a tool or prompt name the endpoint does not show.
fn unknown(request: &Request, kind: ListKind, name: &str) -> Outcome {
    let what = if kind == ListKind::Tools {
        "tool"
    } else {
        "prompt"
    };
    error(
        request,
        code::INVALID_PARAMS,
        format!("Unknown {what}: {name}"),
    )
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
    /// `/mcp` lists the meta-tools instead of the catalogue.
    progressive: bool,
    virtual_servers: Arc<VirtualServers>,
    limits: CallLimits,
    tasks: Arc<Tasks>,
    waiting: Arc<WaitingCalls>,
    store: Arc<Store>,
    close_timeout: Duration,
    send_timeout: Duration,
    /// Ends the `subscriptions/listen` streams Tether serves at shutdown.
    listens: Closing,
}

impl Router {
    /// The router over `upstreams` and `virtual_servers`; client sessions'
    /// upstream sessions are recorded in `store` as they open; `cluster`:
    /// the cluster this node is part of.
    pub fn new(
        (upstreams, virtual_servers): (Arc<UpstreamSet>, Arc<VirtualServers>),
        (federation, cache, tasks): (FederationConfig, CacheConfig, TasksConfig),
        metrics: Arc<Metrics>,
        store: Arc<Store>,
        timeouts: Timeouts,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        let node = cluster.as_ref().map(|c| c.node().clone());
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
            progressive: federation.progressive_discovery,
            virtual_servers,
            limits: CallLimits::new(cluster),
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

    /// A virtual server by name.
    pub fn virtual_server(&self, name: &str) -> Option<Arc<VirtualServer>> {
        self.virtual_servers.get(name)
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
                Scope::Federated => self.federated(&ctx, request, None).await,
                Scope::Virtual(name) => match self.virtual_servers.get(&name) {
                    Some(server) => self.federated(&ctx, request, Some(&server)).await,
                    None => error(
                        &request,
                        code::INVALID_REQUEST,
                        format!("virtual server {name:?} no longer exists"),
                    ),
                },
            },
        }
    }

    /// `/u/<upstream>/mcp`: everything goes to the one upstream, unchanged,
    /// save what the caller's policy keeps out and the upstream's tool
    /// shapes and call limits.
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
            return self.listen(ctx, request, Some(upstream), None).await;
        }
        if !access.restricts() && upstream.serving().is_plain() {
            if request.method == Method::ToolsCall {
                return self.call_tool(ctx, &upstream, request, None).await;
            }
            return self.forwarder.forward(ctx, &upstream, request, None).await;
        }
        let progressive = upstream.serving().progressive;
        match request.method {
            Method::ToolsList if progressive => meta_tools_listed(ctx, &request),
            Method::ToolsList => self.federation.shown_tools(ctx, &upstream, &request).await,
            Method::ToolsCall => {
                let Ok(mut params) = request.params_object() else {
                    return error(&request, code::INVALID_PARAMS, "params must be an object");
                };
                let mut unwrapped_from = None;
                if progressive {
                    let tools = ToolsOf::Upstream(&upstream);
                    match self.through_meta_tools(ctx, &request, params, tools).await {
                        ControlFlow::Break(answered) => return answered,
                        ControlFlow::Continue((inner, sent)) => {
                            (params, unwrapped_from) = (inner, sent)
                        }
                    }
                }
                let tool = jsonrpc::str_member(&params, "name").unwrap_or_default();
                // The checked name is the one sent (raw bytes could repeat the key).
                let call = ShownCall {
                    shown: &tool,
                    exposed: &tool,
                    fixed: None,
                    unwrapped_from,
                };
                self.call_shown(ctx, &upstream, request, params, call).await
            }
            _ => self.forwarder.forward(ctx, &upstream, request, None).await,
        }
    }

    /// `/mcp`: the federated catalogue; `/v/<name>/mcp`: the virtual
    /// server `server`'s part of it.
    async fn federated(
        &self,
        ctx: &Arc<RequestContext>,
        request: Request,
        server: Option<&VirtualServer>,
    ) -> Outcome {
        let list = |kind| self.federation.list(ctx, kind, &request, server);
        match request.method {
            Method::ToolsList if self.progressive(server) => meta_tools_listed(ctx, &request),
            Method::ToolsList => list(ListKind::Tools).await,
            Method::PromptsList => list(ListKind::Prompts).await,
            Method::ResourcesList => list(ListKind::Resources).await,
            Method::ResourcesTemplatesList => list(ListKind::Templates).await,
            Method::ToolsCall => self.call_named(ctx, ListKind::Tools, request, server).await,
            Method::PromptsGet => {
                self.call_named(ctx, ListKind::Prompts, request, server)
                    .await
            }
            Method::ResourcesRead => self.read_resource(ctx, request, server).await,
            Method::CompletionComplete => self.complete(ctx, request, server).await,
            Method::SubscriptionsListen => self.listen(ctx, request, None, server).await,
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
        server: Option<&VirtualServer>,
    ) -> Outcome {
        let mut requested = request
            .params_object()
            .ok()
            .and_then(|p| serde_json::from_str(p.get("notifications")?.get()).ok())
            .map(|n: serde_json::Value| Filter::requested(&n))
            .unwrap_or_default();
        if let Some(server) = server {
            // A virtual server's clients hear only of the resources it exposes.
            requested.uris.retain(|uri| server.selects_resource(uri));
        }
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

    /// Whether an endpoint lists the meta-tools instead of its tools.
    fn progressive(&self, server: Option<&VirtualServer>) -> bool {
        server.map_or(self.progressive, |s| s.config.progressive_discovery)
    }

    /// `tools/call` or `prompts/get` by an exposed name (on a virtual
    /// server, by the name it shows): to the upstream behind it, under its
    /// original name. With progressive discovery, the meta-tools: a search
    /// answered here, or a call of the tool it names (checked as if called
    /// directly).
    async fn call_named(
        &self,
        ctx: &Arc<RequestContext>,
        kind: ListKind,
        request: Request,
        server: Option<&VirtualServer>,
    ) -> Outcome {
        let mut params = match request.params_object() {
            Ok(p) => p,
            Err(e) => return error(&request, code::INVALID_PARAMS, e.message()),
        };
        let Some(mut exposed) = jsonrpc::str_member(&params, "name") else {
            return error(&request, code::INVALID_PARAMS, "params.name is required");
        };
        let mut unwrapped_from = None;
        if kind == ListKind::Tools && self.progressive(server) {
            let tools = ToolsOf::Endpoint(server);
            match self.through_meta_tools(ctx, &request, params, tools).await {
                ControlFlow::Break(answered) => return answered,
                ControlFlow::Continue((inner, sent)) => {
                    if sent.is_some() {
                        exposed = jsonrpc::str_member(&inner, "name").unwrap_or_default();
                    }
                    (params, unwrapped_from) = (inner, sent);
                }
            }
        }
        // The name `/mcp` shows for it.
        let federated = match (server, kind) {
            (None, _) => Some(exposed.as_str()),
            (Some(server), ListKind::Tools) => server.tool_behind(&exposed),
            (Some(server), _) => server.selects_prompt(&exposed).then_some(exposed.as_str()),
        };
        let resolved = match federated {
            Some(name) => self.federation.resolve_named(ctx, kind, name).await,
            None => None,
        };
        let Some((upstream, shown)) = resolved else {
            return unknown(&request, kind, &exposed);
        };
        if kind == ListKind::Tools {
            let fixed = (server.zip(federated)).and_then(|(s, n)| s.shaping.fixed_arguments(n));
            let call = ShownCall {
                shown: &shown,
                exposed: &exposed,
                fixed,
                unwrapped_from,
            };
            return self.call_shown(ctx, &upstream, request, params, call).await;
        }
        if !ctx.access().reaches_upstream(&upstream.name) {
            return forbidden(&request, &exposed);
        }
        params.insert("name".into(), jsonrpc::to_raw(&shown));
        self.forwarder
            .forward(ctx, &upstream, request, Some(params))
            .await
    }

    /// A `tools/call` of the tool `upstream` shows as `call.shown`: the real
    /// tool behind it checked against the caller's policy and the call
    /// limits, its fixed arguments set (the upstream's last: they win), and
    /// called under its own name. Its place under the concurrency cap and
    /// the arguments the client sent are kept in the request's context, for
    /// as long as the call runs.
    async fn call_shown(
        &self,
        ctx: &Arc<RequestContext>,
        upstream: &Arc<Upstream>,
        request: Request,
        mut params: RawObject,
        call: ShownCall<'_>,
    ) -> Outcome {
        let serving = upstream.serving();
        let Some(real) = serving.shaping.name_behind(call.shown) else {
            return unknown(&request, ListKind::Tools, call.exposed);
        };
        let separator = self.federation.separator();
        if !ctx.access().reaches_tool(&upstream.name, real, separator) {
            return forbidden(&request, &format!("tool {}", call.exposed));
        }
        let fixed = [call.fixed, serving.shaping.fixed_arguments(real)];
        let mut rewritten_from = call.unwrapped_from;
        for fixed in fixed.into_iter().flatten() {
            rewritten_from.get_or_insert_with(|| params.get("arguments").cloned());
            if fix_arguments(&mut params, fixed).is_err() {
                return error(
                    &request,
                    code::INVALID_PARAMS,
                    "params.arguments must be an object",
                );
            }
        }
        let limits = &self.limits;
        let permit = match limits.admit(
            &ctx.caller.principal,
            (upstream, &serving),
            real,
            call.exposed,
        ) {
            Ok(permit) => permit,
            Err(refused) => return Outcome::Error(refused, Some(request.id.clone())),
        };
        if permit.is_some() || rewritten_from.is_some() {
            ctx.record_tool_call(ToolCall {
                permit,
                rewritten_from,
            });
        }
        params.insert("name".into(), jsonrpc::to_raw(real));
        self.call_tool(ctx, upstream, request, Some(params)).await
    }

    /// A `tools/call` on an endpoint listing the meta-tools: `search_tools`
    /// is answered here (`Break`); `call_tool` continues as the call it
    /// stands for, with the arguments the client sent; any other call
    /// continues as it is.
    async fn through_meta_tools(
        &self,
        ctx: &RequestContext,
        request: &Request,
        params: RawObject,
        tools: ToolsOf<'_>,
    ) -> ControlFlow<Outcome, (RawObject, UnwrappedFrom)> {
        match jsonrpc::str_member(&params, "name").as_deref() {
            Some(tool_search::SEARCH_TOOL) => {
                ControlFlow::Break(self.search_tools(ctx, request, &params, tools).await)
            }
            Some(tool_search::CALL_TOOL) => {
                let sent = params.get("arguments").cloned();
                match tool_search::unwrap_call(params) {
                    Ok(inner) => ControlFlow::Continue((inner, Some(sent))),
                    Err(why) => ControlFlow::Break(error(request, code::INVALID_PARAMS, why)),
                }
            }
            _ => ControlFlow::Continue((params, None)),
        }
    }

    /// `search_tools`: the endpoint's tools ranked for the query.
    async fn search_tools(
        &self,
        ctx: &RequestContext,
        request: &Request,
        params: &RawObject,
        tools: ToolsOf<'_>,
    ) -> Outcome {
        let (query, limit) = match tool_search::search_request(params) {
            Ok(asked) => asked,
            Err(why) => return error(request, code::INVALID_PARAMS, why),
        };
        let listed = match tools {
            ToolsOf::Endpoint(server) => (self.federation.catalogue(ctx, ListKind::Tools, server))
                .await
                .map_err(|why| why.to_string()),
            ToolsOf::Upstream(upstream) => self.federation.shown_catalogue(ctx, upstream).await,
        };
        let catalogue = match listed {
            Ok((items, _)) => items,
            Err(why) => return error(request, code::INTERNAL_ERROR, why),
        };
        let mut result = tool_search::search_result(tool_search::search(catalogue, &query, limit));
        if ctx.era == Era::Modern {
            result["resultType"] = "complete".into();
        }
        answer(request, &jsonrpc::to_raw(&result))
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

    /// `resources/read`: to the upstream serving the URI (one `server`
    /// exposes, on a virtual server).
    async fn read_resource(
        &self,
        ctx: &Arc<RequestContext>,
        request: Request,
        server: Option<&VirtualServer>,
    ) -> Outcome {
        let params = match request.params_object() {
            Ok(p) => p,
            Err(e) => return error(&request, code::INVALID_PARAMS, e.message()),
        };
        let Some(uri) = jsonrpc::str_member(&params, "uri") else {
            return error(&request, code::INVALID_PARAMS, "params.uri is required");
        };
        if server.is_some_and(|s| !s.selects_resource(&uri)) {
            return resource_not_found(&request, ctx.era, &uri);
        }
        match self.federation.resolve_resource(ctx, &uri).await {
            Some(up) if !ctx.access().reaches_upstream(&up.name) => {
                forbidden(&request, &format!("resource {uri}"))
            }
            Some(up) => self.forwarder.forward(ctx, &up, request, None).await,
            None => resource_not_found(&request, ctx.era, &uri),
        }
    }

    /// `completion/complete`: to the upstream of the prompt or resource it
    /// refers to (one `server` exposes, on a virtual server).
    async fn complete(
        &self,
        ctx: &Arc<RequestContext>,
        request: Request,
        server: Option<&VirtualServer>,
    ) -> Outcome {
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
                let resolved = match server.is_none_or(|s| s.selects_prompt(&name)) {
                    true => {
                        (self.federation)
                            .resolve_named(ctx, ListKind::Prompts, &name)
                            .await
                    }
                    false => None,
                };
                let Some((upstream, original)) = resolved else {
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
                if server.is_some_and(|s| !s.selects_resource(&uri)) {
                    return resource_not_found(&request, ctx.era, &uri);
                }
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
            Scope::Virtual(name) => match self.virtual_servers.get(name) {
                Some(server) if server.selects_resource(&uri) => {
                    self.federation.resolve_resource(ctx, &uri).await
                }
                _ => None,
            },
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
