//! `Entry`: one key's record, as the map keeps it.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use triomphe::{Arc, ThinArc};

use super::{LeaseId, Value};

/// A key's place in the store's history, as etcd's `KeyValue` keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The revision that created the key; kept across updates, new after
    /// a delete or an expiry.
    pub create_revision: u64,
    /// The revision of the latest write to the key: its ETag.
    pub mod_revision: u64,
    /// Writes to the key since it was created (1 for the first).
    pub version: u64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl Meta {
    /// A key created at `revision`.
    pub fn created(revision: u64) -> Self {
        Self {
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: None,
        }
    }

    /// The same key written again at `revision` (on no lease: a write
    /// says its own with [`Meta::on_lease`]).
    pub fn rewritten(self, revision: u64) -> Self {
        Self {
            mod_revision: revision,
            version: self.version.saturating_add(1),
            lease: None,
            ..self
        }
    }

    /// The same, attached to `lease`.
    pub fn on_lease(self, lease: Option<LeaseId>) -> Self {
        Self { lease, ..self }
    }
}

/// Longest key an entry holds, in bytes: its length shares a word with the
/// entry's flags. (`--max-key-bytes` may not be larger.)
pub const MAX_KEY_BYTES: usize = (1 << 24) - 1;

/// What an entry keeps besides its bytes: 24 bytes, so that a key of 15
/// bytes with a value of 100 still fits a 160-byte malloc chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    mod_revision: u64,
    create_revision: u64,
    /// The version, or [`WIDE_VERSION`] when it does not fit in 32 bits
    /// (it then sits in the record, before the key).
    version: u32,
    /// The key's length (low 24 bits) and which optional fields the record
    /// holds before the key (the flags above them).
    shape: u32,
}

const KEY_LEN_MASK: u32 = (1 << 24) - 1;
const HAS_DEADLINE: u32 = 1 << 24;
const HAS_WIDE_VERSION: u32 = 1 << 25;
const HAS_LEASE: u32 = 1 << 26;
const WIDE_VERSION: u32 = u32::MAX;

/// Bytes each optional field takes at the front of the record.
const FIELD_BYTES: usize = 8;

/// One key's record: its key, value, revisions and deadline in a single
/// reference-counted allocation behind a thin (one-word) pointer.
///
/// The map holds a million of these, so their size is the store's size:
/// separate allocations for key, value and record would cost three malloc
/// headers and three pointers per key, and a fat pointer would double every
/// hash table slot. One allocation is what gets a key of 15 bytes with a
/// value of 100 into a 160-byte malloc chunk. The deadline, a version past
/// 32 bits and a lease are stored only for keys that have one.
///
/// It is reference counted (`triomphe`'s `ThinArc`: one count, no weak) so
/// that a GET response, a watch event and the history can share the record
/// that was current when they were taken instead of copying the value, and
/// so that a write that replaces it does not wait for them.
///
/// Layout of the bytes: `[deadline][wide version][lease][key][value]`, the
/// first three only when the header's flags say so; the key and value are UTF-8,
/// checked before they got here.
#[derive(Clone)]
pub struct Entry(ThinArc<Header, u8>);

/// The instant deadlines are counted from, in nanoseconds: an `Instant` has
/// no stable representation of its own. Deadlines are tokio's instants, so
/// a test on a paused clock moves them with it.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Starts the deadline clock; call before taking any `Instant` that may
/// become a deadline, so no deadline lies before it.
pub fn start_clock() {
    epoch();
}

