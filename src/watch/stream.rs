//! A watch stream as every backend builds it: what a resume missed (from
//! the history, and before it from the backend's own history if it keeps
//! one), or a snapshot ending in the revision it shows; then the live
//! events the registry queued meanwhile, none twice.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};

use super::{History, Receiver, WatchItem};
use crate::domain::{Event, Position, WatchError, Watched};

/// What a snapshot yields: the watched keys as they are at one revision,
/// then that revision.
pub enum SnapshotItem {
    Event(Event),
    Through(u64),
}

/// Why a stream's backfill could not be completed (the client resumes or
/// starts over).
pub type Broken = String;

/// Where a resume starts, judged against the history.
pub enum Resume {
    /// Within the history: these events follow the position.
    Replay(Vec<Event>),
    /// Newer than the revision published so far.
    Ahead { current: u64, oldest: u64 },
    /// Older than the history reaches: `oldest` is where it starts.
    Behind { oldest: u64 },
}

impl History {
    /// Where a watch resuming after `since` stands, the store being at
    /// `current`: the one judgement every backend makes before a resumed
    /// watch starts.
    pub fn resume(&self, since: Position, current: u64, watched: &Watched) -> Resume {
        let oldest = self.oldest_revision(current);
        // After part N of revision R, the rest of R is needed: R itself
        // must still be held, not only what follows it. (A store restarted
        // at R holds none of R: found by tests/consistency, where a resume
        // from R.0 after a restart was answered with nothing, not 410, and
        // R.1 was lost.)
        let first_needed = match since.part {
            Some(_) => since.revision,
            None => since.revision + 1,
        };
        if since.revision > current {
            Resume::Ahead { current, oldest }
        } else if first_needed < oldest {
            Resume::Behind { oldest }
        } else {
            Resume::Replay(self.replay(since, watched))
        }
    }
}

impl Resume {
    /// A backend that keeps no history of its own: past the history is
    /// gone, ahead of it is another run's.
    pub fn or_gone(self) -> Result<Vec<Event>, WatchError> {
        match self {
            Self::Replay(events) => Ok(events),
            Self::Ahead { current, oldest } => Err(WatchError::Unknown { current, oldest }),
            Self::Behind { oldest } => Err(WatchError::Compacted { oldest }),
        }
    }
}

/// One watcher's stream. `G` is its registration: dropping the stream
/// drops it, which leaves the registry.
pub struct WatchStream<G> {
    /// Events older than the history, read from the backend's own (etcd's).
    earlier: Option<BoxStream<'static, Result<Event, Broken>>>,
    replay: VecDeque<Event>,
    snapshot: Option<BoxStream<'static, Result<SnapshotItem, Broken>>>,
    live: Receiver,
    /// Live events up to here were sent already (by the snapshot, or
    /// through another node).
    skip_through: Option<Position>,
    _registration: G,
}

impl<G> WatchStream<G> {
    /// A stream that opens with `snapshot`.
    pub fn snapshot(
        snapshot: BoxStream<'static, Result<SnapshotItem, Broken>>,
        live: Receiver,
        registration: G,
    ) -> Self {
        Self {
            earlier: None,
            replay: VecDeque::new(),
            snapshot: Some(snapshot),
            live,
            skip_through: None,
            _registration: registration,
        }
    }

    /// A resumed stream: `earlier` (if the history did not reach back far
    /// enough), then `replay`, then live events after `skip_through`.
    pub fn resumed(
        earlier: Option<BoxStream<'static, Result<Event, Broken>>>,
        replay: Vec<Event>,
        skip_through: Option<Position>,
        live: Receiver,
        registration: G,
    ) -> Self {
        Self {
            earlier,
            replay: replay.into(),
            snapshot: None,
            live,
            skip_through,
            _registration: registration,
        }
    }
}

impl<G: Unpin> Stream for WatchStream<G> {
    type Item = WatchItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchItem>> {
        let this = &mut *self;
        if let Some(earlier) = &mut this.earlier {
            match ready!(earlier.poll_next_unpin(cx)) {
                Some(Ok(event)) => return Poll::Ready(Some(this.live.deliver(event))),
                Some(Err(broken)) => {
                    tracing::warn!(error = %broken, "a watch could not read the history it missed");
                    return Poll::Ready(None);
                }
                None => this.earlier = None,
            }
        }
        if let Some(event) = this.replay.pop_front() {
            return Poll::Ready(Some(this.live.deliver(event)));
        }
        if let Some(snapshot) = &mut this.snapshot {
            return Poll::Ready(match ready!(snapshot.poll_next_unpin(cx)) {
                Some(Ok(SnapshotItem::Event(event))) => Some(this.live.deliver(event)),
                Some(Ok(SnapshotItem::Through(at))) => {
                    // The live queue may hold events up to `at` already:
                    // the snapshot showed them.
                    this.snapshot = None;
                    this.skip_through = Some(Position::after(at));
                    Some(WatchItem::Synced(at))
                }
                Some(Err(broken)) => {
                    tracing::warn!(error = %broken, "a watch snapshot could not be completed");
                    None
                }
                None => None,
            });
        }
        loop {
            let delivery = match ready!(this.live.poll_next_unpin(cx)) {
                Some(WatchItem::Event(delivery)) => delivery,
                other => return Poll::Ready(other),
            };
            let seen = this
                .skip_through
                .is_some_and(|seen| !seen.precedes(delivery.event.id, delivery.event.part));
            if !seen {
                this.skip_through = None;
                return Poll::Ready(Some(WatchItem::Event(delivery)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, Key};

    fn part(revision: u64, part: u32) -> Event {
        let mut event = Event::gone(revision, EventKind::Delete, Key::from("k"));
        event.part = Some(part);
        event
    }

    fn all() -> Watched {
        Watched {
            keys: Vec::new(),
            prefixes: vec![Key::from("")],
        }
    }

    #[test]
    fn a_resume_inside_a_revision_needs_that_revision() {
        let mut history = History::new(10, usize::MAX);
        history.push(part(5, 0));
        history.push(part(5, 1));
        let inside = Position {
            revision: 5,
            part: Some(0),
        };
        match history.resume(inside, 5, &all()) {
            Resume::Replay(events) => {
                assert_eq!(events.len(), 1);
                assert_eq!(
                    events[0].position(),
                    Position {
                        revision: 5,
                        part: Some(1)
                    }
                );
            }
            _ => panic!("revision 5 is held"),
        }
        // Restarted at revision 5: nothing held, so the rest of 5 is gone,
        // while a resume after the whole of 5 misses nothing.
        let empty = History::new(10, usize::MAX);
        assert!(matches!(
            empty.resume(inside, 5, &all()),
            Resume::Behind { oldest: 6 }
        ));
        assert!(matches!(
            empty.resume(Position::after(5), 5, &all()),
            Resume::Replay(events) if events.is_empty()
        ));
        assert!(matches!(
            empty.resume(Position::after(6), 5, &all()),
            Resume::Ahead { .. }
        ));
    }
}
