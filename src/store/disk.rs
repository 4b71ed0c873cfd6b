//! The on-disk copy of the store, kept with `--data-dir`: a redb database.
//!
//! redb is a crash-safe embedded B-tree (copy-on-write pages, checksummed
//! commit slots): a commit is all there or not there after a crash, which
//! is what makes a group of requests, and a batch inside it, atomic on disk.
//! The store still serves everything from memory; the disk is written by
//! the commit path (one redb transaction per group of requests) and read
//! once, at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::lease_table::LeaseRecord;
use super::{Entry, Key, Meta};
use crate::domain::LeaseId;

/// When a write counts as on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Every group of writes is committed and flushed (fdatasync) before any
    /// of it is answered.
    Always,
    /// Writes are answered at once and committed, as one transaction, every
    /// second.
    Interval,
    /// Like `Interval`, every 30 s: the cadence of an OS's own writeback.
    Never,
}

impl Fsync {
    /// How often deferred writes are committed; `None`: every group at once.
    pub fn period(self) -> Option<Duration> {
        match self {
            Self::Always => None,
            Self::Interval => Some(Duration::from_secs(1)),
            Self::Never => Some(Duration::from_secs(30)),
        }
    }
}

/// The database file inside the data dir.
pub const FILE_NAME: &str = "kv-store.redb";

/// A small file beside the database holding the revision the data dir had
/// when a server last opened or cleanly closed it. A database found at an
/// older revision (an old copy put back, or redb rolling a damaged last
/// commit back) is refused instead of reusing revisions clients hold as
/// ETags and watch ids.
pub const MARKER_NAME: &str = "kv-store.revision";

/// This build's on-disk format. A data dir with a larger number was written
/// by a newer, incompatible kv-store and is refused; one with format 1 or 2
/// is rewritten in this format when opened.
pub const FORMAT: u64 = 3;

/// key → [`encode`]d entry.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// lease id → its TTL in seconds (8 bytes, little-endian), then the name of
/// the token that granted it (UTF-8, empty for none).
const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
/// "format" → [`FORMAT`], "revision" → the store revision of the last commit.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// redb's page cache. The full data set lives in the store's own map, so
/// redb only needs the B-tree paths that writes walk.
const CACHE_BYTES: usize = 64 << 20;

/// Why a data dir could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another process holds the database.
    InUse(PathBuf),
    /// Written by a newer kv-store, in a format this build cannot read.
    NewerFormat {
        path: PathBuf,
        found: u64,
    },
    /// redb's checksums do not match: the file was changed outside redb or
    /// damaged on disk, and cannot be repaired.
    Corrupt {
        path: PathBuf,
        detail: String,
    },
    /// The database file is empty (truncated, or never written).
    Empty(PathBuf),
    /// The database is at an older revision than the marker says the data
    /// dir reached, or missing while the marker says there was data.
    RevisionBackwards {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    Failed {
        path: PathBuf,
        error: redb::Error,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InUse(path) => write!(
                f,
                "{} is in use by another process (another kv-store on the same --data-dir?)",
                path.display()
            ),
            Self::NewerFormat { path, found } => write!(
                f,
                "{} has data format {found}, newer than this kv-store reads ({FORMAT}); \
                 run a newer kv-store",
                path.display()
            ),
            Self::Corrupt { path, detail } => write!(
                f,
                "{} is damaged ({detail}): its checksums do not match what redb wrote. Restore \
                 the data dir from a backup, or move the file away to start an empty store",
                path.display()
            ),
            Self::Empty(path) => write!(
                f,
                "{} is empty (0 bytes): it was truncated. Restore it from a backup, or delete \
                 it and {MARKER_NAME} beside it to start an empty store",
                path.display()
            ),
            Self::RevisionBackwards {
                path,
                found,
                expected,
            } => write!(
                f,
                "{} is at revision {found}, but this data dir already reached revision \
                 {expected} ({MARKER_NAME}): the file is older than the data dir (an old copy \
                 restored, or a damaged last commit rolled back). Restore the newest copy; to \
                 serve this older data anyway, delete {MARKER_NAME}",
                path.display()
            ),
            Self::Failed { path, error } => write!(f, "cannot open {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for OpenError {}

impl OpenError {
    /// What a redb error on opening or reading `path` means for the operator.
    fn refused(path: &Path, err: redb::Error) -> Self {
        let path = path.to_owned();
        match err {
            redb::Error::DatabaseAlreadyOpen => Self::InUse(path),
            redb::Error::Corrupted(detail) => Self::Corrupt { path, detail },
            // A file cut short ends before the pages its header names.
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                Self::Corrupt {
                    path,
                    detail: format!("it is shorter than its header says: {io}"),
                }
            }
            error => Self::Failed { path, error },
        }
    }
}

/// What the data dir held at start.
pub struct Recovered {
    pub revision: u64,
    pub entries: Vec<Entry>,
    pub leases: Vec<(LeaseId, LeaseRecord)>,
    /// Keys whose deadline passed while the server was down; removed.
    pub expired: usize,
}

/// One write of a commit group, as it goes to disk.
pub enum DiskWrite<'a> {
    Put(&'a str, &'a Entry),
    Remove(&'a str),
}

impl DiskWrite<'_> {
    fn key(&self) -> &str {
        match self {
            Self::Put(key, _) | Self::Remove(key) => key,
        }
    }

    fn entry(&self) -> Option<&Entry> {
        match self {
            Self::Put(_, entry) => Some(entry),
            Self::Remove(_) => None,
        }
    }
}

/// Which file a path names: its device and inode. A file removed, or
/// replaced by another (a copy moved over it), no longer has the identity
/// the database was opened with, though redb's open handle still writes
/// to the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            device: meta.dev(),
            inode: meta.ino(),
        })
    }
}

