//! The storage layer: keys, revisions, TTL expiry, history and watch fan-out.
//!
//! It knows nothing of HTTP. The API layer turns requests into [`Op`]s and
//! reads [`Outcome`]s back; every write, whoever asks for it (a request, a
//! batch, the expiry sweeper), goes through [`Committer::commit`], so
//! revisions, the history and watch events cannot disagree.

mod disk;
mod entry;
mod event;
mod expiry;
mod history;
mod lock_map;
mod value;
mod watch;

#[cfg(test)]
mod model_tests;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::{Notify, oneshot};

pub use disk::{FORMAT as DISK_FORMAT, Fsync, OpenError, Recovered};
pub use event::{Event, EventKind};
pub use lock_map::{Entry, Key, LockMap, Locked};
pub use value::Value;
pub use watch::{Charge, CloseWatcher, Closer, Delivery, SharedFrame, Watch};

use disk::{Disk, DiskWrite};
use expiry::ExpiryQueue;
use history::History;
use watch::{WatchLimits, Watchers};

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
            value: entry.value(),
            revision: entry.mod_revision(),
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

/// A write the disk refused (full, or an I/O error): nothing of it was
/// applied. Writes work again once the disk does.
#[derive(Clone, Debug)]
pub struct StorageError(Arc<str>);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StorageError {}

/// Why a batch did not apply.
#[derive(Debug)]
pub enum BatchError {
    /// A condition failed; nothing was written. One outcome per op.
    Rejected(Vec<Outcome>),
    Storage(StorageError),
}

/// Why a watch could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchError {
    /// The history no longer reaches back to the requested revision.
    Compacted { oldest: u64 },
    /// The requested revision is newer than the store: it comes from another
    /// run of the server, whose history is gone.
    Unknown { current: u64, oldest: u64 },
    /// `--max-watches` streams are open.
    TooMany { max: usize },
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
    disk_commits: AtomicU64,
    disk_writes: AtomicU64,
    disk_commit_micros: AtomicU64,
    disk_errors: AtomicU64,
}

impl Counters {
    /// Notes one commit to the data dir of `writes` writes.
    fn disk_commit(&self, writes: usize, took: Duration, ok: bool) {
        if ok {
            bump(&self.disk_commits);
            self.disk_writes.fetch_add(writes as u64, Ordering::Relaxed);
        } else {
            bump(&self.disk_errors);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.disk_commit_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A point-in-time copy of the store's counters.
#[derive(Clone, Debug, PartialEq)]
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
    /// Bytes of events and encoded frames the watchers pin now.
    pub watch_bytes: u64,
    /// Transactions committed to the data dir (with `--fsync always`, one
    /// per group of concurrent writes).
    pub disk_commits: u64,
    /// Writes those transactions carried.
    pub disk_writes: u64,
    /// Time spent committing (and flushing), successful or not.
    pub disk_commit_seconds: f64,
    /// Commits the disk refused.
    pub disk_errors: u64,
}

/// What a planned write does to its key.
enum Change {
    /// The entry the key will hold (revisions and deadline worked out).
    Put(Entry),
    Delete,
    Expire,
}

/// What a caller asks the commit path to write.
enum Planned {
    Put { value: Value, ttl: Option<Duration> },
    Delete,
    Expire,
}

/// One write, planned: it has its revision but may not be applied yet.
struct Write {
    key: Key,
    change: Change,
    revision: u64,
}

/// The state a planned but unapplied write leaves its key in (durable mode).
struct Pending {
    revision: u64,
    entry: Option<Entry>,
}

/// Told when a group of writes is on disk and applied, or failed.
type Ticket = oneshot::Receiver<Result<(), StorageError>>;

/// Writes planned since the flusher last took a group, and who waits on
/// them. A waiter without writes (a read that saw planned state) is answered
/// with the group, so it never reports state that then fails to commit.
#[derive(Default)]
struct Group {
    writes: Vec<Write>,
    waiters: Vec<oneshot::Sender<Result<(), StorageError>>>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.waiters.is_empty()
    }
}

/// `--fsync interval|never`: writes are applied and answered at once, and
/// the latest state of each key they touched waits here for the periodic
/// commit.
#[derive(Default)]
struct Deferred {
    keys: HashMap<Key, Option<Entry>>,
    revision: u64,
}

/// How many keys may wait for a periodic commit before one runs early, to
/// bound the memory they hold.
const MAX_DEFERRED_KEYS: usize = 100_000;

/// The key's state as planning sees it: planned writes first, then the map.
fn view<'a>(
    pending: &'a HashMap<Key, Pending>,
    locked: &'a Locked<'_>,
    key: &str,
) -> Option<&'a Entry> {
    // In memory (and mostly with a data dir) nothing is pending: skip
    // hashing the key a second time on the hot path.
    if pending.is_empty() {
        return locked.get(key);
    }
    match pending.get(key) {
        Some(pending) => pending.entry.as_ref(),
        None => locked.get(key),
    }
}

