//! The seam: what every backend must do, as one trait, and what is the
//! same for all of them, written once beside it.
//!
//! A backend is an engine that keeps the keys: the in-process store
//! (`crate::store`) or an etcd cluster (`crate::etcd`). Each implements
//! [`Backend`]; the API calls a backend only through [`Counted`], which
//! counts every call the same way whatever answers it. A new capability
//! (a lease, a lock) is a method here, and every engine fails to compile
//! until it has it.
//!
//! Static dispatch throughout: the API is generic over the backend and the
//! server picks one at start, so no call boxes its future (the memory
//! store answers a GET without an allocation for the call).

mod counted;

use std::future::Future;
use std::sync::Arc;

use futures_util::Stream;

pub use counted::{Counted, Counters};

use crate::domain::{
    Backup, BackupError, BatchError, Current, Entry, Fence, LeaseError, LeaseId, LeasePage,
    LeaseState, Op, Outcome, Page, Position, PrefixDeleted, RangeError, RangeRequest, Readiness,
    Stats, StorageError, Txn, TxnOutcome, WatchError, Watched,
};
use crate::watch::{Closer, WatchItem};

/// What an engine must do to serve the API. Every call a client waits on
/// is async and fallible: an engine that answers over the network (etcd)
/// waits and can fail where the memory store answers at once.
pub trait Backend: Clone + Send + Sync + 'static {
    /// A watch stream of this backend (dropping it ends the watch).
    type Watch: Stream<Item = WatchItem> + Send + Unpin + 'static;

    /// A backup's keys, as the backend reads them.
    type Backup: Stream<Item = Result<Entry, StorageError>> + Send + Unpin + 'static;

    /// Which backend this is, as `/status` names it.
    fn name(&self) -> &'static str;

    /// A key's value and revision; `None` if absent (or expired).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Current>, StorageError>> + Send;

    /// One operation, as one commit.
    fn apply(&self, op: Op) -> impl Future<Output = Result<Outcome, StorageError>> + Send;

    /// Operations on distinct keys as one atomic, isolated commit: every
    /// condition is checked against the store before it, and all its
    /// writes take one revision. If a condition fails nothing is written
    /// and the outcomes come back in the error.
    ///
    /// Here, in `txn` and in `delete_prefix`, `fences` are judged in the
    /// same commit: unless every one holds, nothing is written and the
    /// answer is [`StorageError::FenceLost`].
    fn batch(
        &self,
        ops: &[Op],
        fences: &[Fence],
    ) -> impl Future<Output = Result<Vec<Outcome>, BatchError>> + Send;

    /// A transaction: its guards judged against the store, then the branch
    /// they choose as one atomic, isolated commit (all its writes at one
    /// revision; its reads see the store as the guards did). Its writes
    /// name distinct keys (the API checks).
    fn txn(
        &self,
        txn: &Txn,
        fences: &[Fence],
    ) -> impl Future<Output = Result<TxnOutcome, StorageError>> + Send;

    /// Grants a lease of `ttl` seconds, its id `id` (or one the backend
    /// picks), held by `owner` (the granting token's name).
    fn grant(
        &self,
        id: Option<LeaseId>,
        ttl: u64,
        owner: Option<Arc<str>>,
    ) -> impl Future<Output = Result<LeaseState, LeaseError>> + Send;

    /// Gives a lease its full TTL again; answers that TTL.
    fn keep_alive(&self, id: LeaseId) -> impl Future<Output = Result<u64, LeaseError>> + Send;

    /// A lease's TTLs and owner, and with `keys` the keys on it.
    fn lease(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> impl Future<Output = Result<LeaseState, LeaseError>> + Send;

    /// Up to `limit` leases after `after`, in id order.
    fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> impl Future<Output = Result<LeasePage, LeaseError>> + Send;

    /// Revokes a lease: every key on it is deleted in one commit. Answers
    /// the store's revision after it.
    fn revoke(&self, id: LeaseId) -> impl Future<Output = Result<u64, LeaseError>> + Send;

    /// Most operations one batch (or one part of a transaction: its
    /// guards, or a branch) may carry here (etcd's `--max-txn-ops`);
    /// `None`: no limit beyond the server's.
    fn max_batch_ops(&self) -> Option<usize>;

    /// A page of the keys under a prefix, at the request's read point.
    fn range(
        &self,
        request: &RangeRequest<'_>,
    ) -> impl Future<Output = Result<Page, RangeError>> + Send;

    /// Deletes every key under a (non-empty) prefix in one commit.
    fn delete_prefix(
        &self,
        prefix: &str,
        fences: &[Fence],
    ) -> impl Future<Output = Result<PrefixDeleted, StorageError>> + Send;

    /// Starts a watch: without `since`, a snapshot of what is watched and
    /// the revision it shows, then every change; with it, every change
    /// after that position. `closer` is called if the backend drops the
    /// watcher (too slow, or its source of events broke).
    fn watch(
        &self,
        watched: Watched,
        since: Option<Position>,
        closer: Closer,
    ) -> impl Future<Output = Result<Self::Watch, WatchError>> + Send;

    /// The whole store at one revision, for a backup, while writes go on:
    /// its leases, then its keys read a chunk at a time. A backend that
    /// keeps no copy of its own says what to use instead.
    fn backup(&self) -> impl Future<Output = Result<Backup<Self::Backup>, BackupError>> + Send;

    /// The backend's own figures (revision, keys, watch memory, expiries,
    /// disk), read fresh; the operation counters are [`Counted`]'s.
    fn stats(&self) -> impl Future<Output = Result<Stats, StorageError>> + Send;

    /// The same as this node last knew them, without asking anyone: for
    /// metrics scrapes, which must not wait on the network.
    fn stats_now(&self) -> Stats;

    /// Whether the node can serve, for `/readyz`.
    fn readiness(&self) -> impl Future<Output = Readiness> + Send;

    /// The backend's background work (expiry, its event source, the
    /// watchers' heartbeat), until the server drops it.
    fn run(self) -> impl Future<Output = ()> + Send;

    /// Waits (briefly) until what serving needs runs; says whether it does.
    fn started(&self) -> impl Future<Output = bool> + Send;

    /// Stops the backend: what it holds reaches its storage. Blocking.
    fn close(&self);
}
