//! The commit path: the one place every write is planned and applied.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use tokio::sync::oneshot;

use super::expiry::ExpiryQueue;
use super::index::Index;
use super::lease_table::{LeaseRecord, Leases};
use super::{KeyHash, Locked};
use crate::domain::{Entry, Event, EventKind, Key, LeaseId, Lifetime, Meta, StorageError, Value};
use crate::watch::{History, Watchers};

/// What a planned write does to its key.
pub(super) enum Change {
    /// The entry the key will hold (revisions and deadline worked out).
    Put(Entry),
    Delete,
    Expire,
}

/// What a caller asks the commit path to write.
pub(super) enum Planned {
    Put {
        value: Value,
        lifetime: Lifetime,
        /// The key's revisions (and lease) before the write, as planning
        /// saw them.
        previous: Option<Meta>,
    },
    Delete,
    Expire,
}

/// One write, planned: it has its revision but may not be applied yet.
pub(super) struct Write {
    pub(super) key: Key,
    pub(super) hash: KeyHash,
    pub(super) change: Change,
    pub(super) revision: u64,
    /// Its place among its revision's writes, when there are several.
    pub(super) part: Option<u32>,
}

/// The revision a planned write takes, shared by every write of one run.
#[derive(Clone, Copy)]
pub(super) struct At {
    pub(super) revision: u64,
    pub(super) part: Option<u32>,
}

/// The state a planned but unapplied write leaves its key in (durable mode).
pub(super) struct Pending {
    pub(super) revision: u64,
    pub(super) entry: Option<Entry>,
}

/// Told when a group of writes is on disk and applied, or failed.
pub(super) type Ticket = oneshot::Receiver<Result<(), StorageError>>;

/// Writes planned since the flusher last took a group, and who waits on
/// them. A waiter without writes (a read that saw planned state) is answered
/// with the group, so it never reports state that then fails to commit.
#[derive(Default)]
pub(super) struct Group {
    pub(super) writes: Vec<Write>,
    /// Leases granted (`Some`) and ended (`None`), in order.
    pub(super) leases: Vec<(LeaseId, Option<LeaseRecord>)>,
    pub(super) waiters: Vec<oneshot::Sender<Result<(), StorageError>>>,
}

impl Group {
    pub(super) fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.leases.is_empty() && self.waiters.is_empty()
    }
}

/// `--fsync interval|never`: writes are applied and answered at once, and
/// the latest state of each key they touched waits here for the periodic
/// commit.
#[derive(Default)]
pub(super) struct Deferred {
    pub(super) keys: HashMap<Key, Option<Entry>>,
    /// Leases granted (`Some`) or ended (`None`) since.
    pub(super) leases: HashMap<LeaseId, Option<LeaseRecord>>,
    pub(super) revision: u64,
}

/// When a planned write is applied, and what waits for the disk.
pub(super) enum Mode {
    /// No data dir: a write is applied as it is planned.
    InMemory,
    /// `--fsync always`: planned writes wait in a [`Group`] for the disk
    /// before they are applied.
    Grouped,
    /// `--fsync interval|never`: applied at once; the keys they changed
    /// wait here for the periodic commit.
    Deferred(Deferred),
}

impl Mode {
    pub(super) fn is_grouped(&self) -> bool {
        matches!(self, Self::Grouped)
    }

    pub(super) fn deferred(&self) -> Option<&Deferred> {
        match self {
            Self::Deferred(deferred) => Some(deferred),
            Self::InMemory | Self::Grouped => None,
        }
    }

    pub(super) fn deferred_mut(&mut self) -> Option<&mut Deferred> {
        match self {
            Self::Deferred(deferred) => Some(deferred),
            Self::InMemory | Self::Grouped => None,
        }
    }
}

/// How many keys may wait for a periodic commit before one runs early, to
/// bound the memory they hold.
pub(super) const MAX_DEFERRED_KEYS: usize = 100_000;

