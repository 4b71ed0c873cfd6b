//! Transactions on the memory engine: the guards are judged and one branch
//! planned under one hold of the commit lock, so nothing can change the
//! keys between what the guards saw and what the branch writes.

use std::collections::{BTreeMap, HashMap};
use std::iter::Peekable;

use tokio::time::Instant;

use super::commit::{At, Committer, Pending, Planned, Ticket, view};
use super::flusher::settled;
use super::index::Index;
use super::{Current, Entry, Key, KeyHash, LockMap, Outcome, StorageError, Store};
use crate::domain::{Fence, Guard, Meta, Txn, TxnOp, TxnOutcome, TxnResult};

/// The keys as planning sees them (planned writes over the map), live ones
/// only: what the guards and the reads of a transaction judge.
pub(super) struct State<'a> {
    pub(super) pending: &'a HashMap<Key, Pending>,
    pub(super) index: &'a Index,
    pub(super) map: &'a LockMap,
    pub(super) now: Instant,
}

impl State<'_> {
    fn entry(&self, key: &str) -> Option<Entry> {
        let entry = match self.pending.get(key) {
            Some(pending) => pending.entry.clone(),
            None => self.map.read(key, Entry::clone),
        };
        entry.filter(|entry| !entry.is_expired(self.now))
    }

    fn current(&self, key: &str) -> Option<Current> {
        self.entry(key).map(|entry| Current::from(&entry))
    }

    /// The live keys under `prefix`, in key order.
    pub(super) fn under<'s>(&'s self, prefix: &'s str) -> impl Iterator<Item = &'s Entry> + 's {
        // Planned writes (`--fsync always`) are not in the index yet: they
        // override it, key by key.
        let planned: BTreeMap<&str, Option<&Entry>> = self
            .pending
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, pending)| (&**key, pending.entry.as_ref()))
            .collect();
        Overlaid {
            index: self.index.under(prefix, None).peekable(),
            planned: planned.into_iter().peekable(),
        }
        .filter(|entry| !entry.is_expired(self.now))
    }

    fn holds(&self, guard: &Guard) -> bool {
        match guard {
            Guard::Key { key, test } => Guard::holds_for_key(test, self.current(key).as_ref()),
            Guard::Prefix { prefix, test } => Guard::holds_for_prefix(test, self.under(prefix)),
        }
    }
}

/// The index's records with planned writes laid over them, in key order.
struct Overlaid<'a, I, P>
where
    I: Iterator<Item = &'a Entry>,
    P: Iterator<Item = (&'a str, Option<&'a Entry>)>,
{
    index: Peekable<I>,
    planned: Peekable<P>,
}

impl<'a, I, P> Iterator for Overlaid<'a, I, P>
where
    I: Iterator<Item = &'a Entry>,
    P: Iterator<Item = (&'a str, Option<&'a Entry>)>,
{
    type Item = &'a Entry;

    fn next(&mut self) -> Option<&'a Entry> {
        loop {
            let order = match (self.index.peek(), self.planned.peek()) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(now), Some((planned, _))) => now.key_bytes().cmp(planned.as_bytes()),
            };
            let record = match order {
                std::cmp::Ordering::Less => self.index.next(),
                std::cmp::Ordering::Greater => self.planned.next().and_then(|(_, then)| then),
                std::cmp::Ordering::Equal => {
                    self.index.next();
                    self.planned.next().and_then(|(_, then)| then)
                }
            };
            if record.is_some() {
                return record;
            }
        }
    }
}

/// A key a step writes, with its hash in the map.
type Written = (Key, KeyHash);

/// One operation of the branch, judged: a read's result, or what a write
/// will do once the branch's revision is known.
enum Step {
    Read(TxnResult),
    Put {
        key: Written,
        planned: Planned,
        created: bool,
    },
    Delete(Option<Written>),
    DeletePrefix(Vec<Written>),
}

impl Store {
    /// Runs a transaction: every guard is judged against the store, and
    /// the branch they choose runs as one commit (all its writes at one
    /// revision, its reads seeing the store as the guards did).
    pub async fn txn(&self, txn: &Txn, fences: &[Fence]) -> Result<TxnOutcome, StorageError> {
        let (outcome, ticket) = {
            let mut committer = self.inner.committer.lock();
            self.txn_locked(&mut committer, txn, fences)?
        };
        settled(ticket).await?;
        Ok(outcome)
    }

