//! A queue of contenders for one name: joining it, waiting to head it,
//! leaving it, and reading it. A lock and an election are the same queue;
//! an election's contenders carry a value.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::CoordError;
use crate::backend::{Backend, Counted};
use crate::domain::{
    Comparison, Entry, Fence, Guard, Key, KeyTest, LeaseError, LeaseId, Lifetime, Operand, Order,
    Outcome, Position, RangeRequest, ReadPoint, StorageError, Txn, TxnOp, TxnResult, Value,
    Watched, queue_key, queue_prefix,
};
use crate::watch::WatchItem;

/// Records per page when a queue is read (a queue is read whole).
const PAGE: usize = 1_000;
const PAGE_BYTES: usize = 4 << 20;

/// A queue as it was at one revision: its contenders in queue order
/// (create revision), the head first.
#[derive(Debug)]
pub struct Queue {
    pub revision: u64,
    pub contenders: Vec<Entry>,
}

impl Queue {
    /// The holder (the leader), if any.
    pub fn head(&self) -> Option<&Entry> {
        self.contenders.first()
    }

    /// The head, if it holds `token`.
    fn held_with(&self, token: u64) -> Option<&Entry> {
        self.head()
            .filter(|head| head.meta().create_revision == token)
    }
}

/// Reads queue `name` whole, at `revision` (the store's now if `None`),
/// page by page at one revision.
pub async fn read<B: Backend>(
    store: &Counted<B>,
    name: &str,
    revision: Option<u64>,
) -> Result<Queue, CoordError> {
    let prefix = queue_prefix(name);
    let mut at = revision.map(ReadPoint::now);
    let mut after: Option<String> = None;
    let mut contenders = Vec::new();
    loop {
        let page = store
            .range(&RangeRequest {
                prefix: &prefix,
                after: after.as_deref(),
                at,
                limit: PAGE,
                max_bytes: PAGE_BYTES,
                keys_only: false,
                count: false,
            })
            .await?;
        at = Some(page.at);
        after = page.entries.last().map(|entry| entry.key().to_owned());
        contenders.extend(page.entries);
        if !page.more {
            break;
        }
    }
    contenders.sort_by_key(|entry| entry.meta().create_revision);
    Ok(Queue {
        revision: at.map_or(0, |at| at.revision),
        contenders,
    })
}

/// What joining a queue asks.
pub struct Joining<'a> {
    pub name: &'a str,
    pub lease: LeaseId,
    /// An election's value (empty for a lock).
    pub value: Value,
    /// The lease was granted for this contender alone: giving up revokes
    /// it (which takes the key with it).
    pub own_lease: bool,
}

/// A contender that heads its queue: the holder of a lock, the leader of
/// an election.
#[derive(Clone, Debug)]
pub struct Acquired {
    pub key: Key,
    pub lease: LeaseId,
    /// The key's create revision: the fencing token, the term.
    pub token: u64,
    /// The store's revision when the contender was seen at the head.
    pub revision: u64,
    pub value: Value,
}

/// Joins the queue and waits, up to `wait`, until the contender heads it;
/// then checks that its lease is still alive (etcd #11456: a lock must not
/// be granted on a lease that has run out). A contender that gives up
/// (the wait ran out, an error, or the caller dropped this future: its
/// client went away) leaves the queue.
pub async fn acquire<B: Backend>(
    store: &Counted<B>,
    joining: Joining<'_>,
    wait: Duration,
) -> Result<Acquired, CoordError> {
    let key: Key = queue_key(joining.name, joining.lease).into();
    let (token, created) = join(store, &key, joining.lease, &joining.value).await?;
    let mut leaving = Leaving {
        store: store.clone(),
        key: key.clone(),
        token,
        lease: joining.own_lease.then_some(joining.lease),
        armed: created || joining.own_lease,
    };
    let waited = tokio::time::timeout(wait, wait_for_head(store, joining.name, &key, token)).await;
    let revision = match waited {
        Ok(Ok(revision)) => revision,
        Ok(Err(err)) => {
            leaving.leave().await;
            return Err(err);
        }
        Err(_) => {
            leaving.leave().await;
            return Err(CoordError::TimedOut);
        }
    };
    match store.lease(joining.lease, false).await {
        Ok(_) => {}
        Err(LeaseError::NotFound(lease)) => {
            leaving.leave().await;
            return Err(CoordError::LeaseNotFound(lease));
        }
        Err(err) => {
            leaving.leave().await;
            return Err(CoordError::Lease(err));
        }
    }
    leaving.armed = false;
    Ok(Acquired {
        key,
        lease: joining.lease,
        token,
        revision,
        value: joining.value,
    })
}

/// Puts the contender's key on its lease unless the lease already has one
/// in this queue (then the contender is that key, as etcd's `Mutex` on
/// the same session). Answers its create revision, and whether this call
/// created it.
async fn join<B: Backend>(
    store: &Counted<B>,
    key: &Key,
    lease: LeaseId,
    value: &Value,
) -> Result<(u64, bool), CoordError> {
    let txn = Txn {
        guards: vec![Guard::Key {
            key: key.clone(),
            test: KeyTest::Absent,
        }],
        then: vec![TxnOp::Put {
            key: key.clone(),
            value: value.clone(),
            lifetime: Lifetime::Lease(lease),
        }],
        otherwise: vec![TxnOp::Get(key.clone())],
    };
    let outcome = store.txn(&txn, &[]).await?;
    match outcome.results.first() {
        Some(TxnResult::One(Outcome::Created { revision })) => Ok((*revision, true)),
        Some(TxnResult::One(Outcome::Found(current))) => Ok((current.meta.create_revision, false)),
        // The key was there for the guard and gone for the read: the
        // transaction saw one state, so this cannot be; say so rather
        // than guess.
        _ => Err(CoordError::Storage(StorageError::Unavailable(
            "the store's answer to joining a queue does not match the request".into(),
        ))),
    }
}

