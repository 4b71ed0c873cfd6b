//! Fenced writes on the memory engine: each fence is judged under the
//! commit lock, in the same hold as the write it guards, so no release or
//! acquisition can fall between the check and the commit.

use tokio::time::Instant;

use super::commit::Committer;
use super::txn::State;
use super::{LockMap, StorageError};
use crate::domain::{Fence, head};

impl Committer {
    /// `Ok` if every fence holds: its queue's head has the fence's token
    /// and a lease still alive (a lease past its deadline that the sweeper
    /// has not ended yet holds nothing).
    pub(super) fn fences_hold(
        &self,
        map: &LockMap,
        fences: &[Fence],
        now: Instant,
    ) -> Result<(), StorageError> {
        if fences.is_empty() {
            return Ok(());
        }
        let state = State {
            pending: &self.pending,
            index: &self.index,
            map,
            now,
        };
        for fence in fences {
            let prefix = fence.prefix();
            let held = head(state.under(&prefix)).is_some_and(|head| {
                let meta = head.meta();
                meta.create_revision == fence.token
                    && meta
                        .lease
                        .is_none_or(|lease| self.leases.alive(lease, now).is_some())
            });
            if !held {
                return Err(StorageError::FenceLost(fence.clone()));
            }
        }
        Ok(())
    }
}