impl Entry {
    /// A record for `key` holding `value` (UTF-8, checked by the caller). A
    /// deadline that cannot be represented (centuries away) is no deadline.
    /// A key longer than [`MAX_KEY_BYTES`] is cut to it (the server refuses
    /// such keys before they get here).
    pub fn new(key: &str, value: &[u8], meta: Meta, deadline: Option<Instant>) -> Self {
        let deadline = deadline.and_then(|deadline| {
            u64::try_from(deadline.saturating_duration_since(epoch()).as_nanos()).ok()
        });
        let key = &key.as_bytes()[..key.len().min(MAX_KEY_BYTES)];
        let narrow = u32::try_from(meta.version)
            .ok()
            .filter(|&version| version != WIDE_VERSION);
        let mut shape = key.len() as u32;
        if deadline.is_some() {
            shape |= HAS_DEADLINE;
        }
        if narrow.is_none() {
            shape |= HAS_WIDE_VERSION;
        }
        if meta.lease.is_some() {
            shape |= HAS_LEASE;
        }
        let header = Header {
            mod_revision: meta.mod_revision,
            create_revision: meta.create_revision,
            version: narrow.unwrap_or(WIDE_VERSION),
            shape,
        };
        let deadline = deadline.map(u64::to_le_bytes);
        let wide = narrow.is_none().then(|| meta.version.to_le_bytes());
        let lease = meta.lease.map(|lease| lease.get().to_le_bytes());
        fn field(bytes: &Option<[u8; FIELD_BYTES]>) -> &[u8] {
            bytes.as_ref().map_or(&[], |bytes| bytes)
        }
        let parts = [field(&deadline), field(&wide), field(&lease), key, value];
        let len = parts.iter().map(|part| part.len()).sum();
        // Allocated zeroed, then filled with copies: triomphe builds a
        // record from one slice or from an exact-size iterator only.
        let mut record = ThinArc::from_header_and_iter(header, std::iter::repeat_n(0, len));
        record.with_arc_mut(|record| {
            // Just made, so not shared: `get_mut` always succeeds.
            if let Some(record) = Arc::get_mut(record) {
                let mut rest = record.slice_mut();
                for part in parts {
                    let (here, after) = rest.split_at_mut(part.len());
                    here.copy_from_slice(part);
                    rest = after;
                }
            }
        });
        Self(record)
    }

    fn header(&self) -> &Header {
        &self.0.header.header
    }

    /// Where the optional field `flag` starts, if the record holds it.
    fn field(&self, flag: u32) -> Option<u64> {
        let shape = self.header().shape;
        if shape & flag == 0 {
            return None;
        }
        // The fields are in flag order: skip those before this one.
        let before = (shape & (flag - 1) & !KEY_LEN_MASK).count_ones() as usize;
        let at = before * FIELD_BYTES;
        let raw = self.0.slice.get(at..at + FIELD_BYTES)?;
        Some(u64::from_le_bytes(raw.try_into().ok()?))
    }

    fn key_start(&self) -> usize {
        (self.header().shape & !KEY_LEN_MASK).count_ones() as usize * FIELD_BYTES
    }

    fn value_start(&self) -> usize {
        self.key_start() + (self.header().shape & KEY_LEN_MASK) as usize
    }

    pub fn key(&self) -> &str {
        // Built from a `&str` in `new` and never changed.
        std::str::from_utf8(self.key_bytes()).unwrap_or_default()
    }

    /// The key's bytes, for comparing without checking UTF-8 again.
    pub fn key_bytes(&self) -> &[u8] {
        &self.0.slice[self.key_start()..self.value_start()]
    }

    pub fn value_str(&self) -> &str {
        // Checked UTF-8 when it was given to `new`, and never changed.
        std::str::from_utf8(self.value_bytes()).unwrap_or_default()
    }

    pub fn value_bytes(&self) -> &[u8] {
        &self.0.slice[self.value_start()..]
    }

    /// The value, sharing this record rather than copying it.
    pub fn value(&self) -> Value {
        Value::of(self.clone())
    }

    pub fn mod_revision(&self) -> u64 {
        self.header().mod_revision
    }

    /// The key's revisions and version.
    pub fn meta(&self) -> Meta {
        let header = self.header();
        let version = match header.version {
            WIDE_VERSION => self.field(HAS_WIDE_VERSION).unwrap_or(u64::MAX),
            narrow => u64::from(narrow),
        };
        Meta {
            create_revision: header.create_revision,
            mod_revision: header.mod_revision,
            version,
            lease: self.lease(),
        }
    }