/// Everything writes must change together, behind the one commit lock: the
/// revision counter, the history, the expiry queue and the watcher registry.
///
/// One lock for all writes is what makes commit order, revision order and
/// event order the same, even for writers on different keys. It is a
/// blocking `parking_lot` mutex (fair, no poisoning) because a commit never
/// awaits: it is a few map operations and non-blocking channel sends.
///
/// A write is planned ([`Committer::write`]: checked, given its revision)
/// and then applied ([`Committer::commit`]: map, expiry queue, history,
/// watchers). In memory the two happen together. With a data dir, planned
/// writes queue up in a [`Group`] that the flusher thread writes to disk as
/// one transaction while new requests plan against [`Pending`] state; only
/// then are they applied and answered. So readers and watchers never see a
/// write the disk might still lose, and concurrent writers share one fsync.
struct Committer {
    /// The revision of the last applied write.
    revision: u64,
    /// The revision of the last planned write (`revision` when none waits).
    next: u64,
    pending: HashMap<Key, Pending>,
    group: Group,
    /// `--fsync always`: writes wait in groups for the disk before applying.
    durable: bool,
    /// `--fsync interval|never`: applied writes waiting for the next commit.
    deferred: Option<Deferred>,
    closing: bool,
    history: History,
    expiry: ExpiryQueue,
    watchers: Watchers,
    /// Set when a commit adds a deadline earlier than any before it.
    wake_sweeper: bool,
    lagging_watchers: u64,
    expired: u64,
}

impl Committer {
    /// The one place a write is planned: it takes the next revision and, in
    /// memory, is applied at once; with a data dir it joins the group.
    fn write(&mut self, locked: &mut Locked<'_>, key: &Key, planned: Planned, now: Instant) {
        self.next += 1;
        let revision = self.next;
        let change = match planned {
            Planned::Put { value, ttl } => {
                // A deadline past what `Instant` can hold is no deadline.
                let deadline = ttl.and_then(|ttl| now.checked_add(ttl));
                Change::Put(Entry::new(key, value.as_bytes(), revision, deadline))
            }
            Planned::Delete => Change::Delete,
            Planned::Expire => Change::Expire,
        };
        let write = Write {
            key: key.clone(),
            change,
            revision,
        };
        if self.durable {
            let entry = match &write.change {
                Change::Put(entry) => Some(entry.clone()),
                Change::Delete | Change::Expire => None,
            };
            self.pending
                .insert(key.clone(), Pending { revision, entry });
            self.group.writes.push(write);
        } else {
            self.commit(locked, write);
        }
    }

    /// Waits for the group being planned (durable mode).
    fn ticket(&mut self) -> Ticket {
        let (sender, receiver) = oneshot::channel();
        self.group.waiters.push(sender);
        receiver
    }

