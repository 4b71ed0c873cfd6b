//! Watch fan-out: who watches which key, the stream each watcher reads,
//! and what every watcher is charged for the memory it pins.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use futures_util::{Stream, StreamExt};
use parking_lot::Mutex;

use super::range::Past;
use super::{Entry, Event, EventKind, Key, RangeError, RangeRequest, ReadPoint, Store};

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

/// What one watcher watches: keys, and prefixes (every key starting with
/// one, including keys created later).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watched {
    pub keys: Vec<Key>,
    pub prefixes: Vec<Key>,
}

impl Watched {
    /// The same set without repeats: a prefix inside another prefix and a
    /// key under a watched prefix are dropped, so that no event (and no
    /// snapshot) reaches the watcher twice.
    pub fn normalised(mut self) -> Self {
        self.prefixes.sort_unstable();
        self.prefixes.dedup();
        let mut prefixes: Vec<Key> = Vec::with_capacity(self.prefixes.len());
        for prefix in self.prefixes {
            // Sorted: a prefix comes right after the shortest one covering it.
            if !prefixes
                .last()
                .is_some_and(|kept| prefix.starts_with(&**kept))
            {
                prefixes.push(prefix);
            }
        }
        let covered = |key: &str| prefixes.iter().any(|prefix| key.starts_with(&**prefix));
        let mut seen = HashSet::with_capacity(self.keys.len());
        let keys = self
            .keys
            .into_iter()
            .filter(|key| !covered(key) && seen.insert(key.clone()))
            .collect();
        Self { keys, prefixes }
    }
}

/// A watcher's queue: what `publish` has handed it and its reader has not
/// taken yet.
///
/// Why not tokio's unbounded channel: it allocates its first block of 32
/// slots (2.4 KB here) with the channel and keeps it while the channel
/// lives, which was most of an idle watcher's memory. This queue holds
/// nothing while empty and gives back what a burst grew.
///
/// It also carries the heartbeat: one timer for every watcher
/// ([`Watchers::heartbeat`]) rather than one per stream, which a stream
/// reset on every event it sent.
struct Queue {
    state: Mutex<QueueState>,
    reader: AtomicWaker,
}

/// Whether the store still serves a watcher.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Ending {
    #[default]
    Open,
    /// Dropped by the store: its queue is emptied, the reader is told
    /// ([`WatchItem::Dropped`]), then its stream ends.
    Dropped,
    Told,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<WatchItem>,
    /// Something was queued since the last heartbeat.
    busy: bool,
    /// Whether the store dropped the watcher.
    ending: Ending,
    /// The reader is gone: nothing more is queued.
    closed: bool,
}

/// Slots a drained queue may keep: a watcher's usual backlog of a few
/// events, not what a burst grew it to.
const KEPT_SLOTS: usize = 4;

impl Queue {
    /// Queues `delivery`; `false` if the reader is gone.
    fn push(&self, delivery: Delivery) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        state.items.push_back(WatchItem::Event(delivery));
        state.busy = true;
        drop(state);
        self.reader.wake();
        true
    }

    /// Queues [`WatchItem::Idle`] if nothing was queued since the last
    /// heartbeat and nothing waits: a reader that stopped reading holds at
    /// most one.
    fn heartbeat(&self) {
        let mut state = self.state.lock();
        let idle =
            !state.busy && state.items.is_empty() && state.ending == Ending::Open && !state.closed;
        state.busy = false;
        if idle {
            state.items.push_back(WatchItem::Idle);
            drop(state);
            self.reader.wake();
        }
    }

    /// The store gives up on the watcher: what is queued is dropped at
    /// once (and its charges released), whether or not the reader ever
    /// reads again; the reader is told next. Nothing is lost by it: the
    /// client resumes after the last event it received.
    fn mark_dropped(&self) {
        let items = {
            let mut state = self.state.lock();
            state.ending = Ending::Dropped;
            std::mem::take(&mut state.items)
        };
        drop(items);
        self.reader.wake();
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<WatchItem>> {
        // Registered before looking, so a push after the look wakes us.
        self.reader.register(cx.waker());
        let mut state = self.state.lock();
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() && state.items.capacity() > KEPT_SLOTS {
                    state.items = VecDeque::new();
                }
                Poll::Ready(Some(item))
            }
            None => match state.ending {
                Ending::Open => Poll::Pending,
                Ending::Dropped => {
                    state.ending = Ending::Told;
                    Poll::Ready(Some(WatchItem::Dropped))
                }
                Ending::Told => Poll::Ready(None),
            },
        }
    }

    /// The reader leaves: what is queued is dropped (and its charges
    /// released) now, not when the store gets round to the slot.
    fn close(&self) {
        let items = {
            let mut state = self.state.lock();
            state.closed = true;
            std::mem::take(&mut state.items)
        };
        drop(items);
    }
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
        // Busy: its first heartbeat comes a whole period after it opens.
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                busy: true,
                ..QueueState::default()
            }),
            reader: AtomicWaker::new(),
        });
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
        if self.prefix_lengths.is_empty() && !self.by_key.contains_key(event.key()) {
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

/// Calls `beat` once every `period`, for as long as it runs: the one timer
/// behind every watcher's heartbeat ([`Watchers::heartbeat`]).
pub async fn run_heartbeat(period: Duration, beat: impl Fn()) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        beat();
    }
}

