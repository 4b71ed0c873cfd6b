//! A backup of the memory engine: the revision and the leases taken under
//! the commit lock, then every key as it was at that revision, read from
//! the index a chunk at a time as a watch snapshot is (so it never holds a
//! copy of the store), with the history standing in for keys written
//! since.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;

use super::snapshot::Chunks;
use super::{Key, StorageError, Store};
use crate::domain::{Backup, BackupError, Entry, LeaseBackup};

/// The keys of a backup, in key order.
pub struct BackupEntries {
    store: Store,
    /// `None` once every key was read, or the history ran out.
    chunks: Option<Chunks>,
    revision: u64,
}

impl Store {
    /// The store at its current revision, for a backup.
    pub async fn backup(&self) -> Result<Backup<BackupEntries>, BackupError> {
        let committer = self.inner.committer.lock();
        let revision = committer.revision;
        let mut leases: Vec<LeaseBackup> = committer
            .leases
            .ids()
            .filter_map(|id| {
                committer.leases.get(id).map(|live| LeaseBackup {
                    id,
                    ttl: live.record.ttl,
                    owner: live.record.owner.clone(),
                })
            })
            .collect();
        drop(committer);
        leases.sort_unstable_by_key(|lease| lease.id);
        Ok(Backup {
            revision,
            leases,
            entries: BackupEntries {
                store: self.clone(),
                chunks: Some(Chunks::new(revision, &[Key::from("")])),
                revision,
            },
        })
    }
}

impl Stream for BackupEntries {
    type Item = Result<Entry, StorageError>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(chunks) = &mut this.chunks else {
            return Poll::Ready(None);
        };
        Poll::Ready(match chunks.next(&this.store) {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                this.chunks = None;
                None
            }
            Err(_) => {
                this.chunks = None;
                Some(Err(StorageError::Unavailable(
                    format!(
                        "the history no longer reaches back to revision {}, which the backup \
                         shows: it was read more slowly than --history events were written; \
                         retry, or raise --history",
                        this.revision
                    )
                    .into(),
                )))
            }
        })
    }
}
