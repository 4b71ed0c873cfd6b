//! The seam between the API and the store behind it: the in-process store
//! (`--backend memory`, [`crate::store`]) or an etcd cluster (`--backend
//! etcd`, [`crate::etcd`]). The API layer calls only this, so it cannot tell
//! them apart, and the spec is generated with neither.
//!
//! An enum rather than a trait object: two backends, known at build time,
//! and calls that stay plain `async fn`s (no boxed future per request on
//! the memory store's hot path).

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

#[cfg(feature = "etcd")]
use crate::etcd::EtcdStore;
use crate::store::{
    BatchError, Closer, Current, Op, Outcome, Page, Position, PrefixDeleted, RangeError,
    RangeRequest, Stats, StorageError, Store, WatchError, WatchItem, Watched,
};

/// The store the API serves. Cloning it gives another handle to the same
/// store.
#[derive(Clone)]
pub enum Backend {
    Memory(Store),
    #[cfg(feature = "etcd")]
    Etcd(EtcdStore),
}

/// Whether the node can serve, for `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

impl Backend {
    /// Which backend this is, as `/status` names it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            #[cfg(feature = "etcd")]
            Self::Etcd(_) => "etcd",
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Current>, StorageError> {
        match self {
            Self::Memory(store) => Ok(store.get(key).await),
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.get(key).await,
        }
    }

    pub async fn apply(&self, op: Op) -> Result<Outcome, StorageError> {
        match self {
            Self::Memory(store) => store.apply(op).await,
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.apply(op).await,
        }
    }

    pub async fn batch(&self, ops: &[Op]) -> Result<Vec<Outcome>, BatchError> {
        match self {
            Self::Memory(store) => store.batch(ops).await,
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.batch(ops).await,
        }
    }

    /// Most operations one batch may carry on this backend (etcd's
    /// `--max-txn-ops`); `None`: no limit beyond `--max-batch-ops`.
    pub fn max_batch_ops(&self) -> Option<usize> {
        match self {
            Self::Memory(_) => None,
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => Some(store.max_txn_ops()),
        }
    }

    pub async fn range(&self, request: &RangeRequest<'_>) -> Result<Page, RangeError> {
        match self {
            Self::Memory(store) => store.range(request).await,
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.range(request).await,
        }
    }

    pub async fn delete_prefix(&self, prefix: &str) -> Result<PrefixDeleted, StorageError> {
        match self {
            Self::Memory(store) => store.delete_prefix(prefix).await,
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.delete_prefix(prefix).await,
        }
    }

    pub async fn watch(
        &self,
        watched: Watched,
        since: Option<Position>,
        closer: Closer,
    ) -> Result<BoxStream<'static, WatchItem>, WatchError> {
        match self {
            Self::Memory(store) => Ok(store.watch(watched, since, closer).await?.boxed()),
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.watch(watched, since, closer).await,
        }
    }

    /// The counters, with the revision and key count read fresh (from etcd
    /// on that backend).
    pub async fn stats(&self) -> Result<Stats, StorageError> {
        match self {
            Self::Memory(store) => Ok(store.stats()),
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.stats().await,
        }
    }

    /// The counters as this node last knew them, without asking anyone:
    /// for metrics scrapes, which must not wait on etcd.
    pub fn stats_now(&self) -> Stats {
        match self {
            Self::Memory(store) => store.stats(),
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.stats_now(),
        }
    }

    pub async fn readiness(&self) -> Readiness {
        match self {
            Self::Memory(store) => match store.refusing() {
                None => Readiness::Ready,
                Some(StorageError::ShuttingDown) => {
                    Readiness::NotReady("the server is stopping".to_owned())
                }
                Some(refused) => Readiness::NotReady(refused.to_string()),
            },
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.readiness().await,
        }
    }

    /// Runs the backend's background work (the memory store's expiry
    /// sweeper; etcd's one watch; the watchers' heartbeat on both) until
    /// the server drops it.
    pub async fn run(self) {
        match self {
            Self::Memory(store) => {
                tokio::join!(store.clone().run_expiry(), store.run_heartbeat());
            }
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => {
                tokio::join!(store.clone().run_watch(), store.run_heartbeat());
            }
        }
    }

    /// Waits (briefly) until the background work that serving needs runs:
    /// etcd's watch. Says whether it does.
    pub async fn started(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.started().await,
        }
    }

    /// Stops the store: with a data dir, the last writes reach the disk.
    /// Blocking.
    pub fn close(&self) {
        match self {
            Self::Memory(store) => store.close(),
            #[cfg(feature = "etcd")]
            Self::Etcd(_) => {}
        }
    }
}
