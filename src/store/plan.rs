//! Planning a run of operations (one request, or a batch) against the
//! state the commit path sees, so a failed condition leaves no trace.

use std::collections::HashMap;
use std::time::Instant;

use super::commit::{Planned, Ticket, view};
use super::{Action, Current, Op, Outcome, StorageError, Store, bump};

impl Store {
    fn count(&self, op: &Op, outcome: &Outcome) {
        let counters = &self.inner.counters;
        match (&op.action, op.condition.is_cas()) {
            (Action::Get, _) => bump(&counters.gets),
            (Action::Put { .. }, true) => {
                bump(&counters.cas);
                match outcome {
                    Outcome::Rejected { .. } => bump(&counters.cas_failed),
                    _ => bump(&counters.cas_succeeded),
                }
            }
            (Action::Put { .. }, false) => bump(&counters.puts),
            (Action::Delete, _) => bump(&counters.deletes),
        }
    }

    /// Plans (and in memory, applies) `ops`; with a data dir, the ticket
    /// tells when what they wrote or saw is durable.
    pub(super) fn run(&self, ops: &[Op]) -> Result<(Vec<Outcome>, Option<Ticket>), StorageError> {
        let inner = &*self.inner;
        let mut committer = inner.committer.lock();
        if committer.closing {
            return Err(StorageError::ShuttingDown);
        }
        let mut locked = inner.map.lock(ops.iter().map(|op| &*op.key));
        let now = Instant::now();
        // What this run sees may include writes still on their way to disk.
        let saw_pending = !committer.pending.is_empty();

        // Expired keys the sweeper has not reached yet are expired here first,
        // as writes of their own, so watchers see the expiry before whatever
        // this batch does to the key.
        for op in ops {
            if view(&committer.pending, &locked, &op.key).is_some_and(|e| e.is_expired(now)) {
                committer.write(&mut locked, &op.key, Planned::Expire, now);
            }
        }

        // Plan: evaluate every op against the state the ops before it leave,
        // without writing, so a failed condition leaves no trace.
        let mut staged: HashMap<&str, Option<Current>> = HashMap::new();
        let mut next_revision = committer.next;
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut rejected = false;
        for op in ops {
            let current = match staged.get(&*op.key) {
                Some(staged) => staged.clone(),
                None => view(&committer.pending, &locked, &op.key).map(Current::from),
            };
            let outcome = if !op.condition.holds(current.as_ref()) {
                rejected = true;
                Outcome::Rejected { current }
            } else {
                match &op.action {
                    Action::Get => current.map_or(Outcome::NotFound, Outcome::Found),
                    Action::Put { value, .. } => {
                        next_revision += 1;
                        if ops.len() > 1 {
                            let after = Current {
                                value: value.clone(),
                                revision: next_revision,
                            };
                            staged.insert(&op.key, Some(after));
                        }
                        match current {
                            Some(_) => Outcome::Replaced {
                                revision: next_revision,
                            },
                            None => Outcome::Created {
                                revision: next_revision,
                            },
                        }
                    }
                    Action::Delete => match current {
                        None => Outcome::NotFound,
                        Some(_) => {
                            next_revision += 1;
                            if ops.len() > 1 {
                                staged.insert(&op.key, None);
                            }
                            Outcome::Deleted {
                                revision: next_revision,
                            }
                        }
                    },
                }
            };
            self.count(op, &outcome);
            outcomes.push(outcome);
        }

        if !rejected {
            for (op, outcome) in ops.iter().zip(&outcomes) {
                if !outcome.is_write() {
                    continue;
                }
                let planned = match &op.action {
                    Action::Put { value, ttl } => Planned::Put {
                        value: value.clone(),
                        ttl: *ttl,
                    },
                    _ => Planned::Delete,
                };
                committer.write(&mut locked, &op.key, planned, now);
            }
        }
        drop(locked);

        let must_wait = saw_pending || committer.next > committer.revision;
        let ticket = (committer.mode.is_grouped() && must_wait).then(|| committer.ticket());
        if ticket.is_some() {
            inner.flush_wanted.notify_one();
        }
        inner.settle(&mut committer);
        Ok((outcomes, ticket))
    }
}