/// The open database. Only the commit path's flusher thread touches it.
pub struct Disk {
    path: PathBuf,
    /// The file the database was opened from: what `path` must still name.
    id: FileId,
    /// [`MARKER_NAME`] in the data dir.
    marker: PathBuf,
    /// `None` after an I/O error: redb refuses every later operation, so the
    /// next group reopens the file, which recovers the last good commit.
    db: Option<Database>,
}

impl Disk {
    /// Opens (or creates) the database in `dir`, verifies every page's
    /// checksum and reads it back.
    pub fn open(dir: &Path) -> Result<(Self, Recovered), OpenError> {
        let path = dir.join(FILE_NAME);
        let marker = dir.join(MARKER_NAME);
        let failed = |error: redb::Error| OpenError::Failed {
            path: path.clone(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(|err| failed(err.into()))?;
        let reached = read_marker(&marker).map_err(|err| failed(err.into()))?;
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 => return Err(OpenError::Empty(path)),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if let Some(expected) = reached.filter(|&r| r > 0) {
                    return Err(OpenError::RevisionBackwards {
                        path,
                        found: 0,
                        expected,
                    });
                }
            }
            Err(err) => return Err(failed(err.into())),
        }
        let refused = |err: redb::Error| OpenError::refused(&path, err);
        let db = open_database(&path, Verify::EveryPage).map_err(refused)?;
        let recovered = recover(&db).map_err(refused)?;
        let recovered = match recovered {
            Ok(recovered) => recovered,
            Err(found) => return Err(OpenError::NewerFormat { path, found }),
        };
        let newest_entry = recovered
            .entries
            .iter()
            .map(Entry::mod_revision)
            .max()
            .unwrap_or(0);
        let expected = reached.unwrap_or(0).max(newest_entry);
        if recovered.revision < expected {
            return Err(OpenError::RevisionBackwards {
                path,
                found: recovered.revision,
                expected,
            });
        }
        write_marker(&marker, recovered.revision).map_err(|err| failed(err.into()))?;
        let id = FileId::of(&path).map_err(|err| failed(err.into()))?;
        let disk = Self {
            path,
            id,
            marker,
            db: Some(db),
        };
        Ok((disk, recovered))
    }

