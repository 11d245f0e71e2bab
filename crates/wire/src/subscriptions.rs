//! `subscriptions/listen` (2026-07-28): the notifications a listen request
//! asks for (a `SubscriptionFilter`), the acknowledgement that opens its
//! stream, and the subscription id every notification on it carries.

use serde_json::{Map, Value, json};

use crate::method::Method;

/// Resource URIs one listen request may name (more are ignored).
pub const MAX_URIS: usize = 256;

/// `_meta` key tagging notifications with the listen request's id.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// What a listen stream carries: list changes by kind, and updates of the
/// named resources.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `notifications/tools/list_changed`.
    pub tools: bool,
    /// `notifications/prompts/list_changed`.
    pub prompts: bool,
    /// `notifications/resources/list_changed`.
    pub resources: bool,
    /// `notifications/resources/updated` for these URIs.
    pub uris: Vec<String>,
}

impl Filter {
    /// What a request's `params.notifications` asks for (unknown members
    /// and non-string URIs ignored, URIs once each, the first [`MAX_URIS`]).
    pub fn requested(notifications: &Value) -> Filter {
        let flag = |key: &str| notifications.get(key).and_then(Value::as_bool) == Some(true);
        let mut seen = std::collections::HashSet::new();
        let uris: Vec<String> = notifications
            .get("resourceSubscriptions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|uri| seen.insert(*uri))
            .take(MAX_URIS)
            .map(str::to_owned)
            .collect();
        Filter {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris,
        }
    }

    /// The filter as a `SubscriptionFilter` object (only what is on).
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        for (on, key) in [
            (self.tools, "toolsListChanged"),
            (self.prompts, "promptsListChanged"),
            (self.resources, "resourcesListChanged"),
        ] {
            if on {
                out.insert(key.into(), Value::Bool(true));
            }
        }
        if !self.uris.is_empty() {
            out.insert("resourceSubscriptions".into(), json!(self.uris));
        }
        Value::Object(out)
    }

    /// Whether a notification (`method`, and the URI it names if any)
    /// passes the filter.
    pub fn wants(&self, method: &Method, uri: Option<&str>) -> bool {
        match method {
            Method::ToolsListChanged => self.tools,
            Method::PromptsListChanged => self.prompts,
            Method::ResourcesListChanged => self.resources,
            Method::ResourceUpdated => uri.is_some_and(|u| self.uris.iter().any(|s| s == u)),
            _ => false,
        }
    }
}

/// The stream's first message: what it will carry, tagged with its id.
pub fn acknowledged(filter: &Filter, subscription: &Value) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {
        "notifications": filter.to_json(),
        "_meta": {META_SUBSCRIPTION_ID: subscription},
    }})
}

/// `notification` (a JSON-RPC notification object) tagged with the
/// subscription id, replacing any it carried.
pub fn tagged(mut notification: Value, subscription: &Value) -> Value {
    if !notification.get("params").is_some_and(Value::is_object) {
        notification["params"] = json!({});
    }
    let params = &mut notification["params"];
    if !params.get("_meta").is_some_and(Value::is_object) {
        params["_meta"] = json!({});
    }
    params["_meta"][META_SUBSCRIPTION_ID] = subscription.clone();
    notification
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_as_a_filter_and_back() {
        let f = Filter::requested(
            &json!({"toolsListChanged": true, "promptsListChanged": false,
            "resourceSubscriptions": ["a://1", 3, "a://1", "b://2"], "other": true}),
        );
        assert_eq!(
            f.to_json(),
            json!({"toolsListChanged": true, "resourceSubscriptions": ["a://1", "b://2"]})
        );
        assert_eq!(Filter::requested(&Value::Null), Filter::default());
        assert_eq!(Filter::requested(&Value::Null).to_json(), json!({}));
    }

    #[test]
    fn only_wanted_notifications_pass() {
        let f = Filter::requested(
            &json!({"resourcesListChanged": true, "resourceSubscriptions": ["a://1"]}),
        );
        assert!(f.wants(&Method::ResourcesListChanged, None));
        assert!(!f.wants(&Method::ToolsListChanged, None));
        assert!(f.wants(&Method::ResourceUpdated, Some("a://1")));
        assert!(!f.wants(&Method::ResourceUpdated, Some("a://2")));
        assert!(!f.wants(&Method::LogMessage, None));
    }

    #[test]
    fn messages_carry_the_subscription_id() {
        let f = Filter::requested(&json!({"promptsListChanged": true}));
        let ack = acknowledged(&f, &json!(7));
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
        assert_eq!(
            ack["params"]["notifications"],
            json!({"promptsListChanged": true})
        );
        assert_eq!(ack["params"]["_meta"][META_SUBSCRIPTION_ID], 7);
        let n = tagged(
            json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                "params": {"uri": "a://1", "_meta": {META_SUBSCRIPTION_ID: "theirs", "k": 1}}}),
            &json!("s"),
        );
        assert_eq!(n["params"]["_meta"][META_SUBSCRIPTION_ID], "s");
        assert_eq!(n["params"]["_meta"]["k"], 1);
        assert_eq!(n["params"]["uri"], "a://1");
        let bare = tagged(
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
            &json!(1),
        );
        assert_eq!(bare["params"]["_meta"][META_SUBSCRIPTION_ID], 1);
    }
}
