//! Transactions as etcd's own `Txn`: each guard is one compare (a prefix
//! guard a compare over the prefix's range), each branch's operations its
//! success or failure ops. The reads of a branch go first in it, so they
//! see the store as the guards did, as on the memory store.

use std::collections::HashMap;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, Txn as EtcdTxn, TxnOp as EtcdOp, TxnOpResponse,
};

use super::EtcdStore;
use super::fence::Unfenced;
use crate::domain::{
    Comparison, Fence, Guard, KeyTest, Lifetime, Operand, Order, Outcome, PrefixTest, StorageError,
    Txn, TxnOp, TxnOutcome, TxnResult,
};

/// etcd's numbers are i64: a larger operand compares as the largest.
fn number(operand: u64) -> i64 {
    i64::try_from(operand).unwrap_or(i64::MAX)
}

fn compare(key: Vec<u8>, comparison: &Comparison) -> Compare {
    let order = match comparison.order {
        Order::Equal => CompareOp::Equal,
        Order::NotEqual => CompareOp::NotEqual,
        Order::Less => CompareOp::Less,
        Order::Greater => CompareOp::Greater,
    };
    match &comparison.operand {
        Operand::Value(value) => Compare::value(key, order, value.as_bytes()),
        Operand::ModRevision(r) => Compare::mod_revision(key, order, number(*r)),
        Operand::CreateRevision(r) => Compare::create_revision(key, order, number(*r)),
        Operand::Version(v) => Compare::version(key, order, number(*v)),
        Operand::Lease(lease) => Compare::lease(key, order, number(*lease)),
    }
}

/// Where a branch's operation sits in etcd's op list (reads first) and
/// what it asked, to read its result back in the branch's order.
struct Placed<'a> {
    op: &'a TxnOp,
    at: usize,
}

impl EtcdStore {
    fn guard(&self, guard: &Guard) -> Compare {
        match guard {
            Guard::Key { key, test } => {
                let key = self.full(key);
                match test {
                    KeyTest::Exists => Compare::create_revision(key, CompareOp::Greater, 0),
                    KeyTest::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
                    KeyTest::Compare(comparison) => compare(key, comparison),
                }
            }
            Guard::Prefix { prefix, test } => {
                let prefix = self.full(prefix);
                let end = self.keys_end(&prefix);
                match test {
                    // Every key's create_revision is 0: there is none.
                    PrefixTest::Empty => {
                        Compare::create_revision(prefix, CompareOp::Equal, 0).with_range(end)
                    }
                    PrefixTest::Every(comparison) => compare(prefix, comparison).with_range(end),
                }
            }
        }
    }

