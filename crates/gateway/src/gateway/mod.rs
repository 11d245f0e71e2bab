//! The router: decides which upstream(s) serve a client message, maps
//! federated names, and hands replies back as messages or live streams.
//! It never sees HTTP.

mod bridge;
pub mod catalog;
mod fanout;
mod input;
mod listen;
mod park;
mod pump;
mod relay;
mod subscribe;

pub use bridge::add_cache_fields;
pub use relay::header_name;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::{FederationConfig, Naming};
use crate::metrics::Metrics;
use crate::session::{ClientSession, PendingRequest, Scope};
use crate::store::Store;
use crate::upstream::{Upstream, UpstreamSet, Upstreams};
use catalog::{ListKind, Routes};
use tether_wire::jsonrpc::{self, ErrorObject, Kind, Message, RawObject, code};
use tether_wire::protocol::{self, Era};

/// What the router produced for one client message.
pub enum Outcome {
    /// One JSON-RPC message (a response).
    Message(Bytes),
    /// A JSON-RPC error made by Tether itself.
    Error(ErrorObject, Option<Box<serde_json::value::RawValue>>),
    /// Messages relayed live from the upstream, ending with the response.
    Stream(mpsc::Receiver<Bytes>),
    /// A notification or response was taken (HTTP 202).
    Accepted,
}

/// The federating router over all configured upstreams.
pub struct Gateway {
    upstreams: Arc<UpstreamSet>,
    federation: FederationConfig,
    routes: RwLock<Routes>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    close_timeout: Duration,
    send_timeout: Duration,
    lot: Arc<park::ParkingLot>,
    store: Arc<Store>,
}

/// Time limits of the router.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Bounds closing one client's upstream sessions.
    pub close: Duration,
    /// How long a client may leave a relayed message unread before it is cut off.
    pub send: Duration,
}

impl Gateway {
    /// Builds the router over `upstreams` (in config order); client sessions'
    /// upstream sessions are recorded in `store` as they open.
    pub fn new(
        upstreams: Arc<UpstreamSet>,
        federation: FederationConfig,
        metrics: Arc<Metrics>,
        store: Arc<Store>,
        timeouts: Timeouts,
    ) -> Self {
        Gateway {
            upstreams,
            federation,
            routes: RwLock::default(),
            metrics,
            close_timeout: timeouts.close,
            send_timeout: timeouts.send,
            lot: Arc::default(),
            store,
        }
    }

    /// How long closing one client's upstream sessions may take.
    pub fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// Closes every call still waiting for client input (shutdown).
    pub async fn close_parked(&self) {
        self.lot.close_all(self.close_timeout).await;
    }

