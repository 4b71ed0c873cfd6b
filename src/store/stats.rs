//! The memory engine's own counters (expiries, the data dir's commits),
//! for `/status` and `/metrics`; the operation counters are the seam's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Stats;

/// Kept with relaxed atomics: they are statistics, not synchronisation.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) expired: AtomicU64,
    disk_commits: AtomicU64,
    disk_writes: AtomicU64,
    disk_commit_micros: AtomicU64,
    disk_errors: AtomicU64,
}

impl Counters {
    /// Notes one commit to the data dir of `writes` writes.
    pub(super) fn disk_commit(&self, writes: usize, took: Duration, ok: bool) {
        if ok {
            self.disk_commits.fetch_add(1, Ordering::Relaxed);
            self.disk_writes.fetch_add(writes as u64, Ordering::Relaxed);
        } else {
            self.disk_errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.disk_commit_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// `stats` with these counters filled in.
    pub(super) fn fill(&self, stats: Stats) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            expired: load(&self.expired),
            disk_commits: load(&self.disk_commits),
            disk_writes: load(&self.disk_writes),
            disk_commit_seconds: load(&self.disk_commit_micros) as f64 / 1e6,
            disk_errors: load(&self.disk_errors),
            ..stats
        }
    }
}