/// Waits until the contender with `token` heads queue `name`, watching only
/// the key just ahead of it (no thundering herd: one delete wakes one
/// waiter). Answers the revision at which it was seen at the head.
async fn wait_for_head<B: Backend>(
    store: &Counted<B>,
    name: &str,
    key: &Key,
    token: u64,
) -> Result<u64, CoordError> {
    loop {
        let queue = read(store, name, None).await?;
        if !queue
            .contenders
            .iter()
            .any(|entry| entry.meta().create_revision == token)
        {
            return Err(CoordError::Lost {
                key: key.to_string(),
            });
        }
        let ahead = queue
            .contenders
            .iter()
            .take_while(|entry| entry.meta().create_revision < token)
            .last();
        match ahead {
            None => return Ok(queue.revision),
            Some(ahead) => gone(store, ahead, queue.revision).await?,
        }
    }
}

/// Waits until `ahead` (as it was at `revision`) is deleted, or replaced by
/// a key of the same name created later.
async fn gone<B: Backend>(
    store: &Counted<B>,
    ahead: &Entry,
    revision: u64,
) -> Result<(), CoordError> {
    let created = ahead.meta().create_revision;
    let watched = Watched {
        keys: vec![Key::from(ahead.key())],
        prefixes: Vec::new(),
    };
    let mut stream = store
        .watch(watched, Some(Position::after(revision)), Arc::new(()))
        .await?;
    while let Some(item) = stream.next().await {
        match item {
            WatchItem::Event(delivery) => {
                let meta = delivery.event.meta();
                if meta.is_none_or(|meta| meta.create_revision != created) {
                    return Ok(());
                }
            }
            // Read the queue again (and watch again if need be).
            WatchItem::Dropped => return Ok(()),
            WatchItem::Synced(_) | WatchItem::Idle => {}
        }
    }
    Ok(())
}

/// A contender on its way: unless disarmed, it leaves the queue (deletes
/// its key if it is still the same one, or revokes a lease of its own).
struct Leaving<B: Backend> {
    store: Counted<B>,
    key: Key,
    token: u64,
    lease: Option<LeaseId>,
    armed: bool,
}

impl<B: Backend> Leaving<B> {
    async fn leave(&mut self) {
        if std::mem::take(&mut self.armed) {
            leave(&self.store, &self.key, self.token, self.lease).await;
        }
    }
}

impl<B: Backend> Drop for Leaving<B> {
    /// The waiting request was dropped (its client went away): leave in a
    /// task of its own.
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key, token, lease) =
                (self.store.clone(), self.key.clone(), self.token, self.lease);
            runtime.spawn(async move { leave(&store, &key, token, lease).await });
        }
    }
}

/// Deletes a contender's key (if it is still the one created at `token`),
/// or revokes its own lease. Best effort: a failure leaves the key to its
/// lease, which ends it in time.
async fn leave<B: Backend>(store: &Counted<B>, key: &Key, token: u64, lease: Option<LeaseId>) {
    let result = match lease {
        Some(lease) => store
            .revoke(lease)
            .await
            .map(drop)
            .map_err(|err| match err {
                LeaseError::Storage(err) => err,
                other => StorageError::Unavailable(format!("{other:?}").into()),
            }),
        None => {
            let txn = Txn {
                guards: vec![created_at(key, token)],
                then: vec![TxnOp::Delete(key.clone())],
                otherwise: Vec::new(),
            };
            store.txn(&txn, &[]).await.map(drop)
        }
    };
    if let Err(err) = result {
        tracing::warn!(%err, key = %key, "a contender could not leave its queue; its lease will end it");
    }
}

/// The guard: `key` is the one created at `token`.
fn created_at(key: &Key, token: u64) -> Guard {
    Guard::Key {
        key: key.clone(),
        test: KeyTest::Compare(Comparison {
            order: Order::Equal,
            operand: Operand::CreateRevision(token),
        }),
    }
}

/// Releases lock (or resigns election) `name` held with `token`: deletes
/// the head's key, fenced on the token. Answers the store's revision after.
pub async fn release<B: Backend>(
    store: &Counted<B>,
    name: &str,
    token: u64,
) -> Result<u64, CoordError> {
    let fence = Fence {
        name: name.into(),
        token,
    };
    let queue = read(store, name, None).await?;
    let Some(head) = queue.held_with(token) else {
        return Err(StorageError::FenceLost(fence).into());
    };
    let txn = Txn {
        guards: Vec::new(),
        then: vec![TxnOp::Delete(Key::from(head.key()))],
        otherwise: Vec::new(),
    };
    Ok(store.txn(&txn, &[fence]).await?.revision)
}

/// Sets the value of election `name`'s leader, if it still leads with
/// `term` (fenced on it). Answers the store's revision after.
pub async fn proclaim<B: Backend>(
    store: &Counted<B>,
    name: &str,
    term: u64,
    value: Value,
) -> Result<u64, CoordError> {
    let fence = Fence {
        name: name.into(),
        token: term,
    };
    let queue = read(store, name, None).await?;
    let Some(head) = queue.held_with(term) else {
        return Err(StorageError::FenceLost(fence).into());
    };
    let lifetime = head.meta().lease.map_or(Lifetime::Forever, Lifetime::Lease);
    let txn = Txn {
        guards: Vec::new(),
        then: vec![TxnOp::Put {
            key: Key::from(head.key()),
            value,
            lifetime,
        }],
        otherwise: Vec::new(),
    };
    Ok(store.txn(&txn, &[fence]).await?.revision)
}
