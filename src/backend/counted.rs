//! Every call the API makes, counted once for every backend.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};

use super::Backend;
use crate::domain::{
    Action, Backup, BackupError, BatchError, Current, Fence, LeaseError, LeaseId, LeasePage,
    LeaseState, Op, Outcome, Page, Position, PrefixDeleted, RangeError, RangeRequest, Readiness,
    Stats, StorageError, Txn, TxnOutcome, WatchError, Watched,
};
use crate::watch::{Closer, WatchItem};

/// The operation counters of `/status`, kept with relaxed atomics: they
/// are statistics, not synchronisation.
#[derive(Debug, Default)]
pub struct Counters {
    gets: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    cas: AtomicU64,
    cas_succeeded: AtomicU64,
    cas_failed: AtomicU64,
    batches: AtomicU64,
    open_watches: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What an operation counts as.
#[derive(Clone, Copy)]
enum Kind {
    Get,
    Put,
    Cas,
    Delete,
}

impl Kind {
    fn of(op: &Op) -> Self {
        match (&op.action, op.condition.is_cas()) {
            (Action::Get, _) => Self::Get,
            (Action::Put { .. }, true) => Self::Cas,
            (Action::Put { .. }, false) => Self::Put,
            (Action::Delete, _) => Self::Delete,
        }
    }
}

impl Counters {
    /// Counts one operation by what it was and how it went.
    fn count(&self, kind: Kind, outcome: &Outcome) {
        match kind {
            Kind::Get => bump(&self.gets),
            Kind::Cas => {
                bump(&self.cas);
                match outcome {
                    Outcome::Rejected { .. } => bump(&self.cas_failed),
                    _ => bump(&self.cas_succeeded),
                }
            }
            Kind::Put => bump(&self.puts),
            Kind::Delete => bump(&self.deletes),
        }
    }

    /// `stats` with the counters filled in.
    fn fill(&self, stats: Stats) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            gets: load(&self.gets),
            puts: load(&self.puts),
            deletes: load(&self.deletes),
            cas: load(&self.cas),
            cas_succeeded: load(&self.cas_succeeded),
            cas_failed: load(&self.cas_failed),
            batches: load(&self.batches),
            open_watches: load(&self.open_watches),
            ..stats
        }
    }
}

/// A backend whose every call is counted: what the API holds. Cloning it
/// gives another handle to the same backend and counters.
#[derive(Clone)]
pub struct Counted<B> {
    backend: B,
    counters: Arc<Counters>,
}

impl<B: Backend> Counted<B> {
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            counters: Arc::default(),
        }
    }

    /// The backend itself, for the server's lifecycle calls.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn name(&self) -> &'static str {
        self.backend.name()
    }

    pub async fn get(&self, key: &str) -> Result<Option<Current>, StorageError> {
        bump(&self.counters.gets);
        self.backend.get(key).await
    }

    pub async fn apply(&self, op: Op) -> Result<Outcome, StorageError> {
        let kind = Kind::of(&op);
        let outcome = self.backend.apply(op).await?;
        self.counters.count(kind, &outcome);
        Ok(outcome)
    }

    pub async fn batch(&self, ops: &[Op], fences: &[Fence]) -> Result<Vec<Outcome>, BatchError> {
        bump(&self.counters.batches);
        let result = self.backend.batch(ops, fences).await;
        if let Ok(outcomes) | Err(BatchError::Rejected(outcomes)) = &result {
            for (op, outcome) in ops.iter().zip(outcomes) {
                self.counters.count(Kind::of(op), outcome);
            }
        }
        result
    }

    /// Not counted by kind: a transaction's requests are counted by the
    /// metrics, per operation and status, as every request is.
    pub async fn txn(&self, txn: &Txn, fences: &[Fence]) -> Result<TxnOutcome, StorageError> {
        self.backend.txn(txn, fences).await
    }

    pub async fn grant(
        &self,
        id: Option<LeaseId>,
        ttl: u64,
        owner: Option<Arc<str>>,
    ) -> Result<LeaseState, LeaseError> {
        self.backend.grant(id, ttl, owner).await
    }

    pub async fn keep_alive(&self, id: LeaseId) -> Result<u64, LeaseError> {
        self.backend.keep_alive(id).await
    }

    pub async fn lease(&self, id: LeaseId, keys: bool) -> Result<LeaseState, LeaseError> {
        self.backend.lease(id, keys).await
    }

    pub async fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> Result<LeasePage, LeaseError> {
        self.backend.leases(after, limit).await
    }

    pub async fn revoke(&self, id: LeaseId) -> Result<u64, LeaseError> {
        self.backend.revoke(id).await
    }

    pub fn max_batch_ops(&self) -> Option<usize> {
        self.backend.max_batch_ops()
    }

    pub async fn range(&self, request: &RangeRequest<'_>) -> Result<Page, RangeError> {
        self.backend.range(request).await
    }

    pub async fn delete_prefix(
        &self,
        prefix: &str,
        fences: &[Fence],
    ) -> Result<PrefixDeleted, StorageError> {
        let deleted = self.backend.delete_prefix(prefix, fences).await?;
        self.counters
            .deletes
            .fetch_add(deleted.deleted, Ordering::Relaxed);
        Ok(deleted)
    }

    pub async fn watch(
        &self,
        watched: Watched,
        since: Option<Position>,
        closer: Closer,
    ) -> Result<Open<B::Watch>, WatchError> {
        let stream = self.backend.watch(watched, since, closer).await?;
        bump(&self.counters.open_watches);
        Ok(Open {
            stream,
            counters: self.counters.clone(),
        })
    }

    pub async fn backup(&self) -> Result<Backup<B::Backup>, BackupError> {
        self.backend.backup().await
    }

    /// The figures of `/status`, read fresh.
    pub async fn stats(&self) -> Result<Stats, StorageError> {
        Ok(self.counters.fill(self.backend.stats().await?))
    }

    /// The figures as this node knows them now (for metrics).
    pub fn stats_now(&self) -> Stats {
        self.counters.fill(self.backend.stats_now())
    }

    pub async fn readiness(&self) -> Readiness {
        self.backend.readiness().await
    }
}

/// An open watch stream, counted until it is dropped.
pub struct Open<W> {
    stream: W,
    counters: Arc<Counters>,
}

impl<W: Stream<Item = WatchItem> + Unpin> Stream for Open<W> {
    type Item = WatchItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchItem>> {
        self.stream.poll_next_unpin(cx)
    }
}

impl<W> Drop for Open<W> {
    fn drop(&mut self) {
        self.counters.open_watches.fetch_sub(1, Ordering::Relaxed);
    }
}