    /// The one place a write is applied, in revision order.
    fn commit(&mut self, locked: &mut Locked<'_>, write: Write) {
        let Write {
            key,
            change,
            revision,
        } = write;
        debug_assert_eq!(
            revision,
            self.revision + 1,
            "writes apply in revision order"
        );
        self.revision = revision;
        if let Some(deferred) = &mut self.deferred {
            let entry = match &change {
                Change::Put(entry) => Some(entry.clone()),
                Change::Delete | Change::Expire => None,
            };
            deferred.keys.insert(key.clone(), entry);
            deferred.revision = revision;
        }
        let (event, previous) = match change {
            Change::Put(entry) => {
                if let Some(deadline) = entry.deadline() {
                    self.wake_sweeper |= self.expiry.insert(deadline, key.clone());
                }
                let event = Event::live(revision, EventKind::Put, entry.clone());
                (event, locked.insert(entry))
            }
            Change::Delete | Change::Expire => {
                let kind = if matches!(change, Change::Expire) {
                    self.expired += 1;
                    EventKind::Expire
                } else {
                    EventKind::Delete
                };
                let previous = locked.remove(&key);
                (Event::gone(revision, kind, key.clone()), previous)
            }
        };
        if let Some(previous) = previous.and_then(|p| p.deadline()) {
            self.expiry.remove(previous, &key);
        }
        self.lagging_watchers += self.watchers.publish(&event);
        self.history.push(event);
    }
}

/// Store-wide settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How many events the history keeps for watch resume.
    pub history: usize,
    /// How many bytes of keys and values the history may hold.
    pub history_bytes: usize,
    /// How many bytes a watcher may be charged (queued events, frames not
    /// yet written) before its stream is ended.
    pub watch_queue_bytes: usize,
    /// How many bytes of events and frames all watchers together may pin.
    pub watch_memory: usize,
    /// How many watch streams may be open at once.
    pub max_watches: usize,
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
        let lagging = std::mem::take(&mut committer.lagging_watchers);
        counters
            .lagging_watchers
            .fetch_add(lagging, Ordering::Relaxed);
        let expired = std::mem::take(&mut committer.expired);
        counters.expired.fetch_add(expired, Ordering::Relaxed);
        if std::mem::take(&mut committer.wake_sweeper) {
            self.sweeper.notify_one();
        }
        if committer
            .deferred
            .as_ref()
            .is_some_and(|d| d.keys.len() >= MAX_DEFERRED_KEYS)
        {
            self.flush_wanted.notify_one();
        }
    }
}

/// The flusher thread. With `--fsync always` it takes each group the commit
/// path has planned, writes it to disk as one transaction, then applies it
/// and answers its waiters. Otherwise it commits the deferred writes every
/// period. A blocking thread, not a task: redb's calls block on the disk.
fn flusher(inner: Arc<Inner>, mut disk: Disk, period: Option<Duration>) {
    match period {
        None => commit_groups(&inner, &mut disk),
        Some(period) => commit_periodically(&inner, &mut disk, period),
    }
}

fn commit_groups(inner: &Inner, disk: &mut Disk) {
    let mut last_group = 0;
    loop {
        let mut committer = inner.committer.lock();
        while committer.group.is_empty() && !committer.closing {
            inner.flush_wanted.wait(&mut committer);
        }
        if committer.group.is_empty() {
            // Closing, and nothing left to write: all that applied is on disk.
            let revision = committer.revision;
            drop(committer);
            disk.close(revision);
            return;
        }
        // Each flush costs about the same CPU whatever its size, and on a
        // busy core the writers that would fill this group may not have run
        // yet: let them, a few times, while the group is smaller than the
        // last one (cheap, and only under load: alone, a write goes at once).
        for _ in 0..8 {
            if committer.group.writes.len() >= last_group || committer.closing {
                break;
            }
            drop(committer);
            std::thread::yield_now();
            committer = inner.committer.lock();
        }
        let group = std::mem::take(&mut committer.group);
        last_group = group.writes.len();
        drop(committer);

        let result = match group.writes.last() {
            None => Ok(()),
            Some(last) => {
                let writes: Vec<DiskWrite<'_>> = group
                    .writes
                    .iter()
                    .map(|write| match &write.change {
                        Change::Put(entry) => DiskWrite::Put(&write.key, entry),
                        Change::Delete | Change::Expire => DiskWrite::Remove(&write.key),
                    })
                    .collect();
                let started = Instant::now();
                let result = disk.write(&writes, last.revision);
                let took = started.elapsed();
                inner
                    .counters
                    .disk_commit(writes.len(), took, result.is_ok());
                result
            }
        };

        let mut committer = inner.committer.lock();
        let (waiters, answer) = match result {
            Ok(()) => {
                let mut locked = inner.map.lock(group.writes.iter().map(|w| &*w.key));
                for write in group.writes {
                    if committer
                        .pending
                        .get(&write.key)
                        .is_some_and(|p| p.revision == write.revision)
                    {
                        committer.pending.remove(&write.key);
                    }
                    committer.commit(&mut locked, write);
                }
                drop(locked);
                inner.settle(&mut committer);
                (group.waiters, Ok(()))
            }
            Err(err) => {
                // Writes planned since were planned on top of this group:
                // they fail with it, and planning restarts from what applied.
                tracing::error!("writing to the data dir failed: {err}");
                let later = std::mem::take(&mut committer.group);
                committer.pending.clear();
                committer.next = committer.revision;
                let mut waiters = group.waiters;
                waiters.extend(later.waiters);
                let message = format!("the data dir refused the write: {err}");
                (waiters, Err(StorageError(message.into())))
            }
        };
        drop(committer);
        for waiter in waiters {
            // A waiter whose request was cancelled has gone; nothing to tell.
            let _ = waiter.send(answer.clone());
        }
    }
}

