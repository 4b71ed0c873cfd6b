//! Watch fan-out: who watches which key, the stream each watcher reads,
//! and what every watcher is charged for the memory it pins.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::{Event, Key, Store};

/// The encoded form of one published event, made once by the first watcher
/// that reads it and shared with every other watcher of the same publish
/// (ten thousand watchers of a key serialise its event once). The store
/// does not know the encoding: the reader fills the cell.
///
/// It counts toward the watchers' total while it lives, once however many
/// watchers hold it, since that is the memory it takes.
pub struct SharedFrame {
    cell: OnceLock<Bytes>,
    cost: usize,
    total: Arc<AtomicUsize>,
}

impl SharedFrame {
    fn new(cost: usize, total: Arc<AtomicUsize>) -> Arc<Self> {
        total.fetch_add(cost, Ordering::Relaxed);
        Arc::new(Self {
            cell: OnceLock::new(),
            cost,
            total,
        })
    }

    /// The encoded event: `encode`d by the first caller, shared after.
    pub fn get_or_encode(&self, encode: impl FnOnce() -> Bytes) -> Bytes {
        self.cell.get_or_init(encode).clone()
    }
}

impl Drop for SharedFrame {
    fn drop(&mut self) {
        self.total.fetch_sub(self.cost, Ordering::Relaxed);
    }
}

/// What one watcher is charged for one event, from the moment it is queued
/// until the reader drops this: the server layer keeps it with the encoded
/// frame until the frame has left for the socket, so queued events, encoded
/// frames and the connection's write buffers all count toward the
/// watcher's `--watch-queue-bytes`.
pub struct Charge {
    bytes: usize,
    watcher: Arc<AtomicUsize>,
}

