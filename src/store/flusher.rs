//! The flusher thread of a store with a data dir.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::commit::{Change, MAX_DEFERRED_KEYS, Ticket};
use super::disk::{Disk, DiskWrite};
use super::{Inner, StorageError};

/// The flusher thread. With `--fsync always` it takes each group the commit
/// path has planned, writes it to disk as one transaction, then applies it
/// and answers its waiters. Otherwise it commits the deferred writes every
/// period. A blocking thread, not a task: redb's calls block on the disk.
pub(super) fn flusher(inner: Arc<Inner>, mut disk: Disk, period: Option<Duration>) {
    match period {
        None => commit_groups(&inner, &mut disk),
        Some(period) => commit_periodically(&inner, &mut disk, period),
    }
}

fn commit_groups(inner: &Inner, disk: &mut Disk) {
    let mut last_group = 0;
    loop {
        let mut committer = inner.committer.lock();
        while committer.group.is_empty() && !committer.closing {
            inner.flush_wanted.wait(&mut committer);
        }
        if committer.group.is_empty() {
            // Closing, and nothing left to write: all that applied is on disk.
            let revision = committer.revision;
            drop(committer);
            disk.close(revision);
            return;
        }
        // Each flush costs about the same CPU whatever its size, and on a
        // busy core the writers that would fill this group may not have run
        // yet: let them, a few times, while the group is smaller than the
        // last one (cheap, and only under load: alone, a write goes at once).
        for _ in 0..8 {
            if committer.group.writes.len() >= last_group || committer.closing {
                break;
            }
            drop(committer);
            std::thread::yield_now();
            committer = inner.committer.lock();
        }
        let group = std::mem::take(&mut committer.group);
        last_group = group.writes.len();
        drop(committer);

        let result = match group.writes.last() {
            None => Ok(()),
            Some(last) => {
                let writes: Vec<DiskWrite<'_>> = group
                    .writes
                    .iter()
                    .map(|write| match &write.change {
                        Change::Put(entry) => DiskWrite::Put(&write.key, entry),
                        Change::Delete | Change::Expire => DiskWrite::Remove(&write.key),
                    })
                    .collect();
                let started = Instant::now();
                let result = disk.write(&writes, last.revision);
                let took = started.elapsed();
                inner
                    .counters
                    .disk_commit(writes.len(), took, result.is_ok());
                result
            }
        };

        let mut committer = inner.committer.lock();
        let (waiters, answer) = match result {
            Ok(()) => {
                let mut locked = inner.map.lock(group.writes.iter().map(|w| &*w.key));
                for write in group.writes {
                    if committer
                        .pending
                        .get(&write.key)
                        .is_some_and(|p| p.revision == write.revision)
                    {
                        committer.pending.remove(&write.key);
                    }
                    committer.commit(&mut locked, write);
                }
                drop(locked);
                inner.settle(&mut committer);
                (group.waiters, Ok(()))
            }
            Err(err) => {
                // Writes planned since were planned on top of this group:
                // they fail with it, and planning restarts from what applied.
                tracing::error!("writing to the data dir failed: {err}");
                let later = std::mem::take(&mut committer.group);
                committer.pending.clear();
                committer.next = committer.revision;
                let mut waiters = group.waiters;
                waiters.extend(later.waiters);
                let message = format!("the data dir refused the write: {err}");
                (waiters, Err(StorageError::DiskRefused(message.into())))
            }
        };
        drop(committer);
        for waiter in waiters {
            // A waiter whose request was cancelled has gone; nothing to tell.
            let _ = waiter.send(answer.clone());
        }
    }
}

fn commit_periodically(inner: &Inner, disk: &mut Disk, period: Duration) {
    loop {
        let mut committer = inner.committer.lock();
        let due = Instant::now() + period;
        while !committer.closing
            && Instant::now() < due
            && committer
                .mode
                .deferred()
                .is_none_or(|d| d.keys.len() < MAX_DEFERRED_KEYS)
        {
            inner.flush_wanted.wait_until(&mut committer, due);
        }
        let closing = committer.closing;
        let Some(deferred) = committer.mode.deferred_mut().map(std::mem::take) else {
            return;
        };
        drop(committer);
        let started = Instant::now();
        let result = if deferred.keys.is_empty() {
            Ok(())
        } else {
            let result = disk.write_all(&deferred.keys, deferred.revision);
            let took = started.elapsed();
            inner
                .counters
                .disk_commit(deferred.keys.len(), took, result.is_ok());
            result
        };
        match result {
            Ok(()) if closing => {
                disk.close(inner.committer.lock().revision);
                return;
            }
            Ok(()) => {}
            Err(err) => {
                // The writes stay in memory and are retried with the next commit.
                tracing::error!("committing to the data dir failed: {err}");
                let mut committer = inner.committer.lock();
                if let Some(now) = committer.mode.deferred_mut() {
                    let later = std::mem::replace(now, deferred);
                    now.keys.extend(later.keys);
                    now.revision = now.revision.max(later.revision);
                }
            }
        }
        if closing {
            return;
        }
    }
}

/// Waits until what a run planned or saw is durable, if it has to.
pub(super) async fn settled(ticket: Option<Ticket>) -> Result<(), StorageError> {
    match ticket {
        None => Ok(()),
        Some(ticket) => ticket.await.unwrap_or(Err(StorageError::ShuttingDown)),
    }
}