/// The receiving end of a watcher's queue.
pub struct Receiver {
    queue: Arc<Queue>,
    charged: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Receiver {
    /// Wraps an event read outside the queue (a snapshot, a replay) as an
    /// item charged to this watcher like a queued one.
    pub fn deliver(&self, event: Event) -> WatchItem {
        let cost = event.cost();
        WatchItem::Event(Delivery {
            frame: SharedFrame::new(cost, self.total.clone()),
            charge: Charge::new(cost, &self.charged),
            event,
        })
    }
}

impl Stream for Receiver {
    type Item = WatchItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchItem>> {
        self.queue.poll_pop(cx)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// What a watch stream yields.
pub enum WatchItem {
    Event(Delivery),
    /// The snapshot is complete: everything the store held at this
    /// revision has been sent. Resume from here.
    Synced(u64),
    /// Nothing was sent for a heartbeat period: the reader may tell its
    /// client the stream is alive.
    Idle,
    /// The store dropped the watcher (too slow, or its source of events
    /// broke): the last item of its stream. Not a normal end: the client
    /// is to resume from the last id it got, so the reader cuts the stream
    /// rather than end it.
    Dropped,
}

/// How many records one chunk of a prefix snapshot reads from the index,
/// and how many bytes at most: what a snapshot holds in memory besides the
/// frames charged to the watcher.
const SNAPSHOT_CHUNK: usize = 512;
const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;

/// The part of a snapshot still to send: the keys under the watched
/// prefixes, read a chunk at a time at the watch's starting point, so a
/// prefix of any size costs one chunk of memory and the client's reading
/// speed sets the pace.
pub(super) struct Snapshot {
    at: ReadPoint,
    prefixes: VecDeque<Key>,
    /// The last key sent under the first prefix.
    after: Option<Key>,
    chunk: std::vec::IntoIter<Entry>,
    /// What the first prefix's keys held at `at`, for those changed since,
    /// as far as the history has been read.
    past: Past,
}

impl Snapshot {
    pub(super) fn new(revision: u64, prefixes: &[Key]) -> Self {
        Self {
            at: ReadPoint::now(revision),
            prefixes: prefixes.iter().cloned().collect(),
            after: None,
            chunk: Vec::new().into_iter(),
            past: Past::at(revision),
        }
    }

    /// The next record to send; `Err` when the history no longer reaches
    /// back to the starting point (the snapshot cannot be completed).
    fn next(&mut self, store: &Store) -> Result<Option<Entry>, RangeError> {
        loop {
            if let Some(entry) = self.chunk.next() {
                return Ok(Some(entry));
            }
            let Some(prefix) = self.prefixes.front() else {
                return Ok(None);
            };
            let page = store.range_on(
                &RangeRequest {
                    prefix,
                    after: self.after.as_deref(),
                    at: Some(self.at),
                    limit: SNAPSHOT_CHUNK,
                    max_bytes: SNAPSHOT_CHUNK_BYTES,
                    keys_only: false,
                    count: false,
                },
                &mut self.past,
            )?;
            self.after = page
                .more
                .then(|| page.entries.last().map(|last| Key::from(last.key())))
                .flatten();
            match &self.after {
                Some(after) => self.past.forget_through(after),
                None => {
                    self.prefixes.pop_front();
                    self.past = Past::at(self.at.revision);
                }
            }
            self.chunk = page.entries.into_iter();
        }
    }
}

/// A watcher's stream: first the snapshot (with its sync marker) or the
/// replayed history, then live events. It ends when the store drops the
/// watcher, or when a snapshot can no longer be completed; dropping it
/// unregisters the watcher.
pub struct Watch {
    pub(super) first: std::vec::IntoIter<Event>,
    /// `None` once sent (or for a resumed watch, which has none).
    pub(super) snapshot: Option<Snapshot>,
    pub(super) live: Receiver,
    pub(super) id: u64,
    pub(super) store: Store,
}

impl Stream for Watch {
    type Item = WatchItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(event) = self.first.next() {
            return Poll::Ready(Some(self.live.deliver(event)));
        }
        let this = &mut *self;
        if let Some(snapshot) = &mut this.snapshot {
            return Poll::Ready(match snapshot.next(&this.store) {
                Ok(Some(entry)) => {
                    let event = Event::live(snapshot.at.revision, EventKind::Snapshot, entry);
                    Some(this.live.deliver(event))
                }
                Ok(None) => {
                    let revision = snapshot.at.revision;
                    this.snapshot = None;
                    Some(WatchItem::Synced(revision))
                }
                Err(_) => None,
            });
        }
        self.live.poll_next_unpin(cx)
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
    use futures_util::FutureExt;

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
        let entry = crate::store::Entry::new(key, value.as_bytes(), 1, None);
        Event::live(1, EventKind::Put, entry)
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
