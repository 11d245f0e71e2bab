//! JSON-RPC method names, parsed once into [`Method`]: every MCP method Tether
//! knows by name, and any other kept as it was written. What the protocol says
//! about a method (the era it exists in, whether its result is cacheable,
//! which parameter a modern request mirrors in `Mcp-Name`, which client
//! capability a server→client request needs) is answered here, from the
//! variant, so no other layer matches on method strings.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::protocol::Era;

/// A JSON-RPC method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// `initialize` (legacy handshake).
    Initialize,
    /// `ping`.
    Ping,
    /// `server/discover` (2026-07-28).
    ServerDiscover,
    /// `tools/list`.
    ToolsList,
    /// `tools/call`.
    ToolsCall,
    /// `prompts/list`.
    PromptsList,
    /// `prompts/get`.
    PromptsGet,
    /// `resources/list`.
    ResourcesList,
    /// `resources/templates/list`.
    ResourcesTemplatesList,
    /// `resources/read`.
    ResourcesRead,
    /// `resources/subscribe` (legacy).
    ResourcesSubscribe,
    /// `resources/unsubscribe` (legacy).
    ResourcesUnsubscribe,
    /// `completion/complete`.
    CompletionComplete,
    /// `logging/setLevel` (legacy).
    LoggingSetLevel,
    /// `subscriptions/listen` (2026-07-28).
    SubscriptionsListen,
    /// `tasks/get` (2026-07-28 tasks extension).
    TasksGet,
    /// `tasks/update` (2026-07-28 tasks extension).
    TasksUpdate,
    /// `tasks/cancel` (2026-07-28 tasks extension).
    TasksCancel,
    /// `sampling/createMessage` (server→client).
    SamplingCreateMessage,
    /// `elicitation/create` (server→client).
    ElicitationCreate,
    /// `roots/list` (server→client).
    RootsList,
    /// `notifications/initialized`.
    Initialized,
    /// `notifications/cancelled`.
    Cancelled,
    /// `notifications/progress`.
    Progress,
    /// `notifications/message` (a log message).
    LogMessage,
    /// `notifications/tools/list_changed`.
    ToolsListChanged,
    /// `notifications/prompts/list_changed`.
    PromptsListChanged,
    /// `notifications/resources/list_changed`.
    ResourcesListChanged,
    /// `notifications/resources/updated`.
    ResourceUpdated,
    /// `notifications/subscriptions/acknowledged` (2026-07-28).
    SubscriptionsAcknowledged,
    /// Any other method, as written.
    Other(Box<str>),
}

/// The methods a client sends as requests, in a fixed order (for tables
/// indexed by method, such as the request metrics).
pub const CLIENT_REQUESTS: [Method; 18] = [
    Method::Initialize,
    Method::Ping,
    Method::ServerDiscover,
    Method::ToolsList,
    Method::ToolsCall,
    Method::PromptsList,
    Method::PromptsGet,
    Method::ResourcesList,
    Method::ResourcesTemplatesList,
    Method::ResourcesRead,
    Method::ResourcesSubscribe,
    Method::ResourcesUnsubscribe,
    Method::CompletionComplete,
    Method::LoggingSetLevel,
    Method::SubscriptionsListen,
    Method::TasksGet,
    Method::TasksUpdate,
    Method::TasksCancel,
];

/// The list-changed notifications by method, each as a whole message
/// without params: what a legacy client's stream is sent.
pub const LIST_CHANGED: [(Method, &[u8]); 3] = [
    (
        Method::ToolsListChanged,
        br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
    ),
    (
        Method::PromptsListChanged,
        br#"{"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}"#,
    ),
    (
        Method::ResourcesListChanged,
        br#"{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}"#,
    ),
];

