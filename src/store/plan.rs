//! Planning a run of operations (one request, or a batch) against the
//! state the commit path sees, so a failed condition leaves no trace.

use smallvec::SmallVec;
use tokio::time::Instant;

use super::commit::{At, Committer, Planned, Ticket, view};
use super::flusher::settled;
use super::{
    Action, Condition, Current, Fence, Key, Op, Outcome, PrefixDeleted, StorageError, Store,
};

/// What a run's ops came to, in their order: on the stack for one op.
pub(super) type Outcomes = SmallVec<[Outcome; 1]>;

impl Store {
    /// Plans (and in memory, applies) `ops`; with a data dir, the ticket
    /// tells when what they wrote or saw is durable.
    pub(super) fn run(
        &self,
        ops: &[Op],
        fences: &[Fence],
    ) -> Result<(Outcomes, Option<Ticket>), StorageError> {
        let mut committer = self.inner.committer.lock();
        self.run_locked(&mut committer, ops, fences)
    }

    /// Deletes every key under `prefix` (non-empty) in one atomic commit:
    /// the keys are listed and deleted under the same hold of the commit
    /// lock, so no write can slip between. Returns how many were deleted
    /// and the store's revision after it.
    pub async fn delete_prefix(
        &self,
        prefix: &str,
        fences: &[Fence],
    ) -> Result<PrefixDeleted, StorageError> {
        let (outcomes, revision, ticket) = {
            let mut committer = self.inner.committer.lock();
            let mut keys: Vec<Key> = committer
                .index
                .under(prefix, None)
                .map(|entry| Key::from(entry.key()))
                .collect();
            // Writes planned but not yet on disk (`--fsync always`) are
            // not in the index yet.
            keys.extend(
                committer
                    .pending
                    .keys()
                    .filter(|key| key.starts_with(prefix))
                    .cloned(),
            );
            keys.sort_unstable();
            keys.dedup();
            let ops: Vec<Op> = keys
                .into_iter()
                .map(|key| Op {
                    key,
                    action: Action::Delete,
                    condition: Condition::Always,
                })
                .collect();
            let (outcomes, ticket) = self.run_locked(&mut committer, &ops, fences)?;
            (outcomes, committer.next, ticket)
        };
        settled(ticket).await?;
        let deleted = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Outcome::Deleted { .. }))
            .count() as u64;
        Ok(PrefixDeleted { deleted, revision })
    }

    fn run_locked(
        &self,
        committer: &mut Committer,
        ops: &[Op],
        fences: &[Fence],
    ) -> Result<(Outcomes, Option<Ticket>), StorageError> {
        let inner = &*self.inner;
        committer.refusing()?;
        // Fences read the map through its read locks: judged before this
        // run write-locks its shards (and read the clock only if any).
        if !fences.is_empty() {
            committer.fences_hold(&inner.map, fences, Instant::now())?;
        }
        let leases = ops.iter().filter_map(|op| match &op.action {
            Action::Put { lifetime, .. } => lifetime.lease(),
            Action::Get | Action::Delete => None,
        });
        committer.leases_exist(leases)?;
        let hashes = inner.map.hashes(ops.iter().map(|op| &*op.key));
        let keys = || ops.iter().map(|op| &op.key).zip(hashes.iter().copied());
        let mut locked = inner.map.lock(&hashes);
        // Read once the shards are locked: a reader that found a key
        // expired before then read an earlier clock, so this run finds it
        // expired too.
        let now = Instant::now();
        // What this run sees may include writes still on their way to disk.
        let saw_pending = !committer.pending.is_empty();

        // Expired keys the sweeper has not reached yet are expired here first,
        // as writes of their own, so watchers see the expiry before whatever
        // this run does to the key.
        for (key, hash) in keys() {
            if view(&committer.pending, &locked, key, hash).is_some_and(|e| e.is_expired(now)) {
                committer.expire(&mut locked, (key, hash), now);
            }
        }

        // Plan: evaluate every op against the state before the run, without
        // writing, so a failed condition leaves no trace. The ops name
        // distinct keys, so no op sees another's write; all the writes take
        // one revision (etcd's model for a transaction).
        let revision = committer.next_revision();
        let mut outcomes = Outcomes::with_capacity(ops.len());
        let mut previous: SmallVec<[_; 1]> = SmallVec::with_capacity(ops.len());
        let mut rejected = false;
        for (op, (key, hash)) in ops.iter().zip(keys()) {
            let current = view(&committer.pending, &locked, key, hash).map(Current::from);
            previous.push(current.as_ref().map(|current| current.meta));
            let outcome = if !op.condition.holds(current.as_ref()) {
                rejected = true;
                Outcome::Rejected { current }
            } else {
                match (&op.action, current) {
                    (Action::Get, current) => current.map_or(Outcome::NotFound, Outcome::Found),
                    (Action::Put { .. }, Some(_)) => Outcome::Replaced { revision },
                    (Action::Put { .. }, None) => Outcome::Created { revision },
                    (Action::Delete, Some(_)) => Outcome::Deleted { revision },
                    (Action::Delete, None) => Outcome::NotFound,
                }
            };
            outcomes.push(outcome);
        }

        if !rejected {
            let writes = outcomes.iter().filter(|outcome| outcome.is_write()).count();
            let writing = ops
                .iter()
                .zip(keys())
                .zip(&outcomes)
                .zip(previous)
                .filter(|((_, outcome), _)| outcome.is_write());
            for (part, (((op, key), _), previous)) in writing.enumerate() {
                let planned = match &op.action {
                    Action::Put { value, lifetime } => Planned::Put {
                        value: value.clone(),
                        lifetime: *lifetime,
                        previous,
                    },
                    _ => Planned::Delete,
                };
                let at = At {
                    revision,
                    // A revision of one write has no parts.
                    part: (writes > 1).then(|| u32::try_from(part).unwrap_or(u32::MAX)),
                };
                committer.write(&mut locked, key, planned, now, at);
            }
        }
        drop(locked);

        let must_wait = saw_pending || committer.next > committer.revision;
        let ticket = (committer.mode.is_grouped() && must_wait).then(|| committer.ticket());
        if ticket.is_some() {
            inner.flush_wanted.notify_one();
        }
        inner.settle(committer);
        Ok((outcomes, ticket))
    }
}
