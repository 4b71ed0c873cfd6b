//! Building a data dir from a backup's contents (`kv-store restore`): the
//! keys and leases written in transactions of a batch each, the data dir
//! at the backup's revision, so a server started on it serves the store as
//! it was, with the same revisions and ETags.

use std::path::Path;

use super::disk::{Disk, DiskWrite, FILE_NAME, MARKER_NAME};
use super::lease_table::LeaseRecord;
use crate::domain::{Entry, LeaseBackup};

/// Keys per transaction.
const BATCH: usize = 10_000;

/// Writes `entries` and `leases` into a new data dir at `dir` (which must
/// hold no store), at `revision`. On an error nothing is left behind.
pub fn write_data_dir<E: std::fmt::Display>(
    dir: &Path,
    revision: u64,
    leases: &[LeaseBackup],
    entries: impl Iterator<Item = Result<Entry, E>>,
) -> Result<u64, String> {
    let file = dir.join(FILE_NAME);
    if file.exists() {
        return Err(format!(
            "{} already holds a store; restore into an empty or new directory",
            dir.display()
        ));
    }
    let written = fill(dir, revision, leases, entries);
    if written.is_err() {
        // Only what this restore created: the directory was checked empty
        // of a store above.
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(dir.join(MARKER_NAME));
    }
    written
}

fn fill<E: std::fmt::Display>(
    dir: &Path,
    revision: u64,
    leases: &[LeaseBackup],
    entries: impl Iterator<Item = Result<Entry, E>>,
) -> Result<u64, String> {
    let (mut disk, _) = Disk::open(dir).map_err(|err| err.to_string())?;
    let records: Vec<_> = leases
        .iter()
        .map(|lease| {
            let record = LeaseRecord {
                ttl: lease.ttl,
                owner: lease.owner.clone(),
            };
            (lease.id, Some(record))
        })
        .collect();
    disk.write(&[], &records, revision)
        .map_err(|err| err.to_string())?;
    let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
    let mut written = 0;
    let mut entries = entries.peekable();
    while entries.peek().is_some() {
        batch.clear();
        for entry in entries.by_ref().take(BATCH) {
            batch.push(entry.map_err(|err| err.to_string())?);
        }
        let writes: Vec<DiskWrite<'_>> = batch
            .iter()
            .map(|entry| DiskWrite::Put(entry.key(), entry))
            .collect();
        disk.write(&writes, &[], revision)
            .map_err(|err| err.to_string())?;
        written += batch.len() as u64;
    }
    disk.close(revision);
    Ok(written)
}