/// The key's state as planning sees it: planned writes first, then the map.
pub(super) fn view<'a>(
    pending: &'a HashMap<Key, Pending>,
    locked: &'a Locked<'_>,
    key: &str,
    hash: KeyHash,
) -> Option<&'a Entry> {
    // In memory (and mostly with a data dir) nothing is pending: skip
    // hashing the key for `pending` on the hot path.
    if pending.is_empty() {
        return locked.get(key, hash);
    }
    match pending.get(key) {
        Some(pending) => pending.entry.as_ref(),
        None => locked.get(key, hash),
    }
}

/// Everything writes must change together, behind the one commit lock: the
/// revision counter, the history, the expiry queue and the watcher registry.
///
/// One lock for all writes is what makes commit order, revision order and
/// event order the same, even for writers on different keys. It is a
/// blocking `parking_lot` mutex (fair, no poisoning) because a commit never
/// awaits: it is a few map operations and non-blocking channel sends.
///
/// A write is planned ([`Committer::write`]: checked, given its revision)
/// and then applied ([`Committer::commit`]: map, expiry queue, history,
/// watchers). In memory the two happen together. With a data dir, planned
/// writes queue up in a [`Group`] that the flusher thread writes to disk as
/// one transaction while new requests plan against [`Pending`] state; only
/// then are they applied and answered. So readers and watchers never see a
/// write the disk might still lose, and concurrent writers share one fsync.
pub(super) struct Committer {
    /// The revision of the last applied write.
    pub(super) revision: u64,
    /// The revision of the last planned write (`revision` when none waits).
    pub(super) next: u64,
    pub(super) pending: HashMap<Key, Pending>,
    pub(super) group: Group,
    pub(super) mode: Mode,
    pub(super) closing: bool,
    /// Set once the data dir's file is found removed or replaced: what
    /// became of it. Every later write is refused.
    pub(super) lost: Option<Arc<str>>,
    pub(super) history: History,
    /// The keys in byte order, for listings; changed with the map.
    pub(super) index: Index,
    pub(super) expiry: ExpiryQueue,
    pub(super) leases: Leases,
    pub(super) watchers: Watchers,
    /// Set when a commit adds a deadline earlier than any before it.
    pub(super) wake_sweeper: bool,
    pub(super) expired: u64,
}

impl Committer {
    /// Why no write may be planned now, if none may.
    pub(super) fn refusing(&self) -> Result<(), StorageError> {
        if self.closing {
            return Err(StorageError::ShuttingDown);
        }
        match &self.lost {
            Some(lost) => Err(StorageError::DataDirLost(lost.clone())),
            None => Ok(()),
        }
    }

    /// The revision the next run of writes takes (all of them).
    pub(super) fn next_revision(&self) -> u64 {
        self.next + 1
    }

    /// The one place a write is planned, at a revision from
    /// [`Committer::next_revision`]: in memory it is applied at once; with
    /// a data dir it joins the group.
    pub(super) fn write(
        &mut self,
        locked: &mut Locked<'_>,
        (key, hash): (&Key, KeyHash),
        planned: Planned,
        now: Instant,
        at: At,
    ) {
        debug_assert!(at.revision == self.next || at.revision == self.next + 1);
        self.next = at.revision;
        let At { revision, part } = at;
        let (change, from) = match planned {
            Planned::Put {
                value,
                lifetime,
                previous,
            } => {
                let (deadline, lease) = match lifetime {
                    Lifetime::Forever => (None, None),
                    // A deadline past what `Instant` can hold is no deadline.
                    Lifetime::Ttl(ttl) => (now.checked_add(ttl), None),
                    Lifetime::Lease(lease) => (None, Some(lease)),
                };
                let meta = match previous {
                    Some(previous) => previous.rewritten(revision),
                    None => Meta::created(revision),
                };
                let entry = Entry::new(key, value.as_bytes(), meta.on_lease(lease), deadline);
                (Change::Put(entry), previous.and_then(|meta| meta.lease))
            }
            Planned::Delete | Planned::Expire => {
                // Only a key on a lease must leave it: no lookup otherwise.
                let from = if self.leases.is_empty() {
                    None
                } else {
                    view(&self.pending, locked, key, hash).and_then(Entry::lease)
                };
                let change = match planned {
                    Planned::Expire => Change::Expire,
                    _ => Change::Delete,
                };
                (change, from)
            }
        };
        let to = match &change {
            Change::Put(entry) => entry.lease(),
            Change::Delete | Change::Expire => None,
        };
        self.leases.moved(key, from, to);
        let write = Write {
            key: key.clone(),
            hash,
            change,
            revision,
            part,
        };
        if self.mode.is_grouped() {
            let entry = match &write.change {
                Change::Put(entry) => Some(entry.clone()),
                Change::Delete | Change::Expire => None,
            };
            self.pending
                .insert(key.clone(), Pending { revision, entry });
            self.group.writes.push(write);
        } else {
            self.commit(locked, write);
        }
    }

