//! How many client sessions may be held, in total and per principal: one
//! quota for every transport. A place is a [`Seat`], given back exactly once
//! when it is dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dashmap::DashMap;

use crate::metrics::Metrics;

/// Why a session could not be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The total session cap is reached.
    Full,
    /// The principal's session cap is reached.
    PrincipalFull,
}

/// The session caps; the total is the live-sessions gauge of the metrics.
pub struct SessionQuota {
    max_total: usize,
    max_per_principal: usize,
    per_principal: DashMap<Arc<str>, usize>,
    metrics: Arc<Metrics>,
}

/// One admitted session's place under the caps; dropping it gives it back.
#[derive(Debug)]
pub struct Seat {
    quota: Arc<SessionQuota>,
    principal: Arc<str>,
}

impl std::fmt::Debug for SessionQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionQuota")
            .field("max_total", &self.max_total)
            .field("max_per_principal", &self.max_per_principal)
            .finish()
    }
}

impl SessionQuota {
    /// At most `max_total` sessions, `max_per_principal` of them one principal's.
    pub fn new(max_total: usize, max_per_principal: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(SessionQuota {
            max_total,
            max_per_principal,
            per_principal: DashMap::new(),
            metrics,
        })
    }

    /// Takes a place for `principal` (concurrent callers cannot overshoot a cap).
    pub fn admit(self: &Arc<Self>, principal: &Arc<str>) -> Result<Seat, Admission> {
        {
            let mut held = self.per_principal.entry(principal.clone()).or_default();
            if *held >= self.max_per_principal {
                return Err(Admission::PrincipalFull);
            }
            *held += 1;
        }
        let seat = Seat {
            quota: self.clone(),
            principal: principal.clone(),
        };
        let before = self
            .metrics
            .downstream_sessions
            .fetch_add(1, Ordering::AcqRel);
        if before >= self.max_total as i64 {
            drop(seat);
            return Err(Admission::Full);
        }
        Ok(seat)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let quota = &self.quota;
        quota
            .metrics
            .downstream_sessions
            .fetch_sub(1, Ordering::AcqRel);
        quota
            .per_principal
            .remove_if_mut(&self.principal, |_, held| {
                *held = held.saturating_sub(1);
                *held == 0
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_principal_and_in_total_and_seats_come_back() {
        let metrics = Arc::new(Metrics::default());
        let quota = SessionQuota::new(3, 2, metrics.clone());
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let a1 = quota.admit(&a).unwrap();
        let _a2 = quota.admit(&a).unwrap();
        assert_eq!(quota.admit(&a).unwrap_err(), Admission::PrincipalFull);
        let _b1 = quota.admit(&b).unwrap();
        assert_eq!(quota.admit(&b).unwrap_err(), Admission::Full);
        assert_eq!(metrics.downstream_sessions.load(Ordering::Relaxed), 3);
        drop(a1);
        assert_eq!(metrics.downstream_sessions.load(Ordering::Relaxed), 2);
        assert!(quota.admit(&b).is_ok(), "a freed place is usable again");
    }
}
