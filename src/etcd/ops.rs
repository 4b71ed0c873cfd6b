//! Writes and conditional operations as etcd transactions.
//!
//! Every request, single op or batch, is one `Txn`: the ops' conditions
//! become the `Txn`'s compares, the ops its success branch (with `prev_kv`,
//! which tells a create from a replace), and a read of every key its failure
//! branch (which tells which condition failed, and the key's state for the
//! 412). So all of a batch's writes take one revision, etcd's model and the
//! memory store's.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};

use super::fence::Unfenced;
use super::{EtcdStore, Failure};
use crate::domain::{
    Action, BatchError, Condition, Current, Fence, Lifetime, Op, Outcome, PrefixDeleted, Revisions,
    StorageError,
};

/// The compares that hold exactly when `condition` holds for `key`, or
/// `None` when etcd's compares (all ANDed) cannot say it: a key matching
/// one of several ETags.
fn compares(key: &[u8], condition: &Condition) -> Option<Vec<Compare>> {
    let exists = || Compare::create_revision(key.to_vec(), CompareOp::Greater, 0);
    let absent = || Compare::create_revision(key.to_vec(), CompareOp::Equal, 0);
    // An ETag of 0 or beyond i64 names no revision etcd has.
    let etcd_revision = |r: u64| i64::try_from(r).ok().filter(|r| *r > 0);
    let mut compares = Vec::new();
    match condition {
        Condition::Always => {}
        Condition::Value(Some(value)) => compares.push(Compare::value(
            key.to_vec(),
            CompareOp::Equal,
            value.as_bytes(),
        )),
        Condition::Value(None) => compares.push(absent()),
        Condition::Revision { must, must_not } => {
            match must {
                None => {}
                Some(Revisions::Any) => compares.push(exists()),
                Some(Revisions::OneOf(revisions)) => {
                    let named: Vec<i64> =
                        revisions.iter().filter_map(|r| etcd_revision(*r)).collect();
                    match named[..] {
                        // No revision can match: an existing key's is not 0,
                        // and an absent key is in no set.
                        [] => {
                            compares.push(Compare::mod_revision(key.to_vec(), CompareOp::Less, 0))
                        }
                        [one] => compares.push(Compare::mod_revision(
                            key.to_vec(),
                            CompareOp::Equal,
                            one,
                        )),
                        _ => return None,
                    }
                }
            }
            match must_not {
                None => {}
                Some(Revisions::Any) => compares.push(absent()),
                Some(Revisions::OneOf(revisions)) => {
                    compares.extend(
                        revisions
                            .iter()
                            .filter_map(|r| etcd_revision(*r))
                            .map(|r| Compare::mod_revision(key.to_vec(), CompareOp::NotEqual, r)),
                    );
                }
            }
        }
    }
    Some(compares)
}

impl EtcdStore {
    pub async fn apply(&self, op: Op) -> Result<Outcome, StorageError> {
        match self.run(std::slice::from_ref(&op), &[]).await {
            Ok(mut outcomes) | Err(BatchError::Rejected(mut outcomes)) => {
                Ok(outcomes.pop().unwrap_or(Outcome::NotFound))
            }
            Err(BatchError::Storage(err)) => Err(err),
        }
    }

    pub async fn batch(&self, ops: &[Op], fences: &[Fence]) -> Result<Vec<Outcome>, BatchError> {
        self.run(ops, fences).await
    }

