//! The expiry queue: which keys expire when.

use std::collections::BTreeSet;
use tokio::time::Instant;

use super::Key;

/// Deadlines ordered by time, so the sweeper finds the next key to expire
/// without scanning the map. Exact removal (a write that replaces or clears
/// a TTL removes the old deadline) keeps it as large as the number of keys
/// with a TTL, however often they are rewritten.
#[derive(Default)]
pub struct ExpiryQueue {
    deadlines: BTreeSet<(Instant, Key)>,
}

impl ExpiryQueue {
    /// Adds a deadline; returns whether it is now the earliest, so the
    /// sweeper must wake sooner than it planned.
    pub fn insert(&mut self, deadline: Instant, key: Key) -> bool {
        let earliest = self.next().is_none_or(|next| deadline < next);
        self.deadlines.insert((deadline, key));
        earliest
    }

    pub fn remove(&mut self, deadline: Instant, key: &Key) {
        self.deadlines.remove(&(deadline, key.clone()));
    }

    pub fn next(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Up to `limit` keys whose deadline is at or before `now`, earliest first.
    pub fn due(&self, now: Instant, limit: usize) -> Vec<Key> {
        self.deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(limit)
            .map(|(_, key)| key.clone())
            .collect()
    }
}