fn commit_periodically(inner: &Inner, disk: &mut Disk, period: Duration) {
    loop {
        let mut committer = inner.committer.lock();
        let due = Instant::now() + period;
        while !committer.closing
            && Instant::now() < due
            && committer
                .deferred
                .as_ref()
                .is_none_or(|d| d.keys.len() < MAX_DEFERRED_KEYS)
        {
            inner.flush_wanted.wait_until(&mut committer, due);
        }
        let closing = committer.closing;
        let Some(deferred) = committer.deferred.as_mut().map(std::mem::take) else {
            return;
        };
        drop(committer);
        let started = Instant::now();
        let result = if deferred.keys.is_empty() {
            Ok(())
        } else {
            let result = disk.write_all(&deferred.keys, deferred.revision);
            let took = started.elapsed();
            inner
                .counters
                .disk_commit(deferred.keys.len(), took, result.is_ok());
            result
        };
        match result {
            Ok(()) if closing => {
                disk.close(inner.committer.lock().revision);
                return;
            }
            Ok(()) => {}
            Err(err) => {
                // The writes stay in memory and are retried with the next commit.
                tracing::error!("committing to the data dir failed: {err}");
                let mut committer = inner.committer.lock();
                if let Some(now) = committer.deferred.as_mut() {
                    let later = std::mem::replace(now, deferred);
                    now.keys.extend(later.keys);
                    now.revision = now.revision.max(later.revision);
                }
            }
        }
        if closing {
            return;
        }
    }
}

