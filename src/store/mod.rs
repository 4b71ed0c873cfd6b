//! The storage layer: keys, revisions, TTL expiry, history and watch fan-out.
//!
//! It knows nothing of HTTP. The API layer turns requests into [`Op`]s and
//! reads [`Outcome`]s back; every write, whoever asks for it (a request, a
//! batch, the expiry sweeper), goes through [`Committer::commit`], so
//! revisions, the history and watch events cannot disagree.

mod event;
mod expiry;
mod history;
mod lock_map;
mod value;
mod watch;

#[cfg(test)]
mod model_tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

pub use event::{Event, EventKind};
pub use lock_map::{Entry, Key, LockMap, Locked};
pub use value::Value;
pub use watch::Watch;

use expiry::ExpiryQueue;
use history::History;
use watch::Watchers;

/// A key's value and revision, as reads and failed conditions report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    pub value: Value,
    /// The key's `mod_revision`.
    pub revision: u64,
}

impl From<&Entry> for Current {
    fn from(entry: &Entry) -> Self {
        Self {
            value: entry.value.clone(),
            revision: entry.mod_revision,
        }
    }
}

/// A set of revisions a condition compares a key's `mod_revision` with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revisions {
    /// Any revision: the key exists.
    Any,
    OneOf(Vec<u64>),
}

impl Revisions {
    pub fn contains(&self, revision: u64) -> bool {
        match self {
            Self::Any => true,
            Self::OneOf(revisions) => revisions.contains(&revision),
        }
    }
}

/// What must hold for an operation to apply.
#[derive(Clone, Debug, Default)]
pub enum Condition {
    #[default]
    Always,
    /// The key's revision is in `must` (if given) and not in `must_not`
    /// (if given); an absent key is in no set.
    Revision {
        must: Option<Revisions>,
        must_not: Option<Revisions>,
    },
    /// Compare-and-swap: the key holds this value, or is absent for `None`.
    Value(Option<Value>),
}

impl Condition {
    /// Whether the condition holds for a key in state `current`.
    pub fn holds(&self, current: Option<&Current>) -> bool {
        let revision = current.map(|c| c.revision);
        match self {
            Self::Always => true,
            Self::Revision { must, must_not } => {
                let in_set = |set: &Revisions| revision.is_some_and(|r| set.contains(r));
                must.as_ref().is_none_or(in_set) && !must_not.as_ref().is_some_and(in_set)
            }
            Self::Value(expected) => match (expected, current) {
                (None, None) => true,
                (Some(expected), Some(current)) => *expected == current.value,
                _ => false,
            },
        }
    }

    fn is_cas(&self) -> bool {
        matches!(self, Self::Value(_))
    }
}

/// What an operation does.
#[derive(Clone, Debug)]
pub enum Action {
    Get,
    /// Sets the value; `ttl` of `None` clears any TTL.
    Put {
        value: Value,
        ttl: Option<Duration>,
    },
    Delete,
}

/// One operation on one key: a request, or one element of a batch.
#[derive(Clone, Debug)]
pub struct Op {
    pub key: Key,
    pub action: Action,
    pub condition: Condition,
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Found(Current),
    NotFound,
    Created {
        revision: u64,
    },
    Replaced {
        revision: u64,
    },
    Deleted {
        revision: u64,
    },
    /// The condition did not hold; nothing was written.
    Rejected {
        current: Option<Current>,
    },
}

impl Outcome {
    fn is_write(&self) -> bool {
        matches!(
            self,
            Self::Created { .. } | Self::Replaced { .. } | Self::Deleted { .. }
        )
    }
}

/// Why a watch could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchError {
    /// The history no longer reaches back to the requested revision.
    Compacted { oldest: u64 },
    /// The requested revision is newer than the store: it comes from another
    /// run of the server, whose history is gone.
    Unknown { current: u64, oldest: u64 },
}

/// Counters for `/status`, kept with relaxed atomics: they are statistics,
/// not synchronisation.
#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    cas: AtomicU64,
    cas_succeeded: AtomicU64,
    cas_failed: AtomicU64,
    batches: AtomicU64,
    expired: AtomicU64,
    open_watches: AtomicU64,
    lagging_watchers: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A point-in-time copy of the store's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    pub revision: u64,
    pub oldest_revision: u64,
    pub keys: u64,
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub cas: u64,
    pub cas_succeeded: u64,
    pub cas_failed: u64,
    pub batches: u64,
    pub expired: u64,
    pub open_watches: u64,
    pub lagging_watchers: u64,
}

