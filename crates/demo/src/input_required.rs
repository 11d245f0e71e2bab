//! The conformance profile's 2026-07-28 MRTR fixtures: the
//! `test_input_required_result_*` tools and prompt that the suite's
//! `input-required-result-*` scenarios call.
//!
//! Each asks the client for input with an `input_required` result and
//! completes once a retry carries the answers. Fixtures that keep state
//! across rounds put it in a sealed `requestState` (see [`super::mrtr`]), so
//! a tampered or foreign state is rejected with -32602.

use serde_json::{Map, Value, json};

use super::mrtr::{self, input_request};
use super::{Call, invalid, text_result, tool_error};
use tether_wire::jsonrpc::ErrorObject;
use tether_wire::protocol::Era;

/// The prompt whose `prompts/get` first asks for context.
pub(super) const PROMPT: &str = "test_input_required_result_prompt";

/// The MRTR fixture tools (no arguments) and their descriptions.
pub(super) const TOOLS: [(&str, &str); 8] = [
    (
        "test_input_required_result_elicitation",
        "Asks for the user's name (input_required with one elicitation)",
    ),
    (
        "test_input_required_result_sampling",
        "Asks the client's LLM a question (input_required with one sampling request)",
    ),
    (
        "test_input_required_result_list_roots",
        "Asks for the client's roots (input_required with roots/list)",
    ),
    (
        "test_input_required_result_request_state",
        "Asks for a confirmation and round-trips a sealed requestState",
    ),
    (
        "test_input_required_result_multiple_inputs",
        "Asks for an elicitation, a sampling and the roots in one input_required",
    ),
    (
        "test_input_required_result_multi_round",
        "Asks two questions in two rounds, with a new requestState each round",
    ),
    (
        "test_input_required_result_tampered_state",
        "Round-trips an HMAC-protected requestState and rejects a tampered one",
    ),
    (
        "test_input_required_result_capabilities",
        "Asks only for the kinds of input the client declared capabilities for",
    ),
];

const ELICIT: &str = "elicitation/create";
const SAMPLE: &str = "sampling/createMessage";
const ROOTS: &str = "roots/list";

/// Whether `name` is one of [`TOOLS`].
pub(super) fn is_tool(name: &str) -> bool {
    TOOLS.iter().any(|(n, _)| *n == name)
}

/// One input the fixture needs: its `inputRequests` key, the capability it
/// takes and the request itself.
struct Ask {
    key: &'static str,
    capability: &'static str,
    method: &'static str,
    request: Value,
}

impl Ask {
    fn new(key: &'static str, method: &'static str, request: Value) -> Self {
        let capability = match method {
            ELICIT => "elicitation",
            SAMPLE => "sampling",
            _ => "roots",
        };
        Ask {
            key,
            capability,
            method,
            request,
        }
    }
}

fn string_form(message: &str, field: &str) -> Value {
    mrtr::elicitation(
        message,
        json!({"type": "object", "properties": {field: {"type": "string"}}, "required": [field]}),
    )
}

fn ask_name(key: &'static str, message: &str) -> Ask {
    Ask::new(key, ELICIT, string_form(message, "name"))
}

fn ask_llm(key: &'static str, text: &str, max_tokens: u64) -> Ask {
    let params = json!({"messages": [{"role": "user", "content": {"type": "text", "text": text}}],
        "maxTokens": max_tokens});
    Ask::new(key, SAMPLE, input_request(SAMPLE, params))
}

fn ask_roots(key: &'static str) -> Ask {
    Ask::new(key, ROOTS, input_request(ROOTS, json!({})))
}

fn ask_confirm() -> Ask {
    let schema =
        json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]});
    Ask::new(
        "confirm",
        ELICIT,
        mrtr::elicitation("Please confirm", schema),
    )
}

/// A field of an accepted elicitation's content, as text (`<action>` when
/// the user did not accept).
fn form_field(answer: &Value, field: &str) -> String {
    match answer.get("action").and_then(Value::as_str) {
        Some("accept") => match answer.pointer(&format!("/content/{field}")) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        },
        other => format!("<{}>", other.unwrap_or("no answer")),
    }
}

