//! The flusher thread of a store with a data dir.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::commit::{Change, Committer, MAX_DEFERRED_KEYS, Ticket};
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

/// How often an idle flusher checks that the data dir's file is still the
/// one it writes to, so that a removal is logged and `/readyz` turns 503
/// within this long even while no write comes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Notes that the data dir's file is gone (`what` became of it): every
/// later write is refused. Logged once. Returns the error for the writes
/// that wait.
fn lose(committer: &mut Committer, what: String) -> StorageError {
    let lost = committer.lost.get_or_insert_with(|| {
        tracing::error!(
            "{what}: refusing every write from now on, as a restart would not find it; the keys \
             are still served from memory. Put the file back and restart, or restart to serve \
             what the data dir holds"
        );
        what.into()
    });
    StorageError::DataDirLost(lost.clone())
}

/// Checks the data dir's file unless it is already known lost.
fn check(committer: &mut Committer, disk: &Disk) {
    if committer.lost.is_none()
        && let Err(what) = disk.check()
    {
        lose(committer, what);
    }
}

fn commit_groups(inner: &Inner, disk: &mut Disk) {
    let mut last_group = 0;
    loop {
        let mut committer = inner.committer.lock();
        while committer.group.is_empty() && !committer.closing {
            if inner
                .flush_wanted
                .wait_for(&mut committer, CHECK_EVERY)
                .timed_out()
            {
                check(&mut committer, disk);
            }
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
        // A group of lease changes alone ends where the store is.
        let revision = group
            .writes
            .last()
            .map_or(committer.revision, |w| w.revision);
        drop(committer);

        let result = if group.writes.is_empty() && group.leases.is_empty() {
            Ok(())
        } else if disk.check().is_err() {
            Err(None)
        } else {
            let writes: Vec<DiskWrite<'_>> = group
                .writes
                .iter()
                .map(|write| match &write.change {
                    Change::Put(entry) => DiskWrite::Put(&write.key, entry),
                    Change::Delete | Change::Expire => DiskWrite::Remove(&write.key),
                })
                .collect();
            let started = Instant::now();
            let result = disk.write(&writes, &group.leases, revision);
            let took = started.elapsed();
            inner
                .counters
                .disk_commit(writes.len(), took, result.is_ok());
            // Removed while it was written: the write went to a file
            // a restart would not read.
            match result {
                Ok(()) if disk.check().is_err() => Err(None),
                Ok(()) => Ok(()),
                Err(err) => Err(Some(err)),
            }
        };

        let mut committer = inner.committer.lock();
        let (waiters, answer) = match result {
            Ok(()) => {
                let mut locked = inner.map.lock(group.writes.iter().map(|w| &w.hash));
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
                let durable = &mut committer.leases.durable;
                for (id, record) in group.leases {
                    match record {
                        Some(record) => durable.insert(id, record),
                        None => durable.remove(&id),
                    };
                }
                inner.settle(&mut committer);
                (group.waiters, Ok(()))
            }
            Err(failed) => {
                // Writes planned since were planned on top of this group:
                // they fail with it, and planning restarts from what applied.
                let error = match failed {
                    Some(err) => {
                        tracing::error!("writing to the data dir failed: {err}");
                        let message = format!("the data dir refused the write: {err}");
                        StorageError::DiskRefused(message.into())
                    }
                    None => {
                        let what = disk.check().err().unwrap_or_else(|| {
                            "the database file changed while the server ran".to_owned()
                        });
                        lose(&mut committer, what)
                    }
                };
                let later = std::mem::take(&mut committer.group);
                committer.pending.clear();
                committer.next = committer.revision;
                let committer = &mut *committer;
                let on_leases = committer
                    .index
                    .under("", None)
                    .filter_map(|entry| entry.lease().map(|lease| (entry.key(), lease)));
                committer
                    .leases
                    .restore(on_leases, tokio::time::Instant::now());
                let mut waiters = group.waiters;
                waiters.extend(later.waiters);
                (waiters, Err(error))
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
            let wake = due.min(Instant::now() + CHECK_EVERY);
            if inner
                .flush_wanted
                .wait_until(&mut committer, wake)
                .timed_out()
            {
                check(&mut committer, disk);
            }
        }
        check(&mut committer, disk);
        if committer.lost.is_some() {
            // Nothing more can reach the disk; what is deferred stays in
            // memory only, and new writes are refused.
            if let Some(deferred) = committer.mode.deferred_mut() {
                deferred.keys.clear();
            }
            if committer.closing {
                // The marker keeps the revision the store reached, so a
                // start on a data dir that lost its file is refused.
                let revision = committer.revision;
                drop(committer);
                disk.close(revision);
                return;
            }
            drop(committer);
            continue;
        }
        let closing = committer.closing;
        let Some(deferred) = committer.mode.deferred_mut().map(std::mem::take) else {
            return;
        };
        drop(committer);
        let started = Instant::now();
        let result = if deferred.keys.is_empty() && deferred.leases.is_empty() {
            Ok(())
        } else {
            let result = disk.write_all(&deferred.keys, &deferred.leases, deferred.revision);
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
                    now.leases.extend(later.leases);
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