    /// The lease the key is attached to, if any.
    pub fn lease(&self) -> Option<LeaseId> {
        self.field(HAS_LEASE).and_then(LeaseId::new)
    }

    /// When the key expires, if it has a TTL.
    pub fn deadline(&self) -> Option<Instant> {
        let nanos = self.field(HAS_DEADLINE)?;
        Some(epoch() + Duration::from_nanos(nanos))
    }

    /// Whole seconds until the deadline, rounded up (at least 1: an
    /// expired entry is never served).
    pub fn ttl_left(&self) -> Option<u64> {
        self.deadline().map(|deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            left.as_secs()
                .saturating_add(u64::from(left.subsec_nanos() > 0))
                .max(1)
        })
    }

    /// The deadline as a wall-clock moment, Unix milliseconds (at least 1):
    /// what outlives this process (the data dir, a backup) keeps it so.
    pub fn deadline_unix_millis(&self) -> Option<u64> {
        self.deadline().map(|deadline| {
            let wall = SystemTime::now() + deadline.saturating_duration_since(Instant::now());
            let millis = wall
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            u64::try_from(millis).unwrap_or(u64::MAX).max(1)
        })
    }

    /// Whether the entry's TTL ran out at `now`. An expired entry is never
    /// served, even before the sweeper removes it.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| deadline <= now)
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key())
            .field("value", &self.value_str())
            .field("meta", &self.meta())
            .field("deadline", &self.deadline())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_value_revision_and_deadline() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let meta = Meta {
            create_revision: 3,
            mod_revision: 7,
            version: 2,
            lease: None,
        };
        let entry = Entry::new("clé", "grüße".as_bytes(), meta, Some(deadline));
        assert_eq!(entry.key(), "clé");
        assert_eq!(entry.value_str(), "grüße");
        assert_eq!(entry.value().as_str(), "grüße");
        assert_eq!((entry.mod_revision(), entry.meta()), (7, meta));
        let kept = entry.deadline().expect("a deadline");
        // Nanosecond resolution; an `Instant` may be finer on some systems.
        assert!(kept <= deadline && deadline - kept < Duration::from_micros(1));
        assert!(!entry.is_expired(Instant::now()));
        assert!(entry.is_expired(deadline));

        let forever = Entry::new("k", b"", Meta::created(1), None);
        assert_eq!((forever.key(), forever.value_str()), ("k", ""));
        assert_eq!(forever.deadline(), None);
        assert_eq!(forever.meta(), Meta::created(1));
    }

    #[test]
    fn a_version_past_32_bits_and_a_lease_are_kept_whole_beside_a_deadline() {
        let deadline = Instant::now() + Duration::from_secs(5);
        for version in [u64::from(u32::MAX) - 1, u64::from(u32::MAX), u64::MAX] {
            for lease in [None, LeaseId::new(LeaseId::MAX)] {
                let meta = Meta {
                    create_revision: 1,
                    mod_revision: 9,
                    version,
                    lease,
                };
                for deadline in [None, Some(deadline)] {
                    let entry = Entry::new("key", b"value", meta, deadline);
                    assert_eq!(entry.meta(), meta);
                    assert_eq!((entry.key(), entry.value_str()), ("key", "value"));
                    assert_eq!(entry.deadline().is_some(), deadline.is_some());
                    assert_eq!(entry.lease(), lease);
                }
            }
        }
    }

    #[test]
    fn a_header_takes_three_words() {
        assert_eq!(size_of::<Header>(), 24);
    }

    #[test]
    fn a_shared_value_outlives_the_entry() {
        let entry = Entry::new("k", b"v", Meta::created(1), None);
        let value = entry.value();
        drop(entry);
        assert_eq!(value.as_str(), "v");
    }
}