/// The URIs of a `ListRootsResult`, comma-separated.
fn root_uris(answer: &Value) -> String {
    answer["roots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uri").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Either every answer, or the result asking for what is still missing.
type Gathered = Result<Map<String, Value>, Value>;

impl Call {
    /// Runs MRTR fixture tool `name` (one of [`TOOLS`]).
    pub(super) fn input_required_tool(&self, name: &str) -> Result<Value, ErrorObject> {
        if self.era == Era::Legacy {
            return Ok(tool_error(&format!(
                "{name} needs a 2026-07-28 client: it answers with input_required (MRTR)"
            )));
        }
        let tool = "tools/call";
        match name {
            "test_input_required_result_elicitation" => {
                let asks = [ask_name("user_name", "What is your name?")];
                Ok(match self.gather(tool, &asks, false)? {
                    Ok(a) => {
                        text_result(&format!("Hello, {}!", form_field(&a["user_name"], "name")))
                    }
                    Err(ask) => ask,
                })
            }
            "test_input_required_result_sampling" => {
                let asks = [ask_llm(
                    "capital_question",
                    "What is the capital of France?",
                    100,
                )];
                Ok(match self.gather(tool, &asks, false)? {
                    Ok(a) => text_result(&format!(
                        "LLM answered: {}",
                        super::content_text(&a["capital_question"])
                    )),
                    Err(ask) => ask,
                })
            }
            "test_input_required_result_list_roots" => {
                let asks = [ask_roots("client_roots")];
                Ok(match self.gather(tool, &asks, false)? {
                    Ok(a) => {
                        text_result(&format!("Client roots: {}", root_uris(&a["client_roots"])))
                    }
                    Err(ask) => ask,
                })
            }
            "test_input_required_result_request_state"
            | "test_input_required_result_tampered_state" => {
                Ok(match self.gather(tool, &[ask_confirm()], true)? {
                    Ok(a) => text_result(&format!(
                        "state-ok: requestState verified, ok={}",
                        form_field(&a["confirm"], "ok")
                    )),
                    Err(ask) => ask,
                })
            }
            "test_input_required_result_multiple_inputs" => {
                let asks = [
                    ask_name("user_name", "What is your name?"),
                    ask_llm("greeting", "Generate a greeting", 50),
                    ask_roots("client_roots"),
                ];
                Ok(match self.gather(tool, &asks, true)? {
                    Ok(a) => text_result(&format!(
                        "Name: {}; greeting: {}; roots: {}",
                        form_field(&a["user_name"], "name"),
                        super::content_text(&a["greeting"]),
                        root_uris(&a["client_roots"])
                    )),
                    Err(ask) => ask,
                })
            }
            "test_input_required_result_multi_round" => self.multi_round(),
            "test_input_required_result_capabilities" => {
                let asks: Vec<Ask> = [
                    ask_name("user_name", "What is your name?"),
                    ask_llm("capital_question", "What is the capital of France?", 100),
                    ask_roots("client_roots"),
                ]
                .into_iter()
                .filter(|a| self.client_declares(a.capability))
                .collect();
                if asks.is_empty() {
                    return Ok(text_result(
                        "Nothing to ask: the client declared no elicitation, sampling or roots capability",
                    ));
                }
                Ok(match self.gather(tool, &asks, false)? {
                    Ok(a) => text_result(&format!("Received {} input response(s)", a.len())),
                    Err(ask) => ask,
                })
            }
            _ => Err(invalid(format_args!("unknown tool '{name}'"))),
        }
    }

    /// `prompts/get` of [`PROMPT`]: asks for context, then builds the messages.
    pub(super) fn input_required_prompt(&self) -> Result<Value, ErrorObject> {
        if self.era == Era::Legacy {
            return Err(invalid(format_args!(
                "{PROMPT} needs a 2026-07-28 client: it answers with input_required (MRTR)"
            )));
        }
        let asks = [Ask::new(
            "user_context",
            ELICIT,
            string_form("What context should the prompt use?", "context"),
        )];
        Ok(match self.gather("prompts/get", &asks, false)? {
            Ok(a) => json!({
                "description": "A prompt built from user-provided context",
                "messages": [{"role": "user", "content": {"type": "text", "text":
                    format!("Use this context: {}", form_field(&a["user_context"], "context"))}}],
            }),
            Err(ask) => ask,
        })
    }

    /// Collects the answers to `asks` for `method`. With `stateful`, answers
    /// count only next to a sealed `requestState`, and answers from earlier
    /// rounds ride in that state; without it, no state is issued and each
    /// retry must carry every answer. Asks only for declared capabilities
    /// (-32021 otherwise) and re-asks for whatever is still missing.
    fn gather(&self, method: &str, asks: &[Ask], stateful: bool) -> Result<Gathered, ErrorObject> {
        for ask in asks {
            self.require_capability(ask.capability)?;
        }
        let state = self.open_state(method)?;
        let responses = mrtr::responses(&self.params)?;
        let mut have = state
            .as_ref()
            .and_then(|s| s.data.get("answers"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for ask in asks {
            if let Some(answer) = mrtr::response_for(responses, ask.key, ask.method)? {
                if stateful && state.is_none() {
                    return Err(invalid(
                        "requestState is required with these input responses",
                    ));
                }
                have.insert(ask.key.into(), answer.clone());
            }
        }
        let missing: Map<String, Value> = asks
            .iter()
            .filter(|a| !have.contains_key(a.key))
            .map(|a| (a.key.to_owned(), a.request.clone()))
            .collect();
        if missing.is_empty() {
            return Ok(Ok(have));
        }
        let token = stateful.then(|| {
            let round = state.as_ref().map_or(1, |s| s.round + 1);
            self.seal_state(method, round, json!({"answers": have}))
        });
        Ok(Err(mrtr::input_required(missing, token)))
    }

    /// Round 1 asks for a name, round 2 (state carrying the name) for a
    /// colour, round 3 completes. Each round issues a new sealed state.
    fn multi_round(&self) -> Result<Value, ErrorObject> {
        let tool = "tools/call";
        self.require_capability("elicitation")?;
        let state = self.open_state(tool)?;
        let responses = mrtr::responses(&self.params)?;
        let step1 = ask_name("step1", "Step 1: What is your name?");
        let step2 = Ask::new(
            "step2",
            ELICIT,
            string_form("Step 2: What is your favorite color?", "color"),
        );
        let ask = |step: &Ask, round: u64, data: Value| {
            let mut requests = Map::new();
            requests.insert(step.key.into(), step.request.clone());
            mrtr::input_required(requests, Some(self.seal_state(tool, round, data)))
        };
        match state.map(|s| (s.round, s.data)) {
            None => Ok(ask(&step1, 1, Value::Null)),
            Some((1, _)) => match mrtr::response_for(responses, step1.key, ELICIT)? {
                Some(a) => Ok(ask(&step2, 2, json!({"name": form_field(a, "name")}))),
                None => Ok(ask(&step1, 1, Value::Null)),
            },
            Some((2, data)) => match mrtr::response_for(responses, step2.key, ELICIT)? {
                Some(a) => Ok(text_result(&format!(
                    "{} likes {}",
                    data["name"].as_str().unwrap_or(""),
                    form_field(a, "color")
                ))),
                None => Ok(ask(&step2, 2, data)),
            },
            Some(_) => Err(invalid("requestState names an unknown round")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DemoEra, DemoServer};
    use tether_wire::protocol;

    fn params(tool: &str, extra: Value) -> Value {
        let mut p = json!({"name": tool, "arguments": {}, "_meta": {
            protocol::META_PROTOCOL_VERSION: protocol::MODERN_VERSION,
            protocol::META_CLIENT_CAPABILITIES: {"sampling": {}, "elicitation": {}, "roots": {}}}});
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        p
    }

    fn run(tool: &str, extra: Value) -> Result<Value, ErrorObject> {
        let shared = DemoServer::new(DemoEra::Modern).shared;
        let call = Call::new(&shared, Era::Modern, None, params(tool, extra));
        call.input_required_tool(tool)
    }

    #[test]
    fn helpers() {
        assert!(is_tool("test_input_required_result_multi_round") && !is_tool("test_simple_text"));
        let accepted = json!({"action": "accept", "content": {"name": "Alice", "ok": true}});
        assert_eq!(form_field(&accepted, "name"), "Alice");
        assert_eq!(form_field(&accepted, "ok"), "true");
        assert_eq!(
            form_field(&json!({"action": "decline"}), "name"),
            "<decline>"
        );
        assert_eq!(
            root_uris(&json!({"roots": [{"uri": "file:///a"}, {"uri": "file:///b"}]})),
            "file:///a, file:///b"
        );
    }

    #[test]
    fn elicitation_needs_no_state_and_ignores_extra_keys() {
        let t = "test_input_required_result_elicitation";
        let first = run(t, json!({})).unwrap();
        assert_eq!(first["inputRequests"]["user_name"]["method"], ELICIT);
        assert!(first.get("requestState").is_none());
        let again = run(
            t,
            json!({"inputResponses": {"wrong_key": {"action": "accept"}}}),
        )
        .unwrap();
        assert_eq!(again["resultType"], "input_required");
        let done = run(
            t,
            json!({"inputResponses": {
            "user_name": {"action": "accept", "content": {"name": "Alice"}},
            "extra": {"action": "accept", "content": {}}}}),
        )
        .unwrap();
        assert_eq!(done["content"][0]["text"], "Hello, Alice!");
        assert!(run(t, json!({"inputResponses": {"user_name": 12345}})).is_err());
        assert!(run(t, json!({"inputResponses": null})).is_err());
    }

    #[test]
    fn stateful_tools_verify_their_state() {
        let shared = DemoServer::new(DemoEra::Modern).shared;
        let t = "test_input_required_result_tampered_state";
        let call = |extra: Value| {
            Call::new(&shared, Era::Modern, None, params(t, extra)).input_required_tool(t)
        };
        let first = call(json!({})).unwrap();
        let state = first["requestState"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let answer = json!({"confirm": {"action": "accept", "content": {"ok": true}}});
        let done = call(json!({"inputResponses": answer, "requestState": state})).unwrap();
        assert!(
            done["content"][0]["text"]
                .as_str()
                .unwrap_or("")
                .contains("state-ok")
        );
        let tampered =
            json!({"inputResponses": answer, "requestState": format!("{state}-TAMPERED")});
        assert_eq!(
            call(tampered).unwrap_err().code,
            tether_wire::jsonrpc::code::INVALID_PARAMS
        );
        assert!(call(json!({"inputResponses": answer})).is_err());
    }

    #[test]
    fn multiple_inputs_and_multi_round() {
        let shared = DemoServer::new(DemoEra::Modern).shared;
        let t = "test_input_required_result_multiple_inputs";
        let call = |extra: Value| {
            Call::new(&shared, Era::Modern, None, params(t, extra)).input_required_tool(t)
        };
        let first = call(json!({})).unwrap();
        assert_eq!(first["inputRequests"].as_object().map(Map::len), Some(3));
        // A partial answer is kept in the state; the rest is asked again.
        let name = json!({"action": "accept", "content": {"name": "Alice"}});
        let second = call(
            json!({"inputResponses": {"user_name": name}, "requestState": first["requestState"]}),
        )
        .unwrap();
        assert_eq!(second["inputRequests"].as_object().map(Map::len), Some(2));
        let rest = json!({"greeting": {"role": "assistant", "content": {"type": "text", "text": "Hi!"}, "model": "m"},
            "client_roots": {"roots": [{"uri": "file:///test/root"}]}});
        let done =
            call(json!({"inputResponses": rest, "requestState": second["requestState"]})).unwrap();
        assert_eq!(
            done["content"][0]["text"],
            "Name: Alice; greeting: Hi!; roots: file:///test/root"
        );

        let t = "test_input_required_result_multi_round";
        let call = |extra: Value| {
            Call::new(&shared, Era::Modern, None, params(t, extra)).input_required_tool(t)
        };
        let r1 = call(json!({})).unwrap();
        let r2 =
            call(json!({"inputResponses": {"step1": name}, "requestState": r1["requestState"]}))
                .unwrap();
        assert!(r2["inputRequests"]["step2"].is_object());
        assert_ne!(r1["requestState"], r2["requestState"]);
        let color = json!({"action": "accept", "content": {"color": "blue"}});
        let r3 =
            call(json!({"inputResponses": {"step2": color}, "requestState": r2["requestState"]}))
                .unwrap();
        assert_eq!(r3["content"][0]["text"], "Alice likes blue");
    }

    #[test]
    fn capabilities_limit_the_requests() {
        let shared = DemoServer::new(DemoEra::Modern).shared;
        let t = "test_input_required_result_capabilities";
        let mut p = params(t, json!({}));
        p["_meta"][protocol::META_CLIENT_CAPABILITIES] = json!({"sampling": {}});
        let r = Call::new(&shared, Era::Modern, None, p)
            .input_required_tool(t)
            .unwrap();
        let keys: Vec<_> = r["inputRequests"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, v)| v["method"].clone())
            .collect();
        assert_eq!(keys, [json!(SAMPLE)]);
        let mut p = params("test_input_required_result_elicitation", json!({}));
        p["_meta"][protocol::META_CLIENT_CAPABILITIES] = json!({});
        let e = Call::new(&shared, Era::Modern, None, p)
            .input_required_tool("test_input_required_result_elicitation")
            .unwrap_err();
        assert_eq!(e.code, protocol::ERROR_MISSING_CAPABILITY);
    }
}
