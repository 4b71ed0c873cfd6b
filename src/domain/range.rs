//! Reading a range of keys at a point in the store's past: what is asked
//! and what comes back.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Entry;

/// The point in the store's past a listing shows, so that every page of it
/// agrees: a revision, and the moment TTLs are judged at (a key whose TTL
/// had run out then is not listed, swept or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPoint {
    pub revision: u64,
    /// Milliseconds since the Unix epoch: a wall clock, so that a point
    /// taken before a restart still means the same moment.
    pub unix_millis: u64,
}

/// One page of a range read.
#[derive(Clone, Copy, Debug)]
pub struct RangeRequest<'a> {
    /// Every key starting with these bytes (all keys when empty).
    pub prefix: &'a str,
    /// Start just after this key (the last key of the previous page).
    pub after: Option<&'a str>,
    /// The point to read at; `None` for the store as it is now.
    pub at: Option<ReadPoint>,
    /// At most this many records.
    pub limit: usize,
    /// The page ends before its keys (and values, unless `keys_only`) would
    /// pass this many bytes, but always holds at least one record.
    pub max_bytes: usize,
    pub keys_only: bool,
    /// Also count every key under the prefix at that point.
    pub count: bool,
}

/// Records in key order, as they were at `at`.
#[derive(Debug)]
pub struct Page {
    pub at: ReadPoint,
    pub entries: Vec<Entry>,
    /// Whether more records follow the last one.
    pub more: bool,
    pub count: Option<u64>,
}

impl ReadPoint {
    /// The store at `revision`, TTLs judged now.
    pub fn now(revision: u64) -> Self {
        Self {
            revision,
            unix_millis: unix_millis(SystemTime::now()),
        }
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}
