//! Watch fan-out: who watches which key, and the stream each watcher reads.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;

use super::{Event, Key, Store};

struct Slot {
    keys: Box<[Key]>,
    tx: mpsc::Sender<Arc<Event>>,
}

/// The registry of live watchers, indexed by key so that a write reaches only
/// the watchers of its key.
///
/// It lives under the store's commit lock: events are published in commit
/// order, and a watcher registers atomically with its snapshot or replay, so
/// it sees every event after that point exactly once.
pub struct Watchers {
    /// How many events may wait for one watcher. A watcher that falls this
    /// far behind is dropped (its stream ends after the queued events; the
    /// client resumes from the last id it saw), so a slow client costs
    /// bounded memory and never slows writers.
    capacity: usize,
    next_id: u64,
    slots: HashMap<u64, Slot>,
    by_key: HashMap<Key, Vec<u64>>,
}

impl Watchers {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            next_id: 0,
            slots: HashMap::new(),
            by_key: HashMap::new(),
        }
    }

    pub fn register(&mut self, keys: Box<[Key]>) -> (u64, mpsc::Receiver<Arc<Event>>) {
        let (tx, rx) = mpsc::channel(self.capacity);
        self.next_id += 1;
        let id = self.next_id;
        for key in &keys {
            self.by_key.entry(key.clone()).or_default().push(id);
        }
        self.slots.insert(id, Slot { keys, tx });
        (id, rx)
    }

    pub fn remove(&mut self, id: u64) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        for key in &slot.keys {
            if let Some(ids) = self.by_key.get_mut(key) {
                ids.retain(|other| *other != id);
                if ids.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
    }

    /// Hands the event to every watcher of its key; returns how many were
    /// dropped for being too slow.
    pub fn publish(&mut self, event: &Arc<Event>) -> u64 {
        let Some(ids) = self.by_key.get(&event.key) else {
            return 0;
        };
        let mut lagging = Vec::new();
        for id in ids {
            if let Some(slot) = self.slots.get(id)
                && slot.tx.try_send(event.clone()).is_err()
            {
                lagging.push(*id);
            }
        }
        for id in &lagging {
            self.remove(*id);
        }
        lagging.len() as u64
    }
}

/// A watcher's stream of events: first the snapshot or the replayed history,
/// then live events. It ends when the watcher falls too far behind; dropping
/// it unregisters the watcher.
pub struct Watch {
    pub(super) first: std::vec::IntoIter<Arc<Event>>,
    pub(super) live: mpsc::Receiver<Arc<Event>>,
    pub(super) id: u64,
    pub(super) store: Store,
}

impl Stream for Watch {
    type Item = Arc<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(event) = self.first.next() {
            return Poll::Ready(Some(event));
        }
        self.live.poll_recv(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.store.unwatch(self.id);
    }
}
