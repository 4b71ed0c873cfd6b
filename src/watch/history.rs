//! The bounded history of recent events that watch resume replays from.

use std::collections::{HashSet, VecDeque};

use crate::domain::{Event, Position, Watched};

/// The most recent change events, oldest first: at most `capacity` of them
/// and, beyond the newest one, at most `max_bytes` of keys and values, so
/// large values cannot make the history hold unbounded memory.
///
/// It holds whole revisions (a batch's events share one): the oldest
/// revision it holds is replayable in full.
pub struct History {
    events: VecDeque<Event>,
    capacity: usize,
    bytes: usize,
    max_bytes: usize,
    /// Events that have left, dropped [`LEAVING`] at a time: see
    /// [`History::bury`].
    leaving: Vec<Event>,
}

/// How many events that left the history are dropped together.
const LEAVING: usize = 32;

impl History {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            events: VecDeque::new(),
            capacity,
            bytes: 0,
            max_bytes,
            leaving: Vec::with_capacity(LEAVING),
        }
    }

    pub fn push(&mut self, event: Event) {
        self.bytes += event.cost();
        self.events.push_back(event);
        while self.events.len() > self.capacity || self.bytes > self.max_bytes {
            let (Some(oldest), Some(newest)) = (self.events.front(), self.events.back()) else {
                break;
            };
            // The newest revision always stays, however large.
            let revision = oldest.id;
            if revision == newest.id {
                break;
            }
            while let Some(oldest) = self.events.pop_front_if(|event| event.id == revision) {
                self.bytes -= oldest.cost();
                self.bury(oldest);
            }
        }
    }

    /// Drops events that left, a batch at a time. An event that leaves is
    /// old: its records (the value it wrote and the one it replaced) are
    /// long out of the cache, and dropping one is an atomic decrement on a
    /// cold line that stalls until the line arrives, twice per write.
    /// Reading the batch's records first lets the processor fetch their
    /// lines side by side, so the decrements that follow find them cached
    /// (measured: CPU per PUT, `bench/putcpu.sh`, BENCHMARKS.md).
    fn bury(&mut self, event: Event) {
        self.leaving.push(event);
        if self.leaving.len() < LEAVING {
            return;
        }
        for event in &self.leaving {
            std::hint::black_box(event.touch());
        }
        self.leaving.clear();
    }

    /// Forgets every event: what follows is not contiguous with them.
    #[cfg(feature = "etcd")]
    pub fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
    }

    /// The oldest revision still replayable; `current + 1` when the history
    /// is empty (nothing to replay, and nothing missed).
    pub fn oldest_revision(&self, current: u64) -> u64 {
        self.events.front().map_or(current + 1, |event| event.id)
    }

    /// Events with a revision above `after`, oldest first. The caller checks
    /// that the history reaches back far enough.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &Event> {
        let start = self.events.partition_point(|event| event.id <= after);
        self.events.range(start..)
    }
}

impl History {
    /// The events on what `watched` names after `since`, oldest first. The
    /// caller checks that the history reaches back far enough.
    pub fn replay(&self, since: Position, watched: &Watched) -> Vec<Event> {
        let keys: HashSet<&str> = watched.keys.iter().map(|key| &**key).collect();
        let wanted = |key: &str| {
            keys.contains(key)
                || watched
                    .prefixes
                    .iter()
                    .any(|prefix| key.starts_with(&**prefix))
        };
        self.after(since.revision.saturating_sub(1))
            .filter(|event| since.precedes(event.id, event.part) && wanted(event.key()))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;

    fn event(id: u64) -> Event {
        Event::gone(id, EventKind::Delete, "k".into())
    }

    #[test]
    fn keeps_the_newest_events() {
        let mut history = History::new(3, usize::MAX);
        assert_eq!(history.oldest_revision(0), 1);
        for id in 1..=5 {
            history.push(event(id));
        }
        assert_eq!(history.oldest_revision(5), 3);
        let ids: Vec<u64> = history.after(3).map(|e| e.id).collect();
        assert_eq!(ids, [4, 5]);
        let ids: Vec<u64> = history.after(2).map(|e| e.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        assert_eq!(history.after(5).count(), 0);
    }

    #[test]
    fn keeps_whole_revisions() {
        let mut history = History::new(3, usize::MAX);
        for id in [1, 2, 2, 2, 3] {
            history.push(event(id));
        }
        // Three of revision 2 and one of 3 are over capacity: revision 2
        // goes whole rather than leave a part of it.
        assert_eq!(history.oldest_revision(3), 3);
        let mut big = History::new(2, usize::MAX);
        for id in [1, 1, 1] {
            big.push(event(id));
        }
        assert_eq!(big.after(0).count(), 3, "the newest revision stays whole");
    }

    #[test]
    fn events_that_left_are_dropped_a_batch_at_a_time() {
        let key: crate::domain::Key = "k".into();
        let mut history = History::new(2, usize::MAX);
        for id in 1..=2 {
            history.push(Event::gone(id, EventKind::Delete, key.clone()));
        }
        history.push(Event::gone(3, EventKind::Delete, key.clone()));
        // Two in the history, one left and waiting for its batch.
        assert_eq!(std::sync::Arc::strong_count(&key), 4);
        for id in 4..=(2 + LEAVING as u64) {
            history.push(Event::gone(id, EventKind::Delete, key.clone()));
        }
        // LEAVING events have left: all dropped together.
        assert_eq!(std::sync::Arc::strong_count(&key), 3);
        assert_eq!(
            history.oldest_revision(2 + LEAVING as u64),
            1 + LEAVING as u64
        );
    }

    #[test]
    fn keeps_within_its_byte_budget_but_always_the_newest_event() {
        let cost = event(1).cost();
        let mut history = History::new(100, 2 * cost);
        for id in 1..=5 {
            history.push(event(id));
        }
        assert_eq!(history.oldest_revision(5), 4);
        let mut tiny = History::new(100, 1);
        tiny.push(event(1));
        assert_eq!(tiny.oldest_revision(1), 1, "the newest event stays");
    }
}