impl Method {
    /// The method named `name`.
    pub fn parse(name: &str) -> Method {
        match name {
            "initialize" => Method::Initialize,
            "ping" => Method::Ping,
            "server/discover" => Method::ServerDiscover,
            "tools/list" => Method::ToolsList,
            "tools/call" => Method::ToolsCall,
            "prompts/list" => Method::PromptsList,
            "prompts/get" => Method::PromptsGet,
            "resources/list" => Method::ResourcesList,
            "resources/templates/list" => Method::ResourcesTemplatesList,
            "resources/read" => Method::ResourcesRead,
            "resources/subscribe" => Method::ResourcesSubscribe,
            "resources/unsubscribe" => Method::ResourcesUnsubscribe,
            "completion/complete" => Method::CompletionComplete,
            "logging/setLevel" => Method::LoggingSetLevel,
            "subscriptions/listen" => Method::SubscriptionsListen,
            "tasks/get" => Method::TasksGet,
            "tasks/update" => Method::TasksUpdate,
            "tasks/cancel" => Method::TasksCancel,
            "sampling/createMessage" => Method::SamplingCreateMessage,
            "elicitation/create" => Method::ElicitationCreate,
            "roots/list" => Method::RootsList,
            "notifications/initialized" => Method::Initialized,
            "notifications/cancelled" => Method::Cancelled,
            "notifications/progress" => Method::Progress,
            "notifications/message" => Method::LogMessage,
            "notifications/tools/list_changed" => Method::ToolsListChanged,
            "notifications/prompts/list_changed" => Method::PromptsListChanged,
            "notifications/resources/list_changed" => Method::ResourcesListChanged,
            "notifications/resources/updated" => Method::ResourceUpdated,
            "notifications/subscriptions/acknowledged" => Method::SubscriptionsAcknowledged,
            other => Method::Other(other.into()),
        }
    }

