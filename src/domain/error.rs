//! Why a store call failed.

use std::sync::Arc;

use super::{Fence, LeaseId, Outcome};

/// Why a write was not applied. Two different things for a client: one
/// says "ask again elsewhere, soon", the other "the disk is the problem".
#[derive(Clone, Debug)]
pub enum StorageError {
    /// The store is closing (the server is stopping); nothing was written.
    ShuttingDown,
    /// The data dir refused the write (full, or an I/O error): nothing of it
    /// was applied. Writes work again once the disk does.
    DiskRefused(Arc<str>),
    /// The data dir's database file was removed or replaced while the
    /// server ran: writes are refused from then on (until a restart), since
    /// a restart would not find them. Nothing of this write was applied.
    DataDirLost(Arc<str>),
    /// The backend (etcd) did not answer in time, or has no quorum. A write
    /// may or may not have been applied: etcd may have committed it just
    /// before the answer was lost.
    Unavailable(Arc<str>),
    /// The backend (etcd) refused the request as too large; nothing was
    /// written.
    TooLarge(Arc<str>),
    /// A write named a lease that does not exist (never granted, expired
    /// or revoked); nothing was written.
    LeaseNotFound(LeaseId),
    /// A fenced write's lock is not held with its token (released, lost
    /// with its lease, or taken by another since); nothing was written.
    FenceLost(Fence),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ShuttingDown => f.write_str("the store is shutting down"),
            Self::DiskRefused(detail)
            | Self::DataDirLost(detail)
            | Self::Unavailable(detail)
            | Self::TooLarge(detail) => f.write_str(detail),
            Self::LeaseNotFound(lease) => write!(f, "lease {lease} does not exist"),
            Self::FenceLost(fence) => write!(
                f,
                "lock or election {:?} is not held with token {}",
                fence.name, fence.token
            ),
        }
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

impl BatchError {
    /// The outcomes of a batch that applied, or the error of one that did
    /// not (a condition failed).
    pub fn unless_rejected(outcomes: Vec<Outcome>) -> Result<Vec<Outcome>, Self> {
        if outcomes
            .iter()
            .any(|outcome| matches!(outcome, Outcome::Rejected { .. }))
        {
            Err(Self::Rejected(outcomes))
        } else {
            Ok(outcomes)
        }
    }
}

/// Why a watch could not start.
#[derive(Debug)]
pub enum WatchError {
    /// The history no longer reaches back to the requested revision.
    Compacted { oldest: u64 },
    /// The requested revision is newer than the store: it comes from another
    /// run of the server, whose history is gone.
    Unknown { current: u64, oldest: u64 },
    /// `--max-watches` streams are open.
    TooMany { max: usize },
    /// The backend (etcd) cannot be reached.
    Unavailable(Arc<str>),
}

/// Why a range cannot be read at the point asked for.
#[derive(Debug)]
pub enum RangeError {
    /// The history no longer reaches back to the revision.
    Compacted { oldest: u64 },
    /// The revision is newer than the store's (a point from another run).
    Unknown { current: u64, oldest: u64 },
    /// The backend (etcd) cannot be reached.
    Unavailable(std::sync::Arc<str>),
}
