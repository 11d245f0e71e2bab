//! MRTR (2026-07-28 multi-round requests) building blocks for the demo
//! server: integrity-protected `requestState` tokens, `inputResponses`
//! validation and `input_required` results.
//!
//! A `requestState` is attacker-controlled input, so it is sealed with an
//! HMAC-SHA256 under a per-process random key. The token binds the method,
//! a digest of the request's params (without `_meta`, `inputResponses` and
//! `requestState`), the round number, an expiry and the server's own data.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{digest, hmac};
use serde_json::{Map, Value, json};

use super::invalid;
use tether_wire::jsonrpc::ErrorObject;

/// How long a sealed `requestState` stays valid.
const STATE_TTL_SECS: u64 = 600;
/// Prefix of every token; bumps when the format changes.
const TOKEN_VERSION: &str = "v1";
/// Params members a retry adds or changes, left out of the params digest.
const RETRY_MEMBERS: [&str; 3] = ["_meta", "inputResponses", "requestState"];

/// The per-process HMAC key sealing `requestState` tokens.
pub(super) struct StateKey(hmac::Key);

impl Default for StateKey {
    fn default() -> Self {
        let mut bytes = [0u8; 32];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: a weak but unique-per-process key beats none.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let seed = format!("{nanos}:{}", std::process::id());
            bytes.copy_from_slice(digest::digest(&digest::SHA256, seed.as_bytes()).as_ref());
        }
        StateKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
    }
}

/// What an opened `requestState` carries.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct State {
    /// The round that issued the token (1 = the first `input_required`).
    pub round: u64,
    /// The server's own data for the next round.
    pub data: Value,
}

impl StateKey {
    /// Seals `state` for a retry of `method` with `params`.
    pub(super) fn seal(&self, method: &str, params: &Value, state: &State) -> String {
        self.seal_at(method, params, state, now())
    }

