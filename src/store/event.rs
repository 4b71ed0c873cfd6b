//! Change events: what watchers receive and what the history keeps.

use super::{Key, Value};

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key's state when a watch started (not a change).
    Snapshot,
    Put,
    Delete,
    Expire,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Put => "put",
            Self::Delete => "delete",
            Self::Expire => "expire",
        }
    }
}

/// Bytes an event is counted as when bounding memory: its key and value
/// plus a fixed allowance for the event itself and its queue slot.
const EVENT_OVERHEAD: usize = 96;

/// One event on one key.
#[derive(Clone, Debug)]
pub struct Event {
    /// The store revision the event stands at: its own revision for a
    /// change, the store's revision when it was taken for a snapshot. A
    /// watcher resumes after it.
    pub id: u64,
    pub kind: EventKind,
    pub key: Key,
    /// The value after the event; `None` after a delete or expiry, and in a
    /// snapshot of an absent key.
    pub value: Option<Value>,
    /// The key's `mod_revision` after the event (for a delete or expiry, the
    /// revision of the removal); `None` in a snapshot of an absent key.
    pub revision: Option<u64>,
}

impl Event {
    /// The memory the event is counted as holding.
    pub fn cost(&self) -> usize {
        EVENT_OVERHEAD + self.key.len() + self.value.as_ref().map_or(0, |v| v.as_str().len())
    }
}