    /// Runs `ops` (distinct keys) as one transaction, if `fences` hold.
    async fn run(&self, ops: &[Op], fences: &[Fence]) -> Result<Vec<Outcome>, BatchError> {
        let lifetimes = || {
            ops.iter().filter_map(|op| match &op.action {
                Action::Put { lifetime, .. } => Some(*lifetime),
                Action::Get | Action::Delete => None,
            })
        };
        let ttls = lifetimes().filter_map(|lifetime| match lifetime {
            Lifetime::Ttl(ttl) => Some(ttl),
            Lifetime::Forever | Lifetime::Lease(_) => None,
        });
        let named = lifetimes().find_map(Lifetime::lease);
        let leases = self
            .grant_leases(ttls.collect())
            .await
            .map_err(BatchError::Storage)?;
        let keys: Vec<Vec<u8>> = ops.iter().map(|op| self.full(&op.key)).collect();
        let fenced = self
            .fence_compares(fences)
            .await
            .map_err(BatchError::Storage)?;
        let outcomes = loop {
            // Conditions etcd cannot compare are checked against the keys'
            // state read first, then pinned to it: the transaction fails if
            // a key changed in between, and the loop reads again.
            let mut pinned: HashMap<usize, Option<Current>> = HashMap::new();
            let mut when = Vec::new();
            for (index, (op, key)) in ops.iter().zip(&keys).enumerate() {
                match compares(key, &op.condition) {
                    Some(compares) => when.extend(compares),
                    None => {
                        let current = self.get(&op.key).await.map_err(BatchError::Storage)?;
                        when.push(match &current {
                            Some(current) => Compare::mod_revision(
                                key.clone(),
                                CompareOp::Equal,
                                i64::try_from(current.revision()).unwrap_or(i64::MAX),
                            ),
                            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                        });
                        pinned.insert(index, current);
                    }
                }
            }
            if let Some(rejected) = self.rejected_early(ops, &pinned) {
                break rejected;
            }
            let then: Vec<TxnOp> = ops
                .iter()
                .zip(&keys)
                .map(|(op, key)| match &op.action {
                    Action::Get => TxnOp::get(key.clone(), None),
                    Action::Put { value, lifetime } => {
                        let options = self.put_options(*lifetime, &leases);
                        TxnOp::put(key.clone(), value.as_bytes(), Some(options))
                    }
                    Action::Delete => {
                        TxnOp::delete(key.clone(), Some(DeleteOptions::new().with_prev_key()))
                    }
                })
                .collect();
            let otherwise: Vec<TxnOp> = keys
                .iter()
                .map(|key| TxnOp::get(key.clone(), None))
                .collect();
            let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
            let Unfenced { answer, revision } = self
                .run_fenced(txn, fences, &fenced)
                .await
                .map_err(|failure| BatchError::Storage(failure.storage_naming(named)))?;
            if answer.succeeded() {
                break self.applied(&answer, revision);
            }
            let outcomes = self.which_failed(ops, &answer);
            let rejected = outcomes
                .iter()
                .any(|outcome| matches!(outcome, Outcome::Rejected { .. }));
            if rejected {
                break outcomes;
            }
            if pinned.is_empty() {
                // A compare failed that the state read back does not show
                // (it cannot, but if it did): every conditional op is
                // reported as failed rather than the batch as applied.
                break ops
                    .iter()
                    .zip(answer.op_responses())
                    .map(|(op, response)| match (&op.condition, response) {
                        (Condition::Always, _) => Outcome::NotFound,
                        (_, TxnOpResponse::Get(get)) => Outcome::Rejected {
                            current: get.kvs().first().map(|kv| self.current(kv)),
                        },
                        _ => Outcome::Rejected { current: None },
                    })
                    .collect();
            }
            // Only a pinned key changed under us: read it again.
        };
        BatchError::unless_rejected(outcomes)
    }

    /// The outcomes when a pinned condition already fails on what was read:
    /// no transaction needed.
    fn rejected_early(
        &self,
        ops: &[Op],
        pinned: &HashMap<usize, Option<Current>>,
    ) -> Option<Vec<Outcome>> {
        let failed = pinned
            .iter()
            .any(|(index, current)| !ops[*index].condition.holds(current.as_ref()));
        failed.then(|| {
            ops.iter()
                .enumerate()
                .map(|(index, op)| match pinned.get(&index) {
                    Some(current) if !op.condition.holds(current.as_ref()) => Outcome::Rejected {
                        current: current.clone(),
                    },
                    _ => Outcome::NotFound,
                })
                .collect()
        })
    }

    /// The outcomes of a transaction that applied.
    fn applied(&self, answer: &TxnResponse, at: u64) -> Vec<Outcome> {
        answer
            .op_responses()
            .into_iter()
            .map(|response| match response {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map_or(Outcome::NotFound, |kv| Outcome::Found(self.current(kv))),
                TxnOpResponse::Put(put) => match put.prev_key() {
                    Some(_) => Outcome::Replaced { revision: at },
                    None => Outcome::Created { revision: at },
                },
                TxnOpResponse::Delete(delete) if delete.deleted() > 0 => {
                    Outcome::Deleted { revision: at }
                }
                TxnOpResponse::Delete(_) | TxnOpResponse::Txn(_) => Outcome::NotFound,
            })
            .collect()
    }

    /// The outcomes of a transaction whose compares failed, from the keys'
    /// state its failure branch read: the ops whose condition does not hold
    /// are rejected.
    fn which_failed(&self, ops: &[Op], answer: &TxnResponse) -> Vec<Outcome> {
        ops.iter()
            .zip(answer.op_responses())
            .map(|(op, response)| {
                let current = match response {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| self.current(kv)),
                    _ => None,
                };
                if op.condition.holds(current.as_ref()) {
                    Outcome::NotFound
                } else {
                    Outcome::Rejected { current }
                }
            })
            .collect()
    }

    /// Deletes every key under `prefix` with one DeleteRange: one revision,
    /// one delete event per key.
    pub async fn delete_prefix(
        &self,
        prefix: &str,
        fences: &[Fence],
    ) -> Result<PrefixDeleted, StorageError> {
        let key = self.full(prefix);
        let fenced = self.fence_compares(fences).await?;
        let delete = TxnOp::delete(key, Some(DeleteOptions::new().with_prefix()));
        let txn = Txn::new().and_then(vec![delete]);
        let Unfenced { answer, revision } = self
            .run_fenced(txn, fences, &fenced)
            .await
            .map_err(Failure::storage)?;
        let deleted = match answer.op_responses().first() {
            Some(TxnOpResponse::Delete(delete)) => u64::try_from(delete.deleted()).unwrap_or(0),
            _ => 0,
        };
        Ok(PrefixDeleted { deleted, revision })
    }
}