    fn seal_at(&self, method: &str, params: &Value, state: &State, now: u64) -> String {
        let payload = json!({
            "m": method,
            "d": params_digest(params),
            "r": state.round,
            "x": now + STATE_TTL_SECS,
            "v": state.data,
        });
        let body = format!(
            "{TOKEN_VERSION}.{}",
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let tag = hmac::sign(&self.0, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Opens a retry's `requestState`: `Err` (-32602) unless it is intact,
    /// unexpired and was issued for this `method` and these `params`.
    pub(super) fn open(
        &self,
        token: &str,
        method: &str,
        params: &Value,
    ) -> Result<State, ErrorObject> {
        self.open_at(token, method, params, now())
    }

    fn open_at(
        &self,
        token: &str,
        method: &str,
        params: &Value,
        now: u64,
    ) -> Result<State, ErrorObject> {
        let tampered = || invalid("requestState failed its integrity check");
        let (body, tag) = token.rsplit_once('.').ok_or_else(tampered)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| tampered())?;
        hmac::verify(&self.0, body.as_bytes(), &tag).map_err(|_| tampered())?;
        let payload = body
            .strip_prefix(TOKEN_VERSION)
            .and_then(|p| p.strip_prefix('.'))
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
            .ok_or_else(tampered)?;
        if payload["x"].as_u64().is_none_or(|x| x < now) {
            return Err(invalid("requestState has expired; start the request again"));
        }
        if payload["m"].as_str() != Some(method)
            || payload["d"].as_str() != Some(&params_digest(params))
        {
            return Err(invalid("requestState was issued for a different request"));
        }
        let round = payload["r"].as_u64().ok_or_else(tampered)?;
        Ok(State {
            round,
            data: payload["v"].clone(),
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// SHA-256 (hex, first 16 bytes) of a request's params minus the members a
/// retry adds, so every round of one request has the same digest.
fn params_digest(params: &Value) -> String {
    let mut core = params.as_object().cloned().unwrap_or_default();
    for key in RETRY_MEMBERS {
        core.remove(key);
    }
    let bytes = serde_json::to_vec(&core).unwrap_or_default();
    let hash = digest::digest(&digest::SHA256, &bytes);
    hash.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A retry's `inputResponses`: `None` when absent, `-32602` when not an object.
pub(super) fn responses(params: &Value) -> Result<Option<&Map<String, Value>>, ErrorObject> {
    match params.get("inputResponses") {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(invalid("'inputResponses' must be an object")),
    }
}

/// The client's answer under `key` to an input request of `method`, checked
/// for the shape of that method's result; `None` when not answered.
pub(super) fn response_for<'a>(
    responses: Option<&'a Map<String, Value>>,
    key: &str,
    method: &str,
) -> Result<Option<&'a Value>, ErrorObject> {
    let Some(answer) = responses.and_then(|r| r.get(key)) else {
        return Ok(None);
    };
    let ok = match method {
        "elicitation/create" => answer
            .get("action")
            .and_then(Value::as_str)
            .is_some_and(|a| matches!(a, "accept" | "decline" | "cancel")),
        "sampling/createMessage" => answer
            .get("content")
            .is_some_and(|c| c.is_object() || c.is_array()),
        "roots/list" => answer.get("roots").is_some_and(Value::is_array),
        _ => answer.is_object(),
    };
    if ok {
        Ok(Some(answer))
    } else {
        Err(invalid(format_args!(
            "inputResponses['{key}'] is not a valid {method} result"
        )))
    }
}

/// One entry of an `inputRequests` map.
pub(super) fn input_request(method: &str, params: Value) -> Value {
    json!({"method": method, "params": params})
}

/// An `elicitation/create` input request for a form of string/boolean fields.
pub(super) fn elicitation(message: &str, schema: Value) -> Value {
    input_request(
        "elicitation/create",
        json!({"message": message, "requestedSchema": schema}),
    )
}

/// An `InputRequiredResult` asking for `requests`, with an optional state.
pub(super) fn input_required(requests: Map<String, Value>, state: Option<String>) -> Value {
    let mut result = json!({"resultType": "input_required", "inputRequests": requests});
    if let (Some(state), Some(obj)) = (state, result.as_object_mut()) {
        obj.insert("requestState".into(), Value::String(state));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Value {
        json!({"name": "t", "arguments": {"a": 1}, "_meta": {"x": 1}})
    }

    #[test]
    fn state_round_trips_and_binds_the_request() {
        let key = StateKey::default();
        let state = State {
            round: 2,
            data: json!({"name": "Alice"}),
        };
        let token = key.seal("tools/call", &params(), &state);
        // A retry adds inputResponses/requestState and fresh _meta: same digest.
        let mut retry = params();
        retry["_meta"] = json!({"y": 2});
        retry["inputResponses"] = json!({"k": {}});
        retry["requestState"] = json!(token);
        assert_eq!(key.open(&token, "tools/call", &retry).unwrap(), state);
        assert!(key.open(&token, "prompts/get", &retry).is_err());
        let mut other = params();
        other["arguments"]["a"] = json!(2);
        assert!(key.open(&token, "tools/call", &other).is_err());
        for bad in [
            format!("{token}-TAMPERED"),
            "x".into(),
            String::new(),
            token.replacen("v1", "v2", 1),
        ] {
            assert!(key.open(&bad, "tools/call", &retry).is_err(), "{bad}");
        }
        // Another process's key does not open it.
        assert!(
            StateKey::default()
                .open(&token, "tools/call", &retry)
                .is_err()
        );
    }

    #[test]
    fn state_expires() {
        let key = StateKey::default();
        let state = State {
            round: 1,
            data: Value::Null,
        };
        let token = key.seal_at("m", &params(), &state, 1000);
        assert!(
            key.open_at(&token, "m", &params(), 1000 + STATE_TTL_SECS)
                .is_ok()
        );
        let e = key
            .open_at(&token, "m", &params(), 1001 + STATE_TTL_SECS)
            .unwrap_err();
        assert!(e.message.contains("expired"));
    }

    #[test]
    fn validates_input_responses() {
        assert!(responses(&json!({})).unwrap().is_none());
        assert!(responses(&json!({"inputResponses": null})).is_err());
        assert!(responses(&json!({"inputResponses": 5})).is_err());
        let p = json!({"inputResponses": {
            "e": {"action": "accept", "content": {"name": "A"}},
            "s": {"role": "assistant", "content": {"type": "text", "text": "x"}, "model": "m"},
            "r": {"roots": []},
            "bad": 12345,
        }});
        let r = responses(&p).unwrap();
        assert!(
            response_for(r, "e", "elicitation/create")
                .unwrap()
                .is_some()
        );
        assert!(
            response_for(r, "s", "sampling/createMessage")
                .unwrap()
                .is_some()
        );
        assert!(response_for(r, "r", "roots/list").unwrap().is_some());
        assert!(response_for(r, "missing", "roots/list").unwrap().is_none());
        assert!(response_for(r, "bad", "elicitation/create").is_err());
        assert!(response_for(r, "s", "elicitation/create").is_err());
        assert!(
            response_for(None, "e", "elicitation/create")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn builds_input_required_results() {
        let mut reqs = Map::new();
        reqs.insert("k".into(), input_request("roots/list", json!({})));
        let r = input_required(reqs.clone(), None);
        assert_eq!(r["resultType"], "input_required");
        assert!(r.get("requestState").is_none());
        assert_eq!(input_required(reqs, Some("s".into()))["requestState"], "s");
        let e = elicitation("Hi?", json!({"type": "object"}));
        assert_eq!(
            (e["method"].as_str(), e["params"]["message"].as_str()),
            (Some("elicitation/create"), Some("Hi?"))
        );
    }
}