    /// The upstreams now, in definition order.
    pub fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams.snapshot()
    }

    /// An upstream by name.
    pub fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// Handles a client request within `ctx`.
    pub async fn request(&self, ctx: &Arc<ClientSession>, msg: Message, raw: Bytes) -> Outcome {
        let method = msg.method.clone().unwrap_or_default();
        let outcome = self.dispatch(ctx, &method, msg, raw).await;
        if !matches!(outcome, Outcome::Stream(_)) {
            self.finish(ctx);
        }
        outcome
    }

    /// Ends an ephemeral (sessionless) context once its reply is complete.
    fn finish(&self, ctx: &Arc<ClientSession>) {
        if ctx.is_ephemeral() {
            let refused = ctx.upstreams.release_pooled();
            let ctx = ctx.clone();
            let timeout = self.close_timeout;
            tokio::spawn(async move {
                futures_util::future::join_all(refused.iter().map(|s| s.close())).await;
                ctx.close(timeout).await;
            });
        }
    }

    async fn dispatch(
        &self,
        ctx: &Arc<ClientSession>,
        method: &str,
        msg: Message,
        raw: Bytes,
    ) -> Outcome {
        if ctx.era == Era::Modern && protocol::removed_in_modern(method) {
            return error(
                &msg,
                code::METHOD_NOT_FOUND,
                format!(
                    "Method not found: {method} does not exist in {}",
                    protocol::MODERN_VERSION
                ),
            );
        }
        if method == "ping" {
            return empty_answer(&msg);
        }
        if method == "logging/setLevel" {
            // Answered here on every endpoint: modern upstreams take the level
            // in each request's `_meta`, legacy ones by this request.
            return match msg.params_object() {
                Ok(params) => self.set_log_level(ctx, &msg, params).await,
                Err(e) => error(&msg, code::INVALID_PARAMS, e.message()),
            };
        }
        if ctx.era == Era::Modern
            && let Some(state) = park::request_state(&raw, &msg)
        {
            return match self.lot.resume(&state, &msg, ctx).await {
                park::Resume::Continue(parked) => self.resume_parked(*parked, &msg),
                park::Resume::Again(ask) => {
                    let id = msg.id.as_deref().expect("requests have ids");
                    Outcome::Message(Bytes::from(ask.to_response(id)))
                }
                park::Resume::Unknown => error(
                    &msg,
                    code::INVALID_PARAMS,
                    "requestState is unknown or expired (or names another call); send the request again without it",
                ),
            };
        }
        if matches!(method, "resources/subscribe" | "resources/unsubscribe") {
            return self
                .route_subscription(ctx, method == "resources/subscribe", msg, raw)
                .await;
        }
        if let Scope::Single(name) = &ctx.scope {
            let Some(upstream) = self.upstreams.get(name) else {
                return error(
                    &msg,
                    code::INTERNAL_ERROR,
                    format!("upstream {name:?} is not configured"),
                );
            };
            let access = ctx.access();
            if !access.reaches_upstream(name) {
                return forbidden(&msg, &format!("upstream {name}"));
            }
            if access.restricts() && method == "tools/list" {
                return self.single_tools_list(ctx, &upstream, &msg).await;
            }
            if access.restricts() && method == "tools/call" {
                let Ok(params) = msg.params_object() else {
                    return error(&msg, code::INVALID_PARAMS, "params must be an object");
                };
                let tool = jsonrpc::str_member(&params, "name").unwrap_or_default();
                if !access.reaches_tool(name, &tool) {
                    return forbidden(&msg, &format!("tool {tool}"));
                }
                // The checked name is the one sent (raw bytes could repeat the key).
                return self.forward(ctx, &upstream, msg, raw, Some(params)).await;
            }
            return self.forward(ctx, &upstream, msg, raw, None).await;
        }
        if let Some(kind) = ListKind::from_method(method) {
            return self.fanout_list(ctx, kind, &msg).await;
        }
        let params = match msg.params_object() {
            Ok(p) => p,
            Err(e) => return error(&msg, code::INVALID_PARAMS, e.message()),
        };
        match method {
            "tools/call" | "prompts/get" => {
                let kind = if method == "tools/call" {
                    ListKind::Tools
                } else {
                    ListKind::Prompts
                };
                self.call_named(ctx, kind, msg, params).await
            }
            "resources/read" => {
                let Some(uri) = jsonrpc::str_member(&params, "uri") else {
                    return error(&msg, code::INVALID_PARAMS, "params.uri is required");
                };
                match self.resolve_resource(ctx, &uri).await {
                    Some(up) if !ctx.access().reaches_upstream(&up.name) => {
                        forbidden(&msg, &format!("resource {uri}"))
                    }
                    Some(up) => self.forward(ctx, &up, msg, raw, None).await,
                    None => resource_not_found(ctx, &msg, &uri),
                }
            }
            "completion/complete" => self.complete(ctx, msg, raw, params).await,
            _ => error(
                &msg,
                code::METHOD_NOT_FOUND,
                format!("Method not found: {method}"),
            ),
        }
    }

    /// Routes `resources/(un)subscribe` to the upstream serving the URI.
    async fn route_subscription(
        &self,
        ctx: &Arc<ClientSession>,
        on: bool,
        msg: Message,
        raw: Bytes,
    ) -> Outcome {
        let uri = msg
            .params_object()
            .ok()
            .and_then(|p| jsonrpc::str_member(&p, "uri"));
        let Some(uri) = uri else {
            return error(&msg, code::INVALID_PARAMS, "params.uri is required");
        };
        let upstream = match &ctx.scope {
            Scope::Single(name) => self.upstreams.get(name),
            Scope::Federated => self.resolve_resource(ctx, &uri).await,
        };
        match upstream {
            Some(up) if !ctx.access().reaches_upstream(&up.name) => {
                forbidden(&msg, &format!("resource {uri}"))
            }
            Some(up) => self.subscribe(ctx, &up, msg, raw, uri, on).await,
            None => resource_not_found(ctx, &msg, &uri),
        }
    }

    async fn call_named(
        &self,
        ctx: &Arc<ClientSession>,
        kind: ListKind,
        msg: Message,
        mut params: RawObject,
    ) -> Outcome {
        let Some(exposed) = jsonrpc::str_member(&params, "name") else {
            return error(&msg, code::INVALID_PARAMS, "params.name is required");
        };
        let Some((upstream, original)) = self.resolve_named(ctx, kind, &exposed).await else {
            let what = if kind == ListKind::Tools {
                "tool"
            } else {
                "prompt"
            };
            return error(
                &msg,
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
            return forbidden(&msg, &exposed);
        }
        params.insert("name".into(), jsonrpc::to_raw(&original));
        self.forward(ctx, &upstream, msg, Bytes::new(), Some(params))
            .await
    }

    async fn complete(
        &self,
        ctx: &Arc<ClientSession>,
        msg: Message,
        raw: Bytes,
        mut params: RawObject,
    ) -> Outcome {
        let reference: Option<RawObject> = params
            .get("ref")
            .and_then(|r| serde_json::from_str(r.get()).ok());
        let Some(mut reference) = reference else {
            return error(&msg, code::INVALID_PARAMS, "params.ref is required");
        };
        match jsonrpc::str_member(&reference, "type").as_deref() {
            Some("ref/prompt") => {
                let name = jsonrpc::str_member(&reference, "name").unwrap_or_default();
                let Some((upstream, original)) =
                    self.resolve_named(ctx, ListKind::Prompts, &name).await
                else {
                    return error(
                        &msg,
                        code::INVALID_PARAMS,
                        format!("Unknown prompt: {name}"),
                    );
                };
                if !ctx.access().reaches_upstream(&upstream.name) {
                    return forbidden(&msg, &format!("prompt {name}"));
                }
                reference.insert("name".into(), jsonrpc::to_raw(&original));
                params.insert("ref".into(), jsonrpc::to_raw(&reference));
                self.forward(ctx, &upstream, msg, Bytes::new(), Some(params))
                    .await
            }
            Some("ref/resource") => {
                let uri = jsonrpc::str_member(&reference, "uri").unwrap_or_default();
                match self.resolve_resource(ctx, &uri).await {
                    Some(up) if !ctx.access().reaches_upstream(&up.name) => {
                        forbidden(&msg, &format!("resource {uri}"))
                    }
                    Some(up) => self.forward(ctx, &up, msg, raw, None).await,
                    None => resource_not_found(ctx, &msg, &uri),
                }
            }
            _ => error(
                &msg,
                code::INVALID_PARAMS,
                "params.ref.type must be ref/prompt or ref/resource",
            ),
        }
    }

    /// Finds the upstream and original name behind an exposed tool/prompt name,
    /// listing the catalogue once when the name is not known yet.
    async fn resolve_named(
        &self,
        ctx: &Arc<ClientSession>,
        kind: ListKind,
        exposed: &str,
    ) -> Option<(Arc<Upstream>, String)> {
        let sep = &self.federation.separator;
        let upstreams = self.upstreams.snapshot();
        if self.federation.naming == Naming::Prefix {
            let (up, name) = catalog::split_prefixed(exposed, sep, |u| upstreams.contains(u))?;
            return Some((upstreams.get(up)?.clone(), name.to_owned()));
        }
        let cached = crate::sync::read(&self.routes).named(kind, exposed);
        let found = match cached {
            Some(hit) => Some(hit),
            None => {
                self.refresh(ctx, kind).await;
                crate::sync::read(&self.routes).named(kind, exposed)
            }
        };
        let (up, name) = found.or_else(|| {
            let (up, name) = catalog::split_prefixed(exposed, sep, |u| upstreams.contains(u))?;
            Some((up.into(), name.to_owned()))
        })?;
        Some((upstreams.get(&up)?.clone(), name))
    }

    /// Finds the upstream serving `uri`, listing resources and templates once if needed.
    async fn resolve_resource(&self, ctx: &Arc<ClientSession>, uri: &str) -> Option<Arc<Upstream>> {
        let upstreams = self.upstreams.snapshot();
        if upstreams.len() == 1 {
            return upstreams.iter().next().cloned();
        }
        let mut found = crate::sync::read(&self.routes).resource(uri);
        if found.is_none() {
            self.refresh(ctx, ListKind::Resources).await;
            self.refresh(ctx, ListKind::Templates).await;
            found = crate::sync::read(&self.routes).resource(uri);
        }
        upstreams.get(&found?).cloned()
    }
}