/// The change a commit makes to one key.
enum Change {
    Put { value: Value, ttl: Option<Duration> },
    Delete,
    Expire,
}

/// Everything writes must change together, behind the one commit lock: the
/// revision counter, the history, the expiry queue and the watcher registry.
///
/// One lock for all writes is what makes commit order, revision order and
/// event order the same, even for writers on different keys. It is a
/// blocking `parking_lot` mutex (fair, no poisoning) because a commit never
/// awaits: it is a few map operations and non-blocking channel sends.
struct Committer {
    revision: u64,
    history: History,
    expiry: ExpiryQueue,
    watchers: Watchers,
    /// Set when a commit adds a deadline earlier than any before it.
    wake_sweeper: bool,
    lagging_watchers: u64,
}

impl Committer {
    /// The one place a write happens.
    fn commit(&mut self, locked: &mut Locked<'_>, key: &Key, change: Change, now: Instant) -> u64 {
        self.revision += 1;
        let revision = self.revision;
        let (kind, value, previous) = match change {
            Change::Put { value, ttl } => {
                let previous = locked.get(key);
                let entry = Entry {
                    value: value.clone(),
                    create_revision: previous.map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                    version: previous.map_or(1, |p| p.version + 1),
                    // A deadline past what `Instant` can hold is no deadline.
                    deadline: ttl.and_then(|ttl| now.checked_add(ttl)),
                };
                if let Some(deadline) = entry.deadline {
                    self.wake_sweeper |= self.expiry.insert(deadline, key.clone());
                }
                (
                    EventKind::Put,
                    Some(value),
                    locked.insert(key.clone(), entry),
                )
            }
            Change::Delete => (EventKind::Delete, None, locked.remove(key)),
            Change::Expire => (EventKind::Expire, None, locked.remove(key)),
        };
        if let Some(deadline) = previous.and_then(|p| p.deadline) {
            self.expiry.remove(deadline, key);
        }
        let event = Arc::new(Event {
            id: revision,
            kind,
            key: key.clone(),
            value,
            revision: Some(revision),
        });
        self.lagging_watchers += self.watchers.publish(&event);
        self.history.push(event);
        revision
    }
}

/// Store-wide settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How many events the history keeps for watch resume.
    pub history: usize,
    /// How many bytes of keys and values the history may hold.
    pub history_bytes: usize,
    /// How many bytes of events a watcher may fall behind before its stream
    /// is ended.
    pub watch_queue_bytes: usize,
}

struct Inner {
    map: LockMap,
    committer: Mutex<Committer>,
    counters: Counters,
    sweeper: Notify,
}

