//! The store's figures, for `/status` and `/metrics`.

/// A point-in-time copy of the store's counters.
#[derive(Clone, Debug, Default, PartialEq)]
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
    /// Leases that exist now.
    pub leases: u64,
    /// Leases that ran out (not revoked).
    pub expired_leases: u64,
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
