//! How the admin API answers what it cannot do: a JSON `{"error": …}` with
//! the status that says why.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::definitions::Refusal;

/// An error answer: `status`, and `{"error": text}`.
pub fn problem(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "error": text.into() }))).into_response()
}

/// The answer to a definition that could not be read: 413 when the body is
/// too large, else 400; `what` names the kind of definition.
pub fn bad_definition(what: &str, e: JsonRejection) -> Response {
    let status = match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    problem(status, format!("bad {what} definition: {e}"))
}

/// The answer to a refused change; `missing` says what was not found.
pub fn refused(e: Refusal, missing: &str) -> Response {
    match e {
        Refusal::NotFound => problem(StatusCode::NOT_FOUND, missing),
        e @ Refusal::Conflict(_) => problem(StatusCode::CONFLICT, e.to_string()),
        e @ (Refusal::Invalid(_) | Refusal::Unbuildable { .. }) => {
            problem(StatusCode::BAD_REQUEST, e.to_string())
        }
        e @ (Refusal::Store(_) | Refusal::Encode(_)) => {
            problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}
