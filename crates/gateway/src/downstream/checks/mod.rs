//! The checks a client request passes before an endpoint sees it, each a
//! layer applied once to every endpoint that needs it. In request order:
//!
//! 1. [`record`]: the response's status and latency, counted once per
//!    response under the label the endpoint gave it (`(rejected)` when a
//!    check refused it first);
//! 2. [`peer`]: a request another cluster node passed on carries proof of
//!    the cluster secret (403), and is marked as passed on;
//! 3. [`edge`]: header size, `Host` and `Origin` (431, 403);
//! 4. [`authenticate`]: who is calling — the [`Caller`](crate::auth::Caller)
//!    goes into the request's extensions (401 with the OAuth challenge);
//! 5. [`rate_limit`]: requests per principal (429 + `Retry-After`), not
//!    again for a request passed on;
//! 6. [`inflight`]: requests being served at once (503 + `Retry-After`),
//!    held until the response body is done.
//!
//! Each is a [`layer::Check`] but authentication, which may have to wait for
//! a key set and is a layer of its own.
//!
//! The body limits (size, time) and the per-session in-flight cap are
//! checked by the endpoints, which know when they read a body and which
//! session a request is in.

pub mod authenticate;
pub mod edge;
pub mod inflight;
pub mod layer;
pub mod peer;
pub mod rate_limit;
pub mod record;