impl Charge {
    fn new(bytes: usize, watcher: &Arc<AtomicUsize>) -> Self {
        watcher.fetch_add(bytes, Ordering::Relaxed);
        Self {
            bytes,
            watcher: watcher.clone(),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.watcher.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// One item of a watch stream: the event, its shared encoded form and the
/// watcher's charge for it.
pub struct Delivery {
    pub event: Event,
    pub frame: Arc<SharedFrame>,
    pub charge: Charge,
}

/// What the store calls when it drops a watcher (too slow, or the watchers'
/// memory is full): the server layer closes the watcher's connection, so
/// what is queued for a client that stopped reading is freed at once.
pub trait CloseWatcher: Send + Sync {
    fn close(&self);
}

/// A watcher's [`CloseWatcher`].
pub type Closer = Arc<dyn CloseWatcher>;

/// For watchers with nothing to close (tests, or no connection).
impl CloseWatcher for () {
    fn close(&self) {}
}

struct Slot {
    keys: Box<[Key]>,
    tx: mpsc::UnboundedSender<Delivery>,
    /// Bytes charged to this watcher and not yet released.
    charged: Arc<AtomicUsize>,
    closer: Closer,
}

/// The limits of [`Watchers`].
#[derive(Clone, Copy, Debug)]
pub struct WatchLimits {
    /// Bytes one watcher may be charged (`--watch-queue-bytes`).
    pub per_watcher: usize,
    /// Bytes of events and frames all watchers together may pin
    /// (`--watch-memory`).
    pub total: usize,
    /// Watchers at once (`--max-watches`).
    pub watchers: usize,
}

/// Why a watcher could not be registered.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyWatches {
    pub max: usize,
}

/// The registry of live watchers, indexed by key so that a write reaches only
/// the watchers of its key.
///
/// It lives under the store's commit lock: events are published in commit
/// order, and a watcher registers atomically with its snapshot or replay, so
/// it sees every event after that point exactly once.
///
/// A watcher that falls `per_watcher` bytes behind is dropped, and so are the
/// furthest-behind watchers when all of them together pin more than `total`:
/// its stream ends and its connection is closed; the client resumes from the
/// last id it saw. So a slow client costs bounded memory and never slows
/// writers.
pub struct Watchers {
    limits: WatchLimits,
    next_id: u64,
    slots: HashMap<u64, Slot>,
    /// A set, not a list: a key may have ten thousand watchers, and each
    /// one leaving must not scan the others.
    by_key: HashMap<Key, HashSet<u64>>,
    /// Bytes of shared frames alive now, for `limits.total`.
    total: Arc<AtomicUsize>,
}

impl Watchers {
    pub fn new(limits: WatchLimits) -> Self {
        Self {
            limits,
            next_id: 0,
            slots: HashMap::new(),
            by_key: HashMap::new(),
            total: Arc::default(),
        }
    }

    /// Adds a watcher of `keys`, on whose connection `closer` is called if
    /// the store drops it; returns its id and receiver.
    pub fn register(
        &mut self,
        keys: Box<[Key]>,
        closer: Closer,
    ) -> Result<(u64, Receiver), TooManyWatches> {
        if self.slots.len() >= self.limits.watchers {
            return Err(TooManyWatches {
                max: self.limits.watchers,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let charged = Arc::new(AtomicUsize::new(0));
        self.next_id += 1;
        let id = self.next_id;
        for key in &keys {
            self.by_key.entry(key.clone()).or_default().insert(id);
        }
        let slot = Slot {
            keys,
            tx,
            charged: charged.clone(),
            closer,
        };
        self.slots.insert(id, slot);
        let receiver = Receiver {
            rx,
            charged,
            total: self.total.clone(),
        };
        Ok((id, receiver))
    }

    /// Bytes pinned by all watchers now.
    pub fn total_bytes(&self) -> usize {
        self.total.load(Ordering::Relaxed)
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

    /// Drops a watcher the store gives up on, closing its connection.
    fn drop_watcher(&mut self, id: u64) {
        if let Some(slot) = self.slots.get(&id) {
            slot.closer.close();
        }
        self.remove(id);
    }

    /// Hands the event to every watcher of its key; returns how many
    /// watchers were dropped for being too slow.
    pub fn publish(&mut self, event: &Event) -> u64 {
        let Some(ids) = self.by_key.get(event.key()) else {
            return 0;
        };
        let cost = event.cost();
        let frame = SharedFrame::new(cost, self.total.clone());
        let (mut lagging, mut gone) = (Vec::new(), Vec::new());
        for id in ids {
            let Some(slot) = self.slots.get(id) else {
                continue;
            };
            // One event always fits, however large, so a big value alone
            // never ends a stream.
            let charged = slot.charged.load(Ordering::Relaxed);
            if charged > 0 && charged + cost > self.limits.per_watcher {
                lagging.push(*id);
                continue;
            }
            let delivery = Delivery {
                event: event.clone(),
                frame: frame.clone(),
                charge: Charge::new(cost, &slot.charged),
            };
            if slot.tx.send(delivery).is_err() {
                // The stream is being dropped and will unregister itself.
                gone.push(*id);
            }
        }
        drop(frame);
        for id in &lagging {
            self.drop_watcher(*id);
        }
        for id in gone {
            self.remove(id);
        }
        lagging.len() as u64 + self.shed()
    }

    /// Past the total, drops the watchers furthest behind (most bytes
    /// charged) until those dropped held the excess.
    fn shed(&mut self) -> u64 {
        let total = self.total_bytes();
        if total <= self.limits.total {
            return 0;
        }
        let mut behind: Vec<(usize, u64)> = self
            .slots
            .iter()
            .map(|(id, slot)| (slot.charged.load(Ordering::Relaxed), *id))
            .filter(|(charged, _)| *charged > 0)
            .collect();
        behind.sort_unstable_by(|a, b| b.cmp(a));
        let mut freed = 0;
        let mut dropped = 0;
        for (charged, id) in behind {
            if total.saturating_sub(freed) <= self.limits.total {
                break;
            }
            self.drop_watcher(id);
            freed += charged;
            dropped += 1;
        }
        dropped
    }
}

/// The receiving end of a watcher's queue.
pub struct Receiver {
    rx: mpsc::UnboundedReceiver<Delivery>,
    charged: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

/// A watcher's stream of events: first the snapshot or the replayed history,
/// then live events. It ends when the store drops the watcher; dropping it
/// unregisters the watcher.
pub struct Watch {
    pub(super) first: std::vec::IntoIter<Event>,
    pub(super) live: Receiver,
    pub(super) id: u64,
    pub(super) store: Store,
}

impl Stream for Watch {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(event) = self.first.next() {
            let cost = event.cost();
            let delivery = Delivery {
                frame: SharedFrame::new(cost, self.live.total.clone()),
                charge: Charge::new(cost, &self.live.charged),
                event,
            };
            return Poll::Ready(Some(delivery));
        }
        self.live.rx.poll_recv(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.store.unwatch(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;

    /// Records whether it was called.
    #[derive(Default)]
    struct Flag(std::sync::atomic::AtomicBool);

    impl CloseWatcher for Flag {
        fn close(&self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    impl Flag {
        fn is_set(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn closer() -> (Closer, Arc<Flag>) {
        let flag = Arc::new(Flag::default());
        (flag.clone(), flag)
    }

    fn limits(per_watcher: usize, total: usize) -> WatchLimits {
        WatchLimits {
            per_watcher,
            total,
            watchers: 10,
        }
    }

    fn put(key: &str, value: &str) -> Event {
        let entry = crate::store::Entry::new(key, value.as_bytes(), 1, None);
        Event::live(1, EventKind::Put, entry)
    }

    #[test]
    fn a_watcher_that_falls_behind_is_dropped_and_closed() {
        let mut watchers = Watchers::new(limits(400, usize::MAX));
        let (closer, closed) = closer();
        let (_, mut rx) = watchers
            .register(vec![Key::from("k")].into(), closer)
            .expect("registers");
        let event = put("k", &"v".repeat(100));
        assert_eq!(watchers.publish(&event), 0);
        assert_eq!(watchers.publish(&event), 0);
        assert!(!closed.is_set());
        // Two events of ~200 bytes charged: the third does not fit.
        assert_eq!(watchers.publish(&event), 1);
        assert!(closed.is_set());
        let first = rx.rx.try_recv().expect("queued");
        drop(first);
        assert!(rx.charged.load(Ordering::Relaxed) > 0, "one still held");
    }

    #[test]
    fn past_the_total_the_furthest_behind_go_first() {
        let mut watchers = Watchers::new(limits(usize::MAX, 1000));
        let (behind, behind_closed) = closer();
        let (ahead, ahead_closed) = closer();
        let (_, mut slow) = watchers
            .register(vec![Key::from("a"), Key::from("b")].into(), behind)
            .expect("registers");
        let (_, mut fast) = watchers
            .register(vec![Key::from("b")].into(), ahead)
            .expect("registers");
        let big = put("a", &"x".repeat(700));
        watchers.publish(&big);
        let small = put("b", &"y".repeat(300));
        // 700 + 300 (+ overhead) pinned: over 1000, the slow one goes.
        assert_eq!(watchers.publish(&small), 1);
        assert!(behind_closed.is_set());
        assert!(!ahead_closed.is_set());
        drop(fast.rx.try_recv());
        drop(slow.rx.try_recv());
    }

    #[test]
    fn the_watch_cap_holds() {
        let mut watchers = Watchers::new(WatchLimits {
            per_watcher: 1,
            total: 1,
            watchers: 1,
        });
        let keys: Box<[Key]> = vec![Key::from("k")].into();
        let first = watchers.register(keys.clone(), closer().0);
        assert!(first.is_ok());
        let second = watchers.register(keys, closer().0);
        assert_eq!(second.err(), Some(TooManyWatches { max: 1 }));
    }
}
