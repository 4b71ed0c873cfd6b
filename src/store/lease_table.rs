//! The memory engine's leases: which exist, when each runs out, and which
//! keys are on each, kept by the commit path beside the keys.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Key;
use crate::domain::LeaseId;

/// What a lease is, as the data dir keeps it: its TTL and who granted it.
/// (Not when it runs out: a restart gives every lease its full TTL.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Seconds: what a grant and each keep-alive give it.
    pub ttl: u64,
    /// The token that granted it; `None` without an auth file.
    pub owner: Option<Arc<str>>,
}

/// A lease in the table.
pub(super) struct Live {
    pub(super) record: LeaseRecord,
    pub(super) deadline: Instant,
    /// Its keys: a set, so that attaching or detaching one costs the same
    /// whatever the lease holds (etcd #15993 is the opposite).
    pub(super) keys: HashSet<Key>,
}

/// The leases, as planning sees them: a grant, a revoke and a key's
/// attachment take effect when they are planned (with `--fsync always` a
/// group that fails is undone by [`Leases::restore`]).
#[derive(Default)]
pub(super) struct Leases {
    live: HashMap<LeaseId, Live>,
    /// Deadlines in order, for the sweeper.
    queue: BTreeSet<(Instant, LeaseId)>,
    /// `--fsync always`: the records on disk, to restore the table from
    /// when a group fails.
    pub(super) durable: HashMap<LeaseId, LeaseRecord>,
    /// Leases that ran out, since the store started.
    pub(super) expired: u64,
    /// Most leases at once (`--max-leases`).
    pub(super) max: usize,
}

/// A deadline `ttl` seconds from `now` (centuries away is no deadline
/// anyone reaches).
fn deadline(now: Instant, ttl: u64) -> Instant {
    now.checked_add(Duration::from_secs(ttl))
        .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
}

impl Leases {
    pub(super) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    pub(super) fn get(&self, id: LeaseId) -> Option<&Live> {
        self.live.get(&id)
    }

    /// The lease, if it has not run out at `now` (one past its deadline
    /// waits for the sweeper to end it, and is no longer anyone's).
    pub(super) fn alive(&self, id: LeaseId, now: Instant) -> Option<&Live> {
        self.live.get(&id).filter(|live| live.deadline > now)
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = LeaseId> + '_ {
        self.live.keys().copied()
    }

    /// Adds a lease that runs out `record.ttl` seconds from `now`; returns
    /// whether its deadline is now the earliest.
    pub(super) fn grant(&mut self, id: LeaseId, record: LeaseRecord, now: Instant) -> bool {
        let deadline = deadline(now, record.ttl);
        let earliest = self.next().is_none_or(|next| deadline < next);
        self.queue.insert((deadline, id));
        self.live.insert(
            id,
            Live {
                record,
                deadline,
                keys: HashSet::new(),
            },
        );
        earliest
    }

    /// Gives the lease its full TTL again from `now`; returns the TTL.
    pub(super) fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Option<u64> {
        let live = self.live.get_mut(&id).filter(|live| live.deadline > now)?;
        self.queue.remove(&(live.deadline, id));
        live.deadline = deadline(now, live.record.ttl);
        self.queue.insert((live.deadline, id));
        Some(live.record.ttl)
    }

    /// Removes the lease; its keys, in key order.
    pub(super) fn end(&mut self, id: LeaseId) -> Option<Vec<Key>> {
        let live = self.live.remove(&id)?;
        self.queue.remove(&(live.deadline, id));
        let mut keys: Vec<Key> = live.keys.into_iter().collect();
        keys.sort_unstable();
        Some(keys)
    }

    /// Moves `key` from the lease it was on to the one it is now on.
    pub(super) fn moved(&mut self, key: &Key, from: Option<LeaseId>, to: Option<LeaseId>) {
        if from == to {
            return;
        }
        if let Some(live) = from.and_then(|from| self.live.get_mut(&from)) {
            live.keys.remove(key);
        }
        if let Some(live) = to.and_then(|to| self.live.get_mut(&to)) {
            live.keys.insert(key.clone());
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(deadline, _)| *deadline)
    }

    /// A lease whose deadline is at or before `now`, earliest first.
    pub(super) fn due(&self, now: Instant) -> Option<LeaseId> {
        self.queue
            .first()
            .filter(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| *id)
    }

    /// Rebuilds the table from what is on disk and the keys as applied
    /// (`--fsync always`, after a group failed: what it planned is undone).
    /// A lease that stays keeps its deadline.
    pub(super) fn restore<'a>(
        &mut self,
        keys: impl Iterator<Item = (&'a str, LeaseId)>,
        now: Instant,
    ) {
        let before = std::mem::take(&mut self.live);
        self.queue.clear();
        for (id, record) in &self.durable {
            let deadline = before
                .get(id)
                .map_or_else(|| deadline(now, record.ttl), |live| live.deadline);
            self.queue.insert((deadline, *id));
            self.live.insert(
                *id,
                Live {
                    record: record.clone(),
                    deadline,
                    keys: HashSet::new(),
                },
            );
        }
        for (key, id) in keys {
            if let Some(live) = self.live.get_mut(&id) {
                live.keys.insert(Key::from(key));
            }
        }
    }
}
