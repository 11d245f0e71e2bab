//! Client (downstream) sessions: what one legacy client session holds, the
//! registry of this node's sessions with its caps and reaper, session ids,
//! and the resumable SSE streams of a session.

mod client_session;
mod id;
mod quota;
mod registry;
mod resumable;
mod scope;

pub use client_session::{ClientSession, MAX_PENDING, MAX_SUBSCRIPTIONS, PendingRequest};
pub use id::{is_valid_session_id, new_session_id};
pub use quota::{Admission, Seat, SessionQuota};
pub use registry::{Located, RegistryLimits, SessionRegistry};
pub use resumable::{StreamLog, Streams};
pub use scope::Scope;