    /// Whether the database path still names the file this process opened:
    /// `Err` says what became of it (removed, replaced, unreadable). A write
    /// to the open file after that would be acknowledged and then lost at
    /// the next start, so the caller stops writing.
    pub fn check(&self) -> Result<(), String> {
        let path = self.path.display();
        match FileId::of(&self.path) {
            Ok(id) if id == self.id => Ok(()),
            Ok(_) => Err(format!(
                "the database file {path} was replaced by another file while the server ran"
            )),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "the database file {path} was removed (or its directory) while the server ran"
            )),
            Err(err) => Err(format!("the database file {path} cannot be checked: {err}")),
        }
    }

    /// Records `revision` as the one the data dir reached, at a clean stop.
    pub fn close(&mut self, revision: u64) {
        if let Err(err) = write_marker(&self.marker, revision) {
            tracing::warn!("cannot write {}: {err}", self.marker.display());
        }
    }

    /// Commits one group of writes and lease changes (`None`: ended),
    /// ending at `revision`, as one transaction on stable storage.
    pub fn write(
        &mut self,
        writes: &[DiskWrite<'_>],
        leases: &[(LeaseId, Option<LeaseRecord>)],
        revision: u64,
    ) -> Result<(), redb::Error> {
        self.commit(
            writes.iter().map(|w| (w.key(), w.entry())),
            leases.iter().map(|(id, record)| (*id, record.as_ref())),
            revision,
        )
    }

    /// Commits the latest state of many keys and leases (`None`: removed),
    /// as one transaction on stable storage (the periodic commit).
    pub fn write_all(
        &mut self,
        keys: &HashMap<Key, Option<Entry>>,
        leases: &HashMap<LeaseId, Option<LeaseRecord>>,
        revision: u64,
    ) -> Result<(), redb::Error> {
        self.commit(
            keys.iter().map(|(k, e)| (&**k, e.as_ref())),
            leases.iter().map(|(id, record)| (*id, record.as_ref())),
            revision,
        )
    }

    fn commit<'a>(
        &mut self,
        writes: impl Iterator<Item = (&'a str, Option<&'a Entry>)>,
        leases: impl Iterator<Item = (LeaseId, Option<&'a LeaseRecord>)>,
        revision: u64,
    ) -> Result<(), redb::Error> {
        let result = self.try_commit(writes, leases, revision);
        if result.is_err() {
            self.db = None;
        }
        result
    }

    fn try_commit<'a>(
        &mut self,
        writes: impl Iterator<Item = (&'a str, Option<&'a Entry>)>,
        leases: impl Iterator<Item = (LeaseId, Option<&'a LeaseRecord>)>,
        revision: u64,
    ) -> Result<(), redb::Error> {
        let db = match &mut self.db {
            Some(db) => db,
            None => self
                .db
                .insert(open_database(&self.path, Verify::AfterCrash)?),
        };
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut keys = txn.open_table(KEYS)?;
            let mut buffer = Vec::new();
            for (key, entry) in writes {
                match entry {
                    Some(entry) => {
                        encode(entry, &mut buffer);
                        keys.insert(key, buffer.as_slice())?;
                    }
                    None => {
                        keys.remove(key)?;
                    }
                }
            }
            let mut table = txn.open_table(LEASES)?;
            for (id, record) in leases {
                match record {
                    Some(record) => {
                        encode_lease(record, &mut buffer);
                        table.insert(id.get(), buffer.as_slice())?;
                    }
                    None => {
                        table.remove(id.get())?;
                    }
                }
            }
            txn.open_table(META)?.insert("revision", revision)?;
        }
        txn.commit()?;
        Ok(())
    }
}

fn encode_lease(record: &LeaseRecord, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&record.ttl.to_le_bytes());
    out.extend_from_slice(record.owner.as_deref().unwrap_or_default().as_bytes());
}

fn decode_lease(bytes: &[u8]) -> Option<LeaseRecord> {
    let (ttl, owner) = bytes.split_at_checked(8)?;
    let owner = std::str::from_utf8(owner).ok()?;
    Some(LeaseRecord {
        ttl: u64::from_le_bytes(ttl.try_into().ok()?),
        owner: (!owner.is_empty()).then(|| owner.into()),
    })
}

/// How much of the file an open checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Every page's checksum, whatever the last stop was: at start.
    EveryPage,
    /// What redb checks by itself (after a crash): reopening after an I/O
    /// error, on a file this process has been writing.
    AfterCrash,
}

