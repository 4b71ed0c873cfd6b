//! Change events: what watchers receive and what the history keeps.

use super::{Entry, Key, Meta};

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

/// A place in the stream of events, as a watcher resumes from it: after
/// revision `revision` (`part: None`), or after event `part` of that
/// revision's events. Written `R` or `R.part` (an SSE id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub revision: u64,
    pub part: Option<u32>,
}

impl Position {
    /// After every event of `revision`.
    pub fn after(revision: u64) -> Self {
        Self {
            revision,
            part: None,
        }
    }

    /// Whether an event at `revision`/`part` comes after this place.
    pub fn precedes(&self, revision: u64, part: Option<u32>) -> bool {
        match (revision.cmp(&self.revision), self.part, part) {
            (std::cmp::Ordering::Greater, _, _) => true,
            (std::cmp::Ordering::Equal, Some(seen), Some(part)) => part > seen,
            _ => false,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.part {
            Some(part) => write!(f, "{}.{part}", self.revision),
            None => write!(f, "{}", self.revision),
        }
    }
}

impl std::str::FromStr for Position {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (revision, part) = match text.split_once('.') {
            Some((revision, part)) => (revision, Some(part.parse().map_err(|_| ())?)),
            None => (text, None),
        };
        let revision = revision.parse().map_err(|_| ())?;
        Ok(Self { revision, part })
    }
}

/// Bytes an event is counted as when bounding memory: its key and value
/// plus a fixed allowance for the event itself and its queue slot.
const EVENT_OVERHEAD: usize = 96;

/// One event on one key. Cheap to clone (a reference count), and small: the
/// history keeps the last hundred thousand of them by value.
#[derive(Clone, Debug)]
pub struct Event {
    /// The store revision the event stands at: its own revision for a
    /// change, the store's revision when it was taken for a snapshot. A
    /// watcher resumes after it.
    pub id: u64,
    /// Where the event stands among its revision's events, when the
    /// revision has several (a batch, a prefix delete): they share the
    /// revision, and a watcher cut off among them resumes after this one.
    pub part: Option<u32>,
    pub kind: EventKind,
    state: State,
    /// The key's record before a change (etcd's `prev_kv`): what a listing
    /// at an older revision shows for the key. `None` for a snapshot and
    /// for a put that created the key.
    prev: Option<Entry>,
    /// What [`Event::cost`] answers, worked out once: the history asks again
    /// when it drops the event, long after its records left the cache.
    /// (It fits in what would be padding.)
    cost: u32,
}

/// The key's state after the event.
#[derive(Clone, Debug)]
enum State {
    /// The key's record: shared with the map, not copied.
    Live(Entry),
    /// The key is absent: deleted or expired at the event's own revision, or
    /// absent when a snapshot was taken.
    Gone(Key),
}

impl Event {
    /// A put, or a snapshot of a live key.
    pub fn live(id: u64, kind: EventKind, entry: Entry) -> Self {
        let state = State::Live(entry);
        Self::costed(id, kind, state, None)
    }

    /// A delete or expiry at revision `id`, or a snapshot of an absent key.
    pub fn gone(id: u64, kind: EventKind, key: Key) -> Self {
        let state = State::Gone(key);
        Self::costed(id, kind, state, None)
    }

    fn costed(id: u64, kind: EventKind, state: State, prev: Option<Entry>) -> Self {
        let (key, value) = match &state {
            State::Live(entry) => (entry.key_bytes().len(), entry.value_bytes().len()),
            State::Gone(key) => (key.len(), 0),
        };
        let prev_value = prev.as_ref().map_or(0, |prev| prev.value_bytes().len());
        let cost = EVENT_OVERHEAD + key + value + prev_value;
        Self {
            id,
            part: None,
            kind,
            state,
            prev,
            cost: u32::try_from(cost).unwrap_or(u32::MAX),
        }
    }

    /// A put at revision `id`, remembering the record it replaced.
    pub fn put(id: u64, entry: Entry, prev: Option<Entry>) -> Self {
        Self::costed(id, EventKind::Put, State::Live(entry), prev)
    }

    /// A delete or expiry at revision `id`, remembering the record it
    /// removed.
    pub fn removed(id: u64, kind: EventKind, key: Key, prev: Option<Entry>) -> Self {
        Self::costed(id, kind, State::Gone(key), prev)
    }

    /// Where a watcher that received this event resumes from.
    pub fn position(&self) -> Position {
        Position {
            revision: self.id,
            part: self.part,
        }
    }

    /// The key's revisions and version after the event; `None` once it is
    /// absent.
    pub fn meta(&self) -> Option<Meta> {
        match &self.state {
            State::Live(entry) => Some(entry.meta()),
            State::Gone(_) => None,
        }
    }

    /// The key's record before the change; `None` if it was absent.
    pub fn prev(&self) -> Option<&Entry> {
        self.prev.as_ref()
    }

    pub fn key(&self) -> &str {
        match &self.state {
            State::Live(entry) => entry.key(),
            State::Gone(key) => key,
        }
    }

    /// The value after the event; `None` after a delete or expiry, and in a
    /// snapshot of an absent key.
    pub fn value(&self) -> Option<&str> {
        match &self.state {
            State::Live(entry) => Some(entry.value_str()),
            State::Gone(_) => None,
        }
    }

    /// The key's `mod_revision` after the event (for a delete or expiry, the
    /// revision of the removal); `None` in a snapshot of an absent key.
    pub fn revision(&self) -> Option<u64> {
        match &self.state {
            State::Live(entry) => Some(entry.mod_revision()),
            State::Gone(_) => (self.kind != EventKind::Snapshot).then_some(self.id),
        }
    }

    /// Reads a byte of each record the event holds, so that their cache
    /// lines are on their way before they are dropped.
    pub fn touch(&self) -> usize {
        let state = match &self.state {
            State::Live(entry) => entry.mod_revision() as usize,
            State::Gone(key) => key.len(),
        };
        state
            ^ self
                .prev
                .as_ref()
                .map_or(0, |prev| prev.mod_revision() as usize)
    }

    /// The memory the event is counted as holding: its key and values,
    /// the record it replaced included (the history keeps that alive too).
    pub fn cost(&self) -> usize {
        self.cost as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_fits_in_six_words() {
        assert!(size_of::<Event>() <= 48, "{} bytes", size_of::<Event>());
    }

    #[test]
    fn a_position_reads_back_as_written() {
        for text in ["0", "7", "7.0", "7.12"] {
            let position: Position = text.parse().expect("a position");
            assert_eq!(position.to_string(), text);
        }
        for bad in ["", "-1", "7.", ".3", "7.-1", "7.1.2", "x", " 7"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
        let at = Position {
            revision: 7,
            part: Some(1),
        };
        assert!(at.precedes(7, Some(2)) && at.precedes(8, None));
        assert!(!at.precedes(7, Some(1)) && !at.precedes(6, Some(5)));
        assert!(!Position::after(7).precedes(7, Some(3)));
    }

    #[test]
    fn a_removal_stands_at_its_own_revision() {
        let deleted = Event::gone(7, EventKind::Delete, "k".into());
        assert_eq!((deleted.key(), deleted.revision()), ("k", Some(7)));
        let absent = Event::gone(7, EventKind::Snapshot, "k".into());
        assert_eq!((absent.value(), absent.revision()), (None, None));
    }
}
