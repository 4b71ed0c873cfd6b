//! Watch fan-out: who watches which key, and the stream each watcher reads.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;

use super::{Event, Key, Store};

struct Slot {
    keys: Box<[Key]>,
    tx: mpsc::UnboundedSender<Event>,
    /// Bytes of events sent and not yet taken by the stream; shared with
    /// the [`Watch`].
    queued: Arc<AtomicUsize>,
}

/// The registry of live watchers, indexed by key so that a write reaches only
/// the watchers of its key.
///
/// It lives under the store's commit lock: events are published in commit
/// order, and a watcher registers atomically with its snapshot or replay, so
/// it sees every event after that point exactly once.
pub struct Watchers {
    /// How many bytes of events (see [`Event::cost`]) may wait for one
    /// watcher. A watcher that falls this far behind is dropped (its stream
    /// ends after the queued events; the client resumes from the last id it
    /// saw), so a slow client costs bounded memory and never slows writers.
    max_queued: usize,
    next_id: u64,
    slots: HashMap<u64, Slot>,
    /// A set, not a list: a key may have ten thousand watchers, and each
    /// one leaving must not scan the others.
    by_key: HashMap<Key, HashSet<u64>>,
}

impl Watchers {
    pub fn new(max_queued: usize) -> Self {
        Self {
            max_queued,
            next_id: 0,
            slots: HashMap::new(),
            by_key: HashMap::new(),
        }
    }

    /// Adds a watcher of `keys`; returns its id, its receiver and its
    /// queued-bytes counter.
    pub fn register(&mut self, keys: Box<[Key]>) -> (u64, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        self.next_id += 1;
        let id = self.next_id;
        for key in &keys {
            self.by_key.entry(key.clone()).or_default().insert(id);
        }
        let slot = Slot {
            keys,
            tx,
            queued: queued.clone(),
        };
        self.slots.insert(id, slot);
        (id, Receiver { rx, queued })
    }

    pub fn remove(&mut self, id: u64) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        for key in &slot.keys {
            if let Some(ids) = self.by_key.get_mut(key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
    }

    /// Hands the event to every watcher of its key; returns how many were
    /// dropped for being too slow.
    pub fn publish(&mut self, event: &Event) -> u64 {
        let Some(ids) = self.by_key.get(event.key()) else {
            return 0;
        };
        let cost = event.cost();
        let (mut lagging, mut gone) = (Vec::new(), Vec::new());
        for id in ids {
            let Some(slot) = self.slots.get(id) else {
                continue;
            };
            // One event always fits, however large, so a big value alone
            // never ends a stream.
            let queued = slot.queued.fetch_add(cost, Ordering::Relaxed);
            if queued > 0 && queued + cost > self.max_queued {
                slot.queued.fetch_sub(cost, Ordering::Relaxed);
                lagging.push(*id);
            } else if slot.tx.send(event.clone()).is_err() {
                // The stream is being dropped and will unregister itself.
                slot.queued.fetch_sub(cost, Ordering::Relaxed);
                gone.push(*id);
            }
        }
        for id in lagging.iter().chain(&gone) {
            self.remove(*id);
        }
        lagging.len() as u64
    }
}

/// The receiving end of a watcher's queue.
pub struct Receiver {
    rx: mpsc::UnboundedReceiver<Event>,
    queued: Arc<AtomicUsize>,
}

/// A watcher's stream of events: first the snapshot or the replayed history,
/// then live events. It ends when the watcher falls too far behind; dropping
/// it unregisters the watcher.
pub struct Watch {
    pub(super) first: std::vec::IntoIter<Event>,
    pub(super) live: Receiver,
    pub(super) id: u64,
    pub(super) store: Store,
}

impl Stream for Watch {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(event) = self.first.next() {
            return Poll::Ready(Some(event));
        }
        let live = &mut self.live;
        let next = live.rx.poll_recv(cx);
        if let Poll::Ready(Some(event)) = &next {
            live.queued.fetch_sub(event.cost(), Ordering::Relaxed);
        }
        next
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.store.unwatch(self.id);
    }
}