fn open_database(path: &Path, verify: Verify) -> Result<Database, redb::Error> {
    Ok(Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(verify == Verify::EveryPage)
        .create(path)?)
}

/// The revision in the marker file, if there is one.
fn read_marker(marker: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::read_to_string(marker) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold a revision: {text:?}", marker.display()),
            )
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Replaces the marker file with `revision`, atomically and durably.
fn write_marker(marker: &Path, revision: u64) -> std::io::Result<()> {
    use std::io::Write;
    let staged = marker.with_extension("revision.new");
    let mut file = std::fs::File::create(&staged)?;
    writeln!(file, "{revision}")?;
    file.sync_all()?;
    std::fs::rename(&staged, marker)?;
    if let Some(dir) = marker.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads every live key back; `Err(found)` if the format is newer than ours.
fn recover(db: &Database) -> Result<Result<Recovered, u64>, redb::Error> {
    let txn = db.begin_write()?;
    let mut recovered = Recovered {
        revision: 0,
        entries: Vec::new(),
        leases: Vec::new(),
        expired: 0,
    };
    {
        let mut meta = txn.open_table(META)?;
        let format = meta.get("format")?.map(|v| v.value());
        let layout = match format {
            Some(found) if found > FORMAT => return Ok(Err(found)),
            Some(1) => Layout::V1,
            Some(2) => Layout::V2,
            _ => Layout::V3,
        };
        if format != Some(FORMAT) {
            meta.insert("format", FORMAT)?;
        }
        recovered.revision = meta.get("revision")?.map_or(0, |v| v.value());

        let mut keys = txn.open_table(KEYS)?;
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut expired = Vec::new();
        for row in keys.iter()? {
            let (key, bytes) = row?;
            let Some(entry) = decode(key.value(), bytes.value(), &layout, now, wall) else {
                return Err(redb::StorageError::Corrupted(format!(
                    "the entry of key {:?} cannot be read",
                    key.value()
                ))
                .into());
            };
            match entry {
                Some(entry) => recovered.entries.push(entry),
                None => expired.push(key.value().to_owned()),
            }
        }
        for key in &expired {
            keys.remove(key.as_str())?;
        }
        if layout != Layout::V3 {
            let mut buffer = Vec::new();
            for entry in &recovered.entries {
                encode(entry, &mut buffer);
                keys.insert(entry.key(), buffer.as_slice())?;
            }
        }
        recovered.expired = expired.len();

        let leases = txn.open_table(LEASES)?;
        for row in leases.iter()? {
            let (id, bytes) = row?;
            let lease = LeaseId::new(id.value()).zip(decode_lease(bytes.value()));
            let Some(lease) = lease else {
                return Err(redb::StorageError::Corrupted(format!(
                    "the record of lease {:x} cannot be read",
                    id.value()
                ))
                .into());
            };
            recovered.leases.push(lease);
        }
    }
    txn.commit()?;
    Ok(Ok(recovered))
}

/// Where an entry's fields sit in its bytes: little-endian u64 fields, then
/// the value's UTF-8 bytes.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    /// `None`: not kept; read as the mod revision (and version 1).
    create_revision: Option<usize>,
    mod_revision: usize,
    version: Option<usize>,
    deadline: usize,
    /// `None`: not kept (no key was on a lease).
    lease: Option<usize>,
    value: usize,
}

impl Layout {
    /// Format 1: create revision, mod revision, version, deadline, value.
    const V1: Self = Self {
        create_revision: Some(0),
        mod_revision: 8,
        version: Some(16),
        deadline: 24,
        lease: None,
        value: 32,
    };
    /// Format 2: mod revision, deadline, value. (It dropped the create
    /// revision and version, which nothing served then: a key read from it
    /// counts as created by its last write.)
    const V2: Self = Self {
        create_revision: None,
        mod_revision: 0,
        version: None,
        deadline: 8,
        lease: None,
        value: 16,
    };
    /// Format 3: format 1's fields, then the lease (0 for none): every
    /// field of a key's [`Meta`].
    const V3: Self = Self {
        lease: Some(32),
        value: 40,
        ..Self::V1
    };
}

