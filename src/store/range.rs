//! Range reads: the keys under a prefix, as the store was at a revision.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::{Committer, Store};
use crate::domain::{Entry, Key, Page, RangeError, RangeRequest, ReadPoint, epoch};

/// The `Instant` standing for a wall-clock moment in the past. Before the
/// deadline clock started no deadline had passed, so that is as far back as
/// it needs to go.
fn instant_at(unix: u64) -> Instant {
    let (now, now_unix) = (Instant::now(), SystemTime::now());
    let then = UNIX_EPOCH + Duration::from_millis(unix);
    match now_unix.duration_since(then) {
        Ok(ago) => now.checked_sub(ago).unwrap_or_else(epoch),
        Err(_) => now,
    }
    .max(epoch())
}

/// The records under a prefix at a revision: the index as it is now, with
/// each key changed since the revision shown as it was before its first
/// change (the `prev` its event remembers), in key order.
struct AtRevision<'a, I, P>
where
    I: Iterator<Item = &'a Entry>,
    P: Iterator<Item = (&'a [u8], Option<&'a Entry>)>,
{
    now: Peekable<I>,
    /// Keys changed since the revision, with their record at it.
    past: Peekable<P>,
    /// TTLs are judged at this moment.
    moment: Instant,
}

impl<'a, I, P> Iterator for AtRevision<'a, I, P>
where
    I: Iterator<Item = &'a Entry>,
    P: Iterator<Item = (&'a [u8], Option<&'a Entry>)>,
{
    type Item = &'a Entry;

    fn next(&mut self) -> Option<&'a Entry> {
        loop {
            let order = match (self.now.peek(), self.past.peek()) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(now), Some((past, _))) => now.key_bytes().cmp(past),
            };
            let record = match order {
                std::cmp::Ordering::Less => self.now.next(),
                std::cmp::Ordering::Greater => self.past.next().and_then(|(_, then)| then),
                std::cmp::Ordering::Equal => {
                    self.now.next();
                    self.past.next().and_then(|(_, then)| then)
                }
            };
            if let Some(record) = record.filter(|record| !record.is_expired(self.moment)) {
                return Some(record);
            }
        }
    }
}

/// What the keys changed since a revision held at it (`None`: absent), as
/// far as the history has been read. A snapshot that is read a chunk at a
/// time keeps one and reads on from where it stopped, rather than reading
/// the whole history since its revision again for every chunk.
pub(super) struct Past {
    /// The history is read up to this revision.
    read: u64,
    records: BTreeMap<Key, Option<Entry>>,
}

impl Past {
    pub(super) fn at(revision: u64) -> Self {
        Self {
            read: revision,
            records: BTreeMap::new(),
        }
    }

    /// Forgets the keys up to `after`: a snapshot never goes back.
    pub(super) fn forget_through(&mut self, after: &str) {
        let rest = self.records.split_off(after);
        self.records = rest;
        self.records.remove(after);
    }
}

impl Committer {
    /// Reads the history on from where `past` stopped, noting for each key
    /// under `prefix` after `after` the record before its first change.
    fn gather(&self, past: &mut Past, prefix: &str, after: Option<&str>) {
        for event in self.history.after(past.read) {
            let key = event.key();
            let wanted = key.starts_with(prefix)
                && after.is_none_or(|after| key.as_bytes() > after.as_bytes());
            if wanted && !past.records.contains_key(key) {
                past.records.insert(Key::from(key), event.prev().cloned());
            }
        }
        past.read = past.read.max(self.revision);
    }

    /// The records under `prefix` after `after`, at the revision `past`
    /// was gathered for (which must be read up to now).
    fn at_revision<'a>(
        &'a self,
        past: &'a Past,
        prefix: &'a str,
        after: Option<&'a str>,
        moment: Instant,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let past = past
            .records
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(key, record)| (key.as_bytes(), record.as_ref()))
            .take_while(move |(key, _)| key.starts_with(prefix.as_bytes()));
        AtRevision {
            now: self.index.under(prefix, after).peekable(),
            past: past.peekable(),
            moment,
        }
    }

    /// Checks that the history can show `at`.
    fn reaches(&self, at: ReadPoint) -> Result<(), RangeError> {
        let current = self.revision;
        let oldest = self.history.oldest_revision(current);
        if at.revision > current {
            return Err(RangeError::Unknown { current, oldest });
        }
        if at.revision + 1 < oldest {
            return Err(RangeError::Compacted { oldest });
        }
        Ok(())
    }

    /// One page at `request.at`, with the history gathered since in `past`
    /// (read on from where it stopped).
    pub(super) fn range_from(
        &self,
        request: &RangeRequest<'_>,
        past: &mut Past,
    ) -> Result<Page, RangeError> {
        let (at, moment) = match request.at {
            Some(at) => {
                self.reaches(at)?;
                (at, instant_at(at.unix_millis))
            }
            None => (ReadPoint::now(self.revision), Instant::now()),
        };
        // A count covers the whole prefix, so it needs every key's past.
        let from = if request.count { None } else { request.after };
        self.gather(past, request.prefix, from);
        let mut records = self.at_revision(past, request.prefix, request.after, moment);
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for record in records.by_ref() {
            let size = record.key_bytes().len()
                + if request.keys_only {
                    0
                } else {
                    record.value_bytes().len()
                };
            let full = entries.len() >= request.limit.max(1)
                || (!entries.is_empty() && bytes + size > request.max_bytes);
            if full {
                more = true;
                break;
            }
            bytes += size;
            entries.push(record.clone());
        }
        let count = request
            .count
            .then(|| self.at_revision(past, request.prefix, None, moment).count() as u64);
        Ok(Page {
            at,
            entries,
            more,
            count,
        })
    }
}

impl Store {
    /// One page of the records under a prefix, at a point in the store's
    /// past (or now). Every page read at the same point agrees with the
    /// others, whatever was written between them, for as long as the
    /// history reaches back to it. The cost is the page plus the writes
    /// since the point, not the size of the store.
    ///
    /// Async because a store that answers over the network (etcd) waits for
    /// it; this one answers at once.
    pub async fn range(&self, request: &RangeRequest<'_>) -> Result<Page, RangeError> {
        self.range_now(request)
    }

    pub(super) fn range_now(&self, request: &RangeRequest<'_>) -> Result<Page, RangeError> {
        let committer = self.inner.committer.lock();
        let revision = request.at.map_or(committer.revision, |at| at.revision);
        committer.range_from(request, &mut Past::at(revision))
    }

    /// A page of a snapshot read a chunk at a time: `past` carries what the
    /// earlier chunks read of the history.
    pub(super) fn range_on(
        &self,
        request: &RangeRequest<'_>,
        past: &mut Past,
    ) -> Result<Page, RangeError> {
        self.inner.committer.lock().range_from(request, past)
    }
}