    /// Plans a key's expiry, at a revision of its own (as etcd's lease
    /// expiry of a key with its own lease).
    pub(super) fn expire(&mut self, locked: &mut Locked<'_>, key: (&Key, KeyHash), now: Instant) {
        let at = At {
            revision: self.next_revision(),
            part: None,
        };
        self.write(locked, key, Planned::Expire, now, at);
    }

    /// Refuses a write that names a lease that does not exist (reading
    /// the clock only for a write that names one).
    pub(super) fn leases_exist(
        &self,
        leases: impl Iterator<Item = LeaseId>,
    ) -> Result<(), StorageError> {
        let mut leases = leases.peekable();
        if leases.peek().is_none() {
            return Ok(());
        }
        let now = Instant::now();
        match leases.find(|lease| self.leases.alive(*lease, now).is_none()) {
            Some(missing) => Err(StorageError::LeaseNotFound(missing)),
            None => Ok(()),
        }
    }

    /// Keeps a lease's grant (`Some`) or end (`None`) for the data dir, as
    /// the mode says.
    pub(super) fn record_lease(&mut self, id: LeaseId, record: Option<LeaseRecord>) {
        match &mut self.mode {
            Mode::InMemory => {}
            Mode::Grouped => self.group.leases.push((id, record)),
            Mode::Deferred(deferred) => {
                deferred.leases.insert(id, record);
            }
        }
    }

    /// Waits for the group being planned (durable mode).
    pub(super) fn ticket(&mut self) -> Ticket {
        let (sender, receiver) = oneshot::channel();
        self.group.waiters.push(sender);
        receiver
    }

    /// The one place a write is applied, in revision order.
    pub(super) fn commit(&mut self, locked: &mut Locked<'_>, write: Write) {
        let Write {
            key,
            hash,
            change,
            revision,
            part,
        } = write;
        debug_assert!(
            revision == self.revision + 1 || (revision == self.revision && part.is_some()),
            "writes apply in revision order"
        );
        self.revision = revision;
        if let Some(deferred) = self.mode.deferred_mut() {
            let entry = match &change {
                Change::Put(entry) => Some(entry.clone()),
                Change::Delete | Change::Expire => None,
            };
            deferred.keys.insert(key.clone(), entry);
            deferred.revision = revision;
        }
        let mut event = match change {
            Change::Put(entry) => {
                if let Some(deadline) = entry.deadline() {
                    self.wake_sweeper |= self.expiry.insert(deadline, key.clone());
                }
                self.index.put(entry.clone());
                let previous = locked.insert(hash, entry.clone());
                Event::put(revision, entry, previous)
            }
            Change::Delete | Change::Expire => {
                let kind = if matches!(change, Change::Expire) {
                    self.expired += 1;
                    EventKind::Expire
                } else {
                    EventKind::Delete
                };
                let previous = locked.remove(&key, hash);
                self.index.remove(&key);
                Event::removed(revision, kind, key.clone(), previous)
            }
        };
        event.part = part;
        if let Some(previous) = event.prev().and_then(Entry::deadline) {
            self.expiry.remove(previous, &key);
        }
        self.watchers.publish(&event);
        self.history.push(event);
    }
}