/// The answer when the caller's policy does not reach `what`.
fn forbidden(msg: &Message, what: &str) -> Outcome {
    error(
        msg,
        code::FORBIDDEN,
        format!("Forbidden: {what} is not permitted for this principal"),
    )
}

/// A successful response to the request `msg`.
pub(crate) fn answer(msg: &Message, result: &serde_json::value::RawValue) -> Outcome {
    let id = msg.id.as_deref().expect("requests have ids");
    Outcome::Message(Bytes::from(jsonrpc::response(id, result)))
}

/// The empty result `{}` for the request `msg`.
pub(crate) fn empty_answer(msg: &Message) -> Outcome {
    answer(msg, &jsonrpc::to_raw(&serde_json::json!({})))
}

/// A Tether-made JSON-RPC error for `msg`.
pub(crate) fn error(msg: &Message, code: i64, message: impl Into<String>) -> Outcome {
    Outcome::Error(ErrorObject::new(code, message), msg.id.clone())
}

fn resource_not_found(ctx: &ClientSession, msg: &Message, uri: &str) -> Outcome {
    // 2026-07-28 retired -32002 in favour of -32602.
    let code = if ctx.era == Era::Modern {
        code::INVALID_PARAMS
    } else {
        code::RESOURCE_NOT_FOUND
    };
    Outcome::Error(
        ErrorObject::new(
            code,
            format!("Resource not found: no upstream serves {uri}"),
        )
        .with_data(serde_json::json!({ "uri": uri })),
        msg.id.clone(),
    )
}

