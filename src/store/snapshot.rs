//! A memory store's watch snapshot: the watched keys, then the keys under
//! the watched prefixes read from the index a chunk at a time, at the
//! revision the watch opened at; and the registration a stream drops.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;

use super::Store;
use super::range::Past;
use crate::domain::{Entry, Event, EventKind, Key, RangeError, RangeRequest, ReadPoint};
use crate::watch::{Broken, SnapshotItem};

/// How many records one chunk of a prefix snapshot reads from the index,
/// and how many bytes at most: what a snapshot holds in memory besides the
/// frames charged to the watcher.
const SNAPSHOT_CHUNK: usize = 512;
const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;

/// The part of a snapshot still to send: the keys under the watched
/// prefixes, read a chunk at a time at the watch's starting point, so a
/// prefix of any size costs one chunk of memory and the client's reading
/// speed sets the pace.
pub(super) struct Chunks {
    at: ReadPoint,
    prefixes: VecDeque<Key>,
    /// The last key sent under the first prefix.
    after: Option<Key>,
    chunk: std::vec::IntoIter<Entry>,
    /// What the first prefix's keys held at `at`, for those changed since,
    /// as far as the history has been read.
    past: Past,
}

impl Chunks {
    pub(super) fn new(revision: u64, prefixes: &[Key]) -> Self {
        Self {
            at: ReadPoint::now(revision),
            prefixes: prefixes.iter().cloned().collect(),
            after: None,
            chunk: Vec::new().into_iter(),
            past: Past::at(revision),
        }
    }

    /// The next record to send; `Err` when the history no longer reaches
    /// back to the starting point (the snapshot cannot be completed).
    pub(super) fn next(&mut self, store: &Store) -> Result<Option<Entry>, RangeError> {
        loop {
            if let Some(entry) = self.chunk.next() {
                return Ok(Some(entry));
            }
            let Some(prefix) = self.prefixes.front() else {
                return Ok(None);
            };
            let page = store.range_on(
                &RangeRequest {
                    prefix,
                    after: self.after.as_deref(),
                    at: Some(self.at),
                    limit: SNAPSHOT_CHUNK,
                    max_bytes: SNAPSHOT_CHUNK_BYTES,
                    keys_only: false,
                    count: false,
                },
                &mut self.past,
            )?;
            self.after = page
                .more
                .then(|| page.entries.last().map(|last| Key::from(last.key())))
                .flatten();
            match &self.after {
                Some(after) => self.past.forget_through(after),
                None => {
                    self.prefixes.pop_front();
                    self.past = Past::at(self.at.revision);
                }
            }
            self.chunk = page.entries.into_iter();
        }
    }
}

/// A watch snapshot of the memory store: the watched keys (read when the
/// watch registered), then the keys under its prefixes, then the revision.
pub(super) struct PrefixSnapshot {
    store: Store,
    keys: VecDeque<Event>,
    chunks: Option<Chunks>,
}

impl PrefixSnapshot {
    pub(super) fn new(store: Store, revision: u64, keys: Vec<Event>, prefixes: &[Key]) -> Self {
        Self {
            store,
            keys: keys.into(),
            chunks: Some(Chunks::new(revision, prefixes)),
        }
    }
}

impl Stream for PrefixSnapshot {
    type Item = Result<SnapshotItem, Broken>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(event) = this.keys.pop_front() {
            return Poll::Ready(Some(Ok(SnapshotItem::Event(event))));
        }
        let Some(chunks) = &mut this.chunks else {
            return Poll::Ready(None);
        };
        let revision = chunks.at.revision;
        Poll::Ready(Some(match chunks.next(&this.store) {
            Ok(Some(entry)) => Ok(SnapshotItem::Event(Event::live(
                revision,
                EventKind::Snapshot,
                entry,
            ))),
            Ok(None) => {
                this.chunks = None;
                Ok(SnapshotItem::Through(revision))
            }
            Err(_) => {
                this.chunks = None;
                Err(format!(
                    "the history no longer reaches back to revision {revision}, which the \
                     snapshot shows (read more slowly than the store was written)"
                ))
            }
        }))
    }
}

/// A memory watcher's place in the registry, given up when its stream is
/// dropped.
pub struct Unwatch {
    pub(super) store: Store,
    pub(super) id: u64,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        self.store.unwatch(self.id);
    }
}
