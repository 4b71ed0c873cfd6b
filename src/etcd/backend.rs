//! The etcd engine as a [`Backend`]: the seam's calls, answered by the
//! cluster.

use std::future::Future;
use std::sync::Arc;

use super::EtcdStore;
use super::hub::Registered;
use crate::backend::Backend;
use crate::domain::{
    Backup, BackupError, BatchError, Current, Entry, Fence, LeaseError, LeaseId, LeasePage,
    LeaseState, Op, Outcome, Page, Position, PrefixDeleted, RangeError, RangeRequest, Readiness,
    Stats, StorageError, Txn, TxnOutcome, WatchError, Watched,
};
use crate::watch::{Closer, WatchStream};

impl Backend for EtcdStore {
    type Watch = WatchStream<Registered>;
    type Backup = futures_util::stream::Empty<Result<Entry, StorageError>>;

    fn name(&self) -> &'static str {
        "etcd"
    }

    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Current>, StorageError>> + Send {
        EtcdStore::get(self, key)
    }

    fn apply(&self, op: Op) -> impl Future<Output = Result<Outcome, StorageError>> + Send {
        EtcdStore::apply(self, op)
    }

    fn batch(
        &self,
        ops: &[Op],
        fences: &[Fence],
    ) -> impl Future<Output = Result<Vec<Outcome>, BatchError>> + Send {
        EtcdStore::batch(self, ops, fences)
    }

    fn txn(
        &self,
        txn: &Txn,
        fences: &[Fence],
    ) -> impl Future<Output = Result<TxnOutcome, StorageError>> + Send {
        EtcdStore::txn(self, txn, fences)
    }

    fn grant(
        &self,
        id: Option<LeaseId>,
        ttl: u64,
        owner: Option<Arc<str>>,
    ) -> impl Future<Output = Result<LeaseState, LeaseError>> + Send {
        EtcdStore::grant(self, id, ttl, owner)
    }

    fn keep_alive(&self, id: LeaseId) -> impl Future<Output = Result<u64, LeaseError>> + Send {
        EtcdStore::keep_alive(self, id)
    }

    fn lease(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> impl Future<Output = Result<LeaseState, LeaseError>> + Send {
        EtcdStore::lease(self, id, keys)
    }

    fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> impl Future<Output = Result<LeasePage, LeaseError>> + Send {
        EtcdStore::leases(self, after, limit)
    }

    fn revoke(&self, id: LeaseId) -> impl Future<Output = Result<u64, LeaseError>> + Send {
        EtcdStore::revoke(self, id)
    }

    fn max_batch_ops(&self) -> Option<usize> {
        Some(self.max_txn_ops())
    }

    fn range(
        &self,
        request: &RangeRequest<'_>,
    ) -> impl Future<Output = Result<Page, RangeError>> + Send {
        EtcdStore::range(self, request)
    }

    fn delete_prefix(
        &self,
        prefix: &str,
        fences: &[Fence],
    ) -> impl Future<Output = Result<PrefixDeleted, StorageError>> + Send {
        EtcdStore::delete_prefix(self, prefix, fences)
    }

    fn watch(
        &self,
        watched: Watched,
        since: Option<Position>,
        closer: Closer,
    ) -> impl Future<Output = Result<Self::Watch, WatchError>> + Send {
        EtcdStore::watch(self, watched, since, closer)
    }

    fn backup(&self) -> impl Future<Output = Result<Backup<Self::Backup>, BackupError>> + Send {
        std::future::ready(Err(BackupError::Unsupported(
            "with --backend etcd the keys are etcd's: back them up with `etcdctl snapshot save \
             FILE` (and restore with `etcdutl snapshot restore`)",
        )))
    }

    fn stats(&self) -> impl Future<Output = Result<Stats, StorageError>> + Send {
        EtcdStore::stats(self)
    }

    fn stats_now(&self) -> Stats {
        EtcdStore::stats_now(self)
    }

    fn readiness(&self) -> impl Future<Output = Readiness> + Send {
        EtcdStore::readiness(self)
    }

    async fn run(self) {
        tokio::join!(self.clone().run_watch(), self.run_heartbeat());
    }

    fn started(&self) -> impl Future<Output = bool> + Send {
        EtcdStore::started(self)
    }

    /// Nothing to write back: the keys are etcd's.
    fn close(&self) {}
}
