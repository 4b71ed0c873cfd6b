//! Fenced writes on etcd. A fence names a queue and a token; etcd can only
//! compare named keys (or every key of a range), so the queue's head is
//! read first and the write's transaction then compares: that key still has
//! the token as its create revision, and no key of the queue has a lower
//! one. Both hold at the commit exactly when the fence does (a key created
//! later has a later revision, so none can get ahead of the head). The
//! write's own transaction runs nested inside one on those compares, so a
//! lost fence runs neither of its branches.

use etcd_client::{
    Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};

use super::{EtcdStore, Failure, revision};
use crate::domain::{Fence, StorageError};

/// A transaction's answer once its fences are taken off: its own answer,
/// and the revision of the commit (only the outer answer has a header).
pub(super) struct Unfenced {
    pub answer: TxnResponse,
    pub revision: u64,
}

impl EtcdStore {
    /// The compares that hold exactly when every fence holds; a fence whose
    /// queue's head already has another token is lost at once.
    pub(super) async fn fence_compares(
        &self,
        fences: &[Fence],
    ) -> Result<Vec<Compare>, StorageError> {
        let mut compares = Vec::with_capacity(fences.len() * 2);
        for fence in fences {
            let prefix = self.full(&fence.prefix());
            let end = self.keys_end(&prefix);
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1);
            let answer = self
                .call(|| {
                    let mut kv = self.inner.client.kv_client();
                    let (prefix, options) = (prefix.clone(), options.clone());
                    async move { kv.get(prefix, Some(options)).await }
                })
                .await
                .map_err(Failure::storage)?;
            let token = i64::try_from(fence.token).ok().filter(|token| *token > 0);
            match (answer.kvs().first(), token) {
                (Some(head), Some(token)) if head.create_revision() == token => {
                    compares.push(Compare::create_revision(
                        head.key().to_vec(),
                        CompareOp::Equal,
                        token,
                    ));
                    compares.push(
                        Compare::create_revision(prefix, CompareOp::Greater, token - 1)
                            .with_range(end),
                    );
                }
                _ => return Err(StorageError::FenceLost(fence.clone())),
            }
        }
        Ok(compares)
    }

    /// Runs `txn` (within `--etcd-timeout`) only if the `fences` (their
    /// compares, `compares`) hold.
    pub(super) async fn run_fenced(
        &self,
        txn: Txn,
        fences: &[Fence],
        compares: &[Compare],
    ) -> Result<Unfenced, Failure> {
        let request = if compares.is_empty() {
            txn
        } else {
            Txn::new()
                .when(compares.to_vec())
                .and_then(vec![TxnOp::txn(txn)])
        };
        let answer = self
            .call(|| {
                let mut kv = self.inner.client.kv_client();
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await?;
        let at = answer
            .header()
            .map_or(0, |header| revision(header.revision()));
        let answer = match fences.first() {
            None => answer,
            Some(fence) if !answer.succeeded() => {
                return Err(Failure::Fenced(fence.clone()));
            }
            Some(_) => match answer.op_responses().into_iter().next() {
                Some(TxnOpResponse::Txn(inner)) => inner,
                _ => {
                    return Err(Failure::Unavailable(
                        "etcd's answer to a fenced transaction holds no transaction".to_owned(),
                    ));
                }
            },
        };
        Ok(Unfenced {
            answer,
            revision: at,
        })
    }
}
