//! The expiry sweeper: expires keys whose TTL ran out, as writes of their
//! own, and leases that ran out, each with all its keys in one commit.

use std::time::Duration;

use tokio::time::Instant;

use super::Store;
use super::commit::{Ticket, view};
use super::flusher::settled;

/// How many keys the sweeper expires per hold of the commit lock, so that a
/// mass expiry does not stall writers.
const SWEEP_CHUNK: usize = 1024;

/// What the sweeper does next.
enum Sweep {
    /// Sleep until this deadline, or until woken.
    Sleep(Option<Instant>),
    /// Wait for the expirations just planned to reach the disk.
    Wait(Ticket),
}

impl Store {
    /// Expires keys whose deadline has passed, a chunk at a time.
    fn sweep(&self) -> Sweep {
        let inner = &*self.inner;
        loop {
            let mut committer = inner.committer.lock();
            let now = Instant::now();
            let due = committer.expiry.due(now, SWEEP_CHUNK);
            let due_lease = committer.leases.due(now);
            // With the data dir lost, an expiry is a write that cannot be
            // made either: expired keys stay unserved, unswept.
            let stopped = committer.closing || committer.lost.is_some();
            if (due.is_empty() && due_lease.is_none()) || stopped {
                // The sweeper is about to look at the next deadline anyway.
                committer.wake_sweeper = false;
                let next = match (committer.expiry.next(), committer.leases.next()) {
                    (Some(key), Some(lease)) => Some(key.min(lease)),
                    (key, lease) => key.or(lease),
                };
                return Sweep::Sleep(next.filter(|_| !stopped));
            }
            let hashes = inner.map.hashes(due.iter().map(|key| &**key));
            let mut locked = inner.map.lock(&hashes);
            for (key, hash) in due.iter().zip(hashes) {
                // A due key may already have an expiry or a new write planned.
                if view(&committer.pending, &locked, key, hash).is_some_and(|e| e.is_expired(now)) {
                    committer.expire(&mut locked, (key, hash), now);
                }
            }
            drop(locked);
            if let Some(lease) = due_lease {
                self.end_lease(&mut committer, lease, true);
            }
            if committer.mode.is_grouped() {
                let ticket = committer.ticket();
                inner.flush_wanted.notify_one();
                return Sweep::Wait(ticket);
            }
            inner.settle(&mut committer);
        }
    }

    /// The expiry sweeper: sleeps until the earliest deadline (or until a
    /// write sets an earlier one) and expires what is due. Runs forever; the
    /// server drops it on shutdown.
    pub async fn run_expiry(self) {
        loop {
            let notified = self.inner.sweeper.notified();
            match self.sweep() {
                Sweep::Wait(ticket) => {
                    if let Err(err) = settled(Some(ticket)).await {
                        // The disk refused; retry later rather than spin.
                        tracing::warn!("expiring keys failed: {err}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Sweep::Sleep(Some(deadline)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = notified => {}
                    }
                }
                Sweep::Sleep(None) => notified.await,
            }
        }
    }
}
