//! No backend at all: what the API is built over to write its spec, which
//! depends only on the code. Every call answers that there is no store.

use std::future::Future;
use std::sync::Arc;

use futures_util::stream::{Empty, empty};

use crate::backend::Backend;
use crate::domain::{
    Backup, BackupError, BatchError, Current, Entry, Fence, LeaseError, LeaseId, LeasePage,
    LeaseState, Op, Outcome, Page, Position, PrefixDeleted, RangeError, RangeRequest, Readiness,
    Stats, StorageError, Txn, TxnOutcome, WatchError, Watched,
};
use crate::watch::{Closer, WatchItem};

/// The backend of a service that only describes itself.
#[derive(Clone, Copy)]
pub struct Detached;

const NONE: &str = "no backend: this service only describes the API";

fn unavailable() -> StorageError {
    StorageError::Unavailable(NONE.into())
}

impl Backend for Detached {
    type Watch = Empty<WatchItem>;
    type Backup = Empty<Result<Entry, StorageError>>;

    fn name(&self) -> &'static str {
        "none"
    }

    fn get(&self, _: &str) -> impl Future<Output = Result<Option<Current>, StorageError>> + Send {
        std::future::ready(Err(unavailable()))
    }

    fn apply(&self, _: Op) -> impl Future<Output = Result<Outcome, StorageError>> + Send {
        std::future::ready(Err(unavailable()))
    }

    fn batch(
        &self,
        _: &[Op],
        _: &[Fence],
    ) -> impl Future<Output = Result<Vec<Outcome>, BatchError>> + Send {
        std::future::ready(Err(BatchError::Storage(unavailable())))
    }

    fn txn(
        &self,
        _: &Txn,
        _: &[Fence],
    ) -> impl Future<Output = Result<TxnOutcome, StorageError>> + Send {
        std::future::ready(Err(unavailable()))
    }

    fn grant(
        &self,
        _: Option<LeaseId>,
        _: u64,
        _: Option<Arc<str>>,
    ) -> impl Future<Output = Result<LeaseState, LeaseError>> + Send {
        std::future::ready(Err(LeaseError::Storage(unavailable())))
    }

    fn keep_alive(&self, _: LeaseId) -> impl Future<Output = Result<u64, LeaseError>> + Send {
        std::future::ready(Err(LeaseError::Storage(unavailable())))
    }

    fn lease(
        &self,
        _: LeaseId,
        _: bool,
    ) -> impl Future<Output = Result<LeaseState, LeaseError>> + Send {
        std::future::ready(Err(LeaseError::Storage(unavailable())))
    }

    fn leases(
        &self,
        _: Option<LeaseId>,
        _: usize,
    ) -> impl Future<Output = Result<LeasePage, LeaseError>> + Send {
        std::future::ready(Err(LeaseError::Storage(unavailable())))
    }

    fn revoke(&self, _: LeaseId) -> impl Future<Output = Result<u64, LeaseError>> + Send {
        std::future::ready(Err(LeaseError::Storage(unavailable())))
    }

    fn max_batch_ops(&self) -> Option<usize> {
        None
    }

    fn range(&self, _: &RangeRequest<'_>) -> impl Future<Output = Result<Page, RangeError>> + Send {
        std::future::ready(Err(RangeError::Unavailable(NONE.into())))
    }

    fn delete_prefix(
        &self,
        _: &str,
        _: &[Fence],
    ) -> impl Future<Output = Result<PrefixDeleted, StorageError>> + Send {
        std::future::ready(Err(unavailable()))
    }

    fn watch(
        &self,
        _: Watched,
        _: Option<Position>,
        _: Closer,
    ) -> impl Future<Output = Result<Self::Watch, WatchError>> + Send {
        std::future::ready(Ok(empty()))
    }

    fn backup(&self) -> impl Future<Output = Result<Backup<Self::Backup>, BackupError>> + Send {
        std::future::ready(Err(BackupError::Unsupported(NONE)))
    }

    fn stats(&self) -> impl Future<Output = Result<Stats, StorageError>> + Send {
        std::future::ready(Err(unavailable()))
    }

    fn stats_now(&self) -> Stats {
        Stats::default()
    }

    fn readiness(&self) -> impl Future<Output = Readiness> + Send {
        std::future::ready(Readiness::NotReady(NONE.to_owned()))
    }

    fn run(self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    fn started(&self) -> impl Future<Output = bool> + Send {
        std::future::ready(false)
    }

    fn close(&self) {}
}