/// The key-value store. Cloning it is cheap and gives another handle to the
/// same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// How many keys the sweeper expires per hold of the commit lock, so that a
/// mass expiry does not stall writers.
const SWEEP_CHUNK: usize = 1024;

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        let committer = Committer {
            revision: 0,
            history: History::new(config.history, config.history_bytes),
            expiry: ExpiryQueue::default(),
            watchers: Watchers::new(config.watch_queue_bytes),
            wake_sweeper: false,
            lagging_watchers: 0,
        };
        Self {
            inner: Arc::new(Inner {
                map: LockMap::new(),
                committer: Mutex::new(committer),
                counters: Counters::default(),
                sweeper: Notify::new(),
            }),
        }
    }

    /// Reads a key without taking the commit lock.
    pub fn get(&self, key: &str) -> Option<Current> {
        bump(&self.inner.counters.gets);
        let now = Instant::now();
        self.inner
            .map
            .read(key, |entry| {
                (!entry.is_expired(now)).then(|| Current::from(entry))
            })
            .flatten()
    }

    /// Runs one operation.
    pub fn apply(&self, op: Op) -> Outcome {
        let mut outcomes = self.run(std::slice::from_ref(&op));
        outcomes.pop().unwrap_or(Outcome::NotFound)
    }

    /// Runs `ops` in order as one atomic, isolated commit: their writes take
    /// consecutive revisions and no reader sees some without the others. If
    /// any condition fails nothing is written, and the outcomes come back as
    /// the error.
    pub fn batch(&self, ops: &[Op]) -> Result<Vec<Outcome>, Vec<Outcome>> {
        bump(&self.inner.counters.batches);
        let outcomes = self.run(ops);
        if outcomes
            .iter()
            .any(|outcome| matches!(outcome, Outcome::Rejected { .. }))
        {
            Err(outcomes)
        } else {
            Ok(outcomes)
        }
    }

    fn count(&self, op: &Op, outcome: &Outcome) {
        let counters = &self.inner.counters;
        match (&op.action, op.condition.is_cas()) {
            (Action::Get, _) => bump(&counters.gets),
            (Action::Put { .. }, true) => {
                bump(&counters.cas);
                match outcome {
                    Outcome::Rejected { .. } => bump(&counters.cas_failed),
                    _ => bump(&counters.cas_succeeded),
                }
            }
            (Action::Put { .. }, false) => bump(&counters.puts),
            (Action::Delete, _) => bump(&counters.deletes),
        }
    }

    fn run(&self, ops: &[Op]) -> Vec<Outcome> {
        let inner = &*self.inner;
        let mut committer = inner.committer.lock();
        let mut locked = inner.map.lock(ops.iter().map(|op| &*op.key));
        let now = Instant::now();

        // Expired keys the sweeper has not reached yet are expired here first,
        // as commits of their own, so watchers see the expiry before whatever
        // this batch does to the key.
        for op in ops {
            if locked
                .get(&op.key)
                .is_some_and(|entry| entry.is_expired(now))
            {
                committer.commit(&mut locked, &op.key, Change::Expire, now);
                bump(&inner.counters.expired);
            }
        }

        // Plan: evaluate every op against the state the ops before it leave,
        // without writing, so a failed condition leaves no trace.
        let mut staged: HashMap<&str, Option<Current>> = HashMap::new();
        let mut next_revision = committer.revision;
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut rejected = false;
        for op in ops {
            let current = match staged.get(&*op.key) {
                Some(staged) => staged.clone(),
                None => locked.get(&op.key).map(Current::from),
            };
            let outcome = if !op.condition.holds(current.as_ref()) {
                rejected = true;
                Outcome::Rejected { current }
            } else {
                match &op.action {
                    Action::Get => current.map_or(Outcome::NotFound, Outcome::Found),
                    Action::Put { value, .. } => {
                        next_revision += 1;
                        if ops.len() > 1 {
                            let after = Current {
                                value: value.clone(),
                                revision: next_revision,
                            };
                            staged.insert(&op.key, Some(after));
                        }
                        match current {
                            Some(_) => Outcome::Replaced {
                                revision: next_revision,
                            },
                            None => Outcome::Created {
                                revision: next_revision,
                            },
                        }
                    }
                    Action::Delete => match current {
                        None => Outcome::NotFound,
                        Some(_) => {
                            next_revision += 1;
                            if ops.len() > 1 {
                                staged.insert(&op.key, None);
                            }
                            Outcome::Deleted {
                                revision: next_revision,
                            }
                        }
                    },
                }
            };
            self.count(op, &outcome);
            outcomes.push(outcome);
        }

        if !rejected {
            for (op, outcome) in ops.iter().zip(&outcomes) {
                if !outcome.is_write() {
                    continue;
                }
                let change = match &op.action {
                    Action::Put { value, ttl } => Change::Put {
                        value: value.clone(),
                        ttl: *ttl,
                    },
                    _ => Change::Delete,
                };
                committer.commit(&mut locked, &op.key, change, now);
            }
        }

        self.settle(&mut committer);
        outcomes
    }

    /// Passes on what commits noted for others: watchers dropped for being
    /// slow, and a deadline earlier than the sweeper expects.
    fn settle(&self, committer: &mut Committer) {
        let lagging = std::mem::take(&mut committer.lagging_watchers);
        self.inner
            .counters
            .lagging_watchers
            .fetch_add(lagging, Ordering::Relaxed);
        if std::mem::take(&mut committer.wake_sweeper) {
            self.inner.sweeper.notify_one();
        }
    }

    /// Starts watching `keys`. Without `since`, the stream opens with one
    /// snapshot per key; with it, it replays every event on those keys after
    /// revision `since`. Live events follow either way, with no gap and no
    /// duplicate.
    pub fn watch(&self, keys: Vec<Key>, since: Option<u64>) -> Result<Watch, WatchError> {
        let inner = &*self.inner;
        let mut committer = inner.committer.lock();
        let current = committer.revision;
        let first: Vec<Arc<Event>> = match since {
            Some(since) => {
                let oldest = committer.history.oldest_revision(current);
                if since > current {
                    return Err(WatchError::Unknown { current, oldest });
                }
                if since + 1 < oldest {
                    return Err(WatchError::Compacted { oldest });
                }
                let watched: HashSet<&str> = keys.iter().map(|key| &**key).collect();
                committer
                    .history
                    .after(since, current)
                    .filter(|event| watched.contains(&*event.key))
                    .cloned()
                    .collect()
            }
            None => {
                let now = Instant::now();
                keys.iter()
                    .map(|key| {
                        let live = inner
                            .map
                            .read(key, |entry| {
                                (!entry.is_expired(now)).then(|| Current::from(entry))
                            })
                            .flatten();
                        Arc::new(Event {
                            id: current,
                            kind: EventKind::Snapshot,
                            key: key.clone(),
                            revision: live.as_ref().map(|c| c.revision),
                            value: live.map(|c| c.value),
                        })
                    })
                    .collect()
            }
        };
        let (id, live) = committer.watchers.register(keys.into_boxed_slice());
        drop(committer);
        bump(&inner.counters.open_watches);
        Ok(Watch {
            first: first.into_iter(),
            live,
            id,
            store: self.clone(),
        })
    }

    fn unwatch(&self, id: u64) {
        self.inner.committer.lock().watchers.remove(id);
        self.inner
            .counters
            .open_watches
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// Expires every key whose deadline has passed; returns the next deadline.
    fn sweep(&self) -> Option<Instant> {
        let inner = &*self.inner;
        loop {
            let mut committer = inner.committer.lock();
            let now = Instant::now();
            let due = committer.expiry.due(now, SWEEP_CHUNK);
            if due.is_empty() {
                // The sweeper is about to look at the next deadline anyway.
                committer.wake_sweeper = false;
                return committer.expiry.next();
            }
            let mut locked = inner.map.lock(due.iter().map(|key| &**key));
            for key in &due {
                committer.commit(&mut locked, key, Change::Expire, now);
                bump(&inner.counters.expired);
            }
            drop(locked);
            self.settle(&mut committer);
        }
    }

    /// The expiry sweeper: sleeps until the earliest deadline (or until a
    /// write sets an earlier one) and expires what is due. Runs forever; the
    /// server drops it on shutdown.
    pub async fn run_expiry(self) {
        loop {
            let next = self.sweep();
            let notified = self.inner.sweeper.notified();
            match next {
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline.into()) => {}
                        () = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let (revision, oldest_revision) = {
            let committer = inner.committer.lock();
            let revision = committer.revision;
            (revision, committer.history.oldest_revision(revision))
        };
        let c = &inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            revision,
            oldest_revision,
            keys: inner.map.count() as u64,
            gets: load(&c.gets),
            puts: load(&c.puts),
            deletes: load(&c.deletes),
            cas: load(&c.cas),
            cas_succeeded: load(&c.cas_succeeded),
            cas_failed: load(&c.cas_failed),
            batches: load(&c.batches),
            expired: load(&c.expired),
            open_watches: load(&c.open_watches),
            lagging_watchers: load(&c.lagging_watchers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(StoreConfig {
            history: 100,
            history_bytes: 1 << 20,
            watch_queue_bytes: 1 << 20,
        })
    }

    fn put(key: &str, value: &str, ttl: Option<Duration>) -> Op {
        Op {
            key: key.into(),
            action: Action::Put {
                value: value.into(),
                ttl,
            },
            condition: Condition::Always,
        }
    }

    #[test]
    fn an_expired_key_is_never_served_before_the_sweep() {
        let store = store();
        store.apply(put("k", "v", Some(Duration::from_millis(1))));
        // Time must pass for the TTL to run out; no sweeper runs in this test.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.get("k"), None);
        assert_eq!(store.stats().revision, 1, "nothing expired the key yet");
        // A write to the key first commits the pending expiry.
        assert_eq!(
            store.apply(put("k", "w", None)),
            Outcome::Created { revision: 3 }
        );
    }

    #[test]
    fn a_failed_batch_writes_nothing() {
        let store = store();
        let cas = Op {
            key: "k".into(),
            action: Action::Put {
                value: "new".into(),
                ttl: None,
            },
            condition: Condition::Value(Some("old".into())),
        };
        let result = store.batch(&[put("a", "1", None), cas]);
        assert!(result.is_err());
        assert_eq!(store.get("a"), None);
        assert_eq!(store.stats().revision, 0);
    }

    #[test]
    fn batch_ops_see_the_ops_before_them() {
        let store = store();
        let cas = Op {
            key: "k".into(),
            action: Action::Put {
                value: "2".into(),
                ttl: None,
            },
            condition: Condition::Value(Some("1".into())),
        };
        let outcomes = store.batch(&[put("k", "1", None), cas]).expect("applies");
        assert_eq!(
            outcomes,
            [
                Outcome::Created { revision: 1 },
                Outcome::Replaced { revision: 2 }
            ]
        );
    }
}
