//! Following an election: its leader at every revision where who leads, or
//! what the leader proclaims, changes.

use std::collections::BTreeMap;

use futures_util::{Stream, StreamExt, stream};

use super::CoordError;
use super::queue::read;
use crate::backend::{Backend, Counted};
use crate::domain::{Entry, Event, Key, Position, Watched, queue_prefix};
use crate::watch::{Closer, WatchItem};

/// Who leads an election from `revision` on (`None`: nobody).
#[derive(Clone, Debug)]
pub struct Leadership {
    pub revision: u64,
    pub leader: Option<Entry>,
}

/// One item of an observation.
#[derive(Debug)]
pub enum Observed {
    Leader(Leadership),
    /// Nothing happened for a heartbeat period.
    Idle,
    /// The store dropped the watch under it (too slow): the client is to
    /// resume from the last revision it got.
    Dropped,
}

/// Follows election `name`. Without `since`: its leader now, then every
/// change. With `since` (a revision an observation answered): every change
/// after it, judged from the queue as it was then, so a client that
/// resumes misses no leader and sees none twice.
pub async fn observe<B: Backend>(
    store: &Counted<B>,
    name: &str,
    since: Option<u64>,
    closer: Closer,
) -> Result<impl Stream<Item = Observed> + Send + 'static, CoordError> {
    let queue = read(store, name, since).await?;
    let watched = Watched {
        keys: Vec::new(),
        prefixes: vec![Key::from(queue_prefix(name))],
    };
    let watch = store
        .watch(watched, Some(Position::after(queue.revision)), closer)
        .await?;
    let mut follower = Follower {
        shown: queue.head().map(identity),
        contenders: queue
            .contenders
            .into_iter()
            .map(|entry| (entry.key().to_owned(), entry))
            .collect(),
    };
    let first = since.is_none().then(|| {
        Observed::Leader(Leadership {
            revision: queue.revision,
            leader: follower.head().cloned(),
        })
    });
    // Items ready together are judged together, so the events of one
    // revision (a transaction, a prefix delete) count as one change.
    let changes = watch
        .ready_chunks(256)
        .flat_map(move |items| stream::iter(follower.follow(items)));
    Ok(stream::iter(first).chain(changes))
}

/// What tells one leadership from the next: the leader's key by its create
/// revision (the term) and its last write (a proclaim).
fn identity(entry: &Entry) -> (u64, u64) {
    let meta = entry.meta();
    (meta.create_revision, meta.mod_revision)
}

/// The queue kept up to date from its events.
struct Follower {
    contenders: BTreeMap<String, Entry>,
    shown: Option<(u64, u64)>,
}

impl Follower {
    fn head(&self) -> Option<&Entry> {
        self.contenders
            .values()
            .min_by_key(|entry| entry.meta().create_revision)
    }

    fn follow(&mut self, items: Vec<WatchItem>) -> Vec<Observed> {
        let mut out = Vec::new();
        let mut applying: Option<u64> = None;
        for item in items {
            match item {
                WatchItem::Event(delivery) => {
                    let event = delivery.event;
                    if let Some(revision) = applying.filter(|revision| *revision != event.id) {
                        self.settle(revision, &mut out);
                    }
                    applying = Some(event.id);
                    self.apply(&event);
                }
                WatchItem::Idle => {
                    if let Some(revision) = applying.take() {
                        self.settle(revision, &mut out);
                    }
                    out.push(Observed::Idle);
                }
                WatchItem::Dropped => {
                    if let Some(revision) = applying.take() {
                        self.settle(revision, &mut out);
                    }
                    out.push(Observed::Dropped);
                }
                WatchItem::Synced(_) => {}
            }
        }
        if let Some(revision) = applying {
            self.settle(revision, &mut out);
        }
        out
    }

    fn apply(&mut self, event: &Event) {
        match (event.meta(), event.value()) {
            (Some(meta), Some(value)) => {
                let entry = Entry::new(event.key(), value.as_bytes(), meta, None);
                self.contenders.insert(event.key().to_owned(), entry);
            }
            _ => {
                self.contenders.remove(event.key());
            }
        }
    }

    /// After the events of `revision`: a leadership if it changed.
    fn settle(&mut self, revision: u64, out: &mut Vec<Observed>) {
        let head = self.head();
        let now = head.map(identity);
        if now != self.shown {
            let leader = head.cloned();
            self.shown = now;
            out.push(Observed::Leader(Leadership { revision, leader }));
        }
    }
}