impl Gateway {
    /// Handles a client notification or response.
    pub async fn client_message(
        &self,
        ctx: &Arc<ClientSession>,
        msg: Message,
        raw: Bytes,
    ) -> Outcome {
        match msg.kind() {
            Ok(Kind::Response) => {
                let Some(pending) = msg.id_text().and_then(|id| ctx.take_pending(id)) else {
                    tracing::debug!("client response for no pending request; dropped");
                    return Outcome::Accepted;
                };
                match pending {
                    PendingRequest::Upstream {
                        session,
                        original_id,
                    } => {
                        let back = Message {
                            id: Some(original_id),
                            ..msg
                        };
                        if let Err(e) = session.send_message(Bytes::from(back.to_bytes())).await {
                            tracing::warn!(upstream = %session.upstream.name, error = %e, "relaying client response upstream failed");
                        }
                    }
                    PendingRequest::Local(waiting) => {
                        let _ = waiting.send(msg);
                    }
                }
                Outcome::Accepted
            }
            _ => {
                if msg.method.as_deref() != Some("notifications/initialized") {
                    let sessions = ctx.upstreams.sessions();
                    let sends = sessions
                        .iter()
                        .filter(|s| s.era == Era::Legacy)
                        .map(|s| s.send_message(raw.clone()));
                    futures_util::future::join_all(sends).await;
                }
                Outcome::Accepted
            }
        }
    }
}
