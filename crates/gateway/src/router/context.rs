//! The context of one client request on its way through the router: the
//! era it speaks, the endpoint it came to, who sent it, its per-request
//! options, and whose upstream sessions serve it — a client session's, or
//! (sessionless: 2026-07-28 clients, stateless mode) upstream sessions of its
//! own that end with the request.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_json::value::RawValue;
use tether_wire::protocol::Era;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::{Access, Caller};
use crate::session::{ClientSession, Scope};
use crate::upstream::{ClientIdentity, SessionSet};

/// Settings a request carries for itself.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    /// The client takes log messages (legacy sessions always; modern clients
    /// when their `_meta` names a log level).
    pub logs: bool,
    /// `Mcp-Param-*` headers to pass on to modern upstreams unchanged.
    pub param_headers: Vec<(HeaderName, HeaderValue)>,
    /// The request's `_meta` already names the protocol version, client
    /// info and capabilities (modern upstreams get it as it was sent).
    pub meta_complete: bool,
    /// The name a modern request mirrors in `Mcp-Name` (tool, prompt or
    /// resource), as validated against the header.
    pub name: Option<String>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            logs: true,
            param_headers: Vec::new(),
            meta_complete: false,
            name: None,
        }
    }
}

/// Whose upstream sessions serve a request.
enum Client {
    /// A legacy client session's.
    Session(Arc<ClientSession>),
    /// The request's own, released when the request is done.
    Sessionless {
        identity: ClientIdentity,
        upstreams: SessionSet,
        close_timeout: Duration,
    },
}

/// One request's context (see the module documentation). Shared by the
/// tasks relaying its reply; a sessionless request's upstream sessions are
/// released when the last of them lets go of it.
pub struct RequestContext {
    /// The era the client speaks.
    pub era: Era,
    /// The endpoint the request came to.
    pub scope: Scope,
    /// Who sent it, and what it may reach.
    pub caller: Caller,
    /// Its per-request settings.
    pub options: RequestOptions,
    client: Client,
    /// What the router did to the tool call this request makes, if anything.
    tool_call: std::sync::OnceLock<ToolCall>,
}

/// What the router did to a tool call on its way upstream, kept with the
/// request's context for as long as the call runs: its relays, a wait for
/// the client's input and a task running it all hold the context.
#[derive(Debug, Default)]
pub struct ToolCall {
    /// The call's place under its upstream's concurrency cap.
    pub permit: Option<OwnedSemaphorePermit>,
    /// The arguments as the client sent them (`None`: none), when the call
    /// went upstream with others (fixed ones set, a `call_tool` unwrapped).
    pub rewritten_from: Option<Option<Box<RawValue>>>,
}

impl RequestContext {
    /// A request in the legacy client session `session`, sent by its principal.
    pub fn in_session(session: Arc<ClientSession>, caller: Caller) -> Arc<Self> {
        Arc::new(RequestContext {
            era: Era::Legacy,
            scope: session.scope.clone(),
            caller,
            options: RequestOptions::default(),
            client: Client::Session(session),
            tool_call: std::sync::OnceLock::new(),
        })
    }

    /// A request with no client session: it gets upstream sessions of its
    /// own, closed (or returned to their pool) within `close_timeout` once
    /// the request is done.
    pub fn sessionless(
        scope: Scope,
        era: Era,
        identity: ClientIdentity,
        caller: Caller,
        options: RequestOptions,
        close_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(RequestContext {
            era,
            scope,
            caller,
            options,
            client: Client::Sessionless {
                identity,
                upstreams: SessionSet::for_request(),
                close_timeout,
            },
            tool_call: std::sync::OnceLock::new(),
        })
    }

    /// The client session the request belongs to, if any.
    pub fn session(&self) -> Option<&Arc<ClientSession>> {
        match &self.client {
            Client::Session(session) => Some(session),
            Client::Sessionless { .. } => None,
        }
    }

    /// What upstreams are told about the client.
    pub fn identity(&self) -> &ClientIdentity {
        match &self.client {
            Client::Session(session) => &session.identity,
            Client::Sessionless { identity, .. } => identity,
        }
    }

    /// The upstream sessions serving the request.
    pub fn upstreams(&self) -> &SessionSet {
        match &self.client {
            Client::Session(session) => &session.upstreams,
            Client::Sessionless { upstreams, .. } => upstreams,
        }
    }

    /// What the caller may reach.
    pub fn access(&self) -> &Access {
        &self.caller.access
    }

    /// The log level the client session chose (`logging/setLevel`), if any.
    pub fn log_level(&self) -> Option<String> {
        self.session().and_then(|s| s.log_level())
    }

    /// Records what the router did to the request's tool call (once: a
    /// request makes one call).
    pub fn record_tool_call(&self, call: ToolCall) {
        let _ = self.tool_call.set(call);
    }

    /// The arguments the client sent, when its tool call went upstream with
    /// others: `Some(None)` when it sent none.
    pub fn rewritten_from(&self) -> Option<Option<&RawValue>> {
        let from = self.tool_call.get()?.rewritten_from.as_ref()?;
        Some(from.as_deref())
    }

    /// The client session that can be sent requests of its own (sampling,
    /// elicitation, roots) and answers them: a legacy client session.
    pub fn askable_session(&self) -> Option<&Arc<ClientSession>> {
        self.session().filter(|_| self.era == Era::Legacy)
    }
}

impl RequestContext {
    /// Closes a sessionless request's upstream sessions now (bounded), for
    /// callers that must know they are closed; otherwise dropping the
    /// context releases them in the background.
    pub async fn close(&self) {
        if let Client::Sessionless {
            upstreams,
            close_timeout,
            ..
        } = &self.client
        {
            upstreams.close_all(*close_timeout).await;
        }
    }
}

impl Drop for RequestContext {
    fn drop(&mut self) {
        if let Client::Sessionless {
            upstreams,
            close_timeout,
            ..
        } = &self.client
        {
            upstreams.release(*close_timeout);
        }
    }
}
