//! The store's counters, for `/status` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Action, Op, Outcome};

/// Counters for `/status`, kept with relaxed atomics: they are statistics,
/// not synchronisation.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) gets: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) cas: AtomicU64,
    pub(crate) cas_succeeded: AtomicU64,
    pub(crate) cas_failed: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) open_watches: AtomicU64,
    pub(crate) lagging_watchers: AtomicU64,
    pub(crate) disk_commits: AtomicU64,
    pub(crate) disk_writes: AtomicU64,
    pub(crate) disk_commit_micros: AtomicU64,
    pub(crate) disk_errors: AtomicU64,
}

impl Counters {
    /// Counts one operation by what it was and how it went.
    pub(crate) fn count(&self, op: &Op, outcome: &Outcome) {
        match (&op.action, op.condition.is_cas()) {
            (Action::Get, _) => bump(&self.gets),
            (Action::Put { .. }, true) => {
                bump(&self.cas);
                match outcome {
                    Outcome::Rejected { .. } => bump(&self.cas_failed),
                    _ => bump(&self.cas_succeeded),
                }
            }
            (Action::Put { .. }, false) => bump(&self.puts),
            (Action::Delete, _) => bump(&self.deletes),
        }
    }

    /// Notes one commit to the data dir of `writes` writes.
    pub(super) fn disk_commit(&self, writes: usize, took: Duration, ok: bool) {
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

impl Counters {
    /// The counters as [`Stats`]; the store's state (revision, keys,
    /// watch bytes) is the caller's to fill in.
    pub(crate) fn snapshot(&self) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            revision: 0,
            oldest_revision: 0,
            keys: 0,
            gets: load(&self.gets),
            puts: load(&self.puts),
            deletes: load(&self.deletes),
            cas: load(&self.cas),
            cas_succeeded: load(&self.cas_succeeded),
            cas_failed: load(&self.cas_failed),
            batches: load(&self.batches),
            expired: load(&self.expired),
            open_watches: load(&self.open_watches),
            lagging_watchers: load(&self.lagging_watchers),
            watch_bytes: 0,
            disk_commits: load(&self.disk_commits),
            disk_writes: load(&self.disk_writes),
            disk_commit_seconds: load(&self.disk_commit_micros) as f64 / 1e6,
            disk_errors: load(&self.disk_errors),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
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