/// An entry on disk, in [`Layout::V3`]. The deadline is in Unix
/// milliseconds, 0 for none: wall-clock time, so a key whose deadline
/// passed while the server was down is gone on start.
fn encode(entry: &Entry, out: &mut Vec<u8>) {
    out.clear();
    let deadline = entry.deadline_unix_millis().unwrap_or(0);
    let meta = entry.meta();
    for field in [
        meta.create_revision,
        meta.mod_revision,
        meta.version,
        deadline,
        meta.lease.map_or(0, LeaseId::get),
    ] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(entry.value_str().as_bytes());
}

/// The entry of `key` in `bytes`: `None` if they are not an entry,
/// `Some(None)` if it expired at `wall`.
fn decode(
    key: &str,
    bytes: &[u8],
    layout: &Layout,
    now: Instant,
    wall: SystemTime,
) -> Option<Option<Entry>> {
    let field = |at: usize| {
        let raw = bytes.get(at..at + 8)?;
        Some(u64::from_le_bytes(raw.try_into().ok()?))
    };
    let mod_revision = field(layout.mod_revision)?;
    let meta = Meta {
        create_revision: match layout.create_revision {
            Some(at) => field(at)?,
            None => mod_revision,
        },
        mod_revision,
        version: match layout.version {
            Some(at) => field(at)?,
            None => 1,
        },
        lease: match layout.lease {
            Some(at) => LeaseId::new(field(at)?),
            None => None,
        },
    };
    let deadline = field(layout.deadline)?;
    let value = bytes.get(layout.value..)?;
    std::str::from_utf8(value).ok()?;
    let deadline = match deadline {
        0 => None,
        millis => {
            let at = UNIX_EPOCH + Duration::from_millis(millis);
            match at.duration_since(wall) {
                Ok(left) if !left.is_zero() => Some(now.checked_add(left)?),
                _ => return Some(None),
            }
        }
    };
    Some(Some(Entry::new(key, value, meta, deadline)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_past_deadlines_expire() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let meta = Meta {
            create_revision: 4,
            mod_revision: 9,
            version: 3,
            lease: LeaseId::new(0x2a),
        };
        let entry = Entry::new(
            "k",
            "héllo".as_bytes(),
            meta,
            Some(now + Duration::from_secs(60)),
        );
        let mut bytes = Vec::new();
        encode(&entry, &mut bytes);
        let back = decode("k", &bytes, &Layout::V3, now, wall)
            .flatten()
            .expect("decodes");
        assert_eq!(
            (back.key(), back.value_str(), back.meta()),
            ("k", "héllo", meta)
        );
        let left = back.deadline().expect("deadline") - now;
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));

        let later = wall + Duration::from_secs(61);
        assert!(matches!(
            decode("k", &bytes, &Layout::V3, now, later),
            Some(None)
        ));
        assert!(decode("k", &bytes[..36], &Layout::V3, now, wall).is_none());
    }

    #[test]
    fn lease_records_round_trip() {
        let mut bytes = Vec::new();
        for owner in [None, Some("deploy-bot".into())] {
            let record = LeaseRecord { ttl: 30, owner };
            encode_lease(&record, &mut bytes);
            assert_eq!(decode_lease(&bytes), Some(record));
        }
        assert_eq!(decode_lease(&bytes[..7]), None);
    }

    #[test]
    fn format_1_entries_still_read() {
        let mut bytes = Vec::new();
        for field in [3u64, 9, 4, 0] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        bytes.extend_from_slice(b"old");
        let now = Instant::now();
        let back = decode("k", &bytes, &Layout::V1, now, SystemTime::now())
            .flatten()
            .expect("decodes");
        let meta = Meta {
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            lease: None,
        };
        assert_eq!((back.value_str(), back.meta()), ("old", meta));
        assert_eq!(back.deadline(), None);
    }

    #[test]
    fn format_2_entries_read_as_created_by_their_last_write() {
        let mut bytes = Vec::new();
        for field in [9u64, 0] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        bytes.extend_from_slice(b"two");
        let now = Instant::now();
        let back = decode("k", &bytes, &Layout::V2, now, SystemTime::now())
            .flatten()
            .expect("decodes");
        assert_eq!((back.value_str(), back.meta()), ("two", Meta::created(9)));
    }
}