/// Waits until what a run planned or saw is durable, if it has to.
async fn settled(ticket: Option<Ticket>) -> Result<(), StorageError> {
    match ticket {
        None => Ok(()),
        Some(ticket) => ticket
            .await
            .unwrap_or_else(|_| Err(StorageError("the store is shutting down".into()))),
    }
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

/// What the sweeper does next.
enum Sweep {
    /// Sleep until this deadline, or until woken.
    Sleep(Option<Instant>),
    /// Wait for the expirations just planned to reach the disk.
    Wait(Ticket),
}

impl Store {
    /// An in-memory store.
    pub fn new(config: StoreConfig) -> Self {
        Self::with_state(config, LockMap::new(), ExpiryQueue::default(), 0, None)
    }

    fn with_state(
        config: StoreConfig,
        map: LockMap,
        expiry: ExpiryQueue,
        revision: u64,
        fsync: Option<Fsync>,
    ) -> Self {
        entry::start_clock();
        let committer = Committer {
            revision,
            next: revision,
            pending: HashMap::new(),
            group: Group::default(),
            durable: fsync == Some(Fsync::Always),
            deferred: fsync
                .filter(|mode| *mode != Fsync::Always)
                .map(|_| Deferred::default()),
            closing: false,
            history: History::new(config.history, config.history_bytes),
            expiry,
            watchers: Watchers::new(WatchLimits {
                per_watcher: config.watch_queue_bytes,
                total: config.watch_memory,
                watchers: config.max_watches,
            }),
            wake_sweeper: false,
            lagging_watchers: 0,
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
        entry::start_clock();
        let (disk, mut recovered) = Disk::open(dir)?;
        let map = LockMap::new();
        let mut expiry = ExpiryQueue::default();
        {
            let entries = std::mem::take(&mut recovered.entries);
            let mut locked = map.lock(entries.iter().map(Entry::key));
            for entry in entries {
                if let Some(deadline) = entry.deadline() {
                    expiry.insert(deadline, Key::from(entry.key()));
                }
                locked.insert(entry);
            }
        }
        let store = Self::with_state(config, map, expiry, recovered.revision, Some(fsync));
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
    pub async fn apply(&self, op: Op) -> Result<Outcome, StorageError> {
        let (mut outcomes, ticket) = self.run(std::slice::from_ref(&op))?;
        settled(ticket).await?;
        Ok(outcomes.pop().unwrap_or(Outcome::NotFound))
    }

    /// Runs `ops` in order as one atomic, isolated commit: their writes take
    /// consecutive revisions and no reader sees some without the others. If
    /// any condition fails nothing is written, and the outcomes come back in
    /// the error.
    pub async fn batch(&self, ops: &[Op]) -> Result<Vec<Outcome>, BatchError> {
        bump(&self.inner.counters.batches);
        let (outcomes, ticket) = self.run(ops).map_err(BatchError::Storage)?;
        settled(ticket).await.map_err(BatchError::Storage)?;
        if outcomes
            .iter()
            .any(|outcome| matches!(outcome, Outcome::Rejected { .. }))
        {
            Err(BatchError::Rejected(outcomes))
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

    /// Plans (and in memory, applies) `ops`; with a data dir, the ticket
    /// tells when what they wrote or saw is durable.
    fn run(&self, ops: &[Op]) -> Result<(Vec<Outcome>, Option<Ticket>), StorageError> {
        let inner = &*self.inner;
        let mut committer = inner.committer.lock();
        if committer.closing {
            return Err(StorageError("the store is shutting down".into()));
        }
        let mut locked = inner.map.lock(ops.iter().map(|op| &*op.key));
        let now = Instant::now();
        // What this run sees may include writes still on their way to disk.
        let saw_pending = !committer.pending.is_empty();

        // Expired keys the sweeper has not reached yet are expired here first,
        // as writes of their own, so watchers see the expiry before whatever
        // this batch does to the key.
        for op in ops {
            if view(&committer.pending, &locked, &op.key).is_some_and(|e| e.is_expired(now)) {
                committer.write(&mut locked, &op.key, Planned::Expire, now);
            }
        }

        // Plan: evaluate every op against the state the ops before it leave,
        // without writing, so a failed condition leaves no trace.
        let mut staged: HashMap<&str, Option<Current>> = HashMap::new();
        let mut next_revision = committer.next;
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut rejected = false;
        for op in ops {
            let current = match staged.get(&*op.key) {
                Some(staged) => staged.clone(),
                None => view(&committer.pending, &locked, &op.key).map(Current::from),
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
                let planned = match &op.action {
                    Action::Put { value, ttl } => Planned::Put {
                        value: value.clone(),
                        ttl: *ttl,
                    },
                    _ => Planned::Delete,
                };
                committer.write(&mut locked, &op.key, planned, now);
            }
        }
        drop(locked);

        let must_wait = saw_pending || committer.next > committer.revision;
        let ticket = (committer.durable && must_wait).then(|| committer.ticket());
        if ticket.is_some() {
            inner.flush_wanted.notify_one();
        }
        inner.settle(&mut committer);
        Ok((outcomes, ticket))
    }

    /// Starts watching `keys`. Without `since`, the stream opens with one
    /// snapshot per key; with it, it replays every event on those keys after
    /// revision `since`. Live events follow either way, with no gap and no
    /// duplicate. If the store drops the watcher (too slow, or the watchers'
    /// memory is full) it calls `closer`.
    pub fn watch(
        &self,
        keys: Vec<Key>,
        since: Option<u64>,
        closer: Closer,
    ) -> Result<Watch, WatchError> {
        let inner = &*self.inner;
        let mut committer = inner.committer.lock();
        let current = committer.revision;
        let first: Vec<Event> = match since {
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
                    .filter(|event| watched.contains(event.key()))
                    .cloned()
                    .collect()
            }
            None => {
                let now = Instant::now();
                keys.iter()
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
                    .collect()
            }
        };
        let (id, live) = committer
            .watchers
            .register(keys.into_boxed_slice(), closer)
            .map_err(|too_many| WatchError::TooMany { max: too_many.max })?;
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

    /// Expires keys whose deadline has passed, a chunk at a time.
    fn sweep(&self) -> Sweep {
        let inner = &*self.inner;
        loop {
            let mut committer = inner.committer.lock();
            let now = Instant::now();
            let due = committer.expiry.due(now, SWEEP_CHUNK);
            if due.is_empty() || committer.closing {
                // The sweeper is about to look at the next deadline anyway.
                committer.wake_sweeper = false;
                return Sweep::Sleep(committer.expiry.next().filter(|_| !committer.closing));
            }
            let mut locked = inner.map.lock(due.iter().map(|key| &**key));
            for key in &due {
                // A due key may already have an expiry or a new write planned.
                if view(&committer.pending, &locked, key).is_some_and(|e| e.is_expired(now)) {
                    committer.write(&mut locked, key, Planned::Expire, now);
                }
            }
            drop(locked);
            if committer.durable {
                let ticket = committer.ticket();
                inner.flush_wanted.notify_one();
                return Sweep::Wait(ticket);
            }
            inner.settle(&mut committer);
        }
    }

    /// The expiry sweeper: sleeps until the earliest deadline (or until a
    /// write sets an earlier one) and expires what is due. Runs forever; the
    /// server drops it on shutdown.
    pub async fn run_expiry(self) {
        loop {
            let notified = self.inner.sweeper.notified();
            match self.sweep() {
                Sweep::Wait(ticket) => {
                    if let Err(err) = settled(Some(ticket)).await {
                        // The disk refused; retry later rather than spin.
                        tracing::warn!("expiring keys failed: {err}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Sweep::Sleep(Some(deadline)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline.into()) => {}
                        () = notified => {}
                    }
                }
                Sweep::Sleep(None) => notified.await,
            }
        }
    }

    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let (revision, oldest_revision, watch_bytes) = {
            let committer = inner.committer.lock();
            let revision = committer.revision;
            let oldest = committer.history.oldest_revision(revision);
            (revision, oldest, committer.watchers.total_bytes() as u64)
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
            watch_bytes,
            disk_commits: load(&c.disk_commits),
            disk_writes: load(&c.disk_writes),
            disk_commit_seconds: load(&c.disk_commit_micros) as f64 / 1e6,
            disk_errors: load(&c.disk_errors),
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
            watch_memory: 1 << 30,
            max_watches: 100,
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
                ttl,
            },
            condition: Condition::Always,
        }
    }

    #[test]
    fn an_expired_key_is_never_served_before_the_sweep() {
        let store = store();
        now(store.apply(put("k", "v", Some(Duration::from_millis(1))))).expect("applies");
        // Time must pass for the TTL to run out; no sweeper runs in this test.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.get("k"), None);
        assert_eq!(store.stats().revision, 1, "nothing expired the key yet");
        // A write to the key first commits the pending expiry.
        assert_eq!(
            now(store.apply(put("k", "w", None))).expect("applies"),
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
        let result = now(store.batch(&[put("a", "1", None), cas]));
        assert!(matches!(result, Err(BatchError::Rejected(_))));
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
        let outcomes = now(store.batch(&[put("k", "1", None), cas])).expect("applies");
        assert_eq!(
            outcomes,
            [
                Outcome::Created { revision: 1 },
                Outcome::Replaced { revision: 2 }
            ]
        );
    }
}
