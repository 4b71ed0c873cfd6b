//! The memory engine as a [`Backend`]: the seam's calls, answered from
//! this process.

use std::future::Future;
use std::sync::Arc;

use super::Store;
use super::backup::BackupEntries;
use super::snapshot::Unwatch;
use crate::backend::Backend;
use crate::domain::{
    Backup, BackupError, BatchError, Current, Fence, LeaseError, LeaseId, LeasePage, LeaseState,
    Op, Outcome, Page, Position, PrefixDeleted, RangeError, RangeRequest, Readiness, Stats,
    StorageError, Txn, TxnOutcome, WatchError, Watched,
};
use crate::watch::{Closer, WatchStream};

impl Backend for Store {
    type Watch = WatchStream<Unwatch>;
    type Backup = BackupEntries;

    fn name(&self) -> &'static str {
        "memory"
    }

    /// Never waits: the future is ready at once.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Current>, StorageError>> + Send {
        std::future::ready(Ok(self.get_now(key)))
    }

    fn apply(&self, op: Op) -> impl Future<Output = Result<Outcome, StorageError>> + Send {
        Store::apply(self, op)
    }

    fn batch(
        &self,
        ops: &[Op],
        fences: &[Fence],
    ) -> impl Future<Output = Result<Vec<Outcome>, BatchError>> + Send {
        Store::batch(self, ops, fences)
    }

    fn txn(
        &self,
        txn: &Txn,
        fences: &[Fence],
    ) -> impl Future<Output = Result<TxnOutcome, StorageError>> + Send {
        Store::txn(self, txn, fences)
    }

    fn grant(
        &self,
        id: Option<LeaseId>,
        ttl: u64,
        owner: Option<Arc<str>>,
    ) -> impl Future<Output = Result<LeaseState, LeaseError>> + Send {
        Store::grant(self, id, ttl, owner)
    }

    fn keep_alive(&self, id: LeaseId) -> impl Future<Output = Result<u64, LeaseError>> + Send {
        Store::keep_alive(self, id)
    }

    fn lease(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> impl Future<Output = Result<LeaseState, LeaseError>> + Send {
        Store::lease(self, id, keys)
    }

    fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> impl Future<Output = Result<LeasePage, LeaseError>> + Send {
        Store::leases(self, after, limit)
    }

    fn revoke(&self, id: LeaseId) -> impl Future<Output = Result<u64, LeaseError>> + Send {
        Store::revoke(self, id)
    }

    fn max_batch_ops(&self) -> Option<usize> {
        None
    }

    fn range(
        &self,
        request: &RangeRequest<'_>,
    ) -> impl Future<Output = Result<Page, RangeError>> + Send {
        Store::range(self, request)
    }

    fn delete_prefix(
        &self,
        prefix: &str,
        fences: &[Fence],
    ) -> impl Future<Output = Result<PrefixDeleted, StorageError>> + Send {
        Store::delete_prefix(self, prefix, fences)
    }

    fn watch(
        &self,
        watched: Watched,
        since: Option<Position>,
        closer: Closer,
    ) -> impl Future<Output = Result<Self::Watch, WatchError>> + Send {
        Store::watch(self, watched, since, closer)
    }

    fn backup(&self) -> impl Future<Output = Result<Backup<BackupEntries>, BackupError>> + Send {
        Store::backup(self)
    }

    fn stats(&self) -> impl Future<Output = Result<Stats, StorageError>> + Send {
        std::future::ready(Ok(Store::stats(self)))
    }

    fn stats_now(&self) -> Stats {
        Store::stats(self)
    }

    fn readiness(&self) -> impl Future<Output = Readiness> + Send {
        std::future::ready(match self.refusing() {
            None => Readiness::Ready,
            Some(StorageError::ShuttingDown) => {
                Readiness::NotReady("the server is stopping".to_owned())
            }
            Some(refused) => Readiness::NotReady(refused.to_string()),
        })
    }

    async fn run(self) {
        tokio::join!(self.clone().run_expiry(), self.run_heartbeat());
    }

    fn started(&self) -> impl Future<Output = bool> + Send {
        std::future::ready(true)
    }

    fn close(&self) {
        Store::close(self);
    }
}
