//! Locks and elections, written once above the [`Backend`] trait from what
//! every backend already does (keys on leases, transactions, ranges,
//! watches), as etcd's `concurrency` package builds them from etcd's. So
//! both backends lay a lock out the same way, etcd's way (see
//! [`crate::domain::queue_key`]), and the server can enforce the fencing
//! token itself: a fence is judged in the commit of the write it guards.
//!
//! `queue.rs` joins a queue, waits for its head, leaves it and reads it;
//! `observe.rs` follows an election's leader.
//!
//! [`Backend`]: crate::backend::Backend

mod observe;
mod queue;

pub use observe::{Leadership, Observed, observe};
pub use queue::{Acquired, Joining, LeaseChoice, Queue, acquire, proclaim, read, release};

use crate::domain::{LeaseError, LeaseId, RangeError, StorageError, WatchError};

/// Why a lock, a campaign or an observation did not get its answer.
#[derive(Debug)]
pub enum CoordError {
    /// The wait ran out: the contender has left the queue.
    TimedOut,
    /// The lease named does not exist (never granted, expired, revoked).
    LeaseNotFound(LeaseId),
    /// The contender's key went while it waited: its lease ended, or the
    /// key was deleted.
    Lost {
        key: String,
    },
    Storage(StorageError),
    Lease(LeaseError),
    Range(RangeError),
    Watch(WatchError),
}

impl From<StorageError> for CoordError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::LeaseNotFound(lease) => Self::LeaseNotFound(lease),
            other => Self::Storage(other),
        }
    }
}

impl From<RangeError> for CoordError {
    fn from(err: RangeError) -> Self {
        Self::Range(err)
    }
}

impl From<WatchError> for CoordError {
    fn from(err: WatchError) -> Self {
        Self::Watch(err)
    }
}
