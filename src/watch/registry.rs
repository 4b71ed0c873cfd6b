//! The registry of live watchers: who watches which key, publishing an
//! event to them, and dropping those that fall behind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::charge::{Charge, Delivery, SharedFrame};
use super::queue::{Queue, Receiver};
use crate::domain::{Event, Key, Watched};

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
    watched: Watched,
    queue: Arc<Queue>,
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
    /// How often a watcher that was sent nothing meanwhile is sent
    /// [`WatchItem::Idle`] (`--watch-heartbeat`).
    pub heartbeat: Duration,
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
    by_prefix: HashMap<Key, HashSet<u64>>,
    /// The lengths of the watched prefixes (with how many prefixes have
    /// each): an event looks up its key's prefixes of these lengths only,
    /// however many watchers there are.
    prefix_lengths: BTreeMap<usize, usize>,
    /// The watchers of the event being published (see `publish`).
    publishing: Vec<u64>,
    /// Bytes of shared frames alive now, for `limits.total`.
    total: Arc<AtomicUsize>,
    /// Watchers dropped for falling behind so far.
    dropped: u64,
}

impl Watchers {
    pub fn new(limits: WatchLimits) -> Self {
        Self {
            limits,
            next_id: 0,
            slots: HashMap::new(),
            by_key: HashMap::new(),
            by_prefix: HashMap::new(),
            prefix_lengths: BTreeMap::new(),
            publishing: Vec::new(),
            total: Arc::default(),
            dropped: 0,
        }
    }

    /// Adds a watcher (of a [`Watched::normalised`] set), on whose
    /// connection `closer` is called if the store drops it; returns its id
    /// and receiver.
    pub fn register(
        &mut self,
        watched: Watched,
        closer: Closer,
    ) -> Result<(u64, Receiver), TooManyWatches> {
        if self.slots.len() >= self.limits.watchers {
            return Err(TooManyWatches {
                max: self.limits.watchers,
            });
        }
        let queue = Queue::new();
        let charged = Arc::new(AtomicUsize::new(0));
        self.next_id += 1;
        let id = self.next_id;
        for key in &watched.keys {
            self.by_key.entry(key.clone()).or_default().insert(id);
        }
        for prefix in &watched.prefixes {
            let ids = self.by_prefix.entry(prefix.clone()).or_default();
            if ids.is_empty() {
                *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
            }
            ids.insert(id);
        }
        let slot = Slot {
            watched,
            queue: queue.clone(),
            charged: charged.clone(),
            closer,
        };
        self.slots.insert(id, slot);
        let receiver = Receiver {
            queue,
            charged,
            total: self.total.clone(),
        };
        Ok((id, receiver))
    }

    /// How often [`Self::heartbeat`] is to be called.
    pub fn heartbeat_period(&self) -> Duration {
        self.limits.heartbeat
    }

    /// Tells every watcher that was sent nothing since the last call that
    /// it is idle. One timer for all of them, called every
    /// [`Self::heartbeat_period`]: an idle watcher hears from the store
    /// between one and two periods after its last item.
    pub fn heartbeat(&self) {
        for slot in self.slots.values() {
            slot.queue.heartbeat();
        }
    }

    /// Bytes pinned by all watchers now.
    pub fn total_bytes(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn remove(&mut self, id: u64) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        slot.queue.mark_dropped();
        for key in &slot.watched.keys {
            if let Some(ids) = self.by_key.get_mut(key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        for prefix in &slot.watched.prefixes {
            if let Some(ids) = self.by_prefix.get_mut(prefix) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_prefix.remove(prefix);
                    if let Some(count) = self.prefix_lengths.get_mut(&prefix.len()) {
                        *count -= 1;
                        if *count == 0 {
                            self.prefix_lengths.remove(&prefix.len());
                        }
                    }
                }
            }
        }
    }