    /// The method's name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Initialize => "initialize",
            Method::Ping => "ping",
            Method::ServerDiscover => "server/discover",
            Method::ToolsList => "tools/list",
            Method::ToolsCall => "tools/call",
            Method::PromptsList => "prompts/list",
            Method::PromptsGet => "prompts/get",
            Method::ResourcesList => "resources/list",
            Method::ResourcesTemplatesList => "resources/templates/list",
            Method::ResourcesRead => "resources/read",
            Method::ResourcesSubscribe => "resources/subscribe",
            Method::ResourcesUnsubscribe => "resources/unsubscribe",
            Method::CompletionComplete => "completion/complete",
            Method::LoggingSetLevel => "logging/setLevel",
            Method::SubscriptionsListen => "subscriptions/listen",
            Method::TasksGet => "tasks/get",
            Method::TasksUpdate => "tasks/update",
            Method::TasksCancel => "tasks/cancel",
            Method::SamplingCreateMessage => "sampling/createMessage",
            Method::ElicitationCreate => "elicitation/create",
            Method::RootsList => "roots/list",
            Method::Initialized => "notifications/initialized",
            Method::Cancelled => "notifications/cancelled",
            Method::Progress => "notifications/progress",
            Method::LogMessage => "notifications/message",
            Method::ToolsListChanged => "notifications/tools/list_changed",
            Method::PromptsListChanged => "notifications/prompts/list_changed",
            Method::ResourcesListChanged => "notifications/resources/list_changed",
            Method::ResourceUpdated => "notifications/resources/updated",
            Method::SubscriptionsAcknowledged => "notifications/subscriptions/acknowledged",
            Method::Other(name) => name,
        }
    }

    /// Whether the method exists in `era`: 2026-07-28 removed the handshake,
    /// `ping`, `logging/setLevel` and resource subscriptions (a modern request
    /// for one is an unknown method); the legacy era has no `server/discover`
    /// or `subscriptions/listen`, but a server may answer them anyway, so only
    /// the modern removals are facts.
    pub fn exists_in(&self, era: Era) -> bool {
        let removed_in_modern = matches!(
            self,
            Method::Initialize
                | Method::Ping
                | Method::LoggingSetLevel
                | Method::ResourcesSubscribe
                | Method::ResourcesUnsubscribe
        );
        era == Era::Legacy || !removed_in_modern
    }

    /// Whether the result is one a modern client may cache (it carries
    /// `ttlMs` and `cacheScope`).
    pub fn is_cacheable(&self) -> bool {
        matches!(
            self,
            Method::ToolsList
                | Method::PromptsList
                | Method::ResourcesList
                | Method::ResourcesTemplatesList
                | Method::ResourcesRead
                | Method::ServerDiscover
        )
    }

    /// The `params` member a modern request mirrors in `Mcp-Name`.
    pub fn name_param(&self) -> Option<&'static str> {
        match self {
            Method::ToolsCall | Method::PromptsGet => Some("name"),
            Method::ResourcesRead => Some("uri"),
            m if m.is_task_method() => Some("taskId"),
            _ => None,
        }
    }

    /// Whether the method is one of the tasks extension's (`tasks/get`,
    /// `tasks/update`, `tasks/cancel`).
    pub fn is_task_method(&self) -> bool {
        matches!(
            self,
            Method::TasksGet | Method::TasksUpdate | Method::TasksCancel
        )
    }

    /// The client capability a server→client request needs.
    pub fn client_capability(&self) -> Option<&'static str> {
        match self {
            Method::SamplingCreateMessage => Some("sampling"),
            Method::ElicitationCreate => Some("elicitation"),
            Method::RootsList => Some("roots"),
            _ => None,
        }
    }

    /// Whether a server may answer this request with a 2026-07-28
    /// `input_required` result (client input gathered in further rounds).
    pub fn may_require_input(&self) -> bool {
        matches!(
            self,
            Method::ToolsCall | Method::PromptsGet | Method::ResourcesRead
        )
    }

    /// The position of a client request method in [`CLIENT_REQUESTS`].
    pub fn client_request_index(&self) -> Option<usize> {
        CLIENT_REQUESTS.iter().position(|m| m == self)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Method;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a method name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Method, E> {
                Ok(Method::parse(name))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "initialize",
            "tools/call",
            "resources/templates/list",
            "notifications/subscriptions/acknowledged",
            "elicitation/create",
            "x/custom",
        ] {
            assert_eq!(Method::parse(name).as_str(), name);
        }
        assert_eq!(Method::parse("tools/call"), Method::ToolsCall);
        assert_eq!(
            Method::parse("Tools/Call"),
            Method::Other("Tools/Call".into())
        );
        let json = serde_json::to_string(&Method::ToolsCall).unwrap();
        assert_eq!(json, "\"tools/call\"");
        let escaped: Method = serde_json::from_str(r#""tools\/call""#).unwrap();
        assert_eq!(escaped, Method::ToolsCall);
    }

    #[test]
    fn protocol_facts_follow_the_method() {
        assert!(!Method::Ping.exists_in(Era::Modern));
        assert!(Method::Ping.exists_in(Era::Legacy));
        assert!(Method::ToolsCall.exists_in(Era::Modern));
        assert!(Method::ResourcesRead.is_cacheable());
        assert!(!Method::ToolsCall.is_cacheable());
        assert_eq!(Method::ResourcesRead.name_param(), Some("uri"));
        assert_eq!(Method::ToolsList.name_param(), None);
        assert_eq!(Method::TasksCancel.name_param(), Some("taskId"));
        assert_eq!(
            Method::parse("tasks/result"),
            Method::Other("tasks/result".into())
        );
        assert_eq!(Method::RootsList.client_capability(), Some("roots"));
        assert_eq!(Method::ToolsCall.client_request_index(), Some(4));
        assert_eq!(Method::Progress.client_request_index(), None);
        for (i, m) in CLIENT_REQUESTS.iter().enumerate() {
            assert_eq!(m.client_request_index(), Some(i));
        }
    }

    #[test]
    fn list_changed_messages_name_their_method() {
        for (method, message) in LIST_CHANGED {
            let message: serde_json::Value = serde_json::from_slice(message).unwrap();
            assert_eq!(message["method"], method.as_str());
            assert_eq!(message["jsonrpc"], "2.0");
        }
    }
}