    fn txn_locked(
        &self,
        committer: &mut Committer,
        txn: &Txn,
        fences: &[Fence],
    ) -> Result<(TxnOutcome, Option<Ticket>), StorageError> {
        let inner = &*self.inner;
        committer.refusing()?;
        let now = Instant::now();
        committer.fences_hold(&inner.map, fences, now)?;
        let saw_pending = !committer.pending.is_empty();

        // Judge and read before any shard is write-locked: reads take the
        // shards' read locks. The commit lock keeps every writer out.
        let state = State {
            pending: &committer.pending,
            index: &committer.index,
            map: &inner.map,
            now,
        };
        let succeeded = txn.guards.iter().all(|guard| state.holds(guard));
        let leases = txn.branch(succeeded).iter().filter_map(|op| match op {
            TxnOp::Put { lifetime, .. } => lifetime.lease(),
            _ => None,
        });
        committer.leases_exist(leases)?;
        let steps: Vec<Step> = txn
            .branch(succeeded)
            .iter()
            .map(|op| match op {
                TxnOp::Get(key) => Step::Read(TxnResult::One(
                    state.current(key).map_or(Outcome::NotFound, Outcome::Found),
                )),
                TxnOp::List { prefix, limit } => {
                    let mut under = state.under(prefix);
                    let entries: Vec<Entry> = under.by_ref().take(*limit).cloned().collect();
                    let more = under.next().is_some();
                    Step::Read(TxnResult::Listed { entries, more })
                }
                TxnOp::Put {
                    key,
                    value,
                    lifetime,
                } => {
                    let previous: Option<Meta> = state.entry(key).map(|entry| entry.meta());
                    Step::Put {
                        key: (key.clone(), inner.map.hash(key)),
                        planned: Planned::Put {
                            value: value.clone(),
                            lifetime: *lifetime,
                            previous,
                        },
                        created: previous.is_none(),
                    }
                }
                TxnOp::Delete(key) => {
                    Step::Delete(state.entry(key).map(|_| (key.clone(), inner.map.hash(key))))
                }
                TxnOp::DeletePrefix(prefix) => Step::DeletePrefix(
                    state
                        .under(prefix)
                        .map(|entry| {
                            let key = Key::from(entry.key());
                            let hash = inner.map.hash(&key);
                            (key, hash)
                        })
                        .collect(),
                ),
            })
            .collect();

        let written: Vec<&Written> = steps
            .iter()
            .flat_map(|step| match step {
                Step::Read(_) | Step::Delete(None) => &[][..],
                Step::Put { key, .. } => std::slice::from_ref(key),
                Step::Delete(Some(key)) => std::slice::from_ref(key),
                Step::DeletePrefix(keys) => &keys[..],
            })
            .collect();
        let mut locked = inner.map.lock(written.iter().map(|(_, hash)| hash));
        // A key whose TTL ran out but was not swept expires first, at a
        // revision of its own, so watchers see the expiry before the put.
        for &(key, hash) in &written {
            if view(&committer.pending, &locked, key, *hash).is_some_and(|e| e.is_expired(now)) {
                committer.expire(&mut locked, (key, *hash), now);
            }
        }
        let writes = written.len();
        let revision = if writes == 0 {
            committer.next
        } else {
            committer.next_revision()
        };
        let mut part = 0u32;
        let mut at = || {
            let at = At {
                revision,
                // A revision of one write has no parts.
                part: (writes > 1).then_some(part),
            };
            part = part.saturating_add(1);
            at
        };
        let results = steps
            .into_iter()
            .map(|step| match step {
                Step::Read(result) => result,
                Step::Put {
                    key: (key, hash),
                    planned,
                    created,
                } => {
                    committer.write(&mut locked, (&key, hash), planned, now, at());
                    TxnResult::One(if created {
                        Outcome::Created { revision }
                    } else {
                        Outcome::Replaced { revision }
                    })
                }
                Step::Delete(None) => TxnResult::One(Outcome::NotFound),
                Step::Delete(Some((key, hash))) => {
                    committer.write(&mut locked, (&key, hash), Planned::Delete, now, at());
                    TxnResult::One(Outcome::Deleted { revision })
                }
                Step::DeletePrefix(keys) => {
                    for (key, hash) in &keys {
                        committer.write(&mut locked, (key, *hash), Planned::Delete, now, at());
                    }
                    TxnResult::PrefixDeleted {
                        deleted: keys.len() as u64,
                    }
                }
            })
            .collect();
        drop(locked);

        let must_wait = saw_pending || committer.next > committer.revision;
        let ticket = (committer.mode.is_grouped() && must_wait).then(|| committer.ticket());
        if ticket.is_some() {
            inner.flush_wanted.notify_one();
        }
        inner.settle(committer);
        Ok((
            TxnOutcome {
                succeeded,
                revision,
                results,
            },
            ticket,
        ))
    }
}
