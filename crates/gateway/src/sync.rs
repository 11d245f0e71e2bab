//! Small synchronisation helpers.

use std::sync::{Mutex, MutexGuard};

/// Locks a std mutex, recovering from poisoning: every critical section in
/// Tether is a single insert, remove or read, so the data stays consistent.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-locks a std RwLock, recovering from poisoning (see [`lock`]).
pub fn read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-locks a std RwLock, recovering from poisoning (see [`lock`]).
pub fn write<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// A one-way signal ending long-lived streams at shutdown (and any opened
/// after it), so they do not hold the shutdown open.
pub struct Closing {
    closed: tokio::sync::watch::Sender<bool>,
}

impl Default for Closing {
    fn default() -> Self {
        Closing {
            closed: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Closing {
    /// Ends every stream waiting on [`Closing::closed`], now and later.
    pub fn close_all(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once [`Closing::close_all`] was called.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }
}

/// Gives back a map's spare room once it is less than a quarter full, so a
/// burst of sessions does not pin their table after they end. Halving on a
/// quarter keeps the cost amortised: a map that shrank must lose half its
/// entries again before the next shrink.
pub fn shrink_when_sparse<K: Eq + std::hash::Hash, V>(map: &mut std::collections::HashMap<K, V>) {
    if map.len() * 4 < map.capacity() && map.capacity() > SPARSE_FLOOR {
        map.shrink_to(map.len() * 2);
    }
}

/// [`shrink_when_sparse`] for a [`dashmap::DashMap`]: once less than a
/// quarter full, every shard is shrunk to fit (each under its own lock).
pub fn shrink_dashmap_when_sparse<K: Eq + std::hash::Hash, V>(map: &dashmap::DashMap<K, V>) {
    let capacity = map.capacity();
    if map.len() * 4 < capacity && capacity > SPARSE_FLOOR {
        map.shrink_to_fit();
    }
}

/// Below this many slots a map keeps its room: not worth a reallocation.
const SPARSE_FLOOR: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_map_gives_back_its_room_and_a_full_one_keeps_it() {
        let mut map: std::collections::HashMap<u32, u32> = (0..4096).map(|i| (i, i)).collect();
        let full = map.capacity();
        shrink_when_sparse(&mut map);
        assert_eq!(map.capacity(), full, "a full map keeps its room");
        map.retain(|k, _| *k < 100);
        shrink_when_sparse(&mut map);
        assert!(
            map.capacity() < full / 8,
            "capacity {} after 100 of 4096 entries remain",
            map.capacity()
        );
        assert_eq!(map.len(), 100);

        let dash: dashmap::DashMap<u32, u32> = (0..4096).map(|i| (i, i)).collect();
        let full = dash.capacity();
        (100..4096).for_each(|k| {
            dash.remove(&k);
        });
        shrink_dashmap_when_sparse(&dash);
        assert!(
            dash.capacity() < full / 8,
            "dashmap capacity {} of {full}",
            dash.capacity()
        );
        assert_eq!(dash.len(), 100);
    }
}
