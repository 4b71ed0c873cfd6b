//! A queue of contenders for one name: joining it, waiting to head it,
//! leaving it, and reading it. A lock and an election are the same queue;
//! an election's contenders carry a value.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::CoordError;
use crate::backend::{Backend, Counted};
use crate::domain::{
    Comparison, Entry, Fence, Guard, Key, KeyTest, LeaseError, LeaseId, Lifetime, Operand, Order,
    Outcome, Position, RangeRequest, ReadPoint, StorageError, Txn, TxnOp, TxnResult, Value,
    WatchError, Watched, queue_key, queue_prefix,
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

/// The lease a contender joins on.
#[derive(Clone, Debug)]
pub enum LeaseChoice {
    /// The caller's: it stays when the contender leaves.
    Given(LeaseId),
    /// One granted for this contender alone (`ttl` seconds, granted by
    /// `owner`): giving up revokes it, which takes the key with it.
    Grant { ttl: u64, owner: Option<Arc<str>> },
}

/// What joining a queue asks.
pub struct Joining<'a> {
    pub name: &'a str,
    pub lease: LeaseChoice,
    /// An election's value (empty for a lock).
    pub value: Value,
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

/// A contender in line: its key, token and lease, and what leaving takes.
struct Joined {
    key: Key,
    token: u64,
    lease: LeaseId,
    /// The lease was granted for it: leaving revokes the lease.
    own_lease: bool,
    /// This request put the key (rather than finding it there, put by an
    /// earlier request on the same lease): leaving deletes it.
    created: bool,
}

impl Joined {
    /// Leaves the line, if this request is what put the contender there.
    async fn leave<B: Backend>(&self, store: &Counted<B>) {
        if self.own_lease {
            leave(store, Exit::Revoke(self.lease)).await;
        } else if self.created {
            let (key, token) = (self.key.clone(), self.token);
            leave(store, Exit::Delete { key, token }).await;
        }
    }
}

/// Joins the queue and waits, up to `wait`, until the contender heads it;
/// then checks that its lease is still alive (etcd #11456: a lock must not
/// be granted on a lease that has run out). A contender that gives up
/// (the wait ran out, an error, or the caller dropped this future: its
/// client went away) leaves the queue. The wait bounds only the time
/// spent behind others: with `wait` 0 a free lock is still acquired.
pub async fn acquire<B: Backend>(
    store: &Counted<B>,
    joining: Joining<'_>,
    wait: Duration,
) -> Result<Acquired, CoordError> {
    let deadline = Instant::now() + wait;
    // Joining (a grant, a transaction) runs in a task of its own: if the
    // request is dropped meanwhile, the task still finishes, finds nobody
    // to answer, and leaves, so no contender is left in line unseen.
    let (answer, joined) = oneshot::channel();
    {
        let (store, name, value) = (
            store.clone(),
            joining.name.to_owned(),
            joining.value.clone(),
        );
        let lease = joining.lease;
        tokio::spawn(async move {
            let result = join(&store, &name, lease, &value).await;
            if let Err(Ok(joined)) = answer.send(result) {
                joined.leave(&store).await;
            }
        });
    }
    let joined = joined.await.map_err(|_| {
        CoordError::Storage(StorageError::Unavailable(
            "joining the line ended without an answer".into(),
        ))
    })??;
    let (key, token, lease) = (joined.key.clone(), joined.token, joined.lease);
    let mut leaving = Leaving {
        store: store.clone(),
        joined: Some(joined),
    };
    let revision = match wait_for_head(store, joining.name, &key, token, deadline).await {
        Ok(revision) => revision,
        Err(err) => {
            leaving.leave().await;
            return Err(err);
        }
    };
    match store.lease(lease, false).await {
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
    leaving.joined = None;
    Ok(Acquired {
        key,
        lease,
        token,
        revision,
        value: joining.value,
    })
}

/// Gets the contender's lease (granting one if asked), then joins: puts
/// the contender's key on the lease unless the lease already has one in
/// this queue (then the contender is that key, as etcd's `Mutex` on the
/// same session, and an election's value is set to the new one, as etcd's
/// `Campaign` does). A grant whose join fails is revoked.
async fn join<B: Backend>(
    store: &Counted<B>,
    name: &str,
    lease: LeaseChoice,
    value: &Value,
) -> Result<Joined, CoordError> {
    let (lease, own_lease) = match lease {
        LeaseChoice::Given(lease) => (lease, false),
        LeaseChoice::Grant { ttl, owner } => {
            let granted = store
                .grant(None, ttl, owner)
                .await
                .map_err(CoordError::Lease)?;
            (granted.id, true)
        }
    };
    let key: Key = queue_key(name, lease).into();
    let joined = put_contender(store, &key, lease, value).await;
    match joined {
        Ok((token, created)) => Ok(Joined {
            key,
            token,
            lease,
            own_lease,
            created,
        }),
        Err(err) => {
            if own_lease {
                leave(store, Exit::Revoke(lease)).await;
            }
            Err(err)
        }
    }
}

/// The transaction that puts a contender's key (or finds it); answers its
/// create revision and whether it was put now.
async fn put_contender<B: Backend>(
    store: &Counted<B>,
    key: &Key,
    lease: LeaseId,
    value: &Value,
) -> Result<(u64, bool), CoordError> {
    let put = TxnOp::Put {
        key: key.clone(),
        value: value.clone(),
        lifetime: Lifetime::Lease(lease),
    };
    let txn = Txn {
        guards: vec![Guard::Key {
            key: key.clone(),
            test: KeyTest::Absent,
        }],
        then: vec![put.clone()],
        otherwise: vec![TxnOp::Get(key.clone())],
    };
    let outcome = store.txn(&txn, &[]).await?;
    let current = match outcome.results.first() {
        Some(TxnResult::One(Outcome::Created { revision })) => return Ok((*revision, true)),
        Some(TxnResult::One(Outcome::Found(current))) => current,
        // The key was there for the guard and gone for the read: the
        // transaction saw one state, so this cannot be; say so rather
        // than guess.
        _ => {
            return Err(CoordError::Storage(StorageError::Unavailable(
                "the store's answer to joining a queue does not match the request".into(),
            )));
        }
    };
    let token = current.meta.create_revision;
    if current.value != *value {
        let proclaim = Txn {
            guards: vec![created_at(key, token)],
            then: vec![put],
            otherwise: Vec::new(),
        };
        if !store.txn(&proclaim, &[]).await?.succeeded {
            return Err(CoordError::Lost {
                key: key.to_string(),
            });
        }
    }
    Ok((token, false))
}

/// Waits until the contender with `token` heads queue `name`, watching only
/// the key just ahead of it (no thundering herd: one delete wakes one
/// waiter). Answers the revision at which it was seen at the head.
async fn wait_for_head<B: Backend>(
    store: &Counted<B>,
    name: &str,
    key: &Key,
    token: u64,
    deadline: Instant,
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
        let Some(ahead) = ahead else {
            return Ok(queue.revision);
        };
        match tokio::time::timeout_at(deadline, gone(store, ahead, queue.revision)).await {
            Ok(gone) => gone?,
            Err(_) => return Err(CoordError::TimedOut),
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
    let mut stream = match store
        .watch(watched, Some(Position::after(revision)), Arc::new(()))
        .await
    {
        Ok(stream) => stream,
        // The history moved past the read (etcd compacted it): read the
        // line again.
        Err(WatchError::Compacted { .. } | WatchError::Unknown { .. }) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
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

/// A contender on its way: unless disarmed (`joined` taken), it leaves
/// the line, from a task of its own if the request is dropped.
struct Leaving<B: Backend> {
    store: Counted<B>,
    joined: Option<Joined>,
}

impl<B: Backend> Leaving<B> {
    async fn leave(&mut self) {
        if let Some(joined) = self.joined.take() {
            joined.leave(&self.store).await;
        }
    }
}

impl<B: Backend> Drop for Leaving<B> {
    /// The waiting request was dropped (its client went away, or the
    /// server is stopping): leave in a task of its own.
    fn drop(&mut self) {
        let Some(joined) = self.joined.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            runtime.spawn(async move { joined.leave(&store).await });
        }
    }
}

/// How a contender leaves the line.
enum Exit {
    /// Its lease was granted for it: revoking it takes the key too.
    Revoke(LeaseId),
    /// Delete its key, if it is still the one created at `token`.
    Delete { key: Key, token: u64 },
}

/// Leaves the line. Best effort: a failure leaves the key to its lease,
/// which ends it in time.
async fn leave<B: Backend>(store: &Counted<B>, exit: Exit) {
    let result = match &exit {
        Exit::Revoke(lease) => match store.revoke(*lease).await {
            Ok(_) | Err(LeaseError::NotFound(_)) => Ok(()),
            Err(LeaseError::Storage(err)) => Err(err),
            Err(other) => Err(StorageError::Unavailable(format!("{other:?}").into())),
        },
        Exit::Delete { key, token } => {
            let txn = Txn {
                guards: vec![created_at(key, *token)],
                then: vec![TxnOp::Delete(key.clone())],
                otherwise: Vec::new(),
            };
            store.txn(&txn, &[]).await.map(drop)
        }
    };
    if let Err(err) = result {
        tracing::warn!(%err, "a contender could not leave its line; its lease will end it");
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
