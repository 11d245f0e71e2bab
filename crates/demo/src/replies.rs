//! HTTP responses both HTTP transports of the demo server send: JSON bodies,
//! JSON-RPC errors and event streams.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use tether_wire::jsonrpc::ErrorObject;

/// Interval between keepalive comments on a legacy GET or HTTP+SSE stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// A JSON body with a status.
pub fn json_body(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A JSON-RPC error answering the request `id` (null when unknown).
pub fn error(status: u16, e: &ErrorObject, id: Option<&RawValue>) -> Response {
    json_body(status, e.to_response(id))
}

/// A JSON-RPC error with no request id.
pub fn reject(status: u16, code: i64, message: &str) -> Response {
    error(status, &ErrorObject::new(code, message), None)
}

/// An event stream of `body`.
pub fn sse_body(body: Body) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
        (HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    (headers, body).into_response()
}