    /// The watchers of `key`: of the key itself and of its prefixes. A
    /// watcher is named once (its set is normalised, so no two of its
    /// entries match one key).
    fn watchers_of(&self, key: &str, ids: &mut Vec<u64>) {
        ids.clear();
        if let Some(watchers) = self.by_key.get(key) {
            ids.extend(watchers);
        }
        for &length in self.prefix_lengths.keys() {
            // `get` is `None` past the key's end or inside a character:
            // a prefix is whole characters, so it cannot match there.
            let Some(prefix) = key.get(..length) else {
                continue;
            };
            if let Some(watchers) = self.by_prefix.get(prefix) {
                ids.extend(watchers);
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

    /// Drops every watcher, closing their connections: their source of
    /// events broke (etcd's watch), so their streams end and the clients
    /// resume from their last ids.
    #[cfg(feature = "etcd")]
    pub fn drop_all(&mut self) {
        let ids: Vec<u64> = self.slots.keys().copied().collect();
        for id in ids {
            self.drop_watcher(id);
        }
    }

    /// Hands the event to every watcher of its key; returns how many
    /// watchers were dropped for being too slow.
    pub fn publish(&mut self, event: &Event) -> u64 {
        // Most writes have no watcher: ask before reading the event's key.
        if self.prefix_lengths.is_empty()
            && (self.by_key.is_empty() || !self.by_key.contains_key(event.key()))
        {
            return 0;
        }
        // A buffer kept between publishes: ten thousand watchers of a key
        // would otherwise cost an 80 KB allocation per event.
        let mut ids = std::mem::take(&mut self.publishing);
        self.watchers_of(event.key(), &mut ids);
        if ids.is_empty() {
            self.publishing = ids;
            return 0;
        }
        let cost = event.cost();
        let frame = SharedFrame::new(cost, self.total.clone());
        let (mut lagging, mut gone) = (Vec::new(), Vec::new());
        for id in &ids {
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
            if !slot.queue.push(delivery) {
                // The stream is being dropped and will unregister itself.
                gone.push(*id);
            }
        }
        drop(frame);
        self.publishing = ids;
        for id in &lagging {
            self.drop_watcher(*id);
        }
        for id in gone {
            self.remove(id);
        }
        let dropped = lagging.len() as u64 + self.shed();
        self.dropped += dropped;
        dropped
    }

    /// Watchers dropped for falling behind (or for the watchers' memory)
    /// so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::WatchItem;
    use crate::watch::queue::KEPT_SLOTS;
    use futures_util::FutureExt;
    use futures_util::StreamExt;

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
            heartbeat: Duration::from_secs(15),
        }
    }

    fn keys(keys: &[&str]) -> Watched {
        Watched {
            keys: keys.iter().map(|key| Key::from(*key)).collect(),
            prefixes: Vec::new(),
        }
    }

    fn put(key: &str, value: &str) -> Event {
        let entry =
            crate::domain::Entry::new(key, value.as_bytes(), crate::domain::Meta::created(1), None);
        Event::live(1, crate::domain::EventKind::Put, entry)
    }

    #[test]
    fn a_watcher_that_falls_behind_is_dropped_and_closed() {
        let mut watchers = Watchers::new(limits(400, usize::MAX));
        let (closer, closed) = closer();
        let (_, mut rx) = watchers.register(keys(&["k"]), closer).expect("registers");
        let event = put("k", &"v".repeat(100));
        assert_eq!(watchers.publish(&event), 0);
        assert_eq!(watchers.publish(&event), 0);
        assert!(!closed.is_set());
        // Two events of ~200 bytes charged: the third does not fit.
        assert_eq!(watchers.publish(&event), 1);
        assert!(closed.is_set());
        assert_eq!(rx.charged.load(Ordering::Relaxed), 0, "nothing held");
        assert!(matches!(
            rx.next().now_or_never(),
            Some(Some(WatchItem::Dropped))
        ));
    }

    #[test]
    fn past_the_total_the_furthest_behind_go_first() {
        let mut watchers = Watchers::new(limits(usize::MAX, 1000));
        let (behind, behind_closed) = closer();
        let (ahead, ahead_closed) = closer();
        let (_, mut slow) = watchers
            .register(keys(&["a", "b"]), behind)
            .expect("registers");
        let (_, mut fast) = watchers.register(keys(&["b"]), ahead).expect("registers");
        let big = put("a", &"x".repeat(700));
        watchers.publish(&big);
        let small = put("b", &"y".repeat(300));
        // 700 + 300 (+ overhead) pinned: over 1000, the slow one goes.
        assert_eq!(watchers.publish(&small), 1);
        assert!(behind_closed.is_set());
        assert!(!ahead_closed.is_set());
        drop(fast.next().now_or_never());
        drop(slow.next().now_or_never());
    }

    #[test]
    fn a_queue_gives_back_a_burst_and_its_charges() {
        let mut watchers = Watchers::new(limits(usize::MAX, usize::MAX));
        let (id, mut rx) = watchers
            .register(keys(&["k"]), closer().0)
            .expect("registers");
        let event = put("k", "v");
        for _ in 0..100 {
            watchers.publish(&event);
        }
        for _ in 0..100 {
            drop(rx.next().now_or_never().flatten().expect("queued"));
        }
        assert!(rx.next().now_or_never().is_none(), "drained: pending");
        assert!(rx.queue.state.lock().items.capacity() <= KEPT_SLOTS);

        // A reader that leaves releases what was queued for it at once.
        watchers.publish(&event);
        assert!(rx.charged.load(Ordering::Relaxed) > 0);
        let charged = rx.charged.clone();
        drop(rx);
        assert_eq!(charged.load(Ordering::Relaxed), 0);
        assert_eq!(watchers.publish(&event), 0, "a gone reader is not lagging");
        assert!(!watchers.slots.contains_key(&id), "and is unregistered");
    }

    #[test]
    fn a_dropped_watcher_holds_nothing_and_is_told_then_ends() {
        let mut watchers = Watchers::new(limits(usize::MAX, usize::MAX));
        let (id, mut rx) = watchers
            .register(keys(&["k"]), closer().0)
            .expect("registers");
        watchers.publish(&put("k", "v"));
        assert!(rx.charged.load(Ordering::Relaxed) > 0);
        watchers.drop_watcher(id);
        assert_eq!(
            rx.charged.load(Ordering::Relaxed),
            0,
            "what was queued is released before the reader reads again"
        );
        assert_eq!(watchers.total_bytes(), 0);
        assert!(matches!(
            rx.next().now_or_never(),
            Some(Some(WatchItem::Dropped))
        ));
        assert!(matches!(rx.next().now_or_never(), Some(None)), "ended");
    }

    #[test]
    fn a_heartbeat_reaches_watchers_sent_nothing_since_the_last_one() {
        let mut watchers = Watchers::new(limits(usize::MAX, usize::MAX));
        let (_, mut busy) = watchers
            .register(keys(&["a"]), closer().0)
            .expect("registers");
        let (_, mut idle) = watchers
            .register(keys(&["b"]), closer().0)
            .expect("registers");
        let next = |rx: &mut Receiver| rx.next().now_or_never().flatten();
        watchers.heartbeat();
        assert!(next(&mut idle).is_none(), "not in the period it opened in");
        watchers.publish(&put("a", "v"));
        watchers.heartbeat();
        assert!(matches!(next(&mut busy), Some(WatchItem::Event(_))));
        assert!(next(&mut busy).is_none(), "it had an event this period");
        assert!(matches!(next(&mut idle), Some(WatchItem::Idle)));

        // A watcher that has not read its heartbeat is not sent another.
        watchers.heartbeat();
        watchers.heartbeat();
        assert!(matches!(next(&mut busy), Some(WatchItem::Idle)));
        assert!(next(&mut busy).is_none(), "one while unread");
        assert!(matches!(next(&mut idle), Some(WatchItem::Idle)));
        assert!(next(&mut idle).is_none());
    }

    #[test]
    fn the_watch_cap_holds() {
        let mut watchers = Watchers::new(WatchLimits {
            per_watcher: 1,
            total: 1,
            watchers: 1,
            heartbeat: Duration::from_secs(15),
        });
        let first = watchers.register(keys(&["k"]), closer().0);
        assert!(first.is_ok());
        let second = watchers.register(keys(&["k"]), closer().0);
        assert_eq!(second.err(), Some(TooManyWatches { max: 1 }));
    }
}
