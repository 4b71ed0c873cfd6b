//! The memory engine: the keys in this process (and with a data dir, on
//! disk), their revisions, TTL expiry, and the events it hands the shared
//! watch machinery.
//!
//! It knows nothing of HTTP. The API layer turns requests into [`Op`]s and
//! reads [`Outcome`]s back; every write, whoever asks for it (a request, a
//! batch, the expiry sweeper), is planned (`plan.rs`) and goes through the
//! one commit path (`commit.rs`), so revisions, the history and watch
//! events cannot disagree. With a data dir, `flusher.rs` writes what the
//! commit path planned to `disk.rs`; `sweeper.rs` expires keys;
//! `snapshot.rs` streams a watch's snapshot from the index; `stats.rs`
//! counts.

mod backend;
mod backup;
mod commit;
mod disk;
mod expiry;
mod fence;
mod flusher;
mod index;
mod lease_table;
mod leases;
mod lock_map;
mod plan;
mod range;
mod restore;
mod snapshot;
mod stats;
mod sweeper;
mod txn;

#[cfg(test)]
mod model_tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use tokio::time::Instant;

use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

pub use backup::BackupEntries;
pub use disk::{FORMAT as DISK_FORMAT, Fsync, OpenError, Recovered};
pub use restore::write_data_dir;

use crate::domain::{
    Action, BatchError, Condition, Current, Entry, Event, EventKind, Fence, Key, Meta, Op, Outcome,
    Position, PrefixDeleted, Stats, StorageError, WatchError, Watched, start_clock,
};
use crate::watch::{Closer, History, WatchLimits, WatchStream, Watchers, run_heartbeat};
use commit::{Committer, Deferred, Group, MAX_DEFERRED_KEYS, Mode};
use disk::Disk;
use expiry::ExpiryQueue;
use flusher::{flusher, settled};
use index::Index;
use lease_table::Leases;
pub use lock_map::{KeyHash, LockMap, Locked};
use snapshot::{PrefixSnapshot, Unwatch};
use stats::Counters;

/// How a watch stream opens: with the events a resume missed, or with a
/// snapshot.
enum Opening {
    Resume(Vec<Event>),
    Snapshot(PrefixSnapshot),
}

/// Store-wide settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How many events the history keeps for watch resume.
    pub history: usize,
    /// How many bytes of keys and values the history may hold.
    pub history_bytes: usize,
    /// What watchers may hold, and how many there may be.
    pub watch: WatchLimits,
    /// Most leases at once (`--max-leases`).
    pub max_leases: usize,
}

struct Inner {
    map: LockMap,
    committer: Mutex<Committer>,
    /// Wakes the flusher thread when a group has formed or the store closes.
    flush_wanted: Condvar,
    flusher: Mutex<Option<JoinHandle<()>>>,
    counters: Counters,
    sweeper: Notify,
}

impl Inner {
    /// Passes on what commits noted for others: watchers dropped for being
    /// slow, expirations, and a deadline earlier than the sweeper expects.
    fn settle(&self, committer: &mut Committer) {
        let counters = &self.counters;
        let expired = std::mem::take(&mut committer.expired);
        counters.expired.fetch_add(expired, Ordering::Relaxed);
        if std::mem::take(&mut committer.wake_sweeper) {
            self.sweeper.notify_one();
        }
        if committer
            .mode
            .deferred()
            .is_some_and(|d| d.keys.len() >= MAX_DEFERRED_KEYS)
        {
            self.flush_wanted.notify_one();
        }
    }
}

