//! `Entry`: one key's record, as the map keeps it.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use triomphe::{Arc, ThinArc};

use super::Value;

/// What an entry keeps besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    /// Store revision of the latest write to the key; the key's ETag.
    mod_revision: u64,
    key_len: u32,
    has_deadline: bool,
}

/// Bytes a deadline takes at the front of the record.
const DEADLINE_BYTES: usize = 8;

/// One key's record: its key, value, revision and deadline in a single
/// reference-counted allocation behind a thin (one-word) pointer.
///
/// The map holds a million of these, so their size is the store's size:
/// separate allocations for key, value and record would cost three malloc
/// headers and three pointers per key, and a fat pointer would double every
/// hash table slot. One allocation is what gets a key of 15 bytes with a
/// value of 100 into a 160-byte malloc chunk. The deadline is stored only
/// for keys that have one.
///
/// It is reference counted (`triomphe`'s `ThinArc`: one count, no weak) so
/// that a GET response, a watch event and the history can share the record
/// that was current when they were taken instead of copying the value, and
/// so that a write that replaces it does not wait for them.
///
/// Layout of the bytes: `[deadline (if any)][key][value]`; the key and value
/// are UTF-8, checked before they got here.
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
    pub fn new(key: &str, value: &[u8], mod_revision: u64, deadline: Option<Instant>) -> Self {
        let deadline = deadline.and_then(|deadline| {
            u64::try_from(deadline.saturating_duration_since(epoch()).as_nanos()).ok()
        });
        let header = Header {
            mod_revision,
            // Keys are limited to far less than 4 GiB by the server's limits.
            key_len: u32::try_from(key.len()).unwrap_or(u32::MAX),
            has_deadline: deadline.is_some(),
        };
        let deadline = deadline.map(u64::to_le_bytes);
        let deadline: &[u8] = deadline.as_ref().map_or(&[], |bytes| bytes);
        let parts = [deadline, key.as_bytes(), value];
        let len = parts.iter().map(|part| part.len()).sum();
        // Allocated zeroed, then filled with three copies: triomphe builds a
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

    fn key_start(&self) -> usize {
        if self.header().has_deadline {
            DEADLINE_BYTES
        } else {
            0
        }
    }

    fn value_start(&self) -> usize {
        self.key_start() + self.header().key_len as usize
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

    /// When the key expires, if it has a TTL.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.header().has_deadline {
            return None;
        }
        let raw = self.0.slice.first_chunk::<DEADLINE_BYTES>()?;
        Some(epoch() + Duration::from_nanos(u64::from_le_bytes(*raw)))
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
            .field("mod_revision", &self.mod_revision())
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
        let entry = Entry::new("clé", "grüße".as_bytes(), 7, Some(deadline));
        assert_eq!(entry.key(), "clé");
        assert_eq!(entry.value_str(), "grüße");
        assert_eq!(entry.value().as_str(), "grüße");
        assert_eq!(entry.mod_revision(), 7);
        let kept = entry.deadline().expect("a deadline");
        // Nanosecond resolution; an `Instant` may be finer on some systems.
        assert!(kept <= deadline && deadline - kept < Duration::from_micros(1));
        assert!(!entry.is_expired(Instant::now()));
        assert!(entry.is_expired(deadline));

        let forever = Entry::new("k", b"", 1, None);
        assert_eq!((forever.key(), forever.value_str()), ("k", ""));
        assert_eq!(forever.deadline(), None);
    }

    #[test]
    fn a_shared_value_outlives_the_entry() {
        let entry = Entry::new("k", b"v", 1, None);
        let value = entry.value();
        drop(entry);
        assert_eq!(value.as_str(), "v");
    }
}
