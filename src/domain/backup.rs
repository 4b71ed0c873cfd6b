//! A backup: the whole store at one revision, its leases with it.

use std::sync::Arc;

use super::{LeaseId, StorageError};

/// A lease as a backup keeps it: a restored store gives it its full TTL,
/// as a restart does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseBackup {
    pub id: LeaseId,
    pub ttl: u64,
    pub owner: Option<Arc<str>>,
}

/// The store at `revision`: its leases, and its keys as `entries` yields
/// them (a stream read a chunk at a time, so a backup never holds a copy
/// of the store).
pub struct Backup<S> {
    pub revision: u64,
    pub leases: Vec<LeaseBackup>,
    pub entries: S,
}

/// Why a backup cannot be taken.
#[derive(Debug)]
pub enum BackupError {
    /// This backend keeps no copy to take (etcd: its own snapshot is the
    /// backup); the text says what to use.
    Unsupported(&'static str),
    Storage(StorageError),
}