/// The key-value store. Cloning it is cheap and gives another handle to the
/// same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// An in-memory store.
    pub fn new(config: StoreConfig) -> Self {
        Self::with_state(
            config,
            LockMap::new(),
            Index::default(),
            ExpiryQueue::default(),
            Leases::default(),
            0,
            None,
        )
    }

    fn with_state(
        config: StoreConfig,
        map: LockMap,
        index: Index,
        expiry: ExpiryQueue,
        leases: Leases,
        revision: u64,
        fsync: Option<Fsync>,
    ) -> Self {
        start_clock();
        let mut leases = leases;
        leases.max = config.max_leases;
        let committer = Committer {
            revision,
            next: revision,
            pending: HashMap::new(),
            group: Group::default(),
            mode: match fsync {
                None => Mode::InMemory,
                Some(Fsync::Always) => Mode::Grouped,
                Some(Fsync::Interval | Fsync::Never) => Mode::Deferred(Deferred::default()),
            },
            closing: false,
            lost: None,
            history: History::new(config.history, config.history_bytes),
            index,
            expiry,
            leases,
            watchers: Watchers::new(config.watch),
            wake_sweeper: false,
            expired: 0,
        };
        Self {
            inner: Arc::new(Inner {
                map,
                committer: Mutex::new(committer),
                flush_wanted: Condvar::new(),
                flusher: Mutex::new(None),
                counters: Counters::default(),
                sweeper: Notify::new(),
            }),
        }
    }

    /// A store kept in `dir` as well as in memory: loads what is there and
    /// starts the flusher thread. Call [`Store::close`] before exiting.
    pub fn open(
        config: StoreConfig,
        dir: &Path,
        fsync: Fsync,
    ) -> Result<(Self, Recovered), OpenError> {
        // Deadlines read back are counted from the clock's start.
        start_clock();
        let (disk, mut recovered) = Disk::open(dir)?;
        let map = LockMap::new();
        let mut expiry = ExpiryQueue::default();
        let entries = std::mem::take(&mut recovered.entries);
        {
            let hashes = map.hashes(entries.iter().map(Entry::key));
            let mut locked = map.lock(&hashes);
            for (entry, hash) in entries.iter().zip(hashes) {
                if let Some(deadline) = entry.deadline() {
                    expiry.insert(deadline, Key::from(entry.key()));
                }
                locked.insert(hash, entry.clone());
            }
        }
        // Every lease gets its full TTL from now: its holder kept it alive
        // until the server stopped, and cannot have while it was down.
        let now = Instant::now();
        let mut leases = Leases::default();
        for (id, record) in std::mem::take(&mut recovered.leases) {
            leases.durable.insert(id, record.clone());
            leases.grant(id, record, now);
        }
        for entry in &entries {
            if let Some(lease) = entry.lease() {
                leases.moved(&Key::from(entry.key()), None, Some(lease));
            }
        }
        let index = Index::from_sorted(entries);
        let store = Self::with_state(
            config,
            map,
            index,
            expiry,
            leases,
            recovered.revision,
            Some(fsync),
        );
        let inner = store.inner.clone();
        let handle = std::thread::Builder::new()
            .name("kv-flusher".into())
            .spawn(move || flusher(inner, disk, fsync.period()))
            .map_err(|err| OpenError::Failed {
                path: dir.to_owned(),
                error: err.into(),
            })?;
        *store.inner.flusher.lock() = Some(handle);
        Ok((store, recovered))
    }

    /// Writes what is planned, flushes and stops the flusher thread (durable
    /// mode; nothing to do in memory). Writes after this fail.
    pub fn close(&self) {
        self.inner.committer.lock().closing = true;
        self.inner.flush_wanted.notify_one();
        let handle = self.inner.flusher.lock().take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the flusher thread panicked");
        }
    }

    /// Why the store cannot take writes, if it cannot: it is closing, or
    /// its data dir's file was removed or replaced.
    pub fn refusing(&self) -> Option<StorageError> {
        self.inner.committer.lock().refusing().err()
    }

    /// Reads a key without taking the commit lock. Async, like every call
    /// a client waits on, because a store that answers over the network
    /// (etcd) waits for it; this one answers at once.
    pub async fn get(&self, key: &str) -> Option<Current> {
        self.get_now(key)
    }

    fn get_now(&self, key: &str) -> Option<Current> {
        let now = Instant::now();
        self.inner
            .map
            .read(key, |entry| {
                (!entry.is_expired(now)).then(|| Current::from(entry))
            })
            .flatten()
    }

    /// Runs one operation.
    pub async fn apply(&self, op: Op) -> Result<Outcome, StorageError> {
        let (mut outcomes, ticket) = self.run(std::slice::from_ref(&op), &[])?;
        settled(ticket).await?;
        Ok(outcomes.pop().unwrap_or(Outcome::NotFound))
    }

    /// Runs `ops` as one atomic, isolated commit, etcd's transaction: every
    /// condition is checked against the store before the batch, all the
    /// writes take one revision (their events share it, numbered by part),
    /// and no reader sees some without the others. The ops name distinct
    /// keys (the API checks). If any condition fails nothing is written,
    /// and the outcomes come back in the error.
    pub async fn batch(&self, ops: &[Op], fences: &[Fence]) -> Result<Vec<Outcome>, BatchError> {
        let (outcomes, ticket) = self.run(ops, fences).map_err(BatchError::Storage)?;
        settled(ticket).await.map_err(BatchError::Storage)?;
        BatchError::unless_rejected(outcomes.into_vec())
    }

    /// Starts watching keys and prefixes. Without `since`, the stream
    /// opens with a snapshot: one event per watched key (its state now),
    /// then one per key under each prefix (streamed from the index at the
    /// same revision, a chunk at a time, never built whole in memory), then
    /// a sync marker carrying the revision to resume from. With `since`, it
    /// replays every event on what is watched after that position. Live
    /// events follow either way, with no gap and no duplicate. If the store
    /// drops the watcher (too slow, or the watchers' memory is full) it
    /// calls `closer`.
    pub async fn watch(
        &self,
        watched: Watched,
        since: Option<Position>,
        closer: Closer,
    ) -> Result<WatchStream<Unwatch>, WatchError> {
        let watched = watched.normalised();
        let inner = &*self.inner;
        let mut committer = inner.committer.lock();
        let current = committer.revision;
        let opening = match since {
            Some(since) => Opening::Resume(
                committer
                    .history
                    .resume(since, current, &watched)
                    .or_gone()?,
            ),
            None => {
                let now = Instant::now();
                let keys: Vec<Event> = watched
                    .keys
                    .iter()
                    .map(|key| {
                        let live = inner
                            .map
                            .read(key, |entry| (!entry.is_expired(now)).then(|| entry.clone()))
                            .flatten();
                        match live {
                            Some(entry) => Event::live(current, EventKind::Snapshot, entry),
                            None => Event::gone(current, EventKind::Snapshot, key.clone()),
                        }
                    })
                    .collect();
                let prefixes = &watched.prefixes;
                Opening::Snapshot(PrefixSnapshot::new(self.clone(), current, keys, prefixes))
            }
        };
        let (id, live) = committer
            .watchers
            .register(watched, closer)
            .map_err(|too_many| WatchError::TooMany { max: too_many.max })?;
        drop(committer);
        let registration = Unwatch {
            store: self.clone(),
            id,
        };
        Ok(match opening {
            Opening::Resume(replay) => WatchStream::resumed(None, replay, None, live, registration),
            Opening::Snapshot(snapshot) => {
                WatchStream::snapshot(Box::pin(snapshot), live, registration)
            }
        })
    }

    /// The watchers' heartbeat, until the server drops it.
    pub async fn run_heartbeat(self) {
        let period = self.inner.committer.lock().watchers.heartbeat_period();
        run_heartbeat(period, || self.inner.committer.lock().watchers.heartbeat()).await;
    }

    fn unwatch(&self, id: u64) {
        self.inner.committer.lock().watchers.remove(id);
    }

    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let committer = inner.committer.lock();
        let revision = committer.revision;
        let stats = Stats {
            revision,
            oldest_revision: committer.history.oldest_revision(revision),
            keys: inner.map.count() as u64,
            watch_bytes: committer.watchers.total_bytes() as u64,
            leases: committer.leases.len() as u64,
            expired_leases: committer.leases.expired,
            lagging_watchers: committer.watchers.dropped(),
            ..Stats::default()
        };
        drop(committer);
        inner.counters.fill(stats)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::*;
    use crate::watch::*;

    fn store() -> Store {
        store_with_history(100)
    }

    fn store_with_history(history: usize) -> Store {
        Store::new(StoreConfig {
            history,
            history_bytes: 1 << 20,
            watch: WatchLimits {
                per_watcher: 1 << 20,
                total: 1 << 30,
                watchers: 100,
                heartbeat: std::time::Duration::from_secs(15),
            },
            max_leases: 10,
        })
    }

    /// The answer of an in-memory store, which never waits.
    fn now<T>(answer: impl Future<Output = T>) -> T {
        futures_util::FutureExt::now_or_never(answer).expect("an in-memory store answers at once")
    }

    fn put(key: &str, value: &str, ttl: Option<Duration>) -> Op {
        Op {
            key: key.into(),
            action: Action::Put {
                value: value.into(),
                lifetime: Lifetime::from_ttl(ttl),
            },
            condition: Condition::Always,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_key_is_never_served_before_the_sweep() {
        let store = store();
        now(store.apply(put("k", "v", Some(Duration::from_millis(1))))).expect("applies");
        // The TTL runs out on the paused clock; no sweeper runs in this test.
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(now(store.get("k")), None);
        assert_eq!(store.stats().revision, 1, "nothing expired the key yet");
        // A write to the key first commits the pending expiry.
        assert_eq!(
            now(store.apply(put("k", "w", None))).expect("applies"),
            Outcome::Created { revision: 3 }
        );
    }

    #[test]
    fn a_chunked_snapshot_shows_its_revision_while_writes_go_on() {
        use futures_util::StreamExt;
        let store = store_with_history(100_000);
        let key = |n: usize| format!("p/{n:05}");
        let ops: Vec<Op> = (0..3000).map(|n| put(&key(n), "initial", None)).collect();
        now(store.batch(&ops, &[])).expect("applies");
        let watched = Watched {
            keys: Vec::new(),
            prefixes: vec![Key::from("p/")],
        };
        let mut watch = now(store.watch(watched, None, Arc::new(()))).expect("watches");
        let mut seen = Vec::new();
        let mut next = |seen: &mut Vec<(String, String)>| match now(watch.next()) {
            Some(WatchItem::Event(delivery)) => {
                let event = delivery.event;
                seen.push((
                    event.key().to_owned(),
                    event.value().unwrap_or("").to_owned(),
                ));
                true
            }
            Some(WatchItem::Synced(revision)) => {
                assert_eq!(revision, 1, "the batch's one revision");
                false
            }
            Some(WatchItem::Idle | WatchItem::Dropped) => panic!("no heartbeat or drop here"),
            None => panic!("the stream ended"),
        };
        for _ in 0..1000 {
            assert!(next(&mut seen));
        }
        // Between chunks: change keys already sent, keys still to come,
        // and create and delete some, many times over.
        for round in 0..5 {
            for n in (0..3000).step_by(7) {
                now(store.apply(put(&key(n), &format!("w{round}"), None))).expect("applies");
            }
            for n in (3000..3100).step_by(3) {
                now(store.apply(put(&key(n), "new", None))).expect("applies");
            }
            for n in (1..3000).step_by(11) {
                let delete = Op {
                    key: key(n).into(),
                    action: Action::Delete,
                    condition: Condition::Always,
                };
                now(store.apply(delete)).expect("applies");
            }
            for _ in 0..300 {
                assert!(next(&mut seen));
            }
        }
        while next(&mut seen) {}
        let expected: Vec<(String, String)> =
            (0..3000).map(|n| (key(n), "initial".to_owned())).collect();
        assert_eq!(seen, expected, "the store at the watch's revision");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_past_its_deadline_is_gone_before_the_sweep() {
        let store = store();
        let id = LeaseId::new(7).expect("an id");
        now(store.grant(Some(id), 1, None)).expect("granted");
        tokio::time::advance(Duration::from_millis(1500)).await;
        // No sweeper runs in this test: the lease is only past its deadline.
        assert!(matches!(
            now(store.keep_alive(id)),
            Err(LeaseError::NotFound(_))
        ));
        assert!(matches!(
            now(store.lease(id, false)),
            Err(LeaseError::NotFound(_))
        ));
        let put = Op {
            key: "k".into(),
            action: Action::Put {
                value: "v".into(),
                lifetime: Lifetime::Lease(id),
            },
            condition: Condition::Always,
        };
        assert!(matches!(
            now(store.apply(put)),
            Err(StorageError::LeaseNotFound(_))
        ));
    }

    #[test]
    fn a_closed_store_refuses_writes_as_shutting_down() {
        let store = store();
        store.close();
        let refused = now(store.apply(put("k", "v", None)));
        assert!(matches!(refused, Err(StorageError::ShuttingDown)));
    }

    #[test]
    fn a_failed_batch_writes_nothing() {
        let store = store();
        let cas = Op {
            key: "k".into(),
            action: Action::Put {
                value: "new".into(),
                lifetime: Lifetime::Forever,
            },
            condition: Condition::Value(Some("old".into())),
        };
        let result = now(store.batch(&[put("a", "1", None), cas], &[]));
        assert!(matches!(result, Err(BatchError::Rejected(_))));
        assert_eq!(now(store.get("a")), None);
        assert_eq!(store.stats().revision, 0);
    }

    #[test]
    fn a_batch_writes_at_one_revision() {
        let store = store();
        now(store.apply(put("b", "0", None))).expect("applies");
        let delete = Op {
            key: "b".into(),
            action: Action::Delete,
            condition: Condition::Always,
        };
        let get = Op {
            key: "c".into(),
            action: Action::Get,
            condition: Condition::Always,
        };
        let outcomes = now(store.batch(&[put("a", "1", None), get, delete], &[])).expect("applies");
        assert_eq!(
            outcomes,
            [
                Outcome::Created { revision: 2 },
                Outcome::NotFound,
                Outcome::Deleted { revision: 2 }
            ]
        );
        assert_eq!(store.stats().revision, 2);
        assert_eq!(
            now(store.apply(put("a", "2", None))).expect("applies"),
            Outcome::Replaced { revision: 3 }
        );
    }
}
