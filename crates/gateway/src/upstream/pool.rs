//! Idle upstream sessions that sessionless requests to a `shared = true`
//! HTTP upstream borrow instead of opening one per request; bounded.

use std::sync::{Arc, Mutex};

use super::session::UpstreamSession;
use crate::sync::lock;

/// Idle sessions kept at most.
const POOL_LIMIT: usize = 8;

/// The idle sessions of one upstream.
#[derive(Default)]
pub struct SessionPool {
    idle: Mutex<Vec<Arc<UpstreamSession>>>,
}

impl SessionPool {
    /// An idle session, if one is open.
    pub fn take(&self) -> Option<Arc<UpstreamSession>> {
        loop {
            let session = lock(&self.idle).pop()?;
            if !session.is_closed() {
                return Some(session);
            }
        }
    }

    /// Keeps a session for the next request; hands it back when the pool is
    /// full (the caller closes it).
    pub fn give_back(&self, session: Arc<UpstreamSession>) -> Option<Arc<UpstreamSession>> {
        if session.is_closed() {
            return None;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < POOL_LIMIT {
            idle.push(session);
            None
        } else {
            Some(session)
        }
    }

    /// Takes every idle session out, for the caller to close.
    pub fn drain(&self) -> Vec<Arc<UpstreamSession>> {
        std::mem::take(&mut *lock(&self.idle))
    }
}
