//! Following an election: its leader at every revision where who leads, or
//! what the leader proclaims, changes.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

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
    let follower = Follower {
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
    let observing = Observing {
        watch,
        follower,
        applying: None,
        out: first.into_iter().collect(),
        ended: false,
    };
    Ok(stream::unfold(observing, |mut observing| async move {
        let item = observing.next().await?;
        Some((item, observing))
    }))
}

/// How long a revision of several events (a transaction, a prefix delete)
/// waits for more of them before it is judged: they are published one by
/// one, back to back, so a pause this long means it is whole. A revision
/// of one event is judged at once.
const SETTLE: Duration = Duration::from_millis(20);

/// An observation under way: the watch, the line it keeps, the revision
/// whose events are being applied, and the items ready to send.
struct Observing<W> {
    watch: W,
    follower: Follower,
    applying: Option<u64>,
    out: VecDeque<Observed>,
    ended: bool,
}

impl<W: Stream<Item = WatchItem> + Unpin> Observing<W> {
    async fn next(&mut self) -> Option<Observed> {
        loop {
            if let Some(item) = self.out.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            let item = if self.applying.is_some() {
                match tokio::time::timeout(SETTLE, self.watch.next()).await {
                    Ok(item) => item,
                    Err(_) => {
                        self.settle();
                        continue;
                    }
                }
            } else {
                self.watch.next().await
            };
            match item {
                None => {
                    self.settle();
                    self.ended = true;
                }
                Some(WatchItem::Event(delivery)) => {
                    let event = delivery.event;
                    if self.applying.is_some_and(|revision| revision != event.id) {
                        self.settle();
                    }
                    self.follower.apply(&event);
                    self.applying = Some(event.id);
                    if event.part.is_none() {
                        self.settle();
                    }
                }
                Some(WatchItem::Idle) => {
                    self.settle();
                    self.out.push_back(Observed::Idle);
                }
                Some(WatchItem::Dropped) => {
                    self.settle();
                    self.out.push_back(Observed::Dropped);
                }
                Some(WatchItem::Synced(_)) => {}
            }
        }
    }

    /// Judges the revision being applied: a leadership if it changed.
    fn settle(&mut self) {
        if let Some(revision) = self.applying.take() {
            self.follower.settle(revision, &mut self.out);
        }
    }
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
    fn settle(&mut self, revision: u64, out: &mut VecDeque<Observed>) {
        let head = self.head();
        let now = head.map(identity);
        if now != self.shown {
            let leader = head.cloned();
            self.shown = now;
            out.push_back(Observed::Leader(Leadership { revision, leader }));
        }
    }
}
