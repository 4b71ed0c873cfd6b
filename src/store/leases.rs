//! Lease calls on the memory engine: grant, keep alive, read, list and
//! revoke, and the end of a lease (revoked or run out) as one commit.

use std::sync::Arc;

use tokio::time::Instant;

use super::commit::{At, Committer, Planned, Ticket};
use super::flusher::settled;
use super::lease_table::{LeaseRecord, Live};
use super::{Key, Store};
use crate::domain::{LeaseError, LeaseHeld, LeaseId, LeasePage, LeaseState};

/// A random unused id: hard to guess, as etcd's are.
fn fresh_id(committer: &Committer) -> Result<LeaseId, LeaseError> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|err| {
            LeaseError::Storage(crate::domain::StorageError::Unavailable(
                format!("no randomness for a lease id: {err}").into(),
            ))
        })?;
        if let Some(id) = LeaseId::new(u64::from_le_bytes(bytes) & LeaseId::MAX)
            && committer.leases.get(id).is_none()
        {
            return Ok(id);
        }
    }
}

fn state(id: LeaseId, live: &Live, now: Instant, keys: bool) -> LeaseState {
    LeaseState {
        id,
        granted_ttl: live.record.ttl,
        ttl: live
            .deadline
            .saturating_duration_since(now)
            .as_secs_f64()
            .ceil() as u64,
        owner: live.record.owner.clone(),
        keys: keys.then(|| {
            let mut keys: Vec<Key> = live.keys.iter().cloned().collect();
            keys.sort_unstable();
            keys
        }),
    }
}

impl Store {
    /// Grants a lease of `ttl` seconds (its id `id`, or a fresh one).
    pub async fn grant(
        &self,
        id: Option<LeaseId>,
        ttl: u64,
        owner: Option<Arc<str>>,
    ) -> Result<LeaseState, LeaseError> {
        let inner = &*self.inner;
        let (granted, ticket) = {
            let mut committer = inner.committer.lock();
            committer.refusing()?;
            let max = committer.leases.max;
            if committer.leases.len() >= max {
                return Err(LeaseError::TooMany { max });
            }
            let id = match id {
                Some(id) if committer.leases.get(id).is_some() => {
                    return Err(LeaseError::Exists(id));
                }
                Some(id) => id,
                None => fresh_id(&committer)?,
            };
            let record = LeaseRecord {
                ttl,
                owner: owner.clone(),
            };
            committer.wake_sweeper |= committer.leases.grant(id, record.clone(), Instant::now());
            committer.record_lease(id, Some(record));
            let ticket = self.durable_ticket(&mut committer);
            inner.settle(&mut committer);
            let granted = LeaseState {
                id,
                granted_ttl: ttl,
                ttl,
                owner,
                keys: None,
            };
            (granted, ticket)
        };
        settled(ticket).await?;
        Ok(granted)
    }

    /// Gives a lease its full TTL again; returns it.
    pub async fn keep_alive(&self, id: LeaseId) -> Result<u64, LeaseError> {
        let mut committer = self.inner.committer.lock();
        committer.refusing()?;
        committer
            .leases
            .keep_alive(id, Instant::now())
            .ok_or(LeaseError::NotFound(id))
    }

    /// A lease's TTLs, owner and (with `keys`) its keys.
    pub async fn lease(&self, id: LeaseId, keys: bool) -> Result<LeaseState, LeaseError> {
        let committer = self.inner.committer.lock();
        let now = Instant::now();
        let live = committer
            .leases
            .alive(id, now)
            .ok_or(LeaseError::NotFound(id))?;
        Ok(state(id, live, now, keys))
    }

    /// Up to `limit` leases after `after`, in id order.
    pub async fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> Result<LeasePage, LeaseError> {
        let committer = self.inner.committer.lock();
        let mut ids: Vec<LeaseId> = committer
            .leases
            .ids()
            .filter(|id| after.is_none_or(|after| *id > after))
            .collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        let leases = ids
            .into_iter()
            .take(limit)
            .filter_map(|id| {
                committer.leases.get(id).map(|live| LeaseHeld {
                    id,
                    owner: live.record.owner.clone(),
                })
            })
            .collect();
        Ok(LeasePage { leases, more })
    }

    /// Revokes a lease: its keys are deleted in one commit. Returns the
    /// store's revision after it.
    pub async fn revoke(&self, id: LeaseId) -> Result<u64, LeaseError> {
        let inner = &*self.inner;
        let (revision, ticket) = {
            let mut committer = inner.committer.lock();
            committer.refusing()?;
            if committer.leases.get(id).is_none() {
                return Err(LeaseError::NotFound(id));
            }
            self.end_lease(&mut committer, id, false);
            let ticket = self.durable_ticket(&mut committer);
            inner.settle(&mut committer);
            (committer.next, ticket)
        };
        settled(ticket).await?;
        Ok(revision)
    }

    /// Ends a lease (`expired`: it ran out; else revoked): every key on it
    /// is removed at one revision, in key order, an `expire` or `delete`
    /// event each.
    pub(super) fn end_lease(&self, committer: &mut Committer, id: LeaseId, expired: bool) {
        let Some(keys) = committer.leases.end(id) else {
            return;
        };
        committer.record_lease(id, None);
        if expired {
            committer.leases.expired += 1;
        }
        if keys.is_empty() {
            return;
        }
        let now = Instant::now();
        let hashes = self.inner.map.hashes(keys.iter().map(|key| &**key));
        let mut locked = self.inner.map.lock(&hashes);
        let revision = committer.next_revision();
        let several = keys.len() > 1;
        for (part, (key, hash)) in keys.iter().zip(hashes).enumerate() {
            let at = At {
                revision,
                part: several.then(|| u32::try_from(part).unwrap_or(u32::MAX)),
            };
            let planned = if expired {
                Planned::Expire
            } else {
                Planned::Delete
            };
            committer.write(&mut locked, (key, hash), planned, now, at);
        }
    }

    /// With `--fsync always`, what to wait for before answering a change
    /// the data dir must hold.
    fn durable_ticket(&self, committer: &mut Committer) -> Option<Ticket> {
        if !committer.mode.is_grouped() || committer.group.is_empty() {
            return None;
        }
        let ticket = committer.ticket();
        self.inner.flush_wanted.notify_one();
        Some(ticket)
    }
}