    /// A branch as etcd ops, reads first, and where each op went.
    fn branch<'a>(
        &self,
        ops: &'a [TxnOp],
        leases: &HashMap<i64, i64>,
    ) -> (Vec<EtcdOp>, Vec<Placed<'a>>) {
        let (reads, writes): (Vec<&TxnOp>, Vec<&TxnOp>) = ops.iter().partition(|op| op.is_read());
        let mut etcd = Vec::with_capacity(ops.len());
        let mut placed: Vec<Placed> = Vec::with_capacity(ops.len());
        for op in reads.into_iter().chain(writes) {
            placed.push(Placed { op, at: etcd.len() });
            etcd.push(match op {
                TxnOp::Get(key) => EtcdOp::get(self.full(key), None),
                TxnOp::List { prefix, limit } => {
                    let prefix = self.full(prefix);
                    let options = GetOptions::new()
                        .with_range(self.keys_end(&prefix))
                        .with_limit(i64::try_from(*limit).unwrap_or(i64::MAX));
                    EtcdOp::get(prefix, Some(options))
                }
                TxnOp::Put {
                    key,
                    value,
                    lifetime,
                } => {
                    let options = self.put_options(*lifetime, leases);
                    EtcdOp::put(self.full(key), value.as_bytes(), Some(options))
                }
                TxnOp::Delete(key) => EtcdOp::delete(self.full(key), None),
                TxnOp::DeletePrefix(prefix) => {
                    EtcdOp::delete(self.full(prefix), Some(DeleteOptions::new().with_prefix()))
                }
            });
        }
        // Back in the branch's order.
        let mut in_order: Vec<Placed> = Vec::with_capacity(placed.len());
        for op in ops {
            if let Some(index) = placed.iter().position(|p| std::ptr::eq(p.op, op)) {
                in_order.push(placed.swap_remove(index));
            }
        }
        (etcd, in_order)
    }

    pub async fn txn(&self, txn: &Txn, fences: &[Fence]) -> Result<TxnOutcome, StorageError> {
        let lifetimes = || {
            txn.then
                .iter()
                .chain(&txn.otherwise)
                .filter_map(|op| match op {
                    TxnOp::Put { lifetime, .. } => Some(*lifetime),
                    _ => None,
                })
        };
        let ttls = lifetimes()
            .filter_map(|lifetime| match lifetime {
                Lifetime::Ttl(ttl) => Some(ttl),
                Lifetime::Forever | Lifetime::Lease(_) => None,
            })
            .collect();
        let named = lifetimes().find_map(Lifetime::lease);
        let leases = self.grant_leases(ttls).await?;
        let fenced = self.fence_compares(fences).await?;
        let when: Vec<Compare> = txn.guards.iter().map(|guard| self.guard(guard)).collect();
        let (then, then_placed) = self.branch(&txn.then, &leases);
        let (otherwise, otherwise_placed) = self.branch(&txn.otherwise, &leases);
        let request = EtcdTxn::new().when(when).and_then(then).or_else(otherwise);
        let Unfenced {
            answer,
            revision: at,
        } = self
            .run_fenced(request, fences, &fenced)
            .await
            .map_err(|failure| failure.storage_naming(named))?;
        let succeeded = answer.succeeded();
        let placed = if succeeded {
            then_placed
        } else {
            otherwise_placed
        };
        let responses = answer.op_responses();
        let results = placed
            .iter()
            .map(|placed| {
                let response = responses.get(placed.at);
                Ok(match (placed.op, response) {
                    (TxnOp::Get(_), Some(TxnOpResponse::Get(get))) => TxnResult::One(
                        get.kvs()
                            .first()
                            .map_or(Outcome::NotFound, |kv| Outcome::Found(self.current(kv))),
                    ),
                    (TxnOp::List { .. }, Some(TxnOpResponse::Get(get))) => TxnResult::Listed {
                        entries: get.kvs().iter().map(|kv| self.entry(kv)).collect(),
                        more: get.more(),
                    },
                    (TxnOp::Put { .. }, Some(TxnOpResponse::Put(put))) => {
                        TxnResult::One(match put.prev_key() {
                            Some(_) => Outcome::Replaced { revision: at },
                            None => Outcome::Created { revision: at },
                        })
                    }
                    (TxnOp::Delete(_), Some(TxnOpResponse::Delete(delete))) => {
                        TxnResult::One(if delete.deleted() > 0 {
                            Outcome::Deleted { revision: at }
                        } else {
                            Outcome::NotFound
                        })
                    }
                    (TxnOp::DeletePrefix(_), Some(TxnOpResponse::Delete(delete))) => {
                        TxnResult::PrefixDeleted {
                            deleted: u64::try_from(delete.deleted()).unwrap_or(0),
                        }
                    }
                    // etcd answers each op with its own kind of response:
                    // anything else is an answer this node cannot read.
                    _ => {
                        return Err(StorageError::Unavailable(
                            "etcd's answer to a transaction does not match its operations".into(),
                        ));
                    }
                })
            })
            .collect::<Result<_, StorageError>>()?;
        Ok(TxnOutcome {
            succeeded,
            revision: at,
            results,
        })
    }
}
